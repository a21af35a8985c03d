"""scripts/bench --only owner: the owner-aware workstation's aims, measured on this machine in one run.

    scripts/bench --only owner [--owner-arrivals 12] [--owner-rounds 3]
    python scripts/bench_owner.py [--arrivals 12] [--rounds 3]        # the same, alone

Three clusters of as many single-thread workers as cores, on the head, one after the other:

* ``pause`` (owner: the command signal on a flag file, ``retire_after: 3600`` so the workers only
  pause, ``resume_after: 0``): first 30 s idle (the supervisor's CPU and its owner watcher's); then a
  steady stream of ~0.1 s tasks, each recording its worker and start, and ``arrivals`` times the
  owner arrives (the flag file created, at a random phase of the watcher's second) and leaves once
  the workers are paused: from the flag to the last task started on the head's workers, to the
  owner-active and owner-pause events, to Dask's paused status; from its removal to owner-resume and
  to the first task started again. Last, the owner's CPU-bound process (``python -c "while True:
  pass"``, started here, not tagged) runs while the busy workers are paused: its CPU over 10 s; and
  alone, with no cluster of ours running, before each cluster and after the last (on a shared machine
  the neighbours' load is what the hog can never have).
  The pause is triggered by the command signal, not by other_cpu_above: on a shared machine the
  other-CPU signal is noisy, the flag file is deterministic.
* ``compete`` (no owner key) and ``nice`` (no owner key, ``nice: 10``): 30 s idle (the supervisor's
  CPU), then the same busy workers and the same hog, which now competes with them.
* ``retire`` (``retire_after: 3``, ``resume_after: 3``): ``rounds`` times a Monte Carlo job, the owner
  arriving 2 s in, staying until every worker has retired, leaving; the job's result against the
  same tasks computed serially; from the flag to the last worker retired and from its removal to
  the last worker registered again, from the events' times.

The pure parts (medians, p95, the latencies, the rows and the table) are functions of samples, in
the standard library only, tested by tests/unit/test_bench_owner.py:

    >>> p95([0.4, 1.1, 0.9, 1.6, 0.7])
    1.6
    >>> last_start_after(10.0, [9.95, 10.2, 10.61, 12.5], until=12.0)
    0.61
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from pathlib import Path

PAUSE_AIM = 2.0  # s, p95: the owner active (flag created) to no new task starting on that host
RETIRE_MARGIN = 5.0  # s: the last worker retired within retire_after + this, after the pause
BACK_MARGIN = 10.0  # s: every worker registered again within resume_after + this, after the owner left
HOG_AIM = 90.0  # % of a core: the owner's CPU-bound process while the host's workers are paused
TASK_S = 0.1  # s of busy CPU per task of the stream
IDLE_S = 30.0  # s of idle for the CPU figures
HOG_S = 10.0  # s the hog's CPU is measured over
RETIRE_AFTER, RESUME_AFTER = 3.0, 3.0  # the retire cluster's policy

# (key, label, unit, aim, how the aim reads): one row each, in this order, when measured
ROWS = (
    ("last_start", "owner arrives (flag file created) → last task started on the host's workers", "s", PAUSE_AIM, "p95 ≤"),
    ("owner_active", "owner arrives → `owner-active` event", "s", None, ""),
    ("owner_pause", "owner arrives → `owner-pause` event", "s", None, ""),
    ("dask_paused", "owner arrives → every worker paused in Dask's view", "s", None, ""),
    ("resume_event", "owner leaves (flag removed) → `owner-resume` event (`resume_after: 0`)", "s", None, ""),
    ("first_start", "owner leaves → first task started again", "s", None, ""),
    ("retired", "`owner-pause` → last worker retired (`yielded`), `retire_after: {retire_after:g}`", "s",
     "retire", "≤"),
    ("retired_flag", "owner arrives → last worker retired", "s", None, ""),
    ("yield_over", "owner leaves → `yield-over` event, `resume_after: {resume_after:g}`", "s", None, ""),
    ("back", "owner leaves → last worker registered again (`ready`)", "s", "back", "≤"),
    ("hog_paused", "owner's CPU-bound process, workers paused (owner policy)", "%", HOG_AIM, "≥"),
    ("hog_compete", "the same process, no owner policy: {workers} busy workers compete", "%", None, ""),
    ("hog_nice", "the same, no owner policy, `nice: 10` workers", "%", None, ""),
    ("hog_alone", "the same process alone, no cluster running (what this shared machine's other load leaves it)", "%",
     None, ""),
    ("others_paused", "… other processes on this shared machine (not ours) meanwhile, workers paused", "%", None, ""),
    ("others_compete", "… other processes meanwhile, workers competing", "%", None, ""),
    ("others_nice", "… other processes meanwhile, `nice: 10` workers competing", "%", None, ""),
    ("workers_paused_cpu", "the {workers} paused workers' CPU meanwhile (owner policy)", "%", None, ""),
    ("supervisor_idle_owner", "idle supervisor CPU, owner policy", "%", None, ""),
    ("supervisor_idle_plain", "idle supervisor CPU, no owner key", "%", None, ""),
    ("watcher_idle", "owner watcher (`python -m clusterctl.remote.ownerwatch`, its command included), idle", "%",
     None, ""),
)


# -- the pure parts --------------------------------------------------------------------------------


def p95(xs: list[float]) -> float:
    """The 95th percentile, nearest rank (the smallest value with at least 95% at or below it): of 12
    samples the largest, of 20 the 19th. Never below a sample it should cover; nan when empty."""
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def summary(xs: list[float]) -> dict:
    """Median, p95 (nearest rank), n, the worst and every sample, rounded to ms."""
    xs = [round(float(x), 3) for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return {"median": math.nan, "p95": math.nan, "n": 0, "max": math.nan, "all": []}
    return {"median": round(statistics.median(xs), 3), "p95": p95(xs), "n": len(xs), "max": max(xs), "all": xs}


def last_start_after(flag: float, starts: list[float], until: float = math.inf) -> float:
    """Seconds from ``flag`` to the last task start in [flag, until): when the last new task started on
    the host after the owner arrived; 0.0 when none did (the last had started before)."""
    after = [s for s in starts if flag <= s < until]
    return round(max(after) - flag, 3) if after else 0.0


def first_start_after(flag: float, starts: list[float]) -> float | None:
    after = [s for s in starts if s >= flag]
    return round(min(after) - flag, 3) if after else None


def first_event(events: list[dict], kind: str, after: float, process: str | None = "localhost") -> dict | None:
    """The first event of ``kind`` at or after ``after`` (unix time), of ``process`` (None: any)."""
    return next((e for e in sorted(events, key=lambda e: e["time"]) if e.get("event") == kind and e["time"] >= after
                 and (process is None or e.get("process") == process)), None)


def last_of_each(events: list[dict], kind: str, after: float, names: list[str]) -> float | None:
    """The time of the last of ``names``' first ``kind`` event at or after ``after``; None if one is missing."""
    times = []
    for n in names:
        e = first_event(events, kind, after, process=n)
        if e is None:
            return None
        times.append(e["time"])
    return max(times) if times else None


