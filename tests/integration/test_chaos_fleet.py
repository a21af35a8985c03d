"""scripts/chaos --fleet: 36 s of mixed host and process faults on network-namespace hosts.

Link cuts, fork-server and worker kills, a SIGSTOPped worker, an sshd killed, the scheduler killed,
a host rebooted, overlapping while jobs run: every table identical, no worker ever fatal, full
strength within the last fault's allowance, nothing left after `down`. Root, `ip` and sshd are
needed: without them the script exits 2 with one line, and the test skips (fails under CI=true, as
the other namespace tests do). The pure parts are tests/unit/test_fleetchaos.py; a 20-minute soak
stays out of the suite (scripts/chaos --fleet 3x2 --minutes 20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import kill_all, missing_tool, processes_under

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "chaos.py"
SEED = 3  # its plan for 36 s, a fault every 4-6 s, cuts of 5-15 s: 7 faults, every kind once, the cut early


@pytest.mark.timeout(400)
def test_fleet_chaos_heals_fully_and_leaves_nothing(tmp_path):
    out = tmp_path / "chaos-fleet.json"
    # --dir: the run's temp dir lands under tmp_path, so whatever it might leave is found below (not TMPDIR:
    # ssh's ControlPath lives there, and a socket's path has at most 107 bytes).
    argv = [sys.executable, str(SCRIPT), "--fleet", "2x2", "--minutes", "0.6", "--gap", "4,6", "--cut", "5,15",
            "--seed", str(SEED), "--json", str(out),
            "--dir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "CLUSTERCTL_CONFIG"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=340)
    except subprocess.TimeoutExpired:
        proc.terminate()  # its SIGTERM handler still heals the hosts, runs `down` and removes the namespaces
        stdout, stderr = proc.communicate(timeout=50)
        pytest.fail(f"scripts/chaos --fleet did not finish within 340 s:\n{stdout[-4000:]}\n{stderr[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        left = processes_under(tmp_path)
        kill_all(left)
    if proc.returncode == 2 and "cannot run here" in stderr:
        missing_tool(stderr.strip())
    assert not left, f"processes left behind: {[(p.pid, p.info['cmdline']) for p in left]}"
    assert out.exists(), f"no summary written; exit {proc.returncode}\n{stdout[-4000:]}\n{stderr[-4000:]}"
    report = json.loads(out.read_text())
    tail = stdout[-5000:]
    assert proc.returncode == 0, f"{report['failures']}\n{tail}\n(kept: {report['temp_dir']})"
    assert report["ok"] and report["failures"] == []
    kinds = {k for k, v in report["by_kind"].items() if v["injected"] > 0}
    assert len(kinds) >= 5 and {"cut", "reboot", "stop"} <= kinds, report["by_kind"]
    assert report["faults"]["late"] == 0 and report["fatal"] == {}
    assert report["jobs"]["completed"] > 0 and report["jobs"]["mismatches"] == 0 and report["jobs"]["abandoned"] == 0
    assert report["final"]["full_at"] is not None and report["final"]["full_at"] <= report["final"]["horizon"]
    assert report["leftovers"] == [] and report["namespaces_left"] == []
    assert "| **all** |" in stdout and stdout.rstrip().endswith("PASS")
    assert Path(report["temp_dir"]).parent == tmp_path and not Path(report["temp_dir"]).exists()
