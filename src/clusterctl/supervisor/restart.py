"""Restart policy: pure decisions from exit facts and a clock, so it is tested without processes.

Like supervisord's startsecs/startretries and circus's flapping detection: a
run that lasted ``min_uptime`` counts as good and resets the backoff; more than
``max_retries`` restarts within ``window`` seconds makes the process fatal.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from ..topology import RestartPolicy


@dataclass(frozen=True)
class Decision:
    action: str  # "restart" | "fatal" | "stay-down"
    delay: float = 0.0
    reason: str = ""


@dataclass
class RestartTracker:
    policy: RestartPolicy
    rng: random.Random = field(default_factory=random.Random)
    recent: deque = field(default_factory=deque)  # times of restarts within the window
    consecutive: int = 0  # quick failures in a row, drives the backoff

    def decide(self, now: float, uptime: float, exit_code: int | None, by_operator: bool = False) -> Decision:
        """What to do about a process that just exited (or was found unhealthy)."""
        if by_operator:
            return Decision("stay-down", reason="stopped by operator")
        if self.policy.policy == "never":
            return Decision("stay-down", reason="restart policy is 'never'")
        if self.policy.policy == "on-failure" and exit_code == 0:
            return Decision("stay-down", reason="exited cleanly and policy is 'on-failure'")
        if uptime >= self.policy.min_uptime:
            self.consecutive = 0
        while self.recent and now - self.recent[0] > self.policy.window:
            self.recent.popleft()
        if len(self.recent) >= self.policy.max_retries:
            return Decision(
                "fatal",
                reason=f"{len(self.recent)} restarts within {self.policy.window:g} s "
                f"(max_retries {self.policy.max_retries})",
            )
        delay = self.delay_for(self.consecutive)
        self.consecutive += 1
        self.recent.append(now)
        return Decision("restart", delay=delay)

    def delay_for(self, attempt: int) -> float:
        """0 for the first restart after a good run; then exponential with jitter.

        Jitter keeps a fleet of workers that failed together from retrying in lock-step."""
        if attempt == 0:
            return 0.0
        # the exponent is capped: a slow crash loop may count thousands of attempts
        base = min(self.policy.backoff_max, self.policy.backoff_initial * 2 ** min(attempt - 1, 64))
        return base * self.rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.recent.clear()
        self.consecutive = 0
