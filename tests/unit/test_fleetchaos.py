"""scripts/fleetchaos.py's pure parts: the fault plan, what counts as healed, the judgement.

No process, no namespace: the run itself is tests/integration/test_chaos_fleet.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("cut", "forkserver", "kill", "stop", "sshd", "kill-scheduler", "reboot")


@pytest.fixture(scope="module")
def fc():
    return load_script(ROOT / "scripts" / "fleetchaos.py")


# -- arguments ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["--fleet", "0x2"], "must each be 1-16"),
    (["--fleet", "abc"], "is not HOSTSxWORKERS"),
    (["--fleet", "2x"], "is not HOSTSxWORKERS"),
    (["--fleet", "2x2", "--faults", "cut,explode"], "unknown fault 'explode'"),
    (["--fleet", "2x2", "--minutes", "0"], "--minutes must be > 0"),
    (["--fleet", "2x2", "--gap", "8,5"], "LOW <= HIGH"),
    (["--fleet", "2x2", "--bogus"], "unrecognized arguments"),
])
def test_bad_arguments_give_one_line_and_exit_2(fc, capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        fc.main(argv)  # parsing comes first: nothing is checked nor started before it
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert words in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--fleet", "--help"], ["--fleet", "2x2", "-h"]])
def test_help_is_shown_with_or_without_the_fleet_size(fc, capsys, argv):
    with pytest.raises(SystemExit) as e:
        fc.main(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 0 and out.startswith("usage: scripts/chaos") and "--gap" in out and err == ""


def test_arguments_parse(fc):
    args = fc.parse_args(["--fleet", "3X2", "--minutes", "1.5", "--faults", "stop, cut,stop"])
    assert (args.hosts, args.per, args.minutes) == (3, 2, 1.5)
    assert args.faults == ("stop", "cut")
    assert fc.parse_args(["--fleet", "1x1", "--faults", "all"]).faults == KINDS
    assert fc.parse_args(["--fleet", "1x1"]).json == ROOT / "artifacts" / "chaos-fleet.json"


def test_the_local_chaos_hands_fleet_runs_over(fc, capsys):
    chaos = load_script(ROOT / "scripts" / "chaos.py", "chaos_script_fleet")
    with pytest.raises(SystemExit) as e:
        chaos.main(["--fleet=abc"])
    assert e.value.code == 2 and "HOSTSxWORKERS" in capsys.readouterr().err


# -- the plan ----------------------------------------------------------------------------------------

def test_the_plan_depends_on_the_seed_alone(fc):
    a = fc.plan_faults(7, 600, KINDS, 3)
    assert a == fc.plan_faults(7, 600, KINDS, 3)
    assert a != fc.plan_faults(8, 600, KINDS, 3)


def test_twenty_minutes_bring_150_faults_or_more_every_kind_mixed(fc):
    plan = fc.plan_faults(2026, 20 * 60, KINDS, 3)
    assert len(plan) >= 150
    ats = [p.at for p in plan]
    assert ats == sorted(ats) and ats[0] >= 5 and ats[-1] < 20 * 60
    assert min(b - a for a, b in zip(ats, ats[1:])) >= 5 - 1e-6
    counts = {k: sum(p.kind == k for p in plan) for k in KINDS}
    assert min(counts.values()) >= 150 // len(KINDS) - 2, counts  # a bag: every kind about as often
    assert {p.kind for p in plan[:len(KINDS)]} == set(KINDS), "every kind within the first round"
    assert any(p.kind == "kill" and p.host != 0 for p in plan) and {p.host for p in plan if p.kind == "reboot"} == {0, 1, 2}
    assert all(p.host == -1 for p in plan if p.kind == "kill-scheduler")
    for p in plan:
        assert 0 <= p.pick < 1
        if p.kind == "cut":
            assert 5 <= p.length <= 40
        elif p.kind == "sshd":
            assert 2 <= p.length <= 6
        elif p.kind == "reboot":
            assert 3 <= p.length <= 8
    cuts = [p.length for p in plan if p.kind == "cut"]
    assert max(cuts) > 30 and min(cuts) < 15, "short cuts and cuts longer than a restart window"


def test_a_host_is_not_cut_twice_at_once_nor_its_sshd_killed_while_down(fc):
    for seed in range(20):
        plan = fc.plan_faults(seed, 600, KINDS, 2, gap=(1, 2))
        cut_until, sshd_until = {}, {}
        for p in plan:
            if p.kind == "cut":
                assert cut_until.get(p.host, 0) <= p.at, (seed, p)
                cut_until[p.host] = p.at + p.length
            if p.kind == "sshd":
                assert sshd_until.get(p.host, 0) <= p.at, (seed, p)
            if p.kind in ("sshd", "reboot"):
                sshd_until[p.host] = max(sshd_until.get(p.host, 0), p.at + p.length)


def test_only_the_chosen_kinds_and_short_runs(fc):
    plan = fc.plan_faults(3, 300, ("stop", "cut"), 1)
    assert {p.kind for p in plan} == {"stop", "cut"}
    assert fc.plan_faults(3, 4, KINDS, 2) == []  # shorter than the first gap
    assert fc.allowance("cut", 12.5) == 42.5 and fc.allowance("reboot", 5) == fc.allowance("kill", 0) == 60


# -- healed or not -----------------------------------------------------------------------------------

def status(**over):
    """A `clusterctl status --json` answer at full strength: scheduler and 4 workers on ns0, ns1."""
    procs = [{"name": "scheduler", "role": "scheduler", "state": "running", "alive": True, "registered": None,
              "address": "tls://10.0.0.1:2000", "pid": 100, "at": "localhost", "reason": ""}]
    for i in range(4):
        procs.append({"name": f"default-{i}", "role": "worker", "state": "running", "alive": True, "registered": True,
                      "address": f"tls://10.0.0.{10 + i // 2}:{3000 + i}", "pid": 200 + i, "at": f"ns{i // 2}",
                      "reason": ""})
    st = {"state": "running", "supervisor": {"alive": True}, "scheduler": {"answering": True}, "processes": procs,
          "workers_registered": 4, "hosts": [{"name": "ns0", "state": "reachable"}, {"name": "ns1", "state": "reachable"}]}
    for name, changes in over.items():
        if name in ("cluster", "hosts"):
            st.update(changes)
        else:
            next(p for p in procs if p["name"] == name.replace("_", "-")).update(changes)
    return st


def test_full_strength_needs_every_worker_running_and_registered(fc):
    assert fc.full_strength(fc.sample_of(status(), 1.0, 4)) == []
    assert fc.full_strength(fc.sample_of(status(), 1.0, 5)) == ["4 workers, want 5", "4 registered, want 5"]
    fatal = fc.sample_of(status(default_2={"state": "fatal", "alive": False, "reason": "exit code 1: name taken"}), 1, 4)
    assert fc.full_strength(fatal) == ["default-2 fatal (exit code 1: name taken)"]
    unreg = status(default_1={"registered": False})
    unreg["workers_registered"] = 3
    assert fc.full_strength(fc.sample_of(unreg, 1, 4)) == ["default-1 not registered", "3 registered, want 4"]
    st = status(cluster={"state": "degraded", "hosts": [{"name": "ns0", "state": "unreachable"}]},
                scheduler={"state": "backoff", "alive": False})
    st["scheduler"] = {"answering": False}
    assert fc.full_strength(fc.sample_of(st, 1, 4)) == ["cluster degraded", "scheduler not answering", "scheduler backoff",
                                                        "host ns0 unreachable"]


def fault(fc, kind="kill", at=10.0, targets=("default-0",), length=0.0, **kw):
    f = fc.Fault(1, kind, at, length=length, targets=list(targets), **kw)
    f.deadline = at + fc.allowance(kind, length)
    return f


def test_a_killed_worker_is_back_only_as_a_new_incarnation(fc):
    f = fault(fc, remote={"default-0": 555}, old_address={"default-0": "tls://10.0.0.10:3000"})
    # the victim is dead but the scheduler still lists it at its old address
    assert fc.pending(f, fc.sample_of(status(), 11, 4)) == ["default-0 still registered at its old address"]
    # while its process lives (an sshd kill, a short cut), the old address is fine
    assert fc.pending(f, fc.sample_of(status(), 11, 4, frozenset({555}))) == []
    assert fc.pending(f, fc.sample_of(status(default_0={"address": "tls://10.0.0.10:4444"}), 12, 4)) == []
    # the new incarnation got the old port again: a live process serves it
    assert fc.pending(f, fc.sample_of(status(), 12, 4, serving=frozenset({"tls://10.0.0.10:3000"}))) == []
    assert fc.pending(f, fc.sample_of(status(default_0={"state": "backoff"}), 12, 4)) == ["default-0 backoff"]


def test_a_stopped_worker_must_be_gone_and_a_cut_restored(fc):
    f = fault(fc, "stop", must_die=[777], remote={"default-1": 777}, old_address={"default-1": "tls://10.0.0.10:3001"},
              targets=("default-1",))
    moved = status(default_1={"address": "tls://10.0.0.10:5000"})
    assert fc.pending(f, fc.sample_of(moved, 20, 4, frozenset({777}))) == ["SIGSTOPped pid 777 still there"]
    assert fc.pending(f, fc.sample_of(moved, 20, 4)) == []
    cut = fault(fc, "cut", length=20, targets=("default-0", "default-1"), not_before=float("inf"))
    assert fc.pending(cut, fc.sample_of(status(), 15, 4)) == ["link not restored yet"]
    cut.not_before = 30.0
    assert fc.pending(cut, fc.sample_of(status(), 29.9, 4)) == ["link not restored yet"]
    assert fc.pending(cut, fc.sample_of(status(), 30.0, 4)) == []
    sched = fault(fc, "kill-scheduler", targets=(), old_scheduler=100)
    assert fc.pending(sched, fc.sample_of(status(), 11, 4)) == ["scheduler not replaced yet"]
    assert fc.pending(sched, fc.sample_of(status(scheduler={"pid": 101}), 12, 4)) == []


def test_deadlines_chain_over_faults_touching_the_same_workers(fc):
    a = fault(fc, "kill", 10, ("default-0",))
    b = fault(fc, "cut", 50, ("default-0", "default-1"), length=40)  # within a's 60 s, same worker: +70 s
    c = fault(fc, "kill", 55, ("default-3",))  # another host's worker: no extension for a
    d = fault(fc, "stop", 200, ("default-0",))  # after the chain ended
    fc.chain([a, b, c, d])
    assert (a.chained, b.chained, c.chained, d.chained) == (120, 120, 115, 260)
    # a worker hit during a long cut of its host gets the cut's allowance
    cut = fault(fc, "cut", 0, ("default-0", "default-1"), length=40)
    kill = fault(fc, "kill", 5, ("default-1",))
    fc.chain([cut, kill])
    assert kill.chained == 70
    # a scheduler kill touches everyone
    s = fault(fc, "kill-scheduler", 100, ())
    e = fault(fc, "kill", 90, ("default-3",))
    fc.chain([e, s])
    assert e.chained == 160
    e.back_at = 159.0
    assert not fc.late(e)
    e.back_at = 161.0
    assert fc.late(e)
    e.back_at = None
    assert fc.late(e)


# -- the judgement -----------------------------------------------------------------------------------

def clean_report():
    return {"jobs": {"run": 5, "completed": 5, "mismatches": 0, "abandoned": 0, "retried": 1, "cut_short": 0},
            "faults": {"injected": 3, "late": 0, "list": [], "to_full_strength": {"median": 2.0, "max": 3.0},
                       "workers_back": {"median": 1.0, "max": 2.0}},
            "fatal": {}, "final": {"last_fault": 30.0, "horizon": 90.0, "full_at": 35.0, "missing": []},
            "leftovers": [], "namespaces_left": [], "broken": None, "seed": 1, "seconds": 60.0,
            "settings": {"hosts": 2, "per": 2, "gap": [5, 8], "faults": list(KINDS), "attempts": 10},
            "by_kind": {}}


def test_every_aim_missed_is_named(fc):
    clean = clean_report()
    assert fc.failures(clean) == []
    bad = json.loads(json.dumps(clean))
    bad["jobs"].update(mismatches=1, abandoned=1)
    bad["faults"]["late"] = 2
    bad["fatal"] = {"default-3": {"t": 40.0, "reason": "5 restarts within 60 s; name taken", "after": "#4 stop"}}
    bad["final"] = {"last_fault": 30.0, "horizon": 90.0, "full_at": None, "missing": ["default-3 fatal"]}
    bad.update(leftovers=["123 [stopped] (in namespace ns1) dask worker"], namespaces_left=["ccnt-x-0h1"])
    reasons = " | ".join(fc.failures(bad))
    for words in ("different from the serial run", "abandoned", "went fatal: default-3", "not back within 60 s",
                  "no full strength", "default-3 fatal", "left after `down`", "namespaces or links left: ccnt-x-0h1"):
        assert words in reasons, reasons
    idle = json.loads(json.dumps(clean))
    idle["faults"]["injected"] = 0
    idle["jobs"]["completed"] = 0
    idle["final"] = {}
    assert fc.failures(idle) == ["no fault was injected", "no job completed"]


def test_the_summary_says_pass_or_fail(fc):
    r = clean_report()
    r["by_kind"] = fc.by_kind([], [], [], {}, ("cut", "stop"))
    r["failures"] = []
    text = fc.summary(r)
    assert "| **all** | 3 | 3 |" in text and text.endswith("PASS")
    r["failures"] = ["1 worker(s) went fatal: default-3"]
    r["fatal"] = {"default-3": {"t": 40.0, "reason": "name taken", "after": "#4 stop at 33.0 s"}}
    text = fc.summary(r)
    assert "default-3 fatal at 40.0 s (after #4 stop at 33.0 s)" in text and "FAIL: 1 worker(s) went fatal" in text


def test_jobs_and_fatal_workers_are_counted_per_fault_kind(fc):
    faults = [{"kind": "cut", "at": 10.0, "late": False, "to_full": 30.0, "back": 25.0},
              {"kind": "kill-scheduler", "at": 20.0, "late": False, "to_full": 2.0, "back": 2.0},
              {"kind": "stop", "at": 50.0, "late": True, "to_full": None, "back": None}]
    jobs = [{"outcome": "match", "attempts": [{"start": 5.0, "end": 21.0, "error": "FuturesCancelledError"},
                                              {"start": 22.0, "end": 25.0, "error": None}]},
            {"outcome": "match", "attempts": [{"start": 9.0, "end": 12.0, "error": None}]},
            {"outcome": "mismatch", "attempts": [{"start": 49.0, "end": 55.0, "error": None}]}]
    fatal = {"default-1": {"after_kind": "stop"}}
    table = fc.by_kind(faults, [{"kind": "reboot", "at": 3.0, "skipped": "x"}], jobs, fatal, KINDS)
    assert table["cut"]["jobs"] == {"identical": 1, "mismatched": 0, "retried": 1}
    assert table["kill-scheduler"]["jobs"] == {"identical": 0, "mismatched": 0, "retried": 1}
    assert table["stop"]["jobs"] == {"identical": 0, "mismatched": 1, "retried": 0}
    assert table["stop"]["recovered"] == 0 and table["stop"]["fatal_after"] == 1
    assert table["cut"]["to_full_strength"] == {"n": 1, "median": 30.0, "max": 30.0}
    assert table["reboot"]["injected"] == 0 and table["reboot"]["skipped"] == 1


def test_evidence_is_the_workers_events_and_the_errors_in_its_log(fc, tmp_path):
    lines = [{"time": 1000.0, "process": "default-3", "event": "unhealthy", "detail": "hung: no heartbeat for 21 s"},
             {"time": 1000.5, "process": "default-2", "event": "started", "detail": "pid 9"},
             {"time": 1007.0, "process": "default-3", "event": "fatal",
              "detail": "5 restarts within 60 s (max_retries 5); last: exit code 1: ValueError: name taken, default-3"}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "default-3.log").write_text(
        "--- 2026-12-07 17:06:36 start (direct): ssh ...\nTraceback (most recent call last):\n  File \"x\", line 1\n"
        "ValueError: Unexpected response from register: name taken, default-3\n"
        "2026-12-07 17:06:36,724 - distributed.worker - ERROR - Unable to connect to scheduler: name taken\n")
    ev = fc.evidence(tmp_path, ["default-3"], epoch0=990.0)["default-3"]
    assert [e.split()[:3] for e in ev["events"]] == [["10.0", "default-3", "unhealthy"], ["17.0", "default-3", "fatal"]]
    assert ev["log_errors"] == ["--- 2026-12-07 17:06:36 start (direct): ssh ...",
                                "ValueError: Unexpected response from register: name taken, default-3",
                                "2026-12-07 17:06:36,724 - distributed.worker - ERROR - Unable to connect to scheduler: "
                                "name taken"]
    assert fc.fatal_events(tmp_path, 990.0) == {"default-3": {"t": 17.0, "reason": lines[2]["detail"]}}


def test_sshds_own_stages_are_not_leftovers_but_a_sessions_command_is(fc):
    """A connection cut mid-way leaves sshd's own stages ("sshd: [accepted]", "root@notty") in the
    host's namespace: sshd's, not the cluster's. Anything else there still counts."""
    import subprocess

    import psutil

    # one write each (print's text and its newline may reach the shared pipe apart: 'readyready\n')
    child = ("import os, setproctitle, sys, time; setproctitle.setproctitle(sys.argv[1]); "
             "os.write(1, b'ready\\n'); time.sleep(60)")
    parent_code = ("import subprocess, sys; "
                   f"ps = [subprocess.Popen([sys.executable, '-c', {child!r}, t]) for t in ('sshd: [accepted]', 'bash -c agent')]; "
                   "[p.wait() for p in ps]")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    try:
        for _ in range(2):
            assert parent.stdout.readline() == b"ready\n"
        kids = psutil.Process(parent.pid).children()
        sshd = next(k for k in kids if " ".join(k.cmdline()).startswith("sshd:"))
        other = next(k for k in kids if " ".join(k.cmdline()).startswith("bash -c"))
        assert fc._sshd_own(sshd)
        assert not fc._sshd_own(other), "a session's command is counted"
    finally:
        for k in psutil.Process(parent.pid).children():
            k.kill()
        parent.kill()
        parent.wait()
