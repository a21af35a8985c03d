"""The whole topology: ClusterConfig and the checks that need more than one of its parts.

The parts live in base.py (RestartPolicy), hosts.py (HostConfig) and workers.py (WorkerGroup);
they are re-exported here so `models` is the one place to import a model from.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from . import checks
from .base import NAME_RE, Bool, FieldError, Int, Model, Num, RestartPolicy
from .hosts import LOCAL_HOST, HostConfig, _check_host, is_loopback, is_this_machine
from .limits import DEFAULT_MAX_WORKERS, MAX_WORKERS_CEILING
from .owner import HostPolicy, PolicyKeys, merged
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
        # Even with `dashboard: false` the scheduler serves /health (and clusterctl's probe) on its
        # HTTP port: one port for both fails with "Address already in use" (checked with dask 2026.8).
        if self.port and self.port == self.dashboard_port:
            raise FieldError(
                f"{self.dashboard_port} is also scheduler.port, and the scheduler's HTTP port (/health, "
                "served even with `dashboard: false`) needs its own; give the dashboard another "
                f"port, such as {self.port + 1 if self.port < 65535 else self.port - 1}",
                ("dashboard_port",),
            )
        return self


class TlsConfig(Model):
    """Mutual TLS with a per-cluster CA (see tls.py)."""

    enabled: Literal["auto"] | Bool = Field(
        "auto", description="auto (the default): on, loopback included, unless `insecure: true`; false: plain "
        "TCP, on loopback only (any local user can then run code as you)"
    )


class Timeouts(Model):
    startup: Num = Field(60.0, gt=0, le=3600, description="seconds to become healthy")
    shutdown: Num = Field(10.0, gt=0, le=3600, description="graceful stop before force")


class ClusterConfig(PolicyKeys):
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
    max_workers: Int = Field(
        DEFAULT_MAX_WORKERS, ge=1, le=MAX_WORKERS_CEILING,
        description="workers of all groups together, also after scale and worker add",
    )
    launch: Literal["concurrent", "sequential"] = Field(
        "concurrent",
        description="concurrent: start workers with the scheduler (they wait for it); "
        "sequential: only after it answers. A scheduler on port 0 is always sequential.",
    )
    versions: Literal["strict", "warn"] = Field(
        "strict", description="strict: `up` refuses a host whose Dask stack differs from this machine's; warn: says so"
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
        checks.fleet(self)
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
        remote = ssh if isinstance(ssh, bool) else not is_this_machine(address)
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

    # -- fleet -------------------------------------------------------------
    # Everything below is asked once per worker while planning: each answer is computed once
    # (cached on this frozen model), so planning N workers costs O(N), not O(N * groups * hosts).
    @cached_property
    def _host_index(self) -> dict[str, tuple[int | None, HostConfig]]:
        """Host name -> (its index in `hosts:`, the host); `localhost` is this machine."""
        index: dict[str, tuple[int | None, HostConfig]] = {}
        for i, h in enumerate(self.hosts):
            index.setdefault(h.name, (i, h))
        index.setdefault(LOCAL_HOST, (None, HostConfig.model_construct(name=LOCAL_HOST, address="localhost", ssh=False)))
        return index

    def policy(self, name: str) -> HostPolicy:
        """The owner, hours, nice and reserve that apply on a host: its own keys, else the top level's."""
        return merged(self, None if name == LOCAL_HOST else self.host(name))

    def host(self, name: str) -> HostConfig:
        """A host by name; `localhost` is always this machine."""
        return self._host_index[name][1]

    def used_hosts(self) -> list[str]:
        """Every host something runs on (or may, once scaled): the scheduler's first, each once."""
        return list(self._used_hosts)

    @cached_property
    def _used_hosts(self) -> tuple[str, ...]:
        used = [self.scheduler.at or LOCAL_HOST] + [h for g in self.workers for h in g.hosts_used]
        return tuple(dict.fromkeys(used))

    def remote_hosts(self) -> list[str]:
        """Names of the hosts reached over SSH that run something, in topology order."""
        return [h for h in self._used_hosts if self.host(h).remote]

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
        return list(self._binds)

    @cached_property
    def _binds(self) -> tuple[tuple[tuple[Any, ...], str], ...]:
        out: list[tuple[tuple[Any, ...], str]] = [(self._scheduler_host_loc(), self.scheduler.host)]
        for i, g in enumerate(self.workers):
            if g.host:
                out.append((("workers", i, "host"), g.host))
            for name in g.hosts_used:
                index, h = self._host_index[name]
                if h.remote and not g.host:
                    field = "bind" if h.bind else "address"
                    out.append((("hosts", index, field), h.bind or h.address))
        return tuple(out)

    def _scheduler_host_loc(self) -> tuple[Any, ...]:
        """The field that chose the scheduler's address: its host's, when filled in from there."""
        if self.scheduler_remote:
            index, h = self._host_index[self.scheduler.at]  # type: ignore[index]
            if self.scheduler.host == (h.bind or h.address):
                return ("hosts", index, "bind" if h.bind else "address")
        return ("scheduler", "host")

    @cached_property
    def exposed(self) -> bool:
        """True when some process listens beyond loopback."""
        return any(not is_loopback(host) for _, host in self._binds)

    @cached_property
    def tls_enabled(self) -> bool:
        if self.tls.enabled == "auto":
            return not self.insecure
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
        """What `validate` and `up` say before going on: plain TCP beyond loopback, privileged ports."""
        out = []
        if not self.tls_enabled and self.exposed:
            wide = sorted({h for _, h in self._binds if not is_loopback(h)})
            out.append(
                f"insecure: true: plain TCP on {', '.join(wide)}; anyone who reaches these addresses can run "
                "code on them. Remove `insecure: true` to use TLS."
            )
        elif not self.tls_enabled:
            why = "insecure: true" if self.tls.enabled == "auto" else "tls: {enabled: false}"
            out.append(f"{why}: plain TCP on loopback; any local user can run code as you on this cluster. "
                       "Remove it to use TLS (the default).")
        return out + checks.privileged_ports(self)

    # -- derived paths ---------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @cached_property
    def state_path(self) -> Path:
        return (self.base_dir / os.path.expanduser(self.state_dir)).resolve() / self.name

    @cached_property
    def log_path(self) -> Path:
        if self.log_dir:
            return (self.base_dir / os.path.expanduser(self.log_dir)).resolve() / self.name
        return self.state_path / "logs"

    def group(self, name: str) -> WorkerGroup:
        """A group by name (KeyError if none)."""
        return self._groups_by_name[name]

    @cached_property
    def _groups_by_name(self) -> dict[str, WorkerGroup]:
        return {g.name: g for g in self.workers}
