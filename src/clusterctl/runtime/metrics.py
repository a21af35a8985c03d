"""The supervisor's own metrics in Prometheus text format, on a loopback port.

``serve(snapshot)`` binds 127.0.0.1 on a free port and answers every GET with
the families below, built at scrape time from ``snapshot()``: the same
LedgerRecord the ledger gets, so a scrape shows the supervisor's view as of
that moment and nothing is counted by hand. Its own CollectorRegistry (never
the global one), plus the supervisor's own ``process_*`` figures.

>>> server = serve(supervisor.snapshot)              # doctest: +SKIP
>>> server.address
'http://127.0.0.1:40123/metrics'

A scrape never raises into the supervisor: a snapshot that fails gives a page
with only ``clusterctl_metrics_scrape_errors_total`` (its traceback is logged
once per exception type). Any local user can connect, as with any exporter:
the page names processes, groups and hosts, never argv nor addresses. At most
``MAX_SCRAPES`` are answered at once (one more is closed at once), and a
client that sends nothing is dropped after ``REQUEST_TIMEOUT``.
"""

from __future__ import annotations

import selectors
import socket
import sys
import threading
import traceback
from importlib import metadata
from socketserver import ThreadingMixIn, TCPServer
from typing import Callable, Iterable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from .ledger import LedgerRecord

# The values of supervisor.states.ChildState, ClusterState and HostState (a higher layer, which
# runtime/ may not import); tests/unit/test_metrics.py checks they are the same. A state not
# listed here (a newer supervisor's) is still exported, as the one at 1.
PROCESS_STATES = ("pending", "starting", "running", "backoff", "waiting", "retiring", "stopping", "stopped",
                  "exited", "fatal", "yielding", "yielded")
CLUSTER_STATES = ("starting", "running", "degraded", "stopping", "stopped", "failed")
HOST_STATES = ("preparing", "reachable", "unreachable", "back")
NOT_DESIRED = frozenset({"retiring", "stopping", "stopped"})  # leaving: no longer in the desired set

MAX_SCRAPES = 4  # requests answered at once
REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request (and to read the answer)

Log = Callable[[str], None]


def _version() -> str:
    try:
        return metadata.version("clusterctl")
    except metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()


def families(record: LedgerRecord, version: str = VERSION) -> list[Metric]:
    """Every clusterctl_* family for one snapshot (pure: a record in, metric families out)."""
    info = InfoMetricFamily("clusterctl", "The cluster this supervisor runs, and clusterctl's version.")
    info.add_metric([], {"name": record.name, "version": version})
    cluster = _stateset("clusterctl_cluster_state", "The cluster's state: 1 for the current one.", ["state"])
    _add_states(cluster, [], CLUSTER_STATES, record.state)
    up = GaugeMetricFamily("clusterctl_process_up", "1 when the process runs (proven ready), else 0.",
                           labels=["name", "role", "host"])
    restarts = CounterMetricFamily("clusterctl_process_restarts", "Times the supervisor restarted the process.",
                                   labels=["name", "role"])
    state = _stateset("clusterctl_process_state", "The process's state: 1 for the current one.", ["name", "state"])
    started = GaugeMetricFamily("clusterctl_process_start_time_seconds",
                                "Wall-clock time the process last started, in seconds since the epoch.",
                                labels=["name", "role"])
    desired = GaugeMetricFamily("clusterctl_group_workers_desired", "Workers the group should have.", labels=["group"])
    running = GaugeMetricFamily("clusterctl_group_workers_running", "The group's workers that run.", labels=["group"])
    fatal = GaugeMetricFamily("clusterctl_fatal_processes", "Processes given up on (restarted too often).")
    groups: dict[str, list[int]] = {}
    for p in record.processes:
        up.add_metric([p.name, p.role, p.at], 1 if p.state == "running" else 0)
        restarts.add_metric([p.name, p.role], p.restarts)
        _add_states(state, [p.name], PROCESS_STATES, p.state)
        if p.started:
            started.add_metric([p.name, p.role], p.started)
        if p.role == "worker" and p.group:
            counts = groups.setdefault(p.group, [0, 0])
            counts[0] += p.state not in NOT_DESIRED
            counts[1] += p.state == "running"
    for group, (want, have) in sorted(groups.items()):
        desired.add_metric([group], want)
        running.add_metric([group], have)
    fatal.add_metric([], sum(p.state == "fatal" for p in record.processes))
    host_state = _stateset("clusterctl_host_state", "A remote host's state: 1 for the current one.", ["host", "state"])
    host_workers = GaugeMetricFamily("clusterctl_host_workers", "A remote host's workers, desired and running.",
                                     labels=["host", "kind"])
    for h in record.hosts:
        _add_states(host_state, [h.name], HOST_STATES, h.state)
        host_workers.add_metric([h.name, "desired"], h.workers.desired)
        host_workers.add_metric([h.name, "running"], h.workers.running)
    return [info, cluster, up, restarts, state, started, desired, running, fatal, host_state, host_workers]


