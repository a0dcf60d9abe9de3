//! Windowed aggregate documents and the query the dashboard and the API ask of a store.
//!
//! One [`AggregateDoc`] holds, for one pipeline, one window size, one window and one group
//! (a dimension and its value, or the `_all` total), the event counts per kind and the *net*
//! effect of the window's changes: INSERT adds the new image, REMOVE subtracts the old image and
//! MODIFY adds new minus old, so an item that moves between dimension values moves between groups.
//! Summing `net_count` over all windows up to a time gives the number of live items then.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The dimension name of the per-window total over all items.
pub const ALL_DIMENSION: &str = "_all";

/// The aggregate of one group in one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateDoc {
    /// The pipeline that produced it.
    pub pipeline: String,
    /// The window size as configured, e.g. `1m`.
    pub window: String,
    /// Window start, epoch milliseconds (inclusive).
    pub window_start: i64,
    /// Window end, epoch milliseconds (exclusive).
    pub window_end: i64,
    /// The dimension (attribute path), or `_all`.
    pub dimension: String,
    /// The dimension's value; `(missing)` when the item lacks the attribute.
    pub value: String,
    /// INSERT events whose new image is in this group.
    pub inserts: i64,
    /// MODIFY events whose new image is in this group.
    pub modifies: i64,
    /// REMOVE events whose old image was in this group.
    pub removes: i64,
    /// Items that entered the group minus items that left it.
    pub net_count: i64,
    /// Per metric: the net change of the attribute's sum, as an exact decimal string.
    pub sums: BTreeMap<String, String>,
    /// Grows with every rewrite of this document.
    pub version: u64,
}

impl AggregateDoc {
    /// The deterministic document id: a rewrite of the same window and group replaces it.
    pub fn id(&self) -> String {
        doc_id(
            &self.pipeline,
            &self.window,
            self.window_start,
            &self.dimension,
            &self.value,
        )
    }
}

/// The id of the document of one pipeline, window and group.
pub fn doc_id(pipeline: &str, window: &str, start: i64, dimension: &str, value: &str) -> String {
    format!(
        "{}|{}|{}",
        doc_id_prefix(pipeline, window, start),
        escape(dimension),
        escape(value)
    )
}

/// The common start of the ids of one pipeline, window size and window start: ids sort by
/// pipeline, window size and start, so a time range is a key range.
pub fn doc_id_prefix(pipeline: &str, window: &str, start: i64) -> String {
    format!("{}|{}|{:013}", escape(pipeline), escape(window), start)
}

/// Values are user data: percent-encode the separator so ids never collide.
fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('|', "%7C")
}

/// Which aggregates to return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggQuery {
    /// The pipeline; the only one when absent.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// The window size, e.g. `1m`; the pipeline's first when absent.
    #[serde(default)]
    pub window: Option<String>,
    /// Only windows starting at or after this time (epoch ms).
    #[serde(default)]
    pub from: Option<i64>,
    /// Only windows starting before this time (epoch ms).
    #[serde(default)]
    pub to: Option<i64>,
    /// Only this dimension (`_all` for the totals).
    #[serde(default)]
    pub dimension: Option<String>,
}

impl AggQuery {
    /// Whether a document answers this query (window and pipeline must already be resolved).
    pub fn matches(&self, doc: &AggregateDoc) -> bool {
        self.pipeline.as_ref().is_none_or(|p| *p == doc.pipeline)
            && self.window.as_ref().is_none_or(|w| *w == doc.window)
            && self.from.is_none_or(|f| doc.window_start >= f)
            && self.to.is_none_or(|t| doc.window_start < t)
            && self.dimension.as_ref().is_none_or(|d| *d == doc.dimension)
    }
}

/// What the dashboard needs to know of a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineInfo {
    /// The pipeline's name.
    pub name: String,
    /// Window sizes, e.g. `["1m", "5m"]`.
    pub windows: Vec<String>,
    /// Dimension attribute paths.
    pub dimensions: Vec<String>,
    /// Metric names (keys of [`AggregateDoc::sums`]).
    pub metrics: Vec<String>,
    /// Where the changes come from, for display.
    pub source: String,
    /// Where the aggregates are kept, for display.
    pub store: String,
}

/// Anything aggregates can be read from.
#[async_trait::async_trait]
pub trait AggregateReader: Send + Sync + 'static {
    /// The documents answering `query`, ordered by window start, dimension and value.
    async fn query(&self, query: &AggQuery) -> Result<Vec<AggregateDoc>, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_do_not_collide_on_separators() {
        let a = doc_id("p", "1m", 0, "status", "a|b");
        let b = doc_id("p", "1m", 0, "status|a", "b");
        assert_ne!(a, b);
        assert_eq!(a, "p|1m|0000000000000|status|a%7Cb");
    }
}
