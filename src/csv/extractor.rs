//! CSV file → table, through DuckDB's `read_csv` into a staging table that is
//! swapped in when complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::encoding::{transcode_to_utf8, TextEncoding};
use super::{
    csv_error, fetch_remote, find_ragged_line, name_the_url, resolve_input, Compression, TempFile,
};
use crate::arrow::Param;
use crate::backend::{
    backend_count, check_table_name, describe_query, drop_quietly, quote_ident, sql_string,
    staging_name, swap_in, SqlBackend, StepContext,
};
use crate::error::{Error, Result};
use crate::session::json_map as json_obj;

/// `header`: a flag, or the 0-based row that holds the header.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Header {
    Flag(bool),
    Row(u64),
}

/// What to do with a row that does not fit (wrong field count, bad quoting,
/// a value that does not convert).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnBadLines {
    /// Stop with a `CsvError` naming the file and line.
    #[default]
    Error,
    /// Drop the row; count it in `rows_skipped`.
    Skip,
    /// Drop the row and keep it verbatim in `<step_id>__rejects`.
    Reject,
}

fn default_delimiter() -> String {
    ",".into()
}
fn default_encoding() -> String {
    "utf-8".into()
}
fn default_compression() -> String {
    "infer".into()
}
fn default_true() -> bool {
    true
}

/// The CsvExtractor's config. Unknown keys are errors listing these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractorConfig {
    /// The file (or, with `discovery`, a folder).
    pub path: String,
    /// Field separator; `"auto"` sniffs it.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Quote character (default `"`).
    pub quotechar: Option<String>,
    /// Escape character inside quotes (default: the quote, doubled).
    pub escapechar: Option<String>,
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// `infer` (from `.gz` / `.zst`), `gzip`, `zstd`, `none`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// `true`, `false`, or the 0-based row holding the header.
    pub header: Option<Header>,
    /// Columns to keep, in this order.
    pub columns: Option<Vec<String>>,
    /// Rows to skip before the header (or the data, without a header).
    #[serde(default)]
    pub skip_rows: u64,
    /// Keep at most this many rows.
    pub limit: Option<u64>,
    /// Lines starting with this character are skipped.
    pub comment: Option<String>,
    /// Blank lines are skipped (DuckDB always does; `false` is refused).
    #[serde(default = "default_true")]
    pub skip_blank_lines: bool,
    /// Column types: `int`, `float`, `str`, `bool`, `date`, `datetime` or a DuckDB type.
    #[serde(default)]
    pub dtype: BTreeMap<String, String>,
    /// Columns read as timestamps.
    #[serde(default)]
    pub parse_dates: Vec<String>,
    /// Extra strings read as NULL (an empty field always is).
    #[serde(default)]
    pub na_values: Vec<String>,
    #[serde(default)]
    pub on_bad_lines: OnBadLines,
    /// Rows per progress tick; never changes the output.
    pub batch_size: Option<u64>,
    /// Same as `batch_size`.
    pub chunk_size: Option<u64>,
    /// List the CSV files of a folder instead of loading one.
    #[serde(default)]
    pub discovery: bool,
    /// Credentials and endpoint for `s3://` paths (over the standard AWS
    /// environment variables and config files); see `crate::remote`.
    #[serde(default)]
    pub storage_options: crate::remote::StorageOptions,
    /// `false` stores the table's text columns uncompressed: the load skips
    /// DuckDB's dictionary/FSST analysis (about 30 % faster on the 1M-row
    /// benchmark file) and the table takes about 4x the disk space.
    #[serde(default = "default_true")]
    pub compress_text: bool,
}

