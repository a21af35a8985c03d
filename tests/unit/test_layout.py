"""The package's shape, checked: folders are layers and nothing imports upward.

errors < topology < plan < runtime < remote < supervisor, jobs < client < cli
(a module may import its own layer and any lower one; nothing imports cli/).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "clusterctl"
LAYERS = {
    "errors": 0, "topology": 1, "plan": 2, "runtime": 3, "remote": 4,
    "supervisor": 5, "jobs": 5, "client": 6, "cli": 7, "__init__": 8, "__main__": 8,
}
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300


def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py"))


def top(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def imported_tops(path: Path, own: list[str] | None = None) -> set[str]:
    """The first package folder below clusterctl of every clusterctl import in the module
    (``own``: the module's folders below clusterctl, when it does not live there)."""
    tree = ast.parse(path.read_text())
    own = list(path.relative_to(PKG).parent.parts) if own is None else own
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = own[: len(own) - (node.level - 1)] if node.level > 1 else own
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # `from . import x` at the package root
                    parts = [node.names[0].name]
            elif node.module and node.module.startswith("clusterctl"):
                parts = node.module.split(".")[1:] or [node.names[0].name]
            else:
                continue
            found.add(parts[0] if parts else "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("clusterctl."):
                    found.add(alias.name.split(".")[1])
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_no_import_runs_up_a_layer(path):
    mine = top(path)
    for other in imported_tops(path):
        assert other in LAYERS, f"{other!r} is not a known layer"
        assert other != "cli" or mine in ("cli", "__main__"), f"{path.name}: nothing outside cli/ imports cli/"
        assert LAYERS[other] <= LAYERS[mine], f"{path.relative_to(PKG)} imports {other}/, a higher layer"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_modules_and_classes_stay_short(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name} has {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"class {node.name} has {size} lines"


def test_the_checker_sees_a_real_upward_import(tmp_path):
    """The layering test can fail: the checker itself finds a plan module importing the supervisor."""
    assert "supervisor" not in imported_tops(PKG / "plan" / "specs.py")
    fake = tmp_path / "x.py"
    fake.write_text("from ..supervisor import loop\nfrom ..errors import ClusterError\nimport clusterctl.cli\n")
    assert imported_tops(fake, own=["plan"]) == {"supervisor", "errors", "cli"}


def supervisor_importers(pkg: Path = PKG) -> list[str]:
    """The modules of client/ and cli/ that import anything of supervisor/ (under TYPE_CHECKING too)."""
    return sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*.py")
                  if p.relative_to(pkg).parts[0] in ("client", "cli")
                  and "supervisor" in imported_tops(p, own=list(p.relative_to(pkg).parent.parts)))


def test_client_and_cli_import_nothing_from_the_supervisor():
    """Both ends share the vocabulary below them: states, the ledger's record, the control channel's
    requests and replies, what a previous run left (runtime/states.py, ledger.py, requests.py,
    replies.py, remains.py). The supervisor is started through its entry point (client/start.py),
    never imported: a client that imported it would load the whole supervisor for every command."""
    assert supervisor_importers() == [], "client/ and cli/ must not import supervisor/"


def test_the_checker_sees_a_client_importing_the_supervisor(tmp_path):
    for text in ("from ..supervisor.states import ChildState\n", "import clusterctl.supervisor.entry\n",
                 "from .. import supervisor\n", "from clusterctl.supervisor import main\n",
                 "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..supervisor import loop\n"):
        (tmp_path / "client").mkdir(exist_ok=True)
        (tmp_path / "client" / "x.py").write_text(text)
        assert supervisor_importers(tmp_path) == ["client/x.py"], text
    (tmp_path / "client" / "x.py").write_text("from ..runtime.states import ChildState\n"
                                              "entry = 'clusterctl.supervisor.entry'  # a name, found at run time\n")
    assert supervisor_importers(tmp_path) == []


def test_test_files_have_unique_basenames():
    """pytest imports test modules by basename: a second test_x.py aborts the whole collection."""
    tests = Path(__file__).resolve().parents[1]
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def reconciler_edits(path: Path) -> list[str]:
    """Where a module changes the Reconciler's state or reaches for its private parts: an assignment,
    augmented assignment or ``del`` whose target is reached through it (``core.x``, ``core.x[k]``,
    ``core.x[k].y``), ``setattr(core, ...)``, or any ``core._x``; ``core`` is a name bound to the
    Reconciler (``core``, a parameter typed ``Reconciler``, a name assigned ``sup.core`` or
    ``Reconciler(...)``) or an attribute ``.core``. (What a module does with a child it holds is
    that child's: ``c.state = ...`` is not seen.)"""
    tree = ast.parse(path.read_text())
    bound = {"core"}
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None and "Reconciler" in ast.unparse(node.annotation):
            bound.add(node.arg)
        if isinstance(node, ast.Assign) and (
                isinstance(node.value, ast.Attribute) and node.value.attr == "core"
                or isinstance(node.value, ast.Call) and ast.unparse(node.value.func).endswith("Reconciler")):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))

    def is_core(e: ast.expr) -> bool:
        return isinstance(e, ast.Name) and e.id in bound or isinstance(e, ast.Attribute) and e.attr == "core"

    def through_core(t: ast.expr) -> bool:
        if isinstance(t, (ast.Tuple, ast.List)):
            return any(through_core(x) for x in t.elts)
        if isinstance(t, ast.Starred):
            return through_core(t.value)
        while isinstance(t, (ast.Attribute, ast.Subscript)):
            if isinstance(t, ast.Attribute) and is_core(t.value):
                return True
            t = t.value
        return False

    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        if any(through_core(t) for t in targets):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "setattr" and node.args and is_core(node.args[0]):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Attribute) and is_core(node.value) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(set(found), key=lambda line: int(line.split(":")[0]))


@pytest.mark.parametrize("path", sorted((PKG / "supervisor").glob("*.py")), ids=lambda p: p.name)
def test_only_the_reconciler_changes_its_state(path):
    """The Reconciler owns its state (issue 21): health, authority, adaptive, rolling, applying, the
    commands and the Supervisor return decisions or edits it applies through its public methods
    (supervisor/edits.py), and set its callbacks once, at construction; nothing else assigns its
    attributes or calls its private methods."""
    if path.name == "reconcile.py":
        return
    assert reconciler_edits(path) == [], f"{path.name} changes the Reconciler's state or reaches for its privates"


def test_the_checker_sees_a_module_changing_the_reconciler(tmp_path):
    fake = tmp_path / "x.py"
    fake.write_text("def f(core, sup, c, r: 'Reconciler'):\n"
                    "    core.dirty = True\n"
                    "    sup.core.probe = None\n"
                    "    a, core.state = 1, 2\n"
                    "    core.children['x'] = c\n"
                    "    core.failure += 'x'\n"
                    "    core._failed(c, 0.0, None, 'why')\n"
                    "    r.dirty = False\n"
                    "    mine = sup.core\n"
                    "    mine.source = 'a.yaml'\n"
                    "    setattr(core, 'hooks', None)\n"
                    "    del core.fleet\n"
                    "    core.children['x'].tracker.policy = None\n")
    assert [line.split(":")[0] for line in reconciler_edits(fake)] == [str(n) for n in range(2, 14) if n != 9]
    fake.write_text("def f(core, c, x):\n"
                    "    c.state = 1\n"  # a child's own attribute
                    "    core.apply([])\n"
                    "    y = core.children['x'].state\n"
                    "    x[core.source] = 1\n"
                    "    core.adapter.set(None)\n")
    assert reconciler_edits(fake) == []
