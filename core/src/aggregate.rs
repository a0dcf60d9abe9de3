//! Windowed aggregate documents and the query the dashboard and the API ask of a store.
//!
//! One [`AggregateDoc`] holds, for one pipeline, one window size, one window and one group
//! (a dimension and its value, or the `_all` total), the event counts per kind and the *net*
//! effect of the window's changes: INSERT adds the new image, REMOVE subtracts the old image and
//! MODIFY adds new minus old, so an item that moves between dimension values moves between groups.
//! Summing `net_count` over all windows up to a time gives the number of live items then.
//!
//! Several worker processes may share one pipeline, each reading its own part of the source: each
//! writes *partial* documents tagged with its [`AggregateDoc::worker`] (a separate document id per
//! worker), and stores add the partial documents of one group together when they are read. Every
//! document also carries its values as of its previous write ([`AggregateDoc::prev`]), so a write
//! that was not covered by a checkpoint can be undone after a crash.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The dimension name of the per-window total over all items.
pub const ALL_DIMENSION: &str = "_all";

/// The aggregate of one group in one window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Per `sum` and `avg` metric: the net change of the attribute's sum, as an exact decimal
    /// string.
    pub sums: BTreeMap<String, String>,
    /// Per `count` and `avg` metric: the net number of items with the attribute (`avg` is
    /// `sums[m] / counts[m]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, i64>,
    /// Per `min` metric: the smallest value written in the window, exact decimal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mins: BTreeMap<String, String>,
    /// Per `max` metric: the largest value written in the window, exact decimal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub maxs: BTreeMap<String, String>,
    /// Per `distinct` metric: the distinct values written in the window, sorted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub distinct: BTreeMap<String, Vec<String>>,
    /// The watermark has passed the window's end plus the allowed lateness: this document will
    /// not change again.
    #[serde(default, rename = "final", skip_serializing_if = "std::ops::Not::not")]
    pub is_final: bool,
    /// Grows with every rewrite of this document.
    pub version: u64,
    /// The worker process whose partial aggregate this is; empty for a single-process pipeline
    /// (and for documents merged across workers).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker: String,
    /// The document's values as of its previous write, to undo this write with; `None` when the
    /// group did not exist before (undoing deletes the document) and in merged documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<PrevValues>,
}

/// The values of an [`AggregateDoc`] as of its previous write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrevValues {
    /// [`AggregateDoc::inserts`] then.
    pub inserts: i64,
    /// [`AggregateDoc::modifies`] then.
    pub modifies: i64,
    /// [`AggregateDoc::removes`] then.
    pub removes: i64,
    /// [`AggregateDoc::net_count`] then.
    pub net_count: i64,
    /// [`AggregateDoc::sums`] then.
    pub sums: BTreeMap<String, String>,
    /// [`AggregateDoc::counts`] then.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, i64>,
    /// [`AggregateDoc::mins`] then.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mins: BTreeMap<String, String>,
    /// [`AggregateDoc::maxs`] then.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub maxs: BTreeMap<String, String>,
    /// [`AggregateDoc::distinct`] then.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub distinct: BTreeMap<String, Vec<String>>,
    /// [`AggregateDoc::is_final`] then.
    #[serde(default, rename = "final", skip_serializing_if = "std::ops::Not::not")]
    pub is_final: bool,
    /// [`AggregateDoc::version`] then.
    pub version: u64,
}

impl From<AggregateDoc> for PrevValues {
    /// The values of a document (its own `prev` is dropped).
    fn from(doc: AggregateDoc) -> Self {
        PrevValues {
            inserts: doc.inserts,
            modifies: doc.modifies,
            removes: doc.removes,
            net_count: doc.net_count,
            sums: doc.sums,
            counts: doc.counts,
            mins: doc.mins,
            maxs: doc.maxs,
            distinct: doc.distinct,
            is_final: doc.is_final,
            version: doc.version,
        }
    }
}

impl AggregateDoc {
    /// The deterministic document id: a rewrite of the same window, group and worker replaces it.
    /// Partial documents of a worker end in `|@<worker>`; single-process ids have no suffix.
    pub fn id(&self) -> String {
        doc_id_of_worker(
            &self.pipeline,
            &self.window,
            self.window_start,
            &self.dimension,
            &self.value,
            &self.worker,
        )
    }

    /// The id of the group the document aggregates, whichever worker wrote it: the documents of
    /// all workers with the same group id are merged into one.
    pub fn group_id(&self) -> String {
        doc_id(
            &self.pipeline,
            &self.window,
            self.window_start,
            &self.dimension,
            &self.value,
        )
    }

