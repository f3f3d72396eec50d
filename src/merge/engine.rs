//! The merge engine: five stages of SQL run through a [`SqlBackend`].
//!
//! `import_original` and `import_enriched` load file sources with the CSV
//! extractor; `consolidate` stacks the vendor rows with their normalised keys
//! into one table; `match_merge` matches each original row on the first key
//! (in order) any vendor row shares, picks each field's value by strategy and
//! joins it back onto the original in its row order; `export` writes the
//! optional output file. Exactly one output row per original row, whatever
//! duplicates the vendors hold.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::config::{KeyConfig, KeyNormalize, MergeConfig, OnConflict, SourceConfig, Strategy};
use super::udf::FUNCTION;
use crate::backend::{
    backend_columns, backend_count, backend_relation_exists, drop_quietly, quote_ident, sql_string,
    staging_name, swap_in, SqlBackend, StepContext,
};
use crate::csv::{resolve_input, run_extract, run_write, ExtractorConfig, WriterConfig};
use crate::error::{Error, Result};

/// The stages, in order, as named in events and logs.
pub const STAGES: [&str; 5] = [
    "import_original",
    "import_enriched",
    "consolidate",
    "match_merge",
    "export",
];

/// What a merge produced.
#[derive(Debug, Clone)]
pub struct MergeOutput {
    pub table: String,
    pub rows: u64,
    pub stats: Value,
}

