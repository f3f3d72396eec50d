"""Generate the small sample CSVs bundled with the examples.

The files are committed to git; this script documents how they were made and
regenerates them byte for byte (``random.Random(42)``, no clock, no locale)::

    python examples/data/make_samples.py

What they hold:

``crm.csv``
    200 contacts, the "original" side of a merge: ``id, first_name,
    last_name, email, phone, company, city, created_at``. Emails are clean
    lower case; phones are mostly E.164 (``+420601111222``), some written
    nationally (``601 111 222``), a few foreign (+421, +49); some emails,
    phones, companies and cities are empty, and a few contacts have neither
    email nor phone. Company names carry Czech diacritics, and one holds a
    comma and double quotes (``Kovo "Novák", s.r.o.``).

``vendor_a.csv``
    150 rows, ``email, phone, job_title, linkedin_url, city``. Emails carry
    case and whitespace noise relative to crm.csv (``  Jan.Novak@Example.cz``);
    phones are written as ``+420 601 111 222``, ``00420601111222`` or
    ``601-111-222``; some rows match only by phone (email missing or
    different), a few are exact duplicates, a few are the same contact twice
    with different values, and a few match nobody. One job title holds a comma
    and quotes (``Head of Sales, "EMEA"``).

``vendor_b.csv``
    150 rows, ``email, phone, company, industry, employees, revenue``, with
    the same kinds of noise, duplicates and strangers; ``company`` sometimes
    fills an empty CRM company and sometimes disagrees with it.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

N_CRM = 200
N_VENDOR = 150

FIRST_NAMES = [
    ("Jan", "Novák"),
    ("Petr", "Svoboda"),
    ("Martin", "Dvořák"),
    ("Tomáš", "Černý"),
    ("Jiří", "Procházka"),
    ("Pavel", "Kučera"),
    ("Lukáš", "Veselý"),
    ("Jakub", "Horák"),
    ("Ondřej", "Němec"),
    ("David", "Marek"),
    ("Michal", "Pospíšil"),
    ("Josef", "Hájek"),
]
FEMALE_NAMES = ["Jana", "Eva", "Hana", "Lucie", "Petra", "Kateřina", "Tereza", "Veronika"]
FEMALE_SURNAMES = {
    "Novák": "Nováková",
    "Svoboda": "Svobodová",
    "Dvořák": "Dvořáková",
    "Černý": "Černá",
    "Procházka": "Procházková",
    "Kučera": "Kučerová",
    "Veselý": "Veselá",
    "Horák": "Horáková",
    "Němec": "Němcová",
    "Marek": "Marková",
    "Pospíšil": "Pospíšilová",
    "Hájek": "Hájková",
}
COMPANIES = [
    "Acme CZ s.r.o.",
    "Brno Soft a.s.",
    "Vltava Logistics",
    "Praha Data s.r.o.",
    "Moravia Steel",
    "Český Obchod a.s.",
    'Kovo "Novák", s.r.o.',
    "Bohemia Foods",
    "Tatra Parts",
    "Ostrava Energy",
    "Plzeň Print s.r.o.",
    "Labe Analytics",
]
CITIES = [
    "Praha",
    "Brno",
    "Ostrava",
    "Plzeň",
    "Olomouc",
    "Liberec",
    "České Budějovice",
    "Hradec Králové",
    "Pardubice",
    "Zlín",
]
DOMAINS = ["example.cz", "firma.cz", "mail.example.com", "posta.cz"]
JOB_TITLES = [
    "CEO",
    "CTO",
    "Sales Manager",
    'Head of Sales, "EMEA"',
    "Data Analyst",
    "Office Manager",
    "Procurement Lead",
    "Marketing Specialist",
    "Engineer",
]
INDUSTRIES = ["Manufacturing", "Software", "Logistics", "Retail", "Energy", "Food"]

ASCII = str.maketrans("áčďéěíňóřšťúůýžÁČĎÉĚÍŇÓŘŠŤÚŮÝŽ", "acdeeinorstuuyzACDEEINORSTUUYZ")


def ascii_fold(text: str) -> str:
    return text.translate(ASCII)


CZ_MOBILE_PREFIXES = (
    [f"60{d}" for d in range(1, 9)]
    + [f"70{d}" for d in range(2, 6)]
    + [f"7{t}{d}" for t in (2, 3, 7, 9) for d in range(10)]
)


def make_crm(rng: random.Random) -> list[dict[str, str]]:
    used_emails: set[str] = set()
    used_phones: set[str] = set()
    rows = []
    for contact_id in range(1, N_CRM + 1):
        first, last = rng.choice(FIRST_NAMES)
        if rng.random() < 0.45:
            first, last = rng.choice(FEMALE_NAMES), FEMALE_SURNAMES[last]
        while True:
            local = f"{ascii_fold(first)}.{ascii_fold(last)}".lower()
            email = f"{local}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"
            if email not in used_emails:
                used_emails.add(email)
                break
        while True:
            # Czech mobile ranges libphonenumber accepts as valid (601-608,
            # 702-705, 72x, 73x, 77x, 79x): other 6xx/7xx numbers do not
            # exist and normalise to NULL, so they would never match.
            prefix = rng.choice(CZ_MOBILE_PREFIXES)
            national = f"{prefix}{rng.randint(0, 999_999):06d}"
            if national not in used_phones:
                used_phones.add(national)
                break
        style = rng.random()
        if style < 0.75:
            phone = f"+420{national}"
        elif style < 0.92:
            phone = f"{national[:3]} {national[3:6]} {national[6:]}"
        elif style < 0.96:
            phone = f"+421{national}"
        else:
            phone = f"+49 30 {national[:4]} {national[4:]}"
        year = rng.randint(2019, 2024)
        created_at = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        row = {
            "id": str(contact_id),
            "first_name": first,
            "last_name": last,
            "email": email,
            "phone": phone,
            "company": rng.choice(COMPANIES),
            "city": rng.choice(CITIES),
            "created_at": created_at,
        }
        for field, p_empty in (("email", 0.06), ("phone", 0.10), ("company", 0.12), ("city", 0.08)):
            if rng.random() < p_empty:
                row[field] = ""
        if contact_id in (37, 142):  # contacts no vendor can ever match
            row["email"] = row["phone"] = ""
        rows.append(row)
    return rows


def noisy_email(rng: random.Random, email: str) -> str:
    choice = rng.random()
    if choice < 0.30:
        return email
    if choice < 0.55:
        local, domain = email.split("@")
        return f"{local.title()}@{domain.title()}"
    if choice < 0.70:
        return email.upper()
    if choice < 0.85:
        return f"  {email} "
    return f" {email.capitalize()}\t"


def czech_digits(phone: str) -> str | None:
    """The 9 national digits of a Czech CRM phone, or None for a foreign one."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if phone.startswith("+420"):
        return digits[3:]
    if phone.startswith("+"):
        return None
    return digits


