"""A real supervisor under hostile control requests: it answers each with one line, keeps its
cluster, keeps answering the CLI, and keeps its log short. Every case here broke the old one."""

from __future__ import annotations

import json
import re
import socket
import statistics
import struct
import threading
import time

import psutil
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from clusterctl.errors import ClusterError
from clusterctl.runtime import control
from clusterctl.runtime.ledger import Ledger
from conftest import wait_for

pytestmark = pytest.mark.integration


class Channel:
    """The running supervisor's control channel, spoken to byte by byte."""

    def __init__(self, cluster):
        led = cluster.ledger()
        self.address = led["supervisor"]["control"]
        self.host, port = self.address.rsplit(":", 1)
        self.port = int(port)
        self.token = Ledger(cluster.state).read_token()
        self.pid = led["supervisor"]["pid"]
        self.log = next(cluster.root.rglob("supervisor.log"))

    def raw(self, method: str, path: str, body: bytes = b"", token: str | None = "good",
            extra: bytes = b"", timeout: float = 60) -> tuple[int, dict]:
        """One request; the reply's status and JSON object. Fails on a dropped or truncated reply."""
        auth = b""
        if token is not None:
            auth = b"Authorization: Bearer " + (self.token if token == "good" else token).encode() + b"\r\n"
        length = b"Content-Length: %d\r\n" % len(body) if body or method == "POST" else b""
        if b"content-length" in extra.lower():
            length = b""
        data = b"%s %s HTTP/1.1\r\nHost: x\r\n%s%s%s\r\n" % (method.encode(), path.encode(), auth, length, extra)
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(data + body)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        head, sep, reply = got.partition(b"\r\n\r\n")
        assert sep, f"connection dropped without a reply to {method} {path!r}: {got[:200]!r}"
        status = int(head.split(b" ", 2)[1])
        declared = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        assert declared == len(reply), f"truncated reply to {method} {path!r}"
        answer = json.loads(reply)
        assert isinstance(answer, dict)
        return status, answer

    def post(self, command: str, body: dict | list | bytes, **kw) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.raw("POST", f"/{command}", data, **kw)


def processes(cluster) -> dict[str, tuple[int, str]]:
    return {p["name"]: (p["pid"], p["state"]) for p in cluster.status()["processes"]}


def all_running(cluster) -> bool:
    return all(state == "running" for _, state in processes(cluster).values())


def log_text(ch: Channel) -> str:
    return ch.log.read_text(errors="replace")


def test_hostile_bodies_get_one_line_and_the_cluster_is_intact(cluster):
    cluster.cli("up", check=True)
    ch = Channel(cluster)
    before = processes(cluster)
    assert all(state == "running" for _, state in before.values()) and len(before) == 3

    # 1. a list inside names: it crashed the old supervisor
    status, reply = ch.post("remove", {"names": [["default-0"]]})
    assert status == 400 and reply["error"].startswith("names[0] must be a worker name"), reply
    assert "\n" not in reply["error"]
    with pytest.raises(ClusterError, match=r"refused `remove`: names\[0\] must be a worker name"):
        control.request(ch.address, ch.token, "remove", {"names": [["default-0"]]}, timeout=30)
    # 2. 60 KB of "[": json.loads raised RecursionError, uncaught
    status, reply = ch.post("status", b"[" * 60_000)
    assert status == 400 and "nested deeper than 32" in reply["error"]
    assert ch.post("status", b"[" * 60_000, token=None)[0] == 401
    # the Content-Length checks stay
    assert ch.post("status", b"{" + b" " * control.MAX_BODY + b"}")[0] == 413
    assert ch.raw("POST", "/status", extra=b"Transfer-Encoding: chunked\r\n")[0] == 411
    assert ch.raw("POST", "/status", extra=b"Content-Length: 12abc\r\n")[0] == 400
    # 5. GET changes nothing: only ping and status
    for command in ("stop", "scale", "add", "remove"):
        status, reply = ch.raw("GET", f"/{command}")
        assert status == 405, (command, status, reply)
    status, reply = ch.raw("GET", "/status")
    assert status == 200 and {p["name"] for p in reply["processes"]} == set(before)
    # 7. bounded fields
    assert ch.post("remove", {"names": ["default-0"] * 1025})[0] == 400
    assert ch.post("remove", {"names": ["x" * 10_000]})[0] == 400
    assert ch.post("scale", {"count": 2, "group": "g" * 1000})[0] == 400

    assert psutil.Process(ch.pid).is_running()
    assert processes(cluster) == before  # same pids, all running
    cluster.cli("scale", "3", check=True)
    wait_for(lambda: all_running(cluster) and len(processes(cluster)) == 4, 60, what="the third worker")
    after = processes(cluster)
    assert {n: after[n] for n in before} == before
    assert "Traceback" not in log_text(ch)


