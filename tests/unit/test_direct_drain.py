"""The fork server's direct side at the end of a process, on real loopback TCP sockets: the trailer
goes out after everything, whole, even to a head that reads slowly and keeps beating (no reset), and
one select's worth of events on a connection that closes never ends the server."""

from __future__ import annotations

import select
import signal
import socket
import time
from types import SimpleNamespace

import pytest

from clusterctl.remote import directserve, forkserver, wire


@pytest.fixture
def side(monkeypatch):
    monkeypatch.setattr(directserve, "_signal_group", lambda pid, sig: None)  # no real process group here
    d = directserve.DirectSide()
    d.server = SimpleNamespace(kill_at={}, conns={}, quiet_since=0.0, grace={}, children={})
    yield d
    d.listener.close()


def tcp_pair(side) -> tuple[socket.socket, socket.socket]:
    head = socket.create_connection(("127.0.0.1", side.port), timeout=10)
    server_end, _ = side.listener.accept()
    return server_end, head


def fill(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    sent = b""
    try:
        while True:
            sent += b"z" * sock.send(b"z" * 65536)
    except BlockingIOError:
        return sent


def test_a_beating_slow_head_still_gets_the_whole_stream_and_its_trailer(side):
    server_end, head = tcp_pair(side)
    output = fill(server_end)  # the process wrote more than the head has read, then died
    c = directserve.Conn(server_end, time.monotonic(), pid=4242)
    side.conns[server_end], side.by_pid[4242] = c, c
    side.reaped(4242, 3 << 8)
    got = b""
    head.settimeout(10)
    beats = 0
    while True:
        if beats < 50:
            head.sendall(b"\n")  # its heartbeat keeps coming while it reads
            beats += 1
        try:
            chunk = head.recv(65536)
        except ConnectionResetError:
            pytest.fail("reset: closing with the head's heartbeat unread drops the rest of the stream")
        if not chunk:
            break
        got += chunk
        for w in side.writers():
            side.flush(w)
        readable = select.select([s for s, cc in side.conns.items() if not cc.ended], [], [], 0)[0]
        for s in readable:  # as the server's loop: only what select says is readable
            side.read(s)
    assert wire.parse_trailer(got) == (output, {"exit": 3, "pid": 4242})
    head.close()
    deadline = time.monotonic() + 5
    while side.conns and time.monotonic() < deadline:
        for s in select.select(list(side.conns), [], [], 0.1)[0]:
            side.read(s)  # the head's end: now it closes
    assert side.conns == {}


def test_a_connection_closed_by_its_trailer_in_the_same_select_is_skipped(side, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("fs.sock")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
    server = forkserver.Server(unix, idle=5, direct=side)
    server_end, head = tcp_pair(side)
    try:
        c = directserve.Conn(server_end, time.monotonic(), pid=4242)
        side.conns[server_end], side.by_pid[4242] = c, c
        head.sendall(b"\n")
        head.shutdown(socket.SHUT_WR)  # its end arrives with the trailer's send: readable and writable at once
        side.reaped(4242, 0)
        c.pending, c.fin = wire.trailer(0, 4242), False  # as if the first send had to wait
        time.sleep(0.1)
        server.dispatch([server_end], [server_end])  # the flush finishes it; the read must not fail
        server.dispatch([server_end], [])
        assert server_end not in side.conns
        head.settimeout(5)
        assert wire.parse_trailer(head.recv(65536))[1] == {"exit": 0, "pid": 4242}
    finally:
        head.close()
        unix.close()
        signal.set_wakeup_fd(-1)
        for sig, handler in handlers.items():  # the Server installed its own: a later test's forks inherited them
            signal.signal(sig, handler)