def since(e: dict | None, t: float) -> float | None:
    return None if e is None else round(e["time"] - t, 3)


def aim_value(aim, r: dict) -> float | None:
    """A row's aim: a number, or from the run's settings ("retire": retire_after + 5, "back": resume_after + 10)."""
    if aim == "retire":
        return r["retire_after"] + RETIRE_MARGIN
    if aim == "back":
        return r["resume_after"] + BACK_MARGIN
    return aim


def verdict(value: float, aim: float | None, how: str) -> str:
    """`met` or `MISSED` against the aim (``how`` "≥" or one ending in "≤"), '' without an aim.

    >>> verdict(1.8, 2.0, "p95 ≤"), verdict(2.4, 2.0, "p95 ≤"), verdict(97.0, 90.0, "≥"), verdict(1.0, None, "")
    ('met', 'MISSED', 'met', '')
    """
    if aim is None or value is None or math.isnan(value):
        return ""
    ok = value >= aim if how.strip() == "≥" else value <= aim
    return "met" if ok else "MISSED"


def amount(value: float, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.2f} s" if unit == "s" else f"{value:.1f}% of a core"


def rows(r: dict) -> list[dict]:
    """One row per measured figure of ``r`` (measure()'s result): label, median, p95, n, aim, verdict.
    The p95 aim is judged on the p95; the others on the worst sample (every one must meet it)."""
    out = []
    for key, label, unit, aim, how in ROWS:
        s = r["figures"].get(key)
        if not s or not s["n"]:
            continue
        target = aim_value(aim, r)
        judged = s["p95"] if how.startswith("p95") else (min(s["all"]) if how.strip() == "≥" else s["max"])
        out.append({"key": key, "label": label.format(**r), "median": amount(s["median"], unit),
                    "p95": amount(s["p95"], unit), "n": s["n"],
                    "aim": f"{how} {amount(target, unit)}".strip() if target is not None else "",
                    "verdict": verdict(judged, target, how)})
    return out


