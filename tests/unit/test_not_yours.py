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
from clusterctl.runtime.ledger import Ledger, LedgerRecord, LedgerUnreadable, NotYours, user_name
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
