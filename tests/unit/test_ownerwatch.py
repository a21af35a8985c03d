"""The owner watcher's parts (remote/ownerwatch.py): the combining rule, the request, /proc parsing and
the CPU accounting on made-up samples, loginctl's output through a stand-in on PATH, a bad first line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clusterctl.remote import ownerwatch as ow

PY = sys.executable
TAG = "clusterctl-test-tag"


# -- the combining rule, the request ----------------------------------------------------------------

@pytest.mark.parametrize("values, expected", [
    ([], False), ([False], False), ([True], True), ([None], None), ([False, None], None),
    ([None, True], True), ([False, True, None], True), ([False, False, False], False),
])
def test_any_true_is_active_else_any_unknown_is_unknown(values, expected):
    signals = {f"s{i}": {"active": v} for i, v in enumerate(values)}
    assert ow.combine(signals) is expected


def test_a_request_gets_its_defaults():
    req = ow.parse_request(b'{"tag": "t1"}')
    assert req == {"tag": "t1", "command": None, "command_timeout": 5.0, "input_idle_below": None,
                   "other_cpu_above": None, "interval": 1.0}
    full = ow.parse_request('{"command": "true", "command_timeout": 2, "input_idle_below": 300, '
                            '"other_cpu_above": 0.5, "tag": "t", "interval": 0.25, "later": "ignored"}')
    assert (full["command"], full["command_timeout"], full["input_idle_below"], full["other_cpu_above"],
            full["interval"]) == ("true", 2, 300, 0.5, 0.25)


@pytest.mark.parametrize("line, word", [
    ("not json", "not JSON"), ("[1]", "not a JSON object"), ("{}", "tag"), ('{"tag": ""}', "tag"),
    ('{"tag": 3}', "tag"), ('{"tag": "t", "command": " "}', "command"), ('{"tag": "t", "command": 1}', "command"),
    ('{"tag": "t", "interval": 0}', "interval"), ('{"tag": "t", "interval": true}', "interval"),
    ('{"tag": "t", "command_timeout": -1}', "command_timeout"), ('{"tag": "t", "other_cpu_above": "x"}', "other_cpu"),
    ('{"tag": "t", "input_idle_below": 0}', "input_idle_below"),
])
def test_a_bad_request_says_what(line, word):
    with pytest.raises(ow.BadRequest, match=word):
        ow.parse_request(line)


@pytest.mark.parametrize("stdin", [b"not json\n", b"", b'{"tag": "t"}', b'{"tag": "t", "interval": "1"}\n'])
def test_a_bad_first_line_is_one_line_on_stderr_and_exit_2(stdin):
    res = subprocess.run([PY, "-m", "clusterctl.remote.ownerwatch"], input=stdin, capture_output=True, timeout=30)
    assert res.returncode == 2, res
    assert res.stdout == b""
    lines = res.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clusterctl.remote.ownerwatch: bad first line"), lines


# -- /proc ------------------------------------------------------------------------------------------

def stat_line(pid: int, comm: str = "bash", state: str = "S", ppid: int = 1, utime: int = 0, stime: int = 0,
              cutime: int = 0, cstime: int = 0, start: int = 1000) -> str:
    """A /proc/PID/stat line (52 fields) with these values; the rest as a real one has them."""
    f = [str(pid), f"({comm})", state, str(ppid), str(pid), str(pid), "34816", str(pid), "4194560", "1375", "0",
         "0", "0", str(utime), str(stime), str(cutime), str(cstime), "20", "0", "1", "0", str(start), "9453568",
         "1298"] + ["0"] * 28
    return " ".join(f) + "\n"


def test_a_stat_line_parses_even_with_parentheses_and_spaces_in_the_name():
    real = Path("/proc/self/stat").read_bytes()
    name, ppid, own, kids, start, zombie = ow.parse_stat(real)
    assert ppid == os.getppid() and start > 0 and not zombie and own >= 0 and kids >= 0
    assert name == Path("/proc/self/comm").read_bytes().strip()
    line = stat_line(42, comm="a) (b c)) S 9", ppid=7, utime=11, stime=4, cutime=100, cstime=20, start=555).encode()
    assert ow.parse_stat(line) == (b"a) (b c)) S 9", 7, 15, 120, 555, False)
    assert ow.parse_stat(stat_line(43, state="Z").encode())[5] is True
    with pytest.raises((ValueError, IndexError)):
        ow.parse_stat(b"")


def test_the_tag_is_found_as_a_whole_variable_only():
    env = f"HOME=/root\0{ow.TAG_ENV}={TAG}\0PATH=/bin\0".encode()
    assert ow.has_tag(env, TAG)
    assert ow.has_tag(f"{ow.TAG_ENV}={TAG}".encode(), TAG)  # first and last, no trailing NUL
    assert not ow.has_tag(env, TAG[:-1])  # a prefix of the tag
    assert not ow.has_tag(f"X{ow.TAG_ENV}={TAG}\0".encode(), TAG)  # another variable's name ends with it
    assert not ow.has_tag(f"{ow.TAG_ENV}={TAG}x\0".encode(), TAG)
    assert not ow.has_tag(b"", TAG)


def test_where_the_environment_has_no_tag_the_command_line_may_carry_it():
    """As runtime/process.carries: a process title that overwrote the environment keeps a marker, an
    agent has --tag; a tag variable in the environment, though, decides alone."""
    title = f"clusterctl supervisor lab # {ow.TAG_ENV}={TAG}".encode()
    assert ow.has_tag(b"\x00garbled by a title", TAG, lambda: title)
    assert ow.has_tag(b"A=1\0", TAG, lambda: b"python\0-m\0clusterctl.remote.agent\0--tag\0" + TAG.encode() + b"\0--")
    assert not ow.has_tag(b"A=1\0", TAG, lambda: b"python\0--tag\0other\0")
    assert not ow.has_tag(b"A=1\0", TAG, lambda: None)  # no command line (gone)
    assert not ow.has_tag(f"{ow.TAG_ENV}=other\0".encode(), TAG, lambda: title)


def p(start=1, ppid=1, own=0, kids=0, outside=True):
    return (start, ppid, own, kids, outside)


def test_own_deltas_count_outside_processes_only():
    old = {1: p(ppid=0, own=100), 10: p(own=50), 11: p(own=70, outside=False)}
    new = {1: p(ppid=0, own=101), 10: p(own=80), 11: p(own=170, outside=False)}
    assert ow.outside_ticks(old, new) == 1 + 30


def test_a_new_process_counts_whole_and_a_reused_pid_is_a_new_process():
    old = {1: p(ppid=0), 10: p(start=5, own=500)}
    new = {1: p(ppid=0), 10: p(start=9, own=20), 12: p(own=7)}  # 10 went (reaped by 1) and its pid was reused
    # 1 reaped the old 10: its cutime grew by 10's final total (500 + what it used since: 3)
    new[1] = p(ppid=0, kids=503)
    assert ow.outside_ticks(old, new) == 20 + 7 + 3


def test_short_lived_children_are_seen_in_their_parent_once_reaped():
    old = {1: p(ppid=0), 100: p(ppid=1, own=10, kids=0)}
    new = {1: p(ppid=0), 100: p(ppid=1, own=12, kids=40)}  # e.g. make: compilers that came and went
    assert ow.outside_ticks(old, new) == 2 + 40


def test_a_long_lived_child_that_ends_is_not_counted_twice():
    old = {1: p(ppid=0), 100: p(ppid=1, own=10), 200: p(ppid=100, own=900, kids=50)}
    new = {1: p(ppid=0), 100: p(ppid=1, own=10, kids=955)}  # 200 used 5 more, then 100 reaped it
    assert ow.outside_ticks(old, new) == 5


def test_a_chain_that_ended_is_charged_to_its_living_ancestor():
    old = {1: p(ppid=0), 100: p(ppid=1), 200: p(ppid=100, own=30), 300: p(ppid=200, own=600)}
    # 300 reaped by 200, 200 by 100: 100's cutime holds all of it, plus 4 ticks new
    new = {1: p(ppid=0), 100: p(ppid=1, kids=634)}
    assert ow.outside_ticks(old, new) == 4


def test_an_orphan_reaped_by_init_offsets_its_old_parents_charge():
    old = {1: p(ppid=0), 100: p(ppid=1, own=5), 200: p(ppid=100, own=600), 300: p(ppid=100, own=1)}
    # 200's parent ended without waiting for it: init reaped it (and 200's parent); 300 is still there
    new = {1: p(ppid=0, kids=5 + 600 + 2), 300: p(ppid=1, own=1)}
    assert ow.outside_ticks(old, new) == 2


def test_what_a_cluster_process_used_last_is_not_the_owners():
    old = {1: p(ppid=0), 50: p(ppid=1), 60: p(ppid=50, own=1000, outside=False)}
    new = {1: p(ppid=0), 50: p(ppid=1, kids=1300)}  # sshd's session reaped the agent: 300 in its last second
    assert ow.outside_ticks(old, new) == 0
    old[70] = p(ppid=60, own=100, outside=False)  # a cluster parent reaping its own: not counted either
    old[60] = p(ppid=50, own=1000, outside=False)
    new = {1: p(ppid=0), 50: p(ppid=1), 60: p(ppid=50, own=1000, kids=150, outside=False)}
    assert ow.outside_ticks(old, new) == 0


def fake_proc(root: Path, procs: dict[int, tuple[str, bytes | None]]) -> Path:
    """A /proc with {pid: (stat line, environ or None for unreadable)}; command lines: the name."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    (root / "self").mkdir()
    (root / "stat").write_text("cpu 0 0 0 0\n")
    for pid, (stat, env) in procs.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(stat)
        if env is not None:
            (root / str(pid) / "environ").write_bytes(env)
        (root / str(pid) / "cmdline").write_bytes(stat.split("(")[1].split(")")[0].encode() + b"\0")
    return root


