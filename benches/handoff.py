"""Benchmark: duckmerge's Arrow handoff next to duckdb-python, on one database file.

A ``--rows`` x 12-column table (ints, floats, strings, dates, timestamps, ~10%
NULLs; numpy, seeded) is written once into a duckmerge session with
``Session(path).write_table``. Then, side by side:

==============  ======================================  ==============================================
operation       duckmerge                               duckdb-python
==============  ======================================  ==============================================
to_arrow        ``ctx.table("t").to_arrow()``           ``con.sql("select * from t").to_arrow_table()``
to_pandas       ``ctx.table("t").to_pandas()``          ``con.sql("select * from t").df()``
write_table     ``ctx.write_table("t", df)``            ``con.execute("CREATE TABLE t AS SELECT * FROM df")``
==============  ======================================  ==============================================

Both read sides open the same ``<session>/pipeline_data.duckdb`` (duckdb-python
with ``read_only=True``); both write sides write a pandas DataFrame of
``--rows`` rows into a new, empty database file. Both are set to the same
``threads`` and ``memory_limit``.

Every run of every operation is a fresh Python process, so each peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that one operation, and only
one process holds the database file at a time. Setup (imports, opening the
database, building the input DataFrame) is neither timed nor allowed to set the
peak: on Linux the process's high-water mark is reset just before the timed
call (``/proc/self/clear_refs``), so the peak RSS shown is the highest resident
size *during* the operation, the input DataFrame and the loaded libraries
included, the same on both sides. Where that reset is not available the peak is
the whole process's ``ru_maxrss``. The time shown is the best of ``--repeat``
runs and the RSS the highest.

Targets (duckmerge time / duckdb-python time): to_arrow <= 1.2, to_pandas <= 1.0,
write_table <= 1.25.

Usage (from the repository root, with duckmerge built into the environment)::

    python benches/handoff.py                       # 1,000,000 rows, best of 3
    python benches/handoff.py --rows 200000 --repeat 1
    python benches/handoff.py --markdown            # also a table for the README
    python benches/handoff.py --ops to_arrow --calls 3   # also a 2nd and 3rd call per process
    python benches/handoff.py --peer-python /tmp/peer156/bin/python  # peer: another venv's duckdb

Exit status: 0 when every run worked, 1 when a run failed (or, with
``--strict``, when a target was missed), 2 when duckmerge or duckdb is missing.
"""

from __future__ import annotations

import argparse
import json
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
    peak_rss_mb,
    peer_duckdb_version,
    peer_python_for,
    reset_peak_rss,
    spawn_worker,
    sql_string,
)  # noqa: E402 (benches/ is on sys.path)

TABLE = "t"
OPERATIONS = ("to_arrow", "to_pandas", "write_table")
SIDES = ("duckmerge", "duckdb")
TARGETS = {"to_arrow": 1.2, "to_pandas": 1.0, "write_table": 1.25}
CALLS = {
    "to_arrow": ('ctx.table("t").to_arrow()', 'con.sql("select * from t").to_arrow_table()'),
    "to_pandas": ('ctx.table("t").to_pandas()', 'con.sql("select * from t").df()'),
    "write_table": (
        'ctx.write_table("t", df)',
        'con.execute("CREATE TABLE t AS SELECT * FROM df")',
    ),
}
NULL_FRACTION = 0.10


# --------------------------------------------------------------------------- data


