"""Dask is the authority on retirement and shutdown (supervisor/authority.py), on a real cluster:
a worker the scheduler retires stays retired (its group's desired count drops), `client.restart()`
still brings every worker back, and `client.shutdown()` stops the cluster and its supervisor."""

from __future__ import annotations

import json
import time

import psutil
from distributed import Client

from clusterctl.client.connect import client_address, client_kwargs
from clusterctl.topology import load_config
from conftest import processes_under, wait_for


def events(cluster) -> list[dict]:
    return [json.loads(line) for line in (cluster.state / "events.jsonl").read_text().splitlines()]


def client_for(cluster) -> Client:
    cfg = load_config(cluster.config)
    return Client(client_address(cfg), timeout="10s", **client_kwargs(cfg))


def test_a_worker_dask_retires_stays_retired_and_restart_still_works(cluster):
    cluster.write(workers="  - name: default\n    count: 3\n    nthreads: 1\n")
    cluster.cli("up", check=True)
    with client_for(cluster) as client:
        client.wait_for_workers(3, timeout=30)
        by_name = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
        future = client.submit(sum, [1, 2, 3], workers=[by_name["default-2"]], key="kept-result")
        assert future.result(timeout=30) == 6
        client.retire_workers(workers=[by_name["default-2"]])  # Dask moves the result, closes the worker
        wait_for(lambda: cluster.status()["workers_registered"] == 2, 30, what="the retirement")
        time.sleep(3)  # a restart would have registered a third worker by now
        st = cluster.status()
        assert st["workers_registered"] == 2, st
        assert [p["name"] for p in cluster.ledger()["processes"] if p["role"] == "worker"] == ["default-0", "default-1"]
        assert future.result(timeout=10) == 6, "the retired worker's result moved before it left"
        said = [e for e in events(cluster) if e["event"] == "retired-by-dask"]
        assert [e["process"] for e in said] == ["default-2"] and "default: 2 workers desired" in said[0]["detail"]
        saved = json.loads((cluster.state / "desired.json").read_text())
        assert saved["groups"]["default"]["count"] == 2, "the smaller size outlives the supervisor"

        # client.restart(): not a retirement; the workers (no nanny) come back as before
        pids = {p["name"]: p["pid"] for p in cluster.ledger()["processes"] if p["role"] == "worker"}
        client.restart(timeout=60)
        client.wait_for_workers(2, timeout=60)
    wait_for(lambda: cluster.status()["workers_registered"] == 2, 60, what="the workers back after client.restart()")
    new = {p["name"]: p["pid"] for p in cluster.ledger()["processes"] if p["role"] == "worker"}
    assert set(new) == set(pids) and all(new[n] != pids[n] for n in new), (pids, new)


def test_client_shutdown_stops_the_cluster_and_the_supervisor(cluster):
    cluster.cli("up", check=True)
    sup = psutil.Process(cluster.ledger()["supervisor"]["pid"])
    with client_for(cluster) as client:
        client.wait_for_workers(2, timeout=30)
        me = client.scheduler.address
        client.shutdown()
    wait_for(lambda: not sup.is_running() or sup.status() == psutil.STATUS_ZOMBIE, 30,
             what="the supervisor to stop after client.shutdown()")
    assert cluster.ledger()["state"] == "stopped"
    asked = [e for e in events(cluster) if e["event"] == "shutdown-requested"]
    assert len(asked) == 1 and asked[0]["detail"].startswith("by a client at tls://127.0.0.1:"), asked
    assert me.startswith("tls://127.0.0.1:")
    wait_for(lambda: processes_under(cluster.root) == [], 15, what="nothing left running")
    assert cluster.cli("status").returncode != 0 or "stopped" in cluster.cli("status").stdout
