"""The direct route over real ssh (remote/direct.py): remote workers as `ssh -W` channels to their host's
fork server, and what happens when that server goes or a port answers without its token."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
import threading

import psutil
import pytest

from clusterctl.plan.resolve import resolve
from clusterctl.plan.ssh import NOT_STARTED
from clusterctl.plan.specs import cluster_tag, worker_spec
from clusterctl.remote import direct, fleet, launch
from clusterctl.runtime.launch import Transport
from clusterctl.topology import load_config
from conftest import processes_under, wait_for

pytestmark = pytest.mark.integration
PY = sys.executable


def fleet_yaml(cluster, sshd, workers: str) -> None:
    hosts = {"ws2": "127.0.0.2", "ws3": "127.0.0.3"}
    cluster.write(workers=workers, extra="hosts:\n" + "".join(
        sshd.host_yaml(name, addr, PY, cluster.root / "remote" / name) for name, addr in hosts.items()))


def remote(cluster, host: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cwd", "cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and (p.info["cwd"] or "").startswith(str(cluster.root / "remote" / host)):
            found.append(p)
    return found


def test_remote_workers_come_up_as_channels_and_survive_their_servers_death(cluster, sshd):
    fleet_yaml(cluster, sshd, "  - name: default\n    nthreads: 1\n    nanny: false\n    at: {ws2: 2, ws3: 1}\n")
    cluster.cli("up", check=True)
    procs = {p["name"]: p for p in cluster.ledger()["processes"]}
    logs = cluster.state / "logs"
    for name in ("default-0", "default-1", "default-2"):
        text = (logs / f"{name}.log").read_text()
        assert "start (direct): ssh " in text and " -W 127.0.0.1:" in text, text[:400]
        assert "forked by ws" in text and "Registered to:" in text
        ssh = psutil.Process(procs[name]["pid"])
        assert ssh.name() == "ssh" and "-W" in ssh.cmdline(), "the supervisor watches a local ssh channel"
        assert "-W" in procs[name]["argv"], "the ledger records the argv that really runs here"
    assert not [p for p in remote(cluster, "ws2") if "clusterctl.remote.agent" in " ".join(p.info["cmdline"])], \
        "no agent, no remote shell: the server is the far end"
    before_ws3 = procs["default-2"]["pid"]

    # ws2's fork server is killed (by hand, the OOM killer): its workers stop with it, the head sees their
    # streams end without an exit code, and restarts them through agents; ws3 is untouched.
    server = next(p for p in remote(cluster, "ws2") if "clusterctl.remote.forkserver" in " ".join(p.info["cmdline"]))
    server.send_signal(signal.SIGKILL)
    wait_for(lambda: all(p["restarts"] >= 1 for p in cluster.ledger()["processes"] if p["name"] in ("default-0", "default-1"))
             and cluster.status()["workers_registered"] == 3, 60, what="ws2's workers back")
    text = (logs / "default-0.log").read_text()
    assert "the fork server on ws2 went" in text, text[-1500:]
    assert "clusterctl.remote.agent" in text.split("the fork server on ws2 went", 1)[1], "the restart went through the agent"
    titles = [" ".join(p.info["cmdline"] or []) for p in remote(cluster, "ws2")]
    assert len([t for t in titles if t.startswith("dask worker")]) == 2, f"never a worker twice on the host: {titles}"
    assert {p["name"]: p["pid"] for p in cluster.ledger()["processes"]}["default-2"] == before_ws3

    # ws3's channel alone drops (its local ssh killed): the host's server still answers, so the
    # replacement goes over the direct route again, not through an agent.
    os.kill(before_ws3, signal.SIGKILL)

    def back():
        p = {p["name"]: p for p in cluster.status()["processes"]}["default-2"]
        return p["pid"] != before_ws3 and p["state"] == "running" and p["registered"]

    wait_for(back, 60, what="default-2 back after its channel dropped")
    starts = [ln for ln in (logs / "default-2.log").read_text().splitlines() if ln.startswith("--- ") and " start" in ln]
    assert len(starts) == 2 and "start (direct)" in starts[-1], starts
    cluster.cli("down", check=True)
    assert remote(cluster, "ws2") == [] and remote(cluster, "ws3") == []


class FakeServer:
    """A port on the host that answers the handshake without knowing the token, and keeps what it got."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.sock.accept()
        conn.settimeout(20)
        try:
            while b"\n" not in self.got:
                self.got += conn.recv(65536)
            conn.sendall(json.dumps({"nonce": "n" * 32, "proof": "0" * 64}).encode() + b"\n")
            while chunk := conn.recv(65536):
                self.got += chunk
        except OSError:
            pass
        conn.close()


