//! A whole table as Arrow, converted inside DuckDB's parallel scan.
//!
//! DuckDB's C API has no parallel Arrow result collector (the one
//! duckdb-python uses is C++-only): a streamed result is copied into a
//! buffer and converted on the fetching side. A C API aggregate function is
//! the parallel sink the C API does offer. `__duckmerge_arrow_chunks(token,
//! rowid, row)` runs in every DuckDB worker thread; each call converts the
//! chunk it is given with DuckDB's C++ Arrow converter and hands the batch to
//! the collector registered under `token`. Batches are put back in table
//! order by the first `rowid` of each (a table scan emits chunks of
//! consecutive rows), so the result is the same as `SELECT * FROM t`.

use std::collections::HashMap;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use arrow::array::{AsArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use arrow::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use duckdb::ffi;

use super::quote_ident;
use super::raw::{arrow_schema, c_string, c_text, take_error, RawConnection};
use crate::error::is_interrupt_message;

/// The aggregate's name (registered in each database's system catalog,
/// never stored in the file).
pub const COLLECT_FUNCTION: &str = "__duckmerge_arrow_chunks";

/// Alias of the scanned table; the alias as a column is the whole row.
const ROW_ALIAS: &str = "__duckmerge_row";

/// A query's batches as the workers convert them: (first rowid, batch).
struct Collector {
    options: ffi::duckdb_arrow_options,
    /// The converted chunk's type, struct<token, rowid, row>, made once.
    chunk_type: FFI_ArrowSchema,
    schema: SchemaRef,
    batches: Mutex<Vec<(i64, RecordBatch)>>,
}

// SAFETY: the Arrow options and the chunk type are created before the query,
// only read while it runs (DuckDB's converter takes the options by const
// reference; `from_ffi` reads the schema) and released after it has ended.
unsafe impl Send for Collector {}
// SAFETY: as above; the batches are behind a mutex.
unsafe impl Sync for Collector {}

impl Drop for Collector {
    fn drop(&mut self) {
        // SAFETY: created by duckdb_connection_get_arrow_options, destroyed once.
        unsafe { ffi::duckdb_destroy_arrow_options(&mut self.options) };
    }
}

static COLLECTORS: LazyLock<Mutex<HashMap<i64, Arc<Collector>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT_TOKEN: AtomicI64 = AtomicI64::new(1);

fn collectors() -> std::sync::MutexGuard<'static, HashMap<i64, Arc<Collector>>> {
    COLLECTORS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes its collector from the registry however the query ends.
struct Registration(i64);

impl Drop for Registration {
    fn drop(&mut self) {
        collectors().remove(&self.0);
    }
}

impl Collector {
    /// Converts one input chunk (token, rowid, row) and keeps its rows.
    ///
    /// # Safety
    /// `chunk` must be the live chunk DuckDB passed to the update callback.
    unsafe fn add(&self, chunk: ffi::duckdb_data_chunk) -> Result<(), String> {
        let mut array = FFI_ArrowArray::empty();
        // SAFETY: `chunk` is live for the callback; the options outlive the query.
        let err = unsafe {
            ffi::duckdb_data_chunk_to_arrow(
                self.options,
                chunk,
                (&mut array as *mut FFI_ArrowArray).cast(),
            )
        };
        if let Some(m) = take_error(err) {
            return Err(m);
        }
        // SAFETY: DuckDB filled `array` with a struct array of `chunk_type`.
        let data = unsafe { from_ffi(array, &self.chunk_type) }.map_err(|e| e.to_string())?;
        let chunk = StructArray::from(data);
        let rowids = chunk.column(1).as_primitive::<Int64Type>();
        if rowids.is_empty() {
            return Ok(());
        }
        let first = rowids.value(0);
        let row: &StructArray = chunk.column(2).as_struct();
        let batch = RecordBatch::try_new(self.schema.clone(), row.columns().to_vec())
            .map_err(|e| e.to_string())?;
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((first, batch));
        Ok(())
    }
}

/// The update callback: every state is the query's one (ungrouped) state,
/// which holds nothing; the rows go to the collector named by the token.
unsafe extern "C" fn update(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    _states: *mut ffi::duckdb_aggregate_state,
) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: DuckDB passes a live chunk whose first column is the BIGINT
        // token, flattened (the C API flattens aggregate inputs).
        let token = unsafe {
            if ffi::duckdb_data_chunk_get_size(input) == 0 {
                return Ok(());
            }
            let tokens = ffi::duckdb_data_chunk_get_vector(input, 0);
            *(ffi::duckdb_vector_get_data(tokens) as *const i64)
        };
        let collector = collectors()
            .get(&token)
            .cloned()
            .ok_or_else(|| format!("{COLLECT_FUNCTION}: no collector for this query"))?;
        // SAFETY: `input` is the live chunk of this callback.
        unsafe { collector.add(input) }
    }));
    let message = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(m)) => m,
        Err(_) => format!("{COLLECT_FUNCTION} panicked"),
    };
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: `info` is this callback's; DuckDB copies the message.
    unsafe { ffi::duckdb_aggregate_function_set_error(info, message.as_ptr()) };
}

