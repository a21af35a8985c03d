"""The reconcile loop's core: children converge to the desired set, one tick at a time.

Every tick observes exits, judges health, then converges by set difference, as
``distributed.deploy.SpecCluster._correct_state`` does: what is desired and
missing is started, what runs and is no longer desired is retired, what exited
is restarted by its policy. Start-up, scaling, restarts and scheduler recovery
are all edits of the desired set or of a child's state, then this same loop.

Effects (spawning, stopping, retiring, events), the scheduler probe and the clock
come from outside, so tests replay scripted histories against fakes::

    >>> core = Reconciler(desired, effects, probe, clock, Timing(60, 10, True))  # doctest: +SKIP
    >>> core.tick()
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ClusterError
from ..plan.specs import SCHEDULER, ProcessSpec
from . import authority, health
from .adaptive import Adapter
from .child import Child, describe_exit
from .interfaces import Effects, Probe
from .desired import DesiredSet
from .causes import OUTSIDE, Cause, spawn_cause
from .failures import NameCheck, after_failure, cause_of, name_check, start_failure
from .restart import RestartTracker
from .retire import Retirer
from .rolling import Roller
from ..runtime.process import StopResult
from .hosts import Fleet
from .states import ChildState as S
from .states import ClusterState, HostState

PROBE_FAST = 0.05  # seconds between scheduler probes while someone starts: `ready` is seen at once
PROBE_SLOW = 1.0  # ... and while all is well
SCHEDULER_LOST_GRACE = 0.5  # workers' data died with the scheduler: no point in a polite stop
UNHEALTHY_GRACE = 2.0  # stop grace for a process found unhealthy


@dataclass(frozen=True)
class Timing:
    startup: float  # seconds a process has to become ready
    shutdown: float  # graceful stop before force
    early_workers: bool  # workers may start while the scheduler starts (its address is fixed)


class Reconciler:
    def __init__(self, desired: DesiredSet, fx: Effects, probe: Probe, clock: Callable[[], float], timing: Timing,
                 tracker: Callable[[Any], RestartTracker] = RestartTracker):
        self.desired, self.fx, self.probe, self.clock, self.timing = desired, fx, probe, clock, timing
        self.tracker = tracker
        self.children: dict[str, Child] = {}
        self.state = ClusterState.STARTING
        self.failure: str | None = None  # why start-up failed
        self.dirty = True  # the ledger needs writing
        self.retirer = Retirer(fx, timing.shutdown)
        self.kill_names = self.retirer.kill_names  # removals asked as abrupt kills
        self.removed = threading.Condition()  # notified when retired children leave `children`
        self.fleet = Fleet([], fx, clock)  # remote hosts' states (Supervisor fills it)
        self.on_scheduler_ready: Callable[[str | None], None] = lambda address: None
        self.next_memory = 0.0  # when health.judge next checks each process
        self._logged: set[tuple[str, str]] = set()
        self.source = "cluster.yaml"  # the topology's file, named in what a user must edit (Supervisor sets it)
        self.adapter = Adapter()  # adaptive groups (supervisor/adaptive.py)
        self.roller = Roller()  # rolling restarts (supervisor/rolling.py)
        authority.hooks(self)  # Dask's retirements and client.shutdown(): the Supervisor sets the callbacks

    # -- one tick ----------------------------------------------------------------------------
    def tick(self) -> None:
        now = self.clock()
        self.guard(None, "probe", self.probe.refresh)
        self.guard(None, "hosts", self.fleet.tick)
        for child in list(self.children.values()):
            self.guard(child, "watch", self._observe, child, now)
        self.guard(self.children.get(SCHEDULER), "health", health.judge, self, now)
        self.guard(None, "dask", authority.follow, self, now)
        self.guard(None, "adapt", self.adapter.tick, self, now)
        self.guard(None, "rolling", self.roller.tick, self, now)
        self.guard(None, "reconcile", self._reconcile, now)
        self.guard(None, "retire", self._finish_retirements)
        self._settle()
        starting = any(c.state in (S.STARTING, S.PENDING) for c in self.children.values())
        self.probe.interval = PROBE_FAST if starting else PROBE_SLOW
        self.adapter.tune(self)

    def guard(self, child: Child | None, step: str, fn: Callable, *args: Any) -> None:
        """One step for one child, isolated: its exception is that child's failure, never the loop's."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - the loop never dies
            self.log_exception(f"{step} {child.name if child else ''}".strip(), e)
            if child is not None and child.state in (S.STARTING, S.RUNNING, S.PENDING):
                self._failed(child, self.clock(), None, f"{step} failed: {type(e).__name__}: {e}")

    def log_exception(self, where: str, e: BaseException) -> None:
        """The traceback once per place and kind (stderr is supervisor.log), an event every time."""
        key = (where, type(e).__name__)
        if key not in self._logged:
            self._logged.add(key)
            try:
                traceback.print_exception(e)
            except (OSError, ValueError):
                pass  # stderr is supervisor.log: on a full disk it cannot take the traceback
        try:
            self.fx.emit("supervisor", "error", f"{where}: {type(e).__name__}: {e}")
        except Exception:  # noqa: BLE001 - the event log itself may be what fails
            pass

    # -- observing ---------------------------------------------------------------------------
    def _observe(self, c: Child, now: float) -> None:
        if c.state in (S.STARTING, S.RUNNING) and c.handle is not None:
            code = c.handle.poll()
            if code is not None and authority.held(self, c, code, now):
                return  # maybe Dask retired it: the scheduler's next answer says
            if code is not None:
                # A remote one's far end may outlive its ssh a moment: its name is proven free first.
                c.exit_code, c.gone_at, c.check_name = code, now, c.is_worker and c.spec.remote
                self.fx.emit(c.name, "exited", describe_exit(code), exit_code=code)
                if c.is_worker and c.name not in self.desired:  # Dask retired it: it stays down
                    c.move(S.STOPPED, "retired by Dask")
                    self.dirty = True
                    return
                cause = cause_of(code, self.fx.log_tail(c.spec), c.spec.remote)
                if cause == Cause.HOST and not self._host_required(c):
                    return self._host_failed(c, f"ssh to {c.spec.at} failed (exit 255)")
                if cause == Cause.ROUTE:  # the next start chooses the agent (remote/launch.py)
                    self.fx.no_route(c.spec.at, f"{c.name}'s start through it failed (see its log)")
                self._failed(c, now, code, describe_exit(code), exited=True, cause=cause)


    def mark_ready(self, c: Child, address: str | None, now: float) -> None:
        c.move(S.RUNNING, "")
        c.ready_at, c.address, c.unhealthy_since = now, address, None
        took = now - c.started_at
        self.dirty = True
        self.fx.emit(c.name, "ready", f"{address} after {took:.2f} s", address=address, seconds=round(took, 3))

    def mark_unhealthy(self, c: Child, why: str, now: float, grace: float = UNHEALTHY_GRACE) -> None:
        self.fx.emit(c.name, "unhealthy", why)
        self.fx.stop([(c.pid, c.handle)], grace)
        c.gone_at = self.clock()  # a hung one is still registered: its replacement waits for its name
        c.check_name = c.is_worker and c.name in (self.probe.workers or {})
        self._failed(c, now, None, why)

    # -- failures ----------------------------------------------------------------------------
    def _failed(self, c: Child, now: float, code: int | None, why: str, exited: bool = False,
                cause: Cause = Cause.CRASH) -> None:
        """An exit, an unhealthy verdict or a failed spawn: fail start-up, or act on its cause: wait
        or retry for causes outside the process, stay down for one that needs an edit, else ask
        the restart policy (a crash loop backs off, capped, and keeps trying)."""
        self.dirty, c.failure = True, why
        if cause == Cause.NAME_TAKEN:
            c.check_name = True  # an earlier incarnation holds the name: the scheduler forgets it first
        if self.state == ClusterState.STARTING and cause not in OUTSIDE:  # up fails, says why
            c.move(S.EXITED, why)
            self.failure = self.failure or start_failure(c.name, why, exited, *self.fx.log_tail(c.spec),
                                                         log=c.spec.log_path)
            return
        uptime = now - c.started_at if c.state in (S.STARTING, S.RUNNING) else 0.0
        o = after_failure(cause=cause, decide=lambda: c.tracker.decide(now, uptime, code), now=now, why=why,
                          first=self.fx.log_tail(c.spec)[0], source=self.source, name=c.name)
        c.move(o.state, o.reason)
        c.retry_at = o.retry_at
        self.fx.emit(c.name, o.event, o.detail, **o.extra)
        if c.spec.role == "scheduler":
            self._scheduler_lost(fatal=c.state != S.BACKOFF)

    def _host_failed(self, c: Child, why: str) -> None:
        """Its host, not the process, failed: wait for the host, without spending the restart budget."""
        self.fleet.lost(c.spec.at, why)
        if c.is_worker and c.address:  # unreachable: Dask would keep it (and its tasks) until worker-ttl
            self.retirer.forget([c.address])
        c.move(S.WAITING, f"waiting for host {c.spec.at}")
        self.dirty = True
        if c.spec.role == "scheduler":
            self._scheduler_lost(fatal=False)

    def _host_required(self, c: Child) -> bool:
        """Start-up fails for this host (the scheduler's, or `required: true`), rather than waiting."""
        host = self.fleet.hosts.get(c.spec.at)
        return self.state == ClusterState.STARTING and (c.spec.role == "scheduler" or (host and host.required))

    def _scheduler_lost(self, fatal: bool) -> None:
        """Workers never reconnect to a restarted scheduler: stop them now, start them with the next."""
        live = [c for c in self.children.values() if c.is_worker and c.state in (S.STARTING, S.RUNNING)]
        self.fx.stop([(c.pid, c.handle) for c in live], SCHEDULER_LOST_GRACE)
        for c in live:
            self.fx.emit(c.name, "stopped", "scheduler lost; will rejoin the new one")
        for c in self.children.values():
            if c.is_worker and c.state in (S.STARTING, S.RUNNING, S.BACKOFF, S.PENDING):
                c.move(S.WAITING, "waiting for the scheduler")
            if fatal and c.is_worker and c.state == S.WAITING:
                c.move(S.EXITED, "the scheduler is fatal")  # nothing to rejoin: say so instead of waiting
        self.dirty = True

    # -- converging --------------------------------------------------------------------------
    def _reconcile(self, now: float) -> None:
        for name, spec in self.desired.specs.items():
            if name not in self.children:
                self.children[name] = Child(spec=spec, tracker=self.tracker(spec.restart))
                self.dirty = True
        leaving = [c for c in self.children.values() if c.name not in self.desired and c.state != S.RETIRING]
        for c in leaving:
            if c.state in (S.STARTING, S.RUNNING):
                kill = c.name in self.kill_names
                by = "retired by Dask" if c.name in self.dask_retired else "removed by operator"
                c.move(S.RETIRING, by + (" (--kill)" if kill else ""))
                self.fx.emit(c.name, "retiring", "abrupt kill" if kill else "graceful: results move first")
            else:  # nothing runs: nothing to retire
                del self.children[c.name]
                self.fx.emit(c.name, "removed", f"was {c.state.value}")
            self.dirty = True
        self.retirer.start([c for c in leaving if c.state == S.RETIRING])
        sched = self.children.get(SCHEDULER)
        for c in list(self.children.values()):
            if c.state == S.BACKOFF and now >= c.retry_at:
                c.move(S.PENDING if self._can_run(c, sched) else S.WAITING)
            if c.state == S.WAITING and self._can_run(c, sched):
                c.move(S.PENDING)
            if c.state == S.PENDING and self._may_start(c, sched, now):
                self.guard(c, "spawn", self._spawn, c, now)

    def _can_run(self, c: Child, sched: Child | None) -> bool:
        """Its host answers and, for a worker, the scheduler is up: what it waits for is there."""
        if c.spec.remote and not self.fleet.usable(c.spec.at):
            return False
        return not c.is_worker or _up(sched)

    def _may_start(self, c: Child, sched: Child | None, now: float) -> bool:
        if not self._can_run(c, sched):
            return False
        if not c.is_worker:
            return True
        if c.check_name and not self._name_free(c, now):
            return False
        # A fixed address lets workers start (interpreter, imports) while the scheduler does.
        return sched.state == S.RUNNING or self.timing.early_workers or sched.spawns > 1

    def _name_free(self, c: Child, now: float) -> bool:
        address = ((self.probe.workers or {}).get(c.name) or {}).get("address")
        check = name_check(now=now, gone_at=c.gone_at, answered_at=self.probe.answered_at, address=address,
                           forgot=c.forgot)
        if check == NameCheck.FORGET:
            c.forgot = address
            self.fx.emit(c.name, "forgetting", f"the scheduler still holds {address} for its previous incarnation: "
                                               "removing it before the replacement starts", address=address)
            self.retirer.forget([address])
        c.check_name = check != NameCheck.FREE
        return not c.check_name

    def _spawn(self, c: Child, now: float) -> None:
        now = self.clock()  # a stop earlier in this tick may have blocked for its grace
        first = c.spawns == 0
        try:
            # The first scheduler is exec'd: it imports on one core while the warm fork server
            # imports on the other; workers and any later scheduler fork from that server.
            launched = self.fx.spawn(c.spec, warm_ok=not (first and c.spec.role == "scheduler"))
        except Exception as e:  # noqa: BLE001 - a spawn that raises is this child's failure
            why = str(e) if isinstance(e, ClusterError) else f"cannot start: {type(e).__name__}: {e}"
            self.fx.emit(c.name, "spawn-failed", why)
            c.started_at = now
            if self.state == ClusterState.STARTING:
                c.move(S.EXITED, why)
                self.failure = self.failure or why
            else:
                self._failed(c, now, None, why, cause=spawn_cause(e))
            return
        c.spawns += 1
        c.restarts += 0 if first else 1
        c.handle, c.transport, c.argv = launched.handle, launched.transport, launched.argv
        c.pid = self.fx.identify(c.handle)
        c.started_at, c.started_wall = now, time.time()
        c.ready_at = c.unhealthy_since = c.stopped_since = c.exit_code = c.address = c.forgot = None
        c.move(S.STARTING, "")
        self.dirty = True
        self.fx.emit(c.name, "started", f"pid {c.pid.pid} ({c.transport})", pid=c.pid.pid, transport=str(c.transport))
        self.probe.poke()

    # -- the cluster as a whole ----------------------------------------------------------------
    def _settle(self) -> None:
        for h in self.fleet.hosts.values():
            if h.state == HostState.BACK and all(c.state == S.RUNNING for c in self._on(h.name)):
                self.fleet.settled(h.name)
                self.dirty = True
        away = self.fleet.unreachable()
        if self.state == ClusterState.STARTING:
            waiting = {h.name for h in away}
            if self.failure is None and self.children and all(
                    c.state == S.RUNNING or (c.spec.remote and c.spec.at in waiting)
                    for n, c in self.children.items() if n in self.desired):
                self.state = ClusterState.DEGRADED if away else ClusterState.RUNNING
                running = sum(c.is_worker and c.state == S.RUNNING for c in self.children.values())
                missing = f"; waiting for {', '.join(sorted(waiting))}" if waiting else ""
                self.fx.emit("cluster", "ready", f"{running} workers at {self.probe.address}{missing}")
                self.dirty = True
        elif self.state in (ClusterState.RUNNING, ClusterState.DEGRADED):
            down = any(c.state == S.FATAL or c.state == S.BACKOFF and c.tracker.loops for c in self.children.values())
            state = ClusterState.DEGRADED if down or away else ClusterState.RUNNING
            if state != self.state:
                self.state, self.dirty = state, True

    def _finish_retirements(self) -> None:
        for c, how in self.retirer.finished():
            c.move(S.STOPPED)
            self.children.pop(c.name, None)
            self.fx.emit(c.name, "removed", how)
            self.dirty = True
            with self.removed:
                self.removed.notify_all()

    def stop_all(self) -> None:
        """Workers first (all at once), then the scheduler; polite, then firm. A stop is final."""
        self.retirer.wait(self.timing.shutdown + 15)
        self._finish_retirements()
        grace = self.timing.shutdown
        workers = [c for c in self.children.values() if c.is_worker]
        results = self.fx.stop([(c.pid, c.handle) for c in workers if c.pid], grace)
        for c, result in zip([c for c in workers if c.pid], results):
            self._stopped(c, result)
        for c in workers:
            if c.state != S.STOPPED:
                self._stopped(c, StopResult.GONE)
        sched = self.children.get(SCHEDULER)
        if sched is not None:
            result = self.fx.stop([(sched.pid, sched.handle)], grace)[0] if sched.pid else StopResult.GONE
            self._stopped(sched, result)
        self.dirty = True

    def _stopped(self, c: Child, result: StopResult) -> None:
        if c.state in (S.EXITED, S.FATAL) and result == StopResult.GONE:
            return  # keep why it is down
        c.move(S.STOPPED, "killed after the shutdown grace" if result == StopResult.KILLED else "stopped by operator")
        if result != StopResult.GONE:
            self.fx.emit(c.name, "stopped", result)

    def _on(self, host: str) -> list[Child]:
        return [c for c in self.children.values() if c.spec.remote and c.spec.at == host and c.name in self.desired]

    def replace_specs(self, specs: list[ProcessSpec]) -> None:
        """New specs for the same names (ports pinned after a port-0 start): used from the next spawn."""
        self.desired.replace(specs)
        for c in self.children.values():
            if c.name in self.desired:
                c.spec = self.desired.specs[c.name]


def _up(sched: Child | None) -> bool:
    return sched is not None and sched.state in (S.STARTING, S.RUNNING)
