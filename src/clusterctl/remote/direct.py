"""The head's side of the direct route: a remote Dask process as one ``ssh -W`` to its host's fork server.

Through an agent, each remote worker cost an ssh session that runs the user's shell (and its
``~/.bashrc``), then a Python interpreter for the agent, before the host's fork server forked it.
Here the local ``ssh`` forwards its stdin and stdout to the server's loopback port over the host's
shared connection (a channel, no remote process), and the server itself is the far end of the
lifeline (remote/directserve.py). The local ``ssh`` stays the process the supervisor watches: its
pid, its stdin (the lifeline and heartbeat), its exit. A thread per process copies the output to
the process's log and reads the exit code from the stream's trailer (remote/wire.py)::

    >>> route = learn(tag, "ws1", {"port": 40123, "token": "..."})     # from `probe install --warm`
    >>> child = DirectChild(cfg, spec, route)                           # doctest: +SKIP
    >>> child.poll()      # None while it runs; its Dask exit code after; 255 when the link went

Routes (remote/routes.py) are used only while their server is surely alive. A failure before the
process starts ends the handle with NOT_STARTED and marks the route: the supervisor starts the
process again at once (remote/launch.py then chooses the agent), spending no restart budget. A
handle never changes its transport or its pid.
"""

from __future__ import annotations

import os
import secrets
import selectors
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from ..plan.ssh import NOT_STARTED, SERVER_LOST, SSH_FAILED
from ..plan.tag import KEEP_ENVIRON, TAG_ENV
from ..runtime.logs import private_file, write_header
from . import ssh, wire
from .routes import IDLE, SAFETY, Route, fail, forget, forward_argv, learn, route, sweep  # noqa: F401 - the API

if TYPE_CHECKING:
    from ..plan.specs import ProcessSpec
    from ..topology import ClusterConfig

REFUSED = 1  # the exit code of a process the server would not start (the reason is in its log)
HOLD = 256  # bytes of output held back while they may be the start of the trailer
HANDSHAKE_TIMEOUT = 40.0  # seconds for the server's answers (it may still be importing distributed)


class Early(Exception):
    """The route failed before the server said it started the process: the handle ends NOT_STARTED."""


