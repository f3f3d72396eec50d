"""Benchmark: duckmerge's CRM merge next to the five-stage SQL it replaces (issue 4).

Data (``benches/gen_crm.py``, generated once and cached): an original CRM
CSV of ``--rows`` rows x 13 columns (id, customer_code, first/last name,
email, phone, company, city, dates, money, a flag, free-text notes; ~5% NULL
emails, ~30% NULL phones) and ``--vendors`` vendor CSVs of ``--vendor-rows``
rows each (default 0.8 x ``--rows``) that list the same people: emails with
case and whitespace noise, phones as ``+420...``, ``00420...``, spaced and
national, 5% exact duplicate rows, 10% rows that match nobody, 8% second
records of a person (see ``gen_crm.vendor_query``).

In one run, side by side, each in a fresh Python process:

* **ours**: ``duckmerge.MergeDriver().run(step_id="merged", config={"original":
  {"path": crm.csv}, "enriched": [{"path": vendor_i.csv, "name": "vendor_i"},
  ...], "keys": ["email", {"column": "phone", "normalize": "phone",
  "default_region": "CZ"}], "output": {"path": out.csv}}, ctx=session)`` in a
  new ``duckmerge.Session(<fresh dir>, memory_limit=..., threads=...)``
  (a fresh dir per run, so resume never skips work);
* **old**: duckdb-python (``SET memory_limit``, ``SET threads``) on a new
  database file, running the five stages the merge replaces:

  1. ``CREATE TABLE original AS SELECT * FROM read_csv('crm.csv')``;
  2. the same for each vendor file;
  3. ``consolidated``: the vendors chained with ``FULL OUTER JOIN`` on
     ``LOWER(TRIM(email))`` (each later vendor on the ``COALESCE`` of the
     earlier keys), every vendor column ``COALESCE``-d in vendor order;
  4. ``merged``: ``original LEFT JOIN consolidated ON LOWER(TRIM(o.email)) =
     c.email_key``; the original's columns (those the vendors also have
     filled with ``COALESCE(o.x, c.x)``), then the vendor-only columns;
  5. ``COPY merged TO 'out.csv' (FORMAT csv, HEADER true)``.

  It matches on email only and multiplies rows where vendors hold several
  rows for one email (duplicates, second records): its output-row count
  shows by how much.

Both sides get the same ``threads`` (``--threads``, default 2) and
``memory_limit`` (``--memory-limit``, default 500MB). The time is the wall
clock from opening the session / connection to closing it (both write a
database file; closing is included), the best of ``--repeat`` runs. The
peak RSS is the worker process's high-water mark (``VmHWM``, or
``ru_maxrss``) over its whole life, interpreter and imports included, the
highest of the runs. Output rows are counted afterwards from each output CSV
(``count(*)`` over ``read_csv``, untimed). Before each run the input CSVs are
read once (page cache) and dirty pages flushed (``os.sync()``).

Targets (issue 4): ours' wall time <= 1.0x the old SQL's (aim 0.7x), ours'
peak RSS <= 700 MB, ours' output rows == original rows; and ``--rows
10000000`` (3 vendors of 8M rows) completes at memory_limit 500MB.

Usage (from the repository root, with duckmerge built into the environment)::

    python benches/merge_bench.py                                  # 1M + 3 x 0.8M rows
    python benches/merge_bench.py --rows 100000 --vendor-rows 80000
    python benches/merge_bench.py --rows 10000000 --only ours       # the 10M check
    python benches/merge_bench.py --repeat 3 --markdown             # a README table
    python benches/merge_bench.py --no-compress-text                # text stored uncompressed
    python benches/merge_bench.py --peer-python /tmp/peer156/bin/python  # old SQL on another duckdb
    python benches/merge_bench.py --rows 10000000 --generate-only   # just make the CSVs

Generated files are cached in ``--data-dir`` (default
``$XDG_CACHE_HOME/duckmerge/merge_bench``, i.e. ``~/.cache/...``) and reused;
sessions, databases and outputs go to a temp folder inside it and are removed
after each run (``--keep`` keeps them). 1M rows need ~0.5 GB for the inputs;
10M rows ~5 GB plus the outputs and DuckDB's spill files.

Exit status: 0 when every run worked, 1 when a run failed (or, with
``--strict``, when a target was missed), 2 when duckmerge or duckdb is missing.
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
    spawn_worker,
    sql_string,
)  # noqa: E402 (benches/ is on sys.path)

HERE = Path(__file__).resolve().parent
SIDES = ("ours", "old")
LABELS = {
    "ours": "duckmerge MergeDriver",
    "old": "old five-stage SQL (duckdb-python)",
}
#: Targets from issue 4.
TIME_RATIO_TARGET = 1.0
TIME_RATIO_AIM = 0.7
RSS_TARGET_MB = 700.0
PHONE_KEY = {"column": "phone", "normalize": "phone", "default_region": "CZ"}


# --------------------------------------------------------------------------- worker


def quote_ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def merge_config(spec: dict) -> dict:
    """The MergeDriver config for ``spec`` (also printed in the report)."""
    config: dict = {
        "original": {"path": spec["original"]},
        "enriched": [
            {"path": path, "name": f"vendor_{index}"} for index, path in enumerate(spec["vendors"])
        ],
        "keys": ["email", dict(PHONE_KEY)],
        "output": {"path": spec["out"]},
    }
    if not spec.get("compress_text", True):
        # Text stored uncompressed in the imported tables and the output.
        for source in [config["original"], *config["enriched"]]:
            source["compress_text"] = False
        config["output"]["compress_text"] = False
    return config


def stage_seconds_from_events(events_path: Path) -> dict[str, float]:
    """Seconds per merge stage, from the session's ``events.jsonl``.

    A ``merge_progress`` event marks the end of its stage; a stage starts
    where the previous one ended (the first at ``merge_start``), and the
    time after the last stage up to ``merge_complete`` is ``finish``.
    """
    from datetime import datetime

    def ts(event: dict) -> float:
        return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()

    stages: dict[str, float] = {}
    previous = None
    if not events_path.exists():
        return stages
    for line in events_path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        name = event.get("event")
        if name == "merge_start":
            previous = ts(event)
        elif name == "merge_progress" and previous is not None:
            now = ts(event)
            stage = str(event.get("stage"))
            stages[stage] = stages.get(stage, 0.0) + now - previous
            previous = now
        elif name == "merge_complete" and previous is not None:
            stages["finish"] = ts(event) - previous
    return stages


def old_import_sql(spec: dict) -> list[tuple[str, str]]:
    """Stages 1 and 2: one ``CREATE TABLE ... AS SELECT * FROM read_csv`` per file."""
    stages = [
        (
            "1 import original",
            f"CREATE TABLE original AS SELECT * FROM read_csv({sql_string(spec['original'])})",
        )
    ]
    for index, path in enumerate(spec["vendors"]):
        stages.append(
            (
                "2 import enriched",
                f"CREATE TABLE vendor_{index} AS SELECT * FROM read_csv({sql_string(path)})",
            )
        )
    return stages


def old_consolidate_sql(vendor_columns: list[list[str]]) -> str:
    """Stage 3: the vendors chained with FULL OUTER JOINs on LOWER(TRIM(email)),
    every column COALESCE-d in vendor order; the key is ``email_key``."""
    keys = [f"lower(trim(v{i}.email))" for i in range(len(vendor_columns))]
    joins = "vendor_0 v0"
    for i in range(1, len(vendor_columns)):
        earlier = keys[0] if i == 1 else f"COALESCE({', '.join(keys[:i])})"
        joins += f"\nFULL OUTER JOIN vendor_{i} v{i} ON {earlier} = {keys[i]}"
    key = keys[0] if len(keys) == 1 else f"COALESCE({', '.join(keys)})"
    columns: list[str] = []
    for cols in vendor_columns:
        columns += [c for c in cols if c != "email" and c not in columns]
    select = [f"{key} AS email_key"]
    for column in columns:
        have = [
            f"v{i}.{quote_ident(column)}" for i, cols in enumerate(vendor_columns) if column in cols
        ]
        expr = have[0] if len(have) == 1 else f"COALESCE({', '.join(have)})"
        select.append(f"{expr} AS {quote_ident(column)}")
    return "CREATE TABLE consolidated AS SELECT\n  " + ",\n  ".join(select) + f"\nFROM {joins}"


def old_merge_sql(original_columns: list[str], consolidated_columns: list[str]) -> str:
    """Stage 4: original LEFT JOIN consolidated on LOWER(TRIM(email)); shared columns
    (but the key) filled with COALESCE(o.x, c.x), vendor-only columns appended."""
    enriched = [c for c in consolidated_columns if c != "email_key"]
    select = []
    for column in original_columns:
        q = quote_ident(column)
        if column in enriched and column != "email":
            select.append(f"COALESCE(o.{q}, c.{q}) AS {q}")
        else:
            select.append(f"o.{q}")
    select += [f"c.{quote_ident(c)}" for c in enriched if c not in original_columns]
    return (
        "CREATE TABLE merged AS SELECT\n  "
        + ",\n  ".join(select)
        + "\nFROM original o LEFT JOIN consolidated c ON lower(trim(o.email)) = c.email_key"
    )


def columns_of(con, table: str) -> list[str]:
    """Column names of ``table`` on a duckdb-python connection, in order."""
    return [row[0] for row in con.execute(f"DESCRIBE {quote_ident(table)}").fetchall()]


def run_old(spec: dict) -> dict:
    """The old five-stage SQL in duckdb-python; returns timings per stage."""
    import duckdb

    db_path = Path(spec["run_dir"]) / "old.duckdb"
    stages: dict[str, float] = {}

    def timed(name: str, sql: str) -> None:
        started = time.perf_counter()
        con.execute(sql)
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - started

    opened = time.perf_counter()
    con = duckdb.connect(str(db_path))
    con.execute(f"SET memory_limit = {sql_string(spec['memory_limit'])}")
    con.execute(f"SET threads = {int(spec['threads'])}")
    stages["open"] = time.perf_counter() - opened
    settings = con.execute(
        "SELECT current_setting('threads'), current_setting('memory_limit')"
    ).fetchall()[0]
    for name, sql in old_import_sql(spec):
        timed(name, sql)
    vendor_columns = [columns_of(con, f"vendor_{i}") for i in range(len(spec["vendors"]))]
    timed("3 consolidate", old_consolidate_sql(vendor_columns))
    timed(
        "4 left join", old_merge_sql(columns_of(con, "original"), columns_of(con, "consolidated"))
    )
    timed(
        "5 copy out",
        f"COPY merged TO {sql_string(spec['out'])} (FORMAT csv, HEADER true)",
    )
    started = time.perf_counter()
    con.close()
    stages["close"] = time.perf_counter() - started
    return {"stages": stages, "settings": [str(s) for s in settings]}


def run_ours(spec: dict) -> dict:
    """duckmerge's MergeDriver in a fresh session; returns its rows, stats, stage times."""
    import duckmerge

    session_dir = Path(spec["run_dir"]) / "session"
    opened = time.perf_counter()
    session = duckmerge.Session(
        str(session_dir), memory_limit=spec["memory_limit"], threads=int(spec["threads"])
    )
    with session:
        open_seconds = time.perf_counter() - opened
        settings = session.sql(
            "SELECT current_setting('threads'), current_setting('memory_limit')"
        ).fetchall()[0]
        result = duckmerge.MergeDriver().run(
            step_id="merged", config=merge_config(spec), inputs=None, ctx=session
        )
        closing = time.perf_counter()
    stages = {"open": open_seconds}
    stages.update(stage_seconds_from_events(session_dir / "logs" / "events.jsonl"))
    stages["close"] = time.perf_counter() - closing
    stats = result.get("stats", {})
    keep = (
        "rows_original", "rows_output", "rows_per_source", "duplicates_collapsed",
        "matched", "matched_per_key", "match_rate", "unmatched_enriched",
    )  # fmt: skip
    return {
        "stages": stages,
        "settings": [str(s) for s in settings],
        "driver_rows": result.get("rows"),
        "stats": {k: stats[k] for k in keep if k in stats},
    }


