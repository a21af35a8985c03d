"""Control channel (real loopback server, in-process) and the ledger beside it."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import stat
import struct
import threading
import time
from pathlib import Path

import psutil
import pytest

from clusterctl.errors import ClusterError
from clusterctl.runtime import ledger as ledger_mod
from clusterctl.runtime.control import (
    MAX_BODY,
    MAX_DEPTH,
    ControlServer,
    RefusalLog,
    json_depth,
    request,
)
from clusterctl.runtime.ledger import Ledger, LedgerRecord, ProcessRecord, atomic_write, LedgerUnreadable

TOKEN = "s3cret-token-ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789"


class Recorder:
    """The supervisor's side: counts every call it gets."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.lines: list[str] = []  # what the server logged

    def __call__(self, command: str, body: dict) -> dict:
        self.calls.append((command, body))
        if command == "boom":
            raise ClusterError("no worker named 'w9'; known: w0, w1")
        if command == "crash":
            raise KeyError("oops")
        return {"ok": True, "command": command, "echo": body}


@pytest.fixture(scope="module")
def shared_server():
    handler = Recorder()
    srv = ControlServer(TOKEN, handler, log=handler.lines.append).start()
    try:
        yield srv, handler
    finally:
        srv.close()


@pytest.fixture
def server(shared_server):
    srv, handler = shared_server
    handler.calls.clear()
    return srv, handler


def raw_post(address: str, path: str, body: bytes, token: str | None = TOKEN, headers: dict | None = None):
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        h = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        conn.request("POST", path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


# -- the happy path -----------------------------------------------------------------


def test_right_token_gets_the_handlers_reply(server):
    srv, handler = server
    reply = request(srv.address, TOKEN, "scale", {"group": "default", "n": 3}, timeout=5)
    assert reply == {"ok": True, "command": "scale", "echo": {"group": "default", "n": 3}}
    assert handler.calls == [("scale", {"group": "default", "n": 3})]


def test_empty_body_is_an_empty_object(server):
    srv, handler = server
    status, reply = raw_post(srv.address, "/status?verbose=1", b"")
    assert status == 200
    assert handler.calls == [("status", {})]


def test_binds_loopback_only(server):
    srv, _ = server
    host, port = srv.address.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) > 0
    listening = [c.laddr for c in psutil.Process().net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == int(port)]
    assert listening == [("127.0.0.1", int(port))]


def test_not_reachable_on_other_interfaces(server):
    srv, _ = server
    port = int(srv.address.rsplit(":", 1)[1])
    others = [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]
    if not others:
        pytest.skip("no non-loopback IPv4 address on this machine")
    with pytest.raises(OSError):
        socket.create_connection((others[0], port), timeout=2).close()


# -- refusals: the handler is never called ------------------------------------------


