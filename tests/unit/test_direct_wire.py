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