unsafe extern "C" fn state_size(_info: ffi::duckdb_function_info) -> ffi::idx_t {
    1
}

unsafe extern "C" fn init(_info: ffi::duckdb_function_info, _state: ffi::duckdb_aggregate_state) {}

unsafe extern "C" fn combine(
    _info: ffi::duckdb_function_info,
    _source: *mut ffi::duckdb_aggregate_state,
    _target: *mut ffi::duckdb_aggregate_state,
    _count: ffi::idx_t,
) {
}

/// The aggregate's value is 0; only the collected batches matter.
unsafe extern "C" fn finalize(
    _info: ffi::duckdb_function_info,
    _source: *mut ffi::duckdb_aggregate_state,
    result: ffi::duckdb_vector,
    count: ffi::idx_t,
    offset: ffi::idx_t,
) {
    // SAFETY: `result` is a BIGINT vector with room for offset + count values.
    unsafe {
        let data = ffi::duckdb_vector_get_data(result) as *mut i64;
        for i in 0..count as usize {
            *data.add(offset as usize + i) = 0;
        }
    }
}

/// Registers the collecting aggregate in the database `con` belongs to.
pub fn register(con: &RawConnection) -> Result<(), String> {
    let name = c_string(COLLECT_FUNCTION)?;
    // SAFETY: every handle created here is destroyed before returning; the
    // callbacks are plain functions that live for the whole program.
    unsafe {
        let mut function = ffi::duckdb_create_aggregate_function();
        ffi::duckdb_aggregate_function_set_name(function, name.as_ptr());
        for t in [
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_ANY,
        ] {
            let mut lt = ffi::duckdb_create_logical_type(t);
            ffi::duckdb_aggregate_function_add_parameter(function, lt);
            ffi::duckdb_destroy_logical_type(&mut lt);
        }
        let mut ret = ffi::duckdb_create_logical_type(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT);
        ffi::duckdb_aggregate_function_set_return_type(function, ret);
        ffi::duckdb_destroy_logical_type(&mut ret);
        ffi::duckdb_aggregate_function_set_functions(
            function,
            Some(state_size),
            Some(init),
            Some(update),
            Some(combine),
            Some(finalize),
        );
        let state = ffi::duckdb_register_aggregate_function(con.handle(), function);
        ffi::duckdb_destroy_aggregate_function(&mut function);
        if state != ffi::DuckDBSuccess {
            return Err(format!("could not register {COLLECT_FUNCTION}"));
        }
    }
    Ok(())
}

