"""Run on each watched host (the head too): is the person at this workstation active? A line a second.

Started by the supervisor (remote/ownerlink.py), ``CLUSTERCTL_TAG`` set; standard library only. stdin:
one JSON line, ``{"command": str|null, "command_timeout": 5, "input_idle_below": 300|null,
"other_cpu_above": 0.5|null, "tag": "<cluster tag>", "interval": 1.0}``; stdout: a JSON line per interval,
``{"t": <unix time>, "utcoffset": <seconds>, "active": true|false|null, "signals": {"command": {"active",
"why"}, "input": {"active", "idle", "why"}, "other_cpu": {"active", "cores"}}, "cpu": <own CPU seconds,
children's included>}``, the configured signals only; ``active``: true if one is, else null if one is
unknown, else false. No signal delays a line (the command and loginctl run in threads). stdin's end
ends the watcher at once (0) with its command's process group; so do SIGTERM/SIGHUP/SIGINT and a
broken stdout. A bad first line: one line on stderr, exit 2.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from ..plan.tag import TAG_ENV  # noqa: F401 - the watcher's processes carry it
from .othercpu import CpuMeter, has_tag, outside_ticks, parse_stat  # noqa: F401 - re-exported

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
LOGIND_EVERY = 2.0  # seconds between two loginctl queries
LOGINCTL_TIMEOUT = 10.0
NO_LOGIND = ("not been booted with systemd", "Failed to connect to bus", "Host is down")
SESSION_PROPS = ("Id", "IdleHint", "IdleSinceHint", "Class", "Type", "Active", "Seat", "Remote")
LOCAL_TYPES = ("x11", "wayland", "mir", "tty")
NUMBERS = {"command_timeout": (5.0, 0, 3600), "input_idle_below": (None, 0, 1e9),  # (default, above, at most)
           "other_cpu_above": (None, 0, 1e6), "interval": (1.0, 0.01, 3600)}


class BadRequest(ValueError):
    """The first line on stdin is not a request."""


def parse_request(line: bytes | str) -> dict:
    """The first line on stdin, checked; defaults filled in."""
    try:
        req = json.loads(line)
    except ValueError as e:
        raise BadRequest(f"not JSON: {e}") from None
    if not isinstance(req, dict):
        raise BadRequest("not a JSON object")
    tag, command = req.get("tag"), req.get("command")
    if not isinstance(tag, str) or not tag or "\0" in tag or "\n" in tag:
        raise BadRequest(f"tag must be the cluster's tag, not {tag!r}")
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise BadRequest(f"command must be a shell command or null, not {command!r}")
    out = {"tag": tag, "command": command}
    for key, (default, low, high) in NUMBERS.items():
        v = out[key] = req.get(key) if req.get(key) is not None else default
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not low < v <= high):
            raise BadRequest(f"{key} must be a number above {low:g} and at most {high:g}, not {v!r}")
    return out


def combine(signals: dict) -> bool | None:
    """True if any signal is; else None if any is unknown; else False (so with none, False). A signal
    the host cannot give (``skipped``: no logind there) is left out."""
    values = [s.get("active") for s in signals.values() if not s.get("skipped")]
    return True if True in values else None if None in values else False


def _kill_group(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


class _Runner:
    """A thread that calls once() every ``period`` seconds (after the last call ended) and keeps its
    result; the processes it runs get their own session, and stop() kills the current one's group."""

    def __init__(self, name: str, period: float, result):
        self.period, self.result = period, result
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self.proc: subprocess.Popen | None = None
        self.wake = None  # called when the result's "active" changes
        self.thread = threading.Thread(target=self.loop, name=name, daemon=True)

    def loop(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            result = self.once()
            if self.stopped.is_set():
                return
            changed = isinstance(result, dict) and result.get("active") != self.result.get("active")
            self.result = result
            if changed and self.wake is not None:  # said at once, not at the next line's time
                self.wake()
            self.stopped.wait(max(0.0, started + self.period - time.monotonic()))

    def run(self, argv: list[str], timeout: float, capture: bool = False, **kw) -> tuple[int | None, bytes]:
        """(exit code, output if captured), or (None, b"") past timeout (group killed); OSError: cannot start."""
        out, err = (subprocess.PIPE, subprocess.STDOUT) if capture else (subprocess.DEVNULL, subprocess.DEVNULL)
        with self.lock:
            if self.stopped.is_set():
                return None, b""
            self.proc = proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                                start_new_session=True, **kw)
        try:
            data, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with self.lock:
                _kill_group(proc)
            proc.communicate()
            return None, b""
        finally:
            with self.lock:
                self.proc = None
        return proc.returncode, data or b""

    def stop(self) -> None:
        with self.lock:
            self.stopped.set()
            _kill_group(self.proc)


