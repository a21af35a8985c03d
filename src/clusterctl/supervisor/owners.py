"""Each tick, every host's owner and hours become edits: pause, retire or stop its workers, or
bring them back (the decisions are yielding.py's; the readings come from remote/ownerlink.py).

Level-triggered: whatever happened in between, each tick makes the workers match their host's
mode. A paused host's workers that became ready since are paused too; a host that yields holds
any worker that would start there (Fleet.held), and its yielded workers start once it is free.
Pausing goes through Dask (the worker's own paused status, on a thread); yielding is the
Reconciler's Yield edit (a graceful retirement that keeps the workers desired)."""

from __future__ import annotations

import queue
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

from ..topology import LOCAL_HOST, ClusterConfig
from .edits import Edit, Event, Noted, Return, Yield
from .states import ChildState as S
from .yielding import HostYield, Mode, Reading

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
        # A watcher on every policed host: its owner's signals, and its time zone for `hours:`.
        self.links = {n: links(n, cfg) for n in self.hosts} if links else {}
        self.offsets: dict[str, float] = {}  # each host's last reported UTC offset
        self.started = False
        # (worker name, its address, paused?) -> when it was last asked (time.monotonic()): asked again
        # only after PAUSE_RETRY, while Dask's view (the scheduler's answer) still disagrees
        self.asked: dict[tuple[str, str, bool], float] = {}
        self.queue: queue.SimpleQueue = queue.SimpleQueue()  # one thread carries the asks out, in order
        self.pauser: threading.Thread | None = None
        self.shown: dict[str, Any] = {}  # what the ledger shows of each host: written again when it changes

    def tick(self, core: Reconciler, now: float) -> list[Edit]:
        edits: list[Edit] = []
        for name, h in self.hosts.items():
            reading = self._reading(name)
            local = self._local_time(name, reading)
            edits += [Event(name, d.event, d.detail, {"mode": h.mode.value} if d.kind else {})
                      for d in h.step(reading, local, now)]
            edits += self._match(core, name, h)
            shown = {k: v for k, v in h.status().items() if k != "owner_why"}
            if shown != self.shown.get(name):
                self.shown[name] = shown
                edits.append(Noted(name))
        self._pauses(core)
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

    def _local_time(self, name: str, r: Reading | None) -> datetime | None:
        """The host's local time: from the offset its watcher reports (the last one while it is silent);
        None before it first reported (a remote host's hours are not judged in the head's zone)."""
        utc = self.wall()
        if r is not None and isinstance(r.utcoffset, (int, float)):
            self.offsets[name] = r.utcoffset
        if name in self.offsets:
            return (utc + timedelta(seconds=self.offsets[name])).replace(tzinfo=None)
        if name == LOCAL_HOST or name not in self.links:
            return utc.astimezone().replace(tzinfo=None)  # this machine's local time
        return None

    def _match(self, core: Reconciler, name: str, h: HostYield) -> list[Edit]:
        """The workers of host ``name`` made to match its mode."""
        mine = [c for c in core.children.values() if c.is_worker and c.spec.at == name and c.name in core.desired]
        if h.mode == Mode.AWAY:
            going = tuple(c.name for c in mine if c.state in (S.PENDING, S.BACKOFF, S.WAITING, S.STARTING, S.RUNNING))
            return [Yield(going, f"{name} yields: {h.reason}", polite=h.how != "stop")] if going else []
        back = tuple(c.name for c in mine if c.state == S.YIELDED)
        return [Return(back)] if back else []

    def _pauses(self, core: Reconciler) -> None:
        """Level-triggered on Dask's own view: a running worker of a paused host that Dask does not show
        paused is asked to pause; one Dask shows paused on a host that is not (the owner left, `apply`
        dropped the rule, a supervisor before this one paused it) is asked to resume. Resuming leaves a
        worker Dask's memory monitor paused as it is (runtime/ownerpause.py)."""
        seen = core.probe.workers or {}
        now = time.monotonic()
        for c in list(core.children.values()):
            info = seen.get(c.name) or {}
            address, status = info.get("address"), info.get("status")
            if not c.is_worker or c.state != S.RUNNING or not address or status not in ("running", "paused"):
                continue
            h = self.hosts.get(c.spec.at)
            want = h is not None and h.mode != Mode.RUN  # away: paused until its retirement is over
            if want == (status == "paused"):
                continue
            key = (c.name, address, want)
            if key not in self.asked or now - self.asked[key] >= PAUSE_RETRY:
                self.asked[key] = now
                self._ask(address, want, c.name, core.fx)
        if len(self.asked) > 4 * max(1, len(core.children)):  # forget old incarnations' asks
            self.asked = {k: t for k, t in self.asked.items() if now - t < PAUSE_RETRY}

    def _ask(self, address: str, paused: bool, name: str, fx: Any) -> None:
        if self.pauser is None or not self.pauser.is_alive():
            self.pauser = threading.Thread(target=self._carry, name="owner-pause", daemon=True)
            self.pauser.start()
        self.queue.put((address, paused, name, fx))

    def _carry(self) -> None:
        """The one thread that pauses and resumes workers, in the order asked; together what is queued."""
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while not self.queue.empty():
                batch.append(self.queue.get())
            if None in batch:
                return
            for paused in (True, False):
                asks = [b for b in batch if b[1] == paused]
                if asks:
                    self._pause([a for a, *_ in asks], paused, asks[0][3], [n for _, _, n, _ in asks])

    def _pause(self, addresses: list[str], paused: bool, fx: Any, names: list[str]) -> None:
        try:
            self.pause_fx(addresses, paused)
        except Exception as e:  # noqa: BLE001 - asked again after PAUSE_RETRY while Dask still disagrees
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
            if h.policy.owner != p.owner:
                self._drop_link(name)
            h.policy = p
            if name not in self.links and self.make_link is not None:
                self.links[name] = self.make_link(name, cfg)
                if self.started:
                    self.links[name].start()

    def _drop_link(self, name: str) -> None:
        link = self.links.pop(name, None)
        if link is not None:
            link.close()

    def close(self) -> None:
        self.queue.put(None)
        for link in self.links.values():  # all told at once: each ends within a second, or is killed
            link.stop()
        for link in self.links.values():
            link.close()


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
