"""The CRM merge (first slice of issue 4): one output row per original row,
first-key matching, strategies, on_conflict, provenance, stats."""

from __future__ import annotations

import duckmerge
import pyarrow as pa
import pytest


def run(session, **config):
    phone = {"column": "phone", "normalize": "phone", "default_region": "CZ"}
    base = {"original": "crm", "enriched": ["va", "vb"], "keys": ["email", phone]}
    base.update(config)
    return duckmerge.MergeDriver().run(step_id="merged", config=base, inputs=None, ctx=session)


@pytest.fixture
def data(session):
    session.write_table("crm", pa.table({
        "id": [1, 2, 3, 4],
        "email": ["Ann@X.cz", None, "cy@x.cz", "ann@x.cz"],
        "phone": [None, "+420 601 111 222", None, None],
        "city": ["Brno", None, None, None],
    }))
    session.write_table("va", pa.table({
        "email": [" ann@x.cz", "ann@x.cz", "zed@x.cz"],
        "phone": [None, None, "00420601111222"],
        "title": ["CEO", "Chief", "Dev"],
        "city": ["Praha", None, "Ostrava"],
    }))
    session.write_table("vb", pa.table({
        "email": ["ANN@x.cz", "nobody@x.cz"],
        "phone": ["601-111-222", None],
        "title": ["Founder and CEO", "X"],
        "city": [None, "Plzen"],
    }))
    return session


def test_one_output_row_per_original_row_in_original_order(data):
    out = run(data)
    assert out["rows"] == 4
    assert [r[0] for r in data.table("merged").fetchall()] == [1, 2, 3, 4]


def test_first_key_in_order_wins_and_duplicate_original_keys_are_each_enriched(data):
    run(data)
    rows = {r[0]: r for r in data.sql(
        "SELECT id, _match_status, _match_key, _match_sources FROM merged").fetchall()}
    assert rows[1][1:] == ("matched", "email", ["va", "vb"])
    assert rows[4][1:] == ("matched", "email", ["va", "vb"])
    # id 2 has no email: matched on phone across formats (+420 / 00420 / national
    # with default_region CZ).
    assert rows[2][1:] == ("matched", "phone", ["va", "vb"])
    assert rows[3][1:] == ("unmatched", None, [])


@pytest.mark.parametrize(
    ("strategy", "title"),
    [("first", "CEO"), ("last", "Founder and CEO"), ("longest", "Founder and CEO")],
)
def test_strategies_pick_among_contributing_rows(data, strategy, title):
    run(data, strategy=strategy)
    assert data.sql("SELECT title FROM merged WHERE id = 1").fetchone() == (title,)


def test_on_conflict_fill_overwrite_keep_both(data):
    run(data, on_conflict="fill")
    assert data.sql("SELECT city FROM merged WHERE id = 1").fetchone() == ("Brno",)
    run(data, on_conflict="overwrite")
    assert data.sql("SELECT city FROM merged WHERE id = 1").fetchone() == ("Praha",)
    run(data, on_conflict="keep_both")
    assert data.sql("SELECT city, city_enriched FROM merged WHERE id = 1").fetchone() == (
        "Brno", "Praha")


def test_stats_count_matches_conflicts_and_unmatched_vendor_rows(data):
    stats = run(data)["stats"]
    assert stats["rows_original"] == 4 and stats["rows_output"] == 4
    assert stats["matched"] == 3 and stats["matched_per_key"] == {"email": 2, "phone": 1}
    assert stats["match_rate"] == pytest.approx(0.75)
    assert stats["unmatched_enriched"] == {"va": 0, "vb": 1}
    assert data.sql("SELECT source, email FROM merged__unmatched").fetchall() == [
        ("vb", "nobody@x.cz")]
    assert data.sql("SELECT count(*) FROM merged__stats").fetchone()[0] > 0


def test_bad_configs_fail_before_any_work(data):
    with pytest.raises(duckmerge.ConfigError, match="keys must list"):
        run(data, keys=[])
    with pytest.raises(duckmerge.ConfigError, match="unknown variant"):
        run(data, strategy="best")
    with pytest.raises(duckmerge.ConfigError, match="not in the original"):
        run(data, keys=["fax"])
    with pytest.raises(duckmerge.TableNotFoundError):
        run(data, enriched=["missing"])
    with pytest.raises(duckmerge.SourceNotFoundError):
        run(data, enriched=[{"path": "no/such.csv"}])
    assert "merged" not in data.tables()


@pytest.mark.parametrize("delimiter", [";", "auto"])
def test_file_sources_columns_are_checked_before_any_work(session, tmp_path, delimiter):
    """The merge reads a file source's column names before loading anything
    (one sniffed row with an explicit delimiter, the full sample with
    ``auto``): a missing key column fails first, a good config merges."""
    crm = tmp_path / "crm.csv"
    crm.write_text("id;email;note\n1;a@x.cz;x, y\n2;b@x.cz;z\n")
    vendor = tmp_path / "vendor.csv"
    vendor.write_text("email;title\nA@x.cz ;CEO\n")
    config = {
        "original": {"path": str(crm), "delimiter": delimiter},
        "enriched": [{"path": str(vendor), "delimiter": delimiter}],
        "keys": ["fax"],
    }
    with pytest.raises(duckmerge.ConfigError, match="not in the original"):
        duckmerge.MergeDriver().run(step_id="merged", config=config, ctx=session)
    assert session.tables() == []
    config["keys"] = ["email"]
    out = duckmerge.MergeDriver().run(step_id="merged", config=config, ctx=session)
    assert out["rows"] == 2
    assert session.sql("SELECT id, note, title FROM merged").fetchall() == [
        (1, "x, y", "CEO"), (2, "z", None)
    ]
