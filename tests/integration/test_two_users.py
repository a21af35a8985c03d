"""Two Unix users on one machine (issue 22, part 3), for real: an owner runs a cluster, an intruder,
another unprivileged account, tries to stop, change, list, use and shadow it.

Root is needed only to create the two throwaway users (useradd, removed by userdel afterwards) and to
run commands as them (setpriv, else runuser). Each has its own home under one /tmp directory (0711):
pytest's tmp_path is root's and 0700, out of their reach. The owner's home is 0755, as a lab's shared
directory would be, so that the intruder can read its cluster.yaml; the state directory beside it is
the owner's alone (0700). Both run this venv's clusterctl and python directly, or, when its
interpreter lives where they cannot enter (root's pyenv under a 0700 /root), a bridge venv in that
directory: a Python of the same version they can run, seeing this venv's packages (bridge_bin).

The attempts to run code (test_the_intruder_cannot_run_code) rely on TLS being on for loopback
clusters by default (issue 22, part 1).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from conftest import free_port, kill_all, missing_tool

pytestmark = [pytest.mark.integration, pytest.mark.skipif(sys.platform != "linux", reason="Unix users, /proc")]

BIN = Path(sys.executable).parent  # this venv's bin: clusterctl, dask, python
NAME = "shared"


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path
    bin: Path = BIN  # where the user's clusterctl and python are

    @property
    def config(self) -> Path:
        return self.home / "cluster.yaml"

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """argv as this user, in their home, with an environment of their own (never root's)."""
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "PATH": f"{self.bin}:/usr/bin:/bin",
               "LANG": "C.UTF-8", "COLUMNS": "200", "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        if shutil.which("setpriv"):
            prefix = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups"]
        else:
            prefix = ["runuser", "-u", self.name, "--"]
        # setpriv execs its command before its capabilities are gone, so that exec may reach what the
        # user cannot: a shell in between execs argv as the user alone.
        return subprocess.run([*prefix, "/bin/sh", "-c", 'exec "$0" "$@"', *argv], cwd=self.home, env=env,
                              capture_output=True, text=True, timeout=timeout)

    @property
    def python(self) -> str:
        return str(self.bin / "python")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run(str(self.bin / "clusterctl"), *args, timeout=timeout)

    def can_run(self, python: str | Path) -> bool:
        return self.run(str(python), "-c", "import clusterctl, distributed", timeout=60).returncode == 0

    def write_config(self, port: int, dashboard_port: int) -> Path:
        self.config.write_text(textwrap.dedent(f"""\
            name: {NAME}
            scheduler:
              host: 127.0.0.1
              port: {port}
              dashboard_port: {dashboard_port}
            workers:
              - name: default
                count: 2
                nthreads: 1
            timeouts:
              startup: 60
              shutdown: 5
            """))
        os.chown(self.config, self.uid, self.gid)
        self.config.chmod(0o644)
        return self.config

    def processes(self) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["uids", "status"]):
            if p.info["uids"] and p.info["uids"].real == self.uid and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p)
        return found


def add_user(base: Path, role: str) -> User:
    import pwd

    name = f"cc{role}{secrets.token_hex(3)}"  # unique: never an account of this machine's
    home = base / name
    home.mkdir(mode=0o755)
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--home-dir", str(home), "--shell", "/bin/sh",
                    name], check=True, capture_output=True, text=True, timeout=60)
    pw = pwd.getpwnam(name)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    home.chmod(0o755)
    return User(name, pw.pw_uid, pw.pw_gid, home)


def remove_user(user: User) -> None:
    """Every process of the user killed by pid (a user's processes are a tree of theirs only), then
    the account and its group."""
    kill_all(user.processes())
    subprocess.run(["userdel", user.name], capture_output=True, timeout=60)
    subprocess.run(["groupdel", user.name], capture_output=True, timeout=60)  # when userdel left it


