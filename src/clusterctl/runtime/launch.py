"""The launch seam: one way to start a supervised process, whatever carries it.

A process is started by exactly one transport, chosen before the start (remote/launch.py ``choose``)
from the spec and what is known about its host, and its handle keeps that transport and its pid for
its whole life:

=========  ==========================================================  =====================
transport  what runs here                                              where it is defined
=========  ==========================================================  =====================
exec       the planned argv, in its own session                        here
warm       the planned argv, forked from the head's warm fork server  here (runtime/warm.py)
agent      an ssh session running ``clusterctl.remote.agent``         remote/launch.py
direct     an ``ssh -W`` channel to the host's fork server             remote/launch.py
=========  ==========================================================  =====================

``start`` returns what ran (``Launched``: the handle, its transport, the argv this machine really
runs, which the ledger records); it raises ``OSError`` when nothing could start. A direct start
that fails before its process exists ends with the typed exit code ``NOT_STARTED`` (plan/ssh.py):
the reconciler restarts it the other way at once, spending no restart budget.

``stop(targets, grace)`` stops handles of any transports together, with one shared grace, and
gives a ``StopResult`` each: every transport first ``ask``s its own way (a remote one closes its
lifeline, after the kill word when the grace is 0: the far side then kills it at once), what was
asked is waited on, and what is left is signalled, then killed, as one tree each (process.stop_many).
``sweep(host)`` stops whatever this cluster left on a host (for a remote transport: revived, with
a fresh fork server).

>>> launched = ExecLaunch().start(spec)       # doctest: +SKIP
>>> launched.transport, launched.argv[0]
(<Transport.EXEC: 'exec'>, '/usr/bin/dask')
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from .process import ProcessId, StopResult

if TYPE_CHECKING:
    from ..plan.specs import ProcessSpec


class Transport(StrEnum):
    EXEC = "exec"
    WARM = "warm"
    AGENT = "agent"
    DIRECT = "direct"


REMOTE = frozenset({Transport.AGENT, Transport.DIRECT})  # a lifeline on stdin, closed to stop it politely


@dataclass(frozen=True)
class Launched:
    handle: Any  # Popen's face: pid, poll(), wait(), send_signal(); never another process's
    transport: Transport
    argv: tuple[str, ...]  # what this machine runs for it (for a remote one: the ssh)


KILL_WAIT = 3.0  # seconds a remote process judged hung has to be killed on its host before its ssh is


class Launch(Protocol):
    transport: Transport

    def start(self, spec: ProcessSpec) -> Launched: ...

    def ask(self, handle: Any, kill: bool) -> bool:
        """A stop's first, polite step, this transport's way; True when the handle is then waited on."""
        ...

    def sweep(self, host: str) -> None: ...


class Local:
    """A process on this machine: its stop is all signals (process.stop_many sends the SIGTERM)."""

    def ask(self, handle: Any, kill: bool) -> bool:
        return False

    def sweep(self, host: str) -> None:
        """Nothing of a local process outlives its stop; `down` sweeps this machine by tag."""


def stop(targets: list[tuple[ProcessId | None, Any, Launch]], grace: float) -> list[StopResult]:
    """Stop handles of any transports together: each asked its own way, one shared grace, then
    signals for what is left (SIGTERM, then SIGKILL of its tree). A process stopped this way is gone
    before the scheduler is told to stop: one still closing would wait on a scheduler that left."""
    from . import process

    t0 = time.monotonic()
    kill = grace <= 0  # judged hung: a remote one is killed on its host at once (wire.KILL)
    asked = [h for pid, h, way in targets if pid is not None and h is not None and way.ask(h, kill)]
    wait = KILL_WAIT if kill else grace  # a killed ssh would lose the word before it reached the host
    for h in asked:  # one shared deadline
        try:
            h.wait(timeout=max(0.0, t0 + wait - time.monotonic()))
        except subprocess.TimeoutExpired:
            break  # the rest are signalled below, with what is left of the grace
    exited = {id(h) for h in asked if h.poll() is not None}
    live = [(pid, h) for pid, h, _ in targets if pid is not None]
    rest = max(0.0, grace - (time.monotonic() - t0))
    results = iter(process.stop_many(live, rest) if live else [])
    out = []
    for pid, h, _ in targets:
        result = next(results) if pid is not None else StopResult.GONE
        out.append(StopResult.EXITED if id(h) in exited else result)
    return out


class ExecLaunch(Local):
    """The planned argv, exec'd in its own session with its log, environment and directory."""

    transport = Transport.EXEC

    def start(self, spec: ProcessSpec) -> Launched:
        from . import process

        popen = process.spawn(spec.argv, log_path=spec.log_path, env=spec.env, cwd=spec.cwd, nice=spec.nice)
        return Launched(popen, self.transport, tuple(spec.argv))


class WarmLaunch(Local):
    """The planned argv, forked from the head's warm server (where forking equals exec: warm.usable)."""

    transport = Transport.WARM

    def start(self, spec: ProcessSpec) -> Launched:
        from . import warm

        return Launched(warm.spawn(spec), self.transport, tuple(spec.argv))
