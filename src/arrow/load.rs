//! Arrow batches into a DuckDB table: a staging table filled by DuckDB's
//! parallel `arrow_scan`, swapped in by the same transaction.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ffi_stream::FFI_ArrowArrayStream;
use arrow::record_batch::RecordBatchReader;
use duckdb::Connection;

use super::stream::Poll;
use super::types::{arrow_to_duckdb_sql, normalize_batch, normalize_schema};
use crate::backend::{
    check_table_name, quote_ident, relation_exists, staging_name, Database, RawConnection,
    SCRATCH_DB,
};
use crate::error::{Error, Result};

/// What `write_table` does when the target exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Fail if the table exists.
    Create,
    /// Replace it.
    Replace,
    /// Add the rows to it (matching columns by name); create it if missing.
    Append,
}

impl FromStr for WriteMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "create" => Ok(WriteMode::Create),
            "replace" => Ok(WriteMode::Replace),
            "append" => Ok(WriteMode::Append),
            other => Err(Error::Config(format!(
                "mode {other:?} is not valid; use one of \"create\", \"replace\", \"append\""
            ))),
        }
    }
}

enum LoadMessage {
    Batch(RecordBatch),
    Commit,
}

/// Batches queued for the loader thread.
const LOAD_DEPTH: usize = 4;

/// A load in progress. Batches go to a loader thread that owns a connection:
/// in one transaction it creates a staging table, fills it with `INSERT …
/// SELECT` from the batches (DuckDB's `arrow_scan`, which converts and
/// compresses them on all of the database's threads, in the input's order)
/// and, once `commit` is asked for, swaps it in. Dropping the load without
/// committing (an error, Ctrl-C) rolls back: the target is exactly as it was.
pub struct TableLoad {
    tx: Option<SyncSender<LoadMessage>>,
    done: Receiver<Result<u64>>,
    schema: SchemaRef,
    result: Option<Result<u64>>,
}

impl TableLoad {
    /// Starts a load of `schema`-shaped batches into `target`.
    pub fn start(db: &Database, target: &str, schema: &Schema, mode: WriteMode) -> Result<Self> {
        let conn = db.connect()?;
        let raw = db.connect_raw()?;
        check_table_name(target)?;
        if schema.fields().is_empty() {
            return Err(Error::Config(format!(
                "cannot write table \"{target}\": the data has no columns"
            )));
        }
        if mode == WriteMode::Create && relation_exists(&conn, target)? {
            return Err(Error::Config(format!(
                "table \"{target}\" already exists; pass mode=\"replace\" or mode=\"append\""
            )));
        }
        let schema = normalize_schema(schema);
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                Ok(format!(
                    "{} {}",
                    quote_ident(f.name()),
                    arrow_to_duckdb_sql(f.data_type())?
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let staging = staging_name();
        let create = format!(
            "CREATE TABLE {} ({})",
            quote_ident(&staging),
            columns.join(", ")
        );
        let (tx, rx) = sync_channel(LOAD_DEPTH);
        let (done_tx, done) = sync_channel(1);
        let target = target.to_string();
        let worker_schema = schema.clone();
        std::thread::Builder::new()
            .name("duckmerge-load".into())
            .spawn(move || {
                let job = LoadJob {
                    raw: &raw,
                    create: &create,
                    staging: &staging,
                    target: &target,
                    mode,
                    schema: &worker_schema,
                };
                let _ = done_tx.send(run_load(&job, &conn, rx));
            })
            .map_err(|e| Error::io("starting the load thread", e))?;
        Ok(TableLoad {
            tx: Some(tx),
            done,
            schema,
            result: None,
        })
    }

    /// The schema batches are appended with.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Queues a batch (blocks while the queue is full). If the loader has
    /// failed, returns its error.
    pub fn append(&mut self, batch: RecordBatch) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(LoadMessage::Batch(batch)).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            self.tx = None;
            Err(self
                .wait_result()
                .err()
                .unwrap_or_else(|| Error::Arrow("the loader stopped before the data ended".into())))
        }
    }

