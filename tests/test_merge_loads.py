"""A merge loads its source files two at a time on a session (a second
connection loads beside the first) when the memory_limit leaves room, one at
a time below 256 MB: the same merge either way, a failing file stops the
other load and is the error reported, and Ctrl-C stops both."""

from __future__ import annotations

import logging
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import duckmerge
import pytest
from _drivers_util import ctrl_c_child, staging_tables


def write_csv(path: Path, select: str) -> Path:
    con = duckdb.connect()
    con.execute(f"COPY ({select}) TO '{path}' (FORMAT csv, HEADER)")
    con.close()
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("loads")
    return {
        "crm": write_csv(
            d / "crm.csv",
            "SELECT range AS id, 'u' || range || '@x.cz' AS email, NULL::VARCHAR AS city "
            "FROM range(20000)",
        ),
        "v0": write_csv(
            d / "v0.csv",
            "SELECT 'U' || (range * 2) || '@x.cz' AS email, 'city' || range AS city, "
            "'a' || range AS title FROM range(10000)",
        ),
        "v1": write_csv(
            d / "v1.csv",
            "SELECT ' u' || (range * 3) || '@X.cz' AS email, 'town' || range AS city, "
            "'b' || range AS title FROM range(7000)",
        ),
        "v2": write_csv(
            d / "v2.csv",
            "SELECT 'u' || (range * 5) || '@x.cz' AS email, NULL::VARCHAR AS city, "
            "'c' || range AS title FROM range(4000)",
        ),
    }


def config(files: dict[str, Path], out: Path) -> dict:
    return {
        "original": {"path": str(files["crm"])},
        "enriched": [{"path": str(files[v]), "name": v} for v in ("v0", "v1", "v2")],
        "keys": ["email"],
        "output": {"path": str(out)},
    }


def load_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("duckmerge") and "source file(s)" in r.getMessage()
    ]


def test_files_load_two_at_a_time_and_merge_as_one_at_a_time_does(
    files: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="duckmerge")
    outputs = {}
    for memory_limit in ("500MB", "128MB"):
        caplog.clear()
        out = tmp_path / f"out-{memory_limit}.csv"
        with duckmerge.Session(tmp_path / memory_limit, memory_limit=memory_limit,
                               threads=2) as s:
            result = duckmerge.MergeDriver().run(
                step_id="merged", config=config(files, out), ctx=s
            )
            rows = s.sql("SELECT * FROM merged").fetchall()
            assert staging_tables(s) == []
        how = "two at a time" if memory_limit == "500MB" else "one at a time"
        assert load_messages(caplog) == [f"Step merged: loading 4 source file(s) {how}"]
        outputs[memory_limit] = (result["stats"], rows, out.read_bytes())
    assert outputs["500MB"] == outputs["128MB"]
    stats, rows, _ = outputs["500MB"]
    assert len(rows) == 20000 and [r[0] for r in rows] == list(range(20000))
    # Every vendor contributed: the three files were all loaded.
    assert stats["rows_per_source"] == {"v0": 10000, "v1": 7000, "v2": 4000}
    assert all(n > 0 for n in stats["matched_per_source"].values())


def test_a_bad_file_is_the_error_and_stops_the_load_beside_it(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """The original is small, vendor 0 large, vendor 1 has a ragged last
    line: vendor 1 fails while vendor 0 loads. The error names vendor 1's
    file and line (not the stopped load), no staging table is left, and the
    original's load counts: the rerun, vendor 1 fixed, skips it."""
    big = write_csv(
        tmp_path / "big.csv",
        "SELECT 'u' || range || '@x.cz' AS email, md5(range::VARCHAR) AS city, "
        "md5((range + 1)::VARCHAR) AS title FROM range(3000000)",
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("email,city,title\nu1@x.cz,Brno,boss\nu2@x.cz,Praha\n")
    cfg = {
        "original": {"path": str(files["crm"])},
        "enriched": [{"path": str(big), "name": "big"}, {"path": str(bad), "name": "bad"}],
        "keys": ["email"],
    }
    with duckmerge.Session(tmp_path / "s", memory_limit="500MB", threads=2) as s:
        started = time.monotonic()
        with pytest.raises(duckmerge.CsvError) as info:
            duckmerge.MergeDriver().run(step_id="merged", config=cfg, ctx=s)
        assert info.value.path.endswith("bad.csv"), info.value
        assert info.value.line == 3, info.value
        assert "bad.csv" in str(info.value)
        assert staging_tables(s) == []
        assert "merged" not in s.get_db_connection().tables()
        took = time.monotonic() - started

        bad.write_text("email,city,title\nu1@x.cz,Brno,boss\nu2@x.cz,Praha,cook\n")
        events: list[dict] = []

        class Ctx:
            def get_db_connection(self) -> duckmerge.Connection:
                return s.get_db_connection()

            def log_metric(self, name: str, value: object) -> None:
                pass

            def log_event(self, event: str, **data: object) -> None:
                events.append({"event": event, **data})

        result = duckmerge.MergeDriver().run(step_id="merged", config=cfg, ctx=Ctx())
        assert result["rows"] == 20000
        first = next(e for e in events if e["event"] == "merge_progress")
        assert first["stage"] == "import_original" and first.get("skipped") is True, first
        # The stopped load did not run to its end: the failed merge took less
        # than half of what loading the large file alone takes.
        started = time.monotonic()
        duckmerge.CsvExtractor().run(step_id="alone", config={"path": str(big)}, ctx=s)
        alone = time.monotonic() - started
    assert took < alone / 2, (took, alone)


CHILD = textwrap.dedent(
    """
    import sys
    import duckmerge

    session = duckmerge.Session(sys.argv[1], memory_limit="500MB", threads=2)
    config = {
        "original": {"path": sys.argv[2]},
        "enriched": [{"path": p, "name": f"v{i}"} for i, p in enumerate(sys.argv[3:])],
        "keys": ["email"],
    }
    print("READY", flush=True)
    try:
        duckmerge.MergeDriver().run(step_id="merged", config=config, ctx=session)
        print("FINISHED", flush=True)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
    names = session.get_db_connection().tables()
    print(sorted(n for n in names if "staging" in n.lower()), flush=True)
    print(session.sql("SELECT 42").fetchall(), flush=True)
    session.close()
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_while_two_files_load_stops_both(tmp_path: Path) -> None:
    select = (
        "SELECT 'u' || range || '@x.cz' AS email, md5(range::VARCHAR) AS city, "
        "md5((range + 7)::VARCHAR) AS title FROM range(4000000)"
    )
    paths = [write_csv(tmp_path / f"f{i}.csv", select) for i in range(3)]
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = ctrl_c_child(
        [sys.executable, str(script), str(tmp_path / "s"), *map(str, paths)], 1.5, "the merge"
    )
    assert child.lines[0] == "INTERRUPTED", (child.out, child.err)
    assert child.elapsed < 10, child.elapsed
    assert child.lines[1] == "[]", (child.out, child.err)  # no staging table left
    assert child.lines[2] == "[(42,)]", (child.out, child.err)  # the session still works
    assert child.returncode == 0, child.err
