"""The systemd unit of `clusterctl service install` (text, quoting, paths) and the install/remove flow.

systemctl is replaced by a recording runner here; nothing touches the real home or /etc:
XDG_CONFIG_HOME points into tmp_path. tests/integration/test_service.py runs the unit's command."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import subprocess
from pathlib import Path

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from clusterctl.cli import app
from clusterctl.client import service as svc
from clusterctl.errors import ClusterError
from clusterctl.runtime.ledger import Ledger, LedgerRecord, SupervisorRecord
from clusterctl.topology import parse_config

PY = "/opt/venv/bin/python"
TEXT = "name: lab\nworkers:\n  - name: default\n    count: 1\ntimeouts:\n  shutdown: 7\n"
FLEET = ("hosts:\n  - name: ws1\n    address: 127.0.0.2\n    python: /opt/env/bin/python\n"
         "workers:\n  - name: default\n    at: {ws1: 1}\ninsecure: true\n")
runner = CliRunner()


def systemd_split(value: str) -> list[str]:
    """ExecStart= as systemd reads it, for the quoting clusterctl writes: specifiers first (%% is %),
    then words split and unquoted (double quotes, \\\\ and \\"), then $$ is $ in the arguments only."""
    words = shlex.split(value.replace("%%", "%"))
    return [words[0], *(w.replace("$$", "$") for w in words[1:])]


def setting(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def cfg_at(path: Path, text: str = TEXT):
    return parse_config(text, source=path)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private XDG_CONFIG_HOME (and HOME), so no test can write the real ~/.config."""
    e = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home"), "PATH": "/opt/tools bin:/usr/bin"}
    for k, v in e.items():
        monkeypatch.setenv(k, v)
    return e


class Recorder:
    """A stand-in for the systemctl binary: answers is-system-running with `state`, records the rest."""

    def __init__(self, state: str = "running", fail: str | None = None, main_pid: int = 0):
        self.state, self.fail, self.main_pid, self.calls = state, fail, main_pid, []

    def __call__(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        self.calls.append((argv[1:], timeout))
        if argv[-1] == "is-system-running":
            return subprocess.CompletedProcess(argv, 0 if self.state == "running" else 1, self.state + "\n", "")
        if "show" in argv:
            return subprocess.CompletedProcess(argv, 0, f"{self.main_pid}\n", "")
        if self.fail and self.fail in argv:
            return subprocess.CompletedProcess(argv, 1, "", "Failed to enable unit: Access denied\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def actions(self) -> list[list[str]]:
        return [a for a, _ in self.calls if a[-1] != "is-system-running"]


# -- the unit text ------------------------------------------------------------------------------
def test_user_unit_runs_the_foreground_supervisor_from_the_config_folder(tmp_path, env):
    config = tmp_path / "my cluster" / "cluster.yaml"
    unit = svc.build_unit(cfg_at(config), user=True, python=PY, environ=env)
    assert unit.name == "clusterctl-lab.service"
    assert unit.path == tmp_path / "xdg" / "systemd" / "user" / "clusterctl-lab.service"
    t = unit.text
    assert f'ExecStart={PY} -u -m clusterctl up --foreground --file "{config}"' in t
    assert systemd_split(setting(t, "ExecStart")[0]) == [PY, "-u", "-m", "clusterctl", "up", "--foreground", "--file", str(config)]
    assert setting(t, "WorkingDirectory") == [str(config.parent)]  # verbatim: systemd does not unquote it
    assert setting(t, "WantedBy") == ["default.target"]
    assert not setting(t, "User") and not setting(t, "Group")
    assert "network-online.target" not in t  # a user manager has none
    assert setting(t, "KillMode") == ["mixed"]
    assert setting(t, "Restart") == ["on-failure"] and setting(t, "RestartSec") == ["5"]
    assert setting(t, "RestartPreventExitStatus") == ["2 4"]
    assert setting(t, "Type") == ["exec"]
    assert setting(t, "TimeoutStopSec") == [str(3 * 7 + 35)]
    assert t.index("[Unit]") < t.index("[Service]") < t.index("[Install]")


def test_system_unit_runs_as_the_user_behind_sudo_after_the_network(tmp_path, env):
    e = dict(env, SUDO_USER="nobody")
    unit = svc.build_unit(cfg_at(tmp_path / "cluster.yaml"), user=False, python=PY, environ=e)
    assert unit.path == Path("/etc/systemd/system/clusterctl-lab.service")
    t = unit.text
    assert setting(t, "WantedBy") == ["multi-user.target"]
    assert setting(t, "After") == ["network-online.target"] and setting(t, "Wants") == ["network-online.target"]
    # sudo's user when root runs it through sudo; whoever runs it otherwise (SUDO_USER is then ignored)
    expected = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
    assert setting(t, "User") == [expected]
    assert len(setting(t, "Group")) == 1


def test_path_is_the_install_time_path_with_this_interpreter_first(tmp_path, env):
    e = dict(env, PATH="/opt/tools bin:/usr/bin:/opt/tools bin:/usr/x%y")
    t = svc.build_unit(cfg_at(tmp_path / "cluster.yaml"), user=True, python=PY, environ=e).text
    (assignment,) = setting(t, "Environment")
    assert shlex.split(assignment.replace("%%", "%")) == ["PATH=/opt/venv/bin:/opt/tools bin:/usr/bin:/usr/x%y"]
    assert len(setting(t, "Environment")) == 1, "only PATH: never secrets from the environment"


def test_secrets_in_the_environment_stay_out_of_the_unit(tmp_path, env):
    e = dict(env, AWS_SECRET_ACCESS_KEY="hunter2", DASK_DISTRIBUTED__COMM__TLS__CA_FILE="/k")
    t = svc.build_unit(cfg_at(tmp_path / "cluster.yaml"), user=True, python=PY, environ=e).text
    assert "hunter2" not in t and "DASK_" not in t


@pytest.mark.parametrize("user, where", [(True, "xdg"), (False, None)])
def test_unit_folder(tmp_path, env, user, where):
    expected = tmp_path / "xdg" / "systemd" / "user" if user else Path("/etc/systemd/system")
    assert svc.unit_dir(user, env) == expected


def test_relative_xdg_config_home_is_ignored_as_the_spec_says(tmp_path):
    assert svc.unit_dir(True, {"XDG_CONFIG_HOME": "rel", "HOME": str(tmp_path)}) == tmp_path / ".config" / "systemd" / "user"
    assert svc.unit_dir(True, {"HOME": str(tmp_path)}) == tmp_path / ".config" / "systemd" / "user"


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab Z09_-.'\"\\%$;#é=~*{}`&!")), min_size=1, max_size=12))
def test_any_config_path_survives_systemd_splitting(name):
    config = Path("/srv") / name / "cluster.yaml"
    folder = os.path.dirname(os.path.abspath(config))
    if folder != folder.strip() or folder.endswith("\\"):  # trimmed or a line continuation: refused
        with pytest.raises(ClusterError, match="ends in a space or a backslash"):
            svc.build_unit(cfg_at(config), user=True, python=PY, environ={"PATH": "/usr/bin"})
        return
    unit = svc.build_unit(cfg_at(config), user=True, python=PY, environ={"HOME": "/h", "PATH": "/usr/bin"})
    argv = systemd_split(setting(unit.text, "ExecStart")[0])
    assert argv[-2:] == ["--file", os.path.abspath(config)]
    assert setting(unit.text, "WorkingDirectory")[0].replace("%%", "%") == folder


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab Z09_-.%$;é")), min_size=1, max_size=10))
def test_the_interpreter_path_is_quoted_but_its_dollars_kept(name):
    python = f"/opt/{name}/bin/python"
    unit = svc.build_unit(cfg_at(Path("/srv/cluster.yaml")), user=True, python=python, environ={"PATH": "/usr/bin"})
    line = setting(unit.text, "ExecStart")[0]
    assert shlex.split(line.replace("%%", "%"))[0] == os.path.abspath(python)  # systemd expands no $ in argv[0]


@pytest.mark.parametrize("python", ['/opt/a"b/python', "/opt/a'b/python", "/opt/a\\b/python"])
def test_an_interpreter_path_systemd_refuses_is_one_line_error(python):
    with pytest.raises(ClusterError, match="systemd refuses quotes and backslashes") as info:
        svc.build_unit(cfg_at(Path("/srv/cluster.yaml")), user=True, python=python, environ={})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("folder", ["a\nb", "trailing ", "back\\"])
def test_a_config_path_a_unit_cannot_hold_is_refused(folder):
    with pytest.raises(ClusterError) as info:
        svc.build_unit(cfg_at(Path("/srv") / folder / "cluster.yaml"), user=True, python=PY, environ={})
    assert "\n" not in str(info.value)


def test_stop_budget_covers_the_supervisors_worst_case(tmp_path):
    local, parts = svc.stop_budget(cfg_at(tmp_path / "c.yaml"))
    assert local == (7 + 15) + (7 + 5) + (7 + 5) + 10 and "retirements 22" in parts
    fleet, parts = svc.stop_budget(cfg_at(tmp_path / "c.yaml", FLEET))
    assert fleet == (10 + 15) + (10 + 5) + (10 + 5) + (10 + 30) + 10 and "remote sweep 40" in parts


def test_a_topology_without_a_file_is_refused():
    with pytest.raises(ClusterError, match="-f cluster.yaml"):
        svc.build_unit(parse_config(TEXT), user=True, python=PY)


# -- install and remove -------------------------------------------------------------------------
def test_install_writes_once_then_is_idempotent(tmp_path, env):
    cfg = cfg_at(tmp_path / "cluster.yaml")
    ctl = Recorder(state="offline")
    r = svc.install(cfg, user=True, systemctl=svc.Systemctl(True, ctl, "/bin/systemctl"), environ=env)
    path = Path(r["path"])
    assert r["written"] == "created" and path.read_text() == svc.build_unit(cfg, user=True, environ=env).text
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not r["systemd"] and not r["enabled"] and ctl.actions() == []  # offline: written, nothing enabled
    assert r["enable_command"] == "systemctl --user enable --now clusterctl-lab.service"
    again = svc.install(cfg, user=True, systemctl=svc.Systemctl(True, ctl, "/bin/systemctl"), environ=env)
    assert again["written"] == "unchanged"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind


def test_different_content_is_replaced_only_with_force(tmp_path, env):
    cfg = cfg_at(tmp_path / "cluster.yaml")
    unit = svc.build_unit(cfg, user=True, environ=env)
    unit.path.parent.mkdir(parents=True)
    unit.path.write_text("[Service]\nExecStart=/bin/mine\n")
    ctl = svc.Systemctl(True, Recorder("offline"), "/bin/systemctl")
    with pytest.raises(ClusterError, match="exists with different content; --force replaces it"):
        svc.install(cfg, user=True, systemctl=ctl, environ=env)
    assert unit.path.read_text() == "[Service]\nExecStart=/bin/mine\n"
    assert svc.install(cfg, user=True, force=True, systemctl=ctl, environ=env)["written"] == "replaced"
    assert unit.path.read_text() == unit.text


def test_install_reloads_enables_and_starts_when_systemd_answers(tmp_path, env):
    ctl = Recorder("running")
    r = svc.install(cfg_at(tmp_path / "cluster.yaml"), user=True, systemctl=svc.Systemctl(True, ctl, "systemctl"), environ=env)
    assert r["systemd"] and r["enabled"] and r["started"] and not r["already_running"]
    assert ctl.actions() == [["--user", "daemon-reload"], ["--user", "enable", "--now", "clusterctl-lab.service"]]


def test_a_cluster_already_running_is_enabled_but_not_started_twice(tmp_path, env):
    cfg = cfg_at(tmp_path / "cluster.yaml")
    me = psutil.Process()
    Ledger(cfg.state_path).write(LedgerRecord(name="lab", state="running",
                                              supervisor=SupervisorRecord(pid=me.pid, create_time=me.create_time())))
    ctl = Recorder("degraded")
    r = svc.install(cfg, user=True, systemctl=svc.Systemctl(True, ctl, "systemctl"), environ=env)
    assert r["already_running"] and r["enabled"] and not r["started"] and not r["under_unit"]
    assert ctl.actions()[-1] == ["--user", "enable", "clusterctl-lab.service"]
    # installed again while that very unit runs the supervisor: systemd's MainPID is the ledger's supervisor
    ctl = Recorder("running", main_pid=me.pid)
    r = svc.install(cfg, user=True, systemctl=svc.Systemctl(True, ctl, "systemctl"), environ=env)
    assert r["written"] == "unchanged" and r["under_unit"] and not r["started"]
    assert ["--user", "show", "--property=MainPID", "--value", "clusterctl-lab.service"] in ctl.actions()


def test_no_enable_never_asks_systemctl(tmp_path, env):
    ctl = Recorder("running")
    r = svc.install(cfg_at(tmp_path / "cluster.yaml"), user=True, enable=False,
                    systemctl=svc.Systemctl(True, ctl, "systemctl"), environ=env)
    assert r["written"] == "created" and ctl.calls == []


def test_a_failing_systemctl_is_one_line_error_naming_the_command(tmp_path, env):
    ctl = svc.Systemctl(True, Recorder("running", fail="enable"), "systemctl")
    with pytest.raises(ClusterError) as info:
        svc.install(cfg_at(tmp_path / "cluster.yaml"), user=True, systemctl=ctl, environ=env)
    assert str(info.value) == ("`systemctl --user enable --now clusterctl-lab.service` failed (exit 1): "
                               "Failed to enable unit: Access denied")


def test_no_systemctl_binary_means_no_systemd(tmp_path):
    assert not svc.Systemctl(True, Recorder("running"), None).answers()
    missing = svc.Systemctl(True, binary=str(tmp_path / "nope"))
    assert not missing.answers()  # the runner turns the missing binary into exit 127


def test_a_system_unit_needs_root(tmp_path, env, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ClusterError, match=r"^needs root; use --user for a per-user service$"):
        svc.install(cfg_at(tmp_path / "cluster.yaml"), user=False, environ=env)


def test_remove_stops_disables_deletes_and_reloads(tmp_path, env):
    cfg = cfg_at(tmp_path / "cluster.yaml")
    ctl = Recorder("running")
    path = Path(svc.install(cfg, user=True, enable=False, environ=env)["path"])
    r = svc.remove("lab", user=True, systemctl=svc.Systemctl(True, ctl, "systemctl"), environ=env)
    assert r["removed"] and r["systemd"] and not path.exists()
    assert ctl.actions() == [["--user", "disable", "--now", "clusterctl-lab.service"], ["--user", "daemon-reload"]]
    stop_timeout = [t for a, t in ctl.calls if "disable" in a][0]
    assert stop_timeout == svc.stop_budget(cfg)[0] + 30  # `disable --now` waits for the whole polite stop
    again = svc.remove("lab", user=True, systemctl=svc.Systemctl(True, ctl, "systemctl"), environ=env)
    assert not again["removed"]


def test_remove_without_systemd_only_deletes(tmp_path, env):
    path = Path(svc.install(cfg_at(tmp_path / "cluster.yaml"), user=True, enable=False, environ=env)["path"])
    ctl = Recorder("offline")
    assert svc.remove("lab", user=True, systemctl=svc.Systemctl(True, ctl, "systemctl"), environ=env)["removed"]
    assert not path.exists() and ctl.actions() == []


# -- the command line ---------------------------------------------------------------------------
@pytest.fixture
def config(tmp_path, env, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no systemctl: systemd cannot answer
    monkeypatch.delenv("CLUSTERCTL_CONFIG", raising=False)
    folder = tmp_path / "my cluster"
    folder.mkdir()
    (folder / "cluster.yaml").write_text(TEXT)
    return folder / "cluster.yaml"


def test_cli_install_without_systemd_says_how_to_enable_later(config, tmp_path):
    r = runner.invoke(app, ["service", "install", "--user", "-f", str(config)])
    assert r.exit_code == 0, r.output
    unit = tmp_path / "xdg" / "systemd" / "user" / "clusterctl-lab.service"
    assert f"created {unit}" in r.output
    assert ("systemd is not running here (or has no session for this user); enable it later with "
            "`systemctl --user enable --now clusterctl-lab.service`") in r.output
    assert f'--file "{config}"' in unit.read_text()
    r = runner.invoke(app, ["service", "install", "--user", "-f", str(config)])
    assert r.exit_code == 0 and "is already up to date" in r.output


def test_cli_dry_run_prints_the_unit_and_writes_nothing(config, tmp_path):
    r = runner.invoke(app, ["service", "install", "--dry-run", "-f", str(config)])
    assert r.exit_code == 0, r.output
    assert "WantedBy=multi-user.target" in r.output and "KillMode=mixed" in r.output
    assert not (tmp_path / "xdg").exists()


def test_cli_refuses_to_overwrite_and_a_system_unit_without_root(config, tmp_path, monkeypatch):
    unit = tmp_path / "xdg" / "systemd" / "user" / "clusterctl-lab.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("mine\n")
    r = runner.invoke(app, ["service", "install", "--user", "--no-enable", "-f", str(config)])
    assert r.exit_code == 1 and "exists with different content; --force replaces it" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    r = runner.invoke(app, ["service", "install", "--user", "--no-enable", "--force", "-f", str(config)])
    assert r.exit_code == 0 and f"replaced {unit}" in r.output and "not enabled (--no-enable)" in r.output
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    r = runner.invoke(app, ["service", "install", "-f", str(config)])
    assert r.exit_code == 1 and r.output.strip() == "error: needs root; use --user for a per-user service"


def test_cli_remove_is_idempotent_and_works_by_name(config, tmp_path):
    assert runner.invoke(app, ["service", "install", "--user", "-f", str(config)]).exit_code == 0
    unit = tmp_path / "xdg" / "systemd" / "user" / "clusterctl-lab.service"
    r = runner.invoke(app, ["service", "remove", "--user", "--name", "lab"])
    assert r.exit_code == 0 and r.output.strip() == f"removed {unit}" and not unit.exists()
    r = runner.invoke(app, ["service", "remove", "--user", "-f", str(config)])
    assert r.exit_code == 0 and "no unit clusterctl-lab.service in" in r.output and "nothing to remove" in r.output
    r = runner.invoke(app, ["service", "remove", "--user", "--name", "../etc"])
    assert r.exit_code == 1 and "not a valid cluster name" in r.output


def test_the_generated_unit_documents_its_choices(tmp_path, env):
    t = svc.build_unit(cfg_at(tmp_path / "cluster.yaml"), user=True, python=PY, environ=env).text
    comments = "\n".join(line for line in t.splitlines() if line.startswith("#"))
    assert re.search(r"KillMode=mixed: .*SIGTERM to the supervisor alone", comments)
    assert "TimeoutStopSec: the supervisor's own worst case" in comments
    assert "Restart=on-failure" in comments
    assert "clusterctl service remove --user --name lab" in comments
