//! Query results out of DuckDB as a stream of Arrow batches.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
}

/// Batches in flight between DuckDB and the consumer: enough to keep both
/// busy, few enough that memory stays bounded whatever the result size.
const CHANNEL_DEPTH: usize = 4;

/// A running query. The worker thread owns the connection; dropping the
/// stream before the end interrupts the query.
pub struct QueryStream {
    rx: Receiver<Message>,
    interrupt: Arc<InterruptHandle>,
    schema: Option<SchemaRef>,
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
    /// `context` prefixes error messages, e.g. `Step crm`.
    pub fn start(
        conn: Connection,
        sql: String,
        params: Vec<Param>,
        context: String,
    ) -> Result<Self> {
        let interrupt = conn.interrupt_handle();
        let (tx, rx) = sync_channel(CHANNEL_DEPTH);
        let worker = std::thread::Builder::new()
            .name("duckmerge-query".into())
            .spawn(move || {
                if let Err(e) = run_query(&conn, &sql, &params, &context, &tx) {
                    let _ = tx.send(Message::Failed(e));
                }
            })
            .map_err(|e| Error::io("starting the query thread", e))?;
        Ok(QueryStream {
            rx,
            interrupt,
            schema: None,
            finished: false,
            worker: Some(worker),
        })
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
            Ok(Message::Batch(_)) => Err(Error::Arrow("query sent rows before its schema".into())),
            Err(RecvTimeoutError::Timeout) => Ok(Poll::Pending),
            Err(RecvTimeoutError::Disconnected) => {
                self.finished = true;
                Err(Error::Arrow("query thread ended without a result".into()))
            }
        }
    }

    /// Waits up to `timeout` for the next batch; `Ready(None)` at the end.
    /// Call after the schema has arrived.
    pub fn poll_batch(&mut self, timeout: Duration) -> Result<Poll<Option<RecordBatch>>> {
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
            Ok(Message::Schema(_)) => Err(Error::Arrow("query sent a second schema".into())),
            Err(RecvTimeoutError::Timeout) => Ok(Poll::Pending),
            Err(RecvTimeoutError::Disconnected) => {
                self.finished = true;
                Ok(Poll::Ready(None))
            }
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

fn run_query(
    conn: &Connection,
    sql: &str,
    params: &[Param],
    context: &str,
    tx: &std::sync::mpsc::SyncSender<Message>,
) -> Result<()> {
    let mut stmt = match conn.prepare(sql) {
        Ok(stmt) => stmt,
        // Several statements in one string cannot be prepared; without
        // parameters they can still run as a batch (they return no rows).
        Err(e) if params.is_empty() && e.to_string().contains("multiple statements") => {
            conn.execute_batch(sql)
                .map_err(|e| Error::sql(context, e))?;
            let _ = tx.send(Message::Schema(Arc::new(Schema::empty())));
            return Ok(());
        }
        Err(e) => return Err(Error::sql(context, e)),
    };
    let schema = stmt
        .stream_arrow(duckdb::params_from_iter(params.iter()))
        .map_err(|e| Error::sql(context, e))?
        .get_schema();
    if tx.send(Message::Schema(schema.clone())).is_err() {
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
                if tx.send(Message::Batch(batch)).is_err() {
                    return Ok(()); // consumer gone
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
        let s = QueryStream::start(conn(), "SELEC 1".into(), vec![], "Step q".into()).unwrap();
        let err = s.collect().err().unwrap().to_string();
        assert!(err.starts_with("Step q"), "{err}");
        assert!(err.to_lowercase().contains("syntax error"), "{err}");
    }

    #[test]
    fn interrupt_ends_a_long_query_with_cancelled() {
        let mut s = QueryStream::start(
            conn(),
            "SELECT count(*) FROM range(100000000000)".into(),
            vec![],
            "test".into(),
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
    fn several_statements_without_params_run_as_a_batch() {
        let c = conn();
        let c2 = c.try_clone().unwrap();
        let s = QueryStream::start(
            c,
            "CREATE TABLE t(a INT); INSERT INTO t VALUES (1), (2)".into(),
            vec![],
            "test".into(),
        )
        .unwrap();
        s.collect().unwrap();
        let n: i64 = c2
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }
}
