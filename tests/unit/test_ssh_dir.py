"""The ssh ControlPath folder: private (0700, ours) before any ssh uses it, or one line saying why not.

Real directories under a temp dir standing in for the shared /tmp; ownership by another user is
real (chown) when the tests run as root, and otherwise seen through a different effective uid."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from clusterctl.errors import ClusterError
from clusterctl.plan.ssh import control_dir
from clusterctl.remote import fleet, ssh
from clusterctl.topology import parse_config

from conftest import free_port

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no ControlMaster on Windows")
OTHER_UID = 65534  # nobody


@pytest.fixture
def shared_tmp(monkeypatch) -> Path:
    """tempfile.gettempdir() for this test: a sticky, world-writable folder like /tmp (short, as a
    socket path must be: a long one makes control_dir fall back to /tmp, tested below)."""
    root = Path(tempfile.mkdtemp(prefix="ccs", dir="/tmp"))
    root.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_a_long_temp_dir_falls_back_to_a_short_one(tmp_path, monkeypatch):
    long = tmp_path / ("deep" * 20)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    path = control_dir(remote_cfg(tmp_path))
    assert path.parent == Path("/tmp") / f"clusterctl-ssh-{os.getuid()}"
    assert len(f"{path}/{'0' * 40}.{'x' * 16}") < 108, "ssh's socket, and the name it binds first, fit"


def remote_cfg(tmp_path: Path, port: int = 22):
    text = (f"hosts:\n  - name: ws2\n    address: 127.0.0.2\n    port: {port}\n    ssh_options: [ConnectTimeout=2]\n"
            "tls: {enabled: false}\nworkers:\n  - at: ws2\n")
    return parse_config(text, source=tmp_path / "cluster.yaml")


def owned_by_someone_else(path: Path, monkeypatch) -> None:
    if os.geteuid() == 0:
        os.chown(path, OTHER_UID, OTHER_UID)
    else:  # we cannot give it away: become, for the check, a user who does not own it
        me = os.geteuid()
        monkeypatch.setattr(ssh.os, "geteuid", lambda: me + 1)


def refused(cfg, *, create: bool = True) -> str:
    with pytest.raises(ClusterError) as info:
        ssh.secure_control_dir(cfg, create=create)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_made_0700_at_both_levels(shared_tmp, tmp_path):
    cfg = remote_cfg(tmp_path)
    old = os.umask(0o022)
    try:
        path = ssh.secure_control_dir(cfg, create=True)
    finally:
        os.umask(old)
    assert path == control_dir(cfg) and path.parent.parent == shared_tmp
    for folder in (path.parent, path):
        st = os.lstat(folder)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid(), folder
    assert ssh.secure_control_dir(cfg, create=True) == path  # again: accepted as it is


def test_not_made_when_only_checked(shared_tmp, tmp_path):
    path = ssh.secure_control_dir(remote_cfg(tmp_path), create=False)
    assert not path.parent.exists()


@pytest.mark.parametrize("level", ["parent", "cluster"])
def test_owned_by_another_user_is_refused(shared_tmp, tmp_path, monkeypatch, level):
    cfg = remote_cfg(tmp_path)
    path = control_dir(cfg)
    path.mkdir(parents=True, mode=0o700)
    path.parent.chmod(0o700)
    folder = path.parent if level == "parent" else path
    owned_by_someone_else(folder, monkeypatch)
    for create in (True, False):
        msg = refused(cfg, create=create)
        assert msg.startswith(f"{folder}: owned by ") and "not by you" in msg, msg
        assert "remove it" in msg and "TMPDIR" in msg, msg


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_writable_by_others_is_refused_and_left_alone(shared_tmp, tmp_path, mode):
    cfg = remote_cfg(tmp_path)
    folder = control_dir(cfg).parent
    folder.mkdir()
    folder.chmod(mode)
    msg = refused(cfg)
    assert msg.startswith(f"{folder}: mode {mode:03o} lets other users write there"), msg
    assert "remove it" in msg and "0700" in msg, msg
    assert stat.S_IMODE(os.lstat(folder).st_mode) == mode  # not "repaired": something may be planted


def test_ours_and_only_readable_by_others_is_closed_to_0700(shared_tmp, tmp_path):
    """What an older clusterctl left (mkdir(parents=True) made the upper level 0755)."""
    cfg = remote_cfg(tmp_path)
    folder = control_dir(cfg).parent
    folder.mkdir()
    folder.chmod(0o755)
    ssh.secure_control_dir(cfg, create=True)
    assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700


def test_a_symlink_or_a_file_is_refused(shared_tmp, tmp_path):
    cfg = remote_cfg(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    control_dir(cfg).parent.symlink_to(elsewhere)
    assert "is a symbolic link" in refused(cfg)
    control_dir(cfg).parent.unlink()
    control_dir(cfg).parent.write_text("")
    assert "is not a directory" in refused(cfg)


def test_prepare_refuses_before_any_ssh_runs(shared_tmp, tmp_path, monkeypatch):
    """ssh to a closed local port would fail as 'unreachable': the folder's refusal comes first."""
    cfg = remote_cfg(tmp_path, port=free_port())
    folder = control_dir(cfg).parent
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(ClusterError) as info:
        fleet.prepare(cfg)
    assert "lets other users write there" in str(info.value) and "unreachable" not in str(info.value)
    assert not control_dir(cfg).exists()  # nothing made inside it either


def test_short_commands_refuse_it_too(shared_tmp, tmp_path, monkeypatch):
    cfg = remote_cfg(tmp_path, port=free_port())
    control_dir(cfg).mkdir(parents=True, mode=0o700)
    control_dir(cfg).parent.chmod(0o700)
    owned_by_someone_else(control_dir(cfg), monkeypatch)
    with pytest.raises(ClusterError) as info:
        ssh.run(cfg, "ws2", ["true"], timeout=10)
    assert "not by you" in str(info.value)
    with pytest.raises(ClusterError):
        ssh.close(cfg, "ws2")
