//! The dashboard router against an in-memory reader: API answers and errors, the event stream,
//! a server-rendered page that shows the aggregates without any JavaScript, and the pipeline's
//! health (`/api/health`, the health strip and the warning banner).

#![cfg(feature = "ssr")]

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{to_bytes, Body},
    http::{Request, StatusCode},
    Router,
};
use futures::StreamExt;
use streamlens_core::{
    aggregate::{AggQuery, AggregateDoc, AggregateReader, PipelineInfo},
    health::{GapNote, PipelineHealth, ShardStatus},
    Error,
};
use streamlens_dashboard::server::{
    no_changes, no_health, no_query, router, DashboardState, HealthFn,
};
use tokio::sync::broadcast;
use tower::ServiceExt;

struct Fixed(Vec<AggregateDoc>);

#[async_trait::async_trait]
impl AggregateReader for Fixed {
    async fn query(&self, query: &AggQuery) -> Result<Vec<AggregateDoc>, Error> {
        Ok(self
            .0
            .iter()
            .filter(|d| query.matches(d))
            .cloned()
            .collect())
    }
}

fn doc(window: &str, start: i64, dimension: &str, value: &str, net: i64) -> AggregateDoc {
    AggregateDoc {
        pipeline: "orders".into(),
        window: window.into(),
        window_start: start,
        window_end: start + 60_000,
        dimension: dimension.into(),
        value: value.into(),
        inserts: net,
        modifies: 0,
        removes: 0,
        net_count: net,
        sums: BTreeMap::from([("amount".to_owned(), "12.50".to_owned())]),
        version: 1,
        ..AggregateDoc::default()
    }
}

fn info() -> PipelineInfo {
    PipelineInfo {
        name: "orders".into(),
        windows: vec!["1m".into(), "5m".into()],
        dimensions: vec!["status".into()],
        metrics: vec!["amount".into()],
        source: "test".into(),
        store: "memory".into(),
    }
}

/// 2024-01-02 03:04:00 UTC
const T0: i64 = 1_704_164_640_000;

fn app() -> (Router, broadcast::Sender<Arc<Vec<AggregateDoc>>>) {
    app_with(no_health())
}

fn app_with(health: HealthFn) -> (Router, broadcast::Sender<Arc<Vec<AggregateDoc>>>) {
    let (updates, _) = broadcast::channel(16);
    let reader = Fixed(vec![
        doc("1m", T0, "status", "shipped", 7),
        doc("1m", T0, "_all", "_all", 9),
        doc("1m", T0 + 60_000, "status", "pending", -3),
        doc("5m", T0, "status", "shipped", 11),
    ]);
    let app = router(DashboardState {
        reader: Arc::new(reader),
        updates: updates.clone(),
        info: info(),
        site_root: PathBuf::from("/nonexistent/site"),
        health,
        query: no_query(),
        changes: no_changes(),
        replays: streamlens_dashboard::server::no_replays(),
    });
    (app, updates)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8(body.to_vec()).expect("utf-8"))
}

#[tokio::test]
async fn pipeline_is_json() {
    let (app, _tx) = app();
    let (status, body) = get(&app, "/api/pipeline").await;
    assert_eq!(status, StatusCode::OK);
    let got: PipelineInfo = serde_json::from_str(&body).expect("pipeline json");
    assert_eq!(got, info());
}

#[tokio::test]
async fn aggregates_default_to_the_first_window() {
    let (app, _tx) = app();
    let (status, body) = get(&app, "/api/aggregates").await;
    assert_eq!(status, StatusCode::OK);
    let docs: Vec<AggregateDoc> = serde_json::from_str(&body).expect("docs json");
    assert_eq!(docs.len(), 3);
    assert!(docs.iter().all(|d| d.window == "1m"));

    let uri = format!("/api/aggregates?window=1m&dimension=status&from={}", T0 + 1);
    let (status, body) = get(&app, &uri).await;
    assert_eq!(status, StatusCode::OK);
    let docs: Vec<AggregateDoc> = serde_json::from_str(&body).expect("docs json");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].value, "pending");
}

