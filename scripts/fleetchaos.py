"""Fleet chaos: Monte Carlo jobs on network-namespace hosts while host and process faults mix.

    scripts/chaos --fleet HOSTSxWORKERS [--minutes 1] [--seed 1] [--faults all|cut,reboot,...]
                  [--json artifacts/chaos-fleet.json]

Root only (tests/netns.py): HOSTS network namespaces on one bridge, each with its own sshd; the
scheduler runs on the head (the bridge's address, TLS on) and WORKERS workers of one thread on each
host, started with `clusterctl up` through the real CLI. Jobs run back to back through a
distributed.Client while faults come from a plan drawn from the seed (`plan_faults`: at least
--gap seconds apart, kinds drawn from a shuffled bag so every kind comes within each round, and
overlapping freely):

    cut             a host's link cut (silent: no FIN, no RST) for --cut seconds, then restored
    forkserver      SIGKILL of a host's fork server (clusterctl.remote.forkserver, cwd its workdir)
    kill, stop      SIGKILL / SIGSTOP of a remote worker (left stopped: the supervisor must replace it)
    sshd            SIGKILL of a host's sshd, started again --sshd-down seconds later
    kill-scheduler  SIGKILL of the scheduler
    reboot          every process in a host's namespace killed, its sshd started --reboot-down s later

A monitor polls the cluster's status (what `clusterctl status --json` reports) twice a second. Full
strength: the supervisor and scheduler up, every desired worker `running` and registered with the
scheduler, no host unreachable. A fault's workers are back when each is running and registered,
as a new incarnation if its process died, its SIGSTOPped process gone, and the link or sshd
restored. Each fault has 60 s (a cut: its length + 30 s), extended by later and earlier faults that
touch the same workers. Every completed job's table must equal the seed's serial run; a failed
attempt is retried and counted as retried. At the end: the hosts are healed, full strength must
come within the last fault's allowance, then `clusterctl down`, and anything left (processes
carrying the cluster's tag, with a cwd in the run's directory or a host's workdir, in a namespace;
namespaces) is reported and killed by pid.

Exit 0 when every aim is met: 0 mismatched jobs, 0 workers ever `fatal`, every fault's workers
back within its allowance, full strength within the last fault's allowance, nothing left after
`down`; 1 otherwise; 2 for bad arguments or a machine without root, ip or sshd (one line).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "scripts", ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

KINDS = {
    "cut": "cut a host's link (silent), restore it after --cut seconds",
    "forkserver": "SIGKILL a host's fork server",
    "kill": "SIGKILL a remote worker",
    "stop": "SIGSTOP a remote worker and leave it stopped",
    "sshd": "SIGKILL a host's sshd, start it again after --sshd-down seconds",
    "kill-scheduler": "SIGKILL the scheduler",
    "reboot": "kill every process in a host's namespace, start its sshd after --reboot-down seconds",
}
ALLOWANCE = 60.0  # seconds a fault's workers have to be back (issue 20's aim)
CUT_EXTRA = 30.0  # a cut: its length plus this
POLL = 0.5
PREFIX = "scripts/chaos --fleet"


# -- arguments --------------------------------------------------------------------------------------

def parse_fleet(text: str) -> tuple[int, int]:
    """'3x2' -> (3, 2): HOSTS namespace hosts, WORKERS workers on each."""
    try:
        hosts, per = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOSTSxWORKERS (e.g. 3x2)") from None
    if not (1 <= hosts <= 16 and 1 <= per <= 16):
        raise argparse.ArgumentTypeError(f"{text!r}: hosts and workers per host must each be 1-16")
    return hosts, per


def pair(text: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH seconds, e.g. 5,8") from None
    if not 0 <= a <= b or b > 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= LOW <= HIGH <= 3600")
    return a, b


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if kinds in (["all"], ["default"]):
        return tuple(KINDS)
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise argparse.ArgumentTypeError(f"unknown fault {(bad or [''])[0]!r}; known: {', '.join(KINDS)} (or 'all')")
    return tuple(dict.fromkeys(kinds))


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print its usage too)
        print(f"{PREFIX}: {message}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = OneLineParser(prog="scripts/chaos", description=__doc__.splitlines()[0])
    ap.add_argument("--fleet", type=parse_fleet, required=True, metavar="HOSTSxWORKERS")
    ap.add_argument("--minutes", type=float, default=1.0, help="faults and new jobs until then (default 1)")
    ap.add_argument("--seed", type=int, default=1, help="seeds the fault plan, the victims and the jobs")
    ap.add_argument("--faults", type=parse_kinds, default=tuple(KINDS),
                    help="comma-separated, or 'all' (the default): " + "; ".join(f"{k}: {v}" for k, v in KINDS.items()))
    ap.add_argument("--gap", type=pair, default=(5.0, 8.0), help="seconds between injections (default 5,8)")
    ap.add_argument("--cut", type=pair, default=(5.0, 40.0), help="seconds a cut lasts (default 5,40)")
    ap.add_argument("--sshd-down", type=pair, default=(2.0, 6.0), help="seconds an sshd stays killed (2,6)")
    ap.add_argument("--reboot-down", type=pair, default=(3.0, 8.0), help="seconds a rebooted host has no sshd (3,8)")
    ap.add_argument("--grace", type=float, default=None,
                    help="unhealthy_grace of the workers, seconds (default: the topology's default)")
    ap.add_argument("--tasks", type=int, default=200, help="Monte Carlo tasks per job (default 200)")
    ap.add_argument("--min-points", type=int, default=100_000)
    ap.add_argument("--max-points", type=int, default=5_000_000)
    ap.add_argument("--job-timeout", type=float, default=120.0, help="one attempt, seconds (default 120)")
    ap.add_argument("--attempts", type=int, default=10, help="per job before it is abandoned (default 10)")
    ap.add_argument("--route", choices=("direct", "agent"), default="direct",
                    help="how remote workers start: a channel to the host's fork server (clusterctl's default), "
                         "or its agent (CLUSTERCTL_DIRECT=0)")
    ap.add_argument("--python", default=sys.executable,
                    help="the hosts' interpreter, with distributed and clusterctl (default: this one)")
    ap.add_argument("--json", type=Path, default=ROOT / "artifacts" / "chaos-fleet.json")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the run's temp dir goes (default: the system's; TMPDIR must stay short: ssh's "
                         "ControlPath lives there)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (kept anyway when the run fails)")
    if any(a in ("-h", "--help") for a in (sys.argv[1:] if argv is None else argv)):
        ap.print_help()  # also after a bare --fleet, which argparse would refuse first for want of its value
        sys.exit(0)
    args = ap.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60:
        ap.error("--minutes must be > 0 (and at most a day)")
    if args.gap[0] < 0.5:
        ap.error("--gap: at least 0.5 s between injections")
    if args.grace is not None and not 0 < args.grace <= 3600:
        ap.error("--grace must be > 0")
    if not (1 <= args.tasks <= 100_000 and 1 <= args.min_points <= args.max_points <= 10**9):
        ap.error("need 1 <= --tasks and 1 <= --min-points <= --max-points")
    if args.job_timeout <= 0 or args.attempts < 1:
        ap.error("--job-timeout must be > 0 and --attempts >= 1")
    args.hosts, args.per = args.fleet
    return args


# -- the plan (pure) ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Planned:
    at: float  # seconds after the jobs began
    kind: str
    host: int  # the host's index; -1 for kill-scheduler
    length: float = 0.0  # a cut's length, or how long the sshd stays down (sshd, reboot)
    pick: float = 0.0  # which of the host's workers (kill, stop), in [0, 1)


def plan_faults(seed: int, seconds: float, kinds: tuple[str, ...], hosts: int, gap: tuple[float, float] = (5.0, 8.0),
                cut: tuple[float, float] = (5.0, 40.0), sshd_down: tuple[float, float] = (2.0, 6.0),
                reboot_down: tuple[float, float] = (3.0, 8.0)) -> list[Planned]:
    """Every fault of the run, drawn from the seed alone: one every ``gap`` seconds; kinds from a
    shuffled bag (each kind once per round, in a random order); a host is never cut while it is cut,
    nor its sshd killed while it is down (a reboot may hit any host, cut or not)."""
    rng = random.Random(seed)
    cut_until = [0.0] * hosts
    sshd_until = [0.0] * hosts
    out: list[Planned] = []
    bag: list[str] = []
    t = rng.uniform(*gap)
    while t < seconds:
        if not bag:
            bag = list(kinds)
            rng.shuffle(bag)
        chosen = None
        for i, kind in enumerate(bag):
            if kind == "kill-scheduler":
                chosen = (i, kind, [-1])
            else:
                able = [h for h in range(hosts)
                        if not (kind == "cut" and cut_until[h] > t) and not (kind == "sshd" and sshd_until[h] > t)]
                chosen = (i, kind, able) if able else None
            if chosen:
                break
        if chosen:
            i, kind, able = chosen
            bag.pop(i)
            host = rng.choice(able)
            length = {"cut": cut, "sshd": sshd_down, "reboot": reboot_down}.get(kind)
            p = Planned(round(t, 3), kind, host, round(rng.uniform(*length), 3) if length else 0.0,
                        rng.random() if kind in ("kill", "stop") else 0.0)
            if kind == "cut":
                cut_until[host] = t + p.length
            elif kind in ("sshd", "reboot"):
                sshd_until[host] = max(sshd_until[host], t + p.length)
            out.append(p)
        t += rng.uniform(*gap)
    return out


def allowance(kind: str, length: float) -> float:
    """Seconds from the injection within which its workers must be back."""
    return length + CUT_EXTRA if kind == "cut" else ALLOWANCE


# -- what a moment looks like (pure) ------------------------------------------------------------------

@dataclass
class View:
    state: str
    alive: bool
    registered: bool
    address: str | None
    pid: int | None
    at: str | None
    reason: str = ""


@dataclass
class Sample:
    t: float
    state: str  # the cluster's
    supervisor: bool
    answering: bool
    scheduler: View | None
    workers: dict[str, View]
    registered: int
    expected: int
    hosts: dict[str, str]  # name -> reachable | unreachable | back
    live: frozenset[int] = frozenset()  # of the remote pids the open faults watch, those alive
    serving: frozenset[str] = frozenset()  # addresses in the titles of live, running `dask worker` processes


def sample_of(st: dict[str, Any], t: float, expected: int, live: frozenset[int] = frozenset(),
              serving: frozenset[str] = frozenset()) -> Sample:
    """A status() / `clusterctl status --json` answer as a Sample."""
    workers, sched = {}, None
    for p in st.get("processes", []):
        v = View(str(p.get("state")), bool(p.get("alive")), bool(p.get("registered")), p.get("address"), p.get("pid"),
                 p.get("at"), str(p.get("reason") or ""))
        if p.get("role") == "scheduler":
            sched = v
        elif p.get("role") == "worker":
            workers[p["name"]] = v
    return Sample(t, str(st.get("state")), bool(st.get("supervisor", {}).get("alive")),
                  bool(st.get("scheduler", {}).get("answering")), sched, workers, int(st.get("workers_registered") or 0),
                  expected, {h["name"]: h.get("state", "?") for h in st.get("hosts") or []}, live, serving)


def full_strength(s: Sample) -> list[str]:
    """What keeps the cluster from full strength; [] at full strength."""
    out = []
    if not s.supervisor:
        out.append("supervisor gone")
    if s.state != "running":
        out.append(f"cluster {s.state}")
    if not s.answering:
        out.append("scheduler not answering")
    if s.scheduler is None or s.scheduler.state != "running" or not s.scheduler.alive:
        out.append(f"scheduler {s.scheduler.state if s.scheduler else 'missing'}")
    if len(s.workers) != s.expected:
        out.append(f"{len(s.workers)} workers, want {s.expected}")
    for name, w in sorted(s.workers.items()):
        if w.state != "running" or not w.alive:
            out.append(f"{name} {w.state}" + (f" ({w.reason[:100]})" if w.reason and w.state != "running" else ""))
        elif not w.registered:
            out.append(f"{name} not registered")
    if s.registered != s.expected:
        out.append(f"{s.registered} registered, want {s.expected}")
    out += [f"host {h} unreachable" for h, state in sorted(s.hosts.items()) if state == "unreachable"]
    return out


@dataclass
class Fault:
    n: int
    kind: str
    at: float  # seconds since the jobs began: the injection's start
    host: str | None = None  # ns<i>
    length: float = 0.0
    detail: str = ""
    done: float = 0.0  # the injection took effect by then; only later samples judge it
    targets: list[str] = field(default_factory=list)  # the workers it hits (all of them for kill-scheduler)
    remote: dict[str, int] = field(default_factory=dict)  # target -> its process there when injected
    old_address: dict[str, str] = field(default_factory=dict)  # target -> its registered address then
    must_die: list[int] = field(default_factory=list)  # SIGSTOPped pids: gone before it counts as healed
    old_scheduler: int | None = None  # the SIGKILLed scheduler's pid
    not_before: float = 0.0  # the link restored, the sshd back (inf until then)
    deadline: float = 0.0  # at + allowance
    chained: float | None = None  # the deadline extended by faults touching the same workers
    back_at: float | None = None  # its workers back (and its own conditions met)
    full_at: float | None = None  # the whole cluster at full strength, its own conditions met
    waiting: list[str] = field(default_factory=list)  # what it waited on at the last sample before it healed

    @property
    def back(self) -> float | None:
        return None if self.back_at is None else round(self.back_at - self.at, 2)

    @property
    def to_full(self) -> float | None:
        return None if self.full_at is None else round(self.full_at - self.at, 2)


def pending(f: Fault, s: Sample) -> list[str]:
    """What the fault's own workers still lack at this sample; [] when they are back."""
    out = []
    if s.t < f.not_before:
        out.append("link not restored yet" if f.kind == "cut" else "sshd not back yet")
    if not s.supervisor:
        out.append("supervisor gone")
    if not s.answering:
        out.append("scheduler not answering")
    if f.old_scheduler is not None and (s.scheduler is None or s.scheduler.pid == f.old_scheduler
                                        or s.scheduler.state != "running" or not s.scheduler.alive):
        out.append("scheduler not replaced yet")
    for name in f.targets:
        w = s.workers.get(name)
        if w is None:
            out.append(f"{name} missing")
        elif w.state != "running" or not w.alive:
            out.append(f"{name} {w.state}" + (f" ({w.reason[:100]})" if w.reason and w.state != "running" else ""))
        elif not w.registered:
            out.append(f"{name} not registered")
        elif (name in f.remote and f.remote[name] not in s.live and w.address == f.old_address.get(name)
              and w.address not in s.serving):  # (a new incarnation may get the old port again, rarely)
            out.append(f"{name} still registered at its old address")
    out += [f"SIGSTOPped pid {pid} still there" for pid in f.must_die if pid in s.live]
    return out


