"""Handles for children started by fork: the Popen parts that process.stop and `up` use."""

import multiprocessing
import os
import subprocess
import time

import pytest

from clusterctl.runtime import handles
from clusterctl.runtime.handles import ForkedChild


def _fork(fn) -> ForkedChild:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
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
