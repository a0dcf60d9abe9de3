//! The query API's conformance suite: the same data in both stores, the same queries, identical
//! answers — and the answers equal a plain computation straight from the input records.
//!
//! The golden input (`tests/golden/`: 4000 changes over ~67 minutes, two dimensions, a filter,
//! every metric kind) runs through the pipeline into the embedded store; the stored documents
//! are then written to OpenSearch (osmem-server, `infra/scripts/services.sh start`) through its
//! store writer. Every query of [`queries`] — re-bucketing 1-minute windows into 2m … 1h, group
//! by, value filters, top N, sub-ranges, event counts — is answered from both stores and from
//! [`reference`], which buckets the raw records by event time with `rust_decimal` and knows
//! nothing of windows or stores.

mod browser_harness;
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    str::FromStr,
};

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;
use streamlens_aggregator::{
    config::OpenSearchStoreConfig,
    query,
    store::{embedded::EmbeddedStore, opensearch::OpenSearchStore},
    PipelineSpec, Store,
};
use streamlens_core::{
    query::{
        DimensionFilter, MetricQuery, Point, QueryError, QueryResult, Series, TimeArg, EARLIEST,
    },
    AggQuery, AggregateReader,
};
use tokio_util::sync::CancellationToken;

use common::GoldenAcc;

/// 2026-01-01T00:00:00Z, where the golden input starts.
const START: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;

fn q(metric: &str, interval: &str) -> MetricQuery {
    MetricQuery {
        from: Some(TimeArg::Millis(START)),
        to: Some(TimeArg::Text("2026-01-01T02:00:00Z".into())),
        interval: Some(interval.into()),
        ..MetricQuery::new(metric)
    }
}

fn grouped(mut query: MetricQuery, by: &str) -> MetricQuery {
    query.group_by = Some(by.into());
    query
}

fn filtered(mut query: MetricQuery, dimension: &str, values: &[&str]) -> MetricQuery {
    query.filters.push(DimensionFilter {
        dimension: dimension.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    });
    query
}

fn top(mut query: MetricQuery, n: usize) -> MetricQuery {
    query.top = Some(n);
    query
}

/// The queries every store must answer alike.
fn queries() -> Vec<MetricQuery> {
    let sub_range = |mut query: MetricQuery| {
        // Not aligned to the interval: rounded out to 00:12 .. 00:44.
        query.from = Some(TimeArg::Millis(START + 13 * MINUTE + 5_000));
        query.to = Some(TimeArg::Millis(START + 41 * MINUTE));
        query
    };
    vec![
        q("amount", "1m"),
        q("amount", "1h"),
        grouped(q("amount", "5m"), "status"),
        grouped(q("avg_amount", "10m"), "region"),
        grouped(q("items", "15m"), "status"),
        top(grouped(q("customers", "1h"), "region"), 2),
        top(grouped(q("amount", "20m"), "status"), 3),
        filtered(
            grouped(q("min_amount", "15m"), "status"),
            "status",
            &["paid", "shipped"],
        ),
        filtered(
            grouped(q("max_amount", "15m"), "region"),
            "region",
            &["(missing)", "eu-west"],
        ),
        filtered(q("events", "1h"), "region", &["us-east", "ap-south"]),
        filtered(
            filtered(
                q("net_count", "30m"),
                "status",
                &["paid", "pending", "returned"],
            ),
            "status",
            &["paid", "returned"],
        ),
        sub_range(grouped(q("net_count", "2m"), "status")),
        sub_range(q("inserts", "4m")),
        sub_range(grouped(q("modifies", "8m"), "region")),
        grouped(q("removes", "1h"), "status"),
        q("avg_amount", "3m"),
        grouped(q("customers", "1m"), "status"),
        // All time, the interval left to the query: from the earliest stored window, minute by
        // minute (the range is ten hours).
        all_time("amount"),
        grouped(all_time("net_count"), "status"),
        // A week without an interval: 10-minute buckets, not 10,080 one-minute ones.
        MetricQuery {
            from: Some(TimeArg::Millis(START)),
            to: Some(TimeArg::Millis(START + 7 * 24 * 60 * MINUTE)),
            ..MetricQuery::new("events")
        },
    ]
}

/// A query over all time without an interval.
fn all_time(metric: &str) -> MetricQuery {
    MetricQuery {
        from: Some(TimeArg::Text(EARLIEST.into())),
        ..MetricQuery::new(metric)
    }
}

