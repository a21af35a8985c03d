"""`clusterctl demo adapt`: bursts of Monte Carlo work on an adaptive group, idle gaps between.

    >>> report = run_adapt(cfg, BurstPlan(bursts=3, tasks=200, gap=15))   # doctest: +SKIP
    >>> report.figures["burst_to_first_worker_s"], report.figures["recomputed"], report.identical
    (0.9, 0, True)

Each burst is the walkthrough's pi estimate with its own seed (``seed + burst``), queued at
once; the group's supervisor sees Dask's recommendation rise and grows it, then, once the
burst is done and the gap is idle, shrinks it back to its minimum by graceful retirement.
The demo samples the scheduler's preload (workers, queued and processing tasks, Dask's
recommendation) every ``interval`` seconds, follows events.jsonl for the supervisor's
``adapt-up``/``adapt-down`` decisions, and at the end checks every result against the same
seeds computed serially in this process and counts, from /clusterctl/computed.json, the
tasks stored more than once (recomputed). The timeline's figures come from
adapttimeline.figures; the chart from adaptchart.draw.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ClusterError
from ..jobs import montecarlo as mc
from ..runtime.ledger import atomic_write
from ..runtime.probes import SchedulerProbe, http_json
from ..topology import ClusterConfig
from .adapttimeline import Burst, Sample, Stored, Timeline, figures, pick_group, relevant_events, sample_from
from .connect import client_address, client_kwargs, read_record, scheduler_probe

PNG, JSON = "demo-adapt.png", "demo-adapt.json"
MAX_BURSTS = 100


@dataclass(frozen=True)
class BurstPlan:
    bursts: int = 3
    tasks: int = 200  # Monte Carlo tasks per burst
    min_points: int = 2_000_000
    max_points: int = 40_000_000
    seed: int = 42
    gap: float = 15.0  # idle seconds between a burst's end and the next one
    settle: float = 90.0  # most seconds to wait for the group at its minimum (before and after)
    burst_timeout: float = 600.0  # a burst that takes longer is a hang

    def __post_init__(self) -> None:
        if not 1 <= self.bursts <= MAX_BURSTS:
            raise ClusterError(f"--bursts must be between 1 and {MAX_BURSTS}, not {self.bursts}")
        if not 0 <= self.gap <= 3600:
            raise ClusterError(f"--gap must be between 0 and 3600 seconds, not {self.gap:g}")
        if not 0 < self.settle <= 3600:
            raise ClusterError(f"--settle must be more than 0 and at most 3600 seconds, not {self.settle:g}")
        self.spec(0)  # MonteCarloSpec's own one-line checks of tasks, points and seed

    def spec(self, burst: int) -> mc.MonteCarloSpec:
        return mc.MonteCarloSpec(tasks=self.tasks, min_points=self.min_points, max_points=self.max_points,
                                 seed=self.seed + burst)

    def keys(self, burst: int) -> list[str]:
        spec = self.spec(burst)
        return [mc.task_key(spec.seed, i, int(n)) for i, n in enumerate(mc.points_schedule(spec))]


def reference(spec: mc.MonteCarloSpec) -> list[list]:
    """The burst computed serially in this process, without Dask: the undisturbed run."""
    return [mc.estimate_pi(int(n), spec.seed, i) for i, n in enumerate(mc.points_schedule(spec))]


@dataclass
class AdaptReport:
    group: str
    settings: dict[str, Any]  # the group's adaptive settings at the start (minimum, maximum, ...)
    plan: dict[str, Any]
    bursts: list[Burst]
    figures: dict[str, Any]
    identical: bool
    mismatched: list[str]  # "burst:index" of every result that differs from the serial run
    recomputed: list[str]
    interrupted: list[str]
    samples: list[Sample] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what did not go as planned (not a failure)
    seconds: float = 0.0
    chart: str | None = None
    data: str | None = None

    def summary(self) -> dict[str, Any]:
        """The figures and verdicts (`--json`); to_dict adds the samples and events."""
        return {
            **self.figures, "recomputed": len(self.recomputed), "interrupted": len(self.interrupted),
            "identical": self.identical, "mismatched": self.mismatched[:50], "recomputed_keys": self.recomputed[:50],
            "group": self.group, "adapt": self.settings, "plan": self.plan, "seconds": self.seconds,
            "bursts": [b.to_dict() for b in self.bursts], "notes": self.notes, "chart": self.chart, "data": self.data,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "samples_columns": ["t", "workers", "queued", "processing", "recommended"],
                "samples": [s.row() for s in self.samples], "events": self.events}


class EventTail:
    """New lines of events.jsonl since the demo started (the supervisor is its only writer)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = self._size()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def read(self) -> list[dict[str, Any]]:
        size = self._size()
        if size < self.offset:  # rotated: the new file holds only new lines
            self.offset = 0
        if size == self.offset:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(size - self.offset)
        except OSError:
            return []
        whole = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self.offset += whole
        out = []
        for line in data[:whole].decode("utf-8", "replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class Watch:
    """The sampling loop: the scheduler every ``interval`` seconds, new events, timeline lines."""

    def __init__(self, probe: SchedulerProbe, tail: EventTail, group: str, echo: Callable[[str], None],
                 interval: float):
        self.probe, self.tail, self.group, self.echo, self.interval = probe, tail, group, echo, interval
        self.t0 = time.time()
        self.timeline = Timeline()
        self.samples: list[Sample] = []
        self.events: list[dict[str, Any]] = []
        self.silent = 0  # samples the scheduler did not answer

    def now(self) -> float:
        return round(time.time() - self.t0, 2)

    def tick(self) -> None:
        # Events first: they happened before this sample, and their lines show the state before it.
        lines = []
        for e in relevant_events(self.tail.read(), self.group, self.t0):
            self.events.append(e)
            lines.append((e["t"], self.timeline.event(e)))
        ident = self.probe.identity(timeout=max(1.0, self.interval * 5))
        if ident is None:
            self.silent += 1
        else:
            s = sample_from(ident, self.group, self.now())
            self.samples.append(s)
            line = self.timeline.sample(s)
            if line:
                lines.append((s.t, line))
        for _, line in sorted(lines, key=lambda x: x[0]):
            self.echo(line)

    def note(self, text: str) -> None:
        self.echo(self.timeline.note(self.now(), text))

    def last(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def until(self, done: Callable[[], bool], seconds: float) -> bool:
        """Sample until done() or ``seconds`` have passed (bounded); whether done() came true."""
        deadline = time.monotonic() + seconds
        while True:
            self.tick()
            if done():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.interval, max(0.0, deadline - time.monotonic())))


