import os
import subprocess
import time

import pytest

from clusterctl.lifecycle import ForkedChild


def _fork(fn) -> ForkedChild:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            fn()
        finally:
            os._exit(0)
    return ForkedChild(pid)


def test_poll_then_exit_code():
    child = _fork(lambda: os._exit(3))
    assert child.wait(timeout=10) == 3
    assert child.poll() == 3 and child.returncode == 3


def test_wait_times_out_then_reports_a_signal():
    child = _fork(lambda: time.sleep(30))
    assert child.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.2)
    os.kill(child.pid, 9)
    assert child.wait(timeout=10) == -9  # negative signal number, as Popen reports it
