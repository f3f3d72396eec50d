"""A merge stays within memory_limit when vendor rows carry wide text.

Two of match_merge's statements sort rows back into order with their text:
each field's picked values (into the original's row order) and the
unmatched vendor rows (into the source's row order, for
``<step>__unmatched``). With 150,000 values of 300 characters (~45 MB) at a
64MB memory_limit, one sort each ran out of memory ("failed to pin block"),
as did the window that ranks rows under ``most_frequent``. All three now
work in slices sized from the values' measured width and the memory_limit;
these tests pin that the merge completes and that the slicing keeps every
row, in order.
"""

from __future__ import annotations

from pathlib import Path

from collections.abc import Iterable
from typing import Any

import duckmerge
import pyarrow as pa

ROWS = 150_000
NOTE = "n" * 300
CONFIG = {"original": "crm", "enriched": ["vendor"], "keys": ["email"]}


def notes(indexes: Iterable[int]) -> list[str]:
    return [f"{NOTE}{i}" for i in indexes]


def session_with(tmp_path: Path, original: pa.Table, vendor: pa.Table) -> duckmerge.Session:
    """A session at a 64MB memory_limit holding ``crm`` and ``vendor``."""
    s = duckmerge.Session(tmp_path / "s", memory_limit="64MB", threads=2)
    s.write_table("crm", original)
    s.write_table("vendor", vendor)
    return s


def merge(s: duckmerge.Session) -> dict[str, Any]:
    return duckmerge.MergeDriver().run(step_id="merged", config=CONFIG, ctx=s)


def test_wide_picked_values_at_a_small_memory_limit(tmp_path: Path) -> None:
    """Every original row matches one vendor row with a 300-character note:
    the output carries each row's own note, in the original's order."""
    original = pa.table({"id": list(range(ROWS)), "email": [f"u{i}@x.cz" for i in range(ROWS)]})
    vendor = pa.table({"email": [f" U{i}@X.cz" for i in range(ROWS)], "note": notes(range(ROWS))})
    with session_with(tmp_path, original, vendor) as s:
        result = merge(s)
        assert result["stats"]["matched"] == ROWS
        out = s.sql("SELECT id, note FROM merged").to_arrow()
        assert out.column("id").to_pylist() == list(range(ROWS))
        assert out.column("note").to_pylist() == notes(range(ROWS))


def test_wide_unmatched_rows_at_a_small_memory_limit(tmp_path: Path) -> None:
    """No vendor row matches: all 150,000 rows, 300-character notes and all,
    land in ``merged__unmatched`` in the vendor file's row order."""
    original = pa.table({"id": list(range(1000)), "email": [f"u{i}@x.cz" for i in range(1000)]})
    vendor = pa.table(
        {"email": [f"nobody{i}@y.cz" for i in range(ROWS)], "note": notes(range(ROWS))}
    )
    with session_with(tmp_path, original, vendor) as s:
        result = merge(s)
        assert result["stats"]["matched"] == 0
        assert result["stats"]["unmatched_enriched"] == {"vendor": ROWS}
        rows = s.sql("SELECT source, email, note FROM merged__unmatched").to_arrow()
        assert rows.column("source").to_pylist() == ["vendor"] * ROWS
        assert rows.column("email").to_pylist() == [f"nobody{i}@y.cz" for i in range(ROWS)]
        assert rows.column("note").to_pylist() == notes(range(ROWS))


def test_wide_unmatched_rows_after_deletes_keep_every_row(tmp_path: Path) -> None:
    """A vendor table with deleted rows (row numbers with gaps) sliced the
    same way: the unmatched rows are exactly the remaining ones, in order."""
    vendor = pa.table(
        {"email": [f"nobody{i}@y.cz" for i in range(ROWS)], "note": notes(range(ROWS))}
    )
    original = pa.table({"id": [1], "email": ["u1@x.cz"]})
    with session_with(tmp_path, original, vendor) as s:
        s.execute("DELETE FROM vendor WHERE email LIKE 'nobody%3@y.cz'")
        kept = [i for i in range(ROWS) if i % 10 != 3]
        merge(s)
        rows = s.sql("SELECT email, note FROM merged__unmatched").to_arrow()
        assert rows.column("email").to_pylist() == [f"nobody{i}@y.cz" for i in kept]
        assert rows.column("note").to_pylist() == notes(kept)


def test_wide_values_under_a_windowed_strategy(tmp_path: Path) -> None:
    """``most_frequent`` ranks the contributing rows with a window that holds
    them, wide values included: two vendors with the same 300-character
    notes, 300,000 contributing rows at 64MB. Each row still gets its note."""
    original = pa.table({"id": list(range(ROWS)), "email": [f"u{i}@x.cz" for i in range(ROWS)]})
    vendor = pa.table({"email": [f"u{i}@x.cz" for i in range(ROWS)], "note": notes(range(ROWS))})
    with session_with(tmp_path, original, vendor) as s:
        s.write_table("vendor2", vendor)
        config = {**CONFIG, "enriched": ["vendor", "vendor2"], "strategy": "most_frequent"}
        result = duckmerge.MergeDriver().run(step_id="merged", config=config, ctx=s)
        assert result["stats"]["matched"] == ROWS
        out = s.sql("SELECT id, note FROM merged").to_arrow()
        assert out.column("id").to_pylist() == list(range(ROWS))
        assert out.column("note").to_pylist() == notes(range(ROWS))


def test_wide_csv_files_at_a_small_memory_limit(tmp_path: Path) -> None:
    """CSV in, CSV out at 64MB: DuckDB's CSV reader holds a 32 MB buffer per
    thread by default, which made loading a 47 MB file of 300-character
    fields fail; the extractor sizes it from the memory_limit. Half the
    vendor rows match; the output file has every original row with its
    note, in order, and the other half lands in ``merged__unmatched``."""
    import pyarrow.csv as pcsv

    crm, ven, out = tmp_path / "crm.csv", tmp_path / "vendor.csv", tmp_path / "out.csv"
    bios = [f"{NOTE} bio, \"quoted\" {i}" for i in range(ROWS)]
    pcsv.write_csv(
        pa.table({"id": list(range(ROWS)), "email": [f"u{i}@x.cz" for i in range(ROWS)],
                  "bio": bios}),
        crm,
    )
    pcsv.write_csv(
        pa.table({"email": [f"U{i}@x.cz " if i % 2 else f"nobody{i}@y.cz" for i in range(ROWS)],
                  "note": notes(range(ROWS))}),
        ven,
    )
    config = {"original": {"path": str(crm)}, "enriched": [{"path": str(ven), "name": "vendor"}],
              "keys": ["email"], "output": {"path": str(out)}}
    with duckmerge.Session(tmp_path / "s", memory_limit="64MB", threads=2) as s:
        result = duckmerge.MergeDriver().run(step_id="merged", config=config, ctx=s)
        assert result["stats"]["matched"] == ROWS // 2
        assert result["stats"]["unmatched_enriched"] == {"vendor": ROWS // 2}
        unmatched = s.sql("SELECT note FROM merged__unmatched").to_arrow()
        assert unmatched.column("note").to_pylist() == notes(range(0, ROWS, 2))
    written = pcsv.read_csv(out, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
    assert written.column("id").to_pylist() == list(range(ROWS))
    assert written.column("bio").to_pylist() == bios
    assert written.column("note").to_pylist() == [
        f"{NOTE}{i}" if i % 2 else None for i in range(ROWS)
    ]
