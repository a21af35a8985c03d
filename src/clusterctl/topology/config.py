"""Load ``cluster.yaml`` safely and validate it once into typed models.

Every failure is a :class:`ConfigError` whose message names the file, the
line when known, the field path, the bad value and what would be accepted::

    >>> load_config("cluster.yaml")            # doctest: +SKIP
    ClusterConfig(name='walkthrough', ...)
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ConfigError
from .limits import MAX_DEPTH, MAX_FILE_BYTES, MAX_GROUP_WORKERS, MAX_NODES, MIN_MEMORY


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
BYTES_RE = re.compile(r"^\s*(\d+(\.\d+)?)\s*([kKmMgGtTpP]i?[bB]?|[bB])?\s*$")
RESERVED_GROUPS = {"scheduler"}  # the scheduler's own group in plans, ledger and status
MEMORY_HINT = (
    "use 'auto', a size such as '4GiB' or '512MB', a byte count, a fraction of RAM "
    "such as 0.5, or 0 for no limit"
)


class FieldError(ValueError):
    """A check on a whole model that blames one field inside it (for the message's path)."""

    def __init__(self, message: str, loc: tuple[Any, ...]):
        super().__init__(message)
        self.loc = loc


def _finite_number(v: Any) -> Any:
    # YAML turns `true` into a bool, which pydantic would take as 1; and .nan/.inf are no timeouts.
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is a boolean, not a number; write a number such as 1 or 2.5")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{v!r} is not a finite number; write a number such as 1 or 2.5")
    return v


# Whole numbers must be written as numbers (no `true`, no '3', no 3.0); other numbers may be
# written 1e9 (which YAML 1.1 reads as text) but never as a boolean, .nan or .inf.
Int = StrictInt
Num = Annotated[float, BeforeValidator(_finite_number)]
Bool = StrictBool


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RestartPolicy(Model):
    """How the supervisor treats a process that exits (supervision issue)."""

    policy: Literal["always", "on-failure", "never"] = "always"
    backoff_initial: Num = Field(0.5, gt=0, le=300, description="first delay, seconds")
    backoff_max: Num = Field(30.0, gt=0, le=3600, description="delay cap, seconds")
    min_uptime: Num = Field(5.0, ge=0, le=3600, description="a start counts as good after this")
    max_retries: Int = Field(5, ge=0, le=1000, description="restarts allowed within window")
    window: Num = Field(60.0, gt=0, le=86400, description="seconds over which retries count")
    unhealthy_grace: Num = Field(
        10.0, gt=0, le=3600, description="alive but unregistered for this long counts as failed"
    )


