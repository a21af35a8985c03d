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

The Reconciler owns its state: the helper modules (health, authority, adaptive, rolling,
applying, changes, scaling, settle) decide, and it applies what they decide through its public
methods (``apply`` for the edits of edits.py, ``judged`` for health's judgements).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

from ..errors import ClusterError
from ..plan.specs import SCHEDULER, ProcessSpec
from . import authority
from .adaptive import Adapter
from .child import Child, describe_exit
from .interfaces import Effects, Hooks, Probe
from .desired import DesiredSet
from .causes import OUTSIDE, Cause, spawn_cause
from .errorlog import ErrorLog
from .edits import Add, Edit, Event, Move, Policy, Remove, Respec, Retime, Return, Shutdown, Timing, Yield
from .failures import NameCheck, after_failure, cause_of, name_check, start_failure
from .health import Health, Judgement
from .restart import RestartTracker
from .retire import Retirer
from .rolling import Roller
from ..runtime.process import StopResult
from .hosts import Fleet
from .settle import can_run, host_required, orphaned, scheduler_lets, settle, stopped
from .states import SERVING, ClusterState
from .states import ChildState as S
from .verdicts import Kind
from .yielding import carry

__all__ = ["Reconciler", "Timing"]

PROBE_FAST = 0.05  # seconds between scheduler probes while someone starts: `ready` is seen at once
PROBE_SLOW = 1.0  # ... and while all is well
SCHEDULER_LOST_GRACE = 0.5  # workers' data died with the scheduler: no point in a polite stop


class Reconciler:
    def __init__(self, desired: DesiredSet, fx: Effects, probe: Probe, clock: Callable[[], float], timing: Timing,
                 tracker: Callable[[Any], RestartTracker] = RestartTracker, *, fleet: Fleet | None = None,
                 adapter: Adapter | None = None, hooks: Hooks = Hooks(), source: str = "cluster.yaml",
                 owners: Any = None):
        self.desired, self.fx, self.probe, self.clock, self.timing = desired, fx, probe, clock, timing
        self.tracker = tracker  # a new child's restart tracker, from its policy
        self.children: dict[str, Child] = {}
        self.state = ClusterState.STARTING
        self.failure: str | None = None  # why start-up failed
        self.dirty = True  # the ledger needs writing
        self.retirer = Retirer(fx, timing.shutdown)
        self.kill_names: set[str] = self.retirer.kill_names  # removals asked as abrupt kills
        self.dask_retired: set[str] = set()  # names Dask retired: said so when they leave
        self.shutdown_asked = False  # a client's shutdown was seen (acted on once)
        self.removed = threading.Condition()  # notified when retired children leave `children`
        self.fleet = fleet or Fleet([], fx, clock)  # remote hosts' states
        self.hooks = hooks  # what the Supervisor hears: the scheduler ready, Dask's retirements, a shutdown
        self.health = Health()  # supervisor/health.py
        self.errors = ErrorLog(fx)  # the loop's own errors (supervisor/errorlog.py)
        self.source = source  # the topology's file, named in what a user must edit
        self.adapter = adapter or Adapter()  # adaptive groups (supervisor/adaptive.py)
        self.roller = Roller()  # rolling restarts (supervisor/rolling.py)
        self.owners = owners  # hosts yielding to their owner or hours (supervisor/owners.py), if any

    # -- one tick ----------------------------------------------------------------------------
    def tick(self) -> None:
        now = self.clock()
        self.guard(None, "probe", self.probe.refresh)
        self.guard(None, "hosts", self.fleet.tick)
        for child in list(self.children.values()):
            self.guard(child, "watch", self._observe, child, now)
        self.guard(self.children.get(SCHEDULER), "health", self.health.judge, self, now)
        for step, decide in (("dask", authority.follow), ("adapt", self.adapter.tick), ("rolling", self.roller.tick),
                             *((("owner", self.owners.tick),) if self.owners else ())):
            self.guard(None, step, lambda decide=decide: self.apply(decide(self, now)))
        self.guard(None, "reconcile", self._reconcile, now)
        self.guard(None, "retire", self._finish_retirements)
        self._settle()
        starting = any(c.state in (S.STARTING, S.PENDING) for c in self.children.values())
        self.probe.adaptive, self.probe.interval = self.adapter.tuning(PROBE_FAST if starting else PROBE_SLOW)

    def guard(self, child: Child | None, step: str, fn: Callable, *args: Any) -> None:
        """One step for one child, isolated: its exception is that child's failure, never the loop's."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - the loop never dies
            self.errors.log(f"{step} {child.name if child else ''}".strip(), e)
            if child is not None and child.state in (S.STARTING, S.RUNNING, S.PENDING):
                self._failed(child, self.clock(), None, f"{step} failed: {type(e).__name__}: {e}")

    # -- observing ---------------------------------------------------------------------------
    def _observe(self, c: Child, now: float) -> None:
        code = c.handle.poll() if c.state in (S.STARTING, S.RUNNING) and c.handle is not None else None
        if code is None:
            return
        held = authority.held(self, c, code, now)
        if held.hold:  # maybe Dask retired it: the scheduler's next answer says
            if c.exit_seen is None:
                c.exit_seen = now
                self.probe.poke()
            return
        c.exit_seen = None
        self.apply([held.retired] if held.retired else [])
        # A remote one's far end may outlive its ssh a moment: its name is proven free first.
        c.exit_code, c.gone_at, c.check_name = code, now, c.is_worker and c.spec.remote
        self.fx.emit(c.name, "exited", describe_exit(code), exit_code=code)
        if c.is_worker and c.name not in self.desired:  # Dask retired it: it stays down
            c.move(S.STOPPED, "retired by Dask")
            self.dirty = True
            return
        tail = self.fx.log_tail(c.spec)  # read once per exit: its cause, then what is said of it
        cause = cause_of(code, tail, c.spec.remote)
        if cause == Cause.HOST and not host_required(self.state, c, self.fleet.hosts.get(c.spec.at)):
            return self._host_failed(c, f"ssh to {c.spec.at} failed (exit 255)")
        if cause == Cause.ROUTE:  # the next start chooses the agent (remote/launch.py)
            self.fx.no_route(c.spec.at, f"{c.name}'s start through it failed (see its log)")
        self._failed(c, now, code, describe_exit(code), exited=True, cause=cause, tail=tail)

    def judged(self, c: Child, j: Judgement, now: float) -> None:
        """Carry out health's judgement of one process (health.py): ready, in doubt, or unhealthy:
        stopped within ``j.grace``, then as any failure."""
        r, bad = j.registered, next((v for v in (j.registered, j.process) if v.kind == Kind.UNHEALTHY), None)
        if r.kind == Kind.READY:
            c.move(S.RUNNING, "")
            c.ready_at, c.address, took, self.dirty = now, r.address, now - c.started_at, True
            self.fx.emit(c.name, "ready", f"{r.address} after {took:.2f} s", address=r.address, seconds=round(took, 3))
            if not c.is_worker:
                self.hooks.scheduler_ready(r.address)
        if r.kind != Kind.UNHEALTHY:
            c.unhealthy_since, c.stopped_since = r.since, j.stopped_since
        if bad is not None:
            self.fx.emit(c.name, "unhealthy", bad.why)
            self.fx.stop([(c.pid, c.handle)], j.grace)
            c.gone_at = self.clock()  # a hung one is still registered: its replacement waits for its name
            c.check_name = c.is_worker and c.name in (self.probe.workers or {})
            self._failed(c, now, None, bad.why)

    # -- edits -------------------------------------------------------------------------------
    def apply(self, edits: Iterable[Edit]) -> None:
        """Carry out what a helper module decided (edits.py), in order, saying each one's event:
        the one way the desired set, a child's state by command, policies and timings change."""
        for e in edits:
            match e:
                case Add():
                    self.desired.put(e.specs)
                case Remove():
                    self.desired.remove(e.names)
                    self.kill_names.update(e.names if e.kill else ())
                    self.dask_retired.update(e.names if e.by_dask else ())
                    if e.by_dask:
                        self.hooks.desired_changed()
                case Move():
                    c = self.children[e.name]
                    c.move(e.state, e.reason)
                    c.retry_at = c.retry_at if e.retry_at is None else e.retry_at
                    c.exit_code = c.exit_code if e.exit_code is None else e.exit_code
                    if e.reset:
                        c.tracker.reset()
                case Respec():
                    self.replace_specs(e.specs)
                case Policy():
                    for c in [self.children[n] for n in e.names if n in self.children]:
                        c.tracker.policy = e.policy
                case Retime():
                    self.timing, self.retirer.grace = e.timing, e.timing.shutdown
                case Shutdown():
                    self.shutdown_asked = True
                    self.hooks.shutdown(e.by)
                case Yield() | Return():
                    carry(e, self.children, self.retirer)
            said = e if isinstance(e, Event) else getattr(e, "event", None)
            if said is not None:
                self.fx.emit(said.process, said.kind, said.detail, **said.extra)
            self.dirty = self.dirty or not isinstance(e, Event)

    # -- failures ----------------------------------------------------------------------------
    def _failed(self, c: Child, now: float, code: int | None, why: str, exited: bool = False,
                cause: Cause = Cause.CRASH, tail: tuple[str, str] | None = None) -> None:
        """An exit, an unhealthy verdict or a failed spawn: fail start-up, or act on its cause: wait
        or retry for causes outside the process, stay down for one that needs an edit, else ask
        the restart policy (a crash loop backs off, capped, and keeps trying). ``tail``: its log's
        (first cause, last lines), when the caller has read them already."""
        self.dirty, c.failure = True, why
        first, last = self.fx.log_tail(c.spec) if tail is None else tail
        if cause == Cause.NAME_TAKEN:
            c.check_name = True  # an earlier incarnation holds the name: the scheduler forgets it first
        if self.state == ClusterState.STARTING and cause not in OUTSIDE:  # up fails, says why
            c.move(S.EXITED, why)
            self.failure = self.failure or start_failure(c.name, why, exited, first, last, log=c.spec.log_path)
            return
        uptime = now - c.started_at if c.state in (S.STARTING, S.RUNNING) else 0.0
        o = after_failure(cause=cause, decide=lambda: c.tracker.decide(now, uptime, code), now=now, why=why,
                          first=first, source=self.source, name=c.name)
        c.move(o.state, o.reason)
        c.retry_at = o.retry_at
        self.fx.emit(c.name, o.event, o.detail, **o.extra)
        if c.spec.role == "scheduler":
            self.scheduler_lost(fatal=c.state != S.BACKOFF)

    def _host_failed(self, c: Child, why: str) -> None:
        """Its host, not the process, failed: wait for the host, without spending the restart budget."""
        self.fleet.lost(c.spec.at, why)
        if c.is_worker and c.address:  # unreachable: Dask would keep it (and its tasks) until worker-ttl
            self.retirer.forget([c.address])
        c.move(S.WAITING, f"waiting for host {c.spec.at}")
        self.dirty = True
        if c.spec.role == "scheduler":
            self.scheduler_lost(fatal=False)

    def scheduler_lost(self, fatal: bool) -> None:
        """Workers never reconnect to a restarted scheduler: stop them now, start them with the next."""
        live = [c for c in self.children.values() if c.is_worker and c.state in (S.STARTING, S.RUNNING)]
        self.fx.stop([(c.pid, c.handle) for c in live], SCHEDULER_LOST_GRACE)
        self.apply(orphaned(self.children.values(), {c.name for c in live}, fatal))
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
            can = can_run(c, sched, self.fleet.usable(c.spec.at, c.spec.remote, c.is_worker))
            if c.state == S.BACKOFF and now >= c.retry_at:
                c.move(S.PENDING if can else S.WAITING)
            if c.state == S.WAITING and can:
                c.move(S.PENDING)
            if c.state != S.PENDING or not can:
                continue
            if not c.is_worker or (not c.check_name or self._name_free(c, now)) and scheduler_lets(
                    sched, self.timing.early_workers):
                self.guard(c, "spawn", self._spawn, c, now)

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
        try:
            # The first scheduler is exec'd: it imports on one core while the warm fork server
            # imports on the other; workers and any later scheduler fork from that server.
            launched = self.fx.spawn(c.spec, warm_ok=not (c.spawns == 0 and c.spec.role == "scheduler"))
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
        c.started(launched, self.fx.identify(launched.handle), now)
        self.dirty = True
        self.fx.emit(c.name, "started", f"pid {c.pid.pid} ({c.transport})", pid=c.pid.pid, transport=str(c.transport))
        self.probe.poke()

    # -- the cluster as a whole ----------------------------------------------------------------
    def _settle(self) -> None:
        s = settle(state=self.state, failure=self.failure, children=self.children, desired=self.desired,
                   hosts=self.fleet.hosts.values(), address=self.probe.address)
        for name in s.hosts:
            self.fleet.settled(name)
        if s.ready is not None:
            self.fx.emit("cluster", "ready", s.ready)
        self.dirty = self.dirty or bool(s.hosts) or s.state != self.state
        self.state = s.state

    def _finish_retirements(self) -> None:
        for c, how, kept in self.retirer.finished():  # kept: it yielded to its host's owner or hours
            c.move(S.YIELDED if kept and c.state == S.YIELDING else S.STOPPED)
            if not kept:
                self.children.pop(c.name, None)
            self.fx.emit(c.name, "yielded" if kept else "removed", how)
            self.dirty = True
            with self.removed:
                self.removed.notify_all()

    def stop_all(self) -> None:
        """Workers first (all at once), then the scheduler; polite, then firm. A stop is final."""
        self.retirer.wait(self.timing.shutdown + 15)
        self._finish_retirements()
        sched = self.children.get(SCHEDULER)
        for group in ([c for c in self.children.values() if c.is_worker], [sched] if sched else []):
            live = [c for c in group if c.pid]
            results = self.fx.stop([(c.pid, c.handle) for c in live], self.timing.shutdown) if live else []
            done = dict(zip([c.name for c in live], results))
            for c in group:
                stopped(c, done.get(c.name, StopResult.GONE), self.fx.emit)
        self.dirty = True

    # -- what the Supervisor and the commands ask --------------------------------------------------
    def finish(self, state: ClusterState) -> None:
        """The Supervisor's end of the cluster: FAILED (start-up failed) or STOPPING (a stop began)."""
        if state == ClusterState.FAILED or self.state in SERVING:
            self.state, self.dirty = state, True

    def saved(self, ok: bool) -> None:
        """The ledger was written (``ok``), or must be again at the next tick."""
        self.dirty = not ok

    def use_probe(self, probe: Probe) -> None:
        """The scheduler's probe from now on (a new scheduler's address, an adopted one's port)."""
        self.probe = probe

    def replace_specs(self, specs: list[ProcessSpec]) -> None:
        """New specs for the same names (ports pinned after a port-0 start): used from the next spawn."""
        self.desired.replace(specs)
        for c in self.children.values():
            if c.name in self.desired:
                c.spec = self.desired.specs[c.name]

