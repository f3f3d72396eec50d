//! What the drivers share on the Python side: resolving the ctx a host
//! passes into a SQL backend and a step context, and running a step.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::{Map, Value};

use super::{to_pyerr, PyConnection, PySession};
use crate::arrow::Param;
use crate::backend::{NativeBackend, SqlBackend, StepContext};
use crate::error::{Error, Result};

/// Python value → JSON (through `json.dumps`, `default=str`).
pub(crate) fn py_to_json(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Value> {
    let kwargs = PyDict::new(py);
    kwargs.set_item("default", py.import("builtins")?.getattr("str")?)?;
    let text: String = py
        .import("json")?
        .call_method("dumps", (value,), Some(&kwargs))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

/// JSON → Python value (through `json.loads`).
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?
        .call_method1("loads", (value.to_string(),))
}

/// A host's duckdb-python connection: the same SQL, run through Python.
struct HostBackend {
    con: Py<PyAny>,
}

fn params_to_py<'py>(py: Python<'py>, params: &[Param]) -> PyResult<Bound<'py, PyList>> {
    let items: Vec<Bound<'py, PyAny>> = params
        .iter()
        .map(|p| -> PyResult<Bound<'py, PyAny>> {
            Ok(match p {
                Param::Null => py.None().into_bound(py),
                Param::Bool(b) => pyo3::types::PyBool::new(py, *b).to_owned().into_any(),
                Param::Int(i) => i.into_pyobject(py)?.into_any(),
                Param::Float(f) => f.into_pyobject(py)?.into_any(),
                Param::Text(s) => s.into_pyobject(py)?.into_any(),
                Param::Blob(b) => pyo3::types::PyBytes::new(py, b).into_any(),
            })
        })
        .collect::<PyResult<_>>()?;
    PyList::new(py, items)
}

fn host_error(py: Python<'_>, e: PyErr) -> Error {
    let message = e.value(py).to_string();
    if message.contains("INTERRUPT") || message.contains("Interrupted") {
        return Error::Cancelled("query interrupted".into());
    }
    if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
        return Error::Cancelled("interrupted".into());
    }
    Error::HostSql {
        context: "SQL".into(),
        message,
    }
}

impl HostBackend {
    fn run<'py>(
        &self,
        py: Python<'py>,
        sql: &str,
        params: &[Param],
    ) -> PyResult<Bound<'py, PyAny>> {
        let con = self.con.bind(py);
        if params.is_empty() {
            con.call_method1("execute", (sql,))
        } else {
            con.call_method1("execute", (sql, params_to_py(py, params)?))
        }
    }
}

impl SqlBackend for HostBackend {
    fn execute(&self, sql: &str, params: &[Param], _ctx: &dyn StepContext) -> Result<()> {
        Python::attach(|py| {
            self.run(py, sql, params)
                .map(|_| ())
                .map_err(|e| host_error(py, e))
        })
    }

    fn query(&self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>> {
        Python::attach(|py| {
            let rows = self
                .run(py, sql, params)
                .and_then(|cur| cur.call_method0("fetchall"))
                .map_err(|e| host_error(py, e))?;
            let json = py_to_json(py, &rows).map_err(|e| host_error(py, e))?;
            Ok(match json {
                Value::Array(rows) => rows
                    .into_iter()
                    .map(|r| match r {
                        Value::Array(cells) => cells,
                        other => vec![other],
                    })
                    .collect(),
                _ => Vec::new(),
            })
        })
    }
}

/// The host's ctx seen from a step: logging hooks, base path, Ctrl-C.
pub(crate) struct HostContext {
    ctx: Py<PyAny>,
    step_id: String,
    has_metric: bool,
    has_event: bool,
    base_path: Option<PathBuf>,
    temp_dir: Option<PathBuf>,
    interrupted: Mutex<Option<PyErr>>,
}

impl HostContext {
    /// A hook that raised: a KeyboardInterrupt (Ctrl-C while Python ran the
    /// host's logging) cancels the step at its next check and is re-raised;
    /// anything else is logged and the step goes on.
    fn keep_interrupt(&self, py: Python<'_>, e: PyErr, what: &str) {
        if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
            let mut slot = self.interrupted.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        } else {
            log::warn!("{what} failed: {e}");
        }
    }

