"""CsvWriter ("filesystem.csv_writer"): table ``inputs["table"]`` becomes a CSV or Parquet file."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import duckdb
import duckmerge
import pyarrow.parquet as pq
import pytest
from _drivers_util import (
    CONTACTS_SQL,
    RecordingCtx,
    column_types,
    extract,
    fetch,
    table_rows,
    write_bytes,
)


@pytest.fixture
def contacts(session):
    session.execute(CONTACTS_SQL)
    return "contacts"


def write(ctx, path, table="contacts", step_id="w", **config):
    return duckmerge.CsvWriter().run(
        step_id=step_id, config={"path": str(path), **config}, inputs={"table": table}, ctx=ctx
    )


def folder_entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --- contract -----------------------------------------------------------------------


def test_returns_empty_dict_and_writes_sorted_columns_by_default(session, contacts, tmp_path):
    out_path = tmp_path / "out.csv"
    assert write(session, out_path) == {}
    assert (
        out_path.read_bytes()
        == (
            'city,id,note\nBrno,1,plain\nPraha,2,"comma, inside"\n,3,"quote ""inside"""\nPlzeň,4,\n'
        ).encode()
    )


def test_positional_call(session, contacts, tmp_path):
    out_path = tmp_path / "out.csv"
    assert (
        duckmerge.CsvWriter().run("w", {"path": str(out_path)}, {"table": "contacts"}, session)
        == {}
    )
    assert out_path.read_text().startswith("city,id,note\n")


def test_rows_written_metric_and_start_complete_events(session, contacts, tmp_path):
    ctx = RecordingCtx(session.get_db_connection())
    write(ctx, tmp_path / "out.csv")
    assert ctx.metric_calls == [(("rows_written", 4), {})]
    for args, _ in ctx.event_calls:
        assert len(args) == 1, args
    names = ctx.event_names
    assert "start" in names[0] and "complete" in names[-1], names


def test_sort_columns_false_keeps_table_order(session, contacts, tmp_path):
    out_path = tmp_path / "out.csv"
    write(session, out_path, sort_columns=False)
    assert out_path.read_text(encoding="utf-8").splitlines()[:2] == ["id,note,city", "1,plain,Brno"]


def test_explicit_columns_choose_subset_and_order(session, contacts, tmp_path):
    out_path = tmp_path / "out.csv"
    write(session, out_path, columns=["note", "id"])
    assert out_path.read_text(encoding="utf-8") == (
        'note,id\nplain,1\n"comma, inside",2\n"quote ""inside""",3\n,4\n'
    )


def test_header_false(session, contacts, tmp_path):
    out_path = tmp_path / "out.csv"
    write(session, out_path, header=False, sort_columns=False)
    assert out_path.read_text(encoding="utf-8").splitlines()[0] == "1,plain,Brno"


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiter(session, contacts, tmp_path, delimiter):
    out_path = tmp_path / "out.csv"
    write(session, out_path, delimiter=delimiter, sort_columns=False)
    lines = out_path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == delimiter.join(["id", "note", "city"])
    assert lines[2] == delimiter.join(["2", "comma, inside", "Praha"])


@pytest.mark.parametrize(("newline", "sep"), [("lf", b"\n"), ("crlf", b"\r\n"), ("cr", b"\r")])
def test_newline(session, contacts, tmp_path, newline, sep):
    out_path = tmp_path / "out.csv"
    write(session, out_path, newline=newline, columns=["id", "city"])
    assert (
        out_path.read_bytes()
        == sep.join([b"id,city", b"1,Brno", b"2,Praha", b"3,", "4,Plzeň".encode()]) + sep
    )


def test_quoting_all_quotes_every_value(session, contacts, tmp_path):
    out_path = tmp_path / "out.csv"
    write(session, out_path, quoting="all", columns=["id", "note"])
    lines = out_path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '"id","note"'
    assert lines[1] == '"1","plain"'
    assert lines[3] == '"3","quote ""inside"""'


@pytest.mark.parametrize(
    "key,value", [("newline", "lfcr"), ("quoting", "some"), ("format", "xlsx")]
)
def test_invalid_option_values_are_config_errors(session, contacts, tmp_path, key, value):
    with pytest.raises(duckmerge.ConfigError) as err:
        write(session, tmp_path / "out.csv", **{key: value})
    assert value in str(err.value)
    assert not (tmp_path / "out.csv").exists()


