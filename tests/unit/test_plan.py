"""Planning is pure: YAML text in, argv out (no processes, no files written)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clusterctl.topology import load_config, parse_config
from clusterctl.errors import ConfigError
from clusterctl.plan.specs import (
    SCHEDULER_PLUGIN,
    TAG_ENV,
    ProcessSpec,
    build_plan,
    cluster_tag,
    connect_host,
    dashboard_url,
    hostport,
    scheduler_address,
    scheduler_spec,
    worker_name,
    worker_spec,
)
from clusterctl.plan.resolve import Launcher

REPO = Path(__file__).resolve().parents[2]
DASK = Launcher(("/venv/bin/dask", "scheduler"), ("/venv/bin/dask", "worker"), "test")


def plan(text: str, tmp_path: Path, launcher: Launcher = DASK, counts=None) -> list[ProcessSpec]:
    cfg = parse_config(text, source=tmp_path / "cluster.yaml")
    return build_plan(cfg, launcher, counts)


def flag(argv, name: str) -> str:
    """The value after a flag, which must appear exactly once."""
    argv = list(argv)
    assert argv.count(name) == 1, (name, argv)
    return argv[argv.index(name) + 1]


def test_default_plan_is_scheduler_then_three_workers(tmp_path):
    specs = plan("name: lab\n", tmp_path)
    assert [s.name for s in specs] == ["scheduler", "default-0", "default-1", "default-2"]
    assert [s.role for s in specs] == ["scheduler", "worker", "worker", "worker"]
    assert [s.group for s in specs] == ["scheduler", "default", "default", "default"]


def test_scheduler_argv(tmp_path):
    sched = plan("name: lab\ntls: {enabled: false}\n", tmp_path)[0]  # plain TCP: the shortest argv
    state = tmp_path.resolve() / ".clusterctl" / "lab"
    assert sched.argv == (
        "/venv/bin/dask", "scheduler",
        "--host", "127.0.0.1",
        "--port", "8786",
        "--dashboard-address", "127.0.0.1:8787",
        "--scheduler-file", str(state / "scheduler.json"),
        "--no-dashboard",
        "--preload", str(SCHEDULER_PLUGIN),
    )
    assert SCHEDULER_PLUGIN.is_file()
    tag = cluster_tag(parse_config("name: lab\n", source=tmp_path / "cluster.yaml"))
    assert sched.env == {"DASK_CLUSTERCTL__LAZY_DASHBOARD": "True", TAG_ENV: tag}
    assert sched.host == "127.0.0.1" and sched.cwd == state
    # the default (issue 22): mutual TLS on loopback too, with the cluster's own CA and encryption required
    tls = plan("name: lab\n", tmp_path)[0]
    assert flag(tls.argv, "--protocol") == "tls" and flag(tls.argv, "--tls-ca-file") == str(state / "tls" / "ca.pem")
    assert flag(tls.argv, "--tls-cert") == str(state / "tls" / "node.pem")
    assert tls.env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"


def test_worker_argv(tmp_path):
    w = plan("name: lab\n", tmp_path)[1]
    state = tmp_path.resolve() / ".clusterctl" / "lab"
    assert w.argv[:3] == ("/venv/bin/dask", "worker", "tls://127.0.0.1:8786")
    assert flag(w.argv, "--name") == "default-0"
    assert flag(w.argv, "--host") == "127.0.0.1"
    assert flag(w.argv, "--dashboard-address") == "127.0.0.1:0"
    assert flag(w.argv, "--local-directory") == str(state / "work")
    assert flag(w.argv, "--memory-limit") == "auto"
    assert flag(w.argv, "--death-timeout") == "60s"
    assert "--no-nanny" in w.argv and "--nthreads" not in w.argv and "--resources" not in w.argv
    assert not w.nanny and not w.dashboard  # the facts on the spec, for health and the fork server


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.5"])
def test_every_process_binds_the_configured_host_explicitly(tmp_path, host):
    specs = plan(f"scheduler:\n  host: {host!r}\nworkers:\n  - count: 2\n", tmp_path)
    for spec in specs:
        assert spec.host == host
        assert flag(spec.argv, "--host") == host
        dash = flag(spec.argv, "--dashboard-address")
        # DASK_NOTES bind trap: ':PORT' binds 0.0.0.0 even with --host 127.0.0.1.
        assert not dash.startswith(":"), dash
        assert dash.rsplit(":", 1)[0].strip("[]") == host, dash
        assert not any(re.fullmatch(r":\d+", a) for a in spec.argv), spec.argv


def test_worker_group_may_bind_its_own_host(tmp_path):
    specs = plan("workers:\n  - name: a\n    host: 127.0.0.2\n  - name: b\n", tmp_path)
    a, b = specs[1], specs[2]
    assert flag(a.argv, "--host") == "127.0.0.2" and flag(a.argv, "--dashboard-address") == "127.0.0.2:0"
    assert a.argv[2] == "tls://127.0.0.1:8786"  # still the scheduler's address
    assert flag(b.argv, "--host") == "127.0.0.1"


def test_ipv6_gets_brackets(tmp_path):
    specs = plan("scheduler:\n  host: '::1'\n", tmp_path)
    sched, w = specs[0], specs[1]
    assert flag(sched.argv, "--host") == "::1"
    assert flag(sched.argv, "--dashboard-address") == "[::1]:8787"
    assert w.argv[2] == "tls://[::1]:8786"
    assert flag(w.argv, "--dashboard-address") == "[::1]:0"
    cfg = parse_config("scheduler:\n  host: '::1'\n")
    assert scheduler_address(cfg) == "tls://[::1]:8786"
    assert dashboard_url(cfg) == "http://[::1]:8787/status"


def test_hostport_and_connect_host():
    assert hostport("127.0.0.1", 8786) == "127.0.0.1:8786"
    assert hostport("::1", 0) == "[::1]:0"
    assert hostport("[::1]", 5) == "[::1]:5"
    assert hostport("localhost", 1) == "localhost:1"
    assert connect_host("0.0.0.0") == "127.0.0.1" and connect_host("::") == "::1"
    assert connect_host("10.0.0.1") == "10.0.0.1"


def test_wide_bind_is_reached_on_loopback(tmp_path):
    cfg = parse_config("insecure: true\nscheduler:\n  host: 0.0.0.0\n")
    assert scheduler_address(cfg) == "tcp://127.0.0.1:8786"
    assert dashboard_url(cfg) == "http://127.0.0.1:8787/status"
    sched, w = build_plan(cfg, DASK)[:2]
    assert flag(sched.argv, "--dashboard-address") == "0.0.0.0:8787"  # asked for, in words
    assert w.argv[2] == "tcp://127.0.0.1:8786"


def test_group_settings_flow_into_argv_and_env(tmp_path):
    specs = plan(
        """
