"""Shared fixtures: free ports, temp topologies, the real CLI, and a guarantee of cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

CLI = [sys.executable, "-m", "clusterctl"]
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_tool(reason: str) -> None:
    """Skip a test whose tool (Chromium, sshd, ip) is missing here; under CI (CI=true) fail instead:
    .ci/run installs those tools, so their absence there is a broken install, not a pass."""
    if UNDER_CI:
        pytest.fail(f"CI=true and a required tool is missing: {reason}", pytrace=False)
    pytest.skip(reason)


# The subset .ci/run runs again as an unprivileged user (scripts/test-unprivileged, issue 22): what a
# user without root must be able to do. Marked here rather than in the files, so that the list is one
# place. A file alone marks all its tests; a test id marks that test (every parametrization).
UNPRIVILEGED = (
    "tests/unit/test_config.py::test_unreadable_file",  # skips as root: chmod 000 binds only a user
    "tests/unit/test_tls.py::test_an_unreadable_ca_key_fails_naming_it",  # the same
    "tests/integration/test_lifecycle.py::test_up_status_run_down",
    "tests/integration/test_lifecycle.py::test_down_after_supervisor_sigkill",
    "tests/integration/test_supervision.py::test_sigkilled_worker_comes_back_registered",
    "tests/integration/test_supervision.py::test_sigkilled_scheduler_brings_everyone_back",
    "tests/integration/test_fleet.py::test_three_hosts_over_tls_run_and_down",  # the user's own sshd
    "tests/integration/test_fleet.py::test_killing_ssh_or_supervisor_leaves_no_remote_orphan",
    "tests/integration/test_systemd_unit.py",  # service install --user, its command run, systemd-analyze
    "tests/integration/test_supervised_cluster.py::test_tls_groups_and_shutdown_on_close_both_ways",
    "tests/integration/test_owner.py",  # the owner's watcher reads /proc as the user; pauses through Dask
)


def _unprivileged_only(config) -> bool:
    """`-m unprivileged` exactly (scripts/test-unprivileged): only the subset's files are collected
    and every test of it must run; a skip there is a failure under CI."""
    return (config.getoption("markexpr", "") or "").strip() == "unprivileged"


def pytest_ignore_collect(collection_path, config):
    if not _unprivileged_only(config) or collection_path.suffix != ".py" or collection_path.name == "conftest.py":
        return None
    wanted = {config.rootpath / entry.split("::")[0] for entry in UNPRIVILEGED}
    return None if collection_path in wanted else True


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by -m
def pytest_collection_modifyitems(config, items):
    found = set()
    for item in items:
        for entry in UNPRIVILEGED:
            if item.nodeid == entry or item.nodeid.startswith((entry + "::", entry + "[")):
                item.add_marker(pytest.mark.unprivileged)
                found.add(entry)
    if _unprivileged_only(config):
        collected = {item.nodeid.split("::")[0] for item in items}
        missing = [e for e in UNPRIVILEGED if e not in found
                   and (e.split("::")[0] in collected or not (config.rootpath / e.split("::")[0]).is_file())]
        if missing:
            raise pytest.UsageError(f"tests/conftest.py UNPRIVILEGED names tests that do not exist (renamed?): {', '.join(missing)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and UNDER_CI and _unprivileged_only(item.config) and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: the unprivileged run must run every test of its subset, this one skipped: {reason}"


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from _ports import free_port  # noqa: E402 - one picker for the tests and the scripts (below 32768)


@dataclass
class Cluster:
    """A topology in a temp directory, driven through the real CLI."""

    root: Path
    port: int
    dashboard_port: int
    name: str = "test"
    started: list = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "cluster.yaml"

    @property
    def state(self) -> Path:
        return self.root / "state" / self.name

    def write(self, workers: str | None = None, extra: str = "", scheduler_extra: str = "") -> Path:
        workers = workers or "  - name: default\n    count: 2\n    nthreads: 1\n"
        text = (
            f"name: {self.name}\n"
            f"state_dir: state\n"
            f"scheduler:\n  host: 127.0.0.1\n  port: {self.port}\n  dashboard_port: {self.dashboard_port}\n"
            + textwrap.indent(textwrap.dedent(scheduler_extra), "  ")
            + f"workers:\n{workers}"
            + "timeouts:\n  startup: 45\n  shutdown: 5\n"
            + extra
        )
        self.config.write_text(text)
        return self.config

    def cli(self, *args: str, timeout: float = 90, check: bool | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, COLUMNS="200", NO_COLOR="1", **(env or {}))
        env.pop("CLUSTERCTL_CONFIG", None)
        proc = subprocess.run(
            [*CLI, *args, "--file", str(self.config)],
            cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def ledger(self) -> dict:
        return json.loads((self.state / "ledger.json").read_text())

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)


def processes_under(root: Path) -> list[psutil.Process]:
    """Every live process whose command line or cwd mentions root: what a test must not leave."""
    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        if p.pid == me or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        if str(root) in cmd or (p.info["cwd"] or "").startswith(str(root)):
            found.append(p)
    return found


def kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


@pytest.fixture(scope="session", autouse=True)
def private_registry(tmp_path_factory):
    """The cluster registry (runtime/registry.py) in a temp dir for the whole session, for this
    process and every CLI it runs: tests never read nor write the real user's."""
    keys = ("XDG_STATE_HOME", "LOCALAPPDATA") if os.name == "nt" else ("XDG_STATE_HOME",)
    saved = {k: os.environ.get(k) for k in keys}
    state = tmp_path_factory.mktemp("xdg-state")
    for k in keys:
        os.environ[k] = str(state)
    yield state
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def cluster(tmp_path: Path):
    """A fresh topology on free ports; afterwards `down`, then force and report anything left."""
    c = Cluster(root=tmp_path, port=free_port(), dashboard_port=free_port())
    c.write()
    yield c
    if c.config.exists():
        try:
            c.cli("down", timeout=60)
        except subprocess.TimeoutExpired:
            pass
    left = processes_under(tmp_path)
    if left:
        desc = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in left if p.is_running()]
        kill_all(left)
        if desc:
            pytest.fail("processes left behind after the test:\n" + "\n".join(desc))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A private sshd on loopback (tests/sshd.py) playing the fleet's workstations."""
    import sshd as sshd_helper

    try:
        daemon = sshd_helper.start(tmp_path_factory.mktemp("sshd"))
    except sshd_helper.SshdUnavailable as e:
        missing_tool(f"no sshd for the fleet tests: {e}")
    yield daemon
    daemon.stop()


def load_script(path: Path, name: str | None = None):
    """A file of scripts/ as a module (they are not a package), registered in sys.modules under
    ``name`` (default: its stem) so that its dataclasses find their module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll until predicate() is truthy; fail (never hang) after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def bare_scheduler(tmp_path):
    """A plain-TCP Dask scheduler on a free loopback port, for tests of what starts workers
    (fork servers, agents) without a whole cluster; afterwards nothing may be left under tmp_path."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                             str(port), "--no-dashboard"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield f"tcp://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    left = processes_under(tmp_path)
    kill_all(left)
    assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "left behind"
