"""A host's warm start: one server per cluster and host forks its Dask processes.

On the head, `runtime/warm.py` forks local Dask processes from a server that
imported distributed once. A remote host had no such thing: every worker there
paid its own interpreter and ``import distributed`` (about 0.6 s of CPU each),
so a fleet came up 3x slower than as many local workers. Here the agents of one
host share a server, started by the first agent that finds none::

    agent --(unix socket in the host's workdir, 0600)--> forkserver --fork--> dask worker

The agent stays what the supervisor talks to: it sends the planned argv, the
environment and cwd, and its own stdout and stderr (SCM_RIGHTS: the child's
output still flows over the agent's ssh channel into the head's log); it gets
the child's pid back, then its exit code when the server reaps it. The agent
signals the child as before (it leads its own session). The connection is a
second lifeline: an agent that dies (SIGKILL) closes it, and the server stops
that agent's child (SIGTERM, then SIGKILL after the grace).

Forking is used only where it is equivalent to exec: the Dask of the agent's
own interpreter, and an environment that differs from the server's only in
variables no library reads at import (``DASK_*``, ``CLUSTERCTL_*``, ssh's
session variables). Anything else, or ``CLUSTERCTL_WARM=0``, or any failure to
reach the server, and the agent execs as before. The server carries the
cluster's tag (a sweep stops it with the rest) and leaves after IDLE seconds
with no child and no agent.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from ..runtime import entry as warm  # light: agents import this module for its constants
from ..runtime.childhandle import check_nice, lower_priority, say_missed
from ..runtime.entry import differs, neutral  # noqa: F401 - the one forking rule, used here and by directserve

if TYPE_CHECKING:
    from .directserve import DirectSide

SOCKET = "forkserver.sock"  # relative to the host's workdir: a unix socket path must be short
LOCK = "forkserver.lock"
IDLE = 10.0  # seconds with no child and no agent before the server leaves (a later start pays ~0.6 s)
START_TIMEOUT = 10.0
MAX_REQUEST = 1 << 20
# -- the server -----------------------------------------------------------------------------------

class Server:
    """Single-threaded (it forks): one select loop over the listening socket, the agents'
    connections and a self-pipe woken by SIGCHLD/SIGTERM."""

    def __init__(self, listener: socket.socket, idle: float, direct: DirectSide | None = None):
        self.listener, self.idle, self.direct = listener, idle, direct
        if direct is not None:
            direct.server = self
        self.base = dict(os.environ)
        self.conns: dict[socket.socket, bytearray] = {}
        self.fds: dict[socket.socket, list[int]] = {}
        self.children: dict[int, socket.socket | None] = {}  # pid -> its agent's connection
        self.kill_at: dict[int, float] = {}  # pid -> when SIGKILL follows the SIGTERM
        self.grace: dict[int, float] = {}
        self.quiet_since = time.monotonic()
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def serve(self) -> None:
        try:
            self._serve()
        finally:
            for pid in list(self.children):  # leaving, for whatever reason: so does what it started
                _signal_group(pid, signal.SIGTERM)
                _signal_group(pid, signal.SIGCONT)  # a stopped one acts on it only once continued
            if self.direct is not None:
                self.direct.close()

    def _serve(self) -> None:
        while not self.stopping:
            direct = self.direct.sockets() if self.direct is not None else []
            busy = self.children or self.conns or (self.direct is not None and self.direct.busy())
            if not busy and time.monotonic() - self.quiet_since > self.idle:
                break
            writers = self.direct.writers() if self.direct is not None else []
            ready, writable, _ = select.select([self.listener, self.wake_r, *self.conns, *direct], writers, [], 0.5)
            self.dispatch(ready, writable)
            self._reap()
            self._escalate()
            if self.direct is not None:
                self.direct.tick(time.monotonic())

    def dispatch(self, ready: list[Any], writable: list[Any]) -> None:
        """One select's worth. A socket handled first (a trailer sent, then closed) may also be in the
        other list: each is looked up where it lives now, and one failing never ends the server."""
        for w in writable:
            if self.direct is not None and w in self.direct.conns:
                self.direct.flush(w)
        for r in ready:
            try:
                if self.direct is not None and r is self.direct.listener:
                    self.direct.accept()
                elif self.direct is not None and r in self.direct.conns:
                    self.direct.read(r)
                elif r is self.listener:
                    conn, _ = self.listener.accept()
                    self.conns[conn] = bytearray()
                    self.fds[conn] = []
                elif r == self.wake_r:
                    os.read(self.wake_r, 4096)
                elif r in self.conns:
                    self._read(r)
            except OSError as e:  # one connection's trouble (a reset, a race with its close)
                print(f"forkserver: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    def _read(self, conn: socket.socket) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(conn, 65536, 4)
        except OSError:
            data, fds = b"", []
        self.fds[conn] += fds
        if not data:
            self._gone(conn)
            return
        buf = self.conns[conn]
        if any(c is conn for c in self.children.values()):
            return  # after the request only the connection's end means anything
        buf += data
        if len(buf) > MAX_REQUEST:
            self._answer(conn, {"refused": "request too large"}, close=True)
        elif b"\n" in buf:
            self._fork(conn, bytes(buf).split(b"\n", 1)[0])

    def _answer(self, conn: socket.socket, msg: dict, close: bool = False) -> None:
        try:
            conn.sendall(json.dumps(msg).encode() + b"\n")
        except OSError:  # the agent went: a child started for it must not outlive it
            self._gone(conn)
            return
        if close:
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        for fd in self.fds.pop(conn, []):
            os.close(fd)
        self.conns.pop(conn, None)
        conn.close()
        if not self.conns:
            self.quiet_since = time.monotonic()

    def _gone(self, conn: socket.socket) -> None:
        """An agent went: its child, if it still runs, must not outlive it."""
        for pid, c in self.children.items():
            if c is conn:
                self.children[pid] = None
                _signal_group(pid, signal.SIGTERM)
                self.kill_at[pid] = time.monotonic() + self.grace.get(pid, 10.0)
        self._drop(conn)

    def _fork(self, conn: socket.socket, line: bytes) -> None:
        try:
            self._fork_one(conn, line)
        except Exception as e:  # noqa: BLE001 - one bad request (or a failed fork) must not end the server
            self._answer(conn, {"refused": f"{type(e).__name__}: {e}"}, close=True)

    def _fork_one(self, conn: socket.socket, line: bytes) -> None:
        try:
            req = json.loads(line)
            argv, env, cwd = list(req["argv"]), dict(req["env"]), str(req["cwd"])
            grace, dashboard = float(req.get("grace", 10.0)), bool(req.get("dashboard", True))
            nice = check_nice(req.get("nice"))
        except (ValueError, KeyError, TypeError) as e:
            self._answer(conn, {"refused": f"bad request: {e}"}, close=True)
            return
        bad = differs(self.base, env)
        if bad:
            self._answer(conn, {"refused": f"its environment differs in {', '.join(bad[:5])}"}, close=True)
            return
        if warm.entry_point(argv) is None or len(self.fds[conn]) != 2:
            self._answer(conn, {"refused": "not a Dask command, or no output descriptors"}, close=True)
            return
        out, err = self.fds.pop(conn)
        self.fds[conn] = []
        pid = self.fork_child(argv, env, out, err, cwd, dashboard=dashboard, nice=nice)
        self.children[pid] = conn
        self.grace[pid] = grace
        self._answer(conn, {"pid": pid})

    def fork_child(self, argv: list[str], env: dict[str, str], out: int, err: int, cwd: str = ".",
                   orphan: bool = False, dashboard: bool = True, nice: int | None = None) -> int:
        """Fork ``argv`` with ``out`` and ``err`` as its stdout and stderr (closed here after);
        ``orphan``: the child stops when this server dies (directserve.die_with_parent);
        ``dashboard``: a worker serving dashboard pages (Bokeh imported here once, not in each child);
        ``nice``: the child's priority, set in the child (this server, which forks schedulers too, keeps its own)."""
        if dashboard and "distributed.dashboard.worker" not in sys.modules \
                and warm.entry_point(argv)[0] == warm.ENTRY["worker"]:
            _preload(["distributed.dashboard.worker"])  # once, here, rather than in every child
        ours = [self.direct.listener, *self.direct.conns] if self.direct is not None else []  # every one:
        me = os.getpid()  # a stream held open by another process would never end
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child; never returns
                _child(argv, env, cwd, out, err, self.listener, [*self.conns], ours, self.wake_r, self.wake_w,
                       parent=me if orphan else 0, nice=nice)
        finally:
            os.close(out)
            os.close(err)
        return pid

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            self.kill_at.pop(pid, None)
            self.grace.pop(pid, None)
            if self.direct is not None and self.direct.reaped(pid, status):
                pass
            elif conn is not None:
                self._answer(conn, {"exit": os.waitstatus_to_exitcode(status)}, close=True)
            if not self.children:
                self.quiet_since = time.monotonic()

    def _escalate(self) -> None:
        now = time.monotonic()
        for pid, when in list(self.kill_at.items()):
            if now >= when:
                _signal_group(pid, signal.SIGKILL)
                del self.kill_at[pid]


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


