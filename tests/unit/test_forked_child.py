"""Handles for children started by fork: the Popen parts that process.stop and `up` use."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from clusterctl.runtime import handles
from clusterctl.runtime.handles import ForkedChild
from conftest import kill_all


def _fork(fn) -> ForkedChild:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            # An earlier test in this process may have installed the supervisor's flag-only SIGTERM
            # handler; a child started the real way (become_detached) has the default ones.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            fn()
        finally:
            os._exit(0)
    return ForkedChild(pid)


@pytest.fixture
def fork():
    """Forks a copy of this test process running fn; any copy still running afterwards is killed."""
    children: list[ForkedChild] = []

    def start(fn) -> ForkedChild:
        children.append(_fork(fn))
        return children[-1]

    yield start
    for child in children:
        if child.poll() is None:
            os.kill(child.pid, 9)
            child.wait(timeout=10)


def test_poll_then_exit_code(fork):
    child = fork(lambda: os._exit(3))
    assert child.wait(timeout=10) == 3
    assert child.poll() == 3 and child.returncode == 3


def test_wait_times_out_then_reports_a_signal(fork):
    child = fork(lambda: time.sleep(30))
    assert child.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.2)
    os.kill(child.pid, 9)
    assert child.wait(timeout=10) == -9  # negative signal number, as Popen reports it


def test_send_signal_reaches_a_running_child_only(fork):
    child = fork(lambda: time.sleep(30))
    child.send_signal(15)
    assert child.wait(timeout=10) == -15
    child.send_signal(15)  # reaped: its pid may be someone else's now, so nothing is sent


def test_fork_detached_writes_the_header_and_returns_the_targets_code(tmp_path):
    log = tmp_path / "logs" / "sup.log"

    def target() -> int:
        # fd 1, not print(): pytest replaces sys.stdout with its own capture
        os.write(1, f"in the child {os.getsid(0) == os.getpid()} {os.getcwd()}\n".encode())
        return 4

    child = handles.fork_detached(target, ["python", "-m", "clusterctl.supervisor", "x.yaml"], log, tmp_path / "work")
    try:
        assert child.wait(timeout=10) == 4
    finally:
        if child.poll() is None:
            os.kill(child.pid, 9)
            child.wait(timeout=10)
    first, second = log.read_text().splitlines()
    assert first.startswith("--- ") and first.endswith(" start (forked): python -m clusterctl.supervisor x.yaml")
    assert second == f"in the child True {(tmp_path / 'work').resolve()}"


def _sleep_forever() -> None:  # pragma: no cover - runs in the fork server's child
    time.sleep(30)


def test_warm_child_answers_as_popen():
    ctx = multiprocessing.get_context("forkserver")
    proc = ctx.Process(target=_sleep_forever, daemon=False)
    proc.start()
    child = handles.WarmChild(proc)
    try:
        assert child.pid == proc.pid and child.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.2)
        child.send_signal(9)
        assert child.wait(timeout=10) == -9 and child.returncode == -9
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)


# -- the cluster tag stays visible on forked children -------------------------------------

TAG = f"fork-test.{os.getpid()}"


def _wait_for_title(pid: int, words: str) -> list[str]:
    import psutil

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cmd = psutil.Process(pid).cmdline()
        if words in " ".join(cmd):
            return cmd
        time.sleep(0.02)
    raise AssertionError(f"title of {pid} never showed {words!r}: {psutil.Process(pid).cmdline()}")


def test_a_fork_of_an_untagged_process_shows_its_tag_in_its_title(tmp_path):
    """The supervisor forked from the CLI: /proc shows the CLI's environment, so the title says it."""
    import psutil

    from clusterctl.plan.specs import TAG_ENV
    from clusterctl.runtime import process

    assert TAG_ENV not in psutil.Process().environ()
    argv = ["python", "-m", "clusterctl.supervisor", "x.yaml"]
    child = handles.fork_detached(lambda: time.sleep(30), argv, tmp_path / "s.log", tmp_path, {TAG_ENV: TAG})
    try:
        assert child.tag == TAG
        cmd = _wait_for_title(child.pid, f"{TAG_ENV}={TAG}")
        assert " ".join(cmd).startswith("python -m clusterctl.supervisor x.yaml")
        pid = process.identify(child)
        assert pid.tag == TAG and pid.alive() and process.carries(psutil.Process(child.pid), TAG)
        assert process.stop(pid, grace=5, popen=child) == "exited"
    finally:
        if child.poll() is None:
            os.kill(child.pid, 9)
            child.wait(timeout=10)


