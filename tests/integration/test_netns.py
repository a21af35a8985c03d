"""The namespace fleet itself (tests/netns.py): hosts come up, a cut is silent, cleanup leaves nothing."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import netns
from conftest import free_port, kill_all, processes_under, wait_for
from clusterctl.client.connect import client_address, client_kwargs
from clusterctl.topology import load_config

pytestmark = pytest.mark.integration
PY = sys.executable
TESTS = str(Path(__file__).resolve().parents[1])

# A TCP server inside a namespace, driven over its stdin/stdout (pipes cross namespaces, sockets do not):
# it prints its port, accepts one connection, then obeys `send WORD` and `recv SECONDS`.
ECHO = """
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(); print(s.getsockname()[1], flush=True)
c, _ = s.accept(); print("accepted", flush=True)
for line in sys.stdin:
    cmd, arg = line.split()
    if cmd == "send":
        c.sendall(arg.encode()); print("sent", flush=True)
    else:
        c.settimeout(float(arg))
        try:
            print("got", c.recv(100).decode() or "EOF", flush=True)
        except socket.timeout:
            print("timeout", flush=True)
        except OSError as e:
            print("error", e, flush=True)
"""
# From inside a namespace: connect, print the outcome's class and the seconds it took.
CONNECT = """
import socket, sys, time
t = time.monotonic()
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as s:
        print("connected", s.recv(100).decode(errors="replace").strip())
except OSError as e:
    print(type(e).__name__, round(time.monotonic() - t, 2))
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    yield from netns.netns_fleet(tmp_path_factory, hosts=2)


