"""Another user's cluster (issue 22, part 3): a state directory this user does not own raises NotYours,
one line naming whose it is; a ledger this user may not read is never "unreadable" (swept, set aside);
a stray PermissionError reaches the user as one line. The other user is played by a fake euid."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import typer

from clusterctl.cli.common import user_errors
from clusterctl.errors import ClusterError
from clusterctl.runtime import ledger as ledger_module
from clusterctl.runtime import registry
from clusterctl.runtime.ledger import Ledger, LedgerRecord, LedgerUnreadable, NotYours, private_dir, user_name
from clusterctl.topology import parse_config

stop_module = importlib.import_module("clusterctl.client.stop")  # the package exports the function as `stop`
pytestmark = pytest.mark.skipif(os.name != "posix", reason="owners are POSIX uids")

REAL = os.geteuid() if hasattr(os, "geteuid") else 0
STRANGER = REAL + 4242  # the user running the command; the files stay REAL's


@pytest.fixture
def stranger(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: STRANGER)


@pytest.fixture
def state(tmp_path) -> Path:
    s = tmp_path / "proj" / ".clusterctl" / "lab"
    Ledger(s).write(LedgerRecord(name="lab", state="running"))
    return s


def denied_for(path: Path, monkeypatch) -> None:
    """Reading ``path`` fails as a 0700 directory of another user makes it fail."""
    real = Path.read_text

    def read_text(self, *a, **k):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", read_text)


def owned_by(monkeypatch, owners: dict[Path, int]) -> None:
    """lstat() of each path (a link itself, not what it points at), and of everything under it, reports
    its uid as the owner, as chown would; the nearest wins. Everything else stays REAL's."""

    real = Path.lstat

    def lstat(self):
        st = real(self)
        under = [k for k in owners if self == k or self.is_relative_to(k)]
        nearest = max(under, key=lambda k: len(k.parts), default=None)
        if nearest is None:
            return st
        fields = list(st)
        fields[4] = owners[nearest]  # st_uid
        return os.stat_result(fields)

    monkeypatch.setattr(Path, "lstat", lstat)


def test_a_ledger_that_cannot_be_read_for_permission_names_its_owner(state, stranger, monkeypatch):
    denied_for(state / "ledger.json", monkeypatch)
    with pytest.raises(NotYours) as e:
        Ledger(state).read()
    assert not isinstance(e.value, LedgerUnreadable)  # never swept by tag, never set aside
    assert str(e.value) == (f"{state} belongs to {user_name(REAL)} (uid {REAL}): another user's cluster "
                            "is neither read nor changed by you")
    assert e.value.exit_code == 1


def test_a_readable_state_directory_of_another_user_is_still_not_yours(state, stranger):
    with pytest.raises(NotYours, match=f"^{state} belongs to "):
        Ledger(state).read()


def test_another_users_state_directory_without_a_ledger_yet_is_not_yours(tmp_path, stranger, monkeypatch):
    state = private_dir(tmp_path / "proj" / ".clusterctl" / "lab")  # theirs, no ledger.json in it (yet)
    with pytest.raises(NotYours, match=f"^{state} belongs to {user_name(REAL)} "):
        Ledger(state).read()  # never None: `up` would start over it, `down` sweep by tag
    cfg = parse_config(f"name: lab\nstate_dir: {state.parent}\nworkers:\n  - name: default\n    count: 1\n")
    touched = []
    monkeypatch.setattr(stop_module, "sweep", lambda c: touched.append("sweep"))
    with pytest.raises(NotYours):
        stop_module.stop(cfg)
    assert touched == [] and list(state.iterdir()) == []


def test_your_own_state_directory_without_a_ledger_is_none(tmp_path):
    assert Ledger(private_dir(tmp_path / "proj" / ".clusterctl" / "lab")).read() is None
    assert Ledger(tmp_path / "nowhere" / "lab").read() is None


@pytest.mark.parametrize("with_ledger", [True, False], ids=["ledger", "no-ledger"])
def test_your_link_to_another_users_state_directory_is_not_yours(tmp_path, stranger, monkeypatch, with_ledger):
    theirs = private_dir(tmp_path / "theirs" / ".clusterctl" / "lab")
    if with_ledger:
        Ledger(theirs).write(LedgerRecord(name="lab", state="running"))
    link = tmp_path / "proj" / ".clusterctl" / "lab"
    link.parent.mkdir(parents=True)
    link.symlink_to(theirs, target_is_directory=True)
    owned_by(monkeypatch, {tmp_path / "proj": STRANGER})  # the link is the stranger's own; what it points at is not
    with pytest.raises(NotYours) as e:
        Ledger(link).read()
    assert str(e.value) == (f"{theirs} belongs to {user_name(REAL)} (uid {REAL}): another user's cluster "
                            "is neither read nor changed by you")


