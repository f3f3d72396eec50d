"""The ``duckmerge`` command line.

Commands::

    duckmerge merge ORIGINAL ENRICHED... --key email --key phone -o merged.csv
    duckmerge extract FILE --session DIR [--table NAME] [CSV options]
    duckmerge write --session DIR --table NAME -o FILE
    duckmerge sql --session DIR "SELECT ..."
    duckmerge tables --session DIR
    duckmerge demo [--rows N] [--keep DIR]

Exit codes: 0 success; 1 a data or processing error (a missing input file,
session or table, a bad CSV line, a failing query, an I/O error); 2 a usage
or config error (a bad option, an unknown strategy, a key column the files
lack); 130 interrupted (Ctrl-C). Errors are one line on stderr,
``duckmerge: error: ...``; ``--debug`` adds the traceback.

>>> from duckmerge.cli import main
>>> main(["tables", "--session", "runs/job-42"])
0
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import decimal
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import duckmerge

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PROG = "duckmerge"

#: The merge's stages, in order, as the engine names them in progress events.
MERGE_STAGES = ("import_original", "import_enriched", "consolidate", "match_merge", "export")
STRATEGIES = (
    "first",
    "last",
    "longest",
    "most_complete",
    "source_priority",
    "most_recent",
    "most_frequent",
)
ON_CONFLICT = ("fill", "overwrite", "keep_both")
NORMALIZERS = ("text", "email", "phone", "exact")
OUTPUT_SUFFIXES = (".csv", ".csv.gz", ".csv.zst", ".parquet")

EPILOG = """\
exit codes: 0 success; 1 data or processing error (missing input file, session
or table, bad CSV, failing SQL, I/O); 2 usage or config error (bad option,
unknown strategy, key column missing from the files); 130 interrupted (Ctrl-C).
Run 'duckmerge COMMAND -h' for a command's options."""


