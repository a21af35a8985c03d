"""Structured event log: one JSON object per line (time, process, event, detail).

Writing an event never fails the caller: on a full disk (or any write error) the
line waits in a bounded buffer and is written, in order, by the next emit that
can write; what the buffer had to drop is counted in a ``events-dropped`` line.
The file is private (0600) and rotates by rename at ``MAX_EVENT_BYTES``: the
supervisor is its only writer, so nothing is lost between two files.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .rotation import shift_backups

MAX_EVENT_BYTES = 10 * 1024 * 1024
BACKUPS = 3
PENDING_MAX = 10_000  # lines kept while the disk refuses them


class EventLog:
    def __init__(self, path: Path, echo: Any = None, max_bytes: int = MAX_EVENT_BYTES, backups: int = BACKUPS):
        self.path = path
        self.echo = echo  # callable(str) for --foreground, or None
        self.max_bytes, self.backups = max_bytes, backups
        self.pending: collections.deque[str] = collections.deque()
        self.dropped = 0
        self.failing: str | None = None  # the last write error, while writes fail
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # reported by the first emit that cannot write

    def emit(self, process: str, event: str, detail: str = "", **extra: Any) -> None:
        record = {"time": round(time.time(), 3), "process": process, "event": event, "detail": detail}
        record.update(extra)
        line = json.dumps(record, default=str)
        with self._lock:
            if len(self.pending) >= PENDING_MAX:
                self.pending.popleft()
                self.dropped += 1
            self.pending.append(line)
            self._flush()
        if self.echo:
            stamp = time.strftime("%H:%M:%S", time.localtime(record["time"]))
            try:
                self.echo(f"{stamp} {process:<14} {event:<12} {detail}".rstrip())
            except (OSError, ValueError):
                pass  # a closed terminal must not stop supervision

    def _flush(self) -> None:
        lines = list(self.pending)
        if self.dropped:
            note = {"time": round(time.time(), 3), "process": "supervisor", "event": "events-dropped",
                    "detail": f"{self.dropped} events were lost while the event log could not be written"}
            lines.insert(0, json.dumps(note))
        data = ("\n".join(lines) + "\n").encode("utf-8")
        try:
            self._rotate_if_large()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                written = os.write(fd, data)
                if written != len(data):  # a short write on a nearly full disk
                    raise OSError(28, "short write")
            finally:
                os.close(fd)
        except OSError as e:
            if self.failing is None:
                print(f"events: cannot write {self.path}: {e}; keeping events in memory", file=sys.stderr, flush=True)
            self.failing = str(e)
            return
        if self.failing is not None:
            print(f"events: {self.path} writable again", file=sys.stderr, flush=True)
        self.failing = None
        self.pending.clear()
        self.dropped = 0

    def _rotate_if_large(self) -> None:
        try:
            if self.path.stat().st_size < self.max_bytes:
                return
        except FileNotFoundError:
            return
        shift_backups(self.path, self.backups)  # the supervisor is its only writer: a rename loses nothing
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))


def read_events(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines[-limit:] if limit else lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash
    return out
