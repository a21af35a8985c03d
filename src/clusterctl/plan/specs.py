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

import hashlib
import json
import os

from ..topology import LOCAL_HOST, MAX_GROUP_WORKERS, ClusterConfig, RestartPolicy, WorkerGroup
from ..topology.workers import GPU_ENV
from ..errors import ConfigError
from .resolve import Launcher
from .sizing import Inventory, size, worker_settings
# TAG_ENV is in the environment of every process clusterctl starts, here and on other hosts: the
# proof that a pid is this cluster's before anything signals it (runtime/process.py), and what
# `down` sweeps by. Re-exported: the plan's users import it from here.
from .tag import TAG_ENV

Role = Literal["scheduler", "worker"]
SCHEDULER = "scheduler"
SCHEDULER_PLUGIN = Path(__file__).resolve().parent.parent / "runtime" / "scheduler_plugin.py"
# On another host the head's file path means nothing; clusterctl is installed there (the agent needs it).
SCHEDULER_PLUGIN_MODULE = "clusterctl.runtime.scheduler_plugin"
MASK = "***"


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
    at: str = LOCAL_HOST  # the machine (a name from `hosts:`); `host` is the address it binds
    # It runs on another host (`at`): argv then says what runs there (`dask worker ...`, the host
    # resolving its own executable), and a remote transport (remote/launch.py) builds the argv that
    # runs here: an ssh session to an agent, or an ssh -W channel to the host's fork server.
    remote: bool = False
    # remote only: the environment the Dask process gets there. It travels over the lifeline (the
    # agent's stdin preamble, or the direct request), never on a command line: `ps` shows the keys at most.
    remote_env: dict[str, str] = field(default_factory=dict, hash=False)
    # remote only: the Dask command's arguments after the host's own executable.
    remote_args: tuple[str, ...] = ()
    nanny: bool = True  # under a Dask nanny, which enforces its memory limit (as argv says; Dask's default)
    dashboard: bool = True  # serves dashboard pages (a worker's import Bokeh: its fork server preloads it)
    nice: int | None = None  # a worker's CPU priority (and the idle I/O class), from the host's `nice:`

    def preamble(self) -> bytes | None:
        """The first line a remote spec's agent reads on its stdin (see remote/agent.py), or None."""
        return preamble(self.remote_env) if self.remote and self.remote_env else None

    def to_dict(self) -> dict:
        """For display (`validate --json`): values from a topology's `env:` masked."""
        return {
            "name": self.name,
            "role": self.role,
            "group": self.group,
            "host": self.host,
            "at": self.at,
            "remote": self.remote,
            "argv": list(self.argv),
            "env": shown_env(self.env),
            "remote_env": shown_env(self.remote_env),
            "log": str(self.log_path) if self.log_path else None,
        }


def preamble(env: dict[str, str]) -> bytes:
    """``{"env": {...}}`` and a newline: how environment values reach a remote agent."""
    return json.dumps({"env": dict(sorted(env.items()))}, separators=(",", ":")).encode() + b"\n"


def shown_env(env: dict[str, str]) -> dict[str, str]:
    """env for people: clusterctl's own settings (and a worker's GPUs) as they are; any other value
    (from a topology's `env:`, which may hold a token or a password) as ``***``."""
    return {k: v if k in (TAG_ENV, GPU_ENV) or OWN_ENV.get(k) == v else MASK for k, v in env.items()}


def hostport(host: str, port: int) -> str:
    """'127.0.0.1:8786', '[::1]:8786': IPv6 needs brackets."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def number(v: float) -> str:
    """A number for a command line without losing digits: 2 -> '2', 1234567.0 -> '1234567'."""
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


def scheduler_address(cfg: ClusterConfig) -> str:
    return f"{cfg.protocol}://{hostport(connect_host(cfg.scheduler.host), cfg.scheduler.port)}"


REMOTE_TLS_DIR = "tls"  # relative to a remote host's workdir (the agent's cwd)
REQUIRE_ENCRYPTION = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
# The scheduler starts with --no-dashboard and its preload mounts the Bokeh pages once
# imported, off the start-up path (scheduler_plugin.Dashboard).
LAZY_DASHBOARD = {"DASK_CLUSTERCTL__LAZY_DASHBOARD": "True"}
UNBUFFERED = {"PYTHONUNBUFFERED": "1"}
OWN_ENV = {**REQUIRE_ENCRYPTION, **LAZY_DASHBOARD, **UNBUFFERED}  # shown as they are by shown_env


def remote_workdir(cfg: ClusterConfig, host_name: str) -> str:
    """The directory on a remote host for its TLS files and scratch space (relative = its home)."""
    return cfg.host(host_name).workdir or f".cache/clusterctl/{cfg.name}"


def cluster_tag(cfg: ClusterConfig) -> str:
    """Names this cluster's agents on every host, so a stop can find what is left there."""
    digest = hashlib.sha1(str(cfg.state_path).encode()).hexdigest()[:10]
    return f"{cfg.name}.{digest}"


