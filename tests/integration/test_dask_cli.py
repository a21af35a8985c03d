"""`dask clusterctl ...`: the dask_cli entry point gives the same commands as `clusterctl ...`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLI, processes_under

pytestmark = pytest.mark.integration

DASK = Path(sys.executable).with_name("dask.exe" if os.name == "nt" else "dask")


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    env.pop("CLUSTERCTL_CONFIG", None)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def dask_cc(cluster, *args: str) -> subprocess.CompletedProcess:
    return run([str(DASK), "clusterctl", *args, "--file", str(cluster.config)], cluster.root)


def test_dask_clusterctl_help_lists_the_commands(tmp_path):
    assert DASK.exists(), f"{DASK}: distributed installs the `dask` script beside the interpreter"
    top = run([str(DASK), "--help"], tmp_path)
    assert top.returncode == 0 and "clusterctl" in top.stdout
    res = run([str(DASK), "clusterctl", "--help"], tmp_path)
    assert res.returncode == 0, res.stderr
    for command in ("up", "down", "status", "scale", "worker", "list", "validate", "logs", "events"):
        assert f" {command} " in res.stdout, command
    assert "Usage: dask clusterctl" in res.stdout
    assert "--install-completion" not in res.stdout  # that belongs to the `clusterctl` script
    sub = run([str(DASK), "clusterctl", "scale", "--help"], tmp_path)
    assert sub.returncode == 0 and "Usage: dask clusterctl scale" in sub.stdout


def test_dask_clusterctl_up_status_down_as_clusterctl_does(cluster):
    same = [CLI[0], *CLI[1:], "validate", "--json", "--file", str(cluster.config)]
    ours = dask_cc(cluster, "validate", "--json")
    assert ours.returncode == 0, ours.stderr
    theirs = run(same, cluster.root)
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)

    assert dask_cc(cluster, "status").returncode == 3  # not running: the same exit code
    up = dask_cc(cluster, "up")
    assert up.returncode == 0, up.stderr
    assert "is up in" in up.stdout and f"tls://127.0.0.1:{cluster.port}" in up.stdout
    st = dask_cc(cluster, "status", "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["workers_registered"] == 2
    listed = run([str(DASK), "clusterctl", "list", "--json"], cluster.root)
    assert str(cluster.config) in [c["config"] for c in json.loads(listed.stdout)["clusters"]]
    down = dask_cc(cluster, "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert cluster.ledger()["state"] == "stopped" and processes_under(cluster.root) == []


def test_dask_clusterctl_bad_input_is_one_line(tmp_path):
    res = run([str(DASK), "clusterctl", "validate", "--file", str(tmp_path / "missing.yaml")], tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    bad = run([str(DASK), "clusterctl", "scale", "--no-such-flag"], tmp_path)
    assert bad.returncode == 2 and "No such option" in bad.stderr
