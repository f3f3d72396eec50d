//! The CRM merge (issue 4): one original contact table plus N enriched vendor
//! tables → one merged table, matched on ordered, normalised identifier keys.
//!
//! `config` parses the config, `normalize` holds the key normalisers (pure
//! functions, also registered as the SQL function `duckmerge_normalize` by
//! `udf`), and `engine` runs the stages as SQL through a `SqlBackend`.

pub mod config;
pub mod engine;
pub mod normalize;
pub mod resume;
pub mod udf;
