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
/// windows = ["1m", "5m", "1h/5m"]        # tumbling 1m and 5m, and 1h windows starting every 5m
/// allowed_disorder = "5s"
/// allowed_lateness = "1d"
/// [[pipeline.filters]]
/// attribute = "type"
/// equals = "order"
/// [[pipeline.metrics]]
/// name = "amount"
/// attribute = "amount"
/// kind = "sum"
/// scale = 2
/// ```
///
/// Unknown keys are rejected; [`PipelineSpec::validate`] names the key and the value it refuses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Names the pipeline in documents, ids and the dashboard (no `|`).
    #[serde(default = "default_name")]
    pub name: String,
    /// Where a change's event time comes from: absent, the record's `ApproximateCreationDateTime`
    /// (whole seconds); else this attribute path of the new image (the old image for a REMOVE).
    #[serde(default)]
    pub event_time_attribute: Option<String>,
    /// How `event_time_attribute` is written: `epoch_seconds` (default, a number, fractions
    /// allowed), `epoch_millis` (a number) or `iso8601` (a string like `2026-01-01T12:00:00Z`).
    #[serde(default)]
    pub event_time_format: TimeFormat,
    /// Attribute paths (`status`, `address.city`: map keys) whose values group the aggregates.
    /// Each is grouped on its own; a per-window total over all items (`_all`) is always kept. An
    /// item without the attribute is in the group `(missing)`.
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// Conditions an image must meet to count (all of them). A MODIFY whose old image passes and
    /// new image does not takes the item out of the aggregates, and the other way round.
    #[serde(default)]
    pub filters: Vec<FilterSpec>,
    /// What to compute per window and group besides the event counts per kind and the net count.
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
    /// Window sizes by event time: `"1m"` is a tumbling window; `"1h/5m"` a hopping window of one
    /// hour starting every five minutes (the size a multiple of the slide). Whole seconds, at
    /// least `1s`.
    #[serde(default = "default_windows")]
    pub windows: Vec<String>,
    /// The watermark is the newest event time seen minus this: how much out of order changes may
    /// arrive before their windows count as passed.
    #[serde(default = "default_disorder")]
    pub allowed_disorder: String,
    /// How long after the watermark passes a window's end the window still accepts changes. Then
    /// it is marked final, written once more and dropped from memory; a change for it is late:
    /// counted (`streamlens_late_total`) and quarantined, never silently dropped. (Also accepted
    /// under its former name `retention`.)
    #[serde(default = "default_lateness", alias = "retention")]
    pub allowed_lateness: String,
}

impl Default for PipelineSpec {
    fn default() -> Self {
        PipelineSpec {
            name: default_name(),
            event_time_attribute: None,
            event_time_format: TimeFormat::default(),
            dimensions: Vec::new(),
            filters: Vec::new(),
            metrics: Vec::new(),
            windows: default_windows(),
            allowed_disorder: default_disorder(),
            allowed_lateness: default_lateness(),
        }
    }
}

/// How an event-time attribute is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Seconds since the epoch, a number (fractions allowed).
    #[default]
    EpochSeconds,
    /// Milliseconds since the epoch, a number.
    EpochMillis,
    /// An ISO-8601 UTC string, `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
    Iso8601,
}

/// What a metric computes over the changes of a window and group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// The net sum of a number attribute: INSERT adds the new value, REMOVE subtracts the old,
    /// MODIFY adds new minus old. Kept in [`AggregateDoc::sums`](streamlens_core::AggregateDoc).
    #[default]
    Sum,
    /// The net number of items that have the attribute (not NULL), with the same retractions.
    /// Kept in `counts`.
    Count,
    /// The net sum divided by the net count of items with the number: `sums` and `counts` are
    /// both kept, the average is `sum / count`.
    Avg,
    /// The smallest value written in the window (by the new images of its changes). Not
    /// retracted by later changes. Kept in `mins`.
    Min,
    /// The largest value written in the window, like `min`. Kept in `maxs`.
    Max,
    /// The distinct values (any type, by label) written in the window by the new images. Kept in
    /// `distinct` as the sorted list of values; its length is the distinct count.
    Distinct,
}

impl MetricKind {
    /// Whether the metric reads the attribute as a number.
    pub fn numeric(self) -> bool {
        matches!(
            self,
            MetricKind::Sum | MetricKind::Avg | MetricKind::Min | MetricKind::Max
        )
    }
}

/// One metric.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// The key of the metric in aggregate documents.
    pub name: String,
    /// The attribute path it reads (type `N` for the numeric kinds; a NULL or absent attribute
    /// counts as nothing).
    pub attribute: String,
    /// `sum` (default), `count`, `avg`, `min`, `max` or `distinct`.
    #[serde(default)]
    pub kind: MetricKind,
    /// Decimal places kept exactly by the numeric kinds (0 to 18). A value with more places is
    /// quarantined, never rounded.
    #[serde(default = "default_scale")]
    pub scale: u32,
}

