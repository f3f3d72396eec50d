//! The embedded DuckDB database a session owns.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use duckdb::{Config, Connection};

use crate::error::{Error, Result};
use crate::session::Settings;

/// One DuckDB database file. Each caller gets its own connection
/// (`connect()`), so threads never share a `duckdb::Connection`.
pub struct Database {
    path: PathBuf,
    primary: Mutex<Option<Connection>>,
}

impl Database {
    /// Opens (or creates) the database file with the session's settings.
    pub fn open(path: &Path, settings: &Settings) -> Result<Self> {
        let config = Config::default()
            .with("memory_limit", &settings.memory_limit)
            .and_then(|c| c.threads(settings.threads as i64))
            .and_then(|c| c.with("temp_directory", settings.temp_dir.to_string_lossy()))
            .map_err(|e| Error::Config(format!("invalid session settings: {e}")))?;
        let conn = Connection::open_with_flags(path, config).map_err(|e| {
            let text = e.to_string();
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
                Error::sql(format!("opening {}", path.display()), e)
            }
        })?;
        Ok(Database {
            path: path.to_path_buf(),
            primary: Mutex::new(Some(conn)),
        })
    }

    /// Opens an in-memory database (tests and scratch work).
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(|e| Error::sql("opening :memory:", e))?;
        Ok(Database {
            path: PathBuf::from(":memory:"),
            primary: Mutex::new(Some(conn)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new connection to this database, for one caller or thread.
    pub fn connect(&self) -> Result<Connection> {
        let guard = self.primary.lock().unwrap_or_else(|p| p.into_inner());
        let conn = guard.as_ref().ok_or(Error::Closed)?;
        conn.try_clone()
            .map_err(|e| Error::sql("opening a connection", e))
    }

    /// True once `close()` has run.
    pub fn is_closed(&self) -> bool {
        self.primary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Checkpoints and closes the primary connection. Idempotent. DuckDB
    /// releases the file once connections still held by running results end.
    pub fn close(&self) -> Result<()> {
        let conn = self
            .primary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(conn) = conn {
            if let Err(e) = conn.execute_batch("CHECKPOINT") {
                log::warn!("checkpoint on close failed: {e}");
            }
            conn.close()
                .map_err(|(_, e)| Error::sql(format!("closing {}", self.path.display()), e))?;
        }
        Ok(())
    }
}
