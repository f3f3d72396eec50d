"""``Connection``: SQL with parameters, errors, and use from several threads."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckmerge
import pyarrow as pa
import pytest


def run_in_daemon_threads(
    work: Callable[[int], Any], count: int
) -> list[concurrent.futures.Future[Any]]:
    """Run ``work(i)`` in ``count`` daemon threads; a deadlock cannot hang pytest's exit."""
    futures: list[concurrent.futures.Future[Any]] = []
    for i in range(count):
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def target(i: int = i, future: concurrent.futures.Future[Any] = future) -> None:
            try:
                future.set_result(work(i))
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                future.set_exception(exc)

        threading.Thread(target=target, name=f"worker-{i}", daemon=True).start()
        futures.append(future)
    return futures


def test_get_db_connection_returns_connection(session: duckmerge.Session) -> None:
    assert isinstance(session.get_db_connection(), duckmerge.Connection)


def test_execute_with_params_and_sql(session: duckmerge.Session) -> None:
    conn = session.get_db_connection()

    conn.execute("create table t(a int)")
    conn.execute("insert into t values (?), (?)", [1, 2])

    assert conn.sql("select sum(a) from t").fetchone() == (3,)
    assert session.sql("select a from t order by a").fetchall() == [(1,), (2,)]


def test_params_are_values_not_sql(session: duckmerge.Session) -> None:
    conn = session.get_db_connection()
    conn.execute("create table t(s varchar, n bigint, f double, b boolean)")
    evil = "x'); DROP TABLE t; --"

    conn.execute("insert into t values (?, ?, ?, ?)", (evil, None, 2.5, True))

    assert conn.sql("select * from t").fetchall() == [(evil, None, 2.5, True)]
    assert conn.sql("select ? || ?", ["ž", "🦆"]).fetchone() == ("ž🦆",)
    assert session.sql("select s from t where n is null and s = ?", [evil]).fetchone() == (evil,)


def test_wrong_number_of_params_raises(session: duckmerge.Session) -> None:
    with pytest.raises(duckmerge.DuckMergeError):
        session.sql("select ? + ?", [1]).fetchall()


def test_table_missing_raises_table_not_found(session: duckmerge.Session) -> None:
    conn = session.get_db_connection()
    for lookup in (conn.table, session.table):
        with pytest.raises(duckmerge.TableNotFoundError) as info:
            lookup("missing").fetchall()
        assert isinstance(info.value, LookupError)
        assert isinstance(info.value, duckmerge.DuckMergeError)
        assert "missing" in str(info.value)


def test_tables_lists_names(session: duckmerge.Session) -> None:
    conn = session.get_db_connection()
    assert conn.tables() == []
    conn.execute("create table t(a int)")
    session.write_table("u", pa.table({"b": [1]}))

    assert set(conn.tables()) == {"t", "u"}
    assert set(session.tables()) == {"t", "u"}
    assert all(isinstance(name, str) for name in conn.tables())


def test_table_reads_the_named_table(session: duckmerge.Session) -> None:
    conn = session.get_db_connection()
    conn.execute('create table "with space"(a int)')
    conn.execute('insert into "with space" values (5)')
    assert conn.table("with space").fetchall() == [(5,)]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_table_to_arrow_keeps_table_order_with_parallel_conversion(
    tmp_path: Path, threads: int
) -> None:
    # ``table()`` converts in DuckDB's worker threads and puts the chunks back
    # in table order; the result must be what ``SELECT *`` streams, row for row.
    with duckmerge.Session(tmp_path / "s", threads=threads) as s:
        s.execute(
            "create table t as select range as i, 'v' || range as s, "
            "case when range % 10 = 0 then null else range * 0.5 end as f, "
            "[range, range + 1] as l, {'k': range % 3} as st "
            "from range(700000)"
        )
        s.execute("delete from t where i % 11 = 4")  # holes in rowid
        fast = s.table("t").to_arrow()
        streamed = s.sql("select * from t").to_arrow()
        assert fast.schema == streamed.schema
        assert fast.equals(streamed)
        ids = fast.column("i").to_pylist()
        assert ids == [i for i in range(700000) if i % 11 != 4]
        # pandas and polars go through the same batches.
        assert s.table("t").to_pandas()["i"].tolist() == ids


def test_table_of_a_view_or_with_a_rowid_column_reads_correctly(
    session: duckmerge.Session,
) -> None:
    conn = session.get_db_connection()
    conn.execute("create table base as select range as i from range(5000)")
    conn.execute("create view v as select i * 2 as d from base where i < 3000")
    assert conn.table("v").to_arrow().column("d").to_pylist() == [2 * i for i in range(3000)]
    # A column called rowid hides DuckDB's own; its values are returned as they are.
    conn.execute("create table r as select 4999 - range as rowid, range as x from range(5000)")
    got = conn.table("r").to_arrow()
    assert got.column("x").to_pylist() == list(range(5000))
    assert got.column("rowid").to_pylist() == [4999 - i for i in range(5000)]
    conn.execute('create table "__duckmerge_row" as select 7 as "__duckmerge_row"')
    assert conn.table("__duckmerge_row").fetchall() == [(7,)]


def test_syntax_error_raises_sql_error_with_duckdb_message(session: duckmerge.Session) -> None:
    conn = session.get_db_connection()
    with pytest.raises(duckmerge.SqlError) as info:
        conn.sql("selec 1 frm nowhere").fetchall()

    assert isinstance(info.value, duckmerge.DuckMergeError)
    message = str(info.value).lower()
    assert "syntax error" in message or "parser error" in message, message


