"""Histories of a host yielding to its owner (supervisor/owners.py + yielding.py) against the fake
world of test_histories: the owner's watcher is a scripted line, the clock is injected."""

from __future__ import annotations

from datetime import datetime, timezone

from clusterctl.supervisor.owners import Owners
from clusterctl.supervisor.states import ChildState as S
from clusterctl.topology import parse_config
from test_histories import History

CFG = """
owner:
  active_if: {command: "test -e /x"}
  retire_after: 30
  resume_after: 20
workers: [{count: 2}]
"""


class Line:
    """The head's watcher: what it said last."""

    def __init__(self):
        self.active: bool | None = False

    def latest(self):
        return {"active": self.active, "utcoffset": 0, "signals": {"command": {"why": "exit 0" if self.active
                                                                             else "exit 1"}}}, ""

    def cpu(self):
        return 0.0

    def close(self):
        pass

    def stop(self):
        pass


def owned(text: str = CFG) -> tuple[History, Line, list]:
    h = History(workers=2).up()
    line, paused = Line(), []
    h.dask_paused = set()  # the addresses Dask shows paused

    def pause(addresses, p):
        paused.append((tuple(addresses), p))
        (h.dask_paused.update if p else h.dask_paused.difference_update)(addresses)

    cfg = parse_config(text)
    owners = Owners(cfg, h.core.fleet.held, pause, links=lambda name, cfg: line,
                    now=lambda: datetime(2026, 12, 7, 12, tzinfo=timezone.utc))
    owners._ask = lambda address, p, name, fx: owners._pause([address], p, fx, [name])  # inline, in order
    h.core.owners = owners  # as the Supervisor gives it at construction
    h.answer(*h.workers())
    for c in h.core.children.values():
        c.address = c.address or f"tcp://w/{c.name}"
    return h, line, paused


def live(h: History, seconds: float = 0.0, ticks: int = 1, moved: dict | None = None) -> History:
    """Time passes with the scheduler answering, listing the workers that run, paused or not
    (``moved``: a worker's address now, when it is not tcp://w/<name>)."""
    h.wait(seconds)
    for _ in range(ticks):
        names = [n for n, c in h.core.children.items() if c.is_worker and c.state in (S.STARTING, S.RUNNING)]
        address = {n: (moved or {}).get(n, f"tcp://w/{n}") for n in names}
        h.answer(*names, **{n: {"address": a, "status": "paused" if a in h.dask_paused else "running"}
                           for n, a in address.items()})
        h.tick()
    return h


def test_the_owner_pauses_then_retires_then_the_workers_come_back_without_spending_restarts():
    h, line, paused = owned()
    live(h)
    assert paused == [] and h.events("localhost") == []
    line.active = True
    live(h)
    assert paused == [(("tcp://w/default-0",), True), (("tcp://w/default-1",), True)]
    assert h.events("localhost") == ["owner-active", "owner-pause"]
    live(h, 6, 2)
    assert len(paused) == 2, "Dask shows them paused: not asked again"
    assert h.state("default-0") == S.RUNNING  # paused is Dask's status, not ours: it still runs
    live(h, 22)
    assert h.state("default-0") == S.RUNNING
    live(h, 3, 2)
    assert ("retire", ("default-0", "default-1")) in h.fx.actions
    assert h.state("default-0") == h.state("default-1") == S.YIELDED
    live(h, 100, 3)  # held: nothing starts, nothing is a failure
    assert h.state("default-0") == S.YIELDED and not any(a[0] == "spawn" for a in h.fx.actions)
    line.active = False
    live(h)
    live(h, 19)
    assert h.state("default-0") == S.YIELDED
    live(h, 1, 2)
    assert h.state("default-0") in (S.STARTING, S.RUNNING) and h.events("localhost")[-1] == "yield-over"
    live(h)
    assert h.states() == {"scheduler": "running", "default-0": "running", "default-1": "running"}
    assert all(c.restarts == 0 and not c.tracker.loops for c in h.core.children.values())
    assert h.core.state.value == "running"
    assert not [e for _, e, _ in h.fx.events if e in ("unhealthy", "fatal", "backoff")]


def test_a_worker_added_while_its_host_yields_waits_yielded():
    h, line, _ = owned(CFG.replace("retire_after: 30", "retire_after: 0"))
    line.active = True
    live(h, 0, 3)
    assert h.state("default-0") == S.YIELDED
    h.core.desired.add("default", 1, set(h.core.children))  # `scale 3` meanwhile
    live(h, 0, 2)
    assert h.state("default-2") == S.YIELDED and not any(a[:2] == ("spawn", "default-2") for a in h.fx.actions)


def test_a_worker_in_backoff_on_a_yielding_host_yields_too():
    h, line, _ = owned(CFG.replace("when_active: pause", "").replace("retire_after: 30", "retire_after: 0"))
    h.fx.fail["default-1"] = OSError("no such file")
    h.exit("default-1", 1).tick(2)
    assert h.state("default-1") == S.BACKOFF, h.states()
    line.active = True
    live(h, 0, 3)
    assert h.state("default-1") == S.YIELDED and h.state("default-0") == S.YIELDED


