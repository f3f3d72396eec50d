"""The ``duckmerge`` command line, run as ``python -m duckmerge`` in subprocesses:
merge to CSV / Parquet, --json, exit codes and one-line errors, the session
commands (extract, tables, sql, write), demo, progress output and Ctrl-C."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest
from duckmerge import cli

# id 2 has a national phone number: it matches vendor_b's 00420 number only
# with --region CZ. Vendor emails carry case and whitespace noise.
CRM = """\
id,email,phone,city
1,ann@x.cz,,Brno
2,,601 111 222,
3,cy@x.cz,,
4,dan@x.cz,,Plzen
"""
VENDOR_A = """\
email,phone,title,city
" ANN@X.cz ",,CEO,Praha
zed@x.cz,,Dev,Ostrava
"""
VENDOR_B = """\
email,phone,title
,00420601111222,CTO
nobody@x.cz,,Intern
"""


def run_cli(*args: object, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m duckmerge ARGS`` with stdout and stderr captured."""
    return subprocess.run(
        [sys.executable, "-m", "duckmerge", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def query(sql: str) -> list[tuple]:
    con = duckdb.connect()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def columns_of(path: Path) -> list[str]:
    con = duckdb.connect()
    try:
        return [d[0] for d in con.execute(f"SELECT * FROM '{path}' LIMIT 0").description]
    finally:
        con.close()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """crm.csv, vendor_a.csv and vendor_b.csv in ``tmp_path``."""
    (tmp_path / "crm.csv").write_text(CRM)
    (tmp_path / "vendor_a.csv").write_text(VENDOR_A)
    (tmp_path / "vendor_b.csv").write_text(VENDOR_B)
    return tmp_path


MERGE = ("merge", "crm.csv", "vendor_a.csv", "vendor_b.csv", "--key", "email", "--key", "phone")


# --------------------------------------------------------------------------
# merge


def test_merge_to_csv_has_one_row_per_original_row_and_the_vendor_fields(files: Path) -> None:
    r = run_cli(*MERGE, "--region", "CZ", "-o", "out/merged.csv", cwd=files)
    assert r.returncode == 0, r.stderr
    out = files / "out" / "merged.csv"
    assert columns_of(out) == [
        "id", "email", "phone", "city", "title", "_match_status", "_match_key", "_match_sources",
    ]
    rows = query(f"SELECT id, city, title, _match_status, _match_key FROM '{out}' ORDER BY id")
    assert rows == [
        (1, "Brno", "CEO", "matched", "email"),  # fill: the original's city stays
        (2, None, "CTO", "matched", "phone"),
        (3, None, None, "unmatched", None),
        (4, "Plzen", None, "unmatched", None),
    ]
    assert f"Output: {out}" in r.stdout
    # the temporary session is gone, only the output file was written
    assert sorted(p.name for p in (files / "out").iterdir()) == ["merged.csv"]


def test_merge_to_parquet_keeps_types_and_rows(files: Path) -> None:
    r = run_cli(*MERGE, "--region", "CZ", "-o", "merged.parquet", "--quiet", cwd=files)
    assert r.returncode == 0, r.stderr
    out = files / "merged.parquet"
    assert query(f"SELECT typeof(id), count(*) FROM '{out}' GROUP BY ALL") == [("BIGINT", 4)]
    assert query(f"SELECT id, title FROM '{out}' WHERE title IS NOT NULL ORDER BY id") == [
        (1, "CEO"), (2, "CTO"),
    ]
    assert "_match_sources" in columns_of(out)


def test_region_is_needed_for_national_phone_numbers(files: Path) -> None:
    r = run_cli(*MERGE, "-o", "merged.csv", "--json", cwd=files)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["matched_per_key"] == {"email": 1, "phone": 0}
    r = run_cli(*MERGE, "-o", "merged.csv", "--json", "--region", "cz", cwd=files)
    assert json.loads(r.stdout)["matched_per_key"] == {"email": 1, "phone": 1}


def test_merge_json_prints_only_the_stats_on_stdout(files: Path) -> None:
    r = run_cli(*MERGE, "--region", "CZ", "-o", "merged.csv", "--json", cwd=files)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)  # the whole of stdout is one JSON document
    assert stats["rows_original"] == 4
    assert stats["rows_output"] == 4
    assert stats["matched"] == 2
    assert stats["rows_per_source"] == {"vendor_a": 2, "vendor_b": 2}
    assert stats["unmatched_enriched"] == {"vendor_a": 1, "vendor_b": 1}
    assert stats["match_rate"] == pytest.approx(0.5)


def test_merge_summary_shows_rates_per_key_and_source(files: Path) -> None:
    r = run_cli(*MERGE, "--region", "CZ", "-o", "merged.csv", "--quiet", cwd=files)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "  rows in:   4" in lines and "  rows out:  4" in lines
    assert "  matched:   2 (50.0%)" in lines
    assert any(line.split() == ["email", "1", "25.0%"] for line in lines), r.stdout
    assert any(line.split() == ["phone", "1", "25.0%"] for line in lines), r.stdout
    # source, rows, duplicates, CRM rows matched and their rate, unmatched vendor rows
    assert any(line.split() == ["vendor_a", "2", "0", "1", "25.0%", "1"] for line in lines), (
        r.stdout
    )
    assert r.stderr == ""  # --quiet


def test_strategy_field_and_on_conflict_options_reach_the_merge(files: Path) -> None:
    r = run_cli(*MERGE, "--region", "CZ", "-o", "m.csv", "--field", "city",
                "--on-conflict", "overwrite", "--quiet", cwd=files)
    assert r.returncode == 0, r.stderr
    out = files / "m.csv"
    assert "title" not in columns_of(out)
    assert query(f"SELECT city FROM '{out}' WHERE id = 1") == [("Praha",)]


def test_merge_with_session_keeps_the_tables(files: Path) -> None:
    r = run_cli(*MERGE, "-o", "m.csv", "--session", "s", "--table", "result", "-q", cwd=files)
    assert r.returncode == 0, r.stderr
    r = run_cli("tables", "--session", "s", cwd=files)
    assert r.returncode == 0, r.stderr
    names = r.stdout.splitlines()
    assert {"result", "result__stats", "result__unmatched"} <= set(names)
    # a rerun in the same session works (and replaces the output)
    r = run_cli(*MERGE, "-o", "m.csv", "--session", "s", "--table", "result", "-q", cwd=files)
    assert r.returncode == 0, r.stderr
    assert query(f"SELECT count(*) FROM '{files / 'm.csv'}'") == [(4,)]


# --------------------------------------------------------------------------
# exit codes and errors


def assert_one_line_error(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    # progress lines may come first; the error is one line, the last
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("duckmerge: merge [")]
    assert len(lines) == 1 and lines[0].startswith("duckmerge: error: "), r.stderr
    assert r.stderr.strip().splitlines()[-1] == lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "extra",
    [
        ["--bogus"],
        ["--strategy", "best"],
        ["--on-conflict", "never"],
        ["--key", "email:nope"],
        ["--region", "CZE"],
    ],
)
def test_bad_options_exit_2_with_argparse_usage(files: Path, extra: list[str]) -> None:
    r = run_cli(*MERGE, "-o", "m.csv", *extra, cwd=files)
    assert r.returncode == 2
    assert "usage: duckmerge" in r.stderr and "Traceback" not in r.stderr
    assert not (files / "m.csv").exists()


