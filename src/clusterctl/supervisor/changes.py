"""The control commands that change the cluster, dispatched from ``Supervisor._handle``: scale, add,
remove and adapt (scaling.py), restart and its rolling form (rolling.py), apply (applying.py).

Each change runs on the main loop (``Supervisor._call``), the one thread that edits the desired set
and the children; what waits (a graceful removal, a roll's next step) waits here, on the control
thread. A plain restart stops the named processes and lets the loop start them again, as after a
crash but without spending their restart budget; the scheduler's takes its workers with it, as a
scheduler recovery does. What each process becomes is an edit (edits.Move) the reconciler applies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ClusterError
from ..plan.specs import SCHEDULER
from . import applying, commands
from .child import Child, describe_exit
from .edits import Edit, Event, Move
from .scaling import group_name
from .states import ChildState as S

if TYPE_CHECKING:
    from .loop import Supervisor
    from .reconcile import Reconciler

WAIT_REMOVED = 120.0  # seconds the control thread waits for graceful removals before answering
NOT_NOW = {S.RETIRING: "it is retiring", S.STOPPING: "it is stopping", S.STOPPED: "it was stopped",
           S.WAITING: "it waits for its host or the scheduler, and starts with it"}


def handle(sup: Supervisor, request: commands.Request) -> dict[str, Any]:
    """A change asked over the control channel (the cluster is serving); its answer."""
    core = sup.core
    if isinstance(request, commands.RollingRequest):
        return core.roller.progress(request.roll, request.since, request.wait)
    if isinstance(request, commands.RestartRequest):
        return sup._call(lambda: restart(sup, request))
    if isinstance(request, commands.ApplyRequest):
        new = applying.load(request.path)  # read here, not on the main loop; one line if invalid
        return wait_removed(core, sup._call(lambda: applying.apply(sup, new, request)))
    change = sup._call(lambda: sup._edit(request))
    if isinstance(request, commands.AdaptRequest):
        return change
    return wait_removed(core, change)


def wait_removed(core: Reconciler, change: dict[str, Any]) -> dict[str, Any]:
    """Wait until the workers being removed are gone (retired: results moved first)."""
    removing = change.get("removing") or []
    with core.removed:  # retiring on the loop's thread
        core.removed.wait_for(lambda: not any(n in core.children for n in removing), WAIT_REMOVED)
    change["retired"] = [] if change.get("kill") else sorted(n for n in removing if core.retirer.retired.get(n))
    return change


def restart(sup: Supervisor, request: commands.RestartRequest) -> dict[str, Any]:
    core = sup.core
    if core.roller.active is not None:
        raise ClusterError(core.roller.busy())
    names = targets(core, sup.cfg, request)
    if request.rolling:
        roll = core.roller.begin(core, names)
        core.tick()  # its first replacement starts now
        sup._save()
        return {"ok": True, "rolling": True, "roll": roll.id, "names": names}
    result = restart_now(core, names, "clusterctl restart")
    core.tick()
    sup._save()
    return {"ok": True, "rolling": False, **result}


def targets(core: Reconciler, cfg: Any, request: commands.RestartRequest) -> list[str]:
    """The processes a restart names: NAME..., a group's workers, or (neither) every worker."""
    if request.names and request.group:
        raise ClusterError("give process names or --group, not both")
    workers = core.desired.workers()
    if request.names:
        known = [n for n in core.desired.specs if n in core.children]
        unknown = [n for n in request.names if n not in known]
        if unknown:
            raise ClusterError(f"no supervised process named {unknown[0]!r}; processes: {', '.join(known) or 'none'}")
        names = list(dict.fromkeys(request.names))
    else:
        group = group_name(cfg, request.group) if request.group or len(cfg.workers) == 1 else None
        names = core.desired.workers(group) if group else workers
        if not names:
            raise ClusterError(f"group {group!r} has no workers to restart" if group else "there is no worker to restart")
    if request.rolling:
        if SCHEDULER in names:
            raise ClusterError("--rolling replaces workers one at a time; restart the scheduler without --rolling "
                               "(its workers restart with it)")
        busy = {n: NOT_NOW[core.children[n].state] for n in names if core.children[n].state in NOT_NOW}
        if busy:
            name, why = next(iter(busy.items()))
            raise ClusterError(f"cannot replace {name}: {why}")
    return names


def restart_now(core: Reconciler, names: list[str], why: str) -> dict[str, Any]:
    """Stop the named processes and mark them to start again at once; no restart budget is spent.
    The scheduler's restart stops every worker too: they start again with it."""
    if SCHEDULER in names:
        core.apply(bounce(core, [core.children[SCHEDULER]], why))
        core.scheduler_lost(fatal=False)  # as when it crashes: workers rejoin the new one
        core.apply([Move(c.name, S.PENDING, "waiting for the scheduler") for c in core.children.values()
                    if c.is_worker and c.state == S.EXITED and c.reason == "the scheduler is fatal"])
        back = [c.name for c in core.children.values() if c.is_worker and c.state in (S.WAITING, S.PENDING)]
        return {"restarted": [SCHEDULER, *back], "skipped": {}}
    chosen = [core.children[n] for n in names]
    skipped = {c.name: NOT_NOW[c.state] for c in chosen if c.state in NOT_NOW}
    core.apply(bounce(core, [c for c in chosen if c.name not in skipped], why))
    return {"restarted": [n for n in names if n not in skipped], "skipped": skipped}


def bounce(core: Reconciler, children: list[Child], why: str) -> list[Edit]:
    """Stop the live ones (one shared grace: a worker leaves on SIGTERM in well under a second); then
    what each becomes: started again at once, or, fatal or exited, pending with a fresh budget."""
    live = {c.name for c in children if c.state in (S.STARTING, S.RUNNING)}
    if live:
        core.fx.stop([(c.pid, c.handle) for c in children if c.name in live], core.timing.shutdown)
    now = core.clock()
    out: list[Edit] = []
    for c in children:
        code = c.handle.poll() if c.name in live and c.handle is not None else None
        said = Event(c.name, "restart-requested", f"{why}: stopped ({describe_exit(code)}); starting again",
                     {"exit_code": code}) if c.name in live else \
            Event(c.name, "restart-requested", f"{why}: was {c.state.value}; starting again")
        if c.state in (S.STARTING, S.RUNNING, S.BACKOFF):
            out.append(Move(c.name, S.BACKOFF, f"restart requested ({why})", retry_at=now, exit_code=code, event=said))
        elif c.state in (S.EXITED, S.FATAL):
            out.append(Move(c.name, S.PENDING, f"restart requested ({why})", reset=True, event=said))
        else:
            out.append(said)
    return out
