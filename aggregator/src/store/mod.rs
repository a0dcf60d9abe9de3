//! Where aggregate documents are kept.
//!
//! Both stores keep a document under its deterministic id ([`AggregateDoc::id`]), so writing a
//! window again replaces it, and answer the same [`AggQuery`] with documents ordered by window
//! start, dimension and value.

pub mod embedded;
pub mod opensearch;

use std::{collections::BTreeMap, sync::Arc};

use streamlens_core::{AggQuery, AggregateDoc, AggregateReader};

use crate::{config::StoreConfig, Error};

/// Where a pipeline's source had got to when its aggregates were last written: stored with the
/// documents it covers, so a restart resumes exactly where the stored aggregates end.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredCheckpoint {
    /// The pipeline.
    pub pipeline: String,
    /// The source it reads (e.g. the stream ARN).
    pub source: String,
    /// Shard id → sequence number of the last record whose effects are in the documents.
    pub positions: BTreeMap<String, String>,
    /// The newest event time aggregated (epoch ms).
    pub max_event_time: i64,
    /// The highest document version written.
    pub version: u64,
}

/// A place aggregates are written to and read from.
#[async_trait::async_trait]
pub trait Store: AggregateReader {
    /// Writes (creates or replaces) documents and, with them, the checkpoint they cover; returns
    /// once both are durable. The embedded store commits both in one transaction.
    async fn write(
        &self,
        docs: &[AggregateDoc],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<(), Error>;

    /// The last checkpoint written for a pipeline.
    async fn checkpoint(&self, pipeline: &str) -> Result<Option<StoredCheckpoint>, Error>;

    /// Makes everything written visible to queries.
    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    /// A short description for logs and the dashboard.
    fn describe(&self) -> String;
}

/// Opens the store a configuration describes, creating what it needs (files, index templates).
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, Error> {
    Ok(match config {
        StoreConfig::Embedded(c) => Arc::new(embedded::EmbeddedStore::open(&c.path)?),
        StoreConfig::Opensearch(c) => Arc::new(opensearch::OpenSearchStore::connect(c).await?),
    })
}

/// Sorts documents the way every store answers.
pub(crate) fn sort_docs(docs: &mut [AggregateDoc]) {
    docs.sort_by(|a, b| {
        (
            a.window_start,
            &a.dimension,
            &a.value,
            &a.pipeline,
            &a.window,
        )
            .cmp(&(
                b.window_start,
                &b.dimension,
                &b.value,
                &b.pipeline,
                &b.window,
            ))
    });
}

/// Keeps the documents a query asks for.
pub(crate) fn filter_docs(query: &AggQuery, docs: Vec<AggregateDoc>) -> Vec<AggregateDoc> {
    let mut docs: Vec<_> = docs.into_iter().filter(|d| query.matches(d)).collect();
    sort_docs(&mut docs);
    docs
}
