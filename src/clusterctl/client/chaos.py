"""Chaos faults: injected one at a time into a real cluster, each timed until the cluster heals.

    >>> inj = Injector(cfg, Settings(seed=7), echo=print, t0=time.monotonic()).start()   # doctest: +SKIP
    >>> inj.stop(wait=150); [f.mttr for f in inj.faults]      # jobs ran meanwhile (scripts/chaos)
    [1.07, 0.41, 3.9]

Faults come from ``random.Random(seed)`` on a daemon thread. After each injection
(a signal in effect, a request answered, a burst of connections closed)
``problems`` is polled every 0.2 s until every desired process runs, every worker
is registered, nothing is SIGSTOPped or still the killed pid and the scheduler
answers (the fault's time to recover), or the recovery deadline passes (an
unrecovered fault: the harness then SIGKILLs what it stopped, so the run goes on);
a pause of a few seconds follows. ``scripts/chaos`` runs Monte Carlo jobs meanwhile
and compares each completed table with ``rows_of(run_serial(spec))`` through
``compare_rows``. Nothing here prints: ``echo`` gets the live lines."""

from __future__ import annotations

import errno
import http.client
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil

from ..errors import ClusterError
from ..jobs import montecarlo as mc
from ..runtime.control import MAX_BODY
from ..runtime.ledger import Ledger
from ..runtime.requests import PingRequest, RemoveRequest, ScaleRequest
from ..runtime.states import ChildState, ClusterState
from ..topology import ClusterConfig
from .connect import ask, read_record, scheduler_probe
from .status import status

FAULTS = {
    "kill": "SIGKILL a worker",
    "stop": "SIGSTOP a worker and leave it stopped (a hung worker)",
    "kill-scheduler": "SIGKILL the scheduler",
    "stop-scheduler": "SIGSTOP the scheduler and leave it stopped",
    "scale": "`scale` up or down within the worker bounds",
    "remove": "`worker remove --count 1 --kill`",
    "malformed": "malformed control requests, with and without the token",
    "idle": "a burst of idle connections to the control port and the scheduler's HTTP port",
}
# Every fault the supervisor heals; all of them since it replaces hung workers (a SIGSTOPped
# worker stays registered with Dask for minutes: its heartbeat's age gives it away).
DEFAULT_FAULTS = tuple(FAULTS)
POLL = 0.2


def parse_faults(text: str | None) -> tuple[str, ...]:
    """'kill,scale' -> ('kill', 'scale'); nothing, 'default' or 'all' name the sets."""
    kinds = [k.strip() for k in (text or "default").split(",") if k.strip()]
    if kinds in (["default"], ["all"]):
        return DEFAULT_FAULTS if kinds == ["default"] else tuple(FAULTS)
    if not kinds or any(k not in FAULTS for k in kinds):
        bad = next((k for k in kinds if k not in FAULTS), "")
        raise ClusterError(f"unknown fault {bad!r}; known: {', '.join(FAULTS)} (or 'all', 'default')")
    return tuple(dict.fromkeys(kinds))


@dataclass(frozen=True)
class Settings:
    seconds: float = 60.0  # jobs start until then; faults stop then
    seed: int = 1
    faults: tuple[str, ...] = DEFAULT_FAULTS
    job: mc.MonteCarloSpec = mc.MonteCarloSpec(tasks=200, min_points=100_000, max_points=5_000_000)
    min_workers: int = 2
    max_workers: int = 5
    pause: tuple[float, float] = (1.0, 4.0)  # seconds between a recovery and the next fault
    recovery_deadline: float = 60.0
    job_timeout: float = 120.0  # one attempt; a hung one is cancelled and retried
    attempts: int = 5  # per job, before it is abandoned
    idle_connections: int = 100
    idle_hold: tuple[float, float] = (2.0, 5.0)


@dataclass
class Fault:
    n: int
    kind: str
    at: float  # seconds since the run began
    detail: str = ""
    took: float = 0.0  # the injection itself: a signal, a request's answer, a burst held
    mttr: float | None = None  # from the injection's end to all-healthy; None when it never got there
    disrupted: bool = False  # the cluster was seen unhealthy after it
    unrecovered: str | None = None  # what was still wrong at the deadline
    anomalies: list[str] = field(default_factory=list)  # wrong answers to hostile requests, refused commands
    killed: dict[str, int] = field(default_factory=dict)  # name -> the SIGKILLed pid, which must be replaced


def rows_of(df: Any) -> list[list]:
    """A Monte Carlo table as [[n, pi, err], ...] of plain ints and floats."""
    return [[int(n), float(p), float(e)] for n, p, e in df.itertuples(index=False)]


