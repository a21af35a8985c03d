"""Monte Carlo estimate of pi, the walkthrough's example job, made reproducible and fast.

One task per entry of a log-spaced schedule of point counts. Task ``index`` draws
from ``np.random.SeedSequence(seed, spawn_key=(index,))`` -- the same stream as
``SeedSequence(seed).spawn(n)[index]`` -- so every result depends only on
``(seed, index, n_points)``: not on the worker that runs it, on retries, or on
the chunk size used internally.

Usage::

    from distributed import Client
    from clusterctl.jobs.montecarlo import MonteCarloSpec, run

    with Client("127.0.0.1:8786") as client:
        df = run(client, MonteCarloSpec(tasks=1200, seed=42),
                 progress=lambda done, total: print(f"{done}/{total}", end="\\r"))
    df.tail()   # columns: COLUMNS; index 0..tasks-1

``run_serial(spec)`` returns the identical DataFrame computed in-process.

Kernel: each point takes one 64-bit output of an SFC64 bit generator
(``random_raw``); its two 32-bit halves become x and y in float32 through the
mantissa trick (top 23 bits | exponent of 1.0 -> [1, 2), minus ``1 - 2**-24``
-> the cell midpoints of a 2**-23 grid on (0, 1)), then x*x + y*y < 1 is counted
over chunk-sized preallocated buffers. Memory is O(chunk), never O(n). Counting
inside the quarter disk of the unit square is statistically equivalent to the
walkthrough's [-1, 1]^2 square. Because x and y enter symmetrically, the count
does not depend on byte order either.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ClusterError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from distributed import Client, Future

__all__ = [
    "COLUMNS",
    "DEFAULT_CHUNK",
    "MonteCarloSpec",
    "estimate_pi",
    "kernel_ns_per_point",
    "points_schedule",
    "run",
    "run_serial",
    "submit",
    "submit_batched",
    "batches",
    "guided_batches",
    "DEFAULT_BATCH_POINTS",
    "MIN_BATCH_POINTS",
    "task_key",
    "walkthrough_kernel",
]

COLUMNS = ["number of points for MonteCarlo", "value of pi", "error (%)"]

#: Points per chunk. Measured best on a 2-core AMD EPYC VM (SFC64, 1<<14..1<<18 tried);
#: affects speed and memory only, never the result.
DEFAULT_CHUNK = 1 << 16

_BIT_GENERATOR = np.random.SFC64  # fastest random_raw of PCG64/PCG64DXSM/SFC64/Philox/MT19937 here
_MANTISSA_SHIFT = np.uint32(9)  # keep the top 23 of 32 bits
_ONE_BITS = np.uint32(0x3F800000)  # float32 exponent of 1.0
_MIDPOINT = np.float32(1.0 - 2.0**-24)  # [1, 2) - this = (k + 1/2) * 2**-23, exact in float32
_ONE = np.float32(1.0)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class MonteCarloSpec:
    """What to run: ``tasks`` estimates with point counts log-spaced in [min_points, max_points]."""

    tasks: int = 1200
    min_points: int = 1000
    max_points: int = 10_000_000
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("tasks", "min_points", "max_points", "seed"):
            if not _is_int(getattr(self, name)):
                raise ClusterError(f"montecarlo: {name} must be an integer, got {getattr(self, name)!r}")
        if self.tasks < 1:
            raise ClusterError(f"montecarlo: tasks must be >= 1, got {self.tasks}")
        if self.min_points < 1:
            raise ClusterError(f"montecarlo: min_points must be >= 1, got {self.min_points}")
        if self.max_points < self.min_points:
            raise ClusterError(
                f"montecarlo: max_points ({self.max_points}) must be >= min_points ({self.min_points})"
            )
        if self.seed < 0:
            raise ClusterError(f"montecarlo: seed must be >= 0, got {self.seed}")


def points_schedule(spec: MonteCarloSpec) -> np.ndarray:
    """Point count of every task: ``logspace(log10(min), log10(max), tasks)`` rounded to int64.

    With the defaults this is the walkthrough's ``np.logspace(3, 7, num=1200, dtype=int)``
    except that values are rounded rather than truncated (they differ by at most 1).
    """
    raw = np.logspace(math.log10(spec.min_points), math.log10(spec.max_points), spec.tasks)
    return np.clip(np.rint(raw), spec.min_points, spec.max_points).astype(np.int64)


def seed_sequence(seed: int, index: int) -> np.random.SeedSequence:
    """The stream of task ``index``; equal to ``SeedSequence(seed).spawn(n)[index]`` for any n > index."""
    return np.random.SeedSequence(seed, spawn_key=(index,))


def _count_inside(seq: np.random.SeedSequence, n_points: int, chunk: int = DEFAULT_CHUNK) -> int:
    """How many of ``n_points`` points drawn from ``seq`` fall inside the quarter unit disk."""
    bitgen = _BIT_GENERATOR(seq)
    c = max(1, min(int(chunk), n_points))
    total = np.empty(c, dtype=np.float32)  # x*x + y*y
    mask = np.empty(c, dtype=np.bool_)
    inside = 0
    remaining = n_points
    while remaining:
        m = min(c, remaining)
        # One uint64 per point (chunk-sized allocation; BitGenerator has no out=).
        u = bitgen.random_raw(m).view(np.uint32)  # 2m words: x0, y0, x1, y1, ...
        np.right_shift(u, _MANTISSA_SHIFT, out=u)
        np.bitwise_or(u, _ONE_BITS, out=u)
        f = u.view(np.float32)  # [1, 2)
        np.subtract(f, _MIDPOINT, out=f)  # (0, 1)
        np.multiply(f, f, out=f)
        s = total[:m]
        np.add(f[0::2], f[1::2], out=s)
        mk = mask[:m]
        np.less(s, _ONE, out=mk)
        inside += int(np.count_nonzero(mk))
        remaining -= m
    return inside


def estimate_pi(n_points: int, seed: int, index: int, chunk: int = DEFAULT_CHUNK) -> list:
    """``[n_points, pi_estimate, error_percent]`` for task ``index`` of ``seed``.

    Deterministic in ``(seed, index, n_points)``; ``chunk`` bounds memory (about
    14 bytes per chunk point) and does not change the result.
    """
    if not _is_int(n_points) or n_points < 1:
        raise ClusterError(f"montecarlo: n_points must be an integer >= 1, got {n_points!r}")
    if not _is_int(chunk) or chunk < 1:
        raise ClusterError(f"montecarlo: chunk must be an integer >= 1, got {chunk!r}")
    n = int(n_points)
    pi_mc = 4.0 * _count_inside(seed_sequence(int(seed), int(index)), n, int(chunk)) / n
    err = 100.0 * abs(pi_mc - math.pi) / math.pi
    return [n, pi_mc, err]


def walkthrough_kernel(Nb_Data):
    """
    computes the value of pi using the monte carlo method
    """
    # Verbatim ``compute_pi_MonteCarlo`` from the walkthrough, kept as the benchmark baseline.
    Radius = 1
    Nb_Data = int(round(Nb_Data))
    x = np.random.uniform(-Radius, Radius, Nb_Data)
    y = np.random.uniform(-Radius, Radius, Nb_Data)
    pi_mc = 4*np.sum(np.power(x,2)+np.power(y,2)<Radius**2)/Nb_Data
    err = 100*np.abs(pi_mc-np.pi)/np.pi
    return [Nb_Data, pi_mc, err]


def task_key(seed: int, index: int, n_points: int | None = None) -> str:
    """Stable Dask key of one task, e.g. ``montecarlo-42-7-1023``.

    ``submit`` passes ``n_points`` so that two specs sharing a seed but not a
    schedule never alias on the scheduler (a live key is reused, not recomputed).
    """
    key = f"montecarlo-{seed}-{index}"
    return key if n_points is None else f"{key}-{int(n_points)}"


def submit(client: Client, spec: MonteCarloSpec) -> list[Future]:
    """Submit one ``estimate_pi`` task per schedule entry; futures are in index order."""
    # One map call sends one graph (one scheduler message), not one per task.
    points = [int(n) for n in points_schedule(spec)]
    indices = list(range(len(points)))
    keys = [task_key(spec.seed, i, n) for i, n in zip(indices, points)]
    return client.map(estimate_pi, points, [spec.seed] * len(points), indices, key=keys)


def _frame(rows: list) -> pd.DataFrame:
    # pandas is imported here, on the client, not at module import: workers unpickle this
    # module for every job's first task, and pandas cost them ~0.15 s each (3 on 2 cores:
    # up to 0.45 s before the last worker started computing).
    import pandas as pd

    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({COLUMNS[0]: "int64", COLUMNS[1]: "float64", COLUMNS[2]: "float64"})


#: Dask costs 1.5-3 ms of wall time per task on 2 cores (scheduler, worker and client
#: together; scripts/bench "wall time per task"), so small Monte Carlo tasks are packed
#: into fewer Dask tasks. By default (``batch_points=None``) the packing follows the
#: cluster: see ``guided_batches``. Results never change: each task keeps its own seed.
DEFAULT_BATCH_POINTS = None

#: The smallest batch ``guided_batches`` makes: ~15 ms of kernel time, ten times Dask's
#: per-task cost.
MIN_BATCH_POINTS = 5_000_000


def guided_batches(points: list[int], slots: int, floor: int = MIN_BATCH_POINTS) -> list[list[int]]:
    """Batches of consecutive task indices for a cluster with ``slots`` threads, largest first.

    Factoring (Hummel, Schonberg & Flynn, 1992): each round splits half of the points
    not yet assigned into ``slots`` batches of equal size, never below ``floor``. The
    job starts on a few big batches (little Dask overhead) and ends on small ones, so
    every thread stays busy until the end. The default job on 3 threads makes ~22 Dask
    tasks; a fixed 2e7-point packing made 74, one per task 1,200 (scripts/bench)."""
    slots = max(1, int(slots))
    remaining = sum(points)
    groups: list[list[int]] = []
    i = len(points) - 1  # the schedule grows with the index: pack from the big end
    while i >= 0:
        target = max(floor, remaining / (2 * slots))
        for _ in range(slots):
            if i < 0:
                break
            group, total = [], 0
            while i >= 0 and (not group or total + points[i] <= target):
                group.append(i)
                total += points[i]
                i -= 1
            groups.append(group[::-1])
            remaining -= total
    return groups


def batches(points: list[int], batch_points: int) -> list[list[int]]:
    """Consecutive task indices packed until a batch holds batch_points (0: one per task)."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i, n in enumerate(points):
        if current and (batch_points <= 0 or total + n > batch_points):
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += n
    if current:
        groups.append(current)
    return groups


