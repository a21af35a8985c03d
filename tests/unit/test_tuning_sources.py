"""A value the user set in Dask's config (a YAML file in Dask's search path, or a DASK_* variable)
beats clusterctl's tuning defaults, and `validate` says where every tuning value comes from.

runtime/tuning.py finds the user's keys without importing Dask (every remote agent runs it);
these tests hold it to what dask.config itself reads."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterctl.runtime import tuning
from clusterctl.runtime.tuning import DEFAULTS, apply_defaults, config_paths, group_sources, sources, user_config

TICK = "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL"
MONITOR = "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL"
PROFILE = "DASK_DISTRIBUTED__WORKER__PROFILE__INTERVAL"
KEYS = ["distributed.admin.tick.interval", "distributed.admin.system-monitor.interval",
        "distributed.worker.profile.interval"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An environment with no Dask config but what a test writes: DASK_CONFIG is tmp/dask."""
    for k in list(os.environ):
        if k.startswith("DASK_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DASK_ROOT_CONFIG", str(tmp_path / "etc"))
    (tmp_path / "dask").mkdir()
    monkeypatch.setenv("DASK_CONFIG", str(tmp_path / "dask"))
    return tmp_path


def env_of(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home / "home"), "DASK_ROOT_CONFIG": str(home / "etc"), "DASK_CONFIG": str(home / "dask"),
            "PATH": os.environ.get("PATH", ""), **extra}


def test_a_yaml_value_wins_over_the_default_and_validate_names_the_file(home):
    f = home / "dask" / "mine.yaml"
    f.write_text("distributed:\n  admin:\n    tick:\n      interval: 37ms\n")
    env = env_of(home)
    added = apply_defaults(env)
    assert TICK not in added and TICK not in env  # the worker's dask reads 37ms from the file
    assert added[MONITOR] == "1s" and added[PROFILE] == "100ms" and added["OMP_NUM_THREADS"] == "1"
    shown = {s.key: s for s in sources(env_of(home))}
    assert (shown[TICK].value, shown[TICK].source) == ("37ms", f"your dask config ({f})")
    assert shown[TICK].setting == "distributed.admin.tick.interval"
    assert shown[MONITOR].source == shown["MALLOC_MMAP_THRESHOLD_"].source == "clusterctl default"


def test_the_files_in_every_search_path_count_later_ones_winning(home):
    (home / "home" / ".config" / "dask").mkdir(parents=True)
    (home / "home" / ".config" / "dask" / "a.yml").write_text("distributed: {admin: {tick: {interval: 1ms}}}\n")
    (home / "etc").mkdir()
    (home / "etc" / "site.json").write_text(json.dumps({"distributed": {"worker": {"profile": {"interval": "7ms"}}}}))
    (home / "dask" / "b.yaml").write_text("distributed: {admin: {tick: {interval: 2ms}}}\n")
    (home / "dask" / "c.txt").write_text("distributed: {admin: {system-monitor: {interval: 3s}}}\n")  # not a config name
    found = user_config(KEYS, env_of(home))
    assert {k: (v.value, Path(v.origin).name) for k, v in found.items()} == {
        "distributed.admin.tick.interval": ("2ms", "b.yaml"),  # DASK_CONFIG comes last
        "distributed.worker.profile.interval": ("7ms", "site.json"),
    }
    assert sorted(apply_defaults(env_of(home))) == sorted(k for k in DEFAULTS if k not in (TICK, PROFILE))


