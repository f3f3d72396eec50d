"""The three ctx kinds a driver accepts, and what the drivers ask of a ctx.

- ``session``: a ``duckmerge.Session``;
- ``connection``: a plain object whose ``get_db_connection()`` returns
  ``session.get_db_connection()`` (a ``duckmerge.Connection``);
- ``host``: a plain host object whose ``get_db_connection()`` returns a
  duckdb-python connection, so the same SQL runs there.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import duckmerge
import pytest
from _drivers_util import (
    RecordingCtx,
    all_table_names,
    column_types,
    fetch,
    staging_tables,
    table_rows,
    write_bytes,
)

KINDS = ["session", "connection", "host"]


@dataclass
class Kind:
    """A ctx of one kind plus the connection to look at its tables with."""

    name: str
    ctx: Any
    db: Any  # Session or duckdb-python connection: has .execute(sql).fetchall()
    recorder: RecordingCtx | None  # None for a Session (it logs to its own files)


def make_kind(name: str, session: duckmerge.Session, tmp_path: Path, **ctx_attrs: Any) -> Kind:
    if name == "session":
        return Kind(name, session, session, None)
    if name == "connection":
        rec = RecordingCtx(session.get_db_connection(), **ctx_attrs)
        return Kind(name, rec, session, rec)
    host = duckdb.connect(str(tmp_path / "host.duckdb"))
    rec = RecordingCtx(host, **ctx_attrs)
    return Kind(name, rec, host, rec)


@pytest.fixture(params=KINDS)
def kind(request, session, tmp_path) -> Iterator[Kind]:
    k = make_kind(request.param, session, tmp_path)
    yield k
    if k.name == "host":
        k.db.close()


def extract(ctx: Any, step_id: str, path: Path, **config: Any) -> dict[str, Any]:
    return duckmerge.CsvExtractor().run(
        step_id=step_id, config={"path": str(path), **config}, inputs=None, ctx=ctx
    )


# --- DRIVERS -----------------------------------------------------------------------


def test_drivers_registry_maps_component_names_to_classes():
    assert duckmerge.DRIVERS == {
        "filesystem.csv_extractor": duckmerge.CsvExtractor,
        "filesystem.csv_writer": duckmerge.CsvWriter,
        "duckdb.processor": duckmerge.SqlProcessor,
        "crm.merge": duckmerge.MergeDriver,
    }


@pytest.mark.parametrize(
    "component", sorted(["filesystem.csv_extractor", "filesystem.csv_writer", "duckdb.processor"])
)
def test_drivers_from_the_registry_run_with_keywords(session, tmp_path, component):
    f = write_bytes(tmp_path / "a.csv", "a,b\n1,2\n")
    duckmerge.CsvExtractor().run(step_id="src", config={"path": str(f)}, inputs=None, ctx=session)
    driver = duckmerge.DRIVERS[component]()
    config: dict[str, Any] = {
        "filesystem.csv_extractor": {"path": str(f)},
        "filesystem.csv_writer": {"path": str(tmp_path / "out.csv")},
        "duckdb.processor": {"query": "SELECT * FROM src"},
    }[component]
    inputs = {"table": "src"} if component == "filesystem.csv_writer" else None
    out = driver.run(step_id="step", config=config, inputs=inputs, ctx=session)
    assert out == ({} if component == "filesystem.csv_writer" else {"table": "step", "rows": 1})


# --- ctx without a connection --------------------------------------------------------


class NoConnection:
    def log_metric(self, name, value):
        pass


def _run_driver(driver: str, ctx: Any, tmp_path: Path, step_id: str = "my-step") -> Any:
    f = write_bytes(tmp_path / "a.csv", "a\n1\n")
    if driver == "extractor":
        return duckmerge.CsvExtractor().run(
            step_id=step_id, config={"path": str(f)}, inputs=None, ctx=ctx
        )
    if driver == "writer":
        return duckmerge.CsvWriter().run(
            step_id=step_id,
            config={"path": str(tmp_path / "o.csv")},
            inputs={"table": "t"},
            ctx=ctx,
        )
    return duckmerge.SqlProcessor().run(
        step_id=step_id, config={"query": "SELECT 1"}, inputs=None, ctx=ctx
    )


@pytest.mark.parametrize("driver", ["extractor", "writer", "processor"])
@pytest.mark.parametrize(
    "ctx", [None, NoConnection(), object()], ids=["none", "no-method", "object"]
)
def test_ctx_without_get_db_connection_is_an_error(tmp_path, driver, ctx):
    with pytest.raises(duckmerge.DuckMergeError) as err:
        _run_driver(driver, ctx, tmp_path)
    assert str(err.value) == "Step my-step: Context must provide get_db_connection()"


@pytest.mark.parametrize("driver", ["extractor", "writer", "processor"])
def test_ctx_argument_omitted_is_an_error(tmp_path, driver):
    f = write_bytes(tmp_path / "a.csv", "a\n1\n")
    cls, config, inputs = {
        "extractor": (duckmerge.CsvExtractor, {"path": str(f)}, None),
        "writer": (duckmerge.CsvWriter, {"path": str(tmp_path / "o.csv")}, {"table": "t"}),
        "processor": (duckmerge.SqlProcessor, {"query": "SELECT 1"}, None),
    }[driver]
    with pytest.raises(duckmerge.DuckMergeError) as err:
        cls().run(step_id="s1", config=config, inputs=inputs)
    assert str(err.value) == "Step s1: Context must provide get_db_connection()"


def test_get_db_connection_returning_something_unusable_is_config_error(tmp_path):
    class Weird:
        def get_db_connection(self):
            return 42

    with pytest.raises(duckmerge.ConfigError) as err:
        _run_driver("processor", Weird(), tmp_path)
    assert "Step my-step" in str(err.value)


# --- the same steps on each kind -------------------------------------------------------

SOURCE = (
    "id,email,note,score,joined,zip\n"
    '1,ann@example.com,"a, b",1.5,2024-01-02,00123\n'
    '2,bob@example.com,"he said ""hi""",2.25,2023-12-31,04567\n'
    '3,,"two\nlines",,2022-06-30,10001\n'
    "4,dan@example.com,Žluťoučký kůň,-3.0,,99999\n"
)


