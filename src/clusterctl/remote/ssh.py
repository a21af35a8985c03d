"""Running short commands on other hosts over the system ssh (argv from plan.ssh)."""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ClusterError
from ..plan.ssh import CONNECT_TIMEOUT, SSH_FAILED, control_dir, remote_command, ssh_argv
from ..topology import ClusterConfig

__all__ = ["CONNECT_TIMEOUT", "HostUnreachable", "Result", "close", "control_dir", "run", "secure_control_dir"]


class HostUnreachable(ClusterError):
    """ssh itself failed (exit 255) or got no answer: the host, not the command."""


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def run(cfg: ClusterConfig, name: str, argv: list[str], *, stdin: str | None = None, timeout: float = 30,
        connect_timeout: float | None = None, shared: bool = True, master: bool = False) -> Result:
    """Run one short command on host `name`; HostUnreachable (naming the host) if ssh fails.

    ``shared=False`` opens a connection of its own: after a silent cut the shared master may
    still look alive for the seconds its keep-alives take, and a probe must not wait on it.
    ``master=True`` leaves the shared connection open behind it (ControlPersist; it detaches
    from our pipes): `up` prepares a host so, and the processes started next all share it,
    rather than racing to be the master (the losers each pay a full ssh handshake)."""
    host = cfg.host(name)
    full = ssh_argv(host, secure_control_dir(cfg, create=False))
    if not master:  # use a running cluster's shared connection, but never become one
        full[full.index("ControlMaster=auto")] = "ControlMaster=no"
    if not shared:
        full[[i for i, a in enumerate(full) if a.startswith("ControlPath=")][0]] = "ControlPath=none"
    if connect_timeout is not None:
        full[[i for i, a in enumerate(full) if a.startswith("ConnectTimeout=")][0]] = f"ConnectTimeout={connect_timeout:g}"
    full.append(remote_command(argv))
    try:
        proc = subprocess.run(
            full, input=stdin, capture_output=True, text=True, timeout=timeout,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise HostUnreachable(f"host {name!r} ({host.address}): no answer over SSH within {timeout:g} s") from e
    except FileNotFoundError as e:
        raise ClusterError("the `ssh` client is not installed; install OpenSSH (apt-get install openssh-client)") from e
    if proc.returncode == SSH_FAILED:  # ssh's own failure, not the command's
        raise HostUnreachable(f"host {name!r} ({host.address}) is unreachable over SSH: {_last_line(proc.stderr)}")
    return Result(proc.returncode, proc.stdout, proc.stderr)


def close(cfg: ClusterConfig, name: str) -> None:
    """Close this cluster's shared connection to a host, if one is open."""
    master(cfg, name, "exit")


def master(cfg: ClusterConfig, name: str, command: str) -> int | None:
    """``ssh -O command`` ("check", "exit") to this cluster's shared connection to host ``name``: its
    exit code (0: there is one, and it did it), None when there is no connection folder or ssh failed."""
    control = secure_control_dir(cfg, create=False)
    if not control.exists():
        return None
    argv = ssh_argv(cfg.host(name), control)
    argv[argv.index("--"):argv.index("--")] = ["-O", command]
    try:
        return subprocess.run(argv, capture_output=True, timeout=10, stdin=subprocess.DEVNULL).returncode
    except (OSError, subprocess.SubprocessError):
        return None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("Warning: Permanently added")]
    return lines[-1] if lines else "ssh exited 255"


def secure_control_dir(cfg: ClusterConfig, *, create: bool) -> Path:
    """The shared connections' folder, proven private before any ssh uses it; made 0700 if asked.

    Its path under the shared temp directory is predictable (plan.ssh.control_dir), so another
    local user could make it first and plant a socket there: ssh would then hand our sessions
    to their "master". Both levels (clusterctl-ssh-UID/ and the cluster's folder in it) must be
    real directories, ours, and writable by nobody else; ClusterError (one line) otherwise."""
    path = control_dir(cfg)
    for folder in (path.parent, path):
        if not _private_dir(folder, create):
            break  # absent and not to be made: ssh finds no socket there, nothing to trust
    return path


def _private_dir(folder: Path, create: bool) -> bool:
    if not hasattr(os, "geteuid"):
        return folder.is_dir()  # Windows: no ControlMaster, no shared /tmp semantics
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        if not create:
            return False
        try:
            os.mkdir(folder, 0o700)
            os.chmod(folder, 0o700)  # whatever the umask
        except FileExistsError:
            pass  # someone was quicker: judged below like any folder found there
        except OSError as e:
            raise ClusterError(f"{folder}: cannot create the ssh connection folder: {e.strerror or e}") from e
        st = os.lstat(folder)
    except OSError as e:
        raise ClusterError(f"{folder}: cannot check the ssh connection folder: {e.strerror or e}") from e
    fix = "remove it (it only holds clusterctl's shared ssh connections) or set TMPDIR to a private directory"
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise ClusterError(f"{folder}: is {kind}, where clusterctl keeps its ssh connections; {fix}")
    if st.st_uid != os.geteuid():
        raise ClusterError(
            f"{folder}: owned by {_user(st.st_uid)}, not by you, so that user could take over your ssh "
            f"connections; {fix}"
        )
    if st.st_mode & 0o022:
        raise ClusterError(
            f"{folder}: mode {stat.S_IMODE(st.st_mode):03o} lets other users write there, so they could take "
            f"over your ssh connections; {fix} (clusterctl makes it 0700)"
        )
    if st.st_mode & 0o077:
        # Ours and writable by nobody else (an older clusterctl left the upper level 0755):
        # nothing foreign can be inside, so closing it is safe.
        os.chmod(folder, 0o700)
    return True


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"
