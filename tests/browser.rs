//! The live page in a real headless Chromium: it loads and hydrates without console errors, and a
//! write made with the AWS SDK on the moto table shows up on the page without a reload.
//!
//! Needs moto running, `/usr/bin/chromium`, `npm ci` (playwright-core) and the dashboard bundle
//! (`dashboard/build-client.sh`); `infra/test.sh` sees to all of them.

mod common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
};
use tokio_util::sync::CancellationToken;

fn site_root() -> PathBuf {
    std::env::var_os("STREAMLENS_SITE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/site"))
}

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
    let site = site_root();
    assert!(
        site.join("pkg/streamlens_dashboard.js").exists(),
        "no dashboard bundle in {}: run dashboard/build-client.sh",
        site.display()
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("node_modules/playwright-core").exists(),
        "playwright-core missing: run `npm ci` in {}",
        root.display()
    );

    let dir = tempfile::tempdir().unwrap();
    let table = common::unique("browser");
    let client = common::dynamodb().await;
    streamlens_infra::dynamo::create_table_with_stream(&client, &table, "pk")
        .await
        .unwrap();
    put(&client, &table, "order#1", "open", "10.00").await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = common::config(
        &format!(
            "kind = \"dynamodb\"\ntable = \"{table}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\npoll_interval = \"100ms\"",
            common::moto_url()
        ),
        &format!("kind = \"embedded\"\npath = \"{}\"", dir.path().join("s.redb").display()),
        dir.path(),
        "",
    );
    config.dashboard.enabled = true;
    config.dashboard.listen = ([127, 0, 0, 1], port).into();
    config.dashboard.site_root = site;
    let shutdown = CancellationToken::new();
    let app = tokio::spawn(streamlens::app::run(config, shutdown.clone()));
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(&base).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first write reaches the store before the browser opens.
    for _ in 0..100 {
        let body = reqwest::get(format!("{base}/api/aggregates?dimension=status"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains("\"open\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut browser = Command::new("node")
        .arg(root.join("tests/browser/live.mjs"))
        .arg(&base)
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the browser test");
    let mut stdin = browser.stdin.take().unwrap();
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the browser script answers within 60 s")
            .unwrap()
            .unwrap_or_default()
    };
    assert_eq!(next_line().await, "READY");

    // A new status value only exists once this write has gone through the whole pipeline.
    let probe = common::unique("probe-");
    put(&client, &table, "order#2", &probe, "12.34").await;
    stdin
        .write_all(format!("EXPECT {probe}\n").as_bytes())
        .await
        .unwrap();
    let seen = next_line().await;
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
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("streamlens_events_total{kind=\"INSERT\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("streamlens_shard_records_total"),
        "{metrics}"
    );

    drop(stdin);
    let done = next_line().await;
    assert_eq!(done, "OK", "the page logged errors");
    assert!(browser.wait().await.unwrap().success());

    shutdown.cancel();
    app.await.unwrap().unwrap();
}
