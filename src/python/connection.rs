use pyo3::prelude::*;

use super::arrow_ffi::{import_stream, BatchReader};
use super::{extract_params, to_pyerr, wait_interruptibly, IntoPy, PyQueryResult, SharedDb};
use crate::arrow::{TableLoad, WriteMode};
use crate::backend;
use crate::error::Error;

/// A handle on a session's database. Each call uses a DuckDB connection of
/// its own, so one `Connection` can be shared by many Python threads.
#[pyclass(name = "Connection", module = "duckmerge._duckmerge", frozen)]
pub struct PyConnection {
    db: SharedDb,
}

impl PyConnection {
    pub fn new(db: SharedDb) -> Self {
        PyConnection { db }
    }

    pub fn db(&self) -> &SharedDb {
        &self.db
    }
}

/// Any Arrow-exporting object, or a pandas DataFrame (through pyarrow).
fn arrow_reader(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<BatchReader> {
    let module: String = data
        .get_type()
        .getattr("__module__")
        .and_then(|m| m.extract())
        .unwrap_or_default();
    if module.starts_with("pandas") && data.hasattr("columns")? {
        // pandas: keep the columns, not the index.
        let pa =
            super::import_optional(py, "pyarrow", "pyarrow", "write_table() with pandas data")?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("preserve_index", false)?;
        let table = pa
            .getattr("Table")?
            .call_method("from_pandas", (data,), Some(&kwargs))?;
        return import_stream(&table);
    }
    if data.hasattr("__arrow_c_stream__")? {
        return import_stream(data);
    }
    let type_name = data.get_type().name()?;
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "write_table() takes an object with __arrow_c_stream__ (pyarrow Table or \
         RecordBatchReader, polars DataFrame, a duckmerge Result) or a pandas DataFrame, \
         not {type_name}"
    )))
}

/// Loads `data` into `name`; shared by `Connection` and `Session`.
pub(crate) fn write_table(
    py: Python<'_>,
    db: &SharedDb,
    name: &str,
    data: &Bound<'_, PyAny>,
    mode: &str,
) -> PyResult<u64> {
    let mode: WriteMode = mode.parse().py_err()?;
    backend::check_table_name(name).py_err()?;
    let reader = arrow_reader(py, data)?;
    let schema = reader.schema();
    let mut load = py
        .detach(|| TableLoad::start(db, name, &schema, mode))
        .py_err()?;
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                py.detach(|| load.abort());
                // Ctrl-C inside a Python producer (a generator behind a
                // RecordBatchReader) reaches us as the stream's error.
                if e.to_string().contains("KeyboardInterrupt") {
                    return Err(pyo3::exceptions::PyKeyboardInterrupt::new_err(format!(
                        "writing table \"{name}\" was interrupted; nothing was changed"
                    )));
                }
                return Err(to_pyerr(Error::Arrow(format!(
                    "reading the data for table \"{name}\" failed, nothing was changed: {e}"
                ))));
            }
        };
        if let Err(e) = py.detach(|| load.append(batch)) {
            return Err(to_pyerr(e));
        }
        if let Err(signal) = py.check_signals() {
            py.detach(|| load.abort());
            return Err(signal);
        }
    }
    load.request_commit();
    let rows = wait_interruptibly(py, |t| load.poll_commit(t), || {})?;
    log::info!("wrote {rows} rows to table \"{name}\"");
    Ok(rows)
}

pub(crate) fn table_result(py: Python<'_>, db: &SharedDb, name: &str) -> PyResult<PyQueryResult> {
    backend::check_table_name(name).py_err()?;
    let conn = db.connect().py_err()?;
    let exists = py
        .detach(move || backend::relation_exists(&conn, name))
        .py_err()?;
    if !exists {
        return Err(to_pyerr(Error::table_not_found(name, None)));
    }
    Ok(PyQueryResult::of_table(
        db.clone(),
        name,
        format!("reading table \"{name}\""),
    ))
}

pub(crate) fn list_tables(py: Python<'_>, db: &SharedDb) -> PyResult<Vec<String>> {
    let conn = db.connect().py_err()?;
    py.detach(move || backend::list_tables(&conn)).py_err()
}

#[pymethods]
impl PyConnection {
    /// Runs a statement now (``?`` placeholders bound from ``params``) and
    /// returns its rows.
    ///
    /// >>> con.execute("INSERT INTO t VALUES (?, ?)", [1, "a"])
    #[pyo3(signature = (sql, params=None))]
    fn execute(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyQueryResult> {
        let params = extract_params(params)?;
        PyQueryResult::execute(py, self.db.clone(), sql.to_string(), params, "SQL".into())
    }

    /// A query result, run when it is read (``to_arrow()``, ``fetchall()`` …).
    ///
    /// >>> con.sql("SELECT * FROM crm WHERE city = ?", ["Brno"]).to_pandas()
    #[pyo3(signature = (sql, params=None))]
    fn sql(&self, sql: &str, params: Option<&Bound<'_, PyAny>>) -> PyResult<PyQueryResult> {
        let params = extract_params(params)?;
        if self.db.is_closed() {
            return Err(to_pyerr(Error::Closed));
        }
        Ok(PyQueryResult::lazy(
            self.db.clone(),
            sql.to_string(),
            params,
            "SQL".into(),
        ))
    }

    /// All rows of a table; ``TableNotFoundError`` if it does not exist.
    fn table(&self, py: Python<'_>, name: &str) -> PyResult<PyQueryResult> {
        table_result(py, &self.db, name)
    }

    /// The session's table names, sorted.
    fn tables(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        list_tables(py, &self.db)
    }

    /// Writes Arrow data (or a pandas DataFrame) to a table through a staging
    /// table swapped in atomically. ``mode``: ``"create"`` (fail if it
    /// exists), ``"replace"`` or ``"append"``. DuckDB converts and compresses
    /// the rows on all of the session's threads, keeping the input's row
    /// order. Returns the rows written.
    ///
    /// >>> con.write_table("scores", polars_df, mode="replace")
    #[pyo3(signature = (name, data, mode="create"))]
    fn write_table(
        &self,
        py: Python<'_>,
        name: &str,
        data: &Bound<'_, PyAny>,
        mode: &str,
    ) -> PyResult<u64> {
        write_table(py, &self.db, name, data, mode)
    }

    fn __repr__(&self) -> String {
        format!("<duckmerge.Connection {}>", self.db.path().display())
    }
}
