"""Worker groups: how many, where (`at:`), and a memory limit dask reads as the user meant.

`count: auto`, `memory_limit: auto` and `gpus:` are sized to each host at planning time
(plan/sizing.py); the sized numbers ride on the group as HostShare values (``WorkerGroup.share``)."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from .adapt import AdaptConfig
from .base import NAME_RE, Bool, FieldError, Int, Model, Num, RestartPolicy, _check_env, _short
from .hosts import LOCAL_HOST, _check_host
from .limits import MAX_GROUP_WORKERS, MIN_MEMORY


BYTES_RE = re.compile(r"^\s*(\d+(\.\d+)?)\s*([kKmMgGtTpP]i?[bB]?|[bB])?\s*$")
RESERVED_GROUPS = {"scheduler"}  # the scheduler's own group in plans, ledger and status
MEMORY_HINT = (
    "use 'auto', a size such as '4GiB' or '512MB', a byte count, a fraction of RAM "
    "such as 0.5, or 0 for no limit"
)


Placement = str | list[str] | dict[str, Int]
PLACEMENT_HINT = (
    "`at:` takes a host name (at: ws1), a list of names (at: [ws1, ws2], workers go round them) "
    "or a map of name to worker count (at: {ws1: 2, ws2: 1})"
)


GPU_ENV = "CUDA_VISIBLE_DEVICES"
MAX_GPU_INDEX = 63


def _is_count(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)


def _count_schema(schema: dict[str, Any]) -> None:
    """`count:` takes "auto" too (turned into a number before the field is checked)."""
    number = {k: schema.pop(k) for k in ("type", "minimum", "maximum") if k in schema}
    schema["anyOf"] = [number, {"const": "auto", "type": "string"}]


@dataclass(frozen=True)
class HostShare:
    """What plan/sizing.py gave one group on one host: its workers there and their settings."""

    workers: int  # the group's workers there (at the planned size; an adaptive group's maximum)
    nthreads: int | None  # None: Dask's choice
    memory_limit: str | int | float  # bytes when sized; as written (e.g. 'auto': Dask's own) otherwise
    devices: tuple[int, ...] = ()  # GPU indices its workers go round (gpus:), rotated as dask-cuda does


class WorkerGroup(Model):
    name: str = "default"
    count: Int = Field(1, ge=1, le=MAX_GROUP_WORKERS, json_schema_extra=_count_schema, description=(
        "a number, or auto: (usable cores / nthreads) on each host the group runs on (see Sized to the machine)"))
    at: Placement | None = Field(
        None, description="a host name, a list of names (round-robin) or {host: count}; default: this machine"
    )
    nthreads: Int | None = Field(None, ge=1, le=1024, description="default: dask's choice")
    memory_limit: str | int | float = Field("auto", description="'auto' (each host's memory, less `reserve:`, "
                                            "divided among its workers), bytes, '4GiB' or 0.5")
    gpus: Literal["auto"] | list[Int] | None = Field(
        None, description="auto or GPU indices such as [0, 2]: one worker per GPU on each host, "
        "CUDA_VISIBLE_DEVICES rotated as dask-cuda does, resources {GPU: 1}")
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
    # Follow Dask's recommendation between minimum and maximum (topology/adapt.py); the group then
    # starts with max(1, minimum) workers, and an `at:` map caps each host at its count.
    adapt: AdaptConfig | None = None
    _count_auto: bool = PrivateAttr(False)  # `count: auto` (count holds one worker per host until sized)
    _shares: dict[str, HostShare] | None = PrivateAttr(None)  # by host, once sized (plan/sizing.py)

    @model_validator(mode="wrap")
    @classmethod
    def _auto_count(cls, data: Any, handler: Any) -> WorkerGroup:
        """`count: auto` and `gpus:` size the group per host at planning time; until then `count` holds
        one worker per host (a list of GPU indices: one per index), what the total cap checks."""
        auto = isinstance(data, dict) and data.get("count") == "auto"
        if isinstance(data, dict) and data.get("gpus") is not None:
            for key, why in (("count", "one worker per GPU"), ("adapt", "one worker per GPU, a fixed size")):
                if key in data:
                    raise FieldError(f"gpus: sets the group's size ({why}); drop `{key}:`", (key,))
        if auto and data.get("adapt") is not None:
            raise FieldError("auto sizes the group to the machine, adapt: to the work; drop one", ("count",))
        if (auto or isinstance(data, dict) and data.get("gpus") is not None) and isinstance(data.get("at"), dict):
            raise FieldError("`at:` with counts fixes each host's size; with count: auto or gpus: write "
                             "the hosts as a list (at: [ws1, ws2])", ("at",))
        if auto or isinstance(data, dict) and data.get("gpus") is not None:
            at, gpus = data.get("at"), data.get("gpus")
            hosts = len(at) if isinstance(at, list) and at else 1
            per = len(gpus) if isinstance(gpus, list) and gpus and len(gpus) <= MAX_GPU_INDEX + 1 else 1
            data = {**data, "count": min(MAX_GROUP_WORKERS, hosts * per)}
        group = handler(data)
        group._count_auto = auto
        return group

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        hint = "write gpus: auto (every GPU nvidia-smi lists) or a list of indices such as [0, 2]"
        if v is None or v == "auto":
            return v
        if not isinstance(v, list) or not v or not all(_is_count(i) for i in v):
            raise ValueError(f"{_short(v)} is not a GPU choice; {hint}")
        bad = next((i for i in v if not 0 <= i <= MAX_GPU_INDEX), None)
        if bad is not None:
            raise ValueError(f"GPU index {bad} is out of range; use 0 to {MAX_GPU_INDEX}")
        if len(set(v)) != len(v):
            raise ValueError(f"{_short(v)} lists a GPU twice; name each index once")
        return v

    @model_validator(mode="after")
    def _gpu_env(self) -> WorkerGroup:
        if self.gpus is not None and GPU_ENV in self.env:
            raise FieldError(f"{GPU_ENV} is set by gpus: (one GPU first for each worker); drop it from env:",
                             ("env", GPU_ENV))
        return self

    @property
    def count_auto(self) -> bool:
        return self._count_auto

    @property
    def sized_count(self) -> bool:
        """Its size comes from each host (count: auto or gpus:), not from `count:`."""
        return self._count_auto or self.gpus is not None

    @property
    def default_nthreads(self) -> int | None:
        """nthreads, or 1 where the group runs a worker per core or per GPU (Dask's default, every
        core, would make each of them as wide as the machine); None: Dask's choice."""
        return self.nthreads or (1 if self.sized_count else None)

    def share(self, host: str) -> HostShare | None:
        """What sizing gave this group on ``host`` (None: not sized, or the host was not)."""
        return None if self._shares is None else self._shares.get(host)

    def with_shares(self, shares: dict[str, HostShare]) -> WorkerGroup:
        """A copy sized per host (plan/sizing.py); count: auto and gpus: place that many on each host."""
        copy = self.model_copy()
        copy._shares = dict(shares)
        for name in ("_slots", "_positions", "hosts_used"):
            copy.__dict__.pop(name, None)
        return copy

    @property
    def planned_count(self) -> int:
        """How many workers it starts with: per host once count: auto or gpus: is sized, else `count`."""
        if self._shares is not None and self.sized_count:
            return sum(self._shares[h].workers for h in self.hosts_used if h in self._shares)
        return self.count

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
        """`at: {a: 2, b: 1}` gives the group's size (a `count:` beside it must agree);
        `at: [a, b]` gives one worker per host unless `count:` says how many go round them."""
        if not isinstance(data, dict):
            return data
        at = data.get("at")
        if isinstance(at, dict) and at and all(_is_count(n) and n >= 1 for n in at.values()):
            total = sum(at.values())
            if "count" not in data:
                data = {**data, "count": total}
            elif data["count"] != total:
                raise FieldError(
                    f"{data['count']!r} differs from the {total} workers placed by `at:`; "
                    "drop `count:` (the placement gives the size) or make them agree",
                    ("count",),
                )
        elif isinstance(at, list) and at and "count" not in data:
            data = {**data, "count": len(at)}
        return data

    @field_validator("at", mode="before")
    @classmethod
    def _at_shape(cls, v: Any) -> Any:
        """One message for every wrong shape (pydantic would name a union branch: `at.str`)."""
        if v is None or isinstance(v, str):
            return v
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v
        if isinstance(v, dict) and all(isinstance(k, str) for k in v):
            bad = next(((k, n) for k, n in v.items() if not _is_count(n)), None)
            if bad is None:
                return v
            raise ValueError(f"{bad[0]}: {_short(bad[1])} is not a number of workers; {PLACEMENT_HINT}")
        raise ValueError(f"{_short(v)} is not a placement; {PLACEMENT_HINT}")

    @field_validator("at")
    @classmethod
    def _at(cls, v: Placement | None) -> Placement | None:
        if isinstance(v, dict):
            if not v:
                raise ValueError("an empty mapping places no worker; write `at: {host: count}`")
            for name, n in v.items():
                if not 1 <= n <= MAX_GROUP_WORKERS:
                    raise ValueError(f"{name}: {n!r} workers; use a whole number from 1 to {MAX_GROUP_WORKERS}")
        elif isinstance(v, list):
            if not v:
                raise ValueError(f"an empty list places no worker; {PLACEMENT_HINT}")
            twice = next((name for i, name in enumerate(v) if name in v[:i]), None)
            if twice is not None:
                raise ValueError(
                    f"{twice!r} is listed twice; name each host once (for more workers on one host "
                    f"write a count: at: {{{twice}: 2}})"
                )
        return v

    # -- where each worker runs: O(1) per worker, so planning stays linear in their number --
    @cached_property
    def _slots(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(the host of each worker `at:` places, the hosts to go round past them)."""
        if self.at is None:
            names: tuple[str, ...] = (LOCAL_HOST,)
        elif isinstance(self.at, str):
            names = (self.at,)
        elif isinstance(self.at, list):
            names = tuple(self.at)
        else:
            return tuple(h for h, k in self.at.items() for _ in range(k)), tuple(self.at)
        if self._shares is not None and self.sized_count:  # each host's own count, host after host
            return tuple(h for h in names for _ in range(self._shares[h].workers if h in self._shares else 0)), names
        return (), names

    @cached_property
    def _positions(self) -> tuple[tuple[int, ...], dict[str, int]]:
        """(each placed worker's rank among the group's workers on its host, the number per host)."""
        seen: Counter[str] = Counter()
        ranks = []
        for h in self._slots[0]:
            ranks.append(seen[h])
            seen[h] += 1
        return tuple(ranks), dict(seen)

    def rank_on_host(self, index: int) -> int:
        """Worker ``index``'s rank among this group's workers on its host (its GPU, with gpus:)."""
        slots, names = self._slots
        ranks, per_host = self._positions
        if index < len(slots):
            return ranks[index]
        k = index - len(slots)
        return per_host.get(names[k % len(names)], 0) + k // len(names)

    @cached_property
    def hosts_used(self) -> tuple[str, ...]:
        """Every host this group runs on (or may, once scaled), in `at:` order, each once."""
        return self._slots[1]

    def host_of(self, index: int) -> str:
        """The host of worker `index`: `at:` order first, then round-robin when scaled past it."""
        slots, names = self._slots
        return slots[index] if index < len(slots) else names[(index - len(slots)) % len(names)]

    def placement(self, n: int | None = None) -> list[str]:
        """The host of each worker index: `at:` order first, then round-robin when scaled past it."""
        n = self.planned_count if n is None else n
        return [self.host_of(i) for i in range(n)]

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


def parse_size(v: Any, what: str) -> tuple[str, float]:
    """A size as written for `reserve:` and the like: ("bytes", n) for '2GiB' or a byte count,
    ("fraction", f) for a fraction of RAM such as 0.1; a ValueError in one line otherwise."""
    hint = f"write {what} as a size such as '2GiB', a byte count, or a fraction of RAM such as 0.1"
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ValueError(f"{_short(v)} is not a size; {hint}")
    if isinstance(v, str):
        m = BYTES_RE.match(v)
        if not m:
            raise ValueError(f"{v!r} is not a size; {hint}")
        number = float(m.group(1))
        v = _size_in_bytes(number, m.group(3)) if m.group(3) else number
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{v!r} is not a size; {hint}")
    if 0 < v <= 1 and not (isinstance(v, int) and v == 1):
        return ("fraction", float(v))
    return ("bytes", float(int(v)))


def _size_in_bytes(number: float, unit: str) -> float:
    """What dask.utils.parse_bytes makes of '<number><unit>' (k = 1000, Ki = 1024)."""
    unit = unit.lower().rstrip("b")
    if not unit:
        return number
    power = "kmgtp".index(unit[0]) + 1
    return number * ((1024 if unit.endswith("i") else 1000) ** power)


def adaptive_start(group: WorkerGroup) -> int:
    """How many workers an adaptive group starts with."""
    assert group.adapt is not None
    return max(1, group.adapt.minimum)


def adaptive_maximum(group: WorkerGroup) -> int:
    """Its maximum, capped by an `at:` map's total (the counts per host are the most per host)."""
    assert group.adapt is not None
    if isinstance(group.at, dict):
        return min(group.adapt.maximum, sum(group.at.values()))
    return group.adapt.maximum

