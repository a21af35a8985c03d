"""Chaos run: Monte Carlo jobs back to back on a real cluster while faults are injected.

    scripts/chaos [--minutes 1] [--seed 1] [--faults default|all|kill,scale,...] [--json artifacts/chaos.json]
    scripts/chaos --fleet HOSTSxWORKERS [--minutes 1] [--seed 1] ...   # root: namespace hosts (scripts/fleetchaos.py)

It makes its own temp dir and topology (127.0.0.1, free ports below 32000, 3
workers of one thread, unhealthy_grace 3 s), starts it with `clusterctl up`
through the real CLI, and runs jobs through a distributed.Client while
clusterctl.client.chaos.Injector faults the cluster, one fault at a time (SIGKILL
and SIGSTOP of workers and of the scheduler, `scale`, `worker remove --kill`,
hostile control requests, bursts of idle connections), timing each until the
cluster is healthy again. Every completed job's table is compared exactly with
the seed's undisturbed run (computed serially); a job the faults broke (the
scheduler killed under it) is retried and counted as retried, never as a
mismatch. Then `clusterctl down`, and anything of the run still alive is killed
by pid and reported. Ctrl-C still runs `down`.

Exit 0 only with no mismatch, no unrecovered fault, no wrong answer to a hostile
or scaling request, no abandoned job and nothing left behind; 1 otherwise; 2 for
bad arguments. The summary goes to stdout and to --json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import psutil

from clusterctl.client.chaos import FAULTS, Injector, Settings, parse_faults, rows_of
from clusterctl.client.chaosjobs import JobLoop
from clusterctl.errors import ClusterError
from clusterctl.jobs import montecarlo as mc
from clusterctl.runtime.ledger import atomic_write
from clusterctl.topology import ClusterConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "clusterctl"]
if str(ROOT / "scripts") not in sys.path:  # loaded by its path (the tests): _ports lives beside it
    sys.path.insert(0, str(ROOT / "scripts"))

from _ports import free_port  # noqa: E402 - found through the lines above


# -- the jobs -------------------------------------------------------------------------------------

class Chaos:
    """Jobs back to back on this thread while an Injector faults the cluster on its own."""

    def __init__(self, cfg: ClusterConfig, settings: Settings, echo: Callable[[str], None]):
        self.cfg, self.s, self.echo = cfg, settings, echo
        self.injector: Injector | None = None
        self.seconds = 0.0
        self.t0 = time.monotonic()
        # a failed attempt is retried once the cluster is healthy again
        self.loop = JobLoop(cfg, settings.job, key="chaos", attempts=settings.attempts, timeout=settings.job_timeout,
                            echo=echo, now=self.now, settle=self.settle)
        self.jobs = self.loop.jobs

    def now(self) -> float:
        return time.monotonic() - self.t0

    def run(self) -> None:
        self.t0 = time.monotonic()
        reference = rows_of(mc.run_serial(self.s.job))
        self.echo(f"{self.now():7.1f}s  reference: {len(reference)} rows for seed {self.s.seed}, computed serially "
                  f"in {self.now():.1f} s")
        self.injector = inj = Injector(self.cfg, self.s, self.echo, self.t0).start()
        try:
            self.loop.run(reference, more=lambda: self.now() < self.s.seconds and not inj.broken)
            self.echo(f"{self.now():7.1f}s  time is up: no new faults; waiting for the last one's recovery")
            inj.stop(wait=self.s.recovery_deadline * 2 + 30)
        finally:
            inj.abort.set()
            inj.finish.set()
            self.seconds = self.now()

    def settle(self) -> None:
        assert self.injector is not None
        self.injector.wait_healthy(time.monotonic() + self.s.recovery_deadline, None)

    def report(self) -> dict[str, Any]:
        inj = self.injector
        faults = inj.faults if inj else []
        jobs = self.jobs
        kinds = [k for k in FAULTS if any(f.kind == k for f in faults)]
        by_kind = {k: {"injected": sum(f.kind == k for f in faults),
                       **stats([f.mttr for f in faults if f.kind == k and f.mttr is not None])} for k in kinds}
        return {
            "seed": self.s.seed, "seconds": round(self.seconds, 1), "faults_enabled": list(self.s.faults),
            "job_spec": asdict(self.s.job),
            "faults": {"injected": len(faults), "by_kind": {k: v["injected"] for k, v in by_kind.items()},
                       "unrecovered": sum(f.unrecovered is not None for f in faults),
                       "harness_kills": inj.harness_kills if inj else [], "list": [asdict(f) for f in faults]},
            "mttr": {**stats([f.mttr for f in faults if f.mttr is not None]), "by_kind": by_kind,
                     "disruptive": {"injected": sum(f.disrupted for f in faults),
                                    **stats([f.mttr for f in faults if f.disrupted and f.mttr is not None])}},
            "jobs": {"run": len(jobs), "completed": sum(j.outcome in ("match", "mismatch") for j in jobs),
                     "retried": sum(len(j.errors) for j in jobs),
                     "mismatches": sum(j.outcome == "mismatch" for j in jobs),
                     "abandoned": sum(j.outcome == "abandoned" for j in jobs),
                     "list": [{"n": j.n, "outcome": j.outcome, "seconds": j.seconds, "errors": j.errors,
                               "mismatched": j.mismatched} for j in jobs]},
            "anomalies": [f"fault #{f.n} {f.kind}: {a}" for f in faults for a in f.anomalies],
            "broken": inj.broken if inj else None,
        }


def stats(xs: list[float]) -> dict[str, Any]:
    return {"n": len(xs), "median": round(statistics.median(xs), 3) if xs else None,
            "max": round(max(xs), 3) if xs else None}


def failures(report: dict[str, Any]) -> list[str]:
    """Why a chaos run failed; [] when it passed."""
    out = []
    j, f = report["jobs"], report["faults"]
    if j["mismatches"]:
        out.append(f"{j['mismatches']} job(s) completed with a table different from the undisturbed run")
    if j["abandoned"]:
        out.append(f"{j['abandoned']} job(s) abandoned after {report['settings']['attempts']} failed attempts")
    if f["unrecovered"]:
        out.append(f"{f['unrecovered']} fault(s) not recovered within {report['settings']['recovery_deadline']:g} s")
    if report["anomalies"]:
        out.append(f"{len(report['anomalies'])} wrong answer(s) to hostile or scaling requests")
    if report["broken"]:
        out.append(report["broken"])
    if report.get("up_failed"):
        out.append(f"`clusterctl up` failed: {report['up_failed']}")
    if report.get("down_failed"):
        out.append(f"`clusterctl down` failed: {report['down_failed']}")
    if report["leftovers"]:
        out.append(f"{len(report['leftovers'])} process(es) of the run left after `down` (killed)")
    if report.get("interrupted"):
        out.append("interrupted")
    elif not report.get("up_failed"):
        if not f["injected"]:
            out.append("no fault was injected")
        if not j["completed"]:
            out.append("no job completed")
    return out


# -- the cluster ------------------------------------------------------------------------------------

def write_topology(root: Path, workers: int, grace: float) -> Path:
    port = free_port()
    dash = free_port(taken={port})
    # Faults come every few seconds, far more often than in real life: restarts are allowed
    # without limit (max_retries is the most the topology accepts) and back off briefly.
    restart = (f"{{policy: always, backoff_initial: 0.2, backoff_max: 2, min_uptime: 2, "
               f"max_retries: 1000, window: 60, unhealthy_grace: {grace:g}}}")
    path = root / "cluster.yaml"
    path.write_text(
        "name: chaos\nstate_dir: state\n"
        f"scheduler:\n  host: 127.0.0.1\n  port: {port}\n  dashboard_port: {dash}\n  restart: {restart}\n"
        f"workers:\n  - name: default\n    count: {workers}\n    nthreads: 1\n    restart: {restart}\n"
        "timeouts: {startup: 120, shutdown: 5}\n"
    )
    return path


def cli(config: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """The real CLI, in its own session: a Ctrl-C meant for the chaos run does not cut it short."""
    env = {k: v for k, v in os.environ.items() if k != "CLUSTERCTL_CONFIG"}
    env.update(NO_COLOR="1", COLUMNS="200")
    return subprocess.run([*CLI, *args, "--file", str(config)], cwd=config.parent, env=env, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True)


def processes_under(root: Path) -> list[psutil.Process]:
    """Live processes whose cwd or argv lies under ``root``: everything the run started."""
    root_s, me, found = str(root), os.getpid(), []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        if p.pid == me or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cwd, cmd = p.info["cwd"] or "", " ".join(p.info["cmdline"] or [])
        if cwd == root_s or cwd.startswith(root_s + os.sep) or root_s in cmd:
            found.append(p)
    return found


def kill_left(procs: list[psutil.Process], why: dict[int, str] | None = None, width: int = 160) -> list[str]:
    """What of ``procs`` (asked to stop already) is alive 3 s later is SIGKILLed by pid (psutil checks
    the create time: a reused pid is never hit); one line each for the report: pid, status,
    ``why[pid]`` if given, argv cut to ``width``. Also scripts/fleetchaos.py's."""
    if not procs:
        return []
    _, alive = psutil.wait_procs(procs, timeout=3)
    killed = []
    for p in alive:
        try:
            reason = f" ({why[p.pid]})" if why and p.pid in why else ""
            killed.append(f"{p.pid} [{p.status()}]{reason} {' '.join(p.cmdline())[:width]}")
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return killed


