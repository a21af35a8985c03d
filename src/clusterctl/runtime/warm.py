"""Warm start: fork local Dask processes from a server that imported distributed once.

Most of a Dask process's start-up is the interpreter plus ``import distributed``
(about 0.6 s of CPU each here). Paid once in multiprocessing's forkserver,
instead of once per process, 16 workers register in 5.2 s rather than 17.7 s
on 2 cores. The child still runs exactly the planned argv (through Dask's own
click entry points), in its own session, logging to its own file, and shows
that argv as its process title.

Used only where it is equivalent to exec, by the rule both fork servers share
(runtime/entry.py): POSIX, a local process, the Dask of this very interpreter,
and no environment beyond variables no library reads at import (OMP_NUM_THREADS,
for one, is read at import). The cluster tag must be the fork server's own:
a forked child shows other processes the environment its server was exec'd
with, and that is where `down` looks for the tag (process.carries).
Anything else, or ``CLUSTERCTL_WARM=0``, uses a plain exec.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..plan.tag import TAG_ENV
from .entry import ENTRY, PRELOAD, enabled, entry_point, neutral  # noqa: F401 - warm.entry_point is its API
from .handles import WarmChild
from .logs import write_header

if TYPE_CHECKING:
    from ..plan.resolve import Launcher
    from ..plan.specs import ProcessSpec

_lock = threading.Lock()
_ctx: Any = None


def usable(spec: ProcessSpec, launcher: Launcher | None) -> bool:
    """True when forking is equivalent to exec'ing spec.argv."""
    if not enabled() or getattr(spec, "remote", False) or entry_point(spec.argv) is None:
        return False
    if not all(neutral(k) for k in spec.env):
        return False  # the one rule for both fork servers (runtime/entry.py)
    tag = spec.env.get(TAG_ENV)
    if tag and os.environ.get(TAG_ENV) != tag:
        return False  # the fork server is exec'd with this process's environment: its tag or none
    exe = spec.argv[0]
    here = Path(sys.executable).parent
    mine = Path(exe).parent == here or exe == sys.executable
    return mine and multiprocessing_ok()


def multiprocessing_ok() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def _context() -> Any:
    global _ctx
    with _lock:
        if _ctx is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _ctx = ctx
        return _ctx


def preload_for(specs: list[ProcessSpec]) -> list[str]:
    """What the fork server imports: distributed, plus Bokeh's worker dashboard when
    workers serve pages (importing bokeh is ~1 s; paid once here, not per worker)."""
    mods = list(PRELOAD)
    # Not distributed.dashboard.scheduler: the first scheduler is exec'd, and importing
    # bokeh here (+0.85 s) would make every worker of every `up` wait for it, to save
    # that time only when a scheduler is restarted.
    if any(s.role == "worker" and s.dashboard for s in specs):
        mods.append("distributed.dashboard.worker")
    return mods


def warm_up(preload: list[str] | None = None) -> None:
    """Start the fork server now (it imports distributed: ~0.5 s), e.g. while the
    supervisor does other work, so the first spawn does not pay for it."""
    from multiprocessing import forkserver

    ctx = _context()
    if preload:
        ctx.set_forkserver_preload(preload)
    forkserver.ensure_running()


def spawn(spec: ProcessSpec) -> WarmChild:
    """Fork spec.argv from the warm server; same log, env, cwd and session rules as exec."""
    log = Path(spec.log_path) if spec.log_path else None
    if log:
        write_header(log, spec.argv, "warm")
    if spec.cwd:
        Path(spec.cwd).mkdir(parents=True, exist_ok=True)
    proc = _context().Process(
        target=_child_main,
        args=(list(spec.argv), str(log) if log else None, dict(spec.env), str(spec.cwd) if spec.cwd else None,
              spec.nice),
        name=spec.name,
        daemon=False,
    )
    proc.start()
    return WarmChild(proc, spec.env.get(TAG_ENV, ""))


def _child_main(argv: list[str], log: str | None, env: dict[str, str], cwd: str | None,
                nice: int | None = None) -> None:
    """Runs in the forked child: become the planned process (at its worker's ``nice``, never the
    server's own), then hand over to Dask's CLI."""
    from .childhandle import lower_priority, say_missed
    from .handles import become_detached

    become_detached(argv, log, cwd, env)
    say_missed(lower_priority(nice))  # into its log: become_detached made that its stderr
    import dask.config

    dask.config.refresh()  # DASK_* from this process's env, not the server's
    module, args, prog = entry_point(argv)
    import importlib

    main = importlib.import_module(module).main
    sys.argv = [prog, *args]
    main(args=args, prog_name=prog, standalone_mode=True)
