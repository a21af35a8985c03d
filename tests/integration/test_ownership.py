"""`down` harms nothing it does not own, and an unknown ledger is never "nothing runs" (real clusters).

Every process clusterctl starts carries CLUSTERCTL_TAG=<cluster tag>; a recorded pid is
signalled only when its create time matches and it carries the tag, and a process-group
sweep only takes tagged members.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import kill_all, processes_under, wait_for
from clusterctl.plan.specs import TAG_ENV, cluster_tag
from clusterctl.topology import load_config

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")]
PY = sys.executable

# A leader in its own session starts a daemon the classic way (fork twice) that stays in the
# leader's process group with an environment of its own (no tag), then the leader exits.
DOUBLE_FORK = r"""
import os, sys
os.setsid()
pid = os.fork()
if pid == 0:
    daemon = os.fork()
    if daemon == 0:
        os.execve("/bin/sleep", ["sleep", "300"], {"PATH": "/usr/bin:/bin"})
    open(sys.argv[1], "w").write(str(daemon))
    os._exit(0)
os.waitpid(pid, 0)
"""


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ours(cluster) -> list[psutil.Process]:
    """Live processes carrying this cluster's tag (in their environment or title)."""
    from clusterctl.runtime import process

    return process.tagged(cluster_tag(load_config(cluster.config)))


def kill_supervisor(cluster) -> None:
    sup = psutil.Process(cluster.ledger()["supervisor"]["pid"])
    sup.send_signal(signal.SIGKILL)
    wait_for(lambda: not alive(sup), 10, what="the supervisor to die")


def strangers(tmp_path) -> tuple[psutil.Process, psutil.Process, dict, dict]:
    """Two processes that are not the cluster's, and ledger records that name them as if they were:
    a daemon in the process group of a recorded (dead) leader, and a live untagged process
    recorded with its real pid and create time."""
    marker = tmp_path / "daemon.pid"
    leader = subprocess.Popen([PY, "-c", DOUBLE_FORK, str(marker)])
    leader_ct = psutil.Process(leader.pid).create_time()
    assert leader.wait(timeout=15) == 0
    daemon = psutil.Process(int(marker.read_text()))
    wait_for(lambda: daemon.cmdline() == ["sleep", "300"], 10, 0.02, "the daemon's exec")
    assert os.getpgid(daemon.pid) == leader.pid and not psutil.pid_exists(leader.pid)  # a group without its leader
    live = psutil.Process(subprocess.Popen(["sleep", "300"], start_new_session=True).pid)
    ghost = {"name": "default-8", "role": "worker", "group": "default", "state": "running",
             "pid": leader.pid, "create_time": leader_ct}
    lookalike = {"name": "default-9", "role": "worker", "group": "default", "state": "running",
                 "pid": live.pid, "create_time": live.create_time()}
    return daemon, live, ghost, lookalike


def edit_ledger(cluster, fn) -> None:
    path = cluster.state / "ledger.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_every_process_of_a_cluster_carries_its_tag(cluster):
    cluster.write(workers="  - name: default\n    count: 2\n    nthreads: 1\n"
                          "  - name: nanny\n    count: 1\n    nthreads: 1\n    nanny: true\n")
    cluster.cli("up", check=True)
    try:
        tag = cluster_tag(load_config(cluster.config))
        ledger = cluster.ledger()
        sup = psutil.Process(ledger["supervisor"]["pid"])
        family = [sup, *sup.children(recursive=True)]
        for p in ledger["processes"]:  # warm-forked ones are children of the fork server: covered
            top = psutil.Process(p["pid"])
            family += [top, *top.children(recursive=True)]
        assert len({p.pid for p in family}) >= 6  # supervisor, fork server, scheduler, 3 workers, ...
        from clusterctl.runtime import process

        untagged = [f"{p.pid} {p.cmdline()}" for p in family if alive(p) and not process.carries(p, tag)]
        assert untagged == []
        assert {p.pid for p in family if alive(p)} <= {p.pid for p in ours(cluster)}
        # Dask retitles its processes; the tag stays readable in /proc/PID/environ all the same
        workers = [psutil.Process(p["pid"]) for p in ledger["processes"] if p["role"] == "worker"]
        assert all(w.environ().get(TAG_ENV) == tag for w in workers)
    finally:
        cluster.cli("down", check=True)
    assert ours(cluster) == []


