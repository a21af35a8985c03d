"""Each tick, every host's owner and hours become edits: pause, retire or stop its workers, or
bring them back (the decisions are yielding.py's; the readings come from remote/ownerlink.py).

Level-triggered: whatever happened in between, each tick makes the workers match their host's
mode. A paused host's workers that became ready since are paused too; a host that yields holds
any worker that would start there (Fleet.held), and its yielded workers start once it is free.
Pausing goes through Dask (the worker's own paused status, on a thread); yielding is the
Reconciler's Yield edit (a graceful retirement that keeps the workers desired)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

from ..topology import LOCAL_HOST, ClusterConfig
from .edits import Edit, Event, Noted, Return, Yield
from .states import ChildState as S
from .yielding import Decision, HostYield, Mode, Reading

if TYPE_CHECKING:
    from .reconcile import Reconciler

Pause = Callable[[list[str], bool], None]  # (worker addresses, paused)
PAUSE_RETRY = 5.0  # seconds before a worker whose pause failed is asked again


def policed_hosts(cfg: ClusterConfig) -> list[str]:
    """The hosts (the head first) with an owner signal or hours: the others always run."""
    out = []
    for name in dict.fromkeys([LOCAL_HOST, *cfg.used_hosts()]):
        p = cfg.policy(name)
        if p.watched or p.hours:
            out.append(name)
    return out


class Owners:
    def __init__(self, cfg: ClusterConfig, held: set[str], pause: Pause,
                 links: Callable[[str, ClusterConfig], Any] | None = None, now: Callable[[], datetime] | None = None):
        self.held = held  # the Fleet's: hosts where no worker may start
        self.pause_fx = pause
        self.wall = now or (lambda: datetime.now(timezone.utc))
        self.make_link = links
        self.hosts = {n: HostYield(n, cfg.policy(n)) for n in policed_hosts(cfg)}
        self.links = {n: links(n, cfg) for n in self.hosts if cfg.policy(n).watched} if links else {}
        self.started = False
        self.paused: dict[str, str] = {}  # worker name -> the address paused through Dask
        self.lock = threading.Lock()
        self.next_try: dict[str, float] = {}  # a worker whose pause failed is tried again from then
        self.shown: dict[str, Any] = {}  # what the ledger shows of each host: written again when it changes
        self.background: Callable[..., None] = _thread  # tests pause inline

    def tick(self, core: Reconciler, now: float) -> list[Edit]:
        edits: list[Edit] = []
        for name, h in self.hosts.items():
            reading = self._reading(name)
            local = self._local_time(reading)
            for d in h.step(reading, local, now):
                if d.event:
                    edits.append(Event(name, d.event, d.detail))
                elif d.kind:
                    edits.append(Event(name, _said(d), d.detail, {"mode": h.mode.value}))
            edits += self._match(core, name, h)
            shown = {k: v for k, v in h.status().items() if k != "owner_why"}
            if shown != self.shown.get(name):
                self.shown[name] = shown
                edits.append(Noted(name))
        free = tuple(c.name for c in core.children.values() if c.state == S.YIELDED and c.spec.at not in self.hosts)
        edits += [Return(free)] if free else []  # their host's rule is gone (`apply`)
        self.held.clear()
        self.held.update(n for n, h in self.hosts.items() if h.holds)
        return edits

    def _reading(self, name: str) -> Reading | None:
        link = self.links.get(name)
        if link is None:
            return None
        line, why = link.latest()
        if line is None:
            return Reading(None, why)
        return Reading(line.get("active"), _why(line), line.get("utcoffset"))

    def _local_time(self, r: Reading | None) -> datetime:
        utc = self.wall()
        if r is not None and isinstance(r.utcoffset, (int, float)):
            return (utc + timedelta(seconds=r.utcoffset)).replace(tzinfo=None)
        return utc.astimezone().replace(tzinfo=None)  # this machine's local time

    def _match(self, core: Reconciler, name: str, h: HostYield) -> list[Edit]:
        """The workers of host ``name`` made to match its mode."""
        mine = [c for c in core.children.values() if c.is_worker and c.spec.at == name and c.name in core.desired]
        if h.mode == Mode.AWAY:
            going = tuple(c.name for c in mine if c.state in (S.PENDING, S.BACKOFF, S.WAITING, S.STARTING, S.RUNNING))
            with self.lock:
                for n in going:
                    self.paused.pop(n, None)
            polite = not (self._policy_stop(h) and h.reason == "owner active")
            return [Yield(going, f"{name} yields: {h.reason}", polite)] if going else []
        back = tuple(c.name for c in mine if c.state == S.YIELDED)
        edits: list[Edit] = [Return(back)] if back else []
        running = {c.name: c.address for c in mine if c.state == S.RUNNING and c.address}
        with self.lock:  # by name and address: a worker started again since is a new one, not paused
            kept = {n: a for n, a in self.paused.items() if running.get(n) == a}
            for n in [n for n in self.paused if n in {c.name for c in mine}]:
                del self.paused[n]
            soon = time.monotonic()
            on = sorted(n for n in running if n not in kept and self.next_try.get(n, 0) <= soon) \
                if h.mode == Mode.PAUSED else []
            off = [] if h.mode == Mode.PAUSED else sorted(kept)
            if h.mode == Mode.PAUSED:
                self.paused.update({**kept, **{n: running[n] for n in on}})
        for names, paused in ((on, True), (off, False)):
            if names:
                self.background(self._pause, [running[n] for n in names], paused, core.fx, names)
        return edits

    @staticmethod
    def _policy_stop(h: HostYield) -> bool:
        return h.policy.owner is not None and h.policy.owner.when_active == "stop"

    def _pause(self, addresses: list[str], paused: bool, fx: Any, names: list[str]) -> None:
        try:
            self.pause_fx(addresses, paused)
        except Exception as e:  # noqa: BLE001 - the next tick of a still-paused host tries again
            with self.lock:
                for n in names if paused else ():
                    self.paused.pop(n, None)
                    self.next_try[n] = time.monotonic() + PAUSE_RETRY
            fx.emit("cluster", "pause-failed" if paused else "unpause-failed", f"{', '.join(names)}: "
                    f"{type(e).__name__}: {e}")

    def status(self) -> dict[str, dict[str, Any]]:
        """Per host: owner and schedule, for `status --json` ``hosts[]``."""
        out = {}
        for name, h in self.hosts.items():
            out[name] = h.status()
            link = self.links.get(name)
            if link is not None:
                line, why = link.latest()
                out[name]["signals"] = (line or {}).get("signals") or {}
                out[name]["watcher_cpu"] = link.cpu()
                out[name]["owner_why"] = out[name]["owner_why"] or why
        return out

    def start(self) -> None:
        self.started = True
        for link in self.links.values():
            link.start()

    def update(self, cfg: ClusterConfig) -> None:
        """`apply` changed an owner or hours rule: each host keeps what it knows and is judged by its new
        rule from the next tick; a watcher whose signals changed is started again with them."""
        policed = policed_hosts(cfg)
        for name in [n for n in self.hosts if n not in policed]:  # no rule left: its workers run
            self.hosts.pop(name)
            self._drop_link(name)
        for name in policed:
            p = cfg.policy(name)
            h = self.hosts.setdefault(name, HostYield(name, p))
            if h.policy.owner != p.owner or not p.watched:
                self._drop_link(name)
            h.policy = p
            if p.watched and name not in self.links and self.make_link is not None:
                self.links[name] = self.make_link(name, cfg)
                if self.started:
                    self.links[name].start()

    def _drop_link(self, name: str) -> None:
        link = self.links.pop(name, None)
        if link is not None:
            link.close()

    def close(self) -> None:
        for link in self.links.values():
            link.close()


def _said(d: Decision) -> str:
    return {"pause": "owner-pause", "unpause": "owner-resume", "retire": "yield", "stop": "yield",
            "return": "yield-over"}[d.kind]


def _why(line: dict[str, Any]) -> str:
    """Which signal said the owner is active (or idle, or unknown), for events and status."""
    parts = []
    for key, s in (line.get("signals") or {}).items():
        if not isinstance(s, dict):
            continue
        if key == "other_cpu" and s.get("cores") is not None:
            parts.append(f"other cpu {s['cores']:.2f} cores")
        elif key == "input" and s.get("idle") is not None:
            parts.append(f"input idle {s['idle']:.0f} s")
        elif s.get("why"):
            parts.append(f"{key}: {s['why']}")
    return "; ".join(parts)


def _thread(fn: Callable[..., None], *args: Any) -> None:
    threading.Thread(target=fn, args=args, name="owner-pause", daemon=True).start()

