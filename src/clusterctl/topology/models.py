"""The whole topology: ClusterConfig and the checks that need more than one of its parts.

The parts live in base.py (RestartPolicy), hosts.py (HostConfig) and workers.py (WorkerGroup);
they are re-exported here so `models` is the one place to import a model from.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import NAME_RE, Bool, FieldError, Int, Model, Num, RestartPolicy
from .hosts import LOCAL_ADDRESSES, LOCAL_HOST, HostConfig, _check_host, is_loopback
from .workers import WorkerGroup

__all__ = [
    "LOCAL_HOST", "ClusterConfig", "HostConfig", "Model", "RestartPolicy", "SchedulerConfig", "TlsConfig",
    "Timeouts", "WorkerGroup", "is_loopback",
]

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
