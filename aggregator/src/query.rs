//! Answers [`MetricQuery`]s from any store.
//!
//! A query is first *planned* against the pipeline's spec ([`plan`]): every field is checked
//! (an unknown metric, dimension or pipeline, a bad time, an interval that no stored window size
//! divides, too many buckets: each is a [`QueryError::Invalid`] naming the field) and resolved
//! (the range rounded to the interval, the stored window size to read, the dimension). The store
//! then returns the stored documents of that window size, dimension and range, merged across
//! workers ([`AggregateReader::query`]), and [`evaluate`] adds the windows of each bucket up
//! exactly, the same code for every store. Nothing from the request reaches a store but checked
//! names and numbers, and OpenSearch receives them as `term` and `range` values, never as query
//! syntax.

use std::collections::{BTreeMap, BTreeSet};

use streamlens_core::{
    aggregate::ALL_DIMENSION,
    event::parse_iso8601_ms,
    query::{MetricQuery, Point, QueryError, QueryResult, Series, TimeArg, EARLIEST},
    AggQuery, AggregateDoc, AggregateReader,
};

use crate::{
    config::{MetricKind, PipelineSpec, WindowSize},
    decimal::{format_scaled, parse_scaled},
    store::{compare_decimals, merge_parts},
};

/// A query answers at most this many buckets.
pub const MAX_BUCKETS: i64 = 10_000;

/// Without an `interval`, a range that would hold more buckets of the smallest window size than
/// this is answered in the smallest of [`STEPS`] that brings it under (a day of 1-minute windows
/// still comes minute by minute; a week comes in 10-minute buckets, 30 days in 30-minute ones).
pub const AUTO_BUCKETS: i64 = 1_500;

/// The bucket sizes chosen for a long range without an `interval` (those a stored window size
/// divides).
pub const STEPS: [(&str, i64); 17] = [
    ("1s", 1_000),
    ("5s", 5_000),
    ("10s", 10_000),
    ("15s", 15_000),
    ("30s", 30_000),
    ("1m", 60_000),
    ("5m", 300_000),
    ("10m", 600_000),
    ("15m", 900_000),
    ("30m", 1_800_000),
    ("1h", 3_600_000),
    ("3h", 10_800_000),
    ("6h", 21_600_000),
    ("12h", 43_200_000),
    ("1d", 86_400_000),
    ("7d", 604_800_000),
    ("30d", 2_592_000_000),
];

/// The event counts a query can ask for besides the pipeline's metrics.
const EVENT_METRICS: [&str; 5] = ["events", "inserts", "modifies", "removes", "net_count"];

/// What is computed per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Measure {
    /// One of [`EVENT_METRICS`].
    Events(&'static str),
    /// A metric of the spec.
    Metric {
        name: String,
        kind: MetricKind,
        scale: u32,
    },
}

/// A checked and resolved query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pipeline: String,
    metric: String,
    measure: Measure,
    from: i64,
    to: i64,
    interval: String,
    interval_ms: i64,
    window: String,
    dimension: String,
    values: Option<BTreeSet<String>>,
    group_by: Option<String>,
    top: Option<usize>,
}

impl Plan {
    /// The store query that fetches what the plan needs.
    pub fn store_query(&self) -> AggQuery {
        AggQuery {
            pipeline: Some(self.pipeline.clone()),
            window: Some(self.window.clone()),
            from: Some(self.from),
            to: Some(self.to),
            dimension: Some(self.dimension.clone()),
            values: self.values.as_ref().map(|v| v.iter().cloned().collect()),
            without_distinct: !matches!(
                self.measure,
                Measure::Metric {
                    kind: MetricKind::Distinct,
                    ..
                }
            ),
            worker: None,
        }
    }
}

fn invalid(message: String) -> QueryError {
    QueryError::Invalid(message)
}

/// A time as a request gives it, in epoch ms (`field` names it in the error).
pub fn resolve_time(field: &str, arg: &TimeArg, now_ms: i64) -> Result<i64, QueryError> {
    time(field, arg, now_ms)
}

