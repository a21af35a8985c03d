"""A host yields to the person at its keyboard, and to its hours: pure decisions, one host at a time.

HTCondor's desktop rule: work runs while the owner is idle and inside the host's hours; when the
owner comes back the workers pause (Dask's paused status: no new task starts there, running ones
finish), retire gracefully after ``retire_after`` seconds paused (their results move first), and
come back after ``resume_after`` seconds of owner-idle. Outside its hours a host's workers retire.

The owner's state comes from the host's watcher (remote/ownerwatch.py, run there): active, idle,
or unknown (a command timed out, the watcher is not answering). Unknown changes nothing: the
workers keep doing what they did. Yielding is never a failure: no restart budget is spent.

    >>> h = HostYield("ws1", policy)                               # doctest: +SKIP
    >>> h.step(Reading(active=True, ...), local_now, now)          # [Event(owner-active), Pause()]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ..topology.owner import HostPolicy


STARTING = 5.0  # seconds past the command's timeout before an unknown owner at start is news


class Owner(StrEnum):
    IDLE = "idle"
    ACTIVE = "active"
    UNKNOWN = "unknown"


class Mode(StrEnum):
    RUN = "run"  # workers run
    PAUSED = "paused"  # workers paused (Dask's status): no new task starts there
    AWAY = "away"  # workers retired or stopped: not started until the host is free again


@dataclass(frozen=True)
class Reading:
    """One line of a host's watcher, as the supervisor needs it."""

    active: bool | None  # None: unknown
    why: str = ""  # which signal said so, or why unknown
    utcoffset: float | None = None  # the host's local offset, seconds (None: this machine's)


EVENTS = {"pause": "owner-pause", "unpause": "owner-resume", "retire": "yield", "stop": "yield", "return": "yield-over"}


@dataclass(frozen=True)
class Decision:
    """What the host's workers are to do now: ``kind`` pause | unpause | retire | stop | return,
    or nothing (``kind`` empty); ``event`` is always what is said of it."""

    kind: str
    event: str
    detail: str = ""