def test_missing_key_column_exits_2_naming_it(files: Path) -> None:
    r = run_cli("merge", "crm.csv", "vendor_a.csv", "--key", "customer_no", "-o", "m.csv",
                cwd=files)
    line = assert_one_line_error(r, 2)
    assert "customer_no" in line
    assert not (files / "m.csv").exists()


def test_bad_output_extension_exits_2(files: Path) -> None:
    r = run_cli(*MERGE, "-o", "m.xlsx", cwd=files)
    line = assert_one_line_error(r, 2)
    assert "m.xlsx" in line


def test_missing_input_file_exits_1_with_its_path_and_no_traceback(files: Path) -> None:
    r = run_cli("merge", "crm.csv", "missing.csv", "--key", "email", "-o", "m.csv", cwd=files)
    line = assert_one_line_error(r, 1)
    assert str(files / "missing.csv") in line
    assert not (files / "m.csv").exists()


def test_debug_shows_the_traceback(files: Path) -> None:
    r = run_cli("--debug", "merge", "crm.csv", "missing.csv", "--key", "email", "-o", "m.csv",
                cwd=files)
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr
    assert "SourceNotFoundError" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("duckmerge: error: ")
    # --debug after the command name works too
    r = run_cli("merge", "crm.csv", "missing.csv", "--key", "email", "-o", "m.csv", "--debug",
                cwd=files)
    assert "Traceback (most recent call last)" in r.stderr