class CliError(Exception):
    """A problem the command line itself found; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------
# argument types


def _key_arg(text: str) -> str:
    """``COLUMN`` or ``COLUMN:NORMALIZER``, checked; returned as given."""
    column, sep, normalizer = text.rpartition(":")
    if not sep:
        column, normalizer = text, ""
    if not column.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: give a column name, e.g. email or phone:phone")
    if sep and normalizer not in NORMALIZERS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown normalizer {normalizer!r}; use one of {', '.join(NORMALIZERS)}"
        )
    return text


def _region_arg(text: str) -> str:
    if len(text) != 2 or not text.isascii() or not text.isalpha():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a two-letter country code such as CZ"
        )
    return text.upper()


def _field_strategy_arg(text: str) -> tuple[str, str]:
    field, sep, strategy = text.partition("=")
    if not sep or not field or strategy not in STRATEGIES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write FIELD=STRATEGY with a strategy among {', '.join(STRATEGIES)}"
        )
    return field, strategy


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _char_arg(text: str) -> str:
    """A delimiter-like character; ``\\t`` and ``tab`` mean a tab."""
    if text in ("\\t", "tab", "TAB"):
        return "\t"
    return text


def _name_value_arg(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: write COLUMN=TYPE, e.g. zip=str")
    return name, value


def _columns_arg(text: str) -> list[str]:
    columns = [c.strip() for c in text.split(",")]
    if not all(columns):
        raise argparse.ArgumentTypeError(f"{text!r}: write a comma-separated list of columns")
    return columns


# --------------------------------------------------------------------------
# the parser


def build_parser() -> argparse.ArgumentParser:
    """The ``duckmerge`` argument parser (one sub-parser per command)."""
    # Options every command takes; SUPPRESS so a sub-command's default never
    # overwrites a value given before the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback when a command fails",
    )

    session_opts = argparse.ArgumentParser(add_help=False)
    group = session_opts.add_argument_group("session options")
    group.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="DuckDB memory limit, e.g. 500MB or 2GB (default: $DUCKMERGE_MEMORY_LIMIT or 500MB)",
    )
    group.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="DuckDB threads (default: $DUCKMERGE_THREADS or cores - 1)",
    )

    report_opts = argparse.ArgumentParser(add_help=False)
    group = report_opts.add_argument_group("output options")
    group.add_argument(
        "--json", action="store_true", help="print the result as JSON on stdout, nothing else"
    )
    group.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Merge CRM contact data with vendor files and move tables in and out "
        "of a DuckDB session.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{PROG} {duckmerge.__version__} (DuckDB {duckmerge.DUCKDB_VERSION})",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback when a command fails"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # merge ------------------------------------------------------------------
    p = commands.add_parser(
        "merge",
        parents=[common, session_opts, report_opts],
        help="merge an original CRM file with enriched vendor files",
        description="Merge ORIGINAL with the ENRICHED files: one output row per original "
        "row, matched on the first --key (in order) that a vendor row shares after "
        "normalisation.",
        epilog="Examples:\n"
        "  duckmerge merge crm.csv vendor_a.csv vendor_b.csv --key email --key phone "
        "--region CZ -o merged.csv\n"
        "  duckmerge merge crm.csv v.csv --key email:email --strategy most_complete "
        "-o merged.parquet --session runs/job-42\n\n" + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "original",
        metavar="ORIGINAL",
        help="the CRM file (.csv, .csv.gz, .csv.zst, .parquet); with --session, "
        "also a table name in that session",
    )
    p.add_argument(
        "enriched",
        metavar="ENRICHED",
        nargs="+",
        help="vendor files (or session tables), named in the stats after the file stem",
    )
    p.add_argument(
        "--key",
        "-k",
        dest="keys",
        action="append",
        required=True,
        type=_key_arg,
        metavar="COLUMN[:NORMALIZER]",
        help="a matching key, repeatable, tried in order. NORMALIZER is one of "
        f"{', '.join(NORMALIZERS)}; default: email for a column named like *email*, phone "
        "for *phone*/*mobile*/*tel*, text otherwise",
    )
    p.add_argument(
        "--region",
        type=_region_arg,
        metavar="CC",
        help="country for national phone numbers in phone keys, e.g. CZ (601 111 222 -> +420...)",
    )
    p.add_argument(
        "--field",
        "-f",
        dest="fields",
        action="append",
        metavar="FIELD",
        help="an enriched column to bring in, repeatable (default: every non-key column)",
    )
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="first",
        metavar="STRATEGY",
        help="how a field's value is chosen among matching vendor rows: "
        f"{', '.join(STRATEGIES)} (default: first)",
    )
    p.add_argument(
        "--field-strategy",
        dest="field_strategies",
        action="append",
        type=_field_strategy_arg,
        metavar="FIELD=STRATEGY",
        help="a per-field strategy, repeatable",
    )
    p.add_argument(
        "--recency-column",
        metavar="COLUMN",
        help="the enriched column the most_recent strategy orders by",
    )
    p.add_argument(
        "--on-conflict",
        choices=ON_CONFLICT,
        default="fill",
        help="for fields the original also has: fill (keep the original's non-empty value, "
        "the default), overwrite, or keep_both (adds <field>_enriched)",
    )
    p.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="OUT",
        help="the output file: .csv, .csv.gz, .csv.zst or .parquet (written atomically)",
    )
    p.add_argument(
        "--session",
        metavar="DIR",
        help="keep the work in this session folder (a rerun resumes); default: a temporary "
        "session, removed at the end",
    )
    p.add_argument(
        "--table",
        default="merged",
        metavar="NAME",
        help="the merged table's name in the session (default: merged)",
    )
    p.set_defaults(func=cmd_merge)

    # extract ----------------------------------------------------------------
    p = commands.add_parser(
        "extract",
        parents=[common, session_opts, report_opts],
        help="load a CSV file into a session table",
        description="Load FILE into table NAME of the session in DIR (created if needed). "
        "The table is replaced only once the whole file has loaded.",
        epilog="Example:\n  duckmerge extract vendor.csv --session runs/job-42 --table vendor "
        "--delimiter ';' --encoding cp1250 --on-bad-lines reject\n\n" + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="the CSV file (.csv, .csv.gz, .csv.zst)")
    p.add_argument("--session", required=True, metavar="DIR", help="the session folder")
    p.add_argument(
        "--table", metavar="NAME", help="the table to create (default: the file's stem)"
    )
    g = p.add_argument_group("CSV options")
    g.add_argument(
        "--delimiter",
        type=_char_arg,
        metavar="CHAR",
        help="field separator (default ','); 'auto' sniffs it, '\\t' or 'tab' for tabs",
    )
    g.add_argument("--quotechar", metavar="CHAR", help="quote character (default '\"')")
    g.add_argument("--escapechar", metavar="CHAR", help="escape character (default: the quote)")
    g.add_argument("--encoding", metavar="NAME", help="file encoding (default utf-8)")
    g.add_argument(
        "--compression",
        choices=("infer", "gzip", "zstd", "none"),
        help="default: from the extension",
    )
    g.add_argument(
        "--no-header",
        dest="header",
        action="store_false",
        default=None,
        help="the file has no header row (columns are column0, column1, ...)",
    )
    g.add_argument(
        "--header-row",
        type=_non_negative_int,
        metavar="N",
        help="the 0-based row that holds the header",
    )
    g.add_argument(
        "--columns", type=_columns_arg, metavar="A,B,...", help="keep these columns, in this order"
    )
    g.add_argument(
        "--skip-rows", type=_non_negative_int, metavar="N", help="lines to skip before the header"
    )
    g.add_argument("--limit", type=_non_negative_int, metavar="N", help="keep at most N rows")
    g.add_argument("--comment", metavar="CHAR", help="skip lines starting with CHAR")
    g.add_argument(
        "--dtype",
        action="append",
        type=_name_value_arg,
        metavar="COLUMN=TYPE",
        help="a column's type (int, float, str, bool, date, datetime or a DuckDB type), "
        "repeatable",
    )
    g.add_argument(
        "--parse-dates",
        action="append",
        metavar="COLUMN",
        help="read COLUMN as a timestamp, repeatable",
    )
    g.add_argument(
        "--na-value",
        dest="na_values",
        action="append",
        metavar="TEXT",
        help="an extra string read as NULL, repeatable",
    )
    g.add_argument(
        "--on-bad-lines",
        choices=("error", "skip", "reject"),
        help="error (default): stop at a bad line; skip: drop it; reject: drop it and keep it "
        "in table NAME__rejects",
    )
    g.add_argument(
        "--no-compress-text",
        dest="compress_text",
        action="store_false",
        default=None,
        help="store text columns uncompressed: a faster load, a larger session file",
    )
    p.set_defaults(func=cmd_extract)

    # write ------------------------------------------------------------------
    p = commands.add_parser(
        "write",
        parents=[common, session_opts, report_opts],
        help="write a session table to a CSV or Parquet file",
        description="Write table NAME of the session in DIR to FILE (.csv, .csv.gz, .csv.zst or "
        ".parquet), atomically: a temp file renamed over FILE when complete.",
        epilog="Example:\n"
        "  duckmerge write --session runs/job-42 --table merged -o out/merged.csv\n\n"
        + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--session", required=True, metavar="DIR", help="the session folder")
    p.add_argument("--table", required=True, metavar="NAME", help="the table to write")
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="the file to write")
    g = p.add_argument_group("file options")
    g.add_argument("--format", choices=("csv", "parquet"), help="default: from the extension")
    g.add_argument("--delimiter", type=_char_arg, metavar="CHAR", help="default ','")
    g.add_argument(
        "--no-header", dest="header", action="store_false", default=None, help="no header row"
    )
    g.add_argument("--newline", choices=("lf", "crlf", "cr"), help="line ends (default lf)")
    g.add_argument("--encoding", metavar="NAME", help="default utf-8")
    g.add_argument("--quoting", choices=("minimal", "all"), help="default minimal")
    g.add_argument(
        "--columns", type=_columns_arg, metavar="A,B,...", help="write these columns, in this order"
    )
    g.add_argument(
        "--sort-columns",
        action="store_true",
        help="write the columns in alphabetical order (default: the table's order)",
    )
    p.set_defaults(func=cmd_write)

    # sql --------------------------------------------------------------------
    p = commands.add_parser(
        "sql",
        parents=[common, session_opts],
        help="run a query in a session and print the result",
        description="Run QUERY in the session in DIR and print the result as a text table "
        "(or CSV / JSON).",
        epilog="Example:\n  duckmerge sql --session runs/job-42 "
        "\"SELECT _match_key, count(*) AS n FROM merged GROUP BY ALL\"\n\n" + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("query", metavar="QUERY", help="one SQL statement")
    p.add_argument("--session", required=True, metavar="DIR", help="the session folder")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print all rows as a JSON array")
    fmt.add_argument("--csv", action="store_true", help="print all rows as CSV")
    p.add_argument(
        "--max-rows",
        type=_non_negative_int,
        default=40,
        metavar="N",
        help="rows shown in the text table (default 40; 0 shows all)",
    )
    p.add_argument(
        "--max-width",
        type=_positive_int,
        default=40,
        metavar="N",
        help="longer values are cut to N characters in the text table (default 40)",
    )
    p.set_defaults(func=cmd_sql)

    # tables -----------------------------------------------------------------
    p = commands.add_parser(
        "tables",
        parents=[common, session_opts],
        help="list a session's tables",
        description="Print the names of the tables in the session in DIR, one per line.",
    )
    p.add_argument("--session", required=True, metavar="DIR", help="the session folder")
    p.set_defaults(func=cmd_tables)

    # demo -------------------------------------------------------------------
    p = commands.add_parser(
        "demo",
        parents=[common, session_opts, report_opts],
        help="generate a small CRM + vendor data set and merge it",
        description="Write a generated CRM file and three vendor files (noisy emails, phones in "
        "several formats, duplicates, rows matching nobody) to a folder, merge them on email "
        "then phone (region CZ) and print the stats and the output file's path.",
    )
    p.add_argument(
        "--rows",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="CRM rows to generate (default 1000)",
    )
    p.add_argument(
        "--keep",
        metavar="DIR",
        help="write the files to DIR (default: a new temporary folder, left in place)",
    )
    p.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)
    return parser


# --------------------------------------------------------------------------
# Ctrl-C


class _InterruptGuard:
    """Makes Ctrl-C stop a running driver even when it lands in a callback.

    The core calls ``ctx.log_event`` (our progress display) with the GIL
    held; Python runs a pending SIGINT handler at the first bytecode of that
    callback, and the core logs and drops an exception raised there, so the
    Ctrl-C would be lost and the merge would run to the end. The handler
    below records the request; when the engine is seen working after it (a
    later progress event, or the core's "log_event failed: KeyboardInterrupt"
    log line), SIGINT is sent again from a timer thread so that it arrives
    while the core waits in DuckDB and is raised where the core sees it.
    """

    REDELIVER_AFTER = 0.05

    def __init__(self) -> None:
        self.requested = False
        self._done = False
        self._timer: threading.Timer | None = None
        self._previous: Any = None
        self._installed = False
        self._filter = _DroppedInterruptFilter(self)

    def __enter__(self) -> _InterruptGuard:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        logging.getLogger("duckmerge").addFilter(self._filter)
        return self

    def __exit__(self, *exc: object) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        logging.getLogger("duckmerge").removeFilter(self._filter)
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def engine_still_running(self) -> None:
        """Called from progress callbacks: re-sends a Ctrl-C the engine missed."""
        if not self.requested or self._done or not self._installed:
            return
        if self._timer is not None and self._timer.is_alive():
            return
        self._timer = threading.Timer(self.REDELIVER_AFTER, self._redeliver)
        self._timer.daemon = True
        self._timer.start()

    def _redeliver(self) -> None:
        if not self._done:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


class _DroppedInterruptFilter(logging.Filter):
    """Hides the core's warning about a dropped Ctrl-C and has it re-sent."""

    def __init__(self, guard: _InterruptGuard) -> None:
        super().__init__()
        self._guard = guard

    def filter(self, record: logging.LogRecord) -> bool:
        if "KeyboardInterrupt" in record.getMessage():
            self._guard.requested = True
            self._guard.engine_still_running()
            return False
        return True


