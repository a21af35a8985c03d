"""Hosts come and go, tested the way it happens: workstations are network namespaces with their
own sshd, and a cut link drops packets silently (no FIN, no RST) on both sides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

import netns
from conftest import CLI, free_port, processes_under, wait_for

pytestmark = pytest.mark.integration
PY = sys.executable
CUT = 30  # seconds: longer than the restart window below, as a Wi-Fi drop or a reboot would be
RESTART = """    restart: {backoff_initial: 0.2, backoff_max: 1, max_retries: 2, window: 10}\n"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    yield from netns.netns_fleet(tmp_path_factory, hosts=2)


def fleet_cluster(cluster, fleet, workers: str, extra_hosts: str = "") -> None:
    cluster.port, cluster.dashboard_port = free_port(fleet.head_address), free_port(fleet.head_address)
    hosts = "".join(fleet.host_yaml(f"ns{h.index}", h, PY, cluster.root / "remote" / f"ns{h.index}")
                    for h in fleet.hosts)
    cluster.write(workers=workers, extra="hosts:\n" + hosts + extra_hosts)
    text = cluster.config.read_text().replace("  host: 127.0.0.1\n", f"  host: {fleet.head_address}\n", 1)
    cluster.config.write_text(text)


def events(cluster) -> list[dict]:
    return [json.loads(line) for line in (cluster.state / "events.jsonl").read_text().splitlines()]


def host_of(st: dict, name: str) -> dict:
    return next(h for h in st["hosts"] if h["name"] == name)


def dask_under(path: Path) -> list[psutil.Process]:
    """Dask processes whose working directory is a host's workdir: the 'remote' ones there (not the agents,
    nor the host's fork server, which holds no Dask process of its own)."""
    return [p for p in processes_under(path) if "dask" in " ".join(p.cmdline())
            and "clusterctl.remote.agent" not in " ".join(p.cmdline()) and "clusterctl.remote.forkserver" not in " ".join(p.cmdline())]


@pytest.mark.timeout(300)
def test_a_link_cut_longer_than_the_restart_window_heals_without_an_operator(cluster, fleet):
    fleet_cluster(cluster, fleet, "  - name: default\n    nthreads: 1\n    at: {localhost: 1, ns0: 1, ns1: 1}\n" + RESTART)
    cluster.cli("up", check=True)
    args = ["run", "montecarlo", "--tasks", "40", "--min-points", "5000000", "--max-points", "20000000", "--seed", "5"]
    calm = cluster.root / "calm.csv"
    cluster.cli(*args, "--out", str(calm), check=True, timeout=180)
    ns0_dir = cluster.root / "remote" / "ns0"
    before = [p.pid for p in dask_under(ns0_dir)]
    assert len(before) == 1, before
    ns0_log = cluster.state / "logs" / "default-1.log"
    assert "start (direct)" in ns0_log.read_text(), "ns0's worker is a channel to its fork server (remote/direct.py)"

    job = subprocess.Popen([*CLI, *args, "--out", str(cluster.root / "cut.csv"), "--file", str(cluster.config)],
                           cwd=cluster.root, env=dict(os.environ, NO_COLOR="1"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    fleet.cut(0)
    cut_at = time.monotonic()
    try:
        out, err = job.communicate(timeout=180)  # finishes on the other hosts
        assert job.returncode == 0, out + err
        pd.testing.assert_frame_equal(pd.read_csv(calm), pd.read_csv(cluster.root / "cut.csv"), check_exact=True)
        # the head notices (ssh keep-alives), and so does the far side: no orphan keeps running there
        st = wait_for(lambda: (s := cluster.status()) and host_of(s, "ns0")["state"] == "unreachable" and s,
                      40, 0.5, "ns0 unreachable")
        assert st["state"] == "degraded"
        wait_for(lambda: not dask_under(ns0_dir), 45, 0.5, "the fork server on the cut host stopping its worker")
        assert "no heartbeat on the lifeline" in (ns0_dir / "forkserver.log").read_text()
        left = CUT - (time.monotonic() - cut_at)
        if left > 0:
            time.sleep(left)
        st = cluster.status()
        assert {p["name"]: p for p in st["processes"]}["default-1"]["state"] in ("waiting", "pending")
        assert not [p for p in st["processes"] if p["state"] == "fatal"], st["processes"]
    finally:
        fleet.restore(0)
        if job.poll() is None:
            job.kill()
    back_at = time.monotonic()
    st = wait_for(lambda: (s := cluster.status())["state"] == "running" and s["workers_registered"] == 3
                  and host_of(s, "ns0")["state"] == "reachable" and s, 60, 0.5, "full strength again")
    took = time.monotonic() - back_at
    assert took < 40, f"full strength {took:.0f} s after the link came back"
    assert host_of(st, "ns0")["state"] == "reachable"
    assert len(dask_under(ns0_dir)) == 1, "one worker there, never a duplicate"
    starts = [ln for ln in ns0_log.read_text().splitlines() if ln.startswith("--- ") and " start" in ln]
    assert "start (direct)" in starts[-1], "back through a fresh fork server's route"
    mine = [e["event"] for e in events(cluster) if e["process"] == "ns0" and e["event"] != "sized"]
    assert mine == ["host-unreachable", "host-back"], mine
    restarts = {p["name"]: p["restarts"] for p in st["processes"]}
    assert restarts["default-0"] == 0 and restarts["default-2"] == 0  # the others were left alone
    cluster.cli("down", check=True)
    assert processes_under(cluster.root) == []


@pytest.mark.timeout(240)
def test_a_host_off_at_up_joins_when_it_answers(cluster, fleet):
    fleet_cluster(cluster, fleet, "  - name: default\n    nthreads: 1\n    at: {localhost: 1, ns1: 1}\n")
    fleet.cut(1)
    try:
        res = cluster.cli("up", timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "(degraded)" in res.stdout and "host ns1 is unreachable" in res.stderr
        st = cluster.status()
        assert st["state"] == "degraded" and st["workers_registered"] == 1
        assert host_of(st, "ns1")["workers"] == {"desired": 1, "running": 0}
    finally:
        fleet.restore(1)
    st = wait_for(lambda: (s := cluster.status())["state"] == "running" and s["workers_registered"] == 2
                  and host_of(s, "ns1")["state"] == "reachable" and s, 60, 0.5, "ns1's worker joining")
    assert host_of(st, "ns1")["state"] == "reachable"
    cluster.cli("down", check=True)
    assert processes_under(cluster.root) == []