def touches(f: Fault, g: Fault) -> bool:
    return bool(set(f.targets) & set(g.targets)) or "kill-scheduler" in (f.kind, g.kind)


def chain(faults: list[Fault]) -> None:
    """Each fault's deadline, extended by every fault touching the same workers injected before it
    expired (earlier ones too: a worker hit during a long cut of its host has that cut's allowance)."""
    for f in faults:
        d = f.deadline
        grew = True
        while grew:
            grew = False
            for g in faults:
                if g.at <= d and g.deadline > d and touches(f, g):
                    d, grew = g.deadline, True
        f.chained = round(d, 2)


def late(f: Fault) -> bool:
    return f.back_at is None or f.chained is None or f.back_at > f.chained


# -- judgement (pure) ---------------------------------------------------------------------------------

def stats(xs: list[float]) -> dict[str, Any]:
    return {"n": len(xs), "median": round(statistics.median(xs), 2) if xs else None,
            "max": round(max(xs), 2) if xs else None}


def attribute(jobs: list[dict], faults: list[dict]) -> dict[str, dict[str, int]]:
    """Per fault kind: jobs whose completing attempt saw such a fault (identical / mismatched) and
    failed attempts during which one was injected (retried)."""
    out: dict[str, dict[str, int]] = {}
    for j in jobs:
        for a in j["attempts"]:
            if a.get("end") is None:
                continue
            kinds = {f["kind"] for f in faults if a["start"] <= f["at"] <= a["end"]}
            for k in kinds:
                row = out.setdefault(k, {"identical": 0, "mismatched": 0, "retried": 0})
                if a.get("error"):
                    row["retried"] += 1
                elif j["outcome"] == "match":
                    row["identical"] += 1
                elif j["outcome"] == "mismatch":
                    row["mismatched"] += 1
    return out


