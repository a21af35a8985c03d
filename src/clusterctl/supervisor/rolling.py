"""Rolling restarts: workers replaced one at a time, the group never below its size.

A roll is a small state machine the reconcile loop ticks (``Reconciler.tick``), so nothing
blocks: for each old worker a replacement joins the desired set under a new name (its group's
lowest free index, on the old worker's host unless told otherwise), and once the scheduler lists
it, the old worker leaves the desired set and is retired gracefully (Dask moves its results
first); then the next. The control thread only reads the steps (``Roller.progress``).

A replacement that does not start (spawn failure, exit, unhealthy, not registered in time) stops
the roll: it leaves the desired set and the old worker keeps running. A scheduler lost mid-way
stops it too (every worker restarts with the scheduler). A stop of the supervisor ends it with
everything else. Every step is an event ``rolling-restart`` with its progress.

The roller keeps its rolls; what they change of the cluster (a replacement planned, an old worker
or a failed replacement removed, each step's event) it returns as edits the Reconciler applies."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..errors import ClusterError
from ..plan.specs import SCHEDULER, ProcessSpec
from .edits import Add, Edit, Event, Remove
from .states import ChildState as S

if TYPE_CHECKING:
    from .reconcile import Reconciler

KEEP_ROLLS = 8  # finished rolls kept for progress queries
START_SLACK = 15.0  # seconds past timeouts.startup before a replacement that never settles fails the roll
FAILED_START = frozenset({S.BACKOFF, S.FATAL, S.EXITED, S.WAITING, S.STOPPED})


class Phase(StrEnum):
    START = "start"  # plan the next replacement
    WAIT = "wait"  # until the scheduler lists it
    RETIRE = "retire"  # until the old worker has left
    DONE = "done"
    FAILED = "failed"


@dataclass
class Roll:
    id: int
    names: list[str]  # the old workers, in the order they are replaced
    hosts: dict[str, str | None]  # old name -> the host its replacement runs on (None: by the group's placement)
    why: str = "clusterctl restart --rolling"
    index: int = 0  # the old worker being replaced now
    phase: Phase = Phase.START  # start -> wait -> retire -> start ... -> done | failed
    new: str | None = None  # its replacement
    since: float = 0.0  # when the phase began (supervisor clock)
    began: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    replaced: list[list[str]] = field(default_factory=list)  # [old, new] pairs done
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)

    @property
    def old(self) -> str:
        return self.names[self.index]

    def to_dict(self, since: int = 0) -> dict[str, Any]:
        return {"roll": self.id, "names": list(self.names), "steps": self.steps[since:], "next": len(self.steps),
                "done": self.finished, "error": self.error, "replaced": [list(p) for p in self.replaced]}


class Roller:
    """The rolling restart under way (one at a time) and the last few that finished."""

    def __init__(self) -> None:
        self.active: Roll | None = None
        self.rolls: dict[int, Roll] = {}
        self.changed = threading.Condition()  # notified at every step
        self.unsaid: list[Edit] = []  # a roll's first step, said at the next tick
        self._next = 1

    def begin(self, core: Reconciler, names: list[str], hosts: dict[str, str | None] | None = None,
              why: str = "clusterctl restart --rolling") -> Roll:
        """A roll over ``names`` (desired workers), started (and said) at the next tick."""
        if self.active is not None:
            raise ClusterError(self.busy())
        if not names:
            raise ClusterError("no worker to restart")
        keep = {n: core.children[n].spec.at if n in core.children else None for n in names}
        roll = Roll(self._next, list(names), keep if hosts is None else dict(hosts), why, began=core.clock(),
                    since=core.clock())
        self._next += 1
        with self.changed:
            self.active = roll
            self.rolls[roll.id] = roll
            for old in sorted(self.rolls)[:-KEEP_ROLLS]:
                del self.rolls[old]
        self.unsaid.append(say(self, roll, f"rolling restart of {len(names)} worker{'s' * (len(names) != 1)} "
                               f"({why}): {', '.join(names)}", phase="begin"))
        return roll

    def busy(self) -> str:
        roll = self.active
        if roll is None:
            return ""
        return (f"a rolling restart is under way ({min(roll.index + 1, len(roll.names))} of {len(roll.names)}: "
                f"{roll.old if roll.index < len(roll.names) else 'finishing'}); wait for it to finish")

    def groups(self, core: Reconciler) -> set[str]:
        """The groups a roll is changing: their size is the roll's while it lasts (adaptive pauses)."""
        roll = self.active
        if roll is None:
            return set()
        names = roll.names[roll.index:] + ([roll.new] if roll.new else [])
        return {core.desired.specs[n].group for n in names if n in core.desired.specs} | \
               {core.children[n].spec.group for n in names if n in core.children}

    def tick(self, core: Reconciler, now: float) -> list[Edit]:
        """One step of the roll under way, as edits (a bug ends the roll, said, rather than repeating)."""
        roll, out, self.unsaid = self.active, self.unsaid, []
        if roll is None:
            return out
        try:
            advance(core, roll, now, out)
        except Exception as e:  # noqa: BLE001 - a bug must end the roll, not repeat every tick
            core.errors.log("rolling", e)
            if not roll.finished:
                fail(core, roll, f"internal error: {type(e).__name__}: {e}", out)
        finally:
            if roll.finished:
                with self.changed:
                    self.active = None
                    self.changed.notify_all()
        return out

    def progress(self, roll_id: int, since: int, wait: float) -> dict[str, Any]:
        """The steps after ``since``, waiting up to ``wait`` seconds for one (on the control thread)."""
        deadline = time.monotonic() + wait
        with self.changed:
            roll = self.rolls.get(roll_id)
            if roll is None:
                raise ClusterError(f"no rolling restart {roll_id} (the supervisor keeps the last {KEEP_ROLLS})")
            while len(roll.steps) <= since and not roll.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            return roll.to_dict(since)


