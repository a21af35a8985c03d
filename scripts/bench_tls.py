"""scripts/bench --only tls: the TLS default against `tls: {enabled: false}`, side by side in one run (issue 22).

The pure parts: which configuration goes first in each round, medians and ratios, the table.
scripts/bench.py does the timing (tls_round) and hands its samples here:

    >>> [order(i) for i in range(3)]
    [('tls', 'plain'), ('plain', 'tls'), ('tls', 'plain')]
    >>> figures({"tls": {"job": [2.2, 2.0]}, "plain": {"job": [2.0, 2.0]}})["job"]["ratio"]
    1.05

Only the standard library, so tests/unit/test_bench_tls.py loads it without a cluster.
"""

from __future__ import annotations

import statistics

KINDS = ("tls", "plain")  # the default (mutual TLS, loopback included) and the opt-out
# Timed per round and configuration; the CPU rows say where a cost goes (see tls_round in bench.py).
MEASURES = ("up", "up_again", "connect", "connection", "job", "recovery", "scheduler_cpu", "workers_cpu")
AIMS = {"up": 1.10, "up_again": 1.10, "job": 1.05}  # issue 22: TLS / plain at most this
LABELS = {
    "up": "`clusterctl up`, 3 workers, to every worker registered (a new cluster: its CA and certificates made)",
    "up_again": "the same `up` again (certificates already there)",
    "connect": "a Client's connect (the cluster's certificate under TLS)",
    "connection": "one connection to the scheduler with Dask's handshake (and TLS's), mean of {connections}",
    "job": "the job (`run montecarlo`, {tasks} tasks) on that Client",
    "recovery": "scheduler SIGKILL to scheduler + 3 workers registered again",
    "scheduler_cpu": "scheduler CPU per job (user + system)",
    "workers_cpu": "the 3 workers' CPU per job (user + system)",
}


def order(i: int) -> tuple[str, str]:
    """Round ``i``'s order: tls, plain; then plain, tls; ...: neither always goes first."""
    return KINDS if i % 2 == 0 else KINDS[::-1]


def figures(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict]:
    """Per measure both configurations have samples of: medians, TLS / plain, n, the aim if any, the samples."""
    out = {}
    for m in MEASURES:
        tls, plain = samples.get("tls", {}).get(m) or [], samples.get("plain", {}).get(m) or []
        if not tls or not plain:
            continue
        t, p = statistics.median(tls), statistics.median(plain)
        out[m] = {"tls": t, "plain": p, "ratio": round(t / p, 4) if p else float("nan"), "n": min(len(tls), len(plain)),
                  "aim": AIMS.get(m), "tls_all": tls, "plain_all": plain}
    return out


def verdict(f: dict) -> str:
    """`1.03x`, with `(within 1.05x)` or `(over 1.05x)` when the measure has an aim."""
    text = f"{f['ratio']:.2f}x"
    if f.get("aim"):
        text += f" ({'within' if f['ratio'] <= f['aim'] else 'over'} {f['aim']:.2f}x)"
    return text


def markdown(r: dict) -> list[str]:
    """The table of ``r`` (bench.tls_figures' result): a row per measure, then how it was run."""
    lines = ["| TLS default against `tls: {enabled: false}` | TLS (default) | plain TCP | TLS / plain | n |",
             "|---|---|---|---|---|"]
    for m, f in r["figures"].items():
        lines.append(f"| {LABELS[m].format(**r)} | {amount(m, f['tls'])} | {amount(m, f['plain'])} | {verdict(f)} | {f['n']} |")
    lines += ["", (f"{r['rounds']} rounds, interleaved (TLS, plain; then plain, TLS; ...); per configuration and round "
                   f"a fresh cluster: `up`, {r['jobs']} jobs on one Client, {r['recoveries']} scheduler kills (each after a run of "
                   f"5 s, so no restart backoff), `down`, "
                   f"then {r['reups']} more `up`/`down`; medians; distributed {r['distributed']}."), ""]
    return lines


def amount(measure: str, value: float) -> str:
    if measure in ("connect", "connection"):
        return f"{1e3 * value:.1f} ms"
    return f"{value:.2f} s CPU" if measure.endswith("_cpu") else f"{value:.2f} s"
