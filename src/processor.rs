//! The SQL processor driver: a query's result stored as table `step_id`.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::backend::{
    backend_count, check_table_name, drop_quietly, quote_ident, staging_name, swap_in, SqlBackend,
    StepContext,
};
use crate::error::{Error, Result};
use crate::session::json_map as json_obj;

/// The SqlProcessor's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// A query (one SELECT-like statement); input tables are named in it.
    pub query: String,
}

impl ProcessorConfig {
    pub fn from_json(step_id: &str, config: Value) -> Result<Self> {
        crate::error::require_mapping(step_id, "SqlProcessor", &config)?;
        let cfg: ProcessorConfig = serde_json::from_value(config).map_err(|e| {
            Error::Config(format!("Step {step_id}: invalid SqlProcessor config: {e}"))
        })?;
        if cfg.query.trim().is_empty() {
            return Err(Error::Config(format!(
                "Step {step_id}: query must not be empty"
            )));
        }
        Ok(cfg)
    }
}

/// Runs the query into a staging table and swaps it in as `step_id`.
pub fn run_sql(
    step_id: &str,
    cfg: &ProcessorConfig,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<Value> {
    check_table_name(step_id)?;
    let query = cfg
        .query
        .trim()
        .trim_end_matches([';', ' ', '\t', '\r', '\n']);
    let staging = staging_name();
    ctx.log_event("sql_start", json_obj(json!({"step_id": step_id})));
    // In parentheses, so a second statement (`SELECT 1; DROP TABLE x`) is a
    // syntax error instead of running outside the staging swap. The newline
    // keeps a trailing `-- comment` from swallowing the parenthesis.
    let sql = format!("CREATE TABLE {} AS (\n{query}\n)", quote_ident(&staging));
    if let Err(e) = backend.execute(&sql, &[], ctx) {
        drop_quietly(backend, &staging, ctx);
        if e.to_string().contains("syntax error at or near \";\"") {
            return Err(Error::Config(format!(
                "Step {step_id}: query must be one statement (found a \";\" inside it)"
            )));
        }
        return Err(e.with_context(format!("Step {step_id}: the query failed")));
    }
    swap_in(backend, &staging, step_id, ctx)?;
    let rows = backend_count(backend, step_id)?;
    ctx.log_metric("rows_written", Value::from(rows));
    ctx.log_event(
        "sql_complete",
        json_obj(json!({"step_id": step_id, "rows": rows})),
    );
    log::info!("Step {step_id}: stored {rows} rows");
    Ok(json!({"table": step_id, "rows": rows}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Database, NativeBackend, NullContext};
    use std::sync::Arc;

    #[test]
    fn query_result_becomes_the_step_table_and_errors_name_the_step() {
        let b = NativeBackend::new(&Arc::new(Database::in_memory().unwrap())).unwrap();
        let cfg =
            ProcessorConfig::from_json("top", json!({"query": "SELECT range AS i FROM range(5);"}))
                .unwrap();
        assert_eq!(
            run_sql("top", &cfg, &b, &NullContext).unwrap(),
            json!({"table": "top", "rows": 5})
        );
        let bad =
            ProcessorConfig::from_json("bad", json!({"query": "SELECT * FROM nowhere"})).unwrap();
        let err = run_sql("bad", &bad, &b, &NullContext)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Step bad:") && err.contains("nowhere"),
            "{err}"
        );
        assert!(ProcessorConfig::from_json("x", json!({"query": "SELECT 1", "sql": 1})).is_err());
        assert!(ProcessorConfig::from_json("x", json!(["SELECT 1"])).is_err());
    }

    #[test]
    fn a_second_statement_never_runs() {
        let backend = NativeBackend::new(&Arc::new(Database::in_memory().unwrap())).unwrap();
        backend
            .execute("CREATE TABLE victim AS SELECT 1 AS x", &[], &NullContext)
            .unwrap();
        let cfg =
            ProcessorConfig::from_json("two", json!({"query": "SELECT 1 AS x; DROP TABLE victim"}))
                .unwrap();
        let err = run_sql("two", &cfg, &backend, &NullContext).unwrap_err();
        assert!(err.to_string().contains("one statement"), "{err}");
        assert_eq!(backend_count(&backend, "victim").unwrap(), 1);
        // A trailing comment and semicolon are fine.
        let cfg =
            ProcessorConfig::from_json("ok", json!({"query": "SELECT 2 AS y -- the answer\n;"}))
                .unwrap();
        run_sql("ok", &cfg, &backend, &NullContext).unwrap();
        assert_eq!(backend_count(&backend, "ok").unwrap(), 1);
    }
}
