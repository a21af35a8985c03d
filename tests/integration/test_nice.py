"""`nice:` on real clusters: every worker, however it starts, runs at its host's nice and in the idle I/O
class, read from /proc (field 19 of every thread's stat) and ioprio; the scheduler, the supervisor, the
fork servers and the agents keep their own (0).

Start paths: local exec'd (a worker with a variable a library might read at import), local forked
from the warm server; on a namespace host (tests/netns.py) forked and exec'd by its fork server over the
direct route, then, once that server is killed, started again through agents: forked by the host's new
server for one, exec'd by its agent for the other (the server refuses an environment that differs from
its own; which of the two is which depends on whose agent started that new server)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import psutil
import pytest

import netns
from conftest import free_port, processes_under, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, ioprio")]
PY = sys.executable
IDLE = psutil.IOPRIO_CLASS_IDLE
EXEC_ENV = "    env: {NOT_NEUTRAL: '1'}\n"  # a library might read it at import: never forked (runtime/entry.py)


def autogroup(p: psutil.Process) -> int | None:
    """Its session's nice under Linux's autogroup scheduling (/proc/PID/autogroup), None without it."""
    try:
        return int(Path(f"/proc/{p.pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def priority(p: psutil.Process) -> tuple[set[int], int]:
    """The nice of each of its threads (/proc/PID/task/TID/stat, field 19), and its I/O class."""
    nices = set()
    for task in Path(f"/proc/{p.pid}/task").iterdir():
        try:
            nices.add(int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]))
        except (OSError, IndexError):
            pass  # a thread that just ended
    return nices, int(p.ionice().ioclass)


def assert_niced(p: psutil.Process, nice: int, what: str) -> None:
    nices, io = priority(p)
    assert nices == {nice} and io == IDLE, f"{what}: nice {nices}, I/O class {io}; {shown(p)}"
    group = autogroup(p)  # with autogroup scheduling, a session's nice is what counts against others'
    assert group is None or group == nice, f"{what}: its session's autogroup nice is {group}; {shown(p)}"


def assert_plain(p: psutil.Process, what: str) -> None:
    nices, io = priority(p)
    assert nices == {0} and io != IDLE, f"{what}: nice {nices}, I/O class {io}; {shown(p)}"
    assert autogroup(p) in (None, 0), f"{what}: its session's autogroup nice is {autogroup(p)}; {shown(p)}"


def shown(p: psutil.Process) -> str:
    return f"pid {p.pid}: {' '.join(p.cmdline()).strip()[:160]}"


def tree(pid: int) -> list[psutil.Process]:
    top = psutil.Process(pid)
    return [top, *top.children(recursive=True)]


def test_local_workers_forked_and_execd_run_at_the_nice(cluster):
    cluster.write(workers="  - name: warm\n    count: 1\n    nthreads: 1\n    nanny: true\n"
                          "  - name: cold\n    count: 1\n    nthreads: 1\n    nanny: false\n" + EXEC_ENV,
                  extra="nice: 10\n")
    cluster.cli("up", check=True)
    ledger = cluster.ledger()
    procs = {p["name"]: p for p in ledger["processes"]}
    logs = cluster.state / "logs"
    assert "start (warm):" in (logs / "warm-0.log").read_text(), "forked from the warm server"
    cold = (logs / "cold-0.log").read_text()
    assert " start: " in cold and "start (warm)" not in cold, "exec'd"
    warm = tree(procs["warm-0"]["pid"])
    assert len(warm) >= 2, "a nanny and its worker"
    for p in warm:
        assert_niced(p, 10, "warm-0's tree")
    for p in tree(procs["cold-0"]["pid"]):
        assert_niced(p, 10, "cold-0")
    assert "could not set" not in (logs / "warm-0.log").read_text() + cold
    assert_plain(psutil.Process(procs["scheduler"]["pid"]), "the scheduler")
    assert_plain(psutil.Process(ledger["supervisor"]["pid"]), "the supervisor")
    assert_plain(warm[0].parent(), "the warm fork server")
    cluster.cli("down", check=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    yield from netns.netns_fleet(tmp_path_factory, hosts=2)


def dask_on(cluster, host: str, name: str) -> psutil.Process:
    """The Dask worker ``name`` on a host (its cwd is the host's workdir): Dask retitles it
    ``dask worker [ADDRESS]``, the address its log names last."""
    log = (cluster.state / "logs" / f"{name}.log").read_text()
    address = log.rsplit("Start worker at:", 1)[1].split()[0]
    found = [p for p in processes_under(cluster.root / "remote" / host) if f"[{address}]" in " ".join(p.cmdline())]
    assert len(found) == 1, f"{name} at {address} on {host}: {found}"
    return found[0]


def helpers_on(cluster, host: str) -> list[psutil.Process]:
    """The host's fork server and agents (there: their cwd is its workdir, unlike the head's ssh clients):
    started for workers, never niced themselves."""
    workdir = str(cluster.root / "remote" / host)
    return [p for p in processes_under(cluster.root / "remote" / host) if p.cwd().startswith(workdir)
            and any(m in " ".join(p.cmdline()) for m in ("clusterctl.remote.forkserver", "clusterctl.remote.agent"))]


@pytest.mark.timeout(300)
def test_remote_workers_run_at_their_hosts_nice_direct_and_through_agents(cluster, fleet):
    """Top-level nice 10 for ns0; ns1's own `nice: 5` replaces it there."""
    cluster.port, cluster.dashboard_port = free_port(fleet.head_address), free_port(fleet.head_address)
    hosts = [fleet.host_yaml(f"ns{h.index}", h, PY, cluster.root / "remote" / f"ns{h.index}") for h in fleet.hosts]
    hosts[1] += "    nice: 5\n"
    cluster.write(workers="  - name: fork\n    nthreads: 1\n    nanny: false\n    at: {ns0: 1, ns1: 1}\n"
                          "  - name: exec\n    nthreads: 1\n    nanny: false\n    at: {ns0: 1}\n" + EXEC_ENV,
                  extra="nice: 10\nhosts:\n" + "".join(hosts))
    text = cluster.config.read_text().replace("  host: 127.0.0.1\n", f"  host: {fleet.head_address}\n", 1)
    cluster.config.write_text(text)
    cluster.cli("up", check=True)
    logs = cluster.state / "logs"
    for name, how in (("fork-0", "forked by ns0"), ("fork-1", "forked by ns1"), ("exec-0", "started by ns0")):
        log = (logs / f"{name}.log").read_text()
        assert "start (direct)" in log and how in log, (name, log[-1500:])
    assert_niced(dask_on(cluster, "ns0", "fork-0"), 10, "fork-0, forked by ns0's server (direct)")
    assert_niced(dask_on(cluster, "ns0", "exec-0"), 10, "exec-0, exec'd by ns0's server (direct)")
    assert_niced(dask_on(cluster, "ns1", "fork-1"), 5, "fork-1 on ns1, whose own nice replaces the top level's")
    servers = helpers_on(cluster, "ns0")
    assert servers, "ns0's fork server"
    for p in servers + helpers_on(cluster, "ns1"):
        assert_plain(p, "a fork server")
    assert_plain(psutil.Process(cluster.ledger()["supervisor"]["pid"]), "the supervisor")
    assert_plain(psutil.Process({p["name"]: p for p in cluster.ledger()["processes"]}["scheduler"]["pid"]),
                 "the scheduler")

    # ns0's server goes (by hand, the OOM killer): its workers with it; both start again through agents
    for p in servers:
        p.send_signal(signal.SIGKILL)

    def back():
        st = cluster.status()
        again = [p for p in st["processes"] if p["name"] in ("fork-0", "exec-0")]
        return all(p["restarts"] >= 1 and p["registered"] for p in again) and st["workers_registered"] == 3

    wait_for(back, 90, what="ns0's workers back through agents")
    after = {name: (logs / f"{name}.log").read_text().split("the fork server on ns0 went", 1) for name in ("fork-0", "exec-0")}
    for name, parts in after.items():
        assert len(parts) == 2 and "clusterctl.remote.agent" in parts[1], (name, parts[-1][-1500:])
    execd = [name for name, parts in after.items() if "starting without it" in parts[1]]
    assert len(execd) == 1, f"one forked by ns0's new server, one exec'd by its agent: exec'd {execd}"
    for name in ("fork-0", "exec-0"):
        how = "exec'd by its agent" if name in execd else "forked by the server its agent asked"
        assert_niced(dask_on(cluster, "ns0", name), 10, f"{name}, {how}")
        assert "could not set" not in "".join(after[name])
    helpers = helpers_on(cluster, "ns0")
    assert len([p for p in helpers if "clusterctl.remote.agent" in " ".join(p.cmdline())]) == 2
    assert [p for p in helpers if "clusterctl.remote.forkserver" in " ".join(p.cmdline())], "ns0's new fork server"
    for p in helpers:
        assert_plain(p, "an agent or the new fork server")
    cluster.cli("down", check=True)
    assert processes_under(cluster.root / "remote") == []
