"""process.py with real, short-lived Python children; every one is gone when a test ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clusterctl.plan.specs import TAG_ENV
from clusterctl.runtime import process
from clusterctl.runtime.process import ProcessId

from conftest import kill_all, wait_for

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals and sessions")

PY = sys.executable
TAG = f"unit-test.{os.getpid()}"  # every child here carries it, as every process clusterctl starts does

# Each child writes <ready dir>/<its pid> once its signal handling is in place, so a
# test never signals a process that has not yet decided to ignore SIGTERM.
SLEEPER = r"""
import os, pathlib, signal, sys, time
if sys.argv[2] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1], str(os.getpid())).write_text("")
time.sleep(60)
"""

TREE = r"""
import os, pathlib, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
ready, depth, own_session = sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["setsid"]
if depth > 0:
    subprocess.Popen([sys.executable, __file__, ready, str(depth - 1), *sys.argv[3:]], start_new_session=own_session)
pathlib.Path(ready, str(os.getpid())).write_text("")
time.sleep(60)
"""

# On SIGTERM, starts a replacement child (same process group) and leaves: the
# replacement was not there when stop() first looked at the tree.
FORKS_ON_TERM = r"""
import os, pathlib, signal, subprocess, sys, time
def on_term(*_):
    c = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pathlib.Path(sys.argv[1], str(c.pid)).write_text("")
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
pathlib.Path(sys.argv[1], str(os.getpid())).write_text("")
time.sleep(60)
"""

ORPHANING_PARENT = r"""
import pathlib, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
pathlib.Path(sys.argv[1]).write_text(str(child.pid))
"""


def gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pid_gone(pid: int) -> bool:
    try:
        return gone(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return True


class Reaper:
    """Starts children through process.spawn and, at teardown, SIGKILLs whatever is left
    of their sessions (children, grandchildren, orphans), matched by pid and create time."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen, psutil.Process]] = []
        self._n = 0

    def ready_dir(self) -> Path:
        self._n += 1
        d = self.tmp_path / f"ready{self._n}"
        d.mkdir()
        return d

    def spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("log_path", self.tmp_path / "child.log")
        kw["env"] = {TAG_ENV: TAG, **(kw.get("env") or {})}
        popen = process.spawn(argv, **kw)
        try:
            self.started.append((popen, psutil.Process(popen.pid)))
        except psutil.NoSuchProcess:
            self.started.append((popen, None))
        return popen

    def sleeper(self, on_term: str) -> tuple[subprocess.Popen, ProcessId]:
        ready = self.ready_dir()
        popen = self.spawn([PY, "-c", SLEEPER, str(ready), on_term])
        wait_for(lambda: any(ready.iterdir()) or popen.poll() is not None, 10, 0.02, "child ready")
        assert popen.poll() is None, (self.tmp_path / "child.log").read_text()
        return popen, process.identify(popen)

    def tree(self, depth: str, *extra: str) -> tuple[subprocess.Popen, list[psutil.Process]]:
        """TREE with ``depth`` levels below the top, once every member has reported ready."""
        ready = self.ready_dir()
        script = self.tmp_path / "tree.py"
        script.write_text(TREE)
        popen = self.spawn([PY, str(script), str(ready), depth, *extra])
        members = int(depth) + 1
        wait_for(lambda: len(list(ready.iterdir())) == members, 15, 0.02, f"{members} processes of the tree")
        return popen, [psutil.Process(p) for p in pids_in(ready)]

    def leftovers(self) -> list[psutil.Process]:
        out = {}
        born_after = min((top.create_time() for _, top in self.started if top is not None), default=0.0)
        for ready in self.tmp_path.glob("ready*"):  # descendants that left the session
            for f in ready.iterdir():
                try:
                    p = psutil.Process(int(f.name))
                    if p.create_time() >= born_after - 0.05 and not gone(p):
                        out[p.pid] = p
                except (psutil.Error, ValueError):
                    continue
        for popen, top in self.started:
            if top is None:
                continue
            for p in psutil.process_iter():
                try:
                    if os.getsid(p.pid) == top.pid and p.create_time() >= top.create_time() - 0.05 and not gone(p):
                        out[p.pid] = p
                except (psutil.Error, OSError):
                    continue
        return list(out.values())

    def cleanup(self) -> None:
        kill_all(self.leftovers())
        for popen, _ in self.started:
            if popen.poll() is None:
                popen.kill()
            try:
                popen.wait(timeout=5)
            except (subprocess.TimeoutExpired, ChildProcessError):
                pass
        tops = {top.pid for _, top in self.started if top is not None}
        for child in psutil.Process().children():  # adopted orphans that died: reap them
            try:
                if os.getsid(child.pid) in tops and child.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(child.pid, os.WNOHANG)
            except (psutil.Error, OSError):
                pass


