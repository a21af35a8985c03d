"""Starting a cluster: launch its supervisor in the background and return once it is healthy, or
become it (``up --foreground``).

The supervisor is started through its entry point, ``python -m clusterctl.supervisor CONFIG``
(supervisor/__main__.py): exec'd, or on POSIX forked from this process with that entry's
function found by its name at run time (``SUPERVISOR_MAIN``). Nothing here imports the supervisor.

>>> record = start_background(load_config("cluster.yaml"))   # doctest: +SKIP
>>> record.state, record.scheduler.address
('running', 'tcp://127.0.0.1:8786')
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ..errors import ClusterError
from ..plan.resolve import resolve
from ..plan.specs import TAG_ENV, cluster_tag
from ..runtime import handles, process, registry
from ..runtime.handles import ForkedChild
from ..runtime.events import read_events
from ..runtime.ledger import Ledger, LedgerRecord, LedgerUnreadable, private_dir
from ..runtime.logs import tail
from ..runtime.remains import leftovers, strangers
from ..runtime.states import SERVING, ChildState, ClusterState
from ..topology import ClusterConfig
from .connect import supervisor_alive
from .stop import reap_helpers, stop_from_ledger

Progress = Callable[[str], None]
SUPERVISOR = "clusterctl.supervisor"  # the entry point: python -m clusterctl.supervisor CONFIG [--require-all]
SUPERVISOR_MAIN = ("clusterctl.supervisor.entry", "main")  # the function it runs, for a forked supervisor


class StartError(ClusterError):
    """``up`` failed; nothing of the cluster is left running."""


def start_background(cfg: ClusterConfig, progress: Progress | None = None, require_all: bool = False,
                     fork: bool = True) -> LedgerRecord:
    """Launch the supervisor as a fresh detached process; return the ledger's record once healthy.

    The cluster is registered (runtime/registry.py: `clusterctl list`) as its supervisor starts,
    and again when it already runs. ``fork=False`` execs the supervisor instead of forking this
    process (a library caller's interpreter, with its memory and threads, is no one to copy).

    A host that does not answer leaves the cluster `degraded` (its workers join when it does),
    unless it is required or ``require_all``. Raises StartError (with the cause and log tail)
    when start-up fails; the supervisor has then stopped everything it started.

    Over a cluster whose supervisor was SIGKILLed, the new supervisor adopts what still runs
    (supervisor/adopt.py; adoption() says what it adopted). Refused only when a process carrying
    the cluster's tag runs that the ledger does not account for."""
    resolve(cfg.python, cfg.bin_dir)  # fail here, before anything starts, with the PATH advice
    ledger = Ledger(cfg.state_path)
    try:
        record = ledger.read()
        if supervisor_alive(record):
            register(cfg)  # e.g. started before the registry existed
            return record  # type: ignore[return-value] - caller reports "already running"
        problem = leftovers(ledger)
    except LedgerUnreadable as e:
        raise StartError(str(e)) from None
    if problem:
        raise StartError(problem)
    tag = cluster_tag(cfg)
    old = record.supervisor_id if record else None
    if old is not None:  # its warm fork server may linger in its process group: never adopted
        reap_helpers(old.tagged(tag))
    live = strangers(record, process.tagged(tag), tag)
    if live:  # the ledger knows none of them (lost, or from before it was rewritten)
        pids = ", ".join(str(p.pid) for p in live[:8]) + (", ..." if len(live) > 8 else "")
        raise StartError(f"{len(live)} process(es) of cluster {cfg.name!r} still run (pid {pids}, tag {tag}); "
                         "run `clusterctl down` to stop them first")
    private_dir(cfg.state_path)  # before the first log or ledger is written there
    log = cfg.log_path / "supervisor.log"
    source, env = _source(cfg), supervisor_env(cfg)
    flags = ["--require-all"] if require_all else []
    popen = forked_supervisor(source, log, cfg.base_dir, env, flags) if fork else None
    if popen is None:
        popen = process.spawn(supervisor_argv(source, flags), log_path=log, cwd=cfg.base_dir, detach=True, env=env)
    sup = process.identify(popen)
    register(cfg)
    deadline = time.monotonic() + cfg.timeouts.startup + 30
    last = ""
    while True:
        record = _read(ledger)
        mine = record.supervisor.pid == popen.pid
        state = record.state if mine else None
        if state in SERVING:  # running, or degraded: some host did not answer (record.hosts says which)
            return record
        if progress and mine:
            note = _progress_note(record)
            if note != last:
                progress(note)
                last = note
        code = popen.poll()
        if code is not None or state == ClusterState.FAILED:
            try:
                popen.wait(timeout=cfg.timeouts.shutdown + 15)
            except Exception:  # noqa: BLE001 - it is stuck: force it, below
                process.kill_tree(sup)
            reap_helpers(sup)
            record = _read(ledger)
            if record.supervisor.pid == popen.pid and record.error:
                raise StartError(record.error)
            raise StartError(f"the supervisor exited with code {popen.returncode}; {log}:\n{tail(log, 15)}")
        if time.monotonic() > deadline:
            process.stop(sup, grace=cfg.timeouts.shutdown + 5, popen=popen)
            stop_from_ledger(cfg)
            raise StartError(f"the cluster was not healthy within {cfg.timeouts.startup + 30:g} s; see {log}")
        time.sleep(0.05)


def run_foreground(cfg: ClusterConfig, require_all: bool = False) -> int:
    """`up --foreground`: this process becomes the supervisor, ``python -m clusterctl.supervisor``
    exec'd in its place (the same pid and terminal), until the cluster stops (Ctrl-C, SIGTERM, SIGHUP,
    `down`); it prints its events, and its error if start-up fails. Registered first, so `clusterctl
    list` shows it. Where exec would not keep the process (Windows), the supervisor runs as a child
    (Ctrl-C reaches both) and its exit code is returned."""
    register(cfg)
    argv = supervisor_argv(_source(cfg), ["--require-all"] if require_all else [])
    env = {**os.environ, **supervisor_env(cfg)}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # exec drops what is still buffered
    if os.name == "posix":
        os.execve(argv[0], argv, env)
    return subprocess.call(argv, env=env)


def register(cfg: ClusterConfig) -> None:
    """Put the cluster in this user's registry. A registry that cannot be written (a read-only
    home) costs `clusterctl list` this entry, never the start."""
    try:
        registry.register(cfg.name, cfg.source, cfg.state_path)
    except OSError:
        pass


def adoption(cfg: ClusterConfig, record: LedgerRecord) -> dict[str, list[str]] | None:
    """What the supervisor of ``record`` adopted when it started, from its `adopted` event:
    {"adopted": names kept with their pids, "restarted": names it started again}; None if nothing."""
    for e in reversed(read_events(cfg.state_path / "events.jsonl", limit=10_000)):
        if e.get("process") == "cluster" and e.get("event") == "adopted" and e.get("supervisor") == record.supervisor.pid:
            return {"adopted": list(e.get("adopted") or []), "restarted": list(e.get("restarted") or [])}
    return None


def supervisor_argv(source: str, flags: list[str] | None = None) -> list[str]:
    """The supervisor's command line for the topology file ``source``."""
    return [sys.executable, "-m", SUPERVISOR, source, *(flags or [])]


def supervisor_env(cfg: ClusterConfig) -> dict[str, str]:
    """What the supervisor's environment adds: its output unbuffered, and the cluster's tag, as
    process.spawn gives an exec'd process (and so its children)."""
    return {"PYTHONUNBUFFERED": "1", TAG_ENV: cluster_tag(cfg)}


def _source(cfg: ClusterConfig) -> str:
    return str(cfg.source or "cluster.yaml")


def _supervisor_main(args: list[str]) -> int:
    """In a forked supervisor: the entry point's function, found by its name (SUPERVISOR_MAIN)."""
    module, name = SUPERVISOR_MAIN
    return getattr(importlib.import_module(module), name)(args)


def _read(ledger: Ledger) -> LedgerRecord:
    """The ledger while `up` waits: one being written is never torn (atomic), so an unreadable
    one means "no news yet" here; the deadline ends the wait."""
    try:
        return ledger.read() or LedgerRecord()
    except LedgerUnreadable:
        return LedgerRecord()


def forked_supervisor(source: str, log: Path, cwd: Path, env: dict[str, str] | None = None,
                      flags: list[str] | None = None) -> ForkedChild | None:
    """POSIX: fork this process into the background supervisor of ``source``.

    The same as exec'ing supervisor_argv(source) (own session, stdin from /dev/null,
    output appended to ``log``, ``cwd``, ``ps`` shows that argv; it runs that entry point's
    function, found by its name) but without a second interpreter start and import of the
    packages clusterctl shares with the CLI: ~0.3 s of every ``up`` (scripts/bench).
    None where fork is unavailable or unsafe, or CLUSTERCTL_FORK=0; the caller then
    execs argv. Call it while this process has a single thread (before any spinner starts).
    Its tag (in ``env``) shows in its title: a fork's /proc environment is the CLI's."""
    if os.environ.get("CLUSTERCTL_FORK", "1") == "0" or not handles.can_fork() or not _can_retitle():
        return None
    return handles.fork_detached(lambda: _supervisor_main([source, *(flags or [])]), supervisor_argv(source, flags), log,
                                 cwd, env or {"PYTHONUNBUFFERED": "1"})


def _can_retitle() -> bool:
    try:
        import setproctitle  # noqa: F401 - without it a forked supervisor could not show its tag
    except ImportError:
        return False
    return True


def _progress_note(record: LedgerRecord) -> str:
    sched = next((p for p in record.processes if p.role == "scheduler"), None)
    if sched is None or sched.state != ChildState.RUNNING:
        return "starting the scheduler"
    workers = [p for p in record.processes if p.role == "worker"]
    ready = sum(p.state == ChildState.RUNNING for p in workers)
    return f"{ready}/{len(workers)} workers registered" if workers else "starting workers"
