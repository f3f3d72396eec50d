//! What a driver needs from where it runs: a SQL backend (native DuckDB or
//! a host's duckdb-python connection) and the host's ctx hooks.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duckdb::Connection;
use serde_json::{Map, Value};

use crate::arrow::Param;
use crate::error::{Error, Result};

use super::{Database, Progress, RawConnection};

/// Runs SQL for a driver. Both implementations receive the same statements.
pub trait SqlBackend {
    /// Runs statement(s) that return nothing worth keeping. Long statements
    /// call `ctx.check_cancel()` while they run and stop when it errors.
    fn execute(&self, sql: &str, params: &[Param], ctx: &dyn StepContext) -> Result<()>;
    /// Runs a query with a small result (counts, names) and returns its rows.
    fn query(&self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>>;
    /// Runs `main` and, beside it, `side`: at the same time on two
    /// connections where the backend has them (the session's own database),
    /// else one after the other. The outer error is `main`'s (or Ctrl-C);
    /// the inner result is `side`'s, which does not run when `main` fails.
    fn execute_pair(&self, main: &str, side: &str, ctx: &dyn StepContext) -> Result<Result<()>> {
        self.execute(main, &[], ctx)?;
        Ok(self.execute(side, &[], ctx))
    }
    /// The lock a merge on this database holds for its whole run, where the
    /// backend can share one (the session's own database); None for a host's
    /// connection.
    fn merge_lock(&self) -> Option<Arc<Mutex<()>>> {
        None
    }
    /// A second backend on the same database, for work that runs at the
    /// same time as this one's (where the backend can have one: the
    /// session's own database). None for a host's connection.
    fn helper(&self) -> Option<Box<dyn SqlBackend + Send + Sync>> {
        None
    }
    /// One value from a one-row query.
    fn query_value(&self, sql: &str, params: &[Param]) -> Result<Value> {
        Ok(self
            .query(sql, params)?
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next())
            .unwrap_or(Value::Null))
    }
}

/// The host's side of a step: logging hooks, base path, cancellation.
/// Shared by threads that work for one step at once (a merge loads two
/// files at a time), hence `Sync`.
pub trait StepContext: Sync {
    fn log_metric(&self, name: &str, value: Value);
    fn log_event(&self, event: &str, data: Map<String, Value>);
    /// Where relative input paths are looked up first.
    fn base_path(&self) -> Option<PathBuf>;
    /// Errors with `Cancelled` once the caller wants the work stopped (Ctrl-C).
    fn check_cancel(&self) -> Result<()>;
    /// A long statement's progress, at most every 0.5 s.
    fn on_progress(&self, _progress: Progress) {}
    /// The folder for temp files (transcoded inputs); the system temp by default.
    fn temp_dir(&self) -> PathBuf {
        std::env::temp_dir()
    }
}

/// A ctx that logs nothing and never cancels (tests, scripts).
pub struct NullContext;

impl StepContext for NullContext {
    fn log_metric(&self, _: &str, _: Value) {}
    fn log_event(&self, _: &str, _: Map<String, Value>) {}
    fn base_path(&self) -> Option<PathBuf> {
        None
    }
    fn check_cancel(&self) -> Result<()> {
        Ok(())
    }
}

/// The session's own DuckDB. A step runs its statements on one C-API
/// connection (temp tables such as DuckDB's CSV rejects stay visible), each
/// in a worker thread so the caller can report progress and watch for
/// cancellation; small queries go through a duckdb-rs connection.
pub struct NativeBackend {
    raw: Arc<Mutex<()>>,
    con: Arc<RawConnection>,
    conn: Mutex<Connection>,
    /// The second connection of `execute_pair`, with its own lock.
    side: (Arc<Mutex<()>>, Arc<RawConnection>),
    merge_lock: Arc<Mutex<()>>,
    /// The database, when shared: `helper()` connects to it again.
    db: Option<Arc<Database>>,
}

