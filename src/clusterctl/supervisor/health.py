"""Judging health each tick: the pure verdicts (verdicts.py) for the scheduler and every worker,
as one judgement per process that the Reconciler carries out (``Reconciler.judged``: ready, in
doubt, or unhealthy: stopped, then the restart policy)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..plan.specs import SCHEDULER
from ..plan.ssh import ALIVE_COUNT, ALIVE_INTERVAL
from .child import Child
from .states import ChildState as S
from .verdicts import OK, Kind, Verdict, memory_verdict, scheduler_verdict, silence_verdict, worker_verdict

if TYPE_CHECKING:
    from .reconcile import Reconciler

MEMORY_EVERY = 1.0  # seconds between the per-process checks (memory, SIGSTOP)
SSH_NOTICE = ALIVE_INTERVAL * ALIVE_COUNT  # seconds ssh takes to notice a dead link
UNHEALTHY_GRACE = 2.0  # stop grace for a process found unhealthy


@dataclass(frozen=True)
class Judgement:
    """One process this tick: what the scheduler's answer says of it, then (a running one, once a
    second) what its process says; ``stopped_since`` is when it was first seen SIGSTOPped, and
    ``grace`` the stop grace if either verdict is unhealthy (0: silent or hung, it cannot leave politely)."""

    registered: Verdict  # READY (with its address), OK, WAIT (in doubt since ``since``) or UNHEALTHY
    stopped_since: float | None = None
    process: Verdict = OK  # UNHEALTHY: hung, or a worker without a nanny over its memory limit
    grace: float = UNHEALTHY_GRACE


class Health:
    """The judge, with its one state: when the per-process checks are due next."""

    def __init__(self) -> None:
        self.next_memory = 0.0

    def judge(self, core: Reconciler, now: float) -> None:
        """The scheduler first (workers register only with a running one), then each worker; each
        judgement is the Reconciler's to carry out, one worker's error that worker's failure."""
        sched = core.children.get(SCHEDULER)
        if sched is None or sched.state not in (S.STARTING, S.RUNNING):
            return
        core.judged(sched, judge_scheduler(core, sched, now), now)
        if sched.state != S.RUNNING:
            return
        memory = now >= self.next_memory
        if memory:
            self.next_memory = now + MEMORY_EVERY
        for c in [c for c in core.children.values() if c.is_worker and c.state in (S.STARTING, S.RUNNING)]:
            core.guard(c, "health", lambda c=c: core.judged(c, judge_worker(core, c, now, memory), now))


def judge_scheduler(core: Reconciler, sched: Child, now: float) -> Judgement:
    v = scheduler_verdict(now=now, starting=sched.state == S.STARTING, started_at=sched.started_at,
                          ready_at=sched.ready_at, answered_at=core.probe.answered_at,
                          startup=core.timing.startup, grace=sched.spec.restart.unhealthy_grace)
    # Ready at the address it answers on; silent, it cannot act on SIGTERM either.
    return Judgement(replace(v, address=core.probe.address), sched.stopped_since, grace=0.0)


def judge_worker(core: Reconciler, c: Child, now: float, memory: bool) -> Judgement:
    seen = core.probe.workers or {}
    v = worker_verdict(now=now, name=c.name, starting=c.state == S.STARTING, started_at=c.started_at,
                       ready_at=c.ready_at, unhealthy_since=c.unhealthy_since, answered_at=core.probe.answered_at,
                       seen=seen, startup=core.timing.startup, grace=c.spec.restart.unhealthy_grace)
    running = c.state == S.RUNNING or v.kind == Kind.READY
    if v.kind == Kind.UNHEALTHY or not running or not memory or c.pid is None:
        return Judgement(v, c.stopped_since)  # the process checks below run once a second
    info = seen.get(c.name) or {}
    stopped_since = (c.stopped_since or now) if core.fx.is_stopped(c.pid) else None
    grace = c.spec.restart.unhealthy_grace
    age = info.get("heartbeat_age")
    hung = silence_verdict(now=now, heartbeat_age=age, stopped_since=stopped_since, grace=grace)
    if hung.kind == Kind.UNHEALTHY and c.spec.remote:
        # Silence may be a cut link rather than a hung process: a host that answers a fresh ssh
        # connection made after the silence began is there, so its worker is hung. Until it
        # answers (or if it does not), ssh's keep-alives judge first and its host then waits.
        if core.fleet.answers(c.spec.at, since=now - (age or 0.0)) is not True:
            hung = silence_verdict(now=now, heartbeat_age=age, stopped_since=stopped_since,
                                   grace=max(grace, SSH_NOTICE + 5))
    if hung.kind == Kind.UNHEALTHY:  # a hung process cannot leave politely
        return Judgement(v, stopped_since, hung, grace=0.0)
    if not c.spec.nanny:  # a nanny restarts a worker over its memory limit itself
        return Judgement(v, stopped_since, memory_verdict(rss=core.fx.rss(c.pid), limit=info.get("memory_limit")))
    return Judgement(v, stopped_since)
