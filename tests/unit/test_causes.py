"""Why a process went decides what it costs: one history per cause (issue 20, point 3), and the hung
remote worker whose replacement must not race its predecessor's name (points 1 and 2).

The fakes are test_histories.py's: events in, actions and states out, no process.
"""

from __future__ import annotations

import pytest

from clusterctl.plan.ssh import NOT_STARTED, SERVER_LOST, SSH_FAILED
from clusterctl.runtime.launch import Transport
from clusterctl.supervisor.causes import Cause, exit_cause, spawn_cause
from clusterctl.supervisor.failures import NAME_WAIT, NameCheck, name_check
from clusterctl.supervisor.states import ChildState as S
from clusterctl.supervisor.states import ClusterState, HostState
from clusterctl.topology import RestartPolicy
from test_histories import History

NAME_TAKEN_LOG = ("ValueError: Unexpected response from register: {'status': 'error', 'message': "
                  "'name taken, default-1'}", "  ValueError: ... name taken, default-1")


# -- the classifier, pure -----------------------------------------------------------------------

@pytest.mark.parametrize("code, log, remote, cause", [
    (1, "ValueError: boom", False, Cause.CRASH),
    (-9, "", False, Cause.CRASH),
    (0, "", False, Cause.CRASH),
    (1, NAME_TAKEN_LOG[0], False, Cause.NAME_TAKEN),
    (1, NAME_TAKEN_LOG[0], True, Cause.NAME_TAKEN),
    (SSH_FAILED, "", True, Cause.HOST),
    (SSH_FAILED, "", False, Cause.CRASH),  # a local process's 255 is its own
    (SERVER_LOST, "", True, Cause.SERVER),
    (NOT_STARTED, "", True, Cause.ROUTE),
    (127, "bash: dask: command not found", False, Cause.CONFIG),
    (126, "", True, Cause.CONFIG),
    (2, "Error: No such option: --nthread", False, Cause.CONFIG),
    (2, "something else", False, Cause.CRASH),
])
def test_exit_causes(code, log, remote, cause):
    assert exit_cause(code, log, remote) == cause


def test_spawn_causes_follow_the_chain():
    class StartFailed(Exception):
        pass

    try:
        try:
            raise FileNotFoundError(2, "No such file", "/opt/venv/bin/dask")
        except OSError as e:
            raise StartFailed("cannot start") from e
    except StartFailed as e:
        assert spawn_cause(e) == Cause.CONFIG
    assert spawn_cause(RuntimeError("fork failed")) == Cause.CRASH


def test_name_check_waits_for_a_fresh_answer_then_forgets_once():
    base = dict(now=1.0, gone_at=0.5, forgot=None)
    assert name_check(**base, answered_at=0.4, address="tcp://a") == NameCheck.WAIT  # older than its end
    assert name_check(**base, answered_at=0.6, address="tcp://a") == NameCheck.FORGET
    assert name_check(**{**base, "forgot": "tcp://a"}, answered_at=0.6, address="tcp://a") == NameCheck.WAIT
    assert name_check(**base, answered_at=0.6, address=None) == NameCheck.FREE
    late = dict(base, now=0.5 + NAME_WAIT + 0.1)
    assert name_check(**late, answered_at=0.4, address="tcp://a") == NameCheck.FREE  # bounded


# -- one history per cause ----------------------------------------------------------------------

def budget(h: History, name: str) -> int:
    return len(h.core.children[name].tracker.recent)


def test_crash_spends_the_budget():
    h = History().up()
    h.exit("default-1", 1).tick()
    assert budget(h, "default-1") == 1
    assert h.fx.events[-2][1:] == ("restarting", "in 0.0 s")


def test_name_taken_spends_nothing_forgets_the_predecessor_then_starts():
    h = History(policy=RestartPolicy(max_retries=1)).up()
    for _ in range(4):  # far past max_retries: never a crash loop, never fatal
        h.fx.logs["default-1"] = NAME_TAKEN_LOG
        h.exit("default-1", 1).tick()
        c = h.core.children["default-1"]
        assert c.state == S.BACKOFF and "previous incarnation" in c.reason and "not counted" in c.reason
        assert budget(h, "default-1") == 0
        h.answer("default-0", "default-1")  # the scheduler still lists the name
        h.wait(1.0).tick()
        assert ("forget", ("tcp://w/default-1",)) in h.fx.actions
        assert h.state("default-1") == S.PENDING, "no start while its name is registered"
        h.answer("default-0").tick()  # forgotten: the start goes ahead
        assert h.state("default-1") == S.STARTING
        h.fx.actions.clear()
    assert [e for e in h.events("default-1") if e in ("fatal", "crash-loop")] == []
    kinds = [x[2] for x in h.fx.events if x[0] == "default-1" and x[1] == "restarting"]
    assert all("previous incarnation" in k for k in kinds)