impl ExtractorConfig {
    /// Parses a config, naming the step in errors.
    pub fn from_json(step_id: &str, config: Value) -> Result<Self> {
        crate::error::require_mapping(step_id, "CsvExtractor", &config)?;
        let cfg: ExtractorConfig = serde_json::from_value(config).map_err(|e| {
            Error::Config(format!("Step {step_id}: invalid CsvExtractor config: {e}"))
        })?;
        if !cfg.skip_blank_lines {
            return Err(Error::Config(format!(
                "Step {step_id}: skip_blank_lines=false is not supported; blank lines are always skipped"
            )));
        }
        for (key, value) in [
            ("delimiter", Some(&cfg.delimiter)),
            ("quotechar", cfg.quotechar.as_ref()),
            ("escapechar", cfg.escapechar.as_ref()),
            ("comment", cfg.comment.as_ref()),
        ] {
            if let Some(v) = value {
                if v.is_empty() || (key != "delimiter" && v.chars().count() != 1) {
                    return Err(Error::Config(format!(
                        "Step {step_id}: {key} must be a single character, got {v:?}"
                    )));
                }
            }
        }
        Ok(cfg)
    }
}

/// A config `dtype` value as a DuckDB type.
pub fn duckdb_type(name: &str) -> String {
    match name.trim().to_ascii_lowercase().as_str() {
        "int" | "int64" | "integer" => "BIGINT".into(),
        "int32" => "INTEGER".into(),
        "float" | "float64" | "double" => "DOUBLE".into(),
        "str" | "string" | "object" | "text" => "VARCHAR".into(),
        "bool" | "boolean" => "BOOLEAN".into(),
        "date" => "DATE".into(),
        "datetime" | "datetime64" | "datetime64[ns]" | "timestamp" => "TIMESTAMP".into(),
        _ => name.trim().to_string(),
    }
}

/// The `read_csv(...)` call for a config, with the path as parameter `?`.
fn read_csv_call(
    path: &str,
    cfg: &ExtractorConfig,
    compression: Compression,
    encoding: &str,
    extra: &[String],
) -> String {
    let mut opts: Vec<String> = Vec::new();
    if cfg.delimiter != "auto" {
        let delim = match cfg.delimiter.as_str() {
            "\\t" => "\t",
            d => d,
        };
        opts.push(format!("delim = {}", sql_string(delim)));
    }
    opts.push(format!(
        "quote = {}",
        sql_string(cfg.quotechar.as_deref().unwrap_or("\""))
    ));
    opts.push(format!(
        "escape = {}",
        sql_string(
            cfg.escapechar
                .as_deref()
                .or(cfg.quotechar.as_deref())
                .unwrap_or("\"")
        )
    ));
    let (header, header_row) = match cfg.header {
        None | Some(Header::Flag(true)) => (true, 0),
        Some(Header::Flag(false)) => (false, 0),
        Some(Header::Row(n)) => (true, n),
    };
    opts.push(format!("header = {header}"));
    let skip = cfg.skip_rows + header_row;
    if skip > 0 {
        opts.push(format!("skip = {skip}"));
    }
    if let Some(c) = &cfg.comment {
        opts.push(format!("comment = {}", sql_string(c)));
    }
    let mut nulls = vec![sql_string("")];
    nulls.extend(cfg.na_values.iter().map(|v| sql_string(v)));
    opts.push(format!("nullstr = [{}]", nulls.join(", ")));
    let mut types: BTreeMap<&str, String> = BTreeMap::new();
    for col in &cfg.parse_dates {
        types.insert(col, "TIMESTAMP".into());
    }
    for (col, ty) in &cfg.dtype {
        types.insert(col, duckdb_type(ty));
    }
    if !types.is_empty() {
        let entries: Vec<String> = types
            .iter()
            .map(|(c, t)| format!("{}: {}", sql_string(c), sql_string(t)))
            .collect();
        opts.push(format!("types = {{{}}}", entries.join(", ")));
    }
    opts.push(format!(
        "compression = {}",
        sql_string(compression.duckdb_name())
    ));
    opts.push(format!("encoding = {}", sql_string(encoding)));
    opts.extend(extra.iter().cloned());
    format!("read_csv({path}, {})", opts.join(", "))
}