def by_kind(faults: list[dict], skipped: list[dict], jobs: list[dict], fatal: dict[str, dict],
            kinds: tuple[str, ...]) -> dict[str, dict]:
    """The report's table: per fault kind, injected, recovered, times, jobs, workers fatal after it."""
    seen = attribute(jobs, faults)
    out = {}
    for k in kinds:
        real = [f for f in faults if f["kind"] == k]
        out[k] = {"injected": len(real), "skipped": sum(x["kind"] == k for x in skipped),
                  "recovered": sum(not f["late"] for f in real),
                  "to_full_strength": stats([f["to_full"] for f in real if f["to_full"] is not None]),
                  "workers_back": stats([f["back"] for f in real if f["back"] is not None]),
                  "jobs": seen.get(k, {"identical": 0, "mismatched": 0, "retried": 0}),
                  "fatal_after": sum(v.get("after_kind") == k for v in fatal.values())}
    return out


def failures(r: dict[str, Any]) -> list[str]:
    """Why a fleet chaos run missed its aims; [] when it met them."""
    out = []
    j, f = r["jobs"], r["faults"]
    if j["mismatches"]:
        out.append(f"{j['mismatches']} job(s) completed with a table different from the serial run")
    if j["abandoned"]:
        out.append(f"{j['abandoned']} job(s) abandoned after {r['settings']['attempts']} failed attempts")
    if r["fatal"]:
        out.append(f"{len(r['fatal'])} worker(s) went fatal: {', '.join(sorted(r['fatal']))}")
    if f["late"]:
        out.append(f"{f['late']} fault(s) whose workers were not back within 60 s (a cut: its length + 30 s) "
                   "of the last fault touching them")
    fin = r.get("final") or {}
    if fin.get("full_at") is None and not r.get("up_failed") and f["injected"]:
        out.append(f"no full strength within the last fault's allowance (by {fin.get('horizon')} s): "
                   f"{'; '.join(fin.get('missing') or [])[:300]}")
    if r.get("broken"):
        out.append(r["broken"])
    if r.get("up_failed"):
        out.append(f"`clusterctl up` failed: {r['up_failed']}")
    if r.get("down_failed"):
        out.append(f"`clusterctl down` failed: {r['down_failed']}")
    if r["leftovers"]:
        out.append(f"{len(r['leftovers'])} process(es) left after `down` (killed)")
    if r["namespaces_left"]:
        out.append(f"namespaces or links left: {', '.join(r['namespaces_left'])}")
    if r.get("interrupted"):
        out.append("interrupted")
    elif not r.get("up_failed"):
        if not f["injected"]:
            out.append("no fault was injected")
        if not j["completed"]:
            out.append("no job completed")
    return out


def secs(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f} s"


