//! The data model every streamlens stage agrees on.
//!
//! * [`attr`] — DynamoDB attribute values in their JSON wire shape (`{"S": "x"}`,
//!   `{"N": "12.50"}`, ...). Numbers stay strings, so nothing is lost before a stage that knows the
//!   wanted precision parses them.
//! * [`event`] — one change of one item ([`ChangeEvent`]) and the Streams record JSON shape that
//!   `GetRecords`, Lambda and our archives use ([`StreamRecord`]).
//! * [`projection`] — changes reduced to the attributes a pipeline reads ([`ProjectedChange`]).
//! * [`aggregate`] — the windowed aggregate documents the aggregator writes, the stores keep and the
//!   dashboard shows, plus the [`AggregateReader`] the dashboard queries them through.
//! * [`changes`] — the raw change index: every change kept whole ([`ChangeDoc`]) and searched by
//!   key, time, kind and changed attribute ([`ChangeReader`]).
//! * [`replay`] — replays into namespaces as `/api/replays` and the dashboard show them.
//! * [`health`] — the pipeline's health (per shard position, lag, errors, gaps) as `/api/health`
//!   and the dashboard show it.
//!
//! This crate is compiled for the browser too (the dashboard's hydrate build), so it depends on
//! nothing that needs an OS.

pub mod aggregate;
pub mod attr;
pub mod bytes;
pub mod changes;
pub mod event;
pub mod health;
pub mod projection;
pub mod query;
pub mod replay;

pub use aggregate::{AggQuery, AggregateDoc, AggregateReader, PipelineInfo, PrevValues};
pub use attr::{AttributeValue, Item};
pub use changes::{ChangeDoc, ChangePage, ChangeQuery, ChangeReader, ChangeSearch};
pub use event::{ChangeEvent, EventKind, StreamRecord};
pub use health::{PipelineHealth, ShardStatus};
pub use projection::{
    ChangeView, ImageView, LineScalar, ProjectedChange, ProjectedImage, Projection, Scalar,
    ScalarKind, ScalarRef,
};
pub use query::{MetricQuery, QueryError, QueryResult};
pub use replay::{ReplayRequest, ReplayState, ReplayStatus};

/// Errors of the shared model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Streams record that does not have the shape of one.
    #[error("invalid stream record: {0}")]
    InvalidRecord(String),
    /// A JSON document that could not be decoded.
    #[error("invalid json: {0}")]
    Json(#[from] serde_json::Error),
    /// A store could not answer a query.
    #[error("store error: {0}")]
    Store(String),
}
