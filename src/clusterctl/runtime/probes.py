"""Probes that prove readiness instead of guessing it.

The scheduler's HTTP port answers ``/health`` and (through clusterctl's preload)
``/clusterctl/workers.json`` even with ``--no-dashboard``, so the supervisor
needs no Dask client (and no ``import distributed``) to know who is registered.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import ClusterError
from ..plan.specs import connect_host, hostport
from .ledger import user_name


@dataclass(frozen=True)
class SchedulerInfo:
    """What the scheduler's --scheduler-file announces once its listener is bound."""

    address: str
    dashboard_port: int | None

    @classmethod
    def read(cls, path: Path) -> SchedulerInfo | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # absent, or caught half-written
        port = (data.get("services") or {}).get("dashboard")
        return cls(address=data.get("address", ""), dashboard_port=port)


def http_json(url: str, timeout: float = 1.0) -> dict | None:
    """GET a JSON document; None when nothing sensible answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback/http only
            return json.loads(r.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


class SchedulerProbe:
    """Asks one scheduler's HTTP port who is there."""

    def __init__(self, host: str, http_port: int):
        self.base = f"http://{hostport(connect_host(host), http_port)}"
        self.adaptive = 0.0  # a target duration (s): also ask for Dask's adaptive recommendation

    def healthy(self, timeout: float = 1.0) -> bool:
        return http_ok(self.base + "/health", timeout)

    def identity(self, timeout: float = 2.0) -> dict | None:
        """The scheduler's summary from clusterctl's preload: address, totals, workers by name.

        (Dask's /json/identity.json raises a TypeError while tasks run, so it is no probe.)"""
        query = f"?adaptive={self.adaptive:g}&consume=1" if self.adaptive else ""  # Dask's recommendation too
        return http_json(self.base + "/clusterctl/workers.json" + query, timeout)

    def workers_by_name(self, timeout: float = 2.0) -> dict[str, dict] | None:
        """{name: worker info}; None when the scheduler does not answer."""
        ident = self.identity(timeout)
        if ident is None:
            return None
        return dict(ident.get("workers") or {})


class HealthWatch:
    """Asks the scheduler who is registered once per interval, on its own thread.

    A scheduler busy with a big graph may take seconds to answer; probing here
    keeps the supervisor's loop free to notice exits at once."""

    def __init__(self, probe: SchedulerProbe, interval: float = 1.0, timeout: float = 3.0):
        self.probe = probe
        self.interval = interval
        self.timeout = timeout
        self.workers: dict[str, dict] | None = None
        self.identity: dict | None = None  # the last whole answer (address, totals, workers)
        self.answered_at = 0.0  # monotonic time of the last answer
        self.asked_at = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> HealthWatch:
        self._thread.start()
        return self

    def poke(self) -> None:
        """Probe now rather than at the next interval."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            asked = time.monotonic()
            ident = self.probe.identity(timeout=self.timeout)
            self.asked_at = asked
            if ident is not None:
                self.identity = ident
                self.workers, self.answered_at = dict(ident.get("workers") or {}), asked
            self._wake.wait(self.interval)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.timeout + 1)


class PortDenied(ClusterError):
    """This user may not bind the port at all: not "in use", and waiting will not help."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        if sys.platform == "win32":  # WSAEACCES: another program's exclusive bind, or a reserved range
            why = ("permission denied (another program holds it exclusively, or Windows reserves it: "
                   "netsh interface ipv4 show excludedportrange protocol=tcp)")
        elif port < 1024:
            why = "needs root (ports below 1024 are privileged)"
        else:
            why = "permission denied (a security policy forbids binding it)"
        super().__init__(f"port {port} {why}")


def port_in_use(host: str, port: int) -> bool:
    """True when host:port cannot be bound right now because someone is listening.

    Raises PortDenied when this user may not bind it whoever listens (a port below 1024
    without root): a different fix than "stop that process"."""
    if port == 0:
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # Dask binds with SO_REUSEADDR too, so only a live listener makes the port unusable.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
                return True
            if e.errno in (errno.EACCES, errno.EPERM):
                raise PortDenied(host, port) from None
            raise
    return False


