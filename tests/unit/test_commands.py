"""requests.parse: one model per control command, every field bounded, one line for anything else
(runtime/requests.py; the supervisor reads it through supervisor/commands.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterctl.errors import ClusterError
from clusterctl.runtime import control
from clusterctl.runtime import requests as commands
from clusterctl.runtime.requests import (
    MAX_GROUP_WORKERS,
    MAX_WORKER_NAME,
    AddRequest,
    PingRequest,
    RemoveRequest,
    ScaleRequest,
    StatusRequest,
    parse,
)


def refusal(command, body) -> str:
    with pytest.raises(ClusterError) as info:
        parse(command, body)
    message = str(info.value)
    assert message and "\n" not in message and len(message) < 300, message
    assert type(info.value) is ClusterError
    return message


@pytest.mark.parametrize(("command", "body", "expected"), [
    ("ping", {}, PingRequest()),
    ("status", {}, StatusRequest()),
    ("scale", {"count": 0}, ScaleRequest(count=0)),
    ("scale", {"count": MAX_GROUP_WORKERS, "group": "gpu.a_1-x", "kill": True},
     ScaleRequest(count=MAX_GROUP_WORKERS, group="gpu.a_1-x", kill=True)),
    ("add", {}, AddRequest(count=1)),
    ("remove", {"names": ["default-0", "default-0"]}, RemoveRequest(names=["default-0", "default-0"])),
    ("remove", {"names": ["g" * 63 + "-1023"]}, RemoveRequest(names=["g" * 63 + "-1023"])),
    ("remove", {"count": 1, "group": "default", "kill": True}, RemoveRequest(count=1, group="default", kill=True)),
    ("remove", {"names": ["x"] * MAX_GROUP_WORKERS}, RemoveRequest(names=["x"] * MAX_GROUP_WORKERS)),
])
def test_valid_requests(command, body, expected):
    assert parse(command, body) == expected


@pytest.mark.parametrize(("command", "body", "message"), [
    # the request that crashed the old supervisor: a list inside names
    ("remove", {"names": [["default-0"]]}, "names[0] must be a worker name"),
    ("remove", {"names": [{"a": 1}]}, "names[0] must be a worker name"),
    ("remove", {"names": ["default-0", 7]}, "names[1] must be a worker name"),
    ("remove", {"names": "default-0"}, "names must be a list of at most 1024 worker names, not 'default-0'"),
    ("remove", {"names": ["x"] * (MAX_GROUP_WORKERS + 1)}, "names must be a list of at most 1024"),
    ("remove", {"names": ["x" * (MAX_WORKER_NAME + 1)]}, "at most 72 characters"),
    ("remove", {"names": ["default-0\n"]}, "names[0] must be a worker name"),
    ("remove", {"names": ["../etc"]}, "names[0] must be a worker name"),
    ("remove", {"names": [""]}, "names[0] must be a worker name"),
    ("remove", {"names": ["dèfault-0"]}, "names[0] must be a worker name"),
    ("remove", {}, "name the workers, or give --count"),
    ("remove", {"names": ["default-0"], "count": 1}, "not both"),
    ("remove", {"count": 0}, "--count must be a whole number from 1 to 1024, not 0"),
    ("scale", {}, "scale: count is required"),
    ("scale", {"count": -1}, "count must be a whole number from 0 to 1024, not -1"),
    ("scale", {"count": MAX_GROUP_WORKERS + 1}, "not 1025"),
    ("scale", {"count": "3"}, "not '3'"),
    ("scale", {"count": 3.0}, "not 3.0"),
    ("scale", {"count": True}, "not True"),
    ("scale", {"count": None}, "not None"),
    ("scale", {"count": 10 ** 5000}, "count must be a whole number"),  # past int's 4300-digit str limit
    ("scale", {"count": math.nan}, "not nan"),
    ("scale", {"count": 1, "group": "a b"}, "group must be a worker group's name"),
    ("scale", {"count": 1, "group": "g" * 64}, "at most 63 characters"),
    ("scale", {"count": 1, "group": ["default"]}, "group must be"),
    ("scale", {"count": 1, "kill": "yes"}, "kill must be true or false, not 'yes'"),
    ("scale", {"count": 1, "force": True}, "scale: unknown field 'force'; fields: count, group, kill"),
    ("status", {"verbose": 1}, "status: unknown field 'verbose'; fields: none"),
    ("status", [], "the request body must be a JSON object"),
    ("explode", {}, "unknown command 'explode'; known: adapt, add, apply, ping, remove, restart, rolling, scale, status, stop"),
    ("", {}, "unknown command ''"),
    ("x" * 10_000, {}, "unknown command 'xxxx"),
    ("\n" * 50, {}, "unknown command"),
    (["scale"], {}, "unknown command ['scale']"),
    (None, {}, "unknown command None"),
])
def test_refusals_are_one_line(command, body, message):
    assert message in refusal(command, body)


def test_read_only_is_defined_once_and_the_control_channel_serves_it():
    from clusterctl.supervisor import commands as supervisor_commands

    assert control.READ_ONLY is commands.READ_ONLY is supervisor_commands.READ_ONLY
    assert supervisor_commands.parse is parse  # the supervisor's door is the shared one
    assert commands.READ_ONLY <= set(commands.MODELS)
    assert all(model.command == name for name, model in commands.MODELS.items())


def test_every_field_is_bounded():
    """Nothing unbounded reaches the supervisor: each str has a length cap, each list and int a bound."""
    for name, model in commands.MODELS.items():
        for field, info in model.model_fields.items():
            meta = repr(info.metadata) + repr(info.annotation)
            assert "max_length" in meta or "le=" in meta or info.annotation in (bool,), (name, field, meta)


# -- fuzzing: whatever comes in, a request or one line ----------------------------------------

FIELDS = ["count", "names", "group", "kill"]
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2, max_value=1030)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=80)
           | st.sampled_from(["default", "default-0", "NaN", "Infinity", "-1", "1e999", "scheduler", "\u2028", "💥"]))
json_like = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                         | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), inner, max_size=5),
                         max_leaves=30)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), json_like, max_size=5) | json_like
command_names = st.sampled_from(sorted(commands.MODELS)) | st.text(max_size=30) | st.none() | st.integers()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(command=command_names, body=bodies)
def test_parse_returns_a_request_or_raises_one_line(command, body):
    try:
        request = parse(command, body)
    except ClusterError as e:
        assert type(e) is ClusterError
        message = str(e)
        assert message and "\n" not in message and "\r" not in message and len(message) < 400, message
        return
    assert isinstance(request, commands.Request)
    assert isinstance(request, commands.MODELS[command])
    for value in request.model_dump().values():  # what reaches the supervisor: bounded, plain
        if isinstance(value, int) and not isinstance(value, bool):
            assert 0 <= value <= MAX_GROUP_WORKERS
        elif isinstance(value, str):
            assert len(value) <= 63
        elif isinstance(value, list):
            assert len(value) <= MAX_GROUP_WORKERS
            assert all(isinstance(n, str) and 0 < len(n) <= MAX_WORKER_NAME for n in value)
