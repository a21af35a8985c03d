"""The states and their allowed moves, for the supervisor's modules: they live in runtime/states.py,
below the supervisor and the client alike (the client and the CLI import them from there)."""

from __future__ import annotations

from ..runtime.states import (DOWN, LIVE, SERVING, TRANSITIONS, ChildState, ClusterState, HostState,
                              IllegalTransition, check)

__all__ = ["DOWN", "LIVE", "SERVING", "TRANSITIONS", "ChildState", "ClusterState", "HostState",
           "IllegalTransition", "check"]