def test_idle_connections_cannot_starve_the_supervisor(cluster):
    """300 idle sockets under a 256 open-file limit killed the old supervisor (EMFILE in its loop)."""
    cluster.cli("up", check=True)
    ch = Channel(cluster)
    sup = psutil.Process(ch.pid)
    soft, hard = sup.rlimit(psutil.RLIMIT_NOFILE)
    if soft == psutil.RLIM_INFINITY or soft > 256:
        sup.rlimit(psutil.RLIMIT_NOFILE, (256, hard))
    log_size = ch.log.stat().st_size
    fds_before = sup.num_fds()
    idle, samples, burst = [], [], threading.Event()

    def sample() -> None:  # the peak while the burst comes in, not only where it settles
        while not burst.wait(0.005):
            samples.append(sup.num_fds())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for _ in range(300):
            idle.append(socket.create_connection((ch.host, ch.port), timeout=5))
        time.sleep(0.5)
        burst.set()
        sampler.join()
        fds_during = max(samples + [sup.num_fds()])
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            assert control.request(ch.address, ch.token, "status", timeout=30)["state"] == "running"
            times.append(time.monotonic() - t0)
        assert max(times) < 5, times  # answered at once, not after the idle ones time out
        assert json.loads(cluster.cli("status", "--json", check=True).stdout)["state"] == "running"
        fds_settled = sup.num_fds()
        # a quarter of the limit for connections, and a few accept batches on their way to making room
        assert fds_settled <= fds_before + 256 // 4 + 8, (fds_before, fds_settled)
        assert fds_during <= fds_before + 256 // 4 + 6 * control.ACCEPT_BATCH + 8, (fds_before, fds_during)
        t0 = time.monotonic()
        open_ = list(idle)
        while open_ and time.monotonic() - t0 < control.REQUEST_TIMEOUT + 15:
            still = []
            for s in open_:
                s.setblocking(False)
                try:
                    while s.recv(4096):  # a 408, then the end
                        pass
                except BlockingIOError:
                    still.append(s)
                except OSError:
                    pass
            open_ = still
            time.sleep(0.1)
        closed_after = time.monotonic() - t0
        assert not open_, f"{len(open_)} idle connections still open after {closed_after:.0f} s"
    finally:
        burst.set()
        for s in idle:
            s.close()
    wait_for(lambda: sup.num_fds() <= fds_before + 2, 10, what="the supervisor's fds back to normal")
    print(f"\nstatus with 300 idle connections: median {statistics.median(times) * 1000:.1f} ms "
          f"(max {max(times) * 1000:.1f}); fds before {fds_before}, peak {fds_during}, settled {fds_settled}, "
          f"after {sup.num_fds()}; "
          f"idle ones closed within {closed_after:.1f} s")
    assert sup.pid == ch.pid and sup.is_running()
    grown = ch.log.read_bytes()[log_size:].decode(errors="replace")
    assert "Traceback" not in grown
    assert "Too many open files" not in grown  # the burst never took the descriptors it needs
    assert len(grown) < 2000, grown  # a line a second for the evicted, one for the timed out
    cluster.cli("scale", "3", check=True)  # it can still open files and start processes
    wait_for(lambda: all_running(cluster) and len(processes(cluster)) == 4, 60, what="the third worker")


def test_a_thousand_refused_requests_log_a_few_lines(cluster):
    """Each aborted unauthenticated request wrote ~1.5 KB of traceback; now each kind is a line a second."""
    cluster.cli("up", check=True)
    ch = Channel(cluster)
    size0 = ch.log.stat().st_size
    big = b"x" * 60_000

    def send(data: bytes, reset: bool) -> None:
        with socket.create_connection((ch.host, ch.port), timeout=10) as s:
            s.sendall(data)
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                while s.recv(65536):
                    pass

    post = b"POST /scale HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
    kinds = [
        (post % len(big) + b"\r\n" + big, True),  # unauthenticated, big body, then a reset
        (post % 2 + b"\r\n{}", False),  # unauthenticated
        (post % 60_000 + b"Authorization: Bearer " + ch.token.encode() + b"\r\n\r\n" + b"[" * 60_000, False),
        (b"POST /scale HTTP/1.1\r\nHost:", True),  # leaves mid-headers
    ]
    for i in range(1000):
        send(*kinds[i % 4])
    time.sleep(control.LOG_EVERY * 2.5)  # the periods end and write their counts
    grown = ch.log.read_bytes()[size0:].decode(errors="replace")
    lines = [line for line in grown.splitlines() if " control " in f" {line} "]
    print(f"\n1000 refused requests: supervisor.log +{len(grown)} bytes, {len(lines)} lines")
    assert "Traceback" not in grown
    assert len(grown) < 4000 and lines, grown
    counted = 0
    for line in lines:
        m = re.search(r"refused +\S+ (?:x(\d+) more)?", line)
        assert m, line
        counted += int(m.group(1) or 1)
    assert counted == 1000, lines
    assert psutil.Process(ch.pid).is_running() and all_running(cluster)


# -- fuzzing a real cluster -------------------------------------------------------------------

