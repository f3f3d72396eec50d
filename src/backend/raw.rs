//! The DuckDB C API where duckdb-rs has no wrapper: a database whose raw
//! handle we keep, and connections whose query progress can be read while a
//! statement runs (DuckDB reports CSV progress as the share of bytes read).

use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StructArray};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use duckdb::{ffi, Connection};

use crate::arrow::Param;

/// A C string DuckDB owns, as Rust text; `fallback` when it is null.
///
/// # Safety
/// `ptr` must be null or point to a NUL-terminated string alive for the call.
pub(super) unsafe fn c_text(ptr: *const std::os::raw::c_char, fallback: &str) -> String {
    if ptr.is_null() {
        fallback.to_string()
    } else {
        // SAFETY: non-null and NUL-terminated per the caller's contract.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Takes a `duckdb_error_data`: its message if it holds an error. Destroys it.
pub(super) fn take_error(mut err: ffi::duckdb_error_data) -> Option<String> {
    if err.is_null() {
        return None;
    }
    // SAFETY: `err` is a live error-data handle; destroyed exactly once here.
    unsafe {
        let message = ffi::duckdb_error_data_has_error(err).then(|| {
            let m = ffi::duckdb_error_data_message(err);
            if m.is_null() {
                "unknown DuckDB error".to_string()
            } else {
                CStr::from_ptr(m).to_string_lossy().into_owned()
            }
        });
        ffi::duckdb_destroy_error_data(&mut err);
        message
    }
}

/// An open DuckDB database (the C handle). Closed on drop; DuckDB keeps the
/// instance alive until its last connection is gone.
pub struct RawDatabase {
    db: ffi::duckdb_database,
}

// SAFETY: a `duckdb_database` may be used from any thread; DuckDB
// synchronises access internally. We only connect and close through it.
unsafe impl Send for RawDatabase {}
// SAFETY: as above; `connect` only reads the handle.
unsafe impl Sync for RawDatabase {}

pub(super) fn c_string(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

impl RawDatabase {
    /// Opens `path` with `options` (DuckDB config names and values).
    pub fn open(path: &Path, options: &[(&str, String)]) -> Result<Self, String> {
        let cpath = c_string(&path.to_string_lossy())?;
        let mut config: ffi::duckdb_config = ptr::null_mut();
        // SAFETY: `config` is an out pointer DuckDB fills; destroyed below on every path.
        if unsafe { ffi::duckdb_create_config(&mut config) } != ffi::DuckDBSuccess {
            return Err("could not create a DuckDB config".into());
        }
        for (name, value) in options {
            let (n, v) = (c_string(name)?, c_string(value)?);
            // SAFETY: `config` is valid; both strings outlive the call.
            if unsafe { ffi::duckdb_set_config(config, n.as_ptr(), v.as_ptr()) }
                != ffi::DuckDBSuccess
            {
                // SAFETY: `config` came from duckdb_create_config and is not used after.
                unsafe { ffi::duckdb_destroy_config(&mut config) };
                return Err(format!("invalid setting {name}={value:?}"));
            }
        }
        let mut db: ffi::duckdb_database = ptr::null_mut();
        let mut err: *mut std::os::raw::c_char = ptr::null_mut();
        // SAFETY: out pointers are valid; `cpath` and `config` outlive the call.
        let state = unsafe { ffi::duckdb_open_ext(cpath.as_ptr(), &mut db, config, &mut err) };
        // SAFETY: `config` came from duckdb_create_config and is not used after.
        unsafe { ffi::duckdb_destroy_config(&mut config) };
        if state != ffi::DuckDBSuccess {
            let message = if err.is_null() {
                "could not open the database".to_string()
            } else {
                // SAFETY: DuckDB set `err` to a NUL-terminated string we must free.
                let m = unsafe { CStr::from_ptr(err) }
                    .to_string_lossy()
                    .into_owned();
                unsafe { ffi::duckdb_free(err.cast()) };
                m
            };
            return Err(message);
        }
        Ok(RawDatabase { db })
    }

    /// A duckdb-rs connection to this database.
    pub fn connection(&self) -> duckdb::Result<Connection> {
        // SAFETY: `self.db` is an open database; duckdb-rs does not close it
        // (it was not opened by duckdb-rs), and DuckDB keeps the instance
        // alive while this connection exists even after `RawDatabase` drops.
        unsafe { Connection::open_from_raw(self.db) }
    }

    /// A raw connection whose progress can be read from another thread.
    pub fn raw_connection(&self) -> Result<RawConnection, String> {
        let mut con: ffi::duckdb_connection = ptr::null_mut();
        // SAFETY: `self.db` is open; `con` is an out pointer.
        if unsafe { ffi::duckdb_connect(self.db, &mut con) } != ffi::DuckDBSuccess {
            return Err("could not connect to the database".into());
        }
        let con = RawConnection { con };
        // DuckDB tracks progress only with its progress bar on (never printed here).
        con.execute(
            "SET enable_progress_bar = true; SET enable_progress_bar_print = false; \
             SET progress_bar_time = 0",
        )?;
        Ok(con)
    }
}

impl Drop for RawDatabase {
    fn drop(&mut self) {
        if !self.db.is_null() {
            // SAFETY: `self.db` came from duckdb_open_ext and is closed once.
            unsafe { ffi::duckdb_close(&mut self.db) };
        }
    }
}

/// One DuckDB connection through the C API.
pub struct RawConnection {
    con: ffi::duckdb_connection,
}

// SAFETY: DuckDB allows a connection to be used from another thread as long
// as statements are not run on it concurrently (callers serialise `execute`
// with a lock); `progress` and `interrupt` are made to be called from another
// thread while a statement runs.
unsafe impl Send for RawConnection {}
// SAFETY: see above.
unsafe impl Sync for RawConnection {}

/// How far the running statement is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// 0–100, or `None` when DuckDB cannot tell.
    pub percent: Option<f64>,
    pub rows_processed: u64,
}

impl RawConnection {
    /// Runs one or more statements; DuckDB's message on failure.
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        let csql = c_string(sql)?;
        let mut extracted: ffi::duckdb_extracted_statements = ptr::null_mut();
        // SAFETY: `self.con` is open, `csql` outlives the call; `extracted`
        // is destroyed below on every path.
        let count =
            unsafe { ffi::duckdb_extract_statements(self.con, csql.as_ptr(), &mut extracted) };
        let outcome = if count == 0 {
            // SAFETY: the error text lives until `extracted` is destroyed.
            let m = unsafe { ffi::duckdb_extract_statements_error(extracted) };
            let message = unsafe { c_text(m, "") };
            if message.is_empty() {
                Ok(()) // no statement at all (only comments or blanks)
            } else {
                Err(message)
            }
        } else {
            // One at a time: a statement is prepared only after the ones
            // before it ran (it may use a table they create).
            (0..count).try_for_each(|i| {
                let mut stmt: ffi::duckdb_prepared_statement = ptr::null_mut();
                // SAFETY: `extracted` holds `count` statements; `stmt` is
                // destroyed below.
                let prepared = unsafe {
                    ffi::duckdb_prepare_extracted_statement(self.con, extracted, i, &mut stmt)
                };
                let outcome = if prepared != ffi::DuckDBSuccess {
                    // SAFETY: the error text lives until `stmt` is destroyed.
                    let m = unsafe { ffi::duckdb_prepare_error(stmt) };
                    Err(unsafe { c_text(m, "could not prepare the statement") })
                } else {
                    // SAFETY: `stmt` is prepared and has no parameters.
                    unsafe { run_prepared(stmt) }
                };
                // SAFETY: `stmt` came from DuckDB and is destroyed once.
                unsafe { ffi::duckdb_destroy_prepare(&mut stmt) };
                outcome
            })
        };
        // SAFETY: `extracted` came from duckdb_extract_statements, destroyed once.
        unsafe { ffi::duckdb_destroy_extracted(&mut extracted) };
        outcome
    }

    /// Runs a query and reads its whole result as Arrow, converted by
    /// DuckDB's own (C++) Arrow converter — much faster than converting
    /// chunk values in Rust, strings above all. DuckDB runs the query in
    /// parallel before the first batch is read.
    pub fn query_arrow(
        &self,
        sql: &str,
        params: &[Param],
    ) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
        let csql = c_string(sql)?;
        // SAFETY: an all-zero duckdb_result is the documented initial state.
        let mut result: ffi::duckdb_result = unsafe { std::mem::zeroed() };
        let mut stmt: ffi::duckdb_prepared_statement = ptr::null_mut();
        // SAFETY: `self.con` is open; `stmt` is destroyed below on every path.
        let prepared = unsafe { ffi::duckdb_prepare(self.con, csql.as_ptr(), &mut stmt) };
        let state = if prepared != ffi::DuckDBSuccess {
            // SAFETY: the error text lives until the statement is destroyed.
            let m = unsafe { ffi::duckdb_prepare_error(stmt) };
            let message = unsafe { c_text(m, "could not prepare the statement") };
            // SAFETY: `stmt` came from duckdb_prepare and is destroyed once.
            unsafe { ffi::duckdb_destroy_prepare(&mut stmt) };
            if !(params.is_empty() && message.contains("multiple statements")) {
                return Err(message);
            }
            // Several statements (no rows wanted): run them as one query.
            // SAFETY: `self.con` is open, `csql` outlives the call.
            unsafe { ffi::duckdb_query(self.con, csql.as_ptr(), &mut result) }
        } else {
            let bound = bind_params(stmt, params);
            // Streaming: DuckDB's workers scan in parallel while this thread
            // fetches, and nothing is materialised in between.
            // SAFETY: `stmt` is prepared and bound; `result` is valid.
            let state = bound.and_then(|_| unsafe { execute_polled(stmt, true, &mut result) });
            // SAFETY: `stmt` came from duckdb_prepare and is destroyed once.
            unsafe { ffi::duckdb_destroy_prepare(&mut stmt) };
            state?;
            ffi::DuckDBSuccess
        };
        let outcome = if state == ffi::DuckDBSuccess {
            // SAFETY: `result` holds a successful result.
            unsafe { read_result_arrow(&mut result) }
        } else {
            // SAFETY: on error `result` holds a NUL-terminated message (or null).
            let msg = unsafe { ffi::duckdb_result_error(&mut result) };
            Err(unsafe { c_text(msg, "query failed") })
        };
        // SAFETY: `result` was filled by DuckDB and is destroyed once.
        unsafe { ffi::duckdb_destroy_result(&mut result) };
        outcome
    }

    /// Whether `sql` is a single `SELECT` (prepared to find out, not run;
    /// `false` when it does not prepare, so its error comes from the run).
    pub fn is_select(&self, sql: &str) -> bool {
        let Ok(csql) = c_string(sql) else {
            return false;
        };
        let mut stmt: ffi::duckdb_prepared_statement = ptr::null_mut();
        // SAFETY: `self.con` is open; `stmt` is destroyed below.
        let prepared = unsafe { ffi::duckdb_prepare(self.con, csql.as_ptr(), &mut stmt) };
        // SAFETY: `stmt` is a prepared statement when `prepared` says so.
        let select = prepared == ffi::DuckDBSuccess
            && unsafe { ffi::duckdb_prepared_statement_type(stmt) }
                == ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT;
        // SAFETY: `stmt` came from duckdb_prepare and is destroyed once.
        unsafe { ffi::duckdb_destroy_prepare(&mut stmt) };
        select
    }

    /// Runs `sql` (one statement, no parameters) and reads its whole result
    /// as Arrow batches of up to `batch_size` rows that DuckDB's worker
    /// threads build while it runs, in the result's order (arrays end at the
    /// scan's batch boundaries: a table's row groups). See
    /// `src/cpp/arrow_result.cpp`. Interrupt it with
    /// [`RawConnection::interrupt`] from another thread.
    pub fn query_arrow_parallel(
        &self,
        sql: &str,
        batch_size: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
        let csql = c_string(sql)?;
        let mut ffi_schema = FFI_ArrowSchema::empty();
        let mut error: *mut std::os::raw::c_char = ptr::null_mut();
        // SAFETY: `self.con` is open; `csql` outlives the call; the out
        // pointers are ours.
        let stream = ShimStream(unsafe {
            duckmerge_arrow_stream_open(
                self.con,
                csql.as_ptr(),
                batch_size as ffi::idx_t,
                (&mut ffi_schema as *mut FFI_ArrowSchema).cast(),
                &mut error,
            )
        });
        // SAFETY: `error` is null or a string from the shim.
        if let Some(message) = unsafe { shim_error(error) } {
            return Err(message);
        }
        if stream.0.is_null() {
            return Err("could not open the query's result".into());
        }
        let schema = Arc::new(Schema::try_from(&ffi_schema).map_err(|e| e.to_string())?);
        let struct_type = arrow::datatypes::DataType::Struct(schema.fields().clone());
        let chunk_schema = FFI_ArrowSchema::try_from(&struct_type).map_err(|e| e.to_string())?;
        let mut batches = Vec::new();
        loop {
            let mut array = FFI_ArrowArray::empty();
            let mut error: *mut std::os::raw::c_char = ptr::null_mut();
            // SAFETY: `stream.0` is open; the out pointers are ours.
            let got = unsafe {
                duckmerge_arrow_stream_next(
                    stream.0,
                    (&mut array as *mut FFI_ArrowArray).cast(),
                    &mut error,
                )
            };
            match got {
                1 => {
                    // SAFETY: DuckDB filled `array` with a struct of the
                    // result's columns, described by `chunk_schema`.
                    let data =
                        unsafe { from_ffi(array, &chunk_schema) }.map_err(|e| e.to_string())?;
                    let batch = RecordBatch::from(StructArray::from(data))
                        .with_schema(schema.clone())
                        .map_err(|e| e.to_string())?;
                    batches.push(batch);
                }
                0 => return Ok((schema, batches)),
                // SAFETY: `error` is null or a string from the shim.
                _ => {
                    return Err(unsafe { shim_error(error) }
                        .unwrap_or_else(|| "reading the result failed".into()))
                }
            }
        }
    }

    /// Registers `stream` as the view `name` in the connection's current
    /// schema, read through DuckDB's parallel `arrow_scan`
    /// (`duckdb_arrow_scan`). The stream must outlive every query on the view.
    pub fn arrow_scan_view(
        &self,
        name: &str,
        stream: *mut arrow::ffi_stream::FFI_ArrowArrayStream,
    ) -> Result<(), String> {
        let cname = c_string(name)?;
        // SAFETY: `self.con` is open; the caller keeps `stream` alive.
        let state = unsafe { ffi::duckdb_arrow_scan(self.con, cname.as_ptr(), stream.cast()) };
        if state == ffi::DuckDBSuccess {
            Ok(())
        } else {
            Err(format!(
                "could not register the Arrow stream as view {name}"
            ))
        }
    }

    /// The connection's current database (`current_database()`).
    pub fn current_database(&self) -> Result<String, String> {
        let (_, batches) = self.query_arrow("SELECT current_database()", &[])?;
        batches
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .map(|a| a.value(0).to_string())
            })
            .ok_or_else(|| "could not read current_database()".to_string())
    }

    /// The running statement's progress.
    pub fn progress(&self) -> Progress {
        // SAFETY: `self.con` is open; DuckDB reads it under its own lock.
        let p = unsafe { ffi::duckdb_query_progress(self.con) };
        Progress {
            percent: (p.percentage >= 0.0).then_some(p.percentage),
            rows_processed: p.rows_processed,
        }
    }

    /// Interrupts the running statement (it fails with "Interrupted").
    pub fn interrupt(&self) {
        // SAFETY: `self.con` is open; duckdb_interrupt is thread-safe.
        unsafe { ffi::duckdb_interrupt(self.con) };
    }
}