def test_a_dask_variable_by_any_spelling_wins_and_is_named(home):
    (home / "dask" / "x.yaml").write_text("distributed:\n  admin:\n    tick:\n      interval: 37ms\n")
    env = env_of(home, DASK_DISTRIBUTED__ADMIN='{"tick": {"interval": "9ms"}}', DASK_PROFILE_INTERVAL="12ms",
                 dask_ignored__x="1")
    assert TICK not in apply_defaults(dict(env)) and PROFILE not in apply_defaults(dict(env))
    shown = {s.key: s for s in sources(env)}
    assert (shown[TICK].value, shown[TICK].source) == ("9ms", "environment (DASK_DISTRIBUTED__ADMIN)")
    assert (shown[PROFILE].value, shown[PROFILE].source) == ("12ms", "environment (DASK_PROFILE_INTERVAL)")
    env[TICK] = "40ms"
    assert (sources(env)[0].value, sources(env)[0].source) == ("40ms", "environment")


def test_old_names_and_underscores_count(home):
    (home / "dask" / "old.yaml").write_text("tick-time: 5ms\ndistributed:\n  admin:\n    system_monitor:\n"
                                            "      interval: 2s\n")
    found = user_config(KEYS, env_of(home))
    assert found["distributed.admin.tick.interval"].value == "5ms"
    assert found["distributed.admin.system-monitor.interval"].value == "2s"
    assert not any(k.startswith("DASK_") for k in apply_defaults(env_of(home, DASK_PROFILE_INTERVAL="1ms")))


def test_a_serialized_inherited_config_counts(home):
    blob = base64.urlsafe_b64encode(json.dumps({"distributed": {"admin": {"tick": {"interval": "3ms"}}}}).encode())
    env = env_of(home, DASK_INTERNAL_INHERIT_CONFIG=blob.decode())
    assert TICK not in apply_defaults(dict(env))
    assert next(s for s in sources(env) if s.key == TICK).source == "environment (DASK_INTERNAL_INHERIT_CONFIG)"


def test_other_keys_and_a_malformed_file_leave_the_defaults(home):
    (home / "dask" / "a.yaml").write_text("distributed:\n  admin:\n    tick:\n      limit: 3s\n"
                                          "temporary-directory: /scratch\n")
    (home / "dask" / "b.yaml").write_text("distributed: {admin: {tick: {interval: [unclosed\n")
    (home / "dask" / "c.yaml").write_text("- interval\n")  # a list: Dask rejects it too
    assert apply_defaults(env_of(home)) == DEFAULTS
    problems: list[str] = []
    sources(env_of(home), problems)
    assert len(problems) == 2 and all("malformed" in p for p in problems)
    assert "b.yaml" in problems[0] and "c.yaml" in problems[1]


def test_group_env_sets_its_own(home):
    shown = {s.key: s for s in group_sources({"OMP_NUM_THREADS": "4", "DASK_DISTRIBUTED__WORKER": "{'profile': "
                                              "{'interval': '30ms'}}", "TOKEN": "secret"})}
    assert set(shown) == {"OMP_NUM_THREADS", PROFILE}
    assert (shown["OMP_NUM_THREADS"].value, shown["OMP_NUM_THREADS"].source) == ("4", "group env")
    assert (shown[PROFILE].value, shown[PROFILE].source) == ("30ms", "group env (DASK_DISTRIBUTED__WORKER)")
    assert group_sources({"TOKEN": "x"}) == []


