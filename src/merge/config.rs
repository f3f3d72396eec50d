//! The merge's config (serde; unknown keys are errors listing the valid ones).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// A source: a table name, `{"table": name}`, or `{"path": file, ...extractor options}`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Table to read, when the source is a table.
    pub table: Option<String>,
    /// File to load first (with the CsvExtractor), when the source is a file.
    pub path: Option<String>,
    /// Extra CsvExtractor options for `path`.
    pub csv_options: serde_json::Map<String, Value>,
    /// The source's name in stats and `_match_sources`.
    pub name: String,
    /// For `source_priority`: higher wins (default: earlier sources win).
    pub priority: Option<i64>,
}

impl SourceConfig {
    fn from_json(v: &Value, what: &str) -> Result<SourceConfig> {
        match v {
            Value::String(t) if !t.is_empty() => Ok(SourceConfig {
                table: Some(t.clone()),
                path: None,
                csv_options: Default::default(),
                name: t.clone(),
                priority: None,
            }),
            Value::Object(m) => {
                let mut m = m.clone();
                let name = m.remove("name").and_then(|n| n.as_str().map(String::from));
                let priority = match m.remove("priority") {
                    None | Some(Value::Null) => None,
                    Some(p) => Some(p.as_i64().ok_or_else(|| {
                        Error::Config(format!("{what}: priority must be a whole number, got {p}"))
                    })?),
                };
                let table = m.remove("table").map(|t| {
                    t.as_str()
                        .map(String::from)
                        .ok_or_else(|| Error::Config(format!("{what}: table must be a string")))
                });
                let path = m.remove("path").map(|p| {
                    p.as_str()
                        .map(String::from)
                        .ok_or_else(|| Error::Config(format!("{what}: path must be a string")))
                });
                let (table, path) = (table.transpose()?, path.transpose()?);
                match (&table, &path) {
                    (Some(_), Some(_)) => Err(Error::Config(format!(
                        "{what}: give either \"table\" or \"path\", not both"
                    ))),
                    (None, None) => Err(Error::Config(format!(
                        "{what}: needs \"table\" or \"path\" (valid keys: table, path, name, \
                         priority, and CsvExtractor options with path)"
                    ))),
                    (Some(t), None) if !m.is_empty() => Err(Error::Config(format!(
                        "{what}: unknown keys {:?} for a table source; valid keys: table, name, priority",
                        m.keys().collect::<Vec<_>>()
                    ))),
                    _ => {
                        let default_name = match (&table, &path) {
                            (Some(t), _) => t.clone(),
                            (_, Some(p)) => file_stem(p),
                            _ => unreachable!("checked above"),
                        };
                        let _ = &table;
                        Ok(SourceConfig {
                            table,
                            path,
                            csv_options: m,
                            name: name.unwrap_or(default_name),
                            priority,
                        })
                    }
                }
            }
            other => Err(Error::Config(format!(
                "{what}: expected a table name or {{\"table\": ...}} / {{\"path\": ...}}, got {other}"
            ))),
        }
    }
}

/// `crm.csv.gz` → `crm`.
fn file_stem(path: &str) -> String {
    let name = std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string());
    name.split('.').next().unwrap_or(&name).to_string()
}

/// How key values are normalised before matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyNormalize {
    Text,
    Email { canonical: bool },
    Phone { default_region: Option<String> },
    Exact,
}

/// One matching key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    /// The column in the original.
    pub column: String,
    /// The column in the enriched sources (matched case-insensitively).
    pub enriched_column: String,
    pub normalize: KeyNormalize,
}

const KEY_FIELDS: &[&str] = &[
    "column",
    "enriched_column",
    "normalize",
    "default_region",
    "email_canonical",
];

