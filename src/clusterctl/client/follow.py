"""Following log files as `tail -F` does, and merging many of them in time order.

>>> f = FileFollower(Path("state/logs/default-0.log"))      # doctest: +SKIP
>>> f.tail(2), f.poll()     # the last two lines (f then stands at the end); then what is new
(['2026-11-28 20:59:23,549 - distributed.worker - INFO - ...', '...'], ([], False))

A follower holds no descriptor between polls, only the file's inode, offset, first bytes
and the bytes before the offset. Neither rotation of this project loses or repeats a line:
a rename (`events.jsonl`) leaves a new inode at the path, and the old one's rest is read
from the backup holding that inode; a collapse (process logs, runtime/rotation.py) cuts
the head of the same inode into a new `log.1`, seen as a shorter file or changed bytes,
and what of the new backups lies past the offset is read first, then the live file at the
offset less the cut. A shrink without a new backup is a truncation: from 0 again. Lines
are complete (a last line waits for its newline, or is cut past ``MAX_LINE``) and each
poll reads at most a budget: memory stays bounded. More than one rotation between two
polls (10 MiB apart, polls 0.25 s apart) is followed on a best-effort basis.

A line's time is its own (Dask's ``2026-11-28 20:59:23,140 - ...``, a run's ``--- 2026-11-28
20:59:22 start``, the supervisor's time of day ``20:59:23 name event``, dated by the file's
last full date or the time it was seen) or its predecessor's, so merging keeps file order.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

from ..errors import ClusterError
from ..runtime.ledger import LedgerRecord
from ..topology import ClusterConfig
from .connect import read_record

MAX_LINE = 256 * 1024  # a line longer than this (no newline yet) is cut into pieces
BUDGET = 1 << 20  # bytes read per file per poll
BLOCK = 64 * 1024  # reading backwards for a tail
FINGERPRINT = 64  # bytes before the offset, compared at every poll
BACKUPS = 3  # log.1 .. log.3 (runtime/logs.py, runtime/events.py)

_STAMP = re.compile(r"^(?:--- )?(?:(\d{4})-(\d\d)-(\d\d)[ T])?(\d\d):(\d\d):(\d\d)(?:[.,](\d{1,6}))?(?![\d:])")


class Entry(NamedTuple):  # one line of one process's log, with the time it sorts by
    key: float
    name: str
    text: str


class _Signature(NamedTuple):
    ino: int
    size: int
    mtime_ns: int


def _signature(path: Path) -> _Signature | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return _Signature(st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class FileFollower:
    """One file followed by path, across rotations and truncation. Not thread-safe."""

    path: Path
    pos: int = 0
    ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file pos is in
    head: bytes = b""  # its first bytes, and
    fingerprint: bytes = b""  # the bytes just before pos, as last read
    backup: _Signature | None = None  # path.1 when last looked at
    pending: list[list[int]] = field(default_factory=list)  # [offset, inode, size, mtime] of backups to read first
    partial: bytearray = field(default_factory=bytearray)

    def _backup(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def tail(self, lines: int) -> list[str]:
        """The last ``lines`` complete lines; afterwards the follower stands at the end of the
        file (an unfinished last line is kept, and given whole by a later poll or ``flush``)."""
        for _ in range(5):  # again if the file is cut while being read
            try:
                f = open(self.path, "rb")
            except OSError:
                return []  # not there yet: followed from its start once it appears
            with f:
                st = os.fstat(f.fileno())
                self._start(f, st, st.st_size)
                blocks, start, newlines = [], st.st_size, 0
                while start > 0 and newlines <= max(lines, 0) and st.st_size - start < (lines + 1) * MAX_LINE:
                    step = min(BLOCK, start)
                    start -= step
                    blocks.append(_pread(f, start, step))  # what is appended meanwhile is for poll
                    newlines += blocks[-1].count(b"\n")
                if self._still(f, st.st_size):
                    break
        data = b"".join(reversed(blocks))
        self.fingerprint = data[-FINGERPRINT:]
        complete, sep, rest = data.rpartition(b"\n")
        self.partial = bytearray(rest[-MAX_LINE:])
        if not sep or lines <= 0:
            return []
        pieces = complete.split(b"\n")
        if start > 0:
            pieces = pieces[1:]  # the first piece may be the end of a longer line
        return [_decode(p) for p in pieces[-lines:]]

    def flush(self) -> list[str]:
        """The unfinished last line, if any (for a one-off view: nothing more will come)."""
        rest, self.partial = bytes(self.partial), bytearray()
        return [_decode(rest)] if rest else []

    def poll(self, budget: int = BUDGET) -> tuple[list[str], bool]:
        """New complete lines since the last poll, and whether more is waiting past ``budget``."""
        try:
            f = open(self.path, "rb")
        except OSError:
            if self.ident is not None:  # renamed away or deleted: the rest of it, if it is a backup
                self.pending.append([self.pos, self.ident[1], -1, -1])  # -1: its size may have grown
                self.ident = None
            data = self._read_pending(budget)
            return self._lines(data), bool(self.pending)
        with f:
            st = os.fstat(f.fileno())
            if self.ident is None:  # first sight: from its start
                self._start(f, st, 0)
            elif (st.st_dev, st.st_ino) != self.ident:  # replaced: the rest of the old one first
                self.pending.append([self.pos, self.ident[1], -1, -1])
                self._start(f, st, 0)
            elif st.st_size < self.pos or not self._unchanged(f):
                self._after_cut(f, st)
            data, chunk, cut = self._read_pending(budget), b"", False
            if not self.pending:
                chunk = _pread(f, self.pos, max(budget - len(data), 1))
                if chunk and not self._still(f, self.pos + len(chunk)):
                    chunk, cut = b"", True  # cut while being read: again, after the cut, at once
                self.pos += len(chunk)
                self.fingerprint = (self.fingerprint + chunk)[-FINGERPRINT:]
                if len(self.head) < FINGERPRINT and (head := _pread(f, 0, FINGERPRINT)).startswith(self.head):
                    self.head = head
            more = cut or bool(self.pending) or self.pos < os.fstat(f.fileno()).st_size
        return self._lines(data + chunk), more

    def _start(self, f, st: os.stat_result, pos: int) -> None:
        self.ident, self.pos, self.fingerprint = (st.st_dev, st.st_ino), pos, b""
        self.head = _pread(f, 0, FINGERPRINT)
        self.backup = _signature(self._backup(1))

    def _still(self, f, end: int) -> bool:
        """Is the file still as long as ``end`` and its first bytes the ones recorded?"""
        return os.fstat(f.fileno()).st_size >= end and _pread(f, 0, len(self.head)) == self.head

    def _unchanged(self, f) -> bool:
        """Do the file's first bytes, and the bytes before the offset, still hold what was read?"""
        if _pread(f, 0, len(self.head)) != self.head:
            return False
        k = min(len(self.fingerprint), self.pos)
        return not k or _pread(f, self.pos - k, k) == self.fingerprint[-k:]

    def _after_cut(self, f, st: os.stat_result) -> None:
        """The live file lost its head to new backups (log.k .. log.1, oldest first): what of
        them is past the offset is read first, then the live file from the offset left over."""
        sigs = [_signature(self._backup(i)) for i in range(1, BACKUPS + 1)]
        inos = [s.ino if s else None for s in sigs]
        if self.backup is not None and self.backup.ino in inos:
            new = inos.index(self.backup.ino) or int(sigs[0] != self.backup)  # log.1 may have been mid-copy
        else:
            new = sum(s is not None for s in sigs)
        offset = self.pos
        for s in reversed(sigs[:new]):
            if s is None:
                continue
            if offset < s.size:
                self.pending.append([offset, s.ino, s.size, s.mtime_ns])
            offset = max(0, offset - s.size)
        if not new:  # truncated, not rotated: start over
            offset = 0
        self.pos = offset
        self.fingerprint = self.fingerprint[-offset:] if offset else b""
        self.head = _pread(f, 0, FINGERPRINT)
        self.backup = sigs[0]

    def _read_pending(self, budget: int) -> bytes:
        """Up to ``budget`` bytes of the backups still to read, found by inode (they move)."""
        out = bytearray()
        while self.pending and len(out) < budget:
            chunk = self._read_backup(*self.pending[0], budget - len(out))
            if not chunk:  # read to its end, or gone
                self.pending.pop(0)
                continue
            out += chunk
            self.pending[0][0] += len(chunk)
        return bytes(out)

    def _read_backup(self, offset: int, ino: int, size: int, mtime: int, n: int) -> bytes:
        """From the backup with this inode (and size and mtime, if known: inodes are reused)."""
        for i in range(1, BACKUPS + 1):
            try:
                with open(self._backup(i), "rb") as b:
                    st = os.fstat(b.fileno())
                    if st.st_ino == ino and size in (-1, st.st_size) and mtime in (-1, st.st_mtime_ns):
                        return _pread(b, offset, n)
            except OSError:
                continue
        return b""

    def _lines(self, data: bytes) -> list[str]:
        if not data:
            return []
        self.partial += data
        complete, sep, rest = bytes(self.partial).rpartition(b"\n")
        out = [_decode(p) for p in complete.split(b"\n")] if sep else []
        rest = rest if sep else bytes(self.partial)
        while len(rest) > MAX_LINE:  # no newline in sight: cut, or memory would grow with it
            out.append(_decode(rest[:MAX_LINE]))
            rest = rest[MAX_LINE:]
        self.partial = bytearray(rest)
        return out


