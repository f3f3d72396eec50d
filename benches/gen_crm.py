"""Generate large CRM-like CSV files for the benchmarks, fast and reproducibly.

One row per contact, 13 columns::

    id                 BIGINT     1..rows, never NULL
    customer_code      VARCHAR    "C" + 7 hex digits (a foreign-system id), ~2% NULL
    first_name         VARCHAR    Czech first names (diacritics), ~10% NULL
    last_name          VARCHAR    matching Czech surnames (male/female forms), ~10% NULL
    email              VARCHAR    first.last<id>@domain, lower case, ASCII, unique, ~10% NULL
    phone              VARCHAR    +420601111222 / 601 111 222 / +420 601 111 222, ~10% NULL
    company            VARCHAR    some hold commas and double quotes, ~10% NULL
    created_at         DATE       2015-01-01 .. 2024-12-30, ~10% NULL
    last_contact_at    TIMESTAMP  2020 .. 2024, to the second, ~10% NULL
    lifetime_value     DECIMAL    0.00 .. 99999.99, ~10% NULL
    discount_pct       DECIMAL    0.00 .. 50.00, ~10% NULL
    newsletter_opt_in  BOOLEAN    true / false, ~10% NULL
    notes              VARCHAR    free text: commas, "quotes" and newlines inside
                                  quoted fields; ~60% NULL

NULL is written as an empty field. The file is UTF-8 with a header and
``\\n`` line ends, quoted only where needed (DuckDB's ``COPY ... TO``), about
130 bytes a row: 1,000,000 rows are ~130 MB.

How: the whole file is one DuckDB statement, ``COPY (SELECT ... FROM
range(rows)) TO path``, run by the ``duckdb`` Python package. Every random
choice is ``hash(row, seed, salt)`` of the row number, so a row's values do
not depend on the thread that made it or on the other rows: the output is the
same for the same ``(rows, seed)`` (and DuckDB version), and 1M rows take a
few seconds. The file is written under a temp name and renamed, so a reader
never sees half of it.

Extending it (vendor files, noise): the column expressions are functions of a
*row expression* (``crm_columns(seed, row="i")``), so another generator can
recompute contact ``k``'s email or phone for any ``k`` -- e.g. a vendor row
``j`` that enriches CRM row ``hash(j, seed, 'pick') % crm_rows`` -- and add its
own columns or noise; ``write_csv(path, columns, rows)`` writes any such
``{name: sql}`` mapping. Helpers: ``rand``, ``pick``, ``chance``,
``nullable``, ``sql_list``.

Merge inputs (``benches/merge_bench.py``): ``merge_original_columns`` is a
13-column original (``city`` in place of ``discount_pct``, ~5% NULL emails,
~30% NULL phones) and ``vendor_query`` a vendor file enriching it: the same
people (emails with case and whitespace noise, phones as ``+420...``,
``00420...``, spaced and national), 5% exact duplicate rows, 10% rows that
match nobody; see its docstring. Both stream through ``COPY`` too.

Usage::

    python benches/gen_crm.py OUT.csv --rows 1000000 [--seed 1]
    python benches/gen_crm.py OUT.csv.gz --rows 1000   # compressed, by extension
    python benches/gen_crm.py crm.csv --merge-original --rows 1000000
    python benches/gen_crm.py vendor_0.csv --vendor 0 --crm-rows 1000000 --rows 800000

    from gen_crm import generate
    generate("crm.csv", rows=1_000_000, seed=1)   # -> {"path", "rows", "bytes", "seconds"}
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Bump when the output for a given (rows, seed) changes, so caches notice.
GEN_VERSION = 1
#: The same for the merge inputs (merge_original_columns, vendor_query).
MERGE_GEN_VERSION = 2  # 2: valid Czech mobile ranges for phones

NULL_FRACTION = 0.10

MALE_NAMES = [
    "Jan", "Petr", "Martin", "Tomáš", "Jiří", "Pavel", "Lukáš", "Jakub", "Ondřej",
    "David", "Michal", "Josef", "Václav", "Karel", "Filip", "Adam", "Vojtěch", "Matěj",
]  # fmt: skip
FEMALE_NAMES = [
    "Jana", "Eva", "Hana", "Lucie", "Petra", "Kateřina", "Tereza", "Veronika",
    "Markéta", "Lenka", "Alena", "Barbora", "Zuzana", "Michaela", "Klára", "Anna",
]  # fmt: skip
#: Surnames as (male form, female form).
SURNAMES = [
    ("Novák", "Nováková"), ("Svoboda", "Svobodová"), ("Novotný", "Novotná"),
    ("Dvořák", "Dvořáková"), ("Černý", "Černá"), ("Procházka", "Procházková"),
    ("Kučera", "Kučerová"), ("Veselý", "Veselá"), ("Horák", "Horáková"),
    ("Němec", "Němcová"), ("Marek", "Marková"), ("Pospíšil", "Pospíšilová"),
    ("Hájek", "Hájková"), ("Král", "Králová"), ("Jelínek", "Jelínková"),
    ("Růžička", "Růžičková"), ("Beneš", "Benešová"), ("Fiala", "Fialová"),
    ("Sedláček", "Sedláčková"), ("Doležal", "Doležalová"), ("Zeman", "Zemanová"),
    ("Kolář", "Kolářová"), ("Navrátil", "Navrátilová"), ("Čermák", "Čermáková"),
]  # fmt: skip
COMPANIES = [
    "Acme CZ s.r.o.", "Brno Soft a.s.", "Vltava Logistics", "Praha Data s.r.o.",
    "Moravia Steel", "Český Obchod a.s.", 'Kovo "Novák", s.r.o.', "Bohemia Foods",
    "Tatra Parts", "Ostrava Energy", "Plzeň Print s.r.o.", "Labe Analytics",
    "Šumava Wood, a.s.", 'Café "U Zlatého Lva"', "Krkonoše Travel", "Zlín Plast s.r.o.",
    "Hanácká Mlékárna", "Jihočeská Energie", 'Stavby "Pevnost", v.o.s.', "Olomouc IT",
]  # fmt: skip
DOMAINS = [
    "example.cz", "firma.cz", "posta.cz", "mail.test", "example.com", "corp.test",
    "firma.example", "mail.example.com",
]  # fmt: skip
#: Pieces of free text; joined 1-2 at a time. Commas, quotes and newlines on purpose.
NOTE_FRAGMENTS = [
    "Called back, no answer.",
    'Asked for "the usual" discount',
    "Prefers e-mail",
    "Met at the Brno fair, 2023",
    "VIP",
    'Said: "call me after 5pm"',
    "Moved to a new office.\nUpdate the address",
    "Invoice overdue, sent reminder",
    "Interested in product X, Y and Z",
    "Line one\nline two, with a comma",
    "Do not call",
    "Ceník zaslán e-mailem",
]  # fmt: skip


CITIES = [
    "Praha", "Brno", "Ostrava", "Plzeň", "Liberec", "Olomouc", "České Budějovice",
    "Hradec Králové", "Ústí nad Labem", "Pardubice", "Zlín", "Havířov", "Kladno",
    "Most", "Opava", "Jihlava", "Karviná", "Teplice", "Děčín", "Karlovy Vary",
]  # fmt: skip
JOB_TITLES = [
    "CEO", "CFO", "CTO", "Head of Sales", "Sales Manager", "Account Manager",
    "Marketing Manager", "Office Manager", "Buyer", "Procurement Lead", "Engineer",
    "Data Analyst", "HR Manager", "Owner", "Jednatel", "Ředitel", "Asistentka",
]  # fmt: skip
INDUSTRIES = [
    "Manufacturing", "Retail", "Logistics", "IT", "Finance", "Construction",
    "Food & Beverage", "Energy", "Healthcare", "Public sector", "Education", "Media",
]  # fmt: skip
COMPANY_SIZES = ["1-9", "10-49", "50-249", "250-999", "1000+"]

#: Columns of a vendor file made by :func:`vendor_query`, in file order.
VENDOR_COLUMNS = (
    "email", "phone", "first_name", "last_name", "company", "city", "job_title",
    "industry", "company_size", "linkedin_url", "updated_at",
)  # fmt: skip


# --------------------------------------------------------------------------- SQL helpers


def sql_string(value: str) -> str:
    """A SQL string literal (newlines are fine inside DuckDB literals)."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(sql_string(v) for v in values) + "]"


