"""``clusterctl.SupervisedCluster``: a supervised cluster as a ``distributed.deploy.Cluster``.

>>> cluster = SupervisedCluster("cluster.yaml")   # doctest: +SKIP
>>> client = Client(cluster)                       # TLS included: cluster.security
>>> cluster.scale(5)                               # returns once 5 workers are registered
>>> cluster.get_logs()["default-0"]
>>> cluster.close()                                # stops it: this object started it

It starts the cluster as ``clusterctl up`` does (a detached supervisor that outlives this
process) or attaches to it when it already runs; ``SupervisedCluster.from_name(name)``
attaches to a running one found through the registry (``clusterctl list``). ``close()``
stops the cluster only if this object started it, unless ``shutdown_on_close`` says
otherwise, as dask-gateway's ``GatewayCluster`` does.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time
import weakref
from contextlib import suppress
from pathlib import Path
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from distributed.core import Status, rpc
from distributed.deploy import Cluster
from distributed.objects import SchedulerInfo
from distributed.security import Security
from distributed.utils import Log, Logs, NoOpAwaitable, format_dashboard_link

from ..errors import ClusterError
from ..runtime import registry
from ..runtime.ledger import Ledger, LedgerRecord, LedgerUnreadable
from ..runtime.logs import tail
from ..runtime.replies import as_dict
from ..runtime.requests import AdaptRequest, ScaleRequest
from ..runtime.states import SERVING, ChildState, ClusterState
from ..topology import ClusterConfig, load_config
from ..topology.loading import default_config_path
from .connect import ask, client_kwargs, log_file, supervisor_alive
from .start import start_background
from .stop import stop

# The ledger's cluster state as Dask's: a supervisor that died while its cluster ran is `failed`.
STATUS = {
    ClusterState.STARTING: Status.starting, ClusterState.RUNNING: Status.running, ClusterState.DEGRADED: Status.running,
    ClusterState.STOPPING: Status.closing, ClusterState.STOPPED: Status.closed, ClusterState.FAILED: Status.closed,
}
POLL = 0.2
RESUBSCRIBE = 0.5  # seconds between tries to watch a restarted scheduler's workers again


class SupervisedCluster(Cluster):
    """A cluster.yaml cluster, run by its supervisor, for ``Client(cluster)``.

    ``config``: the topology file (default ./cluster.yaml or $CLUSTERCTL_CONFIG). The cluster
    starts in the background as with ``clusterctl up``, or this attaches to it if it runs.
    ``shutdown_on_close``: whether close() stops the cluster; by default only if this object
    started it. ``require_all``: as ``up --require-all``.
    """

    _instances: weakref.WeakSet[SupervisedCluster] = weakref.WeakSet()

    def __init__(self, config: str | os.PathLike[str] | None = None, *, shutdown_on_close: bool | None = None,
                 require_all: bool = False, asynchronous: bool = False, loop: Any = None, quiet: bool = True,
                 scheduler_sync_interval: float = 1):
        path = Path(config) if config else default_config_path()
        self._setup(load_config(path.resolve()), True, shutdown_on_close, require_all, asynchronous, loop, quiet,
                    scheduler_sync_interval)

    @classmethod
    def from_name(cls, name: str, *, shutdown_on_close: bool = False, asynchronous: bool = False, loop: Any = None,
                  quiet: bool = True) -> SupervisedCluster:
        """Attach to the running cluster called ``name`` (see `clusterctl list`); close() leaves it
        running unless ``shutdown_on_close=True``."""
        self = cls.__new__(cls)
        self._setup(find(name), False, shutdown_on_close, False, asynchronous, loop, quiet, 1)
        return self

    def _setup(self, cfg: ClusterConfig, start: bool, shutdown_on_close: bool | None, require_all: bool,
               asynchronous: bool, loop: Any, quiet: bool, sync_interval: float) -> None:
        self.config = cfg
        self.started = False  # whether this object started the cluster (else it attached)
        self.shutdown_on_close = bool(shutdown_on_close)  # settled by _start when None
        self.security = Security()
        self._may_start, self._shutdown_choice, self._require_all = start, shutdown_on_close, require_all
        self._lifecycle = Status.created
        self._record: LedgerRecord | None = None
        super().__init__(asynchronous=asynchronous, loop=loop, quiet=quiet, name=cfg.name,
                         scheduler_sync_interval=sync_interval)
        self._instances.add(self)
        if not self.called_from_running_loop:
            self._loop_runner.start()
            try:
                self.sync(self._start)
            except BaseException:
                self._loop_runner.stop()
                raise

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def status(self) -> Status:
        """This object's own state until it runs; then the cluster's, from its ledger:
        running/degraded -> running, starting -> starting, stopping -> closing,
        stopped/failed -> closed, its supervisor gone -> failed."""
        own = self._lifecycle
        if own != Status.running:
            return own
        try:
            record = Ledger(self.config.state_path).read()
        except LedgerUnreadable:
            return Status.failed
        if record is None:
            return Status.closed
        mapped = STATUS.get(record.state, Status.failed)  # type: ignore[call-overload]
        if mapped in (Status.running, Status.starting) and not supervisor_alive(record):
            return Status.failed
        return mapped

    @status.setter
    def status(self, value: Status) -> None:
        self._lifecycle = value

    def __await__(self):
        async def _() -> SupervisedCluster:
            if self._lifecycle == Status.created:
                await self._start()
            return self

        return _().__await__()

    async def _start(self) -> None:
        while self._lifecycle == Status.starting:
            await asyncio.sleep(0.01)
        if self._lifecycle != Status.created:
            if self._lifecycle != Status.running:
                raise ClusterError(f"this SupervisedCluster of {self.name!r} is {self._lifecycle.name}")
            return
        self.status = Status.starting
        try:
            self._record = record = await asyncio.to_thread(self._bring_up)
            self.security = client_kwargs(self.config).get("security") or Security()
            self.scheduler_comm = rpc(record.scheduler.address, connection_args=self.security.get_connection_args("client"))
            await super()._start()
        except BaseException:
            self.status = Status.failed
            await self._close(shutdown=self.started)
            raise

    def _bring_up(self) -> LedgerRecord:
        """Start the cluster (as `up`) or find it running; return its ledger record once it serves."""
        cfg = self.config
        ledger = Ledger(cfg.state_path)
        if self._may_start:
            before = supervisor_alive(ledger.read())
            record = start_background(cfg, require_all=self._require_all, fork=False)
            self.started = before is None and record.supervisor.pid is not None
        choice = self._shutdown_choice
        self.shutdown_on_close = self.started if choice is None else bool(choice)
        deadline = time.monotonic() + cfg.timeouts.startup + 30
        while True:  # attaching: it may still be starting (another `up`)
            record = ledger.read()
            if record is None or not supervisor_alive(record) or record.state not in (ClusterState.STARTING, *SERVING):
                state = record.state if record else "not running"
                raise ClusterError(f"cluster {cfg.name!r} is {state}; start it with SupervisedCluster({str(cfg.source)!r}) "
                                   "or `clusterctl up`")
            if record.state in SERVING and record.scheduler.address:
                return record
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster {cfg.name!r} was still starting after {cfg.timeouts.startup + 30:g} s")
            time.sleep(POLL)

    def close(self, timeout: float | None = None, shutdown: bool | None = None) -> Any:
        """Close this object; stop the cluster too if ``shutdown`` (default: ``shutdown_on_close``)."""
        if self._lifecycle == Status.closed:
            return NoOpAwaitable() if self.asynchronous else None
        if self.asynchronous:
            return self._close(shutdown=shutdown)
        try:
            return self.sync(self._close, shutdown=shutdown, callback_timeout=timeout)
        except RuntimeError:  # the loop is gone (interpreter exit): stop without it
            if self.shutdown_on_close if shutdown is None else shutdown:
                stop(self.config)
            self._lifecycle = Status.closed
        finally:
            self._loop_runner.stop()

    def shutdown(self) -> Any:
        """Stop the cluster whoever started it: ``close(shutdown=True)``."""
        return self.close(shutdown=True)

    async def _close(self, shutdown: bool | None = None) -> None:
        if self._lifecycle == Status.closed:
            return
        self.status = Status.closing  # the base class reads self.status: our own state from here
        task, self._watch_worker_status_task = self._watch_worker_status_task, None
        if task is not None:  # it may be waiting for a restarted scheduler: not worth waiting for
            task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await task
        await super()._close()
        if self.shutdown_on_close if shutdown is None else shutdown:
            await asyncio.to_thread(stop, self.config)
        self._instances.discard(self)

    async def _watch_worker_status(self, comm: Any) -> None:
        """The base class's watch of workers joining and leaving, subscribed again when the
        scheduler comes back after the supervisor restarted it."""
        while comm is not None:
            await super()._watch_worker_status(comm)  # returns when the scheduler's comm breaks
            comm = await self._resubscribe()

    async def _resubscribe(self) -> Any:
        while self._lifecycle == Status.running:
            await asyncio.sleep(RESUBSCRIBE)
            if self.status != Status.running:  # the ledger: restarting, or stopped for good
                continue
            comm = None
            try:
                comm = await asyncio.wait_for(self.scheduler_comm.live_comm(), RESUBSCRIBE * 10)
                await comm.write({"op": "subscribe_worker_status"})
                self.scheduler_info = SchedulerInfo(await asyncio.wait_for(comm.read(), RESUBSCRIBE * 10))
            except (OSError, asyncio.TimeoutError):
                if comm is not None:
                    comm.abort()
                continue
            self._watch_worker_status_comm = comm
            return comm
        return None

    # -- what Dask asks of a cluster manager -----------------------------------------------------
    @property
    def dashboard_link(self) -> str:
        """The scheduler's dashboard, formatted by dask config `distributed.dashboard.link`."""
        record = self._fresh_record()
        url = record.scheduler.dashboard if record else None
        if not url:
            return ""
        parts = urlsplit(url)
        host = parts.hostname or ""
        return format_dashboard_link(f"[{host}]" if ":" in host else host, parts.port)

    def scale(self, n: int, group: str | None = None, *, timeout: float | None = None) -> Any:
        """Set a worker group's size (the only group when there is one) through the supervisor;
        return once that many of its workers are registered with the scheduler (within
        ``timeout``, default the topology's start-up timeout)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"scale() takes a worker count of 0 or more, not {n!r}")
        if self._lifecycle != Status.running:
            raise ClusterError(f"this SupervisedCluster of {self.name!r} is {self._lifecycle.name}")
        return self.sync(self._scale, n, self._group(group), timeout)

    async def _scale(self, n: int, group: str, timeout: float | None) -> None:
        cfg = self.config
        reply = await asyncio.to_thread(ask, cfg, ScaleRequest.of(count=n, group=group))
        want = int(reply.workers.get(group, n))
        leaving, added = set(reply.removing), list(reply.added)
        limit = cfg.timeouts.startup if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            self.scheduler_info = SchedulerInfo(await self.scheduler_comm.identity())
            names = {str(w.get("name")) for w in self.scheduler_info["workers"].values()}
            record = Ledger(cfg.state_path).read() or LedgerRecord()
            members = {p.name for p in record.processes if p.role == "worker" and p.group == group}
            ready = len(members & names)
            if ready == want and not leaving & names:
                return
            failed = [p for p in record.processes if p.name in added and p.state == ChildState.FATAL]
            if failed:
                p = failed[0]
                raise ClusterError(f"scale({n}): worker {p.name} failed to start ({p.reason or 'fatal'}); "
                                   f"see cluster.get_logs()[{p.name!r}]")
            if time.monotonic() > deadline:
                raise ClusterError(f"scale({n}): {ready} of {want} workers of group {group!r} registered after "
                                   f"{limit:g} s; see cluster.get_logs() and `clusterctl status`")
            await asyncio.sleep(POLL)

    def adapt(self, minimum: int | None = None, maximum: int | None = None, *, group: str | None = None,
              target_duration: float | str | None = None, wait_count: int | None = None, **kwargs: Any) -> dict:
        """Let the supervisor size a group by Dask's own recommendation (`clusterctl adapt`): it
        grows at once when work queues and shrinks gracefully after ``wait_count`` lower answers.
        Not Dask's client-side Adaptive: the supervisor runs it, so it outlives this object.
        ``minimum``/``maximum`` (or Dask's ``minimum=``/``maximum=`` keywords); ``cluster.scale(n)``
        ends it, as with Dask's clusters."""
        if kwargs.keys() - {"interval"}:
            raise TypeError(f"adapt() got unexpected arguments: {', '.join(sorted(kwargs.keys() - {'interval'}))}")
        from ..topology.adapt import seconds

        body: dict[str, Any] = {"group": group, "minimum": minimum, "maximum": maximum, "wait_count": wait_count,
                                "target_duration": None if target_duration is None else seconds(target_duration, "target_duration"),
                                "interval": None if kwargs.get("interval") is None else seconds(kwargs["interval"], "interval")}
        return as_dict(ask(self.config, AdaptRequest.of(**{k: v for k, v in body.items() if v is not None})))

    def get_logs(self, cluster: bool = True, scheduler: bool = True, workers: bool | Iterable[str] = True,
                 lines: int = 200) -> Any:
        """The recent log of each process, from its log file: {name: text}. ``cluster`` is the
        supervisor's log; ``workers`` True, False, or the names (or addresses) of some."""
        def read() -> Logs:
            return self._read_logs(cluster, scheduler, workers, lines)

        return asyncio.to_thread(read) if self.asynchronous else read()

    def _read_logs(self, cluster: bool, scheduler: bool, workers: bool | Iterable[str], lines: int) -> Logs:
        record = self._fresh_record() or LedgerRecord()
        chosen = None if isinstance(workers, bool) else {str(w) for w in workers}
        names = ["supervisor"] if cluster else []
        for p in record.processes:
            if p.role == "scheduler":
                if scheduler:
                    names.append(p.name)
            elif workers is True or (chosen is not None and (p.name in chosen or p.address in chosen)):
                names.append(p.name)
        logs = Logs()
        for name in names:
            try:
                text = tail(log_file(self.config, name), lines)
            except ClusterError as e:
                text = f"({e})"
            logs[name] = Log("\n".join(line.removeprefix("  ") for line in text.splitlines()))  # tail indents
        return logs

    # -- helpers --------------------------------------------------------------------------------
    def _fresh_record(self) -> LedgerRecord | None:
        try:
            self._record = Ledger(self.config.state_path).read() or self._record
        except LedgerUnreadable:
            pass
        return self._record

    def _group(self, group: str | None) -> str:
        names = [g.name for g in self.config.workers]
        if group is None:
            if len(names) == 1:
                return names[0]
            raise ClusterError(f"cluster {self.name!r} has several worker groups ({', '.join(names)}); "
                               "say which with scale(n, group=...)")
        return group


def find(name: str) -> ClusterConfig:
    """The topology of the one running cluster called ``name`` in this user's registry."""
    entries = registry.find(name)
    live = [e for e in entries if _running(e)]
    if not live:
        running = sorted({e.name for e in registry.entries() if _running(e)})
        known = f"; running: {', '.join(running)}" if running else "; none runs"
        raise ClusterError(f"no running cluster named {name!r} on this machine{known} (see `clusterctl list`)")
    if len(live) > 1:
        raise ClusterError(f"{len(live)} running clusters are named {name!r} ({', '.join(str(e.config) for e in live)}); "
                           "use SupervisedCluster(CONFIG) with the one you mean")
    entry = live[0]
    if not entry.config:
        raise ClusterError(f"cluster {name!r} was registered without its cluster.yaml; use SupervisedCluster(CONFIG)")
    cfg = load_config(entry.config)
    if cfg.state_path != Path(entry.state):
        raise ClusterError(f"{entry.config} no longer describes the running cluster {name!r} "
                           f"(its state directory is {entry.state}, the file now says {cfg.state_path})")
    return cfg


def _running(entry: registry.Entry) -> bool:
    try:
        return supervisor_alive(entry.ledger().read()) is not None
    except LedgerUnreadable:
        return False


@atexit.register
def _close_at_exit() -> None:
    """As LocalCluster and GatewayCluster do: at interpreter exit, close what is still open
    (which stops the clusters these objects are to stop)."""
    for cluster in list(SupervisedCluster._instances):
        if cluster.asynchronous or cluster._lifecycle == Status.closed:
            continue
        try:
            cluster.close(timeout=60)
        except Exception:  # noqa: BLE001 - exit goes on; `clusterctl down` stops what is left
            pass