/// A condition on an image: exactly one of `equals`, `not_equals`, `one_of`, `exists`. Values are
/// compared with the attribute's label (strings and numbers as written, `true`/`false`, `null`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// The attribute path.
    pub attribute: String,
    /// The attribute is present with this value.
    #[serde(default)]
    pub equals: Option<String>,
    /// The attribute is absent or has another value.
    #[serde(default)]
    pub not_equals: Option<String>,
    /// The attribute is present with one of these values.
    #[serde(default)]
    pub one_of: Option<Vec<String>>,
    /// The attribute is present (`true`) or absent (`false`).
    #[serde(default)]
    pub exists: Option<bool>,
}

fn default_name() -> String {
    "default".to_owned()
}
fn default_windows() -> Vec<String> {
    vec!["1m".to_owned()]
}
fn default_disorder() -> String {
    "5s".to_owned()
}
fn default_lateness() -> String {
    "1d".to_owned()
}
fn default_scale() -> u32 {
    6
}

/// A window, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSize {
    /// As written in the spec, e.g. `1m` or `1h/5m`.
    pub label: String,
    /// Length in milliseconds.
    pub millis: i64,
    /// Milliseconds between window starts (`millis` for a tumbling window).
    pub slide: i64,
}

/// The longest window, disorder or lateness: 100 years (with event times within years 0 to
/// 9999, window arithmetic then never overflows).
pub const LONGEST_MS: i64 = 100 * 366 * 86_400_000;

fn duration_ms(key: &str, text: &str) -> Result<i64, Error> {
    let d = humantime::parse_duration(text)
        .map_err(|e| Error::Spec(format!("{key}: `{text}` is not a duration: {e}")))?;
    bounded(key, text, d)
}

/// A duration in milliseconds, if it is at most [`LONGEST_MS`].
fn bounded(key: &str, text: &str, d: Duration) -> Result<i64, Error> {
    i64::try_from(d.as_millis())
        .ok()
        .filter(|ms| *ms <= LONGEST_MS)
        .ok_or_else(|| Error::Spec(format!("{key}: `{text}` is longer than 100 years")))
}

impl PipelineSpec {
    /// Checks the spec and returns its windows.
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
        let whole = |label: &str, part: &str| -> Result<i64, Error> {
            let d = humantime::parse_duration(part).map_err(|e| {
                Error::Spec(format!(
                    "pipeline.windows: `{label}` is not a duration: {e}"
                ))
            })?;
            if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
                return Err(Error::Spec(format!(
                    "pipeline.windows: `{label}` must be whole seconds, at least 1s"
                )));
            }
            bounded("pipeline.windows", label, d)
        };
        let mut sizes = Vec::new();
        for label in &self.windows {
            let (size, slide) = match label.split_once('/') {
                Some((size, slide)) => (whole(label, size.trim())?, whole(label, slide.trim())?),
                None => {
                    let size = whole(label, label)?;
                    (size, size)
                }
            };
            if size % slide != 0 {
                return bad(format!(
                    "pipeline.windows: `{label}`: the size must be a multiple of the slide"
                ));
            }
            if size / slide > 60 {
                return bad(format!(
                    "pipeline.windows: `{label}` puts each change in {} windows; at most 60",
                    size / slide
                ));
            }
            if sizes.iter().any(|w: &WindowSize| w.label == *label) {
                return bad(format!("pipeline.windows: `{label}` is listed twice"));
            }
            sizes.push(WindowSize {
                label: label.clone(),
                millis: size,
                slide,
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
            if m.attribute.is_empty() {
                return bad(format!("pipeline.metrics `{}`: attribute is empty", m.name));
            }
        }
        for f in &self.filters {
            let operators = usize::from(f.equals.is_some())
                + usize::from(f.not_equals.is_some())
                + usize::from(f.one_of.is_some())
                + usize::from(f.exists.is_some());
            if operators != 1 {
                return bad(format!(
                    "pipeline.filters on `{}`: give exactly one of equals, not_equals, one_of, exists",
                    f.attribute
                ));
            }
            if f.attribute.is_empty() {
                return bad("pipeline.filters: attribute is empty".to_owned());
            }
        }
        if self
            .event_time_attribute
            .as_ref()
            .is_some_and(|a| a.is_empty())
        {
            return bad("pipeline.event_time_attribute is empty".to_owned());
        }
        self.disorder_ms()?;
        self.lateness_ms()?;
        Ok(sizes)
    }

    /// `allowed_disorder` in milliseconds.
    pub fn disorder_ms(&self) -> Result<i64, Error> {
        duration_ms("pipeline.allowed_disorder", &self.allowed_disorder)
    }

    /// `allowed_lateness` in milliseconds.
    pub fn lateness_ms(&self) -> Result<i64, Error> {
        duration_ms("pipeline.allowed_lateness", &self.allowed_lateness)
    }

    /// How far back from the newest event time stored windows can still change (and must be
    /// restored on resume): disorder + lateness + the longest window.
    pub fn open_horizon_ms(&self) -> Result<i64, Error> {
        let longest = self
            .validate()?
            .iter()
            .map(|w| w.millis)
            .max()
            .unwrap_or_default();
        Ok(self.disorder_ms()? + self.lateness_ms()? + longest)
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
    /// Group commit: the pipeline's writes are made durable (fsynced) at least this often, and
    /// committed without waiting for the disk in between. A crash loses at most this much work,
    /// whose changes are read again on resume (documents and checkpoint are lost together); an
    /// idle pipeline makes its writes durable this long after the last. `"0s"` makes every
    /// write durable. Default `"1s"`.
    #[serde(
        default = "default_durable_every",
        with = "streamlens_ingest::config::humantime_serde_compat"
    )]
    pub durable_every: Duration,
}

