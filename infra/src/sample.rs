//! The sample orders change stream.
//!
//! A small simulation of an orders table: orders are placed (INSERT, status `pending`), paid and
//! shipped or have their amount corrected (MODIFY), and cancelled or archived (REMOVE). The same
//! seed always gives the same stream, so the file in `data/sample/` can be regenerated exactly.

use std::{collections::BTreeMap, path::Path};

use rand::{rngs::StdRng, Rng, SeedableRng};
use streamlens_core::{AttributeValue, ChangeEvent, EventKind, Item};
use streamlens_ingest::archive::ArchiveWriter;

use crate::Error;

const REGIONS: [&str; 4] = ["eu-west", "us-east", "ap-south", "sa-east"];

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct SampleSpec {
    /// Number of changes.
    pub changes: usize,
    /// Random seed.
    pub seed: u64,
    /// Event time of the first change, epoch ms.
    pub start_ms: i64,
    /// Mean spacing of changes in ms.
    pub mean_gap_ms: u64,
}

impl Default for SampleSpec {
    fn default() -> Self {
        SampleSpec {
            changes: 3000,
            seed: 7,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            mean_gap_ms: 200,
        }
    }
}

fn order(id: u64, status: &str, region: &str, amount_cents: i64, items: i64) -> Item {
    BTreeMap::from([
        ("pk".to_owned(), AttributeValue::S(format!("order#{id:06}"))),
        ("status".to_owned(), AttributeValue::S(status.to_owned())),
        ("region".to_owned(), AttributeValue::S(region.to_owned())),
        (
            "amount".to_owned(),
            AttributeValue::N(format!("{}.{:02}", amount_cents / 100, amount_cents % 100)),
        ),
        ("items".to_owned(), AttributeValue::N(items.to_string())),
    ])
}

/// Generates the changes of the sample.
pub fn generate(spec: SampleSpec) -> Vec<ChangeEvent> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut live: BTreeMap<u64, Item> = BTreeMap::new();
    // The live ids in a vector too, so a random one is picked in O(1).
    let mut ids: Vec<u64> = Vec::new();
    let mut slot: BTreeMap<u64, usize> = BTreeMap::new();
    let mut events = Vec::with_capacity(spec.changes);
    let mut next_id = 1u64;
    let mut time_ms = spec.start_ms;
    for seq in 0..spec.changes {
        time_ms += rng.random_range(0..=2 * spec.mean_gap_ms) as i64;
        let roll: f64 = rng.random();
        let (kind, old, new) = if live.len() < 5 || roll < 0.45 {
            let id = next_id;
            next_id += 1;
            let region = REGIONS[rng.random_range(0..REGIONS.len())];
            let item = order(
                id,
                "pending",
                region,
                rng.random_range(500..50_000),
                rng.random_range(1..6),
            );
            live.insert(id, item.clone());
            slot.insert(id, ids.len());
            ids.push(id);
            (EventKind::Insert, None, Some(item))
        } else {
            let id = ids[rng.random_range(0..ids.len())];
            let old = live[&id].clone();
            if roll < 0.85 {
                let mut new = old.clone();
                let status = match old.get("status") {
                    Some(AttributeValue::S(s)) if s == "pending" => "paid",
                    Some(AttributeValue::S(s)) if s == "paid" => "shipped",
                    _ => "delivered",
                };
                if rng.random_bool(0.2) {
                    // An amount correction keeps the status.
                    let cents = rng.random_range(500..50_000);
                    new.insert(
                        "amount".to_owned(),
                        AttributeValue::N(format!("{}.{:02}", cents / 100, cents % 100)),
                    );
                } else {
                    new.insert("status".to_owned(), AttributeValue::S(status.to_owned()));
                }
                live.insert(id, new.clone());
                (EventKind::Modify, Some(old), Some(new))
            } else {
                live.remove(&id);
                let at = slot.remove(&id).expect("live ids have a slot");
                ids.swap_remove(at);
                if let Some(moved) = ids.get(at) {
                    slot.insert(*moved, at);
                }
                (EventKind::Remove, Some(old), None)
            }
        };
        let image = new
            .as_ref()
            .or(old.as_ref())
            .expect("every change has an image");
        let keys = BTreeMap::from([("pk".to_owned(), image["pk"].clone())]);
        events.push(ChangeEvent {
            event_id: format!("sample-{seq:06}"),
            kind,
            keys,
            old_image: old,
            new_image: new,
            // DynamoDB's ApproximateCreationDateTime has second precision.
            event_time_ms: time_ms / 1000 * 1000,
            sequence_number: format!("{:021}", 100_000_000 + seq as u64),
            shard_id: "shardId-00000001-sample".to_owned(),
            size_bytes: 120,
            view_type: Some("NEW_AND_OLD_IMAGES".to_owned()),
            ttl_delete: false,
        });
    }
    events
}

/// Writes the sample as an archive (gzip when the name ends in `.gz`).
pub fn write(path: &Path, spec: SampleSpec) -> Result<usize, Error> {
    let events = generate(spec);
    let mut writer = ArchiveWriter::create(path)?;
    for event in &events {
        writer.write(event)?;
    }
    writer.finish()?;
    Ok(events.len())
}