/// The Arrow schema DuckDB gives a prepared statement's columns.
fn prepared_arrow_schema(con: &RawConnection, sql: &str) -> Result<Schema, String> {
    let csql = c_string(sql)?;
    let mut stmt: ffi::duckdb_prepared_statement = ptr::null_mut();
    // SAFETY: `con` is open; `stmt` and every handle below are destroyed here.
    unsafe {
        if ffi::duckdb_prepare(con.handle(), csql.as_ptr(), &mut stmt) != ffi::DuckDBSuccess {
            let message = c_text(ffi::duckdb_prepare_error(stmt), "could not prepare");
            ffi::duckdb_destroy_prepare(&mut stmt);
            return Err(message);
        }
        let n = ffi::duckdb_prepared_statement_column_count(stmt);
        let mut types: Vec<ffi::duckdb_logical_type> = (0..n)
            .map(|i| ffi::duckdb_prepared_statement_column_logical_type(stmt, i))
            .collect();
        let names: Vec<CString> = (0..n)
            .map(|i| {
                let p = ffi::duckdb_prepared_statement_column_name(stmt, i);
                let name = CString::from(std::ffi::CStr::from_ptr(p));
                ffi::duckdb_free(p as *mut std::ffi::c_void);
                name
            })
            .collect();
        let mut name_ptrs: Vec<*const std::os::raw::c_char> =
            names.iter().map(|n| n.as_ptr()).collect();
        let mut options: ffi::duckdb_arrow_options = ptr::null_mut();
        ffi::duckdb_connection_get_arrow_options(con.handle(), &mut options);
        let schema = arrow_schema(options, &mut types, &mut name_ptrs);
        ffi::duckdb_destroy_arrow_options(&mut options);
        ffi::duckdb_destroy_prepare(&mut stmt);
        schema
    }
}