def estimate_batch(points: list[int], seed: int, indices: list[int]) -> list[list]:
    """estimate_pi for several tasks in one Dask task; row i is task indices[i]'s result."""
    return [estimate_pi(n, seed, i) for n, i in zip(points, indices)]


@dataclass
class Submission:
    """Futures of a submitted job; each future holds the rows of ``groups[k]``'s tasks."""

    futures: list
    groups: list[list[int]]

    def rows(self, client: Client) -> list:
        out: list = [None] * sum(len(g) for g in self.groups)
        for group, result in zip(self.groups, client.gather(self.futures)):
            for i, row in zip(group, result):
                out[i] = row
        return out

    def release(self) -> None:
        for fut in self.futures:
            fut.release()


def submit_batched(client: Client, spec: MonteCarloSpec, batch_points: int | None = DEFAULT_BATCH_POINTS) -> Submission:
    """Submit the job in one map call: ``guided_batches`` for the cluster's threads when
    ``batch_points`` is None, else consecutive tasks packed up to ``batch_points`` (0: one each)."""
    points = [int(n) for n in points_schedule(spec)]
    if batch_points is None:
        groups = guided_batches(points, sum(client.nthreads().values()))
    else:
        # Largest first: the schedule grows, so in index order the run would end on its
        # biggest tasks, with cores idle while the last ones finish.
        groups = sorted(batches(points, batch_points), key=lambda g: -sum(points[i] for i in g))
    args = [[points[i] for i in g] for g in groups]
    keys = [
        task_key(spec.seed, g[0], points[g[0]]) if len(g) == 1 else f"montecarlo-{spec.seed}-{g[0]}..{g[-1]}"
        for g in groups
    ]
    futures = client.map(estimate_batch, args, [spec.seed] * len(groups), groups, key=keys)
    return Submission(futures, groups)


