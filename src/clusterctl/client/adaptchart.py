"""The chart of `clusterctl demo adapt`: the group's workers and the queued tasks over time,
each burst shaded, each adapt decision marked. Agg canvas, written atomically."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .adaptdemo import AdaptReport


def _seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def draw(report: AdaptReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..jobs.plot import save_figure

    samples = report.samples
    t = [s.t for s in samples]
    fig, ax = plt.subplots(figsize=(10, 5.2), dpi=110)
    ax2 = ax.twinx()
    ax.set_zorder(ax2.get_zorder() + 1)  # the worker line above the queue's fill
    ax.patch.set_visible(False)
    for b in report.bursts:
        end = b.idle if b.idle is not None else (t[-1] if t else b.submitted)
        ax.axvspan(b.submitted, end, color="tab:orange", alpha=0.13, lw=0,
                   label="burst (queued to idle)" if b.index == 0 else None)
    ax2.fill_between(t, [s.queued for s in samples], step="post", color="tab:grey", alpha=0.35, lw=0,
                     label="tasks queued")
    ax2.step(t, [s.processing for s in samples], where="post", color="tab:grey", lw=0.8, label="tasks processing")
    ax.step(t, [s.workers for s in samples], where="post", color="tab:blue", lw=2, label="workers registered")
    minimum, maximum = report.settings.get("minimum"), report.settings.get("maximum")
    top = max([s.workers for s in samples] + [maximum if isinstance(maximum, int) else 1, 1]) + 1
    ax.step(t, [math.nan if s.recommended is None else min(s.recommended, top) for s in samples], where="post",
            color="tab:purple", lw=0.9, ls="--", label="Dask recommends (capped)")
    ups = [e for e in report.events if e["event"] == "adapt-up"]
    downs = [e for e in report.events if e["event"] == "adapt-down"]
    ax.plot([e["t"] for e in ups], [e.get("after", 0) for e in ups], "^", color="tab:green", ms=7,
            label="adapt-up decided")
    ax.plot([e["t"] for e in downs], [e.get("after", 0) for e in downs], "v", color="tab:red", ms=7,
            label="adapt-down decided")
    for level, name in ((minimum, "minimum"), (maximum, "maximum")):
        if isinstance(level, int):
            ax.axhline(level, color="tab:blue", ls=":", lw=0.8, alpha=0.7)
            ax.annotate(name, xy=(1, level), xycoords=("axes fraction", "data"), xytext=(-3, 2),
                        textcoords="offset points", ha="right", fontsize=7, color="tab:blue")
    ax.set_ylim(0, top + 0.2)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax2.set_ylim(0, max([s.queued for s in samples] + [s.processing for s in samples] + [1]) * 1.1)
    ax.set_xlabel("seconds since the demo started")
    ax.set_ylabel("workers registered", color="tab:blue")
    ax2.set_ylabel("tasks queued / processing", color="tab:grey")
    f = report.figures
    ax.set_title(
        f"group {report.group}: {len(report.bursts)} bursts of {report.plan.get('tasks')} Monte Carlo tasks\n"
        f"burst to first new worker {_seconds(f.get('burst_to_first_worker_s'))}, idle to minimum "
        f"{_seconds(f.get('idle_to_minimum_s'))} (worst), {len(report.recomputed)} recomputed, results "
        + ("identical to a serial run" if report.identical else "DIFFER from a serial run"),
        fontsize=10)
    handles, labels = [], []
    for a in (ax, ax2):
        h, lab = a.get_legend_handles_labels()
        handles += h
        labels += lab
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    try:
        return save_figure(fig, Path(path), "png")
    finally:
        plt.close(fig)
