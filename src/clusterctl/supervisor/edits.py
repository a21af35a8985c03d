"""What the helper modules decide and the Reconciler carries out: small frozen values.

Adaptive groups, rolling restarts, Dask's retirements, `apply`, scaling and restarts never change
the reconcile loop's state themselves: they return these edits and ``Reconciler.apply`` applies
them (the desired set, a child's state, restart policies, timings), saying each one's event. What
was decided is plain data a test can compare::

    >>> core.apply([Add((spec,), Event("default", "adapt-up", "grew 1 -> 2"))])  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from ..plan.specs import ProcessSpec
from ..topology import RestartPolicy
from .states import ChildState


@dataclass(frozen=True)
class Timing:
    startup: float  # seconds a process has to become ready
    shutdown: float  # graceful stop before force
    early_workers: bool  # workers may start while the scheduler starts (its address is fixed)


@dataclass(frozen=True)
class Event:
    """One line of the event log (Effects.emit); as an edit, only said."""

    process: str
    kind: str
    detail: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Add:
    """These processes join the desired set: the loop starts them."""

    specs: tuple[ProcessSpec, ...]
    event: Event | None = None


@dataclass(frozen=True)
class Remove:
    """These workers leave the desired set: the loop retires them (results move first), or kills
    them at once (``kill``). ``by_dask``: Dask retired them, which their removal says; the
    Supervisor hears of it (Hooks.desired_changed) and keeps the new size."""

    names: tuple[str, ...]
    event: Event | None = None
    kill: bool = False
    by_dask: bool = False


@dataclass(frozen=True)
class Yield:
    """These workers' host yields to its owner or its hours (yielding.py): the live ones retire
    (``polite``) or stop, and none starts until a Return; they stay desired, nothing is a failure."""

    names: tuple[str, ...]
    reason: str
    polite: bool = True
    event: Event | None = None


@dataclass(frozen=True)
class Return:
    """These workers' host is free again: the yielded ones start."""

    names: tuple[str, ...]
    event: Event | None = None


@dataclass(frozen=True)
class Noted:
    """Nothing to do but write the ledger again: what it shows changed (a host's owner, say)."""

    what: str = ""


@dataclass(frozen=True)
class Move:
    """A child's new state, as an operator's restart sets it (changes.py): ``retry_at`` when it
    starts again, the exit code of the incarnation just stopped, and ``reset`` a fresh restart budget."""

    name: str
    state: ChildState
    reason: str
    retry_at: float | None = None
    exit_code: int | None = None
    reset: bool = False
    event: Event | None = None


@dataclass(frozen=True)
class Respec:
    """New specs for processes already desired (`apply`): used from their next start."""

    specs: tuple[ProcessSpec, ...]


@dataclass(frozen=True)
class Policy:
    """A new restart policy for these processes (`apply`): it judges their next failure."""

    names: tuple[str, ...]
    policy: RestartPolicy


@dataclass(frozen=True)
class Retime:
    """New timeouts (`apply`): from the next start or stop."""

    timing: Timing


@dataclass(frozen=True)
class Shutdown:
    """A client asked the scheduler to shut down (``client.shutdown()``): everything stops, once."""

    by: str


Edit = Union[Event, Add, Remove, Move, Respec, Policy, Retime, Shutdown, Yield, Return, Noted]
