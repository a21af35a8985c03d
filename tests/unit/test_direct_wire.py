"""The direct route's pure parts: the trailer that ends a stream, the proofs, and when a route may be used."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from clusterctl.remote import direct, wire


@given(st.binary(max_size=4000), st.integers(-64, 255), st.integers(1, 1 << 22))
def test_a_trailer_is_found_after_any_output(output, code, pid):
    out, msg = wire.parse_trailer(output + wire.trailer(code, pid))
    assert out == output and msg == {"exit": code, "pid": pid}


@given(st.binary(max_size=4000))
def test_output_alone_has_no_trailer(output):
    assert wire.parse_trailer(output) == (output, None) or wire.TRAILER in output


def test_a_cut_trailer_is_not_one():
    whole = b"log line\n" + wire.trailer(0, 42)
    for cut in range(len(b"log line\n") + 1, len(whole)):
        assert wire.parse_trailer(whole[:cut])[1] is None


def test_proofs_differ_by_side_and_nonce():
    t = "k" * 64
    assert wire.proof(t, "server", "a", "b") != wire.proof(t, "client", "a", "b") != wire.proof(t, "client", "b", "a")
    assert wire.same(wire.proof(t, "x"), wire.proof(t, "x")) and not wire.same(None, wire.proof(t, "x"))


def test_a_route_is_used_only_while_its_server_is_surely_there(monkeypatch):
    r = direct.Route("h", 1, "t" * 64, quiet_since=100.0)
    assert r.usable(now=100.0 + direct.IDLE - direct.SAFETY - 0.1)
    assert not r.usable(now=100.0 + direct.IDLE - direct.SAFETY + 0.1), "the idle server may have left by then"
    r.dead = "refused"
    assert not r.usable(now=100.0)


@pytest.mark.parametrize("info", [None, True, False, {"port": "1", "token": "x"}, {"port": 1}])
def test_a_host_without_a_route_report_has_none(info):
    direct.learn("t", "h", {"port": 1, "token": "x"})
    assert direct.learn("t", "h", info) is None and direct.route("t", "h") is None


def test_switched_off(monkeypatch):
    direct.learn("t", "h", {"port": 1, "token": "x"})
    try:
        assert direct.route("t", "h") is not None
        monkeypatch.setenv("CLUSTERCTL_DIRECT", "0")
        assert direct.route("t", "h") is None
    finally:
        direct.forget("t")


def test_the_trailer_waits_for_a_slow_head_and_then_ends_the_stream(monkeypatch):
    """A process that filled its socket before it died: its exit code still arrives, whole, after its output."""
    import socket
    import time
    from types import SimpleNamespace

    from clusterctl.remote import directserve

    monkeypatch.setattr(directserve, "_signal_group", lambda pid, sig: None)  # no real process group here
    side = directserve.DirectSide()
    side.server = SimpleNamespace(kill_at={}, conns={}, quiet_since=0.0, grace={}, children={})
    server_end, head_end = socket.socketpair()
    try:
        server_end.setblocking(False)
        output = b""
        try:
            while True:
                output += b"y" * server_end.send(b"y" * 65536)
        except BlockingIOError:
            pass  # the socket is full: the head has not read for a while
        c = directserve.Conn(server_end, time.monotonic(), pid=4242)
        side.conns[server_end], side.by_pid[4242] = c, c
        assert side.reaped(4242, 7 << 8)
        assert side.writers() == [server_end], "the trailer waits instead of being dropped"
        got = b""
        head_end.settimeout(5)
        while True:
            chunk = head_end.recv(65536)
            if not chunk:
                break
            got += chunk
            for w in side.writers():
                side.flush(w)
        rest, msg = wire.parse_trailer(got)
        assert rest == output and msg == {"exit": 7, "pid": 4242}
        assert side.conns == {}
    finally:
        side.listener.close()
        head_end.close()
        server_end.close()
