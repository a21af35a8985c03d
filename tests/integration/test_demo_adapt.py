"""`clusterctl demo adapt` on a real adaptive cluster: bursts grow the group, idleness shrinks it back,
the chart and the figures are written, no task is recomputed and every result equals a serial run."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

ADAPTIVE = ("  - name: default\n    nthreads: 1\n"
            "    adapt: {minimum: 1, maximum: 3, target_duration: 500ms, wait_count: 2, interval: 500ms}\n")
# Two bursts of ~2 s of kernel time each: enough queued work for Dask to ask for more workers.
SMALL = ["--bursts", "2", "--tasks", "80", "--min-points", "1000000", "--max-points", "20000000",
         "--gap", "6", "--settle", "30", "--seed", "11"]


def one_line_error(res, text: str) -> None:
    assert res.returncode != 0 and text in res.stderr, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_demo_adapt_grows_on_bursts_shrinks_when_idle_and_recomputes_nothing(cluster):
    cluster.write(workers=ADAPTIVE)
    one_line_error(cluster.cli("demo", "adapt", *SMALL), "is not running")
    cluster.cli("up", check=True)
    one_line_error(cluster.cli("demo", "adapt", "--bursts", "0"), "--bursts must be between 1 and 100")
    out = cluster.root / "out"
    res = cluster.cli("demo", "adapt", *SMALL, "--out", str(out), "--json", timeout=180, check=True)
    printed = json.loads(res.stdout)
    png, data = out / "demo-adapt.png", out / "demo-adapt.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    figures = json.loads(data.read_text())
    for key in ("burst_to_first_worker_s", "idle_to_minimum_s", "recomputed"):
        assert key in figures and figures[key] == printed[key], (key, figures, printed)
    assert figures["recomputed"] == 0 and figures["recomputed_keys"] == [], figures
    assert figures["identical"] is True and figures["mismatched"] == [], figures
    # the group grew under a burst (generous deadline: catches a hang, not the 2 s aim) and came back
    assert figures["burst_to_first_worker_s"] is not None and figures["burst_to_first_worker_s"] < 15, figures
    assert figures["idle_to_minimum_s"] is not None and figures["bursts"][-1]["back_to_minimum"] is not None, figures
    workers = [row[1] for row in figures["samples"]]
    assert max(workers) > 1 and max(workers) <= 3 and workers[-1] == 1, workers
    kinds = [e["event"] for e in figures["events"]]
    assert "adapt-up" in kinds and "adapt-down" in kinds, kinds
    assert [b["seed"] for b in figures["bursts"]] == [11, 12] and all(b["idle"] for b in figures["bursts"])
    assert cluster.status()["workers_registered"] == 1

    # without --json: the live timeline, the figures in words, the verdict
    text = cluster.cli("demo", "adapt", "--bursts", "1", "--tasks", "20", "--min-points", "100000",
                       "--max-points", "1000000", "--settle", "30", "--out", str(out), timeout=120, check=True).stdout
    assert "burst 1/1: 20 tasks queued (seed 42)" in text and "OK: all 20 results equal" in text, text
    assert "tasks recomputed: 0" in text and f"chart: {png}" in text, text

    # a fixed size ends the adaptive mode: the demo refuses in one line
    cluster.cli("scale", "2", check=True)
    one_line_error(cluster.cli("demo", "adapt", *SMALL), "no worker group is adaptive")
