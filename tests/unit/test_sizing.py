"""Sized to the machine (plan/sizing.py): stand-in inventories in, workers and their settings out.

Pure functions, no process started: count: auto, the memory split (reserve, explicit limits,
several groups, adaptive maxima, sizes set with `scale`), the GPU rotation, and the errors, one line each.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterctl.errors import ClusterError, ConfigError
from clusterctl.plan.resolve import Launcher
from clusterctl.plan.sizing import (GiB, MIN_AUTO_MEMORY, MiB, Gpu, Inventory, cuda_visible_devices, limit_bytes,
                                    needs, reserve_bytes, size)
from clusterctl.plan.specs import build_plan
from clusterctl.remote import inventory, probe, ssh
from clusterctl.topology import parse_config
from clusterctl.topology.workers import adaptive_start

DASK = Launcher(("/venv/bin/dask", "scheduler"), ("/venv/bin/dask", "worker"), "test")
HOSTS = ("scheduler: {host: 10.0.0.1}\nhosts:\n  - {name: ws1, address: 10.0.0.5}\n"
         "  - {name: ws2, address: 10.0.0.6}\n")


def inv(cores: int = 4, gib: float = 16, gpus: int | None = None, error: str | None = None) -> Inventory:
    return Inventory(cores, int(gib * GiB), None if gpus is None else tuple(Gpu(i, "Stand-in", 16 * GiB)
                                                                          for i in range(gpus)), error)


def workers(text: str, inventories: dict, counts=None) -> list:
    return [s for s in build_plan(parse_config(text), DASK, counts, inventories) if s.role == "worker"]


def arg(spec, flag: str) -> str | None:
    argv = list(spec.remote_args or spec.argv)
    return argv[argv.index(flag) + 1] if flag in argv else None


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


# -- count: auto -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cores, nthreads, n, threads", [
    (4, None, 4, "1"), (4, 1, 4, "1"), (4, 2, 2, "2"), (3, 2, 1, "2"), (2, 4, 1, "4"), (1, None, 1, "1"),
    (64, 3, 21, "3"),
])
def test_count_auto_is_usable_cores_over_nthreads(cores, nthreads, n, threads):
    text = "workers:\n  - count: auto\n" + (f"    nthreads: {nthreads}\n" if nthreads else "")
    specs = workers(text, {"localhost": inv(cores, gib=64)})
    assert len(specs) == n
    assert {arg(s, "--nthreads") for s in specs} == {threads}, "unset nthreads with count: auto is 1, not Dask's all cores"


def test_count_auto_sizes_each_host_of_the_group():
    text = HOSTS + "workers:\n  - count: auto\n    at: [ws1, ws2]\n"
    specs = workers(text, {"ws1": inv(4), "ws2": inv(2)})
    assert [s.at for s in specs] == ["ws1"] * 4 + ["ws2"] * 2
    assert [s.name for s in specs] == [f"default-{i}" for i in range(6)]


def test_count_auto_scaled_past_the_plan_goes_round_the_hosts_with_the_same_limit():
    cfg = parse_config(HOSTS + "workers:\n  - count: auto\n    at: [ws1, ws2]\n")
    sized = size(cfg, {"ws1": inv(2), "ws2": inv(1)}).apply(cfg)
    g = sized.group("default")
    assert g.placement(5) == ["ws1", "ws1", "ws2", "ws1", "ws2"] and g.planned_count == 3
    assert [g.rank_on_host(i) for i in range(5)] == [0, 1, 0, 2, 1]
    from clusterctl.plan.specs import worker_spec

    extra = worker_spec(sized, DASK, g, 3)  # `scale` past the plan: the host's limit, computed for the plan
    assert extra.at == "ws1" and arg(extra, "--memory-limit") == str(g.share("ws1").memory_limit)


def test_unsized_count_auto_is_one_worker_per_host_and_a_thread_each():
    cfg = parse_config(HOSTS + "workers:\n  - count: auto\n    at: [ws1, ws2]\n")
    g = cfg.workers[0]
    assert g.count == 2 and g.count_auto and g.default_nthreads == 1
    specs = [s for s in build_plan(cfg, DASK) if s.role == "worker"]  # no inventories: no sizing
    assert [(s.at, arg(s, "--memory-limit"), arg(s, "--nthreads")) for s in specs] == \
        [("ws1", "auto", "1"), ("ws2", "auto", "1")]


# -- memory_limit: auto ----------------------------------------------------------------------------


@pytest.mark.parametrize("usable, reserve, expected", [
    (64 * GiB, None, int(6.4 * GiB)),  # 10 % is more than 2 GiB
    (16 * GiB, None, 2 * GiB),  # 2 GiB is more than 10 %
    (3 * GiB, None, int(1.5 * GiB)),  # ... but at most half of a small machine
    (16 * GiB, "4GiB", 4 * GiB),
    (16 * GiB, 0.25, 4 * GiB),
    (16 * GiB, 0, 0),
    (16 * GiB, "1000MB", 1000 * 1000 * 1000),
])
def test_reserve(usable, reserve, expected):
    assert reserve_bytes(reserve, usable) == expected


def test_memory_auto_divides_what_the_reserve_leaves():
    specs = workers("workers:\n  - count: 3\n", {"localhost": inv(2, gib=32)})
    each = (32 * GiB - int(3.2 * GiB)) // 3 // MiB * MiB
    assert [int(arg(s, "--memory-limit")) for s in specs] == [each] * 3
    assert arg(specs[0], "--nthreads") is None, "a fixed count keeps Dask's choice of threads"


def test_the_reserve_is_the_hosts_own_else_the_top_levels():
    text = ("scheduler: {host: 10.0.0.1}\nreserve: 8GiB\nhosts:\n  - {name: ws1, address: 10.0.0.5, reserve: 0}\n"
            "  - {name: ws2, address: 10.0.0.6}\nworkers:\n  - at: [ws1, ws2, localhost]\n")
    specs = workers(text, {"ws1": inv(gib=16), "ws2": inv(gib=16), "localhost": inv(gib=32)})
    assert {s.at: int(arg(s, "--memory-limit")) for s in specs} == {
        "ws1": 16 * GiB, "ws2": 8 * GiB, "localhost": 24 * GiB}


def test_explicit_limits_are_taken_out_first_and_groups_share_the_rest():
    text = ("workers:\n  - name: a\n    count: 2\n  - name: b\n    count: 1\n    memory_limit: 4GiB\n"
            "  - name: c\n    count: 2\n  - name: d\n    memory_limit: 0.25\n  - name: e\n    memory_limit: 0\n")
    specs = workers(text, {"localhost": inv(gib=32)})
    limits = {s.name: arg(s, "--memory-limit") for s in specs}
    each = (32 * GiB - int(3.2 * GiB) - 4 * GiB - 8 * GiB) // 4 // MiB * MiB
    assert limits == {"a-0": str(each), "a-1": str(each), "b-0": "4GiB", "c-0": str(each), "c-1": str(each),
                      "d-0": "0.25", "e-0": "0"}, "explicit limits as written; memory_limit: 0 (none) takes nothing"


def test_an_adaptive_group_is_counted_at_its_maximum():
    specs = workers("workers:\n  - adapt: {minimum: 1, maximum: 6}\n", {"localhost": inv(gib=32)})
    assert len(specs) == 1
    assert int(arg(specs[0], "--memory-limit")) == (32 * GiB - int(3.2 * GiB)) // 6 // MiB * MiB


def test_a_size_set_with_scale_is_counted_if_larger():
    text = "workers:\n  - count: 2\n"
    bigger = workers(text, {"localhost": inv(gib=32)}, counts={"default": 4})
    smaller = workers(text, {"localhost": inv(gib=32)}, counts={"default": 1})
    assert len(bigger) == 4 and len(smaller) == 1
    assert int(arg(bigger[0], "--memory-limit")) == (32 * GiB - int(3.2 * GiB)) // 4 // MiB * MiB
    assert int(arg(smaller[0], "--memory-limit")) == (32 * GiB - int(3.2 * GiB)) // 2 // MiB * MiB


def test_a_host_without_an_inventory_gets_one_worker_and_dasks_own_auto():
    cfg = parse_config(HOSTS + "workers:\n  - count: auto\n    at: [ws1, ws2]\n")
    sizing = size(cfg, {"ws1": inv(2)}, unknown={"ws2": "no answer over SSH within 6 s"})
    specs = [s for s in build_plan(sizing.apply(cfg), DASK) if s.role == "worker"]
    assert [(s.at, arg(s, "--memory-limit")) for s in specs][2:] == [("ws2", "auto")]
    assert sizing.hosts["ws2"].line() == ("ws2: not measured (no answer over SSH within 6 s) -> "
                                          "1 worker x 1 thread, Dask's memory_limit auto")


def test_too_little_memory_is_an_error_naming_the_host_never_an_oversubscription():
    with pytest.raises(ConfigError) as e:
        workers("workers:\n  - count: auto\n", {"localhost": inv(64, gib=8)})
    msg = one_line(e)
    assert msg.startswith("host 'localhost': 64 workers with memory_limit: auto would get 96 MiB each"), msg
    with pytest.raises(ConfigError) as e:  # explicit limits leave nothing
        workers("workers:\n  - memory_limit: 15GiB\n  - name: b\n", {"localhost": inv(gib=16)})
    assert "of explicit limits" in one_line(e)


def test_the_total_cap_holds_after_sizing():
    with pytest.raises(ConfigError) as e:
        workers("max_workers: 8\nworkers:\n  - count: auto\n", {"localhost": inv(16, gib=64)})
    assert "16 workers in all" in one_line(e) and "max_workers, 8" in str(e.value)


# -- the promise, for any machine and any groups ---------------------------------------------------

group_st = st.fixed_dictionaries({
    "count": st.one_of(st.just("auto"), st.integers(1, 6)),
    "nthreads": st.one_of(st.none(), st.integers(1, 8)),
    "memory_limit": st.sampled_from(["auto", "auto", "auto", "1GiB", "300MB", 0.05, 0]),
    "at": st.sampled_from([None, "ws1", ["ws1", "localhost"], ["ws2", "ws1"]]),
    "adapt": st.one_of(st.none(), st.integers(1, 8)),
})
inventory_st = st.builds(lambda c, m: Inventory(c, m), st.integers(1, 128), st.integers(MIN_AUTO_MEMORY, 1 << 40))


def yaml_of(groups: list[dict], reserve) -> str:
    out = HOSTS + (f"reserve: {reserve}\n" if reserve is not None else "") + "workers:\n"
    for i, g in enumerate(groups):
        out += f"  - name: g{i}\n    memory_limit: {g['memory_limit']}\n"
        if g["adapt"] is not None and g["count"] != "auto":
            out += f"    adapt: {{maximum: {g['adapt']}}}\n"
        else:
            out += f"    count: {g['count']}\n"
        if g["nthreads"]:
            out += f"    nthreads: {g['nthreads']}\n"
        if g["at"] is not None:
            out += f"    at: {json.dumps(g['at'])}\n"
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(group_st, min_size=1, max_size=4), st.dictionaries(st.sampled_from(["localhost", "ws1", "ws2"]),
       inventory_st, min_size=3), st.sampled_from([None, "0", "1GiB", "'0.3'", "2GiB"]),
       st.dictionaries(st.sampled_from(["g0", "g1"]), st.integers(0, 12)))
def test_the_limits_never_add_up_to_more_than_the_machine(groups, inventories, reserve, counts):
    cfg = parse_config(yaml_of(groups, reserve))
    counts = {k: v for k, v in counts.items() if k in {g.name for g in cfg.workers}}
    counts.update({g.name: adaptive_start(g) for g in cfg.workers if g.adapt})  # as the supervisor starts them
    try:
        sizing = size(cfg, inventories, counts)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and ("under the" in msg or "max_workers" in msg or "most a group" in msg), msg
        return
    specs = [s for s in build_plan(sizing.apply(cfg), DASK, counts) if s.role == "worker"]
    for host, s in sizing.hosts.items():
        usable = inventories[host].memory
        autos = {n for n, g in ((g.name, g) for g in cfg.workers) if g.memory_limit == "auto" and n in s.shares}
        if not autos:
            continue
        total = sum(s.room[n] * (s.shares[n].memory_limit if n in autos else limit_bytes(
            cfg.group(n).memory_limit, usable)) for n in s.shares)
        assert total <= usable - s.reserve, (host, s.line())
        for n in autos:
            assert s.shares[n].memory_limit >= MIN_AUTO_MEMORY
        # and what is started there, at the planned size (a recorded scale included), stays within it
        started = [sp for sp in specs if sp.at == host]
        assert sum(int(arg(sp, "--memory-limit")) if sp.group in autos else limit_bytes(
            cfg.group(sp.group).memory_limit, usable) for sp in started) <= usable - s.reserve


# -- GPUs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("i, devices, expected", [
    (0, [0, 1], "0,1"), (1, [0, 1], "1,0"), (2, [0, 1, 2, 3], "2,3,0,1"), (1, [0, 2], "2,0"), (3, [5], "5"),
])
def test_cuda_visible_devices_rotates_as_dask_cuda(i, devices, expected):
    assert cuda_visible_devices(i, devices) == expected


def test_one_worker_per_gpu_with_its_gpu_first_and_a_gpu_resource():
    specs = workers("workers:\n  - name: gpu\n    gpus: auto\n    resources: {MEM: 2}\n", {"localhost": inv(8, gpus=2)})
    assert [(s.name, s.env["CUDA_VISIBLE_DEVICES"], arg(s, "--resources"), arg(s, "--nthreads")) for s in specs] == [
        ("gpu-0", "0,1", "GPU=1,MEM=2", "1"), ("gpu-1", "1,0", "GPU=1,MEM=2", "1")]
    listed = workers("workers:\n  - gpus: [0, 2]\n", {"localhost": inv(8, gpus=4)})
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in listed] == ["0,2", "2,0"]


def test_gpus_on_remote_hosts_go_to_the_agents_environment():
    text = HOSTS + "workers:\n  - gpus: auto\n    at: [ws1, ws2]\n"
    specs = workers(text, {"ws1": inv(gpus=2), "ws2": inv(gpus=3)})
    assert [(s.at, s.remote_env["CUDA_VISIBLE_DEVICES"]) for s in specs] == [
        ("ws1", "0,1"), ("ws1", "1,0"), ("ws2", "0,1,2"), ("ws2", "1,2,0"), ("ws2", "2,0,1")]
    assert specs[0].to_dict()["remote_env"]["CUDA_VISIBLE_DEVICES"] == "0,1", "shown, not masked as a secret"


@pytest.mark.parametrize("gpus, have, error, words", [
    ("auto", 0, "nvidia-smi: not found on PATH (/usr/bin:/bin)", "gpus: auto, but the host has no GPU "
     "(nvidia-smi: not found on PATH (/usr/bin:/bin))"),
    ("auto", 0, "nvidia-smi exit 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver",
     "(nvidia-smi exit 9: NVIDIA-SMI has failed"),
    ("[0, 2]", 2, None, "gpus: [0, 2], but GPU 2 is not there (nvidia-smi lists 0, 1)"),
])
def test_gpus_a_host_lacks_are_one_line_naming_group_host_and_nvidia_smi(gpus, have, error, words):
    text = HOSTS + f"workers:\n  - name: train\n    gpus: {gpus}\n    at: ws2\n"
    with pytest.raises(ConfigError) as e:
        workers(text, {"ws2": inv(gpus=have, error=error)})
    msg = one_line(e)
    assert msg.startswith("group 'train' on host 'ws2': ") and words in msg, msg


@pytest.mark.parametrize("text, words", [
    ("  - gpus: auto\n    count: 2\n", "gpus: sets the group's size (one worker per GPU); drop `count:`"),
    ("  - gpus: auto\n    adapt: {maximum: 2}\n", "drop `adapt:`"),
    ("  - gpus: [0, 0]\n", "lists a GPU twice"),
    ("  - gpus: [-1]\n", "out of range"),
    ("  - gpus: yes\n", "write gpus: auto"),
    ("  - gpus: auto\n    env: {CUDA_VISIBLE_DEVICES: '1'}\n", "set by gpus:"),
    ("  - count: auto\n    adapt: {maximum: 2}\n", "drop one"),
    ("  - count: auto\n    at: {ws1: 2}\n", "write the hosts as a list"),
    ("  - count: many\n", "workers[0].count"),
])
def test_what_does_not_go_together_is_refused_in_one_line(text, words):
    with pytest.raises(ConfigError) as e:
        parse_config(HOSTS + "workers:\n" + text)
    assert words in one_line(e)


def test_needs_names_the_hosts_whose_inventory_the_plan_uses():
    cfg = parse_config(HOSTS + "workers:\n  - memory_limit: 1GiB\n    at: ws1\n  - name: b\n    at: [ws2]\n"
                       "  - name: c\n    gpus: auto\n")
    assert needs(cfg) == {"ws2": False, "localhost": True}
    assert needs(parse_config("workers:\n  - memory_limit: 2GiB\n")) == {}


# -- inventories --------------------------------------------------------------------------------


def test_the_probe_measures_what_dask_does():
    import dask.system
    import distributed.system

    here = probe.inventory()
    assert here["cores"] == dask.system.CPU_COUNT and here["memory"] == distributed.system.MEMORY_LIMIT
    assert here["gpus"] is None
    assert Inventory.from_dict(json.loads(json.dumps(here))).memory == here["memory"]


def test_measuring_this_machine_costs_nothing_measurable():
    """What `up` adds for a local-only cluster: the head's inventory, in this process."""
    inventory.measure_here()
    t0 = time.perf_counter()
    for _ in range(100):
        inventory.measure_here()
    each = (time.perf_counter() - t0) / 100
    assert each < 0.005, f"{each * 1e3:.2f} ms"


