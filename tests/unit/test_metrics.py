"""The supervisor's metrics: families built from hand-made ledger records, and the loopback page."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from clusterctl.runtime import metrics
from clusterctl.runtime.ledger import HostRecord, HostWorkers, LedgerRecord, ProcessRecord
from clusterctl.supervisor import record as supervisor_record
from clusterctl.supervisor.states import ChildState, ClusterState, HostState

T0 = 1_790_000_000.0


def sample_record(**changes) -> LedgerRecord:
    processes = [
        ProcessRecord(name="scheduler", role="scheduler", state="running", restarts=1, started=T0),
        ProcessRecord(name="default-0", role="worker", group="default", state="running", restarts=2, started=T0 + 1),
        ProcessRecord(name="default-1", role="worker", group="default", state="fatal", restarts=5),
        ProcessRecord(name="default-2", role="worker", group="default", state="retiring", started=T0 + 2),
        ProcessRecord(name="gpu-0", role="worker", group="gpu", at="ws1", state="waiting", restarts=0),
    ]
    hosts = [HostRecord(name="ws1", address="10.0.0.5", state="unreachable", workers=HostWorkers(desired=1, running=0)),
             HostRecord(name="ws2", state="reachable", workers=HostWorkers(desired=2, running=2))]
    return LedgerRecord(name="demo", state="degraded", processes=processes, hosts=hosts).model_copy(update=changes)


def scrape_text(snapshot, **kw) -> str:
    registry = CollectorRegistry()
    registry.register(metrics.SupervisorCollector(snapshot, **kw))
    return generate_latest(registry).decode()


def parse(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(family, *label_names) -> dict:
    return {tuple(s.labels[n] for n in label_names): s.value for s in family.samples}


def test_every_family_is_there_with_its_labels_and_values():
    fams = parse(scrape_text(sample_record, version="9.9"))
    assert values(fams["clusterctl_info"], "name", "version") == {("demo", "9.9"): 1}
    assert values(fams["clusterctl_process_up"], "name", "role", "host") == {
        ("scheduler", "scheduler", "localhost"): 1, ("default-0", "worker", "localhost"): 1,
        ("default-1", "worker", "localhost"): 0, ("default-2", "worker", "localhost"): 0, ("gpu-0", "worker", "ws1"): 0}
    assert values(fams["clusterctl_process_restarts"], "name", "role") == {
        ("scheduler", "scheduler"): 1, ("default-0", "worker"): 2, ("default-1", "worker"): 5,
        ("default-2", "worker"): 0, ("gpu-0", "worker"): 0}
    state = values(fams["clusterctl_process_state"], "name", "state")
    assert {k for k, v in state.items() if v == 1} == {
        ("scheduler", "running"), ("default-0", "running"), ("default-1", "fatal"), ("default-2", "retiring"),
        ("gpu-0", "waiting")}
    assert len(state) == 5 * len(metrics.PROCESS_STATES)  # every state of every process, 0 or 1
    assert values(fams["clusterctl_process_start_time_seconds"], "name") == {
        ("scheduler",): T0, ("default-0",): T0 + 1, ("default-2",): T0 + 2}
    # desired: what is not leaving (default-2 retires); running: what runs
    assert values(fams["clusterctl_group_workers_desired"], "group") == {("default",): 2, ("gpu",): 1}
    assert values(fams["clusterctl_group_workers_running"], "group") == {("default",): 1, ("gpu",): 0}
    assert values(fams["clusterctl_fatal_processes"]) == {(): 1}
    cluster = values(fams["clusterctl_cluster_state"], "state")
    assert cluster == {(s,): int(s == "degraded") for s in metrics.CLUSTER_STATES}
    hosts = values(fams["clusterctl_host_state"], "host", "state")
    assert {k for k, v in hosts.items() if v == 1} == {("ws1", "unreachable"), ("ws2", "reachable")}
    assert len(hosts) == 2 * len(metrics.HOST_STATES)
    assert values(fams["clusterctl_host_workers"], "host", "kind") == {
        ("ws1", "desired"): 1, ("ws1", "running"): 0, ("ws2", "desired"): 2, ("ws2", "running"): 2}
    assert values(fams["clusterctl_metrics_scrape_errors"]) == {(): 0}


def test_no_address_nor_argv_on_the_page():
    rec = sample_record()
    rec.processes[0].argv = ["dask", "scheduler", "--secret-flag"]
    rec.processes[0].address = "tcp://127.0.0.1:1234"
    text = scrape_text(lambda: rec)
    assert "10.0.0.5" not in text and "--secret-flag" not in text and "1234" not in text


def test_restarts_is_a_counter_that_follows_the_snapshot():
    rec = sample_record()
    collector_text = lambda: scrape_text(lambda: rec)  # noqa: E731
    first = parse(collector_text())["clusterctl_process_restarts"]
    assert first.type == "counter"
    assert {s.name for s in first.samples} == {"clusterctl_process_restarts_total"}
    rec.processes[1].restarts += 1  # the supervisor restarted default-0: nothing else is told
    second = parse(collector_text())["clusterctl_process_restarts"]
    assert values(second, "name")[("default-0",)] == values(first, "name")[("default-0",)] + 1


def test_types_and_names_follow_prometheus_conventions():
    text = scrape_text(sample_record)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for name, kind in types.items():
        assert re.fullmatch(r"clusterctl_[a-z][a-z0-9_]*", name), name
        assert name.endswith("_total") == (kind == "counter"), (name, kind)
    assert types["clusterctl_info"] == "gauge"
    assert types["clusterctl_process_start_time_seconds"] == "gauge"
    assert {n for n in types if n.endswith("_total")} == {
        "clusterctl_process_restarts_total", "clusterctl_metrics_scrape_errors_total"}


def test_the_state_lists_are_the_supervisors_own():
    assert metrics.PROCESS_STATES == tuple(s.value for s in ChildState)
    assert metrics.CLUSTER_STATES == tuple(s.value for s in ClusterState)
    assert metrics.HOST_STATES == tuple(s.value for s in HostState)


def test_a_state_it_does_not_know_is_still_the_one_at_1():
    rec = sample_record(state="hibernating")
    rec.processes[0].state = "dreaming"
    fams = parse(scrape_text(lambda: rec))
    assert values(fams["clusterctl_cluster_state"], "state")[("hibernating",)] == 1
    assert sum(values(fams["clusterctl_cluster_state"], "state").values()) == 1
    proc = values(fams["clusterctl_process_state"], "name", "state")
    assert proc[("scheduler", "dreaming")] == 1
    assert sum(v for (n, _), v in proc.items() if n == "scheduler") == 1


def test_an_empty_cluster_still_has_every_family():
    fams = parse(scrape_text(lambda: LedgerRecord(name="empty")))
    assert {"clusterctl_info", "clusterctl_cluster_state", "clusterctl_process_up", "clusterctl_process_restarts",
            "clusterctl_process_state", "clusterctl_group_workers_desired", "clusterctl_group_workers_running",
            "clusterctl_fatal_processes", "clusterctl_host_state", "clusterctl_host_workers"} <= set(fams)
    assert values(fams["clusterctl_fatal_processes"]) == {(): 0}
    assert values(fams["clusterctl_cluster_state"], "state")[("starting",)] == 1


def test_a_failing_snapshot_is_counted_and_logged_once_per_type():
    logged: list[str] = []
    calls = {"n": 0}

    def snapshot():
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("ledger half-built")
        if calls["n"] == 3:
            raise KeyError("gone")
        return sample_record()

    collector = metrics.SupervisorCollector(snapshot, log=logged.append)
    registry = CollectorRegistry()
    registry.register(collector)
    pages = [parse(generate_latest(registry).decode()) for _ in range(4)]
    assert set(pages[0]) == {"clusterctl_metrics_scrape_errors"}  # nothing but the error count
    assert [values(p["clusterctl_metrics_scrape_errors"])[()] for p in pages] == [1, 2, 3, 3]
    assert "clusterctl_process_up" in pages[3]  # the next good snapshot is whole again
    assert len(logged) == 2  # RuntimeError once, KeyError once
    assert "RuntimeError: ledger half-built" in logged[0] and "Traceback" in logged[0]
    assert "KeyError" in logged[1]


# -- the page ----------------------------------------------------------------------------------
def get(url: str, method: str = "GET") -> tuple[int, str, str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, "", e.read().decode()


def test_serve_answers_on_loopback_with_the_current_view():
    rec = sample_record()
    with metrics.serve(lambda: rec) as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", server.address), server.address
        status, ctype, text = get(server.address)
        assert status == 200 and ctype.startswith("text/plain")
        fams = parse(text)
        assert values(fams["clusterctl_process_up"], "name")[("default-0",)] == 1
        assert "process_cpu_seconds" in fams  # the supervisor's own figures (Linux)
        rec.processes[1].state = "backoff"
        assert values(parse(get(server.address)[2])["clusterctl_process_up"], "name")[("default-0",)] == 0
        assert get(server.address, "POST")[0] == 405


def test_close_stops_the_thread_frees_the_port_and_is_idempotent():
    server = metrics.serve(sample_record)
    port = server.port
    assert get(server.address)[0] == 200
    t0 = time.monotonic()
    server.close()
    took = time.monotonic() - t0
    server.close()
    assert took < 1.0, f"close took {took:.2f} s"  # it does not wait for a poll interval
    assert not server._thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_serve_raises_oserror_when_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            metrics.serve(sample_record, port=taken.getsockname()[1])


def test_idle_clients_are_dropped_and_cannot_starve_a_scrape(monkeypatch):
    monkeypatch.setattr(metrics._Handler, "timeout", 2.0)
    with metrics.serve(sample_record) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(metrics.MAX_SCRAPES)]
        try:
            time.sleep(0.2)  # all of them taken by handlers
            extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            t0 = time.monotonic()
            assert extra.recv(1) == b""  # over the cap: closed at once, not queued nor left to time out
            assert time.monotonic() - t0 < 1.0
            extra.close()
            for s in idle:  # each idle one is dropped after the handler's timeout (never held forever)
                assert s.recv(1) == b""
        finally:
            for s in idle:
                s.close()
        assert get(server.address)[0] == 200  # their slots are free again


def test_the_supervisor_runs_without_the_page_when_it_cannot_bind(monkeypatch):
    emitted = []

    class Events:
        def emit(self, process, event, detail=""):
            emitted.append((process, event, detail))

    def refuse(snapshot):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(metrics, "serve", refuse)
    assert supervisor_record.serve_metrics(sample_record, Events()) is None
    assert len(emitted) == 1 and emitted[0][:2] == ("cluster", "metrics-failed")
    assert "Address already in use" in emitted[0][2]