def test_version_and_help(tmp_path: Path) -> None:
    import duckmerge

    r = run_cli("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(f"duckmerge {duckmerge.__version__}")
    r = run_cli("-h", cwd=tmp_path)
    assert r.returncode == 0
    for command in ("merge", "extract", "write", "sql", "tables", "demo"):
        assert command in r.stdout
    r = run_cli(cwd=tmp_path)
    assert r.returncode == 2 and "usage:" in r.stderr


# --------------------------------------------------------------------------
# session commands


def test_extract_no_compress_text_stores_text_uncompressed(tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_text(
        "name,city\n" + "".join(f"n{i % 10},c{i % 3}\n" for i in range(5000))
    )
    for flag, table in [(), "packed"], [("--no-compress-text",), "plain"]:
        r = run_cli("extract", "people.csv", "--session", "s", "--table", table, *flag,
                    cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(tmp_path / "s" / "pipeline_data.duckdb"))
    try:
        storage = {
            t: {r[0] for r in con.execute(
                "SELECT compression FROM pragma_storage_info(?) WHERE segment_type = 'VARCHAR'",
                [t],
            ).fetchall()}
            for t in ("packed", "plain")
        }
        same = con.execute("SELECT count(*) FROM (FROM packed EXCEPT ALL FROM plain)").fetchone()
    finally:
        con.close()
    assert storage["plain"] == {"Uncompressed"}
    assert "Uncompressed" not in storage["packed"]
    assert same == (0,)


def test_extract_tables_sql_write_on_a_session_folder(tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_text(
        "name;age;city\nAnn;31;Brno\nBob;x;y;z\nCy;45;Praha\nDan;27;Plzen\n"
    )
    r = run_cli("extract", "people.csv", "--session", "s", "--table", "people",
                "--delimiter", ";", "--on-bad-lines", "reject", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Loaded 3 rows" in r.stdout and "people__rejects" in r.stdout

    r = run_cli("tables", "--session", "s", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["people", "people__rejects"]

    r = run_cli("sql", "--session", "s", "SELECT name, age FROM people ORDER BY age",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "name | age",
        "-----+----",
        "Dan  |  27",
        "Ann  |  31",
        "Cy   |  45",
        "(3 rows)",
    ]

    r = run_cli("sql", "--session", "s", "SELECT * FROM people ORDER BY name", "--max-rows", "1",
                cwd=tmp_path)
    assert r.stdout.splitlines()[-2:] == ["Ann  |  31 | Brno", "… 2 more rows"]

    r = run_cli("sql", "--session", "s", "SELECT name, age FROM people ORDER BY name", "--json",
                cwd=tmp_path)
    assert json.loads(r.stdout) == [
        {"name": "Ann", "age": 31}, {"name": "Cy", "age": 45}, {"name": "Dan", "age": 27},
    ]
    r = run_cli("sql", "--session", "s", "SELECT line, raw_line FROM people__rejects", "--csv",
                cwd=tmp_path)
    assert r.stdout == "line,raw_line\n3,Bob;x;y;z\n"

    r = run_cli("write", "--session", "s", "--table", "people", "-o", "out/people.csv",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Wrote 3 rows" in r.stdout
    # the table's column order, not alphabetical
    assert (tmp_path / "out" / "people.csv").read_text().splitlines() == [
        "name,age,city", "Ann,31,Brno", "Cy,45,Praha", "Dan,27,Plzen",
    ]
    r = run_cli("write", "--session", "s", "--table", "people", "-o", "out/people.parquet",
                "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["rows"] == 3
    assert query(f"SELECT sum(age) FROM '{tmp_path / 'out' / 'people.parquet'}'") == [(103,)]


def test_sql_cuts_long_values(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("k,v\n1," + "x" * 100 + "\n")
    assert run_cli("extract", "t.csv", "--session", "s", cwd=tmp_path).returncode == 0
    r = run_cli("sql", "--session", "s", "SELECT v FROM t", "--max-width", "10", cwd=tmp_path)
    assert r.stdout.splitlines()[2] == "x" * 9 + "…"


def test_sql_streams_a_large_result_instead_of_holding_it(tmp_path: Path) -> None:
    """README: "the result is streamed, not held in memory". 20M rows x 3
    columns (about 500 MB as Arrow) go by with the process's peak RSS well
    under that; holding them first peaked at 765 MB. Statements that return
    no rows of their own (DDL, several at once) still run once."""
    (tmp_path / "a.csv").write_text("x\n1\n")
    assert run_cli("extract", "a.csv", "--session", "s", cwd=tmp_path).returncode == 0
    script = (
        "import resource, sys\n"
        "from duckmerge.cli import main\n"
        "code = main(['sql', '--session', 's', "
        "\"SELECT i, i * 2 AS j, 'x' || i AS s FROM range(20000000) t(i)\", '--max-rows', '3'])\n"
        "print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "… 19,999,997 more rows" in r.stdout
    peak_mb = int(r.stderr.split("peak")[-1])
    assert peak_mb < 300, f"peak RSS {peak_mb} MB"

    r = run_cli("sql", "--session", "s", "CREATE TABLE m (a INT); INSERT INTO m VALUES (1), (2)",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli("sql", "--session", "s", "SELECT sum(a) AS total FROM m", cwd=tmp_path)
    assert r.stdout.split() == ["total", "-----", "3", "(1", "row)"], r.stdout


def test_session_commands_fail_clearly(tmp_path: Path) -> None:
    r = run_cli("tables", "--session", "nowhere", cwd=tmp_path)
    line = assert_one_line_error(r, 1)
    assert str(tmp_path / "nowhere") in line
    assert not (tmp_path / "nowhere").exists()  # not created by a read command

    (tmp_path / "a.csv").write_text("x\n1\n")
    assert run_cli("extract", "a.csv", "--session", "s", cwd=tmp_path).returncode == 0
    r = run_cli("sql", "--session", "s", "SELEC 1", cwd=tmp_path)
    assert "syntax error" in assert_one_line_error(r, 1)
    r = run_cli("write", "--session", "s", "--table", "nope", "-o", "n.csv", cwd=tmp_path)
    assert "nope" in assert_one_line_error(r, 1)
    r = run_cli("extract", "missing.csv", "--session", "s", cwd=tmp_path)
    assert str(tmp_path / "missing.csv") in assert_one_line_error(r, 1)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3\n")
    r = run_cli("extract", "bad.csv", "--session", "s", cwd=tmp_path)
    assert "line 3" in assert_one_line_error(r, 1)


# --------------------------------------------------------------------------
# demo


def test_demo_prints_an_existing_output_path(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    started = time.monotonic()
    r = run_cli("demo", "--rows", "300", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started < 30
    outputs = [line.split(": ", 1)[1] for line in r.stdout.splitlines()
               if line.startswith("Output: ")]
    assert len(outputs) == 1
    out = Path(outputs[0])
    assert out.is_file() and out.parent.parent == tmp_path
    assert query(f"SELECT count(*) FROM '{out}'") == [(300,)]
    assert "Match rate per key" in r.stdout


def test_demo_data_is_noisy_and_reproducible(tmp_path: Path) -> None:
    r = run_cli("demo", "--rows", "200", "--keep", "d", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert Path(report["output"]) == tmp_path / "d" / "merged.csv"
    assert report["stats"]["rows_output"] == 200
    assert len(report["stats"]["rows_per_source"]) == 3
    assert 0 < report["stats"]["match_rate"] < 1
    assert all(n > 0 for n in report["stats"]["unmatched_enriched"].values())
    assert sum(report["stats"]["duplicates_collapsed"].values()) > 0

    vendor = (tmp_path / "d" / "vendor_a.csv").read_text()
    phones = [line.split(",")[1] for line in vendor.splitlines()[1:]]
    assert any(p.startswith("+420 ") for p in phones)
    assert any(p.startswith("00420") for p in phones)
    assert any(p.count("-") == 2 for p in phones)
    emails = [line.split(",")[0] for line in vendor.splitlines()[1:]]
    assert any(e != e.strip() for e in emails) and any(e != e.lower() for e in emails)

    first = {p.name: p.read_bytes() for p in (tmp_path / "d").glob("*.csv")}
    r = run_cli("demo", "--rows", "200", "--keep", "d", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").glob("*.csv")} == first


# --------------------------------------------------------------------------
# progress


def test_plain_progress_lines_on_stderr_when_not_a_terminal(files: Path) -> None:
    r = run_cli(*MERGE, "-o", "m.csv", cwd=files)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert "\r" not in r.stderr
    stages = [line.split()[2:4] for line in lines if line.startswith("duckmerge: merge [")]
    assert stages == [
        ["[1/5]", "import_original"],
        ["[2/5]", "import_enriched"],
        ["[3/5]", "consolidate"],
        ["[4/5]", "match_merge"],
        ["[5/5]", "export"],
    ]
    assert lines[-1].endswith(f"{files / 'm.csv'}") and "(100%)" in lines[-1]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_terminal_gets_the_live_line_instead_of_plain_lines(files: Path) -> None:
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "duckmerge", *MERGE, "-o", "m.csv"],
            cwd=files, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.stdout is not None
        with proc.stdout:
            stdout = proc.stdout.read().decode()
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    err = b"".join(chunks).decode()
    assert "\r" in err and "duckmerge: merge [" not in err
    assert "merge 1/5 import_original" in err and "merge 5/5 export" in err
    assert err.endswith("\r")  # the line is cleared before the summary
    assert "Output: " in stdout


def test_live_progress_redraws_one_line_and_clears_it() -> None:
    stream = io.StringIO()
    display = cli.ProgressDisplay(stream, live=True, label="merge")
    display({"event": "merge_progress", "stage": "import_original", "stage_index": 1,
             "stage_count": 5, "percent": 20.0, "rows": 1000, "message": "x"})
    time.sleep(cli.ProgressDisplay.LIVE_EVERY + 0.01)
    display({"event": "progress", "step_id": "m", "percent": 50.0, "rows": 5000})
    time.sleep(cli.ProgressDisplay.LIVE_EVERY + 0.01)
    display({"event": "progress", "step_id": "m", "percent": 10.0, "rows": 6000})
    display.close()
    text = stream.getvalue()
    assert "\n" not in text
    frames = text.split("\r")[2:]  # [1] is the first stage, drawn at once
    assert text.split("\r")[1].startswith("merge 1/5 import_original")
    assert frames[0].startswith("merge 2/5 import_enriched") and " 20%" in frames[0]
    # 1 of 5 stages done plus half of the second: 30%; a later statement of the
    # same stage starting again from 10% does not move the bar back.
    assert " 30%" in frames[1] and "5,000 rows" in frames[1] and "rows/s" in frames[1]
    assert " 30%" in frames[2] and "6,000 rows" in frames[2]
    assert "ETA" in frames[1]
    assert frames[-1] == "" and frames[-2].strip() == ""  # cleared


def test_format_table_aligns_and_counts_hidden_rows() -> None:
    text = cli.format_table(["name", "n"], [["a", 1], [None, 22]], more=5, max_width=10)
    assert text.splitlines() == [
        "name |  n", "-----+---", "a    |  1", "NULL | 22", "… 5 more rows",
    ]


def test_summary_tolerates_missing_and_new_stats_keys() -> None:
    text = cli.format_merge_summary(
        {"rows_original": 10, "rows_output": 10, "matched": 4,
         "rows_per_source": {"a": 7}, "matched_per_source": {"a": 4}},
        output_path="/x/out.csv", table="merged",
    )
    assert "  matched:   4 (40.0%)" in text.splitlines()
    assert any(line.split()[:5] == ["a", "7", "-", "4", "40.0%"] for line in text.splitlines())
    assert text.splitlines()[-1] == "Output: /x/out.csv"


# --------------------------------------------------------------------------
# Ctrl-C


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")
@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="SIGINT is not handled by Python in this process",
)
def test_interrupt_guard_resends_a_ctrl_c_the_engine_dropped() -> None:
    # What happens when Ctrl-C lands in a progress callback: the handler's
    # KeyboardInterrupt is dropped by the core, which logs it; the guard sees
    # that log line and sends SIGINT again.
    with cli._InterruptGuard() as guard:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert guard.requested
        logging.getLogger("duckmerge").warning(
            'ctx.log_event("progress") failed: KeyboardInterrupt: ')
        with pytest.raises(KeyboardInterrupt):
            time.sleep(5)
    with cli._InterruptGuard() as guard:
        guard.engine_still_running()  # nothing requested: nothing sent
        time.sleep(0.2)


BIG_ROWS = 300_000


@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300k-row CRM file and a vendor file (~45 MB), written by DuckDB's COPY."""
    folder = tmp_path_factory.mktemp("big")
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT range AS id, 'user' || range || '@x.cz' AS email,
        '+420 6' || lpad(range::VARCHAR, 8, '0') AS phone, md5(range::VARCHAR) AS note
        FROM range({BIG_ROWS})) TO '{folder / "crm.csv"}' (FORMAT csv, HEADER)""")
    con.execute(f"""COPY (SELECT upper('user' || (range * 7 % {BIG_ROWS}) || '@x.cz') AS email,
        '6' || lpad(range::VARCHAR, 8, '0') AS phone, 'title_' || range AS title,
        md5((range + 1)::VARCHAR) AS city
        FROM range({BIG_ROWS})) TO '{folder / "vendor.csv"}' (FORMAT csv, HEADER)""")
    con.close()
    return folder


# The child restores Python's SIGINT handler: a shell may start background
# jobs with SIGINT ignored, and a CLI rightly keeps an inherited "ignore".
CHILD = textwrap.dedent(
    """
    import runpy, signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    runpy.run_module("duckmerge", run_name="__main__", alter_sys=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_during_a_long_merge_exits_130_and_leaves_no_output(
    tmp_path: Path, big_inputs: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, "merge", str(big_inputs / "crm.csv"),
         str(big_inputs / "vendor.csv"), "--key", "email", "--key", "phone", "--region", "CZ",
         "-o", str(out_dir / "merged.csv"), "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the first progress line: the merge is under way
        assert first.startswith("duckmerge: merge ["), first
        sent = proc.poll() is None
        if sent:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if not sent:
        pytest.skip("the merge finished before Ctrl-C could be sent")
    if proc.returncode == 0:
        pytest.skip("the merge finished before Ctrl-C arrived (fast machine)")
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "duckmerge: error: interrupted"
    assert "Traceback" not in err
    assert out == ""
    assert list(out_dir.iterdir()) == []  # neither merged.csv nor a temp file
    assert list(temp.iterdir()) == []  # the temporary session was removed
