"""apply's planner (supervisor/apply.py): the running topology, the file's and the current sizes in,
one change per line out. Pure, so every rule is a pair of YAML snippets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterctl.supervisor.apply import WORKER_SETTINGS, plan
from clusterctl.topology import parse_config

BASE = "name: x\nscheduler:\n"
PORTS = "  port: 8786\n  dashboard_port: 8787\n"
HOSTS = ("hosts:\n  - name: ws2\n    address: 127.0.0.2\n    ssh: true\n"
         "  - name: ws3\n    address: 127.0.0.3\n    ssh: true\n")
DEFAULT = "  - name: default\n    count: 2\n    nthreads: 1\n"


def cfg(workers: str = DEFAULT, extra: str = "", sched: str = PORTS, name: str = "x"):
    return parse_config(BASE.replace("x", name) + sched + extra + "workers:\n" + workers)


def changes(old, new, counts=None):
    counts = counts if counts is not None else {g.name: g.count for g in old.workers}
    return plan(old, new, counts)


def test_the_same_topology_plans_nothing():
    p = changes(cfg(), cfg())
    assert p.changes == () and p.lines() == [] and p.refusal(False) is None


def test_a_count_change_scales_from_the_current_size():
    p = changes(cfg(), cfg("  - name: default\n    count: 4\n    nthreads: 1\n"))
    assert p.lines() == ["~ group default: count 2 -> 4: start 2 workers"]
    (c,) = p.changes
    assert (c.action, c.group, c.count) == ("scale", "default", 4)
    p = changes(cfg(), cfg("  - name: default\n    count: 1\n    nthreads: 1\n"))
    assert p.lines() == ["~ group default: count 2 -> 1: retire 1 worker gracefully"]


def test_a_size_set_with_scale_is_kept_while_the_files_count_is_unchanged():
    """As kubectl apply's three-way merge: a field the file did not change keeps its live value."""
    assert changes(cfg(), cfg(), {"default": 5}).changes == ()
    p = changes(cfg(), cfg("  - name: default\n    count: 3\n    nthreads: 1\n"), {"default": 5})
    assert p.lines() == ["~ group default: count 5 -> 3: retire 2 workers gracefully"]
    assert changes(cfg(), cfg("  - name: default\n    count: 5\n    nthreads: 1\n"), {"default": 5}).changes == ()


def test_a_new_group_starts_and_a_removed_group_retires_its_current_workers():
    p = changes(cfg(DEFAULT + "  - name: old\n    count: 1\n"),
                cfg(DEFAULT + "  - name: gpu\n    count: 2\n    nthreads: 2\n    memory_limit: 2GiB\n"
                              "    resources: {GPU: 1}\n"),
                {"default": 2, "old": 3})
    assert p.lines() == ["+ group gpu: start 2 workers (nthreads 2, memory_limit 2GiB, resources {GPU: 1})",
                         "- group old: retire 3 workers gracefully (results move first)"]
    assert [(c.action, c.group, c.count) for c in p.changes] == [("start", "gpu", 2), ("retire", "old", 0)]


def test_a_new_adaptive_group_starts_at_its_minimum():
    p = changes(cfg(), cfg(DEFAULT + "  - name: burst\n    adapt: {minimum: 2, maximum: 6}\n"))
    assert p.lines() == ["+ group burst: start 2 workers, adaptive between 2 and 6 (memory_limit auto)"]
    assert p.changes[0].count == 2


WORKER_CASES = [
    ("nthreads", "1", "2", "nthreads 1 -> 2"),
    ("memory_limit", "auto", "2GiB", "memory_limit auto -> 2GiB"),
    ("resources", "{GPU: 1}", "{GPU: 2}", "resources {GPU: 1} -> {GPU: 2}"),
    ("env", "{A: '1'}", "{A: '2', B: x}", "env +B ~A"),
    ("nanny", "false", "true", "nanny false -> true"),
    ("dashboard", "false", "true", "dashboard false -> true"),
    ("host", "127.0.0.1", "localhost", "host 127.0.0.1 -> localhost"),
]


