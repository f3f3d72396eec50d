//! The merge engine: five stages of SQL run through a [`SqlBackend`].
//!
//! `import_original` and `import_enriched` load file sources with the CSV
//! extractor; `consolidate` stacks every vendor row, with its normalised keys,
//! into one table shared by every step of the session that merges against the
//! same vendors; `match_merge` matches each original row on the first key (in
//! order) any vendor row shares, picks each field's value by strategy and
//! joins it back onto the original in its row order; `export` writes the
//! optional output file. Exactly one output row per original row, whatever
//! duplicates the vendors hold.
//!
//! Each stage records a fingerprint of its inputs and config in
//! `_duckmerge_stages` (see [`super::resume`]); a rerun skips the stages whose
//! fingerprint is unchanged.

use serde_json::{json, Map, Value};

use super::config::{KeyConfig, KeyNormalize, MergeConfig, OnConflict, SourceConfig, Strategy};
use super::resume::{
    columns_with_types, consolidated_table, file_identity, fingerprint, source_identity,
    source_table, StageLog,
};
use super::udf::FUNCTION;
use crate::backend::{
    backend_count, backend_count_ref, backend_relation_exists, describe_query, drop_quietly,
    drop_quietly_ref, quote_ident, sql_string, staging_name, swap_in, Progress, SqlBackend,
    StepContext,
};
use crate::csv::{
    resolve_input, run_extract, run_write, sniff_columns, uncompressed_text_table, ExtractorConfig,
    WritePlan, WriterConfig,
};
use crate::error::{Error, Result};
use crate::session::json_map;

/// The stages, in order, as named in events and logs.
pub const STAGES: [&str; 5] = [
    "import_original",
    "import_enriched",
    "consolidate",
    "match_merge",
    "export",
];

/// Bit position of the source index in `__dm_ord` (`src << 40 | rowid`):
/// one BIGINT that orders vendor rows by source, then row.
const ORD_SHIFT: u32 = 40;
/// The row part of `__dm_ord`.
const ORD_MASK: i64 = (1 << ORD_SHIFT) - 1;

/// What a merge produced.
#[derive(Debug, Clone)]
pub struct MergeOutput {
    pub table: String,
    pub rows: u64,
    pub stats: Value,
    /// Stages skipped because their inputs and config were unchanged.
    pub skipped: Vec<String>,
}

/// Emits a stage's progress event and log line.
struct Reporter<'a> {
    ctx: &'a dyn StepContext,
    step_id: &'a str,
}

impl Reporter<'_> {
    fn stage(&self, stage: usize, rows: u64, skipped: bool, message: String) {
        log::info!("[MergeEngine] {message}");
        let mut data = Map::new();
        data.insert("step_id".into(), json!(self.step_id));
        data.insert("stage".into(), json!(STAGES[stage]));
        data.insert("stage_index".into(), json!(stage + 1));
        data.insert("stage_count".into(), json!(STAGES.len()));
        data.insert(
            "percent".into(),
            json!(((stage + 1) as f64 / STAGES.len() as f64 * 100.0).round()),
        );
        data.insert("rows".into(), json!(rows));
        data.insert("skipped".into(), json!(skipped));
        data.insert("message".into(), json!(message));
        self.ctx.log_event("merge_progress", data);
    }

    fn skipped(&self, stage: usize, rows: u64, why: &str) {
        self.stage(
            stage,
            rows,
            true,
            format!("Skipped {}: {why}", STAGES[stage]),
        );
    }
}

/// The spec `duckmerge_normalize` takes for a key.
fn spec(key: &KeyConfig) -> String {
    match &key.normalize {
        KeyNormalize::Text => "text".into(),
        KeyNormalize::Email { canonical: true } => "email:canonical".into(),
        KeyNormalize::Email { canonical: false } => "email".into(),
        KeyNormalize::Phone {
            default_region: Some(r),
        } => format!("phone:{}", r.to_ascii_uppercase()),
        KeyNormalize::Phone {
            default_region: None,
        } => "phone".into(),
        KeyNormalize::Exact => "exact".into(),
    }
}

fn find_ci<'a>(columns: &'a [String], name: &str) -> Option<&'a String> {
    columns
        .iter()
        .find(|c| c.as_str() == name)
        .or_else(|| columns.iter().find(|c| c.eq_ignore_ascii_case(name)))
}