def _stateset(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    # The StateSet pattern as a gauge, with the state in a label named `state` (prometheus_client's
    # StateSetMetricFamily would name that label after the metric).
    return GaugeMetricFamily(name, doc, labels=labels)


def _add_states(family: GaugeMetricFamily, labels: list[str], known: Iterable[str], current: str) -> None:
    states = list(known) + ([current] if current not in known else [])
    for s in states:
        family.add_metric([*labels, s], 1 if s == current else 0)


class SupervisorCollector(Collector):
    """Reads ``snapshot()`` at each scrape; an exception there is counted and logged once per type."""

    def __init__(self, snapshot: Callable[[], LedgerRecord], log: Log | None = None, version: str = VERSION):
        self.snapshot, self.version = snapshot, version
        self.log = log or _stderr
        self.errors = 0
        self._logged: set[type] = set()
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        try:
            found = families(self.snapshot(), self.version)
        except Exception as e:  # noqa: BLE001 - a scrape's failure is the scrape's, never the supervisor's
            found = []
            with self._lock:
                self.errors += 1
                first = type(e) not in self._logged
                self._logged.add(type(e))
            if first:
                self.log(f"metrics: a scrape failed ({type(e).__name__}: {e}); logged once, counted in "
                         f"clusterctl_metrics_scrape_errors_total\n" + "".join(traceback.format_exception(e)))
        errors = CounterMetricFamily("clusterctl_metrics_scrape_errors",
                                     "Scrapes whose snapshot of the supervisor failed.")
        errors.add_metric([], self.errors)
        yield from found
        yield errors


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT  # applied to the connection: an idle client is dropped

    def log_message(self, format: str, *args: object) -> None:
        pass  # no line per scrape in supervisor.log


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    timeout = 0  # handle_request() is called once a connection waits: never block there

    def __init__(self, address: tuple[str, int], family: int):
        self.address_family = family
        self.slots = threading.BoundedSemaphore(MAX_SCRAPES)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # not HTTPServer's: its getfqdn() is a reverse DNS lookup
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()

    def process_request(self, request: socket.socket, client_address: object) -> None:
        if not self.slots.acquire(blocking=False):  # busy: closed at once, never queued
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up or timed out: its problem, not a traceback in our log


class MetricsServer:
    """The metrics page on its own thread; ``close()`` stops the thread and frees the port."""

    def __init__(self, server: _Server, collector: SupervisorCollector):
        self._server, self.collector = server, collector
        self.host, self.port = server.server_address[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="clusterctl-metrics", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def _serve(self) -> None:
        # serve_forever() would wake every poll_interval and make close() wait up to that long; this
        # sleeps until a client connects or close() writes to the wake socket.
        with selectors.DefaultSelector() as sel:
            sel.register(self._server.socket, selectors.EVENT_READ, "accept")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while True:
                ready = sel.select()
                if self._closed or any(key.data == "wake" for key, _ in ready):
                    return
                try:
                    self._server.handle_request()
                except Exception:  # noqa: BLE001 - e.g. no thread to spare: this client is refused
                    pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(REQUEST_TIMEOUT)
        self._server.server_close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(snapshot: Callable[[], LedgerRecord], host: str = "127.0.0.1", port: int = 0,
          log: Log | None = None) -> MetricsServer:
    """Serve the supervisor's metrics on host:port (0: a free one); raises OSError if it cannot bind."""
    collector = SupervisorCollector(snapshot, log)
    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)  # the supervisor's own CPU, memory and open files (Linux)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = _Server((host, port), family)
    server.set_app(make_wsgi_app(registry))
    try:
        return MetricsServer(server, collector)
    except BaseException:
        server.server_close()
        raise


def _stderr(msg: str) -> None:
    try:
        print(msg.rstrip("\n"), file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