class SchedulerConfig(Model):
    host: str = Field(
        "127.0.0.1", description="address it binds; with `at:` another machine, default: that host's bind/address"
    )
    port: Int = Field(8786, ge=0, le=65535)
    dashboard_port: Int = Field(8787, ge=0, le=65535)
    dashboard: Bool = True
    idle_timeout: Num | None = Field(None, gt=0)
    restart: RestartPolicy = RestartPolicy()
    at: str | None = Field(
        None, description="host name from `hosts:` (any host; then port and dashboard_port are fixed); default: this machine"
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return _check_host(v)

    @model_validator(mode="after")
    def _ports_differ(self) -> SchedulerConfig:
        if self.port and self.port == self.dashboard_port:
            raise FieldError(
                f"{self.dashboard_port} is also scheduler.port; give the dashboard another "
                f"port, such as {self.port + 1 if self.port < 65535 else self.port - 1}",
                ("dashboard_port",),
            )
        return self


def _check_env(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    out: dict[Any, str] = {}
    for k, x in v.items():  # YAML gives 1 or true; the environment only holds text
        if not isinstance(k, str) or not k or "=" in k or "\0" in k:
            raise ValueError(
                f"environment variable name {k!r} is not valid; use a name such as "
                "OMP_NUM_THREADS (no '=')"
            )
        if isinstance(x, (dict, list)):
            raise ValueError(
                f"{k}: {x!r} is not a single value; an environment variable holds text "
                "such as '1' or 'on'"
            )
        text = "" if x is None else str(x).lower() if isinstance(x, bool) else str(x)
        if "\0" in text:
            raise ValueError(f"{k}: the value contains a NUL character")
        out[k] = text
    return out


LOCAL_HOST = "localhost"  # the head: always known, never reached over SSH
LOCAL_ADDRESSES = {"localhost", "127.0.0.1", "::1"}
SSH_OPTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*=[^\s]+$")


class HostConfig(Model):
    """One workstation of the fleet and how to reach it."""

    name: str = Field(description="what `at:` calls it")
    address: str = Field(description="what `ssh` connects to: an IP, a DNS name or a ~/.ssh/config alias")
    user: str | None = Field(None, description="SSH user; default: ~/.ssh/config's, or yours")
    port: Int | None = Field(None, ge=1, le=65535, description="SSH port; default: ~/.ssh/config's, or 22")
    identity_file: str | None = None
    python: str = Field("python3", description="interpreter there with distributed and clusterctl")
    workdir: str | None = Field(None, description="directory there for TLS files and scratch space")
    bind: str | None = Field(None, description="address its processes listen on; default: address")
    env: dict[str, str] = Field(default_factory=dict)
    ssh_options: list[str] = Field(default_factory=list, description="extra `-o Key=Value` options")
    ssh: Bool | None = Field(None, description="default: no SSH for localhost/127.0.0.1/::1")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a valid host name; use letters, digits, '_', '.', '-'")
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v.startswith("-") or any(c.isspace() for c in v) or not v:
            raise ValueError(f"{v!r} is not a host address; use an IP, a DNS name or an ~/.ssh/config alias")
        return v

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str | None) -> str | None:
        return None if v is None else _check_host(v)

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", v):
            raise ValueError(f"{v!r} is not a user name")
        return v

    @field_validator("ssh_options")
    @classmethod
    def _options(cls, v: list[str]) -> list[str]:
        for opt in v:
            if not SSH_OPTION_RE.match(opt):
                raise ValueError(f"{opt!r} is not an ssh option; write Key=Value, such as ConnectTimeout=5")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        return _check_env(v)

    @property
    def remote(self) -> bool:
        return self.ssh if self.ssh is not None else self.address.lower() not in LOCAL_ADDRESSES


Placement = str | dict[str, Int]


class WorkerGroup(Model):
    name: str = "default"
    count: Int = Field(1, ge=1, le=MAX_GROUP_WORKERS)
    at: Placement | None = Field(None, description="a host name, or {host: count}; default: this machine")
    nthreads: Int | None = Field(None, ge=1, le=1024, description="default: dask's choice")
    memory_limit: str | int | float = Field("auto", description="'auto', bytes, '4GiB' or 0.5")
    resources: dict[str, Num] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    # The supervisor restarts workers (and enforces memory_limit) itself; a nanny costs a
    # process and ~0.5 s of start-up per worker, and defeats the warm start (scripts/bench).
    nanny: Bool = False
    # Per-worker Bokeh pages. /health and /metrics are served either way; the pages
    # cost ~1 s of CPU (importing bokeh) and ~40 MB per worker. The scheduler's
    # dashboard, the one users open, is unaffected.
    dashboard: Bool = False
    host: str | None = Field(None, description="bind address; default: the scheduler's host")
    restart: RestartPolicy = RestartPolicy()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                f"{v!r} is not a valid group name; use letters, digits, '_', '.', '-' "
                "(starting with a letter or digit, at most 63 characters)"
            )
        if v in RESERVED_GROUPS:
            raise ValueError(f"{v!r} is reserved for the scheduler; name the group e.g. 'default'")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        return None if v is None else _check_host(v)

    @model_validator(mode="before")
    @classmethod
    def _count_from_placement(cls, data: Any) -> Any:
        """`at: {a: 2, b: 1}` gives the group's size; a `count:` beside it must agree."""
        if isinstance(data, dict) and isinstance(data.get("at"), dict):
            counts = data["at"]
            if counts and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in counts.values()):
                total = sum(counts.values())
                if "count" not in data:
                    data = {**data, "count": total}
                elif data["count"] != total:
                    raise FieldError(
                        f"{data['count']!r} differs from the {total} workers placed by `at:`; "
                        "drop `count:` (the placement gives the size) or make them agree",
                        ("count",),
                    )
        return data

    @field_validator("at")
    @classmethod
    def _at(cls, v: Placement | None) -> Placement | None:
        if isinstance(v, dict):
            if not v:
                raise ValueError("an empty mapping places no worker; write `at: {host: count}`")
            for name, n in v.items():
                if not 1 <= n <= MAX_GROUP_WORKERS:
                    raise ValueError(f"{name}: {n!r} workers; use a whole number from 1 to {MAX_GROUP_WORKERS}")
        return v

    def placement(self, n: int | None = None) -> list[str]:
        """The host of each worker index: `at:` order first, then round-robin when scaled past it."""
        n = self.count if n is None else n
        if self.at is None:
            return [LOCAL_HOST] * n
        if isinstance(self.at, str):
            return [self.at] * n
        slots = [h for h, k in self.at.items() for _ in range(k)]
        names = list(self.at)
        return [slots[i] if i < len(slots) else names[(i - len(slots)) % len(names)] for i in range(n)]

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        """Accept only what `dask worker --memory-limit` reads the way the user meant."""
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"{v!r} is not a memory limit; {MEMORY_HINT}")
        if isinstance(v, str):
            text = v.strip()
            if text.lower() == "auto":
                return "auto"
            m = BYTES_RE.match(text)
            if not m:
                raise ValueError(f"{v!r} is not a size; {MEMORY_HINT}")
            if not m.group(3):  # a bare number written as text: same rules as a number
                v = float(m.group(1)) if m.group(2) else int(m.group(1))
            else:
                size = _size_in_bytes(float(m.group(1)), m.group(3))
                if 0 < size < MIN_MEMORY:
                    raise ValueError(
                        f"{v!r} is {int(size)} bytes, too small for a worker; "
                        "did you mean MB or GB? (0 means no limit)"
                    )
                return text.replace(" ", "")
        if not math.isfinite(v):
            raise ValueError(f"{v!r} is not a memory limit; {MEMORY_HINT}")
        if v < 0:
            raise ValueError(f"{v!r} is negative; {MEMORY_HINT}")
        if isinstance(v, float) and v > 1:
            # dask reads a float above 1 as bytes and truncates it: 2.5 would mean 2 bytes.
            if not v.is_integer():
                raise ValueError(
                    f"{v!r} is neither a fraction of RAM (0 to 1) nor a whole byte count; "
                    f"{MEMORY_HINT}"
                )
            v = int(v)
        if isinstance(v, int) and 1 < v < MIN_MEMORY:
            raise ValueError(
                f"{v!r} bytes is too small for a worker; did you mean '{v}MB'? (0 means no limit)"
            )
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, float]) -> dict[str, float]:
        for key, amount in v.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"resource name {key!r} must be an identifier like GPU or MEM")
            if amount < 0:
                raise ValueError(f"resource {key}={amount!r} is negative; use 0 or more")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        return _check_env(v)