#[tokio::test]
async fn bad_parameters_are_named() {
    let (app, _tx) = app();
    for (uri, name) in [
        ("/api/aggregates?window=2m", "`window`"),
        ("/api/aggregates?from=yesterday", "`from`"),
        ("/api/aggregates?to=1.5", "`to`"),
        ("/api/aggregates?dimension=colour", "`dimension`"),
        ("/api/aggregates?limit=3", "`limit`"),
        ("/api/aggregates?window=1m&window=5m", "`window`"),
    ] {
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("error json");
        let message = error["error"].as_str().expect("error message");
        assert!(message.contains(name), "{uri}: {message}");
    }
}

#[tokio::test]
async fn the_page_is_rendered_with_the_aggregates() {
    let (app, _tx) = app();
    let (status, html) = get(&app, "/?window=1m&dimension=status").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("/pkg/streamlens_dashboard.js"), "{html}");
    assert!(html.contains("streamlens_dashboard_bg"), "{html}");
    let id = doc("1m", T0, "status", "shipped", 7).id();
    assert!(html.contains(&format!("data-id=\"{id}\"")), "{html}");
    assert!(html.contains("03:04:00"), "{html}");
    assert!(html.contains("<td class=\"net_count\">-3</td>"), "{html}");
    assert!(html.contains("<svg"), "{html}");

    // the default dimension is the first one; `_all` is the totals
    let (_, html) = get(&app, "/?dimension=_all").await;
    assert!(html.contains("<td class=\"net_count\">9</td>"), "{html}");
    assert!(!html.contains("shipped</td>"), "{html}");
}

#[tokio::test]
async fn a_failed_query_shows_on_the_panels_not_as_zeros() {
    let (app, _tx) = app();
    let (status, html) = get(&app, "/?range=24h").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("this dashboard has no pipeline to query"),
        "the query's reason is shown: {html}"
    );
    assert!(
        !html.contains("events in range"),
        "no tiles of zeros: {html}"
    );
}

