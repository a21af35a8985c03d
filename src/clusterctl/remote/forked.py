"""The agent's side of a host's fork server (remote/forkserver.py): ask it for a Dask process,
starting the server first if this host has none, and watch that process as a Popen-like handle."""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import struct
import subprocess
import sys
from pathlib import Path

from ..plan.tag import TAG_ENV
from ..runtime import entry as warm  # light: no multiprocessing, no psutil in every agent
from ..runtime.childhandle import UNKNOWN_EXIT, ChildHandle
from .forkserver import IDLE, LOCK, MAX_REQUEST, SOCKET, START_TIMEOUT


def _preload(argv: list[str], dashboard: bool) -> list[str]:
    mods = list(warm.PRELOAD)
    if dashboard and warm.entry_point(argv)[0] == warm.ENTRY["worker"]:
        mods.append("distributed.dashboard.worker")  # bokeh: ~1 s, paid once per host
    return mods


class ServedChild(ChildHandle):
    """A Dask process forked by the host's server: its exit code comes back on the connection;
    if the server went first, a pidfd (or the pid's absence) says when it exits, code unknown."""

    def __init__(self, sock: socket.socket, pid: int, tag: str = ""):
        super().__init__(pid, tag)
        self._sock: socket.socket | None = sock
        self._buf = b""
        self._fd: int | None = None
        try:
            self._fd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
        except OSError:
            self._fd = None

    def _exit_code(self) -> int | None:
        if self._sock is not None:
            ready = select.select([self._sock], [], [], 0)[0]
            if ready:
                try:
                    chunk = self._sock.recv(65536)
                except OSError:
                    chunk = b""
                if chunk:
                    self._buf += chunk
                    if b"\n" in self._buf:
                        msg = json.loads(self._buf.split(b"\n", 1)[0])
                        self._close_sock()
                        return int(msg.get("exit", UNKNOWN_EXIT))
                    return None
                self._close_sock()  # the server went: watch the process itself
            elif self._fd is not None and select.select([self._fd], [], [], 0)[0]:
                # It exited: its server says how within moments (it reaps on SIGCHLD), unless it is
                # busy sweeping; then the exit is all that is known.
                return self._exit_code() if select.select([self._sock], [], [], 1.0)[0] else UNKNOWN_EXIT
            else:
                return None
        if self._fd is not None:
            return UNKNOWN_EXIT if select.select([self._fd], [], [], 0)[0] else None
        try:
            os.kill(self.pid, 0)
            return None
        except ProcessLookupError:
            return UNKNOWN_EXIT
        except PermissionError:
            return None

    def _pause(self, most: float | None) -> None:
        watch = [x for x in (self._sock, self._fd) if x is not None]
        select.select(watch, [], [], 0.05 if most is None else min(0.05, most))

    def _close_sock(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def spawn(argv: list[str], env: dict[str, str], grace: float, dashboard: bool = True,
          nice: int | None = None) -> ServedChild | None:
    """Fork ``argv`` from this host's server (started now if there is none), or None when it
    cannot be done equivalently or at all: the caller execs then. Runs in the agent's cwd.
    ``dashboard``: a worker that serves dashboard pages (its server imports Bokeh once for all);
    ``nice``: its priority, which the forked child sets itself (never the server)."""
    if not warm.enabled() or warm.entry_point(argv) is None or not _this_interpreter(argv[0]):
        return None
    request = json.dumps({"argv": argv, "env": env, "cwd": os.getcwd(), "grace": grace,
                          "dashboard": dashboard, **({"nice": nice} if nice is not None else {})}).encode() + b"\n"
    if len(request) > MAX_REQUEST:
        return None
    try:
        sock = _connect_or_start(env, _preload(argv, dashboard))
        if sock is None:
            return None
        socket.send_fds(sock, [request], [1, 2])
        line = _read_line(sock, START_TIMEOUT + 30)  # the server may still be importing distributed
        msg = json.loads(line)
    except (OSError, ValueError):
        return None
    if "pid" not in msg:
        print(f"clusterctl.remote.forkserver: {msg.get('refused', msg)}; starting without it", file=sys.stderr,
              flush=True)
        sock.close()
        return None
    return ServedChild(sock, int(msg["pid"]), env.get(TAG_ENV, ""))


def _this_interpreter(exe: str) -> bool:
    return exe == sys.executable or Path(exe).parent == Path(sys.executable).parent


def _read_line(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("the fork server closed the connection")
        data += chunk
    sock.settimeout(None)
    return data.split(b"\n", 1)[0]


def _connect() -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(SOCKET)
        return sock
    except OSError:
        sock.close()
        return None


def start(env: dict[str, str], preload: list[str] | None = None) -> int:
    """Start this host's server now, if it has none (`up` does so while it prepares the host, so
    the server imports distributed while the scheduler starts); the pid of the one that answers
    (its route file must be that server's), 0 when none does."""
    if not warm.enabled():
        return 0
    try:
        sock = _connect_or_start(env, list(preload or warm.PRELOAD))
    except OSError:
        return 0
    if sock is None:
        return 0
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
    except (OSError, AttributeError):  # no SO_PEERCRED here: a server answered, whose is unknown
        pid = -1
    sock.close()
    return pid


def _connect_or_start(env: dict[str, str], preload: list[str]) -> socket.socket | None:
    sock = _connect()
    if sock is not None:
        return sock
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the first agent starts the server; the others wait for it
        sock = _connect()
        if sock is not None:
            return sock
        try:
            os.unlink(SOCKET)  # a server that died left it
        except FileNotFoundError:
            pass
        cmd = [sys.executable, "-m", "clusterctl.remote.forkserver", "--idle", str(IDLE), "--direct"]
        for mod in preload:
            cmd += ["--preload", mod]
        tag = env.get(TAG_ENV, "")
        if tag:
            cmd += ["--tag", tag]
        with open("forkserver.log", "ab") as log:
            server = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                      start_new_session=True)
        ready = select.select([server.stdout], [], [], START_TIMEOUT)[0]
        said = server.stdout.readline() if ready else b""
        server.stdout.close()
        if said.strip() != b"ready":
            server.kill()
            server.wait()
            return None
        return _connect()
    finally:
        os.close(fd)