    /// Asks the loader to swap the staging table in; then wait with
    /// [`TableLoad::poll_commit`].
    pub fn request_commit(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(LoadMessage::Commit);
        }
    }

    /// Waits up to `timeout` for the commit; `Ready(rows)` when done.
    pub fn poll_commit(&mut self, timeout: Duration) -> Result<Poll<u64>> {
        self.request_commit();
        if let Some(r) = &self.result {
            return clone_result(r).map(Poll::Ready);
        }
        match self.done.recv_timeout(timeout) {
            Ok(r) => {
                let out = clone_result(&r).map(Poll::Ready);
                self.result = Some(r);
                out
            }
            Err(RecvTimeoutError::Timeout) => Ok(Poll::Pending),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Arrow(
                "the loader thread ended without a result".into(),
            )),
        }
    }

    /// Commits and blocks until done; returns the rows written.
    pub fn commit(mut self) -> Result<u64> {
        loop {
            if let Poll::Ready(n) = self.poll_commit(Duration::from_secs(3600))? {
                return Ok(n);
            }
        }
    }

    /// Abandons the load; the loader rolls back. Blocks until it has.
    pub fn abort(mut self) {
        self.tx = None;
        let _ = self.wait_result();
    }

    fn wait_result(&mut self) -> Result<u64> {
        if self.result.is_none() {
            self.result = Some(
                self.done
                    .recv()
                    .unwrap_or_else(|_| Err(Error::Arrow("the loader thread ended".into()))),
            );
        }
        clone_result(self.result.as_ref().expect("set above"))
    }
}

impl Drop for TableLoad {
    fn drop(&mut self) {
        // Closing the channel without Commit makes the loader roll back; wait
        // so the caller sees the previous table once this returns.
        self.tx = None;
        if self.result.is_none() {
            let _ = self.done.recv();
        }
    }
}

fn clone_result(r: &Result<u64>) -> Result<u64> {
    match r {
        Ok(n) => Ok(*n),
        Err(e) => Err(clone_error(e)),
    }
}

/// What a load writes.
struct LoadJob<'a> {
    raw: &'a RawConnection,
    create: &'a str,
    staging: &'a str,
    target: &'a str,
    mode: WriteMode,
    schema: &'a SchemaRef,
}

impl LoadJob<'_> {
    fn ctx(&self, what: &str) -> String {
        format!("writing table \"{}\": {what}", self.target)
    }

    fn cancelled(&self) -> Error {
        Error::Cancelled(format!(
            "writing table \"{}\" stopped before the data ended; nothing was changed",
            self.target
        ))
    }

    /// The statements that put the finished staging table in place of (or
    /// into) the target, run inside the caller's transaction.
    fn swap_sql(&self, conn: &Connection) -> Result<String> {
        let exists = relation_exists(conn, self.target)?;
        let (s, t) = (quote_ident(self.staging), quote_ident(self.target));
        Ok(match (self.mode, exists) {
            (WriteMode::Append, true) => {
                format!("INSERT INTO {t} BY NAME SELECT * FROM {s}; DROP TABLE {s};")
            }
            (WriteMode::Replace, true) => {
                format!("DROP TABLE {t}; ALTER TABLE {s} RENAME TO {t};")
            }
            (WriteMode::Create, true) => {
                return Err(Error::Config(format!(
                    "table \"{}\" already exists; pass mode=\"replace\" or mode=\"append\"",
                    self.target
                )))
            }
            (_, false) => format!("ALTER TABLE {s} RENAME TO {t};"),
        })
    }
}

/// DuckDB's row group size: the pieces handed to `arrow_scan`.
const ROW_GROUP_ROWS: usize = 122_880;

/// The load's batches as the Arrow stream `arrow_scan` reads: normalised to
/// the load's schema and cut or joined into pieces of exactly a row group's
/// rows but the last (each piece is a unit of DuckDB's parallel scan and
/// becomes one whole row group), ended by `Commit`. A closed channel (the
/// producer failed or gave up) ends the scan with an error, and so the
/// `INSERT`; a batch that cannot be normalised leaves its error in `failure`.
struct ChannelReader {
    rx: Receiver<LoadMessage>,
    schema: SchemaRef,
    queue: VecDeque<RecordBatch>,
    /// The start of the next piece: slices of fewer than a row group's rows.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    rows: Arc<AtomicU64>,
    /// Set when the channel closed without `Commit`: the producer gave up.
    abandoned: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<Error>>>,
    done: bool,
}