def markdown(r: dict) -> list[str]:
    """The table for the docs' performance page, then how it was measured."""
    lines = ["| owner-aware workstation | median | p95 | n | aim | |", "|---|---|---|---|---|---|"]
    for row in rows(r):
        lines.append(f"| {row['label']} | {row['median']} | {row['p95']} | {row['n']} | {row['aim']} | {row['verdict']} |")
    ident = r.get("identical") or []
    if ident:
        lines.append(f"| the job's result identical to the same tasks computed serially | "
                     f"{sum(ident)}/{len(ident)} rounds | | {len(ident)} | all | "
                     f"{'met' if all(ident) else 'MISSED'} |")
    if r.get("recomputed") is not None:
        lines.append(f"| … tasks recomputed in those rounds (results held on the retired workers: every worker was "
                     f"on the one host) | {r['recomputed']} | | | | |")
    lines += ["", (f"{r['workers']} single-thread workers on the head ({r['cores']} cores), tasks of {TASK_S:g} s of busy "
                   f"CPU in a steady stream; {r['arrivals']} owner arrivals, each at a random phase of the watcher's "
                   f"1 s cycle (p95: nearest rank); {r['rounds']} retire/return rounds with a "
                   f"{r['job_tasks']}-task Monte Carlo job; the hog's CPU over {HOG_S:g} s windows (alone: before each cluster and after the last), the idle CPU "
                   f"over {r.get('idle_s', IDLE_S):g} s. The owner is made active by the command signal (`test -e FLAG`), not by "
                   "`other_cpu_above`: on a shared machine the other-CPU signal is noisy, a flag file is "
                   f"deterministic. distributed {r['distributed']}."), ""]
    return lines


# -- the measuring (imports psutil, distributed and clusterctl when called) --------------------------


def make_task():
    """~TASK_S of busy CPU; (index, worker name, start). Made in a function: a local function travels by
    value (cloudpickle), the workers cannot import this script."""
    busy = TASK_S

    def task(i: int):
        import time as t

        from distributed import get_worker

        start = t.time()
        while t.time() - start < busy:
            pass
        return i, get_worker().name, start

    return task


class Stream:
    """A steady stream of tasks on a thread: a few per worker always queued, the done ones gathered
    and released; every start kept (start time, worker)."""

    def __init__(self, client, workers: int, per_worker: int = 3):
        import threading

        self.client, self.want = client, workers * per_worker
        self.task = make_task()
        self.starts: list[tuple[float, str]] = []
        self.futures: list = []
        self.next = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def start(self) -> "Stream":
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self.stopped.is_set():
                done = [f for f in self.futures if f.done()]
                if done:
                    for _, worker, start in self.client.gather(done):
                        with self.lock:
                            self.starts.append((start, worker))
                    self.futures = [f for f in self.futures if not f.done()]
                    for f in done:
                        f.release()
                if len(self.futures) < self.want:
                    n = self.want - len(self.futures)
                    self.futures += self.client.map(self.task, range(self.next, self.next + n), pure=False)
                    self.next += n
                self.stopped.wait(0.02)
        except BaseException as e:  # noqa: BLE001 - said by the caller
            self.error = e

    def start_times(self) -> list[float]:
        with self.lock:
            return [s for s, _ in self.starts]

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(10)
        for f in self.futures:
            f.release()
        self.futures = []


