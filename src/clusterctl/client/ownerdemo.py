"""`clusterctl demo owner`: a job runs, the workstation's owner arrives, the workers make way and come back.

    >>> report = run_owner(OwnerPlan(arrive=5, stay=10, retire_after=4, resume_after=4))   # doctest: +SKIP
    >>> report.figures["paused_s"], report.figures["back_s"], report.identical  # doctest: +SKIP
    (0.9, 4.6, True)

The demo needs no running cluster: it writes a topology in a temp dir (free ports on 127.0.0.1,
never 8786/8787; ``workers`` workers of one thread on this machine, the head), whose ``owner:``
says the owner is active while a flag file exists there (the command signal: ``test -e FLAG``).
It runs ``clusterctl up`` on it, runs a Monte Carlo job (the walkthrough's pi estimate, tasks of
equal size, each recording where and when it started; a steady stream of them, queued as the workers
take them, until they have run ``tail`` seconds after their return), creates the flag ``arrive`` s in
(the owner sits down), removes it ``stay`` seconds after that (the owner leaves), waits for the job
and for the workers' return, runs ``clusterctl down``, and checks every result against the same
tasks computed serially in this process. Meanwhile it prints a live timeline: each worker's state
(running, paused, retiring, away, starting; from the scheduler and the ledger), the tasks done, the
supervisor's events (owner-active, owner-pause, yield, yielded, owner-idle, yield-over, ...).
Whatever it started is stopped, on Ctrl-C too; a process left under its temp dir is killed by pid.

The pure parts (the topology, the job's size, each worker's state, the spans, the figures: ownerplan;
the timeline's lines and the report: ownertimeline) are functions of facts; the temp dir's cluster and
its clean-up are ownercluster.Demo; ``run_owner`` here is the I/O. The chart is ownerchart.draw.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ClusterError
from ..runtime.ledger import atomic_write
from ..runtime.probes import SchedulerProbe, http_json
from .ownercluster import Demo
from .ownerplan import (BUFFER, DASK_PORTS, FLAG, HEAD, PNG, STATES, OwnerPlan, Span, figures, keys, make_task,
                        owner_block, reference, spans, topology, worker_state)
from .ownertimeline import OWNER_EVENTS, WORKER_EVENTS, OwnerReport, Timeline, describe, relevant

__all__ = [  # what this module always offered, wherever it lives now
    "BUFFER", "DASK_PORTS", "FLAG", "HEAD", "OWNER_EVENTS", "PNG", "STATES", "WORKER_EVENTS", "Demo", "OwnerPlan",
    "OwnerReport", "Span", "Timeline", "describe", "figures", "keys", "make_task", "owner_block", "reference",
    "relevant", "run_owner", "spans", "topology", "worker_state", "write_outputs",
]


class _Events:
    """New lines of events.jsonl (adaptdemo.EventTail), kept."""

    def __init__(self, path: Path):
        from .adaptdemo import EventTail

        self.tail = EventTail(path)

    def read(self) -> list[dict[str, Any]]:
        return self.tail.read()


def _on_sigterm(*_: Any) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def run_owner(plan: OwnerPlan, *, out: Path | None = None, echo: Callable[[str], None] = lambda line: None,
              keep: bool = False, interval: float = 0.25) -> OwnerReport:
    """The whole demo (see the module's docstring); ``out``: the PNG (its figures beside it, .json)."""
    from ..jobs.montecarlo import kernel_ns_per_point

    main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    try:
        ns = kernel_ns_per_point(n=2_000_000, repeat=3)
        tasks, points = plan.sized(ns)
        demo = Demo(plan, echo, keep)
        try:
            report = _run(demo, plan, tasks, points, echo, interval)
        finally:
            for line in demo.close():
                echo(f"note: {line}")
        report.kept, report.ns_per_point = (str(demo.root) if keep else None), round(ns, 3)
    finally:
        if main:
            signal.signal(signal.SIGTERM, old_term)
    tasks = report.tasks
    echo(f"checking {tasks} results against the same tasks computed serially in this process "
         f"(about {tasks * points * ns * 1e-9:.0f} s)")
    t = time.perf_counter()
    want = reference(tasks, points, plan.seed)
    report.serial_seconds = round(time.perf_counter() - t, 2)
    got = report.results
    report.mismatched = [i for i in range(tasks) if got.get(i) is None or list(got[i]) != list(want[i])]
    report.identical = not report.mismatched
    if out is not None:
        write_outputs(report, Path(out))
    return report


def _run(demo: Demo, plan: OwnerPlan, fixed: int, points: int, echo: Callable[[str], None],
         interval: float) -> OwnerReport:
    """Up, the job and the owner's schedule, sampled every ``interval`` s. ``fixed`` tasks queued at once,
    or (0) a steady stream: tasks queued as the workers take them (BUFFER per worker waiting), until
    the workers have run ``tail`` seconds after their return; the job is then every task queued."""
    from distributed import Client

    from ..topology import load_config
    from .connect import client_address, client_kwargs, read_record

    echo(f"a cluster of {plan.workers} workers on this machine, in {demo.root}, whose owner counts as active "
         f"while {demo.flag.name} exists there:")
    for line in owner_block(demo.text):
        echo(f"    {line}")
    t_up = time.time()
    demo.up()
    cfg = load_config(demo.config)
    echo(f"up in {time.time() - t_up:.1f} s; scheduler on 127.0.0.1:{demo.port}")
    probe = SchedulerProbe("127.0.0.1", read_record(cfg).scheduler.http_port or demo.dashboard)
    names = sorted(p.name for p in read_record(cfg).processes if p.role == "worker")
    tail = _Events(cfg.state_path / "events.jsonl")
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        echo(f"note: {text}")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the watcher's first judgement: the owner is away
        head = next((h for h in read_record(cfg).hosts if h.name == HEAD), None)
        if head is not None and head.owner == "idle":
            break
        time.sleep(0.2)
    else:
        note("the head's owner was not judged idle within 30 s of `up`; the job started anyway")
    computed_url = probe.base + "/clusterctl/computed.json?prefix=montecarlo-"
    before = http_json(computed_url, timeout=5.0) or {}
    task = make_task()
    timeline = Timeline(tuple(names), fixed)
    results: dict[int, list] = {}
    runs: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    owner_on = owner_off = finished = back_at = None
    back = closed = False
    submitted = 0
    futures: dict[int, Any] = {}
    size = f"{fixed} Monte Carlo tasks" if fixed else "Monte Carlo tasks queued as the workers take them"
    echo(f"a job of {size}, {points:,} points each (about {plan.task_seconds:g} s a task, seed {plan.seed}); "
         f"the owner arrives {plan.arrive:g} s in and stays {plan.stay:g} s "
         f"(retire_after {plan.retire_after:g} s, resume_after {plan.resume_after:g} s)")
    echo(timeline.header())
    with Client(client_address(cfg), timeout="20s", **client_kwargs(cfg)) as client:
        t0 = time.time()

        def now() -> float:
            return round(time.time() - t0, 2)

        def queue(n: int) -> None:
            nonlocal submitted
            idx = list(range(submitted, submitted + n))
            fs = client.map(task, [points] * n, [plan.seed] * n, idx, key=keys(submitted + n, points, plan.seed)[submitted:])
            futures.update(zip(idx, fs))
            submitted += n
            timeline.total = submitted

        queue(fixed or BUFFER * plan.workers)
        closed = bool(fixed)
        echo(timeline.note(0.0, f"job queued: {fixed} tasks" if fixed else
                           f"job started: {BUFFER * plan.workers} tasks queued, more as they are taken"))
        budget = plan.arrive + plan.stay + plan.resume_after + 120 + 4 * (fixed or 0) * plan.task_seconds / plan.workers \
            + plan.tail
        try:
            while True:
                lines: list[tuple[float, str]] = []
                t = now()
                if owner_on is None and t >= plan.arrive:
                    demo.flag.touch()
                    owner_on = now()
                    lines.append((owner_on, timeline.note(owner_on, f"the owner arrives: {demo.flag.name} created")))
                if owner_on is not None and owner_off is None and t >= owner_on + plan.stay:
                    demo.flag.unlink(missing_ok=True)
                    owner_off = now()
                    lines.append((owner_off, timeline.note(owner_off, f"the owner leaves: {demo.flag.name} removed")))
                for e in relevant(tail.read(), names, t0):
                    events.append(e)
                    lines.append((e["t"], timeline.event(e)))
                    if owner_off is not None and back_at is None and e["event"] in ("yield-over", "owner-resume") \
                            and e.get("process") == HEAD and e["t"] >= owner_off:
                        back_at = e["t"]
                done = [i for i, f in futures.items() if f.done()]
                if done:
                    bad = [futures[i] for i in done if futures[i].status != "finished"]
                    if bad:
                        raise ClusterError(f"a task of the job failed: {bad[0].exception()!r}")
                    for i, (row, worker, start, end) in zip(done, client.gather([futures[i] for i in done])):
                        results[i] = row
                        runs.append({"index": i, "worker": worker, "start": round(start - t0, 3),
                                     "end": round(end - t0, 3)})
                    for i in done:  # the client holds its results: none is lost when the workers retire
                        futures.pop(i).release()
                if not closed:
                    again = [r["start"] for r in runs if back_at is not None and r["start"] >= back_at]
                    gone = owner_off is not None and back_at is None and now() > owner_off + plan.resume_after + 60
                    if (again and now() >= min(again) + plan.tail) or gone:
                        closed = True
                        lines.append((now(), timeline.note(now(), f"no more tasks queued: the job is {submitted} tasks")))
                    elif len(futures) < BUFFER * plan.workers:
                        queue(BUFFER * plan.workers - len(futures))
                if closed and not futures and finished is None:
                    finished = now()
                    lines.append((finished, timeline.note(finished, f"job done: all {submitted} results in")))
                states = _states(read_record(cfg), probe, names)
                t = now()
                if states is not None:
                    samples.append({"t": t, **states})
                    line = timeline.sample(t, states, len(results))
                    if line:
                        lines.append((t, line))
                for _, line in sorted(lines, key=lambda x: x[0]):
                    echo(line)
                back = back_at is not None and states is not None and all(s == "running" for s in states.values())
                if finished is not None and owner_off is not None and (back or now() > owner_off + plan.resume_after + 60):
                    break
                if now() > budget:
                    raise ClusterError(f"the job did not finish within {budget:.0f} s ({len(results)} of {submitted} "
                                       "results in)")
                time.sleep(interval)
        finally:
            for f in futures.values():
                f.release()
        if not back:
            note("the workers were not all running again within resume_after + 60 s of the owner leaving")
        after = http_json(computed_url, timeout=5.0) or {}
    from .adapttimeline import Stored

    recomputed, _ = Stored(before).delta(after, keys(submitted, points, plan.seed))
    end = now()
    figs = figures(runs, events, owner_on, owner_off)
    if figs["paused_s"] is None:
        note("no owner-pause event after the owner arrived")
    if plan.stay > plan.retire_after and figs["retired_s"] is None:
        note("the workers did not retire while the owner stayed")
    if owner_on is not None and finished is not None and finished < owner_on + (figs["paused_s"] or 0):
        note("the job was done before the workers paused: give it more --tasks, or leave --tasks 0")
    return OwnerReport(
        plan=dict(plan.__dict__), tasks=submitted, points=points, workers=names, figures=figs, identical=False,
        mismatched=[], recomputed=recomputed, owner_on=owner_on, owner_off=owner_off, finished=finished,
        spans=spans(events, owner_on, owner_off, end), runs=sorted(runs, key=lambda r: r["start"]), samples=samples,
        events=events, notes=notes, seconds=end, results=results,
    )


def _states(record: Any, probe: SchedulerProbe, names: list[str]) -> dict[str, str] | None:
    seen = probe.workers_by_name(timeout=1.0)
    if seen is None:
        return None
    ledger = {p.name: str(p.state.value if hasattr(p.state, "value") else p.state) for p in record.processes}
    return {n: worker_state(ledger.get(n), (seen.get(n) or {}).get("status")) for n in names}


def write_outputs(report: OwnerReport, png: Path) -> None:
    """The chart (PNG) and, beside it (.json), the figures with every task, sample and event."""
    from .ownerchart import draw

    data = png.with_suffix(".json")
    try:
        png.parent.mkdir(parents=True, exist_ok=True)
        report.chart = str(draw(report, png))
        report.data = str(data)
        atomic_write(data, json.dumps(report.to_dict(), indent=1) + "\n")
    except OSError as e:
        raise ClusterError(f"cannot write the demo's files in {os.fspath(png.parent)}: {e.strerror or e}") from None