def stand_in_nvidia_smi(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return folder


def test_the_probe_reads_nvidia_smi(tmp_path):
    ok = stand_in_nvidia_smi(tmp_path / "ok", "echo '0, NVIDIA Stand-in, 16384'\necho '1, NVIDIA Stand-in, 16384'\n")
    found, error = probe.gpus(str(ok))
    assert error is None and found == [{"index": 0, "name": "NVIDIA Stand-in", "memory": 16 * GiB},
                                       {"index": 1, "name": "NVIDIA Stand-in", "memory": 16 * GiB}]
    broken = stand_in_nvidia_smi(tmp_path / "broken", "echo 'NVIDIA-SMI has failed: no driver' >&2\nexit 9\n")
    assert probe.gpus(str(broken)) == ([], "nvidia-smi exit 9: NVIDIA-SMI has failed: no driver")
    none = stand_in_nvidia_smi(tmp_path / "none", "echo 'No devices were found'\n")
    assert probe.gpus(str(none)) == ([], "nvidia-smi listed no GPU: No devices were found")
    assert probe.gpus(str(tmp_path / "empty")) == ([], f"nvidia-smi: not found on PATH ({tmp_path / 'empty'})")


def test_a_host_that_does_not_answer_is_sized_from_its_cached_inventory(tmp_path, monkeypatch):
    cfg = parse_config(HOSTS + "workers:\n  - count: auto\n    at: [ws1, ws2]\n", source=tmp_path / "cluster.yaml")
    answers = {"ws1": inv(3, gib=16), "ws2": inv(2, gib=8)}
    monkeypatch.setattr(ssh, "secure_control_dir", lambda cfg, create: tmp_path)
    monkeypatch.setattr(inventory, "ask", lambda cfg, h, gpus, **kw: answers[h])
    events: list = []
    sized, sizing = inventory.sized(cfg, emit=lambda *a, **kw: events.append(a))
    assert sized.group("default").planned_count == 5
    cache = cfg.state_path / inventory.CACHE
    assert set(json.loads(cache.read_text())["hosts"]) == {"ws1", "ws2"}
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600 and os.listdir(cache.parent) == [inventory.CACHE]

    def unreachable(cfg, h, gpus, **kw):
        if h == "ws2":
            raise ssh.HostUnreachable("host 'ws2' (10.0.0.6): no answer over SSH within 6 s")
        return answers[h]

    monkeypatch.setattr(inventory, "ask", unreachable)
    events.clear()
    sized, sizing = inventory.sized(cfg, emit=lambda *a, **kw: events.append(a))
    assert sized.group("default").planned_count == 5 and sizing.hosts["ws2"].inventory.cached
    assert "(cached)" in sizing.hosts["ws2"].line()
    assert [e[:2] for e in events if e[1].startswith("inventory-")] == [("ws2", "inventory-cached")]

    cache.unlink()
    events.clear()
    sized, sizing = inventory.sized(cfg, emit=lambda *a, **kw: events.append(a))
    assert sized.group("default").placement() == ["ws1"] * 3 + ["ws2"]
    assert [e[:2] for e in events if e[1].startswith("inventory-")] == [("ws2", "inventory-unknown")]


def test_validate_asks_but_writes_nothing(tmp_path, monkeypatch):
    cfg = parse_config(HOSTS + "workers:\n  - at: ws1\n", source=tmp_path / "cluster.yaml")
    monkeypatch.setattr(ssh, "secure_control_dir", lambda *a, **kw: pytest.fail("validate makes no ssh folder"))

    def ask(cfg, h, gpus, master=False, **kw):
        assert not master, "validate leaves no shared connection behind"
        raise ClusterError("host 'ws1': ssh: connect to host 10.0.0.5 port 22: Connection refused")

    monkeypatch.setattr(inventory, "ask", ask)
    _, sizing = inventory.sized(cfg, at_up=False)
    assert sizing.hosts["ws1"].line() == ("ws1: not measured (host 'ws1': ssh: connect to host 10.0.0.5 port 22: "
                                          "Connection refused; resolved at `up`) -> 1 worker x Dask's threads, "
                                          "Dask's memory_limit auto")
    assert not cfg.state_path.exists()


def test_a_cluster_that_needs_no_inventory_asks_nobody(monkeypatch):
    cfg = parse_config(HOSTS + "workers:\n  - memory_limit: 2GiB\n    at: [ws1, ws2]\n")
    monkeypatch.setattr(inventory, "ask", lambda *a, **kw: pytest.fail("no inventory needed"))
    sized, sizing = inventory.sized(cfg)
    assert sized is cfg and sizing.hosts == {}
