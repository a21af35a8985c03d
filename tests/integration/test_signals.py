"""Signals a supervisor meets: closing the terminal of `up --foreground` (SIGHUP) stops the
cluster as Ctrl-C does; nothing is orphaned."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from conftest import CLI, processes_under, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_foreground_supervisor_stops_everything_on(sig, cluster):
    env = dict(os.environ, NO_COLOR="1")
    fg = subprocess.Popen([*CLI, "up", "--foreground", "--file", str(cluster.config)], cwd=cluster.root, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: cluster.status()["state"] == "running", 60, 0.2, "the foreground cluster running")
        pids = [p["pid"] for p in cluster.status()["processes"]]
        assert len(pids) == 3
        fg.send_signal(sig)
        out, _ = fg.communicate(timeout=60)
    finally:
        if fg.poll() is None:
            fg.kill()
    assert fg.returncode == 0, out
    assert "stopped" in out
    assert not processes_under(cluster.root), "the supervisor left processes behind"
    assert cluster.ledger()["state"] == "stopped"