/// How long the calling thread sleeps when DuckDB has no task for it.
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_micros(500);

/// Runs a prepared statement to completion, its result discarded.
///
/// # Safety
/// `stmt` must be a prepared statement whose parameters are bound.
unsafe fn run_prepared(stmt: ffi::duckdb_prepared_statement) -> Result<(), String> {
    // SAFETY: an all-zero duckdb_result is the documented initial state.
    let mut result: ffi::duckdb_result = unsafe { std::mem::zeroed() };
    // SAFETY: `stmt` is prepared and bound (caller).
    unsafe { execute_polled(stmt, false, &mut result) }?;
    // SAFETY: filled by `execute_polled`, destroyed once.
    unsafe { ffi::duckdb_destroy_result(&mut result) };
    Ok(())
}

/// `duckdb_execute_prepared` (or its `_streaming` variant): runs a prepared
/// statement and fills `result`, which the caller destroys; on failure the
/// error message comes back and `result` is left empty.
///
/// The calling thread takes part in the work like in DuckDB's own execute
/// functions, but sleeps (`IDLE_WAIT`) while DuckDB has no task for it.
/// Those spin instead, recomputing the query's progress at every turn (the
/// progress bar is on, see `RawDatabase::raw_connection`): while DuckDB's
/// worker runs a single-threaded phase (a `POSITIONAL JOIN` scan, a sort's
/// merge), the waiting thread kept a second core busy, and of two statements
/// run side by side (`NativeBackend::execute_pair`) took a core from the
/// other. A streaming statement is polled until its first rows are ready
/// (DDL, DML and `COPY` until they are done); reading more rows is DuckDB's.
///
/// # Safety
/// `stmt` must be a prepared statement whose parameters are bound; `result`
/// must be an all-zero `duckdb_result`.
unsafe fn execute_polled(
    stmt: ffi::duckdb_prepared_statement,
    streaming: bool,
    result: &mut ffi::duckdb_result,
) -> Result<(), String> {
    let mut pending: ffi::duckdb_pending_result = ptr::null_mut();
    // SAFETY: `stmt` is prepared (caller); `pending` is destroyed below.
    let created = unsafe {
        if streaming {
            ffi::duckdb_pending_prepared_streaming(stmt, &mut pending)
        } else {
            ffi::duckdb_pending_prepared(stmt, &mut pending)
        }
    };
    let pending_error = |pending: ffi::duckdb_pending_result| {
        // SAFETY: the error text lives until `pending` is destroyed.
        let m = unsafe { ffi::duckdb_pending_error(pending) };
        unsafe { c_text(m, "query failed") }
    };
    let outcome = if created != ffi::DuckDBSuccess {
        Err(pending_error(pending))
    } else {
        loop {
            // SAFETY: `pending` is a live pending result.
            let state = unsafe { ffi::duckdb_pending_execute_task(pending) };
            if state == ffi::duckdb_pending_state_DUCKDB_PENDING_ERROR {
                break Err(pending_error(pending));
            }
            // SAFETY: plain function of the state.
            if unsafe { ffi::duckdb_pending_execution_is_finished(state) } {
                break Ok(());
            }
            if state == ffi::duckdb_pending_state_DUCKDB_PENDING_NO_TASKS_AVAILABLE {
                std::thread::sleep(IDLE_WAIT);
            }
        }
        .and_then(|()| {
            // SAFETY: `pending` is ready; `result` is the caller's.
            if unsafe { ffi::duckdb_execute_pending(pending, result) } == ffi::DuckDBSuccess {
                Ok(())
            } else {
                // SAFETY: on error `result` holds a message (or null).
                let msg = unsafe { ffi::duckdb_result_error(result) };
                let message = unsafe { c_text(msg, "query failed") };
                // SAFETY: filled by duckdb_execute_pending, destroyed once.
                unsafe { ffi::duckdb_destroy_result(result) };
                Err(message)
            }
        })
    };
    // SAFETY: `pending` came from DuckDB, destroyed once (a null handle is
    // a no-op).
    unsafe { ffi::duckdb_destroy_pending(&mut pending) };
    outcome
}

