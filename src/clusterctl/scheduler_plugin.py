"""Scheduler preload (``--preload <this file>``): a small read-only JSON view of the workers.

Dask's own ``/json/identity.json`` fails with a TypeError while tasks run
(worker metrics carry tuple keys), so the supervisor's health probe reads
``/clusterctl/workers.json`` instead. Standalone on purpose: it imports only
what every Dask scheduler has (distributed, tornado), so it works from a file path in any environment.
"""

import json
from collections import Counter

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web

COUNTED_PREFIX = "montecarlo-"  # only clusterctl's job keys: the counter stays small
MAX_COUNTED = 500_000


class ComputeCounter(SchedulerPlugin):
    """Counts, per job key, how often a result was stored and how often a run was cut short.

    A key stored twice had its result lost (its worker died) and recomputed; a
    graceful retire moves results instead, so it adds nothing here."""

    name = "clusterctl-compute-counter"

    def __init__(self):
        super().__init__()
        self.stored = Counter()
        self.interrupted = Counter()

    def transition(self, key, start, finish, *args, **kwargs):
        if not isinstance(key, str) or not key.startswith(COUNTED_PREFIX):
            return
        if len(self.stored) > MAX_COUNTED:
            self.stored.clear()
            self.interrupted.clear()
        if start == "processing" and finish == "memory":
            self.stored[key] += 1
        elif start == "processing" and finish in ("released", "waiting", "no-worker"):
            self.interrupted[key] += 1



class ComputedJSON(web.RequestHandler):
    def initialize(self, counter):
        self.counter = counter

    def get(self):
        prefix = self.get_argument("prefix", COUNTED_PREFIX)
        stored = {k: n for k, n in self.counter.stored.items() if k.startswith(prefix)}
        interrupted = {k: n for k, n in self.counter.interrupted.items() if k.startswith(prefix)}
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps({"stored": stored, "interrupted": interrupted}))


class WorkersJSON(web.RequestHandler):
    def initialize(self, scheduler):
        self.scheduler = scheduler

    def get(self):
        s = self.scheduler
        workers = {}
        for ws in list(s.workers.values()):
            workers[str(ws.name)] = {
                "address": ws.address,
                "status": getattr(ws.status, "name", str(ws.status)),
                "nthreads": ws.nthreads,
                "memory_limit": ws.memory_limit,
                "processing": len(ws.processing),
                "has_what": len(ws.has_what),
            }
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps({
            "address": s.address,
            "n_workers": len(workers),
            "total_threads": sum(w["nthreads"] for w in workers.values()),
            "total_memory": sum(w["memory_limit"] or 0 for w in workers.values()),
            "tasks": len(s.tasks),
            "workers": workers,
        }))


def dask_setup(scheduler):
    counter = ComputeCounter()
    scheduler.add_plugin(counter, name=counter.name)
    scheduler.http_application.add_application(
        web.Application([
            (r"/clusterctl/workers\.json", WorkersJSON, {"scheduler": scheduler}),
            (r"/clusterctl/computed\.json", ComputedJSON, {"counter": counter}),
        ])
    )
