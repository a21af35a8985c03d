"""The vocabulary both ends share, below them: states (runtime/states.py), the ledger's typed record
(runtime/ledger.py), the control channel's requests and replies (runtime/requests.py, replies.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from clusterctl.errors import ClusterError
from clusterctl.runtime import replies, requests, states
from clusterctl.runtime.ledger import HostRecord, Ledger, LedgerRecord, LedgerUnreadable, ProcessRecord
from clusterctl.runtime.states import ChildState, ClusterState, HostState

# A ledger as clusterctl wrote it before the states were typed (plain strings, the same values),
# with keys this version does not know.
OLD_LEDGER = {
    "version": 1, "name": "walkthrough", "config": "/x/cluster.yaml", "state": "degraded", "error": None,
    "supervisor": {"pid": None, "create_time": None, "control": "127.0.0.1:40001", "metrics": None, "tls": "x"},
    "scheduler": {"address": "tcp://127.0.0.1:8786", "dashboard": None, "http_port": 8787},
    "processes": [
        {"name": "scheduler", "role": "scheduler", "group": "scheduler", "state": "running", "restarts": 0,
         "transport": "warm", "owner": "someone"},
        {"name": "default-0", "role": "worker", "group": "default", "state": "backoff", "restarts": 2},
        {"name": "default-1", "role": "worker", "group": "default", "state": "fatal", "reason": "exit code 127"},
    ],
    "hosts": [{"name": "lab2", "address": "10.0.0.2", "state": "unreachable", "last_error": "no route",
               "workers": {"desired": 2, "running": 0}, "owner": "idle"}],
    "adaptive": {}, "updated": None, "jobs": [],
}


def test_the_supervisor_reads_the_same_states():
    from clusterctl.supervisor import states as supervisor_states

    for name in supervisor_states.__all__:
        assert getattr(supervisor_states, name) is getattr(states, name), name
    assert set(states.TRANSITIONS) == set(ChildState)


def test_an_old_ledger_of_plain_strings_reads_as_states(tmp_path: Path):
    (tmp_path / "ledger.json").write_text(json.dumps(OLD_LEDGER))
    record = Ledger(tmp_path).read()
    assert record.state is ClusterState.DEGRADED and record.state in states.SERVING
    assert [p.state for p in record.processes] == [ChildState.RUNNING, ChildState.BACKOFF, ChildState.FATAL]
    assert record.processes[2].state in states.DOWN and record.processes[2].state == "fatal"  # still a str
    assert record.hosts[0].state is HostState.UNREACHABLE
    assert record.process("scheduler").role == "scheduler"  # unknown keys ("transport", "owner") ignored


def test_the_typed_record_round_trips_as_plain_strings(tmp_path: Path):
    record = LedgerRecord(name="lab", state=ClusterState.RUNNING,
                          processes=[ProcessRecord(name="default-0", role="worker", state=ChildState.WAITING)],
                          hosts=[HostRecord(name="lab2", state=HostState.BACK)])
    led = Ledger(tmp_path)
    led.write(record)
    raw = json.loads(led.path.read_text())
    assert (raw["state"], raw["processes"][0]["state"], raw["hosts"][0]["state"]) == ("running", "waiting", "back")
    back = led.read()
    assert back.processes[0].state is ChildState.WAITING and back.hosts[0].state is HostState.BACK
    assert back.model_dump(exclude={"updated"}) == record.model_dump(exclude={"updated"})
    # what the supervisor writes today (child.py, record.py pass .value) is the same record
    assert ProcessRecord(name="a", role="worker", state="running").state is ChildState.RUNNING
    assert ProcessRecord(name="a", role="worker").state is ChildState.PENDING
    assert LedgerRecord().state is ClusterState.STARTING and HostRecord(name="h").state is HostState.REACHABLE


@pytest.mark.parametrize(("where", "value", "field"), [
    (lambda d: d["processes"][1], "runing", "processes[1].state"),
    (lambda d: d, "up", "state"),
    (lambda d: d["hosts"][0], 3, "hosts[0].state"),
])
def test_a_state_no_clusterctl_writes_is_refused_with_field_value_and_choices(tmp_path: Path, where, value, field):
    data = json.loads(json.dumps(OLD_LEDGER))
    where(data)["state"] = value
    (tmp_path / "ledger.json").write_text(json.dumps(data))
    with pytest.raises(LedgerUnreadable) as info:
        Ledger(tmp_path).read()
    message = str(info.value)
    assert "\n" not in message and f"{field} is {value!r}" in message, message
    assert "'running'" in message or "'reachable'" in message, message  # what it may be
    with pytest.raises(ValidationError):
        LedgerRecord.model_validate(data)


# -- the control channel ---------------------------------------------------------------------

# What the client sent before the models, command by command: the same JSON now.
WIRE = [
    (requests.ScaleRequest.of(count=3, group=None), "scale", {"count": 3, "group": None}),
    (requests.AddRequest.of(count=2, group="gpu"), "add", {"count": 2, "group": "gpu"}),
    (requests.RemoveRequest.of(names=["default-1"], count=None, group=None, kill=False), "remove",
     {"names": ["default-1"], "count": None, "group": None, "kill": False}),
    (requests.RemoveRequest.of(count=1, kill=True), "remove", {"count": 1, "kill": True}),
    (requests.AdaptRequest.of(off=False, minimum=1, maximum=4), "adapt", {"off": False, "minimum": 1, "maximum": 4}),
    (requests.RestartRequest.of(names=[], group=None, rolling=True), "restart",
     {"names": [], "group": None, "rolling": True}),
    (requests.RollingRequest.of(roll=2, since=3, wait=10.0), "rolling", {"roll": 2, "since": 3, "wait": 10.0}),
    (requests.ApplyRequest.of(path="/x/cluster.yaml", dry_run=True, allow_restart=False), "apply",
     {"path": "/x/cluster.yaml", "dry_run": True, "allow_restart": False}),
    (requests.PingRequest(), "ping", {}),
    (requests.StopRequest(), "stop", {}),
]


@pytest.mark.parametrize(("request_", "command", "body"), WIRE, ids=[w[1] for w in WIRE])
def test_requests_are_built_as_the_supervisor_reads_them(request_, command, body):
    assert request_.command == command and request_.body() == body
    assert json.loads(json.dumps(request_.body())) == body
    assert requests.parse(command, body) == request_  # the supervisor's door reads it back


def test_a_request_built_wrong_is_the_supervisors_one_line_at_the_client():
    with pytest.raises(ClusterError, match=r"^group must be a worker group's name .*not 'a b'$"):
        requests.ScaleRequest.of(count=1, group="a b")
    with pytest.raises(ClusterError, match="give worker names or --count, not both"):
        requests.RemoveRequest.of(names=["default-0"], count=1)
    with pytest.raises(ClusterError, match="unknown field 'force'"):
        requests.ScaleRequest.of(count=1, force=True)


def test_every_command_has_a_reply_model():
    assert set(replies.REPLIES) == set(requests.MODELS)


ANSWERS = [
    ("ping", {"ok": True, "pid": 4242}),
    ("stop", {"ok": True}),
    ("scale", {"ok": True, "added": ["default-3"], "removing": [], "kill": False, "workers": {"default": 4},
               "retired": []}),
    ("remove", {"ok": True, "added": [], "removing": ["default-1"], "kill": False, "workers": {"default": 2},
                "retired": ["default-1"]}),
    ("adapt", {"ok": True, "group": "default", "adaptive": None, "was_adaptive": True, "workers": 3}),
    ("adapt", {"ok": True, "group": "default",
               "adaptive": {"minimum": 1, "maximum": 8, "target": 1, "reason": "", "target_duration": 5.0}, "workers": 1}),
    ("restart", {"ok": True, "rolling": False, "restarted": ["default-0"], "skipped": {"default-1": "it is retiring"}}),
    ("restart", {"ok": True, "rolling": True, "roll": 1, "names": ["default-0", "default-1"]}),
    ("rolling", {"roll": 1, "names": ["default-0"], "steps": [{"at": 1.5, "text": "x", "phase": "begin", "index": 1,
                                                               "of": 1}],
                 "next": 1, "done": False, "error": None, "replaced": [["default-0", "default-2"]]}),
    ("apply", {"ok": True, "plan": ["+ group gpu: 2 workers"], "dry_run": False, "refused": None, "restart": False,
               "added": ["gpu-0", "gpu-1"], "removing": [], "roll": None, "rolled": [], "workers": {"gpu": 2},
               "retired": []}),
]


@pytest.mark.parametrize(("command", "data"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_answers_leave_and_arrive_as_they_were(command, data):
    sent = replies.answer(command, data)  # the supervisor's side
    assert sent == data and list(sent) == list(data)  # the same keys, none added, in the supervisor's order
    reply = replies.read(command, json.loads(json.dumps(sent)))  # the client's side
    assert isinstance(reply, replies.REPLIES[command])
    assert replies.as_dict(reply) == data


def test_a_newer_supervisors_extra_keys_pass_through():
    reply = replies.read("scale", {"ok": True, "added": ["default-3"], "queued": 2})
    assert reply.added == ["default-3"] and reply.removing == [] and replies.as_dict(reply)["queued"] == 2


def test_status_answers_with_the_ledgers_record():
    record = LedgerRecord.model_validate(OLD_LEDGER)
    sent = replies.answer("status", record)
    assert sent["state"] == "degraded" and type(sent["state"]) is str  # plain JSON
    back = replies.read("status", json.loads(json.dumps(sent)))
    assert back == record and back.processes[1].state is ChildState.BACKOFF


def test_an_answer_that_does_not_fit_is_a_bug_at_the_door_and_one_line_at_the_client():
    with pytest.raises(ValidationError):
        replies.answer("scale", {"ok": True, "added": "default-3"})
    with pytest.raises(ClusterError) as info:
        replies.read("scale", {"ok": True, "added": "default-3"})
    assert "\n" not in str(info.value) and "answer to `scale`" in str(info.value) and "added" in str(info.value)


def test_the_command_line_loads_no_supervisor_module():
    """`clusterctl --help`, `status`, `down` ...: the CLI starts the supervisor by its entry point."""
    code = ("import sys, clusterctl.cli, clusterctl.client, clusterctl.client.deploy\n"
            "print(sorted(m for m in sys.modules if m.startswith('clusterctl.supervisor')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_forked_supervisor_runs_its_entry_points_function():
    import importlib

    from clusterctl.client import start
    from clusterctl.supervisor import entry

    module, name = start.SUPERVISOR_MAIN
    assert getattr(importlib.import_module(module), name) is entry.main
    assert importlib.util.find_spec(f"{start.SUPERVISOR}.__main__") is not None
    assert start.supervisor_argv("c.yaml", ["--require-all"])[1:] == ["-m", "clusterctl.supervisor", "c.yaml",
                                                                       "--require-all"]