def rand(seed: int, salt: str, row: str = "i") -> str:
    """A pseudo-random UBIGINT for ``row``: the same for the same (row, seed, salt)."""
    return f"hash({row}, {int(seed)}, {sql_string(salt)})"


def uniform(seed: int, salt: str, n: int, row: str = "i") -> str:
    """A pseudo-random integer in [0, n)."""
    return f"({rand(seed, salt, row)} % {int(n)})::BIGINT"


def pick(values: Sequence[str], seed: int, salt: str, row: str = "i") -> str:
    """One of ``values``, uniformly."""
    return f"{sql_list(values)}[1 + {uniform(seed, salt, len(values), row)}]"


def chance(p: float, seed: int, salt: str, row: str = "i") -> str:
    """A condition true for a fraction ``p`` of the rows."""
    return f"({rand(seed, salt, row)} % 1000000) < {round(p * 1_000_000)}"


def nullable(expr: str, p: float, seed: int, salt: str, row: str = "i") -> str:
    """``expr``, or NULL for a fraction ``p`` of the rows."""
    return f"CASE WHEN {chance(p, seed, salt + ':null', row)} THEN NULL ELSE {expr} END"


# --------------------------------------------------------------------------- the CRM file


#: Czech mobile ranges libphonenumber accepts as valid numbers. Contacts get
#: these; vendor rows that match nobody get 702-705 numbers, also valid but
#: never a contact's.
CZ_MOBILE_PREFIXES = (
    [f"60{d}" for d in range(1, 9)] + [f"7{t}{d}" for t in (2, 3, 7, 9) for d in range(10)]
)


