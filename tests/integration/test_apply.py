"""`clusterctl apply` on real processes: the plan first, then the running cluster converges to the
edited cluster.yaml; what cannot be applied (a port, an invalid file) changes nothing."""

from __future__ import annotations

import json

import pytest

from clusterctl.runtime.probes import http_json
from conftest import free_port, wait_for
from clients import client_of

pytestmark = pytest.mark.integration

TWO = "  - name: default\n    count: 2\n    nthreads: 1\n"


def processes(cluster) -> list[tuple[str, int, str]]:
    return [(p["name"], p["pid"], p["state"]) for p in cluster.ledger()["processes"]]


def workers(cluster) -> dict[str, dict]:
    return (http_json(f"http://127.0.0.1:{cluster.dashboard_port}/clusterctl/workers.json", 2) or {}).get("workers") or {}


def unchanged(cluster):
    """What must stay as it is when apply changes nothing: processes, sizes, events."""
    desired = cluster.state / "desired.json"
    return (processes(cluster), desired.read_text() if desired.exists() else None,
            (cluster.state / "events.jsonl").read_text())


def test_counts_new_and_removed_groups_with_a_dry_run_first(cluster):
    cluster.write(workers=TWO + "  - name: old\n    count: 1\n    nthreads: 1\n")
    cluster.cli("up", check=True)
    cluster.write(workers="  - name: default\n    count: 3\n    nthreads: 1\n  - name: gpu\n    count: 2\n    nthreads: 1\n")
    before = unchanged(cluster)
    plan = ["~ group default: count 2 -> 3: start 1 worker",
            "+ group gpu: start 2 workers (nthreads 1, memory_limit auto)",
            "- group old: retire 1 worker gracefully (results move first)"]
    res = cluster.cli("apply", "--dry-run", check=True)
    assert res.stdout.splitlines() == plan + ["dry run: nothing was changed"], res.stdout
    assert unchanged(cluster) == before, "a dry run changes nothing"

    res = cluster.cli("apply", check=True)
    lines = res.stdout.splitlines()
    assert lines[:3] == plan, res.stdout
    assert {"started default-2: running", "started gpu-0: running", "started gpu-1: running",
            "retired old-0"} <= set(lines) and lines[-1] == "applied 3 changes"
    names = sorted(workers(cluster))
    assert names == ["default-0", "default-1", "default-2", "gpu-0", "gpu-1"], names
    st = cluster.status()
    assert sorted(p["name"] for p in st["processes"]) == ["default-0", "default-1", "default-2", "gpu-0", "gpu-1",
                                                         "scheduler"]
    assert json.loads((cluster.state / "desired.json").read_text())["groups"]["default"] == {"count": 3, "config_count": 3}
    res = cluster.cli("apply", check=True)
    assert res.stdout.strip() == f"no changes: the running cluster matches {cluster.config}"
    # the size it reached survives the supervisor: `up` after `down` starts the file's groups
    cluster.cli("down", check=True)
    cluster.cli("up", check=True)
    assert cluster.status()["workers_registered"] == 5


def test_an_nthreads_change_replaces_the_workers_by_a_rolling_restart(cluster):
    cluster.cli("up", check=True)
    old = {n: w["nthreads"] for n, w in workers(cluster).items()}
    assert old == {"default-0": 1, "default-1": 1}
    before = {name: pid for name, pid, _ in processes(cluster)}
    cluster.write(workers="  - name: default\n    count: 2\n    nthreads: 2\n")
    res = cluster.cli("apply", check=True)
    lines = res.stdout.splitlines()
    assert lines[0] == "~ group default: nthreads 1 -> 2: rolling restart of 2 workers (one at a time, results move first)"
    assert "rolling restart of 2 workers (clusterctl apply): default-0, default-1" in lines
    assert any(line.startswith("rolling restart done: 2 of 2 workers replaced") for line in lines), res.stdout
    seen = {n: w["nthreads"] for n, w in workers(cluster).items()}
    assert sorted(seen.values()) == [2, 2] and len(seen) == 2, seen  # the scheduler's own view
    with client_of(cluster, timeout="10s") as client:
        assert sorted(client.nthreads().values()) == [2, 2]
    after = {name: pid for name, pid, _ in processes(cluster)}
    assert after["scheduler"] == before["scheduler"]
    assert not {after[n] for n in after if n != "scheduler"} & set(before.values()), "every worker was replaced"
    for p in cluster.ledger()["processes"]:
        if p["role"] == "worker":
            assert p["argv"][p["argv"].index("--nthreads") + 1] == "2"


def test_a_port_change_is_refused_without_allow_restart_and_restarts_with_it(cluster):
    cluster.cli("up", check=True)
    before = unchanged(cluster)
    old_port = cluster.port
    cluster.port = free_port()
    cluster.write()
    res = cluster.cli("apply")
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.splitlines() == [f"~ scheduler.port: {old_port} -> {cluster.port}: restarts the scheduler "
                                       "and every worker"]
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "apply refused: scheduler.port changed" in res.stderr and "--allow-restart" in res.stderr
    assert unchanged(cluster) == before, "a refused apply changes nothing"
    assert cluster.ledger()["scheduler"]["address"] == f"tls://127.0.0.1:{old_port}"

    res = cluster.cli("apply", "--allow-restart", check=True)
    assert "restarted scheduler: running" in res.stdout, res.stdout
    assert cluster.ledger()["scheduler"]["address"] == f"tls://127.0.0.1:{cluster.port}"
    wait_for(lambda: cluster.status()["workers_registered"] == 2, 30, what="both workers on the new port")
    with client_of(cluster, timeout="10s") as client:
        assert client.submit(sum, [2, 3], pure=False).result(timeout=30) == 5
    assert not {pid for _, pid, _ in processes(cluster)} & {pid for _, pid, _ in before[0]}


def test_an_invalid_file_changes_nothing_with_the_same_line_as_validate(cluster):
    cluster.cli("up", check=True)
    before = unchanged(cluster)
    cluster.write(workers="  - name: default\n    count: 2\n    nthreads: zero\n")
    res = cluster.cli("apply")
    check = cluster.cli("validate")
    assert res.returncode == check.returncode == 2, res.stderr
    assert res.stderr == check.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "workers[0].nthreads" in res.stderr and res.stdout == ""
    assert unchanged(cluster) == before
    cluster.write()  # the fixture's `down` reads the file
