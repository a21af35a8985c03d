"""`clusterctl restart` on real processes: a plain restart of workers and of the scheduler, and a
rolling restart of every worker while a Monte Carlo job runs through it: identical results, nothing
computed twice, the group never below its size."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from clusterctl.jobs import montecarlo as mc
from clusterctl.runtime.probes import http_json
from conftest import CLI, wait_for
from clients import client_of

pytestmark = pytest.mark.integration

THREE = "  - name: default\n    count: 3\n    nthreads: 1\n"


def workers(cluster) -> dict[str, dict]:
    return (http_json(f"http://127.0.0.1:{cluster.dashboard_port}/clusterctl/workers.json", 2) or {}).get("workers") or {}


def pids(cluster) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in cluster.ledger()["processes"]}


def events(cluster, kind: str) -> list[dict]:
    lines = (cluster.state / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def restart_cli(cluster, *args: str) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.Popen([*CLI, "restart", *args, "--file", str(cluster.config)], cwd=cluster.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_job_running_through_a_rolling_restart_of_every_worker_gives_identical_results(cluster):
    cluster.write(workers=THREE)
    cluster.cli("up", check=True)
    before = pids(cluster)
    spec = mc.MonteCarloSpec(tasks=240, min_points=200_000, max_points=8_000_000, seed=23)
    expected = mc.run_serial(spec).values.tolist()
    points = [int(n) for n in mc.points_schedule(spec)]
    waves = [list(range(i, min(i + 10, spec.tasks))) for i in range(0, spec.tasks, 10)]
    futures = []
    with client_of(cluster, timeout="10s") as client:
        def submit(wave: list[int]) -> None:  # the job streams in: some before, most during, the last after
            futures.extend(client.map(mc.estimate_pi, [points[i] for i in wave], [spec.seed] * len(wave), wave,
                                      key=[mc.task_key(spec.seed, i, points[i]) for i in wave]))

        for _ in range(3):
            submit(waves.pop(0))
        wait_for(lambda: sum(f.done() for f in futures) >= 10, 60, 0.05, "the job to hold results on the workers")
        roll = restart_cli(cluster, "--rolling")
        running = []
        try:
            deadline = time.monotonic() + 150
            while roll.poll() is None and time.monotonic() < deadline:
                if len(waves) > 1:
                    submit(waves.pop(0))
                running.append(sum(w["status"] == "running" for w in workers(cluster).values()))
                time.sleep(0.3)
            out, err = roll.communicate(timeout=30)
        finally:
            if roll.poll() is None:
                roll.kill()
                roll.wait()
        assert roll.returncode == 0, out + err
        assert waves, "the job must still be running when the roll ends"
        for wave in waves:
            submit(wave)
        results = [list(r) for r in client.gather(futures)]
    assert results == expected, "a rolling restart must not change a single result"
    assert running and min(running) >= 3, f"the group dropped below its size during the roll: {running}"
    counter = http_json(f"http://127.0.0.1:{cluster.dashboard_port}/clusterctl/computed.json"
                        f"?prefix=montecarlo-{spec.seed}-", 5) or {}
    assert len(counter["stored"]) == spec.tasks
    assert [k for k, n in counter["stored"].items() if n > 1] == [], "results were lost and computed again"
    lines = out.splitlines()
    assert lines[0] == "rolling restart of 3 workers (clusterctl restart --rolling): default-0, default-1, default-2"
    assert lines[1] == "[1/3] starting default-3 to replace default-0"
    assert lines[-1].startswith("rolling restart done: 3 of 3 workers replaced in ")
    after = pids(cluster)
    new_workers = {n: p for n, p in after.items() if n != "scheduler"}
    assert len(new_workers) == 3 and not set(new_workers.values()) & set(before.values())
    assert after["scheduler"] == before["scheduler"]
    assert cluster.status()["workers_registered"] == 3
    retired = {e["process"] for e in events(cluster, "removed") if e["detail"] == "retired and stopped"}
    assert retired == {"default-0", "default-1", "default-2"}
    phases = [e["phase"] for e in events(cluster, "rolling-restart")]
    assert phases[0] == "begin" and phases[-1] == "done" and phases.count("retired") == 3


def test_a_replacement_that_fails_to_start_stops_the_roll_and_the_old_worker_keeps_running(cluster, tmp_path):
    marker = tmp_path / "broken-now"
    preload = tmp_path / "crash_when_marked.py"
    preload.write_text(f"import os\nif os.path.exists({str(marker)!r}):\n    raise RuntimeError('clusterctl-test: broken')\n")
    cluster.write(workers="  - name: default\n    count: 2\n    nthreads: 1\n"
                  f"    env:\n      DASK_DISTRIBUTED__WORKER__PRELOAD: \"['{preload}']\"\n")
    cluster.cli("up", check=True)
    before = pids(cluster)
    marker.write_text("")
    res = cluster.cli("restart", "--rolling", timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert ("rolling restart stopped after 0 of 2 workers: default-2 (replacing default-0) did not start: "
            "exit code 1") in res.stderr, res.stderr
    assert "default-0 keeps running" in res.stderr
    assert "[1/2] starting default-2 to replace default-0" in res.stdout
    wait_for(lambda: "default-2" not in pids(cluster), 30, what="the failed replacement to leave")
    assert pids(cluster) == before, "nothing else changed"
    assert cluster.status()["workers_registered"] == 2


def test_a_plain_restart_replaces_the_process_under_the_same_name(cluster):
    cluster.cli("up", check=True)
    before = pids(cluster)
    res = cluster.cli("restart", "default-1", check=True)
    assert res.stdout.startswith("restarted default-1: running (pid "), res.stdout
    after = pids(cluster)
    assert after["default-1"] != before["default-1"] and after["default-0"] == before["default-0"]
    assert [e["process"] for e in events(cluster, "restart-requested")] == ["default-1"]
    st = cluster.status()
    assert st["workers_registered"] == 2
    assert {p["name"]: p["restarts"] for p in st["processes"]}["default-1"] == 1

    res = cluster.cli("restart", "scheduler", "--json", check=True)
    body = json.loads(res.stdout)
    assert body["restarted"] == ["scheduler", "default-0", "default-1"]
    assert set(body["states"].values()) == {"running"}
    again = pids(cluster)
    assert not set(again.values()) & set(after.values()), "the scheduler's restart takes its workers with it"
    wait_for(lambda: cluster.status()["workers_registered"] == 2, 30, what="both workers registered again")
    with client_of(cluster, timeout="10s") as client:
        assert client.submit(sum, [1, 2], pure=False).result(timeout=30) == 3

    for args, message in [(("nope",), "no supervised process named 'nope'"),
                          (("scheduler", "--rolling"), "--rolling replaces workers one at a time"),
                          (("default-0", "--group", "default"), "give process names or --group, not both")]:
        res = cluster.cli("restart", *args)
        assert res.returncode == 1 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert pids(cluster) == again


def test_a_stop_during_a_rolling_restart_ends_it_and_leaves_nothing_behind(cluster):
    cluster.cli("up", check=True)
    roll = restart_cli(cluster, "--rolling")
    try:
        wait_for(lambda: events(cluster, "rolling-restart"), 30, 0.05, "the roll to begin")
        cluster.cli("down", check=True)
        out, err = roll.communicate(timeout=60)
    finally:
        if roll.poll() is None:
            roll.kill()
    assert roll.returncode == 1 and "Traceback" not in err, out + err
    assert "lost the supervisor during the rolling restart" in err or "rolling restart stopped" in err, err
    assert len(err.strip().splitlines()) == 1, err
