"""Ownership: clusterctl signals only processes that are provably its own (real processes).

A pid is ours when its create time matches the one recorded AND it carries the cluster's
tag (CLUSTERCTL_TAG) in its environment, or, where that cannot be read, its command line.
Also here: the ledger's "unknown" state, records from before the last boot, private files.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clusterctl.plan.specs import TAG_ENV
from clusterctl.runtime import process
from clusterctl.runtime.ledger import (
    Ledger, LedgerRecord, LedgerUnreadable, ProcessRecord, SupervisorRecord, atomic_write, private_dir,
)
from clusterctl.runtime.logs import rotate_if_large, write_header
from clusterctl.runtime.process import ProcessId

from conftest import kill_all, wait_for

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX process groups and /proc")

PY = sys.executable
TAG = f"owner-test.{os.getpid()}"

# Starts a daemon the classic way (fork, fork again, the middle one exits) that stays in this
# process's group, with an environment that carries no tag; writes its pid; then exits itself.
DOUBLE_FORK = r"""
import os, sys
pid = os.fork()
if pid == 0:
    daemon = os.fork()
    if daemon == 0:
        os.execve("/bin/sleep", ["sleep", "60"], {"PATH": "/usr/bin:/bin"})
    open(sys.argv[1], "w").write(str(daemon))
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.fixture
def started():
    """Processes a test starts; whatever is left of them is SIGKILLed afterwards."""
    procs: list[psutil.Process] = []
    popens: list[subprocess.Popen] = []

    def add(popen_or_pid) -> psutil.Process:
        if isinstance(popen_or_pid, subprocess.Popen):
            popens.append(popen_or_pid)
            popen_or_pid = popen_or_pid.pid
        p = psutil.Process(popen_or_pid)
        procs.append(p)
        return p

    yield add
    kill_all([p for p in procs if p.is_running()])
    for popen in popens:
        try:
            popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def sleeper(tmp_path: Path, env: dict | None = None, extra: list[str] | None = None) -> subprocess.Popen:
    """`python -c sleep` through process.spawn, so exactly as clusterctl starts things."""
    popen = process.spawn([PY, "-c", "import time; time.sleep(60)", *(extra or [])],
                          log_path=tmp_path / "child.log", env=env)
    wait_for(lambda: psutil.Process(popen.pid).cmdline()[:2] == [PY, "-c"], 10, 0.02, "exec")
    return popen


# -- A: only what is provably ours is signalled ----------------------------------------


def test_an_untagged_daemon_in_a_recorded_group_is_never_touched(tmp_path, started):
    """The reported bug: the recorded pid is dead and its process group id now names another
    process's group. `down` used to SIGKILL every member; now only tagged members are ours."""
    marker = tmp_path / "daemon.pid"
    leader = process.spawn([PY, "-c", DOUBLE_FORK, str(marker)], log_path=tmp_path / "l.log", env={TAG_ENV: TAG})
    recorded = process.identify(leader)
    assert recorded.tag == TAG
    assert leader.wait(timeout=15) == 0, (tmp_path / "l.log").read_text()
    daemon = started(int(marker.read_text()))
    wait_for(lambda: daemon.cmdline() == ["sleep", "60"], 10, 0.02, "the daemon's exec")
    assert os.getpgid(daemon.pid) == recorded.pid and not recorded.alive()  # in the dead leader's group
    assert TAG_ENV not in daemon.environ()

    assert process.tree(recorded) == []
    assert process.stop(recorded, grace=0.5) == "gone"
    assert process.kill_tree(recorded) == []
    assert process.stop_many([(recorded, None), (ProcessId(recorded.pid, recorded.create_time), None)], 0.5) == ["gone"] * 2
    time.sleep(0.2)
    assert alive(daemon), "an untagged process in a recorded group was signalled"


def test_tagged_orphans_in_the_group_are_still_swept(tmp_path, started):
    marker = tmp_path / "orphan.pid"
    script = ("import pathlib, subprocess, sys\n"
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "pathlib.Path(sys.argv[1]).write_text(str(c.pid))\n")
    leader = process.spawn([PY, "-c", script, str(marker)], log_path=tmp_path / "l.log", env={TAG_ENV: TAG})
    recorded = process.identify(leader)
    assert leader.wait(timeout=15) == 0
    orphan = started(int(marker.read_text()))
    assert orphan.environ()[TAG_ENV] == TAG  # inherited, as Dask's children inherit it
    assert [p.pid for p in process.tree(recorded)] == [orphan.pid]
    process.stop(recorded, grace=0.5)
    wait_for(lambda: not alive(orphan), 5, 0.02, "the tagged orphan to go")


