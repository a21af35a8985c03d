"""Control commands as validated requests: one model per command, checked at the door.

A request that does not fit its model is refused with one line naming the
field, the bad value and what would be accepted; nothing is changed.

>>> parse("scale", {"count": 3})
ScaleRequest(count=3, group=None, kill=False)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ClusterError
from ..topology.limits import MAX_GROUP_WORKERS

Name = str


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Empty(Request):
    pass


class ScaleRequest(Request):
    """Set a group's worker count."""

    count: int = Field(ge=0, le=MAX_GROUP_WORKERS)
    group: Name | None = None
    kill: bool = False


class AddRequest(Request):
    """Add workers to a group."""

    count: int = Field(1, ge=0, le=MAX_GROUP_WORKERS)
    group: Name | None = None


class RemoveRequest(Request):
    """Remove named workers, or ``count`` of a group's (failed ones first, then the newest)."""

    names: list[Name] = Field(default_factory=list, max_length=MAX_GROUP_WORKERS)
    count: int | None = Field(None, ge=1, le=MAX_GROUP_WORKERS)
    group: Name | None = None
    kill: bool = False


MODELS: dict[str, type[Request]] = {
    "ping": Empty, "status": Empty, "stop": Empty,
    "scale": ScaleRequest, "add": AddRequest, "remove": RemoveRequest,
}
READ_ONLY = frozenset({"ping", "status"})

HINTS = {
    "count": f"a whole number from 0 to {MAX_GROUP_WORKERS}",
    "names": "a list of worker names",
    "group": "a worker group's name",
    "kill": "true or false",
}


def parse(command: str, body: dict[str, Any]) -> Request:
    model = MODELS.get(command)
    if model is None:
        raise ClusterError(f"unknown command {command!r}; known: {', '.join(sorted(MODELS))}")
    try:
        request = model.model_validate(body)
    except ValidationError as e:
        raise ClusterError(_describe(command, e)) from None
    if isinstance(request, RemoveRequest) and request.names and request.count is not None:
        raise ClusterError("give worker names or --count, not both")
    if isinstance(request, RemoveRequest) and not request.names and request.count is None:
        raise ClusterError("remove: name the workers, or give --count")
    return request


def _describe(command: str, e: ValidationError) -> str:
    err = e.errors()[0]
    loc = [str(x) for x in err["loc"]]
    field = loc[0] if loc else "body"
    if err["type"] == "extra_forbidden":
        return f"{command}: unknown field {field!r}; fields: {', '.join(MODELS[command].model_fields) or 'none'}"
    value = err.get("input")
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    if field == "count" and command == "remove":
        return f"--count must be a whole number of at least 1, not {shown}"
    want = HINTS.get(field, "a valid value")
    return f"{field} must be {want}, not {shown}"
