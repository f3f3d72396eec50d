"""Type stubs for the compiled core, ``duckmerge._duckmerge``.

Checked against the built module by ``tests/test_stubs.py`` (mypy stubtest).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal, final

__all__ = [
    "CancelledError",
    "ConfigError",
    "Connection",
    "CsvError",
    "CsvExtractor",
    "CsvWriter",
    "DUCKDB_VERSION",
    "DuckMergeError",
    "MergeDriver",
    "Result",
    "Session",
    "SessionLockedError",
    "SourceNotFoundError",
    "SqlError",
    "SqlProcessor",
    "TableNotFoundError",
    "__version__",
    "_normalize_values",
]
__version__: str
DUCKDB_VERSION: str

class DuckMergeError(Exception):
    """Base class of every error duckmerge raises."""

class ConfigError(DuckMergeError, ValueError):
    """A bad argument or config value; the message lists what is accepted."""

class SourceNotFoundError(DuckMergeError, FileNotFoundError):
    """An input file or folder does not exist (the message has its absolute path)."""

class TableNotFoundError(DuckMergeError, LookupError):
    """A table named by the caller does not exist in the session."""

class CsvError(DuckMergeError):
    """A CSV file could not be read; ``path`` and ``line`` say where."""

    path: str | None
    line: int | None

class SessionLockedError(DuckMergeError):
    """The session's database is in use by another process (or already open here)."""

class CancelledError(DuckMergeError):
    """The work was cancelled before it finished; nothing half-written was kept."""

class SqlError(DuckMergeError):
    """DuckDB rejected a statement; DuckDB's message is kept in the text."""

_Params = Sequence[Any] | None
_WriteMode = Literal["create", "replace", "append"]

@final
class Result:
    """A query result; every consumer re-runs or re-reads it from the start.

    Batches stream out of DuckDB through the Arrow C stream interface, so
    ``to_arrow()``, ``to_pandas()`` and ``to_polars()`` copy no rows one by one.
    """

    @property
    def columns(self) -> list[str]: ...
    def to_arrow(self) -> Any:
        """The rows as a ``pyarrow.Table``; a whole table (``table(name)``) or a
        ``SELECT`` without parameters is converted by DuckDB's worker threads
        in parallel, in the query's order."""
        ...
    def to_pandas(self) -> Any: ...
    def to_polars(self) -> Any: ...
    def fetchall(self) -> list[tuple[Any, ...]]:
        """All remaining rows as tuples (needs pyarrow)."""
        ...
    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row, or ``None`` after the last; streams, so only the
        batch holding the row is converted (needs pyarrow)."""
        ...
    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        """Up to ``size`` next rows (fewer at the end); ``ConfigError`` when
        ``size`` is negative (needs pyarrow)."""
        ...
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """An ``arrow_array_stream`` PyCapsule; batches are produced as read.

        A ``requested_schema`` capsule is honoured when every column can be
        cast to its type, and ignored otherwise.
        """
    def __len__(self) -> int: ...
    def _repr_html_(self) -> str: ...

@final
class Connection:
    """A handle on a session's DuckDB database, safe to share between threads."""

    def execute(self, sql: str, params: _Params = None) -> Result: ...
    def sql(self, sql: str, params: _Params = None) -> Result: ...
    def table(self, name: str) -> Result: ...
    def tables(self) -> list[str]: ...
    def write_table(self, name: str, data: object, mode: _WriteMode = "create") -> int: ...

@final
class Session:
    """A session folder holding one DuckDB database, logs and artifacts."""

    def __new__(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        memory_limit: str | None = None,
        threads: int | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
        keep: bool = False,
    ) -> Session: ...
    @property
    def session_id(self) -> str: ...
    @property
    def base_path(self) -> str: ...
    @property
    def artifacts_dir(self) -> str: ...
    @property
    def output_dir(self) -> str: ...
    @property
    def db_path(self) -> str: ...
    @property
    def memory_limit(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def temp_dir(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def get_db_connection(self) -> Connection: ...
    def log_metric(self, name: str, value: Any, **tags: Any) -> None: ...
    def log_event(self, event: str, **data: Any) -> None: ...
    def sql(self, sql: str, params: _Params = None) -> Result: ...
    def execute(self, sql: str, params: _Params = None) -> Result: ...
    def table(self, name: str) -> Result: ...
    def tables(self) -> list[str]: ...
    def write_table(self, name: str, data: object, mode: _WriteMode = "create") -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Session: ...
    def __exit__(self, exc_type: object, exc_value: object, traceback: object) -> None: ...

@final
class CsvExtractor:
    """Loads a CSV file into table ``step_id`` (``"filesystem.csv_extractor"``)."""

    def __new__(cls) -> CsvExtractor: ...
    def run(
        self,
        step_id: str,
        config: dict[str, Any],
        inputs: dict[str, Any] | None = None,
        ctx: Any = None,
    ) -> dict[str, Any]: ...

@final
class CsvWriter:
    """Writes ``inputs["table"]`` to a CSV or Parquet file (``"filesystem.csv_writer"``)."""

    def __new__(cls) -> CsvWriter: ...
    def run(
        self,
        step_id: str,
        config: dict[str, Any],
        inputs: dict[str, Any] | None = None,
        ctx: Any = None,
    ) -> dict[str, Any]: ...

@final
class SqlProcessor:
    """Stores a query's result as table ``step_id`` (``"duckdb.processor"``)."""

    def __new__(cls) -> SqlProcessor: ...
    def run(
        self,
        step_id: str,
        config: dict[str, Any],
        inputs: dict[str, Any] | None = None,
        ctx: Any = None,
    ) -> dict[str, Any]: ...

@final
class MergeDriver:
    """The CRM merge: original + enriched sources → one row per original row (``"crm.merge"``)."""

    def __new__(cls) -> MergeDriver: ...
    def run(
        self,
        step_id: str,
        config: dict[str, Any],
        inputs: dict[str, Any] | None = None,
        ctx: Any = None,
    ) -> dict[str, Any]: ...

def _normalize_values(values: list[str | None], spec: str) -> list[str | None]:
    """Normalises key values as the merge does (``spec``: ``text``, ``email``,
    ``email:canonical``, ``phone``, ``phone:CZ``, ``exact``)."""
    ...