def phone_national(seed: int, row: str = "i") -> str:
    """A contact's phone number as 9 national digits in a valid Czech mobile
    range (SQL VARCHAR), so the phone key can match as in real data."""
    return (
        f"({pick(CZ_MOBILE_PREFIXES, seed, 'phone', row)} || "
        f"lpad(CAST({uniform(seed, 'phone_rest', 1_000_000, row)} AS VARCHAR), 6, '0'))"
    )


def person_columns(seed: int, row: str = "i") -> dict[str, str]:
    """A contact's identity, before NULLs: first/last name, email, phone (SQL)."""
    female = chance(0.45, seed, "female", row)
    first = (
        f"CASE WHEN {female} THEN {pick(FEMALE_NAMES, seed, 'first', row)} "
        f"ELSE {pick(MALE_NAMES, seed, 'first', row)} END"
    )
    surname = uniform(seed, "last", len(SURNAMES), row)
    last = (
        f"CASE WHEN {female} THEN {sql_list([f for _, f in SURNAMES])}[1 + {surname}] "
        f"ELSE {sql_list([m for m, _ in SURNAMES])}[1 + {surname}] END"
    )
    # The row number keeps every email unique.
    email = (
        f"lower(strip_accents({first}) || '.' || strip_accents({last})) || ({row} + 1)::VARCHAR "
        f"|| '@' || {pick(DOMAINS, seed, 'domain', row)}"
    )
    national = phone_national(seed, row)
    style = uniform(seed, "phone_style", 100, row)
    phone = (
        f"CASE WHEN {style} < 60 THEN '+420' || {national} "
        f"WHEN {style} < 85 THEN substr({national}, 1, 3) || ' ' || substr({national}, 4, 3) "
        f"|| ' ' || substr({national}, 7, 3) "
        f"ELSE '+420 ' || substr({national}, 1, 3) || ' ' || substr({national}, 4, 3) "
        f"|| ' ' || substr({national}, 7, 3) END"
    )
    return {"first_name": first, "last_name": last, "email": email, "phone": phone}


