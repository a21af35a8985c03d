"""A host's fork server, direct side (remote/directserve.py), spoken to as the head's ssh -W would:
a real server, real Dask workers, its real loopback port. No ssh: the forward only carries bytes."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clusterctl.remote import wire
from conftest import kill_all, processes_under, wait_for

PY = sys.executable
TAG = "direct-test.0123456789"


@pytest.fixture
def scheduler(bare_scheduler):
    return bare_scheduler


@pytest.fixture
def server(tmp_path):
    """A fork server with its direct side, as `probe install --warm` starts it; its route file read."""
    wd = tmp_path / "wd"
    wd.mkdir()
    proc = subprocess.Popen([PY, "-m", "clusterctl.remote.forkserver", "--idle", "30", "--direct", "--preload", "distributed",
                             "--preload", "distributed.cli.dask_worker", "--tag", TAG], cwd=wd, stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "server.log", "wb"),
                            env={**os.environ, "CLUSTERCTL_TAG": TAG, "OMP_NUM_THREADS": "1", "SPT_NOENV": "1"})
    assert proc.stdout.readline().strip() == b"ready"
    route = json.loads((wd / wire.ROUTE).read_text())
    yield proc, route, wd
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=20)
    left = processes_under(tmp_path)
    kill_all(left)
    assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "left behind"


class Stream:
    """The head's end of one direct connection."""

    def __init__(self, route: dict, token: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", route["port"]), timeout=60)
        self.token = route["token"] if token is None else token
        self.hello = secrets.token_hex(16)
        self.data = b""

    def line(self) -> dict:
        while b"\n" not in self.data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.data)
            self.data += chunk
        raw, _, self.data = self.data.partition(b"\n")
        return json.loads(raw)

    def start(self, request: dict) -> dict:
        self.sock.sendall(wire.line({"hello": self.hello}))
        said = self.line()
        assert wire.same(said["proof"], wire.proof(self.token, "server", self.hello, said["nonce"])), "the server proved the token"
        self.sock.sendall(wire.line({"auth": wire.proof(self.token, "client", said["nonce"], self.hello), **request}))
        return self.line()

    def until(self, text: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.data:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            assert chunk, f"the stream ended before {text!r}: {self.data[-2000:]!r}"
            self.data += chunk

    def rest(self, timeout: float = 60) -> tuple[bytes, dict | None]:
        """Everything up to the end of the stream, split at the trailer."""
        self.sock.settimeout(timeout)
        while chunk := self.sock.recv(65536):
            self.data += chunk
        return wire.parse_trailer(self.data)


def worker(address: str, name: str, lifeline: float = 0.0, env: dict | None = None) -> dict:
    return {"launch": "worker", "args": [address, "--name", name, "--no-dashboard", "--no-nanny", "--nthreads", "1"],
            "env": env or {}, "grace": 5, "lifeline": lifeline}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_worker_streams_its_output_and_its_lifelines_end_stops_it(server, scheduler):
    proc, route, wd = server
    s = Stream(route)
    assert s.start(worker(scheduler, "d-0")) == {"how": "fork"}
    s.until(b"Registered to:")
    kids = psutil.Process(proc.pid).children()
    assert len(kids) == 1 and kids[0].environ().get("CLUSTERCTL_TAG") == TAG and kids[0].cwd() == str(wd)
    s.sock.shutdown(socket.SHUT_WR)  # the head closed the lifeline (down, or its ssh went)
    out, end = s.rest()
    assert end is not None and isinstance(end["exit"], int) and end["pid"] == kids[0].pid, out[-500:]
    assert b"Start worker at:" in out and wire.TRAILER not in out
    wait_for(lambda: gone(end["pid"]), 10, what="the worker gone once its trailer came")
    assert proc.poll() is None, "the server stays for the others"


def test_a_process_that_exits_by_itself_sends_its_exit_code_forked_or_execd(server):
    _, route, _ = server
    s = Stream(route)
    assert s.start({"launch": "worker", "args": ["--version"], "env": {}, "grace": 5}) == {"how": "fork"}
    out, end = s.rest()
    assert end is not None and end["exit"] == 0 and b"version" in out
    # OMP_NUM_THREADS is read at import: a process that sets it differently is exec'd, not forked
    s = Stream(route)
    assert s.start({"launch": "worker", "args": ["--nthreads", "many"], "env": {"OMP_NUM_THREADS": "3"}}) == {"how": "exec"}
    out, end = s.rest()
    assert end is not None and end["exit"] == 2 and b"many" in out, out


def test_an_execd_process_gets_exactly_its_environment(server, scheduler):
    proc, route, _ = server
    s = Stream(route)
    assert s.start(worker(scheduler, "omp", env={"OMP_NUM_THREADS": "3", "SECRET_TOKEN": "s3"}))["how"] == "exec"
    s.until(b"Registered to:")
    (kid,) = psutil.Process(proc.pid).children()
    env = kid.environ()
    assert env["OMP_NUM_THREADS"] == "3" and env["SECRET_TOKEN"] == "s3" and env["CLUSTERCTL_TAG"] == TAG
    assert kid.cmdline()[0] != "clusterctl.remote.forkserver"
    s.sock.close()
    wait_for(lambda: gone(kid.pid), 20, what="the exec'd worker stopped by its lifeline's end")


def test_nothing_starts_without_the_token(server):
    proc, route, _ = server
    s = Stream(route, token="0" * 64)
    s.sock.sendall(wire.line({"hello": s.hello}))
    said = s.line()
    assert not wire.same(said["proof"], wire.proof("0" * 64, "server", s.hello, said["nonce"]))
    s.sock.sendall(wire.line({"auth": wire.proof("0" * 64, "client", said["nonce"], s.hello),
                              "launch": "worker", "args": ["--version"], "env": {}}))
    assert s.line() == {"refused": "not authorised"}
    assert s.rest() == (b"", None)
    assert psutil.Process(proc.pid).children() == [], "nothing was started"


def test_a_silent_lifeline_stops_the_process_and_heartbeats_keep_it(server, scheduler):
    proc, route, _ = server
    kept, silent = Stream(route), Stream(route)
    assert silent.start(worker(scheduler, "silent", lifeline=3))["how"] == "fork"
    assert kept.start(worker(scheduler, "kept", lifeline=3))["how"] == "fork"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 8:
        kept.sock.sendall(b"\n")
        time.sleep(0.25)
    out, end = silent.rest()
    assert b"no heartbeat on the lifeline for 3 s" in out and end is not None
    kept.sock.sendall(b"\n")
    assert len(psutil.Process(proc.pid).children()) == 1, "the one that heard its heartbeats runs on"
    kept.sock.shutdown(socket.SHUT_WR)
    assert kept.rest()[1] is not None


def test_a_killed_server_takes_its_direct_processes_with_it_a_hung_one_too(server, scheduler):
    """A SIGSTOPped (hung) worker holds a SIGTERM pending for good: its server's death kills it outright
    (found by scripts/chaos --fleet: a stopped worker outlived its killed fork server for good)."""
    proc, route, _ = server
    streams = [Stream(route), Stream(route)]
    for s, name in zip(streams, ("orphan", "hung")):
        s.start(worker(scheduler, name))
        s.until(b"Registered to:")
    kids = psutil.Process(proc.pid).children()
    assert len(kids) == 2
    kids[1].send_signal(signal.SIGSTOP)
    wait_for(lambda: kids[1].status() == psutil.STATUS_STOPPED, 10, what="the worker stopped")
    proc.kill()  # by hand, or the OOM killer: no lifeline would ever end for its worker
    proc.wait(timeout=10)
    try:
        wait_for(lambda: all(gone(k.pid) for k in kids), 20, what="both workers to stop with their server")
    finally:
        kill_all(kids)
    for s in streams:
        out, end = s.rest()
        assert end is None, "no trailer: the head learns the server went (remote/direct.py)"


def test_hostile_connections_leave_the_server_serving(server):
    proc, route, _ = server
    for bad in (b"not json\n", b"[1, 2]\n", wire.line({"hello": "short"}), b"x" * (wire.MAX_LINE + 10)):
        with socket.create_connection(("127.0.0.1", route["port"]), timeout=20) as c:
            c.sendall(bad)
            reply = c.recv(65536)
            assert b"refused" in reply, (bad[:40], reply)
    with socket.create_connection(("127.0.0.1", route["port"]), timeout=20) as c:  # refused: the rest is not read
        c.sendall(b"not json\n" + wire.line({"hello": "h" * 32}))
        c.settimeout(10)
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
        assert b"refused" in reply and b"nonce" not in reply, reply
    for request in ({"launch": "shell", "args": ["id"], "env": {}}, {"launch": "worker", "args": "id", "env": {}},
                    {"launch": "worker", "args": [], "env": {"A": 1}}):
        again = Stream(route)
        assert "refused" in again.start(request), request
    idle = [socket.create_connection(("127.0.0.1", route["port"]), timeout=20) for _ in range(70)]
    try:  # beyond 64 connections still proving themselves, new ones are closed at once
        idle[-1].settimeout(10)
        assert idle[-1].recv(10) == b""
    finally:
        for c in idle:
            c.close()
    assert proc.poll() is None

    def served() -> Stream | None:  # once it has seen those 70 close (until then a newcomer is turned away)
        s = Stream(route)
        try:
            return s if s.start({"launch": "worker", "args": ["--version"], "env": {}}) == {"how": "fork"} else None
        except (ConnectionResetError, EOFError):
            s.sock.close()
            return None

    s = wait_for(served, 20, what="the server serving again")
    assert s.rest()[1]["exit"] == 0, "still serving"


def test_the_route_is_private_and_leaves_with_its_server(server):
    proc, route, wd = server
    path = Path(wd / wire.ROUTE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(route) == {"port", "token", "pid"} and route["pid"] == proc.pid and len(route["token"]) == 64
    listening = [c for c in psutil.Process(proc.pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert [c.laddr.ip for c in listening] == ["127.0.0.1"], "loopback only"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert not path.exists()


def test_a_nannys_worker_is_stopped_by_its_nanny(server, scheduler):
    """The lifeline's end signals the top process only, as the agent does: the nanny closes its worker."""
    proc, route, _ = server
    s = Stream(route)
    request = worker(scheduler, "nanny")
    request["args"] = [a if a != "--no-nanny" else "--nanny" for a in request["args"]]
    assert s.start(request)["how"] == "fork"
    s.until(b"Registered to:")
    s.sock.shutdown(socket.SHUT_WR)
    out, end = s.rest()
    assert end is not None and end["exit"] == 0, out[-1500:]
    assert b"killed by signal" not in out and b"Nanny asking worker to close" in out, out[-1500:]


def test_the_kill_word_kills_a_stopped_process_at_once_and_a_polite_stop_continues_it(server, scheduler):
    """Issue 20: stop means stopped. A SIGSTOPped worker cannot act on SIGTERM: wire.KILL (the supervisor
    judged it hung) kills its group without the grace; a polite stop (the lifeline's end) SIGCONTs it
    after the SIGTERM, so it leaves gracefully instead of waiting out the grace for its SIGKILL."""
    proc, route, _ = server
    hung, polite = Stream(route), Stream(route)
    hung.start({**worker(scheduler, "hung"), "grace": 60})
    polite.start({**worker(scheduler, "polite"), "grace": 60})
    hung.until(b"Registered to:")
    polite.until(b"Registered to:")
    kids = {k.pid: k for k in psutil.Process(proc.pid).children()}
    assert len(kids) == 2
    for k in kids.values():
        k.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    hung.sock.sendall(wire.KILL)
    out, end = hung.rest(timeout=20)
    assert end is not None and end["exit"] == -signal.SIGKILL, out[-500:]
    assert time.monotonic() - t0 < 10, "killed without the 60 s grace"
    assert b"killed by the supervisor" in out
    t0 = time.monotonic()
    polite.sock.shutdown(socket.SHUT_WR)
    out, end = polite.rest(timeout=40)
    assert end is not None and end["exit"] == 0, out[-800:]  # SIGTERM acted on: a clean exit, not SIGKILL
    assert time.monotonic() - t0 < 30
