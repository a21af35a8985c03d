"""`clusterctl apply` on the running supervisor: the file re-read and validated here, its plan
(apply.py, pure) made against the running topology, then carried out as edits the loop converges:
the desired set (new groups, removed groups, counts), the adapter, restart policies and timings in
place, a rolling restart for groups whose worker settings changed, and, when allowed, a scheduler
restart with its new settings (its workers restart with it, as after a scheduler crash).

The new topology replaces the supervisor's before anything starts, so every worker planned from
now on (a new group, a scale, a replacement, a restart) has the new settings. What the plan changes
of the reconciler is a list of edits (edits.py) it applies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ClusterError
from ..plan.specs import SCHEDULER, scheduler_address, scheduler_spec, worker_spec
from ..remote import inventory
from ..runtime import tls
from ..runtime.probes import PortDenied, busy_port, port_in_use
from ..topology import ClusterConfig, load_config
from .adaptive import GroupAdapt
from .apply import ChangeAction, Plan, plan
from .desired import index_of, pick_to_remove
from .edits import Add, Edit, Event, Policy, Remove, Respec, Retime, Timing
from .effects import SchedulerWatch
from .rolling import plan_worker
from .states import ChildState as S

if TYPE_CHECKING:
    from . import commands
    from .loop import Supervisor
    from .reconcile import Reconciler


def load(path: str) -> ClusterConfig:
    """The file the CLI names, validated as `validate` does (one line if it is not valid)."""
    if not os.path.isabs(path):
        raise ClusterError(f"apply: the topology's path must be absolute, not {path!r}")
    return load_config(Path(path))


def apply(sup: Supervisor, new: ClusterConfig, request: commands.ApplyRequest) -> dict[str, Any]:
    """Plan, and unless it is a dry run or refused, carry it out. On the main loop."""
    old, core = sup.cfg, sup.core
    new = keep_ports(new, old)
    # Sized as at `up` (count: auto, memory_limit: auto, gpus): the running topology was, so they compare.
    new, _ = inventory.sized(new, core.desired.counts([g.name for g in new.workers if g.name in
                                                       {o.name for o in old.workers}]), at_up=False)
    p = plan(old, new, core.desired.counts([g.name for g in old.workers]))
    refused = p.refusal(request.allow_restart)
    result: dict[str, Any] = {"ok": refused is None, "plan": p.lines(), "dry_run": request.dry_run, "refused": refused,
                              "restart": p.restart, "added": [], "removing": [], "roll": None, "rolled": []}
    if request.dry_run or refused or not p.changes:
        return result
    if core.roller.active is not None:
        raise ClusterError(core.roller.busy())
    if p.restart:
        check_ports(old, new)
        if new.tls_enabled:
            tls.ensure(new)  # certificates for the new addresses, before the scheduler reads them
    sup.cfg = new  # from here on every worker is planned with the new settings
    if any(set(c.settings) & {"owner", "hours"} for c in p.of(ChangeAction.IN_PLACE)):
        sup.owners.update(new)
    if p.restart:
        from .changes import restart_now

        restart_now(core, [SCHEDULER], "clusterctl apply --allow-restart")
    result.update(converge(core, p, new, roll=not p.restart))
    policy = any(c.subject == "scheduler.restart" for c in p.of(ChangeAction.IN_PLACE))
    if p.restart:
        respec(sup, new)
    elif policy:
        core.replace_specs([scheduler_spec(new, sup.launcher)])
    core.apply([Policy((SCHEDULER,), new.scheduler.restart)] if policy else [])
    core.apply([Event("cluster", "applied", f"{new.source}: {len(p.changes)} change{'s' * (len(p.changes) != 1)}",
                      {"changes": p.lines()})])
    sup._save_size()
    core.tick()
    sup._save()
    return result


def converge(core: Reconciler, p: Plan, new: ClusterConfig, roll: bool = True) -> dict[str, Any]:
    """The plan's edits (``edits``) applied by the reconciler; the loop converges them. The answer's part."""
    out, answer = edits(core, p, new, roll)
    core.apply(out)
    return {**answer, "workers": core.desired.counts([g.name for g in new.workers])}


def edits(core: Reconciler, p: Plan, new: ClusterConfig, roll: bool = True) -> tuple[list[Edit], dict[str, Any]]:
    """The plan as edits of the desired set, restart policies and timings (against the reconciler as
    it is: none is applied here); the adapter's groups and a rolling restart change with it."""
    out: list[Edit] = []
    added: list[str] = []
    removing: list[str] = []
    for c in p.of(ChangeAction.RETIRE):
        removing += core.desired.workers(c.group)
        out.append(Remove(tuple(core.desired.workers(c.group))))
        core.adapter.off(c.group or "")
    for c in p.of(ChangeAction.START, ChangeAction.SCALE):
        members = core.desired.workers(c.group)
        count = c.count or 0
        if count > len(members):
            specs = core.desired.plan(c.group or "", count - len(members), taken=set(core.children))
            added += [s.name for s in specs]
            out.append(Add(specs))
        elif count < len(members):
            states = [(n, core.children[n].state if n in core.children else S.PENDING) for n in members]
            gone = pick_to_remove(states, len(members) - count)
            removing += gone
            out.append(Remove(tuple(gone)))
    for c in p.of(ChangeAction.START, ChangeAction.IN_PLACE):
        if c.group is None or (c.action == ChangeAction.IN_PLACE and "adapt" not in c.settings):
            continue
        g = new.group(c.group)
        if g.adapt is not None:
            core.adapter.set(GroupAdapt.of(g))
        elif core.adapter.off(g.name):
            out.append(Event(g.name, "adapt-off", "clusterctl apply: `adapt:` left the group"))
    for c in p.of(ChangeAction.IN_PLACE):
        if c.group and "restart" in c.settings:
            members = [n for n in core.desired.workers(c.group) if n not in removing]  # the added have it
            if not any(r.group == c.group for r in p.of(ChangeAction.ROLL)):
                out.append(Respec(tuple(plan_worker(core, c.group, index_of(n), core.desired.specs[n].at)
                                        for n in members)))
            out.append(Policy(tuple(members), new.group(c.group).restart))
    out.append(Retime(Timing(new.timeouts.startup, new.timeouts.shutdown,
                             early_workers=new.launch == "concurrent" and new.scheduler.port != 0)))
    rolled: list[str] = []
    hosts: dict[str, str | None] = {}
    for c in p.of(ChangeAction.ROLL) if roll else []:
        for n in core.desired.workers(c.group):
            if n not in removing and n in core.children:
                rolled.append(n)
                hosts[n] = None if "at" in c.settings else core.children[n].spec.at
    roll_id = core.roller.begin(core, rolled, hosts, why="clusterctl apply").id if rolled else None
    return out, {"added": added, "removing": removing, "roll": roll_id, "rolled": rolled}


