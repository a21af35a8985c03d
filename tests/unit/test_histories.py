"""Scripted histories replayed against the reconcile loop, with fake effects, probe and clock.

In the manner of honcho's tests/test_manager.py: events in (exits, scheduler answers,
commands, time passing), then the actions taken and the states reached are checked.
No process is started; each history runs in a few milliseconds.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clusterctl.errors import ClusterError
from clusterctl.plan.specs import ProcessSpec
from clusterctl.runtime.launch import Launched, Transport
from clusterctl.runtime.process import ProcessId, StopResult
from clusterctl.supervisor.desired import DesiredSet, pick_to_remove
from clusterctl.supervisor.hosts import Fleet, Host
from clusterctl.supervisor.interfaces import Hooks
from clusterctl.supervisor import authority
from clusterctl.supervisor.adaptive import GroupAdapt
from clusterctl.supervisor.reconcile import SCHEDULER_LOST_GRACE, Reconciler, Timing
from clusterctl.supervisor.restart import RestartTracker
from clusterctl.supervisor.states import ChildState as S
from clusterctl.supervisor.states import ClusterState, HostState, IllegalTransition, check
from clusterctl.topology import RestartPolicy

STEP = 0.1  # seconds the fake clock moves per tick


@dataclass
class FakeHandle:
    pid: int
    code: int | None = None

    def poll(self) -> int | None:
        return self.code


@dataclass
class FakeEffects:
    """Records every action; a spawn raises whatever `fail[name]` holds."""

    actions: list[tuple] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    handles: dict[str, FakeHandle] = field(default_factory=dict)
    fail: dict[str, BaseException] = field(default_factory=dict)
    rss_of: dict[int, int] = field(default_factory=dict)
    stopped: set[int] = field(default_factory=set)  # pids in state T (SIGSTOP)
    retire_error: BaseException | None = None
    stop_error: BaseException | None = None
    next_pid: int = 1000

    def spawn(self, spec, warm_ok):
        if spec.name in self.fail:
            raise self.fail[spec.name]
        self.next_pid += 1
        self.handles[spec.name] = FakeHandle(self.next_pid)
        self.actions.append(("spawn", spec.name, warm_ok))
        if spec.remote:
            way = Transport.AGENT if spec.at in self.no_routes else Transport.DIRECT
        else:
            way = Transport.WARM if warm_ok else Transport.EXEC
        self.ways.append((spec.name, way))
        return Launched(self.handles[spec.name], way, tuple(spec.argv))

    def identify(self, handle):
        return ProcessId(handle.pid, 1.0)

    def stop(self, targets, grace):
        if self.stop_error:
            raise self.stop_error
        names = sorted(n for n, h in self.handles.items() for _, t in targets if t is h)
        self.actions.append(("stop", tuple(names), grace))
        for _, h in targets:
            if h is not None and h.code is None:
                h.code = -15
        return [StopResult.EXITED for _ in targets]

    def kill(self, pid, handle):
        self.actions.append(("kill", next(n for n, h in self.handles.items() if h is handle)))
        handle.code = -9

    def forget(self, addresses):
        self.actions.append(("forget", tuple(addresses)))

    def retire(self, names):
        if self.retire_error:
            raise self.retire_error
        self.actions.append(("retire", tuple(names)))
        return list(names)

    def rss(self, pid):
        return self.rss_of.get(pid.pid)

    def is_stopped(self, pid):
        return pid.pid in self.stopped

    down: set[str] = field(default_factory=set)  # hosts that do not answer a probe
    probes: list[str] = field(default_factory=list)

    def probe_host(self, name):
        self.probes.append(name)
        return "ssh: connect timed out" if name in self.down else None

    def sweep_host(self, name):
        self.actions.append(("sweep", name))
        self.no_routes.discard(name)  # revived: a fresh fork server, a fresh route

    no_routes: set[str] = field(default_factory=set)  # hosts whose direct route failed a start
    ways: list[tuple[str, Transport]] = field(default_factory=list)  # (name, transport) of every start

    def no_route(self, host, why):
        self.actions.append(("no-route", host))
        self.no_routes.add(host)

    def emit(self, process, event, detail="", **extra):
        self.events.append((process, event, detail))

    logs: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (first cause, tail)

    def log_tail(self, spec):
        return self.logs.get(spec.name, ("ValueError: boom", "line 1\nValueError: boom"))


@dataclass
class FakeProbe:
    answered_at: float = 0.0
    address: str | None = "tcp://127.0.0.1:9999"
    workers: dict | None = None
    interval: float = 1.0
    error: BaseException | None = None

    def refresh(self):
        if self.error:
            raise self.error

    def poke(self):
        pass


def spec(name: str, role: str = "worker", group: str = "default", policy: RestartPolicy | None = None,
         argv: tuple[str, ...] = ("dask", "worker"), at: str = "localhost", nanny: bool = True) -> ProcessSpec:
    return ProcessSpec(name=name, role=role, group=group, host="127.0.0.1", argv=argv,
                       log_path=Path(f"/logs/{name}.log"), restart=policy or RestartPolicy(),
                       at=at, remote=at != "localhost", nanny=nanny)


class History:
    """A reconciler wired to fakes, with verbs for what happens to it."""

    def __init__(self, workers: int = 2, policy: RestartPolicy | None = None, early: bool = True,
                 startup: float = 60.0, nanny: bool = True, remote: int = 0,
                 required: bool = False, scheduler_at: str = "localhost", hooks: Hooks = Hooks()):
        self.now = 0.0
        self.fx, self.probe = FakeEffects(), FakeProbe()
        self.policy = policy or RestartPolicy()
        specs = [spec("scheduler", "scheduler", "scheduler", self.policy, ("dask", "scheduler"), at=scheduler_at)]
        specs += [spec(f"default-{i}", policy=self.policy, nanny=nanny) for i in range(workers)]
        specs += [spec(f"far-{i}", group="far", policy=self.policy, nanny=nanny, at="ws1") for i in range(remote)]
        desired = DesiredSet(specs, lambda g, i: spec(f"{g}-{i}", group=g, policy=self.policy, nanny=nanny))
        hosts = {"ws1"} | ({scheduler_at} - {"localhost"})
        fleet = Fleet([Host(n, f"10.0.0.{i}", required=required, retry_max=8) for i, n in enumerate(sorted(hosts))],
                      self.fx, lambda: self.now)
        fleet.background = lambda fn, *args: fn(*args)
        self.core = Reconciler(desired, self.fx, self.probe, lambda: self.now,
                               Timing(startup=startup, shutdown=10.0, early_workers=early),
                               tracker=lambda p: RestartTracker(p, rng=random.Random(0)), fleet=fleet, hooks=hooks)
        self.core.retirer.background = lambda fn, *args: fn(*args)

    # verbs
    def tick(self, n: int = 1) -> History:
        for _ in range(n):
            self.now += STEP
            self.core.tick()
        return self

    def wait(self, seconds: float) -> History:
        self.now += seconds
        return self

    def answer(self, *workers: str, **info: dict) -> History:
        """The scheduler answers now, listing these workers."""
        self.probe.answered_at = self.now
        self.probe.workers = {w: dict({"address": f"tcp://w/{w}", "memory_limit": 2**30}, **info.get(w, {}))
                              for w in workers}
        return self

    def exit(self, name: str, code: int = -9) -> History:
        self.fx.handles[name].code = code
        return self

    def up(self) -> History:
        """The happy start: scheduler answers, then every worker registers."""
        self.tick()
        self.answer().tick()
        self.answer(*self.workers()).tick()
        assert self.core.state == ClusterState.RUNNING, self.states()
        self.fx.actions.clear()
        self.fx.events.clear()
        return self

    # facts
    def workers(self) -> list[str]:
        return [n for n, c in self.core.children.items() if c.is_worker]

    def state(self, name: str) -> S:
        return self.core.children[name].state

    def states(self) -> dict[str, str]:
        return {n: c.state.value for n, c in self.core.children.items()}

    def events(self, name: str) -> list[str]:
        return [e for p, e, _ in self.fx.events if p == name]

    def spawned(self) -> list[str]:
        return [a[1] for a in self.fx.actions if a[0] == "spawn"]


def test_start_up_scheduler_first_then_workers_proven_by_name():
    h = History(workers=2)
    h.tick()
    assert h.spawned() == ["scheduler", "default-0", "default-1"]
    assert h.fx.actions[0] == ("spawn", "scheduler", False)  # the first scheduler is exec'd, not forked
    assert h.core.state == ClusterState.STARTING
    h.answer().tick()
    assert h.state("scheduler") == S.RUNNING and h.state("default-0") == S.STARTING
    h.answer("default-0").tick()
    assert h.state("default-0") == S.RUNNING and h.state("default-1") == S.STARTING
    assert h.core.state == ClusterState.STARTING
    h.answer("default-0", "default-1").tick()
    assert h.core.state == ClusterState.RUNNING
    assert ("cluster", "ready", "2 workers at tcp://127.0.0.1:9999") in h.fx.events


def test_sequential_launch_starts_workers_only_once_the_scheduler_answers():
    h = History(workers=2, early=False)
    h.tick(3)
    assert h.spawned() == ["scheduler"]
    h.answer().tick()
    assert h.spawned() == ["scheduler", "default-0", "default-1"]


def test_a_worker_answer_older_than_its_start_does_not_count():
    h = History(workers=1)
    h.answer("default-0")  # before anything started
    h.tick()
    h.answer().tick()  # the scheduler answers, without the worker
    h.tick()
    assert h.state("default-0") == S.STARTING


def test_crash_restarts_at_once_and_counts():
    h = History().up()
    h.exit("default-1").tick()
    assert h.events("default-1") == ["exited", "restarting", "started"]
    assert h.state("default-1") == S.STARTING and h.core.children["default-1"].restarts == 1
    h.answer("default-0", "default-1").tick()
    assert h.state("default-1") == S.RUNNING
    assert h.events("default-1")[-1] == "ready"


def test_a_crash_loop_backs_off_keeps_trying_and_degrades_the_cluster_meanwhile():
    h = History(policy=RestartPolicy(max_retries=2, window=60, backoff_initial=0.5, backoff_max=1)).up()
    for _ in range(3):
        h.exit("default-1").tick()
        h.wait(2).tick()  # past any quick backoff
    c = h.core.children["default-1"]
    assert h.state("default-1") == S.BACKOFF
    assert c.reason.startswith("crash loop: 2 restarts within 60 s")
    assert "ValueError: boom" in c.reason  # the log's first cause, in status
    assert "crash-loop" in h.events("default-1")
    assert h.core.state == ClusterState.DEGRADED
    assert 5 <= c.retry_at - h.now <= 10.0
    h.wait(10).tick()  # it keeps trying
    assert h.state("default-1") == S.STARTING
    h.answer("default-0", "default-1").tick()
    assert h.state("default-1") == S.RUNNING and h.core.state == ClusterState.RUNNING


def test_backoff_delays_the_second_quick_failure():
    h = History(policy=RestartPolicy(backoff_initial=4, backoff_max=8)).up()
    h.exit("default-0").tick()  # first failure after a good run: at once
    assert h.state("default-0") == S.STARTING
    h.exit("default-0").tick()  # failed again within min_uptime: backoff 2-4 s
    assert h.state("default-0") == S.BACKOFF
    h.tick(5)
    assert h.state("default-0") == S.BACKOFF
    h.wait(4).tick()
    assert h.state("default-0") == S.STARTING


def test_a_good_run_resets_the_backoff():
    h = History(policy=RestartPolicy(backoff_initial=4, min_uptime=5)).up()
    h.exit("default-0").tick()
    h.exit("default-0").tick()
    assert h.state("default-0") == S.BACKOFF
    h.wait(5).tick()
    h.answer("default-0", "default-1").tick()
    h.wait(6).answer("default-0", "default-1").tick()  # a good run: longer than min_uptime
    h.exit("default-0").tick()
    assert h.state("default-0") == S.STARTING  # restarted at once again


def test_scheduler_loss_brings_every_worker_back_with_the_new_scheduler():
    h = History().up()
    h.exit("scheduler").tick()
    assert ("stop", ("default-0", "default-1"), SCHEDULER_LOST_GRACE) in h.fx.actions
    assert h.events("default-0")[:1] == ["stopped"]
    # the scheduler restarts at once (delay 0) and the workers with it: its address is fixed
    assert h.spawned() == ["scheduler", "default-0", "default-1"]
    assert h.fx.actions[-3] == ("spawn", "scheduler", True)  # a restart forks from the warm server
    h.answer().tick()
    h.answer("default-0", "default-1").tick()
    assert set(h.states().values()) == {"running"}
    assert h.core.children["default-0"].restarts == 1


def test_workers_wait_while_the_scheduler_backs_off():
    h = History(policy=RestartPolicy(backoff_initial=5, backoff_max=5)).up()
    h.exit("scheduler").tick()
    h.tick()
    h.exit("scheduler").tick()  # a quick second failure: backoff
    assert h.state("scheduler") == S.BACKOFF
    assert h.state("default-0") == S.WAITING
    assert h.core.children["default-0"].reason == "waiting for the scheduler"
    h.wait(5).tick()
    assert h.state("scheduler") == S.STARTING and h.state("default-0") == S.STARTING


def test_a_fatal_scheduler_leaves_workers_exited_with_the_reason():
    h = History().up()
    h.fx.logs["scheduler"] = ("", "bash: dask: command not found")
    h.exit("scheduler", 127).tick()
    assert h.state("scheduler") == S.FATAL and h.core.children["scheduler"].reason.startswith("needs an edit")
    assert h.state("default-0") == S.EXITED
    assert h.core.children["default-0"].reason == "the scheduler is fatal"
    assert h.core.state == ClusterState.DEGRADED


def test_a_crash_looping_scheduler_keeps_its_workers_waiting():
    h = History(policy=RestartPolicy(max_retries=0)).up()
    h.exit("scheduler").tick()
    assert h.state("scheduler") == S.BACKOFF and h.core.children["scheduler"].reason.startswith("crash loop")
    assert h.state("default-0") == S.WAITING
    h.wait(10).tick()
    assert h.state("scheduler") == S.STARTING


def test_scale_up_while_a_restart_is_pending():
    h = History(policy=RestartPolicy(backoff_initial=5, backoff_max=5)).up()
    h.exit("default-1").tick()
    h.exit("default-1").tick()
    assert h.state("default-1") == S.BACKOFF
    added = h.core.desired.add("default", 2, taken=set(h.core.children))
    h.tick()
    assert added == ["default-2", "default-3"]
    assert h.spawned()[-2:] == ["default-2", "default-3"]
    assert h.state("default-1") == S.BACKOFF  # its own restart keeps its schedule
    h.wait(5).tick()
    assert h.state("default-1") == S.STARTING


def test_scale_down_removes_the_idle_failure_first_without_retiring_it():
    h = History(workers=3, policy=RestartPolicy(backoff_initial=5, backoff_max=5)).up()
    h.exit("default-0").tick()
    h.exit("default-0").tick()
    members = [(n, h.state(n)) for n in h.core.desired.workers()]
    gone = pick_to_remove(members, 1)
    assert gone == ["default-0"]
    h.core.desired.remove(gone)
    h.tick()
    assert "default-0" not in h.core.children
    assert not [a for a in h.fx.actions if a[0] == "retire"]
    assert h.events("default-0")[-1] == "removed"


def test_remove_during_start_up_retires_then_stops():
    h = History(workers=2)
    h.tick()
    h.core.desired.remove(["default-1"])
    h.tick()
    assert ("retire", ("default-1",)) in h.fx.actions
    assert ("stop", ("default-1",), 10.0) in h.fx.actions
    assert "default-1" not in h.core.children
    assert h.events("default-1") == ["started", "retiring", "removed"]
    h.answer().tick()
    h.answer("default-0").tick()
    assert h.core.state == ClusterState.RUNNING  # ready without the removed one


def test_remove_with_kill_does_not_retire():
    h = History().up()
    h.core.desired.remove(["default-0"])
    h.core.kill_names.add("default-0")
    h.tick()
    assert h.fx.actions == [("kill", "default-0")]
    assert h.core.retirer.retired == {"default-0": False}


def test_a_failed_retirement_still_stops_and_removes():
    h = History().up()
    h.fx.retire_error = OSError("scheduler gone")
    h.core.desired.remove(["default-1"])
    h.tick()
    assert "default-1" not in h.core.children
    assert ("cluster", "retire-failed", "OSError: scheduler gone") in h.fx.events


def test_memory_over_the_limit_restarts_a_nannyless_worker():
    h = History(nanny=False).up()
    pid = h.core.children["default-0"].pid.pid
    h.fx.rss_of[pid] = int(0.97 * 2**30)
    h.wait(1).answer("default-0", "default-1").tick()
    assert h.events("default-0")[:2] == ["unhealthy", "restarting"]
    assert "over 95% of its 1024 MiB limit" in h.fx.events[0][2]
    assert ("stop", ("default-0",), 2.0) in h.fx.actions


def test_memory_is_the_nannys_job_when_there_is_one():
    h = History(nanny=True).up()
    h.fx.rss_of[h.core.children["default-0"].pid.pid] = 2**31
    h.wait(1).answer("default-0", "default-1").tick()
    assert h.state("default-0") == S.RUNNING


def test_a_spawn_that_raises_is_that_childs_failure_not_the_loops():
    h = History().up()
    h.fx.fail["default-1"] = OSError(12, "Cannot allocate memory")
    h.exit("default-1").tick()
    assert h.events("default-1")[-2:] == ["spawn-failed", "restarting"]
    assert h.state("default-1") == S.BACKOFF
    assert h.state("default-0") == S.RUNNING
    del h.fx.fail["default-1"]
    h.wait(5).tick()
    assert h.state("default-1") == S.STARTING


def test_a_spawn_that_raises_during_start_up_fails_it():
    h = History()
    h.fx.fail["default-0"] = ClusterError("default-0: cannot start 'dask': No such file or directory")
    h.tick()
    assert h.core.failure == "default-0: cannot start 'dask': No such file or directory"


def test_an_exit_during_start_up_fails_it_with_the_log_tail():
    h = History()
    h.tick()
    h.exit("default-0", 1).tick()
    assert h.core.failure.startswith("default-0 exited while starting (exit code 1): ValueError: boom")
    assert "last lines of /logs/default-0.log:\nline 1" in h.core.failure


def test_a_worker_unregistered_past_its_grace_is_replaced():
    h = History(policy=RestartPolicy(unhealthy_grace=10)).up()
    h.wait(1).answer("default-0").tick()  # default-1 missing from a newer answer
    h.wait(5).answer("default-0").tick()
    assert h.state("default-1") == S.RUNNING  # within its grace
    h.wait(6).answer("default-0").tick()
    assert h.events("default-1")[:2] == ["unhealthy", "restarting"]
    assert "alive but not registered for 10 s" in h.fx.events[0][2]


def test_a_worker_that_reappears_within_its_grace_is_left_alone():
    h = History(policy=RestartPolicy(unhealthy_grace=10)).up()
    h.wait(1).answer("default-0").tick()
    h.wait(8).answer("default-0", "default-1").tick()
    h.wait(8).answer("default-0", "default-1").tick()
    assert h.state("default-1") == S.RUNNING and h.events("default-1") == []


def test_a_silent_scheduler_is_replaced_after_its_grace():
    h = History(policy=RestartPolicy(unhealthy_grace=10)).up()
    h.wait(11).tick()
    assert h.events("scheduler")[:2] == ["unhealthy", "restarting"]
    assert h.state("default-0") in (S.WAITING, S.STARTING)
    assert ("stop", ("default-0", "default-1"), SCHEDULER_LOST_GRACE) in h.fx.actions
    assert ("stop", ("scheduler",), 0.0) in h.fx.actions  # silent: SIGTERM would wait in vain


def test_a_start_after_a_blocking_stop_is_timed_from_the_spawn():
    h = History(policy=RestartPolicy(unhealthy_grace=10)).up()
    stop = h.fx.stop

    def slow_stop(targets, grace):  # the real stop blocks for its grace
        h.now += grace
        return stop(targets, grace)

    h.fx.stop = slow_stop
    h.wait(1).answer("default-0").tick()
    h.wait(10).answer("default-0").tick()  # default-1 unhealthy: stopped (2 s), then restarted
    assert h.state("default-1") == S.STARTING
    assert h.core.children["default-1"].started_at == h.now


def test_a_worker_that_never_registers_fails_start_up():
    h = History(startup=5)
    h.tick()
    h.answer().tick()
    h.wait(6).answer().tick()
    assert h.core.failure.startswith("default-0 did not register within 5 s (timeouts.startup)")


def test_stop_during_start_up_is_final():
    h = History()
    h.tick()
    h.core.stop_all()
    assert set(h.states().values()) == {"stopped"}
    h.wait(100).tick(3)
    assert h.spawned() == ["scheduler", "default-0", "default-1"]  # nothing started again


def test_restart_policies_never_and_on_failure():
    h = History(policy=RestartPolicy(policy="on-failure")).up()
    h.exit("default-0", 0).tick()  # a clean exit waits for the scheduler: did Dask retire it?
    assert h.state("default-0") == S.RUNNING and h.events("default-0") == []
    h.answer("default-1").tick()  # no: a plain exit, decided by the policy
    assert h.state("default-0") == S.EXITED
    assert h.events("default-0") == ["exited", "stays-down"]
    h.exit("default-1", 3).tick()
    assert h.state("default-1") == S.STARTING
    h = History(policy=RestartPolicy(policy="never")).up()
    h.exit("default-0", 1).tick()
    assert h.state("default-0") == S.EXITED
    assert h.core.state == ClusterState.RUNNING  # stays down by policy: not degraded


def test_a_probe_that_raises_is_logged_and_supervision_goes_on(capsys):
    h = History().up()
    h.probe.error = RuntimeError("probe bug")
    h.exit("default-0").tick()
    h.tick()
    assert h.state("default-0") == S.STARTING  # the exit was still handled
    assert ("supervisor", "error", "probe: RuntimeError: probe bug") in h.fx.events
    assert capsys.readouterr().err.count("Traceback") == 1  # once, not every tick


def test_a_stop_that_raises_fails_that_child_only():
    h = History(policy=RestartPolicy(unhealthy_grace=1)).up()
    h.fx.stop_error = PermissionError(1, "Operation not permitted")
    h.wait(1).answer("default-0").tick()
    h.wait(2).answer("default-0").tick()
    assert h.state("default-0") == S.RUNNING
    assert h.state("default-1") in (S.BACKOFF, S.STARTING)


def test_removing_a_fatal_worker_clears_the_degraded_state():
    h = History(policy=RestartPolicy(max_retries=0)).up()
    h.exit("default-1").tick()
    assert h.core.state == ClusterState.DEGRADED
    h.core.desired.remove(["default-1"])
    h.tick()
    assert h.core.state == ClusterState.RUNNING and "default-1" not in h.core.children


def test_new_specs_apply_from_the_next_spawn():
    h = History(workers=1, early=False)
    h.tick()
    pinned = spec("default-0", argv=("dask", "worker", "tcp://127.0.0.1:4242"))
    h.core.replace_specs([pinned])
    h.answer().tick()
    assert h.core.children["default-0"].spec is pinned


def test_names_are_reused_only_when_free():
    h = History(workers=3).up()
    h.core.desired.remove(["default-1"])
    assert h.core.desired.add("default", 1, taken=set(h.core.children)) == ["default-3"]  # still retiring
    h.tick()
    assert h.core.desired.add("default", 1, taken=set(h.core.children)) == ["default-1"]


def test_transitions_are_written_once():
    check(S.PENDING, S.STARTING)
    check(S.RUNNING, S.RUNNING)
    with pytest.raises(IllegalTransition):
        check(S.STOPPED, S.STARTING)  # a stop asked for is final
    with pytest.raises(IllegalTransition):
        check(S.RETIRING, S.RUNNING)


def test_a_registered_worker_without_heartbeats_is_killed_and_replaced():
    h = History(policy=RestartPolicy(unhealthy_grace=10)).up()
    h.wait(1).answer("default-0", "default-1", **{"default-1": {"heartbeat_age": 5.0}}).tick()
    assert h.state("default-1") == S.RUNNING  # quiet, within its grace
    h.wait(6).answer("default-0", "default-1", **{"default-1": {"heartbeat_age": 11.0}}).tick()
    assert h.events("default-1")[:2] == ["unhealthy", "restarting"]
    assert h.fx.events[0][2] == "hung: no heartbeat for 11 s"
    assert ("stop", ("default-1",), 0.0) in h.fx.actions  # no grace: a hung process cannot leave politely


def test_a_sigstopped_worker_is_replaced_after_its_grace_even_if_the_scheduler_still_lists_it():
    h = History(policy=RestartPolicy(unhealthy_grace=10)).up()
    h.fx.stopped.add(h.core.children["default-0"].pid.pid)
    h.wait(1).answer("default-0", "default-1").tick()
    assert h.state("default-0") == S.RUNNING and h.core.children["default-0"].stopped_since is not None
    h.wait(5).answer("default-0", "default-1").tick()
    assert h.state("default-0") == S.RUNNING
    h.wait(6).answer("default-0", "default-1").tick()
    assert h.events("default-0")[:2] == ["unhealthy", "restarting"]
    assert "hung: its process has been stopped for" in h.fx.events[0][2]


def test_a_worker_stopped_then_continued_is_left_alone():
    h = History(policy=RestartPolicy(unhealthy_grace=10)).up()
    pid = h.core.children["default-0"].pid.pid
    h.fx.stopped.add(pid)
    h.wait(1).answer("default-0", "default-1").tick()
    h.fx.stopped.discard(pid)  # SIGCONT within the grace
    h.wait(5).answer("default-0", "default-1").tick()
    h.wait(8).answer("default-0", "default-1").tick()
    assert h.state("default-0") == S.RUNNING and h.events("default-0") == []


def topology(max_workers: int = 4096, groups: str = "  - name: default\n    count: 2\n"):
    from clusterctl.topology import parse_config

    return parse_config(f"name: x\nmax_workers: {max_workers}\nworkers:\n{groups}")


def test_scale_requests_are_edits_of_the_desired_set():
    from clusterctl.supervisor import scaling
    from clusterctl.supervisor.commands import parse

    h = History().up()
    cfg = topology()
    change = scaling.edit(h.core, cfg, parse("scale", {"count": 4}))
    assert change["added"] == ["default-2", "default-3"] and change["workers"] == {"default": 4}
    h.tick()
    assert h.spawned() == ["default-2", "default-3"]
    change = scaling.edit(h.core, cfg, parse("remove", {"names": ["default-0"]}))
    assert change["removing"] == ["default-0"]
    h.tick()
    assert "default-0" not in h.core.children and ("retire", ("default-0",)) in h.fx.actions


@pytest.mark.parametrize("command, body, message", [
    ("scale", {"count": 5}, "5 workers in all is more than max_workers, 4"),
    ("add", {"count": 3}, "5 workers in all is more than max_workers, 4"),
    ("remove", {"names": ["default-7"]}, "no supervised worker named 'default-7'"),
    ("scale", {"count": 1, "group": "gpu"}, "no worker group 'gpu'"),
])
def test_refused_edits_change_nothing(command, body, message):
    from clusterctl.supervisor import scaling
    from clusterctl.supervisor.commands import parse

    h = History().up()
    before = dict(h.core.desired.specs)
    with pytest.raises(ClusterError, match=message):
        scaling.edit(h.core, topology(max_workers=4), parse(command, body))
    assert h.core.desired.specs == before



def host(h: History, name: str = "ws1") -> Host:
    return h.core.fleet.hosts[name]


def test_a_lost_host_is_a_state_not_a_crash_and_its_workers_come_back_with_it():
    h = History(workers=1, remote=2, policy=RestartPolicy(max_retries=1, window=600)).up()
    h.fx.down.add("ws1")
    for name in ("far-0", "far-1"):
        h.exit(name, 255)
    h.tick()
    assert host(h).state == HostState.UNREACHABLE and host(h).last_error == "ssh to ws1 failed (exit 255)"
    assert h.state("far-0") == S.WAITING and h.core.children["far-0"].reason == "waiting for host ws1"
    assert h.events("ws1") == ["host-unreachable"]
    assert h.core.state == ClusterState.DEGRADED
    for _ in range(20):  # longer than the restart window allows: no budget is spent
        h.wait(5).answer("default-0").tick()
    assert h.state("far-0") == S.WAITING and h.core.children["far-0"].tracker.recent == type(h.core.children["far-0"].tracker.recent)()
    assert not [a for a in h.fx.actions if a[0] == "spawn"]
    h.fx.down.clear()
    for _ in range(12):  # within retry_max (8 s) the next probe answers: swept, then its workers start
        h.wait(1).answer("default-0").tick()
        if "far-1" in h.spawned():
            break
    assert h.events("ws1") == ["host-unreachable", "host-back"]
    sweep = h.fx.actions.index(("sweep", "ws1"))
    assert [a[1] for a in h.fx.actions[sweep + 1:] if a[0] == "spawn"] == ["far-0", "far-1"]
    assert host(h).state == HostState.BACK
    h.answer("default-0", "far-0", "far-1").tick()
    assert host(h).state == HostState.REACHABLE and h.core.state == ClusterState.RUNNING


def test_an_unreachable_host_is_probed_with_capped_exponential_backoff():
    h = History(workers=1, remote=1).up()
    h.fx.down.add("ws1")
    h.exit("far-0", 255).tick()
    times = []
    for _ in range(400):
        n = len(h.fx.probes)
        h.answer("default-0").tick()
        if len(h.fx.probes) > n:
            times.append(round(h.now, 1))
    gaps = [round(b - a) for a, b in zip(times, times[1:])]
    assert gaps[:4] == [2, 4, 8, 8], gaps  # 1 s, doubling, capped at retry_max (8 here)
    assert h.state("far-0") == S.WAITING


def test_a_host_down_at_up_leaves_the_cluster_degraded_and_its_workers_waiting():
    h = History(workers=1, remote=1)
    h.fx.down.add("ws1")
    h.core.fleet.lost("ws1", "ssh: connect timed out")
    h.tick()
    assert h.spawned() == ["scheduler", "default-0"]
    h.answer().tick()
    h.answer("default-0").tick()
    assert h.core.state == ClusterState.DEGRADED and h.state("far-0") in (S.PENDING, S.WAITING)
    assert h.fx.events[-1] == ("cluster", "ready", "1 workers at tcp://127.0.0.1:9999; waiting for ws1")


def test_a_required_host_lost_during_start_up_fails_it():
    h = History(workers=1, remote=1, required=True)
    h.tick()
    h.exit("far-0", 255).tick()
    assert h.core.failure.startswith("far-0 exited while starting (exit code 255)")


def test_the_schedulers_host_lost_brings_everything_back_with_it():
    h = History(workers=1, remote=1, scheduler_at="ws1").up()
    h.fx.down.add("ws1")
    h.exit("scheduler", 255).tick()
    assert h.state("scheduler") == S.WAITING and h.state("default-0") == S.WAITING
    assert h.core.children["scheduler"].tracker.recent == type(h.core.children["scheduler"].tracker.recent)()
    h.fx.down.clear()
    h.wait(2).tick()
    h.tick()
    assert h.spawned()[:1] == ["scheduler"] and set(h.spawned()) == {"scheduler", "default-0", "far-0"}


def test_a_stale_registration_of_the_previous_incarnation_is_not_ready():
    h = History().up()
    h.exit("default-1").tick()  # restarted at once; Dask still lists the old one under the name
    h.wait(1).answer("default-0", "default-1", **{"default-1": {"heartbeat_age": 3.0}}).tick()
    assert h.state("default-1") == S.STARTING
    h.wait(0.5).answer("default-0", "default-1", **{"default-1": {"heartbeat_age": 0.1}}).tick()
    assert h.state("default-1") == S.RUNNING


def test_a_silent_remote_worker_gets_ssh_time_to_notice_a_cut_first():
    h = History(workers=1, remote=1, policy=RestartPolicy(unhealthy_grace=10)).up()
    h.fx.down.add("ws1")  # a cut: a fresh ssh to the host gets no answer either
    h.wait(1).answer("default-0", "far-0", **{"far-0": {"heartbeat_age": 14.0}}).tick()
    assert h.state("far-0") == S.RUNNING  # a local worker would be hung by now; ssh needs 15 s
    h.exit("far-0", 255).tick()  # the keep-alives noticed: its host, not the worker
    assert h.state("far-0") == S.WAITING and h.events("far-0") == ["exited"]
    assert ("forget", ("tcp://w/far-0",)) in h.fx.actions  # its tasks move now, not after worker-ttl


def test_a_silent_remote_worker_on_a_reachable_host_is_hung_after_the_ssh_window():
    h = History(workers=1, remote=1, policy=RestartPolicy(unhealthy_grace=10)).up()
    h.wait(1).answer("default-0", "far-0", **{"far-0": {"heartbeat_age": 21.0}}).tick()
    assert h.events("far-0")[:2] == ["unhealthy", "restarting"]


# -- Dask is the authority on retirement and shutdown (supervisor/authority.py) ---------------------

def test_a_worker_dask_retires_lowers_its_groups_desired_count_and_is_not_restarted():
    saved = []
    h = History(workers=3, hooks=Hooks(desired_changed=lambda: saved.append(len(h.core.desired.workers("default")))))
    h.up()
    h.probe.retired = {"default-1": {"at": time.time() + 1, "stimulus": "retire-workers-1"}}
    h.tick()
    assert "default-1" not in h.core.desired and saved == [2]
    assert h.events("default-1")[:2] == ["retired-by-dask", "retiring"]
    h.tick(3)
    assert "default-1" not in h.core.children, "retired and gone, never started again"
    assert h.spawned().count("default-1") == 0  # (up() forgot the first start)


def test_a_clean_exit_that_dask_reports_as_a_retirement_is_not_restarted():
    h = History(workers=2).up()
    h.exit("default-0", 0).tick()
    assert h.state("default-0") == S.RUNNING, "held until the scheduler answers"
    h.probe.retired = {"default-0": {"at": time.time() + 1, "stimulus": "retire-workers-2"}}
    h.answer("default-1").tick(3)
    assert "default-0" not in h.core.desired and "default-0" not in h.core.children
    assert h.spawned().count("default-0") == 0  # (up() forgot the first start)
    assert "retired-by-dask" in h.events("default-0")


def test_a_clean_exit_is_restarted_once_the_scheduler_answers_or_after_the_deadline():
    h = History(workers=2).up()
    h.exit("default-0", 0).tick()
    h.answer("default-1").tick()
    assert h.events("default-0")[:2] == ["exited", "restarting"]
    h = History(workers=2).up()
    h.exit("default-0", 0).tick()
    h.wait(authority.DECIDE_WITHIN + 1).tick()  # the scheduler never answered: decide anyway
    assert h.events("default-0")[:2] == ["exited", "restarting"]


def test_an_old_retirement_record_does_not_retire_a_new_worker_of_the_same_name():
    h = History(workers=2)
    h.probe.retired = {"default-0": {"at": time.time() - 3600, "stimulus": "retire-workers-0"}}
    h.up().tick(3)
    assert "default-0" in h.core.desired and h.state("default-0") == S.RUNNING


def test_a_client_shutdown_stops_the_cluster_once_and_says_who_asked():
    asked = []
    h = History(hooks=Hooks(shutdown=asked.append)).up()
    h.probe.shutdown = {"by": "tcp://127.0.0.1:50000", "at": time.time() + 1}
    h.tick(3)
    assert asked == ["tcp://127.0.0.1:50000"]
    assert [d for p, e, d in h.fx.events if e == "shutdown-requested"] == \
        ["by a client at tcp://127.0.0.1:50000 (client.shutdown()); stopping everything"]


# -- adaptive groups (supervisor/adaptive.py) -----------------------------------------------------

def adaptive(h: History, minimum: int = 1, maximum: int = 6, wait_count: int = 3) -> History:
    h.core.adapter.set(GroupAdapt("default", minimum, maximum, wait_count=wait_count, interval=1.0))
    return h


def recommend(h: History, target: int, to_close: tuple[str, ...] = (), queued: int = 0) -> History:
    h.probe.recommendation = {"target": target, "to_close": list(to_close), "queued": queued, "processing": 0}
    return h.answer(*[n for n, c in h.core.children.items() if c.is_worker and c.state == S.RUNNING])


def test_an_adaptive_group_grows_at_once_when_work_queues_and_stops_at_its_maximum():
    h = adaptive(History(workers=1).up())
    recommend(h, 4, queued=40).tick()
    assert sorted(h.core.desired.workers("default")) == ["default-0", "default-1", "default-2", "default-3"]
    assert h.events("default")[-1] == "adapt-up" and h.core.adapter.groups["default"].target == 4
    recommend(h, 50, queued=400).wait(1).tick()
    assert len(h.core.desired.workers("default")) == 6, "never beyond maximum"


def test_an_adaptive_group_shrinks_only_after_wait_count_lower_answers_and_only_closable_workers():
    h = adaptive(History(workers=4).up(), minimum=1, wait_count=3)
    for i in range(2):
        recommend(h, 1, to_close=("default-1", "default-2", "default-3")).wait(1).tick()
        assert len(h.core.desired.workers("default")) == 4, f"answer {i + 1} of 3: not yet"
    h.tick()  # the same answer again: it does not count twice
    assert len(h.core.desired.workers("default")) == 4
    recommend(h, 1, to_close=("default-2", "default-3")).wait(1).tick()
    assert sorted(h.core.desired.workers("default")) == ["default-0", "default-1"], \
        "only the workers Dask named, newest first; the rest waits for the next round"
    assert "adapt-down" in h.events("default")
    assert {h.state(n) for n in ("default-2", "default-3") if n in h.core.children} <= {S.RETIRING, S.STOPPED}


def test_a_recommendation_between_two_lower_ones_resets_the_count():
    h = adaptive(History(workers=3).up(), wait_count=2)
    recommend(h, 1, to_close=("default-2",)).wait(1).tick()
    recommend(h, 3).wait(1).tick()
    recommend(h, 1, to_close=("default-2",)).wait(1).tick()
    assert len(h.core.desired.workers("default")) == 3, "no flapping: two lower answers in a row are needed"
    recommend(h, 1, to_close=("default-2",)).wait(1).tick()
    assert len(h.core.desired.workers("default")) == 2


def test_adaptive_never_goes_below_minimum():
    h = adaptive(History(workers=3).up(), minimum=2, wait_count=1)
    recommend(h, 0, to_close=("default-0", "default-1", "default-2")).wait(1).tick()
    assert len(h.core.desired.workers("default")) == 2


# -- restarts, rolling restarts and apply's edits (supervisor/changes.py, rolling.py, applying.py) ---

def rolling(workers: int = 2, **kw) -> History:
    """A running cluster whose worker factory also takes the host (as the Supervisor's does)."""
    h = History(workers=workers, **kw).up()
    h.core.desired.make_worker = lambda g, i, at="localhost": spec(f"{g}-{i}", group=g, policy=h.policy, at=at)
    return h


def live_workers(h: History) -> list[str]:
    return [n for n, c in h.core.children.items() if c.is_worker and c.state in (S.STARTING, S.RUNNING)]


def answer_live(h: History) -> History:
    return h.answer(*live_workers(h))


def roll_steps(h: History) -> list[str]:
    return [e[2] for e in h.fx.events if e[1] == "rolling-restart"]


def test_a_rolling_restart_starts_each_replacement_first_and_retires_the_old_one_once_it_registered():
    h = rolling(workers=3)
    roll = h.core.roller.begin(h.core, ["default-0", "default-1", "default-2"])
    h.tick()
    assert h.spawned() == ["default-3"], "the replacement starts first, under the lowest free name"
    h.tick(5)  # not registered yet: the old worker keeps working
    assert h.state("default-0") == S.RUNNING and "default-0" in h.core.desired
    assert not [a for a in h.fx.actions if a[0] == "retire"]
    sizes = []
    for _ in range(60):
        answer_live(h).tick()
        sizes.append(len(live_workers(h)) - sum(h.state(n) == S.STARTING for n in live_workers(h)))
        if roll.finished:
            break
    assert roll.phase == "done" and roll.error is None, roll_steps(h)
    assert min(sizes) >= 3, f"registered workers dropped below the group's size: {sizes}"
    assert roll.replaced == [["default-0", "default-3"], ["default-1", "default-0"], ["default-2", "default-1"]]
    assert sorted(h.core.desired.workers()) == ["default-0", "default-1", "default-3"]
    order = [(a[0], a[1]) for a in h.fx.actions if a[0] in ("spawn", "retire")]
    assert order == [("spawn", "default-3"), ("retire", ("default-0",)), ("spawn", "default-0"),
                     ("retire", ("default-1",)), ("spawn", "default-1"), ("retire", ("default-2",))]
    assert all(not c.tracker.recent for c in h.core.children.values()), "no restart budget spent"
    assert roll_steps(h)[-1].startswith("rolling restart done: 3 of 3 workers replaced")
    assert h.core.roller.active is None


def test_a_replacement_that_cannot_start_stops_the_roll_and_the_old_worker_keeps_running():
    h = rolling()
    h.fx.fail["default-2"] = OSError(12, "Cannot allocate memory")
    roll = h.core.roller.begin(h.core, ["default-0", "default-1"])
    h.tick(3)
    assert roll.phase == "failed" and h.core.roller.active is None
    assert roll.error.startswith("rolling restart stopped after 0 of 2 workers: default-2 (replacing default-0) "
                                 "did not start"), roll.error
    assert roll.error.endswith("default-0 keeps running")
    assert "default-2" not in h.core.desired and "default-2" not in h.core.children
    assert h.state("default-0") == S.RUNNING and h.state("default-1") == S.RUNNING
    assert not [a for a in h.fx.actions if a[0] in ("retire", "stop", "kill")]


def test_a_replacement_that_never_registers_stops_the_roll_after_the_startup_timeout():
    h = rolling(startup=5)
    roll = h.core.roller.begin(h.core, ["default-0", "default-1"])
    h.tick()
    h.wait(6).answer("default-0", "default-1").tick(2)
    assert roll.phase == "failed" and "did not register within 5 s" in roll.error, roll.error
    assert "default-2" not in h.core.desired and h.state("default-0") == S.RUNNING


def test_a_scheduler_lost_mid_roll_stops_it_without_a_spare_worker():
    h = rolling()
    roll = h.core.roller.begin(h.core, ["default-0", "default-1"])
    h.tick()
    h.exit("scheduler").tick()
    h.tick()
    assert roll.phase == "failed" and "the scheduler is" in roll.error
    assert sorted(h.core.desired.workers()) == ["default-0", "default-1"], "the replacement left with the roll"


def test_an_old_worker_that_crashes_mid_roll_is_restarted_and_still_replaced():
    h = rolling()
    roll = h.core.roller.begin(h.core, ["default-0", "default-1"])
    h.tick()
    h.exit("default-0").tick()  # crashed while its replacement starts: its policy restarts it
    assert h.events("default-0")[:2] == ["exited", "restarting"]
    for _ in range(60):
        answer_live(h).tick()
        if roll.finished:
            break
    assert roll.phase == "done" and len(roll.replaced) == 2 and len(h.core.desired.workers()) == 2


def test_scaling_waits_for_a_roll_and_adaptive_pauses_its_group():
    from clusterctl.supervisor import scaling
    from clusterctl.supervisor.commands import parse

    h = rolling()
    h.core.roller.begin(h.core, ["default-0", "default-1"])
    with pytest.raises(ClusterError, match=r"a rolling restart is under way \(1 of 2: default-0\)"):
        scaling.edit(h.core, topology(), parse("scale", {"count": 5}))
    with pytest.raises(ClusterError, match="a rolling restart is under way"):
        h.core.roller.begin(h.core, ["default-1"])
    adaptive(h, minimum=1, maximum=6, wait_count=1)
    recommend(h, 1, to_close=("default-0", "default-1")).wait(1).tick()
    assert h.core.adapter.groups["default"].reason.startswith("paused while a rolling restart")
    assert "default-0" in h.core.desired and "default-1" in h.core.desired


def test_a_plain_restart_stops_and_starts_again_without_spending_the_budget():
    from clusterctl.supervisor.changes import restart_now

    h = rolling(policy=RestartPolicy(max_retries=1))
    result = restart_now(h.core, ["default-1"], "clusterctl restart")
    assert result == {"restarted": ["default-1"], "skipped": {}}
    assert h.fx.actions == [("stop", ("default-1",), 10.0)]
    assert h.events("default-1") == ["restart-requested"]
    assert "clusterctl restart: stopped (killed by SIGTERM)" in h.fx.events[0][2]
    h.tick()
    assert h.spawned() == ["default-1"] and h.state("default-1") == S.STARTING
    answer_live(h).tick()
    assert h.state("default-1") == S.RUNNING and h.core.children["default-1"].restarts == 1
    for _ in range(3):  # more than max_retries: a requested restart is not a failure
        restart_now(h.core, ["default-1"], "clusterctl restart")
        h.tick()
        answer_live(h).tick()
    assert h.state("default-1") == S.RUNNING and not h.core.children["default-1"].tracker.recent
    h.exit("default-1").tick()  # its first real crash is restarted, as a fresh budget allows
    assert h.events("default-1")[-2:] == ["restarting", "started"]


def test_a_plain_restart_of_the_scheduler_brings_every_worker_back_with_it():
    from clusterctl.supervisor.changes import restart_now

    h = rolling()
    result = restart_now(h.core, ["scheduler"], "clusterctl restart")
    assert result["restarted"] == ["scheduler", "default-0", "default-1"]
    assert h.fx.actions[:2] == [("stop", ("scheduler",), 10.0), ("stop", ("default-0", "default-1"), SCHEDULER_LOST_GRACE)]
    h.tick()
    assert h.spawned() == ["scheduler", "default-0", "default-1"]
    h.answer().tick()
    h.answer("default-0", "default-1").tick()
    assert set(h.states().values()) == {"running"}
    assert not h.core.children["scheduler"].tracker.recent


def test_restarting_a_fatal_worker_gives_it_a_fresh_budget():
    from clusterctl.supervisor.changes import restart_now

    h = rolling(policy=RestartPolicy(max_retries=0))
    h.fx.logs["default-0"] = ("", "Error: No such option: --nthread (Possible options: --nthreads)")
    h.exit("default-0", 2).tick()
    assert h.state("default-0") == S.FATAL
    restart_now(h.core, ["default-0"], "clusterctl restart")
    h.tick()
    assert h.state("default-0") == S.STARTING
    answer_live(h).tick()
    assert h.core.state == ClusterState.RUNNING


@pytest.mark.parametrize("body, message", [
    ({"names": ["default-7"]}, "no supervised process named 'default-7'; processes: scheduler, default-0, default-1"),
    ({"names": ["scheduler"], "rolling": True}, "--rolling replaces workers one at a time"),
    ({"names": ["default-0"], "group": "default"}, "give process names or --group, not both"),
    ({"group": "gpu"}, "no worker group 'gpu'"),
])
def test_restart_requests_that_name_nothing_restartable_change_nothing(body, message):
    from clusterctl.supervisor.changes import targets
    from clusterctl.supervisor.commands import parse

    h = rolling()
    with pytest.raises(ClusterError, match=message):
        targets(h.core, topology(), parse("restart", body))
    assert h.fx.actions == [] and h.core.roller.active is None


def test_restart_targets_a_group_or_every_worker():
    from clusterctl.supervisor.changes import targets
    from clusterctl.supervisor.commands import parse

    h = rolling()
    assert targets(h.core, topology(), parse("restart", {})) == ["default-0", "default-1"]
    assert targets(h.core, topology(), parse("restart", {"group": "default", "rolling": True})) == ["default-0", "default-1"]
    assert targets(h.core, topology(), parse("restart", {"names": ["default-1", "default-1"]})) == ["default-1"]


def applied(h: History, old_groups: str, new_groups: str):
    from clusterctl.supervisor.apply import plan
    from clusterctl.supervisor.applying import converge

    old, new = topology(groups=old_groups), topology(groups=new_groups)
    p = plan(old, new, h.core.desired.counts([g.name for g in old.workers]))
    return p, converge(h.core, p, new)


def test_apply_scales_starts_and_retires_groups_by_editing_the_desired_set():
    h = rolling()
    p, result = applied(h, "  - name: default\n    count: 2\n",
                        "  - name: default\n    count: 3\n  - name: gpu\n    count: 2\n")
    assert [c.action for c in p.changes] == ["scale", "start"]
    assert sorted(result["added"]) == ["default-2", "gpu-0", "gpu-1"] and result["roll"] is None
    h.tick()
    assert sorted(h.spawned()) == ["default-2", "gpu-0", "gpu-1"]
    p, result = applied(h, "  - name: default\n    count: 3\n  - name: gpu\n    count: 2\n",
                        "  - name: default\n    count: 3\n")
    assert result["removing"] == ["gpu-0", "gpu-1"]
    answer_live(h).tick()
    assert ("retire", ("gpu-0", "gpu-1")) in h.fx.actions and not h.core.desired.workers("gpu")


def test_apply_rolls_a_group_whose_worker_settings_changed_and_changes_policies_in_place():
    h = rolling()
    p, result = applied(h, "  - name: default\n    count: 2\n    nthreads: 1\n",
                        "  - name: default\n    count: 2\n    nthreads: 2\n    restart: {max_retries: 9}\n")
    assert [c.action for c in p.changes] == ["roll", "in-place"]
    assert result["rolled"] == ["default-0", "default-1"] and result["roll"] is not None
    assert all(h.core.children[n].tracker.policy.max_retries == 9 for n in ("default-0", "default-1"))
    roll = h.core.roller.active
    for _ in range(60):
        answer_live(h).tick()
        if roll.finished:
            break
    assert roll.phase == "done" and len(roll.replaced) == 2


def test_adaptive_growth_stops_at_the_clusters_max_workers():
    h = adaptive(History(workers=1).up(), maximum=10)
    h.core.adapter.max_workers = 3
    recommend(h, 50, queued=400).tick()
    assert len(h.core.desired.workers()) == 3, "max_workers bounds the whole cluster, adaptive groups too"
