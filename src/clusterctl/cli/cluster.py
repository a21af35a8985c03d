"""up, down, validate (status, logs and events are in views.py)."""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..client.connect import read_record, supervisor_alive
from ..client.start import adoption, run_foreground, start_background
from ..client.status import cluster_summary
from ..client.stop import stop
from ..runtime import tuning
from ..plan.specs import TAG_ENV, build_plan, cluster_tag, dashboard_url
from ..plan.resolve import resolve
from ..remote import inventory
from ..runtime.states import ClusterState
from . import app
from .common import ConfigOption, JsonOption, config, err, format_bytes, is_terminal, out, user_errors


@app.command()
@user_errors
def up(
    file: ConfigOption = None,
    foreground: Annotated[bool, typer.Option("--foreground", help="Stay attached; Ctrl-C stops everything.")] = False,
    require_all: Annotated[bool, typer.Option("--require-all", help="Fail if any host cannot be reached "
                                              "(default: start without it, degraded)")] = False,
    as_json: JsonOption = False,
) -> None:
    """Start the cluster and return once every process is proven healthy.

    Example: clusterctl up -f cluster.yaml
    """
    cfg = config(file)
    for warning in cfg.warnings():
        err.print(f"[yellow]warning:[/] {warning}")
    if foreground:
        _foreground(cfg, require_all)
        return
    already = supervisor_alive(read_record(cfg)) is not None
    t0 = time.monotonic()
    if as_json or not is_terminal():
        record = start_background(cfg, require_all=require_all)
    else:
        spinner = _LazySpinner()
        try:
            record = start_background(cfg, progress=spinner, require_all=require_all)
        finally:
            spinner.stop()
    summary = cluster_summary(record, cfg)
    summary["adopted"] = adopted = adoption(cfg, record)
    summary["already_running"] = already
    summary["seconds"] = round(time.monotonic() - t0, 3)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    if already:
        out.print(f"cluster {cfg.name!r} is already running (supervisor pid {summary['supervisor_pid']}); nothing changed")
    else:
        out.print(f"cluster {cfg.name!r} is up in {summary['seconds']:.1f} s"
                  + (" (degraded)" if summary["state"] == ClusterState.DEGRADED else ""))
    if adopted:
        out.print(f"  adopted {len(adopted['adopted'])} running process(es) from the previous supervisor"
                  + (f"; started again: {', '.join(adopted['restarted'])}" if adopted["restarted"] else ""))
    _print_summary(summary)
    for h in summary["missing_hosts"]:  # exit 0 all the same: its workers join when it answers
        err.print(f"[yellow]warning:[/] host {h['name']} is unreachable ({escape(h['why'])}); "
                  "its workers join when it answers (`clusterctl status` shows it)")


class _LazySpinner:
    """A progress callback whose spinner (a thread) starts with the first note, i.e. after
    start_background has forked the supervisor: forking is only safe with one thread."""

    def __init__(self) -> None:
        self.status: Any = None

    def __call__(self, note: str) -> None:
        if self.status is None:
            self.status = err.status(note)
            self.status.start()
        else:
            self.status.update(note)

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()


def _print_summary(s: dict[str, Any]) -> None:
    out.print(f"  Scheduler:  {s['scheduler']}")
    out.print(f"  Dashboard:  {s['dashboard'] or '(disabled)'}")
    out.print(f"  Workers:    {s['workers']}")
    out.print(f"  Threads:    {s['threads']}")
    out.print(f"  Memory:     {format_bytes(s['memory'])}")
    out.print(f"  Logs:       {s['logs']}")


def _foreground(cfg, require_all: bool = False) -> None:
    raise typer.Exit(run_foreground(cfg, require_all=require_all))  # on POSIX it does not return: exec


