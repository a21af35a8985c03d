"""Shared pieces of the command line: the -f option, error handling, output."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.markup import escape
from rich.console import Console

from ..topology import ClusterConfig, load_config
from ..errors import ClusterError
from ..runtime.ledger import owner_of, user_name

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--file", "-f", help="Topology file \\[default: ./cluster.yaml or $CLUSTERCTL_CONFIG]", show_default=False),
]
# `logs -f` means follow, as with tail and docker, so there the file is --file only.
FileOnlyOption = Annotated[
    Optional[Path],
    typer.Option("--file", help="Topology file \\[default: ./cluster.yaml or $CLUSTERCTL_CONFIG]", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn ClusterError (and a stray PermissionError) into one line on stderr and its exit code;
    never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClusterError as e:
            first, *rest = str(e).splitlines() or [""]
            err.print(f"[bold red]error:[/] {escape(first)}", markup=True)  # the message may hold [brackets]
            for line in rest:  # log tails follow the one-line message
                err.print(line, markup=False)
            raise typer.Exit(e.exit_code) from None
        except PermissionError as e:  # a file another user (or root) owns, met where none was expected
            err.print(f"[bold red]error:[/] {escape(denied(e))}", markup=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def denied(e: PermissionError) -> str:
    """A PermissionError on one line: the path, and whose it is when it is not this user's.

    >>> denied(PermissionError(13, "Permission denied", "/home/alice/.clusterctl/demo/ledger.json"))  # doctest: +SKIP
    '/home/alice/.clusterctl/demo/ledger.json: permission denied (/home/alice/.clusterctl/demo belongs to alice, uid 1001)'
    """
    if not e.filename:
        return f"permission denied: {e.strerror or e}"
    path = os.fsdecode(e.filename)
    found = owner_of(Path(path))
    mine = os.geteuid() if hasattr(os, "geteuid") else None
    whose = ""
    if found and mine not in (None, found[1]):
        whose = f" ({found[0]} belongs to {user_name(found[1])}, uid {found[1]})"
    return f"{path}: {(e.strerror or 'permission denied').lower()}{whose}"


def config(path: Path | None) -> ClusterConfig:
    return load_config(path)


def is_terminal() -> bool:
    return sys.stdout.isatty()


def format_bytes(n: float | None) -> str:
    """1536 -> '1.50 KiB'; None -> '-'."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows (the headers first) as plain text in aligned columns: what a table is when piped,
    never cut to a terminal's width."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def raise_unready(states: dict[str, str], what: str = "did not become ready") -> None:
    """One line naming the processes a command started that are not running, and where to look."""
    failed = [n for n, s in states.items() if s != "running"]
    if failed:
        raise ClusterError(f"{', '.join(failed)} {what}; see `clusterctl status` and `clusterctl logs {failed[0]}`")
