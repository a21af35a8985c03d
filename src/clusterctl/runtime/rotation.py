"""Size-based rotation that never loses a line, for logs other processes append to.

A child writes its log through an O_APPEND descriptor it keeps for life, so the
file cannot be renamed away from it, and copy-then-truncate loses whatever it
writes between the copy and the truncate. Instead the head of the file is copied
to ``log.1`` (a whole number of filesystem blocks), made durable, then cut from the
live file with ``fallocate(FALLOC_FL_COLLAPSE_RANGE)``: the kernel does that under
the inode lock, so every append lands either before the cut (and is kept, after
the copied part) or after it. A line that straddles the cut ends ``log.1`` and
begins ``log``: split, never lost.

Where the filesystem cannot collapse (tmpfs, non-Linux), the fallback copies,
then copies again whatever was appended meanwhile, then truncates: that leaves a
window of one system call, said here rather than hidden.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

FALLOC_FL_COLLAPSE_RANGE = 0x08
_libc = None


def _fallocate():
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    return getattr(_libc, "fallocate", None) if _libc else None


def rotate(path: Path, max_bytes: int, backups: int, mode: int = 0o600) -> bool:
    """Rotate ``path`` when it reaches ``max_bytes``: log -> log.1 -> ... -> log.<backups>."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size < max_bytes:
        return False
    shift_backups(path, backups, mode)
    first = path.with_name(f"{path.name}.1")
    with open(path, "r+b") as live:
        if not _collapse_head(live, first, mode):
            _copy_truncate(live, first, mode)
    return True


def shift_backups(path: Path, backups: int, mode: int = 0o600) -> None:
    """log.1 -> log.2 ... (the oldest falls off), each private: one rotated by an older clusterctl may be 0644."""
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            newer = path.with_name(f"{path.name}.{i + 1}")
            os.replace(older, newer)
            os.chmod(newer, mode)


def _collapse_head(live, first: Path, mode: int) -> bool:
    fallocate = _fallocate()
    if fallocate is None:
        return False
    fd = live.fileno()
    block = os.fstatvfs(fd).f_bsize
    size = os.fstat(fd).st_size
    cut = ((size - 1) // block) * block  # whole blocks, and never up to EOF (EINVAL)
    if cut <= 0:
        return False
    _copy(live, first, cut, mode, append=False)
    if fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, ctypes.c_long(0), ctypes.c_long(cut)) != 0:
        first.unlink(missing_ok=True)  # not supported here: the fallback copies again
        return False
    return True


def _copy_truncate(live, first: Path, mode: int) -> None:
    fd = live.fileno()
    copied = _copy(live, first, os.fstat(fd).st_size, mode, append=False)
    while (size := os.fstat(fd).st_size) > copied:  # appended meanwhile: keep it too
        live.seek(copied)
        copied += _copy(live, first, size - copied, mode, append=True, start=copied)
    live.truncate(0)


def _copy(live, dest: Path, count: int, mode: int, append: bool, start: int = 0) -> int:
    live.seek(start)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    out = os.open(dest, flags, mode)
    try:
        left = count
        while left > 0:
            chunk = live.read(min(left, 1 << 20))
            if not chunk:
                break
            os.write(out, chunk)
            left -= len(chunk)
        os.fsync(out)
    finally:
        os.close(out)
    return count - left
