//! The embedded DuckDB database a session owns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duckdb::Connection;

use super::raw::{RawConnection, RawDatabase};
use crate::arrow::OpenStreams;
use crate::error::{Error, Result};
use crate::session::Settings;

/// One DuckDB database file. Each caller gets its own connection
/// (`connect()`), so threads never share a `duckdb::Connection`.
pub struct Database {
    path: PathBuf,
    /// Held by a merge for its whole run: merges share tables (the stage log,
    /// vendor and consolidated tables), so two on one database take turns.
    merge_lock: Arc<Mutex<()>>,
    /// Result streams still running (`close()` ends them first).
    streams: OpenStreams,
    // Dropped before `raw` (field order): connections first, then the handle.
    primary: Mutex<Option<Connection>>,
    raw: Mutex<Option<RawDatabase>>,
}

impl Database {
    /// Opens (or creates) the database file with the session's settings.
    pub fn open(path: &Path, settings: &Settings) -> Result<Self> {
        let options = [
            ("memory_limit", settings.memory_limit.clone()),
            ("threads", settings.threads.to_string()),
            (
                "temp_directory",
                settings.temp_dir.to_string_lossy().into_owned(),
            ),
        ];
        let raw = RawDatabase::open(path, &options).map_err(|text| {
            if text.contains("Could not set lock") || text.contains("Conflicting lock") {
                Error::SessionLocked {
                    path: path.parent().unwrap_or(path).to_path_buf(),
                    detail: format!(
                        "another process holds {} ({text}); close it or use another session folder",
                        path.display()
                    ),
                }
            } else if text.contains("memory_limit") || text.contains("memory limit") {
                Error::Config(format!(
                    "invalid memory_limit {:?}: {text}",
                    settings.memory_limit
                ))
            } else {
                Error::sql_text(format!("opening {}", path.display()), text)
            }
        })?;
        Self::from_raw(path, raw)
    }

    fn from_raw(path: &Path, raw: RawDatabase) -> Result<Self> {
        let conn = raw
            .connection()
            .map_err(|e| Error::sql(format!("connecting to {}", path.display()), e))?;
        // The merge's key normalisers, as a SQL function for every connection.
        crate::merge::udf::register(&conn)
            .map_err(|e| Error::sql("registering duckmerge_normalize", e))?;
        Ok(Database {
            path: path.to_path_buf(),
            merge_lock: Arc::new(Mutex::new(())),
            streams: OpenStreams::default(),
            primary: Mutex::new(Some(conn)),
            raw: Mutex::new(Some(raw)),
        })
    }

    /// Opens an in-memory database (tests and scratch work).
    pub fn in_memory() -> Result<Self> {
        let raw = RawDatabase::open(Path::new(":memory:"), &[])
            .map_err(|e| Error::sql_text("opening :memory:", e))?;
        Self::from_raw(Path::new(":memory:"), raw)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock a merge holds while it runs (see `SqlBackend::merge_lock`).
    pub fn merge_lock(&self) -> Arc<Mutex<()>> {
        self.merge_lock.clone()
    }

    /// The result streams running on this database (see `OpenStreams`).
    pub fn open_streams(&self) -> &OpenStreams {
        &self.streams
    }

    /// A new connection to this database, for one caller or thread.
    pub fn connect(&self) -> Result<Connection> {
        let guard = self.primary.lock().unwrap_or_else(|p| p.into_inner());
        let conn = guard.as_ref().ok_or(Error::Closed)?;
        conn.try_clone()
            .map_err(|e| Error::sql("opening a connection", e))
    }

    /// A C-API connection whose progress can be read while it works.
    pub fn connect_raw(&self) -> Result<RawConnection> {
        let guard = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        let raw = guard.as_ref().ok_or(Error::Closed)?;
        raw.raw_connection()
            .map_err(|e| Error::sql_text("opening a connection", e))
    }

    /// True once `close()` has run.
    pub fn is_closed(&self) -> bool {
        self.primary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Checkpoints and closes the database. Idempotent. Result streams still
    /// running (a result read halfway with `fetchone()`, a reader not read
    /// to the end) are ended first: their open transactions would stop the
    /// checkpoint, and their readers get `Error::Closed` after the batches
    /// already sent. DuckDB releases the file once every connection ends.
    pub fn close(&self) -> Result<()> {
        let conn = self
            .primary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut outcome = Ok(());
        if let Some(conn) = conn {
            if !self.streams.close_all(STREAMS_END_WAIT) {
                log::warn!("a result stream did not end within {STREAMS_END_WAIT:?} of close()");
            }
            if let Err(e) = conn.execute_batch("CHECKPOINT") {
                log::warn!("checkpoint on close failed: {e}");
            }
            outcome = conn
                .close()
                .map_err(|(_, e)| Error::sql(format!("closing {}", self.path.display()), e));
        }
        drop(self.raw.lock().unwrap_or_else(|p| p.into_inner()).take());
        outcome
    }
}

/// How long `Database::close` waits for the result streams it ends.
const STREAMS_END_WAIT: Duration = Duration::from_secs(5);
