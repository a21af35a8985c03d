"""Structured event log: one JSON object per line (time, process, event, detail)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class EventLog:
    def __init__(self, path: Path, echo: Any = None):
        self.path = path
        self.echo = echo  # callable(str) for --foreground, or None
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, process: str, event: str, detail: str = "", **extra: Any) -> None:
        record = {"time": round(time.time(), 3), "process": process, "event": event, "detail": detail}
        record.update(extra)
        line = json.dumps(record)
        with self._lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        if self.echo:
            stamp = time.strftime("%H:%M:%S", time.localtime(record["time"]))
            self.echo(f"{stamp} {process:<14} {event:<12} {detail}".rstrip())


def read_events(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines[-limit:] if limit else lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash
    return out