def test_the_meter_tells_inside_from_outside_and_remembers_it(tmp_path, monkeypatch):
    tagged = f"A=1\0{ow.TAG_ENV}={TAG}\0".encode()
    other = f"A=1\0{ow.TAG_ENV}=another-cluster\0".encode()
    procs = {
        2: (stat_line(2, "kthreadd", ppid=0), b""),  # kernel threads: empty environments
        9: (stat_line(9, "kworker/0:1", ppid=2), b""),
        100: (stat_line(100, "dask worker", ppid=1), tagged),
        101: (stat_line(101, "python", ppid=100), tagged),
        102: (stat_line(102, "defunct", state="Z", ppid=100), None),  # a zombie: its parent's side
        200: (stat_line(200, "firefox", ppid=1), other),
        300: (stat_line(300, "someone else's", ppid=1), None),  # environ unreadable
        400: (stat_line(400, "me", ppid=1), b"A=1\0"),
    }
    root = fake_proc(tmp_path / "proc", procs)
    meter = ow.CpuMeter(TAG, above=0.5, proc=str(root), mine=(400,))
    first = meter.scan()
    assert {pid: s[4] for pid, s in first.items()} == {2: True, 9: True, 100: False, 101: False, 102: False,
                                                       200: True, 300: True, 400: False}
    meter.procs = first
    # the environment is read once per process: a changed file changes nothing, a new start time
    # (another process) or name (an exec: a shell running `env CLUSTERCTL_TAG=... python ...`) does
    for pid in (200, 300, 400):
        (root / str(pid) / "environ").write_bytes(tagged)
    (root / "300" / "stat").write_text(stat_line(300, ppid=1, start=2000))
    (root / "200" / "stat").write_text(stat_line(200, "python3", ppid=1))
    (root / "100" / "environ").write_bytes(other)
    again = meter.scan()
    assert again[400][4] is False and again[300][4] is False and again[200][4] is False
    assert again[100][4] is False  # unchanged: remembered
    meter.procs = again
    (root / "200" / "environ").write_bytes(other)  # the same name, start: remembered
    assert meter.scan()[200][4] is False


