"""Test hosts as Linux network namespaces: machines for the fleet tests that can really be cut off.

Each host is a network namespace with its own address and an sshd on port 22; the head (this test
process, the supervisor, the scheduler) stays in the root namespace on a bridge:

    root namespace                         namespace ccnt-<owner>h0       namespace ccnt-<owner>h1
    bridge ccnt-<owner>b 10.231.K.1/24     eth0 10.231.K.10/24, sshd:22   eth0 10.231.K.11/24, sshd:22
      |-- ccnt-<owner>v0 ==== veth ======= eth0                           |
      `-- ccnt-<owner>v1 ==== veth ========================================'

Usage (module scope: setup takes about 0.5 s for two hosts, teardown 0.1 s)::

    from netns import netns_fleet

    @pytest.fixture(scope="module")
    def fleet(tmp_path_factory):
        yield from netns_fleet(tmp_path_factory, hosts=2)   # skips (fails under CI=true) without root/ip/sshd

    def test_partition(cluster, fleet):
        h = fleet.hosts[0]
        hosts = fleet.host_yaml("ws1", h, sys.executable, cluster.root / "remote" / "ws1")
        ...  # cluster.yaml: scheduler: {host: fleet.head_address, ...}, tls: {enabled: true}, at: {ws1: 1}
        fleet.cut(h)        # silent partition: no FIN, no RST, no ICMP, on either side
        fleet.restore(h)
        fleet.kill_sshd(h); fleet.start_sshd(h)   # its sshd killed (sessions live on), then back
        fleet.reboot(h); fleet.start_sshd(h)      # every process in the namespace killed, then sshd back

`with NetnsFleet(root, hosts=2) as fleet:` does the same outside pytest.

A host with its own process table (`own_pids=True`; the owner watcher's tests)::

    yield from netns_fleet(tmp_path_factory, hosts=1, own_pids=True)
    fleet.ssh(h, "ps -e")     # inside: its sshd is PID 1, /proc shows that namespace's processes only
    fleet.run(h, "ps", "-e")  # `ip netns exec` (run, popen, exec_argv) stays in the head's PID namespace

Each sshd then runs as `unshare --pid --fork --mount-proc --kill-child sshd ...` inside `ip netns exec`:
a PID namespace and a mount namespace with a /proc of its own. The head still sees every process
(`fleet.pids(host)`, psutil), by its head-side pid; `sshd_pid` is the sshd's (the `unshare` above it
is the Popen's). The sshd is that namespace's init: when it goes (`kill_sshd`, `reboot`, `close`), the
kernel kills every process of the host, sessions included, as a real reboot would.

Choices:
- One bridge rather than a veth pair per host with routing: one head address for every host, hosts
  reach each other (Dask workers fetch data from each other) at layer 2, and the root namespace needs
  no forwarding (net.ipv4.ip_forward stays as it is: nothing from a namespace reaches another network;
  no namespace has a default route). K is chosen, under a lock, so 10.231.K.0/24 overlaps no address
  or route of this machine nor another live fleet.
- `cut(host)` sets the root-side end of the host's veth down: the bridge drops every frame both ways and
  the namespace's eth0 only loses carrier, so sockets on both sides see silence. Neighbour (ARP) entries
  are permanent, so no side ever gets a local "No route to host" either: an established connection just
  stops moving, a new connect times out, as when a cable between two switches is pulled. (Downing eth0
  inside the namespace is not as silent: there, connect() fails at once with "Network is unreachable".)
  After `restore`, TCP delivers what was queued at its next retransmission (up to RTO, seconds).
- sshd probes a silent client every 5 s but never gives up on one (ClientAliveCountMax 1000): a cut
  does not end a session on the far side, and a session whose client went during a cut ends at the first
  probe after `restore` (the client's kernel answers with a reset).
- Namespaces share the process table and the filesystem with the root namespace; only the network
  differs (unless `own_pids`, above: then a host's sessions see a process table of their own). psutil
  sees the "remote" processes: find them by their cwd (the host's workdir) or with `fleet.pids(host)`
  (every process in that namespace).
- Names are `ccnt-<pid base 36>-<serial><b|hN|vN>` (at most 15 characters, the limit of an interface
  name); /run/clusterctl-netns/<owner>.json records the owner's start time. `sweep_stale()` removes
  only such names whose owner process is gone (it runs before every setup).
"""

