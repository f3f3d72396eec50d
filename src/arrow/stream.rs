//! Query results out of DuckDB as a stream of Arrow batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatchReader;
use duckdb::types::{ToSql, ToSqlOutput, Value};
use duckdb::{Connection, InterruptHandle};

use crate::error::{Error, Result};

/// A query parameter (`?`), converted from the caller's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl ToSql for Param {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(match self {
            Param::Null => Value::Null,
            Param::Bool(b) => Value::Boolean(*b),
            Param::Int(i) => Value::BigInt(*i),
            Param::Float(f) => Value::Double(*f),
            Param::Text(s) => Value::Text(s.clone()),
            Param::Blob(b) => Value::Blob(b.clone()),
        }))
    }
}

enum Message {
    Schema(SchemaRef),
    Batch(RecordBatch),
    Failed(Error),
    /// Every row was sent.
    End,
}

/// The streams still running on one database, so that closing it can end
/// them: a stream whose consumer stopped reading halfway keeps its query,
/// and so a transaction, open, and DuckDB cannot checkpoint past it.
#[derive(Default)]
pub struct OpenStreams {
    live: Mutex<Vec<Weak<StreamWorker>>>,
}

/// What `OpenStreams` holds of a stream: alive as long as its worker thread
/// (and so its connection) is.
struct StreamWorker {
    closed: Arc<AtomicBool>,
    interrupt: Arc<InterruptHandle>,
}

impl OpenStreams {
    /// Ends every running stream: their consumers get `Error::Closed` once
    /// they have read what was already sent. Waits up to `wait` for the
    /// worker threads, and so their connections, to end; false if some are
    /// still running then.
    pub fn close_all(&self, wait: Duration) -> bool {
        let workers: Vec<Arc<StreamWorker>> = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|w| w.strong_count() > 0);
            live.iter().filter_map(Weak::upgrade).collect()
        };
        for w in &workers {
            w.closed.store(true, Ordering::SeqCst);
            w.interrupt.interrupt();
        }
        let watched: Vec<Weak<StreamWorker>> = workers.iter().map(Arc::downgrade).collect();
        drop(workers);
        let started = Instant::now();
        loop {
            if watched.iter().all(|w| w.strong_count() == 0) {
                return true;
            }
            if started.elapsed() >= wait {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn register(&self, worker: &Arc<StreamWorker>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(worker));
    }
}

/// Batches in flight between DuckDB and the consumer: enough to keep both
/// busy, few enough that memory stays bounded whatever the result size.
const CHANNEL_DEPTH: usize = 4;

/// A running query. The worker thread owns the connection; dropping the
/// stream before the end interrupts the query.
pub struct QueryStream {
    rx: Receiver<Message>,
    interrupt: Arc<InterruptHandle>,
    /// Set when the database closed the stream (`OpenStreams::close_all`).
    closed: Arc<AtomicBool>,
    schema: Option<SchemaRef>,
    /// The first batch, when [`QueryStream::poll_first`] has read it.
    ahead: Option<RecordBatch>,
    finished: bool,
    worker: Option<JoinHandle<()>>,
}

/// What a wait with a timeout returned.
pub enum Poll<T> {
    Ready(T),
    Pending,
}

impl QueryStream {
    /// Starts `sql` on `conn` (a connection of its own) in a worker thread.
    /// `context` prefixes error messages, e.g. `Step crm`. With `open`, the
    /// database's streams, closing the database ends this one.
    pub fn start(
        conn: Connection,
        sql: String,
        params: Vec<Param>,
        context: String,
        open: Option<&OpenStreams>,
    ) -> Result<Self> {
        let interrupt = conn.interrupt_handle();
        let closed = Arc::new(AtomicBool::new(false));
        let worker_state = Arc::new(StreamWorker {
            closed: closed.clone(),
            interrupt: interrupt.clone(),
        });
        if let Some(open) = open {
            open.register(&worker_state);
        }
        let (tx, rx) = sync_channel(CHANNEL_DEPTH);
        let worker = std::thread::Builder::new()
            .name("duckmerge-query".into())
            .spawn(move || {
                let sender = Sender {
                    tx,
                    closed: &worker_state.closed,
                };
                match run_query(&conn, &sql, &params, &context, &sender) {
                    Ok(()) => {
                        sender.send(Message::End);
                    }
                    Err(e) => {
                        sender.send(Message::Failed(e));
                    }
                }
                // The connection ends before the database hears of it.
                drop(conn);
                drop(worker_state);
            })
            .map_err(|e| Error::io("starting the query thread", e))?;
        Ok(QueryStream {
            rx,
            interrupt,
            closed,
            schema: None,
            ahead: None,
            finished: false,
            worker: Some(worker),
        })
    }

