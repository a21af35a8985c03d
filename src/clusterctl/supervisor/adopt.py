"""Adoption: `up` over a cluster whose supervisor was SIGKILLed supervises what still runs.

Without it, a killed supervisor left the cluster unsupervised and `up` refused until
`down` had stopped everything, losing every result held in memory. Now the new
supervisor reads the ledger (under the lock) and, for each recorded process, adopts it
when all three identities hold: its pid is alive, its create time matches, and it
carries the cluster's tag (ProcessId.get()). Adopted children start `running`, keep
their pids and restart counts, and are never restarted for being adopted; the next
probe proves them (the scheduler answers, each worker is registered under its name)
and the existing verdicts handle one that is not.

- The scheduler comes first: workers never reconnect to another one, so if the
  scheduler cannot be adopted nothing is, and what is left of its workers is stopped
  (they exit by themselves 2.3 s after it anyway); `up` then starts afresh.
- Its address and HTTP port come from the ledger: a port-0 scheduler's ports are pinned
  into the plan, and the probe asks that port from the start.
- A remote process (ssh ... clusterctl.remote.agent) cannot be adopted: its lifeline, the
  ssh child's stdin, closed with the old supervisor and the agent stops its Dask process on
  that EOF. Its local ssh, if still there, is stopped; the scheduler is asked to drop its
  worker's address (so the name is free), and the loop starts it again.
- What is recorded but gone (or is no longer ours) is started again by the loop, as a restart.
- The old supervisor's helpers (the warm fork server, in its process group) are reaped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import psutil

from ..plan.specs import ProcessSpec
from ..runtime import process
from ..runtime.handles import Adopted
from ..runtime.ledger import LedgerRecord, ProcessRecord
from ..runtime.process import ProcessId
from ..runtime.remains import leftovers, strangers  # noqa: F401 - what `up` checks too; here for the supervisor
from ..topology import LOCAL_HOST, ClusterConfig
from .child import Child
from .states import ChildState as S

if TYPE_CHECKING:
    from .reconcile import Reconciler

STRAY_GRACE = 2.0  # seconds a process that cannot be adopted gets to leave before SIGKILL

Live = Callable[[ProcessId], bool]


def _live(ident: ProcessId) -> bool:
    return ident.get() is not None


@dataclass
class Survey:
    """What a new supervisor found of the previous run (empty: nothing to adopt)."""

    old_supervisor: ProcessId | None = None
    address: str | None = None  # the adopted scheduler's, from the ledger
    http_port: int | None = None
    adopt: list[tuple[ProcessRecord, ProcessId]] = field(default_factory=list)  # live, local, ours
    stray: list[tuple[ProcessRecord, ProcessId]] = field(default_factory=list)  # ours and alive, not adoptable
    lost: list[ProcessRecord] = field(default_factory=list)  # recorded, gone (or not ours): started again
    forget: list[str] = field(default_factory=list)  # remote workers' Dask addresses

    @property
    def scheduler(self) -> bool:
        """True when the scheduler is adopted, so everything else may be."""
        return any(p.role == "scheduler" for p, _ in self.adopt)


def survey(record: LedgerRecord | None, tag: str, live: Live = _live) -> Survey:
    """Sort the previous run's processes: adopt, stop (ours but not adoptable), or start again."""
    out = Survey()
    if record is None:
        return out
    out.old_supervisor = record.supervisor_id
    sched_rec = next((p for p in record.processes if p.role == "scheduler"), None)
    ours = {p.name: ident for p, pid in record.process_ids() if live(ident := pid.tagged(tag))}
    http_port = record.scheduler.http_port
    sched_ok = (sched_rec is not None and sched_rec.name in ours and not _remote(sched_rec)
                and bool(record.scheduler.address) and bool(http_port))
    if sched_ok:
        out.address, out.http_port = record.scheduler.address, http_port
    for p in record.processes:
        ident = ours.get(p.name)
        if sched_ok and ident is not None and not _remote(p):
            out.adopt.append((p, ident))
            continue
        if ident is not None:
            out.stray.append((p, ident))
        if sched_ok and p.pid:
            out.lost.append(p)
            if _remote(p) and p.role == "worker" and p.address:
                out.forget.append(p.address)
    return out


