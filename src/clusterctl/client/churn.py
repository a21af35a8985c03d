"""The churn demonstration: workers join and leave while the Monte Carlo graph runs.

    >>> report = run_churn(cfg, MonteCarloSpec(seed=7), parse_schedule("2:add 2,5:retire,8:kill"))  # doctest: +SKIP
    >>> report.identical, report.recomputed
    (True, 14)

A schedule is ``SECONDS:ACTION [COUNT]`` items separated by commas, where ACTION
is ``add`` (start workers), ``retire`` (graceful: results move first) or
``kill`` (abrupt, as a crashed machine: its results are recomputed).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .connect import ask, client_address, client_kwargs, scheduler_probe, wait_ready
from ..topology import ClusterConfig
from ..errors import ClusterError
from ..runtime.probes import http_json
from ..runtime.requests import AddRequest, RemoveRequest
from ..runtime.states import ChildState
from ..jobs import montecarlo as mc

ACTIONS = ("add", "retire", "kill")
DEFAULT_SCHEDULE = "2:add 2,5:retire 1,8:kill 1,11:add 1"


@dataclass(frozen=True)
class ChurnEvent:
    at: float
    action: str
    count: int = 1

    @property
    def label(self) -> str:
        return f"{self.action} {self.count}"


def parse_schedule(text: str) -> list[ChurnEvent]:
    """'2:add 2, 5:retire, 8:kill' -> events sorted by time; ClusterError on anything else."""
    events = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            when, what = item.split(":", 1)
            words = what.split()
            action = words[0].lower()
            count = int(words[1]) if len(words) > 1 else 1
            at = float(when)
        except (ValueError, IndexError):
            raise ClusterError(f"schedule item {item!r} is not SECONDS:ACTION [COUNT], e.g. '5:retire 1'") from None
        if action not in ACTIONS or len(words) > 2:
            raise ClusterError(f"schedule item {item!r}: action must be one of {', '.join(ACTIONS)}")
        if at < 0 or count < 1:
            raise ClusterError(f"schedule item {item!r}: time must be >= 0 and count >= 1")
        events.append(ChurnEvent(at, action, count))
    if not events:
        raise ClusterError("the schedule is empty; e.g. '2:add 2,5:retire 1,8:kill 1'")
    return sorted(events, key=lambda e: e.at)


@dataclass
class ChurnReport:
    tasks: int
    seconds: float
    identical: bool
    mismatched: list[int]
    recomputed: int
    interrupted: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, workers, done)
    events: list[dict[str, Any]] = field(default_factory=list)
    chart: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def run_churn(
    cfg: ClusterConfig,
    spec: mc.MonteCarloSpec,
    schedule: list[ChurnEvent],
    chart: Path | None = None,
    echo: Callable[[str], None] = lambda line: None,  # the CLI passes its printer
    group: str | None = None,
    interval: float = 0.5,
) -> ChurnReport:
    from distributed import Client, wait

    address = client_address(cfg)
    probe = scheduler_probe(cfg)
    events: list[dict[str, Any]] = []
    pending = list(schedule)
    firing: list[threading.Thread] = []
    samples: list[tuple[float, int, int]] = []
    clock = {"t0": time.monotonic()}

    def fire(ev: ChurnEvent, t: float) -> None:
        echo(f"{t:6.1f}s  {'':>7}  {'':>13}  -> {ev.label}")
        try:
            if ev.action == "add":
                res = ask(cfg, AddRequest.of(count=ev.count, group=group))
                # Done when they have joined, as `clusterctl worker add` reports it.
                states = wait_ready(cfg, res.added, cfg.timeouts.startup)
                detail = "added " + ", ".join(n if s == ChildState.RUNNING else f"{n} ({s})" for n, s in states.items())
            else:
                res = ask(cfg, RemoveRequest.of(count=ev.count, group=group, kill=ev.action == "kill"))
                detail = ("killed " if ev.action == "kill" else "retired ") + ", ".join(res.removing)
        except ClusterError as e:
            detail = f"failed: {e}"
        done_at = time.monotonic() - clock["t0"]
        events.append({"t": round(t, 2), "done": round(done_at, 2), "action": ev.action, "count": ev.count, "detail": detail})
        echo(f"{done_at:6.1f}s  {'':>7}  {'':>13}  <- {ev.label}: {detail}")

    with Client(address, timeout="10s", **client_kwargs(cfg)) as client:
        echo(f"{'time':>7}  {'workers':>7}  {'tasks done':>13}  event")
        futures = mc.submit(client, spec)
        t0 = time.monotonic()
        clock["t0"] = t0
        next_print = 0.0
        while True:
            t = time.monotonic() - t0
            done = sum(f.done() for f in futures)
            workers = len(probe.workers_by_name(timeout=2.0) or {})
            samples.append((round(t, 2), workers, done))
            if t >= next_print:
                echo(f"{t:6.1f}s  {workers:>7}  {done:>6}/{len(futures):<6}")
                next_print = t + 1.0
            while pending and pending[0].at <= t:
                ev = pending.pop(0)
                th = threading.Thread(target=fire, args=(ev, t), daemon=True)
                th.start()
                firing.append(th)
            if done == len(futures):
                break
            time.sleep(interval)
        for th in firing:
            th.join(timeout=120)
        wait(futures)
        results = client.gather(futures)
        seconds = time.monotonic() - t0
        samples.append((round(seconds, 2), len(probe.workers_by_name(timeout=2.0) or {}), len(futures)))
        echo(f"{seconds:6.1f}s  graph complete; checking against an undisturbed run with seed {spec.seed}")
        reference = undisturbed(client, spec)
    mismatched = [i for i, (a, b) in enumerate(zip(results, reference)) if list(a) != list(b)]
    counts = http_json(probe.base + f"/clusterctl/computed.json?prefix=montecarlo-{spec.seed}-", timeout=5.0) or {}
    recomputed = sum(1 for n in (counts.get("stored") or {}).values() if n > 1)
    interrupted = len(counts.get("interrupted") or {})
    for ev in pending:  # the graph finished before their time came
        events.append({"t": ev.at, "done": None, "action": ev.action, "count": ev.count, "detail": "not reached: the graph had finished"})
        echo(f"{ev.at:6.1f}s  {'':>7}  {'':>13}  -- {ev.label}: not reached, the graph had finished")
    events.sort(key=lambda e: e["t"])
    report = ChurnReport(
        tasks=spec.tasks, seconds=round(seconds, 2), identical=not mismatched and len(results) == len(reference),
        mismatched=mismatched, recomputed=recomputed, interrupted=interrupted, samples=samples, events=events,
    )
    if chart:
        report.chart = str(draw_chart(report, chart))
    return report


def undisturbed(client: Any, spec: mc.MonteCarloSpec) -> list[list]:
    """The same tasks again on a calm cluster, under other keys so nothing is reused."""
    points = mc.points_schedule(spec)
    futures = [
        client.submit(mc.estimate_pi, int(n), spec.seed, i, key=f"reference-{spec.seed}-{i}-{int(n)}")
        for i, n in enumerate(points)
    ]
    try:
        return client.gather(futures)
    finally:
        client.cancel(futures)


def draw_chart(report: ChurnReport, path: Path) -> Path:
    """Workers and completed tasks over time, with every churn event marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] for s in report.samples]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    ax.step(t, [s[1] for s in report.samples], where="post", color="tab:blue", label="workers")
    ax.set_xlabel("seconds since submit")
    ax.set_ylabel("workers registered", color="tab:blue")
    ax.set_ylim(0, max(s[1] for s in report.samples) + 1)
    ax2 = ax.twinx()
    ax2.plot(t, [s[2] for s in report.samples], color="tab:green", label="tasks done")
    ax2.set_ylabel("tasks completed", color="tab:green")
    ax2.set_ylim(0, report.tasks * 1.05)
    colours = {"add": "tab:blue", "retire": "tab:orange", "kill": "tab:red"}
    for ev in report.events:
        if ev.get("done") is None:
            continue
        ax.axvline(ev["t"], color=colours.get(ev["action"], "grey"), linestyle="--", alpha=0.7)
        ax.annotate(f"{ev['action']} {ev['count']}", (ev["t"], ax.get_ylim()[1] * 0.95), rotation=90,
                    va="top", ha="right", fontsize=8, color=colours.get(ev["action"], "grey"))
    verdict = "identical to the undisturbed run" if report.identical else f"{len(report.mismatched)} results differ"
    ax.set_title(f"{report.tasks} Monte Carlo tasks under churn: {verdict}; {report.recomputed} recomputed")
    fig.tight_layout()
    from ..jobs.plot import save_figure

    try:
        return save_figure(fig, Path(path), "png")
    finally:
        plt.close(fig)
