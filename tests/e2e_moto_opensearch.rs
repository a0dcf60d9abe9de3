//! End to end against the real local services: a moto DynamoDB table with a stream, written to
//! with the AWS SDK, read by streamlens into osmem-server (OpenSearch API). The aggregate documents
//! in OpenSearch must equal totals computed here from the writes themselves; the same changes,
//! archived by the run and replayed through the archive source into the embedded store, must give
//! the same documents.

mod common;

use std::collections::BTreeMap;

use streamlens_core::{AggQuery, AggregateDoc, AggregateReader};
use tokio_util::sync::CancellationToken;

/// All documents of an index, read with a plain `_search` (not streamlens' store code).
async fn opensearch_docs(index: &str) -> Vec<AggregateDoc> {
    let url = format!("{}/{index}/_search", common::opensearch_url());
    let body = serde_json::json!({ "size": 10000, "query": { "match_all": {} } });
    let response: serde_json::Value = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| serde_json::from_value(h["_source"].clone()).unwrap())
        .collect()
}

fn without_versions(mut docs: Vec<AggregateDoc>) -> BTreeMap<String, AggregateDoc> {
    docs.iter_mut().for_each(|d| d.version = 0);
    docs.into_iter().map(|d| (d.id(), d)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_stream_to_opensearch_is_exact_and_matches_the_archive_replay() {
    common::require("moto", &common::moto_url()).await;
    common::require("OpenSearch", &common::opensearch_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let (client, table) = common::table_with_stream("orders").await;

    let mut writer = common::Writer::new(0x2545F4914F6CDD1D);
    writer.write(&client, &table, 600).await;
    let expected = writer.totals();
    let kinds: (i64, i64, i64) = expected
        .get(&("_all".to_owned(), String::new()))
        .map(|t| (t.0, t.1, t.2))
        .unwrap();
    assert!(
        kinds.0 > 50 && kinds.1 > 50 && kinds.2 > 50,
        "a mix of kinds: {kinds:?}"
    );

    let prefix = common::unique("e2e");
    let archive = dir.path().join("changes.ndjson.gz");
    let config = common::config(
        &format!(
            "kind = \"dynamodb\"\ntable = \"{table}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\nstop_when_idle = \"3s\"",
            common::moto_url()
        ),
        &format!("kind = \"opensearch\"\nurl = \"{}\"\nindex_prefix = \"{prefix}\"", common::opensearch_url()),
        dir.path(),
        &format!("archive_to = \"{}\"", archive.display()),
    );
    let summary = streamlens::app::run(config, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.source.events, 600, "one event per write");
    assert_eq!(summary.quarantined, 0);

    let docs = opensearch_docs(&format!("{prefix}-aggregates")).await;
    for window in ["1m", "5m"] {
        assert_eq!(
            common::totals_of_docs(&docs, window),
            expected,
            "window {window}"
        );
    }

    // The same changes through the archive source into the embedded store.
    let store_path = dir.path().join("replay.redb");
    let replay = common::config(
        &format!("kind = \"archive\"\npath = \"{}\"", archive.display()),
        &format!("kind = \"embedded\"\npath = \"{}\"", store_path.display()),
        &dir.path().join("replay"),
        "",
    );
    let summary = streamlens::app::run(replay, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.source.events, 600);
    let store = streamlens_aggregator::store::embedded::EmbeddedStore::open(&store_path).unwrap();
    let embedded = store.query(&AggQuery::default()).await.unwrap();
    assert_eq!(without_versions(embedded), without_versions(docs));
}
