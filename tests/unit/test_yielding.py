"""The owner's and the hours' decisions for one host (supervisor/yielding.py), with an injected clock."""

from __future__ import annotations

from datetime import datetime

import pytest

from clusterctl.supervisor.yielding import HostYield, Mode, Owner, Reading
from clusterctl.topology.owner import ActiveIf, HostPolicy, OwnerPolicy

MON_NOON = datetime(2026, 12, 7, 12, 0)  # a Monday
SAT_NOON = datetime(2026, 12, 12, 12, 0)


def host(when_active="pause", retire_after=10.0, resume_after=30.0, hours=None) -> HostYield:
    owner = OwnerPolicy(active_if=ActiveIf(command="true"), when_active=when_active, retire_after=retire_after,
                        resume_after=resume_after)
    return HostYield("ws1", HostPolicy(owner=owner, hours=hours))


ACTIVE, IDLE, UNKNOWN = Reading(True, "command: exit 0"), Reading(False, "command: exit 1"), Reading(None, "timed out after 5 s")


def kinds(ds):
    return [d.kind or d.event for d in ds]


def test_owner_arrives_pauses_then_retires_after_retire_after_then_returns_after_resume_after():
    h = host()
    assert kinds(h.step(IDLE, MON_NOON, 0)) == []
    assert kinds(h.step(ACTIVE, MON_NOON, 1)) == ["owner-active", "pause"]
    assert h.mode == Mode.PAUSED and not h.holds
    assert kinds(h.step(ACTIVE, MON_NOON, 10.9)) == []
    assert kinds(h.step(ACTIVE, MON_NOON, 11)) == ["retire"]
    assert h.mode == Mode.AWAY and h.holds and "paused 10 s" in h.reason
    assert kinds(h.step(IDLE, MON_NOON, 20)) == ["owner-idle"]
    assert kinds(h.step(IDLE, MON_NOON, 49.9)) == []
    assert kinds(h.step(IDLE, MON_NOON, 50)) == ["return"]
    assert h.mode == Mode.RUN and not h.holds


def test_a_short_visit_unpauses_after_resume_after_without_retiring():
    h = host(retire_after=100, resume_after=5)
    h.step(ACTIVE, MON_NOON, 0)
    h.step(IDLE, MON_NOON, 2)
    assert kinds(h.step(IDLE, MON_NOON, 6.9)) == []
    assert kinds(h.step(IDLE, MON_NOON, 7)) == ["unpause"]


def test_the_owner_back_while_waiting_to_resume_restarts_the_wait():
    h = host(retire_after=100, resume_after=5)
    h.step(ACTIVE, MON_NOON, 0)
    h.step(IDLE, MON_NOON, 1)
    h.step(ACTIVE, MON_NOON, 4)
    h.step(IDLE, MON_NOON, 5)
    assert kinds(h.step(IDLE, MON_NOON, 9)) == []
    assert kinds(h.step(IDLE, MON_NOON, 10)) == ["unpause"]


@pytest.mark.parametrize("how", ["retire", "stop"])
def test_retire_and_stop_leave_at_once(how):
    h = host(when_active=how)
    assert kinds(h.step(ACTIVE, MON_NOON, 0)) == ["owner-active", how]
    assert h.holds


def test_unknown_changes_nothing_and_is_said_once_per_spell():
    h = host()
    h.step(ACTIVE, MON_NOON, 0)
    assert kinds(h.step(UNKNOWN, MON_NOON, 1)) == ["owner-unknown"]
    assert kinds(h.step(UNKNOWN, MON_NOON, 2)) == []
    assert h.mode == Mode.PAUSED and h.owner == Owner.ACTIVE and h.status()["owner"] == "unknown"
    assert kinds(h.step(UNKNOWN, MON_NOON, 30)) == ["retire"]  # still active as last known: paused long enough
    assert kinds(h.step(ACTIVE, MON_NOON, 31)) == []
    assert h.status()["owner"] == "active"
    assert kinds(h.step(UNKNOWN, MON_NOON, 32)) == ["owner-unknown"]  # a new spell


def test_an_idle_owner_after_unknown_counts_from_when_it_was_idle():
    h = host(retire_after=100, resume_after=5)
    h.step(ACTIVE, MON_NOON, 0)
    h.step(IDLE, MON_NOON, 1)
    h.step(UNKNOWN, MON_NOON, 3)
    assert kinds(h.step(IDLE, MON_NOON, 6)) == ["unpause"]


def test_outside_hours_the_workers_retire_and_come_back_inside_without_waiting():
    h = host(hours="Mon-Fri 19:00-07:00; Sat,Sun")
    assert kinds(h.step(IDLE, MON_NOON, 0)) == ["hours-out", "retire"]
    assert h.holds and h.reason == "outside its hours"
    assert kinds(h.step(IDLE, MON_NOON.replace(hour=18, minute=59), 10)) == []
    assert kinds(h.step(IDLE, MON_NOON.replace(hour=19), 11)) == ["hours-in", "return"]
    assert kinds(h.step(IDLE, SAT_NOON, 12)) == []


def test_back_inside_hours_with_the_owner_active_stays_away():
    h = host(hours="Sat,Sun")
    h.step(ACTIVE, MON_NOON, 0)
    assert h.holds
    assert kinds(h.step(ACTIVE, SAT_NOON, 1)) == ["hours-in"]
    assert h.holds
    h.step(IDLE, SAT_NOON, 2)
    assert kinds(h.step(IDLE, SAT_NOON, 32)) == ["return"]


def test_hours_without_an_owner_policy():
    h = HostYield("ws1", HostPolicy(hours="Sat,Sun"))
    assert kinds(h.step(None, MON_NOON, 0)) == ["hours-out", "retire"]
    assert kinds(h.step(None, SAT_NOON, 1)) == ["hours-in", "return"]
    assert h.status()["owner"] is None and h.status()["schedule"] == {"hours": "Sat,Sun", "inside": True}


def test_no_reading_yet_judges_nothing():
    h = host()
    assert h.step(None, MON_NOON, 0) == [] and h.mode == Mode.RUN
    assert h.status()["owner"] == "unknown"


def test_a_command_that_always_hangs_is_said_once_after_the_start():
    h = host()
    assert kinds(h.step(Reading(None, "not run yet"), MON_NOON, 0)) == []
    assert kinds(h.step(UNKNOWN, MON_NOON, 6)) == []  # within the command's timeout + 5 s of the start
    assert h.status()["owner"] == "unknown"
    assert kinds(h.step(UNKNOWN, MON_NOON, 10)) == ["owner-unknown"]
    assert kinds(h.step(UNKNOWN, MON_NOON, 11)) == [] and h.mode == Mode.RUN
