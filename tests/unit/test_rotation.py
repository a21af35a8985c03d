"""Log rotation never loses a line, even while another process appends as fast as it can."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from clusterctl.runtime import rotation
from conftest import missing_tool
from clusterctl.runtime.rotation import rotate

# Writes numbered lines until the stop file appears (at least 100,000), then prints how many.
WRITER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
i = 0
while i < 100_000 or not os.path.exists(sys.argv[2]):
    os.write(fd, b"line %08d %s\\n" % (i, b"x" * 80))
    i += 1
    if i % 2000 == 0:
        time.sleep(0.002)  # a real log's writer pauses: rotations interleave with it on every run
print(i)
"""


def collapse_supported(directory: Path) -> bool:
    probe = directory / ".probe"
    probe.write_bytes(b"\0" * 3 * 65536)
    try:
        with open(probe, "r+b") as f:
            return rotation._collapse_head(f, directory / ".probe.1", 0o600)
    finally:
        probe.unlink(missing_ok=True)
        (directory / ".probe.1").unlink(missing_ok=True)


def read_all(path: Path, backups: int) -> bytes:
    parts = [path.with_name(f"{path.name}.{i}") for i in range(backups, 0, -1)]
    return b"".join(p.read_bytes() for p in parts if p.exists()) + path.read_bytes()


def test_rotation_under_a_concurrent_writer_loses_nothing(tmp_path):
    if not collapse_supported(tmp_path):
        missing_tool("this filesystem cannot collapse a file's head (tmpfs?): the fallback is tested below")
    log, stop = tmp_path / "w.log", tmp_path / "stop"
    # the writer goes on until the rotations are done, however slow this machine is at the moment
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(stop)], stdout=subprocess.PIPE, text=True)
    rotations = 0
    try:
        deadline = time.monotonic() + 60
        while writer.poll() is None and time.monotonic() < deadline:
            if rotate(log, max_bytes=32 * 1024, backups=10_000):
                rotations += 1
            if rotations >= 20:
                stop.touch()
        stop.touch()
        out, _ = writer.communicate(timeout=30)
    finally:
        writer.kill() if writer.poll() is None else None
        writer.wait()
    assert writer.returncode == 0 and rotations >= 20, (writer.returncode, rotations)
    count = int(out)
    lines = read_all(log, 10_000).splitlines()
    assert [int(x.split()[1]) for x in lines] == list(range(count))


def test_rotated_files_are_private_and_numbered(tmp_path):
    log = tmp_path / "w.log"
    for i in range(4):
        log.write_bytes(b"%d" % i * 70_000)
        assert rotate(log, max_bytes=65_536, backups=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.log", "w.log.1", "w.log.2", "w.log.3"]
    assert all(p.stat().st_mode & 0o077 == 0 for p in tmp_path.iterdir() if p.name != "w.log")
    assert not rotate(log, max_bytes=10**9, backups=3)
    assert not rotate(tmp_path / "absent.log", max_bytes=1, backups=3)


def test_fallback_copies_then_truncates_without_losing_the_copied_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(rotation, "_fallocate", lambda: None)
    log = tmp_path / "w.log"
    data = b"".join(b"line %06d\n" % i for i in range(10_000))
    log.write_bytes(data)
    assert rotate(log, max_bytes=1024, backups=2)
    assert (tmp_path / "w.log.1").read_bytes() == data and log.read_bytes() == b""
    assert os.stat(tmp_path / "w.log.1").st_mode & 0o777 == 0o600
