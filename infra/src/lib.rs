//! Provisioning and demo data.
//!
//! * [`dynamo`] creates a table with a NEW_AND_OLD_IMAGES stream (what streamlens needs to retract
//!   old values), against AWS or a local moto server;
//! * [`sample`] generates the deterministic orders change stream shipped in `data/sample/` for the
//!   embedded demo;
//! * [`bench`] measures a benchmark phase from inside the process (CPU time, peak RSS);
//!   [`sample::write_stream`] writes the long orders stream benchmarks read;
//! * [`fault_server`] is a scripted DynamoDB Streams endpoint for tests: shard splits and
//!   rollovers, expired iterators, trimmed data, throttling, 5xx and a deleted stream, on cue,
//!   served to the real AWS SDK client.
//!
//! The OpenSearch index template is installed by the OpenSearch store itself when it starts
//! (`streamlens_aggregator::store::opensearch`), so it always matches the documents written.
//! The shell scripts that install and start local services live in `infra/scripts/`.

pub mod bench;
pub mod dynamo;
pub mod fault_proxy;
pub mod fault_server;
pub mod sample;

/// Errors of the infra crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A DynamoDB call failed.
    #[error("{operation} failed: {message}")]
    Aws {
        /// The API operation.
        operation: &'static str,
        /// What the service said.
        message: String,
    },
    /// Writing the sample failed.
    #[error("cannot write sample: {0}")]
    Sample(#[from] streamlens_ingest::Error),
}
