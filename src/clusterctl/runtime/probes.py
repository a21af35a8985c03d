"""Probes that prove readiness instead of guessing it.

The scheduler's HTTP port answers ``/health`` and (through clusterctl's preload)
``/clusterctl/workers.json`` even with ``--no-dashboard``, so the supervisor
needs no Dask client (and no ``import distributed``) to know who is registered.
"""

from __future__ import annotations

import errno
import json
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


def port_owner(port: int) -> str | None:
    """'pid 123 (python)' for a local listener on port, when this user may see it."""
    try:
        import psutil

        for c in psutil.net_connections(kind="tcp"):
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
                try:
                    name = psutil.Process(c.pid).name()
                except psutil.Error:
                    name = "?"
                return f"pid {c.pid} ({name})"
    except Exception:  # noqa: BLE001 - only a hint for the message
        return None
    return None


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
