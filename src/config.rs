//! The streamlens config file.
//!
//! ```toml
//! data_dir = "data/run"          # quarantine file and embedded store live here
//!
//! [source]                       # where changes come from
//! kind = "dynamodb"              # or "archive"
//! table = "orders"
//! endpoint_url = "http://127.0.0.1:5000"   # local moto; omit for AWS
//!
//! [store]                        # where aggregates go
//! kind = "opensearch"            # or "embedded" (the default)
//! url = "http://127.0.0.1:9200"
//!
//! [pipeline]                     # what to aggregate
//! name = "orders"
//! dimensions = ["status", "region"]
//! windows = ["1m", "5m"]
//! [[pipeline.metrics]]
//! name = "amount"
//! attribute = "amount"
//! scale = 2
//!
//! [dashboard]
//! listen = "127.0.0.1:3000"
//! ```
//!
//! Unknown keys are rejected, and every error names the file, the line and the key.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use streamlens_aggregator::{
    config::{EmbeddedStoreConfig, MetricKind, MetricSpec},
    PipelineSpec, StoreConfig,
};
use streamlens_ingest::{config::ArchiveSourceConfig, SourceConfig};

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line, column and key.
        message: String,
    },
}

/// Everything one streamlens process does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for run data: the quarantine file (`quarantine.ndjson`) and, by default, the
    /// embedded store.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where changes come from.
    pub source: SourceConfig,
    /// Also write every change read, before it is aggregated, to this newline-delimited archive
    /// (`.gz` compresses); a `kind = "archive"` source replays it.
    #[serde(default)]
    pub archive_to: Option<PathBuf>,
    /// Keep every change read in a segmented archive directory, committed before each
    /// checkpoint: `streamlens replay` reads it, beyond the stream's 24 hours. On by default for
    /// a DynamoDB source (in `<data_dir>/archive`, 30 days kept), unless `archive_to` is given,
    /// the stream is shared through `[source.lease]` (give each worker its own `[archive] dir`)
    /// or `[archive] enabled = false`. After loading, `None` means no archive.
    #[serde(default)]
    pub archive: Option<ArchiveConfig>,
    /// Where aggregates are kept; the embedded store when absent.
    #[serde(default = "default_store")]
    pub store: StoreConfig,
    /// What to aggregate.
    pub pipeline: PipelineSpec,
    /// The raw change index (forensics).
    #[serde(default)]
    pub changes: ChangesConfig,
    /// The web dashboard and API.
    #[serde(default)]
    pub dashboard: DashboardConfig,
}

/// `[archive]`: the segmented archive of every change read (see
/// `streamlens_ingest::archive::segments`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Keep the archive (set `false` to turn the default one off).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The directory (created when missing) [default: `<data_dir>/archive`].
    #[serde(default)]
    pub dir: PathBuf,
    /// Start a new segment once one holds this many megabytes (compressed).
    #[serde(default = "default_segment_mb")]
    pub segment_mb: u64,
    /// Start a new segment once one is this old.
    #[serde(default = "default_segment_age")]
    pub segment_age: String,
    /// Delete segments whose newest change is older than the newest change read minus this
    /// (`30d`, `90d`, …); everything is kept when absent (or `forever`). The archive a DynamoDB
    /// source keeps without an `[archive]` section keeps 30 days.
    #[serde(default)]
    pub retention: Option<String>,
}

impl ArchiveConfig {
    /// The archive a DynamoDB source keeps when the config says nothing.
    pub fn default_in(data_dir: &Path) -> Self {
        ArchiveConfig {
            enabled: true,
            dir: data_dir.join("archive"),
            segment_mb: default_segment_mb(),
            segment_age: default_segment_age(),
            retention: Some("30d".to_owned()),
        }
    }
}

fn default_segment_mb() -> u64 {
    64
}
fn default_segment_age() -> String {
    "1h".to_owned()
}

impl ArchiveConfig {
    /// The writer's settings; durations that cannot be read are named.
    pub fn segments(&self) -> Result<streamlens_ingest::archive::segments::SegmentsConfig, String> {
        let duration = |key: &str, text: &str| {
            humantime::parse_duration(text)
                .map_err(|e| format!("archive.{key}: `{text}` is not a duration: {e}"))
        };
        Ok(streamlens_ingest::archive::segments::SegmentsConfig {
            dir: self.dir.clone(),
            segment_bytes: self.segment_mb.max(1) << 20,
            segment_age: duration("segment_age", &self.segment_age)?,
            retention_ms: self
                .retention
                .as_deref()
                .filter(|r| *r != "forever")
                .map(|r| duration("retention", r).map(|d| d.as_millis() as i64))
                .transpose()?,
        })
    }
}

