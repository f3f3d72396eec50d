"""Merge the bundled CRM sample with two vendor files in one call.

    python examples/merge_quickstart.py

Matches each of the 200 CRM contacts on email, then phone (national numbers
read as Czech), fills in the vendors' columns, writes ``output/merged.csv``
(git-ignored) and prints the match statistics.
"""

import json
from pathlib import Path

import duckmerge as dm

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"

with dm.merge(
    DATA / "crm.csv",
    [DATA / "vendor_a.csv", DATA / "vendor_b.csv"],
    keys=["email", "phone:phone"],
    default_region="CZ",
    strategy="most_complete",
    output=ROOT / "output" / "merged.csv",
    progress=True,
) as result:
    print(json.dumps(result.stats, indent=2))
    print(f"{result.rows} rows, match rate {result.stats['match_rate']:.1%}, "
          f"written to {result.output_path}")