def compare_rows(rows: list, reference: list) -> list[int]:
    """Indices whose row differs from the reference (exact equality); extra or missing rows count."""
    bad = [i for i, (a, b) in enumerate(zip(rows, reference)) if [int(a[0]), float(a[1]), float(a[2])] != list(b)]
    return bad + list(range(min(len(rows), len(reference)), max(len(rows), len(reference))))


def problems(cfg: ClusterConfig, workers: int, killed: dict[str, int] | None = None) -> list[str]:
    """What keeps the cluster from healthy with ``workers`` workers; [] when it is. ``killed``
    names processes whose pid must have changed (a dying process may still answer a moment)."""
    st = status(cfg, sample=0)
    out = [] if st["state"] == ClusterState.RUNNING else [f"cluster {st['state']}"]
    if not st["supervisor"]["alive"]:
        out.append("supervisor gone")
    if not st["scheduler"].get("answering"):
        out.append("scheduler not answering")
    have = 0
    for p in st["processes"]:
        have += p["role"] == "worker"
        if p["state"] != ChildState.RUNNING or not p["alive"]:
            out.append(f"{p['name']} {p['state']}")
        elif p["role"] == "worker" and not p["registered"]:
            out.append(f"{p['name']} not registered")
        elif stopped(p["pid"]):
            out.append(f"{p['name']} SIGSTOPped yet {p['state']}")
        elif (killed or {}).get(p["name"]) == p["pid"]:
            out.append(f"{p['name']} is still the killed pid {p['pid']}")
    if have != workers:
        out.append(f"{have} workers, want {workers}")
    if st["workers_registered"] != workers:
        out.append(f"{st['workers_registered']} registered, want {workers}")
    return out


def landed(proc: psutil.Process, sig: int, timeout: float = 5.0) -> float | None:
    """Seconds until ``sig`` took effect (dead or zombie; stopped), so no poll sees the process
    as it was; None if it had not within ``timeout`` (a loaded machine delivers late)."""
    t0, kill = time.monotonic(), sig == signal.SIGKILL
    want = {psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD} if kill else {psutil.STATUS_STOPPED}
    while time.monotonic() - t0 < timeout:
        try:
            if proc.status() in want:
                return time.monotonic() - t0
        except psutil.NoSuchProcess:
            return time.monotonic() - t0 if kill else None
        time.sleep(0.005)
    return None


def stopped(pid: int | None) -> bool:
    try:
        return bool(pid) and psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return False