/// DuckDB's CSV buffer (`buffer_size`) for a session's `memory_limit` and
/// an uncompressed file of `file_bytes`, when DuckDB's default is not what
/// the load needs:
///
/// - The reader holds a 32 MB buffer per thread: at a 64MB memory_limit a
///   47 MB file of 300-character fields failed ("could not allocate block
///   of size 30.5 MiB"; duckdb-python 2.0 fails on it too), and loads with
///   4 or 8 MB buffers. So below 256 MB the buffer is an eighth of the
///   limit, at least 4 MB (twice DuckDB's default 2 MB line limit).
/// - Otherwise, for a file over 32 MB, the default's 32 MB set explicitly.
///   It is the same buffer, but DuckDB 1.5 then also splits the file into
///   32 MB ranges per thread instead of 8 MB ones (a set `buffer_size`
///   raises the line limit to it, and a range is at least a line): ranges
///   of about 53,000 rows of the benchmark's CRM file are under a row group
///   (122,880 rows), and the ordered insert merges such partial row groups
///   again. Loads of 60 MB, 115 MB and 1.5 GB files took 0.50, 1.09 and
///   10.7 s against 0.85, 1.42 and 14.3 s; a 14 MB file (one range) 0.25 s
///   against 0.22 s, so smaller files keep the default. Lines up to 32 MB
///   load at the first attempt (the default stops at 2 MB and the load is
///   retried with `long_lines`).
fn csv_buffer_size(memory_limit: Option<u64>, file_bytes: Option<u64>) -> Option<u64> {
    const DEFAULT: u64 = 32_000_000;
    const SMALLEST: u64 = 4 * 1024 * 1024;
    match memory_limit.map(|limit| limit / 8) {
        Some(size) if size < DEFAULT => Some(size.max(SMALLEST)),
        _ => file_bytes.filter(|&b| b > DEFAULT).map(|_| DEFAULT),
    }
}