/// A time of the request in epoch ms.
pub(crate) fn time(field: &str, arg: &TimeArg, now_ms: i64) -> Result<i64, QueryError> {
    let bad = |text: &str, why: &str| {
        invalid(format!(
            "`{field}`: `{text}` is not a time ({why}; give epoch milliseconds, an ISO-8601 time, \
             `now` or `now-<duration>`)"
        ))
    };
    match arg {
        TimeArg::Millis(ms) => Ok(*ms),
        TimeArg::Text(text) => {
            let t = text.trim();
            if t == "now" {
                return Ok(now_ms);
            }
            if let Some(ago) = t.strip_prefix("now-") {
                let d =
                    humantime::parse_duration(ago.trim()).map_err(|e| bad(text, &e.to_string()))?;
                let ms = i64::try_from(d.as_millis()).map_err(|_| bad(text, "too far back"))?;
                return now_ms
                    .checked_sub(ms)
                    .ok_or_else(|| bad(text, "too far back"));
            }
            parse_iso8601_ms(t).ok_or_else(|| bad(text, "unreadable"))
        }
    }
}

/// Checks a query against the pipeline's spec and resolves it; `now_ms` is what `now` means. A
/// query `from` [`EARLIEST`] needs the store: [`run`] answers it.
pub fn plan(spec: &PipelineSpec, query: &MetricQuery, now_ms: i64) -> Result<Plan, QueryError> {
    plan_with(spec, query, now_ms, None)
}

