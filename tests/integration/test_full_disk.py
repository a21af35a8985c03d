"""A full disk under the state directory: supervision goes on, and what could not be written is
written once there is room again. The disk is a real one: a small tmpfs filled to the last byte."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from clusterctl.client import ask_supervisor
from clusterctl.runtime.probes import http_json
from clusterctl.topology import load_config
from conftest import missing_tool, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        missing_tool("mounting a tmpfs needs root and mount(8)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        missing_tool(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path) -> Path:
    """Write until the disk refuses; return the filler (delete it to make room)."""
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    for i in range(1000):  # the last partial pages too
        try:
            with open(mnt / f"crumb{i}", "wb") as f:
                f.write(b"\0" * 512)
        except OSError:
            break
    with pytest.raises(OSError):
        (mnt / "probe").write_bytes(b"x" * 4096)
    return filler


@pytest.mark.timeout(180)
def test_supervision_survives_a_full_disk_and_catches_up(cluster, small_disk):
    cluster.write(extra="")
    text = cluster.config.read_text().replace("state_dir: state", f"state_dir: {small_disk}")
    cluster.config.write_text(text)
    cfg = load_config(cluster.config)
    state = cfg.state_path
    cluster.cli("up", check=True)
    try:
        ledger = json.loads((state / "ledger.json").read_text())
        old = next(p for p in ledger["processes"] if p["name"] == "default-1")
        fill(small_disk)
        os.kill(old["pid"], signal.SIGKILL)

        def rejoined():  # the scheduler's own view: default-1 back, from a new process
            seen = http_json(f"http://127.0.0.1:{cluster.dashboard_port}/clusterctl/workers.json", 2) or {}
            w = (seen.get("workers") or {}).get("default-1")
            live = ask_supervisor(cfg, "status", timeout=5)
            p = next(p for p in live["processes"] if p["name"] == "default-1")
            return p if w and p["state"] == "running" and p["pid"] != old["pid"] else None

        live = wait_for(rejoined, 60, 0.2, "default-1 restarted while the disk is full")
        assert ask_supervisor(cfg, "ping", timeout=5)["ok"]
        on_disk = json.loads((state / "ledger.json").read_text())  # could not be rewritten: still the old pid
        assert next(p for p in on_disk["processes"] if p["name"] == "default-1")["pid"] == old["pid"]

        for f in small_disk.iterdir():  # room again
            if f.name == "filler" or f.name.startswith("crumb"):
                f.unlink()

        def caught_up():
            data = json.loads((state / "ledger.json").read_text())
            return next(p for p in data["processes"] if p["name"] == "default-1")["pid"] == live["pid"]

        wait_for(caught_up, 30, 0.2, "the ledger written again once there is room")
        # the supervisor's own write failures show once there is room; events.jsonl too,
        # including an event that happens after the disk was freed
        ask_supervisor(cfg, "scale", {"count": 1}, timeout=60)
        events = [json.loads(line) for line in (state / "events.jsonl").read_text().splitlines()]
        mine = [e["event"] for e in events if e["process"] == "default-1"]
        assert mine[-5:] == ["exited", "restarting", "started", "ready", "retiring"] or \
            mine[-6:-1] == ["exited", "restarting", "started", "ready", "retiring"], mine
    finally:
        res = cluster.cli("down", timeout=60)
        assert res.returncode == 0, res.stderr
