"""``duckmerge.merge()``: the CRM merge in one call, for scripts and notebooks.

:func:`merge` turns files, session tables and DataFrames into a
:class:`~duckmerge.MergeDriver` config, runs the driver against a session
(a temporary one by default) and returns a :class:`MergeResult` that reads
the merged table back as pandas, polars or pyarrow and renders a summary in
Jupyter.

>>> import duckmerge as dm
>>> with dm.merge("crm.csv", ["vendor_a.csv", "vendor_b.csv"],
...               keys=["email", "phone:phone"], default_region="CZ") as res:
...     print(res.stats["match_rate"])
...     df = res.to_pandas()
"""

from __future__ import annotations

import html
import importlib
import logging
import os
import re
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TextIO, Union

from duckmerge._duckmerge import (
    ConfigError,
    CsvWriter,
    DuckMergeError,
    MergeDriver,
    Result,
    Session,
)

__all__ = ["MergeResult", "MergeResultClosedError", "merge"]

_log = logging.getLogger("duckmerge")

#: What ``original`` / each ``enriched`` item may be (checked at run time):
#: a path (``str`` / ``os.PathLike``), a table name, a MergeDriver source dict,
#: or a DataFrame / Arrow object (anything with ``__arrow_c_stream__``, or a
#: pandas DataFrame). Spelled ``Any`` because DataFrames have no common type.
SourceLike = Any
#: A key: ``"email"``, ``"phone:phone"`` (``column:normalizer``) or a key dict.
KeyLike = Union[str, Mapping[str, Any]]
#: A progress callback: called with one dict per progress event.
ProgressCallback = Callable[[dict[str, Any]], object]

_NORMALIZERS = ("text", "email", "phone", "exact")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_PROGRESS_EVENTS = ("merge_progress", "progress")


class MergeResultClosedError(DuckMergeError, ValueError):
    """A :class:`MergeResult` was used after :meth:`MergeResult.close`."""


# --------------------------------------------------------------------------
# progress sinks


