"""The reconcile loop's effects on the real world: runtime and Dask behind the core's protocols."""

from __future__ import annotations

import time
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

import psutil

from ..errors import ClusterError
from ..plan.resolve import Launcher
from ..plan.specs import ProcessSpec, cluster_tag
from ..remote import direct, fleet, launch
from ..runtime import process
from ..runtime import launch as launch_seam
from ..runtime.launch import Launched
from ..topology import ClusterConfig
from ..runtime.events import EventLog
from ..runtime.logs import first_cause, rotate_if_large, tail
from ..runtime.probes import HealthWatch, PortDenied, SchedulerInfo, SchedulerProbe, busy_port, port_in_use
from ..runtime.process import ProcessId, StopResult
from .child import Handle


LOCAL = launch_seam.Local()


class StartFailed(ClusterError):
    pass


class RealEffects:
    """Start through the launch seam, stop trees by pid + create time, retire through Dask."""

    def __init__(self, launcher: Launcher, events: EventLog, address: Callable[[], str | None],
                 client_kwargs: Callable[[], dict[str, Any]], cfg: Callable[[], ClusterConfig]):
        self.launcher, self.events = launcher, events
        self.address, self.client_kwargs, self.cfg = address, client_kwargs, cfg
        self.ways: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # handle -> the Launch that started it

    def spawn(self, spec: ProcessSpec, warm_ok: bool) -> Launched:
        """Start through the one transport remote/launch.py chooses for it now."""
        if spec.log_path:
            try:
                rotate_if_large(spec.log_path)
            except OSError:
                pass  # a full disk must not stop a restart; rotated at the next chance
        try:
            way = launch.choose(self.cfg(), spec, self.launcher, warm_ok)
            launched = way.start(spec)
            self.ways[launched.handle] = way  # its stop goes the same way
            return launched
        except OSError as e:
            raise StartFailed(f"{spec.name}: cannot start {spec.argv[0]!r}: {e.strerror or e}") from e

    def identify(self, handle: Handle) -> ProcessId:
        return process.identify(handle)  # type: ignore[arg-type]

    def stop(self, targets: list[tuple[ProcessId | None, Handle | None]], grace: float) -> list[StopResult]:
        """Through the launch seam: each handle asked by the transport that started it, one grace."""
        return launch_seam.stop([(pid, h, self._way(h)) for pid, h in targets], grace)

    def kill(self, pid: ProcessId | None, handle: Handle | None) -> None:
        if pid is not None:
            if handle is not None:
                self._way(handle).ask(handle, True)  # a remote one is killed on its host too
            process.kill_tree(pid)
            process.stop(pid, 0, handle)  # type: ignore[arg-type] - reap

    def _way(self, handle: Handle | None) -> launch_seam.Launch:
        """The transport that started it (an adopted process, started by another supervisor: local)."""
        return self.ways.get(handle, LOCAL) if handle is not None else LOCAL

    def _client(self) -> Any:
        """A short-lived Client of the scheduler, for one request (the idle supervisor keeps none)."""
        from distributed import Client  # only here: the idle supervisor stays small

        return Client(self.address(), timeout="10s", name="clusterctl-supervisor", **self.client_kwargs())

    def retire(self, names: list[str]) -> list[str]:
        """Ask the scheduler to retire workers: their unique results move elsewhere first."""
        with self._client() as client:
            info = client.retire_workers(names=names, close_workers=False, remove=True)
        return sorted(str(w.get("name")) for w in (info or {}).values())

    def forget(self, addresses: list[str]) -> None:
        """Make the scheduler drop workers on a host that cannot be reached: their tasks run elsewhere
        now, not after worker-ttl (5 minutes), and their names are free for the workers' return."""
        with self._client() as client:
            for address in addresses:
                client.sync(client.scheduler.unregister, address=address, stimulus_id=f"clusterctl-host-lost-{time.time()}",
                            close=False)

    def pause(self, addresses: list[str], paused: bool) -> None:
        """Dask's own paused status for these workers (their host's owner is active), or running again."""
        from ..runtime.ownerpause import set_paused

        with self._client() as client:
            said = client.run(set_paused, paused, workers=addresses, on_error="return")
        failed = {a: r for a, r in said.items() if isinstance(r, BaseException)}
        if failed:
            a, e = next(iter(failed.items()))
            raise ClusterError(f"{len(failed)} of {len(addresses)} workers: {a}: {type(e).__name__}: {e}")

    def rss(self, pid: ProcessId) -> int | None:
        proc = pid.get()
        try:
            return proc.memory_info().rss if proc is not None else None
        except psutil.Error:
            return None

    def is_stopped(self, pid: ProcessId) -> bool:
        proc = pid.get()
        try:
            return proc is not None and proc.status() == psutil.STATUS_STOPPED
        except psutil.Error:
            return False

    def probe_host(self, name: str) -> str | None:
        return fleet.reachable(self.cfg(), name)

    def no_route(self, host: str, why: str) -> None:
        direct.fail(cluster_tag(self.cfg()), host, why)

    def sweep_host(self, name: str) -> None:
        launch.Remote(self.cfg()).sweep(name, on_differ=lambda host, table: self.emit(host, "versions-differ", table))

    def emit(self, process_name: str, event: str, detail: str = "", **extra: Any) -> None:
        self.events.emit(process_name, event, detail, **extra)

    def log_tail(self, spec: ProcessSpec) -> tuple[str, str]:
        return first_cause(spec.log_path) or "", tail(spec.log_path, 12)