# --------------------------------------------------------------------------
# progress display


def _fmt_int(n: object) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


def _terminal_columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to (80 when unknown)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size((80, 24)).columns


def _fmt_rate(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.1f}M"
    if rate >= 1e4:
        return f"{rate / 1e3:.0f}k"
    return f"{rate:,.0f}"


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressDisplay:
    """Shows a running command's progress on stderr.

    ``live=True`` (a terminal): one line redrawn in place with ``\\r``: stage,
    bar, percent, rows, rows/s and ETA. ``live=False``: one plain line per
    finished stage, plus a line at most every ``PLAIN_EVERY`` seconds while a
    long stage runs. Call it with the engine's progress dicts
    (``{"event": "merge_progress" | "progress", ...}``); ``close()`` clears
    the live line.
    """

    PLAIN_EVERY = 5.0
    LIVE_EVERY = 0.1

    def __init__(
        self,
        stream: TextIO,
        *,
        live: bool,
        label: str,
        stages: Sequence[str] = MERGE_STAGES,
        guard: _InterruptGuard | None = None,
    ) -> None:
        self._stream = stream
        self._live = live
        self._label = label
        self._stages = tuple(stages)
        self._count = len(self._stages)
        self._done = 0
        self._guard = guard
        self._started = time.monotonic()
        self._stage_started = self._started
        self._percent: float | None = 0.0
        self._rows: int | None = None
        self._rate: float | None = None
        self._last_draw = 0.0
        self._last_plain = self._started
        self._width = 0
        self._bar_chars = self._pick_bar_chars(stream)
        if live:
            self._draw(force=True)  # show the first stage at once

    @staticmethod
    def _pick_bar_chars(stream: TextIO) -> tuple[str, str]:
        try:
            "█░".encode(getattr(stream, "encoding", None) or "ascii")
        except (UnicodeEncodeError, LookupError):
            return "#", "-"
        return "█", "░"

    # events -----------------------------------------------------------------

    def __call__(self, event: Mapping[str, Any]) -> None:
        if self._guard is not None:
            self._guard.engine_still_running()
        kind = event.get("event")
        if kind == "merge_progress":
            self._stage_finished(event)
        elif kind == "progress":
            self._step_progress(event)

    def _stage_name(self, index: int) -> str:
        return self._stages[index] if 0 <= index < len(self._stages) else f"stage {index + 1}"

    def _stage_finished(self, event: Mapping[str, Any]) -> None:
        now = time.monotonic()
        count = event.get("stage_count")
        if isinstance(count, int) and count > 0:
            self._count = count
        index = event.get("stage_index")
        self._done = index if isinstance(index, int) else self._done + 1
        stage = str(event.get("stage") or self._stage_name(self._done - 1))
        percent = event.get("percent")
        if isinstance(percent, (int, float)):
            self._percent = float(percent)
        else:
            self._percent = 100.0 * self._done / self._count
        rows = event.get("rows")
        seconds = now - self._stage_started
        self._stage_started = now
        self._rows, self._rate = None, None
        if self._live:
            self._draw(force=True)
            return
        message = str(event.get("message") or "").strip()
        verb = "skipped (resumed)" if event.get("skipped") else f"done in {seconds:.1f} s"
        text = f"[{self._done}/{self._count}] {stage} {verb}"
        if isinstance(rows, int) and rows:
            text += f", {rows:,} rows"
        text += f" ({self._percent:.0f}%)"
        if message:
            text += f": {message}"
        self._plain(text)
        self._last_plain = now

    def _step_progress(self, event: Mapping[str, Any]) -> None:
        now = time.monotonic()
        rows = event.get("rows")
        if isinstance(rows, int) and rows > 0:
            self._rows = rows
            elapsed = now - self._stage_started
            self._rate = rows / elapsed if elapsed > 0 else None
        percent = event.get("percent")
        if isinstance(percent, (int, float)) and 0 <= percent <= 100:
            # A stage runs several statements, each reporting from 0 again:
            # the bar never moves back.
            overall = 100.0 * (self._done + float(percent) / 100.0) / self._count
            ceiling = 100.0 * (self._done + 1) / self._count
            self._percent = max(self._percent or 0.0, min(overall, ceiling))
        if self._live:
            self._draw()
        elif now - self._last_plain >= self.PLAIN_EVERY:
            self._last_plain = now
            self._plain(f"[{self._done + 1}/{self._count}] {self._stage_name(self._done)} "
                        + self._numbers())

    # rendering --------------------------------------------------------------

    def _eta(self) -> str | None:
        p = self._percent
        if p is None or p < 1 or p >= 100:
            return None
        elapsed = time.monotonic() - self._started
        return _fmt_duration(elapsed * (100 - p) / p)

    def _numbers(self) -> str:
        parts = []
        if self._percent is not None:
            parts.append(f"{self._percent:3.0f}%")
        if self._rows is not None:
            parts.append(f"{self._rows:,} rows")
        if self._rate is not None:
            parts.append(f"{_fmt_rate(self._rate)} rows/s")
        eta = self._eta()
        if eta is not None:
            parts.append(f"ETA {eta}")
        return "  ".join(parts)

    def _plain(self, text: str) -> None:
        print(f"{PROG}: {self._label} {text}", file=self._stream, flush=True)

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.LIVE_EVERY:
            return
        self._last_draw = now
        current = min(self._done + 1, self._count)
        stage = self._stage_name(self._done) if self._done < self._count else "done"
        columns = _terminal_columns(self._stream)
        head = f"{self._label} {current}/{self._count} {stage}"
        numbers = self._numbers()
        # The bar takes what the text leaves (at most 20 cells); a narrow
        # terminal gets no bar, and the line never wraps.
        room = min(20, columns - 1 - len(head) - len(numbers) - 2)
        if room >= 5:
            full, empty = self._bar_chars
            filled = int(round(room * (self._percent or 0.0) / 100))
            line = f"{head} {full * filled}{empty * (room - filled)} {numbers}"
        else:
            line = f"{head} {numbers}"
        line = line[: max(10, columns - 1)]
        pad = " " * max(0, self._width - len(line))
        self._width = len(line)
        self._stream.write("\r" + line + pad)
        self._stream.flush()

    def close(self) -> None:
        """Clears the live line (plain output needs nothing)."""
        if self._live and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0


