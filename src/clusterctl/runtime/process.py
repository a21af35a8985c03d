"""One child process: spawn in its own session, signal politely, kill its whole tree.

A PID is only ever acted on when it is provably this cluster's: its create time
matches the one recorded when it was started (a recycled PID is another process)
and it carries the cluster's tag, ``CLUSTERCTL_TAG=<tag>``, in its environment
(every process clusterctl starts gets it, and its children inherit it). A
process-group sweep takes only tagged members: after a reboot, or once a daemon
reuses the id of a dead leader, the group is someone else's.
"""

from __future__ import annotations

from enum import StrEnum
import os
import signal
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from ..plan.tag import KEEP_ENVIRON, TAG_ENV
from .childhandle import popen_priority
from .logs import private_file, write_header

WINDOWS = os.name == "nt"
CREATE_TIME_SLACK = 0.05  # psutil rounds create times; allow a little
BOOT_SLACK = 1.0  # seconds: the boot time psutil derives moves a little with the clock
ORPHAN_GRACE = 0.5  # seconds a stopped tree's leftovers get before SIGKILL
# setproctitle (Dask retitles its processes) would otherwise overwrite what /proc/PID/environ
# shows, and with it the tag; the title then fits in the command line's own space.
_owned: set[tuple[int, float, str]] = set()  # (pid, create time, tag) already proven: env never changes