def run_worker(spec: dict) -> dict:
    """One measured merge in this (fresh) process; returns its numbers as a dict."""
    side = spec["side"]
    Path(spec["run_dir"]).mkdir(parents=True, exist_ok=True)
    start_cpu = cpu_seconds()
    started = time.perf_counter()
    if side == "ours":
        measured = run_ours(spec)
    elif side == "old":
        measured = run_old(spec)
    else:
        raise ValueError(f"unknown side {side!r}; expected one of {SIDES}")
    measured["seconds"] = time.perf_counter() - started
    measured["cpu_seconds"] = cpu_seconds() - start_cpu
    measured["peak_rss_mb"] = peak_rss_mb()
    measured["out_bytes"] = Path(spec["out"]).stat().st_size
    return measured


# --------------------------------------------------------------------------- driver


@dataclass
class Measurement:
    """Every run of one contender."""

    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    output_rows: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def best(self) -> float | None:
        return min(self.seconds) if self.seconds and not self.error else None

    @property
    def peak(self) -> float | None:
        return max(self.peak_rss_mb) if self.peak_rss_mb and not self.error else None

    @property
    def rows(self) -> int | None:
        """The output-row count when every run agreed (else None: see the log)."""
        if self.error or not self.output_rows or len(set(self.output_rows)) != 1:
            return None
        return self.output_rows[0]


