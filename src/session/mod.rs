//! A session: one folder holding a DuckDB database, logs, artifacts and a
//! manifest.
//!
//! ```text
//! <session>/pipeline_data.duckdb
//! <session>/logs/events.jsonl
//! <session>/logs/metrics.jsonl
//! <session>/artifacts/<step_id>/
//! <session>/output/
//! <session>/manifest.json
//! ```

mod logs;
mod settings;

pub use logs::{now_iso, SessionLog};
pub use settings::{default_threads, Settings, SettingsArgs, DEFAULT_MEMORY_LIMIT};

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value};

use crate::backend::{self, Database};
use crate::error::{Error, Result};

/// The database file's name inside a session folder.
pub const DB_FILE: &str = "pipeline_data.duckdb";

/// Session folders open in this process. DuckDB's file lock only stops other
/// processes; a second open here would be a second database on one file.
fn open_sessions() -> &'static Mutex<HashSet<PathBuf>> {
    static OPEN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(HashSet::new()))
}

/// How to open a session.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// The folder; `None` makes a temporary one.
    pub path: Option<PathBuf>,
    pub settings: SettingsArgs,
    /// Keep a temporary session's folder on close.
    pub keep: bool,
}

/// An open session.
pub struct Session {
    dir: PathBuf,
    id: String,
    settings: Settings,
    db: Arc<Database>,
    log: SessionLog,
    temporary: bool,
    keep: bool,
    closed: AtomicBool,
    manifest: Mutex<Value>,
}

impl Session {
    /// Opens (creating if needed) the session folder and its database, applies
    /// the settings, drops staging leftovers from a crash and writes the manifest.
    pub fn open(options: SessionOptions) -> Result<Session> {
        Self::open_with_env(options, |k| std::env::var(k).ok())
    }

    /// `open` with an injected environment lookup.
    pub fn open_with_env(
        options: SessionOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Session> {
        let (dir, temporary) = match &options.path {
            Some(p) => (absolute(p)?, false),
            None => (
                std::env::temp_dir().join(format!(
                    "duckmerge-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                )),
                true,
            ),
        };
        if dir.exists() && !dir.is_dir() {
            return Err(Error::Config(format!(
                "session path {} exists and is not a folder",
                dir.display()
            )));
        }
        let settings = Settings::resolve(&dir, &options.settings, env)?;
        for sub in ["logs", "artifacts", "output"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::io(format!("creating {}", dir.join(sub).display()), e))?;
        }
        std::fs::create_dir_all(&settings.temp_dir).map_err(|e| {
            Error::io(
                format!("creating temp dir {}", settings.temp_dir.display()),
                e,
            )
        })?;
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;

        if !open_sessions()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.clone())
        {
            return Err(Error::SessionLocked {
                path: dir,
                detail: "it is already open in this process; close the other Session first \
                         or share it"
                    .into(),
            });
        }
        let opened = Self::open_registered(dir.clone(), temporary, options.keep, settings);
        if opened.is_err() {
            open_sessions()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&dir);
        }
        opened
    }

    fn open_registered(
        dir: PathBuf,
        temporary: bool,
        keep: bool,
        settings: Settings,
    ) -> Result<Session> {
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "session".into());
        let db = Database::open(&dir.join(DB_FILE), &settings)?;
        let conn = db.connect()?;
        let dropped = backend::drop_staging_leftovers(&conn)?;
        let duckdb_version: String = conn
            .query_row("SELECT version()", [], |r| r.get(0))
            .map_err(|e| Error::sql("reading the DuckDB version", e))?;
        drop(conn);
        let log = SessionLog::open(&dir.join("logs"), &id)?;
        let manifest = load_manifest(&dir, &id, &settings, &duckdb_version);
        let session = Session {
            dir,
            id,
            settings,
            db: Arc::new(db),
            log,
            temporary,
            keep,
            closed: AtomicBool::new(false),
            manifest: Mutex::new(manifest),
        };
        session.write_manifest()?;
        if !dropped.is_empty() {
            log::warn!(
                "dropped {} staging table(s) left by an interrupted load: {}",
                dropped.len(),
                dropped.join(", ")
            );
        }
        log::info!(
            "opened session {} (memory_limit={}, threads={})",
            session.dir.display(),
            session.settings.memory_limit,
            session.settings.threads
        );
        session.log_event(
            "session_open",
            json_map(json!({ "path": session.dir, "staging_dropped": dropped })),
        )?;
        Ok(session)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    pub fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }
    pub fn artifacts_dir(&self) -> PathBuf {
        self.dir.join("artifacts")
    }
    pub fn output_dir(&self) -> PathBuf {
        self.dir.join("output")
    }
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The shared database; errors once the session is closed.
    pub fn database(&self) -> Result<Arc<Database>> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(self.db.clone())
    }

    /// `artifacts/<step_id>/`, with the step id made safe as one folder name:
    /// `../../x` stays inside the session.
    pub fn step_artifacts_dir(&self, step_id: &str) -> Result<PathBuf> {
        let dir = self.artifacts_dir().join(safe_folder_name(step_id));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(dir)
    }

    pub fn log_event(&self, event: &str, data: Map<String, Value>) -> Result<()> {
        self.log.event(event, data)
    }

    pub fn log_metric(&self, name: &str, value: Value, tags: Map<String, Value>) -> Result<()> {
        self.log.metric(name, value, tags)
    }

    /// Records a step in the manifest.
    pub fn record_step(&self, step_id: &str, driver: &str, result: Value) -> Result<()> {
        {
            let mut manifest = self.manifest.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(steps) = manifest["steps"].as_array_mut() {
                steps.retain(|s| s["step_id"] != step_id);
                steps.push(json!({
                    "step_id": step_id, "driver": driver, "ts": now_iso(), "result": result,
                }));
            }
        }
        self.write_manifest()
    }

    fn write_manifest(&self) -> Result<()> {
        let text = {
            let mut manifest = self.manifest.lock().unwrap_or_else(|p| p.into_inner());
            manifest["updated_at"] = Value::String(now_iso());
            serde_json::to_string_pretty(&*manifest).map_err(|e| Error::Config(e.to_string()))?
        };
        write_atomic(&self.dir.join("manifest.json"), text.as_bytes())
    }

    /// Checkpoints and closes the database; removes a temporary session's
    /// folder unless `keep`. Idempotent.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let _ = self.log_event("session_close", Map::new());
        let _ = self.write_manifest();
        let result = self.db.close();
        open_sessions()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.dir);
        if self.temporary && !self.keep {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                log::warn!(
                    "could not remove temporary session {}: {e}",
                    self.dir.display()
                );
            }
        }
        log::info!("closed session {}", self.dir.display());
        result
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            log::warn!("closing session {} failed: {e}", self.dir.display());
        }
    }
}