def test_every_worker_setting_is_covered_below():
    assert [case[0] for case in WORKER_CASES] == list(WORKER_SETTINGS)


@pytest.mark.parametrize("setting, before, after, shown", WORKER_CASES)
def test_changed_worker_settings_replace_the_group_by_a_rolling_restart(setting, before, after, shown):
    group = "  - name: default\n    count: 2\n    {}: {}\n"
    p = changes(cfg(group.format(setting, before)), cfg(group.format(setting, after)), {"default": 3})
    assert p.lines() == [f"~ group default: {shown}: rolling restart of 3 workers (one at a time, results move first)"]
    (c,) = p.changes
    assert (c.action, c.group, c.count, c.settings) == ("roll", "default", 3, (setting,))


def test_env_values_never_reach_the_plan():
    p = changes(cfg("  - name: default\n    env: {TOKEN: s3cret-old}\n"),
                cfg("  - name: default\n    env: {TOKEN: s3cret-new, GONE_NOT: x}\n"))
    assert "s3cret" not in " ".join(p.lines()) and "env +GONE_NOT ~TOKEN" in p.lines()[0]


def test_a_count_and_a_setting_change_together_scale_then_roll_the_workers_that_stay():
    p = changes(cfg("  - name: default\n    count: 4\n    nthreads: 1\n"),
                cfg("  - name: default\n    count: 2\n    nthreads: 2\n"))
    assert [(c.action, c.count) for c in p.changes] == [("scale", 2), ("roll", 2)]
    p = changes(cfg(), cfg("  - name: default\n    count: 5\n    nthreads: 2\n"))
    assert [(c.action, c.count) for c in p.changes] == [("scale", 5), ("roll", 2)], "new workers start new"


def test_restart_policies_and_adapt_change_in_place():
    p = changes(cfg(), cfg(DEFAULT + "    restart: {max_retries: 9, policy: on-failure}\n"))
    assert p.lines() == ["~ group default: restart.policy always -> on-failure; restart.max_retries 5 -> 9 (in place)"]
    assert p.changes[0].action == "in-place" and p.changes[0].settings == ("restart",)
    adaptive = "  - name: default\n    nthreads: 1\n    adapt: {minimum: 1, maximum: 4}\n"
    p = changes(cfg(), cfg(adaptive))
    assert [(c.action, c.settings) for c in p.changes] == [("in-place", ("adapt",))]
    assert "fixed -> adaptive between 1 and 4" in p.lines()[0]
    p = changes(cfg(adaptive), cfg(adaptive.replace("maximum: 4", "maximum: 8")), {"default": 3})
    assert "adaptive -> adaptive between 1 and 8" in p.lines()[0] and len(p.changes) == 1
    p = changes(cfg(adaptive), cfg("  - name: default\n    count: 2\n    nthreads: 1\n"), {"default": 4})
    assert p.lines() == ["~ group default: adapt off: fixed at 2 (in place)",
                         "~ group default: count 4 -> 2: retire 2 workers gracefully"]


def test_an_adaptive_groups_count_is_daskss_not_the_files():
    adaptive = "  - name: default\n    count: {}\n    adapt: {{minimum: 1, maximum: 4}}\n"
    assert changes(cfg(adaptive.format(1)), cfg(adaptive.format(3)), {"default": 2}).changes == ()


@pytest.mark.parametrize("key, value", [
    ("port", 9000), ("dashboard_port", 9001), ("host", "localhost"), ("dashboard", "false"), ("idle_timeout", 60),
])
def test_a_scheduler_setting_restarts_everything_and_is_refused_without_allow_restart(key, value):
    old = cfg()
    new = cfg(sched="".join(line + "\n" for line in PORTS.splitlines() if not line.startswith(f"  {key}:"))
              + f"  {key}: {value}\n")
    p = changes(old, new)
    assert [c.action for c in p.changes] == ["restart"] and p.restart
    assert p.lines()[0].startswith(f"~ scheduler.{key}: ") and "restarts the scheduler and every worker" in p.lines()[0]
    refusal = p.refusal(False)
    assert refusal.startswith(f"apply refused: scheduler.{key} changed: the scheduler must restart")
    assert "--allow-restart" in refusal and "\n" not in refusal
    assert p.refusal(True) is None