def test_another_users_link_to_your_directory_is_not_yours(tmp_path, stranger, monkeypatch):
    mine = tmp_path / "mine" / "lab"
    Ledger(mine).write(LedgerRecord(name="lab", state="running"))
    link = tmp_path / "proj" / ".clusterctl" / "lab"
    link.parent.mkdir(parents=True)
    link.symlink_to(mine, target_is_directory=True)
    owned_by(monkeypatch, {tmp_path / "mine": STRANGER})  # the target is the stranger's, the link is REAL's
    with pytest.raises(NotYours, match=f"^{link} belongs to {user_name(REAL)} "):
        Ledger(link).read()


def test_your_link_to_your_own_state_directory_reads_through(tmp_path, stranger, monkeypatch):
    real = tmp_path / "elsewhere" / "lab"
    Ledger(real).write(LedgerRecord(name="lab", state="running"))
    link = tmp_path / "proj" / ".clusterctl" / "lab"
    link.parent.mkdir(parents=True)
    link.symlink_to(real, target_is_directory=True)
    owned_by(monkeypatch, {tmp_path: STRANGER})  # the link and what it points at, both the stranger's
    assert Ledger(link).read().name == "lab"


def test_root_reads_anyones(state, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(ledger_module, "owner_of", lambda p: (p, 4242))
    assert Ledger(state).read().name == "lab"


def test_your_own_ledger_made_unreadable_says_how_to_fix_it(state, stranger, monkeypatch):
    monkeypatch.setattr(ledger_module, "owner_of", lambda p: (p, STRANGER))
    denied_for(state / "ledger.json", monkeypatch)
    with pytest.raises(ClusterError) as e:
        Ledger(state).read()
    assert not isinstance(e.value, (LedgerUnreadable, NotYours))
    assert str(e.value) == (f"{state / 'ledger.json'} cannot be read: permission denied; it is yours, so "
                            f"`chmod 600 {state / 'ledger.json'}` makes it readable again")


def test_your_ledger_behind_a_directory_you_cannot_enter_names_that_directory(state, stranger, monkeypatch):
    # The state directory is the stranger's own (so it is not refused) but cannot be entered: the
    # nearest path that can be looked at is the directory, not ledger.json.
    monkeypatch.setattr(ledger_module, "owner_of", lambda p: (state, STRANGER))
    denied_for(state / "ledger.json", monkeypatch)
    with pytest.raises(ClusterError) as e:
        Ledger(state).read()
    assert not isinstance(e.value, (LedgerUnreadable, NotYours))
    assert str(e.value) == (f"{state / 'ledger.json'} cannot be read: {state} denies access; it is yours, so "
                            f"`chmod u+rwx {state}` makes it readable again")


def test_down_of_another_users_cluster_changes_nothing(state, stranger, monkeypatch):
    cfg = parse_config(f"name: lab\nstate_dir: {state.parent}\nworkers:\n  - name: default\n    count: 1\n")
    assert cfg.state_path == state
    denied_for(state / "ledger.json", monkeypatch)
    touched = []
    monkeypatch.setattr(stop_module, "sweep", lambda c: touched.append("sweep"))
    monkeypatch.setattr(stop_module.process, "stop_tagged", lambda *a, **k: touched.append("stop_tagged"))
    monkeypatch.setattr(Ledger, "set_aside", lambda self: touched.append("set_aside"))
    before = sorted(p.name for p in state.iterdir())
    with pytest.raises(NotYours):
        stop_module.stop(cfg)
    assert touched == []
    assert sorted(p.name for p in state.iterdir()) == before


def test_a_stray_permission_error_is_one_line_naming_the_owner(tmp_path, stranger, capsys):
    target = tmp_path / "theirs" / "ledger.json"

    @user_errors
    def command():
        raise PermissionError(13, "Permission denied", str(target))

    with pytest.raises(typer.Exit) as e:
        command()
    assert e.value.exit_code == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"error: {target}: permission denied ({tmp_path} belongs to {user_name(REAL)}, uid {REAL})"]


def test_a_permission_error_without_a_file_is_one_line_too(capsys):
    @user_errors
    def command():
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(typer.Exit):
        command()
    assert capsys.readouterr().err.splitlines() == ["error: permission denied: Operation not permitted"]


def test_list_forgets_an_entry_whose_state_is_another_users_now(tmp_path, monkeypatch, state):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    entry = registry.register("lab", tmp_path / "proj" / "cluster.yaml", state)
    monkeypatch.setattr(os, "geteuid", lambda: STRANGER)
    kept, gone = registry.prune()
    assert kept == [] and gone == [(entry, f"{state} belongs to another user now")]
