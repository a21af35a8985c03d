"""A worker's priority (`nice:`): the helper every start path calls in the child, and how the fact
travels to a remote host (agent argv, direct request). Processes here are short `python -c` children."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clusterctl.plan.resolve import Launcher
from clusterctl.plan.specs import build_plan
from clusterctl.runtime import childhandle, process
from clusterctl.runtime.childhandle import check_nice, lower_priority, popen_priority, priority_class
from clusterctl.topology import parse_config

PY = sys.executable
LINUX = sys.platform.startswith("linux")
DASK = Launcher(("/venv/bin/dask", "scheduler"), ("/venv/bin/dask", "worker"), "test")
HOSTS = "hosts:\n  - name: ws2\n    address: 127.0.0.2\n  - name: ws3\n    address: 127.0.0.3\n    nice: 3\n"


def stat_nice(pid: int) -> int:
    """Field 19 of /proc/PID/stat (after the command's name, which may hold spaces and parentheses)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.parametrize("value", [None, 0, 10, 19])
def test_check_nice_takes_none_and_0_to_19(value):
    assert check_nice(value) == value


@pytest.mark.parametrize("value", [-1, 20, "5", 5.0, True, [5]])
def test_check_nice_refuses_anything_else(value):
    with pytest.raises(ValueError, match="0 to 19"):
        check_nice(value)


def test_windows_priority_classes():
    assert [priority_class(n) for n in (None, 0)] == [0, 0]
    assert {priority_class(n) for n in range(1, 15)} == {childhandle.BELOW_NORMAL_PRIORITY_CLASS}
    assert {priority_class(n) for n in range(15, 20)} == {childhandle.IDLE_PRIORITY_CLASS}


@pytest.mark.skipif(os.name == "nt", reason="POSIX: a preexec_fn")
def test_popen_arguments_only_for_a_nice():
    assert popen_priority(None) == {}
    assert set(popen_priority(0)) == {"preexec_fn"} and set(popen_priority(12)) == {"preexec_fn"}


def run_child(code: str) -> list[str]:
    """``code`` in a fresh interpreter (never this test process: a nice cannot be taken back unprivileged)."""
    out = subprocess.run([PY, "-c", "from clusterctl.runtime.childhandle import lower_priority\n" + code],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return out.splitlines()


@pytest.mark.skipif(not LINUX, reason="/proc and ioprio: Linux")
def test_the_nice_is_absolute_and_the_io_class_idle_above_0():
    missed, nice, io = run_child("import os, psutil\nos.nice(5)\nm = lower_priority(10)\n"
                                 "print(repr(m)); print(os.getpriority(os.PRIO_PROCESS, 0)); print(psutil.Process().ionice().ioclass)")
    assert (missed, nice, io) == ("''", "10", str(int(psutil.IOPRIO_CLASS_IDLE))), "10, not 5 + 10"
    missed, nice, io = run_child("import os, psutil\nm = lower_priority(0)\n"
                                 "print(repr(m)); print(os.getpriority(os.PRIO_PROCESS, 0)); print(psutil.Process().ionice().ioclass)")
    assert (missed, nice) == ("''", "0") and io != str(int(psutil.IOPRIO_CLASS_IDLE)), "nice 0: the I/O class untouched"
    assert run_child("print(repr(lower_priority(None)))") == ["''"]


@pytest.mark.skipif(not LINUX, reason="ioprio: Linux")
def test_what_cannot_be_set_is_said_never_raised():
    lines = run_child("import os, psutil\n"
                      "def refuse(*a): raise PermissionError(1, 'Operation not permitted')\n"
                      "os.setpriority = refuse\npsutil.Process.ionice = refuse\n"
                      "print(lower_priority(10))")
    assert lines and "nice 10 (Operation not permitted; it stays 0)" in lines[0], lines
    assert "the idle I/O class (PermissionError" in lines[0], lines


@pytest.mark.skipif(not LINUX, reason="/proc and ioprio: Linux")
def test_spawn_starts_the_child_and_its_children_at_the_nice(tmp_path):
    """process.spawn (the exec path) sets it in the child before exec: its own children inherit it."""
    log = tmp_path / "c.log"
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    popen = process.spawn([PY, "-c", code], log_path=log, nice=12)
    try:
        top = psutil.Process(popen.pid)
        deadline = time.monotonic() + 20
        while not top.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in (top, *top.children()):
            assert stat_nice(p.pid) == 12 and p.ionice().ioclass == psutil.IOPRIO_CLASS_IDLE, p
        assert stat_nice(os.getpid()) == 0 and psutil.Process().ionice().ioclass != psutil.IOPRIO_CLASS_IDLE, \
            "never the parent's own"
        assert "could not set" not in log.read_text()
    finally:
        process.kill_tree(process.identify(popen))
        popen.wait(timeout=10)
    plain = process.spawn([PY, "-c", "import time; time.sleep(30)"], log_path=log)
    try:
        assert stat_nice(plain.pid) == 0, "no nice: as its parent"
    finally:
        plain.kill()
        plain.wait(timeout=10)


def test_the_nice_travels_to_a_remote_host_as_a_fact(tmp_path):
    """Top-level `nice:` for ws2, ws3's own overrides it; the scheduler never has one. The agent gets
    `--nice N` (not in the Dask argv), the direct request a "nice" key."""
    from clusterctl.remote import agent, direct
    from clusterctl.remote.launch import agent_argv

    cfg = parse_config(HOSTS + "nice: 10\nworkers:\n  - name: a\n    at: {ws2: 1, ws3: 1}\n  - name: b\n",
                       source=tmp_path / "cluster.yaml")
    sched, ws2, ws3, local = build_plan(cfg, DASK)
    assert (sched.nice, ws2.nice, ws3.nice, local.nice) == (None, 10, 3, 10)
    for spec, want in ((ws2, 10), (ws3, 3)):
        remote = shlex.split(agent_argv(cfg, spec)[-1])
        agent_part, dask_part = remote[:remote.index("--")], remote[remote.index("--"):]
        assert agent_part[agent_part.index("--nice") + 1] == str(want) and "--nice" not in dask_part
        assert agent.parse(remote[3:]).nice == want
        assert direct.start_request(cfg, spec)["nice"] == want
    plain = parse_config(HOSTS.replace("    nice: 3\n", "") + "workers:\n  - name: a\n    at: ws2\n",
                         source=tmp_path / "cluster.yaml")
    spec = build_plan(plain, DASK)[1]
    assert "--nice" not in agent_argv(plain, spec)[-1] and "nice" not in direct.start_request(plain, spec)
    assert agent.parse(["--", "x"]).nice is None


@pytest.mark.parametrize("bad", ["20", "-1", "ten"])
def test_the_agent_refuses_a_bad_nice(bad, capsys):
    from clusterctl.remote import agent

    with pytest.raises(SystemExit):
        agent.parse(["--nice", bad, "--", "x"])
    assert "not a nice value from 0 to 19" in capsys.readouterr().err
