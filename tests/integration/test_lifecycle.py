"""The real CLI and real dask processes: up, status, run, down, and the ways a start fails."""

from __future__ import annotations

import csv
import os
import signal
import socket

import pandas as pd
import psutil
import pytest

from conftest import processes_under, wait_for
from clients import client_of

pytestmark = pytest.mark.integration


def cluster_pids(ledger: dict) -> list[int]:
    return [p["pid"] for p in ledger["processes"] if p.get("pid")] + [ledger["supervisor"]["pid"]]


def test_up_status_run_down(cluster):
    up = cluster.cli("up", check=True)
    assert f"tls://127.0.0.1:{cluster.port}" in up.stdout
    assert f"http://127.0.0.1:{cluster.dashboard_port}/status" in up.stdout
    assert "Workers:    2" in up.stdout

    st = cluster.status()
    assert st["state"] == "running"
    assert st["scheduler"]["address"] == f"tls://127.0.0.1:{cluster.port}"
    assert st["dashboard"] == f"http://127.0.0.1:{cluster.dashboard_port}/status"
    assert st["workers_registered"] == 2
    assert psutil.pid_exists(st["supervisor"]["pid"])
    names = {p["name"]: p for p in st["processes"]}
    assert set(names) == {"scheduler", "default-0", "default-1"}
    for p in names.values():
        assert {"name", "role", "group", "host", "pid", "state", "restarts"} <= set(p)
        assert p["state"] == "running" and p["restarts"] == 0 and p["rss"] > 0
    assert names["default-0"]["registered"] is True

    # every listener of the cluster is on loopback (the dashboard ':PORT' trap binds 0.0.0.0)
    pids = set()
    for pid in cluster_pids(cluster.ledger()):
        proc = psutil.Process(pid)
        pids |= {proc.pid, *(c.pid for c in proc.children(recursive=True))}
    listeners = [c for c in psutil.net_connections("inet") if c.pid in pids and c.status == psutil.CONN_LISTEN]
    assert listeners, "expected the cluster to listen somewhere"
    assert all(c.laddr.ip.startswith("127.") for c in listeners), listeners

    out = cluster.root / "pi.csv"
    run = cluster.cli("run", "montecarlo", "--tasks", "40", "--max-points", "200000", "--seed", "7", "--out", str(out), check=True)
    assert "value of pi" in run.stdout
    df = pd.read_csv(out)
    assert list(df.columns) == ["number of points for MonteCarlo", "value of pi", "error (%)"]
    assert len(df) == 40 and df.iloc[0, 0] == 1000 and df.iloc[-1, 0] == 200000
    assert abs(df.iloc[-1, 1] - 3.14159) < 0.05

    ledger = cluster.ledger()
    pids = cluster_pids(ledger)
    down = cluster.cli("down", check=True)
    assert "stopped" in down.stdout
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert processes_under(cluster.root) == []
    assert cluster.cli("status").returncode == 3
    again = cluster.cli("down")
    assert again.returncode == 0 and "not running" in again.stdout


def test_second_up_changes_nothing(cluster):
    cluster.cli("up", check=True)
    first = cluster.ledger()
    second = cluster.cli("up", check=True)
    assert "already running" in second.stdout
    after = cluster.ledger()
    assert after["supervisor"]["pid"] == first["supervisor"]["pid"]
    assert [p["pid"] for p in after["processes"]] == [p["pid"] for p in first["processes"]]


def test_port_clash_reported_before_anything_starts(cluster):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", cluster.port))
        s.listen()
        res = cluster.cli("up")
    assert res.returncode == 1
    assert f"127.0.0.1:{cluster.port} is already in use" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (cluster.state / "logs" / "scheduler.log").exists(), "nothing may start"
    assert processes_under(cluster.root) == []


def test_worker_dying_at_start_fails_fast_and_cleans_up(cluster):
    cluster.write(workers=(
        "  - name: good\n    count: 1\n    nthreads: 1\n"
        "  - name: broken\n    count: 1\n    nthreads: 1\n"
        "    env:\n      DASK_DISTRIBUTED__WORKER__PRELOAD: \"['no_such_module_for_clusterctl']\"\n"
    ))
    res = cluster.cli("up")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "broken-0 exited while starting" in res.stderr
    assert "no_such_module_for_clusterctl" in res.stderr  # the tail of its log
    assert "Traceback" not in res.stderr.splitlines()[0]
    assert processes_under(cluster.root) == []
    assert cluster.ledger()["state"] == "failed"


