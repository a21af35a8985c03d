"""Why a process went: the cause decides whether it spends its restart budget.

A worker on a workstation fleet dies of many things that are not its own fault: its host went
(ssh's 255), its host's fork server went, the scheduler went, or the scheduler still holds its
name for an earlier incarnation ("name taken"). None of these is a crash loop: they wait or retry
without spending the budget. A failure that cannot change without an edit (a missing executable,
an option Dask does not know) is final until `apply` or `restart`. Anything else is a crash, and
the restart policy (restart.py) judges it.

>>> exit_cause(1, "ValueError: Unexpected response from register: name taken, default-5", remote=False)
<Cause.NAME_TAKEN: 'name-taken'>
"""

from __future__ import annotations

from enum import StrEnum

from ..plan.ssh import NOT_STARTED, SERVER_LOST, SSH_FAILED


class Cause(StrEnum):
    CRASH = "crash"  # the process's own failure: the restart policy decides
    CONFIG = "config"  # cannot change without an edit: stays down (fatal) until apply or restart
    HOST = "host"  # ssh to its host failed: waits for the host
    SERVER = "server"  # its host's fork server went (or its channel dropped), taking it along: again at once
    ROUTE = "route"  # a direct start failed before anything ran: again at once, the agent's way
    NAME_TAKEN = "name-taken"  # the scheduler still knows an earlier incarnation: forget it, then retry


# Exit codes of a command that could not run at all (POSIX shells, and the agent's own 127).
NOT_FOUND, NOT_EXECUTABLE = 127, 126
USAGE = 2  # click's exit code for a bad option or argument
_USAGE_WORDS = ("No such option", "Invalid value", "Missing argument", "Got unexpected extra argument",
                "No such command")
_NAME_TAKEN = "name taken"

# Causes that spend nothing of the restart budget and restart at once (HOST: the host waits instead).
OUTSIDE = frozenset({Cause.SERVER, Cause.ROUTE, Cause.NAME_TAKEN})


def exit_cause(code: int | None, log: str | None, remote: bool) -> Cause:
    """The cause of an exit from its code and what its latest run said (its first error line and
    the last lines of its log)."""
    text = log or ""
    if _NAME_TAKEN in text:
        return Cause.NAME_TAKEN
    if remote and code == SSH_FAILED:
        return Cause.HOST
    if remote and code == SERVER_LOST:
        return Cause.SERVER
    if remote and code == NOT_STARTED:
        return Cause.ROUTE
    if code in (NOT_FOUND, NOT_EXECUTABLE):
        return Cause.CONFIG
    if code == USAGE and any(w in text for w in _USAGE_WORDS):
        return Cause.CONFIG
    return Cause.CRASH


def spawn_cause(error: BaseException) -> Cause:
    """A start that raised: a missing or unrunnable executable needs an edit; the rest may mend."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (FileNotFoundError, PermissionError, NotADirectoryError)):
            return Cause.CONFIG
        seen = seen.__cause__
    return Cause.CRASH
