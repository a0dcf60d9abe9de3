//! Query latency: p50/p99 of a dashboard's query mix over 30 days × 20 groups of 1-minute
//! windows, on the embedded store and (with `BENCH_OPENSEARCH=1`) on OpenSearch.
//!
//! `cargo bench -p streamlens-aggregator --bench query` (release profile). Settings, all
//! optional: `BENCH_DAYS` (default 30), `BENCH_GROUPS` (20), `BENCH_RUNS` (runs of each query,
//! 30), `BENCH_STORE=<file>` to keep the embedded store there and reuse it on the next run,
//! `BENCH_OPENSEARCH=1` to load the same documents into OpenSearch at
//! `STREAMLENS_OPENSEARCH_URL` (default `http://127.0.0.1:9200`) and time the same queries there
//! (`BENCH_OPENSEARCH_RUNS`, default 5); `BENCH_QUERY=<text>` runs only the queries whose label
//! contains it. Prints figures; asserts only that every query answers.
//!
//! The data: one document per window and group of a `region` dimension plus the `_all` total,
//! each with a sum, an average, a minimum, a maximum and a distinct set, as the window engine
//! writes them; all final but the last day's. The queries are what the dashboard and scripts
//! ask: the last hour by minute, the last day by 5 minutes and by hour, a week by hour, 30 days
//! by day, with group-by, filters and top N.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use streamlens_aggregator::{
    config::OpenSearchStoreConfig,
    query,
    store::{embedded::EmbeddedStore, opensearch::OpenSearchStore},
    PipelineSpec, Store,
};
use streamlens_core::{
    query::{DimensionFilter, MetricQuery, TimeArg},
    AggregateDoc, AggregateReader,
};

/// As in the `streamlens` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spec() -> PipelineSpec {
    toml::from_str(
        r#"
        name = "orders"
        dimensions = ["region"]
        windows = ["1m"]
        [[metrics]]
        name = "amount"
        attribute = "amount"
        kind = "sum"
        scale = 2
        [[metrics]]
        name = "avg_amount"
        attribute = "amount"
        kind = "avg"
        scale = 2
        [[metrics]]
        name = "low"
        attribute = "amount"
        kind = "min"
        scale = 2
        [[metrics]]
        name = "high"
        attribute = "amount"
        kind = "max"
        scale = 2
        [[metrics]]
        name = "customers"
        attribute = "customer"
        kind = "distinct"
        "#,
    )
    .expect("bench spec")
}

/// The documents of one day, deterministic.
fn day(index: i64, groups: u64, last: bool, seed: &mut u64) -> Vec<AggregateDoc> {
    let mut next = |m: u64| {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) % m
    };
    let mut docs = Vec::with_capacity(1440 * (groups as usize + 1));
    for minute in 0..1440 {
        let start = START + index * DAY + minute * MINUTE;
        let mut total = AggregateDoc::default();
        for g in 0..=groups {
            let (dimension, value) = if g == groups {
                ("_all".to_owned(), "_all".to_owned())
            } else {
                ("region".to_owned(), format!("region-{g:02}"))
            };
            let inserts = 1 + next(20) as i64;
            let removes = next(5) as i64;
            let cents = next(500_000) as i64;
            let low = next(5_000);
            let doc = AggregateDoc {
                pipeline: "orders".into(),
                window: "1m".into(),
                window_start: start,
                window_end: start + MINUTE,
                dimension,
                value,
                inserts,
                modifies: next(10) as i64,
                removes,
                net_count: inserts - removes,
                sums: BTreeMap::from([
                    (
                        "amount".to_owned(),
                        format!("{}.{:02}", cents / 100, cents % 100),
                    ),
                    (
                        "avg_amount".to_owned(),
                        format!("{}.{:02}", cents / 100, cents % 100),
                    ),
                ]),
                counts: BTreeMap::from([("avg_amount".to_owned(), inserts - removes)]),
                mins: BTreeMap::from([(
                    "low".to_owned(),
                    format!("{}.{:02}", low / 100, low % 100),
                )]),
                maxs: BTreeMap::from([("high".to_owned(), format!("{}.50", 900 + next(100)))]),
                distinct: BTreeMap::from([(
                    "customers".to_owned(),
                    (0..3)
                        .map(|_| format!("c{:03}", next(500)))
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                )]),
                is_final: !last,
                version: 1,
                ..AggregateDoc::default()
            };
            if g == groups {
                total = doc;
            } else {
                docs.push(doc);
            }
        }
        docs.push(total);
    }
    docs
}