workers:
  - name: gpu
    count: 2
    nthreads: 4
    memory_limit: 4GiB
    resources: {GPU: 2, MEM: 1e9, BIG: 1234567, HALF: 0.5}
    env: {OMP_NUM_THREADS: 1, DEBUG: true}
    nanny: true
""",
        tmp_path,
    )
    w = specs[1]
    assert w.group == "gpu" and w.name == "gpu-0"
    assert flag(w.argv, "--nthreads") == "4"
    assert flag(w.argv, "--memory-limit") == "4GiB"
    # Sorted, and no precision lost ('{:g}' would write 1.23457e+06).
    assert flag(w.argv, "--resources") == "BIG=1234567,GPU=2,HALF=0.5,MEM=1000000000"
    assert "--nanny" in w.argv and "--no-nanny" not in w.argv and w.nanny
    assert w.env == {"OMP_NUM_THREADS": "1", "DEBUG": "true", TAG_ENV: specs[0].env[TAG_ENV],
                     "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    assert all(isinstance(v, str) for v in w.env.values())
    assert specs[2].env == w.env and specs[2].env is not w.env  # each spec owns its env


def test_every_process_carries_the_cluster_tag_and_the_tag_names_the_state(tmp_path):
    a = parse_config("name: lab\nworkers:\n  - env: {CLUSTERCTL_TAG: forged}\n", source=tmp_path / "a" / "cluster.yaml")
    b = parse_config("name: lab\n", source=tmp_path / "b" / "cluster.yaml")
    assert cluster_tag(a) != cluster_tag(b) and cluster_tag(a).startswith("lab.")  # same name, other state dir
    assert cluster_tag(a) == cluster_tag(parse_config("name: lab\n", source=tmp_path / "a" / "cluster.yaml"))
    specs = build_plan(a, DASK)
    assert {s.env[TAG_ENV] for s in specs} == {cluster_tag(a)}  # the group's env cannot forge it


def test_env_values_are_masked_for_display_but_ours_are_shown(tmp_path):
    specs = plan("workers:\n  - env: {SECRET_TOKEN: hunter2, DASK_X: y}\n", tmp_path)
    shown = specs[1].to_dict()["env"]
    assert shown["SECRET_TOKEN"] == "***" and shown["DASK_X"] == "***"
    assert shown[TAG_ENV] == specs[1].env[TAG_ENV]
    assert specs[0].to_dict()["env"]["DASK_CLUSTERCTL__LAZY_DASHBOARD"] == "True"
    assert "hunter2" not in repr([s.to_dict() for s in specs])


@pytest.mark.parametrize("limit, arg", [("0.5", "0.5"), ("0", "0"), ("'512MB'", "512MB"), ("4.0e+9", "4000000000")])
def test_memory_limit_argv(tmp_path, limit, arg):
    w = plan(f"workers:\n  - memory_limit: {limit}\n", tmp_path)[1]
    assert flag(w.argv, "--memory-limit") == arg


def test_timeouts_flow_into_argv(tmp_path):
    specs = plan("scheduler:\n  idle_timeout: 600\ntimeouts:\n  startup: 12.5\n", tmp_path)
    assert flag(specs[0].argv, "--idle-timeout") == "600s"
    assert flag(specs[1].argv, "--death-timeout") == "12.5s"


def test_no_dashboard(tmp_path):
    cfg = parse_config("scheduler:\n  dashboard: false\n")
    sched = build_plan(cfg, DASK)[0]
    assert "--no-dashboard" in sched.argv and not sched.dashboard and not sched.nanny
    # /health still answers on that port: keep it bound to the host explicitly.
    assert flag(sched.argv, "--dashboard-address") == "127.0.0.1:8787"
    assert dashboard_url(cfg) is None
    assert "DASK_CLUSTERCTL__LAZY_DASHBOARD" not in sched.env


def test_dashboard_is_mounted_by_the_preload_not_at_start():
    sched = build_plan(parse_config("name: x\n"), DASK)[0]
    assert "--no-dashboard" in sched.argv  # Bokeh is not imported before the scheduler listens
    assert sched.dashboard  # it serves the pages, mounted later
    assert sched.env["DASK_CLUSTERCTL__LAZY_DASHBOARD"] == "True"  # scheduler_plugin.Dashboard mounts it
    assert flag(sched.argv, "--preload").endswith("scheduler_plugin.py")


def test_counts_override(tmp_path):
    text = "workers:\n  - name: a\n    count: 2\n  - name: b\n    count: 1\n"
    assert [s.name for s in plan(text, tmp_path)] == ["scheduler", "a-0", "a-1", "b-0"]
    assert [s.name for s in plan(text, tmp_path, counts={"a": 4})] == \
        ["scheduler", "a-0", "a-1", "a-2", "a-3", "b-0"]
    assert [s.name for s in plan(text, tmp_path, counts={"a": 0, "b": 2})] == ["scheduler", "b-0", "b-1"]


@pytest.mark.parametrize("counts, words", [({"nope": 1}, "'nope'"), ({"a": -1}, "a=-1"), ({"a": True}, "a=True"),
                                           ({"a": 2000}, "0 to 1024")])
def test_bad_counts(tmp_path, counts, words):
    with pytest.raises(ConfigError) as info:
        plan("workers:\n  - name: a\n", tmp_path, counts=counts)
    assert words in str(info.value) and info.value.exit_code == 2


def test_worker_names():
    assert worker_name("default", 0) == "default-0"
    assert worker_name("gpu", 12) == "gpu-12"


def test_log_paths_are_per_process_under_the_state_dir(tmp_path):
    specs = plan("name: lab\nworkers:\n  - name: a\n    count: 2\n  - name: b\n", tmp_path)
    state = tmp_path.resolve() / ".clusterctl" / "lab"
    assert [s.log_path for s in specs] == [
        state / "logs" / "scheduler.log",
        state / "logs" / "a-0.log",
        state / "logs" / "a-1.log",
        state / "logs" / "b-0.log",
    ]
    assert all(s.cwd == state for s in specs)


def test_log_dir_override(tmp_path):
    specs = plan("name: lab\nlog_dir: logs\n", tmp_path)
    assert specs[1].log_path == tmp_path.resolve() / "logs" / "lab" / "default-0.log"


def test_planning_writes_nothing(tmp_path):
    plan("name: lab\n", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_legacy_and_module_launchers(tmp_path):
    legacy = Launcher(("/old/dask-scheduler",), ("/old/dask-worker",), "legacy")
    specs = plan("name: x\n", tmp_path, launcher=legacy)
    assert specs[0].argv[:2] == ("/old/dask-scheduler", "--host")
    assert specs[1].argv[:2] == ("/old/dask-worker", "tls://127.0.0.1:8786")
    module = Launcher(("/py", "-m", "distributed.cli.dask_scheduler"), ("/py", "-m", "distributed.cli.dask_worker"), "m")
    specs = plan("name: x\n", tmp_path, launcher=module)
    assert specs[1].argv[:4] == ("/py", "-m", "distributed.cli.dask_worker", "tls://127.0.0.1:8786")


def test_spec_helpers_match_build_plan(tmp_path):
    cfg = parse_config("name: x\n", source=tmp_path / "cluster.yaml")
    specs = build_plan(cfg, DASK)
    assert scheduler_spec(cfg, DASK) == specs[0]
    assert worker_spec(cfg, DASK, cfg.workers[0], 2) == specs[3]
    d = specs[1].to_dict()
    assert d["name"] == "default-0" and d["role"] == "worker" and d["argv"] == list(specs[1].argv)
    assert d["log"].endswith("default-0.log")


def test_dask_accepts_every_planned_flag(tmp_path):
    """Parse the planned argv with dask's own click commands: spellings and types are right."""
    from distributed.cli.dask_scheduler import main as dask_scheduler
    from distributed.cli.dask_worker import main as dask_worker

    from clusterctl.runtime import tls

    cfg = parse_config(
        "scheduler:\n  host: '::1'\n  dashboard: false\n  idle_timeout: 30\n"
        "workers:\n  - nthreads: 2\n    memory_limit: 1GiB\n    resources: {GPU: 1, MEM: 1e9}\n    nanny: false\n",
        source=tmp_path / "cluster.yaml",
    )
    files = tls.ensure(cfg)  # dask checks that the TLS files it is given exist
    specs = build_plan(cfg, DASK)
    sched = dask_scheduler.make_context("dask scheduler", list(specs[0].argv[2:]))
    assert sched.params["host"] == "::1" and sched.params["dashboard"] is False
    assert sched.params["dashboard_address"] == "[::1]:8787" and sched.params["protocol"] == "tls"
    assert sched.params["tls_ca_file"] == str(files.ca) and sched.params["tls_key"] == str(files.node_key)
    worker = dask_worker.make_context("dask worker", list(specs[1].argv[2:]))
    assert worker.params["scheduler"] == "tls://[::1]:8786" and worker.params["name"] == "default-0"
    assert worker.params["nthreads"] == 2 and worker.params["nanny"] is False
    # The same parsing dask_worker.main does with --resources.
    pairs = dict(p.split("=") for p in worker.params["resources"].replace(",", " ").split())
    assert {k: float(v) for k, v in pairs.items()} == {"GPU": 1.0, "MEM": 1e9}


def test_repo_cluster_yaml_plans_the_walkthrough():
    cfg = load_config(REPO / "cluster.yaml")
    specs = build_plan(cfg, DASK)
    assert [s.name for s in specs] == ["scheduler", "default-0", "default-1", "default-2"]
    assert flag(specs[0].argv, "--port") == "8786"
    assert flag(specs[0].argv, "--dashboard-address") == "127.0.0.1:8787"
    assert all(s.argv[2] == "tls://127.0.0.1:8786" for s in specs[1:])
    assert scheduler_address(cfg) == "tls://127.0.0.1:8786"
    assert dashboard_url(cfg) == "http://127.0.0.1:8787/status"
