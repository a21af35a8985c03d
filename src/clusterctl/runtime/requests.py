"""The control channel's requests: one model per command, used by both ends.

The supervisor checks every request at its door with ``parse``; the client builds its requests
with the same models (``ScaleRequest.of(count=3)``), so both speak one vocabulary and the JSON on
the wire is the model's fields, as before. A request that does not fit its model is refused with
one line naming the field, the bad value and what would be accepted; nothing is changed. Every
field is bounded, so nothing unbounded reaches the supervisor: a count is a whole number up to
``MAX_GROUP_WORKERS``, a group a name as cluster.yaml allows (``NAME_RE``, at most 63
characters), ``names`` at most ``MAX_GROUP_WORKERS`` worker names of at most
``MAX_WORKER_NAME`` characters each. ``parse`` raises ClusterError and nothing else, whatever it
is given. Their answers are runtime/replies.py.

>>> parse("scale", {"count": 3})
ScaleRequest(count=3, group=None, kill=False)
>>> ScaleRequest.of(count=3).body()
{'count': 3}
>>> parse("remove", {"names": [["default-0"]]})
Traceback (most recent call last):
...
clusterctl.errors.ClusterError: names[0] must be a worker name (letters, digits, '_', '.', '-'; at most 72 characters), not ['default-0']
"""

from __future__ import annotations

import reprlib
from typing import Annotated, Any, ClassVar, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ..errors import ClusterError
from ..topology.base import NAME_RE
from ..topology.limits import MAX_GROUP_WORKERS

MAX_WORKER_NAME = 72  # a group's name (63 at most), "-" and an index
WORKER_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_PATH = 4096  # apply: the topology's path
MAX_ROLL_ID = 2**31 - 1
MAX_ROLL_STEPS = 4 * MAX_GROUP_WORKERS + 8  # a roll's steps: about three per worker

GroupName = Annotated[str, StringConstraints(pattern=NAME_RE.pattern, max_length=63)]
WorkerName = Annotated[str, StringConstraints(pattern=WORKER_NAME_RE, max_length=MAX_WORKER_NAME)]


class Request(BaseModel):
    """One command's request; ``command`` is its name on the wire (``POST /<command>``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    command: ClassVar[str] = ""

    @classmethod
    def of(cls: type[R], **fields: Any) -> R:
        """This request from its fields, checked as the supervisor checks it (one-line ClusterError)."""
        return cast(R, parse(cls.command, fields))

    def body(self) -> dict[str, Any]:
        """The JSON object sent: the fields given, as given (defaults stay the supervisor's)."""
        return self.model_dump(exclude_unset=True)


R = TypeVar("R", bound=Request)


class Empty(Request):
    """A command without fields."""


class PingRequest(Empty):
    command = "ping"


class StatusRequest(Empty):
    command = "status"


class StopRequest(Empty):
    """Stop the cluster and the supervisor (`down`)."""

    command = "stop"


class ScaleRequest(Request):
    """Set a group's worker count."""

    command = "scale"
    count: int = Field(ge=0, le=MAX_GROUP_WORKERS)
    group: GroupName | None = None
    kill: bool = False


class AddRequest(Request):
    """Add workers to a group."""

    command = "add"
    count: int = Field(1, ge=0, le=MAX_GROUP_WORKERS)
    group: GroupName | None = None


class RemoveRequest(Request):
    """Remove named workers, or ``count`` of a group's (failed ones first, then the newest)."""

    command = "remove"
    names: list[WorkerName] = Field(default_factory=list, max_length=MAX_GROUP_WORKERS)
    count: int | None = Field(None, ge=1, le=MAX_GROUP_WORKERS)
    group: GroupName | None = None
    kill: bool = False


class AdaptRequest(Request):
    """Make a group adaptive between minimum and maximum, or (``off``) return it to a fixed count."""

    command = "adapt"
    group: GroupName | None = None
    minimum: int | None = Field(None, ge=0, le=MAX_GROUP_WORKERS)
    maximum: int | None = Field(None, ge=1, le=MAX_GROUP_WORKERS)
    target_duration: float | None = Field(None, ge=0.1, le=3600)
    wait_count: int | None = Field(None, ge=1, le=1000)
    interval: float | None = Field(None, ge=0.2, le=300)
    off: bool = False


class RestartRequest(Request):
    """Restart named processes, a group's workers, or (neither) every worker; ``rolling``: workers one at
    a time, each replacement registered before the old one retires (supervisor/rolling.py)."""

    command = "restart"
    names: list[WorkerName] = Field(default_factory=list, max_length=MAX_GROUP_WORKERS + 1)
    group: GroupName | None = None
    rolling: bool = False


class RollingRequest(Request):
    """A rolling restart's steps after ``since``, waiting up to ``wait`` seconds for the next one."""

    command = "rolling"
    roll: int = Field(ge=1, le=MAX_ROLL_ID)
    since: int = Field(0, ge=0, le=MAX_ROLL_STEPS)
    wait: float = Field(0.0, ge=0, le=30)


class ApplyRequest(Request):
    """Converge the cluster to the topology at ``path`` (supervisor/applying.py)."""

    command = "apply"
    path: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH, pattern=r"^[^\x00-\x1f\x7f]+$")]
    dry_run: bool = False
    allow_restart: bool = False