    fn is_interrupted(&self) -> bool {
        self.interrupted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

impl StepContext for HostContext {
    fn log_metric(&self, name: &str, value: Value) {
        if !self.has_metric {
            return;
        }
        Python::attach(|py| {
            let r = json_to_py(py, &value)
                .and_then(|v| self.ctx.bind(py).call_method1("log_metric", (name, v)));
            if let Err(e) = r {
                self.keep_interrupt(py, e, &format!("ctx.log_metric({name:?})"));
            }
        });
    }

    fn log_event(&self, event: &str, data: Map<String, Value>) {
        if !self.has_event {
            return;
        }
        Python::attach(|py| {
            let r = json_to_py(py, &Value::Object(data)).and_then(|d| {
                let kwargs = d.cast_into::<PyDict>()?;
                self.ctx
                    .bind(py)
                    .call_method("log_event", (event,), Some(&kwargs))
            });
            if let Err(e) = r {
                self.keep_interrupt(py, e, &format!("ctx.log_event({event:?})"));
            }
        });
    }

    fn base_path(&self) -> Option<PathBuf> {
        self.base_path.clone()
    }

    fn check_cancel(&self) -> Result<()> {
        if self.is_interrupted() {
            return Err(Error::Cancelled(
                "interrupted (Ctrl-C); nothing was changed".into(),
            ));
        }
        Python::attach(|py| match py.check_signals() {
            Ok(()) => Ok(()),
            Err(e) => {
                *self.interrupted.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Err(Error::Cancelled(
                    "interrupted (Ctrl-C); nothing was changed".into(),
                ))
            }
        })
    }

    fn temp_dir(&self) -> PathBuf {
        self.temp_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    fn on_progress(&self, progress: crate::backend::Progress) {
        let mut data = Map::new();
        data.insert("step_id".into(), Value::from(self.step_id.clone()));
        data.insert(
            "percent".into(),
            progress.percent.map(Value::from).unwrap_or(Value::Null),
        );
        data.insert("rows".into(), Value::from(progress.rows_processed));
        self.log_event("progress", data);
    }
}

/// A resolved ctx: where SQL runs, the step context, and the native session if any.
pub(crate) struct StepEnv {
    pub backend: Box<dyn SqlBackend + Send + Sync>,
    pub ctx: HostContext,
    pub session: Option<std::sync::Arc<crate::session::Session>>,
    /// The host's duckdb-python connection, for that ctx kind.
    pub host_connection: Option<Py<PyAny>>,
}

impl StepEnv {
    /// Resolves the three ctx kinds: a `Session`; an object whose
    /// `get_db_connection()` returns a duckmerge `Connection`; one whose
    /// `get_db_connection()` returns a duckdb-python connection.
    pub fn resolve(
        py: Python<'_>,
        step_id: &str,
        ctx: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<StepEnv> {
        let missing = || {
            to_pyerr(Error::Config(format!(
                "Step {step_id}: Context must provide get_db_connection()"
            )))
        };
        let ctx = match ctx {
            Some(c) if !c.is_none() => c,
            _ => return Err(missing()),
        };
        let attr_path = |name: &str| -> Option<PathBuf> {
            ctx.getattr(name)
                .ok()
                .filter(|v| !v.is_none())
                .and_then(|v| v.extract::<PathBuf>().ok())
        };
        let mut session = None;
        let mut temp_dir = None;
        let mut host_connection = None;
        let backend: Box<dyn SqlBackend + Send + Sync> = if let Ok(s) = ctx.cast::<PySession>() {
            let inner = s.get().inner().clone();
            temp_dir = Some(inner.settings().temp_dir.clone());
            let db = inner.database().map_err(to_pyerr)?;
            session = Some(inner);
            Box::new(NativeBackend::shared(&db).map_err(to_pyerr)?)
        } else {
            if !ctx.hasattr("get_db_connection")? {
                return Err(missing());
            }
            let con = ctx.call_method0("get_db_connection")?;
            if let Ok(c) = con.cast::<PyConnection>() {
                Box::new(NativeBackend::shared(c.get().db()).map_err(to_pyerr)?)
            } else if con.hasattr("execute")? {
                host_connection = Some(con.clone().unbind());
                Box::new(HostBackend { con: con.unbind() })
            } else {
                return Err(to_pyerr(Error::Config(format!(
                    "Step {step_id}: get_db_connection() returned {}, which has no execute(); \
                     return a duckmerge.Connection or a duckdb connection",
                    con.get_type().name()?
                ))));
            }
        };
        let _ = py;
        Ok(StepEnv {
            backend,
            host_connection,
            ctx: HostContext {
                has_metric: ctx.hasattr("log_metric")?,
                has_event: ctx.hasattr("log_event")?,
                base_path: attr_path("base_path"),
                temp_dir,
                ctx: ctx.clone().unbind(),
                step_id: step_id.to_string(),
                interrupted: Mutex::new(None),
            },
            session,
        })
    }

    /// Runs a step with the GIL released; Ctrl-C comes back as KeyboardInterrupt.
    pub fn run<T: Send>(
        &self,
        py: Python<'_>,
        step: impl FnOnce(&(dyn SqlBackend + Send + Sync), &HostContext) -> Result<T> + Send,
    ) -> PyResult<T> {
        let result = py.detach(|| step(self.backend.as_ref(), &self.ctx));
        if let Some(signal) = self
            .ctx
            .interrupted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(signal);
        }
        result.map_err(to_pyerr)
    }

    /// Writes `artifacts/<step>/cleaned_config.json` (secrets masked) and
    /// records the step in a native session's manifest.
    pub fn record(&self, step_id: &str, driver: &str, config: &Value, result: &Value) {
        if let Some(session) = &self.session {
            if let Ok(dir) = session.step_artifacts_dir(step_id) {
                let text =
                    serde_json::to_string_pretty(&mask_secrets(config.clone())).unwrap_or_default();
                let _ =
                    crate::session::write_atomic(&dir.join("cleaned_config.json"), text.as_bytes());
            }
            let _ = session.record_step(step_id, driver, result.clone());
        }
    }
}

/// Replaces values of keys that look like secrets with `***`.
pub(crate) fn mask_secrets(value: Value) -> Value {
    const SECRET: [&str; 6] = [
        "password",
        "secret",
        "token",
        "access_key",
        "api_key",
        "credential",
    ];
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if SECRET.iter().any(|s| lower.contains(s)) {
                        (k, Value::String("***".into()))
                    } else {
                        (k, mask_secrets(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(mask_secrets).collect()),
        other => other,
    }
}
