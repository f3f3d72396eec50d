use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyList, PyTuple};

use super::arrow_ffi::{batches_reader, stream_capsule, ArrowBatches, BatchReader};
use super::{import_optional, wait_interruptibly, IntoPy, SharedDb};
use crate::arrow::{Param, QueryStream};
use crate::error::Error;

/// Rows shown by `_repr_html_`.
const PREVIEW_ROWS: usize = 10;

/// A query result. Consumers (`to_arrow`, `fetchall`, `__arrow_c_stream__` …)
/// run the query when called, so a result can be read more than once; one
/// from `execute()` holds the rows it already produced.
#[pyclass(name = "Result", module = "duckmerge._duckmerge", frozen)]
pub struct PyQueryResult {
    db: SharedDb,
    sql: String,
    params: Vec<Param>,
    context: String,
    /// Set when the result is a whole table (`table(name)`): read through
    /// the parallel collector instead of streaming `sql`.
    table: Option<String>,
    materialized: Option<(SchemaRef, Vec<RecordBatch>)>,
    /// Where `fetchone`/`fetchmany`/`fetchall` are in the rows.
    cursor: Mutex<Option<Cursor>>,
}

/// The rows `fetchone`/`fetchmany` have reached: the batch being handed out
/// (as tuples) and a reader over the batches not read yet, so fetching one
/// row of a large result converts one batch, not every row.
struct Cursor {
    /// A `pyarrow.RecordBatchReader` over the rest; None once at the end.
    reader: Option<Py<PyAny>>,
    /// The rows of the last batch read, as tuples.
    rows: Py<PyList>,
    /// How many of `rows` were handed out.
    pos: usize,
}

impl PyQueryResult {
    /// A result that runs `sql` when read.
    pub fn lazy(db: SharedDb, sql: String, params: Vec<Param>, context: String) -> Self {
        PyQueryResult {
            db,
            sql,
            params,
            context,
            table: None,
            materialized: None,
            cursor: Mutex::new(None),
        }
    }

    /// All rows of `table` (whose name the caller has checked).
    pub fn of_table(db: SharedDb, table: &str, context: String) -> Self {
        PyQueryResult {
            table: Some(table.to_string()),
            ..Self::lazy(
                db,
                format!("SELECT * FROM {}", crate::backend::quote_ident(table)),
                Vec::new(),
                context,
            )
        }
    }

    /// Runs `sql` now and keeps its rows (what `execute()` returns).
    pub fn execute(
        py: Python<'_>,
        db: SharedDb,
        sql: String,
        params: Vec<Param>,
        context: String,
    ) -> PyResult<Self> {
        let (schema, batches) = run_collect(py, &db, &sql, &params, &context, None)?;
        Ok(PyQueryResult {
            db,
            sql,
            params,
            context,
            table: None,
            materialized: Some((schema, batches)),
            cursor: Mutex::new(None),
        })
    }

    fn batches(&self, py: Python<'_>) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
        match &self.materialized {
            Some((s, b)) => Ok((s.clone(), b.clone())),
            None => run_collect(
                py,
                &self.db,
                &self.sql,
                &self.params,
                &self.context,
                self.table.as_deref(),
            ),
        }
    }

    /// The result wrapped as a subquery, e.g. for `LIMIT` or `count(*)`.
    fn wrapped(
        &self,
        py: Python<'_>,
        select: &str,
        tail: &str,
    ) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
        let sql = format!("{select} FROM ({}) AS _duckmerge_q {tail}", self.sql);
        run_collect(py, &self.db, &sql, &self.params, &self.context, None)
    }

    fn pyarrow_table<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pa = import_optional(py, "pyarrow", "pyarrow", "to_arrow()")?;
        let (schema, batches) = self.batches(py)?;
        let table = ArrowBatches::new(schema, batches);
        // Not pyarrow.table(): that imports pandas when it is installed (~0.3 s).
        pa.getattr("RecordBatchReader")?
            .call_method1("from_stream", (table,))?
            .call_method0("read_all")
    }
}

/// Rows per Arrow batch of a parallel read at most (arrays also end at each
/// of the scan's batches: a table's row groups, with more than one thread).
const ARROW_BATCH_ROWS: usize = 1_000_000;

