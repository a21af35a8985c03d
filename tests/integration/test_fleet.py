"""The workstation fleet over real SSH: a private sshd on 127.0.0.1-3 plays three machines.

Remote hosts use this venv's Python (same machine), so the agent imports clusterctl there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import distributed
import pandas as pd
import psutil
import pytest

import clusterctl
from conftest import kill_all, processes_under, wait_for
from clusterctl.remote import forkserver
from clusterctl.client.connect import client_address, client_kwargs
from clusterctl.topology import load_config

pytestmark = pytest.mark.integration
PY = sys.executable
GONE_WITHIN = 15  # seconds a remote process may take to go once its lifeline is cut


def fleet_yaml(cluster, sshd, *, workers: str, tls_on: bool = False, hosts: dict[str, tuple[str, str]] | None = None) -> Path:
    hosts = hosts or {"ws2": ("127.0.0.2", PY), "ws3": ("127.0.0.3", PY)}
    text = "hosts:\n" + "".join(
        sshd.host_yaml(name, addr, python, cluster.root / "remote" / name) for name, (addr, python) in hosts.items()
    )
    if tls_on:
        text += "tls:\n  enabled: true\n"
    return cluster.write(workers=workers, extra=text)


def tagged(root: Path) -> list[psutil.Process]:
    """Processes of the remote hosts: the agents' and Dask's (their cwd is under root/remote)."""
    found = []
    for p in psutil.process_iter(["pid", "cwd", "cmdline", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if (p.info["cwd"] or "").startswith(str(root / "remote")):
            found.append(p)
    return found


def fork_server(p: psutil.Process) -> bool:
    return "clusterctl.remote.forkserver" in " ".join(p.info["cmdline"] or [])


def ledger_proc(cluster, name: str) -> dict:
    return next(p for p in cluster.ledger()["processes"] if p["name"] == name)


def test_three_hosts_over_tls_run_and_down(cluster, sshd):
    fleet_yaml(cluster, sshd, tls_on=True,
               workers="  - name: default\n    nthreads: 1\n    at: {localhost: 1, ws2: 1, ws3: 1}\n")
    up = cluster.cli("up", check=True)
    assert f"tls://127.0.0.1:{cluster.port}" in up.stdout and "Workers:    3" in up.stdout

    st = cluster.status()
    assert st["workers_registered"] == 3
    procs = {p["name"]: p for p in cluster.ledger()["processes"]}
    assert {n: p["address"].rsplit(":", 1)[0] for n, p in procs.items() if n != "scheduler"} == {
        "default-0": "tls://127.0.0.1", "default-1": "tls://127.0.0.2", "default-2": "tls://127.0.0.3"}
    # the argv that really runs here: an ssh -W channel to the host's fork server (remote/direct.py)
    assert procs["default-1"]["argv"][0] == "ssh" and "-W" in procs["default-1"]["argv"]
    assert len(tagged(cluster.root)) >= 4, "an agent plus a nanny and its worker on each remote host"

    # keys are private, here and on each host; the remote hosts never get the CA's or the client's key
    state_tls = cluster.state / "tls"
    for key in ("ca-key.pem", "node-key.pem", "client-key.pem"):
        assert stat.S_IMODE((state_tls / key).stat().st_mode) == 0o600
    remote_tls = cluster.root / "remote" / "ws2" / "tls"
    assert sorted(p.name for p in remote_tls.iterdir()) == ["ca.pem", "node-key.pem", "node.pem"]
    assert stat.S_IMODE((remote_tls / "node-key.pem").stat().st_mode) == 0o600

    # a plain-TCP client is refused; the CLI's run (and any Client with the printed env) connects
    from distributed import Client

    with pytest.raises((OSError, TypeError, ValueError)):
        Client(f"tcp://127.0.0.1:{cluster.port}", timeout="2s")
    cfg = load_config(cluster.config)
    with Client(client_address(cfg), timeout="10s", **client_kwargs(cfg)) as c:
        assert c.submit(lambda x: x + 1, 1).result(timeout=20) == 2

    env_lines = cluster.cli("client-config", "--env", check=True).stdout
    env = dict(line.removeprefix("export ").split("=", 1) for line in env_lines.splitlines())
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    out = cluster.root / "pi.csv"
    run = subprocess.run(
        [PY, "-m", "clusterctl", "run", "montecarlo", "--tasks", "30", "--max-points", "100000", "--out", str(out),
         "--file", str(cluster.config)],
        cwd=cluster.root, env={**os.environ, **env}, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    assert len(pd.read_csv(out)) == 30
    snippet = cluster.cli("client-config", check=True).stdout
    assert "Security(" in snippet and str(state_tls / "client.pem") in snippet

    down = cluster.cli("down", check=True)
    assert "stopped" in down.stdout
    assert tagged(cluster.root) == [], "down must leave nothing on any host"
    assert processes_under(cluster.root) == []


def test_killing_ssh_or_supervisor_leaves_no_remote_orphan(cluster, sshd):
    fleet_yaml(cluster, sshd, workers="  - name: default\n    nthreads: 1\n    nanny: false\n    at: {ws2: 1, ws3: 1}\n")
    cluster.cli("up", check=True)
    before = {p.pid for p in tagged(cluster.root)}
    assert before

    # the ssh client of default-0 dies: its remote agent stops the worker; the supervisor restarts it
    ssh_pid = ledger_proc(cluster, "default-0")["pid"]
    remote_ws2 = [p for p in tagged(cluster.root) if "/ws2" in p.info["cwd"] and not fork_server(p)]
    os.kill(ssh_pid, signal.SIGKILL)
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in remote_ws2),
             GONE_WITHIN, what="ws2's agent and worker to go after its ssh client died")
    wait_for(lambda: ledger_proc(cluster, "default-0")["restarts"] >= 1 and cluster.status()["workers_registered"] == 2,
             30, what="default-0 restarted by policy")

    # the supervisor dies: every lifeline closes, every remote process goes
    remote = tagged(cluster.root)
    assert remote
    os.kill(cluster.ledger()["supervisor"]["pid"], signal.SIGKILL)
    wait_for(lambda: [p for p in tagged(cluster.root) if not fork_server(p)] == [], GONE_WITHIN,
             what="no remote agent or Dask process after the supervisor's death")
    # The hosts' fork servers hold no Dask process now: they leave once idle (remote/forkserver.py)
    wait_for(lambda: tagged(cluster.root) == [], GONE_WITHIN + forkserver.IDLE,
             what="the idle fork servers to leave by themselves")
    cluster.cli("down", check=True)
    assert processes_under(cluster.root) == []


def _with_dead_ws9(cluster, sshd) -> None:
    with socket.socket() as s:  # a port where nothing listens: connection refused at once
        s.bind(("127.0.0.4", 0))
        dead = s.getsockname()[1]
    fleet_yaml(cluster, sshd, workers="  - name: default\n    nthreads: 1\n    at: {ws2: 1, ws9: 1}\n",
               hosts={"ws2": ("127.0.0.2", PY), "ws9": ("127.0.0.4", PY)})
    text = cluster.config.read_text()
    head, tail = text.split("name: ws9", 1)
    cluster.config.write_text(head + "name: ws9" + tail.replace(f"port: {sshd.port}", f"port: {dead}", 1))


def test_unreachable_host_at_up_leaves_the_cluster_degraded_and_says_why(cluster, sshd):
    _with_dead_ws9(cluster, sshd)
    res = cluster.cli("up")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "(degraded)" in res.stdout and "host ws9 is unreachable" in res.stderr, res.stdout + res.stderr
    st = cluster.status()
    assert st["state"] == "degraded"
    hosts = {h["name"]: h for h in st["hosts"]}
    assert hosts["ws9"]["state"] == "unreachable" and "unreachable over SSH" in hosts["ws9"]["last_error"]
    assert hosts["ws9"]["workers"] == {"desired": 1, "running": 0}
    assert hosts["ws2"]["state"] == "reachable" and hosts["ws2"]["workers"] == {"desired": 1, "running": 1}
    assert {p["name"]: p["state"] for p in st["processes"]}["default-1"] in ("waiting", "pending")
    assert st["workers_registered"] == 1
    plain = cluster.cli("status").stdout
    assert "ws9" in plain and "unreachable" in plain
    cluster.cli("down", check=True)
    assert tagged(cluster.root) == [] and processes_under(cluster.root) == []


@pytest.mark.parametrize("how", ["--require-all", "required: true"])
def test_a_required_unreachable_host_fails_up_by_name_and_starts_nothing(cluster, sshd, how):
    _with_dead_ws9(cluster, sshd)
    args = ["up"]
    if how == "--require-all":
        args.append(how)
    else:
        text = cluster.config.read_text()
        head, tail = text.split("name: ws9\n", 1)
        cluster.config.write_text(head + "name: ws9\n    required: true\n" + tail)
    res = cluster.cli(*args)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "'ws9'" in res.stderr and "unreachable" in res.stderr, res.stderr
    assert "'ws2'" not in res.stderr.splitlines()[0]
    assert tagged(cluster.root) == [] and processes_under(cluster.root) == []
    assert not (cluster.state / "logs" / "scheduler.log").exists(), "nothing may start"


def test_doctor_catches_a_version_mismatch(cluster, sshd, tmp_path):
    bare = tmp_path / "bare-venv"  # a Python without distributed: the classic mismatch
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=60)
    fleet_yaml(cluster, sshd, workers="  - name: default\n    at: {ws2: 1, ws3: 1}\n",
               hosts={"ws2": ("127.0.0.2", PY), "ws3": ("127.0.0.3", str(bare / "bin" / "python"))})
    res = cluster.cli("doctor")
    assert res.returncode == 1, res.stdout + res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines() if line.strip()}
    assert rows["ws2"].rstrip().endswith("ok") and rows["localhost"].rstrip().endswith("ok"), res.stdout
    assert rows["ws3"].rstrip().endswith("FAIL"), res.stdout
    assert "ws3: distributed is missing here" in res.stdout
    assert "ws3: clusterctl is missing here" in res.stdout
    assert " same " in rows["ws2"] and re.search(r" \d+ differ ", rows["ws3"]), res.stdout
    # the same table `up` refuses with: package | head | ws3 | what strict does
    tail = res.stdout.split("ws3: versions differ from this machine's (versions: strict)\n", 1)[1].splitlines()
    table = {cells[0]: cells[1:] for cells in (line.split() for line in tail) if cells}
    assert table["package"] == ["head", "ws3", "strict"], res.stdout
    assert table["distributed"] == [distributed.__version__, "MISSING", "refuses"]
    assert table["dask"][1:] == ["MISSING", "refuses"] and table["clusterctl"][1:] == ["MISSING", "refuses"]
    assert "ws2: versions differ" not in res.stdout and "localhost: versions differ" not in res.stdout
    data = cluster.cli("doctor", "--json")
    assert data.returncode == 1 and '"ok": false' in data.stdout
    hosts = {h["host"]: h for h in json.loads(data.stdout)["hosts"]}
    assert hosts["ws2"]["differences"] == []
    assert {"package": "distributed", "head": distributed.__version__, "host": None, "refuses": True} \
        in hosts["ws3"]["differences"]
    assert processes_under(cluster.root) == []


def venv_with_clusterctl_only(path: Path) -> Path:
    """A real interpreter that runs clusterctl's probe but has no Dask stack: a host where
    clusterctl was copied but Dask never installed (the probe needs the standard library only)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=60)
    site = next(path.glob("lib/python*/site-packages"))
    (site / "clusterctl_src.pth").write_text(str(Path(clusterctl.__file__).resolve().parents[1]) + "\n")
    return path / "bin" / "python"


