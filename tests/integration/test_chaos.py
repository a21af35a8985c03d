"""scripts/chaos: half a minute of faults against a real cluster, every job's table checked, nothing left.

The first tests check the chaos run's own judgement without processes: a changed
table is caught, a hostile request that was obeyed is caught, the failure list
names every reason. The last runs the script for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clusterctl.client.chaos import (DEFAULT_FAULTS, FAULTS, compare_rows, hostile_cases, parse_faults,
                                     refused_properly, rows_of)
from clusterctl.errors import ClusterError
from clusterctl.jobs.montecarlo import MonteCarloSpec, run_serial
from clusterctl.supervisor import commands
from conftest import load_script, kill_all, processes_under

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "chaos.py"

# The faults the supervisor heals: all of them, `stop` (a hung worker) included.
CI_FAULTS = ",".join(DEFAULT_FAULTS)
CI_SEED = 20261128


def chaos_script():
    return load_script(SCRIPT, "chaos_script")


def test_a_changed_table_is_a_mismatch():
    reference = rows_of(run_serial(MonteCarloSpec(tasks=12, min_points=1000, max_points=20_000, seed=5)))
    assert compare_rows([list(r) for r in reference], reference) == []
    nudged = [list(r) for r in reference]
    nudged[7][1] = float(nudged[7][1]) + 2**-40  # one row's estimate, off in its last bits
    assert compare_rows(nudged, reference) == [7]
    assert compare_rows(reference[:-2], reference) == [10, 11]  # rows missing
    other = rows_of(run_serial(MonteCarloSpec(tasks=12, min_points=1000, max_points=20_000, seed=6)))
    assert compare_rows(other, reference)  # another seed's table


def test_fault_names_parse():
    assert parse_faults(None) == parse_faults("default") == DEFAULT_FAULTS
    assert set(parse_faults("all")) == set(FAULTS) and "stop" in DEFAULT_FAULTS
    assert parse_faults("kill, scale,kill") == ("kill", "scale")
    with pytest.raises(ClusterError, match="unknown fault 'explode'"):
        parse_faults("kill,explode")


def test_no_hostile_request_is_a_valid_command():
    """Were one obeyed, the run would scale or stop its own cluster: each must fail validation."""
    checked = 0
    for what, method, path, headers, body, with_token in hostile_cases("t" * 43):
        if not with_token or what == "unknown worker":
            continue  # refused for the token; or well formed, naming no worker (the supervisor refuses it)
        try:
            parsed = json.loads(body) if body else {}
        except (ValueError, RecursionError):
            continue  # not JSON: refused before any command sees it
        if isinstance(parsed, dict):
            with pytest.raises(ClusterError):
                commands.parse(path.strip("/"), parsed)
            checked += 1
    assert checked >= 8
    assert refused_properly(401, with_token=False) and not refused_properly(400, with_token=False)
    assert refused_properly(413, with_token=True)
    for obeyed_or_broken in (200, 500, "no answer (RemoteDisconnected: ...)"):
        assert not refused_properly(obeyed_or_broken, with_token=True)


def test_every_failure_reason_is_named():
    chaos = chaos_script()
    clean = {"jobs": {"mismatches": 0, "abandoned": 0, "completed": 4}, "faults": {"unrecovered": 0, "injected": 3},
             "anomalies": [], "broken": None, "leftovers": [], "settings": {"attempts": 5, "recovery_deadline": 60}}
    assert chaos.failures(clean) == []
    bad = json.loads(json.dumps(clean))
    bad["jobs"].update(mismatches=1, abandoned=2)
    bad["faults"]["unrecovered"] = 1
    bad.update(anomalies=["x"], leftovers=["123 dask worker"], broken="the cluster did not recover")
    reasons = " | ".join(chaos.failures(bad))
    for word in ("different from the undisturbed run", "abandoned", "not recovered", "wrong answer",
                 "left after `down`", "did not recover"):
        assert word in reasons, reasons
    idle = json.loads(json.dumps(clean))
    idle["faults"]["injected"] = 0
    idle["jobs"]["completed"] = 0
    assert chaos.failures(idle) == ["no fault was injected", "no job completed"]


@pytest.mark.integration
@pytest.mark.timeout(720)
def test_chaos_leaves_every_table_identical_and_nothing_behind(tmp_path):
    out = tmp_path / "chaos.json"
    argv = [sys.executable, str(SCRIPT), "--minutes", "0.5", "--seed", str(CI_SEED), "--faults", CI_FAULTS,
            "--json", str(out)]
    # TMPDIR: the run's own temp dir lands under tmp_path, so whatever it might leave is found below.
    env = {k: v for k, v in os.environ.items() if k != "CLUSTERCTL_CONFIG"} | {"TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the script's SIGTERM handler still runs `down`
        stdout, stderr = proc.communicate(timeout=150)
        pytest.fail(f"scripts/chaos did not finish within 600 s:\n{stdout[-4000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
        left = processes_under(tmp_path)
        kill_all(left)
    assert not left, f"processes left behind: {[p.pid for p in left]}"
    assert out.exists(), f"no summary written; exit {proc.returncode}\n{stdout[-4000:]}\n{stderr[-4000:]}"
    report = json.loads(out.read_text())
    tail = stdout[-3000:]
    assert proc.returncode == 0, f"{report['failures']}\n{tail}\n(kept: {report['temp_dir']})"
    assert report["ok"] and report["failures"] == []
    assert report["faults"]["injected"] > 0, tail
    assert any(f["disrupted"] for f in report["faults"]["list"]), "no fault disrupted the cluster: " + tail
    assert report["faults"]["unrecovered"] == 0
    assert report["jobs"]["completed"] > 0 and report["jobs"]["mismatches"] == 0
    assert report["jobs"]["abandoned"] == 0
    assert report["leftovers"] == []
    assert report["mttr"]["max"] is not None and report["mttr"]["max"] < 60
    assert "| **all** |" in stdout and "PASS" in stdout
    assert Path(report["temp_dir"]).parent == tmp_path and not Path(report["temp_dir"]).exists()
