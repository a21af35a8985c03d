"""clusterctl.jobs.plot: a real PNG from a real (in-process) Monte Carlo table, written atomically."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from clusterctl.errors import ClusterError
from clusterctl.jobs.montecarlo import COLUMNS, MonteCarloSpec, run_serial
from clusterctl.jobs.plot import check_plot_path, expected_relative_error, plot_convergence

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which a valid PNG has first."""
    assert data[:8] == PNG_SIGNATURE, data[:8]
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def table():
    return run_serial(MonteCarloSpec(tasks=120, min_points=1_000, max_points=200_000, seed=7))


def test_draws_a_valid_png(table, tmp_path):
    path = plot_convergence(table, tmp_path / "sub" / "pi.png")
    data = path.read_bytes()
    width, height = png_size(data)
    assert 600 <= width <= 2400 and 400 <= height <= 1600 and width > height
    assert len(data) > 20_000, "a plot with 120 points, two lines, labels and a legend"
    assert data.rstrip().endswith(b"IEND\xaeB`\x82")  # the closing chunk: the file is whole
    assert [p.name for p in path.parent.iterdir()] == ["pi.png"], "no temp file left beside it"


def test_replaces_an_existing_file(table, tmp_path):
    path = tmp_path / "pi.png"
    path.write_bytes(b"old")
    plot_convergence(table, path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_a_failed_draw_keeps_the_old_file_and_leaves_no_temp(table, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken(self, f, **kw):
        f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    path = tmp_path / "pi.png"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        plot_convergence(table, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["pi.png"]


def test_svg_by_suffix(table, tmp_path):
    text = plot_convergence(table, tmp_path / "pi.svg").read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text


@pytest.mark.parametrize("name", ["pi.jpg", "pi", "pi.png.txt"])
def test_unknown_suffix_is_refused_before_drawing(name, tmp_path):
    with pytest.raises(ClusterError, match=r"\.png"):
        check_plot_path(tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_table_without_the_columns_is_refused(table, tmp_path):
    with pytest.raises(ClusterError, match="lacks the column"):
        plot_convergence(table.rename(columns={COLUMNS[1]: "pi"}), tmp_path / "x.png")


def test_reference_line_is_the_estimators_standard_deviation(table):
    # pi_hat = 4k/N with k ~ Binomial(N, pi/4): Var(pi_hat/pi) = (4 - pi) / (pi N).
    assert expected_relative_error(1) == pytest.approx(math.sqrt((4 - math.pi) / math.pi))
    assert expected_relative_error(10_000) == pytest.approx(expected_relative_error(1) / 100)
    # ... and the real estimates scatter around it: mean squared ratio near 1.
    n = table[COLUMNS[0]].to_numpy(float)
    rel = np.abs(table[COLUMNS[1]].to_numpy() - math.pi) / math.pi
    assert 0.6 < np.mean((rel / expected_relative_error(n)) ** 2) < 1.6
