//! The Python exception hierarchy and the mapping from the core's `Error`.
//!
//! The classes inherit both `DuckMergeError` and the builtin a user would
//! catch (`ConfigError` is a `ValueError`, …), which `create_exception!`
//! cannot express, so they are made with `type()` when the module loads.

use std::sync::OnceLock;

use pyo3::exceptions::{PyException, PyFileNotFoundError, PyLookupError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::error::Error;

const MODULE: &str = "duckmerge._duckmerge";

struct Classes {
    base: Py<PyType>,
    config: Py<PyType>,
    source_not_found: Py<PyType>,
    table_not_found: Py<PyType>,
    csv: Py<PyType>,
    session_locked: Py<PyType>,
    cancelled: Py<PyType>,
    sql: Py<PyType>,
}

static CLASSES: OnceLock<Classes> = OnceLock::new();

fn make_class<'py>(
    py: Python<'py>,
    name: &str,
    bases: &[Bound<'py, PyAny>],
    doc: &str,
    attrs: &[(&str, Py<PyAny>)],
) -> PyResult<Bound<'py, PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", MODULE)?;
    ns.set_item("__doc__", doc)?;
    for (k, v) in attrs {
        ns.set_item(*k, v)?;
    }
    let cls =
        py.import("builtins")?
            .getattr("type")?
            .call1((name, PyTuple::new(py, bases)?, ns))?;
    Ok(cls.cast_into::<PyType>()?)
}

/// Creates the exception classes and adds them to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let exception = py.get_type::<PyException>().into_any();
    let base = make_class(
        py,
        "DuckMergeError",
        &[exception],
        "Base class of every error duckmerge raises.",
        &[],
    )?;
    let b = base.clone().into_any();
    let sub =
        |name: &str, builtin: Option<Bound<'_, PyAny>>, doc: &str, attrs: &[(&str, Py<PyAny>)]| {
            let mut bases = vec![b.clone()];
            bases.extend(builtin);
            make_class(py, name, &bases, doc, attrs).map(|c| c.unbind())
        };
    let classes = Classes {
        config: sub(
            "ConfigError",
            Some(py.get_type::<PyValueError>().into_any()),
            "A bad argument or config value; the message lists what is accepted.",
            &[],
        )?,
        source_not_found: sub(
            "SourceNotFoundError",
            Some(py.get_type::<PyFileNotFoundError>().into_any()),
            "An input file or folder does not exist (the message has its absolute path).",
            &[],
        )?,
        table_not_found: sub(
            "TableNotFoundError",
            Some(py.get_type::<PyLookupError>().into_any()),
            "A table named by the caller does not exist in the session.",
            &[],
        )?,
        csv: sub(
            "CsvError",
            None,
            "A CSV file could not be read; ``path`` and ``line`` say where.",
            &[("path", py.None()), ("line", py.None())],
        )?,
        session_locked: sub(
            "SessionLockedError",
            None,
            "The session's database is in use by another process (or already open here).",
            &[],
        )?,
        cancelled: sub(
            "CancelledError",
            None,
            "The work was cancelled before it finished; nothing half-written was kept.",
            &[],
        )?,
        sql: sub(
            "SqlError",
            None,
            "DuckDB rejected a statement; DuckDB's message is kept in the text.",
            &[],
        )?,
        base: base.unbind(),
    };
    for (name, cls) in [
        ("DuckMergeError", &classes.base),
        ("ConfigError", &classes.config),
        ("SourceNotFoundError", &classes.source_not_found),
        ("TableNotFoundError", &classes.table_not_found),
        ("CsvError", &classes.csv),
        ("SessionLockedError", &classes.session_locked),
        ("CancelledError", &classes.cancelled),
        ("SqlError", &classes.sql),
    ] {
        m.add(name, cls.clone_ref(py))?;
    }
    let _ = CLASSES.set(classes);
    Ok(())
}

fn classes() -> &'static Classes {
    CLASSES
        .get()
        .expect("duckmerge._duckmerge exception classes are registered at import")
}

fn raise(cls: &Py<PyType>, message: String) -> PyErr {
    Python::attach(|py| match cls.bind(py).call1((message.clone(),)) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    })
}

/// The Python exception for a core error.
pub fn to_pyerr(err: Error) -> PyErr {
    let c = classes();
    let message = err.to_string();
    match err {
        Error::Config(_) => raise(&c.config, message),
        Error::SourceNotFound { path, .. } => Python::attach(|py| {
            // FileNotFoundError(errno, strerror, filename) keeps .filename set.
            match c.source_not_found.bind(py).call1((
                2,
                message.clone(),
                path.to_string_lossy().into_owned(),
            )) {
                Ok(instance) => PyErr::from_value(instance),
                Err(e) => e,
            }
        }),
        Error::TableNotFound(_) => raise(&c.table_not_found, message),
        Error::Csv { path, line, .. } => Python::attach(|py| {
            let build = || -> PyResult<PyErr> {
                let instance = c.csv.bind(py).call1((message.clone(),))?;
                instance.setattr("path", path.to_string_lossy().into_owned())?;
                instance.setattr("line", line)?;
                Ok(PyErr::from_value(instance))
            };
            build().unwrap_or_else(|e| e)
        }),
        Error::SessionLocked { .. } => raise(&c.session_locked, message),
        Error::Cancelled(_) => raise(&c.cancelled, message),
        Error::Sql { .. } | Error::HostSql { .. } => raise(&c.sql, message),
        Error::Closed | Error::Arrow(_) | Error::Remote(_) | Error::Io { .. } => {
            raise(&c.base, message)
        }
    }
}

/// `?`-friendly conversion for core results.
pub trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for crate::error::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}
