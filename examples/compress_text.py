"""``compress_text: false``: a faster load for a larger session file.

DuckDB compresses every text column it stores (dictionary or FSST), and on a
wide CSV that analysis is most of a load's time after parsing. The
CsvExtractor option ``compress_text: false`` (also on a merge's file sources
and its ``output``) stores text uncompressed instead. The values and types
are the same; only the time and the file size change.

This script writes a CRM-like CSV (``benches/gen_crm.py``, 300,000 rows by
default, about 45 MB) into a temp folder, loads it into two sessions, once
each way, and prints the load time, the session file's size and whether the
two tables are equal::

    python examples/compress_text.py            # 300,000 rows
    python examples/compress_text.py 1000000    # the benchmark's size
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import duckmerge

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))

import gen_crm  # noqa: E402 (benches/ is on sys.path)


def load(folder: Path, csv: Path, compress_text: bool) -> tuple[float, int, object]:
    """Loads ``csv`` into a new session; returns seconds, file bytes, the table."""
    with duckmerge.Session(folder, threads=2) as session:
        started = time.perf_counter()
        duckmerge.CsvExtractor().run(
            step_id="contacts",
            config={"path": str(csv), "compress_text": compress_text},
            ctx=session,
        )
        seconds = time.perf_counter() - started
        table = session.table("contacts").to_arrow()
    return seconds, (folder / "pipeline_data.duckdb").stat().st_size, table


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory(prefix="duckmerge-compress-text-") as tmp:
        csv = Path(tmp) / "contacts.csv"
        gen_crm.generate(csv, rows, seed=1)
        print(f"{csv.name}: {rows:,} rows, {csv.stat().st_size / 1e6:.0f} MB")
        results = {}
        for compress_text in (True, False):
            seconds, size, table = load(Path(tmp) / f"s-{compress_text}", csv, compress_text)
            results[compress_text] = table
            print(
                f"compress_text={str(compress_text).lower():<5}  load {seconds:5.2f} s  "
                f"session file {size / 1e6:5.0f} MB"
            )
        print("same table both ways:", results[True].equals(results[False]))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300_000)
