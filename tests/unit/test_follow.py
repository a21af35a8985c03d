"""client/follow.py: following files across rotation and truncation, and merging many in time order.

Real files in a temp directory; the rotations are runtime/rotation.py's own (collapse where
the filesystem can, copy-then-truncate forced) and events.jsonl's rename."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from clusterctl.client import follow
from clusterctl.client.follow import Entry, FileFollower, LogMerger, Source, Stamper, merge, rounds
from clusterctl.runtime import rotation


def append(path: Path, text: str) -> None:
    with open(path, "ab") as f:
        f.write(text.encode())


def numbered(start: int, stop: int, width: int = 40) -> str:
    return "".join(f"line {i:06d} {'x' * (i % width)}\n" for i in range(start, stop))


def numbers(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines]


def drain(f: FileFollower, budget: int = follow.BUDGET) -> list[str]:
    """Poll until nothing more is waiting (bounded)."""
    got: list[str] = []
    for _ in range(10_000):
        lines, more = f.poll(budget)
        got += lines
        if not more:
            return got
    raise AssertionError("the follower never caught up")


def test_tail_gives_the_last_lines_and_then_only_new_ones(tmp_path):
    log = tmp_path / "a.log"
    log.write_text(numbered(0, 1000))
    f = FileFollower(log)
    assert numbers(f.tail(3)) == [997, 998, 999]
    assert f.poll() == ([], False)
    append(log, numbered(1000, 1002))
    assert numbers(f.poll()[0]) == [1000, 1001]
    assert FileFollower(log).tail(0) == []
    assert numbers(FileFollower(log).tail(5000)) == list(range(1002))  # more than there is: all of it


def test_a_partial_last_line_waits_for_its_newline(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("one\ntw")
    f = FileFollower(log)
    assert f.tail(5) == ["one"]
    assert f.poll() == ([], False)
    append(log, "o, still")
    assert f.poll() == ([], False)
    append(log, " two\nthree\nfo")
    assert f.poll()[0] == ["two, still two", "three"]
    assert f.flush() == ["fo"]  # a one-off view shows what is there
    fresh = FileFollower(log)  # followed from its start (a file that appeared later)
    assert fresh.poll()[0] == ["one", "two, still two", "three"]


def test_a_file_that_does_not_exist_yet_is_read_from_its_start_once_it_appears(tmp_path):
    log = tmp_path / "late.log"
    f = FileFollower(log)
    assert f.tail(10) == [] and f.poll() == ([], False)
    log.write_text("first\nsecond\n")
    assert f.poll()[0] == ["first", "second"]


@pytest.mark.parametrize("how", ["collapse", "copy-truncate"])
@pytest.mark.parametrize("behind", [False, True], ids=["caught-up", "behind"])
def test_rotation_under_a_follower_loses_and_repeats_nothing(tmp_path, monkeypatch, how, behind):
    """runtime/rotation.py cuts the head of the live file into log.1 while we follow: whether
    we had read past the cut or not (behind), every line comes exactly once, in order."""
    if how == "copy-truncate":
        monkeypatch.setattr(rotation, "_fallocate", lambda: None)
    elif rotation._fallocate() is None:
        pytest.skip("no fallocate on this platform")
    log = tmp_path / "w.log"
    log.write_text(numbered(0, 100))
    f = FileFollower(log)
    got = numbers(f.tail(100))
    n, rotations, behind_cut = 100, 0, 0
    for round_ in range(40):
        append(log, numbered(n, n + 300))
        n += 300
        if not behind:
            got += numbers(f.poll()[0])
        else:  # a little at a time, caught up every 4th round: the cut falls past the offset
            got += numbers(f.poll(budget=4096)[0] if round_ % 4 else drain(f, budget=4096))
            behind_cut += bool(f.pending)  # backups still to read: a cut fell past our offset
        if rotation.rotate(log, 32 * 1024, 3):
            rotations += 1
            if round_ % 2:  # sometimes the file grows past our offset again before we look
                append(log, numbered(n, n + 400))
                n += 400
    got += numbers(drain(f))
    assert rotations >= 8 and (behind_cut > 0) == behind
    assert got == list(range(n)), f"first wrong at {next(i for i, (a, b) in enumerate(zip(got, range(n))) if a != b)}"


def collapse(path: Path, cut: int) -> None:
    """What fallocate(FALLOC_FL_COLLAPSE_RANGE) does: the same inode, without its first bytes."""
    data = path.read_bytes()
    with open(path, "r+b") as f:
        f.write(data[cut:])
        f.truncate(len(data) - cut)


def test_a_backup_first_seen_while_it_was_being_copied_counts_as_new(tmp_path):
    """The follower starts while a rotation copies the head to log.1; the cut comes after."""
    log, one = tmp_path / "w.log", tmp_path / "w.log.1"
    log.write_text(numbered(0, 3000))
    cut = 64 * 1024
    head = log.read_bytes()[:cut]
    one.write_bytes(head[:1000])  # the copy has begun
    f = FileFollower(log)
    got = numbers(f.tail(5))
    one.write_bytes(head)  # the copy ends (same inode, now whole) and the head is cut
    collapse(log, cut)
    append(log, numbered(3000, 3100))
    got += numbers(drain(f))
    assert got == list(range(2995, 3100))


def test_a_rename_rotation_as_events_jsonl_does_is_followed(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(numbered(0, 10))
    f = FileFollower(events)
    got = numbers(f.tail(10))
    for k in range(6):
        append(events, numbered(10 + 20 * k, 20 + 20 * k))
        rotation.shift_backups(events, 3)
        os.replace(events, events.with_name("events.jsonl.1"))  # as EventLog._rotate_if_large
        if k % 2:
            got += numbers(f.poll()[0])  # the path is gone: the rest of the old file, from its backup
        append(events, numbered(20 + 20 * k, 30 + 20 * k))  # the next emit creates a new file
        got += numbers(f.poll()[0])  # a new inode at the path: the old one's rest first
    got += numbers(drain(f))
    assert got == list(range(130))


def test_a_truncation_without_a_backup_starts_over(tmp_path):
    log = tmp_path / "t.log"
    log.write_text("old 1\nold 2\n")
    f = FileFollower(log)
    f.tail(5)
    log.write_text("new 1\n")  # truncated and rewritten by someone, no log.1
    assert f.poll()[0] == ["new 1"]


def test_an_endless_line_is_cut_and_memory_stays_bounded(tmp_path):
    log = tmp_path / "big.log"
    f = FileFollower(log)
    log.write_bytes(b"y" * (follow.MAX_LINE * 3 + 10))
    pieces = drain(f)
    assert [len(p) for p in pieces] == [follow.MAX_LINE] * 3
    assert len(f.partial) == 10
    append(log, "\n")
    assert f.poll()[0] == ["y" * 10]


def test_memory_stays_bounded_on_a_huge_file(tmp_path):
    """A 64 MiB log: its tail reads only its end, and following it from the start reads it
    a budget at a time; the peak of Python allocations stays a few MiB."""
    log = tmp_path / "huge.log"
    block = numbered(0, 20_000).encode()
    with open(log, "wb") as out:
        while out.tell() < 64 << 20:
            out.write(block)
    size = log.stat().st_size
    tracemalloc.start()
    try:
        assert len(FileFollower(log).tail(10)) == 10
        tail_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        f, count = FileFollower(log), 0
        for _ in range(1000):
            lines, more = f.poll(budget=1 << 20)
            count += len(lines)
            if not more:
                break
        follow_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == size // len(block) * 20_000 and f.pos == size
    assert tail_peak < 1 << 20, f"tail of a {size >> 20} MiB file peaked at {tail_peak >> 10} KiB"
    assert follow_peak < 16 << 20, f"following a {size >> 20} MiB file peaked at {follow_peak >> 20} MiB"


def test_stamps_of_every_kind_of_line():
    s = Stamper()
    noon = dt.datetime(2026, 11, 28, 12, 0, 0).timestamp()
    assert s.stamp("no stamp before any", noon) is None
    assert s.stamp("--- 2026-11-28 23:59:58 start (warm): dask worker", noon) == dt.datetime(2026, 11, 28, 23, 59, 58).timestamp()
    dask = s.stamp("2026-11-28 23:59:59,250 - distributed.worker - INFO - x", noon)
    assert dask == pytest.approx(dt.datetime(2026, 11, 28, 23, 59, 59).timestamp() + 0.25)
    assert s.stamp("Traceback (most recent call last):", noon) == dask  # unstamped: the previous one's
    # time of day only (the supervisor's lines): the file's date, and midnight passes
    assert s.stamp("00:00:01 default-0      exited       code 1", noon) == dt.datetime(2026, 11, 29, 0, 0, 1).timestamp()
    fresh = Stamper()  # no full date seen: the day of the reference, or the day before when later than it
    assert fresh.stamp("11:00:00 scheduler started", noon) == dt.datetime(2026, 11, 28, 11, 0).timestamp()
    assert Stamper().stamp("13:30:00 scheduler started", noon) == dt.datetime(2026, 11, 27, 13, 30).timestamp()
    assert Stamper().stamp("99:00:00 not a time", noon) is None
    assert Stamper().stamp("12:00:00:00 not a time either", noon) is None


def test_lines_before_the_first_stamp_take_the_next_one():
    ref = dt.datetime(2026, 11, 28, 12, 0, 0).timestamp()
    entries = Stamper().entries("w", ["  continued", "2026-11-28 10:00:00,000 - x", "tail"], ref)
    t = dt.datetime(2026, 11, 28, 10, 0).timestamp()
    assert [e.key for e in entries] == [t, t, t]
    assert [e.key for e in Stamper().entries("w", ["plain", "print"], ref)] == [ref, ref]


def test_merge_orders_by_time_and_keeps_each_files_order():
    a = [Entry(1.0, "a", "a1"), Entry(3.0, "a", "a3"), Entry(3.0, "a", "a3-traceback"), Entry(2.0, "a", "a2-late")]
    b = [Entry(2.0, "b", "b2"), Entry(3.0, "b", "b3")]
    texts = [e.text for e in merge([a, b])]
    assert texts == ["a1", "b2", "a3", "a3-traceback", "a2-late", "b3"]  # ties: the earlier stream


def write_log(path: Path, lines: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"2026-11-28 10:00:{t} - {text}\n" if t else f"{text}\n" for t, text in lines))


def test_a_merger_orders_across_files_and_picks_up_a_file_appearing_later(tmp_path):
    sched, w0, w1 = tmp_path / "scheduler.log", tmp_path / "default-0.log", tmp_path / "default-1.log"
    write_log(sched, [("01,000", "s1"), ("04,000", "s4")])
    write_log(w0, [("02,000", "w0-2"), (None, "  traceback of w0-2"), ("03,500", "w0-3")])
    files = [Source("scheduler", sched, True), Source("default-0", w0, True)]
    clock = [0.0]
    merger = LogMerger(lambda: list(files), clock=lambda: clock[0], rediscover=1.0)
    first = merger.start(10)
    assert [(e.name, e.text.split(" - ")[-1]) for e in first] == [
        ("scheduler", "s1"), ("default-0", "w0-2"), ("default-0", "  traceback of w0-2"), ("default-0", "w0-3"),
        ("scheduler", "s4")]
    write_log(w1, [("00,500", "w1-0"), ("05,000", "w1-5")])  # a worker added: its whole log, from line one
    files.append(Source("default-1", w1, True))
    append(sched, "2026-11-28 10:00:06,000 - s6\n")
    assert [e.text for e in merger.poll()[0]] == ["2026-11-28 10:00:06,000 - s6"]  # not rediscovered yet
    clock[0] = 1.5
    lines, more = merger.poll()
    assert [(e.name, e.text[-4:]) for e in lines] == [("default-1", "w1-0"), ("default-1", "w1-5")] and not more
    assert merger.order == ["scheduler", "default-0", "default-1"]


def test_rounds_sleep_only_when_nothing_is_waiting(tmp_path):
    log = tmp_path / "r.log"
    log.write_text("")
    f = FileFollower(log)
    f.tail(0)
    slept: list[float] = []
    script = iter([lambda: append(log, "a\n"), lambda: None, lambda: append(log, "b\nc\n")])

    def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        next(script, lambda: None)()

    batches = list(rounds(f.poll, interval=0.5, sleep=fake_sleep, limit=5))
    assert batches == [["a"], ["b", "c"]]
    assert slept == [0.5] * 5
    slept.clear()
    big = FileFollower(log)  # more waiting than one budget: polled again at once
    assert list(rounds(lambda: big.poll(budget=2), sleep=fake_sleep, limit=3)) == [["a"], ["b"], ["c"]]
    assert slept == [0.25]


def test_cluster_sources_name_every_log(tmp_path):
    from clusterctl.topology import load_config

    (tmp_path / "cluster.yaml").write_text("name: t\nstate_dir: state\nscheduler: {host: 127.0.0.1, port: 20001, "
                                           "dashboard_port: 20002}\nworkers: [{name: default, count: 1}]\n")
    cfg = load_config(tmp_path / "cluster.yaml")
    logs = cfg.log_path
    for rel in ("supervisor.log", "scheduler.log", "default-0.log", "lab/default-1.log", "scheduler.log.1"):
        (logs / rel).parent.mkdir(parents=True, exist_ok=True)
        (logs / rel).write_text("x\n")
    found = follow.cluster_sources(cfg)()
    assert [(s.name, s.path.relative_to(logs).as_posix(), s.shown) for s in found] == [
        ("supervisor", "supervisor.log", True), ("default-0", "default-0.log", True),
        ("lab/default-1", "lab/default-1.log", True), ("scheduler", "scheduler.log", True)]


def test_a_follower_beside_a_real_writer_and_rotator_sees_every_line_once(tmp_path):
    """A writer thread appends through the O_APPEND descriptor it keeps (as a child does)
    while another rotates the file as the supervisor does, and we follow: nothing lost,
    nothing repeated, in order."""
    if rotation._fallocate() is None:
        pytest.skip("no fallocate on this platform")
    log = tmp_path / "live.log"
    total, done = 150_000, threading.Event()
    rotations = [0]

    def write() -> None:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for i in range(total):
                os.write(fd, f"line {i:06d} {'z' * (i % 50)}\n".encode())
        finally:
            os.close(fd)
            done.set()

    def rotate() -> None:
        while not done.is_set():
            rotations[0] += rotation.rotate(log, 512 * 1024, 3)
            time.sleep(0.002)

    f = FileFollower(log)
    threads = [threading.Thread(target=write), threading.Thread(target=rotate)]
    for t in threads:
        t.start()
    got: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while not done.is_set() and time.monotonic() < deadline:
            got += numbers(f.poll(budget=64 * 1024)[0])
            time.sleep(0.001)
    finally:
        done.set()
        for t in threads:
            t.join(10)
    got += numbers(drain(f))
    assert rotations[0] >= 5, rotations
    assert got == list(range(total)), f"first wrong at {next(i for i, (a, b) in enumerate(zip(got, range(total))) if a != b)}"


def test_prefixes_pad_names_and_colour_only_when_asked():
    from clusterctl.cli.views import _Prefixes

    lines = [Entry(1.0, "scheduler", "s"), Entry(2.0, "default-0", "w")]
    assert _Prefixes(["supervisor", "scheduler"], colour=False).lines(lines) == ["scheduler  | s", "default-0  | w"]
    coloured = _Prefixes(["scheduler"], colour=True).lines(lines + [Entry(3.0, "a-much-longer-name", "x")])
    assert coloured[0] == "\x1b[36mscheduler |\x1b[0m s" and coloured[1].startswith("\x1b[33mdefault-0 |")
    assert coloured[2] == "\x1b[32ma-much-longer-name |\x1b[0m x"  # a longer name widens what follows