/// The columns a file would load as, without loading it: DuckDB's sniffer
/// reads a sample. `None` when that cannot be known cheaply (encodings Rust
/// transcodes) or the sniffer fails (the real load then reports the error
/// with its line). Lets the merge check its key columns before any work.
pub fn sniff_columns(
    cfg: &ExtractorConfig,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Option<Vec<String>> {
    if let Some(cols) = cfg.columns.as_ref().filter(|c| !c.is_empty()) {
        return Some(cols.clone());
    }
    if crate::remote::is_remote(&cfg.path) {
        return None;
    }
    let path = resolve_input(&cfg.path, ctx);
    let compression = Compression::resolve(&cfg.compression, &path).ok()?;
    let TextEncoding::Native(encoding) = TextEncoding::parse(&cfg.encoding).ok()? else {
        return None;
    };
    // Only the names are wanted: sniffing types on one row instead of the
    // default 20,480 takes 0.07-0.09 s instead of 0.15-0.19 s per 150 MB file.
    // A sniffed delimiter keeps the full sample.
    let sample: &[String] = if cfg.delimiter == "auto" {
        &[]
    } else {
        &["sample_size = 1".to_string()]
    };
    let call = read_csv_call(
        &sql_string(&path.to_string_lossy()),
        cfg,
        compression,
        encoding,
        sample,
    );
    let columns = describe_query(backend, &format!("SELECT * FROM {call}")).ok()?;
    Some(columns.into_iter().map(|(name, _)| name).collect())
}

/// Runs the extractor step. Returns `{"table", "rows"}` (plus
/// `"rows_skipped"` when rows were dropped), or the discovery listing.
pub fn run_extract(
    step_id: &str,
    cfg: &ExtractorConfig,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<Value> {
    check_table_name(step_id)?;
    if crate::remote::is_remote(&cfg.path) {
        if cfg.discovery {
            return Err(Error::Config(format!(
                "Step {step_id}: discovery lists a local folder; {} is remote",
                crate::remote::redact(&cfg.path)
            )));
        }
        // Downloaded as a stream into the temp folder, then loaded as a file.
        let copy =
            fetch_remote(&cfg.path, &cfg.storage_options, ctx).map_err(|e| prefix(step_id, e))?;
        let mut local = cfg.clone();
        local.path = copy.0.to_string_lossy().into_owned();
        return run_extract(step_id, &local, backend, ctx).map_err(|e| name_the_url(e, &cfg.path));
    }
    let path = resolve_input(&cfg.path, ctx);
    if !path.exists() {
        return Err(Error::SourceNotFound {
            what: format!("Step {step_id}: CSV file"),
            path,
        });
    }
    if path.is_dir() {
        if cfg.discovery {
            return discover(step_id, &path, cfg, backend);
        }
        return Err(Error::Config(format!(
            "Step {step_id}: {} is a folder; give a file path, or set discovery: true to list its CSV files",
            path.display()
        )));
    }
    let started = std::time::Instant::now();
    // As in the merge: freed memory goes back to the OS when RSS passes
    // memory_limit + 20 % (a large file would otherwise leave it in glibc's
    // per-thread arenas).
    let _trimmer = crate::memory::TrimGuard::for_backend(backend);
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    ctx.log_event(
        "extract_start",
        json_obj(json!({"step_id": step_id, "path": path, "bytes": bytes})),
    );

    let compression = Compression::resolve(&cfg.compression, &path)?;
    let encoding = TextEncoding::parse(&cfg.encoding).map_err(|e| prefix(step_id, e))?;
    // Encodings DuckDB lacks are transcoded to a UTF-8 temp file first.
    let mut transcoded: Option<TempFile> = None;
    let (read_path, read_compression, read_encoding) = match encoding {
        TextEncoding::Native(name) => (path.clone(), compression, name),
        TextEncoding::Transcoded(enc) => {
            let tmp = TempFile(
                ctx.temp_dir()
                    .join(format!("duckmerge-{}.csv", uuid::Uuid::new_v4().simple())),
            );
            transcode_to_utf8(&path, compression, enc, &tmp.0)?;
            let p = tmp.0.clone();
            transcoded = Some(tmp);
            (p, Compression::None, "utf-8")
        }
    };

    let staging = staging_name();
    let rejects_scan = format!("{}scan", staging_name());
    let rejects_table = format!("{}rejects", staging_name());
    let mut extra = Vec::new();
    if cfg.on_bad_lines != OnBadLines::Error {
        extra.push("ignore_errors = true".to_string());
        extra.push("store_rejects = true".to_string());
        extra.push(format!("rejects_table = {}", sql_string(&rejects_table)));
        extra.push(format!("rejects_scan = {}", sql_string(&rejects_scan)));
    }
    let select = match &cfg.columns {
        Some(cols) if !cols.is_empty() => cols
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "*".to_string(),
    };
    let limit = cfg.limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    // The path is a literal, not a parameter: the statement runs on a
    // connection whose progress is read while it works (C API, no binding).
    let path_sql = sql_string(&read_path.to_string_lossy());
    let rejects_staging = staging_name();
    let mut rejects_sql = String::new();
    if cfg.on_bad_lines != OnBadLines::Error {
        // DuckDB's rejects tables are temporary (this connection only): copy
        // the rows out in the same call.
        rejects_sql.push_str(&format!(
            // One row per rejected line (a line can fail in several ways);
            // the raw line without its line break.
            " CREATE TABLE {} AS SELECT line, \
               rtrim(ltrim(min(csv_line), chr(13) || chr(10)), chr(13) || chr(10)) AS raw_line, \
               string_agg(DISTINCT error_type, '; ') AS error_type, \
               string_agg(error_message, '; ') AS error_message \
             FROM {} GROUP BY line ORDER BY line; \
             DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
            quote_ident(&rejects_staging),
            quote_ident(&rejects_table),
            quote_ident(&rejects_table),
            quote_ident(&rejects_scan),
        ));
    }
    // The size of what DuckDB splits (a compressed file is read as one stream).
    let read_bytes = (read_compression == Compression::None)
        .then(|| std::fs::metadata(&read_path).ok().map(|m| m.len()))
        .flatten();
    let buffer_size = csv_buffer_size(crate::memory::memory_limit(backend)?, read_bytes);
    // The load, with DuckDB's default line limit or (`long_lines`) 32 MB.
    let load = |long_lines: bool| -> Result<()> {
        let mut options = extra.clone();
        if long_lines {
            // Kept off by default: it sizes read buffers.
            options.push("max_line_size = 33554432".into());
            options.push("buffer_size = 67108864".into());
        } else if let Some(size) = buffer_size {
            options.push(format!("buffer_size = {size}"));
        }
        let call = |options: &[String]| {
            read_csv_call(&path_sql, cfg, read_compression, read_encoding, options)
        };
        let source = format!("SELECT {select} FROM {}{limit}", call(&options));
        let table = quote_ident(&staging);
        let create = if cfg.compress_text {
            format!("CREATE TABLE {table} AS {source};")
        } else {
            // The columns as read_csv types them (the rejects options left
            // out: binding them creates DuckDB's rejects tables).
            options.retain(|o| !o.starts_with("store_rejects") && !o.starts_with("rejects_"));
            let columns = describe_query(
                backend,
                &format!("SELECT {select} FROM {}{limit}", call(&options)),
            )?;
            format!(
                "{} INSERT INTO {table} {source};",
                uncompressed_text_table(&table, &columns)
            )
        };
        backend.execute(&format!("{create}{rejects_sql}"), &[], ctx)
    };
    let mut outcome = load(false);
    if matches!(&outcome, Err(e) if e.to_string().contains("Maximum line size")) {
        // A field longer than DuckDB's default 2 MB line limit: retry once
        // with a larger limit.
        drop_quietly(backend, &staging, ctx);
        log::info!("Step {step_id}: retrying with max_line_size=32MB for long fields");
        outcome = load(true);
    }
    if let Err(e) = outcome {
        drop_quietly(backend, &staging, ctx);
        drop_quietly(backend, &rejects_staging, ctx);
        drop(transcoded);
        return Err(match e {
            Error::Cancelled(_) => e,
            e if cfg.columns.is_some() && e.to_string().contains("not found") => {
                Error::Config(format!(
                    "Step {step_id}: a column in `columns` is not in {}: {e}",
                    path.display()
                ))
            }
            // Not a CSV problem (out of memory, disk full …): still name the step and file.
            e => with_ragged_line(
                csv_error(step_id, &path, e)
                    .with_context(format!("Step {step_id}: loading {}", path.display())),
                cfg,
                &path,
                compression,
                &encoding,
            ),
        });
    }
    drop(transcoded);

    // DuckDB's sniffer can take a wider row for the header on small ragged
    // files and load nothing without an error: the first record's field
    // count (read by Rust) must match the table's.
    if cfg.columns.is_none() && cfg.on_bad_lines == OnBadLines::Error {
        if let Some(expected) = first_record_fields(cfg, &path, compression, &encoding) {
            let got = crate::backend::backend_columns(backend, &staging)?.len();
            if got != expected {
                drop_quietly(backend, &staging, ctx);
                let err = Error::Csv {
                    path: path.clone(),
                    line: None,
                    message: format!(
                        "Step {step_id}: rows have different field counts (the first has {expected})"
                    ),
                };
                return Err(with_ragged_line(err, cfg, &path, compression, &encoding));
            }
        }
    }

    let mut rows_skipped = 0u64;
    if cfg.on_bad_lines != OnBadLines::Error {
        rows_skipped = backend_count(backend, &rejects_staging)?;
        if cfg.on_bad_lines == OnBadLines::Reject {
            swap_in(
                backend,
                &rejects_staging,
                &format!("{step_id}__rejects"),
                ctx,
            )?;
        } else {
            drop_quietly(backend, &rejects_staging, ctx);
        }
    }

    swap_in(backend, &staging, step_id, ctx)?;
    let rows = backend_count(backend, step_id)?;
    ctx.log_metric("rows_read", Value::from(rows));
    if rows_skipped > 0 {
        ctx.log_metric("rows_skipped", Value::from(rows_skipped));
    }
    ctx.log_event(
        "extract_complete",
        json_obj(json!({
            "step_id": step_id, "table": step_id, "rows": rows, "rows_skipped": rows_skipped,
            "percent": 100.0, "seconds": started.elapsed().as_secs_f64(),
        })),
    );
    log::info!("Step {step_id}: loaded {rows} rows from {}", path.display());
    let mut out = json!({"table": step_id, "rows": rows});
    if rows_skipped > 0 {
        out["rows_skipped"] = Value::from(rows_skipped);
    }
    Ok(out)
}

/// `CREATE TABLE` for `columns` (name, DuckDB type) with its `VARCHAR` and
/// `VARCHAR[]` columns stored uncompressed (`compress_text: false`). DuckDB
/// refuses the clause on structs, so other types keep its compression.
pub fn uncompressed_text_table(table: &str, columns: &[(String, String)]) -> String {
    let defs = columns
        .iter()
        .map(|(name, ty)| {
            let using = if ty == "VARCHAR" || ty == "VARCHAR[]" {
                " USING COMPRESSION uncompressed"
            } else {
                ""
            };
            format!("{} {ty}{using}", quote_ident(name))
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("CREATE TABLE {table} ({defs});")
}

/// When DuckDB gave up without a line number (its sniffer fails on ragged
/// files), find the first ragged record ourselves.
fn with_ragged_line(
    err: Error,
    cfg: &ExtractorConfig,
    path: &Path,
    compression: Compression,
    encoding: &TextEncoding,
) -> Error {
    let Error::Csv {
        path: p,
        line: None,
        message,
    } = err
    else {
        return err;
    };
    let single = |s: &str| (s.len() == 1).then(|| s.as_bytes()[0]);
    let delimiter = match cfg.delimiter.as_str() {
        "\\t" => Some(b'\t'),
        d => single(d),
    };
    let quote = single(cfg.quotechar.as_deref().unwrap_or("\""));
    let found = match (delimiter, quote, encoding) {
        (Some(d), Some(q), TextEncoding::Native("utf-8" | "latin-1")) => {
            find_ragged_line(path, compression, d, q, cfg.skip_rows)
        }
        _ => None,
    };
    match found {
        Some((line, expected, got)) => Error::Csv {
            path: p,
            line: Some(line),
            message: format!(
                "Step {}: line {line} has {got} fields, expected {expected} (as in the first row). \
                 Fix the file, or set on_bad_lines to \"skip\" or \"reject\" to load the other rows",
                message.split(':').next().unwrap_or("").trim_start_matches("Step ").trim()
            ),
        },
        None => Error::Csv { path: p, line: None, message },
    }
}

/// The field count of the first record after `skip_rows` (header row
/// included), when Rust can read the file's dialect (explicit one-byte
/// delimiter and quote, UTF-8 or latin-1).
fn first_record_fields(
    cfg: &ExtractorConfig,
    path: &Path,
    compression: Compression,
    encoding: &TextEncoding,
) -> Option<usize> {
    let single = |s: &str| (s.len() == 1).then(|| s.as_bytes()[0]);
    let delimiter = match cfg.delimiter.as_str() {
        "\\t" => Some(b'\t'),
        d => single(d),
    }?;
    let quote = single(cfg.quotechar.as_deref().unwrap_or("\""))?;
    if cfg.comment.is_some() || !matches!(encoding, TextEncoding::Native("utf-8" | "latin-1")) {
        return None;
    }
    let header_row = match cfg.header {
        Some(Header::Row(n)) => n,
        _ => 0,
    };
    super::first_record_fields(
        path,
        compression,
        delimiter,
        quote,
        cfg.skip_rows + header_row,
    )
}

/// Lists the CSV files of a folder with a column → type guess for each.
fn discover(
    step_id: &str,
    dir: &Path,
    cfg: &ExtractorConfig,
    backend: &dyn SqlBackend,
) -> Result<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("Step {step_id}: listing {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            p.is_file()
                && [".csv", ".csv.gz", ".csv.zst", ".tsv"]
                    .iter()
                    .any(|s| name.ends_with(s))
        })
        .collect();
    files.sort();
    let mut schemas = Map::new();
    for f in &files {
        let compression = Compression::resolve(&cfg.compression, f)?;
        let encoding = match TextEncoding::parse(&cfg.encoding)? {
            TextEncoding::Native(n) => n,
            TextEncoding::Transcoded(_) => "utf-8",
        };
        let sql = format!(
            "DESCRIBE SELECT * FROM {}",
            read_csv_call("?", cfg, compression, encoding, &[])
        );
        let columns = match backend.query(&sql, &[Param::Text(f.to_string_lossy().into_owned())]) {
            Ok(rows) => {
                let mut m = Map::new();
                for row in rows {
                    if let (Some(Value::String(name)), Some(ty)) = (row.first(), row.get(1)) {
                        m.insert(name.clone(), ty.clone());
                    }
                }
                Value::Object(m)
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        schemas.insert(f.to_string_lossy().into_owned(), columns);
    }
    Ok(json!({
        "files": files.iter().map(|f| f.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "total_files": files.len(),
        "status": "success",
        "schemas": schemas,
    }))
}

fn prefix(step_id: &str, e: Error) -> Error {
    match e {
        Error::Config(m) => Error::Config(format!("Step {step_id}: {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{backend_columns, Database, NativeBackend, NullContext};
    use std::sync::Arc;

    fn backend() -> NativeBackend {
        NativeBackend::new(&Arc::new(Database::in_memory().unwrap())).unwrap()
    }

    fn cfg(v: Value) -> ExtractorConfig {
        ExtractorConfig::from_json("s", v).unwrap()
    }

    #[test]
    fn csv_buffer_shrinks_only_below_a_256mb_memory_limit() {
        let mb = 1_000_000;
        assert_eq!(csv_buffer_size(None, None), None);
        assert_eq!(csv_buffer_size(Some(500 * mb), None), None);
        assert_eq!(csv_buffer_size(Some(256 * mb), None), None);
        assert_eq!(csv_buffer_size(Some(64 * mb), None), Some(8 * mb));
        // Never under 4 MiB.
        assert_eq!(csv_buffer_size(Some(16 * mb), None), Some(4 * 1024 * 1024));
        // A small memory_limit decides, whatever the file.
        assert_eq!(csv_buffer_size(Some(64 * mb), Some(900 * mb)), Some(8 * mb));
    }

    #[test]
    fn files_over_32mb_get_the_32mb_buffer_spelled_out() {
        let mb = 1_000_000;
        for limit in [None, Some(256 * mb), Some(4000 * mb)] {
            assert_eq!(csv_buffer_size(limit, Some(33 * mb)), Some(32 * mb));
            assert_eq!(csv_buffer_size(limit, Some(1500 * mb)), Some(32 * mb));
            assert_eq!(csv_buffer_size(limit, Some(32 * mb)), None);
            assert_eq!(csv_buffer_size(limit, Some(14 * mb)), None);
            // Compressed: read as one stream, nothing to split.
            assert_eq!(csv_buffer_size(limit, None), None);
        }
    }

    #[test]
    fn uncompressed_text_table_forces_only_text_columns_and_quotes_names() {
        let columns = [
            ("id", "BIGINT"),
            ("a\"b", "VARCHAR"),
            ("tags", "VARCHAR[]"),
            ("s", "STRUCT(x VARCHAR)"),
        ]
        .map(|(n, t)| (n.to_string(), t.to_string()));
        let sql = uncompressed_text_table("\"t\"", &columns);
        assert_eq!(
            sql,
            "CREATE TABLE \"t\" (\"id\" BIGINT, \"a\"\"b\" VARCHAR USING COMPRESSION uncompressed, \
             \"tags\" VARCHAR[] USING COMPRESSION uncompressed, \"s\" STRUCT(x VARCHAR));"
        );
        // DuckDB accepts it and stores that text uncompressed, where a plain
        // table beside it (in a file: in-memory tables are never compressed)
        // gets DuckDB's compression.
        let dir = tempfile::tempdir().unwrap();
        let b = backend();
        let file = sql_string(&dir.path().join("f.duckdb").to_string_lossy());
        b.execute(&format!("ATTACH {file} AS f; USE f"), &[], &NullContext)
            .unwrap();
        let plain = columns
            .iter()
            .map(|(n, t)| format!("{} {t}", quote_ident(n)));
        let plain = format!("CREATE TABLE p ({});", plain.collect::<Vec<_>>().join(", "));
        let rows = "SELECT i, 'v' || (i % 3), ['x'], {'x': 'y'} FROM range(5000) r(i)";
        b.execute(
            &format!("{sql} {plain} INSERT INTO t {rows}; INSERT INTO p {rows}; CHECKPOINT"),
            &[],
            &NullContext,
        )
        .unwrap();
        let storage = |t: &str| {
            b.query(
                &format!(
                    "SELECT DISTINCT column_name, compression FROM pragma_storage_info('f.{t}') \
                     WHERE segment_type = 'VARCHAR' AND column_name <> 's' ORDER BY 1"
                ),
                &[],
            )
            .unwrap()
        };
        let text = |c: &str| vec![json!("a\"b"), json!(c)];
        let tags = |c: &str| vec![json!("tags"), json!(c)];
        assert_eq!(
            storage("t"),
            vec![text("Uncompressed"), tags("Uncompressed")]
        );
        // DuckDB 2.0 compresses such short strings with its dictionary + FSST scheme.
        assert_eq!(storage("p"), vec![text("DICT_FSST"), tags("DICT_FSST")]);
    }

    #[test]
    fn unknown_key_lists_the_valid_ones() {
        let err = ExtractorConfig::from_json("crm", json!({"path": "a.csv", "delimeter": ";"}))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("Step crm:"), "{text}");
        assert!(
            text.contains("delimeter")
                && text.contains("delimiter")
                && text.contains("on_bad_lines"),
            "{text}"
        );
    }

    #[test]
    fn loads_with_dtype_and_columns() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.csv");
        std::fs::write(&f, "id,zip,name\n1,00123,Ann\n2,04567,Bob\n").unwrap();
        let b = backend();
        let out = run_extract(
            "people",
            &cfg(json!({"path": f, "dtype": {"zip": "str"}, "columns": ["zip", "id"]})),
            &b,
            &NullContext,
        )
        .unwrap();
        assert_eq!(out, json!({"table": "people", "rows": 2}));
        assert_eq!(backend_columns(&b, "people").unwrap(), vec!["zip", "id"]);
        let zip = b
            .query_value("SELECT zip FROM people ORDER BY id LIMIT 1", &[])
            .unwrap();
        assert_eq!(zip, json!("00123"));
    }

    #[test]
    fn ragged_rows_error_skip_or_reject() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.csv");
        std::fs::write(&f, "a,b\n1,2\n3,4,5\n6,7\n").unwrap();
        let b = backend();
        let err = run_extract("r", &cfg(json!({"path": f})), &b, &NullContext).unwrap_err();
        match err {
            Error::Csv { line, .. } => assert_eq!(line, Some(3)),
            other => panic!("expected CsvError, got {other}"),
        }
        let out = run_extract(
            "r",
            &cfg(json!({"path": f, "on_bad_lines": "skip"})),
            &b,
            &NullContext,
        )
        .unwrap();
        assert_eq!(out, json!({"table": "r", "rows": 2, "rows_skipped": 1}));
        run_extract(
            "r",
            &cfg(json!({"path": f, "on_bad_lines": "reject"})),
            &b,
            &NullContext,
        )
        .unwrap();
        let rej = b
            .query("SELECT line, raw_line FROM r__rejects", &[])
            .unwrap();
        assert_eq!(rej, vec![vec![json!(3), json!("3,4,5")]]);
    }

    #[test]
    fn missing_file_names_the_absolute_path() {
        let err = run_extract(
            "m",
            &cfg(json!({"path": "no/such.csv"})),
            &backend(),
            &NullContext,
        )
        .unwrap_err();
        match err {
            Error::SourceNotFound { path, .. } => assert!(path.is_absolute()),
            other => panic!("{other}"),
        }
    }
}