def test_a_lost_fork_server_restarts_at_once_without_spending_the_budget():
    h = History(remote=1, policy=RestartPolicy(max_retries=0)).up()
    h.exit("far-0", SERVER_LOST).tick()
    assert h.state("far-0") == S.PENDING and budget(h, "far-0") == 0  # until a fresh answer lacks its name
    h.answer("default-0", "default-1").tick()
    assert h.state("far-0") == S.STARTING
    assert h.core.state == ClusterState.RUNNING


def test_a_lost_host_waits_for_it_without_spending_the_budget():
    h = History(remote=1, policy=RestartPolicy(max_retries=0)).up()
    h.fx.down.add("ws1")
    h.exit("far-0", SSH_FAILED).tick()
    assert h.state("far-0") == S.WAITING and budget(h, "far-0") == 0
    assert h.core.fleet.hosts["ws1"].state == HostState.UNREACHABLE
    h.fx.down.clear()
    h.wait(2).tick(3)
    h.answer("default-0", "default-1").tick()
    assert h.state("far-0") == S.STARTING


def test_a_lost_scheduler_spends_nothing_of_its_workers_budget():
    h = History(policy=RestartPolicy(max_retries=0)).up()
    h.exit("scheduler", -9).tick()
    assert h.state("default-0") in (S.WAITING, S.PENDING, S.STARTING)
    assert budget(h, "default-0") == 0


@pytest.mark.parametrize("code, log", [(127, ("", "bash: dask: command not found")),
                                       (2, ("", "Error: No such option: --nthread"))])
def test_an_error_that_needs_an_edit_is_fatal_until_restart(code, log):
    h = History().up()
    h.fx.logs["default-1"] = log
    h.exit("default-1", code).tick()
    c = h.core.children["default-1"]
    assert c.state == S.FATAL and c.reason.startswith("needs an edit")
    assert "clusterctl apply" in c.reason
    assert ("default-1", "fatal") in [(p, e) for p, e, _ in h.fx.events]
    h.wait(600).tick(3)
    assert h.state("default-1") == S.FATAL  # nothing changes by itself


def test_a_missing_executable_at_a_restart_is_fatal():
    h = History().up()
    h.fx.fail["default-1"] = FileNotFoundError(2, "No such file or directory", "dask")
    h.exit("default-1", 1).tick()
    assert h.state("default-1") == S.FATAL


# -- a hung remote worker -----------------------------------------------------------------------

def hung_remote(grace: float = 10.0) -> History:
    h = History(remote=1, policy=RestartPolicy(unhealthy_grace=grace)).up()
    h.core.health.next_memory = 0.0
    return h


def test_a_hung_remote_worker_on_a_host_that_answers_is_killed_without_grace_then_replaced():
    h = hung_remote()
    h.answer("default-0", "default-1", "far-0", **{"far-0": {"heartbeat_age": 11.0}})
    h.wait(1.1).tick()
    assert ("stop", ("far-0",), 0.0) in h.fx.actions  # killed at once: a stopped process ignores SIGTERM
    assert h.fx.probes == ["ws1"]  # the host was asked over a fresh connection first
    assert h.state("far-0") == S.PENDING, "its name is still registered: no start yet"
    assert "forget" not in [a[0] for a in h.fx.actions]
    h.answer("default-0", "default-1", "far-0", **{"far-0": {"heartbeat_age": 12.0}}).tick()
    assert ("forget", ("tcp://w/far-0",)) in h.fx.actions
    assert h.state("far-0") == S.PENDING
    h.answer("default-0", "default-1").tick()
    assert h.state("far-0") == S.STARTING


def test_a_silent_remote_worker_on_a_host_that_does_not_answer_waits_for_ssh():
    h = hung_remote()
    h.fx.down.add("ws1")
    h.answer("default-0", "default-1", "far-0", **{"far-0": {"heartbeat_age": 11.0}})
    h.wait(1.1).tick()
    assert h.state("far-0") == S.RUNNING  # maybe a cut link: ssh's keep-alives judge that
    h.wait(10).answer("default-0", "default-1", "far-0", **{"far-0": {"heartbeat_age": 21.0}}).tick()
    assert ("stop", ("far-0",), 0.0) in h.fx.actions  # past ssh's notice: hung after all


def test_a_direct_start_that_fails_before_it_runs_goes_through_the_agent_next_tick_uncounted():
    """Issue 21: a handle never changes transport; a failed direct start is a typed end (NOT_STARTED),
    the reconciler marks the host's route, and the next start chooses the agent."""
    h = History(remote=1, policy=RestartPolicy(max_retries=0)).up()
    assert h.fx.ways[-1] == ("far-0", Transport.DIRECT)
    first = h.core.children["far-0"].pid
    h.exit("far-0", NOT_STARTED).tick()
    assert ("no-route", "ws1") in h.fx.actions
    assert budget(h, "far-0") == 0
    h.answer("default-0", "default-1").tick()
    assert h.core.children["far-0"].restarts == 1
    assert h.state("far-0") == S.STARTING and h.fx.ways[-1] == ("far-0", Transport.AGENT)
    assert h.core.children["far-0"].pid != first and h.core.children["far-0"].transport == Transport.AGENT
    assert [e for e in h.events("far-0") if e in ("fatal", "crash-loop")] == []
