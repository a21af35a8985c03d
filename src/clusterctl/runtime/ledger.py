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

from pydantic import BaseModel, ConfigDict, ValidationError

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


class Record(BaseModel):
    # Unknown keys are ignored (an older or newer clusterctl wrote them); known ones are typed.
    model_config = ConfigDict(extra="ignore")


class ProcessRecord(Record):
    """One supervised process as the ledger knows it."""

    name: str
    role: str
    group: str = ""
    host: str = ""
    at: str = "localhost"  # the machine (fleet); `host` is the address it binds
    pid: int | None = None
    create_time: float | None = None
    state: str = "pending"  # a supervisor.states.ChildState value
    restarts: int = 0
    exit_code: int | None = None
    reason: str = ""
    address: str | None = None
    started: float | None = None
    log: str | None = None
    argv: list[str] = []

    @property
    def process_id(self) -> ProcessId | None:
        if self.pid and self.create_time:
            return ProcessId(int(self.pid), float(self.create_time))
        return None


class SupervisorRecord(Record):
    pid: int | None = None
    create_time: float | None = None
    control: str | None = None  # host:port of the control channel


class SchedulerRecord(Record):
    address: str | None = None
    dashboard: str | None = None
    http_port: int | None = None


class LedgerRecord(Record):
    """ledger.json: what the supervisor runs. Written by the supervisor only; read by the CLI."""

    version: int = 1
    name: str = ""
    config: str | None = None
    state: str = "starting"  # a supervisor.states.ClusterState value
    error: str | None = None
    supervisor: SupervisorRecord = SupervisorRecord()
    scheduler: SchedulerRecord = SchedulerRecord()
    processes: list[ProcessRecord] = []
    updated: float | None = None

    @property
    def supervisor_id(self) -> ProcessId | None:
        s = self.supervisor
        return ProcessId(int(s.pid), float(s.create_time)) if s.pid and s.create_time else None

    def process_ids(self) -> list[tuple[ProcessRecord, ProcessId]]:
        """Each process that has a recorded identity, with it."""
        return [(p, pid) for p in self.processes if (pid := p.process_id) is not None]

    def process(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)


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

    def read(self) -> LedgerRecord | None:
        """The record, or None when there is none (or it cannot be read as one)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        try:
            return LedgerRecord.model_validate(data)
        except ValidationError:
            return None

    def write(self, record: LedgerRecord) -> None:
        record = record.model_copy(update={"updated": time.time()})
        atomic_write(self.path, record.model_dump_json(indent=2))

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
