//! The pipeline spec (`[pipeline]`) and the store configuration (`[store]`).

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::Error;

/// What to aggregate: the `[pipeline]` table of the config file.
///
/// ```toml
/// [pipeline]
/// name = "orders"
/// dimensions = ["status", "region"]
/// windows = ["1m", "5m"]
/// [[pipeline.metrics]]
/// name = "amount"
/// attribute = "amount"
/// scale = 2
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Names the pipeline in documents, ids and the dashboard.
    #[serde(default = "default_name")]
    pub name: String,
    /// Attribute paths (`status`, `address.city`) whose values group the aggregates. Each is
    /// grouped on its own; a per-window total over all items (`_all`) is always kept.
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// Numeric attributes whose net sums are kept.
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
    /// Tumbling window sizes by event time, e.g. `["1m", "1h"]`; whole seconds, at least `1s`.
    #[serde(default = "default_windows")]
    pub windows: Vec<String>,
    /// How far behind the newest event time a window is kept in memory. A change older than that
    /// is quarantined as late instead of overwriting the stored window with a partial value.
    #[serde(default = "default_retention")]
    pub retention: String,
}

/// One summed attribute.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// The key of the sum in aggregate documents.
    pub name: String,
    /// The attribute path holding the number (type `N`).
    pub attribute: String,
    /// Decimal places kept exactly (0 to 18). A value with more places is quarantined, never
    /// rounded.
    #[serde(default = "default_scale")]
    pub scale: u32,
}

fn default_name() -> String {
    "default".to_owned()
}
fn default_windows() -> Vec<String> {
    vec!["1m".to_owned()]
}
fn default_retention() -> String {
    "6h".to_owned()
}
fn default_scale() -> u32 {
    6
}

/// A window size, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSize {
    /// As written in the spec, e.g. `1m`.
    pub label: String,
    /// In milliseconds.
    pub millis: i64,
}

impl PipelineSpec {
    /// Checks the spec and returns its window sizes.
    pub fn validate(&self) -> Result<Vec<WindowSize>, Error> {
        let bad = |msg: String| Err(Error::Spec(msg));
        if self.name.is_empty() || self.name.contains('|') {
            return bad(format!(
                "pipeline.name `{}` must be non-empty and without `|`",
                self.name
            ));
        }
        if self.windows.is_empty() {
            return bad("pipeline.windows must name at least one window size".to_owned());
        }
        let mut sizes = Vec::new();
        for label in &self.windows {
            let d = humantime::parse_duration(label).map_err(|e| {
                Error::Spec(format!(
                    "pipeline.windows: `{label}` is not a duration: {e}"
                ))
            })?;
            if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
                return bad(format!(
                    "pipeline.windows: `{label}` must be whole seconds, at least 1s"
                ));
            }
            if sizes.iter().any(|w: &WindowSize| w.label == *label) {
                return bad(format!("pipeline.windows: `{label}` is listed twice"));
            }
            sizes.push(WindowSize {
                label: label.clone(),
                millis: d.as_millis() as i64,
            });
        }
        for (i, dim) in self.dimensions.iter().enumerate() {
            if dim.is_empty() || dim == streamlens_core::aggregate::ALL_DIMENSION {
                return bad(format!(
                    "pipeline.dimensions: `{dim}` is not a usable attribute path"
                ));
            }
            if self.dimensions[..i].contains(dim) {
                return bad(format!("pipeline.dimensions: `{dim}` is listed twice"));
            }
        }
        for (i, m) in self.metrics.iter().enumerate() {
            if m.scale > 18 {
                return bad(format!(
                    "pipeline.metrics `{}`: scale {} is above 18",
                    m.name, m.scale
                ));
            }
            if m.name.is_empty() || self.metrics[..i].iter().any(|o| o.name == m.name) {
                return bad(format!(
                    "pipeline.metrics: name `{}` is empty or repeated",
                    m.name
                ));
            }
        }
        self.retention_ms()?;
        Ok(sizes)
    }

    /// The retention in milliseconds.
    pub fn retention_ms(&self) -> Result<i64, Error> {
        humantime::parse_duration(&self.retention)
            .map(|d| d.as_millis() as i64)
            .map_err(|e| Error::Spec(format!("pipeline.retention `{}`: {e}", self.retention)))
    }
}

/// Where aggregates are kept: the `[store]` table. `kind = "embedded"` or `kind = "opensearch"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreConfig {
    /// The embedded on-disk store: no server needed.
    Embedded(EmbeddedStoreConfig),
    /// An OpenSearch cluster (or Amazon OpenSearch Service domain).
    Opensearch(OpenSearchStoreConfig),
}

/// `[store] kind = "embedded"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedStoreConfig {
    /// The database file; created when missing. Default `data/streamlens.redb`.
    #[serde(default = "default_embedded_path")]
    pub path: PathBuf,
}

fn default_embedded_path() -> PathBuf {
    PathBuf::from("data/run/streamlens.redb")
}

impl Default for EmbeddedStoreConfig {
    fn default() -> Self {
        EmbeddedStoreConfig {
            path: default_embedded_path(),
        }
    }
}

/// `[store] kind = "opensearch"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenSearchStoreConfig {
    /// The cluster URL, e.g. `http://127.0.0.1:9200`.
    pub url: String,
    /// Prefix of the index and template names: aggregates go to `<prefix>-aggregates`.
    #[serde(default = "default_prefix")]
    pub index_prefix: String,
    /// Basic-auth user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(default)]
    pub password: Option<String>,
}

fn default_prefix() -> String {
    "streamlens".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_windows_are_named() {
        let err = toml::from_str::<PipelineSpec>("name = \"x\"\nwindowz = [\"1m\"]").unwrap_err();
        assert!(err.to_string().contains("windowz"), "{err}");
        let spec: PipelineSpec = toml::from_str("windows = [\"1m\", \"soon\"]").unwrap();
        let err = spec.validate().unwrap_err();
        assert!(err.to_string().contains("`soon`"), "{err}");
        let spec: PipelineSpec = toml::from_str("windows = [\"1m\", \"5m\"]").unwrap();
        assert_eq!(spec.validate().unwrap()[1].millis, 300_000);
    }
}