def run_pipeline(k: Kind, data: Path, out: Path) -> dict[str, Any]:
    """Runs every driver with a spread of options; returns what came out."""
    results: dict[str, Any] = {}
    src = write_bytes(data / "src.csv", SOURCE)
    results["extract"] = extract(k.ctx, "src", src, dtype={"zip": "str"})
    gz = data / "src.csv.gz"
    gz.write_bytes(gzip.compress(SOURCE.encode()))
    results["extract_gz"] = extract(
        k.ctx, "src_gz", gz, columns=["zip", "id"], dtype={"zip": "str"}
    )
    cp = write_bytes(data / "cp.csv", "name;city\n€uro;Zürich\n".encode("cp1252"))
    results["extract_cp1252"] = extract(k.ctx, "cp", cp, encoding="cp1252", delimiter=";")
    u16 = write_bytes(data / "u16.csv", "name,city\nJosé,日本\n".encode("utf-16"))
    results["extract_utf16"] = extract(k.ctx, "u16", u16, encoding="utf-16")
    rag = write_bytes(data / "rag.csv", "a,b\n1,2\n3,4,5\n6,7\n")
    results["extract_reject"] = extract(k.ctx, "rag", rag, on_bad_lines="reject")
    results["extract_skip"] = extract(k.ctx, "rag_skip", rag, on_bad_lines="skip")
    na = write_bytes(data / "na.csv", "a,b,when\n1,NA,2024-01-02\n,x,\n")
    results["extract_na"] = extract(k.ctx, "na", na, na_values=["NA"], parse_dates=["when"])
    results["sql"] = duckmerge.SqlProcessor().run(
        step_id="joined",
        config={
            "query": "SELECT s.id, s.email, g.zip FROM src s JOIN src_gz g USING (id) WHERE s.score > 0"
        },
        inputs={"tables": ["src", "src_gz"]},
        ctx=k.ctx,
    )
    results["write"] = duckmerge.CsvWriter().run(
        step_id="write", config={"path": str(out / "src.csv")}, inputs={"table": "src"}, ctx=k.ctx
    )
    results["write_parquet"] = duckmerge.CsvWriter().run(
        step_id="write_pq",
        config={"path": str(out / "joined.parquet")},
        inputs={"table": "joined"},
        ctx=k.ctx,
    )
    results["write_cp1252"] = duckmerge.CsvWriter().run(
        step_id="write_cp",
        config={
            "path": str(out / "cp.csv"),
            "encoding": "cp1252",
            "newline": "crlf",
            "quoting": "all",
        },
        inputs={"table": "cp"},
        ctx=k.ctx,
    )
    results["csv_bytes"] = (out / "src.csv").read_bytes()
    results["cp_bytes"] = (out / "cp.csv").read_bytes()
    results["parquet"] = (
        duckdb.connect()
        .execute("SELECT * FROM read_parquet(?) ORDER BY ALL", [str(out / "joined.parquet")])
        .fetchall()
    )
    tables = ["src", "src_gz", "cp", "u16", "rag", "rag_skip", "rag__rejects", "na", "joined"]
    for t in tables:
        results[f"table {t}"] = (column_types(k.db, t), table_rows(k.db, t))
    results["staging"] = staging_tables(k.db)
    return results


