"""The control channel's requests as the supervisor reads them. The models, ``parse`` (the door:
one line for anything malformed) and ``READ_ONLY`` live in runtime/requests.py, below the client
and the supervisor alike: the client builds its requests with the same models."""

from __future__ import annotations

from ..runtime.requests import (MAX_WORKER_NAME, MODELS, READ_ONLY, AdaptRequest, AddRequest, ApplyRequest,
                                Empty, PingRequest, RemoveRequest, Request, RestartRequest, RollingRequest,
                                ScaleRequest, StatusRequest, StopRequest, parse, shown)
from ..topology.limits import MAX_GROUP_WORKERS

__all__ = ["MAX_GROUP_WORKERS", "MAX_WORKER_NAME", "MODELS", "READ_ONLY", "AdaptRequest", "AddRequest",
           "ApplyRequest", "Empty", "PingRequest", "RemoveRequest", "Request", "RestartRequest", "RollingRequest",
           "ScaleRequest", "StatusRequest", "StopRequest", "parse", "shown"]