@dataclass(frozen=True)
class ProcessId:
    """A pid plus its create time: the identity of one process, safe against PID reuse.

    With a ``tag``, the process must also carry that cluster tag (carries()), or it is not
    ours: never returned by get(), never signalled."""

    pid: int
    create_time: float
    tag: str = ""

    def get(self) -> psutil.Process | None:
        """The live process, or None if it is gone, the PID now belongs to another, or it lacks the tag."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > CREATE_TIME_SLACK:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if self.tag and (self.pid, self.create_time, self.tag) not in _owned:
                if not carries(proc, self.tag):
                    return None
                _owned.add((self.pid, self.create_time, self.tag))  # a few per process started
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            return None

    def alive(self) -> bool:
        return self.get() is not None

    def tagged(self, tag: str) -> ProcessId:
        """The same identity, to be acted on only if the process carries ``tag``."""
        return replace(self, tag=tag)


def carries(proc: psutil.Process, tag: str) -> bool:
    """True when proc bears this cluster's tag: ``CLUSTERCTL_TAG=<tag>`` in its environment,
    or, where the environment does not say (it cannot be read, or a process title overwrote
    it), in its command line (``CLUSTERCTL_TAG=<tag>``, or an agent's ``--tag <tag>``)."""
    if not tag:
        return False
    try:
        seen = proc.environ().get(TAG_ENV)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False
    except (psutil.Error, OSError, NotImplementedError):
        seen = None
    if seen is not None:
        return seen == tag
    try:
        words = " ".join(proc.cmdline()).split()
    except (psutil.Error, OSError):
        return False
    if f"{TAG_ENV}={tag}" in words:
        return True
    return any(a == "--tag" and b == tag for a, b in zip(words, words[1:]))


def before_boot(create_time: float | None) -> bool:
    """A create time from before this machine last booted: that process is gone, whatever has its pid now."""
    return bool(create_time) and create_time < psutil.boot_time() - BOOT_SLACK  # type: ignore[operator]


def spawn(
    argv: list[str] | tuple[str, ...],
    *,
    log_path: Path | None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    detach: bool = False,
    stdin: int = subprocess.DEVNULL,
    nice: int | None = None,
) -> subprocess.Popen:
    """Start argv in its own session (POSIX) or process group (Windows), logging to log_path.

    ``detach`` also drops the console on Windows, for the background supervisor; ``nice`` (a worker's)
    is set in the child before exec, with the idle I/O class (childhandle.lower_priority)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    tag = (env or {}).get(TAG_ENV, "")
    if tag:
        full_env.update(KEEP_ENVIRON)
    if cwd:
        Path(cwd).mkdir(parents=True, exist_ok=True)
    if log_path:
        write_header(log_path, argv)
        out = private_file(log_path)  # O_APPEND: rotation may truncate under us
    else:
        out = subprocess.DEVNULL
    kwargs: dict = {}
    if WINDOWS:
        flags = subprocess.CREATE_NEW_PROCESS_GROUP
        if detach:
            flags |= subprocess.DETACHED_PROCESS | subprocess.CREATE_NO_WINDOW
        kwargs.update(popen_priority(nice, flags))  # creationflags, with its priority class
    else:
        kwargs.update(start_new_session=True, **popen_priority(nice))
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=stdin,  # PIPE for an ssh child: the remote agent's lifeline (remote/)
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            close_fds=True,
            **kwargs,
        )
        popen.tag = tag  # type: ignore[attr-defined] - identify() reads it
        return popen
    finally:
        if out is not subprocess.DEVNULL:
            out.close()


def identify(popen: subprocess.Popen) -> ProcessId:
    """The identity of a child just started; with the tag spawn() gave it (``popen.tag``)."""
    tag = getattr(popen, "tag", "") or ""
    try:
        return ProcessId(popen.pid, psutil.Process(popen.pid).create_time(), tag)
    except psutil.NoSuchProcess:
        return ProcessId(popen.pid, 0.0, tag)


def identify_self() -> ProcessId:
    return ProcessId(os.getpid(), psutil.Process().create_time())


def terminate(pid: ProcessId) -> bool:
    """Ask politely: SIGTERM to the top process only (dask's nanny forwards it)."""
    proc = pid.get()
    return proc is not None and _ask(proc)


def _ask(proc: psutil.Process) -> bool:
    try:
        if WINDOWS:
            os.kill(proc.pid, signal.CTRL_BREAK_EVENT)
        else:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)  # a stopped (T) process acts on SIGTERM only once continued
        return True
    except (psutil.NoSuchProcess, ProcessLookupError, OSError):
        return False


def _own(pid: ProcessId, popen: subprocess.Popen | None = None) -> psutil.Process | None:
    """pid's process if it is ours: pid.get(); or, when its tag cannot be seen, by create time
    while the handle says our child still runs (then its pid cannot have been reused)."""
    proc = pid.get()
    if proc is None and pid.tag and popen is not None and popen.poll() is None:
        proc = replace(pid, tag="").get()
    return proc


def tree(pid: ProcessId, popen: subprocess.Popen | None = None,
         groups: dict[int, list[psutil.Process]] | None = None) -> list[psutil.Process]:
    """The process, its descendants, and (POSIX) the tagged members left in its process group.

    ``groups`` is _groups()'s answer, when several trees are looked at once."""
    found: dict[int, psutil.Process] = {}
    proc = _own(pid, popen)
    if proc is not None:
        found[proc.pid] = proc
        try:
            for child in proc.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            pass
    if _sweeps(pid):
        # Orphans (a worker whose nanny died) leave the tree but keep the group; only those
        # carrying our tag: once the leader is gone its id may name a stranger's group.
        if groups is None:
            groups = _groups({pid.pid})
        for other in groups.get(pid.pid, []):
            if other.pid in found or other.pid == os.getpid():
                continue
            try:
                if other.create_time() >= pid.create_time - CREATE_TIME_SLACK and carries(other, pid.tag):
                    found[other.pid] = other
            except psutil.Error:
                continue
    # A zombie has exited already; waiting for it would wait for whoever reaps it
    # (a slow init made `down` take 2 s longer).
    return [p for p in found.values() if _live(p)]


def _sweeps(pid: ProcessId) -> bool:
    """Whether pid's process group may be swept: it names a tag to check members against,
    a create time from this boot, and its pid was not reused (then the group is the new owner's)."""
    return (not WINDOWS and bool(pid.tag) and bool(pid.create_time) and not before_boot(pid.create_time)
            and not _reused(pid))


def _groups(pgids: set[int]) -> dict[int, list[psutil.Process]]:
    """One pass over every process: the members of each of these process groups."""
    found: dict[int, list[psutil.Process]] = {}
    if not pgids:
        return found
    for other in psutil.process_iter():
        try:
            pgid = os.getpgid(other.pid)
        except OSError:
            continue
        if pgid in pgids:
            found.setdefault(pgid, []).append(other)
    return found


def tagged(tag: str, counts: dict[str, int] | None = None) -> list[psutil.Process]:
    """Every live process of this user carrying ``tag``, but this one and its ancestors.

    ``counts`` (if given) gets how many processes were seen and how many were ours to inspect."""
    me = psutil.Process()
    skip = {me.pid, *(p.pid for p in me.parents())}
    uid = os.getuid() if hasattr(os, "getuid") else None
    found, seen, inspected = [], 0, 0
    for p in psutil.process_iter(["uids"] if uid is not None else []):
        seen += 1
        if p.pid in skip:
            continue
        if uid is not None and (p.info.get("uids") is None or p.info["uids"].real != uid):
            continue
        inspected += 1
        if carries(p, tag) and _live(p):
            found.append(p)
    if counts is not None:
        counts.update(seen=seen, inspected=inspected)
    return found


def stop_tagged(tag: str, grace: float, rounds: int = 3) -> int:
    """Stop every process of this user carrying ``tag``: SIGTERM to the session leaders (what
    clusterctl started; a nanny forwards it), one grace, then SIGKILL whatever carries the tag,
    again while new ones appear (a dying supervisor may have started one). Returns how many."""
    procs = tagged(tag)
    if not procs:
        return 0
    leaders = [p for p in procs if _leader(p)] or procs
    for p in leaders:
        _ask(p)
    start = time.monotonic()
    wait_gone(leaders, grace)
    wait_gone(procs, max(0.0, min(ORPHAN_GRACE, grace - (time.monotonic() - start))))
    stopped = {p.pid for p in procs}
    for _ in range(rounds):
        left = tagged(tag)
        if not left:
            break
        stopped |= {p.pid for p in left}
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        wait_gone(left, 5)
    return len(stopped)


def _leader(p: psutil.Process) -> bool:
    try:
        return WINDOWS or os.getsid(p.pid) == p.pid
    except OSError:
        return False


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


class StopResult(StrEnum):
    GONE = "gone"  # was not running
    EXITED = "exited"  # left politely within the grace
    KILLED = "killed"  # its top process outlived the grace


def stop_many(targets: list[tuple[ProcessId, subprocess.Popen | None]], grace: float) -> list[StopResult]:
    """Stop several trees at once: SIGTERM every top process, one shared grace, then SIGKILL.

    Returns a StopResult per target."""
    sweep = {pid.pid for pid, _ in targets if _sweeps(pid)}
    groups = _groups(sweep)
    members = [tree(pid, popen, groups) for pid, popen in targets]
    tops = []
    for (pid, popen), procs in zip(targets, members):
        top = _own(pid, popen) if procs else None
        if top is not None and _ask(top):
            tops.append(top)
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
    groups = _groups({pid.pid for pid, _ in targets if _sweeps(pid)} & sweep)  # late group members
    results = []
    for (pid, popen), procs in zip(targets, members):
        left = [p for p in procs if p.pid in alive_pids]
        left += [p for p in tree(pid, popen, groups) if p.pid not in {q.pid for q in left}]  # group orphans
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if left:
            wait_gone(left, timeout=5)
        _reap(popen)
        results.append(StopResult.GONE if not procs else StopResult.KILLED if pid.pid in stubborn_pids
                       else StopResult.EXITED)
    return results


def _reap(popen: subprocess.Popen | None) -> None:
    if popen is not None:
        try:
            popen.poll()
        except Exception:  # noqa: BLE001 - reaping is best effort
            pass
