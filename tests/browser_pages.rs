//! The dashboard's pages in a real headless Chromium, fed by SDK writes on a moto table: every
//! page hydrates without console errors and takes pushed updates without a reload; the Changes
//! page shows a modified item's timeline old → new; the Explore page's URL reproduces its query
//! (the table equals `POST /api/query` for the same query, the CSV download too) and its form
//! writes the query into the URL; the Health page shows the shards and the store.
//!
//! Needs moto, `/usr/bin/chromium`, `npm ci` (playwright-core) and the dashboard bundle
//! (`dashboard/build-client.sh`). With `STREAMLENS_SCREENSHOTS=<dir>` it saves every page at
//! 1280×800 into that directory.

mod browser_harness;
mod common;

use std::{path::PathBuf, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use browser_harness::{prerequisites, Page, Served};
use serde_json::{json, Value};

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

/// Polls `POST /api/changes` until the item `pk` has `n` changes.
async fn changes_of(base: &str, pk: &str, n: usize) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        last = reqwest::Client::new()
            .post(format!("{base}/api/changes"))
            .json(&json!({ "key": { "pk": pk } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if last["changes"].as_array().map_or(0, Vec::len) >= n {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{pk} never had {n} changes: {last}");
}

/// Asks the page for the text of `css`.
async fn text(page: &mut Page, css: &str) -> Option<String> {
    let line = page.ask(&format!("TEXT {css}")).await;
    let json = line
        .strip_prefix("TEXT ")
        .unwrap_or_else(|| panic!("{line}"));
    serde_json::from_str(json).unwrap()
}

async fn found(page: &mut Page, css: &str, want: &str) {
    let line = page.ask(&format!("WAITTEXT {css}|{want}")).await;
    assert!(line.starts_with("FOUND "), "{css} {want}: {line}");
}

async fn goto(page: &mut Page, path: &str) {
    assert_eq!(
        page.ask(&format!("GOTO {path}")).await,
        format!("AT {path}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_hydrates_and_follows_live_writes() {
    common::require("moto", &common::moto_url()).await;
    prerequisites();

    let dir = tempfile::tempdir().unwrap();
    let (client, table) = common::table_with_stream("pages").await;
    put(&client, &table, "order#1", "pending", "10.00").await;
    put(&client, &table, "order#1", "paid", "10.00").await;

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
    let indexed = changes_of(&base, "order#1", 2).await;
    assert_eq!(indexed["changes"][1]["kind"], "MODIFY", "{indexed}");
    let mut page = Page::open(&base).await;
    let shots = std::env::var_os("STREAMLENS_SCREENSHOTS").map(PathBuf::from);
    if let Some(dir) = &shots {
        std::fs::create_dir_all(dir).unwrap();
    }
    let shoot = |name: &str| shots.as_ref().map(|d| d.join(format!("{name}.png")));

    // Changes: the item's timeline, oldest first, old → new; a new change arrives by push.
    goto(&mut page, "/changes?key=pk%3Dorder%231&live=1").await;
    found(
        &mut page,
        r#"tr[data-kind="MODIFY"] li[data-attr="status"]"#,
        "status pending → paid",
    )
    .await;
    assert_eq!(
        text(
            &mut page,
            r#"tr[data-kind="INSERT"] li[data-attr="status"]"#
        )
        .await
        .as_deref(),
        Some("status pending")
    );
    put(&client, &table, "order#1", "shipped", "12.50").await;
    found(
        &mut page,
        r#"tr[data-kind="MODIFY"] li[data-attr="status"]"#,
        "status paid → shipped",
    )
    .await;
    found(
        &mut page,
        r#"tr[data-kind="MODIFY"] li[data-attr="amount"]"#,
        "amount 10.00 → 12.50",
    )
    .await;
    if let Some(path) = shoot("changes") {
        page.ask("VIEWPORT 1280 800").await;
        page.ask(&format!("SCREENSHOT {}", path.display())).await;
    }

    // Explore: the URL is the query; the table equals the API's answer; a new group arrives by
    // push; the CSV is the same answer; the form puts its query into the URL.
    let probe = common::unique("probe-");
    goto(
        &mut page,
        "/explore?metric=amount&group_by=status&range=1h&live=1",
    )
    .await;
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/api/query"))
        .json(&json!({ "metric": "amount", "group_by": "status", "from": "now-1h" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shipped = answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["group"] == "shipped")
        .unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(
        shipped["total"]
            .as_str()
            .and_then(|t| t.parse::<f64>().ok()),
        Some(12.5),
        "{answer}"
    );
    assert_eq!(
        text(
            &mut page,
            r#"table.explore tr.total td[data-group="shipped"]"#
        )
        .await
        .as_deref(),
        shipped["total"].as_str()
    );
    put(&client, &table, "order#2", &probe, "7.25").await;
    found(&mut page, "table.explore thead", &probe).await;
    found(
        &mut page,
        &format!(r#"table.explore tr.total td[data-group="{probe}"]"#),
        "7.25",
    )
    .await;
    let csv = common::get_text(&format!(
        "{base}/api/query.csv?metric=amount&group_by=status&range=1h"
    ))
    .await;
    assert!(
        csv.starts_with("group,start,start_time,value,final\n"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("{probe},")) && l.contains(",7.25,")),
        "{csv}"
    );
    if let Some(path) = shoot("explore") {
        page.ask(&format!("SCREENSHOT {}", path.display())).await;
    }
    assert_eq!(
        page.ask("SELECT select[name=metric]|events").await,
        "SELECTED"
    );
    let submitted = page.ask("SUBMIT form.controls button[type=submit]").await;
    assert!(
        submitted.starts_with("SUBMITTED /explore?metric=events&group_by=status"),
        "{submitted}"
    );
    found(&mut page, "table.explore tr.total", "total").await;

    // Health: the shard being read and the store.
    goto(&mut page, "/health").await;
    assert_eq!(page.ask("HEALTH shards 1").await, "HEALTHY shards 1");
    assert_eq!(page.ask("NOALERT").await, "NOALERT");
    let store = text(&mut page, "dd[data-store]").await.unwrap_or_default();
    assert!(store.starts_with("embedded:"), "{store}");
    if let Some(path) = shoot("health") {
        page.ask(&format!("SCREENSHOT {}", path.display())).await;
    }

    // Overview: the new group is in the table, pushed; the tiles equal the query API and
    // follow a new write.
    goto(&mut page, "/").await;
    let seen = page.ask(&format!("EXPECT {probe}")).await;
    assert!(seen.starts_with("SEEN "), "{seen}");
    let events: Value = reqwest::Client::new()
        .post(format!("{base}/api/query"))
        .json(&json!({ "metric": "events", "from": "now-1h" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total: u64 = events["series"][0]["total"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(total, 4, "four writes so far: {events}");
    found(&mut page, r#"[data-tile="events"] dd"#, "4").await;
    put(&client, &table, "order#3", "pending", "1.00").await;
    found(&mut page, r#"[data-tile="events"] dd"#, "5").await;
    found(
        &mut page,
        r#"svg[data-panel="top"] g[data-group="pending"]"#,
        "pending",
    )
    .await;
    if let Some(path) = shoot("overview") {
        page.ask(&format!("SCREENSHOT {}", path.display())).await;
    }

    page.close_without_console_errors().await;
    served.stop().await;
}
