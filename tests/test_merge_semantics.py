"""The merge driver's semantics, pinned from the issue's text (not from the code).

Every expected value below is derived by hand from the spec, quoted in each
test's docstring; the inputs are tiny tables written with ``write_table`` (or
CSV files), so each expectation can be checked by reading the test.

Spec summary (issue 4):

1. Exactly one output row per original row, in the original's row order.
2. An original row matches on the first key, in order, on which any enriched
   row shares its normalised value (NULL never matches); only enriched rows
   matching on that key contribute. Duplicate original keys are each enriched.
3. Per field the strategy chooses among the contributing rows' non-null
   values; ties break by source order, then row order within the source.
4. Output: the original's columns unchanged and in order, then the fields,
   then ``_match_status``, ``_match_key``, ``_match_sources``.
5. Stats under ``"stats"`` and in ``<step>__stats``; unmatched vendor rows in
   ``<step>__unmatched`` with a ``source`` column.

``tests/test_merge.py`` covers the basic happy path (first/last/longest on
one dataset, on_conflict city, one stats case); this file covers the rest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import duckmerge
import pyarrow as pa
import pytest
from _drivers_util import RecordingCtx, write_bytes

PROV = ["_match_status", "_match_key", "_match_sources"]
EMAIL = {"column": "email", "normalize": "email"}
PHONE_CZ = {"column": "phone", "normalize": "phone", "default_region": "CZ"}


# --- helpers --------------------------------------------------------------------------


def _array(values: Any) -> pa.Array:
    """A pyarrow array; a list of only strings and/or None becomes a string array
    (so an all-NULL column is VARCHAR, not pyarrow's null type)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if all(v is None or isinstance(v, str) for v in values):
        return pa.array(values, pa.string())
    return pa.array(values)


def table(**columns: Any) -> pa.Table:
    """A pyarrow table from keyword columns (see ``_array``)."""
    return pa.table({name: _array(v) for name, v in columns.items()})


def put(session: duckmerge.Session, name: str, data: dict[str, Any] | pa.Table) -> None:
    """Writes ``data`` (a dict of columns, or a pyarrow table) as table ``name``."""
    tbl = data if isinstance(data, pa.Table) else pa.table(
        {k: _array(v) for k, v in data.items()}
    )
    session.write_table(name, tbl)


def merge(
    ctx: Any, step_id: str = "m", inputs: dict[str, Any] | None = None, **config: Any
) -> dict[str, Any]:
    """Runs the MergeDriver with ``config`` given as keywords."""
    return duckmerge.MergeDriver().run(step_id=step_id, config=config, inputs=inputs, ctx=ctx)


def q(ident: str) -> str:
    """A quoted SQL identifier."""
    return '"' + ident.replace('"', '""') + '"'


def rows(session: duckmerge.Session, sql: str) -> list[tuple[Any, ...]]:
    """The rows of a query as tuples."""
    return [tuple(r) for r in session.sql(sql).fetchall()]


def cols(session: duckmerge.Session, name: str) -> list[str]:
    """The column names of table ``name``, in order."""
    return list(session.table(name).columns)


def types(session: duckmerge.Session, name: str) -> dict[str, str]:
    """``{column: DuckDB type}`` of table ``name``."""
    return {str(r[0]): str(r[1]) for r in session.sql(f"DESCRIBE {q(name)}").fetchall()}


def tables(session: duckmerge.Session) -> list[str]:
    """The tables of the session, as the spec's check names them."""
    return list(session.get_db_connection().tables())


def unordered(rs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows sorted by their repr (rows may hold None and lists)."""
    return sorted((tuple(r) for r in rs), key=repr)


# --- strategies (spec 3) -----------------------------------------------------------


@pytest.mark.parametrize(("strategy", "title", "city"), [("first", "A2", "CA1"),
                                                         ("last", "B1", "CB2")])
def test_first_and_last_skip_nulls_in_source_then_row_order(session, strategy, title, city):
    """Spec 3: "the strategy chooses among the contributing rows' non-null values".

    Contributing rows in (source, row) order: va0 (title NULL, city CA1),
    va1 (A2, NULL), vb0 (B1, NULL), vb1 (NULL, CB2). first: title A2 (va0 is
    NULL), city CA1; last: title B1 (vb1 is NULL), city CB2.
    """
    put(session, "crm", {"id": [1], "email": ["ann@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz", "ann@x.cz"], "title": [None, "A2"],
                        "city": ["CA1", None]})
    put(session, "vb", {"email": ["ann@x.cz", "ann@x.cz"], "title": ["B1", None],
                        "city": [None, "CB2"]})
    merge(session, original="crm", enriched=["va", "vb"], keys=[EMAIL], strategy=strategy)
    assert rows(session, "SELECT id, title, city FROM m") == [(1, title, city)]


def test_longest_ties_break_by_source_order_then_row_order(session):
    """Spec 3: "ties break by source order, then row order within the source".

    enriched = [vb, va] (config order, not name order). ann: vb "BBB" (3),
    va "AAA" (3), va "CC" (2) -> tie of length 3 -> earlier source vb -> "BBB".
    bob: only va: "q2x" (row 2), "q1x" (row 3), "zz" -> tie -> earlier row "q2x".
    """
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"]})
    put(session, "vb", {"email": ["ann@x.cz"], "title": ["BBB"]})
    put(session, "va", {"email": ["ann@x.cz", "ann@x.cz", "bob@x.cz", "bob@x.cz", "bob@x.cz"],
                        "title": ["AAA", "CC", "q2x", "q1x", "zz"]})
    merge(session, original="crm", enriched=["vb", "va"], keys=[EMAIL], strategy="longest")
    assert rows(session, "SELECT id, title FROM m") == [(1, "BBB"), (2, "q2x")]


def test_most_complete_takes_each_field_from_the_most_complete_row_having_it(session):
    """Spec 3: "most_complete takes the value from the contributing row with the
    most non-null fields" (among rows with a non-null value for that field).

    Non-null fields (title, city, company, size) per row: va0 1, va1 2, vb0 3,
    vb1 2. city/company/size come from vb0 (3): C2, K2, S2. vb0's title is NULL,
    so title comes from the next most complete rows with a title: va1 and vb1
    (2 each) -> tie -> source order -> va1 "T1". bob has no vendor rows.
    (first would give T0/C1, last T3/C3.)
    """
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz", "ann@x.cz"], "title": ["T0", "T1"],
                        "city": [None, "C1"], "company": [None, None], "size": [None, None]})
    put(session, "vb", {"email": ["ann@x.cz", "ann@x.cz"], "title": [None, "T3"],
                        "city": ["C2", "C3"], "company": ["K2", None], "size": ["S2", None]})
    merge(session, original="crm", enriched=["va", "vb"], keys=[EMAIL], strategy="most_complete")
    assert rows(session, "SELECT id, title, city, company, size FROM m") == [
        (1, "T1", "C2", "K2", "S2"),
        (2, None, None, None, None),
    ]


def test_most_recent_with_a_date_column_never_prefers_null_recency(session):
    """Spec 3: "most_recent the row with the greatest recency_column".

    ann: rows with a title: va0 "Old" 2020-01-01, va1 "Undated" NULL,
    vb0 "New" 2023-06-30 (vb1 has the greatest date but no title) -> "New";
    the recency column is itself a field: greatest non-null -> 2024-01-01.
    bob: both rows have NULL recency -> tie -> source order -> "B-va".
    """
    d = dt.date
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"]})
    put(session, "va", table(email=["ann@x.cz", "ann@x.cz", "bob@x.cz"],
                             title=["Old", "Undated", "B-va"],
                             updated=pa.array([d(2020, 1, 1), None, None], pa.date32())))
    put(session, "vb", table(email=["ann@x.cz", "ann@x.cz", "bob@x.cz"],
                             title=["New", None, "B-vb"],
                             updated=pa.array([d(2023, 6, 30), d(2024, 1, 1), None], pa.date32())))
    merge(session, original="crm", enriched=["va", "vb"], keys=[EMAIL],
          strategy="most_recent", recency_column="updated")
    assert rows(session, "SELECT id, title, updated FROM m") == [
        (1, "New", d(2024, 1, 1)),
        (2, "B-va", None),
    ]


def test_most_recent_with_a_timestamp_column_breaks_equal_times_by_source_order(session):
    """Spec 3: most_recent on a TIMESTAMP; equal recency ties break by source order.

    ann: 08:00 Morning (va), 12:00 Noon (va), 20:00 Evening (vb) -> "Evening".
    bob: va "X" and vb "Y" both at 2024-01-01 10:00 -> earlier source -> "X".
    """
    ts = dt.datetime
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"]})
    put(session, "va", table(
        email=["ann@x.cz", "ann@x.cz", "bob@x.cz"], title=["Morning", "Noon", "X"],
        seen_at=pa.array([ts(2024, 5, 1, 8), ts(2024, 5, 1, 12), ts(2024, 1, 1, 10)],
                         pa.timestamp("us"))))
    put(session, "vb", table(
        email=["ann@x.cz", "bob@x.cz"], title=["Evening", "Y"],
        seen_at=pa.array([ts(2024, 5, 1, 20), ts(2024, 1, 1, 10)], pa.timestamp("us"))))
    merge(session, original="crm", enriched=["va", "vb"], keys=[EMAIL],
          strategy="most_recent", recency_column="seen_at", fields=["title"])
    assert rows(session, "SELECT id, title FROM m") == [(1, "Evening"), (2, "X")]


def test_most_frequent_takes_the_mode_and_breaks_a_tie_by_source_order(session):
    """Spec 3: "most_frequent the mode"; ties by source order, then row order.

    ann: Dev x2 (va0, vb2), Ops x2 (vb0, vb1) -> tie; Dev occurs first in the
    earlier source va -> "Dev". bob: A x1, B x2, NULL x3 (NULLs are not values)
    -> "B".
    """
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz", "bob@x.cz", "bob@x.cz"], "title": ["Dev", "A", "B"]})
    put(session, "vb", {"email": ["ann@x.cz"] * 3 + ["bob@x.cz"] * 4,
                        "title": ["Ops", "Ops", "Dev", "B", None, None, None]})
    merge(session, original="crm", enriched=["va", "vb"], keys=[EMAIL], strategy="most_frequent")
    assert rows(session, "SELECT id, title FROM m") == [(1, "Dev"), (2, "B")]


def test_source_priority_higher_wins_and_equal_priorities_fall_back_to_source_order(session):
    """Config: source_priority (source "priority": higher wins).

    Priorities va 1, vb 5, vc 5. title: vb NULL -> vc "C" (5) beats va "A" (1).
    city: vb and vc tie at 5 -> source order -> vb "Praha". company: only va -> "KA".
    """
    put(session, "crm", {"id": [1], "email": ["ann@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz"], "title": ["A"], "city": ["Brno"],
                        "company": ["KA"]})
    put(session, "vb", {"email": ["ann@x.cz"], "title": [None], "city": ["Praha"],
                        "company": [None]})
    put(session, "vc", {"email": ["ann@x.cz"], "title": ["C"], "city": ["Ostrava"],
                        "company": [None]})
    merge(session, original="crm", keys=[EMAIL], strategy="source_priority",
          enriched=[{"table": "va", "priority": 1}, {"table": "vb", "priority": 5},
                    {"table": "vc", "priority": 5}])
    assert rows(session, "SELECT id, title, city, company FROM m") == [(1, "C", "Praha", "KA")]
    (sources,) = rows(session, "SELECT _match_sources FROM m")[0]
    assert sorted(sources) == ["va", "vb", "vc"]


def test_source_priority_without_priorities_lets_earlier_sources_win(session):
    """Config: source_priority "default earlier sources win"; then row order.

    enriched = [vb, va]: vb is earlier; its rows: NULL, "VB2" -> "VB2" (not va's "VA1").
    """
    put(session, "crm", {"id": [1], "email": ["ann@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz"], "title": ["VA1"]})
    put(session, "vb", {"email": ["ann@x.cz", "ann@x.cz"], "title": [None, "VB2"]})
    merge(session, original="crm", enriched=["vb", "va"], keys=[EMAIL],
          strategy="source_priority")
    assert rows(session, "SELECT id, title FROM m") == [(1, "VB2")]


def test_field_strategies_override_the_strategy_per_field(session):
    """Config: "field_strategies: {field: strategy} overrides per field".

    strategy first; title longest -> "Chief Executive"; note last -> "n-vb"
    (not the longer "n-va-longer"); city keeps first -> "Brno".
    """
    put(session, "crm", {"id": [1], "email": ["ann@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz"], "title": ["CEO"], "city": ["Brno"],
                        "note": ["n-va-longer"]})
    put(session, "vb", {"email": ["ann@x.cz"], "title": ["Chief Executive"], "city": ["Praha"],
                        "note": ["n-vb"]})
    merge(session, original="crm", enriched=["va", "vb"], keys=[EMAIL], strategy="first",
          field_strategies={"title": "longest", "note": "last"})
    assert rows(session, "SELECT title, city, note FROM m") == [("Chief Executive", "Brno", "n-vb")]


# --- matching (spec 2) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ([EMAIL, PHONE_CZ], ("E-va", None, "matched", "email", ["va"])),
        ([PHONE_CZ, EMAIL], ("P-vb", "P-city", "matched", "phone", ["vb"])),
    ],
    ids=["email-first", "phone-first"],
)
def test_only_rows_matching_on_the_first_shared_key_contribute(session, keys, expected):
    """Spec 2: match on the first key, in order, any enriched row shares; only
    rows matching on that key contribute.

    ann's email is in va0; her phone (+420601111222 = "601 111 222" in CZ) is in
    vb0 (another email). keys [email, phone]: only va0 contributes -> title
    "E-va", city NULL (vb0's "P-city" must not leak in), even with strategy last.
    keys [phone, email]: only vb0 contributes.
    """
    put(session, "crm", {"id": [1], "email": ["ann@x.cz"], "phone": ["+420601111222"]})
    put(session, "va", {"email": ["ann@x.cz"], "phone": [None], "title": ["E-va"],
                        "city": [None]})
    put(session, "vb", {"email": ["other@x.cz"], "phone": ["601 111 222"], "title": ["P-vb"],
                        "city": ["P-city"]})
    merge(session, original="crm", enriched=["va", "vb"], keys=keys, strategy="last")
    assert rows(session, f"SELECT title, city, {', '.join(PROV)} FROM m") == [expected]


@pytest.mark.parametrize("normalize", ["email", "text", "exact"])
def test_null_keys_never_match(session, normalize):
    """Spec 2: "NULL never matches" — a NULL email in the original and in the
    vendor do not match each other, whatever the normaliser.

    Original ids 1 and 3 have NULL email, id 2 "b@x.cz". va0 has NULL email
    ("ghost"), va1 "b@x.cz" ("T"). Only id 2 matches; va0 is unmatched.
    """
    put(session, "crm", {"id": [1, 2, 3], "email": [None, "b@x.cz", None]})
    put(session, "va", {"email": [None, "b@x.cz"], "title": ["ghost", "T"]})
    out = merge(session, original="crm", enriched=["va"],
                keys=[{"column": "email", "normalize": normalize}])
    assert rows(session, f"SELECT id, title, {', '.join(PROV)} FROM m") == [
        (1, None, "unmatched", None, []),
        (2, "T", "matched", "email", ["va"]),
        (3, None, "unmatched", None, []),
    ]
    assert out["stats"]["matched"] == 1
    assert out["stats"]["unmatched_enriched"] == {"va": 1}
    assert rows(session, "SELECT source, email, title FROM m__unmatched") == [
        ("va", None, "ghost")]


def test_whitespace_only_and_unparseable_phones_never_match(session):
    """Spec: phone "unparseable -> NULL, never matches" — even when the same
    garbage string is on both sides."""
    junk = ["   ", "n/a", "---", ""]
    put(session, "crm", {"id": [1, 2, 3, 4], "phone": junk})
    put(session, "va", {"phone": junk, "title": ["ws", "na", "dash", "empty"]})
    out = merge(session, original="crm", enriched=["va"], keys=[PHONE_CZ])
    assert rows(session, "SELECT id, title, _match_status, _match_key FROM m") == [
        (i, None, "unmatched", None) for i in (1, 2, 3, 4)]
    assert out["stats"]["matched"] == 0
    assert out["stats"]["unmatched_enriched"] == {"va": 4}


def test_phone_formats_normalise_to_e164_with_default_region(session):
    """Spec: `+420 601 111 222`, `00420601111222`, `+420601111222`,
    `601-111-222` (default_region CZ) all become +420601111222 — and so does the
    vendor's national "601 111 222". A Slovak +421 number is a different one.
    """
    put(session, "crm", {"id": [1, 2, 3, 4, 5], "phone": [
        "+420 601 111 222", "00420601111222", "+420601111222", "601-111-222",
        "+421 601 111 222"]})
    put(session, "va", {"phone": ["601 111 222"], "title": ["Found"]})
    out = merge(session, original="crm", enriched=["va"], keys=[PHONE_CZ])
    assert rows(session, "SELECT id, title, _match_key FROM m") == [
        (1, "Found", "phone"), (2, "Found", "phone"), (3, "Found", "phone"),
        (4, "Found", "phone"), (5, None, None)]
    assert out["stats"]["matched_per_key"] == {"phone": 4}


def test_national_phone_numbers_need_a_default_region(session):
    """Spec: default_region is what makes national numbers parseable; without it
    "601-111-222" cannot become E.164, so it is NULL and never matches, while
    the international forms still match "+420 601 111 222"."""
    put(session, "crm", {"id": [1, 2, 3, 4], "phone": [
        "+420 601 111 222", "00420601111222", "+420601111222", "601-111-222"]})
    put(session, "va", {"phone": ["+420 601 111 222"], "title": ["Found"]})
    merge(session, original="crm", enriched=["va"],
          keys=[{"column": "phone", "normalize": "phone"}])
    assert rows(session, "SELECT id, title FROM m") == [
        (1, "Found"), (2, "Found"), (3, "Found"), (4, None)]


@pytest.mark.parametrize(
    ("canonical", "titles"),
    [(True, ["T1", "T2", "T3", None, "T5"]), (False, [None, None, None, None, "T5"])],
    ids=["canonical", "plain"],
)
def test_email_canonicalisation(session, canonical, titles):
    """Spec: email = trim + lowercase; email_canonical also drops +tags and Gmail
    dots (gmail.com / googlemail.com).

    1 john.doe+news@gmail.com ~ johndoe@gmail.com: tag + gmail dots.
    2 Jane.Doe@googlemail.com ~ janedoe@googlemail.com: googlemail dots.
    3 a.b+c@example.com ~ a.b@example.com: the tag only.
    4 x.y@example.com !~ xy@example.com: dots are kept outside Gmail.
    5 " Mixed@Example.COM " ~ mixed@example.com: trim + lowercase, in both modes.
    """
    put(session, "crm", {"id": [1, 2, 3, 4, 5], "email": [
        "john.doe+news@gmail.com", "Jane.Doe@googlemail.com", "a.b+c@example.com",
        "x.y@example.com", " Mixed@Example.COM "]})
    put(session, "va", {"email": ["johndoe@gmail.com", "janedoe@googlemail.com",
                                  "a.b@example.com", "xy@example.com", "mixed@example.com"],
                        "title": ["T1", "T2", "T3", "T4", "T5"]})
    merge(session, original="crm", enriched=["va"],
          keys=[{"column": "email", "normalize": "email", "email_canonical": canonical}])
    assert [r[0] for r in rows(session, "SELECT title FROM m")] == titles


@pytest.mark.parametrize(
    ("key", "titles"),
    [
        ({"column": "full_name", "normalize": "text"}, ["T1", "T2", "T3", "T5"]),
        ("full_name", ["T1", "T2", "T3", "T5"]),  # "text" is the default normaliser
        ({"column": "full_name", "normalize": "exact"}, [None, None, None, "T4"]),
    ],
    ids=["text", "default-is-text", "exact"],
)
def test_text_normalisation_and_exact(session, key, titles):
    """Spec: text = trim, lowercase, collapse inner whitespace, strip accents;
    exact = no normalisation.

    "  Jiří   Novák " ~ "jiri novak"; "ZDENĚK svoboda" ~ "Zdenek Svoboda";
    "Eva<TAB>Král" ~ "eva kral". id 4 "Exact Match": under text it matches both
    "exact match" (row 4, T5) and "Exact Match" (row 5, T4) -> first -> T5;
    under exact only "Exact Match" -> T4, and nothing else matches.
    """
    put(session, "crm", {"id": [1, 2, 3, 4], "full_name": [
        "  Jiří   Novák ", "ZDENĚK svoboda", "Eva\tKrál", "Exact Match"]})
    put(session, "va", {"full_name": ["jiri novak", "Zdenek Svoboda", "eva kral", "exact match",
                                      "Exact Match"],
                        "title": ["T1", "T2", "T3", "T5", "T4"]})
    merge(session, original="crm", enriched=["va"], keys=[key], strategy="first")
    assert [r[0] for r in rows(session, "SELECT title FROM m")] == titles


def test_enriched_column_maps_a_key_to_a_differently_named_vendor_column(session):
    """Config: enriched_column names the key's column in the vendors; the vendor
    key column is a key, not a field, so it is not in the output; _match_key
    is the key's (original) column name."""
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"]})
    put(session, "va", {"contact_email": ["ANN@x.cz"], "title": ["T"]})
    merge(session, original="crm", enriched=["va"],
          keys=[{"column": "email", "enriched_column": "contact_email", "normalize": "email"}])
    assert cols(session, "m") == ["id", "email", "title", *PROV]
    assert rows(session, "SELECT * FROM m") == [
        (1, "ann@x.cz", "T", "matched", "email", ["va"]),
        (2, "bob@x.cz", None, "unmatched", None, []),
    ]


def test_enriched_column_defaults_to_the_same_name_matched_case_insensitively(session):
    """Config: "enriched_column (default: same name, matched case-insensitively)":
    key "Email" finds the vendor's "EMAIL"."""
    put(session, "crm", {"ID": [1], "Email": ["ann@x.cz"]})
    put(session, "va", {"EMAIL": ["ann@x.cz"], "Title": ["T"]})
    merge(session, original="crm", enriched=["va"], keys=["Email"])
    assert cols(session, "m") == ["ID", "Email", "Title", *PROV]
    assert rows(session, "SELECT * FROM m") == [(1, "ann@x.cz", "T", "matched", "Email", ["va"])]


# --- one row per original row (spec 1) ---------------------------------------------


def test_vendor_duplicates_never_add_rows_and_are_counted(session):
    """Spec 1 + 5: whatever duplicates the vendors hold, one row per original
    row; "duplicates collapsed per source".

    va holds ann three times, identically (2 collapsed), bob once; vb holds ann once.
    """
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz", "ann@x.cz", "bob@x.cz", "ann@x.cz"],
                        "title": ["T", "T", "B", "T"]})
    put(session, "vb", {"email": ["ann@x.cz"], "title": ["U"]})
    out = merge(session, original="crm", enriched=["va", "vb"], keys=[EMAIL])
    assert out["rows"] == 2
    assert rows(session, "SELECT id, title FROM m") == [(1, "T"), (2, "B")]
    stats = out["stats"]
    assert stats["rows_output"] == 2
    assert stats["rows_per_source"] == {"va": 4, "vb": 1}
    assert stats["duplicates_collapsed"]["va"] == 2
    assert stats["duplicates_collapsed"].get("vb", 0) == 0


def test_duplicate_original_keys_are_each_enriched_in_original_order(session):
    """Spec 1 + 2: "Duplicate original keys are each enriched", output in the
    original's row order (ids deliberately unsorted)."""
    put(session, "crm", {"id": [30, 10, 20, 40],
                         "email": ["ann@x.cz", "ANN@x.cz", " ann@x.cz", "bob@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz"], "title": ["T"]})
    out = merge(session, original="crm", enriched=["va"], keys=[EMAIL])
    assert rows(session, "SELECT id, email, title, _match_status FROM m") == [
        (30, "ann@x.cz", "T", "matched"),
        (10, "ANN@x.cz", "T", "matched"),
        (20, " ann@x.cz", "T", "matched"),
        (40, "bob@x.cz", None, "unmatched"),
    ]
    assert out["rows"] == 4 and out["stats"]["matched"] == 3


# --- on_conflict (config) ----------------------------------------------------------


@pytest.fixture(params=["int64", "string"])
def conflict_data(request, session) -> duckmerge.Session:
    """crm with INTEGER id/employees; va supplies employees as BIGINT or as
    VARCHAR digits (as a CSV vendor would), plus city."""
    put(session, "crm", table(
        id=pa.array([1, 2, 3, 4], pa.int32()), email=["a@x.cz", "b@x.cz", "c@x.cz", "d@x.cz"],
        employees=pa.array([10, None, 7, None], pa.int32()),
        city=[None, "Brno", "Zlin", None]))
    employees = (pa.array([99, 50, None], pa.int64()) if request.param == "int64"
                 else pa.array(["99", "50", None], pa.string()))
    put(session, "va", table(email=["a@x.cz", "b@x.cz", "c@x.cz"], employees=employees,
                             city=["Praha", "Ostrava", None]))
    return session


def _original_types_kept(session: duckmerge.Session) -> None:
    orig = types(session, "crm")
    out = types(session, "m")
    assert {c: out[c] for c in orig} == orig
    assert orig["employees"] == "INTEGER"


def test_on_conflict_fill_keeps_non_null_original_values_and_types(conflict_data):
    """on_conflict fill (default): "keep the original's non-null value, else the
    enriched one"; the original's INTEGER column stays INTEGER and no extra
    column is added for a field the original has.

    employees: 10 kept, NULL -> 50, 7 kept (vendor NULL), d unmatched -> NULL.
    city: NULL -> Praha, Brno kept, Zlin kept, NULL.
    """
    s = conflict_data
    merge(s, original="crm", enriched=["va"], keys=[EMAIL])
    assert cols(s, "m") == ["id", "email", "employees", "city", *PROV]
    assert rows(s, "SELECT id, employees, city FROM m") == [
        (1, 10, "Praha"), (2, 50, "Brno"), (3, 7, "Zlin"), (4, None, None)]
    _original_types_kept(s)


def test_on_conflict_overwrite_takes_the_enriched_value_when_non_null(conflict_data):
    """on_conflict overwrite: "enriched value if non-null" (else the original's).

    employees: 99, 50, 7 (vendor NULL), NULL; city: Praha, Ostrava, Zlin, NULL.
    """
    s = conflict_data
    merge(s, original="crm", enriched=["va"], keys=[EMAIL], on_conflict="overwrite")
    assert cols(s, "m") == ["id", "email", "employees", "city", *PROV]
    assert rows(s, "SELECT id, employees, city FROM m") == [
        (1, 99, "Praha"), (2, 50, "Ostrava"), (3, 7, "Zlin"), (4, None, None)]
    _original_types_kept(s)


def test_on_conflict_keep_both_adds_field_enriched_columns(conflict_data):
    """on_conflict keep_both: "original unchanged, enriched value in
    <field>_enriched" (the fields' place: after the original's columns)."""
    s = conflict_data
    merge(s, original="crm", enriched=["va"], keys=[EMAIL], on_conflict="keep_both")
    assert cols(s, "m") == ["id", "email", "employees", "city", "employees_enriched",
                            "city_enriched", *PROV]
    assert rows(s, "SELECT id, employees, city, city_enriched FROM m") == [
        (1, 10, None, "Praha"), (2, None, "Brno", "Ostrava"), (3, 7, "Zlin", None),
        (4, None, None, None)]
    enriched = [r[0] for r in rows(s, "SELECT employees_enriched FROM m")]
    assert [None if v is None else int(v) for v in enriched] == [99, 50, None, None]
    _original_types_kept(s)


# --- output shape (spec 4) ---------------------------------------------------------


def test_provenance_off_drops_the_match_columns(session):
    """Spec 4: the _match_* columns come "with provenance" only."""
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz"], "title": ["T"]})
    merge(session, original="crm", enriched=["va"], keys=[EMAIL], output={"provenance": False})
    assert cols(session, "m") == ["id", "email", "title"]
    assert rows(session, "SELECT * FROM m") == [(1, "ann@x.cz", "T"), (2, "bob@x.cz", None)]


def test_explicit_fields_select_and_order_the_field_columns(session):
    """Config "fields": only the listed vendor columns, in the listed order."""
    put(session, "crm", {"id": [1], "email": ["ann@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz"], "title": ["T"], "city": ["C"], "extra": ["X"]})
    merge(session, original="crm", enriched=["va"], keys=[EMAIL], fields=["city", "title"])
    assert cols(session, "m") == ["id", "email", "city", "title", *PROV]
    assert rows(session, "SELECT city, title FROM m") == [("C", "T")]


def test_vendors_with_different_columns_contribute_the_union_of_fields(session):
    """Default fields: every non-key enriched column, across all vendors."""
    put(session, "crm", {"id": [1], "email": ["ann@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz"], "title": ["T-a"]})
    put(session, "vb", {"email": ["ann@x.cz"], "city": ["C-b"], "title": ["T-b"]})
    merge(session, original="crm", enriched=["va", "vb"], keys=[EMAIL])
    c = cols(session, "m")
    assert c[:2] == ["id", "email"] and c[-3:] == PROV and sorted(c[2:-3]) == ["city", "title"]
    assert rows(session, "SELECT title, city FROM m") == [("T-a", "C-b")]


def test_column_and_table_names_needing_quoting(session):
    """Identifiers with spaces, double quotes and mixed case are just names."""
    put(session, "crm", {"Customer ID": [1, 2], 'E"mail': ["ann@x.cz", "bob@x.cz"],
                         "MixedCase": ["x", "y"]})
    put(session, 'vendor "A"', {'E"mail': ["ANN@x.cz"], "Job Title": ["CEO"],
                                'Say "hi"': ["hello"], "MixedField": ["M"]})
    out = merge(session, step_id="merged out", original="crm", enriched=['vendor "A"'],
                keys=[{"column": 'E"mail', "normalize": "email"}])
    assert out["table"] == "merged out"
    assert cols(session, "merged out") == [
        "Customer ID", 'E"mail', "MixedCase", "Job Title", 'Say "hi"', "MixedField", *PROV]
    assert rows(session, 'SELECT * FROM "merged out"') == [
        (1, "ann@x.cz", "x", "CEO", "hello", "M", "matched", 'E"mail', ['vendor "A"']),
        (2, "bob@x.cz", "y", None, None, None, "unmatched", None, []),
    ]
    assert out["stats"]["matched_per_key"] == {'E"mail': 1}
    assert out["stats"]["rows_per_source"] == {'vendor "A"': 1}
    assert {"merged out", "merged out__stats", "merged out__unmatched"} <= set(tables(session))


# --- stats (spec 5) ----------------------------------------------------------------


@pytest.fixture
def stats_data(session) -> duckmerge.Session:
    """Four original rows (email / email / phone only / no vendor) and two vendors
    with three unmatched rows between them."""
    put(session, "crm", {"id": [1, 2, 3, 4],
                         "email": ["a@x.cz", "b@x.cz", None, "d@x.cz"],
                         "phone": [None, None, "+420601111222", None]})
    put(session, "va", {"email": ["a@x.cz", "b@x.cz", "zz@x.cz"], "phone": [None, None, None],
                        "title": ["CEO", "CTO", "Nobody"], "city": [None, "Brno", "Nowhere"]})
    put(session, "vb", {"email": ["A@X.CZ", None, "yy@x.cz", "qq@x.cz"],
                        "phone": [None, "601 111 222", None, None],
                        "title": ["Chief", "Dev", None, "Q"],
                        "city": ["Praha", "Ostrava", "Plzen", None]})
    return session


def test_stats_values_and_the_unmatched_table(stats_data):
    """Spec 5, derived by hand (strategy first, keys email then phone CZ):

    id1 a@x.cz: email; va0 (CEO, NULL) + vb0 (Chief, Praha) -> title CEO from
        va, titles disagree (conflict); city Praha from vb (one value, no conflict).
    id2 b@x.cz: email; va1 -> CTO, Brno from va.
    id3 phone +420601111222 = vb1 "601 111 222": phone; vb1 -> Dev, Ostrava from vb.
    id4: unmatched.
    Unmatched vendor rows: va2 (zz), vb2 (yy), vb3 (qq).
    """
    s = stats_data
    out = merge(s, original="crm", enriched=["va", "vb"], keys=[EMAIL, PHONE_CZ])
    assert rows(s, f"SELECT id, title, city, {', '.join(PROV)} FROM m") == [
        (1, "CEO", "Praha", "matched", "email", ["va", "vb"]),
        (2, "CTO", "Brno", "matched", "email", ["va"]),
        (3, "Dev", "Ostrava", "matched", "phone", ["vb"]),
        (4, None, None, "unmatched", None, []),
    ]
    st = out["stats"]
    assert st["rows_original"] == 4
    assert st["rows_output"] == 4
    assert st["rows_per_source"] == {"va": 3, "vb": 4}
    assert {k: st["duplicates_collapsed"].get(k, 0) for k in ("va", "vb")} == {"va": 0, "vb": 0}
    assert st["matched"] == 3
    assert st["matched_per_key"] == {"email": 2, "phone": 1}
    assert st["match_rate"] == pytest.approx(0.75)
    assert st["unmatched_enriched"] == {"va": 1, "vb": 2}
    assert set(st["conflicts"]) <= {"title", "city"}
    assert {f: st["conflicts"].get(f, 0) for f in ("title", "city")} == {"title": 1, "city": 0}
    assert st["values_filled"] == {"title": {"va": 2, "vb": 1}, "city": {"va": 1, "vb": 2}}
    assert unordered(rows(s, "SELECT source, email, phone, title, city FROM m__unmatched")) == [
        ("va", "zz@x.cz", None, "Nobody", "Nowhere"),
        ("vb", "qq@x.cz", None, "Q", None),
        ("vb", "yy@x.cz", None, None, "Plzen"),
    ]
    assert "source" in cols(s, "m__unmatched")
    stat_rows = rows(s, "SELECT * FROM m__stats")
    assert any("rows_original" in r and 4 in r for r in stat_rows), stat_rows
    assert any("match_rate" in r and 0.75 in r for r in stat_rows), stat_rows


@pytest.mark.parametrize(("on_conflict", "expected"), [("fill", {"va": 1}),
                                                       ("overwrite", {"va": 2})])
def test_values_filled_counts_values_written_into_the_output(session, on_conflict, expected):
    """Spec 5 "values filled per field and source": under fill, ann's original
    title "Boss" is kept, so va fills only bob's NULL title (1); under overwrite
    va's values replace both (2)."""
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"], "title": ["Boss", None]})
    put(session, "va", {"email": ["ann@x.cz", "bob@x.cz"], "title": ["CTO", "Dev"]})
    out = merge(session, original="crm", enriched=["va"], keys=[EMAIL], on_conflict=on_conflict)
    titles = {"fill": ["Boss", "Dev"], "overwrite": ["CTO", "Dev"]}[on_conflict]
    assert [r[0] for r in rows(session, "SELECT title FROM m")] == titles
    assert out["stats"]["values_filled"] == {"title": expected}


def test_unmatched_rows_of_several_sources_keep_source_then_row_order(session):
    """``<step>__unmatched`` lists the vendor rows nobody matched source by
    source, each in its own row order, with the sources' columns by name (a
    column only one source has is NULL elsewhere; a vendor column named like
    duckmerge's internal ones is kept as data)."""
    n = 3000
    put(session, "crm", {"id": list(range(n)), "email": [f"u{i}@x.cz" for i in range(n)]})
    # Every third row of each vendor matches nobody; rows interleave.
    def vendor(tag: str) -> dict[str, list[Any]]:
        return {
            "email": [f"u{i}@x.cz" if i % 3 else f"{tag}{i}@none.cz" for i in range(n)],
            "title": [f"{tag}-t{i}" for i in range(n)],
        }
    put(session, "va", vendor("a"))
    put(session, "vb", {**vendor("b"), "__dm_s0": list(range(n))})
    put(session, "vc", {**vendor("c"), "extra": [f"x{i}" for i in range(n)]})
    out = merge(session, original="crm", enriched=["va", "vb", "vc"], keys=[EMAIL])
    lost = [i for i in range(n) if i % 3 == 0]
    assert out["stats"]["unmatched_enriched"] == {"va": len(lost), "vb": len(lost), "vc": len(lost)}
    assert cols(session, "m__unmatched") == ["source", "email", "title", "__dm_s0", "extra"]
    expected = (
        [("va", f"a{i}@none.cz", f"a-t{i}", None, None) for i in lost]
        + [("vb", f"b{i}@none.cz", f"b-t{i}", i, None) for i in lost]
        + [("vc", f"c{i}@none.cz", f"c-t{i}", None, f"x{i}") for i in lost]
    )
    assert rows(session, "SELECT * FROM m__unmatched ORDER BY rowid") == expected


# --- empty inputs ------------------------------------------------------------------


def test_original_with_zero_rows(session):
    """0 original rows -> 0 output rows with the full column set; every vendor
    row is unmatched."""
    put(session, "crm", table(id=pa.array([], pa.int64()), email=pa.array([], pa.string())))
    put(session, "va", {"email": ["ann@x.cz", "bob@x.cz"], "title": ["T", "U"]})
    out = merge(session, original="crm", enriched=["va"], keys=[EMAIL])
    assert out["rows"] == 0
    assert cols(session, "m") == ["id", "email", "title", *PROV]
    assert rows(session, "SELECT count(*) FROM m") == [(0,)]
    st = out["stats"]
    assert (st["rows_original"], st["rows_output"], st["matched"]) == (0, 0, 0)
    assert st["match_rate"] == 0
    assert st["unmatched_enriched"] == {"va": 2}
    assert unordered(rows(session, "SELECT source, email FROM m__unmatched")) == [
        ("va", "ann@x.cz"), ("va", "bob@x.cz")]


def test_a_vendor_with_zero_rows_contributes_nothing(session):
    """An empty vendor next to a non-empty one: rows unchanged, it is never a
    contributing source, its stats are 0."""
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"]})
    put(session, "va", table(email=pa.array([], pa.string()), title=pa.array([], pa.string())))
    put(session, "vb", {"email": ["ann@x.cz"], "title": ["T"]})
    out = merge(session, original="crm", enriched=["va", "vb"], keys=[EMAIL])
    assert rows(session, f"SELECT id, title, {', '.join(PROV)} FROM m") == [
        (1, "T", "matched", "email", ["vb"]),
        (2, None, "unmatched", None, []),
    ]
    assert out["stats"]["rows_per_source"] == {"va": 0, "vb": 1}
    assert out["stats"]["unmatched_enriched"].get("va", 0) == 0


def test_only_vendor_empty_leaves_every_row_unmatched(session):
    """The single vendor has 0 rows: every original row is output, unmatched,
    with the vendor's fields present and NULL."""
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"]})
    put(session, "va", table(email=pa.array([], pa.string()), title=pa.array([], pa.string())))
    out = merge(session, original="crm", enriched=["va"], keys=[EMAIL])
    assert cols(session, "m") == ["id", "email", "title", *PROV]
    assert rows(session, "SELECT id, title, _match_status FROM m") == [
        (1, None, "unmatched"), (2, None, "unmatched")]
    assert out["stats"]["matched"] == 0 and out["stats"]["match_rate"] == 0


# --- sources, inputs, reruns -------------------------------------------------------


def test_inputs_table_names_the_original_when_the_config_does_not(session):
    """"Inputs in inputs={"table": name} name the original when the config does
    not" — and only then: a config "original" wins over inputs."""
    put(session, "crm", {"id": [1], "email": ["ann@x.cz"]})
    put(session, "other", {"id": [9, 8], "email": ["zed@x.cz", "ann@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz"], "title": ["T"]})
    out = merge(session, inputs={"table": "crm"}, enriched=["va"], keys=[EMAIL])
    assert out["rows"] == 1
    assert rows(session, "SELECT id, title FROM m") == [(1, "T")]
    merge(session, inputs={"table": "other"}, original="crm", enriched=["va"], keys=[EMAIL])
    assert rows(session, "SELECT id, title FROM m") == [(1, "T")]


def test_csv_file_sources_with_names(session, tmp_path):
    """Sources given as {"path": file}; "name" names a source in provenance and stats."""
    crm = write_bytes(tmp_path / "crm.csv", "id,email\n1,ann@x.cz\n2,bob@x.cz\n3,cy@x.cz\n")
    vb = write_bytes(tmp_path / "vendor_b.csv", "email,title\nANN@x.cz,CEO\n")
    vc = write_bytes(tmp_path / "vendor_c.csv", "email,title\nbob@x.cz,Dev\nnobody@x.cz,X\n")
    out = merge(session, original={"path": str(crm)}, keys=[EMAIL],
                enriched=[{"path": str(vb), "name": "beta"}, {"path": str(vc), "name": "gamma"}])
    assert rows(session, f"SELECT id, title, {', '.join(PROV)} FROM m") == [
        (1, "CEO", "matched", "email", ["beta"]),
        (2, "Dev", "matched", "email", ["gamma"]),
        (3, None, "unmatched", None, []),
    ]
    assert out["stats"]["rows_per_source"] == {"beta": 1, "gamma": 2}
    assert out["stats"]["unmatched_enriched"] == {"beta": 0, "gamma": 1}
    assert rows(session, "SELECT source, email FROM m__unmatched") == [("gamma", "nobody@x.cz")]


def test_a_rerun_of_the_same_step_replaces_its_tables(session):
    """"Re-running a step replaces its output": run 1 (va, first) then run 2
    (va + vb, last) then run 3 (provenance off) on step m."""
    put(session, "crm", {"id": [1], "email": ["ann@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz"], "title": ["VA"]})
    put(session, "vb", {"email": ["ann@x.cz", "zz@x.cz"], "title": ["VB", "Z"]})
    merge(session, original="crm", enriched=["va"], keys=[EMAIL], strategy="first")
    assert rows(session, "SELECT id, title, _match_sources FROM m") == [(1, "VA", ["va"])]
    assert rows(session, "SELECT count(*) FROM m__unmatched") == [(0,)]
    out = merge(session, original="crm", enriched=["va", "vb"], keys=[EMAIL], strategy="last")
    assert out["rows"] == 1
    assert rows(session, "SELECT id, title, _match_sources FROM m") == [(1, "VB", ["va", "vb"])]
    assert rows(session, "SELECT source, email FROM m__unmatched") == [("vb", "zz@x.cz")]
    merge(session, original="crm", enriched=["va", "vb"], keys=[EMAIL], strategy="last",
          output={"provenance": False})
    assert cols(session, "m") == ["id", "email", "title"]
    assert rows(session, "SELECT * FROM m") == [(1, "ann@x.cz", "VB")]
    assert tables(session).count("m") == 1


# --- bad configs -------------------------------------------------------------------

STEP = "merge-step"

# (id, config changes (None deletes a key), exception class, substrings of the message)
BAD_CONFIGS: list[tuple[str, dict[str, Any], type[BaseException], list[str]]] = [
    ("empty-keys", {"keys": []}, duckmerge.ConfigError, ["keys"]),
    ("empty-enriched", {"enriched": []}, duckmerge.ConfigError, ["enriched"]),
    ("no-original", {"original": None}, duckmerge.ConfigError, ["original"]),
    ("unknown-strategy", {"strategy": "best"}, duckmerge.ConfigError,
     ["best", "most_frequent"]),
    ("unknown-field-strategy", {"field_strategies": {"title": "best"}}, duckmerge.ConfigError,
     ["best"]),
    ("unknown-on-conflict", {"on_conflict": "merge"}, duckmerge.ConfigError,
     ["merge", "keep_both"]),
    ("unknown-normalize", {"keys": [{"column": "email", "normalize": "fuzzy"}]},
     duckmerge.ConfigError, ["fuzzy", "phone"]),
    ("key-not-in-original", {"keys": ["fax"]}, duckmerge.ConfigError, ["fax"]),
    ("key-not-in-vendors", {"keys": [{"column": "email", "enriched_column": "mail_addr"}]},
     duckmerge.ConfigError, ["mail_addr"]),
    ("field-not-in-vendors", {"fields": ["nickname"]}, duckmerge.ConfigError, ["nickname"]),
    ("recency-column-missing", {"strategy": "most_recent", "recency_column": "updated_at"},
     duckmerge.ConfigError, ["updated_at"]),
    ("most-recent-without-recency", {"strategy": "most_recent"}, duckmerge.ConfigError,
     ["recency_column"]),
    ("field-most-recent-without-recency", {"field_strategies": {"title": "most_recent"}},
     duckmerge.ConfigError, ["recency_column"]),
    ("missing-original-file", {"original": {"path": "__TMP__/no_such_crm.csv"}},
     duckmerge.SourceNotFoundError, ["no_such_crm.csv"]),
    ("missing-enriched-file", {"enriched": ["va", {"path": "__TMP__/no_such_vendor.csv"}]},
     duckmerge.SourceNotFoundError, ["no_such_vendor.csv"]),
    ("missing-original-table", {"original": "nope"}, duckmerge.TableNotFoundError, ["nope"]),
    ("unknown-top-level-key", {"strategie": "first"}, duckmerge.ConfigError,
     ["strategie", "strategy", "on_conflict"]),
    ("unknown-key-option", {"keys": [{"column": "email", "normalise": "email"}]},
     duckmerge.ConfigError, ["normalise", "normalize"]),
    ("unknown-output-key", {"output": {"tabel": "x"}}, duckmerge.ConfigError,
     ["tabel", "table", "provenance"]),
]


def _good_config() -> dict[str, Any]:
    return {"original": "crm", "enriched": ["va"], "keys": [EMAIL]}


def _bad_config(changes: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    config = _good_config()
    for k, v in changes.items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    return _with_tmp(config, tmp_path)


def _with_tmp(value: Any, tmp_path: Path) -> Any:
    """``value`` with "__TMP__" in every string replaced by ``tmp_path``."""
    if isinstance(value, str):
        return value.replace("__TMP__", str(tmp_path))
    if isinstance(value, list):
        return [_with_tmp(v, tmp_path) for v in value]
    if isinstance(value, dict):
        return {k: _with_tmp(v, tmp_path) for k, v in value.items()}
    return value


@pytest.fixture
def bad_config_data(session) -> duckmerge.Session:
    put(session, "crm", {"id": [1, 2], "email": ["ann@x.cz", "bob@x.cz"]})
    put(session, "va", {"email": ["ann@x.cz", "zz@x.cz"], "title": ["T", "Z"]})
    return session


@pytest.mark.parametrize(("changes", "exc", "needles"), [c[1:] for c in BAD_CONFIGS],
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_fails_before_any_work(bad_config_data, tmp_path, changes, exc, needles):
    """Bad configs "fail with a clear error before any work is done (no output
    table created)": the message names the step and the problem."""
    s = bad_config_data
    before = sorted(tables(s))
    with pytest.raises(exc) as info:
        duckmerge.MergeDriver().run(step_id=STEP, config=_bad_config(changes, tmp_path),
                                    inputs=None, ctx=s)
    message = str(info.value)
    for needle in [STEP, *needles]:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert STEP not in s.get_db_connection().tables()
    assert sorted(tables(s)) == before


@pytest.mark.parametrize(("changes", "exc", "needles"), [c[1:] for c in BAD_CONFIGS],
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_leaves_a_previous_output_intact(bad_config_data, tmp_path, changes, exc,
                                                    needles):
    """"... a previous output table intact": the step's table, __stats and
    __unmatched from a good run are exactly as they were."""
    s = bad_config_data
    duckmerge.MergeDriver().run(step_id=STEP, config=_good_config(), inputs=None, ctx=s)
    names = [STEP, f"{STEP}__stats", f"{STEP}__unmatched"]
    snapshot = {n: (cols(s, n), rows(s, f"SELECT * FROM {q(n)}")) for n in names}
    before = sorted(tables(s))
    with pytest.raises(exc):
        duckmerge.MergeDriver().run(step_id=STEP, config=_bad_config(changes, tmp_path),
                                    inputs=None, ctx=s)
    assert sorted(tables(s)) == before
    assert {n: (cols(s, n), rows(s, f"SELECT * FROM {q(n)}")) for n in names} == snapshot
    assert rows(s, f"SELECT id, title FROM {q(STEP)}") == [(1, "T"), (2, None)]


# --- ctx kinds ---------------------------------------------------------------------

CTX_TABLES: dict[str, dict[str, list[Any]]] = {
    "crm": {"id": [1, 2, 3, 4], "email": ["a@x.cz", "b@x.cz", None, "d@x.cz"],
            "phone": [None, None, "+420601111222", None]},
    "va": {"email": ["a@x.cz", "b@x.cz", "zz@x.cz"], "phone": [None, None, None],
           "title": ["CEO", "CTO", "Nobody"], "city": [None, "Brno", "Nowhere"]},
    "vb": {"email": ["A@X.CZ", None, "yy@x.cz"], "phone": [None, "601 111 222", None],
           "title": ["Chief Executive", "Dev", None], "city": ["Praha", "Ostrava", "Plzen"]},
}
CTX_CONFIG: dict[str, Any] = {"original": "crm", "enriched": ["va", "vb"],
                              "keys": [EMAIL, PHONE_CZ], "strategy": "longest"}
# By hand (longest): id1 email va0+vb0 -> "Chief Executive", Praha; id2 email va1 -> CTO,
# Brno; id3 phone vb1 -> Dev, Ostrava; id4 unmatched.
CTX_EXPECTED = [
    (1, "a@x.cz", None, "Chief Executive", "Praha", "matched", "email", ["va", "vb"]),
    (2, "b@x.cz", None, "CTO", "Brno", "matched", "email", ["va"]),
    (3, None, "+420601111222", "Dev", "Ostrava", "matched", "phone", ["vb"]),
    (4, "d@x.cz", None, None, None, "unmatched", None, []),
]
CTX_COLUMNS = ["id", "email", "phone", "title", "city", *PROV]


@pytest.fixture
def session_output(session) -> tuple[list[str], list[tuple[Any, ...]], dict[str, Any]]:
    """Runs the merge on a Session ctx; returns (columns, sorted rows, stats)."""
    for name, data in CTX_TABLES.items():
        put(session, name, data)
    out = merge(session, step_id="m", **CTX_CONFIG)
    result = (cols(session, "m"), unordered(rows(session, "SELECT * FROM m")), out["stats"])
    assert result[0] == CTX_COLUMNS
    assert result[1] == unordered(CTX_EXPECTED)
    return result


def test_session_ctx_gives_the_hand_derived_output(session_output):
    """The Session ctx itself: the output derived by hand in CTX_EXPECTED."""
    columns, got, stats = session_output
    assert (columns, got) == (CTX_COLUMNS, unordered(CTX_EXPECTED))
    assert stats["matched_per_key"] == {"email": 2, "phone": 1}


def test_duckmerge_connection_ctx_gives_the_same_output(session, session_output):
    """A plain object whose get_db_connection() returns session.get_db_connection()."""
    ctx = RecordingCtx(session.get_db_connection())
    out = merge(ctx, step_id="m_conn", **CTX_CONFIG)
    got = (cols(session, "m_conn"), unordered(rows(session, "SELECT * FROM m_conn")),
           out["stats"])
    assert got == session_output
    assert "merge_complete" in ctx.event_names


@pytest.fixture
def host_con(tmp_path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A duckdb-python connection holding the same input tables."""
    con = duckdb.connect(str(tmp_path / "host.duckdb"))
    for name, data in CTX_TABLES.items():
        tbl = pa.table({k: _array(v) for k, v in data.items()})
        con.register("__src", tbl)
        con.execute(f"CREATE TABLE {q(name)} AS SELECT * FROM __src")
        con.unregister("__src")
    try:
        yield con
    finally:
        con.close()


def test_duckdb_python_connection_ctx_gives_the_same_output(host_con, session_output):
    """A plain object whose get_db_connection() returns a duckdb-python connection
    holding the same input tables: the same output table and stats."""
    ctx = RecordingCtx(host_con)
    out = merge(ctx, step_id="m", **CTX_CONFIG)
    cur = host_con.execute("SELECT * FROM m")
    columns = [d[0] for d in cur.description]
    got = (columns, unordered([tuple(r) for r in cur.fetchall()]), out["stats"])
    assert got == session_output


def test_sliced_matching_gives_the_same_output(session, monkeypatch):
    """Big merges pick values and fetch them in slices of rows (to bound
    memory); tiny slices must give exactly the unsliced answer."""
    n = 40
    session.write_table("crm_s", pa.table({
        "id": list(range(n)),
        "email": [f"p{i}@x.cz" if i % 5 else None for i in range(n)],
        "phone": [f"+420 601 000 {i:03d}" for i in range(n)],
    }))
    session.write_table("va_s", pa.table({
        "email": [f"P{i % 30}@X.CZ " for i in range(60)],
        "phone": [None] * 60,
        "title": [f"t{i}" for i in range(60)],
    }))
    session.write_table("vb_s", pa.table({
        "email": [None] * 20,
        "phone": [f"00420601000{i:03d}" for i in range(0, 40, 2)],
        "title": [f"b{i}" for i in range(20)],
        "city": [f"c{i}" for i in range(20)],
    }))
    cfg = {"original": "crm_s", "enriched": ["va_s", "vb_s"], "strategy": "most_frequent",
           "field_strategies": {"city": "last"},
           "keys": ["email", {"column": "phone", "normalize": "phone"}]}
    whole = duckmerge.MergeDriver().run(step_id="whole", config=cfg, ctx=session)
    monkeypatch.setenv("DUCKMERGE_MERGE_SLICE_ROWS", "7")
    sliced = duckmerge.MergeDriver().run(step_id="sliced", config=cfg, ctx=session)
    assert sliced["stats"] == whole["stats"]
    assert session.sql("SELECT * FROM sliced").fetchall() == \
        session.sql("SELECT * FROM whole").fetchall()
    assert whole["stats"]["matched"] > 30  # the data really matches on both keys
