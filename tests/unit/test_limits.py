"""Limits: the total worker cap, planning linear in the number of workers, privileged ports,
and hostile YAML that must end as a config or as one line (no processes)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterctl.errors import ClusterError, ConfigError
from clusterctl.plan.resolve import Launcher
from clusterctl.plan.specs import build_plan
from clusterctl.runtime import probes
from clusterctl.runtime.probes import PortDenied, port_in_use
from clusterctl.topology import ClusterConfig, WorkerGroup, parse_config
from clusterctl.topology import hosts as hosts_module
from clusterctl.topology.limits import DEFAULT_MAX_WORKERS, MAX_GROUP_WORKERS, MAX_WORKERS_CEILING

from conftest import free_port

DASK = Launcher(("/venv/bin/dask", "scheduler"), ("/venv/bin/dask", "worker"), "test")
HOSTS = "hosts:\n  - name: ws1\n    address: 127.0.0.2\n  - name: ws2\n    address: 127.0.0.3\n"


def groups(n: int, count: int, extra: str = "") -> str:
    return "workers:\n" + "".join(f"  - name: g{i}\n    count: {count}\n{extra}" for i in range(n))


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


# -- the total cap --------------------------------------------------------------------------------


def test_200_groups_of_1024_are_refused_naming_the_total_and_the_setting():
    text = "name: big\n" + groups(200, MAX_GROUP_WORKERS)
    assert len(text) < 7000  # a page of YAML must not ask for 204,800 processes
    start = time.perf_counter()
    msg = error(text)
    assert time.perf_counter() - start < 20  # refused without planning them (a deadline, not a benchmark)
    assert msg.startswith("<config>, line 2: workers: 204800 workers in all (200 groups)"), msg
    assert "max_workers, 4096" in msg and f"up to {MAX_WORKERS_CEILING}" in msg, msg


def test_the_default_cap_is_4096_and_max_workers_raises_it():
    assert parse_config(groups(4, 1024)).max_workers == DEFAULT_MAX_WORKERS == 4096
    msg = error(groups(5, 1000))
    assert "5000 workers in all (5 groups) is more than max_workers, 4096" in msg
    assert "raise `max_workers:` to 5000" in msg, msg
    cfg = parse_config("max_workers: 5000\n" + groups(5, 1000))
    assert cfg.max_workers == 5000 and sum(g.count for g in cfg.workers) == 5000
    assert "max_workers, 10" in error("max_workers: 10\n" + groups(1, 11))


def test_counts_given_by_at_count_towards_the_cap():
    text = "max_workers: 3\n" + HOSTS + "tls: {enabled: false}\nworkers:\n  - at: {ws1: 2, ws2: 2}\n"
    assert "4 workers in all (1 groups) is more than max_workers, 3" in error(text)


@pytest.mark.parametrize("value, words", [(0, "(got 0)"), (MAX_WORKERS_CEILING + 1, f"(got {MAX_WORKERS_CEILING + 1})"),
                                          ("lots", "'lots'"), ("true", "True")])
def test_max_workers_has_its_own_bounds(value, words):
    msg = error(f"name: x\nmax_workers: {value}\n")
    assert msg.startswith("<config>, line 2: max_workers:") and words in msg, msg
    if isinstance(value, int):
        assert f"from 1 to {MAX_WORKERS_CEILING}" in msg, msg


# -- planning is linear in the number of workers --------------------------------------------------


def planned(text: str) -> tuple[int, dict[str, int]]:
    """Plan a topology; count the Python calls it took and the calls of the old hot spots."""
    counts = {"calls": 0, "binds": 0, "placement": 0}
    binds = ClusterConfig.__dict__["_binds"]  # the cached_property behind binds(), exposed, tls_enabled
    real_binds, real_placement = binds.func, WorkerGroup.placement

    def counted_binds(self):
        counts["binds"] += 1
        return real_binds(self)

    def counted_placement(self, n=None):
        counts["placement"] += 1
        return real_placement(self, n)

    def profile(frame, event, arg):
        if event == "call":
            counts["calls"] += 1

    binds.func, WorkerGroup.placement = counted_binds, counted_placement
    sys.setprofile(profile)
    try:
        specs = build_plan(parse_config(text), DASK)
    finally:
        sys.setprofile(None)
        binds.func, WorkerGroup.placement = real_binds, real_placement
    return len(specs) - 1, counts


@pytest.mark.parametrize(
    "layout",
    [
        lambda n: groups(1, n),  # one big group
        lambda n: groups(n, 1),  # many groups: each worker must not walk every group
        lambda n: HOSTS + "tls: {enabled: true}\n" + groups(n // 2, 2, "    at: [ws1, ws2]\n"),  # remote, TLS
    ],
    ids=["one-group", "one-per-group", "remote-tls"],
)
def test_planning_grows_linearly_with_the_workers(layout):
    n = 256
    small, big = planned(layout(n)), planned(layout(2 * n))
    assert (small[0], big[0]) == (n, 2 * n)
    # Twice the workers may cost twice the work, plus a constant; the old code called binds()
    # (walking every group's placement) three times per worker: 4x the calls for 2x the workers.
    assert big[1]["calls"] <= 2.2 * small[1]["calls"] + 2000, (small, big)
    # binds() is computed once for the checks at load and once for the loaded copy, whatever N is.
    assert big[1]["binds"] == small[1]["binds"] <= 2, (small, big)
    assert big[1]["placement"] <= 2 * small[1]["placement"] + 2, (small, big)


def test_planning_the_cap_meets_a_deadline():
    text = groups(4, 1024)
    start = time.perf_counter()
    specs = build_plan(parse_config(text), DASK)
    assert len(specs) == 4097
    assert time.perf_counter() - start < 20  # catches a hang or a quadratic walk, not a benchmark


def test_validate_of_4096_workers_meets_a_deadline(tmp_path):
    p = tmp_path / "big.yaml"
    # An explicit limit: memory_limit: auto would divide this machine among 4096 workers, under the
    # floor a worker needs (plan/sizing.py), and validate would say so instead.
    p.write_text("name: big\n" + groups(4, 1024, "    memory_limit: 1GiB\n"))
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "clusterctl", "validate", "-f", str(p)],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert "4096 workers" in res.stdout.splitlines()[0]
    assert time.perf_counter() - start < 20


def test_cached_answers_follow_a_copy_with_other_fields(tmp_path):
    """Derived values are cached on the frozen model; a copy with `update=` must not reuse them."""
    cfg = parse_config("scheduler: {host: 127.0.0.1}\n", source=tmp_path / "cluster.yaml")
    assert not cfg.exposed and cfg.state_path == tmp_path.resolve() / ".clusterctl" / "clusterctl"
    wide = cfg.model_copy(update={"scheduler": cfg.scheduler.model_copy(update={"host": "10.0.0.1"}),
                                  "name": "other"})
    assert wide.exposed and wide.binds()[0][1] == "10.0.0.1"
    assert wide.state_path.name == "other"
    assert not cfg.exposed and cfg.state_path.name == "clusterctl"  # the original is untouched
    assert cfg.group("default") is cfg.workers[0] and cfg.host("localhost") is cfg.host("localhost")


def test_host_of_is_placement():
    g = parse_config(HOSTS + "tls: {enabled: true}\nworkers:\n  - at: {ws1: 2, ws2: 1}\n").workers[0]
    assert g.placement(7) == [g.host_of(i) for i in range(7)] == ["ws1", "ws1", "ws2", "ws1", "ws2", "ws1", "ws2"]
    assert g.hosts_used == ("ws1", "ws2")


# -- privileged ports ------------------------------------------------------------------------------


def as_user(uid: int, fn) -> str:
    """fn() in a forked child that dropped from root to `uid` (the real kernel rules); its text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here on, only os._exit
        code = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write, str(fn()).encode())
        except BaseException as e:  # noqa: BLE001 - reported through the pipe
            os.write(write, f"{type(e).__name__}: {e}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the child hung")
        time.sleep(0.02)
    with os.fdopen(read, "rb") as f:
        text = f.read().decode()
    assert os.WEXITSTATUS(status) == 0, text
    return text