/// [`plan`], with `earliest` the start of the earliest stored window (`Some(None)`: the store has
/// none) when the query asks `from` [`EARLIEST`].
fn plan_with(
    spec: &PipelineSpec,
    query: &MetricQuery,
    now_ms: i64,
    earliest: Option<Option<i64>>,
) -> Result<Plan, QueryError> {
    if let Some(p) = &query.pipeline {
        if *p != spec.name {
            return Err(invalid(format!(
                "`pipeline`: unknown pipeline `{p}` (this one is `{}`)",
                spec.name
            )));
        }
    }
    let measure = if let Some(e) = EVENT_METRICS.iter().find(|e| **e == query.metric) {
        Measure::Events(e)
    } else if let Some(m) = spec.metrics.iter().find(|m| m.name == query.metric) {
        Measure::Metric {
            name: m.name.clone(),
            kind: m.kind,
            scale: m.scale,
        }
    } else {
        let known: Vec<&str> = spec
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .chain(EVENT_METRICS)
            .collect();
        return Err(invalid(format!(
            "`metric`: unknown metric `{}` (known: {})",
            query.metric,
            known.join(", ")
        )));
    };

    let windows = spec
        .validate()
        .map_err(|e| QueryError::Store(format!("the pipeline spec: {e}")))?;
    let tumbling: Vec<_> = windows.iter().filter(|w| w.slide == w.millis).collect();
    let sizes = || {
        tumbling
            .iter()
            .map(|w| w.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let to = match &query.to {
        Some(t) => time("to", t, now_ms)?,
        None => now_ms,
    };
    let from = match &query.from {
        Some(TimeArg::Text(t)) if t.trim() == EARLIEST => match earliest {
            // Data that begins after `to` (or none at all): an empty range just before `to`.
            Some(first) => first.unwrap_or(to).min(to - 1),
            None => {
                return Err(invalid(format!(
                    "`from`: `{EARLIEST}` is the start of the stored data: ask through \
                     query::run, which looks it up"
                )))
            }
        },
        Some(t) => time("from", t, now_ms)?,
        None => now_ms - 3_600_000,
    };
    if from >= to {
        return Err(invalid(format!(
            "`from` ({from}) must be before `to` ({to})"
        )));
    }
    let (interval, interval_ms) = match &query.interval {
        Some(text) => {
            let d = humantime::parse_duration(text.trim())
                .map_err(|e| invalid(format!("`interval`: `{text}` is not a duration: {e}")))?;
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if ms <= 0 {
                return Err(invalid(format!("`interval`: `{text}` must be positive")));
            }
            (text.trim().to_owned(), ms)
        }
        None => {
            let smallest = tumbling.iter().min_by_key(|w| w.millis).ok_or_else(|| {
                invalid(format!(
                    "pipeline `{}` has no tumbling window to query (hopping windows overlap and \
                     cannot be added up)",
                    spec.name
                ))
            })?;
            auto_interval(&tumbling, smallest, from, to)
        }
    };
    let window = tumbling
        .iter()
        .filter(|w| interval_ms % w.millis == 0)
        .max_by_key(|w| w.millis)
        .ok_or_else(|| {
            invalid(format!(
                "`interval`: `{interval}` is not a multiple of a window size of pipeline `{}` \
                 ({})",
                spec.name,
                sizes()
            ))
        })?;

    let from = from.div_euclid(interval_ms) * interval_ms;
    let to = to
        .div_euclid(interval_ms)
        .saturating_add(i64::from(to.rem_euclid(interval_ms) != 0))
        .saturating_mul(interval_ms);
    let buckets = (to - from) / interval_ms;
    if buckets > MAX_BUCKETS {
        return Err(invalid(format!(
            "the range holds {buckets} buckets of {interval}, more than {MAX_BUCKETS}: ask for a \
             larger interval or a shorter range"
        )));
    }

    let known_dimension = |field: &str, d: &str| {
        if spec.dimensions.iter().any(|k| k == d) {
            Ok(())
        } else {
            Err(invalid(format!(
                "`{field}`: unknown dimension `{d}` (known: {})",
                spec.dimensions.join(", ")
            )))
        }
    };
    if let Some(g) = &query.group_by {
        known_dimension("group_by", g)?;
    }
    let mut values: Option<BTreeSet<String>> = None;
    let mut filtered: Option<&str> = None;
    for f in &query.filters {
        known_dimension("filters", &f.dimension)?;
        if f.values.is_empty() {
            return Err(invalid(format!(
                "`filters`: the filter on `{}` lists no values",
                f.dimension
            )));
        }
        if let Some(g) = &query.group_by {
            if f.dimension != *g {
                return Err(invalid(format!(
                    "`filters`: a filter on `{}` while grouping by `{g}`: aggregates are stored \
                     per dimension, so filters must be on the group-by dimension",
                    f.dimension
                )));
            }
        }
        if let Some(other) = filtered.filter(|d| *d != f.dimension) {
            return Err(invalid(format!(
                "`filters`: filters on `{other}` and `{}`: aggregates are stored per dimension, \
                 so all filters must be on one dimension",
                f.dimension
            )));
        }
        filtered = Some(&f.dimension);
        let these: BTreeSet<String> = f.values.iter().cloned().collect();
        values = Some(match values {
            None => these,
            Some(before) => before.intersection(&these).cloned().collect(),
        });
    }
    match query.top {
        Some(0) => return Err(invalid("`top` must be at least 1".to_owned())),
        Some(_) if query.group_by.is_none() => {
            return Err(invalid(
                "`top` needs `group_by` (it keeps the largest groups)".to_owned(),
            ))
        }
        _ => {}
    }
    let dimension = query
        .group_by
        .clone()
        .or_else(|| filtered.map(str::to_owned))
        .unwrap_or_else(|| ALL_DIMENSION.to_owned());
    Ok(Plan {
        pipeline: spec.name.clone(),
        metric: query.metric.clone(),
        measure,
        from,
        to,
        interval,
        interval_ms,
        window: window.label.clone(),
        dimension,
        values,
        group_by: query.group_by.clone(),
        top: query.top,
    })
}

/// The measure of a document (one window, or windows added up).
fn value_of(measure: &Measure, doc: &AggregateDoc) -> Result<Option<String>, QueryError> {
    let bad = |what: &str| QueryError::Store(format!("document {}: {what}", doc.id()));
    Ok(match measure {
        Measure::Events(e) => {
            let n = match *e {
                "events" => doc
                    .inserts
                    .checked_add(doc.modifies)
                    .and_then(|n| n.checked_add(doc.removes))
                    .ok_or_else(|| bad("the event count overflows"))?,
                "inserts" => doc.inserts,
                "modifies" => doc.modifies,
                "removes" => doc.removes,
                _ => doc.net_count,
            };
            Some(n.to_string())
        }
        Measure::Metric { name, kind, scale } => match kind {
            MetricKind::Sum => Some(doc.sums.get(name).cloned().unwrap_or_else(|| "0".into())),
            MetricKind::Count => Some(doc.counts.get(name).copied().unwrap_or(0).to_string()),
            MetricKind::Min => doc.mins.get(name).cloned(),
            MetricKind::Max => doc.maxs.get(name).cloned(),
            MetricKind::Distinct => Some(doc.distinct.get(name).map_or(0, Vec::len).to_string()),
            MetricKind::Avg => {
                let count = i128::from(doc.counts.get(name).copied().unwrap_or(0));
                if count == 0 {
                    return Ok(None);
                }
                let sum = doc.sums.get(name).map_or("0", String::as_str);
                let units = parse_scaled(sum, *scale)
                    .map_err(|e| bad(&format!("sum `{name}` = `{sum}`: {e}")))?;
                // Rounded half away from zero at the metric's scale.
                let (q, r) = (units / count, units % count);
                let q = if 2 * r.abs() >= count.abs() {
                    q + if (units < 0) != (count < 0) { -1 } else { 1 }
                } else {
                    q
                };
                Some(format_scaled(q, *scale))
            }
        },
    })
}

/// The document with only what the measure reads (adding up the other metrics is wasted work).
fn only_the_measure(doc: AggregateDoc, measure: &Measure) -> AggregateDoc {
    fn keep<V>(map: BTreeMap<String, V>, measure: &Measure) -> BTreeMap<String, V> {
        match measure {
            Measure::Metric { name, .. } => map.into_iter().filter(|(k, _)| k == name).collect(),
            Measure::Events(_) => BTreeMap::new(),
        }
    }
    AggregateDoc {
        sums: keep(doc.sums, measure),
        counts: keep(doc.counts, measure),
        mins: keep(doc.mins, measure),
        maxs: keep(doc.maxs, measure),
        distinct: keep(doc.distinct, measure),
        prev: None,
        ..doc
    }
}

/// Adds documents up (windows of one bucket, or a whole range).
fn merged(label: &str, docs: Vec<AggregateDoc>) -> Result<AggregateDoc, QueryError> {
    merge_parts(label, docs).map_err(|e| QueryError::Store(e.to_string()))
}

/// Computes the answer from the documents the store returned for [`Plan::store_query`].
pub fn evaluate(plan: &Plan, docs: Vec<AggregateDoc>) -> Result<QueryResult, QueryError> {
    let mut groups: BTreeMap<String, BTreeMap<i64, Vec<AggregateDoc>>> = BTreeMap::new();
    let label = match (&plan.group_by, &plan.values) {
        (None, Some(values)) => values.iter().cloned().collect::<Vec<_>>().join(","),
        _ => ALL_DIMENSION.to_owned(),
    };
    for doc in docs {
        let wanted = doc.pipeline == plan.pipeline
            && doc.window == plan.window
            && doc.dimension == plan.dimension
            && (plan.from..plan.to).contains(&doc.window_start)
            && plan.values.as_ref().is_none_or(|v| v.contains(&doc.value));
        if !wanted {
            continue;
        }
        let group = if plan.group_by.is_some() {
            doc.value.clone()
        } else {
            label.clone()
        };
        let doc = only_the_measure(doc, &plan.measure);
        let bucket = plan.from
            + (doc.window_start - plan.from).div_euclid(plan.interval_ms) * plan.interval_ms;
        groups
            .entry(group)
            .or_default()
            .entry(bucket)
            .or_default()
            .push(doc);
    }
    let mut series = Vec::with_capacity(groups.len());
    for (group, buckets) in groups {
        let mut points = Vec::with_capacity(buckets.len());
        let mut sums = Vec::with_capacity(buckets.len());
        for (start, docs) in buckets {
            let is_final = docs.iter().all(|d| d.is_final);
            let bucket = if docs.len() == 1 {
                docs.into_iter().next().unwrap_or_default()
            } else {
                merged(&group, docs)?
            };
            points.push(Point {
                start,
                value: value_of(&plan.measure, &bucket)?,
                is_final,
            });
            sums.push(bucket);
        }
        // Adding up is associative: the total is the buckets added up.
        let total = value_of(&plan.measure, &merged(&group, sums)?)?;
        series.push(Series {
            group,
            total,
            points,
        });
    }
    if let Some(n) = plan.top {
        let mut failed = None;
        series.sort_by(|a, b| match (&a.total, &b.total) {
            (Some(x), Some(y)) => compare_decimals(y, x)
                .unwrap_or_else(|e| {
                    failed.get_or_insert(e);
                    std::cmp::Ordering::Equal
                })
                .then_with(|| a.group.cmp(&b.group)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.group.cmp(&b.group),
        });
        if let Some(e) = failed {
            return Err(QueryError::Store(format!("comparing totals: {e}")));
        }
        series.truncate(n);
    }
    let kind = match &plan.measure {
        Measure::Events(_) => "events".to_owned(),
        Measure::Metric { kind, .. } => format!("{kind:?}").to_lowercase(),
    };
    Ok(QueryResult {
        pipeline: plan.pipeline.clone(),
        metric: plan.metric.clone(),
        kind,
        from: plan.from,
        to: plan.to,
        interval: plan.interval.clone(),
        interval_ms: plan.interval_ms,
        window: plan.window.clone(),
        group_by: plan.group_by.clone(),
        series,
    })
}

/// Buckets of `ms` covering `from..to` once rounded out.
fn buckets(from: i64, to: i64, ms: i64) -> i64 {
    to.div_euclid(ms) + i64::from(to.rem_euclid(ms) != 0) - from.div_euclid(ms)
}

/// The bucket size for a query without an `interval`: the smallest window size, unless the
/// range then holds more than [`AUTO_BUCKETS`] buckets; then the smallest of [`STEPS`] that a
/// window size divides and that brings the range under (the largest such step when none does).
fn auto_interval(
    tumbling: &[&WindowSize],
    smallest: &WindowSize,
    from: i64,
    to: i64,
) -> (String, i64) {
    if buckets(from, to, smallest.millis) <= AUTO_BUCKETS {
        return (smallest.label.clone(), smallest.millis);
    }
    let steps: Vec<_> = STEPS
        .iter()
        .filter(|(_, ms)| *ms > smallest.millis && tumbling.iter().any(|w| ms % w.millis == 0))
        .collect();
    steps
        .iter()
        .find(|(_, ms)| buckets(from, to, *ms) <= AUTO_BUCKETS)
        .or(steps.last())
        .map_or((smallest.label.clone(), smallest.millis), |(label, ms)| {
            ((*label).to_owned(), *ms)
        })
}

/// Plans `query`, reads what it needs from `reader` and computes the answer.
///
/// A query `from` [`EARLIEST`] (all time) first asks the store for the earliest window it
/// would read, and begins there.
pub async fn run(
    reader: &dyn AggregateReader,
    spec: &PipelineSpec,
    query: &MetricQuery,
    now_ms: i64,
) -> Result<QueryResult, QueryError> {
    let store = |e: streamlens_core::Error| QueryError::Store(e.to_string());
    let plan = match &query.from {
        Some(TimeArg::Text(t)) if t.trim() == EARLIEST => {
            // Which windows, dimension and values the query reads, planned over the last hour:
            // the smallest window size. A larger size that the query proper may read has its
            // earliest window start no later, within one of its windows, and the range is
            // rounded down to the interval, a multiple of it. The query proper checks the rest.
            let probe = plan(
                spec,
                &MetricQuery {
                    from: None,
                    to: None,
                    interval: None,
                    ..query.clone()
                },
                now_ms,
            )?;
            let earliest = reader
                .earliest(&AggQuery {
                    from: None,
                    to: None,
                    without_distinct: true,
                    ..probe.store_query()
                })
                .await
                .map_err(store)?;
            plan_with(spec, query, now_ms, Some(earliest))?
        }
        _ => plan(spec, query, now_ms)?,
    };
    let docs = reader
        .query_buckets(&plan.store_query(), plan.interval_ms)
        .await
        .map_err(store)?;
    evaluate(&plan, docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PipelineSpec {
        toml::from_str(
            r#"
            name = "p"
            dimensions = ["status"]
            windows = ["1m", "5m", "1h/5m"]
            [[metrics]]
            name = "avg"
            attribute = "amount"
            kind = "avg"
            scale = 2
            "#,
        )
        .unwrap()
    }

    #[test]
    fn the_range_is_rounded_out_to_the_interval_and_the_largest_dividing_window_is_read() {
        let now = 1_000 * 60_000 + 17_000;
        let query = MetricQuery {
            from: Some(TimeArg::Text("now-16m".into())),
            interval: Some("10m".into()),
            ..MetricQuery::new("avg")
        };
        let plan = plan(&spec(), &query, now).unwrap();
        assert_eq!((plan.from, plan.to), (980 * 60_000, 1010 * 60_000));
        assert_eq!(plan.window, "5m");
        let plan = super::plan(&spec(), &MetricQuery::new("events"), now).unwrap();
        assert_eq!((plan.interval.as_str(), plan.window.as_str()), ("1m", "1m"));
        assert_eq!(plan.dimension, ALL_DIMENSION);
    }

    #[test]
    fn a_long_range_without_an_interval_gets_a_coarser_step() {
        let now = 20_000 * 86_400_000 + 17_000;
        let interval = |back: &str| {
            let query = MetricQuery {
                from: Some(TimeArg::Text(format!("now-{back}"))),
                ..MetricQuery::new("events")
            };
            let plan = plan(&spec(), &query, now).unwrap();
            assert!((plan.to - plan.from) / plan.interval_ms <= AUTO_BUCKETS);
            (plan.interval, plan.window)
        };
        assert_eq!(interval("1h"), ("1m".into(), "1m".into()));
        assert_eq!(interval("24h"), ("1m".into(), "1m".into()));
        assert_eq!(interval("7d"), ("10m".into(), "5m".into()));
        assert_eq!(interval("30d"), ("30m".into(), "5m".into()));
        assert_eq!(interval("365d"), ("6h".into(), "5m".into()));
        // An interval asked for is kept, and refused when the range holds too many.
        let asked = MetricQuery {
            from: Some(TimeArg::Text("now-30d".into())),
            interval: Some("1m".into()),
            ..MetricQuery::new("events")
        };
        assert!(
            matches!(plan(&spec(), &asked, now), Err(QueryError::Invalid(m)) if m.contains("more than"))
        );
    }

    #[test]
    fn all_time_needs_the_store() {
        let query = MetricQuery {
            from: Some(TimeArg::Text(EARLIEST.into())),
            ..MetricQuery::new("events")
        };
        assert!(matches!(
            plan(&spec(), &query, 0),
            Err(QueryError::Invalid(m)) if m.contains("query::run")
        ));
        let now = 1_000 * 60_000;
        let from = |earliest| {
            plan_with(&spec(), &query, now, Some(earliest))
                .unwrap()
                .from
        };
        assert_eq!(from(Some(now - 125 * 60_000 - 7)), now - 126 * 60_000);
        // No data, or data only after `to`: an empty range just before `to`.
        assert_eq!(from(None), now - 60_000);
        assert_eq!(from(Some(now + 5)), now - 60_000);
    }

    #[test]
    fn averages_round_half_away_from_zero_at_the_metric_scale() {
        let measure = Measure::Metric {
            name: "avg".into(),
            kind: MetricKind::Avg,
            scale: 2,
        };
        let avg = |sum: &str, count: i64| {
            let doc = AggregateDoc {
                sums: [("avg".to_owned(), sum.to_owned())].into(),
                counts: [("avg".to_owned(), count)].into(),
                ..AggregateDoc::default()
            };
            value_of(&measure, &doc).unwrap()
        };
        assert_eq!(avg("0.05", 2).as_deref(), Some("0.03"));
        assert_eq!(avg("-0.05", 2).as_deref(), Some("-0.03"));
        assert_eq!(avg("10", 3).as_deref(), Some("3.33"));
        assert_eq!(avg("-10", -3).as_deref(), Some("3.33"));
        assert_eq!(avg("1", 0), None);
    }
}
