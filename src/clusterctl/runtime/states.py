"""States are data: each child's, each host's and the cluster's, with the allowed moves written once.

The shared vocabulary of both ends: the supervisor moves its children through these states
and writes them to the ledger (runtime/ledger.py types its records with them); the client and
the CLI read them back. It lives below both, so neither imports the other.

A child's life, as supervisord's process states and distributed's ``Status``::

    pending ──spawn──► starting ──ready──► running
       ▲                 │  │                │ │
       │                 │  └──────exit / unhealthy──┘ │
       │                 ▼                  ▼          ▼
       │             backoff ◄──────────── (restart policy) ──► fatal | exited
       │                 │
       └── scheduler lost: waiting (for the scheduler to answer again) ──► pending
    any live state ──stop / retire──► stopping / retiring ──► stopped
    starting, running ──host yields──► yielding ──► yielded ──host free──► pending
"""

from __future__ import annotations

from enum import StrEnum


class ChildState(StrEnum):
    PENDING = "pending"  # desired, not started yet (or about to start again)
    STARTING = "starting"  # spawned; not yet proven ready
    RUNNING = "running"  # proven: the scheduler answers / the worker registered under its name
    BACKOFF = "backoff"  # exited or unhealthy; restarts when its delay has passed (long, in a crash loop)
    WAITING = "waiting"  # a worker stopped because the scheduler went: starts with the new one
    RETIRING = "retiring"  # no longer desired: results move off, then it stops
    STOPPING = "stopping"  # asked to stop (down)
    STOPPED = "stopped"  # stopped on request: never restarted
    EXITED = "exited"  # exited and stays down by its restart policy
    FATAL = "fatal"  # cannot run without an edit (a missing executable, a bad option): until apply/restart
    YIELDING = "yielding"  # its host yields (the owner is back, or outside its hours): results move off, it stops
    YIELDED = "yielded"  # its host yields: not started until the host is free again (no failure, no budget spent)


LIVE = frozenset({ChildState.STARTING, ChildState.RUNNING, ChildState.RETIRING, ChildState.STOPPING,
                  ChildState.YIELDING})
DOWN = frozenset({ChildState.STOPPED, ChildState.EXITED, ChildState.FATAL})

_S = ChildState
_YIELD = {_S.YIELDED}
TRANSITIONS: dict[ChildState, frozenset[ChildState]] = {
    _S.PENDING: frozenset({_S.STARTING, _S.BACKOFF, _S.FATAL, _S.EXITED, _S.WAITING, _S.STOPPED, _S.RETIRING, *_YIELD}),
    _S.STARTING: frozenset({_S.RUNNING, _S.BACKOFF, _S.FATAL, _S.EXITED, _S.WAITING, _S.RETIRING, _S.STOPPING, _S.STOPPED,
                            _S.YIELDING}),
    _S.RUNNING: frozenset({_S.BACKOFF, _S.FATAL, _S.EXITED, _S.WAITING, _S.RETIRING, _S.STOPPING, _S.STOPPED,
                           _S.YIELDING}),
    _S.BACKOFF: frozenset({_S.PENDING, _S.WAITING, _S.EXITED, _S.RETIRING, _S.STOPPED, *_YIELD}),
    _S.WAITING: frozenset({_S.PENDING, _S.EXITED, _S.RETIRING, _S.STOPPED, *_YIELD}),
    _S.RETIRING: frozenset({_S.STOPPED}),
    _S.STOPPING: frozenset({_S.STOPPED}),
    _S.STOPPED: frozenset(),
    _S.EXITED: frozenset({_S.PENDING, _S.STOPPED, _S.RETIRING}),
    _S.FATAL: frozenset({_S.PENDING, _S.STOPPED, _S.RETIRING}),
    _S.YIELDING: frozenset({_S.YIELDED, _S.STOPPED}),
    _S.YIELDED: frozenset({_S.PENDING, _S.STOPPED, _S.RETIRING}),
}


class IllegalTransition(RuntimeError):
    """A bug: the supervisor tried a move the state machine does not allow."""


def check(old: ChildState, new: ChildState) -> None:
    if old != new and new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{old.value} -> {new.value} is not an allowed move")


class ClusterState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"  # running, but some process is fatal or crash-looping, or a host is away
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"  # start-up failed; nothing is left running


SERVING = frozenset({ClusterState.RUNNING, ClusterState.DEGRADED})


class HostState(StrEnum):
    PREPARING = "preparing"  # at `up`: its files and versions being checked while the scheduler starts
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"  # its workers wait for it, without spending their restart budget
    BACK = "back"  # answered again: swept, its workers starting; reachable once they run
