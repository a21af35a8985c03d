"""What every topology model shares: the strict frozen base, the number types, names, env.

Kept apart so hosts.py, workers.py and models.py can all use it without importing each other.
"""

from __future__ import annotations

import math
import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class FieldError(ValueError):
    """A check on a whole model that blames one field inside it (for the message's path)."""

    def __init__(self, message: str, loc: tuple[Any, ...]):
        super().__init__(message)
        self.loc = loc


def _short(value: Any, limit: int = 60) -> str:
    """A value for a one-line message: its repr, cut short."""
    text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _finite_number(v: Any) -> Any:
    # YAML turns `true` into a bool, which pydantic would take as 1; and .nan/.inf are no timeouts.
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is a boolean, not a number; write a number such as 1 or 2.5")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{v!r} is not a finite number; write a number such as 1 or 2.5")
    return v


# Whole numbers must be written as numbers (no `true`, no '3', no 3.0); other numbers may be
# written 1e9 (which YAML 1.1 reads as text) but never as a boolean, .nan or .inf.
Int = StrictInt
Num = Annotated[float, BeforeValidator(_finite_number)]
Bool = StrictBool


class Model(BaseModel):
    """Strict and frozen; what is derived from the fields may be a cached_property, computed once.

    A copy with `update=` drops those cached values, so it never answers with its original's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any:
        copy = super().model_copy(update=update, deep=deep)
        if update:
            for klass in type(self).__mro__:
                for name, attr in vars(klass).items():
                    if isinstance(attr, cached_property):
                        copy.__dict__.pop(name, None)
        return copy


class RestartPolicy(Model):
    """How the supervisor treats a process that exits (supervision issue)."""

    policy: Literal["always", "on-failure", "never"] = "always"
    backoff_initial: Num = Field(0.5, gt=0, le=300, description="first delay, seconds")
    backoff_max: Num = Field(30.0, gt=0, le=3600, description="delay cap, seconds")
    min_uptime: Num = Field(5.0, ge=0, le=3600, description="a start counts as good after this")
    max_retries: Int = Field(5, ge=0, le=1000, description="quick restarts allowed within window; past them it is "
                             "a crash loop, retried with a growing delay up to crash_loop_max")
    window: Num = Field(60.0, gt=0, le=86400, description="seconds over which retries count")
    crash_loop_max: Num = Field(300.0, gt=0, le=86400, description="delay cap in a crash loop, seconds "
                                "(as Kubernetes' CrashLoopBackOff: it keeps trying)")
    unhealthy_grace: Num = Field(
        10.0, gt=0, le=3600, description="alive but unregistered for this long counts as failed"
    )


def _check_env(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    out: dict[Any, str] = {}
    for k, x in v.items():  # YAML gives 1 or true; the environment only holds text
        if not isinstance(k, str) or not k or "=" in k or "\0" in k:
            raise ValueError(
                f"environment variable name {k!r} is not valid; use a name such as "
                "OMP_NUM_THREADS (no '=')"
            )
        if isinstance(x, (dict, list)):
            raise ValueError(
                f"{k}: {x!r} is not a single value; an environment variable holds text "
                "such as '1' or 'on'"
            )
        text = "" if x is None else str(x).lower() if isinstance(x, bool) else str(x)
        if "\0" in text:
            raise ValueError(f"{k}: the value contains a NUL character")
        out[k] = text
    return out
