"""A process killed (SIGKILL) in the middle of a CsvExtractor load or a
write_table leaves the session as it was: the previous table intact, no
staging tables."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import duckmerge
import pyarrow as pa
import pytest
from _drivers_util import staging_tables, stop_child, table_rows, write_bytes

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL needs POSIX")

BIG_ROWS = 3_000_000
SMALL_ROWS = [(1, "small-1"), (2, "small-2"), (3, "small-3")]

CHILD = textwrap.dedent(
    """
    import sys

    import duckmerge

    session = duckmerge.Session(sys.argv[1])
    print("READY", flush=True)
    out = duckmerge.CsvExtractor().run(
        step_id="big", config={"path": sys.argv[2]}, inputs=None, ctx=session
    )
    print("DONE", out, flush=True)
    session.close()
    """
)


def make_big_csv(path: Path) -> None:
    """~290 MB, 3M rows, through DuckDB's COPY (a couple of seconds)."""
    con = duckdb.connect()
    con.execute(
        f"""
        COPY (
            SELECT range AS id,
                   'name_' || range AS name,
                   range * 0.5 AS score,
                   'user' || range || '@example.com' AS email,
                   DATE '2020-01-01' + (range % 1000)::INTEGER AS day,
                   md5(range::VARCHAR) AS digest
            FROM range({BIG_ROWS})
        ) TO '{path}' (FORMAT csv, HEADER)
        """
    )
    con.close()


def read_lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def child_report(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    stderr = proc.stderr.read() if proc.stderr is not None else ""
    return f"return code {proc.returncode}, stderr:\n{stderr}"


def test_sigkill_mid_load_keeps_previous_table_and_leaves_no_staging(tmp_path):
    session_path = tmp_path / "session"
    big_csv = tmp_path / "big.csv"
    started = time.monotonic()
    make_big_csv(big_csv)
    assert time.monotonic() - started < 60, "generating the big CSV took too long"

    small_csv = write_bytes(tmp_path / "small.csv", "id,label\n1,small-1\n2,small-2\n3,small-3\n")
    with duckmerge.Session(session_path) as session:
        out = duckmerge.CsvExtractor().run(
            step_id="big", config={"path": str(small_csv)}, inputs=None, ctx=session
        )
        assert out == {"table": "big", "rows": 3}

    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(session_path), str(big_csv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = read_lines(proc)
        try:
            first = lines.get(timeout=60)
        except queue.Empty:
            pytest.fail(f"child never printed READY; {child_report(proc)}")
        assert first == "READY", f"child printed {first!r}; {child_report(proc)}"

        time.sleep(1.5)
        if proc.poll() is not None:
            report = child_report(proc)
            pytest.skip(f"the 3M-row load ended within 1.5 s (too fast to kill mid-way); {report}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        remaining = []
        while True:
            try:
                line = lines.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            remaining.append(line)
        if any(line.startswith("DONE") for line in remaining):
            pytest.skip("the load finished just before the kill; nothing to recover")
    finally:
        stop_child(proc)

    with duckmerge.Session(session_path) as session:
        assert table_rows(session, "big") == SMALL_ROWS
        assert staging_tables(session) == []
        assert session.tables() == ["big"]
        # the session is usable again: the same step can run to completion
        rerun = duckmerge.CsvExtractor().run(
            step_id="big", config={"path": str(small_csv)}, inputs=None, ctx=session
        )
        assert rerun == {"table": "big", "rows": 3}

    # the file stays readable by the duckdb package
    con = duckdb.connect(str(session_path / "pipeline_data.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT * FROM big ORDER BY id").fetchall() == SMALL_ROWS
    finally:
        con.close()


WRITE_CHILD = textwrap.dedent(
    """
    import sys, time

    import duckmerge
    import pyarrow as pa

    session = duckmerge.Session(sys.argv[1], threads=2)
    session.write_table("t", pa.table({"id": [1, 2, 3]}))
    schema = pa.schema([("id", pa.int64())])

    def batches():
        start = 0
        while True:  # endless: only the kill ends this load
            yield pa.record_batch([pa.array(range(start, start + 50_000), pa.int64())], schema=schema)
            start += 50_000
            if start % 500_000 == 0:
                print("FED", start, flush=True)
            time.sleep(0.01)

    print("READY", flush=True)
    session.write_table("t", pa.RecordBatchReader.from_batches(schema, batches()), mode="replace")
    print("DONE", flush=True)
    """
)


def test_sigkill_mid_write_table_keeps_previous_table(tmp_path: Path) -> None:
    """A load whose rows DuckDB has been writing for a while (the staging
    table's row groups go to the file as they fill) is killed: the next open
    sees the previous table and nothing of the load."""
    session_dir = tmp_path / "s"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITE_CHILD, str(session_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    fed = 0
    try:
        lines = read_lines(proc)
        deadline = time.monotonic() + 120
        while fed < 1_500_000 and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            assert line is not None, child_report(proc)
            if line.startswith("FED"):
                fed = int(line.split()[1])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        while lines.get(timeout=30) is not None:  # drain until the pipe closes
            pass
    finally:
        stop_child(proc)
    assert fed >= 1_500_000, "the load did not get far enough before the kill"

    with duckmerge.Session(session_dir) as s:
        assert table_rows(s, "t") == [(1,), (2,), (3,)]
        assert staging_tables(s) == []
        assert s.tables() == ["t"]
        assert s.write_table("t", pa.table({"id": [7, 8]}), mode="replace") == 2
        assert table_rows(s, "t") == [(7,), (8,)]
