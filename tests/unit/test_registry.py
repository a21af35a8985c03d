"""The cluster registry (runtime/registry.py): where it lives, what it writes, what prune forgets."""

from __future__ import annotations

import json
import os
import stat
import time

import psutil
import pytest

from clusterctl.runtime import registry
from clusterctl.runtime.ledger import Ledger, LedgerRecord, ProcessRecord, SupervisorRecord


@pytest.fixture
def reg(tmp_path, monkeypatch):
    """An empty registry of its own for each test."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "clusterctl" / "clusters"


def state_dir(tmp_path, name="lab"):
    d = tmp_path / "proj" / "state" / name
    d.mkdir(parents=True)
    return d


def me() -> tuple[int, float]:
    p = psutil.Process()
    return p.pid, p.create_time()


def dead() -> tuple[int, float]:
    """An identity no process has: a real pid with a create time from long ago."""
    return os.getpid(), 1_000.0


def write_ledger(state, cluster_state, supervisor=None, processes=()):
    sup = SupervisorRecord(pid=supervisor[0], create_time=supervisor[1]) if supervisor else SupervisorRecord()
    procs = [ProcessRecord(name=f"w-{i}", role="worker", pid=pid, create_time=ct) for i, (pid, ct) in enumerate(processes)]
    Ledger(state).write(LedgerRecord(name=state.name, state=cluster_state, supervisor=sup, processes=procs))


def test_root_follows_xdg_state_home_and_ignores_a_relative_one(reg, tmp_path, monkeypatch):
    if os.name == "nt":
        pytest.skip("Windows uses %LOCALAPPDATA%")
    assert registry.root() == reg
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert registry.root() == tmp_path / "home" / ".local" / "state" / "clusterctl" / "clusters"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert registry.root() == tmp_path / "home" / ".local" / "state" / "clusterctl" / "clusters"


def test_register_writes_one_private_file_per_state_path(reg, tmp_path):
    state = state_dir(tmp_path)
    config = tmp_path / "proj" / "cluster.yaml"
    e = registry.register("lab", config, state, now=100.0)
    assert e.path.parent == reg and e.path.name.startswith("lab-") and e.path.suffix == ".json"
    data = json.loads(e.path.read_text())
    assert data == {"name": "lab", "config": str(config.resolve()), "state": str(state), "registered": 100.0, "version": 1}
    if os.name == "posix":
        assert stat.S_IMODE(e.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(reg.stat().st_mode) == 0o700
        assert stat.S_IMODE(reg.parent.stat().st_mode) == 0o700
    again = registry.register("lab", config, state, now=200.0)  # `up` of a running cluster: refreshed, not doubled
    assert again.path == e.path
    assert [x.registered for x in registry.entries()] == [200.0]
    assert not [p for p in reg.iterdir() if p.name.startswith(".")]  # no temp file left by the atomic write


def test_two_clusters_of_one_name_are_two_entries(reg, tmp_path):
    a = registry.register("lab", tmp_path / "a.yaml", tmp_path / "a" / "lab")
    b = registry.register("lab", tmp_path / "b.yaml", tmp_path / "b" / "lab")
    assert a.path != b.path
    assert len(registry.entries()) == 2


def test_a_live_cluster_is_kept_and_found_by_name(reg, tmp_path):
    state = state_dir(tmp_path)
    write_ledger(state, "running", supervisor=me())
    registry.register("lab", tmp_path / "cluster.yaml", state)
    kept, gone = registry.prune()
    assert [e.name for e in kept] == ["lab"] and gone == []
    assert [e.state for e in registry.find("lab")] == [str(state)]
    assert registry.find("other") == []


@pytest.mark.parametrize("how, why", [
    ("state dir removed", "its state directory is gone"),
    ("stopped", "it is stopped"),
    ("failed", "it is failed"),
    ("all dead", "its supervisor and all its processes are gone"),
    ("no ledger, old", "it has no ledger"),
])
def test_prune_forgets_what_points_at_nothing(reg, tmp_path, how, why):
    state = state_dir(tmp_path)
    if how in ("stopped", "failed"):
        write_ledger(state, how, supervisor=dead())
    elif how == "all dead":
        write_ledger(state, "running", supervisor=dead(), processes=[dead()])
    entry = registry.register("lab", None, state, now=time.time() - registry.GRACE - 1)
    if how == "state dir removed":
        state.rmdir()
    kept, gone = registry.prune()
    assert kept == [] and [(e.name, w) for e, w in gone] == [("lab", why)]
    assert not entry.path.exists() and registry.entries() == []


@pytest.mark.parametrize("how", ["no ledger, young", "unsupervised", "unreadable ledger", "stopped, supervisor still up"])
def test_prune_keeps_what_may_still_run(reg, tmp_path, how):
    state = state_dir(tmp_path)
    if how == "unsupervised":  # supervisor killed, a worker left: `down` has work to do
        write_ledger(state, "running", supervisor=dead(), processes=[dead(), me()])
    elif how == "unreadable ledger":
        (state / "ledger.json").write_text("{not json")
    elif how == "stopped, supervisor still up":  # the moment between its last write and its exit
        write_ledger(state, "stopped", supervisor=me())
    registry.register("lab", None, state)
    kept, gone = registry.prune()
    assert [e.name for e in kept] == ["lab"] and gone == []


def test_files_that_are_not_entries(reg, tmp_path):
    state = state_dir(tmp_path)
    write_ledger(state, "running", supervisor=me())
    good = registry.register("lab", None, state)
    (reg / "junk.json").write_text("{broken")
    (reg / "moved.json").write_text(good.path.read_text())  # an entry under a name not its own
    (reg / "notes.txt").write_text("not the registry's")
    assert [e.name for e in registry.entries()] == ["lab"]
    kept, _ = registry.prune()
    assert [e.name for e in kept] == ["lab"]
    assert sorted(p.name for p in reg.iterdir()) == sorted([good.path.name, "notes.txt"])


def test_an_absent_registry_is_empty(reg):
    assert registry.entries() == [] and registry.prune() == ([], [])
    assert not reg.exists()  # reading never creates it


def topology(path, name="lab", state_dir="state"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: {name}\nstate_dir: {state_dir}\nscheduler:\n  host: 127.0.0.1\n  port: 20001\n"
                    "  dashboard_port: 20002\nworkers:\n  - name: default\n    count: 1\n")
    return path


def test_from_name_finds_the_one_running_cluster_of_that_name(reg, tmp_path):
    from clusterctl.client.deploy import find
    from clusterctl.errors import ClusterError

    config = topology(tmp_path / "a" / "cluster.yaml")
    state = tmp_path / "a" / "state" / "lab"
    state.mkdir(parents=True)
    write_ledger(state, "running", supervisor=me())
    registry.register("lab", config, state)
    assert find("lab").state_path == state
    with pytest.raises(ClusterError, match="no running cluster named 'other' on this machine; running: lab"):
        find("other")

    twin = topology(tmp_path / "b" / "cluster.yaml")  # another cluster called lab, elsewhere
    (tmp_path / "b" / "state" / "lab").mkdir(parents=True)
    write_ledger(tmp_path / "b" / "state" / "lab", "running", supervisor=me())
    registry.register("lab", twin, tmp_path / "b" / "state" / "lab")
    with pytest.raises(ClusterError, match=r"2 running clusters are named 'lab' \(.*a/cluster.yaml, .*b/cluster.yaml\)"):
        find("lab")

    write_ledger(tmp_path / "b" / "state" / "lab", "stopped", supervisor=dead())
    topology(config, state_dir="elsewhere")  # edited since `up`: it no longer leads to the running one
    with pytest.raises(ClusterError, match="no longer describes the running cluster 'lab'"):
        find("lab")
    assert [e.config for e in registry.entries()] == [str(config)]  # the stopped twin was forgotten
