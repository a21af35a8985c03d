"""The checks on a whole ClusterConfig that need more than one of its parts.

Each raises a FieldError naming the field to blame (the message gives its line); each costs
O(groups + hosts), never O(workers): a file of 16 groups of 1,024 is checked as fast as one.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from .base import FieldError
from .hosts import LOCAL_HOST, first_unprivileged_port, is_loopback
from .limits import MAX_WORKERS_CEILING, PRIVILEGED_PORTS

if TYPE_CHECKING:
    from .models import ClusterConfig

WILDCARDS = ("0.0.0.0", "::", "*")


def fleet(cfg: ClusterConfig) -> None:
    """At most max_workers in all; host names and addresses unique; every placement names a known
    host; every process listens where those that dial it can reach it."""
    total_within_cap(cfg)
    unique_hosts(cfg)
    if cfg.scheduler.at is not None:
        known_host(cfg, cfg.scheduler.at, ("scheduler", "at"))
        if cfg.scheduler_remote:
            remote_scheduler(cfg)
    for i, g in enumerate(cfg.workers):
        if isinstance(g.at, str):
            known_host(cfg, g.at, ("workers", i, "at"))
        elif isinstance(g.at, list):
            for j, name in enumerate(g.at):
                known_host(cfg, name, ("workers", i, "at", j))
        elif isinstance(g.at, dict):
            for name in g.at:
                known_host(cfg, name, ("workers", i, "at", name))
    scheduler_reachable(cfg)


def total_within_cap(cfg: ClusterConfig) -> None:
    total = sum(g.count for g in cfg.workers)
    if total <= cfg.max_workers:
        return
    fix = (
        f"raise `max_workers:` to {total} or lower the groups' counts"
        if total <= MAX_WORKERS_CEILING
        else f"lower the groups' counts (`max_workers:` goes up to {MAX_WORKERS_CEILING})"
    )
    raise FieldError(
        f"{total} workers in all ({len(cfg.workers)} groups) is more than max_workers, {cfg.max_workers}; {fix}",
        ("workers",),
    )


def unique_hosts(cfg: ClusterConfig) -> None:
    seen: dict[tuple[str, int], str] = {}
    names: dict[str, int] = {}
    for i, h in enumerate(cfg.hosts):
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


def known_host(cfg: ClusterConfig, name: str, loc: tuple[Any, ...]) -> None:
    try:
        cfg.host(name)  # a dict lookup: cheap however many hosts and groups there are
        return
    except KeyError:
        pass
    known = sorted({LOCAL_HOST, *(h.name for h in cfg.hosts)})
    guess = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    raise FieldError(f"{name!r} is not a host of this topology; {hint}known hosts: {', '.join(known)}", loc)


def remote_scheduler(cfg: ClusterConfig) -> None:
    """A scheduler over SSH: the head must reach it at an address and ports known in advance."""
    s, name = cfg.scheduler, cfg.scheduler.at
    h = cfg.host(name)  # type: ignore[arg-type]
    for key, port in (("port", s.port), ("dashboard_port", s.dashboard_port)):
        if port == 0:
            raise FieldError(
                f"0 (any free port) cannot be used by a scheduler on host {name!r}: the head could "
                f"not learn the port chosen there; give a fixed port such as {8786 if key == 'port' else 8787}",
                ("scheduler", key),
            )
    if s.host in WILDCARDS:
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


def scheduler_reachable(cfg: ClusterConfig) -> None:
    """Workers on other machines must reach the scheduler's address, and it theirs."""
    sched = cfg.scheduler.host
    for i, g in enumerate(cfg.workers):
        for name in g.hosts_used:
            h = cfg.host(name)
            if g.host and h.remote and is_loopback(g.host) and not is_loopback(h.address):
                raise FieldError(
                    f"{g.host!r} is loopback, and this group runs on host {name!r} ({h.address}), another "
                    "machine: its workers would be out of reach of the scheduler there; drop `host:` (they "
                    f"then bind {h.bind or h.address}) or write that machine's address",
                    ("workers", i, "host"),
                )
            if not h.remote:
                if cfg.scheduler_remote and not g.host and not is_loopback(sched):
                    raise FieldError(
                        f"workers on this machine need an address the scheduler on host "
                        f"{cfg.scheduler.at!r} ({sched}) can reach; set `host:` to this machine's "
                        "address on that network",
                        ("workers", i, "host"),
                    )
                continue
            if sched in WILDCARDS:
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


def privileged_ports(cfg: ClusterConfig) -> list[str]:
    """Warnings for scheduler ports below 1024 when this user may not bind them.

    A warning, not an error: only binding tells for sure (a capability, a lowered sysctl, or
    `up` run by another user than `validate`), and `up` then refuses with the same words."""
    if cfg.scheduler_remote:
        return []  # bound by that host's user: `up` checks the ports there
    s = cfg.scheduler
    low = [(k, p) for k, p in (("port", s.port), ("dashboard_port", s.dashboard_port)) if 0 < p < PRIVILEGED_PORTS]
    limit = first_unprivileged_port() if low else 0
    return [
        f"scheduler.{key}: port {port} needs root (ports below {limit} are privileged) and this user is "
        f"not root: `up` would fail to bind it; choose a port from {limit} up, such as "
        f"{8786 if key == 'port' else 8787}"
        for key, port in low if port < limit
    ]
