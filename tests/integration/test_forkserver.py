"""A host's fork server (remote/forkserver.py): the agents of one host share it, on real Dask processes.

No ssh needed: an agent's lifeline is its stdin, whoever holds the other end, and the server is
found through the workdir the agents run in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clusterctl.remote import forkserver
from conftest import kill_all, processes_under, wait_for

PY = sys.executable
TAG = "fs-test.0123456789"


@pytest.fixture
def scheduler(bare_scheduler):
    return bare_scheduler


def agent(tmp_path: Path, address: str, name: str, env: dict | None = None) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "ab")
    return subprocess.Popen(
        [PY, "-m", "clusterctl.remote.agent", "--grace", "5", "--cwd", str(tmp_path / "wd"), "--tag", TAG,
         "--launch", "worker", "--lifeline-timeout", "0", "--", address, "--name", name, "--no-dashboard",
         "--no-nanny", "--nthreads", "1"],
        stdin=subprocess.PIPE, stdout=log, stderr=log, env={**os.environ, **(env or {})})


def close_agent(p: subprocess.Popen | None) -> None:
    """Close its lifeline and wait for it; kill it if it does not go."""
    if p is None or p.poll() is not None:
        return
    p.stdin.close()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def dask_child(parent: psutil.Process, name: str, logs: Path) -> psutil.Process | None:
    """The child of ``parent`` that is worker ``name``: Dask retitles it ``dask worker [ADDRESS]``,
    and the worker's log (``logs/NAME.log``) says which address is ``name``'s."""
    text = (logs / f"{name}.log").read_text(errors="replace")
    at = [line.split("Start worker at:")[1].strip() for line in text.splitlines() if "Start worker at:" in line]
    if not at:
        return None
    for c in parent.children():
        try:
            if c.status() != psutil.STATUS_ZOMBIE and f"[{at[-1]}]" in " ".join(c.cmdline()):
                return c
        except psutil.Error:
            continue
    return None


def server_of(tmp_path: Path) -> psutil.Process | None:
    for p in processes_under(tmp_path):
        if "clusterctl.remote.forkserver" in " ".join(p.cmdline()):
            return p
    return None


def registered(tmp_path: Path, name: str) -> bool:
    text = (tmp_path / f"{name}.log").read_text(errors="replace")
    return "Registered to:" in text


def test_two_agents_share_one_server_and_each_lifeline_stops_its_own_worker(tmp_path, scheduler):
    a = agent(tmp_path, scheduler, "a")
    b = agent(tmp_path, scheduler, "b")
    try:
        wait_for(lambda: registered(tmp_path, "a") and registered(tmp_path, "b"), 60, what="both workers registered")
        server = server_of(tmp_path)
        assert server is not None, "the first agent started the host's fork server"
        assert server.environ().get("CLUSTERCTL_TAG") == TAG, "a sweep finds the server by its tag"
        # both workers are the server's children, not exec'd by the agents
        wa = wait_for(lambda: dask_child(server, "a", tmp_path), 15, what="worker a among the server's children")
        wb = wait_for(lambda: dask_child(server, "b", tmp_path), 15, what="worker b among the server's children")
        assert wa.environ().get("CLUSTERCTL_TAG") == TAG, "a forked worker shows the tag too"
        assert os.stat(tmp_path / "wd" / forkserver.SOCKET).st_mode & 0o777 == 0o600
        # The worker's output reaches the agent's own stdout/stderr (the ssh channel, on a fleet).
        assert "Worker name:" in (tmp_path / "a.log").read_text()

        a.stdin.close()  # lifeline closed: the agent stops its worker and exits with its code
        a.wait(timeout=20)
        wait_for(lambda: not wa.is_running() or wa.status() == psutil.STATUS_ZOMBIE, 10, what="worker a gone")
        assert wb.is_running(), "the other agent's worker is untouched"

        b.kill()  # SIGKILL: no agent to stop it; the server's connection is the second lifeline
        b.wait(timeout=10)
        wait_for(lambda: not wb.is_running() or wb.status() == psutil.STATUS_ZOMBIE, 20,
                 what="the server to stop the worker of an agent that died")
        assert server.is_running(), "the server waits for more (idle timeout), a sweep stops it"
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        kill_all(processes_under(tmp_path / "wd"))


def test_a_worker_whose_environment_matters_at_import_is_execd_not_forked(tmp_path, scheduler):
    """OMP_NUM_THREADS=3 (clusterctl defaults it to 1) is read by numpy at import: forking from a server imported without it would
    ignore it, so that agent execs as before (its worker is its own child)."""
    first = agent(tmp_path, scheduler, "plain")
    special = None
    try:
        wait_for(lambda: registered(tmp_path, "plain"), 60, what="the plain worker")
        special = agent(tmp_path, scheduler, "omp", env={"OMP_NUM_THREADS": "3"})
        wait_for(lambda: registered(tmp_path, "omp"), 60, what="the OMP worker")
        own = wait_for(lambda: dask_child(psutil.Process(special.pid), "omp", tmp_path), 15, what="the agent's own child")
        assert own.environ().get("OMP_NUM_THREADS") == "3"
        assert "environment differs in OMP_NUM_THREADS" in (tmp_path / "omp.log").read_text()
    finally:
        for p in (first, special):
            close_agent(p)
        kill_all(processes_under(tmp_path / "wd"))


def test_no_warm_start_when_switched_off(tmp_path, scheduler):
    a = agent(tmp_path, scheduler, "cold", env={"CLUSTERCTL_WARM": "0"})
    try:
        wait_for(lambda: registered(tmp_path, "cold"), 60, what="the worker")
        assert server_of(tmp_path) is None
        wait_for(lambda: dask_child(psutil.Process(a.pid), "cold", tmp_path), 15, what="the agent's own child")
    finally:
        close_agent(a)
        kill_all(processes_under(tmp_path / "wd"))


def bare_server(wd: Path, idle: float) -> subprocess.Popen:
    """A fork server started by hand in ``wd``, once it said it is ready (the caller stops it)."""
    wd.mkdir()
    proc = subprocess.Popen([PY, "-m", "clusterctl.remote.forkserver", "--idle", str(idle)], cwd=wd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "CLUSTERCTL_TAG": TAG})
    try:
        assert proc.stdout.readline().strip() == b"ready"
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_server_leaves_when_idle(tmp_path):
    """Started with a short idle time and no agent: it leaves by itself, and takes its socket."""
    wd = tmp_path / "wd"
    proc = bare_server(wd, idle=1)
    try:
        t0 = time.monotonic()
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - t0 < 15
        assert not (wd / forkserver.SOCKET).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_malformed_request_is_refused_and_the_server_keeps_serving(tmp_path):
    """A request the server cannot use (argv not strings, env not a mapping) is one refusal for that
    connection, never the end of the server: other agents' workers keep their second lifeline."""
    import json
    import socket

    wd = tmp_path / "wd"
    proc = bare_server(wd, idle=30)
    try:
        for bad in ({"argv": [1, 2], "env": {}, "cwd": str(wd)}, {"argv": ["x"], "env": [[1, "x"]], "cwd": str(wd)},
                    "not json"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(wd / forkserver.SOCKET))
                data = (bad if isinstance(bad, str) else json.dumps(bad)).encode() + b"\n"
                socket.send_fds(s, [data], [1, 2])
                s.settimeout(10)
                answer = json.loads(s.recv(65536).split(b"\n")[0])
                assert "refused" in answer, answer
            assert proc.poll() is None, "the server is still serving"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