/// Takes the database's merge lock, waiting (and staying cancellable) while
/// another merge holds it.
fn wait_for_turn<'a>(
    lock: &'a std::sync::Mutex<()>,
    step_id: &str,
    ctx: &dyn StepContext,
) -> Result<std::sync::MutexGuard<'a, ()>> {
    let mut said = false;
    loop {
        match lock.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                if !said {
                    log::info!(
                        "[MergeEngine] Step {step_id}: waiting for another merge on this database to finish"
                    );
                    said = true;
                }
                ctx.check_cancel()?;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// Loads a file source into `table_for_file`, or returns the source's table.
fn import_source(
    step_id: &str,
    source: &SourceConfig,
    table_for_file: String,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<String> {
    match (&source.table, &source.path) {
        (Some(t), _) => Ok(t.clone()),
        (None, Some(p)) => {
            let cfg = extractor_config(step_id, source, p)?;
            run_extract(&table_for_file, &cfg, backend, ctx)?;
            Ok(table_for_file)
        }
        (None, None) => Err(Error::Config(format!(
            "Step {step_id}: a source has neither table nor path"
        ))),
    }
}

/// The smallest `memory_limit` at which `load_files` loads two files at
/// once. Below 256 MB the extractor shrinks DuckDB's CSV buffers to fit one
/// load (`csv_buffer_size`); two loads of 150,000-row files of 300-character
/// fields ran out of memory at 128MB and loaded at 200MB, and at 256MB with
/// 2, 3, 4 and 8 threads.
const SIDE_BY_SIDE_MEMORY: u64 = 256_000_000;

/// Loads file sources into their tables (`loads`: source, table), two at a
/// time when the backend lends a second connection (`SqlBackend::helper`)
/// and the memory_limit leaves room (`SIDE_BY_SIDE_MEMORY`): one CSV load
/// keeps about 1.4 of 2 cores busy, two side by side keep both
/// (the benchmark's four files: 5.1-5.3 s against 6.8-7.4 s one after the
/// other). Returns which loads finished, and the first error: a failure in
/// one stops the other (its statement is interrupted), and only the first
/// error is the cause. Ctrl-C reaches Python's main thread, this one, which
/// keeps checking for it while the helper works.
fn load_files(
    step_id: &str,
    loads: &[(&SourceConfig, String)],
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> (Vec<bool>, Option<Error>) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let loaded: Vec<AtomicBool> = loads.iter().map(|_| AtomicBool::new(false)).collect();
    let first_error: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    let fail = |e: Error| {
        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
        drop(slot);
        stop.store(true, SeqCst);
    };
    let lane = |b: &dyn SqlBackend, lane_ctx: &Lane<'_>| {
        while !stop.load(SeqCst) {
            let i = next.fetch_add(1, SeqCst);
            let Some((source, table)) = loads.get(i) else {
                break;
            };
            match import_source(step_id, source, table.clone(), b, lane_ctx) {
                Ok(_) => loaded[i].store(true, SeqCst),
                Err(e) => fail(e),
            }
        }
    };
    let main_lane = Lane {
        ctx,
        stop: &stop,
        main: true,
    };
    let room = crate::memory::memory_limit(backend)
        .ok()
        .flatten()
        .is_some_and(|limit| limit >= SIDE_BY_SIDE_MEMORY);
    let helper = if loads.len() >= 2 && room {
        backend.helper()
    } else {
        None
    };
    log::debug!(
        "Step {step_id}: loading {} source file(s) {}",
        loads.len(),
        if helper.is_some() {
            "two at a time"
        } else {
            "one at a time"
        }
    );
    match helper {
        None => lane(backend, &main_lane),
        Some(helper) => std::thread::scope(|scope| {
            let spawned = std::thread::Builder::new()
                .name("duckmerge-load-file".into())
                .spawn_scoped(scope, || {
                    let helper_lane = Lane {
                        ctx,
                        stop: &stop,
                        main: false,
                    };
                    lane(helper.as_ref(), &helper_lane)
                });
            lane(backend, &main_lane);
            let Ok(handle) = spawned else {
                return; // no thread: the main lane loaded every file
            };
            while !handle.is_finished() {
                if let Err(e) = ctx.check_cancel() {
                    fail(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if handle.join().is_err() {
                fail(Error::Arrow(format!(
                    "Step {step_id}: loading a source file failed unexpectedly"
                )));
            }
        }),
    }
    let error = first_error.into_inner().unwrap_or_else(|p| p.into_inner());
    let loaded = loaded.iter().map(|l| l.load(SeqCst)).collect();
    (loaded, error)
}

/// The ctx one of `load_files`' lanes sees: the step's own, stopped when the
/// other lane failed; only the main lane reports statement progress (two
/// loads would interleave theirs).
struct Lane<'a> {
    ctx: &'a dyn StepContext,
    stop: &'a std::sync::atomic::AtomicBool,
    main: bool,
}

impl StepContext for Lane<'_> {
    fn log_metric(&self, name: &str, value: Value) {
        self.ctx.log_metric(name, value)
    }
    fn log_event(&self, event: &str, data: Map<String, Value>) {
        self.ctx.log_event(event, data)
    }
    fn base_path(&self) -> Option<std::path::PathBuf> {
        self.ctx.base_path()
    }
    fn check_cancel(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.stop.load(SeqCst) {
            return Err(Error::Cancelled(
                "stopped: another source of this merge failed to load".into(),
            ));
        }
        let checked = self.ctx.check_cancel();
        if checked.is_err() {
            self.stop.store(true, SeqCst);
        }
        checked
    }
    fn on_progress(&self, progress: Progress) {
        if self.main {
            self.ctx.on_progress(progress)
        }
    }
    fn temp_dir(&self) -> std::path::PathBuf {
        self.ctx.temp_dir()
    }
}

fn extractor_config(step_id: &str, source: &SourceConfig, path: &str) -> Result<ExtractorConfig> {
    let mut cfg = source.csv_options.clone();
    cfg.insert("path".into(), Value::String(path.to_string()));
    ExtractorConfig::from_json(step_id, Value::Object(cfg))
}

/// A source's columns without loading it (None when not known cheaply).
fn peek_columns(
    step_id: &str,
    source: &SourceConfig,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<Option<Vec<String>>> {
    match (&source.table, &source.path) {
        (Some(t), _) => Ok(Some(
            columns_with_types(backend, t)?
                .into_iter()
                .map(|(c, _)| c)
                .collect(),
        )),
        (None, Some(p)) => Ok(sniff_columns(
            &extractor_config(step_id, source, p)?,
            backend,
            ctx,
        )),
        _ => Ok(None),
    }
}

/// A file source's `storage_options` (for `s3://` paths).
fn storage_options(source: &SourceConfig) -> crate::remote::StorageOptions {
    source
        .csv_options
        .get("storage_options")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// Checks every source before any work: tables exist, files exist.
fn check_sources(
    step_id: &str,
    cfg: &MergeConfig,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<()> {
    for s in std::iter::once(&cfg.original).chain(cfg.enriched.iter()) {
        if let Some(t) = &s.table {
            if !backend_relation_exists(backend, t)? {
                return Err(Error::table_not_found(t, Some(step_id)));
            }
        }
        if let Some(p) = s.path.as_ref().filter(|p| crate::remote::is_remote(p)) {
            // A HEAD request: a missing object is a SourceNotFoundError now,
            // before any work.
            extractor_config(step_id, s, p)?;
            crate::remote::head(p, &storage_options(s)).map_err(Error::from)?;
        } else if let Some(p) = &s.path {
            let path = resolve_input(p, ctx);
            if !path.exists() {
                return Err(Error::SourceNotFound {
                    what: format!("Step {step_id}: merge source file"),
                    path,
                });
            }
            extractor_config(step_id, s, p)?;
        }
    }
    Ok(())
}

/// Which columns take part, resolved against the sources' columns.
struct Plan {
    /// The original's key columns, in key order.
    orig_keys: Vec<String>,
    /// The fields brought from the vendors.
    fields: Vec<String>,
}

/// Resolves and checks key columns, fields and the recency column.
/// `vendor_cols` is every enriched column (across sources).
fn plan(
    step_id: &str,
    cfg: &MergeConfig,
    orig_cols: &[String],
    vendor_cols: &[String],
) -> Result<Plan> {
    let mut orig_keys = Vec::new();
    for k in &cfg.keys {
        let col = find_ci(orig_cols, &k.column).ok_or_else(|| {
            Error::Config(format!(
                "Step {step_id}: key column \"{}\" is not in the original (it has {orig_cols:?})",
                k.column
            ))
        })?;
        orig_keys.push(col.clone());
        if find_ci(vendor_cols, &k.enriched_column).is_none() {
            return Err(Error::Config(format!(
                "Step {step_id}: key column \"{}\" is in no enriched source (they have {vendor_cols:?})",
                k.enriched_column
            )));
        }
    }
    let is_key = |c: &str| {
        cfg.keys
            .iter()
            .any(|k| k.enriched_column.eq_ignore_ascii_case(c))
    };
    let fields: Vec<String> = match &cfg.fields {
        Some(f) => {
            for name in f {
                if find_ci(vendor_cols, name).is_none() {
                    return Err(Error::Config(format!(
                        "Step {step_id}: field \"{name}\" is in no enriched source (they have {vendor_cols:?})"
                    )));
                }
            }
            f.clone()
        }
        None => {
            let mut out: Vec<String> = Vec::new();
            for c in vendor_cols {
                if !is_key(c) && !out.iter().any(|o| o.eq_ignore_ascii_case(c)) {
                    out.push(c.clone());
                }
            }
            out
        }
    };
    if let Some(rc) = &cfg.recency_column {
        if find_ci(vendor_cols, rc).is_none() {
            return Err(Error::Config(format!(
                "Step {step_id}: recency_column \"{rc}\" is in no enriched source"
            )));
        }
    }
    Ok(Plan { orig_keys, fields })
}

/// Every column of several column lists, first spelling wins, in order.
fn union_columns<'a>(lists: impl IntoIterator<Item = &'a Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for cols in lists {
        for c in cols {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(c)) {
                out.push(c.clone());
            }
        }
    }
    out
}

/// Runs the merge. The result table is `output.table` or `step_id`.
pub fn run_merge(
    step_id: &str,
    cfg: &MergeConfig,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<MergeOutput> {
    let target = cfg
        .output
        .table
        .clone()
        .unwrap_or_else(|| step_id.to_string());
    crate::backend::check_table_name(&target)?;
    check_sources(step_id, cfg, backend, ctx)?;
    // Columns, keys and fields are checked before any work wherever the
    // sources' columns can be known without loading them.
    let orig_peek = peek_columns(step_id, &cfg.original, backend, ctx)?;
    let mut vendor_peek = Some(Vec::new());
    for s in &cfg.enriched {
        match (
            peek_columns(step_id, s, backend, ctx)?,
            vendor_peek.as_mut(),
        ) {
            (Some(cols), Some(all)) => all.push(cols),
            _ => vendor_peek = None,
        }
    }
    if let (Some(o), Some(v)) = (&orig_peek, &vendor_peek) {
        plan(step_id, cfg, o, &union_columns(v))?;
    }

    // Merges on one database share tables (the stage log, vendor and
    // consolidated tables): one at a time, the others wait here.
    let lock = backend.merge_lock();
    let _turn = match &lock {
        Some(lock) => Some(wait_for_turn(lock, step_id, ctx)?),
        None => None,
    };

    let started = std::time::Instant::now();
    // Freed memory goes back to the OS when RSS passes memory_limit + 20 %
    // while the merge runs (glibc keeps it in per-thread arenas otherwise).
    let _trimmer = crate::memory::TrimGuard::for_backend(backend);
    ctx.log_event(
        "merge_start",
        json_map(json!({"step_id": step_id, "table": target, "resume": cfg.resume})),
    );
    let log = StageLog::open(backend, ctx, step_id)?;
    let report = Reporter { ctx, step_id };
    let mut skipped: Vec<String> = Vec::new();

    // import_original and import_enriched: what is there already, then the
    // files still to load, two at a time where the backend lends a second
    // connection (see `load_files`).
    let fp_original = fingerprint(&json!({
        "stage": STAGES[0],
        "source": source_identity(&cfg.original, backend, ctx)?,
    }));
    let original = cfg
        .original
        .table
        .clone()
        .unwrap_or_else(|| format!("{step_id}__original"));
    let unchanged = cfg.resume
        && cfg.original.path.is_some()
        && log.finished(STAGES[0], &fp_original)?.is_some()
        && backend_relation_exists(backend, &original)?;

    // A consolidated table from an earlier run (of this or another step)
    // against the same vendors is reused.
    let mut identities = Vec::new();
    for s in &cfg.enriched {
        identities.push(source_identity(s, backend, ctx)?);
    }
    let fp_enriched = fingerprint(&json!({"stage": STAGES[1], "sources": identities}));
    let key_specs: Vec<Value> = cfg
        .keys
        .iter()
        .map(|k| json!([k.enriched_column.to_lowercase(), spec(k)]))
        .collect();
    let fp_cons = fingerprint(&json!({
        "stage": STAGES[2], "enriched": fp_enriched, "keys": key_specs,
    }));
    let cons = consolidated_table(&fp_cons);
    let mut reused = if cfg.resume {
        log.consolidated(&fp_cons)?
    } else {
        None
    };
    if let Some(info) = &reused {
        let tables: Vec<String> =
            serde_json::from_value(info["sources"].clone()).unwrap_or_default();
        let mut all_there = tables.len() == cfg.enriched.len();
        for t in &tables {
            all_there = all_there && backend_relation_exists(backend, t)?;
        }
        if !all_there {
            reused = None;
        }
    }

    let mut loads: Vec<(&SourceConfig, String)> = Vec::new();
    let mut rows_original = None;
    if unchanged {
        let rows = backend_count(backend, &original)?;
        rows_original = Some(rows);
        report.skipped(
            0,
            rows,
            &format!("\"{original}\" ({rows} rows) is unchanged since the last run"),
        );
        skipped.push(STAGES[0].into());
    } else {
        log.invalidate(STAGES[0])?;
        if cfg.original.table.is_none() {
            loads.push((&cfg.original, original.clone()));
        }
    }
    let loads_original = loads.len();
    // Vendor files load into tables named by their fingerprint, so an
    // unchanged file is loaded once per session, whichever step asks for
    // it; table sources are read where they are.
    let vendor_tables = if reused.is_none() {
        log.invalidate(STAGES[1])?;
        log.invalidate(STAGES[2])?;
        let mut tables = Vec::new();
        for (s, identity) in cfg.enriched.iter().zip(&identities) {
            let t = match &s.table {
                Some(t) => t.clone(),
                None => {
                    let t = source_table(&fingerprint(identity));
                    if !(cfg.resume && backend_relation_exists(backend, &t)?) {
                        loads.push((s, t.clone()));
                    }
                    t
                }
            };
            tables.push(t);
        }
        tables
    } else {
        Vec::new()
    };
    let (loaded, failure) = load_files(step_id, &loads, backend, ctx);
    if !unchanged {
        // Recorded when the original loaded, even if a vendor file failed:
        // the next run starts after it.
        if loads_original == 1 && !loaded[0] {
            return Err(failure.unwrap_or_else(|| Error::Cancelled("interrupted".into())));
        }
        let rows = backend_count(backend, &original)?;
        rows_original = Some(rows);
        log.record(STAGES[0], &fp_original, &json!({"table": original}))?;
        report.stage(
            0,
            rows,
            false,
            format!("Original: {rows} rows from \"{original}\""),
        );
    }
    if let Some(e) = failure {
        return Err(e);
    }
    // Counted above whether the original loaded now or was kept.
    let rows_original = match rows_original {
        Some(n) => n,
        None => backend_count(backend, &original)?,
    };

    let cons_info = match reused {
        Some(info) => {
            let total: u64 = info["rows_per_source"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            log.record(STAGES[1], &fp_enriched, &json!({}))?;
            log.record(STAGES[2], &fp_cons, &info)?;
            report.skipped(1, total, "the vendor sources are unchanged");
            report.skipped(
                2,
                total,
                &format!("reusing the consolidated vendor table \"{cons}\" ({total} rows)"),
            );
            skipped.extend([STAGES[1].to_string(), STAGES[2].to_string()]);
            info
        }
        None => consolidate(
            cfg,
            &vendor_tables,
            (&fp_enriched, &fp_cons),
            &log,
            &report,
            backend,
            ctx,
        )?,
    };
    let sources: Vec<String> = serde_json::from_value(cons_info["sources"].clone())
        .map_err(|e| Error::Config(format!("Step {step_id}: stage log unreadable: {e}")))?;

    // Columns as loaded; the plan is checked again (sources that could not
    // be peeked at are known now).
    let orig_types = columns_with_types(backend, &original)?;
    let orig_cols: Vec<String> = orig_types.iter().map(|(c, _)| c.clone()).collect();
    let src_cols: Vec<Vec<String>> = serde_json::from_value(cons_info["columns"].clone())
        .map_err(|e| Error::Config(format!("Step {step_id}: stage log unreadable: {e}")))?;
    let vendor_cols = union_columns(&src_cols);
    let plan = plan(step_id, cfg, &orig_cols, &vendor_cols)?;

    // match_merge
    let mut fp_match_input = json!({
        "stage": STAGES[3],
        "original": fp_original,
        "consolidated": fp_cons,
        "keys": cfg.keys.iter().map(|k| json!([k.column, spec(k)])).collect::<Vec<_>>(),
        "fields": plan.fields,
        "strategy": format!("{:?}", cfg.strategy),
        "field_strategies": format!("{:?}", cfg.field_strategies),
        "recency_column": cfg.recency_column,
        "on_conflict": format!("{:?}", cfg.on_conflict),
        "provenance": cfg.output.provenance,
        "sources": cfg.enriched.iter().map(|s| json!([s.name, s.priority])).collect::<Vec<_>>(),
        "target": target,
    });
    if !cfg.output.compress_text {
        // Only when set, so sessions from before the option keep resuming.
        fp_match_input["compress_text"] = json!(false);
    }
    let fp_match = fingerprint(&fp_match_input);
    // The export's fingerprint, and whether the file on disk is already the
    // one it would write (then it is kept).
    let export = match &cfg.output.path {
        Some(path) => {
            let abs = std::path::absolute(path).unwrap_or_else(|_| path.into());
            let fp = fingerprint(&json!({
                "stage": STAGES[4], "match": fp_match, "path": abs.to_string_lossy(),
            }));
            let written = if cfg.resume {
                log.finished(STAGES[4], &fp)?
            } else {
                None
            };
            let up_to_date =
                abs.is_file() && written.is_some_and(|w| w["file"] == file_identity(&abs));
            let wcfg =
                WriterConfig::from_json(step_id, json!({"path": path, "sort_columns": false}))?;
            Some(Export {
                path: path.clone(),
                abs,
                fp,
                up_to_date,
                wcfg,
            })
        }
        None => None,
    };
    let outputs = [
        target.clone(),
        format!("{target}__stats"),
        format!("{target}__unmatched"),
    ];
    let mut done = if cfg.resume {
        log.finished(STAGES[3], &fp_match)?
    } else {
        None
    };
    for t in &outputs {
        if done.is_some() && !backend_relation_exists(backend, t)? {
            done = None;
        }
    }
    let mut prewritten: Option<WritePlan> = None;
    let stats = match done {
        Some(stats) => {
            let rows = stats["rows_output"].as_u64().unwrap_or(0);
            report.skipped(
                3,
                rows,
                &format!("\"{target}\" ({rows} rows) is up to date with its inputs and config"),
            );
            skipped.push(STAGES[3].into());
            stats
        }
        None => {
            log.invalidate(STAGES[3])?;
            // A local output file that needs writing is written by the
            // match stage, from the query that creates the table.
            let write_beside = export
                .as_ref()
                .filter(|x| !x.up_to_date && !crate::remote::is_remote(&x.path))
                .map(|x| &x.wcfg);
            let (stats, plan) = match_merge(
                step_id,
                cfg,
                &plan,
                (&original, &orig_types),
                &cons,
                (&cons_info, &sources, &src_cols),
                rows_original,
                (&target, write_beside),
                &report,
                backend,
                ctx,
            )?;
            log.record(STAGES[3], &fp_match, &stats)?;
            prewritten = plan;
            stats
        }
    };
    ctx.log_event(
        "merge_stats",
        json_map(json!({"step_id": step_id, "stats": stats})),
    );
    let rows_output = stats["rows_output"].as_u64().unwrap_or(0);

    // export
    if let Some(Export {
        path,
        abs,
        fp: fp_export,
        up_to_date,
        wcfg,
    }) = &export
    {
        if *up_to_date {
            report.skipped(4, rows_output, &format!("{} is up to date", abs.display()));
            skipped.push(STAGES[4].into());
        } else {
            log.invalidate(STAGES[4])?;
            match prewritten.take() {
                // Written beside the table: only the rename is left.
                Some(plan) => {
                    plan.start_event(&target, ctx);
                    plan.finish(&target, rows_output, ctx)?;
                }
                None => {
                    run_write(step_id, &target, wcfg, backend, ctx)?;
                }
            }
            log.record(STAGES[4], fp_export, &json!({"file": file_identity(abs)}))?;
            report.stage(
                4,
                rows_output,
                false,
                format!("Wrote {rows_output} rows to {path}"),
            );
        }
    } else {
        report.stage(
            4,
            rows_output,
            false,
            format!("Merged {rows_output} rows into \"{target}\""),
        );
    }
    log.drop_unreferenced_consolidated()?;
    let seconds = started.elapsed().as_secs_f64();
    if !skipped.is_empty() {
        log::info!(
            "[MergeEngine] Resumed: skipped {} (unchanged since the last run)",
            skipped.join(", ")
        );
    }
    ctx.log_event(
        "merge_complete",
        json_map(json!({
            "step_id": step_id, "table": target, "rows": rows_output,
            "seconds": seconds, "skipped_stages": skipped, "stats": stats,
        })),
    );
    Ok(MergeOutput {
        table: target,
        rows: rows_output,
        stats,
        skipped,
    })
}

/// The output file of a merge: its path (as given and absolute), the export
/// stage's fingerprint, whether the file on disk is already what it would
/// write, and the writer config.
struct Export {
    path: String,
    abs: std::path::PathBuf,
    fp: String,
    up_to_date: bool,
    wcfg: WriterConfig,
}

/// Stacks every vendor row, with its source, row, order and normalised keys,
/// into the consolidated table; records both stages.
fn consolidate(
    cfg: &MergeConfig,
    tables: &[String],
    (fp_enriched, fp_cons): (&str, &str),
    log: &StageLog,
    report: &Reporter,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<Value> {
    let mut rows_per_source = Vec::new();
    let mut duplicates = Vec::new();
    let mut columns = Vec::new();
    for t in tables {
        let cols: Vec<String> = columns_with_types(backend, t)?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let q = quote_ident(t);
        // Exact duplicates, counted by a hash of the whole row (a fixed-size
        // distinct set instead of the wide rows themselves).
        let row_hash = if cols.is_empty() {
            "0".to_string()
        } else {
            let list: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
            format!("hash({})", list.join(", "))
        };
        let row = backend.query(
            &format!("SELECT count(*), count(DISTINCT {row_hash}) FROM {q}"),
            &[],
        )?;
        let n = row
            .first()
            .and_then(|r| r.first())
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let distinct = row
            .first()
            .and_then(|r| r.get(1))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        rows_per_source.push(n);
        duplicates.push(n.saturating_sub(distinct));
        columns.push(cols);
    }
    let total: u64 = rows_per_source.iter().sum();
    log.record(
        STAGES[1],
        fp_enriched,
        &json!({"rows_per_source": rows_per_source}),
    )?;
    report.stage(
        1,
        total,
        false,
        format!(
            "Enriched: {} sources, {total} rows ({})",
            tables.len(),
            cfg.enriched
                .iter()
                .zip(&rows_per_source)
                .map(|(s, n)| format!("{}: {n}", s.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let selects: Vec<String> = tables
        .iter()
        .zip(&columns)
        .enumerate()
        .map(|(i, (table, cols))| {
            let mut parts = vec![
                format!("CAST({i} AS INTEGER) AS __dm_src"),
                "rowid AS __dm_row".to_string(),
                format!("(CAST({i} AS BIGINT) << {ORD_SHIFT}) | rowid AS __dm_ord"),
            ];
            for (j, k) in cfg.keys.iter().enumerate() {
                parts.push(match find_ci(cols, &k.enriched_column) {
                    Some(c) => format!(
                        "{FUNCTION}(CAST({} AS VARCHAR), {}) AS __dm_k{j}",
                        quote_ident(c),
                        sql_string(&spec(k))
                    ),
                    None => format!("CAST(NULL AS VARCHAR) AS __dm_k{j}"),
                });
            }
            // Only what matching needs: values are read from the source
            // tables by `__dm_ord` later, so vendor rows are not copied.
            format!("(SELECT {} FROM {})", parts.join(", "), quote_ident(table))
        })
        .collect();
    let cons = consolidated_table(fp_cons);
    let staging = staging_name();
    let created = backend.execute(
        &format!(
            "CREATE TABLE {} AS {}",
            quote_ident(&staging),
            selects.join(" UNION ALL ")
        ),
        &[],
        ctx,
    );
    if let Err(e) = created {
        drop_quietly(backend, &staging, ctx);
        return Err(e);
    }
    swap_in(backend, &staging, &cons, ctx)?;
    let info = json!({
        "table": cons,
        "sources": tables,
        "rows_per_source": rows_per_source,
        "duplicates": duplicates,
        "columns": columns,
    });
    log.record(STAGES[2], fp_cons, &info)?;
    report.stage(
        2,
        total,
        false,
        format!("Consolidated {total} vendor rows into \"{cons}\""),
    );
    Ok(info)
}

/// The in-memory database the `match_merge` stage keeps its working tables
/// in (keys, matches, picks, values). They live only while the stage runs:
/// in memory they are neither compressed nor written to the session's file
/// (the 1M-row benchmark's stage: 16.3-18.1 s against 19.2-20.5 s, three
/// alternated runs per build). DuckDB spills them to the temp directory
/// past `memory_limit`, and a crash leaves nothing behind.
pub use crate::backend::SCRATCH_DB;

/// Attaches `SCRATCH_DB` to the connection's database unless it is there.
/// It stays attached (another merge may be using it) and is empty between
/// merges.
fn attach_scratch(backend: &dyn SqlBackend, ctx: &dyn StepContext) -> Result<()> {
    backend.execute(
        &format!(
            "ATTACH IF NOT EXISTS ':memory:' AS {}",
            quote_ident(SCRATCH_DB)
        ),
        &[],
        ctx,
    )
}

/// A fresh table in `SCRATCH_DB`, as a quoted SQL reference.
fn scratch_table() -> String {
    format!(
        "{}.main.{}",
        quote_ident(SCRATCH_DB),
        quote_ident(&staging_name())
    )
}

/// Bits of `__dm_ord` (source and row); a strategy's rank goes above them.
const ORD_BITS: u32 = ORD_SHIFT + 6;
/// Rows per slice of the value fetch (original rows), and half the rows per
/// slice of the value-picking aggregate (contributing vendor rows): what one
/// statement holds at once. `DUCKMERGE_MERGE_SLICE_ROWS` overrides it (tests
/// use tiny slices). Each aggregate slice scans all vendor rows again, so
/// its slices are twice as large: the 1M-row benchmark (2.07M contributing
/// rows) runs in one slice (aggregate 4.3 s -> 3.0 s), and the 10M-row merge
/// still fits a 500MB memory_limit (README). Value-fetch slices of 4M
/// original rows ran out of memory there.
fn slice_rows() -> u64 {
    std::env::var("DUCKMERGE_MERGE_SLICE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &u64| *n > 0)
        .unwrap_or(2_000_000)
}

/// Rows per slice of one field's value fetch (or of a source's unmatched
/// rows): `base`, or fewer when the values are wide. Each slice sorts its
/// rows back into order, values and all, and DuckDB's sort needs them in
/// memory at once. Counting `width + PER_ROW` bytes a row: 150,000 values of
/// 300 characters (85 % of a 64MB memory_limit) ran out of memory, 200
/// characters (62 %) did not; on the 10M-row benchmark at 500MB, 4M-row
/// slices (55-90 % for its 5-48-byte fields) ran out, 2M-row ones (28-45 %)
/// did not. So a slice holds at most 45 % of `memory_limit`, and never fewer
/// than 2,048 rows.
fn value_slice_rows(base: u64, memory_limit: Option<u64>, width: u64) -> u64 {
    /// Sort bytes per row besides the value: its row number, the value's
    /// string header and the sort's own bookkeeping.
    const PER_ROW: u64 = 64;
    match memory_limit {
        Some(limit) => (limit / 20 * 9 / (width + PER_ROW)).clamp(2_048, base.max(2_048)),
        None => base,
    }
}

/// What the slicing of wide values needs to know: the session's
/// `memory_limit` and average widths in bytes.
struct Widths {
    memory_limit: Option<u64>,
    /// Per field, in the source where its values are widest.
    fields: Vec<u64>,
    /// Per source, a whole row.
    rows: Vec<u64>,
}

/// Measures [`Widths`] on each source's text columns (values of other types
/// count 16 bytes).
fn measure_widths(
    backend: &dyn SqlBackend,
    fields: &[String],
    sources: &[String],
) -> Result<Widths> {
    const OTHER: u64 = 16;
    let mut widths = Widths {
        memory_limit: crate::memory::memory_limit(backend)?,
        fields: vec![OTHER; fields.len()],
        rows: Vec::with_capacity(sources.len()),
    };
    for src in sources {
        let types = columns_with_types(backend, src)?;
        let text: Vec<&String> = types
            .iter()
            .filter(|(_, ty)| ty == "VARCHAR")
            .map(|(c, _)| c)
            .collect();
        let others = (types.len() - text.len()) as u64 * OTHER;
        if text.is_empty() {
            widths.rows.push(others);
            continue;
        }
        let avgs: Vec<String> = text
            .iter()
            .map(|c| format!("CAST(avg(strlen({})) AS BIGINT)", quote_ident(c)))
            .collect();
        let measure = |sample: &str| {
            backend.query(
                &format!(
                    "SELECT count(*), {} FROM {}{sample}",
                    avgs.join(", "),
                    quote_ident(src)
                ),
                &[],
            )
        };
        // A sample of whole vectors, read without scanning the rest (0.01 s
        // instead of 0.15-0.30 s for an 800k-row benchmark vendor); the
        // whole table when that gives too few rows (small tables).
        let mut row = measure(" TABLESAMPLE 2% (system, 7)")?;
        let sampled = row
            .first()
            .and_then(|r| r.first())
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if sampled < 4_096 {
            row = measure("")?;
        }
        let avg = |k: usize| {
            row.first()
                .and_then(|r| r.get(k + 1))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        widths
            .rows
            .push(others + (0..text.len()).map(avg).sum::<u64>());
        for (i, f) in fields.iter().enumerate() {
            if let Some(k) = text.iter().position(|c| c.eq_ignore_ascii_case(f)) {
                widths.fields[i] = widths.fields[i].max(avg(k));
            }
        }
    }
    Ok(widths)
}

/// Ranks are capped to what fits above `ORD_BITS` in a BIGINT.
const RANK_CAP: i64 = 65_535;

/// The aggregate that picks a field's contributing row, as its `__dm_ord`:
/// the best row by the strategy's rank among those with a non-null value,
/// ties broken by source order, then row order. Only fixed-size states (a
/// BIGINT per group), so the aggregate spills to disk like the rest of the
/// query instead of holding strings in memory; values are fetched by
/// `__dm_ord` afterwards.
fn pick(strategy: Strategy, q: &str, i: usize) -> String {
    let mask = (1i64 << ORD_BITS) - 1;
    let ranked = |rank: String| {
        format!("min((CAST(least({rank}, {RANK_CAP}) AS BIGINT) << {ORD_BITS}) | __dm_ord)")
    };
    let agg = match strategy {
        Strategy::First => return format!("min(__dm_ord) FILTER (WHERE {q} IS NOT NULL)"),
        Strategy::Last => return format!("max(__dm_ord) FILTER (WHERE {q} IS NOT NULL)"),
        Strategy::Longest => ranked(format!(
            "{RANK_CAP} - least(length(CAST({q} AS VARCHAR)), {RANK_CAP})"
        )),
        Strategy::MostComplete => ranked(format!("{RANK_CAP} - __dm_nn")),
        Strategy::SourcePriority => ranked("__dm_prio_rank".into()),
        Strategy::MostRecent => ranked("__dm_recency_rank".into()),
        Strategy::MostFrequent => ranked(format!("{RANK_CAP} - __dm_freq{i}")),
    };
    format!("{agg} FILTER (WHERE {q} IS NOT NULL) & {mask}")
}

/// Bits of the hash that [`conflict_state`] keeps.
const CONFLICT_HASH_BITS: u32 = 31;
/// The low half of a conflict state (a complemented hash).
const CONFLICT_MASK: i64 = (1 << CONFLICT_HASH_BITS) - 1;

/// An aggregate telling whether a field's non-null values in a group all
/// hash alike, in one BIGINT state: `bit_or` of the value's 31-bit hash `h`
/// (high half) beside its complement (low half) gives OR(h) and NOT AND(h);
/// the values agree when OR(h) = AND(h). Two aggregates (`min(hash)` /
/// `max(hash)`) cost about twice as much on the 1M-row benchmark (aggregate
/// 4.3 s -> 2.7 s). A disagreement is missed only when every differing value
/// has the same 31-bit hash. NULL when the group has no non-null value.
fn conflict_state(q: &str) -> String {
    let (bits, mask) = (CONFLICT_HASH_BITS, CONFLICT_MASK);
    let h = format!("CAST(hash({q}) >> {} AS BIGINT)", 64 - bits);
    format!("bit_or(CASE WHEN {q} IS NOT NULL THEN ({h} << {bits}) | xor({h}, {mask}) END)")
}

/// True when the values behind a [`conflict_state`] disagreed.
fn conflict_flag(state: &str) -> String {
    let (bits, mask) = (CONFLICT_HASH_BITS, CONFLICT_MASK);
    format!("coalesce(xor({state} >> {bits}, {state} & {mask}) <> {mask}, false)")
}

/// Matches, picks the fields' values and writes the output table, its
/// `__stats` and `__unmatched` tables. Returns the stats.
#[allow(clippy::too_many_arguments)]
fn match_merge(
    step_id: &str,
    cfg: &MergeConfig,
    plan: &Plan,
    (original, orig_types): (&str, &[(String, String)]),
    cons: &str,
    (cons_info, sources, src_cols): (&Value, &[String], &[Vec<String>]),
    rows_original: u64,
    (target, write_beside): (&str, Option<&WriterConfig>),
    report: &Reporter,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<(Value, Option<WritePlan>)> {
    attach_scratch(backend, ctx)?;
    // The stage's working tables, as SQL references into the scratch
    // database (see `attach_scratch`).
    let (ok, m, a, p) = (
        scratch_table(),
        scratch_table(),
        scratch_table(),
        scratch_table(),
    );
    let value_tables: Vec<String> = plan.fields.iter().map(|_| scratch_table()).collect();
    let mut temp = vec![ok.clone(), m.clone(), a.clone(), p.clone()];
    temp.extend(value_tables.iter().cloned());
    // The tables put side by side with POSITIONAL JOIN must keep their
    // ORDER BY on disk; a host connection may have turned that off.
    let keeps_order = backend
        .query_value("SELECT current_setting('preserve_insertion_order')", &[])?
        .as_bool()
        .unwrap_or(true);
    if !keeps_order {
        backend.execute("SET preserve_insertion_order = true", &[], ctx)?;
    }
    let result = (|| -> Result<(Value, Option<WritePlan>)> {
        let run = |sql: String| backend.execute(&sql, &[], ctx);
        let e = quote_ident(cons);
        let orig = quote_ident(original);
        let key_cols: Vec<String> = cfg
            .keys
            .iter()
            .zip(&plan.orig_keys)
            .enumerate()
            .map(|(j, (k, c))| {
                format!(
                    "{FUNCTION}(CAST({} AS VARCHAR), {}) AS __dm_k{j}",
                    quote_ident(c),
                    sql_string(&spec(k))
                )
            })
            .collect();
        run(format!(
            "CREATE TABLE {ok} AS SELECT rowid AS __dm_row, {} FROM {orig}",
            key_cols.join(", "),
        ))?;
        for j in 0..cfg.keys.len() {
            let select = format!(
                "SELECT o.__dm_row AS __dm_o_row, {j} AS __dm_j, e.__dm_src, e.__dm_ord \
                 FROM {ok} o JOIN {e} e ON o.__dm_k{j} = e.__dm_k{j}"
            );
            if j == 0 {
                run(format!("CREATE TABLE {m} AS {select}"))?;
            } else {
                // Only rows no earlier key matched: the first matching key wins.
                run(format!(
                    "INSERT INTO {m} {select} WHERE o.__dm_row NOT IN (SELECT __dm_o_row FROM {m})"
                ))?;
            }
        }

        // Pick each field's row among the contributing vendor rows.
        let strategy_for = |f: &str| {
            cfg.field_strategies
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(f))
                .map(|(_, s)| *s)
                .unwrap_or(cfg.strategy)
        };
        let strategies: Vec<Strategy> = plan.fields.iter().map(|f| strategy_for(f)).collect();
        let mut extra = Vec::new();
        let mut conflict_flags = Vec::new();
        let mut aggs = vec![
            "min(__dm_j) AS __dm_j".to_string(),
            // The contributing sources as a bit set (fixed-size state).
            "bit_or(CAST(1 AS BIGINT) << __dm_src) AS __dm_srcs".to_string(),
        ];
        for (i, (f, s)) in plan.fields.iter().zip(&strategies).enumerate() {
            let q = quote_ident(f);
            if *s == Strategy::MostFrequent {
                extra.push(format!(
                    "count(e.{q}) OVER (PARTITION BY m.__dm_o_row, e.{q}) AS __dm_freq{i}"
                ));
            }
            aggs.push(format!("{} AS __dm_pick{i}", pick(*s, &q, i)));
            // Contributing rows disagreed: one BIGINT state per field (see
            // `conflict_state`), turned into a flag around the aggregate.
            aggs.push(format!("{} AS __dm_h{i}", conflict_state(&q)));
            conflict_flags.push(format!(
                "{} AS __dm_c{i}",
                conflict_flag(&format!("__dm_h{i}"))
            ));
        }
        if strategies.contains(&Strategy::MostComplete) {
            let nn = plan
                .fields
                .iter()
                .map(|f| format!("CAST(e.{} IS NOT NULL AS INTEGER)", quote_ident(f)))
                .collect::<Vec<_>>()
                .join(" + ");
            extra.push(format!("{nn} AS __dm_nn"));
        }
        if strategies.contains(&Strategy::SourcePriority) {
            // Rank 0 = highest priority; equal priorities keep source order.
            let n = cfg.enriched.len() as i64;
            let mut order: Vec<(i64, usize)> = cfg
                .enriched
                .iter()
                .enumerate()
                .map(|(i, s)| (s.priority.unwrap_or(n - i as i64), i))
                .collect();
            order.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
            let cases = order
                .iter()
                .enumerate()
                .map(|(rank, (_, src))| format!("WHEN {src} THEN {rank}"))
                .collect::<Vec<_>>()
                .join(" ");
            extra.push(format!("CASE e.__dm_src {cases} END AS __dm_prio_rank"));
        }
        if strategies.contains(&Strategy::MostRecent) {
            extra.push(
                "row_number() OVER (PARTITION BY m.__dm_o_row ORDER BY e.__dm_recency DESC NULLS LAST, \
                 e.__dm_ord) - 1 AS __dm_recency_rank"
                    .to_string(),
            );
        }
        let field_cols: String = plan
            .fields
            .iter()
            .map(|f| format!(", e.{}", quote_ident(f)))
            .collect();
        let extra_sql: String = extra.iter().map(|x| format!(", {x}")).collect();
        // The vendor rows with their fields, read from the source tables.
        let ord = |i: usize| format!("(CAST({i} AS BIGINT) << {ORD_SHIFT}) | rowid");
        let vendor_rows = sources
            .iter()
            .zip(src_cols)
            .enumerate()
            .map(|(i, (t, cols))| {
                let mut parts = vec![
                    format!("CAST({i} AS INTEGER) AS __dm_src"),
                    format!("{} AS __dm_ord", ord(i)),
                ];
                for f in &plan.fields {
                    if let Some(c) = find_ci(cols, f) {
                        parts.push(format!("{} AS {}", quote_ident(c), quote_ident(f)));
                    }
                }
                if let Some(rc) = cfg.recency_column.as_ref().and_then(|r| find_ci(cols, r)) {
                    parts.push(format!("{} AS __dm_recency", quote_ident(rc)));
                }
                format!("(SELECT {} FROM {})", parts.join(", "), quote_ident(t))
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL BY NAME ");
        // In slices of the original's rows, so one aggregate never holds
        // more than about 2 x `slice_rows()` contributing rows (10M originals
        // would not fit in a 500MB memory_limit at once).
        let contributing = backend_count_ref(backend, &m)?;
        let slice_size = slice_rows();
        let widths = measure_widths(backend, &plan.fields, sources)?;
        // `most_frequent` and `most_recent` rank rows with a window, which
        // holds the contributing rows, every field's value included (150,000
        // rows with a 300-character field in two sources ran out of memory
        // at 64MB under `most_frequent`): wide fields get smaller slices.
        let windowed = strategies
            .iter()
            .any(|s| matches!(s, Strategy::MostFrequent | Strategy::MostRecent));
        let per_slice = if windowed {
            let row: u64 = widths.fields.iter().sum();
            value_slice_rows(2 * slice_size, widths.memory_limit, row)
        } else {
            2 * slice_size
        };
        let slices = contributing.div_ceil(per_slice).max(1);
        for slice in 0..slices {
            let m_slice = if slices == 1 {
                m.clone()
            } else {
                format!("(SELECT * FROM {m} WHERE __dm_o_row % {slices} = {slice})")
            };
            let body = format!(
                "WITH c AS (SELECT m.__dm_o_row, m.__dm_j, e.__dm_src, \
                   e.__dm_ord{field_cols}{extra_sql} FROM {m_slice} m JOIN ({vendor_rows}) e \
                   ON e.__dm_ord = m.__dm_ord) \
                 SELECT __dm_o_row, {} FROM c GROUP BY __dm_o_row",
                aggs.join(", ")
            );
            let body = if conflict_flags.is_empty() {
                body
            } else {
                let states: Vec<String> = (0..plan.fields.len())
                    .map(|i| format!("__dm_h{i}"))
                    .collect();
                format!(
                    "SELECT * EXCLUDE ({}), {} FROM ({body})",
                    states.join(", "),
                    conflict_flags.join(", ")
                )
            };
            if slice == 0 {
                run(format!("CREATE TABLE {a} AS {body}"))?;
            } else {
                run(format!("INSERT INTO {a} {body}"))?;
            }
        }
        let matched = backend_count_ref(backend, &a)?;
        let rate = if rows_original == 0 {
            0.0
        } else {
            matched as f64 / rows_original as f64
        };

        // Everything below is aligned with the original's rows, in its row
        // order, and put side by side with POSITIONAL JOIN: no hash table
        // holds the wide rows, so memory stays bounded.
        run(format!(
            "CREATE TABLE {p} AS SELECT o.__dm_r, a.* EXCLUDE (__dm_o_row) \
             FROM (SELECT rowid AS __dm_r FROM {orig}) o \
             LEFT JOIN {a} a ON a.__dm_o_row = o.__dm_r ORDER BY o.__dm_r"
        ))?;
        // A slice's sort holds its rows' values, so wide text gets smaller
        // slices (see `value_slice_rows`).
        for (i, (f, t)) in plan.fields.iter().zip(&value_tables).enumerate() {
            let slice_size = value_slice_rows(slice_size, widths.memory_limit, widths.fields[i]);
            let value_slices = rows_original.div_ceil(slice_size).max(1);
            // This field's values in every source that has it.
            let values = sources
                .iter()
                .zip(src_cols)
                .enumerate()
                .filter_map(|(j, (src, cols))| {
                    find_ci(cols, f).map(|c| {
                        format!(
                            "SELECT {} AS __dm_ord, {} AS __dm_v FROM {}",
                            ord(j),
                            quote_ident(c),
                            quote_ident(src)
                        )
                    })
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            // In slices of the original's rows (in order), so the join's
            // build side and the sort stay small whatever the row count.
            for slice in 0..value_slices {
                let (lo, hi) = (slice * slice_size, (slice + 1) * slice_size);
                let body = format!(
                    "SELECT e.__dm_v FROM (SELECT * FROM {p} WHERE rowid >= {lo} AND rowid < {hi}) p \
                     LEFT JOIN ({values}) e ON e.__dm_ord = p.__dm_pick{i} ORDER BY p.__dm_r"
                );
                if slice == 0 {
                    run(format!("CREATE TABLE {t} AS {body}"))?;
                } else {
                    run(format!("INSERT INTO {t} {body}"))?;
                }
            }
        }

        // The output: the original's columns, then the fields, then provenance.
        let value = |i: usize| format!("v{i}.__dm_v");
        let mut select = Vec::new();
        let mut overlapping = Vec::new();
        for (c, ty) in orig_types {
            let oc = format!("o.{}", quote_ident(c));
            match plan.fields.iter().position(|f| f.eq_ignore_ascii_case(c)) {
                Some(i) if cfg.on_conflict != OnConflict::KeepBoth => {
                    overlapping.push((i, c.clone()));
                    let ev = format!("TRY_CAST({} AS {ty})", value(i));
                    let expr = match cfg.on_conflict {
                        OnConflict::Fill => format!("coalesce({oc}, {ev})"),
                        _ => format!("coalesce({ev}, {oc})"),
                    };
                    select.push(format!("{expr} AS {}", quote_ident(c)));
                }
                Some(i) => {
                    overlapping.push((i, c.clone()));
                    select.push(oc);
                }
                None => select.push(oc),
            }
        }
        for (i, f) in plan.fields.iter().enumerate() {
            if !overlapping.iter().any(|(j, _)| *j == i) {
                select.push(format!("{} AS {}", value(i), quote_ident(f)));
            }
        }
        if cfg.on_conflict == OnConflict::KeepBoth {
            for (i, _) in &overlapping {
                select.push(format!(
                    "{} AS {}",
                    value(*i),
                    quote_ident(&format!("{}_enriched", plan.fields[*i]))
                ));
            }
        }
        if cfg.output.provenance {
            let key_names = cfg
                .keys
                .iter()
                .map(|k| sql_string(&k.column))
                .collect::<Vec<_>>()
                .join(", ");
            let src_names = cfg
                .enriched
                .iter()
                .map(|s| sql_string(&s.name))
                .collect::<Vec<_>>()
                .join(", ");
            select.push(
                "CASE WHEN p.__dm_j IS NULL THEN 'unmatched' ELSE 'matched' END AS _match_status"
                    .into(),
            );
            select.push(format!("[{key_names}][p.__dm_j + 1] AS _match_key"));
            select.push(format!(
                "list_filter([{src_names}], lambda s, i: \
                 coalesce((p.__dm_srcs >> (i - 1)) & 1, 0) = 1) AS _match_sources"
            ));
        }
        let joins: String = value_tables
            .iter()
            .enumerate()
            .map(|(i, t)| format!(" POSITIONAL JOIN {t} v{i}"))
            .collect();
        let out_staging = staging_name();
        let query = format!(
            "SELECT {} FROM {orig} o POSITIONAL JOIN {p} p{joins}",
            select.join(", ")
        );
        let create = if cfg.output.compress_text {
            format!("CREATE TABLE {} AS {query}", quote_ident(&out_staging))
        } else {
            let columns = describe_query(backend, &query)?;
            let table = quote_ident(&out_staging);
            format!(
                "{} INSERT INTO {table} {query};",
                uncompressed_text_table(&table, &columns)
            )
        };
        // The output file is written from the same query while the table is
        // created (the session's database runs both at once: this statement
        // is single-threaded), not read back from the table afterwards. If
        // that fails, the export stage writes it from the table as usual.
        let not_beside = |e: Error| {
            log::debug!("Step {step_id}: the export stage writes the file ({e})");
        };
        let write_plan = write_beside.and_then(|wcfg| {
            query_columns(backend, &query)
                .and_then(|cols| WritePlan::new(step_id, wcfg, &cols, target))
                .map_err(not_beside)
                .ok()
        });
        let created = match &write_plan {
            Some(w) => backend
                .execute_pair(&create, &w.copy_sql(&format!("({query})")), ctx)
                .map(|side| side.map_err(not_beside).is_ok()),
            None => run(create).map(|()| false),
        };
        let write_plan = match created {
            Ok(written) => write_plan.filter(|_| written),
            Err(e) => {
                drop_quietly(backend, &out_staging, ctx);
                return Err(e);
            }
        };
        // The fields' values are in the output now: their tables go before
        // the stats and unmatched rows fill the memory again (1M-row
        // benchmark: peak RSS 697-740 MB with them kept to the end).
        for t in &value_tables {
            drop_quietly_ref(backend, t, ctx);
        }
        swap_in(backend, &out_staging, target, ctx)?;
        let rows_output = backend_count(backend, target)?;

        let stats = merge_stats(
            cfg,
            plan,
            (original, &overlapping),
            (&a, &m, &p, cons),
            (cons_info, sources, src_cols),
            (rows_original, rows_output, matched),
            (target, &widths),
            backend,
            ctx,
        )?;
        // Reported when the stage's work is done (output table, its file
        // when written beside it, stats), so event times measure the stage.
        report.stage(
            3,
            matched,
            false,
            format!("Matched {matched} rows ({:.1}% match rate)", rate * 100.0),
        );
        Ok((stats, write_plan))
    })();
    for t in &temp {
        drop_quietly_ref(backend, t, ctx);
    }
    if !keeps_order {
        let _ = backend.execute("SET preserve_insertion_order = false", &[], ctx);
    }
    result.map_err(|e| e.with_context(format!("Step {step_id}, stage match_merge")))
}

/// The column names a query returns, in order (bound, not run).
fn query_columns(backend: &dyn SqlBackend, query: &str) -> Result<Vec<String>> {
    Ok(describe_query(backend, query)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

fn count_by(backend: &dyn SqlBackend, sql: &str) -> Result<Vec<(i64, u64)>> {
    Ok(backend
        .query(sql, &[])?
        .into_iter()
        .filter_map(|r| Some((r.first()?.as_i64()?, r.get(1)?.as_u64()?)))
        .collect())
}

/// The stats, also stored as `<target>__stats`; the vendor rows that
/// contributed to no original row go to `<target>__unmatched`.
#[allow(clippy::too_many_arguments)]
fn merge_stats(
    cfg: &MergeConfig,
    plan: &Plan,
    (original, overlapping): (&str, &[(usize, String)]),
    (a, m, p, cons): (&str, &str, &str, &str),
    (cons_info, sources, src_cols): (&Value, &[String], &[Vec<String>]),
    (rows_original, rows_output, matched): (u64, u64, u64),
    (target, widths): (&str, &Widths),
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<Value> {
    let e = quote_ident(cons);
    let names: Vec<&str> = cfg.enriched.iter().map(|s| s.name.as_str()).collect();
    let by_source = |counts: Vec<(i64, u64)>| -> Map<String, Value> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let c = counts
                    .iter()
                    .find(|(s, _)| *s == i as i64)
                    .map(|(_, c)| *c)
                    .unwrap_or(0);
                (n.to_string(), json!(c))
            })
            .collect()
    };
    let per_src = |key: &str| -> Map<String, Value> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), cons_info[key][i].clone()))
            .collect()
    };
    let per_key_counts = count_by(
        backend,
        &format!("SELECT __dm_j, count(*) FROM {a} GROUP BY 1"),
    )?;
    let per_key: Map<String, Value> = cfg
        .keys
        .iter()
        .enumerate()
        .map(|(j, k)| {
            let n = per_key_counts
                .iter()
                .find(|(x, _)| *x == j as i64)
                .map(|(_, c)| *c)
                .unwrap_or(0);
            (k.column.clone(), json!(n))
        })
        .collect();
    let matched_per_source = by_source(count_by(
        backend,
        &format!(
            "SELECT s, count(*) FILTER (WHERE (__dm_srcs >> s) & 1 = 1) FROM {a}, \
             range({}) r(s) GROUP BY 1",
            names.len()
        ),
    )?);
    // Vendor rows that contributed to no original row: their `__dm_ord`s,
    // found by one aggregation over both lists (fixed-size states, spills)
    // rather than an anti-join holding every contributing row in memory.
    let u = scratch_table();
    backend.execute(
        &format!(
            "CREATE TABLE {u} AS SELECT __dm_ord FROM (SELECT __dm_ord, 0 AS used FROM {e} \
             UNION ALL SELECT __dm_ord, 1 AS used FROM {m}) GROUP BY __dm_ord \
             HAVING max(used) = 0"
        ),
        &[],
        ctx,
    )?;
    let built = (|| -> Result<(Map<String, Value>, String)> {
        let unmatched = by_source(count_by(
            backend,
            &format!("SELECT __dm_ord >> {ORD_SHIFT}, count(*) FROM {u} GROUP BY 1"),
        )?);

        // The rows themselves, from the source tables, the source's name
        // first; one source at a time, each in its row order.
        let any_source_col = src_cols
            .iter()
            .flatten()
            .any(|c| c.eq_ignore_ascii_case("source"));
        let source_col = quote_ident(if any_source_col { "_source" } else { "source" });
        let select = |i: usize, t: &str, extra: &str, rows: &str| {
            format!(
                "SELECT {} AS {source_col}, t.*{extra} FROM {} t {rows}",
                sql_string(names[i]),
                quote_ident(t)
            )
        };
        let staging = staging_name();
        let s = quote_ident(&staging);
        let schema = sources
            .iter()
            .enumerate()
            .map(|(i, t)| format!("({})", select(i, t, "", "LIMIT 0")))
            .collect::<Vec<_>>()
            .join(" UNION ALL BY NAME ");
        let unmatched_of = |i: usize| unmatched.get(names[i]).and_then(Value::as_u64).unwrap_or(0);
        let per_slice_of =
            |i: usize| value_slice_rows(u64::MAX, widths.memory_limit, widths.rows[i]);
        // When every source's unmatched rows fit one slice together, one
        // statement sorts them all (its scans and sort run on every thread:
        // 0.56-0.59 s against 0.99-1.07 s for one per source, on the
        // benchmark's 3 x 800k rows). Its rows carry every source's columns
        // (UNION ALL BY NAME), so they count as wide as all sources' rows
        // together.
        let total: u64 = (0..sources.len()).map(unmatched_of).sum();
        let union_width: u64 = widths.rows.iter().sum();
        let fits_once = total <= value_slice_rows(u64::MAX, widths.memory_limit, union_width);
        let mut statements = Vec::new();
        if fits_once {
            // Sort keys named unlike any source column.
            let taken = |n: &String| src_cols.iter().flatten().any(|c| c.eq_ignore_ascii_case(n));
            let fresh = |base: &str| {
                (0..)
                    .map(|k| format!("{base}{k}"))
                    .find(|n| !taken(n))
                    .unwrap_or_default()
            };
            let (ks, kr) = (fresh("__dm_s"), fresh("__dm_r"));
            let all = sources
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    format!(
                        "({})",
                        select(
                            i,
                            t,
                            &format!(", {i} AS {ks}, t.rowid AS {kr}"),
                            &format!(
                                "SEMI JOIN (SELECT __dm_ord & {ORD_MASK} AS r FROM {u} \
                                 WHERE __dm_ord >> {ORD_SHIFT} = {i}) x ON x.r = t.rowid"
                            )
                        )
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL BY NAME ");
            statements.push(format!(
                "CREATE TABLE {s} AS SELECT * EXCLUDE ({ks}, {kr}) FROM ({all}) \
                 ORDER BY {ks}, {kr}"
            ));
        } else {
            statements.push(format!("CREATE TABLE {s} AS {schema}"));
        }
        for (i, t) in sources.iter().enumerate().filter(|_| !fits_once) {
            // The unmatched rows are sorted back into the source's order,
            // wide rows and all, so many wide ones are sorted in slices of
            // the source's rows (150,000 of 300-character text ran out of
            // memory at a 64MB memory_limit in one sort).
            let slices = unmatched_of(i).div_ceil(per_slice_of(i)).max(1);
            let step = if slices == 1 {
                0
            } else {
                // Row numbers run to the largest (a table may have deleted rows).
                let end = backend
                    .query_value(
                        &format!("SELECT coalesce(max(rowid) + 1, 0) FROM {}", quote_ident(t)),
                        &[],
                    )?
                    .as_u64()
                    .unwrap_or(0);
                end.div_ceil(slices).max(1)
            };
            for slice in 0..slices {
                let range = if slices == 1 {
                    String::new()
                } else {
                    format!(
                        " AND t.rowid >= {} AND t.rowid < {}",
                        slice * step,
                        (slice + 1) * step
                    )
                };
                statements.push(format!(
                    "INSERT INTO {s} BY NAME {} ORDER BY t.rowid",
                    select(
                        i,
                        t,
                        "",
                        // A semi join on the row number: the source's rows are
                        // not held in the join (1.74 s -> 1.36 s for the three
                        // 800k-row sources of the benchmark).
                        &format!(
                            "SEMI JOIN (SELECT __dm_ord & {ORD_MASK} AS r FROM {u} \
                             WHERE __dm_ord >> {ORD_SHIFT} = {i}) x ON x.r = t.rowid \
                             WHERE true{range}"
                        )
                    )
                ));
            }
        }
        for sql in &statements {
            if let Err(err) = backend.execute(sql, &[], ctx) {
                drop_quietly(backend, &staging, ctx);
                return Err(err);
            }
        }
        Ok((unmatched, staging))
    })();
    drop_quietly_ref(backend, &u, ctx);
    let (unmatched, unmatched_staging) = built?;
    swap_in(
        backend,
        &unmatched_staging,
        &format!("{target}__unmatched"),
        ctx,
    )?;

    // Conflicts (contributing rows disagreed) and values filled per source:
    // a value counts as filled when it reached the output (under `fill`, only
    // where the original's value was NULL).
    let mut conflicts = Map::new();
    let mut filled = Map::new();
    if !plan.fields.is_empty() {
        let row = backend.query(
            &format!(
                "SELECT {} FROM {a}",
                (0..plan.fields.len())
                    .map(|i| format!("count(*) FILTER (WHERE __dm_c{i})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[],
        )?;
        let row = row.into_iter().next().unwrap_or_default();
        for (i, f) in plan.fields.iter().enumerate() {
            conflicts.insert(f.clone(), row.get(i).cloned().unwrap_or(json!(0)));
            let fill_only = overlapping
                .iter()
                .find(|(j, _)| *j == i)
                .filter(|_| cfg.on_conflict == OnConflict::Fill)
                .map(|(_, c)| c);
            let src = format!("p.__dm_pick{i} >> {ORD_SHIFT}");
            let sql = match fill_only {
                Some(c) => format!(
                    "SELECT {src}, count(*) FROM {} o POSITIONAL JOIN {} p \
                     WHERE p.__dm_pick{i} IS NOT NULL AND o.{} IS NULL GROUP BY 1",
                    quote_ident(original),
                    p,
                    quote_ident(c),
                ),
                None => format!(
                    "SELECT {src}, count(*) FROM {p} p WHERE p.__dm_pick{i} IS NOT NULL GROUP BY 1"
                ),
            };
            filled.insert(
                f.clone(),
                Value::Object(by_source(count_by(backend, &sql)?)),
            );
        }
    }
    let stats = json!({
        "rows_original": rows_original,
        "rows_output": rows_output,
        "rows_per_source": per_src("rows_per_source"),
        "duplicates_collapsed": per_src("duplicates"),
        "matched": matched,
        "matched_per_key": per_key,
        "matched_per_source": matched_per_source,
        "match_rate": if rows_original == 0 { 0.0 } else { matched as f64 / rows_original as f64 },
        "unmatched_enriched": unmatched,
        "conflicts": conflicts,
        "values_filled": filled,
    });
    store_stats(&stats, target, backend, ctx)?;
    Ok(stats)
}

/// The stats as a table: one row per (stat, key), nested keys as `a/b`.
fn store_stats(
    stats: &Value,
    target: &str,
    backend: &dyn SqlBackend,
    ctx: &dyn StepContext,
) -> Result<()> {
    let mut rows = Vec::new();
    for (stat, v) in stats.as_object().into_iter().flatten() {
        match v {
            Value::Object(inner) => {
                for (k, x) in inner {
                    match x {
                        Value::Object(deeper) => {
                            for (k2, y) in deeper {
                                rows.push(format!(
                                    "({}, {}, {y})",
                                    sql_string(stat),
                                    sql_string(&format!("{k}/{k2}"))
                                ));
                            }
                        }
                        _ => rows.push(format!("({}, {}, {x})", sql_string(stat), sql_string(k))),
                    }
                }
            }
            _ => rows.push(format!("({}, NULL, {v})", sql_string(stat))),
        }
    }
    let staging = staging_name();
    let s = quote_ident(&staging);
    let created = backend.execute(
        &format!(
            "CREATE TABLE {s} (stat VARCHAR, key VARCHAR, value DOUBLE); INSERT INTO {s} VALUES {}",
            rows.join(", ")
        ),
        &[],
        ctx,
    );
    if let Err(e) = created {
        drop_quietly(backend, &staging, ctx);
        return Err(e);
    }
    swap_in(backend, &staging, &format!("{target}__stats"), ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ctx that cancels once `cancel` is set.
    struct Cancellable {
        cancel: std::sync::atomic::AtomicBool,
    }

    impl StepContext for Cancellable {
        fn log_metric(&self, _: &str, _: Value) {}
        fn log_event(&self, _: &str, _: Map<String, Value>) {}
        fn base_path(&self) -> Option<std::path::PathBuf> {
            None
        }
        fn check_cancel(&self) -> Result<()> {
            if self.cancel.load(std::sync::atomic::Ordering::SeqCst) {
                Err(Error::Cancelled("cancelled".into()))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn a_merge_waits_for_its_turn_and_stays_cancellable() {
        let lock = std::sync::Arc::new(std::sync::Mutex::new(()));
        let ctx = Cancellable {
            cancel: false.into(),
        };
        // Free: taken at once.
        drop(wait_for_turn(&lock, "m", &ctx).unwrap());
        // Held by another merge: waits until it is released.
        let held = lock.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            let guard = held.lock().unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(guard);
        });
        rx.recv().unwrap();
        let started = std::time::Instant::now();
        drop(wait_for_turn(&lock, "m", &ctx).unwrap());
        assert!(started.elapsed() >= std::time::Duration::from_millis(150));
        other.join().unwrap();
        // Held, and the caller cancels: Cancelled, not a hang.
        let _guard = lock.lock().unwrap();
        ctx.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            wait_for_turn(&lock, "m", &ctx),
            Err(Error::Cancelled(_))
        ));
    }

    /// The conflict flag per group, computed by DuckDB from `conflict_state`.
    fn flags(values: &str, column_type: &str) -> Vec<(i64, bool)> {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE t (g BIGINT, v {column_type}); INSERT INTO t VALUES {values};"
        ))
        .unwrap();
        let sql = format!(
            "SELECT g, {} FROM (SELECT g, {} AS s FROM t GROUP BY g) ORDER BY g",
            conflict_flag("s"),
            conflict_state("v")
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn conflict_flag_is_set_only_when_non_null_values_differ() {
        let got = flags(
            "(1, 'a'), (1, 'a'), (1, NULL), \
             (2, 'a'), (2, 'b'), \
             (3, NULL), (3, NULL), \
             (4, 'only'), \
             (5, 'x'), (5, 'x'), (5, 'y'), (5, 'x')",
            "VARCHAR",
        );
        assert_eq!(
            got,
            vec![(1, false), (2, true), (3, false), (4, false), (5, true)]
        );
    }

    #[test]
    fn value_slices_shrink_with_wide_values_and_a_small_memory_limit() {
        let mb = 1024 * 1024;
        // The benchmark's widest field (48 bytes) at 500MB: the base slice
        // (2M rows) stands.
        assert_eq!(
            value_slice_rows(2_000_000, Some(500_000_000), 48),
            2_000_000
        );
        // 300-byte values at 64MB: 45 % of it, 364 bytes a row.
        assert_eq!(
            value_slice_rows(2_000_000, Some(64 * mb), 300),
            64 * mb / 20 * 9 / 364
        );
        // Never under 2,048 rows, however wide; no limit known: the base.
        assert_eq!(value_slice_rows(2_000_000, Some(mb), 1_000_000), 2_048);
        assert_eq!(value_slice_rows(2_000_000, None, 1_000_000), 2_000_000);
        // The unmatched rows' "no base" (u64::MAX) is only the limit's share.
        assert_eq!(
            value_slice_rows(u64::MAX, Some(64 * mb), 960),
            64 * mb / 20 * 9 / 1024
        );
    }

    #[test]
    fn conflict_flag_works_for_other_types() {
        let got = flags(
            "(1, DATE '2024-01-01'), (1, DATE '2024-01-01'), (2, DATE '2024-01-01'), (2, DATE '2024-01-02')",
            "DATE",
        );
        assert_eq!(got, vec![(1, false), (2, true)]);
        // Many distinct values in one group: any two differing values flag it.
        let many: Vec<String> = (0..1000).map(|i| format!("(1, {i})")).collect();
        assert_eq!(flags(&many.join(", "), "BIGINT"), vec![(1, true)]);
    }
}
