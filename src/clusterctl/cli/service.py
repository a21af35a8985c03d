"""service install, service remove: a systemd unit so the cluster comes back after the head reboots."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..client import service as svc
from ..errors import ClusterError
from ..topology.base import NAME_RE
from . import app
from .common import ConfigOption, config, err, out, user_errors

service_app = typer.Typer(
    help="Run the cluster as a systemd service that comes back after a reboot.\n\n"
         "Example: clusterctl service install --user -f cluster.yaml",
    no_args_is_help=True,
)
app.add_typer(service_app, name="service")

UserOption = Annotated[bool, typer.Option("--user", help="A per-user unit (~/.config/systemd/user) instead of a system one (root).")]


@service_app.command("install")
@user_errors
def install(
    file: ConfigOption = None,
    user: UserOption = False,
    no_enable: Annotated[bool, typer.Option("--no-enable", help="Only write the unit; do not enable or start it.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the unit; write nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a unit that exists with different content.")] = False,
) -> None:
    """Write a systemd unit running `clusterctl up --foreground` for this topology; enable and start it.

    Example: clusterctl service install --user -f cluster.yaml
    """
    cfg = config(file)
    if dry_run:
        unit = svc.build_unit(cfg, user=user)
        err.print(f"# {unit.path} (not written: --dry-run)", markup=False)
        out.print(unit.text, end="", markup=False)
        return
    r = svc.install(cfg, user=user, force=force, enable=not no_enable)
    out.print(f"{r['written']} {r['path']}" if r["written"] != "unchanged" else f"{r['path']} is already up to date",
              markup=False)
    u = " --user" if user else ""
    if no_enable:
        out.print(f"not enabled (--no-enable); enable it with `systemctl{u} daemon-reload && {r['enable_command']}`", markup=False)
    elif not r["systemd"]:
        where = "here (or has no session for this user)" if user else "here"
        out.print(f"systemd is not running {where}; enable it later with `{r['enable_command']}`", markup=False)
    elif r["under_unit"]:
        out.print(f"enabled {r['unit']}; it already runs the cluster (a changed unit applies at its next start)", markup=False)
    elif r["already_running"]:
        out.print(f"enabled {r['unit']}; the cluster already runs outside systemd, so it is not started now: "
                  f"it comes back under systemd at the next boot, or now with "
                  f"`clusterctl down && systemctl{u} start {r['unit']}`", markup=False)
    else:
        out.print(f"enabled and started {r['unit']}; see `systemctl{u} status {r['unit']}` "
                  f"and `journalctl{u} -u {r['unit']}`", markup=False)
    if user and r["linger"] is False:
        out.print("note: a user service starts at boot only if the user lingers: "
                  f"`loginctl enable-linger {r['login']}`; otherwise at the user's first login", markup=False)


@service_app.command("remove")
@user_errors
def remove(
    file: ConfigOption = None,
    user: UserOption = False,
    name: Annotated[Optional[str], typer.Option("--name", help="Cluster name, when its config file is gone.")] = None,
) -> None:
    """Stop and disable the unit, delete it; idempotent.

    Example: clusterctl service remove --user -f cluster.yaml
    """
    if name is not None and not NAME_RE.match(name):
        raise ClusterError(f"{name!r} is not a valid cluster name; use letters, digits, '_', '.', '-'")
    cluster = name if name is not None else config(file).name
    r = svc.remove(cluster, user=user)
    if not r["removed"]:
        out.print(f"no unit {r['unit']} in {r['path'].rsplit('/', 1)[0]}; nothing to remove", markup=False)
        return
    if r["systemd"]:
        out.print(f"stopped and disabled {r['unit']}", markup=False)
    out.print(f"removed {r['path']}", markup=False)
