"""One supervised child: its spec, its state, and the facts the verdicts read."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..plan.specs import ProcessSpec
from ..plan.ssh import NOT_STARTED, SERVER_LOST
from ..runtime.handles import UNKNOWN_EXIT
from ..runtime.ledger import ProcessRecord
from ..runtime.process import ProcessId
from .restart import RestartTracker
from .states import ChildState, check

if TYPE_CHECKING:
    from ..runtime.launch import Launched


class Handle(Protocol):
    """What the supervisor needs of a started process (subprocess.Popen has it)."""

    pid: int

    def poll(self) -> int | None: ...


@dataclass
class Child:
    spec: ProcessSpec
    tracker: RestartTracker
    state: ChildState = ChildState.PENDING
    handle: Handle | None = None
    pid: ProcessId | None = None
    restarts: int = 0
    started_at: float = 0.0  # supervisor clock
    started_wall: float = 0.0  # time.time(), for people
    exit_seen: float | None = None  # a clean exit held until the scheduler says whether it retired it
    ready_at: float | None = None
    unhealthy_since: float | None = None
    stopped_since: float | None = None  # first seen SIGSTOPped (state T)
    retry_at: float = 0.0  # BACKOFF: when it may start again
    exit_code: int | None = None
    reason: str = ""
    address: str | None = None
    spawns: int = 0  # how many times it was started; the first is not a restart
    failure: str = ""  # why it last failed (an exit, an unhealthy verdict, a spawn that raised)
    transport: str = ""  # how its current incarnation was started (runtime/launch.py Transport)
    argv: tuple[str, ...] = ()  # what this machine runs for it (for a remote one: the ssh)
    gone_at: float = 0.0  # when its last incarnation exited or was killed (supervisor clock)
    # Its last incarnation may still be registered with the scheduler (killed as hung, on another
    # host, or refused as "name taken"): its name is proven free before it starts again.
    check_name: bool = False
    forgot: str | None = None  # the address the scheduler was last asked to forget for it
    came_back: bool = False  # it yielded to its host's owner or hours: its next start is no restart

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_worker(self) -> bool:
        return self.spec.role == "worker"

    def move(self, new: ChildState, reason: str | None = None) -> None:
        """Change state through the one table of allowed moves (states.TRANSITIONS)."""
        check(self.state, new)
        self.state = new
        if reason is not None:
            self.reason = reason

    def started(self, launched: Launched, pid: ProcessId, now: float) -> None:
        """A new incarnation runs (``now``: the supervisor's clock): the last one's facts are forgotten."""
        self.restarts += 1 if self.spawns and not self.came_back else 0
        self.spawns, self.came_back = self.spawns + 1, False
        self.handle, self.transport, self.argv, self.pid = launched.handle, launched.transport, launched.argv, pid
        self.started_at, self.started_wall = now, time.time()
        self.ready_at = self.unhealthy_since = self.stopped_since = self.exit_code = self.address = self.forgot = None
        self.move(ChildState.STARTING, "")

    def record(self) -> ProcessRecord:
        return ProcessRecord(
            name=self.name, role=self.spec.role, group=self.spec.group, host=self.spec.host, at=self.spec.at,
            pid=self.pid.pid if self.pid else None, create_time=self.pid.create_time if self.pid else None,
            state=self.state.value, restarts=self.restarts, exit_code=self.exit_code, reason=self.reason,
            address=self.address, started=self.started_wall or None,
            log=str(self.spec.log_path) if self.spec.log_path else None, argv=list(self.argv or self.spec.argv),
        )

    def __repr__(self) -> str:  # short, for test failures
        return f"Child({self.name} {self.state.value})"


def describe_exit(code: int | None) -> str:
    import signal

    if code is None:
        return "unknown exit"
    if code == UNKNOWN_EXIT:
        return "exited (code unknown: adopted, not our child)"
    if code == SERVER_LOST:
        return "its host's fork server went, or its channel dropped (exit code unknown)"
    if code == NOT_STARTED:
        return "its direct start failed before it ran"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"

