"""``write_table``: modes, atomic staging + swap, and names that are only names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import duckmerge
import pyarrow as pa
import pytest

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


@pytest.fixture(params=[1, 2], ids=["threads1", "threads2"])
def session(request: pytest.FixtureRequest, session_path: Path) -> Iterator[duckmerge.Session]:
    """A session with one thread and with two (DuckDB's Arrow scan converting
    and compressing row groups on both): every test runs on both."""
    s = duckmerge.Session(session_path, threads=request.param)
    try:
        yield s
    finally:
        s.close()


def make_table(ids: list[int]) -> pa.Table:
    return pa.table(
        {"id": pa.array(ids, pa.int64()), "name": pa.array([f"n{i}" for i in ids])}, schema=SCHEMA
    )


def rows_of(session: duckmerge.Session, name: str) -> list[tuple[object, ...]]:
    return sorted(session.table(name).fetchall())


def all_duckdb_table_names(session: duckmerge.Session) -> list[str]:
    return [row[0] for row in session.sql("select table_name from duckdb_tables()").fetchall()]


def failing_reader(batches: int = 3, rows_per_batch: int = 1000) -> pa.RecordBatchReader:
    """A stream that yields ``batches`` batches, then its producer raises."""

    def gen() -> Iterator[pa.RecordBatch]:
        for b in range(batches):
            ids = list(range(1000 + b * rows_per_batch, 1000 + (b + 1) * rows_per_batch))
            yield pa.record_batch(
                [pa.array(ids, pa.int64()), pa.array([f"new{i}" for i in ids])], schema=SCHEMA
            )
        raise ValueError("producer boom")

    return pa.RecordBatchReader.from_batches(SCHEMA, gen())


def test_write_table_returns_row_count(session: duckmerge.Session) -> None:
    assert session.write_table("t", make_table([1, 2, 3])) == 3


def test_write_table_returns_row_count_of_multi_batch_stream(session: duckmerge.Session) -> None:
    batches = [make_table(list(range(i * 10, i * 10 + 10))).to_batches()[0] for i in range(4)]
    reader = pa.RecordBatchReader.from_batches(SCHEMA, iter(batches))
    assert session.write_table("t", reader) == 40
    assert len(session.table("t").fetchall()) == 40


def test_create_mode_fails_when_table_exists_and_keeps_it(session: duckmerge.Session) -> None:
    session.write_table("contacts", make_table([1, 2, 3]), mode="create")

    with pytest.raises(duckmerge.DuckMergeError) as info:
        session.write_table("contacts", make_table([7, 8]), mode="create")

    assert "contacts" in str(info.value)
    assert rows_of(session, "contacts") == [(1, "n1"), (2, "n2"), (3, "n3")]
    names = all_duckdb_table_names(session)
    assert not [n for n in names if "staging" in n.lower()], names


def test_default_mode_is_create(session: duckmerge.Session) -> None:
    session.write_table("t", make_table([1]))

    with pytest.raises(duckmerge.DuckMergeError):
        session.write_table("t", make_table([5, 6]))

    assert rows_of(session, "t") == [(1, "n1")]


def test_replace_mode_replaces_rows_and_schema(session: duckmerge.Session) -> None:
    session.write_table("t", make_table([1, 2, 3]))

    written = session.write_table("t", pa.table({"other": pa.array(["x"])}), mode="replace")

    assert written == 1
    result = session.table("t")
    assert result.columns == ["other"]
    assert result.fetchall() == [("x",)]


def test_replace_mode_creates_missing_table(session: duckmerge.Session) -> None:
    assert session.write_table("fresh", make_table([4]), mode="replace") == 1
    assert rows_of(session, "fresh") == [(4, "n4")]


def test_append_mode_adds_rows(session: duckmerge.Session) -> None:
    session.write_table("t", make_table([1, 2, 3]))

    written = session.write_table("t", make_table([4, 5]), mode="append")

    assert written == 2
    assert len(session.table("t")) == 5
    assert rows_of(session, "t") == [(i, f"n{i}") for i in range(1, 6)]


def test_append_mode_creates_missing_table(session: duckmerge.Session) -> None:
    assert session.write_table("fresh", make_table([4, 5]), mode="append") == 2
    assert rows_of(session, "fresh") == [(4, "n4"), (5, "n5")]


@pytest.mark.parametrize("mode", ["replace", "append"])
def test_failing_producer_leaves_existing_table_unchanged(
    session: duckmerge.Session, mode: Literal["replace", "append"]
) -> None:
    session.write_table("t", make_table([1, 2, 3]))
    session.write_table("other", make_table([9]))
    before_rows = rows_of(session, "t")
    before_tables = set(session.tables())
    before_all = sorted(all_duckdb_table_names(session))

    with pytest.raises(Exception, match="producer boom"):
        session.write_table("t", failing_reader(), mode=mode)

    assert rows_of(session, "t") == before_rows == [(1, "n1"), (2, "n2"), (3, "n3")]
    assert session.table("t").columns == ["id", "name"]
    assert set(session.tables()) == before_tables
    names = all_duckdb_table_names(session)
    assert not [n for n in names if "staging" in n.lower()], names
    assert sorted(names) == before_all
    # the session still works after the failure
    assert session.write_table("t", make_table([42]), mode="append") == 1
    assert rows_of(session, "t") == [(1, "n1"), (2, "n2"), (3, "n3"), (42, "n42")]


def test_failing_producer_in_create_mode_leaves_no_table(session: duckmerge.Session) -> None:
    before_tables = set(session.tables())

    with pytest.raises(Exception, match="producer boom"):
        session.write_table("t", failing_reader(), mode="create")

    assert set(session.tables()) == before_tables
    assert "t" not in session.tables()
    names = all_duckdb_table_names(session)
    assert not [n for n in names if "staging" in n.lower()], names
    with pytest.raises(duckmerge.TableNotFoundError):
        session.table("t").fetchall()


@pytest.mark.parametrize(
    "name",
    ["extract-movies", "with space", 'a"; DROP TABLE x; --', "Mixed Case", "ž-table"],
)
def test_table_names_are_only_names(session: duckmerge.Session, name: str) -> None:
    session.write_table("x", make_table([100]))

    assert session.write_table(name, make_table([1, 2])) == 2

    assert rows_of(session, name) == [(1, "n1"), (2, "n2")]
    assert name in session.tables()
    assert "x" in session.tables()
    assert rows_of(session, "x") == [(100, "n100")]
    # replace and append quote the name too
    session.write_table(name, make_table([3]), mode="replace")
    session.write_table(name, make_table([4]), mode="append")
    assert rows_of(session, name) == [(3, "n3"), (4, "n4")]
    assert rows_of(session, "x") == [(100, "n100")]
    assert set(session.tables()) == {"x", name}


def test_bad_mode_raises_config_error(session: duckmerge.Session) -> None:
    with pytest.raises(duckmerge.ConfigError) as info:
        session.write_table("t", make_table([1]), mode="upsert")  # type: ignore[arg-type]

    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "upsert" in message
    for accepted in ("create", "replace", "append"):
        assert accepted in message
    assert "t" not in session.tables()


@pytest.mark.parametrize("data", [[1, 2, 3], "not a table", None, 42])
def test_non_arrow_data_raises_naming_accepted_kinds(
    session: duckmerge.Session, data: object
) -> None:
    with pytest.raises((TypeError, duckmerge.ConfigError)) as info:
        session.write_table("t", data)

    assert "arrow" in str(info.value).lower()
    assert "t" not in session.tables()


def test_connection_write_table_is_visible_in_session(session: duckmerge.Session) -> None:
    conn = session.get_db_connection()
    assert conn.write_table("via_conn", make_table([1, 2])) == 2
    assert rows_of(session, "via_conn") == [(1, "n1"), (2, "n2")]
    assert "via_conn" in conn.tables()


# DuckDB's row group: the load hands DuckDB pieces of exactly one row group,
# each a unit of its parallel scan, so the tests below cross many pieces.
ROW_GROUP = 122_880


def big_reader(rows: int, batch_rows: int, fail: bool = False) -> pa.RecordBatchReader:
    """``rows`` rows (id = 0..rows-1, name = f"n{id}") in batches of
    ``batch_rows``; with ``fail`` the producer raises after the last batch."""

    def gen() -> Iterator[pa.RecordBatch]:
        for start in range(0, rows, batch_rows):
            ids = pa.array(range(start, min(rows, start + batch_rows)), pa.int64())
            names = pa.compute.binary_join_element_wise("n", pa.compute.cast(ids, pa.string()), "")
            yield pa.record_batch([ids, names], schema=SCHEMA)
        if fail:
            raise ValueError("producer boom")

    return pa.RecordBatchReader.from_batches(SCHEMA, gen())


def assert_ids_in_order(session: duckmerge.Session, name: str, rows: int) -> None:
    """Every row, in the input's order (DuckDB's scan order is the insertion order)."""
    ids = session.sql(f'select id, name from "{name}"').to_arrow()
    assert ids.num_rows == rows
    assert ids.column("id").to_pylist() == list(range(rows))
    assert ids.column("name").to_pylist()[:3] == ["n0", "n1", "n2"]
    assert ids.column("name")[rows - 1].as_py() == f"n{rows - 1}"


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_rows", [7_777, 300_000])
def test_parallel_load_keeps_every_row_in_order(
    session_path: Path, threads: int, batch_rows: int
) -> None:
    rows = 3 * 4 * ROW_GROUP + 12_345  # several pieces per thread at every thread count
    with duckmerge.Session(session_path, threads=threads) as s:
        assert s.write_table("t", big_reader(rows, batch_rows)) == rows
        assert_ids_in_order(s, "t", rows)
        # whole row groups: only the last one is partial (a row group's rows
        # are the sum of its column segments')
        groups = s.sql(
            "select row_group_id, sum(count) as n from pragma_storage_info('t') "
            "where column_name = 'id' and segment_type <> 'VALIDITY' group by all order by 1"
        ).fetchall()
        assert [n for _, n in groups[:-1]] == [ROW_GROUP] * (len(groups) - 1)
        assert sum(n for _, n in groups) == rows


def test_parallel_load_appends_in_order(session_path: Path) -> None:
    rows = 5 * ROW_GROUP
    with duckmerge.Session(session_path, threads=2) as s:
        s.write_table("t", big_reader(rows, 50_000))
        more = big_reader(2 * rows, 50_000)
        tail = pa.Table.from_batches(list(more)).slice(rows)
        assert s.write_table("t", tail, mode="append") == rows
        assert_ids_in_order(s, "t", 2 * rows)


@pytest.mark.parametrize("mode", ["create", "replace", "append"])
def test_parallel_load_failing_midway_changes_nothing(
    session_path: Path, mode: Literal["create", "replace", "append"]
) -> None:
    with duckmerge.Session(session_path, threads=2) as s:
        if mode != "create":
            s.write_table("t", make_table([1, 2, 3]))
        before_all = sorted(all_duckdb_table_names(s))
        setting = "select current_setting('write_buffer_row_group_count')"
        before_setting = s.sql(setting).fetchall()

        # 5 row groups' worth of rows reach DuckDB before the producer fails
        with pytest.raises(Exception, match="producer boom"):
            s.write_table("t", big_reader(10 * ROW_GROUP, 100_000, fail=True), mode=mode)

        assert sorted(all_duckdb_table_names(s)) == before_all
        if mode == "create":
            assert "t" not in s.tables()
        else:
            assert rows_of(s, "t") == [(1, "n1"), (2, "n2"), (3, "n3")]
        assert s.sql(setting).fetchall() == before_setting
    # nothing left behind for the next open either
    with duckmerge.Session(session_path) as s:
        assert sorted(all_duckdb_table_names(s)) == before_all


def test_parallel_load_leaves_duckdb_settings_alone(session_path: Path) -> None:
    with duckmerge.Session(session_path, threads=2) as s:
        s.execute("SET write_buffer_row_group_count = 3")
        s.write_table("t", big_reader(3 * ROW_GROUP, 100_000))
        assert s.sql("select current_setting('write_buffer_row_group_count')").fetchall() == [(3,)]


def test_a_result_of_the_same_session_streams_in(session: duckmerge.Session) -> None:
    """The producer is a query on the database the load writes to: its rows
    stream in while DuckDB scans them out (no deadlock at one thread either),
    and a table can be replaced by a query over itself."""
    session.execute(
        "CREATE TABLE src AS SELECT range AS id, 'n' || range AS name FROM range(300000)"
    )
    kept = session.sql("SELECT * FROM src WHERE id % 3 <> 0")
    assert session.write_table("copy", kept) == 200_000
    assert session.sql("SELECT count(*), min(id), max(id) FROM copy").fetchall() == [
        (200_000, 1, 299_999)
    ]
    first_five = session.sql("SELECT * FROM src WHERE id < 5")
    assert session.write_table("src", first_five, mode="replace") == 5
    assert rows_of(session, "src") == [(i, f"n{i}") for i in range(5)]
    assert sorted(session.tables()) == ["copy", "src"]
