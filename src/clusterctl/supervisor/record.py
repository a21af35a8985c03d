"""What the supervisor writes to the ledger, and serves as metrics: the cluster, its processes and its hosts, as now."""

from __future__ import annotations

from typing import Any, Callable

from ..plan.specs import dashboard_url
from ..runtime import metrics, process
from ..runtime.events import EventLog
from ..runtime.ledger import HostRecord, HostWorkers, Ledger, LedgerRecord, SchedulerRecord, SupervisorRecord
from ..topology import LOCAL_HOST, ClusterConfig
from .hosts import Host


def snapshot(cfg: ClusterConfig, core: Any, state: str, watch: Any, error: str | None, control: str | None,
             metrics_url: str | None = None) -> LedgerRecord:
    me = process.identify_self()
    http_port = watch.http_port
    return LedgerRecord(
        name=cfg.name, config=str(cfg.source) if cfg.source else None,
        state=state, error=error,
        supervisor=SupervisorRecord(pid=me.pid, create_time=me.create_time, control=control, metrics=metrics_url),
        scheduler=SchedulerRecord(address=watch.address, dashboard=dashboard_url(cfg, http_port), http_port=http_port),
        processes=[c.record() for c in list(core.children.values())],
        hosts=hosts(cfg, core),
        adaptive={name: g.to_dict() for name, g in list(core.adapter.groups.items())},
    )


def hosts(cfg: ClusterConfig, core: Any) -> list[HostRecord]:
    """The head first (`localhost`), then each remote host; each with its owner and hours, if policed."""
    yields = core.owners.status() if core.owners else {}
    head = Host(LOCAL_HOST, "localhost", since=None)  # type: ignore[arg-type]
    out = [host_record(h, core, yields.get(h.name)) for h in [head, *list(core.fleet.hosts.values())]]
    return out


def host_record(h: Host, core: Any, owner: dict[str, Any] | None = None) -> HostRecord:
    mine = [c for c in list(core.children.values()) if c.spec.at == h.name and c.spec.role == "worker"]
    o = owner or {}
    return HostRecord(name=h.name, address=h.address, state=h.state.value, since=h.since, last_error=h.last_error,
                      workers=HostWorkers(desired=sum(c.name in core.desired for c in mine),
                                          running=sum(c.state == "running" for c in mine)),
                      owner=o.get("owner"), owner_why=o.get("owner_why") or "", schedule=o.get("schedule"),
                      mode=o.get("workers") or "run", yield_reason=o.get("yield_reason") or "")


def serve_metrics(snapshot: Callable[[], LedgerRecord], events: EventLog) -> metrics.MetricsServer | None:
    """The metrics page on a free loopback port; if it cannot bind, one event and the cluster runs without."""
    try:
        return metrics.serve(snapshot)
    except OSError as e:
        events.emit("cluster", "metrics-failed", f"no metrics page: {e}")
        return None


def save(ledger: Ledger, core: Any, current: Callable[[], LedgerRecord]) -> None:
    """Write the record now; a full disk must not end supervision: it is written again at the next tick."""
    try:
        ledger.write(current())
        core.saved(True)
    except OSError as e:
        core.saved(False)
        core.errors.log("ledger", e)
