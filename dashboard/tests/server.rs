//! The dashboard router against an in-memory reader: API answers and errors, the event stream,
//! and a server-rendered page that shows the aggregates without any JavaScript.

#![cfg(feature = "ssr")]

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    body::{to_bytes, Body},
    http::{Request, StatusCode},
    Router,
};
use futures::StreamExt;
use streamlens_core::{
    aggregate::{AggQuery, AggregateDoc, AggregateReader, PipelineInfo},
    Error,
};
use streamlens_dashboard::server::{router, DashboardState};
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