def noisy_phone(rng: random.Random, phone: str) -> str:
    national = czech_digits(phone)
    if national is None:
        return phone.replace(" ", "")
    choice = rng.random()
    if choice < 0.35:
        return f"+420 {national[:3]} {national[3:6]} {national[6:]}"
    if choice < 0.70:
        return f"00420{national}"
    return f"{national[:3]}-{national[3:6]}-{national[6:]}"


def stranger(rng: random.Random, n: int) -> tuple[str, str]:
    """An email and phone that no CRM contact has."""
    email = f"unknown.person{n}@elsewhere{rng.randint(1, 9)}.org"
    phone = f"+420 {rng.choice('89')}{rng.randint(0, 99):02d} {rng.randint(0, 999):03d} {n:03d}"
    return email, phone


def vendor_keys(rng: random.Random, contact: dict[str, str]) -> tuple[str, str]:
    """The (email, phone) a vendor has for a CRM contact, with noise."""
    email = noisy_email(rng, contact["email"]) if contact["email"] else ""
    phone = noisy_phone(rng, contact["phone"]) if contact["phone"] else ""
    roll = rng.random()
    if roll < 0.10 and phone:
        email = ""  # phone is the only key
    elif roll < 0.15 and phone:
        email = f"{contact['first_name'][0].lower()}.{ascii_fold(contact['last_name']).lower()}@gmail.com"
    elif roll < 0.22 and email:
        phone = ""  # email is the only key
    return email, phone


