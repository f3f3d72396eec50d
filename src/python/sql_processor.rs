use pyo3::prelude::*;

use super::step::{json_to_py, py_to_json, StepEnv};
use super::to_pyerr;
use crate::processor::{run_sql, ProcessorConfig};

/// Runs ``config["query"]`` and stores its result as table ``step_id``
/// (staging table, swapped in). Registered as ``"duckdb.processor"``.
///
/// >>> SqlProcessor().run(step_id="top", config={"query": "SELECT * FROM crm LIMIT 10"},
/// ...                    inputs={"table": "crm"}, ctx=session)
/// {'table': 'top', 'rows': 10}
#[pyclass(name = "SqlProcessor", module = "duckmerge._duckmerge", frozen)]
pub struct PySqlProcessor;

#[pymethods]
impl PySqlProcessor {
    #[new]
    fn new() -> Self {
        PySqlProcessor
    }

    /// Runs the step; returns ``{"table": step_id, "rows": n}``.
    #[pyo3(signature = (step_id, config, inputs=None, ctx=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        step_id: &str,
        config: &Bound<'py, PyAny>,
        inputs: Option<&Bound<'py, PyAny>>,
        ctx: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = inputs; // input tables are named in the query itself
        let env = StepEnv::resolve(py, step_id, ctx)?;
        let config = py_to_json(py, config)?;
        let cfg = ProcessorConfig::from_json(step_id, config.clone()).map_err(to_pyerr)?;
        let out = env.run(py, |backend, ctx| run_sql(step_id, &cfg, backend, ctx))?;
        env.record(step_id, "duckdb.processor", &config, &out);
        json_to_py(py, &out)
    }
}
