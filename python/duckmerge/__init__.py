"""duckmerge: merge CRM contact data and move tables in and out of a shared
DuckDB session, fast, with bounded memory.

>>> import duckmerge as dm
>>> with dm.Session("runs/job-42") as ctx:
...     ctx.write_table("scores", some_dataframe)
...     ctx.table("scores").to_pandas()
>>> res = dm.merge("crm.csv", ["vendor_a.csv", "vendor_b.csv"], keys=["email", "phone"])
>>> res.stats["match_rate"]
"""

from duckmerge._duckmerge import (
    DUCKDB_VERSION,
    CancelledError,
    ConfigError,
    Connection,
    CsvError,
    CsvExtractor,
    CsvWriter,
    DuckMergeError,
    MergeDriver,
    Result,
    SessionLockedError,
    Session,
    SourceNotFoundError,
    SqlError,
    SqlProcessor,
    TableNotFoundError,
    __version__,
)
from duckmerge._merge import MergeResult, MergeResultClosedError, merge

#: Component names pipeline hosts use, mapped to the driver classes.
DRIVERS: dict[str, type] = {
    "filesystem.csv_extractor": CsvExtractor,
    "filesystem.csv_writer": CsvWriter,
    "duckdb.processor": SqlProcessor,
    "crm.merge": MergeDriver,
}

__all__ = [
    "DUCKDB_VERSION",
    "CancelledError",
    "ConfigError",
    "Connection",
    "CsvError",
    "CsvExtractor",
    "CsvWriter",
    "DRIVERS",
    "DuckMergeError",
    "MergeDriver",
    "MergeResult",
    "MergeResultClosedError",
    "Result",
    "Session",
    "SessionLockedError",
    "SourceNotFoundError",
    "SqlError",
    "SqlProcessor",
    "TableNotFoundError",
    "__version__",
    "merge",
]
