"""scale, worker add, worker remove: edit the desired set; the supervisor converges to it."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from ..client.connect import ask, wait_ready
from ..runtime.replies import AdaptReply, ChangeReply, as_dict
from ..runtime.requests import AdaptRequest, AddRequest, RemoveRequest, ScaleRequest
from ..topology import ClusterConfig
from ..errors import ClusterError
from . import app
from .common import ConfigOption, JsonOption, config, out, raise_unready, user_errors

worker_app = typer.Typer(help="Add or remove individual workers.\n\nExample: clusterctl worker add --count 2", no_args_is_help=True)
app.add_typer(worker_app, name="worker")

GroupOption = Annotated[Optional[str], typer.Option("--group", "-g", help="Worker group (needed when there are several).")]


def _report(cfg: ClusterConfig, reply: ChangeReply, as_json: bool) -> None:
    states = wait_ready(cfg, reply.added, cfg.timeouts.startup) if reply.added else {}
    if as_json:
        out.print_json(json.dumps({**as_dict(reply), "added_states": states}))
    else:
        for name, state in states.items():
            out.print(f"added {name}: {state}")
        for name in reply.removing:
            how = "killed" if reply.kill else ("retired" if name in reply.retired else "stopped")
            out.print(f"removed {name} ({how})")
        sizes = ", ".join(f"{g}: {n}" for g, n in reply.workers.items())
        out.print(f"workers now {sizes}")
    raise_unready(states)


@app.command()
@user_errors
def scale(
    count: Annotated[int, typer.Argument(help="Workers the group should have.")],
    group: GroupOption = None,
    file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Grow or shrink a worker group to COUNT while work runs; shrinking retires gracefully.

    Example: clusterctl scale 5 --group default
    """
    cfg = config(file)
    if count < 0:
        raise ClusterError(f"count must be 0 or more, not {count}")
    _report(cfg, ask(cfg, ScaleRequest.of(count=count, group=group)), as_json)


@worker_app.command("add")
@user_errors
def worker_add(
    group: GroupOption = None,
    count: Annotated[int, typer.Option("--count", "-n", help="How many workers to add.")] = 1,
    file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start more workers in a group; returns once they are registered.

    Example: clusterctl worker add --group default --count 2
    """
    cfg = config(file)
    if count < 1:
        raise ClusterError(f"--count must be 1 or more, not {count}")
    _report(cfg, ask(cfg, AddRequest.of(count=count, group=group)), as_json)


@worker_app.command("remove")
@user_errors
def worker_remove(
    names: Annotated[Optional[list[str]], typer.Argument(help="Workers to remove, e.g. default-2.")] = None,
    count: Annotated[Optional[int], typer.Option("--count", "-n", help="Remove this many instead of naming them.")] = None,
    group: GroupOption = None,
    kill: Annotated[bool, typer.Option("--kill", help="Remove abruptly, as a crashed machine would (results are recomputed).")] = False,
    file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove workers: retired through the scheduler first (their results move elsewhere), then stopped.

    Example: clusterctl worker remove default-2      |  clusterctl worker remove --count 1 --kill
    """
    cfg = config(file)
    if not names and count is None:
        raise ClusterError("name the workers to remove, or give --count")
    _report(cfg, ask(cfg, RemoveRequest.of(names=names or [], count=count, group=group, kill=kill)), as_json)


@app.command()
@user_errors
def adapt(
    group: GroupOption = None,
    minimum: Annotated[Optional[int], typer.Option("--min", help="Never fewer workers than this.")] = None,
    maximum: Annotated[Optional[int], typer.Option("--max", help="Never more workers than this.")] = None,
    target_duration: Annotated[Optional[float], typer.Option(
        "--target-duration", help="Seconds the queued work should take (Dask's target-duration); default 5.")] = None,
    wait_count: Annotated[Optional[int], typer.Option(
        "--wait-count", help="Consecutive lower recommendations before shrinking; default 3.")] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop adapting: keep the current size.")] = False,
    file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let a group follow Dask's own recommendation between --min and --max (grow at once, shrink gracefully).

    Example: clusterctl adapt --group default --min 1 --max 8   (and: clusterctl adapt --off)
    """
    cfg = config(file)
    body = {"group": group, "off": off, "minimum": minimum, "maximum": maximum,
            "target_duration": target_duration, "wait_count": wait_count}
    reply: AdaptReply = ask(cfg, AdaptRequest.of(**{k: v for k, v in body.items() if v is not None}))
    if as_json:
        out.print_json(json.dumps(as_dict(reply)))
    elif reply.adaptive:
        a = reply.adaptive
        out.print(f"{reply.group}: adaptive between {a['minimum']} and {a['maximum']} workers "
                  f"(target duration {a['target_duration']:g} s; shrinks after {a['wait_count']} lower "
                  f"recommendations); {reply.workers} now", markup=False)
    else:
        was = "no longer adaptive" if reply.was_adaptive else "was not adaptive"
        out.print(f"{reply.group}: {was}; fixed at {reply.workers} workers", markup=False)
