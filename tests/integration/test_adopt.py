"""`up` over a cluster whose supervisor was SIGKILLed adopts what still runs (supervisor/adopt.py):
the same pids, supervised again (a worker killed afterwards is restarted), results held in
memory kept; a port-0 scheduler keeps the ports it got."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from conftest import processes_under, wait_for
from clients import client_of

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pids(cluster) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in cluster.ledger()["processes"]}


def kill_supervisor(cluster) -> tuple[int, list[int]]:
    """SIGKILL the supervisor; returns its pid and its helpers' (the warm fork server, in its group)."""
    sup = cluster.ledger()["supervisor"]["pid"]
    helpers = [p.pid for p in psutil.Process(sup).children() if os.getpgid(p.pid) == sup]
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: not alive(sup), 10, 0.05, "the supervisor to die")
    return sup, helpers


def events(cluster) -> list[dict]:
    return [json.loads(line) for line in (cluster.state / "events.jsonl").read_text().splitlines()]


def test_up_adopts_an_unsupervised_cluster_and_supervises_it(cluster):
    cluster.cli("up", check=True)
    address = cluster.ledger()["scheduler"]["address"]
    with client_of(cluster, address, timeout="20s") as client:  # a result held in memory, named on the scheduler
        future = client.submit(lambda n: list(range(n)), 1000, pure=False)
        future.result()
        client.publish_dataset(kept=future)
    before = pids(cluster)
    old_sup, helpers = kill_supervisor(cluster)
    assert helpers, "the supervisor runs a warm fork server: the test must see it reaped"

    st = cluster.cli("status", "--json")
    assert st.returncode == 3 and json.loads(st.stdout)["state"] == "unsupervised", st.stdout

    up = cluster.cli("up", check=True)
    assert "is up" in up.stdout, up.stdout
    st = cluster.status()
    assert st["state"] == "running" and st["supervisor"]["alive"], st
    assert st["supervisor"]["pid"] != old_sup
    assert {p["name"]: p["pid"] for p in st["processes"]} == before, "adopted processes keep their pids"
    assert all(p["registered"] for p in st["processes"] if p["role"] == "worker"), st
    adopted = [e for e in events(cluster) if e["event"] == "adopted"]
    assert sorted(e["process"] for e in adopted) == sorted([*before, "cluster"])
    summary = adopted[-1]
    assert summary["process"] == "cluster" and summary["restarted"] == [] and summary["supervisor"] == st["supervisor"]["pid"]
    assert not any(alive(h) for h in helpers), "the old supervisor's fork server must not linger"

    with client_of(cluster, address, timeout="20s") as client:  # the point of adopting: nothing was lost
        assert sum(client.get_dataset("kept").result()) == sum(range(1000))

    victim = before["default-1"]
    os.kill(victim, signal.SIGKILL)

    def back() -> dict | None:
        p = next(p for p in cluster.status()["processes"] if p["name"] == "default-1")
        return p if p["pid"] != victim and p["state"] == "running" and p["registered"] else None

    again = wait_for(back, 30, 0.2, "default-1 restarted by the new supervisor")
    assert again["restarts"] >= 1
    now = pids(cluster)
    assert now["scheduler"] == before["scheduler"] and now["default-0"] == before["default-0"]
    mine = [e["event"] for e in events(cluster) if e["process"] == "default-1"]
    assert mine[-4:] == ["exited", "restarting", "started", "ready"], mine

    job = cluster.cli("run", "montecarlo", "--tasks", "8", "--max-points", "100000", timeout=120, check=True)
    assert "8 tasks" in job.stdout, job.stdout

    cluster.cli("down", check=True)
    assert not any(alive(p) for p in now.values())
    assert processes_under(cluster.root) == []


def test_a_port_zero_scheduler_is_adopted_with_the_ports_it_got(cluster):
    cluster.port = cluster.dashboard_port = 0
    cluster.write()
    cluster.cli("up", check=True)
    record = cluster.ledger()
    address, http_port = record["scheduler"]["address"], record["scheduler"]["http_port"]
    before = pids(cluster)
    kill_supervisor(cluster)

    cluster.cli("up", check=True)
    after = cluster.ledger()
    assert (after["scheduler"]["address"], after["scheduler"]["http_port"]) == (address, http_port)
    assert pids(cluster) == before
    assert cluster.status()["scheduler"]["answering"]

    # A restart after adoption uses the pinned ports: the scheduler comes back where it was and
    # every worker rejoins it (they never reconnect by themselves).
    os.kill(before["scheduler"], signal.SIGKILL)

    def rejoined() -> bool:
        st = cluster.status()
        sched = next(p for p in st["processes"] if p["role"] == "scheduler")
        return (sched["pid"] != before["scheduler"] and st["workers_registered"] == 2
                and all(p["state"] == "running" for p in st["processes"]))

    wait_for(rejoined, 60, 0.3, "the scheduler back on its pinned ports with both workers")
    again = cluster.ledger()
    assert (again["scheduler"]["address"], again["scheduler"]["http_port"]) == (address, http_port)
    cluster.cli("down", check=True)
    assert processes_under(cluster.root) == []


def test_a_dead_worker_is_started_again_when_its_cluster_is_adopted(cluster):
    cluster.cli("up", check=True)
    before = pids(cluster)
    kill_supervisor(cluster)
    os.kill(before["default-0"], signal.SIGKILL)  # dies while nobody supervises
    wait_for(lambda: not alive(before["default-0"]), 10, 0.05, "default-0 to die")

    cluster.cli("up", check=True)
    st = cluster.status()
    procs = {p["name"]: p for p in st["processes"]}
    assert procs["scheduler"]["pid"] == before["scheduler"] and procs["default-1"]["pid"] == before["default-1"]
    assert procs["default-0"]["pid"] != before["default-0"] and procs["default-0"]["restarts"] == 1
    assert st["workers_registered"] == 2
    summary = [e for e in events(cluster) if e["process"] == "cluster" and e["event"] == "adopted"][-1]
    assert summary["adopted"] == ["scheduler", "default-1"] and summary["restarted"] == ["default-0"], summary
    from clusterctl.client.start import adoption
    from clusterctl.runtime.ledger import Ledger
    from clusterctl.topology import load_config

    cfg = load_config(cluster.config)
    assert adoption(cfg, Ledger(cfg.state_path).read()) == {"adopted": ["scheduler", "default-1"], "restarted": ["default-0"]}
    cluster.cli("down", check=True)
    assert processes_under(cluster.root) == []
