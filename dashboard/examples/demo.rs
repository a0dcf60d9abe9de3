//! The dashboard on made-up data, for trying it out and for browser checks.
//!
//! ```text
//! dashboard/build-client.sh                     # once: the browser bundle into target/site/pkg
//! cargo run -p streamlens-dashboard --features ssr --example demo -- 127.0.0.1:3100
//! ```
//!
//! An in-memory [`AggregateReader`] holds 1m and 5m windows of an `orders` pipeline (dimension
//! `status`, metric `amount`), seeded with the last 25 minutes. Every second one more order event
//! is applied and the changed documents are broadcast, as the aggregator would. Each stdin line
//! `push <status>` applies an INSERT with that status now, so a test can make a known value
//! appear. `STREAMLENS_SITE_ROOT` overrides the site root (default `target/site`).

use std::{
    collections::BTreeMap,
    io::BufRead,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use streamlens_core::{
    aggregate::{AggQuery, AggregateDoc, AggregateReader, PipelineInfo, ALL_DIMENSION},
    Error,
};
use streamlens_dashboard::server::{no_changes, no_query, router, DashboardState};
use tokio::sync::broadcast;

const PIPELINE: &str = "orders";
const WINDOWS: [(&str, i64); 2] = [("1m", 60_000), ("5m", 300_000)];
const STATUSES: [&str; 4] = ["pending", "paid", "shipped", "cancelled"];

/// Aggregates kept in memory, keyed by document id.
#[derive(Default)]
struct Memory {
    docs: RwLock<BTreeMap<String, AggregateDoc>>,
}

#[async_trait::async_trait]
impl AggregateReader for Memory {
    async fn query(&self, query: &AggQuery) -> Result<Vec<AggregateDoc>, Error> {
        let docs = self
            .docs
            .read()
            .map_err(|_| Error::Store("the demo store is poisoned".into()))?;
        let mut found: Vec<AggregateDoc> = docs
            .values()
            .filter(|d| query.matches(d))
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            (a.window_start, &a.dimension, &a.value).cmp(&(b.window_start, &b.dimension, &b.value))
        });
        Ok(found)
    }
}

/// What happened to one order.
#[derive(Clone, Copy)]
enum Change {
    Insert,
    Modify,
    Remove,
}

impl Memory {
    /// Applies one change of an order with `status` and `cents` at `at` (epoch ms) to every
    /// window size and to the status and `_all` groups; returns the changed documents.
    fn apply(&self, at: i64, status: &str, change: Change, cents: i64) -> Vec<AggregateDoc> {
        let Ok(mut docs) = self.docs.write() else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (window, size) in WINDOWS {
            let start = at - at.rem_euclid(size);
            for (dimension, value) in [("status", status), (ALL_DIMENSION, ALL_DIMENSION)] {
                let id =
                    streamlens_core::aggregate::doc_id(PIPELINE, window, start, dimension, value);
                let doc = docs.entry(id).or_insert_with(|| AggregateDoc {
                    pipeline: PIPELINE.into(),
                    window: window.into(),
                    window_start: start,
                    window_end: start + size,
                    dimension: dimension.into(),
                    value: value.into(),
                    inserts: 0,
                    modifies: 0,
                    removes: 0,
                    net_count: 0,
                    sums: BTreeMap::new(),
                    version: 0,
                    ..AggregateDoc::default()
                });
                let delta = match change {
                    Change::Insert => {
                        doc.inserts += 1;
                        doc.net_count += 1;
                        cents
                    }
                    Change::Modify => {
                        doc.modifies += 1;
                        cents / 10
                    }
                    Change::Remove => {
                        doc.removes += 1;
                        doc.net_count -= 1;
                        -cents
                    }
                };
                let sum = doc
                    .sums
                    .entry("amount".into())
                    .or_insert_with(|| "0.00".into());
                *sum = cents_to_decimal(decimal_to_cents(sum) + delta);
                doc.version += 1;
                changed.push(doc.clone());
            }
        }
        changed
    }
}

fn decimal_to_cents(s: &str) -> i64 {
    let negative = s.starts_with('-');
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let cents = digits.parse::<i64>().unwrap_or(0);
    if negative {
        -cents
    } else {
        cents
    }
}

fn cents_to_decimal(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// A tiny deterministic random source (xorshift).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// A random change of a random order.
    fn event(&mut self) -> (&'static str, Change, i64) {
        let status = STATUSES[self.roll(STATUSES.len() as u64) as usize];
        let change = match self.roll(10) {
            0..=5 => Change::Insert,
            6..=8 => Change::Modify,
            _ => Change::Remove,
        };
        (status, change, 500 + self.roll(20_000) as i64)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3100".into());
    let site_root = std::env::var_os("STREAMLENS_SITE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/site"));

    let store = Arc::new(Memory::default());
    let mut dice = Dice(0x5eed_cafe_f00d);
    let now = now_ms();
    for minute in (1..=25).rev() {
        for k in 0..(3 + dice.roll(6)) {
            let (status, change, cents) = dice.event();
            store.apply(
                now - minute * 60_000 + k as i64 * 7_000,
                status,
                change,
                cents,
            );
        }
    }

    let (updates, _) = broadcast::channel::<Arc<Vec<AggregateDoc>>>(256);
    // The health strip: no shards (like an archive source), the events applied live.
    let events = Arc::new(AtomicU64::new(0));
    let health = {
        let events = events.clone();
        Arc::new(move || {
            streamlens_core::PipelineHealth::new(
                false,
                Vec::new(),
                events.load(Ordering::Relaxed),
                0,
                now_ms(),
            )
        })
    };
    let app = router(DashboardState {
        reader: store.clone(),
        updates: updates.clone(),
        info: PipelineInfo {
            name: PIPELINE.into(),
            windows: WINDOWS.iter().map(|(w, _)| (*w).to_owned()).collect(),
            dimensions: vec!["status".into()],
            metrics: vec!["amount".into()],
            source: "demo (in-memory, one event per second)".into(),
            store: "memory".into(),
        },
        site_root,
        health,
        query: no_query(),
        changes: no_changes(),
        replays: streamlens_dashboard::server::no_replays(),
    });

    // One random change per second.
    {
        let (store, updates, events) = (store.clone(), updates.clone(), events.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let (status, change, cents) = dice.event();
                let changed = store.apply(now_ms(), status, change, cents);
                events.fetch_add(1, Ordering::Relaxed);
                // No receivers (no page open) is fine.
                let _ = updates.send(Arc::new(changed));
            }
        });
    }

    // `push <status>` on stdin: an INSERT with that status, now.
    {
        let (store, updates) = (store.clone(), updates.clone());
        let events = events.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if let Some(status) = line.trim().strip_prefix("push ") {
                    let changed = store.apply(now_ms(), status.trim(), Change::Insert, 4_200);
                    events.fetch_add(1, Ordering::Relaxed);
                    let _ = updates.send(Arc::new(changed));
                    println!("PUSHED {}", status.trim());
                }
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!("dashboard on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
