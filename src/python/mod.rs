//! The PyO3 surface: thin classes over the core, one `#[pyclass]` per file.

mod arrow_ffi;
mod connection;
mod csv_extractor;
mod csv_writer;
mod errors;
mod merge_driver;
mod result;
mod session;
mod sql_processor;
mod step;

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};

use crate::arrow::{Param, Poll};
use crate::backend::Database;
use crate::error::Result as CoreResult;

pub use connection::PyConnection;
pub use errors::{to_pyerr, IntoPy};
pub use result::PyQueryResult;
pub use session::PySession;

/// How often a waiting call wakes up to look for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Waits on `poll` with the GIL released, waking every 100 ms to run Python's
/// signal handlers. On Ctrl-C (or any exception from a handler) calls
/// `interrupt`, waits for the work to stop, and returns the exception.
pub(crate) fn wait_interruptibly<T, P>(
    py: Python<'_>,
    mut poll: P,
    interrupt: impl Fn(),
) -> PyResult<T>
where
    P: FnMut(Duration) -> CoreResult<Poll<T>> + Send,
    T: Send,
{
    loop {
        match py.detach(|| poll(SIGNAL_POLL)) {
            Ok(Poll::Ready(v)) => return Ok(v),
            Ok(Poll::Pending) => {}
            Err(e) => return Err(to_pyerr(e)),
        }
        if let Err(signal) = py.check_signals() {
            interrupt();
            // Let the work wind down so the connection is free again.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                match py.detach(|| poll(SIGNAL_POLL)) {
                    Ok(Poll::Pending) => continue,
                    _ => break,
                }
            }
            return Err(signal);
        }
    }
}

/// Converts Python query parameters (`?`) to core parameters.
pub(crate) fn extract_params(params: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Param>> {
    let Some(params) = params else {
        return Ok(Vec::new());
    };
    if params.is_none() {
        return Ok(Vec::new());
    }
    if params.is_instance_of::<PyString>() || params.is_instance_of::<PyBytes>() {
        return Err(to_pyerr(crate::error::Error::Config(
            "params must be a list or tuple of values, not a single string".into(),
        )));
    }
    let mut out = Vec::new();
    for item in params.try_iter()? {
        let v = item?;
        out.push(if v.is_none() {
            Param::Null
        } else if v.is_instance_of::<PyBool>() {
            Param::Bool(v.extract()?)
        } else if v.is_instance_of::<PyInt>() {
            Param::Int(v.extract().map_err(|_| {
                to_pyerr(crate::error::Error::Config(format!(
                    "parameter {v} does not fit a 64-bit integer"
                )))
            })?)
        } else if v.is_instance_of::<PyFloat>() {
            Param::Float(v.extract()?)
        } else if v.is_instance_of::<PyString>() {
            Param::Text(v.extract()?)
        } else if v.is_instance_of::<PyBytes>() {
            Param::Blob(v.extract()?)
        } else {
            // date, datetime, Decimal, UUID …: their text form, which DuckDB casts.
            Param::Text(v.str()?.extract()?)
        });
    }
    Ok(out)
}

/// Imports an optional dependency, naming the package to install if missing.
pub(crate) fn import_optional<'py>(
    py: Python<'py>,
    module: &str,
    package: &str,
    what: &str,
) -> PyResult<Bound<'py, PyModule>> {
    py.import(module).map_err(|e| {
        if e.is_instance_of::<pyo3::exceptions::PyImportError>(py) {
            pyo3::exceptions::PyImportError::new_err(format!(
                "{what} needs the '{package}' package: pip install {package}"
            ))
        } else {
            e
        }
    })
}

/// The database behind a session or connection, shared by results.
pub(crate) type SharedDb = Arc<Database>;

/// Registers the module's classes, exceptions and logging bridge.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Rust `log` records go to Python logging under "duckmerge.…".
    if let Ok(logger) = pyo3_log::Logger::new(py, pyo3_log::Caching::Loggers) {
        // Debug and up, and the statements' whole SQL at trace level
        // (Python's level 5; see `backend::step`).
        let _ = logger
            .set_prefix("duckmerge")
            .filter_target(
                concat!(env!("CARGO_CRATE_NAME"), "::backend::step").to_string(),
                log::LevelFilter::Trace,
            )
            .install();
    }
    errors::register(m)?;
    m.add_class::<PySession>()?;
    m.add_class::<PyConnection>()?;
    m.add_class::<PyQueryResult>()?;
    m.add_class::<csv_extractor::PyCsvExtractor>()?;
    m.add_class::<csv_writer::PyCsvWriter>()?;
    m.add_class::<sql_processor::PySqlProcessor>()?;
    m.add_class::<merge_driver::PyMergeDriver>()?;
    m.add_function(wrap_pyfunction!(merge_driver::normalize_values, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let version: String = duckdb::Connection::open_in_memory()
        .and_then(|c| c.query_row("SELECT version()", [], |r| r.get(0)))
        .unwrap_or_else(|_| "unknown".into());
    m.add("DUCKDB_VERSION", version)?;
    Ok(())
}
