//! Arrow in and out of DuckDB.
//!
//! Out: [`QueryStream`] runs a query on its own connection in a worker thread
//! and hands `RecordBatch`es over a bounded channel, reading DuckDB with
//! `Statement::step()` so a fetch error (an interrupt is one) is an `Err`,
//! never a panic. In: [`TableLoad`] streams batches into a staging table
//! through DuckDB's parallel Arrow scan and swaps it in, in one transaction.

mod load;
mod stream;
mod types;

pub use load::{TableLoad, WriteMode};
pub use stream::{OpenStreams, Param, Poll, QueryStream, StreamReader};
pub use types::{arrow_to_duckdb_sql, normalize_batch, normalize_schema};
