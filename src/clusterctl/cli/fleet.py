"""doctor and client-config: the fleet before `up`, and how a Client connects after it."""

from __future__ import annotations

import json
import shlex
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from ..client.connect import client_address
from ..runtime import tls
from ..errors import ClusterError
from ..plan.specs import scheduler_address
from ..remote import fleet
from . import app
from .common import aligned, ConfigOption, JsonOption, config, err, is_terminal, out, user_errors

PLAIN_CLIENT = (
    "clients: this cluster speaks mutual TLS only, loopback included. A client without its certificate "
    "(Client('127.0.0.1:{port}') or 'tcp://...') is refused: Dask says 'Connection reset by peer' or "
    "'Timed out trying to connect'. Fix: eval \"$(clusterctl env)\" before your script, or use `clusterctl run` "
    "or SupervisedCluster, which connect by themselves."
)


def clients_note(cfg) -> str | None:
    """What `doctor` says of clients: a plain-TCP one sees a reset or a timeout, and the fix."""
    return PLAIN_CLIENT.format(port=cfg.scheduler.port or "PORT") if cfg.tls_enabled else None


COLUMNS = ("host", "address", "ssh", "python", "dask", "distributed", "versions", "executables", "ports", "clock")


@app.command()
@user_errors
def doctor(file: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check every host before `up`: SSH, Python, versions equal to this machine's, Dask found, ports, clock.

    Versions are compared as `up` compares them (Dask's packages and clusterctl; see `versions:`),
    with a table per host that differs. Exits 1 when any host has a problem.

    Example: clusterctl doctor -f cluster.yaml
    """
    cfg = config(file)
    rows = fleet.doctor(cfg)
    if as_json:
        out.print_json(json.dumps({"ok": all(r.ok for r in rows), "head": fleet.head_versions(),
                                   "head_versions": fleet.head_report(), "versions_mode": cfg.versions,
                                   "warnings": cfg.warnings(), "clients": clients_note(cfg),
                                   "hosts": [r.to_dict() for r in rows]}))
    else:
        cells = [[str(getattr(r, c)) for c in COLUMNS] + ["ok" if r.ok else "FAIL"] for r in rows]
        headers = [*COLUMNS, "ok"]
        if is_terminal():
            table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
            for col in headers:
                table.add_column(col, no_wrap=True)
            for row in cells:
                row[-1] = "[green]ok[/]" if row[-1] == "ok" else "[bold red]FAIL[/]"
                table.add_row(*row)
            out.print(table)
        else:  # piped: plain aligned text, never cut to a terminal width
            for line in aligned([list(headers), *cells]):
                print(line)
        for r in rows:
            for problem in r.problems:
                out.print(f"  {r.host}: {problem}", markup=False)
        for r in rows:
            lines = fleet.version_table(r)
            if lines:
                out.print(f"\n{r.host}: versions differ from this machine's (versions: {cfg.versions})", markup=False)
                for line in lines:
                    out.print(f"  {line}", markup=False)
        if clients_note(cfg):
            out.print(f"\n{clients_note(cfg)}", markup=False)
        for w in cfg.warnings():
            err.print(f"warning: {w}", markup=False)
    if not all(r.ok for r in rows):
        raise typer.Exit(1)


@app.command("client-config")
@user_errors
def client_config(
    file: ConfigOption = None,
    as_json: JsonOption = False,
    env: Annotated[bool, typer.Option("--env", help="Only `export` lines that make a plain Client(address) connect.")] = False,
) -> None:
    """Show how to connect a distributed.Client: the address, TLS files, a Python snippet.

    Example: clusterctl client-config --env > cluster.env && . ./cluster.env
    """
    cfg = config(file)
    try:
        address, running = client_address(cfg), True
    except ClusterError:
        address, running = scheduler_address(cfg), False  # the planned one: port 0 is chosen at `up`
    f = tls.files(cfg)
    variables = {"DASK_SCHEDULER_ADDRESS": address, **tls.client_env(cfg)}
    if as_json:
        out.print_json(json.dumps({
            "address": address, "running": running, "tls": cfg.tls_enabled,
            "ca": str(f.ca) if cfg.tls_enabled else None,
            "cert": str(f.client_cert) if cfg.tls_enabled else None,
            "key": str(f.client_key) if cfg.tls_enabled else None,
            "env": variables,
        }))
        return
    if env:
        for k, v in variables.items():
            typer.echo(f"export {k}={shlex.quote(v)}")
        return
    out.print(f"# cluster {cfg.name!r}" + ("" if running else " (not running: planned address)"), markup=False)
    out.print(f"# address: {address}", markup=False)
    if cfg.tls_enabled:
        out.print(f"# mutual TLS; the CA is the trust boundary: keep {f.client_key} private (0600)", markup=False)
        snippet = (
            "from distributed import Client\n"
            "from distributed.security import Security\n\n"
            "security = Security(\n"
            f"    tls_ca_file={str(f.ca)!r},\n"
            f"    tls_client_cert={str(f.client_cert)!r},\n"
            f"    tls_client_key={str(f.client_key)!r},\n"
            "    require_encryption=True,\n"
            ")\n"
            f"client = Client({address!r}, security=security)\n"
        )
    else:
        out.print("# plain TCP (loopback only)", markup=False)
        snippet = f"from distributed import Client\n\nclient = Client({address!r})\n"
    out.print(snippet, markup=False)
    out.print("# or, for any Dask program unchanged: eval \"$(clusterctl client-config --env)\"", markup=False)
