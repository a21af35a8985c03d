"""The clusters this user runs on this machine: one small JSON file per cluster.

``up`` registers a cluster (client/start.py); ``clusterctl list`` and
``SupervisedCluster.from_name`` read the registry. It lives in the user's state
directory, ``$XDG_STATE_HOME/clusterctl/clusters/`` (default
``~/.local/state/clusterctl/clusters/``; ``%LOCALAPPDATA%\\clusterctl\\clusters\\``
on Windows), one file per cluster keyed by the cluster's state path, 0600 in a
0700 directory, each written atomically::

    >>> register("walkthrough", Path("/home/me/cluster.yaml"), Path("/home/me/.clusterctl/walkthrough"))  # doctest: +SKIP
    >>> [e.name for e in entries()]
    ['walkthrough']

An entry only points at a cluster; what it runs is read live from its ledger.
prune() forgets the entries that point at nothing: the state directory or the
ledger is gone, the cluster is stopped (or failed) with its supervisor gone, its
supervisor died and none of its processes on this machine is left, or its state
directory is another user's now. Another user's clusters are never listed: their
registry is under their own home.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ClusterError
from .ledger import Ledger, NotYours, atomic_write, private_dir

VERSION = 1
# An entry written moments ago may precede its cluster's first ledger (``up --foreground``
# registers before its supervisor writes one): kept, as "starting", for this long.
GRACE = 120.0
ENDED = frozenset({"stopped", "failed"})  # supervisor.states.ClusterState values (a lower layer cannot import them)


@dataclass(frozen=True)
class Entry:
    """One registered cluster: its name, its topology file, its state directory."""

    name: str
    config: str | None
    state: str
    registered: float
    version: int = VERSION

    @property
    def path(self) -> Path:
        """This entry's file in the registry."""
        return entry_path(Path(self.state))

    def ledger(self) -> Ledger:
        return Ledger(Path(self.state))


def root() -> Path:
    """The registry's directory for this user (not created here)."""
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_STATE_HOME", "")
        if not os.path.isabs(base):  # the XDG spec: a relative value is invalid and ignored
            base = str(Path.home() / ".local" / "state")
    return Path(base) / "clusterctl" / "clusters"


def entry_path(state: Path) -> Path:
    """The file for the cluster whose state directory is ``state``: its name, then a hash of the path."""
    state = Path(os.path.abspath(state))
    digest = hashlib.sha256(str(state).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return root() / f"{state.name}-{digest}.json"


def register(name: str, config: Path | str | None, state: Path, now: float | None = None) -> Entry:
    """Record (or refresh) the cluster whose state directory is ``state``."""
    entry = Entry(name=name, config=str(Path(config).resolve()) if config else None,
                  state=os.path.abspath(state), registered=time.time() if now is None else now)
    base = root()
    private_dir(base.parent)  # clusterctl/ holds nothing else of anyone's
    private_dir(base)
    atomic_write(entry.path, json.dumps(asdict(entry), indent=1) + "\n", mode=0o600)
    return entry


def forget(entry: Entry) -> bool:
    """Remove an entry's file; False when it was already gone."""
    try:
        entry.path.unlink()
    except FileNotFoundError:
        return False
    return True


def entries() -> list[Entry]:
    """Every registered cluster, by name; a file that is not an entry is skipped (prune removes it)."""
    return sorted((e for _, e in _scan() if e is not None), key=_order)


def find(name: str) -> list[Entry]:
    """The entries (pruned first) of the clusters called ``name``."""
    kept, _ = prune()
    return [e for e in kept if e.name == name]


def stale(entry: Entry, now: float | None = None) -> str | None:
    """Why ``entry`` points at nothing any more, or None while its cluster may still run."""
    state = Path(entry.state)
    if not state.is_dir():
        return "its state directory is gone"
    try:
        record = entry.ledger().read()
    except NotYours as e:  # e.g. a directory handed to another user since: not this user's cluster
        return f"{e.path} belongs to another user now"
    except ClusterError:  # unreadable (LedgerUnreadable, or this user's own file made 000)
        return None  # what runs is unknown: listed, never dropped
    if record is None:
        young = (time.time() if now is None else now) - entry.registered < GRACE
        return None if young else "it has no ledger"
    sup = record.supervisor_id
    if sup is not None and sup.alive():
        return None
    if record.state in ENDED:
        return f"it is {record.state}"
    if not any(pid.alive() for _, pid in record.process_ids()):
        return "its supervisor and all its processes are gone"
    return None  # unsupervised: processes left that `clusterctl down` would stop


def prune(now: float | None = None) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    """Forget the stale entries; returns (kept, [(forgotten, why)]), each by name."""
    kept: list[Entry] = []
    gone: list[tuple[Entry, str]] = []
    for path, entry in _scan():
        if entry is None:
            _unlink(path)
            continue
        why = stale(entry, now)
        if why is None:
            kept.append(entry)
        else:
            forget(entry)
            gone.append((entry, why))
    return sorted(kept, key=_order), sorted(gone, key=lambda g: _order(g[0]))


def _order(e: Entry) -> tuple[str, str]:
    return (e.name, e.state)


def _scan() -> list[tuple[Path, Entry | None]]:
    base = root()
    try:
        paths = sorted(p for p in base.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [(p, _read(p)) for p in paths]


def _read(path: Path) -> Entry | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entry = Entry(name=str(data["name"]), config=data.get("config"), state=str(data["state"]),
                      registered=float(data.get("registered") or 0))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry if entry.path == path else None  # a file under another name is not this entry's


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
