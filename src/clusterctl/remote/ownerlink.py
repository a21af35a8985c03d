"""The head's end of a host's owner watcher (remote/ownerwatch.py runs on the host).

One watcher per host whose `owner:` has a signal: on the head a local process, elsewhere
``ssh host python -m clusterctl.remote.ownerwatch`` over the cluster's shared connection. It
reads its settings as the first line on stdin and writes a JSON line a second; its stdin is its
lifeline (closed: it exits). A reader thread keeps the last line; a watcher that exits or falls
silent is reported as unknown and started again after a delay, so a host that cannot be reached
only makes its owner unknown for a while.

    >>> link = OwnerLink(cfg, "ws1", tag); link.start()          # doctest: +SKIP
    >>> link.latest()                                            # (line as a dict, when it came) or None
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from ..plan.specs import TAG_ENV
from ..plan.ssh import remote_command, ssh_argv
from ..topology import LOCAL_HOST, ClusterConfig
from . import ssh

SILENT_AFTER = 5.0  # seconds without a line: the owner is unknown (a cut link, a stopped host)
RETRY_FIRST, RETRY_MAX = 2.0, 30.0  # seconds before a watcher that ended is started again
MODULE = "clusterctl.remote.ownerwatch"


class OwnerLink:
    def __init__(self, cfg: ClusterConfig, host: str, tag: str, interval: float = 1.0):
        self.cfg, self.host, self.tag, self.interval = cfg, host, tag, interval
        self.proc: subprocess.Popen | None = None
        self.line: dict[str, Any] | None = None
        self.line_at = 0.0  # time.monotonic() of the last line
        self.problem = "watcher starting"  # why there is no fresh line, for people
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name=f"owner-{host}", daemon=True)

    def settings(self) -> dict[str, Any]:
        """Its request; a host with `hours:` and no owner signal gets none (it reports its time zone)."""
        owner = self.cfg.policy(self.host).owner
        a = owner.active_if if owner is not None else None
        return {"command": a and a.command, "command_timeout": a.command_timeout if a else 5.0,
                "input_idle_below": a and a.input_idle_below, "other_cpu_above": a and a.other_cpu_above,
                "tag": self.tag, "interval": self.interval}

    def argv(self) -> list[str]:
        if self.host == LOCAL_HOST or not self.cfg.host(self.host).remote:
            return [sys.executable, "-m", MODULE]
        h = self.cfg.host(self.host)
        full = ssh_argv(h, ssh.secure_control_dir(self.cfg, create=False))
        return [*full, remote_command(["env", f"{TAG_ENV}={self.tag}", h.python, "-m", MODULE])]

    def start(self) -> OwnerLink:
        self.thread.start()
        return self

    def latest(self) -> tuple[dict[str, Any] | None, str]:
        """The last line if it is fresh, else None and why not."""
        with self.lock:
            if self.line is not None and time.monotonic() - self.line_at <= SILENT_AFTER:
                return self.line, ""
            if self.line is not None and self.proc is not None and self.proc.poll() is None:
                return None, f"no word from the owner watcher on {self.host} for {time.monotonic() - self.line_at:.0f} s"
            return None, self.problem

    def cpu(self) -> float | None:
        """The watcher's own CPU seconds (as it reports them), for `status` and the benchmarks."""
        with self.lock:
            return None if self.line is None else self.line.get("cpu")

    def _run(self) -> None:
        while not self.closed.is_set():
            started = time.monotonic()
            self._once()
            if self.closed.is_set():
                return
            self.failures = 0 if time.monotonic() - started > 60 else self.failures + 1
            self.closed.wait(min(RETRY_MAX, RETRY_FIRST * 2 ** min(self.failures - 1, 8)))

    def _once(self) -> None:
        env = {**os.environ, TAG_ENV: self.tag}
        try:
            proc = subprocess.Popen(self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as e:
            self.problem = f"cannot start the owner watcher on {self.host}: {e.strerror or e}"
            return
        with self.lock:
            self.proc = proc
        if self.closed.is_set():  # close() ran while it started
            self._end(proc)
            return
        err: list[bytes] = []
        threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True).start()  # type: ignore[union-attr]
        try:
            proc.stdin.write(json.dumps(self.settings()).encode() + b"\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            for raw in proc.stdout:  # type: ignore[union-attr]
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict):
                    with self.lock:
                        self.line, self.line_at = line, time.monotonic()
        except OSError:
            pass
        self._end(proc)
        text = b"".join(err).decode(errors="replace").strip().splitlines()
        code = proc.returncode
        why = text[-1] if text else f"exit code {code}"
        self.problem = (f"cannot reach {self.host} over SSH: {why}" if code == 255 and self.host != LOCAL_HOST
                        else f"the owner watcher on {self.host} ended: {why}")

    def _end(self, proc: subprocess.Popen) -> None:
        """Close its lifeline; it exits within a second (a remote one with its ssh); killed if not."""
        _close_lifeline(proc)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()

    def stop(self) -> None:
        """Tell it to end (its lifeline closed), without waiting: close() waits."""
        self.closed.set()
        with self.lock:
            proc = self.proc
        if proc is not None:
            _close_lifeline(proc)

    def close(self) -> None:
        self.closed.set()
        with self.lock:
            proc = self.proc
        if proc is not None and proc.poll() is None:
            self._end(proc)
        if self.thread.is_alive():
            self.thread.join(5)


def _close_lifeline(proc: subprocess.Popen) -> None:
    """Close its stdin: the watcher (or its ssh, and so the watcher) ends within a second."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
