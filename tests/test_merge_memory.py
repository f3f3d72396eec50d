"""While a merge or a CSV extraction runs, freed memory is handed back to
the OS (glibc only).

The trimmer (src/memory.rs) starts with every merge and extraction unless
``DUCKMERGE_MALLOC_TRIM=0``; jobs running at once (an extraction inside a
merge) share one. It logs how often it trimmed when the last job ends.
Trimming must never change a result.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import duckdb
import duckmerge
import pyarrow as pa
import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="malloc_trim is glibc-only"
)

TRIM_LOG = "returned freed memory to the OS"


def merge(tmp_path: Path, name: str) -> pa.Table:
    rows = 30_000
    original = pa.table(
        {
            "id": list(range(rows)),
            "email": [f"User{i}@Example.com " if i % 7 else None for i in range(rows)],
        }
    )
    vendor = pa.table(
        {
            "email": [f"user{i % (rows // 2)}@example.com" for i in range(rows)],
            "city": [f"city {i}" if i % 3 else None for i in range(rows)],
        }
    )
    # A small memory_limit: the test process's RSS is above it plus 20 %, so
    # the trimmer trims as soon as the merge outlasts its first poll.
    with duckmerge.Session(tmp_path / name, memory_limit="64MB", threads=2) as s:
        s.write_table("crm", original)
        s.write_table("vendor", vendor)
        duckmerge.MergeDriver().run(
            step_id="merged",
            config={"original": "crm", "enriched": ["vendor"], "keys": ["email"]},
            ctx=s,
        )
        return s.table("merged").to_arrow()


def trim_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if TRIM_LOG in r.getMessage()]


def test_trimming_runs_during_a_merge_and_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="duckmerge")
    monkeypatch.delenv("DUCKMERGE_MALLOC_TRIM", raising=False)
    trimmed = merge(tmp_path, "on")
    assert len(trim_records(caplog)) == 1, trim_records(caplog)

    caplog.clear()
    monkeypatch.setenv("DUCKMERGE_MALLOC_TRIM", "0")
    untrimmed = merge(tmp_path, "off")
    assert trim_records(caplog) == []

    assert trimmed.num_rows == 30_000
    assert trimmed.equals(untrimmed)
    # Original i has an email unless i % 7 == 0 and matches vendor rows
    # i and i + 15000 when i < 15000; both have a city unless i % 3 == 0
    # (15000 is a multiple of 3). Per block of 21 values of i, 12 are
    # divisible by neither 3 nor 7: 714 blocks below 14994, then 1, 2, 4, 5.
    cities = trimmed.column("city").to_pylist()
    assert sum(c is not None for c in cities) == 714 * 12 + 4
    assert cities[1] == "city 1" and cities[3] is None and cities[7] is None


def contacts_csv(path: Path, rows: int) -> Path:
    con = duckdb.connect()
    con.execute(
        f"""COPY (SELECT i AS id, 'User' || i || '@Example.com' AS email,
                         repeat('x', CAST(i % 50 AS INTEGER)) AS note
                  FROM range({rows}) t(i)) TO '{path}' (HEADER)"""
    )
    con.close()
    return path


def extract(tmp_path: Path, name: str, src: Path) -> pa.Table:
    # memory_limit as in merge(): the trimmer trims from its first poll on.
    with duckmerge.Session(tmp_path / name, memory_limit="64MB", threads=2) as s:
        duckmerge.CsvExtractor().run(step_id="contacts", config={"path": str(src)}, ctx=s)
        return s.table("contacts").to_arrow()


def test_trimming_runs_during_an_extraction_and_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = contacts_csv(tmp_path / "contacts.csv", 300_000)
    caplog.set_level(logging.DEBUG, logger="duckmerge")
    monkeypatch.delenv("DUCKMERGE_MALLOC_TRIM", raising=False)
    trimmed = extract(tmp_path, "on", src)
    assert len(trim_records(caplog)) == 1, trim_records(caplog)

    caplog.clear()
    monkeypatch.setenv("DUCKMERGE_MALLOC_TRIM", "0")
    untrimmed = extract(tmp_path, "off", src)
    assert trim_records(caplog) == []

    assert trimmed.equals(untrimmed)
    assert trimmed.column("id").to_pylist() == list(range(300_000))
    assert trimmed.column("note").to_pylist()[49] == "x" * 49


def test_a_merge_of_csv_files_shares_one_trimmer_with_its_extractions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    crm = contacts_csv(tmp_path / "crm.csv", 20_000)
    vendor = tmp_path / "vendor.csv"
    vendor.write_text("email,city\n" + "".join(f"user{i}@example.com,c{i}\n" for i in range(500)))
    caplog.set_level(logging.DEBUG, logger="duckmerge")
    monkeypatch.delenv("DUCKMERGE_MALLOC_TRIM", raising=False)
    with duckmerge.Session(tmp_path / "s", memory_limit="64MB", threads=2) as s:
        result = duckmerge.MergeDriver().run(
            step_id="merged",
            config={"original": {"path": str(crm)}, "enriched": [{"path": str(vendor)}],
                    "keys": ["email"]},
            ctx=s,
        )
    assert result["stats"]["matched"] == 500
    # One line for the whole merge: the two extractions inside it started
    # no trimmer of their own.
    assert len(trim_records(caplog)) == 1, trim_records(caplog)


SCRATCH = "_duckmerge_scratch"


def test_working_tables_leave_nothing_behind(tmp_path: Path) -> None:
    """match_merge keeps its working tables in an in-memory database attached
    as ``_duckmerge_scratch`` (DuckDB spills it to the temp directory past
    memory_limit). When the merge ends none of them is left, there or in the
    session's file, and a second merge reuses the attached database."""
    rows = 150_000
    note = "n" * 200  # ~30 MB of picked values at a 64MB memory_limit
    original = pa.table({"id": list(range(rows)), "email": [f"u{i}@x.cz" for i in range(rows)]})
    vendor = pa.table({
        "email": [f"U{i}@x.cz " for i in range(rows)],
        "note": [f"{note}{i}" for i in range(rows)],
    })
    with duckmerge.Session(tmp_path / "s", memory_limit="64MB", threads=2) as s:
        s.write_table("crm", original)
        s.write_table("vendor", vendor)
        before = set(s.get_db_connection().tables())
        result = duckmerge.MergeDriver().run(
            step_id="merged",
            config={"original": "crm", "enriched": ["vendor"], "keys": ["email"]},
            ctx=s,
        )
        assert result["stats"]["matched"] == rows
        notes = s.sql("SELECT note FROM merged").to_arrow().column("note").to_pylist()
        assert notes == [f"{note}{i}" for i in range(rows)]
        left = s.sql(
            "SELECT database_name, table_name FROM duckdb_tables() "
            "WHERE database_name = ? OR starts_with(table_name, '_duckmerge_staging_')",
            [SCRATCH],
        ).fetchall()
        assert left == []
        new = set(s.get_db_connection().tables()) - before
        # The outputs, plus what resume keeps: stage records and the
        # consolidated vendor keys.
        assert {t for t in new if not t.startswith("_duckmerge_consolidated_")} == {
            "merged", "merged__stats", "merged__unmatched", "_duckmerge_stages"
        }
        # A second merge in the same session reuses the attached database.
        duckmerge.MergeDriver().run(
            step_id="again",
            config={"original": "crm", "enriched": ["vendor"], "keys": ["email"]},
            ctx=s,
        )
        assert s.sql("SELECT count(*) FROM again").fetchone() == (rows,)


