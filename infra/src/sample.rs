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

/// What [`write_stream`] generates: a long orders change stream for benchmarks.
///
/// Like the sample, orders are placed, paid, shipped and delivered or have their amount
/// corrected, and are removed (a tenth of the removals by TTL). Each order lives on one of
/// `shards` shards (as an item lives on one partition); the stream interleaves the shards the way
/// a reader of a multi-shard stream sees them: each shard lags behind by its own, changing delay
/// of up to `disorder_secs`, so records arrive out of event-time order by up to that much, while
/// every shard stays in order (sequence numbers and times ascending). Memory is bounded by
/// `max_live` orders plus the records of `disorder_secs` seconds, never by `records`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpec {
    /// Records to write.
    pub records: u64,
    /// Random seed: the same spec always writes the same bytes.
    pub seed: u64,
    /// Event time of the first change, epoch ms.
    pub start_ms: i64,
    /// Changes per second of event time, on average.
    pub events_per_sec: u32,
    /// Shards interleaved.
    pub shards: u32,
    /// How far (seconds) a record may arrive behind a later one of another shard.
    pub disorder_secs: u32,
    /// Orders alive at once, at most (a placement beyond it removes an order instead).
    pub max_live: usize,
}

impl Default for StreamSpec {
    fn default() -> Self {
        StreamSpec {
            records: 1_000_000,
            seed: 7,
            start_ms: 1_767_225_600_000,
            events_per_sec: 1000,
            shards: 4,
            disorder_secs: 5,
            max_live: 100_000,
        }
    }
}

/// What [`write_stream`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// Records written.
    pub records: u64,
    /// INSERT records.
    pub inserts: u64,
    /// MODIFY records.
    pub modifies: u64,
    /// REMOVE records (TTL ones included).
    pub removes: u64,
    /// Uncompressed bytes written.
    pub bytes: u64,
    /// Earliest event time, epoch ms.
    pub min_time_ms: i64,
    /// Latest event time, epoch ms.
    pub max_time_ms: i64,
    /// The largest amount by which a record's time was behind an earlier record's (ms).
    pub max_disorder_ms: i64,
}

const STATUSES: [&str; 4] = ["pending", "paid", "shipped", "delivered"];

/// One live order, compactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Order {
    id: u64,
    status: u8,
    region: u8,
    amount_cents: u32,
    items: u8,
}

/// One generated change, waiting for its shard to deliver it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// When the shard's reader delivers it (ms), then the order of generation.
    deliver_ms: i64,
    index: u64,
    time_ms: i64,
    kind: Kind,
    shard: u32,
    old: Option<Order>,
    new: Option<Order>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Modify,
    Remove,
    TtlRemove,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_ms, self.index) == (other.deliver_ms, other.index)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    // Reversed: the heap pops the earliest delivery first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.deliver_ms, other.index).cmp(&(self.deliver_ms, self.index))
    }
}

/// The benchmark orders stream as an iterator of changes in delivery order.
struct OrdersStream {
    spec: StreamSpec,
    rng: StdRng,
    live: Vec<Order>,
    next_id: u64,
    generated: u64,
    time_us: i64,
    shard_delay_ms: Vec<i64>,
    shard_last_ms: Vec<i64>,
    shard_seq: Vec<u64>,
    heap: std::collections::BinaryHeap<Pending>,
}

impl OrdersStream {
    fn new(spec: StreamSpec) -> Self {
        let shards = spec.shards.max(1) as usize;
        OrdersStream {
            spec,
            rng: StdRng::seed_from_u64(spec.seed),
            live: Vec::new(),
            next_id: 1,
            generated: 0,
            time_us: spec.start_ms * 1000,
            shard_delay_ms: vec![0; shards],
            shard_last_ms: vec![i64::MIN; shards],
            shard_seq: vec![100_000_000; shards],
            heap: std::collections::BinaryHeap::new(),
        }
    }

