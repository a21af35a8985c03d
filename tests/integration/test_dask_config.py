"""The user's own Dask config beats clusterctl's tuning defaults in the processes it really starts,
and the dashboard link follows distributed.dashboard.link."""

from __future__ import annotations

import json

import pytest

from clients import client_of

pytestmark = pytest.mark.integration

TICK = "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL"
MONITOR = "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL"


def test_a_value_in_the_users_dask_yaml_reaches_every_process(cluster, tmp_path):
    def _settings(dask_worker=None) -> dict:  # nested: pickled by value, run on each worker and the scheduler
        import os

        import dask

        got = {
            "tick": dask.config.get("distributed.admin.tick.interval"),
            "profile": dask.config.get("distributed.worker.profile.interval"),
            "monitor": dask.config.get("distributed.admin.system-monitor.interval"),
            "tick_env": os.environ.get("DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL"),
            "omp": os.environ.get("OMP_NUM_THREADS"),
        }
        if dask_worker is not None:
            got["tick_s"] = dask_worker._tick_interval  # what the running server uses, not just the config
        return got

    conf = tmp_path / "dask-config"
    conf.mkdir()
    mine = conf / "mine.yaml"
    mine.write_text("distributed:\n  admin:\n    tick:\n      interval: 37ms\n"
                    "  worker:\n    profile:\n      interval: 70ms\n"
                    "  dashboard:\n    link: /user/{JUPYTERHUB_USER}/proxy/{port}/status\n")
    env = {"DASK_CONFIG": str(conf), "JUPYTERHUB_USER": "eve"}
    cluster.write(workers=(  # forked from the warm server, and exec'd (a non-DASK env)
        "  - name: default\n    count: 1\n    nthreads: 1\n"
        "  - name: own\n    count: 1\n    nthreads: 1\n    env: {OMP_NUM_THREADS: '2'}\n"
    ))

    shown = json.loads(cluster.cli("validate", "--json", check=True, env=env).stdout)
    by = {t["key"]: t for t in shown["tuning"]["values"]}
    assert by[TICK]["value"] == "37ms" and by[TICK]["source"] == f"your dask config ({mine})"
    assert by[MONITOR]["source"] == "clusterctl default"
    link = f"/user/eve/proxy/{cluster.dashboard_port}/status"
    assert shown["dashboard"] == link

    up = cluster.cli("up", check=True, env=env)
    assert link in up.stdout
    assert cluster.status()["dashboard"] == link == cluster.ledger()["scheduler"]["dashboard"]
    with client_of(cluster, timeout=30) as client:
        by_addr = client.run(_settings)
        names = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
        on_scheduler = client.run_on_scheduler(_settings)
    got = {name: by_addr[addr] for name, addr in names.items()}
    mine_values = {"tick": "37ms", "profile": "70ms", "monitor": "1s", "tick_env": None, "tick_s": 0.037}
    assert got["default-0"] == {**mine_values, "omp": "1"}
    assert got["own-0"] == {**mine_values, "omp": "2"}
    assert on_scheduler["tick"] == "37ms" and on_scheduler["tick_env"] is None and on_scheduler["monitor"] == "1s"
