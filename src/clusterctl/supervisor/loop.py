"""The supervisor: make running processes match the planned specs, and keep them so.

Run in the background by ``clusterctl up`` (``python -m clusterctl.supervisor``)
or attached with ``up --foreground``. It starts the scheduler, proves it
answers, starts the workers, proves each registered under its own name, then
watches: exits and unhealthy processes are restarted by policy, a lost
scheduler brings every worker back with it, and a stop asked for is final.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil
from filelock import FileLock, Timeout

from ..runtime import process, tls, tuning, warm
from ..topology import ClusterConfig, load_config
from ..runtime.control import ControlServer
from ..errors import ClusterError
from ..runtime.events import EventLog
from ..runtime.probes import HealthWatch, SchedulerInfo, SchedulerProbe, port_in_use, port_owner
from ..runtime.ledger import Ledger, process_ids, supervisor_id
from ..runtime.logs import first_cause, rotate_if_large, tail
from ..plan.specs import ProcessSpec, build_plan, worker_spec, dashboard_url, scheduler_address
from ..runtime.process import ProcessId
from ..remote import fleet
from ..plan.resolve import Launcher, resolve
from .restart import RestartTracker
from .desired import DesiredSize, names_to_add, pick_to_remove

TICK = 0.2  # seconds between exit checks; Popen.poll is a cheap waitpid
HEALTH_EVERY = 1.0  # seconds between scheduler probes while all is well
HEALTH_FAST = 0.1  # ... and while a process is starting, so `ready` is seen at once
ROTATE_EVERY = 10.0  # seconds between log size checks
MEMORY_TERMINATE = 0.95  # as distributed.worker.memory.terminate, which only a nanny enforces
STARTING, RUNNING, BACKOFF, STOPPING, STOPPED, EXITED, FATAL, RETIRING = (
    "starting", "running", "backoff", "stopping", "stopped", "exited", "fatal", "retiring",
)


class StartFailed(ClusterError):
    pass


@dataclass
class Child:
    spec: ProcessSpec
    tracker: RestartTracker
    popen: Any = None
    pid: ProcessId | None = None
    state: str = "pending"
    restarts: int = 0
    started_at: float = 0.0  # monotonic
    started_wall: float = 0.0
    ready_at: float | None = None
    unhealthy_since: float | None = None
    retry_at: float = 0.0
    exit_code: int | None = None
    reason: str = ""
    address: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.spec.role,
            "group": self.spec.group,
            "host": self.spec.host,
            "at": self.spec.at,  # the machine (fleet); `host` is the address it binds
            "pid": self.pid.pid if self.pid else None,
            "create_time": self.pid.create_time if self.pid else None,
            "state": self.state,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "address": self.address,
            "started": self.started_wall or None,
            "log": str(self.spec.log_path) if self.spec.log_path else None,
            "argv": list(self.spec.argv),
        }


@dataclass
class Supervisor:
    cfg: ClusterConfig
    launcher: Launcher | None = None
    echo: Callable[[str], None] | None = None
    clock: Callable[[], float] = time.monotonic
    children: dict[str, Child] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.launcher = self.launcher or resolve(self.cfg.python, self.cfg.bin_dir)
        self.ledger = Ledger(self.cfg.state_path)
        self.events = EventLog(self.cfg.state_path / "events.jsonl", echo=self.echo)
        self.commands: queue.Queue = queue.Queue()
        self.stop_requested = threading.Event()
        self.state = "starting"
        self.error: str | None = None
        self.address = scheduler_address(self.cfg)
        self.dashboard = dashboard_url(self.cfg)
        self.http_port = self.cfg.scheduler.dashboard_port
        self.control: ControlServer | None = None
        self.watch: HealthWatch | None = None
        self.desired = DesiredSize(self.cfg.state_path)
        self._dirty = True
        self._next_rotate = 0.0
        self._next_memory_check = 0.0

    # -- lifecycle ------------------------------------------------------------
    def run(self) -> int:
        """Start, supervise until asked to stop, stop. Returns 0, 1 if start failed, 4 if refused."""
        self.cfg.state_path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.ledger.lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            self._say(f"another supervisor already runs cluster {self.cfg.name!r} (lock {self.ledger.lock_path})")
            return 4
        try:
            problem = leftovers(self.ledger)
            if problem:  # refuse without touching the ledger: `down` still needs it
                self._say(problem)
                return 4
            return self._run_locked()
        finally:
            lock.release()

    def _run_locked(self) -> int:
        specs = build_plan(self.cfg, self.launcher)
        tuning.apply_defaults()  # before the fork server starts: its children inherit them
        if any(warm.usable(spec, self.launcher) for spec in specs):
            # The fork server imports distributed (~0.6 s) while we set up the control
            # channel, check ports and prepare hosts; every local process then forks from it.
            warm.warm_up(warm.preload_for(specs))
        try:
            self._install_signal_handlers()
            self.control = ControlServer(self.ledger.new_token(), self._handle).start()
            self._save()
            try:
                self._start_cluster()
            except StartFailed as e:
                self.error = str(e)
                self.state = "failed"
                self.events.emit("cluster", "failed", self.error.splitlines()[0])
                return 1
            self.state = "running"
            self.events.emit("cluster", "ready", f"{len(self.children) - 1} workers at {self.address}")
            self._save()
            self._loop()
            return 0
        finally:
            self._stop_all()
            if self.state != "failed":
                self.state = "stopped"
            self._save()
            if self.control:
                self.control.close()
            if self.watch:
                self.watch.close()

    # -- starting -----------------------------------------------------------------
    def _config_counts(self) -> dict[str, int]:
        return {g.name: g.count for g in self.cfg.workers}

    def _start_cluster(self) -> None:
        counts = self.desired.load(self._config_counts())
        for group, n in counts.items():
            self.events.emit("cluster", "scaled", f"{group}: {n} workers, as last set with `scale`")
        specs = build_plan(self.cfg, self.launcher, counts=counts or None)
        self._check_ports()
        try:  # TLS material, copied to every remote host; an unreachable host fails here
            fleet.prepare(self.cfg)
        except ClusterError as e:
            raise StartFailed(str(e)) from e
        scheduler = self._add(specs[0])
        info_file = self.cfg.state_path / "scheduler.json"
        info_file.unlink(missing_ok=True)
        deadline = self.clock() + self.cfg.timeouts.startup
        workers = [self._add(s) for s in specs[1:]]
        # Exec the first scheduler (it imports on one core) while the fork server imports
        # on the other; workers, and any scheduler restart, then fork from the warm server.
        self._spawn(scheduler, warm_ok=False)
        # Workers know the scheduler's fixed address, so they can start (interpreter,
        # imports: most of their start-up) while it starts, and wait for it.
        early = self.cfg.launch == "concurrent" and self.cfg.scheduler.port != 0
        if early:
            for w in workers:
                self._spawn(w)
        self._wait_scheduler(scheduler, deadline)
        if 0 in (self.cfg.scheduler.port, self.cfg.scheduler.dashboard_port):
            self._pin_ports()
            workers = [self.children[s.name] for s in specs[1:]]
        if not early:
            for w in workers:
                self._spawn(w)
        self._wait_registered(workers, deadline)

    def _pin_ports(self) -> None:
        """Port 0 picked free ports: keep them, so workers and any restart use the same address."""
        port = int(self.address.rsplit(":", 1)[1])
        sched_cfg = self.cfg.scheduler.model_copy(update={"port": port, "dashboard_port": self.http_port})
        self.cfg = self.cfg.model_copy(update={"scheduler": sched_cfg})
        specs = build_plan(self.cfg, self.launcher)
        for spec in specs:
            if spec.name in self.children:
                self.children[spec.name].spec = spec
            else:
                self._add(spec)

    def _check_ports(self) -> None:
        s = self.cfg.scheduler
        if self.cfg.scheduler_remote:
            return  # its ports are on that host: fleet.prepare checks them there
        for label, port in (("scheduler port", s.port), ("dashboard port", s.dashboard_port)):
            if port and port_in_use(s.host, port):
                owner = port_owner(port)
                who = f" by {owner}" if owner else ""
                raise StartFailed(
                    f"{label} {s.host}:{port} is already in use{who}; stop that process "
                    f"or choose another port in {self.cfg.source or 'cluster.yaml'}"
                )

    def _add(self, spec: ProcessSpec) -> Child:
        child = Child(spec=spec, tracker=RestartTracker(spec.restart))
        self.children[spec.name] = child
        return child

    def _spawn(self, child: Child, warm_ok: bool = True) -> None:
        if child.spec.log_path:
            rotate_if_large(child.spec.log_path)
        try:
            if warm_ok and warm.usable(child.spec, self.launcher):
                child.popen = warm.spawn(child.spec)
            else:
                child.popen = process.spawn(child.spec.argv, log_path=child.spec.log_path, env=child.spec.env, cwd=child.spec.cwd,
                                            stdin=subprocess.PIPE if child.spec.remote else subprocess.DEVNULL)
        except OSError as e:
            raise StartFailed(f"{child.name}: cannot start {child.spec.argv[0]!r}: {e.strerror}") from e
        child.pid = process.identify(child.popen)
        child.state = STARTING
        child.started_at = self.clock()
        child.started_wall = time.time()
        child.ready_at = None
        child.unhealthy_since = None
        child.exit_code = None
        child.address = None
        self._dirty = True
        self.events.emit(child.name, "started", f"pid {child.pid.pid}", pid=child.pid.pid)

    def _wait_scheduler(self, child: Child, deadline: float) -> None:
        if self.cfg.scheduler_remote:
            return self._wait_remote_scheduler(child, deadline)
        info_file = self.cfg.state_path / "scheduler.json"
        while True:
            self._fail_if_exited(child)
            info = SchedulerInfo.read(info_file)
            if info and info.address:
                port = info.dashboard_port or self.cfg.scheduler.dashboard_port
                probe = SchedulerProbe(self.cfg.scheduler.host, port)
                if probe.healthy(timeout=0.5):
                    self.address, self.http_port = info.address, port
                    self.dashboard = dashboard_url(self.cfg, port)
                    self.probe = probe
                    if self.watch is None:
                        self.watch = HealthWatch(probe, interval=HEALTH_EVERY).start()
                    self._mark_ready(child, info.address)
                    return
            if self.clock() > deadline:
                raise StartFailed(self._late(child, "did not answer"))
            if self.stop_requested.wait(0.05):
                raise StartFailed("start interrupted by a stop request")

    def _wait_remote_scheduler(self, child: Child, deadline: float) -> None:
        """A scheduler on another host writes no scheduler file here; its address and ports are
        fixed (config), so it is ready once its HTTP port answers /health and clusterctl's probe."""
        s = self.cfg.scheduler
        probe = SchedulerProbe(s.host, s.dashboard_port)
        while True:
            self._fail_if_exited(child)
            ident = probe.identity(timeout=1.0) if probe.healthy(timeout=0.5) else None
            if ident is not None:
                self.probe = probe
                if self.watch is None:
                    self.watch = HealthWatch(probe, interval=HEALTH_EVERY).start()
                self._mark_ready(child, ident.get("address") or self.address)
                return
            if self.clock() > deadline:
                raise StartFailed(self._late(child, f"did not answer on {self.dashboard or probe.base}"))
            if self.stop_requested.wait(0.1):
                raise StartFailed("start interrupted by a stop request")

    def _wait_registered(self, workers: list[Child], deadline: float) -> None:
        pending = {w.name: w for w in workers}
        while pending:
            for w in list(pending.values()):
                self._fail_if_exited(w)
            self._fail_if_exited(self.children["scheduler"])
            seen = self.probe.workers_by_name(timeout=1.0) or {}
            for name in list(pending):
                if name in seen:
                    self._mark_ready(pending.pop(name), seen[name].get("address"))
            if not pending:
                return
            if self.clock() > deadline:
                first = next(iter(pending.values()))
                raise StartFailed(self._late(first, f"did not register with the scheduler ({len(pending)} of {len(workers)} workers missing)"))
            if self.stop_requested.wait(0.05):
                raise StartFailed("start interrupted by a stop request")

    def _mark_ready(self, child: Child, address: str | None) -> None:
        child.state = RUNNING
        child.ready_at = self.clock()
        child.address = address
        self._dirty = True
        took = child.ready_at - child.started_at
        self.events.emit(child.name, "ready", f"{address} after {took:.2f} s", address=address, seconds=round(took, 3))
        if self.state == "starting":
            self._save()  # `up` shows progress from the ledger

    def _fail_if_exited(self, child: Child) -> None:
        code = child.popen.poll() if child.popen else None
        if code is None:
            return
        child.state, child.exit_code = EXITED, code
        self._dirty = True
        self.events.emit(child.name, "exited", _describe_exit(code), exit_code=code)
        cause = first_cause(child.spec.log_path)
        raise StartFailed(
            f"{child.name} exited while starting ({_describe_exit(code)})"
            + (f": {cause}" if cause else "")
            + f"; last lines of {child.spec.log_path}:\n"
            + tail(child.spec.log_path, 12)
        )

    def _late(self, child: Child, what: str) -> str:
        return (
            f"{child.name} {what} within {self.cfg.timeouts.startup:g} s (timeouts.startup); "
            f"last lines of {child.spec.log_path}:\n" + tail(child.spec.log_path, 12)
        )

    # -- supervising --------------------------------------------------------------
    def _loop(self) -> None:
        while not self.stop_requested.is_set():
            try:
                command, body, reply = self.commands.get(timeout=TICK)
                result = self._run_command(command, body)
                if self._dirty:
                    self._save()  # the caller reads the ledger next: it must show the change
                reply.put(result)
            except queue.Empty:
                pass
            self._check()
            if self._dirty:
                self._save()
            if self.clock() >= self._next_rotate:
                self._next_rotate = self.clock() + ROTATE_EVERY
                for c in self.children.values():
                    if c.spec.log_path and rotate_if_large(c.spec.log_path):
                        self.events.emit(c.name, "log-rotated", str(c.spec.log_path))
            if self.watch:  # probe briskly while someone is starting, gently otherwise
                starting = any(c.state == STARTING for c in self.children.values())
                self.watch.interval = HEALTH_FAST if starting else HEALTH_EVERY

    def _check(self) -> None:
        now = self.clock()
        for child in list(self.children.values()):
            if child.state in (STARTING, RUNNING) and child.popen and child.popen.poll() is not None:
                self._on_exit(child, child.popen.returncode)
            elif child.state == BACKOFF and now >= child.retry_at:
                self._respawn(child)
        self._check_health(now)

    def _on_exit(self, child: Child, code: int) -> None:
        now = self.clock()
        child.exit_code = code
        uptime = now - child.started_at
        self.events.emit(child.name, "exited", _describe_exit(code), exit_code=code)
        self._decide(child, now, uptime, code)
        if child.spec.role == "scheduler":
            self._scheduler_lost()

    def _decide(self, child: Child, now: float, uptime: float, code: int | None) -> None:
        decision = child.tracker.decide(now, uptime, code)
        self._dirty = True
        if decision.action == "restart":
            child.state, child.retry_at = BACKOFF, now + decision.delay
            child.reason = f"restarting in {decision.delay:.1f} s"
            self.events.emit(child.name, "restarting", f"in {decision.delay:.1f} s", delay=round(decision.delay, 3))
        elif decision.action == "fatal":
            cause = first_cause(child.spec.log_path)
            last = _describe_exit(code) if code is not None else "unhealthy"
            child.state = FATAL
            child.reason = f"{decision.reason}; last: {last}" + (f": {cause}" if cause else "")
            self.events.emit(child.name, "fatal", child.reason)
            if child.spec.role == "scheduler":
                for c in self.children.values():  # nothing to rejoin: say so instead of waiting
                    if c.spec.role == "worker" and c.state == BACKOFF and c.retry_at == float("inf"):
                        c.state, c.reason = EXITED, "the scheduler is fatal"
            self.state = "degraded"
        else:
            child.state, child.reason = EXITED, decision.reason
            self.events.emit(child.name, "stays-down", decision.reason)

    def _scheduler_lost(self) -> None:
        """Workers never reconnect to a restarted scheduler: stop them now, bring them back after."""
        workers = [c for c in self.children.values() if c.spec.role == "worker" and c.state in (STARTING, RUNNING)]
        # Their data died with the scheduler and they cannot rejoin: no point in a polite stop.
        process.stop_many([(c.pid, c.popen) for c in workers], grace=0.5)
        for c in workers:
            c.state, c.reason, c.retry_at = BACKOFF, "waiting for the scheduler", float("inf")
            self.events.emit(c.name, "stopped", "scheduler lost; will rejoin the new one")

    def _respawn(self, child: Child) -> None:
        child.restarts += 1
        self._spawn(child)
        child.reason = ""
        if child.spec.role == "scheduler":
            # Same address, so the workers can start now and wait for it (--death-timeout)
            # instead of queueing behind its start-up.
            for c in self.children.values():
                if c.spec.role == "worker" and c.state == BACKOFF and c.retry_at == float("inf"):
                    self._respawn(c)
        if self.watch:
            self.watch.poke()

    def _check_health(self, now: float) -> None:
        sched = self.children.get("scheduler")
        if sched is None or self.watch is None or sched.state not in (STARTING, RUNNING):
            return
        w = self.watch
        fresh = w.answered_at >= sched.started_at  # an answer from this incarnation
        if sched.state == STARTING:
            if fresh:
                self._mark_ready(sched, self.address)
            elif now - sched.started_at > self.cfg.timeouts.startup:
                self._unhealthy(sched, f"did not answer within {self.cfg.timeouts.startup:g} s of a restart")
            return
        grace = sched.spec.restart.unhealthy_grace
        silent = now - max(w.answered_at, sched.ready_at or sched.started_at)
        if silent > grace:
            self._unhealthy(sched, f"not answering for {silent:.0f} s")
            return
        seen = w.workers or {}
        for c in self.children.values():
            if c.spec.role != "worker" or c.state not in (STARTING, RUNNING):
                continue
            if c.name in seen and w.answered_at >= c.started_at:
                if c.state == STARTING:
                    self._mark_ready(c, seen[c.name].get("address"))
                c.unhealthy_since = None
            elif c.state == STARTING:
                if now - c.started_at > self.cfg.timeouts.startup:
                    self._unhealthy(c, f"did not register within {self.cfg.timeouts.startup:g} s")
            elif w.answered_at > (c.ready_at or 0):  # a newer answer lacks it
                c.unhealthy_since = c.unhealthy_since or w.answered_at
                limit = c.spec.restart.unhealthy_grace
                if now - c.unhealthy_since > limit:
                    self._unhealthy(c, f"alive but not registered for {limit:g} s")
        if now >= self._next_memory_check:
            self._next_memory_check = now + HEALTH_EVERY
            self._check_memory(seen)

    def _check_memory(self, seen: dict[str, dict]) -> None:
        """Do a nanny's one protective job for workers run without one: a worker whose
        memory passes 95% of its limit (Dask's `terminate` threshold) is restarted."""
        for c in list(self.children.values()):
            if c.spec.role != "worker" or c.state != RUNNING or "--no-nanny" not in c.spec.argv:
                continue
            limit = (seen.get(c.name) or {}).get("memory_limit") or 0
            proc = c.pid.get() if c.pid else None
            if not limit or proc is None:
                continue
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            if rss > MEMORY_TERMINATE * limit:
                self._unhealthy(c, f"memory {rss / 2**20:.0f} MiB is over {MEMORY_TERMINATE:.0%} of its {limit / 2**20:.0f} MiB limit")

    def _unhealthy(self, child: Child, why: str) -> None:
        self.events.emit(child.name, "unhealthy", why)
        process.stop(child.pid, grace=2.0, popen=child.popen)
        self._decide(child, self.clock(), self.clock() - child.started_at, None)
        if child.spec.role == "scheduler":
            self._scheduler_lost()

    # -- commands -------------------------------------------------------------------
    def _handle(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        """Called on the control thread: read-only answers here, changes on the main loop."""
        if command == "ping":
            return {"ok": True, "pid": os.getpid()}
        if command == "status":
            return self.snapshot()
        if command == "stop":
            self.stop_requested.set()
            return {"ok": True}
        if command in ("scale", "add", "remove"):
            if self.state not in ("running", "degraded"):
                raise ClusterError(f"the cluster is {self.state}; scaling needs it running")
            change = self._call("change", dict(body, command=command))
            removing, kill = change["removing"], change["kill"]
            if removing:
                retired = [] if kill else self._retire(removing)
                self._call("finish-remove", {"names": removing, "kill": kill})
                change["retired"] = retired
            return change
        raise ClusterError(f"unknown command {command!r}")

    def _call(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        """Run a command on the main loop (the one thread that changes children) and wait."""
        reply: queue.Queue = queue.Queue()
        self.commands.put((command, body, reply))
        result = reply.get(timeout=120)
        if isinstance(result, Exception):
            raise result
        return result

    def _run_command(self, command: str, body: dict[str, Any]) -> Any:
        try:
            if command == "change":
                return self._change(body)
            if command == "finish-remove":
                return self._finish_remove(body["names"], body["kill"])
            return ClusterError(f"unknown command {command!r}")
        except ClusterError as e:
            return e

    def _workers(self, group: str | None = None) -> list[Child]:
        return [c for c in self.children.values() if c.spec.role == "worker" and c.state != RETIRING
                and (group is None or c.spec.group == group)]

    def _group(self, name: str | None) -> str:
        groups = [g.name for g in self.cfg.workers]
        if name is None:
            if len(groups) == 1:
                return groups[0]
            raise ClusterError(f"this cluster has several worker groups ({', '.join(groups)}); say which with --group")
        if name not in groups:
            raise ClusterError(f"no worker group {name!r}; groups: {', '.join(groups)}")
        return name

    def _change(self, body: dict[str, Any]) -> dict[str, Any]:
        """Validate a scaling request completely before changing anything, then apply it."""
        command, kill = body["command"], bool(body.get("kill"))
        added: list[str] = []
        removing: list[str] = []
        if command in ("scale", "add"):
            group = self._group(body.get("group"))
            count = body.get("count")
            if not isinstance(count, int) or isinstance(count, bool) or count < 0 or count > 1024:
                raise ClusterError(f"count must be a whole number from 0 to 1024, not {count!r}")
            members = self._workers(group)
            target = count if command == "scale" else len(members) + count
            if target > 1024:
                raise ClusterError(f"{target} workers is more than the 1024 a group may have")
            if target > len(members):
                added = self._add_workers(group, target - len(members))
            elif target < len(members):
                removing = pick_to_remove([(c.name, c.state) for c in members], len(members) - target)
        elif command == "remove":
            names, count = body.get("names") or [], body.get("count")
            if names and count is not None:
                raise ClusterError("give worker names or --count, not both")
            if names:
                workers = {c.name for c in self._workers()}
                unknown = [n for n in names if n not in workers]
                if unknown:
                    raise ClusterError(f"no supervised worker named {unknown[0]!r}; workers: {', '.join(sorted(workers)) or 'none'}")
                removing = list(dict.fromkeys(names))
            else:
                if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                    raise ClusterError(f"--count must be a whole number of at least 1, not {count!r}")
                group = self._group(body.get("group"))
                removing = pick_to_remove([(c.name, c.state) for c in self._workers(group)], count)
        for name in removing:
            c = self.children[name]
            c.state, c.reason = RETIRING, "removed by operator" + (" (--kill)" if kill else "")
            self.events.emit(name, "retiring", "abrupt kill" if kill else "graceful: results move first")
        self._save_desired()
        self._dirty = True
        return {"ok": True, "added": added, "removing": removing, "kill": kill,
                "workers": {g.name: len(self._workers(g.name)) for g in self.cfg.workers}}

    def _add_workers(self, group_name: str, count: int) -> list[str]:
        group = self.cfg.group(group_name)
        names = names_to_add(group_name, set(self.children), count)
        for name in names:
            spec = worker_spec(self.cfg, self.launcher, group, int(name.rsplit("-", 1)[1]))
            child = self._add(spec)
            self._spawn(child)
        if self.watch:
            self.watch.poke()
        return names

    def _retire(self, names: list[str]) -> list[str]:
        """Ask the scheduler to retire workers: their unique results move elsewhere first.

        Runs on the control thread (it may take seconds while data moves); the
        supervisor's loop keeps watching meanwhile."""
        from distributed import Client  # only here: the idle supervisor stays small

        try:
            with Client(self.address, timeout="10s", name="clusterctl-supervisor", **self._client_kwargs()) as client:
                info = client.retire_workers(names=names, close_workers=False, remove=True)
            return sorted(str(w.get("name")) for w in (info or {}).values())
        except Exception as e:  # noqa: BLE001 - a failed retire still removes the process
            self.events.emit("cluster", "retire-failed", f"{type(e).__name__}: {e}")
            return []

    def _client_kwargs(self) -> dict[str, Any]:
        security = tls.client_security(self.cfg)
        return {"security": security} if security else {}

    def _finish_remove(self, names: list[str], kill: bool) -> dict[str, Any]:
        targets = [self.children[n] for n in names if n in self.children]
        live = [c for c in targets if c.pid]
        if kill:
            for c in live:
                process.kill_tree(c.pid)
                process.stop(c.pid, 0, c.popen)  # reap
        else:
            process.stop_many([(c.pid, c.popen) for c in live], self.cfg.timeouts.shutdown)
        for c in targets:
            del self.children[c.name]
            self.events.emit(c.name, "removed", "killed" if kill else "retired and stopped")
        self._save_desired()
        self._dirty = True
        return {"ok": True}

    def _save_desired(self) -> None:
        counts = {g.name: len(self._workers(g.name)) for g in self.cfg.workers}
        self.desired.save(counts, self._config_counts())

    # -- stopping --------------------------------------------------------------------
    def _stop_all(self) -> None:
        """Workers first (all at once), then the scheduler; polite, then firm."""
        if not self.children:
            return
        if self.state in ("running", "degraded"):
            self.state = "stopping"
            self._save()
        grace = self.cfg.timeouts.shutdown
        self.events.emit("cluster", "stopping", "")
        workers = [c for c in self.children.values() if c.spec.role == "worker" and c.pid]
        t0 = time.monotonic()
        results = process.stop_many([(c.pid, c.popen) for c in workers], grace)
        for c, r in zip(workers, results):
            self._stopped(c, r)
        sched = self.children.get("scheduler")
        if sched and sched.pid:
            self._stopped(sched, process.stop(sched.pid, grace, sched.popen))
        for note in fleet.shutdown(self.cfg):  # what agents left on other hosts; shared connections
            self.events.emit("cluster", "sweep-failed", note)
        self.events.emit("cluster", "stopped", f"in {time.monotonic() - t0:.2f} s")

    def _stopped(self, child: Child, result: str) -> None:
        if child.state not in (EXITED, FATAL) or result != "gone":
            child.state = STOPPED
        child.reason = "stopped by operator" if result != "killed" else "killed after the shutdown grace"
        if result != "gone":
            self.events.emit(child.name, "stopped", result)

    # -- record ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        me = process.identify_self()
        return {
            "version": 1,
            "name": self.cfg.name,
            "config": str(self.cfg.source) if self.cfg.source else None,
            "state": self.state,
            "error": self.error,
            "supervisor": {"pid": me.pid, "create_time": me.create_time, "control": self.control.address if self.control else None},
            "scheduler": {"address": self.address, "dashboard": self.dashboard, "http_port": self.http_port},
            "processes": [c.to_dict() for c in self.children.values()],
        }

    def _save(self) -> None:
        self._dirty = False
        self.ledger.write(self.snapshot())

    def _say(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: Any) -> None:  # only set a flag (distributed _signals.py)
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if hasattr(signal, "SIGBREAK"):
            signal.signal(signal.SIGBREAK, on_signal)


def leftovers(ledger: Ledger) -> str | None:
    """Why a new supervisor must not start here, or None: never a second cluster over the first."""
    old = ledger.read()
    sup = supervisor_id(old)
    if sup and sup.pid != os.getpid() and sup.alive():
        return f"supervisor pid {sup.pid} already runs this cluster; use `clusterctl status`"
    alive = [(p["name"], pid.pid) for p, pid in process_ids(old) if pid.alive()]
    if alive:
        names = ", ".join(f"{n} (pid {p})" for n, p in alive)
        return (
            f"processes of an earlier run whose supervisor is gone are still alive: {names}; "
            "run `clusterctl down` to stop them first"
        )
    return None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the background supervisor: ``python -m clusterctl.supervisor CONFIG``."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m clusterctl.supervisor CONFIG", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args[0])
        sup = Supervisor(cfg, echo=lambda s: print(s, flush=True))
        return sup.run()
    except ClusterError as e:
        print(str(e), file=sys.stderr, flush=True)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