def test_all_three_kinds_give_identical_results(tmp_path):
    outcomes: dict[str, dict[str, Any]] = {}
    for name in KINDS:
        base = tmp_path / name
        base.mkdir()
        with duckmerge.Session(base / "s") as session:
            k = make_kind(name, session, base)
            try:
                outcomes[name] = run_pipeline(k, base / "data", base / "out")
            finally:
                if name == "host":
                    k.db.close()
    reference = outcomes["session"]
    assert reference["extract"] == {"table": "src", "rows": 4}
    assert reference["extract_reject"] == {"table": "rag", "rows": 2, "rows_skipped": 1}
    assert reference["staging"] == []
    for name in ["connection", "host"]:
        for key in reference:
            assert outcomes[name][key] == reference[key], (
                f"{name}: {key} differs from the Session's"
            )


def test_each_kind_loads_the_same_table(kind, tmp_path):
    f = write_bytes(tmp_path / "p.csv", "id,name,zip\n1,Ann,00123\n2,Bob,04567\n")
    assert extract(kind.ctx, "people", f, dtype={"zip": "str"}) == {"table": "people", "rows": 2}
    assert column_types(kind.db, "people") == [
        ("id", "BIGINT"),
        ("name", "VARCHAR"),
        ("zip", "VARCHAR"),
    ]
    assert table_rows(kind.db, "people") == [(1, "Ann", "00123"), (2, "Bob", "04567")]
    assert staging_tables(kind.db) == []


def test_host_kind_writes_into_the_host_database_only(session, tmp_path):
    k = make_kind("host", session, tmp_path)
    try:
        f = write_bytes(tmp_path / "p.csv", "id\n1\n")
        extract(k.ctx, "people", f)
        assert all_table_names(k.db) == ["people"]
        assert "people" not in all_table_names(session)
    finally:
        k.db.close()


def test_each_kind_reports_sql_errors_naming_the_step(kind):
    with pytest.raises(duckmerge.SqlError) as err:
        duckmerge.SqlProcessor().run(
            step_id="bad", config={"query": "SELECT * FROM nowhere"}, inputs=None, ctx=kind.ctx
        )
    assert isinstance(err.value, duckmerge.DuckMergeError)
    assert "Step bad" in str(err.value)
    assert "nowhere" in str(err.value)
    assert staging_tables(kind.db) == []