fn progress(ctx: &dyn StepContext, step_id: &str, stage: usize, rows: u64, message: String) {
    log::info!("[MergeEngine] {message}");
    let mut data = Map::new();
    data.insert("step_id".into(), json!(step_id));
    data.insert("stage".into(), json!(STAGES[stage]));
    data.insert("stage_index".into(), json!(stage + 1));
    data.insert("stage_count".into(), json!(STAGES.len()));
    data.insert(
        "percent".into(),
        json!(((stage + 1) as f64 / STAGES.len() as f64 * 100.0).round()),
    );
    data.insert("rows".into(), json!(rows));
    data.insert("message".into(), json!(message));
    ctx.log_event("merge_progress", data);
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

/// Resolves a source to a table, loading a file source first.
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
            let mut cfg = source.csv_options.clone();
            cfg.insert("path".into(), Value::String(p.clone()));
            let cfg = ExtractorConfig::from_json(step_id, Value::Object(cfg))?;
            run_extract(&table_for_file, &cfg, backend, ctx)?;
            Ok(table_for_file)
        }
        (None, None) => Err(Error::Config(format!(
            "Step {step_id}: a source has neither table nor path"
        ))),
    }
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
        if let Some(p) = &s.path {
            let path = resolve_input(p, ctx);
            if !path.exists() {
                return Err(Error::SourceNotFound {
                    what: format!("Step {step_id}: merge source file"),
                    path,
                });
            }
        }
    }
    Ok(())
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
    let started = std::time::Instant::now();
    ctx.log_event(
        "merge_start",
        crate::session::json_map(json!({"step_id": step_id, "table": target})),
    );

    // import_original / import_enriched
    let original = import_source(
        step_id,
        &cfg.original,
        format!("{step_id}__original"),
        backend,
        ctx,
    )?;
    let rows_original = backend_count(backend, &original)?;
    progress(
        ctx,
        step_id,
        0,
        rows_original,
        format!("Original: {rows_original} rows from \"{original}\""),
    );
    let mut sources = Vec::new();
    for (i, s) in cfg.enriched.iter().enumerate() {
        sources.push(import_source(
            step_id,
            s,
            format!("{step_id}__enriched_{i}"),
            backend,
            ctx,
        )?);
    }
    let mut rows_per_source = Map::new();
    for (s, table) in cfg.enriched.iter().zip(&sources) {
        rows_per_source.insert(s.name.clone(), json!(backend_count(backend, table)?));
    }
    progress(
        ctx,
        step_id,
        1,
        0,
        format!("Enriched: {} sources {rows_per_source:?}", sources.len()),
    );

    // Columns and fields, checked before the heavy work.
    let orig_cols = backend_columns(backend, &original)?;
    let mut orig_keys = Vec::new();
    for k in &cfg.keys {
        let col = find_ci(&orig_cols, &k.column).ok_or_else(|| {
            Error::Config(format!(
                "Step {step_id}: key column \"{}\" is not in the original (it has {orig_cols:?})",
                k.column
            ))
        })?;
        orig_keys.push(col.clone());
    }
    let src_cols: Vec<Vec<String>> = sources
        .iter()
        .map(|t| backend_columns(backend, t))
        .collect::<Result<_>>()?;
    for k in &cfg.keys {
        if !src_cols
            .iter()
            .any(|cols| find_ci(cols, &k.enriched_column).is_some())
        {
            return Err(Error::Config(format!(
                "Step {step_id}: key column \"{}\" is in no enriched source",
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
                if !src_cols.iter().any(|cols| find_ci(cols, name).is_some()) {
                    return Err(Error::Config(format!(
                        "Step {step_id}: field \"{name}\" is in no enriched source"
                    )));
                }
            }
            f.clone()
        }
        None => {
            let mut out: Vec<String> = Vec::new();
            for cols in &src_cols {
                for c in cols {
                    if !is_key(c) && !out.iter().any(|o| o.eq_ignore_ascii_case(c)) {
                        out.push(c.clone());
                    }
                }
            }
            out
        }
    };
    if let Some(rc) = &cfg.recency_column {
        if !src_cols.iter().any(|cols| find_ci(cols, rc).is_some()) {
            return Err(Error::Config(format!(
                "Step {step_id}: recency_column \"{rc}\" is in no enriched source"
            )));
        }
    }

    // consolidate: one table of vendor rows with normalised keys.
    let e_table = staging_name();
    let n_sources = cfg.enriched.len() as i64;
    let selects: Vec<String> = sources
        .iter()
        .zip(&src_cols)
        .enumerate()
        .map(|(i, (table, cols))| {
            let mut parts = vec![format!("{i} AS __dm_src"), "rowid AS __dm_row".to_string()];
            let prio = cfg.enriched[i].priority.unwrap_or(n_sources - i as i64);
            parts.push(format!("{prio} AS __dm_prio"));
            for (j, k) in cfg.keys.iter().enumerate() {
                match find_ci(cols, &k.enriched_column) {
                    Some(c) => parts.push(format!(
                        "{FUNCTION}(CAST({} AS VARCHAR), {}) AS __dm_k{j}",
                        quote_ident(c),
                        sql_string(&spec(k))
                    )),
                    None => parts.push(format!("CAST(NULL AS VARCHAR) AS __dm_k{j}")),
                }
            }
            let present: Vec<(&String, &String)> = fields
                .iter()
                .filter_map(|f| find_ci(cols, f).map(|c| (f, c)))
                .collect();
            for (f, c) in &present {
                parts.push(format!("{} AS {}", quote_ident(c), quote_ident(f)));
            }
            let nn = if present.is_empty() {
                "0".to_string()
            } else {
                present
                    .iter()
                    .map(|(_, c)| format!("CAST({} IS NOT NULL AS INTEGER)", quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(" + ")
            };
            parts.push(format!("{nn} AS __dm_nn"));
            if let Some(rc) = cfg.recency_column.as_ref().and_then(|rc| find_ci(cols, rc)) {
                parts.push(format!("{} AS __dm_recency", quote_ident(rc)));
            }
            format!("SELECT {} FROM {}", parts.join(", "), quote_ident(table))
        })
        .collect();
    let union = selects
        .iter()
        .map(|s| format!("({s})"))
        .collect::<Vec<_>>()
        .join(" UNION ALL BY NAME ");
    let cleanup: Vec<String> = Vec::new();
    let mut temp_tables = cleanup;
    temp_tables.push(e_table.clone());
    let run = |sql: String| backend.execute(&sql, &[], ctx);
    let result = (|| -> Result<MergeOutput> {
        run(format!("CREATE TABLE {} AS {union}", quote_ident(&e_table)))?;
        progress(
            ctx,
            step_id,
            2,
            0,
            format!(
                "Consolidated {} vendor rows",
                backend_count(backend, &e_table)?
            ),
        );

        // match_merge
        let ok_table = staging_name();
        let m_table = staging_name();
        let a_table = staging_name();
        temp_tables.extend([ok_table.clone(), m_table.clone(), a_table.clone()]);
        let key_cols: Vec<String> = cfg
            .keys
            .iter()
            .zip(&orig_keys)
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
            "CREATE TABLE {} AS SELECT rowid AS __dm_row, {} FROM {}",
            quote_ident(&ok_table),
            key_cols.join(", "),
            quote_ident(&original)
        ))?;
        let (ok, e, m, a) = (
            quote_ident(&ok_table),
            quote_ident(&e_table),
            quote_ident(&m_table),
            quote_ident(&a_table),
        );
        for j in 0..cfg.keys.len() {
            let select = format!(
                "SELECT o.__dm_row AS __dm_o_row, {j} AS __dm_j, e.__dm_src, e.__dm_row AS __dm_e_row \
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
        let strategy_for = |f: &str| {
            cfg.field_strategies
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(f))
                .map(|(_, s)| *s)
                .unwrap_or(cfg.strategy)
        };
        let mut window = Vec::new();
        let mut aggs = vec![
            "min(__dm_j) AS __dm_j".to_string(),
            "list_sort(list(DISTINCT __dm_src)) AS __dm_srcs".to_string(),
        ];
        for (i, f) in fields.iter().enumerate() {
            let q = quote_ident(f);
            let order = match strategy_for(f) {
                Strategy::First => "__dm_src, __dm_row".to_string(),
                Strategy::Last => "__dm_src DESC, __dm_row DESC".to_string(),
                Strategy::Longest => {
                    format!("length(CAST({q} AS VARCHAR)) DESC, __dm_src, __dm_row")
                }
                Strategy::MostComplete => "__dm_nn DESC, __dm_src, __dm_row".to_string(),
                Strategy::SourcePriority => "__dm_prio DESC, __dm_src, __dm_row".to_string(),
                Strategy::MostRecent => {
                    "__dm_recency DESC NULLS LAST, __dm_src, __dm_row".to_string()
                }
                Strategy::MostFrequent => {
                    window.push(format!(
                        "count({q}) OVER (PARTITION BY m.__dm_o_row, {q}) AS __dm_freq{i}"
                    ));
                    format!("__dm_freq{i} DESC, __dm_src, __dm_row")
                }
            };
            aggs.push(format!(
                "first({q} ORDER BY {order}) FILTER (WHERE {q} IS NOT NULL) AS {q}"
            ));
            aggs.push(format!(
                "first(__dm_src ORDER BY {order}) FILTER (WHERE {q} IS NOT NULL) AS __dm_from{i}"
            ));
            aggs.push(format!("count(DISTINCT {q}) AS __dm_nd{i}"));
        }
        let window_sql = if window.is_empty() {
            String::new()
        } else {
            format!(", {}", window.join(", "))
        };
        run(format!(
            "CREATE TABLE {a} AS WITH c AS (SELECT m.__dm_o_row, m.__dm_j, e.*{window_sql} \
               FROM {m} m JOIN {e} e ON e.__dm_src = m.__dm_src AND e.__dm_row = m.__dm_e_row) \
             SELECT __dm_o_row, {} FROM c GROUP BY __dm_o_row",
            aggs.join(", ")
        ))?;
        let matched = backend_count(backend, &a_table)?;
        let rate = if rows_original == 0 {
            0.0
        } else {
            matched as f64 / rows_original as f64
        };
        progress(
            ctx,
            step_id,
            3,
            matched,
            format!("Matched {matched} rows ({:.1}% match rate)", rate * 100.0),
        );

        // The output, in the original's row order.
        let orig_types: BTreeMap<String, String> = backend
            .query(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() \
                 AND schema_name = 'main' AND table_name = ?",
                &[crate::arrow::Param::Text(original.clone())],
            )?
            .into_iter()
            .filter_map(|r| Some((r.first()?.as_str()?.to_string(), r.get(1)?.as_str()?.to_string())))
            .collect();
        let mut select = Vec::new();
        let mut overlapping = Vec::new();
        for c in &orig_cols {
            let oc = format!("o.{}", quote_ident(c));
            match fields.iter().position(|f| f.eq_ignore_ascii_case(c)) {
                Some(i) if cfg.on_conflict != OnConflict::KeepBoth => {
                    overlapping.push(i);
                    let ty = orig_types
                        .get(c)
                        .cloned()
                        .unwrap_or_else(|| "VARCHAR".into());
                    let ev = format!("TRY_CAST(a.{} AS {ty})", quote_ident(&fields[i]));
                    let expr = match cfg.on_conflict {
                        OnConflict::Fill => format!("coalesce({oc}, {ev})"),
                        _ => format!("coalesce({ev}, {oc})"),
                    };
                    select.push(format!("{expr} AS {}", quote_ident(c)));
                }
                Some(i) => {
                    overlapping.push(i);
                    select.push(oc);
                }
                None => select.push(oc),
            }
        }
        for (i, f) in fields.iter().enumerate() {
            if !overlapping.contains(&i) {
                select.push(format!("a.{}", quote_ident(f)));
            }
        }
        if cfg.on_conflict == OnConflict::KeepBoth {
            for &i in &overlapping {
                select.push(format!(
                    "a.{} AS {}",
                    quote_ident(&fields[i]),
                    quote_ident(&format!("{}_enriched", fields[i]))
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
            select.push("CASE WHEN a.__dm_o_row IS NULL THEN 'unmatched' ELSE 'matched' END AS _match_status".into());
            select.push(format!("[{key_names}][a.__dm_j + 1] AS _match_key"));
            select.push(format!(
                "coalesce(list_transform(a.__dm_srcs, s -> [{src_names}][s + 1]), CAST([] AS VARCHAR[])) AS _match_sources"
            ));
        }
        let out_staging = staging_name();
        temp_tables.push(out_staging.clone());
        run(format!(
            "CREATE TABLE {} AS SELECT {} FROM (SELECT rowid AS __dm_rowid, * FROM {}) o \
             LEFT JOIN {a} a ON a.__dm_o_row = o.__dm_rowid ORDER BY o.__dm_rowid",
            quote_ident(&out_staging),
            select.join(", "),
            quote_ident(&original)
        ))?;
        swap_in(backend, &out_staging, &target, ctx)?;
        let rows_output = backend_count(backend, &target)?;

        // Stats and the unmatched vendor rows.
        let stats = merge_stats(
            backend,
            cfg,
            &fields,
            &sources,
            &a_table,
            &m_table,
            &e_table,
            rows_original,
            rows_output,
            matched,
            rows_per_source,
            &target,
            ctx,
            step_id,
        )?;

        // export
        if let Some(path) = &cfg.output.path {
            let wcfg =
                WriterConfig::from_json(step_id, json!({"path": path, "sort_columns": false}))?;
            run_write(step_id, &target, &wcfg, backend, ctx)?;
            progress(
                ctx,
                step_id,
                4,
                rows_output,
                format!("Wrote {rows_output} rows to {path}"),
            );
        } else {
            progress(
                ctx,
                step_id,
                4,
                rows_output,
                format!("Merged {rows_output} rows into \"{target}\""),
            );
        }
        ctx.log_event(
            "merge_complete",
            crate::session::json_map(json!({
                "step_id": step_id, "table": target, "rows": rows_output,
                "seconds": started.elapsed().as_secs_f64(), "stats": stats,
            })),
        );
        Ok(MergeOutput {
            table: target.clone(),
            rows: rows_output,
            stats,
        })
    })();
    for t in &temp_tables {
        drop_quietly(backend, t, ctx);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn merge_stats(
    backend: &dyn SqlBackend,
    cfg: &MergeConfig,
    fields: &[String],
    sources: &[String],
    a_table: &str,
    m_table: &str,
    e_table: &str,
    rows_original: u64,
    rows_output: u64,
    matched: u64,
    rows_per_source: Map<String, Value>,
    target: &str,
    ctx: &dyn StepContext,
    step_id: &str,
) -> Result<Value> {
    let (a, m, e) = (
        quote_ident(a_table),
        quote_ident(m_table),
        quote_ident(e_table),
    );
    let count =
        |sql: String| -> Result<u64> { Ok(backend.query_value(&sql, &[])?.as_u64().unwrap_or(0)) };
    let mut per_key = Map::new();
    for (j, k) in cfg.keys.iter().enumerate() {
        per_key.insert(
            k.column.clone(),
            json!(count(format!(
                "SELECT count(*) FROM {a} WHERE __dm_j = {j}"
            ))?),
        );
    }
    let mut duplicates = Map::new();
    let mut unmatched = Map::new();
    let unmatched_table = format!("{target}__unmatched");
    let unmatched_staging = staging_name();
    let mut unmatched_selects = Vec::new();
    for (i, (s, table)) in cfg.enriched.iter().zip(sources).enumerate() {
        let t = quote_ident(table);
        duplicates.insert(
            s.name.clone(),
            json!(count(format!("SELECT (SELECT count(*) FROM {t}) - (SELECT count(*) FROM (SELECT DISTINCT * FROM {t}))"))?),
        );
        unmatched.insert(
            s.name.clone(),
            json!(count(format!(
                "SELECT count(*) FROM {e} WHERE __dm_src = {i} AND __dm_row NOT IN \
                 (SELECT __dm_e_row FROM {m} WHERE __dm_src = {i})"
            ))?),
        );
        unmatched_selects.push(format!(
            "(SELECT {} AS source, * FROM {t} WHERE rowid NOT IN (SELECT __dm_e_row FROM {m} WHERE __dm_src = {i}) ORDER BY rowid)",
            sql_string(&s.name)
        ));
    }
    backend.execute(
        &format!(
            "CREATE TABLE {} AS {}",
            quote_ident(&unmatched_staging),
            unmatched_selects.join(" UNION ALL BY NAME ")
        ),
        &[],
        ctx,
    )?;
    swap_in(backend, &unmatched_staging, &unmatched_table, ctx)?;
    let mut conflicts = Map::new();
    let mut filled = Map::new();
    for (i, f) in fields.iter().enumerate() {
        conflicts.insert(
            f.clone(),
            json!(count(format!(
                "SELECT count(*) FROM {a} WHERE __dm_nd{i} > 1"
            ))?),
        );
        let rows = backend.query(
            &format!("SELECT __dm_from{i}, count(*) FROM {a} WHERE __dm_from{i} IS NOT NULL GROUP BY ALL ORDER BY 1"),
            &[],
        )?;
        let mut per_source = Map::new();
        for r in rows {
            if let (Some(src), Some(n)) = (r.first().and_then(Value::as_u64), r.get(1)) {
                per_source.insert(cfg.enriched[src as usize].name.clone(), n.clone());
            }
        }
        filled.insert(f.clone(), Value::Object(per_source));
    }
    let stats = json!({
        "rows_original": rows_original,
        "rows_output": rows_output,
        "rows_per_source": rows_per_source,
        "duplicates_collapsed": duplicates,
        "matched": matched,
        "matched_per_key": per_key,
        "match_rate": if rows_original == 0 { 0.0 } else { matched as f64 / rows_original as f64 },
        "unmatched_enriched": unmatched,
        "conflicts": conflicts,
        "values_filled": filled,
    });
    // The stats as a table too: one row per (stat, key).
    let mut rows = Vec::new();
    for (stat, v) in stats.as_object().expect("object") {
        match v {
            Value::Object(inner) => {
                for (k, x) in inner {
                    match x {
                        Value::Object(deeper) => {
                            for (k2, y) in deeper {
                                rows.push(format!(
                                    "({}, {}, {})",
                                    sql_string(stat),
                                    sql_string(&format!("{k}/{k2}")),
                                    y
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
    let stats_staging = staging_name();
    backend.execute(
        &format!(
            "CREATE TABLE {} (stat VARCHAR, key VARCHAR, value DOUBLE); INSERT INTO {} VALUES {}",
            quote_ident(&stats_staging),
            quote_ident(&stats_staging),
            rows.join(", ")
        ),
        &[],
        ctx,
    )?;
    swap_in(backend, &stats_staging, &format!("{target}__stats"), ctx)?;
    ctx.log_event(
        "merge_stats",
        crate::session::json_map(json!({"step_id": step_id, "stats": stats})),
    );
    Ok(stats)
}