def _display(args: argparse.Namespace, label: str, guard: _InterruptGuard,
             stages: Sequence[str] = MERGE_STAGES) -> ProgressDisplay | None:
    if getattr(args, "quiet", False):
        return None
    stream = sys.stderr
    live = bool(getattr(stream, "isatty", lambda: False)())
    return ProgressDisplay(stream, live=live, label=label, stages=stages, guard=guard)


# --------------------------------------------------------------------------
# sessions and the driver ctx


class _CliContext:
    """The ctx the CLI hands to a driver: the session's database and logs,
    plus its progress events and metrics for the display and the summary."""

    def __init__(
        self, session: duckmerge.Session, on_event: Callable[[dict[str, Any]], None] | None
    ) -> None:
        self._session = session
        self._on_event = on_event
        #: The last value of each metric the driver logged (rows_written, ...).
        self.metrics: dict[str, Any] = {}

    def get_db_connection(self) -> duckmerge.Connection:
        return self._session.get_db_connection()

    def log_event(self, event: str, **data: Any) -> None:
        self._session.log_event(event, **data)
        if self._on_event is not None:
            self._on_event({"event": event, **data})

    def log_metric(self, name: str, value: Any, **tags: Any) -> None:
        self._session.log_metric(name, value, **tags)
        self.metrics[name] = value