def describe(user: User) -> list[str]:
    """The user's processes, one line each (those gone meanwhile left out)."""
    lines = []
    for p in user.processes():
        try:
            lines.append(f"{user.name} {p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            pass
    return lines


def bridge_bin(base: Path, user: User) -> Path:
    """This venv's bin when the user can run its python; else the bin of a venv made in ``base`` on a
    Python of this version that the user can run, with this venv's site-packages on its path and its
    clusterctl and dask scripts."""
    if user.can_run(BIN / "python"):
        return BIN
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = [p for p in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}")
             if os.path.exists(p) and user.run(p, "-c", "import venv", timeout=60).returncode == 0]
    if not found:
        missing_tool(f"the users cannot run {BIN / 'python'} ({os.path.realpath(BIN / 'python')}), "
                     f"nor a python{version} of their own")
    bridge = base / "venv"
    subprocess.run([found[0], "-m", "venv", "--without-pip", str(bridge)], check=True, capture_output=True, timeout=120)
    site = Path(sysconfig.get_paths()["purelib"])
    (bridge / "lib" / f"python{version}" / "site-packages" / "this-venv.pth").write_text(
        f"import site; site.addsitedir({str(site)!r})\n")
    for script in ("clusterctl", "dask"):
        body = (BIN / script).read_text().split("\n", 1)[1]
        (bridge / "bin" / script).write_text(f"#!{bridge / 'bin' / 'python'}\n{body}")
        (bridge / "bin" / script).chmod(0o755)
    if not user.can_run(bridge / "bin" / "python"):
        missing_tool(f"the users cannot run {bridge / 'bin' / 'python'} either")
    return bridge / "bin"


@pytest.fixture(scope="module")
def users():
    """(owner, intruder), the owner's cluster up; afterwards the owner's `down`, every process of
    either user killed by pid, both accounts deleted, nothing of theirs left running."""
    if os.geteuid() != 0:
        missing_tool("root is needed to create the two throwaway users")
    for tool in ("useradd", "userdel"):
        if not shutil.which(tool):
            missing_tool(f"no {tool}")
    if not (shutil.which("setpriv") or shutil.which("runuser")):
        missing_tool("neither setpriv nor runuser to run commands as another user")
    base = Path(tempfile.mkdtemp(prefix="clusterctl-two-users-", dir="/tmp"))
    base.chmod(0o711)
    made: list[User] = []
    failure: BaseException | None = None
    try:
        owner = add_user(base, "own")
        made.append(owner)
        intruder = add_user(base, "int")
        made.append(intruder)
        owner.bin = intruder.bin = bridge_bin(base, owner)
        owner.write_config(free_port(), free_port())
        up = owner.cli("up", "-f", str(owner.config))
        assert up.returncode == 0, f"the owner's up failed:\n{up.stdout}\n{up.stderr}"
        yield owner, intruder
    except BaseException as e:  # the set-up's failure (or the fixture closed): never masked below
        failure = e
        raise
    finally:
        left: list[str] = []
        if made:
            try:
                made[0].cli("down", "-f", str(made[0].config), timeout=90)
            except subprocess.TimeoutExpired:
                pass
        for user in made:
            left += describe(user)
            remove_user(user)
        shutil.rmtree(base, ignore_errors=True)
        if left:
            report = "processes left behind after the owner's down (killed since):\n" + "\n".join(left)
            if failure is None:
                pytest.fail(report, pytrace=False)
            failure.add_note(report)  # reported with the set-up's own failure, which propagates


def ledger(owner: User) -> dict:
    return json.loads((owner.home / ".clusterctl" / NAME / "ledger.json").read_text())  # root reads it


def pids(record: dict) -> list[int]:
    return sorted([p["pid"] for p in record["processes"]] + [record["supervisor"]["pid"]])


def one_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode != 0, f"it succeeded:\n{res.stdout}"
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["down"], ["scale", "3"], ["restart", "default-1"],
                                     ["apply", "--allow-restart"], ["up"]], ids=lambda c: c[0])
def test_the_intruder_cannot_stop_or_change_the_owners_cluster(users, command):
    owner, intruder = users
    before = ledger(owner)
    res = intruder.cli(*command, "-f", str(owner.config))
    state = owner.home / ".clusterctl" / NAME
    assert one_line(res) == (f"error: {state} belongs to {owner.name} (uid {owner.uid}): another user's cluster "
                             "is neither read nor changed by you")
    st = owner.cli("status", "--json", "-f", str(owner.config))
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["state"] == "running"
    after = ledger(owner)
    assert pids(after) == pids(before) and all(psutil.pid_exists(p) for p in pids(after))
    assert [p["restarts"] for p in after["processes"]] == [p["restarts"] for p in before["processes"]]
    assert len(after["processes"]) == 3  # the scheduler and two workers: not scaled
    assert not list(state.glob("ledger.json.*")), "nothing set aside"