def spawn(spec: dict, timeout: float) -> dict:
    """Run one merge in a fresh interpreter; its last stdout line is JSON."""
    return spawn_worker(__file__, spec, timeout, python=peer_python_for(spec, ("old",)))


def count_csv_rows(path: Path, threads: int) -> int:
    """Data rows of a CSV with a header (quoted newlines count as one row)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {int(threads)}")
        query = f"SELECT count(*) FROM read_csv({sql_string(str(path))}, header = true, all_varchar = true)"
        return int(con.execute(query).fetchall()[0][0])
    finally:
        con.close()


def warm_page_cache(paths: list[Path]) -> None:
    """Read the files once, so no side pays for the first read from disk."""
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(1 << 24):
                pass


def flush_disk() -> None:
    """Write dirty pages out now, so no run pays for an earlier one's writes."""
    if hasattr(os, "sync"):
        os.sync()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def versions() -> dict[str, str]:
    """Versions of Python, duckmerge (and its bundled DuckDB) and duckdb-python."""
    found = {"python": platform.python_version()}
    for name in ("duckmerge", "duckdb"):
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


def machine() -> str:
    """Cores and memory of this machine, for the printout."""
    text = f"{os.cpu_count()} cores"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                text += f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    except OSError:
        pass
    return f"{text}, {platform.system()} {platform.machine()}"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "duckmerge" / "merge_bench"