impl Iterator for ChannelReader {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(b) = self.queue.pop_front() {
                return Some(Ok(b));
            }
            if self.done {
                return None;
            }
            match self.rx.recv() {
                Ok(LoadMessage::Batch(batch)) => {
                    if let Err(e) = self.take(batch) {
                        self.done = true;
                        let message = e.to_string();
                        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return Some(Err(ArrowError::ExternalError(message.into())));
                    }
                }
                Ok(LoadMessage::Commit) => {
                    self.done = true;
                    if let Err(e) = self.cut() {
                        return Some(Err(e));
                    }
                }
                Err(_) => {
                    self.done = true;
                    self.abandoned.store(true, Ordering::Release);
                    return Some(Err(ArrowError::ExternalError(
                        "the data ended before the load was committed".into(),
                    )));
                }
            }
        }
    }
}

impl ChannelReader {
    /// Normalises `batch` and adds it to the pieces.
    fn take(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = normalize_batch(batch, &self.schema)?;
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = (ROW_GROUP_ROWS - self.pending_rows).min(batch.num_rows() - offset);
            self.pending.push(batch.slice(offset, len));
            self.pending_rows += len;
            offset += len;
            if self.pending_rows == ROW_GROUP_ROWS {
                self.cut().map_err(|e| Error::Arrow(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Queues the pending slices as one piece (copied only when there are
    /// several).
    fn cut(&mut self) -> std::result::Result<(), ArrowError> {
        let piece = match self.pending.len() {
            0 => return Ok(()),
            1 => self.pending.pop().expect("one slice"),
            _ => arrow::compute::concat_batches(&self.schema, &self.pending)?,
        };
        self.pending.clear();
        self.pending_rows = 0;
        self.queue.push_back(piece);
        Ok(())
    }
}

impl RecordBatchReader for ChannelReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// The load: the batches' stream registered as a view in [`SCRATCH_DB`], then
/// one transaction that creates the staging table, fills it from the view,
/// swaps it in and commits. Returns the rows written.
fn run_load(job: &LoadJob<'_>, conn: &Connection, rx: Receiver<LoadMessage>) -> Result<u64> {
    let raw = job.raw;
    let rows = Arc::new(AtomicU64::new(0));
    let abandoned = Arc::new(AtomicBool::new(false));
    let failure = Arc::new(Mutex::new(None));
    // Dropped at the end of this function, after the view: dropping it
    // drops `rx` too, so a producer still sending gets the error.
    let mut stream = FFI_ArrowArrayStream::new(Box::new(ChannelReader {
        rx,
        schema: job.schema.clone(),
        queue: VecDeque::new(),
        pending: Vec::new(),
        pending_rows: 0,
        rows: rows.clone(),
        abandoned: abandoned.clone(),
        failure: failure.clone(),
        done: false,
    }));
    let view = format!(
        "{}.main.{}",
        quote_ident(SCRATCH_DB),
        quote_ident(job.staging)
    );
    let registered = register_view(raw, job.staging, &mut stream)
        .map_err(|e| Error::sql_text(job.ctx("reading the data"), e));
    let result = registered.and_then(|()| {
        raw.execute(&format!(
            "BEGIN TRANSACTION; {}; INSERT INTO {} SELECT * FROM {view};",
            job.create,
            quote_ident(job.staging)
        ))
        .map_err(|e| {
            let failed = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
            match failed {
                Some(error) => error,
                None if abandoned.load(Ordering::Acquire) => job.cancelled(),
                None => Error::sql_text(job.ctx("appending rows"), e),
            }
        })?;
        let swap = job.swap_sql(conn)?;
        raw.execute(&format!("{swap} COMMIT;"))
            .map_err(|e| Error::sql_text(job.ctx("swapping the new rows in"), e))?;
        Ok(rows.load(Ordering::Relaxed))
    });
    if result.is_err() {
        let _ = raw.execute("ROLLBACK");
    }
    // The view reads `stream`: it goes first.
    let _ = raw.execute(&format!("DROP VIEW IF EXISTS {view}"));
    drop(stream);
    if let Ok(n) = &result {
        log::debug!(
            "wrote {n} rows to table \"{}\" ({:?})",
            job.target,
            job.mode
        );
    }
    result
}

/// Registers `stream` as view `name` of [`SCRATCH_DB`] (attached if needed)
/// on `raw`, whose current database is the same before and after.
fn register_view(
    raw: &RawConnection,
    name: &str,
    stream: &mut FFI_ArrowArrayStream,
) -> std::result::Result<(), String> {
    let home = raw.current_database()?;
    let scratch = quote_ident(SCRATCH_DB);
    raw.execute(&format!(
        "ATTACH IF NOT EXISTS ':memory:' AS {scratch}; USE {scratch};"
    ))?;
    let registered = raw.arrow_scan_view(name, stream);
    let back = raw.execute(&format!("USE {}", quote_ident(&home)));
    registered.and(back)
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::Cancelled(m) => Error::Cancelled(m.clone()),
        Error::Config(m) => Error::Config(m.clone()),
        e => Error::Arrow(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let names: Vec<String> = values.iter().map(|v| format!("n{v}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(values.to_vec())),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(
            &format!("SELECT count(*) FROM {}", quote_ident(table)),
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn write(db: &Database, name: &str, values: &[i64], mode: WriteMode) -> Result<u64> {
        let b = batch(values);
        let mut load = TableLoad::start(db, name, &b.schema(), mode)?;
        load.append(b)?;
        load.commit()
    }

    #[test]
    fn modes_create_replace_append() {
        let db = Database::in_memory().unwrap();
        let conn = db.connect().unwrap();
        assert_eq!(write(&db, "t", &[1, 2, 3], WriteMode::Create).unwrap(), 3);
        assert!(matches!(
            write(&db, "t", &[9], WriteMode::Create),
            Err(Error::Config(_))
        ));
        assert_eq!(count(&conn, "t"), 3);
        write(&db, "t", &[4, 5], WriteMode::Append).unwrap();
        assert_eq!(count(&conn, "t"), 5);
        write(&db, "t", &[7], WriteMode::Replace).unwrap();
        assert_eq!(count(&conn, "t"), 1);
        assert_eq!(
            crate::backend::list_tables(&conn).unwrap(),
            vec!["t".to_string()]
        );
    }

    #[test]
    fn abandoned_load_leaves_previous_table_and_no_staging() {
        let db = Database::in_memory().unwrap();
        let conn = db.connect().unwrap();
        write(&db, "t", &[1, 2], WriteMode::Create).unwrap();
        let b = batch(&[10, 11, 12]);
        let mut load = TableLoad::start(&db, "t", &b.schema(), WriteMode::Replace).unwrap();
        load.append(b).unwrap();
        load.abort();
        assert_eq!(count(&conn, "t"), 2);
        let staging: i64 = conn
            .query_row(
                "SELECT count(*) FROM duckdb_tables() WHERE starts_with(table_name, '_duckmerge_staging_')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(staging, 0);
    }

    #[test]
    fn parallel_load_keeps_the_input_order_in_whole_row_groups() {
        let db = Database::in_memory().unwrap();
        let conn = db.connect().unwrap();
        conn.execute_batch("SET threads = 3").unwrap();
        let rows = 5 * ROW_GROUP_ROWS + 1_000;
        let ids: Vec<i64> = (0..rows as i64).collect();
        let mut load =
            TableLoad::start(&db, "t", &batch(&[0]).schema(), WriteMode::Create).unwrap();
        for part in ids.chunks(50_000) {
            load.append(batch(part)).unwrap();
        }
        assert_eq!(load.commit().unwrap(), rows as u64);
        let misplaced: i64 = conn
            .query_row(
                "SELECT count(*) FROM (SELECT id, name, rowid AS pos FROM t) \
                 WHERE id <> pos OR name <> 'n' || pos",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(count(&conn, "t"), rows as i64);
        assert_eq!(misplaced, 0);
        // The scan's view is gone, and the connections' database is the same.
        let views: i64 = conn
            .query_row(
                "SELECT count(*) FROM duckdb_views() WHERE NOT internal",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(views, 0);
    }

    #[test]
    fn a_batch_that_does_not_fit_the_schema_fails_the_load_and_changes_nothing() {
        let db = Database::in_memory().unwrap();
        let conn = db.connect().unwrap();
        write(&db, "t", &[1, 2], WriteMode::Create).unwrap();
        let mut load =
            TableLoad::start(&db, "t", &batch(&[0]).schema(), WriteMode::Replace).unwrap();
        load.append(batch(&[5, 6])).unwrap();
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["a"]))],
        )
        .unwrap();
        let appended = load.append(other);
        let outcome = appended.and_then(|()| load.commit());
        assert!(outcome.is_err());
        assert_eq!(count(&conn, "t"), 2);
    }

    #[test]
    fn bad_mode_lists_the_valid_ones() {
        let err = "upsert".parse::<WriteMode>().unwrap_err().to_string();
        assert!(err.contains("create") && err.contains("append"), "{err}");
    }
}
