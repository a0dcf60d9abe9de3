//! OpenSearch answering `429`/`503` for a while, then recovering: nothing is lost.
//!
//! The golden pipeline writes to osmem-server through [`FaultProxy`], which fails whole bulk
//! requests with `503` and `429` several times in a row, marks half the items of the next bulk
//! answer as rejected, and fails a later one with `502`. The run must finish, and the documents in
//! OpenSearch (read directly, not through the proxy) must equal those of the same run into the
//! embedded store — which the golden tests check against the plain computation. A server that
//! never recovers makes the run fail, after `retry_for`, with a message that says so.

mod common;

use streamlens_aggregator::{
    config::OpenSearchStoreConfig, store::embedded::EmbeddedStore,
    store::opensearch::OpenSearchStore,
};
use streamlens_core::{AggQuery, AggregateDoc, AggregateReader};
use streamlens_infra::fault_proxy::{Fault, FaultProxy};
use tokio_util::sync::CancellationToken;

/// The golden config, writing to OpenSearch at `url` under `prefix`.
fn config(
    dir: &std::path::Path,
    url: &str,
    prefix: &str,
    retry_for: &str,
) -> streamlens::config::Config {
    let mut config = common::golden_config(dir, 500);
    config.store = streamlens_aggregator::StoreConfig::Opensearch(OpenSearchStoreConfig {
        index_prefix: prefix.to_owned(),
        retry_for: retry_for.to_owned(),
        ..OpenSearchStoreConfig::new(url)
    });
    config
}

/// Values only: versions differ between two runs.
fn values(docs: Vec<AggregateDoc>) -> Vec<AggregateDoc> {
    docs.into_iter()
        .map(|d| AggregateDoc {
            version: 0,
            prev: None,
            ..d
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_and_unavailability_lose_nothing() {
    let url = common::opensearch_url();
    common::require("OpenSearch", &url).await;
    let proxy = FaultProxy::start(&url, |call| match call.path.rsplit('/').next() {
        Some("_bulk") => match call.nth_of_path {
            0..=2 => Fault::Status(503),
            3 | 4 => Fault::Status(429),
            5 => Fault::RejectHalfTheItems,
            7 => Fault::Status(502),
            _ => Fault::Forward,
        },
        _ => Fault::Forward,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = common::unique("faults-");
    let summary = streamlens::app::run(
        config(dir.path(), &proxy.url(), &prefix, "1m"),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(summary.source.events, 4000);
    assert_eq!(summary.quarantined, 0);
    // Five failed attempts, a half-rejected answer and a 502 later on.
    let injected = proxy.injected();
    assert_eq!(injected, 7);

    // The same input into the embedded store.
    let plain = tempfile::tempdir().unwrap();
    streamlens::app::run(
        common::golden_config(plain.path(), 500),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let expected = EmbeddedStore::open(&plain.path().join("golden.redb"))
        .unwrap()
        .query(&AggQuery::default())
        .await
        .unwrap();
    let direct = OpenSearchStore::connect(&OpenSearchStoreConfig {
        index_prefix: prefix.clone(),
        ..OpenSearchStoreConfig::new(url.clone())
    })
    .await
    .unwrap();
    let stored = direct.query(&AggQuery::default()).await.unwrap();
    assert!(expected.len() > 1000);
    assert_eq!(values(stored), values(expected));
    let _ = reqwest::Client::new()
        .delete(format!("{url}/{prefix}*"))
        .send()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_recovers_stops_the_run_with_the_reason() {
    let url = common::opensearch_url();
    common::require("OpenSearch", &url).await;
    let proxy = FaultProxy::start(&url, |call| {
        if call.path.ends_with("/_bulk") {
            Fault::Status(503)
        } else {
            Fault::Forward
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = common::unique("faults-");
    let started = std::time::Instant::now();
    let err = streamlens::app::run(
        config(dir.path(), &proxy.url(), &prefix, "1500ms"),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("gave up after") && message.contains("store.retry_for"),
        "{message}"
    );
    assert!(message.contains("status 503"), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(proxy.injected() >= 3);
    let _ = reqwest::Client::new()
        .delete(format!("{url}/{prefix}*"))
        .send()
        .await;
}