fn bind_params(stmt: ffi::duckdb_prepared_statement, params: &[Param]) -> Result<(), String> {
    for (i, p) in params.iter().enumerate() {
        let idx = (i + 1) as ffi::idx_t;
        // SAFETY: `stmt` is a prepared statement; the values outlive each call.
        let state = unsafe {
            match p {
                Param::Null => ffi::duckdb_bind_null(stmt, idx),
                Param::Bool(b) => ffi::duckdb_bind_boolean(stmt, idx, *b),
                Param::Int(v) => ffi::duckdb_bind_int64(stmt, idx, *v),
                Param::Float(v) => ffi::duckdb_bind_double(stmt, idx, *v),
                Param::Text(s) => ffi::duckdb_bind_varchar_length(
                    stmt,
                    idx,
                    s.as_ptr().cast(),
                    s.len() as ffi::idx_t,
                ),
                Param::Blob(b) => {
                    ffi::duckdb_bind_blob(stmt, idx, b.as_ptr().cast(), b.len() as ffi::idx_t)
                }
            }
        };
        if state != ffi::DuckDBSuccess {
            return Err(format!("could not bind parameter {} ({p:?})", i + 1));
        }
    }
    Ok(())
}

/// The Arrow schema DuckDB's converter gives columns of `types` named
/// `names`; destroys the types.
///
/// # Safety
/// `options` must be live Arrow options; `types` live logical types (not
/// used after); `names` NUL-terminated strings, one per type.
pub(super) unsafe fn arrow_schema(
    options: ffi::duckdb_arrow_options,
    types: &mut [ffi::duckdb_logical_type],
    names: &mut [*const std::os::raw::c_char],
) -> Result<Schema, String> {
    let mut ffi_schema = FFI_ArrowSchema::empty();
    // SAFETY: per the caller's contract; `ffi_schema` is released by its Drop.
    unsafe {
        let err = ffi::duckdb_to_arrow_schema(
            options,
            types.as_mut_ptr(),
            names.as_mut_ptr(),
            types.len() as ffi::idx_t,
            (&mut ffi_schema as *mut FFI_ArrowSchema).cast(),
        );
        for t in types.iter_mut() {
            ffi::duckdb_destroy_logical_type(t);
        }
        if let Some(m) = take_error(err) {
            return Err(m);
        }
    }
    Schema::try_from(&ffi_schema).map_err(|e| e.to_string())
}

