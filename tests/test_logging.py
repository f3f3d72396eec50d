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