impl NativeBackend {
    pub fn new(db: &Database) -> Result<Self> {
        Ok(NativeBackend {
            raw: Arc::new(Mutex::new(())),
            con: Arc::new(db.connect_raw()?),
            conn: Mutex::new(db.connect()?),
            side: (Arc::new(Mutex::new(())), Arc::new(db.connect_raw()?)),
            merge_lock: db.merge_lock(),
            db: None,
        })
    }

    /// A backend on a shared database; it can lend a helper (`helper()`).
    pub fn shared(db: &Arc<Database>) -> Result<Self> {
        Ok(NativeBackend {
            db: Some(db.clone()),
            ..NativeBackend::new(db)?
        })
    }
}

/// How often a running statement's progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

impl NativeBackend {
    /// Runs a parameterless batch on the raw connection from a worker thread,
    /// reporting progress and checking for cancellation while it runs.
    fn execute_native(&self, sql: &str, ctx: &dyn StepContext) -> Result<()> {
        let rx = start_statement(&self.con, &self.raw, sql)?;
        wait_statement(&self.con, &rx, ctx, true)
    }
}

/// Starts `sql` on `con` in a worker thread (one statement at a time per
/// connection, under `lock`); its result arrives on the returned channel.
fn start_statement(
    con: &Arc<RawConnection>,
    lock: &Arc<Mutex<()>>,
    sql: &str,
) -> Result<Receiver<Result<()>>> {
    let (tx, rx) = sync_channel(1);
    let (con, lock, sql) = (con.clone(), lock.clone(), sql.to_string());
    std::thread::Builder::new()
        .name("duckmerge-step".into())
        .spawn(move || {
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            let _ = tx.send(con.execute(&sql).map_err(|m| Error::sql_text("SQL", m)));
        })
        .map_err(|e| Error::io("starting the statement thread", e))?;
    Ok(rx)
}

/// Interrupts the statement on `con` until its thread reports back. DuckDB
/// clears the flag when a statement begins, so an interrupt that comes
/// before the statement has started is repeated.
fn interrupt_until_done(con: &RawConnection, rx: &Receiver<Result<()>>) {
    loop {
        con.interrupt();
        match rx.recv_timeout(Duration::from_millis(50)) {
            Err(RecvTimeoutError::Timeout) => continue,
            _ => return,
        }
    }
}

/// Waits for a statement started by `start_statement`, checking for
/// cancellation (which interrupts it) and, with `report`, passing its
/// progress to the ctx every 0.5 s.
fn wait_statement(
    con: &RawConnection,
    rx: &Receiver<Result<()>>,
    ctx: &dyn StepContext,
    report: bool,
) -> Result<()> {
    let mut last_report = std::time::Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(result) => return result,
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = ctx.check_cancel() {
                    interrupt_until_done(con, rx);
                    return Err(e);
                }
                if report && last_report.elapsed() >= PROGRESS_EVERY {
                    last_report = std::time::Instant::now();
                    ctx.on_progress(con.progress());
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Arrow(
                    "the statement thread ended without a result".into(),
                ))
            }
        }
    }
}

impl SqlBackend for NativeBackend {
    fn execute(&self, sql: &str, params: &[Param], ctx: &dyn StepContext) -> Result<()> {
        if !params.is_empty() {
            let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            return conn
                .execute(sql, duckdb::params_from_iter(params.iter()))
                .map(|_| ())
                .map_err(|e| Error::sql("SQL", e));
        }
        timed("SQL", sql, || self.execute_native(sql, ctx))
    }