def test_bad_config_exits_2_with_one_line(cluster):
    cluster.config.write_text("workers:\n  - name: a\n    cuont: 2\n")
    res = cluster.cli("up")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "workers[0].cuont" in lines[0] and "did you mean 'count'" in lines[0]
    assert processes_under(cluster.root) == []


def test_down_after_supervisor_sigkill(cluster):
    cluster.cli("up", check=True)
    ledger = cluster.ledger()
    sup = ledger["supervisor"]["pid"]
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(sup) or psutil.Process(sup).status() == psutil.STATUS_ZOMBIE, 10, what="supervisor gone")

    st = cluster.cli("status", "--json")
    assert st.returncode == 3
    assert '"unsupervised"' in st.stdout
    up = cluster.cli("up", check=True)  # adopts them now (tests/integration/test_adopt.py)
    assert "adopted 3" in up.stdout, up.stdout
    assert {p["name"]: p["pid"] for p in cluster.ledger()["processes"]} == {p["name"]: p["pid"] for p in ledger["processes"]}

    cluster.cli("down", check=True)
    assert processes_under(cluster.root) == []


def test_validate_prints_plan_and_starts_nothing(cluster):
    res = cluster.cli("validate", check=True)
    assert "default-1" in res.stdout and f"--port {cluster.port}" in res.stdout
    assert f"--dashboard-address 127.0.0.1:{cluster.dashboard_port}" in res.stdout
    assert processes_under(cluster.root) == []
    assert not cluster.state.exists() or not (cluster.state / "ledger.json").exists()


def test_csv_is_written_atomically_and_readable(cluster, tmp_path):
    cluster.cli("up", check=True)
    out = tmp_path / "sub" / "x.csv"
    cluster.cli("run", "montecarlo", "--tasks", "5", "--max-points", "5000", "--out", str(out), check=True)
    with open(out) as f:
        rows = list(csv.reader(f))
    assert len(rows) == 6
    assert not list(out.parent.glob("*.tmp"))


def test_process_defaults_reach_workers_and_yield_to_user_settings(cluster):
    """tuning.DEFAULTS reach forked (default group) and exec'd (own: non-DASK env) workers;
    the environment clusterctl runs in wins over them, and a group's env wins over both."""

    def _worker_settings(dask_worker) -> dict:  # nested: pickled by value
        import os

        import dask

        return {
            "tick_s": dask_worker._tick_interval,  # what the running server uses, not just the config
            "profile": dask.config.get("distributed.worker.profile.interval"),
            "monitor": dask.config.get("distributed.admin.system-monitor.interval"),
            "mmap": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
            "omp": os.environ.get("OMP_NUM_THREADS"),
        }

    cluster.write(workers=(
        "  - name: default\n    count: 1\n    nthreads: 1\n"
        "  - name: own\n    count: 1\n    nthreads: 1\n"
        "    env: {DASK_DISTRIBUTED__WORKER__PROFILE__INTERVAL: 30ms, OMP_NUM_THREADS: 2}\n"
    ))
    cluster.cli("up", check=True, env={"DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "40ms"})
    with client_of(cluster, timeout=30) as client:
        by_addr = client.run(_worker_settings)
        names = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
    got = {name: by_addr[addr] for name, addr in names.items()}
    assert got["default-0"] == {"tick_s": 0.04, "profile": "100ms", "monitor": "1s", "mmap": "1048576", "omp": "1"}
    assert got["own-0"] == {"tick_s": 0.04, "profile": "30ms", "monitor": "1s", "mmap": "1048576", "omp": "2"}


def test_supervisor_is_forked_by_default_and_execd_on_request(cluster):
    """The forked supervisor (POSIX default) and the exec'd one (Windows, CLUSTERCTL_FORK=0)
    both detach into their own session, log to supervisor.log and show their argv in ps."""
    log = cluster.state / "logs" / "supervisor.log"
    for env, header in (({}, "start (forked): "), ({"CLUSTERCTL_FORK": "0"}, "start: ")):
        cluster.cli("up", check=True, env=env)
        sup = psutil.Process(cluster.ledger()["supervisor"]["pid"])
        assert "-m clusterctl.supervisor" in " ".join(sup.cmdline())
        assert os.getsid(sup.pid) == sup.pid  # a session leader: Ctrl-C in the terminal does not reach it
        last = [line for line in log.read_text().splitlines() if line.startswith("--- ")][-1]
        assert header in last, last
        assert cluster.status()["workers_registered"] == 2
        cluster.cli("down", check=True)
        wait_for(lambda: not sup.is_running() or sup.status() == psutil.STATUS_ZOMBIE, 10, what="supervisor gone")
