"""Live views on a real cluster: `status --watch` under a pseudo-terminal while workers come and
go, `logs --all -f` and `events -f` while a worker is added. Every follower started here is
stopped by its pid (its whole session) in a finally."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time

from conftest import CLI, wait_for

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def start(cluster, *args: str, **popen) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    env.pop("CLUSTERCTL_CONFIG", None)
    env.update(popen.pop("env", {}))
    return subprocess.Popen([*CLI, *args, "--file", str(cluster.config)], cwd=cluster.root, env=env,
                            start_new_session=True, **popen)


def stop(proc: subprocess.Popen) -> None:
    """The follower and anything it started, by its pid (it leads its own session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)


def interrupt(proc: subprocess.Popen, timeout: float = 10) -> int:
    """Ctrl-C: SIGINT to the follower; its exit code."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout)


def pid_of(cluster, name: str) -> int:
    return next(p["pid"] for p in cluster.status()["processes"] if p["name"] == name)


class PtyReader:
    """The output of a process on a pseudo-terminal (200 x 60), read as it comes."""

    def __init__(self):
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 200, 0, 0))
        self.data = bytearray()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        while not self.done.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the other side closed
                    return
                if not chunk:
                    return
                self.data += chunk

    def text(self) -> str:
        return ANSI.sub("", bytes(self.data).decode("utf-8", "replace"))

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        os.close(self.master)


def test_status_watch_in_a_terminal_follows_workers_coming_and_going(cluster):
    cluster.cli("up", check=True)
    term = PtyReader()
    env = {"TERM": "xterm-256color", "NO_COLOR": ""}
    proc = start(cluster, "status", "--watch", "--interval", "0.5", stdin=term.slave, stdout=term.slave,
                 stderr=term.slave, env=env)
    os.close(term.slave)
    term.thread.start()
    try:
        wait_for(lambda: "default-1" in term.text(), 20, what="the first frame")
        assert "\x1b[" in term.data.decode("utf-8", "replace"), "a terminal gets the live (escape-coded) view"
        cluster.cli("worker", "add", check=True)  # default-2
        os.kill(pid_of(cluster, "default-0"), signal.SIGKILL)
        row = r"{name}\s+worker\s+default\s+\S+\s+\d+\s+running\s+{restarts}\s"
        wait_for(lambda: re.search(row.format(name="default-2", restarts=0), term.text()), 30,
                 what="the added worker's row, running")
        wait_for(lambda: re.search(row.format(name="default-0", restarts=1), term.text()), 30,
                 what="the killed worker's row, running again after 1 restart")
        assert re.search(r"default-0\s+exited\s+killed by SIGKILL", term.text()), "the recent events show the kill"
        assert interrupt(proc) == 0
        time.sleep(0.3)  # the last bytes
        assert "Traceback" not in term.text() and "interrupted" not in term.text()
    finally:
        stop(proc)
        term.close()


def test_status_watch_without_a_terminal_prints_snapshots_and_ends_when_the_cluster_stops(cluster, tmp_path):
    nothing = cluster.cli("status", "--watch")
    assert nothing.returncode == 3 and len(nothing.stderr.strip().splitlines()) == 1, nothing.stderr
    assert "not running" in nothing.stderr and "Traceback" not in nothing.stderr
    cluster.cli("up", check=True)
    out = tmp_path / "watch.out"
    with open(out, "wb") as sink:
        proc = start(cluster, "status", "--watch", "--interval", "0.5", stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: out.read_text().count("--- ") >= 2, 20, what="two snapshots")
        cluster.cli("down", check=True)
        assert proc.wait(20) == 0
        text = out.read_text()
        assert "\x1b[" not in text, "no escape codes into a pipe"
        assert text.rstrip().endswith("cluster 'test' stopped"), text[-500:]
        assert re.search(r"^default-1\s+worker\s+default\s+\S+\s+\d+\s+running", text, re.M)
    finally:
        stop(proc)


def test_logs_all_follow_merges_every_process_and_picks_up_an_added_worker(cluster, tmp_path):
    cluster.cli("up", check=True)
    out = tmp_path / "logs.out"
    with open(out, "wb") as sink:
        proc = start(cluster, "logs", "--all", "-f", "--tail", "5", stdout=sink, stderr=subprocess.STDOUT)
    try:
        def prefixed(name: str):
            return re.search(rf"^{re.escape(name)}\s+\| \S", out.read_text(), re.M)

        for name in ("supervisor", "scheduler", "default-0", "default-1"):
            wait_for(lambda: prefixed(name), 20, what=f"lines of {name}")
        cluster.cli("worker", "add", check=True)
        wait_for(lambda: re.search(r"^default-2\s+\| .*Registered to:", out.read_text(), re.M), 20,
                 what="the added worker's lines, from its first")
        assert re.search(r"^default-2\s+\| --- .* start", out.read_text(), re.M), "its log from the first line"
        assert re.search(r"^supervisor\s+\| .*default-2\s+started", out.read_text(), re.M)
        assert interrupt(proc) == 0
        text = out.read_text()
        assert "\x1b[" not in text and "Traceback" not in text
        assert len(re.findall(r"^default-2\s+\| --- .* start", text, re.M)) == 1, "its first line once"
    finally:
        stop(proc)


def test_events_follow_shows_a_worker_added_while_following(cluster, tmp_path):
    cluster.cli("up", check=True)
    plain, as_json = tmp_path / "events.out", tmp_path / "events.json"
    with open(plain, "wb") as a, open(as_json, "wb") as b:
        procs = [start(cluster, "events", "-f", "-n", "3", stdout=a, stderr=subprocess.STDOUT),
                 start(cluster, "events", "-f", "--json", "-n", "0", stdout=b, stderr=subprocess.STDOUT)]
    try:
        wait_for(lambda: plain.read_text().count("\n") >= 3, 20, what="the last 3 events")
        time.sleep(1.0)  # both followers are running
        cluster.cli("worker", "add", check=True)
        wait_for(lambda: re.search(r"default-2\s+started\s+pid \d+", plain.read_text()), 20, what="default-2 started")
        wait_for(lambda: '"default-2"' in as_json.read_text(), 20, what="default-2 in the JSON stream")
        assert [interrupt(p) for p in procs] == [0, 0]
        records = [json.loads(line) for line in as_json.read_text().splitlines()]  # one object per line
        first = next(r for r in records if r["process"] == "default-2")
        assert first["event"] == "started" and first["pid"] == pid_of(cluster, "default-2")
    finally:
        for p in procs:
            stop(p)
