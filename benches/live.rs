//! Write → pixels, and how many live clients one process holds. Prints figures; asserts only
//! that the measurement ran.
//!
//! `cargo bench --bench live` with moto running (`infra/scripts/services.sh start`), Chromium,
//! `npm ci` and the dashboard bundle (`dashboard/build-client.sh`), as for the browser tests.
//!
//! 1. **Write → pixels.** streamlens reads a moto table's stream (default `poll_interval`,
//!    250 ms) into the embedded store and serves the dashboard; headless Chromium has the
//!    overview open. For each of `LIVE_WRITES` (default 200) writes, one at a time and at spread
//!    phases of the poll: the page is told to watch for a new status value (checked every
//!    animation frame), the time is taken,
//!    the item is written with the AWS SDK, and the page reports the wall-clock time the value
//!    was first in the DOM. Latency = that time − the time before the SDK call.
//! 2. **Concurrent live clients.** For each count in `LIVE_CLIENTS` (default `100,500,1000`),
//!    that many clients open `/api/stream` (Server-Sent Events, as the page does) and stay
//!    connected; `LIVE_CLIENT_WRITES` (default 20) writes are made one at a time, and for each,
//!    the time until every client received it is taken. Reported: per-delivery p50/p99/max and
//!    how many deliveries took over a second or never came (10 s).

#[path = "../tests/browser_harness/mod.rs"]
mod browser_harness;
#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aws_sdk_dynamodb::types::AttributeValue;
use browser_harness::{prerequisites, Page, Served};
use tokio::sync::Mutex;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn put(client: &aws_sdk_dynamodb::Client, table: &str, id: &str, status: &str) {
    client
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(id.to_owned()))
        .item("status", AttributeValue::S(status.to_owned()))
        .item("amount", AttributeValue::N("1.00".to_owned()))
        .send()
        .await
        .unwrap();
}

/// p-th percentile (nearest rank) of sorted values.
fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One SSE client: everything it received, and when.
struct Client {
    seen: Mutex<Vec<(i64, String)>>,
}

async fn listen(url: String, client: Arc<Client>, ready: tokio::sync::mpsc::Sender<()>) {
    let mut response = match reqwest::get(&url).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("client could not connect: {e}");
            return;
        }
    };
    let _ = ready.send(()).await;
    while let Ok(Some(chunk)) = response.chunk().await {
        let at = now_ms();
        client
            .seen
            .lock()
            .await
            .push((at, String::from_utf8_lossy(&chunk).into_owned()));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    common::require("moto", &common::moto_url()).await;
    prerequisites();
    let writes: usize = env("LIVE_WRITES", "200").parse().unwrap();
    let counts: Vec<usize> = env("LIVE_CLIENTS", "100,500,1000")
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let client_writes: usize = env("LIVE_CLIENT_WRITES", "20").parse().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let table = common::unique("live");
    let dynamo = common::dynamodb().await;
    streamlens_infra::dynamo::create_table_with_stream(&dynamo, &table, "pk")
        .await
        .unwrap();
    put(&dynamo, &table, "warm", "warm").await;
    let config = common::config(
        &format!(
            "kind = \"dynamodb\"\ntable = \"{table}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"",
            common::moto_url()
        ),
        &format!("kind = \"embedded\"\npath = \"{}\"", dir.path().join("s.redb").display()),
        dir.path(),
        "",
    );
    let served = Served::start(config).await;
    let base = served.base.clone();

    println!(
        "streamlens live latency (moto, embedded store, poll_interval 250 ms, release build: {})",
        if cfg!(debug_assertions) { "no" } else { "yes" }
    );
    let mut page = Page::open(&base).await;
    let mut latencies = Vec::with_capacity(writes);
    let run = common::unique("");
    for i in 0..writes {
        let probe = format!("w{i}x{run}");
        page.command(&format!("STAMP {probe}")).await;
        // Writes start at a spread of phases of the 250 ms poll, not always right after the
        // poll that delivered the previous one.
        tokio::time::sleep(Duration::from_millis((i as u64 * 97) % 250)).await;
        let before = now_ms();
        put(&dynamo, &table, &format!("order#{}", i % 50), &probe).await;
        let line = page.next_line().await;
        let seen: i64 = line
            .rsplit(' ')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        latencies.push(seen - before);
    }
    latencies.sort_unstable();
    println!(
        "write → pixels over {writes} SDK writes: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms (min {} ms)",
        pct(&latencies, 50.0),
        pct(&latencies, 90.0),
        pct(&latencies, 99.0),
        latencies.last().copied().unwrap_or_default(),
        latencies.first().copied().unwrap_or_default(),
    );
    page.close_without_console_errors().await;

    for n in counts {
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(n.max(1));
        let clients: Vec<Arc<Client>> = (0..n)
            .map(|_| {
                Arc::new(Client {
                    seen: Mutex::new(Vec::new()),
                })
            })
            .collect();
        let tasks: Vec<_> = clients
            .iter()
            .map(|c| {
                tokio::spawn(listen(
                    format!("{base}/api/stream"),
                    c.clone(),
                    ready_tx.clone(),
                ))
            })
            .collect();
        let started = Instant::now();
        let mut connected = 0;
        while connected < n && started.elapsed() < Duration::from_secs(30) {
            if tokio::time::timeout(Duration::from_secs(1), ready_rx.recv())
                .await
                .ok()
                .flatten()
                .is_some()
            {
                connected += 1;
            }
        }
        let mut deliveries = Vec::new();
        let mut missed = 0;
        for w in 0..client_writes {
            let probe = format!("c{n}w{w}x{run}");
            tokio::time::sleep(Duration::from_millis((w as u64 * 97) % 250)).await;
            let before = now_ms();
            put(&dynamo, &table, &format!("order#{}", w % 50), &probe).await;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut got: Vec<Option<i64>> = vec![None; n];
            while Instant::now() < deadline {
                for (i, c) in clients.iter().enumerate() {
                    if got[i].is_none() {
                        got[i] = c
                            .seen
                            .lock()
                            .await
                            .iter()
                            .find(|(_, text)| text.contains(&probe))
                            .map(|(at, _)| *at);
                    }
                }
                if got.iter().all(Option::is_some) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for g in got {
                match g {
                    Some(at) => deliveries.push(at - before),
                    None => missed += 1,
                }
            }
            for c in &clients {
                c.seen.lock().await.clear();
            }
        }
        deliveries.sort_unstable();
        let over_1s = deliveries.iter().filter(|d| **d > 1_000).count();
        println!(
            "{n} live clients ({connected} connected), {client_writes} writes: delivery p50 {} ms, p99 {} ms, max {} ms; {over_1s} of {} deliveries over 1 s, {missed} missed",
            pct(&deliveries, 50.0),
            pct(&deliveries, 99.0),
            deliveries.last().copied().unwrap_or_default(),
            deliveries.len() + missed,
        );
        for t in tasks {
            t.abort();
        }
    }
    served.stop().await;
}
