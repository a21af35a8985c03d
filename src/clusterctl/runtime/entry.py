"""Which argv is a Dask process a warm server may fork instead of exec (runtime/warm.py on the head,
remote/forkserver.py on a fleet host). Standard library only: the remote agent imports it, and
every remote worker pays for what its agent imports."""

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
