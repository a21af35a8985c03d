"""Cores used by processes outside this cluster, from /proc: the owner watcher's `other_cpu` signal
(remote/ownerwatch.py). Standard library only: it runs on every watched host."""

from __future__ import annotations

import os
import time
from typing import Callable

from ..plan.tag import TAG_ENV

ENVIRON_MAX = 1 << 18


def parse_stat(data: bytes) -> tuple[bytes, int, int, int, int, bool]:
    """(name, ppid, utime+stime, cutime+cstime, starttime, zombie) from /proc/PID/stat (fields 2, 4, 14-17,
    22, 3); the name may hold spaces and parentheses: the other fields are counted after its last ')'."""
    end = data.rindex(b")")
    f = data[end + 2:].split()
    return data[data.index(b"(") + 1:end], int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14]), int(f[19]), \
        f[0] == b"Z"


def has_tag(environ: bytes, tag: str, cmdline: Callable[[], bytes | None] = lambda: b"") -> bool:
    """As runtime/process.carries: CLUSTERCTL_TAG=<tag> in the environment (NUL-separated); where it has no
    CLUSTERCTL_TAG (a process title overwrote it), in the command line: a title's marker, an agent's --tag."""
    env = b"\0" + environ + b"\0"
    if f"\0{TAG_ENV}=".encode() in env:
        return f"\0{TAG_ENV}={tag}\0".encode() in env
    words = (cmdline() or b"").replace(b"\0", b" ").split()
    return f"{TAG_ENV}={tag}".encode() in words or (b"--tag", tag.encode()) in zip(words, words[1:])


def _read(path: str, size: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)  # (not open(): a sweep of /proc costs a third less)
        try:
            return os.read(fd, size)
        finally:
            os.close(fd)
    except OSError:
        return None


def outside_ticks(old: dict[int, tuple], new: dict[int, tuple]) -> int:
    """CPU ticks used between two samples by processes outside the cluster: each one's own
    utime+stime delta (a new one's: all), plus what short-lived ones used, seen only in their
    parent's cutime+cstime once reaped: each parent's delta of those, less the last-seen totals of
    the processes that vanished under it (counted as they ran; one is charged to its nearest living
    ancestor). Parents that reaped a cluster process add nothing (its last moments are not the
    owner's). Summed before clamping: an orphan reaped by init offsets its old parent's charge."""
    total, reaped, deltas = 0, 0, {}
    for pid, (start, _, own, kids, outside, *_) in new.items():
        p = old.get(pid)
        same = p is not None and p[0] == start
        if outside:
            total += max(0, own - p[2]) if same else own
        deltas[pid] = kids - p[3] if same else kids
    charged: dict[int, int] = {}
    tainted = set()  # parents that reaped a cluster process
    for pid, (start, ppid, own, kids, outside, *_) in old.items():
        if pid in new and new[pid][0] == start:
            continue
        a, hops = ppid, 0
        while a in old and (a not in new or new[a][0] != old[a][0]) and hops < 100:
            a, hops = old[a][1], hops + 1
        if a in new:
            charged[a] = charged.get(a, 0) + own + kids
            if not outside:
                tainted.add(a)
    for pid, d in deltas.items():
        if new[pid][4] and pid not in tainted:
            reaped += d - charged.get(pid, 0)
    return total + max(0, reaped)


class CpuMeter:
    """Cores used by processes outside the cluster, per process from /proc (see outside_ticks); a sample
    is {pid: (starttime, ppid, own ticks, reaped children's ticks, outside the cluster, name)}. Inside:
    this watcher and what carries the tag (has_tag; checked once per pid, start time and name: an exec
    changes the name). Outside: an unreadable environment (another user's); an empty one (a zombie, a
    kernel thread) takes its nearest ancestor's side (a kernel thread's: outside)."""

    def __init__(self, tag: str, above: float = 0.0, proc: str = "/proc", mine: tuple[int, ...] = ()):
        self.tag, self.above, self.proc, self.mine = tag, above, proc, set(mine) | {os.getpid()}
        self.hz, self.ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
        self.procs: dict[int, tuple] | None = None
        self.at = 0.0

    def scan(self) -> dict[int, tuple]:
        procs: dict[int, tuple] = {}
        known = self.procs or {}
        for name in os.listdir(self.proc):
            if not name.isdigit():
                continue
            pid = int(name)
            try:
                comm, ppid, own, kids, start, zombie = parse_stat(_read(f"{self.proc}/{name}/stat", 2048) or b"")
            except (ValueError, IndexError):
                continue  # gone meanwhile
            prev = known.get(pid)
            if prev is not None and prev[0] == start and prev[5] == comm:  # (an exec changes the name)
                outside = prev[4]
            elif pid in self.mine:
                outside = False
            else:  # None: nothing to read (a zombie, a kernel thread), its nearest ancestor's side, below
                env = None if zombie else _read(f"{self.proc}/{name}/environ", ENVIRON_MAX)
                cmdline = lambda: _read(f"{self.proc}/{name}/cmdline", ENVIRON_MAX)  # noqa: E731
                outside = None if zombie or env == b"" else env is None or not has_tag(env, self.tag, cmdline)
            procs[pid] = (start, ppid, own, kids, outside, comm)
        for pid in [pid for pid, s in procs.items() if s[4] is None]:
            a, hops = procs[pid][1], 0
            while a in procs and procs[a][4] is None and hops < 100:
                a, hops = procs[a][1], hops + 1
            side = procs[a][4] if a in procs else known[a][4] if a in known else True
            procs[pid] = (*procs[pid][:4], side, procs[pid][5])
        return procs

    def signal(self, now: float = 0.0) -> dict:
        try:
            procs = self.scan()
        except OSError as e:
            return {"active": None, "cores": None, "why": f"cannot read {self.proc}: {e.strerror or e}"}
        at = time.monotonic()
        old, since, self.procs, self.at = self.procs, self.at, procs, at
        if old is None:
            return {"active": None, "cores": None, "why": "first line: no interval measured yet"}
        cores = min(outside_ticks(old, procs) / self.hz / max(at - since, 1e-3), float(self.ncpu))
        return {"active": cores > self.above, "cores": round(cores, 3)}
