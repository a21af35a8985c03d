"""Sized to the machine, for real: `up` with count: auto and memory_limit: auto on this machine, and
gpus: on network-namespace hosts whose PATH holds a stand-in nvidia-smi listing 2 GPUs (no real GPU
is used anywhere: what is tested is the inventory, the plan and the environment each worker gets)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

import netns
from clients import client_of
from conftest import free_port, processes_under
from clusterctl.plan.sizing import MiB, reserve_bytes
from clusterctl.remote import probe

pytestmark = pytest.mark.integration
PY = sys.executable
STAND_IN = """#!/bin/sh
# a stand-in nvidia-smi: what `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`
# prints on a machine with two GPUs
echo "0, NVIDIA Stand-in GPU, 16384"
echo "1, NVIDIA Stand-in GPU, 16384"
"""


def events(cluster) -> list[dict]:
    return [json.loads(line) for line in (cluster.state / "events.jsonl").read_text().splitlines()]


def test_up_with_count_and_memory_auto_registers_the_planned_workers(cluster):
    cluster.write(workers="  - name: default\n    count: auto\n    memory_limit: auto\n")
    planned = json.loads(cluster.cli("validate", "--json", check=True).stdout)["sizing"]["localhost"]
    here = probe.inventory()
    cores, usable = here["cores"], here["memory"]
    each = (usable - reserve_bytes(None, usable)) // cores // MiB * MiB
    assert planned["groups"]["default"] == {"workers": cores, "room": cores, "nthreads": 1, "memory_limit": each,
                                            "gpus": []}

    up = cluster.cli("up", check=True)
    assert f"Workers:    {cores}" in up.stdout, up.stdout
    with client_of(cluster, timeout="20s") as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted((w["name"], w["nthreads"], w["memory_limit"]) for w in workers) == \
            [(f"default-{i}", 1, each) for i in range(cores)]
        assert sum(w["memory_limit"] for w in workers) <= usable - reserve_bytes(None, usable)
    sized = [e for e in events(cluster) if e["event"] == "sized"]
    assert [e["process"] for e in sized] == ["localhost"] and f"{cores} workers x 1 thread" in sized[0]["detail"]
    assert not [e for e in events(cluster) if e["event"] == "inventories"], "no remote host: nobody was asked"
    # `apply` of the same file sizes it as `up` did: nothing to change, and a worker added since is
    # planned with the sized limit (not Dask's own auto).
    res = cluster.cli("apply", "--json", check=True)
    assert json.loads(res.stdout)["plan"] == [], res.stdout
    cluster.config.write_text(cluster.config.read_text().replace("shutdown: 5", "shutdown: 6"))
    res = cluster.cli("apply", "--json", check=True)
    assert json.loads(res.stdout)["plan"] == ["~ timeouts.shutdown: 5 -> 6 s (in place, from the next start or stop)"]
    cluster.cli("scale", str(cores + 1), check=True)
    with client_of(cluster, timeout="20s") as client:
        added = [w for w in client.scheduler_info(n_workers=-1)["workers"].values() if w["name"] == f"default-{cores}"]
        assert [(w["nthreads"], w["memory_limit"]) for w in added] == [(1, each)], added
    cluster.cli("down", check=True)
    assert processes_under(cluster.root) == []


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    yield from netns.netns_fleet(tmp_path_factory, hosts=2)


def gpu_cluster(cluster, fleet, workers: str) -> Path:
    """ns0's PATH (its `env:`, the workers' environment there) holds the stand-in nvidia-smi; ns1's does not."""
    bin_dir = cluster.root / "gpu-bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(STAND_IN)
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    cluster.port, cluster.dashboard_port = free_port(fleet.head_address), free_port(fleet.head_address)
    hosts = ""
    for h in fleet.hosts:
        hosts += fleet.host_yaml(f"ns{h.index}", h, PY, cluster.root / "remote" / f"ns{h.index}")
        if h.index == 0:
            hosts += f"    env: {{PATH: '{bin_dir}:{os.environ['PATH']}'}}\n"
    cluster.write(workers=workers, extra="hosts:\n" + hosts)
    text = cluster.config.read_text().replace("  host: 127.0.0.1\n", f"  host: {fleet.head_address}\n", 1)
    cluster.config.write_text(text)
    return cluster.config


@pytest.mark.timeout(240)
def test_one_worker_per_gpu_with_its_gpu_first_on_a_namespace_host(cluster, fleet):
    gpu_cluster(cluster, fleet, "  - name: gpu\n    gpus: auto\n    at: ns0\n")
    shown = cluster.cli("validate", check=True).stdout
    assert "ns0: " in shown and ", 2 GPUs -> 2 workers x 1 thread" in shown and "GPUs 0,1" in shown, shown

    cluster.cli("up", check=True)
    with client_of(cluster, timeout="20s") as client:
        info = client.scheduler_info(n_workers=-1)["workers"]
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        names = {addr: w["name"] for addr, w in info.items()}
        assert sorted((names[a], v) for a, v in seen.items()) == [("gpu-0", "0,1"), ("gpu-1", "1,0")]
        assert [w["resources"] for w in info.values()] == [{"GPU": 1}, {"GPU": 1}]
        assert all(w["nthreads"] == 1 and w["host"] == fleet.hosts[0].address for w in info.values())
    took = next(e for e in events(cluster) if e["event"] == "inventories")
    assert took["detail"].startswith("1 of 1 hosts answered") and took["seconds"] < 6, took
    cached = json.loads((cluster.state / "inventory.json").read_text())["hosts"]["ns0"]
    assert [g["index"] for g in cached["gpus"]] == [0, 1]
    cluster.cli("down", check=True)
    assert processes_under(cluster.root) == []


@pytest.mark.timeout(120)
def test_gpus_on_a_host_without_nvidia_smi_fail_up_in_one_line(cluster, fleet):
    gpu_cluster(cluster, fleet, "  - name: train\n    gpus: auto\n    at: ns1\n")
    up = cluster.cli("up")
    assert up.returncode == 1, (up.returncode, up.stdout, up.stderr)
    lines = [ln for ln in up.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "group 'train' on host 'ns1': gpus: auto, but the host has no GPU" in lines[0], lines
    assert "nvidia-smi: not found on PATH" in lines[0] and "Traceback" not in up.stderr
    validate = cluster.cli("validate")
    assert validate.returncode == 2 and "host 'ns1'" in validate.stderr and len(validate.stderr.splitlines()) == 1
    assert processes_under(cluster.root / "remote") == []