@dataclass
class HostYield:
    host: str
    policy: HostPolicy
    owner: Owner = Owner.IDLE
    owner_since: float = 0.0  # supervisor clock
    owner_why: str = ""
    in_hours: bool = True
    mode: Mode = Mode.RUN
    mode_since: float = 0.0
    reason: str = ""  # why the workers do not run, for people
    cause: str = ""  # what keeps them paused or away: "owner" or "hours" ("" while they run)
    how: str = ""  # how they left: "retire" or "stop"
    why_unknown: str = ""
    first_at: float | None = None  # its first judgement (supervisor clock)
    known: bool = False  # a reading said active or idle once

    starting: bool = True  # watched, and no reading has said active or idle yet (for a short while)

    @property
    def holds(self) -> bool:
        """Its workers are not to start: they are away, or the owner is not known yet (at `up`, or a
        new supervisor adopting the cluster: workers start only once the owner is known idle)."""
        return self.mode == Mode.AWAY or self.starting and self.policy.watched

    def step(self, reading: Reading | None, local_now: datetime | None, now: float) -> list[Decision]:
        """One judgement: the reading (None: no watcher here, or none yet), the host's local time."""
        out: list[Decision] = []
        if reading is not None:
            out += self._owner(reading, now)
        schedule = self.policy.schedule()
        if schedule is not None and local_now is not None:
            inside = schedule.contains(local_now)
            if inside != self.in_hours:
                self.in_hours = inside
                out.append(Decision("", "hours-in" if inside else "hours-out",
                                    f"{'inside' if inside else 'outside'} hours {schedule}"))
        out += self._mode(now)
        self.starting = self._settling(now)
        return out

    def _settling(self, now: float) -> bool:
        """No reading has said active or idle yet, within the command's timeout + STARTING of the first."""
        timeout = self.policy.owner.active_if.command_timeout if self.policy.owner else 0.0
        return not self.known and (self.first_at is None or now - self.first_at < timeout + STARTING)

    def _owner(self, r: Reading, now: float) -> list[Decision]:
        self.first_at = now if self.first_at is None else self.first_at
        if r.active is None:  # one event per spell of not knowing; the workers carry on as they were
            if self._settling(now):
                self.owner_why = r.why  # the watcher's first lines (nothing run yet): not news
                return []
            if self.why_unknown == r.why:
                return []
            self.why_unknown = r.why
            return [Decision("", "owner-unknown", f"{r.why}; keeping the last known state ({self.owner.value})")]
        self.why_unknown, self.known = "", True
        state = Owner.ACTIVE if r.active else Owner.IDLE
        if state == self.owner:
            self.owner_why = r.why or self.owner_why
            return []
        self.owner, self.owner_since, self.owner_why = state, now, r.why
        return [Decision("", f"owner-{state.value}", r.why)]

    def _mode(self, now: float) -> list[Decision]:
        p = self.policy.owner
        active = self.owner == Owner.ACTIVE and p is not None
        if not self.in_hours:
            return self._to(Mode.AWAY, "retire", now, "outside its hours", "hours")
        if active:
            assert p is not None
            if self.mode == Mode.RUN:
                how = {"pause": Mode.PAUSED}.get(p.when_active, Mode.AWAY)
                return self._to(how, "pause" if how == Mode.PAUSED else p.when_active, now, "owner active", "owner")
            if self.mode == Mode.PAUSED and now - self.mode_since >= p.retire_after:
                return self._to(Mode.AWAY, "retire", now, f"owner active; paused {p.retire_after:g} s", "owner")
            if self.cause == "hours":  # back inside them, but the owner is here
                self.cause, self.reason = "owner", "owner active"
            return []
        if self.mode == Mode.RUN:
            return []
        idle_for = now - self.owner_since if self.owner == Owner.IDLE else 0.0
        left_hours = self.cause == "hours"
        if p is None or left_hours or idle_for >= p.resume_after:
            why = "back inside its hours" if left_hours else f"owner idle {idle_for:.0f} s"
            return self._to(Mode.RUN, "unpause" if self.mode == Mode.PAUSED else "return", now, why)
        return []

    def _to(self, mode: Mode, kind: str, now: float, why: str, cause: str = "") -> list[Decision]:
        if mode == self.mode:
            return []
        self.mode, self.mode_since, self.reason, self.cause = mode, now, "" if mode == Mode.RUN else why, cause
        self.how = kind if mode == Mode.AWAY else ""
        return [Decision(kind, EVENTS[kind], why)]

    def status(self) -> dict[str, Any]:
        """The host's line of `status --json` ``hosts[]``: owner and schedule."""
        watched = self.policy.watched
        return {
            "owner": (Owner.UNKNOWN.value if not self.known or self.why_unknown else self.owner.value)
            if watched else None,
            "owner_why": (self.owner_why or self.why_unknown) if watched else "",
            "owner_since": self.owner_since,
            "schedule": {"hours": str(self.policy.schedule()), "inside": self.in_hours} if self.policy.hours else None,
            "workers": self.mode.value,
            "yield_reason": self.reason,
        }


def carry(e: Any, children: dict[str, Any], retirer: Any) -> None:
    """The Reconciler's part of a Yield or a Return (edits.py), on the children it holds."""
    from .edits import Yield
    from .states import ChildState as S

    mine = [children[n] for n in e.names if n in children]
    if isinstance(e, Yield):
        going = [c for c in mine if c.state in (S.STARTING, S.RUNNING)]
        for c in going:
            c.move(S.YIELDING, e.reason)
        for c in mine:
            if c.state in (S.PENDING, S.BACKOFF, S.WAITING):
                c.move(S.YIELDED, e.reason)
        retirer.yield_(going, e.polite)
    else:
        for c in mine:
            if c.state == S.YIELDED:
                c.move(S.PENDING, "")
                c.came_back = True