@pytest.mark.parametrize(
    "token",
    [None, "", "wrong", TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y"), TOKEN[:-1], TOKEN + "9", TOKEN.lower()],
    ids=["none", "empty", "wrong", "last-char", "prefix", "longer", "case"],
)
def test_bad_tokens_are_refused(server, token):
    srv, handler = server
    with pytest.raises(ClusterError, match=r"refused `scale`.*token"):
        request(srv.address, token, "scale", {"n": 100}, timeout=5)
    assert handler.calls == []


@pytest.mark.parametrize("header", ["", TOKEN, f"Basic {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN}"])
def test_malformed_authorization_headers_are_refused(server, header):
    srv, handler = server
    status, reply = raw_post(srv.address, "/down", b"{}", token=None, headers={"Authorization": header})
    assert status == 401
    assert "token" in reply["error"]
    assert handler.calls == []


def test_get_is_authenticated_too(server):
    srv, handler = server
    host, port = srv.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/down")
    assert conn.getresponse().status == 401
    conn.close()
    assert handler.calls == []


def test_token_from_a_tampered_file_is_refused(tmp_path: Path):
    led = Ledger(tmp_path)
    handler = Recorder()
    srv = ControlServer(led.new_token(), handler).start()
    try:
        good = led.read_token()
        assert request(srv.address, good, "ping", timeout=5)["ok"] is True
        tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
        led.token_path.write_text(tampered + "\n")
        with pytest.raises(ClusterError, match="refused"):
            request(srv.address, led.read_token(), "down", timeout=5)
        assert [c for c, _ in handler.calls] == ["ping"]
    finally:
        srv.close()


# -- bad requests -------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42", b"null", b"not json", b"{\"a\": "])
def test_body_not_a_json_object_is_400(server, body):
    srv, handler = server
    status, reply = raw_post(srv.address, "/scale", body)
    assert status == 400
    assert "JSON object" in reply["error"]
    assert handler.calls == []


def test_body_not_an_object_through_request(server):
    srv, handler = server
    with pytest.raises(ClusterError, match="not a JSON object"):
        request(srv.address, TOKEN, "scale", [1, 2], timeout=5)  # type: ignore[arg-type]
    assert handler.calls == []


def test_body_over_64k_is_413(server):
    srv, handler = server
    with pytest.raises(ClusterError, match="too large"):
        request(srv.address, TOKEN, "scale", {"pad": "x" * (MAX_BODY + 1)}, timeout=5)
    status, reply = raw_post(srv.address, "/scale", b"{}", headers={"Content-Length": str(MAX_BODY + 1)})
    assert status == 413
    assert handler.calls == []


def test_body_of_exactly_64k_is_accepted(server):
    srv, handler = server
    overhead = len(json.dumps({"pad": ""}).encode())
    body = {"pad": "x" * (MAX_BODY - overhead)}
    assert len(json.dumps(body).encode()) == MAX_BODY
    assert request(srv.address, TOKEN, "scale", body, timeout=5)["ok"] is True
    assert len(handler.calls) == 1


def test_handler_cluster_error_reaches_the_client(server):
    srv, handler = server
    with pytest.raises(ClusterError) as info:
        request(srv.address, TOKEN, "boom", timeout=5)
    assert "no worker named 'w9'; known: w0, w1" in str(info.value)
    assert "refused `boom`" in str(info.value)
    assert len(handler.calls) == 1


def test_handler_crash_is_a_500_and_the_server_lives_on(server):
    srv, handler = server
    with pytest.raises(ClusterError, match="KeyError"):
        request(srv.address, TOKEN, "crash", timeout=5)
    assert request(srv.address, TOKEN, "status", timeout=5)["ok"] is True


def test_closed_server_cannot_be_reached():
    srv = ControlServer(TOKEN, Recorder()).start()
    address = srv.address
    srv.close()
    with pytest.raises(ClusterError, match="cannot reach the supervisor"):
        request(address, TOKEN, "status", timeout=2)


# -- hardening: hostile clients -----------------------------------------------------


def raw_exchange(address: str, data: bytes, timeout: float = 5) -> tuple[int | None, dict | None]:
    """Send raw bytes, read until the server closes; (status, JSON body) or (None, None) if it said nothing."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    if not got:
        return None, None
    head, _, body = got.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def msg(method: str, path: str, body: bytes = b"", token: str | None = TOKEN, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    length = f"Content-Length: {len(body)}\r\n" if body or method == "POST" else ""
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}{length}{extra}\r\n".encode() + body


@pytest.fixture
def quick_server():
    """A server of its own with a 0.5 s request deadline and small caps, and what it logged."""
    servers = []

    def make(handler=None, **kw):
        handler = handler or Recorder()
        kw.setdefault("request_timeout", 0.5)
        srv = ControlServer(TOKEN, handler, log=handler.lines.append, **kw).start()
        servers.append(srv)
        return srv, handler

    yield make
    for srv in servers:
        srv.close()


@pytest.mark.parametrize("command", ["status", "ping"])
def test_get_serves_the_read_only_commands(server, command):
    srv, handler = server
    assert raw_exchange(srv.address, msg("GET", f"/{command}"))[0] == 200
    assert handler.calls == [(command, {})]


@pytest.mark.parametrize(("method", "path"), [("GET", "/stop"), ("GET", "/scale"), ("GET", "/remove?names=a"),
                                              ("GET", "/add"), ("HEAD", "/status"), ("PUT", "/stop"),
                                              ("DELETE", "/scale")])
def test_anything_else_than_a_read_only_get_or_a_post_is_405(server, method, path):
    srv, handler = server
    status, reply = raw_exchange(srv.address, msg(method, path))
    assert status == 405 and "not allowed" in reply["error"]
    status, _ = raw_exchange(srv.address, msg(method, path, token="wrong"))
    assert status == 401  # strangers learn nothing, not even which commands exist
    assert handler.calls == []


@pytest.mark.parametrize(("raw", "depth"), [
    (b"{}", 1), (b"[]", 1), (b'{"a": [1, {"b": []}]}', 4), (b'"[[[[{{{{"', 0), (b'{"a": "[\\"[[["}', 1),
    (b'["\\\\", [[]]]', 3), (b"[" * 60_000, 60_000), (b"]]]][[", 2), (b'["unterminated [[[', 1), (b"", 0),
])
def test_json_depth_counts_brackets_outside_strings(raw, depth):
    assert json_depth(raw) == depth


def test_json_depth_stops_one_past_the_limit():
    assert json_depth(b"[" * 60_000, stop=MAX_DEPTH) == MAX_DEPTH + 1
    assert json_depth(b"[[]]" * 1000, stop=MAX_DEPTH) == 2


def test_deep_bodies_are_refused_before_parsing(server):
    srv, handler = server
    status, reply = raw_post(srv.address, "/status", b"[" * 60_000)  # json.loads: RecursionError
    assert status == 400 and f"deeper than {MAX_DEPTH}" in reply["error"]
    deepest_allowed = b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert raw_post(srv.address, "/status", deepest_allowed)[0] == 200
    too_deep = b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    assert raw_post(srv.address, "/status", too_deep)[0] == 400
    in_a_string = json.dumps({"pad": "[{" * 20_000}).encode()
    assert raw_post(srv.address, "/status", in_a_string)[0] == 200
    assert [c for c, _ in handler.calls] == ["status", "status"]


@pytest.mark.parametrize(("data", "code", "words"), [
    (msg("POST", "/scale", b"{}", extra="Content-Length: 2\r\n"), 400, "repeated content-length"),
    (b"POST /scale HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: abc\r\n\r\n", 400, "whole number"),
    (b"POST /scale HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: -1\r\n\r\n", 400, "whole number"),
    (b"POST /scale HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411, "Content-Length"),
    (msg("GET", "/status", b"{}"), 400, "GET takes no body"),
    (msg("POST", "/scale", extra="X-Pad: " + "a" * 20_000 + "\r\n"), 431, "headers over"),
    (msg("POST", "/scale", extra="".join(f"X-{i}: 1\r\n" for i in range(100))), 431, "headers"),
    (msg("POST", "/scale", extra="no colon here\r\n"), 400, "malformed header"),
    (b"POST /scale\r\n\r\n", 400, "malformed request line"),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 junk\r\n\r\n", 400, "malformed request line"),
    (msg("POST", "http://127.0.0.1/scale"), 400, "malformed request line"),
    (msg("POST", "/scale", b'{"count": NaN}'), 400, "not a JSON object"),
    (msg("POST", "/scale", b'{"count": Infinity}'), 400, "not a JSON object"),
    (msg("POST", "/scale", b'{"count": ' + b"9" * 5000 + b"}"), 400, "not a JSON object"),
    (msg("POST", "/scale", b'{"count": "\xff\xfe"}'), 400, "not a JSON object"),
    (msg("POST", "/scale", b"\x00" * 100), 400, "not a JSON object"),
])
def test_malformed_requests_get_one_line_and_reach_no_handler(server, data, code, words):
    srv, handler = server
    status, reply = raw_exchange(srv.address, data)
    assert status == code and words in reply["error"] and "\n" not in reply["error"]
    assert handler.calls == []


def test_missing_content_length_on_a_post_is_an_empty_body(server):
    srv, handler = server
    assert raw_exchange(srv.address, b"POST /status HTTP/1.0\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")[0] == 200
    assert handler.calls == [("status", {})]


def test_refused_clients_still_read_the_answer(server):
    """A refusal before the body is read must not reset the connection under the client's feet."""
    srv, handler = server
    big = b'{"pad": "' + b"x" * (MAX_BODY - 20) + b'"}'
    for _ in range(20):
        assert raw_exchange(srv.address, msg("POST", "/scale", big, token="wrong"))[0] == 401
        assert raw_exchange(srv.address, msg("POST", "/scale", big + b"x" * 100))[0] == 413
    assert handler.calls == []


def test_idle_and_slow_connections_are_closed_at_the_deadline(quick_server):
    srv, handler = quick_server()
    host, port = srv.address.rsplit(":", 1)
    t0 = time.monotonic()
    idle = socket.create_connection((host, int(port)), timeout=5)
    slow = socket.create_connection((host, int(port)), timeout=5)
    slow.sendall(b"POST /status HTTP/1.1\r\n")
    got = b""
    for _ in range(40):  # a slow-loris client: a header byte every 50 ms
        try:
            slow.sendall(b"X")
        except OSError:
            break
        time.sleep(0.05)
    for s in (idle, slow):
        try:
            while chunk := s.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
        s.close()
    assert b" 408 " in got
    assert time.monotonic() - t0 < 3  # deadline 0.5 s; a hang would be the 5 s socket timeout
    assert srv.open_connections() == 0
    assert any(" 408 no complete request within 0.5 s" in line for line in handler.lines), handler.lines
    assert request(srv.address, TOKEN, "ping", timeout=5)["ok"] is True


def test_handler_threads_are_bounded_and_extra_requests_get_503_at_once(quick_server):
    release = threading.Event()

    class Blocking(Recorder):
        def __call__(self, command, body):
            if command == "block":
                release.wait(10)
            return super().__call__(command, body)

    srv, handler = quick_server(Blocking(), max_handlers=2)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(request(srv.address, TOKEN, "block", timeout=10)))
               for _ in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: srv.handlers == 2)
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match="busy"):
        request(srv.address, TOKEN, "status", timeout=5)
    assert time.monotonic() - t0 < 2
    release.set()
    for t in threads:
        t.join(10)
    assert len(results) == 2 and srv.handlers == 0
    assert request(srv.address, TOKEN, "status", timeout=5)["ok"] is True


