"""What the reconcile loop needs from the world, as protocols: runtime.* and remote.* in
production (supervisor/effects.py), fakes in tests (tests/unit/test_histories.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..plan.specs import ProcessSpec
from ..runtime.launch import Launched
from ..runtime.process import ProcessId, StopResult
from .child import Handle


class Effects(Protocol):
    """Everything the core does to the world (runtime.* in production, fakes in tests)."""

    def spawn(self, spec: ProcessSpec, warm_ok: bool) -> Launched: ...  # one transport, for its life
    def identify(self, handle: Handle) -> ProcessId: ...
    def stop(self, targets: list[tuple[ProcessId | None, Handle | None]], grace: float) -> list[StopResult]: ...
    def kill(self, pid: ProcessId | None, handle: Handle | None) -> None: ...
    def retire(self, names: list[str]) -> list[str]: ...
    def forget(self, addresses: list[str]) -> None: ...  # the scheduler drops workers it cannot reach
    def rss(self, pid: ProcessId) -> int | None: ...
    def is_stopped(self, pid: ProcessId) -> bool: ...  # SIGSTOPped (state T)
    def probe_host(self, name: str) -> str | None: ...  # None: it answers; else why not
    def sweep_host(self, name: str) -> None: ...  # stop what this cluster left there
    def no_route(self, host: str, why: str) -> None: ...  # its direct route failed a start: agents from now
    def emit(self, process: str, event: str, detail: str = "", **extra: Any) -> None: ...
    def log_tail(self, spec: ProcessSpec) -> tuple[str, str]: ...  # (first cause, last lines)


class Probe(Protocol):
    """The scheduler's last answer: when, its address, and the workers registered by name."""

    answered_at: float
    address: str | None
    workers: dict[str, dict] | None
    interval: float  # seconds between answers (the Reconciler sets it each tick)
    adaptive: float  # a target duration: Dask's adaptive recommendation is asked for too (0: not)

    def refresh(self) -> None: ...
    def poke(self) -> None: ...


def _nothing(*_: Any) -> None:
    pass


@dataclass(frozen=True)
class Hooks:
    """What the Supervisor hears from the core, given once to the Reconciler (tests of the core alone
    keep these defaults)."""

    scheduler_ready: Callable[[str | None], None] = _nothing  # its address: port-0 ports are pinned
    desired_changed: Callable[[], None] = _nothing  # Dask retired a worker: its group is smaller now
    shutdown: Callable[[str], None] = _nothing  # client.shutdown() (by that address): everything stops