FIELDS = ["count", "names", "group", "kill"]
NAMES = ["default-0", "default-1", "default-2", "default-9", "default", "scheduler", "gpu"]
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-3, max_value=1030)
           | st.floats() | st.text(max_size=40) | st.sampled_from(NAMES + ["NaN", "1e999", "\u2028", "💥"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=4),
                      max_leaves=20)
objects = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), values, max_size=4)
GOOD = {  # values of the right type, now and then a wrong one: these reach the supervisor's own checks
    "count": st.integers(-1, 4) | st.integers(-1, 4) | st.integers(-1, 4) | values,
    "names": st.lists(st.sampled_from(NAMES), max_size=3) | st.lists(st.sampled_from(NAMES), max_size=3) | values,
    "group": st.sampled_from(["default", "default", "gpu"]) | st.none() | values,
    "kill": st.booleans() | st.booleans() | values,
}
FIELDS_OF = {"scale": ["count", "group", "kill"], "add": ["count", "group"],
             "remove": ["names", "count", "group", "kill"], "ping": [], "status": []}
bodies = st.one_of(
    objects.map(lambda v: json.dumps(v).encode()),  # NaN and Infinity come out as the non-JSON words
    values.map(lambda v: json.dumps(v).encode()),  # any JSON, object or not
    st.binary(max_size=400),  # not JSON at all
    st.integers(1, 30_000).map(lambda n: b"[" * n),  # deep
    st.integers(1, 200).map(lambda n: b'{"names": ' + b"[" * n + b"]" * n + b"}"),
    st.just(b"{" + b" " * control.MAX_BODY + b"}"),  # one byte over
)
path_chars = st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="\x7f")
known = st.sampled_from(sorted(FIELDS_OF))
paths = st.one_of(known, known, known, st.text(path_chars, max_size=30)).map(lambda c: "/" + c) | st.sampled_from(
    ["/", "/status?x=1", "/scale/", "//remove", "/status#frag", "/%73top", "/stop.", "/STOP"])


@st.composite
def requests(draw) -> tuple[str, bytes]:
    """A path, and half the time for a known command a body of its own fields, else any body."""
    path = draw(paths)
    fields = FIELDS_OF.get(path.split("?", 1)[0].strip("/"))
    if fields is not None and draw(st.booleans()):
        body = draw(st.fixed_dictionaries({}, optional={f: GOOD[f] for f in fields}))
        return path, json.dumps(body).encode()
    return path, draw(bodies)


@pytest.mark.timeout(900)
def test_fuzzed_requests_never_hurt_a_real_cluster(cluster):
    cluster.cli("up", check=True)
    ch = Channel(cluster)
    scheduler_pid = processes(cluster)["scheduler"][0]
    size0 = ch.log.stat().st_size
    workers = {"n": 2}
    seen: dict[int, int] = {}
    done: dict[str, int] = {}  # commands carried out

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(method=st.sampled_from(["POST", "POST", "POST", "GET"]), case=requests(),
           token=st.sampled_from(["good"] * 6 + [None, "wrong"]))
    def one(method, case, token):
        path, body = case
        command = path.split("?", 1)[0].strip("/")
        assume(command != "stop")
        body = bounded(command, body, workers["n"])
        if method == "GET":
            body = b""
        status, reply = ch.raw(method, path, body, token=token)
        seen[status] = seen.get(status, 0) + 1
        if status == 200:
            done[command] = done.get(command, 0) + 1
        assert 200 <= status < 300 or 400 <= status < 500, (status, reply)
        if token != "good":
            assert status == 401
        if status >= 400:
            assert isinstance(reply.get("error"), str) and "\n" not in reply["error"], reply
        elif command in ("scale", "add", "remove"):
            workers["n"] = sum(reply["workers"].values())

    one()
    print(f"\nreplies by status: {dict(sorted(seen.items()))}; carried out: {done}")
    assert psutil.Process(ch.pid).is_running() and cluster.ledger()["supervisor"]["pid"] == ch.pid
    wait_for(lambda: all_running(cluster), 90, what="every process back to running")
    st_json = json.loads(cluster.cli("status", "--json", check=True).stdout)
    assert st_json["state"] in ("running", "degraded") and processes(cluster)["scheduler"][0] == scheduler_pid
    assert "Traceback" not in ch.log.read_bytes()[size0:].decode(errors="replace")
    assert seen.get(200) and seen.get(400) and seen.get(401)  # it reached the handler, and was refused


def bounded(command: str, body: bytes, workers: int) -> bytes:
    """Keep a valid scale/add from starting many workers: counts of at most 3, at most 5 workers."""
    if command not in ("scale", "add"):
        return body
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return body
    count = obj.get("count") if isinstance(obj, dict) else None
    if type(count) is int and 0 <= count <= 1024:
        obj["count"] = count % 4 if command == "scale" else (count % 2 if workers < 5 else 0)
        return json.dumps(obj).encode()
    if isinstance(obj, dict) and command == "add" and "count" not in obj and workers >= 5:
        obj["count"] = 0  # add's count defaults to 1
        return json.dumps(obj).encode()
    return body