class OwnerCluster:
    """A cluster of ``workers`` on the head in ``root``, driven through the real CLI."""

    def __init__(self, root: Path, name: str, workers: int, extra: str = ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _ports import free_port

        self.root, self.name, self.workers = root, name, workers
        self.root.mkdir(parents=True, exist_ok=True)
        self.flag = root / "owner-is-here"
        port = free_port()
        dash = free_port(taken={port})
        self.config = root / "cluster.yaml"
        self.config.write_text(
            f"name: {name}\nstate_dir: state\nscheduler: {{host: 127.0.0.1, port: {port}, dashboard_port: {dash}}}\n"
            f"workers:\n  - name: w\n    count: {workers}\n    nthreads: 1\n"
            "timeouts: {startup: 120, shutdown: 10}\n" + extra.replace("FLAG", str(self.flag)))
        self.state = root / "state" / name
        self.running = False

    def cli(self, *args: str, timeout: float = 240):
        import os
        import subprocess

        if args[0] == "up":
            self.running = True
        res = subprocess.run([sys.executable, "-m", "clusterctl", *args, "--file", str(self.config)], cwd=self.root,
                             capture_output=True, text=True, timeout=timeout,
                             env={k: v for k, v in os.environ.items() if k not in ("CLUSTERCTL_CONFIG", "CLUSTERCTL_TAG")})
        if res.returncode != 0:
            raise RuntimeError(f"{self.name}: clusterctl {' '.join(args)} failed: {res.stderr[-2000:]}")
        if args[0] == "down":
            self.running = False
        return res

    def events(self) -> list[dict]:
        import json

        path = self.state / "events.jsonl"
        out = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def ledger(self) -> dict:
        import json

        return json.loads((self.state / "ledger.json").read_text())

    def worker_names(self) -> list[str]:
        return sorted(p["name"] for p in self.ledger()["processes"] if p["role"] == "worker")

    def head(self) -> dict:
        return next((h for h in self.ledger().get("hosts", []) if h["name"] == "localhost"), {})

    def client(self):
        from distributed import Client

        from clusterctl.client.connect import client_address, client_kwargs
        from clusterctl.topology import load_config

        cfg = load_config(self.config)
        return Client(client_address(cfg), timeout="30s", **client_kwargs(cfg))

    def wait(self, what: str, predicate, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {what} within {timeout:g} s")
            time.sleep(0.05)

    def event_after(self, kind: str, t: float, timeout: float, process: str | None = "localhost") -> dict:
        return self.wait(f"{kind} event", lambda: first_event(self.events(), kind, t, process), timeout)

    def statuses(self, client) -> dict[str, str]:
        return {w.get("name"): w.get("status") for w in client.scheduler_info(n_workers=-1)["workers"].values()}

    def supervisor(self):
        import psutil

        return psutil.Process(self.ledger()["supervisor"]["pid"])

    def watcher(self):
        for q in self.supervisor().children(recursive=True):
            try:
                if "clusterctl.remote.ownerwatch" in " ".join(q.cmdline()):
                    return q
            except Exception:  # noqa: BLE001 - gone meanwhile
                continue
        return None

    def worker_procs(self) -> list:
        import psutil

        out = []
        for p in self.ledger()["processes"]:
            if p["role"] == "worker" and p.get("pid"):
                try:
                    proc = psutil.Process(p["pid"])
                    out += [proc, *proc.children(recursive=True)]
                except psutil.NoSuchProcess:
                    pass
        return out

    def close(self) -> None:
        self.flag.unlink(missing_ok=True)
        if self.running:
            try:
                self.cli("down", timeout=120)
            except Exception as e:  # noqa: BLE001 - the sweep below and the bench's own clean up
                print(f"warning: {self.name}: down failed: {e}", file=sys.stderr)
        sweep(self.root)


def sweep(root: Path) -> list[str]:
    """Whatever still runs under ``root`` (cwd or argv) is killed by pid with its children; said."""
    import psutil

    from clusterctl.client.ownercluster import processes_under

    found = processes_under(root)
    _, alive = psutil.wait_procs(found, timeout=3)
    killed = []
    for p in alive:
        try:
            for q in [*p.children(recursive=True), p]:
                killed.append(f"{q.pid} {' '.join(q.cmdline())[:120]}")
                q.kill()
        except psutil.NoSuchProcess:
            pass
    if killed:
        print("warning: left running, killed:\n  " + "\n  ".join(killed), file=sys.stderr)
    return killed


def cpu_seconds(procs: list, children: bool = False) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)
        except Exception:  # noqa: BLE001 - a process that ended
            pass
    return total


def cpu_percent(procs: list, seconds: float, children: bool = False) -> float:
    """% of a core the processes used over ``seconds`` (user + system; ``children``: reaped ones too)."""
    c0, t0 = cpu_seconds(procs, children), time.perf_counter()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(procs, children), time.perf_counter()
    return 100.0 * (c1 - c0) / (t1 - t0)


def start_hog(root: Path):
    """The owner's CPU-bound process: not tagged (no CLUSTERCTL_TAG), its cwd in ``root`` (swept)."""
    import os
    import subprocess

    import psutil

    env = {k: v for k, v in os.environ.items() if k != "CLUSTERCTL_TAG"}
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], cwd=root, env=env, start_new_session=True)
    return proc, psutil.Process(proc.pid)


