"""The system OpenSSH client, with one shared connection per host.

OpenSSH rather than asyncssh: it reads the user's ``~/.ssh/config`` (aliases,
ProxyJump, keys, agents) exactly as their own ``ssh`` does, needs no Python
dependency, and its ControlMaster lets every process on a host share one TCP
connection. Each remote process is one local ``ssh`` child, so the supervisor
treats it like any other Popen::

    >>> ssh_argv(HostConfig(address="ws1"), Path("/tmp/c"))      # doctest: +SKIP
    ['ssh', '-T', '-o', 'BatchMode=yes', ..., '--', 'ws1']
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import ClusterConfig, HostConfig
from ..errors import ClusterError

CONTROL_PERSIST = 60  # seconds a shared connection outlives its last session
CONNECT_TIMEOUT = 10
ALIVE_INTERVAL = 5  # a dead link is noticed after ALIVE_INTERVAL * ALIVE_COUNT seconds
ALIVE_COUNT = 3


def control_dir(cfg: ClusterConfig) -> Path:
    """Where this cluster's shared connections live: short, because a socket path is <104 bytes."""
    digest = hashlib.sha1(str(cfg.state_path).encode()).hexdigest()[:10]
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"clusterctl-ssh-{uid}" / digest


def ssh_argv(host: HostConfig, control: Path, *, persist: int = CONTROL_PERSIST) -> list[str]:
    """ssh options and destination; the remote command goes after it as one string."""
    argv = [
        "ssh", "-T",  # no terminal: stdin stays a plain pipe, the agent's lifeline
        "-o", "BatchMode=yes",  # never wait on a password prompt nobody sees
        "-o", "ControlMaster=auto",
        "-o", f"ControlPath={control}/%C",
        "-o", f"ControlPersist={persist}",
        "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
        "-o", f"ServerAliveInterval={ALIVE_INTERVAL}",
        "-o", f"ServerAliveCountMax={ALIVE_COUNT}",
    ]
    for opt in host.ssh_options:
        argv += ["-o", opt]
    if host.port:
        argv += ["-p", str(host.port)]
    if host.identity_file:
        argv += ["-i", os.path.expanduser(host.identity_file)]
    if host.user:
        argv += ["-l", host.user]
    return argv + ["--", host.address]


def remote_command(argv: list[str] | tuple[str, ...]) -> str:
    """One string for the remote POSIX shell: ssh joins its arguments with spaces."""
    return " ".join(shlex.quote(a) for a in argv)


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
