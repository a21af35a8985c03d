"""Sized to the machine (pure): each host's inventory in, each group's workers and settings there out.

    >>> sizing = size(cfg, {"localhost": Inventory(cores=4, memory=16 * GiB)})   # doctest: +SKIP
    >>> sizing.lines()
    ['localhost: 4 cores, 16.0 GiB -> 4 workers x 1 thread, 3.6 GiB each (reserve 2.0 GiB)']
    >>> cfg = sizing.apply(cfg)            # the groups carry their HostShare per host; build_plan reads them

The rules (docs/sizing.md says them for users):

- ``count: auto``: max(1, usable cores // nthreads) workers on each host the group runs on;
  nthreads, unset, is then 1 (Dask's default, every core, would make one worker per host).
- ``gpus: auto`` or ``[0, 2]``: one worker per GPU on each host, its CUDA_VISIBLE_DEVICES rotated
  as dask-cuda's ``cuda_visible_devices(i, devices)`` does, ``resources: {GPU: 1}``, 1 thread.
- ``memory_limit: auto``: a host's usable memory, less its `reserve:` and the explicit limits of
  the other workers there, divided evenly among the workers with auto there (all groups), in whole
  MiB; under MIN_AUTO_MEMORY each it is an error, never an oversubscription. A group is counted
  at its planned size there: a size recorded with `scale` if larger, an adaptive group's maximum.
- A host whose inventory is unknown (it did not answer, nothing cached): 1 worker of a count:
  auto group, Dask's own ``memory_limit: auto``, gpus: auto on GPU 0, a list as written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError
from ..topology import ClusterConfig, WorkerGroup
from ..topology.limits import MAX_GROUP_WORKERS
from ..topology.workers import (BYTES_RE, GPU_ENV, HostShare, _size_in_bytes, adaptive_maximum, adaptive_start,
                                parse_size)

MiB, GiB = 1 << 20, 1 << 30
MIN_AUTO_MEMORY = 256 * MiB  # a Dask worker idles at ~100 MiB: less than this each is refused
RESERVE_FRACTION, RESERVE_BYTES = 0.10, 2 * GiB  # the default reserve: the larger of the two ...
RESERVE_CAP = 0.5  # ... but at most half of a small machine (an explicit `reserve:` is not capped)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str = ""
    memory: int = 0  # bytes


@dataclass(frozen=True)
class Inventory:
    """What a host has for workers (remote/probe.py measures it there)."""

    cores: int  # usable: CPU affinity and a cgroup CPU quota, as dask.system.cpu_count
    memory: int  # usable bytes: RAM, or a cgroup or RLIMIT_RSS limit if lower, as distributed.system
    gpus: tuple[Gpu, ...] | None = None  # None: not asked
    gpu_error: str | None = None  # what nvidia-smi said when it listed no GPU
    measured: float | None = None  # when (time.time() there)
    cached: bool = False  # from inventory.json: the host did not answer this time

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], cached: bool = False) -> Inventory:
        """From the probe's JSON (or the cache); ValueError when it is not one."""
        try:
            cores, memory = int(d["cores"]), int(d["memory"])
            gpus = None if d.get("gpus") is None else tuple(
                Gpu(int(g["index"]), str(g.get("name", "")), int(g.get("memory", 0))) for g in d["gpus"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"not an inventory: {e!r}") from None
        if cores < 1 or memory < 1:
            raise ValueError(f"not an inventory: {cores} cores, {memory} bytes")
        error, measured = d.get("gpu_error"), d.get("time")
        return cls(cores, memory, gpus, str(error) if error else None,
                   float(measured) if isinstance(measured, (int, float)) else None, cached)

    def to_dict(self) -> dict[str, Any]:
        return {"cores": self.cores, "memory": self.memory, "time": self.measured, "gpu_error": self.gpu_error,
                "gpus": None if self.gpus is None else [g.__dict__ for g in self.gpus]}


@dataclass(frozen=True)
class HostSizing:
    """One host: what it has and what each group gets there."""

    host: str
    inventory: Inventory | None
    reserve: int | None  # bytes kept for the owner (None: no auto memory here, or unknown)
    shares: dict[str, HostShare] = field(default_factory=dict)
    room: dict[str, int] = field(default_factory=dict)  # workers each group may have there (memory divides by it)
    why_unknown: str | None = None

    def line(self) -> str:
        inv = self.inventory
        if inv is None:
            head = f"{self.host}: not measured" + (f" ({self.why_unknown})" if self.why_unknown else "")
        else:
            gpus = "" if inv.gpus is None else f", {len(inv.gpus)} GPU{'s' * (len(inv.gpus) != 1)}"
            head = f"{self.host}: {inv.cores} cores, {human(inv.memory)}{gpus}" + (" (cached)" if inv.cached else "")
        parts = []
        for name, s in self.shares.items():
            threads = f"{s.nthreads} thread{'s' * (s.nthreads != 1)}" if s.nthreads else (
                f"{inv.cores} threads (Dask's default)" if inv else "Dask's threads")
            memory = (f"{human(s.memory_limit)} each" if isinstance(s.memory_limit, int) and s.memory_limit > 1
                      else "Dask's memory_limit auto" if s.memory_limit == "auto" else f"memory_limit {s.memory_limit}")
            room = self.room.get(name, s.workers)
            more = f" (memory divided for {room})" if room > s.workers else ""
            gpus = f", GPUs {','.join(map(str, s.devices))}" if s.devices else ""
            label = f"{name}: " if len(self.shares) > 1 else ""
            parts.append(f"{label}{s.workers} worker{'s' * (s.workers != 1)} x {threads}, {memory}{gpus}{more}")
        reserve = f" (reserve {human(self.reserve)})" if self.reserve is not None else ""
        return f"{head} -> {'; '.join(parts) or 'no workers'}{reserve}"

    def to_dict(self) -> dict[str, Any]:
        inv = self.inventory
        return {"host": self.host, "source": "unknown" if inv is None else "cached" if inv.cached else "measured",
                "why_unknown": self.why_unknown, "reserve": self.reserve,  # when measured: only a cached one's
                "inventory": {k: v for k, v in inv.to_dict().items() if k != "time" or inv.cached} if inv else None,
                "groups": {n: {"workers": s.workers, "room": self.room.get(n, s.workers), "nthreads": s.nthreads,
                               "memory_limit": s.memory_limit, "gpus": list(s.devices)} for n, s in self.shares.items()},
                "line": self.line()}


@dataclass(frozen=True)
class Sizing:
    hosts: dict[str, HostSizing]

    def apply(self, cfg: ClusterConfig) -> ClusterConfig:
        """``cfg`` with every group carrying its share on each host (what worker_spec reads)."""
        groups = [g.with_shares({h: s.shares[g.name] for h, s in self.hosts.items() if g.name in s.shares})
                  for g in cfg.workers]
        return cfg.model_copy(update={"workers": groups})

    def lines(self) -> list[str]:
        return [s.line() for s in self.hosts.values()]

    def to_dict(self) -> dict[str, Any]:
        return {h: s.to_dict() for h, s in self.hosts.items()}


def human(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n // MiB} MiB"


def needs(cfg: ClusterConfig) -> dict[str, bool]:
    """The hosts whose inventory the plan needs, each with whether it needs their GPUs."""
    out: dict[str, bool] = {}
    for g in cfg.workers:
        if g.count_auto or g.gpus is not None or g.memory_limit == "auto":
            for h in g.hosts_used:
                out[h] = out.get(h, False) or g.gpus is not None
    return out


def reserve_bytes(reserve: str | int | None, usable: int) -> int:
    """`reserve:` in bytes on a host with ``usable`` bytes; None: the default."""
    if reserve is None:
        return int(min(max(RESERVE_FRACTION * usable, RESERVE_BYTES), RESERVE_CAP * usable))
    kind, n = parse_size(reserve, "reserve")
    return int(n * usable) if kind == "fraction" else int(n)


def limit_bytes(limit: str | int | float, usable: int) -> int:
    """An explicit memory_limit in bytes, as Dask reads it (a fraction of usable memory; capped at it)."""
    if isinstance(limit, str):
        m = BYTES_RE.match(limit)
        n = _size_in_bytes(float(m.group(1)), m.group(3) or "") if m else 0
    else:
        n = limit * usable if isinstance(limit, float) and limit <= 1 else limit
    return min(int(n), usable)


def cuda_visible_devices(i: int, devices: tuple[int, ...] | list[int]) -> str:
    """dask-cuda's rotation (LocalCUDACluster): worker i sees its own GPU first, then the others in order."""
    devices = list(devices)
    i %= len(devices)
    return ",".join(map(str, devices[i:] + devices[:i]))


def worker_settings(group: WorkerGroup, at: str, index: int) -> tuple[Any, int | None, dict[str, float], dict[str, str]]:
    """(memory_limit, nthreads, resources, extra env) of worker ``index`` of ``group`` on host ``at``."""
    share = group.share(at)
    memory = share.memory_limit if share else group.memory_limit
    nthreads = share.nthreads if share else group.default_nthreads
    resources: dict[str, float] = dict(group.resources)
    env: dict[str, str] = {}
    if group.gpus is not None:
        resources.setdefault("GPU", 1)
        devices = share.devices if share and share.devices else tuple(group.gpus) if isinstance(group.gpus, list) else (0,)
        env[GPU_ENV] = cuda_visible_devices(group.rank_on_host(index), devices)
    return memory, nthreads, resources, env


def _devices(g: WorkerGroup, host: str, inv: Inventory | None) -> tuple[int, ...]:
    """The GPUs of ``g`` on ``host``; ConfigError (one line) when the host lacks them."""
    if inv is None or inv.gpus is None:
        return tuple(g.gpus) if isinstance(g.gpus, list) else (0,)
    have = [x.index for x in inv.gpus]
    asked = "auto" if g.gpus == "auto" else f"[{', '.join(map(str, g.gpus or []))}]"
    said = " ".join((inv.gpu_error or "nvidia-smi listed none").split())
    if not have:
        raise ConfigError(f"group {g.name!r} on host {host!r}: gpus: {asked}, but the host has no GPU ({said})")
    if g.gpus == "auto":
        return tuple(have)
    missing = [i for i in g.gpus or [] if i not in have]
    if missing:
        raise ConfigError(f"group {g.name!r} on host {host!r}: gpus: {asked}, but GPU {missing[0]} is not there "
                          f"(nvidia-smi lists {', '.join(map(str, have))})")
    return tuple(g.gpus or [])


def _on_each(slots: list[str], names: tuple[str, ...], n: int) -> Counter[str]:
    """How many of the first ``n`` workers each host gets: ``slots`` first, then round-robin over ``names``."""
    c = Counter(slots[:n])
    extra = n - len(slots)
    for i, h in enumerate(names if extra > 0 else ()):
        c[h] += extra // len(names) + (1 if i < extra % len(names) else 0)
    return c


def _workers(g: WorkerGroup, inventories: Mapping[str, Inventory], counts: Mapping[str, int]
             ) -> tuple[dict[str, tuple[int, tuple[int, ...]]], Counter[str]]:
    """({host: (planned workers, GPUs)}, {host: workers memory divides by}) for one group."""
    planned: dict[str, tuple[int, tuple[int, ...]]] = {}
    for h in g.hosts_used:
        inv = inventories.get(h)
        if g.gpus is not None:
            devices = _devices(g, h, inv)
            planned[h] = (len(devices), devices)
        elif g.count_auto:
            planned[h] = (max(1, inv.cores // (g.nthreads or 1)) if inv else 1, ())
    if g.adapt is not None:  # starts small, may grow to its maximum (never with count: auto or gpus:)
        start = Counter(g.placement(adaptive_start(g)))
        return {h: (k, ()) for h, k in start.items()}, Counter(g.placement(adaptive_maximum(g)))
    if planned:
        slots = [h for h in g.hosts_used for _ in range(planned[h][0])]
        n = counts.get(g.name, len(slots))
        room = _on_each(slots, g.hosts_used, max(n, len(slots)))
    else:
        room = Counter(g.placement(max(counts.get(g.name, g.count), g.count)))
        planned = {h: (k, ()) for h, k in Counter(g.placement(g.count)).items()}
    return planned, room


def size(cfg: ClusterConfig, inventories: Mapping[str, Inventory], counts: Mapping[str, int] | None = None,
         unknown: Mapping[str, str] | None = None) -> Sizing:
    """Each host's share of each group. ``counts``: sizes set with `scale` (memory is divided for the
    larger of them and the plan); ``unknown``: why a host has no inventory. ConfigError, one line, for
    a host without the GPUs asked for, or with too little memory for its workers' auto limits."""
    counts, unknown = dict(counts or {}), dict(unknown or {})
    groups = {g.name: (g, *_workers(g, inventories, counts)) for g in cfg.workers}
    total = 0
    for g, planned, _ in groups.values():
        n = counts.get(g.name, sum(k for k, _ in planned.values())) if g.sized_count else 0
        if n > MAX_GROUP_WORKERS:
            raise ConfigError(f"group {g.name!r}: {n} workers sized to its hosts is more than {MAX_GROUP_WORKERS}, "
                              "the most a group may have; set nthreads: higher or name fewer hosts")
        total += n or counts.get(g.name, g.count)
    if total > cfg.max_workers:
        raise ConfigError(f"{total} workers in all, sized to the hosts, is more than max_workers, {cfg.max_workers}; "
                          "raise `max_workers:` or set nthreads: higher")
    hosts: dict[str, HostSizing] = {}
    for h in dict.fromkeys(h for g, _, room in groups.values() for h in g.hosts_used if room.get(h)):
        hosts[h] = _host(cfg, h, inventories.get(h), groups, unknown.get(h))
    return Sizing(hosts)


def _host(cfg: ClusterConfig, h: str, inv: Inventory | None, groups: dict[str, Any], why: str | None) -> HostSizing:
    here = [(g, planned.get(h, (0, ())), room[h]) for g, planned, room in groups.values() if room.get(h)]
    auto = sum(r for g, _, r in here if g.memory_limit == "auto")
    reserve = each = None
    if inv is not None and auto:
        reserve = reserve_bytes(cfg.policy(h).reserve, inv.memory)
        explicit = sum(r * limit_bytes(g.memory_limit, inv.memory) for g, _, r in here if g.memory_limit != "auto")
        pool = inv.memory - reserve - explicit
        each = max(0, pool // auto) // MiB * MiB
        if each < MIN_AUTO_MEMORY:
            others = f" - {human(explicit)} of explicit limits" if explicit else ""
            raise ConfigError(
                f"host {h!r}: {auto} workers with memory_limit: auto would get {human(each)} each ({human(inv.memory)} "
                f"usable - {human(reserve)} reserve{others}), under the {human(MIN_AUTO_MEMORY)} a worker needs; run "
                "fewer (count:, nthreads:, an adapt maximum), lower `reserve:`, or set memory_limit:")
    shares = {g.name: HostShare(workers=p[0], nthreads=g.default_nthreads, devices=p[1],
                                memory_limit=each if g.memory_limit == "auto" and each else g.memory_limit)
              for g, p, _ in here}
    return HostSizing(h, inv, reserve, shares, {g.name: r for g, _, r in here}, None if inv else why)
