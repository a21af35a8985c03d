"""Judging health each tick: the pure verdicts (verdicts.py) applied to the scheduler and every
worker, and their consequences (ready, or unhealthy: stopped, then the restart policy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..plan.specs import SCHEDULER
from ..plan.ssh import ALIVE_COUNT, ALIVE_INTERVAL
from .child import Child
from .states import ChildState as S
from .verdicts import Kind, memory_verdict, scheduler_verdict, silence_verdict, worker_verdict

if TYPE_CHECKING:
    from .reconcile import Reconciler

MEMORY_EVERY = 1.0  # seconds between the per-process checks (memory, SIGSTOP)
SSH_NOTICE = ALIVE_INTERVAL * ALIVE_COUNT  # seconds ssh takes to notice a dead link


def judge(core: Reconciler, now: float) -> None:
    sched = core.children.get(SCHEDULER)
    if sched is None or sched.state not in (S.STARTING, S.RUNNING):
        return
    v = scheduler_verdict(now=now, starting=sched.state == S.STARTING, started_at=sched.started_at,
                          ready_at=sched.ready_at, answered_at=core.probe.answered_at,
                          startup=core.timing.startup, grace=sched.spec.restart.unhealthy_grace)
    if v.kind == Kind.READY:
        core.mark_ready(sched, core.probe.address, now)
        core.on_scheduler_ready(core.probe.address)
    elif v.kind == Kind.UNHEALTHY:  # silent: it cannot act on SIGTERM either
        return core.mark_unhealthy(sched, v.why, now, grace=0.0)
    if sched.state != S.RUNNING:
        return  # workers register only with a running scheduler
    memory = now >= core.next_memory
    if memory:
        core.next_memory = now + MEMORY_EVERY
    for c in [c for c in core.children.values() if c.is_worker and c.state in (S.STARTING, S.RUNNING)]:
        core.guard(c, "health", judge_worker, core, c, now, memory)


def judge_worker(core: Reconciler, c: Child, now: float, memory: bool) -> None:
    seen = core.probe.workers or {}
    v = worker_verdict(now=now, name=c.name, starting=c.state == S.STARTING, started_at=c.started_at,
                       ready_at=c.ready_at, unhealthy_since=c.unhealthy_since, answered_at=core.probe.answered_at,
                       seen=seen, startup=core.timing.startup, grace=c.spec.restart.unhealthy_grace)
    if v.kind == Kind.READY:
        core.mark_ready(c, v.address, now)
    elif v.kind == Kind.OK:
        c.unhealthy_since = None
    elif v.kind == Kind.WAIT:
        c.unhealthy_since = v.since
    else:
        return core.mark_unhealthy(c, v.why, now)
    if c.state != S.RUNNING or not memory or c.pid is None:
        return  # the process checks below run once a second
    info = seen.get(c.name) or {}
    c.stopped_since = (c.stopped_since or now) if core.fx.is_stopped(c.pid) else None
    grace = c.spec.restart.unhealthy_grace
    age = info.get("heartbeat_age")
    v = silence_verdict(now=now, heartbeat_age=age, stopped_since=c.stopped_since, grace=grace)
    if v.kind == Kind.UNHEALTHY and c.spec.remote:
        # Silence may be a cut link rather than a hung process: a host that answers a fresh ssh
        # connection made after the silence began is there, so its worker is hung. Until it
        # answers (or if it does not), ssh's keep-alives judge first and its host then waits.
        if core.fleet.answers(c.spec.at, since=now - (age or 0.0)) is not True:
            v = silence_verdict(now=now, heartbeat_age=age, stopped_since=c.stopped_since,
                                grace=max(grace, SSH_NOTICE + 5))
    if v.kind == Kind.UNHEALTHY:  # a hung process cannot leave politely
        return core.mark_unhealthy(c, v.why, now, grace=0.0)
    if not c.spec.nanny:  # a nanny restarts a worker over its memory limit itself
        v = memory_verdict(rss=core.fx.rss(c.pid), limit=info.get("memory_limit"))
        if v.kind == Kind.UNHEALTHY:
            core.mark_unhealthy(c, v.why, now)
