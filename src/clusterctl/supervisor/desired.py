"""The desired set: which processes should run. Scaling and removal edit it; the
reconcile loop converges the running children to it (start what is missing,
retire what is no longer wanted). The size set with `scale` survives a
supervisor restart in desired.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Iterable

from ..errors import ClusterError
from ..plan.specs import ProcessSpec
from ..runtime.ledger import atomic_write
from ..topology.limits import MAX_GROUP_WORKERS
from .states import ChildState

NOT_WORKING = frozenset({ChildState.FATAL, ChildState.EXITED, ChildState.BACKOFF, ChildState.PENDING,
                         ChildState.WAITING})  # removed first: they do no work


def index_of(name: str) -> int:
    m = re.search(r"-(\d+)$", name)
    return int(m.group(1)) if m else -1


def names_to_add(group: str, taken: set[str], count: int) -> list[str]:
    """The lowest free indices: default-1 is reused once it is gone, names stay short."""
    out, i = [], 0
    while len(out) < count:
        name = f"{group}-{i}"
        if name not in taken:
            out.append(name)
        i += 1
    return out


def pick_to_remove(members: list[tuple[str, str]], count: int) -> list[str]:
    """members: (name, state). Idle failures first, then the newest (highest index)."""
    if count > len(members):
        raise ClusterError(f"cannot remove {count} workers: the group has {len(members)}")
    ranked = sorted(members, key=lambda m: (m[1] not in NOT_WORKING, -index_of(m[0])))
    return [name for name, _ in ranked[:count]]


class DesiredSize:
    """<state>/desired.json: {group: {count, config_count}}.

    A size set with `scale` outlives the supervisor; editing the group's count in
    cluster.yaml afterwards wins (the recorded config_count no longer matches)."""

    def __init__(self, root: Path):
        self.path = root / "desired.json"
        self.problem: str | None = None

    def load(self, config_counts: dict[str, int]) -> dict[str, int]:
        """The recorded sizes that still apply; a missing, unreadable or malformed file is ignored
        (``problem`` then says why, for the event log): the topology's counts apply instead."""
        self.problem = None
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self.problem = f"{self.path} is unreadable ({e}); using the counts in the topology"
            return {}
        groups = data.get("groups") if isinstance(data, dict) else None
        if not isinstance(groups, dict):
            self.problem = f"{self.path} has no 'groups' object; using the counts in the topology"
            return {}
        out = {}
        for group, rec in groups.items():
            count = rec.get("count") if isinstance(rec, dict) else None
            recorded = rec.get("config_count") if isinstance(rec, dict) else None
            if not _is_count(count) or not _is_count(recorded):
                self.problem = f"{self.path}: group {group!r} has a malformed record {rec!r}; ignored"
                continue
            if group in config_counts and recorded == config_counts[group]:
                out[group] = count
        return out

    def save(self, counts: dict[str, int], config_counts: dict[str, int]) -> None:
        groups = {g: {"count": n, "config_count": config_counts[g]} for g, n in counts.items() if g in config_counts}
        atomic_write(self.path, json.dumps({"groups": groups}, indent=2), mode=0o600)


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_GROUP_WORKERS


class DesiredSet:
    """name -> ProcessSpec of everything that should run, scheduler first.

    ``make_worker(group, index)`` plans one more worker of a group (plan.worker_spec)."""

    def __init__(self, specs: Iterable[ProcessSpec], make_worker: Callable[[str, int], ProcessSpec]):
        self.specs: dict[str, ProcessSpec] = {s.name: s for s in specs}
        self.make_worker = make_worker

    def __contains__(self, name: str) -> bool:
        return name in self.specs

    def workers(self, group: str | None = None) -> list[str]:
        return [n for n, s in self.specs.items() if s.role == "worker" and (group is None or s.group == group)]

    def counts(self, groups: Iterable[str]) -> dict[str, int]:
        return {g: len(self.workers(g)) for g in groups}

    def plan(self, group: str, count: int, taken: set[str], at: str | None = None) -> tuple[ProcessSpec, ...]:
        """Specs for ``count`` more workers with the lowest free names (``taken``: names still in use),
        on host ``at`` if given, else by the group's placement; nothing changes until they are put."""
        names = names_to_add(group, set(self.specs) | taken, count)
        make = self.make_worker
        return tuple(make(group, index_of(n)) if at is None else make(group, index_of(n), at)  # type: ignore[call-arg]
                     for n in names)

    def put(self, specs: Iterable[ProcessSpec]) -> None:
        """These processes are desired (a spec replaces one of the same name)."""
        for s in specs:
            self.specs[s.name] = s

    def add(self, group: str, count: int, taken: set[str]) -> list[str]:
        """Plan ``count`` more workers with the lowest free names, and put them."""
        specs = self.plan(group, count, taken)
        self.put(specs)
        return [s.name for s in specs]

    def remove(self, names: Iterable[str]) -> list[str]:
        gone = [n for n in names if self.specs.get(n) is not None and self.specs[n].role == "worker"]
        for n in gone:
            del self.specs[n]
        return gone

    def replace(self, specs: Iterable[ProcessSpec]) -> None:
        """New specs for names already desired (ports pinned after a port-0 start)."""
        for s in specs:
            if s.name in self.specs:
                self.specs[s.name] = s
