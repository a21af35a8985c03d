"""A hung worker on another host (SIGSTOP: a closed laptop lid, a machine thrashing in swap) is replaced
in time, mid-job, on a network-namespace host over real sshd: killed there without a grace (a stopped
process cannot act on SIGTERM), forgotten by the scheduler, and started again under its own name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest

import netns
from conftest import CLI, free_port, processes_under, wait_for

pytestmark = pytest.mark.integration
PY = sys.executable
GRACE = 5  # unhealthy_grace, seconds


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    yield from netns.netns_fleet(tmp_path_factory, hosts=1)


def remote_dask(path) -> list[psutil.Process]:
    skip = ("clusterctl.remote.agent", "clusterctl.remote.forkserver")
    return [p for p in processes_under(path)
            if "dask" in " ".join(p.cmdline()) and not any(s in " ".join(p.cmdline()) for s in skip)]


def proc(st: dict, name: str) -> dict:
    return next(p for p in st["processes"] if p["name"] == name)


@pytest.mark.timeout(300)
def test_a_sigstopped_remote_worker_is_replaced_within_its_grace_plus_ten_seconds(cluster, fleet):
    h = fleet.hosts[0]
    cluster.port, cluster.dashboard_port = free_port(fleet.head_address), free_port(fleet.head_address)
    workdir = cluster.root / "remote" / "ns0"
    cluster.write(workers=("  - name: default\n    nthreads: 1\n    at: {localhost: 1, ns0: 1}\n"
                           f"    restart: {{unhealthy_grace: {GRACE}, max_retries: 2, window: 60}}\n"),
                  extra="hosts:\n" + fleet.host_yaml("ns0", h, PY, workdir))
    text = cluster.config.read_text().replace("  host: 127.0.0.1\n", f"  host: {fleet.head_address}\n", 1)
    cluster.config.write_text(text)
    cluster.cli("up", check=True, timeout=120)
    args = ["run", "montecarlo", "--tasks", "40", "--min-points", "5000000", "--max-points", "20000000", "--seed", "3"]
    calm = cluster.root / "calm.csv"
    cluster.cli(*args, "--out", str(calm), check=True, timeout=180)
    [victim] = remote_dask(workdir)
    old = proc(cluster.status(), "default-1")

    job = subprocess.Popen([*CLI, *args, "--out", str(cluster.root / "hung.csv"), "--file", str(cluster.config)],
                           cwd=cluster.root, env=dict(os.environ, NO_COLOR="1"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # tasks are running on both workers
        victim.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()

        def replaced():
            st = cluster.status()
            p = proc(st, "default-1")
            return p if p["state"] == "running" and p["registered"] and p["pid"] != old["pid"] else None

        wait_for(replaced, GRACE + 10, 0.2, f"default-1 replaced within unhealthy_grace + 10 s ({GRACE + 10} s)")
        took = time.monotonic() - stopped_at
        print(f"SIGSTOPped remote worker replaced and registered {took:.2f} s after the stop")
        assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE, "the stopped process was killed"
        out, err = job.communicate(timeout=180)
        assert job.returncode == 0, out + err
    finally:
        if job.poll() is None:
            job.kill()
        try:
            victim.send_signal(signal.SIGCONT)
        except psutil.Error:
            pass
    pd.testing.assert_frame_equal(pd.read_csv(calm), pd.read_csv(cluster.root / "hung.csv"), check_exact=True)
    events = [json.loads(line) for line in (cluster.state / "events.jsonl").read_text().splitlines()]
    mine = [e for e in events if e["process"] == "default-1"]
    kinds = [e["event"] for e in mine]
    assert "unhealthy" in kinds and "hung" in next(e["detail"] for e in mine if e["event"] == "unhealthy")
    assert "fatal" not in kinds and "crash-loop" not in kinds, kinds
    # No replacement was refused its name: exactly one start after the stop.
    after = kinds[kinds.index("unhealthy"):]
    print([(e["event"], e["detail"][:90]) for e in mine if e["event"] != "ready"][-8:])
    assert after.count("started") == 1, after
    st = cluster.status()
    assert st["state"] == "running" and st["workers_registered"] == 2
    assert len(remote_dask(workdir)) == 1, "one worker there, never two"
    cluster.cli("down", check=True)
    assert processes_under(cluster.root) == []
