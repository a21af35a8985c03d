"""RestartTracker: pure decisions driven by a fake clock (plain floats) and a seeded RNG."""

from __future__ import annotations

import random

import pytest

from clusterctl.topology import RestartPolicy
from clusterctl.supervisor.restart import Action, Decision, RestartTracker


def tracker(seed: int = 0, **policy) -> RestartTracker:
    return RestartTracker(RestartPolicy(**policy), random.Random(seed))


def quick_failures(t: RestartTracker, n: int, start: float = 0.0, step: float = 1.0) -> list[Decision]:
    """n crashes, each after a run shorter than min_uptime, `step` seconds apart."""
    return [t.decide(now=start + i * step, uptime=0.1, exit_code=1) for i in range(n)]


# -- whether to restart at all ------------------------------------------------------


@pytest.mark.parametrize("policy", ["always", "on-failure", "never"])
@pytest.mark.parametrize("code", [0, 1, -15, None])
def test_stopped_by_operator_never_restarts(policy, code):
    t = tracker(policy=policy)
    d = t.decide(now=100.0, uptime=50.0, exit_code=code, by_operator=True)
    assert d.action == "stay-down"
    assert "operator" in d.reason
    assert not t.recent and t.consecutive == 0  # nothing counted against the budget


@pytest.mark.parametrize("code", [0, 1, -9, None])
def test_policy_never_stays_down(code):
    d = tracker(policy="never").decide(now=10.0, uptime=0.1, exit_code=code)
    assert d.action == "stay-down"
    assert "never" in d.reason


def test_on_failure_clean_exit_stays_down():
    d = tracker(policy="on-failure").decide(now=10.0, uptime=100.0, exit_code=0)
    assert d.action == "stay-down"
    assert "cleanly" in d.reason


@pytest.mark.parametrize(
    "code",
    [1, 2, 137, -9, -15, None],  # non-zero, killed by a signal (negative), unhealthy (None)
    ids=["exit1", "exit2", "exit137", "SIGKILL", "SIGTERM", "unhealthy"],
)
def test_on_failure_restarts_failures(code):
    d = tracker(policy="on-failure").decide(now=10.0, uptime=100.0, exit_code=code)
    assert d.action == "restart"
    assert d.delay == 0.0


@pytest.mark.parametrize("code", [0, 1, -15, None])
def test_always_restarts_even_a_clean_exit(code):
    assert tracker(policy="always").decide(now=10.0, uptime=100.0, exit_code=code).action == "restart"


# -- how long to wait ---------------------------------------------------------------


def test_first_restart_after_a_good_run_is_immediate():
    t = tracker(min_uptime=5.0, max_retries=100, window=100.0)
    assert quick_failures(t, 4)[-1].delay > 0  # backing off ...
    d = t.decide(now=1000.0, uptime=5.0, exit_code=1)  # ... then exactly min_uptime counts as good
    assert (d.action, d.delay) == ("restart", 0.0)
    assert t.decide(now=1001.0, uptime=4.9, exit_code=1).delay > 0  # just under it does not


def test_quick_failures_back_off_exponentially_with_jitter_and_cap():
    t = tracker(seed=3, backoff_initial=1.0, backoff_max=10.0, max_retries=1000, window=3600.0, min_uptime=5.0)
    delays = [d.delay for d in quick_failures(t, 9)]
    assert delays[0] == 0.0
    bases = [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]  # 2**(n-1), capped at backoff_max
    for delay, base in zip(delays[1:], bases):
        assert 0.5 * base <= delay <= base, (delay, base)
    # jitter really is random: not all the capped delays are the same number
    assert len(set(delays[5:])) > 1
    assert max(delays) <= 10.0


def test_delay_for_directly():
    t = tracker(seed=1, backoff_initial=0.5, backoff_max=30.0)
    assert t.delay_for(0) == 0.0
    assert 0.25 <= t.delay_for(1) <= 0.5
    assert 0.5 <= t.delay_for(2) <= 1.0
    assert 15.0 <= t.delay_for(50) <= 30.0


def test_same_seed_same_delays():
    a = [d.delay for d in quick_failures(tracker(seed=7, max_retries=50, window=1000.0), 10)]
    b = [d.delay for d in quick_failures(tracker(seed=7, max_retries=50, window=1000.0), 10)]
    c = [d.delay for d in quick_failures(tracker(seed=8, max_retries=50, window=1000.0), 10)]
    assert a == b
    assert a != c


def test_a_good_run_resets_the_backoff():
    t = tracker(seed=2, backoff_initial=1.0, backoff_max=60.0, max_retries=100, window=3600.0, min_uptime=5.0)
    ramp = quick_failures(t, 5)
    assert ramp[-1].delay >= 0.5 * 8.0  # well into the backoff
    d = t.decide(now=100.0, uptime=30.0, exit_code=1)  # then a good long run
    assert d.delay == 0.0
    nxt = t.decide(now=101.0, uptime=0.1, exit_code=1)  # and the ramp starts again from the bottom
    assert 0.5 <= nxt.delay <= 1.0


def test_reset_clears_budget_and_backoff():
    t = tracker(max_retries=2, window=60.0)
    quick_failures(t, 2)
    t.reset()
    d = t.decide(now=3.0, uptime=0.1, exit_code=1)
    assert (d.action, d.delay) == ("restart", 0.0)


# -- when to give up ----------------------------------------------------------------


