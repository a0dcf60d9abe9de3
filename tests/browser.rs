//! The live page in a real headless Chromium: it loads and hydrates without console errors, and a
//! write made with the AWS SDK on the moto table shows up on the page without a reload.
//!
//! Needs moto running, `/usr/bin/chromium`, `npm ci` (playwright-core) and the dashboard bundle
//! (`dashboard/build-client.sh`); `infra/test.sh` sees to all of them.

mod browser_harness;
mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use browser_harness::{prerequisites, Page, Served};

async fn put(client: &aws_sdk_dynamodb::Client, table: &str, id: &str, status: &str, amount: &str) {
    client
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(id.to_owned()))
        .item("status", AttributeValue::S(status.to_owned()))
        .item("amount", AttributeValue::N(amount.to_owned()))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_appears_on_the_hydrated_page_without_reload() {
    common::require("moto", &common::moto_url()).await;
    prerequisites();

    let dir = tempfile::tempdir().unwrap();
    let (client, table) = common::table_with_stream("browser").await;
    put(&client, &table, "order#1", "open", "10.00").await;

    let config = common::config(
        &common::moto_source(&table),
        &format!(
            "kind = \"embedded\"\npath = \"{}\"",
            dir.path().join("s.redb").display()
        ),
        dir.path(),
        "",
    );
    let served = Served::start(config).await;
    let base = served.base.clone();
    // The first write reaches the store before the browser opens.
    for _ in 0..100 {
        let body = common::get_text(&format!("{base}/api/aggregates?dimension=status")).await;
        if body.contains("\"open\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let mut page = Page::open(&base).await;
    // A new status value only exists once this write has gone through the whole pipeline.
    let probe = common::unique("probe-");
    put(&client, &table, "order#2", &probe, "12.34").await;
    let seen = page.ask(&format!("EXPECT {probe}")).await;
    assert!(seen.starts_with(&format!("SEEN {probe}")), "{seen}");
    eprintln!("write → page: {seen}");

    // Health and metrics of the same run.
    let health: serde_json::Value = reqwest::get(format!("{base}/api/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shards = health["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 1, "{health}");
    assert_eq!(shards[0]["events"], 2, "{health}");
    assert!(shards[0]["position"].is_string(), "{health}");
    let metrics = common::get_text(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("streamlens_events_total{kind=\"INSERT\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("streamlens_shard_records_total"),
        "{metrics}"
    );

    page.close_without_console_errors().await;
    served.stop().await;
}
