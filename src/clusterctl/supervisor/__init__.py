"""The supervisor: one reconcile loop that makes the running children match the desired set."""

from .loop import Supervisor, leftovers, main

__all__ = ["Supervisor", "leftovers", "main"]
