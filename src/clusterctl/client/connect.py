"""Reaching a running cluster: its ledger, its supervisor, its scheduler, its logs.

>>> cfg = load_config("cluster.yaml")                              # doctest: +SKIP
>>> Client(client_address(cfg), **client_kwargs(cfg))
>>> ask(cfg, AddRequest.of(count=2)).added                       # runtime/requests.py
['default-3', 'default-4']
>>> ask_supervisor(cfg, "add", {"count": 2})["added"]
['default-5', 'default-6']
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import ClusterError
from ..runtime import control, replies
from ..runtime.ledger import Ledger, LedgerRecord
from ..runtime.probes import SchedulerProbe
from ..runtime.process import ProcessId
from ..runtime.requests import Request, parse
from ..runtime.states import SERVING, ChildState
from ..topology import ClusterConfig

GONE = "gone"  # wait_ready's word for a name the ledger does not (or no longer) hold
SETTLED = frozenset({ChildState.RUNNING, ChildState.FATAL, ChildState.EXITED, ChildState.YIELDED, GONE})


def read_record(cfg: ClusterConfig) -> LedgerRecord:
    """The cluster's ledger record; an empty one (nothing runs) when there is none.
    Raises LedgerUnreadable (a ClusterError) when ledger.json is there but unreadable."""
    return Ledger(cfg.state_path).read() or LedgerRecord()


def supervisor_alive(record: LedgerRecord | None) -> ProcessId | None:
    """The recorded supervisor, if that very process still runs."""
    sup = record.supervisor_id if record else None
    return sup if sup and sup.alive() else None


def client_address(cfg: ClusterConfig) -> str:
    """The scheduler address a Client on this machine should use."""
    record = read_record(cfg)
    address = record.scheduler.address
    if not address or record.state not in SERVING:
        raise ClusterError(f"cluster {cfg.name!r} is not running; start it with `clusterctl up`", exit_code=1)
    return address


def client_kwargs(cfg: ClusterConfig) -> dict[str, Any]:
    """Extra distributed.Client arguments this cluster needs (e.g. security=... under TLS)."""
    from ..runtime import tls

    security = tls.client_security(cfg)
    return {"security": security} if security else {}


def ask(cfg: ClusterConfig, request: Request, timeout: float = 120) -> Any:
    """Send one request (runtime/requests.py) to this cluster's running supervisor; its typed answer
    (runtime/replies.py). ClusterError when the supervisor is not running or refuses."""
    ledger = Ledger(cfg.state_path)
    record = ledger.read()
    if record is None or not supervisor_alive(record):
        raise ClusterError(f"cluster {cfg.name!r} is not running (no supervisor); start it with `clusterctl up`")
    return send(record.supervisor.control, ledger.read_token(), request, timeout)


def send(address: str | None, token: str | None, request: Request, timeout: float = 120) -> Any:
    """One request to the control channel at ``address``; the supervisor's typed answer."""
    data = control.request(address, token, request.command, request.body(), timeout=timeout)  # type: ignore[arg-type]
    return replies.read(request.command, data)


def ask_supervisor(cfg: ClusterConfig, command: str, body: dict[str, Any] | None = None, timeout: float = 120) -> dict[str, Any]:
    """Send one command over the control channel to this cluster's running supervisor; its answer
    as a plain dict. The body is checked first, as the supervisor checks it (a one-line ClusterError)."""
    return replies.as_dict(ask(cfg, parse(command, body or {}), timeout))


def wait_ready(cfg: ClusterConfig, names: list[str], timeout: float) -> dict[str, str]:
    """Wait until each named process is running (or has failed); returns name -> state."""
    ledger = Ledger(cfg.state_path)
    deadline = time.monotonic() + timeout
    while True:
        record = ledger.read() or LedgerRecord()
        states = {n: p.state if (p := record.process(n)) else GONE for n in names}
        if all(s in SETTLED for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.1)


def scheduler_probe(cfg: ClusterConfig, record: LedgerRecord | None = None) -> SchedulerProbe:
    """The scheduler's HTTP port where it really listens: this machine, or the fleet host
    named by `scheduler.at` (whose address `scheduler.host` then holds). ``record`` is the
    ledger's, for a port chosen at `up` (port 0, local schedulers only)."""
    if record is None:
        record = read_record(cfg)
    return SchedulerProbe(cfg.scheduler.host, record.scheduler.http_port or cfg.scheduler.dashboard_port)


def log_file(cfg: ClusterConfig, name: str) -> Path:
    """The log of the process ``name`` (or of the supervisor)."""
    if name == "supervisor":
        return cfg.log_path / "supervisor.log"
    record = read_record(cfg)
    p = record.process(name)
    if p is not None and p.log:
        return Path(p.log)
    candidate = cfg.log_path / f"{name}.log"
    if candidate.exists():
        return candidate
    names = [p.name for p in record.processes] + ["supervisor"]
    raise ClusterError(f"no process named {name!r}; known: {', '.join(names)}")
