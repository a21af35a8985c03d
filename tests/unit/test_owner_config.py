"""Bad `owner:`, `hours:`, `nice:` and `reserve:` input: one line naming the field, never a traceback."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterctl.errors import ConfigError
from clusterctl.topology import parse_config

BASE = "workers: [{count: 1}]\n"


def error(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text + BASE)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


@pytest.mark.parametrize("text, says", [
    ("owner: {active_if: {comand: 'true'}}\n", "comand: unknown key"),
    ("owner: {active_if: {command: 'true'}, when_active: sleep}\n", "when_active"),
    ("owner: {retire_after: -1}\n", "retire_after"),
    ("owner: {resume_after: -5}\n", "resume_after"),
    ("owner: {active_if: {input_idle_below: -300}}\n", "input_idle_below"),
    ("owner: {active_if: {other_cpu_above: 0}}\n", "other_cpu_above"),
    ("owner: {active_if: {command: '  '}}\n", "the command is empty"),
    ("owner: {active_if: {command: 'true', command_timeout: 0}}\n", "command_timeout"),
    ("owner: {retire_after: true}\n", "boolean"),
    ("owner: yes\n", "owner"),
    ("hours: 'Mon-Fir 19:00-07:00'\n", "'Fir' is not a day"),
    ("hours: '25:00-26:00'\n", "hours"),
    ("hours: 7\n", "is not an hours expression"),
    ("nice: 20\n", "nice"),
    ("nice: -1\n", "nice"),
    ("reserve: lots\n", "reserve"),
    ("reserve: -1\n", "reserve"),
    ("hosts: [{name: ws1, address: 10.0.0.2, hours: 'Sat-Sunday 9-5'}]\n", "hosts"),
])
def test_bad_owner_input_is_one_line_naming_the_field(text, says):
    assert says in error(text)


def test_a_hosts_own_keys_replace_the_top_levels():
    cfg = parse_config("nice: 10\nhours: 'Sat,Sun'\nowner: {active_if: {command: 'true'}}\n"
                       "scheduler: {host: 10.0.0.1}\n"
                       "hosts: [{name: ws1, address: 10.0.0.2, nice: 5, owner: {active_if: {}}},\n"
                       "        {name: ws2, address: 10.0.0.3}]\n"
                       "workers: [{count: 1, at: [ws1, ws2]}]\n")
    assert cfg.policy("localhost").nice == 10 and cfg.policy("ws1").nice == 5 and cfg.policy("ws2").nice == 10
    assert cfg.policy("ws1").hours == "Sat,Sun" and cfg.policy("localhost").watched
    assert not cfg.policy("ws1").watched and cfg.policy("ws2").watched  # `active_if: {}`: no signal there


owner_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["active_if", "command", "when_active", "retire_after", "resume_after", "input_idle_below",
                         "other_cpu_above", "command_timeout", "x"]), inner, max_size=4),
    max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(owner=owner_values, hours=st.text(max_size=30) | st.integers(), nice=st.integers(-30, 30) | st.text(max_size=3))
def test_any_owner_block_is_valid_or_one_line(owner, hours, nice):
    import json

    text = f"owner: {json.dumps(owner)}\nhours: {json.dumps(hours)}\nnice: {json.dumps(nice)}\n"
    try:
        parse_config(text + BASE)
    except ConfigError as e:
        assert "\n" not in str(e)