    fn query(&self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>> {
        timed("query", sql, || self.query_rows(sql, params))
    }

    fn merge_lock(&self) -> Option<Arc<Mutex<()>>> {
        Some(self.merge_lock.clone())
    }

    fn helper(&self) -> Option<Box<dyn SqlBackend + Send + Sync>> {
        let db = self.db.as_ref()?;
        match NativeBackend::shared(db) {
            Ok(b) => Some(Box::new(b)),
            Err(e) => {
                log::debug!("no second connection for a helper ({e})");
                None
            }
        }
    }

    fn execute_pair(&self, main: &str, side: &str, ctx: &dyn StepContext) -> Result<Result<()>> {
        let (lock, con) = &self.side;
        let started = std::time::Instant::now();
        let side_rx = start_statement(con, lock, side)?;
        if let Err(e) = timed("SQL", main, || self.execute_native(main, ctx)) {
            interrupt_until_done(con, &side_rx);
            return Err(e);
        }
        let side_result = wait_statement(con, &side_rx, ctx, false);
        log_statement(
            &format!("SQL beside it {:.3}s", started.elapsed().as_secs_f64()),
            side,
        );
        // A Ctrl-C while only `side` ran stops the step, as it would have.
        ctx.check_cancel()?;
        Ok(side_result)
    }
}

/// Runs `run` and logs its time at debug level with the start of `sql`:
/// `SQL 1.234s (CPU 2.10s): CREATE TABLE …`, where CPU is what the whole
/// process used meanwhile (all threads; left out where it cannot be read).
/// CPU close to the wall time marks a statement DuckDB ran on one thread.
fn timed<T>(label: &str, sql: &str, run: impl FnOnce() -> T) -> T {
    if !log::log_enabled!(log::Level::Debug) {
        return run();
    }
    let cpu = process_cpu_seconds();
    let started = std::time::Instant::now();
    let out = run();
    let wall = started.elapsed().as_secs_f64();
    let used = match (cpu, process_cpu_seconds()) {
        (Some(a), Some(b)) => format!(" (CPU {:.2}s)", (b - a).max(0.0)),
        _ => String::new(),
    };
    log_statement(&format!("{label} {wall:.3}s{used}"), sql);
    out
}

/// Characters of a statement a debug log line shows.
const SQL_PREVIEW_CHARS: usize = 160;

/// Logs `{head}: {the start of sql}` at debug level; a longer statement
/// follows whole at trace level (Python's `logging` level 5) as
/// `in full: {sql}`.
fn log_statement(head: &str, sql: &str) {
    let preview: String = sql.chars().take(SQL_PREVIEW_CHARS).collect();
    log::debug!("{head}: {preview}");
    if preview.len() < sql.len() {
        log::trace!("in full: {sql}");
    }
}

/// CPU seconds the process has used so far, all threads, from
/// `/proc/self/stat` (Linux; `None` elsewhere).
fn process_cpu_seconds() -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User + system time from a `/proc/<pid>/stat` line: fields 14 and 15, in
/// clock ticks of 1/100 s (`USER_HZ`, fixed for this interface). Fields are
/// counted after the command name, which is in parentheses and may hold
/// spaces.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (the state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

impl NativeBackend {
    fn query_rows(&self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare(sql).map_err(|e| Error::sql("SQL", e))?;
        let mut rows = stmt
            .query(duckdb::params_from_iter(params.iter()))
            .map_err(|e| Error::sql("SQL", e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| Error::sql("SQL", e))? {
            let n = row.as_ref().column_count();
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                let v: duckdb::types::Value = row.get(i).map_err(|e| Error::sql("SQL", e))?;
                values.push(duckdb_value_to_json(v));
            }
            out.push(values);
        }
        Ok(out)
    }
}

/// A DuckDB value as JSON (small metadata results only).
pub fn duckdb_value_to_json(v: duckdb::types::Value) -> Value {
    use duckdb::types::Value as V;
    match v {
        V::Null => Value::Null,
        V::Boolean(b) => Value::Bool(b),
        V::TinyInt(i) => Value::from(i),
        V::SmallInt(i) => Value::from(i),
        V::Int(i) => Value::from(i),
        V::BigInt(i) => Value::from(i),
        V::HugeInt(i) => Value::from(i as f64),
        V::UTinyInt(i) => Value::from(i),
        V::USmallInt(i) => Value::from(i),
        V::UInt(i) => Value::from(i),
        V::UBigInt(i) => Value::from(i),
        V::Float(f) => Value::from(f as f64),
        V::Double(f) => Value::from(f),
        V::Text(s) => Value::String(s),
        V::List(items) | V::Array(items) => {
            Value::Array(items.into_iter().map(duckdb_value_to_json).collect())
        }
        other => Value::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn native() -> NativeBackend {
        NativeBackend::new(&Database::in_memory().unwrap()).unwrap()
    }

    fn count(b: &NativeBackend, table: &str) -> Value {
        b.query_value(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
    }

    #[test]
    fn cpu_seconds_come_from_fields_14_and_15_of_the_stat_line() {
        // A command name with spaces and a parenthesis, as the kernel shows it.
        let line = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1234 56 0 0 20 0 3 0 100 1000000 500";
        assert_eq!(parse_cpu_seconds(line), Some(12.90));
        assert_eq!(parse_cpu_seconds("4242 (short) S 1 2 3"), None);
        assert_eq!(parse_cpu_seconds("no parenthesis"), None);
        if cfg!(target_os = "linux") {
            let before = process_cpu_seconds().unwrap();
            let started = std::time::Instant::now();
            let mut x = 0u64;
            while started.elapsed() < std::time::Duration::from_millis(300) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            // Busy for 0.3 s of wall time: at least 0.1 s of CPU shows up.
            assert!(process_cpu_seconds().unwrap() - before >= 0.1);
        }
    }

    #[test]
    fn execute_pair_runs_both_statements() {
        let b = native();
        let side = b
            .execute_pair(
                "CREATE TABLE a AS SELECT * FROM range(100000)",
                "CREATE TABLE b AS SELECT * FROM range(7)",
                &NullContext,
            )
            .unwrap();
        assert!(side.is_ok());
        assert_eq!(count(&b, "a"), Value::from(100000));
        assert_eq!(count(&b, "b"), Value::from(7));
    }

    #[test]
    fn a_failing_side_statement_is_the_inner_error_and_main_stands() {
        let b = native();
        let side = b
            .execute_pair(
                "CREATE TABLE a AS SELECT 1 AS x",
                "CREATE TABLE b AS SELECT * FROM no_such_table",
                &NullContext,
            )
            .unwrap();
        let err = side.unwrap_err().to_string();
        assert!(err.contains("no_such_table"), "{err}");
        assert_eq!(count(&b, "a"), Value::from(1));
    }

    #[test]
    fn a_failing_main_statement_stops_a_long_side_statement() {
        let b = native();
        let started = std::time::Instant::now();
        let err = b
            .execute_pair(
                "CREATE TABLE a AS SELECT * FROM no_such_table",
                "CREATE TABLE b AS SELECT sum(i) FROM range(1000000000000) t(i)",
                &NullContext,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_table"), "{err}");
        // Interrupted, not run for the hours a trillion rows take.
        assert!(started.elapsed() < Duration::from_secs(60));
        assert!(b.query("SELECT * FROM b", &[]).is_err());
    }

    /// Records statements; fails those containing "fail".
    struct Recorder(RefCell<Vec<String>>);

    impl SqlBackend for Recorder {
        fn execute(&self, sql: &str, _: &[Param], _: &dyn StepContext) -> Result<()> {
            self.0.borrow_mut().push(sql.to_string());
            if sql.contains("fail") {
                return Err(Error::Config(format!("{sql} failed")));
            }
            Ok(())
        }
        fn query(&self, _: &str, _: &[Param]) -> Result<Vec<Vec<Value>>> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn the_default_pair_runs_main_then_side_and_side_only_after_main() {
        let r = Recorder(RefCell::new(Vec::new()));
        assert!(r
            .execute_pair("main", "side", &NullContext)
            .unwrap()
            .is_ok());
        assert!(r
            .execute_pair("main2", "side fail", &NullContext)
            .unwrap()
            .is_err());
        assert!(r.execute_pair("main fail", "side3", &NullContext).is_err());
        assert_eq!(
            *r.0.borrow(),
            ["main", "side", "main2", "side fail", "main fail"]
        );
    }
}