def _child(argv: list[str], env: dict[str, str], cwd: str, out: int, err: int, *inherited: Any, parent: int = 0,
           nice: int | None = None) -> None:
    """In the forked child: become the planned Dask process, as runtime/warm.py's children do;
    with ``parent``, one that stops when that server dies; with ``nice``, at that priority."""
    code = 1
    try:
        for thing in inherited:  # the server's sockets and pipe are not the child's business
            for x in thing if isinstance(thing, list) else [thing]:
                try:
                    x.close() if hasattr(x, "close") else os.close(x)
                except OSError:
                    pass
        signal.set_wakeup_fd(-1)
        from ..runtime.handles import become_detached

        become_detached(argv, None, cwd, env)
        if parent:
            from .directserve import die_with_parent

            die_with_parent(parent)
        for key in [k for k in os.environ if k not in env]:  # the request's environment, not the server's
            del os.environ[key]
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        say_missed(lower_priority(nice))  # on its stream: the head's log
        import dask.config

        dask.config.refresh()  # DASK_* from this request's env, not the server's
        module, args, prog = warm.entry_point(argv)
        sys.argv = [prog, *args]
        importlib.import_module(module).main(args=args, prog_name=prog, standalone_mode=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - said on the agent's channel, then a plain failure
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _preload(modules: list[str]) -> None:
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001 - a child imports it itself then
            print(f"forkserver: cannot preload {mod}: {e}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clusterctl.remote.forkserver", description=__doc__.splitlines()[0])
    p.add_argument("--idle", type=float, default=IDLE, help="seconds with no child and no agent before leaving")
    p.add_argument("--preload", action="append", default=[], help="a module to import before serving")
    p.add_argument("--tag", default="", help="the cluster tag (for a sweep; the environment carries it too)")
    p.add_argument("--direct", action="store_true",
                   help="also serve the head over a loopback port (remote/wire.py), published in forkserver.route")
    args = p.parse_args(argv)
    old = os.umask(0o177)  # the socket: this user only (whoever connects can run a Dask process as us)
    try:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(SOCKET)
    finally:
        os.umask(old)
    listener.listen(1024)
    early: list[int] = []  # a stop while importing: leave then, tidily (socket and route file go)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _: early.append(signum))
    direct = None
    if args.direct:  # imported only here: every agent imports this module for its constants
        from .directserve import open_side

        direct = open_side(True)
    try:
        print("ready", flush=True)  # agents may connect now; they wait in the backlog while we import
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        _preload(args.preload)
        if "distributed" in args.preload and "distributed" not in sys.modules:  # no Dask here: nothing to serve (agents then exec and say why)
            return 1
        if not early:
            Server(listener, args.idle, direct).serve()
    finally:
        if direct is not None:
            direct.unpublish()
        try:  # before the listener closes: a server started after that binds a fresh path
            os.unlink(SOCKET)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
