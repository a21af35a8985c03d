"""clusterctl.jobs.montecarlo: determinism, statistics, memory, and a tiny in-process cluster run."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from clusterctl.errors import ClusterError
from clusterctl.jobs import montecarlo as mc
from clusterctl.jobs.montecarlo import (
    COLUMNS,
    MonteCarloSpec,
    estimate_pi,
    points_schedule,
    run,
    run_serial,
    task_key,
    walkthrough_kernel,
)


def test_columns_match_walkthrough():
    assert COLUMNS == ["number of points for MonteCarlo", "value of pi", "error (%)"]


def test_schedule_defaults():
    s = points_schedule(MonteCarloSpec())
    assert s.dtype == np.int64
    assert len(s) == 1200
    assert s[0] == 1000 and s[-1] == 10_000_000
    assert np.all(np.diff(s) >= 0)
    walk = np.logspace(3, 7, num=1200, dtype=int)  # the walkthrough's (truncating) schedule
    assert np.max(np.abs(s - walk)) <= 1


def test_schedule_single_task_and_flat():
    assert points_schedule(MonteCarloSpec(tasks=1)).tolist() == [1000]
    assert points_schedule(MonteCarloSpec(tasks=3, min_points=5, max_points=5)).tolist() == [5, 5, 5]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"tasks": 0}, "tasks"),
        ({"min_points": 0}, "min_points"),
        ({"min_points": 100, "max_points": 99}, "max_points"),
        ({"seed": -1}, "seed"),
        ({"tasks": 2.5}, "tasks"),
        ({"seed": True}, "seed"),
    ],
)
def test_spec_validation(kwargs, fragment):
    with pytest.raises(ClusterError) as exc:
        MonteCarloSpec(**kwargs)
    msg = str(exc.value)
    assert fragment in msg and "\n" not in msg


def test_spec_is_frozen():
    with pytest.raises(AttributeError):
        MonteCarloSpec().tasks = 3  # type: ignore[misc]


def test_estimate_shape_and_error():
    n, pi_mc, err = estimate_pi(10_000, 42, 0)
    assert type(n) is int and n == 10_000
    assert isinstance(pi_mc, float) and isinstance(err, float)
    assert err == pytest.approx(100 * abs(pi_mc - math.pi) / math.pi)


def test_deterministic_and_chunk_independent():
    a = estimate_pi(300_001, 42, 7)
    assert estimate_pi(300_001, 42, 7) == a
    assert estimate_pi(300_001, 42, 7, chunk=1000) == a
    assert estimate_pi(300_001, 42, 7, chunk=1 << 20) == a


def test_seeds_and_indices_are_independent_streams():
    base = estimate_pi(200_000, 42, 0)[1]
    assert estimate_pi(200_000, 43, 0)[1] != base
    assert estimate_pi(200_000, 42, 1)[1] != base


def test_spawn_key_equals_spawned_child():
    seed, n = 42, 50
    children = np.random.SeedSequence(seed).spawn(n)
    for index in (0, 1, 17, n - 1):
        mine = np.random.SeedSequence(seed, spawn_key=(index,))
        assert np.array_equal(mine.generate_state(8), children[index].generate_state(8))
        assert np.array_equal(mc.seed_sequence(seed, index).generate_state(8), children[index].generate_state(8))
    # And the kernel really draws from that stream.
    count = mc._count_inside(children[17], 100_000)
    assert estimate_pi(100_000, seed, 17)[1] == 4.0 * count / 100_000


def test_estimate_within_statistical_tolerance():
    n = 1_000_000
    five_sigma = 5 * 4 * math.sqrt((math.pi / 4) * (1 - math.pi / 4) / n)  # ~0.0082
    for index in range(3):
        assert abs(estimate_pi(n, 42, index)[1] - math.pi) < five_sigma


def test_memory_is_bounded():
    n = 5_000_000
    tracemalloc.start()
    try:
        estimate_pi(n, 1, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n * 4 / 10  # a float32 per point would be 20 MB; chunks are ~1 MB


def test_estimate_rejects_bad_arguments():
    with pytest.raises(ClusterError):
        estimate_pi(0, 42, 0)
    with pytest.raises(ClusterError):
        estimate_pi(10, 42, 0, chunk=0)


def test_walkthrough_kernel_returns_three_numbers():
    out = walkthrough_kernel(1000.4)
    assert len(out) == 3
    n, pi_mc, err = out
    assert n == 1000
    assert 2.5 < pi_mc < 3.8
    assert err == pytest.approx(100 * abs(pi_mc - np.pi) / np.pi)


def test_task_key_is_stable():
    assert task_key(42, 7) == "montecarlo-42-7"
    assert task_key(42, 7, 1000) == "montecarlo-42-7-1000"
    assert task_key(42, 7, np.int64(1000)) == task_key(42, 7, 1000)


def test_run_serial_frame():
    spec = MonteCarloSpec(tasks=5, min_points=100, max_points=10_000, seed=3)
    df = run_serial(spec)
    assert list(df.columns) == COLUMNS
    assert list(df.index) == list(range(5))
    assert [str(t) for t in df.dtypes] == ["int64", "float64", "float64"]
    assert df[COLUMNS[0]].tolist() == points_schedule(spec).tolist()


def test_kernel_ns_per_point_positive():
    assert mc.kernel_ns_per_point(n=100_000, repeat=1) > 0
    assert mc.kernel_ns_per_point(n=10_000, repeat=1, kernel=walkthrough_kernel) > 0


def test_run_on_local_cluster_equals_serial():
    distributed = pytest.importorskip("distributed")
    spec = MonteCarloSpec(tasks=20, min_points=1000, max_points=100_000, seed=11)
    calls = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        with distributed.Client(cluster) as client:
            df = run(client, spec, progress=lambda done, total: calls.append((done, total)), batch_points=0)
            keys = [f.key for f in mc.submit(client, spec)]
    pd.testing.assert_frame_equal(df, run_serial(spec))
    assert calls == [(i, 20) for i in range(1, 21)]
    schedule = points_schedule(spec)
    assert keys == [task_key(11, i, int(schedule[i])) for i in range(20)]


def test_batches_pack_consecutive_small_tasks_and_keep_big_ones_alone():
    from clusterctl.jobs.montecarlo import batches

    points = [10, 10, 10, 100, 5, 5]
    assert batches(points, 0) == [[0], [1], [2], [3], [4], [5]]
    assert batches(points, 30) == [[0, 1, 2], [3], [4, 5]]
    assert batches(points, 1) == [[0], [1], [2], [3], [4], [5]]
    groups = batches([int(n) for n in points_schedule(MonteCarloSpec())], 4_000_000)
    assert sorted(i for g in groups for i in g) == list(range(1200))
    assert len(groups) < 400  # far fewer Dask tasks than the 1,200 Monte Carlo tasks


def test_guided_batches_cover_every_task_once_big_first_small_last():
    from clusterctl.jobs.montecarlo import MIN_BATCH_POINTS, guided_batches

    points = [int(n) for n in points_schedule(MonteCarloSpec())]
    for slots in (1, 3, 16):
        groups = guided_batches(points, slots)
        assert sorted(i for g in groups for i in g) == list(range(1200))
        assert all(g == list(range(g[0], g[-1] + 1)) for g in groups)  # consecutive indices
        sizes = [sum(points[i] for i in g) for g in groups]
        # Rounds shrink by half: the first round's batches are the largest, the last the smallest.
        assert max(sizes[:slots]) == max(sizes) and max(sizes[-slots:]) <= max(MIN_BATCH_POINTS, max(points))
        assert max(sizes[:slots]) <= sum(points) / (2 * slots)
        assert len(groups) < 8 * slots + 10  # a few dozen Dask tasks, not 1,200
    assert guided_batches(points, 0) == guided_batches(points, 1)  # no workers yet: one slot
    assert guided_batches([5, 5], 4, floor=100) == [[0, 1]]


def test_batched_run_equals_serial_whatever_the_batch_size():
    from distributed import Client, LocalCluster

    from clusterctl.jobs.montecarlo import run

    spec = MonteCarloSpec(tasks=30, min_points=1000, max_points=50_000, seed=9)
    expected = run_serial(spec)
    with LocalCluster(n_workers=2, processes=False, dashboard_address="127.0.0.1:0") as lc, Client(lc) as client:
        seen = []
        for batch in (None, 0, 60_000, 10**9):
            df = run(client, spec, progress=lambda done, total: seen.append((done, total)), batch_points=batch)
            pd.testing.assert_frame_equal(df, expected, check_exact=True)
    assert seen[-1] == (30, 30)