def datasets(
    data_dir: Path, rows: int, vendor_rows: int, vendors: int, seed: int
) -> tuple[Path, list[Path]]:
    """The original and vendor CSVs (generated unless ``data_dir`` has them)."""
    sys.path.insert(0, str(HERE))
    import gen_crm

    version = gen_crm.MERGE_GEN_VERSION
    data_dir.mkdir(parents=True, exist_ok=True)
    original = data_dir / f"crm-{rows}-seed{seed}-m{version}.csv"
    jobs: list[tuple[Path, object]] = [
        (original, lambda: gen_crm.generate_merge_original(original, rows, seed))
    ]
    vendor_paths = []
    for index in range(vendors):
        path = data_dir / f"vendor{index}-{vendor_rows}-of-{rows}-seed{seed}-m{version}.csv"
        vendor_paths.append(path)
        jobs.append(
            (
                path,
                lambda path=path, index=index: gen_crm.generate_vendor(
                    path, rows, vendor_rows, index, seed
                ),
            )
        )
    for path, make in jobs:
        if path.exists():
            log(f"reusing {path} ({path.stat().st_size / 1e6:.0f} MB)")
            continue
        log(f"generating {path.name} ...")
        done = make()  # type: ignore[operator]
        log(f"  {done['rows']:,} rows, {done['bytes'] / 1e6:.0f} MB in {done['seconds']:.1f} s")
    return original, vendor_paths


