"""The one record of truth on disk: what the supervisor runs, written atomically.

``up`` reads it to learn how start-up went, ``status`` and ``down`` read it
when the supervisor is gone, and a new supervisor reads it to refuse starting
a second cluster over the first.

A ledger that exists but cannot be read (truncated, hand-edited) raises
LedgerUnreadable: what runs is then unknown, never "nothing". Identities from
before the machine last booted are dropped as it is read: those processes are
gone, and their pids may be anyone's now. The state directory is the user's
alone (0700) and the ledger 0600: argv and addresses are nobody else's business.
Another user's state directory raises NotYours, even where it can be read: their
cluster is not this user's to stop or change.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
import time
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ClusterError
from .process import ProcessId, before_boot
from .states import ChildState, ClusterState, HostState

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


class LedgerUnreadable(ClusterError):
    """ledger.json exists but is not a ledger: what runs is unknown (never "nothing")."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path} cannot be read ({why}): what runs is unknown; "
                         "`clusterctl down` stops every process carrying this cluster's tag")
        self.path, self.why = path, why


class NotYours(ClusterError):
    """The state belongs to another user: their cluster is neither read nor changed by this one."""

    def __init__(self, path: Path, uid: int):
        super().__init__(f"{path} belongs to {user_name(uid)} (uid {uid}): another user's cluster "
                         "is neither read nor changed by you")
        self.path, self.uid = path, uid


def user_name(uid: int) -> str:
    """The login name of ``uid``, or ``uid N`` when the password database does not know it."""
    try:
        import pwd  # POSIX only

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def owner_of(path: Path) -> tuple[Path, int] | None:
    """The nearest of ``path`` and its parents that this user may look at, with its owner's uid. A
    symlink is its own (lstat): the owner of what it points at is owners()'s to find."""
    for p in (path, *path.parents):
        try:
            return p, p.lstat().st_uid
        except OSError:
            continue  # absent, or inside a directory this user may not enter
    return None


def owners(path: Path) -> list[tuple[Path, int]]:
    """owner_of(path) and, when that is a symlink, the owner of what it points at (the nearest of
    the resolved target and its parents that this user may look at): a state directory linked to
    another user's is theirs, and a link of theirs to this user's directory is not this user's."""
    found = owner_of(path)
    if found is None:
        return []
    try:
        linked = stat.S_ISLNK(found[0].lstat().st_mode)
    except OSError:
        linked = False
    if not linked:
        return [found]
    target = owner_of(Path(os.path.realpath(found[0])))
    return [found, target] if target else [found]


def refuse_others(path: Path) -> None:
    """Raise NotYours when ``path`` (or, where it cannot be seen, the nearest parent), or what it
    links to, is another user's. root may act on anyone's cluster, as on anyone's files."""
    if os.name != "posix" or os.geteuid() == 0:
        return
    for where, uid in owners(path):
        if uid != os.geteuid():
            raise NotYours(where, uid)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) with the leaf 0700; tighten it if it exists wider: it is ours."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if os.name == "posix" and path.stat().st_mode & 0o077:
        os.chmod(path, PRIVATE_DIR)
    return path


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
    # States are the enums of runtime/states.py, read from (and written as) their plain values.
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
    state: ChildState = ChildState.PENDING
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
    metrics: str | None = None  # URL of the supervisor's Prometheus metrics page (runtime/metrics.py)


class SchedulerRecord(Record):
    address: str | None = None
    dashboard: str | None = None
    http_port: int | None = None


class HostWorkers(Record):
    desired: int = 0
    running: int = 0


class HostSchedule(Record):
    hours: str  # as normalised by topology/hours.py
    inside: bool


class HostRecord(Record):
    """A host as the supervisor sees it: the head (``localhost``) and each remote one."""

    name: str
    address: str = ""
    state: HostState = HostState.REACHABLE
    since: float | None = None  # wall clock of the last change
    last_error: str = ""
    workers: HostWorkers = HostWorkers()
    owner: str | None = None  # idle | active | unknown; None: no owner signal configured there
    owner_why: str = ""  # which signal said so, or why it is unknown (e.g. no logind there)
    schedule: HostSchedule | None = None  # its `hours:`, and whether it is inside them now
    mode: str = "run"  # run | paused | away: what its workers do for the owner and the hours
    yield_reason: str = ""  # why they are paused or away