/// Reads a materialised result as Arrow batches.
///
/// # Safety
/// `result` must hold a successful result that the caller destroys after.
unsafe fn read_result_arrow(
    result: &mut ffi::duckdb_result,
) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    unsafe {
        let mut options = ffi::duckdb_result_get_arrow_options(result);
        let n = ffi::duckdb_column_count(result);
        let mut types: Vec<ffi::duckdb_logical_type> = (0..n)
            .map(|i| ffi::duckdb_column_logical_type(result, i))
            .collect();
        let mut names: Vec<*const std::os::raw::c_char> =
            (0..n).map(|i| ffi::duckdb_column_name(result, i)).collect();
        let schema = arrow_schema(options, &mut types, &mut names);
        let outcome = (|| {
            let schema = Arc::new(schema?);
            // This thread fetches (driving DuckDB's parallel scan); a second
            // one converts chunks to Arrow, so the two overlap.
            let (tx, rx) = std::sync::mpsc::sync_channel::<ChunkHandle>(8);
            let shared = OptionsHandle(options);
            let schema_ref = &schema;
            let converted = std::thread::scope(|scope| {
                let converter = scope.spawn(move || -> Result<Vec<RecordBatch>, String> {
                    let shared = shared;
                    // The chunks' type, for importing them (FFI schemas are not Sync).
                    let struct_type =
                        arrow::datatypes::DataType::Struct(schema_ref.fields().clone());
                    let chunk_schema =
                        FFI_ArrowSchema::try_from(&struct_type).map_err(|e| e.to_string())?;
                    let mut batches = Vec::new();
                    let mut failure = None;
                    for ChunkHandle(mut chunk) in rx {
                        if failure.is_none() {
                            let mut array = FFI_ArrowArray::empty();
                            // SAFETY: `chunk` is ours (fetched, not yet destroyed);
                            // the options outlive the scope.
                            let err = ffi::duckdb_data_chunk_to_arrow(
                                shared.0,
                                chunk,
                                (&mut array as *mut FFI_ArrowArray).cast(),
                            );
                            match take_error(err) {
                                Some(m) => failure = Some(m),
                                None => match from_ffi(array, &chunk_schema)
                                    .map(|d| RecordBatch::from(StructArray::from(d)))
                                    .and_then(|b| b.with_schema(schema_ref.clone()))
                                {
                                    Ok(b) => batches.push(b),
                                    Err(e) => failure = Some(e.to_string()),
                                },
                            }
                        }
                        // SAFETY: fetched by DuckDB, destroyed exactly once here.
                        ffi::duckdb_destroy_data_chunk(&mut chunk);
                    }
                    failure.map_or(Ok(batches), Err)
                });
                loop {
                    let chunk = ffi::duckdb_fetch_chunk(*result);
                    if chunk.is_null() {
                        break;
                    }
                    if tx.send(ChunkHandle(chunk)).is_err() {
                        break;
                    }
                }
                drop(tx);
                converter
                    .join()
                    .unwrap_or_else(|_| Err("the Arrow converter panicked".into()))
            });
            let batches = converted?;
            // A streaming result reports a failure (an interrupt) after the fact.
            let err = ffi::duckdb_result_error(result);
            if !err.is_null() {
                return Err(CStr::from_ptr(err).to_string_lossy().into_owned());
            }
            Ok((schema, batches))
        })();
        ffi::duckdb_destroy_arrow_options(&mut options);
        outcome
    }
}