/// `[changes]`: the raw change index. Every change read is kept whole — table, item key, kind,
/// event time, sequence number, shard, both images and the attributes it touched — in the store
/// (its own daily indices in OpenSearch, its own tables in the embedded store) and searched by
/// `POST /api/changes`, `streamlens changes` and the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesConfig {
    /// Keep the change index. Off, an archive source reads only the attributes the pipeline
    /// needs, which is faster.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long changes are kept, counted back from the newest change read (so a replay of old
    /// data keeps its last days too): `7d`, `24h`, ...
    #[serde(default = "default_retention")]
    pub retention: String,
    /// The table name changes are filed under: the source's table by default (the pipeline's name
    /// for an archive source).
    #[serde(default)]
    pub table: Option<String>,
}

impl Default for ChangesConfig {
    fn default() -> Self {
        ChangesConfig {
            enabled: true,
            retention: default_retention(),
            table: None,
        }
    }
}

fn default_retention() -> String {
    "7d".to_owned()
}

/// `[dashboard]`: the web UI, the JSON API and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Serve the dashboard at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory holding the compiled browser bundle (`pkg/`), built by
    /// `dashboard/build-client.sh`. Overridden by `STREAMLENS_SITE_ROOT`.
    #[serde(default = "default_site_root")]
    pub site_root: PathBuf,
    /// An access token every page and API request must carry (`Authorization: Bearer`, or a
    /// cookie set by opening a page once with `?token=`). Without one the dashboard may only
    /// listen on a loopback address. `STREAMLENS_DASHBOARD_TOKEN` overrides it.
    #[serde(default)]
    pub token: Option<String>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            listen: default_listen(),
            site_root: default_site_root(),
            token: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3000))
}
fn default_site_root() -> PathBuf {
    std::env::var_os("STREAMLENS_SITE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/site"))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data/run")
}
fn default_store() -> StoreConfig {
    StoreConfig::Embedded(EmbeddedStoreConfig::default())
}

