"""What a failure leads to: pure decisions the Reconciler applies (facts in, an outcome out).

``after_failure`` turns an exit's cause (causes.py) and the restart policy's decision (restart.py)
into the child's next state, its reason and its event. ``name_check`` says whether a replacement
may start while the scheduler may still hold its predecessor's name.

>>> after_failure(cause=Cause.NAME_TAKEN, decide=None, now=5.0, why="exit code 1", first="", source="c.yaml",
...               name="w-0").retry_at
6.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable

from ..runtime.logs import latest_run
from .causes import OUTSIDE, Cause, exit_cause
from .restart import Action, Decision
from .states import ChildState as S

NAME_RETRY = 1.0  # seconds before a worker refused as "name taken" tries again (the name is forgotten first)
NAME_WAIT = 10.0  # seconds a replacement waits for the scheduler to forget its predecessor, at most
OUTSIDE_WHY = {
    Cause.NAME_TAKEN: "its name was still taken by its previous incarnation",
    Cause.SERVER: "its host's fork server went, or its channel dropped",
    Cause.ROUTE: "its direct start failed before it ran; started through the agent",
}


@dataclass(frozen=True)
class Outcome:
    state: S  # BACKOFF (to start again at retry_at), FATAL or EXITED
    reason: str
    event: str  # "restarting" | "crash-loop" | "fatal" | "stays-down"
    detail: str
    retry_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def cause_of(code: int, tail: tuple[str, str], remote: bool) -> Cause:
    """An exit's cause from its code and its log (first cause, last lines: only its latest run counts)."""
    first, last = tail
    return exit_cause(code, f"{first}\n{latest_run(last)}", remote)


def after_failure(*, cause: Cause, decide: Callable[[], Decision] | None, now: float, why: str, first: str,
                  source: str, name: str) -> Outcome:
    """``decide`` asks the restart policy; it is called only for a crash (the others spend no budget)."""
    last = f"{why}: {first}" if first else why
    if cause == Cause.CONFIG:
        reason = f"needs an edit: {last}; fix {source}, then `clusterctl apply` (or `clusterctl restart {name}`)"
        return Outcome(S.FATAL, reason, "fatal", reason, extra={"cause": cause.value})
    if cause in OUTSIDE:
        delay = NAME_RETRY if cause == Cause.NAME_TAKEN else 0.0
        return Outcome(S.BACKOFF, f"{OUTSIDE_WHY[cause]}; restarting in {delay:.1f} s (not counted)", "restarting",
                       f"in {delay:.1f} s: {OUTSIDE_WHY[cause]} (not counted)", now + delay,
                       {"delay": delay, "cause": cause.value})
    assert decide is not None
    d = decide()
    extra = {"delay": round(d.delay, 3), "cause": cause.value}
    if d.action == Action.RESTART:
        return Outcome(S.BACKOFF, f"restarting in {d.delay:.1f} s", "restarting", f"in {d.delay:.1f} s",
                       now + d.delay, extra)
    if d.action == Action.CRASH_LOOP:
        reason = f"{d.reason}; retrying in {d.delay:.0f} s; last: {last}"
        return Outcome(S.BACKOFF, reason, "crash-loop", reason, now + d.delay, extra)
    return Outcome(S.EXITED, d.reason, "stays-down", d.reason)


def start_failure(name: str, why: str, exited: bool, first: str, last: str, log: Any) -> str:
    """Why `up` failed, as it prints it: the process, its first error line, its log's last lines."""
    if exited:
        head = f"{name} exited while starting ({why})" + (f": {first}" if first else "")
    else:
        head = f"{name} {why} (timeouts.startup)"
    return f"{head}; last lines of {log}:\n{last}"


class NameCheck(StrEnum):
    FREE = "free"  # start it
    WAIT = "wait"  # no answer since its predecessor went, or the scheduler is forgetting it
    FORGET = "forget"  # the scheduler still lists it: ask it to forget this address, then wait


def name_check(*, now: float, gone_at: float, answered_at: float, address: str | None,
               forgot: str | None) -> NameCheck:
    """A replacement never races its predecessor: while an answer newer than the predecessor's end
    still lists the name, the scheduler forgets that address (asked once per address) and the start
    waits, NAME_WAIT seconds at most (a "name taken" refusal then waits again, uncounted)."""
    if now - gone_at > NAME_WAIT:
        return NameCheck.FREE
    if answered_at < gone_at:
        return NameCheck.WAIT  # the probe runs fast while anything is pending
    if not address:
        return NameCheck.FREE
    return NameCheck.WAIT if forgot == address else NameCheck.FORGET
