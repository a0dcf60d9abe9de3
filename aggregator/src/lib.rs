//! Aggregation and storage.
//!
//! * [`changes`] — change searches checked and resolved for the stores' change index;
//! * [`config`] — the pipeline spec (dimensions, metrics, window sizes) and the store settings;
//! * [`window`] — the polars tumbling-window engine: exact net sums and counts by event time, with
//!   MODIFY and REMOVE retracting the old image;
//! * [`decimal`] — exact fixed-point parsing and formatting of DynamoDB numbers;
//! * [`store`] — the [`store::Store`] trait and its two implementations, the embedded on-disk store
//!   (the default, no server) and OpenSearch; both merge the partial documents of several workers
//!   at query time and roll back writes a checkpoint does not cover.

pub mod changes;
pub mod config;
pub mod decimal;
pub mod query;
pub mod store;
pub mod window;

pub use config::{PipelineSpec, StoreConfig};
pub use store::Store;
pub use window::WindowEngine;

/// Errors of the aggregator crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline spec is unusable.
    #[error("invalid pipeline spec: {0}")]
    Spec(String),
    /// polars failed on a batch.
    #[error("window computation failed: {0}")]
    Polars(#[from] polars::error::PolarsError),
    /// The embedded store failed.
    #[error("embedded store {path}: {message}")]
    Embedded {
        /// The database file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// OpenSearch refused or failed a request.
    #[error("opensearch {operation}: {message}")]
    OpenSearch {
        /// What was being done.
        operation: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A store configuration is unusable.
    #[error("invalid store configuration: {0}")]
    StoreConfig(String),
    /// Partial documents of several workers could not be added together.
    #[error("cannot merge worker documents: {0}")]
    Merge(String),
    /// Uncommitted documents could not be rolled back exactly.
    #[error("cannot roll back: {0}")]
    RollBack(String),
}

impl From<Error> for streamlens_core::Error {
    fn from(e: Error) -> Self {
        streamlens_core::Error::Store(e.to_string())
    }
}
