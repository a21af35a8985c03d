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

The pure parts (the topology, the job's size, each worker's state, the spans, the figures, the
timeline's lines) are functions of facts; ``run_owner`` is the I/O. The chart is ownerchart.draw.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ClusterError
from ..runtime.ledger import atomic_write
from ..runtime.probes import SchedulerProbe, free_port, http_json

PNG = "demo-owner.png"
FLAG = "owner-is-here"
HEAD = "localhost"
DASK_PORTS = (8786, 8787)  # Dask's defaults: a user's own cluster may be there
# The supervisor's events the timeline shows: the head's owner and mode, and the workers' lives.
OWNER_EVENTS = ("owner-active", "owner-idle", "owner-unknown", "owner-pause", "owner-resume", "yield",
                "yield-over", "hours-out", "hours-in", "pause-failed", "unpause-failed", "retire-failed")
WORKER_EVENTS = ("yielded", "started", "ready", "exited", "fatal", "unhealthy", "restarting", "spawn-failed", "lost")
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


# -- the pure parts: states, spans, figures, lines ---------------------------------------------


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


# -- the run --------------------------------------------------------------------------------------


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


class _Events:
    """New lines of events.jsonl (adaptdemo.EventTail), kept."""

    def __init__(self, path: Path):
        from .adaptdemo import EventTail

        self.tail = EventTail(path)

    def read(self) -> list[dict[str, Any]]:
        return self.tail.read()


class Demo:
    """The temp dir, the cluster in it, and the clean-up of everything started there."""

    def __init__(self, plan: OwnerPlan, echo: Callable[[str], None], keep: bool = False):
        self.plan, self.echo, self.keep = plan, echo, keep
        self.root = Path(tempfile.mkdtemp(prefix="clusterctl-owner-demo-"))
        self.flag = self.root / FLAG
        self.config = self.root / "cluster.yaml"
        port = _port(set())
        self.port, self.dashboard = port, _port({port})
        self.text = topology(plan, self.root, self.port, self.dashboard)
        self.config.write_text(self.text)
        self.up_tried = False

    def cli(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        """`python -m clusterctl ARGS --file cluster.yaml`, in its own session (a Ctrl-C here never
        cuts an `up` or a `down` in half: the demo's clean-up runs `down` itself)."""
        env = {k: v for k, v in os.environ.items() if k != "CLUSTERCTL_CONFIG"}
        proc = subprocess.Popen([sys.executable, "-m", "clusterctl", *args, "--file", str(self.config)], cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            out, err = proc.communicate()
            return subprocess.CompletedProcess(proc.args, -9, out, (err or "") + f"\ntimed out after {timeout:g} s")
        except BaseException:  # Ctrl-C while waiting: the child carries on, the clean-up comes next
            try:
                proc.wait(timeout if args[0] == "down" else 30)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                _kill_tree(proc.pid)
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def up(self) -> None:
        self.up_tried = True
        res = self.cli("up", timeout=240)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
            raise ClusterError(f"the demo's cluster did not start: {last}")

    def close(self) -> list[str]:
        """`down`, the flag removed, anything still running under the temp dir killed by pid (and said);
        the temp dir removed unless kept. Ctrl-C is ignored meanwhile: the clean-up is not cut short."""
        main = threading.current_thread() is threading.main_thread()
        old = [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)] if main else []
        left: list[str] = []
        try:
            self.flag.unlink(missing_ok=True)
            if self.up_tried:
                res = self.cli("down", timeout=120)
                if res.returncode != 0:
                    left.append(f"`clusterctl down` exited {res.returncode}: "
                                + (res.stderr.strip().splitlines() or [""])[-1])
            left += _sweep(self.root)
        finally:
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)
            for s, handler in zip((signal.SIGINT, signal.SIGTERM), old):
                signal.signal(s, handler)
        return left


def _port(taken: set[int]) -> int:
    for _ in range(100):
        port = free_port()
        if port not in taken and port not in DASK_PORTS:
            return port
    raise ClusterError("no free port on 127.0.0.1 for the demo's cluster")


def _processes_under(root: Path) -> list:
    import psutil

    me, found = os.getpid(), []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        if p.pid == me or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cwd, cmd = p.info["cwd"] or "", " ".join(p.info["cmdline"] or [])
        if cwd == str(root) or cwd.startswith(str(root) + os.sep) or str(root) in cmd:
            found.append(p)
    return found


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for q in procs:
        try:
            q.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


def _sweep(root: Path) -> list[str]:
    """What still runs under ``root`` gets 5 s to leave, then is killed by pid with its children."""
    import psutil

    procs = _processes_under(root)
    if not procs:
        return []
    _, alive = psutil.wait_procs(procs, timeout=5)
    killed = []
    for p in alive:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                killed.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                _kill_tree(p.pid)
        except psutil.NoSuchProcess:
            pass
    return [f"killed, left running after `down`: {k}" for k in killed]


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
