"""A notebook-style walkthrough of ``duckmerge.merge()`` on the bundled samples.

Cells are marked ``# %%``: open the file in VS Code / PyCharm / Jupytext as a
notebook, or run it start to end as a script::

    python examples/notebook_walkthrough.py

In a notebook, a cell ending with ``result`` renders the merge summary
(``MergeResult._repr_html_``: match rates per key and per source, conflicts,
the first rows); as a script the same facts are printed.

Everything written (the session folder, the Parquet file) goes into a
temporary folder that is removed at the end.
"""

# %% Setup: where the sample files are, and a scratch folder
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

import duckmerge as dm

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 20)

DATA = Path(__file__).resolve().parent / "data"
WORK = Path(tempfile.mkdtemp(prefix="duckmerge-walkthrough-"))
print(f"duckmerge {dm.__version__}; scratch folder {WORK}")

# %% The inputs: a CRM export and two vendor files
# crm.csv is the "original": every one of its rows is in the output, in order.
# The vendor files are "enriched" sources: noisy emails (case, spaces), phones
# written as +420 601 111 222 / 00420601111222 / 601-111-222, duplicates and
# strangers nobody in the CRM matches.
for name in ("crm.csv", "vendor_a.csv", "vendor_b.csv"):
    frame = pd.read_csv(DATA / name, dtype=str)
    print(f"\n{name}: {len(frame)} rows, columns {list(frame.columns)}")
    print(frame.head(3).to_string(index=False))

# %% Merge: email first, then phone (national numbers read as Czech)
# session=<folder> keeps the DuckDB session on disk: running the same merge
# again in that folder reuses it. progress=True shows a tqdm bar (or plain
# lines on stderr when tqdm is not installed).
result = dm.merge(
    DATA / "crm.csv",
    [DATA / "vendor_a.csv", DATA / "vendor_b.csv"],
    keys=["email", "phone:phone"],
    default_region="CZ",
    strategy="most_complete",
    session=WORK / "session",
    progress=True,
)
print(result)  # in a notebook, end the cell with `result` for the HTML summary

# %% Statistics: how much matched, on which key, from which vendor
stats = result.stats
print(f"{stats['matched']} of {stats['rows_original']} CRM rows matched "
      f"({stats['match_rate']:.1%}); output has {stats['rows_output']} rows")
per_key = pd.Series(stats["matched_per_key"], name="matched").to_frame()
per_key["share of CRM rows"] = (per_key["matched"] / stats["rows_original"]).map("{:.1%}".format)
print("\nmatches per key:\n", per_key.to_string())
per_source = pd.DataFrame({
    "rows": stats["rows_per_source"],
    "duplicates collapsed": stats["duplicates_collapsed"],
    "rows matching nobody": stats["unmatched_enriched"],
})
if "matched_per_source" in stats:  # CRM rows each vendor contributed to
    per_source["CRM rows enriched"] = pd.Series(stats["matched_per_source"])
print("\nper vendor:\n", per_source.to_string())
print("\nconflicting values per field:", stats["conflicts"])

# %% The merged table in pandas
merged = result.to_pandas()
print(merged["_match_status"].value_counts().to_string())
print(merged[merged["_match_status"] == "matched"]
      [["id", "email", "company", "job_title", "industry", "_match_key", "_match_sources"]]
      .head(5).to_string(index=False))

# %% Who did not match?
# CRM contacts without any vendor data ...
crm_unmatched = merged[merged["_match_status"] == "unmatched"]
print(f"{len(crm_unmatched)} CRM rows found in no vendor file, e.g.:")
print(crm_unmatched[["id", "email", "phone"]].head(5).to_string(index=False))
# ... and vendor rows that matched no CRM contact (table <name>__unmatched).
vendor_unmatched = result.unmatched().to_pandas()
print(f"\n{len(vendor_unmatched)} vendor rows matched nobody; per source:")
print(vendor_unmatched.groupby("source").size().to_string())
print(vendor_unmatched[["source", "email", "phone"]].head(5).to_string(index=False))

# %% SQL on the same session
print(result.session.sql(
    f'SELECT _match_key, count(*) AS n FROM "{result.table}" GROUP BY ALL ORDER BY n DESC'
).to_pandas().to_string(index=False))

# %% Write Parquet and read it back
parquet_path = result.write_parquet(WORK / "merged.parquet")
back = pd.read_parquet(parquet_path)
print(f"wrote {parquet_path}: {len(back)} rows, {len(back.columns)} columns")
assert len(back) == result.rows

# %% Clean up: close the session and remove the scratch folder
result.close()
shutil.rmtree(WORK)
print("done")
