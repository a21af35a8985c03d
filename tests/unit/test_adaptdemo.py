"""The pure parts of `clusterctl demo adapt` (client/adapttimeline.py, adaptdemo.BurstPlan, EventTail,
the chart): which group, the timeline's lines, the figures from samples and events, the recompute count."""

from __future__ import annotations

import json

import pytest

from clusterctl.client.adaptdemo import AdaptReport, BurstPlan, EventTail
from clusterctl.client.adapttimeline import (
    Burst, Sample, Stored, Timeline, describe, figures, member, pick_group, relevant_events, sample_from,
)
from clusterctl.errors import ClusterError
from clusterctl.jobs import montecarlo as mc

A = {"minimum": 1, "maximum": 4, "target_duration": 2.0, "wait_count": 3, "interval": 1.0}


def s(t, names, queued=0, processing=0, rec=None):
    return Sample(t, len(names), queued, processing, rec, tuple(names))


def test_pick_group_refuses_no_adaptive_group_in_one_line_and_asks_for_one_of_several():
    with pytest.raises(ClusterError) as e:
        pick_group({}, None)
    assert "no worker group is adaptive" in str(e.value) and "\n" not in str(e.value)
    assert pick_group({"default": A}, None) == ("default", A)
    with pytest.raises(ClusterError, match=r"several groups are adaptive \(a, b\): choose one with --group"):
        pick_group({"b": A, "a": A}, None)
    assert pick_group({"a": A, "b": A}, "b")[0] == "b"
    with pytest.raises(ClusterError, match="group 'c' is not adaptive; adaptive: a, b"):
        pick_group({"a": A, "b": A}, "c")


def test_member_is_exactly_group_dash_index():
    assert member("default-0", "default") and member("default-12", "default")
    assert not member("defaults-1", "default") and not member("default-x", "default")
    assert not member("a-b-0", "a") and member("a-b-0", "a-b") and not member(None, "a")
    assert member("g.1-3", "g.1") and not member("gx1-3", "g.1")  # the name is not a regex


def test_sample_from_counts_only_the_groups_workers_and_reads_the_recommendation():
    ident = {"workers": {"default-0": {}, "default-2": {}, "other-0": {}},
             "adaptive": {"target": 3, "queued": 150, "processing": 4, "to_close": []}}
    got = sample_from(ident, "default", 1.234)
    assert got == Sample(1.23, 2, 150, 4, 3, ("default-0", "default-2"))
    silent = sample_from({"workers": {}, "adaptive": {"error": "KeyError: x"}}, "default", 0)
    assert (silent.workers, silent.queued, silent.recommended) == (0, 0, None)


def test_relevant_events_keep_the_groups_decisions_and_its_workers_trouble_only():
    t0 = 1000.0
    records = [
        {"time": 1001.5, "process": "default", "event": "adapt-up", "detail": "grew 1 -> 3", "group": "default",
         "before": 1, "after": 3, "recommended": 3, "queued": 150, "added": ["default-1", "default-2"]},
        {"time": 1002.0, "process": "other", "event": "adapt-up", "group": "other", "before": 1, "after": 2},
        {"time": 1003.0, "process": "default-1", "event": "ready", "detail": "registered"},
        {"time": 1004.0, "process": "default-2", "event": "exited", "detail": "exit code -9"},
        {"time": 1005.0, "process": "other-0", "event": "exited", "detail": "exit code 1"},
        {"process": "default", "event": "adapt-down"},  # no time: skipped, never a crash
    ]
    got = relevant_events(records, "default", t0)
    assert [(e["t"], e["event"], e["process"]) for e in got] == [(1.5, "adapt-up", "default"), (4.0, "exited", "default-2")]
    assert got[0]["after"] == 3 and got[0]["added"] == ["default-1", "default-2"]
    assert describe(got[0]) == "adapt-up 1 -> 3: Dask recommends 3, 150 tasks queued"
    assert describe(got[1]) == "exited default-2: exit code -9"
    down = {"t": 9, "event": "adapt-down", "before": 3, "after": 1, "retiring": ["default-2", "default-1"], "recommended": 1}
    assert describe(down) == "adapt-down 3 -> 1: retiring default-2, default-1 (Dask recommends 1)"