    fn shard_of(&self, id: u64) -> u32 {
        ((id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % self.shard_delay_ms.len() as u64) as u32
    }

    fn new_order(&mut self) -> Order {
        let id = self.next_id;
        self.next_id += 1;
        Order {
            id,
            status: 0,
            region: self.rng.random_range(0..REGIONS.len()) as u8,
            amount_cents: self.rng.random_range(500..50_000),
            items: self.rng.random_range(1..6),
        }
    }

    /// Generates the next change in event-time order.
    fn generate(&mut self) -> Pending {
        let rate = u64::from(self.spec.events_per_sec.max(1));
        self.time_us += self.rng.random_range(0..=2_000_000 / rate) as i64;
        // Once a second of event time, every shard's reader lag changes.
        if self.generated.is_multiple_of(rate) {
            let max = i64::from(self.spec.disorder_secs) * 1000;
            for delay in &mut self.shard_delay_ms {
                *delay = self.rng.random_range(0..=max);
            }
        }
        let roll: f64 = self.rng.random();
        let full = self.live.len() >= self.spec.max_live.max(5);
        let (kind, old, new) = if self.live.len() < 5 || (roll < 0.45 && !full) {
            let order = self.new_order();
            self.live.push(order);
            (Kind::Insert, None, Some(order))
        } else {
            let at = self.rng.random_range(0..self.live.len());
            let old = self.live[at];
            if (0.45..0.85).contains(&roll) {
                let mut new = old;
                if self.rng.random_bool(0.2) {
                    new.amount_cents = self.rng.random_range(500..50_000);
                } else {
                    new.status = (old.status + 1).min(3);
                }
                self.live[at] = new;
                (Kind::Modify, Some(old), Some(new))
            } else {
                self.live.swap_remove(at);
                let kind = if self.rng.random_bool(0.1) {
                    Kind::TtlRemove
                } else {
                    Kind::Remove
                };
                (kind, Some(old), None)
            }
        };
        let id = new.or(old).map_or(0, |o| o.id);
        let shard = self.shard_of(id);
        // DynamoDB's ApproximateCreationDateTime has second precision.
        let time_ms = self.time_us / 1000 / 1000 * 1000;
        let s = shard as usize;
        let deliver_ms = (self.time_us / 1000 + self.shard_delay_ms[s]).max(self.shard_last_ms[s]);
        self.shard_last_ms[s] = deliver_ms;
        let index = self.generated;
        self.generated += 1;
        Pending {
            deliver_ms,
            index,
            time_ms,
            kind,
            shard,
            old,
            new,
        }
    }
}

/// A change ready to be written: its shard's sequence number is assigned.
struct Delivered {
    change: Pending,
    sequence: u64,
}

impl Iterator for OrdersStream {
    type Item = Delivered;

    fn next(&mut self) -> Option<Delivered> {
        // Everything generated later is delivered at or after its own time, so a pending change
        // due by the newest time is final.
        while self.generated < self.spec.records
            && self
                .heap
                .peek()
                .is_none_or(|p| p.deliver_ms > self.time_us / 1000)
        {
            let change = self.generate();
            self.heap.push(change);
        }
        let change = self.heap.pop()?;
        let seq = &mut self.shard_seq[change.shard as usize];
        let sequence = *seq;
        *seq += 1;
        Some(Delivered { change, sequence })
    }
}

fn order_item(o: &Order) -> Item {
    order(
        o.id,
        STATUSES[o.status as usize],
        REGIONS[o.region as usize],
        i64::from(o.amount_cents),
        i64::from(o.items),
    )
}

impl Delivered {
    /// The change as the rest of streamlens sees it.
    fn event(&self) -> ChangeEvent {
        let c = &self.change;
        let image = c.new.or(c.old).expect("every change has an image");
        ChangeEvent {
            event_id: format!("bench-{:010}", c.index),
            kind: match c.kind {
                Kind::Insert => EventKind::Insert,
                Kind::Modify => EventKind::Modify,
                Kind::Remove | Kind::TtlRemove => EventKind::Remove,
            },
            keys: BTreeMap::from([(
                "pk".to_owned(),
                AttributeValue::S(format!("order#{:06}", image.id)),
            )]),
            old_image: c.old.as_ref().map(order_item),
            new_image: c.new.as_ref().map(order_item),
            event_time_ms: c.time_ms,
            sequence_number: format!("{:021}", self.sequence),
            shard_id: format!("shardId-{:08}-bench", c.shard),
            size_bytes: 120,
            view_type: Some("NEW_AND_OLD_IMAGES".to_owned()),
            ttl_delete: c.kind == Kind::TtlRemove,
        }
    }