def test_each_kind_keeps_previous_table_after_failing_extract(kind, tmp_path):
    good = write_bytes(tmp_path / "good.csv", "a,b\n10,20\n")
    extract(kind.ctx, "step", good)
    bad = write_bytes(tmp_path / "bad.csv", "a,b\n1,2\n3,4,5\n6,7\n")
    with pytest.raises(duckmerge.CsvError) as err:
        extract(kind.ctx, "step", bad)
    assert err.value.line == 3
    assert err.value.path == str(bad)
    assert table_rows(kind.db, "step") == [(10, 20)]
    assert staging_tables(kind.db) == []


def test_each_kind_keeps_previous_table_after_failing_sql(kind):
    proc = duckmerge.SqlProcessor()
    proc.run(step_id="t", config={"query": "SELECT 1 AS a"}, inputs=None, ctx=kind.ctx)
    with pytest.raises(duckmerge.SqlError):
        proc.run(
            step_id="t",
            config={"query": "SELECT CAST('x' AS INTEGER) AS a"},
            inputs=None,
            ctx=kind.ctx,
        )
    assert table_rows(kind.db, "t") == [(1,)]
    assert staging_tables(kind.db) == []


def test_each_kind_reports_missing_writer_table(kind, tmp_path):
    with pytest.raises(duckmerge.TableNotFoundError) as err:
        duckmerge.CsvWriter().run(
            step_id="w",
            config={"path": str(tmp_path / "o.csv")},
            inputs={"table": "nowhere"},
            ctx=kind.ctx,
        )
    assert "does not exist" in str(err.value)
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("step_id", ["extract-movies", 'x"; DROP TABLE y; --'])
def test_each_kind_treats_step_id_as_a_name(kind, tmp_path, step_id):
    kind.db.execute("CREATE TABLE y AS SELECT 1 AS v")
    f = write_bytes(tmp_path / "a.csv", "a\n1\n2\n")
    assert extract(kind.ctx, step_id, f) == {"table": step_id, "rows": 2}
    assert fetch(kind.db, "SELECT v FROM y") == [(1,)]
    assert step_id in all_table_names(kind.db)


# --- logging hooks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["connection", "host"])
def test_log_metric_gets_exactly_two_positional_arguments(session, tmp_path, name):
    k = make_kind(name, session, tmp_path)
    try:
        rag = write_bytes(tmp_path / "r.csv", "a,b\n1,2\n3,4,5\n6,7\n8,9\n")
        extract(k.ctx, "r", rag, on_bad_lines="skip")
        duckmerge.CsvWriter().run(
            step_id="w", config={"path": str(tmp_path / "o.csv")}, inputs={"table": "r"}, ctx=k.ctx
        )
        assert k.recorder is not None
        for args, kwargs in k.recorder.metric_calls:
            assert len(args) == 2 and kwargs == {}, (args, kwargs)
        assert ("rows_read", 3) in k.recorder.metrics
        assert ("rows_skipped", 1) in k.recorder.metrics
        assert ("rows_written", 3) in k.recorder.metrics
    finally:
        if name == "host":
            k.db.close()


@pytest.mark.parametrize("name", ["connection", "host"])
def test_log_event_gets_event_name_and_keyword_data_for_start_and_complete(session, tmp_path, name):
    k = make_kind(name, session, tmp_path)
    try:
        f = write_bytes(tmp_path / "a.csv", "a\n1\n")
        extract(k.ctx, "a", f)
        assert k.recorder is not None
        calls = k.recorder.event_calls
        assert len(calls) >= 2
        for args, kwargs in calls:
            assert len(args) == 1 and isinstance(args[0], str), args
            assert isinstance(kwargs, dict)
        assert "start" in calls[0][0][0] and "complete" in calls[-1][0][0]
        assert calls[-1][1].get("rows") == 1
    finally:
        if name == "host":
            k.db.close()


