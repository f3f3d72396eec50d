"""Row-by-row reading of a ``Result``: ``fetchone``, ``fetchmany``,
``fetchall``, and the error a missing optional package gives."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckmerge
import pyarrow as pa
import pytest


def ints(rows: list[tuple[int, ...]]) -> list[int]:
    return [r[0] for r in rows]


@pytest.mark.parametrize("how", ["sql", "execute"])
def test_fetches_continue_each_other_across_batches(session: duckmerge.Session, how: str) -> None:
    """5,000 rows (DuckDB hands them out in batches of 2,048): every fetch
    continues where the last one stopped, and an exhausted result gives
    None / [] from then on. ``sql()`` streams; ``execute()`` already ran."""
    conn = session.get_db_connection()
    query = "SELECT i, i * 2 AS twice FROM range(5000) t(i)"
    result = conn.sql(query) if how == "sql" else conn.execute(query)
    got = [result.fetchone()[0] for _ in range(3)]
    got += ints(result.fetchmany(2500))
    assert result.fetchmany(0) == []
    got += ints(result.fetchmany())
    rest = result.fetchall()
    got += ints(rest)
    assert got == list(range(5000))
    assert rest[-1] == (4999, 9998)
    assert result.fetchone() is None
    assert result.fetchmany(10) == []
    assert result.fetchall() == []


def test_fetchone_of_a_huge_result_reads_only_its_start(tmp_path: Path) -> None:
    """A trillion-row result: ``fetchone`` streams, so the first row comes
    back at once instead of the whole result being converted to Python
    first (which would not finish: the subprocess would time out)."""
    script = textwrap.dedent(
        f"""
        import duckmerge
        with duckmerge.Session({str(tmp_path / "s")!r}, threads=2) as s:
            r = s.sql("SELECT i FROM range(1000000000000) t(i)")
            print(r.fetchone(), r.fetchmany(2))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(0,) [(1,), (2,)]"


def test_table_rows_fetched_match_to_arrow(session: duckmerge.Session) -> None:
    """``table(name)``: the fetches give its rows in order, with the same
    values as ``to_arrow()`` (which reads a table through the parallel
    path), whether ``fetchall`` starts or follows other fetches."""
    n = 10_000
    session.write_table(
        "people",
        pa.table({"id": list(range(n)), "name": [f"ž{i}" if i % 7 else None for i in range(n)]}),
    )
    expected = [tuple(r.values()) for r in session.table("people").to_arrow().to_pylist()]
    assert session.table("people").fetchall() == expected
    streamed = session.table("people")
    first = [streamed.fetchone(), *streamed.fetchmany(4000)]
    assert first + streamed.fetchall() == expected


def test_fetchmany_rejects_a_negative_size(session: duckmerge.Session) -> None:
    result = session.sql("SELECT 1")
    with pytest.raises(duckmerge.ConfigError, match="size must be 0 or more"):
        result.fetchmany(-1)
    with pytest.raises(ValueError):
        result.fetchmany(-5)
    assert result.fetchmany(5) == [(1,)]


BLOCKER = """
import sys
class Blocker:
    def __init__(self, names):
        self.names = names
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None
"""


@pytest.mark.parametrize(
    ("blocked", "call", "package"),
    [
        ("pyarrow", "r.to_arrow()", "pyarrow"),
        ("pyarrow", "r.fetchone()", "pyarrow"),
        ("pyarrow", "r.fetchall()", "pyarrow"),
        ("pandas", "r.to_pandas()", "pandas"),
        ("polars", "r.to_polars()", "polars"),
    ],
)
def test_a_missing_optional_package_is_named_with_its_install_command(
    tmp_path: Path, blocked: str, call: str, package: str
) -> None:
    """pyarrow, pandas and polars are optional: duckmerge imports without
    them, and a call that needs one raises ImportError naming it and the
    command that installs it."""
    script = BLOCKER + textwrap.dedent(
        f"""
        sys.meta_path.insert(0, Blocker({{{blocked!r}}}))
        import duckmerge
        with duckmerge.Session({str(tmp_path / "s")!r}) as s:
            r = s.sql("SELECT 1 AS a")
            try:
                {call}
            except ImportError as e:
                print("ImportError:", e)
            else:
                print("no error")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert f"needs the '{package}' package: pip install {package}" in out.stdout, out.stdout


def test_closing_the_session_ends_a_half_read_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A result read halfway keeps its query (and a transaction) open.
    ``close()`` ends it first, so the checkpoint still runs (no warning, no
    WAL file left), work done meanwhile is kept, and the result then says
    the session is closed instead of ending as if it were complete."""
    caplog.set_level("WARNING", logger="duckmerge")
    folder = tmp_path / "s"
    s = duckmerge.Session(folder, threads=2)
    half_read = s.sql("SELECT i FROM range(100000000) t(i)")
    assert half_read.fetchone() == (0,)
    s.write_table("written_meanwhile", pa.table({"a": [1, 2, 3]}))
    s.close()
    assert not [r for r in caplog.records if "checkpoint" in r.getMessage()], caplog.text
    assert not list(folder.glob("*.wal"))
    read = 1
    with pytest.raises(duckmerge.DuckMergeError, match="session is closed"):
        while half_read.fetchone() is not None:
            read += 1
    assert read < 100_000_000
    with duckmerge.Session(folder) as again:
        assert again.sql("SELECT sum(a) FROM written_meanwhile").fetchone() == (6,)


@pytest.mark.parametrize("threads", [1, 2])
def test_select_results_keep_their_order(tmp_path: Path, threads: int) -> None:
    """A SELECT without parameters is collected by DuckDB's worker threads in
    parallel; its rows come back in the query's order all the same."""
    rows = 600_000
    with duckmerge.Session(tmp_path / "s", threads=threads) as s:
        s.execute(f"CREATE TABLE t AS SELECT range AS id, 'n' || range AS name FROM range({rows})")
        whole = s.sql("SELECT * FROM t").to_arrow()
        assert whole.column("id").to_pylist() == list(range(rows))
        assert whole.column("name")[rows - 1].as_py() == f"n{rows - 1}"
        odd = s.sql("SELECT id FROM t WHERE id % 2 = 1").to_arrow()
        assert odd.column("id").to_pylist() == list(range(1, rows, 2))
        desc = s.sql("SELECT id FROM t ORDER BY id DESC").to_arrow()
        assert desc.column("id").to_pylist() == list(range(rows - 1, -1, -1))
        # parameters and statements other than SELECT take the streaming path
        bound = s.sql("SELECT id FROM t WHERE id < ? ORDER BY id", [3]).to_arrow()
        assert bound.column("id").to_pylist() == [0, 1, 2]
        assert s.execute("SELECT count(*) FROM t").fetchall() == [(rows,)]
        s.execute("INSERT INTO t VALUES (-1, 'x')")
        assert s.sql("SELECT count(*) FROM t").fetchone() == (rows + 1,)
