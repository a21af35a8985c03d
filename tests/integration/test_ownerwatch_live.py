"""The owner watcher (remote/ownerwatch.py) as real processes: CPU of processes outside the cluster,
the command signal, its lifeline, and a host with a process table of its own reached over ssh.

The machine is shared (other tests, other users): every CPU comparison here is relative (two
watchers side by side, or a watcher against a burner's own CPU time as psutil reads it), and
deadlines only catch hangs."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Callable

import psutil
import pytest

import netns
from conftest import kill_all, wait_for
from clusterctl.plan.tag import TAG_ENV

pytestmark = pytest.mark.integration
PY = sys.executable
WATCH = [PY, "-m", "clusterctl.remote.ownerwatch"]
# Spins until its stdin closes (so one started over ssh ends with its session too).
BURN = ("import os, sys, threading\n"
        "threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()\n"
        "while True: pass\n")


def env_with(tag: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != TAG_ENV}
    return env if tag is None else {**env, TAG_ENV: tag}


class Watch:
    """A watcher process; its lines, as they come, in ``lines`` (a thread reads them)."""

    def __init__(self, started: list, settings: dict, argv: list[str] = WATCH, tag: str | None = None):
        self.interval = settings.get("interval", 1.0)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env_with(tag or settings["tag"]), start_new_session=True)
        started.append(self.proc)
        self.lines: list[dict] = []
        self.ended = False
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.proc.stdin.write(json.dumps(settings).encode() + b"\n")
        self.proc.stdin.flush()

    def _read(self) -> None:
        try:
            for raw in self.proc.stdout:
                with self.cond:
                    self.lines.append(json.loads(raw))
                    self.cond.notify_all()
        except (OSError, ValueError):  # the test closed stdout on purpose
            pass
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def line(self, i: int, timeout: float = 30) -> dict:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.lines) > i or self.ended, timeout) or len(self.lines) <= i:
                raise AssertionError(f"no line {i} from the watcher in {timeout:.0f} s (ended: {self.ended}; "
                                     f"stderr: {self.stderr()!r})")
            return self.lines[i]

    def stderr(self) -> str:
        return self.proc.stderr.read().decode(errors="replace") if self.ended and self.proc.poll() is not None else ""

    def until(self, pred: Callable[[dict], bool], after: float, lines: int, what: str) -> dict:
        """The first line written after ``after`` (time.time()) that satisfies pred, within ``lines`` such lines."""
        seen = []
        i = 0
        while len(seen) < lines:
            line = self.line(i, timeout=30 + lines * self.interval)
            i += 1
            if line["t"] <= after:
                continue
            if pred(line):
                return line
            seen.append(line)
        raise AssertionError(f"no {what} within {lines} lines: {json.dumps(seen[-3:])}")

    def window(self, t0: float, t1: float) -> list[dict]:
        """The lines that measured (t0, t1]: written after t0 + one interval, up to t1."""
        with self.cond:
            self.cond.wait_for(lambda: self.lines and self.lines[-1]["t"] > t1 or self.ended, 30)
            return [x for x in self.lines if t0 + self.interval < x["t"] <= t1 + 0.05]

    def close(self, timeout: float = 10) -> int:
        self.proc.stdin.close()
        return self.proc.wait(timeout=timeout)


def cores(lines: list[dict]) -> float:
    values = [x["signals"]["other_cpu"]["cores"] for x in lines]
    assert values and None not in values, lines
    return sum(values) / len(values)


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def burner_cores(pid: int, seconds: float) -> tuple[float, float, float]:
    """(t0, t1, the burner's cores over that span): a measuring window of about ``seconds``."""
    t0, c0 = time.time(), cpu_seconds(pid)
    time.sleep(seconds)
    t1, c1 = time.time(), cpu_seconds(pid)
    return t0, t1, (c1 - c0) / (t1 - t0)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def processes(pids) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return found


def argv_of(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


@pytest.fixture
def started():
    """Everything a test starts goes here; afterwards each is killed by pid, with its tree."""
    procs: list[subprocess.Popen] = []
    yield procs
    tree = []
    for p in procs:
        try:
            top = psutil.Process(p.pid)
            tree += [top, *top.children(recursive=True)]
        except psutil.Error:
            pass
    kill_all(tree)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def burner(started: list, tag: str | None) -> subprocess.Popen:
    proc = subprocess.Popen([PY, "-c", BURN], stdin=subprocess.PIPE, env=env_with(tag))
    started.append(proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=10)


def test_processes_outside_the_cluster_count_and_the_clusters_do_not(started):
    tag, other = f"ow-{uuid.uuid4().hex[:8]}", f"ow-other-{uuid.uuid4().hex[:8]}"
    settings = {"command": None, "input_idle_below": None, "other_cpu_above": 0.5, "interval": 0.5}
    # started together, their lines come in step: both measure the same spans of the same load
    ours = Watch(started, {**settings, "tag": tag})  # this cluster's watcher
    theirs = Watch(started, {**settings, "tag": other})  # another cluster's: ours is outside it
    first = ours.line(0)
    assert first["signals"] == {"other_cpu": {"active": None, "cores": None, "why": "first line: no interval measured yet"}}
    assert first["active"] is None and set(first) == {"t", "utcoffset", "active", "signals", "cpu"}

    # untagged: someone else's work
    burn = burner(started, None)
    line = ours.until(lambda x: x["signals"]["other_cpu"]["cores"] >= 0.8, time.time(), 40, "0.8 cores or more")
    assert line["signals"]["other_cpu"]["active"] is True and line["active"] is True
    t0, t1, alone = burner_cores(burn.pid, 4)
    ours_a, theirs_a = cores(ours.window(t0, t1)), cores(theirs.window(t0, t1))
    assert ours_a >= 0.8 * alone, (ours_a, alone)  # the burner is in it...
    assert abs(ours_a - theirs_a) < 0.4 * alone + 0.1, (ours_a, theirs_a, alone)  # ...for both
    stop(burn)

    # tagged: this cluster's own work, outside only for the other cluster's watcher
    burn = burner(started, tag)
    time.sleep(2 * ours.interval)
    t0, t1, alone = burner_cores(burn.pid, 4)
    ours_b, theirs_b = cores(ours.window(t0, t1)), cores(theirs.window(t0, t1))
    assert alone > 0.2, "the burner barely ran: the machine is too busy to tell"
    assert theirs_b - ours_b >= 0.5 * alone, (ours_b, theirs_b, alone)
    print(f"ownerwatch: untagged burner {ours_a:.2f} / {theirs_a:.2f} cores (ours / another cluster's watcher), "
          f"tagged {ours_b:.2f} / {theirs_b:.2f}, the burner alone {alone:.2f}")
    stop(burn)
    assert ours.close() == 0 and theirs.close() == 0


def test_the_command_signal_follows_a_file_and_a_hung_command_is_killed(started, tmp_path):
    flag = tmp_path / "busy"
    w = Watch(started, {"command": f"test -e '{flag}'", "command_timeout": 5, "input_idle_below": None,
                        "other_cpu_above": None, "tag": "ow-cmd", "interval": 1.0})
    assert w.line(0)["signals"] == {"command": {"active": None, "why": "not run yet"}}
    w.until(lambda x: x["signals"]["command"] == {"active": False, "why": "exit 1"} and x["active"] is False,
            0, 10, "idle (exit 1)")
    flag.touch()
    w.until(lambda x: x["signals"]["command"] == {"active": True, "why": "exit 0"} and x["active"] is True,
            time.time(), 3, "active (exit 0) after the file came")
    flag.unlink()
    w.until(lambda x: x["signals"]["command"]["active"] is False, time.time(), 3, "idle after the file went")
    assert w.close() == 0

    hung = Watch(started, {"command": "sleep 30", "command_timeout": 1, "tag": "ow-cmd", "interval": 0.5})
    sleep = wait_for(lambda: [p for p in psutil.Process(hung.proc.pid).children(recursive=True)
                              if p.name() == "sleep"], 20, what="the command's sleep")[0]
    line = hung.until(lambda x: x["signals"]["command"]["why"] != "not run yet", 0, 30, "the first result")
    assert line["signals"]["command"] == {"active": None, "why": "timed out after 1 s"} and line["active"] is None
    wait_for(lambda: gone(sleep.pid), 10, what=f"the timed-out command's sleep ({sleep.pid}) to go")
    assert hung.close() == 0


@pytest.mark.parametrize("how", ["stdin closed", "SIGTERM", "stdout closed"])
def test_the_watcher_ends_at_once_with_its_command(started, how):
    w = Watch(started, {"command": "sleep 30", "command_timeout": 60, "input_idle_below": 300,
                        "other_cpu_above": 0.5, "tag": "ow-life", "interval": 0.5})
    w.line(1)
    kids = wait_for(lambda: [p for p in psutil.Process(w.proc.pid).children(recursive=True) if p.name() == "sleep"],
                    20, what="the command's sleep")
    tree = [psutil.Process(w.proc.pid), *psutil.Process(w.proc.pid).children(recursive=True)]
    assert kids[0] in tree
    if how == "stdin closed":
        w.proc.stdin.close()
    elif how == "SIGTERM":
        w.proc.send_signal(signal.SIGTERM)
    else:
        w.proc.stdout.close()  # its next line finds no reader
    assert w.proc.wait(timeout=3) == 0, w.proc.stderr.read()
    wait_for(lambda: all(gone(p.pid) for p in tree), 10, what="the watcher's children to go")
    assert b"Traceback" not in w.proc.stderr.read()


def test_time_to_the_first_line(started):
    """Not a timing assert (the machine is shared): the first line comes, and how soon is printed."""
    took = []
    for _ in range(3):
        t = time.monotonic()
        w = Watch(started, {"command": "true", "input_idle_below": 300, "other_cpu_above": 0.5, "tag": "ow-start"})
        w.line(0)
        took.append(time.monotonic() - t)
        assert w.close() == 0
    print(f"ownerwatch: first line after {min(took) * 1000:.0f} ms (best of 3)")


# -- a host with its own process table -------------------------------------------------------------

@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    yield from netns.netns_fleet(tmp_path_factory, hosts=1, own_pids=True)


@pytest.mark.timeout(180)
def test_a_host_with_its_own_pid_namespace_sees_only_its_own_processes(fleet, started):
    h = fleet.hosts[0]
    before = set(fleet.pids(h))
    tag = f"ow-ns-{uuid.uuid4().hex[:8]}"
    settings = {"command": None, "input_idle_below": None, "other_cpu_above": 0.5, "tag": tag, "interval": 0.5}
    try:
        remote = Watch(started, settings, argv=fleet.ssh_argv(h, "env", f"{TAG_ENV}={tag}", *WATCH))
        assert remote.line(0, timeout=60)["signals"]["other_cpu"]["cores"] is None
        inside = fleet.ssh(h, "ls /proc | grep -c '^[0-9]'")
        assert inside.returncode == 0 and int(inside.stdout) < 30, inside  # a few sshd, a shell, the watcher

        # a burner on the head: not on the host
        head = burner(started, None)
        time.sleep(2 * remote.interval)
        t0, t1, alone = burner_cores(head.pid, 4)
        seen = cores(remote.window(t0, t1))
        assert alone > 0.2, "the burner barely ran: the machine is too busy to tell"
        assert seen < 0.3 * alone, (seen, alone)
        print(f"ownerwatch: a burner on the head ({alone:.2f} cores): {seen:.2f} on the host")
        stop(head)

        # a burner on the host (through its ssh): seen there
        ssh = subprocess.Popen(fleet.ssh_argv(h, "exec " + shlex.join([PY, "-c", BURN])), stdin=subprocess.PIPE,
                               env=env_with(None))
        started.append(ssh)
        pid = wait_for(lambda: [p for p in set(fleet.pids(h)) - before if argv_of(p)[1:3] == ["-c", BURN]], 30,
                       what="the host's burner")[0]
        remote.until(lambda x: x["signals"]["other_cpu"]["cores"] >= 0.2, time.time(), 40, "the host's burner")
        t0, t1, alone = burner_cores(pid, 4)
        seen = cores(remote.window(t0, t1))
        assert alone > 0.2, "the burner barely ran: the machine is too busy to tell"
        assert seen >= 0.7 * alone, (seen, alone)
        print(f"ownerwatch: a burner on the host ({alone:.2f} cores): {seen:.2f} on the host")
        ssh.stdin.close()  # its session ends: the burner reads EOF and exits
        ssh.wait(timeout=20)
        wait_for(lambda: gone(pid), 10, what="the host's burner to end with its session")
        assert remote.close(timeout=20) == 0
    finally:
        # what ran on the host (its sessions' sshd processes, the watcher, the burner), by pid
        kill_all(processes(set(fleet.pids(h)) - before))
    wait_for(lambda: set(fleet.pids(h)) == before, 10, what="the host to be back to its sshd")
