"""Hosts come and go: a workstation that cannot be reached is a state, not a crash.

A remote child whose ssh fails (exit 255) or a host that does not answer at `up`
makes the host `unreachable`: its workers wait for it without spending their
restart budget. It is probed (ssh with a short ConnectTimeout, on a thread) with
capped exponential backoff for as long as the cluster runs; when it answers, what
this cluster left there is swept first (never a duplicate worker name), it is
`back`, and the reconcile loop starts its workers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .states import HostState

FIRST_RETRY = 1.0  # seconds before the first probe of a host just lost


@dataclass
class Host:
    name: str
    address: str
    required: bool = False
    retry_max: float = 30.0
    state: HostState = HostState.REACHABLE
    since: float = field(default_factory=time.time)  # wall clock, for people
    last_error: str = ""
    attempts: int = 0
    next_probe: float = 0.0  # supervisor clock
    probing: bool = False  # a probe thread runs for it
    answer: tuple[str | None] | None = None  # set by the probe thread: (error or None,)
    # A reachable host asked whether it answers (a worker there went silent): (asked at, answered?)
    # once the check thread is done; asked at, with None, while it runs.
    check: tuple[float, bool | None] | None = None

    def delay(self) -> float:
        return min(self.retry_max, FIRST_RETRY * 2 ** min(self.attempts, 16))


class Fleet:
    """The remote hosts' states; the reconcile loop asks it whether a host may run processes."""

    def __init__(self, hosts: list[Host], fx: Any, clock: Callable[[], float]):
        self.hosts = {h.name: h for h in hosts}
        self.fx, self.clock = fx, clock
        self.background: Callable[..., None] = _thread  # tests probe inline
        self.held: set[str] = set()  # hosts (the head too) whose workers yield: set by owners.py

    def usable(self, name: str, remote: bool = True, worker: bool = True) -> bool:
        """Processes may start there: it answers (a remote one), and for a worker, the host does not
        yield to its owner or its hours (the scheduler never yields: the cluster needs it)."""
        if worker and name in self.held:
            return False
        h = self.hosts.get(name) if remote else None
        return h is None or h.state not in (HostState.UNREACHABLE, HostState.PREPARING)

    def preparing(self, names: list[str]) -> None:
        """At `up`, while its files and versions are checked on a thread: no process starts there yet."""
        for name in names:
            if name in self.hosts:
                self.hosts[name].state = HostState.PREPARING

    def prepared(self, name: str) -> None:
        h = self.hosts.get(name)
        if h is not None and h.state == HostState.PREPARING:
            h.state, h.since = HostState.REACHABLE, time.time()

    def lost(self, name: str, why: str) -> bool:
        """The host failed us; True when this is news (it was reachable until now)."""
        h = self.hosts.get(name)
        if h is not None and h.state == HostState.PREPARING:
            h.state = HostState.REACHABLE  # it was never lost: it did not answer at `up`
        if h is None or h.state == HostState.UNREACHABLE:
            if h is not None:
                h.last_error = why
            return False
        h.state, h.since, h.last_error = HostState.UNREACHABLE, time.time(), why
        h.attempts, h.next_probe = 0, self.clock() + FIRST_RETRY
        self.fx.emit(name, "host-unreachable", why)
        return True

    def tick(self) -> list[str]:
        """Start due probes and collect answers; returns the hosts that came back."""
        back = []
        now = self.clock()
        for h in self.hosts.values():
            if h.state != HostState.UNREACHABLE:
                continue
            if h.answer is not None:
                (error,), h.answer, h.probing = h.answer, None, False
                if error is None:
                    away = time.time() - h.since
                    h.state, h.since, h.attempts, h.last_error = HostState.BACK, time.time(), 0, ""
                    self.fx.emit(h.name, "host-back", f"answers again after {away:.0f} s; swept, starting its workers")
                    back.append(h.name)
                    continue
                h.attempts += 1
                h.last_error = error
                h.next_probe = now + h.delay()
            if not h.probing and now >= h.next_probe:
                h.probing = True
                self.background(self._probe, h)
        return back

    def _probe(self, h: Host) -> None:
        """On its own thread: ssh there; when it answers, sweep what this cluster left there."""
        try:
            error = self.fx.probe_host(h.name)
            if error is None:
                self.fx.sweep_host(h.name)
        except Exception as e:  # noqa: BLE001 - a probe that fails says why, and is tried again
            error = f"{type(e).__name__}: {e}"
        h.answer = (error,)

    def answers(self, name: str, since: float) -> bool | None:
        """Does the host answer a fresh ssh connection, asked no earlier than ``since``? None while
        that is being asked (started here, on a thread). A worker that went silent there is hung
        if it does; if it does not, the silence may be a cut link, which ssh's keep-alives judge."""
        h = self.hosts.get(name)
        if h is None:
            return True
        if h.check is not None and h.check[0] >= since:
            return h.check[1]
        if h.check is None or h.check[1] is not None:  # none running: ask now
            h.check = (self.clock(), None)
            self.background(self._check, h, h.check[0])
        return h.check[1]  # (None until the thread answers; tests answer inline)

    def _check(self, h: Host, asked: float) -> None:
        try:
            ok = self.fx.probe_host(h.name) is None
        except Exception:  # noqa: BLE001 - a check that fails is a host that did not answer
            ok = False
        h.check = (asked, ok)

    def settled(self, name: str) -> None:
        """Its workers run again: back to plain reachable."""
        h = self.hosts.get(name)
        if h is not None and h.state == HostState.BACK:
            h.state, h.since = HostState.REACHABLE, time.time()

    def unreachable(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.state == HostState.UNREACHABLE]


class Preparation:
    """`fleet.prepare` (files, versions, reachability) on a thread while the local scheduler starts:
    it needs nothing from the other hosts, and each of them costs an ssh connection and a Python."""

    def __init__(self, prepare: Callable[[], dict[str, str]], fleet: Fleet):
        self.fleet, self.outcome = fleet, None
        self.done = threading.Event()
        self.began, self.took = time.monotonic(), 0.0
        fleet.preparing(list(fleet.hosts))
        threading.Thread(target=self._run, args=(prepare,), name="prepare-hosts", daemon=True).start()

    def _run(self, prepare: Callable[[], dict[str, str]]) -> None:
        try:
            self.outcome = prepare()
        except Exception as e:  # noqa: BLE001 - raised on the loop's thread by collect()
            self.outcome = e
        self.took = time.monotonic() - self.began
        self.done.set()

    def collect(self) -> bool:
        """On the loop's thread: True once applied (hosts that did not answer are unreachable, the
        others may run processes); re-raises what prepare raised (`up` fails with it)."""
        if not self.done.is_set():
            return False
        if isinstance(self.outcome, Exception):
            raise self.outcome
        for name, why in (self.outcome or {}).items():
            self.fleet.lost(name, why)
        for name in list(self.fleet.hosts):
            self.fleet.prepared(name)
        return True


def _thread(fn: Callable[..., None], *args: Any) -> None:
    threading.Thread(target=fn, args=args, name="host-probe", daemon=True).start()