class TlsConfig(Model):
    """Mutual TLS with a per-cluster CA (see tls.py)."""

    enabled: Literal["auto"] | Bool = Field(
        "auto", description="auto: on whenever a process binds beyond loopback (unless `insecure: true`)"
    )


class Timeouts(Model):
    startup: Num = Field(60.0, gt=0, le=3600, description="seconds to become healthy")
    shutdown: Num = Field(10.0, gt=0, le=3600, description="graceful stop before force")


class ClusterConfig(Model):
    name: str = "clusterctl"
    scheduler: SchedulerConfig = SchedulerConfig()
    workers: list[WorkerGroup] = Field(default_factory=lambda: [WorkerGroup(count=3)])
    state_dir: str = ".clusterctl"
    log_dir: str | None = None
    timeouts: Timeouts = Timeouts()
    python: str | None = Field(None, description="Python interpreter that has distributed")
    bin_dir: str | None = Field(None, description="directory holding the `dask` executable")
    insecure: Bool = Field(False, description="allow plain TCP beyond loopback")
    tls: TlsConfig = TlsConfig()
    hosts: list[HostConfig] = Field(default_factory=list)
    launch: Literal["concurrent", "sequential"] = Field(
        "concurrent",
        description="concurrent: start workers with the scheduler (they wait for it); "
        "sequential: only after it answers. A scheduler on port 0 is always sequential.",
    )

    # Resolved at load time, never read from YAML.
    source: Path | None = Field(None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a valid cluster name; use letters, digits, '_', '.', '-'")
        return v

    @field_validator("workers")
    @classmethod
    def _groups(cls, v: list[WorkerGroup]) -> list[WorkerGroup]:
        seen: dict[str, int] = {}
        for i, group in enumerate(v):
            if group.name in seen:
                raise FieldError(
                    f"{group.name!r} is already the name of workers[{seen[group.name]}]; "
                    "give every group a different name",
                    (i, "name"),
                )
            seen[group.name] = i
        return v

    @model_validator(mode="after")
    def _fleet(self) -> ClusterConfig:
        """Host names are valid, addresses unique, every placement names a known host."""
        seen: dict[tuple[str, int], str] = {}
        names: dict[str, int] = {}
        for i, h in enumerate(self.hosts):
            if h.name in names:
                raise FieldError(
                    f"{h.name!r} is already the name of hosts[{names[h.name]}]; give every host a different name",
                    ("hosts", i, "name"),
                )
            names[h.name] = i
            key = (h.address.lower().rstrip("."), h.port or 22)
            if key in seen:
                raise FieldError(
                    f"{h.address!r} is also the address of host {seen[key]!r}; one machine is one host "
                    "(give it a higher count instead)",
                    ("hosts", i, "address"),
                )
            seen[key] = h.name
        if self.scheduler.at is not None:
            self._known_host(self.scheduler.at, ("scheduler", "at"))
            if self.scheduler_remote:
                self._remote_scheduler()
        for i, g in enumerate(self.workers):
            if isinstance(g.at, str):
                self._known_host(g.at, ("workers", i, "at"))
            elif isinstance(g.at, dict):
                for name in g.at:
                    self._known_host(name, ("workers", i, "at", name))
        self._scheduler_reachable()
        return self

    @model_validator(mode="before")
    @classmethod
    def _remote_scheduler_binds_its_host(cls, data: Any) -> Any:
        """`scheduler: {at: ws1}` without `host:` binds ws1's address (`bind:`, else `address:`).

        Filled in before validation, so every later check (TLS, reachability) and every
        reader of `scheduler.host` (plan, probes, doctor) sees the address really used."""
        if not isinstance(data, dict):
            return data
        sched, hosts = data.get("scheduler"), data.get("hosts")
        if not isinstance(sched, dict) or "host" in sched or not isinstance(sched.get("at"), str):
            return data
        if not isinstance(hosts, list):
            return data
        index, h = next(((i, x) for i, x in enumerate(hosts) if isinstance(x, dict) and x.get("name") == sched["at"]),
                        (None, None))
        if h is None:
            return data
        address, ssh = h.get("address"), h.get("ssh")
        if not isinstance(address, str):
            return data  # the host's own validation names the problem
        remote = ssh if isinstance(ssh, bool) else address.lower() not in LOCAL_ADDRESSES
        if not remote:
            return data
        field = "bind" if h.get("bind") is not None else "address"
        bind = h.get(field)
        if not isinstance(bind, str):
            return data
        try:
            bind = _check_host(bind)
        except ValueError:
            raise FieldError(
                f"{bind!r} is what the scheduler on host {sched['at']!r} would bind, and it is no IP "
                "address or host name; set `bind:` to that machine's IP (or set scheduler.host)",
                ("hosts", index, field),
            ) from None
        return {**data, "scheduler": {**sched, "host": bind}}

    @property
    def scheduler_remote(self) -> bool:
        """True when the scheduler runs on another machine, reached over SSH."""
        return self.scheduler.at is not None and self.host(self.scheduler.at).remote

    def _remote_scheduler(self) -> None:
        """A scheduler over SSH: the head must reach it at an address and ports known in advance."""
        s, name = self.scheduler, self.scheduler.at
        h = self.host(name)
        for key, port in (("port", s.port), ("dashboard_port", s.dashboard_port)):
            if port == 0:
                raise FieldError(
                    f"0 (any free port) cannot be used by a scheduler on host {name!r}: the head could "
                    f"not learn the port chosen there; give a fixed port such as {8786 if key == 'port' else 8787}",
                    ("scheduler", key),
                )
        if s.host in ("0.0.0.0", "::", "*"):
            raise FieldError(
                f"{s.host!r} is no address the head can connect to on host {name!r}; drop `host:` "
                f"(the scheduler then binds {h.bind or h.address}) or write that machine's address",
                ("scheduler", "host"),
            )
        if is_loopback(s.host) and not is_loopback(h.bind or h.address):
            raise FieldError(
                f"{s.host!r} is loopback on host {name!r}, out of reach of this machine and the workers; "
                f"drop `host:` (the scheduler then binds {h.bind or h.address}) or write that machine's address",
                ("scheduler", "host"),
            )

    def _known_host(self, name: str, loc: tuple[Any, ...]) -> None:
        known = sorted({LOCAL_HOST, *(h.name for h in self.hosts)})
        if name in known:
            return
        guess = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        raise FieldError(f"{name!r} is not a host of this topology; {hint}known hosts: {', '.join(known)}", loc)

    def _scheduler_reachable(self) -> None:
        """Workers on other machines must be able to reach the address the scheduler binds."""
        sched = self.scheduler.host
        for i, g in enumerate(self.workers):
            for name in dict.fromkeys(g.placement()):
                h = self.host(name)
                if not h.remote:
                    if self.scheduler_remote and not g.host and not is_loopback(sched):
                        raise FieldError(
                            f"workers on this machine need an address the scheduler on host "
                            f"{self.scheduler.at!r} ({sched}) can reach; set `host:` to this machine's "
                            "address on that network",
                            ("workers", i, "host"),
                        )
                    continue
                if sched in ("0.0.0.0", "::", "*"):
                    raise FieldError(
                        f"{sched!r} is no address workers on host {name!r} can connect to; bind the "
                        "address of this machine on their network",
                        ("scheduler", "host"),
                    )
                there = h.bind or h.address
                if is_loopback(sched) and not is_loopback(there):
                    raise FieldError(
                        f"{sched!r} is loopback, out of reach of workers on host {name!r} ({there}); bind "
                        "the address of this machine on their network (TLS is then on by default)",
                        ("scheduler", "host"),
                    )

    # -- fleet -------------------------------------------------------------
    def host(self, name: str) -> HostConfig:
        """A host by name; `localhost` is always this machine."""
        for h in self.hosts:
            if h.name == name:
                return h
        if name == LOCAL_HOST:
            return HostConfig(name=LOCAL_HOST, address="localhost", ssh=False)
        raise KeyError(name)

    def remote_hosts(self) -> list[str]:
        """Names of the hosts reached over SSH that run something, in topology order."""
        used = [self.scheduler.at or LOCAL_HOST] + [h for g in self.workers for h in g.placement()]
        return [h for h in dict.fromkeys(used) if self.host(h).remote]

    def worker_bind(self, group: WorkerGroup, host_name: str) -> str:
        """The address a worker of `group` on `host_name` listens on."""
        if group.host:
            return group.host
        h = self.host(host_name)
        if h.remote:
            return h.bind or h.address
        if self.scheduler_remote:  # scheduler.host is another machine's; loopback (validated)
            return "127.0.0.1"
        return self.scheduler.host

    def binds(self) -> list[tuple[tuple[Any, ...], str]]:
        """Every address some process listens on, with the field that chose it."""
        out: list[tuple[tuple[Any, ...], str]] = [(self._scheduler_host_loc(), self.scheduler.host)]
        for i, g in enumerate(self.workers):
            if g.host:
                out.append((("workers", i, "host"), g.host))
            for name in dict.fromkeys(g.placement()):
                h = self.host(name)
                if h.remote and not g.host:
                    field = "bind" if h.bind else "address"
                    index = next(j for j, x in enumerate(self.hosts) if x.name == name)
                    out.append((("hosts", index, field), h.bind or h.address))
        return out

    def _scheduler_host_loc(self) -> tuple[Any, ...]:
        """The field that chose the scheduler's address: its host's, when filled in from there."""
        if self.scheduler_remote:
            h = self.host(self.scheduler.at)
            if self.scheduler.host == (h.bind or h.address):
                index = next(j for j, x in enumerate(self.hosts) if x.name == h.name)
                return ("hosts", index, "bind" if h.bind else "address")
        return ("scheduler", "host")

    @property
    def exposed(self) -> bool:
        """True when some process listens beyond loopback."""
        return any(not is_loopback(host) for _, host in self.binds())

    @property
    def tls_enabled(self) -> bool:
        if self.tls.enabled == "auto":
            return self.exposed and not self.insecure
        return bool(self.tls.enabled)

    @property
    def protocol(self) -> str:
        return "tls" if self.tls_enabled else "tcp"

    def tls_names(self) -> set[str]:
        """What the node certificate's SANs list: every address of every process."""
        names = {"localhost", "127.0.0.1"}
        names |= {h.strip("[]") for _, h in self.binds() if h not in ("0.0.0.0", "::", "*")}
        names |= {self.host(h).address for h in self.remote_hosts()}
        return names

    def warnings(self) -> list[str]:
        """What `validate` and `up` say before going on: today only plain TCP beyond loopback."""
        if self.tls_enabled or not self.exposed:
            return []
        wide = sorted({h for _, h in self.binds() if not is_loopback(h)})
        return [
            f"insecure: true: plain TCP on {', '.join(wide)}; anyone who reaches these addresses can run "
            "code on them. Remove `insecure: true` to use TLS."
        ]

    # -- derived paths ---------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def state_path(self) -> Path:
        return (self.base_dir / os.path.expanduser(self.state_dir)).resolve() / self.name

    @property
    def log_path(self) -> Path:
        if self.log_dir:
            return (self.base_dir / os.path.expanduser(self.log_dir)).resolve() / self.name
        return self.state_path / "logs"

    def group(self, name: str) -> WorkerGroup:
        for g in self.workers:
            if g.name == name:
                return g
        raise KeyError(name)


def _check_host(v: str) -> str:
    v = v.strip()
    if v.startswith("[") and v.endswith("]"):  # '[::1]': brackets belong to host:port, not the host
        v = v[1:-1]
    if not v:
        raise ValueError("host is empty; use an address such as 127.0.0.1")
    if v in ("0.0.0.0", "::", "*"):
        return v  # allowed only with insecure: true (checked with the whole config)
    try:
        ipaddress.ip_address(v)
        return v
    except ValueError:
        pass
    if re.match(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$", v):
        return v
    raise ValueError(f"{v!r} is not an IP address or host name")


def is_loopback(host: str) -> bool:
    """True only for addresses no other machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _size_in_bytes(number: float, unit: str) -> float:
    """What dask.utils.parse_bytes makes of '<number><unit>' (k = 1000, Ki = 1024)."""
    unit = unit.lower().rstrip("b")
    if not unit:
        return number
    power = "kmgtp".index(unit[0]) + 1
    return number * ((1024 if unit.endswith("i") else 1000) ** power)


# -- loading -------------------------------------------------------------

STR_TAG = "tag:yaml.org,2002:str"
MERGE_TAG = "tag:yaml.org,2002:merge"

FIELD_HINTS = {
    "port": "use 1-65535, or 0 for any free port",
    "dashboard_port": "use 1-65535, or 0 for any free port",
    "count": f"use a whole number from 1 to {MAX_GROUP_WORKERS}",
    "nthreads": "use a whole number from 1 to 1024, or leave it out for dask's choice",
    "max_retries": "use a whole number from 0 to 1000",
}
TYPE_HINTS = {
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "int_type": "write a whole number such as 3",
    "int_parsing": "write a whole number such as 3",
    "int_from_float": "write a whole number such as 3",
    "float_type": "write a number such as 2.5",
    "float_parsing": "write a number such as 2.5",
    "string_type": "write text, quoted if it looks like a number",
    "list_type": "write a YAML list, one `- item` per line",
    "dict_type": "write a YAML mapping of `key: value` lines",
    "model_type": "write a YAML mapping of `key: value` lines",
}


def default_config_path() -> Path:
    return Path(os.environ.get("CLUSTERCTL_CONFIG") or "cluster.yaml")


def _one_line(func):
    """Every ConfigError leaves as one line: the CLI prints it as is, after `error:`."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ConfigError as e:
            text = str(e)
            if "\n" in text or "\r" in text:
                raise ConfigError(" ".join(text.split())) from None
            raise

    return wrapper


@_one_line
def load_config(path: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """Read, parse and validate a topology file; raise ConfigError on any problem."""
    p = Path(path) if path else default_config_path()
    try:
        if p.is_dir():
            raise ConfigError(f"{p}: is a directory; point -f at a cluster.yaml file")
        with open(p, "rb") as f:  # read with a cap: a FIFO or /dev/zero has no honest size
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(
                f"{p}: more than {MAX_FILE_BYTES} bytes is too large for a topology; "
                "is -f pointing at the right file?"
            )
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such file; create it (see cluster.yaml in the clusterctl project), "
            "pass -f FILE or set CLUSTERCTL_CONFIG"
        ) from None
    except PermissionError:
        raise ConfigError(f"{p}: permission denied; make it readable by this user") from None
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{p}, line {line}: not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); "
            "save the file as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    return parse_config(text, source=p)


@_one_line
def parse_config(text: str, source: Path | None = None) -> ClusterConfig:
    label = str(source) if source else "<config>"
    data, root = _parse_yaml(text, label)
    if data is None:
        raise ConfigError(
            f"{label}: the file is empty; it needs at least `workers:` (a list of groups "
            "such as `- name: default` with `count: 3`)"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{label}: the top level is a {_yaml_kind(data)}, not a mapping of keys such as "
            "`name:`, `scheduler:`, `workers:`"
        )
    try:
        cfg = ClusterConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, label, root)) from None
    _check_exposure(cfg, label, root)
    base = source.resolve().parent if source else None
    return cfg.model_copy(
        update={
            "source": source.resolve() if source else None,
            "python": _pinned_path(cfg.python, base, bare_name_ok=True),
            "bin_dir": _pinned_path(cfg.bin_dir, base, bare_name_ok=False),
        }
    )


