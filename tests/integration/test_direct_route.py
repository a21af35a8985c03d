"""The direct route over real ssh (remote/direct.py): remote workers as `ssh -W` channels to their host's
fork server, and what happens when that server goes or a port answers without its token."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading

import psutil
import pytest

from clusterctl.plan.resolve import resolve
from clusterctl.plan.specs import cluster_tag, worker_spec
from clusterctl.remote import direct, fleet
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


def test_a_port_without_the_token_gets_neither_the_environment_nor_a_process(cluster, sshd):
    fleet_yaml(cluster, sshd, "  - name: default\n    nthreads: 1\n    at: {ws2: 1}\n    env: {API_TOKEN: hunter2}\n")
    cfg = load_config(cluster.config)
    spec = worker_spec(cfg, resolve(), cfg.workers[0], 0)
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    fake = FakeServer()
    tag = cluster_tag(cfg)
    route = direct.learn(tag, "ws2", {"port": fake.port, "token": "t" * 64})
    try:
        child = direct.spawn(cfg, spec, route)
        assert child.wait(timeout=60) == direct.REFUSED
        assert b"hello" in fake.got and b"hunter2" not in fake.got and b"auth" not in fake.got, fake.got
        assert route.dead and direct.route(tag, "ws2") is None, "the host's next start goes through an agent"
        assert "answered without its token" in spec.log_path.read_text()
    finally:
        direct.forget(tag)
        fake.sock.close()
        for name in ("ws2",):
            fleet.ssh.close(cfg, name)
    assert processes_under(cluster.root / "remote") == []
