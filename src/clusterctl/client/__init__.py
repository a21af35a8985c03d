"""What the commands do, apart from how they print: start, stop, report, connect.

>>> cfg = load_config("cluster.yaml")            # doctest: +SKIP
>>> start_background(cfg)                        # returns once every worker registered
>>> status(cfg)["workers_registered"]
3
>>> Client(client_address(cfg), **client_kwargs(cfg))
>>> stop(cfg)
"""

from .connect import ask_supervisor, client_address, client_kwargs
from .start import StartError, start_background
from .status import status
from .stop import stop

__all__ = ["StartError", "ask_supervisor", "client_address", "client_kwargs", "start_background", "status", "stop"]
