"""What every child started without Popen shares with Popen: ``pid``, ``returncode``, ``poll()``,
``wait(timeout)`` and ``send_signal(sig)``; subclasses say how its exit is seen (runtime/handles.py,
remote/forked.py). Standard library only: the remote agent imports it for every worker."""

from __future__ import annotations

import os
import subprocess
import time

POLL_INTERVAL = 0.02
# The exit code of a process that was not our child: it went, but only its parent learnt the code.
# Outside both ranges Popen uses (0..255, and minus a signal number), so nobody mistakes it for one.
UNKNOWN_EXIT = 256


class ChildHandle:
    """What every forked child shares: Popen's returncode, poll, wait and send_signal."""

    def __init__(self, pid: int, tag: str = ""):
        self.pid = pid
        self.tag = tag  # the cluster tag it carries: process.identify() puts it in its ProcessId
        self.returncode: int | None = None  # negative signal number when killed, as Popen

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._exit_code()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; raises subprocess.TimeoutExpired after ``timeout`` seconds, as Popen."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            self._pause(left)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # once reaped, the pid may belong to someone else
            os.kill(self.pid, sig)

    def _exit_code(self) -> int | None:
        raise NotImplementedError

    def _pause(self, most: float | None) -> None:
        time.sleep(POLL_INTERVAL if most is None else min(POLL_INTERVAL, most))