class DirectChild:
    """Popen's face (pid, stdin, returncode, poll, wait, send_signal) for a process started through a
    route: the local ``ssh -W``'s pid and stdin, for its whole life. If the route fails before the
    process starts, it ends with NOT_STARTED and ``start_error`` says why."""

    def __init__(self, cfg: ClusterConfig, spec: ProcessSpec, way: Route, request: dict[str, Any]):
        self.argv = forward_argv(cfg, spec.at, way)
        self.cfg, self.spec, self.route, self.request, self.log_path = cfg, spec, way, request, spec.log_path
        self.tag = spec.env.get(TAG_ENV, "")
        self.returncode: int | None = None
        self.start_error = ""  # why the route failed before the process started (then NOT_STARTED)
        self._hello = secrets.token_hex(16)
        self._running = False  # the server said it started the process
        self._closing = False  # the supervisor closed the lifeline: a stop
        self._stop_lock = threading.Lock()
        self._done = threading.Event()
        self._log: Any = None
        if self.log_path:
            write_header(self.log_path, self.argv, how="direct")
            self._log = private_file(self.log_path)
        env = {**os.environ, **spec.env, **KEEP_ENVIRON}
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=env, cwd=str(spec.cwd) if spec.cwd else None, start_new_session=True)
        self._write(wire.line({"hello": self._hello}))
        way.attach(self)
        threading.Thread(target=self._run, name=f"direct-{spec.name}", daemon=True).start()

    # -- Popen's face -------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdin(self) -> Any:
        return self.popen.stdin

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.argv, timeout)  # type: ignore[arg-type]
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        with self._stop_lock:
            self._closing = True  # signalled by the supervisor: a stop, never the route's failure
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(9)

    def close_lifeline(self, kill: bool = False) -> bool:
        """The supervisor's stop: close the lifeline (a failure after it is a stop's); True if it was open.
        With ``kill``, the far side first hears wire.KILL: the process's group is killed there at once."""
        with self._stop_lock:
            self._closing = True
            return shut_lifeline(self.stdin, kill and self._running)  # (before the request the word would be garbage)

    # -- the stream -----------------------------------------------------------------------------
    def _run(self) -> None:
        code: int | None = None
        try:
            try:
                code = self._stream()
            except Early as e:
                code = self._early(str(e))
            except Exception as e:  # noqa: BLE001 - a stream we cannot read is a route we cannot use
                code = self._early(f"{type(e).__name__}: {e}") if not self._running else REFUSED
            if code is None:
                code = self._lost()
        finally:
            self._end_ssh()
            self.returncode = REFUSED if code is None else code
            self._done.set()

    def _end_ssh(self) -> None:
        if self.popen.stdout.closed:  # type: ignore[union-attr]
            return
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        for pipe in (self.popen.stdout, self.popen.stderr):
            pipe.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _stream(self) -> int | None:
        """Handshake, then copy; the exit code from the trailer, or None when the stream just ended."""
        sel = selectors.DefaultSelector()
        sel.register(self.popen.stdout, selectors.EVENT_READ, "out")
        sel.register(self.popen.stderr, selectors.EVENT_READ, "err")
        buf, stage, said = b"", "hello", []
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        try:
            while sel.get_map():
                left = deadline - time.monotonic() if stage != "run" else None
                if left is not None and left <= 0:
                    raise Early(f"no answer from its fork server within {HANDSHAKE_TIMEOUT:g} s")
                for key, _ in sel.select(left):
                    chunk = os.read(key.fileobj.fileno(), 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    if key.data == "err":  # ssh's own words
                        said.append(chunk)
                        self._out(chunk)
                        continue
                    buf += chunk
                    while stage != "run" and b"\n" in buf:
                        raw, _, buf = buf.partition(b"\n")
                        stage = self._handshake(stage, raw)
                    if stage != "run" and len(buf) > wire.MAX_LINE:
                        raise Early("its fork server's answer is too long")
                    if stage == "run":
                        cut = buf.rfind(b"\x00", max(0, len(buf) - HOLD))
                        keep = cut if cut >= 0 else len(buf)
                        self._out(buf[:keep])
                        buf = buf[keep:]
        finally:
            sel.close()
        out, msg = wire.parse_trailer(buf)
        self._out(out)
        if msg is not None and isinstance(msg.get("exit"), int):
            self._end_ssh()
            self.route.quiet_since = time.monotonic()  # its server saw this connection close just now
            return msg["exit"]
        if stage != "run":
            why = b"".join(said).decode(errors="replace").strip().splitlines()
            raise Early(why[-1] if why else "the connection to its fork server ended")
        return None

    def _handshake(self, stage: str, raw: bytes) -> str:
        import json

        msg = json.loads(raw)
        if not isinstance(msg, dict):
            raise Early("its fork server's answer is not an object")
        if "refused" in msg:
            raise Early(f"its fork server refused: {msg['refused']}")
        if stage == "hello":
            auth = wire.answer(self.route.token, self._hello, msg)
            if auth is None:
                raise Early("its port answered without the fork server's token")
            self._write(wire.line({"auth": auth, **self.request}))  # the environment only now
            return "request"
        self._running = True
        self._out(f"--- forked by {self.route.host}'s fork server\n".encode() if msg.get("how") == "fork"
                  else f"--- started by {self.route.host}'s fork server\n".encode())
        return "run"

    def _early(self, why: str) -> int:
        """Before the process started: the link went (255), the supervisor stopped it, or the route is
        no good (NOT_STARTED: the supervisor marks it, and the host's next starts go through the agent)."""
        if self.popen.poll() is None:  # still connected to something that is no use: leave it
            try:
                self.popen.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            self.popen.terminate()
        self._end_ssh()
        if self.popen.returncode == SSH_FAILED and not self._master_alive():
            return SSH_FAILED
        with self._stop_lock:
            if self._closing:
                return REFUSED  # stopped before it started
            self.start_error = why
        self._note(f"no direct start on {self.route.host} ({why}): its next start goes through the agent")
        return NOT_STARTED  # the supervisor marks the route (routes.fail) and starts it again

    def _lost(self) -> int:
        """The stream ended without a trailer after the process started: a stop that ran past its grace
        (the supervisor closed the lifeline, then killed the ssh), the link (255), the server went, or
        this channel alone dropped. The route is not judged here: the next start tries it, and a
        server that is gone fails that start early (NOT_STARTED), before anything runs."""
        self._end_ssh()
        if self._closing:
            return self.popen.returncode or REFUSED
        if self.popen.returncode == SSH_FAILED or not self._master_alive():
            return SSH_FAILED
        self._note(f"the fork server on {self.route.host} went, or the channel to it dropped, before its "
                   "process's exit was known")
        # A server that is still there had this connection until now: its idle time starts no earlier.
        self.route.quiet_since = time.monotonic()
        return SERVER_LOST

    def _master_alive(self) -> bool:
        return ssh.master(self.cfg, self.spec.at, "check") == 0

    # -- small things -------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        try:
            self.popen.stdin.write(data)  # type: ignore[union-attr]
            self.popen.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass  # closed: a stop came first, or ssh left; the stream's end says the rest

    def _out(self, data: bytes) -> None:
        if data and self._log is not None:
            try:
                self._log.write(data)
            except OSError:
                pass  # a full disk loses log lines, never the process

    def _note(self, text: str) -> None:
        if self._log is None and self.log_path:
            try:
                with private_file(self.log_path) as f:
                    f.write(f"clusterctl: {text}\n".encode())
            except OSError:
                pass
            return
        self._out(f"clusterctl: {text}\n".encode())


def shut_lifeline(stdin: Any, kill: bool) -> bool:
    """Close a lifeline, after wire.KILL with ``kill``; True if it was open."""
    if stdin is None or stdin.closed:
        return False
    if kill:
        try:
            stdin.write(wire.KILL)
            stdin.flush()
        except (OSError, ValueError):
            pass  # the ssh has gone: what it ran is going too
    try:
        stdin.close()
    except OSError:
        pass  # the ssh has gone already; closed all the same
    return True


def over_agent(spec: ProcessSpec, argv: tuple[str, ...]) -> subprocess.Popen:
    """A remote process started the agent's way: an ssh session running the agent (``argv``, from
    remote/launch.agent_argv), whose stdin stays open as its lifeline after the first line, its
    environment (ProcessSpec.preamble)."""
    from ..runtime import process

    popen = process.spawn(argv, log_path=spec.log_path, env=spec.env, cwd=spec.cwd, stdin=subprocess.PIPE)
    preamble = spec.preamble()
    if preamble and popen.stdin is not None:
        try:
            popen.stdin.write(preamble)
            popen.stdin.flush()
        except OSError:
            pass
    return popen


def start_request(cfg: ClusterConfig, spec: ProcessSpec) -> dict[str, Any]:
    """What the host's server is asked for: the role (it resolves Dask there), the arguments, the
    environment, the stop's grace, the lifeline's silence limit, whether the worker serves pages, and
    its priority (``nice``, when the host has one)."""
    h = cfg.host(spec.at)
    request = {"launch": spec.role, "args": list(spec.remote_args), "env": dict(spec.remote_env),
               "grace": cfg.timeouts.shutdown, "lifeline": h.lifeline_timeout, "dashboard": spec.dashboard}
    return {**request, "nice": spec.nice} if spec.nice is not None else request


def spawn(cfg: ClusterConfig, spec: ProcessSpec, way: Route) -> DirectChild:
    return DirectChild(cfg, spec, way, start_request(cfg, spec))