def test_more_than_max_retries_within_window_is_a_crash_loop_not_the_end():
    t = tracker(max_retries=3, window=60.0, backoff_initial=0.1, backoff_max=1.0)
    assert [d.action for d in quick_failures(t, 3)] == ["restart"] * 3
    d = t.decide(now=4.0, uptime=0.1, exit_code=1)
    assert d.action == Action.CRASH_LOOP
    assert 7.5 <= d.delay <= 10.0  # CRASH_LOOP_FIRST, with jitter
    assert "crash loop: 3 restarts" in d.reason
    assert "60 s" in d.reason
    assert "max_retries 3" in d.reason


def test_a_crash_loop_backs_off_doubling_up_to_its_cap_and_keeps_trying():
    t = tracker(max_retries=2, window=60.0, backoff_initial=0.1, backoff_max=1.0, crash_loop_max=300.0)
    now, delays = 0.0, []
    for _ in range(12):  # two hours of a process that never starts
        d = t.decide(now=now, uptime=0.1, exit_code=1)
        delays.append(d.delay)
        now += d.delay + 0.1
    assert [d for d in delays[2:]] and all(d > 0 for d in delays[2:])
    bases = [10, 20, 40, 80, 160, 300, 300, 300, 300, 300]
    for delay, base in zip(delays[2:], bases):
        assert 0.75 * base <= delay <= base, (delays, bases)


def test_a_good_run_ends_the_crash_loop():
    t = tracker(max_retries=1, window=60.0, min_uptime=5.0, backoff_initial=0.1, backoff_max=1.0)
    quick_failures(t, 3)
    assert t.loops == 2
    d = t.decide(now=500.0, uptime=400.0, exit_code=1)  # it ran for minutes: whatever broke it mended
    assert (d.action, d.delay) == (Action.RESTART, 0.0)
    assert t.loops == 0


def test_good_runs_still_count_towards_flapping():
    # each run passes min_uptime, but four restarts inside the window is still a loop
    t = tracker(max_retries=3, window=60.0, min_uptime=5.0)
    acts = [t.decide(now=10.0 * i, uptime=6.0, exit_code=1).action for i in range(1, 5)]
    assert acts == ["restart", "restart", "restart", "crash-loop"]


def test_max_retries_zero_loops_at_once():
    d = tracker(max_retries=0).decide(now=0.0, uptime=100.0, exit_code=1)
    assert d.action == Action.CRASH_LOOP
    assert "max_retries 0" in d.reason


def test_a_policy_that_does_not_restart_stays_down():
    assert tracker(policy="never").decide(now=0.0, uptime=1.0, exit_code=1).action == Action.STAY_DOWN
    assert tracker(policy="on-failure").decide(now=0.0, uptime=1.0, exit_code=0).action == Action.STAY_DOWN
    assert tracker(policy="on-failure").decide(now=0.0, uptime=1.0, exit_code=3).action == Action.RESTART


def test_restarts_older_than_the_window_are_forgotten():
    t = tracker(max_retries=3, window=60.0)
    quick_failures(t, 3, start=0.0)  # budget used up ...
    d = t.decide(now=200.0, uptime=0.1, exit_code=1)  # ... but long ago
    assert d.action == "restart"
    assert list(t.recent) == [200.0]


def test_hourly_crash_never_goes_fatal():
    t = tracker(max_retries=2, window=600.0, min_uptime=5.0)
    for hour in range(1, 49):
        d = t.decide(now=3600.0 * hour, uptime=3500.0, exit_code=1)
        assert d.action == "restart", (hour, d)
        assert d.delay == 0.0
    assert len(t.recent) == 1


def test_window_slides_one_restart_at_a_time():
    t = tracker(max_retries=2, window=10.0)
    assert t.decide(now=0.0, uptime=0.1, exit_code=1).action == "restart"
    assert t.decide(now=6.0, uptime=0.1, exit_code=1).action == "restart"
    assert t.decide(now=9.0, uptime=0.1, exit_code=1).action == "crash-loop"  # 0 and 6 both inside


# -- properties over many seeds -----------------------------------------------------


def test_delays_always_within_bounds():
    for seed in range(300):
        check_delays_within_bounds(seed)


def check_delays_within_bounds(seed: int) -> None:
    rng = random.Random(seed)
    initial = rng.uniform(0.01, 5.0)
    cap = rng.uniform(initial, 120.0)
    t = tracker(seed=seed, backoff_initial=initial, backoff_max=cap, max_retries=1000, window=1e4, min_uptime=5.0)
    now, streak = 0.0, 0
    for _ in range(60):
        good = rng.random() < 0.2
        uptime = rng.uniform(5.0, 100.0) if good else rng.uniform(0.0, 4.99)
        d = t.decide(now=now, uptime=uptime, exit_code=rng.choice([1, -9, None]))
        assert d.action == "restart", (seed, d)
        streak = 0 if good else streak
        if streak == 0:
            assert d.delay == 0.0, (seed, d)
        else:
            base = min(cap, initial * 2 ** (streak - 1))
            assert 0.5 * base <= d.delay <= base <= cap, (seed, streak, d.delay, base)
        streak += 1
        now += d.delay + uptime + 0.01


def test_endless_slow_crash_loop_keeps_a_capped_delay():
    # Runs shorter than min_uptime but spaced wider than the window never loop and
    # never reset `consecutive`; after ~1025 of them 2 ** (attempt - 1) no longer fits a float.
    t = tracker(max_retries=10, window=60.0, min_uptime=5.0, backoff_initial=0.5, backoff_max=30.0)
    now = 0.0
    for _ in range(1100):
        d = t.decide(now=now, uptime=4.0, exit_code=1)
        assert d.action == "restart"
        assert d.delay <= 30.0
        now += d.delay + 4.0
