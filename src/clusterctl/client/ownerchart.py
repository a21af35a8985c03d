"""The chart of `clusterctl demo owner`: each worker's tasks over time (a bar from start to end, and
under it the worker's state: paused, retiring, away, starting), the head's mode, the owner's
presence shaded; below, the tasks started per worker so far. Agg canvas, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .ownertimeline import OwnerReport

STATE_COLORS = {"paused": "tab:orange", "retiring": "tab:purple", "away": "tab:grey", "starting": "tab:cyan"}
MODE_COLORS = {"paused": "tab:orange", "away": "tab:grey"}
TASK_COLORS = ("tab:blue", "tab:green", "tab:olive", "tab:brown", "tab:pink", "navy", "darkgreen", "goldenrod")
MARKED = {"owner-active": "owner active", "owner-pause": "paused", "yield": "retire", "owner-idle": "owner idle",
          "yield-over": "back", "owner-resume": "resumed"}


def _seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"


def state_runs(samples: list[dict[str, Any]], worker: str, end: float) -> list[tuple[str, float, float]]:
    """(state, start, width) of each spell of ``worker`` in a state other than running.

    >>> state_runs([{"t": 0, "w": "running"}, {"t": 1, "w": "paused"}, {"t": 2, "w": "paused"},
    ...             {"t": 3, "w": "away"}, {"t": 5, "w": "running"}], "w", 6)
    [('paused', 1, 2), ('away', 3, 2)]
    """
    out, current, since = [], None, 0.0
    for s in samples:
        state = s.get(worker)
        if state != current:
            if current not in (None, "running"):
                out.append((current, since, s["t"] - since))
            current, since = state, s["t"]
    if current not in (None, "running"):
        out.append((current, since, max(0.0, end - since)))
    return out


def markers(events: list[dict[str, Any]], near: float = 0.6) -> list[tuple[float, str]]:
    """The head's first event of each marked kind, those less than ``near`` seconds apart on one label.

    >>> markers([{"t": 6.8, "event": "owner-active", "process": "localhost"},
    ...          {"t": 6.9, "event": "owner-pause", "process": "localhost"},
    ...          {"t": 11.0, "event": "yield", "process": "localhost"}])
    [(6.8, 'owner active, paused'), (11.0, 'retire')]
    """
    out: list[tuple[float, str]] = []
    seen: set[str] = set()
    for e in sorted(events, key=lambda e: e["t"]):
        if e.get("process") != "localhost" or e["event"] not in MARKED or e["event"] in seen:
            continue
        seen.add(e["event"])
        if out and e["t"] - out[-1][0] < near:
            out[-1] = (out[-1][0], f"{out[-1][1]}, {MARKED[e['event']]}")
        else:
            out.append((e["t"], MARKED[e["event"]]))
    return out


def draw(report: OwnerReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from ..jobs.plot import save_figure

    end = max([report.seconds] + [r["end"] for r in report.runs] + [0.0])
    workers = list(report.workers)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 6.4), dpi=110, sharex=True,
                                  gridspec_kw={"height_ratios": [2.2, 1]})
    def colors(k: int) -> str:
        return TASK_COLORS[k % len(TASK_COLORS)]

    for a in (ax, ax2):
        for s in report.spans:
            if s.kind == "owner":
                a.axvspan(s.start, s.end if s.end is not None else end, color="tab:red", alpha=0.10, lw=0)
    for k, w in enumerate(workers):
        mine = [r for r in report.runs if r["worker"] == w]
        ax.broken_barh([(r["start"], max(r["end"] - r["start"], 0.01)) for r in mine], (k - 0.05, 0.4),
                       facecolors=colors(k), edgecolors="white", linewidth=0.3)
        for state, start, width in state_runs(report.samples, w, end):
            ax.broken_barh([(start, width)], (k - 0.35, 0.22), facecolors=STATE_COLORS.get(state, "black"), alpha=0.8)
    row = len(workers)
    for s in report.spans:
        if s.kind in MODE_COLORS:
            stop = s.end if s.end is not None else end
            ax.broken_barh([(s.start, stop - s.start)], (row - 0.3, 0.6), facecolors=MODE_COLORS[s.kind], alpha=0.8)
            ax.text(s.start + (stop - s.start) / 2, row, s.kind, ha="center", va="center", fontsize=8, color="white")
    for t, label in markers(report.events):
        for a in (ax, ax2):
            a.axvline(t, color="black", lw=0.6, ls=":", alpha=0.7)
        ax.annotate(label, xy=(t, row + 0.45), xytext=(2, 0), textcoords="offset points", fontsize=7, rotation=90,
                    va="bottom")
    ax.set_yticks(range(row + 1), [*workers, "localhost\n(head's mode)"], fontsize=8)
    ax.set_ylim(-0.6, row + 1.9)
    ax.set_ylabel("tasks per worker")
    for k, w in enumerate(workers):
        starts = sorted(r["start"] for r in report.runs if r["worker"] == w)
        ax2.step([0.0, *starts, end], [0, *range(1, len(starts) + 1), len(starts)], where="post", color=colors(k), lw=1.5,
                 label=w)
    ax2.set_ylabel("tasks started")
    ax2.set_xlabel("seconds since the job was queued")
    ax2.set_xlim(0, end * 1.01 if end else 1)
    ax2.legend(loc="upper left", fontsize=7, frameon=False)
    f = report.figures
    ax.set_title(
        f"the owner arrives at {_seconds(report.owner_on)}, leaves at {_seconds(report.owner_off)} "
        f"({report.tasks} Monte Carlo tasks on {len(workers)} workers)\n"
        f"no new task {_seconds(f.get('last_start_s'))} after the owner came; retired {_seconds(f.get('retired_s'))} "
        f"after pausing; back {_seconds(f.get('back_s'))} after the owner left; results "
        + ("identical to a serial run" if report.identical else "DIFFER from a serial run"), fontsize=9)
    legend = [Patch(color="tab:red", alpha=0.15, label="owner present (flag file)")]
    legend += [Patch(color=c, alpha=0.8, label=f"worker {s}") for s, c in STATE_COLORS.items()]
    fig.legend(handles=legend, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    try:
        return save_figure(fig, Path(path), "png")
    finally:
        plt.close(fig)
