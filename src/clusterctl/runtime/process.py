"""One child process: spawn in its own session, signal politely, kill its whole tree.

A PID is only ever acted on together with the create time recorded when it
was started, so a recycled PID is never signalled by mistake.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from .logs import write_header

WINDOWS = os.name == "nt"
CREATE_TIME_SLACK = 0.05  # psutil rounds create times; allow a little
ORPHAN_GRACE = 0.5  # seconds a stopped tree's leftovers get before SIGKILL


@dataclass(frozen=True)
class ProcessId:
    """A pid plus its create time: the identity of one process, safe against PID reuse."""

    pid: int
    create_time: float

    def get(self) -> psutil.Process | None:
        """The live process, or None if it is gone or the PID now belongs to another."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > CREATE_TIME_SLACK:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            return None

    def alive(self) -> bool:
        return self.get() is not None


def spawn(
    argv: list[str] | tuple[str, ...],
    *,
    log_path: Path | None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    detach: bool = False,
    stdin: int = subprocess.DEVNULL,
) -> subprocess.Popen:
    """Start argv in its own session (POSIX) or process group (Windows), logging to log_path.

    ``detach`` also drops the console on Windows, for the background supervisor."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    if cwd:
        Path(cwd).mkdir(parents=True, exist_ok=True)
    if log_path:
        write_header(log_path, argv)
        out = open(log_path, "ab", buffering=0)  # O_APPEND: rotation may truncate under us
    else:
        out = subprocess.DEVNULL
    kwargs: dict = {}
    if WINDOWS:
        flags = subprocess.CREATE_NEW_PROCESS_GROUP
        if detach:
            flags |= subprocess.DETACHED_PROCESS | subprocess.CREATE_NO_WINDOW
        kwargs["creationflags"] = flags
    else:
        kwargs["start_new_session"] = True
    try:
        return subprocess.Popen(
            list(argv),
            stdin=stdin,  # PIPE for an ssh child: the remote agent's lifeline (remote/)
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            close_fds=True,
            **kwargs,
        )
    finally:
        if out is not subprocess.DEVNULL:
            out.close()


def become_detached(argv: list[str] | tuple[str, ...], log: Path | str | None, cwd: Path | str | None,
                    env: dict[str, str] | None = None) -> None:
    """In a freshly forked child: what spawn() gives an exec'd process.

    Its own session (stopped as a tree; the terminal's Ctrl-C does not reach it),
    default signal handlers, stdin from /dev/null, stdout and stderr appended to
    ``log``, ``env`` and ``cwd`` applied, and ``argv`` as its title in ``ps``.
    SIGPIPE stays ignored, as in any Python process."""
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass
    os.environ.update(env or {})
    if cwd:
        os.chdir(cwd)
    try:
        from setproctitle import setproctitle

        setproctitle(" ".join(argv))  # `ps` shows what runs, not the process it was forked from
    except ImportError:
        pass


def identify(popen: subprocess.Popen) -> ProcessId:
    try:
        return ProcessId(popen.pid, psutil.Process(popen.pid).create_time())
    except psutil.NoSuchProcess:
        return ProcessId(popen.pid, 0.0)


def identify_self() -> ProcessId:
    return ProcessId(os.getpid(), psutil.Process().create_time())


def terminate(pid: ProcessId) -> bool:
    """Ask politely: SIGTERM to the top process only (dask's nanny forwards it)."""
    proc = pid.get()
    if proc is None:
        return False
    try:
        if WINDOWS:
            os.kill(proc.pid, signal.CTRL_BREAK_EVENT)
        else:
            proc.send_signal(signal.SIGTERM)
        return True
    except (psutil.NoSuchProcess, ProcessLookupError, OSError):
        return False


def tree(pid: ProcessId) -> list[psutil.Process]:
    """The process, its descendants, and (POSIX) anything left in its process group."""
    found: dict[int, psutil.Process] = {}
    proc = pid.get()
    if proc is not None:
        found[proc.pid] = proc
        try:
            for child in proc.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            pass
    if not WINDOWS and pid.create_time and not _reused(pid):
        # Orphans (a worker whose nanny died) leave the tree but keep the group.
        for other in psutil.process_iter(["pid", "create_time"]):
            if other.pid in found or other.pid == os.getpid():
                continue
            try:
                if os.getpgid(other.pid) == pid.pid and other.info["create_time"] >= pid.create_time - CREATE_TIME_SLACK:
                    found[other.pid] = other
            except (ProcessLookupError, PermissionError, psutil.NoSuchProcess, OSError):
                continue
    # A zombie has exited already; waiting for it would wait for whoever reaps it
    # (a slow init made `down` take 2 s longer).
    return [p for p in found.values() if _live(p)]


def wait_gone(procs: list[psutil.Process], timeout: float) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """psutil.wait_procs, but a zombie counts as gone: psutil waits for a non-child until
    it is reaped, which a slow init (PID 1 here) delays by seconds."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while True:
        alive = [p for p in alive if _live(p)]
        if not alive or time.monotonic() >= deadline:
            gone = [p for p in procs if p not in alive]
            return gone, alive
        time.sleep(0.02)


def _live(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _reused(pid: ProcessId) -> bool:
    """The PID now belongs to another process: then its group is that process's, not ours
    (Linux never hands out a PID that is still some live group's id)."""
    try:
        return abs(psutil.Process(pid.pid).create_time() - pid.create_time) > CREATE_TIME_SLACK
    except psutil.NoSuchProcess:
        return False


def kill_tree(pid: ProcessId, timeout: float = 5.0) -> list[psutil.Process]:
    """SIGKILL the whole tree and wait for it; returns what refused to die."""
    procs = tree(pid)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = wait_gone(procs, timeout=timeout)
    return alive


def stop(pid: ProcessId, grace: float, popen: subprocess.Popen | None = None) -> str:
    """Polite, then firm, to the whole tree. Returns 'exited', 'killed' or 'gone'."""
    return stop_many([(pid, popen)], grace)[0]


def stop_many(targets: list[tuple[ProcessId, subprocess.Popen | None]], grace: float) -> list[str]:
    """Stop several trees at once: SIGTERM every top process, one shared grace, then SIGKILL.

    Returns, per target, 'gone' (was not running), 'exited' (left politely) or
    'killed' (its top process outlived the grace)."""
    members = [tree(pid) for pid, _ in targets]
    for (pid, _), procs in zip(targets, members):
        if procs:
            terminate(pid)
    tops = [top for pid, _ in targets if (top := pid.get()) is not None]
    start = time.monotonic()
    _, stubborn = wait_gone(tops, timeout=grace) if tops else ([], [])
    # Once a top (nanny, scheduler) has gone, the rest of its tree (a worker child,
    # multiprocessing's resource tracker) gets a short moment, then is forced: waiting
    # for them cost 1.5 s a worker and bought nothing.
    everyone = [p for procs in members for p in procs]
    rest = max(0.0, min(ORPHAN_GRACE, grace - (time.monotonic() - start)))
    _, alive = wait_gone(everyone, timeout=rest) if everyone else ([], [])
    alive_pids = {p.pid for p in alive}
    stubborn_pids = {p.pid for p in stubborn}
    results = []
    for (pid, popen), procs in zip(targets, members):
        left = [p for p in procs if p.pid in alive_pids]
        left += [p for p in tree(pid) if p.pid not in {q.pid for q in left}]  # group orphans
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if left:
            wait_gone(left, timeout=5)
        _reap(popen)
        results.append("gone" if not procs else "killed" if pid.pid in stubborn_pids else "exited")
    return results


def _reap(popen: subprocess.Popen | None) -> None:
    if popen is not None:
        try:
            popen.poll()
        except Exception:  # noqa: BLE001 - reaping is best effort
            pass
