"""Who holds a port (runtime/probes.py): the kernel's /proc/net/tcp tables parsed, the listener's uid
named, and `up`'s one line when the scheduler's port is taken (supervisor/effects.check_ports)."""

from __future__ import annotations

import os
import sys

import pytest

from clusterctl.runtime import probes
from clusterctl.runtime.probes import Listener, PortOwner, listeners, listening_uid
from clusterctl.supervisor import effects
from clusterctl.topology import parse_config

pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="the samples are a little-endian kernel's")

HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
          "                                                     \n")
# 8786 is 0x2252. Lines as Linux 6.x writes them: a listener of uid 1001 on 127.0.0.1:8786, sshd (root)
# on 0.0.0.0:22, an established connection to 8786 (not a listener), uid 1002 on 127.0.0.2:8786.
TCP = HEADER + """\
   0: 0100007F:2252 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 812345 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20021 1 0000000000000000 100 0 0 10 0
   2: 0100007F:D8A4 0100007F:2252 01 00000000:00000000 00:00000000 00000000  1001        0 812399 1 0000000000000000 20 4 30 10 -1
   3: 0200007F:2252 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 812400 1 0000000000000000 100 0 0 10 0
"""
# ::1 port 8787 (uid 1003), :: port 9000 (uid 1004), ::ffff:127.0.0.1 port 8788 (uid 1005)
TCP6 = HEADER + """\
   0: 00000000000000000000000001000000:2253 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1003        0 9999 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1004        0 9998 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:2254 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1005        0 9997 1 0000000000000000 100 0 0 10 0
"""


def test_only_listeners_are_read_with_address_port_and_uid():
    assert listeners(TCP) == [
        Listener("127.0.0.1", 8786, 1001),
        Listener("0.0.0.0", 22, 0),
        Listener("127.0.0.2", 8786, 1002),
    ]
    assert listeners(TCP6) == [
        Listener("::1", 8787, 1003),
        Listener("::", 9000, 1004),
        Listener("::ffff:127.0.0.1", 8788, 1005),
    ]


def test_the_header_alone_and_lines_it_does_not_know_are_no_listeners():
    assert listeners(HEADER) == [] and listeners("") == []
    odd = HEADER + "   0: 0100007F 00000000:0000 0A\n   1: ZZ00007F:2252 00000000:0000 0A x x x 7\n"
    assert listeners(odd) == []


@pytest.fixture
def tables(tmp_path):
    (tmp_path / "tcp").write_text(TCP)
    (tmp_path / "tcp6").write_text(TCP6)
    return (str(tmp_path / "tcp"), str(tmp_path / "tcp6"), str(tmp_path / "absent"))


def test_the_uid_is_the_listener_that_clashes_with_the_host(tables):
    assert listening_uid(8786, "127.0.0.1", tables) == 1001
    assert listening_uid(8786, "127.0.0.2", tables) == 1002
    assert listening_uid(8786, "127.0.0.3", tables) is None  # neither clashes with 127.0.0.3
    assert listening_uid(22, "127.0.0.1", tables) == 0  # 0.0.0.0 takes every address
    assert listening_uid(9000, "127.0.0.1", tables) == 1004  # so does ::
    assert listening_uid(8787, "::1", tables) == 1003
    assert listening_uid(8788, "127.0.0.1", tables) == 1005  # an IPv4-mapped listener
    assert listening_uid(8786, "", tables) == 1001  # no host given: the first on the port
    assert listening_uid(8000, "127.0.0.1", tables) is None


def test_the_owner_reads_as_a_person_or_as_a_process():
    other = (os.geteuid() + 1) if hasattr(os, "geteuid") else 1
    assert str(PortOwner(uid=other, user="alice")) == f"alice (uid {other})"
    assert str(PortOwner(uid=other, user="alice", pid=6642, process="python3")) == f"alice (uid {other}, pid 6642 (python3))"
    assert not PortOwner(uid=other, user="alice").mine
    mine = PortOwner(uid=os.geteuid(), user="me", pid=6642, process="python3")
    assert mine.mine and str(mine) == "pid 6642 (python3)"
    assert str(PortOwner(uid=os.geteuid(), user="me")) == "you"


def test_port_owner_names_the_user_of_a_real_listener():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        owner = probes.port_owner(port, "127.0.0.1")
    assert owner is not None and owner.uid == os.geteuid() and owner.mine
    assert owner.pid == os.getpid()


def cfg():
    c = parse_config("name: x\nscheduler:\n  host: 127.0.0.1\n  port: 8786\n  dashboard_port: 8787\n"
                     "workers:\n  - name: default\n    count: 1\n")
    return c


def taken(monkeypatch, owner, port=8786):
    monkeypatch.setattr(effects, "port_in_use", lambda host, p: p == port)
    monkeypatch.setattr(probes, "port_owner", lambda p, host="": owner)  # what busy_port asks


def test_another_users_port_is_named_with_the_way_out(monkeypatch):
    other = os.geteuid() + 1
    taken(monkeypatch, PortOwner(uid=other, user="alice"))
    with pytest.raises(effects.StartFailed) as e:
        effects.check_ports(cfg())
    assert str(e.value) == (f"scheduler port 127.0.0.1:8786 is already in use by alice (uid {other}); it is not "
                            "yours to stop: choose another port in cluster.yaml (`port: 0` picks a free one)")


def test_your_own_process_on_the_dashboard_port(monkeypatch):
    taken(monkeypatch, PortOwner(uid=os.geteuid(), user="me", pid=6642, process="python3"), port=8787)
    with pytest.raises(effects.StartFailed, match=r"^dashboard port 127.0.0.1:8787 is already in use by pid 6642 "
                       r"\(python3\); stop that process or choose another port in cluster.yaml "
                       r"\(`dashboard_port: 0` picks a free one\)$"):
        effects.check_ports(cfg())


def test_nobody_known(monkeypatch):
    taken(monkeypatch, None)
    with pytest.raises(effects.StartFailed, match=r"^scheduler port 127.0.0.1:8786 is already in use; stop that"):
        effects.check_ports(cfg())