def test_a_group_recorded_before_the_last_boot_is_never_swept(tmp_path, started):
    """After a reboot every process is newer than any recorded create time, so the old rule
    (members born after the leader) took them all; a pre-boot record sweeps nothing, even tagged."""
    marker = tmp_path / "daemon.pid"
    tagged_daemon = DOUBLE_FORK.replace('{"PATH": "/usr/bin:/bin"}', f'{{"PATH": "/usr/bin:/bin", "{TAG_ENV}": "{TAG}"}}')
    leader = process.spawn([PY, "-c", tagged_daemon, str(marker)], log_path=tmp_path / "l.log", env={TAG_ENV: TAG})
    real = process.identify(leader)
    assert leader.wait(timeout=15) == 0
    daemon = started(int(marker.read_text()))
    wait_for(lambda: daemon.cmdline() == ["sleep", "60"], 10, 0.02, "the daemon's exec")
    stale = ProcessId(real.pid, psutil.boot_time() - 100, TAG)
    assert process.before_boot(stale.create_time) and not process.before_boot(real.create_time)
    assert process.tree(stale) == [] and process.stop(stale, grace=0.5) == "gone"
    assert alive(daemon)
    assert [p.pid for p in process.tree(real)] == [daemon.pid]  # the same group, recorded in this boot


def test_a_live_untagged_process_with_the_recorded_create_time_is_left_alone(tmp_path, started):
    """What a reused pid would look like if its create time could be faked: pid and create
    time match, the tag does not."""
    stranger = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], start_new_session=True)
    p = started(stranger)
    other = started(sleeper(tmp_path, env={TAG_ENV: "someone-else.0123456789"}))
    for proc in (p, other):
        pid = ProcessId(proc.pid, proc.create_time(), TAG)
        assert not pid.alive() and pid.get() is None
        assert process.terminate(pid) is False
        assert process.stop(pid, grace=0.5) == "gone"
        assert process.kill_tree(pid) == []
        assert ProcessId(proc.pid, proc.create_time()).alive()  # create time alone would match
    time.sleep(0.2)
    assert alive(p) and alive(other)


def test_a_child_whose_tag_cannot_be_seen_is_still_stopped_through_its_handle(tmp_path, started):
    """The supervisor holds a live handle: an unreaped child's pid cannot have been reused."""
    popen = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], start_new_session=True)
    p = started(popen)
    pid = ProcessId(popen.pid, p.create_time(), TAG)
    assert not pid.alive()
    assert process.stop(pid, grace=2.0, popen=popen) == "exited"
    assert popen.returncode == -signal.SIGTERM


def test_carries_reads_the_environment_then_the_command_line(tmp_path, started):
    ours = started(sleeper(tmp_path, env={TAG_ENV: TAG}))
    theirs = started(sleeper(tmp_path, env={TAG_ENV: "x." + TAG}))
    assert process.carries(ours, TAG) and not process.carries(theirs, TAG)
    assert not process.carries(ours, "") and not process.carries(ours, TAG + "x")
    # no tag in the environment: the command line decides (a title, an agent's --tag)
    titled = started(subprocess.Popen([PY, "-c", "import time; time.sleep(60)", f"{TAG_ENV}={TAG}"],
                                      env={"PATH": os.environ["PATH"]}))
    agent = started(subprocess.Popen([PY, "-c", "import time; time.sleep(60)", "--tag", TAG],
                                     env={"PATH": os.environ["PATH"]}))
    other_agent = started(subprocess.Popen([PY, "-c", "import time; time.sleep(60)", "--tag", TAG + "x"],
                                           env={"PATH": os.environ["PATH"]}))
    wait_for(lambda: all(len(p.cmdline()) > 3 for p in (titled, agent, other_agent)), 10, 0.02, "exec")
    assert process.carries(titled, TAG) and process.carries(agent, TAG)
    assert not process.carries(other_agent, TAG)
    # a tag in the environment wins over a command line that names ours
    liar = started(sleeper(tmp_path, env={TAG_ENV: "x." + TAG}, extra=[f"{TAG_ENV}={TAG}"]))
    assert not process.carries(liar, TAG)


