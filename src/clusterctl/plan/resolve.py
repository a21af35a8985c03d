"""Find the Dask executables on this host, for Windows or POSIX layouts.

Dask 2026.6 ships only the ``dask`` console script; the walkthrough's
``dask-scheduler``/``dask-worker`` are gone. Search, in order:

1. the topology's pinned ``bin_dir:`` or ``python:``
2. ``dask`` next to the running interpreter (``Scripts\\`` on Windows, ``bin/`` on POSIX)
3. ``dask`` on PATH (honouring PATHEXT on Windows)
4. legacy ``dask-scheduler``/``dask-worker`` on PATH (old installs)
5. ``<python> -m distributed.cli.dask_scheduler|dask_worker``

>>> launcher = resolve()                      # doctest: +SKIP
>>> launcher.scheduler
('/home/me/.venv/bin/dask', 'scheduler')
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Callable

from ..errors import ResolveError


@dataclass(frozen=True)
class Launcher:
    """Argv prefixes that start a scheduler and a worker, and how they were found."""

    scheduler: tuple[str, ...]
    worker: tuple[str, ...]
    how: str


def _default_is_executable(p: str) -> bool:
    return os.path.isfile(p) and os.access(p, os.X_OK)


@dataclass(frozen=True)
class Platform:
    """What resolution looks at; injectable so Windows layouts test on Linux.

    Defaults are read when a Platform is made, not when this module is imported, so a
    PATH changed afterwards (by the shell's caller, or by a test) is the PATH searched."""

    windows: bool = field(default_factory=lambda: os.name == "nt")
    executable: str = field(default_factory=lambda: sys.executable)
    path: str = field(default_factory=lambda: os.environ.get("PATH", ""))
    pathext: str = field(default_factory=lambda: os.environ.get("PATHEXT", ".COM;.EXE;.BAT;.CMD"))
    is_executable: Callable[[str], bool] = field(default=_default_is_executable)
    has_distributed: Callable[[str], bool] = field(default=lambda python: _has_distributed(python))

    def pure(self, p: str) -> PurePath:
        return PureWindowsPath(p) if self.windows else PurePosixPath(p)

    def path_dirs(self) -> list[str]:
        sep = ";" if self.windows else ":"
        dirs = [d.strip('"') if self.windows else d for d in self.path.split(sep)]
        # An empty entry means the current directory to a shell; never search it for `dask`.
        return [d for d in dirs if d and d != "."]

    def which(self, name: str, dirs: list[str] | None = None) -> str | None:
        """shutil.which for this platform: PATH order, PATHEXT on Windows."""
        search = dirs if dirs is not None else self.path_dirs()
        exts = [e.strip() for e in self.pathext.split(";") if e.strip()] if self.windows else [""]
        if self.windows and any(name.lower().endswith(e.lower()) for e in exts):
            exts = [""]
        for d in search:
            for ext in exts:
                # Windows file names ignore case, so the lower-case spelling is enough.
                candidate = str(self.pure(d) / (name + ext.lower()))
                if self.is_executable(candidate):
                    return candidate
        return None

    def script_dirs(self, python: str) -> list[str]:
        """Where an interpreter's console scripts live: its own folder, then Scripts\\ or bin/."""
        here = self.pure(python).parent
        sub = "Scripts" if self.windows else "bin"
        dirs = [str(here)]
        same = here.name.lower() == sub.lower() if self.windows else here.name == sub
        if not same:
            dirs.append(str(here / sub))
        return dirs

    def has_sep(self, p: str) -> bool:
        return "/" in p or (self.windows and "\\" in p)


def _has_distributed(python: str) -> bool:
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return importlib.util.find_spec("distributed") is not None
    return os.path.isfile(python)  # another interpreter: doctor checks it by running it


def resolve(python: str | None = None, bin_dir: str | None = None, platform: Platform | None = None) -> Launcher:
    """Return the first working way to start Dask, or raise ResolveError saying what was searched."""
    plat = platform or Platform()
    searched: list[str] = []

    if bin_dir:
        found = _from_dirs(plat, [bin_dir], f"bin_dir: {bin_dir}")
        if found:
            return found
        raise ResolveError(
            f"bin_dir: {bin_dir!r} holds no `dask` (nor legacy `dask-scheduler`) executable; "
            f"{_install_hint(plat, bin_dir)}"
        )

    if python:
        pinned = python
        if not plat.has_sep(python):  # a bare name such as python3: look it up on PATH
            pinned = plat.which(python) or python
        if not plat.is_executable(pinned):
            raise ResolveError(
                f"python: {python!r} is not an executable file; point it at a Python that has "
                "distributed installed (e.g. /path/to/env/bin/python)"
            )
        found = _from_dirs(plat, plat.script_dirs(pinned), f"python: {pinned}")
        if found:
            return found
        if not plat.has_distributed(pinned):
            raise ResolveError(
                f"python: {pinned!r} has no `dask` beside it and cannot import distributed; "
                f"{_install_hint(plat, str(plat.pure(pinned).parent))}"
            )
        return _module_launcher(pinned, f"python: {pinned} -m distributed.cli")

    if not plat.executable:  # embedded interpreters report '': its parent would be the cwd
        searched.append("(no interpreter path known)")
    else:
        dirs = plat.script_dirs(plat.executable)
        searched.append(f"`dask` beside {plat.executable} ({', '.join(dirs)})")
        dask = plat.which("dask", dirs)
        if dask:
            return Launcher((dask, "scheduler"), (dask, "worker"), f"dask beside the interpreter: {dask}")

    searched.append("`dask` on PATH")
    dask = plat.which("dask")
    if dask:
        return Launcher((dask, "scheduler"), (dask, "worker"), f"dask on PATH: {dask}")

    searched.append("legacy `dask-scheduler`/`dask-worker` on PATH")
    sched, worker = plat.which("dask-scheduler"), plat.which("dask-worker")
    if sched and worker:
        return Launcher((sched,), (worker,), f"legacy dask-scheduler on PATH: {sched}")

    searched.append(f"{plat.executable or 'python'} -m distributed.cli")
    if plat.executable and plat.has_distributed(plat.executable):
        return _module_launcher(plat.executable, f"{plat.executable} -m distributed.cli")

    raise ResolveError(
        "cannot find Dask: searched " + "; ".join(searched) + ". " + _path_hint(plat)
    )


def _from_dirs(plat: Platform, dirs: list[str], label: str) -> Launcher | None:
    dask = plat.which("dask", dirs)
    if dask:
        return Launcher((dask, "scheduler"), (dask, "worker"), f"dask from {label}")
    sched, worker = plat.which("dask-scheduler", dirs), plat.which("dask-worker", dirs)
    if sched and worker:
        return Launcher((sched,), (worker,), f"legacy dask-scheduler from {label}")
    return None


def _module_launcher(python: str, how: str) -> Launcher:
    return Launcher(
        (python, "-m", "distributed.cli.dask_scheduler"),
        (python, "-m", "distributed.cli.dask_worker"),
        how,
    )


def _install_hint(plat: Platform, where: str) -> str:
    pip = f"{where}\\pip" if plat.windows else f"{where}/pip"
    return f"install it there (`{pip} install \"distributed>=2026.6\"`) or fix the path"


def _path_hint(plat: Platform) -> str:
    if plat.windows:
        return (
            "Install it (`py -m pip install \"distributed>=2026.6\"`) and add the folder holding "
            "dask.exe (usually <python folder>\\Scripts) to PATH: System Properties > Environment "
            "Variables > Path > New, then open a new terminal; or set `bin_dir:` in cluster.yaml."
        )
    return (
        "Install it (`python -m pip install \"distributed>=2026.6\"`) and add the folder holding "
        "`dask` to PATH, e.g. `export PATH=$PATH:/path/to/env/bin` in ~/.bashrc; "
        "or set `bin_dir:` in cluster.yaml."
    )
