//! Table → CSV or Parquet file, through DuckDB's `COPY` into a temp file in
//! the target folder that is renamed over the target when complete.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use super::encoding::{transcode_from_utf8, TextEncoding};
use super::{Compression, TempFile};
use crate::backend::{
    backend_columns, backend_count, backend_relation_exists, quote_ident, sql_string, SqlBackend,
    StepContext,
};
use crate::error::{Error, Result};
use crate::session::json_map as json_obj;

fn default_delimiter() -> String {
    ",".into()
}
fn default_true() -> bool {
    true
}
fn default_newline() -> String {
    "lf".into()
}
fn default_encoding() -> String {
    "utf-8".into()
}
fn default_quoting() -> String {
    "minimal".into()
}

/// The CsvWriter's config. Unknown keys are errors listing these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// The output file; parent folders are created.
    pub path: String,
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    #[serde(default = "default_true")]
    pub header: bool,
    /// `lf`, `crlf` or `cr`.
    #[serde(default = "default_newline")]
    pub newline: String,
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// `minimal` or `all`.
    #[serde(default = "default_quoting")]
    pub quoting: String,
    /// Columns in alphabetical order (the hosts' existing writer does this).
    #[serde(default = "default_true")]
    pub sort_columns: bool,
    /// Exactly these columns, in this order.
    pub columns: Option<Vec<String>>,
    /// `csv` or `parquet`; default from the extension.
    pub format: Option<String>,
    /// Credentials and endpoint for `s3://` targets; see `crate::remote`.
    #[serde(default)]
    pub storage_options: crate::remote::StorageOptions,
}

impl WriterConfig {
    pub fn from_json(step_id: &str, config: Value) -> Result<Self> {
        crate::error::require_mapping(step_id, "CsvWriter", &config)?;
        let cfg: WriterConfig = serde_json::from_value(config)
            .map_err(|e| Error::Config(format!("Step {step_id}: invalid CsvWriter config: {e}")))?;
        if cfg.delimiter.is_empty() {
            return Err(Error::Config(format!(
                "Step {step_id}: delimiter must not be empty"
            )));
        }
        Ok(cfg)
    }
}

/// The file's format, from the config or the extension (`.parquet`, else CSV).
fn output_format(cfg: &WriterConfig, path: &Path, step_id: &str) -> Result<&'static str> {
    match cfg.format.as_deref() {
        Some("csv") => Ok("csv"),
        Some("parquet") => Ok("parquet"),
        Some(other) => Err(Error::Config(format!(
            "Step {step_id}: format {other:?} is not valid; use \"csv\" or \"parquet\""
        ))),
        None => {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            Ok(if name.ends_with(".parquet") || name.ends_with(".pq") {
                "parquet"
            } else {
                "csv"
            })
        }
    }
}

