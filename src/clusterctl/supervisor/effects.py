"""The reconcile loop's effects on the real world: runtime and Dask behind the core's protocols."""

from __future__ import annotations

import subprocess
import time
import threading
from pathlib import Path
from typing import Any, Callable

import psutil

from ..errors import ClusterError
from ..plan.resolve import Launcher
from ..plan.specs import ProcessSpec, cluster_tag
from ..remote import direct, fleet, launch
from ..runtime import process
from ..runtime.launch import Launched
from ..topology import ClusterConfig
from ..runtime.events import EventLog
from ..runtime.logs import first_cause, rotate_if_large, tail
from ..runtime.probes import HealthWatch, PortDenied, SchedulerInfo, SchedulerProbe, port_in_use, port_owner
from ..runtime.process import ProcessId, StopResult
from .child import Handle


KILL_WAIT = 3.0  # seconds a remote process judged hung has to be killed on its host before its ssh is


class StartFailed(ClusterError):
    pass


class RealEffects:
    """Start through the launch seam, stop trees by pid + create time, retire through Dask."""

    def __init__(self, launcher: Launcher, events: EventLog, address: Callable[[], str | None],
                 client_kwargs: Callable[[], dict[str, Any]], cfg: Callable[[], ClusterConfig]):
        self.launcher, self.events = launcher, events
        self.address, self.client_kwargs, self.cfg = address, client_kwargs, cfg

    def spawn(self, spec: ProcessSpec, warm_ok: bool) -> Launched:
        """Start through the one transport remote/launch.py chooses for it now."""
        if spec.log_path:
            try:
                rotate_if_large(spec.log_path)
            except OSError:
                pass  # a full disk must not stop a restart; rotated at the next chance
        try:
            return launch.choose(self.cfg(), spec, self.launcher, warm_ok).start(spec)
        except OSError as e:
            raise StartFailed(f"{spec.name}: cannot start {spec.argv[0]!r}: {e.strerror or e}") from e

    def identify(self, handle: Handle) -> ProcessId:
        return process.identify(handle)  # type: ignore[arg-type]

    def stop(self, targets: list[tuple[ProcessId | None, Handle | None]], grace: float) -> list[StopResult]:
        """Local trees by signal. A remote process by closing its lifeline first, so that its agent
        stops it there and the ssh leaves with it: the worker is gone before the scheduler is told to
        stop (one still closing would wait on a scheduler that left); signals for what is left."""
        t0 = time.monotonic()
        kill = grace <= 0  # judged hung: the far side kills it at once (wire.KILL), its ssh leaves with it
        polite = [h for pid, h in targets if pid is not None and direct.close_lifeline(h, kill)]
        wait = KILL_WAIT if kill else grace  # a killed ssh would lose the word before it reached the host
        for h in polite:  # one shared deadline
            try:
                h.wait(timeout=max(0.0, t0 + wait - time.monotonic()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                break  # the rest are signalled below, with what is left of the grace
        exited = {id(h) for h in polite if h.poll() is not None}  # type: ignore[union-attr]
        live = [(pid, h) for pid, h in targets if pid is not None]
        rest = max(0.0, grace - (time.monotonic() - t0))
        results = iter(process.stop_many(live, rest) if live else [])  # type: ignore[arg-type]
        out = []
        for pid, h in targets:
            result = next(results) if pid is not None else StopResult.GONE
            out.append(StopResult.EXITED if id(h) in exited else result)
        return out

    def kill(self, pid: ProcessId | None, handle: Handle | None) -> None:
        if pid is not None:
            direct.close_lifeline(handle, kill=True)  # a remote one is killed on its host too
            process.kill_tree(pid)
            process.stop(pid, 0, handle)  # type: ignore[arg-type] - reap

    def retire(self, names: list[str]) -> list[str]:
        """Ask the scheduler to retire workers: their unique results move elsewhere first."""
        from distributed import Client  # only here: the idle supervisor stays small

        with Client(self.address(), timeout="10s", name="clusterctl-supervisor", **self.client_kwargs()) as client:
            info = client.retire_workers(names=names, close_workers=False, remove=True)
        return sorted(str(w.get("name")) for w in (info or {}).values())

    def forget(self, addresses: list[str]) -> None:
        """Make the scheduler drop workers on a host that cannot be reached: their tasks run elsewhere
        now, not after worker-ttl (5 minutes), and their names are free for the workers' return."""
        from distributed import Client

        with Client(self.address(), timeout="10s", name="clusterctl-supervisor", **self.client_kwargs()) as client:
            for address in addresses:
                client.sync(client.scheduler.unregister, address=address, stimulus_id=f"clusterctl-host-lost-{time.time()}",
                            close=False)

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
        fleet.revive(self.cfg(), name, on_differ=lambda host, table: self.emit(host, "versions-differ", table))

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
    """Refuse a start whose scheduler ports are taken (before anything starts): one line, who has them."""
    s = cfg.scheduler
    if cfg.scheduler_remote:
        return  # its ports are on that host: fleet.prepare checks them there
    for label, port in (("scheduler port", s.port), ("dashboard port", s.dashboard_port)):
        if not port:
            continue
        try:
            busy = port_in_use(s.host, port)
        except PortDenied as e:
            raise StartFailed(f"{label} {s.host}:{port}: {e}; choose a port from 1024 up in "
                              f"{cfg.source or 'cluster.yaml'}") from e
        if busy:
            owner = port_owner(port)
            who = f" by {owner}" if owner else ""
            raise StartFailed(
                f"{label} {s.host}:{port} is already in use{who}; stop that process "
                f"or choose another port in {cfg.source or 'cluster.yaml'}"
            )
