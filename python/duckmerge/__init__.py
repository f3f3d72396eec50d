"""duckmerge: merge CRM contact data and move tables in and out of a shared
DuckDB session, fast, with bounded memory.

>>> import duckmerge as dm
>>> with dm.Session("runs/job-42") as ctx:
...     ctx.write_table("scores", some_dataframe)
...     ctx.table("scores").to_pandas()
"""

from duckmerge._duckmerge import (
    DUCKDB_VERSION,
    CancelledError,
    ConfigError,
    Connection,
    CsvError,
    DuckMergeError,
    Result,
    SessionLockedError,
    Session,
    SourceNotFoundError,
    SqlError,
    TableNotFoundError,
    __version__,
)

__all__ = [
    "DUCKDB_VERSION",
    "CancelledError",
    "ConfigError",
    "Connection",
    "CsvError",
    "DuckMergeError",
    "Result",
    "Session",
    "SessionLockedError",
    "SourceNotFoundError",
    "SqlError",
    "TableNotFoundError",
    "__version__",
]
