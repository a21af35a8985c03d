"""The remote agent's lifeline: EOF or silence on stdin stops its process (a silent partition
sends no FIN: only the missing heartbeat tells the far side)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

PY = sys.executable
SLEEPER = [PY, "-c", "import time; time.sleep(60)"]


def agent(tmp_path, timeout: float) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "clusterctl.remote.agent", "--grace", "1", "--cwd", str(tmp_path),
                             "--lifeline-timeout", str(timeout), "--", *SLEEPER],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def child_of(proc: subprocess.Popen) -> psutil.Process:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children()
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise AssertionError("the agent started nothing")


def test_heartbeats_keep_it_running_and_silence_stops_it(tmp_path):
    a = agent(tmp_path, timeout=1.5)
    try:
        kid = child_of(a)
        for _ in range(10):  # 3 s of beats, twice the timeout
            a.stdin.write(b"\n")
            a.stdin.flush()
            time.sleep(0.3)
        assert a.poll() is None and kid.is_running()
        t0 = time.monotonic()  # now silence, with the pipe still open: a cut link
        a.wait(timeout=15)
        took = time.monotonic() - t0
        err = a.stderr.read().decode()
        assert "no heartbeat on the lifeline for 1.5 s" in err, err
        assert not kid.is_running() or kid.status() == psutil.STATUS_ZOMBIE
        assert took < 10, took  # a deadline that catches a hang, not a benchmark
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()


def test_zero_timeout_waits_for_eof_only(tmp_path):
    a = agent(tmp_path, timeout=0)
    try:
        kid = child_of(a)
        time.sleep(2)
        assert a.poll() is None and kid.is_running()
        a.stdin.close()  # EOF: the supervisor went
        a.wait(timeout=15)
        assert "lifeline closed" in a.stderr.read().decode()
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()


def test_the_kill_word_kills_a_stopped_command_without_the_grace(tmp_path):
    """Issue 20: wire.KILL on the lifeline (the supervisor judged the process hung) kills its group at
    once, a SIGSTOPped one included; a plain EOF would SIGTERM it and wait the whole grace."""
    from clusterctl.remote.wire import KILL

    a = subprocess.Popen([PY, "-m", "clusterctl.remote.agent", "--grace", "60", "--cwd", str(tmp_path),
                          "--lifeline-timeout", "0", "--", *SLEEPER],
                         stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        kid = child_of(a)
        kid.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        a.stdin.write(KILL)
        a.stdin.flush()
        code = a.wait(timeout=30)
        took, err = time.monotonic() - t0, a.stderr.read().decode()
        assert took < 10, f"no 60 s grace for a hung process ({took:.1f} s): {err}"
        assert code == 128 + signal.SIGKILL, (code, err)
        assert "judged hung by the supervisor" in err, err
        assert not kid.is_running() or kid.status() == psutil.STATUS_ZOMBIE
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()


def test_a_polite_stop_continues_a_stopped_command_so_it_can_leave(tmp_path):
    a = subprocess.Popen([PY, "-m", "clusterctl.remote.agent", "--grace", "60", "--cwd", str(tmp_path),
                          "--lifeline-timeout", "0", "--", *SLEEPER],
                         stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        kid = child_of(a)
        kid.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        a.stdin.close()  # EOF: a stop with the grace
        code = a.wait(timeout=30)
        assert time.monotonic() - t0 < 10, "SIGTERM acted on after SIGCONT, not the grace's SIGKILL"
        assert code == 128 + signal.SIGTERM, code
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
