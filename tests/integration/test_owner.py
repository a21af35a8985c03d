"""The person at the keyboard comes first (issue 23), on the head: the owner arrives mid-job, by the
command signal and by a real CPU-bound process; the workers pause (Dask's paused status: no task
starts there), retire after `retire_after`, come back after `resume_after`, and the job's result is
the serial one. Yielding is never a failure: no restart counted, nothing unhealthy or fatal."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from clients import client_of
from conftest import wait_for

pytestmark = pytest.mark.integration


def events(cluster) -> list[dict]:
    path = cluster.state / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def first(cluster, kind: str, after: float = 0.0) -> dict | None:
    return next((e for e in events(cluster) if e["event"] == kind and e["time"] >= after), None)


def make_task(log: str | None = None):
    """A Monte Carlo draw of ~0.15 s: its result, and where and when it started (each start also appended
    to ``log``, a file, when given: a task computed twice is there twice). Made in a function: the
    workers cannot import this test module, and a local function travels by value (cloudpickle)."""

    def task(i: int):
        import random
        import time as t

        from distributed import get_worker

        start = t.time()
        if log:
            with open(log, "a") as f:
                f.write(f"{i} {get_worker().name} {start}\n")
        r = random.Random(i)
        inside = sum(r.random() ** 2 + r.random() ** 2 < 1.0 for _ in range(20_000))
        t.sleep(0.15)  # a task of a steady length: the job outlasts the owner's visit
        return i, inside, get_worker().name, start

    return task


def serial(n: int) -> list[tuple[int, int]]:
    out = []
    for i in range(n):
        import random
        r = random.Random(i)
        out.append((i, sum(r.random() ** 2 + r.random() ** 2 < 1.0 for _ in range(20_000))))
    return out


OWNER = """owner:
  active_if: {{{signal}}}
  when_active: pause
  retire_after: {retire}
  resume_after: {resume}
"""


def test_owner_arrives_mid_job_by_command_pause_retire_return(cluster):
    flag = cluster.root / "owner-is-here"
    cluster.write(extra=OWNER.format(signal=f"command: 'test -e {flag}', command_timeout: 3", retire=4, resume=3))
    cluster.cli("up", check=True)
    wait_for(lambda: cluster.status()["hosts"][0]["owner"] == "idle", 20, what="the head's owner judged idle")
    n = 260
    with client_of(cluster) as client:
        starts = cluster.root / "starts.txt"
        futures = client.map(make_task(str(starts)), range(n), pure=False)
        wait_for(lambda: sum(f.done() for f in futures) >= 6, 60, what="the job under way")
        arrived = time.time()
        flag.touch()
        wait_for(lambda: first(cluster, "owner-pause", arrived), 15, what="owner-pause")
        paused_at = first(cluster, "owner-pause", arrived)["time"]
        wait_for(lambda: {w["status"] for w in client.scheduler_info()["workers"].values()} == {"paused"}, 10,
                 what="Dask sees both workers paused")
        wait_for(lambda: first(cluster, "yield", arrived), 20, what="the workers retire after retire_after")
        yielded_at = first(cluster, "yield", arrived)["time"]
        st = cluster.status()
        head = st["hosts"][0]
        assert head["name"] == "localhost" and head["owner"] == "active" and head["mode"] == "away", head
        assert "command: exit 0" in head["owner_why"]
        wait_for(lambda: all(p["state"] == "yielded" for p in cluster.status()["processes"] if p["role"] == "worker"),
                 30, what="workers yielded")
        left = time.time()
        flag.unlink()
        wait_for(lambda: first(cluster, "yield-over", left), 30, what="the workers come back after resume_after")
        results = client.gather(futures)
    assert sorted((i, inside) for i, inside, _, _ in results) == serial(n)
    # Every start, recomputations included (the results of the first tasks died with the workers'
    # retirement: with every worker on this one host there was nowhere to move them).
    started = [float(line.split()[2]) for line in starts.read_text().splitlines()]
    back = first(cluster, "yield-over", left)["time"]
    late = [s for s in started if paused_at + 2.0 < s < back]
    assert not late, f"{len(late)} tasks started while the owner was active (paused at {paused_at:.2f})"
    assert len([s for s in started if s < arrived]) >= 6 and len([s for s in started if s > back]) >= 6, \
        "the job ran before the owner came and after the workers returned"
    assert yielded_at - paused_at < 4 + 5, "retired within retire_after + 5 s"
    assert back - left < 3 + 10, "back within resume_after + 10 s"
    st = cluster.status()
    assert all(p["restarts"] == 0 and p["state"] == "running" for p in st["processes"]), st["processes"]
    kinds = [e["event"] for e in events(cluster)]
    assert "unhealthy" not in kinds and "fatal" not in kinds and "exited" not in kinds
    assert kinds.index("owner-active") < kinds.index("owner-pause") < kinds.index("yield") < \
        kinds.index("owner-idle") < kinds.index("yield-over")