def summary(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [f"chaos --fleet {s['hosts']}x{s['per']}: seed {r['seed']}, {r['seconds']:.0f} s, faults every "
             f"{s['gap'][0]:g}-{s['gap'][1]:g} s: {', '.join(s['faults'])}", "",
             "| fault | injected | recovered | to full strength median | max | workers back median | max "
             "| jobs identical | mismatched | retried | fatal after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, k in r["by_kind"].items():
        if not k["injected"] and not k["skipped"]:
            continue
        sk = f" (+{k['skipped']} without a target)" if k["skipped"] else ""
        lines.append(f"| {kind} | {k['injected']}{sk} | {k['recovered']} | {secs(k['to_full_strength']['median'])} "
                     f"| {secs(k['to_full_strength']['max'])} | {secs(k['workers_back']['median'])} "
                     f"| {secs(k['workers_back']['max'])} | {k['jobs']['identical']} | {k['jobs']['mismatched']} "
                     f"| {k['jobs']['retried']} | {k['fatal_after']} |")
    f, j = r["faults"], r["jobs"]
    lines.append(f"| **all** | {f['injected']} | {f['injected'] - f['late']} | {secs(f['to_full_strength']['median'])} "
                 f"| {secs(f['to_full_strength']['max'])} | {secs(f['workers_back']['median'])} "
                 f"| {secs(f['workers_back']['max'])} | {j['completed'] - j['mismatches']} | {j['mismatches']} "
                 f"| {j['retried']} | {len(r['fatal'])} |")
    fin = r.get("final") or {}
    lines += ["", f"jobs: {j['run']} run, {j['completed']} completed, {j['mismatches']} mismatched, {j['retried']} "
              f"failed attempts retried, {j['abandoned']} abandoned, {j['cut_short']} cut short at the end",
              "full strength after the last fault: "
              + (f"{fin['full_at'] - fin['last_fault']:.1f} s after it (allowed until +{fin['horizon'] - fin['last_fault']:.0f} s)"
                 if fin.get("full_at") is not None and fin.get("last_fault") is not None else
                 "no fault" if fin.get("last_fault") is None else "NOT REACHED"),
              f"workers ever fatal: {len(r['fatal'])}; processes left after down: {len(r['leftovers'])}; "
              f"namespaces left: {len(r['namespaces_left'])}"]
    for name, v in sorted(r["fatal"].items()):
        lines.append(f"  ! {name} fatal at {v['t']:.1f} s (after {v.get('after') or '?'}): {v['reason'][:200]}")
    shown = [x for x in f["list"] if x["late"]]
    for x in shown[:10]:
        lines.append(f"  ! fault #{x['n']} {x['kind']} at {x['at']:.1f} s ({x['detail'][:140]}): not back by "
                     f"{x['chained']} s; waiting on: {'; '.join(x['waiting'])[:200]}")
    if len(shown) > 10:
        lines.append(f"  ! ... and {len(shown) - 10} more late faults (see the JSON)")
    lines += [f"  ! left: {p}" for p in r["leftovers"]]
    fails = r["failures"]
    lines.append("PASS" if not fails else "FAIL: " + "; ".join(fails))
    return "\n".join(lines)


# -- the run ----------------------------------------------------------------------------------------

def host_name(i: int) -> str:
    return f"ns{i}"


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def serving() -> frozenset[str]:
    """Addresses of live `dask worker [ADDRESS]` processes (titled by Dask), on any host."""
    import psutil

    out = set()
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].startswith("dask worker [") and p.info["status"] not in (
                psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD, psutil.STATUS_STOPPED):
            out.add(cmd[0].split("[", 1)[1].split("]", 1)[0])
    return frozenset(out)


class Injector:
    """Injects the plan's faults on time, and their follow-ups (a link restored, an sshd started)."""

    def __init__(self, run: FleetRun):
        self.run, self.fleet, self.echo = run, run.fleet, run.echo
        self.hosts = run.args.hosts
        self.followups: list[tuple[float, str, int, Fault]] = []  # (due, restore | sshd, host index, fault)
        self.sshd_due = [0.0] * self.hosts  # a host's sshd stays down until then
        self.skipped: list[dict] = []  # planned faults that found no target

    def loop(self, plan: list[Planned]) -> None:
        run, plan = self.run, list(plan)
        try:
            while not run.abort.is_set():
                t = run.now()
                for x in sorted((x for x in self.followups if x[0] <= t), key=lambda x: x[0]):
                    self.followups.remove(x)
                    self.follow_up(*x)
                faulting = not run.time_up.is_set()
                if plan and faulting and plan[0].at <= t:
                    self.inject(plan.pop(0))
                    continue
                if not faulting and not self.followups:
                    return
                nxt = min([x[0] for x in self.followups] + ([plan[0].at] if plan and faulting else []) + [t + 0.2])
                time.sleep(max(0.01, nxt - t))
        except Exception as e:  # noqa: BLE001 - the harness's own bug: stop faulting, say why
            import traceback

            run.broken = f"fault injector failed: {type(e).__name__}: {e}"
            self.echo(f"{run.now():7.1f}s  {run.broken}\n{traceback.format_exc()}")

    def follow_up(self, due: float, what: str, i: int, fault: Fault) -> None:
        run = self.run
        if what == "restore":
            self.fleet.restore(i)
            fault.not_before = run.now()
            self.echo(f"{run.now():7.1f}s  {host_name(i)}: link restored (fault #{fault.n}, cut {fault.length:.1f} s)")
            return
        if self.sshd_due[i] > due + 1e-6:
            return  # a later fault keeps it down longer: its follow-up starts it
        pid = self.fleet.start_sshd(i)
        t = run.now()
        with run.lock:
            for f in run.faults:
                if f.host == host_name(i) and f.kind in ("sshd", "reboot") and f.not_before == float("inf"):
                    f.not_before = t
        self.echo(f"{t:7.1f}s  {host_name(i)}: sshd started again (pid {pid}; fault #{fault.n})")

    # -- finding targets ---------------------------------------------------------------------------
    def remote_processes(self, i: int) -> tuple[list[tuple[int, str | None]], list[int]]:
        """([(pid, its address)] of the host's Dask workers not stopped, [pids] of its top fork servers):
        processes in its namespace with a cwd in its workdir."""
        import psutil

        workers, servers, procs = [], [], {}
        for pid in self.fleet.pids(i):
            try:
                p = psutil.Process(pid)
                procs[pid] = (" ".join(p.cmdline()), p.cwd(), p.ppid(), p.status())
            except psutil.Error:
                continue
        wd = str(self.run.workdir(i))
        for pid, (cmd, cwd, ppid, state) in procs.items():
            if cwd != wd and not cwd.startswith(wd + os.sep):
                continue
            if cmd.startswith("dask worker"):  # its title: `dask worker [tls://ADDRESS:PORT]`
                m = re.search(r"\[(\S+)\]", cmd)
                if state != psutil.STATUS_STOPPED:  # a stopped one is a fault already
                    workers.append((pid, m[1] if m else None))
            elif "clusterctl.remote.forkserver" in cmd and "clusterctl.remote.forkserver" not in procs.get(ppid, ("",))[0]:
                servers.append(pid)  # not a child it forked that has no title yet
        return workers, servers

    def hit_host(self, i: int, f: Fault, s: Sample | None) -> None:
        """The host's workers become the fault's targets, with their processes and addresses now."""
        names = sorted(n for n, w in (s.workers if s else {}).items() if w.at == host_name(i))
        f.targets = sorted(set(f.targets) | set(names))
        f.host = f.host or host_name(i)
        procs, _ = self.remote_processes(i)
        by_address = {a: pid for pid, a in procs if a}
        for n in names:
            w = s.workers[n] if s else None
            if w and w.address and w.address in by_address:
                f.remote[n] = by_address[w.address]
                f.old_address[n] = w.address

    # -- injecting ---------------------------------------------------------------------------------
    def inject(self, p: Planned) -> None:
        run = self.run
        s = run.last
        f = Fault(len(run.faults) + 1, p.kind, round(run.now(), 2), length=p.length)
        f.deadline = round(f.at + allowance(p.kind, p.length), 2)
        order = [(p.host + k) % self.hosts for k in range(self.hosts)] if p.host >= 0 else []
        act = {"cut": self.cut, "forkserver": self.kill_forkserver, "kill": self.signal_worker,
               "stop": self.signal_worker, "sshd": self.kill_sshd, "kill-scheduler": self.kill_scheduler,
               "reboot": self.reboot}[p.kind]
        skipped = act(p, f, s, order)
        f.done = run.now()
        with run.lock:
            if skipped:
                self.skipped.append({"kind": p.kind, "at": f.at, "skipped": skipped})
                self.echo(f"{f.at:7.1f}s  fault {p.kind}: skipped ({skipped})")
            else:
                run.faults.append(f)
                self.echo(f"{f.at:7.1f}s  fault #{f.n} {f.kind}: {f.detail}")

    def cut(self, p: Planned, f: Fault, s: Sample | None, order: list[int]) -> str | None:
        i = next((h for h in order if not self.fleet.is_cut(h)), None)
        if i is None:
            return "every host is cut already"
        self.hit_host(i, f, s)
        self.fleet.cut(i)
        f.not_before = float("inf")
        self.followups.append((f.at + p.length, "restore", i, f))
        f.detail = f"{f.host} cut for {p.length:.1f} s"
        return None

    def kill_forkserver(self, p: Planned, f: Fault, s: Sample | None, order: list[int]) -> str | None:
        for i in order:
            _, servers = self.remote_processes(i)
            if servers:
                import psutil

                from clusterctl.client.chaos import landed

                self.hit_host(i, f, s)
                procs, children = [], []
                for pid in servers:
                    try:
                        procs.append(p := psutil.Process(pid))
                        children += p.children()
                    except psutil.Error:
                        pass
                for p in procs:
                    p.kill()
                    landed(p, signal.SIGKILL)
                # what it forked dies with it (a parent-death signal): no sample may see them alive after
                gone, _ = psutil.wait_procs(children, timeout=2)
                f.detail = (f"SIGKILL {f.host}'s fork server (pid {', '.join(map(str, servers))}); "
                            f"{len(gone)} of its {len(children)} children ended with it")
                return None
        return "no fork server running on any host"

    def signal_worker(self, p: Planned, f: Fault, s: Sample | None, order: list[int]) -> str | None:
        """SIGKILL or SIGSTOP a registered worker on the planned host (the next host when it has none)."""
        import psutil

        from clusterctl.client.chaos import landed

        names = {w.address: n for n, w in (s.workers if s else {}).items() if w.address and w.registered}
        sig = signal.SIGKILL if p.kind == "kill" else signal.SIGSTOP
        for i in order:
            procs, _ = self.remote_processes(i)
            known = sorted((names[a], pid, a) for pid, a in procs if a in names)
            if not known:
                continue
            name, pid, address = known[int(p.pick * len(known))]
            try:
                proc = psutil.Process(pid)
                proc.send_signal(sig)
            except psutil.Error:
                continue
            took = landed(proc, sig)
            f.host, f.targets, f.remote, f.old_address = host_name(i), [name], {name: pid}, {name: address}
            f.must_die = [pid] if sig == signal.SIGSTOP else []
            f.detail = (f"{sig.name} {name} on {f.host} (pid {pid}, {address})"
                        + (f", in effect after {took:.2f} s" if took is not None else ", no effect within 5 s"))
            return None
        return "no registered remote worker to signal"

    def kill_sshd(self, p: Planned, f: Fault, s: Sample | None, order: list[int]) -> str | None:
        i = next((h for h in order if self.fleet.sshd_running(h)), None)
        if i is None:
            return "every host's sshd is down already"
        self.hit_host(i, f, s)
        pid = self.fleet.kill_sshd(i)
        self.sshd_down(i, f, p.length)
        f.detail = f"SIGKILL {f.host}'s sshd (pid {pid}), back in {p.length:.1f} s"
        return None

    def reboot(self, p: Planned, f: Fault, s: Sample | None, order: list[int]) -> str | None:
        i = order[0]
        self.hit_host(i, f, s)
        killed = self.fleet.reboot(i)
        self.sshd_down(i, f, p.length)
        f.detail = f"{f.host} rebooted: {len(killed)} processes killed, sshd back in {p.length:.1f} s"
        return None

    def sshd_down(self, i: int, f: Fault, length: float) -> None:
        due = f.at + length
        self.sshd_due[i] = max(self.sshd_due[i], due)
        self.followups.append((due, "sshd", i, f))
        f.not_before = float("inf")

    def kill_scheduler(self, p: Planned, f: Fault, s: Sample | None, order: list[int]) -> str | None:
        import psutil

        from clusterctl.client.chaos import landed

        sched = s.scheduler if s else None
        if sched is None or not sched.pid or not sched.alive or sched.state != "running":
            return "no running scheduler"
        try:
            proc = psutil.Process(sched.pid)
            if "scheduler" not in " ".join(proc.cmdline()):
                return f"pid {sched.pid} is no scheduler"
        except psutil.Error:
            return "no running scheduler"
        for i in range(self.hosts):
            self.hit_host(i, f, s)
        f.host = None
        proc.kill()
        landed(proc, signal.SIGKILL)
        f.old_scheduler = sched.pid
        f.detail = f"SIGKILL the scheduler (pid {sched.pid})"
        return None


class FleetRun:
    """The monitor, the injector and the jobs, each on a thread of its own, against one cluster."""

    def __init__(self, fleet, cfg, config: Path, args: argparse.Namespace, plan: list[Planned],
                 echo: Callable[[str], None]):
        from clusterctl.client.chaosjobs import JobLoop

        self.fleet, self.cfg, self.config, self.args, self.plan, self.echo = fleet, cfg, config, args, plan, echo
        self.expected = args.hosts * args.per
        self.t0 = time.monotonic()
        self.epoch0 = time.time()
        self.faults: list[Fault] = []
        self.fatal: dict[str, dict] = {}
        self.last: Sample | None = None
        self.broken: str | None = None
        self.lock = threading.Lock()
        self.time_up = threading.Event()  # no new faults, no new jobs
        self.abort = threading.Event()  # stop everything now (Ctrl-C, the end)
        self.monitor_done = threading.Event()
        self.samples = 0
        self.sample_errors: list[str] = []
        self.seconds = 0.0
        self.injector = Injector(self)
        # a failed attempt is retried once the scheduler answers again (or after 120 s)
        self.loop = JobLoop(cfg, args.spec, key="fleetchaos", attempts=args.attempts, timeout=args.job_timeout,
                            echo=echo, now=self.now, settle=lambda: self.wait_answering(120))
        self.jobs = self.loop.jobs

    def now(self) -> float:
        return time.monotonic() - self.t0

    def workdir(self, i: int) -> Path:
        return self.config.parent / "remote" / host_name(i)

    # -- the monitor -------------------------------------------------------------------------------
    def monitor(self) -> None:
        from clusterctl.client.status import status

        while not self.monitor_done.is_set():
            t = self.now()
            with self.lock:
                watched = {p for f in self.faults if f.back_at is None or f.full_at is None
                           for p in [*f.remote.values(), *f.must_die]}
            try:
                st = status(self.cfg, sample=0)
                s = sample_of(st, t, self.expected, frozenset(p for p in watched if alive(p)),
                              serving() if watched else frozenset())
            except Exception as e:  # noqa: BLE001 - a ledger mid-write, ...: the next poll will do
                if len(self.sample_errors) < 50:
                    self.sample_errors.append(f"{t:.1f}: {type(e).__name__}: {e}")
                time.sleep(POLL)
                continue
            self.observe(s)
            time.sleep(max(0.0, POLL - (self.now() - t)))

    def observe(self, s: Sample) -> None:
        full = full_strength(s)
        with self.lock:
            self.last, self.samples = s, self.samples + 1
            for name, w in {**s.workers, **({"scheduler": s.scheduler} if s.scheduler else {})}.items():
                if w.state == "fatal" and name not in self.fatal:
                    cause = next((f for f in reversed(self.faults) if f.done <= s.t and
                                  (name in f.targets or f.kind == "kill-scheduler" or name == "scheduler")), None)
                    self.fatal[name] = {"t": round(s.t, 1), "reason": w.reason,
                                        "after": f"#{cause.n} {cause.kind} at {cause.at:.1f} s" if cause else None,
                                        "after_kind": cause.kind if cause else None}
                    self.echo(f"{s.t:7.1f}s  !! {name} is FATAL: {w.reason[:160]}")
            for f in self.faults:
                if f.full_at is not None or s.t < f.done:
                    continue
                left = pending(f, s)
                if left:
                    f.waiting = left
                    continue
                if f.back_at is None:
                    f.back_at = s.t
                    self.echo(f"{s.t:7.1f}s  fault #{f.n} {f.kind}: its workers back after {f.back:.1f} s")
                if full:
                    f.waiting = full
                else:
                    f.full_at, f.waiting = s.t, []

    def wait_answering(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.abort.is_set():
            s = self.last
            if s is not None and s.answering and s.supervisor and s.t > self.now() - 2:
                return
            time.sleep(0.3)

    # -- the jobs ----------------------------------------------------------------------------------
    def run_jobs(self, reference: list) -> None:
        self.loop.run(reference, more=lambda: not self.time_up.is_set() and not self.abort.is_set(), cut_short=True)

    # -- the whole run -----------------------------------------------------------------------------
    def run(self, reference: list) -> dict[str, Any]:
        """Faults and jobs for --minutes, then the hosts healed and full strength awaited."""
        self.t0, self.epoch0 = time.monotonic(), time.time()
        threads = [threading.Thread(target=self.monitor, name="monitor", daemon=True),
                   threading.Thread(target=self.injector.loop, args=(self.plan,), name="injector", daemon=True),
                   threading.Thread(target=self.run_jobs, args=(reference,), name="jobs", daemon=True)]
        for th in threads:
            th.start()
        seconds = self.args.minutes * 60
        while self.now() < seconds and not self.broken:
            time.sleep(0.2)
        self.time_up.set()
        self.echo(f"{self.now():7.1f}s  time is up: no new faults nor jobs; pending restores and sshd starts follow")
        threads[1].join(timeout=max(self.args.cut[1], self.args.sshd_down[1], self.args.reboot_down[1]) + 30)
        final = self.await_final()
        threads[2].join(timeout=self.args.job_timeout + 30)
        if threads[2].is_alive():
            self.echo(f"{self.now():7.1f}s  the last job did not end: going on")
        self.monitor_done.set()
        threads[0].join(timeout=10)
        self.seconds = self.now()
        return final

    def await_final(self) -> dict[str, Any]:
        with self.lock:
            last = max((f.at for f in self.faults), default=None)
            horizon = max((f.deadline for f in self.faults), default=self.now())
        self.echo(f"{self.now():7.1f}s  waiting for full strength and every fault healed (until {horizon:.0f} s)")
        while True:
            with self.lock:
                s = self.last
                open_ = [f for f in self.faults if f.full_at is None]
                missing = (full_strength(s) if s else ["no sample"]) + [f"fault #{f.n} {f.kind}: {'; '.join(f.waiting)}"
                                                                        for f in open_]
            if s is not None and not open_ and not full_strength(s) and s.t >= (last or 0):
                self.echo(f"{self.now():7.1f}s  full strength, every fault healed")
                return {"last_fault": last, "horizon": round(horizon, 2), "full_at": round(s.t, 2), "missing": []}
            if self.now() > horizon + 2 * POLL or self.abort.is_set():
                self.echo(f"{self.now():7.1f}s  NOT at full strength by {horizon:.0f} s: {'; '.join(missing)[:400]}")
                return {"last_fault": last, "horizon": round(horizon, 2), "full_at": None, "missing": missing[:30]}
            time.sleep(POLL)

    def heal(self) -> None:
        """Every cut restored and every sshd running (an interrupted run, or the end)."""
        for i in range(self.args.hosts):
            try:
                if self.fleet.is_cut(i):
                    self.fleet.restore(i)
                if not self.fleet.sshd_running(i):
                    self.fleet.start_sshd(i)
            except Exception as e:  # noqa: BLE001 - the clean-up goes on
                self.echo(f"heal {host_name(i)}: {type(e).__name__}: {e}")


# -- evidence and leftovers ----------------------------------------------------------------------

def read_events(state: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (state / "events.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def evidence(state: Path, names: list[str], epoch0: float, limit: int = 40) -> dict[str, dict]:
    """Per process: its events (times since the jobs began, as the fault times) and its log's tail."""
    events = read_events(state)
    out = {}
    for name in names:
        lines = [f"{e.get('time', 0) - epoch0:7.1f} {e.get('process', '?'):<12} {e.get('event', '?'):<14} "
                 f"{' '.join(str(e.get('detail', '')).split())[:240]}" for e in events if e.get("process") == name]
        try:
            log = (state / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            log = []
        # a traceback's last line, a start line, Dask's own complaints: what a tail of the log may hide
        errors = [x for x in log if ERROR_LINE.match(x) or x.startswith("--- ")]
        out[name] = {"events": lines[-limit:], "log_errors": errors[-limit:], "log_tail": log[-limit:]}
    return out


ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt)\b|.*\b(ERROR|CRITICAL)\b)")


def fatal_events(state: Path, epoch0: float) -> dict[str, dict]:
    """Every process with a `fatal` event at any time (the monitor may have missed a short one)."""
    out = {}
    for e in read_events(state):
        if e.get("event") == "fatal" and e.get("process") not in out:
            out[e["process"]] = {"t": round(e.get("time", 0) - epoch0, 1), "reason": str(e.get("detail", ""))}
    return out


def _sshd_own(p) -> bool:
    """One of a host's sshd's own stages ("sshd: [accepted]", "[net]", "root@notty"): a connection made
    while a link was cut lingers until LoginGraceTime, and the far half of a connection whose client went
    during a cut stays until the test sshd's next ClientAlive probe (5 s), even after its listener restarted.
    What runs in a session (a command, an agent) is its child, titled otherwise, and still counts."""
    import psutil

    try:
        return " ".join(p.cmdline()).startswith("sshd:")
    except psutil.Error:
        return False


def leftovers(root: Path, workdirs: list[Path], tag: str, fleet, listeners: set[int]) -> list[str]:
    """Processes of the run alive 3 s after `down`: carrying the cluster's tag, with a cwd (or argv) under
    the run's directory (host workdirs included), or in a host's namespace (but its sshd and sshd's own
    stages); each SIGKILLed."""
    import psutil

    from clusterctl.runtime.process import tagged

    from chaos import kill_left, processes_under

    me = os.getpid()
    found: dict[int, tuple[psutil.Process, str]] = {}
    for p in tagged(tag):
        found[p.pid] = (p, "tagged")
    for p in processes_under(root):
        if p.pid not in listeners:
            cwd = p.info.get("cwd") or ""
            why = "cwd in a host workdir" if any(cwd.startswith(str(w)) for w in workdirs) else "of the run's directory"
            found.setdefault(p.pid, (p, why))
    for i in range(len(fleet.hosts)):
        for pid in fleet.pids(i):
            if pid not in listeners and pid != me:
                try:
                    p = psutil.Process(pid)
                    if not _sshd_own(p):
                        found.setdefault(pid, (p, f"in namespace ns{i}"))
                except psutil.Error:
                    pass
    return kill_left([p for p, _ in found.values()], why={pid: why for pid, (_, why) in found.items()}, width=200)


def our_names(owner: str) -> list[str]:
    """The fleet's namespaces and links still there (none after its close())."""
    from netns import PREFIX as NS_PREFIX

    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
    names = [line.split()[0] for line in spaces if line.split()]
    names += [line.split(":")[1].strip().split("@")[0] for line in links if line.count(":") >= 2]
    return [n for n in names if n.startswith(f"{NS_PREFIX}{owner}")]


def until_full_strength(cfg, expected: int, timeout: float) -> list[str]:
    """[] once the cluster is at full strength; what it still lacks after ``timeout`` seconds."""
    from clusterctl.client.status import status

    end = time.monotonic() + timeout
    while True:
        missing = full_strength(sample_of(status(cfg, sample=0), 0.0, expected))
        if not missing or time.monotonic() > end:
            return missing
        time.sleep(POLL)


def write_topology(root: Path, fleet, per: int, grace: float | None, python: str) -> Path:
    from _ports import free_port

    host = fleet.head_address
    port = free_port(host)
    dash = free_port(host, taken={port})
    restart = f"    restart: {{unhealthy_grace: {grace:g}}}\n" if grace else ""
    at = ", ".join(f"ns{h.index}: {per}" for h in fleet.hosts)
    hosts = "".join(fleet.host_yaml(f"ns{h.index}", h, python, root / "remote" / f"ns{h.index}")
                    for h in fleet.hosts)
    path = root / "cluster.yaml"
    path.write_text(
        f"name: fleetchaos\nstate_dir: state\n"
        f"scheduler: {{host: {host}, port: {port}, dashboard_port: {dash}}}\n"
        f"tls: {{enabled: true}}\n"
        f"workers:\n  - name: default\n    nthreads: 1\n    at: {{{at}}}\n{restart}"
        f"hosts:\n{hosts}"
        "timeouts: {startup: 120, shutdown: 10}\n")
    return path


# -- main -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import netns
    except ImportError as e:
        print(f"{PREFIX}: cannot import tests/netns.py: {e}", file=sys.stderr)
        return 2
    try:
        netns.check_preconditions()
    except netns.NetnsUnavailable as e:
        print(f"{PREFIX}: cannot run here: {e}", file=sys.stderr)
        return 2

    import psutil

    import chaos as local
    from clusterctl.client.chaos import rows_of
    from clusterctl.jobs import montecarlo as mc
    from clusterctl.plan.specs import cluster_tag
    from clusterctl.runtime.ledger import atomic_write
    from clusterctl.topology import load_config

    args.spec = mc.MonteCarloSpec(tasks=args.tasks, min_points=args.min_points, max_points=args.max_points,
                                  seed=args.seed)
    plan = plan_faults(args.seed, args.minutes * 60, args.faults, args.hosts, args.gap, args.cut, args.sshd_down,
                       args.reboot_down)
    if args.route == "agent":
        os.environ["CLUSTERCTL_DIRECT"] = "0"  # the CLI's, so the supervisor's
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below runs `down`
    echo = lambda line: print(line, flush=True)  # noqa: E731
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="clusterctl-fleetchaos-", dir=args.dir))
    local.quiet_dask(root / "client.log")
    fleet = netns.NetnsFleet(root / "fleet", hosts=args.hosts)
    report: dict[str, Any] = {}
    run: FleetRun | None = None
    config: Path | None = None
    final: dict[str, Any] = {}
    interrupted = False
    started, load = time.strftime("%Y-%m-%d %H:%M:%S"), os.getloadavg()
    listeners: set[int] = set()
    try:
        try:
            fleet.start()
        except netns.NetnsUnavailable as e:
            print(f"{PREFIX}: cannot run here: {e}", file=sys.stderr)
            shutil.rmtree(root, ignore_errors=True)
            return 2
        config = write_topology(root, fleet, args.per, args.grace, args.python)
        cfg = load_config(config)
        echo(f"chaos --fleet {args.hosts}x{args.per}: {root}; {len(plan)} faults planned over {args.minutes:g} min; "
             "`clusterctl up`")
        t = time.monotonic()
        up = local.cli(config, "up", timeout=240)
        if up.returncode != 0:
            report["up_failed"] = ((up.stderr or up.stdout).strip().splitlines() or [f"exit {up.returncode}"])[-1]
            echo(f"up failed: {report['up_failed']}")
        else:
            echo(f"up in {time.monotonic() - t:.1f} s; reference: {args.tasks} tasks computed serially")
            reference = rows_of(mc.run_serial(args.spec))
            missing = until_full_strength(cfg, args.hosts * args.per, 120)
            if missing:
                report["up_failed"] = f"not at full strength 120 s after up: {'; '.join(missing)[:400]}"
                echo(report["up_failed"])
            else:
                run = FleetRun(fleet, cfg, config, args, plan, echo)
                final = run.run(reference)
    except (KeyboardInterrupt, SystemExit):
        interrupted = True
        echo("interrupted: healing the hosts and stopping the cluster")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # nothing cuts the clean-up short
        if run is not None:
            run.time_up.set()
            run.abort.set()
            run.monitor_done.set()
            run.heal()
        status_json = None
        left: list[str] = []
        if config is not None:
            try:
                res = local.cli(config, "status", "--json", timeout=60)
                status_json = json.loads(res.stdout) if res.stdout.strip().startswith("{") else None
            except (subprocess.TimeoutExpired, ValueError):
                pass
            try:
                down = local.cli(config, "down", timeout=180)
                if down.returncode != 0:
                    report["down_failed"] = (down.stderr or down.stdout).strip()[-300:]
            except subprocess.TimeoutExpired:
                report["down_failed"] = "no answer within 180 s"
            if fleet.hosts:
                listeners = {fleet.sshd_pid(h) for h in fleet.hosts if fleet.sshd_running(h)}
                left = leftovers(root, [root / "remote" / f"ns{h.index}" for h in fleet.hosts],
                                 cluster_tag(load_config(config)), fleet, listeners)
        owner = fleet.owner
        fleet.close()
        ns_left = our_names(owner)
        # an sshd's own session stage ("sshd: root@notty") can outlive a cut by up to a probe (5 s): the
        # harness's, not the cluster's; what ran in a session is titled otherwise and still counts
        left += [f"{x} (after the fleet's teardown)" for x in fleet.leftovers if not x.split(" ", 1)[-1].startswith("sshd:")]

    state = root / "state" / "fleetchaos"
    epoch0 = run.epoch0 if run else time.time()
    faults = run.faults if run else []
    chain(faults)
    flist = [asdict(f) | {"back": f.back, "to_full": f.to_full, "late": late(f)} for f in faults]
    for x in flist:
        x["not_before"] = None if x["not_before"] == float("inf") else round(x["not_before"], 2)
    skipped = run.injector.skipped if run else []
    jobs = [asdict(j) for j in (run.jobs if run else [])]
    fatal = dict(run.fatal) if run else {}
    for name, v in fatal_events(state, epoch0).items():
        fatal.setdefault(name, {**v, "after": None, "after_kind": None, "seen": "in events.jsonl only"})
    for p in (status_json or {}).get("processes", []):
        if p.get("state") == "fatal" and p["name"] not in fatal:
            fatal[p["name"]] = {"t": None, "reason": p.get("reason", ""), "after": None, "after_kind": None,
                                "seen": "in the last `clusterctl status --json`"}
    suspects = sorted(set(fatal) | {n for f in faults if late(f) for n in f.targets
                                    if any(w.startswith(f"{n} ") for w in f.waiting)})[:8]
    report = {
        "seed": args.seed, "started": started, "seconds": round(run.seconds or run.now(), 1) if run else 0.0, "temp_dir": str(root),
        "settings": {"hosts": args.hosts, "per": args.per, "minutes": args.minutes, "faults": list(args.faults),
                     "gap": list(args.gap), "cut": list(args.cut), "sshd_down": list(args.sshd_down),
                     "reboot_down": list(args.reboot_down), "grace": args.grace, "route": args.route, "attempts": args.attempts,
                     "job_timeout": args.job_timeout, "job": {"tasks": args.tasks, "min_points": args.min_points,
                                                              "max_points": args.max_points}},
        "planned": len(plan),
        "faults": {"injected": len(faults), "skipped": len(skipped), "late": sum(late(f) for f in faults),
                   "to_full_strength": stats([f.to_full for f in faults if f.to_full is not None]),
                   "workers_back": stats([f.back for f in faults if f.back is not None]),
                   "list": flist, "skipped_list": skipped},
        "by_kind": by_kind(flist, skipped, jobs, fatal, args.faults),
        "jobs": {"run": len(jobs), "completed": sum(j["outcome"] in ("match", "mismatch") for j in jobs),
                 "retried": sum(bool(a["error"]) for j in jobs for a in j["attempts"]),
                 "mismatches": sum(j["outcome"] == "mismatch" for j in jobs),
                 "abandoned": sum(j["outcome"] == "abandoned" for j in jobs),
                 "cut_short": sum(j["outcome"] in ("cut-short", "running") for j in jobs), "list": jobs},
        "fatal": fatal, "final": final, "leftovers": left, "namespaces_left": ns_left,
        "evidence": evidence(state, suspects, epoch0) if suspects else {},
        "final_status": [{k: p.get(k) for k in ("name", "at", "state", "restarts", "reason", "registered")}
                         for p in (status_json or {}).get("processes", [])],
        "broken": run.broken if run else None, "interrupted": interrupted,
        "monitor": {"samples": run.samples if run else 0, "errors": run.sample_errors if run else []},
        "findings": local.findings(state),
        "machine": {"cores": psutil.cpu_count(), "load_before": [round(x, 1) for x in load],
                    "load_after": [round(x, 1) for x in os.getloadavg()]},
        "topology": config.read_text() if config else None, **report,
    }
    report["failures"] = failures(report)
    report["ok"] = not report["failures"]
    print(summary(report), flush=True)
    for name, ev in report["evidence"].items():
        print(f"--- evidence: {name}: events (s since the jobs began) ---", flush=True)
        print("\n".join(ev["events"][-15:]) or "(no events)", flush=True)
        print(f"--- {name}: errors and starts in its log ---\n" + "\n".join(x[:300] for x in ev["log_errors"][-12:]),
              flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.json, json.dumps(report, indent=2, default=str))
    if report["ok"] and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
        print(f"wrote {args.json}", file=sys.stderr)
    else:
        print(f"wrote {args.json}; logs and events kept in {root}", file=sys.stderr)
    return 130 if interrupted else (0 if report["ok"] else 1)


if __name__ == "__main__":
    sys.exit(main())
