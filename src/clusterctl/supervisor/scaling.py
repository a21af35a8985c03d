"""Scaling requests as edits of the desired set (edits.py): validated against the cluster first,
then applied by the reconciler; the reconcile loop starts what was added and retires what was removed."""

from __future__ import annotations

from typing import Any

from ..errors import ClusterError
from ..topology import ClusterConfig
from ..topology.limits import MAX_GROUP_WORKERS
from ..topology.adapt import AdaptConfig
from .adaptive import GroupAdapt
from .commands import AdaptRequest, AddRequest, RemoveRequest, Request, ScaleRequest
from .desired import pick_to_remove
from .edits import Add, Edit, Event, Remove
from .reconcile import Reconciler
from .states import ChildState


def edit(core: Reconciler, cfg: ClusterConfig, request: Request) -> dict[str, Any]:
    """Apply one scale/add/remove/adapt request; raises ClusterError (and changes nothing) when it cannot.
    A fixed size asked for a group that adapts ends its adaptive mode, as Dask's cluster.scale() does."""
    if isinstance(request, AdaptRequest):
        return adapt(core, cfg, request)
    if core.roller.active is not None:  # the roll sizes its groups while it lasts
        raise ClusterError(core.roller.busy())
    desired, children = core.desired, core.children
    kill = bool(getattr(request, "kill", False))
    added: list[str] = []
    removing: list[str] = []
    edits: list[Edit] = []

    def states(names: list[str]) -> list[tuple[str, str]]:
        return [(n, children[n].state if n in children else ChildState.PENDING) for n in names]

    if isinstance(request, (ScaleRequest, AddRequest)):
        group = group_name(cfg, request.group)
        members = desired.workers(group)
        target = request.count if isinstance(request, ScaleRequest) else len(members) + request.count
        if target > MAX_GROUP_WORKERS:
            raise ClusterError(f"{target} workers is more than the {MAX_GROUP_WORKERS} a group may have")
        total = len(desired.workers()) - len(members) + target
        if total > cfg.max_workers:
            raise ClusterError(
                f"{total} workers in all is more than max_workers, {cfg.max_workers}; raise `max_workers:` "
                "in cluster.yaml (up to 16384) or scale another group down")
        if core.adapter.off(group):  # a fixed size ends adaptive mode (accepted requests only)
            edits.append(Event(group, "adapt-off", f"a fixed size was asked for ({type(request).__name__})"))
        if target > len(members):
            specs = desired.plan(group, target - len(members), taken=set(children))
            added = [s.name for s in specs]
            edits.append(Add(specs))
        else:
            removing = pick_to_remove(states(members), len(members) - target)
    elif isinstance(request, RemoveRequest):
        if request.names:
            workers = set(desired.workers())
            unknown = [n for n in request.names if n not in workers]
            if unknown:
                raise ClusterError(f"no supervised worker named {unknown[0]!r}; "
                                   f"workers: {', '.join(sorted(workers)) or 'none'}")
            removing = list(dict.fromkeys(request.names))
        else:
            removing = pick_to_remove(states(desired.workers(group_name(cfg, request.group))), request.count or 0)
    core.apply([*edits, Remove(tuple(removing), kill=kill)] if removing else edits)
    groups = [g.name for g in cfg.workers]
    return {"ok": True, "added": added, "removing": removing, "kill": kill, "workers": desired.counts(groups)}


def group_name(cfg: ClusterConfig, name: str | None) -> str:
    groups = [g.name for g in cfg.workers]
    if name is None:
        if len(groups) == 1:
            return groups[0]
        raise ClusterError(f"this cluster has several worker groups ({', '.join(groups)}); say which with --group")
    if name not in groups:
        raise ClusterError(f"no worker group {name!r}; groups: {', '.join(groups)}")
    return name


def adapt(core: Reconciler, cfg: ClusterConfig, request: AdaptRequest) -> dict[str, Any]:
    """`clusterctl adapt`: a group follows Dask's recommendation between --min and --max (unset values
    come from its `adapt:` in cluster.yaml, then the defaults); `--off` keeps its current size."""
    group = group_name(cfg, request.group)
    g = cfg.group(group)
    if request.off:
        was = core.adapter.off(group)
        if was:
            core.apply([Event(group, "adapt-off", f"fixed at {len(core.desired.workers(group))} workers "
                              "(clusterctl adapt --off)")])
        return {"ok": True, "group": group, "adaptive": None, "was_adaptive": was,
                "workers": len(core.desired.workers(group))}
    base = (g.adapt or AdaptConfig()).model_dump()  # the defaults are AdaptConfig's
    old = core.adapter.groups.get(group)
    if old is not None:
        base.update(old.to_dict())
    pick = {k: getattr(request, k) for k in ("minimum", "maximum", "target_duration", "wait_count", "interval")
            if getattr(request, k) is not None}
    merged = {**base, **pick}
    cap = sum(g.at.values()) if isinstance(g.at, dict) else MAX_GROUP_WORKERS  # a map: the most per host
    maximum = min(int(merged["maximum"]), cap)
    if int(merged["minimum"]) > maximum:
        raise ClusterError(f"adapt: minimum {merged['minimum']} is more than maximum {maximum} for group {group!r}")
    total = len(core.desired.workers()) - len(core.desired.workers(group)) + maximum
    if total > cfg.max_workers:
        raise ClusterError(f"adapt: up to {total} workers in all is more than max_workers, {cfg.max_workers}")
    ga = GroupAdapt(group, int(merged["minimum"]), maximum, float(merged["target_duration"]),
                    int(merged["wait_count"]), float(merged["interval"]))
    core.adapter.set(ga)
    core.apply([Event(group, "adapt-on", f"between {ga.minimum} and {ga.maximum} workers, target duration "
                      f"{ga.target_duration:g} s, {ga.wait_count} lower answers to shrink")])
    return {"ok": True, "group": group, "adaptive": ga.to_dict(), "workers": len(core.desired.workers(group))}