def test_each_user_lists_only_their_own_clusters(users):
    owner, intruder = users
    mine = owner.cli("list", "--json")
    assert mine.returncode == 0, mine.stderr
    assert [c["name"] for c in json.loads(mine.stdout)["clusters"]] == [NAME]
    theirs = intruder.cli("list", "--json")
    assert theirs.returncode == 0, theirs.stderr
    assert json.loads(theirs.stdout) == {"clusters": [], "pruned": []}
    plain = intruder.cli("list")
    assert plain.returncode == 0 and str(owner.home) not in plain.stdout + plain.stderr


ATTEMPTS = r'''
"""One way a local user might run code on the cluster, named by argv[1]. Prints one line: "ran as
uid N" or "got in: ..." when it got in; "refused: ..." when the server refused it (the connection
closed or reset during or right after connect, or the connect timed out against a listening server);
"broken: ..." for anything else (a TypeError, KeyError, ImportError...: the attempt itself is wrong,
which proves nothing), its traceback on stderr. One attempt per process: a Client whose start failed
may spoil the next one's."""
import asyncio, os, ssl, sys, traceback
from distributed import Client
from distributed.comm import connect
from distributed.comm.core import CommClosedError
from distributed.security import Security

try:
    from tornado.iostream import StreamClosedError
except ImportError:
    StreamClosedError = CommClosedError

attempt, scheduler, worker, config = sys.argv[1:5]

# The server hung up on us: during the TLS handshake, or on the first message after it.
CLOSED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, EOFError, ssl.SSLError, CommClosedError,
          StreamClosedError)


def chain(e):
    """e, what it was raised from or during, and a StreamClosedError's real error, recursively."""
    seen = []
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__ or getattr(e, "real_error", None)
    return seen


def refusal(e):
    """How ``e`` is the server's refusal, or None when it is anything else (nothing listening there
    is no refusal: the attempt went to the wrong place)."""
    if any(isinstance(x, ConnectionRefusedError) for x in chain(e)):
        return None
    if isinstance(e, CLOSED):
        return "closed"
    if type(e) is OSError and str(e).startswith("Timed out trying to connect"):
        cause = e.__cause__
        # every try reset, closed or unanswered; a ConnectionRefusedError means nothing listens there
        if cause is None or isinstance(cause, CLOSED) or isinstance(cause, (asyncio.TimeoutError, TimeoutError)):
            return "connect timed out"
    return None


def tls_context(cert=None, key=None):
    """A TLS client context that believes any server and presents ``cert`` (none when None): only
    the server can refuse. The owner's control run presents the cluster's client certificate
    through the very same context and Security subclass that present none for the intruder."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class Presenting(Security):
    """Security whose connections use tls_context(cert, key)."""

    def __init__(self, cert=None, key=None):
        super().__init__(require_encryption=True)
        self.cert, self.key = cert, key

    def get_connection_args(self, role):
        args = super().get_connection_args(role)  # whatever this distributed expects, ...
        args["ssl_context"] = tls_context(self.cert, self.key)  # ... with our context
        return args


def through_scheduler(address, **kwargs):
    with Client(address, timeout=5, **kwargs) as client:
        return f"ran as uid {client.run_on_scheduler(os.getuid)}"


async def ask_worker(address, **connection_args):
    comm = await connect(address, timeout=5, **connection_args)
    try:
        await comm.write({"op": "identity", "reply": True})
        answer = await asyncio.wait_for(comm.read(), 5)
        return f"got in: the worker answered {sorted(answer)[:3]}"
    finally:
        comm.abort()


def straight_to_worker(address, **connection_args):
    return asyncio.run(ask_worker(address, **connection_args))


def tcp(address):
    return "tcp://" + address.split("://")[1]


def owners():
    """The cluster's own credentials, as the owner's scripts get them."""
    from clusterctl.client.connect import client_kwargs
    from clusterctl.topology import load_config

    return client_kwargs(load_config(config))


def owners_cert():
    security = owners()["security"]
    return security.tls_client_cert, security.tls_client_key


ATTEMPTS = {
    # The owner's controls: the cluster's Security as the owner's scripts use it, then the owner's
    # certificate through the helpers the intruder's attempts use.
    "owner's client": lambda: through_scheduler(scheduler, **owners()),
    "owner's worker": lambda: straight_to_worker(worker, **owners()["security"].get_connection_args("client")),
    "owner's client, helpers": lambda: through_scheduler(scheduler, security=Presenting(*owners_cert())),
    "owner's worker, helpers": lambda: straight_to_worker(worker, ssl_context=tls_context(*owners_cert())),
    # The intruder's. ("scheduler, tls without security" is not one: distributed's Client refuses a
    # tls:// address without security before it connects, which proves nothing about the cluster.)
    "scheduler, plain tcp": lambda: through_scheduler(tcp(scheduler)),
    "scheduler, tls without certificate": lambda: through_scheduler(scheduler, security=Presenting()),
    "worker, plain tcp": lambda: straight_to_worker(tcp(worker)),
    "worker, tls without certificate": lambda: straight_to_worker(worker, ssl_context=tls_context()),
}
try:
    print(ATTEMPTS[attempt]())
except Exception as e:
    why = refusal(e)
    said = f"{type(e).__name__}: {str(e)[:200]}"
    if e.__cause__ is not None:
        said += f" (from {type(e.__cause__).__name__}: {str(e.__cause__)[:200]})"
    if why:
        print(f"refused: {why}: {said}")
    else:
        traceback.print_exc()
        print(f"broken: {said}")
'''
INTRUSIONS = ["scheduler, plain tcp", "scheduler, tls without certificate", "worker, plain tcp",
              "worker, tls without certificate"]