def test_a_port_without_the_token_gets_no_environment_and_the_start_ends_not_started(cluster, sshd):
    """The handle keeps its transport and pid: a route that fails before its process exists ends the start
    (NOT_STARTED, the reason in the log); the supervisor marks the route and the next start is the agent's."""
    fleet_yaml(cluster, sshd, "  - name: default\n    nthreads: 1\n    at: {ws2: 1}\n    env: {API_TOKEN: hunter2}\n")
    cluster.config.write_text(cluster.config.read_text() + "tls: {enabled: false}\n")  # no `up`: no TLS files on ws2
    cfg = load_config(cluster.config)
    spec = worker_spec(cfg, resolve(), cfg.workers[0], 0)
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    fleet.ssh.secure_control_dir(cfg, create=True)  # as `up` makes it before any ssh
    fake = FakeServer()
    tag = cluster_tag(cfg)
    route = direct.learn(tag, "ws2", {"port": fake.port, "token": "t" * 64})
    try:
        assert isinstance(launch.choose(cfg, spec, resolve()), launch.DirectLaunch)
        launched = launch.choose(cfg, spec, resolve()).start(spec)
        child, first = launched.handle, launched.handle.pid
        assert launched.transport == Transport.DIRECT and launched.argv[-1] != "clusterctl.remote.agent"
        assert child.wait(timeout=60) == NOT_STARTED
        assert child.pid == first, "a handle never changes its pid"
        assert "answered without the fork server's token" in child.start_error
        assert b"hello" in fake.got and b"hunter2" not in fake.got and b"auth" not in fake.got, fake.got
        log = spec.log_path.read_text()
        assert "answered without the fork server's token" in log and "its next start goes through the agent" in log
        direct.fail(tag, "ws2", child.start_error)  # what the supervisor does with NOT_STARTED
        assert route.dead and direct.route(tag, "ws2") is None
        again = launch.choose(cfg, spec, resolve())
        assert isinstance(again, launch.AgentLaunch)
        agent = again.start(spec)
        wait_for(lambda: "Waiting to connect to:" in spec.log_path.read_text(), 60, what="the agent's worker")
        assert again.ask(agent.handle, False)  # the seam: its transport closes its lifeline
        assert agent.handle.wait(timeout=60) != 255, "the agent's exit, not a lost host"
    finally:
        direct.forget(tag)
        fake.sock.close()
        fleet.sweep(cfg, "ws2")
        fleet.ssh.close(cfg, "ws2")
    assert processes_under(cluster.root / "remote") == []


def test_exit_codes_come_through_and_a_stop_past_its_grace_keeps_the_route(cluster, sshd):
    fleet_yaml(cluster, sshd, "  - name: default\n    nthreads: 1\n    nanny: false\n    at: {ws2: 2}\n")
    cfg = load_config(cluster.config)
    tag = cluster_tag(cfg)
    try:
        assert fleet.prepare(cfg) == {}
        route = direct.route(tag, "ws2")
        assert route is not None, "`probe install --warm` reported the server's route"
        spec = worker_spec(cfg, resolve(), cfg.workers[0], 0)
        bad = dataclasses.replace(spec, remote_args=("--nthreads", "many"))
        assert direct.spawn(cfg, bad, route).wait(timeout=60) == 2, "click's usage error, from the host"
        assert "Invalid value for '--nthreads'" in spec.log_path.read_text()

        child = direct.spawn(cfg, worker_spec(cfg, resolve(), cfg.workers[0], 1), route)  # no scheduler: it waits
        log = cfg.log_path / "default-1.log"
        wait_for(lambda: "Waiting to connect to:" in log.read_text(), 60, what="the worker waiting")
        assert child.close_lifeline()
        os.kill(child.pid, signal.SIGKILL)  # the supervisor's stop after its grace: the local ssh killed
        # a stop either way, never a lost server (257): the waiting worker acts on the SIGTERM at once, and
        # its clean exit's trailer may beat the kill (it did in one CI run)
        assert child.wait(timeout=30) in (-signal.SIGKILL, 0)
        assert not route.dead, "our own stop says nothing of the server"

        left = direct.spawn(cfg, worker_spec(cfg, resolve(), cfg.workers[0], 1), route)  # down finds it still there
        wait_for(lambda: log.read_text().count("Waiting to connect to:") == 2, 60, what="another waiting worker")
        assert direct.sweep(cfg, tag, "ws2", 5), "down's sweep, through the fork server: no remote shell"
        assert left.wait(timeout=30) != 255, "swept, not a lost host"
        wait_for(lambda: processes_under(cluster.root / "remote" / "ws2") == [], 20,
                 what="the worker and the server itself gone after the sweep")
        assert not (cluster.root / "remote" / "ws2" / "forkserver.route").exists()
    finally:
        direct.forget(tag)
        fleet.shutdown(cfg)
    assert processes_under(cluster.root / "remote") == []


def test_a_host_that_forbids_forwarding_runs_its_workers_through_agents(cluster, tmp_path):
    import sshd as sshd_helper

    try:
        strict = sshd_helper.start(tmp_path / "sshd", addresses=("127.0.0.2",), extra="AllowTcpForwarding no\n")
    except sshd_helper.SshdUnavailable as e:
        from conftest import missing_tool

        missing_tool(f"no sshd: {e}")
    try:
        cluster.write(workers="  - name: default\n    nthreads: 1\n    at: {ws2: 2}\n",
                      extra="hosts:\n" + strict.host_yaml("ws2", "127.0.0.2", PY, cluster.root / "remote" / "ws2"))
        up = cluster.cli("up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert cluster.status()["workers_registered"] == 2
        text = (cluster.state / "logs" / "default-0.log").read_text()
        assert "no direct start on ws2" in text and "its next start goes through the agent" in text, text[-2000:]
        assert "clusterctl.remote.agent" in text.split("no direct start on ws2", 1)[1], "then the agent started it"
        cluster.cli("down", check=True)
    finally:
        strict.stop()