def fmt(value: float | None, spec: str) -> str:
    return "error" if value is None else format(value, spec)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


HEADER = ["contender", "seconds", "rows/s", "peak RSS MB", "output rows"]
NUMERIC = [False, True, True, True, True]


def result_rows(results: dict[str, Measurement], rows: int) -> list[list[str]]:
    out = []
    for side, record in results.items():
        out.append(
            [
                LABELS[side],
                fmt(record.best, ".2f"),
                "error" if not record.best else f"{rows / record.best:,.0f}",
                fmt(record.peak, ".0f"),
                "error" if record.rows is None else f"{record.rows:,}",
            ]
        )
    return out


def target_rows(results: dict[str, Measurement], rows: int) -> list[list[str]]:
    """``[check, value, target, verdict]`` lines for the targets of issue 4."""
    ours, old = results.get("ours"), results.get("old")
    lines: list[list[str]] = []
    if ours is not None and old is not None:
        ratio = ours.best / old.best if ours.best and old.best else None
        lines.append(
            [
                "wall time ours / old",
                fmt(ratio, ".2f") + ("x" if ratio is not None else ""),
                f"<= {TIME_RATIO_TARGET:.1f}x (aim {TIME_RATIO_AIM:.1f}x"
                + ("" if ratio is None else (": met" if ratio <= TIME_RATIO_AIM else ": not met"))
                + ")",
                verdict(None if ratio is None else ratio <= TIME_RATIO_TARGET),
            ]
        )
        rss_ratio = ours.peak / old.peak if ours.peak and old.peak else None
        lines.append(
            [
                "peak RSS ours / old",
                fmt(rss_ratio, ".2f") + ("x" if rss_ratio is not None else ""),
                "(context)",
                "-",
            ]
        )
    if ours is not None:
        lines.append(
            [
                "peak RSS ours",
                fmt(ours.peak, ".0f") + (" MB" if ours.peak is not None else ""),
                f"<= {RSS_TARGET_MB:.0f} MB",
                verdict(None if ours.peak is None else ours.peak <= RSS_TARGET_MB),
            ]
        )
        lines.append(
            [
                "output rows ours",
                "error" if ours.rows is None else f"{ours.rows:,}",
                f"== {rows:,} (original rows)",
                verdict(None if ours.rows is None else ours.rows == rows),
            ]
        )
    if old is not None and old.rows is not None:
        lines.append(
            [
                "output rows old",
                f"{old.rows:,}",
                f"(context: {old.rows / rows:.3f}x the original)",
                "-",
            ]
        )
    return lines