impl KeyConfig {
    fn from_json(v: &Value, i: usize) -> Result<KeyConfig> {
        let what = format!("keys[{i}]");
        match v {
            Value::String(c) if !c.is_empty() => Ok(KeyConfig {
                column: c.clone(),
                enriched_column: c.clone(),
                normalize: default_normalize(None, false),
            }),
            Value::Object(m) => {
                if let Some(bad) = m.keys().find(|k| !KEY_FIELDS.contains(&k.as_str())) {
                    return Err(Error::Config(format!(
                        "{what}: unknown key {bad:?}; valid keys: {}",
                        KEY_FIELDS.join(", ")
                    )));
                }
                let column = m
                    .get("column")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| Error::Config(format!("{what}: \"column\" is required")))?
                    .to_string();
                let enriched_column = m
                    .get("enriched_column")
                    .and_then(Value::as_str)
                    .unwrap_or(&column)
                    .to_string();
                let region = m
                    .get("default_region")
                    .and_then(Value::as_str)
                    .map(String::from);
                let canonical = m
                    .get("email_canonical")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let normalize = match m.get("normalize").and_then(Value::as_str) {
                    None => default_normalize(region.as_ref(), canonical),
                    Some("text") => KeyNormalize::Text,
                    Some("email") => KeyNormalize::Email { canonical },
                    Some("phone") => KeyNormalize::Phone { default_region: region.clone() },
                    Some("exact") => KeyNormalize::Exact,
                    Some(other) => {
                        return Err(Error::Config(format!(
                            "{what}: normalize {other:?} is not valid; use \"text\", \"email\", \"phone\" or \"exact\""
                        )))
                    }
                };
                if let Some(r) = &region {
                    let known = matches!(&normalize, KeyNormalize::Phone { .. })
                        && r.len() == 2
                        && crate::merge::udf::parse_spec(&format!(
                            "phone:{}",
                            r.to_ascii_uppercase()
                        ))
                        .is_ok();
                    if !known {
                        return Err(Error::Config(format!(
                            "{what}: default_region {r:?} is not valid here; it needs normalize \
                             \"phone\" and a two-letter country code such as \"CZ\""
                        )));
                    }
                }
                if canonical && !matches!(&normalize, KeyNormalize::Email { .. }) {
                    return Err(Error::Config(format!(
                        "{what}: email_canonical needs normalize \"email\""
                    )));
                }
                Ok(KeyConfig {
                    column,
                    enriched_column,
                    normalize,
                })
            }
            other => Err(Error::Config(format!(
                "{what}: expected a column name or an object with \"column\", got {other}"
            ))),
        }
    }
}

/// The normaliser when a key names none: `text` (the documented default),
/// unless the key's options only make sense for another one
/// (`default_region` → phone, `email_canonical` → email).
fn default_normalize(region: Option<&String>, canonical: bool) -> KeyNormalize {
    if region.is_some() {
        KeyNormalize::Phone {
            default_region: region.cloned(),
        }
    } else if canonical {
        KeyNormalize::Email { canonical }
    } else {
        KeyNormalize::Text
    }
}

/// How one field's value is chosen among the contributing rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    First,
    Last,
    Longest,
    MostComplete,
    SourcePriority,
    MostRecent,
    MostFrequent,
}

/// A field that also exists in the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Keep the original's non-null value, else the enriched one.
    #[default]
    Fill,
    /// The enriched value when there is one, else the original's.
    Overwrite,
    /// The original unchanged; the enriched value in `<field>_enriched`.
    KeepBoth,
}

/// Where the merge writes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub table: Option<String>,
    pub path: Option<String>,
    #[serde(default = "yes")]
    pub provenance: bool,
    /// `false` stores the output table's text columns uncompressed (faster
    /// to write, more disk), as the CsvExtractor option of the same name.
    #[serde(default = "yes")]
    pub compress_text: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            table: None,
            path: None,
            provenance: true,
            compress_text: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    original: Value,
    enriched: Vec<Value>,
    keys: Vec<Value>,
    fields: Option<Vec<String>>,
    #[serde(default = "default_strategy")]
    strategy: Strategy,
    #[serde(default)]
    field_strategies: BTreeMap<String, Strategy>,
    #[serde(default)]
    on_conflict: OnConflict,
    recency_column: Option<String>,
    output: Option<OutputConfig>,
    #[serde(default = "yes")]
    resume: bool,
}

fn default_strategy() -> Strategy {
    Strategy::First
}

/// The most enriched sources one merge takes (the contributing sources of a
/// row are kept as bits of one BIGINT).
pub const MAX_SOURCES: usize = 62;

/// The whole merge config.
#[derive(Debug, Clone)]
pub struct MergeConfig {
    pub original: SourceConfig,
    pub enriched: Vec<SourceConfig>,
    pub keys: Vec<KeyConfig>,
    pub fields: Option<Vec<String>>,
    pub strategy: Strategy,
    pub field_strategies: BTreeMap<String, Strategy>,
    pub on_conflict: OnConflict,
    pub recency_column: Option<String>,
    pub output: OutputConfig,
    pub resume: bool,
}

