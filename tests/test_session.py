"""Session folder, settings, logs, reopening, locking and cleanup."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckmerge
import pyarrow as pa
import pytest

ENV_VARS = ("DUCKMERGE_MEMORY_LIMIT", "DUCKMERGE_THREADS", "DUCKMERGE_TEMP_DIR")

_UNITS = {
    "": 1,
    "B": 1,
    "BYTES": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}


def parse_size(text: object) -> float:
    """Bytes in a size such as "300MB", "286.1 MiB" or "300000000" (loosely)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    assert match, f"not a size: {text!r}"
    unit = match.group(2).upper()
    assert unit in _UNITS, f"unknown unit in {text!r}"
    return float(match.group(1)) * _UNITS[unit]


def assert_about(size: object, expected_bytes: float) -> None:
    """``size`` is within 10% of ``expected_bytes`` (so 300MB and 300MiB both pass)."""
    got = parse_size(size)
    assert 0.9 * expected_bytes <= got <= 1.1 * expected_bytes, (
        f"{size!r} is not about {expected_bytes}"
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def parse_utc(ts: object) -> dt.datetime:
    assert isinstance(ts, str), ts
    parsed = dt.datetime.fromisoformat(ts[:-1] + "+00:00" if ts.endswith("Z") else ts)
    assert parsed.utcoffset() == dt.timedelta(0), f"{ts!r} is not UTC"
    return parsed


def find_key(obj: object, key: str) -> list[object]:
    """Every value stored under ``key`` anywhere in a JSON document."""
    found: list[object] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                found.append(v)
            found.extend(find_key(v, key))
    elif isinstance(obj, list):
        for item in obj:
            found.extend(find_key(item, key))
    return found


def same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def small_table() -> pa.Table:
    return pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": pa.array(["a", "b", "c"])})


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


# --- folder lifetime -------------------------------------------------------


def test_session_without_path_uses_temp_dir_removed_on_close() -> None:
    s = duckmerge.Session()
    base = Path(s.base_path)
    try:
        assert base.is_dir()
        assert (base / "pipeline_data.duckdb").is_file()
        s.write_table("t", small_table())
    finally:
        s.close()
    assert not base.exists()


def test_session_without_path_keep_true_keeps_folder() -> None:
    s = duckmerge.Session(keep=True)
    base = Path(s.base_path)
    try:
        try:
            s.write_table("t", small_table())
        finally:
            s.close()
        assert base.is_dir()
        assert (base / "pipeline_data.duckdb").is_file()
        with duckmerge.Session(base) as again:
            assert sorted(again.table("t").fetchall()) == [(1, "a"), (2, "b"), (3, "c")]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_two_temp_sessions_get_different_folders_and_ids() -> None:
    a = duckmerge.Session()
    try:
        b = duckmerge.Session()
        try:
            assert not same_path(a.base_path, b.base_path)
            assert a.session_id != b.session_id
        finally:
            b.close()
    finally:
        a.close()


def test_explicit_path_is_kept_after_close(session_path: Path) -> None:
    s = duckmerge.Session(session_path)
    s.close()
    assert session_path.is_dir()
    assert (session_path / "pipeline_data.duckdb").is_file()


def test_close_twice_is_fine(session_path: Path) -> None:
    s = duckmerge.Session(session_path)
    assert s.closed is False
    s.close()
    s.close()
    assert s.closed is True


def test_context_manager_closes_and_releases_session(session_path: Path) -> None:
    with duckmerge.Session(session_path) as s:
        assert isinstance(s, duckmerge.Session)
        assert s.closed is False
        s.write_table("t", small_table())
    assert s.closed is True
    with duckmerge.Session(session_path) as again:
        assert len(again.table("t")) == 3


def test_context_manager_closes_on_exception_and_does_not_swallow_it(session_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="inside the block"),
        duckmerge.Session(session_path) as s,
    ):
        raise RuntimeError("inside the block")
    assert s.closed is True
    duckmerge.Session(session_path).close()


# --- layout and attributes -------------------------------------------------


def test_session_folder_layout(session: duckmerge.Session, session_path: Path) -> None:
    session.log_event("layout_check")
    session.log_metric("layout_metric", 1)

    assert (session_path / "pipeline_data.duckdb").is_file()
    assert (session_path / "logs").is_dir()
    assert (session_path / "logs" / "events.jsonl").is_file()
    assert (session_path / "logs" / "metrics.jsonl").is_file()
    assert (session_path / "artifacts").is_dir()
    assert (session_path / "manifest.json").is_file()