def _open_session(
    args: argparse.Namespace, path: str | None, *, must_exist: bool
) -> duckmerge.Session:
    """Opens the session in ``path`` (a temporary one for ``None``)."""
    if path is not None:
        folder = Path(path).expanduser().absolute()
        if must_exist and not (folder / "pipeline_data.duckdb").is_file():
            raise CliError(
                f"no duckmerge session in {folder} (create one with "
                f"'duckmerge extract FILE --session {path}' or 'duckmerge merge ... "
                f"--session {path}')"
            )
        if folder.exists() and not folder.is_dir():
            raise CliError(f"--session {path}: {folder} is a file, not a folder")
        return duckmerge.Session(folder, memory_limit=args.memory_limit, threads=args.threads)
    return duckmerge.Session(memory_limit=args.memory_limit, threads=args.threads)


def _check_output_suffix(path: str, option: str = "-o") -> None:
    if not path.lower().endswith(OUTPUT_SUFFIXES):
        raise CliError(
            f"{option} {path}: the file name must end in {', '.join(OUTPUT_SUFFIXES)}",
            EXIT_USAGE,
        )


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, default=_json_default, ensure_ascii=False)
    sys.stdout.write("\n")


# --------------------------------------------------------------------------
# merge


def _run_merge(
    args: argparse.Namespace,
    *,
    original: str,
    enriched: Sequence[str],
    keys: Sequence[str],
    output: str,
    session_dir: str | None,
    region: str | None,
    label: str = "merge",
) -> tuple[dict[str, Any], str | None, float]:
    """Runs ``duckmerge.merge`` in a session opened with the CLI's settings.

    Returns the stats, the output file's absolute path and the seconds taken.
    """
    from duckmerge import merge

    # A file beats a table of the same name; relative paths are the working
    # directory's. A name that is not a file is passed as given, so merge()
    # can find it as a table of the session.
    def source(value: str) -> str:
        return os.path.abspath(value) if os.path.exists(value) else value

    started = time.monotonic()
    with _InterruptGuard() as guard, _open_session(args, session_dir, must_exist=False) as session:
        display = _display(args, label, guard)
        try:
            result = merge(
                source(original),
                [source(e) for e in enriched],
                keys=list(keys),
                fields=args.fields,
                strategy=args.strategy,
                field_strategies=dict(args.field_strategies) if args.field_strategies else None,
                on_conflict=args.on_conflict,
                recency_column=args.recency_column,
                session=session,
                output=os.path.abspath(output),
                progress=display if display is not None else False,
                name=args.table,
                default_region=region,
            )
        finally:
            if display is not None:
                display.close()
        try:
            stats = dict(result.stats)
            output_path = result.output_path
        finally:
            result.close()
    return stats, output_path, time.monotonic() - started


def cmd_merge(args: argparse.Namespace) -> int:
    """``duckmerge merge``: original + enriched files -> one output file."""
    _check_output_suffix(args.output)
    stats, output_path, seconds = _run_merge(
        args,
        original=args.original,
        enriched=args.enriched,
        keys=args.keys,
        output=args.output,
        session_dir=args.session,
        region=args.region,
    )
    if args.json:
        _print_json(stats)
    else:
        print(
            format_merge_summary(
                stats,
                output_path=output_path,
                table=args.table,
                seconds=seconds,
                session=os.path.abspath(args.session) if args.session else None,
            )
        )
    return EXIT_OK


def _pct(n: object, of: object) -> str:
    if isinstance(n, (int, float)) and isinstance(of, (int, float)) and of:
        return f"{100.0 * n / of:.1f}%"
    return "-"