def test_session_ctx_logs_metrics_to_its_own_file(session, session_path, tmp_path):
    f = write_bytes(tmp_path / "a.csv", "a\n1\n2\n")
    extract(session, "a", f)
    lines = [
        json.loads(line)
        for line in (session_path / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any(r.get("metric") == "rows_read" and r.get("value") == 2 for r in lines), lines
    events = [
        json.loads(line)
        for line in (session_path / "logs" / "events.jsonl").read_text().splitlines()
    ]
    names = [e.get("event") for e in events]
    assert any("start" in str(n) for n in names) and any("complete" in str(n) for n in names), names


def test_ctx_with_only_get_db_connection_works(session, tmp_path):
    class Bare:
        def get_db_connection(self):
            return session.get_db_connection()

    f = write_bytes(tmp_path / "a.csv", "a\n1\n")
    assert extract(Bare(), "a", f) == {"table": "a", "rows": 1}


# --- relative paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["connection", "host"])
def test_relative_path_resolves_against_base_path_when_the_file_is_there(
    session, tmp_path, monkeypatch, name
):
    base = tmp_path / "base"
    cwd = tmp_path / "cwd"
    write_bytes(base / "in" / "rel.csv", "v\nfrom_base\n")
    write_bytes(cwd / "in" / "rel.csv", "v\nfrom_cwd\n")
    monkeypatch.chdir(cwd)
    k = make_kind(name, session, tmp_path, base_path=base)
    try:
        extract(k.ctx, "r", Path("in/rel.csv"))
        assert table_rows(k.db, "r") == [("from_base",)]
    finally:
        if name == "host":
            k.db.close()


@pytest.mark.parametrize("name", ["connection", "host"])
def test_relative_path_falls_back_to_working_directory(session, tmp_path, monkeypatch, name):
    base = tmp_path / "base"
    base.mkdir()
    cwd = tmp_path / "cwd"
    write_bytes(cwd / "only_here.csv", "v\nfrom_cwd\n")
    monkeypatch.chdir(cwd)
    k = make_kind(name, session, tmp_path, base_path=base)
    try:
        extract(k.ctx, "r", Path("only_here.csv"))
        assert table_rows(k.db, "r") == [("from_cwd",)]
    finally:
        if name == "host":
            k.db.close()


def test_relative_path_without_base_path_uses_working_directory(session, tmp_path, monkeypatch):
    write_bytes(tmp_path / "cwd" / "a.csv", "v\nfrom_cwd\n")
    monkeypatch.chdir(tmp_path / "cwd")
    ctx = RecordingCtx(session.get_db_connection())
    assert not hasattr(ctx, "base_path")
    extract(ctx, "r", Path("a.csv"))
    assert table_rows(session, "r") == [("from_cwd",)]


def test_session_base_path_is_used_for_relative_paths(session, session_path, tmp_path, monkeypatch):
    write_bytes(session_path / "inputs" / "a.csv", "v\nfrom_session\n")
    write_bytes(tmp_path / "cwd" / "inputs" / "a.csv", "v\nfrom_cwd\n")
    monkeypatch.chdir(tmp_path / "cwd")
    assert Path(session.base_path).resolve() == session_path.resolve()
    extract(session, "r", Path("inputs/a.csv"))
    assert table_rows(session, "r") == [("from_session",)]


def test_missing_relative_file_names_the_working_directory_path(session, tmp_path, monkeypatch):
    base = tmp_path / "base"
    base.mkdir()
    monkeypatch.chdir(tmp_path)
    ctx = RecordingCtx(session.get_db_connection(), base_path=base)
    with pytest.raises(duckmerge.SourceNotFoundError) as err:
        extract(ctx, "m", Path("missing.csv"))
    assert str(tmp_path / "missing.csv") in str(err.value)
