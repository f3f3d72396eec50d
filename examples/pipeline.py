"""A three-step pipeline (extract -> SQL -> write) run the way a pipeline host runs it.

What it shows:

* a pipeline as data: a list of steps ``{"id": ..., "component": ...,
  "config": {...}}``, each step optionally naming the step whose table it reads
  (``"input"``);
* the host loop: the driver class comes from ``duckmerge.DRIVERS[component]``
  (``"filesystem.csv_extractor"``, ``"duckdb.processor"``,
  ``"filesystem.csv_writer"``), and every step is
  ``Driver().run(step_id=..., config=..., inputs=..., ctx=session)``;
* one shared ``duckmerge.Session`` as the ctx: each step's table lives in
  ``<session>/pipeline_data.duckdb`` under the step's id (``extract-crm`` is a
  table name like any other, quoted by the drivers);
* what each driver returns: the extractor and the SQL processor
  ``{"table": step_id, "rows": n}``, the writer ``{}``;
* what the session records along the way: ``logs/metrics.jsonl``
  (``rows_read``, ``rows_written``), ``logs/events.jsonl`` (each step's start
  and end) and ``artifacts/<step>/cleaned_config.json``.

The input is the bundled ``examples/data/crm.csv`` (200 contacts); the SQL step
counts contacts per city, and the writer puts the result in
``contacts_by_city.csv`` (columns in alphabetical order: the writer's
``sort_columns`` default) in the output folder. Run it from anywhere::

    python examples/pipeline.py             # output in a new temp folder
    python examples/pipeline.py out/demo    # output in out/demo (created)

``examples/host_ctx.py`` runs the same pipeline with a host's own ctx object
and a duckdb-python connection instead of a ``Session``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import duckmerge

DATA_DIR = Path(__file__).resolve().parent / "data"


def pipeline(out_dir: Path) -> list[dict]:
    """The steps, as a host would load them from a pipeline file."""
    return [
        {
            "id": "extract-crm",
            "component": "filesystem.csv_extractor",
            "config": {"path": str(DATA_DIR / "crm.csv")},
        },
        {
            "id": "contacts-by-city",
            "component": "duckdb.processor",
            "input": "extract-crm",
            "config": {
                # The step id is the table name; a name with "-" needs quotes in SQL.
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
        result = driver_class().run(
            step_id=step["id"], config=step["config"], inputs=inputs, ctx=ctx
        )
        results[step["id"]] = result
        print(f"step {step['id']!r} ({step['component']}, {driver_class.__name__}) -> {result}")
    return results


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1] if len(argv) > 1 else tempfile.mkdtemp(prefix="duckmerge-pipeline-"))
    out_dir = out_dir.resolve()
    print(f"duckmerge {duckmerge.__version__}; input {DATA_DIR / 'crm.csv'}; output in {out_dir}\n")

    with duckmerge.Session() as session:  # a temporary session, removed on close
        run_pipeline(pipeline(out_dir), session)

        print(f"\ntables in {session.db_path}: {session.tables()}")
        print(f"'contacts-by-city' columns: {session.table('contacts-by-city').columns}")
        logs = Path(session.base_path, "logs")
        print("logs/metrics.jsonl:")
        for line in (logs / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            print(f"  {record['metric']} = {record['value']}")
        print("logs/events.jsonl (event, step_id):")
        for line in (logs / "events.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            print(f"  {record['event']}, {record.get('step_id', '-')}")
        configs = Path(session.artifacts_dir).glob("*/cleaned_config.json")
        print(f"artifacts/<step>/cleaned_config.json for: {sorted(p.parent.name for p in configs)}")

    written = out_dir / "contacts_by_city.csv"
    print(f"\n{written}:")
    print(written.read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
