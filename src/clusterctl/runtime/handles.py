"""Handles for children started by fork, with the parts of subprocess.Popen in use.

Two kinds of child skip exec: `up` forks the CLI into the background supervisor
(ForkedChild: a child of this process), and the supervisor forks Dask processes
from the warm fork server (WarmChild: a child of that server, whose exit code
comes back through multiprocessing). A third is no child at all: a process a new
supervisor adopted from a SIGKILLed one (Adopted), whose exit is seen but whose
exit code is lost (UNKNOWN_EXIT). All answer ``pid``, ``returncode``,
``poll()``, ``wait(timeout)`` and ``send_signal(sig)`` as Popen does, so
process.stop and the supervisor treat every child alike.

>>> child = fork_detached(lambda: 0, ["python", "-c", "pass"], log, cwd)   # doctest: +SKIP
>>> child.wait(timeout=10)
0
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import psutil

from ..plan.tag import TAG_ENV
from .childhandle import UNKNOWN_EXIT, ChildHandle
from .logs import private_file, write_header
from .process import KEEP_ENVIRON, carries



class ForkedChild(ChildHandle):
    """A child of this very process (os.fork), reaped with waitpid."""

    def _exit_code(self) -> int | None:
        try:
            done, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: it has gone, its code is lost
            return -1
        return os.waitstatus_to_exitcode(status) if done else None


class WarmChild(ChildHandle):
    """A child of the warm fork server (a multiprocessing.Process), which reports its exit."""

    def __init__(self, proc: Any, tag: str = ""):
        super().__init__(proc.pid, tag)
        self._proc = proc

    def _exit_code(self) -> int | None:
        return self._proc.exitcode  # negative signal number, as Popen reports it

    def _pause(self, most: float | None) -> None:
        self._proc.join(most)  # wakes as soon as it exits


class Adopted(ChildHandle):
    """A live process this supervisor did not start (its first supervisor was SIGKILLed).

    Not our child, so no waitpid: its exit is seen through a pidfd (Linux 5.3+: readable once it
    exits, and bound to that very process, so a reused pid cannot fool it), else by asking psutil
    for ``ident`` (pid, create time and tag). The exit code is lost with its parent: UNKNOWN_EXIT."""

    def __init__(self, ident: Any):
        super().__init__(ident.pid, ident.tag)
        self.ident = ident
        self._fd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                fd = os.pidfd_open(ident.pid)
            except OSError:
                fd = None  # gone already, or out of descriptors: psutil answers instead
            if fd is not None and ident.get() is None:  # the pid was reused before we held it
                os.close(fd)
                fd = None
                self.returncode = UNKNOWN_EXIT
            self._fd = fd

    def _exit_code(self) -> int | None:
        if self._fd is not None:
            poller = select.poll()
            poller.register(self._fd, select.POLLIN)
            if not poller.poll(0):
                return None
            self.close()
            return UNKNOWN_EXIT
        return None if self.ident.get() is not None else UNKNOWN_EXIT

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            if self._fd is not None:
                signal.pidfd_send_signal(self._fd, sig)
            elif self.ident.get() is not None:
                os.kill(self.pid, sig)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None

    def __del__(self) -> None:  # a handle dropped while it still runs (a test, a shutdown)
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass


def become_detached(argv: list[str] | tuple[str, ...], log: Path | str | None, cwd: Path | str | None,
                    env: dict[str, str] | None = None) -> None:
    """In a freshly forked child: what spawn() gives an exec'd process.

    Its own session (stopped as a tree; the terminal's Ctrl-C does not reach it),
    default signal handlers, stdin from /dev/null, stdout and stderr appended to
    ``log``, ``env`` and ``cwd`` applied, and ``argv`` as its title in ``ps``.
    SIGPIPE stays ignored, as in any Python process.

    A tag in ``env`` must stay visible to other processes, which read /proc, not our
    os.environ: a fork shows what the process it was forked from was exec'd with. If
    that already carries the tag (the warm fork server was started by a tagged
    supervisor), it is kept through any later retitling; otherwise (the supervisor,
    forked from the CLI) the title carries ``# CLUSTERCTL_TAG=<tag>``."""
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if log:
        f = private_file(log)
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        f.close()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass
    tag = (env or {}).get(TAG_ENV, "")
    keep = bool(tag) and carries(psutil.Process(), tag)
    if keep:
        os.environ.update(KEEP_ENVIRON)  # read by setproctitle at its first call, below
    marker = f"# {TAG_ENV}={tag}" if tag and not keep else ""
    # The title first: setproctitle may use the environment's space only up to the first
    # variable changed since exec, and os.environ.update below changes some.
    _retitle(" ".join([*argv, marker] if marker else argv))
    if marker and not carries(psutil.Process(), tag):  # cut short: the tag goes first then
        _retitle(f"{marker} {' '.join(argv)}")
    os.environ.update(env or {})
    if cwd:
        os.chdir(cwd)


def _retitle(title: str) -> None:
    try:
        from setproctitle import setproctitle

        setproctitle(title)  # `ps` shows what runs, not the process it was forked from
    except ImportError:
        pass


def can_fork() -> bool:
    """POSIX with a single thread: a fork copies only the calling thread, so a lock another
    thread holds would stay held in the child forever."""
    return os.name == "posix" and threading.active_count() == 1


def fork_detached(target: Callable[[], int], argv: list[str], log: Path, cwd: Path,
                  env: dict[str, str] | None = None) -> ForkedChild:
    """Run ``target()`` in a fork of this process, set up as process.spawn would start ``argv``.

    Own session, stdin from /dev/null, output appended to ``log`` (after a header),
    ``env`` and ``cwd`` applied, ``ps`` showing ``argv``; its exit code is what
    ``target`` returns. Only when can_fork()."""
    cwd.mkdir(parents=True, exist_ok=True)
    write_header(log, argv, "forked")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write the parent's pending output again
    pid = os.fork()
    if pid:
        return ForkedChild(pid, (env or {}).get(TAG_ENV, ""))
    code = 1
    try:
        become_detached(argv, log, cwd, env)
        code = target() or 0  # None: as sys.exit(None)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - the log is the only place left to say it
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)
