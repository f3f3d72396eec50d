"""Support for running the drivers on a host's duckdb-python connection.

The merge's SQL calls ``duckmerge_normalize(value, spec)``. On a native
session that function is registered by the Rust core; on a duckdb-python
connection it is registered here as a Python UDF that calls the same Rust
normalisers, so both ctx kinds produce identical keys.
"""

from __future__ import annotations

from typing import Any, Callable

from duckmerge._duckmerge import _normalize_values

FUNCTION = "duckmerge_normalize"


def _arrow_udf(values: Any, specs: Any) -> Any:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    vals = values.to_pylist()
    spec_list = specs.to_pylist()
    if len(set(spec_list)) <= 1:
        spec = spec_list[0] if spec_list else None
        out = [None] * len(vals) if spec is None else _normalize_values(vals, spec)
    else:  # a spec per row: normalise each row with its own
        out = [
            None if s is None else _normalize_values([v], s)[0]
            for v, s in zip(vals, spec_list)
        ]
    return pa.array(out, type=pa.string())


def _native_udf(value: str | None, spec: str | None) -> str | None:
    if value is None or spec is None:
        return None
    return _normalize_values([value], spec)[0]


def register_normalize(con: Any) -> None:
    """Registers ``duckmerge_normalize`` on a duckdb-python connection,
    unless it is there already. Vectorised through Arrow when pyarrow is
    installed, one row at a time otherwise."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [FUNCTION]
    ).fetchall()[0][0]
    if exists:
        return
    fn: Callable[..., Any]
    try:
        import pyarrow  # noqa: F401

        fn, kind = _arrow_udf, "arrow"
    except ImportError:
        fn, kind = _native_udf, "native"
    con.create_function(
        FUNCTION,
        fn,
        ["VARCHAR", "VARCHAR"],
        "VARCHAR",
        type=kind,
        null_handling="special",
        side_effects=False,
    )