from __future__ import annotations

import atexit
import fcntl
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil

import sshd as sshd_helper

PREFIX = "ccnt-"  # clusterctl netns test: the marker of every name this module creates
NAME_RE = re.compile(r"^ccnt-([0-9a-z]{1,5})-([0-9a-z])(b|h\d{1,2}|v\d{1,2})$")
STATE_DIR = Path("/run/clusterctl-netns")
SUPERNET = "10.231"
SSH_PORT = 22
_serials = itertools.count()
_open: weakref.WeakSet = weakref.WeakSet()


class NetnsUnavailable(Exception):
    """Why no namespace fleet can be built here (no root, no `ip`, no sshd, no netns support)."""


@dataclass(frozen=True)
class NetnsHost:
    index: int
    netns: str  # the namespace's name (for `ip netns exec`)
    address: str  # its eth0 address; its sshd listens there on port 22
    veth: str  # the root-side end of its veth, a port of the bridge: what `cut` sets down
    mac: str


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def _ip(*args: str, stdin: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({res.returncode}): {res.stderr.strip()[-400:]}\n{stdin or ''}")
    return res


def check_preconditions(own_pids: bool = False) -> None:
    """Raise NetnsUnavailable unless root, `ip`, /usr/sbin/sshd, ssh and ssh-keygen (and, for hosts with
    their own PID namespace, `unshare`) are here."""
    if not sys.platform.startswith("linux"):
        raise NetnsUnavailable("network namespaces need Linux")
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")
    if not shutil.which("ip"):
        raise NetnsUnavailable("`ip` (iproute2) is missing")
    try:
        sshd_helper.ensure_installed()
    except sshd_helper.SshdUnavailable as e:
        raise NetnsUnavailable(str(e)) from None
    if not shutil.which("ssh-keygen"):
        raise NetnsUnavailable("ssh-keygen is missing")
    if own_pids and not shutil.which("unshare"):
        raise NetnsUnavailable("`unshare` (util-linux) is missing")


# -- ownership, leftovers ------------------------------------------------------------------------

class _Lock:
    """An exclusive lock over choosing subnets and sweeping, shared by every process on this machine."""

    def __enter__(self):
        STATE_DIR.mkdir(mode=0o700, exist_ok=True)
        self.fd = os.open(STATE_DIR / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the lock


def _marker(owner: str) -> Path:
    return STATE_DIR / f"{owner}.json"


def _read_marker(owner: str) -> dict | None:
    try:
        return json.loads(_marker(owner).read_text())
    except (OSError, ValueError):
        return None


def _owner_alive(owner: str) -> bool:
    try:
        proc = psutil.Process(int(owner.split("-")[0], 36))
        started = proc.create_time()
    except (psutil.Error, ValueError):
        return False
    marker = _read_marker(owner)
    return marker is None or abs(marker.get("create_time", 0) - started) < 0.01


def _our_names() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """({owner: namespaces}, {owner: links}) of every name this module made, live or stale."""
    spaces: dict[str, list[str]] = {}
    links: dict[str, list[str]] = {}
    for line in _ip("netns", "list").stdout.splitlines():
        if line.split() and (m := NAME_RE.match(line.split()[0])):
            spaces.setdefault(f"{m[1]}-{m[2]}", []).append(line.split()[0])
    for line in _ip("-o", "link").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if m := NAME_RE.match(name):
            links.setdefault(f"{m[1]}-{m[2]}", []).append(name)
    return spaces, links


def _kill_namespace_processes(netns: str) -> list[str]:
    """SIGKILL every process in the namespace (bounded rounds: one may fork meanwhile)."""
    killed = []
    for _ in range(5):
        res = _ip("netns", "pids", netns, check=False)
        procs = []
        for pid in res.stdout.split():
            try:
                p = psutil.Process(int(pid))
                killed.append(f"{p.pid} {' '.join(p.cmdline())[:160]}")
                p.kill()
                procs.append(p)
            except psutil.Error:
                pass
        if not procs:
            break
        psutil.wait_procs(procs, timeout=5)
    return killed


def _delete(spaces: list[str], links: list[str]) -> None:
    for netns in spaces:
        _kill_namespace_processes(netns)
    links = sorted(links, key=lambda n: n.endswith("b"))  # veths first, then the bridge
    cmds = [f"link del {n}" for n in links] + [f"netns del {n}" for n in spaces]
    if cmds:
        _ip("-force", "-batch", "-", stdin="\n".join(cmds) + "\n", check=False)


def _sweep_unlocked() -> list[str]:
    spaces, links = _our_names()
    removed = []
    for owner in sorted(set(spaces) | set(links)):
        if not _owner_alive(owner):
            _delete(spaces.get(owner, []), links.get(owner, []))
            _marker(owner).unlink(missing_ok=True)
            removed += spaces.get(owner, []) + links.get(owner, [])
    for path in STATE_DIR.glob("*.json"):  # markers of dead owners that left no name behind
        if not _owner_alive(path.stem):
            path.unlink(missing_ok=True)
    return removed


def sweep_stale() -> list[str]:
    """Remove namespaces and links of earlier fleets whose owner died (e.g. SIGKILLed); return their names.

    Only names matching NAME_RE (prefix `ccnt-` plus the owner's pid) are ever touched, and a live
    owner's fleet is left alone."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return []
    with _Lock():
        return _sweep_unlocked()


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in _ip("-o", "-4", "addr").stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("local", "broadcast", "unicast", "unreachable", "blackhole", "prohibit",
                                  "throw", "multicast", "anycast", "nat"):
            parts = parts[1:]
        if parts and parts[0] != "default":
            try:
                nets.append(ipaddress.ip_network(parts[0], strict=False))
            except ValueError:
                pass
    for path in STATE_DIR.glob("*.json"):
        if (m := _read_marker(path.stem)) and m.get("subnet"):
            nets.append(ipaddress.ip_network(m["subnet"]))
    return nets


def _choose_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    start = os.getpid() % 256
    for k in range(256):
        net = ipaddress.ip_network(f"{SUPERNET}.{(start + k) % 256}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsUnavailable(f"every {SUPERNET}.K.0/24 overlaps an address or route of this machine")


# -- the fleet -------------------------------------------------------------------------------------

class NetnsFleet:
    """N namespaces on one bridge, each with an sshd (see the module's doc). A context manager."""

    user = "root"
    port = SSH_PORT

    def __init__(self, root: Path, hosts: int = 2, own_pids: bool = False):
        if not 1 <= hosts <= 99:
            raise ValueError(f"hosts must be 1..99, not {hosts}")
        self.root = Path(root)
        self.count = hosts
        self.own_pids = own_pids  # each host's sshd in a PID namespace with its own /proc (see the module's doc)
        self.owner = f"{_b36(os.getpid())}-{_b36(next(_serials) % 36)}"
        self.bridge = f"{PREFIX}{self.owner}b"
        self.hosts: list[NetnsHost] = []
        self.head_address = ""
        self.subnet = ""
        self.leftovers: list[str] = []  # "PID CMDLINE" of processes outside the sshds' trees close() killed
        self._sshds: list[sshd_helper.Sshd] = []
        self._started = False

    # lifecycle
    def __enter__(self) -> NetnsFleet:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        check_preconditions(self.own_pids)
        self._started = True
        _open.add(self)
        try:
            self._create_network()
            self._start_sshds()
        except BaseException:
            self.close()
            raise

    def _create_network(self) -> None:
        with _Lock():
            _sweep_unlocked()
            net = _choose_subnet()
            k = int(str(net.network_address).split(".")[2])
            self.subnet = str(net)
            self.head_address = str(net.network_address + 1)
            self.hosts = [NetnsHost(i, f"{PREFIX}{self.owner}h{i}", str(net.network_address + 10 + i),
                                    f"{PREFIX}{self.owner}v{i}", f"02:cc:00:{k:02x}:00:{10 + i:02x}")
                          for i in range(self.count)]
            _marker(self.owner).write_text(json.dumps(
                {"pid": os.getpid(), "create_time": psutil.Process().create_time(), "subnet": self.subnet}))
            bridge_mac = f"02:cc:00:{k:02x}:00:01"  # fixed: a bridge otherwise takes its ports' lowest MAC
            cmds = [f"netns add {h.netns}" for h in self.hosts]
            cmds += [f"link add {self.bridge} type bridge", f"link set {self.bridge} address {bridge_mac} addrgenmode none",
                     f"addr add {self.head_address}/24 dev {self.bridge}"]
            for h in self.hosts:
                cmds += [f"link add {h.veth} type veth peer name eth0 address {h.mac} netns {h.netns}",
                         f"link set {h.veth} addrgenmode none master {self.bridge} up",
                         f"neigh replace {h.address} lladdr {h.mac} dev {self.bridge} nud permanent"]
            cmds.append(f"link set {self.bridge} up")
            try:
                _ip("-batch", "-", stdin="\n".join(cmds) + "\n")
            except RuntimeError as e:
                if "Operation not permitted" in str(e):
                    raise NetnsUnavailable(f"cannot create network namespaces here: {str(e).splitlines()[0]}") from None
                raise
        for h in self.hosts:
            cmds = ["link set lo up", "link set eth0 addrgenmode none", f"addr add {h.address}/24 dev eth0",
                    "link set eth0 up", f"neigh replace {self.head_address} lladdr {bridge_mac} dev eth0 nud permanent"]
            cmds += [f"neigh replace {o.address} lladdr {o.mac} dev eth0 nud permanent" for o in self.hosts if o is not h]
            _ip("-n", h.netns, "-batch", "-", stdin="\n".join(cmds) + "\n")

    def _start_sshds(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        keygens = [subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.root / key)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for key in ("host_key", "client_key") if not (self.root / key).exists()]
        if any(p.wait(timeout=30) for p in keygens):
            raise RuntimeError("ssh-keygen failed")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for h in self.hosts:
            config = self.root / f"sshd_config.h{h.index}"
            config.write_text(
                f"Port {SSH_PORT}\nListenAddress {h.address}\nHostKey {self.root / 'host_key'}\n"
                f"PidFile {self.root / f'sshd.h{h.index}.pid'}\nAuthorizedKeysFile {self.root / 'client_key.pub'}\n"
                "PermitRootLogin yes\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nMaxSessions 100\nMaxStartups 100\n"
                "ClientAliveInterval 5\nClientAliveCountMax 1000\n" + sshd_helper.SHARED_HOME)
            self._sshds.append(self._spawn_sshd(h, "wb"))
        deadline = time.monotonic() + 10
        for h, d in zip(self.hosts, self._sshds):
            self._wait_listening(h, d, deadline)
        probes = [subprocess.Popen(self.ssh_argv(h, "true"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True) for h in self.hosts]
        for h, p in zip(self.hosts, probes):
            _, err = p.communicate(timeout=20)
            if p.returncode != 0:
                raise RuntimeError(f"ssh into {h.netns} ({h.address}) failed: {err.strip()[-300:]}")

    def _spawn_sshd(self, h: NetnsHost, mode: str) -> sshd_helper.Sshd:
        """The host's sshd (config written by _start_sshds), started inside its namespace; log opened with ``mode``."""
        config = self.root / f"sshd_config.h{h.index}"
        # own_pids: unshare forks sshd as the new namespace's PID 1 and waits for it; killed, it SIGKILLs it
        pidns = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child") if self.own_pids else ()
        with open(self.root / f"sshd.h{h.index}.log", mode) as log:
            popen = subprocess.Popen(self.exec_argv(h, *pidns, sshd_helper.SSHD, "-D", "-e", "-f", str(config)),
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return sshd_helper.Sshd(root=self.root, port=SSH_PORT, addresses=(h.address,), popen=popen, user=self.user)

    def _wait_listening(self, h: NetnsHost, d: sshd_helper.Sshd, deadline: float) -> None:
        while True:
            if d.popen.poll() is not None:
                log = (self.root / f"sshd.h{h.index}.log").read_text()[-500:]
                raise RuntimeError(f"sshd in {h.netns} exited {d.popen.returncode}: {log}")
            try:
                with socket.create_connection((h.address, SSH_PORT), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd in {h.netns} did not listen on {h.address}:{SSH_PORT}") from None
                time.sleep(0.02)

    # faults of a whole host (scripts/chaos --fleet): an sshd killed and started again, a "reboot"
    def sshd_running(self, host) -> bool:
        return self._sshds[self.host(host).index].popen.poll() is None

    def kill_sshd(self, host) -> int | None:
        """SIGKILL the host's sshd (the listener only: open sessions live on, as after `kill -9` of a real
        sshd; with own_pids the sessions go too: see the module's doc); its pid, or None when it was not
        running."""
        d = self._sshds[self.host(host).index]
        if d.popen.poll() is not None:
            return None
        pid = self.sshd_pid(host)  # (own_pids: the sshd below the `unshare`, which SIGKILLs it as it dies)
        d.popen.kill()
        d.popen.wait(timeout=10)
        return pid

    def start_sshd(self, host, timeout: float = 10) -> int:
        """Start the host's sshd again (after kill_sshd or reboot; no-op while it runs) and wait until it
        listens (it may not be reachable from here if the host is cut: then it only waits for it to bind)."""
        h = self.host(host)
        d = self._sshds[h.index]
        if d.popen.poll() is None:
            return d.popen.pid
        d = self._sshds[h.index] = self._spawn_sshd(h, "ab")
        deadline = time.monotonic() + timeout
        if self.is_cut(h):
            while d.popen.poll() is None and not self._listens_inside(h) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            self._wait_listening(h, d, deadline)
        return d.popen.pid

    def _listens_inside(self, h: NetnsHost) -> bool:
        res = self.run(h, "ss", "-Hltn", f"sport = :{SSH_PORT}", timeout=10)
        return bool(res.stdout.strip())

    def reboot(self, host) -> list[str]:
        """Kill every process in the host's namespace (its sshd, sessions, and whatever they started), as a
        power cut would; "PID CMDLINE" of each. Start its sshd again with start_sshd."""
        h = self.host(host)
        killed = _kill_namespace_processes(h.netns)
        d = self._sshds[h.index]
        try:
            d.popen.wait(timeout=10)  # reaped: it was a child of this process
        except subprocess.TimeoutExpired:
            d.popen.kill()
            d.popen.wait(timeout=10)
        return killed

    def close(self) -> None:
        """Stop every sshd (with its tree), kill whatever else runs in the namespaces, delete everything.

        Idempotent; SIGINT is held off meanwhile (a Ctrl-C here would leave half a fleet)."""
        if not self._started:
            return
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            for d in self._sshds:
                if d.popen.poll() is None:  # one killed by kill_sshd or reboot is reaped: its pid may be reused
                    _stop_tree(d.popen.pid)
                d.popen.wait(timeout=10)
            for h in self.hosts:
                self.leftovers += _kill_namespace_processes(h.netns)
            with _Lock():
                spaces, links = _our_names()
                _delete(spaces.get(self.owner, []), links.get(self.owner, []))
                _marker(self.owner).unlink(missing_ok=True)
            self._started = False
            _open.discard(self)
        finally:
            if main:
                signal.signal(signal.SIGINT, old)

    # addressing hosts
    def host(self, h: NetnsHost | int | str) -> NetnsHost:
        """A host by itself, its index, its namespace's name or its address."""
        if isinstance(h, NetnsHost):
            return h
        if isinstance(h, int):
            return self.hosts[h]
        for x in self.hosts:
            if h in (x.netns, x.address):
                return x
        raise KeyError(f"no host {h!r} in this fleet")

    @property
    def client_key(self) -> Path:
        return self.root / "client_key"

    def host_yaml(self, name: str, host: NetnsHost | int | str, python: str = sys.executable,
                  workdir: Path | str = "") -> str:
        """One `hosts:` entry of cluster.yaml for that namespace (address, port 22, root, key, options)."""
        h = self.host(host)
        return self._sshds[h.index].host_yaml(name, h.address, python, Path(workdir or self.root / f"wd{h.index}"))

    def ssh_argv(self, host: NetnsHost | int | str, *command: str, options: tuple[str, ...] = ()) -> list[str]:
        """`ssh` into the host as its cluster.yaml entry would; `options` adds `-o Key=Value`s."""
        argv = ["ssh", "-T", "-o", "BatchMode=yes", "-i", str(self.client_key), "-p", str(SSH_PORT), "-l", self.user]
        for o in (*sshd_helper.CLIENT_OPTIONS, *options):
            argv += ["-o", o]
        return [*argv, self.host(host).address, *command]

    def ssh(self, host, *command: str, timeout: float = 20, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        return subprocess.run(self.ssh_argv(host, *command, options=options), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    # inside a namespace
    def exec_argv(self, host, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.host(host).netns, *argv]

    def run(self, host, *argv: str, timeout: float = 30, check: bool = False, **kw) -> subprocess.CompletedProcess:
        """Run a command inside the host's namespace (same files and processes, its network only)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.exec_argv(host, *argv), timeout=timeout, check=check, **kw)

    def popen(self, host, *argv: str, **kw) -> subprocess.Popen:
        """Start a command inside the namespace (`ip netns exec` execs it: the Popen's pid is the command's)."""
        return subprocess.Popen(self.exec_argv(host, *argv), **kw)

    def pids(self, host) -> list[int]:
        """Every process in the host's namespace: its sshd, sessions, and whatever they started."""
        return [int(p) for p in _ip("netns", "pids", self.host(host).netns).stdout.split()]

    def sshd_pid(self, host) -> int:
        """The host's sshd, by its pid here (own_pids: the child of the `unshare` the Popen runs)."""
        pid = self._sshds[self.host(host).index].popen.pid
        if self.own_pids:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    kids = psutil.Process(pid).children()
                except psutil.Error:
                    break
                if kids:
                    return kids[0].pid
                time.sleep(0.02)
        return pid

    # partitions
    def cut(self, host) -> None:
        """A silent partition of the host from everyone: its bridge port goes down (see the module's doc)."""
        _ip("link", "set", self.host(host).veth, "down")

    def restore(self, host) -> None:
        h = self.host(host)
        _ip("link", "set", h.veth, "up")
        state = Path(f"/sys/class/net/{h.veth}/brport/state")  # 3: forwarding (immediate without STP)
        deadline = time.monotonic() + 5
        while state.read_text().strip() != "3" and time.monotonic() < deadline:
            time.sleep(0.02)

    def is_cut(self, host) -> bool:
        flags = int(Path(f"/sys/class/net/{self.host(host).veth}/flags").read_text(), 16)
        return not flags & 0x1  # IFF_UP


def _stop_tree(pid: int, grace: float = 3) -> None:
    """SIGTERM a process and all its descendants, SIGKILL what is left after `grace` seconds."""
    try:
        top = psutil.Process(pid)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


@atexit.register
def _close_open_fleets() -> None:  # a backstop: a fixture that was never finalized
    for fleet in list(_open):
        if fleet.owner.split("-")[0] != _b36(os.getpid()):
            continue  # a forked child: the fleet is its parent's
        try:
            fleet.close()
        except Exception:
            pass


def netns_fleet(tmp_path_factory, hosts: int = 2, own_pids: bool = False) -> Iterator[NetnsFleet]:
    """A pytest fixture's body: `yield from netns_fleet(tmp_path_factory, hosts=2)` (`own_pids=True`: each
    host with its own PID namespace and /proc, see the module's doc).

    Missing root, `ip`, sshd, netns support (or `unshare`, for own_pids) skips the tests (fails them
    under CI=true)."""
    from conftest import missing_tool

    fleet = NetnsFleet(tmp_path_factory.mktemp("netns"), hosts=hosts, own_pids=own_pids)
    try:
        fleet.start()
    except NetnsUnavailable as e:
        missing_tool(f"no network-namespace hosts: {e}")
    try:
        yield fleet
    finally:
        fleet.close()
