"""Prometheus metrics on a real cluster: the supervisor's own page, and the scheduler's /metrics."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_for

pytestmark = pytest.mark.integration


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode() if r.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def by(family, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in family.samples}


def ledger_proc(cluster, name: str) -> dict:
    return next(p for p in cluster.ledger()["processes"] if p["name"] == name)


def test_supervisor_and_scheduler_metrics(cluster):
    cluster.cli("up", check=True)
    st = cluster.status()
    url = st["metrics"]
    m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/metrics", url or "")
    assert m, f"status --json names no loopback metrics page: {url!r}"
    port = int(m.group(1))
    assert cluster.ledger()["supervisor"]["metrics"] == url

    # Bound on loopback only: the supervisor's one listening socket on that port is 127.0.0.1's.
    sup = psutil.Process(st["supervisor"]["pid"])
    listening = [c.laddr.ip for c in sup.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening == ["127.0.0.1"], listening

    fams = families(wait_for(lambda: fetch(url), 10, 0.1, "the metrics page"))
    assert by(fams["clusterctl_process_up"], "name") == {"scheduler": 1, "default-0": 1, "default-1": 1}
    assert by(fams["clusterctl_group_workers_desired"], "group") == {"default": 2}
    assert by(fams["clusterctl_group_workers_running"], "group") == {"default": 2}
    assert by(fams["clusterctl_cluster_state"], "state")["running"] == 1
    assert by(fams["clusterctl_info"], "name") == {"test": 1}
    before = by(fams["clusterctl_process_restarts"], "name")
    assert fams["clusterctl_process_restarts"].type == "counter"

    # SIGKILL one worker (its pid from the ledger); once it runs again, its counter went up by one.
    old = ledger_proc(cluster, "default-1")
    os.kill(old["pid"], signal.SIGKILL)
    t0 = time.monotonic()

    def restarted():
        p = ledger_proc(cluster, "default-1")
        return p["state"] == "running" and p["pid"] != old["pid"] and p["restarts"] == old["restarts"] + 1

    wait_for(restarted, 30, 0.1, "default-1 restarted")
    print(f"default-1 running again {time.monotonic() - t0:.2f} s after SIGKILL")
    fams = families(fetch(url))
    after = by(fams["clusterctl_process_restarts"], "name")
    assert after["default-1"] == before["default-1"] + 1, (before, after)
    assert after["default-0"] == before["default-0"]
    assert by(fams["clusterctl_process_up"], "name")["default-1"] == 1
    current = [s.labels["state"] for s in fams["clusterctl_process_state"].samples
               if s.labels["name"] == "default-1" and s.value == 1]
    assert current == ["running"], current

    # The scheduler's own /metrics is prometheus_client's, not distributed's "not available" stub.
    sched_url = f"http://127.0.0.1:{cluster.dashboard_port}/metrics"

    def scheduler_metrics():
        text = fetch(sched_url)
        return text if text and "dask_scheduler_workers" in text else None

    text = wait_for(scheduler_metrics, 15, 0.2, "the scheduler's /metrics")
    assert "not available" not in text
    sched = families(text)
    assert sched["dask_scheduler_workers"].type == "gauge"
    assert sum(s.value for s in sched["dask_scheduler_workers"].samples) == 2

    # After `down` the page is gone, and status names none.
    cluster.cli("down", check=True)
    assert cluster.status()["metrics"] is None
    assert cluster.ledger()["supervisor"]["metrics"] is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
