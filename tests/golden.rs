//! Golden files: a fixed input archive (`tests/golden/orders.ndjson.gz`, 4000 changes out of
//! event-time order by up to 40 s) and pipeline (`tests/golden/pipeline.toml`: two dimensions, a
//! filter, every metric kind, a tumbling and a hopping window), with the expected aggregates
//! (`tests/golden/expected.json`) computed once by the plain computation below — serde_json
//! values, `rust_decimal`, one change at a time, nothing from streamlens' decoder or engine.
//!
//! The same input must give exactly the expected documents when it is run straight through the
//! pipeline, in many small batches, and stopped half-way and resumed from the stored checkpoint.
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the input and the expected file (review
//! the diff: the expected file must only change when the semantics do).

mod common;

use common::{
    golden, golden_config as config, golden_contributions, golden_input as read_input, golden_s,
    GoldenAcc,
};

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::Path,
};

use rust_decimal::Decimal;
use serde_json::{json, Value};
use streamlens_aggregator::{store::embedded::EmbeddedStore, Store, WindowEngine};
use streamlens_core::{AggQuery, AggregateDoc, AggregateReader, ChangeEvent, StreamRecord};
use tokio_util::sync::CancellationToken;

/// The input, generated once: items change status, region, amount and channel; times drift
/// forward with up to 40 s of disorder between different items (never within one item).
fn generate() -> Vec<Value> {
    let mut state = 2026u64;
    let mut next = move |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    let statuses = ["pending", "paid", "shipped", "returned"];
    let regions = ["eu-west", "us-east", "ap-south"];
    let channels = ["web", "app", "test"];
    let mut live: BTreeMap<u64, (Value, i64)> = BTreeMap::new();
    let mut clock = 1_767_225_600i64; // 2026-01-01T00:00:00Z
    let mut out = Vec::new();
    for seq in 0..4000u64 {
        clock += next(3) as i64;
        let id = next(300);
        let mut image = json!({
            "pk": { "S": format!("order#{id:04}") },
            "status": { "S": statuses[next(4) as usize] },
            "amount": { "N": format!("{}.{:02}", next(500), next(100)) },
            "channel": { "S": channels[next(3) as usize] },
            "customer": { "S": format!("c{}", next(40)) },
        });
        if next(5) != 0 {
            image["region"] = json!({ "S": regions[next(3) as usize] });
        }
        if next(4) != 0 {
            image["items"] = json!({ "N": (1 + next(6)).to_string() });
        }
        // Disorder across items, never within one: an item's time never goes back.
        let floor = live.get(&id).map_or(i64::MIN, |(_, t)| *t);
        let time = (clock - next(40) as i64).max(floor);
        let (name, old, new) = match live.remove(&id) {
            None => ("INSERT", None, Some(image)),
            Some((old, _)) if next(5) == 0 => ("REMOVE", Some(old), None),
            Some((old, _)) => ("MODIFY", Some(old), Some(image)),
        };
        if let Some(new) = &new {
            live.insert(id, (new.clone(), time));
        }
        let mut body = json!({
            "ApproximateCreationDateTime": time,
            "Keys": { "pk": { "S": format!("order#{id:04}") } },
            "SequenceNumber": format!("{:021}", 100_000_000 + seq),
            "SizeBytes": 100,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        });
        if let Some(old) = old {
            body["OldImage"] = old;
        }
        if let Some(new) = new {
            body["NewImage"] = new;
        }
        out.push(json!({
            "eventID": format!("golden-{seq}"),
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "dynamodb": body,
            "shardId": format!("shardId-{}", id % 3),
        }));
    }
    out
}

/// One expected cell: exactly what a document holds.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Cell {
    inserts: i64,
    modifies: i64,
    removes: i64,
    net_count: i64,
    amount_sum: String,
    items_count: i64,
    avg_sum: String,
    avg_count: i64,
    amount_min: Option<String>,
    amount_max: Option<String>,
    customers: BTreeSet<String>,
}

type Cells = BTreeMap<String, Cell>;

fn key(window: &str, start: i64, dimension: &str, value: &str) -> String {
    format!("{window}|{start}|{dimension}|{value}")
}

/// The plain computation of `tests/golden/pipeline.toml` over the input.
fn expected_of(records: &[Value]) -> Cells {
    let mut cells: BTreeMap<String, GoldenAcc> = BTreeMap::new();
    for (t, image, sign, kind) in golden_contributions(records) {
        let minute = t - t.rem_euclid(60_000);
        let mut windows = vec![("1m".to_owned(), minute)];
        for hop in 0..5 {
            windows.push(("5m/1m".to_owned(), minute - hop * 60_000));
        }
        let groups = [
            ("_all".to_owned(), "_all".to_owned()),
            ("status".to_owned(), golden_s(image, "status").unwrap()),
            (
                "region".to_owned(),
                golden_s(image, "region").unwrap_or_else(|| "(missing)".into()),
            ),
        ];
        for (window, start) in &windows {
            for (dimension, value) in &groups {
                cells
                    .entry(key(window, *start, dimension, value))
                    .or_default()
                    .take(image, sign, kind);
            }
        }
    }
    let text = |d: Decimal| d.normalize().to_string();
    cells
        .into_iter()
        .map(|(k, a)| {
            (
                k,
                Cell {
                    inserts: a.kinds[0],
                    modifies: a.kinds[1],
                    removes: a.kinds[2],
                    net_count: a.net,
                    amount_sum: text(a.sum),
                    items_count: a.items,
                    avg_sum: text(a.sum),
                    // `avg` counts images with the averaged attribute: all have `amount`.
                    avg_count: a.net,
                    amount_min: a.min.map(text),
                    amount_max: a.max.map(text),
                    customers: a.customers,
                },
            )
        })
        .collect()
}