def _pread(f, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n) if n > 0 else b""


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r")


@functools.lru_cache(maxsize=4096)
def _epoch(date: dt.date, seconds: int) -> float:
    return dt.datetime.combine(date, dt.time()).timestamp() + seconds


class Stamper:
    """The time of each line of one file, in order: its own stamp, or the last one's."""

    date: dt.date | None = None  # of the last stamp
    seconds: int | None = None  # its time of day
    last: float | None = None  # its epoch time

    def stamp(self, text: str, ref: float) -> float | None:
        """The line's time (epoch seconds), or the previous stamped line's, or None. ``ref`` is
        the wall time the line was seen at, for a time of day before any full date."""
        m = _STAMP.match(text)
        if not m:
            return self.last
        y, mo, d, hh, mm, ss, frac = m.groups()
        if int(hh) > 23 or int(mm) > 59 or int(ss) > 60:
            return self.last
        seconds = int(hh) * 3600 + int(mm) * 60 + int(ss)
        if y:
            try:
                date = dt.date(int(y), int(mo), int(d))
            except ValueError:
                return self.last
        elif self.date is not None:  # time of day only: after a full date, midnight may pass
            date = self.date + dt.timedelta(days=1) if self.seconds is not None and seconds < self.seconds - 43200 else self.date
        else:
            seen = dt.datetime.fromtimestamp(ref)
            date = seen.date()
            if seconds > seen.hour * 3600 + seen.minute * 60 + seen.second + 300:  # later than seen: yesterday's
                date -= dt.timedelta(days=1)
        self.date, self.seconds = date, seconds
        self.last = _epoch(date, seconds) + (float(f"0.{frac}") if frac else 0.0)
        return self.last

    def entries(self, name: str, texts: list[str], ref: float) -> list[Entry]:
        """Texts as entries; lines before the first stamp (of the batch and of the file) take
        the first stamp after them, or ``ref`` when there is none."""
        keys = [self.stamp(t, ref) for t in texts]
        following = ref
        for i in range(len(keys) - 1, -1, -1):
            if keys[i] is None:
                keys[i] = following
            else:
                following = keys[i]
        return [Entry(k, name, t) for k, t in zip(keys, texts)]  # type: ignore[arg-type]


