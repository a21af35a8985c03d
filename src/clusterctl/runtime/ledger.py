"""The one record of truth on disk: what the supervisor runs, written atomically.

``up`` reads it to learn how start-up went, ``status`` and ``down`` read it
when the supervisor is gone, and a new supervisor reads it to refuse starting
a second cluster over the first.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .process import ProcessId


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write to a temp file beside path, fsync, then rename over it: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@dataclass
class Ledger:
    """state_dir/ledger.json plus the control token beside it."""

    root: Path

    @property
    def path(self) -> Path:
        return self.root / "ledger.json"

    @property
    def token_path(self) -> Path:
        return self.root / "control.token"

    @property
    def lock_path(self) -> Path:
        return self.root / "supervisor.lock"

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None

    def write(self, data: dict[str, Any]) -> None:
        data = dict(data, updated=time.time())
        atomic_write(self.path, json.dumps(data, indent=2, sort_keys=False))

    def new_token(self) -> str:
        token = secrets.token_urlsafe(32)
        atomic_write(self.token_path, token, mode=0o600)
        return token

    def read_token(self) -> str | None:
        try:
            return self.token_path.read_text().strip()
        except OSError:
            return None

    def clear(self) -> None:
        for p in (self.path, self.token_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def supervisor_id(data: dict[str, Any] | None) -> ProcessId | None:
    sup = (data or {}).get("supervisor") or {}
    if sup.get("pid") and sup.get("create_time"):
        return ProcessId(int(sup["pid"]), float(sup["create_time"]))
    return None


def process_ids(data: dict[str, Any] | None) -> list[tuple[dict[str, Any], ProcessId]]:
    out = []
    for p in (data or {}).get("processes", []):
        if p.get("pid") and p.get("create_time"):
            out.append((p, ProcessId(int(p["pid"]), float(p["create_time"]))))
    return out
