"""Load the bundled sample CSVs into a duckmerge session and summarise them.

What it shows:

* opening a ``duckmerge.Session`` on a folder (or a temporary one that is
  removed on close);
* loading each CSV in ``examples/data/`` with the ``CsvExtractor`` driver
  into a table named after its file stem (``crm``, ``vendor_a``,
  ``vendor_b``) — staging table, swapped in when complete;
* reading the session back: ``tables()``, ``table(name).columns``,
  ``len(table(name))`` and a small sample through ``sql(...).to_pandas()``
  (or ``fetchall()`` when pandas is not installed).

Run it from the repository root::

    python examples/load_samples.py              # temporary session, removed at exit
    python examples/load_samples.py runs/demo    # keeps runs/demo/pipeline_data.duckdb

The session's database stays readable by the ``duckdb`` Python package::

    python -c "import duckdb; print(duckdb.connect('runs/demo/pipeline_data.duckdb', read_only=True).sql('from crm limit 3'))"
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckmerge

DATA_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_ROWS = 3

try:
    import pandas as pd
except ImportError:  # pandas is optional: fall back to plain tuples
    pd = None


def quote_ident(name: str) -> str:
    """A DuckDB identifier, quoted: table names are never pasted in raw."""
    return '"' + name.replace('"', '""') + '"'


def load_csvs(session: duckmerge.Session, folder: Path) -> list[str]:
    """Load every ``*.csv`` in ``folder`` into a table named after its stem."""
    loaded = []
    for path in sorted(folder.glob("*.csv")):
        out = duckmerge.CsvExtractor().run(
            step_id=path.stem, config={"path": str(path)}, inputs=None, ctx=session
        )
        loaded.append(out["table"])
    return loaded


def print_summary(session: duckmerge.Session, tables: list[str]) -> None:
    if pd is not None:
        pd.set_option("display.width", 160)
        pd.set_option("display.max_columns", 20)
    for table in tables:
        result = session.table(table)
        columns = result.columns
        print(f"\n== {table}: {len(result)} rows x {len(columns)} columns")
        print("   columns:", ", ".join(columns))
        sample = session.sql(f"SELECT * FROM {quote_ident(table)} LIMIT ?", [SAMPLE_ROWS])
        if pd is not None:
            print(sample.to_pandas().to_string(index=False))
        else:
            for row in sample.fetchall():
                print("  ", row)


def main(argv: list[str]) -> int:
    session_path = argv[1] if len(argv) > 1 else None  # None: a temporary session
    with duckmerge.Session(session_path) as session:
        loaded = load_csvs(session, DATA_DIR)
        if not loaded:
            print(f"no CSV files in {DATA_DIR}", file=sys.stderr)
            return 1
        print(f"duckmerge {duckmerge.__version__}, session {session.session_id}")
        print(f"database: {session.db_path}")
        tables = session.tables()
        print("tables:", ", ".join(tables))
        print_summary(session, tables)
        if session_path is None:
            print("\n(temporary session: removed on close; pass a folder to keep it)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