def set_child_subreaper(on: bool) -> bool:
    """Adopt our orphaned descendants (Linux), as a real init would reap them.

    Some sandboxes run a PID 1 that is slow to reap, and psutil cannot tell a
    non-child zombie from a live process, so every killed orphan would cost
    seconds of waiting; as its subreaper this process reaps them itself."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


@pytest.fixture
def reaper(tmp_path: Path):
    adopted = set_child_subreaper(True)
    r = Reaper(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()
        if adopted:
            set_child_subreaper(False)


def pids_in(ready: Path) -> list[int]:
    return sorted(int(p.name) for p in ready.iterdir())


# -- spawn / identify ---------------------------------------------------------------


def test_spawn_logs_header_output_and_applies_env_and_cwd(reaper, tmp_path: Path):
    log = tmp_path / "logs" / "deep" / "w.log"  # parent directories are created
    work = tmp_path / "work"  # so is the cwd
    code = (
        "import os, sys\n"
        "print('stdout', os.environ['CLUSTERCTL_T_VAR'], os.getcwd(), os.environ['PYTHONUNBUFFERED'])\n"
        "print('stderr-line', file=sys.stderr)\n"
        "print('stdin', repr(sys.stdin.read()))\n"
        "print('session-leader', os.getsid(0) == os.getpid())\n"
        "sys.exit(3)\n"
    )
    popen = reaper.spawn([PY, "-c", code], log_path=log, env={"CLUSTERCTL_T_VAR": "hello world"}, cwd=work)
    assert popen.wait(timeout=10) == 3
    lines = log.read_text().splitlines()
    assert lines[0].startswith("--- ") and f" start: {PY} -c import os, sys" in lines[0]
    assert f"stdout hello world {work.resolve()} 1" in lines
    assert "stderr-line" in lines
    assert "stdin ''" in lines  # stdin is /dev/null, never the test's terminal
    assert "session-leader True" in lines


def test_spawn_appends_to_an_existing_log(reaper, tmp_path: Path):
    log = tmp_path / "w.log"
    for word in ("first", "second"):
        assert reaper.spawn([PY, "-c", f"print({word!r})"], log_path=log).wait(timeout=10) == 0
    text = log.read_text()
    assert text.count("--- ") == 2
    assert text.index("first") < text.index("second")


def test_spawn_without_a_log(reaper, tmp_path: Path):
    popen = reaper.spawn([PY, "-c", "print('x' * 100000)"], log_path=None)
    assert popen.wait(timeout=10) == 0
    assert not (tmp_path / "child.log").exists()


def test_spawn_of_a_missing_program_raises(tmp_path: Path):
    log = tmp_path / "w.log"
    with pytest.raises(OSError):
        process.spawn([str(tmp_path / "no-such-program")], log_path=log)
    assert log.read_text().startswith("--- ")


def test_identity_alive_and_wrong_create_time(reaper):
    popen, pid = reaper.sleeper("default")
    assert pid.pid == popen.pid
    assert pid.create_time == psutil.Process(popen.pid).create_time()
    assert pid.alive() and pid.get().pid == popen.pid
    assert ProcessId(pid.pid, pid.create_time + 0.01).alive()  # psutil rounding is tolerated
    assert not ProcessId(pid.pid, pid.create_time - 100).alive()  # a recycled PID
    assert not ProcessId(pid.pid, pid.create_time + 1).alive()
    assert process.terminate(ProcessId(pid.pid, pid.create_time - 100)) is False
    assert popen.poll() is None  # the wrong identity sent nothing
    assert process.terminate(pid) is True
    assert popen.wait(timeout=10) == -signal.SIGTERM
    assert not pid.alive()
    assert process.terminate(pid) is False


def test_zombie_is_not_alive(reaper):
    popen = reaper.spawn([PY, "-c", "pass"])
    pid = process.identify(popen)
    proc = psutil.Process(popen.pid)
    wait_for(lambda: proc.status() == psutil.STATUS_ZOMBIE, 10, 0.02, "exit")  # exited, not reaped
    assert not pid.alive()
    popen.wait(timeout=5)
    assert not pid.alive()


# -- stop ---------------------------------------------------------------------------


def test_stop_polite_process_exits(reaper):
    popen, pid = reaper.sleeper("default")
    start = time.monotonic()
    assert process.stop(pid, grace=5.0, popen=popen) == "exited"
    assert time.monotonic() - start < 4.0  # did not sit out the grace
    assert not pid.alive()


def test_stop_stubborn_process_is_killed_after_grace(reaper):
    popen, pid = reaper.sleeper("ignore")
    start = time.monotonic()
    assert process.stop(pid, grace=0.5, popen=popen) == "killed"
    elapsed = time.monotonic() - start
    assert elapsed >= 0.45  # it did get its grace
    assert elapsed < 4.0
    assert not pid.alive()
    assert popen.poll() is not None


def test_stop_of_a_process_that_already_left(reaper):
    popen, pid = reaper.sleeper("default")
    popen.kill()
    popen.wait(timeout=5)
    assert process.stop(pid, grace=0.5, popen=popen) == "gone"


def test_stop_kills_the_whole_tree(reaper):
    popen, family = reaper.tree("2")
    pid = process.identify(popen)
    assert {p.pid for p in process.tree(pid)} == {p.pid for p in family}
    assert process.stop(pid, grace=0.5, popen=popen) == "killed"
    assert all(gone(p) for p in family)
    assert process.tree(pid) == []


def test_descendants_in_their_own_session_are_found_through_parents(reaper):
    popen, family = reaper.tree("2", "setsid")
    pid = process.identify(popen)
    assert len({os.getsid(p.pid) for p in family}) == 3  # three sessions, three groups
    assert {p.pid for p in process.tree(pid)} == {p.pid for p in family}
    assert process.stop(pid, grace=0.5, popen=popen) == "killed"
    assert all(gone(p) for p in family)


def test_child_started_during_the_grace_is_stopped_too(reaper):
    ready = reaper.ready_dir()
    popen = reaper.spawn([PY, "-c", FORKS_ON_TERM, str(ready)])
    wait_for(lambda: len(list(ready.iterdir())) == 1, 10, 0.02, "child ready")
    pid = process.identify(popen)
    assert process.stop(pid, grace=2.0, popen=popen) == "exited"
    late = [p for p in pids_in(ready) if p != pid.pid]
    assert len(late) == 1, "the SIGTERM handler did not run"
    wait_for(lambda: pid_gone(late[0]), 2, 0.02, "the late child to die")


def test_kill_tree(reaper):
    popen, family = reaper.tree("1")
    assert process.kill_tree(process.identify(popen), timeout=5) == []
    assert all(gone(p) for p in family)


def test_tree_does_not_reach_other_sessions(reaper):
    _, a = reaper.sleeper("default")
    _, b = reaper.sleeper("default")
    assert [p.pid for p in process.tree(a)] == [a.pid]
    assert [p.pid for p in process.tree(b)] == [b.pid]


def test_orphan_found_by_process_group_and_stopped(reaper, tmp_path: Path):
    marker = tmp_path / "orphan.pid"
    popen = reaper.spawn([PY, "-c", ORPHANING_PARENT, str(marker)])
    pid = process.identify(popen)
    assert popen.wait(timeout=10) == 0  # the parent is gone (and reaped) ...
    orphan = psutil.Process(int(marker.read_text()))
    assert not gone(orphan)  # ... its child is not
    assert orphan.ppid() != popen.pid
    assert os.getpgid(orphan.pid) == pid.pid
    assert not pid.alive()
    assert orphan.pid in {p.pid for p in process.tree(pid)}
    process.stop(pid, grace=0.5, popen=popen)
    wait_for(lambda: gone(orphan), 5, 0.02, "the orphan to die")


def test_wrong_create_time_is_never_signalled(reaper):
    popen, real = reaper.sleeper("default")
    stale = ProcessId(real.pid, real.create_time - 100)  # the ledger's process is long dead; PID reused
    try:
        assert process.tree(stale) == []
        assert process.stop(stale, grace=0.5) == "gone"
        assert real.alive()
        assert popen.poll() is None
    finally:
        popen.kill()
        popen.wait(timeout=5)


def test_stop_many_shares_one_grace(reaper):
    grace = 1.0
    targets = [reaper.sleeper("ignore") for _ in range(3)]
    start = time.monotonic()
    results = process.stop_many([(pid, popen) for popen, pid in targets], grace=grace)
    elapsed = time.monotonic() - start
    assert results == ["killed"] * 3
    assert elapsed >= grace - 0.05
    assert elapsed < 2.5 * grace  # one after another would take at least 3 x grace
    assert all(not pid.alive() for _, pid in targets)


def test_stop_many_reports_each_target(reaper):
    polite = reaper.sleeper("default")
    stubborn = reaper.sleeper("ignore")
    dead_popen, dead = reaper.sleeper("default")
    dead_popen.kill()
    dead_popen.wait(timeout=5)
    results = process.stop_many([(polite[1], polite[0]), (stubborn[1], stubborn[0]), (dead, dead_popen)], grace=0.5)
    assert results == ["exited", "killed", "gone"]
    assert not polite[1].alive() and not stubborn[1].alive()
