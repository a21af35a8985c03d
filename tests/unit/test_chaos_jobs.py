"""clusterctl.client.chaosjobs: the job loop scripts/chaos and scripts/chaos --fleet share.

Scripted attempts instead of a cluster: each attempt's rows or exception comes from a list."""

from __future__ import annotations

import pytest

from clusterctl.client import chaosjobs
from clusterctl.client.chaosjobs import JobLoop
from clusterctl.jobs.montecarlo import MonteCarloSpec

REFERENCE = [[100, 3.1, 1.3], [200, 3.2, 1.9]]


class FakeClient:
    def __init__(self):
        self.closed = False

    def close(self, timeout):
        self.closed = True


class ScriptedLoop(JobLoop):
    """Each attempt takes the next outcome: rows, or an exception to raise."""

    def __init__(self, outcomes, **kw):
        self.lines, self.settled, self.clock = [], 0, 0.0
        super().__init__(None, MonteCarloSpec(tasks=2, seed=3), key="test", attempts=kw.pop("attempts", 3),
                         timeout=1.0, echo=self.lines.append, now=lambda: self.clock, settle=self.settle)
        self.outcomes, self.keys, self.clients = list(outcomes), [], []

    def settle(self):
        self.settled += 1

    def attempt(self, n, attempt):
        self.keys.append((n, attempt))
        self.clock += 1.0
        self.client = FakeClient()
        self.clients.append(self.client)
        out = self.outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(chaosjobs, "RETRY_PAUSE", 0.0)


def test_a_failed_attempt_is_retried_once_settled_and_counts_as_retried_not_mismatched():
    loop = ScriptedLoop([OSError("scheduler\n  gone"), [list(r) for r in REFERENCE]])
    job = loop.one_job(1, REFERENCE)
    assert job.outcome == "match" and job.mismatched == [] and loop.keys == [(1, 1), (1, 2)]
    assert job.errors == ["OSError: scheduler gone"] and loop.settled == 1
    assert [a["error"] for a in job.attempts] == ["OSError: scheduler gone", None]
    assert job.attempts[0] == {"start": 0.0, "end": 1.0, "error": "OSError: scheduler gone"}
    assert loop.clients[0].closed, "a failed attempt's client is dropped"
    assert "job #1 attempt 1 failed" in loop.lines[0] and "2 rows identical" in loop.lines[1]
    assert loop.lines[1].endswith(", attempt 2)")


def test_a_changed_row_is_a_mismatch_and_too_many_failures_abandon_the_job():
    changed = [list(r) for r in REFERENCE]
    changed[1][1] = 3.3
    loop = ScriptedLoop([changed])
    job = loop.one_job(1, REFERENCE)
    assert (job.outcome, job.mismatched) == ("mismatch", [1]) and "MISMATCH in 1 rows" in loop.lines[-1]
    loop = ScriptedLoop([TimeoutError("late")] * 3)
    job = loop.one_job(2, REFERENCE)
    assert job.outcome == "abandoned" and len(job.errors) == 3 and loop.settled == 3
    assert loop.lines[-1].endswith("job #2: ABANDONED after 3 attempts")


def test_run_goes_on_while_more_and_cut_short_stops_a_retry_at_the_end():
    loop = ScriptedLoop([REFERENCE, REFERENCE, OSError("x"), REFERENCE])
    loop.run(REFERENCE, more=lambda: loop.clock < 3)
    assert [j.outcome for j in loop.jobs] == ["match", "match", "match"], "a retry after the time is up goes on"
    assert loop.client is None and all(c.closed for c in loop.clients[-1:]), "the client is dropped at the end"

    cut = ScriptedLoop([REFERENCE, OSError("x"), REFERENCE])
    cut.run(REFERENCE, more=lambda: cut.clock < 2, cut_short=True)
    assert [j.outcome for j in cut.jobs] == ["match", "cut-short"]
    assert len(cut.jobs[1].attempts) == 1 and cut.outcomes == [REFERENCE]
