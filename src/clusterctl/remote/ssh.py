"""Running short commands on other hosts over the system ssh (argv from plan.ssh)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from ..errors import ClusterError
from ..plan.ssh import CONNECT_TIMEOUT, control_dir, remote_command, ssh_argv
from ..topology import ClusterConfig

__all__ = ["CONNECT_TIMEOUT", "Result", "close", "control_dir", "run"]


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def run(cfg: ClusterConfig, name: str, argv: list[str], *, stdin: str | None = None, timeout: float = 30) -> Result:
    """Run one short command on host `name`; ClusterError (naming the host) if ssh fails."""
    host = cfg.host(name)
    full = ssh_argv(host, control_dir(cfg))
    # Use a running cluster's shared connection, but never become one: a short command's ssh
    # would otherwise stay behind as the master (ControlPersist) or wait on others' sessions.
    full[full.index("ControlMaster=auto")] = "ControlMaster=no"
    full.append(remote_command(argv))
    try:
        proc = subprocess.run(
            full, input=stdin, capture_output=True, text=True, timeout=timeout,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"host {name!r} ({host.address}): no answer over SSH within {timeout:g} s") from e
    except FileNotFoundError as e:
        raise ClusterError("the `ssh` client is not installed; install OpenSSH (apt-get install openssh-client)") from e
    if proc.returncode == 255:  # ssh's own failure, not the command's
        raise ClusterError(f"host {name!r} ({host.address}) is unreachable over SSH: {_last_line(proc.stderr)}")
    return Result(proc.returncode, proc.stdout, proc.stderr)


def close(cfg: ClusterConfig, name: str) -> None:
    """Close this cluster's shared connection to a host, if one is open."""
    host = cfg.host(name)
    control = control_dir(cfg)
    if not control.exists():
        return
    argv = ssh_argv(host, control)
    argv[argv.index("--"):argv.index("--")] = ["-O", "exit"]
    subprocess.run(argv, capture_output=True, timeout=10, stdin=subprocess.DEVNULL)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("Warning: Permanently added")]
    return lines[-1] if lines else "ssh exited 255"
