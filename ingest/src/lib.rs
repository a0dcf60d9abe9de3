//! Sources of change events.
//!
//! A [`Source`] reads DynamoDB changes from somewhere and sends them downstream in [`Batch`]es
//! through a bounded channel, so a slow aggregator or store slows the source down instead of
//! filling memory. Two sources exist:
//!
//! * [`dynamodb::DynamoDbSource`] reads a table's DynamoDB stream with `GetRecords`, shard by
//!   shard, parents before children, and keeps polling for new records;
//! * [`archive::ArchiveSource`] reads newline-delimited Streams records (plain, gzip or zstd), either
//!   once or as a continuous paced replay shifted to the present (the embedded demo).
//!
//! A record that cannot be decoded never stops a source: it travels in [`Batch::quarantined`] with
//! the reason, and the pipeline writes it to the quarantine and counts it.

pub mod archive;
pub mod aws;
pub mod config;
pub mod dynamodb;

use streamlens_core::ChangeEvent;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::SourceConfig;

/// Errors of the ingest crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An archive could not be opened or read.
    #[error("cannot read archive {path}: {source}")]
    Archive {
        /// The archive's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The table has no stream, or the stream is gone.
    #[error("stream not available: {0}")]
    StreamUnavailable(String),
    /// A DynamoDB or DynamoDB Streams call failed for good.
    #[error("{operation} failed: {message}")]
    Aws {
        /// The API operation.
        operation: &'static str,
        /// What the service or the client said.
        message: String,
    },
    /// A configuration value is unusable.
    #[error("invalid source configuration: {0}")]
    Config(String),
    /// The downstream channel closed: the pipeline is shutting down.
    #[error("downstream closed")]
    DownstreamClosed,
}

/// A change that could not be processed, with why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Quarantined {
    /// Where it came from, e.g. `orders.ndjson line 17` or `shard shardId-0001 seq 42`.
    pub origin: String,
    /// Why it could not be processed.
    pub reason: String,
    /// The raw record, as far as it could be kept.
    pub raw: String,
}

/// What a source sends downstream: decoded events, in order per shard, and the records it had
/// to quarantine.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Decoded changes.
    pub events: Vec<ChangeEvent>,
    /// Records that could not be decoded.
    pub quarantined: Vec<Quarantined>,
}

impl Batch {
    /// True when the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.quarantined.is_empty()
    }
}

/// What a source did before it stopped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceSummary {
    /// Events sent downstream.
    pub events: u64,
    /// Records quarantined.
    pub quarantined: u64,
}

/// A source of change events.
#[async_trait::async_trait]
pub trait Source: Send {
    /// A short description for logs and the dashboard, e.g. `dynamodb:orders`.
    fn describe(&self) -> String;

    /// Reads until the input ends (if it does) or `shutdown` is cancelled, sending batches to
    /// `out`. Returns what was sent.
    async fn run(
        self: Box<Self>,
        out: mpsc::Sender<Batch>,
        shutdown: CancellationToken,
    ) -> Result<SourceSummary, Error>;
}

/// Builds the source a configuration describes.
pub async fn build(config: &SourceConfig) -> Result<Box<dyn Source>, Error> {
    match config {
        SourceConfig::Dynamodb(c) => Ok(Box::new(dynamodb::DynamoDbSource::connect(c).await?)),
        SourceConfig::Archive(c) => Ok(Box::new(archive::ArchiveSource::new(c.clone()))),
    }
}
