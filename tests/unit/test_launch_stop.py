"""The launch seam's stop (runtime/launch.py): handles of different transports stopped together, each
asked its own way, with one shared grace and a typed result each. Real processes, no ssh: a process
whose stdin is its lifeline stands in for a remote one (it leaves when the pipe closes, as an agent
does), and a plain child for a local one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

from clusterctl.remote.direct import shut_lifeline
from clusterctl.runtime import launch
from clusterctl.runtime.process import ProcessId, StopResult

PY = sys.executable
LIFELINE = "import sys\nsys.stdin.buffer.read()\n"  # leaves once its stdin ends
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)\n"


class PipeWay:
    """A transport whose polite step is closing the lifeline, as the remote ones do."""

    transport = launch.Transport.AGENT

    def ask(self, handle, kill):
        return shut_lifeline(handle.stdin, kill)

    def sweep(self, host):
        pass


def ident(p: subprocess.Popen) -> ProcessId:
    return ProcessId(p.pid, psutil.Process(p.pid).create_time())


def test_each_transport_is_asked_its_way_and_one_grace_covers_them_all():
    remote = subprocess.Popen([PY, "-c", LIFELINE], stdin=subprocess.PIPE, start_new_session=True)
    polite = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], start_new_session=True)
    stubborn = subprocess.Popen([PY, "-c", STUBBORN], stdout=subprocess.PIPE, start_new_session=True)
    assert stubborn.stdout.readline() == b"ready\n"
    try:
        t0 = time.monotonic()
        results = launch.stop([(ident(remote), remote, PipeWay()), (ident(polite), polite, launch.Local()),
                               (ident(stubborn), stubborn, launch.Local()), (None, None, launch.Local())], grace=3.0)
        took = time.monotonic() - t0
        assert results == [StopResult.EXITED, StopResult.EXITED, StopResult.KILLED, StopResult.GONE]
        assert remote.returncode == 0, "it left by itself when its lifeline closed: no signal"
        assert polite.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL
        assert took < 15, f"one shared grace, not one per transport ({took:.1f} s)"  # a deadline, not a benchmark
    finally:
        for p in (remote, polite, stubborn):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_zero_grace_says_the_kill_word_on_a_lifeline_first():
    code = "import sys\ndata = sys.stdin.buffer.read()\nsys.exit(9 if data == b'!' else 0)\n"
    remote = subprocess.Popen([PY, "-c", code], stdin=subprocess.PIPE, start_new_session=True)
    try:
        [result] = launch.stop([(ident(remote), remote, PipeWay())], grace=0.0)
        assert result == StopResult.EXITED and remote.returncode == 9, "the far side heard wire.KILL before the end"
    finally:
        if remote.poll() is None:
            remote.kill()
            remote.wait()