def _pinned_path(value: str | None, base: Path | None, *, bare_name_ok: bool) -> str | None:
    """`python:`/`bin_dir:` relative to the file that names them, as `state_dir:` is.

    A bare interpreter name such as `python3` stays a name: resolve looks it up on PATH."""
    if not value:
        return value
    value = os.path.expanduser(value)
    if bare_name_ok and not any(sep in value for sep in ("/", "\\")):
        return value
    if base is None or os.path.isabs(value):
        return value
    return str(base / value)


def _check_exposure(cfg: ClusterConfig, label: str, root: yaml.Node | None) -> None:
    """Refuse plain TCP beyond loopback unless the topology says so in words."""
    if cfg.insecure or cfg.tls_enabled:
        return
    for loc, host in cfg.binds():
        if not is_loopback(host):
            line = _line_of(root, loc)
            where = f"{label}, line {line}" if line else label
            raise ConfigError(
                f"{where}: {_format_loc(loc)}: {host!r} is reachable beyond this machine, and a "
                "plain-TCP Dask endpoint runs any code sent to it; bind 127.0.0.1, remove "
                "`tls: {enabled: false}` (TLS is on by default there), or set `insecure: true` "
                "if every machine on that network is trusted"
            )


def _parse_yaml(text: str, label: str) -> tuple[Any, yaml.Node | None]:
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters already: keep it inside the try
        root = loader.get_single_node()
        if root is None:
            return None, None
        count = _expanded_size(root, {}, set(), 0, label)
        if count > MAX_NODES:
            raise ConfigError(
                f"{label}: the document expands to more than {MAX_NODES} values through "
                "YAML aliases; refusing it (write the values out, or use fewer aliases)"
            )
        _check_keys(root, (), label)
        return loader.construct_document(root), root
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1 if isinstance(e.position, int) else None
        where = f"{label}, line {line}" if line else label
        char = e.character if isinstance(e.character, str) else chr(e.character)
        raise ConfigError(
            f"{where}: character {char!r} is not allowed in YAML; remove it or write it "
            "as an escape inside double quotes"
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "an unknown place"
        context = e.context
        if context and e.context_mark and mark and e.context_mark.line != mark.line:
            context += f" that starts at line {e.context_mark.line + 1}"  # e.g. an unclosed '['
        problem = "; ".join(p for p in (context, e.problem) if p) or "invalid YAML"
        raise ConfigError(
            f"{label}: YAML syntax error at {where}: {problem}; check the indentation and "
            "quoting there"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: invalid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(
            f"{label}: the document nests too deeply (the limit is {MAX_DEPTH} levels)"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def _expanded_size(
    node: yaml.Node, memo: dict[int, int], active: set[int], depth: int, label: str
) -> int:
    """Count values as if every alias were copied out, memoised so it stays cheap."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise ConfigError(
            f"{label}, line {node.start_mark.line + 1}: a YAML alias refers to the value that "
            "contains it (a recursive alias); write the value out instead"
        )
    if depth > MAX_DEPTH:
        raise ConfigError(
            f"{label}, line {node.start_mark.line + 1}: the document nests more than "
            f"{MAX_DEPTH} levels deep; a topology needs a handful"
        )
    active.add(key)
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(n, memo, active, depth + 1, label) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(
            _expanded_size(k, memo, active, depth + 1, label)
            + _expanded_size(v, memo, active, depth + 1, label)
            for k, v in node.value
        )
    else:
        total = 1
    active.discard(key)
    total = min(total, MAX_NODES + 1)
    memo[key] = total
    return total


def _check_keys(node: yaml.Node, loc: tuple[Any, ...], label: str, seen: set[int] | None = None) -> None:
    """Keys are text and appear once per mapping (YAML would keep the last one silently)."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias: its node was checked where the anchor stands
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_keys(item, (*loc, i), label, seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for k, v in node.value:
            line = k.start_mark.line + 1
            if isinstance(k, yaml.ScalarNode) and k.tag == MERGE_TAG:
                _check_keys(v, loc, label, seen)
                continue
            if not isinstance(k, yaml.ScalarNode) or k.tag != STR_TAG:
                shown = k.value if isinstance(k, yaml.ScalarNode) else "a list or mapping"
                hint = "write a name, quoted if it looks like a number"
                if str(shown).lower() in ("on", "off", "yes", "no", "y", "n"):
                    hint = f"YAML reads {shown} as a boolean; quote it" + (
                        ", or place workers with `at:`" if str(shown).lower() == "on" else ""
                    )
                raise ConfigError(
                    f"{label}, line {line}: {_format_loc(loc)}: key {shown!r} is not text; {hint}"
                )
            if k.value in first:
                raise ConfigError(
                    f"{label}, line {line}: {_format_loc((*loc, k.value))}: duplicate key (first "
                    f"at line {first[k.value]}); YAML would silently keep only the last, so "
                    "keep one"
                )
            first[k.value] = line
            _check_keys(v, (*loc, k.value), label, seen)


def _yaml_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(e: ValidationError, label: str, root: yaml.Node | None) -> str:
    """One line for the first problem, naming path, value and the fix."""
    errors = e.errors(include_url=False)
    # A misspelt key also shows up as the right key "missing": name the typo, it is the cause.
    errors.sort(key=lambda x: x["type"] != "extra_forbidden")
    err = errors[0]
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):  # a whole-model check that blames one field inside it
        loc += cause.loc
    path = _format_loc(loc)
    line = _line_of(root, loc)
    where = f"{label}, line {line}" if line else label
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = sorted(model.model_fields) if model else []
        known = [k for k in known if k != "source"]
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        msg = f"{path}: unknown key; {hint}known keys here: {', '.join(known)}"
    elif kind == "missing":
        msg = f"{path}: required but missing"
    elif kind == "value_error":  # our own validators name the value and the fix
        msg = f"{path}: {err['msg'].removeprefix('Value error, ')}"
    else:
        field = next((p for p in reversed(loc) if isinstance(p, str)), "")
        hint = FIELD_HINTS.get(field) or TYPE_HINTS.get(kind)
        msg = f"{path}: {err['msg']} (got {_short(value)})" + (f"; {hint}" if hint else "")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {msg}{more}"


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(part)):
            out += ("." if out else "") + str(part)
        else:
            out += f"[{str(part)!r}]"
    return out or "(top level)"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = ClusterConfig
    keyed = False  # the last field was a mapping of name -> model (hosts): skip the name
    for part in loc:
        if isinstance(part, int):
            continue
        if keyed:
            keyed = False
            continue
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        keyed = getattr(ann, "__origin__", None) is dict
        candidates = [ann, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest part of ``loc`` that the document spells out."""
    node = root
    found = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if getattr(k, "value", None) == part:
                    found = k.start_mark.line + 1
                    node = v
                    break
            else:
                return found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            found = node.start_mark.line + 1
        else:
            return found
    return found