def link_names() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in subprocess.run(
        ["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()}


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def owned(names: set[str], owner: str) -> set[str]:
    return {n for n in names if n.startswith(f"{netns.PREFIX}{owner}")}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_hosts_answer_ssh_and_reach_the_head_and_each_other(fleet):
    assert len(fleet.hosts) == 2 and len({h.address for h in fleet.hosts}) == 2
    for h in fleet.hosts:
        res = fleet.ssh(h, "hostname && ip -o -4 addr show dev eth0 && ip -4 route")
        assert res.returncode == 0, res.stderr
        assert f"inet {h.address}/24" in res.stdout, "the ssh session runs inside that host's namespace"
        assert "default" not in res.stdout, "a test host reaches nothing beyond its fleet"
        assert fleet.sshd_pid(h) in fleet.pids(h)  # not "the lowest pid": pids wrap (a CI run got 576 after 32711)
        # neighbours are fixed, so a long cut never turns into a local "No route to host"
        neigh = fleet.run(h, "ip", "neigh", "show", fleet.head_address, check=True).stdout
        assert neigh.split()[-1:] == ["PERMANENT"], neigh

    # a server in the root namespace on head_address answers from inside a namespace
    with socket.socket() as server:
        server.bind((fleet.head_address, 0))
        server.listen()
        port = server.getsockname()[1]

        def greet():
            server.settimeout(10)
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"head here\n")

        t = threading.Thread(target=greet, daemon=True)
        t.start()
        res = fleet.run(fleet.hosts[0], PY, "-c", CONNECT, fleet.head_address, str(port), "5", timeout=20)
        t.join(timeout=10)
    assert res.stdout.strip() == "connected head here", res.stdout + res.stderr

    # hosts reach each other (Dask workers fetch data from one another)
    res = fleet.run(fleet.hosts[0], PY, "-c", CONNECT, fleet.hosts[1].address, "22", "5", timeout=20)
    assert res.stdout.startswith("connected SSH-2.0-"), res.stdout + res.stderr


def test_cut_is_silent_both_ways_and_restore_resumes(fleet):
    h = fleet.hosts[1]
    server = fleet.popen(h, PY, "-c", ECHO, h.address, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def inside(command: str | None = None) -> str:
        if command:
            server.stdin.write(command + "\n")
            server.stdin.flush()
        return server.stdout.readline().strip()

    try:
        port = int(inside())
        client = socket.create_connection((h.address, port), timeout=5)
        assert inside() == "accepted"
        assert inside("send hello") == "sent" and client.recv(100) == b"hello"

        fleet.cut(h)
        assert fleet.is_cut(h) and not fleet.is_cut(fleet.hosts[0])
        cut_at = time.monotonic()
        # everything at once, so the cut stays short (TCP's next retransmission comes ~6 s after a send)
        client.sendall(b"from-head")
        assert inside("send from-host") == "sent"
        dial_out = fleet.popen(h, PY, "-c", CONNECT, fleet.head_address, str(free_port()), "2",
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        dial_in: list[BaseException] = []

        def dial():
            try:
                socket.create_connection((h.address, 22), timeout=2).close()
            except OSError as e:
                dial_in.append(e)

        dialer = threading.Thread(target=dial, daemon=True)
        dialer.start()
        server.stdin.write("recv 3\n")  # both sides wait at once: no FIN, no RST, no error, just silence
        server.stdin.flush()
        client.settimeout(3)
        with pytest.raises(socket.timeout):
            client.recv(100)
        assert inside() == "timeout"
        # new connections time out both ways (no "refused", no "no route to host")
        out, err = dial_out.communicate(timeout=20)
        assert out.split()[:1] == ["TimeoutError"], out + err
        dialer.join(timeout=10)
        assert len(dial_in) == 1 and isinstance(dial_in[0], socket.timeout), dial_in
        assert time.monotonic() - cut_at < 15

        fleet.restore(h)
        assert not fleet.is_cut(h)
        # the old connection resumes: TCP retransmits what waited in both directions
        server.stdin.write("recv 30\n")
        server.stdin.flush()
        client.settimeout(30)
        assert client.recv(100) == b"from-host"
        assert inside() == "got from-head"
        assert fleet.ssh(h, "true").returncode == 0
        client.close()
    finally:
        server.kill()
        server.wait(timeout=10)
        if fleet.is_cut(h):
            fleet.restore(h)


def test_ssh_keepalive_notices_a_cut_the_far_side_does_not(fleet):
    h = fleet.hosts[0]
    before = set(fleet.pids(h))
    session = subprocess.Popen(
        fleet.ssh_argv(h, "echo ready; exec sleep 300", options=("ServerAliveInterval=2", "ServerAliveCountMax=2")),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert session.stdout.readline().strip() == "ready"
        far = [psutil.Process(p) for p in set(fleet.pids(h)) - before]
        assert any(p.name() == "sleep" for p in far), "the remote command runs in the namespace"
        fleet.cut(h)
        t0 = time.monotonic()
        rc = session.wait(timeout=20)
        took = time.monotonic() - t0
        assert rc == 255, session.stderr.read()  # (LogLevel=ERROR hides ssh's "Timeout, server not responding")
        assert 2 <= took <= 15, f"keep-alives should notice in about 4-6 s, took {took:.1f} s"
        # the far side never hears of it: sshd's session and its command live on
        time.sleep(1)
        assert all(alive(p.pid) for p in far)
    finally:
        if session.poll() is None:
            session.kill()
            session.wait(timeout=10)
        fleet.restore(h)
        kill_all([psutil.Process(p) for p in set(fleet.pids(h)) - before if alive(p)])
    assert set(fleet.pids(h)) == before


def test_close_leaves_nothing_even_when_the_test_fails(tmp_path):
    links_before, spaces_before = link_names(), netns_names()
    extras: list[int] = []
    with pytest.raises(RuntimeError, match="test body failed"):
        with netns.NetnsFleet(tmp_path / "f", hosts=2) as f:
            owner, sshds = f.owner, [f.sshd_pid(h) for h in f.hosts]
            assert len(owned(netns_names(), owner)) == 2 and len(owned(link_names(), owner)) == 3
            # what a careless test leaves: a process inside a namespace, an open ssh session
            extras.append(f.popen(f.hosts[0], "sleep", "300").pid)
            ssh = subprocess.Popen(f.ssh_argv(f.hosts[1], "echo ready; exec sleep 300"),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
            assert ssh.stdout.readline().strip() == "ready"
            # "ready" comes before the shell execs sleep: under load, the sleep may take a moment to appear
            extras += wait_for(lambda: [p for p in f.pids(f.hosts[1]) if alive(p) and psutil.Process(p).name() == "sleep"],
                               20, what="the ssh session's sleep")
            assert len(extras) == 2
            raise RuntimeError("test body failed")
    ssh.wait(timeout=20)  # its server went: the client ends
    assert owned(netns_names(), owner) == set() and owned(link_names(), owner) == set()
    assert not any(alive(p) for p in sshds + extras)
    # the session's sleep went with its sshd's tree; the other had to be killed as a leftover
    assert f.leftovers == [f"{extras[0]} sleep 300"], f.leftovers
    assert not (netns.STATE_DIR / f"{owner}.json").exists()
    assert processes_under(tmp_path) == []
    # nothing else changed (names of other live fleets may come and go meanwhile: compare ours only)
    ours = {n for n in links_before | link_names() | spaces_before | netns_names() if n.startswith(netns.PREFIX)}
    assert link_names() - ours == links_before - ours and netns_names() - ours == spaces_before - ours
    f.close()  # idempotent


def test_sweep_removes_a_crashed_fleet_and_spares_live_ones(fleet, tmp_path):
    code = ("import sys, time, pathlib; sys.path.insert(0, sys.argv[1]); import netns\n"
            "f = netns.NetnsFleet(pathlib.Path(sys.argv[2]), hosts=1); f.start()\n"
            "print(f.owner, f.sshd_pid(0), flush=True); time.sleep(300)\n")
    crashed = subprocess.Popen([PY, "-c", code, TESTS, str(tmp_path / "crashed")], stdout=subprocess.PIPE, text=True)
    try:
        owner, sshd_pid = crashed.stdout.readline().split()
    finally:
        crashed.send_signal(signal.SIGKILL)  # no cleanup of its own: the namespace, links and sshd stay
        crashed.wait(timeout=10)
    sshd_pid = int(sshd_pid)
    left = owned(netns_names(), owner) | owned(link_names(), owner)
    assert len(left) == 3 and alive(sshd_pid), left  # its namespace, its veth, its bridge
    live = owned(netns_names(), fleet.owner) | owned(link_names(), fleet.owner)

    removed = netns.sweep_stale()
    assert left <= set(removed), removed
    assert owned(netns_names(), owner) == set() and owned(link_names(), owner) == set()
    wait_for(lambda: not alive(sshd_pid), 5, what="the crashed fleet's sshd to go")
    assert not (netns.STATE_DIR / f"{owner}.json").exists()
    # the live fleet is untouched and still works
    assert owned(netns_names(), fleet.owner) | owned(link_names(), fleet.owner) == live
    assert not set(removed) & live
    assert fleet.ssh(fleet.hosts[0], "true").returncode == 0


@pytest.mark.timeout(240)
def test_clusterctl_runs_workers_inside_namespaces(cluster, fleet):
    """A real fleet over TLS: the scheduler on the head's bridge address, a worker in each namespace."""
    cluster.port, cluster.dashboard_port = free_port(fleet.head_address), free_port(fleet.head_address)
    hosts = "".join(fleet.host_yaml(f"ns{h.index}", h, PY, cluster.root / "remote" / f"ns{h.index}")
                    for h in fleet.hosts)
    cluster.write(workers="  - name: default\n    nthreads: 1\n    at: {localhost: 1, ns0: 1, ns1: 1}\n",
                  extra="hosts:\n" + hosts + "tls:\n  enabled: true\n")
    cluster.config.write_text(cluster.config.read_text().replace(
        "  host: 127.0.0.1\n", f"  host: {fleet.head_address}\n", 1))
    before = {h.index: set(fleet.pids(h)) for h in fleet.hosts}

    up = cluster.cli("up", check=True)
    assert f"tls://{fleet.head_address}:{cluster.port}" in up.stdout
    st = cluster.status()
    assert st["workers_registered"] == 3, st
    hosts_of = {p["name"]: p["address"].rsplit(":", 1)[0] for p in st["processes"] if p["name"] != "scheduler"}
    assert sorted(hosts_of.values()) == sorted(f"tls://{a}" for a in [fleet.head_address, *(h.address for h in fleet.hosts)])
    for h in fleet.hosts:  # the worker of ns<i> lives in that namespace
        assert any("dask" in " ".join(psutil.Process(p).cmdline()) for p in set(fleet.pids(h)) - before[h.index])

    from distributed import Client

    cfg = load_config(cluster.config)
    with Client(client_address(cfg), timeout="10s", **client_kwargs(cfg)) as c:
        workers = list(c.scheduler_info()["workers"])
        # data moves between namespaces: each worker computes a piece, one of them sums them all
        parts = [c.submit(lambda i: list(range(i * 100, i * 100 + 100)), i, workers=[w], pure=False)
                 for i, w in enumerate(workers)]
        total = c.submit(lambda *xs: sum(map(sum, xs)), *parts, workers=[workers[-1]])
        assert total.result(timeout=30) == sum(range(100 * len(workers)))

    cluster.cli("down", check=True)
    for h in fleet.hosts:
        assert set(fleet.pids(h)) == before[h.index], "down leaves nothing in any namespace"
    assert processes_under(cluster.root) == []
