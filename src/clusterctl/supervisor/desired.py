"""Pure decisions for scaling, and the desired size that survives a supervisor restart.

Scaling edits the desired set of workers; the supervisor converges reality to
it with the same start and stop paths `up` and `down` use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ClusterError
from ..runtime.ledger import atomic_write

NOT_WORKING = ("fatal", "exited", "backoff", "pending")  # removed first: they do no work


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

    def load(self, config_counts: dict[str, int]) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        out = {}
        for group, rec in (data.get("groups") or {}).items():
            if group in config_counts and rec.get("config_count") == config_counts[group]:
                out[group] = int(rec["count"])
        return out

    def save(self, counts: dict[str, int], config_counts: dict[str, int]) -> None:
        groups = {g: {"count": n, "config_count": config_counts[g]} for g, n in counts.items() if g in config_counts}
        atomic_write(self.path, json.dumps({"groups": groups}, indent=2))
