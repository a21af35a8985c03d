"""Loopback control channel between the CLI and the running supervisor.

HTTP on 127.0.0.1 with a random port; every request carries the token from
``<state>/control.token`` (mode 0600) as a bearer token, compared in constant
time; without it a request gets 401 before its body is read. Any local user can
connect, so (limits below): one asyncio loop on one thread reads every request,
an idle client costing a file descriptor, never a thread, and getting 408 and
the door after ``REQUEST_TIMEOUT``. At most ``MAX_CONNECTIONS`` are open (and a
quarter of the open-file limit); at the cap a new one closes the OLDEST still
waiting for its request, so who holds hundreds of idle sockets loses their own
while the CLI, which sends its request as it connects, is answered (refusing the
newest would lock the CLI out as long as anyone keeps the sockets). Handlers run
on daemon threads, at most ``MAX_HANDLERS``; one more gets 503 at once rather
than queue behind a `worker remove` that may take minutes. Bodies: ``MAX_BODY``
(413; 411 if chunked), nested at most ``MAX_DEPTH`` (400), checked before
``json.loads`` (60 KB of ``[`` raise RecursionError in it, no ValueError). GET
serves only ``READ_ONLY`` (405). A refusal is one line on stderr (supervisor.log),
for each kind at most one per ``LOG_EVERY`` s with the count held back, never a
traceback; a handler's own bug is a 500 and its traceback once per command and type.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from http import HTTPStatus
from typing import Any, Callable

from ..errors import ClusterError
from .requests import READ_ONLY  # the commands GET may ask

resource: Any = None
with contextlib.suppress(ImportError):  # not on Windows
    import resource

MAX_BODY = 64 * 1024  # bytes of JSON body
MAX_DEPTH = 32  # nesting of [ and { in a body
MAX_HEADER_BYTES = 16 * 1024  # request line and headers together (431 above)
MAX_HEADERS = 64  # header lines
REQUEST_TIMEOUT = 5.0  # seconds from connect to the whole request read (408 after)
WRITE_TIMEOUT = 5.0  # seconds to hand the reply to a client that does not read it
LINGER = 1.0  # seconds to drain what a refused client still sends, so it reads our answer
MAX_HANDLERS = 32  # handler threads at once (503 above)
MAX_CONNECTIONS = 256  # open connections, and at most a quarter of RLIMIT_NOFILE
BACKLOG = 128  # listen queue: a burst waits in the kernel, costing us no descriptor
ACCEPT_BATCH = 8  # accepted per loop turn: a few turns pass before the oldest make room
LOG_EVERY = 1.0  # seconds: one refusal line per kind per period

Handler = Callable[[str, dict[str, Any]], dict[str, Any]]
Log = Callable[[str], None]

_STRING = re.compile(rb'"(?:[^"\\]+|\\.)*"?', re.DOTALL)  # a JSON string, or an unterminated one
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name


def json_depth(raw: bytes, stop: int = sys.maxsize) -> int:
    """The deepest ``[``/``{`` nesting outside strings in raw JSON; it stops one past ``stop``."""
    depth = deepest = 0
    for b in _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth = depth + 1 if b in b"[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
        if deepest > stop:
            break
    return deepest


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: json.loads takes them by default


def _stderr(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # a closed log must not end the channel
        print(line, file=sys.stderr, flush=True)


class Refused(Exception):
    """A request answered with ``code`` and one line; ``drain``: the client may still be sending."""

    def __init__(self, code: int, message: str, drain: bool = True):
        super().__init__(message)
        self.code, self.message, self.drain = code, message, drain


class RefusalLog:
    """A line for a refusal, then for its kind at most one a period (``every`` s): the count held
    back. Used from the control loop's thread only (``later`` schedules the end of a period)."""

    def __init__(self, write: Log, later: Callable[[float, Callable[[], None]], Any], every: float = LOG_EVERY):
        self.write, self.later, self.every = write, later, every
        self.held: dict[str, list] = {}  # kind whose period has its line -> [refusals held back, last detail]

    def __call__(self, kind: str, detail: str) -> None:
        detail = (detail.splitlines() or [""])[0][:200]
        if kind in self.held:
            self.held[kind][:] = [self.held[kind][0] + 1, detail]
        else:
            self._line(kind, detail)

    def _end(self, kind: str) -> None:
        count, detail = self.held.pop(kind)
        if count:
            self._line(kind, f"x{count} more in the last {self.every:g} s (last: {detail})")

    def _line(self, kind: str, text: str) -> None:
        event, text = ("error", text) if kind == "error" else ("refused", f"{kind} {text}")
        self.write(f"{time.strftime('%H:%M:%S')} {'control':<14} {event:<12} {text}")
        self.held[kind] = [0, ""]
        self.later(self.every, lambda: self._end(kind))


class ControlServer:
    """Serves POST /<command> with a JSON body; ``handle(command, body)``, run on a thread of its
    own, returns the reply, or raises ClusterError: a 400 with its words."""

    def __init__(self, token: str, handle: Handler, host: str = "127.0.0.1", *,
                 read_only: frozenset[str] = READ_ONLY, log: Log | None = None,
                 request_timeout: float = REQUEST_TIMEOUT, max_handlers: int = MAX_HANDLERS,
                 max_connections: int = MAX_CONNECTIONS):
        self.token = token
        self.handle, self.read_only = handle, frozenset(read_only)
        self.request_timeout, self.max_handlers, self.max_connections = request_timeout, max_handlers, max_connections
        self._write = log or _stderr
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._loop_error)
        self.log = RefusalLog(self._write, self._loop.call_later)
        self._sock = socket.create_server((host, 0), backlog=BACKLOG)
        self.address = f"{host}:{self._sock.getsockname()[1]}"
        self._conns: dict[asyncio.Task, asyncio.StreamWriter] = {}  # open connections, oldest first
        self._busy: set[asyncio.Task] = set()  # those being handled: never closed to make room
        self.handlers = 0  # handler threads running
        self._traced: set[tuple[str, str]] = set()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._ready = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ControlServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def close(self) -> None:
        """Stop listening and close every connection; handler threads still running finish alone."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):  # closing anyway
                asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(timeout=5)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        elif not self._loop.is_closed():
            self._loop.close()  # never started
        self._sock.close()

    def open_connections(self) -> int:
        return len(self._conns)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(asyncio.start_server(
                self._connection, sock=self._sock, limit=MAX_HEADER_BYTES, backlog=ACCEPT_BATCH))
            self._sock.listen(BACKLOG)  # asyncio's listen() set the queue to the batch: widen it again
            self._ready.set()
            self._loop.run_forever()
        finally:
            self._ready.set()
            self._loop.close()

    async def _close_all(self) -> None:
        self._server.close()
        for task in self._conns:  # cancel() only schedules: the dict does not change meanwhile
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    def _loop_error(self, loop: Any, context: dict[str, Any]) -> None:
        """asyncio's own complaints (an accept failing with EMFILE, say) as one line, never a traceback."""
        exc = context.get("exception")
        what = f"{type(exc).__name__}: {exc}" if exc else ""
        with contextlib.suppress(RuntimeError):  # also called from a task's __del__ once the loop is closed
            self.log("error", f"{context.get('message', 'asyncio error')} {what}".strip())

    # -- one connection -------------------------------------------------------------------------
    def _capacity(self) -> int:
        """MAX_CONNECTIONS, and at most a quarter of the open-file limit (read each time: it can change)."""
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if resource else resource.RLIM_INFINITY
        except (AttributeError, OSError, ValueError):
            return self.max_connections
        return self.max_connections if soft == resource.RLIM_INFINITY else max(4, min(self.max_connections, soft // 4))

    def _make_room(self) -> bool:
        """At the cap: close the oldest connection that is not being handled. False if none is."""
        if len(self._conns) < self._capacity():
            return True
        for task, writer in self._conns.items():
            if task not in self._busy:
                del self._conns[task]
                writer.transport.abort()
                task.cancel()
                self.log("evicted", "oldest waiting connection closed to make room for a new one")
                return True
        return False

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if not self._make_room():
            self.log("503", f"{len(self._conns)} connections open, all being handled")
            writer.write(_response(503, {"error": "the supervisor is busy; try again"}))
            writer.close()
            return
        self._conns[task] = writer
        writer.transport.set_write_buffer_limits(0)  # drain() returns once the kernel has it all
        try:
            await self._exchange(reader, writer, task)
        except asyncio.CancelledError:
            pass  # evicted, or the server is closing
        except Exception as e:  # noqa: BLE001 - a bug in one exchange must not end the channel
            self.log("error", f"control connection failed: {type(e).__name__}: {e}")
        finally:
            self._conns.pop(task, None)
            self._busy.discard(task)
            writer.transport.abort()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: Any) -> None:
        try:
            async with asyncio.timeout(self.request_timeout):
                command, body = await self._read(reader, writer)
        except TimeoutError:
            self.log("408", f"no complete request within {self.request_timeout:g} s")
            return await _send(writer, reader, 408, {"error": "request not complete in time"}, drain=False)
        except Refused as r:
            self.log(str(r.code), r.message)
            headers = {"Allow": "GET, POST"} if r.code == 405 else {}
            return await _send(writer, reader, r.code, {"error": r.message}, r.drain, headers)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.log("aborted", "the client left before its request was complete")
            return
        self._busy.add(task)
        code, data = await self._dispatch(command, body)
        self._busy.discard(task)
        await _send(writer, reader, code, data, drain=False)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, dict[str, Any]]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise Refused(431, f"request headers over {MAX_HEADER_BYTES} bytes") from None
        method, target, headers = _parse_head(head)
        if not hmac.compare_digest(headers.get("authorization", "").encode("latin-1"), f"Bearer {self.token}".encode()):
            raise Refused(401, "missing or wrong control token")  # before reading anything a stranger sent
        command = target.split("?", 1)[0].strip("/")
        if method not in ("GET", "POST") or (method == "GET" and command not in self.read_only):
            allowed = "GET or POST" if command in self.read_only else "POST"
            raise Refused(405, f"{method} is not allowed for {command[:40]!r}; use {allowed}")
        length = _content_length(headers, method)
        if headers.get("expect", "").lower() == "100-continue" and length:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        raw = await reader.readexactly(length) if length else b""
        return command, _parse_body(raw)

    async def _dispatch(self, command: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | bytes]:
        if self.handlers >= self.max_handlers:
            self.log("503", f"{self.handlers} requests already being handled")
            return 503, {"error": "the supervisor is busy with other requests; try again"}
        self.handlers += 1
        done = self._loop.create_future()
        threading.Thread(target=self._work, args=(command, body, done), name=f"control-{command[:20]}",
                         daemon=True).start()
        code, data, problem = await done
        if problem:
            self.log(str(code), f"{command[:40]}: {problem}")
        return code, data

    def _work(self, command: str, body: dict[str, Any], done: asyncio.Future) -> None:
        """On a handler thread: run the handler, encode its answer, hand it back to the loop."""
        problem = None
        try:
            code, data = 200, json.dumps(self.handle(command, body)).encode()
        except ClusterError as e:
            code, data, problem = 400, json.dumps({"error": str(e)}).encode(), str(e)
        except Exception as e:  # noqa: BLE001 - the supervisor must not die of a request
            code, problem = 500, f"{type(e).__name__}: {e}"
            data = json.dumps({"error": problem}).encode()
            key = (command[:40], type(e).__name__)
            if key not in self._traced:  # a bug of ours: its traceback once, then one line
                self._traced.add(key)
                self._write("".join(traceback.format_exception(e)).rstrip())
        with contextlib.suppress(RuntimeError):  # the server closed meanwhile
            self._loop.call_soon_threadsafe(self._finish, done, (code, data, problem))

    def _finish(self, done: asyncio.Future, outcome: tuple[int, bytes, str | None]) -> None:
        self.handlers -= 1
        if not done.done():
            done.set_result(outcome)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Request line and headers; header names lower-cased. Refused (400) when malformed."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[1].startswith("/"):
        raise Refused(400, "malformed request line")
    if len(lines) - 1 > MAX_HEADERS:
        raise Refused(431, f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise Refused(400, "malformed header line")
        name = name.lower()
        if name in headers and name in ("authorization", "content-length", "transfer-encoding", "expect"):
            raise Refused(400, f"repeated {name} header")
        headers[name] = value.strip(" \t")
    return parts[0], parts[1], headers


def _content_length(headers: dict[str, str], method: str) -> int:
    if "transfer-encoding" in headers:
        raise Refused(411, "send the body with a Content-Length, not chunked")
    text = headers.get("content-length")
    if text is None:
        return 0  # no Content-Length and no Transfer-Encoding: no body (RFC 9112 6.3)
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise Refused(400, "Content-Length must be a whole number of bytes")
    length = int(text)
    if length > MAX_BODY:
        raise Refused(413, f"request body too large: {length} bytes, at most {MAX_BODY}")
    if length and method == "GET":
        raise Refused(400, "GET takes no body")
    return length


def _parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    if json_depth(raw, stop=MAX_DEPTH) > MAX_DEPTH:
        raise Refused(400, f"request body nested deeper than {MAX_DEPTH} levels", drain=False)
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise Refused(400, "request body is not a JSON object", drain=False)
    return body


def _response(code: int, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"HTTP/1.1 {code} {HTTPStatus(code).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n{extra}\r\n")
    return head.encode() + data


async def _send(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, code: int,
                body: dict[str, Any] | bytes, drain: bool, headers: dict[str, str] | None = None) -> None:
    """Write the reply; if the client may still be sending, read that away first (for ``LINGER`` at
    most) so that closing does not reset the connection before it has read the answer."""
    try:
        writer.write(_response(code, body, headers))
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()
        if drain and writer.can_write_eof():
            writer.write_eof()
            async with asyncio.timeout(LINGER):
                for _ in range(64):
                    if not await reader.read(64 * 1024):
                        break
    except (TimeoutError, ConnectionError, OSError):
        pass


def request(address: str, token: str | None, command: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Send one command; raise ClusterError with the supervisor's own words on refusal."""
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(f"http://{address}/{command}", data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback only
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", e.reason)
        except (ValueError, AttributeError):
            msg = e.reason
        raise ClusterError(f"supervisor refused `{command}`: {msg}") from None
    except (OSError, ValueError) as e:
        raise ClusterError(f"cannot reach the supervisor at {address}: {e}") from None
