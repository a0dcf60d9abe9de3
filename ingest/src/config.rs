//! Source configuration: the `[source]` table of the streamlens config file.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

/// Where changes come from. `kind = "dynamodb"` or `kind = "archive"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // parsed once per process: size does not matter
pub enum SourceConfig {
    /// A DynamoDB table's stream.
    Dynamodb(DynamoDbSourceConfig),
    /// A newline-delimited JSON archive of Streams records.
    Archive(ArchiveSourceConfig),
}

/// Where to start reading when there is no checkpoint.
///
/// `start = "trim_horizon"`, `start = "latest"`, `start = { at_sequence_number = "…" }` or
/// `start = { after_sequence_number = "…" }`. With a sequence number, the shard whose range holds
/// it starts there, shards that ended before it are skipped, and newer shards are read from their
/// beginning.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// The oldest record still in the stream (up to 24 hours back).
    #[default]
    TrimHorizon,
    /// Only records written after streamlens starts.
    Latest,
    /// At this record.
    AtSequenceNumber(String),
    /// Just after this record.
    AfterSequenceNumber(String),
}

/// `[source] kind = "dynamodb"`: read a table's DynamoDB stream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbSourceConfig {
    /// The table whose latest stream is read. Either this or `stream_arn`.
    #[serde(default)]
    pub table: Option<String>,
    /// The stream to read, when known; takes precedence over `table`.
    #[serde(default)]
    pub stream_arn: Option<String>,
    /// AWS region; the SDK's default chain (AWS_REGION, profile) when absent.
    #[serde(default)]
    pub region: Option<String>,
    /// A non-AWS endpoint such as a local moto server, e.g. `http://127.0.0.1:5000`. When set and
    /// no AWS_ACCESS_KEY_ID is in the environment, dummy credentials are used.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Where to start without a checkpoint: `trim_horizon` (default), `latest`,
    /// `{ at_sequence_number = "…" }` or `{ after_sequence_number = "…" }`.
    #[serde(default)]
    pub start: StartPosition,
    /// How long to wait before polling a shard again after it returned no records (at most 1s).
    #[serde(default = "default_poll_interval", with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    /// How often to look for new shards.
    #[serde(
        default = "default_discovery_interval",
        with = "humantime_serde_compat"
    )]
    pub discovery_interval: Duration,
    /// `Limit` of each GetRecords call (1 to 1000).
    #[serde(default = "default_max_records")]
    pub max_records: i32,
    /// Longest wait between retries of a throttled or failed call (the wait starts at 50ms, doubles
    /// and is jittered).
    #[serde(default = "default_max_backoff", with = "humantime_serde_compat")]
    pub max_backoff: Duration,
    /// Stop once every shard is caught up (its last read returned nothing) and no record arrived
    /// for this long (batch runs and tests); absent means follow the stream for ever.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub stop_when_idle: Option<Duration>,
    /// Share the stream's shards with other streamlens processes through a DynamoDB lease table
    /// (`[source.lease]`); absent means this process reads every shard.
    #[serde(default)]
    pub lease: Option<LeaseConfig>,
}

/// `[source.lease]`: several processes share one stream, exactly one owner per shard.
///
/// Every process registers in the lease table and heartbeats; shard leases are taken with
/// conditional writes, balanced across the live processes, handed over cleanly (the giver stops
/// the shard and commits its last records before releasing it) and taken over from a process
/// whose heartbeat stopped for `lease_duration` (that process is fenced first, so it can commit
/// nothing more). Each process commits its shard positions to its own row of the table after its
/// aggregates are stored; the aggregates of several processes are partial documents that the
/// store sums when queried. Needs the OpenSearch store (every process writes to the same one).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// The lease table; created (on-demand capacity) when missing.
    pub table: String,
    /// This process's name in the table; unique per process. Defaults to the host name.
    #[serde(default)]
    pub worker: Option<String>,
    /// Which lease namespace in the table; defaults to the pipeline's name, so two pipelines
    /// reading one stream keep separate leases.
    #[serde(default)]
    pub group: Option<String>,
    /// A process whose heartbeat has not moved for this long is dead and its shards are taken.
    #[serde(default = "default_lease_duration", with = "humantime_serde_compat")]
    pub lease_duration: Duration,
    /// How often to heartbeat, look at the table and rebalance (a quarter of `lease_duration`
    /// when absent).
    #[serde(default, with = "humantime_serde_compat::option")]
    pub renew_interval: Option<Duration>,
    /// Endpoint of the lease table's DynamoDB, when it differs from the source's `endpoint_url`.
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

impl LeaseConfig {
    /// The heartbeat and rebalancing period.
    pub fn renew_every(&self) -> Duration {
        self.renew_interval.unwrap_or(self.lease_duration / 4)
    }
}

fn default_lease_duration() -> Duration {
    Duration::from_secs(10)
}

/// `[source] kind = "archive"`: read newline-delimited Streams records from a file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSourceConfig {
    /// The file: one Streams record (GetRecords / Lambda JSON shape) per line; `.gz` and `.zst`
    /// (detected by content) are decompressed.
    pub path: PathBuf,
    /// Replay continuously: shift record times so the archive starts now, pace records by their
    /// original spacing divided by `speed`, and start over when the end is reached.
    #[serde(default)]
    pub live_replay: bool,
    /// Pace of a live replay: 1.0 is real time, 10.0 ten times faster.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Events per batch sent downstream.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Set by `streamlens replay --from/--to`: a segmented archive skips the segments that hold
    /// no change with an event time in `[from, to)`. Not a config key.
    #[serde(skip)]
    pub segment_range: Option<(i64, i64)>,
}

impl ArchiveSourceConfig {
    /// Reads `path` once, at full speed.
    pub fn once(path: impl Into<PathBuf>) -> Self {
        ArchiveSourceConfig {
            path: path.into(),
            live_replay: false,
            speed: default_speed(),
            batch_size: default_batch_size(),
            segment_range: None,
        }
    }
}

fn default_poll_interval() -> Duration {
    Duration::from_millis(250)
}
fn default_discovery_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}
fn default_max_records() -> i32 {
    1000
}
fn default_speed() -> f64 {
    1.0
}
fn default_batch_size() -> usize {
    1000
}

/// Durations written the human way (`250ms`, `5s`, `1m`).
pub mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Deserializes `"250ms"`-style durations.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration `{text}`: {e}")))
    }

    /// The same for optional durations.
    pub mod option {
        use super::*;

        /// Deserializes an optional `"250ms"`-style duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}
