"""Rust ``log`` records reach Python's ``logging`` under the "duckmerge" logger."""

from __future__ import annotations

import logging
from pathlib import Path

import duckmerge
import pyarrow as pa
import pytest


def duckmerge_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "duckmerge" or r.name.startswith("duckmerge.")]


def test_session_work_logs_to_duckmerge_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="duckmerge")

    with duckmerge.Session(tmp_path / "s") as s:
        s.write_table("t", pa.table({"a": [1, 2, 3]}))

    records = duckmerge_records(caplog)
    assert records, [(r.name, r.getMessage()) for r in caplog.records]
    assert any(r.levelno <= logging.INFO for r in records)
    assert all(r.getMessage() for r in records)


def test_log_level_of_duckmerge_logger_is_respected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="duckmerge")
    with duckmerge.Session(tmp_path / "first"):
        pass
    assert duckmerge_records(caplog)

    caplog.clear()
    caplog.set_level(logging.ERROR, logger="duckmerge")
    with duckmerge.Session(tmp_path / "second") as s:
        s.write_table("t", pa.table({"a": [1]}))

    assert [r for r in duckmerge_records(caplog) if r.levelno < logging.ERROR] == []


def test_statement_sql_is_shortened_at_debug_and_whole_at_level_5(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A step's debug line (``SQL 0.001s (CPU …): …``) carries the first 160
    characters of its statement; with the ``duckmerge`` logger at level 5
    (Rust's trace) the whole statement follows as ``in full: …``."""
    marker = "the_end_of_a_long_query"
    query = "SELECT " + ", ".join(f"{i} AS c{i}" for i in range(60)) + f", 1 AS {marker}"

    def messages() -> list[str]:
        return [r.getMessage() for r in duckmerge_records(caplog)]

    with duckmerge.Session(tmp_path / "s") as s:
        caplog.set_level(logging.DEBUG, logger="duckmerge")
        duckmerge.SqlProcessor().run(step_id="short", config={"query": query}, ctx=s)
        debug = [m for m in messages() if m.startswith("SQL ") and "SELECT 0 AS c0" in m]
        assert len(debug) == 1, messages()
        assert marker not in debug[0] and len(debug[0].split(": ", 1)[1]) == 160
        assert not any(marker in m for m in messages())

        caplog.clear()
        caplog.set_level(5, logger="duckmerge")
        duckmerge.SqlProcessor().run(step_id="whole", config={"query": query}, ctx=s)
        got = messages()
        at = next(i for i, m in enumerate(got) if m.startswith("SQL ") and "SELECT 0 AS c0" in m)
        assert got[at + 1].startswith("in full: CREATE TABLE"), got
        assert got[at + 1].endswith(f"1 AS {marker}\n)"), got[at + 1]