def make_frame(rows: int, seed: int):
    """The benchmark's input: a pandas DataFrame of ``rows`` x 12 columns.

    Three integer columns (one without NULLs), three floats, four strings
    (two low-cardinality, two mostly unique), one date and one timestamp;
    every column but ``id`` has ~10% NULLs.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    rng = np.random.default_rng(seed)

    def null_mask():
        return rng.random(rows) < NULL_FRACTION

    def ints(low, high, dtype):
        values = rng.integers(low, high, rows, dtype=dtype)
        return pd.arrays.IntegerArray(values, null_mask())

    def floats(values):
        values[null_mask()] = np.nan  # pandas' missing float; NULL on both sides
        return values

    def strings(values):
        values = np.asarray(values, dtype=object)
        values[null_mask()] = None
        return pd.Series(values)

    first = np.array(
        ["Jan", "Petr", "Eva", "Jana", "Tomáš", "Lucie", "Martin", "Hana", "Jiří", "Tereza"]
    )
    last = np.array(
        ["Novák", "Svoboda", "Dvořák", "Černá", "Procházka", "Kučera", "Veselá", "Horák"]
    )
    names = np.char.add(
        np.char.add(first[rng.integers(0, len(first), rows)], " "),
        last[rng.integers(0, len(last), rows)],
    )
    cities = np.array([f"City {i:02d}" for i in range(50)], dtype=object)
    statuses = np.array(["lead", "new", "active", "vip", "churned"], dtype=object)
    customers = rng.integers(0, 10 * rows, rows).tolist()
    domains = rng.integers(0, 100, rows).tolist()
    emails = [f"user{c}@mail{d}.example.com" for c, d in zip(customers, domains)]

    days = rng.integers(17_000, 20_000, rows).astype(np.int32)  # 2016 .. 2024
    order_date = pa.array(days, type=pa.date32(), mask=null_mask())
    micros = rng.integers(1_500_000_000, 1_730_000_000, rows) * 1_000_000
    updated_at = micros.astype("datetime64[us]")
    updated_at[null_mask()] = np.datetime64("NaT")

    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "customer_id": ints(1, 1_000_000, np.int64),
            "quantity": ints(1, 100, np.int32),
            "price": floats(rng.uniform(1.0, 1000.0, rows).round(2)),
            "discount": floats(rng.uniform(0.0, 0.5, rows)),
            "score": floats(rng.normal(0.0, 1.0, rows)),
            "name": strings(names.astype(object)),
            "email": strings(emails),
            "city": strings(cities[rng.integers(0, len(cities), rows)]),
            "status": strings(statuses[rng.integers(0, len(statuses), rows)]),
            "order_date": pd.Series(order_date.to_pandas(types_mapper=pd.ArrowDtype)),
            "updated_at": pd.Series(updated_at),
        }
    )


# --------------------------------------------------------------------------- worker


def open_duckdb(db_path: str, spec: dict, read_only: bool):
    import duckdb

    con = duckdb.connect(db_path, read_only=read_only)
    con.execute(f"SET threads = {int(spec['threads'])}")
    con.execute(f"SET memory_limit = {sql_string(spec['memory_limit'])}")
    return con


def open_session(path: str, spec: dict):
    import duckmerge

    return duckmerge.Session(path, memory_limit=spec["memory_limit"], threads=int(spec["threads"]))


def arrow_table_of(relation):
    """duckdb-python's Arrow table, whichever name this version gives it."""
    if hasattr(relation, "to_arrow_table"):
        return relation.to_arrow_table()
    result = relation.arrow()  # older versions: a Table; some newer: a RecordBatchReader
    return result.read_all() if hasattr(result, "read_all") else result


class Clock:
    """Times a block, and notes which watched libraries it imported on the way."""

    WATCHED = frozenset({"pandas", "polars", "numpy", "pyarrow", "duckdb"})

    def __enter__(self):
        self.modules = set(sys.modules)
        self.setup_rss_mb = peak_rss_mb()
        self.peak_reset = reset_peak_rss()
        self.start_rss_mb = peak_rss_mb()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.peak_rss_mb = peak_rss_mb()
        # Top-level packages only: a pyarrow submodule loaded lazily is no news.
        self.imported = sorted((set(sys.modules) - self.modules) & self.WATCHED)

    def numbers(self) -> dict:
        return {
            "seconds": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "setup_rss_mb": self.setup_rss_mb,
            "start_rss_mb": self.start_rss_mb,
            "peak_reset": self.peak_reset,
            "imported": self.imported,
        }


