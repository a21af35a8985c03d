"""The vocabulary both ends share, below them: states (runtime/states.py) and the ledger's typed record
(runtime/ledger.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from clusterctl.runtime import states
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
