"""What the commands do, apart from how they print: start in the background, stop, report.

>>> cfg = load_config("cluster.yaml")            # doctest: +SKIP
>>> start_background(cfg)                        # returns once every worker registered
>>> status(cfg)["workers_registered"]
3
>>> stop(cfg)
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from ..runtime import control, process
from ..topology import LOCAL_HOST, ClusterConfig
from ..errors import ClusterError
from ..runtime.probes import SchedulerProbe
from ..runtime.ledger import Ledger, process_ids, supervisor_id
from ..runtime.logs import tail
from ..runtime.process import ProcessId
from ..plan.resolve import resolve
from ..supervisor import leftovers

Progress = Callable[[str], None]


class StartError(ClusterError):
    """``up`` failed; nothing of the cluster is left running."""


def supervisor_alive(data: dict[str, Any] | None) -> ProcessId | None:
    sup = supervisor_id(data)
    return sup if sup and sup.alive() else None


def start_background(cfg: ClusterConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Launch the supervisor as a fresh detached process; return the ledger once healthy.

    Raises StartError (with the cause and log tail) when start-up fails; the
    supervisor has then stopped everything it started."""
    resolve(cfg.python, cfg.bin_dir)  # fail here, before anything starts, with the PATH advice
    ledger = Ledger(cfg.state_path)
    data = ledger.read()
    if supervisor_alive(data):
        return data  # caller reports "already running"
    problem = leftovers(ledger)
    if problem:
        raise StartError(problem)
    log = cfg.log_path / "supervisor.log"
    source = str(cfg.source or "cluster.yaml")
    popen = forked_supervisor(source, log, cfg.base_dir)
    if popen is None:
        popen = process.spawn(supervisor_argv(source), log_path=log, cwd=cfg.base_dir, detach=True)
    sup = process.identify(popen)
    deadline = time.monotonic() + cfg.timeouts.startup + 30
    last = ""
    while True:
        data = ledger.read() or {}
        mine = (data.get("supervisor") or {}).get("pid") == popen.pid
        state = data.get("state") if mine else None
        if state == "running":
            return data
        if progress and mine:
            note = _progress_note(data)
            if note != last:
                progress(note)
                last = note
        code = popen.poll()
        if code is not None or state == "failed":
            try:
                popen.wait(timeout=cfg.timeouts.shutdown + 15)
            except Exception:  # noqa: BLE001 - it is stuck: force it, below
                process.kill_tree(sup)
            _reap_helpers(sup)
            data = ledger.read() or {}
            if (data.get("supervisor") or {}).get("pid") == popen.pid and data.get("error"):
                raise StartError(data["error"])
            raise StartError(f"the supervisor exited with code {popen.returncode}; {log}:\n{tail(log, 15)}")
        if time.monotonic() > deadline:
            process.stop(sup, grace=cfg.timeouts.shutdown + 5, popen=popen)
            stop_from_ledger(cfg)
            raise StartError(f"the cluster was not healthy after {deadline:.0f} s; see {log}")
        time.sleep(0.05)


def supervisor_argv(source: str) -> list[str]:
    """The background supervisor's command line for the topology file ``source``."""
    return [sys.executable, "-m", "clusterctl.supervisor", source]