    /// The end of the stream without `Message::End`: the database closed
    /// it, or the worker stopped without a word.
    fn cut_short(&mut self) -> Error {
        self.finished = true;
        if self.closed.load(Ordering::SeqCst) {
            Error::Closed
        } else {
            Error::Arrow("query thread ended without a result".into())
        }
    }

    /// Interrupts the running query; the stream then ends with `Cancelled`.
    pub fn interrupt(&self) {
        self.interrupt.interrupt();
    }

    /// The handle that interrupts this query from another thread.
    pub fn interrupt_handle(&self) -> Arc<InterruptHandle> {
        self.interrupt.clone()
    }

    /// Waits up to `timeout` for the result's schema (the query has started).
    pub fn poll_schema(&mut self, timeout: Duration) -> Result<Poll<SchemaRef>> {
        if let Some(schema) = &self.schema {
            return Ok(Poll::Ready(schema.clone()));
        }
        match self.rx.recv_timeout(timeout) {
            Ok(Message::Schema(s)) => {
                self.schema = Some(s.clone());
                Ok(Poll::Ready(s))
            }
            Ok(Message::Failed(e)) => {
                self.finished = true;
                Err(e)
            }
            Ok(Message::Batch(_) | Message::End) => {
                Err(Error::Arrow("query sent rows before its schema".into()))
            }
            Err(RecvTimeoutError::Timeout) => Ok(Poll::Pending),
            Err(RecvTimeoutError::Disconnected) => Err(self.cut_short()),
        }
    }

    /// Waits up to `timeout` for the first batch (or the end, or the
    /// query's error) and keeps it for [`QueryStream::poll_batch`]. DuckDB
    /// 2.0 hands out a streaming result's schema before it runs the query,
    /// so a caller that must stay interruptible (Ctrl-C) while DuckDB works
    /// waits here rather than in a consumer's blocking read.
    pub fn poll_first(&mut self, timeout: Duration) -> Result<Poll<()>> {
        if self.schema.is_none() {
            return match self.poll_schema(timeout)? {
                Poll::Ready(_) => self.poll_first(Duration::ZERO),
                Poll::Pending => Ok(Poll::Pending),
            };
        }
        if self.ahead.is_some() || self.finished {
            return Ok(Poll::Ready(()));
        }
        match self.poll_batch(timeout)? {
            Poll::Ready(Some(b)) => {
                self.ahead = Some(b);
                Ok(Poll::Ready(()))
            }
            Poll::Ready(None) => Ok(Poll::Ready(())),
            Poll::Pending => Ok(Poll::Pending),
        }
    }

    /// Waits up to `timeout` for the next batch; `Ready(None)` at the end.
    /// Call after the schema has arrived.
    pub fn poll_batch(&mut self, timeout: Duration) -> Result<Poll<Option<RecordBatch>>> {
        if let Some(b) = self.ahead.take() {
            return Ok(Poll::Ready(Some(b)));
        }
        if self.finished {
            return Ok(Poll::Ready(None));
        }
        if self.schema.is_none() {
            return match self.poll_schema(timeout)? {
                Poll::Ready(_) => Ok(Poll::Pending),
                Poll::Pending => Ok(Poll::Pending),
            };
        }
        match self.rx.recv_timeout(timeout) {
            Ok(Message::Batch(b)) => Ok(Poll::Ready(Some(b))),
            Ok(Message::Failed(e)) => {
                self.finished = true;
                Err(e)
            }
            Ok(Message::End) => {
                self.finished = true;
                Ok(Poll::Ready(None))
            }
            Ok(Message::Schema(_)) => Err(Error::Arrow("query sent a second schema".into())),
            Err(RecvTimeoutError::Timeout) => Ok(Poll::Pending),
            Err(RecvTimeoutError::Disconnected) => Err(self.cut_short()),
        }
    }

    /// Blocks for the schema.
    pub fn schema(&mut self) -> Result<SchemaRef> {
        loop {
            if let Poll::Ready(s) = self.poll_schema(Duration::from_secs(3600))? {
                return Ok(s);
            }
        }
    }