def sweep(root: Path) -> list[str]:
    """Anything of the run still alive gets 3 s, then is SIGKILLed by pid; returns what was killed."""
    return kill_left(processes_under(root))


def findings(state: Path) -> dict[str, Any]:
    """What the supervisor itself said: events by kind, its `error` events, tracebacks in its log."""
    events: list[dict] = []
    try:
        events = [json.loads(line) for line in (state / "events.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        pass
    counts: dict[str, int] = {}
    for e in events:
        counts[e.get("event", "?")] = counts.get(e.get("event", "?"), 0) + 1
    errors = [f"{e.get('process')}: {e.get('detail')}" for e in events if e.get("event") in ("error", "fatal")]
    try:
        log = (state / "logs" / "supervisor.log").read_text(errors="replace").splitlines()
    except OSError:
        log = []
    tracebacks = []
    for i, line in enumerate(log):
        if line.startswith("Traceback"):
            j = i + 1
            while j < len(log) and (log[j][:1].isspace() or not log[j]):
                j += 1
            where = log[j - 2].strip() if j - 2 > i else ""
            tracebacks.append(f"{log[j] if j < len(log) else '?'} (at {where})")
    return {"events": counts, "supervisor_errors": errors[:50], "supervisor_tracebacks": tracebacks[:20]}


def quiet_dask(path: Path) -> None:
    """The client's reconnect chatter goes to a file: each job's failures are reported by the run."""
    import distributed  # noqa: F401 - sets up its loggers, which we then take over

    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    # distributed gives each logger of its config a handler of its own and no propagation
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in ("distributed", "tornado", "bokeh")]
    for name in {"distributed", "tornado", "asyncio", *names}:
        log = logging.getLogger(name)
        for h in list(log.handlers):
            log.removeHandler(h)
        log.addHandler(handler)
        log.propagate = False


# -- printing ---------------------------------------------------------------------------------------

def secs(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s"


def summary(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [f"chaos: seed {r['seed']}, {r['seconds']:.0f} s, {s['workers']} workers ({s['min_workers']}..{s['max_workers']}), "
             f"unhealthy_grace {s['grace']:g} s; faults: {', '.join(r['faults_enabled'])}", "",
             "| fault | injected | recovered | MTTR median | MTTR max |", "|---|---|---|---|---|"]
    m = r["mttr"]
    for kind, k in m["by_kind"].items():
        lines.append(f"| {kind} | {k['injected']} | {k['n']} | {secs(k['median'])} | {secs(k['max'])} |")
    lines.append(f"| **all** | {r['faults']['injected']} | {m['n']} | {secs(m['median'])} | {secs(m['max'])} |")
    d = m["disruptive"]
    lines.append(f"| **those that disrupted the cluster** | {d.get('injected', 0)} | {d['n']} | {secs(d['median'])} | {secs(d['max'])} |")
    j = r["jobs"]
    lines += ["", "| jobs run | completed | retried (failed attempts) | mismatches | abandoned |", "|---|---|---|---|---|",
              f"| {j['run']} | {j['completed']} | {j['retried']} | {j['mismatches']} | {j['abandoned']} |", "",
              f"unrecovered faults: {r['faults']['unrecovered']}; wrong answers to requests: {len(r['anomalies'])}; "
              f"processes left after down: {len(r['leftovers'])}"]
    lines += [f"  ! {a}" for a in r["anomalies"]]
    lines += [f"  ! left: {p}" for p in r["leftovers"]]
    for f in r["faults"]["list"]:
        if f["unrecovered"]:
            lines.append(f"  ! fault #{f['n']} {f['kind']} ({f['detail']}) not recovered: {f['unrecovered']}")
    tb = r.get("findings", {}).get("supervisor_tracebacks") or []
    if tb:
        lines.append(f"supervisor.log has {len(tb)} traceback(s); last lines of the first: {tb[0]}")
    fails = r["failures"]
    lines.append("PASS" if not fails else "FAIL: " + "; ".join(fails))
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------

def pair(text: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH seconds, e.g. 1,4") from None
    if not 0 <= a <= b:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= LOW <= HIGH")
    return a, b


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.0, help="jobs start until then (default 1)")
    ap.add_argument("--seed", type=int, default=1, help="seeds the faults and the jobs (default 1)")
    ap.add_argument("--faults", default="default",
                    help="comma-separated, or 'all' (the default); kinds: "
                    + "; ".join(f"{k}: {v}" for k, v in FAULTS.items()))
    ap.add_argument("--workers", type=int, default=3, help="workers at the start (default 3)")
    ap.add_argument("--min-workers", type=int, default=2)
    ap.add_argument("--max-workers", type=int, default=5)
    ap.add_argument("--grace", type=float, default=3.0, help="unhealthy_grace of every process, seconds (default 3)")
    ap.add_argument("--pause", type=pair, default=(1.0, 4.0), help="seconds between a recovery and the next fault (1,4)")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds a fault has to heal (default 60)")
    ap.add_argument("--tasks", type=int, default=200, help="Monte Carlo tasks per job (default 200)")
    ap.add_argument("--min-points", type=int, default=100_000)
    ap.add_argument("--max-points", type=int, default=5_000_000)
    ap.add_argument("--idle-connections", type=int, default=100, help="per port, in an `idle` fault (default 100)")
    ap.add_argument("--json", type=Path, default=ROOT / "artifacts" / "chaos.json")
    ap.add_argument("--fleet", metavar="HOSTSxWORKERS",
                    help="instead: workers on network-namespace hosts with host faults mixed in (root only; "
                         "scripts/fleetchaos.py; `scripts/chaos --fleet 3x2 --help` lists its options)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (kept anyway when the run fails)")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.deadline <= 0 or args.grace <= 0:
        ap.error("--minutes, --deadline and --grace must be > 0")
    if not 0 <= args.idle_connections <= 2000:
        ap.error("--idle-connections must be 0..2000")
    if not 1 <= args.min_workers <= args.workers <= args.max_workers:
        ap.error("need 1 <= --min-workers <= --workers <= --max-workers")
    try:
        args.fault_kinds = parse_faults(args.faults)
        args.spec = mc.MonteCarloSpec(tasks=args.tasks, min_points=args.min_points, max_points=args.max_points,
                                      seed=args.seed)
    except ClusterError as e:
        ap.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--fleet" or a.startswith("--fleet=") for a in argv):
        import fleetchaos  # scripts/ is on sys.path: this file's directory

        return fleetchaos.main(argv)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below runs `down`
    settings = Settings(seconds=args.minutes * 60, seed=args.seed, faults=args.fault_kinds, job=args.spec,
                        min_workers=args.min_workers, max_workers=args.max_workers, pause=args.pause,
                        recovery_deadline=args.deadline, idle_connections=args.idle_connections)
    root = Path(tempfile.mkdtemp(prefix="clusterctl-chaos-"))
    config = write_topology(root, args.workers, args.grace)
    quiet_dask(root / "client.log")
    echo = lambda line: print(line, flush=True)  # noqa: E731
    report: dict[str, Any] = {}
    chaos: Chaos | None = None
    interrupted = False
    load, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        echo(f"chaos: {root}; `clusterctl up` of {args.workers} workers")
        t = time.monotonic()
        up = cli(config, "up", timeout=180)
        if up.returncode != 0:
            report["up_failed"] = ((up.stderr or up.stdout).strip().splitlines() or [f"exit {up.returncode}"])[-1]
        else:
            echo(f"up in {time.monotonic() - t:.1f} s; jobs of {args.tasks} tasks, {args.min_points:g}..{args.max_points:g} "
                 f"points, for {args.minutes:g} min")
            chaos = Chaos(load_config(config), settings, echo)
            chaos.run()
    except (KeyboardInterrupt, SystemExit):
        interrupted = True
        echo("interrupted: stopping the cluster")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # nothing cuts the clean-up short
        if chaos is not None and chaos.injector is not None:
            chaos.injector.abort.set()
            chaos.injector.finish.set()
        try:
            down = cli(config, "down", timeout=120)
            if down.returncode != 0:
                report["down_failed"] = (down.stderr or down.stdout).strip()[-300:]
        except subprocess.TimeoutExpired:
            report["down_failed"] = "no answer within 120 s"
        leftovers = sweep(root)
    report = {**(chaos.report() if chaos else {"seed": args.seed, "seconds": 0.0, "faults_enabled": list(args.fault_kinds),
                                                "faults": {"injected": 0, "by_kind": {}, "unrecovered": 0, "list": []},
                                                "mttr": {**stats([]), "by_kind": {}, "disruptive": stats([])}, "anomalies": [], "broken": None,
                                                "jobs": {"run": 0, "completed": 0, "retried": 0, "mismatches": 0,
                                                         "abandoned": 0, "list": []}}), **report}
    report.update(
        leftovers=leftovers, interrupted=interrupted, temp_dir=str(root), topology=config.read_text(),
        settings={"workers": args.workers, "min_workers": args.min_workers, "max_workers": args.max_workers,
                  "grace": args.grace, "pause": list(args.pause), "recovery_deadline": args.deadline,
                  "attempts": settings.attempts, "job_timeout": settings.job_timeout},
        machine={"cores": psutil.cpu_count(), "load_before": [round(x, 1) for x in load],
                 "load_after": [round(x, 1) for x in os.getloadavg()]},
        findings=findings(root / "state" / "chaos"), started=started,
    )
    report["failures"] = failures(report)
    report["ok"] = not report["failures"]
    print(summary(report), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.json, json.dumps(report, indent=2))
    if report["ok"] and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
        print(f"wrote {args.json}", file=sys.stderr)
    else:
        print(f"wrote {args.json}; logs and events kept in {root}", file=sys.stderr)
    return 130 if interrupted else (0 if report["ok"] else 1)


if __name__ == "__main__":
    sys.exit(main())