def forked_supervisor(source: str, log: Path, cwd: Path) -> ForkedChild | None:
    """POSIX: fork this process into the background supervisor of ``source``.

    The same as exec'ing supervisor_argv(source) (own session, stdin from /dev/null,
    output appended to ``log``, ``cwd``, ``ps`` shows that argv) but without a second interpreter start and
    import of clusterctl: ~0.3 s of every ``up`` (scripts/bench). None where fork is
    unavailable or CLUSTERCTL_FORK=0; the caller then execs argv. Call it while this
    process has a single thread (before any spinner starts)."""
    if os.name != "posix" or os.environ.get("CLUSTERCTL_FORK", "1") == "0" or threading.active_count() > 1:
        return None  # a fork copies only this thread: a lock another one holds would stay held
    from .. import supervisor  # imported here, once, rather than after the fork

    argv = supervisor_argv(source)
    log.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start (forked): {' '.join(argv)}\n".encode())
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write the parent's pending output again
    pid = os.fork()
    if pid:
        return ForkedChild(pid)
    code = 1
    try:
        # PYTHONUNBUFFERED: as process.spawn gives an exec'd supervisor (and so its children).
        process.become_detached(argv, log, cwd, {"PYTHONUNBUFFERED": "1"})
        code = supervisor.main([source])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - the log is the only place left to say it
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class ForkedChild:
    """The parts of subprocess.Popen that start_background and process.stop use."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: it has gone, its code is lost
                self.returncode = -1
                return self.returncode
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode


def _progress_note(data: dict[str, Any]) -> str:
    procs = data.get("processes") or []
    sched = next((p for p in procs if p["role"] == "scheduler"), None)
    if sched is None or sched["state"] != "running":
        return "starting the scheduler"
    workers = [p for p in procs if p["role"] == "worker"]
    ready = sum(p["state"] == "running" for p in workers)
    return f"{ready}/{len(workers)} workers registered" if workers else "starting workers"


def stop(cfg: ClusterConfig) -> dict[str, Any]:
    """Stop everything: through the supervisor if it answers, else from the ledger. Idempotent."""
    ledger = Ledger(cfg.state_path)
    data = ledger.read()
    t0 = time.monotonic()
    if data is None:
        return {"stopped": 0, "seconds": 0.0, "how": "nothing to stop"}
    running = [p for p, pid in process_ids(data) if pid.alive()]
    sup = supervisor_alive(data)
    how = "ledger"
    if sup:
        address = (data.get("supervisor") or {}).get("control")
        try:
            control.request(address, ledger.read_token(), "stop", timeout=5)
            # Poll rather than wait(): an exited supervisor may stay a zombie until
            # init reaps it, and ProcessId.alive() already counts a zombie as gone.
            deadline = time.monotonic() + cfg.timeouts.shutdown * 2 + 15
            while sup.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            how = "supervisor"
        except ClusterError:
            pass  # not answering: stop_from_ledger forces it below
    stop_from_ledger(cfg)
    recorded = supervisor_id(data)
    if recorded:  # also after a SIGKILLed supervisor: its fork server may linger in its group
        _reap_helpers(recorded)
    return {"stopped": len(running), "seconds": round(time.monotonic() - t0, 3), "how": how}


def _reap_helpers(sup: ProcessId) -> None:
    """The supervisor's helpers (the warm fork server) share its process group and leave a
    moment after it: wait for them briefly, then force, so `up`/`down` return with nothing left."""
    if not sup.alive():
        process.stop_many([(sup, None)], grace=2.0)


def stop_from_ledger(cfg: ClusterConfig) -> None:
    """Stop whatever the ledger names (matching create times only): workers, then scheduler."""
    ledger = Ledger(cfg.state_path)
    data = ledger.read()
    if not data:
        return
    sup = supervisor_alive(data)
    if sup:
        process.stop(sup, grace=cfg.timeouts.shutdown)
    entries = process_ids(data)
    workers = [(p, pid) for p, pid in entries if p.get("role") != "scheduler"]
    scheds = [(p, pid) for p, pid in entries if p.get("role") == "scheduler"]
    changed = False
    for group in (workers, scheds):
        targets = [(pid, None) for _, pid in group]
        for (p, _), result in zip(group, process.stop_many(targets, cfg.timeouts.shutdown)):
            if result != "gone" or p.get("state") not in ("stopped", "exited", "fatal"):
                p["state"] = "stopped"
                changed = True
    if changed or data.get("state") not in ("stopped", "failed"):
        if data.get("state") != "failed":
            data["state"] = "stopped"
        ledger.write(data)
    if cfg.remote_hosts():  # a killed supervisor's remote processes: the agents' sweep (fleet issue)
        from ..remote import fleet

        fleet.shutdown(cfg)


def status(cfg: ClusterConfig, sample: float = 0.2) -> dict[str, Any]:
    """Live status: ledger facts enriched with psutil figures and the scheduler's own view."""
    ledger = Ledger(cfg.state_path)
    data = ledger.read()
    if data is None:
        return {"name": cfg.name, "state": "not-running", "processes": [], "workers_registered": 0,
                "scheduler": {"address": None}, "dashboard": None, "supervisor": {"pid": None, "alive": False}}
    sup = supervisor_alive(data)
    sched = data.get("scheduler") or {}
    probe = scheduler_probe(cfg, data)
    ident = probe.identity(timeout=1.0) if data.get("state") not in ("stopped",) else None
    registered = dict((ident or {}).get("workers") or {})
    live: dict[str, psutil.Process] = {}
    procs_out = []
    for p in data.get("processes", []):
        entry = {k: p.get(k) for k in ("name", "role", "group", "host", "at", "pid", "state", "restarts", "exit_code", "reason", "log")}
        pid = ProcessId(p["pid"], p["create_time"]) if p.get("pid") and p.get("create_time") else None
        proc = pid.get() if pid else None
        entry["alive"] = proc is not None
        if proc is not None:
            live[p["name"]] = proc
        elif entry["state"] in ("running", "starting"):
            entry["state"] = "exited" if sup else "gone"
        entry["registered"] = p["name"] in registered if p["role"] == "worker" else None
        entry["address"] = registered.get(p["name"], {}).get("address") or p.get("address")
        procs_out.append(entry)
    _add_usage(procs_out, live, sample)
    known = {p["name"] for p in procs_out}
    external = [{"name": n, "address": w["address"], "nthreads": w.get("nthreads")} for n, w in registered.items() if n not in known]
    state = data.get("state", "unknown")
    if not sup and state not in ("stopped", "failed"):
        state = "unsupervised" if any(p["alive"] for p in procs_out) else "not-running"
    return {
        "name": data.get("name", cfg.name),
        "state": state,
        "config": data.get("config"),
        "error": data.get("error"),
        "scheduler": {"address": sched.get("address"), "answering": ident is not None,
                      "at": cfg.scheduler.at or LOCAL_HOST, "host": cfg.scheduler.host},
        "dashboard": sched.get("dashboard"),
        "workers_registered": len(registered),
        "workers_expected": sum(1 for p in procs_out if p["role"] == "worker"),
        "threads": (ident or {}).get("total_threads"),
        "memory": (ident or {}).get("total_memory"),
        "supervisor": {"pid": (data.get("supervisor") or {}).get("pid"), "alive": sup is not None},
        "processes": procs_out,
        "external": external,
    }


