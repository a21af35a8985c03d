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

from . import change, cluster, demo, fleet, jobs, listing, scale, views  # noqa: E402,F401 - registers the commands
from . import extras  # noqa: E402,F401 - dashboard, env, schema
from . import service  # noqa: E402,F401 - service install/remove


def main() -> None:
    app()


COMPLETION_PARAMS = ("install_completion", "show_completion")


def __getattr__(name: str):
    """``dask_command``, built on first use: the ``dask_cli`` entry point (pyproject.toml) that
    makes ``dask clusterctl ...`` the same commands as ``clusterctl ...``."""
    if name == "dask_command":
        command = globals()["dask_command"] = _dask_command()
        return command
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _dask_command():
    """A command of the `click` that `dask` uses, handing its arguments to the typer app's own
    command: typer's classes derive from its vendored click, which `dask` refuses."""
    import click
    import typer.main

    command = typer.main.get_command(app)
    # Shell completion belongs to the `clusterctl` script: under `dask` it would install
    # a completion for the wrong program.
    command.params = [p for p in command.params if p.name not in COMPLETION_PARAMS]

    @click.command("clusterctl", add_help_option=False, short_help="Turn cluster.yaml into a supervised Dask cluster.",
                   help=app.info.help, context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    @click.pass_context
    def clusterctl(ctx: click.Context, args: tuple[str, ...]) -> None:
        command.main(args=list(args), prog_name=ctx.command_path)

    return clusterctl