fn run_collect(
    py: Python<'_>,
    db: &SharedDb,
    sql: &str,
    params: &[Param],
    context: &str,
    table: Option<&str>,
) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
    // Everything is read anyway. A whole table, or one SELECT without
    // parameters: DuckDB's worker threads build the Arrow arrays while they
    // run it (RawConnection::query_arrow_parallel). Any other statement
    // streams, and DuckDB's converter turns its chunks into Arrow on a
    // second thread (RawConnection::query_arrow).
    let con = Arc::new(db.connect_raw().py_err()?);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let worker = con.clone();
    let (sql, params) = (sql.to_string(), params.to_vec());
    let whole_table = table.is_some();
    std::thread::Builder::new()
        .name("duckmerge-query".into())
        .spawn(move || {
            let parallel = whole_table || (params.is_empty() && worker.is_select(&sql));
            let out = if parallel {
                worker.query_arrow_parallel(&sql, ARROW_BATCH_ROWS)
            } else {
                worker.query_arrow(&sql, &params)
            };
            let _ = tx.send(out);
        })
        .map_err(|e| super::to_pyerr(Error::io("starting the query thread", e)))?;
    wait_interruptibly(
        py,
        move |timeout| match rx.recv_timeout(timeout) {
            Ok(Ok(out)) => Ok(crate::arrow::Poll::Ready(out)),
            Ok(Err(message)) => Err(Error::sql_text(context, message)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(crate::arrow::Poll::Pending),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(Error::Arrow(
                "the query thread ended without a result".into(),
            )),
        },
        || con.interrupt(),
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[pymethods]
impl PyQueryResult {
    /// Column names, in order.
    #[getter]
    fn columns(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let schema = match &self.materialized {
            Some((s, _)) => s.clone(),
            None => self.wrapped(py, "SELECT *", "LIMIT 0")?.0,
        };
        Ok(schema.fields().iter().map(|f| f.name().clone()).collect())
    }

    /// The rows as a ``pyarrow.Table`` (zero-copy from DuckDB's Arrow batches).
    /// A whole table (``table(name)``) or a ``SELECT`` without parameters is
    /// converted by DuckDB's worker threads in parallel, in the query's order.
    ///
    /// >>> session.table("crm").to_arrow().num_rows
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.pyarrow_table(py)
    }

    /// The rows as a ``pandas.DataFrame`` (through Arrow).
    fn to_pandas<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        import_optional(py, "pandas", "pandas", "to_pandas()")?;
        self.pyarrow_table(py)?.call_method0("to_pandas")
    }

    /// The rows as a ``polars.DataFrame`` (through Arrow).
    fn to_polars<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let polars = import_optional(py, "polars", "polars", "to_polars()")?;
        let (schema, batches) = self.batches(py)?;
        let table = ArrowBatches::new(schema, batches);
        polars.call_method1("DataFrame", (table,))
    }

    /// All remaining rows as tuples (needs pyarrow), converted a batch at a
    /// time as they stream out of DuckDB.
    fn fetchall<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        slf.get().fetch(slf, None, "fetchall()")
    }

    /// The next row as a tuple, or ``None`` after the last (needs pyarrow).
    /// The rows stream out of DuckDB: only the batch holding the row (about
    /// 2,048 rows) is converted to Python values.
    fn fetchone<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let rows = slf.get().fetch(slf, Some(1), "fetchone()")?;
        rows.iter().next().map(Ok).transpose()
    }

    /// Up to ``size`` next rows as tuples (fewer at the end; needs pyarrow).
    #[pyo3(signature = (size=1))]
    fn fetchmany<'py>(slf: &Bound<'py, Self>, size: i64) -> PyResult<Bound<'py, PyList>> {
        let size = usize::try_from(size).map_err(|_| {
            super::to_pyerr(Error::Config(format!(
                "fetchmany(size={size}): size must be 0 or more"
            )))
        })?;
        slf.get().fetch(slf, Some(size), "fetchmany()")
    }

    /// Exports the rows through the Arrow C stream interface (PyCapsule).
    /// Batches are produced as the consumer reads them. A `requested_schema`
    /// is honoured when every column can be cast to it, else ignored.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyCapsule>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let reader: BatchReader = match &self.materialized {
            Some((s, b)) => batches_reader(s.clone(), b.clone()),
            None => {
                let conn = self.db.connect().py_err()?;
                let mut stream = QueryStream::start(
                    conn,
                    self.sql.clone(),
                    self.params.clone(),
                    self.context.clone(),
                    Some(self.db.open_streams()),
                )
                .py_err()?;
                let handle = stream.interrupt_handle();
                // Until the first batch: DuckDB runs the query after handing out
                // the schema, and a consumer's read (pyarrow, polars) cannot
                // be interrupted with Ctrl-C while it waits.
                wait_interruptibly(py, |t| stream.poll_first(t), || handle.interrupt())?;
                Box::new(stream.into_reader().py_err()?)
            }
        };
        stream_capsule(py, reader, requested_schema)
    }

    /// The number of rows (a ``count(*)`` over the query unless already read).
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        if let Some((_, b)) = &self.materialized {
            return Ok(b.iter().map(|b| b.num_rows()).sum());
        }
        let (_, batches) = self.wrapped(py, "SELECT count(*)", "")?;
        let n = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .map(|a| a.value(0))
            })
            .unwrap_or(0);
        Ok(n as usize)
    }

    /// An HTML preview for notebooks: the first rows and the row count.
    fn _repr_html_(&self, py: Python<'_>) -> PyResult<String> {
        let (schema, batches) = match &self.materialized {
            Some((s, b)) => (s.clone(), b.clone()),
            None => self.wrapped(py, "SELECT *", &format!("LIMIT {PREVIEW_ROWS}"))?,
        };
        let total = self.__len__(py)?;
        let mut html = String::from("<table class=\"duckmerge-result\"><thead><tr>");
        for f in schema.fields() {
            html.push_str(&format!(
                "<th>{}<br><small>{}</small></th>",
                html_escape(f.name()),
                html_escape(&f.data_type().to_string())
            ));
        }
        html.push_str("</tr></thead><tbody>");
        let options = FormatOptions::default().with_null("NULL");
        let mut shown = 0;
        'outer: for batch in &batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| super::to_pyerr(Error::from(e)))?;
            for row in 0..batch.num_rows() {
                if shown == PREVIEW_ROWS {
                    break 'outer;
                }
                html.push_str("<tr>");
                for f in &formatters {
                    html.push_str(&format!(
                        "<td>{}</td>",
                        html_escape(&f.value(row).to_string())
                    ));
                }
                html.push_str("</tr>");
                shown += 1;
            }
        }
        html.push_str(&format!(
            "</tbody></table><p>{shown} of {total} rows, {} columns</p>",
            schema.fields().len()
        ));
        Ok(html)
    }

    fn __repr__(&self) -> String {
        format!("<duckmerge.Result {:?}>", self.sql)
    }
}