def test_search_paths_are_dasks(tmp_path, monkeypatch):
    """The paths Dask searches, for the same environment: a new Dask that looks elsewhere fails here."""
    import dask.config

    for env in ({}, {"DASK_CONFIG": str(tmp_path / "c")}, {"DASK_ROOT_CONFIG": str(tmp_path / "r")},
                {"DASK_CONFIG": str(tmp_path / "home" / ".config" / "dask"), "DASK_ROOT_CONFIG": "/etc/dask"}):
        monkeypatch.delenv("DASK_CONFIG", raising=False)
        monkeypatch.delenv("DASK_ROOT_CONFIG", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert config_paths(os.environ) == dask.config._get_paths(), env


def test_nothing_heavy_is_imported_when_no_file_spells_a_key(tmp_path):
    """What the remote agent pays: with a config file that sets other keys, no PyYAML and no Dask;
    ast only for a DASK_* variable on the way to one of our keys."""
    d = tmp_path / "dask"
    d.mkdir()
    (d / "other.yaml").write_text("temporary-directory: /scratch\n")
    code = ("import sys, os; from clusterctl.runtime.tuning import apply_defaults; env = dict(os.environ); "
            "added = apply_defaults(env); "
            "print(len(added), sorted(m for m in ('yaml', 'dask', 'ast', 'dataclasses') if m in sys.modules))")
    base = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    for extra, expect in (({"DASK_CONFIG": str(d)}, "8 []"),
                          ({"DASK_CONFIG": str(d), "DASK_DISTRIBUTED__COMM__RETRY__COUNT": "3"}, "8 []"),
                          ({"DASK_CONFIG": str(d), "DASK_DISTRIBUTED__ADMIN": "{'x': 1}"}, "8 ['ast']"),
                          ({"DASK_CONFIG": str(d), "DASK_DISTRIBUTED__ADMIN": "{'tick': {'interval': '1s'}}"},
                           "7 ['ast']")):
        res = subprocess.run([sys.executable, "-c", code], env={**base, "HOME": str(tmp_path), **extra},
                             capture_output=True, text=True, timeout=60)
        assert res.stdout.strip() == expect, res.stderr


def _validate(home: Path, cfg: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "CLUSTERCTL_CONFIG"))}
    env.update(env_of(home), COLUMNS="200", NO_COLOR="1", **extra)
    return subprocess.run([sys.executable, "-m", "clusterctl", "validate", "-f", str(cfg), *args],
                          env=env, capture_output=True, text=True, timeout=60)


def test_validate_shows_every_value_and_where_it_came_from(home):
    f = home / "dask" / "dask.yaml"
    f.write_text("distributed:\n  admin:\n    tick:\n      interval: 37ms\n")
    cfg = home / "cluster.yaml"
    cfg.write_text("name: v\nstate_dir: state\nscheduler: {host: 127.0.0.1, port: 23000, dashboard_port: 23001}\n"
                   "workers:\n  - name: default\n    count: 1\n"
                   "  - name: own\n    count: 1\n    env: {OMP_NUM_THREADS: '2'}\n")
    res = _validate(home, cfg, "--json", MKL_NUM_THREADS="3")
    assert res.returncode == 0, res.stderr
    tuned = json.loads(res.stdout)["tuning"]
    by = {t["key"]: t for t in tuned["values"]}
    assert set(by) == set(DEFAULTS)
    assert by[TICK]["value"] == "37ms" and by[TICK]["source"] == f"your dask config ({f})"
    assert by["MKL_NUM_THREADS"]["value"] == "3" and by["MKL_NUM_THREADS"]["source"] == "environment"
    assert by[MONITOR]["value"] == "1s" and by[MONITOR]["source"] == "clusterctl default"
    assert tuned["groups"] == {"own": [{"key": "OMP_NUM_THREADS", "setting": None, "value": "2",
                                       "source": "group env", "origin": None}]}
    assert TICK not in json.loads(res.stdout)["env_defaults"]

    res = _validate(home, cfg)
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if "distributed.admin.tick.interval" in x)
    assert "37ms" in line and f"your dask config ({f})" in line
    assert any("OMP_NUM_THREADS" in x and "group env" in x and "own" in x for x in res.stdout.splitlines())


def test_validate_warns_about_a_malformed_dask_config_in_one_line(home):
    (home / "dask" / "bad.yaml").write_text("distributed: {admin: {tick: {interval: [\n")
    cfg = home / "cluster.yaml"
    cfg.write_text("name: v\nstate_dir: state\nscheduler: {host: 127.0.0.1, port: 23000, dashboard_port: 23001}\n"
                   "workers:\n  - name: default\n    count: 1\n")
    res = _validate(home, cfg)
    assert res.returncode == 0 and "Traceback" not in res.stderr
    warned = [x for x in res.stderr.splitlines() if "bad.yaml" in x]
    assert warned and all(x.startswith("warning: ") and "malformed" in x for x in warned), res.stderr
    assert any(x.startswith("warning: Dask config file") for x in warned)


