//! Session settings: explicit arguments, else environment, else defaults.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// Default DuckDB memory limit when neither argument nor env sets one.
pub const DEFAULT_MEMORY_LIMIT: &str = "500MB";

/// The settings a session applies to DuckDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// DuckDB `memory_limit`, e.g. `500MB`.
    pub memory_limit: String,
    /// DuckDB worker threads.
    pub threads: usize,
    /// Where DuckDB spills.
    pub temp_dir: PathBuf,
}

/// What the caller passed explicitly (`None`: fall back to env, then default).
#[derive(Debug, Clone, Default)]
pub struct SettingsArgs {
    pub memory_limit: Option<String>,
    pub threads: Option<i64>,
    pub temp_dir: Option<PathBuf>,
}

impl Settings {
    /// Resolves settings for the session in `session_dir`. `env` looks up an
    /// environment variable (injected so tests need not touch the process env).
    pub fn resolve(
        session_dir: &Path,
        args: &SettingsArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings> {
        let env = |key: &str| env(key).filter(|v| !v.trim().is_empty());
        let memory_limit = match (&args.memory_limit, env("DUCKMERGE_MEMORY_LIMIT")) {
            (Some(v), _) => check_memory_limit(v, "memory_limit")?,
            (None, Some(v)) => check_memory_limit(&v, "DUCKMERGE_MEMORY_LIMIT")?,
            (None, None) => DEFAULT_MEMORY_LIMIT.to_string(),
        };
        let threads = match (args.threads, env("DUCKMERGE_THREADS")) {
            (Some(n), _) => check_threads(n, "threads")?,
            (None, Some(v)) => {
                let n = v.trim().parse::<i64>().map_err(|_| {
                    Error::Config(format!(
                        "DUCKMERGE_THREADS={v:?} is not a whole number; use e.g. DUCKMERGE_THREADS=2"
                    ))
                })?;
                check_threads(n, "DUCKMERGE_THREADS")?
            }
            (None, None) => default_threads(),
        };
        let temp_dir = match (&args.temp_dir, env("DUCKMERGE_TEMP_DIR")) {
            (Some(p), _) => p.clone(),
            (None, Some(v)) => PathBuf::from(v),
            (None, None) => session_dir.join("tmp"),
        };
        Ok(Settings {
            memory_limit,
            threads,
            temp_dir,
        })
    }
}

/// Cores − 1, at least 1: one core stays free for the host process.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1).max(1))
        .unwrap_or(1)
}

fn check_threads(n: i64, source: &str) -> Result<usize> {
    if n < 1 {
        return Err(Error::Config(format!(
            "{source} must be at least 1, got {n}"
        )));
    }
    Ok(n as usize)
}

/// Accepts what DuckDB accepts for `memory_limit`: a number with an optional
/// unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB) or a percentage of RAM.
fn check_memory_limit(value: &str, source: &str) -> Result<String> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let number_ok = !number.is_empty() && number.parse::<f64>().map(|n| n > 0.0).unwrap_or(false);
    let units = [
        "", "b", "bytes", "kb", "mb", "gb", "tb", "kib", "mib", "gib", "tib", "k", "m", "g", "t",
        "%",
    ];
    if number_ok && units.contains(&unit.as_str()) {
        Ok(v.to_string())
    } else {
        Err(Error::Config(format!(
            "{source}={value:?} is not a memory size; use e.g. \"500MB\", \"2GB\" or \"50%\""
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_apply_without_args_or_env() {
        let s = Settings::resolve(Path::new("/s"), &SettingsArgs::default(), env_of(&[])).unwrap();
        assert_eq!(s.memory_limit, "500MB");
        assert_eq!(s.temp_dir, PathBuf::from("/s/tmp"));
        assert!(s.threads >= 1);
    }

    #[test]
    fn env_overrides_defaults_and_args_override_env() {
        let env = env_of(&[
            ("DUCKMERGE_MEMORY_LIMIT", "1GB"),
            ("DUCKMERGE_THREADS", "3"),
            ("DUCKMERGE_TEMP_DIR", "/spill"),
        ]);
        let s = Settings::resolve(Path::new("/s"), &SettingsArgs::default(), &env).unwrap();
        assert_eq!((s.memory_limit.as_str(), s.threads), ("1GB", 3));
        assert_eq!(s.temp_dir, PathBuf::from("/spill"));
        let args = SettingsArgs {
            memory_limit: Some("200MB".into()),
            threads: Some(1),
            temp_dir: Some("/t".into()),
        };
        let s = Settings::resolve(Path::new("/s"), &args, &env).unwrap();
        assert_eq!((s.memory_limit.as_str(), s.threads), ("200MB", 1));
        assert_eq!(s.temp_dir, PathBuf::from("/t"));
    }

    #[test]
    fn bad_values_are_config_errors_naming_the_source() {
        let bad_threads = SettingsArgs {
            threads: Some(0),
            ..Default::default()
        };
        let err = Settings::resolve(Path::new("/s"), &bad_threads, env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("threads must be at least 1"));
        let err = Settings::resolve(
            Path::new("/s"),
            &SettingsArgs::default(),
            env_of(&[("DUCKMERGE_MEMORY_LIMIT", "lots")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("DUCKMERGE_MEMORY_LIMIT"));
        let err = Settings::resolve(
            Path::new("/s"),
            &SettingsArgs::default(),
            env_of(&[("DUCKMERGE_THREADS", "two")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("DUCKMERGE_THREADS"));
    }

    #[test]
    fn memory_limit_accepts_duckdb_units() {
        for ok in ["500MB", "1.5GB", "2 GiB", "80%", "1024"] {
            assert!(check_memory_limit(ok, "m").is_ok(), "{ok}");
        }
        for bad in ["", "MB", "-1GB", "500 parsecs"] {
            assert!(check_memory_limit(bad, "m").is_err(), "{bad}");
        }
    }
}
