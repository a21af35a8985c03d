"""Warm start decisions: which planned argv can be forked instead of exec'd (pure)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clusterctl.runtime import warm
from clusterctl.plan.specs import ProcessSpec
from clusterctl.plan.resolve import Launcher

HERE = str(Path(sys.executable).with_name("dask"))
LAUNCHER = Launcher((HERE, "scheduler"), (HERE, "worker"), "test")


def spec(argv, env=None, remote=False, dashboard=True):
    s = ProcessSpec(name="w-0", role="worker", group="w", host="127.0.0.1", argv=tuple(argv), env=env or {},
                    dashboard=dashboard)
    if remote:
        object.__setattr__(s, "remote", True)
    return s


@pytest.mark.parametrize(
    "argv, module, args",
    [
        ((HERE, "worker", "tcp://a:1", "--name", "x"), "distributed.cli.dask_worker", ["tcp://a:1", "--name", "x"]),
        ((HERE, "scheduler", "--port", "1"), "distributed.cli.dask_scheduler", ["--port", "1"]),
        (("/py", "-m", "distributed.cli.dask_worker", "tcp://a:1"), "distributed.cli.dask_worker", ["tcp://a:1"]),
        (("/old/bin/dask-scheduler", "--port", "1"), "distributed.cli.dask_scheduler", ["--port", "1"]),
    ],
)
def test_entry_point_maps_every_launcher_form(argv, module, args):
    got = warm.entry_point(argv)
    assert got is not None and got[0] == module and got[1] == args


def test_entry_point_refuses_other_programs():
    assert warm.entry_point(("ssh", "host", "python", "-m", "clusterctl.remote.agent")) is None
    assert warm.entry_point(("/bin/sleep", "1")) is None


def test_usable_only_when_equivalent_to_exec(monkeypatch):
    monkeypatch.setenv("CLUSTERCTL_WARM", "1")
    base = (HERE, "worker", "tcp://127.0.0.1:1")
    assert warm.usable(spec(base), LAUNCHER) is (sys.platform != "win32")
    assert warm.usable(spec(base, env={"DASK_DISTRIBUTED__WORKER__PRELOAD": "x"}), LAUNCHER)
    # a library may read OMP_NUM_THREADS at import, which the fork server already did
    assert not warm.usable(spec(base, env={"OMP_NUM_THREADS": "1"}), LAUNCHER)
    assert not warm.usable(spec(("/other/env/bin/dask", "worker", "tcp://x:1")), LAUNCHER)
    assert not warm.usable(spec(base, remote=True), LAUNCHER)
    monkeypatch.setenv("CLUSTERCTL_WARM", "0")
    assert not warm.usable(spec(base), LAUNCHER)


def test_cli_default_churn_schedule_matches_the_module():
    from clusterctl.client.churn import DEFAULT_SCHEDULE
    from clusterctl.cli.demo import DEFAULT_SCHEDULE as CLI_DEFAULT

    assert CLI_DEFAULT == DEFAULT_SCHEDULE


def test_fork_server_preloads_bokeh_only_for_worker_pages():
    sched = ProcessSpec(name="scheduler", role="scheduler", group="scheduler", host="h", argv=(HERE, "scheduler"))
    quiet = spec((HERE, "worker", "tcp://h:1", "--no-dashboard"), dashboard=False)
    pages = spec((HERE, "worker", "tcp://h:1", "--dashboard"))
    base = warm.preload_for([sched, quiet])
    assert "distributed" in base and not any("dashboard" in m for m in base)
    assert "distributed.dashboard.worker" in warm.preload_for([sched, pages])


def test_usable_with_the_cluster_tag_only_when_the_fork_server_carries_it(monkeypatch):
    """A forked child shows other processes its server's exec-time environment, where `down`
    looks for the tag: so the supervisor's own tag must be the spec's."""
    from clusterctl.plan.specs import TAG_ENV

    monkeypatch.setenv("CLUSTERCTL_WARM", "1")
    base = (HERE, "worker", "tcp://127.0.0.1:1")
    tagged = spec(base, env={TAG_ENV: "lab.0123456789", "DASK_X": "1"})
    monkeypatch.setenv(TAG_ENV, "lab.0123456789")
    assert warm.usable(tagged, LAUNCHER) is (sys.platform != "win32")  # CLUSTERCTL_* is no library's business
    monkeypatch.setenv(TAG_ENV, "other.0123456789")
    assert not warm.usable(tagged, LAUNCHER)
    monkeypatch.delenv(TAG_ENV)
    assert not warm.usable(tagged, LAUNCHER)  # e.g. `up --foreground`: exec'd, so the tag shows
    assert warm.usable(spec(base), LAUNCHER) is (sys.platform != "win32")  # untagged stays as it was