def test_unknown_config_key_is_config_error_listing_valid_keys(session, contacts, tmp_path):
    with pytest.raises(duckmerge.ConfigError) as err:
        write(session, tmp_path / "out.csv", sep=";")
    message = str(err.value)
    assert "sep" in message
    for key in [
        "path",
        "delimiter",
        "header",
        "newline",
        "encoding",
        "quoting",
        "sort_columns",
        "columns",
        "format",
    ]:
        assert key in message, f"{key!r} missing from: {message}"


def test_path_is_required(session, contacts):
    with pytest.raises(duckmerge.ConfigError) as err:
        duckmerge.CsvWriter().run(step_id="w", config={}, inputs={"table": "contacts"}, ctx=session)
    assert "path" in str(err.value)


def test_parent_folders_are_created(session, contacts, tmp_path):
    out_path = tmp_path / "a" / "b" / "c" / "out.csv"
    write(session, out_path)
    assert out_path.is_file()
    assert folder_entries(out_path.parent) == ["out.csv"]


# --- inputs and missing tables -------------------------------------------------------


@pytest.mark.parametrize("inputs", [None, {}, {"tables": ["contacts"]}, {"df": "contacts"}])
def test_table_input_is_required(session, contacts, tmp_path, inputs):
    with pytest.raises(duckmerge.ConfigError) as err:
        duckmerge.CsvWriter().run(
            step_id="w", config={"path": str(tmp_path / "out.csv")}, inputs=inputs, ctx=session
        )
    assert str(err.value) == "Step w: CsvWriter requires 'table' in inputs"
    assert not (tmp_path / "out.csv").exists()


def test_missing_table_is_table_not_found(session, tmp_path):
    with pytest.raises(duckmerge.TableNotFoundError) as err:
        write(session, tmp_path / "out.csv", table="nowhere")
    assert isinstance(err.value, LookupError)
    assert isinstance(err.value, duckmerge.DuckMergeError)
    assert "nowhere" in str(err.value)
    assert "does not exist" in str(err.value)
    assert folder_entries(tmp_path) == ["s"]


def test_hostile_table_name_is_just_a_name(session, tmp_path):
    name = 'x"; DROP TABLE y; --'
    session.execute("CREATE TABLE y AS SELECT 1 AS v")
    session.execute('CREATE TABLE "x""; DROP TABLE y; --" AS SELECT 7 AS n')
    out_path = tmp_path / "out.csv"
    write(session, out_path, table=name)
    assert out_path.read_text() == "n\n7\n"
    assert fetch(session, "SELECT v FROM y") == [(1,)]


@pytest.mark.parametrize(
    "file_name", ["o'brien.csv", "it's'; DROP TABLE y; --.csv", "ünïcødé 日本.parquet"]
)
def test_output_path_with_quotes_and_unicode_is_just_a_path(session, contacts, tmp_path, file_name):
    session.execute("CREATE TABLE y AS SELECT 1 AS v")
    out_path = tmp_path / "out'dir" / file_name
    write(session, out_path, columns=["id"])
    if file_name.endswith(".parquet"):
        assert pq.read_table(out_path).column("id").to_pylist() == [1, 2, 3, 4]
    else:
        assert out_path.read_text() == "id\n1\n2\n3\n4\n"
    assert folder_entries(out_path.parent) == [file_name]
    assert fetch(session, "SELECT v FROM y") == [(1,)]


def test_empty_table_writes_header_only(session, tmp_path):
    session.execute("CREATE TABLE empty (b VARCHAR, a INTEGER)")
    out_path = tmp_path / "out.csv"
    ctx = RecordingCtx(session.get_db_connection())
    assert write(ctx, out_path, table="empty") == {}
    assert out_path.read_bytes() == b"a,b\n"
    assert ("rows_written", 0) in ctx.metrics


# --- formats, compression, encodings -------------------------------------------------


def test_parquet_from_extension(session, contacts, tmp_path):
    out_path = tmp_path / "out.parquet"
    write(session, out_path)
    table = pq.read_table(out_path)
    assert table.column_names == ["city", "id", "note"]
    assert table.num_rows == 4
    assert table.column("note").to_pylist() == ["plain", "comma, inside", 'quote "inside"', None]


def test_format_parquet_overrides_the_extension(session, contacts, tmp_path):
    out_path = tmp_path / "out.csv"
    write(session, out_path, format="parquet", sort_columns=False)
    assert out_path.read_bytes()[:4] == b"PAR1"
    assert pq.read_table(out_path).column_names == ["id", "note", "city"]


def test_format_csv_overrides_the_extension(session, contacts, tmp_path):
    out_path = tmp_path / "out.parquet"
    write(session, out_path, format="csv")
    assert out_path.read_text(encoding="utf-8").startswith("city,id,note\n")


