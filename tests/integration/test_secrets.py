"""Secrets in a group's `env:` stay with the processes that need them (real cluster).

Not on any command line (`ps` shows every user's), not in ledger.json, logs or events,
and the state directory is the user's alone (0700, files 0600).
"""

from __future__ import annotations

import json
import os
import secrets
import stat

import psutil
import pytest

from conftest import processes_under
from clients import client_of

pytestmark = pytest.mark.integration


def all_command_lines() -> str:
    lines = []
    for p in psutil.process_iter(["cmdline"]):
        lines.append("\0".join(p.info["cmdline"] or []))
    return "\n".join(lines)


def files_under(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes and /proc")
def test_group_env_secret_reaches_the_worker_and_nothing_else(cluster):
    secret = "tok-" + secrets.token_hex(16)
    cluster.write(workers=("  - name: default\n    count: 1\n    nthreads: 1\n"
                           f"  - name: keyed\n    count: 1\n    nthreads: 1\n    env: {{SECRET_TOKEN: '{secret}'}}\n"))
    shown = cluster.cli("validate", check=True).stdout
    assert "SECRET_TOKEN=***" in shown and secret not in shown
    shown_json = cluster.cli("validate", "--json", check=True).stdout
    keyed = next(p for p in json.loads(shown_json)["processes"] if p["name"] == "keyed-0")
    assert keyed["env"]["SECRET_TOKEN"] == "***" and secret not in shown_json

    cluster.cli("up", check=True)
    try:
        ledger = cluster.ledger()
        worker = psutil.Process(next(p["pid"] for p in ledger["processes"] if p["name"] == "keyed-0"))
        assert worker.environ()["SECRET_TOKEN"] == secret  # it really has it

        with client_of(cluster, timeout=30) as client:
            seen = client.run(lambda: __import__("os").environ.get("SECRET_TOKEN"))
        assert sorted(map(str, seen.values())) == sorted(["None", secret])  # the keyed group only

        assert secret not in all_command_lines()
        for f in files_under(cluster.state):  # ledger.json, every log, events.jsonl, scheduler.json, ...
            assert secret.encode() not in f.read_bytes(), f
        assert stat.S_IMODE(cluster.state.stat().st_mode) == 0o700
        private = [cluster.state / "ledger.json", cluster.state / "events.jsonl", cluster.state / "control.token",
                   *(cluster.state / "logs").glob("*.log")]
        assert len(private) >= 7  # supervisor, scheduler and two worker logs at least
        for f in private:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert stat.S_IMODE((cluster.state / "logs").stat().st_mode) == 0o700
    finally:
        cluster.cli("down", check=True)
    for f in files_under(cluster.state):
        assert secret.encode() not in f.read_bytes(), f
    assert processes_under(cluster.root) == []


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
def test_a_state_directory_left_open_by_an_older_version_is_tightened(cluster):
    cluster.state.mkdir(parents=True)
    os.chmod(cluster.state, 0o755)
    logs = cluster.state / "logs"
    logs.mkdir()
    old = logs / "default-0.log"
    old.write_text("--- 2025-01-01 00:00:00 start: dask worker\n")
    os.chmod(old, 0o644)
    cluster.cli("up", check=True)
    try:
        assert stat.S_IMODE(cluster.state.stat().st_mode) == 0o700
        assert stat.S_IMODE(old.stat().st_mode) == 0o600
        assert old.read_text().startswith("--- 2025-01-01")  # appended to, not replaced
    finally:
        cluster.cli("down", check=True)


@pytest.mark.skipif(os.name == "nt", reason="POSIX")
def test_a_remote_workers_env_travels_over_its_lifeline_not_a_command_line(cluster, sshd):
    """Over real ssh (a private sshd on 127.0.0.2 plays the host): neither machine's `ps` shows
    a value, yet the remote worker has both its host's and its group's."""
    import sys

    from clusterctl.plan.resolve import resolve
    from clusterctl.plan.specs import worker_spec
    from clusterctl.remote.launch import agent_argv
    from clusterctl.topology import load_config

    group_secret, host_secret = "grp-" + secrets.token_hex(12), "hst-" + secrets.token_hex(12)
    host = sshd.host_yaml("ws2", "127.0.0.2", sys.executable, cluster.root / "remote" / "ws2")
    host += f"    env: {{HOST_TOKEN: '{host_secret}'}}\n"
    cluster.write(workers=("  - name: default\n    nthreads: 1\n    nanny: false\n    at: {ws2: 1}\n"
                           f"    env: {{SECRET_TOKEN: '{group_secret}'}}\n"), extra="hosts:\n" + host)
    cluster.cli("up", check=True)
    try:
        assert cluster.status()["workers_registered"] == 1
        remote = []
        for p in psutil.process_iter(["cwd", "environ", "status"]):
            if (p.info["cwd"] or "").startswith(str(cluster.root / "remote")) and p.info["status"] != psutil.STATUS_ZOMBIE:
                remote.append(p)
        worker = [p for p in remote if (p.info["environ"] or {}).get("SECRET_TOKEN")]
        assert len(worker) == 1, [p.cmdline() for p in remote]
        assert worker[0].info["environ"]["SECRET_TOKEN"] == group_secret
        assert worker[0].info["environ"]["HOST_TOKEN"] == host_secret
        # What runs here is an ssh -W channel to the host's fork server: the environment went in the
        # authenticated request over it. Through an agent, only the keys would be on its command line.
        argv = cluster.ledger()["processes"][1]["argv"]
        assert argv[0] == "ssh" and "-W" in argv, argv
        cfg = load_config(cluster.config)
        spec = worker_spec(cfg, resolve(), cfg.workers[0], 0)
        agent = agent_argv(cfg, spec)[-1]
        assert "--env-key SECRET_TOKEN" in agent and "--env-key HOST_TOKEN" in agent
        assert group_secret not in agent and host_secret not in agent
        cmdlines = all_command_lines()
        assert group_secret not in cmdlines and host_secret not in cmdlines
        for f in files_under(cluster.state):
            data = f.read_bytes()
            assert group_secret.encode() not in data and host_secret.encode() not in data, f
    finally:
        cluster.cli("down", check=True)
    assert processes_under(cluster.root) == []