def test_at_the_connection_cap_the_oldest_idle_one_makes_room(quick_server):
    srv, handler = quick_server(request_timeout=30, max_connections=4)
    host, port = srv.address.rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(10)]
    try:
        wait_until(lambda: srv.open_connections() == 4)
        t0 = time.monotonic()
        assert request(srv.address, TOKEN, "status", timeout=5)["ok"] is True
        assert time.monotonic() - t0 < 2
        assert srv.open_connections() <= 4
        closed = []
        for s in idle:
            s.settimeout(0.2)
            try:
                closed.append(s.recv(1) == b"")
            except ConnectionResetError:
                closed.append(True)
            except TimeoutError:
                closed.append(False)
        assert closed == [True] * 7 + [False] * 3  # the newest three of them are still open
        assert any("evicted" in line for line in handler.lines)
    finally:
        for s in idle:
            s.close()


def test_refusals_are_logged_one_line_per_kind_per_second(quick_server):
    srv, handler = quick_server()
    n, t0 = 300, time.monotonic()
    for _ in range(n):
        assert raw_exchange(srv.address, msg("POST", "/scale", b"{}", token="wrong"))[0] == 401
    seconds = time.monotonic() - t0
    wait_until(lambda: not srv.log.held, timeout=5)  # every period over, every count written
    lines = [line for line in handler.lines if " 401 " in line]
    assert 2 <= len(lines) <= seconds + 2, lines  # the first, then one a second with the count held back
    held = sum(int(m) for line in lines for m in re.findall(r" x(\d+) more", line))
    assert held + sum(" more " not in line for line in lines) == n
    assert all("missing or wrong control token" in line and "\n" not in line for line in lines)
    assert not any("Traceback" in line for line in handler.lines)


