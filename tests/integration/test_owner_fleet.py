"""The owner arrives on a fleet host mid-job (issue 23): a namespace host whose sshd runs in a PID
namespace of its own, so its owner watcher sees that host's processes only, as on a real machine.
Its workers pause, retire and come back; the head's worker carries the job meanwhile; the result is
the serial one."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

import netns
from conftest import free_port, wait_for
from clients import client_of
from clusterctl.plan.specs import cluster_tag
from clusterctl.topology import load_config
from test_owner import make_task, serial

pytestmark = pytest.mark.integration
PY = sys.executable


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    yield from netns.netns_fleet(tmp_path_factory, hosts=1, own_pids=True)


def events(cluster) -> list[dict]:
    path = cluster.state / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def first(cluster, kind: str, after: float = 0.0, process: str = "ns0") -> dict | None:
    return next((e for e in events(cluster) if e["event"] == kind and e["time"] >= after and e["process"] == process),
                None)


def host(cluster, name: str = "ns0") -> dict:
    return next(h for h in cluster.status()["hosts"] if h["name"] == name)


def fleet_cluster(cluster, fleet, owner: str) -> None:
    cluster.port, cluster.dashboard_port = free_port(fleet.head_address), free_port(fleet.head_address)
    h = fleet.hosts[0]
    text = fleet.host_yaml("ns0", h, PY, cluster.root / "remote" / "ns0")
    text += "".join(f"    {line}\n" for line in owner.strip().splitlines())
    cluster.write(workers="  - name: default\n    nthreads: 1\n    at: {localhost: 1, ns0: 1}\n", extra="hosts:\n" + text)
    cluster.config.write_text(cluster.config.read_text().replace("  host: 127.0.0.1\n", f"  host: {fleet.head_address}\n", 1))


def hog_inside(fleet, marker: str) -> subprocess.Popen:
    """A CPU-bound process started on the host through its sshd: inside its PID namespace."""
    return subprocess.Popen(fleet.ssh_argv(0, f"exec {PY} -c 'while True: pass  # {marker}'"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_marked(marker: str) -> None:
    for p in psutil.process_iter(["cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []) and p.pid != psutil.Process().pid:
            p.kill()


@pytest.mark.timeout(240)
def test_owner_arrives_on_a_fleet_host_by_its_own_cpu_mid_job(cluster, fleet):
    fleet_cluster(cluster, fleet, "owner: {active_if: {other_cpu_above: 0.5}, retire_after: 4, resume_after: 3}")
    cluster.cli("up", check=True)
    wait_for(lambda: host(cluster)["owner"] == "idle", 30, 0.3, "ns0's owner judged idle")
    assert host(cluster, "localhost")["owner"] is None  # no rule on the head
    # The head's CPU is not the host's owner: that host has a process table of its own.
    head_hog = subprocess.Popen([PY, "-c", "while True: pass"])
    try:
        time.sleep(4)
        assert host(cluster)["owner"] == "idle", host(cluster)
    finally:
        head_hog.kill()
        head_hog.wait()
    n = 240
    marker = f"owner-hog-{cluster.port}"
    with client_of(cluster) as client:
        futures = client.map(make_task(), range(n), pure=False)
        wait_for(lambda: sum(f.done() for f in futures) >= 6, 60, 0.1, "the job under way")
        arrived = time.time()
        ssh = hog_inside(fleet, marker)
        try:
            wait_for(lambda: first(cluster, "owner-pause", arrived), 20, 0.2, "ns0's workers paused")
            paused_at = first(cluster, "owner-pause", arrived)["time"]
            assert "other cpu" in host(cluster)["owner_why"]
            wait_for(lambda: [w["status"] for w in client.scheduler_info()["workers"].values()
                              if w["name"] == "default-1"] == ["paused"], 10, 0.2, "Dask sees ns0's worker paused")
            wait_for(lambda: first(cluster, "yield", arrived), 20, 0.2, "ns0's worker retired")
            wait_for(lambda: {p["name"]: p["state"] for p in cluster.status()["processes"]}["default-1"] == "yielded",
                     20, 0.3, "default-1 yielded")
        finally:
            kill_marked(marker)
            ssh.kill()
            ssh.wait()
        left = time.time()
        wait_for(lambda: first(cluster, "yield-over", left), 40, 0.3, "ns0's worker comes back")
        results = client.gather(futures)
    assert sorted((i, inside) for i, inside, _, _ in results) == serial(n)
    on_ns0 = [s for _, _, w, s in results if w == "default-1"]
    back = first(cluster, "yield-over", left)["time"]
    late = [s for s in on_ns0 if paused_at + 2.0 < s < back]
    assert not late, f"{len(late)} tasks started on ns0 while its owner was active"
    assert [s for s in on_ns0 if s > back] and [s for s in on_ns0 if s < arrived], "ns0 worked before and after"
    st = cluster.status()
    assert all(p["restarts"] == 0 for p in st["processes"]) and st["state"] == "running", st["processes"]
    assert not [e for e in events(cluster) if e["event"] in ("unhealthy", "fatal", "host-unreachable")]


@pytest.mark.timeout(240)
def test_owner_arrives_on_a_fleet_host_by_the_command_and_hours_hold_it(cluster, fleet):
    flag = cluster.root / "ns0-owner"
    fleet_cluster(cluster, fleet, f"owner: {{active_if: {{command: 'test -e {flag}'}}, when_active: retire, "
                                  f"resume_after: 2}}")
    cluster.cli("up", check=True)
    wait_for(lambda: host(cluster)["owner"] == "idle", 30, 0.3, "ns0's owner judged idle")
    t0 = time.time()
    flag.touch()
    wait_for(lambda: first(cluster, "yield", t0), 20, 0.2, "ns0 retires at once (when_active: retire)")
    wait_for(lambda: host(cluster)["mode"] == "away" and host(cluster)["workers"]["running"] == 0, 20, 0.3,
             "ns0 away")
    with client_of(cluster) as client:  # the head's worker carries on meanwhile
        assert client.submit(lambda: 6 * 7).result(timeout=30) == 42
    flag.unlink()
    t1 = time.time()
    wait_for(lambda: first(cluster, "yield-over", t1), 20, 0.2, "ns0's worker back")
    wait_for(lambda: cluster.status()["workers_registered"] == 2, 30, 0.3, "both workers registered")
    # Its watcher leaves with the cluster: nothing of it is left on the host.
    tag = cluster_tag(load_config(cluster.config))
    assert watchers(tag), "ns0's owner watcher runs while the cluster does"
    cluster.cli("down", check=True)
    wait_for(lambda: not watchers(tag), 10, 0.3, "no owner watcher left after down")


def watchers(tag: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "clusterctl.remote.ownerwatch" in " ".join(p.info["cmdline"] or []) and \
                    p.environ().get("CLUSTERCTL_TAG") == tag:
                out.append(p)
        except psutil.Error:
            pass
    return out