def unprivileged(fn) -> str:
    """fn() as a user without root: this process if it is one, else a child that dropped root."""
    if sys.platform == "win32":
        pytest.skip("Windows has no privileged ports")
    if os.geteuid() == 0:
        return as_user(65534, fn)
    if hosts_module.first_unprivileged_port() <= 1:
        pytest.skip("this user may bind port 1 here (CAP_NET_BIND_SERVICE or a lowered sysctl)")
    return str(fn())


def probe_port_1() -> str:
    try:
        return "in use" if port_in_use("127.0.0.1", 1) else "free"
    except PortDenied as e:
        return f"denied: {e}"


def port_1_warnings() -> str:
    return " | ".join(parse_config("scheduler: {port: 1, dashboard_port: 8787}\n").warnings())


def test_port_1_without_root_is_denied_not_in_use():
    """The real kernel refusal, as an unprivileged user."""
    if hosts_module._read_int(hosts_module.UNPRIVILEGED_PORT_START, 1024) <= 1:
        pytest.skip("this kernel lets any user bind port 1 (net.ipv4.ip_unprivileged_port_start)")
    assert unprivileged(probe_port_1) == "denied: port 1 needs root (ports below 1024 are privileged)"


def test_validate_warns_that_port_1_needs_root_without_root():
    """The real rules (uid, capabilities, sysctl) as an unprivileged user."""
    limit = hosts_module._read_int(hosts_module.UNPRIVILEGED_PORT_START, 1024)
    if limit <= 1:
        pytest.skip("this kernel lets any user bind port 1 (net.ipv4.ip_unprivileged_port_start)")
    warning = unprivileged(port_1_warnings)
    assert warning.startswith(f"scheduler.port: port 1 needs root (ports below {limit} are privileged)"), warning
    assert "choose a port from" in warning and "such as 8786" in warning and " | " not in warning, warning