class LedgerRecord(Record):
    """ledger.json: what the supervisor runs. Written by the supervisor only; read by the CLI."""

    version: int = 1
    name: str = ""
    config: str | None = None
    state: ClusterState = ClusterState.STARTING
    error: str | None = None
    supervisor: SupervisorRecord = SupervisorRecord()
    scheduler: SchedulerRecord = SchedulerRecord()
    processes: list[ProcessRecord] = []
    hosts: list[HostRecord] = []
    # adaptive groups: {group: {minimum, maximum, target, reason, ...}} (supervisor/adaptive.py)
    adaptive: dict[str, dict[str, Any]] = {}
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


def forget_before_boot(record: LedgerRecord) -> LedgerRecord:
    """Drop every pid whose process was created before this machine last booted: all of the
    record's when it was last written before then."""
    stale = before_boot(record.updated)
    for p in record.processes:
        if stale or before_boot(p.create_time):
            p.pid = p.create_time = None
    sup = record.supervisor
    if stale or before_boot(sup.create_time):
        sup.pid = sup.create_time = None
    return record


def invalid(e: ValidationError) -> str:
    """Why a ledger is not one, on one line: how many fields are wrong, and the first with its value
    and what it may be (e.g. a state no clusterctl writes)."""
    err = e.errors(include_url=False)[0]
    where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in err.get("loc") or ()).lstrip(".") or "record"
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{e.error_count()} invalid field(s); {where} is {shown}: {err['msg']}"


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
        """The record, or None when there is none; raises LedgerUnreadable when the file is there
        but is not a ledger. Identities from before the last boot are dropped (forget_before_boot)."""
        if os.path.lexists(self.root):
            # Before anything is read: another user's state directory is not this user's even while
            # it holds no ledger (yet), nor when it is a link to theirs.
            refuse_others(self.root)
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except PermissionError:
            # Not a corrupt ledger to set aside: someone else's cluster, or this user's own file
            # (or a directory on its way) made unreadable; either way nothing may be stopped or
            # moved on its account.
            refuse_others(self.root)
            refuse_others(self.path)
            raise self._denied() from None
        except (OSError, ValueError) as e:
            raise self._unreadable(getattr(e, "strerror", None) or str(e)) from None
        try:
            data = json.loads(text)
        except ValueError as e:
            raise self._unreadable("empty" if not text.strip() else f"not JSON ({e})") from None
        if not isinstance(data, dict):
            raise self._unreadable(f"a JSON {type(data).__name__}, not an object")
        try:
            return forget_before_boot(LedgerRecord.model_validate(data))
        except ValidationError as e:
            raise self._unreadable(invalid(e)) from None

    def _denied(self) -> ClusterError:
        """This user's own ledger that cannot be read, naming what denies it: the file itself, or
        the nearest directory on its way that this user may look at but not enter."""
        found = owner_of(self.path)
        where = found[0] if found else self.path
        if where == self.path:
            return ClusterError(f"{self.path} cannot be read: permission denied; it is yours, so "
                                f"`chmod 600 {self.path}` makes it readable again")
        return ClusterError(f"{self.path} cannot be read: {where} denies access; it is yours, so "
                            f"`chmod u+rwx {where}` makes it readable again")

    def _unreadable(self, why: str) -> LedgerUnreadable:
        return LedgerUnreadable(self.path, why)

    def write(self, record: LedgerRecord) -> None:
        private_dir(self.root)
        record = record.model_copy(update={"updated": time.time()})
        atomic_write(self.path, record.model_dump_json(indent=2), mode=PRIVATE_FILE)

    def new_token(self) -> str:
        private_dir(self.root)
        token = secrets.token_urlsafe(32)
        atomic_write(self.token_path, token, mode=PRIVATE_FILE)
        return token

    def read_token(self) -> str | None:
        try:
            return self.token_path.read_text().strip()
        except OSError:
            return None

    def set_aside(self) -> Path:
        """Move an unreadable ledger out of the way (kept for a look), once what it described is
        stopped: the next `up` then starts afresh."""
        aside = self.path.with_name(self.path.name + ".unreadable")
        os.replace(self.path, aside)
        return aside

    def clear(self) -> None:
        for p in (self.path, self.token_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