def scheduler_probe(cfg: ClusterConfig, data: dict[str, Any] | None = None) -> SchedulerProbe:
    """The scheduler's HTTP port where it really listens: this machine, or the fleet host
    named by `scheduler.at` (whose address `scheduler.host` then holds). ``data`` is the
    ledger, for a port chosen at `up` (port 0, local schedulers only)."""
    if data is None:
        data = Ledger(cfg.state_path).read() or {}
    sched = data.get("scheduler") or {}
    return SchedulerProbe(cfg.scheduler.host, sched.get("http_port") or cfg.scheduler.dashboard_port)


def _add_usage(procs: list[dict[str, Any]], live: dict[str, psutil.Process], sample: float) -> None:
    """RSS and CPU per process tree (a nanny and its worker count together)."""
    trees: dict[str, list[psutil.Process]] = {}
    for name, proc in live.items():
        try:
            trees[name] = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            trees[name] = []
    for members in trees.values():
        for m in members:
            try:
                m.cpu_percent(None)
            except psutil.NoSuchProcess:
                pass
    if trees and sample:
        time.sleep(sample)
    for p in procs:
        rss = cpu = 0.0
        for m in trees.get(p["name"], []):
            try:
                rss += m.memory_info().rss
                cpu += m.cpu_percent(None)
            except psutil.NoSuchProcess:
                pass
        p["rss"] = int(rss) if p["name"] in trees else None
        p["cpu"] = round(cpu, 1) if p["name"] in trees else None


def client_address(cfg: ClusterConfig) -> str:
    """The scheduler address a Client on this machine should use."""
    data = Ledger(cfg.state_path).read() or {}
    addr = (data.get("scheduler") or {}).get("address")
    if not addr or data.get("state") not in ("running", "degraded"):
        raise ClusterError(f"cluster {cfg.name!r} is not running; start it with `clusterctl up`", exit_code=1)
    return addr


def cluster_summary(data: dict[str, Any], cfg: ClusterConfig) -> dict[str, Any]:
    """What the walkthrough's Client repr shows: address, dashboard, workers, threads, memory."""
    sched = data.get("scheduler") or {}
    ident = scheduler_probe(cfg, data).identity(timeout=2.0) or {}
    return {
        "scheduler": sched.get("address"),
        "dashboard": sched.get("dashboard"),
        "workers": ident.get("n_workers", len(ident.get("workers") or {})),
        "threads": ident.get("total_threads"),
        "memory": ident.get("total_memory"),
        "supervisor_pid": (data.get("supervisor") or {}).get("pid"),
        "logs": str(cfg.log_path),
    }


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def log_file(cfg: ClusterConfig, name: str) -> Path:
    if name == "supervisor":
        return cfg.log_path / "supervisor.log"
    data = Ledger(cfg.state_path).read() or {}
    for p in data.get("processes", []):
        if p["name"] == name and p.get("log"):
            return Path(p["log"])
    candidate = cfg.log_path / f"{name}.log"
    if candidate.exists():
        return candidate
    names = [p["name"] for p in data.get("processes", [])] + ["supervisor"]
    raise ClusterError(f"no process named {name!r}; known: {', '.join(names)}")


def ask_supervisor(cfg: ClusterConfig, command: str, body: dict[str, Any] | None = None, timeout: float = 120) -> dict[str, Any]:
    """Send one command over the control channel to this cluster's running supervisor."""
    ledger = Ledger(cfg.state_path)
    data = ledger.read()
    if not supervisor_alive(data):
        raise ClusterError(f"cluster {cfg.name!r} is not running (no supervisor); start it with `clusterctl up`")
    address = (data.get("supervisor") or {}).get("control")
    return control.request(address, ledger.read_token(), command, body or {}, timeout=timeout)


def wait_ready(cfg: ClusterConfig, names: list[str], timeout: float) -> dict[str, str]:
    """Wait until each named process is running (or has failed); returns name -> state."""
    ledger = Ledger(cfg.state_path)
    deadline = time.monotonic() + timeout
    while True:
        procs = {p["name"]: p for p in (ledger.read() or {}).get("processes", [])}
        states = {n: procs.get(n, {}).get("state", "gone") for n in names}
        if all(s in ("running", "fatal", "exited", "gone") for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.1)


def client_kwargs(cfg: ClusterConfig) -> dict[str, Any]:
    """Extra distributed.Client arguments this cluster needs (e.g. security=... under TLS)."""
    from ..runtime import tls

    security = tls.client_security(cfg)
    return {"security": security} if security else {}