def test_spawn_keeps_the_tag_readable_through_a_retitle(tmp_path, started):
    """Dask retitles its processes with setproctitle, which by default overwrites what
    /proc/PID/environ shows; spawn sets SPT_NOENV so the tag stays there."""
    code = "import setproctitle, time; setproctitle.setproctitle('dask worker [x]'); time.sleep(60)"
    popen = process.spawn([PY, "-c", code], log_path=tmp_path / "t.log", env={TAG_ENV: TAG})
    p = started(popen)
    wait_for(lambda: "dask worker" in " ".join(p.cmdline()), 10, 0.02, "the retitle")
    assert p.environ().get(TAG_ENV) == TAG
    assert process.identify(popen).alive()


def test_sweep_by_tag_stops_ours_only(tmp_path, started):
    stubborn = ("import signal, subprocess, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\ntime.sleep(60)\n")
    ours = [started(sleeper(tmp_path, env={TAG_ENV: TAG})),
            started(process.spawn([PY, "-c", stubborn], log_path=tmp_path / "s.log", env={TAG_ENV: TAG}))]
    wait_for(lambda: len(ours[1].children()) == 1, 10, 0.02, "the stubborn one's child")
    ours.append(started(ours[1].children()[0].pid))
    strangers = [started(sleeper(tmp_path)), started(sleeper(tmp_path, env={TAG_ENV: "x." + TAG}))]
    counts: dict = {}
    assert sorted(p.pid for p in process.tagged(TAG, counts)) == sorted(p.pid for p in ours)
    assert counts["seen"] >= counts["inspected"] >= len(ours) + len(strangers)
    t0 = time.monotonic()
    assert process.stop_tagged(TAG, grace=0.5) == 3
    assert time.monotonic() - t0 < 5
    assert not any(alive(p) for p in ours)
    assert all(alive(p) for p in strangers)
    assert process.tagged(TAG) == [] and process.stop_tagged(TAG, grace=0.5) == 0


def test_the_sweep_never_takes_this_process_or_its_parents(monkeypatch):
    monkeypatch.setenv(TAG_ENV, TAG)  # /proc shows the exec-time environment: a child proves it
    child = subprocess.Popen([PY, "-c", "import os, sys, clusterctl.runtime.process as p; "
                              f"sys.exit(len(p.tagged({TAG!r})))"])
    assert child.wait(timeout=30) == 0  # its parent (this test, untagged here) and itself are skipped


# -- the ledger: unknown is not "nothing", and records from before the boot are void ------


def test_ledger_read_tells_missing_from_unreadable(tmp_path):
    ledger = Ledger(tmp_path / "state")
    assert ledger.read() is None
    for text, why in (("", "empty"), ('{"name": "x", "proc', "not JSON"), ("[]", "a JSON list"),
                      ('{"processes": "many"}', "invalid field")):
        atomic_write(ledger.path, text)
        with pytest.raises(LedgerUnreadable) as info:
            ledger.read()
        msg = str(info.value)
        assert why in msg and str(ledger.path) in msg and "clusterctl down" in msg and "\n" not in msg
    ledger.path.unlink()
    ledger.path.mkdir()
    with pytest.raises(LedgerUnreadable):
        ledger.read()


def test_ledger_drops_identities_from_before_the_last_boot(tmp_path, started):
    live = started(sleeper(tmp_path, env={TAG_ENV: TAG}))
    boot = psutil.boot_time()
    ledger = Ledger(tmp_path / "state")
    record = LedgerRecord(
        name="x", state="running",
        supervisor=SupervisorRecord(pid=live.pid, create_time=boot - 3600),
        processes=[ProcessRecord(name="old", role="worker", pid=os.getpid(), create_time=boot - 100),
                   ProcessRecord(name="now", role="worker", pid=live.pid, create_time=live.create_time())])
    ledger.write(record)
    got = ledger.read()
    assert [p.name for p, _ in got.process_ids()] == ["now"] and got.supervisor_id is None
    # written before the boot: nothing in it is alive, whatever its create times say
    data = json.loads(ledger.path.read_text())
    data["updated"] = boot - 60
    atomic_write(ledger.path, json.dumps(data))
    got = ledger.read()
    assert got.process_ids() == [] and got.supervisor_id is None and got.name == "x"