def _remote(p: ProcessRecord) -> bool:
    return (p.at or LOCAL_HOST) != LOCAL_HOST


def pin_ports(cfg: ClusterConfig, found: Survey) -> ClusterConfig:
    """The adopted scheduler's ports in the plan: a port-0 scheduler's are whatever it got."""
    s = cfg.scheduler
    if not found.scheduler or (s.port and s.dashboard_port):
        return cfg
    port = int(str(found.address).rsplit(":", 1)[1])
    return cfg.model_copy(update={"scheduler": s.model_copy(update={
        "port": s.port or port, "dashboard_port": s.dashboard_port or found.http_port})})


def stop_strays(found: Survey, tag: str, core: Reconciler) -> None:
    """Stop what is ours but cannot be adopted, and the old supervisor's helpers (its warm fork
    server shares its process group; no adopted process does: each has its own session). Then
    ask the scheduler to drop the remote workers of the old run, so their names are free."""
    targets: list[tuple[ProcessId, Any]] = [(ident, None) for _, ident in found.stray]
    old = found.old_supervisor
    if old is not None and old.pid != os.getpid() and not old.alive():
        targets.append((old.tagged(tag), None))
    if targets:
        process.stop_many(targets, STRAY_GRACE)
    for p, _ in found.stray:
        core.fx.emit(p.name, "stopped", "ours, but it cannot be adopted")
    if found.forget:
        try:
            core.fx.forget(found.forget)
        except Exception as e:  # noqa: BLE001 - then they wait for Dask to drop them (worker-ttl at most)
            core.errors.log("forget", e)


def install(found: Survey, core: Reconciler, planned: dict[str, ProcessSpec],
            plan_worker: Callable[[str, int], ProcessSpec]) -> tuple[list[str], list[str]]:
    """Put the adopted children in `running` and the lost ones in `pending` (a restart), with the
    restart counts the ledger kept. An adopted worker the plan lacks is retired by the loop; one
    whose group has left the config is stopped. Returns (adopted names, names started again)."""
    if not found.scheduler:
        return [], []

    def spec_for(name: str, group: str) -> ProcessSpec | None:
        if name in planned:
            return planned[name]
        try:
            return plan_worker(group, int(name.rsplit("-", 1)[1]))
        except (KeyError, ValueError, IndexError):
            return None

    children, tracker, emit = core.children, core.tracker, core.fx.emit
    now, wall = core.clock(), time.time()
    old = found.old_supervisor.pid if found.old_supervisor else None
    adopted: list[str] = []
    for p, ident in found.adopt:
        spec = spec_for(p.name, p.group)
        if spec is None:  # its group is gone from the config: nothing to supervise it by
            found.stray.append((p, ident))
            continue
        try:
            since = psutil.Process(ident.pid).create_time()
        except psutil.Error:
            since = ident.create_time
        handle = Adopted(ident)
        children[p.name] = Child(
            spec=spec, tracker=tracker(spec.restart), state=S.RUNNING, handle=handle, pid=ident,
            restarts=p.restarts, started_at=now - max(0.0, wall - since), started_wall=p.started or since,
            ready_at=now, address=p.address if p.role == "worker" else found.address, spawns=1,
            reason=f"adopted from supervisor pid {old}")
        adopted.append(p.name)
        emit(p.name, "adopted", f"pid {ident.pid}, running since {time.strftime('%H:%M:%S', time.localtime(since))}; "
                                f"supervisor pid {old} had gone", pid=ident.pid)
    again: list[str] = []
    for p in found.lost:
        spec = spec_for(p.name, p.group)
        if spec is None or p.name in children:
            continue
        children[p.name] = Child(spec=spec, tracker=tracker(spec.restart), restarts=p.restarts, spawns=1,
                                 reason="not running when adopted: starting again")
        again.append(p.name)
        why = "its agent stopped it with the old supervisor's lifeline" if spec.remote else f"pid {p.pid} had gone"
        emit(p.name, "lost", f"{why}; starting it again")
    emit("cluster", "adopted", f"{len(adopted)} process(es) from supervisor pid {old}"
         + (f"; starting again: {', '.join(again)}" if again else ""),
         supervisor=os.getpid(), adopted=adopted, restarted=again)
    return adopted, again
