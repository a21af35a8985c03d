"""The pure data of `clusterctl demo owner`: the plan and its checks, the demo's topology, the job's
task and its serial reference, each worker's state in one word, the spans (the owner, paused, away)
and the figures. Functions of facts: no clock, no I/O (the demo's run is ownerdemo.run_owner).
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ClusterError

PNG = "demo-owner.png"
FLAG = "owner-is-here"
HEAD = "localhost"
DASK_PORTS = (8786, 8787)  # Dask's defaults: a user's own cluster may be there
STATES = ("running", "paused", "retiring", "away", "starting")
BUFFER = 3  # tasks per worker waiting in the scheduler while the job is a steady stream


@dataclass(frozen=True)
class OwnerPlan:
    workers: int = 2  # on this machine, one thread each
    arrive: float = 5.0  # seconds after the job is queued: the flag file is created
    stay: float = 10.0  # seconds the owner stays: then the flag file is removed
    retire_after: float = 4.0  # the topology's owner.retire_after
    resume_after: float = 4.0  # the topology's owner.resume_after
    task_seconds: float = 0.2  # about how long one task runs (its points are measured for it here)
    tail: float = 6.0  # seconds the workers run after their return (a steady stream; with --tasks: not used)
    tasks: int = 0  # 0: a steady stream, until the workers have run ``tail`` seconds after their return
    points: int = 0  # points per task; 0: measured for task_seconds on this machine
    seed: int = 42

    def __post_init__(self) -> None:
        checks = (("--workers", self.workers, 1, 16), ("--arrive", self.arrive, 0, 3600), ("--stay", self.stay, 0.5, 3600),
                  ("--retire-after", self.retire_after, 0, 3600), ("--resume-after", self.resume_after, 0, 3600),
                  ("--task-seconds", self.task_seconds, 0.01, 60), ("--tail", self.tail, 0, 3600),
                  ("--tasks", self.tasks, 0, 100_000), ("--points", self.points, 0, 10**10), ("--seed", self.seed, 0, 2**63))
        for name, value, low, high in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ClusterError(f"{name} must be between {low:g} and {high:g}, not {value!r}")

    def sized(self, ns_per_point: float) -> tuple[int, int]:
        """(tasks, points per task): ``points`` for ``task_seconds`` at ``ns_per_point`` (this machine's
        kernel), unless given; ``tasks`` as given (0: a steady stream, as many as the timeline takes).

        >>> OwnerPlan(task_seconds=0.2).sized(4.0)
        (0, 50000000)
        >>> OwnerPlan(tasks=7, points=1000).sized(4.0)
        (7, 1000)
        """
        points = self.points or int(min(max(self.task_seconds / max(ns_per_point, 1e-3) * 1e9, 10_000), 2e9))
        points = round(points, -4) if points >= 100_000 and not self.points else points
        return self.tasks, points


def topology(plan: OwnerPlan, root: Path, port: int, dashboard: int) -> str:
    """The demo's cluster.yaml: its workers on the head, the owner policy on the flag file in ``root``.

    >>> print(topology(OwnerPlan(), Path("/tmp/d"), 21000, 21001))  # doctest: +ELLIPSIS
    name: owner-demo
    state_dir: "/tmp/d/state"
    scheduler: {host: 127.0.0.1, port: 21000, dashboard_port: 21001}
    workers:
      - name: default
        count: 2
        nthreads: 1
    timeouts: {startup: 90, shutdown: 10}
    owner:
      active_if: {command: "test -e /tmp/d/owner-is-here", command_timeout: 3}
      when_active: pause
      retire_after: 4
      resume_after: 4
    <BLANKLINE>
    """
    command = f"test -e {shlex.quote(str(root / FLAG))}"
    return (f"name: owner-demo\nstate_dir: {json.dumps(str(root / 'state'))}\n"
            f"scheduler: {{host: 127.0.0.1, port: {port}, dashboard_port: {dashboard}}}\n"
            f"workers:\n  - name: default\n    count: {plan.workers}\n    nthreads: 1\n"
            f"timeouts: {{startup: 90, shutdown: 10}}\n"
            f"owner:\n  active_if: {{command: {json.dumps(command)}, command_timeout: 3}}\n"
            f"  when_active: pause\n  retire_after: {plan.retire_after:g}\n  resume_after: {plan.resume_after:g}\n")


def owner_block(text: str) -> list[str]:
    """The `owner:` lines of a topology, to show the user what the demo runs."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("owner:")), len(lines))
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def make_task() -> Callable[[int, int, int], tuple[list, str, float, float]]:
    """One Monte Carlo task (montecarlo.estimate_pi) that also says which worker ran it and when.
    Made in a function: a local function travels by value (cloudpickle), so the workers need not
    import this module (nor the client package's imports)."""

    def owner_demo_task(n_points: int, seed: int, index: int) -> tuple[list, str, float, float]:
        import time as clock

        from distributed import get_worker

        from clusterctl.jobs.montecarlo import estimate_pi

        start = clock.time()
        row = estimate_pi(n_points, seed, index)
        return row, str(get_worker().name), start, clock.time()

    return owner_demo_task


def reference(tasks: int, points: int, seed: int) -> list[list]:
    """The job computed serially in this process, without Dask."""
    from ..jobs.montecarlo import estimate_pi

    return [estimate_pi(points, seed, i) for i in range(tasks)]


def keys(tasks: int, points: int, seed: int) -> list[str]:
    from ..jobs.montecarlo import task_key

    return [task_key(seed, i, points) for i in range(tasks)]


