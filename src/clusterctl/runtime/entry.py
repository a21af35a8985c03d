"""When a warm server may fork a Dask process instead of exec'ing it: the one rule for both fork
servers (runtime/warm.py on the head, remote/forkserver.py on a fleet host). Standard library only:
the remote agent imports it, and every remote worker pays for what its agent imports.

Forking equals exec for a Dask command of the server's own interpreter (``entry_point``) whose
environment differs from the server's only in variables no library reads at import (``neutral``):
clusterctl's and Dask's own settings, ssh's session variables. DASK_CONFIG and DASK_ROOT_CONFIG are
not neutral: dask binds its config search paths when it is imported."""

from __future__ import annotations

import os
from pathlib import Path

PRELOAD = ["distributed", "distributed.cli.dask_scheduler", "distributed.cli.dask_worker"]
ENTRY = {
    "scheduler": "distributed.cli.dask_scheduler",
    "worker": "distributed.cli.dask_worker",
    "dask-scheduler": "distributed.cli.dask_scheduler",
    "dask-worker": "distributed.cli.dask_worker",
}


# Variables that differ between ssh sessions or that only clusterctl and Dask read: a child forked
# with them set after import is the same as one exec'd with them. PYTHONUNBUFFERED: a forked child
# makes its stdout and stderr line-buffered itself.
NEUTRAL_PREFIXES = ("DASK_", "CLUSTERCTL_", "SSH_", "SPT_")
NEUTRAL_KEYS = {"PWD", "OLDPWD", "_", "SHLVL", "PYTHONUNBUFFERED"}
READ_AT_IMPORT = {"DASK_CONFIG", "DASK_ROOT_CONFIG"}


def neutral(key: str) -> bool:
    return (key.startswith(NEUTRAL_PREFIXES) or key in NEUTRAL_KEYS) and key not in READ_AT_IMPORT


def differs(base: dict[str, str], env: dict[str, str]) -> list[str]:
    """The variables that make forking from a server exec'd with ``base`` unlike exec'ing with ``env``."""
    keys = set(base) | set(env)
    return sorted(k for k in keys if base.get(k) != env.get(k) and not neutral(k))


def enabled() -> bool:
    return os.name == "posix" and os.environ.get("CLUSTERCTL_WARM", "1") != "0"


def entry_point(argv: tuple[str, ...] | list[str]) -> tuple[str, list[str], str] | None:
    """(module, click args, prog name) for a planned Dask argv, or None if it is not one."""
    if len(argv) >= 2 and argv[1] in ("scheduler", "worker"):
        return ENTRY[argv[1]], list(argv[2:]), f"dask {argv[1]}"
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] in ENTRY.values():
        return argv[2], list(argv[3:]), argv[2]
    name = Path(argv[0]).name if argv else ""
    if name in ("dask-scheduler", "dask-worker"):
        return ENTRY[name], list(argv[1:]), name
    return None