def test_working_tables_on_a_duckdb_python_connection(tmp_path: Path) -> None:
    """On a host's duckdb-python connection the scratch database is attached
    to the host's database and emptied, and the host's own tables are the
    only ones left beside the outputs."""
    con = duckdb.connect(str(tmp_path / "host.duckdb"))
    con.execute("CREATE TABLE crm AS SELECT i AS id, 'u' || i || '@x.cz' AS email FROM range(1000) t(i)")
    con.execute("CREATE TABLE vendor AS SELECT 'U' || i || '@x.cz' AS email, 'c' || i AS city "
                "FROM range(0, 1000, 2) t(i)")

    class Host:
        def get_db_connection(self):
            return con

    result = duckmerge.MergeDriver().run(
        step_id="merged",
        config={"original": "crm", "enriched": ["vendor"], "keys": ["email"]},
        ctx=Host(),
    )
    assert result["stats"]["matched"] == 500
    assert con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ?", [SCRATCH]
    ).fetchone() == (0,)
    assert con.execute("SELECT city FROM merged WHERE id = 4").fetchone() == ("c4",)
    con.close()


def test_two_merges_at_once_on_one_session_take_turns(tmp_path: Path) -> None:
    """Two merges in two threads on one session share the stage log, the
    vendor tables and the consolidated table, so the second waits for the
    first (before, one failed with a write-write conflict on them). Both
    succeed, each gives what it gives alone, and no scratch table is left."""
    import threading

    rows = 40_000
    original = pa.table({"id": list(range(rows)), "email": [f"u{i}@x.cz" for i in range(rows)]})
    vendor = pa.table({
        "email": [f"U{i}@x.cz" for i in range(0, rows, 2)],
        "city": [f"c{i}" for i in range(0, rows, 2)],
    })
    config = {"original": "crm", "enriched": ["vendor"], "keys": ["email"]}
    with duckmerge.Session(tmp_path / "s", memory_limit="256MB", threads=2) as s:
        s.write_table("crm", original)
        s.write_table("vendor", vendor)
        results: dict[str, object] = {}

        def run(step: str) -> None:
            try:
                results[step] = duckmerge.MergeDriver().run(step_id=step, config=config, ctx=s)
            except Exception as e:  # noqa: BLE001 (asserted below)
                results[step] = e

        threads = [threading.Thread(target=run, args=(f"m{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        for step in ("m0", "m1"):
            assert isinstance(results[step], dict), results[step]
            assert results[step]["stats"]["matched"] == rows // 2
            cities = s.sql(f"SELECT city FROM {step}").to_arrow().column("city").to_pylist()
            assert cities == [f"c{i}" if i % 2 == 0 else None for i in range(rows)]
        assert s.sql(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ?", [SCRATCH]
        ).fetchone() == (0,)
