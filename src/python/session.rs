use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::{Map, Value};

use super::connection::{list_tables, table_result, write_table};
use super::step::py_to_json;
use super::{extract_params, IntoPy, PyConnection, PyQueryResult};
use crate::session::{Session, SessionOptions, SettingsArgs};

/// A session folder holding one DuckDB database (``pipeline_data.duckdb``),
/// logs, artifacts and a manifest. Use it as a context manager.
///
/// >>> with duckmerge.Session("runs/job-42", memory_limit="500MB") as ctx:
/// ...     ctx.write_table("scores", df)
#[pyclass(name = "Session", module = "duckmerge._duckmerge", frozen)]
pub struct PySession {
    inner: Arc<Session>,
}

impl PySession {
    pub fn inner(&self) -> &Arc<Session> {
        &self.inner
    }

    fn db(&self) -> PyResult<super::SharedDb> {
        self.inner.database().py_err()
    }
}

fn kwargs_map(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Map<String, Value>> {
    match kwargs {
        Some(k) => match py_to_json(py, k.as_any())? {
            Value::Object(m) => Ok(m),
            _ => Ok(Map::new()),
        },
        None => Ok(Map::new()),
    }
}

#[pymethods]
impl PySession {
    #[new]
    #[pyo3(signature = (path=None, *, memory_limit=None, threads=None, temp_dir=None, keep=false))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        memory_limit: Option<String>,
        threads: Option<i64>,
        temp_dir: Option<PathBuf>,
        keep: bool,
    ) -> PyResult<Self> {
        let options = SessionOptions {
            path,
            settings: SettingsArgs {
                memory_limit,
                threads,
                temp_dir,
            },
            keep,
        };
        let session = py.detach(|| Session::open(options)).py_err()?;
        Ok(PySession {
            inner: Arc::new(session),
        })
    }

    /// The session's id (its folder name).
    #[getter]
    fn session_id(&self) -> String {
        self.inner.id().to_string()
    }

    /// The session folder; relative driver inputs resolve against it first.
    #[getter]
    fn base_path(&self) -> String {
        self.inner.dir().to_string_lossy().into_owned()
    }

    #[getter]
    fn artifacts_dir(&self) -> String {
        self.inner.artifacts_dir().to_string_lossy().into_owned()
    }

    #[getter]
    fn output_dir(&self) -> String {
        self.inner.output_dir().to_string_lossy().into_owned()
    }

    /// The DuckDB file, ``<session>/pipeline_data.duckdb``.
    #[getter]
    fn db_path(&self) -> String {
        self.inner.db_path().to_string_lossy().into_owned()
    }

    #[getter]
    fn memory_limit(&self) -> String {
        self.inner.settings().memory_limit.clone()
    }

    #[getter]
    fn threads(&self) -> usize {
        self.inner.settings().threads
    }

    #[getter]
    fn temp_dir(&self) -> String {
        self.inner
            .settings()
            .temp_dir
            .to_string_lossy()
            .into_owned()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// A `Connection` to the session's database (what pipeline drivers call).
    fn get_db_connection(&self) -> PyResult<PyConnection> {
        Ok(PyConnection::new(self.db()?))
    }

    /// Appends ``{"ts", "session", "metric", "value", "tags"}`` to ``logs/metrics.jsonl``.
    #[pyo3(signature = (name, value, **tags))]
    fn log_metric(
        &self,
        py: Python<'_>,
        name: &str,
        value: &Bound<'_, PyAny>,
        tags: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let value = py_to_json(py, value)?;
        let tags = kwargs_map(py, tags)?;
        self.inner.log_metric(name, value, tags).py_err()
    }

    /// Appends ``{"ts", "session", "event", **data}`` to ``logs/events.jsonl``.
    #[pyo3(signature = (event, **data))]
    fn log_event(
        &self,
        py: Python<'_>,
        event: &str,
        data: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let data = kwargs_map(py, data)?;
        self.inner.log_event(event, data).py_err()
    }

    /// Same as ``get_db_connection().sql(...)``.
    #[pyo3(signature = (sql, params=None))]
    fn sql(&self, sql: &str, params: Option<&Bound<'_, PyAny>>) -> PyResult<PyQueryResult> {
        let params = extract_params(params)?;
        Ok(PyQueryResult::lazy(
            self.db()?,
            sql.to_string(),
            params,
            "SQL".into(),
        ))
    }

    /// Same as ``get_db_connection().execute(...)``.
    #[pyo3(signature = (sql, params=None))]
    fn execute(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyQueryResult> {
        let params = extract_params(params)?;
        PyQueryResult::execute(py, self.db()?, sql.to_string(), params, "SQL".into())
    }

    /// All rows of a table; ``TableNotFoundError`` if it does not exist.
    fn table(&self, py: Python<'_>, name: &str) -> PyResult<PyQueryResult> {
        table_result(py, &self.db()?, name)
    }

    /// The session's table names, sorted.
    fn tables(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        list_tables(py, &self.db()?)
    }

    /// Writes Arrow data or a pandas DataFrame to a table (staging + atomic
    /// swap). ``mode``: ``"create"``, ``"replace"`` or ``"append"``. DuckDB
    /// converts and compresses the rows on all of the session's threads; the
    /// table keeps the input's row order. Returns the rows written.
    ///
    /// >>> ctx.write_table("scores", df, mode="replace")
    #[pyo3(signature = (name, data, mode="create"))]
    fn write_table(
        &self,
        py: Python<'_>,
        name: &str,
        data: &Bound<'_, PyAny>,
        mode: &str,
    ) -> PyResult<u64> {
        write_table(py, &self.db()?, name, data, mode)
    }

    /// Checkpoints and closes the database; removes a temporary session's
    /// folder unless ``keep=True``. Safe to call twice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.close()).py_err()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (exc_type, exc_value, traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc_value: &Bound<'_, PyAny>,
        traceback: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let _ = (exc_type, exc_value, traceback);
        self.close(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "<duckmerge.Session {}{}>",
            self.inner.dir().display(),
            if self.inner.is_closed() {
                " (closed)"
            } else {
                ""
            }
        )
    }
}
