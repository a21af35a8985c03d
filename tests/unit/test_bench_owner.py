"""scripts/bench_owner.py's pure parts: p95, medians, the latencies from task starts and events, the
verdicts against the aims, the table.

No cluster: the measuring itself is scripts/bench --only owner."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bo():
    return load_script(ROOT / "scripts" / "bench_owner.py")


def test_p95_is_the_nearest_rank(bo):
    assert bo.p95([1.0]) == 1.0
    assert bo.p95(list(range(1, 13))) == 12  # 12 samples: the largest
    assert bo.p95(list(range(1, 21))) == 19  # 20 samples: the 19th
    assert bo.p95(list(range(100, 0, -1))) == 95  # order does not matter
    assert math.isnan(bo.p95([]))


def test_summary_has_median_p95_n_and_every_sample(bo):
    s = bo.summary([0.5, 1.25, 0.75, None, float("nan")])
    assert s == {"median": 0.75, "p95": 1.25, "n": 3, "max": 1.25, "all": [0.5, 1.25, 0.75]}
    assert bo.summary([])["n"] == 0 and math.isnan(bo.summary([])["median"])


def test_the_last_start_after_the_owner_came(bo):
    starts = [9.0, 9.95, 10.3, 10.8, 14.0]
    assert bo.last_start_after(10.0, starts, until=13.0) == pytest.approx(0.8)
    assert bo.last_start_after(10.0, starts) == pytest.approx(4.0)  # without the owner leaving: everything after
    assert bo.last_start_after(11.0, starts, until=13.0) == 0.0  # none started: the last was before the flag
    assert bo.first_start_after(12.0, starts) == pytest.approx(2.0)
    assert bo.first_start_after(15.0, starts) is None


EVENTS = [
    {"time": 100.0, "process": "localhost", "event": "owner-active"},
    {"time": 100.1, "process": "localhost", "event": "owner-pause"},
    {"time": 104.2, "process": "localhost", "event": "yield"},
    {"time": 104.6, "process": "w-1", "event": "yielded"},
    {"time": 104.9, "process": "w-0", "event": "yielded"},
    {"time": 90.0, "process": "w-0", "event": "ready"},
    {"time": 112.0, "process": "w-0", "event": "ready"},
    {"time": 112.4, "process": "w-1", "event": "ready"},
    {"time": 111.0, "process": "w-0", "event": "owner-pause"},  # not the head's
]


def test_events_after_a_moment_of_the_head_or_of_each_worker(bo):
    assert bo.first_event(EVENTS, "owner-pause", 99.0)["time"] == 100.1
    assert bo.first_event(EVENTS, "owner-pause", 101.0) is None  # w-0's is not the head's
    assert bo.first_event(EVENTS, "owner-pause", 101.0, process=None)["time"] == 111.0
    assert bo.last_of_each(EVENTS, "yielded", 99.0, ["w-0", "w-1"]) == 104.9
    assert bo.last_of_each(EVENTS, "ready", 105.0, ["w-0", "w-1"]) == 112.4  # not the ready of the start
    assert bo.last_of_each(EVENTS, "ready", 112.1, ["w-0", "w-1"]) is None  # w-0 not back after that
    assert bo.since(bo.first_event(EVENTS, "owner-active", 99.0), 99.5) == 0.5 and bo.since(None, 1.0) is None


def test_verdicts_and_aims(bo):
    assert bo.verdict(1.9, 2.0, "p95 ≤") == "met" and bo.verdict(2.1, 2.0, "p95 ≤") == "MISSED"
    assert bo.verdict(91.0, 90.0, "≥") == "met" and bo.verdict(60.0, 90.0, "≥") == "MISSED"
    assert bo.verdict(float("nan"), 2.0, "≤") == "" and bo.verdict(3.0, None, "") == ""
    r = {"retire_after": 3.0, "resume_after": 4.0}
    assert bo.aim_value("retire", r) == 8.0 and bo.aim_value("back", r) == 14.0 and bo.aim_value(2.0, r) == 2.0


def result(bo, **figures):
    return {"workers": 2, "cores": 2, "arrivals": 12, "rounds": 3, "job_tasks": 160, "retire_after": 3.0,
            "resume_after": 3.0, "distributed": "2026.11.0", "identical": [True, True, True], "recomputed": 4,
            "figures": {k: bo.summary(v) for k, v in figures.items()}}


def test_rows_judge_p95_on_the_p95_and_the_others_on_the_worst_sample(bo):
    r = result(bo, last_start=[0.5] * 11 + [2.5], retired=[4.0, 8.5], hog_paused=[99.0, 95.0],
               hog_compete=[66.0], back=[6.0, 7.0])
    got = {row["key"]: row for row in bo.rows(r)}
    assert got["last_start"]["verdict"] == "MISSED"  # the 12th of 12 is the p95
    assert got["last_start"]["median"] == "0.50 s" and got["last_start"]["p95"] == "2.50 s"
    assert got["last_start"]["aim"] == "p95 ≤ 2.00 s"
    assert got["retired"]["verdict"] == "MISSED" and got["retired"]["aim"] == "≤ 8.00 s"  # one of two over 3 + 5
    assert got["back"]["verdict"] == "met" and got["back"]["aim"] == "≤ 13.00 s"
    assert got["hog_paused"]["verdict"] == "met" and got["hog_paused"]["median"] == "97.0% of a core"
    assert got["hog_compete"]["verdict"] == "" and got["hog_compete"]["aim"] == ""
    assert "2 busy workers compete" in got["hog_compete"]["label"] and "`retire_after: 3`" in got["retired"]["label"]
    assert [row["key"] for row in bo.rows(r)] == ["last_start", "retired", "back", "hog_paused", "hog_compete"]


def test_the_table_has_a_row_per_figure_the_results_and_how_it_was_measured(bo):
    figures = {key: [1.0, 2.0] for key, *_ in bo.ROWS}
    r = result(bo, **figures)
    text = "\n".join(bo.markdown(r))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "| median |" not in line]
    assert len(rows) == len(bo.ROWS) + 2  # + identical, + recomputed
    assert "| 3/3 rounds |" in text and "| met |" in text and "| … tasks recomputed" in text
    assert "12 owner arrivals" in text and "command signal" in text and "distributed 2026.11.0" in text
    r["identical"] = [True, False]
    assert "1/2 rounds" in "\n".join(bo.markdown(r)) and "MISSED" in "\n".join(bo.markdown(r))


def test_the_policy_block_and_the_docstring_examples(bo):
    assert "retire_after: 3600" in bo.policy(3600, 0) and "test -e FLAG" in bo.policy(1, 2)
    assert doctest.testmod(bo).failed == 0