def test_sql_error_keeps_duckdb_catalog_message(session: duckmerge.Session) -> None:
    with pytest.raises(duckmerge.DuckMergeError) as info:
        session.sql("select * from no_such_table_here").fetchall()
    assert "no_such_table_here" in str(info.value)


def test_connection_works_after_a_failed_statement(session: duckmerge.Session) -> None:
    conn = session.get_db_connection()
    conn.execute("create table t(a int)")
    with pytest.raises(duckmerge.DuckMergeError):
        conn.execute("insert into t values ('not a number')")
    conn.execute("insert into t values (1)")
    assert conn.sql("select count(*) from t").fetchone() == (1,)


def test_error_hierarchy() -> None:
    assert issubclass(duckmerge.DuckMergeError, Exception)
    assert issubclass(duckmerge.ConfigError, ValueError)
    assert issubclass(duckmerge.SourceNotFoundError, FileNotFoundError)
    assert issubclass(duckmerge.TableNotFoundError, LookupError)
    for cls in (
        duckmerge.ConfigError,
        duckmerge.SourceNotFoundError,
        duckmerge.TableNotFoundError,
        duckmerge.CsvError,
        duckmerge.SessionLockedError,
        duckmerge.CancelledError,
        duckmerge.SqlError,
    ):
        assert issubclass(cls, duckmerge.DuckMergeError), cls
    assert not issubclass(duckmerge.DuckMergeError, ValueError)


def test_package_reexports_the_core() -> None:
    from duckmerge import _duckmerge

    for name in (
        "Session",
        "Connection",
        "Result",
        "DuckMergeError",
        "ConfigError",
        "SourceNotFoundError",
        "TableNotFoundError",
        "CsvError",
        "SessionLockedError",
        "CancelledError",
        "SqlError",
    ):
        assert getattr(duckmerge, name) is getattr(_duckmerge, name), name
    assert duckmerge.DUCKDB_VERSION == _duckmerge.DUCKDB_VERSION


def test_versions_are_non_empty_strings() -> None:
    assert isinstance(duckmerge.DUCKDB_VERSION, str) and duckmerge.DUCKDB_VERSION
    assert isinstance(duckmerge.__version__, str) and duckmerge.__version__


def test_csv_error_has_path_and_line() -> None:
    assert hasattr(duckmerge.CsvError, "path")
    assert hasattr(duckmerge.CsvError, "line")
    err = duckmerge.CsvError("bad row")
    assert err.path is None
    assert err.line is None
    assert "bad row" in str(err)


def test_threads_share_one_session_without_deadlock(session: duckmerge.Session) -> None:
    # Many chunks per table, two tables: concurrent reads must not mix rows
    # (each read collects its own chunks from DuckDB's workers).
    n = 30_000
    expected = pa.table(
        {"i": pa.array(range(n), pa.int64()), "s": pa.array([f"v{i}" for i in range(n)])}
    )
    session.write_table("t", expected)
    session.write_table("u", pa.table({"i": pa.array(range(0, -n, -1), pa.int64())}))

    def work(worker: int) -> int:
        done = 0
        for q in range(25):
            if q % 3 == 0:
                assert session.sql("select count(*) from range(100000)").fetchone() == (100000,)
            elif q % 3 == 1:
                got = session.table("t").to_arrow()
                assert got.num_rows == n
                assert got.column("i").to_pylist() == list(range(n))
                assert got.column("s").to_pylist()[-1] == f"v{n - 1}"
            else:
                got = session.table("u").to_arrow()
                assert got.column("i").to_pylist() == list(range(0, -n, -1))
            done += 1
        return worker * 1000 + done

    futures = run_in_daemon_threads(work, 4)

    assert sorted(f.result(timeout=120) for f in futures) == [25, 1025, 2025, 3025]


def test_threads_share_one_connection_without_deadlock(session: duckmerge.Session) -> None:
    conn = session.get_db_connection()

    def work(worker: int) -> int:
        name = f"w{worker}"
        for round_ in range(5):
            n = conn.write_table(
                name, pa.table({"x": pa.array(range(round_ + 1), pa.int64())}), mode="replace"
            )
            assert n == round_ + 1
            assert conn.sql(f"select count(*) from {name}").fetchone() == (round_ + 1,)
            assert conn.sql("select sum(i) from range(?) t(i)", [1000]).fetchone() == (499500,)
        return worker

    futures = run_in_daemon_threads(work, 4)

    assert sorted(f.result(timeout=120) for f in futures) == [0, 1, 2, 3]
    assert set(session.tables()) == {"w0", "w1", "w2", "w3"}


def test_long_query_releases_the_gil(tmp_path: Path) -> None:
    ticks = 0
    query_seconds: list[float] = []

    # one DuckDB thread, so the query takes about a second on any machine
    with duckmerge.Session(tmp_path / "gil", threads=1) as s:

        def long_query() -> Any:
            start = time.monotonic()
            row = s.sql(
                "select count(*) from range(200000000) t(i) where hash(i) % 7 = 3"
            ).fetchone()
            query_seconds.append(time.monotonic() - start)
            return row

        [future] = run_in_daemon_threads(lambda _: long_query(), 1)
        deadline = time.monotonic() + 120
        while not future.done() and time.monotonic() < deadline:
            ticks += 1
            time.sleep(0.005)

        row = future.result(timeout=1)

    assert row is not None and row[0] > 0
    elapsed = query_seconds[0]
    assert elapsed > 0.2, f"query too fast ({elapsed:.3f}s) to tell whether the GIL is released"
    # with the GIL held the main thread would barely run while the query runs
    assert ticks >= elapsed / 0.005 * 0.2, (ticks, elapsed)
