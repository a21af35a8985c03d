"""``clusterctl``: the command line. Thin: parsing and printing only; the work is in clusterctl.client."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="clusterctl",
    help="Turn cluster.yaml into a supervised Dask cluster.\n\nExample: clusterctl up && clusterctl run montecarlo && clusterctl down",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

from . import cluster, demo, fleet, jobs, scale  # noqa: E402,F401 - registers the commands
from . import extras  # noqa: E402,F401 - dashboard, env, schema
from . import service  # noqa: E402,F401 - service install/remove


def main() -> None:
    app()