def run_adapt(
    cfg: ClusterConfig,
    plan: BurstPlan,
    *,
    group: str | None = None,
    out_dir: Path | None = None,
    echo: Callable[[str], None] = lambda line: None,  # the CLI passes its printer
    interval: float = 0.2,
) -> AdaptReport:
    from distributed import Client

    address = client_address(cfg)  # "not running" first: an idle ledger has no adaptive map
    record = read_record(cfg)
    group, settings = pick_group(dict(record.adaptive), group)
    minimum = int(settings.get("minimum", 1))
    probe = scheduler_probe(cfg, record)
    probe.adaptive = float(settings.get("target_duration") or 5.0)  # the recommendation's view of the queue
    if probe.identity(timeout=5.0) is None:
        raise ClusterError(f"the scheduler of cluster {cfg.name!r} does not answer on {probe.base}", exit_code=1)
    computed_url = probe.base + "/clusterctl/computed.json?prefix=montecarlo-"
    stored = Stored(http_json(computed_url, timeout=5.0) or {})
    watch = Watch(probe, EventTail(cfg.state_path / "events.jsonl"), group, echo, interval)
    notes: list[str] = []
    echo(f"group {group}: adaptive between {minimum} and {settings.get('maximum')} workers "
         f"(target_duration {settings.get('target_duration')} s, wait_count {settings.get('wait_count')}); "
         f"{plan.bursts} bursts of {plan.tasks} tasks, {plan.gap:g} s idle between")
    echo(Timeline.header())
    if not watch.until(lambda: _at_minimum(watch, minimum), plan.settle):
        notes.append(f"the group was at {watch.last().workers if watch.last() else '?'} workers, above its minimum "
                     f"{minimum}, after {plan.settle:g} s; the first burst started anyway")
        watch.note(notes[-1])
    bursts: list[Burst] = []
    held: list[tuple[Any, list[list]]] = []  # each burst's futures and the results gathered at its end
    with Client(address, timeout="10s", **client_kwargs(cfg)) as client:
        try:
            for b in range(plan.bursts):
                spec = plan.spec(b)
                last = watch.last()
                burst = Burst(b, spec.seed, spec.tasks, submitted=watch.now(), before=last.names if last else ())
                futures = mc.submit(client, spec)
                bursts.append(burst)
                watch.note(f"burst {b + 1}/{plan.bursts}: {spec.tasks} tasks queued (seed {spec.seed})")
                if not watch.until(lambda: all(f.done() for f in futures), plan.burst_timeout):
                    raise ClusterError(f"burst {b + 1} did not finish within {plan.burst_timeout:g} s")
                burst.idle = watch.now()
                held.append((futures, client.gather(futures)))
                watch.note(f"burst {b + 1} done in {burst.idle - burst.submitted:.1f} s; idle")
                if b + 1 < plan.bursts:
                    watch.until(lambda: False, plan.gap)
            if not watch.until(lambda: _at_minimum(watch, minimum), plan.settle):
                notes.append(f"the group did not return to its minimum {minimum} within {plan.settle:g} s of idling")
                watch.note(notes[-1])
            else:
                watch.note(f"back at the minimum, {minimum} worker(s)")
            after = http_json(computed_url, timeout=5.0) or {}
            # every held result is still there, unchanged, after the retirements
            kept = [client.gather(futures) == first for futures, first in held]
        finally:
            for futures, _ in held:
                client.cancel(futures)
    seconds = watch.now()
    keys = [k for b in range(len(bursts)) for k in plan.keys(b)]
    recomputed, interrupted = stored.delta(after, keys)
    echo(f"{seconds:6.1f}s  checking {len(keys)} results against the same seeds computed serially in this process")
    mismatched = []
    for b, (_, got) in enumerate(held):
        want = reference(plan.spec(b))
        mismatched += [f"{b}:{i}" for i, (x, y) in enumerate(zip(got, want)) if list(x) != list(y)]
        if len(got) != len(want) or not kept[b]:
            mismatched.append(f"{b}:*")
    figs = figures(bursts, watch.samples, minimum, watch.events)
    if watch.silent:
        notes.append(f"the scheduler did not answer {watch.silent} of {watch.silent + len(watch.samples)} samples")
    report = AdaptReport(
        group=group, settings=settings, plan=dict(plan.__dict__), bursts=bursts, figures=figs,
        identical=not mismatched and len(held) == plan.bursts, mismatched=mismatched, recomputed=recomputed,
        interrupted=interrupted, samples=watch.samples, events=watch.events, notes=notes, seconds=seconds,
    )
    if out_dir is not None:
        write_outputs(report, Path(out_dir))
    return report


def _at_minimum(watch: Watch, minimum: int) -> bool:
    last = watch.last()
    return last is not None and last.workers <= minimum


def write_outputs(report: AdaptReport, out_dir: Path) -> None:
    """The chart (PNG) and the figures with every sample and event (JSON), each written atomically."""
    from .adaptchart import draw

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        report.chart = str(draw(report, out_dir / PNG))
        report.data = str(out_dir / JSON)
        atomic_write(out_dir / JSON, json.dumps(report.to_dict(), indent=1) + "\n")
    except OSError as e:
        raise ClusterError(f"cannot write the demo's files in {os.fspath(out_dir)}: {e.strerror or e}") from None
