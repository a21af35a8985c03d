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
newer than its exit says whether Dask retired it.

Each function reads the core and decides (edits.py): the Reconciler applies what they return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .edits import Edit, Event, Remove, Shutdown
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


def follow(core: Reconciler, now: float) -> list[Edit]:
    """Each tick: workers Dask retired leave the desired set; a client's shutdown stops everything."""
    edits: list[Edit] = []
    shutdown = getattr(core.probe, "shutdown", None)
    sched = core.children.get("scheduler")
    if isinstance(shutdown, dict) and sched is not None and sched.started_wall \
            and float(shutdown.get("at", 0)) >= sched.started_wall and not core.shutdown_asked:
        by = str(shutdown.get("by") or "")
        edits += [Event("cluster", "shutdown-requested",
                        f"by a client at {by or 'an unknown address'} (client.shutdown()); stopping everything"),
                  Shutdown(by)]
    lowered: dict[str, int] = {}  # per group, how many this tick already takes out
    for c in list(core.children.values()):
        if c.is_worker and c.name in core.desired and c.state in (S.STARTING, S.RUNNING):
            rec = _retired_since(core, c)
            if rec is not None:
                lowered[c.spec.group] = lowered.get(c.spec.group, 0) + 1
                edits.append(lower(core, c, rec, lowered[c.spec.group]))
    return edits


def lower(core: Reconciler, c: Child, rec: dict, count: int = 1) -> Remove:
    """Its group is one smaller (``count``: the ``count``-th of its group lowered at once)."""
    group = c.spec.group
    left = len(core.desired.workers(group)) - count
    return Remove((c.name,), Event(c.name, "retired-by-dask", f"{group}: {left} workers desired now "
                                   f"({rec.get('stimulus', '')})", {"group": group, "desired": left}), by_dask=True)


@dataclass(frozen=True)
class Held:
    """What a worker's exit waits for: ``hold`` while it may still be Dask's retirement (the first
    time, the Reconciler notes when it saw the exit and asks the scheduler at once); ``retired``:
    Dask retired it, so its group is lowered, and the exit is recorded with nothing restarting it."""

    hold: bool = False
    retired: Remove | None = None


def held(core: Reconciler, c: Child, code: int, now: float) -> Held:
    """A worker's clean exit: held while it may still be Dask's retirement (decided later)."""
    sched = core.children.get("scheduler")
    if code != 0 or not c.is_worker or sched is None or sched.state != S.RUNNING:
        return Held()
    rec = _retired_since(core, c)
    if rec is not None:
        return Held(retired=lower(core, c, rec) if c.name in core.desired else None)
    if c.exit_seen is None:
        return Held(hold=True)
    fresh = core.probe.answered_at >= c.exit_seen  # asked after the exit was seen
    return Held(hold=not fresh and now - c.exit_seen <= DECIDE_WITHIN)
