"""clusterctl: turn cluster.yaml into a supervised Dask cluster.

From Python, ``clusterctl.SupervisedCluster`` (client/deploy.py) is the cluster as a
``distributed.deploy.Cluster``. It is imported on first use, so that ``import clusterctl``
and the command line do not import distributed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SupervisedCluster"]


def __getattr__(name: str) -> Any:
    if name == "SupervisedCluster":
        from .client.deploy import SupervisedCluster

        return SupervisedCluster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