// src/cpp/arrow_result.cpp
extern "C" {
    fn duckmerge_arrow_stream_open(
        connection: ffi::duckdb_connection,
        sql: *const std::os::raw::c_char,
        batch_size: ffi::idx_t,
        out_schema: *mut std::ffi::c_void,
        out_error: *mut *mut std::os::raw::c_char,
    ) -> *mut std::ffi::c_void;
    fn duckmerge_arrow_stream_next(
        stream: *mut std::ffi::c_void,
        out: *mut std::ffi::c_void,
        out_error: *mut *mut std::os::raw::c_char,
    ) -> std::os::raw::c_int;
    fn duckmerge_arrow_stream_close(stream: *mut std::ffi::c_void);
    fn duckmerge_free_error(error: *mut std::os::raw::c_char);
}

/// An open result stream of the shim (or null), closed on drop (a query
/// still running ends).
struct ShimStream(*mut std::ffi::c_void);

impl Drop for ShimStream {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: opened by duckmerge_arrow_stream_open, closed once.
            unsafe { duckmerge_arrow_stream_close(self.0) };
        }
    }
}

/// The shim's error text (freed), or `None` for a null pointer.
///
/// # Safety
/// `error` must be null or a string from the shim, not used after.
unsafe fn shim_error(error: *mut std::os::raw::c_char) -> Option<String> {
    if error.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string from the shim, freed once here.
    unsafe {
        let text = CStr::from_ptr(error).to_string_lossy().into_owned();
        duckmerge_free_error(error);
        Some(text)
    }
}