    /// Blocks for the next batch.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Poll::Ready(b) = self.poll_batch(Duration::from_secs(3600))? {
                return Ok(b);
            }
        }
    }

    /// Reads everything (blocking): schema and batches.
    pub fn collect(mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let schema = self.schema()?;
        let mut batches = Vec::new();
        while let Some(b) = self.next_batch()? {
            batches.push(b);
        }
        Ok((schema, batches))
    }

    /// A blocking `RecordBatchReader` (after the schema has arrived), for
    /// export through the Arrow C stream interface.
    pub fn into_reader(mut self) -> Result<StreamReader> {
        let schema = self.schema()?;
        Ok(StreamReader {
            schema,
            stream: self,
        })
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        if !self.finished {
            // The consumer walked away: stop DuckDB instead of finishing the query.
            self.interrupt.interrupt();
        }
        // Unblock a worker waiting on a full channel, then let it end on its own.
        while self.rx.try_recv().is_ok() {}
        drop(self.worker.take());
    }
}

/// A [`QueryStream`] as a `RecordBatchReader`.
pub struct StreamReader {
    schema: SchemaRef,
    stream: QueryStream,
}

impl Iterator for StreamReader {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.stream.next_batch() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => Some(Err(ArrowError::ExternalError(Box::new(e)))),
        }
    }
}

impl RecordBatchReader for StreamReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// The worker's side of the channel: a send gives up once the consumer has
/// gone or the database closed the stream.
struct Sender<'a> {
    tx: SyncSender<Message>,
    closed: &'a AtomicBool,
}

impl Sender<'_> {
    /// Sends `message`, waiting while the channel is full; false when the
    /// consumer is gone or the stream was closed. The wait starts at 20 µs
    /// and doubles up to 10 ms: a reader that keeps up barely waits, one
    /// that stopped halfway costs a wake-up every 10 ms, and `close()`
    /// reaches a waiting worker within that.
    fn send(&self, mut message: Message) -> bool {
        let mut wait = Duration::from_micros(20);
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return false;
            }
            match self.tx.try_send(message) {
                Ok(()) => return true,
                Err(TrySendError::Full(m)) => {
                    message = m;
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(10));
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
    }
}