def test_up_refuses_a_host_whose_versions_differ_with_its_table(cluster, sshd, tmp_path):
    other = venv_with_clusterctl_only(tmp_path / "no-dask-venv")
    assert subprocess.run([str(other), "-c", "import distributed"], capture_output=True, timeout=30).returncode == 1
    fleet_yaml(cluster, sshd, workers="  - name: default\n    nthreads: 1\n    at: {ws2: 1, ws3: 1}\n",
               hosts={"ws2": ("127.0.0.2", PY), "ws3": ("127.0.0.3", str(other))})
    t0 = time.monotonic()
    res = cluster.cli("up")
    took = time.monotonic() - t0
    assert res.returncode == 1, res.stdout + res.stderr
    first, *lines = res.stderr.strip().splitlines()
    assert "'ws3' (127.0.0.3)" in first and "'ws2'" not in first and "versions: warn" in first, res.stderr
    assert "dask" in first and "distributed" in first, first
    table = {cells[0]: cells[1:] for cells in (line.split() for line in lines)}
    assert table["package"] == ["head", "ws3", "strict"], res.stderr
    assert table["distributed"] == [distributed.__version__, "MISSING", "refuses"]
    refused = {pkg for pkg, cells in table.items() if cells[-1] == "refuses"}
    assert refused >= {"dask", "distributed", "msgpack", "cloudpickle", "tornado", "toolz"}, res.stderr
    assert table["numpy"][1:] == ["MISSING", "warns"], "an optional package is listed, not refused"
    assert "python" not in table, "only what differs: the same interpreter"
    assert [" ".join(p.cmdline()) for p in tagged(cluster.root) + processes_under(cluster.root)] == []
    # The local scheduler starts while the hosts are checked (a refusal stops it); on no host does anything start.
    assert not list((cluster.state / "logs").glob("default-*.log")), "no worker may start"
    print(f"up refused in {took:.2f} s:\n{res.stderr}")


