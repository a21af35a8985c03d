"""Scheduler preload (``--preload <this file>``): a small read-only JSON view of the workers.

Dask's own ``/json/identity.json`` fails with a TypeError while tasks run
(worker metrics carry tuple keys), so the supervisor's health probe reads
``/clusterctl/workers.json`` instead. Standalone on purpose: it imports only
what every Dask scheduler has (distributed, tornado), so it works from a file path in any environment.
"""

import asyncio
import json
import threading
import time
from collections import Counter, OrderedDict

import dask.config
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.metrics import time as metrics_time
from tornado import web

#: Set (DASK_CLUSTERCTL__LAZY_DASHBOARD=True) when clusterctl starts the scheduler with
#: --no-dashboard and wants the Bokeh pages mounted once they are imported (see below).
LAZY_DASHBOARD = "clusterctl.lazy-dashboard"

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



MAX_RETIRED = 4096
SHUTDOWN_FALLBACK = 10.0  # seconds: with no supervisor to act on a client's shutdown, the scheduler closes itself


class Retirements(SchedulerPlugin):
    """Which workers the scheduler retired (``retire_workers``: a client, Dask's Adaptive, the
    dashboard; their stimulus id says so), by name and when: the supervisor lowers their group's
    desired count instead of starting them again. ``client.restart()`` is not a retirement."""

    name = "clusterctl-retirements"

    def __init__(self):
        super().__init__()
        self.names = {}  # address -> worker name (the name is gone from the scheduler at removal)
        self.retired = OrderedDict()  # name -> {"at": wall time, "stimulus": id}

    def add_worker(self, scheduler=None, worker=None, **kwargs):
        ws = scheduler.workers.get(worker) if scheduler is not None else None
        if ws is not None:
            self.names[worker] = str(ws.name)
            self.retired.pop(str(ws.name), None)  # a new worker of a reused name: not the one retired

    def remove_worker(self, scheduler=None, worker=None, *, stimulus_id=None, **kwargs):
        name = self.names.pop(worker, None)
        if name is not None and str(stimulus_id or "").startswith("retire-workers"):
            self.retired.pop(name, None)
            self.retired[name] = {"at": time.time(), "stimulus": str(stimulus_id)}
            while len(self.retired) > MAX_RETIRED:
                self.retired.popitem(last=False)


class Shutdown:
    """``client.shutdown()`` asks the scheduler to terminate. Under clusterctl that means the whole
    cluster, supervisor included, as Dask's docs promise: the request is recorded (who asked, when)
    for the supervisor, which stops everything within a second or two; were no supervisor to act,
    the scheduler closes itself after SHUTDOWN_FALLBACK seconds, as Dask would at once."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.requested = None
        self._terminate = scheduler.handlers["terminate"]
        scheduler.handlers["terminate"] = self.terminate

    async def terminate(self, comm=None, **kwargs):  # `comm` first: distributed passes the caller's comm
        if self.requested is None:
            self.requested = {"by": str(getattr(comm, "peer_address", "") or "unknown"), "at": time.time()}
            self.scheduler.loop.call_later(SHUTDOWN_FALLBACK, self._fallback, kwargs)

    def _fallback(self, kwargs):
        asyncio.ensure_future(self._terminate(**kwargs))


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
    def initialize(self, scheduler, retirements=None, shutdown=None, recommendations=None):
        self.scheduler = scheduler
        self.retirements, self.shutdown = retirements, shutdown
        self.recommendations = recommendations

    def get(self):
        s = self.scheduler
        workers = {}
        now = metrics_time()
        for ws in list(s.workers.values()):
            workers[str(ws.name)] = {
                "address": ws.address,
                "status": getattr(ws.status, "name", str(ws.status)),
                "nthreads": ws.nthreads,
                "memory_limit": ws.memory_limit,
                "processing": len(ws.processing),
                "has_what": len(ws.has_what),
                # Seconds since its last heartbeat: a hung worker (SIGSTOP, a task holding the
                # GIL in C code, a sleeping laptop) stays registered until worker-ttl (5 min).
                "heartbeat_age": round(max(0.0, now - ws.last_seen), 3),
            }
        adaptive = None
        duration = self.get_argument("adaptive", None)  # the supervisor adapts a group: Dask's recommendation
        if duration is not None:
            consume = self.get_argument("consume", "0") == "1"
            adaptive = self.recommendations.read(duration, consume) if self.recommendations is not None else None
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps({
            "adaptive": adaptive,
            "address": s.address,
            "n_workers": len(workers),
            "total_threads": sum(w["nthreads"] for w in workers.values()),
            "total_memory": sum(w["memory_limit"] or 0 for w in workers.values()),
            "tasks": len(s.tasks),
            "workers": workers,
            "retired": dict(self.retirements.retired) if self.retirements is not None else {},
            "shutdown": self.shutdown.requested if self.shutdown is not None else None,
        }))


SAMPLE_EVERY_MS = 100  # Dask's recommendation, sampled between two supervisor probes
SAMPLE_FOR = 10.0  # seconds after the last probe that asked for it


class Recommendations:
    """Dask's own adaptive recommendation, as its ``Adaptive`` asks it (``adaptive_target``,
    ``workers_to_close``), with the peak target seen since the supervisor's last probe.

    ``adaptive_target`` estimates queued work from each task prefix's running average
    duration, so the instant a burst queues it asks for many workers, and a fraction of a
    second later, once the burst's first (often smallest) tasks have finished and lowered
    that average, for one or two: a probe once a second mostly saw the low value and the
    group grew seconds late. Sampled every 100 ms while the supervisor asks (cheap: at most
    100 queued tasks are looked at), the peak is kept until it is read."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.duration = None
        self.asked_at = 0.0
        self.peak = 0
        self._callback = None

    def sample(self):
        if self.duration is None or time.monotonic() - self.asked_at > SAMPLE_FOR:
            return
        try:
            self.peak = max(self.peak, int(self.scheduler.adaptive_target(target_duration=self.duration)))
        except Exception:  # noqa: BLE001 - the read below reports the error
            pass

    def read(self, duration, consume=False):
        s = self.scheduler
        if time.monotonic() - self.asked_at > SAMPLE_FOR:
            self.peak = 0  # nobody asked for a while: an old peak says nothing about now
        self.duration, self.asked_at = float(duration), time.monotonic()
        if self._callback is None:
            from tornado.ioloop import PeriodicCallback

            self._callback = PeriodicCallback(self.sample, SAMPLE_EVERY_MS)
            self._callback.start()
        try:
            now = int(s.adaptive_target(target_duration=self.duration))
            to_close = [str(n) for n in s.workers_to_close(attribute="name")]
        except Exception as e:  # noqa: BLE001 - a recommendation that fails is reported, never a 500
            return {"error": f"{type(e).__name__}: {e}"}
        target = max(now, self.peak)
        if consume:  # the supervisor's probe: the next peak starts now (other readers only look)
            self.peak = 0
        return {
            "target": target,
            "now": now,
            "to_close": to_close if target <= now else [],  # a burst came and went: close nothing yet
            "queued": len(s.queued) + len(s.unrunnable),
            "processing": sum(len(ws.processing) for ws in s.workers.values()),
            "tasks": len(s.tasks),
        }


