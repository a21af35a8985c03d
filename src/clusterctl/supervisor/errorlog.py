"""The loop's own errors (a step that raised, a ledger that cannot be written): the traceback once
per place and kind on stderr, which is supervisor.log, and an event every time."""

from __future__ import annotations

import traceback
from typing import Any


class ErrorLog:
    def __init__(self, fx: Any):
        self.fx = fx  # Effects: where the events go
        self.logged: set[tuple[str, str]] = set()  # (where, exception type) whose traceback was printed

    def log(self, where: str, e: BaseException) -> None:
        key = (where, type(e).__name__)
        if key not in self.logged:
            self.logged.add(key)
            try:
                traceback.print_exception(e)
            except (OSError, ValueError):
                pass  # stderr is supervisor.log: on a full disk it cannot take the traceback
        try:
            self.fx.emit("supervisor", "error", f"{where}: {type(e).__name__}: {e}")
        except Exception:  # noqa: BLE001 - the event log itself may be what fails
            pass
