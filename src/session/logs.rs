//! `logs/events.jsonl` and `logs/metrics.jsonl`: one JSON object a line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Appends events and metrics for one session.
pub struct SessionLog {
    session_id: String,
    events: Mutex<File>,
    metrics: Mutex<File>,
}

/// ISO-8601 UTC with milliseconds, e.g. `2026-11-21T05:30:00.123Z`.
pub fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

impl SessionLog {
    /// Opens (creating) the two log files in `logs_dir`.
    pub fn open(logs_dir: &Path, session_id: &str) -> Result<Self> {
        Ok(SessionLog {
            session_id: session_id.to_string(),
            events: Mutex::new(open_append(&logs_dir.join("events.jsonl"))?),
            metrics: Mutex::new(open_append(&logs_dir.join("metrics.jsonl"))?),
        })
    }

    /// `{"ts", "session", "event": name, ...data}`. Keys in `data` named like
    /// the fixed keys are kept under `data_<key>` so they cannot overwrite them.
    pub fn event(&self, name: &str, data: Map<String, Value>) -> Result<()> {
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(now_iso()));
        line.insert("session".into(), Value::String(self.session_id.clone()));
        line.insert("event".into(), Value::String(name.to_string()));
        for (k, v) in data {
            let key = if line.contains_key(&k) {
                format!("data_{k}")
            } else {
                k
            };
            line.insert(key, v);
        }
        write_line(&self.events, &Value::Object(line))
    }

    /// `{"ts", "session", "metric": name, "value": v, "tags": {...}}`.
    pub fn metric(&self, name: &str, value: Value, tags: Map<String, Value>) -> Result<()> {
        let line = serde_json::json!({
            "ts": now_iso(),
            "session": self.session_id,
            "metric": name,
            "value": value,
            "tags": tags,
        });
        write_line(&self.metrics, &line)
    }
}

fn write_line(file: &Mutex<File>, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string(value).map_err(|e| Error::Config(e.to_string()))?;
    text.push('\n');
    let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
    // One write call per line: with O_APPEND, lines from threads never interleave.
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io("writing the session log", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_and_metric_lines_have_the_documented_keys() {
        let dir = tempfile::tempdir().unwrap();
        let log = SessionLog::open(dir.path(), "job-1").unwrap();
        let mut data = Map::new();
        data.insert("rows".into(), Value::from(3));
        data.insert("event".into(), Value::from("clash"));
        log.event("step_start", data).unwrap();
        let mut tags = Map::new();
        tags.insert("step".into(), Value::from("crm"));
        log.metric("rows_read", Value::from(10), tags).unwrap();

        let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        let ev: Value = serde_json::from_str(events.trim()).unwrap();
        assert_eq!(ev["event"], "step_start");
        assert_eq!(ev["session"], "job-1");
        assert_eq!(ev["rows"], 3);
        assert_eq!(ev["data_event"], "clash");
        assert!(ev["ts"].as_str().unwrap().ends_with('Z'));

        let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        let m: Value = serde_json::from_str(metrics.trim()).unwrap();
        assert_eq!(m["metric"], "rows_read");
        assert_eq!(m["value"], 10);
        assert_eq!(m["tags"]["step"], "crm");
    }
}
