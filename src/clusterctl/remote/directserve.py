"""The fork server's direct side: Dask processes asked for over its loopback port (remote/wire.py).

One connection per process. After the handshake the connection *is* the process's stdout and
stderr (its output reaches the head's log through the ssh forward) and its lifeline: the head's
newlines keep it alive; their end (EOF: the head closed it, its ssh or the link went) or their
silence for the request's ``lifeline`` seconds (a cut no FIN announces) stops the process, as the
agent does. When the process exits, what is left of its group is killed and the trailer carries
its exit code. A Dask command of the server's own interpreter with an environment that differs
only in neutral variables is forked from the warm server; anything else is exec'd (posix_spawn)
in its own session, which still spares the remote shell and the agent's interpreter.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..runtime import entry as warm
from ..runtime.childhandle import check_nice, lower_priority, say_missed
from . import wire
from .forkserver import _signal_group, differs  # (forkserver imports this module only when serving)

if TYPE_CHECKING:
    from .forkserver import Server

HANDSHAKE_TIMEOUT = 10.0  # seconds a connection may take to prove itself
DRAIN_TIMEOUT = 10.0  # seconds the trailer may wait for a slow head to read what came before it
REFUSED_LINGER = 2.0  # seconds a refused connection is read (and dropped) before it is closed
MAX_PENDING = 64  # connections still in their handshake; more are closed at once
ROLES = ("worker", "scheduler")


@dataclass
class Conn:
    sock: socket.socket
    opened: float
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    hello: str = ""  # the head's nonce, once said
    buf: bytearray = field(default_factory=bytearray)
    pid: int = 0  # its process, once started
    lifeline: float = 0.0
    heard: float = 0.0
    stopping: bool = False
    ended: bool = False  # the head's side closed: nothing more to read
    pending: bytes = b""  # the trailer, still to send once its process is gone
    drain_until: float = 0.0
    fin: bool = False  # all sent and our side shut: waiting for the head's end (closing now would reset)


class DirectSide:
    """Owned by the Server: its listening socket, token and connections; the Server's select
    loop hands it what is ready, every child it reaps, and a tick."""

    def __init__(self) -> None:
        self.server: Server = None  # type: ignore[assignment] - set by the Server it serves
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))  # loopback only: the head reaches it through ssh
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.token = secrets.token_hex(32)
        self.conns: dict[socket.socket, Conn] = {}
        self.by_pid: dict[int, Conn] = {}
        self._launcher: dict[str, list[str]] = {}

    # -- the route file -------------------------------------------------------------------------
    def publish(self) -> None:
        """forkserver.route (0600, atomic) in the workdir: what `probe install --warm` hands the head."""
        from .probe import write_atomically

        write_atomically(wire.ROUTE, json.dumps({"port": self.port, "token": self.token, "pid": os.getpid()}))

    def unpublish(self) -> None:
        try:
            with open(wire.ROUTE) as f:
                if json.load(f).get("pid") == os.getpid():  # a later server's file stays
                    os.unlink(wire.ROUTE)
        except (OSError, ValueError, AttributeError):
            pass

    # -- the loop's hooks ---------------------------------------------------------------------
    def sockets(self) -> list[socket.socket]:
        return [self.listener, *(s for s, c in self.conns.items() if not c.ended)]

    def busy(self) -> bool:
        return bool(self.conns)

    def writers(self) -> list[socket.socket]:
        return [s for s, c in self.conns.items() if c.pending and not c.fin]

    def flush(self, sock: socket.socket) -> None:
        """Send what is left of a trailer; the connection closes once it is all out."""
        c = self.conns.get(sock)
        if c is None:
            return
        try:  # never block: this loop serves every process of the host
            c.pending = c.pending[c.sock.send(c.pending, socket.MSG_DONTWAIT):]
        except BlockingIOError:
            return
        except OSError:
            c.pending = b""
        if not c.pending:
            self._finish(c)

    def _finish(self, c: Conn) -> None:
        """All sent: shut our side (the head reads to the end, then EOF), and close only once the head
        has closed its own: closing with its heartbeat unread would reset the connection, and a reset
        drops what the head has not read yet, the trailer with it."""
        c.fin = True
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(c)
            return
        if c.ended:
            self._close(c)

    def accept(self) -> None:
        sock, _ = self.listener.accept()
        if sum(1 for c in self.conns.values() if not c.pid) >= MAX_PENDING:
            sock.close()
            return
        self.conns[sock] = Conn(sock, time.monotonic())

    def read(self, sock: socket.socket) -> None:
        c = self.conns[sock]
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._gone(c, "the lifeline closed")
            return
        if c.fin or c.pending:
            return  # a heartbeat after its process ended: read, and nothing more
        if c.pid:
            c.heard = time.monotonic()  # a heartbeat: only its arrival matters
            if wire.KILL in data and c.pid in self.by_pid:  # judged hung by the supervisor: no grace
                self._say(c, f"killed by the supervisor: pid {c.pid} and its group")
                c.stopping = True
                _signal_group(c.pid, signal.SIGKILL)
            return
        c.buf += data
        if len(c.buf) > wire.MAX_LINE:
            self._refuse(c, "request too large")
            return
        while b"\n" in c.buf and sock in self.conns and not c.pid and not c.fin:  # (fin: refused, said why)
            raw, _, rest = bytes(c.buf).partition(b"\n")
            c.buf = bytearray(rest)
            if raw.strip():  # a heartbeat may come before the request: blank lines are nothing
                self._line(c, raw)

    def reaped(self, pid: int, status: int) -> bool:
        """A child of ours exited: kill what its group left, send the trailer, close. False if not ours."""
        c = self.by_pid.pop(pid, None)
        if c is None:
            return False
        _signal_group(pid, signal.SIGKILL)
        self.server.kill_at.pop(pid, None)
        # After all its output (in the socket already, in order), whenever the head has read that far.
        c.pending, c.drain_until = wire.trailer(os.waitstatus_to_exitcode(status), pid), time.monotonic() + DRAIN_TIMEOUT
        self.flush(c.sock)
        return True

    def tick(self, now: float) -> None:
        for c in list(self.conns.values()):
            if not c.pid and now - c.opened > HANDSHAKE_TIMEOUT or (c.pending or c.fin) and now > c.drain_until:
                self._close(c)
            elif c.pid in self.by_pid and c.lifeline > 0 and not c.stopping and now - c.heard > c.lifeline:
                self._say(c, f"no heartbeat on the lifeline for {c.lifeline:g} s: stopping pid {c.pid}")
                self._stop(c)

    def close(self) -> None:
        for c in list(self.conns.values()):
            if c.pid in self.by_pid:  # (a reaped pid may be someone else's now)
                _signal_group(c.pid, signal.SIGTERM)
            self._close(c)
        self.listener.close()

    # -- one connection -----------------------------------------------------------------------
    def _line(self, c: Conn, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except ValueError as e:
            self._refuse(c, f"bad request: {e}")
            return
        if not c.hello:
            hello = msg.get("hello")
            if not isinstance(hello, str) or not 16 <= len(hello) <= 128:
                self._refuse(c, "no hello")
                return
            c.hello = hello
            self._send(c, {"nonce": c.nonce, "proof": wire.proof(self.token, "server", hello, c.nonce)})
            return
        if not wire.same(msg.get("auth"), wire.proof(self.token, "client", c.nonce, c.hello)):
            self._refuse(c, "not authorised")
            return
        try:
            if msg.get("sweep") is True:
                self._sweep(c, msg)
            else:
                self._start(c, msg)
        except Exception as e:  # noqa: BLE001 - one bad request or a failed fork must not end the server
            self._refuse(c, f"{type(e).__name__}: {e}")

    def _sweep(self, c: Conn, msg: dict) -> None:
        """`down`'s last word to this host, without a remote shell: stop whatever this cluster left in
        the workdir (probe.sweep, as over ssh), answer, then leave (the server is the cluster's too)."""
        from ..plan.tag import TAG_ENV
        from .probe import sweep

        tag = self.server.base.get(TAG_ENV)
        if not tag:
            raise ValueError("this server has no cluster tag to sweep by")
        result = sweep(tag, float(msg.get("grace", 10.0)), os.getcwd())
        self._send(c, {"swept": result})
        self._close(c)
        self.server.stopping = True

    def _start(self, c: Conn, msg: dict) -> None:
        role, args, extra = msg.get("launch"), msg.get("args"), msg.get("env")
        if role not in ROLES or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError("launch must be worker or scheduler, args a list of strings")
        if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise ValueError("env must map names to strings")
        grace, lifeline = float(msg.get("grace", 10.0)), float(msg.get("lifeline", 0.0))
        dashboard, nice = bool(msg.get("dashboard", True)), check_nice(msg.get("nice"))
        argv = [*self._launch(role), *args]
        env = {**self.server.base, **extra}
        fork = warm.enabled() and warm.entry_point(argv) is not None and not differs(self.server.base, env)
        self._send(c, {"how": "fork" if fork else "exec"})  # before the process: its output follows
        fd = c.sock.fileno()
        if fork:
            pid = self.server.fork_child(argv, env, os.dup(fd), os.dup(fd), orphan=True, dashboard=dashboard, nice=nice)
        else:
            pid = _exec_child(argv, env, fd, nice)
        c.pid, c.lifeline, c.heard = pid, lifeline, time.monotonic()
        self.by_pid[pid] = c
        self.server.children[pid] = None
        self.server.grace[pid] = grace

    def _launch(self, role: str) -> list[str]:
        """This host's Dask executable for ``role``, resolved as the agent does (once per server)."""
        if role not in self._launcher:
            from ..plan.resolve import resolve

            launcher = resolve()
            self._launcher["worker"], self._launcher["scheduler"] = list(launcher.worker), list(launcher.scheduler)
        return self._launcher[role]

    def _gone(self, c: Conn, why: str) -> None:
        c.ended = True
        if c.fin:
            self._close(c)
            return
        if c.pending:
            return  # its trailer goes out still: the head closed only its own side
        if c.pid and c.pid in self.by_pid:
            if not c.stopping:
                self._stop(c)  # the connection closes when it is reaped (the trailer may still get through)
            return
        self._close(c)

    def _stop(self, c: Conn) -> None:
        c.stopping = True
        try:  # the top process only, as the agent does: a nanny stops its worker itself
            os.kill(c.pid, signal.SIGTERM)
        except OSError:
            pass
        _signal_group(c.pid, signal.SIGCONT)  # a stopped (T) process acts on SIGTERM only once continued
        self.server.kill_at[c.pid] = time.monotonic() + self.server.grace.get(c.pid, 10.0)

    def _refuse(self, c: Conn, why: str) -> None:
        """Say why, then end it as a trailer ends a stream (what the peer still sends is read and
        dropped for a moment): closing at once with its bytes unread would reset the connection and
        could lose the answer."""
        self._send(c, {"refused": why})
        print(f"forkserver: direct connection refused: {why}", file=sys.stderr, flush=True)
        c.drain_until = time.monotonic() + REFUSED_LINGER
        self._finish(c)

    def _say(self, c: Conn, text: str) -> None:
        print(f"forkserver: {text}", file=sys.stderr, flush=True)
        try:
            c.sock.send(f"clusterctl.remote.forkserver[{os.getpid()}]: {text}\n".encode(), socket.MSG_DONTWAIT)
        except OSError:
            pass

    def _send(self, c: Conn, msg: dict) -> None:
        try:
            c.sock.send(wire.line(msg), socket.MSG_DONTWAIT)
        except OSError:
            pass

    def _close(self, c: Conn) -> None:
        if self.conns.pop(c.sock, None) is not None:
            try:  # for every holder: a grandchild that left the group may still have it as its stdout
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.sock.close()
            if not self.conns and not self.server.conns:
                self.server.quiet_since = time.monotonic()


def die_with_parent(parent: int) -> None:
    """In a child: SIGKILL when its server dies (Linux; the server is the far end of its lifeline,
    so a server killed by hand or by the OOM killer must not leave it running unwatched). Not SIGTERM:
    a SIGSTOPped (hung) child holds that pending for good, and no one is left to follow it with SIGKILL.
    A server that stops in order stops its children politely first."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), signal.SIGKILL)


def _exec_child(argv: list[str], env: dict[str, str], fd: int, nice: int | None = None) -> int:
    """Fork, then exec ``argv`` in its own session with ``fd`` as stdout and stderr (not posix_spawn:
    the child must ask to die with the server first, and take its ``nice``)."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:  # pragma: no cover - the child
        signal.set_wakeup_fd(-1)
        os.setsid()
        for sig in (signal.SIGPIPE, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)  # as Popen's restore_signals: an ignored signal stays so in exec
        die_with_parent(parent)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        say_missed(lower_priority(nice))  # on the stream: the head's log
        os.execvpe(argv[0], argv, env)
    except BaseException as e:  # noqa: BLE001 - said on the stream, then the shell's code
        try:
            os.write(2, f"clusterctl.remote.forkserver: cannot start {argv[0]}: {e}\n".encode())
        finally:
            os._exit(127)
    return 0  # pragma: no cover - unreachable


def open_side(enabled: bool) -> DirectSide | None:
    """The server's direct side, listening and published for the head before the server says it is
    ready; None when not asked for or not possible (the head then starts processes through agents)."""
    if not enabled:
        return None
    try:
        side = DirectSide()
        side.publish()
    except OSError as e:
        print(f"forkserver: no direct route: {e}", file=sys.stderr, flush=True)
        return None
    return side
