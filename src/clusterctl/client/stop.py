"""Stopping a cluster: through its supervisor when it answers, else from the ledger.

>>> stop(load_config("cluster.yaml"))       # doctest: +SKIP
{'stopped': 4, 'seconds': 1.07, 'how': 'supervisor'}
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import ClusterError
from ..runtime import control, process
from ..runtime.ledger import Ledger
from ..runtime.process import ProcessId
from ..supervisor.states import DOWN, ChildState, ClusterState
from ..topology import ClusterConfig
from .connect import supervisor_alive


def stop(cfg: ClusterConfig) -> dict[str, Any]:
    """Stop everything: through the supervisor if it answers, else from the ledger. Idempotent."""
    ledger = Ledger(cfg.state_path)
    record = ledger.read()
    t0 = time.monotonic()
    if record is None:
        return {"stopped": 0, "seconds": 0.0, "how": "nothing to stop"}
    running = [p for p, pid in record.process_ids() if pid.alive()]
    sup = supervisor_alive(record)
    how = "ledger"
    if sup:
        try:
            control.request(record.supervisor.control, ledger.read_token(), "stop", timeout=5)
            # Poll rather than wait(): an exited supervisor may stay a zombie until
            # init reaps it, and ProcessId.alive() already counts a zombie as gone.
            deadline = time.monotonic() + cfg.timeouts.shutdown * 2 + 15
            while sup.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            how = "supervisor"
        except ClusterError:
            pass  # not answering: stop_from_ledger forces it below
    stop_from_ledger(cfg)
    recorded = record.supervisor_id
    if recorded:  # also after a SIGKILLed supervisor: its fork server may linger in its group
        reap_helpers(recorded)
    return {"stopped": len(running), "seconds": round(time.monotonic() - t0, 3), "how": how}


def reap_helpers(sup: ProcessId) -> None:
    """The supervisor's helpers (the warm fork server) share its process group and leave a
    moment after it: wait for them briefly, then force, so `up`/`down` return with nothing left."""
    if not sup.alive():
        process.stop_many([(sup, None)], grace=2.0)


def stop_from_ledger(cfg: ClusterConfig) -> None:
    """Stop whatever the ledger names (matching create times only): workers, then scheduler;
    then record them, and the cluster, as stopped."""
    ledger = Ledger(cfg.state_path)
    record = ledger.read()  # our own copy: marked below, then written back
    if record is None:
        return
    sup = supervisor_alive(record)
    if sup:
        process.stop(sup, grace=cfg.timeouts.shutdown)
    entries = record.process_ids()
    workers = [(p, pid) for p, pid in entries if p.role != "scheduler"]
    scheds = [(p, pid) for p, pid in entries if p.role == "scheduler"]
    changed = False
    for group in (workers, scheds):
        targets = [(pid, None) for _, pid in group]
        for (p, _), result in zip(group, process.stop_many(targets, cfg.timeouts.shutdown)):
            if result != "gone" or p.state not in DOWN:
                p.state = ChildState.STOPPED
                changed = True
    if changed or record.state not in (ClusterState.STOPPED, ClusterState.FAILED):
        if record.state != ClusterState.FAILED:
            record.state = ClusterState.STOPPED
        ledger.write(record)
    if cfg.remote_hosts():  # a killed supervisor's remote processes: the agents' sweep (fleet issue)
        from ..remote import fleet

        fleet.shutdown(cfg)
