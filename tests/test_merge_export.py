"""The merge's export stage (issue 4): the output file holds exactly the
output table, whichever way it was written.

On a session's own database the file is written by a ``COPY`` of the same
query that creates the output table, at the same time on a second connection;
on a duckdb-python host connection it is written after the table. These tests
hold both to what the CsvWriter writes from the finished table."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import duckdb
import duckmerge
import pytest
from _drivers_util import RecordingCtx

STAGES = ["import_original", "import_enriched", "consolidate", "match_merge", "export"]
ROWS = 20_000


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """A CRM file and two vendor files: quotes, commas, NULLs, duplicates, and
    rows spread over many vectors so that order is really tested."""
    folder = tmp_path_factory.mktemp("export-data")
    paths = {n: str(folder / f"{n}.csv") for n in ("crm", "va", "vb")}
    con = duckdb.connect()
    con.execute(f"""
        COPY (SELECT i AS id, 'p' || i || '@x.cz' AS email,
                     CASE WHEN i % 3 = 0 THEN '+420 601 ' || lpad(CAST(i AS VARCHAR), 6, '0') END
                       AS phone,
                     CASE WHEN i % 7 = 0 THEN NULL ELSE 'name, "' || i || '"' END AS name,
                     DATE '2024-01-01' + CAST(i % 400 AS INTEGER) AS joined
              FROM range({ROWS}) t(i)) TO '{paths["crm"]}' (HEADER)""")
    con.execute(f"""
        COPY (SELECT upper(' P' || (i * 7 % {ROWS}) || '@X.CZ') AS email,
                     'title ' || i AS title, i % 5 = 0 AS vip, i * 1.5 AS score
              FROM range({ROWS}) t(i)) TO '{paths["va"]}' (HEADER)""")
    con.execute(f"""
        COPY (SELECT '00420601' || lpad(CAST(i * 3 AS VARCHAR), 6, '0') AS phone,
                     'city ' || (i % 97) AS city, 'vb title ' || i AS title
              FROM range({ROWS // 2}) t(i)) TO '{paths["vb"]}' (HEADER)""")
    con.close()
    return paths


def config(paths: dict[str, str], out: Path) -> dict:
    return {
        "original": {"path": paths["crm"]},
        "enriched": [{"path": paths["va"]}, {"path": paths["vb"], "name": "vb"}],
        "keys": ["email", {"column": "phone", "normalize": "phone", "default_region": "CZ"}],
        "output": {"path": str(out)},
    }


def writer_copy(ctx, table: str, path: Path) -> None:
    """What the CsvWriter writes from ``table`` (columns in table order)."""
    duckmerge.CsvWriter().run(
        step_id="reference",
        config={"path": str(path), "sort_columns": False},
        inputs={"table": table},
        ctx=ctx,
    )


def content(path: Path) -> bytes | list[tuple]:
    """The file's bytes (CSV, gzip decompressed) or its rows in file order (Parquet)."""
    if path.suffix == ".parquet":
        return duckdb.sql("SELECT * FROM read_parquet(?)", params=[str(path)]).fetchall()
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


@pytest.mark.parametrize("name", ["merged.csv", "merged.csv.gz", "merged.parquet"])
def test_the_output_file_is_what_the_writer_writes_from_the_output_table(
    inputs, tmp_path, name
):
    out = tmp_path / "out" / name
    with duckmerge.Session(tmp_path / "s") as s:
        result = duckmerge.MergeDriver().run(step_id="merged", config=config(inputs, out), ctx=s)
        assert result["rows"] == ROWS
        reference = tmp_path / "ref" / name
        writer_copy(s, "merged", reference)
        ids = [r[0] for r in s.sql("SELECT id FROM merged").fetchall()]
    assert ids == list(range(ROWS))
    assert content(out) == content(reference)
    assert result["stats"]["matched"] > ROWS // 2  # both keys really match


def test_on_a_session_the_file_is_written_beside_the_output_table(inputs, tmp_path, caplog):
    """The session's own database runs the file's COPY while the table is
    created (the debug log says so), and no second COPY reads the table."""
    caplog.set_level(logging.DEBUG, logger="duckmerge")
    out = tmp_path / "merged.csv"
    with duckmerge.Session(tmp_path / "s") as s:
        duckmerge.MergeDriver().run(step_id="merged", config=config(inputs, out), ctx=s)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("duckmerge")]
    beside = [m for m in messages if m.startswith("SQL beside it")]
    assert len(beside) == 1 and "COPY (SELECT" in beside[0], beside
    copies = [m for m in messages if m.startswith("SQL") and "COPY" in m]
    assert copies == beside
    assert out.is_file()


def test_the_export_stage_reports_the_write_and_leaves_no_temp_files(inputs, tmp_path):
    out = tmp_path / "out" / "merged.csv"
    with duckmerge.Session(tmp_path / "s") as s:
        ctx = RecordingCtx(s.get_db_connection())
        duckmerge.MergeDriver().run(step_id="merged", config=config(inputs, out), ctx=ctx)
    assert ("rows_written", ROWS) in ctx.metrics
    names = ctx.event_names
    last_match = max(
        i for i, (args, data) in enumerate(ctx.event_calls)
        if args[0] == "merge_progress" and data.get("stage") == "match_merge"
    )
    assert names.index("write_start") > last_match
    assert names.index("write_complete") > names.index("write_start")
    done = [data for args, data in ctx.event_calls if args[0] == "write_complete"]
    assert done[0]["rows"] == ROWS and done[0]["path"] == str(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["merged.csv"]


def test_a_duckdb_python_host_writes_the_same_file(inputs, tmp_path):
    """The host connection writes after the table, one statement at a time:
    the same bytes as the session's own database."""
    ours = tmp_path / "session.csv"
    with duckmerge.Session(tmp_path / "s") as s:
        duckmerge.MergeDriver().run(step_id="merged", config=config(inputs, ours), ctx=s)
    host = tmp_path / "host.csv"
    con = duckdb.connect(str(tmp_path / "host.duckdb"))
    try:
        ctx = RecordingCtx(con)
        duckmerge.MergeDriver().run(step_id="merged", config=config(inputs, host), ctx=ctx)
        assert ("rows_written", ROWS) in ctx.metrics
    finally:
        con.close()
    assert host.read_bytes() == ours.read_bytes()


def test_an_output_folder_that_cannot_be_made_fails_only_the_export(inputs, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    bad = blocker / "merged.csv"
    with duckmerge.Session(tmp_path / "s", keep=True) as s:
        with pytest.raises(duckmerge.DuckMergeError, match="not-a-folder"):
            duckmerge.MergeDriver().run(step_id="merged", config=config(inputs, bad), ctx=s)
        assert s.sql("SELECT count(*) FROM merged").fetchone() == (ROWS,)
        good = tmp_path / "out" / "merged.csv"
        again = duckmerge.MergeDriver().run(step_id="merged", config=config(inputs, good), ctx=s)
        reference = tmp_path / "ref.csv"
        writer_copy(s, "merged", reference)
    assert again["skipped_stages"] == STAGES[:4]
    assert good.read_bytes() == reference.read_bytes()
    assert blocker.read_text() == "a file where the output folder should be"


def test_match_merge_reports_when_its_tables_and_file_are_done(inputs, tmp_path):
    """The match_merge progress event marks the end of the stage: by then the
    output table, its stats and unmatched tables and the temp file written
    beside it exist, so the time between stage events is each stage's time."""
    out = tmp_path / "out" / "merged.csv"
    seen: dict[str, object] = {}

    class Checking(RecordingCtx):
        def log_event(self, *args, **kwargs):
            super().log_event(*args, **kwargs)
            if args[0] == "merge_progress" and kwargs.get("stage") == "match_merge":
                seen["tables"] = set(self._con.tables())
                seen["files"] = sorted(p.name for p in out.parent.iterdir())

    with duckmerge.Session(tmp_path / "s") as s:
        ctx = Checking(s.get_db_connection())
        duckmerge.MergeDriver().run(step_id="merged", config=config(inputs, out), ctx=ctx)
    assert {"merged", "merged__stats", "merged__unmatched"} <= seen["tables"]
    # Written beside the table, not yet renamed: that is the export stage.
    assert "merged.csv" not in seen["files"] and len(seen["files"]) == 1, seen["files"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["merged.csv"]


def text_compressions(session, table: str) -> set[str]:
    session.get_db_connection().execute("CHECKPOINT")
    return {
        r[0]
        for r in session.sql(
            f"SELECT compression FROM pragma_storage_info('{table}') WHERE segment_type = 'VARCHAR'"
        ).fetchall()
    }


def test_compress_text_false_stores_text_uncompressed_with_the_same_results(inputs, tmp_path):
    """``output.compress_text: false`` (and the CsvExtractor option of the same
    name on file sources) changes only how text is stored: the output table,
    its file and the stats are the same; a changed setting reruns the stage."""
    runs = {}
    for packed in (True, False):
        out = tmp_path / f"merged-{packed}.csv"
        cfg = config(inputs, out)
        if not packed:
            cfg["output"]["compress_text"] = False
            cfg["original"]["compress_text"] = False
        with duckmerge.Session(tmp_path / f"s-{packed}") as s:
            result = duckmerge.MergeDriver().run(step_id="merged", config=cfg, ctx=s)
            runs[packed] = {
                "table": s.table("merged").to_arrow(),
                "file": content(out),
                "stats": result["stats"],
                "output": text_compressions(s, "merged"),
                "original": text_compressions(s, "merged__original"),
            }
            if not packed:
                cfg["output"]["compress_text"] = True
                again = duckmerge.MergeDriver().run(step_id="merged", config=cfg, ctx=s)
                assert again["skipped_stages"] == STAGES[:3]
                assert "Uncompressed" not in text_compressions(s, "merged")
    assert runs[False]["table"].equals(runs[True]["table"])
    assert runs[False]["file"] == runs[True]["file"]
    assert runs[False]["stats"] == runs[True]["stats"]
    assert runs[False]["output"] == {"Uncompressed"}
    assert runs[False]["original"] == {"Uncompressed"}
    assert "Uncompressed" not in runs[True]["output"]
    assert "Uncompressed" not in runs[True]["original"]


def test_output_compress_text_must_be_a_bool(inputs, tmp_path):
    cfg = config(inputs, tmp_path / "m.csv")
    cfg["output"]["compress_text"] = "yes"
    with duckmerge.Session(tmp_path / "s") as s, pytest.raises(duckmerge.ConfigError):
        duckmerge.MergeDriver().run(step_id="merged", config=cfg, ctx=s)