def test_a_port_written_0_matches_the_running_port():
    assert changes(cfg(), cfg(sched="  port: 0\n  dashboard_port: 0\n")).changes == ()


def test_worker_setting_changes_restart_with_the_scheduler_instead_of_rolling():
    p = changes(cfg(), cfg("  - name: default\n    count: 2\n    nthreads: 3\n", sched="  port: 9000\n"))
    assert [c.action for c in p.changes] == ["restart", "roll"]
    assert p.lines()[1].endswith("restarted with the scheduler, with the new settings")


def test_the_schedulers_restart_policy_changes_in_place():
    p = changes(cfg(), cfg(sched=PORTS + "  restart: {backoff_max: 5}\n"))
    assert p.lines() == ["~ scheduler.restart: restart.backoff_max 30 -> 5 (in place)"] and not p.restart


@pytest.mark.parametrize("extra, subject", [
    ("state_dir: elsewhere\n", "state_dir"),
    ("log_dir: logs\n", "log_dir"),
    ("python: /opt/py/bin/python\n", "python"),
    ("bin_dir: /opt/py/bin\n", "bin_dir"),
])
def test_what_a_running_cluster_cannot_take_is_refused_even_with_allow_restart(extra, subject):
    p = changes(cfg(), cfg(extra=extra))
    assert [c.action for c in p.changes] == ["refused"]
    refusal = p.refusal(True)
    assert refusal.startswith(f"apply refused: {subject} changed: ") and "`clusterctl down`" in refusal


def test_a_new_name_is_a_new_cluster():
    p = changes(cfg(), cfg(name="y"))
    assert p.lines() == ["~ name: x -> y"] and "it is a new cluster" in p.refusal(True)


def test_tls_on_a_local_cluster_restarts_it_and_on_a_fleet_is_refused():
    p = changes(cfg(extra="tls: {enabled: false}\n"), cfg())
    assert p.lines() == ["~ tls: TLS off -> on: restarts the scheduler and every worker"] and p.restart
    far = DEFAULT + "  - name: far\n    at: ws2\n"
    p = changes(cfg(far, HOSTS + "tls: {enabled: false}\n"), cfg(far, HOSTS))
    assert [c.action for c in p.changes] == ["refused"] and "TLS files reach other hosts" in p.refusal(True)


@pytest.mark.parametrize("extra, line", [
    ("timeouts: {startup: 90}\n", "~ timeouts.startup: 60 -> 90 s (in place, from the next start or stop)"),
    ("max_workers: 64\n", "~ max_workers: 4096 -> 64 (in place)"),
    ("launch: sequential\n", "~ launch: concurrent -> sequential (in place)"),
    ("versions: warn\n", "~ versions: strict -> warn (in place)"),
])
def test_cluster_wide_settings_change_in_place(extra, line):
    p = changes(cfg(), cfg(extra=extra))
    assert p.lines() == [line] and p.refusal(False) is None


def test_a_size_kept_from_scale_beyond_a_new_max_workers_is_refused():
    p = changes(cfg(), cfg(extra="max_workers: 8\n"), {"default": 9})
    assert "9 workers in all is more than max_workers, 8" in p.refusal(True)


def test_hosts_in_use_cannot_change_and_unused_ones_can():
    far = DEFAULT + "  - name: far\n    at: ws2\n"
    p = changes(cfg(far, HOSTS), cfg(far, HOSTS.replace("127.0.0.2", "127.0.0.9")))
    assert p.lines() == ["~ hosts[ws2]: changed"] and "hosts are prepared at `up`" in p.refusal(True)
    p = changes(cfg(far, HOSTS), cfg(far, HOSTS.replace("127.0.0.3", "127.0.0.8")))
    assert p.lines() == ["~ hosts[ws3]: changed (nothing runs there: in place)"] and p.refusal(False) is None