def test_timeline_prints_every_size_change_and_the_queue_at_most_once_a_second():
    tl = Timeline()
    lines = [tl.sample(x) for x in (
        s(0.0, ["d-0"]), s(0.2, ["d-0"]),  # unchanged: nothing
        s(0.4, ["d-0"], 190, 2), s(0.6, ["d-0"], 180, 2),  # the queue moved, but within a second of the last line
        s(0.8, ["d-0", "d-1"], 170, 4),  # a new worker: always
        s(1.9, ["d-0", "d-1"], 120, 4),  # the queue moved a second later
    )]
    assert [bool(x) for x in lines] == [True, False, False, False, True, True]
    assert lines[4] == "   0.8s        2     170           4"
    event = tl.event({"t": 2.0, "event": "adapt-up", "before": 2, "after": 3, "recommended": 3, "queued": 120})
    assert event == "   2.0s        2     120           4  adapt-up 2 -> 3: Dask recommends 3, 120 tasks queued"
    assert Timeline().note(0, "burst 1/3") == "   0.0s" + " " * (2 + 7 + 2 + 6 + 2 + 10 + 2) + "burst 1/3"
    assert Timeline.header().split() == ["time", "workers", "queued", "processing", "event"]


def test_figures_time_each_burst_to_its_first_new_worker_and_back_to_the_minimum():
    bursts = [Burst(0, 42, 10, submitted=1.0, idle=6.0, before=("d-0",)),
              Burst(1, 43, 10, submitted=10.0, idle=14.0, before=("d-0", "d-1")),  # the gap was too short
              Burst(2, 44, 10, submitted=20.0, idle=25.0, before=("d-0",))]
    samples = [
        s(0.8, ["d-0"]), s(1.5, ["d-0"], 100, 2), s(2.3, ["d-0", "d-1"], 90, 4), s(3.0, ["d-0", "d-1", "d-2"], 50, 6),
        s(6.2, ["d-0", "d-1"]), s(9.8, ["d-0", "d-1"]),  # not yet at the minimum when burst 1 comes
        s(10.5, ["d-0", "d-1"], 80, 4), s(12.0, ["d-0", "d-1", "d-2"], 40, 6),  # d-2 is new to burst 1
        s(14.2, ["d-0", "d-1"]), s(18.0, ["d-0"]),  # at the minimum within burst 1's window
        s(20.3, ["d-0"], 50, 2),  # burst 2: never grew
        s(25.1, ["d-0"]),
    ]
    events = [{"t": 1.9, "event": "adapt-up"}, {"t": 11.0, "event": "adapt-down"}, {"t": 11.6, "event": "adapt-up"}]
    got = figures(bursts, samples, minimum=1, events=events)
    assert [b.first_new_worker for b in bursts] == [1.3, 2.0, None]
    assert [b.back_to_minimum for b in bursts] == [None, 4.0, 0.1]
    assert [b.first_decision for b in bursts] == [0.9, 1.6, None]
    assert [b.peak_workers for b in bursts] == [3, 3, 1]
    assert got == {"burst_to_first_worker_s": 2.0, "idle_to_minimum_s": 4.0, "burst_to_decision_s": 1.6}
    assert figures([], [], 1) == {"burst_to_first_worker_s": None, "idle_to_minimum_s": None, "burst_to_decision_s": None}


def test_a_reused_name_is_a_new_worker_and_a_worker_that_stayed_is_not():
    b = Burst(0, 1, 5, submitted=0.0, idle=3.0, before=("d-0", "d-1"))  # d-1 retired before, its name comes back
    figures([b], [s(0.1, ["d-0"]), s(0.9, ["d-0", "d-1"])], minimum=1)
    assert b.first_new_worker is None  # d-1 was there when the burst was queued
    b = Burst(0, 1, 5, submitted=0.0, idle=3.0, before=("d-0",))
    figures([b], [s(0.1, ["d-0"]), s(0.9, ["d-0", "d-1"])], minimum=1)
    assert b.first_new_worker == 0.9


