"""Per-process log files: tails for error messages, size-based rotation.

Logs are 0600, rotated copies too: a process's output may show what its environment
holds (a group's `env:` may carry a token), and the state directory is the user's alone.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import BinaryIO

from . import rotation

MAX_LOG_BYTES = 10 * 1024 * 1024
BACKUPS = 3
PRIVATE = 0o600


def private_file(path: Path | str) -> BinaryIO:
    """``path`` opened for appending, unbuffered: created 0600, an existing one tightened to 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE)
    try:
        if hasattr(os, "fchmod") and os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, PRIVATE)
        return os.fdopen(fd, "ab", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def write_header(path: Path | str, argv: list[str] | tuple[str, ...], how: str = "") -> None:
    """Append the line that opens every run in a log: ``--- <time> start[ (how)]: <argv>``.

    ``how`` says how it started when not by exec: "warm" (forked from the fork server)
    or "forked" (a fork of the CLI: the background supervisor)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    start = f"start ({how})" if how else "start"
    with private_file(path) as f:  # append: a restarted process keeps its earlier runs above
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {start}: {' '.join(argv)}\n".encode())


def tail(path: Path | None, lines: int = 20) -> str:
    """The last lines of a log file, read from the end (logs may be large)."""
    if path is None:
        return "(no log)"
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            chunk = min(size, max(4096, lines * 400))
            f.seek(size - chunk)
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return f"(cannot read {path})"
    out = data.splitlines()[-lines:]
    return "\n".join("  " + line for line in out) if out else "  (log is empty)"


def rotate_if_large(path: Path, max_bytes: int = MAX_LOG_BYTES, backups: int = BACKUPS) -> bool:
    """log -> log.1 -> log.2 ... without losing a line a child appends meanwhile (runtime/rotation.py)."""
    return rotation.rotate(path, max_bytes, backups, mode=PRIVATE)


_HEADER = re.compile(r"^\s*--- .* start(?: \([a-z]+\))?: ")
_EXC_LINE = re.compile(r"^\s*((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)):\s*(.*)$")


def latest_run(text: str) -> str:
    """Of a log's tail, only the lines of its latest run (after the last start header)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    return "\n".join(lines[starts[-1]:]) if starts else text


def first_cause(path: Path | None, scan_lines: int = 400) -> str | None:
    """The first exception line in the log's tail: in a chained traceback, the root cause.

    Dask wraps a failed start in 'RuntimeError: Nanny failed to start.'; the line
    worth showing is the ModuleNotFoundError (or OSError, ...) printed above it."""
    if path is None:
        return None
    text = tail(path, scan_lines).splitlines()
    # Only the latest run: every start appends a '--- <time> start[ (warm)| (forked)]: ...' header.
    starts = [i for i, line in enumerate(text) if _HEADER.match(line)]
    if starts:
        text = text[starts[-1]:]
    for line in text:
        m = _EXC_LINE.match(line)
        if m:
            return f"{m.group(1)}: {m.group(2)}".strip().rstrip(":")
    return None