@pytest.mark.parametrize("uid, capable, start, warned", [
    (1000, False, 1024, True), (1000, False, 0, False), (1000, True, 1024, False), (0, False, 1024, False),
    (1000, False, 80, False),  # port 1 is below 80 but the ports checked are 1 and 8787: 1 < 80 warns
])
def test_privileged_port_rules(monkeypatch, uid, capable, start, warned):
    if not sys.platform.startswith("linux"):
        pytest.skip("the capability and sysctl rules are Linux's")
    monkeypatch.setattr(hosts_module.os, "geteuid", lambda: uid)
    monkeypatch.setattr(hosts_module, "_has_capability", lambda bit: capable)
    monkeypatch.setattr(hosts_module, "_read_int", lambda path, default: start)
    warnings = parse_config("scheduler: {port: 100, dashboard_port: 8787}\n").warnings()
    assert bool(warnings) == warned, warnings
    assert parse_config("scheduler: {port: 8786}\n").warnings() == []


def test_a_port_someone_listens_on_is_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert port_in_use("127.0.0.1", s.getsockname()[1])
    assert not port_in_use("127.0.0.1", free_port())
    assert not port_in_use("127.0.0.1", 0)


def test_port_denied_is_a_one_line_cluster_error(monkeypatch):
    class Refusing(socket.socket):
        def bind(self, address):
            raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(probes.socket, "socket", Refusing)
    with pytest.raises(PortDenied) as info:
        port_in_use("127.0.0.1", 5000)
    assert isinstance(info.value, ClusterError) and (info.value.host, info.value.port) == ("127.0.0.1", 5000)
    assert "\n" not in str(info.value) and "port 5000" in str(info.value)


# -- hostile YAML: a config or one ConfigError line, never another exception --------------------

KEYS = ["name", "count", "at", "nthreads", "memory_limit", "resources", "env", "nanny", "dashboard", "host",
        "restart", "policy", "port", "address", "bind", "hosts", "workers", "scheduler", "max_workers", "ssh",
        "tls", "enabled", "insecure", "timeouts", "startup", "ws1", "localhost", "<<", "python", "user"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["ws1", "localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0", "10.0.0.5", "auto", "4GiB",
                     "-oProxyCommand=x", "always", "", "a b", "1e9", "0x10"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=25)
group = st.dictionaries(st.sampled_from(KEYS[:11]) | keys, values, max_size=6)
document = st.fixed_dictionaries(
    {}, optional={
        "name": values, "scheduler": st.dictionaries(st.sampled_from(["host", "port", "dashboard_port", "at",
                                                                      "dashboard"]), values, max_size=4),
        "workers": st.lists(group, max_size=4) | values,
        "hosts": st.lists(st.dictionaries(st.sampled_from(["name", "address", "bind", "port", "ssh"]) | keys,
                                          values, max_size=5), max_size=3),
        "max_workers": values, "tls": values, "insecure": values,
    },
)


# Near-valid: each key with values a user might write, right or wrong, so that many examples
# validate and go on to be planned (fully random ones almost never do).
PLAUSIBLE_GROUP = {
    "name": ["a", "b", "default", "scheduler", "bad name", 5],
    "count": [1, 2, 3, 0, -1, 1024, 1025, True, "3", 2.5],
    "at": [None, "ws1", "localhost", ["ws1", "ws2"], ["ws2", "localhost"], {"ws1": 2}, {"ws1": 1, "ws2": 2},
           {"ws1": True}, {"ws1": 0}, [], {}, "nowhere", ["ws1", "ws1"], 5, [1]],
    "nthreads": [None, 1, 2, 0, "x"],
    "memory_limit": ["auto", "4GiB", 0.5, 0, "100kb", -1, True, "lots", 2e9],
    "host": [None, "127.0.0.1", "127.0.0.2", "10.0.0.5", "0.0.0.0", "::1", "[::1]", "a b", "localhost"],
    "env": [{}, {"A": 1}, {"": 1}, {"A": [1]}, {"A": None}],
    "resources": [{}, {"GPU": 1}, {"GPU": -1}, {"1x": 1}],
    "restart": [{}, {"policy": "never"}, {"policy": "x"}, {"max_retries": -1}],
    "nanny": [True, False, 1],
    "dashboard": [True, False, "yes"],
}
PLAUSIBLE_HOST = {
    "name": ["ws1", "ws2", "ws3", "localhost", "LOCALHOST", "bad name"],
    "address": ["127.0.0.2", "127.0.0.3", "10.0.0.5", "localhost", "[::1]", "localhost.", "-oProxyCommand=x", "ws1"],
    "bind": [None, "127.0.0.1", "10.0.0.6", "::1", "0.0.0.0", "a b"],
    "port": [None, 22, 0, 70000, "22"],
    "ssh": [None, True, False],
}
near_group = st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in PLAUSIBLE_GROUP.items()})
near_host = st.fixed_dictionaries({"name": st.sampled_from(PLAUSIBLE_HOST["name"]),
                                   "address": st.sampled_from(PLAUSIBLE_HOST["address"])},
                                  optional={k: st.sampled_from(v) for k, v in PLAUSIBLE_HOST.items()
                                            if k not in ("name", "address")})
