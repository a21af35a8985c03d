"""Faults against a real cluster: the supervisor heals it, and says what happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from clusterctl.runtime.probes import http_json
from conftest import CLI, processes_under, wait_for
from clients import client_of

pytestmark = pytest.mark.integration

FAST_RESTART = """
    restart:
      backoff_initial: 0.2
      backoff_max: 1
      min_uptime: 3
      max_retries: 3
      window: 60
"""


def proc(st: dict, name: str) -> dict:
    return next(p for p in st["processes"] if p["name"] == name)


def registered(cluster, name: str, not_pid: int | None = None) -> dict | None:
    st = cluster.status()
    p = proc(st, name)
    if p["state"] == "running" and p["registered"] and p["pid"] != not_pid:
        return p
    return None


def test_sigkilled_worker_comes_back_registered(cluster):
    cluster.cli("up", check=True)
    before = proc(cluster.status(), "default-1")
    t0 = time.monotonic()
    os.kill(before["pid"], signal.SIGKILL)
    after = wait_for(lambda: registered(cluster, "default-1", not_pid=before["pid"]), 30, 0.1, "default-1 back")
    took = time.monotonic() - t0
    print(f"worker back and registered {took:.2f} s after SIGKILL")
    assert after["restarts"] == 1
    events = [json.loads(line) for line in (cluster.state / "events.jsonl").read_text().splitlines()]
    mine = [e["event"] for e in events if e["process"] == "default-1"]
    assert mine[-4:] == ["exited", "restarting", "started", "ready"], mine
    exited = [e for e in events if e["process"] == "default-1" and e["event"] == "exited"][-1]
    assert "SIGKILL" in exited["detail"]
    ev = cluster.cli("events", check=True).stdout
    assert "killed by SIGKILL" in ev


def test_sigkilled_scheduler_brings_everyone_back(cluster):
    cluster.cli("up", check=True)
    st = cluster.status()
    old = {p["name"]: p["pid"] for p in st["processes"]}
    os.kill(old["scheduler"], signal.SIGKILL)

    def all_back():
        s = cluster.status()
        ok = s["workers_registered"] == 2 and all(
            p["state"] == "running" and p["pid"] != old[p["name"]] for p in s["processes"]
        )
        return s if ok else None

    st = wait_for(all_back, 45, 0.2, "scheduler and both workers back")
    assert all(p["restarts"] == 1 for p in st["processes"]), st["processes"]
    assert st["scheduler"]["address"] == f"tls://127.0.0.1:{cluster.port}"
    out = cluster.root / "after.csv"
    cluster.cli("run", "montecarlo", "--tasks", "20", "--max-points", "100000", "--out", str(out), check=True)
    assert len(pd.read_csv(out)) == 20


def test_worker_killed_mid_job_still_gives_identical_results(cluster):
    cluster.cli("up", check=True)
    args = ["run", "montecarlo", "--tasks", "300", "--min-points", "1000000", "--max-points", "20000000", "--seed", "11"]
    calm = cluster.root / "calm.csv"
    cluster.cli(*args, "--out", str(calm), check=True)

    churned = cluster.root / "churn.csv"
    env = dict(os.environ, NO_COLOR="1")
    job = subprocess.Popen([*CLI, *args, "--out", str(churned), "--file", str(cluster.config)],
                           cwd=cluster.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # wait until the job is really under way on the workers, then pull one out
        def busy():  # the scheduler's own view: default-0 holds results and has work queued
            seen = http_json(f"http://127.0.0.1:{cluster.dashboard_port}/clusterctl/workers.json", 2) or {}
            w = (seen.get("workers") or {}).get("default-0") or {}
            return w if w.get("processing", 0) > 0 and w.get("has_what", 0) > 0 else None

        wait_for(busy, 60, 0.05, "default-0 busy with results in memory")
        os.kill(proc(cluster.status(), "default-0")["pid"], signal.SIGKILL)
        out, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, out + err
    a, b = pd.read_csv(calm), pd.read_csv(churned)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert proc(cluster.status(), "default-0")["restarts"] >= 1


@pytest.mark.timeout(180)
def test_a_crash_looping_worker_backs_off_keeps_trying_and_heals_once_the_cause_goes(cluster, tmp_path):
    marker = tmp_path / "broken-now"
    preload = tmp_path / "crash_when_marked.py"
    preload.write_text(
        "import os\n"
        f"if os.path.exists({str(marker)!r}):\n"
        "    raise RuntimeError('clusterctl-test: impossible option')\n"
    )
    cluster.write(workers=(
        "  - name: steady\n    count: 1\n    nthreads: 1\n"
        "  - name: flaky\n    count: 1\n    nthreads: 1\n"
        f"    env:\n      DASK_DISTRIBUTED__WORKER__PRELOAD: \"['{preload}']\"\n"
        + FAST_RESTART
    ))
    cluster.cli("up", check=True)
    marker.write_text("")
    os.kill(proc(cluster.status(), "flaky-0")["pid"], signal.SIGKILL)

    def looping():
        st = cluster.status()
        p = proc(st, "flaky-0")
        return st if p["state"] == "backoff" and p["reason"].startswith("crash loop") else None

    st = wait_for(looping, 60, 0.2, "flaky-0 in a crash loop")
    p = proc(st, "flaky-0")
    assert p["restarts"] == 3, p  # the quick budget, not a storm
    assert "crash loop: 3 restarts within 60 s" in p["reason"] and "retrying in" in p["reason"]
    assert "clusterctl-test: impossible option" in p["reason"]
    assert st["state"] == "degraded"
    assert proc(st, "steady-0")["state"] == "running" and proc(st, "steady-0")["registered"]
    text = cluster.cli("status").stdout
    assert "crash loop" in text and "clusterctl-test: impossible option" in text  # status says why it waits
    events = [json.loads(line) for line in (cluster.state / "events.jsonl").read_text().splitlines()]
    assert [e for e in events if e["process"] == "flaky-0" and e["event"] == "crash-loop"]
    assert not [e for e in events if e["event"] == "fatal"]
    marker.unlink()  # whatever broke it mended: the next try (10 s at most) brings it back
    wait_for(lambda: registered(cluster, "flaky-0"), 40, 0.5, "flaky-0 back after its crash-loop delay")
    wait_for(lambda: cluster.status()["state"] == "running", 10, 0.2, "the cluster running, not degraded")
    logs = cluster.cli("logs", "flaky-0", "-n", "400")
    assert "clusterctl-test: impossible option" in logs.stdout


def test_down_stops_a_restarting_cluster_and_nothing_restarts_after(cluster):
    cluster.cli("up", check=True)
    victim = proc(cluster.status(), "default-0")["pid"]
    os.kill(victim, signal.SIGKILL)
    cluster.cli("down", check=True)
    time.sleep(1.5)
    assert processes_under(cluster.root) == []
    events = [json.loads(line) for line in (cluster.state / "events.jsonl").read_text().splitlines()]
    stop_at = max(e["time"] for e in events if e["event"] == "stopping")
    assert not [e for e in events if e["time"] > stop_at and e["event"] == "started"]


def test_foreground_ctrl_c_stops_everything(cluster):
    env = dict(os.environ, NO_COLOR="1")
    fg = subprocess.Popen([*CLI, "up", "--foreground", "--file", str(cluster.config)], cwd=cluster.root,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (cluster.state / "ledger.json").exists() and cluster.ledger()["state"] == "running", 60, 0.1, "foreground up")
        fg.send_signal(signal.SIGINT)
        out, _ = fg.communicate(timeout=60)
    finally:
        if fg.poll() is None:
            fg.kill()
    assert fg.returncode == 0, out
    assert "ready" in out and "stopped" in out
    assert processes_under(cluster.root) == []


def test_worker_over_its_memory_limit_is_restarted_without_a_nanny(cluster):
    cluster.write(workers="  - name: default\n    count: 1\n    nthreads: 1\n    memory_limit: 300MiB\n")
    cluster.cli("up", check=True)
    before = proc(cluster.status(), "default-0")

    def hog():
        import time

        import numpy as np

        block = np.ones(60_000_000)  # 480 MB, well past 95% of 300 MiB
        time.sleep(30)
        return float(block[0])

    with client_of(cluster, timeout="10s") as client:
        client.submit(hog, pure=False)
        after = wait_for(lambda: registered(cluster, "default-0", not_pid=before["pid"]), 60, 0.3, "restart over memory")
    assert after["restarts"] >= 1
    events = (cluster.state / "events.jsonl").read_text()
    assert "of its 300 MiB limit" in events
