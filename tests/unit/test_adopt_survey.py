"""Adoption's pure parts: which recorded processes are adopted, stopped or started again; ports
pinned from the ledger; the handle of a process that is not our child; the reconcile loop over
adopted children (no process is restarted for being adopted, a lost one is, counted)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from clusterctl.plan.specs import ProcessSpec
from clusterctl.runtime.handles import UNKNOWN_EXIT, Adopted
from clusterctl.runtime.ledger import Ledger, LedgerRecord, ProcessRecord, SchedulerRecord, SupervisorRecord
from clusterctl.runtime.launch import Launched, Transport
from clusterctl.runtime.process import ProcessId
from clusterctl.supervisor import adopt
from clusterctl.supervisor.child import describe_exit
from clusterctl.supervisor.desired import DesiredSet
from clusterctl.supervisor.reconcile import Reconciler, Timing
from clusterctl.supervisor.restart import RestartTracker
from clusterctl.supervisor.states import ChildState as S
from clusterctl.supervisor.states import ClusterState
from clusterctl.topology import ClusterConfig

TAG = "t.0123456789"


def rec(name: str, pid: int | None, role: str = "worker", at: str = "localhost", restarts: int = 0,
        address: str | None = None) -> ProcessRecord:
    return ProcessRecord(name=name, role=role, group="scheduler" if role == "scheduler" else "default", at=at,
                         pid=pid, create_time=float(pid) if pid else None, state="running", restarts=restarts,
                         address=address)


def ledger(*procs: ProcessRecord, http_port: int | None = 8800) -> LedgerRecord:
    return LedgerRecord(name="t", state="running", supervisor=SupervisorRecord(pid=1, create_time=1.0),
                        scheduler=SchedulerRecord(address="tcp://127.0.0.1:9900", http_port=http_port),
                        processes=list(procs))


def alive(*pids: int):
    return lambda ident: ident.pid in pids and ident.tag == TAG


def names(pairs) -> list[str]:
    return [p.name for p, _ in pairs]


def test_everything_alive_and_ours_is_adopted_with_the_schedulers_address():
    found = adopt.survey(ledger(rec("scheduler", 10, "scheduler"), rec("default-0", 11), rec("default-1", 12)),
                         TAG, alive(10, 11, 12))
    assert found.scheduler and names(found.adopt) == ["scheduler", "default-0", "default-1"]
    assert all(ident.tag == TAG for _, ident in found.adopt), "adopted identities must check the tag"
    assert (found.address, found.http_port) == ("tcp://127.0.0.1:9900", 8800)
    assert found.stray == [] and found.lost == []


def test_a_dead_or_untagged_worker_is_started_again_and_never_touched():
    # 12 is alive but `alive` says it is not ours (no tag, or another create time): neither adopted nor stopped
    found = adopt.survey(ledger(rec("scheduler", 10, "scheduler"), rec("default-0", 11), rec("default-1", 12, restarts=2)),
                         TAG, alive(10, 11))
    assert names(found.adopt) == ["scheduler", "default-0"]
    assert [p.name for p in found.lost] == ["default-1"] and found.stray == []


def test_without_the_scheduler_nothing_is_adopted_and_its_workers_are_stopped():
    found = adopt.survey(ledger(rec("scheduler", 10, "scheduler"), rec("default-0", 11), rec("default-1", 12)),
                         TAG, alive(11, 12))
    assert not found.scheduler and found.adopt == [] and found.lost == []
    assert names(found.stray) == ["default-0", "default-1"]


def test_a_scheduler_without_a_recorded_http_port_is_not_adopted():
    found = adopt.survey(ledger(rec("scheduler", 10, "scheduler"), rec("default-0", 11), http_port=None),
                         TAG, alive(10, 11))
    assert not found.scheduler and names(found.stray) == ["scheduler", "default-0"]


def test_remote_processes_are_stopped_forgotten_and_started_again():
    found = adopt.survey(ledger(rec("scheduler", 10, "scheduler"), rec("default-0", 11),
                                rec("far-0", 13, at="box", address="tcp://10.0.0.2:4000"),
                                rec("far-1", 14, at="box", address="tcp://10.0.0.2:4001")),
                         TAG, alive(10, 11, 13))
    assert names(found.adopt) == ["scheduler", "default-0"]
    assert names(found.stray) == ["far-0"]  # its ssh still runs here: stopped
    assert [p.name for p in found.lost] == ["far-0", "far-1"]
    assert found.forget == ["tcp://10.0.0.2:4000", "tcp://10.0.0.2:4001"]


def test_no_ledger_means_nothing_to_adopt():
    found = adopt.survey(None, TAG)
    assert not found.scheduler and found.adopt == found.stray == found.lost == []


def test_leftovers_no_longer_refuses_over_live_processes_but_over_a_live_supervisor(tmp_path: Path):
    led = Ledger(tmp_path)
    me = psutil.Process()
    record = ledger(rec("scheduler", me.pid, "scheduler"))
    record.processes[0].create_time = me.create_time()
    led.write(record)
    assert adopt.leftovers(led) is None  # its (recorded) supervisor is gone: adopt
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        record.supervisor = SupervisorRecord(pid=sleeper.pid, create_time=psutil.Process(sleeper.pid).create_time())
        led.write(record)
        assert "already runs this cluster" in adopt.leftovers(led)
    finally:
        sleeper.kill()
        sleeper.wait()
    led.path.write_text("{")
    assert "cannot be read" in adopt.leftovers(led)


def cfg(port: int, dashboard: int) -> ClusterConfig:
    return ClusterConfig.model_validate({"name": "t", "scheduler": {"host": "127.0.0.1", "port": port,
                                                                    "dashboard_port": dashboard},
                                         "workers": [{"name": "default", "count": 1}]})


def test_port_zero_is_pinned_to_what_the_adopted_scheduler_got():
    found = adopt.survey(ledger(rec("scheduler", 10, "scheduler")), TAG, alive(10))
    pinned = adopt.pin_ports(cfg(0, 0), found).scheduler
    assert (pinned.port, pinned.dashboard_port) == (9900, 8800)
    fixed = adopt.pin_ports(cfg(7000, 7001), found).scheduler
    assert (fixed.port, fixed.dashboard_port) == (7000, 7001)
    nothing = adopt.pin_ports(cfg(0, 0), adopt.Survey()).scheduler
    assert (nothing.port, nothing.dashboard_port) == (0, 0)


@dataclass
class FakeProc:
    pid: int
    argv: list[str]

    def cmdline(self) -> list[str]:
        return self.argv


def test_strangers_are_tagged_processes_the_ledger_does_not_account_for():
    procs = [FakeProc(1, ["dask", "worker"]), FakeProc(2, ["ssh: /s/ctl/abc [mux]"]), FakeProc(3, ["/usr/bin/ssh", "-N"])]
    assert [p.pid for p in adopt.strangers(None, procs, TAG)] == [1]  # shared ssh connections linger by design


# -- the handle of a process that is not our child ---------------------------------------------------
def test_adopted_handle_sees_the_exit_of_a_process_it_did_not_start():
    sleeper = subprocess.Popen(["sleep", "30"])
    ident = ProcessId(sleeper.pid, psutil.Process(sleeper.pid).create_time())
    handle = Adopted(ident)
    try:
        assert handle.poll() is None and handle.pid == sleeper.pid
        sleeper.kill()
        sleeper.wait()
        assert handle.poll() == UNKNOWN_EXIT
        assert "code unknown" in describe_exit(UNKNOWN_EXIT)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_adopted_handle_of_a_reused_pid_reports_it_gone_at_once():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        handle = Adopted(ProcessId(sleeper.pid, psutil.Process(sleeper.pid).create_time() - 100))  # another process
        assert handle.poll() == UNKNOWN_EXIT
        handle.send_signal(9)  # never to a process that is not the adopted one
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


# -- the reconcile loop over adopted children ----------------------------------------------------------
@dataclass
class Fx:
    spawned: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    forgot: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    codes: list[int | None] = field(default_factory=list)

    def retire(self, names):
        self.retired.extend(names)
        return names

    def spawn(self, spec, warm_ok):
        self.spawned.append(spec.name)
        return Launched(FakeHandle(5000 + len(self.spawned)), Transport.EXEC, tuple(spec.argv))

    def identify(self, handle):
        return ProcessId(handle.pid, 1.0)

    def stop(self, targets, grace):
        return ["exited" for _ in targets]

    def emit(self, process, event, detail="", **extra):
        self.events.append((process, event))
        if event == "exited":
            self.codes.append(extra.get("exit_code"))

    def forget(self, addresses):
        self.forgot.extend(addresses)

    def is_stopped(self, pid):
        return False

    def rss(self, pid):
        return None

    def log_tail(self, spec):
        return "", ""


@dataclass
class FakeHandle:
    pid: int
    code: int | None = None

    def poll(self):
        return self.code


class Probe:
    address = "tcp://127.0.0.1:9900"
    interval = 1.0

    def __init__(self):
        self.answered_at, self.workers = 0.0, {}

    def refresh(self):
        pass

    def poke(self):
        pass


def spec(name: str, role: str = "worker") -> ProcessSpec:
    return ProcessSpec(name=name, role=role, group="scheduler" if role == "scheduler" else "default",
                       host="127.0.0.1", argv=("dask", role))


@pytest.fixture
def sleepers():
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    yield [ProcessId(p.pid, psutil.Process(p.pid).create_time(), "") for p in procs]
    for p in procs:
        p.kill()
        p.wait()


def test_adopted_children_run_unrestarted_and_a_lost_one_is_restarted_with_its_count(sleepers):
    now = [100.0]
    fx, probe = Fx(), Probe()
    specs = {s.name: s for s in (spec("scheduler", "scheduler"), spec("default-0"), spec("default-1"), spec("default-2"))}
    core = Reconciler(DesiredSet([], lambda g, i: spec(f"{g}-{i}")), fx, probe, lambda: now[0],
                      Timing(60, 5, True), tracker=RestartTracker)
    core.retirer.background = lambda fn, *args: fn(*args)  # inline
    sched, w0, w1 = sleepers
    found = adopt.Survey(address="tcp://127.0.0.1:9900", http_port=8800,
                         adopt=[(rec("scheduler", 1, "scheduler"), sched), (rec("default-0", 2, restarts=3), w0),
                                (rec("default-9", 3), w1)],
                         lost=[rec("default-1", 4, restarts=1)])
    adopted, again = adopt.install(found, core, specs, lambda g, i: spec(f"{g}-{i}"))
    assert adopted == ["scheduler", "default-0", "default-9"] and again == ["default-1"]
    core.desired.specs = dict(specs)
    probe.answered_at, probe.workers = now[0], {"default-0": {"address": "tcp://a"}, "default-9": {"address": "tcp://b"}}
    core.tick()
    assert fx.spawned == ["default-1", "default-2"], "adopted ones are never started again"
    c = core.children
    assert c["scheduler"].state == S.RUNNING and c["scheduler"].pid == sched and c["default-0"].restarts == 3
    assert c["default-1"].restarts == 2, "starting a lost one again is a restart"
    assert c["default-2"].restarts == 0
    assert "default-9" not in c and fx.retired == ["default-9"], "an adopted worker the plan lacks is retired"
    assert ("default-9", "removed") in fx.events
    assert ("default-0", "adopted") in fx.events and ("default-1", "lost") in fx.events
    assert ("cluster", "adopted") in fx.events

    for _ in range(3):  # the new ones register; the cluster is running with the adopted ones as they were
        now[0] += 0.1
        probe.answered_at = now[0]
        probe.workers = {n: {"address": f"tcp://{n}", "heartbeat_age": 0.0} for n in ("default-0", "default-1", "default-2")}
        core.tick()
    assert core.state == ClusterState.RUNNING and c["default-0"].pid == w0

    # The adopted worker dies: its exit (code unknown) is seen and it is restarted by its policy.
    w0_proc = psutil.Process(w0.pid)
    w0_proc.kill()
    w0_proc.wait(5)
    now[0] += 0.1
    core.tick()
    assert ("default-0", "exited") in fx.events and fx.codes == [UNKNOWN_EXIT]
    assert fx.spawned[-1] == "default-0" and c["default-0"].restarts == 4  # a good run: restarted at once
    assert c["scheduler"].pid == sched, "the others keep their pids"


def test_nothing_is_installed_when_the_scheduler_is_not_adopted():
    core = Reconciler(DesiredSet([], lambda g, i: spec(f"{g}-{i}")), Fx(), Probe(), lambda: 0.0, Timing(60, 5, True))
    assert adopt.install(adopt.Survey(lost=[rec("default-0", 4)]), core, {}, lambda g, i: spec("x")) == ([], [])
    assert core.children == {}