def test_agent_stops_its_command_when_stdin_closes(tmp_path):
    """No ssh needed: the lifeline is stdin, whoever holds the other end."""
    agent = subprocess.Popen([PY, "-m", "clusterctl.remote.agent", "--grace", "1", "--cwd", str(tmp_path / "wd"),
                              "--tag", "t", "--", "sleep", "300"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    family = [psutil.Process(agent.pid)]
    try:
        sleeper = wait_for(lambda: next((c for c in family[0].children() if c.name() == "sleep"), None),
                           10, what="the agent's child")
        family.append(sleeper)
        assert sleeper.environ().get("CLUSTERCTL_TAG") == "t" and sleeper.cwd() == str(tmp_path / "wd")
        t0 = time.monotonic()
        agent.stdin.close()
        assert agent.wait(timeout=10) == 128 + signal.SIGTERM
        assert not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE
        assert time.monotonic() - t0 < 5
        assert b"lifeline closed" in agent.stderr.read()
    finally:  # whatever failed above, neither the agent nor its sleep outlives the test
        kill_all([p for p in family if p.is_running()])
        agent.wait(timeout=10)


# -- a scheduler on another host -------------------------------------------------------------

def remote_scheduler_yaml(cluster, sshd, *, workers: str, at: str = "ws2") -> Path:
    """Scheduler `at:` a remote host (no `host:`: it binds that host's address), TLS forced on."""
    fleet_yaml(cluster, sshd, tls_on=True, workers=workers)
    text = cluster.config.read_text()
    assert "  host: 127.0.0.1\n" in text
    cluster.config.write_text(text.replace("  host: 127.0.0.1\n", f"  at: {at}\n", 1))
    return cluster.config


def remote_scheduler(root: Path, host: str = "ws2") -> psutil.Process | None:
    """The Dask scheduler on that host: run in the host's workdir, by its agent (`--launch scheduler`) or
    forked by the host's fork server for that agent. (Dask retitles its processes; the agent's
    command line and the workdir are the reliable marks.)"""
    agents = [p for p in tagged(root) if (p.info["cwd"] or "").endswith(f"/{host}")
              and "--launch scheduler" in " ".join(p.info["cmdline"] or [])]
    if not agents:
        return None
    for p in tagged(root):
        try:
            if (p.info["cwd"] or "").endswith(f"/{host}") and p.status() != psutil.STATUS_ZOMBIE \
                    and " ".join(p.cmdline()).startswith("dask scheduler"):
                return p
        except psutil.Error:
            continue
    return None


def run_montecarlo(cluster, name: str) -> None:
    out = cluster.root / name
    res = cluster.cli("run", "montecarlo", "--tasks", "30", "--max-points", "100000", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(pd.read_csv(out)) == 30


@pytest.mark.timeout(300)
def test_scheduler_on_a_remote_host_serves_heals_and_leaves_nothing(cluster, sshd):
    remote_scheduler_yaml(cluster, sshd, workers="  - name: default\n    nthreads: 1\n    at: {localhost: 1, ws3: 1}\n")
    address = f"tls://127.0.0.2:{cluster.port}"
    up = cluster.cli("up", check=True)
    assert address in up.stdout and "Workers:    2" in up.stdout, up.stdout

    st = cluster.status()
    assert st["state"] == "running" and st["workers_registered"] == 2, st
    assert st["scheduler"]["address"] == address and st["scheduler"]["answering"]
    assert (st["scheduler"]["at"], st["scheduler"]["host"]) == ("ws2", "127.0.0.2")
    procs = {p["name"]: p for p in st["processes"]}
    assert (procs["scheduler"]["at"], procs["scheduler"]["host"]) == ("ws2", "127.0.0.2")
    assert {n: (p["at"], p["address"].rsplit(":", 1)[0], p["registered"]) for n, p in procs.items() if n != "scheduler"} == {
        "default-0": ("localhost", "tls://127.0.0.1", True), "default-1": ("ws3", "tls://127.0.0.3", True)}
    argv = ledger_proc(cluster, "scheduler")["argv"]
    assert argv[0] == "ssh" and "--launch scheduler" in argv[-1] and "--scheduler-file" not in argv[-1]
    assert not (cluster.state / "scheduler.json").exists(), "the scheduler file is the remote host's business"
    sched = remote_scheduler(cluster.root)
    assert sched is not None, "a Dask scheduler running on ws2 under its agent"
    assert sorted(p.name for p in (cluster.root / "remote" / "ws2" / "tls").iterdir()) == ["ca.pem", "node-key.pem", "node.pem"]

    run_montecarlo(cluster, "pi.csv")

    # the scheduler dies on its host: the supervisor restarts it there and brings every worker back
    first = sched.pid
    sched.send_signal(signal.SIGKILL)
    wait_for(lambda: ledger_proc(cluster, "scheduler")["restarts"] >= 1, 30, what="the remote scheduler restarted")
    wait_for(lambda: (s := cluster.status())["state"] == "running" and s["scheduler"]["answering"]
             and s["workers_registered"] == 2 and all(p["state"] == "running" for p in s["processes"]),
             60, interval=0.5, what="scheduler and both workers back")
    again = remote_scheduler(cluster.root)
    assert again is not None and again.pid != first
    run_montecarlo(cluster, "pi-again.csv")

    down = cluster.cli("down", check=True)
    assert "stopped" in down.stdout
    assert tagged(cluster.root) == [], "down must leave nothing on any host"
    assert processes_under(cluster.root) == []


def test_remote_scheduler_port_taken_there_fails_up_by_host(cluster, sshd):
    remote_scheduler_yaml(cluster, sshd, workers="  - name: default\n    nthreads: 1\n    at: ws3\n")
    with socket.socket() as s:  # someone already listens on the scheduler's port on ws2
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.2", cluster.port))
        s.listen()
        res = cluster.cli("up")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "'ws2'" in res.stderr and f"port {cluster.port}" in res.stderr and "in use" in res.stderr, res.stderr
    assert tagged(cluster.root) == [] and processes_under(cluster.root) == []
    assert not (cluster.state / "logs" / "scheduler.log").exists(), "nothing may start"
