import os
import subprocess
import time

import pytest

from clusterctl.client.lifecycle import ForkedChild


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
