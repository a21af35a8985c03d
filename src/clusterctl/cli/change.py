"""restart, apply: change a running cluster without taking it down; the supervisor does the work
(supervisor/changes.py, rolling.py, applying.py), these wait for it and print each step."""

from __future__ import annotations

import json
import time
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from ..client.connect import ask, read_record, supervisor_alive, wait_ready
from ..errors import ClusterError
from ..runtime import registry
from ..runtime.replies import ApplyReply, RestartReply, RollProgress, as_dict
from ..runtime.requests import ApplyRequest, RestartRequest, RollingRequest
from ..topology import ClusterConfig, default_config_path
from . import app
from .common import ConfigOption, JsonOption, config, out, raise_unready, user_errors

GroupOption = Annotated[Optional[str], typer.Option("--group", "-g", help="Restart this group's workers.")]
POLL = 10.0  # seconds the supervisor holds each progress request while nothing happens
STYLE = {"+": "green", "-": "red", "~": "yellow"}


@app.command()
@user_errors
def restart(
    names: Annotated[Optional[list[str]], typer.Argument(
        help="Processes to restart, e.g. default-1 or scheduler \\[default: every worker].", show_default=False)] = None,
    group: GroupOption = None,
    rolling: Annotated[bool, typer.Option(
        "--rolling", help="Workers only: start a replacement, wait until it registers, retire the old one "
        "(results move first), then the next; the group never drops below its size.")] = False,
    file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restart processes: stopped and started again (no restart budget spent), or replaced one at a time.

    Example: clusterctl restart default-1   |  clusterctl restart --rolling --group default
    """
    cfg = config(file)
    reply: RestartReply = ask(cfg, RestartRequest.of(names=names or [], group=group, rolling=rolling))
    if rolling:
        final = follow_roll(cfg, reply.roll or 0, reply.names, None if as_json else _step)
        if as_json:
            out.print_json(json.dumps(final))
        if final.get("error"):
            raise ClusterError(final["error"])
        return
    states = wait_ready(cfg, reply.restarted, cfg.timeouts.startup + 15)
    if as_json:
        out.print_json(json.dumps({**as_dict(reply), "states": states}))
    else:
        record = read_record(cfg)
        for name, state in states.items():
            p = record.process(name)
            out.print(f"restarted {name}: {state}" + (f" (pid {p.pid})" if p and p.pid else ""), markup=False)
        for name, why in reply.skipped.items():
            out.print(f"skipped {name}: {why}", markup=False)
    raise_unready(states, "did not come back")


@app.command()
@user_errors
def apply(
    file: ConfigOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    allow_restart: Annotated[bool, typer.Option(
        "--allow-restart", help="Allow changes that restart the scheduler (its address, ports, dashboard, TLS); "
        "every worker restarts with it and results held in memory are lost.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Re-read cluster.yaml and converge the running cluster to it, printing the plan first.

    Counts scale, new groups start, removed groups retire gracefully (results move first), changed worker
    settings are replaced by a rolling restart, restart policies and `adapt:` change in place.

    Example: clusterctl apply --dry-run   |  clusterctl apply
    """
    cfg = config(file)  # an invalid file: the same one line as `validate`, and nothing changes
    path = (cfg.source or default_config_path()).resolve()
    try:
        reply: ApplyReply = ask(cfg, ApplyRequest.of(path=str(path), dry_run=dry_run, allow_restart=allow_restart),
                                timeout=180)
    except ClusterError as e:
        raise ClusterError(_elsewhere(cfg, path) or str(e)) from None
    if not as_json:
        for line in reply.plan:
            out.print(Text(line, style=STYLE.get(line[:1], "")))
        if not reply.plan:
            out.print(f"no changes: the running cluster matches {path}", markup=False)
    if reply.refused:
        if as_json:
            out.print_json(json.dumps(as_dict(reply)))
        raise ClusterError(reply.refused)
    if dry_run or not reply.plan:
        if as_json:
            out.print_json(json.dumps(as_dict(reply)))
        elif dry_run and reply.plan:
            out.print("dry run: nothing was changed")
        return
    _follow_apply(cfg, reply, as_json)


def _follow_apply(cfg: ClusterConfig, reply: ApplyReply, as_json: bool) -> None:
    show = (lambda text: None) if as_json else (lambda text: out.print(text, markup=False))
    result: dict[str, Any] = as_dict(reply)  # and what followed, for --json
    wait = list(reply.added)
    if reply.restart:  # the scheduler and every worker come back with the new settings
        wait = [p.name for p in read_record(cfg).processes]
    states = wait_ready(cfg, wait, cfg.timeouts.startup + 30) if wait else {}
    result["states"] = states
    for name, state in states.items():
        show(f"{'restarted' if reply.restart else 'started'} {name}: {state}")
    for name in reply.removing:
        show(f"retired {name}" if name in reply.retired else f"stopped {name}")
    if reply.roll:
        roll = follow_roll(cfg, reply.roll, reply.rolled, None if as_json else _step)
        result["rolling"] = roll
        if roll.get("error"):
            if as_json:
                out.print_json(json.dumps(result))
            raise ClusterError(roll["error"])
    if as_json:
        out.print_json(json.dumps(result))
    raise_unready(states)
    show(f"applied {len(result['plan'])} change{'s' * (len(result['plan']) != 1)}")


def follow_roll(cfg: ClusterConfig, roll: int, names: list[str], on_step: Callable[[dict], None] | None) -> dict[str, Any]:
    """Wait for rolling restart ``roll`` (of ``names``) to end, handing each step to ``on_step``; its last state."""
    since, steps = 0, []
    per_worker = cfg.timeouts.startup + 2 * cfg.timeouts.shutdown + 60
    deadline = time.monotonic() + 60 + per_worker * max(1, len(names))
    while True:
        try:
            r: RollProgress = ask(cfg, RollingRequest.of(roll=roll, since=since, wait=POLL), timeout=POLL + 20)
        except ClusterError as e:
            done = f" after step {steps[-1]['index']} of {steps[-1]['of']}" if steps else ""
            raise ClusterError(f"lost the supervisor during the rolling restart{done}: {e}") from None
        for step in r.steps:
            steps.append(step)
            if on_step:
                on_step(step)
        since = r.next
        if r.done:
            return {**as_dict(r), "steps": steps}
        if time.monotonic() > deadline:
            raise ClusterError("the rolling restart is still under way; follow it with `clusterctl events`")


def _step(step: dict) -> None:
    out.print(Text(step["text"], style="red" if step.get("phase") == "failed" else ""))


def _elsewhere(cfg: ClusterConfig, path: Path) -> str | None:
    """The cluster this very file started, if it runs under another name or state directory."""
    for entry in registry.entries():
        if entry.config and Path(entry.config) == path and Path(entry.state) != cfg.state_path:
            try:
                running = supervisor_alive(entry.ledger().read())
            except ClusterError:
                running = None
            if running:
                return (f"apply refused: {path} started cluster {entry.name!r} (state {entry.state}); a new name "
                        "or state_dir is a new cluster: stop that one with the old file (`clusterctl down`), "
                        "then `clusterctl up`")
    return None