def test_down_from_the_ledger_signals_only_what_is_provably_ours(cluster, tmp_path):
    cluster.cli("up", check=True)
    daemon, live, ghost, lookalike = strangers(tmp_path)
    try:
        kill_supervisor(cluster)  # `down` must now work from the ledger alone
        edit_ledger(cluster, lambda d: d["processes"].extend([ghost, lookalike]))
        mine = [psutil.Process(p["pid"]) for p in cluster.ledger()["processes"] if p["name"].startswith(("scheduler", "default-0", "default-1"))]
        assert len(mine) == 3 and all(alive(p) for p in mine)

        res = cluster.cli("down", "--json", check=True)
        out = json.loads(res.stdout)
        assert out["stopped"] == 3 and out["how"] == "ledger", out  # scheduler + 2 workers, not the strangers
        assert not any(alive(p) for p in mine)
        assert alive(daemon), "an untagged daemon in a recorded process group was killed"
        assert alive(live), "a live untagged process recorded with its real pid and create time was killed"
        assert ours(cluster) == [] and processes_under(cluster.root) == []
    finally:
        kill_all([p for p in (daemon, live) if alive(p)])


def test_a_truncated_ledger_is_unknown_not_nothing(cluster):
    cluster.cli("up", check=True)
    before = ours(cluster)
    assert len(before) >= 4  # supervisor, scheduler, 2 workers (and the fork server)
    path = cluster.state / "ledger.json"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # as a full disk or a crash leaves it

    st = cluster.cli("status", "--json")
    assert st.returncode == 3 and json.loads(st.stdout)["state"] == "unknown", st.stdout
    refused = cluster.cli("up")
    assert refused.returncode == 1 and "cannot be read" in refused.stderr and "clusterctl down" in refused.stderr, \
        refused.stdout + refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert all(alive(p) for p in before), "a refused up must not touch anything"

    down = cluster.cli("down", "--json", check=True)
    out = json.loads(down.stdout)
    assert out["how"] == "tag" and out["stopped"] >= len(before), out
    assert "cannot be read" in out["note"] and "ledger.json.unreadable" in out["note"], out
    assert not any(alive(p) for p in before)
    assert ours(cluster) == [] and processes_under(cluster.root) == []
    assert (cluster.state / "ledger.json.unreadable").exists() and not path.exists()

    cluster.cli("up", check=True)  # the broken ledger set aside, the next up starts afresh
    assert cluster.status()["workers_registered"] == 2


def test_up_refuses_while_processes_carrying_the_tag_live(cluster):
    cluster.cli("up", check=True)
    kill_supervisor(cluster)
    (cluster.state / "ledger.json").unlink()  # lost: only the tag still says what runs
    refused = cluster.cli("up")
    assert refused.returncode == 1 and "still run" in refused.stderr and "clusterctl down" in refused.stderr, \
        refused.stdout + refused.stderr
    out = json.loads(cluster.cli("down", "--json", check=True).stdout)
    assert out["how"] == "tag" and out["stopped"] >= 3, out
    assert ours(cluster) == [] and processes_under(cluster.root) == []


def test_a_ledger_from_before_the_last_boot_is_ignored(cluster, tmp_path):
    """After a reboot the ledger's pids belong to strangers: nothing is signalled, `up` proceeds."""
    live = psutil.Process(subprocess.Popen(["sleep", "300"], start_new_session=True).pid)
    boot = psutil.boot_time()
    try:
        cluster.state.mkdir(parents=True)
        record = {"name": cluster.name, "state": "running", "updated": boot - 60,
                  "supervisor": {"pid": live.pid, "create_time": live.create_time()},
                  "processes": [{"name": "default-0", "role": "worker", "state": "running",
                                 "pid": live.pid, "create_time": live.create_time()}]}
        (cluster.state / "ledger.json").write_text(json.dumps(record))
        st = cluster.status()
        assert st["state"] == "not-running" and not st["supervisor"]["alive"], st
        res = json.loads(cluster.cli("down", "--json", check=True).stdout)
        assert res["stopped"] == 0, res
        assert alive(live)
        cluster.cli("up", check=True)  # not refused: nothing of that record runs
        assert cluster.status()["workers_registered"] == 2
        cluster.cli("down", check=True)
        time.sleep(0.2)
        assert alive(live)
    finally:
        kill_all([live])
