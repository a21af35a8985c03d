"""run montecarlo: the walkthrough's job on the running cluster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import lifecycle
from ..errors import ClusterError
from . import app
from .common import ConfigOption, config, err, is_terminal, out, user_errors

run_app = typer.Typer(help="Run a job on the running cluster.", no_args_is_help=True)
app.add_typer(run_app, name="run")


@run_app.command("montecarlo")
@user_errors
def montecarlo(
    file: ConfigOption = None,
    tasks: Annotated[int, typer.Option(help="Number of tasks.")] = 1200,
    min_points: Annotated[int, typer.Option(help="Points in the smallest task.")] = 1_000,
    max_points: Annotated[int, typer.Option(help="Points in the largest task.")] = 10_000_000,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same table on any cluster.")] = 42,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="CSV file to write.")] = Path("montecarlo.csv"),
    rows: Annotated[int, typer.Option(help="Rows of the table's tail to print.")] = 5,
) -> None:
    """Estimate pi by Monte Carlo across the cluster, print the table's tail and write CSV.

    Example: clusterctl run montecarlo --tasks 1200 --seed 7 --out pi.csv
    """
    from ..jobs.montecarlo import MonteCarloSpec, run

    cfg = config(file)
    spec = MonteCarloSpec(tasks=tasks, min_points=min_points, max_points=max_points, seed=seed)
    address = lifecycle.client_address(cfg)
    from distributed import Client

    t0 = time.monotonic()
    try:
        client = Client(address, timeout="10s")
    except OSError as e:
        raise ClusterError(f"cannot connect to the scheduler at {address}: {e}") from e
    with client:
        if is_terminal():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bar:
                job = bar.add_task("montecarlo", total=spec.tasks)
                df = run(client, spec, progress=lambda done, total: bar.update(job, completed=done))
        else:
            df = run(client, spec)
    took = time.monotonic() - t0
    out.print(df.tail(rows).to_string(), markup=False)
    points = int(df.iloc[:, 0].sum())
    out.print(f"{spec.tasks} tasks, {points:.3e} points in {took:.2f} s ({points / took / 1e6:.0f} M points/s)")
    if out_file:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_file.with_name(out_file.name + ".tmp")
        df.to_csv(tmp, index=False)
        tmp.replace(out_file)
        out.print(f"wrote {out_file}")