/// Runs the query and sends its schema and batches; `Ok` also when the
/// consumer went away or the stream was closed (nothing more to send).
fn run_query(
    conn: &Connection,
    sql: &str,
    params: &[Param],
    context: &str,
    tx: &Sender<'_>,
) -> Result<()> {
    let mut stmt = match conn.prepare(sql) {
        Ok(stmt) => stmt,
        // Several statements in one string cannot be prepared; without
        // parameters they can still run as a batch (they return no rows).
        Err(e) if params.is_empty() && e.to_string().contains("multiple statements") => {
            conn.execute_batch(sql)
                .map_err(|e| Error::sql(context, e))?;
            tx.send(Message::Schema(Arc::new(Schema::empty())));
            return Ok(());
        }
        Err(e) => return Err(Error::sql(context, e)),
    };
    let schema = stmt
        .stream_arrow(duckdb::params_from_iter(params.iter()))
        .map_err(|e| Error::sql(context, e))?
        .get_schema();
    if !tx.send(Message::Schema(schema.clone())) {
        return Ok(());
    }
    loop {
        match stmt.step() {
            Ok(Some(array)) => {
                let batch = RecordBatch::from(&array);
                // The struct array carries no field metadata: keep DuckDB's schema.
                let batch = batch
                    .with_schema(schema.clone())
                    .unwrap_or_else(|_| RecordBatch::from(&array));
                if !tx.send(Message::Batch(batch)) {
                    return Ok(()); // consumer gone, or the stream closed
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(Error::sql(context, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn conn() -> Connection {
        Connection::open_in_memory().unwrap()
    }

    #[test]
    fn streams_all_rows_in_batches() {
        let s = QueryStream::start(
            conn(),
            "SELECT range AS i FROM range(10000)".into(),
            vec![],
            "test".into(),
            None,
        )
        .unwrap();
        let (schema, batches) = s.collect().unwrap();
        assert_eq!(schema.field(0).name(), "i");
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(total, 10000);
        let last = batches.last().unwrap();
        let col = last
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(col.value(col.len() - 1), 9999);
    }

    #[test]
    fn parameters_bind_positionally() {
        let s = QueryStream::start(
            conn(),
            "SELECT ?::BIGINT + 1 AS a, ? AS b, ? IS NULL AS c".into(),
            vec![Param::Int(41), Param::Text("x".into()), Param::Null],
            "test".into(),
            None,
        )
        .unwrap();
        let (_, batches) = s.collect().unwrap();
        let a = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(a.value(0), 42);
    }

    #[test]
    fn sql_error_keeps_duckdb_message_and_context() {
        let s =
            QueryStream::start(conn(), "SELEC 1".into(), vec![], "Step q".into(), None).unwrap();
        let err = s.collect().err().unwrap().to_string();
        assert!(err.starts_with("Step q"), "{err}");
        assert!(err.to_lowercase().contains("syntax error"), "{err}");
    }

    #[test]
    fn poll_first_waits_for_the_first_batch_and_keeps_it() {
        let mut s = QueryStream::start(
            conn(),
            "SELECT count(*) AS n FROM range(300000000)".into(),
            vec![],
            "test".into(),
            None,
        )
        .unwrap();
        // The count takes a while: at first the wait times out.
        assert!(matches!(
            s.poll_first(Duration::from_millis(1)).unwrap(),
            Poll::Pending
        ));
        while let Poll::Pending = s.poll_first(Duration::from_millis(100)).unwrap() {}
        // Ready again without reading further, and the batch is not lost.
        assert!(matches!(
            s.poll_first(Duration::ZERO).unwrap(),
            Poll::Ready(())
        ));
        let batch = s.next_batch().unwrap().expect("the kept batch");
        let n = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(n.value(0), 300_000_000);
        assert!(s.next_batch().unwrap().is_none());
    }

    #[test]
    fn poll_first_reports_an_error_raised_while_running() {
        let mut s = QueryStream::start(
            conn(),
            "SELECT CAST('x' || range AS INTEGER) FROM range(10)".into(),
            vec![],
            "Step q".into(),
            None,
        )
        .unwrap();
        let err = loop {
            match s.poll_first(Duration::from_millis(100)) {
                Ok(Poll::Pending) => continue,
                Ok(Poll::Ready(())) => panic!("the cast should fail"),
                Err(e) => break e.to_string(),
            }
        };
        assert!(err.starts_with("Step q"), "{err}");
        assert!(err.contains("x0"), "{err}");
    }

    #[test]
    fn interrupt_ends_a_long_query_with_cancelled() {
        let mut s = QueryStream::start(
            conn(),
            "SELECT count(*) FROM range(100000000000)".into(),
            vec![],
            "test".into(),
            None,
        )
        .unwrap();
        let start = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        s.interrupt();
        let mut outcome = None;
        while start.elapsed() < Duration::from_secs(10) {
            match s.poll_batch(Duration::from_millis(100)) {
                Ok(Poll::Pending) => continue,
                other => {
                    outcome = Some(other.map(|_| ()));
                    break;
                }
            }
        }
        let err = outcome.expect("query did not stop").unwrap_err();
        assert!(err.is_cancelled(), "{err}");
    }

    #[test]
    fn closing_ends_a_half_read_stream_after_what_was_sent() {
        let open = OpenStreams::default();
        let mut s = QueryStream::start(
            conn(),
            "SELECT range AS i FROM range(100000000)".into(),
            vec![],
            "test".into(),
            Some(&open),
        )
        .unwrap();
        assert!(s.next_batch().unwrap().is_some());
        let started = Instant::now();
        assert!(
            open.close_all(Duration::from_secs(10)),
            "the worker did not end"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // What was already in the channel is still read, then the end is an error.
        let mut batches = 0;
        let err = loop {
            match s.next_batch() {
                Ok(Some(_)) => batches += 1,
                Ok(None) => panic!("a closed stream must not end as if complete"),
                Err(e) => break e,
            }
        };
        assert!(batches <= CHANNEL_DEPTH, "{batches}");
        assert!(matches!(err, Error::Closed), "{err}");
        // Nothing is left to close.
        assert!(open.close_all(Duration::from_millis(1)));
    }

    #[test]
    fn a_stream_read_to_the_end_is_complete_even_when_closed_later() {
        let open = OpenStreams::default();
        let s = QueryStream::start(
            conn(),
            "SELECT range AS i FROM range(5000)".into(),
            vec![],
            "test".into(),
            Some(&open),
        )
        .unwrap();
        let (_, batches) = s.collect().unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5000);
        assert!(open.close_all(Duration::from_secs(5)));
    }

    #[test]
    fn several_statements_without_params_run_as_a_batch() {
        let c = conn();
        let c2 = c.try_clone().unwrap();
        let s = QueryStream::start(
            c,
            "CREATE TABLE t(a INT); INSERT INTO t VALUES (1), (2)".into(),
            vec![],
            "test".into(),
            None,
        )
        .unwrap();
        s.collect().unwrap();
        let n: i64 = c2
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }
}