def crm_columns(seed: int, row: str = "i") -> dict[str, str]:
    """The 13 CRM columns as ``{name: SQL expression of row}``, in file order."""
    person = person_columns(seed, row)
    code = f"'C' || lpad(upper(to_hex({uniform(seed, 'code', 1 << 28, row)})), 7, '0')"
    created = f"DATE '2015-01-01' + {uniform(seed, 'created', 3651, row)}::INTEGER"
    seconds = uniform(seed, "contact", 5 * 365 * 86400, row)
    last_contact = f"TIMESTAMP '2020-01-01 00:00:00' + to_seconds({seconds})"
    ltv = f"({uniform(seed, 'ltv', 10_000_000, row)}::DECIMAL(18, 0) / 100)::DECIMAL(9, 2)"
    discount = f"({uniform(seed, 'discount', 5001, row)}::DECIMAL(18, 0) / 100)::DECIMAL(4, 2)"
    opt_in = f"({rand(seed, 'opt_in', row)} % 2) = 0"
    two = chance(0.25, seed, "notes_two", row)
    notes = (
        f"CASE WHEN {two} THEN {pick(NOTE_FRAGMENTS, seed, 'note1', row)} || ' ' || "
        f"{pick(NOTE_FRAGMENTS, seed, 'note2', row)} "
        f"ELSE {pick(NOTE_FRAGMENTS, seed, 'note1', row)} END"
    )

    def n(name: str, expr: str, p: float = NULL_FRACTION) -> str:
        return nullable(expr, p, seed, name, row)

    return {
        "id": f"({row} + 1)::BIGINT",
        "customer_code": n("customer_code", code, 0.02),
        "first_name": n("first_name", person["first_name"]),
        "last_name": n("last_name", person["last_name"]),
        "email": n("email", person["email"]),
        "phone": n("phone", person["phone"]),
        "company": n("company", pick(COMPANIES, seed, "company", row)),
        "created_at": n("created_at", created),
        "last_contact_at": n("last_contact_at", last_contact),
        "lifetime_value": n("lifetime_value", ltv),
        "discount_pct": n("discount_pct", discount),
        "newsletter_opt_in": n("newsletter_opt_in", opt_in),
        "notes": n("notes", notes, 0.60),
    }


# --------------------------------------------------------------------------- merge inputs


def merge_original_columns(seed: int, row: str = "i") -> dict[str, str]:
    """The merge benchmark's "original" CRM file: 13 columns, ``{name: SQL}``.

    The :func:`crm_columns` contacts (same names, emails, phones, companies
    for the same ``(row, seed)``) with ``city`` in place of
    ``discount_pct``, ~5% NULL emails and ~30% NULL phones::

        id, customer_code, first_name, last_name, email, phone, company, city,
        created_at, last_contact_at, lifetime_value, newsletter_opt_in, notes
    """
    base = crm_columns(seed, row)
    person = person_columns(seed, row)
    out: dict[str, str] = {}
    for name, expr in base.items():
        if name == "discount_pct":
            continue
        if name == "email":
            expr = nullable(person["email"], 0.05, seed, "email", row)
        elif name == "phone":
            expr = nullable(person["phone"], 0.30, seed, "phone", row)
        out[name] = expr
        if name == "company":
            out["city"] = nullable(
                pick(CITIES, seed, "city", row), NULL_FRACTION, seed, "city", row
            )
    return out


def _coprime_multiplier(modulus: int, start: int) -> int:
    """An odd number >= ``start`` with no factor in common with ``modulus``."""
    a = start | 1
    while math.gcd(a, modulus) != 1:
        a += 2
    return a