/// Writes `table` to `cfg.path` atomically. Returns the rows written.
pub fn run_write(
    step_id: &str,
    table: &str,
    cfg: &WriterConfig,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<u64> {
    if !backend_relation_exists(backend, table)? {
        return Err(Error::table_not_found(table, Some(step_id)));
    }
    if crate::remote::is_remote(&cfg.path) {
        // Written to a local temp file (same name, so the same format and
        // compression), then uploaded in parts; a failed upload is aborted
        // and leaves no object.
        let name = cfg
            .path
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("output.csv");
        let dir = ctx.temp_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating the temp folder {}", dir.display()), e))?;
        let local = super::TempFile(dir.join(format!("{}-{name}", uuid::Uuid::new_v4().simple())));
        let mut local_cfg = cfg.clone();
        local_cfg.path = local.0.to_string_lossy().into_owned();
        let rows = run_write(step_id, table, &local_cfg, backend, ctx)?;
        ctx.check_cancel()?;
        log::info!(
            "Step {step_id}: uploading to {}",
            crate::remote::redact(&cfg.path)
        );
        crate::remote::upload(&local.0, &cfg.path, &cfg.storage_options)?;
        return Ok(rows);
    }
    let available = backend_columns(backend, table)?;
    let plan = WritePlan::new(step_id, cfg, &available, table)?;
    plan.start_event(table, ctx);
    backend
        .execute(&plan.copy_sql(&quote_ident(table)), &[], ctx)
        .map_err(|e| plan.context(e))?;
    let rows = backend_count(backend, table)?;
    plan.finish(table, rows, ctx)?;
    Ok(rows)
}

/// The name of a temp file beside `file_name`: hidden, and tagged with this
/// process's id so that [`remove_stale_temps`] can tell it from the temp file
/// of a writer that was killed before it could remove its own.
fn temp_name(file_name: &str, suffix: &str) -> String {
    format!(
        ".{file_name}.{}-{}.{suffix}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// How long a temp file must have been left untouched before it may be
/// removed as stale: a live writer keeps writing to its file.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes temp files beside `file_name` (see [`temp_name`]) left by a writer
/// killed mid-write (SIGKILL, a crash): the writing process no longer runs
/// and the file was not modified for [`STALE_AFTER`]. Only where `/proc`
/// tells which processes run (Linux); elsewhere nothing is removed. A failure
/// to remove one is ignored: it only leaves the file where it was.
fn remove_stale_temps(folder: &Path, file_name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    let prefix = format!(".{file_name}.");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if !rest.ends_with(".tmp") {
            continue;
        }
        // `<pid>-<32 hex digits>.tmp` or `<pid>-<32 hex digits>.utf8.tmp`.
        let Some((pid, tail)) = rest.split_once('-') else {
            continue;
        };
        // Bytes, not a str slice: a name with other characters must not panic.
        let uuid_ok = tail
            .as_bytes()
            .get(..32)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !uuid_ok || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let old_enough = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if old_enough && std::fs::remove_file(entry.path()).is_ok() {
            log::info!(
                "Removed {}, a temp file left by an interrupted write",
                entry.path().display()
            );
        }
    }
}

/// A local write in two steps: the `COPY` into a temp file beside the target
/// (`copy_sql`), then `finish`: transcoding if needed and the rename over the
/// target. The merge runs its `COPY` at the same time as the statement that
/// creates the table it writes.
pub struct WritePlan {
    step_id: String,
    target: PathBuf,
    tmp: TempFile,
    /// Where DuckDB writes UTF-8 when Rust transcodes afterwards.
    utf8_tmp: Option<TempFile>,
    transcode: Option<&'static encoding_rs::Encoding>,
    compression: Compression,
    select: String,
    options: String,
}

impl WritePlan {
    /// Checks the config against the columns `table` has (`available`, in
    /// order) and creates the target's folder. Local paths only.
    pub fn new(
        step_id: &str,
        cfg: &WriterConfig,
        available: &[String],
        table: &str,
    ) -> Result<WritePlan> {
        let target = std::path::absolute(&cfg.path)
            .map_err(|e| Error::io(format!("Step {step_id}: resolving {}", cfg.path), e))?;
        let format = output_format(cfg, &target, step_id)?;
        let compression = Compression::from_extension(&target);
        let newline = match cfg.newline.as_str() {
            "lf" | "\n" => "\\n",
            "crlf" | "\r\n" => "\\r\\n",
            "cr" | "\r" => "\\r",
            other => {
                return Err(Error::Config(format!(
                    "Step {step_id}: newline {other:?} is not valid; use \"lf\", \"crlf\" or \"cr\""
                )))
            }
        };
        let force_quote = match cfg.quoting.as_str() {
            "minimal" => false,
            "all" => true,
            other => {
                return Err(Error::Config(format!(
                    "Step {step_id}: quoting {other:?} is not valid; use \"minimal\" or \"all\""
                )))
            }
        };
        let encoding = TextEncoding::parse(&cfg.encoding).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("Step {step_id}: {m}")),
            other => other,
        })?;

        let columns: Vec<String> = match &cfg.columns {
            Some(cols) => {
                let missing: Vec<&String> =
                    cols.iter().filter(|c| !available.contains(c)).collect();
                if !missing.is_empty() {
                    return Err(Error::Config(format!(
                        "Step {step_id}: columns {missing:?} are not in table \"{table}\" (it has {available:?})"
                    )));
                }
                cols.clone()
            }
            None if cfg.sort_columns => {
                let mut cols = available.to_vec();
                cols.sort();
                cols
            }
            None => available.to_vec(),
        };
        if columns.is_empty() {
            return Err(Error::Config(format!(
                "Step {step_id}: table \"{table}\" has no columns to write"
            )));
        }

        let folder = target
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        std::fs::create_dir_all(&folder)
            .map_err(|e| Error::io(format!("Step {step_id}: creating {}", folder.display()), e))?;
        let file_name = target.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        remove_stale_temps(&folder, file_name);
        let tmp = TempFile(folder.join(temp_name(file_name, "tmp")));
        // Non-UTF-8 CSV is written as UTF-8 first, then transcoded (and compressed) by Rust.
        let transcode = match (format, encoding) {
            ("csv", TextEncoding::Transcoded(enc)) => Some(enc),
            ("csv", TextEncoding::Native("latin-1")) => Some(encoding_rs::WINDOWS_1252),
            ("csv", TextEncoding::Native("utf-16")) => Some(encoding_rs::UTF_16LE),
            _ => None,
        };
        let utf8_tmp = transcode.map(|_| TempFile(folder.join(temp_name(file_name, "utf8.tmp"))));

        let select = columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let options = if format == "parquet" {
            "FORMAT parquet, COMPRESSION zstd".to_string()
        } else {
            let mut o = vec![
                "FORMAT csv".to_string(),
                format!("HEADER {}", cfg.header),
                format!("DELIMITER {}", sql_string(&cfg.delimiter)),
                format!("NEW_LINE E'{newline}'"),
            ];
            if force_quote {
                o.push("FORCE_QUOTE *".into());
            }
            let duck_compression = if transcode.is_some() {
                Compression::None
            } else {
                compression
            };
            o.push(format!(
                "COMPRESSION {}",
                sql_string(duck_compression.duckdb_name())
            ));
            o.join(", ")
        };
        Ok(WritePlan {
            step_id: step_id.to_string(),
            target,
            tmp,
            utf8_tmp,
            transcode,
            compression,
            select,
            options,
        })
    }

    /// The `COPY` of the chosen columns of `from` (a quoted table name or a
    /// parenthesised query) into the temp file.
    pub fn copy_sql(&self, from: &str) -> String {
        let into = self.utf8_tmp.as_ref().unwrap_or(&self.tmp);
        format!(
            "COPY (SELECT {} FROM {from}) TO {} ({})",
            self.select,
            sql_string(&into.0.to_string_lossy()),
            self.options
        )
    }

    /// An error of the `COPY`, naming the step and the target.
    pub fn context(&self, e: Error) -> Error {
        e.with_context(format!(
            "Step {}: writing {}",
            self.step_id,
            self.target.display()
        ))
    }

    /// The `write_start` event.
    pub fn start_event(&self, table: &str, ctx: &dyn StepContext) {
        ctx.log_event(
            "write_start",
            json_obj(json!({"step_id": self.step_id, "table": table, "path": self.target})),
        );
    }

    /// After the `COPY`: transcodes if needed, renames the temp file over
    /// the target, and reports `rows` written (metric, event, log line).
    pub fn finish(self, table: &str, rows: u64, ctx: &dyn StepContext) -> Result<()> {
        let step_id = &self.step_id;
        if let (Some(enc), Some(src)) = (self.transcode, &self.utf8_tmp) {
            transcode_from_utf8(&src.0, enc, &self.tmp.0, self.compression).map_err(
                |e| match e {
                    Error::Config(m) => Error::Config(format!("Step {step_id}: {m}")),
                    other => other,
                },
            )?;
        }
        std::fs::rename(&self.tmp.0, &self.target).map_err(|e| {
            Error::io(
                format!("Step {step_id}: renaming onto {}", self.target.display()),
                e,
            )
        })?;
        ctx.log_metric("rows_written", Value::from(rows));
        ctx.log_event(
            "write_complete",
            json_obj(
                json!({"step_id": step_id, "table": table, "path": self.target, "rows": rows}),
            ),
        );
        log::info!(
            "Step {step_id}: wrote {rows} rows of \"{table}\" to {}",
            self.target.display()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Database, NativeBackend, NullContext};
    use std::sync::Arc;

    fn setup() -> (NativeBackend, tempfile::TempDir) {
        let b = NativeBackend::new(&Arc::new(Database::in_memory().unwrap())).unwrap();
        b.execute(
            "CREATE TABLE t AS SELECT * FROM (VALUES (1, 'x, \"y\"', 'b'), (2, NULL, 'c')) v(id, note, a)",
            &[],
            &NullContext,
        )
        .unwrap();
        (b, tempfile::tempdir().unwrap())
    }

    fn write(b: &NativeBackend, cfg: Value) -> Result<u64> {
        run_write(
            "w",
            "t",
            &WriterConfig::from_json("w", cfg)?,
            b,
            &NullContext,
        )
    }

    #[test]
    fn temp_files_of_killed_writers_are_removed_and_others_kept() {
        let (b, dir) = setup();
        let hex = "0123456789abcdef0123456789abcdef";
        let make = |name: &str, age_secs: u64| {
            let path = dir.path().join(name);
            let f = std::fs::File::create(&path).unwrap();
            let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs);
            f.set_modified(when).unwrap();
            path
        };
        // pid_max is at most 2^22 on Linux: no process has this id.
        let dead = 999_999_999u32;
        let me = std::process::id();
        let stale = make(&format!(".out.csv.{dead}-{hex}.tmp"), 3600);
        let stale_utf8 = make(&format!(".out.csv.{dead}-{hex}.utf8.tmp"), 3600);
        let live = make(&format!(".out.csv.{me}-{hex}.tmp"), 3600);
        let fresh = make(&format!(".out.csv.{dead}-{hex}1.tmp"), 0);
        let other_target = make(&format!(".other.csv.{dead}-{hex}.tmp"), 3600);
        let not_ours = make(".out.csv.notes.tmp", 3600);
        // Byte 32 falls inside a character here.
        let non_ascii = make(&format!(".out.csv.{dead}-a{}.tmp", "é".repeat(20)), 3600);
        write(&b, json!({"path": dir.path().join("out.csv")})).unwrap();
        let on_linux = Path::new("/proc/self").exists();
        assert_eq!(stale.exists(), !on_linux, "a dead writer's temp file");
        assert_eq!(
            stale_utf8.exists(),
            !on_linux,
            "a dead writer's UTF-8 temp file"
        );
        assert!(live.exists(), "a running process's temp file is kept");
        assert!(fresh.exists(), "a recently written temp file is kept");
        assert!(other_target.exists(), "another target's temp file is kept");
        assert!(
            not_ours.exists(),
            "a file not named like a temp file is kept"
        );
        assert!(non_ascii.exists(), "a name without the hex id is kept");
    }

    #[test]
    fn sorted_columns_crlf_and_quoting() {
        let (b, dir) = setup();
        let out = dir.path().join("sub/out.csv");
        assert_eq!(
            write(&b, json!({"path": out, "newline": "crlf"})).unwrap(),
            2
        );
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text, "a,id,note\r\nb,1,\"x, \"\"y\"\"\"\r\nc,2,\r\n");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp files left behind");
    }

    #[test]
    fn table_order_and_explicit_columns() {
        let (b, dir) = setup();
        let out = dir.path().join("o.csv");
        write(
            &b,
            json!({"path": out, "sort_columns": false, "header": false}),
        )
        .unwrap();
        assert!(std::fs::read_to_string(&out).unwrap().starts_with("1,"));
        write(&b, json!({"path": out, "columns": ["note", "id"]})).unwrap();
        assert!(std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("note,id\n"));
        assert!(matches!(
            write(&b, json!({"path": out, "columns": ["nope"]})),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn missing_table_is_table_not_found() {
        let (b, dir) = setup();
        let cfg = WriterConfig::from_json("w", json!({"path": dir.path().join("x.csv")})).unwrap();
        let err = run_write("w", "missing", &cfg, &b, &NullContext).unwrap_err();
        assert!(matches!(err, Error::TableNotFound(_)));
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
