//! The DuckDB C API where duckdb-rs has no wrapper: a database whose raw
//! handle we keep, and connections whose query progress can be read while a
//! statement runs (DuckDB reports CSV progress as the share of bytes read).

use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr;

use duckdb::{ffi, Connection};

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

fn c_string(s: &str) -> Result<CString, String> {
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
        // SAFETY: an all-zero duckdb_result is the documented initial state.
        let mut result: ffi::duckdb_result = unsafe { std::mem::zeroed() };
        // SAFETY: `self.con` is open, `csql` outlives the call, `result` is valid.
        let state = unsafe { ffi::duckdb_query(self.con, csql.as_ptr(), &mut result) };
        let outcome = if state == ffi::DuckDBSuccess {
            Ok(())
        } else {
            // SAFETY: on error `result` holds a NUL-terminated message (or null).
            let msg = unsafe { ffi::duckdb_result_error(&mut result) };
            Err(if msg.is_null() {
                "query failed".to_string()
            } else {
                unsafe { CStr::from_ptr(msg) }
                    .to_string_lossy()
                    .into_owned()
            })
        };
        // SAFETY: `result` was filled by duckdb_query and is destroyed once.
        unsafe { ffi::duckdb_destroy_result(&mut result) };
        outcome
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

impl Drop for RawConnection {
    fn drop(&mut self) {
        // SAFETY: `self.con` came from duckdb_connect and is closed once.
        unsafe { ffi::duckdb_disconnect(&mut self.con) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_readable_while_a_statement_runs() {
        let dir = tempfile::tempdir().unwrap();
        let db =
            RawDatabase::open(&dir.path().join("p.duckdb"), &[("threads", "1".into())]).unwrap();
        let con = std::sync::Arc::new(db.raw_connection().unwrap());
        let worker = {
            let con = con.clone();
            std::thread::spawn(move || {
                con.execute("CREATE TABLE t AS SELECT count(*) FROM range(20000000000)")
            })
        };
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