# -- the pure parts: states, spans, figures ----------------------------------------------------


def worker_state(ledger_state: str | None, dask_status: str | None) -> str:
    """One word for a worker now: the supervisor's state (yielding, yielded, starting) first, else
    Dask's status (paused, closing_gracefully, running), else starting (not registered yet).

    >>> worker_state("running", "paused"), worker_state("yielding", "paused"), worker_state("yielded", None)
    ('paused', 'retiring', 'away')
    >>> worker_state("running", None), worker_state("pending", None), worker_state("running", "closing_gracefully")
    ('starting', 'starting', 'retiring')
    """
    if ledger_state == "yielded":
        return "away"
    if ledger_state == "yielding":
        return "retiring"
    if ledger_state in ("pending", "starting", "backoff", "waiting") or dask_status is None:
        return "starting"
    if ledger_state not in (None, "running"):
        return str(ledger_state)
    if dask_status in ("closing_gracefully", "closing", "closed"):
        return "retiring"
    return {"paused": "paused", "running": "running"}.get(dask_status, str(dask_status))


@dataclass(frozen=True)
class Span:
    kind: str  # owner (the flag file existed) | paused | away
    start: float  # seconds since the job was queued
    end: float | None  # None: still on at the end

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "start": self.start, "end": self.end}


def spans(events: list[dict[str, Any]], owner_on: float | None, owner_off: float | None, end: float) -> list[Span]:
    """The owner's presence (the flag file), the head's paused spans (owner-pause to owner-resume or
    yield) and away spans (yield to yield-over), from the head's events (``t``: seconds since the start).

    >>> [(s.kind, s.start, s.end) for s in spans([{"t": 6, "event": "owner-pause", "process": "localhost"},
    ...     {"t": 10, "event": "yield", "process": "localhost"},
    ...     {"t": 19, "event": "yield-over", "process": "localhost"}], 5.0, 15.0, 30.0)]
    [('owner', 5.0, 15.0), ('paused', 6, 10), ('away', 10, 19)]
    """
    out = [Span("owner", owner_on, owner_off)] if owner_on is not None else []
    open_: dict[str, float] = {}
    for e in sorted((e for e in events if e.get("process") == HEAD), key=lambda e: e["t"]):
        kind = e["event"]
        if kind == "owner-pause":
            open_.setdefault("paused", e["t"])
        elif kind in ("owner-resume", "yield") and "paused" in open_:
            out.append(Span("paused", open_.pop("paused"), e["t"]))
        if kind == "yield":
            open_.setdefault("away", e["t"])
        elif kind == "yield-over" and "away" in open_:
            out.append(Span("away", open_.pop("away"), e["t"]))
    out += [Span(kind, start, None) for kind, start in open_.items()]
    return out


def _first(events: list[dict[str, Any]], kind: str, after: float | None, process: str | None = HEAD) -> float | None:
    if after is None:
        return None
    return next((e["t"] for e in sorted(events, key=lambda e: e["t"])
                 if e["event"] == kind and e["t"] >= after and (process is None or e.get("process") == process)), None)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 2)


def figures(tasks: list[dict[str, Any]], events: list[dict[str, Any]], owner_on: float | None,
            owner_off: float | None) -> dict[str, Any]:
    """The demo's figures, in seconds (None: it did not happen). ``tasks``: each task's ``worker``,
    ``start`` and ``end``; ``events`` and the owner's times: seconds since the job was queued.

    >>> f = figures([{"worker": "default-1", "start": s, "end": s + 0.2} for s in (1.0, 5.3, 20.1)],
    ...             [{"t": 5.9, "event": "owner-active", "process": "localhost"},
    ...              {"t": 6.0, "event": "owner-pause", "process": "localhost"},
    ...              {"t": 10.1, "event": "yield", "process": "localhost"},
    ...              {"t": 10.6, "event": "yielded", "process": "default-1"},
    ...              {"t": 15.8, "event": "owner-idle", "process": "localhost"},
    ...              {"t": 19.9, "event": "yield-over", "process": "localhost"}], 5.0, 15.0)
    >>> f["paused_s"], f["last_start_s"], f["retired_s"], f["back_s"], f["first_task_back_s"], f["started_while_owner"]
    (1.0, 0.3, 4.1, 4.9, 5.1, 1)
    """
    paused = _first(events, "owner-pause", owner_on)
    retired = _first(events, "yield", owner_on)
    back = _first(events, "yield-over", owner_off)
    if back is None:
        back = _first(events, "owner-resume", owner_off)  # the owner left before retire_after
    until = back if back is not None else math.inf
    after = [t["start"] for t in tasks if owner_on is not None and owner_on <= t["start"] < until]
    yielded = [e["t"] for e in events if e["event"] == "yielded" and owner_on is not None and e["t"] >= owner_on
               and (owner_off is None or e["t"] <= (back if back is not None else math.inf))]
    again = [t["start"] for t in tasks if back is not None and t["start"] >= back]
    return {
        "owner_seen_s": _minus(_first(events, "owner-active", owner_on), owner_on),
        "paused_s": _minus(paused, owner_on),
        "last_start_s": _minus(max(after), owner_on) if after else (0.0 if owner_on is not None else None),
        "started_while_owner": len(after),
        "retired_s": _minus(retired, paused),
        "all_away_s": _minus(max(yielded), owner_on) if yielded else None,
        "owner_gone_seen_s": _minus(_first(events, "owner-idle", owner_off), owner_off),
        "back_s": _minus(back, owner_off),
        "first_task_back_s": _minus(min(again), owner_off) if again else None,
    }
