"""The cluster as a whole, decided from its children and hosts: pure, the Reconciler applies it.

Start-up is over once every desired process runs, or waits for a host that does not answer; the
cluster then runs, or is degraded while a host is away or a process is fatal or crash-looping. A
host that came back is plain reachable again once all its processes run. A process starts once
what it waits for is there; a lost scheduler takes its workers along.

>>> settle(state=ClusterState.STARTING, failure=None, children={}, desired=set(), hosts=[],
...        address=None).state
<ClusterState.STARTING: 'starting'>
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Container, Iterable, Mapping

from .child import Child
from .edits import Event, Move
from .hosts import Host
from ..runtime.process import StopResult
from .states import SERVING, ChildState, ClusterState, HostState


@dataclass(frozen=True)
class Settled:
    state: ClusterState
    hosts: tuple[str, ...] = ()  # hosts back whose processes all run again: reachable now
    ready: str | None = None  # start-up is over now: what the event `ready` says


def settle(*, state: ClusterState, failure: str | None, children: Mapping[str, Child], desired: Container[str],
           hosts: Iterable[Host], address: str | None) -> Settled:
    hosts = list(hosts)
    mine = [c for n, c in children.items() if n in desired]
    settled = tuple(h.name for h in hosts if h.state == HostState.BACK and
                    all(c.state == ChildState.RUNNING for c in mine if c.spec.remote and c.spec.at == h.name))
    away = sorted(h.name for h in hosts if h.state == HostState.UNREACHABLE)
    if state == ClusterState.STARTING:
        if failure is not None or not children or not all(
                c.state in (ChildState.RUNNING, ChildState.YIELDED) or (c.spec.remote and c.spec.at in away)
                for c in mine):
            return Settled(state, settled)
        running = sum(c.is_worker and c.state == ChildState.RUNNING for c in children.values())
        missing = f"; waiting for {', '.join(away)}" if away else ""
        return Settled(ClusterState.DEGRADED if away else ClusterState.RUNNING, settled,
                       f"{running} workers at {address}{missing}")
    if state in SERVING:
        down = any(c.state == ChildState.FATAL or c.state == ChildState.BACKOFF and c.tracker.loops
                   for c in children.values())
        return Settled(ClusterState.DEGRADED if down or away else ClusterState.RUNNING, settled)
    return Settled(state, settled)


def orphaned(children: Iterable[Child], stopped: Container[str], fatal: bool) -> list[Move]:
    """Workers never reconnect to a restarted scheduler: those not down wait for the next one
    (``stopped``: the live ones just stopped, said so); with a fatal scheduler nothing is left to
    rejoin, so waiting ones stay down, saying why."""
    moves = []
    for c in [c for c in children if c.is_worker]:
        waits = c.state == ChildState.WAITING
        if c.state in (ChildState.STARTING, ChildState.RUNNING, ChildState.BACKOFF, ChildState.PENDING):
            said = Event(c.name, "stopped", "scheduler lost; will rejoin the new one") if c.name in stopped else None
            moves.append(Move(c.name, ChildState.WAITING, "waiting for the scheduler", event=said))
            waits = True
        if fatal and waits:
            moves.append(Move(c.name, ChildState.EXITED, "the scheduler is fatal"))
    return moves


def can_run(c: Child, sched: Child | None, host_usable: bool) -> bool:
    """Its host answers and, for a worker, the scheduler is up: what it waits for is there."""
    return host_usable and (not c.is_worker or sched is not None and sched.state in (ChildState.STARTING,
                                                                                     ChildState.RUNNING))


def scheduler_lets(sched: Child, early_workers: bool) -> bool:
    """A worker starts once the scheduler runs; with a fixed address (``early_workers``), or once it
    restarted, while it starts (the worker's interpreter and imports overlap the scheduler's)."""
    return sched.state == ChildState.RUNNING or early_workers or sched.spawns > 1


def host_required(state: ClusterState, c: Child, host: Host | None) -> bool:
    """Start-up fails for its host (the scheduler's, or one with `required: true`) rather than waiting."""
    return state == ClusterState.STARTING and (c.spec.role == "scheduler" or bool(host and host.required))


def stopped(c: Child, result: StopResult, emit: Callable[..., None]) -> None:
    """A child stopped by `down` (``result``: how its stop went); one already down keeps why."""
    if c.state in (ChildState.EXITED, ChildState.FATAL) and result == StopResult.GONE:
        return
    c.move(ChildState.STOPPED, "killed after the shutdown grace" if result == StopResult.KILLED else "stopped by operator")
    if result != StopResult.GONE:
        emit(c.name, "stopped", result)
