//! Arrow batches into a DuckDB table: staging table, Appender, one-transaction swap.

use std::str::FromStr;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use duckdb::Connection;

use super::stream::Poll;
use super::types::{arrow_to_duckdb_sql, normalize_batch, normalize_schema};
use crate::backend::{
    check_table_name, quote_ident, relation_exists, staging_name, Database, RawAppender,
    RawConnection,
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

/// A load in progress. Batches go to a worker thread that owns the
/// connection and appends them into a staging table inside one transaction;
/// `commit` swaps the staging table in. Dropping the load without committing
/// (an error, Ctrl-C) rolls back: the target is exactly as it was.
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
        let workers = load_workers(&conn)?;
        let bulk_loads = db.bulk_loads();
        let worker_conns = if workers > 1 {
            (0..workers)
                .map(|_| db.connect_raw())
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
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
                let result = if worker_conns.is_empty() {
                    let result = run_load(&job, &conn, rx);
                    if result.is_err() {
                        let _ = raw.execute("ROLLBACK");
                    }
                    result
                } else {
                    bulk_loads.enter(&conn);
                    let result = run_parallel_load(&job, &conn, worker_conns, rx);
                    bulk_loads.leave(&conn);
                    result
                };
                let _ = done_tx.send(result);
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

/// What a load writes, shared by the one-connection and the parallel loader.
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

    /// An appender into the staging table on `raw`.
    fn appender<'c>(&self, raw: &'c RawConnection) -> Result<RawAppender<'c>> {
        raw.appender(self.staging, self.schema)
            .map_err(|e| Error::sql_text(self.ctx("opening the appender"), e))
    }

    /// Appends one batch (normalised to the load's schema); returns its rows.
    /// `since_flush` counts the rows appended since the appender last
    /// flushed: it flushes at every [`ROW_GROUP_ROWS`], so the table gets
    /// whole row groups. (DuckDB 2.0 starts a new row group at each flush,
    /// and its appender flushes on its own every 204,800 rows otherwise:
    /// row groups of 122,880 and 83,418 rows.)
    fn append(
        &self,
        appender: &mut RawAppender<'_>,
        batch: RecordBatch,
        since_flush: &mut usize,
    ) -> Result<u64> {
        let batch = normalize_batch(batch, self.schema)?;
        let n = batch.num_rows();
        let mut offset = 0;
        while offset < n {
            let len = (ROW_GROUP_ROWS - *since_flush).min(n - offset);
            appender
                .append(&batch.slice(offset, len))
                .map_err(|e| Error::sql_text(self.ctx("appending rows"), e))?;
            offset += len;
            *since_flush += len;
            if *since_flush == ROW_GROUP_ROWS {
                appender
                    .flush()
                    .map_err(|e| Error::sql_text(self.ctx("appending rows"), e))?;
                *since_flush = 0;
            }
        }
        Ok(n as u64)
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

/// How many connections append at once: the database's `threads` setting,
/// at most [`MAX_LOAD_WORKERS`]. One means a single transaction.
fn load_workers(conn: &Connection) -> Result<usize> {
    let threads: i64 = conn
        .query_row("SELECT current_setting('threads')::BIGINT", [], |r| {
            r.get(0)
        })
        .map_err(|e| Error::sql("reading the threads setting", e))?;
    Ok((threads.max(1) as usize).min(MAX_LOAD_WORKERS))
}

/// The upper bound on parallel appenders.
const MAX_LOAD_WORKERS: usize = 4;

/// DuckDB's row group size: segments are whole row groups, so every
/// committed segment is merged into the table as finished row groups.
const ROW_GROUP_ROWS: usize = 122_880;

/// Rows one worker appends and commits at a time: as many row groups as
/// there are workers, at least two. DuckDB writes a segment's last row group
/// during its commit, and commits take turns, so that last 1/n of the work
/// is serial; with n workers it then takes no longer than the rest.
fn segment_rows(workers: usize) -> usize {
    workers.max(2) * ROW_GROUP_ROWS
}

/// Loads on one connection in one transaction: staging table, appender,
/// swap, commit.
fn run_load(job: &LoadJob<'_>, conn: &Connection, rx: Receiver<LoadMessage>) -> Result<u64> {
    let raw = job.raw;
    raw.execute(&format!("BEGIN TRANSACTION; {}", job.create))
        .map_err(|e| Error::sql_text(job.ctx("creating the staging table"), e))?;
    let mut rows = 0u64;
    {
        let mut appender = job.appender(raw)?;
        let mut since_flush = 0;
        loop {
            match rx.recv() {
                Ok(LoadMessage::Batch(batch)) => {
                    rows += job.append(&mut appender, batch, &mut since_flush)?
                }
                Ok(LoadMessage::Commit) => break,
                Err(_) => return Err(job.cancelled()),
            }
        }
        appender
            .close()
            .map_err(|e| Error::sql_text(job.ctx("flushing the appender"), e))?;
    }
    let swap = job.swap_sql(conn)?;
    raw.execute(&swap)
        .map_err(|e| Error::sql_text(job.ctx("swapping the new rows in"), e))?;
    raw.execute("COMMIT")
        .map_err(|e| Error::sql_text(job.ctx("commit"), e))?;
    log::debug!(
        "wrote {rows} rows to table \"{}\" ({:?})",
        job.target,
        job.mode
    );
    Ok(rows)
}

/// A message to one parallel worker.
enum SegmentMessage {
    /// A new segment begins: its index in the input's order.
    Start(usize),
    Batch(RecordBatch),
    /// The segment is complete: append, then commit in turn.
    End,
}

/// State shared by the dispatcher and the workers of a parallel load.
#[derive(Default)]
struct LoadState {
    /// Rows dispatched and not yet appended (bounds the memory held).
    in_flight: usize,
    /// The segment whose commit is next: commits follow the input's order.
    next_commit: usize,
    /// Set when any side fails; everyone stops.
    failed: bool,
    /// The first real error.
    error: Option<Error>,
}

struct Shared {
    state: std::sync::Mutex<LoadState>,
    changed: std::sync::Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, LoadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failure (the first error is kept) and wakes everyone.
    fn fail(&self, error: Option<Error>) {
        let mut s = self.lock();
        s.failed = true;
        if s.error.is_none() {
            s.error = error;
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Waits until `rows` more fit in the budget (always when nothing is in
    /// flight); false if the load failed meanwhile.
    fn reserve(&self, rows: usize, budget: usize) -> bool {
        let mut s = self.lock();
        while !s.failed && s.in_flight > 0 && s.in_flight + rows > budget {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.failed {
            return false;
        }
        s.in_flight += rows;
        true
    }

    fn release(&self, rows: usize) {
        self.lock().in_flight -= rows;
        self.changed.notify_all();
    }

    /// Waits for `segment`'s turn to commit; false if the load failed.
    fn wait_turn(&self, segment: usize) -> bool {
        let mut s = self.lock();
        while !s.failed && s.next_commit != segment {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        !s.failed
    }

    fn committed(&self) {
        self.lock().next_commit += 1;
        self.changed.notify_all();
    }
}

/// Loads with several connections at once. The input is cut into segments
/// of whole row groups, dealt to the workers in turn; each worker appends a
/// segment in a transaction of its own (DuckDB compresses and writes its row
/// groups on that thread) and commits it when every earlier segment has been
/// committed, so the staging table keeps the input's row order. The staging
/// table is committed empty first so that the workers see it; the swap is
/// one more transaction. On any failure the staging table is dropped (a
/// crash leaves it to the session's next open) and the target is untouched.
fn run_parallel_load(
    job: &LoadJob<'_>,
    conn: &Connection,
    workers: Vec<RawConnection>,
    rx: Receiver<LoadMessage>,
) -> Result<u64> {
    job.raw
        .execute(job.create)
        .map_err(|e| Error::sql_text(job.ctx("creating the staging table"), e))?;
    let result = dispatch_segments(job, &workers, rx).and_then(|rows| {
        let swap = job.swap_sql(conn)?;
        job.raw
            .execute(&format!("BEGIN TRANSACTION; {swap} COMMIT;"))
            .map_err(|e| {
                let _ = job.raw.execute("ROLLBACK");
                Error::sql_text(job.ctx("swapping the new rows in"), e)
            })?;
        Ok(rows)
    });
    match result {
        Ok(rows) => {
            log::debug!(
                "wrote {rows} rows to table \"{}\" ({:?}, {} appenders)",
                job.target,
                job.mode,
                workers.len()
            );
            Ok(rows)
        }
        Err(e) => {
            let _ = job.raw.execute(&format!(
                "DROP TABLE IF EXISTS {}",
                quote_ident(job.staging)
            ));
            Err(e)
        }
    }
}

/// Deals the input to the workers segment by segment; returns the rows
/// committed to the staging table once every worker has finished.
fn dispatch_segments(
    job: &LoadJob<'_>,
    workers: &[RawConnection],
    rx: Receiver<LoadMessage>,
) -> Result<u64> {
    let shared = Shared {
        state: Default::default(),
        changed: Default::default(),
    };
    let seg_rows = segment_rows(workers.len());
    let budget = (workers.len() + 1) * seg_rows;
    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(workers.len());
        let mut handles = Vec::with_capacity(workers.len());
        for (i, raw) in workers.iter().enumerate() {
            let (tx, wrx) = std::sync::mpsc::channel();
            senders.push(tx);
            let shared = &shared;
            let handle = std::thread::Builder::new()
                .name(format!("duckmerge-load-{i}"))
                .spawn_scoped(scope, move || {
                    let result = append_segments(job, raw, wrx, shared);
                    if let Err(e) = &result {
                        let _ = raw.execute("ROLLBACK");
                        if !matches!(e, Error::Cancelled(_)) {
                            shared.fail(Some(clone_error(e)));
                        }
                        shared.fail(None);
                    }
                    result
                })
                .map_err(|e| Error::io("starting a load thread", e))?;
            handles.push(handle);
        }
        let dispatched = deal(job, &senders, rx, &shared, budget, seg_rows);
        if dispatched.is_err() {
            shared.fail(None);
        }
        drop(senders);
        let mut rows = 0u64;
        for handle in handles {
            match handle.join() {
                Ok(Ok(n)) => rows += n,
                Ok(Err(_)) => {}
                Err(_) => shared.fail(Some(Error::Arrow(job.ctx("a load thread panicked")))),
            }
        }
        let mut state = shared.lock();
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        dispatched?;
        if state.failed {
            return Err(job.cancelled());
        }
        Ok(rows)
    })
}

/// The dispatcher: cuts the incoming batches at segment boundaries and sends
/// segment `i` to worker `i % workers`.
fn deal(
    job: &LoadJob<'_>,
    senders: &[std::sync::mpsc::Sender<SegmentMessage>],
    rx: Receiver<LoadMessage>,
    shared: &Shared,
    budget: usize,
    seg_rows: usize,
) -> Result<()> {
    let mut segment = 0usize;
    let mut segment_rows = 0usize;
    let mut open = false;
    let send = |segment: usize, m: SegmentMessage| -> Result<()> {
        senders[segment % senders.len()]
            .send(m)
            .map_err(|_| job.cancelled())
    };
    loop {
        match rx.recv() {
            Ok(LoadMessage::Batch(batch)) => {
                let mut offset = 0;
                while offset < batch.num_rows() {
                    if !open {
                        send(segment, SegmentMessage::Start(segment))?;
                        open = true;
                    }
                    let take = (seg_rows - segment_rows).min(batch.num_rows() - offset);
                    if !shared.reserve(take, budget) {
                        return Err(job.cancelled());
                    }
                    send(segment, SegmentMessage::Batch(batch.slice(offset, take)))?;
                    offset += take;
                    segment_rows += take;
                    if segment_rows == seg_rows {
                        send(segment, SegmentMessage::End)?;
                        segment += 1;
                        segment_rows = 0;
                        open = false;
                    }
                }
            }
            Ok(LoadMessage::Commit) => {
                if open {
                    send(segment, SegmentMessage::End)?;
                }
                return Ok(());
            }
            Err(_) => return Err(job.cancelled()),
        }
    }
}

/// One worker: for each segment it is dealt, a transaction, an appender, and
/// a commit in the segment's turn. Returns the rows it committed.
fn append_segments(
    job: &LoadJob<'_>,
    raw: &RawConnection,
    rx: Receiver<SegmentMessage>,
    shared: &Shared,
) -> Result<u64> {
    let mut rows = 0u64;
    loop {
        let segment = match rx.recv() {
            Ok(SegmentMessage::Start(segment)) => segment,
            Ok(_) => return Err(Error::Arrow(job.ctx("a segment arrived without its start"))),
            Err(_) => return Ok(rows),
        };
        raw.execute("BEGIN TRANSACTION")
            .map_err(|e| Error::sql_text(job.ctx("starting a transaction"), e))?;
        let mut segment_rows = 0u64;
        let mut appender = job.appender(raw)?;
        let mut since_flush = 0;
        loop {
            match rx.recv() {
                Ok(SegmentMessage::Batch(batch)) => {
                    let n = batch.num_rows();
                    let appended = job.append(&mut appender, batch, &mut since_flush);
                    shared.release(n);
                    segment_rows += appended?;
                }
                Ok(SegmentMessage::End) => break,
                Ok(SegmentMessage::Start(_)) => {
                    return Err(Error::Arrow(job.ctx("a segment started inside another")))
                }
                Err(_) => return Err(job.cancelled()),
            }
        }
        appender
            .close()
            .map_err(|e| Error::sql_text(job.ctx("flushing the appender"), e))?;
        if !shared.wait_turn(segment) {
            return Err(job.cancelled());
        }
        raw.execute("COMMIT")
            .map_err(|e| Error::sql_text(job.ctx("committing a segment"), e))?;
        shared.committed();
        rows += segment_rows;
    }
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
    fn parallel_load_commits_segments_in_the_input_order() {
        let db = Database::in_memory().unwrap();
        let conn = db.connect().unwrap();
        conn.execute_batch("SET threads = 3").unwrap();
        assert_eq!(load_workers(&conn).unwrap(), 3);
        let rows = 3 * segment_rows(3) + 1_000;
        let ids: Vec<i64> = (0..rows as i64).collect();
        let mut load =
            TableLoad::start(&db, "t", &batch(&[0]).schema(), WriteMode::Create).unwrap();
        for part in ids.chunks(50_000) {
            load.append(batch(part)).unwrap();
        }
        assert_eq!(load.commit().unwrap(), rows as u64);
        let misplaced: i64 = conn
            .query_row(
                "SELECT count(*) FROM (SELECT id, name, row_number() OVER () - 1 AS pos FROM t) \
                 WHERE id <> pos OR name <> 'n' || pos",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(count(&conn, "t"), rows as i64);
        assert_eq!(misplaced, 0);
        let setting: String = conn
            .query_row(
                "SELECT current_setting('write_buffer_row_group_count')::VARCHAR",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(setting, "5", "the load puts DuckDB's default back");
    }

    #[test]
    fn segments_are_whole_row_groups_one_per_worker_at_least_two() {
        assert_eq!(segment_rows(1), 2 * ROW_GROUP_ROWS);
        assert_eq!(segment_rows(2), 2 * ROW_GROUP_ROWS);
        assert_eq!(segment_rows(4), 4 * ROW_GROUP_ROWS);
    }

    #[test]
    fn bad_mode_lists_the_valid_ones() {
        let err = "upsert".parse::<WriteMode>().unwrap_err().to_string();
        assert!(err.contains("create") && err.contains("append"), "{err}");
    }
}
