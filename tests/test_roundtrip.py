"""Arrow data in through ``write_table`` and back out through ``Result``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckmerge
import pyarrow as pa
import pytest

INF = float("inf")

# (id, arrow type, values) -- every column carries at least one NULL.
ROUNDTRIP_CASES: list[tuple[str, pa.DataType, list[Any]]] = [
    ("int8", pa.int8(), [-128, 0, 127, None]),
    ("int16", pa.int16(), [-32768, 1, 32767, None]),
    ("int32", pa.int32(), [-(2**31), 2, 2**31 - 1, None]),
    ("int64", pa.int64(), [-(2**63), 3, 2**63 - 1, None]),
    ("uint8", pa.uint8(), [0, 255, None]),
    ("uint16", pa.uint16(), [0, 65535, None]),
    ("uint32", pa.uint32(), [0, 2**32 - 1, None]),
    ("uint64", pa.uint64(), [0, 2**64 - 1, None]),
    ("float32", pa.float32(), [1.5, -2.25, INF, -INF, None]),
    ("float64", pa.float64(), [0.1, -1e308, 5e-324, INF, -INF, None]),
    (
        "decimal_18_3",
        pa.decimal128(18, 3),
        [Decimal("123456789012345.678"), Decimal("-0.001"), Decimal("0.000"), None],
    ),
    (
        "decimal_38_10",
        pa.decimal128(38, 10),
        [
            Decimal("1234567890123456789012345678.0123456789"),
            Decimal("-9999999999999999999999999999.9999999999"),
            Decimal("-0.0000000001"),
            None,
        ],
    ),
    ("bool", pa.bool_(), [True, False, None]),
    (
        "varchar",
        pa.string(),
        ["žluťoučký kůň", "🦆 emoji 👩‍👩‍👧", "", None, "line\nbreak", 'tab\t"quote"'],
    ),
    (
        "date32",
        pa.date32(),
        [dt.date(1970, 1, 1), dt.date(2024, 2, 29), dt.date(1, 1, 1), dt.date(9999, 12, 31), None],
    ),
    (
        "timestamp_us",
        pa.timestamp("us"),
        [
            dt.datetime(2024, 2, 29, 23, 59, 59, 123456),
            dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
            None,
        ],
    ),
    ("list_int64", pa.list_(pa.int64()), [[1, 2, 3], [], None, [None, 5]]),
    (
        "struct",
        pa.struct([("a", pa.int64()), ("b", pa.string())]),
        [{"a": 1, "b": "x"}, {"a": None, "b": None}, None, {"a": -5, "b": "ž"}],
    ),
]


@pytest.fixture(params=[1, 2], ids=["threads1", "threads2"])
def session(request: pytest.FixtureRequest, session_path: Path) -> Iterator[duckmerge.Session]:
    """One thread and two (a parallel load): each round trip runs on both."""
    s = duckmerge.Session(session_path, threads=request.param)
    try:
        yield s
    finally:
        s.close()


def assert_same_table(actual: object, expected: pa.Table) -> None:
    """Same column names, types and values (row order included)."""
    assert isinstance(actual, pa.Table), f"expected a pyarrow.Table, got {type(actual)!r}"
    assert actual.schema.equals(expected.schema, check_metadata=False), (
        f"schema differs:\n--- got\n{actual.schema}\n--- expected\n{expected.schema}"
    )
    assert actual.num_rows == expected.num_rows
    for name in expected.column_names:
        assert actual.column(name).to_pylist() == expected.column(name).to_pylist(), name


@pytest.mark.parametrize(
    ("arrow_type", "values"),
    [pytest.param(t, v, id=i) for i, t, v in ROUNDTRIP_CASES],
)
def test_arrow_type_roundtrips_with_nulls(
    session: duckmerge.Session, arrow_type: pa.DataType, values: list[object]
) -> None:
    table = pa.table({"v": pa.array(values, type=arrow_type)})
    assert table.column("v").null_count >= 1

    written = session.write_table("t", table)

    assert written == len(values)
    assert_same_table(session.table("t").to_arrow(), table)


def test_all_types_in_one_table_roundtrip(session: duckmerge.Session) -> None:
    rows = 3
    columns: dict[str, pa.Array] = {}
    for name, arrow_type, values in ROUNDTRIP_CASES:
        padded = (values + [None] * rows)[:rows]
        padded[-1] = None
        columns[name] = pa.array(padded, type=arrow_type)
    table = pa.table(columns)

    assert session.write_table("everything", table) == rows
    assert_same_table(session.table("everything").to_arrow(), table)


def test_all_types_roundtrip_across_parallel_pieces(session_path: Path) -> None:
    # 600,000 rows are five pieces of 122,880 rows (one row group each) scanned
    # by two threads: every type crosses the pieces' boundaries.
    rows = 600_000
    columns: dict[str, pa.Array] = {}
    for name, arrow_type, values in ROUNDTRIP_CASES:
        cycle = pa.array(values, type=arrow_type)
        columns[name] = pa.concat_arrays([cycle] * (rows // len(values) + 1)).slice(0, rows)
    columns["pos"] = pa.array(range(rows), pa.int64())
    table = pa.table(columns)

    with duckmerge.Session(session_path, threads=2) as s:
        assert s.write_table("everything", table) == rows
        out = s.table("everything").to_arrow()
    assert out.schema.equals(table.schema, check_metadata=False)
    assert out.column("pos").to_pylist() == list(range(rows))
    assert out.equals(table)


def test_multi_batch_input_keeps_row_order(session: duckmerge.Session) -> None:
    schema = pa.schema([("i", pa.int64()), ("s", pa.string())])
    sizes = [1, 2047, 2048, 2049, 0, 5000, 855]
    batches = []
    start = 0
    for size in sizes:
        ids = list(range(start, start + size))
        batches.append(
            pa.record_batch(
                [pa.array(ids, pa.int64()), pa.array([f"r{i}" for i in ids])], schema=schema
            )
        )
        start += size
    reader = pa.RecordBatchReader.from_batches(schema, iter(batches))

    assert session.write_table("many", reader) == start

    out = session.table("many").to_arrow()
    assert out.num_rows == 12_000 == start
    assert out.column("i").to_pylist() == list(range(start))
    assert out.column("s").to_pylist()[-1] == f"r{start - 1}"


def test_empty_table_keeps_schema(session: duckmerge.Session) -> None:
    table = pa.table(
        {
            "a": pa.array([], pa.int64()),
            "b": pa.array([], pa.string()),
            "c": pa.array([], pa.decimal128(18, 3)),
        }
    )

    assert session.write_table("empty", table) == 0

    result = session.table("empty")
    out = result.to_arrow()
    assert out.num_rows == 0
    assert out.schema.equals(table.schema, check_metadata=False), str(out.schema)
    assert result.columns == ["a", "b", "c"]
    assert len(result) == 0
    assert result.fetchall() == []
    assert result.fetchone() is None
    assert "empty" in session.tables()


def test_pandas_dataframe_input_roundtrips(session: duckmerge.Session) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "name": ["a", "žluť", None],
            "score": [1.5, None, INF],
            "cnt": pd.array([7, None, 9], dtype="Int64"),
        }
    )

    assert session.write_table("from_pandas", df) == 3

    out = session.table("from_pandas").to_arrow()
    assert out.column_names == ["id", "name", "score", "cnt"]
    assert out.schema.field("id").type == pa.int64()
    assert out.column("id").to_pylist() == [1, 2, 3]
    assert out.column("name").to_pylist() == ["a", "žluť", None]
    assert out.column("score").to_pylist() == [1.5, None, INF]
    assert out.column("cnt").to_pylist() == [7, None, 9]


def test_polars_dataframe_input_roundtrips(session: duckmerge.Session) -> None:
    pl = pytest.importorskip("polars")
    df = pl.DataFrame(
        {
            "id": [1, 2, None],
            "name": ["x", None, "🦆 kůň"],
            "flag": [True, None, False],
            "day": [dt.date(2024, 1, 31), None, dt.date(1999, 12, 31)],
            "tags": [[1, 2], None, []],
        }
    )

    assert session.write_table("from_polars", df) == 3

    out = session.table("from_polars").to_arrow()
    assert out.column_names == ["id", "name", "flag", "day", "tags"]
    assert out.column("id").to_pylist() == [1, 2, None]
    assert out.column("name").to_pylist() == ["x", None, "🦆 kůň"]
    assert out.column("flag").to_pylist() == [True, None, False]
    assert out.column("day").to_pylist() == [dt.date(2024, 1, 31), None, dt.date(1999, 12, 31)]
    assert out.column("tags").to_pylist() == [[1, 2], None, []]


@pytest.fixture
def small(session: duckmerge.Session) -> duckmerge.Session:
    """A session with table ``small``: id int64, name string, x float64 (one NULL)."""
    session.write_table(
        "small",
        pa.table(
            {
                "id": pa.array([1, 2, 3], pa.int64()),
                "name": pa.array(["a", "b", "c"]),
                "x": pa.array([0.5, 1.5, None], pa.float64()),
            }
        ),
    )
    return session


def test_to_arrow_returns_pyarrow_table(small: duckmerge.Session) -> None:
    out = small.table("small").to_arrow()
    assert isinstance(out, pa.Table)
    assert out.to_pydict() == {"id": [1, 2, 3], "name": ["a", "b", "c"], "x": [0.5, 1.5, None]}


def test_to_pandas_returns_dataframe(small: duckmerge.Session) -> None:
    pd = pytest.importorskip("pandas")
    df = small.table("small").to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["id", "name", "x"]
    assert len(df) == 3
    assert df["id"].dtype.kind == "i"
    assert df["id"].tolist() == [1, 2, 3]
    assert df["name"].tolist() == ["a", "b", "c"]
    assert df["x"].iloc[:2].tolist() == [0.5, 1.5]
    assert pd.isna(df["x"].iloc[2])


def test_to_polars_returns_dataframe(small: duckmerge.Session) -> None:
    pl = pytest.importorskip("polars")
    df = small.table("small").to_polars()
    assert isinstance(df, pl.DataFrame)
    assert df.columns == ["id", "name", "x"]
    assert df.schema["id"] == pl.Int64
    assert df.schema["x"] == pl.Float64
    assert df.rows() == [(1, "a", 0.5), (2, "b", 1.5), (3, "c", None)]


def test_fetchall_returns_list_of_tuples(session: duckmerge.Session) -> None:
    result = session.sql("select * from (values (1, 'a'), (2, 'b'), (3, NULL)) t(x, y) order by x")
    rows = result.fetchall()
    assert type(rows) is list
    assert all(type(row) is tuple for row in rows)
    assert rows == [(1, "a"), (2, "b"), (3, None)]


def test_fetchall_converts_values_to_python_objects(session: duckmerge.Session) -> None:
    rows = session.sql(
        "select DATE '2024-02-29' as d, 12.345::DECIMAL(18,3) as m, "
        "TIMESTAMP '2024-01-02 03:04:05.000006' as ts, [1, 2]::BIGINT[] as l, "
        "{'a': 1::BIGINT, 'b': 'x'} as s, true as b, 2.5::DOUBLE as f"
    ).fetchall()
    assert rows == [
        (
            dt.date(2024, 2, 29),
            Decimal("12.345"),
            dt.datetime(2024, 1, 2, 3, 4, 5, 6),
            [1, 2],
            {"a": 1, "b": "x"},
            True,
            2.5,
        )
    ]


def test_fetchone_returns_first_row(session: duckmerge.Session) -> None:
    result = session.sql("select * from (values (1, 'a'), (2, 'b')) t(x, y) order by x")
    assert result.fetchone() == (1, "a")


def test_fetchone_on_empty_result_returns_none(session: duckmerge.Session) -> None:
    assert session.sql("select 1 as x where false").fetchone() is None
    assert session.sql("select 1 as x where false").fetchall() == []


def test_columns_lists_names_in_order(session: duckmerge.Session) -> None:
    result = session.sql("select 1 as zeta, 'b' as alpha, 3 as \"with space\"")
    assert result.columns == ["zeta", "alpha", "with space"]


def test_len_is_row_count(session: duckmerge.Session) -> None:
    session.write_table("thousand", pa.table({"i": pa.array(range(1000), pa.int64())}))
    assert len(session.table("thousand")) == 1000
    assert len(session.sql("select * from range(37)")) == 37


def test_result_can_be_consumed_more_than_once(small: duckmerge.Session) -> None:
    result = small.table("small")
    first = result.to_arrow()
    second = result.to_arrow()
    assert first.equals(second)
    assert result.fetchall() == [(1, "a", 0.5), (2, "b", 1.5), (3, "c", None)]
    assert pa.table(result).equals(first)


def test_repr_html_shows_columns_first_values_and_row_count(session: duckmerge.Session) -> None:
    session.write_table(
        "big",
        pa.table(
            {
                "ident": pa.array(range(1000), pa.int64()),
                "label": pa.array([f"row-{i}" for i in range(1000)]),
            }
        ),
    )

    html = session.table("big")._repr_html_()

    assert isinstance(html, str)
    assert "ident" in html
    assert "label" in html
    assert "row-0" in html
    assert "1000" in html or "1,000" in html or "1 000" in html or "1\u202f000" in html
    # a preview, not the whole table
    assert "row-500" not in html


def test_repr_html_escapes_values(session: duckmerge.Session) -> None:
    html = session.sql("select '<script>alert(1)</script>' as payload")._repr_html_()
    assert "payload" in html
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_pyarrow_table_reads_arrow_c_stream(small: duckmerge.Session) -> None:
    result = small.table("small")
    assert hasattr(result, "__arrow_c_stream__")
    out = pa.table(result)
    assert out.to_pydict() == {"id": [1, 2, 3], "name": ["a", "b", "c"], "x": [0.5, 1.5, None]}
    assert out.schema.field("id").type == pa.int64()


def test_record_batch_reader_reads_arrow_c_stream(small: duckmerge.Session) -> None:
    reader = pa.RecordBatchReader.from_stream(small.sql("select id, name from small order by id"))
    assert reader.schema.names == ["id", "name"]
    out = reader.read_all()
    assert out.to_pydict() == {"id": [1, 2, 3], "name": ["a", "b", "c"]}


def test_arrow_c_stream_of_large_result_streams_all_rows(session: duckmerge.Session) -> None:
    reader = pa.RecordBatchReader.from_stream(session.sql("select i from range(250000) t(i)"))
    total = 0
    value_sum = 0
    for batch in reader:
        total += batch.num_rows
        value_sum += sum(batch.column(0).to_pylist())
    assert total == 250_000
    assert value_sum == 250_000 * 249_999 // 2


def test_polars_dataframe_reads_arrow_c_stream(small: duckmerge.Session) -> None:
    pl = pytest.importorskip("polars")
    df = pl.DataFrame(small.table("small"))
    assert df.rows() == [(1, "a", 0.5), (2, "b", 1.5), (3, "c", None)]


def test_arrow_c_stream_honours_a_castable_requested_schema(small: duckmerge.Session) -> None:
    wanted = pa.schema([("id", pa.string()), ("x", pa.float32())])
    reader = pa.RecordBatchReader.from_stream(
        small.sql("select id, x from small order by id"), schema=wanted
    )
    assert reader.schema.types == [pa.string(), pa.float32()]
    assert reader.read_all().to_pydict() == {"id": ["1", "2", "3"], "x": [0.5, 1.5, None]}


def test_arrow_c_stream_ignores_a_requested_schema_it_cannot_cast_to(
    small: duckmerge.Session,
) -> None:
    # One column asked for, two produced: the stream keeps its own schema
    # (allowed by the PyCapsule interface); pyarrow then reports the mismatch.
    result = small.sql("select id, name from small order by id")
    capsule = result.__arrow_c_stream__(pa.schema([("id", pa.int64())]).__arrow_c_schema__())
    out = pa.RecordBatchReader._import_from_c_capsule(capsule).read_all()
    assert out.schema.names == ["id", "name"]
    assert out.column("id").to_pylist() == [1, 2, 3]
