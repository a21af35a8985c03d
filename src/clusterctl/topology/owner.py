"""The person at the keyboard: when a workstation's owner counts as active, what the workers do
then, the hours they may run, and how gently they run (`owner:`, `hours:`, `nice:`, `reserve:`).

Each key is set at the top level (every host, the head too) or on a host in `hosts:`, whose
value replaces the top level's for that host (`HostPolicy`, from ``ClusterConfig.policy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Int, Model, Num


class ActiveIf(Model):
    """Signals that the owner is at the machine: any one true means active."""

    command: str | None = Field(None, description="a shell command; exit 0 = active, another code = idle, "
                                "running past command_timeout = unknown")
    command_timeout: Num = Field(5.0, gt=0, le=300, description="seconds before the command counts as unknown")
    input_idle_below: Num | None = Field(
        None, gt=0, le=86400 * 7, description="active while keyboard or mouse input is more recent than this "
        "(seconds; logind's IdleHint/IdleSinceHint, skipped where the host cannot tell)")
    other_cpu_above: Num | None = Field(
        None, gt=0, le=4096, description="active while processes outside this cluster use more cores than this")

    @field_validator("command")
    @classmethod
    def _command(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("the command is empty; write a shell command whose exit 0 means the owner is active")
        return v

    @property
    def signals(self) -> list[str]:
        return [k for k in ("command", "input_idle_below", "other_cpu_above") if getattr(self, k) is not None]


class OwnerPolicy(Model):
    """What the workers of a host do while its owner is active."""

    active_if: ActiveIf = ActiveIf()
    when_active: Literal["pause", "retire", "stop"] = Field(
        "pause", description="pause: no new tasks, running ones finish; retire: graceful (results move first), "
        "at once; stop: stopped at once")
    retire_after: Num = Field(120.0, ge=0, le=86400, description="seconds paused before the workers retire "
                              "gracefully")
    resume_after: Num = Field(600.0, ge=0, le=86400, description="seconds of owner-idle before the workers "
                              "come back")


@lru_cache(maxsize=64)
def _schedule(text: str):  # asked about once a second per host: parsed once
    from .hours import parse

    return parse(text)


def _hours(v: Any) -> Any:
    if v is None:
        return v
    if not isinstance(v, str):
        raise ValueError(f"{v!r} is not an hours expression; write e.g. \"Mon-Fri 19:00-07:00; Sat,Sun\"")
    from .hours import parse

    parse(v)  # raises ValueError with a one-line message
    return v


@dataclass(frozen=True)
class HostPolicy:
    """What applies on one host: its own keys, else the top level's."""

    owner: OwnerPolicy | None = None
    hours: str | None = None
    nice: int | None = None
    reserve: str | int | None = None  # memory kept for the owner; None: the larger of 10% and 2 GiB

    @property
    def watched(self) -> bool:
        """The host needs an owner watcher (something to sense there)."""
        return self.owner is not None and bool(self.owner.active_if.signals)

    def schedule(self):  # -> hours.Schedule | None
        return None if self.hours is None else _schedule(self.hours)


class PolicyKeys(Model):
    """The keys a host and the top level share (mixed into HostConfig and ClusterConfig)."""

    owner: OwnerPolicy | None = Field(None, description="when the owner counts as active and what workers do then")
    hours: str | None = Field(None, description="windows the workers may run in, the host's local time, "
                              "e.g. \"Mon-Fri 19:00-07:00; Sat,Sun\"")
    nice: Int | None = Field(None, ge=0, le=19, description="worker CPU priority (19: lowest); also the idle "
                             "I/O class where the OS has one")
    reserve: str | Int | Num | None = Field(
        None, description="memory kept for the owner when `memory_limit: auto` divides the host's: a size such as "
        "'4GiB' or a fraction such as 0.2 (default: the larger of 10% and 2 GiB, at most half the machine)")

    @field_validator("hours", mode="before")
    @classmethod
    def _check_hours(cls, v: Any) -> Any:
        return _hours(v)

    @field_validator("reserve", mode="before")
    @classmethod
    def _check_reserve(cls, v: Any) -> Any:
        if v is None:
            return v
        from .workers import parse_size

        parse_size(v, "reserve")
        return v


def merged(top: PolicyKeys, host: PolicyKeys | None) -> HostPolicy:
    """A host's own keys replace the top level's, key by key (a host's `owner:` replaces it whole);
    null on a host means "the top level's". To turn a top-level key off on one host, set there
    `owner: {active_if: {}}` (no signal), `hours: always` or `nice: 0`."""
    pick = (lambda k: getattr(host, k) if host is not None and getattr(host, k) is not None else getattr(top, k))
    return HostPolicy(owner=pick("owner"), hours=pick("hours"), nice=pick("nice"), reserve=pick("reserve"))