def test_stored_counts_a_recompute_only_within_this_run():
    before = {"stored": {"montecarlo-42-0-10": 1, "montecarlo-42-1-20": 1}, "interrupted": {}}
    after = {"stored": {"montecarlo-42-0-10": 2, "montecarlo-42-1-20": 3, "montecarlo-42-2-30": 2,
                        "montecarlo-7-0-10": 5},
             "interrupted": {"montecarlo-42-2-30": 1}}
    keys = ["montecarlo-42-0-10", "montecarlo-42-1-20", "montecarlo-42-2-30"]
    assert Stored(before).delta(after, keys) == (["montecarlo-42-1-20", "montecarlo-42-2-30"], ["montecarlo-42-2-30"])
    assert Stored({}).delta({}, keys) == ([], [])


def test_burst_plan_checks_in_one_line_and_names_the_keys_submit_uses():
    plan = BurstPlan(bursts=2, tasks=5, min_points=10, max_points=1000, seed=7)
    assert plan.spec(1).seed == 8
    points = [int(n) for n in mc.points_schedule(plan.spec(1))]
    assert plan.keys(1) == [mc.task_key(8, i, n) for i, n in enumerate(points)] and plan.keys(1)[0] == "montecarlo-8-0-10"
    for bad, message in (({"bursts": 0}, "--bursts must be between 1 and 100"), ({"gap": -1}, "--gap must be"),
                         ({"settle": 0}, "--settle must be"), ({"gap": float("nan")}, "--gap must be"),
                         ({"tasks": 0}, "tasks must be >= 1"), ({"min_points": 10, "max_points": 5}, "max_points")):
        with pytest.raises(ClusterError, match=message):
            BurstPlan(**bad)


def test_event_tail_reads_only_whole_new_lines_and_survives_a_rotation(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"event": "old"}) + "\n")
    tail = EventTail(path)
    assert tail.read() == []
    with open(path, "a") as f:
        f.write(json.dumps({"event": "a"}) + "\nnot json\n" + '{"event": "b"')  # b is half written
    assert tail.read() == [{"event": "a"}]
    with open(path, "a") as f:
        f.write("}\n")
    assert tail.read() == [{"event": "b"}]
    path.write_text(json.dumps({"event": "c"}) + "\n")  # rotated: a new, shorter file
    assert tail.read() == [{"event": "c"}]
    assert EventTail(tmp_path / "none.jsonl").read() == []


def test_the_chart_is_a_png_of_workers_and_queue_with_bursts_shaded(tmp_path):
    from clusterctl.client.adaptchart import draw

    bursts = [Burst(0, 42, 10, submitted=1.0, idle=6.0, before=("d-0",), first_new_worker=1.3, back_to_minimum=3.0)]
    samples = [s(0.0, ["d-0"]), s(1.5, ["d-0"], 100, 2), s(2.3, ["d-0", "d-1"], 90, 4), s(6.1, ["d-0", "d-1"]),
               s(9.0, ["d-0"])]
    report = AdaptReport(group="d", settings=A, plan={"tasks": 10}, bursts=bursts,
                         figures={"burst_to_first_worker_s": 1.3, "idle_to_minimum_s": 3.0}, identical=True,
                         mismatched=[], recomputed=[], interrupted=[], samples=samples,
                         events=[{"t": 2.0, "event": "adapt-up", "after": 2}, {"t": 8.5, "event": "adapt-down", "after": 1}])
    out = draw(report, tmp_path / "demo-adapt.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    d = report.to_dict()
    assert d["samples"][2] == [2.3, 2, 90, 4, None] and d["bursts"][0]["before"] == ["d-0"]
    assert json.loads(json.dumps(d))["recomputed"] == 0
