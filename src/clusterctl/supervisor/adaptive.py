"""Adaptive groups: the size Dask recommends, between the group's minimum and maximum.

Each answer of the scheduler's preload carries Dask's own recommendation (what its
``Adaptive`` asks: ``adaptive_target(target_duration)`` and ``workers_to_close()``). The
supervisor converges to it: it grows at once when work queues, and shrinks only after
``wait_count`` consecutive lower recommendations, retiring gracefully (the scheduler moves
results first, so nothing is recomputed), and only workers Dask names as cheap to close.
This avoids what dask-jobqueue's Adaptive is known for: killing workers that hold results,
and flapping. The recommendation is for the whole cluster; a group's share is what the
workers outside it do not cover."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..topology.workers import adaptive_maximum

if TYPE_CHECKING:
    from ..topology import WorkerGroup
    from .reconcile import Reconciler


@dataclass
class GroupAdapt:
    group: str
    minimum: int
    maximum: int
    target_duration: float = 5.0
    wait_count: int = 3
    interval: float = 1.0
    target: int | None = None  # the last size decided on
    reason: str = "waiting for the scheduler's first recommendation"
    lower_streak: int = 0

    @classmethod
    def of(cls, g: WorkerGroup) -> GroupAdapt:
        """A group's `adapt:` from its topology (up, apply)."""
        assert g.adapt is not None
        return cls(g.name, g.adapt.minimum, adaptive_maximum(g), g.adapt.target_duration, g.adapt.wait_count,
                   g.adapt.interval)

    def to_dict(self) -> dict[str, Any]:
        return {"minimum": self.minimum, "maximum": self.maximum, "target": self.target, "reason": self.reason,
                "target_duration": self.target_duration, "wait_count": self.wait_count, "interval": self.interval}


@dataclass
class Adapter:
    groups: dict[str, GroupAdapt] = field(default_factory=dict)
    last_answer: float = -1.0
    max_workers: int = 1 << 30  # the cluster's max_workers (the Supervisor sets it): no group grows past it

    def set(self, g: GroupAdapt) -> None:
        self.groups[g.group] = g

    def off(self, group: str) -> bool:
        return self.groups.pop(group, None) is not None

    def tune(self, core: Reconciler) -> None:
        """Ask for the recommendation, and often enough for the shortest interval."""
        probe = core.probe
        if self.groups:
            probe.adaptive = min(g.target_duration for g in self.groups.values())
            probe.interval = min(probe.interval, *(g.interval for g in self.groups.values()))
        else:
            probe.adaptive = 0.0

    def tick(self, core: Reconciler, now: float) -> None:
        self.tune(core)
        rec = getattr(core.probe, "recommendation", None)
        if not self.groups or not isinstance(rec, dict) or "target" not in rec:
            return
        if core.probe.answered_at <= self.last_answer:
            return  # each answer counts once toward wait_count
        self.last_answer = core.probe.answered_at
        # Every fresh answer is decided on: the probe asks once per `interval` (tune() above), and the
        # answer carries the peak Dask recommended since the one before (scheduler_plugin.py), which a
        # skipped answer would lose.
        for g in list(self.groups.values()):
            decide(core, g, rec)


def decide(core: Reconciler, g: GroupAdapt, rec: dict) -> None:
    if g.group in core.roller.groups(core):
        g.reason = "paused while a rolling restart replaces this group's workers"
        return
    members = core.desired.workers(g.group)
    current = len(members)
    others = len(core.desired.workers()) - current
    want = max(g.minimum, min(g.maximum, int(rec["target"]) - others, core.adapter.max_workers - others))
    why = f"Dask recommends {rec['target']} workers ({rec.get('queued', 0)} tasks queued, " \
          f"{rec.get('processing', 0)} processing)"
    g.target = want
    if want > current:
        g.lower_streak = 0
        added = core.desired.add(g.group, want - current, taken=set(core.children))
        g.reason = f"grew {current} -> {want}: {why}"
        core.fx.emit(g.group, "adapt-up", g.reason, group=g.group, before=current, after=want, added=added,
                     recommended=rec["target"], queued=rec.get("queued", 0))
        core.dirty = True
    elif want < current:
        g.lower_streak += 1
        if g.lower_streak < g.wait_count:
            g.reason = f"{want} wanted, {g.lower_streak} of {g.wait_count} lower recommendations: {why}"
            return
        closable = [n for n in rec.get("to_close") or [] if n in members]
        chosen = sorted(closable, key=lambda n: -_index(n))[: current - want]
        if not chosen:
            g.reason = f"{want} wanted, but Dask names no worker of {g.group} as cheap to close: {why}"
            return
        core.desired.remove(chosen)
        g.lower_streak = 0
        g.reason = f"shrank {current} -> {current - len(chosen)}: {why}"
        core.fx.emit(g.group, "adapt-down", g.reason, group=g.group, before=current, after=current - len(chosen),
                     retiring=chosen, recommended=rec["target"], queued=rec.get("queued", 0))
        core.dirty = True
    else:
        g.lower_streak = 0
        g.reason = f"steady at {current}: {why}"


def _index(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1