impl PyQueryResult {
    /// Hands out the next `want` rows (all the rest when None), reading the
    /// result as a stream of batches and converting one batch at a time
    /// (for all 1M rows of the handoff table: 2.3-2.7 s, against 3.3-4.0 s for
    /// converting the whole table's columns at once). The cursor is taken
    /// out of its lock while Python runs, so a reader that releases the GIL
    /// cannot deadlock another thread.
    fn fetch<'py>(
        &self,
        slf: &Bound<'py, Self>,
        want: Option<usize>,
        what: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let taken = self.cursor.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut cursor = match taken {
            Some(c) => c,
            None => {
                let pa = import_optional(py, "pyarrow", "pyarrow", what)?;
                Cursor {
                    reader: Some(
                        pa.getattr("RecordBatchReader")?
                            .call_method1("from_stream", (slf,))?
                            .unbind(),
                    ),
                    rows: PyList::empty(py).unbind(),
                    pos: 0,
                }
            }
        };
        let mut out = PyList::empty(py);
        let filled = (|| -> PyResult<()> {
            loop {
                let rows = cursor.rows.bind(py).clone();
                let len = rows.len();
                let left = len - cursor.pos;
                let take = want.map_or(left, |n| (n - out.len()).min(left));
                if take == len && out.is_empty() {
                    // A whole batch (or the whole result): hand the list over.
                    out = rows;
                } else {
                    for row in rows.get_slice(cursor.pos, cursor.pos + take).iter() {
                        out.append(row)?;
                    }
                }
                cursor.pos += take;
                if cursor.pos == len {
                    // Handed out: the cursor keeps no reference to these rows.
                    cursor.rows = PyList::empty(py).unbind();
                    cursor.pos = 0;
                }
                if want.is_some_and(|n| out.len() >= n) {
                    return Ok(());
                }
                let Some(reader) = &cursor.reader else {
                    return Ok(());
                };
                match reader.bind(py).call_method0("read_next_batch") {
                    Ok(batch) => {
                        cursor.rows = tuples(&batch)?.unbind();
                        cursor.pos = 0;
                    }
                    Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                        cursor.reader = None;
                    }
                    // The session closed under a half-read result: its
                    // stream ended (see `Database::close`).
                    Err(_) if self.db.is_closed() => {
                        cursor.reader = None;
                        return Err(super::to_pyerr(Error::Closed));
                    }
                    Err(e) => return Err(e),
                }
            }
        })();
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(cursor);
        filled.map(|()| out)
    }
}

/// The rows of a pyarrow ``Table`` or ``RecordBatch`` as a list of tuples
/// (each column converted by pyarrow's ``to_pylist``).
fn tuples<'py>(data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    let py = data.py();
    let columns: Vec<Bound<'py, PyList>> = data
        .getattr("columns")?
        .try_iter()?
        .map(|c| {
            c.and_then(|c| c.call_method0("to_pylist"))
                .and_then(|l| l.cast_into::<PyList>().map_err(PyErr::from))
        })
        .collect::<PyResult<_>>()?;
    let n: usize = data.getattr("num_rows")?.extract()?;
    let rows = PyList::empty(py);
    for i in 0..n {
        let items = columns
            .iter()
            .map(|c| c.get_item(i))
            .collect::<PyResult<Vec<_>>>()?;
        rows.append(PyTuple::new(py, items)?)?;
    }
    Ok(rows)
}