    /// The document as of its previous write ([`AggregateDoc::prev`], which is cleared), or `None`
    /// when the group did not exist before.
    pub fn previous(&self) -> Option<AggregateDoc> {
        let prev = self.prev.as_ref()?;
        Some(AggregateDoc {
            inserts: prev.inserts,
            modifies: prev.modifies,
            removes: prev.removes,
            net_count: prev.net_count,
            sums: prev.sums.clone(),
            counts: prev.counts.clone(),
            mins: prev.mins.clone(),
            maxs: prev.maxs.clone(),
            distinct: prev.distinct.clone(),
            is_final: prev.is_final,
            version: prev.version,
            prev: None,
            ..self.clone()
        })
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

/// The id of one worker's partial document of one pipeline, window and group; the same as
/// [`doc_id`] when `worker` is empty.
pub fn doc_id_of_worker(
    pipeline: &str,
    window: &str,
    start: i64,
    dimension: &str,
    value: &str,
    worker: &str,
) -> String {
    let id = doc_id(pipeline, window, start, dimension, value);
    if worker.is_empty() {
        id
    } else {
        format!("{id}|@{}", escape(worker))
    }
}

/// The common start of the ids of every document of one pipeline.
pub fn pipeline_id_prefix(pipeline: &str) -> String {
    format!("{}|", escape(pipeline))
}

/// The common start of the ids of one pipeline, window size and window start: ids sort by
/// pipeline, window size and start, so a time range is a key range.
pub fn doc_id_prefix(pipeline: &str, window: &str, start: i64) -> String {
    format!("{}|{}|{:013}", escape(pipeline), escape(window), start)
}

/// Whether a document id (of [`doc_id`] or [`doc_id_of_worker`]) is of the dimension and one of
/// the values a query asks for: a store can skip other documents without reading them.
pub fn id_matches(id: &str, query: &AggQuery) -> bool {
    let mut parts = id.split('|').skip(3);
    let (Some(dimension), Some(value)) = (parts.next(), parts.next()) else {
        return false;
    };
    query
        .dimension
        .as_ref()
        .is_none_or(|d| escape(d) == dimension)
        && query
            .values
            .as_ref()
            .is_none_or(|v| v.iter().any(|v| escape(v) == value))
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
    /// Only these values of the dimension; every value when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// The distinct value sets may be left out of the answer (reading them is most of the work
    /// for rollups, and a query for another metric does not need them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_distinct: bool,
    /// Only this worker's partial documents, unmerged (used to resume a worker); `""` selects the
    /// documents written without a worker. When absent, the partial documents of all workers are
    /// merged into one document per group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl AggQuery {
    /// Whether a document answers this query (window and pipeline must already be resolved).
    /// Without [`AggQuery::worker`] every worker's documents match (they are merged afterwards).
    pub fn matches(&self, doc: &AggregateDoc) -> bool {
        self.pipeline.as_ref().is_none_or(|p| *p == doc.pipeline)
            && self.worker.as_ref().is_none_or(|w| *w == doc.worker)
            && self.window.as_ref().is_none_or(|w| *w == doc.window)
            && self.from.is_none_or(|f| doc.window_start >= f)
            && self.to.is_none_or(|t| doc.window_start < t)
            && self.dimension.as_ref().is_none_or(|d| *d == doc.dimension)
            && self.values.as_ref().is_none_or(|v| v.contains(&doc.value))
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
    /// The documents answering `query`, ordered by window start, dimension and value; merged
    /// across workers unless the query names one.
    async fn query(&self, query: &AggQuery) -> Result<Vec<AggregateDoc>, Error>;

    /// What a query that adds windows up into buckets of `bucket_ms` (aligned to the epoch, and
    /// `query.from`/`query.to` aligned to them) needs: the documents of `query`, or documents
    /// already added up into buckets of any size dividing `bucket_ms` (rollups), merged across
    /// workers. Stores without rollups answer [`AggregateReader::query`].
    async fn query_buckets(
        &self,
        query: &AggQuery,
        bucket_ms: i64,
    ) -> Result<Vec<AggregateDoc>, Error> {
        let _ = bucket_ms;
        self.query(query).await
    }

    /// The start of the earliest window answering `query`, `None` when none does: where a query
    /// for all time begins. Stores override it to find that window without reading the others.
    async fn earliest(&self, query: &AggQuery) -> Result<Option<i64>, Error> {
        Ok(self
            .query(query)
            .await?
            .iter()
            .map(|d| d.window_start)
            .min())
    }
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
        let of = |dimension: &str, values: Option<&[&str]>| AggQuery {
            dimension: Some(dimension.into()),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
            ..AggQuery::default()
        };
        assert!(id_matches(&a, &of("status", None)) && !id_matches(&b, &of("status", None)));
        assert!(id_matches(&b, &of("status|a", Some(&["b"]))));
        assert!(!id_matches(&a, &of("status", Some(&["a", "b"]))));
        assert!(id_matches(&a, &of("status", Some(&["a|b"]))));
    }

    #[test]
    fn worker_ids_extend_single_process_ids() {
        let mut doc = AggregateDoc {
            pipeline: "p".into(),
            window: "1m".into(),
            dimension: "status".into(),
            value: "a".into(),
            ..AggregateDoc::default()
        };
        assert_eq!(doc.id(), "p|1m|0000000000000|status|a");
        doc.worker = "w|1".into();
        assert_eq!(doc.id(), "p|1m|0000000000000|status|a|@w%7C1");
        assert_eq!(doc.group_id(), "p|1m|0000000000000|status|a");
        assert!(doc.id().starts_with(&pipeline_id_prefix("p")));
        // An empty worker and no prev are left out of the JSON: old readers see the old shape.
        doc.worker.clear();
        let json = serde_json::to_value(&doc).unwrap();
        assert!(json.get("worker").is_none() && json.get("prev").is_none());
        let back: AggregateDoc = serde_json::from_value(json).unwrap();
        assert_eq!(back, doc);
    }
}
