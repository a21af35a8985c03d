"""A real, private sshd on loopback for the fleet tests: 127.0.0.2, 127.0.0.3 ... are the "workstations".

Linux routes all of 127.0.0.0/8 to lo, so one sshd listening on several loopback
addresses gives distinct hosts without a network. Keys and config live in a temp
directory; the daemon is stopped (and waited for) by ``Sshd.stop``.

It runs as any user (scripts/test-unprivileged): an sshd started without root needs no
/run/sshd (it skips the privilege separation chroot), no PAM, and a port above 1024; it
can only log its own user in, so that is the user of every host.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
CLIENT_OPTIONS = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"]


class SshdUnavailable(Exception):
    """Why no sshd could be started here (the tests skip with this reason)."""


@dataclass
class Sshd:
    root: Path
    port: int
    addresses: tuple[str, ...]
    popen: subprocess.Popen
    # the account this process runs as, not $USER: an sshd without root can log in no one else
    user: str = field(default_factory=lambda: pwd.getpwuid(os.geteuid()).pw_name)

    @property
    def client_key(self) -> Path:
        return self.root / "client_key"

    def host_yaml(self, name: str, address: str, python: str, workdir: Path) -> str:
        """One `hosts:` entry of cluster.yaml for this daemon."""
        opts = ", ".join(CLIENT_OPTIONS)
        return (
            f"  - name: {name}\n    address: {address}\n    port: {self.port}\n    user: {self.user}\n"
            f"    identity_file: {self.client_key}\n    python: {python}\n    workdir: {workdir}\n"
            f"    ssh_options: [{opts}]\n"
        )

    def ssh(self, address: str, *command: str, timeout: float = 20) -> subprocess.CompletedProcess:
        argv = ["ssh", "-T", "-o", "BatchMode=yes", "-i", str(self.client_key), "-p", str(self.port), "-l", self.user]
        for o in CLIENT_OPTIONS:
            argv += ["-o", o]
        return subprocess.run([*argv, address, *command], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def ensure_installed() -> None:
    """Install Debian's openssh-server when missing and we may (root, apt-get)."""
    if os.path.exists(SSHD) and shutil.which("ssh"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SshdUnavailable(f"{SSHD} is missing and this user cannot install openssh-server")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "openssh-server", "openssh-client"]):
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if res.returncode != 0:
            raise SshdUnavailable(f"`{' '.join(cmd)}` failed: {res.stderr.strip()[-300:]}")
    if not os.path.exists(SSHD):
        raise SshdUnavailable(f"openssh-server installed but {SSHD} is missing")


def _free_port(addresses: tuple[str, ...]) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
        try:
            for a in addresses[1:]:
                with socket.socket() as s:
                    s.bind((a, port))
            return port
        except OSError:
            continue
    raise SshdUnavailable("no port free on every loopback address")


# Test hosts share the head's home. An ssh login runs the user's ~/.bashrc, and pyenv's init there
# runs `pyenv rehash`, which takes a lock file in that home: a host "reboot" (every process in its
# namespace killed, scripts/chaos --fleet) that lands mid-rehash leaves the lock behind, and every
# later login, on every host and the head alike, waited 60 s on it (pyenv's default), so probes
# timed out and hosts looked unreachable. Separate machines have separate homes; here a stale lock
# costs a login 1 s. (Harmless where pyenv is not installed.)
SHARED_HOME = "SetEnv PYENV_REHASH_TIMEOUT=1\n"


def start(root: Path, addresses: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.0.0.3"), extra: str = "") -> Sshd:
    """An sshd on a free port of ``addresses``; ``extra``: more sshd_config lines (e.g. AllowTcpForwarding no)."""
    ensure_installed()
    root.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True,
                       capture_output=True)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    port = _free_port(addresses)  # an ephemeral one: above 1024, so any user may bind it
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        + "".join(f"ListenAddress {a}\n" for a in addresses)
        + f"HostKey {root / 'host_key'}\nPidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {root / 'client_key.pub'}\n"
        "PermitRootLogin yes\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nMaxSessions 100\nMaxStartups 100\n" + SHARED_HOME + extra
    )
    log = open(root / "sshd.log", "wb")
    popen = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
    log.close()
    sshd = Sshd(root=root, port=port, addresses=addresses, popen=popen)
    deadline = time.monotonic() + 10
    pending = list(addresses)
    while pending:
        if popen.poll() is not None:
            raise SshdUnavailable(f"sshd exited {popen.returncode}: {(root / 'sshd.log').read_text()[-500:]}")
        try:
            with socket.create_connection((pending[0], port), timeout=0.5):
                pending.pop(0)
        except OSError:
            if time.monotonic() > deadline:
                sshd.stop()
                raise SshdUnavailable(f"sshd did not listen on {pending[0]}:{port}")
            time.sleep(0.05)
    probe = sshd.ssh(addresses[-1], "true")
    if probe.returncode != 0:
        sshd.stop()
        raise SshdUnavailable(f"ssh into the test sshd failed: {probe.stderr.strip()[-300:]}")
    return sshd
