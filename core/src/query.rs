//! The query API: one typed request for a metric over time, answered from any store.
//!
//! A [`MetricQuery`] names a pipeline's metric, a time range, an interval, an optional group-by
//! dimension with value filters and an optional top N. It is served as `POST /api/query` and as
//! `streamlens query`, and it is answered the same way whichever store holds the aggregates: the
//! store returns the stored window documents of one window size, one dimension and the range, and
//! the buckets are computed from them in Rust with exact decimal arithmetic (OpenSearch's own
//! `sum` aggregation works in doubles). So both stores give identical answers by construction,
//! which the conformance suite checks.
//!
//! Stored aggregates are per dimension: each document holds one value of one dimension (or the
//! `_all` total). A query can therefore group by one dimension and filter on the values of that
//! same dimension; a filter without a group-by selects values of one dimension and adds them up
//! (every item has exactly one value of a dimension, so nothing is counted twice).

use serde::{Deserialize, Serialize};

/// A point in time as a request gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TimeArg {
    /// Epoch milliseconds.
    Millis(i64),
    /// `now`, `now-<duration>` (`now-15m`, `now-24h`, `now-7d`) or an ISO-8601 time
    /// (`2026-01-01T00:00:00Z`).
    Text(String),
}

/// Which values of a dimension to keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionFilter {
    /// The dimension (an attribute path of the pipeline's `dimensions`).
    pub dimension: String,
    /// The values kept (`(missing)` for items without the attribute).
    pub values: Vec<String>,
}

/// `from` for all time: the start of the earliest stored window the query reads.
pub const EARLIEST: &str = "earliest";

/// One metric over time: the body of `POST /api/query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricQuery {
    /// The pipeline; may be left out when there is one.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// A metric of the pipeline, or an event count: `events` (all kinds), `inserts`, `modifies`,
    /// `removes`, or `net_count` (items that entered minus items that left).
    pub metric: String,
    /// Start of the range (inclusive); `now-1h` when left out, `earliest` for the start of the
    /// stored data (all time). Rounded down to the interval.
    #[serde(default)]
    pub from: Option<TimeArg>,
    /// End of the range (exclusive); `now` when left out. Rounded up to the interval.
    #[serde(default)]
    pub to: Option<TimeArg>,
    /// Bucket size, e.g. `5m` or `1h`: a multiple of one of the pipeline's tumbling window sizes
    /// (stored windows are added up into buckets). When left out, the smallest window size, or
    /// for a long range the smallest larger step of 5m, 10m, 15m, 30m, 1h, 3h, 6h, 12h, 1d, 7d,
    /// 30d (one a window size divides) that keeps it to at most 1,500 buckets.
    #[serde(default)]
    pub interval: Option<String>,
    /// Split the result by the values of this dimension; one series in all when left out.
    #[serde(default)]
    pub group_by: Option<String>,
    /// Keep only these values (of the group-by dimension, or of one dimension without group-by).
    #[serde(default)]
    pub filters: Vec<DimensionFilter>,
    /// Keep the N groups with the largest total over the range.
    #[serde(default)]
    pub top: Option<usize>,
    /// Answer from this replay namespace (`streamlens replay`) instead of the live aggregates.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl MetricQuery {
    /// A query for `metric` with every other field left to its default.
    pub fn new(metric: impl Into<String>) -> Self {
        MetricQuery {
            pipeline: None,
            metric: metric.into(),
            from: None,
            to: None,
            interval: None,
            group_by: None,
            filters: Vec::new(),
            top: None,
            namespace: None,
        }
    }
}

/// One bucket of a series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// Bucket start, epoch milliseconds.
    pub start: i64,
    /// The metric over the bucket as an exact decimal (`null` when undefined: the average of no
    /// items, the minimum of no values).
    pub value: Option<String>,
    /// Every window of the bucket is final: the value will not change.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// The buckets of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series {
    /// The dimension value (`_all` without group-by).
    pub group: String,
    /// The metric over the whole range.
    pub total: Option<String>,
    /// Buckets that have data, in time order.
    pub points: Vec<Point>,
}

/// The answer to a [`MetricQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResult {
    /// The pipeline.
    pub pipeline: String,
    /// The metric.
    pub metric: String,
    /// What the metric computes (`sum`, `count`, `avg`, `min`, `max`, `distinct` or `events`).
    pub kind: String,
    /// The range actually covered (rounded to the interval): start, epoch ms.
    pub from: i64,
    /// The range actually covered: end (exclusive), epoch ms.
    pub to: i64,
    /// The bucket size as asked (or chosen).
    pub interval: String,
    /// The bucket size in milliseconds.
    pub interval_ms: i64,
    /// The stored window size the buckets were computed from.
    pub window: String,
    /// The group-by dimension, if any.
    pub group_by: Option<String>,
    /// One series per group (largest total first with `top`, else by group), one in all without
    /// group-by.
    pub series: Vec<Series>,
}

/// Why a query was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The request is wrong (HTTP 400): the message names the field and the problem.
    #[error("{0}")]
    Invalid(String),
    /// The store could not answer (HTTP 503).
    #[error("the store could not answer: {0}")]
    Store(String),
}

impl QueryResult {
    /// The answer as CSV: `group,start,start_time,value,final`, one row per point, series by
    /// series (the CSV download of the dashboard and `streamlens query --format csv`).
    pub fn to_csv(&self) -> String {
        let mut out = String::from("group,start,start_time,value,final\n");
        for series in &self.series {
            for p in &series.points {
                out.push_str(&format!(
                    "{},{},{},{},{}\n",
                    csv_field(&series.group),
                    p.start,
                    iso8601(p.start),
                    p.value.as_deref().unwrap_or(""),
                    p.is_final
                ));
            }
        }
        out
    }
}

/// A CSV field, quoted when it needs to be.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of an epoch-millisecond time (seconds truncated).
pub fn iso8601(ms: i64) -> String {
    // Howard Hinnant's `civil_from_days`.
    let secs = ms.div_euclid(1000);
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_are_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_767_225_600_999), "2026-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let result = QueryResult {
            pipeline: "p".into(),
            metric: "m".into(),
            kind: "sum".into(),
            from: 0,
            to: 60_000,
            interval: "1m".into(),
            interval_ms: 60_000,
            window: "1m".into(),
            group_by: Some("g".into()),
            series: vec![Series {
                group: "a,\"b\"".into(),
                total: Some("1.5".into()),
                points: vec![Point {
                    start: 0,
                    value: Some("1.5".into()),
                    is_final: true,
                }],
            }],
        };
        assert_eq!(
            result.to_csv(),
            "group,start,start_time,value,final\n\"a,\"\"b\"\"\",0,1970-01-01T00:00:00Z,1.5,true\n"
        );
    }
}