impl RawConnection {
    /// All rows of `table` (a base table) as Arrow, converted in DuckDB's
    /// worker threads, in table order. `Ok(None)` when this path does not
    /// apply (a view, or a type whose nested conversion differs) and the
    /// caller should stream `SELECT *` instead.
    pub fn table_arrow(
        &self,
        table: &str,
    ) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>, String> {
        let from = format!("{} AS {ROW_ALIAS}", quote_ident(table));
        // Column 0-2: what the aggregate receives; 3..: the table's own columns.
        let probe =
            format!("SELECT 0::BIGINT, {ROW_ALIAS}.rowid, {ROW_ALIAS}, * FROM {from} LIMIT 0");
        let probe = match prepared_arrow_schema(self, &probe) {
            Ok(probe) => probe,
            // An interrupt must end the read, not send it down the other path.
            Err(e) if is_interrupt_message(&e) => return Err(e),
            Err(_) => return Ok(None), // no rowid (a view) or not a table
        };
        let columns: Vec<_> = probe.fields().iter().skip(3).cloned().collect();
        if columns
            .iter()
            .any(|c| c.name().eq_ignore_ascii_case("rowid"))
        {
            return Ok(None); // the table's own rowid column hides DuckDB's
        }
        let chunk_type = DataType::Struct(probe.fields().iter().take(3).cloned().collect());
        let chunk_type = FFI_ArrowSchema::try_from(&chunk_type).map_err(|e| e.to_string())?;
        let DataType::Struct(row_fields) = probe.field(2).data_type() else {
            return Ok(None);
        };
        // The row's fields must convert exactly as top-level columns do.
        if row_fields.len() != columns.len()
            || row_fields
                .iter()
                .zip(&columns)
                .any(|(a, b)| a.as_ref() != b.as_ref())
        {
            return Ok(None);
        }
        let schema: SchemaRef = Arc::new(Schema::new(columns));
        let mut options: ffi::duckdb_arrow_options = ptr::null_mut();
        // SAFETY: `self` is open; the options are destroyed by the Collector.
        unsafe { ffi::duckdb_connection_get_arrow_options(self.handle(), &mut options) };
        let collector = Arc::new(Collector {
            options,
            chunk_type,
            schema: schema.clone(),
            batches: Mutex::new(Vec::new()),
        });
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        collectors().insert(token, collector.clone());
        let registration = Registration(token);
        let sql = format!(
            "SELECT {COLLECT_FUNCTION}({token}::BIGINT, {ROW_ALIAS}.rowid, {ROW_ALIAS}) FROM {from}"
        );
        let outcome = self.execute(&sql);
        drop(registration);
        match outcome {
            Ok(()) => {}
            Err(e) if is_interrupt_message(&e) => return Err(e),
            // E.g. the table changed between the probe and the read: the
            // streaming path reads it as it is now, or reports the error.
            Err(e) => {
                log::debug!("{COLLECT_FUNCTION} on {table:?} failed ({e}); streaming instead");
                return Ok(None);
            }
        }
        let mut batches =
            std::mem::take(&mut *collector.batches.lock().unwrap_or_else(|p| p.into_inner()));
        batches.sort_unstable_by_key(|(first, _)| *first);
        Ok(Some((
            schema,
            batches.into_iter().map(|(_, b)| b).collect(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RawDatabase;
    use arrow::array::{Int64Array, StringArray};
    use std::path::Path;

    /// The tests look at the global registry: one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn db(threads: usize) -> (RawDatabase, RawConnection) {
        let db =
            RawDatabase::open(Path::new(":memory:"), &[("threads", threads.to_string())]).unwrap();
        let con = db.raw_connection().unwrap();
        (db, con)
    }

    #[test]
    fn a_table_comes_back_whole_and_in_order() {
        let _serial = serial();
        let (_db, con) = db(4);
        con.execute("CREATE TABLE t AS SELECT range AS i, 'v' || range AS s FROM range(1000000)")
            .unwrap();
        // Deleted rows leave holes in rowid; the order must still hold.
        con.execute("DELETE FROM t WHERE i % 7 = 3").unwrap();
        let (schema, batches) = con.table_arrow("t").unwrap().expect("a base table");
        assert_eq!(schema.field(0).name(), "i");
        assert_eq!(schema.field(1).name(), "s");
        let mut expected = (0..1_000_000i64).filter(|i| i % 7 != 3);
        for b in &batches {
            let ints = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let strs = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            for (k, v) in ints.values().iter().enumerate() {
                let want = expected.next().unwrap();
                assert_eq!(*v, want);
                assert_eq!(strs.value(k), format!("v{want}"));
            }
        }
        assert!(expected.next().is_none(), "rows missing");
        assert!(collectors().is_empty(), "collector left registered");
    }

    #[test]
    fn an_empty_table_has_its_schema_and_no_rows() {
        let _serial = serial();
        let (_db, con) = db(2);
        con.execute("CREATE TABLE e (a INTEGER, b VARCHAR)")
            .unwrap();
        let (schema, batches) = con.table_arrow("e").unwrap().unwrap();
        assert_eq!(schema.fields().len(), 2);
        assert!(batches.iter().all(|b| b.num_rows() == 0));
    }

    #[test]
    fn a_view_is_left_to_the_streaming_path() {
        let _serial = serial();
        let (_db, con) = db(2);
        con.execute("CREATE VIEW v AS SELECT 1 AS a").unwrap();
        assert!(con.table_arrow("v").unwrap().is_none());
        assert!(con.table_arrow("missing").unwrap().is_none());
    }

    #[test]
    fn odd_names_are_just_names() {
        let _serial = serial();
        let (_db, con) = db(2);
        let name = "a\"; DROP TABLE x; --";
        con.execute(&format!(
            "CREATE TABLE {} AS SELECT 42 AS {}",
            quote_ident(name),
            quote_ident(ROW_ALIAS)
        ))
        .unwrap();
        // A column named like the row alias makes the alias mean the column:
        // the path must step aside rather than return the wrong thing.
        assert!(con.table_arrow(name).unwrap().is_none());
        // So must a user column called rowid, which hides DuckDB's.
        con.execute("CREATE TABLE r AS SELECT 5::BIGINT AS rowid, 1 AS x")
            .unwrap();
        assert!(con.table_arrow("r").unwrap().is_none());
        con.execute(&format!(
            "CREATE TABLE {} (x INTEGER)",
            quote_ident("with space")
        ))
        .unwrap();
        con.execute("INSERT INTO \"with space\" VALUES (1), (2)")
            .unwrap();
        let (_, batches) = con.table_arrow("with space").unwrap().unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    }

    #[test]
    fn an_interrupted_read_fails_and_unregisters() {
        let _serial = serial();
        let (_db, con) = db(2);
        con.execute("CREATE TABLE t AS SELECT range AS i, 'v' || range AS s FROM range(3000000)")
            .unwrap();
        let con = Arc::new(con);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let interrupter = {
            let (con, done) = (con.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    con.interrupt();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        };
        let outcome = con.table_arrow("t");
        done.store(true, Ordering::Relaxed);
        interrupter.join().unwrap();
        let err = outcome.expect_err("the read was interrupted");
        assert!(
            err.contains("INTERRUPT") || err.contains("nterrupt"),
            "{err}"
        );
        assert!(collectors().is_empty(), "collector left registered");
        // The connection still works.
        let (_, batches) = con.table_arrow("t").unwrap().unwrap();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            3_000_000
        );
    }
}
