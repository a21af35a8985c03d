"""`clusterctl service install` for real. systemd is not PID 1 here, so the unit's own command is run
as systemd would run it (its ExecStart, WorkingDirectory and Environment, nothing else), stopped as
`systemctl stop` stops a KillMode=mixed unit (SIGTERM to the main process only), and must exit 0
within TimeoutStopSec with nothing left: systemd's final SIGKILL of the cgroup would find no one."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from clusterctl.client.service import Systemctl
from conftest import missing_tool, processes_under, wait_for

pytestmark = pytest.mark.integration

# A folder with a space, a specifier and a variable: each must reach the supervisor verbatim.
FOLDER = "my cluster %i $HOME"


def settings_of(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def exec_start(value: str) -> list[str]:
    """ExecStart= split as systemd does for the quoting clusterctl writes: %% is %, double quotes
    with \\\\ and \\" unquoted, then (at exec time) $$ is $ in the arguments, never in the program."""
    words = shlex.split(value.replace("%%", "%"))
    return [words[0], *(w.replace("$$", "$") for w in words[1:])]


def install(cluster, tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    cluster.root = tmp_path / FOLDER
    cluster.root.mkdir()
    cluster.write()
    r = cluster.cli("service", "install", "--user", "--no-enable", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, check=True)
    unit = tmp_path / "xdg" / "systemd" / "user" / "clusterctl-test.service"
    assert f"created {unit}" in r.stdout
    return unit, settings_of(unit.read_text())


@pytest.mark.timeout(240)
def test_the_units_command_runs_the_cluster_and_sigterm_stops_it_all(cluster, tmp_path):
    unit, s = install(cluster, tmp_path)
    argv = exec_start(s["ExecStart"][0])
    assert argv[1:] == ["-u", "-m", "clusterctl", "up", "--foreground", "--file", str(cluster.config)]
    assert os.access(argv[0], os.X_OK)
    workdir = s["WorkingDirectory"][0].replace("%%", "%")
    assert workdir == str(cluster.root)
    (path_assignment,) = shlex.split(s["Environment"][0].replace("%%", "%"))
    assert path_assignment.startswith("PATH=")
    stop_within = int(s["TimeoutStopSec"][0])
    assert s["KillMode"] == ["mixed"]
    # systemd's environment for a unit: its Environment= lines plus a few of its own, not the caller's;
    # a user manager takes HOME and USER from the account's passwd entry (root or not: .ci/run runs both).
    account = pwd.getpwuid(os.getuid())
    env = {"PATH": path_assignment[len("PATH="):], "HOME": account.pw_dir, "LANG": "C.UTF-8",
           "USER": account.pw_name, "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]}
    main = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: main.poll() is not None or cluster.status()["state"] == "running", 90, 0.3,
                 "the unit's command to bring the cluster up")
        assert main.poll() is None, main.communicate()[0]
        st = cluster.status()
        assert st["supervisor"]["pid"] == main.pid  # the unit's main process is the supervisor itself
        assert len(st["processes"]) == 3 and all(p["state"] == "running" for p in st["processes"])
        t0 = time.monotonic()
        main.send_signal(signal.SIGTERM)  # KillMode=mixed: the main process alone
        out, _ = main.communicate(timeout=stop_within)
        took = time.monotonic() - t0
    finally:
        if main.poll() is None:
            os.killpg(main.pid, signal.SIGKILL)
            main.wait(10)
    assert main.returncode == 0, out
    assert took < stop_within
    left = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in processes_under(tmp_path) if p.is_running()]
    assert not left, f"systemd's final SIGKILL would have had work to do:\n{left}"
    assert cluster.ledger()["state"] == "stopped"
    print(f"stopped in {took:.2f} s of TimeoutStopSec={stop_within}")


def test_systemd_reads_the_unit_as_written(cluster, tmp_path):
    """systemd-analyze parses the unit as systemd does and, at debug level, dumps what it understood:
    the command line word by word, the working directory and the environment."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        missing_tool("systemd-analyze (apt-get install systemd) checks the unit as systemd reads it")
    unit, s = install(cluster, tmp_path)
    verify = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    debug = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, SYSTEMD_LOG_LEVEL="debug"))
    dump = debug.stdout + debug.stderr  # the unit dump comes on stdout, the log on stderr
    lines = [line.strip() for line in dump.splitlines()]
    command = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Command Line:")]
    assert len(command) == 1, dump[-2000:]
    # systemd shows a word with special characters in double quotes, with \\ " ` $ escaped by a backslash
    understood = [re.sub(r"\\(.)", r"\1", m[1]) if m[1] is not None else m[2]
                  for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', command[0])]
    understood = [understood[0], *(w.replace("$$", "$") for w in understood[1:])]  # $$ is $ at exec time
    assert understood == exec_start(s["ExecStart"][0])
    assert understood[-1] == str(cluster.config)
    assert f"WorkingDirectory: {cluster.root}" in lines
    assert "KillMode: mixed" in lines and "Restart: on-failure" in lines
    path = [line for line in lines if line.startswith("Environment: PATH=")]
    assert path == ["Environment: " + shlex.split(s["Environment"][0].replace("%%", "%"))[0]]
    # a unit systemd would refuse is caught: the checker can fail
    broken = unit.with_name("clusterctl-broken.service")
    broken.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=politely"))
    bad = subprocess.run([tool, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "politely" in bad.stderr  # the same "empty stderr" check above would fail on it


def test_systemctl_answers_only_where_systemd_runs():
    """The probe behind `install` deciding to enable: a system manager answers exactly when the
    machine booted with systemd (sd_booted: /run/systemd/system exists), as in a container it does not."""
    if shutil.which("systemctl") is None:
        assert not Systemctl(user=False).answers()
        return
    assert Systemctl(user=False).answers() == os.path.isdir("/run/systemd/system")
