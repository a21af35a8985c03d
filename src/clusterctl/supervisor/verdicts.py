"""Health verdicts: small pure decisions, facts in, a verdict out.

Each answers one question about one child from what the scheduler last said
(``answered_at``: when, ``seen``: the workers registered then) and the child's
own timestamps, so a unit test drives them with numbers alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MEMORY_TERMINATE = 0.95  # as distributed.worker.memory.terminate, which only a nanny enforces


class Kind(StrEnum):
    OK = "ok"  # nothing to do
    READY = "ready"  # proven ready now
    UNHEALTHY = "unhealthy"  # stop it; its restart policy decides the rest
    WAIT = "wait"  # in doubt: not yet ready, or missing since ``since``


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    why: str = ""
    address: str | None = None
    since: float | None = None  # for WAIT: when the doubt began (kept by the caller)


OK = Verdict(Kind.OK)
WAIT = Verdict(Kind.WAIT)


def scheduler_verdict(*, now: float, starting: bool, started_at: float, ready_at: float | None,
                      answered_at: float, startup: float, grace: float) -> Verdict:
    """A scheduler is ready once it answers after its start, unhealthy when silent past its grace."""
    fresh = answered_at >= started_at  # an answer from this incarnation
    if starting:
        if fresh:
            return Verdict(Kind.READY)
        if now - started_at > startup:
            return Verdict(Kind.UNHEALTHY, f"did not answer within {startup:g} s of its start")
        return WAIT
    silent = now - max(answered_at, ready_at or started_at)
    if silent > grace:
        return Verdict(Kind.UNHEALTHY, f"not answering for {silent:.0f} s")
    return OK


def worker_verdict(*, now: float, name: str, starting: bool, started_at: float, ready_at: float | None,
                   unhealthy_since: float | None, answered_at: float, seen: dict[str, dict],
                   startup: float, grace: float) -> Verdict:
    """A worker is ready once an answer newer than its start lists it under its name; a running
    one that newer answers keep lacking for ``grace`` seconds is unhealthy."""
    info = seen.get(name)
    age = (info or {}).get("heartbeat_age")
    # Heard from since this incarnation started: the name may still be the previous one's, which
    # Dask keeps registered until worker-ttl when it vanished without a word (a cut link).
    if info is not None and answered_at >= started_at and (age is None or answered_at - age >= started_at):
        return Verdict(Kind.READY if starting else Kind.OK, address=info.get("address"))
    if starting:
        if now - started_at > startup:
            return Verdict(Kind.UNHEALTHY, f"did not register within {startup:g} s")
        return WAIT
    if answered_at > (ready_at or 0):  # an answer newer than its readiness lacks it
        since = unhealthy_since or answered_at
        if now - since > grace:
            return Verdict(Kind.UNHEALTHY, f"alive but not registered for {grace:g} s")
        return Verdict(Kind.WAIT, since=since)
    return OK


def memory_verdict(*, rss: int | None, limit: float | None) -> Verdict:
    """Do a nanny's one protective job for a worker run without one: past 95% of its limit, restart."""
    if not rss or not limit:
        return OK
    if rss > MEMORY_TERMINATE * limit:
        return Verdict(Kind.UNHEALTHY, f"memory {rss / 2**20:.0f} MiB is over {MEMORY_TERMINATE:.0%} "
                                    f"of its {limit / 2**20:.0f} MiB limit")
    return OK


def silence_verdict(*, now: float, heartbeat_age: float | None, stopped_since: float | None,
                    grace: float) -> Verdict:
    """A registered worker that stopped talking is hung (SIGSTOP, a task holding the GIL in C
    code, a swapping machine): Dask keeps its tasks waiting until worker-ttl (5 minutes).
    No heartbeat for ``grace`` seconds, or its process stopped (state T) that long, says so."""
    if heartbeat_age is not None and heartbeat_age > grace:
        return Verdict(Kind.UNHEALTHY, f"hung: no heartbeat for {heartbeat_age:.0f} s")
    if stopped_since is not None and now - stopped_since > grace:
        return Verdict(Kind.UNHEALTHY, f"hung: its process has been stopped for {now - stopped_since:.0f} s")
    return OK
