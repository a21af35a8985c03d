"""demo churn: the Monte Carlo graph while workers join, retire and crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ClusterError
from . import app
from .common import ConfigOption, JsonOption, config, out, user_errors

DEFAULT_SCHEDULE = "2:add 2,5:retire 1,8:kill 1,11:add 1"  # churn.DEFAULT_SCHEDULE, without importing numpy

demo_app = typer.Typer(help="Demonstrations on the running cluster.\n\nExample: clusterctl demo churn", no_args_is_help=True)
app.add_typer(demo_app, name="demo")


@demo_app.command("churn")
@user_errors
def churn(
    schedule: Annotated[str, typer.Option(help="SECONDS:ACTION [COUNT],... with ACTION add|retire|kill.")] = DEFAULT_SCHEDULE,
    tasks: Annotated[int, typer.Option(help="Number of tasks.")] = 1200,
    min_points: Annotated[int, typer.Option(help="Points in the smallest task.")] = 1_000_000,
    max_points: Annotated[int, typer.Option(help="Points in the largest task.")] = 20_000_000,
    seed: Annotated[int, typer.Option(help="Seed of the job and of the undisturbed reference run.")] = 42,
    group: Annotated[Optional[str], typer.Option("--group", "-g", help="Worker group to add to and remove from.")] = None,
    chart: Annotated[Optional[Path], typer.Option(help="PNG chart to write.")] = Path("churn.png"),
    file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the Monte Carlo graph while workers are added, retired and killed on a schedule,
    then prove every result equals an undisturbed run with the same seed.

    Example: clusterctl demo churn --schedule "2:add 2,5:retire 1,8:kill 1" --chart churn.png
    """
    from ..client.churn import parse_schedule, run_churn
    from ..jobs.montecarlo import MonteCarloSpec

    cfg = config(file)
    events = parse_schedule(schedule)
    spec = MonteCarloSpec(tasks=tasks, min_points=min_points, max_points=max_points, seed=seed)
    echo = (lambda line: None) if as_json else (lambda line: out.print(line, markup=False))
    report = run_churn(cfg, spec, events, chart=chart, echo=echo, group=group)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        if report.identical:
            out.print(f"OK: all {report.tasks} results equal the undisturbed run with seed {seed}.")
        else:
            out.print(f"MISMATCH: {len(report.mismatched)} of {report.tasks} results differ (tasks {report.mismatched[:10]}).")
        out.print(f"{report.recomputed} tasks were recomputed (results lost with a killed worker); "
                  f"{report.interrupted} runs were cut short and restarted elsewhere; retired workers' results moved, none recomputed.")
        if report.chart:
            out.print(f"chart: {report.chart}")
    if not report.identical:
        raise ClusterError("results differ from the undisturbed run")