# -- the same answers as dask.config.collect(), for generated configs -----------------------------------------
SPELLINGS = {
    "distributed.admin.tick.interval": ["distributed.admin.tick.interval"],
    "distributed.admin.system-monitor.interval": ["distributed.admin.system-monitor.interval",
                                                  "distributed.admin.system_monitor.interval"],
    "distributed.worker.profile.interval": ["distributed.worker.profile.interval"],
}
PREFIXES = ["distributed", "distributed.admin", "distributed.admin.tick", "distributed.worker"]
OTHER = ["distributed.comm.retry.count", "distributed.admin.tick.limit", "temporary-directory"]
leaf = st.sampled_from(["1ms", "2ms", "3s", "40ms", None, 5])
dotted = st.sampled_from([s for v in SPELLINGS.values() for s in v] + OTHER + ["tick-time", "profile-interval"])


def _nest(pairs: list[tuple[str, object]]) -> dict:
    """A config from (dotted key, value) pairs. Never both spellings of one key in a mapping
    (system_monitor and system-monitor): Dask merges those, first come first served; not emulated."""
    tree: dict = {}
    for key, value in pairs:
        *parents, last = key.split(".")
        node = tree
        for p in [*parents, last]:
            if not isinstance(node, dict) or (p.replace("_", "-") != p.replace("-", "_") and
                                              {p.replace("_", "-"), p.replace("-", "_")} - {p} & node.keys()):
                break
            if p == last:
                if not isinstance(node.get(last), dict):
                    node[last] = value
            else:
                node = node.setdefault(p, {})
    return tree


tree = st.lists(st.tuples(dotted, leaf), max_size=4).map(_nest)
env_var = st.one_of(
    st.tuples(dotted, leaf.map(str)).map(lambda kv: ("DASK_" + kv[0].upper().replace(".", "__").replace("-", "_"),
                                                     kv[1])),
    st.tuples(st.sampled_from(PREFIXES), tree).map(
        lambda kv: ("DASK_" + kv[0].upper().replace(".", "__"), repr(_subtree(kv[1], kv[0])))),
)


def _subtree(t: dict, prefix: str) -> dict:
    for p in prefix.split("."):
        t = t.get(p) if isinstance(t.get(p), dict) else {}
    return t


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(tree, max_size=3), env=st.lists(env_var, max_size=4), inherit=st.none() | tree)
def test_the_same_values_as_dask_config_collect(files, env, inherit):
    import dask.config
    import distributed  # noqa: F401 - distributed's old names (tick-time) are renamed by collect once imported

    with tempfile.TemporaryDirectory() as d:
        for i, t in enumerate(files):
            Path(d, f"{i}.yaml").write_text(json.dumps(t))
        environ = {"HOME": d + "/nohome", "DASK_ROOT_CONFIG": d + "/noroot", "DASK_CONFIG": d, **dict(env)}
        if inherit is not None:
            environ["DASK_INTERNAL_INHERIT_CONFIG"] = dask.config.serialize(inherit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            collected = dask.config.collect(paths=[d], env=environ)
        mine = user_config(KEYS, environ)
    for key in KEYS:
        try:
            want = dask.config.get(key, config=collected)
        except (KeyError, TypeError):
            assert key not in mine, (key, mine[key])
            continue
        if isinstance(want, dict):  # a mapping where a value belongs: Dask's problem, not a value
            continue
        assert key in mine and mine[key].value == want, (key, want, mine.get(key))


def test_setting_names():
    assert tuning.setting(MONITOR) == "distributed.admin.system-monitor.interval"
    assert tuning.setting("OMP_NUM_THREADS") is None