class CommandSignal(_Runner):
    """``/bin/sh -c command``: exit 0 active, another exit idle, past its timeout unknown (group killed)."""

    def __init__(self, command: str, timeout: float, interval: float):
        super().__init__("command", interval, {"active": None, "why": "not run yet"})
        self.command, self.timeout = command, timeout

    def once(self) -> dict:
        try:
            rc, _ = self.run(["/bin/sh", "-c", self.command], self.timeout)
        except OSError as e:
            return {"active": None, "why": f"cannot run: {e}"}
        if rc is None:
            return {"active": None, "why": f"timed out after {self.timeout:g} s"}
        return {"active": rc == 0, "why": f"exit {rc}" if rc >= 0 else f"killed by signal {-rc}"}

    def signal(self, now: float) -> dict:
        return dict(self.result)


def parse_sessions(text: str) -> list[str]:
    """Session ids from `loginctl list-sessions --no-legend` (the first column, whatever follows)."""
    return [line.split()[0] for line in text.splitlines() if line.split()]


def parse_properties(text: str) -> list[dict[str, str]]:
    """The blocks of `loginctl show-session ID... -p ...`: one dict per session, blank lines between."""
    blocks = [dict(line.split("=", 1) for line in b.splitlines() if "=" in line) for b in text.split("\n\n")]
    return [b for b in blocks if b]


def local_sessions(props: list[dict[str, str]]) -> list[dict[str, str]]:
    """A person's sessions at this machine: class user, not remote, with a seat or graphical/tty; only
    the active ones when some are (a seat shows one session at a time)."""
    mine = [p for p in props if (p.get("Class") == "user" or p.get("Class", "").startswith("user-"))
            and p.get("Remote") != "yes" and (p.get("Seat") or p.get("Type") in LOCAL_TYPES)]
    active = [p for p in mine if p.get("Active") == "yes"]
    return active or mine


def idle_seconds(p: dict[str, str], now: float) -> float | None:
    """Seconds since input in that session: 0 while IdleHint=no; None when idle since an unknown time."""
    if p.get("IdleHint") != "yes":
        return 0.0
    since = int(p["IdleSinceHint"]) if p.get("IdleSinceHint", "").isdigit() else 0
    return max(0.0, now - since / 1e6) if since > 0 else None


class InputSignal(_Runner):
    """Keyboard or mouse input, from logind through ``loginctl`` (no D-Bus library), queried at most
    every 2 s: no loginctl, no logind or no local user session is unknown, and ``why`` says which."""

    def __init__(self, below: float, every: float = LOGIND_EVERY):
        super().__init__("loginctl", every, (None, "not queried yet"))
        self.below = below

    def loginctl(self, *args: str) -> tuple[int | None, str]:
        env = {**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "LC_ALL": "C"}
        rc, out = self.run(["loginctl", *args], LOGINCTL_TIMEOUT, capture=True, env=env)
        return rc, out.decode(errors="replace")

    def once(self) -> tuple[list[dict[str, str]] | None, str]:
        """(the local user sessions' properties, "") or (None, why not)."""
        try:
            rc, out = self.loginctl("list-sessions", "--no-legend")
        except FileNotFoundError:
            return None, "no loginctl on this host"
        except OSError as e:
            return None, f"cannot run loginctl: {e}"
        if rc == 0 and (ids := parse_sessions(out)):
            props = [a for p in SESSION_PROPS for a in ("-p", p)]
            rc, out = self.loginctl("show-session", *ids, *props)  # one that just ended fails alone: rc 1
        if rc is None:
            return None, f"loginctl timed out after {LOGINCTL_TIMEOUT:g} s"
        if rc != 0 and "=" not in out:
            first = (out.strip().splitlines() or [f"exit {rc}"])[0]
            return None, "no logind on this host" if any(s in out for s in NO_LOGIND) else f"loginctl failed: {first}"
        sessions = local_sessions(parse_properties(out))
        return (sessions, "") if sessions else (None, "no user session")

    def signal(self, now: float) -> dict:
        sessions, why = self.result
        if sessions is None and why == "no user session":  # nobody is logged in at the machine
            return {"active": False, "idle": None, "why": why}
        if sessions is None and why.startswith("no "):  # no loginctl, no logind: the host cannot tell
            return {"active": None, "idle": None, "why": why, "skipped": True}
        if sessions is None:
            return {"active": None, "idle": None, "why": why}
        idles = [(idle_seconds(p, now), p.get("Id", "?")) for p in sessions]
        known = [(i, s) for i, s in idles if i is not None]
        if not known:
            return {"active": False, "idle": None, "why": f"session {idles[0][1]} idle since an unknown time"}
        idle, sid = min(known)
        return {"active": idle < self.below, "idle": round(idle, 1), "why": f"session {sid}: input {idle:.0f} s ago"}