class Injector:
    """Faults one at a time, each followed by its recovery, on a daemon thread."""

    def __init__(self, cfg: ClusterConfig, settings: Settings, echo: Callable[[str], None], t0: float):
        self.cfg, self.s, self.echo, self.t0 = cfg, settings, echo, t0
        self.rng = random.Random(settings.seed)
        self.expected = sum(p.role == "worker" for p in read_record(cfg).processes)
        self.faults: list[Fault] = []
        self.harness_kills: list[str] = []  # hung processes the harness killed after a deadline
        self.broken: str | None = None  # the cluster did not come back at all: the run stops
        self.finish = threading.Event()  # no new faults
        self.abort = threading.Event()  # not even a recovery wait (Ctrl-C)
        self.thread = threading.Thread(target=self._run, name="chaos-faults", daemon=True)

    def start(self) -> Injector:
        self.thread.start()
        return self

    def stop(self, wait: float) -> None:
        self.finish.set()
        self.thread.join(timeout=wait)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _run(self) -> None:
        while not self.finish.wait(self.rng.uniform(*self.s.pause)):
            try:
                fault = self.inject()
                if fault is not None:
                    self.recover(fault, time.monotonic())
            except Exception as e:  # noqa: BLE001 - the harness's own bug: stop faulting, say why
                self.broken = f"fault injector failed: {type(e).__name__}: {e}"
            if self.broken:
                self.echo(f"{self.now():7.1f}s  stopping: {self.broken}")
                return

    # -- injecting -------------------------------------------------------------------------------
    def inject(self) -> Fault | None:
        """One fault of a kind that has a target now (None when none has), on its way."""
        record = read_record(self.cfg)
        live = [p for p in record.processes
                if p.state == ChildState.RUNNING and p.process_id and p.process_id.alive() and not stopped(p.pid)]
        workers = [p for p in live if p.role == "worker"]
        sched = [p for p in live if p.role == "scheduler"]
        able = {"kill": workers, "stop": workers, "kill-scheduler": sched, "stop-scheduler": sched,
                "remove": self.expected > self.s.min_workers, "scale": self.s.max_workers > self.s.min_workers}
        kinds = [k for k in self.s.faults if able.get(k, True)]
        if not kinds:
            return None
        kind = self.rng.choice(kinds)
        fault = Fault(len(self.faults) + 1, kind, round(self.now(), 2))
        self.faults.append(fault)
        t = time.monotonic()
        try:
            if kind in ("kill", "stop", "kill-scheduler", "stop-scheduler"):
                victim = self.rng.choice(workers if kind in ("kill", "stop") else sched)
                sig = signal.SIGKILL if kind.startswith("kill") else signal.SIGSTOP
                proc = victim.process_id.get() if victim.process_id else None
                if proc is None:
                    fault.detail = f"{victim.name} was gone before the signal"
                else:
                    proc.send_signal(sig)
                    took = landed(proc, sig)
                    fault.detail = f"{sig.name} {victim.name} (pid {victim.pid})" + (
                        f", in effect after {took:.2f} s" if took is not None else ", no effect within 5 s")
                    if sig == signal.SIGKILL:
                        fault.killed[victim.name] = proc.pid
            elif kind == "scale":
                target = self.rng.choice([n for n in range(self.s.min_workers, self.s.max_workers + 1) if n != self.expected])
                fault.detail = f"scale {self.expected} -> {target}"
                ask(self.cfg, ScaleRequest.of(count=target))
                self.expected = target
            elif kind == "remove":
                res = ask(self.cfg, RemoveRequest.of(count=1, kill=True))
                self.expected -= len(res.removing)
                fault.detail = "removed --kill " + ", ".join(res.removing)
            elif kind == "malformed":
                sent, fault.anomalies = malformed_requests(self.cfg, self.rng)
                fault.detail = f"{sent} hostile requests, {len(fault.anomalies)} answered wrongly"
            elif kind == "idle":
                n = self.s.idle_connections
                fault.anomalies, fault.detail = idle_burst(self.cfg, n, self.rng.uniform(*self.s.idle_hold))
        except ClusterError as e:
            fault.anomalies.append(f"{kind}: {e}")
            fault.detail = fault.detail or f"refused: {e}"
        fault.took = round(time.monotonic() - t, 3)
        self.echo(f"{self.now():7.1f}s  fault #{fault.n} {kind}: {fault.detail}")
        for a in fault.anomalies:
            self.echo(f"{'':9}  ! {a}")
        return fault

    # -- recovering ------------------------------------------------------------------------------
    def recover(self, fault: Fault, t: float) -> None:
        """Poll until healthy (MTTR from ``t``, the injection's end); past the deadline, unstick and go on."""
        left = self.wait_healthy(t + self.s.recovery_deadline, fault)
        if not left:
            fault.mttr = round(time.monotonic() - t, 3)
            self.echo(f"{self.now():7.1f}s  fault #{fault.n} {fault.kind}: recovered in {fault.mttr:.2f} s")
            return
        if self.abort.is_set():
            return
        fault.unrecovered = "; ".join(left)
        self.echo(f"{self.now():7.1f}s  fault #{fault.n} {fault.kind}: NOT recovered within "
                  f"{self.s.recovery_deadline:g} s: {fault.unrecovered}")
        self.unstick()
        left = self.wait_healthy(time.monotonic() + self.s.recovery_deadline, None)
        if left and not self.abort.is_set():
            self.broken = f"the cluster did not recover even after the harness stepped in: {'; '.join(left)}"

    def wait_healthy(self, deadline: float, fault: Fault | None) -> list[str]:
        while True:
            left = problems(self.cfg, self.expected, fault.killed if fault else None)
            if not left or time.monotonic() > deadline or self.abort.is_set():
                return left
            if fault is not None:
                fault.disrupted = True
            time.sleep(POLL)

    def unstick(self) -> None:
        """SIGKILL what the harness SIGSTOPped and nobody healed, so the run can go on."""
        for p in read_record(self.cfg).processes:
            proc = p.process_id.get() if p.process_id else None
            if proc is not None and stopped(p.pid):
                proc.kill()
                self.harness_kills.append(f"{p.name} (pid {p.pid})")
                self.echo(f"{self.now():7.1f}s  harness: SIGKILL {p.name} (pid {p.pid}), SIGSTOPped and not healed")


# -- hostile requests ------------------------------------------------------------------------------

