"""Helpers shared by the driver tests (CsvExtractor, CsvWriter, SqlProcessor).

Not a test module: pytest collects only ``test_*.py``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckmerge
import pytest

# A small table for the writer tests; columns deliberately not in
# alphabetical order (id, note, city) and values with commas, quotes, NULLs
# and non-ASCII text.
CONTACTS_SQL = """
CREATE TABLE contacts AS SELECT * FROM (VALUES
    (1, 'plain', 'Brno'),
    (2, 'comma, inside', 'Praha'),
    (3, 'quote "inside"', NULL),
    (4, NULL, 'Plzeň')
) v(id, note, city)
"""


class RecordingCtx:
    """A plain host ctx: ``get_db_connection()`` returns ``con``; every
    ``log_metric`` / ``log_event`` call is recorded with its exact arguments."""

    def __init__(self, con: Any, base_path: str | Path | None = None) -> None:
        self._con = con
        self.metric_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.event_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        if base_path is not None:
            self.base_path = str(base_path)

    def get_db_connection(self) -> Any:
        return self._con

    def log_metric(self, *args: Any, **kwargs: Any) -> None:
        self.metric_calls.append((args, kwargs))

    def log_event(self, *args: Any, **kwargs: Any) -> None:
        self.event_calls.append((args, kwargs))

    @property
    def metrics(self) -> list[tuple[Any, ...]]:
        """The positional arguments of every log_metric call."""
        return [args for args, _ in self.metric_calls]

    @property
    def event_names(self) -> list[Any]:
        return [args[0] if args else None for args, _ in self.event_calls]


def write_bytes(path: Path, data: str | bytes) -> Path:
    """Writes ``data`` (``str`` as UTF-8, newlines kept exactly) and returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def extract(ctx: Any, step_id: str, path: Path | str, **config: Any) -> dict[str, Any]:
    """Runs CsvExtractor with keyword arguments."""
    return duckmerge.CsvExtractor().run(
        step_id=step_id, config={"path": str(path), **config}, inputs=None, ctx=ctx
    )


def fetch(ctx_or_con: Any, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on a Session, a duckmerge Connection or a duckdb-python connection."""
    return [tuple(r) for r in ctx_or_con.execute(sql).fetchall()]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_rows(ctx_or_con: Any, table: str, order_by: str = "ALL") -> list[tuple[Any, ...]]:
    return fetch(ctx_or_con, f"SELECT * FROM {quote_ident(table)} ORDER BY {order_by}")


def column_types(ctx_or_con: Any, table: str) -> list[tuple[str, str]]:
    """(name, type) of each column of ``table``, in table order."""
    return [(str(r[0]), str(r[1])) for r in fetch(ctx_or_con, f"DESCRIBE {quote_ident(table)}")]


def column_names(ctx_or_con: Any, table: str) -> list[str]:
    return [name for name, _ in column_types(ctx_or_con, table)]


def all_table_names(ctx_or_con: Any) -> list[str]:
    """Every table DuckDB knows (staging tables included)."""
    rows = ctx_or_con.sql("select table_name from duckdb_tables()").fetchall()
    return sorted(str(r[0]) for r in rows)


def staging_tables(ctx_or_con: Any) -> list[str]:
    return [t for t in all_table_names(ctx_or_con) if "staging" in t.lower()]


def stop_child(proc: subprocess.Popen[str]) -> None:
    """Kills ``proc`` if it still runs, waits for it and closes its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@dataclass
class Interrupted:
    """What a child did after Ctrl-C: its stdout lines and stderr, its exit
    code, and the seconds from SIGINT to its exit."""

    lines: list[str]
    out: str
    err: str
    returncode: int
    elapsed: float


def ctrl_c_child(argv: list[str], after: float, what: str, timeout: float = 120) -> Interrupted:
    """Runs ``argv``, a child that prints ``READY`` before its work and
    ``FINISHED`` first when the work ends normally; sends it SIGINT ``after``
    seconds past ``READY``. Skips the test when the work (``what``) ended
    before Ctrl-C reached it."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(after)
        if proc.poll() is not None:
            pytest.skip(f"{what} finished before Ctrl-C could be sent")
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
        elapsed = time.monotonic() - sent
    finally:
        stop_child(proc)
    lines = out.strip().splitlines()
    if lines and lines[0] == "FINISHED":
        pytest.skip(f"{what} finished before Ctrl-C arrived")
    return Interrupted(lines, out, err, proc.returncode, elapsed)