def attempt(user: User, script: Path, how: str, scheduler: str, worker: str, config: str = "") -> tuple[str, str]:
    """What the attempt printed last (see ATTEMPTS), with its stderr (a traceback when broken)."""
    res = user.run(user.python, str(script), how, scheduler, worker, config, timeout=60)  # hung: TimeoutExpired
    assert res.returncode == 0 and res.stdout.strip(), f"{how}: exited {res.returncode}\n{res.stderr}"
    return res.stdout.strip().splitlines()[-1], res.stderr


@pytest.mark.timeout(600)
def test_the_intruder_cannot_run_code(users):
    owner, intruder = users
    record = ledger(owner)
    scheduler = record["scheduler"]["address"]
    worker = next(p["address"] for p in record["processes"] if p["role"] == "worker" and p.get("address"))
    assert scheduler.startswith("tls://") and worker.startswith("tls://"), "TLS is on for a loopback cluster by default"
    script = intruder.home / "attempts.py"
    script.write_text(ATTEMPTS)
    script.chmod(0o644)

    # The owner, as a control: the same script with the cluster's credentials gets in, also through
    # the helpers the intruder's attempts use, so that the refusals below are the cluster's doing, not
    # the script's (a helper broken on another distributed version fails here, not "refused" below).
    config = str(owner.config)
    for how in ("owner's client", "owner's client, helpers"):
        said, err = attempt(owner, script, how, scheduler, worker, config)
        assert said == f"ran as uid {owner.uid}", f"{how}: {said}\n{err}"
    for how in ("owner's worker", "owner's worker, helpers"):
        said, err = attempt(owner, script, how, scheduler, worker, config)
        assert said.startswith("got in: "), f"{how}: {said}\n{err}"

    got = {how: attempt(intruder, script, how, scheduler, worker) for how in INTRUSIONS}
    broken = {how: f"{said}\n{err}" for how, (said, err) in got.items() if said.startswith("broken: ")}
    assert not broken, "attempts that failed on their own, not refused by the cluster:\n" + "\n".join(
        f"{how}: {said}" for how, said in broken.items())
    opened = {how: said for how, (said, _) in got.items() if not said.startswith("refused: ")}
    assert not opened, f"the intruder got in: {opened}"


def test_the_intruders_up_on_the_owners_port_names_the_owner_and_the_way_out(users):
    owner, intruder = users
    taken = int(ledger(owner)["scheduler"]["address"].rsplit(":", 1)[1])
    config = intruder.write_config(taken, free_port())
    res = intruder.cli("up", "-f", str(config))
    assert one_line(res) == (f"error: scheduler port 127.0.0.1:{taken} is already in use by {owner.name} "
                             f"(uid {owner.uid}); it is not yours to stop: choose another port in {config} "
                             "(`port: 0` picks a free one)")
    deadline = time.monotonic() + 15  # `up` failed: nothing of the intruder's may run on
    while intruder.processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert intruder.processes() == []