fn default_durable_every() -> Duration {
    Duration::from_secs(1)
}

fn default_embedded_path() -> PathBuf {
    PathBuf::from("data/run/streamlens.redb")
}

impl Default for EmbeddedStoreConfig {
    fn default() -> Self {
        EmbeddedStoreConfig {
            path: default_embedded_path(),
            durable_every: default_durable_every(),
        }
    }
}

/// `[store] kind = "opensearch"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenSearchStoreConfig {
    /// The cluster URL, e.g. `http://127.0.0.1:9200`. Leave out with `domain`.
    #[serde(default)]
    pub url: String,
    /// An Amazon OpenSearch Service domain name: its endpoint is looked up with
    /// `DescribeDomain` (in `region`) instead of giving `url`, and requests are signed (SigV4)
    /// unless `auth` says otherwise.
    #[serde(default)]
    pub domain: Option<String>,
    /// The AWS region of `domain` and of SigV4 signing; the SDK's default chain when left out.
    #[serde(default)]
    pub region: Option<String>,
    /// The OpenSearch *control plane* endpoint for `DescribeDomain` (tests, private endpoints).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// `none`, `basic` (with `username` and `password`) or `aws_sigv4` (the usual AWS
    /// credentials, service `es`). Default: `basic` with a user name, `aws_sigv4` with a
    /// domain, else `none`.
    #[serde(default)]
    pub auth: Option<OpenSearchAuth>,
    /// Prefix of the index and template names: aggregates go to `<prefix>-aggregates`.
    #[serde(default = "default_prefix")]
    pub index_prefix: String,
    /// Basic-auth user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(default)]
    pub password: Option<String>,
    /// How long a request answered `429`/`5xx` (or lost on the way) is retried, with backoff,
    /// before the pipeline stops with an error; meanwhile it waits and nothing is acknowledged.
    #[serde(default = "default_retry_for")]
    pub retry_for: String,
}

/// How requests to OpenSearch authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenSearchAuth {
    /// No credentials.
    None,
    /// HTTP basic authentication with `username` and `password`.
    Basic,
    /// AWS Signature Version 4 (Amazon OpenSearch Service with IAM access control).
    AwsSigv4,
}

impl OpenSearchStoreConfig {
    /// The authentication in effect (`auth`, or its default).
    pub fn auth(&self) -> OpenSearchAuth {
        self.auth.unwrap_or(if self.username.is_some() {
            OpenSearchAuth::Basic
        } else if self.domain.is_some() {
            OpenSearchAuth::AwsSigv4
        } else {
            OpenSearchAuth::None
        })
    }
}

fn default_retry_for() -> String {
    "10m".to_owned()
}

impl OpenSearchStoreConfig {
    /// A store at `url` with the default prefix and no authentication.
    pub fn new(url: impl Into<String>) -> Self {
        OpenSearchStoreConfig {
            url: url.into(),
            domain: None,
            region: None,
            endpoint_url: None,
            auth: None,
            index_prefix: default_prefix(),
            username: None,
            password: None,
            retry_for: default_retry_for(),
        }
    }
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
        let spec: PipelineSpec = toml::from_str("windows = [\"1h/5m\"]").unwrap();
        let w = &spec.validate().unwrap()[0];
        assert_eq!((w.millis, w.slide), (3_600_000, 300_000));
        let spec: PipelineSpec = toml::from_str("windows = [\"1h/7m\"]").unwrap();
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("multiple of the slide"), "{err}");
        // Durations past 100 years are refused, not wrapped around.
        let spec: PipelineSpec = toml::from_str("windows = [\"200years\"]").unwrap();
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("`200years` is longer than 100 years"), "{err}");
        let spec: PipelineSpec = toml::from_str("allowed_disorder = \"400000000years\"").unwrap();
        let err = spec.disorder_ms().unwrap_err().to_string();
        assert!(err.contains("allowed_disorder"), "{err}");
    }

    #[test]
    fn filters_need_exactly_one_operator_and_kinds_are_checked() {
        let spec: PipelineSpec =
            toml::from_str("[[filters]]\nattribute = \"type\"\nequals = \"a\"\nexists = true\n")
                .unwrap();
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("exactly one of"), "{err}");
        let err = toml::from_str::<PipelineSpec>(
            "[[metrics]]\nname = \"x\"\nattribute = \"x\"\nkind = \"median\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("median"), "{err}");
        let spec: PipelineSpec = toml::from_str("retention = \"2h\"").unwrap();
        assert_eq!(spec.lateness_ms().unwrap(), 7_200_000);
    }
}