def merge(streams: Iterable[list[Entry]]) -> list[Entry]:
    """Entries of many files in time order; each file's own order is kept, ties go to the
    earlier stream."""
    return list(heapq.merge(*streams, key=lambda e: e.key))


class Source(NamedTuple):
    name: str
    path: Path
    shown: bool  # its tail belongs in the first view (false: followed only)


class LogMerger:
    """Many followed files merged in time order, the set of files rediscovered as it changes.

    ``discover`` returns the files (names in a stable order: ties in time go to the earlier
    name). Files there at ``start`` are followed from their end; files that appear later
    from their start."""

    def __init__(self, discover: Callable[[], list[Source]], *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, rediscover: float = 1.0, budget: int = BUDGET):
        self.discover, self.clock, self.wall = discover, clock, wall
        self.rediscover, self.budget = rediscover, budget
        self.files: dict[str, tuple[FileFollower, Stamper]] = {}
        self.order: list[str] = []
        self._found_at: float | None = None

    def start(self, lines: int) -> list[Entry]:
        """The last ``lines`` lines of each shown file, merged; every file found is followed."""
        streams = []
        for src in self._find():
            follower, stamper = self._track(src)
            texts = follower.tail(lines if src.shown else 0)
            seen = _signature(src.path)  # the last line's time: the file's mtime
            streams.append(stamper.entries(src.name, texts, seen.mtime_ns / 1e9 if seen else self.wall()))
        return merge(streams)

    def flush(self) -> list[Entry]:
        """Every file's unfinished last line (a one-off view ends here)."""
        ref = self.wall()
        return merge(st.entries(n, f.flush(), ref) for n, (f, st) in self.files.items())

    def poll(self) -> tuple[list[Entry], bool]:
        """New lines of every file, merged, and whether some file has more waiting."""
        if self._found_at is None or self.clock() - self._found_at >= self.rediscover:
            for src in self._find():
                if src.name not in self.files:
                    self._track(src)  # appeared while following: from its first line
        streams, more, ref = [], False, self.wall()
        for name in self.order:
            follower, stamper = self.files[name]
            texts, pending = follower.poll(self.budget)
            more |= pending
            if texts:
                streams.append(stamper.entries(name, texts, ref))
        return merge(streams), more

    def _find(self) -> list[Source]:
        self._found_at = self.clock()
        return self.discover()

    def _track(self, src: Source) -> tuple[FileFollower, Stamper]:
        if src.name not in self.files:
            self.files[src.name] = (FileFollower(src.path), Stamper())
            self.order.append(src.name)
        return self.files[src.name]