/// A metric of a plainly computed group or bucket.
trait Measured {
    fn value(&self, metric: &str) -> Option<String>;
}

impl Measured for GoldenAcc {
    fn value(&self, metric: &str) -> Option<String> {
        let text = |d: Decimal| d.normalize().to_string();
        match metric {
            "amount" => Some(text(self.sum)),
            "items" => Some(self.items.to_string()),
            "avg_amount" => (self.net != 0).then(|| {
                text(
                    (self.sum / Decimal::from(self.net))
                        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero),
                )
            }),
            "min_amount" => self.min.map(text),
            "max_amount" => self.max.map(text),
            "customers" => Some(self.customers.len().to_string()),
            "events" => Some(self.kinds.iter().sum::<i64>().to_string()),
            "inserts" => Some(self.kinds[0].to_string()),
            "modifies" => Some(self.kinds[1].to_string()),
            "removes" => Some(self.kinds[2].to_string()),
            "net_count" => Some(self.net.to_string()),
            other => panic!("no reference for {other}"),
        }
    }
}

/// The plain computation of a query from the input records: each change's images are put in the
/// bucket of its event time and the group of their dimension value (the pipeline's filter:
/// `channel` not `test`), added up, and reduced by the metric.
fn reference(
    records: &[Value],
    query: &MetricQuery,
    from: i64,
    to: i64,
    interval: i64,
) -> Vec<Series> {
    let dimension = query
        .group_by
        .clone()
        .or_else(|| query.filters.first().map(|f| f.dimension.clone()));
    let mut values: Option<BTreeSet<String>> = None;
    for f in &query.filters {
        let these: BTreeSet<String> = f.values.iter().cloned().collect();
        values = Some(match values {
            None => these,
            Some(v) => v.intersection(&these).cloned().collect(),
        });
    }
    let label = match (&query.group_by, &values) {
        (None, Some(v)) => v.iter().cloned().collect::<Vec<_>>().join(","),
        _ => "_all".to_owned(),
    };
    let mut cells: BTreeMap<String, BTreeMap<i64, GoldenAcc>> = BTreeMap::new();
    for (t, image, sign, kind) in common::golden_contributions(records) {
        let bucket = t - (t - from).rem_euclid(interval);
        if !(from..to).contains(&bucket) {
            continue;
        }
        let value = dimension
            .as_ref()
            .map(|d| common::golden_s(image, d).unwrap_or_else(|| "(missing)".into()));
        if let (Some(v), Some(keep)) = (&value, &values) {
            if !keep.contains(v) {
                continue;
            }
        }
        let group = match &query.group_by {
            Some(_) => value.unwrap(),
            None => label.clone(),
        };
        cells
            .entry(group)
            .or_default()
            .entry(bucket)
            .or_default()
            .take(image, sign, kind);
    }
    let mut series: Vec<(Series, Option<Decimal>)> = cells
        .into_iter()
        .map(|(group, buckets)| {
            let mut total = GoldenAcc::default();
            let points = buckets
                .into_iter()
                .map(|(start, acc)| {
                    total.add(&acc);
                    Point {
                        start,
                        value: acc.value(&query.metric),
                        // Ignored in the comparison: the reference knows nothing of finality.
                        is_final: false,
                    }
                })
                .collect();
            let total = total.value(&query.metric);
            let order = total.as_deref().map(|t| Decimal::from_str(t).unwrap());
            (
                Series {
                    group,
                    total,
                    points,
                },
                order,
            )
        })
        .collect();
    if let Some(n) = query.top {
        series.sort_by(|(a, x), (b, y)| match (x, y) {
            (Some(x), Some(y)) => y.cmp(x).then_with(|| a.group.cmp(&b.group)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.group.cmp(&b.group),
        });
        series.truncate(n);
    }
    series.into_iter().map(|(s, _)| s).collect()
}

fn without_finality(result: &QueryResult) -> Vec<Series> {
    result
        .series
        .iter()
        .map(|s| Series {
            points: s
                .points
                .iter()
                .map(|p| Point {
                    is_final: false,
                    ..p.clone()
                })
                .collect(),
            ..s.clone()
        })
        .collect()
}

/// Both stores hold the golden pipeline's documents.
async fn stores(dir: &std::path::Path) -> (PipelineSpec, EmbeddedStore, OpenSearchStore, String) {
    let config = common::golden_config(dir, 1000);
    let spec = config.pipeline.clone();
    streamlens::app::run(config, CancellationToken::new())
        .await
        .unwrap();
    let embedded = EmbeddedStore::open(&dir.join("golden.redb")).unwrap();
    let docs = embedded.query(&AggQuery::default()).await.unwrap();
    assert!(docs.len() > 1000, "{} documents", docs.len());
    let url = common::opensearch_url();
    common::require("OpenSearch", &url).await;
    let prefix = common::unique("conformance-");
    let search = OpenSearchStore::connect(&OpenSearchStoreConfig {
        index_prefix: prefix.clone(),
        ..OpenSearchStoreConfig::new(url)
    })
    .await
    .unwrap();
    search.write(&docs, None).await.unwrap();
    search.flush().await.unwrap();
    (spec, embedded, search, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_answer_every_query_alike_and_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, embedded, search, prefix) = stores(dir.path()).await;
    let (records, _) = common::golden_input();
    let now = START + 10 * 3_600_000;
    for query in queries() {
        let a = query::run(&embedded, &spec, &query, now).await.unwrap();
        let b = query::run(&search, &spec, &query, now).await.unwrap();
        assert_eq!(a, b, "the stores disagree on {query:?}");
        let expected = reference(&records, &query, a.from, a.to, a.interval_ms);
        assert!(!expected.is_empty() && expected.iter().all(|s| !s.points.is_empty()));
        assert_eq!(
            without_finality(&a),
            expected,
            "{query:?} differs from the plain computation"
        );
        assert_eq!(a.window, "1m", "{query:?}");
        if query.interval.is_none() {
            let long = a.to - a.from > 24 * 60 * MINUTE;
            assert_eq!(a.interval, if long { "10m" } else { "1m" }, "{query:?}");
        }
    }
    // All time begins at the earliest stored window: no change is left out, and the range
    // starts where the data does (not an hour before `now`, not at the epoch).
    let first = common::golden_contributions(&records)
        .iter()
        .map(|c| c.0)
        .min()
        .unwrap();
    for store in [&embedded as &dyn AggregateReader, &search] {
        let all = query::run(store, &spec, &all_time("events"), now)
            .await
            .unwrap();
        assert!(
            all.from <= first && first - all.from < 5 * MINUTE,
            "all time starts at {} for data from {first}",
            all.from
        );
        assert_eq!(all.to, now);
    }
    // The hourly queries above were answered from the embedded store's rollups.
    let hours = embedded
        .query_buckets(
            &AggQuery {
                pipeline: Some(spec.name.clone()),
                window: Some("1m".into()),
                from: Some(START),
                to: Some(START + 2 * 3_600_000),
                dimension: Some("status".into()),
                values: None,
                without_distinct: false,
                worker: None,
            },
            3_600_000,
        )
        .await
        .unwrap();
    assert!(!hours.is_empty());
    assert!(hours
        .iter()
        .all(|d| d.window_end - d.window_start == 3_600_000));
    drop(search);
    let _ = reqwest::Client::new()
        .delete(format!("{}/{prefix}*", common::opensearch_url()))
        .send()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::golden_config(dir.path(), 1000);
    let spec = config.pipeline.clone();
    let store = EmbeddedStore::open(&dir.path().join("golden.redb")).unwrap();
    let now = START;
    let cases: Vec<(MetricQuery, &str)> = vec![
        (q("revenue", "1m"), "unknown metric `revenue`"),
        (
            grouped(q("amount", "1m"), "country"),
            "unknown dimension `country`",
        ),
        (q("amount", "90s"), "not a multiple of a window size"),
        (q("amount", "soon"), "`interval`: `soon` is not a duration"),
        (
            MetricQuery {
                from: Some(TimeArg::Text("yesterday".into())),
                ..q("amount", "1m")
            },
            "`from`: `yesterday` is not a time",
        ),
        (
            MetricQuery {
                to: Some(TimeArg::Millis(START - 1)),
                ..q("amount", "1m")
            },
            "must be before",
        ),
        (
            MetricQuery {
                from: Some(TimeArg::Text("now-30d".into())),
                to: Some(TimeArg::Text("now".into())),
                ..q("amount", "1m")
            },
            "more than 10000",
        ),
        (
            filtered(grouped(q("amount", "1m"), "status"), "region", &["eu-west"]),
            "filters must be on the group-by dimension",
        ),
        (
            filtered(
                filtered(q("amount", "1m"), "status", &["paid"]),
                "region",
                &["x"],
            ),
            "all filters must be on one dimension",
        ),
        (
            filtered(q("amount", "1m"), "status", &[]),
            "lists no values",
        ),
        (
            MetricQuery {
                top: Some(3),
                ..q("amount", "1m")
            },
            "`top` needs `group_by`",
        ),
        (
            MetricQuery {
                pipeline: Some("other".into()),
                ..q("amount", "1m")
            },
            "unknown pipeline `other`",
        ),
    ];
    // All time in a store without data: an empty answer, not an error.
    let empty = query::run(&store, &spec, &all_time("amount"), now)
        .await
        .unwrap();
    assert!(
        empty.series.iter().all(|s| s.points.is_empty()),
        "{empty:?}"
    );
    assert!(empty.from < empty.to && empty.to == now, "{empty:?}");
    for (query, message) in cases {
        match query::run(&store, &spec, &query, now).await {
            Err(QueryError::Invalid(got)) => {
                assert!(
                    got.contains(message),
                    "{query:?}: {got:?} lacks {message:?}"
                )
            }
            other => panic!("{query:?}: {other:?}"),
        }
    }
}

/// `POST /api/query` on a served run: the answer is the plain computation's; a body that is not a
/// query and a query the pipeline cannot answer are 400s naming the problem; the OpenAPI
/// description lists exactly the request's fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_and_refuses_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let served = browser_harness::Served::start(common::golden_config(dir.path(), 1000)).await;
    let url = format!("{}/api/query", served.base);
    let client = reqwest::Client::new();
    let (records, _) = common::golden_input();
    let query = top(grouped(q("amount", "10m"), "status"), 3);
    let mut last = None;
    for _ in 0..100 {
        let response = client.post(&url).json(&query).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let result: QueryResult = response.json().await.unwrap();
        let expected = reference(&records, &query, result.from, result.to, result.interval_ms);
        if without_finality(&result) == expected {
            last = None;
            break;
        }
        last = Some((result, expected));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(last.is_none(), "the served answer never matched: {last:?}");

    // The dashboard's "all time" (the explorer and its CSV) starts at the earliest stored window:
    // it counts the whole golden input, months before `now`, not the last hour's nothing.
    let csv = common::get_text(&format!(
        "{}/api/query.csv?metric=events&range=all",
        served.base
    ))
    .await;
    let counted: i64 = csv
        .lines()
        .skip(1)
        .map(|line| line.split(',').nth(3).unwrap().parse::<i64>().unwrap())
        .sum();
    let day = 24 * 60 * MINUTE;
    let expected = reference(
        &records,
        &MetricQuery::new("events"),
        START - day,
        START + day,
        day,
    );
    assert_eq!(
        Some(counted.to_string()),
        expected[0].total,
        "all time in the explorer's CSV: {csv}"
    );

    let refused = |body: String| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let error: Value = response.json().await.unwrap();
            (
                status,
                error["error"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    for (body, message) in [
        (r#"{"metric": "amount""#.to_owned(), "invalid query"),
        (r#"{"metrc": "amount"}"#.to_owned(), "unknown field `metrc`"),
        (r#"{"metric": 5}"#.to_owned(), "invalid type"),
        (r#"{"metric": "revenue"}"#.to_owned(), "unknown metric `revenue`"),
        (
            r#"{"metric": "amount", "group_by": "status", "filters": [{"dimension": "region", "values": ["x"]}]}"#.to_owned(),
            "filters must be on the group-by dimension",
        ),
    ] {
        let (status, error) = refused(body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert!(error.contains(message), "{body}: {error:?} lacks {message:?}");
    }

    let openapi: Value = reqwest::get(format!("{}/api/openapi.json", served.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    common::assert_documents_fields(
        &openapi,
        "MetricQuery",
        &MetricQuery {
            pipeline: Some("p".into()),
            from: Some(TimeArg::Millis(0)),
            to: Some(TimeArg::Millis(1)),
            interval: Some("1m".into()),
            group_by: Some("status".into()),
            filters: Vec::new(),
            top: Some(1),
            namespace: Some("n".into()),
            ..MetricQuery::new("amount")
        },
    );
    assert!(openapi["paths"]["/api/query"]["post"].is_object());
    served.stop().await;
}