    /// Appends the record's line: exactly what serde writes for [`Delivered::event`], only
    /// without building it.
    fn write_line(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        fn image(out: &mut Vec<u8>, name: &str, order: &Order) {
            let _ = write!(
                out,
                r#","{name}":{{"amount":{{"N":"{}.{:02}"}},"items":{{"N":"{}"}},"pk":{{"S":"order#{:06}"}},"region":{{"S":"{}"}},"status":{{"S":"{}"}}}}"#,
                order.amount_cents / 100,
                order.amount_cents % 100,
                order.items,
                order.id,
                REGIONS[order.region as usize],
                STATUSES[order.status as usize],
            );
        }
        let c = &self.change;
        let id = c.new.or(c.old).map_or(0, |o| o.id);
        let name = match c.kind {
            Kind::Insert => "INSERT",
            Kind::Modify => "MODIFY",
            Kind::Remove | Kind::TtlRemove => "REMOVE",
        };
        let _ = write!(
            out,
            r#"{{"eventID":"bench-{:010}","eventName":"{name}","eventVersion":"1.1","eventSource":"aws:dynamodb","dynamodb":{{"ApproximateCreationDateTime":{},"Keys":{{"pk":{{"S":"order#{id:06}"}}}}"#,
            c.index,
            c.time_ms / 1000,
        );
        if let Some(new) = &c.new {
            image(out, "NewImage", new);
        }
        if let Some(old) = &c.old {
            image(out, "OldImage", old);
        }
        let _ = write!(
            out,
            r#","SequenceNumber":"{:021}","SizeBytes":120,"StreamViewType":"NEW_AND_OLD_IMAGES"}}"#,
            self.sequence
        );
        if c.kind == Kind::TtlRemove {
            out.extend_from_slice(
                br#","userIdentity":{"type":"Service","principalId":"dynamodb.amazonaws.com"}"#,
            );
        }
        let _ = writeln!(out, r#","shardId":"shardId-{:08}-bench"}}"#, c.shard);
    }
}

/// The changes [`write_stream`] writes, in file order (for tests and small runs: this one does
/// hold them all).
pub fn stream_events(spec: StreamSpec) -> Vec<ChangeEvent> {
    OrdersStream::new(spec).map(|d| d.event()).collect()
}

/// Writes the benchmark stream to `path` as newline-delimited Streams records, gzip-compressed
/// (fastest level) when the name ends in `.gz`. Streams: memory does not grow with `records`.
pub fn write_stream(path: &Path, spec: StreamSpec) -> Result<StreamSummary, Error> {
    use std::io::Write;
    let err = |source| {
        Error::Sample(streamlens_ingest::Error::Archive {
            path: path.display().to_string(),
            source,
        })
    };
    let file =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(err)?);
    let gzip = path.extension().is_some_and(|e| e == "gz");
    let (mut plain, mut compressed) = if gzip {
        let level = flate2::Compression::fast();
        (None, Some(flate2::write::GzEncoder::new(file, level)))
    } else {
        (Some(file), None)
    };
    let mut write = |bytes: &[u8]| match (&mut plain, &mut compressed) {
        (Some(w), _) => w.write_all(bytes),
        (_, Some(w)) => w.write_all(bytes),
        _ => Ok(()),
    };
    let mut summary = StreamSummary {
        min_time_ms: i64::MAX,
        max_time_ms: i64::MIN,
        ..StreamSummary::default()
    };
    let mut line = Vec::with_capacity(1024);
    let mut buffer = Vec::with_capacity(1 << 16);
    for delivered in OrdersStream::new(spec) {
        let c = &delivered.change;
        summary.records += 1;
        match c.kind {
            Kind::Insert => summary.inserts += 1,
            Kind::Modify => summary.modifies += 1,
            Kind::Remove | Kind::TtlRemove => summary.removes += 1,
        }
        if summary.records > 1 {
            summary.max_disorder_ms = summary.max_disorder_ms.max(summary.max_time_ms - c.time_ms);
        }
        summary.min_time_ms = summary.min_time_ms.min(c.time_ms);
        summary.max_time_ms = summary.max_time_ms.max(c.time_ms);
        line.clear();
        delivered.write_line(&mut line);
        summary.bytes += line.len() as u64;
        buffer.extend_from_slice(&line);
        if buffer.len() >= 1 << 16 {
            write(&buffer).map_err(err)?;
            buffer.clear();
        }
    }
    write(&buffer).map_err(err)?;
    let done = match (plain, compressed) {
        (Some(mut w), _) => w.flush(),
        (_, Some(w)) => w.finish().and_then(|mut inner| inner.flush()),
        _ => Ok(()),
    };
    done.map_err(err)?;
    if summary.records == 0 {
        summary.min_time_ms = 0;
        summary.max_time_ms = 0;
    }
    Ok(summary)
}
