//! Where SQL runs. Today: the native, embedded DuckDB owned by a session.
//! Shared SQL helpers (identifier quoting, catalog look-ups) live here so the
//! drivers and the session build statements the same way.

mod native;
mod raw;
mod step;

pub use native::Database;

/// The in-memory database attached beside a session's own for working
/// tables and views that must not reach its file: the merge's stage tables,
/// and the view a `write_table` load reads its Arrow stream through (a
/// transaction writes to one database only, and the staging table is in the
/// session's).
pub const SCRATCH_DB: &str = "_duckmerge_scratch";
pub use raw::{Progress, RawConnection, RawDatabase};
pub use step::{duckdb_value_to_json, NativeBackend, NullContext, SqlBackend, StepContext};

use crate::error::{Error, Result};

/// Prefix of the tables a load writes before it swaps them in. Any table with
/// this prefix found when a session opens is a crash leftover and is dropped.
pub const STAGING_PREFIX: &str = "_duckmerge_staging_";

/// Quotes an identifier for DuckDB: `a"b` becomes `"a""b"`. A step id such as
/// `a"; DROP TABLE x; --` is then just a name.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Checks a user-supplied table name before it reaches SQL.
pub fn check_table_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Config("table name must not be empty".into()));
    }
    if name.contains('\0') {
        return Err(Error::Config(format!(
            "table name {name:?} contains a NUL character"
        )));
    }
    Ok(())
}

/// A fresh, unique staging table name for a load into `target`.
pub fn staging_name() -> String {
    format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// Names of the user's tables in the main schema, sorted (staging tables and
/// views excluded).
pub fn list_tables(conn: &duckdb::Connection) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare(
            "SELECT table_name FROM duckdb_tables() \
             WHERE database_name = current_database() AND schema_name = 'main' \
             AND NOT starts_with(table_name, ?) ORDER BY table_name",
        )
        .map_err(|e| Error::sql("listing tables", e))?;
    let names = stmt
        .query_map([STAGING_PREFIX], |row| row.get::<_, String>(0))
        .map_err(|e| Error::sql("listing tables", e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::sql("listing tables", e))?;
    Ok(names)
}

/// Counts tables and views named `?` in the main schema (both backends use it).
const RELATION_EXISTS_SQL: &str =
    "SELECT count(*) FROM (SELECT table_name AS n FROM duckdb_tables() \
       WHERE database_name = current_database() AND schema_name = 'main' \
     UNION ALL SELECT view_name FROM duckdb_views() \
       WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal) \
     WHERE n = ?";

/// True when a table or view named exactly `name` exists in the main schema.
pub fn relation_exists(conn: &duckdb::Connection, name: &str) -> Result<bool> {
    let n: i64 = conn
        .query_row(RELATION_EXISTS_SQL, [name], |row| row.get(0))
        .map_err(|e| Error::sql(format!("looking up table \"{name}\""), e))?;
    Ok(n > 0)
}

/// Drops staging tables left behind by a crashed load. Returns their names.
pub fn drop_staging_leftovers(conn: &duckdb::Connection) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare(
            "SELECT table_name FROM duckdb_tables() \
             WHERE database_name = current_database() AND starts_with(table_name, ?)",
        )
        .map_err(|e| Error::sql("finding staging leftovers", e))?;
    let names = stmt
        .query_map([STAGING_PREFIX], |row| row.get::<_, String>(0))
        .map_err(|e| Error::sql("finding staging leftovers", e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::sql("finding staging leftovers", e))?;
    for name in &names {
        conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote_ident(name)))
            .map_err(|e| Error::sql(format!("dropping staging leftover {name}"), e))?;
    }
    Ok(names)
}

/// A SQL string literal: `it's` becomes `'it''s'`. Used where DuckDB takes
/// no parameters (COPY targets, table-function options in a statement batch).
pub fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Swaps a finished staging table in as `target`, in one transaction: the
/// old table stays visible until the commit. On failure the staging table is
/// dropped and the target is left as it was.
pub fn swap_in(
    backend: &dyn SqlBackend,
    staging: &str,
    target: &str,
    ctx: &dyn StepContext,
) -> Result<()> {
    let (s, t) = (quote_ident(staging), quote_ident(target));
    let swap = format!(
        "BEGIN TRANSACTION; DROP TABLE IF EXISTS {t}; ALTER TABLE {s} RENAME TO {t}; COMMIT;"
    );
    if let Err(e) = backend.execute(&swap, &[], ctx) {
        let _ = backend.execute("ROLLBACK", &[], ctx);
        drop_quietly(backend, staging, ctx);
        return Err(e);
    }
    Ok(())
}

