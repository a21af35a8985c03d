"""Scheduler preload (``--preload <this file>``): a small read-only JSON view of the workers.

Dask's own ``/json/identity.json`` fails with a TypeError while tasks run
(worker metrics carry tuple keys), so the supervisor's health probe reads
``/clusterctl/workers.json`` instead. Standalone on purpose: it imports only
what every Dask scheduler has, so it works from a file path in any environment.
"""

import json

from tornado import web


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
    scheduler.http_application.add_application(
        web.Application([(r"/clusterctl/workers\.json", WorkersJSON, {"scheduler": scheduler})])
    )