def run_worker(spec: dict) -> dict:
    """One measured operation in this (fresh) process; returns its numbers."""
    op, side = spec["op"], spec["side"]
    rows = spec["rows"]
    measured: dict = {}

    if op == "build":
        frame = make_frame(rows, spec["seed"])
        session = open_session(spec["session"], spec)
        with Clock() as clock:
            session.write_table(TABLE, frame)
        got = len(session.table(TABLE))
        session.close()
        measured.update(clock.numbers(), rows=got)

    elif op in ("to_arrow", "to_pandas"):
        import pyarrow  # noqa: F401  (imported before the clock starts, on both sides)

        if op == "to_pandas":
            import pandas  # noqa: F401
        if side == "duckmerge":
            session = open_session(spec["session"], spec)

            def call():
                result = session.table(TABLE)
                return result.to_arrow() if op == "to_arrow" else result.to_pandas()
        else:
            con = open_duckdb(spec["db"], spec, read_only=True)

            def call():
                relation = con.sql(f"select * from {TABLE}")
                return arrow_table_of(relation) if op == "to_arrow" else relation.df()

        with Clock() as clock:
            out = call()
        got = out.num_rows if op == "to_arrow" else len(out)
        measured.update(clock.numbers(), rows=got)
        # --calls: the same call again in this process, the last result freed first.
        later = []
        for _ in range(int(spec.get("calls", 1)) - 1):
            del out
            started = time.perf_counter()
            out = call()
            later.append(time.perf_counter() - started)
        measured["later_seconds"] = later

    elif op == "write_table":
        frame = make_frame(rows, spec["seed"])
        target = Path(spec["out_dir"])
        if side == "duckmerge":
            session = open_session(str(target), spec)
            with Clock() as clock:
                session.write_table(TABLE, frame)
            got = len(session.table(TABLE))
            session.close()
        else:
            target.mkdir(parents=True, exist_ok=True)
            con = open_duckdb(str(target / "pipeline_data.duckdb"), spec, read_only=False)
            df = frame  # noqa: F841  (found by DuckDB's replacement scan)
            with Clock() as clock:
                con.execute(f"CREATE TABLE {TABLE} AS SELECT * FROM df")
            got = con.execute(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0]
            con.close()
        measured.update(clock.numbers(), rows=got)

    else:
        raise ValueError(f"unknown operation {op!r}")

    if measured["rows"] != rows:
        raise RuntimeError(f"{op} on {side}: expected {rows} rows, got {measured['rows']}")
    return measured


# --------------------------------------------------------------------------- driver


@dataclass
class Measurement:
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    error: str | None = None
    #: Per run, the times of the calls after the first (``--calls``).
    later_seconds: list[list[float]] = field(default_factory=list)

    @property
    def best(self) -> float | None:
        return min(self.seconds) if self.seconds and not self.error else None

    @property
    def peak(self) -> float | None:
        return max(self.peak_rss_mb) if self.peak_rss_mb and not self.error else None


def spawn(spec: dict, timeout: float) -> dict:
    """Run one operation in a fresh interpreter; its last stdout line is JSON."""
    return spawn_worker(__file__, spec, timeout, python=peer_python_for(spec, ("duckdb",)))


def warm_page_cache(path: Path) -> None:
    """Read the file once, so no side pays for the first read from disk."""
    with path.open("rb") as handle:
        while handle.read(1 << 24):
            pass


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("duckmerge", "duckdb", "pyarrow", "pandas", "numpy"):
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


def fmt(value: float | None, spec: str) -> str:
    return "error" if value is None else format(value, spec)


