use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::step::{py_to_json, StepEnv};
use super::to_pyerr;
use crate::csv::{run_write, WriterConfig};
use crate::error::Error;

/// Writes the table named in ``inputs["table"]`` to a CSV (or Parquet) file,
/// streaming, through a temp file renamed over the target. Registered as
/// ``"filesystem.csv_writer"`` in ``DRIVERS``.
///
/// >>> CsvWriter().run(step_id="write", config={"path": "out/merged.csv"},
/// ...                 inputs={"table": "merged"}, ctx=session)
/// {}
#[pyclass(name = "CsvWriter", module = "duckmerge._duckmerge", frozen)]
pub struct PyCsvWriter;

#[pymethods]
impl PyCsvWriter {
    #[new]
    fn new() -> Self {
        PyCsvWriter
    }

    /// Runs the step; returns ``{}``.
    #[pyo3(signature = (step_id, config, inputs=None, ctx=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        step_id: &str,
        config: &Bound<'py, PyAny>,
        inputs: Option<&Bound<'py, PyAny>>,
        ctx: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let table: Option<String> = inputs
            .filter(|i| !i.is_none())
            .and_then(|i| i.get_item("table").ok())
            .and_then(|t| t.extract().ok());
        let Some(table) = table else {
            return Err(to_pyerr(Error::Config(format!(
                "Step {step_id}: CsvWriter requires 'table' in inputs"
            ))));
        };
        let env = StepEnv::resolve(py, step_id, ctx)?;
        let config = py_to_json(py, config)?;
        let cfg = WriterConfig::from_json(step_id, config.clone()).map_err(to_pyerr)?;
        let rows = env.run(py, |backend, ctx| {
            run_write(step_id, &table, &cfg, backend, ctx)
        })?;
        env.record(
            step_id,
            "filesystem.csv_writer",
            &config,
            &serde_json::json!({"rows_written": rows}),
        );
        Ok(PyDict::new(py))
    }
}
