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

Usage::

    python benches/gen_crm.py OUT.csv --rows 1000000 [--seed 1]
    python benches/gen_crm.py OUT.csv.gz --rows 1000   # compressed, by extension

    from gen_crm import generate
    generate("crm.csv", rows=1_000_000, seed=1)   # -> {"path", "rows", "bytes", "seconds"}
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Bump when the output for a given (rows, seed) changes, so caches notice.
GEN_VERSION = 1

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
    national = f"(600000000 + {uniform(seed, 'phone', 100_000_000, row)})::VARCHAR"
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
    import duckdb

    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    name = target.name
    compression = "gzip" if name.endswith(".gz") else "zstd" if name.endswith(".zst") else "none"
    tmp = target.with_name(f".{name}.{uuid.uuid4().hex}.tmp")
    select = ",\n  ".join(f'{expr} AS "{col}"' for col, expr in columns.items())
    query = f"SELECT\n  {select}\nFROM range({int(rows)}) t({row})"
    started = time.perf_counter()
    con = duckdb.connect()
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.execute("SET preserve_insertion_order = true")  # rows in id order
        con.execute(
            f"COPY ({query}) TO {sql_string(str(tmp))} "
            f"(FORMAT csv, HEADER true, DELIMITER ',', QUOTE '\"', "
            f"COMPRESSION {sql_string(compression)})"
        )
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
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must be >= 0")
    done = generate(args.out, args.rows, args.seed, threads=args.threads)
    print(
        f"wrote {done['rows']:,} rows, {done['bytes'] / 1e6:.1f} MB, to {done['path']} "
        f"in {done['seconds']:.1f} s (seed {args.seed})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
