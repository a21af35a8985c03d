"""The Monte Carlo convergence plot: relative error against points, log-log, with 1/sqrt(N).

Each task's estimate is ``4 k / N`` with ``k ~ Binomial(N, pi/4)``, so its relative
error has standard deviation ``sqrt((4 - pi) / (pi N))`` (about 0.52 / sqrt(N)):
the reference line every point should scatter around, a decade down per two decades
of points. Usage::

    from clusterctl.jobs.montecarlo import MonteCarloSpec, run_serial
    from clusterctl.jobs.plot import plot_convergence

    plot_convergence(run_serial(MonteCarloSpec(tasks=200, max_points=10**6)), "pi.png")

matplotlib is imported only here, and only when a plot is drawn, with the Agg
canvas: no display, no pyplot state.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ClusterError
from ..runtime.ledger import atomic_write
from .montecarlo import COLUMNS

__all__ = ["FORMATS", "check_plot_path", "expected_relative_error", "plot_convergence"]

#: What the Agg canvas writes, by file suffix.
FORMATS = ("png", "svg", "pdf")


def expected_relative_error(n_points: np.ndarray | float) -> np.ndarray | float:
    """Standard deviation of ``|pi_hat - pi| / pi`` for ``n_points`` points: ``sqrt((4 - pi) / (pi N))``."""
    return np.sqrt((4 - math.pi) / (math.pi * np.asarray(n_points, dtype=float)))


def check_plot_path(path: str | os.PathLike[str]) -> str:
    """The format ``path``'s suffix asks for; ClusterError before any work if it is none we write."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ClusterError(
            f"cannot draw {os.fspath(path)!r}: name the plot file ending in "
            + ", ".join(f".{f}" for f in FORMATS)
        )
    return fmt


def plot_convergence(df: pd.DataFrame, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Draw ``df`` (a ``montecarlo.run`` table) as a log-log convergence plot; write ``path`` atomically.

    Points are each task's relative error; a darker line is the RMS relative error
    per band of N, which should follow the ``sqrt((4 - pi) / (pi N))`` reference.
    Returns the path written.
    """
    fmt = check_plot_path(path)
    missing = [c for c in COLUMNS[:2] if c not in df.columns]
    if missing:
        raise ClusterError(f"cannot plot: the table lacks the column(s) {missing}; expected {COLUMNS}")
    n = df[COLUMNS[0]].to_numpy(dtype=float)
    rel = np.abs(df[COLUMNS[1]].to_numpy(dtype=float) - math.pi) / math.pi
    shown = (n > 0) & (rel > 0) & np.isfinite(rel)  # log axes: pi_hat is rational, so rel > 0 in practice
    if not shown.any():
        raise ClusterError("cannot plot: the table has no rows with a positive number of points")
    n, rel = n[shown], rel[shown]

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ClusterError(f"drawing a plot needs matplotlib: pip install matplotlib ({e})") from e

    fig = Figure(figsize=(8, 5.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.scatter(n, rel, s=7, alpha=0.45, color="#4c72b0", linewidths=0, label=f"one task ({len(n)} tasks)")
    band_n, band_rms = _rms_bands(n, rel)
    if len(band_n) >= 2:
        ax.plot(band_n, band_rms, "o-", color="#1f3a68", lw=1.6, ms=4, label="RMS relative error per band of N")
    lo, hi = n.min(), n.max()
    grid = np.geomspace(lo, hi if hi > lo else lo * 10, 100)
    ax.plot(grid, expected_relative_error(grid), "--", color="#c44e52", lw=2,
            label=r"expected (1σ): $\sqrt{(4-\pi)/(\pi N)} \approx 0.52/\sqrt{N}$")
    ax.set_xlabel("number of points N")
    ax.set_ylabel(r"relative error  $|\hat\pi - \pi| \,/\, \pi$")
    if title is None:
        big = df.loc[df[COLUMNS[0]].idxmax()]
        title = f"Monte Carlo estimate of π: N = {int(big.iloc[0]):,} points give {big.iloc[1]:.6f}"
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.12)
    ax.legend(loc="upper right", fontsize=9)
    return save_figure(fig, Path(path), fmt)


def _rms_bands(n: np.ndarray, rel: np.ndarray, bands: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Geometric-centre N and RMS error of log-spaced bands that hold at least 3 tasks."""
    if n.min() == n.max():
        return np.array([]), np.array([])
    edges = np.geomspace(n.min(), n.max() * (1 + 1e-9), bands + 1)
    which = np.digitize(n, edges) - 1
    centres, rms = [], []
    for b in range(bands):
        sel = which == b
        if sel.sum() >= 3:
            centres.append(math.exp(np.log(n[sel]).mean()))
            rms.append(math.sqrt(np.mean(rel[sel] ** 2)))
    return np.array(centres), np.array(rms)


def save_figure(fig, path: Path, fmt: str) -> Path:
    """Readers see the old file or the whole new one, never half a PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)  # a failed draw raises here, before the file is touched
    atomic_write(path, buf.getvalue(), mode=0o644)
    return path