class DashboardStarting(web.RequestHandler):
    """Every dashboard path while Bokeh is being imported: 503, and the page reloads itself."""

    def get(self, *args):
        self.set_status(503)
        self.set_header("Retry-After", "1")
        self.set_header("Cache-Control", "no-store")
        self.write(
            "<!doctype html><meta http-equiv='refresh' content='1'><title>Dask dashboard</title>"
            "<p>The Dask dashboard is starting; this page reloads itself.</p>"
        )


class Dashboard:
    """Mounts the scheduler's Bokeh dashboard after start-up rather than during it.

    ``dask scheduler`` imports Bokeh before it listens (0.4 s of CPU here), so every
    start, and every restart after a crash, waited for pages nobody was looking at
    yet. Started with --no-dashboard, the scheduler answers at once (its /health and
    /json routes are on that port either way); a thread imports
    ``distributed.dashboard.scheduler`` meanwhile, and the event loop then mounts it
    exactly as Dask's own ``Scheduler(dashboard=True)`` does. Until then the
    dashboard's paths answer 503 with Retry-After."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.state = "starting"
        self._placeholder = web.Application([(r"/.*", DashboardStarting)])

    def start(self):
        self.scheduler.http_application.add_application(self._placeholder)
        threading.Thread(target=self._load, name="clusterctl-dashboard-import", daemon=True).start()

    def _load(self):
        try:
            import distributed.dashboard.scheduler as module
        except ImportError:  # no bokeh: Dask's own page says how to install it
            module = None
        self.scheduler.loop.add_callback(self._mount, module)

    def _mount(self, module):
        app = self.scheduler.http_application
        app.applications.remove(self._placeholder)
        if module is None:
            from distributed.http.utils import get_handlers

            app.add_handlers(r".*", get_handlers(
                server=self.scheduler, modules=["distributed.http.scheduler.missing_bokeh"], prefix="/"))
            self.state = "missing bokeh"
        else:
            module.connect(app, self.scheduler.http_server, self.scheduler, prefix="/")
            self.state = "ready"


def dask_setup(scheduler):
    counter = ComputeCounter()
    scheduler.add_plugin(counter, name=counter.name)
    retirements = Retirements()
    scheduler.add_plugin(retirements, name=retirements.name)
    shutdown = Shutdown(scheduler)
    scheduler.http_application.add_application(
        web.Application([
            (r"/clusterctl/workers\.json", WorkersJSON,
             {"scheduler": scheduler, "retirements": retirements, "shutdown": shutdown,
              "recommendations": Recommendations(scheduler)}),
            (r"/clusterctl/computed\.json", ComputedJSON, {"counter": counter}),
        ])
    )
    if dask.config.get(LAZY_DASHBOARD, False):
        Dashboard(scheduler).start()
