"""Adaptive groups on a real cluster (supervisor/adaptive.py): a burst of work grows the group at
once, idleness shrinks it back to its minimum by graceful retirement, and no result is recomputed."""

from __future__ import annotations

import json
import time
import urllib.request

from distributed import Client

from clusterctl.client.connect import client_address, client_kwargs
from clusterctl.topology import load_config
from conftest import wait_for

ADAPTIVE = ("  - name: default\n    nthreads: 1\n"
            "    adapt: {minimum: 1, maximum: 4, target_duration: 1s, wait_count: 2, interval: 500ms}\n")


def events(cluster, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (cluster.state / "events.jsonl").read_text().splitlines()) if e["event"] == kind]


def test_a_burst_grows_the_group_and_idleness_shrinks_it_without_recomputing(cluster):
    cluster.write(workers=ADAPTIVE)
    cluster.cli("up", check=True)
    st = cluster.status()
    assert st["workers_registered"] == 1 and st["adaptive"]["default"]["maximum"] == 4, st
    cfg = load_config(cluster.config)

    def slow_square(x: int) -> int:  # nested: pickled by value (workers cannot import this test module)
        time.sleep(0.4)
        return x * x

    with Client(client_address(cfg), timeout="10s", **client_kwargs(cfg)) as client:
        keys = [f"montecarlo-burst-{i}" for i in range(40)]
        futures = [client.submit(slow_square, i, key=k, pure=False) for i, k in enumerate(keys)]
        wait_for(lambda: cluster.status()["workers_registered"] >= 3, 30, what="the group to grow under the burst")
        assert [f.result(timeout=120) for f in futures] == [i * i for i in range(40)]
        ups = events(cluster, "adapt-up")
        assert ups and ups[0]["after"] > ups[0]["before"] and ups[0]["queued"] > 0, ups
        assert max(e["after"] for e in ups) <= 4, "never beyond maximum"
        # idle now: back to the minimum, by graceful retirement (Dask names whom to close)
        wait_for(lambda: cluster.status()["workers_registered"] == 1, 60, what="the group back at its minimum")
        downs = events(cluster, "adapt-down")
        assert downs and all(e["after"] >= 1 for e in downs), downs
        held = [f.result(timeout=10) for f in futures]  # every result survived the retirements
        assert held == [i * i for i in range(40)]
    port = cfg.scheduler.dashboard_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/clusterctl/computed.json?prefix=montecarlo-burst", timeout=5) as r:
        computed = json.loads(r.read())
    assert sorted(computed["stored"]) == sorted(keys)
    assert [k for k, n in computed["stored"].items() if n > 1] == [], "a result was lost and computed again"

    # a fixed size ends the adaptive mode (as Dask's cluster.scale() does); adapt turns it back on
    cluster.cli("scale", "2", check=True)
    st = cluster.status()
    assert "default" not in st["adaptive"] and st["workers_registered"] == 2, st
    res = cluster.cli("adapt", "--min", "1", "--max", "2", check=True)
    assert "adaptive between 1 and 2 workers" in res.stdout, res.stdout
    assert cluster.status()["adaptive"]["default"]["maximum"] == 2
    bad = cluster.cli("adapt", "--min", "3", "--max", "2")
    assert bad.returncode != 0 and "--min (3) is more than --max (2)" in bad.stderr and "Traceback" not in bad.stderr
