"""The pure half of `clusterctl demo adapt`: which group, the live timeline, the figures.

Facts come in (samples of the scheduler, the supervisor's events, when each burst was
queued and went idle); lines and numbers come out. No clock, no I/O: tested in
tests/unit/test_adaptdemo.py.

    >>> tl = Timeline()
    >>> tl.sample(Sample(0.0, 1, 0, 0, 1, ("default-0",)))
    '   0.0s        1       0           0'
    >>> figures([Burst(0, 42, 200, submitted=0.0, idle=9.0, before=("default-0",))],
    ...         [Sample(0.0, 1, 197, 1, 4, ("default-0",)), Sample(1.2, 2, 190, 2, 4, ("default-0", "default-1")),
    ...          Sample(9.0, 2, 0, 0, 1, ("default-0", "default-1")), Sample(14.5, 1, 0, 0, 1, ("default-0",))],
    ...         minimum=1)["burst_to_first_worker_s"]
    1.2
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import ClusterError

ADAPT_EVENTS = ("adapt-up", "adapt-down", "adapt-on", "adapt-off")
# A worker of the group in trouble explains a bump in the timeline (a crash is not a retirement).
TROUBLE_EVENTS = ("exited", "fatal", "spawn-failed", "restarting", "unhealthy", "lost")


def pick_group(adaptive: dict[str, dict[str, Any]], group: str | None) -> tuple[str, dict[str, Any]]:
    """The adaptive group to demonstrate on (the running supervisor's ``adaptive`` map);
    a one-line ClusterError when there is none, or several and no ``--group``."""
    if not adaptive:
        raise ClusterError("no worker group is adaptive: give one an `adapt:` block in cluster.yaml "
                           "(see cluster.example.yaml) or run `clusterctl adapt --min 1 --max 4`")
    if group is not None:
        if group not in adaptive:
            raise ClusterError(f"group {group!r} is not adaptive; adaptive: {', '.join(sorted(adaptive))}")
        return group, dict(adaptive[group])
    if len(adaptive) > 1:
        raise ClusterError(f"several groups are adaptive ({', '.join(sorted(adaptive))}): choose one with --group")
    name = next(iter(adaptive))
    return name, dict(adaptive[name])


def member(name: str | None, group: str) -> bool:
    """Is the process ``name`` a worker of ``group`` (workers are named <group>-<i>)?"""
    return bool(name) and re.fullmatch(re.escape(group) + r"-\d+", str(name)) is not None


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the demo started
    workers: int  # the group's registered workers
    queued: int  # tasks the scheduler holds back (queued or unrunnable)
    processing: int  # tasks on workers
    recommended: int | None  # Dask's adaptive_target at that moment
    names: tuple[str, ...] = ()  # the group's registered workers

    def row(self) -> list:
        return [self.t, self.workers, self.queued, self.processing, self.recommended]


def sample_from(ident: dict[str, Any], group: str, t: float) -> Sample:
    """A Sample from the preload's /clusterctl/workers.json?adaptive=... answer."""
    names = tuple(sorted(n for n in (ident.get("workers") or {}) if member(n, group)))
    rec = ident.get("adaptive") if isinstance(ident.get("adaptive"), dict) else {}
    target = rec.get("target")
    return Sample(round(t, 2), len(names), int(rec.get("queued") or 0), int(rec.get("processing") or 0),
                  int(target) if isinstance(target, (int, float)) else None, names)


def relevant_events(records: Iterable[dict[str, Any]], group: str, t0: float) -> list[dict[str, Any]]:
    """The supervisor's events (events.jsonl records) that explain the group's size, timed from t0."""
    out = []
    for r in records:
        kind, proc = r.get("event"), r.get("process")
        if kind in ADAPT_EVENTS and (r.get("group") or proc) == group:
            pass
        elif not (kind in TROUBLE_EVENTS and member(proc, group)):
            continue
        try:
            t = round(float(r["time"]) - t0, 2)
        except (KeyError, TypeError, ValueError):
            continue
        keep = {k: r[k] for k in ("before", "after", "recommended", "queued", "retiring", "added") if k in r}
        out.append({"t": t, "event": kind, "process": proc, "detail": str(r.get("detail") or ""), **keep})
    return out


def describe(e: dict[str, Any]) -> str:
    """One event as the timeline says it."""
    kind = e["event"]
    dask = f"Dask recommends {e['recommended']}" if e.get("recommended") is not None else ""
    if kind == "adapt-up":
        return f"adapt-up {e.get('before')} -> {e.get('after')}: {dask}, {e.get('queued', 0)} tasks queued"
    if kind == "adapt-down":
        gone = ", ".join(e.get("retiring") or []) or "?"
        return f"adapt-down {e.get('before')} -> {e.get('after')}: retiring {gone} ({dask})"
    return f"{kind} {e.get('process')}: {e.get('detail')}".rstrip(": ")


@dataclass
class Timeline:
    """Lines of the live timeline: one per change of the group's size, per decision, per burst,
    and (at most once a second) when the queue moved."""

    every: float = 1.0
    last: Sample | None = None
    last_line: float = float("-inf")

    @staticmethod
    def header() -> str:
        return f"{'time':>7}  {'workers':>7}  {'queued':>6}  {'processing':>10}  event"

    def _line(self, t: float, note: str = "") -> str:
        s = self.last
        cols = f"{s.workers:>7}  {s.queued:>6}  {s.processing:>10}" if s else f"{'':>7}  {'':>6}  {'':>10}"
        self.last_line = max(self.last_line, t)
        return f"{t:6.1f}s  {cols}  {note}".rstrip()

    def sample(self, s: Sample) -> str | None:
        prev, self.last = self.last, s
        if prev is None or s.workers != prev.workers:
            return self._line(s.t)
        moved = (s.queued, s.processing) != (prev.queued, prev.processing)
        if moved and s.t - self.last_line >= self.every:
            return self._line(s.t)
        return None

    def note(self, t: float, text: str) -> str:
        return self._line(t, text)

    def event(self, e: dict[str, Any]) -> str:
        return self._line(e["t"], describe(e))


@dataclass
class Burst:
    index: int
    seed: int
    tasks: int
    submitted: float  # seconds since the start when its tasks were handed to the scheduler
    idle: float | None = None  # when its last task had finished
    before: tuple[str, ...] = ()  # the group's workers when it was queued
    first_decision: float | None = None  # seconds from queued to the supervisor's first adapt-up
    first_new_worker: float | None = None  # seconds from queued to the first worker not in `before`
    back_to_minimum: float | None = None  # seconds from idle to the group at its minimum
    peak_workers: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["before"] = list(self.before)
        return d


def _worst(values: list[float | None]) -> float | None:
    seen = [v for v in values if v is not None]
    return max(seen) if seen else None


def figures(bursts: list[Burst], samples: list[Sample], minimum: int,
            events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Fill each burst's figures from the samples (and events), and return the worst of each.

    A burst's window runs until the next burst is queued (the last one's: to the end), so a
    worker or a return to the minimum is never credited to the wrong burst. ``None`` where it
    did not happen: no new worker (the group was big enough), or the gap was too short."""
    for k, b in enumerate(bursts):
        end = bursts[k + 1].submitted if k + 1 < len(bursts) else float("inf")
        window = [s for s in samples if b.submitted <= s.t < end]
        b.peak_workers = max((s.workers for s in window), default=0)
        joined = next((s for s in window if set(s.names) - set(b.before)), None)
        b.first_new_worker = round(joined.t - b.submitted, 2) if joined else None
        up = next((e for e in events or [] if e["event"] == "adapt-up" and b.submitted <= e["t"] < end), None)
        b.first_decision = round(up["t"] - b.submitted, 2) if up else None
        if b.idle is not None:
            back = next((s for s in window if s.t >= b.idle and s.workers <= minimum), None)
            b.back_to_minimum = round(back.t - b.idle, 2) if back else None
    return {
        "burst_to_first_worker_s": _worst([b.first_new_worker for b in bursts]),
        "idle_to_minimum_s": _worst([b.back_to_minimum for b in bursts]),
        "burst_to_decision_s": _worst([b.first_decision for b in bursts]),
    }


@dataclass
class Stored:
    """Per-key counts of computed.json before and after: a key of this run stored more than once
    in it was recomputed (a lost result), whatever earlier runs of the same seeds left there."""

    before: dict[str, dict[str, int]] = field(default_factory=dict)

    def delta(self, after: dict[str, dict[str, int]], keys: Iterable[str]) -> tuple[list[str], list[str]]:
        """(recomputed keys, keys whose run was cut short at least once) among ``keys``."""
        recomputed, interrupted = [], []
        for k in keys:
            stored = (after.get("stored") or {}).get(k, 0) - (self.before.get("stored") or {}).get(k, 0)
            cut = (after.get("interrupted") or {}).get(k, 0) - (self.before.get("interrupted") or {}).get(k, 0)
            if stored > 1:
                recomputed.append(k)
            if cut > 0:
                interrupted.append(k)
        return recomputed, interrupted