class _Sink(Protocol):
    def __call__(self, event: str, data: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class _CallbackSink:
    """Calls a user function with ``{"event": ..., **data}`` for progress events."""

    def __init__(self, callback: ProgressCallback) -> None:
        self._callback = callback

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event in _PROGRESS_EVENTS:
            self._callback({"event": event, **data})

    def close(self) -> None:
        pass


def _percent(value: Any) -> str:
    return f"{value:.0f}%" if isinstance(value, (int, float)) else "?%"


class _LineSink:
    """Plain progress lines on stderr: ``[duckmerge] match_merge 4/5 (80%) ...``."""

    #: Seconds between two lines for DuckDB's within-stage ``progress`` events.
    DETAIL_INTERVAL = 5.0

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._last_detail = time.monotonic()

    def _write(self, line: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        print(line, file=stream, flush=True)

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "merge_progress":
            self._write(
                f"[duckmerge] {data.get('stage')} {data.get('stage_index')}/"
                f"{data.get('stage_count')} ({_percent(data.get('percent'))}) "
                f"{data.get('message', '')}".rstrip()
            )
        elif event == "progress":
            now = time.monotonic()
            if now - self._last_detail < self.DETAIL_INTERVAL:
                return
            self._last_detail = now
            self._write(
                f"[duckmerge] {data.get('step_id')}: {_percent(data.get('percent'))} "
                f"({data.get('rows')} rows)"
            )

    def close(self) -> None:
        pass


class _TqdmSink:
    """One ``tqdm.auto`` bar over the merge's stages."""

    def __init__(self, tqdm_class: Any, name: str) -> None:
        self._bar = tqdm_class(total=5, desc=f"{name}: starting", unit="stage", leave=True)

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "merge_progress":
            total = data.get("stage_count")
            if isinstance(total, int) and total != self._bar.total:
                self._bar.total = total
            self._bar.set_description(str(data.get("stage")), refresh=False)
            self._bar.set_postfix(rows=data.get("rows"), refresh=False)
            index = data.get("stage_index")
            if isinstance(index, int):
                self._bar.n = index
            self._bar.refresh()
        elif event == "progress":
            self._bar.set_postfix(
                step=data.get("step_id"),
                done=_percent(data.get("percent")),
                rows=data.get("rows"),
            )

    def close(self) -> None:
        self._bar.close()


def _make_sink(progress: bool | ProgressCallback, name: str) -> _Sink | None:
    if progress is False or progress is None:
        return None
    if progress is True:
        try:
            tqdm_auto = importlib.import_module("tqdm.auto")
        except ImportError:
            return _LineSink()
        return _TqdmSink(tqdm_auto.tqdm, name)
    if callable(progress):
        return _CallbackSink(progress)
    raise TypeError(
        f"merge(): progress must be False, True or a callable taking one dict, "
        f"got {type(progress).__name__}"
    )


class _MergeContext:
    """The ctx handed to the driver when progress is reported.

    SQL runs on the session's own connection; events go to the session's
    ``logs/events.jsonl`` and to the progress sink.
    """

    def __init__(self, session: Session, sink: _Sink) -> None:
        self._session = session
        self._sink = sink
        self.base_path = session.base_path
        #: A KeyboardInterrupt caught in log_event, re-raised once the driver returns.
        self.interrupted: KeyboardInterrupt | None = None

    def get_db_connection(self) -> Any:
        return self._session.get_db_connection()

    def log_event(self, event: str, **data: Any) -> None:
        try:
            self._session.log_event(event, **data)
            try:
                self._sink(event, data)
            except Exception:  # a broken progress handler must not abort the merge
                _log.warning("duckmerge.merge(): the progress handler failed", exc_info=True)
        except KeyboardInterrupt as exc:
            # The driver logs and drops errors raised by ctx.log_event, so a
            # Ctrl-C landing here would be lost: keep it for merge() to raise.
            if self.interrupted is None:
                self.interrupted = exc

    def log_metric(self, name: str, value: Any, **tags: Any) -> None:
        self._session.log_metric(name, value, **tags)


# --------------------------------------------------------------------------
# arguments -> MergeDriver config


def _is_frame(obj: object) -> bool:
    if hasattr(obj, "__arrow_c_stream__"):
        return True
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(obj, pandas.DataFrame)


class _SourceBuilder:
    """Turns the ``original`` / ``enriched`` arguments into source configs,
    loading in-memory data into the session on the way."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._tables: set[str] | None = None

    def _is_table(self, name: str) -> bool:
        if self._tables is None:
            self._tables = set(self._session.tables())
        return name in self._tables

    def _load(self, table: str, data: object) -> None:
        self._session.write_table(table, data, mode="replace")
        if self._tables is not None:
            self._tables.add(table)

    def source(self, value: object, arg: str, table: str, default_name: str) -> Any:
        """One source: ``arg`` names it in errors, ``table`` is where data is
        loaded, ``default_name`` its name in stats for in-memory data."""
        if isinstance(value, (str, os.PathLike)):
            path = _text_path(value, arg)
            if isinstance(value, str) and not os.path.isfile(path) and self._is_table(path):
                return path
            if not path:
                raise ConfigError(f"merge(): {arg} is an empty string; give a file or table name")
            full = os.path.abspath(path)
            if full.lower().endswith(_PARQUET_SUFFIXES) and os.path.isfile(full):
                self._load(table, self._session.sql("SELECT * FROM read_parquet(?)", [full]))
                stem = os.path.basename(full).split(".")[0]
                return {"table": table, "name": stem}
            return {"path": full}
        if isinstance(value, Mapping):
            config = dict(value)
            if "data" in config:
                data = config.pop("data")
                if not _is_frame(data):
                    raise TypeError(
                        f"merge(): {arg}['data'] must be a DataFrame or Arrow data, "
                        f"got {type(data).__name__}"
                    )
                self._load(table, data)
                config["table"] = table
                config.setdefault("name", default_name)
            return config
        if _is_frame(value):
            self._load(table, value)
            return {"table": table, "name": default_name}
        raise TypeError(
            f"merge(): {arg} must be a file path, a table name, a source dict or a "
            f"DataFrame / Arrow table, got {type(value).__name__}"
        )


def _infer_normalizer(column: object) -> str | None:
    """The normaliser ``merge()`` picks for a key given without one, from the
    column's name: ``email`` for e-mail columns, ``phone`` for phone columns,
    else ``None`` (the driver's default, ``text``)."""
    if not isinstance(column, str):
        return None
    words = set(re.split(r"[^a-z0-9]+", column.lower()))
    if words & {"email", "mail"}:
        return "email"
    if words & {"phone", "mobile", "tel", "telephone", "cell", "msisdn"}:
        return "phone"
    return None


def _key(key: object, index: int, default_region: str | None) -> Any:
    arg = f"keys[{index}]"
    if isinstance(key, str):
        column, sep, normalize = key.rpartition(":")
        if not sep:
            column, normalize = key, ""
        if sep and (normalize not in _NORMALIZERS or not column):
            raise ConfigError(
                f"merge(): {arg} {key!r}: write \"column\" or \"column:normalizer\" with a "
                f"normalizer among {', '.join(_NORMALIZERS)} (e.g. \"phone:phone\"), "
                "or pass a dict"
            )
        normalize = normalize or _infer_normalizer(column) or "text"
        out: dict[str, Any] = {"column": column, "normalize": normalize}
        if normalize == "phone" and default_region is not None:
            out["default_region"] = default_region
        return out
    if isinstance(key, Mapping):
        out = dict(key)
        if "normalize" not in out and "default_region" not in out and not out.get(
            "email_canonical"
        ):
            inferred = _infer_normalizer(out.get("column"))
            if inferred is not None:
                out["normalize"] = inferred
        if default_region is not None and out.get("normalize") == "phone":
            out.setdefault("default_region", default_region)
        return out
    raise TypeError(
        f"merge(): {arg} must be a column name, \"column:normalizer\" or a dict, "
        f"got {type(key).__name__}"
    )


def _keys(keys: object, default_region: str | None) -> list[Any]:
    if isinstance(keys, (str, Mapping)):
        keys = [keys]
    if not isinstance(keys, Sequence):
        raise TypeError(
            f"merge(): keys must be a list such as [\"email\", \"phone:phone\"], "
            f"got {type(keys).__name__}"
        )
    return [_key(k, i, default_region) for i, k in enumerate(keys)]


def _output(output: object) -> tuple[dict[str, Any] | None, str | None]:
    """The driver's ``output`` config and the absolute output file path, if any."""
    if output is None:
        return None, None
    if isinstance(output, (str, os.PathLike)):
        path = os.path.abspath(_text_path(output, "output"))
        return {"path": path}, path
    if isinstance(output, Mapping):
        config = dict(output)
        raw = config.get("path")
        if isinstance(raw, os.PathLike):
            raw = config["path"] = _text_path(raw, "output['path']")
        return config, os.path.abspath(raw) if isinstance(raw, str) else None
    raise TypeError(
        f"merge(): output must be None, a file path or an output dict, got {type(output).__name__}"
    )


def _text_path(value: str | os.PathLike[Any], arg: str) -> str:
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"merge(): {arg} must be a text path, got {type(path).__name__}")
    return path


def _open_session(session: object) -> tuple[Session, bool]:
    """The session to merge in, and whether the result owns (closes) it."""
    if session is None:
        return Session(), True
    if isinstance(session, Session):
        return session, False
    if isinstance(session, (str, os.PathLike)):
        return Session(session, keep=True), True
    raise TypeError(
        f"merge(): session must be None, a duckmerge.Session or a folder path, "
        f"got {type(session).__name__}"
    )


# --------------------------------------------------------------------------
# the public function


def merge(
    original: SourceLike,
    enriched: SourceLike | Sequence[SourceLike],
    *,
    keys: KeyLike | Sequence[KeyLike],
    fields: Sequence[str] | None = None,
    strategy: str = "first",
    field_strategies: Mapping[str, str] | None = None,
    on_conflict: str = "fill",
    recency_column: str | None = None,
    session: Session | str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    progress: bool | ProgressCallback = False,
    name: str = "merged",
    default_region: str | None = None,
) -> MergeResult:
    """Merge an original contact table with enriched vendor sources.

    Exactly one output row per original row, in the original's order: each
    original row is matched on the first key (in order) that any enriched
    row shares after normalisation, and every field is filled from the
    matching enriched rows by ``strategy``. The work runs in a DuckDB
    session through :class:`duckmerge.MergeDriver`.

    Args:
        original: The CRM side. A file path (``str`` or ``os.PathLike``,
            relative to the working directory): ``.csv``, ``.csv.gz``,
            ``.csv.zst`` (read by the CSV extractor) or ``.parquet`` (loaded
            into table ``<name>__input_original``). A ``str`` that is not a
            file but names a table in ``session`` is that table. A dict is
            passed to the driver as a source config (``{"path": ..., "delimiter":
            ";"}``, ``{"table": ...}``); a dict with ``"data"`` holding a
            DataFrame loads it and keeps the dict's ``name`` / ``priority``.
            A pandas / polars DataFrame or anything with
            ``__arrow_c_stream__`` is written into table
            ``<name>__input_original`` (replacing it).
        enriched: One vendor source or a list of them, in the same forms
            (DataFrames go to ``<name>__input_1``, ``<name>__input_2``, …).
            Sources are named after the file stem or table name; in-memory
            data is named ``source_1``, ``source_2``, … (``original`` for the
            original) unless a dict gives a ``name``.
        keys: The matching keys, in order: ``"email"`` (the normaliser is
            guessed from the name: email, phone or text),
            ``"column:normalizer"`` with a normalizer among ``text``,
            ``email``, ``phone``, ``exact`` (``"phone:phone"``), or a key dict
            (``{"column": "phone", "enriched_column": "tel", "normalize":
            "phone", "default_region": "CZ"}``).
        fields: Enriched columns to bring in (default: every non-key column).
        strategy: How a field's value is chosen among the matching rows:
            ``first``, ``last``, ``longest``, ``most_complete``,
            ``source_priority``, ``most_recent`` or ``most_frequent``.
        field_strategies: Per-field strategies overriding ``strategy``.
        on_conflict: For fields the original also has: ``fill`` (keep the
            original's non-empty value), ``overwrite`` or ``keep_both``
            (the enriched value goes to ``<field>_enriched``).
        recency_column: The enriched column ``most_recent`` orders by.
        session: ``None``: a temporary session, removed when the result is
            closed. A :class:`duckmerge.Session`: used as is and left open.
            A folder path: ``Session(path, keep=True)``, closed with the
            result and kept on disk, so running the merge again in the same
            folder lets the engine resume.
        output: ``None`` (table only), a file path (``.csv``, ``.csv.gz``,
            ``.parquet``; written atomically, in the table's column order)
            or the driver's output dict (``{"path": ..., "table": ...,
            "provenance": False, "compress_text": False}``; see the README's
            MergeDriver config for each key).
        progress: ``False`` (silent); ``True``: a ``tqdm.auto`` bar over the
            five stages when tqdm is installed, else one line per stage on
            stderr; a callable: called with one dict per event,
            ``{"event": "merge_progress", "stage", "stage_index",
            "stage_count", "percent", "rows", "message", "step_id"}``, and
            ``{"event": "progress", "step_id", "percent", "rows"}`` while a
            big file loads.
        name: The step id and the output table's name (also
            ``<name>__stats`` and ``<name>__unmatched``).
        default_region: Two-letter country code (``"CZ"``) for phone keys
            that do not set their own: national numbers such as
            ``601 111 222`` are read as numbers of that country.

    Returns:
        MergeResult: the merged table, its stats and its session.

    Raises:
        TypeError: an argument of the wrong kind (the message names it).
        duckmerge.ConfigError: a bad key, strategy or other setting.
        duckmerge.SourceNotFoundError: an input file does not exist.
        duckmerge.TableNotFoundError: a named table does not exist.
        duckmerge.CsvError: an input CSV could not be read.

    Example:
        >>> import duckmerge as dm
        >>> res = dm.merge("crm.csv", ["vendor_a.csv", "vendor_b.csv"],
        ...                keys=["email", "phone:phone"], default_region="CZ",
        ...                strategy="most_complete", output="out/merged.csv",
        ...                progress=True)
        >>> res.stats["match_rate"]
        0.795
        >>> res.unmatched().to_pandas()      # vendor rows that matched nobody
        >>> res.close()                      # removes the temporary session
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"merge(): name must be a non-empty string, got {name!r}")
    if default_region is not None and not isinstance(default_region, str):
        raise TypeError(
            f"merge(): default_region must be a country code such as \"CZ\", got {default_region!r}"
        )
    key_configs = _keys(keys, default_region)
    output_config, output_path = _output(output)
    sink = _make_sink(progress, name)
    try:
        sess, owned = _open_session(session)
        try:
            builder = _SourceBuilder(sess)
            config: dict[str, Any] = {
                "original": builder.source(
                    original, "original", f"{name}__input_original", "original"
                ),
                "enriched": [
                    builder.source(
                        src, f"enriched[{i}]", f"{name}__input_{i + 1}", f"source_{i + 1}"
                    )
                    for i, src in enumerate(_as_list(enriched))
                ],
                "keys": key_configs,
                "strategy": strategy,
                "on_conflict": on_conflict,
            }
            if fields is not None:
                config["fields"] = list(fields)
            if field_strategies is not None:
                config["field_strategies"] = dict(field_strategies)
            if recency_column is not None:
                config["recency_column"] = recency_column
            if output_config is not None:
                config["output"] = output_config
            # Without a progress sink the driver gets the Session itself (it then
            # also saves the step's cleaned config and manifest entry); with one,
            # a thin ctx that forwards events to the session log and the sink.
            ctx = None if sink is None else _MergeContext(sess, sink)
            out = MergeDriver().run(
                step_id=name, config=config, inputs=None, ctx=sess if ctx is None else ctx
            )
            if ctx is not None and ctx.interrupted is not None:
                raise ctx.interrupted
        except BaseException:
            if owned:
                sess.close()
            raise
    finally:
        if sink is not None:
            sink.close()
    return MergeResult(
        sess,
        table=str(out["table"]),
        rows=int(out["rows"]),
        stats=dict(out["stats"]),
        output_path=output_path,
        owns_session=owned,
        skipped_stages=[str(x) for x in out.get("skipped_stages") or []],
    )


def _as_list(enriched: object) -> list[object]:
    if isinstance(enriched, (str, os.PathLike, Mapping)) or _is_frame(enriched):
        return [enriched]
    if isinstance(enriched, Sequence):
        return list(enriched)
    raise TypeError(
        "merge(): enriched must be a source (path, table name, dict, DataFrame) or a list "
        f"of sources, got {type(enriched).__name__}"
    )


# --------------------------------------------------------------------------
# the result


def _close_session(session: Session) -> None:
    session.close()


class MergeResult:
    """What :func:`merge` returns: the merged table in its session, plus stats.

    Attributes:
        stats: The driver's statistics (``rows_original``, ``rows_output``,
            ``matched``, ``match_rate``, ``matched_per_key``,
            ``rows_per_source``, ``unmatched_enriched``, ``conflicts``,
            ``values_filled``, …).
        table: The merged table's name in ``session``.
        rows: Rows in the merged table (= rows in the original).
        session: The :class:`duckmerge.Session` holding the table.
        output_path: Absolute path of the file written by ``output=``, or
            ``None``.
        skipped_stages: Stages the engine skipped because a previous run in
            the same session finished them with the same inputs and config
            (resume); empty on a fresh run.

    A result that owns its session (``merge(session=None)`` or a folder path)
    closes it on :meth:`close`, at the end of a ``with`` block, or when the
    result is garbage-collected; read what you need before that. A session
    passed in as a :class:`duckmerge.Session` is never closed here.

    Example:
        >>> with duckmerge.merge(crm_df, vendor_df, keys=["email"]) as res:
        ...     df = res.to_pandas()
        ...     res.write_parquet("merged.parquet")
    """

    def __init__(
        self,
        session: Session,
        *,
        table: str,
        rows: int,
        stats: dict[str, Any],
        output_path: str | None = None,
        owns_session: bool = False,
        skipped_stages: Sequence[str] = (),
    ) -> None:
        self.session = session
        self.table = table
        self.rows = rows
        self.stats = stats
        self.output_path = output_path
        self.skipped_stages = list(skipped_stages)
        self._closed = False
        self._finalizer: weakref.finalize[[Session], MergeResult] | None = (
            weakref.finalize(self, _close_session, session) if owns_session else None
        )

    # -- lifecycle -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """``True`` after :meth:`close`."""
        return self._closed

    def close(self) -> None:
        """Close the result; closes (and, if temporary, removes) an owned session.

        Safe to call twice. A session passed to :func:`merge` stays open.
        """
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> MergeResult:
        return self

    def __exit__(self, exc_type: object, exc_value: object, traceback: object) -> None:
        self.close()

    def _live_session(self) -> Session:
        if self._closed:
            raise MergeResultClosedError(
                f"this MergeResult (table {self.table!r}) is closed; read the data before "
                "close(), or pass session=... to merge() to keep the session open"
            )
        return self.session

    # -- data ----------------------------------------------------------------

    def __len__(self) -> int:
        return self.rows

    def result(self) -> Result:
        """The merged table as a :class:`duckmerge.Result` (lazy, re-readable)."""
        return self._live_session().table(self.table)

    def to_arrow(self) -> Any:
        """The merged table as a ``pyarrow.Table``."""
        return self.result().to_arrow()

    def to_pandas(self) -> Any:
        """The merged table as a ``pandas.DataFrame``."""
        return self.result().to_pandas()

    def to_polars(self) -> Any:
        """The merged table as a ``polars.DataFrame``."""
        return self.result().to_polars()

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """The merged table as an Arrow C stream.

        So ``pyarrow.table(res)`` and ``polars.DataFrame(res)`` work.
        """
        return self.result().__arrow_c_stream__(requested_schema)

    def unmatched(self) -> Result:
        """Enriched rows that matched no original row (table ``<table>__unmatched``),
        with a ``source`` column naming their source."""
        return self._live_session().table(f"{self.table}__unmatched")

    def write_csv(self, path: str | os.PathLike[str], **options: Any) -> str:
        """Write the merged table to a CSV file (``.csv``, ``.csv.gz``, ``.csv.zst``).

        Written atomically by :class:`duckmerge.CsvWriter`; ``options`` are its
        config keys (``delimiter``, ``header``, ``encoding``, ``quoting``,
        ``columns``, …). Columns keep the table's order unless
        ``sort_columns=True``.

        Returns:
            The absolute path written.
        """
        return self._write(path, options, "write_csv")

    def write_parquet(self, path: str | os.PathLike[str], **options: Any) -> str:
        """Write the merged table to a Parquet file (zstd-compressed).

        Returns:
            The absolute path written.
        """
        return self._write(path, {"format": "parquet", **options}, "write_parquet")

    def _write(self, path: str | os.PathLike[str], options: dict[str, Any], what: str) -> str:
        session = self._live_session()
        full = os.path.abspath(os.fspath(path))
        config = {"sort_columns": False, **options, "path": full}
        CsvWriter().run(
            step_id=f"{self.table}__{what}",
            config=config,
            inputs={"table": self.table},
            ctx=session,
        )
        return full

    # -- display -------------------------------------------------------------

    def __repr__(self) -> str:
        if self._closed:
            return f"<MergeResult table={self.table!r} rows={self.rows} (closed)>"
        rate = self.stats.get("match_rate")
        shown = f"{rate:.1%}" if isinstance(rate, (int, float)) else "?"
        return (
            f"<MergeResult table={self.table!r} rows={self.rows} match_rate={shown} "
            f"output_path={self.output_path!r}>"
        )

    def _repr_html_(self) -> str:
        """A notebook summary: rows, match rates per key and source, conflicts, preview."""
        e = html.escape
        stats = self.stats
        rows_original = stats.get("rows_original", self.rows)
        rows_output = stats.get("rows_output", self.rows)
        rate = stats.get("match_rate")

        def pct(n: object, of: object) -> str:
            if isinstance(n, (int, float)) and isinstance(of, (int, float)) and of:
                return f"{n / of:.1%}"
            return "–"

        parts = [
            '<div class="duckmerge-merge-result">',
            f"<p><b>duckmerge merge</b> → table <code>{e(self.table)}</code>"
            + (f", file <code>{e(self.output_path)}</code>" if self.output_path else "")
            + (" <i>(closed)</i>" if self._closed else "")
            + "</p>",
            f"<p>rows in: {e(str(rows_original))} · rows out: {e(str(rows_output))} · "
            f"matched: {e(str(stats.get('matched', '–')))} · match rate: "
            f"<b>{e(f'{rate:.1%}' if isinstance(rate, (int, float)) else '–')}</b></p>",
        ]

        if self.skipped_stages:
            parts.append(
                "<p>resumed: skipped "
                + e(", ".join(self.skipped_stages))
                + " (unchanged since the last run)</p>"
            )

        per_key = stats.get("matched_per_key") or {}
        if per_key:
            body = "".join(
                f"<tr><td>{e(str(k))}</td><td>{e(str(n))}</td>"
                f"<td>{e(pct(n, rows_original))}</td></tr>"
                for k, n in per_key.items()
            )
            parts.append(
                "<table><thead><tr><th>key</th><th>matched</th><th>match rate</th></tr></thead>"
                f"<tbody>{body}</tbody></table>"
            )

        per_source = stats.get("rows_per_source") or {}
        matched_per_source = stats.get("matched_per_source")
        unmatched = stats.get("unmatched_enriched") or {}
        duplicates = stats.get("duplicates_collapsed") or {}
        if per_source or matched_per_source:
            sources = list(per_source) + [
                s for s in (matched_per_source or {}) if s not in per_source
            ]
            head = "<th>source</th><th>rows</th><th>duplicates collapsed</th>"
            head += "<th>rows matching nobody</th>"
            if isinstance(matched_per_source, Mapping):
                head += "<th>original rows enriched</th><th>match rate</th>"
            body = ""
            for s in sources:
                body += (
                    f"<tr><td>{e(str(s))}</td><td>{e(str(per_source.get(s, '–')))}</td>"
                    f"<td>{e(str(duplicates.get(s, '–')))}</td>"
                    f"<td>{e(str(unmatched.get(s, '–')))}</td>"
                )
                if isinstance(matched_per_source, Mapping):
                    n = matched_per_source.get(s)
                    body += (
                        f"<td>{e(str(n if n is not None else '–'))}</td>"
                        f"<td>{e(pct(n, rows_original))}</td>"
                    )
                body += "</tr>"
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

        conflicts = stats.get("conflicts") or {}
        if conflicts:
            body = "".join(
                f"<tr><td>{e(str(f))}</td><td>{e(str(n))}</td></tr>" for f, n in conflicts.items()
            )
            parts.append(
                "<table><thead><tr><th>field</th><th>conflicts</th></tr></thead>"
                f"<tbody>{body}</tbody></table>"
            )

        if not self._closed:
            try:
                parts.append(self.result()._repr_html_())
            except DuckMergeError as exc:  # e.g. the caller's session was closed
                parts.append(f"<p><i>preview unavailable: {e(str(exc))}</i></p>")
        parts.append("</div>")
        return "".join(parts)
