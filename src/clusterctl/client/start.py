"""Starting a cluster in the background: launch its supervisor, return once it is healthy.

>>> record = start_background(load_config("cluster.yaml"))   # doctest: +SKIP
>>> record.state, record.scheduler.address
('running', 'tcp://127.0.0.1:8786')
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from ..errors import ClusterError
from ..plan.resolve import resolve
from ..runtime import handles, process
from ..runtime.handles import ForkedChild
from ..runtime.ledger import Ledger, LedgerRecord
from ..runtime.logs import tail
from ..supervisor import leftovers
from ..supervisor import main as run_supervisor
from ..supervisor.states import ChildState, ClusterState
from ..topology import ClusterConfig
from .connect import supervisor_alive
from .stop import reap_helpers, stop_from_ledger

Progress = Callable[[str], None]


class StartError(ClusterError):
    """``up`` failed; nothing of the cluster is left running."""


def start_background(cfg: ClusterConfig, progress: Progress | None = None) -> LedgerRecord:
    """Launch the supervisor as a fresh detached process; return the ledger's record once healthy.

    Raises StartError (with the cause and log tail) when start-up fails; the
    supervisor has then stopped everything it started."""
    resolve(cfg.python, cfg.bin_dir)  # fail here, before anything starts, with the PATH advice
    ledger = Ledger(cfg.state_path)
    record = ledger.read()
    if supervisor_alive(record):
        return record  # caller reports "already running"
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
        record = ledger.read() or LedgerRecord()
        mine = record.supervisor.pid == popen.pid
        state = record.state if mine else None
        if state == ClusterState.RUNNING:
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
            record = ledger.read() or LedgerRecord()
            if record.supervisor.pid == popen.pid and record.error:
                raise StartError(record.error)
            raise StartError(f"the supervisor exited with code {popen.returncode}; {log}:\n{tail(log, 15)}")
        if time.monotonic() > deadline:
            process.stop(sup, grace=cfg.timeouts.shutdown + 5, popen=popen)
            stop_from_ledger(cfg)
            raise StartError(f"the cluster was not healthy within {cfg.timeouts.startup + 30:g} s; see {log}")
        time.sleep(0.05)


def supervisor_argv(source: str) -> list[str]:
    """The background supervisor's command line for the topology file ``source``."""
    return [sys.executable, "-m", "clusterctl.supervisor", source]


def forked_supervisor(source: str, log: Path, cwd: Path) -> ForkedChild | None:
    """POSIX: fork this process into the background supervisor of ``source``.

    The same as exec'ing supervisor_argv(source) (own session, stdin from /dev/null,
    output appended to ``log``, ``cwd``, ``ps`` shows that argv) but without a second
    interpreter start and import of clusterctl: ~0.3 s of every ``up`` (scripts/bench).
    None where fork is unavailable or unsafe, or CLUSTERCTL_FORK=0; the caller then
    execs argv. Call it while this process has a single thread (before any spinner starts)."""
    if os.environ.get("CLUSTERCTL_FORK", "1") == "0" or not handles.can_fork():
        return None
    # PYTHONUNBUFFERED: as process.spawn gives an exec'd supervisor (and so its children).
    return handles.fork_detached(lambda: run_supervisor([source]), supervisor_argv(source), log, cwd,
                                 {"PYTHONUNBUFFERED": "1"})


def _progress_note(record: LedgerRecord) -> str:
    sched = next((p for p in record.processes if p.role == "scheduler"), None)
    if sched is None or sched.state != ChildState.RUNNING:
        return "starting the scheduler"
    workers = [p for p in record.processes if p.role == "worker"]
    ready = sum(p.state == ChildState.RUNNING for p in workers)
    return f"{ready}/{len(workers)} workers registered" if workers else "starting workers"