/// Drops a table if it exists, ignoring errors (clean-up after a failure).
pub fn drop_quietly(backend: &dyn SqlBackend, table: &str, ctx: &dyn StepContext) {
    drop_quietly_ref(backend, &quote_ident(table), ctx);
}

/// `drop_quietly` for a table given as a SQL reference (`db.main."t"`).
pub fn drop_quietly_ref(backend: &dyn SqlBackend, table_ref: &str, ctx: &dyn StepContext) {
    let _ = backend.execute(&format!("DROP TABLE IF EXISTS {table_ref}"), &[], ctx);
}

/// True when `name` is a table or view in the main schema (any backend).
pub fn backend_relation_exists(backend: &dyn SqlBackend, name: &str) -> Result<bool> {
    let n = backend.query_value(
        RELATION_EXISTS_SQL,
        &[crate::arrow::Param::Text(name.to_string())],
    )?;
    Ok(n.as_i64().unwrap_or(0) > 0)
}

/// A table's column names in order (any backend).
pub fn backend_columns(backend: &dyn SqlBackend, table: &str) -> Result<Vec<String>> {
    let rows = backend.query(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() \
         AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
        &[crate::arrow::Param::Text(table.to_string())],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            r.into_iter()
                .next()
                .and_then(|v| v.as_str().map(String::from))
        })
        .collect())
}

/// The (name, DuckDB type) of each column `query` returns (bound, not run).
pub fn describe_query(backend: &dyn SqlBackend, query: &str) -> Result<Vec<(String, String)>> {
    Ok(backend
        .query(&format!("DESCRIBE {query}"), &[])?
        .into_iter()
        .filter_map(|r| {
            Some((
                r.first()?.as_str()?.to_string(),
                r.get(1)?.as_str()?.to_string(),
            ))
        })
        .collect())
}

/// The row count of a table (any backend).
pub fn backend_count(backend: &dyn SqlBackend, table: &str) -> Result<u64> {
    backend_count_ref(backend, &quote_ident(table))
}

/// `backend_count` for a table given as a SQL reference (`db.main."t"`).
pub fn backend_count_ref(backend: &dyn SqlBackend, table_ref: &str) -> Result<u64> {
    let n = backend.query_value(&format!("SELECT count(*) FROM {table_ref}"), &[])?;
    Ok(n.as_u64().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_ident_doubles_embedded_quotes() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_ident("with space"), "\"with space\"");
        assert_eq!(
            quote_ident("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
    }

    #[test]
    fn hostile_name_is_just_a_name() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE x(a INT)").unwrap();
        let name = "a\"; DROP TABLE x; --";
        conn.execute_batch(&format!("CREATE TABLE {}(b INT)", quote_ident(name)))
            .unwrap();
        let tables = list_tables(&conn).unwrap();
        assert_eq!(tables, vec![name.to_string(), "x".to_string()]);
        assert!(relation_exists(&conn, name).unwrap());
        assert!(!relation_exists(&conn, "missing").unwrap());
    }

    #[test]
    fn staging_leftovers_are_dropped_and_others_kept() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let staging = staging_name();
        conn.execute_batch(&format!(
            "CREATE TABLE keep(a INT); CREATE TABLE {}(a INT)",
            quote_ident(&staging)
        ))
        .unwrap();
        assert_eq!(drop_staging_leftovers(&conn).unwrap(), vec![staging]);
        assert_eq!(list_tables(&conn).unwrap(), vec!["keep".to_string()]);
    }

    #[test]
    fn sql_string_doubles_single_quotes() {
        assert_eq!(sql_string("it's"), "'it''s'");
    }

    #[test]
    fn swap_replaces_target_in_one_step() {
        let db = std::sync::Arc::new(Database::in_memory().unwrap());
        let backend = NativeBackend::new(&db).unwrap();
        let ctx = NullContext;
        backend
            .execute(
                "CREATE TABLE t AS SELECT 1 AS a; CREATE TABLE s AS SELECT 2 AS a, 3 AS b",
                &[],
                &ctx,
            )
            .unwrap();
        swap_in(&backend, "s", "t", &ctx).unwrap();
        assert_eq!(backend_columns(&backend, "t").unwrap(), vec!["a", "b"]);
        assert!(!backend_relation_exists(&backend, "s").unwrap());
        assert_eq!(backend_count(&backend, "t").unwrap(), 1);
    }

    #[test]
    fn empty_table_name_is_a_config_error() {
        assert!(matches!(check_table_name(""), Err(Error::Config(_))));
        assert!(check_table_name("extract-movies").is_ok());
    }
}
