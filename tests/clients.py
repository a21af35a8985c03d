"""A distributed.Client of a test's cluster, as a user's own code gets one: TLS is on by default
(issue 22), so the client carries the cluster's client certificate (clusterctl.client.connect)."""

from __future__ import annotations

from typing import Any

from clusterctl.client.connect import client_address, client_kwargs
from clusterctl.topology import load_config


def client_of(cluster: Any, address: str | None = None, **kwargs: Any):
    """A Client of ``cluster`` (tests/conftest.Cluster) at the address its ledger names, or at ``address``."""
    from distributed import Client

    cfg = load_config(cluster.config)
    return Client(address or client_address(cfg), **client_kwargs(cfg), **kwargs)
