//! Pipeline health on the live page, in a real headless Chromium: a run whose source is the
//! scripted fault server (`streamlens_infra::fault_server`) hits trimmed data
//! (TrimmedDataAccessException) while the page is open; the gap shows up in the health strip and
//! as the warning banner without a reload, the reading goes on after the gap, and the page logs no
//! console errors.
//!
//! Needs `/usr/bin/chromium`, `npm ci` (playwright-core) and the dashboard bundle
//! (`dashboard/build-client.sh`), like `tests/browser.rs`; no other service. With
//! `STREAMLENS_SCREENSHOTS=<dir>` it also saves the page with the banner at 1280 px and at phone
//! width (390 px) into that directory.

mod browser_harness;
mod common;

use std::{path::PathBuf, time::Duration};

use browser_harness::{prerequisites, Page, Served};
use serde_json::{json, Value};
use streamlens_infra::fault_server::{Fault, FaultServer, RecordSpec};

/// An INSERT of `pk` with a `status`, written now.
fn order(pk: &str, status: &str) -> RecordSpec {
    let mut spec = RecordSpec::insert(pk, "5.00", streamlens_ingest::now_ms() / 1_000);
    spec.new_image = Some(json!({
        "pk": { "S": pk },
        "status": { "S": status },
        "amount": { "N": "5.00" },
    }));
    spec
}

async fn health(base: &str) -> Value {
    common::get_json(&format!("{base}/api/health")).await
}

/// Polls `/api/health` until `done` holds, for at most `limit`.
async fn health_until(base: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let now = health(base).await;
        if done(&now) || started.elapsed() > limit {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_shows_on_the_hydrated_page_without_reload() {
    prerequisites();

    let server = FaultServer::start().await;
    server.add_shard("s1", None);
    let first = server.push(
        "s1",
        (0..3)
            .map(|i| order(&format!("order#{i}"), "open"))
            .collect(),
    );

    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "kind = \"dynamodb\"\nstream_arn = \"{}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n\
             poll_interval = \"50ms\"\ndiscovery_interval = \"200ms\"\nmax_backoff = \"200ms\"",
            server.stream_arn(),
            server.url()
        ),
        &format!("kind = \"embedded\"\npath = \"{}\"", dir.path().join("s.redb").display()),
        dir.path(),
        "",
    );
    let served = Served::start(config).await;
    let base = served.base.clone();

    // The first records are read, and nothing is wrong yet.
    let before = health_until(&base, Duration::from_secs(20), |h| {
        h["events"] == 3 && h["shards"][0]["caught_up"] == true
    })
    .await;
    assert_eq!(before["events"], 3, "{before}");
    assert_eq!(before["sharded"], true, "{before}");
    assert_eq!(before["gaps"], 0, "{before}");
    assert_eq!(before["shards"][0]["shard_id"], "s1", "{before}");
    assert_eq!(
        before["shards"][0]["position"],
        first[2].as_str(),
        "{before}"
    );
    assert_eq!(before["shards"][0]["ms_behind"], 0, "{before}");

    let mut page = Page::open(&base).await;
    assert_eq!(page.ask("NOALERT").await, "NOALERT");
    assert_eq!(page.ask("HEALTH gaps 0").await, "HEALTHY gaps 0");

    // New records arrive and the oldest of them is trimmed before the reader gets to it: its
    // next read answers TrimmedDataAccessException. The reader polls every 50 ms, so it may
    // read the records between the push and the trim; then the round has no gap and is repeated.
    let probe = common::unique("after-gap-");
    let mut last_read = first[2].clone();
    let mut read = 3;
    let mut gapped = None;
    for round in 0..5 {
        let seqs = server.push(
            "s1",
            (0..3)
                .map(|i| order(&format!("order#{round}-{i}"), &probe))
                .collect(),
        );
        server.trim_before("s1", &seqs[1]);
        let now = health_until(&base, Duration::from_secs(10), |h| {
            h["gaps"] == 1 || h["events"] == read + 3
        })
        .await;
        if now["gaps"] == 1 {
            gapped = Some((now, seqs));
            break;
        }
        assert_eq!(
            now["events"],
            read + 3,
            "neither a gap nor the records: {now}"
        );
        eprintln!("round {round}: the records were read before the trim; again");
        read += 3;
        last_read = seqs[2].clone();
    }
    let (_, seqs) = gapped.expect("a gap within 5 rounds");

    // The page shows it without a reload: banner and strip.
    page.command("ALERT gap").await;
    let alerted = page.next_line().await;
    assert!(alerted.starts_with("ALERTED gap "), "{alerted}");
    assert!(alerted.contains("Gap on shard s1"), "{alerted}");
    assert!(
        alerted.contains(&format!("after sequence number {last_read}")),
        "{alerted}"
    );
    eprintln!("gap → page: {alerted}");
    assert_eq!(page.ask("HEALTH gaps 1").await, "HEALTHY gaps 1");

    // Reading goes on from the trim horizon: the records after the gap reach the table.
    page.command(&format!("EXPECT {probe}")).await;
    let seen = page.next_line().await;
    assert!(seen.starts_with(&format!("SEEN {probe}")), "{seen}");
    let after = health_until(&base, Duration::from_secs(10), |h| h["events"] == read + 2).await;
    assert_eq!(after["events"], read + 2, "{after}");
    assert_eq!(after["gaps"], 1, "{after}");
    assert_eq!(
        after["quarantined"], 1,
        "the gap's quarantine entry: {after}"
    );
    let shard = &after["shards"][0];
    assert_eq!(shard["gaps"], 1, "{after}");
    assert_eq!(shard["last_gap"]["after"], last_read.as_str(), "{after}");
    assert_eq!(shard["position"], seqs[2].as_str(), "{after}");
    assert_eq!(
        page.ask("HEALTH quarantined 1").await,
        "HEALTHY quarantined 1"
    );
    let metrics = common::get_text(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("streamlens_gaps_total{shard=\"s1\"} 1"),
        "{metrics}"
    );

    if let Some(shots) = std::env::var_os("STREAMLENS_SCREENSHOTS") {
        let shots = PathBuf::from(shots);
        std::fs::create_dir_all(&shots).unwrap();
        for (width, height) in [(1280, 900), (390, 844)] {
            assert_eq!(
                page.ask(&format!("VIEWPORT {width} {height}")).await,
                format!("RESIZED {width} {height}")
            );
            let path = shots.join(format!("health-{width}.png"));
            assert_eq!(
                page.ask(&format!("SCREENSHOT {}", path.display())).await,
                format!("SAVED {}", path.display())
            );
        }
    }

    page.close_without_console_errors().await;
    served.stop().await;
    server.shutdown().await;
}