/// Turns a JSON object literal into a map (anything else: empty map).
pub fn json_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.as_os_str().is_empty() {
        return Err(Error::Config("session path must not be empty".into()));
    }
    std::path::absolute(path).map_err(|e| Error::io(format!("resolving {}", path.display()), e))
}

fn load_manifest(dir: &Path, id: &str, settings: &Settings, duckdb_version: &str) -> Value {
    let previous: Option<Value> = std::fs::read_to_string(dir.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let steps = previous
        .as_ref()
        .and_then(|p| p.get("steps").cloned())
        .filter(Value::is_array)
        .unwrap_or_else(|| json!([]));
    let created = previous
        .as_ref()
        .and_then(|p| p.get("created_at").cloned())
        .unwrap_or_else(|| Value::String(now_iso()));
    json!({
        "session_id": id,
        "path": dir,
        "created_at": created,
        "updated_at": now_iso(),
        "versions": {
            "duckmerge": env!("CARGO_PKG_VERSION"),
            "duckdb": duckdb_version,
        },
        "settings": settings,
        "steps": steps,
    })
}

/// Makes `name` a single safe folder name: path separators, `..` and other
/// specials become `_`.
pub fn safe_folder_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let is_special = matches!(
        Path::new(&cleaned).components().next(),
        Some(Component::CurDir | Component::ParentDir) | None
    ) || cleaned.chars().all(|c| c == '.');
    if is_special {
        format!("_{}", cleaned.replace('.', "_"))
    } else {
        cleaned
    }
}

/// Writes `bytes` to a temp file beside `path` and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("renaming onto {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_at(path: &Path) -> Result<Session> {
        Session::open_with_env(
            SessionOptions {
                path: Some(path.to_path_buf()),
                ..Default::default()
            },
            |_| None,
        )
    }

    #[test]
    fn layout_is_created_and_manifest_has_versions() {
        let dir = tempfile::tempdir().unwrap();
        let s = open_at(&dir.path().join("job-42")).unwrap();
        let root = dir.path().join("job-42");
        for p in [
            "pipeline_data.duckdb",
            "logs/events.jsonl",
            "logs/metrics.jsonl",
            "artifacts",
            "manifest.json",
        ] {
            assert!(root.join(p).exists(), "{p} missing");
        }
        assert_eq!(s.id(), "job-42");
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("manifest.json")).unwrap())
                .unwrap();
        assert!(manifest["versions"]["duckdb"]
            .as_str()
            .unwrap()
            .starts_with('v'));
        assert_eq!(manifest["settings"]["memory_limit"], "500MB");
        s.close().unwrap();
        s.close().unwrap();
    }

    #[test]
    fn second_open_in_process_is_locked_until_close() {
        let dir = tempfile::tempdir().unwrap();
        let first = open_at(dir.path()).unwrap();
        let err = open_at(dir.path()).err().expect("second open must fail");
        assert!(matches!(err, Error::SessionLocked { .. }));
        first.close().unwrap();
        open_at(dir.path()).unwrap().close().unwrap();
    }

    #[test]
    fn temporary_session_is_removed_on_close_unless_kept() {
        let s = Session::open_with_env(SessionOptions::default(), |_| None).unwrap();
        let dir = s.dir().to_path_buf();
        assert!(dir.exists());
        s.close().unwrap();
        assert!(!dir.exists());
        let kept = Session::open_with_env(
            SessionOptions {
                keep: true,
                ..Default::default()
            },
            |_| None,
        )
        .unwrap();
        let dir = kept.dir().to_path_buf();
        kept.close().unwrap();
        assert!(dir.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn step_folder_names_stay_inside_the_session() {
        assert_eq!(safe_folder_name("../../x"), ".._.._x");
        assert_eq!(safe_folder_name(".."), "___");
        assert_eq!(safe_folder_name("extract-movies"), "extract-movies");
        assert_eq!(safe_folder_name("a/b"), "a_b");
        let dir = tempfile::tempdir().unwrap();
        let s = open_at(dir.path()).unwrap();
        let p = s.step_artifacts_dir("../../x").unwrap();
        assert!(p.starts_with(s.artifacts_dir()));
    }
}
