"""logs.py: tails, copy-truncate rotation under a live O_APPEND writer, root causes."""

from __future__ import annotations

import traceback
from pathlib import Path


from clusterctl.runtime.logs import first_cause, rotate_if_large, tail


def lines_of(text: str) -> list[str]:
    """tail() indents every line by two spaces; undo that."""
    out = text.splitlines()
    assert all(line.startswith("  ") for line in out), text
    return [line[2:] for line in out]


# -- tail ---------------------------------------------------------------------------


def test_tail_last_lines_in_order(tmp_path: Path):
    log = tmp_path / "w.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert lines_of(tail(log, 3)) == ["line 997", "line 998", "line 999"]


def test_tail_of_a_large_file_reads_only_the_end(tmp_path: Path):
    log = tmp_path / "w.log"
    body = "".join(f"{i:06d} " + "x" * 90 + "\n" for i in range(50_000))  # ~5 MB
    log.write_text(body)
    got = lines_of(tail(log, 20))
    assert len(got) == 20
    assert got[0].startswith("049980 ")
    assert got[-1].startswith("049999 ")


def test_tail_short_file_and_no_trailing_newline(tmp_path: Path):
    log = tmp_path / "w.log"
    log.write_text("only\nlast without newline")
    assert lines_of(tail(log, 20)) == ["only", "last without newline"]


def test_tail_of_nothing(tmp_path: Path):
    assert tail(None) == "(no log)"
    missing = tmp_path / "missing.log"
    assert tail(missing) == f"(cannot read {missing})"
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert tail(empty) == "  (log is empty)"


def test_tail_survives_bad_utf8(tmp_path: Path):
    log = tmp_path / "w.log"
    log.write_bytes(b"ok\n\xff\xfe broken\nend\n")
    got = lines_of(tail(log, 3))
    assert got[0] == "ok" and got[2] == "end"
    assert "broken" in got[1]


def test_tail_zero_lines_shows_no_lines(tmp_path: Path):
    log = tmp_path / "w.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert "line" not in tail(log, 0)


# -- rotation -----------------------------------------------------------------------


def test_small_or_missing_file_is_not_rotated(tmp_path: Path):
    log = tmp_path / "w.log"
    assert rotate_if_large(log, max_bytes=10) is False
    assert not log.exists()
    log.write_bytes(b"123456789")  # 9 < 10
    assert rotate_if_large(log, max_bytes=10, backups=3) is False
    assert log.read_bytes() == b"123456789"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.log"]


def test_rotation_keeps_an_append_writer_working(tmp_path: Path):
    log = tmp_path / "w.log"
    with open(log, "ab", buffering=0) as writer:  # what a child's stdout is
        writer.write(b"A" * 100)
        assert rotate_if_large(log, max_bytes=100, backups=3) is True
        assert log.stat().st_size == 0
        writer.write(b"new after rotation\n")
        # the write landed at offset 0 of the truncated file: no hole of NULs before it
        assert log.read_bytes() == b"new after rotation\n"
        assert (tmp_path / "w.log.1").read_bytes() == b"A" * 100


def test_rotation_shifts_backups_and_keeps_at_most_n(tmp_path: Path):
    log = tmp_path / "w.log"
    with open(log, "ab") as writer:
        for gen in "ABCDE":
            writer.write(gen.encode() * 50)
            writer.flush()
            assert rotate_if_large(log, max_bytes=50, backups=3) is True
        writer.write(b"F")
        writer.flush()
    assert log.read_bytes() == b"F"
    assert (tmp_path / "w.log.1").read_bytes() == b"E" * 50
    assert (tmp_path / "w.log.2").read_bytes() == b"D" * 50
    assert (tmp_path / "w.log.3").read_bytes() == b"C" * 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.log", "w.log.1", "w.log.2", "w.log.3"]


def test_single_backup(tmp_path: Path):
    log = tmp_path / "w.log"
    for gen in "AB":
        log.write_bytes(gen.encode() * 10)
        assert rotate_if_large(log, max_bytes=5, backups=1)
    assert (tmp_path / "w.log.1").read_bytes() == b"B" * 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.log", "w.log.1"]


# -- first_cause --------------------------------------------------------------------


def chained_traceback() -> str:
    """The text Python prints for dask's 'Nanny failed to start' wrapping an import error."""
    try:
        try:
            import clusterctl_no_such_module  # noqa: F401
        except ImportError as e:
            raise RuntimeError("Nanny failed to start.") from e
    except RuntimeError as e:
        return "".join(traceback.format_exception(e))
    raise AssertionError("unreachable")


def test_first_cause_is_the_root_of_a_chained_traceback(tmp_path: Path):
    tb = chained_traceback()
    assert "RuntimeError: Nanny failed to start." in tb  # the wrapper really is in the log
    log = tmp_path / "w.log"
    log.write_text(
        "--- 2024-01-01 00:00:00 start: dask worker tcp://127.0.0.1:8786\n"
        "2024-01-01 00:00:01,000 - distributed.nanny - INFO - Start Nanny at: 'tcp://127.0.0.1:40000'\n"
        "2024-01-01 00:00:01,100 - distributed.nanny - ERROR - Failed to start process\n"
        + tb
    )
    assert first_cause(log) == "ModuleNotFoundError: No module named 'clusterctl_no_such_module'"


def test_first_cause_keeps_dotted_names(tmp_path: Path):
    log = tmp_path / "w.log"
    log.write_text(
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "distributed.comm.core.CommClosedError: in <TCP (closed)>: Stream is closed\n"
    )
    assert first_cause(log) == "distributed.comm.core.CommClosedError: in <TCP (closed)>: Stream is closed"


def test_first_cause_none_when_no_exception(tmp_path: Path):
    log = tmp_path / "w.log"
    log.write_text(
        "2024-01-01 00:00:01,100 - distributed.worker - ERROR - lost connection\n"
        "ERROR: something went wrong\n"
        "worker says: Error: nothing parseable\n"
    )
    assert first_cause(log) is None
    assert first_cause(None) is None
    assert first_cause(tmp_path / "missing.log") is None


def test_first_cause_reports_the_latest_run(tmp_path: Path):
    log = tmp_path / "w.log"
    log.write_text(
        "--- 2024-01-01 00:00:00 start: dask worker\n"
        "Traceback (most recent call last):\n"
        '  File "a.py", line 1, in <module>\n'
        "OSError: [Errno 98] Address already in use\n"
        "--- 2024-01-02 00:00:00 start: dask worker\n"
        + chained_traceback()
    )
    assert first_cause(log) == "ModuleNotFoundError: No module named 'clusterctl_no_such_module'"


def test_first_cause_reads_only_the_latest_run_whatever_started_it(tmp_path):
    """Warm (forked) starts write 'start (warm):' headers: an earlier run's error is not this one's."""
    log = tmp_path / "w.log"
    log.write_text(
        "--- 2026-11-28 10:00:00 start (warm): dask worker\n"
        "ValueError: old failure\n"
        "--- 2026-11-28 10:01:00 start (warm): dask worker\n"
        "OSError: the new one\n"
    )
    assert first_cause(log) == "OSError: the new one"
    log.write_text("--- 2026-11-28 10:00:00 start (forked): x\nValueError: old\n--- 2026-11-28 10:01:00 start (warm): x\nall fine\n")
    assert first_cause(log) is None