def say(roller: Roller, roll: Roll, text: str, phase: str, **extra: Any) -> Event:
    """One step: kept for the CLI (``progress``), and the event that says it."""
    step = {"at": round(time.time(), 3), "text": text, "phase": phase, "index": min(roll.index + 1, len(roll.names)),
            "of": len(roll.names), **extra}
    with roller.changed:
        roll.steps.append(step)
        roller.changed.notify_all()
    return Event("cluster", "rolling-restart", text, {"roll": roll.id, "phase": phase, "step": step["index"],
                                                       "of": step["of"], **extra})


def advance(core: Reconciler, roll: Roll, now: float, out: list[Edit]) -> None:
    """One tick of the roll: start a replacement, wait for it, retire the old worker, next."""
    sched = core.children.get(SCHEDULER)
    if roll.index < len(roll.names) and (sched is None or sched.state != S.RUNNING):
        return fail(core, roll, f"the scheduler is {sched.state.value if sched else 'gone'} (every worker "
                    "restarts with it)", out)
    if roll.phase == Phase.START:
        _start_next(core, roll, now, out)
    elif roll.phase == Phase.WAIT:
        _wait_for_replacement(core, roll, now, out)
    elif roll.phase == Phase.RETIRE:
        if roll.old in core.children:
            return  # retiring on its thread: results move first
        roll.replaced.append([roll.old, roll.new or ""])
        out.append(say(core.roller, roll, f"[{roll.index + 1}/{len(roll.names)}] {roll.old} retired and stopped "
                       f"({now - roll.since:.1f} s)", phase="retired", old=roll.old, new=roll.new))
        roll.index, roll.new, roll.phase, roll.since = roll.index + 1, None, Phase.START, now


def _start_next(core: Reconciler, roll: Roll, now: float, out: list[Edit]) -> None:
    while roll.index < len(roll.names) and (roll.old not in core.desired or roll.old not in core.children):
        out.append(say(core.roller, roll, f"[{roll.index + 1}/{len(roll.names)}] {roll.old} left the cluster "
                       "meanwhile; skipped", phase="skipped", old=roll.old))
        roll.index += 1
    if roll.index >= len(roll.names):
        roll.phase = Phase.DONE
        took = now - roll.began
        out.append(say(core.roller, roll, f"rolling restart done: {len(roll.replaced)} of {len(roll.names)} workers "
                       f"replaced in {took:.1f} s", phase="done", seconds=round(took, 2), replaced=roll.replaced))
        return
    old = core.children[roll.old]
    spec = core.desired.plan(old.spec.group, 1, taken=set(core.children), at=roll.hosts.get(roll.old))[0]
    roll.new, roll.phase, roll.since = spec.name, Phase.WAIT, now
    out += [Add((spec,)), say(core.roller, roll, f"[{roll.index + 1}/{len(roll.names)}] starting {spec.name} to "
                                   f"replace {roll.old}", phase="starting", old=roll.old, new=spec.name)]


def _wait_for_replacement(core: Reconciler, roll: Roll, now: float, out: list[Edit]) -> None:
    new = roll.new or ""
    if new not in core.desired:
        return fail(core, roll, f"{new} (replacing {roll.old}) was removed meanwhile", out, drop=False)
    c = core.children.get(new)
    if c is None:
        return  # the reconcile step of this tick adds it
    if c.state == S.RUNNING:
        took = now - roll.since
        roll.phase, roll.since = Phase.RETIRE, now
        out += [Remove((roll.old,)),  # the reconcile step retires it: results move first
                say(core.roller, roll, f"[{roll.index + 1}/{len(roll.names)}] {new} registered ({took:.1f} s); "
                    f"retiring {roll.old} (results move first)", phase="retiring", old=roll.old, new=new,
                    seconds=round(took, 2))]
        return
    late = now - roll.since > core.timing.startup + START_SLACK
    if c.state in FAILED_START or late:
        why = c.failure or c.reason or c.state.value
        if late and c.state not in FAILED_START:
            why = f"not registered within {now - roll.since:.0f} s"
        elif c.exit_code is not None:
            cause, _ = core.fx.log_tail(c.spec)
            why += f": {cause}" if cause else ""
        fail(core, roll, f"{new} (replacing {roll.old}) did not start: {why}", out)


def fail(core: Reconciler, roll: Roll, why: str, out: list[Edit], drop: bool = True) -> None:
    """Stop the roll: a replacement not yet in service leaves; the old worker keeps running."""
    if drop and roll.phase == Phase.WAIT and roll.new:
        out.append(Remove((roll.new,)))
    kept = f"; {roll.old} keeps running" if roll.phase == Phase.WAIT else ""
    roll.phase = Phase.FAILED
    roll.error = (f"rolling restart stopped after {len(roll.replaced)} of {len(roll.names)} workers: "
                  f"{why}{kept}")
    out.append(say(core.roller, roll, roll.error, phase="failed"))


def plan_worker(core: Reconciler, group: str, index: int, at: str | None) -> ProcessSpec:
    """A worker spec from the desired set's factory, on host ``at`` when given."""
    make = core.desired.make_worker
    return make(group, index) if at is None else make(group, index, at)  # type: ignore[call-arg]