def run(
    client: Client,
    spec: MonteCarloSpec,
    progress: Callable[[int, int], Any] | None = None,
    batch_points: int | None = DEFAULT_BATCH_POINTS,
) -> pd.DataFrame:
    """Run ``spec`` on the cluster behind ``client`` and return the results table.

    ``progress(done, total)`` is called as tasks finish. The DataFrame has
    ``COLUMNS`` (int64, float64, float64) and index ``0..tasks-1`` and equals
    ``run_serial(spec)`` exactly, whatever ``batch_points`` (None: packed for the
    cluster by ``guided_batches``; N: up to N points per Dask task; 0: one Dask
    task per Monte Carlo task, as the walkthrough does). A failed task's
    exception propagates.

    Example::

        with Client("127.0.0.1:8786") as client:
            df = run(client, MonteCarloSpec(tasks=100, seed=7))
    """
    job = submit_batched(client, spec, batch_points)
    try:
        if progress is not None:
            from distributed import as_completed

            size = {f.key: len(g) for f, g in zip(job.futures, job.groups)}
            done = 0
            for fut in as_completed(job.futures):
                done += size[fut.key]
                progress(done, spec.tasks)
        rows = job.rows(client)
    finally:
        job.release()
    return _frame(rows)


def run_serial(spec: MonteCarloSpec) -> pd.DataFrame:
    """``run`` computed in this process without Dask (tests, parallel-efficiency baselines)."""
    return _frame([estimate_pi(int(n), spec.seed, i) for i, n in enumerate(points_schedule(spec))])


def kernel_ns_per_point(
    n: int = 10_000_000,
    repeat: int = 5,
    *,
    kernel: Callable[[int], Any] | None = None,
) -> float:
    """Median wall time per point, in ns, of ``kernel(n)`` over ``repeat`` runs (after one warm-up).

    ``kernel`` defaults to ``estimate_pi(n, 0, 0)``; pass ``walkthrough_kernel`` to time the baseline.
    """
    if n < 1 or repeat < 1:
        raise ClusterError("montecarlo: n and repeat must be >= 1")
    fn = kernel if kernel is not None else (lambda k: estimate_pi(k, 0, 0))
    fn(min(n, 100_000))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(n)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / n * 1e9
