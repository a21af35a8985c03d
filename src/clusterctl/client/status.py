"""What runs and how it fares: ledger facts, psutil figures, and the scheduler's own view.

>>> st = status(load_config("cluster.yaml"))      # doctest: +SKIP
>>> st["state"], st["workers_registered"]
('running', 3)
"""

from __future__ import annotations

import time
from typing import Any

import psutil

from ..plan.specs import cluster_tag
from ..runtime import process
from ..runtime.ledger import Ledger, LedgerRecord, LedgerUnreadable
from ..runtime.states import ChildState, ClusterState
from ..topology import LOCAL_HOST, ClusterConfig
from .connect import scheduler_probe, supervisor_alive

# States only a report has: the ledger's own are ChildState and ClusterState values.
NOT_RUNNING = "not-running"  # no ledger, or nothing of it alive and no supervisor
UNSUPERVISED = "unsupervised"  # processes alive, their supervisor gone
GONE = "gone"  # a process the ledger calls live, with no supervisor and no process left
UNKNOWN = "unknown"  # ledger.json is there but unreadable: `down` stops what carries the tag

PROCESS_FIELDS = ("name", "role", "group", "host", "at", "pid", "state", "restarts", "exit_code", "reason", "log")


def status(cfg: ClusterConfig, sample: float = 0.2) -> dict[str, Any]:
    """Live status: ledger facts enriched with psutil figures and the scheduler's own view."""
    try:
        record = Ledger(cfg.state_path).read()
    except LedgerUnreadable as e:
        tagged = process.tagged(cluster_tag(cfg))
        return {**_empty(cfg), "state": UNKNOWN, "tagged": len(tagged),
                "error": f"{e}; {len(tagged)} process(es) here carry it"}
    if record is None:
        return _empty(cfg)
    sup = supervisor_alive(record)
    ident = scheduler_probe(cfg, record).identity(timeout=1.0) if record.state != ClusterState.STOPPED else None
    answering = ident is not None
    ident = ident or {}
    registered = dict(ident.get("workers") or {})
    live: dict[str, psutil.Process] = {}
    procs_out = []
    for p in record.processes:
        entry: dict[str, Any] = {k: getattr(p, k) for k in PROCESS_FIELDS}
        pid = p.process_id
        proc = pid.get() if pid else None
        entry["alive"] = proc is not None
        if proc is not None:
            live[p.name] = proc
        elif p.state in (ChildState.RUNNING, ChildState.STARTING):
            entry["state"] = ChildState.EXITED.value if sup else GONE
        entry["registered"] = p.name in registered if p.role == "worker" else None
        entry["address"] = registered.get(p.name, {}).get("address") or p.address
        procs_out.append(entry)
    _add_usage(procs_out, live, sample)
    known = {p["name"] for p in procs_out}
    external = [{"name": n, "address": w["address"], "nthreads": w.get("nthreads")} for n, w in registered.items() if n not in known]
    state = record.state
    if not sup and state not in (ClusterState.STOPPED, ClusterState.FAILED):
        state = UNSUPERVISED if any(p["alive"] for p in procs_out) else NOT_RUNNING
    return {
        "name": record.name or cfg.name,
        "state": state,
        "config": record.config,
        "error": record.error,
        "scheduler": {"address": record.scheduler.address, "answering": answering,
                      "at": cfg.scheduler.at or LOCAL_HOST, "host": cfg.scheduler.host},
        "dashboard": record.scheduler.dashboard,
        "metrics": record.supervisor.metrics if sup else None,  # the supervisor serves it: gone with it
        "workers_registered": len(registered),
        "workers_expected": sum(1 for p in procs_out if p["role"] == "worker"),
        "threads": ident.get("total_threads"),
        "memory": ident.get("total_memory"),
        "supervisor": {"pid": record.supervisor.pid, "alive": sup is not None},
        "processes": procs_out,
        "external": external,
        "hosts": hosts(record),
        "adaptive": dict(record.adaptive),
    }


def hosts(record: LedgerRecord) -> list[dict[str, Any]]:
    """The remote hosts: name, address, state (reachable, unreachable, back), since, last error,
    workers desired / running."""
    return [h.model_dump() for h in record.hosts]


def _empty(cfg: ClusterConfig) -> dict[str, Any]:
    return {"name": cfg.name, "state": NOT_RUNNING, "processes": [], "workers_registered": 0, "workers_expected": 0,
            "scheduler": {"address": None, "answering": False}, "dashboard": None, "metrics": None, "external": [],
            "supervisor": {"pid": None, "alive": False}, "hosts": []}


def cluster_summary(record: LedgerRecord, cfg: ClusterConfig) -> dict[str, Any]:
    """What the walkthrough's Client repr shows: address, dashboard, workers, threads, memory."""
    ident = scheduler_probe(cfg, record).identity(timeout=2.0) or {}
    return {
        "scheduler": record.scheduler.address,
        "dashboard": record.scheduler.dashboard,
        "metrics": record.supervisor.metrics,
        "workers": ident.get("n_workers", len(ident.get("workers") or {})),
        "threads": ident.get("total_threads"),
        "memory": ident.get("total_memory"),
        "supervisor_pid": record.supervisor.pid,
        "logs": str(cfg.log_path),
        "state": record.state,
        "missing_hosts": [{"name": h.name, "why": h.last_error} for h in record.hosts if h.state == "unreachable"],
    }


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