/// A fetched data chunk handed to the converter thread.
struct ChunkHandle(ffi::duckdb_data_chunk);
// SAFETY: a fetched chunk is owned by whoever holds the handle; DuckDB does
// not touch it again, so it may move to another thread.
unsafe impl Send for ChunkHandle {}

/// The result's Arrow options, read by the converter thread.
#[derive(Clone, Copy)]
struct OptionsHandle(ffi::duckdb_arrow_options);
// SAFETY: the options are immutable after creation and outlive the scope.
unsafe impl Send for OptionsHandle {}

impl Drop for RawConnection {
    fn drop(&mut self) {
        // SAFETY: `self.con` came from duckdb_connect and is closed once.
        unsafe { ffi::duckdb_disconnect(&mut self.con) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement on `con`, in a thread, that runs until interrupted.
    fn start_endless_count(
        con: &Arc<RawConnection>,
    ) -> std::thread::JoinHandle<Result<(), String>> {
        let con = con.clone();
        std::thread::spawn(move || {
            con.execute("CREATE TABLE t AS SELECT count(*) FROM range(20000000000)")
        })
    }

    #[test]
    fn progress_is_readable_while_a_statement_runs() {
        let dir = tempfile::tempdir().unwrap();
        let db =
            RawDatabase::open(&dir.path().join("p.duckdb"), &[("threads", "1".into())]).unwrap();
        let con = std::sync::Arc::new(db.raw_connection().unwrap());
        let worker = start_endless_count(&con);
        std::thread::sleep(std::time::Duration::from_millis(800));
        let p = con.progress();
        con.interrupt();
        let err = worker.join().unwrap().unwrap_err();
        assert!(err.contains("nterrupt"), "{err}");
        assert!(p.percent.is_some(), "{p:?}");
        // The connection and a duckdb-rs one still work after the interrupt.
        con.execute("CREATE TABLE u AS SELECT 1 AS a").unwrap();
        let n: i64 = db
            .connection()
            .unwrap()
            .query_row("SELECT count(*) FROM u", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn execute_runs_statements_in_order_and_stops_at_the_first_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = RawDatabase::open(&dir.path().join("s.duckdb"), &[]).unwrap();
        let con = db.raw_connection().unwrap();
        // Each statement sees what the ones before it made.
        con.execute(
            "CREATE TABLE a AS SELECT 1 AS x; INSERT INTO a SELECT x + 1 FROM a; \
             INSERT INTO a SELECT max(x) + 1 FROM a",
        )
        .unwrap();
        let err = con
            .execute("INSERT INTO a VALUES (10); SELECT nope FROM a; INSERT INTO a VALUES (11)")
            .unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let rows: Vec<i32> = {
            let c = db.connection().unwrap();
            let mut stmt = c.prepare("SELECT x FROM a ORDER BY x").unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.map(|r| r.unwrap()).collect()
        };
        assert_eq!(rows, vec![1, 2, 3, 10]);
    }

    #[test]
    fn execute_reports_syntax_errors_and_accepts_blank_text() {
        let dir = tempfile::tempdir().unwrap();
        let db = RawDatabase::open(&dir.path().join("e.duckdb"), &[]).unwrap();
        let con = db.raw_connection().unwrap();
        let err = con.execute("SELEC 1").unwrap_err();
        assert!(err.contains("syntax error"), "{err}");
        con.execute("").unwrap();
        con.execute("  -- a comment only\n").unwrap();
        let err = con.execute("SELECT 1; SELEC 2").unwrap_err();
        assert!(err.contains("syntax error"), "{err}");
    }

    #[test]
    fn query_arrow_reports_errors_raised_while_the_query_runs() {
        let dir = tempfile::tempdir().unwrap();
        let db = RawDatabase::open(&dir.path().join("q.duckdb"), &[]).unwrap();
        let con = db.raw_connection().unwrap();
        // Prepared fine, fails on the second row's value.
        let err = con
            .query_arrow(
                "SELECT CAST(s AS INTEGER) AS i FROM (VALUES ('1'), ('x')) t(s)",
                &[],
            )
            .unwrap_err();
        assert!(err.contains("'x'"), "{err}");
        // A statement without rows runs to its end before the result is read.
        con.query_arrow("CREATE TABLE t AS SELECT range AS i FROM range(5000)", &[])
            .unwrap();
        let (_, batches) = con
            .query_arrow(
                "SELECT CAST(sum(i) AS BIGINT) AS s FROM t WHERE i >= ?",
                &[Param::Int(4998)],
            )
            .unwrap();
        let sums = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .map(|a| a.value(0));
        assert_eq!(sums, Some(4998 + 4999));
    }

    #[test]
    fn a_statement_is_interrupted_while_the_caller_waits_for_workers() {
        // Two threads: DuckDB's worker may run the single-threaded scan while
        // the calling thread sleeps between polls; the interrupt still ends it.
        let dir = tempfile::tempdir().unwrap();
        let db =
            RawDatabase::open(&dir.path().join("i.duckdb"), &[("threads", "2".into())]).unwrap();
        let con = std::sync::Arc::new(db.raw_connection().unwrap());
        let worker = start_endless_count(&con);
        // Repeated: DuckDB clears the flag when a statement begins.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !worker.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "not interrupted in 30 s"
            );
            con.interrupt();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let err = worker.join().unwrap().unwrap_err();
        assert!(err.contains("nterrupt"), "{err}");
        con.execute("CREATE TABLE u AS SELECT 1 AS a").unwrap();
    }

    #[test]
    fn arrow_round_trip_through_the_c_scan_and_converter() {
        use arrow::array::{Int64Array, StringArray};
        use arrow::datatypes::{DataType, Field};
        let db = RawDatabase::open(Path::new(":memory:"), &[]).unwrap();
        let con = db.raw_connection().unwrap();
        con.execute("CREATE TABLE t(id BIGINT, name VARCHAR)")
            .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let n = 5000;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| (i % 7 != 0).then_some(i)),
                )),
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| Some(format!("naïve-{i}"))),
                )),
            ],
        )
        .unwrap();
        let mut stream = arrow::ffi_stream::FFI_ArrowArrayStream::new(Box::new(
            arrow::record_batch::RecordBatchIterator::new([Ok(batch)], schema.clone()),
        ));
        con.arrow_scan_view("v", &mut stream).unwrap();
        con.execute("INSERT INTO t SELECT * FROM v; DROP VIEW v")
            .unwrap();
        assert_eq!(con.current_database().unwrap(), "memory");
        let (out_schema, batches) = con
            .query_arrow(
                "SELECT * FROM t WHERE id IS NULL OR id >= ? ORDER BY rowid",
                &[Param::Int(0)],
            )
            .unwrap();
        assert_eq!(out_schema.field(1).name(), "name");
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(total, n as usize);
        let first = &batches[0];
        let names = first
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(names.value(3), "naïve-3");
        assert!(first.column(0).is_null(0));
        let err = con.query_arrow("SELECT * FROM nowhere", &[]).unwrap_err();
        assert!(err.contains("nowhere"), "{err}");
    }

    fn parallel_db(threads: usize) -> (RawDatabase, RawConnection) {
        let db =
            RawDatabase::open(Path::new(":memory:"), &[("threads", threads.to_string())]).unwrap();
        let con = db.raw_connection().unwrap();
        (db, con)
    }

    fn rows(batches: &[RecordBatch]) -> usize {
        batches.iter().map(|b| b.num_rows()).sum()
    }

    #[test]
    fn a_parallel_read_comes_back_whole_and_in_order() {
        use arrow::array::{Int64Array, StringArray};
        for threads in [1, 4] {
            let (_db, con) = parallel_db(threads);
            con.execute(
                "CREATE TABLE t AS SELECT range AS i, 'v' || range AS s FROM range(1000000)",
            )
            .unwrap();
            // Deleted rows leave holes in the row groups; the order must still hold.
            con.execute("DELETE FROM t WHERE i % 7 = 3").unwrap();
            let (schema, batches) = con
                .query_arrow_parallel("SELECT * FROM t", 1_000_000)
                .unwrap();
            assert_eq!(schema.field(0).name(), "i");
            assert_eq!(schema.field(1).name(), "s");
            if threads > 1 {
                assert!(batches.len() > 1, "arrays end at the scan's batches");
            }
            let mut expected = (0..1_000_000i64).filter(|i| i % 7 != 3);
            for b in &batches {
                let ints = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                let strs = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                for (k, v) in ints.values().iter().enumerate() {
                    let want = expected.next().unwrap();
                    assert_eq!(*v, want, "threads={threads}");
                    assert_eq!(strs.value(k), format!("v{want}"));
                }
            }
            assert!(
                expected.next().is_none(),
                "rows missing (threads={threads})"
            );
        }
    }

    #[test]
    fn a_parallel_read_of_empty_tables_views_and_odd_names() {
        let (_db, con) = parallel_db(2);
        con.execute("CREATE TABLE e (a INTEGER, b VARCHAR)")
            .unwrap();
        let (schema, batches) = con.query_arrow_parallel("SELECT * FROM e", 1000).unwrap();
        assert_eq!(schema.fields().len(), 2);
        assert_eq!(rows(&batches), 0);
        con.execute("CREATE VIEW v AS SELECT 1 AS a UNION ALL SELECT 2")
            .unwrap();
        let (_, batches) = con.query_arrow_parallel("SELECT * FROM v", 1000).unwrap();
        assert_eq!(rows(&batches), 2);
        let name = super::super::quote_ident("a\"; DROP TABLE x; --");
        con.execute(&format!(
            "CREATE TABLE {name} AS SELECT 5::BIGINT AS rowid, 1 AS x"
        ))
        .unwrap();
        let (schema, batches) = con
            .query_arrow_parallel(&format!("SELECT * FROM {name}"), 1000)
            .unwrap();
        assert_eq!(schema.field(0).name(), "rowid");
        assert_eq!(rows(&batches), 1);
        let err = con
            .query_arrow_parallel("SELECT * FROM nowhere", 1000)
            .unwrap_err();
        assert!(err.contains("nowhere"), "{err}");
    }

    #[test]
    fn an_interrupted_parallel_read_fails_and_the_connection_stays_usable() {
        let (_db, con) = parallel_db(2);
        let con = Arc::new(con);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let interrupter = {
            let (con, done) = (con.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    con.interrupt();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        };
        let outcome = con.query_arrow_parallel("SELECT count(*) FROM range(100000000000)", 1000);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        interrupter.join().unwrap();
        let err = outcome.expect_err("the read was interrupted");
        assert!(
            err.contains("INTERRUPT") || err.contains("nterrupt"),
            "{err}"
        );
        let (_, batches) = con.query_arrow_parallel("SELECT 42", 1000).unwrap();
        assert_eq!(rows(&batches), 1);
    }

    #[test]
    fn only_a_single_select_counts_as_one() {
        let (_db, con) = parallel_db(2);
        con.execute("CREATE TABLE t (a INTEGER)").unwrap();
        assert!(con.is_select("SELECT * FROM t"));
        assert!(con.is_select("WITH x AS (SELECT 1) SELECT * FROM x"));
        assert!(!con.is_select("INSERT INTO t VALUES (1)"));
        assert!(!con.is_select("SELECT 1; SELECT 2"));
        assert!(!con.is_select("SELECT * FROM nowhere"));
        assert!(!con.is_select("CREATE TABLE u (b INTEGER)"));
        // Preparing ran nothing.
        let (_, batches) = con
            .query_arrow_parallel("SELECT count(*) FROM t", 10)
            .unwrap();
        let n = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(n, 0);
        assert!(con.query_arrow_parallel("SELECT * FROM u", 10).is_err());
    }

    #[test]
    fn open_error_is_duckdbs_message() {
        let err = RawDatabase::open(Path::new("/nonexistent-dir/x.duckdb"), &[])
            .err()
            .unwrap();
        assert!(!err.is_empty());
        let err = RawDatabase::open(Path::new(":memory:"), &[("memory_limit", "lots".into())])
            .err()
            .unwrap();
        assert!(err.contains("memory_limit"), "{err}");
    }
}
