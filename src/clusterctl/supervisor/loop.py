"""The supervisor process: lock, control channel, start phase and the reconcile loop.

Run in the background by ``clusterctl up`` (``python -m clusterctl.supervisor``)
or attached with ``up --foreground``. It plans the desired set, then ticks the
Reconciler until asked to stop: start-up is the loop converging from nothing
(`up` returns when every process is proven ready), and scaling, restarts and
scheduler recovery are edits the same loop converges. A stop asked for is final.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from typing import Any, Callable

from filelock import FileLock, Timeout

from ..errors import ClusterError
from ..plan.resolve import Launcher, resolve
from ..plan.specs import (TAG_ENV, ProcessSpec, build_plan, cluster_tag, scheduler_address,
                          scheduler_spec, worker_spec)
from ..remote import fleet, inventory
from ..remote.ownerlink import OwnerLink
from ..runtime import tls, tuning, warm
from ..runtime.metrics import MetricsServer
from ..runtime.control import ControlServer
from ..runtime.events import EventLog
from ..runtime.ledger import (Ledger, LedgerRecord, LedgerUnreadable, private_dir)
from ..runtime.replies import PingReply, StopReply, answer
from ..runtime.requests import PingRequest, StatusRequest, StopRequest
from ..runtime.logs import rotate_if_large
from ..topology import ClusterConfig
from . import adopt, changes, commands, record, scaling
from .adopt import leftovers
from .desired import DesiredSet, DesiredSize
from .edits import Add
from .effects import Heartbeat, RealEffects, SchedulerWatch, StartFailed, check_ports
from ..topology.workers import adaptive_start
from .adaptive import Adapter, GroupAdapt
from .hosts import Fleet, Host, Preparation
from .owners import Owners
from .interfaces import Hooks
from .reconcile import Reconciler, Timing
from .states import SERVING, ClusterState, HostState

TICK = 0.2  # seconds between ticks while all is well (Popen.poll is a cheap waitpid)
TICK_STARTING = 0.02  # ... while the cluster starts: `up` returns the moment it is ready
ROTATE_EVERY = 10.0  # seconds between log size checks
COMMAND_TIMEOUT = 120.0

__all__ = ["StartFailed", "Supervisor", "leftovers"]


class Supervisor:
    def __init__(self, cfg: ClusterConfig, launcher: Launcher | None = None,
                 echo: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 require_all: bool = False):
        self.cfg, self.clock, self.require_all = cfg, clock, require_all
        self.launcher = launcher or resolve(cfg.python, cfg.bin_dir)
        self.ledger = Ledger(cfg.state_path)
        self.events = EventLog(cfg.state_path / "events.jsonl", echo=echo)
        self.size = DesiredSize(cfg.state_path)
        self.commands: queue.Queue = queue.Queue()
        self.stop_requested = threading.Event()
        self.error: str | None = None
        self.control: ControlServer | None = None
        self.heartbeat: Heartbeat | None = None
        self.metrics: MetricsServer | None = None
        self.preparation: Preparation | None = None
        self.stopped = False
        self.watch = SchedulerWatch(
            cfg.scheduler.host, cfg.scheduler.dashboard_port,
            None if cfg.scheduler_remote else cfg.state_path / "scheduler.json", scheduler_address(cfg))
        fx = RealEffects(self.launcher, self.events, lambda: self.watch.address, self._client_kwargs, lambda: self.cfg)
        desired = DesiredSet([], self._plan_worker)
        hosts = [Host(n, cfg.host(n).address, required=cfg.host(n).required, retry_max=cfg.host(n).retry_max)
                 for n in cfg.remote_hosts()]
        fleet_ = Fleet(hosts, fx, clock)
        self.owners = Owners(cfg, fleet_.held, fx.pause, links=lambda n, c: OwnerLink(c, n, cluster_tag(c)))
        self.core = Reconciler(
            desired, fx, self.watch, clock,
            Timing(cfg.timeouts.startup, cfg.timeouts.shutdown,
                   early_workers=cfg.launch == "concurrent" and cfg.scheduler.port != 0),
            fleet=fleet_, adapter=Adapter(max_workers=cfg.max_workers), owners=self.owners,
            source=str(cfg.source or "cluster.yaml"),
            hooks=Hooks(scheduler_ready=self._scheduler_ready,
                        desired_changed=self._save_size,  # Dask retired a worker: its group is smaller now
                        shutdown=lambda by: self.stop_requested.set()))  # client.shutdown(): everything stops
        self._next_rotate = 0.0

    @property
    def state(self) -> ClusterState:
        return ClusterState.STOPPED if self.stopped and self.core.state != ClusterState.FAILED else self.core.state

    # -- lifecycle ------------------------------------------------------------------------------
    def run(self) -> int:
        """Start, supervise until asked to stop, stop. Returns 0, 1 if start failed, 4 if refused."""
        private_dir(self.cfg.state_path)  # 0700: logs, ledger and token are nobody else's business
        lock = FileLock(str(self.ledger.lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            _say(f"another supervisor already runs cluster {self.cfg.name!r} (lock {self.ledger.lock_path})")
            return 4
        try:
            problem = leftovers(self.ledger)
            if problem:  # refuse without touching the ledger: `down` still needs it
                _say(problem)
                return 4
            return self._run_locked()
        finally:
            lock.release()

    def _run_locked(self) -> int:
        try:  # under the lock: what the previous run left, adopted if its supervisor was SIGKILLed
            found = adopt.survey(self.ledger.read(), cluster_tag(self.cfg))
        except LedgerUnreadable:
            found = adopt.Survey()  # leftovers() refused already; a ledger broken since is "nothing"
        if found.scheduler:
            self._adopt_scheduler(found)
        counts = self.size.load(self._config_counts())
        if self.size.problem:
            self.events.emit("cluster", "desired-ignored", self.size.problem)
        for group, n in counts.items():
            self.events.emit("cluster", "scaled", f"{group}: {n} workers, as last set with `scale`")
        for g in self.cfg.workers:  # an adaptive group starts small; Dask's recommendation sizes it
            if g.adapt is not None:
                counts[g.name] = adaptive_start(g)
                self.core.adapter.set(GroupAdapt.of(g))
        try:  # count: auto, memory_limit: auto and gpus: sized to each host's inventory (plan/sizing.py)
            self.cfg, _ = inventory.sized(self.cfg, counts, emit=self.events.emit)
        except ClusterError as e:  # a host lacks the GPUs or the memory asked for: nothing started, one line
            self.error = str(e)
            self.core.finish(ClusterState.FAILED)
            self._save()
            return 1
        specs = build_plan(self.cfg, self.launcher, counts=counts or None)
        adopt.install(found, self.core, {s.name: s for s in specs}, self._plan_worker)
        adopt.stop_strays(found, cluster_tag(self.cfg), self.core)  # and the old supervisor's helpers
        # Before the fork server starts: its children inherit both. The tag marks every process
        # as this cluster's, so `down` and sweeps never touch one that is not.
        os.environ.setdefault(TAG_ENV, cluster_tag(self.cfg))
        tuning.apply_defaults()
        local = [s for s in specs if s.role == "worker" and warm.usable(s, self.launcher)]
        if local:
            # The fork server imports distributed (~0.6 s) while we set up the control channel,
            # check ports and prepare hosts; every local worker, and any later scheduler, forks
            # from it. With no local worker it starts at a scheduler's restart, if one comes:
            # at `up` its imports would only slow the scheduler and the hosts' own fork servers.
            warm.warm_up(warm.preload_for(local))
        try:
            _install_signal_handlers(self.stop_requested)
            self.control = ControlServer(self.ledger.new_token(), self._handle, read_only=commands.READ_ONLY).start()
            self.metrics = record.serve_metrics(self.snapshot, self.events)
            self.heartbeat = Heartbeat(self._remote_handles).start()
            self._save()
            try:
                self._prepare(adopting=found.scheduler)
                self.core.apply([Add(tuple(specs))])
                self._start()
            except StartFailed as e:
                self.error = str(e)
                self.core.finish(ClusterState.FAILED)
                self.events.emit("cluster", "failed", self.error.splitlines()[0])
                return 1
            self._save()
            self._loop()
            return 0
        finally:
            self._shutdown()

    def _prepare(self, adopting: bool = False) -> None:
        """Ports here; TLS material, copied to every remote host, whose versions are compared. A
        local scheduler starts meanwhile: the hosts are prepared on a thread, and their workers
        start as each answers (a required host that does not answer fails `up` then)."""
        if not adopting:  # an adopted scheduler holds its ports, and its scheduler file
            check_ports(self.cfg)
            (self.cfg.state_path / "scheduler.json").unlink(missing_ok=True)

        def prepare() -> dict[str, str]:
            return fleet.prepare(self.cfg, require_all=self.require_all,
                                 on_differ=lambda host, table: self.events.emit(host, "versions-differ", table))

        remote = self.cfg.remote_hosts()
        try:
            if self.cfg.tls_enabled:
                tls.ensure(self.cfg)  # before the scheduler starts, which reads it; prepare copies it
            if not remote:
                return
        except ClusterError as e:
            raise StartFailed(str(e)) from e
        self.preparation = Preparation(prepare, self.core.fleet)
        strict = self.require_all or any(self.cfg.host(n).required for n in remote)
        if adopting or strict or self.cfg.scheduler.at in remote:  # then nothing starts before every host answered
            self.preparation.done.wait()
        collect_preparation(self)

    def _adopt_scheduler(self, found: adopt.Survey) -> None:
        """Its ports (pinned if they were 0) in the plan, and the probe on its HTTP port at once."""
        self.cfg = adopt.pin_ports(self.cfg, found)
        self.watch.close()
        self.watch = SchedulerWatch(self.cfg.scheduler.host, int(found.http_port or 0), None, str(found.address))
        self.core.use_probe(self.watch)

    def _start(self) -> None:
        """Tick until every desired process is proven ready; any failure fails `up` at once."""
        deadline = self.clock() + self.cfg.timeouts.startup + 5
        while self.core.state == ClusterState.STARTING:
            if self.core.failure:
                raise StartFailed(self.core.failure)
            if self.stop_requested.is_set():
                raise StartFailed("start interrupted by a stop request")
            collect_preparation(self)
            if self.clock() > deadline:
                raise StartFailed(f"the cluster was not ready within {self.cfg.timeouts.startup:g} s (timeouts.startup)")
            self.core.tick()
            if self.core.dirty:
                self._save()  # `up` shows progress from the ledger
            self.stop_requested.wait(TICK_STARTING)
        if self.core.failure:
            raise StartFailed(self.core.failure)

    def _loop(self) -> None:
        self.owners.start()  # each watched host's owner watcher (remote ones: prepared by now, or retried)
        while not self.stop_requested.is_set():
            try:
                fn, reply = self.commands.get(timeout=TICK)
                reply.put(self._run_command(fn))
            except queue.Empty:
                pass
            collect_preparation(self)  # when no worker waited for a host, up did not
            self.core.tick()
            if self.core.dirty:
                self._save()
            if self.clock() >= self._next_rotate:
                self._next_rotate = self.clock() + ROTATE_EVERY
                self._rotate_logs()

    def _rotate_logs(self) -> None:
        logs = [(c.name, c.spec.log_path) for c in self.core.children.values() if c.spec.log_path]
        for name, path in [*logs, ("supervisor", self.cfg.log_path / "supervisor.log")]:
            try:
                if rotate_if_large(path):
                    self.events.emit(name, "log-rotated", str(path))
            except OSError as e:  # a full disk: try again at the next round
                self.core.errors.log(f"rotate {name}", e)

    def _shutdown(self) -> None:
        try:
            if self.core.children:
                if self.core.state in SERVING:
                    self.core.finish(ClusterState.STOPPING)
                    self._save()
                self.events.emit("cluster", "stopping", "")
                t0 = time.monotonic()
                self.core.stop_all()
                for note in fleet.shutdown(self.cfg):  # what agents left on other hosts; shared connections
                    self.events.emit("cluster", "sweep-failed", note)
                self.events.emit("cluster", "stopped", f"in {time.monotonic() - t0:.2f} s")
        finally:
            self.stopped = True
            metrics, self.metrics = self.metrics, None  # the last record names no metrics page
            self._save()
            for part in (metrics, self.control, self.heartbeat, self.owners, self.watch):
                if part:
                    part.close()

    # -- planning -------------------------------------------------------------------------------
    def _config_counts(self) -> dict[str, int]:
        return {g.name: g.count for g in self.cfg.workers}

    def _plan_worker(self, group: str, index: int, at: str | None = None) -> ProcessSpec:
        return worker_spec(self.cfg, self.launcher, self.cfg.group(group), index, at=at)

    def _scheduler_ready(self, address: str | None) -> None:
        """Port 0 picked free ports: keep them, so workers and any restart use the same address."""
        s = self.cfg.scheduler
        if not address or (s.port and s.dashboard_port):
            return
        port = int(address.rsplit(":", 1)[1])
        self.cfg = self.cfg.model_copy(update={"scheduler": s.model_copy(
            update={"port": port, "dashboard_port": self.watch.http_port})})
        specs = [scheduler_spec(self.cfg, self.launcher)] + [
            worker_spec(self.cfg, self.launcher, self.cfg.group(spec.group), _index(name), at=spec.at)
            for name, spec in self.core.desired.specs.items() if spec.role == "worker"]
        self.core.replace_specs(specs)

    # -- commands -------------------------------------------------------------------------------
    def _handle(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        """Called on the control thread: read-only answers here, changes on the main loop. Requests
        and answers are the shared models (runtime/requests.py, replies.py)."""
        request = commands.parse(command, body)  # one line and a 400 for anything malformed
        if isinstance(request, PingRequest):
            return answer(command, PingReply(ok=True, pid=os.getpid()))
        if isinstance(request, StatusRequest):
            return answer(command, self.snapshot())
        if isinstance(request, StopRequest):
            self.stop_requested.set()
            return answer(command, StopReply(ok=True))
        if self.core.state not in SERVING:
            raise ClusterError(f"the cluster is {self.core.state.value}; {command} needs it running")
        return answer(command, changes.handle(self, request))  # scale, add, remove, adapt, restart, rolling, apply

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the main loop (the one thread that changes children) and wait for it."""
        if self.stop_requested.is_set():
            raise ClusterError("the supervisor is stopping")
        reply: queue.Queue = queue.Queue()
        self.commands.put((fn, reply))
        result = reply.get(timeout=COMMAND_TIMEOUT)
        if isinstance(result, Exception):
            raise result
        return result

    def _run_command(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ClusterError as e:
            return e
        except Exception as e:  # noqa: BLE001 - a command's bug is its caller's error, not the loop's end
            self.core.errors.log("command", e)
            return ClusterError(f"internal error: {type(e).__name__}: {e}")

    def _edit(self, request: commands.Request) -> dict[str, Any]:
        change = scaling.edit(self.core, self.cfg, request)
        self._save_size()
        self.core.tick()  # start the new, mark the leaving: the caller reads the ledger next
        self._save()
        return change

    def _save_size(self) -> None:
        """The group sizes, as `scale` or Dask's retirements left them: they outlive the supervisor."""
        try:
            self.size.save(self.core.desired.counts(self._config_counts()), self._config_counts())
        except OSError as e:  # the change holds in memory; it is saved with the next one
            self.core.errors.log("desired.json", e)

    def _remote_handles(self) -> list[Any]:
        return [c.handle for c in list(self.core.children.values()) if c.spec.remote and c.handle is not None]

    def _client_kwargs(self) -> dict[str, Any]:
        security = tls.client_security(self.cfg)
        return {"security": security} if security else {}

    # -- record ---------------------------------------------------------------------------------
    def snapshot(self) -> LedgerRecord:
        return record.snapshot(self.cfg, self.core, self.state.value, self.watch, self.error,
                               self.control.address if self.control else None,
                               self.metrics.address if self.metrics else None)

    def _save(self) -> None:
        record.save(self.ledger, self.core, self.snapshot)


def _install_signal_handlers(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum: int, frame: Any) -> None:  # only set a flag (distributed _signals.py)
        stop.set()

    # SIGHUP: the terminal of `up --foreground` closed; stop as for Ctrl-C, never leave orphans.
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)



def collect_preparation(self: Supervisor) -> None:
    """Apply the hosts' preparation once it is done (see hosts.Preparation)."""
    try:  # hosts that did not answer are unreachable: the others start without them, they join later
        if self.preparation is not None and self.preparation.collect():
            n, missing = len(self.core.fleet.hosts), len(self.preparation.outcome or {})
            self.events.emit("cluster", "hosts-prepared", f"{n - missing} of {n} hosts answered in "
                             f"{self.preparation.took:.2f} s", seconds=round(self.preparation.took, 3))
            self.preparation = None
    except ClusterError as e:
        if self.core.state == ClusterState.STARTING:
            raise StartFailed(str(e)) from e
        # up finished without the hosts (no worker was desired there): they wait, probed, instead
        self.preparation = None
        self.events.emit("cluster", "prepare-failed", str(e).splitlines()[0])
        for h in list(self.core.fleet.hosts.values()):
            if h.state == HostState.PREPARING:
                self.core.fleet.lost(h.name, str(e).splitlines()[0])


def _index(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def _say(msg: str) -> None:
    try:
        print(msg, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