FORK_FROM_TAGGED = r"""
import sys, time
from pathlib import Path
from clusterctl.runtime import handles
child = handles.fork_detached(lambda: time.sleep(30), ["dask", "worker", "tcp://x:1"], Path(sys.argv[1]),
                              Path(sys.argv[2]), {"CLUSTERCTL_TAG": sys.argv[3]})
print(child.pid, flush=True)
child.wait(timeout=60)
"""


def test_a_fork_of_a_tagged_process_keeps_the_tag_in_its_environment_through_retitles(tmp_path):
    """A warm child: its fork server was exec'd with the tag, which /proc keeps showing even after
    the child (and later Dask) retitles it, because SPT_NOENV is set before the first retitle."""
    import psutil

    from clusterctl.plan.specs import TAG_ENV
    from clusterctl.runtime import process

    parent = subprocess.Popen([sys.executable, "-c", FORK_FROM_TAGGED, str(tmp_path / "w.log"), str(tmp_path), TAG],
                              env={**os.environ, TAG_ENV: TAG}, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        cmd = _wait_for_title(pid, "dask worker tcp://x:1")
        assert TAG not in " ".join(cmd)  # no marker needed ...
        assert psutil.Process(pid).environ()[TAG_ENV] == TAG  # ... /proc still shows it
        assert process.carries(psutil.Process(pid), TAG)
    finally:
        top = psutil.Process(parent.pid)
        kill_all(top.children(recursive=True) + [top])
        parent.wait(timeout=10)


FORK_FROM_UNTAGGED = r"""
import sys, time
from pathlib import Path
from clusterctl.runtime import handles
child = handles.fork_detached(lambda: time.sleep(30), ["python", "-m", "clusterctl.supervisor", "x.yaml"],
                              Path(sys.argv[1]), Path(sys.argv[2]), {"PYTHONUNBUFFERED": "1", "CLUSTERCTL_TAG": sys.argv[3]})
print(child.pid, flush=True)
child.wait(timeout=60)
"""


def test_the_title_keeps_its_tag_when_the_environment_changes_and_the_command_line_is_short(tmp_path):
    """setproctitle may use the environment's space only up to the first variable changed since
    exec: a short command line plus a changed PYTHONUNBUFFERED once cut the tag off the title."""
    import psutil

    from clusterctl.plan.specs import TAG_ENV
    from clusterctl.runtime import process

    script = tmp_path / "f.py"
    script.write_text(FORK_FROM_UNTAGGED)
    env = {"PYTHONUNBUFFERED": "0", **{k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", TAG_ENV)}}
    parent = subprocess.Popen([sys.executable, "f.py", "l", ".", TAG], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        cmd = _wait_for_title(pid, "clusterctl.supervisor")
        time.sleep(0.1)
        assert process.carries(psutil.Process(pid), TAG), psutil.Process(pid).cmdline()
        assert "-m clusterctl.supervisor x.yaml" in " ".join(psutil.Process(pid).cmdline()), cmd
    finally:
        top = psutil.Process(parent.pid)
        kill_all(top.children(recursive=True) + [top])
        parent.wait(timeout=10)


def test_a_served_childs_exit_code_is_awaited_when_its_pid_is_done_first():
    """The pidfd says the process ended a moment before its server's answer arrives: the code is the
    server's, not 'unknown' (an exit 0, a retirement, must not read as a crash)."""
    import json
    import socket
    import threading

    from clusterctl.remote.forked import ServedChild

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    agent_end, server_end = socket.socketpair()
    try:
        child = ServedChild(agent_end, proc.pid)
        proc.wait(timeout=10)  # gone (and reaped): its pidfd is ready, the server has said nothing yet
        later = threading.Timer(0.3, lambda: server_end.sendall(json.dumps({"exit": 3}).encode() + b"\n"))
        later.start()
        assert child.wait(timeout=10) == 3
        later.join()
    finally:
        server_end.close()
        agent_end.close()