def test_a_group_on_a_host_not_prepared_at_up_is_refused():
    p = changes(cfg(DEFAULT, HOSTS), cfg(DEFAULT + "  - name: far\n    at: ws3\n", HOSTS))
    assert p.lines() == ["+ group far: on ws3"] and "ws3 was not prepared at `up`" in p.refusal(True)
    far = DEFAULT + "  - name: far\n    at: {}\n"
    p = changes(cfg(far.format("ws2"), HOSTS), cfg(far.format("ws3"), HOSTS))
    assert "ws3 was not prepared at `up`" in p.refusal(True)


def test_a_placement_change_on_prepared_hosts_rolls_onto_the_new_hosts():
    far = DEFAULT + "  - name: far\n    at: {}\n"
    p = changes(cfg(far.format("ws2"), HOSTS), cfg(far.format("localhost"), HOSTS))
    (c,) = p.changes
    assert c.action == "roll" and c.settings == ("at",) and "at ws2 -> localhost: rolling restart of 1 worker" in c.line
    grow = "  - name: default\n    at: {{localhost: {}}}\n"
    p = changes(cfg(grow.format(2)), cfg(grow.format(3)))
    assert [c.action for c in p.changes] == ["scale"], "more workers on the same hosts replace none"


def test_plan_lines_carry_terraform_markers():
    p = changes(cfg(DEFAULT + "  - name: old\n"), cfg("  - name: default\n    count: 3\n    nthreads: 1\n"
                                                       "  - name: new\n"))
    assert [line[:2] for line in p.lines()] == ["~ ", "+ ", "- "]


names = st.sampled_from(["default", "gpu", "cpu.big", "a-1"])
groups = st.lists(st.tuples(names, st.integers(1, 5), st.sampled_from([None, 1, 2]), st.booleans()),
                  min_size=1, max_size=3, unique_by=lambda t: t[0])


def render(gs) -> str:
    return "".join(f"  - name: {n}\n    count: {c}\n" + (f"    nthreads: {t}\n" if t else "")
                   + ("    nanny: true\n" if nanny else "") for n, c, t, nanny in gs)


@settings(max_examples=150, deadline=None, database=None)
@given(old=groups, new=groups)
def test_any_two_topologies_plan_one_line_per_change_and_an_unchanged_one_plans_nothing(old, new):
    a, b = cfg(render(old)), cfg(render(new))
    assert changes(a, a).changes == ()
    p = changes(a, b)
    assert all(line[:2] in ("+ ", "- ", "~ ") and "\n" not in line for line in p.lines())
    assert p.refusal(False) is None, "group edits never need a restart"
    before, after = {n for n, *_ in old}, {n for n, *_ in new}
    assert {c.group for c in p.of("start")} == after - before
    assert {c.group for c in p.of("retire")} == before - after
    sizes = {g.name: g.count for g in b.workers}
    for c in p.of("scale"):
        assert c.count == sizes[c.group]


def test_a_port_written_0_keeps_the_running_ports_and_a_taken_new_port_is_refused_before_anything_stops():
    import socket

    from clusterctl.errors import ClusterError
    from clusterctl.supervisor.applying import check_ports, keep_ports

    running = cfg()
    kept = keep_ports(cfg(sched="  port: 0\n  dashboard_port: 0\n"), running)
    assert (kept.scheduler.port, kept.scheduler.dashboard_port) == (8786, 8787)
    assert keep_ports(running, running) is running
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(ClusterError, match=f"scheduler port 127.0.0.1:{taken} is already in use.*nothing was changed"):
            check_ports(running, cfg(sched=f"  port: {taken}\n  dashboard_port: 8787\n"))
    check_ports(running, running)  # its own ports are the running scheduler's: not "taken"


def test_a_gpus_change_is_refused_in_one_line():
    p = changes(cfg("  - name: gpu\n    gpus: [0]\n"), cfg("  - name: gpu\n    gpus: [0, 1]\n"))
    assert p.refusal(False) == ("apply refused: group gpu: gpus changed: each GPU's worker is planned at `up`; "
                                "stop the cluster with the old file (`clusterctl down`), then `clusterctl up`")