near_document = st.fixed_dictionaries(
    {"workers": st.lists(near_group, min_size=1, max_size=3)},
    optional={
        "hosts": st.lists(near_host, max_size=3),
        "scheduler": st.fixed_dictionaries({}, optional={
            "host": st.sampled_from(["127.0.0.1", "10.0.0.1", "0.0.0.0", "::1"]),
            "port": st.sampled_from([0, 1, 8786, 9000, 70000]),
            "dashboard_port": st.sampled_from([0, 8787, 9000]),
            "at": st.sampled_from([None, "ws1", "ws2", "localhost", "nowhere"]),
            "dashboard": st.booleans()}),
        "tls": st.sampled_from([{"enabled": True}, {"enabled": False}, {"enabled": "auto"}]),
        "insecure": st.booleans(),
        "max_workers": st.sampled_from([1, 3, 4096, 0]),
    },
)


def parses_or_one_line(text: str) -> None:
    try:
        cfg = parse_config(text)
    except ConfigError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "\r" not in msg and "Traceback" not in msg, msg
        return
    # What validates is usable: planning it raises nothing either.
    assert sum(g.count for g in cfg.workers) <= cfg.max_workers
    cfg.warnings()
    build_plan(cfg, DASK)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document)
def test_generated_topologies_parse_or_fail_in_one_line(doc):
    parses_or_one_line(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_document)
def test_near_valid_topologies_parse_or_fail_in_one_line(doc):
    parses_or_one_line(yaml.safe_dump(doc, sort_keys=False))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(group, min_size=1, max_size=3), st.sampled_from(["", HOSTS, HOSTS + "tls: {enabled: false}\n"]))
def test_generated_worker_groups_parse_or_fail_in_one_line(workers, prefix):
    parses_or_one_line(prefix + yaml.safe_dump({"workers": workers}, sort_keys=False))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("workers:-[]{}&*!|>'\"#%@` \n\t,?\x00\ufeff") + ["  ", "ws1", "at", "!!python/",
                                                                                     "count", "\n  - "]),
                max_size=40).map("".join))
def test_generated_yaml_text_parses_or_fails_in_one_line(text):
    parses_or_one_line(text)


TAGS = ["!!str", "!!int", "!!float", "!!bool", "!!null", "!!binary", "!!timestamp", "!!set", "!!omap", "!!pairs",
        "!!map", "!!seq", "!!merge", "!!python/none", "!!python/object:os.system", "!local", "!", "!<tag:x>"]
TAGGED_VALUES = ["abc", "1", "1.5", "maybe", "~", "2024-01-01", "'***'", "[1, 2]", "{a: 1}", "[{a: 1}]", "''", "0x10",
                 ".inf", "yes"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["name", "scheduler", "workers", "port", "count", "env"]), st.sampled_from(TAGS),
       st.sampled_from(TAGGED_VALUES), st.booleans())
def test_explicit_tags_parse_or_fail_in_one_line(key, tag, value, nested):
    """PyYAML raises bare ValueError/KeyError/AttributeError for `!!int abc`, `!!bool maybe`, ..."""
    body = f"{key}: {tag} {value}\n"
    parses_or_one_line(f"workers:\n  - {body}" if nested else body)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=80), st.sampled_from(["[", "{", "- ", "a: "]))
def test_nesting_parses_or_fails_in_one_line(depth, opener):
    closer = {"[": "]", "{": "}", "- ": "", "a: ": ""}[opener]
    if opener in ("- ", "a: "):
        text = "".join("  " * i + opener + "\n" for i in range(depth)) + "  " * depth + "x\n"
    else:
        text = "name: " + opener * depth + closer * depth + "\n"
    parses_or_one_line(text)