def _table_lines(
    header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  "
) -> list[str]:
    """Left-aligned first column, right-aligned numbers."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(row[0]).ljust(widths[0])] + [
            str(c).rjust(w) for c, w in zip(row[1:], widths[1:])
        ]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def format_merge_summary(
    stats: Mapping[str, Any],
    *,
    output_path: str | None,
    table: str,
    seconds: float | None = None,
    session: str | None = None,
) -> str:
    """The human summary of a merge's stats (what ``duckmerge merge`` prints).

    Tolerates missing keys (``matched_per_source`` is newer than the rest).
    """
    rows_in = stats.get("rows_original")
    rows_out = stats.get("rows_output")
    per_source: Mapping[str, Any] = stats.get("rows_per_source") or {}
    vendor_rows = sum(v for v in per_source.values() if isinstance(v, int))
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    lines = [
        f"Merged {_fmt_int(rows_in)} original rows with {_fmt_int(vendor_rows)} rows from "
        f"{len(per_source)} enriched source{'s' if len(per_source) != 1 else ''}{took}.",
        f"  rows in:   {_fmt_int(rows_in)}",
        f"  rows out:  {_fmt_int(rows_out)}",
        f"  matched:   {_fmt_int(stats.get('matched'))} ({_pct(stats.get('matched'), rows_in)})",
    ]

    per_key: Mapping[str, Any] = stats.get("matched_per_key") or {}
    if per_key:
        lines += ["", "Match rate per key (first key that matched):"]
        lines += _table_lines(
            ["key", "rows", "rate"],
            [[k, _fmt_int(n), _pct(n, rows_in)] for k, n in per_key.items()],
        )

    matched_per_source = stats.get("matched_per_source")
    duplicates: Mapping[str, Any] = stats.get("duplicates_collapsed") or {}
    unmatched: Mapping[str, Any] = stats.get("unmatched_enriched") or {}
    sources = list(per_source) + [
        s for s in (matched_per_source or {}) if s not in per_source
    ]
    if sources:
        lines += ["", "Per source:"]
        header = ["source", "rows", "duplicates"]
        if isinstance(matched_per_source, Mapping):
            header += ["matched", "rate"]
        header += ["unmatched vendor rows"]
        body = []
        for s in sources:
            row = [s, _fmt_int(per_source.get(s)), _fmt_int(duplicates.get(s))]
            if isinstance(matched_per_source, Mapping):
                n = matched_per_source.get(s)
                row += [_fmt_int(n), _pct(n, rows_in)]
            row.append(_fmt_int(unmatched.get(s)))
            body.append(row)
        lines += _table_lines(header, body)

    conflicts: Mapping[str, Any] = stats.get("conflicts") or {}
    filled: Mapping[str, Any] = stats.get("values_filled") or {}
    fields = list(conflicts) + [f for f in filled if f not in conflicts]
    if fields:
        lines += ["", "Per field:"]
        body = []
        for f in fields:
            by_source = filled.get(f)
            n_filled = (
                sum(v for v in by_source.values() if isinstance(v, int))
                if isinstance(by_source, Mapping)
                else by_source
            )
            body.append([f, _fmt_int(conflicts.get(f)), _fmt_int(n_filled)])
        lines += _table_lines(["field", "conflicts", "values filled"], body)

    lines.append("")
    if output_path:
        lines.append(f"Output: {output_path}")
    if session:
        lines.append(f"Session: {session} (table {table!r}, vendor rows matching nobody in "
                     f"{table + '__unmatched'!r})")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# extract / write / tables / sql


def cmd_extract(args: argparse.Namespace) -> int:
    """``duckmerge extract``: a CSV file -> a session table."""
    path = os.path.abspath(args.file)
    table = args.table or os.path.basename(path).split(".")[0]
    if not table:
        raise CliError(f"cannot name a table after {args.file!r}; give --table NAME", EXIT_USAGE)
    config: dict[str, Any] = {"path": path}
    header: bool | int | None = args.header
    if args.header_row is not None:
        if args.header is False:
            raise CliError("--no-header and --header-row cannot be used together", EXIT_USAGE)
        header = args.header_row
    options = {
        "delimiter": args.delimiter,
        "quotechar": args.quotechar,
        "escapechar": args.escapechar,
        "encoding": args.encoding,
        "compression": args.compression,
        "header": header,
        "columns": args.columns,
        "skip_rows": args.skip_rows,
        "limit": args.limit,
        "comment": args.comment,
        "dtype": dict(args.dtype) if args.dtype else None,
        "parse_dates": args.parse_dates,
        "na_values": args.na_values,
        "on_bad_lines": args.on_bad_lines,
        "compress_text": args.compress_text,
    }
    config.update({k: v for k, v in options.items() if v is not None})
    started = time.monotonic()
    with _InterruptGuard() as guard, _open_session(args, args.session, must_exist=False) as session:
        display = _display(args, "extract", guard, stages=("load",))
        ctx = _CliContext(session, display)
        try:
            out = duckmerge.CsvExtractor().run(step_id=table, config=config, inputs=None, ctx=ctx)
        finally:
            if display is not None:
                display.close()
        base = session.base_path
    seconds = time.monotonic() - started
    if args.json:
        _print_json(out)
        return EXIT_OK
    rows = out.get("rows")
    text = f"Loaded {_fmt_int(rows)} rows from {path} into table {table!r} ({seconds:.1f} s)."
    skipped = out.get("rows_skipped")
    if skipped:
        where = ""
        if args.on_bad_lines == "reject":
            where = f"; they are in table {table + '__rejects'!r}"
        text += f"\n{_fmt_int(skipped)} bad lines were dropped{where}."
    text += f"\nSession: {base}"
    print(text)
    return EXIT_OK


def cmd_write(args: argparse.Namespace) -> int:
    """``duckmerge write``: a session table -> a CSV or Parquet file."""
    if args.format is None:
        _check_output_suffix(args.output)
    path = os.path.abspath(args.output)
    config: dict[str, Any] = {"path": path, "sort_columns": args.sort_columns}
    options = {
        "format": args.format,
        "delimiter": args.delimiter,
        "header": args.header,
        "newline": args.newline,
        "encoding": args.encoding,
        "quoting": args.quoting,
        "columns": args.columns,
    }
    config.update({k: v for k, v in options.items() if v is not None})
    with _InterruptGuard() as guard, _open_session(args, args.session, must_exist=True) as session:
        display = _display(args, "write", guard, stages=("write",))
        ctx = _CliContext(session, display)
        try:
            duckmerge.CsvWriter().run(
                step_id=f"write_{args.table}", config=config, inputs={"table": args.table}, ctx=ctx
            )
        finally:
            if display is not None:
                display.close()
    rows = ctx.metrics.get("rows_written")
    if args.json:
        _print_json({"table": args.table, "path": path, "rows": rows})
    else:
        print(f"Wrote {_fmt_int(rows)} rows from table {args.table!r} to {path}.")
    return EXIT_OK


def cmd_tables(args: argparse.Namespace) -> int:
    """``duckmerge tables``: one table name per line."""
    with _open_session(args, args.session, must_exist=True) as session:
        names = session.tables()
    for name in names:
        print(name)
    return EXIT_OK


def _json_default(value: object) -> object:
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def _plain_value(value: object) -> str:
    """A value as text for CSV output (NULL is the empty string)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    if isinstance(value, _dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def _cell(value: object, width: int) -> str:
    """A value as text for the table view: NULL shown, control characters
    escaped, cut to ``width`` characters with an ellipsis."""
    if value is None:
        text = "NULL"
    elif isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        text = str(value)
    else:
        text = _plain_value(value)
    text = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    if len(text) > width:
        text = text[: max(1, width - 1)] + "…"
    return text


def _is_numeric(value: object) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def _record_batches(result: duckmerge.Result) -> Iterator[Any]:
    try:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise CliError(
            "the sql command needs pyarrow: pip install 'duckmerge[arrow]'"
        ) from None
    reader = pa.RecordBatchReader.from_stream(result)
    yield reader.schema
    yield from reader


def format_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    more: int = 0,
    max_width: int = 40,
) -> str:
    """A column-aligned text table; ``more`` rows not shown get a
    ``… n more rows`` line, else a ``(n rows)`` line."""
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    head = [_cell(c, max_width) if c is not None else "" for c in columns]
    widths = [len(h) for h in head]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    numeric = [
        any(_is_numeric(r[i]) for r in rows)
        and all(_is_numeric(r[i]) or r[i] is None for r in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return " | ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    out = [line(head), "-+-".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    if more:
        out.append(f"… {more:,} more row{'s' if more != 1 else ''}")
    else:
        out.append(f"({len(rows):,} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def cmd_sql(args: argparse.Namespace) -> int:
    """``duckmerge sql``: run one statement, print its result."""
    with _open_session(args, args.session, must_exist=True) as session:
        # sql(), not execute(): the rows stream out of DuckDB as they are
        # printed instead of being held in memory first.
        batches = _record_batches(session.sql(args.query))
        schema = next(batches)
        columns = list(schema.names)
        if args.csv:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(columns)
            for batch in batches:
                for row in batch.to_pylist():
                    writer.writerow([_plain_value(row[c]) for c in columns])
        elif args.json:
            sys.stdout.write("[")
            first = True
            for batch in batches:
                for record in batch.to_pylist():
                    sys.stdout.write("\n  " if first else ",\n  ")
                    first = False
                    json.dump(record, sys.stdout, default=_json_default, ensure_ascii=False)
            sys.stdout.write("\n]\n" if not first else "]\n")
        else:
            limit = args.max_rows or None
            shown: list[list[object]] = []
            more = 0
            for batch in batches:
                room = len(batch) if limit is None else max(0, limit - len(shown))
                if room:
                    part = batch.slice(0, room).to_pylist()
                    shown += [[r[c] for c in columns] for r in part]
                more += len(batch) - min(room, len(batch))
            print(format_table(columns, shown, more=more, max_width=args.max_width))
    return EXIT_OK


# --------------------------------------------------------------------------
# demo

_FIRST = ["Jan", "Petr", "Pavel", "Tomáš", "Martin", "Eva", "Jana", "Petra", "Lucie", "Tereza",
          "Jakub", "Lenka", "Veronika", "Ondřej", "Kateřina"]
_LAST = ["Novák", "Svoboda", "Dvořák", "Černý", "Procházka", "Kučera", "Veselý", "Horák",
         "Němec", "Marek", "Pokorný", "Král"]
_ASCII = str.maketrans("áčďéěíňóřšťúůýž", "acdeeinorstuuyz")
_DOMAINS = ["seznam.cz", "gmail.com", "email.cz", "firma.cz", "post.cz"]
_CITIES = ["Praha", "Brno", "Ostrava", "Plzeň", "Olomouc", "Liberec"]
_TITLES = ["CEO", "CTO", "Sales Manager", "Data Analyst", "Accountant", "HR Specialist"]
_INDUSTRIES = ["Retail", "Energy", "Logistics", "Software", "Finance"]
#: Czech mobile ranges the phone normaliser accepts (a number outside the
#: numbering plan normalises to NULL and never matches). 603 is kept for the
#: vendor rows that must match nobody.
_MOBILE_PREFIXES = [*range(601, 603), *range(604, 609), *range(702, 706), *range(720, 740),
                    *range(770, 780), *range(790, 800)]
_STRANGER_PREFIX = 603


def _noisy_email(rng: random.Random, email: str) -> str:
    """Case and whitespace noise a vendor adds; the email normaliser removes it."""
    roll = rng.random()
    if roll < 0.25:
        email = email.upper()
    elif roll < 0.5:
        local, _, domain = email.partition("@")
        email = local.title() + "@" + domain.capitalize()
    if rng.random() < 0.3:
        email = rng.choice([" ", "  ", "\t"]) + email + rng.choice(["", " "])
    return email


def _phone_format(rng: random.Random, digits: str, *, vendor: bool) -> str:
    """A Czech number (9 digits) in one of the formats found in the wild."""
    a, b, c = digits[:3], digits[3:6], digits[6:]
    formats = [f"+420 {a} {b} {c}", f"00420{digits}", f"{a}-{b}-{c}", f"+420{digits}",
               f"{a} {b} {c}"]
    return rng.choice(formats if vendor else formats[:1] + formats[3:])


def write_demo_data(folder: Path, rows: int, seed: int = 42) -> dict[str, Path]:
    """Writes ``crm.csv`` and three vendor files to ``folder``; returns their paths.

    Deterministic for a given ``(rows, seed)`` (stdlib ``random``). The
    vendor files hold noisy copies of CRM contacts (case / whitespace in
    emails, phones as ``+420 …``, ``00420…``, ``601-111-222``), a few
    duplicate rows and some rows that match nobody.
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    contacts: list[dict[str, Any]] = []
    for i in range(1, rows + 1):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email = f"{first}.{last}{i}@{rng.choice(_DOMAINS)}".lower().translate(_ASCII)
        phone = f"{rng.choice(_MOBILE_PREFIXES)}{rng.randrange(10**6):06d}"
        contacts.append({
            "id": i, "first_name": first, "last_name": last,
            "email": email if rng.random() > 0.1 else "",
            "phone": phone if rng.random() > 0.15 else "",
            "true_email": email, "true_phone": phone,
            "company": (
                f"{last} {rng.choice(['s.r.o.', 'a.s.', 'Group'])}" if rng.random() > 0.4 else ""
            ),
            "city": rng.choice(_CITIES) if rng.random() > 0.3 else "",
        })

    def write(name: str, header: list[str], records: list[list[object]]) -> Path:
        path = folder / name
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(records)
        return path

    files = {"crm": write(
        "crm.csv",
        ["id", "first_name", "last_name", "email", "phone", "company", "city"],
        [[c["id"], c["first_name"], c["last_name"], c["email"],
          _phone_format(rng, c["phone"], vendor=False) if c["phone"] else "",
          c["company"], c["city"]] for c in contacts],
    )}

    def stranger(i: int) -> tuple[str, str]:
        digits = f"{_STRANGER_PREFIX}{rng.randrange(10**6):06d}"  # no CRM number has it
        return f"nobody{i}@{rng.choice(_DOMAINS)}", digits

    def vendor_rows(share: float, phone_only: float, extra: Callable[[], list[object]],
                    tag: str) -> list[list[object]]:
        out: list[list[object]] = []
        for c in rng.sample(contacts, int(len(contacts) * share)):
            email, digits = c["true_email"], c["true_phone"]
            if rng.random() < phone_only:
                email = ""  # a phone-only row: matched on the second key
            out.append([_noisy_email(rng, email) if email else "",
                        _phone_format(rng, digits, vendor=True), *extra()])
        for i in range(max(1, len(contacts) // 20)):  # rows that match nobody
            email, digits = stranger(i)
            out.append([email + tag, _phone_format(rng, digits, vendor=True), *extra()])
        for row in rng.sample(out, max(1, len(out) // 30)):  # exact duplicates
            out.append(list(row))
        rng.shuffle(out)
        return out

    files["vendor_a"] = write(
        "vendor_a.csv", ["email", "phone", "job_title", "city"],
        vendor_rows(0.6, 0.1, lambda: [rng.choice(_TITLES), rng.choice(_CITIES)], ""),
    )
    files["vendor_b"] = write(
        "vendor_b.csv", ["email", "phone", "company", "industry", "employees"],
        vendor_rows(0.5, 0.2, lambda: [
            f"{rng.choice(_LAST)} {rng.choice(['s.r.o.', 'a.s.'])}", rng.choice(_INDUSTRIES),
            rng.choice([5, 12, 40, 250, 1200])], ".b"),
    )
    files["vendor_c"] = write(
        "vendor_c.csv", ["email", "phone", "job_title", "linkedin_url"],
        vendor_rows(0.3, 0.3, lambda: [
            rng.choice(_TITLES), f"https://www.linkedin.com/in/p{rng.randrange(10**6)}"], ".c"),
    )
    return files


def cmd_demo(args: argparse.Namespace) -> int:
    """``duckmerge demo``: generate a small CRM data set, merge it, show the stats."""
    if args.keep:
        folder = Path(args.keep).expanduser().absolute()
        if folder.exists() and not folder.is_dir():
            raise CliError(f"--keep {args.keep}: {folder} is a file, not a folder")
    else:
        folder = Path(tempfile.mkdtemp(prefix="duckmerge-demo-"))
    files = write_demo_data(folder, args.rows, seed=args.seed)
    session_dir = folder / "session"
    if (session_dir / "pipeline_data.duckdb").is_file():
        # A fresh session each run: the files above were just rewritten.
        shutil.rmtree(session_dir)
    output = folder / "merged.csv"
    args.fields, args.strategy, args.field_strategies = None, "most_complete", None
    args.on_conflict, args.recency_column, args.table = "fill", None, "merged"
    if not args.quiet and not args.json:
        print(f"Demo data in {folder}:", file=sys.stderr)
        for path in files.values():
            print(f"  {path.name}", file=sys.stderr)
    stats, output_path, seconds = _run_merge(
        args,
        original=str(files["crm"]),
        enriched=[str(files[v]) for v in ("vendor_a", "vendor_b", "vendor_c")],
        keys=["email:email", "phone:phone"],
        output=str(output),
        session_dir=str(session_dir),
        region="CZ",
        label="demo",
    )
    if args.json:
        _print_json({"folder": str(folder), "output": output_path, "stats": stats})
        return EXIT_OK
    print(format_merge_summary(stats, output_path=output_path, table="merged", seconds=seconds,
                               session=str(session_dir)))
    print(
        "\nThe same merge by hand:\n"
        f"  duckmerge merge {files['crm']} {files['vendor_a']} {files['vendor_b']} "
        f"{files['vendor_c']} --key email --key phone --region CZ --strategy most_complete "
        f"-o {output}\n"
        "Look inside:\n"
        f"  duckmerge sql --session {session_dir} "
        "\"SELECT _match_key, count(*) AS n FROM merged GROUP BY ALL ORDER BY n DESC\""
    )
    return EXIT_OK


# --------------------------------------------------------------------------
# entry point


def _one_line(exc: BaseException) -> str:
    """The error's message on one line (DuckDB's caret lines dropped)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        # "[Errno 2] msg: 'path'" -> "msg: path" (the path only when the message lacks it)
        text = str(exc.strerror).strip()
        if exc.filename is not None and os.fsdecode(exc.filename) not in text:
            text += f": {os.fsdecode(exc.filename)}"
    parts = [p.strip() for p in text.splitlines()]
    parts = [p for p in parts if p and set(p) - {"^", " "}]
    return "; ".join(parts)


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, duckmerge.CancelledError):
        return EXIT_INTERRUPTED
    if isinstance(exc, duckmerge.ConfigError):
        return EXIT_USAGE
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    """Runs the ``duckmerge`` command line; returns the exit code.

    >>> main(["tables", "--session", "runs/job-42"])
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # -h, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (`duckmerge sql ... | head`): not an error.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except (duckmerge.DuckMergeError, CliError, OSError) as exc:
        if debug:
            traceback.print_exc()
        _error(_one_line(exc))
        return _exit_code(exc)
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            traceback.print_exc()
        if _caused_by_interrupt(exc):
            # Ctrl-C inside a native call can surface as "SystemError: ...
            # returned a result with an exception set" with the interrupt as cause.
            _error("interrupted")
            return EXIT_INTERRUPTED
        _error(f"internal error: {type(exc).__name__}: {_one_line(exc)} "
               "(run with --debug for the traceback)")
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