def plain_table(header: list[str], rows: list[list[str]], numeric: list[bool]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def markdown_table(header: list[str], rows: list[list[str]], numeric: list[bool]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="original rows (default 1,000,000)"
    )
    parser.add_argument(
        "--vendor-rows",
        type=int,
        help="rows per vendor file (default 0.8 x --rows: 800,000 for 1M)",
    )
    parser.add_argument("--vendors", type=int, default=3, help="vendor files (default 3)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per contender; best time wins (default 1)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="folder for the generated CSVs, reused when present "
        f"(default {default_data_dir()}); runs go to a temp folder inside it",
    )
    parser.add_argument("--only", choices=SIDES, help="run one contender only")
    parser.add_argument(
        "--no-compress-text",
        dest="compress_text",
        action="store_false",
        help="ours with compress_text: false on every source and the output (text stored "
        "uncompressed: faster, a larger session file)",
    )
    parser.add_argument(
        "--memory-limit", default="500MB", help="DuckDB memory_limit, both sides (default 500MB)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="DuckDB threads, both sides (default 2)"
    )
    parser.add_argument("--seed", type=int, default=1, help="gen_crm.py seed (default 1)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each run's session/database and output (and say where)",
    )
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds allowed per run (default 3600)"
    )
    parser.add_argument("--markdown", action="store_true", help="also print the tables as markdown")
    parser.add_argument(
        "--generate-only",
        action="store_true",
        help="only make sure the input CSVs exist in --data-dir (print their paths) and stop",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--peer-python", metavar="PATH", help=PEER_PYTHON_HELP)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.vendor_rows is None:
        args.vendor_rows = max(1, round(args.rows * 0.8))
    if args.rows < 1 or args.vendor_rows < 1 or args.vendors < 1:
        parser.error("--rows, --vendor-rows and --vendors must be at least 1")
    if args.repeat < 1 or args.threads < 1:
        parser.error("--repeat and --threads must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0

    found = versions()
    if args.peer_python:
        found["duckdb"] = peer_duckdb_version(args.peer_python)
    missing = [name for name in ("duckmerge", "duckdb") if found[name] == "not installed"]
    if missing:
        log(f"merge_bench.py needs {', '.join(missing)} importable in {sys.executable}")
        return 2

    data_dir = (args.data_dir or default_data_dir()).resolve()
    original, vendors = datasets(data_dir, args.rows, args.vendor_rows, args.vendors, args.seed)
    inputs = [original, *vendors]
    if args.generate_only:
        for path in inputs:
            print(f"{path}  {path.stat().st_size / 1e6:.0f} MB")
        return 0
    sides = (args.only,) if args.only else SIDES
    results = {side: Measurement() for side in sides}
    details: dict[str, dict] = {}
    runs_root = Path(tempfile.mkdtemp(prefix="runs-", dir=data_dir))
    failed = False
    try:
        for run in range(1, args.repeat + 1):
            # Each side goes first in turn.
            for side in sides if run % 2 else sides[::-1]:
                record = results[side]
                if record.error:
                    continue
                run_dir = runs_root / f"{side}-{run}"
                spec = {
                    "side": side,
                    "peer_python": args.peer_python,
                    "original": str(original),
                    "vendors": [str(v) for v in vendors],
                    "out": str(run_dir / "out.csv"),
                    "run_dir": str(run_dir),
                    "memory_limit": args.memory_limit,
                    "threads": args.threads,
                    "compress_text": args.compress_text,
                }
                warm_page_cache(inputs)
                flush_disk()
                label = f"{side:<4} run {run}/{args.repeat}"
                log(f"{label}: running ...")
                got = spawn(spec, args.timeout)
                if "error" not in got:
                    try:
                        got["output_rows"] = count_csv_rows(Path(spec["out"]), args.threads)
                    except Exception as exc:  # noqa: BLE001 (reported, not hidden)
                        got = {"error": f"counting the output rows of {spec['out']}: {exc}"}
                if args.keep:
                    log(f"{label}: kept {run_dir}")
                else:
                    shutil.rmtree(run_dir, ignore_errors=True)
                if "error" in got:
                    record.error = got["error"]
                    failed = True
                    log(f"{label}: FAILED\n{got['error']}")
                    continue
                record.seconds.append(got["seconds"])
                record.peak_rss_mb.append(got["peak_rss_mb"])
                record.output_rows.append(got["output_rows"])
                details[side] = got
                stages = ", ".join(f"{k} {v:.2f}" for k, v in got["stages"].items())
                log(
                    f"{label}: {got['seconds']:.2f} s (CPU {got['cpu_seconds']:.2f} s), "
                    f"peak RSS {got['peak_rss_mb']:.0f} MB, {got['output_rows']:,} output rows, "
                    f"{got['out_bytes'] / 1e6:.0f} MB; threads/memory_limit {got['settings']}"
                )
                log(f"{label}: stages (s): {stages}")
                if side == "ours" and got.get("driver_rows") != got["output_rows"]:
                    record.error = (
                        f"MergeDriver returned rows={got.get('driver_rows')} but its output CSV "
                        f"has {got['output_rows']:,} rows"
                    )
                    failed = True
                    log(f"{label}: {record.error}")
    finally:
        if args.keep:
            log(f"kept {runs_root}")
        else:
            shutil.rmtree(runs_root, ignore_errors=True)

    for side, record in results.items():
        if not record.error and len(set(record.output_rows)) > 1:
            log(f"{side}: output rows differ between runs: {record.output_rows}")

    rows = args.rows
    if not args.compress_text:
        LABELS["ours"] += " (compress_text: false)"
    table = result_rows(results, rows)
    checks = target_rows(results, rows)
    check_header = ["check", "value", "target", "verdict"]
    check_numeric = [False, True, False, False]
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.0f} MB" for p in inputs)
    description = (
        f"data: benches/gen_crm.py seed {args.seed}: original {rows:,} rows x 13 columns, "
        f"{args.vendors} vendor file(s) x {args.vendor_rows:,} rows ({sizes}); "
        f"threads={args.threads}, memory_limit={args.memory_limit} on both sides; best time of "
        f"{args.repeat} fresh-process run(s), highest peak RSS (whole worker process)"
    )

    print()
    print("command:", shlex.join(["python", *sys.argv]))
    print("versions:", ", ".join(f"{name} {version}" for name, version in found.items()))
    print("machine:", machine())
    print(description)
    print()
    print(plain_table(HEADER, table, NUMERIC))
    print()
    print(plain_table(check_header, checks, check_numeric))
    for side in sides:
        last = details.get(side)
        if not last:
            continue
        stages = ", ".join(f"{k} {v:.2f}" for k, v in last["stages"].items())
        print(f"\n{side} stages (s, last run): {stages}")
        if side == "ours" and last.get("stats"):
            stats = last["stats"]
            print(
                "ours match stats: "
                + "; ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in stats.items())
            )
    print("\nrows/s = original rows / seconds. ours runs:")
    config = merge_config(
        {
            "original": "crm.csv",
            "vendors": [f"vendor_{i}.csv" for i in range(args.vendors)],
            "out": "out.csv",
            "compress_text": args.compress_text,
        }
    )
    print(f"  MergeDriver().run(step_id='merged', config={json.dumps(config)}, ctx=Session(...))")
    print("old runs: read_csv x (1 + vendors); FULL OUTER JOIN chain on lower(trim(email)) with")
    print("  COALESCE; original LEFT JOIN consolidated; COPY merged TO out.csv (see --help).")
    if args.markdown:
        print()
        print(markdown_table(HEADER, table, NUMERIC))
        print()
        print(markdown_table(check_header, checks, check_numeric))
        print()
        print(
            f"_{description}; "
            + ", ".join(f"{name} {version}" for name, version in found.items())
            + f"; {machine()}._"
        )
    for side, record in results.items():
        if record.error:
            print(f"\n{side} failed:\n{record.error}")

    missed = any(line[3] == "MISS" for line in checks)
    if failed:
        return 1
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
