//! One error type for the whole core; `python/errors.rs` maps each variant to
//! the most specific Python exception.

use std::path::PathBuf;

/// Every failure the core can report. Messages name the thing that failed
/// (file, line, table, setting) and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument or config value.
    #[error("{0}")]
    Config(String),

    /// An input file or folder that does not exist.
    #[error("{what} not found: {}", path.display())]
    SourceNotFound { what: String, path: PathBuf },

    /// A table the caller named does not exist (message from
    /// [`Error::table_not_found`]).
    #[error("{0}")]
    TableNotFound(String),

    /// A CSV file that could not be read.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Csv {
        path: PathBuf,
        line: Option<u64>,
        message: String,
    },

    /// The session database is held by another process (or already open here).
    #[error("Session {} is in use: {detail}", path.display())]
    SessionLocked { path: PathBuf, detail: String },

    /// Work stopped by an interrupt before it finished.
    #[error("cancelled: {0}")]
    Cancelled(String),

    /// The session (or connection) was used after `close()`.
    #[error("the session is closed")]
    Closed,

    /// DuckDB rejected a statement; `context` says what we were doing.
    #[error("{context}: {source}")]
    Sql {
        context: String,
        #[source]
        source: duckdb::Error,
    },

    /// DuckDB (through the C API or a host's duckdb-python connection)
    /// rejected a statement.
    #[error("{context}: {message}")]
    HostSql { context: String, message: String },

    /// Arrow data that could not be read or converted.
    #[error("{0}")]
    Arrow(String),

    /// A remote object store (S3, HTTP) refused or failed a transfer; the
    /// message names the (redacted) URL and never a credential.
    #[error("{0}")]
    Remote(String),

    /// A file-system operation that failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The core's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a DuckDB error with what we were doing when it happened.
    pub fn sql(context: impl Into<String>, source: duckdb::Error) -> Self {
        let context = context.into();
        if is_interrupt(&source) {
            return Error::Cancelled(format!("{context}: query interrupted"));
        }
        Error::Sql { context, source }
    }

    /// `Table "t" does not exist`, prefixed with the step when there is one.
    pub fn table_not_found(name: &str, step_id: Option<&str>) -> Self {
        match step_id {
            Some(step) => {
                Error::TableNotFound(format!("Step {step}: table \"{name}\" does not exist"))
            }
            None => Error::TableNotFound(format!("Table \"{name}\" does not exist")),
        }
    }

    /// A DuckDB failure known only by its message (C API, duckdb-python).
    pub fn sql_text(context: impl Into<String>, message: impl Into<String>) -> Self {
        let (context, message) = (context.into(), message.into());
        if is_interrupt_message(&message) {
            return Error::Cancelled(format!("{context}: query interrupted"));
        }
        Error::HostSql { context, message }
    }

    /// The same SQL failure described as `context` (e.g. `Step top: the
    /// query failed`); other errors unchanged.
    pub fn with_context(self, context: impl Into<String>) -> Self {
        match self {
            Error::Sql { source, .. } => Error::Sql {
                context: context.into(),
                source,
            },
            Error::HostSql { message, .. } => Error::HostSql {
                context: context.into(),
                message,
            },
            other => other,
        }
    }

    /// Wraps an I/O error with the path or action it concerns.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when this error is an interrupt (Ctrl-C, cancellation).
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled(_))
    }
}

impl From<duckdb::Error> for Error {
    fn from(source: duckdb::Error) -> Self {
        Error::sql("DuckDB error", source)
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(err: arrow::error::ArrowError) -> Self {
        Error::Arrow(err.to_string())
    }
}

/// DuckDB reports an interrupted query as a failure whose text says so.
fn is_interrupt(err: &duckdb::Error) -> bool {
    is_interrupt_message(&err.to_string())
}

/// True for DuckDB's message of an interrupted statement (C API text).
pub(crate) fn is_interrupt_message(message: &str) -> bool {
    message.contains("INTERRUPT") || message.contains("nterrupted")
}

impl From<crate::remote::RemoteError> for Error {
    fn from(e: crate::remote::RemoteError) -> Error {
        use crate::remote::RemoteError;
        match e {
            RemoteError::NotFound { url } => Error::SourceNotFound {
                what: "remote object".into(),
                path: PathBuf::from(url),
            },
            RemoteError::Options(m) => Error::Config(format!("invalid storage_options: {m}")),
            RemoteError::Other { message, .. } if message == "cancelled" => {
                Error::Cancelled("interrupted (Ctrl-C) during a transfer".into())
            }
            other => Error::Remote(other.to_string()),
        }
    }
}

/// A driver's config must be a JSON object (a Python dict): serde would
/// otherwise read a list positionally.
pub fn require_mapping(step_id: &str, driver: &str, config: &serde_json::Value) -> Result<()> {
    if config.is_object() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "Step {step_id}: the {driver} config must be a mapping (dict) of options, got {}",
            match config {
                serde_json::Value::Array(_) => "a list",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Null => "None",
                _ => "a scalar",
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_error_names_file_and_line() {
        let err = Error::Csv {
            path: PathBuf::from("/data/crm.csv"),
            line: Some(17),
            message: "expected 5 fields, found 6".into(),
        };
        assert_eq!(
            err.to_string(),
            "/data/crm.csv, line 17: expected 5 fields, found 6"
        );
    }

    #[test]
    fn session_locked_names_the_path() {
        let err = Error::SessionLocked {
            path: PathBuf::from("/runs/job-1"),
            detail: "held by PID 7".into(),
        };
        assert!(err.to_string().contains("/runs/job-1"));
        assert!(err.to_string().contains("PID 7"));
    }
}