#[tokio::test]
async fn every_broadcast_becomes_one_event() {
    let (app, tx) = app();
    let response = app
        .oneshot(
            Request::get("/api/stream")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("header"),
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    let sent = doc("1m", T0 + 120_000, "status", "paid", 1);
    tx.send(Arc::new(vec![sent.clone()])).expect("a subscriber");
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("an event in time")
        .expect("a chunk")
        .expect("no error");
    let text = String::from_utf8(chunk.to_vec()).expect("utf-8");
    let data = text.strip_prefix("data: ").expect("a data line").trim_end();
    let got: Vec<AggregateDoc> = serde_json::from_str(data).expect("docs json");
    assert_eq!(got, vec![sent]);

    // once the sender is gone the stream ends
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("the end in time");
    assert!(end.is_none());
}

fn shard(id: &str, events: u64) -> ShardStatus {
    ShardStatus {
        shard_id: id.into(),
        position: Some(format!("{events:021}")),
        events,
        last_record_ms: Some(T0),
        ms_behind: Some(0),
        caught_up: true,
        reading: true,
        records_per_s: Some(2.5),
        ..ShardStatus::default()
    }
}

/// A health provider whose report the test can change between requests.
fn changing(start: PipelineHealth) -> (HealthFn, Arc<Mutex<PipelineHealth>>) {
    let current = Arc::new(Mutex::new(start));
    let read = current.clone();
    (
        Arc::new(move || read.lock().expect("health").clone()),
        current,
    )
}

#[tokio::test]
async fn health_is_json_read_per_request() {
    let healthy = PipelineHealth::new(true, vec![shard("shard-a", 40)], 40, 0, T0);
    let (health, current) = changing(healthy.clone());
    let (app, _tx) = app_with(health);
    let response = app
        .clone()
        .oneshot(
            Request::get("/api/health")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("header")
            .starts_with("application/json"),
        "{:?}",
        response.headers()
    );
    let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("health json");
    // `shards` stays at the top level, as before the health report grew.
    assert_eq!(json["shards"][0]["shard_id"], "shard-a", "{json}");
    assert_eq!(json["shards"][0]["events"], 40, "{json}");
    assert_eq!(json["events"], 40, "{json}");
    let got: PipelineHealth = serde_json::from_value(json).expect("a PipelineHealth");
    assert_eq!(got, healthy);

    // Not cached: the next request reads the provider again.
    let mut gap = shard("shard-a", 45);
    gap.gaps = 1;
    gap.last_gap = Some(GapNote {
        after: Some("000000000000000000040".into()),
        at_ms: T0,
        reason: "trimmed".into(),
    });
    *current.lock().expect("health") = PipelineHealth::new(true, vec![gap], 45, 1, T0 + 2_000);
    let (status, body) = get(&app, "/api/health").await;
    assert_eq!(status, StatusCode::OK);
    let got: PipelineHealth = serde_json::from_str(&body).expect("health json");
    assert_eq!((got.gaps, got.quarantined, got.events), (1, 1, 45));
    assert_eq!(got.warnings().len(), 1);
}

#[tokio::test]
async fn a_healthy_page_shows_the_strip_and_no_warning() {
    let (health, _) = changing(PipelineHealth::new(
        true,
        vec![shard("shard-a", 40), shard("shard-b", 2)],
        42,
        3,
        T0,
    ));
    let (app, _tx) = app_with(health);
    let (status, html) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("role=\"alert\""), "{html}");
    assert!(!html.contains("data-health-warning"), "{html}");
    for (key, value) in [
        ("shards", ">2</dd>"),
        ("behind", ">caught up</dd>"),
        ("events", ">42 · 5.0/s</dd>"),
        ("gaps", ">0</dd>"),
    ] {
        let at = html
            .find(&format!("data-health=\"{key}\""))
            .unwrap_or_else(|| panic!("no {key} in the strip: {html}"));
        let item = &html[at..at + html[at..].find("</div>").expect("item end")];
        assert!(item.contains(value), "{key}: {item}");
    }
    // quarantined records are flagged, but are not an alert
    assert!(
        html.contains("<div data-health=\"quarantined\" class=\"warn\">"),
        "{html}"
    );
    assert!(html.contains("<td class=\"shard\">shard-b</td>"), "{html}");
}

#[tokio::test]
async fn a_gap_and_a_lagging_shard_raise_the_banner() {
    let mut gapped = shard("shard-a", 40);
    gapped.gaps = 1;
    gapped.last_gap = Some(GapNote {
        after: Some("000000000000000000017".into()),
        at_ms: T0,
        reason: "trimmed".into(),
    });
    let mut late = shard("shard-b", 2);
    late.caught_up = false;
    late.ms_behind = Some(185_000);
    let (health, _) = changing(PipelineHealth::new(true, vec![gapped, late], 42, 1, T0));
    let (app, _tx) = app_with(health);
    let (status, html) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    let at = html.find("role=\"alert\"").expect("an alert");
    let banner = &html[at..at + html[at..].find("</div>").expect("banner end")];
    assert!(
        banner.contains("data-health-warning=\"gap behind\""),
        "{banner}"
    );
    assert!(
        banner.contains("data-kind=\"gap\" data-shard=\"shard-a\""),
        "{banner}"
    );
    assert!(
        banner.contains("after sequence number 000000000000000000017"),
        "{banner}"
    );
    assert!(
        banner.contains("Shard shard-b is 3 min 5 s behind"),
        "{banner}"
    );
    // the banner comes before the aggregates
    assert!(at < html.find("<table").expect("a table"), "{html}");
}

#[tokio::test]
async fn without_shards_the_strip_says_so() {
    let (app, _tx) = app();
    let (_, html) = get(&app, "/").await;
    let at = html.find("data-health=\"shards\"").expect("shards item");
    assert!(html[at..].starts_with("data-health=\"shards\""));
    assert!(html[at..at + 120].contains(">—</dd>"), "{html}");
    assert!(!html.contains("per shard"), "{html}");
    assert!(!html.contains("role=\"alert\""), "{html}");
}
