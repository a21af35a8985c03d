"""ssh command lines (pure): the system OpenSSH client, with one shared connection per host.

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
import tempfile
from pathlib import Path

from ..topology import ClusterConfig, HostConfig

CONTROL_PERSIST = 60  # seconds a shared connection outlives its last session
CONNECT_TIMEOUT = 10
ALIVE_INTERVAL = 5  # a dead link is noticed after ALIVE_INTERVAL * ALIVE_COUNT seconds
ALIVE_COUNT = 3
SSH_FAILED = 255  # ssh's own exit code: the connection failed or dropped, not the remote command's
# A direct start's stream ended without its exit code while the shared connection lives: the host's fork
# server went (killed, or the host rebooting), taking the process along. Outside Popen's ranges.
SERVER_LOST = 257
# A direct start that failed before its process existed (the route was no good): nothing ran; started
# again at once the agent's way, without spending the restart budget (runtime/launch.py).
NOT_STARTED = 258


# A unix socket path holds 108 bytes; ssh adds "/" + %C (40) and, while it binds, a 17-byte suffix.
CONTROL_DIR_MAX = 108 - 1 - 1 - 40 - 17


def control_dir(cfg: ClusterConfig) -> Path:
    """Where this cluster's shared connections live: short, because a socket path is <104 bytes.

    The path is predictable, under the shared temp directory: remote.ssh.secure_control_dir
    makes it 0700 and refuses it when another user owns it or may write to it, before any ssh."""
    digest = hashlib.sha1(str(cfg.state_path).encode()).hexdigest()[:10]
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    path = Path(tempfile.gettempdir()) / f"clusterctl-ssh-{uid}" / digest
    if len(str(path)) > CONTROL_DIR_MAX and os.name == "posix":
        # A long TMPDIR (a test runner's, a deep home) would make ssh refuse every connection with
        # "ControlPath too long", and every host would look unreachable: the short shared one instead.
        path = Path("/tmp") / f"clusterctl-ssh-{uid}" / digest
    return path


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


