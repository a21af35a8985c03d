"""The supervisor: one reconcile loop that makes the running children match the desired set."""

from .entry import main
from .loop import Supervisor, leftovers

__all__ = ["Supervisor", "leftovers", "main"]
