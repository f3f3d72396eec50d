"""Long driver steps: progress events while DuckDB works, and Ctrl-C stops a
load with KeyboardInterrupt, leaving the step's previous table intact."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import duckdb
import duckmerge
import pytest
from _drivers_util import ctrl_c_child, staging_tables, table_rows

ROWS = 3_000_000


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~200 MB, 3M rows, written by DuckDB's COPY (a couple of seconds)."""
    path = tmp_path_factory.mktemp("big") / "big.csv"
    con = duckdb.connect()
    con.execute(
        f"""COPY (SELECT range AS id, 'name_' || range AS name, range * 0.5 AS score,
                         md5(range::VARCHAR) AS digest FROM range({ROWS}))
            TO '{path}' (FORMAT csv, HEADER)"""
    )
    con.close()
    return path


class EventLog:
    """A host-style ctx that records events with the time they arrived."""

    def __init__(self, session: duckmerge.Session) -> None:
        self.session = session
        self.events: list[tuple[float, str, dict]] = []

    def get_db_connection(self) -> duckmerge.Connection:
        return self.session.get_db_connection()

    def log_metric(self, name: str, value: object) -> None:
        pass

    def log_event(self, event: str, **data: object) -> None:
        self.events.append((time.monotonic(), event, data))


def test_extractor_reports_progress_with_percent_at_most_every_half_second(
    tmp_path: Path, big_csv: Path
) -> None:
    with duckmerge.Session(tmp_path / "s", threads=1) as session:
        ctx = EventLog(session)
        out = duckmerge.CsvExtractor().run(
            step_id="big", config={"path": str(big_csv)}, inputs=None, ctx=ctx
        )
    assert out == {"table": "big", "rows": ROWS}
    names = [e[1] for e in ctx.events]
    assert names[0] == "extract_start" and names[-1] == "extract_complete"
    progress = [e for e in ctx.events if e[1] == "progress"]
    if not progress:
        pytest.skip("the load finished before the first progress tick (fast machine)")
    for _, _, data in progress:
        assert data["step_id"] == "big"
        assert data["percent"] is None or 0.0 <= data["percent"] <= 100.0
        assert isinstance(data["rows"], int)
    gaps = [b[0] - a[0] for a, b in zip(progress, progress[1:])]
    assert all(g >= 0.45 for g in gaps), gaps


CHILD = textwrap.dedent(
    """
    import sys
    import duckmerge

    session = duckmerge.Session(sys.argv[1], threads=1)
    print("READY", flush=True)
    try:
        duckmerge.CsvExtractor().run(
            step_id="big", config={"path": sys.argv[2]}, inputs=None, ctx=session
        )
        print("FINISHED", flush=True)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
    print(session.table("big").fetchall(), flush=True)
    session.close()
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_during_extract_raises_keyboard_interrupt_and_keeps_previous_table(
    tmp_path: Path, big_csv: Path
) -> None:
    session_dir = tmp_path / "s"
    small = tmp_path / "small.csv"
    small.write_text("id,name\n1,first\n2,second\n")
    with duckmerge.Session(session_dir) as session:
        duckmerge.CsvExtractor().run(step_id="big", config={"path": str(small)}, ctx=session)

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = ctrl_c_child(
        [sys.executable, str(script), str(session_dir), str(big_csv)], 1.0, "the load", 60
    )
    assert child.lines[0] == "INTERRUPTED", (child.out, child.err)
    assert child.elapsed < 10, child.elapsed
    # The session stayed usable, and the previous table is what it was.
    assert child.lines[1] == "[(1, 'first'), (2, 'second')]", (child.out, child.err)
    assert child.returncode == 0, child.err

    with duckmerge.Session(session_dir) as session:
        assert table_rows(session, "big") == [(1, "first"), (2, "second")]
        assert staging_tables(session) == []
