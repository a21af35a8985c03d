"""Stopping a cluster: through its supervisor when it answers, else from the ledger, then by tag.

>>> stop(load_config("cluster.yaml"))       # doctest: +SKIP
{'stopped': 4, 'seconds': 1.07, 'how': 'supervisor'}

Nothing is signalled unless it is provably this cluster's: a ledger pid only when its
create time matches and it carries the cluster's tag (runtime/process.py). Last, every
process of this user still carrying the tag is stopped, which is also how `down` works
when ledger.json cannot be read.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import ClusterError
from ..plan.specs import cluster_tag
from ..runtime import process
from ..runtime.ledger import Ledger, LedgerRecord, LedgerUnreadable
from ..runtime.process import ProcessId
from ..runtime.requests import StopRequest
from ..runtime.states import DOWN, ChildState, ClusterState
from ..topology import ClusterConfig
from .connect import send, supervisor_alive


def stop(cfg: ClusterConfig) -> dict[str, Any]:
    """Stop everything: through the supervisor if it answers, else from the ledger; then sweep
    this machine by tag. Idempotent."""
    ledger = Ledger(cfg.state_path)
    tag = cluster_tag(cfg)
    t0 = time.monotonic()
    try:
        record = ledger.read()
    except LedgerUnreadable as e:
        swept = sweep(cfg)
        note = f"{e.path} cannot be read ({e.why}): stopped {swept} process(es) carrying tag {tag}"
        if not process.tagged(tag):
            note += f"; the unreadable ledger is now {ledger.set_aside()}"
        return {"stopped": swept, "seconds": round(time.monotonic() - t0, 3), "how": "tag", "note": note}
    if record is None:
        swept = sweep(cfg)
        how = "tag" if swept else "nothing to stop"
        return {"stopped": swept, "seconds": round(time.monotonic() - t0, 3), "how": how}
    running = [p for p, pid in _ids(record, tag) if pid.alive()]
    sup = supervisor_alive(record)
    how = "ledger"
    if sup:
        try:
            send(record.supervisor.control, ledger.read_token(), StopRequest(), timeout=5)
            # Poll rather than wait(): an exited supervisor may stay a zombie until
            # init reaps it, and ProcessId.alive() already counts a zombie as gone.
            deadline = time.monotonic() + cfg.timeouts.shutdown * 2 + 15
            while sup.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            how = "supervisor"
        except ClusterError:
            pass  # not answering: stop_from_ledger forces it below
    stop_from_ledger(cfg, remote=how != "supervisor")  # a supervisor that stopped swept its hosts itself
    recorded = record.supervisor_id
    if recorded:  # also after a SIGKILLed supervisor: its fork server may linger in its group
        reap_helpers(recorded.tagged(tag))
    left = process.stop_tagged(tag, grace=1.0)  # what escaped both (e.g. a child in its own session)
    result: dict[str, Any] = {"stopped": len(running) + left, "seconds": round(time.monotonic() - t0, 3), "how": how}
    if left:
        result["note"] = f"{left} process(es) carrying tag {tag} outside the ledger's trees were stopped"
    return result


def sweep(cfg: ClusterConfig) -> int:
    """Stop every process of this user carrying this cluster's tag, here and (through their
    agents) on its other hosts; returns how many were stopped here."""
    n = process.stop_tagged(cluster_tag(cfg), grace=cfg.timeouts.shutdown)
    if cfg.remote_hosts():
        from ..remote import fleet

        fleet.shutdown(cfg)
    return n


def _ids(record: LedgerRecord, tag: str) -> list[tuple[Any, ProcessId]]:
    """The ledger's processes with identities that must carry this cluster's tag."""
    return [(p, pid.tagged(tag)) for p, pid in record.process_ids()]


def reap_helpers(sup: ProcessId) -> None:
    """The supervisor's helpers (the warm fork server) share its process group and leave a
    moment after it: wait for them briefly, then force, so `up`/`down` return with nothing left."""
    if not sup.alive():
        process.stop_many([(sup, None)], grace=2.0)


def stop_from_ledger(cfg: ClusterConfig, remote: bool = True) -> None:
    """Stop whatever the ledger names (matching create time and tag only): workers, then
    scheduler; then record them, and the cluster, as stopped."""
    ledger = Ledger(cfg.state_path)
    tag = cluster_tag(cfg)
    try:
        record = ledger.read()  # our own copy: marked below, then written back
    except LedgerUnreadable:
        sweep(cfg)
        return
    if record is None:
        return
    sup = supervisor_alive(record)
    if sup:
        process.stop(sup.tagged(tag), grace=cfg.timeouts.shutdown)
    entries = _ids(record, tag)
    workers = [(p, pid) for p, pid in entries if p.role != "scheduler"]
    scheds = [(p, pid) for p, pid in entries if p.role == "scheduler"]
    changed = False
    for group in (workers, scheds):
        targets = [(pid, None) for _, pid in group]
        for (p, _), result in zip(group, process.stop_many(targets, cfg.timeouts.shutdown)):
            if result != process.StopResult.GONE or p.state not in DOWN:
                p.state = ChildState.STOPPED
                changed = True
    if changed or record.state not in (ClusterState.STOPPED, ClusterState.FAILED):
        if record.state != ClusterState.FAILED:
            record.state = ClusterState.STOPPED
        ledger.write(record)
    if remote and cfg.remote_hosts():  # a killed supervisor's remote processes: the agents' sweep
        from ..remote import fleet

        fleet.shutdown(cfg)
