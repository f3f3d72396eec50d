use pyo3::prelude::*;

use super::step::{json_to_py, py_to_json, StepEnv};
use super::to_pyerr;
use crate::merge::config::MergeConfig;
use crate::merge::engine::run_merge;

/// The CRM merge: one original contact table plus N enriched vendor sources
/// → one merged table with exactly one row per original row. Registered as
/// ``"crm.merge"`` in ``DRIVERS``.
///
/// >>> MergeDriver().run(step_id="merged", config={
/// ...     "original": "crm", "enriched": ["vendor_a", {"path": "vendor_b.csv"}],
/// ...     "keys": ["email", {"column": "phone", "normalize": "phone", "default_region": "CZ"}],
/// ...     "strategy": "most_complete"}, inputs=None, ctx=session)
/// {'table': 'merged', 'rows': 200, 'stats': {...}}
#[pyclass(name = "MergeDriver", module = "duckmerge._duckmerge", frozen)]
pub struct PyMergeDriver;

#[pymethods]
impl PyMergeDriver {
    #[new]
    fn new() -> Self {
        PyMergeDriver
    }

    /// Runs the merge; returns ``{"table", "rows", "stats"}``. ``inputs``
    /// may name the original as ``{"table": name}`` when the config does not.
    #[pyo3(signature = (step_id, config, inputs=None, ctx=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        step_id: &str,
        config: &Bound<'py, PyAny>,
        inputs: Option<&Bound<'py, PyAny>>,
        ctx: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let env = StepEnv::resolve(py, step_id, ctx)?;
        let mut config = py_to_json(py, config)?;
        if let (Some(obj), Some(inputs)) = (config.as_object_mut(), inputs.filter(|i| !i.is_none()))
        {
            if !obj.contains_key("original") {
                if let Ok(table) = inputs.get_item("table").and_then(|t| t.extract::<String>()) {
                    obj.insert("original".into(), serde_json::Value::String(table));
                }
            }
        }
        let cfg = MergeConfig::from_json(step_id, config.clone()).map_err(to_pyerr)?;
        if let Some(con) = &env.host_connection {
            // A duckdb-python connection: the key normalisers run there as a
            // Python UDF calling the same Rust code.
            py.import("duckmerge._host")?
                .call_method1("register_normalize", (con.bind(py),))?;
        }
        let out = env.run(py, |backend, ctx| run_merge(step_id, &cfg, backend, ctx))?;
        let result = serde_json::json!({
            "table": out.table, "rows": out.rows, "stats": out.stats,
            "skipped_stages": out.skipped,
        });
        env.record(
            step_id,
            "crm.merge",
            &config,
            &serde_json::json!({"table": out.table, "rows": out.rows}),
        );
        json_to_py(py, &result)
    }
}

/// Normalises key values as the merge does (`spec`: ``text``, ``email``,
/// ``email:canonical``, ``phone``, ``phone:CZ``, ``exact``); unparseable
/// values become ``None``. Used by the ``duckmerge_normalize`` UDF on a
/// duckdb-python connection.
#[pyfunction]
#[pyo3(name = "_normalize_values")]
pub fn normalize_values(
    py: Python<'_>,
    values: Vec<Option<String>>,
    spec: &str,
) -> PyResult<Vec<Option<String>>> {
    let normalizer = crate::merge::udf::parse_spec(spec)
        .map_err(|e| to_pyerr(crate::error::Error::Config(e)))?;
    Ok(py.detach(|| {
        values
            .iter()
            .map(|v| v.as_deref().and_then(|v| normalizer.apply(v)))
            .collect()
    }))
}
