//! Where aggregate documents are kept.
//!
//! Both stores keep a document under its deterministic id ([`AggregateDoc::id`]), so writing a
//! window again replaces it, and answer the same [`AggQuery`] with documents ordered by window
//! start, dimension and value.

pub mod embedded;
pub mod opensearch;

use std::sync::Arc;

use streamlens_core::{AggQuery, AggregateDoc, AggregateReader};

use crate::{config::StoreConfig, Error};

/// A place aggregates are written to and read from.
#[async_trait::async_trait]
pub trait Store: AggregateReader {
    /// Writes (creates or replaces) documents; returns once they are durable.
    async fn write(&self, docs: &[AggregateDoc]) -> Result<(), Error>;

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
