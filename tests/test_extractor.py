"""CsvExtractor ("filesystem.csv_extractor"): a CSV file becomes table ``step_id``.

Every test runs against a native ``duckmerge.Session`` (the ``session``
fixture); the other ctx kinds are covered in ``test_ctx_kinds.py``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import json
import threading
from pathlib import Path

import duckdb
import duckmerge
import pytest
from _drivers_util import (
    RecordingCtx,
    all_table_names,
    column_names,
    column_types,
    extract,
    fetch,
    staging_tables,
    table_rows,
    write_bytes,
)

VALID_KEYS = [
    "path",
    "delimiter",
    "quotechar",
    "escapechar",
    "encoding",
    "compression",
    "header",
    "columns",
    "skip_rows",
    "limit",
    "comment",
    "skip_blank_lines",
    "dtype",
    "parse_dates",
    "na_values",
    "on_bad_lines",
    "batch_size",
    "chunk_size",
    "discovery",
    "storage_options",
    "compress_text",
]


@pytest.fixture
def people_csv(tmp_path: Path) -> Path:
    return write_bytes(
        tmp_path / "people.csv", "id,name,city\n1,Ann,Brno\n2,Bob,Praha\n3,Cyd,Ostrava\n"
    )


# --- calling convention and result ------------------------------------------------


def test_run_with_keywords_returns_table_and_row_count(session, people_csv):
    out = duckmerge.CsvExtractor().run(
        step_id="people", config={"path": str(people_csv)}, inputs=None, ctx=session
    )
    assert out == {"table": "people", "rows": 3}
    assert table_rows(session, "people") == [
        (1, "Ann", "Brno"),
        (2, "Bob", "Praha"),
        (3, "Cyd", "Ostrava"),
    ]


def test_run_positionally_gives_the_same_result(session, people_csv):
    out = duckmerge.CsvExtractor().run("people", {"path": str(people_csv)}, None, session)
    assert out == {"table": "people", "rows": 3}
    assert column_names(session, "people") == ["id", "name", "city"]


def test_rows_read_metric_and_start_complete_events(session, people_csv):
    ctx = RecordingCtx(session.get_db_connection())
    extract(ctx, "people", people_csv)
    assert ctx.metric_calls == [(("rows_read", 3), {})]
    for args, _ in ctx.event_calls:
        assert len(args) == 1, (
            f"log_event takes the event name positionally, data as keywords: {args}"
        )
    names = ctx.event_names
    assert any("start" in n for n in names) and any("complete" in n for n in names), names
    assert "start" in names[0] and "complete" in names[-1], names


def test_missing_path_key_is_config_error(session):
    with pytest.raises(duckmerge.ConfigError) as err:
        duckmerge.CsvExtractor().run(step_id="s", config={}, inputs=None, ctx=session)
    assert "path" in str(err.value)


def test_unknown_config_key_is_config_error_listing_valid_keys(session, people_csv):
    with pytest.raises(duckmerge.ConfigError) as err:
        extract(session, "people", people_csv, delimeter=";")
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value, duckmerge.DuckMergeError)
    message = str(err.value)
    assert "delimeter" in message
    for key in VALID_KEYS:
        assert key in message, f"{key!r} missing from: {message}"


# --- parsing options --------------------------------------------------------------


@pytest.mark.parametrize(
    ("delimiter", "text"),
    [
        (",", "a,b,c\n1,2,3\n4,5,6\n"),
        (";", "a;b;c\n1;2;3\n4;5;6\n"),
        ("|", "a|b|c\n1|2|3\n4|5|6\n"),
        ("\t", "a\tb\tc\n1\t2\t3\n4\t5\t6\n"),
        ("auto", "a;b;c\n1;2;3\n4;5;6\n"),
        ("auto", "a\tb\tc\n1\t2\t3\n4\t5\t6\n"),
    ],
)
def test_delimiter_including_auto_sniffing(session, tmp_path, delimiter, text):
    f = write_bytes(tmp_path / "d.csv", text)
    assert extract(session, "d", f, delimiter=delimiter) == {"table": "d", "rows": 2}
    assert column_names(session, "d") == ["a", "b", "c"]
    assert table_rows(session, "d") == [(1, 2, 3), (4, 5, 6)]


def test_default_delimiter_is_comma_so_semicolons_stay_in_one_column(session, tmp_path):
    f = write_bytes(tmp_path / "semi.csv", "a;b\n1;2\n")
    extract(session, "semi", f)
    assert column_names(session, "semi") == ["a;b"]


def test_quotechar(session, tmp_path):
    f = write_bytes(tmp_path / "q.csv", "a,b\n'x,y',2\n'it''s',3\n")
    extract(session, "q", f, quotechar="'")
    assert table_rows(session, "q", "b") == [("x,y", 2), ("it's", 3)]


def test_escapechar(session, tmp_path):
    f = write_bytes(tmp_path / "e.csv", 'a,b\n"say \\"hi\\"",1\n"back\\\\slash",2\n')
    extract(session, "e", f, escapechar="\\")
    assert table_rows(session, "e", "b") == [('say "hi"', 1), ("back\\slash", 2)]


def test_header_false_keeps_first_row_as_data(session, tmp_path):
    f = write_bytes(tmp_path / "n.csv", "1,2\n3,4\n")
    assert extract(session, "n", f, header=False)["rows"] == 2
    assert table_rows(session, "n") == [(1, 2), (3, 4)]
    # observed: DuckDB names the columns column0, column1
    assert column_names(session, "n") == ["column0", "column1"]


def test_header_row_index_uses_that_row_as_header(session, tmp_path):
    f = write_bytes(tmp_path / "h.csv", "exported by crm v2\na,b\n1,2\n3,4\n")
    assert extract(session, "h", f, header=1)["rows"] == 2
    assert column_names(session, "h") == ["a", "b"]
    assert table_rows(session, "h") == [(1, 2), (3, 4)]


def test_header_true_is_the_default(session, tmp_path):
    f = write_bytes(tmp_path / "h.csv", "a,b\n1,2\n")
    extract(session, "h1", f)
    extract(session, "h2", f, header=True)
    assert column_names(session, "h1") == column_names(session, "h2") == ["a", "b"]


def test_columns_selects_and_orders(session, tmp_path):
    f = write_bytes(tmp_path / "c.csv", "a,b,c,d\n1,2,3,4\n5,6,7,8\n")
    assert extract(session, "c", f, columns=["c", "a"]) == {"table": "c", "rows": 2}
    assert column_names(session, "c") == ["c", "a"]
    assert table_rows(session, "c") == [(3, 1), (7, 5)]


def test_columns_naming_a_missing_column_is_an_error(session, tmp_path):
    f = write_bytes(tmp_path / "c.csv", "a,b\n1,2\n")
    with pytest.raises(duckmerge.ConfigError) as err:
        extract(session, "c", f, columns=["a", "zz"])
    assert "zz" in str(err.value)
    assert "Step c" in str(err.value)


def test_skip_rows_skips_lines_before_the_header(session, tmp_path):
    f = write_bytes(tmp_path / "s.csv", "junk one\njunk two\na,b\n1,2\n3,4\n")
    assert extract(session, "s", f, skip_rows=2)["rows"] == 2
    assert column_names(session, "s") == ["a", "b"]
    assert table_rows(session, "s") == [(1, 2), (3, 4)]


def test_limit_keeps_the_first_rows(session, tmp_path):
    f = write_bytes(tmp_path / "l.csv", "a\n1\n2\n3\n4\n")
    assert extract(session, "l", f, limit=2) == {"table": "l", "rows": 2}
    assert table_rows(session, "l") == [(1,), (2,)]


def test_comment_lines_are_skipped(session, tmp_path):
    f = write_bytes(tmp_path / "c.csv", "a,b\n# a note\n1,2\n#x,y\n3,4\n")
    assert extract(session, "c", f, comment="#")["rows"] == 2
    assert table_rows(session, "c") == [(1, 2), (3, 4)]


@pytest.mark.parametrize("config", [{}, {"skip_blank_lines": True}])
def test_blank_lines_are_skipped(session, tmp_path, config):
    f = write_bytes(tmp_path / "b.csv", "a,b\n1,2\n\n3,4\n\n\n5,6\n")
    assert extract(session, "b", f, **config)["rows"] == 3
    assert table_rows(session, "b") == [(1, 2), (3, 4), (5, 6)]


def test_dtype_accepts_short_names_and_duckdb_types(session, tmp_path):
    f = write_bytes(
        tmp_path / "t.csv",
        "i,f,s,b,d,ts,dec,small\n"
        "1,1.5,007,true,2024-01-02,2024-01-02 03:04:05,1.25,7\n"
        "2,2,010,false,2024-12-31,2024-12-31 23:59:59,3.50,8\n",
    )
    dtype = {
        "i": "int",
        "f": "float",
        "s": "str",
        "b": "bool",
        "d": "date",
        "ts": "datetime",
        "dec": "DECIMAL(10,2)",
        "small": "SMALLINT",
    }
    extract(session, "t", f, dtype=dtype)
    assert column_types(session, "t") == [
        ("i", "BIGINT"),
        ("f", "DOUBLE"),
        ("s", "VARCHAR"),
        ("b", "BOOLEAN"),
        ("d", "DATE"),
        ("ts", "TIMESTAMP"),
        ("dec", "DECIMAL(10,2)"),
        ("small", "SMALLINT"),
    ]
    assert table_rows(session, "t") == [
        (
            1,
            1.5,
            "007",
            True,
            dt.date(2024, 1, 2),
            dt.datetime(2024, 1, 2, 3, 4, 5),
            decimal.Decimal("1.25"),
            7,
        ),
        (
            2,
            2.0,
            "010",
            False,
            dt.date(2024, 12, 31),
            dt.datetime(2024, 12, 31, 23, 59, 59),
            decimal.Decimal("3.50"),
            8,
        ),
    ]


def test_dtype_str_keeps_leading_zeros(session, tmp_path):
    f = write_bytes(tmp_path / "z.csv", "id,zip\n1,00123\n2,04567\n3,10001\n")
    extract(session, "z", f, dtype={"zip": "str"})
    assert dict(column_types(session, "z"))["zip"] == "VARCHAR"
    assert [r[0] for r in fetch(session, "SELECT zip FROM z ORDER BY id")] == [
        "00123",
        "04567",
        "10001",
    ]


def test_parse_dates_reads_columns_as_timestamps(session, tmp_path):
    f = write_bytes(tmp_path / "p.csv", "id,joined,seen\n1,2024-01-02,2024-03-04 05:06:07\n")
    extract(session, "p", f, parse_dates=["joined", "seen"])
    types = dict(column_types(session, "p"))
    assert types["joined"] == "TIMESTAMP" and types["seen"] == "TIMESTAMP"
    assert table_rows(session, "p") == [
        (1, dt.datetime(2024, 1, 2), dt.datetime(2024, 3, 4, 5, 6, 7))
    ]


def test_na_values_and_empty_fields_are_null(session, tmp_path):
    f = write_bytes(tmp_path / "na.csv", "a,b\n1,NA\n,x\nn/a,y\n4,\n")
    extract(session, "na", f, na_values=["NA", "n/a"])
    assert fetch(session, "SELECT a, b FROM na ORDER BY rowid") == [
        (1, None),
        (None, "x"),
        (None, "y"),
        (4, None),
    ]


def test_without_na_values_na_is_a_string(session, tmp_path):
    f = write_bytes(tmp_path / "na.csv", "a,b\n1,NA\n2,\n")
    extract(session, "na", f)
    assert fetch(session, "SELECT b FROM na ORDER BY a") == [("NA",), (None,)]


@pytest.mark.parametrize(
    "size_config",
    [
        {"batch_size": 1},
        {"batch_size": 3},
        {"chunk_size": 2},
        {"batch_size": 1000, "chunk_size": 1},
    ],
)
def test_batch_and_chunk_size_never_change_the_output(session, tmp_path, size_config):
    lines = ["id,name,score"] + [f"{i},name {i},{i * 0.5}" for i in range(25)]
    f = write_bytes(tmp_path / "b.csv", "\n".join(lines) + "\n")
    baseline = extract(session, "base", f)
    out = extract(session, "sized", f, **size_config)
    assert out == {"table": "sized", "rows": baseline["rows"]}
    assert column_types(session, "sized") == column_types(session, "base")
    assert table_rows(session, "sized") == table_rows(session, "base")


# --- encodings and compression -------------------------------------------------------


def test_utf8_bom_is_stripped_from_the_first_column_name(session, tmp_path):
    f = write_bytes(tmp_path / "bom.csv", "\ufeffemail,name\na@x.cz,Žofie\n".encode())
    extract(session, "bom", f)
    assert column_names(session, "bom") == ["email", "name"]
    assert table_rows(session, "bom") == [("a@x.cz", "Žofie")]


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("utf-8", "name,city\nJosé,Zürich\nŽofie,Plzeň\n"),
        ("latin-1", "name,city\nJosé,Zürich\nÅsa,Malmö\n"),
        ("cp1252", "name,city\n€uro café,Zürich\n“quoted” — dash,Œuvre\n"),
        ("utf-16", "name,city\nJosé,Zürich\nŽofie,日本\n"),
    ],
)
def test_encodings_are_decoded(session, tmp_path, encoding, text):
    f = write_bytes(tmp_path / "enc.csv", text.encode(encoding))
    lines = text.strip().split("\n")
    assert extract(session, "enc", f, encoding=encoding) == {"table": "enc", "rows": len(lines) - 1}
    assert column_names(session, "enc") == ["name", "city"]
    assert fetch(session, "SELECT name, city FROM enc ORDER BY rowid") == [
        tuple(line.split(",")) for line in lines[1:]
    ]


def test_invalid_utf8_is_csv_error_naming_file_and_line(session, tmp_path):
    f = write_bytes(tmp_path / "bad.csv", b"a,b\n1,ok\n2,\xff\xfe broken\n3,fine\n")
    with pytest.raises(duckmerge.CsvError) as err:
        extract(session, "bad", f)
    assert err.value.path == str(f)
    assert err.value.line == 3
    assert str(f) in str(err.value)
    assert "line 3" in str(err.value)
    assert isinstance(err.value, duckmerge.DuckMergeError)


def _gzip_file(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


def _zstd_file(path: Path, text: str, tmp_path: Path) -> Path:
    plain = write_bytes(tmp_path / "zstd_source.csv", text)
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * FROM read_csv('{plain}', header = true, all_varchar = true)) "
        f"TO '{path}' (FORMAT csv, HEADER, COMPRESSION zstd)"
    )
    con.close()
    assert path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd", "not a zstd frame"
    return path


COMPRESSED_TEXT = "id,name\n1,Ann\n2,Bob\n"


def test_gzip_is_inferred_from_the_extension(session, tmp_path):
    f = _gzip_file(tmp_path / "a.csv.gz", COMPRESSED_TEXT)
    assert extract(session, "gz", f) == {"table": "gz", "rows": 2}
    assert table_rows(session, "gz") == [(1, "Ann"), (2, "Bob")]


def test_zstd_is_inferred_from_the_extension(session, tmp_path):
    f = _zstd_file(tmp_path / "a.csv.zst", COMPRESSED_TEXT, tmp_path)
    assert extract(session, "zst", f) == {"table": "zst", "rows": 2}
    assert table_rows(session, "zst") == [(1, "Ann"), (2, "Bob")]


def test_explicit_gzip_reads_a_file_without_gz_extension(session, tmp_path):
    f = _gzip_file(tmp_path / "export.dat", COMPRESSED_TEXT)
    extract(session, "gz", f, compression="gzip")
    assert table_rows(session, "gz") == [(1, "Ann"), (2, "Bob")]


def test_explicit_zstd_reads_a_file_without_zst_extension(session, tmp_path):
    f = _zstd_file(tmp_path / "export.dat", COMPRESSED_TEXT, tmp_path)
    extract(session, "zst", f, compression="zstd")
    assert table_rows(session, "zst") == [(1, "Ann"), (2, "Bob")]


def test_compression_none_reads_a_plain_file_named_gz(session, tmp_path):
    f = write_bytes(tmp_path / "mislabelled.csv.gz", COMPRESSED_TEXT)
    extract(session, "plain", f, compression="none")
    assert table_rows(session, "plain") == [(1, "Ann"), (2, "Bob")]


def test_unknown_compression_is_config_error(session, tmp_path):
    f = write_bytes(tmp_path / "a.csv", COMPRESSED_TEXT)
    with pytest.raises(duckmerge.ConfigError):
        extract(session, "a", f, compression="bz3")


# --- bad lines ------------------------------------------------------------------------

RAGGED = {
    "too_many_in_middle": ("a,b\n1,2\n3,4,5\n6,7\n", 3, [(1, 2), (6, 7)], "3,4,5"),
    "too_few_in_middle": ("a,b\n1,2\n3\n6,7\n", 3, [(1, 2), (6, 7)], "3"),
    "too_many_on_last_line": ("a,b\n1,2\n6,7\n3,4,5\n", 4, [(1, 2), (6, 7)], "3,4,5"),
}


@pytest.mark.parametrize("case", sorted(RAGGED))
def test_ragged_row_is_csv_error_with_path_and_line_by_default(session, tmp_path, case):
    text, line, _, _ = RAGGED[case]
    f = write_bytes(tmp_path / "r.csv", text)
    with pytest.raises(duckmerge.CsvError) as err:
        extract(session, "r", f)
    assert err.value.path == str(f)
    assert err.value.line == line
    assert str(f) in str(err.value) and f"line {line}" in str(err.value)
    assert "r" not in all_table_names(session)
    assert staging_tables(session) == []


@pytest.mark.parametrize("case", sorted(RAGGED))
def test_on_bad_lines_error_explicitly_is_the_default(session, tmp_path, case):
    text, line, _, _ = RAGGED[case]
    f = write_bytes(tmp_path / "r.csv", text)
    with pytest.raises(duckmerge.CsvError) as err:
        extract(session, "r", f, on_bad_lines="error")
    assert err.value.line == line


@pytest.mark.parametrize("case", sorted(RAGGED))
def test_on_bad_lines_skip_drops_rows_and_counts_them(session, tmp_path, case):
    text, _, good_rows, _ = RAGGED[case]
    f = write_bytes(tmp_path / "r.csv", text)
    ctx = RecordingCtx(session.get_db_connection())
    out = extract(ctx, "r", f, on_bad_lines="skip")
    assert out == {"table": "r", "rows": len(good_rows), "rows_skipped": 1}
    assert table_rows(session, "r") == good_rows
    assert ("rows_read", len(good_rows)) in ctx.metrics
    assert ("rows_skipped", 1) in ctx.metrics
    assert "r__rejects" not in all_table_names(session)
    assert staging_tables(session) == []


@pytest.mark.parametrize("case", sorted(RAGGED))
def test_on_bad_lines_reject_keeps_bad_rows_verbatim_with_line_numbers(session, tmp_path, case):
    text, line, good_rows, raw = RAGGED[case]
    f = write_bytes(tmp_path / "r.csv", text)
    out = extract(session, "r", f, on_bad_lines="reject")
    assert out == {"table": "r", "rows": len(good_rows), "rows_skipped": 1}
    assert table_rows(session, "r") == good_rows
    assert fetch(session, "SELECT line, raw_line FROM r__rejects ORDER BY line") == [(line, raw)]
    assert staging_tables(session) == []


def test_reject_with_crlf_line_endings_keeps_the_raw_line_verbatim(session, tmp_path):
    f = write_bytes(tmp_path / "r.csv", "a,b\r\n1,2\r\n3,4,5\r\n6,7\r\n")
    out = extract(session, "r", f, on_bad_lines="reject")
    assert out == {"table": "r", "rows": 2, "rows_skipped": 1}
    assert fetch(session, "SELECT line, raw_line FROM r__rejects ORDER BY line") == [(3, "3,4,5")]


MANY_BAD = 'a,b\n1,2\n5,"x,y",6\n7,8\n9\n10,11\n'


def test_rows_skipped_counts_rows_not_errors(session, tmp_path):
    # line 3 has both too many fields and a value that is not a number
    f = write_bytes(tmp_path / "r.csv", MANY_BAD)
    ctx = RecordingCtx(session.get_db_connection())
    out = extract(ctx, "r", f, on_bad_lines="skip")
    assert table_rows(session, "r") == [(1, 2), (7, 8), (10, 11)]
    assert out == {"table": "r", "rows": 3, "rows_skipped": 2}
    assert ("rows_skipped", 2) in ctx.metrics


def test_rejects_table_has_one_row_per_rejected_line(session, tmp_path):
    f = write_bytes(tmp_path / "r.csv", MANY_BAD)
    extract(session, "r", f, on_bad_lines="reject")
    assert fetch(session, "SELECT line, raw_line FROM r__rejects ORDER BY line") == [
        (3, '5,"x,y",6'),
        (5, "9"),
    ]


def test_reject_rerun_replaces_the_rejects_table(session, tmp_path):
    bad = write_bytes(tmp_path / "bad.csv", "a,b\n1,2\n3,4,5\n6,7\n")
    extract(session, "r", bad, on_bad_lines="reject")
    bad2 = write_bytes(tmp_path / "bad2.csv", "a,b\n1,2\n6,7\n8\n")
    extract(session, "r", bad2, on_bad_lines="reject")
    assert fetch(session, "SELECT line, raw_line FROM r__rejects") == [(4, "8")]


# --- discovery -------------------------------------------------------------------------


def test_discovery_lists_sorted_csv_files_with_column_types(session, tmp_path):
    folder = tmp_path / "inbox"
    write_bytes(folder / "b.csv", "x,y\n1,a\n2,b\n")
    write_bytes(folder / "a.csv", "day\n2024-01-01\n2024-01-02\n")
    write_bytes(folder / "readme.txt", "not a csv")
    out = extract(session, "disc", folder, discovery=True)
    files = [str(folder / "a.csv"), str(folder / "b.csv")]
    assert out["files"] == files
    assert out["total_files"] == 2
    assert out["status"] == "success"
    # observed: the per-file column -> type guess is under "schemas", keyed by path
    assert out["schemas"] == {files[0]: {"day": "DATE"}, files[1]: {"x": "BIGINT", "y": "VARCHAR"}}
    assert "disc" not in all_table_names(session)


def test_discovery_of_an_empty_folder_lists_nothing(session, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    out = extract(session, "disc", folder, discovery=True)
    assert out["files"] == [] and out["total_files"] == 0 and out["status"] == "success"


def test_folder_without_discovery_is_config_error(session, tmp_path):
    folder = tmp_path / "inbox"
    write_bytes(folder / "a.csv", "x\n1\n")
    with pytest.raises(duckmerge.ConfigError) as err:
        extract(session, "f", folder)
    assert str(folder) in str(err.value)
    assert "discovery" in str(err.value)


# --- table naming, replacement, atomicity ------------------------------------------


@pytest.mark.parametrize(
    "step_id", ["extract-movies", 'x"; DROP TABLE y; --', "with space", "Mixed.Case", "ünïcødé"]
)
def test_step_id_is_only_a_table_name(session, people_csv, step_id):
    session.execute("CREATE TABLE y AS SELECT 42 AS v")
    assert extract(session, step_id, people_csv) == {"table": step_id, "rows": 3}
    assert step_id in all_table_names(session)
    assert fetch(session, "SELECT v FROM y") == [(42,)]
    assert len(table_rows(session, step_id)) == 3


@pytest.mark.parametrize(
    "file_name",
    ["o'brien.csv", "it's'; DROP TABLE y; --.csv", "with space.csv", "ünïcødé 日本.csv"],
)
def test_file_path_with_quotes_and_unicode_is_just_a_path(session, tmp_path, file_name):
    session.execute("CREATE TABLE y AS SELECT 42 AS v")
    f = write_bytes(tmp_path / "in'put dir" / file_name, "a,b\n1,2\n")
    assert extract(session, "q", f) == {"table": "q", "rows": 1}
    assert table_rows(session, "q") == [(1, 2)]
    assert fetch(session, "SELECT v FROM y") == [(42,)]


def test_rerun_replaces_the_table(session, tmp_path):
    first = write_bytes(tmp_path / "first.csv", "a,b\n1,2\n3,4\n")
    second = write_bytes(tmp_path / "second.csv", "c\nx\n")
    extract(session, "step", first)
    assert extract(session, "step", second) == {"table": "step", "rows": 1}
    assert column_names(session, "step") == ["c"]
    assert table_rows(session, "step") == [("x",)]


@pytest.mark.parametrize("case", sorted(RAGGED))
def test_failing_rerun_keeps_previous_table_and_leaves_no_staging(session, tmp_path, case):
    good = write_bytes(tmp_path / "good.csv", "a,b\n10,20\n30,40\n")
    extract(session, "step", good)
    bad = write_bytes(tmp_path / "bad.csv", RAGGED[case][0])
    with pytest.raises(duckmerge.CsvError):
        extract(session, "step", bad)
    assert table_rows(session, "step") == [(10, 20), (30, 40)]
    assert staging_tables(session) == []


def test_failing_rerun_with_invalid_utf8_keeps_previous_table(session, tmp_path):
    good = write_bytes(tmp_path / "good.csv", "a,b\n10,20\n")
    extract(session, "step", good)
    bad = write_bytes(tmp_path / "bad.csv", b"a,b\n1,\xff\n")
    with pytest.raises(duckmerge.CsvError):
        extract(session, "step", bad)
    assert table_rows(session, "step") == [(10, 20)]
    assert staging_tables(session) == []


def test_artifacts_folder_is_sanitised_for_path_like_step_ids(
    session, session_path, tmp_path, people_csv
):
    config = {"path": str(people_csv)}
    duckmerge.CsvExtractor().run(step_id="../../x", config=config, inputs=None, ctx=session)
    artifacts = Path(session.artifacts_dir).resolve()
    assert artifacts == (session_path / "artifacts").resolve()
    written = [p.resolve() for p in tmp_path.rglob("cleaned_config.json")]
    assert len(written) == 1, written
    assert artifacts in written[0].parents
    assert json.loads(written[0].read_text()) == config
    assert not (tmp_path / "x").exists()
    assert not (session_path / "x").exists()


def test_cleaned_config_is_written_for_a_plain_step(session, people_csv):
    config = {"path": str(people_csv), "delimiter": ","}
    extract(session, "people", people_csv, delimiter=",")
    cleaned = Path(session.artifacts_dir) / "people" / "cleaned_config.json"
    assert json.loads(cleaned.read_text()) == config


# --- edge-case files ---------------------------------------------------------------------


def test_zero_byte_file_gives_zero_row_table(session, tmp_path):
    f = write_bytes(tmp_path / "empty.csv", b"")
    assert extract(session, "empty", f) == {"table": "empty", "rows": 0}
    assert table_rows(session, "empty") == []
    # observed: DuckDB invents one VARCHAR column named column0
    assert column_names(session, "empty") == ["column0"]


@pytest.mark.parametrize("text", ["id,email,phone\n", "id,email,phone", "id,email,phone\r\n"])
def test_header_only_file_keeps_columns(session, tmp_path, text):
    f = write_bytes(tmp_path / "h.csv", text)
    assert extract(session, "h", f) == {"table": "h", "rows": 0}
    assert column_names(session, "h") == ["id", "email", "phone"]


def test_duplicate_column_names_are_made_unique(session, tmp_path):
    f = write_bytes(tmp_path / "dup.csv", "a,a,b,a\n1,2,3,4\n")
    extract(session, "dup", f)
    names = column_names(session, "dup")
    assert len(set(names)) == 4
    # observed: DuckDB suffixes repeats with _1, _2
    assert names == ["a", "a_1", "b", "a_2"]
    assert table_rows(session, "dup") == [(1, 2, 3, 4)]


def test_quoted_fields_keep_delimiters_quotes_and_newlines(session, tmp_path):
    f = write_bytes(
        tmp_path / "q.csv",
        'id,note\n1,"a, b"\n2,"he said ""hi"""\n3,"line1\r\nline2"\n4,"x\ny"\n5,"cr\ronly"\n',
    )
    assert extract(session, "q", f)["rows"] == 5
    assert table_rows(session, "q") == [
        (1, "a, b"),
        (2, 'he said "hi"'),
        (3, "line1\r\nline2"),
        (4, "x\ny"),
        (5, "cr\ronly"),
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_line_endings(session, tmp_path, newline):
    f = write_bytes(tmp_path / "nl.csv", newline.join(["a,b", "1,x", "2,y", "3,z"]) + newline)
    assert extract(session, "nl", f)["rows"] == 3
    assert column_names(session, "nl") == ["a", "b"]
    assert table_rows(session, "nl") == [(1, "x"), (2, "y"), (3, "z")]


def test_missing_file_is_source_not_found_with_absolute_path(session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(duckmerge.SourceNotFoundError) as err:
        extract(session, "m", "nope/missing.csv")
    assert isinstance(err.value, FileNotFoundError)
    assert isinstance(err.value, duckmerge.DuckMergeError)
    assert str(tmp_path / "nope" / "missing.csv") in str(err.value)
    assert "m" not in all_table_names(session)


def test_a_thousand_columns(session, tmp_path):
    header = ",".join(f"c{i}" for i in range(1000))
    rows = [",".join(str(r * 1000 + i) for i in range(1000)) for r in range(3)]
    f = write_bytes(tmp_path / "wide.csv", "\n".join([header, *rows]) + "\n")
    assert extract(session, "wide", f) == {"table": "wide", "rows": 3}
    assert column_names(session, "wide") == [f"c{i}" for i in range(1000)]
    assert fetch(session, "SELECT c0, c500, c999 FROM wide ORDER BY c0") == [
        (0, 500, 999),
        (1000, 1500, 1999),
        (2000, 2500, 2999),
    ]


def test_ten_megabyte_field(session, tmp_path):
    big = "x" * (10 * 1024 * 1024)
    f = write_bytes(tmp_path / "big.csv", f'id,payload,tail\n1,"{big}",end\n2,small,end2\n')
    assert extract(session, "big", f) == {"table": "big", "rows": 2}
    assert fetch(session, "SELECT id, length(payload), tail FROM big ORDER BY id") == [
        (1, len(big), "end"),
        (2, 5, "end2"),
    ]


# --- compress_text --------------------------------------------------------------------------


def varchar_compression(session, table):
    """{column: set of compression names} for the table's VARCHAR segments
    (after a checkpoint: before one, small tables are not compressed yet)."""
    session.get_db_connection().execute("CHECKPOINT")
    out: dict[str, set[str]] = {}
    for col, comp in fetch(
        session,
        f"SELECT column_name, compression FROM pragma_storage_info('{table}') "
        "WHERE segment_type = 'VARCHAR'",
    ):
        out.setdefault(col, set()).add(comp)
    return out


MIXED = (
    "id,code,name,joined,score\n"
    + "".join(
        f"{i},{i % 7:05d},{'name ' + str(i % 50) if i % 9 else ''},2024-01-{i % 28 + 1:02d},{i / 4}\n"
        for i in range(3000)
    )
)


def test_compress_text_false_stores_text_uncompressed_and_loads_the_same_table(
    session, tmp_path
):
    f = write_bytes(tmp_path / "mixed.csv", MIXED)
    options = {"dtype": {"code": "str"}, "na_values": ["name 3"]}
    assert extract(session, "packed", f, **options) == {"table": "packed", "rows": 3000}
    out = extract(session, "plain", f, compress_text=False, **options)
    assert out == {"table": "plain", "rows": 3000}
    assert session.table("plain").to_arrow().equals(session.table("packed").to_arrow())
    plain, packed = varchar_compression(session, "plain"), varchar_compression(session, "packed")
    assert set(plain) == set(packed) == {"code", "name"}
    assert all(c == {"Uncompressed"} for c in plain.values()), plain
    assert all("Uncompressed" not in c for c in packed.values()), packed
    assert staging_tables(session) == []


def test_compress_text_false_with_rejected_lines(session, tmp_path):
    f = write_bytes(tmp_path / "r.csv", "a,b\n1,x\n2,y,extra\n3,z\n")
    out = extract(session, "r", f, on_bad_lines="reject", compress_text=False)
    assert out == {"table": "r", "rows": 2, "rows_skipped": 1}
    assert table_rows(session, "r") == [(1, "x"), (3, "z")]
    assert fetch(session, "SELECT line, raw_line FROM r__rejects") == [(3, "2,y,extra")]
    assert varchar_compression(session, "r") == {"b": {"Uncompressed"}}
    assert staging_tables(session) == []


def test_compress_text_false_with_a_ten_megabyte_field(session, tmp_path):
    big = "x" * (10 * 1024 * 1024)
    f = write_bytes(tmp_path / "big.csv", f'id,payload\n1,"{big}"\n2,small\n')
    assert extract(session, "big", f, compress_text=False) == {"table": "big", "rows": 2}
    assert fetch(session, "SELECT id, length(payload) FROM big ORDER BY id") == [
        (1, len(big)),
        (2, 5),
    ]


def test_compress_text_false_failing_rerun_keeps_the_previous_table(session, tmp_path):
    good = write_bytes(tmp_path / "good.csv", "a,b\n1,x\n")
    bad = write_bytes(tmp_path / "bad.csv", "a,b\n1,x\n2,y,extra\n")
    extract(session, "t", good, compress_text=False)
    with pytest.raises(duckmerge.CsvError):
        extract(session, "t", bad, compress_text=False)
    assert table_rows(session, "t") == [(1, "x")]
    assert staging_tables(session) == []


def test_compress_text_must_be_a_bool(session, people_csv):
    with pytest.raises(duckmerge.ConfigError, match="compress_text|bool"):
        extract(session, "people", people_csv, compress_text="no")


# --- concurrency --------------------------------------------------------------------------


def test_two_extractors_in_two_threads_into_one_session(session, tmp_path):
    files = {}
    for name, n in [("crm_left", 60_000), ("crm_right", 40_000)]:
        lines = ["id,label"] + [f"{i},{name}-{i}" for i in range(n)]
        files[name] = (write_bytes(tmp_path / f"{name}.csv", "\n".join(lines) + "\n"), n)
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def run(name: str) -> None:
        path, _ = files[name]
        barrier.wait()
        try:
            results[name] = duckmerge.CsvExtractor().run(
                step_id=name, config={"path": str(path)}, inputs=None, ctx=session
            )
        except Exception as e:  # noqa: BLE001 - re-raised by the assert below
            results[name] = e

    threads = [threading.Thread(target=run, args=(name,)) for name in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for name, (_, n) in files.items():
        assert results[name] == {"table": name, "rows": n}
        assert fetch(
            session, f"SELECT count(*), sum(id), min(label), count(DISTINCT label) FROM {name}"
        ) == [(n, n * (n - 1) // 2, f"{name}-0", n)]
    assert staging_tables(session) == []


def test_engine_failure_names_the_step_and_file(tmp_path):
    # An out-of-memory failure is not a CSV problem, but the message still
    # says which step and which file.
    f = write_bytes(tmp_path / "m.csv", "a,b\n" + "".join(f"{i},x{i}\n" for i in range(20000)))
    with duckmerge.Session(tmp_path / "s", memory_limit="1MB") as s:
        with pytest.raises(duckmerge.DuckMergeError) as err:
            duckmerge.CsvExtractor().run(step_id="crm", config={"path": str(f)}, ctx=s)
    assert "Step crm" in str(err.value)
    assert str(f) in str(err.value)
