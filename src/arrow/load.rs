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
    check_table_name, quote_ident, relation_exists, staging_name, Database, RawConnection,
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
        let (tx, rx) = sync_channel(LOAD_DEPTH);
        let (done_tx, done) = sync_channel(1);
        let target = target.to_string();
        let worker_schema = schema.clone();
        std::thread::Builder::new()
            .name("duckmerge-load".into())
            .spawn(move || {
                let result = run_load(
                    &conn,
                    &raw,
                    &create,
                    &staging,
                    &target,
                    mode,
                    &worker_schema,
                    rx,
                );
                if result.is_err() {
                    let _ = raw.execute("ROLLBACK");
                }
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
        Err(Error::Cancelled(m)) => Err(Error::Cancelled(m.clone())),
        Err(Error::Config(m)) => Err(Error::Config(m.clone())),
        Err(e) => Err(Error::Arrow(e.to_string())),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_load(
    conn: &Connection,
    raw: &RawConnection,
    create: &str,
    staging: &str,
    target: &str,
    mode: WriteMode,
    schema: &SchemaRef,
    rx: Receiver<LoadMessage>,
) -> Result<u64> {
    let ctx = |what: &str| format!("writing table \"{target}\": {what}");
    raw.execute(&format!("BEGIN TRANSACTION; {create}"))
        .map_err(|e| Error::sql_text(ctx("creating the staging table"), e))?;
    let mut rows = 0u64;
    {
        let mut appender = raw
            .appender(staging, schema)
            .map_err(|e| Error::sql_text(ctx("opening the appender"), e))?;
        loop {
            match rx.recv() {
                Ok(LoadMessage::Batch(batch)) => {
                    let batch = normalize_batch(batch, schema)?;
                    rows += batch.num_rows() as u64;
                    appender
                        .append(&batch)
                        .map_err(|e| Error::sql_text(ctx("appending rows"), e))?;
                }
                Ok(LoadMessage::Commit) => break,
                Err(_) => {
                    return Err(Error::Cancelled(format!(
                    "writing table \"{target}\" stopped before the data ended; nothing was changed"
                )))
                }
            }
        }
        appender
            .close()
            .map_err(|e| Error::sql_text(ctx("flushing the appender"), e))?;
    }
    let exists = relation_exists(conn, target)?;
    let (s, t) = (quote_ident(staging), quote_ident(target));
    let swap = match (mode, exists) {
        (WriteMode::Append, true) => {
            format!("INSERT INTO {t} BY NAME SELECT * FROM {s}; DROP TABLE {s};")
        }
        (WriteMode::Replace, true) => format!("DROP TABLE {t}; ALTER TABLE {s} RENAME TO {t};"),
        (WriteMode::Create, true) => {
            return Err(Error::Config(format!(
                "table \"{target}\" already exists; pass mode=\"replace\" or mode=\"append\""
            )))
        }
        (_, false) => format!("ALTER TABLE {s} RENAME TO {t};"),
    };
    raw.execute(&swap)
        .map_err(|e| Error::sql_text(ctx("swapping the new rows in"), e))?;
    raw.execute("COMMIT")
        .map_err(|e| Error::sql_text(ctx("commit"), e))?;
    log::debug!("wrote {rows} rows to table \"{target}\" ({mode:?})");
    Ok(rows)
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
    fn bad_mode_lists_the_valid_ones() {
        let err = "upsert".parse::<WriteMode>().unwrap_err().to_string();
        assert!(err.contains("create") && err.contains("append"), "{err}");
    }
}
