"""Workers leaving the cluster: retired through the scheduler (their results move first)
and stopped, on a thread, so moving data for seconds never stalls the reconcile loop;
or killed at once when the operator asked for an abrupt removal (`--kill`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from .child import Child


@dataclass
class Retirement:
    children: list[Child]
    kill: bool
    done: threading.Event = field(default_factory=threading.Event)
    retired: list[str] = field(default_factory=list)  # names the scheduler confirmed
    keep: bool = False  # they yield to their host's owner: still desired, yielded once stopped
    polite: bool = True  # retired through the scheduler first (else only stopped: `when_active: stop`)


class Retirer:
    def __init__(self, fx: Any, grace: float):
        self.fx, self.grace = fx, grace
        self.kill_names: set[str] = set()
        self.pending: list[Retirement] = []
        self.retired: dict[str, bool] = {}  # name -> the scheduler confirmed its retirement
        self.background: Callable[..., None] = _thread  # tests run retirements inline

    def start(self, leaving: list[Child]) -> None:
        for kill in (True, False):
            batch = [c for c in leaving if (c.name in self.kill_names) == kill]
            if not batch:
                continue
            r = Retirement(children=batch, kill=kill)
            self.pending.append(r)
            if kill:
                for c in batch:
                    self.fx.kill(c.pid, c.handle)
                r.done.set()
            else:
                self.background(self._retire, r)

    def yield_(self, children: list[Child], polite: bool) -> None:
        """Their host yields to its owner or its hours: retired (or only stopped), still desired."""
        if children:
            r = Retirement(children=children, kill=False, keep=True, polite=polite)
            self.pending.append(r)
            self.background(self._retire, r)

    def _retire(self, r: Retirement) -> None:
        try:
            if r.polite:
                r.retired = self.fx.retire([c.name for c in r.children])
        except Exception as e:  # noqa: BLE001 - a failed retire still removes the process
            self.fx.emit("cluster", "retire-failed", f"{type(e).__name__}: {e}")
        try:
            self.fx.stop([(c.pid, c.handle) for c in r.children], self.grace)
        finally:
            r.done.set()

    def forget(self, addresses: list[str]) -> None:
        """On a thread: the scheduler drops these workers (a lost host's, a hung one's predecessor) now,
        not after worker-ttl; their tasks move, their names are free again."""
        self.background(self._forget, addresses)

    def _forget(self, addresses: list[str]) -> None:
        try:
            self.fx.forget(addresses)
        except Exception as e:  # noqa: BLE001 - then Dask's own worker-ttl does it, later
            self.fx.emit("cluster", "forget-failed", f"{type(e).__name__}: {e}")

    def finished(self) -> list[tuple[Child, str, bool]]:
        """The children whose retirement is over, with how they left and whether they stay desired
        (they yielded); forgets them."""
        out = []
        for r in [r for r in self.pending if r.done.is_set()]:
            self.pending.remove(r)
            for c in r.children:
                self.kill_names.discard(c.name)
                self.retired[c.name] = c.name in r.retired
                how = "killed" if r.kill else "stopped" if not r.polite else "retired and stopped" \
                    if c.name in r.retired else "stopped: Dask could not move its results (no other worker " \
                    "took them), so it computes them again"
                out.append((c, how, r.keep))
        return out

    def wait(self, timeout: float) -> None:
        for r in list(self.pending):
            r.done.wait(timeout)


def _thread(fn: Callable[..., None], *args: Any) -> None:
    threading.Thread(target=fn, args=args, name="retire", daemon=True).start()