def vendor_query(
    crm_rows: int,
    rows: int,
    vendor: int,
    seed: int = 1,
    *,
    nobody: float = 0.10,
    duplicates: float = 0.05,
    repeats: float = 0.08,
    email_null: float = 0.05,
    phone_null: float = 0.10,
) -> str:
    """SQL for vendor file number ``vendor`` (0, 1, ...) enriching the ``crm_rows``-row
    :func:`merge_original_columns` file made with the same ``seed``.

    Its ``rows`` rows, columns :data:`VENDOR_COLUMNS`:

    * ``duplicates`` (5%): exact copies of another row of the same file
      (every 20th row, copying a random non-copy row);
    * ``nobody`` (10%) of the rest: people the original does not hold
      (emails with numbers past ``crm_rows``, phones 70[2-5] xxx xxx where the
      original's are 6xx xxx xxx), so they match nobody;
    * the others: a contact of the original -- contact ``(a*slot + b) % crm_rows``
      with ``a, b`` per vendor, so one vendor lists each contact at most once
      per ``crm_rows`` rows, and the vendors overlap at random -- except that
      ``repeats`` (8%) take the contact of another random slot: a second,
      different record for someone the vendor may list already;
    * email: the contact's, ~``email_null`` NULL, else in upper case (15%),
      capitalised (15%) or with an upper-case local part (15%), and with a
      leading, trailing or both spaces (20%);
    * phone: the contact's number, ~``phone_null`` NULL, written as
      ``+420601111222`` (30%), ``00420601111222`` (20%), ``+420 601 111 222``
      (20%), ``601 111 222`` (15%) or ``601111222`` (15%);
    * first/last name (~10% NULL each), company and city (70% the
      original's value, else another; ~20% NULL), job_title, industry,
      company_size, linkedin_url and updated_at (~15-40% NULL).

    Every random choice is a hash of the row's *source* slot, so a copy is
    byte-identical to its original row and the file is the same for the same
    arguments.
    """
    if crm_rows < 1 or rows < 0:
        raise ValueError(f"need crm_rows >= 1 and rows >= 0, got {crm_rows} and {rows}")
    if not 0 <= duplicates <= 0.5:
        raise ValueError(f"duplicates must be in [0, 0.5], got {duplicates}")
    v = f"v{int(vendor)}:"
    a = _coprime_multiplier(crm_rows, 1_000_003 + 7_919 * 2 * int(vendor) + 104_729 * int(seed))
    b = (int(seed) * 7_777_777 + int(vendor) * 1_234_567 + 12_345) % crm_rows
    if duplicates > 0 and rows > 1:
        period = max(2, round(1 / duplicates))
        last = period - 1
        source = (
            f"CASE WHEN j % {period} = {last} "
            f"THEN h - CASE WHEN h % {period} = {last} THEN 1 ELSE 0 END ELSE j END"
        )
    else:
        source = "j"
    person = person_columns(seed, "p")
    national = (
        f"CASE WHEN nobody THEN ('70' || CAST(2 + {uniform(seed, 'nobody_phone', 4, 'p')} AS VARCHAR)"
        f" || lpad(CAST({uniform(seed, 'nobody_phone_rest', 1_000_000, 'p')} AS VARCHAR), 6, '0'))"
        f" ELSE {phone_national(seed, 'p')} END"
    )
    phone_style = uniform(seed, v + "phone_style", 100, "s")
    spaced = "substr(n, 1, 3) || ' ' || substr(n, 4, 3) || ' ' || substr(n, 7, 3)"
    phone = (
        f"CASE WHEN {phone_style} < 30 THEN '+420' || n "
        f"WHEN {phone_style} < 50 THEN '00420' || n "
        f"WHEN {phone_style} < 70 THEN '+420 ' || {spaced} "
        f"WHEN {phone_style} < 85 THEN {spaced} ELSE n END"
    )
    case_style = uniform(seed, v + "email_case", 100, "s")
    space_style = uniform(seed, v + "email_space", 100, "s")
    cased = (
        f"CASE WHEN {case_style} < 55 THEN e "
        f"WHEN {case_style} < 70 THEN upper(e) "
        f"WHEN {case_style} < 85 THEN upper(left(e, 1)) || substr(e, 2) "
        f"ELSE upper(split_part(e, '@', 1)) || '@' || split_part(e, '@', 2) END"
    )
    email = (
        f"CASE WHEN {space_style} < 80 THEN {cased} "
        f"WHEN {space_style} < 88 THEN ' ' || {cased} "
        f"WHEN {space_style} < 95 THEN {cased} || ' ' "
        f"ELSE '  ' || {cased} || ' ' END"
    )

    def same_or_other(values: Sequence[str], salt: str) -> str:
        return (
            f"CASE WHEN {chance(0.7, seed, v + salt + '_same', 's')} "
            f"THEN {pick(values, seed, salt, 'p')} ELSE {pick(values, seed, v + salt, 's')} END"
        )

    def n(name: str, expr: str, p: float) -> str:
        return nullable(expr, p, seed, v + name, "s")

    linkedin = (
        "'https://www.linkedin.com/in/' || lower(strip_accents(first_name_ || '-' || "
        f"last_name_)) || '-' || to_hex({uniform(seed, 'linkedin', 1 << 24, 'p')})"
    )
    updated = f"DATE '2022-01-01' + {uniform(seed, v + 'updated', 1096, 's')}::INTEGER"
    columns = {
        "email": n("email", "e_noisy", email_null),
        "phone": n("phone", "phone_", phone_null),
        "first_name": n("first_name", "first_name_", 0.10),
        "last_name": n("last_name", "last_name_", 0.10),
        "company": n("company", same_or_other(COMPANIES, "company"), 0.20),
        "city": n("city", same_or_other(CITIES, "city"), 0.20),
        "job_title": n("job_title", pick(JOB_TITLES, seed, v + "job", "s"), 0.15),
        "industry": n("industry", pick(INDUSTRIES, seed, v + "industry", "s"), 0.20),
        "company_size": n("company_size", pick(COMPANY_SIZES, seed, v + "size", "s"), 0.25),
        "linkedin_url": n("linkedin_url", linkedin, 0.40),
        "updated_at": n("updated_at", updated, 0.15),
    }
    assert tuple(columns) == VENDOR_COLUMNS
    select = ",\n  ".join(f'{expr} AS "{col}"' for col, expr in columns.items())
    # One CTE per layer keeps every expression computed once per row.
    return f"""WITH slots AS (
  SELECT j, {source} AS s
  FROM (SELECT j, {uniform(seed, v + "dup_source", max(rows, 1), "j")} AS h
        FROM range({int(rows)}) t(j))
), kinds AS (
  SELECT j, s, {chance(nobody, seed, v + "nobody", "s")} AS nobody,
    CASE WHEN {chance(repeats, seed, v + "repeat", "s")}
      THEN {uniform(seed, v + "repeat_of", max(rows, 1), "s")} ELSE s END AS slot
  FROM slots
), people AS (
  SELECT j, s, nobody,
    CASE WHEN nobody THEN {int(crm_rows)} + s
      ELSE ({a} * (slot % {int(crm_rows)}) + {b}) % {int(crm_rows)} END AS p
  FROM kinds
), contacts AS (
  SELECT j, s, p, nobody, {person["first_name"]} AS first_name_,
    {person["last_name"]} AS last_name_, {person["email"]} AS e, {national} AS n
  FROM people
), noisy AS (
  SELECT *, {email} AS e_noisy, {phone} AS phone_ FROM contacts
)
SELECT
  {select}
FROM noisy"""


