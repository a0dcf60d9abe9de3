//! End to end against the real local services: a moto DynamoDB table with a stream, written to
//! with the AWS SDK, read by streamlens into osmem-server (OpenSearch API). The aggregate documents
//! in OpenSearch must equal totals computed here from the writes themselves; the same changes,
//! archived by the run and replayed through the archive source into the embedded store, must give
//! the same documents.

mod common;

use std::{collections::BTreeMap, str::FromStr};

use aws_sdk_dynamodb::types::AttributeValue;
use rust_decimal::Decimal;
use streamlens_core::{AggQuery, AggregateDoc, AggregateReader};
use tokio_util::sync::CancellationToken;

const STATUSES: [&str; 4] = ["new", "paid", "shipped", "returned"];

/// Writes `n` changes serially (moto repeats sequence numbers under concurrent writers) and
/// returns the totals they must produce.
async fn write_changes(client: &aws_sdk_dynamodb::Client, table: &str, n: usize) -> common::Totals {
    let mut totals = common::Totals::new();
    let mut live: BTreeMap<u32, (String, Decimal)> = BTreeMap::new();
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    for _ in 0..n {
        let id = next(120) as u32;
        let status = STATUSES[next(4) as usize].to_owned();
        let amount = Decimal::from_str(&format!("{}.{:02}", next(5000), next(100))).unwrap();
        let key = AttributeValue::S(format!("order#{id}"));
        match live.get(&id).cloned() {
            Some(old) if next(4) == 0 => {
                client
                    .delete_item()
                    .table_name(table)
                    .key("pk", key)
                    .send()
                    .await
                    .unwrap();
                live.remove(&id);
                common::add_change(&mut totals, "REMOVE", Some((&old.0, old.1)), None);
            }
            Some(old) if next(2) == 0 => {
                // An update expression, not a whole-item put.
                client
                    .update_item()
                    .table_name(table)
                    .key("pk", key)
                    .update_expression("SET #s = :s, amount = :a")
                    .expression_attribute_names("#s", "status")
                    .expression_attribute_values(":s", AttributeValue::S(status.clone()))
                    .expression_attribute_values(":a", AttributeValue::N(amount.to_string()))
                    .send()
                    .await
                    .unwrap();
                common::add_change(
                    &mut totals,
                    "MODIFY",
                    Some((&old.0, old.1)),
                    Some((&status, amount)),
                );
                live.insert(id, (status, amount));
            }
            old => {
                client
                    .put_item()
                    .table_name(table)
                    .item("pk", key)
                    .item("status", AttributeValue::S(status.clone()))
                    .item("amount", AttributeValue::N(amount.to_string()))
                    .item("tags", AttributeValue::Ss(vec!["a".into(), "b".into()]))
                    .item("blob", AttributeValue::B(vec![0u8, 1, 2].into()))
                    .item("flag", AttributeValue::Bool(true))
                    .item("nothing", AttributeValue::Null(true))
                    .send()
                    .await
                    .unwrap();
                let kind = if old.is_some() { "MODIFY" } else { "INSERT" };
                common::add_change(
                    &mut totals,
                    kind,
                    old.as_ref().map(|(s, a)| (s.as_str(), *a)),
                    Some((&status, amount)),
                );
                live.insert(id, (status, amount));
            }
        }
    }
    totals.retain(|_, t| *t != (0, 0, 0, 0, Decimal::ZERO));
    totals
}

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
    let table = common::unique("orders");
    let client = common::dynamodb().await;
    streamlens_infra::dynamo::create_table_with_stream(&client, &table, "pk")
        .await
        .unwrap();

    let expected = write_changes(&client, &table, 600).await;
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