def test_manifest_records_duckdb_version_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with duckmerge.Session(path, memory_limit="300MB", threads=1) as s:
        memory_limit = s.memory_limit
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))

    assert isinstance(manifest, dict)
    text = json.dumps(manifest)
    assert duckmerge.DUCKDB_VERSION.lstrip("v") in text
    threads = find_key(manifest, "threads")
    assert threads and all(v in (1, "1") for v in threads), threads
    limits = find_key(manifest, "memory_limit")
    assert limits, manifest
    for value in limits:
        assert_about(value, 300e6)
    assert_about(memory_limit, 300e6)


def test_attributes_are_strings_pointing_into_the_session(
    session: duckmerge.Session, session_path: Path
) -> None:
    for attr in ("session_id", "base_path", "artifacts_dir", "output_dir", "db_path", "temp_dir"):
        value = getattr(session, attr)
        assert isinstance(value, str), (attr, value)
        assert value, attr
    assert same_path(session.base_path, session_path)
    assert os.path.isabs(session.base_path)
    assert same_path(session.artifacts_dir, session_path / "artifacts")
    assert same_path(session.db_path, session_path / "pipeline_data.duckdb")


# --- logs --------------------------------------------------------------------


def test_log_event_appends_json_line(session: duckmerge.Session, session_path: Path) -> None:
    before = dt.datetime.now(dt.timezone.utc)
    session.log_event("x", rows=3)

    records = [
        r for r in read_jsonl(session_path / "logs" / "events.jsonl") if r.get("event") == "x"
    ]
    assert len(records) == 1
    record = records[0]
    assert {"ts", "session", "event", "rows"} <= record.keys()
    assert record["session"] == session.session_id
    assert record["rows"] == 3
    ts = parse_utc(record["ts"])
    assert (
        before - dt.timedelta(seconds=5)
        <= ts
        <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    )


def test_log_event_keeps_json_value_types(session: duckmerge.Session, session_path: Path) -> None:
    session.log_event(
        "typed", name="žluť", ratio=0.5, items=[1, "two"], nested={"k": "v"}, nothing=None, ok=True
    )

    (record,) = [
        r for r in read_jsonl(session_path / "logs" / "events.jsonl") if r.get("event") == "typed"
    ]
    assert record["name"] == "žluť"
    assert record["ratio"] == 0.5
    assert record["items"] == [1, "two"]
    assert record["nested"] == {"k": "v"}
    assert record["nothing"] is None
    assert record["ok"] is True


def test_log_events_append_in_order(session: duckmerge.Session, session_path: Path) -> None:
    for i in range(3):
        session.log_event("step", i=i)

    records = [
        r for r in read_jsonl(session_path / "logs" / "events.jsonl") if r.get("event") == "step"
    ]
    assert [r["i"] for r in records] == [0, 1, 2]


def test_log_event_appends_across_reopen(session_path: Path) -> None:
    with duckmerge.Session(session_path) as s:
        s.log_event("first")
    with duckmerge.Session(session_path) as s:
        s.log_event("second")

    events = [r["event"] for r in read_jsonl(session_path / "logs" / "events.jsonl")]
    assert "first" in events
    assert "second" in events
    assert events.index("first") < events.index("second")


def test_log_metric_appends_json_line(session: duckmerge.Session, session_path: Path) -> None:
    session.log_metric("rows_read", 10, step="crm")

    records = [
        r
        for r in read_jsonl(session_path / "logs" / "metrics.jsonl")
        if r.get("metric") == "rows_read"
    ]
    assert len(records) == 1
    record = records[0]
    assert {"ts", "session", "metric", "value", "tags"} <= record.keys()
    assert record["session"] == session.session_id
    assert record["value"] == 10
    assert record["tags"] == {"step": "crm"}
    parse_utc(record["ts"])


def test_log_metric_keeps_float_values(session: duckmerge.Session, session_path: Path) -> None:
    session.log_metric("match_rate", 0.25)

    (record,) = [
        r
        for r in read_jsonl(session_path / "logs" / "metrics.jsonl")
        if r.get("metric") == "match_rate"
    ]
    assert record["value"] == 0.25


# --- settings ----------------------------------------------------------------


