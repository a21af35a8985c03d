"""scripts/bench_tls.py's pure parts: the interleaving, medians and ratios, the table.

No cluster: the timing itself is scripts/bench --only tls."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bt():
    return load_script(ROOT / "scripts" / "bench_tls.py")


def test_neither_configuration_always_goes_first(bt):
    firsts = [bt.order(i)[0] for i in range(4)]
    assert firsts == ["tls", "plain", "tls", "plain"]
    assert all(sorted(bt.order(i)) == sorted(bt.KINDS) for i in range(4))


def test_figures_are_medians_and_tls_over_plain(bt):
    f = bt.figures({"tls": {"up": [1.0, 1.4, 1.2], "job": [3.3, 3.0]},
                    "plain": {"up": [1.1, 1.0, 1.3], "job": [3.0, 3.0]}})
    assert f["up"]["tls"] == 1.2 and f["up"]["plain"] == 1.1 and f["up"]["ratio"] == pytest.approx(1.2 / 1.1, abs=1e-4)
    assert f["up"]["n"] == 3 and f["up"]["aim"] == 1.10
    assert f["job"]["ratio"] == pytest.approx(1.05) and f["job"]["aim"] == 1.05
    assert f["up"]["tls_all"] == [1.0, 1.4, 1.2]


def test_a_measure_missing_on_either_side_is_left_out(bt):
    f = bt.figures({"tls": {"up": [1.0], "recovery": [0.4]}, "plain": {"up": [1.0], "recovery": []}})
    assert list(f) == ["up"]
    assert bt.figures({"tls": {"up": [1.0]}}) == {}


def test_the_verdict_names_the_aim_only_where_there_is_one(bt):
    assert bt.verdict({"ratio": 1.03, "aim": 1.05}) == "1.03x (within 1.05x)"
    assert bt.verdict({"ratio": 1.12, "aim": 1.10}) == "1.12x (over 1.10x)"
    assert bt.verdict({"ratio": 1.40, "aim": None}) == "1.40x"


def test_the_table_has_a_row_per_measure_and_says_how_it_was_run(bt):
    samples = {k: {m: [1.0, 2.0] for m in bt.MEASURES} for k in bt.KINDS}
    r = {"figures": bt.figures(samples), "rounds": 2, "jobs": 2, "recoveries": 2, "reups": 1, "tasks": 1200,
         "connections": 20, "distributed": "2026.11.0"}
    text = "\n".join(bt.markdown(r))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "TLS (default)" not in line]
    assert len(rows) == len(bt.MEASURES)
    assert "1200 tasks" in text and "mean of 20" in text and "1500.0 ms" in text and "1.50 s CPU" in text
    assert "2 rounds, interleaved" in text and "distributed 2026.11.0" in text


def test_the_docstring_examples_hold(bt):
    assert doctest.testmod(bt).failed == 0
