"""Scaling requests as edits of the desired set: validated against the cluster first, then
applied; the reconcile loop starts what was added and retires what was removed."""

from __future__ import annotations

from typing import Any

from ..errors import ClusterError
from ..topology import ClusterConfig
from ..topology.limits import MAX_GROUP_WORKERS
from .commands import AddRequest, RemoveRequest, Request, ScaleRequest
from .desired import pick_to_remove
from .reconcile import Reconciler
from .states import ChildState


def edit(core: Reconciler, cfg: ClusterConfig, request: Request) -> dict[str, Any]:
    """Apply one scale/add/remove request; raises ClusterError (and changes nothing) when it cannot."""
    desired, children = core.desired, core.children
    kill = bool(getattr(request, "kill", False))
    added: list[str] = []
    removing: list[str] = []

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
        if target > len(members):
            added = desired.add(group, target - len(members), taken=set(children))
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
    desired.remove(removing)
    if kill:
        core.kill_names.update(removing)
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