def test_gzip_from_extension(session, contacts, tmp_path):
    out_path = tmp_path / "out.csv.gz"
    write(session, out_path)
    text = gzip.decompress(out_path.read_bytes()).decode()
    assert text.splitlines()[:2] == ["city,id,note", "Brno,1,plain"]
    assert len(text.splitlines()) == 5


def test_zstd_from_extension(session, contacts, tmp_path):
    out_path = tmp_path / "out.csv.zst"
    write(session, out_path)
    assert out_path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd", "not a zstd frame"
    con = duckdb.connect()
    rows = con.execute(
        "SELECT * FROM read_csv(?, compression = 'zstd', header = true) ORDER BY id",
        [str(out_path)],
    ).fetchall()
    con.close()
    assert rows == [
        ("Brno", 1, "plain"),
        ("Praha", 2, "comma, inside"),
        (None, 3, 'quote "inside"'),
        ("Plzeň", 4, None),
    ]


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-16", "utf-8"])
def test_encoding(session, tmp_path, encoding):
    session.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES (1, 'café'), (2, 'Zürich')) v(id, word)"
    )
    out_path = tmp_path / "out.csv"
    write(session, out_path, table="t", encoding=encoding)
    expected = "id,word\n1,café\n2,Zürich\n"
    raw = out_path.read_bytes()
    assert raw.decode(encoding) == expected
    if encoding != "utf-8":
        assert raw != expected.encode("utf-8"), f"{encoding} output is plain UTF-8"


def test_cp1252_euro_sign_is_one_byte(session, tmp_path):
    session.execute("CREATE TABLE t AS SELECT '€5' AS price")
    out_path = tmp_path / "out.csv"
    write(session, out_path, table="t", encoding="cp1252")
    assert out_path.read_bytes() == b"price\n\x805\n"


# --- atomic replacement ----------------------------------------------------------------


def test_write_replaces_an_existing_file(session, contacts, tmp_path):
    out_path = write_bytes(tmp_path / "out" / "out.csv", "old content\n")
    write(session, out_path, columns=["id"])
    assert out_path.read_text() == "id\n1\n2\n3\n4\n"
    assert folder_entries(out_path.parent) == ["out.csv"]


def test_failing_encoding_after_copy_keeps_previous_file_and_leaves_no_temp_files(
    session, tmp_path
):
    session.execute("CREATE TABLE t AS SELECT * FROM (VALUES (1, 'ok'), (2, '日本')) v(id, word)")
    out_path = write_bytes(tmp_path / "out" / "out.csv", "previous,content\n1,2\n")
    with pytest.raises(duckmerge.DuckMergeError) as err:
        write(session, out_path, table="t", encoding="cp1252")
    assert "Step w" in str(err.value)
    assert out_path.read_bytes() == b"previous,content\n1,2\n"
    assert folder_entries(out_path.parent) == ["out.csv"]


def test_failing_write_with_unknown_column_keeps_previous_file(session, contacts, tmp_path):
    out_path = write_bytes(tmp_path / "out" / "out.csv", "previous\n")
    with pytest.raises(duckmerge.ConfigError) as err:
        write(session, out_path, columns=["id", "no_such_column"])
    assert "no_such_column" in str(err.value)
    assert out_path.read_bytes() == b"previous\n"
    assert folder_entries(out_path.parent) == ["out.csv"]


def test_failing_first_write_leaves_folder_empty(session, tmp_path):
    session.execute("CREATE TABLE t AS SELECT '日本' AS word")
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(duckmerge.DuckMergeError):
        write(session, folder / "out.csv", table="t", encoding="cp1252")
    assert folder_entries(folder) == []


# --- round trip ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.zst"])
def test_extract_write_extract_round_trip_gives_equal_table(session, tmp_path, suffix):
    source = write_bytes(
        tmp_path / "source.csv",
        "id,email,note,score,joined,zip\n"
        '1,ann@example.com,"a, b",1.5,2024-01-02,00123\n'
        '2,bob@example.com,"he said ""hi""",2.25,2023-12-31,04567\n'
        '3,,"two\nlines",,2022-06-30,10001\n'
        "4,dan@example.com,Žluťoučký kůň 日本,-3.0,,99999\n",
    )
    config = {"dtype": {"zip": "str"}}
    extract(session, "first", source, **config)
    out_path = tmp_path / "out" / f"copy{suffix}"
    write(session, out_path, table="first", sort_columns=False)
    extract(session, "second", out_path, **config)
    assert column_types(session, "second") == column_types(session, "first")
    assert table_rows(session, "second") == table_rows(session, "first")
    assert len(table_rows(session, "first")) == 4
