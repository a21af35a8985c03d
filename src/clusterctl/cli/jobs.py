"""run montecarlo: the walkthrough's job on the running cluster."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..client.connect import client_address, client_kwargs
from ..runtime.ledger import atomic_write
from ..errors import ClusterError
from . import app
from .common import ConfigOption, JsonOption, config, err, is_terminal, out, user_errors

run_app = typer.Typer(
    help="Run a job on the running cluster.\n\nExample: clusterctl run montecarlo --tasks 1200 --plot pi.png",
    no_args_is_help=True,
)
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
    plot: Annotated[
        Optional[Path],
        typer.Option("--plot", help="Also draw relative error against points, log-log, with the 1/sqrt(N) line (.png, .svg or .pdf).",
                     show_default=False),
    ] = None,
    rows: Annotated[int, typer.Option(help="Rows of the table's tail to print.")] = 5,
    batch_points: Annotated[Optional[int], typer.Option(
        help="Pack consecutive tasks into Dask tasks of up to this many points "
             "(0: one Dask task per task, as the walkthrough; default: sized for the cluster's threads, "
             "big first and small last). The table is the same either way.", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Estimate pi by Monte Carlo across the cluster, print the table's tail and write CSV.

    Example: clusterctl run montecarlo --tasks 1200 --seed 7 --out pi.csv --plot pi.png
    """
    from ..jobs.montecarlo import MonteCarloSpec, run

    cfg = config(file)
    if batch_points is not None and batch_points < 0:
        raise ClusterError(f"--batch-points must be 0 or more, not {batch_points}")
    spec = MonteCarloSpec(tasks=tasks, min_points=min_points, max_points=max_points, seed=seed)
    if plot:
        from ..jobs.plot import check_plot_path

        check_plot_path(plot)  # a typo in the suffix fails now, not after the whole job
    address = client_address(cfg)
    from distributed import Client

    t0 = time.monotonic()
    try:
        client = Client(address, timeout="10s", **client_kwargs(cfg))
    except OSError as e:
        raise ClusterError(f"cannot connect to the scheduler at {address}: {e}") from e
    with client:
        if is_terminal() and not as_json:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bar:
                job = bar.add_task("montecarlo", total=spec.tasks)
                df = run(client, spec, progress=lambda done, total: bar.update(job, completed=done), batch_points=batch_points)
        else:
            df = run(client, spec, batch_points=batch_points)
    took = time.monotonic() - t0
    points = int(df.iloc[:, 0].sum())
    if out_file:
        atomic_write(out_file, df.to_csv(index=False))
    if plot:
        from ..jobs.plot import plot_convergence

        plot_convergence(df, plot)
    if as_json:
        largest = df.loc[df.iloc[:, 0].idxmax()]
        out.print_json(json.dumps({
            "tasks": spec.tasks,
            "points": points,
            "seconds": round(took, 3),
            "seed": spec.seed,
            "pi": float(largest.iloc[1]),
            "pi_points": int(largest.iloc[0]),
            "error_percent": float(largest.iloc[2]),
            "csv": str(out_file.resolve()) if out_file else None,
            "plot": str(plot.resolve()) if plot else None,
        }))
        return
    out.print(df.tail(rows).to_string(), markup=False)
    out.print(f"{spec.tasks} tasks, {points:.3e} points in {took:.2f} s ({points / took / 1e6:.0f} M points/s)")
    if out_file:
        out.print(f"wrote {out_file}")
    if plot:
        out.print(f"wrote {plot}")
