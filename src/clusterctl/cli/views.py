"""status [--watch], logs [NAME | --all] [-f], events [-f]: looking at a cluster, once or live.

Followers (`status --watch`, `logs -f`, `events -f`) end with Ctrl-C, exit 0 and no
traceback. `status --watch` without a terminal prints a plain snapshot every interval (a
`--- HH:MM:SS` line first) instead of redrawing; `logs --all` prints no colour without a
terminal or with NO_COLOR set.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Annotated, Any, Iterable, Optional

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..client.connect import log_file
from ..client.follow import Entry, FileFollower, LogMerger, cluster_sources, merge, rounds
from ..client.status import NOT_RUNNING, UNSUPERVISED
from ..client.status import status as cluster_status
from ..errors import ClusterError
from ..runtime.ledger import Ledger
from ..runtime.states import ChildState, ClusterState
from . import app
from .cluster import STATE_STYLE
from .common import aligned, ConfigOption, FileOnlyOption, JsonOption, config, format_bytes, is_terminal, out, user_errors

RUNNING = (ClusterState.RUNNING, ClusterState.DEGRADED, ClusterState.STARTING, ClusterState.STOPPING)
ENDED = (ClusterState.STOPPED, ClusterState.FAILED, NOT_RUNNING)  # what --watch stops at
POLL = 0.25  # seconds between reads of the followed files
RECENT_EVENTS = 6  # shown under the live table
LinesOption = Annotated[int, typer.Option("-n", "--lines", "--tail", help="Lines to show (per process with --all).")]
FollowOption = Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines; Ctrl-C ends.")]


@app.command()
@user_errors
def status(
    file: ConfigOption = None,
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Live view, redrawn every interval; Ctrl-C ends.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes of --watch.")] = 1.0,
) -> None:
    """Show processes, pids, states, restarts, memory, CPU and registered workers. Exit 3 when not running.

    Example: clusterctl status --json | jq .workers_registered ; clusterctl status --watch
    """
    cfg = config(file)
    if watch:
        _watch(cfg, interval, as_json)
        return
    st = cluster_status(cfg)
    if as_json:
        out.print_json(json.dumps(st))
    else:
        for item in status_view(st, is_terminal()):
            out.print(item)
    raise typer.Exit(0 if st["state"] in RUNNING else 3)


def status_view(st: dict[str, Any], colour: bool) -> list[RenderableType]:
    """The status report as renderables: title, summary, the process table, hosts, reasons."""
    title = f"cluster {st['name']!r}: {st['state']}"
    if st["state"] == UNSUPERVISED:
        title += " (the supervisor is gone; `clusterctl down` stops what is left)"
    items: list[RenderableType] = [Text(title, style="bold" if colour else "")]
    if st["state"] == NOT_RUNNING and not st["processes"]:
        return items
    sched = st["scheduler"]
    items.append(Text(f"  scheduler {sched['address']}  dashboard {st['dashboard'] or '-'}  "
                      f"workers {st['workers_registered']}/{st['workers_expected']}  threads {st.get('threads') or '-'}  "
                      f"memory {format_bytes(st.get('memory'))}  supervisor pid {st['supervisor']['pid']}"))
    if st.get("metrics"):
        items.append(Text(f"  metrics {st['metrics']}"))
    for group, a in (st.get("adaptive") or {}).items():
        items.append(Text(f"  adaptive {group}: {a['minimum']}-{a['maximum']} workers, "
                          f"target {a['target'] if a['target'] is not None else '-'} ({a['reason']})"))
    headers = ("name", "role", "group", "host", "pid", "state", "restarts", "rss", "cpu%", "registered")
    rows = []
    externals = [dict(name=e["name"], role="worker", group="external", host=e["address"], pid=None, state="external",
                      restarts=None, rss=None, cpu=None, registered=True) for e in st["external"]]
    for p in st["processes"] + externals:
        reg = "-" if p.get("registered") is None else ("yes" if p["registered"] else "no")
        rows.append((p["name"], p["role"], p["group"], p["host"], str(p["pid"] or "-"), p["state"] or "-",
                     str(p["restarts"] if p["restarts"] is not None else "-"),
                     format_bytes(p["rss"]) if p.get("rss") else "-",
                     f"{p['cpu']:.1f}" if p.get("cpu") is not None else "-", reg))
    if colour:
        table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
        for col in headers:
            table.add_column(col, justify="right" if col in ("pid", "restarts", "rss", "cpu%") else "left", no_wrap=True)
        for row in rows:
            table.add_row(*row[:5], Text(row[5], style=STATE_STYLE.get(row[5], "")), *row[6:])
        items.append(table)
    else:  # piped: plain aligned text, never cut to a terminal width
        items += [Text(line) for line in aligned([list(headers), *rows])]
    items += _hosts_view(st.get("hosts") or [], colour)
    for p in st["processes"]:
        if p["state"] in (ChildState.FATAL, ChildState.BACKOFF, ChildState.WAITING) and p.get("reason"):  # why
            items.append(Text(f"  {p['name']}: {p['reason']} (see `clusterctl logs {p['name']}`)"))
    if st.get("error"):
        items.append(Text(f"  error: {st['error'].splitlines()[0]}"))
    return items


def _hosts_view(hosts: list[dict[str, Any]], colour: bool) -> list[Text]:
    """The fleet: name, address, state, since, workers running / desired, and why when unreachable;
    the owner and the hours where a host has them (the head is listed only then, or with a fleet)."""
    shown = [h for h in hosts if h["name"] != "localhost" or h.get("owner") or h.get("schedule") or len(hosts) > 1]
    if not shown:
        return []
    items = [Text("  hosts:")]
    for h in shown:
        since = time.strftime("%H:%M:%S", time.localtime(h["since"])) if h.get("since") else "-"
        line = Text(f"    {h['name']:<12} {h['address']:<16} ")
        line.append(f"{h['state']:<12}", style=STATE_STYLE.get(h["state"], "white") if colour else "")
        line.append(f" since {since}  workers {h['workers']['running']}/{h['workers']['desired']}")
        if h.get("last_error"):
            line.append(f"  {h['last_error']}")
        items.append(line)
        extra = []
        if h.get("owner"):
            extra.append(f"owner: {h['owner']}" + (f" ({h['owner_why']})" if h.get("owner_why") else ""))
        if h.get("schedule"):
            sched = h["schedule"]
            extra.append(f"hours: {sched['hours']} ({'inside' if sched['inside'] else 'outside'})")
        if h.get("mode") and h["mode"] != "run":
            extra.append(f"workers {h['mode']}: {h.get('yield_reason') or ''}".rstrip(": "))
        if extra:
            items.append(Text("      " + "; ".join(extra)))
    return items


def _watch(cfg, interval: float, as_json: bool) -> None:
    """Redraw the status every ``interval`` until the cluster stops (exit 0) or Ctrl-C (exit 0)."""
    if not 0.1 <= interval <= 3600:
        raise ClusterError(f"--interval must be between 0.1 and 3600 seconds, not {interval:g}", exit_code=2)
    sample = min(0.2, interval / 4)  # the CPU sample of each refresh
    events_path = Ledger(cfg.state_path).root / "events.jsonl"
    mode = "json" if as_json else ("live" if is_terminal() else "plain")
    try:
        st = cluster_status(cfg, sample=sample)
        if st["state"] in ENDED:
            raise ClusterError(f"cluster {cfg.name!r} is not running (state {st['state']}); start it with `clusterctl up`",
                               exit_code=3)
        with Live(console=out, auto_refresh=False) if mode == "live" else contextlib.nullcontext() as live:
            while True:
                started = time.monotonic()
                _show(mode, live, st, interval, events_path)
                if st["state"] in ENDED:
                    break
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
                st = cluster_status(cfg, sample=sample)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    if mode == "json":
        return
    if st["state"] == ClusterState.FAILED:
        raise ClusterError(f"cluster {cfg.name!r} failed: {(st.get('error') or 'see `clusterctl logs supervisor`').splitlines()[0]}")
    out.print(f"cluster {cfg.name!r} stopped", markup=False)


def _show(mode: str, live: Live | None, st: dict[str, Any], interval: float, events_path) -> None:
    if mode == "json":
        _write([json.dumps(st, default=str)])
        return
    now = time.strftime("%H:%M:%S")
    if mode == "plain" or live is None:
        out.print(f"--- {now}", markup=False)
        for item in status_view(st, colour=False):
            out.print(item)
        return
    items = status_view(st, colour=True)
    items.insert(1, Text(f"  {now}, every {interval:g} s; Ctrl-C to quit", style="dim"))
    recent = [_event_line(r, "%H:%M:%S") for r in _last_events(events_path, RECENT_EVENTS)]
    if recent:
        items += [Text("  recent events:")] + [Text(f"    {line}", style="dim") for line in recent]
    live.update(Group(*items), refresh=True)


@app.command()
@user_errors
def logs(
    name: Annotated[Optional[str], typer.Argument(help="Process name (scheduler, default-0, supervisor, ...)")] = None,
    file: FileOnlyOption = None,
    lines: LinesOption = 40,
    follow: FollowOption = False,
    every: Annotated[bool, typer.Option("--all", "-a", help="Every process's log, merged in time order.")] = False,
) -> None:
    """Show a process's log, or every process's log merged in time order (--all).

    Example: clusterctl logs default-0 -n 100 --follow ; clusterctl logs --all -f --tail 10
    """
    if (name is None) == (not every):
        raise ClusterError("name one process (scheduler, default-0, supervisor, ...) or give --all, not both"
                           if every else "name a process (scheduler, default-0, supervisor, ...) or give --all", exit_code=2)
    if lines < 0:
        raise ClusterError(f"--lines must be 0 or more, not {lines}", exit_code=2)
    cfg = config(file)
    try:
        if every:
            _all_logs(cfg, lines, follow)
            return
        path = log_file(cfg, name)  # type: ignore[arg-type]
        if not follow and not path.exists():
            raise ClusterError(f"{name} has no log yet ({path})")
        follower = FileFollower(path)
        _write(follower.tail(lines))
        if not follow:
            _write(follower.flush())
            return
        for batch in rounds(follower.poll, interval=POLL):
            _write(batch)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _all_logs(cfg, lines: int, follow: bool) -> None:
    merger = LogMerger(cluster_sources(cfg))
    first = merger.start(lines)
    if not follow and not any(f.ident for f, _ in merger.files.values()):
        raise ClusterError(f"cluster {cfg.name!r} has no logs yet ({cfg.log_path})")
    prefix = _Prefixes(merger.order, colour=_colour())
    if not follow:  # with each file's unfinished last line, in its place
        _write(prefix.lines(merge([first, merger.flush()])))
        return
    _write(prefix.lines(first))
    for batch in rounds(merger.poll, interval=POLL):
        _write(prefix.lines(batch))


PALETTE = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")  # as docker compose: cyan, yellow, green, ...


class _Prefixes:
    """``name | `` before each line, names padded to the longest seen, each its own colour."""

    def __init__(self, names: Iterable[str], colour: bool):
        self.colour = colour
        self.codes: dict[str, str] = {}
        self.width = 0
        for n in names:
            self._know(n)

    def _know(self, name: str) -> str:
        if name not in self.codes:
            self.codes[name] = PALETTE[len(self.codes) % len(PALETTE)]
            self.width = max(self.width, len(name))
        return self.codes[name]

    def lines(self, entries: list[Entry]) -> list[str]:
        out = []
        for e in entries:
            code = self._know(e.name)
            label = f"{e.name:<{self.width}} |"
            out.append(f"\x1b[{code}m{label}\x1b[0m {e.text}" if self.colour else f"{label} {e.text}")
        return out


def _colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


@app.command()
@user_errors
def events(
    file: FileOnlyOption = None,
    lines: Annotated[int, typer.Option("-n", "--lines", "--tail", help="Events to show.")] = 50,
    as_json: JsonOption = False,
    follow: FollowOption = False,
) -> None:
    """Show the supervisor's event log: started, ready, exited, restarting, fatal, stopped.

    Example: clusterctl events -n 20 ; clusterctl events -f --json | jq .event
    """
    if lines < 0:
        raise ClusterError(f"--lines must be 0 or more, not {lines}", exit_code=2)
    cfg = config(file)
    follower = FileFollower(Ledger(cfg.state_path).root / "events.jsonl")
    show = (lambda r: json.dumps(r)) if as_json else _event_line
    try:
        _write(show(r) for r in _parse(follower.tail(lines)))
        if follow:
            for batch in rounds(follower.poll, interval=POLL):
                _write(show(r) for r in _parse(batch))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _parse(lines: Iterable[str]) -> list[dict[str, Any]]:
    found = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if isinstance(record, dict):
            found.append(record)
    return found


def _event_line(r: dict[str, Any], fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    try:
        stamp = time.strftime(fmt, time.localtime(float(r.get("time") or 0)))
    except (TypeError, ValueError, OverflowError):
        stamp = "-"
    return f"{stamp}  {r.get('process', '-')!s:<14} {r.get('event', '-')!s:<12} {r.get('detail', '')}"


def _last_events(path, n: int) -> list[dict[str, Any]]:
    return _parse(FileFollower(path).tail(n))


def _write(lines: Iterable[str]) -> None:
    """Lines to stdout as they are (no markup, no wrapping), flushed; a closed pipe ends quietly."""
    text = "".join(f"{line}\n" for line in lines)
    if not text:
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        raise typer.Exit(0) from None
