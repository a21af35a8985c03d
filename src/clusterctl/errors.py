"""The one error type the user sees; the CLI turns it into a message and an exit code."""

from __future__ import annotations


class ClusterError(Exception):
    """A failure the user can act on. ``exit_code`` follows the CLI contract."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(ClusterError):
    """cluster.yaml is missing, unreadable or invalid (exit 2)."""

    exit_code = 2


class ResolveError(ClusterError):
    """No usable Dask executable was found."""

    exit_code = 2


class NotRunning(ClusterError):
    """The cluster is not running (exit 3 for ``status``)."""

    exit_code = 3