def test_aborted_clients_are_one_line_never_a_traceback(quick_server, capfd):
    srv, handler = quick_server()
    host, port = srv.address.rsplit(":", 1)
    for i in range(100):  # half leave mid-headers, half mid-body (after their 401)
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(msg("POST", "/scale", b"x" * 60_000, token="wrong")[:40 if i % 2 else 30_000])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        s.close()
    wait_until(lambda: srv.open_connections() == 0)
    assert request(srv.address, TOKEN, "ping", timeout=5)["ok"] is True
    assert any(" aborted " in line for line in handler.lines)
    assert len(handler.lines) <= 8, handler.lines  # per kind: a line, a count, maybe one more
    assert "Traceback" not in "".join(handler.lines) + capfd.readouterr().err


def test_a_handler_bug_is_a_500_with_its_traceback_logged_once(quick_server):
    srv, handler = quick_server()
    for _ in range(3):
        with pytest.raises(ClusterError, match="KeyError"):
            request(srv.address, TOKEN, "crash", timeout=5)
    assert sum("Traceback" in line for line in handler.lines) == 1


def test_close_is_prompt_and_ends_every_connection(quick_server):
    srv, _ = quick_server(request_timeout=30)
    host, port = srv.address.rsplit(":", 1)
    idle = socket.create_connection((host, int(port)), timeout=5)
    wait_until(lambda: srv.open_connections() == 1)
    t0 = time.monotonic()
    srv.close()
    srv.close()  # twice is fine
    assert time.monotonic() - t0 < 2
    assert idle.recv(1) == b""
    idle.close()