def stop_hog(proc) -> None:
    proc.kill()
    proc.wait(10)


def sched(p) -> str:
    """A process's nice, session and autogroup (Linux): with autogroups on, nice only weighs within one."""
    import os

    try:
        with open(f"/proc/{p.pid}/autogroup") as f:
            group = f.read().strip()
    except OSError:
        group = "-"
    try:
        return f"pid {p.pid} nice {p.nice()} sid {os.getsid(p.pid)} {group}"
    except Exception:  # noqa: BLE001 - gone meanwhile
        return f"pid {p.pid} gone"


def hog_alone(root: Path) -> float:
    """The hog's CPU over HOG_S with no cluster of ours running: the baseline of a shared machine."""
    proc, hog = start_hog(root)
    try:
        time.sleep(1.0)
        c0, t0 = cpu_seconds([hog]), time.perf_counter()
        time.sleep(HOG_S)
        return 100.0 * (cpu_seconds([hog]) - c0) / (time.perf_counter() - t0)
    finally:
        stop_hog(proc)


def idle_cpu(c: OwnerCluster, seconds: float, watcher: bool) -> dict[str, float]:
    time.sleep(3.0)  # the start settles (the watcher's first lines, the ledger written)
    sup = c.supervisor()
    procs = {"supervisor": [sup]}
    if watcher:
        w = c.watcher()
        if w is None:
            raise RuntimeError(f"{c.name}: no owner watcher among the supervisor's children")
        procs["watcher"] = [w]
    c0 = {k: cpu_seconds(v, children=(k == "watcher")) for k, v in procs.items()}
    t0 = time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - t0
    return {k: 100.0 * (cpu_seconds(v, children=(k == "watcher")) - c0[k]) / wall for k, v in procs.items()}


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every core; steal counts: not ours to have)."""
    import psutil

    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))


def hog_windows(c: OwnerCluster, client, root: Path, windows: int,
                paused: bool) -> tuple[list[float], list[float], list[float]]:
    """The busy stream on every worker, the hog started, then (``paused``) the owner's flag and the
    workers paused; over ``windows`` windows of HOG_S, the CPU of the hog, of the workers, and of every
    process that is not ours (the machine's busy time less the hog, the cluster's and the bench's)."""
    import psutil

    stream = Stream(client, c.workers).start()
    proc, hog = start_hog(root)
    hogs, workers, others = [], [], []
    try:
        time.sleep(2.0)
        if paused:
            t = time.time()
            c.flag.touch()
            c.event_after("owner-pause", t, 20)
            if not all_paused(c, client, 10):
                print(f"warning: {c.name}: the workers are not paused in Dask's view 10 s after owner-pause; "
                      "measuring anyway", file=sys.stderr)
            time.sleep(1.0)
        print(f"{c.name}: " + "; ".join(sched(q) for q in [*c.worker_procs(), hog]), file=sys.stderr)
        for _ in range(windows):
            wprocs = c.worker_procs()
            ours = [hog, psutil.Process(), *c.supervisor().children(recursive=True), c.supervisor()]
            ours = list({q.pid: q for q in ours}.values())
            c0, w0, o0, b0, t0 = (cpu_seconds([hog]), cpu_seconds(wprocs), cpu_seconds(ours), busy_seconds(),
                                  time.perf_counter())
            time.sleep(HOG_S)
            wall = time.perf_counter() - t0
            hogs.append(100.0 * (cpu_seconds([hog]) - c0) / wall)
            workers.append(100.0 * (cpu_seconds(wprocs) - w0) / wall)
            others.append(max(0.0, 100.0 * ((busy_seconds() - b0) - (cpu_seconds(ours) - o0)) / wall))
    finally:
        stop_hog(proc)
        c.flag.unlink(missing_ok=True)
        stream.stop()
    if stream.error:
        raise RuntimeError(f"{c.name}: the stream failed: {stream.error!r}")
    return hogs, workers, others


def all_paused(c: OwnerCluster, client, timeout: float) -> bool:
    """Every worker paused in Dask's view within ``timeout`` (else False: the pause did not take)."""
    try:
        c.wait("workers paused in Dask", lambda: set(c.statuses(client).values()) == {"paused"}, timeout)
        return True
    except RuntimeError:
        return False


def arrivals(c: OwnerCluster, client, n: int) -> dict[str, list[float]]:
    """``n`` times: the owner arrives at a random phase, the workers pause, the owner leaves, they resume."""
    out: dict[str, list[float]] = {k: [] for k in ("last_start", "owner_active", "owner_pause", "dask_paused",
                                                   "resume_event", "first_start")}
    stream = Stream(client, c.workers).start()
    try:
        c.wait("tasks flowing", lambda: len(stream.start_times()) > 4 * c.workers, 30)
        for i in range(n):
            time.sleep(1.5 + random.random())  # steady again; a random phase against the watcher's second
            flag = time.time()
            c.flag.touch()
            active = c.event_after("owner-active", flag, 20)
            pause = c.event_after("owner-pause", flag, 20)
            paused = time.time() if all_paused(c, client, 10) else None
            time.sleep(1.5)  # a task started just before the pause has finished (and been gathered) by now
            left = time.time()
            c.flag.unlink()
            resume = c.event_after("owner-resume", left, 20)
            c.wait("a task started again", lambda: any(s >= left for s in stream.start_times()), 20)
            starts = stream.start_times()
            got = {"last_start": last_start_after(flag, starts, until=left), "owner_active": since(active, flag),
                   "owner_pause": since(pause, flag), "dask_paused": None if paused is None else round(paused - flag, 3),
                   "resume_event": since(resume, left), "first_start": first_start_after(left, starts)}
            for k, v in got.items():
                out[k].append(v)
            print(f"owner arrival {i + 1}/{n}: " + ", ".join(f"{k} {v}" for k, v in got.items()), file=sys.stderr)
            if stream.error:
                raise RuntimeError(f"{c.name}: the stream failed: {stream.error!r}")
    finally:
        c.flag.unlink(missing_ok=True)
        stream.stop()
    return out


def retire_rounds(c: OwnerCluster, client, rounds: int, spec) -> dict:
    """``rounds`` times the Monte Carlo job with the owner arriving 2 s in and staying until every
    worker retired; the retire and return times, and whether each result equals the serial one."""
    from clusterctl.jobs import montecarlo as mc

    from clusterctl.runtime.probes import http_json

    want = [mc.estimate_pi(int(n), spec.seed, i) for i, n in enumerate(mc.points_schedule(spec))]
    names = c.worker_names()
    dash = c.ledger()["scheduler"].get("http_port")
    url = f"http://127.0.0.1:{dash}/clusterctl/computed.json?prefix=montecarlo-"
    out: dict = {"retired": [], "retired_flag": [], "yield_over": [], "back": [], "identical": [], "recomputed": 0}
    keys = [mc.task_key(spec.seed, i, int(n)) for i, n in enumerate(mc.points_schedule(spec))]
    for i in range(rounds):
        before = http_json(url, timeout=5) or {}
        futures = mc.submit(client, spec)
        time.sleep(2.0)
        flag = time.time()
        c.flag.touch()
        pause = c.event_after("owner-pause", flag, 20)
        c.wait("every worker retired", lambda: last_of_each(c.events(), "yielded", flag, names),
               RETIRE_AFTER + 60)
        retired = last_of_each(c.events(), "yielded", flag, names)
        time.sleep(1.0)
        left = time.time()
        c.flag.unlink()
        over = c.event_after("yield-over", left, RESUME_AFTER + 60)
        c.wait("every worker back", lambda: last_of_each(c.events(), "ready", left, names), RESUME_AFTER + 60)
        back = last_of_each(c.events(), "ready", left, names)
        rows_ = client.gather(futures)
        after = http_json(url, timeout=5) or {}
        stored = {k: (after.get("stored") or {}).get(k, 0) - (before.get("stored") or {}).get(k, 0) for k in keys}
        recomputed = sum(1 for v in stored.values() if v > 1)
        for f in futures:
            f.release()
        same = [list(row) for row in rows_] == [list(row) for row in want]
        out["retired"].append(round(retired - pause["time"], 3))
        out["retired_flag"].append(round(retired - flag, 3))
        out["yield_over"].append(round(over["time"] - left, 3))
        out["back"].append(round(back - left, 3))
        out["identical"].append(same)
        out["recomputed"] += recomputed
        print(f"retire round {i + 1}/{rounds}: retired {out['retired'][-1]:.2f} s after the pause "
              f"({out['retired_flag'][-1]:.2f} after the flag), back {out['back'][-1]:.2f} s after the owner left, "
              f"identical {same}, {recomputed} recomputed", file=sys.stderr)
        c.wait("workers running", lambda: c.head().get("mode") == "run"
               and len([s for s in c.statuses(client).values() if s == "running"]) == c.workers, 60)
    return out


def policy(retire: float, resume: float) -> str:
    """The `owner:` block: the command signal on the cluster's flag file (FLAG: OwnerCluster puts its path).

    >>> print(policy(3600, 0), end="")
    owner:
      active_if: {command: "test -e FLAG", command_timeout: 3}
      when_active: pause
      retire_after: 3600
      resume_after: 0
    """
    return ('owner:\n  active_if: {command: "test -e FLAG", command_timeout: 3}\n  when_active: pause\n'
            f"  retire_after: {retire:g}\n  resume_after: {resume:g}\n")


def measure(root: Path, arrivals_n: int = 12, rounds: int = 3, hog_windows_n: int = 3, quick: bool = False) -> dict:
    """Every figure (see the module's docstring); clusters in subdirectories of ``root``."""
    import distributed
    import psutil

    from clusterctl.jobs import montecarlo as mc

    if arrivals_n < 1 or rounds < 1 or hog_windows_n < 1:
        raise ValueError("the owner bench needs at least 1 arrival, 1 round and 1 hog window")
    cores = psutil.cpu_count(logical=True) or 2
    workers = cores  # as many busy single-thread workers as cores
    idle_s = 10.0 if quick else IDLE_S
    samples: dict[str, list[float]] = {}

    def add(key: str, xs) -> None:
        samples.setdefault(key, []).extend(x for x in xs if x is not None)

    add("hog_alone", [hog_alone(root)])
    c = OwnerCluster(root / "pause", "owner-pause", workers, policy(3600, 0))
    try:
        c.cli("up")
        c.wait("the owner judged idle", lambda: c.head().get("owner") == "idle", 30)
        idle = idle_cpu(c, idle_s, watcher=True)
        add("supervisor_idle_owner", [idle["supervisor"]])
        add("watcher_idle", [idle["watcher"]])
        print(f"idle, owner policy: {idle}", file=sys.stderr)
        with c.client() as client:
            for k, xs in arrivals(c, client, arrivals_n).items():
                add(k, xs)
            hogs, wcpu, others = hog_windows(c, client, c.root, hog_windows_n, paused=True)
            add("hog_paused", hogs)
            add("workers_paused_cpu", wcpu)
            add("others_paused", others)
            print(f"hog, workers paused: {hogs}; workers {wcpu}; others {others}", file=sys.stderr)
    finally:
        c.close()

    for key, name, extra in (("hog_compete", "owner-none", ""), ("hog_nice", "owner-nice", "nice: 10\n")):
        add("hog_alone", [hog_alone(root)])
        c = OwnerCluster(root / name, name, workers, extra)
        try:
            c.cli("up")
            if key == "hog_compete":
                idle = idle_cpu(c, idle_s, watcher=False)
                add("supervisor_idle_plain", [idle["supervisor"]])
                print(f"idle, no owner key: {idle}", file=sys.stderr)
            with c.client() as client:
                hogs, wcpu, others = hog_windows(c, client, c.root, hog_windows_n, paused=False)
                add(key, hogs)
                add(key.replace("hog_", "others_"), others)
                print(f"hog, {name}: {hogs}; workers {wcpu}; others {others}", file=sys.stderr)
        finally:
            c.close()

    add("hog_alone", [hog_alone(root)])
    print(f"hog alone: {samples['hog_alone']}", file=sys.stderr)
    # ~8 s of the cluster's work: tasks of ~0.1 s of this machine's kernel
    ns = mc.kernel_ns_per_point(n=2_000_000, repeat=3)
    points = max(100_000, int(round(TASK_S / (ns * 1e-9), -4)))
    tasks = 40 if quick else int(8 * workers / TASK_S)
    spec = mc.MonteCarloSpec(tasks=tasks, min_points=points, max_points=points, seed=2026)
    c = OwnerCluster(root / "retire", "owner-retire", workers, policy(RETIRE_AFTER, RESUME_AFTER))
    try:
        c.cli("up")
        c.wait("the owner judged idle", lambda: c.head().get("owner") == "idle", 30)
        with c.client() as client:
            got = retire_rounds(c, client, rounds, spec)
        for k in ("retired", "retired_flag", "yield_over", "back"):
            add(k, got[k])
    finally:
        c.close()
    return {"workers": workers, "cores": cores, "arrivals": arrivals_n, "rounds": rounds, "job_tasks": tasks, "idle_s": idle_s,
            "retire_after": RETIRE_AFTER, "resume_after": RESUME_AFTER, "distributed": distributed.__version__,
            "identical": got["identical"], "recomputed": got["recomputed"],
            "figures": {k: summary(v) for k, v in samples.items()}}


def main() -> None:
    import argparse
    import os
    import shutil
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrivals", type=int, default=12, help="owner arrivals timed for the pause (at least 10)")
    ap.add_argument("--rounds", type=int, default=3, help="retire/return rounds with a job")
    ap.add_argument("--quick", action="store_true", help="shorter idle windows and job, for a fast look")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="clusterctl-bench-owner-"))
    os.environ["XDG_STATE_HOME"] = str(root / "xdg-state")  # not the user's `clusterctl list`
    try:
        r = measure(root, args.arrivals, args.rounds, quick=args.quick)
        print("\n".join(markdown(r)))
    finally:
        sweep(root)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