fn queries(end: i64) -> Vec<(&'static str, MetricQuery)> {
    let q = |metric: &str, back: &str, interval: &str| MetricQuery {
        from: Some(TimeArg::Text(format!("now-{back}"))),
        to: Some(TimeArg::Millis(end)),
        interval: Some(interval.into()),
        ..MetricQuery::new(metric)
    };
    let by = |mut query: MetricQuery| {
        query.group_by = Some("region".into());
        query
    };
    let top = |mut query: MetricQuery, n| {
        query.top = Some(n);
        query
    };
    vec![
        ("last 1h by minute, by region", by(q("amount", "1h", "1m"))),
        ("last 6h by minute, 3 regions", {
            let mut query = by(q("amount", "6h", "1m"));
            query.filters.push(DimensionFilter {
                dimension: "region".into(),
                values: vec!["region-01".into(), "region-07".into(), "region-13".into()],
            });
            query
        }),
        (
            "last 24h by 5m, top 5 regions",
            top(by(q("amount", "24h", "5m")), 5),
        ),
        ("last 24h by hour, total events", q("events", "24h", "1h")),
        (
            "last 7d by hour, avg by region",
            by(q("avg_amount", "7d", "1h")),
        ),
        ("last 3d by 10m, max", q("high", "3d", "10m")),
        ("30d by day, by region", by(q("amount", "30d", "1d"))),
        (
            "30d by day, distinct top 3",
            top(by(q("customers", "30d", "1d")), 3),
        ),
        ("30d by hour, min", q("low", "30d", "1h")),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

async fn time_queries(name: &str, store: &dyn AggregateReader, runs: u64, end: i64) {
    let spec = spec();
    println!("\n{name}: {runs} runs of each query");
    println!(
        "{:<36} {:>7} {:>9} {:>9} {:>9}",
        "query", "points", "p50 ms", "p99 ms", "max ms"
    );
    let mut all = Vec::new();
    let only = std::env::var("BENCH_QUERY").unwrap_or_default();
    for (label, query) in queries(end).into_iter().filter(|(l, _)| l.contains(&only)) {
        let mut times = Vec::new();
        let mut points = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let result = query::run(store, &spec, &query, end)
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            times.push(started.elapsed());
            points = result.series.iter().map(|s| s.points.len()).sum::<usize>();
            assert!(points > 0, "{label}: no points");
        }
        times.sort();
        println!(
            "{label:<36} {points:>7} {:>9.2} {:>9.2} {:>9.2}",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3
        );
        all.extend(times);
    }
    all.sort();
    println!(
        "{:<36} {:>7} {:>9.2} {:>9.2} {:>9.2}",
        "all queries",
        "",
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all.last().unwrap().as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let days = env("BENCH_DAYS", 30) as i64;
    let groups = env("BENCH_GROUPS", 20);
    let runs = env("BENCH_RUNS", 30);
    let end = START + days * DAY;
    println!(
        "streamlens query benchmark: {days} days x {groups} groups (+ the total) of 1-minute windows"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    // BENCH_STORE=<file> keeps the store there and reuses it when it exists (queries only).
    let kept = std::env::var_os("BENCH_STORE").map(std::path::PathBuf::from);
    let reuse = kept.as_ref().is_some_and(|p| p.exists());
    let path = kept.unwrap_or_else(|| dir.path().join("bench.redb"));
    let store = EmbeddedStore::open(&path).expect("open the embedded store");
    let mut seed = 7u64;
    let started = Instant::now();
    let mut written = 0usize;
    for d in 0..days {
        let docs = day(d, groups, d == days - 1, &mut seed);
        written += docs.len();
        if !reuse {
            store.write(&docs, None).await.expect("write a day");
        }
    }
    let took = started.elapsed();
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "embedded store: {written} documents written in {:.1} s ({:.0} docs/s, rollups included); \
         file {:.1} MB ({:.0} bytes per document)",
        took.as_secs_f64(),
        written as f64 / took.as_secs_f64(),
        size as f64 / 1e6,
        size as f64 / written as f64
    );
    time_queries("embedded store", &store, runs, end).await;

    if std::env::var_os("BENCH_OPENSEARCH").is_some() {
        let url = std::env::var("STREAMLENS_OPENSEARCH_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:9200".to_owned());
        let prefix = format!("bench-query-{}", std::process::id());
        let search = OpenSearchStore::connect(&OpenSearchStoreConfig {
            index_prefix: prefix.clone(),
            ..OpenSearchStoreConfig::new(url.clone())
        })
        .await
        .expect("OpenSearch at STREAMLENS_OPENSEARCH_URL");
        let mut seed = 7u64;
        let started = Instant::now();
        for d in 0..days {
            let docs = day(d, groups, d == days - 1, &mut seed);
            for chunk in docs.chunks(5000) {
                search.write(chunk, None).await.expect("bulk write");
            }
        }
        search.flush().await.expect("refresh");
        let took = started.elapsed();
        println!(
            "opensearch ({url}): {written} documents written in {:.1} s ({:.0} docs/s)",
            took.as_secs_f64(),
            written as f64 / took.as_secs_f64()
        );
        time_queries(
            "opensearch (no rollups: every window read)",
            &search,
            env("BENCH_OPENSEARCH_RUNS", 5),
            end,
        )
        .await;
        let _ = reqwest::Client::new()
            .delete(format!("{url}/{prefix}-*"))
            .send()
            .await;
    }
}
