"""Move DataFrames in and out of a duckmerge session through Arrow.

What it shows:

* ``write_table(name, data)`` from a pandas DataFrame, a polars DataFrame and
  a pyarrow Table (anything exporting the Arrow C stream interface goes in
  through DuckDB's own Arrow scan; it returns the number of rows written);
* ``mode="create"`` (the default: fails if the table exists),
  ``mode="replace"`` (swaps the table in one transaction) and
  ``mode="append"``;
* reading back with ``table(name).to_arrow()``, ``.to_pandas()`` and
  ``.to_polars()``, and handing a result to any Arrow consumer through
  ``__arrow_c_stream__`` (``pyarrow.table(result)``, ``polars.DataFrame(result)``);
* ``sql(...)`` with ``?`` parameters: values are bound, never pasted into SQL;
* a larger load in a session with ``threads=2``: both threads convert and
  compress rows at once, and the table keeps the input's row order.

pandas, polars and pyarrow are all optional: a section whose library is not
installed is skipped with a note. Run it from the repository root::

    python examples/arrow_handoff.py             # temporary session
    python examples/arrow_handoff.py runs/arrow  # keep the session folder
"""

from __future__ import annotations

import datetime as dt
import importlib
import sys
import time

import duckmerge


def optional(module: str):
    """The module, or None (with a note) when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        print(f"-- {module} is not installed: skipping what needs it")
        return None


pd = optional("pandas")
pl = optional("polars")
pa = optional("pyarrow")


def section(title: str) -> None:
    print(f"\n=== {title}")


def from_pandas(ctx: duckmerge.Session) -> None:
    section("pandas -> session -> pyarrow / pandas / polars")
    scores = pd.DataFrame(
        {
            "contact_id": pd.array([1, 2, 3, 4], dtype="Int64"),  # nullable ints stay ints
            "city": ["Praha", "Brno", None, "Ostrava"],
            "score": [0.91, 0.42, float("nan"), 0.77],  # NaN arrives as NULL
            "scored_on": pd.to_datetime(["2024-05-01", "2024-05-02", None, "2024-05-03"]),
        }
    )
    written = ctx.write_table("scores", scores)  # mode="create"
    print(f"write_table('scores', pandas) -> {written} rows")

    result = ctx.table("scores")
    print("columns:", result.columns, "| rows:", len(result))
    if pa is not None:
        table = result.to_arrow()
        print(
            "to_arrow() schema:",
            table.schema.to_string(show_schema_metadata=False).replace("\n", "; "),
        )
    print("to_pandas():")
    print(result.to_pandas().to_string(index=False))
    if pl is not None:
        print("to_polars():")
        print(result.to_polars())

    more = pd.DataFrame(
        {
            "contact_id": pd.array([5, None], dtype="Int64"),
            "city": ["Plzeň", "Zlín"],
            "score": [0.63, 0.18],
            "scored_on": pd.to_datetime(["2024-05-04", "2024-05-04"]),
        }
    )
    written = ctx.write_table("scores", more, mode="append")
    print(
        f"write_table('scores', ..., mode='append') -> {written} rows; now {len(ctx.table('scores'))}"
    )

    top = ctx.sql(
        "SELECT contact_id, city, score FROM scores WHERE score >= ? AND city <> ? ORDER BY score DESC",
        [0.5, "Ostrava"],
    )
    print("sql(... score >= ? AND city <> ?, [0.5, 'Ostrava']):")
    print(top.to_pandas().to_string(index=False))

    fresh = pd.DataFrame(
        {
            "contact_id": pd.array([9], dtype="Int64"),
            "city": ["Liberec"],
            "score": [1.0],
            "scored_on": pd.to_datetime(["2024-06-01"]),
        }
    )
    written = ctx.write_table("scores", fresh, mode="replace")
    print(
        f"write_table('scores', ..., mode='replace') -> {written} row; now {len(ctx.table('scores'))}"
    )


def from_polars(ctx: duckmerge.Session) -> None:
    section("polars -> session -> polars")
    visits = pl.DataFrame(
        {
            "contact_id": [1, 2, 2, None],
            "page": ["/pricing", "/docs", "/pricing", "/"],
            "seconds": [12.5, 48.0, None, 3.2],
            "day": [dt.date(2024, 5, 1), dt.date(2024, 5, 1), dt.date(2024, 5, 2), None],
        }
    )
    written = ctx.write_table("visits", visits)
    print(f"write_table('visits', polars) -> {written} rows")
    print(ctx.table("visits").to_polars())

    per_page = ctx.sql(
        "SELECT page, count(*) AS visits, sum(seconds) AS seconds FROM visits "
        "WHERE day >= ? GROUP BY page ORDER BY page",
        [dt.date(2024, 5, 1)],
    )
    print("sql(... WHERE day >= ?, [date(2024, 5, 1)]).to_polars():")
    print(per_page.to_polars())
    # Any Arrow consumer can take the result through the PyCapsule interface.
    print("polars.DataFrame(result) via __arrow_c_stream__:", pl.DataFrame(per_page).shape)


def from_pyarrow(ctx: duckmerge.Session) -> None:
    section("pyarrow -> session -> pyarrow")
    tags = pa.table(
        {
            "contact_id": pa.array([1, 3, 4], type=pa.int64()),
            "tag": pa.array(["vip", None, "newsletter"]),
        }
    )
    written = ctx.write_table("tags", tags)
    print(f"write_table('tags', pyarrow.Table) -> {written} rows")
    tagged = ctx.sql(
        "SELECT contact_id, tag FROM tags WHERE tag IS NOT NULL AND contact_id <> ? ORDER BY 1", [4]
    )
    print("pyarrow.table(result) via __arrow_c_stream__:")
    print(pa.table(tagged).to_pylist())


def parallel_load() -> None:
    section("600,000 rows with threads=2: a parallel load, input order kept")
    rows = 600_000
    ids = pa.array(range(rows), pa.int64())
    data = pa.table(
        {"id": ids, "bucket": pa.compute.cast(pa.compute.bit_wise_and(ids, 7), pa.int8())}
    )
    with duckmerge.Session(threads=2) as ctx:  # a temporary session of its own
        start = time.perf_counter()
        written = ctx.write_table("big", data)
        seconds = time.perf_counter() - start
        back = ctx.table("big").to_arrow()
        in_order = back.column("id").equals(data.column("id"))
        print(
            f"write_table('big', 600k rows) -> {written} rows in {seconds:.2f} s; same order: {in_order}"
        )


def main(argv: list[str]) -> int:
    session_path = argv[1] if len(argv) > 1 else None
    with duckmerge.Session(session_path) as ctx:
        print(f"duckmerge {duckmerge.__version__}, database {ctx.db_path}")
        if pd is not None and pa is not None:  # pandas goes through pyarrow
            from_pandas(ctx)
        if pl is not None:
            from_polars(ctx)
        if pa is not None:
            from_pyarrow(ctx)
        section("every table, without any DataFrame library")
        for name in ctx.tables():
            result = ctx.table(name)
            print(f"{name}: {len(result)} rows, columns {result.columns}")
            if pa is not None:  # rows as tuples go through pyarrow
                # fetchone/fetchmany stream: only the batch they read is converted.
                print(f"  first row {result.fetchone()}, next two {result.fetchmany(2)}")
    if pa is not None:
        parallel_load()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
