"""Where a host's fork server listens for the head (remote/wire.py), while it surely does; and `down`'s
sweep through it. remote/direct.py starts processes through these routes.

A route is used only while its server is surely alive: one of its processes runs, or it went quiet
less than IDLE - SAFETY seconds ago (the server leaves after IDLE idle seconds). Otherwise, and after
any failure to reach it, the agent starts the process (and, if need be, a new server).
"""

from __future__ import annotations

import os
import secrets
import select
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..plan.ssh import control_dir, ssh_argv
from . import wire
from .forkserver import IDLE

if TYPE_CHECKING:
    from ..topology import ClusterConfig

SAFETY = 3.0  # seconds of the server's idle time not relied on


@dataclass
class Route:
    host: str
    port: int
    token: str
    quiet_since: float = field(default_factory=time.monotonic)
    children: list[Any] = field(default_factory=list)
    dead: str = ""  # why it may not be used any more

    def attach(self, child: Any) -> None:
        with _lock:
            self.children.append(child)

    def usable(self, now: float | None = None) -> bool:
        if self.dead:
            return False
        self.children = [c for c in self.children if c.returncode is None]
        now = time.monotonic() if now is None else now
        return bool(self.children) or now - self.quiet_since < IDLE - SAFETY


_routes: dict[tuple[str, str], Route] = {}
_lock = threading.Lock()


def learn(tag: str, host: str, info: Any) -> Route | None:
    """Record the route `probe install --warm` reported for ``host`` (anything else forgets it)."""
    with _lock:
        if isinstance(info, dict) and isinstance(info.get("port"), int) and isinstance(info.get("token"), str):
            route = _routes[(tag, host)] = Route(host, info["port"], info["token"])
            return route
        _routes.pop((tag, host), None)
        return None


def fail(tag: str, host: str, why: str) -> None:
    """A start through the host's route failed before its process existed: no more starts through it
    until the host is prepared or revived again (its processes go through agents meanwhile)."""
    with _lock:
        r = _routes.get((tag, host))
        if r is not None:
            r.dead = why


def forget(tag: str, host: str | None = None) -> None:
    with _lock:
        for key in [k for k in _routes if k[0] == tag and host in (None, k[1])]:
            del _routes[key]


def route(tag: str, host: str) -> Route | None:
    """The host's route if a process may be started through it now (not with CLUSTERCTL_DIRECT=0)."""
    if os.name == "nt" or os.environ.get("CLUSTERCTL_DIRECT", "1") == "0":  # (a Windows head: no select on pipes)
        return None
    with _lock:
        r = _routes.get((tag, host))
        return r if r is not None and r.usable() else None


def forward_argv(cfg: ClusterConfig, host: str, route: Route) -> list[str]:
    """ssh's stdin and stdout forwarded to the route's port, as a channel of the host's shared connection."""
    argv = ssh_argv(cfg.host(host), control_dir(cfg))
    argv[argv.index("ControlMaster=auto")] = "ControlMaster=no"
    argv[argv.index("--"):argv.index("--")] = ["-W", f"127.0.0.1:{route.port}"]
    return argv


def sweep(cfg: ClusterConfig, tag: str, host: str, grace: float) -> bool:
    """`down`'s sweep of ``host`` through its fork server (which then leaves), rather than an ssh
    session running the probe: True if the server did it, False if the caller must sweep over ssh."""
    r = route(tag, host)
    if r is None:
        return False
    p = subprocess.Popen(forward_argv(cfg, host, r), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        hello = secrets.token_hex(16)
        p.stdin.write(wire.line({"hello": hello}))  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
        auth = wire.answer(r.token, hello, _read_line(p, time.monotonic() + 10))
        if auth is None:
            return False
        p.stdin.write(wire.line({"auth": auth, "sweep": True, "grace": grace}))  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
        return "swept" in _read_line(p, time.monotonic() + grace + 15)
    except (OSError, ValueError, KeyError, TimeoutError):
        return False
    finally:
        r.dead = "swept"
        try:
            p.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()  # type: ignore[union-attr]


def _read_line(p: subprocess.Popen, deadline: float) -> dict:
    import json

    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
            raise TimeoutError("no answer")
        chunk = os.read(p.stdout.fileno(), 65536)  # type: ignore[union-attr]
        if not chunk or len(data) > wire.MAX_LINE:
            raise ValueError("the connection ended")
        data += chunk
    msg = json.loads(data.split(b"\n", 1)[0])
    if not isinstance(msg, dict):
        raise ValueError("not an object")
    return msg
