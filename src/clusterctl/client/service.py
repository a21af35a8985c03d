"""A systemd unit that runs the supervisor in the foreground, so the cluster comes back after a reboot.

>>> unit = build_unit(load_config("cluster.yaml"), user=True)       # doctest: +SKIP
>>> unit.path
PosixPath('/home/me/.config/systemd/user/clusterctl-walkthrough.service')
>>> install(load_config("cluster.yaml"), user=True)                 # doctest: +SKIP
{'unit': 'clusterctl-walkthrough.service', 'written': 'created', 'systemd': True, 'enabled': True, ...}

The unit runs ``python -m clusterctl up --foreground --file CONFIG``: SIGTERM (what
``systemctl stop`` sends) makes that supervisor stop its processes in order and exit 0; exit 1
means the start failed with nothing left running. Nothing here prints.
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import ClusterError
from ..runtime.ledger import atomic_write
from ..topology import ClusterConfig
from .connect import read_record, supervisor_alive

SYSTEM_DIR = Path("/etc/systemd/system")
LINGER_DIR = Path("/var/lib/systemd/linger")
NEEDS_ROOT = "needs root; use --user for a per-user service"
# `systemctl is-system-running` prints one of these when a manager answers; "offline" when none runs.
ANSWERING = frozenset({"initializing", "starting", "running", "degraded", "maintenance"})
RESTART_SEC = 5
# Exit codes a restart cannot fix: 2 a bad cluster.yaml or no Dask, 4 another supervisor holds the cluster.
NO_RESTART = (2, 4)
_SAFE_WORD = re.compile(r"[A-Za-z0-9_./:=+,@-]+")


@dataclass(frozen=True)
class Unit:
    """A unit file as it should be on disk."""

    name: str  # clusterctl-<cluster>.service
    path: Path
    text: str
    user: bool


def unit_name(cluster: str) -> str:
    return f"clusterctl-{cluster}.service"


def unit_dir(user: bool, environ: Mapping[str, str] | None = None) -> Path:
    """~/.config/systemd/user (or $XDG_CONFIG_HOME/systemd/user) for --user, else /etc/systemd/system."""
    if not user:
        return SYSTEM_DIR
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path(env.get("HOME") or Path.home()) / ".config"  # XDG: relative is ignored
    return base / "systemd" / "user"


def stop_budget(cfg: ClusterConfig) -> tuple[int, str]:
    """Seconds the supervisor may need to stop everything politely (TimeoutStopSec), and the sum spelled out.

    Its worst case, from Reconciler.stop_all and fleet.shutdown: retirements still running get
    shutdown + 15 s; then the workers and then the scheduler each get one shared grace plus up to
    5 s to reap their trees; remote hosts are swept over SSH (shutdown + 20 s, then 10 s to close)."""
    s = float(cfg.timeouts.shutdown)
    parts = [("retirements", s + 15), ("workers", s + 5), ("scheduler", s + 5)]
    if cfg.remote_hosts():
        parts.append(("remote sweep", s + 30))
    parts.append(("margin", 10.0))
    total = math.ceil(sum(v for _, v in parts))
    return total, " + ".join(f"{what} {v:g}" for what, v in parts)


def exec_word(word: str, executable: bool = False) -> str:
    """One ExecStart= word, quoted as systemd splits it: specifiers (%) doubled, and variables ($) in
    arguments (systemd expands none in the executable's path, and refuses quotes and backslashes
    there); a word that is not plainly safe goes in double quotes with \\ and \" escaped."""
    _one_line(word)
    if executable and any(ch in word for ch in "\"'\\"):
        raise ClusterError(f"{word!r}: systemd refuses quotes and backslashes in a program's path; "
                           "run clusterctl from a Python installed elsewhere")
    word = word.replace("%", "%%") if executable else word.replace("%", "%%").replace("$", "$$")
    if _SAFE_WORD.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def env_assignment(name: str, value: str) -> str:
    """One Environment= assignment, always quoted: the value may hold spaces (a PATH entry can)."""
    _one_line(value)
    text = f"{name}={value}".replace("%", "%%")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def raw_path(path: Path) -> str:
    """A path for a setting systemd takes verbatim (WorkingDirectory=): no quotes, only % doubled."""
    text = str(path)
    _one_line(text)
    if text != text.strip() or text.endswith("\\"):  # trimmed, or read as a line continuation
        raise ClusterError(f"{text!r}: a unit file cannot hold a path that ends in a space or a backslash; move the config")
    return text.replace("%", "%%")


def _one_line(text: str) -> None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ClusterError(f"{text!r} holds a control character (a newline?); a unit file line cannot hold it")


