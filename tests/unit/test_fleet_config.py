"""Hosts and placement in cluster.yaml, and the argv that reaches them over SSH (pure)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from clusterctl.topology import parse_config
from clusterctl.errors import ConfigError
from clusterctl.remote.launch import agent_argv
from clusterctl.plan.specs import TAG_ENV, build_plan, cluster_tag, preamble, scheduler_address
from clusterctl.plan.ssh import control_dir, ssh_argv
from clusterctl.plan.resolve import Launcher

DASK = Launcher(("/venv/bin/dask", "scheduler"), ("/venv/bin/dask", "worker"), "test")
HOSTS = (
    "hosts:\n"
    "  - name: ws2\n    address: 127.0.0.2\n    port: 2222\n    user: me\n    identity_file: /k/id\n"
    "    python: /opt/env/bin/python\n    env: {OMP_NUM_THREADS: 1}\n    ssh_options: [ConnectTimeout=3]\n"
    "  - name: ws3\n    address: 127.0.0.3\n"
)


def cfg_of(text: str, tmp_path: Path):
    return parse_config(text, source=tmp_path / "cluster.yaml")


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_single_host_file_is_unchanged_in_meaning(tmp_path):
    cfg = cfg_of("name: lab\n", tmp_path)
    assert cfg.hosts == [] and cfg.remote_hosts() == [] and cfg.tls_enabled  # TLS on loopback too (issue 22)
    assert all(not s.remote and s.at == "localhost" for s in build_plan(cfg, DASK))
    assert scheduler_address(cfg) == "tls://127.0.0.1:8786"
    assert scheduler_address(cfg_of("name: lab\ntls: {enabled: false}\n", tmp_path)) == "tcp://127.0.0.1:8786"


def test_counts_per_host_give_the_group_size_and_names(tmp_path):
    cfg = cfg_of(HOSTS + "workers:\n  - name: a\n    at: {ws2: 2, ws3: 1}\n  - name: b\n", tmp_path)
    assert cfg.workers[0].count == 3 and cfg.remote_hosts() == ["ws2", "ws3"]
    specs = build_plan(cfg, DASK)
    assert [(s.name, s.at, s.host, s.remote) for s in specs] == [
        ("scheduler", "localhost", "127.0.0.1", False),
        ("a-0", "ws2", "127.0.0.2", True), ("a-1", "ws2", "127.0.0.2", True), ("a-2", "ws3", "127.0.0.3", True),
        ("b-0", "localhost", "127.0.0.1", False),
    ]
    # scaled past the placement: round-robin over its hosts
    assert cfg.workers[0].placement(5) == ["ws2", "ws2", "ws3", "ws2", "ws3"]


def test_remote_argv_is_ssh_then_agent_then_dask(tmp_path):
    cfg = cfg_of(HOSTS + "tls:\n  enabled: true\nworkers:\n  - name: a\n    at: ws2\n    env: {X: y}\n", tmp_path)
    spec = build_plan(cfg, DASK)[1]
    # The spec says what runs there (that host resolves `dask`); the agent transport builds the ssh.
    assert spec.argv[:3] == ("dask", "worker", "tls://127.0.0.1:8786") and spec.argv[2:] == spec.remote_args
    argv = list(agent_argv(cfg, spec))
    dest = argv.index("--")
    assert argv[:2] == ["ssh", "-T"] and argv[dest + 1] == "127.0.0.2"
    opts = argv[:dest]
    for o in ("BatchMode=yes", "ControlMaster=auto", f"ControlPath={control_dir(cfg)}/%C", "ConnectTimeout=3"):
        assert o in opts
    assert opts[opts.index("-p") + 1] == "2222" and opts[opts.index("-i") + 1] == "/k/id" and opts[opts.index("-l") + 1] == "me"
    remote = shlex.split(argv[-1])
    assert remote[:3] == ["/opt/env/bin/python", "-m", "clusterctl.remote.agent"]
    assert remote[remote.index("--tag") + 1] == cluster_tag(cfg) and remote[remote.index("--launch") + 1] == "worker"
    # keys on the command line, values over the agent's stdin: `ps` never shows them
    assert "--env" not in remote
    want = {"OMP_NUM_THREADS": "1", "X": "y", "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True", "PYTHONUNBUFFERED": "1"}
    assert [remote[i + 1] for i, a in enumerate(remote) if a == "--env-key"] == sorted(want)
    assert spec.remote_env == want and spec.preamble() == preamble(want)
    assert spec.preamble().endswith(b"\n") and spec.preamble().count(b"\n") == 1
    dask = remote[remote.index("--") + 1:]
    assert dask[0] == "tls://127.0.0.1:8786" and dask[dask.index("--host") + 1] == "127.0.0.2"
    assert dask[dask.index("--tls-cert") + 1] == "tls/node.pem" and dask[dask.index("--protocol") + 1] == "tls"
    assert dask[dask.index("--local-directory") + 1] == "work"
    # the environment travels to the remote host, not to the local ssh (which carries the tag only)
    assert spec.env == {TAG_ENV: cluster_tag(cfg)}
    assert agent_argv(cfg, spec) == agent_argv(cfg, build_plan(cfg, DASK)[1])  # deterministic


def test_no_env_value_reaches_any_command_line(tmp_path):
    secret = "s3cr3t-value-42"
    cfg = cfg_of(HOSTS.replace("{OMP_NUM_THREADS: 1}", f"{{HOST_TOKEN: {secret}x}}") + REMOTE_SCHEDULER.split(HOSTS)[1]
                 + f"workers:\n  - name: a\n    at: {{ws2: 1, ws3: 1, localhost: 1}}\n    env: {{SECRET_TOKEN: {secret}}}\n",
                 tmp_path)
    specs = build_plan(cfg, DASK)
    assert any(s.remote for s in specs) and any(not s.remote for s in specs)
    for s in specs:
        assert secret not in " ".join(s.argv), s.name
        if s.remote:
            assert secret not in " ".join(agent_argv(cfg, s)), s.name
        assert secret not in repr(s.to_dict()), s.name
    remote = [s for s in specs if s.remote and s.role == "worker"]
    assert all(s.remote_env["SECRET_TOKEN"] == secret for s in remote)
    assert specs[0].remote_env["HOST_TOKEN"] == secret + "x"  # the scheduler on ws2 gets its host's env
    local = next(s for s in specs if not s.remote and s.role == "worker")
    assert local.env["SECRET_TOKEN"] == secret and local.preamble() is None


def test_ssh_argv_leaves_unset_options_to_ssh_config(tmp_path):
    cfg = cfg_of(HOSTS, tmp_path)
    argv = ssh_argv(cfg.host("ws3"), Path("/c"))
    assert "-p" not in argv and "-l" not in argv and "-i" not in argv and argv[-2:] == ["--", "127.0.0.3"]


def test_tls_flags_on_local_processes(tmp_path):
    cfg = cfg_of("tls:\n  enabled: true\n", tmp_path)
    sched, worker = build_plan(cfg, DASK)[:2]
    tls_dir = cfg.state_path / "tls"
    for spec in (sched, worker):
        argv = list(spec.argv)
        assert argv[argv.index("--tls-ca-file") + 1] == str(tls_dir / "ca.pem")
        assert argv[argv.index("--tls-key") + 1] == str(tls_dir / "node-key.pem")
        assert spec.env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    assert worker.argv[2] == "tls://127.0.0.1:8786"


@pytest.mark.parametrize(
    "text, words",
    [
        (HOSTS + "workers:\n  - at: ws4\n", ["workers[0].at", "'ws4' is not a host", "did you mean 'ws3'", "known hosts: localhost, ws2, ws3"]),
        (HOSTS + "workers:\n  - at: {ws2: 1, wss3: 1}\n", ["workers[0].at.wss3", "did you mean 'ws3'"]),
        (HOSTS + "scheduler:\n  at: nowhere\n", ["scheduler.at", "'nowhere' is not a host"]),
        (HOSTS + "  - name: ws4\n    address: 127.0.0.2\n    port: 2222\n", ["hosts[2].address", "also the address of host 'ws2'"]),
        (HOSTS + "  - name: ws2\n    address: 127.0.0.9\n", ["hosts[2].name", "already the name of hosts[0]"]),
        (HOSTS + "  - name: ws4\n    adress: x\n", ["hosts[2].adress", "did you mean 'address'"]),
        (HOSTS + "workers:\n  - at: {ws2: 2}\n    count: 3\n", ["workers[0].count", "differs from the 2 workers placed"]),
        (HOSTS + "workers:\n  - at: {ws2: 0}\n", ["workers[0].at", "ws2: 0 workers"]),
        (HOSTS + "workers:\n  - on: ws2\n", ["key 'on' is not text", "`at:`"]),
        ("hosts:\n  - name: ws\n    address: 10.0.0.5\nworkers:\n  - at: ws\n", ["scheduler.host", "out of reach of workers on host 'ws'"]),
        ("hosts:\n  - name: ws\n    address: '-oProxyCommand=x'\n", ["hosts[0].address", "not a host address"]),
        ("hosts:\n  - name: ws\n    address: a\n    ssh_options: ['-v']\n", ["hosts[0].ssh_options", "Key=Value"]),
        (HOSTS + "scheduler:\n  at: ws2\n  port: 0\n", ["scheduler.port", "0 (any free port)", "host 'ws2'", "fixed port such as 8786"]),
        (HOSTS + "scheduler:\n  at: ws2\n  dashboard_port: 0\n", ["scheduler.dashboard_port", "fixed port such as 8787"]),
        (HOSTS + "scheduler:\n  at: ws2\n  host: 0.0.0.0\ninsecure: true\n", ["scheduler.host", "no address the head can connect to", "127.0.0.2"]),
        ("hosts:\n  - name: ws\n    address: 10.0.0.5\nscheduler:\n  at: ws\n  host: 127.0.0.1\n",
         ["scheduler.host", "loopback on host 'ws'", "drop `host:`", "10.0.0.5"]),
        ("hosts:\n  - name: ws\n    address: 10.0.0.5\nscheduler:\n  at: ws\nworkers:\n  - count: 2\n",
         ["workers[0].host", "scheduler on host 'ws' (10.0.0.5)", "set `host:`"]),
        ("hosts:\n  - name: ws\n    address: me@ws\nscheduler:\n  at: ws\n", ["hosts[0].address", "set `bind:`"]),
    ],
)
def test_fleet_errors_name_field_value_and_fix(text, words):
    msg = error(text)
    for w in words:
        assert w in msg, msg


def test_remote_hosts_beyond_loopback_turn_tls_on(tmp_path):
    cfg = cfg_of("hosts:\n  - name: ws\n    address: 10.0.0.5\nscheduler:\n  host: 10.0.0.1\nworkers:\n  - at: ws\n", tmp_path)
    assert cfg.exposed and cfg.tls_enabled and cfg.warnings() == []
    assert {"10.0.0.1", "10.0.0.5"} <= cfg.tls_names()
    opted_out = cfg_of("insecure: true\nhosts:\n  - name: ws\n    address: 10.0.0.5\nscheduler:\n  host: 10.0.0.1\n"
                       "workers:\n  - at: ws\n", tmp_path)
    assert not opted_out.tls_enabled and "plain TCP on 10.0.0.1, 10.0.0.5" in opted_out.warnings()[0]


def test_localhost_needs_no_entry_and_no_ssh(tmp_path):
    cfg = cfg_of("workers:\n  - at: localhost\n    count: 2\n", tmp_path)
    assert cfg.remote_hosts() == [] and not cfg.host("localhost").remote
    local_alias = cfg_of("hosts:\n  - name: me\n    address: 127.0.0.1\nworkers:\n  - at: me\n", tmp_path)
    assert local_alias.remote_hosts() == []


# -- a scheduler on another host -------------------------------------------------------------

REMOTE_SCHEDULER = HOSTS + "scheduler:\n  at: ws2\n  port: 9786\n  dashboard_port: 9787\n"


def test_remote_scheduler_binds_its_host_and_workers_connect_there(tmp_path):
    cfg = cfg_of(REMOTE_SCHEDULER + "tls:\n  enabled: true\nworkers:\n  - at: {localhost: 1, ws3: 1}\n", tmp_path)
    assert cfg.scheduler_remote and cfg.scheduler.host == "127.0.0.2"
    assert cfg.remote_hosts() == ["ws2", "ws3"]  # TLS files go there, `down` sweeps there
    assert scheduler_address(cfg) == "tls://127.0.0.2:9786"
    sched, local, remote = build_plan(cfg, DASK)
    assert (sched.at, sched.host, sched.remote, sched.env) == ("ws2", "127.0.0.2", True, {TAG_ENV: cluster_tag(cfg)})
    assert sched.argv[:2] == ("dask", "scheduler")
    argv = list(agent_argv(cfg, sched))
    assert argv[:2] == ["ssh", "-T"] and argv[argv.index("--") + 1] == "127.0.0.2"
    agent = shlex.split(argv[-1])
    assert agent[:3] == ["/opt/env/bin/python", "-m", "clusterctl.remote.agent"]
    assert agent[agent.index("--launch") + 1] == "scheduler" and agent[agent.index("--tag") + 1] == cluster_tag(cfg)
    assert {"OMP_NUM_THREADS", "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "PYTHONUNBUFFERED"} \
        <= {agent[i + 1] for i, a in enumerate(agent) if a == "--env-key"}
    assert sched.remote_env["OMP_NUM_THREADS"] == "1" and "--env" not in agent
    dask = agent[agent.index("--") + 1:]
    assert dask[:6] == ["--host", "127.0.0.2", "--port", "9786", "--dashboard-address", "127.0.0.2:9787"]
    # the head's file path means nothing there: the preload goes by module name; no scheduler file
    assert dask[dask.index("--preload") + 1] == "clusterctl.runtime.scheduler_plugin"
    assert "--scheduler-file" not in dask and not any(str(tmp_path) in a for a in dask)
    assert dask[dask.index("--tls-cert") + 1] == "tls/node.pem"
    # every worker, on the head or elsewhere, connects to the scheduler's host
    assert local.argv[2] == "tls://127.0.0.2:9786"
    assert (local.remote, local.host) == (False, "127.0.0.1")  # loopback fleet: the head binds loopback
    assert remote.argv[2] == "tls://127.0.0.2:9786"
    there = shlex.split(agent_argv(cfg, remote)[-1])
    assert there[there.index("--") + 1] == "tls://127.0.0.2:9786"


def test_remote_scheduler_prefers_bind_and_honours_an_explicit_host(tmp_path):
    text = ("hosts:\n  - name: ws\n    address: ws-alias\n    bind: 10.0.0.5\nscheduler:\n  at: ws\n"
            "workers:\n  - at: ws\n  - name: here\n    host: 10.0.0.1\n")
    cfg = cfg_of(text, tmp_path)
    assert cfg.scheduler.host == "10.0.0.5" and cfg.tls_enabled  # beyond loopback: TLS by default
    assert cfg.binds()[0] == (("hosts", 0, "bind"), "10.0.0.5")
    assert {"10.0.0.5", "10.0.0.1", "ws-alias"} <= cfg.tls_names()
    sched, w, here = build_plan(cfg, DASK)
    ssh = agent_argv(cfg, sched)
    assert ssh[-2] == "ws-alias" and "--host 10.0.0.5" in ssh[-1]
    assert here.argv[2] == "tls://10.0.0.5:8786" and here.host == "10.0.0.1"
    explicit = cfg_of(text.replace("  at: ws\n", "  at: ws\n  host: 10.0.0.6\n", 1), tmp_path)
    assert explicit.scheduler.host == "10.0.0.6" and explicit.binds()[0][0] == ("scheduler", "host")


def test_plain_tcp_remote_scheduler_beyond_loopback_is_refused_at_its_host_line(tmp_path):
    text = "hosts:\n  - name: ws\n    address: 10.0.0.5\nscheduler:\n  at: ws\ntls:\n  enabled: false\nworkers:\n  - at: ws\n"
    msg = error(text)
    assert "line 3" in msg and "hosts[0].address" in msg and "'10.0.0.5' is reachable beyond this machine" in msg, msg


def test_scheduler_on_a_local_alias_stays_local(tmp_path):
    cfg = cfg_of("hosts:\n  - name: me\n    address: 127.0.0.1\nscheduler:\n  at: me\n  port: 0\n", tmp_path)
    assert not cfg.scheduler_remote and cfg.scheduler.host == "127.0.0.1"
    sched = build_plan(cfg, DASK)[0]
    assert not sched.remote and "--scheduler-file" in sched.argv


def test_whether_a_remote_worker_serves_pages_travels_as_a_fact_not_in_its_argv(tmp_path):
    """The host's fork server imports Bokeh for workers with pages only; both routes say so outright."""
    from clusterctl.remote import agent, direct
    from clusterctl.remote.forked import _preload

    for dashboard, flag in (("true", False), ("false", True)):
        cfg = cfg_of(HOSTS + f"workers:\n  - name: a\n    at: ws2\n    dashboard: {dashboard}\n", tmp_path)
        spec = build_plan(cfg, DASK)[1]
        remote = shlex.split(agent_argv(cfg, spec)[-1])
        agent_part = remote[:remote.index("--")]
        assert ("--no-dashboard-pages" in agent_part) is flag
        assert agent.parse(remote[3:]).dashboard is not flag
        assert direct.start_request(cfg, spec)["dashboard"] is not flag
    worker = ["/env/bin/dask", "worker", "tcp://h:1"]
    assert "distributed.dashboard.worker" in _preload(worker, True)
    assert "distributed.dashboard.worker" not in _preload(worker, False)
    assert "distributed.dashboard.worker" not in _preload(["/env/bin/dask", "scheduler"], True)
