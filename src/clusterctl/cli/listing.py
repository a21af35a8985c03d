"""list: every cluster this user runs on this machine, from the registry (runtime/registry.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from ..client.connect import supervisor_alive
from ..client.status import status as cluster_status
from ..errors import ClusterError
from ..runtime import registry
from ..runtime.ledger import LedgerUnreadable
from ..topology import load_config
from . import app
from .cluster import STATE_STYLE
from .common import aligned, JsonOption, err, is_terminal, out, user_errors

HEADERS = ("name", "state", "scheduler", "workers", "config")


@app.command("list")
@user_errors
def list_clusters(as_json: JsonOption = False) -> None:
    """Show every cluster this user runs on this machine: name, state, scheduler, workers, config.

    `up` registers a cluster; entries whose cluster is gone (stopped, its state directory
    deleted) are forgotten here, and said so. Example: clusterctl list --json | jq '.clusters[].name'
    """
    kept, pruned = registry.prune()
    rows = [describe(e) for e in kept]
    forgotten = [{"name": e.name, "config": e.config, "state_dir": e.state, "why": why} for e, why in pruned]
    if as_json:
        out.print_json(json.dumps({"clusters": rows, "pruned": forgotten}))
        return
    if not rows:
        out.print("no clusters are registered for this user on this machine (`clusterctl up` registers one)")
    else:
        _table(rows)
    for f in forgotten:
        err.print(f"forgot {f['name']!r} ({f['config'] or f['state_dir']}): {f['why']}", markup=False)


def describe(entry: registry.Entry) -> dict[str, Any]:
    """One registered cluster, read live: through `status` when its cluster.yaml still leads to its
    state directory, else from its ledger alone (`note` says why)."""
    row: dict[str, Any] = {"name": entry.name, "config": entry.config, "state_dir": entry.state, "state": "starting",
                           "scheduler": None, "dashboard": None, "workers_registered": None, "workers_desired": 0,
                           "supervisor_pid": None, "note": None}
    try:
        if not entry.config:
            raise ClusterError("no cluster.yaml was recorded for it")
        cfg = load_config(entry.config)
        if cfg.state_path != Path(entry.state):
            raise ClusterError(f"{entry.config} now leads to {cfg.state_path}")
    except ClusterError as e:
        row["note"] = _first_line(str(e))
        return _from_ledger(entry, row)
    st = cluster_status(cfg, sample=0)
    row.update(state=st["state"], scheduler=st["scheduler"]["address"], dashboard=st["dashboard"],
               workers_registered=st["workers_registered"], workers_desired=st["workers_expected"],
               supervisor_pid=st["supervisor"]["pid"], note=_first_line(st.get("error")))
    return row


def _first_line(text: str | None) -> str | None:
    return text.splitlines()[0] if text and text.strip() else None


def _from_ledger(entry: registry.Entry, row: dict[str, Any]) -> dict[str, Any]:
    try:
        record = entry.ledger().read()
    except LedgerUnreadable as e:
        row.update(state="unknown", note=f"{row['note']}; {e.path} cannot be read")
        return row
    if record is None:
        return row  # a moment after `up`, before its ledger: starting
    alive = supervisor_alive(record) is not None
    row.update(state=record.state if alive else "unsupervised", scheduler=record.scheduler.address,
               dashboard=record.scheduler.dashboard, supervisor_pid=record.supervisor.pid,
               workers_desired=sum(p.role == "worker" for p in record.processes))
    return row


def _table(rows: list[dict[str, Any]]) -> None:
    cells = []
    for r in rows:
        registered = "?" if r["workers_registered"] is None else str(r["workers_registered"])
        cells.append((r["name"], r["state"], r["scheduler"] or "-", f"{registered}/{r['workers_desired']}",
                      r["config"] or r["state_dir"]))
    if is_terminal():
        table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
        for col in HEADERS:
            table.add_column(col, no_wrap=col != "config")
        for c in cells:
            style = STATE_STYLE.get(c[1])
            shown = [escape(v) for v in c]
            table.add_row(shown[0], f"[{style}]{shown[1]}[/]" if style else shown[1], *shown[2:])
        out.print(table)
    else:  # piped: plain aligned text, never cut to a terminal width
        for line in aligned([list(HEADERS), *cells]):
            print(line)
    for r in rows:
        if r["note"]:
            out.print(f"  {r['name']}: {r['note']}", markup=False)
