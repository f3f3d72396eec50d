//! Resume: fingerprints of stage inputs and the `_duckmerge_stages` table.
//!
//! Each merge stage, once its tables are committed, records a row
//! `(step_id, stage, fingerprint, info, finished_at)`. A rerun of the same
//! step skips a stage whose recorded fingerprint still matches; fingerprints
//! chain (each stage's includes the previous one's), so a changed input or
//! config reruns everything from the first affected stage on.

use std::path::Path;

use serde_json::{json, Value};

use super::config::SourceConfig;
use crate::arrow::Param;
use crate::backend::{describe_query, quote_ident, sql_string, SqlBackend, StepContext};
use crate::csv::resolve_input;
use crate::error::Result;

/// The bookkeeping table.
pub const STAGES_TABLE: &str = "_duckmerge_stages";

/// Prefix of the consolidated vendor tables, shared between steps.
pub const CONSOLIDATED_PREFIX: &str = "_duckmerge_consolidated_";

/// A stable 128-bit fingerprint (two FNV-1a 64 passes) of a JSON value, as hex.
///
/// Stable across runs and builds (unlike `DefaultHasher`), which matters as
/// fingerprints are stored in the session database.
pub fn fingerprint(value: &Value) -> String {
    let text = value.to_string();
    format!(
        "{:016x}{:016x}",
        fnv1a64(text.as_bytes(), FNV_OFFSET),
        fnv1a64(text.as_bytes(), 0x6c62_272e_07bb_0142)
    )
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bits, from `offset` (the standard offset basis is `FNV_OFFSET`).
fn fnv1a64(bytes: &[u8], offset: u64) -> u64 {
    bytes.iter().fold(offset, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A file's identity: absolute path, size and modification time.
pub fn file_identity(path: &Path) -> Value {
    let meta = std::fs::metadata(path).ok();
    let mtime_ns = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().to_string());
    json!({
        "path": path.to_string_lossy(),
        "size": meta.as_ref().map(|m| m.len()),
        "mtime_ns": mtime_ns,
    })
}

/// A relation's columns with their types, in order (tables and views).
pub fn columns_with_types(backend: &dyn SqlBackend, table: &str) -> Result<Vec<(String, String)>> {
    describe_query(backend, &format!("SELECT * FROM {}", quote_ident(table)))
}

/// A table source's identity: its columns, row count and a hash of its
/// content in row order, so a table rewritten with other rows differs.
fn table_identity(backend: &dyn SqlBackend, table: &str) -> Result<Value> {
    let cols = columns_with_types(backend, table)?;
    let mut hashed: Vec<String> = vec!["rowid".into()];
    hashed.extend(cols.iter().map(|(c, _)| quote_ident(c)));
    let row = backend.query(
        &format!(
            "SELECT count(*), CAST(bit_xor(hash({})) AS VARCHAR) FROM {}",
            hashed.join(", "),
            quote_ident(table)
        ),
        &[],
    )?;
    let row = row.into_iter().next().unwrap_or_default();
    Ok(json!({
        "table": table,
        "columns": cols,
        "rows": row.first(),
        "hash": row.get(1),
    }))
}

/// The identity of a merge source (file or table), for fingerprints.
pub fn source_identity(
    source: &SourceConfig,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<Value> {
    match (&source.table, &source.path) {
        (Some(t), _) => table_identity(backend, t),
        (None, Some(p)) if crate::remote::is_remote(p) => {
            let options: crate::remote::StorageOptions = source
                .csv_options
                .get("storage_options")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            // Size, ETag and modification time from a HEAD request.
            Ok(json!({
                "remote": crate::remote::head(p, &options)?,
                "options": source.csv_options,
            }))
        }
        (None, Some(p)) => Ok(json!({
            "file": file_identity(&resolve_input(p, ctx)),
            "options": source.csv_options,
        })),
        (None, None) => Ok(Value::Null),
    }
}

/// The `_duckmerge_stages` table, read and written through a backend.
pub struct StageLog<'a> {
    backend: &'a dyn SqlBackend,
    ctx: &'a dyn StepContext,
    step_id: &'a str,
}

impl<'a> StageLog<'a> {
    /// Opens (creating if needed) the stage log for one step.
    pub fn open(
        backend: &'a dyn SqlBackend,
        ctx: &'a dyn StepContext,
        step_id: &'a str,
    ) -> Result<Self> {
        backend.execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {STAGES_TABLE} (step_id VARCHAR, stage VARCHAR, \
                 fingerprint VARCHAR, info VARCHAR, finished_at TIMESTAMP)"
            ),
            &[],
            ctx,
        )?;
        Ok(StageLog {
            backend,
            ctx,
            step_id,
        })
    }

    /// The recorded info of `stage` when its fingerprint is `fp`, else None.
    pub fn finished(&self, stage: &str, fp: &str) -> Result<Option<Value>> {
        let rows = self.backend.query(
            &format!(
                "SELECT info FROM {STAGES_TABLE} WHERE step_id = ? AND stage = ? AND fingerprint = ?"
            ),
            &[
                Param::Text(self.step_id.into()),
                Param::Text(stage.into()),
                Param::Text(fp.into()),
            ],
        )?;
        Ok(first_info(rows))
    }

    /// Forgets `stage` (before rerunning it, so a crash midway can never
    /// leave a stale row that looks finished).
    pub fn invalidate(&self, stage: &str) -> Result<()> {
        self.backend.execute(
            &format!("DELETE FROM {STAGES_TABLE} WHERE step_id = ? AND stage = ?"),
            &[Param::Text(self.step_id.into()), Param::Text(stage.into())],
            self.ctx,
        )
    }

    /// Records `stage` as finished with fingerprint `fp`, replacing its row
    /// in one transaction (one statement batch: values are literals, so it
    /// runs on the connection the stage's tables were written on).
    pub fn record(&self, stage: &str, fp: &str, info: &Value) -> Result<()> {
        let (step, stage, fp, info) = (
            sql_string(self.step_id),
            sql_string(stage),
            sql_string(fp),
            sql_string(&info.to_string()),
        );
        let batch = format!(
            "BEGIN TRANSACTION; \
             DELETE FROM {STAGES_TABLE} WHERE step_id = {step} AND stage = {stage}; \
             INSERT INTO {STAGES_TABLE} VALUES ({step}, {stage}, {fp}, {info}, now()::TIMESTAMP); \
             COMMIT"
        );
        if let Err(e) = self.backend.execute(&batch, &[], self.ctx) {
            let _ = self.backend.execute("ROLLBACK", &[], self.ctx);
            return Err(e);
        }
        Ok(())
    }

    /// Info of a consolidated vendor table with fingerprint `fp`, recorded by
    /// any step of the session, when the table still exists.
    pub fn consolidated(&self, fp: &str) -> Result<Option<Value>> {
        let rows = self.backend.query(
            &format!(
                "SELECT s.info FROM {STAGES_TABLE} s WHERE s.stage = 'consolidate' \
                 AND s.fingerprint = ? AND EXISTS (SELECT 1 FROM duckdb_tables() t \
                 WHERE t.database_name = current_database() AND t.schema_name = 'main' \
                 AND t.table_name = ?) LIMIT 1"
            ),
            &[Param::Text(fp.into()), Param::Text(consolidated_table(fp))],
        )?;
        Ok(first_info(rows))
    }

    /// Drops consolidated vendor tables, and vendor files loaded into the
    /// session, that no step refers to any more.
    pub fn drop_unreferenced_consolidated(&self) -> Result<()> {
        let infos = self.backend.query(
            &format!("SELECT fingerprint, info FROM {STAGES_TABLE} WHERE stage = 'consolidate'"),
            &[],
        )?;
        let mut keep = std::collections::HashSet::new();
        for row in infos {
            if let Some(fp) = row.first().and_then(Value::as_str) {
                keep.insert(consolidated_table(fp));
            }
            let info: Value = row
                .get(1)
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            for t in info["sources"].as_array().into_iter().flatten() {
                if let Some(t) = t.as_str() {
                    keep.insert(t.to_string());
                }
            }
        }
        let tables = self.backend.query(
            &format!(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() \
                 AND schema_name = 'main' AND (starts_with(table_name, '{CONSOLIDATED_PREFIX}') \
                 OR starts_with(table_name, '{SOURCE_PREFIX}'))"
            ),
            &[],
        )?;
        for t in tables.into_iter().filter_map(|r| {
            r.into_iter()
                .next()
                .and_then(|v| v.as_str().map(String::from))
        }) {
            if !keep.contains(&t) {
                log::info!("[MergeEngine] Dropping {t} (no step uses it any more)");
                crate::backend::drop_quietly(self.backend, &t, self.ctx);
            }
        }
        Ok(())
    }
}