class SchedulerWatch:
    """The Probe of the real scheduler: found through its scheduler file (local) or its fixed
    HTTP port (another host), then asked by a HealthWatch thread who is registered."""

    def __init__(self, host: str, http_port: int, info_file: Path | None, address: str):
        self.host, self.http_port, self.info_file = host, http_port, info_file
        self.address: str | None = address
        self.watch: HealthWatch | None = None
        self.interval = 1.0
        self.adaptive = 0.0  # a target duration: ask for Dask's adaptive recommendation too
        if info_file is None:  # another host: the port is fixed, ask it from the start
            self._start_watch(http_port)

    @property
    def answered_at(self) -> float:
        return self.watch.answered_at if self.watch else 0.0

    @property
    def workers(self) -> dict[str, dict] | None:
        return self.watch.workers if self.watch else None

    @property
    def recommendation(self) -> dict | None:
        """Dask's adaptive recommendation in the last answer, when one was asked for (adaptive.py)."""
        return (self.watch.identity or {}).get("adaptive") if self.watch else None

    @property
    def retired(self) -> dict[str, dict]:
        """{worker name: {at, stimulus}}: whom Dask retired (scheduler_plugin.py)."""
        return dict((self.watch.identity or {}).get("retired") or {}) if self.watch else {}

    @property
    def shutdown(self) -> dict | None:
        """{by, at} once a client asked the scheduler to shut down (client.shutdown())."""
        return (self.watch.identity or {}).get("shutdown") if self.watch else None

    def refresh(self) -> None:
        if self.watch is not None:
            self.watch.interval = self.interval
            self.watch.probe.adaptive = self.adaptive
            if self.watch.identity and self.watch.identity.get("address"):
                self.address = self.watch.identity["address"]
            return
        info = SchedulerInfo.read(self.info_file) if self.info_file else None
        if info and info.address:
            self.address = info.address
            self._start_watch(info.dashboard_port or self.http_port)

    def _start_watch(self, port: int) -> None:
        self.http_port = port
        self.watch = HealthWatch(SchedulerProbe(self.host, port), interval=self.interval).start()

    def poke(self) -> None:
        if self.watch:
            self.watch.poke()

    def close(self) -> None:
        if self.watch:
            self.watch.close()


HEARTBEAT_EVERY = 5.0  # seconds between beats on each remote child's lifeline (agent default: 20 s silence)


class Heartbeat:
    """Beats on every remote child's stdin (the agent's lifeline) so a silent partition is noticed
    on the far side too: an agent that hears nothing for its `--lifeline-timeout` stops its
    process, and no orphan keeps running on a host cut off from the supervisor."""

    def __init__(self, handles: Callable[[], list[Any]], every: float = HEARTBEAT_EVERY):
        self.handles, self.every = handles, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for handle in self.handles():
                stdin = getattr(handle, "stdin", None)
                if stdin is None:
                    continue
                try:
                    stdin.write(b"\n")
                    stdin.flush()
                except (OSError, ValueError):
                    pass  # that ssh has gone: its exit is observed by the loop

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 1)


def check_ports(cfg: ClusterConfig) -> None:
    """Refuse a start whose scheduler ports are taken (before anything starts): one line, who has
    them (another user's listener too, from /proc/net/tcp), and how to pick another."""
    s = cfg.scheduler
    if cfg.scheduler_remote:
        return  # its ports are on that host: fleet.prepare checks them there
    where = cfg.source or "cluster.yaml"
    for label, key in (("scheduler port", "port"), ("dashboard port", "dashboard_port")):
        port = getattr(s, key)
        if not port:
            continue
        try:
            busy = port_in_use(s.host, port)
        except PortDenied as e:
            raise StartFailed(f"{label} {s.host}:{port}: {e}; choose a port from 1024 up in {where}") from e
        if busy:
            raise StartFailed(busy_port(label, s.host, port, key, where))