def hostile_cases(token: str) -> list[tuple[str, str, str, dict[str, str], bytes | None, bool]]:
    """(what, method, path, headers, body, carries the token). None may change anything: one
    without the token must get 401 (refused before its body is read), one with it another 4xx."""
    good = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    wrong = {"Authorization": "Bearer " + "A" * len(token)}
    deep = b"[" * 60_000
    return [
        ("no token", "POST", "/scale", {}, b'{"count": 9}', False),
        ("wrong token", "POST", "/scale", wrong, b'{"count": 9}', False),
        ("stop without token", "POST", "/stop", {}, b"{}", False),
        ("GET status without token", "GET", "/status", {}, None, False),
        ("deep [ without token", "POST", "/scale", {}, deep, False),
        ("count as text", "POST", "/scale", good, b'{"count": "three"}', True),
        ("negative count", "POST", "/scale", good, b'{"count": -1}', True),
        ("count true", "POST", "/add", good, b'{"count": true}', True),
        ("count 1e400", "POST", "/add", good, b'{"count": 1e400}', True),
        ("names not a list", "POST", "/remove", good, b'{"names": "default-0"}', True),
        ("unknown worker", "POST", "/remove", good, b'{"names": ["nobody-7"]}', True),
        ("unknown field", "POST", "/scale", good, b'{"count": 9, "force": true}', True),
        ("unknown command", "POST", "/explode", good, b"{}", True),
        ("body a list", "POST", "/scale", good, b"[9]", True),
        ("body cut short", "POST", "/scale", good, b'{"count": ', True),
        ("body not UTF-8", "POST", "/scale", good, b"\xff\xfe\x00{", True),
        ("deep [ with token", "POST", "/scale", good, deep, True),
        ("body over the limit", "POST", "/scale", good, b" " * (MAX_BODY + 1), True),
        ("negative Content-Length", "POST", "/scale", {**good, "Content-Length": "-5"}, None, True),
        ("GET scale without a count", "GET", "/scale", good, None, True),
    ]


def refused_properly(code: int | str, with_token: bool) -> bool:
    """401 without the token; with it, any 4xx. Never 2xx (obeyed), 5xx, or no answer at all."""
    return code == 401 if not with_token else isinstance(code, int) and 400 <= code < 500


def send_raw(address: str, method: str, path: str, headers: dict[str, str], body: bytes | None,
             timeout: float = 10.0) -> int | str:
    """One HTTP request as sent; the status code, or what went wrong instead."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (({"Content-Length": str(len(body))} if body is not None else {}) | headers).items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            try:
                conn.send(body)
            except OSError:
                pass  # refused before reading it all: the answer may still be there
        return conn.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return f"no answer ({type(e).__name__}: {e})"
    finally:
        conn.close()


def malformed_requests(cfg: ClusterConfig, rng: random.Random) -> tuple[int, list[str]]:
    """Every hostile case, in a random order; then the supervisor must still answer `ping`."""
    record = read_record(cfg)
    address, token = record.supervisor.control, Ledger(cfg.state_path).read_token()
    if not address or not token:
        return 0, ["no control address or token to aim at"]
    cases = hostile_cases(token)
    rng.shuffle(cases)
    bad = []
    for what, method, path, headers, body, with_token in cases:
        got = send_raw(address, method, path, headers, body)
        if not refused_properly(got, with_token):
            bad.append(f"{what} ({method} {path}): {got}, expected {'a 4xx' if with_token else '401'}")
    try:
        ask(cfg, PingRequest(), timeout=10)
    except ClusterError as e:
        bad.append(f"ping after the hostile requests: {e}")
    return len(cases), bad


def idle_burst(cfg: ClusterConfig, count: int, hold: float) -> tuple[list[str], str]:
    """``count`` connections at once each to the control port and the scheduler's HTTP port,
    sending nothing, held ``hold`` seconds; meanwhile `ping` and the scheduler's probe must answer."""
    record = read_record(cfg)
    probe = scheduler_probe(cfg, record)
    socks: list[tuple[socket.socket, tuple[str, int]]] = []
    bad: list[str] = []
    t0 = time.monotonic()
    try:
        for address in (a for a in (record.supervisor.control, probe.base.removeprefix("http://")) if a):
            host, port = address.rsplit(":", 1)
            for _ in range(count):  # non-blocking: all at once, as a burst is
                s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
                s.setblocking(False)
                s.connect_ex(addr := (host.strip("[]"), int(port)))
                socks.append((s, addr))
        t = time.monotonic()
        try:
            ask(cfg, PingRequest(), timeout=10)
            ping = f"ping {time.monotonic() - t:.2f} s"
        except ClusterError as e:
            bad.append(f"ping with {len(socks)} idle connections opening: {e}")
            ping = "ping failed"
        t = time.monotonic()
        if probe.identity(timeout=10) is None:
            bad.append(f"scheduler probe unanswered with {len(socks)} idle connections opening")
        ping += f", scheduler probe {time.monotonic() - t:.2f} s"
        time.sleep(max(0.0, hold - (time.monotonic() - t0)))
        connected = sum(s.connect_ex(addr) == errno.EISCONN for s, addr in socks)
    finally:
        for s, _ in socks:
            s.close()
    return bad, f"{connected}/{len(socks)} idle connections for {time.monotonic() - t0:.1f} s, {ping}"