def test_memory_limit_and_threads_reach_duckdb(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    with duckmerge.Session(tmp_path / "s", memory_limit="300MB", threads=1) as s:
        limit = s.sql("select current_setting('memory_limit')").fetchone()
        threads = s.sql("select current_setting('threads')").fetchone()
        assert limit is not None and threads is not None
        assert_about(limit[0], 300e6)
        assert threads[0] == 1
        assert s.threads == 1
        assert_about(s.memory_limit, 300e6)


def test_env_vars_set_defaults(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    spill = tmp_path / "spill"
    clean_env.setenv("DUCKMERGE_MEMORY_LIMIT", "200MB")
    clean_env.setenv("DUCKMERGE_THREADS", "1")
    clean_env.setenv("DUCKMERGE_TEMP_DIR", str(spill))

    with duckmerge.Session(tmp_path / "s") as s:
        assert_about(s.memory_limit, 200e6)
        assert s.threads == 1
        assert same_path(s.temp_dir, spill)
        limit = s.sql("select current_setting('memory_limit')").fetchone()
        assert limit is not None
        assert_about(limit[0], 200e6)
        assert s.sql("select current_setting('threads')").fetchone() == (1,)
        temp = s.sql("select current_setting('temp_directory')").fetchone()
        assert temp is not None
        assert same_path(temp[0], spill)


def test_explicit_arguments_override_env(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DUCKMERGE_MEMORY_LIMIT", "200MB")
    clean_env.setenv("DUCKMERGE_THREADS", "1")
    clean_env.setenv("DUCKMERGE_TEMP_DIR", str(tmp_path / "env_spill"))

    with duckmerge.Session(
        tmp_path / "s", memory_limit="400MB", threads=2, temp_dir=tmp_path / "arg_spill"
    ) as s:
        assert_about(s.memory_limit, 400e6)
        assert s.threads == 2
        assert same_path(s.temp_dir, tmp_path / "arg_spill")
        assert s.sql("select current_setting('threads')").fetchone() == (2,)


def test_defaults_without_env(session_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    cores = {os.cpu_count() or 1}
    if hasattr(os, "sched_getaffinity"):
        cores.add(len(os.sched_getaffinity(0)))
    expected_threads = {max(1, c - 1) for c in cores}

    with duckmerge.Session(session_path) as s:
        assert s.threads in expected_threads
        assert same_path(s.temp_dir, session_path / "tmp")
        assert_about(s.memory_limit, 500e6)
        limit = s.sql("select current_setting('memory_limit')").fetchone()
        assert limit is not None
        assert_about(limit[0], 500e6)
        assert s.sql("select current_setting('threads')").fetchone() == (s.threads,)


@pytest.mark.parametrize(
    "kwargs",
    [{"threads": 0}, {"threads": -1}, {"memory_limit": "lots of memory"}, {"memory_limit": "12XB"}],
    ids=["threads-0", "threads-minus-1", "memory-garbage", "memory-bad-unit"],
)
def test_invalid_settings_raise_config_error(
    session_path: Path, clean_env: pytest.MonkeyPatch, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(duckmerge.ConfigError) as info:
        duckmerge.Session(session_path, **kwargs)

    assert isinstance(info.value, ValueError)
    assert str(next(iter(kwargs.values()))) in str(info.value)
    # nothing stays locked after the failed open
    duckmerge.Session(session_path).close()


@pytest.mark.parametrize(
    ("var", "value"),
    [("DUCKMERGE_THREADS", "abc"), ("DUCKMERGE_THREADS", "0"), ("DUCKMERGE_MEMORY_LIMIT", "huge")],
)
def test_invalid_env_settings_raise_config_error_naming_the_variable(
    session_path: Path, clean_env: pytest.MonkeyPatch, var: str, value: str
) -> None:
    clean_env.setenv(var, value)

    with pytest.raises(duckmerge.ConfigError) as info:
        duckmerge.Session(session_path)

    assert var in str(info.value)


# --- reopening and the file on disk ----------------------------------------------


def test_table_is_seen_after_reopen(session_path: Path) -> None:
    with duckmerge.Session(session_path) as s:
        s.write_table("t", small_table())

    with duckmerge.Session(session_path) as s:
        assert "t" in s.tables()
        assert s.table("t").to_arrow().to_pydict() == {"id": [1, 2, 3], "name": ["a", "b", "c"]}


def test_file_opens_in_duckdb_python_after_close(session_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    with duckmerge.Session(session_path) as s:
        s.write_table("t", small_table())
        s.write_table("extract-movies", small_table())

    con = duckdb.connect(str(session_path / "pipeline_data.duckdb"))
    try:
        assert con.execute("select id, name from t order by id").fetchall() == [
            (1, "a"),
            (2, "b"),
            (3, "c"),
        ]
        assert con.execute('select count(*) from "extract-movies"').fetchone() == (3,)
    finally:
        con.close()


# --- locking -----------------------------------------------------------------------


def open_in_subprocess(path: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys, duckmerge; duckmerge.Session(sys.argv[1]).close()"
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_second_process_gets_session_locked_error(
    session: duckmerge.Session, session_path: Path
) -> None:
    session.write_table("t", small_table())

    proc = open_in_subprocess(session_path)

    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "SessionLockedError" in proc.stderr, proc.stderr
    assert str(session_path) in proc.stderr or os.path.realpath(session_path) in proc.stderr, (
        proc.stderr
    )
    # the open session is untouched
    assert sorted(session.table("t").fetchall()) == [(1, "a"), (2, "b"), (3, "c")]
    session.write_table("t", small_table(), mode="append")
    assert len(session.table("t")) == 6


def test_second_process_can_open_after_close(session_path: Path) -> None:
    duckmerge.Session(session_path).close()

    proc = open_in_subprocess(session_path)

    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("spelling", ["same", "dot", "relative"])
def test_second_open_in_same_process_raises_session_locked_error(
    session: duckmerge.Session,
    session_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spelling: str,
) -> None:
    session.write_table("t", small_table())
    if spelling == "same":
        other: str = str(session_path)
    elif spelling == "dot":
        other = str(session_path) + os.sep + "."
    else:
        monkeypatch.chdir(session_path.parent)
        other = session_path.name

    with pytest.raises(duckmerge.SessionLockedError) as info:
        duckmerge.Session(other)

    assert isinstance(info.value, duckmerge.DuckMergeError)
    message = str(info.value)
    assert str(session_path) in message or os.path.realpath(session_path) in message, message
    assert sorted(session.table("t").fetchall()) == [(1, "a"), (2, "b"), (3, "c")]


def test_leftover_staging_tables_are_dropped_on_open(session_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    with duckmerge.Session(session_path) as s:
        s.write_table("keep_me", small_table())
        s.write_table("my_staging_area", small_table())

    con = duckdb.connect(str(session_path / "pipeline_data.duckdb"))
    try:
        con.execute("create table _duckmerge_staging_leftover as select 1 as a")
    finally:
        con.close()

    with duckmerge.Session(session_path) as s:
        names = [r[0] for r in s.sql("select table_name from duckdb_tables()").fetchall()]
        assert "_duckmerge_staging_leftover" not in names
        assert "_duckmerge_staging_leftover" not in s.tables()
        assert set(s.tables()) == {"keep_me", "my_staging_area"}
        assert len(s.table("keep_me")) == 3
        assert len(s.table("my_staging_area")) == 3


# --- closed sessions -------------------------------------------------------------------

CLOSED_OPERATIONS: dict[str, Callable[[duckmerge.Session], object]] = {
    "sql": lambda s: s.sql("select 1").fetchall(),
    "execute": lambda s: s.execute("select 1").fetchall(),
    "table": lambda s: s.table("t").fetchall(),
    "tables": lambda s: s.tables(),
    "write_table": lambda s: s.write_table("u", small_table()),
    "get_db_connection": lambda s: s.get_db_connection(),
}


@pytest.mark.parametrize("operation", sorted(CLOSED_OPERATIONS))
def test_closed_session_raises(session_path: Path, operation: str) -> None:
    s = duckmerge.Session(session_path)
    s.write_table("t", small_table())
    s.close()

    with pytest.raises(duckmerge.DuckMergeError):
        CLOSED_OPERATIONS[operation](s)


def test_connection_of_closed_session_raises(session_path: Path) -> None:
    s = duckmerge.Session(session_path)
    conn = s.get_db_connection()
    s.close()

    with pytest.raises(duckmerge.DuckMergeError):
        conn.sql("select 1").fetchall()
    # and it does not keep the database locked
    duckmerge.Session(session_path).close()
