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

/// Wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

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
    /// Another process took this worker's leases: it must stop without committing.
    #[error("{0}")]
    Fenced(String),
    /// A dead worker's uncommitted output could not be rolled back.
    #[error("cannot roll back worker `{worker}`: {message}")]
    Recovery {
        /// The dead worker.
        worker: String,
        /// What the store said.
        message: String,
    },
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

/// Records lost before streamlens could read them (the stream trimmed them after 24 hours).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    /// The shard.
    pub shard_id: String,
    /// The last sequence number read before the gap, if any.
    pub after: Option<String>,
    /// What the service said.
    pub reason: String,
}

/// A batch of projected changes reduced by a [`Reducer`] on the source's decoding threads.
pub struct Reduced {
    /// Changes in the batch.
    pub changes: usize,
    /// What the reducer made of them (its caller knows the type).
    pub value: Box<dyn std::any::Any + Send>,
}

impl std::fmt::Debug for Reduced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reduced")
            .field("changes", &self.changes)
            .finish_non_exhaustive()
    }
}

/// A batch being reduced by a [`Reducer`], one change at a time.
pub trait Fold {
    /// Takes the batch's next change.
    fn push(&mut self, change: &streamlens_core::ChangeView<'_>);
    /// What the batch reduced to.
    fn finish(self: Box<Self>) -> Reduced;
}

/// The consumer's per-batch work, done by an archive source on the thread that decodes the
/// batch (the pipeline passes the window engine's combiner): each change is folded in as soon as
/// it is decoded, as a view of its line, so that most changes are never allocated at all. It
/// makes a batch's [`Fold`], given about how many changes the batch will have.
#[derive(Clone)]
pub struct Reducer(pub std::sync::Arc<dyn Fn(usize) -> Box<dyn Fold> + Send + Sync>);

impl std::fmt::Debug for Reducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reducer")
    }
}

/// What a source sends downstream: decoded events, in order per shard, the records it had to
/// quarantine, gaps it detected, and the position each shard reached with this batch.
#[derive(Debug, Default)]
pub struct Batch {
    /// Decoded changes.
    pub events: Vec<ChangeEvent>,
    /// Records that could not be decoded.
    pub quarantined: Vec<Quarantined>,
    /// Data lost to the stream's retention.
    pub gaps: Vec<Gap>,
    /// Shard id → the sequence number of the last record of this batch from that shard
    /// (quarantined ones included): the checkpoint once the batch's effects are stored.
    pub positions: std::collections::BTreeMap<String, String>,
    /// The stream the positions belong to (DynamoDB sources).
    pub stream: Option<String>,
    /// Changes already reduced to the attributes the pipeline reads (the fast archive path);
    /// aggregated after `events`.
    pub projected: Vec<streamlens_core::ProjectedChange>,
    /// Projected changes already reduced by the [`Resume::reduce`] given (the fast archive path);
    /// aggregated after `projected`.
    pub reduced: Option<Reduced>,
}

impl Batch {
    /// True when the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.projected.is_empty()
            && self.reduced.as_ref().is_none_or(|r| r.changes == 0)
            && self.quarantined.is_empty()
            && self.gaps.is_empty()
            && self.positions.is_empty()
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

/// The health of one shard, as shown on `/api/health` (defined in core, so that the dashboard
/// can show it without depending on the sources).
pub use streamlens_core::health::{GapNote, ShardStatus};

/// A handle on a running source's per-shard health.
#[derive(Debug, Clone, Default)]
pub struct HealthHandle {
    pub(crate) shards: std::sync::Arc<dynamodb::source::ShardHealthMap>,
}

/// What a commit covers: after the pipeline stored the effects of every record up to `positions`,
/// in documents of versions up to `version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// The highest document version written.
    pub version: u64,
    /// The newest event time aggregated (epoch ms).
    pub max_event_time: i64,
    /// Shard → last sequence number whose effects are stored.
    pub positions: Checkpoint,
}

/// Where a source records what the store acknowledged, when it keeps its own checkpoints (the
/// lease table). A source only moves its checkpoint on what the store confirmed.
#[async_trait::async_trait]
pub trait Committer: Send + Sync {
    /// Records a commit; fails with [`Error::Fenced`] when this process lost its leases.
    async fn commit(&self, commit: &Commit) -> Result<(), Error>;
}

/// Undoes what a dead worker stored but did not commit, before its shards are taken over.
#[async_trait::async_trait]
pub trait Recovery: Send + Sync {
    /// Puts `worker`'s stored documents back to the state its commit of `committed_version`
    /// covers.
    async fn roll_back(&self, worker: &str, committed_version: u64) -> Result<(), String>;
}

/// How to start a source.
#[derive(Clone, Default)]
pub struct Resume {
    /// Where the stored aggregates end: shard → last sequence number.
    pub checkpoint: Checkpoint,
    /// The stream those positions belong to, when known.
    pub stream: Option<String>,
    /// The lease group (the pipeline's name) for `[source.lease]`.
    pub group: String,
    /// How to undo a dead worker's uncommitted output (needed with `[source.lease]`).
    pub recovery: Option<std::sync::Arc<dyn Recovery>>,
    /// The attributes the pipeline reads: lets an archive source decode only those.
    pub projection: Option<streamlens_core::Projection>,
    /// With `projection`: what an archive source does to each batch of projected changes on the
    /// thread that decoded it ([`Batch::reduced`]).
    pub reduce: Option<Reducer>,
}

/// A source of change events.
#[async_trait::async_trait]
pub trait Source: Send {
    /// A short description for logs and the dashboard, e.g. `dynamodb:orders`.
    fn describe(&self) -> String;

    /// The lease table handle, when the source shares its stream with other processes.
    fn leases(&self) -> Option<std::sync::Arc<dynamodb::lease::Leases>> {
        None
    }

    /// Per-shard health, for sources that have shards.
    fn health(&self) -> Option<HealthHandle> {
        None
    }

    /// Reads until the input ends (if it does) or `shutdown` is cancelled, sending batches to
    /// `out`. Returns what was sent.
    async fn run(
        self: Box<Self>,
        out: mpsc::Sender<Batch>,
        shutdown: CancellationToken,
    ) -> Result<SourceSummary, Error>;
}

/// Shard id → last sequence number whose effects are stored: where to resume.
pub type Checkpoint = std::collections::BTreeMap<String, String>;

/// Builds the source a configuration describes, resuming where it applies.
pub async fn build(config: &SourceConfig, resume: Resume) -> Result<Box<dyn Source>, Error> {
    match config {
        SourceConfig::Dynamodb(c) => {
            let source = dynamodb::DynamoDbSource::connect(c)
                .await?
                .resume_from(resume.checkpoint)
                .in_stream(resume.stream);
            Ok(Box::new(match (&c.lease, resume.recovery) {
                (Some(_), Some(recovery)) => source.with_leases(&resume.group, recovery).await?,
                (Some(_), None) => {
                    return Err(Error::Config(
                        "[source.lease] needs a store that can roll back a dead worker".to_owned(),
                    ))
                }
                (None, _) => source,
            }))
        }
        SourceConfig::Archive(c) => Ok(Box::new(
            archive::ArchiveSource::new(c.clone())
                .with_projection(resume.projection)
                .with_reducer(resume.reduce)
                .resume_from(&resume.checkpoint)?,
        )),
    }
}
