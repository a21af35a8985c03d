"""dashboard, env, schema: clusterctl alongside browsers, shells and editors."""

from __future__ import annotations

import json
import shlex
import urllib.error
import urllib.request
import webbrowser
from typing import Annotated

import typer

from ..client.connect import client_address, read_record
from ..topology import ClusterConfig
from ..errors import ClusterError
from . import app
from .common import ConfigOption, config, err, user_errors


@app.command()
@user_errors
def dashboard(
    file: ConfigOption = None,
    open_it: Annotated[bool, typer.Option("--open", help="Also open it in the default web browser.")] = False,
) -> None:
    """Print the URL of the running cluster's Dask dashboard (exit 1 when not running).

    Example: clusterctl dashboard --open
    """
    cfg = config(file)
    client_address(cfg)  # the cluster-is-not-running error, the same as `run`'s
    url = read_record(cfg).scheduler.dashboard
    if not url:
        raise ClusterError(
            f"cluster {cfg.name!r} runs without its dashboard (scheduler.dashboard: false in {cfg.source}); "
            "set it to true and restart"
        )
    base = url.rsplit("/", 1)[0]
    # Without bokeh, /status still answers 200 (a "Dask needs bokeh" note) but bokeh's own files do not;
    # HEAD, because a GET of /status would open a bokeh session on the scheduler for nothing.
    if not _answers(base + "/static/js/bokeh.min.js", method="HEAD"):
        why = ("the scheduler serves no dashboard pages: install bokeh into the Python that runs dask"
               if _answers(base + "/health") else "nothing answers there; see `clusterctl status`")
        raise ClusterError(f"{url}: {why}")
    typer.echo(url)
    if open_it and not webbrowser.open(url):
        err.print("no web browser found here; open the URL above yourself (or set $BROWSER)")


def _answers(url: str, method: str = "GET", timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout) as r:  # noqa: S310 - our own http URL
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


TLS_PREFIX = "DASK_DISTRIBUTED__COMM__TLS__"


@app.command()
@user_errors
def env(
    file: ConfigOption = None,
    export: Annotated[bool, typer.Option("--export/--plain",
                      help="`export NAME=value;` lines for eval, or plain NAME=value lines for .env files.")] = True,
) -> None:
    """Print the environment that makes a plain Client() connect to this cluster.

    Example: eval $(clusterctl env) && python -c 'from distributed import Client; print(Client())'
    """
    cfg = config(file)
    from ..runtime import tls

    variables = {"DASK_SCHEDULER_ADDRESS": client_address(cfg)}
    variables.update(tls.client_env(cfg))
    for name, value in variables.items():
        # The trailing ';' keeps an unquoted `eval $(clusterctl env)` right: it joins the lines into one.
        typer.echo(f"export {name}={shlex.quote(value)};" if export else f"{name}={value}")
    if not cfg.tls_enabled:
        # Last, so that in an unquoted eval the comment swallows nothing but itself.
        typer.echo(f"# plain TCP: {cfg.source or 'the topology'} configures no TLS, so no {TLS_PREFIX}* variables")
    elif not tls.speaks_tls(cfg):
        typer.echo("# plain TCP: this cluster was started before TLS became the default; "
                   "`clusterctl down` and `up` once to turn it on")


@app.command()
@user_errors
def schema() -> None:
    """Print the JSON Schema of cluster.yaml, for editors that validate YAML.

    Example: clusterctl schema > cluster.schema.json
    """
    typer.echo(json.dumps(config_schema(), indent=2))


def config_schema() -> dict:
    """ClusterConfig's JSON Schema, less what is never written in YAML (``source``)."""
    doc = ClusterConfig.model_json_schema()
    for name, field in ClusterConfig.model_fields.items():
        if field.exclude:
            doc["properties"].pop(name, None)
            if name in doc.get("required", []):
                doc["required"].remove(name)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **doc,
        "title": "clusterctl cluster.yaml",
        "description": "A supervised Dask cluster: one scheduler and groups of workers. See cluster.example.yaml.",
    }
