"""Ctrl-C interrupts a running query, raises KeyboardInterrupt, and the session still works."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from _drivers_util import stop_child

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")

SCRIPT = textwrap.dedent(
    """
    import sys

    import duckmerge

    s = duckmerge.Session(sys.argv[1])
    print("READY", flush=True)
    try:
        s.sql("SELECT count(*) FROM range(100000000000)").fetchone()
        print("FINISHED", flush=True)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
    print(s.sql("select 42").fetchone(), flush=True)
    s.close()
    """
)


def start_child(tmp_path: Path, source: str) -> subprocess.Popen[str]:
    """Runs ``source`` as a script with a session folder in ``tmp_path``."""
    script = tmp_path / "child.py"
    script.write_text(source, encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "s")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_line_reader(proc: subprocess.Popen[str]) -> queue.Queue[tuple[float, str | None]]:
    """Lines of the child's stdout with the time each arrived; None at EOF."""
    lines: queue.Queue[tuple[float, str | None]] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((time.monotonic(), line.rstrip("\n")))
        lines.put((time.monotonic(), None))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def child_output(proc: subprocess.Popen[str]) -> str:
    """The child's return code and stderr, for failure messages (kills it if still running)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    stderr = proc.stderr.read() if proc.stderr is not None else ""
    return f"return code {proc.returncode}, stderr:\n{stderr}"


def wait_for(
    proc: subprocess.Popen[str],
    lines: queue.Queue[tuple[float, str | None]],
    wanted: str,
    deadline: float,
) -> float:
    """Time at which ``wanted`` was printed; fails on EOF, another verdict or the deadline."""
    seen: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise queue.Empty
            at, line = lines.get(timeout=remaining)
        except queue.Empty:
            pytest.fail(f"no {wanted!r} in time; output so far: {seen}; {child_output(proc)}")
        if line is None:
            pytest.fail(f"child ended before {wanted!r}; output: {seen}; {child_output(proc)}")
        seen.append(line)
        if line == wanted:
            return at
        if line == "FINISHED":
            pytest.fail(f"the query finished instead of being interrupted; {child_output(proc)}")


def test_ctrl_c_interrupts_query_and_session_survives(tmp_path: Path) -> None:
    proc = start_child(tmp_path, SCRIPT)
    try:
        lines = start_line_reader(proc)
        wait_for(proc, lines, "READY", time.monotonic() + 60)
        time.sleep(1)
        assert proc.poll() is None, "child exited before the signal"

        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)

        interrupted_at = wait_for(proc, lines, "INTERRUPTED", sent + 5)
        assert interrupted_at - sent <= 5
        wait_for(proc, lines, "(42,)", time.monotonic() + 30)
        returncode = proc.wait(timeout=30)
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        assert returncode == 0, stderr
    finally:
        stop_child(proc)


WRITE_SCRIPT = textwrap.dedent(
    """
    import sys, time

    import duckmerge
    import pyarrow as pa

    s = duckmerge.Session(sys.argv[1], threads=2)
    s.write_table("t", pa.table({"id": [1, 2, 3]}))
    schema = pa.schema([("id", pa.int64())])

    def batches():
        start = 0
        while True:  # endless: only Ctrl-C ends this load
            yield pa.record_batch([pa.array(range(start, start + 50_000), pa.int64())], schema=schema)
            start += 50_000
            if start == 1_000_000:
                print("LOADING", flush=True)
            time.sleep(0.01)

    try:
        s.write_table("t", pa.RecordBatchReader.from_batches(schema, batches()), mode="replace")
        print("FINISHED", flush=True)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
    print(sorted(s.table("t").fetchall()), s.tables(), flush=True)
    s.close()
    """
)


def test_ctrl_c_during_write_table_keeps_the_previous_table(tmp_path: Path) -> None:
    proc = start_child(tmp_path, WRITE_SCRIPT)
    try:
        lines = start_line_reader(proc)
        wait_for(proc, lines, "LOADING", time.monotonic() + 60)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        wait_for(proc, lines, "INTERRUPTED", sent + 5)
        wait_for(proc, lines, "[(1,), (2,), (3,)] ['t']", time.monotonic() + 30)
        assert proc.wait(timeout=30) == 0
    finally:
        stop_child(proc)