def make_vendor(
    rng: random.Random, crm: list[dict[str, str]], fields, fill
) -> list[dict[str, str]]:
    matchable = [c for c in crm if c["email"] or c["phone"]]
    n_strangers, n_exact_dupes, n_near_dupes = 6, 3, 2
    n_matched = N_VENDOR - n_strangers - n_exact_dupes - n_near_dupes
    rows = []
    for contact in rng.sample(matchable, n_matched):
        email, phone = vendor_keys(rng, contact)
        row = {"email": email, "phone": phone}
        fill(rng, row, contact)
        rows.append(row)
    for n in range(1, n_strangers + 1):
        email, phone = stranger(rng, n + 100 * len(fields))
        row = {"email": email, "phone": phone}
        fill(rng, row, None)
        rows.append(row)
    rows.extend(dict(row) for row in rng.sample(rows[:n_matched], n_exact_dupes))
    for original in rng.sample(rows[:n_matched], n_near_dupes):
        row = dict(original)
        fill(rng, row, None)  # same keys, other values: a conflict inside one vendor
        rows.append(row)
    rng.shuffle(rows)
    return [{field: row.get(field, "") for field in fields} for row in rows]


def fill_vendor_a(rng: random.Random, row: dict[str, str], contact: dict[str, str] | None) -> None:
    row["job_title"] = rng.choice(JOB_TITLES) if rng.random() < 0.9 else ""
    slug = ascii_fold(
        f"{contact['first_name']}-{contact['last_name']}" if contact else "someone"
    ).lower()
    row["linkedin_url"] = (
        f"https://www.linkedin.com/in/{slug}-{rng.randint(100, 999)}" if rng.random() < 0.8 else ""
    )
    if contact and contact["city"] and rng.random() < 0.8:
        row["city"] = contact["city"]  # agrees with the CRM
    else:
        row["city"] = rng.choice(CITIES) if rng.random() < 0.7 else ""


def fill_vendor_b(rng: random.Random, row: dict[str, str], contact: dict[str, str] | None) -> None:
    if contact and contact["company"] and rng.random() < 0.7:
        row["company"] = contact["company"]
    else:
        row["company"] = rng.choice(COMPANIES) if rng.random() < 0.8 else ""
    row["industry"] = rng.choice(INDUSTRIES) if rng.random() < 0.9 else ""
    row["employees"] = (
        str(rng.choice([5, 12, 25, 50, 120, 250, 800, 2500])) if rng.random() < 0.85 else ""
    )
    row["revenue"] = f"{rng.randint(1, 5000) * 10_000}" if rng.random() < 0.75 else ""


def write_csv(path: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{path.name}: {len(rows)} rows, {path.stat().st_size} bytes")


def main() -> None:
    rng = random.Random(42)
    crm = make_crm(rng)
    crm_fields = [
        "id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "company",
        "city",
        "created_at",
    ]
    write_csv(HERE / "crm.csv", crm_fields, crm)
    a_fields = ["email", "phone", "job_title", "linkedin_url", "city"]
    write_csv(HERE / "vendor_a.csv", a_fields, make_vendor(rng, crm, a_fields, fill_vendor_a))
    b_fields = ["email", "phone", "company", "industry", "employees", "revenue"]
    write_csv(HERE / "vendor_b.csv", b_fields, make_vendor(rng, crm, b_fields, fill_vendor_b))


if __name__ == "__main__":
    main()