def _tls_args(cfg: ClusterConfig, tls_dir: str) -> list[str]:
    if not cfg.tls_enabled:
        return []
    join = (lambda f: f"{tls_dir}/{f}")
    return [
        "--protocol", "tls",
        "--tls-ca-file", join("ca.pem"),
        "--tls-cert", join("node.pem"),
        "--tls-key", join("node-key.pem"),
    ]


REMOTE_DASK = "dask"  # a remote spec's argv[0]: that host resolves its own Dask executable (agent, fork server)


def remote_argv(role: str, args: list[str]) -> tuple[str, ...]:
    """What runs on the other host, as people read it; the transport there resolves ``dask``."""
    return (REMOTE_DASK, role, *args)


def _tagged(cfg: ClusterConfig, env: dict[str, str]) -> dict[str, str]:
    return {**env, TAG_ENV: cluster_tag(cfg)}


DASHBOARD_LINK = "{scheme}://{host}:{port}/status"  # distributed.dashboard.link's default
_LINK_KEYS = ("distributed.dashboard.link", "diagnostics-link", "distributed.scheduler.dashboard.tls.cert")
_DASK_CONFIG_ERROR: list[Exception] = []  # why dask.config does not import here: not tried again


def dashboard_url(cfg: ClusterConfig, port: int | None = None) -> str | None:
    """The dashboard's link for `up`, `status` and the ledger: Dask's ``distributed.dashboard.link``
    (e.g. "/user/{JUPYTERHUB_USER}/proxy/{port}/status" behind jupyter-server-proxy) formatted as
    ``distributed.utils.format_dashboard_link`` does, with scheme, host, port and the environment;
    an IPv6 host in brackets. A template that does not format gives the default link and a
    warning, as Dask's own scheduler does: a display convenience must not fail a ledger write."""
    import warnings

    if not cfg.scheduler.dashboard:
        return None
    p = port if port is not None else cfg.scheduler.dashboard_port
    host = hostport(connect_host(cfg.scheduler.host), 0).rsplit(":", 1)[0]  # IPv6 in brackets
    try:
        template, scheme = _dashboard_config()
    except Exception as e:  # noqa: BLE001 - e.g. Dask refuses a malformed config file on import
        template, scheme = None, "http"
        why = (str(e).splitlines() or [repr(e)])[0].split(", original error message")[0].rstrip(":")
        warnings.warn(f"cannot read the dask config ({why}); showing the default dashboard link", stacklevel=2)
    default = DASHBOARD_LINK.format(scheme=scheme, host=host, port=p)
    if template is None or template == DASHBOARD_LINK:
        return default
    try:
        return str(template).format(**{**os.environ, "scheme": scheme, "host": host, "port": p})
    except KeyError as e:
        why = f"names {e.args[0]}, which is not set" if e.args else "does not format"
    except (IndexError, ValueError, AttributeError, TypeError) as e:
        why = f"does not format ({e})"
    warnings.warn(f"dask config distributed.dashboard.link {template!r} {why}; showing {default}", stacklevel=2)
    return default


def _dashboard_config() -> tuple[object, str]:
    """The user's link template (None: not set) and the scheme, from Dask's config: imported here,
    not at the top (every command imports this module; ~50 ms, or ~0.5 s for distributed.utils,
    where Dask's own function is), and only if a Dask config exists: the supervisor writes its
    first ledger before it starts the scheduler, so `up` does not wait for that import for nothing."""
    import sys

    if "dask.config" not in sys.modules and not _dask_config_may_set(_LINK_KEYS):
        return None, "http"
    if _DASK_CONFIG_ERROR:
        raise _DASK_CONFIG_ERROR[0]
    try:
        import dask.config
    except Exception as e:
        _DASK_CONFIG_ERROR.append(e)
        raise
    get = dask.config.get
    template = get(_LINK_KEYS[0], None) or get(_LINK_KEYS[1], None)  # its old name, renamed by distributed
    return template, "https" if get(_LINK_KEYS[2], None) else "http"


