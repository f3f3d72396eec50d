"""The pipeline of ``examples/pipeline.py``, with a host's own ctx instead of a Session.

What it shows:

* the drivers are drop-in for a pipeline host that already has its own
  context object (Osiris-style runners): all they need is a
  ``get_db_connection()`` returning a **duckdb-python** connection
  (``duckdb.connect(path)``); the core then runs the same SQL through that
  connection, so every step's table lands in the host's database file;
* ``ctx.log_metric(name, value)`` and ``ctx.log_event(event, **data)`` are
  called when the ctx has them -- here they print what they receive
  (``rows_read``, ``rows_written``, ``extract_start``, ``sql_complete``, ...);
* ``ctx.base_path``: relative input paths resolve against it, so the
  extractor's ``"path": "crm.csv"`` finds ``examples/data/crm.csv`` whatever
  the working directory;
* the host reads the results back with its own connection afterwards.

The ctx here is a minimal stand-in for a host's (about 20 lines): no duckmerge
``Session`` is involved. Run it from anywhere::

    python examples/host_ctx.py             # database and output in a new temp folder
    python examples/host_ctx.py out/host    # ... in out/host (created)

The database, ``<output>/pipeline_data.duckdb``, is a plain DuckDB file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import duckdb

import duckmerge

DATA_DIR = Path(__file__).resolve().parent / "data"


class HostContext:
    """What a pipeline host passes to its components as ``ctx``."""

    def __init__(self, db_path: Path, base_path: Path) -> None:
        self.base_path = str(base_path)  # relative inputs resolve here
        self._db_path = str(db_path)
        self._con: duckdb.DuckDBPyConnection | None = None

    def get_db_connection(self) -> duckdb.DuckDBPyConnection:
        """One connection for the whole run, opened on first use."""
        if self._con is None:
            self._con = duckdb.connect(self._db_path)
        return self._con

    def log_metric(self, name: str, value: object) -> None:
        print(f"    ctx.log_metric({name!r}, {value!r})")

    def log_event(self, event: str, **data: object) -> None:
        fields = ", ".join(f"{key}={value!r}" for key, value in data.items())
        print(f"    ctx.log_event({event!r}, {fields})")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def pipeline(out_dir: Path) -> list[dict]:
    return [
        {
            "id": "extract-crm",
            "component": "filesystem.csv_extractor",
            "config": {"path": "crm.csv"},  # relative: found in ctx.base_path
        },
        {
            "id": "contacts-by-city",
            "component": "duckdb.processor",
            "input": "extract-crm",
            "config": {
                "query": """
                    SELECT coalesce(city, '(unknown)') AS city,
                           count(*)                    AS contacts,
                           count(email)                AS with_email,
                           count(phone)                AS with_phone,
                           min(created_at)             AS first_created
                    FROM "extract-crm"
                    GROUP BY ALL
                    ORDER BY contacts DESC, city
                """
            },
        },
        {
            "id": "write-contacts-by-city",
            "component": "filesystem.csv_writer",
            "input": "contacts-by-city",
            "config": {"path": str(out_dir / "contacts_by_city.csv")},
        },
    ]


def run_pipeline(steps: list[dict], ctx: object) -> dict[str, dict]:
    """The host loop: resolve each component, run it, keep its result."""
    results: dict[str, dict] = {}
    for step in steps:
        driver_class = duckmerge.DRIVERS[step["component"]]
        upstream = step.get("input")
        inputs = {"table": results[upstream]["table"]} if upstream else None
        print(f"step {step['id']!r} ({step['component']}):")
        result = driver_class().run(
            step_id=step["id"], config=step["config"], inputs=inputs, ctx=ctx
        )
        results[step["id"]] = result
        print(f"  -> {result}")
    return results


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1] if len(argv) > 1 else tempfile.mkdtemp(prefix="duckmerge-host-"))
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    db_path = out_dir / "pipeline_data.duckdb"
    print(f"duckmerge {duckmerge.__version__}, duckdb-python {duckdb.__version__}")
    print(f"ctx.base_path = {DATA_DIR}; database {db_path}\n")

    ctx = HostContext(db_path, base_path=DATA_DIR)
    try:
        run_pipeline(pipeline(out_dir), ctx)

        con = ctx.get_db_connection()
        tables = con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
        ).fetchall()
        print(f"\nthe host's database now holds: {[name for (name,) in tables]}")
        (crm_rows,) = con.execute('SELECT count(*) FROM "extract-crm"').fetchone()
        print(f'SELECT count(*) FROM "extract-crm" -> {crm_rows}')
    finally:
        ctx.close()

    written = out_dir / "contacts_by_city.csv"
    print(f"\n{written}:")
    print(written.read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