def test_state_dir_is_private_and_ledger_and_logs_are_0600(tmp_path):
    state = tmp_path / "shared" / "state"
    state.mkdir(parents=True, mode=0o755)
    os.chmod(state, 0o755)
    private_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700  # tightened: it is ours
    fresh = private_dir(tmp_path / "new" / "deep")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    ledger = Ledger(tmp_path / "other")
    ledger.write(LedgerRecord(name="x"))
    ledger.new_token()
    assert stat.S_IMODE(ledger.root.stat().st_mode) == 0o700
    for f in (ledger.path, ledger.token_path):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    log = tmp_path / "logs" / "w.log"
    write_header(log, ["a"])
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    old = tmp_path / "logs" / "old.log"
    old.write_text("x" * 100)
    os.chmod(old, 0o644)
    write_header(old, ["b"])  # an older clusterctl's log is tightened on the next start
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert rotate_if_large(old, max_bytes=10, backups=2)
    assert stat.S_IMODE(old.with_name("old.log.1").stat().st_mode) == 0o600


# -- B: environment values reach a remote agent over its stdin, never its command line ---

# Prints the variable, then waits (so both command lines can be inspected while it runs).
PRINT_AND_WAIT = "import os, sys, time; print(os.environ.get('SECRET_TOKEN'), os.environ.get('CLUSTERCTL_TAG'), flush=True); time.sleep(60)"


def agent(tmp_path: Path, *extra: str, command: list[str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [PY, "-m", "clusterctl.remote.agent", "--grace", "1", "--cwd", str(tmp_path / "wd"), "--tag", TAG, *extra,
         "--", *(command or [PY, "-c", PRINT_AND_WAIT])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def everyone_cmdline() -> str:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        out.append(" ".join(p.info["cmdline"] or []))
    return "\n".join(out)


def test_agent_reads_the_environment_from_its_stdin_not_its_argv(tmp_path, started):
    from clusterctl.plan.specs import preamble

    secret = "tok-" + os.urandom(8).hex()
    a = agent(tmp_path, "--env-key", "SECRET_TOKEN", "--env-key", "ODD,KEY", "--env-key", "PYTHONUNBUFFERED")
    started(a)
    a.stdin.write(preamble({"SECRET_TOKEN": secret, "PYTHONUNBUFFERED": "1", "ODD,KEY": "x"}))
    a.stdin.flush()  # and keep it open: the lifeline
    line = a.stdout.readline().decode().split()
    assert line == [secret, TAG]
    child = started(psutil.Process(a.pid).children()[0].pid)
    assert child.environ()["SECRET_TOKEN"] == secret and child.environ()[TAG_ENV] == TAG
    assert "SECRET_TOKEN" in psutil.Process(a.pid).cmdline()  # the key, at most
    assert child.environ()["ODD,KEY"] == "x"
    assert secret not in everyone_cmdline()
    a.stdin.close()  # the lifeline still works after the preamble
    assert a.wait(timeout=10) == 128 + signal.SIGTERM
    assert not alive(child)


def test_agent_without_env_keys_starts_at_once_and_never_waits_for_stdin(tmp_path, started):
    a = agent(tmp_path)
    started(a)
    assert a.stdout.readline().decode().split() == ["None", TAG]
    a.stdin.close()
    assert a.wait(timeout=10) == 128 + signal.SIGTERM


@pytest.mark.parametrize("sent, why", [
    (b"", b"stdin closed before the environment arrived"),
    (b'{"env": {"OTHER": "x"}}\n', b"expected the keys SECRET_TOKEN, got OTHER"),
    (b'{"env": {"SECRET_TOKEN": "x", "OTHER": "y"}}\n', b"got OTHER SECRET_TOKEN"),
    (b'{"env": {"SECRET_TOKEN": 1}}\n', b"names to strings"),
    (b"SECRET_TOKEN=x\n", b"is not"),
])
def test_agent_refuses_a_missing_or_wrong_preamble_and_starts_nothing(tmp_path, started, sent, why):
    marker = tmp_path / "ran"
    a = agent(tmp_path, "--env-key", "SECRET_TOKEN", command=[PY, "-c", f"open({str(marker)!r}, 'w')"])
    started(a)
    _, err = a.communicate(sent, timeout=20)
    assert a.returncode == 2 and why in err, err
    assert not marker.exists()