/// The shipped sample orders stream.
pub const SAMPLE_ARCHIVE: &str = "data/sample/orders.ndjson.gz";

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `name` names it in errors.
    pub fn parse(text: &str, name: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.pipeline.validate().map_err(|e| ConfigError::Parse {
            path: name.to_owned(),
            message: e.to_string(),
        })?;
        config
            .change_retention_ms()
            .map_err(|message| ConfigError::Parse {
                path: name.to_owned(),
                message,
            })?;
        let mut config = config;
        config.archive = match config.archive.take() {
            Some(archive) if !archive.enabled => None,
            Some(mut archive) => {
                if archive.dir.as_os_str().is_empty() {
                    archive.dir = config.data_dir.join("archive");
                }
                Some(archive)
            }
            None => match &config.source {
                SourceConfig::Dynamodb(source)
                    if source.lease.is_none() && config.archive_to.is_none() =>
                {
                    Some(ArchiveConfig::default_in(&config.data_dir))
                }
                _ => None,
            },
        };
        if let Ok(token) = std::env::var("STREAMLENS_DASHBOARD_TOKEN") {
            config.dashboard.token = Some(token);
        }
        config
            .check_dashboard()
            .and_then(|()| config.check_archive())
            .map_err(|message| ConfigError::Parse {
                path: name.to_owned(),
                message,
            })?;
        Ok(config)
    }

    /// The archive written must not be the archive read: it would grow under the reader.
    fn check_archive(&self) -> Result<(), String> {
        if let Some(archive) = &self.archive {
            if self.archive_to.is_some() {
                return Err(
                    "give either archive_to (one file) or [archive] (segments), not both"
                        .to_owned(),
                );
            }
            archive.segments()?;
            if let SourceConfig::Archive(source) = &self.source {
                if source.path.starts_with(&archive.dir) {
                    return Err(format!(
                        "[archive] dir {} holds the source archive: archive to another directory",
                        archive.dir.display()
                    ));
                }
            }
        }
        let (Some(to), SourceConfig::Archive(source)) = (&self.archive_to, &self.source) else {
            return Ok(());
        };
        let same = match (to.canonicalize(), source.path.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => *to == source.path,
        };
        if same {
            return Err(format!(
                "archive_to is the source archive {}: archive to another file",
                to.display()
            ));
        }
        Ok(())
    }

    /// A dashboard without a token may only listen on a loopback address; a token must be long
    /// enough not to be guessed.
    fn check_dashboard(&self) -> Result<(), String> {
        let d = &self.dashboard;
        match &d.token {
            Some(token)
                if token.len() < 16 || token.chars().any(|c| !c.is_ascii_graphic() || c == ';') =>
            {
                Err("dashboard.token: use at least 16 visible ASCII characters, no `;`".to_owned())
            }
            None if d.enabled && !d.listen.ip().is_loopback() => Err(format!(
                "dashboard.listen is {} but dashboard.token is not set: without a token the \
                 dashboard only listens on a loopback address (127.0.0.1 or ::1)",
                d.listen
            )),
            _ => Ok(()),
        }
    }

    /// `[changes] retention` in milliseconds.
    pub fn change_retention_ms(&self) -> Result<i64, String> {
        let text = &self.changes.retention;
        humantime::parse_duration(text)
            .map_err(|e| format!("changes.retention: `{text}` is not a duration: {e}"))
            .and_then(|d| {
                i64::try_from(d.as_millis())
                    .map_err(|_| format!("changes.retention: `{text}` is too long"))
            })
    }

    /// The table name changes are filed under.
    pub fn change_table(&self) -> String {
        if let Some(table) = &self.changes.table {
            return table.clone();
        }
        match &self.source {
            SourceConfig::Dynamodb(c) => c
                .stream_arn
                .as_deref()
                .and_then(|arn| arn.split("table/").nth(1))
                .and_then(|rest| rest.split('/').next())
                .or(c.table.as_deref())
                .unwrap_or(&self.pipeline.name)
                .to_owned(),
            _ => self.pipeline.name.clone(),
        }
    }

    /// The embedded demo: the sample orders stream replayed live into the embedded store.
    pub fn demo() -> Self {
        let data_dir = default_data_dir();
        Config {
            source: SourceConfig::Archive(ArchiveSourceConfig {
                live_replay: true,
                ..ArchiveSourceConfig::once(SAMPLE_ARCHIVE)
            }),
            store: StoreConfig::Embedded(EmbeddedStoreConfig {
                path: data_dir.join("demo.redb"),
                ..EmbeddedStoreConfig::default()
            }),
            pipeline: PipelineSpec {
                name: "orders".to_owned(),
                dimensions: vec!["status".to_owned(), "region".to_owned()],
                metrics: vec![MetricSpec {
                    name: "amount".to_owned(),
                    attribute: "amount".to_owned(),
                    kind: MetricKind::Sum,
                    scale: 2,
                }],
                windows: vec!["1m".to_owned(), "5m".to_owned()],
                allowed_lateness: "6h".to_owned(),
                ..PipelineSpec::default()
            },
            dashboard: DashboardConfig::default(),
            // The demo replays its sample for ever: a day of changes is plenty to search.
            changes: ChangesConfig {
                retention: "1d".to_owned(),
                ..ChangesConfig::default()
            },
            archive_to: None,
            archive: None,
            data_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_key_is_named_with_its_line() {
        let text = "[source]\nkind = \"archive\"\npath = \"x\"\n[pipeline]\nname = \"p\"\ndimensoins = [\"a\"]\n";
        let err = Config::parse(text, "bad.toml").unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
        assert!(err.contains("dimensoins"), "{err}");
        assert!(err.contains("line 6"), "{err}");
    }

    #[test]
    fn broken_toml_is_named_with_its_line() {
        let err = Config::parse("[source\nkind = 1", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_minimal_config_takes_defaults() {
        let text = "[source]\nkind = \"archive\"\npath = \"a.ndjson\"\n[pipeline]\n";
        let config = Config::parse(text, "ok.toml").unwrap();
        assert_eq!(config.pipeline.windows, vec!["1m"]);
        assert!(matches!(config.store, StoreConfig::Embedded(_)));
        assert_eq!(config.dashboard.listen.port(), 3000);
        assert!(config.changes.enabled);
        assert_eq!(config.change_retention_ms(), Ok(7 * 86_400_000));
        assert_eq!(config.change_table(), "default");
    }

    #[test]
    fn a_dynamodb_source_keeps_an_archive_unless_told_not_to() {
        let source = "[source]\nkind = \"dynamodb\"\ntable = \"t\"\n[pipeline]\n";
        let config = Config::parse(&format!("data_dir = \"d\"\n{source}"), "a.toml").unwrap();
        let archive = config.archive.unwrap();
        assert_eq!(archive.dir, PathBuf::from("d/archive"));
        assert_eq!(
            archive.segments().unwrap().retention_ms,
            Some(30 * 86_400_000)
        );
        let off = format!("{source}[archive]\nenabled = false\n");
        assert_eq!(Config::parse(&off, "a.toml").unwrap().archive, None);
        for explicit in ["[archive]\n", "[archive]\nretention = \"forever\"\n"] {
            let explicit = format!("{source}{explicit}");
            let explicit = Config::parse(&explicit, "a.toml").unwrap().archive.unwrap();
            assert_eq!(explicit.segments().unwrap().retention_ms, None);
            assert!(explicit.dir.ends_with("archive"), "{:?}", explicit.dir);
        }
        let to_file = format!("archive_to = \"x.ndjson\"\n{source}");
        assert_eq!(Config::parse(&to_file, "a.toml").unwrap().archive, None);
        let leased = format!("{source}[source.lease]\ntable = \"leases\"\n");
        assert_eq!(Config::parse(&leased, "a.toml").unwrap().archive, None);
        let archive_source = "[source]\nkind = \"archive\"\npath = \"a\"\n[pipeline]\n";
        assert_eq!(
            Config::parse(archive_source, "a.toml").unwrap().archive,
            None
        );
    }

    #[test]
    fn the_embedded_stores_group_commit_interval_is_read_and_a_bad_one_named() {
        let base = "[source]\nkind = \"archive\"\npath = \"a\"\n[pipeline]\n[store]\nkind = \"embedded\"\n";
        let durable = |config: Config| match config.store {
            StoreConfig::Embedded(c) => c.durable_every,
            other => panic!("{other:?}"),
        };
        let default = Config::parse(base, "s.toml").unwrap();
        assert_eq!(durable(default), std::time::Duration::from_secs(1));
        let every = Config::parse(&format!("{base}durable_every = \"0s\"\n"), "s.toml").unwrap();
        assert_eq!(durable(every), std::time::Duration::ZERO);
        let err = Config::parse(&format!("{base}durable_every = \"soon\"\n"), "s.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration `soon`"), "{err}");
    }

    #[test]
    fn a_bad_retention_is_named() {
        let text = "[source]\nkind = \"archive\"\npath = \"a\"\n[pipeline]\n[changes]\nretention = \"a week\"\n";
        let err = Config::parse(text, "r.toml").unwrap_err().to_string();
        assert!(
            err.contains("changes.retention") && err.contains("a week"),
            "{err}"
        );
    }

    #[test]
    fn the_source_archive_is_never_the_one_written() {
        let text = "archive_to = \"in.ndjson\"\n[source]\nkind = \"archive\"\npath = \"in.ndjson\"\n[pipeline]\n";
        let err = Config::parse(text, "a.toml").unwrap_err().to_string();
        assert!(err.contains("archive_to is the source archive"), "{err}");
    }

    #[test]
    fn an_open_dashboard_needs_a_token() {
        let base = "[source]\nkind = \"archive\"\npath = \"a\"\n[pipeline]\n[dashboard]\n";
        let err = Config::parse(&format!("{base}listen = \"0.0.0.0:3000\"\n"), "d.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dashboard.token is not set"), "{err}");
        let short = format!("{base}listen = \"0.0.0.0:3000\"\ntoken = \"abc\"\n");
        assert!(Config::parse(&short, "d.toml")
            .unwrap_err()
            .to_string()
            .contains("16"));
        let ok = format!("{base}listen = \"0.0.0.0:3000\"\ntoken = \"0123456789abcdef\"\n");
        assert!(Config::parse(&ok, "d.toml").is_ok());
    }

    #[test]
    fn changes_are_filed_under_the_streams_table() {
        let text = "[source]\nkind = \"dynamodb\"\nstream_arn = \"arn:aws:dynamodb:us-east-1:1:table/orders/stream/2026\"\n[pipeline]\n";
        assert_eq!(
            Config::parse(text, "t.toml").unwrap().change_table(),
            "orders"
        );
    }
}
