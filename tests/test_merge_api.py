"""``duckmerge.merge()`` and ``MergeResult``: sources of every kind, keys
shorthand, output files, progress reporting, session ownership, errors and
the notebook summary."""

from __future__ import annotations

import gc
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import duckdb
import duckmerge
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

STAGES = ["import_original", "import_enriched", "consolidate", "match_merge", "export"]

CRM_CSV = """id,email,phone,city
5,ann@x.cz,,Brno
3,,+420 601 111 222,
9,cy@x.cz,,
1,bob@x.cz,,Praha
"""

VENDOR_CSV = """email,phone,title,city
 ANN@x.cz,,CEO,Olomouc
,601-111-222,CTO,Ostrava
nobody@x.cz,,Dev,Plzen
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """``crm.csv`` (ids 5, 3, 9, 1, in that order) and ``vendor.csv`` in tmp_path."""
    crm = tmp_path / "crm.csv"
    vendor = tmp_path / "vendor.csv"
    crm.write_text(CRM_CSV, encoding="utf-8")
    vendor.write_text(VENDOR_CSV, encoding="utf-8")
    return crm, vendor


def crm_table() -> pa.Table:
    return pa.table({
        "id": [5, 3, 9, 1],
        "email": ["ann@x.cz", None, "cy@x.cz", "bob@x.cz"],
        "phone": [None, "+420 601 111 222", None, None],
        "city": ["Brno", None, None, "Praha"],
    })


def vendor_table() -> pa.Table:
    return pa.table({
        "email": [" ANN@x.cz", None, "nobody@x.cz"],
        "phone": [None, "601-111-222", None],
        "title": ["CEO", "CTO", "Dev"],
        "city": ["Olomouc", "Ostrava", "Plzen"],
    })


KEYS = ["email", "phone:phone"]


def by_id(res: duckmerge.MergeResult) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in res.to_arrow().to_pylist()}


# -- sources ---------------------------------------------------------------


def test_csv_paths_keep_every_original_row_in_order(files):
    crm, vendor = files
    with duckmerge.merge(str(crm), [str(vendor)], keys=KEYS, default_region="CZ") as res:
        assert res.rows == 4 and len(res) == 4
        assert res.to_pandas()["id"].tolist() == [5, 3, 9, 1]
        stats = res.stats
        for key in ("rows_original", "rows_output", "rows_per_source", "matched",
                    "matched_per_key", "match_rate", "unmatched_enriched", "conflicts",
                    "values_filled", "duplicates_collapsed"):
            assert key in stats, key
        assert stats["rows_original"] == stats["rows_output"] == 4
        assert stats["rows_per_source"] == {"vendor": 3}  # named after the file stem
        assert stats["matched_per_key"] == {"email": 1, "phone": 1}
        assert stats["match_rate"] == pytest.approx(0.5)
        rows = by_id(res)
        assert (rows[5]["title"], rows[5]["city"]) == ("CEO", "Brno")  # fill keeps the CRM city
        assert (rows[3]["title"], rows[3]["city"]) == ("CTO", "Ostrava")
        assert rows[9]["_match_status"] == "unmatched" and rows[9]["title"] is None
        assert res.table == "merged" and res.output_path is None


def test_relative_and_pathlike_paths_resolve_against_the_working_directory(
    files, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with duckmerge.merge("crm.csv", Path("vendor.csv"), keys=["email"]) as res:
        assert res.rows == 4
        assert res.stats["rows_per_source"] == {"vendor": 3}


def test_table_names_in_a_given_session(session):
    session.write_table("crm", crm_table())
    session.write_table("va", vendor_table())
    res = duckmerge.merge("crm", ["va"], keys=KEYS, default_region="CZ", session=session,
                          name="joined")
    assert res.session is session
    assert res.table == "joined" and "joined" in session.tables()
    assert res.stats["rows_per_source"] == {"va": 3}
    assert [r[0] for r in session.sql("SELECT id FROM joined").fetchall()] == [5, 3, 9, 1]


def test_dataframes_of_every_kind_are_loaded_into_named_input_tables(session):
    res = duckmerge.merge(
        crm_table().to_pandas(),
        [pl.from_arrow(vendor_table()), vendor_table().select(["email", "title"])],
        keys=["email"], session=session,
    )
    assert res.rows == 4
    assert res.to_pandas()["id"].tolist() == [5, 3, 9, 1]
    assert res.stats["rows_per_source"] == {"source_1": 3, "source_2": 3}
    tables = set(session.tables())
    assert {"merged__input_original", "merged__input_1", "merged__input_2"} <= tables
    assert by_id(res)[5]["_match_sources"] == ["source_1", "source_2"]


def test_a_single_dataframe_source_and_a_dict_with_data_and_name(session):
    res = duckmerge.merge(
        {"data": crm_table(), "name": "crm_export"},
        {"data": vendor_table().to_pandas(), "name": "acme"},
        keys=["email"], session=session,
    )
    assert res.stats["rows_per_source"] == {"acme": 3}
    assert by_id(res)[5]["_match_sources"] == ["acme"]


def test_source_dicts_pass_through_to_the_driver(tmp_path):
    crm = tmp_path / "crm.txt"
    crm.write_text(CRM_CSV.replace(",", ";"), encoding="utf-8")
    vendor = tmp_path / "vendor.csv"
    vendor.write_text(VENDOR_CSV, encoding="utf-8")
    with duckmerge.merge({"path": str(crm), "delimiter": ";"},
                         [{"path": str(vendor), "name": "vendor_x"}], keys=["email"]) as res:
        assert res.to_pandas()["id"].tolist() == [5, 3, 9, 1]
        assert res.stats["rows_per_source"] == {"vendor_x": 3}


def test_parquet_paths_are_loaded(tmp_path, session):
    pq.write_table(crm_table(), tmp_path / "crm.parquet")
    pq.write_table(vendor_table(), tmp_path / "vendor_p.parquet")
    res = duckmerge.merge(tmp_path / "crm.parquet", [tmp_path / "vendor_p.parquet"],
                          keys=["email"], session=session)
    assert res.to_pandas()["id"].tolist() == [5, 3, 9, 1]
    assert res.stats["rows_per_source"] == {"vendor_p": 3}
    assert by_id(res)[5]["title"] == "CEO"


# -- keys ------------------------------------------------------------------


def test_phone_shorthand_with_default_region_matches_national_numbers(files):
    crm, vendor = files
    with duckmerge.merge(crm, vendor, keys=["email", "phone:phone"],
                         default_region="CZ") as res:
        row = by_id(res)[3]
        assert (row["_match_status"], row["_match_key"], row["title"]) == (
            "matched", "phone", "CTO")
    # Without the region "601-111-222" is not a full number: no match.
    with duckmerge.merge(crm, vendor, keys=["email", "phone:phone"]) as res:
        assert by_id(res)[3]["_match_status"] == "unmatched"


def test_default_region_also_reaches_phone_keys_given_by_name_or_dict(files):
    crm, vendor = files
    for keys in (["email", "phone"], ["email", {"column": "phone"}],
                 ["email", {"column": "phone", "normalize": "phone"}]):
        with duckmerge.merge(crm, vendor, keys=keys, default_region="CZ") as res:
            assert by_id(res)[3]["_match_key"] == "phone", keys
    # A key's own region wins over default_region (SK does not read 601… as +420).
    with duckmerge.merge(crm, vendor, default_region="CZ", keys=[
            {"column": "phone", "normalize": "phone", "default_region": "SK"}]) as res:
        assert by_id(res)[3]["_match_status"] == "unmatched"


def test_merge_options_reach_the_driver(files):
    crm, vendor = files
    with duckmerge.merge(crm, vendor, keys=KEYS, default_region="CZ",
                         on_conflict="overwrite", fields=["city"]) as res:
        rows = by_id(res)
        assert rows[5]["city"] == "Olomouc"
        assert "title" not in res.to_arrow().column_names


# -- output ----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_output_path_is_written_with_every_row(files, tmp_path, suffix):
    crm, vendor = files
    target = tmp_path / "out" / f"merged{suffix}"
    with duckmerge.merge(crm, vendor, keys=KEYS, output=target) as res:
        assert res.output_path == str(target)
        assert target.is_file()
        reader = "read_csv" if suffix == ".csv" else "read_parquet"
        ids = duckdb.sql(f"SELECT id FROM {reader}(?)", params=[str(target)]).fetchall()
        assert [i[0] for i in ids] == [5, 3, 9, 1]


def test_write_csv_and_write_parquet_round_trip(files, tmp_path):
    crm, vendor = files
    with duckmerge.merge(crm, vendor, keys=KEYS, default_region="CZ") as res:
        expected = res.to_pandas()
        csv_path = res.write_csv(tmp_path / "m.csv")
        assert csv_path == str(tmp_path / "m.csv")
        back = pd.read_csv(csv_path)
        assert list(back.columns) == list(expected.columns)  # table order, not sorted
        assert back["id"].tolist() == [5, 3, 9, 1]
        assert back["title"].tolist()[:2] == ["CEO", "CTO"]

        parquet_path = res.write_parquet(tmp_path / "sub" / "m.parquet")
        table = pq.read_table(parquet_path)
        assert table.to_pylist() == res.to_arrow().to_pylist()

        res.write_csv(tmp_path / "semi.csv", delimiter=";", columns=["id", "title"])
        assert (tmp_path / "semi.csv").read_text().splitlines()[:2] == ["id;title", "5;CEO"]


def test_arrow_stream_polars_and_unmatched(files):
    crm, vendor = files
    with duckmerge.merge(crm, vendor, keys=KEYS, default_region="CZ") as res:
        assert pa.table(res).num_rows == 4
        assert pl.DataFrame(res)["id"].to_list() == [5, 3, 9, 1]
        assert res.to_polars().height == 4
        unmatched = res.unmatched().to_pandas()
        assert unmatched["email"].tolist() == ["nobody@x.cz"]
        assert unmatched["source"].tolist() == ["vendor"]


# -- progress --------------------------------------------------------------


def test_progress_callable_receives_the_five_stages_in_order(files):
    crm, vendor = files
    events: list[dict[str, Any]] = []
    with duckmerge.merge(crm, vendor, keys=KEYS, progress=events.append) as res:
        stage_events = [e for e in events if e["event"] == "merge_progress"]
        assert [e["stage"] for e in stage_events] == STAGES
        assert [e["stage_index"] for e in stage_events] == [1, 2, 3, 4, 5]
        for e in stage_events:
            assert e["stage_count"] == 5
            assert {"percent", "rows", "message"} <= e.keys()
        assert stage_events[-1]["percent"] == 100
        assert {e["event"] for e in events} <= {"merge_progress", "progress"}
        assert res.rows == 4


def read_events(base_path: str) -> list[dict[str, Any]]:
    with open(os.path.join(base_path, "logs", "events.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("progress", [False, "callback"])
def test_events_still_land_in_the_session_log(files, session, progress):
    crm, vendor = files
    seen: list[dict[str, Any]] = []
    duckmerge.merge(crm, vendor, keys=KEYS, session=session,
                    progress=seen.append if progress else False)
    logged = read_events(session.base_path)
    stages = [e["stage"] for e in logged if e["event"] == "merge_progress"]
    assert stages == STAGES
    assert [e["event"] for e in logged].count("merge_complete") == 1
    assert len(seen) >= (5 if progress else 0)


def test_progress_true_without_tqdm_prints_plain_lines(files, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    crm, vendor = files
    with duckmerge.merge(crm, vendor, keys=KEYS, default_region="CZ", progress=True):
        pass
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("[duckmerge] ")]
    assert [ln.split()[1] for ln in lines] == STAGES
    assert lines[0].startswith("[duckmerge] import_original 1/5 (20%) ")
    assert lines[3] == "[duckmerge] match_merge 4/5 (80%) Matched 2 rows (50.0% match rate)"


def test_progress_true_uses_tqdm_when_installed(files, capsys):
    pytest.importorskip("tqdm")
    crm, vendor = files
    with duckmerge.merge(crm, vendor, keys=KEYS, progress=True):
        pass
    err = capsys.readouterr().err
    assert "[duckmerge]" not in err
    assert "5/5" in err and "stage" in err
    assert "match_merge" in err and "rows=" in err


class FakeBar:
    """Records what ``merge`` does with a tqdm bar."""

    instances: list[FakeBar] = []

    def __init__(self, total: int, **kwargs: Any) -> None:
        self.total, self.n, self.closed = total, 0, False
        self.descriptions: list[str] = []
        FakeBar.instances.append(self)

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.descriptions.append(desc)

    def set_postfix(self, refresh: bool = True, **kwargs: Any) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_tqdm(monkeypatch):
    FakeBar.instances = []
    module = types.ModuleType("tqdm.auto")
    module.tqdm = FakeBar  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tqdm.auto", module)
    return FakeBar


def test_the_tqdm_bar_follows_the_stages_and_is_closed(files, fake_tqdm):
    crm, vendor = files
    duckmerge.merge(crm, vendor, keys=KEYS, progress=True).close()
    (bar,) = fake_tqdm.instances
    assert bar.total == 5 and bar.n == 5 and bar.closed
    assert bar.descriptions == STAGES


def test_the_tqdm_bar_is_closed_when_the_merge_fails(files, fake_tqdm):
    crm, vendor = files
    with pytest.raises(duckmerge.ConfigError, match="not in the original"):
        duckmerge.merge(crm, vendor, keys=["fax"], progress=True)
    (bar,) = fake_tqdm.instances
    assert bar.closed


def test_a_failing_progress_callback_is_logged_and_the_merge_completes(files, caplog):
    crm, vendor = files

    def broken(event: dict[str, Any]) -> None:
        raise ValueError("callback bug")

    with duckmerge.merge(crm, vendor, keys=KEYS, progress=broken) as res:
        assert res.rows == 4
    failures = [r for r in caplog.records if "progress handler failed" in r.getMessage()]
    assert len(failures) == 5 and "callback bug" in str(failures[0].exc_info[1])


def test_ctrl_c_inside_a_progress_callback_is_not_lost(files, tmp_path, monkeypatch):
    # The driver ignores errors raised by ctx.log_event; merge() re-raises a
    # KeyboardInterrupt that arrived there once the driver returns.
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    crm, vendor = files
    calls: list[str] = []

    def interrupted(event: dict[str, Any]) -> None:
        calls.append(event["event"])
        if event.get("stage") == "consolidate":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        duckmerge.merge(crm, vendor, keys=KEYS, progress=interrupted)
    assert calls.count("merge_progress") >= 3
    assert list(temp.iterdir()) == [] and info.tb is not None


def test_plain_lines_for_progress_within_a_stage_are_throttled(monkeypatch):
    from duckmerge._merge import _LineSink

    lines: list[str] = []
    sink = _LineSink()
    monkeypatch.setattr(sink, "_write", lines.append)
    monkeypatch.setattr(_LineSink, "DETAIL_INTERVAL", 0.0)
    sink("progress", {"step_id": "merged", "percent": 42.4, "rows": 1000})
    assert lines == ["[duckmerge] merged: 42% (1000 rows)"]
    monkeypatch.setattr(_LineSink, "DETAIL_INTERVAL", 3600.0)
    sink("progress", {"step_id": "merged", "percent": 50.0, "rows": 2000})
    sink("merge_start", {"step_id": "merged"})
    assert len(lines) == 1


def test_bad_progress_argument(files):
    crm, vendor = files
    with pytest.raises(TypeError, match="progress"):
        duckmerge.merge(crm, vendor, keys=KEYS, progress="yes")


# -- session ownership -----------------------------------------------------


def test_a_temporary_session_is_removed_on_close_and_then_unusable(files):
    crm, vendor = files
    res = duckmerge.merge(crm, vendor, keys=KEYS)
    base = res.session.base_path
    assert os.path.isdir(base)
    res.close()
    assert not os.path.exists(base)
    res.close()  # twice is fine
    assert res.closed and "closed" in repr(res)
    with pytest.raises(duckmerge.MergeResultClosedError, match="closed"):
        res.to_pandas()
    with pytest.raises(ValueError, match="closed"):
        res.write_csv("never.csv")
    assert not os.path.exists("never.csv")


def test_a_with_block_and_garbage_collection_remove_the_temporary_session(files):
    crm, vendor = files
    with duckmerge.merge(crm, vendor, keys=KEYS) as res:
        base = res.session.base_path
        assert os.path.isdir(base)
    assert not os.path.exists(base)

    res = duckmerge.merge(crm, vendor, keys=KEYS)
    base = res.session.base_path
    table = res.to_arrow()
    del res
    gc.collect()
    assert not os.path.exists(base)
    assert table.column("id").to_pylist() == [5, 3, 9, 1]  # data read before stays valid


def test_a_given_session_stays_open(files, session):
    crm, vendor = files
    with duckmerge.merge(crm, vendor, keys=KEYS, session=session) as res:
        pass
    assert res.closed and not session.closed
    assert session.sql("SELECT count(*) FROM merged").fetchone() == (4,)
    # the driver got the Session itself: the step's config is saved
    assert os.path.isfile(os.path.join(session.artifacts_dir, "merged", "cleaned_config.json"))


def test_a_session_folder_is_kept_and_can_be_merged_again(files, tmp_path):
    crm, vendor = files
    folder = tmp_path / "run"
    with duckmerge.merge(crm, vendor, keys=KEYS, session=folder) as res:
        first = res.to_arrow().to_pylist()
    assert (folder / "pipeline_data.duckdb").is_file()
    with duckmerge.merge(crm, vendor, keys=KEYS, session=str(folder)) as res:
        assert res.to_arrow().to_pylist() == first
    with duckdb.connect(str(folder / "pipeline_data.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM merged").fetchone() == (4,)


def test_a_rerun_in_the_same_session_folder_resumes(files, tmp_path):
    crm, vendor = files
    with duckmerge.Session() as probe:
        out = duckmerge.MergeDriver().run(step_id="m", config={
            "original": {"path": str(crm)}, "enriched": [{"path": str(vendor)}],
            "keys": ["email"]}, inputs=None, ctx=probe)
    if "skipped_stages" not in out:
        pytest.skip("the built duckmerge module predates resume (no skipped_stages)")
    folder, target = tmp_path / "run", tmp_path / "m.csv"
    with duckmerge.merge(crm, vendor, keys=KEYS, session=folder, output=target) as res:
        assert res.skipped_stages == []
        first = res.to_arrow().to_pylist()
    with duckmerge.merge(crm, vendor, keys=KEYS, session=folder, output=target) as res:
        assert res.skipped_stages == STAGES
        assert res.to_arrow().to_pylist() == first
        assert res.stats["rows_output"] == 4


def test_a_failed_merge_removes_its_temporary_session(files, tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    crm, vendor = files
    # The tracebacks stay referenced (and with them merge()'s frame): the
    # folder must be gone because merge() closed the session, not because
    # garbage collection happened to drop it.
    with pytest.raises(duckmerge.ConfigError) as config_error:
        duckmerge.merge(crm, vendor, keys=["fax"])
    with pytest.raises(duckmerge.SourceNotFoundError) as not_found:
        duckmerge.merge(crm, [tmp_path / "missing.csv"], keys=KEYS)
    assert list(temp.iterdir()) == []
    assert config_error.tb is not None and not_found.tb is not None
    res = duckmerge.merge(crm, vendor, keys=KEYS)  # control: temp sessions do go there
    assert Path(res.session.base_path).parent == temp
    res.close()


# -- errors ----------------------------------------------------------------


def test_bad_arguments_name_the_argument(files, tmp_path):
    crm, vendor = files
    with pytest.raises(TypeError, match="original"):
        duckmerge.merge(123, vendor, keys=KEYS)
    with pytest.raises(TypeError, match=r"enriched\[1\]"):
        duckmerge.merge(crm, [vendor, 1.5], keys=KEYS)
    with pytest.raises(TypeError, match="enriched"):
        duckmerge.merge(crm, 7, keys=KEYS)
    with pytest.raises(TypeError, match="keys"):
        duckmerge.merge(crm, vendor, keys=5)
    with pytest.raises(TypeError, match=r"keys\[1\]"):
        duckmerge.merge(crm, vendor, keys=["email", 3])
    with pytest.raises(duckmerge.ConfigError, match="normalizer"):
        duckmerge.merge(crm, vendor, keys=["phone:fax"])
    with pytest.raises(TypeError, match="session"):
        duckmerge.merge(crm, vendor, keys=KEYS, session=42)
    with pytest.raises(TypeError, match="output"):
        duckmerge.merge(crm, vendor, keys=KEYS, output=3)
    with pytest.raises(TypeError, match="name"):
        duckmerge.merge(crm, vendor, keys=KEYS, name="")
    with pytest.raises(duckmerge.ConfigError, match="strategy|unknown variant"):
        duckmerge.merge(crm, vendor, keys=KEYS, strategy="best")
    with pytest.raises(TypeError, match=r"original\['data'\]"):
        duckmerge.merge({"data": [1, 2]}, vendor, keys=KEYS)


def test_a_missing_file_is_source_not_found(files, tmp_path):
    crm, _ = files
    with pytest.raises(duckmerge.SourceNotFoundError, match="no_such.csv") as info:
        duckmerge.merge(crm, str(tmp_path / "no_such.csv"), keys=KEYS)
    assert isinstance(info.value, FileNotFoundError)
    # a name that is neither a file nor a table is looked for as a file
    with pytest.raises(duckmerge.SourceNotFoundError, match="vendor_q"):
        duckmerge.merge(crm, "vendor_q", keys=KEYS)


# -- display ---------------------------------------------------------------


def test_repr_html_shows_match_rates_and_escapes_values(files, session):
    vendor = vendor_table().set_column(2, "title", pa.array(["<b>CEO</b>", "CTO", "Dev"]))
    res = duckmerge.merge(files[0], {"data": vendor, "name": "<acme&co>"}, keys=KEYS,
                          default_region="CZ", session=session)
    page = res._repr_html_()
    assert "50.0%" in page  # overall: 2 of 4 original rows matched
    assert "25.0%" in page  # per key: 1 of 4 on email, 1 of 4 on phone
    assert "&lt;b&gt;CEO&lt;/b&gt;" in page and "<b>CEO</b>" not in page
    assert "&lt;acme&amp;co&gt;" in page and "<acme&co>" not in page
    assert "merged" in page


def test_repr_html_uses_matched_per_source_when_the_stats_have_it(session):
    session.write_table("t", pa.table({"id": [1, 2, 3, 4]}))
    stats = {"rows_original": 4, "rows_output": 4, "matched": 3, "match_rate": 0.75,
             "matched_per_key": {"email": 3}, "rows_per_source": {"va": 10, "vb": 5},
             "matched_per_source": {"va": 3, "vb": 1}}
    page = duckmerge.MergeResult(session, table="t", rows=4, stats=stats)._repr_html_()
    assert "original rows enriched" in page
    assert "<td>va</td><td>10</td>" in page and "75.0%" in page and "25.0%" in page
    assert "resumed" not in page
    del stats["matched_per_source"]
    page = duckmerge.MergeResult(session, table="t", rows=4, stats=stats,
                                 skipped_stages=["import_original"])._repr_html_()
    assert "original rows enriched" not in page and "<td>vb</td><td>5</td>" in page
    assert "resumed: skipped import_original" in page


def test_repr_is_one_line(files):
    crm, vendor = files
    with duckmerge.merge(crm, vendor, keys=KEYS, default_region="CZ") as res:
        text = repr(res)
        assert "\n" not in text
        assert "table='merged'" in text and "rows=4" in text and "50.0%" in text
