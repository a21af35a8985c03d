"""The remote agent's lifeline: EOF or silence on stdin stops its process (a silent partition
sends no FIN: only the missing heartbeat tells the far side)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil
import pytest
from conftest import kill_all

PY = sys.executable
# The command the agent runs, found again by its argv; the last word names it in ps.
NAP = ["-c", "import time; time.sleep(60)", "clusterctl-test-agent-lifeline"]


@dataclass
class Agent:
    proc: subprocess.Popen
    command: psutil.Process  # the NAP the agent started, in a session of its own


def command_of(proc: subprocess.Popen) -> psutil.Process:
    """The agent's NAP, chosen by its argv: its first child may be the agent's own fork before the
    exec (or the interpreter behind a wrapper), and stopping that one leaves the agent stray."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for kid in psutil.Process(proc.pid).children(recursive=True):
            try:
                if kid.cmdline()[1:] == NAP:
                    return kid
            except psutil.Error:
                pass
        time.sleep(0.05)
    raise AssertionError("the agent started nothing")


@pytest.fixture
def start_agent(tmp_path):
    """Starts agents running NAP; afterwards SIGKILLs each agent's whole tree and its command (a
    SIGSTOPped process too: SIGKILL needs no SIGCONT), even when the agent went first."""
    started: list[tuple[subprocess.Popen, list[psutil.Process]]] = []

    def start(timeout: float, grace: float = 1) -> Agent:
        proc = subprocess.Popen([PY, "-m", "clusterctl.remote.agent", "--grace", str(grace), "--cwd", str(tmp_path),
                                 "--lifeline-timeout", str(timeout), "--", PY, *NAP],
                                stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        found: list[psutil.Process] = []
        started.append((proc, found))
        found.append(command_of(proc))
        return Agent(proc, found[0])

    yield start
    for proc, found in started:
        try:
            top = psutil.Process(proc.pid)
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        kill_all([*found, *tree])
        proc.wait()


@pytest.fixture
def stopped(start_agent) -> Agent:
    """An agent with no heartbeat timeout and a 60 s grace whose command is SIGSTOPped (hung)."""
    a = start_agent(timeout=0, grace=60)
    a.command.send_signal(signal.SIGSTOP)
    return a


def test_heartbeats_keep_it_running_and_silence_stops_it(start_agent):
    a = start_agent(timeout=1.5)
    for _ in range(10):  # 3 s of beats, twice the timeout
        a.proc.stdin.write(b"\n")
        a.proc.stdin.flush()
        time.sleep(0.3)
    assert a.proc.poll() is None and a.command.is_running()
    t0 = time.monotonic()  # now silence, with the pipe still open: a cut link
    a.proc.wait(timeout=15)
    took = time.monotonic() - t0
    err = a.proc.stderr.read().decode()
    assert "no heartbeat on the lifeline for 1.5 s" in err, err
    assert not a.command.is_running() or a.command.status() == psutil.STATUS_ZOMBIE
    assert took < 10, took  # a deadline that catches a hang, not a benchmark


def test_zero_timeout_waits_for_eof_only(start_agent):
    a = start_agent(timeout=0)
    time.sleep(2)
    assert a.proc.poll() is None and a.command.is_running()
    a.proc.stdin.close()  # EOF: the supervisor went
    a.proc.wait(timeout=15)
    assert "lifeline closed" in a.proc.stderr.read().decode()


def test_the_kill_word_kills_a_stopped_command_without_the_grace(stopped):
    """Issue 20: wire.KILL on the lifeline (the supervisor judged the process hung) kills its group at
    once, a SIGSTOPped one included; a plain EOF would SIGTERM it and wait the whole grace."""
    from clusterctl.remote.wire import KILL

    t0 = time.monotonic()
    stopped.proc.stdin.write(KILL)
    stopped.proc.stdin.flush()
    code = stopped.proc.wait(timeout=30)
    took, err = time.monotonic() - t0, stopped.proc.stderr.read().decode()
    assert took < 10, f"no 60 s grace for a hung process ({took:.1f} s): {err}"
    assert code == 128 + signal.SIGKILL, (code, err)
    assert "judged hung by the supervisor" in err, err
    assert not stopped.command.is_running() or stopped.command.status() == psutil.STATUS_ZOMBIE


def test_a_polite_stop_continues_a_stopped_command_so_it_can_leave(stopped):
    t0 = time.monotonic()
    stopped.proc.stdin.close()  # EOF: a stop with the grace
    code = stopped.proc.wait(timeout=30)
    assert time.monotonic() - t0 < 10, "SIGTERM acted on after SIGCONT, not the grace's SIGKILL"
    assert code == 128 + signal.SIGTERM, code
