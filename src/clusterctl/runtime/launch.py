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
the reconciler restarts it the other way at once, spending no restart budget. Stopping is
``effects.stop`` with a grace, and gives a ``process.StopResult`` per handle.

>>> launched = ExecLaunch().start(spec)       # doctest: +SKIP
>>> launched.transport, launched.argv[0]
(<Transport.EXEC: 'exec'>, '/usr/bin/dask')
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

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


class Launch(Protocol):
    transport: Transport

    def start(self, spec: ProcessSpec) -> Launched: ...


class ExecLaunch:
    """The planned argv, exec'd in its own session with its log, environment and directory."""

    transport = Transport.EXEC

    def start(self, spec: ProcessSpec) -> Launched:
        from . import process

        popen = process.spawn(spec.argv, log_path=spec.log_path, env=spec.env, cwd=spec.cwd)
        return Launched(popen, self.transport, tuple(spec.argv))


class WarmLaunch:
    """The planned argv, forked from the head's warm server (where forking equals exec: warm.usable)."""

    transport = Transport.WARM

    def start(self, spec: ProcessSpec) -> Launched:
        from . import warm

        return Launched(warm.spawn(spec), self.transport, tuple(spec.argv))
