"""Adaptive groups: the size Dask recommends, between the group's minimum and maximum.

Each answer of the scheduler's preload carries Dask's own recommendation (what its
``Adaptive`` asks: ``adaptive_target(target_duration)`` and ``workers_to_close()``). The
supervisor converges to it: it grows at once when work queues, and shrinks only after
``wait_count`` consecutive lower recommendations, retiring gracefully (the scheduler moves
results first, so nothing is recomputed), and only workers Dask names as cheap to close.
This avoids what dask-jobqueue's Adaptive is known for: killing workers that hold results,
and flapping. The recommendation is for the whole cluster; a group's share is what the
workers outside it do not cover. The adapter decides (edits.py); the Reconciler applies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..topology.workers import adaptive_maximum
from .edits import Add, Edit, Event, Remove
from .states import ChildState

YIELDS = (ChildState.YIELDING, ChildState.YIELDED)

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

    def tuning(self, interval: float) -> tuple[float, float]:
        """The probe's settings: the target duration Dask's recommendation is asked for (0: none),
        and its interval, often enough for the shortest of the groups' ``interval``."""
        if not self.groups:
            return 0.0, interval
        return (min(g.target_duration for g in self.groups.values()),
                min(interval, *(g.interval for g in self.groups.values())))

    def tick(self, core: Reconciler, now: float) -> list[Edit]:
        rec = getattr(core.probe, "recommendation", None)
        if not self.groups or not isinstance(rec, dict) or "target" not in rec:
            return []
        if core.probe.answered_at <= self.last_answer:
            return []  # each answer counts once toward wait_count
        self.last_answer = core.probe.answered_at
        # Every fresh answer is decided on: the probe asks once per `interval` (tuning() above), and the
        # answer carries the peak Dask recommended since the one before (scheduler_plugin.py), which a
        # skipped answer would lose.
        edits: list[Edit] = []
        total = len(core.desired.workers())
        for g in list(self.groups.values()):
            edit = decide(core, g, rec, total)
            total += len(edit.specs) if isinstance(edit, Add) else -len(edit.names) if edit else 0
            edits += [edit] if edit else []
        return edits


def decide(core: Reconciler, g: GroupAdapt, rec: dict, total: int) -> Add | Remove | None:
    """One group's size from Dask's recommendation (``total``: the cluster's workers, this tick's
    earlier decisions counted); its reason and streak are the adapter's own."""
    if g.group in core.roller.groups(core):
        g.reason = "paused while a rolling restart replaces this group's workers"
        return None
    members = core.desired.workers(g.group)
    # A yielding host's workers (its owner is back, or it is outside its hours) are no capacity.
    away = sum(1 for n in members if (c := core.children.get(n)) is not None and c.state in YIELDS)
    current = len(members) - away
    others = total - len(members)
    want = max(g.minimum, min(g.maximum, int(rec["target"]) - others, core.adapter.max_workers - others))
    why = f"Dask recommends {rec['target']} workers ({rec.get('queued', 0)} tasks queued, " \
          f"{rec.get('processing', 0)} processing)"
    g.target = want
    if want > current and len(members) >= g.maximum:  # the yielding ones still count toward the maximum
        g.lower_streak = 0
        g.reason = f"{want} wanted, at its maximum with {away} yielding to their host's owner or hours: {why}"
        return None
    if want > current:
        g.lower_streak = 0
        specs = core.desired.plan(g.group, min(want - current, g.maximum - len(members)), taken=set(core.children))
        after = current + len(specs)
        g.reason = f"grew {current} -> {after}: {why}" + (f" ({away} yielding)" if away else "")
        return Add(specs, Event(g.group, "adapt-up", g.reason, {
            "group": g.group, "before": current, "after": after, "added": [s.name for s in specs],
            "recommended": rec["target"], "queued": rec.get("queued", 0)}))
    if want < current:
        g.lower_streak += 1
        if g.lower_streak < g.wait_count:
            g.reason = f"{want} wanted, {g.lower_streak} of {g.wait_count} lower recommendations: {why}"
            return None
        closable = [n for n in rec.get("to_close") or [] if n in members]
        chosen = sorted(closable, key=lambda n: -_index(n))[: current - want]
        if not chosen:
            g.reason = f"{want} wanted, but Dask names no worker of {g.group} as cheap to close: {why}"
            return None
        g.lower_streak = 0
        g.reason = f"shrank {current} -> {current - len(chosen)}: {why}"
        return Remove(tuple(chosen), Event(g.group, "adapt-down", g.reason, {
            "group": g.group, "before": current, "after": current - len(chosen), "retiring": chosen,
            "recommended": rec["target"], "queued": rec.get("queued", 0)}))
    g.lower_streak = 0
    g.reason = f"steady at {current}: {why}"
    return None


def _index(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1