def keep_ports(new: ClusterConfig, old: ClusterConfig) -> ClusterConfig:
    """A port written 0 means any free one: the running scheduler's is, so it is kept."""
    s, o = new.scheduler, old.scheduler
    update = {k: getattr(o, k) for k in ("port", "dashboard_port") if getattr(s, k) == 0 and getattr(o, k)}
    return new.model_copy(update={"scheduler": s.model_copy(update=update)}) if update else new


def check_ports(old: ClusterConfig, new: ClusterConfig) -> None:
    """The new scheduler's ports must be free (those it keeps are its own): refused before anything stops."""
    a, b = old.scheduler, new.scheduler
    for label, key in (("scheduler port", "port"), ("dashboard port", "dashboard_port")):
        port = getattr(b, key)
        if not port or (port == getattr(a, key) and a.host == b.host):
            continue
        try:
            busy = port_in_use(b.host, port)
        except PortDenied as e:
            raise ClusterError(f"{label} {b.host}:{port}: {e}; nothing was changed") from e
        if busy:
            where = new.source or "cluster.yaml"
            raise ClusterError(f"{busy_port(label, b.host, port, key, where)}; nothing was changed")


def respec(sup: Supervisor, new: ClusterConfig) -> None:
    """After a scheduler restart was asked for: every desired process planned with the new topology,
    and the probe pointed at the new scheduler (its file written anew)."""
    core = sup.core
    specs = [scheduler_spec(new, sup.launcher)]
    for name, s in core.desired.specs.items():
        if s.role == "worker":
            g = new.group(s.group)
            at = s.at if s.at in g.hosts_used else None
            specs.append(worker_spec(new, sup.launcher, g, index_of(name), at=at))
    core.replace_specs(specs)
    sup.watch.close()
    info = new.state_path / "scheduler.json"
    info.unlink(missing_ok=True)  # the old scheduler's, if it could not remove it: never read as the new one's
    sup.watch = SchedulerWatch(new.scheduler.host, new.scheduler.dashboard_port, info, scheduler_address(new))
    core.use_probe(sup.watch)