LISTEN = "0A"  # the st column of a listening socket in /proc/net/tcp


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket as /proc/net/tcp (or tcp6) shows it to every user."""

    host: str
    port: int
    uid: int


def listeners(table: str) -> list[Listener]:
    """The listening sockets in the text of /proc/net/tcp or /proc/net/tcp6 (header line first).

    >>> listeners("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\\n"
    ...           "   0: 0100007F:2262 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 4321")
    [Listener(host='127.0.0.1', port=8802, uid=1001)]
    """
    found = []
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[3] != LISTEN:
            continue
        try:
            address, port = fields[1].split(":")
            found.append(Listener(_kernel_address(address), int(port, 16), int(fields[7])))
        except ValueError:
            continue  # a line this parser does not know: only a hint is lost
    return found


def _kernel_address(hexa: str) -> str:
    """An address as /proc/net/tcp writes it: 32-bit words in the machine's byte order."""
    raw = bytes.fromhex(hexa)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    family = {4: socket.AF_INET, 16: socket.AF_INET6}.get(len(raw))
    if family is None:
        raise ValueError(f"not an address: {hexa!r}")
    return socket.inet_ntop(family, raw)


def _overlaps(a: str, b: str) -> bool:
    """Whether two bound addresses clash: the same one, or either is a wildcard."""
    wild = ("", "0.0.0.0", "::")
    return a == b or a in wild or b in wild or a.removeprefix("::ffff:") == b.removeprefix("::ffff:")


def listening_uid(port: int, host: str = "", tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")) -> int | None:
    """The uid owning the socket listening on ``port`` (where it clashes with ``host``), from the
    kernel's tables: every user may read them, while psutil sees other users' pids only as root."""
    for path in tables:
        try:
            text = Path(path).read_text()
        except OSError:
            continue  # not Linux, or /proc hidden
        for listener in listeners(text):
            if listener.port == port and _overlaps(listener.host, host):
                return listener.uid
    return None


@dataclass(frozen=True)
class PortOwner:
    """Who listens on a port, as far as this user may see: the uid (from /proc/net/tcp), the pid
    and its name (psutil: only this user's processes, unless root)."""

    uid: int | None = None
    user: str | None = None
    pid: int | None = None
    process: str | None = None

    @property
    def mine(self) -> bool:
        me = os.geteuid() if hasattr(os, "geteuid") else None
        return self.uid is None or self.uid == me

    def __str__(self) -> str:
        """'pid 6642 (python3)' for this user's; 'alice (uid 1001)' for another's."""
        proc = f"pid {self.pid} ({self.process or '?'})" if self.pid else ""
        if self.mine:
            return proc or "you"
        return f"{self.user} (uid {self.uid}{', ' + proc if proc else ''})"


def port_owner(port: int, host: str = "") -> PortOwner | None:
    """Who listens on ``port`` locally; None when nothing here tells."""
    uid = listening_uid(port, host)
    pid, name = _listening_pid(port)
    if uid is None and pid is None:
        return None
    return PortOwner(uid=uid, user=user_name(uid) if uid is not None else None, pid=pid, process=name)


def busy_port(label: str, host: str, port: int, key: str, where: str) -> str:
    """The one line `up` and `apply` say of a taken port: who holds it (another user's listener too,
    from /proc/net/tcp) and how to pick another (``key: 0``)."""
    owner = port_owner(port, host)
    who = f" by {owner}" if owner else ""
    fix = "stop that process or choose" if owner is None or owner.mine else "it is not yours to stop: choose"
    return f"{label} {host}:{port} is already in use{who}; {fix} another port in {where} (`{key}: 0` picks a free one)"


def _listening_pid(port: int) -> tuple[int | None, str | None]:
    try:
        import psutil

        for c in psutil.net_connections(kind="tcp"):
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
                try:
                    return c.pid, psutil.Process(c.pid).name()
                except psutil.Error:
                    return c.pid, None
    except Exception:  # noqa: BLE001 - only a hint for the message
        pass
    return None, None


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
