"""`adapt:` in a worker group: the supervisor follows Dask's own recommendation for its size.

    workers:
      - name: default
        adapt: {minimum: 1, maximum: 8, target_duration: 5s, wait_count: 3, interval: 1s}

Grows at once when work queues; shrinks only after ``wait_count`` consecutive lower
recommendations, always by graceful retirement (supervisor/adaptive.py)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from .base import Int, Model
from .limits import MAX_GROUP_WORKERS

DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h)?\s*$")
UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def seconds(value: Any, what: str) -> float:
    """5, 5.0, '5s', '500ms', '2m' -> seconds; a ValueError that says what was expected otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        return float(value)
    m = DURATION_RE.match(str(value))
    if not m:
        raise ValueError(f"{what}: {value!r} is not a duration; use e.g. 5s, 500ms, 2m or a number of seconds")
    return float(m.group(1)) * UNITS[m.group(2)]


class AdaptConfig(Model):
    minimum: Int = Field(1, ge=0, le=MAX_GROUP_WORKERS, description="never fewer workers than this")
    maximum: Int = Field(8, ge=1, le=MAX_GROUP_WORKERS, description="never more workers than this")
    target_duration: float = Field(5.0, description="how long the queued work should take (Dask's target-duration)")
    wait_count: Int = Field(3, ge=1, le=1000, description="consecutive lower recommendations before shrinking")
    interval: float = Field(1.0, description="seconds between recommendations")

    @field_validator("target_duration", "interval", mode="before")
    @classmethod
    def _duration(cls, v: Any, info: Any) -> float:
        s = seconds(v, info.field_name)
        lo, hi = (0.1, 3600.0) if info.field_name == "target_duration" else (0.2, 300.0)
        if not lo <= s <= hi:
            raise ValueError(f"{info.field_name} must be between {lo:g} s and {hi:g} s, not {s:g} s")
        return s

    @model_validator(mode="after")
    def _bounds(self) -> AdaptConfig:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) is more than maximum ({self.maximum})")
        return self
