"""Workers join and leave while a graph runs, and nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from clusterctl.runtime import control
from clusterctl.client.connect import ask_supervisor
from clusterctl.topology import load_config
from clusterctl.errors import ClusterError
from clusterctl.runtime.probes import http_json
from clusterctl.jobs import montecarlo as mc
from conftest import wait_for
from clients import client_of

pytestmark = pytest.mark.integration

SMALL = ["--tasks", "300", "--min-points", "300000", "--max-points", "6000000", "--seed", "5"]


def worker_names(st: dict) -> list[str]:
    return sorted(p["name"] for p in st["processes"] if p["role"] == "worker")


def computed(cluster, prefix: str) -> dict:
    return http_json(f"http://127.0.0.1:{cluster.dashboard_port}/clusterctl/computed.json?prefix={prefix}", 5) or {}


def test_scale_commands_converge_and_report(cluster):
    cluster.cli("up", check=True)
    res = cluster.cli("scale", "4", check=True)
    assert "added default-2: running" in res.stdout and "added default-3: running" in res.stdout
    st = cluster.status()
    assert st["workers_registered"] == 4 and worker_names(st) == ["default-0", "default-1", "default-2", "default-3"]

    res = cluster.cli("worker", "remove", "default-1", check=True)
    assert "removed default-1 (retired)" in res.stdout
    res = cluster.cli("worker", "add", "--count", "1", "--json", check=True)
    assert json.loads(res.stdout)["added"] == ["default-1"]  # the lowest free name again
    res = cluster.cli("scale", "2", check=True)
    st = cluster.status()
    assert st["workers_registered"] == 2 and len(worker_names(st)) == 2
    events = (cluster.state / "events.jsonl").read_text()
    assert '"retiring"' in events and '"removed"' in events


def test_invalid_requests_change_nothing(cluster):
    cluster.cli("up", check=True)
    before = [(p["name"], p["pid"]) for p in cluster.ledger()["processes"]]
    desired_before = (cluster.state / "desired.json").read_text() if (cluster.state / "desired.json").exists() else None
    cfg = load_config(cluster.config)
    bad = [
        ("remove", {"names": ["default-9"]}, "no supervised worker named 'default-9'"),
        ("remove", {"names": ["scheduler"]}, "no supervised worker named 'scheduler'"),
        ("scale", {"count": -1}, "count must be a whole number"),
        ("scale", {"count": "3"}, "count must be a whole number"),
        ("add", {"count": 2, "group": "gpu"}, "no worker group 'gpu'"),
        ("remove", {"count": 5}, "cannot remove 5 workers"),
        ("remove", {"names": ["default-0"], "count": 1}, "not both"),
    ]
    for command, body, message in bad:
        with pytest.raises(ClusterError, match=message):
            ask_supervisor(cfg, command, body)
    for args, message in [(("worker", "remove", "nope"), "no supervised worker named 'nope'"),
                          (("worker", "add", "--group", "gpu"), "no worker group 'gpu'"),
                          (("worker", "remove"), "name the workers to remove")]:
        res = cluster.cli(*args)
        assert res.returncode == 1 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    after = [(p["name"], p["pid"]) for p in cluster.ledger()["processes"]]
    assert after == before
    desired_after = (cluster.state / "desired.json").read_text() if (cluster.state / "desired.json").exists() else None
    assert desired_after == desired_before


def test_control_channel_refuses_missing_or_tampered_token(cluster):
    cluster.cli("up", check=True)
    address = cluster.ledger()["supervisor"]["control"]
    assert address.startswith("127.0.0.1:")
    token_file = cluster.state / "control.token"
    assert (token_file.stat().st_mode & 0o777) == 0o600
    good = token_file.read_text().strip()
    with pytest.raises(ClusterError, match="refused"):
        control.request(address, None, "scale", {"count": 5})
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    token_file.write_text(tampered)
    res = cluster.cli("scale", "5")
    assert res.returncode == 1 and "refused" in res.stderr
    assert cluster.status()["workers_registered"] == 2
    token_file.write_text(good)
    assert control.request(address, good, "ping")["ok"] is True


def test_size_survives_supervisor_restart(cluster):
    cluster.cli("up", check=True)
    cluster.cli("scale", "3", check=True)
    cluster.cli("down", check=True)
    cluster.cli("up", check=True)
    assert cluster.status()["workers_registered"] == 3
    sup = cluster.ledger()["supervisor"]["pid"]
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(sup) or psutil.Process(sup).status() == psutil.STATUS_ZOMBIE, 10)
    cluster.cli("down", check=True)
    cluster.cli("up", check=True)
    assert cluster.status()["workers_registered"] == 3
    # editing the count in cluster.yaml wins over the recorded size
    cluster.cli("down", check=True)
    cluster.write(workers="  - name: default\n    count: 1\n    nthreads: 1\n")
    cluster.cli("up", check=True)
    assert cluster.status()["workers_registered"] == 1


def test_graceful_retire_moves_results_and_kill_recomputes(cluster):
    cluster.write(workers="  - name: default\n    count: 3\n    nthreads: 1\n")
    cluster.cli("up", check=True)

    spec = mc.MonteCarloSpec(tasks=60, min_points=1000, max_points=200_000, seed=3)
    expected = mc.run_serial(spec).values.tolist()
    prefix = f"montecarlo-{spec.seed}-"
    with client_of(cluster, timeout="10s") as client:
        futures = mc.submit(client, spec)
        client.gather(futures)  # every result now sits in some worker's memory
        addr_to_name = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}

        def holder(exclude=()):
            counts = {}
            for key, addrs in client.who_has(futures).items():
                for a in addrs:
                    counts[addr_to_name[a]] = counts.get(addr_to_name[a], 0) + 1
            return max((n for n in counts if n not in exclude), key=lambda n: counts[n])

        victim = holder()
        res = cluster.cli("worker", "remove", victim, check=True)
        assert f"removed {victim} (retired)" in res.stdout
        assert all(n == 1 for n in computed(cluster, prefix)["stored"].values()), "a retired worker's results must move, not be recomputed"
        assert [list(r) for r in client.gather(futures)] == expected

        crashed = holder(exclude=(victim,))
        res = cluster.cli("worker", "remove", crashed, "--kill", check=True)
        assert f"removed {crashed} (killed)" in res.stdout
        assert [list(r) for r in client.gather(futures)] == expected
    recomputed = [k for k, n in computed(cluster, prefix)["stored"].items() if n > 1]
    assert recomputed, "results held only by a killed worker are computed again"


def test_churn_demo_adds_retires_kills_and_proves_results(cluster):
    cluster.cli("up", check=True)
    chart = cluster.root / "churn.png"
    res = cluster.cli("demo", "churn", *SMALL, "--schedule", "0.2:add 2,0.8:retire 1,1.4:kill 1,2:add 1",
                      "--chart", str(chart), "--json", timeout=240, check=True)
    report = json.loads(res.stdout)
    assert report["identical"] is True and report["mismatched"] == []
    assert [e["action"] for e in report["events"]] == ["add", "retire", "kill", "add"]
    assert all("failed" not in e["detail"] for e in report["events"]), report["events"]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    # 2 + 2 - 1 - 1 + 1 when every step ran; a step the graph outran is reported "not reached"
    sign = {"add": 1, "retire": -1, "kill": -1}
    want = 2 + sum(sign[e["action"]] * e["count"] for e in report["events"] if e["done"] is not None)
    assert want in (2, 3), report["events"]
    wait_for(lambda: cluster.status()["workers_registered"] == want, 30, 0.3, f"{want} workers registered after the churn")
    text = cluster.cli("demo", "churn", "--schedule", "1:dance")
    assert text.returncode == 1 and "action must be one of add, retire, kill" in text.stderr


def test_foreign_worker_is_external_and_left_alone(cluster):
    cluster.cli("up", check=True)
    dask = str(Path(sys.executable).with_name("dask"))
    tls = cluster.state / "tls"  # one started by hand by the cluster's owner, with its certificate
    foreign = subprocess.Popen(
        [dask, "worker", f"tls://127.0.0.1:{cluster.port}", "--name", "by-hand", "--nthreads", "1",
         "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0", "--local-directory", str(cluster.root),
         "--tls-ca-file", str(tls / "ca.pem"), "--tls-cert", str(tls / "node.pem"), "--tls-key", str(tls / "node-key.pem")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        st = wait_for(lambda: (s := cluster.status())["external"] and s, 30, 0.3, "foreign worker registered")
        assert st["external"][0]["name"] == "by-hand"
        assert "by-hand" not in worker_names(st)
        assert "external" in cluster.cli("status").stdout
        with pytest.raises(ClusterError, match="no supervised worker named 'by-hand'"):
            ask_supervisor(load_config(cluster.config), "remove", {"names": ["by-hand"]})
        cluster.cli("down", check=True)
        # never signalled by clusterctl: it leaves on its own once its scheduler is gone
        foreign.wait(timeout=30)
        assert foreign.returncode == 0
    finally:
        if foreign.poll() is None:
            foreign.kill()
            foreign.wait()
