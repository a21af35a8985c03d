"""`clusterctl demo owner` with real processes: its own cluster in a temp dir, a job, the owner's flag
file created and removed on a schedule; the workers pause (Dask's paused status: no new task starts),
retire, come back; the chart and the figures are written, every result equals the serial run, and
nothing it started is left running, also after a Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import kill_all, processes_under

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "clusterctl", "demo", "owner"]
# ~80 tasks of ~0.15 s on 2 workers: 3 s of work before the owner comes, about 3 s after the return.
SMALL = ["--arrive", "3", "--stay", "8", "--retire-after", "3", "--resume-after", "2", "--task-seconds", "0.15",
         "--tail", "3", "--seed", "7"]


def run_demo(tmp: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """The demo's temp dir under ``tmp`` (TMPDIR), so that whatever it leaves is found there."""
    (tmp / "t").mkdir(exist_ok=True)
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TMPDIR=str(tmp / "t"))
    return subprocess.run([*CLI, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)


def nothing_left(tmp: Path) -> None:
    left = [p for p in processes_under(tmp) if p.is_running()]
    desc = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in left]
    kill_all(left)
    assert not desc, "processes left behind:\n" + "\n".join(desc)
    # (Dask's scheduler leaves its dask-scratch-space in TMPDIR, and a forked process its pymp-*: not the demo's)
    assert not list((tmp / "t").glob("clusterctl-owner-demo-*")), "the demo's temp dir was not removed"


def column(text: str, state: str) -> bool:
    """A timeline line (it starts with the time) where a worker's column says ``state``."""
    return any(line.strip()[:1].isdigit() and f"  {state} " in line for line in text.splitlines())


def test_demo_owner_pauses_retires_returns_and_results_are_identical(tmp_path):
    png = tmp_path / "out" / "owner.png"
    res = run_demo(tmp_path, *SMALL, "--out", str(png))
    try:
        assert res.returncode == 0, (res.stdout, res.stderr)
        text = res.stdout
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        figures = json.loads(png.with_suffix(".json").read_text())
        # the timeline: the owner comes, the workers pause, retire, the owner leaves, they come back
        for said in ("the owner arrives: owner-is-here created", "owner-active localhost: command: exit 0",
                     "owner-pause localhost: owner active", "yield localhost: owner active; paused 3 s",
                     "yielded default-0: ", "the owner leaves: owner-is-here removed",
                     "owner-idle localhost", "yield-over localhost", "ready default-0", "job done: all"):
            assert said in text, (said, text)
        assert column(text, "paused") and column(text, "away"), text
        order = [text.index(s) for s in ("owner-pause localhost", "yield localhost", "yield-over localhost")]
        assert order == sorted(order), text
        assert f"OK: all {figures['tasks']} results are identical" in text and f"chart: {png}" in text, text
        assert figures["identical"] is True and figures["mismatched"] == [] and figures["recomputed"] == 0, figures
        # paused means paused: no task starts on the head's workers from shortly after the pause to the return
        f = figures
        assert f["paused_s"] is not None and f["paused_s"] < 6, f
        assert f["last_start_s"] <= f["paused_s"] + 1.5, f"a task started {f['last_start_s']} s after the owner came"
        assert f["retired_s"] is not None and f["retired_s"] < 3 + 5, f
        assert f["back_s"] is not None and f["back_s"] < 2 + 10, f
        assert f["first_task_back_s"] is not None and f["first_task_back_s"] >= f["back_s"], f
        kinds = {s["kind"] for s in f["spans"]}
        assert kinds == {"owner", "paused", "away"}, f["spans"]
        paused_states = {s[w] for s in f["samples"] for w in f["workers"]}
        assert {"running", "paused", "away"} <= paused_states, paused_states
        workers = {r["worker"] for r in f["runs"]}
        assert workers == set(f["workers"]) and len(f["runs"]) == f["tasks"], workers
    finally:
        nothing_left(tmp_path)


def test_demo_owner_refuses_bad_options_in_one_line(tmp_path):
    res = run_demo(tmp_path, "--stay", "0", timeout=60)
    assert res.returncode != 0 and "--stay must be between 0.5 and 3600" in res.stderr, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    nothing_left(tmp_path)


def test_ctrl_c_stops_everything_the_demo_started(tmp_path):
    (tmp_path / "t").mkdir()
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TMPDIR=str(tmp_path / "t"))
    proc = subprocess.Popen([*CLI, *SMALL, "--out", str(tmp_path / "o.png")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        seen = []
        deadline = time.monotonic() + 120
        for line in proc.stdout:  # the owner is there: the cluster runs, the job is queued, the flag exists
            seen.append(line)
            if "owner-pause localhost" in line or time.monotonic() > deadline:
                break
        assert any("owner-pause localhost" in s for s in seen), "".join(seen)
        assert processes_under(tmp_path), "the demo's cluster should be running now"
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground group
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "interrupted" in err, (proc.returncode, out, err)
        assert not (tmp_path / "o.png").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        nothing_left(tmp_path)