impl MergeConfig {
    /// Parses and checks a config; every problem is a `ConfigError` naming the step.
    pub fn from_json(step_id: &str, config: Value) -> Result<MergeConfig> {
        let err = |m: String| Error::Config(format!("Step {step_id}: {m}"));
        crate::error::require_mapping(step_id, "merge", &config)?;
        let raw: RawConfig = serde_json::from_value(config)
            .map_err(|e| err(format!("invalid merge config: {e}")))?;
        let original =
            SourceConfig::from_json(&raw.original, "original").map_err(|e| err(e.to_string()))?;
        if raw.enriched.is_empty() {
            return Err(err("enriched must list at least one source".into()));
        }
        let enriched = raw
            .enriched
            .iter()
            .enumerate()
            .map(|(i, v)| SourceConfig::from_json(v, &format!("enriched[{i}]")))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| err(e.to_string()))?;
        let mut names = std::collections::HashSet::new();
        for s in &enriched {
            if !names.insert(s.name.clone()) {
                return Err(err(format!(
                    "two enriched sources are named {:?}; give each a distinct \"name\"",
                    s.name
                )));
            }
        }
        if enriched.len() > MAX_SOURCES {
            return Err(err(format!(
                "enriched lists {} sources; at most {MAX_SOURCES} are supported in one merge",
                enriched.len()
            )));
        }
        if raw.keys.is_empty() {
            return Err(err(
                "keys must list at least one key, e.g. [\"email\"]".into()
            ));
        }
        let keys = raw
            .keys
            .iter()
            .enumerate()
            .map(|(i, v)| KeyConfig::from_json(v, i))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| err(e.to_string()))?;
        let needs_recency = raw.strategy == Strategy::MostRecent
            || raw
                .field_strategies
                .values()
                .any(|s| *s == Strategy::MostRecent);
        if needs_recency && raw.recency_column.is_none() {
            return Err(err("strategy most_recent needs recency_column".into()));
        }
        Ok(MergeConfig {
            original,
            enriched,
            keys,
            fields: raw.fields,
            strategy: raw.strategy,
            field_strategies: raw.field_strategies,
            on_conflict: raw.on_conflict,
            recency_column: raw.recency_column,
            output: raw.output.unwrap_or_default(),
            resume: raw.resume,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_options_imply_their_normaliser_and_are_checked() {
        let key = |k: Value| {
            MergeConfig::from_json(
                "m",
                json!({"original": "crm", "enriched": ["a"], "keys": [k]}),
            )
        };
        let c = key(json!({"column": "tel", "default_region": "CZ"})).unwrap();
        assert_eq!(
            c.keys[0].normalize,
            KeyNormalize::Phone {
                default_region: Some("CZ".into())
            }
        );
        let c = key(json!({"column": "mail", "email_canonical": true})).unwrap();
        assert_eq!(c.keys[0].normalize, KeyNormalize::Email { canonical: true });
        let e = key(json!({"column": "tel", "normalize": "phone", "default_region": "XX"}));
        assert!(e.unwrap_err().to_string().contains("default_region \"XX\""));
        let e = key(json!({"column": "tel", "normalize": "text", "default_region": "CZ"}));
        assert!(e.is_err());
        let e = MergeConfig::from_json("m", json!(["crm"]));
        assert!(e.unwrap_err().to_string().contains("must be a mapping"));
    }

    #[test]
    fn shorthand_keys_and_sources() {
        let c = MergeConfig::from_json(
            "m",
            json!({"original": "crm", "enriched": ["a", {"path": "dir/vendor_b.csv.gz", "priority": 2}],
                   "keys": ["email", {"column": "phone", "normalize": "phone", "default_region": "CZ"}]}),
        )
        .unwrap();
        assert_eq!(c.enriched[1].name, "vendor_b");
        assert_eq!(c.enriched[1].priority, Some(2));
        // The documented default is text, whatever the column is called.
        assert_eq!(c.keys[0].normalize, KeyNormalize::Text);
        assert_eq!(
            c.keys[1].normalize,
            KeyNormalize::Phone {
                default_region: Some("CZ".into())
            }
        );
        assert_eq!(c.strategy, Strategy::First);
        assert!(c.output.provenance);
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let cases = [
            (
                json!({"original": "crm", "enriched": ["a"], "keys": []}),
                "keys must list",
            ),
            (
                json!({"original": "crm", "enriched": [], "keys": ["email"]}),
                "enriched must list",
            ),
            (
                json!({"original": "crm", "enriched": ["a"], "keys": ["email"], "strategy": "best"}),
                "unknown variant",
            ),
            (
                json!({"original": "crm", "enriched": ["a"], "keys": ["email"], "strategy": "most_recent"}),
                "recency_column",
            ),
            (
                json!({"original": "crm", "enriched": ["a"], "keys": [{"column": "x", "normalize": "soundex"}]}),
                "normalize",
            ),
            (
                json!({"original": "crm", "enriched": ["a"], "keys": ["email"], "colour": 1}),
                "unknown field",
            ),
            (
                json!({"original": "crm", "enriched": ["a", "a"], "keys": ["email"]}),
                "distinct",
            ),
        ];
        for (cfg, needle) in cases {
            let e = MergeConfig::from_json("m", cfg.clone())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("Step m:") && e.contains(needle), "{cfg}: {e}");
        }
    }
}