def test_refusal_log_holds_back_and_counts():
    lines: list[str] = []
    timers: list = []
    log = RefusalLog(lines.append, lambda delay, fn: timers.append(fn))
    for i in range(5):
        log("401", f"bad token {i}")
    log("413", "too large")
    assert [line.split(" ", 1)[1] for line in lines] == [
        "control        refused      401 bad token 0", "control        refused      413 too large"]
    timers.pop(0)()  # the 401 period ends: one summary, a new period
    assert lines[-1].endswith("401 x4 more in the last 1 s (last: bad token 4)")
    timers.pop(0)()  # the 413 period ends with nothing held: quiet again
    timers.pop(0)()  # the 401 period after the summary ends with nothing held
    assert len(lines) == 3 and not log.held
    log("401", "again\nand a second line")
    assert lines[-1].endswith("401 again")


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- ledger -------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_token_is_private_and_fresh(tmp_path: Path):
    led = Ledger(tmp_path / "state")
    led.root.mkdir()
    led.token_path.write_text("old")
    os.chmod(led.token_path, 0o644)
    old_umask = os.umask(0)  # even a careless umask must not widen it
    try:
        first = led.new_token()
    finally:
        os.umask(old_umask)
    assert mode_of(led.token_path) == 0o600
    assert led.read_token() == first
    assert len(first) >= 32
    second = led.new_token()
    assert second != first
    assert led.read_token() == second
    assert mode_of(led.token_path) == 0o600


def test_atomic_write_default_mode_and_no_leftovers(tmp_path: Path):
    target = tmp_path / "sub" / "ledger.json"
    atomic_write(target, "hello")
    atomic_write(target, "hello again")
    assert target.read_text() == "hello again"
    assert mode_of(target) == 0o644
    assert os.listdir(target.parent) == ["ledger.json"]