/// Prefix of vendor files loaded into the session (named by fingerprint,
/// shared between steps).
pub const SOURCE_PREFIX: &str = "_duckmerge_source_";

/// The table a vendor file with this identity fingerprint is loaded into.
pub fn source_table(fp: &str) -> String {
    format!("{SOURCE_PREFIX}{fp}")
}

/// The `info` JSON of the first row of a stage-log query.
fn first_info(rows: Vec<Vec<Value>>) -> Option<Value> {
    rows.into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(|v| v.as_str().and_then(|s| serde_json::from_str(s).ok()))
}

/// The consolidated vendor table for a fingerprint.
pub fn consolidated_table(fp: &str) -> String {
    format!("{CONSOLIDATED_PREFIX}{fp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_sensitive() {
        let a = fingerprint(&json!({"path": "a.csv", "size": 10}));
        assert_eq!(a, fingerprint(&json!({"path": "a.csv", "size": 10})));
        assert_ne!(a, fingerprint(&json!({"path": "a.csv", "size": 11})));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        // From the FNV reference test suite (fnv1a64 of "" and "a").
        assert_eq!(fnv1a64(b"", FNV_OFFSET), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a", FNV_OFFSET), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar", FNV_OFFSET), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn file_identity_changes_with_content() {
        let dir = std::env::temp_dir().join(format!("dm-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.csv");
        std::fs::write(&p, "a\n1\n").unwrap();
        let one = file_identity(&p);
        std::fs::write(&p, "a\n1\n2\n").unwrap();
        assert_ne!(one, file_identity(&p));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