def result_rows(results: dict[str, dict[str, Measurement]]) -> list[list[str]]:
    rows = []
    for op, sides in results.items():
        ours, peer = sides["duckmerge"], sides["duckdb"]
        ratio = ours.best / peer.best if ours.best is not None and peer.best else None
        ok = "-" if ratio is None else ("yes" if ratio <= TARGETS[op] else "NO")
        rows.append(
            [
                op,
                fmt(ours.best, ".3f"),
                fmt(peer.best, ".3f"),
                fmt(ratio, ".2f"),
                f"<= {TARGETS[op]:.2f}",
                ok,
                fmt(ours.peak, ".0f"),
                fmt(peer.peak, ".0f"),
            ]
        )
    return rows


HEADER = [
    "operation",
    "duckmerge s",
    "duckdb-python s",
    "ratio (ours/peer)",
    "target",
    "ok?",
    "duckmerge peak RSS MB",
    "peer peak RSS MB",
]


def plain_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    numeric = [False, True, True, True, False, False, True, True]

    def line(cells):
        return "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)
        ).rstrip()

    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def markdown_table(rows: list[list[str]]) -> str:
    numeric = [False, True, True, True, False, False, True, True]
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    lines += [
        "| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(row)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def later_call_lines(results: dict[str, dict[str, Measurement]]) -> list[str]:
    """One line per operation and side: each run's first call, then the later ones."""
    lines = []
    for op, sides in results.items():
        for side, record in sides.items():
            if not record.later_seconds or record.error:
                continue
            runs = [
                f"{first:.3f} then " + ", ".join(f"{s:.3f}" for s in later)
                for first, later in zip(record.seconds, record.later_seconds)
            ]
            lines.append(f"  {op:<11} {side:<9} " + "; ".join(runs) + " s")
    return lines


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="table rows (default 1,000,000)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per operation and side; best time wins (default 3)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="DuckDB threads on both sides (default 2)"
    )
    parser.add_argument(
        "--memory-limit", default="2GB", help="DuckDB memory_limit on both sides (default 2GB)"
    )
    parser.add_argument(
        "--ops",
        default=",".join(OPERATIONS),
        help=f"comma-separated subset of {','.join(OPERATIONS)}",
    )
    parser.add_argument("--seed", type=int, default=42, help="numpy seed for the data (default 42)")
    parser.add_argument(
        "--workdir", help="where the session folder goes (default: a temp dir, removed after)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (and print where it is)"
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds allowed per run (default 900)"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table as markdown for the README"
    )
    parser.add_argument(
        "--calls",
        type=int,
        default=1,
        help="to_arrow/to_pandas: calls per fresh process; the table reports the first, "
        "the later ones are listed below it (default 1)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--peer-python", metavar="PATH", help=PEER_PYTHON_HELP)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = sorted(set(args.ops) - set(OPERATIONS))
    if unknown:
        parser.error(f"unknown --ops {unknown}; choose from {', '.join(OPERATIONS)}")
    if args.rows < 1 or args.repeat < 1 or args.threads < 1 or args.calls < 1:
        parser.error("--rows, --repeat, --threads and --calls must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0

    found = versions()
    if args.peer_python:
        found["duckdb"] = peer_duckdb_version(args.peer_python)
    missing = [
        name
        for name in ("duckmerge", "duckdb", "pyarrow", "pandas", "numpy")
        if found[name] == "not installed"
    ]
    if missing:
        log(f"handoff.py needs {', '.join(missing)} importable in {sys.executable}")
        return 2

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="duckmerge-handoff-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    session_dir = workdir / "session"
    base = {
        "peer_python": args.peer_python,
        "rows": args.rows,
        "seed": args.seed,
        "threads": args.threads,
        "memory_limit": args.memory_limit,
        "session": str(session_dir),
        "db": str(session_dir / "pipeline_data.duckdb"),
        "calls": args.calls,
    }
    failed = False
    try:
        needs_table = any(op in ("to_arrow", "to_pandas") for op in args.ops)
        if needs_table:
            if session_dir.exists():
                shutil.rmtree(session_dir)
            log(f"building {args.rows:,} x 12 table {TABLE!r} in {session_dir} with duckmerge ...")
            built = spawn({**base, "op": "build", "side": "duckmerge"}, args.timeout)
            if "error" in built:
                log(f"build failed: {built['error']}")
                return 1
            size_mb = Path(base["db"]).stat().st_size / 1e6
            warm_page_cache(Path(base["db"]))
            log(f"built in {built['seconds']:.2f} s; pipeline_data.duckdb is {size_mb:.0f} MB")

        results: dict[str, dict[str, Measurement]] = {}
        for op in args.ops:
            results[op] = {side: Measurement() for side in SIDES}
            for run in range(1, args.repeat + 1):
                # Interleaved, and each side goes first in turn, so drift and a
                # cold cache hit both sides alike.
                for side in SIDES if run % 2 else SIDES[::-1]:
                    record = results[op][side]
                    if record.error:
                        continue
                    spec = {
                        **base,
                        "op": op,
                        "side": side,
                        "out_dir": str(workdir / f"write-{side}-{run}"),
                    }
                    got = spawn(spec, args.timeout)
                    if op == "write_table":
                        shutil.rmtree(spec["out_dir"], ignore_errors=True)
                    if "error" in got:
                        record.error = got["error"]
                        failed = True
                        log(f"{op:<11} {side:<9} run {run}/{args.repeat}: FAILED\n{got['error']}")
                        continue
                    record.seconds.append(got["seconds"])
                    record.peak_rss_mb.append(got["peak_rss_mb"])
                    if got.get("later_seconds"):
                        record.later_seconds.append(got["later_seconds"])
                    log(
                        f"{op:<11} {side:<9} run {run}/{args.repeat}: {got['seconds']:.3f} s, "
                        f"peak RSS {got['peak_rss_mb']:.0f} MB "
                        + (
                            f"(RSS at start {got['start_rss_mb']:.0f} MB; setup peaked at "
                            f"{got['setup_rss_mb']:.0f} MB)"
                            if got["peak_reset"]
                            else "(whole process: no peak reset here)"
                        )
                        + (
                            f"; imported {', '.join(got['imported'])} inside the timed call"
                            if got["imported"]
                            else ""
                        )
                    )
    finally:
        if args.keep:
            log(f"kept {workdir}")
        elif not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            shutil.rmtree(session_dir, ignore_errors=True)

    rows = result_rows(results)
    print()
    print("command:", shlex.join(["python", *sys.argv]))
    print("versions:", ", ".join(f"{name} {version}" for name, version in found.items()))
    print(
        f"data: {args.rows:,} rows x 12 columns, ~{NULL_FRACTION:.0%} NULLs, seed {args.seed}; "
        f"threads={args.threads}, memory_limit={args.memory_limit}; best of {args.repeat} "
        f"fresh-process runs; peak RSS is the highest during the timed call, of the runs"
    )
    print()
    print(plain_table(rows))
    print()
    for op in args.ops:
        ours, peer = CALLS[op]
        print(f"  {op:<11} {ours}  vs  {peer}")
    later_lines = later_call_lines(results)
    if later_lines:
        print()
        print(f"calls after the first in the same process (--calls {args.calls}), per run:")
        for line in later_lines:
            print(line)
    if args.markdown:
        print()
        print(markdown_table(rows))
        print()
        print(
            f"_{args.rows:,} rows x 12 columns (~10% NULLs), threads={args.threads}, "
            f"memory_limit={args.memory_limit}, best of {args.repeat}; "
            + ", ".join(f"{name} {version}" for name, version in found.items())
            + "._"
        )
    for op, sides in results.items():
        for side, record in sides.items():
            if record.error:
                print(f"\n{op} on {side} failed:\n{record.error}")

    missed = any(row[5] == "NO" for row in rows)
    if failed:
        return 1
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