/// The Health page shows a lag we induce: records written five minutes ago are read, then every
/// GetRecords is throttled, so the shard is no longer caught up and its last record is five
/// minutes old — the page (without reload) warns that the shard is behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_induced_lag_shows_on_the_health_page_without_reload() {
    prerequisites();

    let server = FaultServer::start().await;
    server.add_shard("s1", None);
    let old = streamlens_ingest::now_ms() / 1_000 - 300;
    server.push(
        "s1",
        (0..3)
            .map(|i| {
                let mut spec = order(&format!("order#{i}"), "open");
                spec.creation_time_secs = old;
                spec
            })
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "kind = \"dynamodb\"\nstream_arn = \"{}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n\
             poll_interval = \"50ms\"\ndiscovery_interval = \"200ms\"\nmax_backoff = \"200ms\"",
            server.stream_arn(),
            server.url()
        ),
        &format!("kind = \"embedded\"\npath = \"{}\"", dir.path().join("s.redb").display()),
        dir.path(),
        "",
    );
    let served = Served::start(config).await;
    let base = served.base.clone();
    let read = health_until(&base, Duration::from_secs(20), |h| {
        h["events"] == 3 && h["shards"][0]["caught_up"] == true
    })
    .await;
    assert_eq!(read["shards"][0]["ms_behind"], 0, "caught up: {read}");

    let mut page = Page::open(&base).await;
    assert_eq!(page.ask("GOTO /health").await, "AT /health");
    assert_eq!(page.ask("NOALERT").await, "NOALERT");
    assert_eq!(
        page.ask("HEALTH behind caught up").await,
        "HEALTHY behind caught up"
    );

    server.fail_next("GetRecords", 100_000, Fault::Throttle);
    let lagging = health_until(&base, Duration::from_secs(10), |h| {
        h["shards"][0]["ms_behind"].as_i64().unwrap_or(0) > 60_000
    })
    .await;
    let behind = lagging["shards"][0]["ms_behind"].as_i64().unwrap_or(0);
    assert!((290_000..400_000).contains(&behind), "{lagging}");
    let alerted = page.ask("ALERT behind").await;
    assert!(alerted.starts_with("ALERTED behind "), "{alerted}");
    assert!(alerted.contains("s1"), "{alerted}");
    eprintln!("lag → health page: {alerted}");
    let strip = page.ask("TEXT [data-health=\"behind\"] dd").await;
    assert!(strip.starts_with("TEXT \"5 min"), "{strip}");

    if let Some(shots) = std::env::var_os("STREAMLENS_SCREENSHOTS") {
        let path = PathBuf::from(shots).join("health.png");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        page.ask("VIEWPORT 1280 800").await;
        page.ask(&format!("SCREENSHOT {}", path.display())).await;
    }
    page.close_without_console_errors().await;
    served.stop().await;
    server.shutdown().await;
}