def _dask_config_may_set(keys: tuple[str, ...]) -> bool:
    """A file in Dask's search path (dask.config._get_paths, as runtime/tuning.py reads it; tests compare
    both with Dask's) or a DASK_* variable on the way to one of ``keys``."""
    import site
    import sys

    on_the_way = {".".join(k.split(".")[:i]) for k in keys for i in range(1, k.count(".") + 2)}
    if any(n == "DASK_INTERNAL_INHERIT_CONFIG" or n.startswith("DASK_") and
           n[5:].lower().replace("__", ".").replace("_", "-") in on_the_way for n in os.environ):
        return True
    env = os.environ
    paths = [env.get("DASK_ROOT_CONFIG", "/etc/dask"), *[os.path.join(p, "etc", "dask") for p in
             (sys.prefix, *getattr(site, "PREFIXES", []))], os.path.join(os.path.expanduser("~"), ".config", "dask"),
             *([env["DASK_CONFIG"]] if "DASK_CONFIG" in env else [])]
    for path in paths:
        try:
            if os.path.isfile(path) or any(os.path.splitext(f)[1].lower() in (".json", ".yaml", ".yml")
                                           for f in os.listdir(path)):
                return True
        except OSError:
            pass
    return False


def connect_host(bind_host: str) -> str:
    """Where a client on this machine reaches a bind address (0.0.0.0 is not an address)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1"}.get(bind_host, bind_host)


def worker_name(group: str, index: int) -> str:
    return f"{group}-{index}"


def scheduler_spec(cfg: ClusterConfig, launcher: Launcher) -> ProcessSpec:
    if cfg.scheduler_remote:
        return _remote_scheduler_spec(cfg)
    s = cfg.scheduler
    argv = [
        *launcher.scheduler,
        "--host", s.host,
        "--port", str(s.port),
        # An explicit host: ':PORT' would bind every interface (DASK_NOTES bind trap).
        "--dashboard-address", hostport(s.host, s.dashboard_port),
        "--scheduler-file", str(cfg.state_path / "scheduler.json"),
    ]
    # /health and /json stay up on that port; the preload mounts the pages (LAZY_DASHBOARD).
    argv.append("--no-dashboard")
    # A read-only /clusterctl/workers.json for the health probe (see scheduler_plugin.py).
    argv += ["--preload", str(SCHEDULER_PLUGIN)]
    if s.idle_timeout:
        argv += ["--idle-timeout", f"{number(s.idle_timeout)}s"]
    argv += _tls_args(cfg, str(cfg.state_path / "tls"))
    return ProcessSpec(
        name=SCHEDULER,
        role="scheduler",
        group=SCHEDULER,
        host=s.host,
        argv=tuple(argv),
        env=_tagged(cfg, {**(REQUIRE_ENCRYPTION if cfg.tls_enabled else {}), **(LAZY_DASHBOARD if s.dashboard else {})}),
        cwd=cfg.state_path,
        log_path=cfg.log_path / "scheduler.log",
        restart=s.restart,
        at=s.at or LOCAL_HOST,
        nanny=False, dashboard=s.dashboard,
    )


def _remote_scheduler_spec(cfg: ClusterConfig) -> ProcessSpec:
    """The scheduler on another host: over ssh under the agent, like a remote worker.

    Its ports are fixed (validated) and it writes no scheduler file: the file would be
    on that host, so the supervisor proves it answers over HTTP at the known address."""
    s, at = cfg.scheduler, cfg.scheduler.at
    args = [
        "--host", s.host,
        "--port", str(s.port),
        "--dashboard-address", hostport(s.host, s.dashboard_port),
    ]
    args.append("--no-dashboard")
    args += ["--preload", SCHEDULER_PLUGIN_MODULE]
    if s.idle_timeout:
        args += ["--idle-timeout", f"{number(s.idle_timeout)}s"]
    args += _tls_args(cfg, REMOTE_TLS_DIR)
    env = dict(cfg.host(at).env)
    if cfg.tls_enabled:
        env.update(REQUIRE_ENCRYPTION)
    if s.dashboard:
        env.update(LAZY_DASHBOARD)
    env.update(UNBUFFERED)
    return ProcessSpec(
        name=SCHEDULER,
        role="scheduler",
        group=SCHEDULER,
        host=s.host,
        argv=remote_argv("scheduler", args),
        env=_tagged(cfg, {}),  # the local ssh client's; the agent tags what it starts there
        cwd=cfg.state_path,
        log_path=cfg.log_path / "scheduler.log",
        restart=s.restart,
        at=at,
        remote=True,
        remote_env=env,
        remote_args=tuple(args),
        nanny=False, dashboard=s.dashboard,
    )


def worker_spec(
    cfg: ClusterConfig, launcher: Launcher, group: WorkerGroup, index: int, at: str | None = None
) -> ProcessSpec:
    name = worker_name(group.name, index)
    at = at or group.host_of(index)
    remote = cfg.host(at).remote
    host = cfg.worker_bind(group, at)
    state = "." if remote else str(cfg.state_path)  # remote paths are relative to its workdir
    memory, nthreads, resources, gpu_env = worker_settings(group, at, index)  # sized to the host (sizing.py)
    args = [
        scheduler_address(cfg),
        "--name", name,
        "--host", host,
        "--dashboard-address", hostport(host, 0),
        "--local-directory", "work" if remote else str(cfg.state_path / "work"),
        "--memory-limit", str(memory),
        # Bounds only the wait for the scheduler at start; restarts are the supervisor's job.
        "--death-timeout", f"{number(cfg.timeouts.startup)}s",
        "--nanny" if group.nanny else "--no-nanny",
        "--dashboard" if group.dashboard else "--no-dashboard",
    ]
    if nthreads:
        args += ["--nthreads", str(nthreads)]
    if resources:  # full precision: '{:g}' would turn 1234567 into 1.23457e+06
        args += ["--resources", ",".join(f"{k}={number(v)}" for k, v in sorted(resources.items()))]
    args += _tls_args(cfg, REMOTE_TLS_DIR if remote else os.path.join(state, "tls"))
    env = {**cfg.host(at).env, **group.env, **gpu_env} if remote else {**group.env, **gpu_env}
    if cfg.tls_enabled:
        env.update(REQUIRE_ENCRYPTION)
    remote_env: dict[str, str] = {}
    if remote:
        remote_env = {**env, **UNBUFFERED}
        argv = remote_argv("worker", args)
        env = {}
    else:
        argv = (*launcher.worker, *args)
    return ProcessSpec(
        name=name,
        role="worker",
        group=group.name,
        host=host,
        argv=tuple(argv),
        env=_tagged(cfg, env),
        cwd=cfg.state_path,
        log_path=cfg.log_path / f"{name}.log",
        restart=group.restart,
        at=at,
        remote=remote,
        remote_env=remote_env,
        remote_args=tuple(args) if remote else (),
        nanny=group.nanny, dashboard=group.dashboard, nice=cfg.policy(at).nice,
    )


def build_plan(cfg: ClusterConfig, launcher: Launcher, counts: dict[str, int] | None = None,
               inventories: dict[str, Inventory] | None = None) -> list[ProcessSpec]:
    """Scheduler first, then each group's workers named ``<group>-<i>``.

    ``counts`` overrides a group's size (what ``scale`` recorded); it may set 0, but it may
    not name a group the topology lacks or ask for a negative size. ``inventories`` (host name:
    what it has) sizes count: auto, memory_limit: auto and gpus: (sizing.py), unless ``cfg`` was
    sized already (sizing.Sizing.apply); a host missing from them is sized as unknown."""
    counts = dict(counts or {})
    known = {g.name for g in cfg.workers}
    for name, n in counts.items():
        if name not in known:
            raise ConfigError(
                f"scale: no worker group {name!r} in {cfg.source or 'the topology'}; "
                f"groups: {', '.join(sorted(known)) or '(none)'}"
            )
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_GROUP_WORKERS:
            raise ConfigError(f"scale: {name}={n!r} is not a worker count; use 0 to {MAX_GROUP_WORKERS}")
    if inventories is not None:
        cfg = size(cfg, inventories, counts).apply(cfg)
    specs = [scheduler_spec(cfg, launcher)]
    for group in cfg.workers:
        n = counts.get(group.name, group.planned_count)
        specs += [worker_spec(cfg, launcher, group, i, at) for i, at in enumerate(group.placement(n))]
    return specs
