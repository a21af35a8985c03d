"""clusterctl.SupervisedCluster: Client(cluster) over real processes, scale, logs, close semantics."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, wait
from distributed.core import Status

from clusterctl import SupervisedCluster
from clusterctl.errors import ClusterError, ConfigError
from conftest import processes_under, wait_for

pytestmark = pytest.mark.integration


def check_collections(client: Client) -> None:
    """A dask.array reduction and a dask.dataframe groupby, checked against NumPy and pandas,
    with their results held by this cluster's workers."""
    rng = np.random.default_rng(7)
    a = rng.random((600, 400))
    x = da.from_array(a, chunks=(150, 100))
    y = client.persist((x @ x.T).sum(axis=0))
    wait(y)
    workers = set(client.scheduler_info()["workers"])
    held = client.who_has(y)
    assert held and all(set(v) and set(v) <= workers for v in held.values())
    np.testing.assert_allclose(y.compute(), (a @ a.T).sum(axis=0))
    pdf = pd.DataFrame({"k": rng.integers(0, 9, 20_000), "v": rng.random(20_000)})
    got = dd.from_pandas(pdf, npartitions=5).groupby("k").v.agg(["sum", "count", "max"]).compute()
    pd.testing.assert_frame_equal(got.sort_index(), pdf.groupby("k").v.agg(["sum", "count", "max"]).sort_index())


def registered(client: Client) -> list[str]:
    return sorted(str(w["name"]) for w in client.scheduler_info()["workers"].values())


def test_start_compute_scale_logs_then_close_semantics(cluster):
    cl = SupervisedCluster(cluster.config)
    watcher = None
    try:
        assert cl.started and cl.shutdown_on_close and cl.status == Status.running
        assert cl.name == "test" and cl.scheduler_address == f"tls://127.0.0.1:{cluster.port}"
        assert cl.dashboard_link == f"http://127.0.0.1:{cluster.dashboard_port}/status"
        with dask.config.set({"distributed.dashboard.link": "https://hub.example{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"}):
            os.environ["JUPYTERHUB_SERVICE_PREFIX"] = "/user/ada/"
            try:
                assert cl.dashboard_link == f"https://hub.example/user/ada/proxy/{cluster.dashboard_port}/status"
                assert cl.dashboard_link in cl._repr_html_()
            finally:
                del os.environ["JUPYTERHUB_SERVICE_PREFIX"]
        html = cl._repr_html_()  # the notebook repr: what the base class shows from a live scheduler_info
        assert "<h3" in html and ">SupervisedCluster</h3>" in html and re.search(r"<strong>Workers:</strong> 2\s", html)
        assert cl.scheduler_address in html
        assert repr(cl).startswith("SupervisedCluster(test, 'tls://127.0.0.1:") and "workers=2" in repr(cl)
        reply = cl.adapt(minimum=1, maximum=4, target_duration="2s")  # the supervisor's adaptive mode
        assert reply["adaptive"]["maximum"] == 4 and reply["adaptive"]["target_duration"] == 2.0
        with pytest.raises(TypeError):
            cl.adapt(minimum=1, maximum=4, bogus=1)
        with pytest.raises(ValueError):
            cl.scale(-1)

        with Client(cl) as client:
            assert client.cluster is cl
            check_collections(client)
            # returns once they are registered: no waiting here. (Which names: adaptive mode, on until this
            # scale, may have retired and added workers while the collections ran.)
            cl.scale(4)
            assert len(registered(client)) == 4
            cl.scale(1)
            assert len(registered(client)) == 1
            assert len(cl.scheduler_info["workers"]) == 1

            # The supervisor restarts a killed scheduler; the cluster object watches the new one.
            first = cl.scheduler_info["id"]
            sched = next(p for p in cluster.ledger()["processes"] if p["role"] == "scheduler")
            os.kill(sched["pid"], signal.SIGKILL)
            wait_for(lambda: cl.scheduler_info["id"] != first and len(cl.scheduler_info["workers"]) == 1, 40,
                     what="the restarted scheduler's workers in cl.scheduler_info")
            check_collections(client)

            # Attached, by config or by name: close() leaves the cluster running.
            other = SupervisedCluster(cluster.config)
            assert not other.started and not other.shutdown_on_close and other.status == Status.running
            other.close()
            assert other.status == Status.closed
            watcher = SupervisedCluster.from_name("test")
            assert not watcher.started and watcher.scheduler_address == cl.scheduler_address
            assert client.submit(sum, [1, 2, 3]).result() == 6  # still serving
            assert cluster.status()["state"] == "running"

        # (which worker is left after scale(1) depends on what adaptive mode retired before it)
        [left] = [p["name"] for p in cluster.ledger()["processes"] if p["role"] == "worker"]
        logs = cl.get_logs()
        assert set(logs) == {"supervisor", "scheduler", left}
        assert "Scheduler at:" in cl.get_logs(lines=100_000)["scheduler"]
        assert "Registered to:" in logs[left] and not logs[left].startswith("  ")
        assert set(cl.get_logs(cluster=False, scheduler=False, workers=[left])) == {left}
    finally:
        cl.close()
    # The starter's close stopped it: nothing left, and an attached object sees it closed.
    assert cl.status == Status.closed
    assert cluster.ledger()["state"] == "stopped"
    assert processes_under(cluster.root) == []
    assert watcher.status == Status.closed
    with pytest.raises(RuntimeError, match="closed"):
        Client(watcher)
    watcher.close()
    assert cl.get_logs()["supervisor"]  # the logs outlive the cluster