class Watcher:
    def __init__(self, req: dict, stdin: int = 0, stdout: int = 1):
        self.req, self.stdin, self.stdout = req, stdin, stdout
        self.command = CommandSignal(req["command"], req["command_timeout"], req["interval"]) if req["command"] else None
        self.input = InputSignal(req["input_idle_below"]) if req["input_idle_below"] is not None else None
        cpu = CpuMeter(req["tag"], req["other_cpu_above"]) if req["other_cpu_above"] is not None else None
        self.signals = {k: v for k, v in (("command", self.command), ("input", self.input), ("other_cpu", cpu)) if v}

    def line(self) -> dict:
        now = time.time()
        signals = {name: s.signal(now) for name, s in self.signals.items()}
        t = os.times()
        return {"t": round(now, 3), "utcoffset": time.localtime(now).tm_gmtoff, "active": combine(signals),
                "signals": signals, "cpu": round(t.user + t.system + t.children_user + t.children_system, 3)}

    def run(self) -> int:
        """Lines until stdin ends or stdout breaks (0); a signal ends it too (SystemExit)."""
        woken, wake = os.pipe()
        for runner in filter(None, (self.command, self.input)):
            runner.wake = lambda: os.write(wake, b"!")
            runner.thread.start()
        interval, due = self.req["interval"], time.monotonic()
        while True:
            try:  # (a line is far below PIPE_BUF: one write, whole)
                os.write(self.stdout, json.dumps(self.line(), separators=(",", ":")).encode() + b"\n")
            except OSError:  # the reader went away
                return 0
            due += interval if due <= time.monotonic() else 0
            while (left := due - time.monotonic()) > 0:
                ready = select.select([self.stdin, woken], [], [], left)[0]
                if self.stdin in ready and not os.read(self.stdin, 65536):
                    return 0  # the lifeline: the supervisor (or its ssh) is gone
                if woken in ready:  # a signal changed: a line now, the next on time
                    os.read(woken, 4096)
                    break
            if left < -interval:  # late (suspended, starved): the next one a full interval on
                due = time.monotonic()

    def close(self) -> None:
        for runner in filter(None, (self.command, self.input)):
            runner.stop()


def read_line(fd: int, limit: int = 1 << 20) -> bytes:
    data = b""
    while b"\n" not in data and len(data) <= limit:
        if not (chunk := os.read(fd, 65536)):
            raise BadRequest("no newline before stdin closed" if data else "stdin closed before the first line")
        data += chunk
    return data.split(b"\n", 1)[0]


def main() -> int:
    try:
        req = parse_request(read_line(0))
    except BadRequest as e:
        print(f"clusterctl.remote.ownerwatch: bad first line on stdin: {e}", file=sys.stderr, flush=True)
        return 2
    os.environ[TAG_ENV] = req["tag"]  # the command and loginctl carry it: inside the cluster
    watcher = Watcher(req)
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda *_: sys.exit(0))
        return watcher.run()
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second one must not stop the cleanup
        watcher.close()


if __name__ == "__main__":
    sys.exit(main())
