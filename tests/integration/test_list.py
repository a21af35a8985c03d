"""clusterctl list: the clusters this user runs here, read live; stopped ones forgotten."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from conftest import CLI, Cluster, free_port, kill_all, processes_under, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def second(tmp_path_factory):
    """A second cluster, named `other`, in a directory of its own; stopped and checked afterwards."""
    root = tmp_path_factory.mktemp("second")
    c = Cluster(root=root, port=free_port(), dashboard_port=free_port(), name="other")
    c.write()
    yield c
    c.cli("down", timeout=60)
    left = processes_under(root)
    kill_all(left)
    assert not left, f"processes left behind: {[p.pid for p in left]}"


def clusterctl_list(*args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    res = subprocess.run([*CLI, "list", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res


def test_list_two_clusters_then_forget_the_stopped_one(cluster, second, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))  # an empty registry, for this test alone
    empty = clusterctl_list(cwd=tmp_path)
    assert "no clusters are registered" in empty.stdout
    cluster.cli("up", check=True)
    second.cli("up", check=True)

    listed = json.loads(clusterctl_list("--json", cwd=tmp_path).stdout)
    assert listed["pruned"] == []
    by_name = {c["name"]: c for c in listed["clusters"]}
    assert sorted(by_name) == ["other", "test"]
    for c in (cluster, second):
        row = by_name[c.name]
        assert row["state"] == "running" and row["scheduler"] == f"tls://127.0.0.1:{c.port}"
        assert (row["workers_registered"], row["workers_desired"]) == (2, 2)
        assert row["config"] == str(c.config) and row["state_dir"] == str(c.state)
        assert row["dashboard"] == f"http://127.0.0.1:{c.dashboard_port}/status" and row["supervisor_pid"]

    table = clusterctl_list(cwd=tmp_path).stdout.splitlines()  # piped: plain columns
    assert table[0].split() == ["name", "state", "scheduler", "workers", "config"]
    rows = sorted(line.split() for line in table[1:])
    assert rows == [["other", "running", f"tls://127.0.0.1:{second.port}", "2/2", str(second.config)],
                    ["test", "running", f"tls://127.0.0.1:{cluster.port}", "2/2", str(cluster.config)]]

    second.cli("down", check=True)
    after = clusterctl_list(cwd=tmp_path)
    assert [r.split()[0] for r in after.stdout.splitlines()[1:]] == ["test"]
    assert f"forgot 'other' ({second.config}): it is stopped" in after.stderr
    again = json.loads(clusterctl_list("--json", cwd=tmp_path).stdout)
    assert [c["name"] for c in again["clusters"]] == ["test"] and again["pruned"] == []  # forgotten for good
    assert len(list((tmp_path / "xdg" / "clusterctl" / "clusters").iterdir())) == 1

    cluster.cli("down", check=True)
    final = json.loads(clusterctl_list("--json", cwd=tmp_path).stdout)
    assert final["clusters"] == [] and [p["name"] for p in final["pruned"]] == ["test"]


def test_a_foreground_cluster_is_listed(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    fg = subprocess.Popen([*CLI, "up", "--foreground", "--file", str(cluster.config)], cwd=cluster.root,
                          env=dict(os.environ, NO_COLOR="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        wait_for(lambda: cluster.status()["state"] == "running", 60, 0.2, "the foreground cluster running")
        rows = json.loads(clusterctl_list("--json", cwd=tmp_path).stdout)["clusters"]
        assert [(r["name"], r["state"], r["workers_registered"]) for r in rows] == [("test", "running", 2)]
    finally:
        fg.send_signal(signal.SIGTERM)
        try:
            fg.wait(timeout=60)
        except subprocess.TimeoutExpired:
            fg.kill()