def test_stop_stops_without_retiring():
    h, line, _ = owned(CFG.replace("retire_after: 30", "retire_after: 30\n  when_active: stop"))
    line.active = True
    live(h, 0, 2)
    assert h.state("default-0") == S.YIELDED
    assert not any(a[0] == "retire" for a in h.fx.actions) and any(a[0] == "stop" for a in h.fx.actions)


def test_unknown_keeps_the_workers_as_they_are():
    h, line, paused = owned()
    line.active = None
    live(h)
    live(h, 60, 3)
    assert h.states()["default-0"] == "running" and paused == []
    assert "owner-unknown" in h.events("localhost")


def test_apply_without_the_owner_rule_brings_yielded_workers_back():
    h, line, _ = owned(CFG.replace("retire_after: 30", "retire_after: 0"))
    line.active = True
    live(h, 0, 3)
    assert h.state("default-0") == S.YIELDED
    h.core.owners.update(parse_config("workers: [{count: 2}]\n"))
    live(h, 0, 2)
    assert h.states() == {"scheduler": "running", "default-0": "running", "default-1": "running"}


def test_apply_plans_owner_and_hours_in_place_and_refuses_nice_and_reserve():
    from clusterctl.supervisor.apply import ChangeAction, plan

    hosts = "scheduler: {host: 10.0.0.1}\nhosts: [{name: ws1, address: 10.0.0.9}]\n"
    old = parse_config(hosts + "workers: [{count: 1}, {name: far, at: ws1}]\n")
    new = parse_config(hosts.replace("10.0.0.9}", "10.0.0.9, hours: 'Sat,Sun'}") + CFG.replace(
        "workers: [{count: 2}]", "workers: [{count: 1}, {name: far, at: ws1}]"))
    p = plan(old, new, {"default": 1, "far": 1})
    assert {c.subject: c.action for c in p.changes} == {
        "owner on localhost": ChangeAction.IN_PLACE, "owner on ws1": ChangeAction.IN_PLACE,
        "hours on ws1": ChangeAction.IN_PLACE}
    assert p.refusal(False) is None
    p = plan(old, parse_config(hosts + "nice: 5\nworkers: [{count: 1}, {name: far, at: ws1}]\n"), {})
    assert p.refusal(False) == ("apply refused: nice on localhost changed (and 1 more): its workers start with it; "
                                "stop the cluster with the old file (`clusterctl down`), then `clusterctl up`")


def test_a_worker_restarted_while_its_host_is_paused_is_paused_too():
    h, line, paused = owned()
    line.active = True
    live(h)
    assert paused == [(("tcp://w/default-0",), True), (("tcp://w/default-1",), True)]
    h.exit("default-1", -9)
    live(h, 1, 3, moved={"default-1": "tcp://w/default-1-again"})  # its new incarnation
    assert paused[-1] == (("tcp://w/default-1-again",), True)
    line.active = False
    live(h, 0, 1, moved={"default-1": "tcp://w/default-1-again"})
    live(h, 20, 1, moved={"default-1": "tcp://w/default-1-again"})
    assert sorted(paused[-2:]) == [(("tcp://w/default-0",), False), (("tcp://w/default-1-again",), False)]


def test_workers_left_paused_are_resumed_by_dasks_own_view():
    """A supervisor before this one paused them (or `apply` dropped the rule meanwhile): Dask shows them
    paused, their host runs: they are asked to resume; a failed ask is asked again after PAUSE_RETRY."""
    h, line, paused = owned()
    h.dask_paused.update({"tcp://w/default-0", "tcp://w/default-1"})
    fail = [True]
    inner = h.core.owners.pause_fx

    def flaky(addresses, p):
        if fail and fail.pop():
            raise OSError("scheduler busy")
        inner(addresses, p)

    h.core.owners.pause_fx = flaky
    live(h)
    assert "unpause-failed" in h.events("cluster") and len(h.dask_paused) == 1, h.dask_paused
    live(h, 1)
    assert len(h.dask_paused) == 1, "not asked again at once"
    h.core.owners.asked = {k: v - 10 for k, v in h.core.owners.asked.items()}  # PAUSE_RETRY later
    live(h, 0)
    assert h.dask_paused == set()


def test_the_scheduler_never_yields_with_its_host():
    h, line, _ = owned(CFG.replace("retire_after: 30", "retire_after: 0"))
    line.active = True
    live(h, 0, 3)
    assert h.state("default-0") == S.YIELDED
    h.exit("scheduler", -9)
    live(h, 0, 3)
    assert h.state("scheduler") in (S.STARTING, S.RUNNING), h.states()


def test_apply_adding_or_removing_a_host_is_refused_by_the_host_rule_not_a_key_error():
    from clusterctl.supervisor.apply import plan

    one = "scheduler: {host: 10.0.0.1}\nhosts: [{name: ws1, address: 10.0.0.9}]\nworkers: [{count: 1}, {name: far, at: ws1}]\n"
    two = one.replace("hosts: [{name: ws1, address: 10.0.0.9}]",
                      "hosts: [{name: ws1, address: 10.0.0.9}, {name: ws2, address: 10.0.0.8}]").replace(
        "{name: far, at: ws1}", "{name: far, at: [ws1, ws2]}")
    for a, b in ((one, two), (two, one)):
        refusal = plan(parse_config(a), parse_config(b), {"default": 1, "far": 1}).refusal(False)
        assert refusal is not None and "hosts[ws2]" in refusal, refusal
