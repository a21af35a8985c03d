"""Pure planning: a validated topology plus resolved executables become process specs.

Nothing here starts, reads or writes anything, so it is tested YAML in, argv out::

    >>> specs = build_plan(cfg, launcher)                       # doctest: +SKIP
    >>> [s.name for s in specs]
    ['scheduler', 'default-0', 'default-1', 'default-2']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .config import ClusterConfig, RestartPolicy, WorkerGroup
from .errors import ConfigError
from .resolve import Launcher

Role = Literal["scheduler", "worker"]
SCHEDULER = "scheduler"
SCHEDULER_PLUGIN = Path(__file__).resolve().with_name("scheduler_plugin.py")


@dataclass(frozen=True)
class ProcessSpec:
    """One process the supervisor keeps running."""

    name: str
    role: Role
    group: str
    host: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict, hash=False)
    cwd: Path | None = None
    log_path: Path | None = None
    restart: RestartPolicy = RestartPolicy()

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "group": self.group,
            "host": self.host,
            "argv": list(self.argv),
            "env": dict(self.env),
            "log": str(self.log_path) if self.log_path else None,
        }


def hostport(host: str, port: int) -> str:
    """'127.0.0.1:8786', '[::1]:8786': IPv6 needs brackets."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _number(v: float) -> str:
    """A number for a command line without losing digits: 2 -> '2', 1234567.0 -> '1234567'."""
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


def scheduler_address(cfg: ClusterConfig) -> str:
    return f"tcp://{hostport(connect_host(cfg.scheduler.host), cfg.scheduler.port)}"


def dashboard_url(cfg: ClusterConfig, port: int | None = None) -> str | None:
    if not cfg.scheduler.dashboard:
        return None
    p = port if port is not None else cfg.scheduler.dashboard_port
    return f"http://{hostport(connect_host(cfg.scheduler.host), p)}/status"


def connect_host(bind_host: str) -> str:
    """Where a client on this machine reaches a bind address (0.0.0.0 is not an address)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1"}.get(bind_host, bind_host)


def worker_name(group: str, index: int) -> str:
    return f"{group}-{index}"


def scheduler_spec(cfg: ClusterConfig, launcher: Launcher) -> ProcessSpec:
    s = cfg.scheduler
    argv = [
        *launcher.scheduler,
        "--host", s.host,
        "--port", str(s.port),
        # An explicit host: ':PORT' would bind every interface (DASK_NOTES bind trap).
        "--dashboard-address", hostport(s.host, s.dashboard_port),
        "--scheduler-file", str(cfg.state_path / "scheduler.json"),
    ]
    if not s.dashboard:
        argv.append("--no-dashboard")  # /health and /json stay up on that port
    # A read-only /clusterctl/workers.json for the health probe (see scheduler_plugin.py).
    argv += ["--preload", str(SCHEDULER_PLUGIN)]
    if s.idle_timeout:
        argv += ["--idle-timeout", f"{_number(s.idle_timeout)}s"]
    return ProcessSpec(
        name=SCHEDULER,
        role="scheduler",
        group=SCHEDULER,
        host=s.host,
        argv=tuple(argv),
        env={},
        cwd=cfg.state_path,
        log_path=cfg.log_path / "scheduler.log",
        restart=s.restart,
    )


def worker_spec(cfg: ClusterConfig, launcher: Launcher, group: WorkerGroup, index: int) -> ProcessSpec:
    name = worker_name(group.name, index)
    host = group.host or cfg.scheduler.host
    argv = [
        *launcher.worker,
        scheduler_address(cfg),
        "--name", name,
        "--host", host,
        "--dashboard-address", hostport(host, 0),
        "--local-directory", str(cfg.state_path / "work"),
        "--memory-limit", str(group.memory_limit),
        # Bounds only the wait for the scheduler at start; restarts are the supervisor's job.
        "--death-timeout", f"{_number(cfg.timeouts.startup)}s",
        "--nanny" if group.nanny else "--no-nanny",
    ]
    if group.nthreads:
        argv += ["--nthreads", str(group.nthreads)]
    if group.resources:
        # Full precision: '{:g}' would turn 1234567 into 1.23457e+06.
        argv += ["--resources", ",".join(f"{k}={_number(v)}" for k, v in sorted(group.resources.items()))]
    return ProcessSpec(
        name=name,
        role="worker",
        group=group.name,
        host=host,
        argv=tuple(argv),
        env=dict(group.env),
        cwd=cfg.state_path,
        log_path=cfg.log_path / f"{name}.log",
        restart=group.restart,
    )


def build_plan(cfg: ClusterConfig, launcher: Launcher, counts: dict[str, int] | None = None) -> list[ProcessSpec]:
    """Scheduler first, then each group's workers named ``<group>-<i>``.

    ``counts`` overrides a group's size (what ``scale`` recorded); it may set 0, but it may
    not name a group the topology lacks or ask for a negative size."""
    counts = dict(counts or {})
    known = {g.name for g in cfg.workers}
    for name, n in counts.items():
        if name not in known:
            raise ConfigError(
                f"scale: no worker group {name!r} in {cfg.source or 'the topology'}; "
                f"groups: {', '.join(sorted(known)) or '(none)'}"
            )
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 1024:
            raise ConfigError(f"scale: {name}={n!r} is not a worker count; use 0 to 1024")
    specs = [scheduler_spec(cfg, launcher)]
    for group in cfg.workers:
        n = counts.get(group.name, group.count)
        specs += [worker_spec(cfg, launcher, group, i) for i in range(n)]
    return specs
