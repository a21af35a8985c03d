"""Control channel (real loopback server, in-process) and the ledger beside it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
from pathlib import Path

import psutil
import pytest

from clusterctl.runtime import ledger as ledger_mod
from clusterctl.runtime.control import MAX_BODY, ControlServer, request
from clusterctl.errors import ClusterError
from clusterctl.runtime.ledger import Ledger, LedgerRecord, ProcessRecord, atomic_write
from clusterctl.runtime.process import ProcessId

TOKEN = "s3cret-token-ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789"


class Recorder:
    """The supervisor's side: counts every call it gets."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, command: str, body: dict) -> dict:
        self.calls.append((command, body))
        if command == "boom":
            raise ClusterError("no worker named 'w9'; known: w0, w1")
        if command == "crash":
            raise KeyError("oops")
        return {"ok": True, "command": command, "echo": body}


@pytest.fixture(scope="module")
def shared_server():
    # one server for the module: close() waits out serve_forever's 0.5 s poll
    handler = Recorder()
    srv = ControlServer(TOKEN, handler).start()
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
    assert srv.httpd.server_address[0] == "127.0.0.1"
    assert srv.httpd.socket.getsockname() == ("127.0.0.1", int(port))


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
    record = LedgerRecord.model_validate({
        "state": "running",
        "supervisor": {"pid": 1234, "create_time": 1700000000.25},
        "processes": [{"name": "default-0", "role": "worker", "pid": 42, "create_time": 1700000001.5},
                      {"name": "gone", "role": "worker", "pid": None}],
    })
    led.write(record)
    got = led.read()
    assert isinstance(got.updated, float)
    assert got.model_copy(update={"updated": None}) == record
    assert record.updated is None  # the caller's record is not changed
    assert got.supervisor_id == ProcessId(1234, 1700000000.25)
    assert [(p.name, pid) for p, pid in got.process_ids()] == [("default-0", ProcessId(42, 1700000001.5))]
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
def test_ledger_read_of_a_corrupt_file_is_none(tmp_path: Path, content: bytes):
    led = Ledger(tmp_path)
    led.path.write_bytes(content)
    assert led.read() is None


@pytest.mark.parametrize("content", ["[1, 2]", '"running"', "42"])
def test_ledger_read_of_a_non_object_is_none(tmp_path: Path, content: str):
    led = Ledger(tmp_path)
    led.path.write_text(content)
    assert led.read() is None


def test_ledger_clear(tmp_path: Path):
    led = Ledger(tmp_path)
    led.write(LedgerRecord(state="running"))
    led.new_token()
    led.clear()
    led.clear()  # twice is fine
    assert led.read() is None and led.read_token() is None