@app.command()
@user_errors
def down(file: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Stop everything: retire workers, close the scheduler, then force what is left. Idempotent.

    Example: clusterctl down
    """
    cfg = config(file)
    if as_json or not is_terminal():
        result = stop(cfg)
    else:
        with err.status("stopping"):
            result = stop(cfg)
    if as_json:
        out.print_json(json.dumps(result))
    elif result["stopped"]:
        out.print(f"cluster {cfg.name!r} stopped: {result['stopped']} processes in {result['seconds']:.1f} s")
    else:
        out.print(f"cluster {cfg.name!r} is not running; nothing to stop")
    if not as_json and result.get("note"):  # e.g. what a sweep by tag stopped when the ledger was unreadable
        err.print(f"note: {result['note']}", markup=False)


STATE_STYLE = {"reachable": "green", "unreachable": "bold red", "back": "yellow", "running": "green", "degraded": "yellow", "starting": "yellow", "backoff": "yellow", "fatal": "bold red", "exited": "red", "gone": "red", "stopped": "dim"}


@app.command()
@user_errors
def validate(file: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check cluster.yaml and print the resolved plan (sized to each host), and where each tuning value comes from; starts nothing.

    Example: clusterctl validate -f cluster.yaml
    """
    cfg = config(file)
    for warning in cfg.warnings():
        err.print(f"[yellow]warning:[/] {warning}")
    launcher = resolve(cfg.python, cfg.bin_dir)
    # count: auto, memory_limit: auto, gpus: sized to each host: this machine measured here, another
    # asked over ssh (a few seconds at most; its cached inventory, else "resolved at `up`", when it
    # does not answer). Nothing is started or written.
    cfg, sizing = inventory.sized(cfg, at_up=False)
    specs = build_plan(cfg, launcher)
    defaults = tuning.apply_defaults(dict(os.environ))  # what every process gets, unless its env says otherwise
    problems: list[str] = []
    base = tuning.sources(os.environ, problems)
    groups = _group_tuning(specs)
    remote = sorted({s.at for s in specs if s.remote})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dashboard = dashboard_url(cfg)
    for line in problems + [str(w.message) for w in caught]:
        err.print(f"warning: {line}", markup=False)
    tag = cluster_tag(cfg)
    if as_json:  # env values from the topology are masked (to_dict): they may be secrets
        tuned = {"values": [t.to_dict() for t in base],
                 "groups": {g: [t.to_dict() for t in ts] for g, ts in groups.items()},
                 "remote_hosts": remote}
        out.print_json(json.dumps({"name": cfg.name, "launcher": launcher.how, "env_defaults": defaults, "tag": tag,
                                   "dashboard": dashboard, "tuning": tuned, "sizing": sizing.to_dict(),
                                   "processes": [s.to_dict() for s in specs]}, default=str))
        return
    out.print(f"{cfg.source}: valid; cluster {cfg.name!r}, {len(specs) - 1} workers")
    out.print(f"dask: {launcher.how}")
    out.print(f"state: {cfg.state_path}")
    out.print(f"dashboard: {dashboard or '(disabled)'}", markup=False)
    out.print(f"tag: {TAG_ENV}={tag} (every process carries it; `down` stops by it)", markup=False)
    if sizing.hosts:
        out.print("sized to each host (count: auto, memory_limit: auto, gpus:; docs/sizing.md):", markup=False)
    for line in sizing.lines():
        out.print(f"  {line}", markup=False)
    out.print("tuning (a group's env: beats the environment, which beats your dask config, "
              "which beats clusterctl's defaults):", markup=False)
    width = max(len(t.setting or t.key) for t in base)
    for t in base:
        out.print(f"  {t.setting or t.key:<{width}}  {t.value!s:<9} {t.source}", markup=False)
    for g, ts in groups.items():
        for t in ts:
            out.print(f"  {g}: {t.setting or t.key} = {t.value}  {t.source}", markup=False)
    for h in remote:
        out.print(f"  on host {h}: that host's own environment and dask config decide, as here "
                  "(its agent reads them there)", markup=False)
    for s in specs:
        shown = {k: v for k, v in s.to_dict()["env"].items() if k != TAG_ENV}
        shown.update(s.to_dict()["remote_env"])  # sent to the host's agent over stdin
        env = " ".join(f"{k}={v}" for k, v in shown.items())
        where = f"on {s.at}: " if s.remote else ""  # (that host resolves `dask`; an ssh carries it there)
        out.print(f"  {s.name:<14} {where}{(env + ' ') if env else ''}{' '.join(s.argv)}", markup=False)


def _group_tuning(specs: list) -> dict[str, list[tuning.Source]]:
    """The tuning values a group's env: (with its host's, on another host) sets itself, by group
    (and host, when the group's processes run on several with different env)."""
    by: dict[str, list[tuning.Source]] = {}
    for s in specs:
        found = tuning.group_sources(s.remote_env if s.remote else s.env)
        if found:
            by.setdefault(f"{s.group}@{s.at}" if s.remote else s.group, found)
    return by