@pytest.mark.parametrize("where", ["fsync", "replace"])
@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()], ids=["oserror", "interrupt"])
def test_atomic_write_failing_midway_keeps_old_content(tmp_path: Path, monkeypatch, where, exc):
    target = tmp_path / "ledger.json"
    atomic_write(target, '{"state": "running"}')

    def fail(*a, **k):
        raise exc

    monkeypatch.setattr(ledger_mod.os, where, fail)
    with pytest.raises(type(exc)):
        atomic_write(target, '{"state": "half-written')
    monkeypatch.undo()
    assert target.read_text() == '{"state": "running"}'
    assert os.listdir(tmp_path) == ["ledger.json"]


def test_atomic_write_of_something_unwritable_keeps_old_content(tmp_path: Path):
    target = tmp_path / "ledger.json"
    atomic_write(target, "old")

    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot render")

    with pytest.raises((TypeError, RuntimeError)):
        atomic_write(target, Unprintable())  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["ledger.json"]


def test_ledger_round_trip(tmp_path: Path):
    led = Ledger(tmp_path)
    assert led.read() is None
    boot = psutil.boot_time()  # identities from before the last boot are dropped on read
    record = LedgerRecord.model_validate({
        "state": "running",
        "supervisor": {"pid": 1234, "create_time": boot + 0.25},
        "processes": [{"name": "default-0", "role": "worker", "pid": 42, "create_time": boot + 1.5},
                      {"name": "gone", "role": "worker", "pid": None}],
    })
    led.write(record)
    got = led.read()
    assert isinstance(got.updated, float)
    assert got.model_copy(update={"updated": None}) == record
    assert record.updated is None  # the caller's record is not changed
    assert (got.supervisor_id.pid, got.supervisor_id.create_time) == (1234, boot + 0.25)
    assert [(p.name, pid.pid, pid.create_time) for p, pid in got.process_ids()] == [("default-0", 42, boot + 1.5)]
    assert got.process("gone") == ProcessRecord(name="gone", role="worker") and got.process("nobody") is None
    assert LedgerRecord().supervisor_id is None and LedgerRecord().process_ids() == []


def test_ledger_json_keeps_its_keys_and_ignores_unknown_ones(tmp_path: Path):
    led = Ledger(tmp_path)
    led.path.write_text(json.dumps({"state": "degraded", "from_a_newer_version": 1,
                                    "scheduler": {"address": "tcp://127.0.0.1:8786", "http_port": 8787}}))
    got = led.read()
    assert got.state == "degraded" and got.scheduler.http_port == 8787
    led.write(got)
    on_disk = json.loads(led.path.read_text())
    assert on_disk["scheduler"]["address"] == "tcp://127.0.0.1:8786"
    assert {"version", "name", "state", "supervisor", "scheduler", "processes", "updated"} <= set(on_disk)


@pytest.mark.parametrize(
    "content",
    [b"", b'{"state": "runn', b"garbage", b"\xff\xfe\x00binary", b"{\"a\": 1}{\"b\": 2}"],
    ids=["empty", "truncated", "garbage", "binary", "two-docs"],
)
def test_ledger_read_of_a_corrupt_file_is_unreadable_not_absent(tmp_path: Path, content: bytes):
    """Unknown is not "nothing runs": `down` then sweeps by tag, `up` refuses."""
    led = Ledger(tmp_path)
    led.path.write_bytes(content)
    with pytest.raises(LedgerUnreadable):
        led.read()


@pytest.mark.parametrize("content", ["[1, 2]", '"running"', "42"])
def test_ledger_read_of_a_non_object_is_unreadable(tmp_path: Path, content: str):
    led = Ledger(tmp_path)
    led.path.write_text(content)
    with pytest.raises(LedgerUnreadable):
        led.read()


def test_ledger_clear(tmp_path: Path):
    led = Ledger(tmp_path)
    led.write(LedgerRecord(state="running"))
    led.new_token()
    led.clear()
    led.clear()  # twice is fine
    assert led.read() is None and led.read_token() is None
