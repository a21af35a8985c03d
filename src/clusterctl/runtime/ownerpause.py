"""Runs inside a Dask worker (through ``Client.run``): the owner's pause, as Dask's own paused status.

A paused worker starts no new task and the scheduler sends it none; the tasks it runs finish.
Dask's memory monitor also pauses and resumes workers: it would resume an owner-paused worker at
its next check (its memory is low), so while the owner holds it the monitor's pause threshold is
off, and put back when the owner lets go (the monitor then pauses again if memory is high)."""

from __future__ import annotations

from typing import Any

HELD = "_clusterctl_owner_pause"  # the monitor's threshold while the owner holds the worker


def set_paused(paused: bool, dask_worker: Any = None) -> str:
    """Pause or resume this worker for its host's owner; returns its status after. (``Client.run``
    passes the worker as the keyword ``dask_worker``.)"""
    from distributed.core import Status

    memory = getattr(dask_worker, "memory_manager", None)
    if paused:
        if not hasattr(dask_worker, HELD):
            setattr(dask_worker, HELD, getattr(memory, "memory_pause_fraction", False))
            if memory is not None:
                memory.memory_pause_fraction = False
        if dask_worker.status == Status.running:
            dask_worker.status = Status.paused
    else:
        if hasattr(dask_worker, HELD):
            fraction = getattr(dask_worker, HELD)
            delattr(dask_worker, HELD)
            if memory is not None:
                memory.memory_pause_fraction = fraction
        if dask_worker.status == Status.paused:
            dask_worker.status = Status.running
    return str(dask_worker.status.name)
