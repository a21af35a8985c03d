"""Monte Carlo jobs back to back against a cluster under chaos, every completed table checked.

    >>> loop = JobLoop(cfg, spec, key="chaos", attempts=5, timeout=120, echo=print,     # doctest: +SKIP
    ...                now=clock, settle=lambda: injector.wait_healthy(time.monotonic() + 60, None))
    >>> loop.run(rows_of(mc.run_serial(spec)), more=lambda: clock() < 60)
    >>> [j.outcome for j in loop.jobs]
    ['match', 'match', 'match']

Each attempt runs under keys of its own (nothing reused from an earlier job or attempt) and its
table is compared exactly with the reference (``compare_rows``). A failed attempt (the scheduler
killed under it, a timeout, ...) drops the client, waits for ``settle`` (the cluster healthy or
answering again) and is retried, up to ``attempts`` in all; it counts as retried, never as a
mismatch. Used by scripts/chaos and scripts/chaos --fleet; nothing here prints: ``echo`` gets
the live lines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..jobs import montecarlo as mc
from ..topology import ClusterConfig
from .chaos import compare_rows
from .connect import client_address, client_kwargs

RETRY_PAUSE = 0.5  # after a failed attempt's settle: never a hot loop, whatever failed


@dataclass
class Job:
    n: int
    outcome: str = "running"  # match | mismatch | abandoned | cut-short
    seconds: float | None = None  # the attempt that completed
    attempts: list[dict] = field(default_factory=list)  # {"start", "end", "error"}: seconds since the run began
    mismatched: list[int] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """One per failed attempt (each one a retry)."""
        return [a["error"] for a in self.attempts if a["error"]]


class JobLoop:
    """Jobs on the calling thread, one after another; ``jobs`` holds each, the running one last."""

    def __init__(self, cfg: ClusterConfig, spec: mc.MonteCarloSpec, *, key: str, attempts: int, timeout: float,
                 echo: Callable[[str], None], now: Callable[[], float], settle: Callable[[], Any]):
        self.cfg, self.spec, self.key, self.attempts, self.timeout = cfg, spec, key, attempts, timeout
        self.echo, self.now, self.settle = echo, now, settle
        self.jobs: list[Job] = []
        self.client: Any = None

    def run(self, reference: list, more: Callable[[], bool], cut_short: bool = False) -> None:
        """Jobs while ``more()``; with ``cut_short``, a job's retry is not begun once it says no
        (the job is then `cut-short`), otherwise it goes on until it completes or is abandoned."""
        try:
            while more():
                self.jobs.append(self.one_job(len(self.jobs) + 1, reference, more if cut_short else None))
        finally:
            self.drop_client()

    def one_job(self, n: int, reference: list, more: Callable[[], bool] | None = None) -> Job:
        job = Job(n)
        for attempt in range(1, self.attempts + 1):
            if attempt > 1 and more is not None and not more():
                job.outcome = "cut-short"
                return job
            a: dict[str, Any] = {"start": round(self.now(), 2), "end": None, "error": None}
            job.attempts.append(a)
            t = time.monotonic()
            try:
                rows = self.attempt(n, attempt)
            except Exception as e:  # noqa: BLE001 - the scheduler died under it, a timeout, ...
                a["end"], a["error"] = round(self.now(), 2), f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
                self.echo(f"{self.now():7.1f}s  job #{n} attempt {attempt} failed after {time.monotonic() - t:.1f} s: "
                          f"{a['error'][:110]}")
                self.drop_client()
                self.settle()
                time.sleep(RETRY_PAUSE)
                continue
            a["end"] = round(self.now(), 2)
            job.seconds = round(time.monotonic() - t, 3)
            job.mismatched = compare_rows(rows, reference)
            job.outcome = "mismatch" if job.mismatched else "match"
            verdict = f"MISMATCH in {len(job.mismatched)} rows" if job.mismatched else f"{len(rows)} rows identical"
            self.echo(f"{self.now():7.1f}s  job #{n}: {verdict} ({job.seconds:.1f} s"
                      + (f", attempt {attempt})" if attempt > 1 else ")"))
            return job
        job.outcome = "abandoned"
        self.echo(f"{self.now():7.1f}s  job #{n}: ABANDONED after {self.attempts} attempts")
        return job

    def attempt(self, n: int, attempt: int) -> list:
        """The job under keys of its own; its rows."""
        from distributed import Client, wait

        if self.client is None:
            self.client = Client(client_address(self.cfg), timeout="15s", set_as_default=False, **client_kwargs(self.cfg))
        spec = self.spec
        points = [int(x) for x in mc.points_schedule(spec)]
        keys = [f"{self.key}-{spec.seed}-{n}.{attempt}-{i}" for i in range(len(points))]
        futures = self.client.map(mc.estimate_pi, points, [spec.seed] * len(points), list(range(len(points))), key=keys)
        try:
            with self.client.as_current():  # wait() asks for the current client
                wait(futures, timeout=self.timeout)
            return self.client.gather(futures)
        finally:
            try:
                self.client.cancel(futures)
            except Exception:  # noqa: BLE001 - the connection may be what broke
                pass

    def drop_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close(timeout=5)
            except Exception:  # noqa: BLE001 - closing a client whose scheduler died
                pass