fn cells_of(docs: &[AggregateDoc]) -> Cells {
    docs.iter()
        .map(|d| {
            (
                key(&d.window, d.window_start, &d.dimension, &d.value),
                Cell {
                    inserts: d.inserts,
                    modifies: d.modifies,
                    removes: d.removes,
                    net_count: d.net_count,
                    amount_sum: d.sums["amount"].clone(),
                    items_count: d.counts["items"],
                    avg_sum: d.sums["avg_amount"].clone(),
                    avg_count: d.counts["avg_amount"],
                    amount_min: d.mins.get("min_amount").cloned(),
                    amount_max: d.maxs.get("max_amount").cloned(),
                    customers: d.distinct["customers"].iter().cloned().collect(),
                },
            )
        })
        .collect()
}

fn expected() -> Cells {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let records = generate();
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(golden("orders.ndjson.gz")).unwrap(),
            flate2::Compression::best(),
        );
        for r in &records {
            writeln!(gz, "{}", serde_json::to_string(r).unwrap()).unwrap();
        }
        gz.finish().unwrap();
        let cells = expected_of(&records);
        std::fs::write(
            golden("expected.json"),
            serde_json::to_string_pretty(&cells).unwrap() + "\n",
        )
        .unwrap();
    }
    let expected: Cells =
        serde_json::from_str(&std::fs::read_to_string(golden("expected.json")).unwrap()).unwrap();
    // The checked-in expectation is what the plain computation gives for the checked-in input.
    let (records, _) = read_input();
    assert_eq!(
        expected_of(&records),
        expected,
        "expected.json is not the plain computation of orders.ndjson.gz"
    );
    expected
}

async fn stored(path: &Path) -> Vec<AggregateDoc> {
    EmbeddedStore::open(path)
        .unwrap()
        .query(&AggQuery::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn straight_through_the_pipeline() {
    let expected = expected();
    let dir = tempfile::tempdir().unwrap();
    let summary = streamlens::app::run(config(dir.path(), 1000), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.source.events, 4000);
    assert_eq!(summary.quarantined, 0);
    let docs = stored(&dir.path().join("golden.redb")).await;
    assert_eq!(cells_of(&docs), expected);
}

#[tokio::test]
async fn in_many_small_batches() {
    let expected = expected();
    let dir = tempfile::tempdir().unwrap();
    streamlens::app::run(config(dir.path(), 7), CancellationToken::new())
        .await
        .unwrap();
    let docs = stored(&dir.path().join("golden.redb")).await;
    assert_eq!(cells_of(&docs), expected);
}

/// Stopped after half the input with its windows and checkpoint stored; a new engine restores
/// the open windows from the store (as a restart does) and takes the rest.
#[tokio::test]
async fn stopped_and_resumed_from_a_checkpoint() {
    let expected = expected();
    let dir = tempfile::tempdir().unwrap();
    let spec = config(dir.path(), 1000).pipeline;
    let (_, text) = read_input();
    let events: Vec<ChangeEvent> = text
        .lines()
        .map(|l| ChangeEvent::try_from(StreamRecord::from_json(l).unwrap()).unwrap())
        .collect();
    let (first, second) = events.split_at(events.len() / 2);
    let path = dir.path().join("resume.redb");
    let checkpoint = {
        let store = EmbeddedStore::open(&path).unwrap();
        let mut engine = WindowEngine::new(spec.clone(), 1).unwrap();
        for chunk in first.chunks(333) {
            assert!(engine.apply(chunk).unwrap().is_empty());
            let checkpoint = streamlens_aggregator::store::StoredCheckpoint {
                pipeline: spec.name.clone(),
                max_event_time: engine.max_event_time(),
                version: engine.version() + 1,
                ..Default::default()
            };
            store
                .write(&engine.take_changed(), Some(&checkpoint))
                .await
                .unwrap();
        }
        store.checkpoint(&spec.name).await.unwrap().unwrap()
    };
    let store = EmbeddedStore::open(&path).unwrap();
    let open = store
        .query(&AggQuery {
            from: Some(checkpoint.max_event_time - spec.open_horizon_ms().unwrap()),
            worker: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut engine = WindowEngine::new(spec, 1).unwrap();
    engine
        .restore(&open, checkpoint.max_event_time, checkpoint.version)
        .unwrap();
    for chunk in second.chunks(333) {
        assert!(engine.apply(chunk).unwrap().is_empty());
        store.write(&engine.take_changed(), None).await.unwrap();
    }
    let docs = store.query(&AggQuery::default()).await.unwrap();
    assert_eq!(cells_of(&docs), expected);
}