def rounds(poll: Callable[[], tuple[list, bool]], *, interval: float = 0.25,
           sleep: Callable[[float], None] = time.sleep, limit: int | None = None) -> Iterator[list]:
    """Poll forever (or ``limit`` times), yielding each non-empty batch; sleep ``interval``
    only when nothing more is waiting."""
    n = 0
    while limit is None or n < limit:
        n += 1
        batch, more = poll()
        if batch:
            yield batch
        if not more:
            sleep(interval)


def cluster_sources(cfg: ClusterConfig) -> Callable[[], list[Source]]:
    """The discover function of a cluster's logs: the supervisor's, each process's in the
    ledger (their tails are shown), then any other log under the log directory (followed
    only: a removed worker's, or one that appears before the ledger names it). With no
    process in the ledger, every log's tail is shown."""

    def discover() -> list[Source]:
        try:
            record = read_record(cfg)
        except ClusterError:  # unreadable ledger: the directory alone
            record = LedgerRecord()
        found = [Source("supervisor", cfg.log_path / "supervisor.log", True)]
        found += [Source(p.name, Path(p.log) if p.log else cfg.log_path / f"{p.name}.log", True) for p in record.processes]
        known = {os.path.abspath(s.path) for s in found}
        names = {s.name for s in found}
        try:
            others = sorted(cfg.log_path.rglob("*.log"))
        except OSError:
            others = []
        for path in others:
            if os.path.abspath(path) in known:
                continue
            name = path.relative_to(cfg.log_path).with_suffix("").as_posix()
            found.append(Source(name if name not in names else f"{name}.log", path, not record.processes))
            names.add(found[-1].name)
        return found

    return discover
