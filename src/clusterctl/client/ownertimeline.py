"""The live timeline of `clusterctl demo owner` and its report: the events the timeline shows, one
line per event, per change of a worker's state and per action of the demo, and the report's record
(its summary and the data written beside the chart). Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from .ownerplan import HEAD, Span

# The supervisor's events the timeline shows: the head's owner and mode, and the workers' lives.
OWNER_EVENTS = ("owner-active", "owner-idle", "owner-unknown", "owner-pause", "owner-resume", "yield",
                "yield-over", "hours-out", "hours-in", "pause-failed", "unpause-failed", "retire-failed")
WORKER_EVENTS = ("yielded", "started", "ready", "exited", "fatal", "unhealthy", "restarting", "spawn-failed", "lost")


def describe(e: dict[str, Any]) -> str:
    """One event as the timeline says it."""
    detail = f": {e['detail']}" if e.get("detail") else ""
    return f"{e['event']} {e.get('process')}{detail}"


@dataclass
class Timeline:
    """The live timeline's lines: one per event, per change of a worker's state, per action of the
    demo, and (at most every ``every`` seconds) when tasks got done."""

    workers: tuple[str, ...]
    total: int
    every: float = 2.0
    states: dict[str, str] = field(default_factory=dict)
    done: int = 0
    last_line: float = -math.inf
    last_done: int = 0

    def header(self) -> str:
        return f"{'time':>7}  " + "  ".join(f"{w:<10}" for w in self.workers) + f"  {'done':>9}  event"

    def _line(self, t: float, note: str = "") -> str:
        self.last_line, self.last_done = max(self.last_line, t), self.done
        cols = "  ".join(f"{self.states.get(w, ''):<10}" for w in self.workers)
        return f"{t:6.1f}s  {cols}  {f'{self.done}/{self.total}':>9}  {note}".rstrip()

    def sample(self, t: float, states: dict[str, str], done: int) -> str | None:
        changed = {w: s for w, s in states.items() if w in self.workers} != \
            {w: s for w, s in self.states.items() if w in self.workers}
        self.states, self.done = dict(states), done
        if changed or (done != self.last_done and t - self.last_line >= self.every):
            return self._line(t)
        return None

    def note(self, t: float, text: str) -> str:
        return self._line(t, text)

    def event(self, e: dict[str, Any]) -> str:
        return self._line(e["t"], describe(e))


def relevant(events: Iterable[dict[str, Any]], workers: Iterable[str], t0: float) -> list[dict[str, Any]]:
    """The head's owner events and its workers' lives, with ``t`` (seconds since ``t0``)."""
    names = set(workers)
    out = []
    for e in events:
        kind, who = e.get("event"), e.get("process")
        if (kind in OWNER_EVENTS and who in (HEAD, "cluster")) or (kind in WORKER_EVENTS and who in names):
            out.append({**e, "t": round(float(e.get("time", t0)) - t0, 2)})
    return out


@dataclass
class OwnerReport:
    plan: dict[str, Any]
    tasks: int
    points: int
    workers: list[str]
    figures: dict[str, Any]
    identical: bool
    mismatched: list[int]
    recomputed: list[str]
    owner_on: float | None  # seconds since the job was queued
    owner_off: float | None
    finished: float | None  # the job's last result
    spans: list[Span] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # per task: index, worker, start, end
    samples: list[dict[str, Any]] = field(default_factory=list)  # t and each worker's state
    events: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    serial_seconds: float = 0.0
    chart: str | None = None
    data: str | None = None
    kept: str | None = None  # the temp dir, with the cluster's logs and events (--keep)
    ns_per_point: float = 0.0  # this machine's kernel, measured before the job (sizes it)
    results: dict[int, list] = field(default_factory=dict, repr=False)  # index -> the job's row

    def summary(self) -> dict[str, Any]:
        return {**self.figures, "identical": self.identical, "mismatched": self.mismatched[:50],
                "recomputed": len(self.recomputed), "recomputed_keys": self.recomputed[:50], "tasks": self.tasks,
                "points": self.points, "workers": self.workers, "plan": self.plan, "owner_on": self.owner_on,
                "owner_off": self.owner_off, "finished": self.finished, "spans": [s.to_dict() for s in self.spans],
                "notes": self.notes, "seconds": self.seconds, "serial_seconds": self.serial_seconds,
                "chart": self.chart, "data": self.data, "kept": self.kept}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "runs": self.runs, "samples": self.samples, "events": self.events}
