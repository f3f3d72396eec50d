"""Benchmark: duckmerge's CSV drivers next to what they replace (issue 3).

On a generated CRM CSV (``benches/gen_crm.py``: 13 columns, ~10% NULLs,
quoted commas, quotes and newlines; ``--rows`` rows, 1,000,000 = ~150 MB),
in one run, side by side:

* **extract**, duckmerge: ``CsvExtractor().run(step_id="t", config={"path": csv},
  ctx=Session(...))``, against

  - duckdb-python: ``CREATE TABLE t AS SELECT * FROM read_csv('<csv>')`` into
    its own database file, and
  - pandas ``read_csv(chunksize=10000)`` + one ``INSERT INTO t SELECT * FROM
    chunk_df`` per chunk into duckdb-python (the approach the extractor
    replaces);

* **write**, duckmerge: ``CsvWriter().run(step_id="write", config={"path": out,
  "sort_columns": True}, inputs={"table": "t"}, ctx=session)``, against
  duckdb-python: ``COPY (SELECT <columns, sorted> FROM t) TO '<out>' (FORMAT
  csv, HEADER true)``.

For context, the same plain SQL as the duckdb-python side also runs inside
duckmerge's own DuckDB through ``Session.execute`` (no driver): set against
the drivers it shows their own overhead, set against duckdb-python the
difference between the two DuckDB builds.

All writers read the same database file (a session loaded by duckmerge's
extractor beforehand, untimed; duckdb-python opens it ``read_only``). Then the
extractor runs again on a ``--big-rows`` file (5,000,000 rows by default) to
check that peak memory does not grow with the file; duckdb-python's
``read_csv`` runs on it too, for context.

Every side runs with the same ``threads`` (``--threads``, default 2) and
``memory_limit`` (``--memory-limit``, default 500MB): duckmerge through
``Session(..., threads=, memory_limit=)``, duckdb-python through ``SET``.

Every run of every operation is a fresh Python process, so each peak RSS
belongs to that one operation, and only one process holds a database file at
a time. Setup (imports, opening the session or connection) is not timed; the
peak-RSS window is reset just before the timed call (``/proc/self/clear_refs``,
then ``VmHWM``), so the peak shown is the highest resident size *during* the
operation. Closing the database afterwards is not timed on either side (its
time is logged). Before each run the input (CSV, or the writers' database) is
read once, so every side finds it in the page cache, and dirty pages are
flushed (``os.sync()``), so no run pays for the writes of the one before.
The time shown is the best of ``--repeat`` runs and the RSS the highest.

Targets (throughput ours / peer): extract >= 0.9x duckdb-python's
``read_csv`` and >= 3x pandas-chunked; write >= 0.9x ``COPY``; the
extractor's peak RSS on the ``--big-rows`` file <= 1.2x its peak RSS on the
``--rows`` file.

Usage (from the repository root, with duckmerge built into the environment)::

    python benches/drivers_bench.py                          # 1M and 5M rows
    python benches/drivers_bench.py --rows 200000 --big-rows 1000000
    python benches/drivers_bench.py --big-rows 0 --repeat 3  # no memory-growth check
    python benches/drivers_bench.py --workdir /tmp/dm-bench --markdown  # CSVs kept for next time
    python benches/drivers_bench.py --peer-python /tmp/peer156/bin/python  # peer: another venv's duckdb

Exit status: 0 when every run worked, 1 when a run failed (or, with
``--strict``, when a target was missed), 2 when a needed package is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _measure import (
    PEER_PYTHON_HELP,
    cpu_seconds,
    peak_rss_mb,
    peer_duckdb_version,
    peer_python_for,
    reset_peak_rss,
    spawn_worker,
    sql_string,
)  # noqa: E402 (benches/ is on sys.path)

HERE = Path(__file__).resolve().parent
TABLE = "t"
PANDAS_CHUNKSIZE = 10_000
NEEDED = ("duckmerge", "duckdb", "pandas", "pyarrow")

#: What each side runs, for the printout.
CALLS = {
    ("extract", "duckmerge"): 'CsvExtractor().run(step_id="t", config={"path": csv}, ctx=session)',
    ("extract", "duckmerge-plain"): (
        'CsvExtractor().run(step_id="t", config={"path": csv, "compress_text": False}, ctx=session)'
    ),
    ("extract", "duckdb"): "CREATE TABLE t AS SELECT * FROM read_csv('<csv>')",
    ("extract", "pandas"): (
        f"for chunk_df in pandas.read_csv(csv, chunksize={PANDAS_CHUNKSIZE}): "
        "con.execute('INSERT INTO t SELECT * FROM chunk_df')"
    ),
    ("extract", "duckmerge-sql"): (
        'session.execute("CREATE TABLE t AS SELECT * FROM read_csv(?)", [csv])'
    ),
    ("write", "duckmerge"): (
        'CsvWriter().run(step_id="write", config={"path": out, "sort_columns": True}, '
        'inputs={"table": "t"}, ctx=session)'
    ),
    ("write", "duckmerge-sql"): (
        "session.execute(\"COPY (SELECT <13 columns, sorted> FROM t) TO '<out>' "
        '(FORMAT csv, HEADER true)")'
    ),
    ("write", "duckdb"): (
        "COPY (SELECT <13 columns, sorted> FROM t) TO '<out>' (FORMAT csv, HEADER true)"
    ),
}


# --------------------------------------------------------------------------- worker


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Clock:
    """Times a block and records the peak RSS during it."""

    def __enter__(self):
        self.setup_rss_mb = peak_rss_mb()
        self.peak_reset = reset_peak_rss()
        self.start_rss_mb = peak_rss_mb()
        self.start_cpu = cpu_seconds()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = cpu_seconds() - self.start_cpu
        self.peak_rss_mb = peak_rss_mb()

    def numbers(self) -> dict:
        return {
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "setup_rss_mb": self.setup_rss_mb,
            "start_rss_mb": self.start_rss_mb,
            "peak_reset": self.peak_reset,
        }


def open_duckdb(db_path: str, spec: dict, read_only: bool = False):
    import duckdb

    con = duckdb.connect(db_path, read_only=read_only)
    con.execute(f"SET threads = {int(spec['threads'])}")
    con.execute(f"SET memory_limit = {sql_string(spec['memory_limit'])}")
    return con


def open_session(path: str, spec: dict):
    import duckmerge

    return duckmerge.Session(path, memory_limit=spec["memory_limit"], threads=int(spec["threads"]))


def count_rows(con, table: str = TABLE) -> int:
    return con.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchall()[0][0]


def run_worker(spec: dict) -> dict:
    """One measured operation in this (fresh) process; returns its numbers."""
    op, side = spec["op"], spec["side"]
    measured: dict = {}

    if op in ("extract", "build") and side in ("duckmerge", "duckmerge-plain"):
        import duckmerge

        session = open_session(spec["target"], spec)
        config = {"path": spec["csv"]}
        if side == "duckmerge-plain":
            config["compress_text"] = False
        with Clock() as clock:
            out = duckmerge.CsvExtractor().run(
                step_id=TABLE, config=config, inputs=None, ctx=session
            )
        # After the clock: fetchall() imports pyarrow, which would raise the baseline.
        settings = session.sql(
            "SELECT current_setting('threads'), current_setting('memory_limit')"
        ).fetchall()[0]
        started = time.perf_counter()
        session.close()
        measured.update(
            clock.numbers(),
            rows=out["rows"],
            close_seconds=time.perf_counter() - started,
            settings=list(settings),
            db_bytes=(Path(spec["target"]) / "pipeline_data.duckdb").stat().st_size,
        )

    elif op == "extract" and side == "duckmerge-sql":
        session = open_session(spec["target"], spec)
        with Clock() as clock:
            session.execute(f"CREATE TABLE {TABLE} AS SELECT * FROM read_csv(?)", [spec["csv"]])
        got = len(session.table(TABLE))
        started = time.perf_counter()
        session.close()
        measured.update(clock.numbers(), rows=got, close_seconds=time.perf_counter() - started)

    elif op == "extract" and side == "duckdb":
        Path(spec["target"]).mkdir(parents=True, exist_ok=True)
        con = open_duckdb(str(Path(spec["target"]) / "peer.duckdb"), spec)
        with Clock() as clock:
            con.execute(
                f"CREATE TABLE {TABLE} AS SELECT * FROM read_csv({sql_string(spec['csv'])})"
            )
        got = count_rows(con)
        started = time.perf_counter()
        con.close()
        measured.update(
            clock.numbers(),
            rows=got,
            close_seconds=time.perf_counter() - started,
            db_bytes=(Path(spec["target"]) / "peer.duckdb").stat().st_size,
        )

    elif op == "extract" and side == "pandas":
        import pandas as pd

        Path(spec["target"]).mkdir(parents=True, exist_ok=True)
        con = open_duckdb(str(Path(spec["target"]) / "peer.duckdb"), spec)
        chunks = 0
        with Clock() as clock:
            for chunk_df in pd.read_csv(spec["csv"], chunksize=PANDAS_CHUNKSIZE):  # noqa: B007
                if chunks == 0:  # the table takes the first chunk's column types
                    con.execute(f"CREATE TABLE {TABLE} AS SELECT * FROM chunk_df LIMIT 0")
                con.execute(f"INSERT INTO {TABLE} SELECT * FROM chunk_df")
                chunks += 1
        got = count_rows(con)
        started = time.perf_counter()
        con.close()
        measured.update(
            clock.numbers(), rows=got, chunks=chunks, close_seconds=time.perf_counter() - started
        )

    elif op == "write" and side == "duckmerge":
        import duckmerge

        session = open_session(spec["source"], spec)
        with Clock() as clock:
            duckmerge.CsvWriter().run(
                step_id="write",
                config={"path": spec["out"], "sort_columns": True},
                inputs={"table": TABLE},
                ctx=session,
            )
        got = len(session.table(TABLE))
        session.close()
        measured.update(clock.numbers(), rows=got, out_bytes=Path(spec["out"]).stat().st_size)

    elif op == "write" and side == "duckmerge-sql":
        session = open_session(spec["source"], spec)
        select = ", ".join(quote_ident(c) for c in sorted(session.table(TABLE).columns))
        with Clock() as clock:
            session.execute(
                f"COPY (SELECT {select} FROM {TABLE}) TO {sql_string(spec['out'])} "
                "(FORMAT csv, HEADER true)"
            )
        got = len(session.table(TABLE))
        session.close()
        measured.update(clock.numbers(), rows=got, out_bytes=Path(spec["out"]).stat().st_size)

    elif op == "write" and side == "duckdb":
        con = open_duckdb(spec["source_db"], spec, read_only=True)
        columns = sorted(row[0] for row in con.execute(f"DESCRIBE {TABLE}").fetchall())
        select = ", ".join(quote_ident(c) for c in columns)
        with Clock() as clock:
            con.execute(
                f"COPY (SELECT {select} FROM {TABLE}) TO {sql_string(spec['out'])} "
                "(FORMAT csv, HEADER true)"
            )
        got = count_rows(con)
        con.close()
        measured.update(clock.numbers(), rows=got, out_bytes=Path(spec["out"]).stat().st_size)

    else:
        raise ValueError(f"unknown operation {op!r} on {side!r}")

    if measured["rows"] != spec["rows"]:
        raise RuntimeError(f"{op} on {side}: expected {spec['rows']} rows, got {measured['rows']}")
    return measured


# --------------------------------------------------------------------------- driver


@dataclass
class Measurement:
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def best(self) -> float | None:
        return min(self.seconds) if self.seconds and not self.error else None

    @property
    def peak(self) -> float | None:
        return max(self.peak_rss_mb) if self.peak_rss_mb and not self.error else None


def spawn(spec: dict, timeout: float) -> dict:
    """Run one operation in a fresh interpreter; its last stdout line is JSON."""
    return spawn_worker(__file__, spec, timeout, python=peer_python_for(spec, ("duckdb", "pandas")))


def warm_page_cache(path: Path) -> None:
    """Read the file once, so no side pays for the first read from disk."""
    with path.open("rb") as handle:
        while handle.read(1 << 24):
            pass


def flush_disk() -> None:
    """Write dirty pages out now (``sync``), so no run pays for an earlier one's
    writes (the generated CSVs, the previous run's database or output file)."""
    if hasattr(os, "sync"):
        os.sync()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in NEEDED:
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", "?")
        except ImportError:
            found[name] = "not installed"
    if found["duckmerge"] != "not installed":
        import duckmerge

        bundled = getattr(duckmerge, "DUCKDB_VERSION", None)
        if bundled:
            found["duckmerge"] += f" (DuckDB {bundled})"
    return found


def human_rows(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size and n % (size // 10) == 0:
            return f"{n / size:g}{unit}"
    return f"{n:,}"


def dataset(workdir: Path, rows: int, seed: int) -> tuple[Path, float | None]:
    """The generated CSV for ``rows`` (reused when the workdir has it already)."""
    sys.path.insert(0, str(HERE))
    import gen_crm

    path = workdir / "data" / f"crm-{rows}-seed{seed}-v{gen_crm.GEN_VERSION}.csv"
    if path.exists():
        log(f"reusing {path} ({path.stat().st_size / 1e6:.0f} MB)")
        return path, None
    log(f"generating {rows:,} rows into {path} ...")
    done = gen_crm.generate(path, rows, seed)
    log(f"generated {done['bytes'] / 1e6:.0f} MB in {done['seconds']:.1f} s")
    return path, done["seconds"]


def fmt(value: float | None, spec: str) -> str:
    return "error" if value is None else format(value, spec)


def rate(rows: int, seconds: float | None) -> str:
    return "error" if not seconds else f"{rows / seconds:,.0f}"


HEADER = [
    "operation",
    "duckmerge s",
    "peer s",
    "duckmerge rows/s",
    "peer rows/s",
    "ratio",
    "target",
    "ok?",
    "duckmerge peak RSS MB",
    "peer peak RSS MB",
]
NUMERIC = [False, True, True, True, True, True, False, False, True, True]


def table_row(
    label: str,
    ours: Measurement,
    peer: Measurement,
    ours_rows: int,
    peer_rows: int,
    *,
    kind: str,
    target: float | None,
) -> list[str]:
    """One line; ``kind`` "speed" (throughput ours/peer, higher is better) or
    "rss" (peak RSS ours/peer, lower is better). ``target`` None: context only."""
    ratio = None
    if kind == "speed" and ours.best and peer.best:
        ratio = (ours_rows / ours.best) / (peer_rows / peer.best)
    elif kind == "rss" and ours.peak and peer.peak:
        ratio = ours.peak / peer.peak
    if target is None:
        target_text, ok = "(context)", "-"
    elif kind == "speed":
        target_text = f">= {target:.2f}"
        ok = "-" if ratio is None else ("yes" if ratio >= target else "NO")
    else:
        target_text = f"<= {target:.2f} (RSS)"
        ok = "-" if ratio is None else ("yes" if ratio <= target else "NO")
    return [
        label,
        fmt(ours.best, ".2f"),
        fmt(peer.best, ".2f"),
        rate(ours_rows, ours.best),
        rate(peer_rows, peer.best),
        fmt(ratio, ".2f"),
        target_text,
        ok,
        fmt(ours.peak, ".0f"),
        fmt(peer.peak, ".0f"),
    ]


def plain_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(cells):
        return "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, NUMERIC)
        ).rstrip()

    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def markdown_table(rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---:" if num else "---" for num in NUMERIC) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="CSV rows (default 1,000,000)")
    parser.add_argument(
        "--big-rows",
        type=int,
        default=5_000_000,
        help="rows of the memory-growth file (default 5,000,000; 0 skips that check)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per operation and side; best wins (default 1)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="DuckDB threads, every side (default 2)"
    )
    parser.add_argument(
        "--memory-limit", default="500MB", help="DuckDB memory_limit, every side (default 500MB)"
    )
    parser.add_argument("--seed", type=int, default=1, help="gen_crm.py seed (default 1)")
    parser.add_argument(
        "--workdir",
        help="folder for the CSVs (kept and reused across runs), databases and outputs "
        "(default: a temp dir, removed after)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the databases and outputs too (and say where)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds allowed per run (default 1800)"
    )
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--peer-python", metavar="PATH", help=PEER_PYTHON_HELP)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1 or args.threads < 1 or args.big_rows < 0:
        parser.error("--rows, --repeat and --threads must be at least 1; --big-rows at least 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0

    found = versions()
    if args.peer_python:
        found["duckdb"] = peer_duckdb_version(args.peer_python)
    missing = [name for name in NEEDED if found[name] == "not installed"]
    if missing:
        log(f"drivers_bench.py needs {', '.join(missing)} importable in {sys.executable}")
        return 2

    temporary = not args.workdir
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="duckmerge-drivers-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    runs_dir = workdir / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir()
    base = {
        "threads": args.threads,
        "memory_limit": args.memory_limit,
        "peer_python": args.peer_python,
    }
    sizes = [args.rows] + ([args.big_rows] if args.big_rows else [])
    results: dict[tuple[str, str, int], Measurement] = {}
    files: dict[int, Path] = {}
    generated: dict[int, float | None] = {}
    failed = False

    def measure(op: str, sides: tuple[str, ...], rows: int, extra, warm: Path) -> None:
        """``--repeat`` interleaved runs of ``op`` on each side (each goes first in turn)."""
        nonlocal failed
        for side in sides:
            results.setdefault((op, side, rows), Measurement())
        for run in range(1, args.repeat + 1):
            for side in sides if run % 2 else sides[::-1]:
                record = results[(op, side, rows)]
                if record.error:
                    continue
                warm_page_cache(warm)
                flush_disk()
                run_dir = runs_dir / f"{op}-{side}-{rows}-{run}"
                spec = {**base, **extra(side, run_dir), "op": op, "side": side, "rows": rows}
                got = spawn(spec, args.timeout)
                if not args.keep:
                    shutil.rmtree(run_dir, ignore_errors=True)
                label = f"{op:<7} {side:<13} {human_rows(rows):>5} run {run}/{args.repeat}"
                if "error" in got:
                    record.error = got["error"]
                    failed = True
                    log(f"{label}: FAILED\n{got['error']}")
                    continue
                record.seconds.append(got["seconds"])
                record.peak_rss_mb.append(got["peak_rss_mb"])
                details = [f"RSS at start {got['start_rss_mb']:.0f} MB"]
                if not got["peak_reset"]:
                    details = ["whole process: no peak reset here"]
                if "close_seconds" in got:
                    details.append(f"close {got['close_seconds']:.2f} s (untimed)")
                if "db_bytes" in got:
                    details.append(f"database file {got['db_bytes'] / 1e6:.0f} MB")
                if "out_bytes" in got:
                    details.append(f"wrote {got['out_bytes'] / 1e6:.1f} MB")
                if "chunks" in got:
                    details.append(f"{got['chunks']} chunks")
                if "settings" in got:
                    details.append(f"session threads/memory_limit {got['settings']}")
                log(
                    f"{label}: {got['seconds']:.2f} s (CPU {got['cpu_seconds']:.2f} s), "
                    f"{rows / got['seconds']:,.0f} rows/s, "
                    f"peak RSS {got['peak_rss_mb']:.0f} MB ({'; '.join(details)})"
                )

    def extract_spec(rows: int):
        def extra(side: str, run_dir: Path) -> dict:
            return {"csv": str(files[rows]), "target": str(run_dir)}

        return extra

    source = runs_dir / "write-source"

    def write_spec(side: str, run_dir: Path) -> dict:
        run_dir.mkdir(parents=True, exist_ok=True)
        return {
            "source": str(source),
            "source_db": str(source / "pipeline_data.duckdb"),
            "out": str(run_dir / "out.csv"),
        }

    try:
        for rows in sizes:
            files[rows], generated[rows] = dataset(workdir, rows, args.seed)

        rows = args.rows
        measure(
            "extract",
            ("duckmerge", "duckdb", "pandas", "duckmerge-sql", "duckmerge-plain"),
            rows,
            extract_spec(rows),
            files[rows],
        )

        log(f"loading the writers' source table ({rows:,} rows) with duckmerge, untimed ...")
        built = spawn(
            {
                **base,
                "op": "build",
                "side": "duckmerge",
                "rows": rows,
                "csv": str(files[rows]),
                "target": str(source),
            },
            args.timeout,
        )
        if "error" in built:
            failed = True
            for side in ("duckmerge", "duckdb", "duckmerge-sql"):
                results[("write", side, rows)] = Measurement(error=f"build: {built['error']}")
            log(f"building the source failed:\n{built['error']}")
        else:
            measure(
                "write",
                ("duckmerge", "duckdb", "duckmerge-sql"),
                rows,
                write_spec,
                source / "pipeline_data.duckdb",
            )

        if args.big_rows:
            big = args.big_rows
            measure(
                "extract",
                ("duckmerge", "duckdb", "duckmerge-plain"),
                big,
                extract_spec(big),
                files[big],
            )
    finally:
        if args.keep:
            log(f"kept {workdir}")
        elif temporary:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            shutil.rmtree(runs_dir, ignore_errors=True)

    small, big = args.rows, args.big_rows
    r = results
    n = human_rows(small)
    table = [
        table_row(
            f"extract {n} vs duckdb read_csv",
            r[("extract", "duckmerge", small)],
            r[("extract", "duckdb", small)],
            small,
            small,
            kind="speed",
            target=0.9,
        ),
        table_row(
            f"extract {n} vs pandas chunked + INSERT",
            r[("extract", "duckmerge", small)],
            r[("extract", "pandas", small)],
            small,
            small,
            kind="speed",
            target=3.0,
        ),
        table_row(
            f"write {n} (sort_columns) vs duckdb COPY",
            r[("write", "duckmerge", small)],
            r[("write", "duckdb", small)],
            small,
            small,
            kind="speed",
            target=0.9,
        ),
    ]
    table += [
        table_row(
            f"extract {n} with compress_text: false vs duckdb read_csv",
            r[("extract", "duckmerge-plain", small)],
            r[("extract", "duckdb", small)],
            small,
            small,
            kind="speed",
            target=0.9,
        ),
        table_row(
            f"extract {n} vs the same read_csv via Session.execute",
            r[("extract", "duckmerge", small)],
            r[("extract", "duckmerge-sql", small)],
            small,
            small,
            kind="speed",
            target=None,
        ),
        table_row(
            f"write {n} vs the same COPY via Session.execute",
            r[("write", "duckmerge", small)],
            r[("write", "duckmerge-sql", small)],
            small,
            small,
            kind="speed",
            target=None,
        ),
    ]
    if big:
        b = human_rows(big)
        table += [
            table_row(
                f"extract peak RSS: {b} vs {n} rows",
                r[("extract", "duckmerge", big)],
                r[("extract", "duckmerge", small)],
                big,
                small,
                kind="rss",
                target=1.2,
            ),
            table_row(
                f"extract peak RSS with compress_text: false: {b} vs {n} rows",
                r[("extract", "duckmerge-plain", big)],
                r[("extract", "duckmerge-plain", small)],
                big,
                small,
                kind="rss",
                target=1.2,
            ),
            table_row(
                f"extract {b} with compress_text: false vs duckdb read_csv",
                r[("extract", "duckmerge-plain", big)],
                r[("extract", "duckdb", big)],
                big,
                big,
                kind="speed",
                target=None,
            ),
            table_row(
                f"extract {b} vs duckdb read_csv",
                r[("extract", "duckmerge", big)],
                r[("extract", "duckdb", big)],
                big,
                big,
                kind="speed",
                target=None,
            ),
            table_row(
                f"duckdb read_csv peak RSS: {b} vs {n} rows",
                r[("extract", "duckdb", big)],
                r[("extract", "duckdb", small)],
                big,
                small,
                kind="rss",
                target=None,
            ),
        ]

    sizes_text = ", ".join(
        f"{rows:,} rows = {files[rows].stat().st_size / 1e6:.0f} MB"
        if files.get(rows) and files[rows].exists()
        else f"{rows:,} rows"
        for rows in sizes
    )
    print()
    print("command:", shlex.join(["python", *sys.argv]))
    print("versions:", ", ".join(f"{name} {version}" for name, version in found.items()))
    print(
        f"data: benches/gen_crm.py, seed {args.seed}, 13 columns ({sizes_text}); "
        f"threads={args.threads}, memory_limit={args.memory_limit} on every side; "
        f"best of {args.repeat} fresh-process run(s); peak RSS is the highest during the timed "
        f"call; {os.cpu_count()} CPUs"
    )
    print()
    print(plain_table(table))
    print()
    print("ratio: throughput duckmerge / peer (higher is better), except the RSS rows: peak RSS")
    print("on the big file / on the small one (lower is better). On those rows the 'duckmerge'")
    print("columns are the big file's run and the 'peer' columns the small file's run of the")
    print("same tool. Rows marked (context) have no target; the two 'via Session.execute' rows")
    print("run the peer's plain SQL inside duckmerge's own DuckDB (no driver), which separates")
    print("the drivers' overhead from the difference between the two DuckDB builds.")
    print()
    for (op, side), call in CALLS.items():
        print(f"  {op:<7} {side:<13} {call}")
    if args.markdown:
        print()
        print(markdown_table(table))
        print()
        print(
            f"_gen_crm.py CSVs ({sizes_text}), threads={args.threads}, "
            f"memory_limit={args.memory_limit}, best of {args.repeat}; "
            + ", ".join(f"{name} {version}" for name, version in found.items())
            + "._"
        )
    for (op, side, rows), record in results.items():
        if record.error:
            print(f"\n{op} on {side} ({rows:,} rows) failed:\n{record.error}")

    missed = any(row[7] == "NO" for row in table)
    if failed:
        return 1
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