def generate_merge_original(
    path: str | os.PathLike[str], rows: int, seed: int = 1, *, threads: int | None = None
) -> dict:
    """Writes the merge benchmark's ``rows``-row original (:func:`merge_original_columns`)."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    return write_csv(path, merge_original_columns(seed), rows, threads=threads)


def generate_vendor(
    path: str | os.PathLike[str],
    crm_rows: int,
    rows: int,
    vendor: int,
    seed: int = 1,
    *,
    threads: int | None = None,
    **options: float,
) -> dict:
    """Writes vendor file ``vendor`` (:func:`vendor_query`); emails always quoted, so
    their leading/trailing spaces reach every CSV reader."""
    query = vendor_query(crm_rows, rows, vendor, seed, **options)
    return copy_to_csv(path, query, rows, threads=threads, force_quote=("email",))


# --------------------------------------------------------------------------- writing


def write_csv(
    path: str | os.PathLike[str],
    columns: Mapping[str, str],
    rows: int,
    *,
    row: str = "i",
    threads: int | None = None,
) -> dict:
    """Writes ``SELECT <columns> FROM range(rows) t(<row>)`` to ``path`` as CSV.

    Compression follows the extension (``.gz``, ``.zst``). The file appears
    only when complete (temp name in the same folder, then a rename).
    Returns ``{"path", "rows", "bytes", "seconds"}``.
    """
    select = ",\n  ".join(f'{expr} AS "{col}"' for col, expr in columns.items())
    query = f"SELECT\n  {select}\nFROM range({int(rows)}) t({row})"
    return copy_to_csv(path, query, rows, threads=threads)


def copy_to_csv(
    path: str | os.PathLike[str],
    query: str,
    rows: int,
    *,
    threads: int | None = None,
    force_quote: Sequence[str] = (),
) -> dict:
    """Writes the result of ``query`` (``rows`` rows, for the report) to ``path`` as CSV.

    The query runs in a fresh in-memory duckdb-python connection as one
    ``COPY ... TO``, so no row passes through Python and any size streams.
    Compression follows the extension (``.gz``, ``.zst``); ``force_quote``
    names columns always written quoted (e.g. to keep leading spaces visible
    to every CSV reader). The file appears only when complete (temp name in
    the same folder, then a rename). Returns ``{"path", "rows", "bytes", "seconds"}``.
    """
    import duckdb

    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    name = target.name
    compression = "gzip" if name.endswith(".gz") else "zstd" if name.endswith(".zst") else "none"
    tmp = target.with_name(f".{name}.{uuid.uuid4().hex}.tmp")
    options = (
        f"FORMAT csv, HEADER true, DELIMITER ',', QUOTE '\"', COMPRESSION {sql_string(compression)}"
    )
    if force_quote:
        options += ", FORCE_QUOTE (" + ", ".join(f'"{c}"' for c in force_quote) + ")"
    started = time.perf_counter()
    con = duckdb.connect()
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.execute("SET preserve_insertion_order = true")  # rows in id order
        con.execute(f"COPY ({query}) TO {sql_string(str(tmp))} ({options})")
        os.replace(tmp, target)
    finally:
        con.close()
        tmp.unlink(missing_ok=True)
    return {
        "path": str(target),
        "rows": int(rows),
        "bytes": target.stat().st_size,
        "seconds": time.perf_counter() - started,
    }


def generate(
    path: str | os.PathLike[str], rows: int, seed: int = 1, *, threads: int | None = None
) -> dict:
    """Writes a ``rows``-row CRM CSV to ``path``; the same bytes for the same seed."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    return write_csv(path, crm_columns(seed), rows, threads=threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", help="the CSV file to write (.csv, .csv.gz, .csv.zst)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--merge-original",
        action="store_true",
        help="write the merge benchmark's original (13 columns, with city) instead",
    )
    kind.add_argument(
        "--vendor",
        type=int,
        metavar="N",
        help="write vendor file N (0, 1, ...) enriching a --crm-rows merge original instead",
    )
    parser.add_argument(
        "--crm-rows", type=int, help="with --vendor: rows of the original it enriches"
    )
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must be >= 0")
    if args.vendor is not None:
        if args.vendor < 0 or not args.crm_rows or args.crm_rows < 1:
            parser.error("--vendor needs N >= 0 and --crm-rows >= 1")
        done = generate_vendor(
            args.out, args.crm_rows, args.rows, args.vendor, args.seed, threads=args.threads
        )
    elif args.crm_rows is not None:
        parser.error("--crm-rows goes with --vendor")
    elif args.merge_original:
        if args.rows < 1:
            parser.error("--merge-original needs --rows >= 1")
        done = generate_merge_original(args.out, args.rows, args.seed, threads=args.threads)
    else:
        done = generate(args.out, args.rows, args.seed, threads=args.threads)
    print(
        f"wrote {done['rows']:,} rows, {done['bytes'] / 1e6:.1f} MB, to {done['path']} "
        f"in {done['seconds']:.1f} s (seed {args.seed})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