def invoking_user(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(user, group) a system unit runs as: whoever ran install, the one behind sudo if sudo was used.

    The cluster's state, SSH configuration and the `down` that stops it by tag all belong to
    that user; a unit running as root would leave root-owned state the user cannot read."""
    env = os.environ if environ is None else environ
    name = env.get("SUDO_USER", "") if os.geteuid() == 0 else ""
    try:
        entry = pwd.getpwnam(name) if name and name != "root" else pwd.getpwuid(os.getuid())
    except KeyError:
        entry = pwd.getpwuid(os.getuid())
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        group = str(entry.pw_gid)
    return entry.pw_name, group


def build_unit(cfg: ClusterConfig, *, user: bool, python: str | None = None,
               environ: Mapping[str, str] | None = None) -> Unit:
    """The unit for this cluster; pure apart from reading the user database (system units)."""
    if cfg.source is None:
        raise ClusterError("a service needs the topology as a file; pass -f cluster.yaml")
    env = os.environ if environ is None else environ
    if not (python or sys.executable):
        raise ClusterError("cannot tell which Python runs clusterctl (sys.executable is empty)")
    interpreter = os.path.abspath(python or sys.executable)  # not resolved: a venv's python is a symlink
    config = Path(os.path.abspath(cfg.source))
    bin_dir = os.path.dirname(interpreter)
    # As at install time, so Dask is found as it was; this interpreter's folder first, as sudo resets PATH.
    path_entries = list(dict.fromkeys([bin_dir, *(p for p in env.get("PATH", os.defpath).split(os.pathsep) if p)]))
    budget, budget_parts = stop_budget(cfg)
    argv = [interpreter, "-u", "-m", "clusterctl", "up", "--foreground", "--file", str(config)]
    name = unit_name(cfg.name)
    lines = [
        f"# Written by `clusterctl service install{' --user' if user else ''}` for {config}",
        f"# Remove it with `clusterctl service remove{' --user' if user else ''} --name {cfg.name}`.",
        "[Unit]",
        f"Description=clusterctl: Dask cluster {cfg.name}",
    ]
    if not user:  # user managers have no network-online.target
        lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += ["", "[Service]", "Type=exec"]
    if not user:
        run_as, group = invoking_user(env)
        lines += [f"User={run_as}", f"Group={group}"]
    lines += [
        f"WorkingDirectory={raw_path(config.parent)}",
        f"Environment={env_assignment('PATH', os.pathsep.join(path_entries))}",
        "ExecStart=" + " ".join(exec_word(w, executable=i == 0) for i, w in enumerate(argv)),
        f"SyslogIdentifier=clusterctl-{cfg.name}",
        "# KillMode=mixed: `systemctl stop` sends SIGTERM to the supervisor alone, which stops its",
        "# processes in order (workers, then the scheduler: SIGTERM to each tree, SIGKILL after",
        f"# timeouts.shutdown = {cfg.timeouts.shutdown:g} s) and exits 0. Only what is still in this unit's cgroup once",
        "# it has exited, or after TimeoutStopSec, gets SIGKILL from systemd. control-group would",
        "# SIGTERM every Dask process at once, racing that ordered stop.",
        "KillMode=mixed",
        f"# TimeoutStopSec: the supervisor's own worst case: {budget_parts}.",
        f"TimeoutStopSec={budget}",
        "# Restart=on-failure: a crash, or a failed start (exit 1: a port still taken, a host not yet up),",
        f"# is retried every {RESTART_SEC} s; a stop (`systemctl stop`, `clusterctl down`) exits 0 and stays stopped.",
        "# Exit 2 (bad cluster.yaml, no Dask) and 4 (another supervisor runs this cluster) would only repeat.",
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        "RestartPreventExitStatus=" + " ".join(str(c) for c in NO_RESTART),
        "",
        "[Install]",
        f"WantedBy={'default.target' if user else 'multi-user.target'}",
        "",
    ]
    return Unit(name=name, path=unit_dir(user, env) / name, text="\n".join(lines), user=user)


# -- systemctl ---------------------------------------------------------------------------------
Runner = Callable[[list[str], float], "subprocess.CompletedProcess[str]"]


def run_command(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a short command; a missing binary or a hang becomes an exit code (127, 124), never an exception."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except OSError as e:
        return subprocess.CompletedProcess(argv, 127, "", str(e))
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"no answer within {timeout:g} s")


@dataclass
class Systemctl:
    """systemctl for the system manager or (user=True) the user's, through one runner."""

    user: bool
    runner: Runner = run_command
    binary: str | None = field(default_factory=lambda: shutil.which("systemctl"))

    def argv(self, *args: str) -> list[str]:
        return [self.binary or "systemctl", *(["--user"] if self.user else []), *args]

    def command(self, *args: str) -> str:
        """As the user would type it."""
        return " ".join(["systemctl", *(["--user"] if self.user else []), *args])

    def answers(self) -> bool:
        """A manager runs and answers (not a container without systemd, nor a user without a session)."""
        if not self.binary:
            return False
        return self.runner(self.argv("is-system-running"), 10).stdout.strip() in ANSWERING

    def main_pid(self, unit: str) -> int:
        """The unit's main process (0 when it runs none, or systemctl cannot tell)."""
        out = self.runner(self.argv("show", "--property=MainPID", "--value", unit), 10).stdout.strip()
        return int(out) if out.isdigit() else 0

    def __call__(self, *args: str, timeout: float = 60) -> None:
        p = self.runner(self.argv(*args), timeout)
        if p.returncode != 0:
            why = [line for line in (p.stderr or p.stdout or "").splitlines() if line.strip()]
            raise ClusterError(f"`{self.command(*args)}` failed (exit {p.returncode}): {why[-1].strip() if why else 'no output'}")


# -- install and remove ------------------------------------------------------------------------
def _check_platform(user: bool) -> None:
    if not sys.platform.startswith("linux"):
        raise ClusterError("systemd services exist on Linux only; elsewhere run `clusterctl up --foreground` under the system's own service manager")
    if not user and os.geteuid() != 0:
        raise ClusterError(NEEDS_ROOT)


def write_unit(unit: Unit, force: bool = False) -> str:
    """Write atomically; 'created', 'replaced' or 'unchanged'. Different content is replaced only with force."""
    try:
        old: str | None = unit.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = None
    except (OSError, UnicodeDecodeError) as e:
        raise ClusterError(f"{unit.path}: cannot read: {getattr(e, 'strerror', None) or e}") from e
    if old == unit.text:
        return "unchanged"
    if old is not None and not force:
        raise ClusterError(f"{unit.path} exists with different content; --force replaces it")
    try:
        atomic_write(unit.path, unit.text, mode=0o644)
    except OSError as e:
        raise ClusterError(f"{unit.path}: cannot write: {e.strerror or e}") from e
    return "replaced" if old is not None else "created"


def lingering() -> bool:
    """Whether this user's manager starts at boot (`loginctl enable-linger`), not at their first login."""
    return (LINGER_DIR / pwd.getpwuid(os.getuid()).pw_name).exists()


def install(cfg: ClusterConfig, *, user: bool, force: bool = False, enable: bool = True,
            systemctl: Systemctl | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write the unit; when a systemd manager answers, daemon-reload and enable it, and start it
    unless the cluster already runs outside systemd (a second supervisor would be refused)."""
    _check_platform(user)
    unit = build_unit(cfg, user=user, environ=environ)
    ctl = systemctl or Systemctl(user)
    result: dict[str, Any] = {
        "unit": unit.name, "path": str(unit.path), "user": user, "written": write_unit(unit, force),
        "systemd": False, "enabled": False, "started": False, "already_running": False, "under_unit": False,
        "linger": lingering() if user else None, "login": pwd.getpwuid(os.getuid()).pw_name,
        "enable_command": ctl.command("enable", "--now", unit.name),
    }
    if not enable:
        return result
    if not ctl.answers():
        return result
    result["systemd"] = True
    ctl("daemon-reload")
    sup = supervisor_alive(read_record(cfg))
    result["already_running"] = sup is not None
    result["under_unit"] = sup is not None and ctl.main_pid(unit.name) == sup.pid  # a second install
    if sup is not None:
        ctl("enable", unit.name)
    else:
        ctl("enable", "--now", unit.name)
        result["started"] = True
    result["enabled"] = True
    return result


def remove(cluster: str, *, user: bool, systemctl: Systemctl | None = None,
           environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Stop and disable the unit when a manager answers, delete it, reload. Removing what is not there is fine."""
    path = unit_dir(user, environ) / unit_name(cluster)
    result: dict[str, Any] = {"unit": unit_name(cluster), "path": str(path), "user": user,
                              "removed": False, "systemd": False}
    if not path.exists():
        return result
    _check_platform(user)
    ctl = systemctl or Systemctl(user)
    if ctl.answers():
        result["systemd"] = True
        ctl("disable", "--now", unit_name(cluster), timeout=_stop_timeout(path) + 30)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ClusterError(f"{path}: cannot delete: {e.strerror or e}") from e
    result["removed"] = True
    if result["systemd"]:
        ctl("daemon-reload")
    return result


def _stop_timeout(path: Path) -> int:
    try:
        found = re.search(r"^TimeoutStopSec=(\d+)\s*$", path.read_text(encoding="utf-8"), re.MULTILINE)
    except (OSError, UnicodeDecodeError):
        found = None
    return int(found.group(1)) if found else 90