MODELS: dict[str, type[Request]] = {m.command: m for m in (
    PingRequest, StatusRequest, StopRequest, ScaleRequest, AddRequest, RemoveRequest, AdaptRequest,
    RestartRequest, RollingRequest, ApplyRequest)}
READ_ONLY = frozenset({"ping", "status"})  # the commands GET may ask (runtime/control.py serves them)

HINTS = {
    "count": f"a whole number from 0 to {MAX_GROUP_WORKERS}",
    "names": f"a list of at most {MAX_GROUP_WORKERS} worker names",
    "names[]": f"a worker name (letters, digits, '_', '.', '-'; at most {MAX_WORKER_NAME} characters)",
    "group": "a worker group's name (letters, digits, '_', '.', '-'; at most 63 characters)",
    "kill": "true or false",
    "off": "true or false",
    "minimum": f"a whole number from 0 to {MAX_GROUP_WORKERS}",
    "maximum": f"a whole number from 1 to {MAX_GROUP_WORKERS}",
    "target_duration": "seconds, from 0.1 to 3600",
    "wait_count": "a whole number from 1 to 1000",
    "interval": "seconds, from 0.2 to 300",
    "rolling": "true or false",
    "roll": "a rolling restart's number",
    "since": f"a whole number from 0 to {MAX_ROLL_STEPS}",
    "wait": "seconds, from 0 to 30",
    "path": f"an absolute path to a topology file (at most {MAX_PATH} characters, no control characters)",
    "dry_run": "true or false",
    "allow_restart": "true or false",
}

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlong = 3, 50, 50, 50
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6


def parse(command: str, body: dict[str, Any]) -> Request:
    """The validated request for ``command``; ClusterError (one line) if it is not one."""
    model = MODELS.get(command) if isinstance(command, str) else None
    if model is None:
        raise ClusterError(f"unknown command {shown(command)}; known: {', '.join(sorted(MODELS))}")
    if not isinstance(body, dict):
        raise ClusterError(f"{command}: the request body must be a JSON object, not {shown(body)}")
    try:
        request = model.model_validate(body)
    except ValidationError as e:
        raise ClusterError(_describe(command, e)) from None
    except (ValueError, TypeError, RecursionError) as e:  # what pydantic may let through on odd input
        raise ClusterError(f"{command}: invalid request ({type(e).__name__})") from None
    if isinstance(request, RemoveRequest) and request.names and request.count is not None:
        raise ClusterError("give worker names or --count, not both")
    if isinstance(request, RemoveRequest) and not request.names and request.count is None:
        raise ClusterError("remove: name the workers, or give --count")
    if isinstance(request, AdaptRequest) and not request.off:
        lo, hi = request.minimum, request.maximum
        if lo is not None and hi is not None and lo > hi:
            raise ClusterError(f"adapt: --min ({lo}) is more than --max ({hi})")
    return request


def shown(value: Any, limit: int = 60) -> str:
    """A value for a one-line message: a short repr, never an exception, never a line break."""
    try:
        text = _repr.repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int past the 4300-digit str limit
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(command: str, e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = list(err.get("loc") or ())
    field = str(loc[0]) if loc else "body"
    if err["type"] == "extra_forbidden":
        fields = ", ".join(MODELS[command].model_fields) or "none"
        return f"{command}: unknown field {shown(field, 40)}; fields: {fields}"
    where, hint = field, HINTS.get(field, "a valid value")
    if field == "names" and len(loc) > 1:
        where, hint = f"names[{loc[1]}]", HINTS["names[]"]
    if err["type"] == "missing":
        return f"{command}: {field} is required: {hint}"
    value = shown(err.get("input"))
    if field == "count" and command == "remove":
        return f"--count must be a whole number from 1 to {MAX_GROUP_WORKERS}, not {value}"
    return f"{where} must be {hint}, not {value}"