def test_tls_groups_and_shutdown_on_close_both_ways(cluster):
    cluster.write(workers="  - name: default\n    count: 1\n    nthreads: 1\n  - name: big\n    count: 1\n    nthreads: 2\n",
                  extra="tls:\n  enabled: true\n")
    cl = SupervisedCluster(cluster.config, shutdown_on_close=False)
    try:
        assert cl.started and not cl.shutdown_on_close
        assert cl.scheduler_address == f"tls://127.0.0.1:{cluster.port}"
        assert cl.security.require_encryption and cl.security.tls_client_cert
        with Client(cl) as client:
            assert client.scheduler.address.startswith("tls://")
            x = da.arange(10_000, chunks=1_000)
            assert int((x * 2).sum().compute()) == 2 * sum(range(10_000))
            with pytest.raises(ClusterError, match="several worker groups"):
                cl.scale(2)
            cl.scale(2, group="big")
            assert registered(client) == ["big-0", "big-1", "default-0"]
    finally:
        cl.close()
    assert cl.status == Status.closed
    assert cluster.status()["state"] == "running"  # it started it, but was told not to stop it

    with SupervisedCluster.from_name("test", shutdown_on_close=True) as named:
        assert not named.started and named.shutdown_on_close
        with Client(named) as client:
            assert client.submit(lambda: 41 + 1).result() == 42
            assert len(client.scheduler_info()["workers"]) == 3  # the size set above outlived that object
    assert named.status == Status.closed
    assert cluster.ledger()["state"] == "stopped"
    assert processes_under(cluster.root) == []


def test_bad_names_and_files_are_one_line_errors(cluster, tmp_path):
    with pytest.raises(ClusterError, match="no running cluster named 'nowhere'.*clusterctl list"):
        SupervisedCluster.from_name("nowhere")
    with pytest.raises(ConfigError, match="no such file"):
        SupervisedCluster(tmp_path / "missing.yaml")
    cluster.write(extra="bogus_key: 1\n")
    with pytest.raises(ConfigError):
        SupervisedCluster(cluster.config)
    assert processes_under(cluster.root) == []


def test_import_clusterctl_does_not_import_distributed():
    code = ("import sys, clusterctl, clusterctl.cli; assert 'distributed' not in sys.modules, 'cli'; "
            "clusterctl.SupervisedCluster; assert 'distributed' in sys.modules; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_asynchronous_use(cluster):
    async def main() -> tuple[SupervisedCluster, list[str]]:
        async with SupervisedCluster(cluster.config, asynchronous=True) as cl:
            assert cl.started and cl.status == Status.running
            async with Client(cl, asynchronous=True) as client:
                assert await client.submit(lambda: 6 * 7) == 42
                await cl.scale(3)
                info = await client.scheduler.identity()
                assert sorted(w["name"] for w in info["workers"].values()) == ["default-0", "default-1", "default-2"]
            logs = await cl.get_logs(workers=False)
        return cl, sorted(logs)

    cl, names = asyncio.run(main())
    assert names == ["scheduler", "supervisor"]
    assert cl.status == Status.closed and cluster.ledger()["state"] == "stopped"
    assert processes_under(cluster.root) == []
