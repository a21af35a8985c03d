"""Dask is the authority on retirement and shutdown; the supervisor follows it.

The scheduler's preload (runtime/scheduler_plugin.py) reports, in the JSON the health probe
reads every second, the workers it retired (``client.retire_workers``, Dask's ``Adaptive``,
anything that calls the scheduler's ``retire_workers``: their stimulus says so) and a
``client.shutdown()`` it was asked for. A retired worker lowers its group's desired count
(a restart would undo what Dask just did); a shutdown stops the whole cluster and the
supervisor, with an event naming the client's address. ``client.restart()`` is not a
retirement (its stimulus differs): its workers come back, as before.

The retired worker's exit and the probe's next answer race: a worker that exits cleanly
while the scheduler is up is held for at most ``DECIDE_WITHIN`` seconds, until an answer
newer than its exit says whether Dask retired it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .states import ChildState as S

if TYPE_CHECKING:
    from .child import Child
    from .reconcile import Reconciler

DECIDE_WITHIN = 3.0  # seconds a clean exit waits for the scheduler to say whether it retired the worker


def _retired_since(core: Reconciler, c: Child) -> dict | None:
    """Dask's record of retiring this worker, if it is about this incarnation (not an earlier one)."""
    retired = getattr(core.probe, "retired", None) or {}
    rec = retired.get(c.name)
    if not isinstance(rec, dict) or not c.started_wall:
        return None
    return rec if float(rec.get("at", 0)) >= c.started_wall else None


def follow(core: Reconciler, now: float) -> None:
    """Each tick: workers Dask retired leave the desired set; a client's shutdown stops everything."""
    shutdown = getattr(core.probe, "shutdown", None)
    sched = core.children.get("scheduler")
    if isinstance(shutdown, dict) and sched is not None and sched.started_wall \
            and float(shutdown.get("at", 0)) >= sched.started_wall and not core.shutdown_asked:
        core.shutdown_asked = True
        core.fx.emit("cluster", "shutdown-requested",
                     f"by a client at {shutdown.get('by') or 'an unknown address'} (client.shutdown()); stopping everything")
        core.on_shutdown(str(shutdown.get("by") or ""))
    for c in list(core.children.values()):
        if c.is_worker and c.name in core.desired and c.state in (S.STARTING, S.RUNNING):
            rec = _retired_since(core, c)
            if rec is not None:
                lower(core, c, rec)


def lower(core: Reconciler, c: Child, rec: dict) -> None:
    group = c.spec.group
    core.desired.remove([c.name])
    core.dask_retired.add(c.name)
    left = len(core.desired.workers(group))
    core.fx.emit(c.name, "retired-by-dask", f"{group}: {left} workers desired now ({rec.get('stimulus', '')})",
                 group=group, desired=left)
    core.dirty = True
    core.on_desired_changed()


def held(core: Reconciler, c: Child, code: int, now: float) -> bool:
    """A worker's clean exit: True while it may still be Dask's retirement (decide later)."""
    sched = core.children.get("scheduler")
    if code != 0 or not c.is_worker or sched is None or sched.state != S.RUNNING:
        return False
    rec = _retired_since(core, c)
    if rec is not None:
        c.exit_seen = None
        if c.name in core.desired:
            lower(core, c, rec)
        return False  # no longer desired: the exit is recorded, nothing restarts it
    if c.exit_seen is None:
        c.exit_seen = now
        core.probe.poke()
        return True
    fresh = core.probe.answered_at >= c.exit_seen  # asked after the exit was seen
    if fresh or now - c.exit_seen > DECIDE_WITHIN:
        c.exit_seen = None
        return False
    return True


def hooks(core: Any) -> None:
    """Defaults until the Supervisor sets them (tests of the core alone keep them)."""
    core.shutdown_asked = False
    core.dask_retired = set()  # names Dask retired: said so when they leave
    core.on_shutdown = lambda by: None
    core.on_desired_changed = lambda: None