def test_the_meter_reports_cores_from_the_second_line_on(tmp_path, monkeypatch):
    hz = os.sysconf("SC_CLK_TCK")
    root = fake_proc(tmp_path / "proc", {1: (stat_line(1, "init", ppid=0), b""),
                                         50: (stat_line(50, "burn", utime=0), b""),
                                         60: (stat_line(60, "worker", utime=0), f"{ow.TAG_ENV}={TAG}\0".encode())})
    meter = ow.CpuMeter(TAG, above=0.5, proc=str(root))
    clock = [1000.0]
    monkeypatch.setattr(ow.time, "monotonic", lambda: clock[0])
    assert meter.signal() == {"active": None, "cores": None, "why": "first line: no interval measured yet"}
    clock[0] += 2.0
    (root / "50" / "stat").write_text(stat_line(50, "burn", utime=hz, stime=hz // 2))  # 1.5 s of CPU in 2 s
    (root / "60" / "stat").write_text(stat_line(60, "worker", utime=4 * hz))  # the cluster's: not counted
    assert meter.signal() == {"active": True, "cores": 0.75}
    clock[0] += 1.0
    assert meter.signal() == {"active": False, "cores": 0.0}
    assert ow.CpuMeter(TAG, proc=str(tmp_path / "nowhere")).signal()["why"].startswith("cannot read")


# -- loginctl, through a stand-in -------------------------------------------------------------------

NOW = 1_767_225_600.0  # the time the stand-in's sessions are read at

LIST_252 = """\
      2 1000 alice seat0 tty2
     c1  120 gdm   seat0 tty1
      7 1000 alice       pts/3
"""
LIST_256 = """\
2 1000 alice seat0 1234 user    tty2 no   -
7 1000 alice -     5678 user    pts/3 no  -
"""
SHOW = {  # show-session blocks by id, as logind gives them (property order is logind's, not -p's)
    "2": "Id=2\nType=wayland\nClass=user\nActive=yes\nRemote=no\nSeat=seat0\nIdleHint=yes\n"
         f"IdleSinceHint={int((NOW - 400) * 1e6)}\n",
    "c1": "Id=c1\nType=wayland\nClass=greeter\nActive=no\nRemote=no\nSeat=seat0\nIdleHint=no\nIdleSinceHint=0\n",
    "7": "Id=7\nType=tty\nClass=user\nActive=yes\nRemote=yes\nSeat=\nIdleHint=no\nIdleSinceHint=0\n",
}


def stand_in(tmp_path: Path, monkeypatch, list_out: str = LIST_252, show: dict | None = None, rc: int = 0,
             err: str = "") -> Path:
    """A `loginctl` first on PATH printing these; it records its arguments in calls.log."""
    show = SHOW if show is None else show
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    blocks = "\n".join(f'    {sid}) printf %s "$sep"; sep="\n"; cat <<"EOF"\n{text}EOF\n        ;;'
                       for sid, text in show.items())
    script = textwrap.dedent("""\
        #!/bin/sh
        echo "$@" >> "{log}"
        if [ {rc} -ne 0 ]; then echo "{err}" >&2; exit {rc}; fi
        if [ "$1" = list-sessions ]; then
            cat <<"EOF"
        {list_out}EOF
            exit 0
        fi
        shift
        sep=""
        for a in "$@"; do
            case "$a" in
                -p) ;;
        {blocks}
                *) case "$a" in Id|IdleHint|IdleSinceHint|Class|Type|Active|Seat|Remote) ;;
                   *) echo "Failed to get session path: No session '$a' known" >&2; exit 1;; esac;;
            esac
        done
        """)
    # (the dedent above keeps the heredoc bodies flush left once filled in)
    text = script.replace("{blocks}", blocks).format(log=tmp_path / "calls.log", rc=rc, err=err,
                                                     list_out=list_out)
    (d / "loginctl").write_text(text)
    (d / "loginctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "calls.log"


def query(below: float = 300, now: float = NOW) -> dict:
    sig = ow.InputSignal(below)
    sig.result = sig.once()
    return sig.signal(now)


def test_the_stand_in_answers_like_loginctl(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch)
    out = subprocess.run(["loginctl", "show-session", "2", "c1", "-p", "Id", "-p", "Class"], capture_output=True,
                         text=True, check=True).stdout
    assert out == SHOW["2"] + "\n" + SHOW["c1"]


def test_a_local_session_idle_past_the_limit_is_idle(tmp_path, monkeypatch):
    calls = stand_in(tmp_path, monkeypatch)
    assert query(below=300) == {"active": False, "idle": 400.0, "why": "session 2: input 400 s ago"}
    assert query(below=500)["active"] is True
    args = calls.read_text().splitlines()
    assert args[0] == "list-sessions --no-legend"
    assert args[1].startswith("show-session 2 c1 7 -p Id -p IdleHint -p IdleSinceHint -p Class")


def test_input_now_is_active_and_the_newer_list_format_parses(tmp_path, monkeypatch):
    show = {**SHOW, "2": SHOW["2"].replace("IdleHint=yes", "IdleHint=no")}
    stand_in(tmp_path, monkeypatch, list_out=LIST_256, show=show)
    assert query() == {"active": True, "idle": 0.0, "why": "session 2: input 0 s ago"}
    assert ow.parse_sessions(LIST_256) == ["2", "7"] and ow.parse_sessions(LIST_252) == ["2", "c1", "7"]


def test_remote_greeter_and_background_sessions_are_not_the_owner(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch, show={"c1": SHOW["c1"], "7": SHOW["7"]}, list_out="c1 120 gdm seat0 tty1\n"
             "7 1000 alice pts/3\n")
    assert query() == {"active": False, "idle": None, "why": "no user session"}


def test_no_session_at_all(tmp_path, monkeypatch):
    """Nobody is logged in at the machine: nobody is at its keyboard."""
    stand_in(tmp_path, monkeypatch, list_out="")
    assert query() == {"active": False, "idle": None, "why": "no user session"}


def test_a_session_that_ended_between_the_two_calls_leaves_the_others(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch, list_out="2 1000 alice seat0 tty2\n9 1000 alice seat0 tty3\n",
             show={"2": SHOW["2"]})  # 9 is gone by show-session: loginctl prints 2, then fails
    assert query(below=300)["why"] == "session 2: input 400 s ago"


@pytest.mark.parametrize("err, why", [
    ("System has not been booted with systemd as init system (PID 1). Can't operate.\n"
     "Failed to connect to bus: Host is down", "no logind on this host"),
    ("Failed to connect to bus: No such file or directory", "no logind on this host"),
    ("Access denied", "loginctl failed: Access denied"),
])
def test_no_logind_says_so(tmp_path, monkeypatch, err, why):
    """Where the host cannot tell, the signal is skipped (left out of the owner's state); a loginctl that
    fails otherwise is unknown."""
    stand_in(tmp_path, monkeypatch, rc=1, err=err)
    skipped = {"skipped": True} if why.startswith("no ") else {}
    assert query() == {"active": None, "idle": None, "why": why, **skipped}


def test_a_skipped_signal_leaves_the_others_to_decide():
    assert ow.combine({"input": {"active": None, "skipped": True}, "command": {"active": False}}) is False
    assert ow.combine({"input": {"active": None, "skipped": True}, "command": {"active": True}}) is True
    assert ow.combine({"input": {"active": None, "skipped": True}}) is False
    assert ow.combine({"input": {"active": None}, "command": {"active": False}}) is None


def test_no_loginctl_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert query()["why"] == "no loginctl on this host"


def test_this_machine_without_logind(monkeypatch):
    """The real loginctl, where logind does not run (this container: no systemd as PID 1)."""
    if Path("/run/systemd/system").exists():
        pytest.skip("systemd runs here: logind may answer")
    expected = "no logind on this host" if shutil.which("loginctl") else "no loginctl on this host"
    assert query()["why"] == expected


def test_idle_since_an_unknown_time_is_idle_and_a_session_in_front_wins():
    props = ow.parse_properties(SHOW["2"] + "\n" + SHOW["c1"] + "\n" + SHOW["7"])
    assert [s["Id"] for s in props] == ["2", "c1", "7"]
    assert [s["Id"] for s in ow.local_sessions(props)] == ["2"]
    seat = [{"Id": "3", "Class": "user", "Seat": "seat0", "Active": "no", "IdleHint": "no"},
            {"Id": "4", "Class": "user", "Seat": "seat0", "Active": "yes", "IdleHint": "yes", "IdleSinceHint": "0"}]
    assert [s["Id"] for s in ow.local_sessions(seat)] == ["4"]  # the one in front, not the switched-away one
    assert ow.idle_seconds(seat[1], NOW) is None
    sig = ow.InputSignal(300)
    sig.result = (ow.local_sessions(seat), "")
    assert sig.signal(NOW) == {"active": False, "idle": None, "why": "session 4 idle since an unknown time"}
    assert ow.idle_seconds({"IdleHint": "yes", "IdleSinceHint": str(int((NOW + 5) * 1e6))}, NOW) == 0.0  # clock skew


def test_a_stand_in_that_hangs_times_out(tmp_path, monkeypatch):
    d = tmp_path / "bin"
    d.mkdir()
    (d / "loginctl").write_text("#!/bin/sh\nexec sleep 30\n")
    (d / "loginctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(ow, "LOGINCTL_TIMEOUT", 0.5)
    t = time.monotonic()
    assert query()["why"] == "loginctl timed out after 0.5 s"
    assert time.monotonic() - t < 10
