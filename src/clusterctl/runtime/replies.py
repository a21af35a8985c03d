"""The control channel's answers: one model per command, used by both ends.

The supervisor's answer leaves through ``answer`` (checked against its model: one that does not
fit is a bug, a 500 with its traceback in supervisor.log); the client reads it back with ``read``
and gets the same model. The JSON is the keys the supervisor gave, as before: a key a newer
supervisor adds passes through (``extra="allow"``) and ``as_dict`` gives the answer as it came.
Requests are runtime/requests.py; `status` answers with the ledger's own record.

>>> read("scale", {"ok": True, "added": ["default-3"], "removing": [], "kill": False,
...                "workers": {"default": 4}, "retired": []}).added
['default-3']
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ClusterError
from .ledger import LedgerRecord


class Reply(BaseModel):
    """One command's answer. Every field has a default: the supervisor sends what it has."""

    model_config = ConfigDict(extra="allow")


class PingReply(Reply):
    ok: bool = True
    pid: int | None = None  # the supervisor's


class StopReply(Reply):
    ok: bool = True  # the supervisor stops everything, then itself


class ChangeReply(Reply):
    """scale, add, remove: the desired set's edit, once the workers leaving are gone."""

    ok: bool = True
    added: list[str] = []  # starting: `clusterctl` waits for them in the ledger
    removing: list[str] = []
    kill: bool = False  # removed abruptly, not retired
    workers: dict[str, int] = {}  # each group's size now
    retired: list[str] = []  # of ``removing``, those whose results moved off first


class AdaptReply(Reply):
    ok: bool = True
    group: str = ""
    adaptive: dict[str, Any] | None = None  # its bounds and target (supervisor/adaptive.py); None: off
    was_adaptive: bool | None = None  # `--off` only
    workers: int = 0


class RestartReply(Reply):
    """A restart: done at once (``restarted``, ``skipped`` with why), or a rolling one begun (``roll``)."""

    ok: bool = True
    rolling: bool = False
    roll: int | None = None
    names: list[str] = []
    restarted: list[str] = []
    skipped: dict[str, str] = {}


class RollProgress(Reply):
    """A rolling restart's steps after the asked one; ``next`` is the one to ask from next."""

    roll: int = 0
    names: list[str] = []
    steps: list[dict[str, Any]] = []  # at, text, phase, index, of, ... (supervisor/rolling.py)
    next: int = 0
    done: bool = False
    error: str | None = None
    replaced: list[list[str]] = []  # [old, new] pairs


class ApplyReply(Reply):
    """apply: the plan's lines, and unless it was a dry run or refused, what it set going."""

    ok: bool = True
    plan: list[str] = []
    dry_run: bool = False
    refused: str | None = None
    restart: bool = False  # the scheduler restarts, every worker with it
    added: list[str] = []
    removing: list[str] = []
    roll: int | None = None
    rolled: list[str] = []
    workers: dict[str, int] = {}
    retired: list[str] = []


REPLIES: dict[str, type[BaseModel]] = {
    "ping": PingReply, "status": LedgerRecord, "stop": StopReply,
    "scale": ChangeReply, "add": ChangeReply, "remove": ChangeReply, "adapt": AdaptReply,
    "restart": RestartReply, "rolling": RollProgress, "apply": ApplyReply,
}


def answer(command: str, data: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """The supervisor's answer to ``command`` as the JSON object sent: a model whole, a dict with the
    keys it has, checked against the command's model (ValidationError: a bug of the supervisor's)."""
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    return as_dict(REPLIES[command].model_validate(data))


def read(command: str, data: Any) -> Any:
    """The client's side: the supervisor's answer to ``command`` as its model; ClusterError if it is not one."""
    try:
        return REPLIES[command].model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = ".".join(str(x) for x in err.get("loc") or ()) or "answer"
        raise ClusterError(f"the supervisor's answer to `{command}` is not understood ({where}: {err['msg']}); "
                           "is it another clusterctl version? `clusterctl down` and `up` restart it") from None


def as_dict(reply: BaseModel) -> dict[str, Any]:
    """The answer as plain JSON values, with the keys it came with."""
    return reply.model_dump(mode="json", exclude_unset=True)
