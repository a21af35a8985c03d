"""What every child started without Popen shares with Popen: ``pid``, ``returncode``, ``poll()``,
``wait(timeout)`` and ``send_signal(sig)``; subclasses say how its exit is seen (runtime/handles.py,
remote/forked.py). And how every child, however started, takes its worker's priority (``nice:``):
lower_priority. Standard library only: the remote agent imports it for every worker."""

from __future__ import annotations

import functools
import errno
import os
import subprocess
import sys
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


# -- a worker's priority (`nice:`), set in the child itself ------------------------------------------
NICE_RANGE = range(0, 20)
# Windows has priority classes, not nice values (subprocess's constants exist only there).
BELOW_NORMAL_PRIORITY_CLASS, IDLE_PRIORITY_CLASS = 0x4000, 0x40


def check_nice(value: object) -> int | None:
    """A ``nice`` from a request or a command line: None, or an int 0..19; ValueError otherwise."""
    if value is None or type(value) is int and value in NICE_RANGE:
        return value  # type: ignore[return-value]
    raise ValueError(f"nice must be an integer from 0 to 19, not {value!r}")


def priority_class(nice: int | None) -> int:
    """Windows: the creation flag for ``nice`` (0: normal, none); 1..14 below normal, 15..19 idle."""
    return 0 if not nice else BELOW_NORMAL_PRIORITY_CLASS if nice < 15 else IDLE_PRIORITY_CLASS


def lower_priority(nice: int | None) -> str:
    """In a new child, after fork and before exec or the worker's code: CPU priority ``nice``, absolute
    (``os.nice`` is relative: a niced server would add its own), and above 0 the idle I/O class where the
    OS has one (Linux). Nice and I/O class are per thread on Linux and inherited: set before any thread
    or child exists, they hold for the whole tree. Never raises (a start must not fail for it): returns
    what could not be done, '' when all was. psutil (for the I/O class) is imported only when needed:
    an agent without a nice does not pay for it."""
    if nice is None or not hasattr(os, "setpriority"):
        return ""
    missed = []
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as e:  # raising a priority needs a privilege: it stays at the (lower) one it had
        missed.append(f"nice {nice} ({e.strerror}; it stays {os.getpriority(os.PRIO_PROCESS, 0)})")
    if nice > 0 and sys.platform.startswith("linux"):
        missed += _autogroup(nice)
        try:
            import psutil

            psutil.Process().ionice(psutil.IOPRIO_CLASS_IDLE)
        except Exception as e:  # noqa: BLE001 - not permitted (a container's seccomp), no psutil...
            missed.append(f"the idle I/O class ({type(e).__name__}: {e})")
    return "; ".join(missed)


AUTOGROUP = "/proc/self/autogroup"


def _autogroup(nice: int, tries: int = 3) -> list[str]:
    """Linux's autogroup scheduling (on by default in most distributions) shares the CPU between sessions
    first, and a worker has a session of its own (setsid): its nice alone would count only inside it,
    so the session's own nice is set too. The kernel lets an unprivileged user change one a second
    (EAGAIN): tried a few times, then said in the log. Only in a process that has its own session
    already (after setsid): the autogroup is the session's."""
    if os.getsid(0) != os.getpid():
        return []  # not a session leader: this would lower its parent's whole session
    for attempt in range(tries):
        try:
            with open(AUTOGROUP, "w") as f:
                f.write(str(nice))
            return []
        except FileNotFoundError:
            return []  # a kernel without autogroup: nice counts as it is
        except OSError as e:
            if e.errno != errno.EAGAIN or attempt == tries - 1:
                return [f"the session's nice {nice} ({e.strerror}; {AUTOGROUP})"]
            time.sleep(0.2)
    return []


def say_missed(missed: str, fd: int = 2) -> None:
    """One line on ``fd`` (the child's log) for what lower_priority could not do."""
    if missed:
        try:
            os.write(fd, f"clusterctl: could not set {missed}\n".encode())
        except OSError:
            pass


def _before_exec(nice: int) -> None:
    say_missed(lower_priority(nice))  # stderr is the log already: Popen has set it up


def popen_priority(nice: int | None, creationflags: int = 0) -> dict:
    """Popen's arguments that start a process at ``nice`` (None: as its parent): on POSIX a preexec_fn
    (the child sets it after fork, before exec; psutil imported first, here: no import after a fork of a
    process with threads), on Windows a priority class among ``creationflags``."""
    if os.name == "nt":
        flags = creationflags | priority_class(nice)
        return {"creationflags": flags} if flags else {}
    if nice is None:
        return {}
    if nice > 0 and sys.platform.startswith("linux"):
        try:
            import psutil  # noqa: F401
        except ImportError:
            pass
    return {"preexec_fn": functools.partial(_before_exec, nice)}
