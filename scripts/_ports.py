"""A free port for a run's topology, shared by scripts/bench, scripts/chaos and scripts/chaos --fleet.

    >>> port = free_port(); dash = free_port(taken={port})          # doctest: +SKIP

Only the standard library: scripts/bench --compare imports neither clusterctl tree.
"""

from __future__ import annotations

import random
import socket
from typing import Iterable


def free_port(host: str = "127.0.0.1", taken: Iterable[int] = ()) -> int:
    """A free port on ``host`` below the kernel's ephemeral range (32768+), so nothing binding port 0
    while the cluster starts takes it first; never one of ``taken`` (picked already, not bound yet)."""
    taken = set(taken)
    for _ in range(200):
        port = random.randrange(20000, 32000)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in 20000-32000")
