"""Restart policy: pure decisions from exit facts and a clock, so it is tested without processes.

Like supervisord's startsecs/startretries and circus's flapping detection: a
run that lasted ``min_uptime`` counts as good and resets the backoff. More than
``max_retries`` restarts within ``window`` seconds is a crash loop: as Kubernetes'
CrashLoopBackOff, it is retried with a delay that doubles up to ``crash_loop_max``
(5 minutes by default) and never given up on, since what breaks a process on a
workstation (a full disk, a dependency being reinstalled, a swapping machine) mends
by itself. Only a failure that cannot change without an edit is final, and that is
decided from its cause (supervisor/causes.py), not here.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from ..topology import RestartPolicy

CRASH_LOOP_FIRST = 10.0  # seconds: the first delay of a crash loop (Kubernetes starts there too)


class Action(StrEnum):
    RESTART = "restart"  # at once or after a short backoff
    CRASH_LOOP = "crash-loop"  # too many restarts: after a long, growing delay; still trying
    STAY_DOWN = "stay-down"  # its policy says so (never, on-failure after a clean exit, an operator's stop)


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0
    reason: str = ""


@dataclass
class RestartTracker:
    policy: RestartPolicy
    rng: random.Random = field(default_factory=random.Random)
    recent: deque = field(default_factory=deque)  # times of restarts within the window
    consecutive: int = 0  # quick failures in a row, drives the backoff
    loops: int = 0  # crash-loop delays in a row, drives the long backoff; a good run ends the loop

    def decide(self, now: float, uptime: float, exit_code: int | None, by_operator: bool = False) -> Decision:
        """What to do about a process that just exited (or was found unhealthy)."""
        if by_operator:
            return Decision(Action.STAY_DOWN, reason="stopped by operator")
        if self.policy.policy == "never":
            return Decision(Action.STAY_DOWN, reason="restart policy is 'never'")
        if self.policy.policy == "on-failure" and exit_code == 0:
            return Decision(Action.STAY_DOWN, reason="exited cleanly and policy is 'on-failure'")
        if uptime >= self.policy.min_uptime:
            self.consecutive = self.loops = 0
        while self.recent and now - self.recent[0] > self.policy.window:
            self.recent.popleft()
        if self.loops or len(self.recent) >= self.policy.max_retries:
            delay = self.loop_delay(self.loops)
            self.loops += 1
            self.recent.append(now)
            return Decision(Action.CRASH_LOOP, delay=delay,
                            reason=f"crash loop: {len(self.recent) - 1} restarts within {self.policy.window:g} s "
                                   f"(max_retries {self.policy.max_retries})")
        delay = self.delay_for(self.consecutive)
        self.consecutive += 1
        self.recent.append(now)
        return Decision(Action.RESTART, delay=delay)

    def delay_for(self, attempt: int) -> float:
        """0 for the first restart after a good run; then exponential with jitter.

        Jitter keeps a fleet of workers that failed together from retrying in lock-step."""
        if attempt == 0:
            return 0.0
        # the exponent is capped: a slow crash loop may count thousands of attempts
        base = min(self.policy.backoff_max, self.policy.backoff_initial * 2 ** min(attempt - 1, 64))
        return base * self.rng.uniform(0.5, 1.0)

    def loop_delay(self, loops: int) -> float:
        """10 s, 20 s, 40 s ... up to crash_loop_max, with jitter."""
        cap = self.policy.crash_loop_max
        base = min(cap, CRASH_LOOP_FIRST * 2 ** min(loops, 64))
        return base * self.rng.uniform(0.75, 1.0)

    def reset(self) -> None:
        self.recent.clear()
        self.consecutive = self.loops = 0
