use pyo3::prelude::*;

use super::step::{json_to_py, py_to_json, StepEnv};
use super::to_pyerr;
use crate::csv::{run_extract, ExtractorConfig};

/// Loads a CSV file into table ``step_id`` (staging table, swapped in when
/// complete). Registered as ``"filesystem.csv_extractor"`` in ``DRIVERS``.
///
/// >>> CsvExtractor().run(step_id="crm", config={"path": "crm.csv"}, inputs=None, ctx=session)
/// {'table': 'crm', 'rows': 200}
#[pyclass(name = "CsvExtractor", module = "duckmerge._duckmerge", frozen)]
pub struct PyCsvExtractor;

#[pymethods]
impl PyCsvExtractor {
    #[new]
    fn new() -> Self {
        PyCsvExtractor
    }

    /// Runs the step; returns ``{"table": step_id, "rows": n}`` (plus
    /// ``"rows_skipped"``), or the file listing with ``discovery: true``.
    #[pyo3(signature = (step_id, config, inputs=None, ctx=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        step_id: &str,
        config: &Bound<'py, PyAny>,
        inputs: Option<&Bound<'py, PyAny>>,
        ctx: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = inputs;
        let env = StepEnv::resolve(py, step_id, ctx)?;
        let config = py_to_json(py, config)?;
        let cfg = ExtractorConfig::from_json(step_id, config.clone()).map_err(to_pyerr)?;
        let out = env.run(py, |backend, ctx| run_extract(step_id, &cfg, backend, ctx))?;
        env.record(step_id, "filesystem.csv_extractor", &config, &out);
        json_to_py(py, &out)
    }
}
