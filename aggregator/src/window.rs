//! The tumbling-window engine: exact, event-time, with retractions.
//!
//! Every change contributes signed rows to the windows its event time falls in, one row per window
//! size and per group (each dimension's value, plus the `_all` total):
//!
//! | change | rows                                   | kind counted on         |
//! |--------|----------------------------------------|-------------------------|
//! | INSERT | +1 × new image                         | the new image's group   |
//! | REMOVE | −1 × old image                         | the old image's group   |
//! | MODIFY | −1 × old image, +1 × new image         | the new image's group   |
//!
//! so a MODIFY that changes `status` from `open` to `paid` moves the item (and its amounts) from
//! one group to the other. A micro-batch of rows becomes a polars `DataFrame`, is summed per
//! (window size, window start, dimension, value) in one `group_by`, and the sums are merged into the
//! engine's state. Metric values are fixed-point `i128` (see [`crate::decimal`]): exact.
//!
//! The state keeps windows up to `retention` behind the newest event time; a change older than that
//! is rejected as late (quarantined by the caller) rather than rewriting a stored window with a
//! partial sum. [`WindowEngine::take_changed`] returns the documents changed since the last call,
//! each with a higher version than any before and with its values as of its previous emission
//! ([`AggregateDoc::prev`]), so a store can undo a write that no checkpoint covers.
//!
//! An engine of a worker process ([`WindowEngine::with_worker`]) aggregates only the changes it is
//! given and tags its documents with the worker's name: they are partial aggregates, which stores
//! add together with the other workers' at query time.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;
use streamlens_core::{
    aggregate::ALL_DIMENSION, attr::lookup, AggregateDoc, ChangeEvent, EventKind, Item, PrevValues,
};

use crate::{
    config::{PipelineSpec, WindowSize},
    decimal::{format_scaled, parse_scaled},
    Error,
};

/// The label of a group whose item lacks the dimension's attribute.
pub const MISSING: &str = "(missing)";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupKey {
    window: u32,
    start: i64,
    dimension: u32,
    value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Acc {
    inserts: i64,
    modifies: i64,
    removes: i64,
    net_count: i64,
    sums: Vec<i128>,
    /// The version the group was last emitted (or restored) with.
    version: u64,
}

/// A change the engine could not aggregate, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The change.
    pub event: ChangeEvent,
    /// Why.
    pub reason: String,
}

/// Counters of what the engine has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Changes aggregated.
    pub aggregated: u64,
    /// Changes of an unknown kind (counted, not aggregated).
    pub unknown_kind: u64,
    /// Changes rejected (late or undecodable values).
    pub rejected: u64,
}

/// One signed contribution of an image to the aggregates.
struct Contribution<'a> {
    sign: i64,
    image: &'a Item,
    insert: i64,
    modify: i64,
    remove: i64,
    values: Vec<i128>,
}

/// Rows of one micro-batch, column by column.
#[derive(Default)]
struct Rows {
    window: Vec<u32>,
    start: Vec<i64>,
    dimension: Vec<u32>,
    value: Vec<String>,
    inserts: Vec<i64>,
    modifies: Vec<i64>,
    removes: Vec<i64>,
    count: Vec<i64>,
    sums: Vec<Vec<i128>>,
}

/// Windowed aggregates of one pipeline.
pub struct WindowEngine {
    spec: PipelineSpec,
    windows: Vec<WindowSize>,
    retention_ms: i64,
    worker: String,
    groups: HashMap<GroupKey, Acc>,
    /// Groups changed since the last emission → their state as of that emission (`None`: new).
    changed: BTreeMap<GroupKey, Option<Acc>>,
    max_event_time: i64,
    version: u64,
    stats: EngineStats,
}

impl WindowEngine {
    /// An engine for a validated spec. `first_version` seeds the document versions; pass a clock
    /// reading so versions keep growing across restarts.
    pub fn new(spec: PipelineSpec, first_version: u64) -> Result<Self, Error> {
        let windows = spec.validate()?;
        let retention_ms = spec.retention_ms()?;
        Ok(WindowEngine {
            spec,
            windows,
            retention_ms,
            worker: String::new(),
            groups: HashMap::new(),
            changed: BTreeMap::new(),
            max_event_time: i64::MIN,
            version: first_version,
            stats: EngineStats::default(),
        })
    }

    /// The same engine as one worker of several sharing the pipeline: its documents carry the
    /// worker's name (and so have their own ids) and hold only the changes this engine is given.
    pub fn with_worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = worker.into();
        self
    }

    /// The spec the engine runs.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// The worker the engine's documents belong to; empty for a single process.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// What the engine has seen so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    fn contributions<'a>(&self, event: &'a ChangeEvent) -> Result<Vec<Contribution<'a>>, String> {
        let need = |image: Option<&'a Item>, which: &str| {
            image.ok_or_else(|| {
                format!(
                    "{} event without {which}: the stream must use the NEW_AND_OLD_IMAGES view",
                    event.kind.name()
                )
            })
        };
        let mut parts = match event.kind {
            EventKind::Insert => vec![(1, need(event.new_image.as_ref(), "NewImage")?, 1, 0, 0)],
            EventKind::Remove => vec![(-1, need(event.old_image.as_ref(), "OldImage")?, 0, 0, 1)],
            EventKind::Modify => vec![
                (-1, need(event.old_image.as_ref(), "OldImage")?, 0, 0, 0),
                (1, need(event.new_image.as_ref(), "NewImage")?, 0, 1, 0),
            ],
            EventKind::Unknown(_) => Vec::new(),
        };
        parts
            .drain(..)
            .map(|(sign, image, insert, modify, remove)| {
                let values = self
                    .spec
                    .metrics
                    .iter()
                    .map(|m| match lookup(image, &m.attribute) {
                        None | Some(streamlens_core::AttributeValue::Null(_)) => Ok(0),
                        Some(v) => {
                            let n = v.as_number().ok_or_else(|| {
                                format!(
                                    "metric `{}`: attribute `{}` is of type {}, not N",
                                    m.name,
                                    m.attribute,
                                    v.type_name()
                                )
                            })?;
                            parse_scaled(n, m.scale)
                                .map(|units| units * sign as i128)
                                .map_err(|e| format!("metric `{}`: {e}", m.name))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Contribution {
                    sign,
                    image,
                    insert,
                    modify,
                    remove,
                    values,
                })
            })
            .collect()
    }

    /// Aggregates a micro-batch. Changes that cannot be aggregated are returned, not applied.
    pub fn apply(&mut self, events: &[ChangeEvent]) -> Result<Vec<Rejected>, Error> {
        let mut rejected = Vec::new();
        let mut rows = Rows {
            sums: vec![Vec::new(); self.spec.metrics.len()],
            ..Rows::default()
        };
        for event in events {
            let horizon = self.max_event_time.saturating_sub(self.retention_ms);
            if let EventKind::Unknown(_) = event.kind {
                self.stats.unknown_kind += 1;
                continue;
            }
            if event.event_time_ms < horizon {
                rejected.push(Rejected {
                    event: event.clone(),
                    reason: format!(
                        "late: event time {} ms is more than the retention of {} behind the newest event",
                        event.event_time_ms, self.spec.retention
                    ),
                });
                continue;
            }
            let contributions = match self.contributions(event) {
                Ok(c) => c,
                Err(reason) => {
                    rejected.push(Rejected {
                        event: event.clone(),
                        reason,
                    });
                    continue;
                }
            };
            self.stats.aggregated += 1;
            self.max_event_time = self.max_event_time.max(event.event_time_ms);
            for c in &contributions {
                for (w, size) in self.windows.iter().enumerate() {
                    let start = event.event_time_ms.div_euclid(size.millis) * size.millis;
                    let all = std::iter::once((0u32, ALL_DIMENSION.to_owned()));
                    let dims = self.spec.dimensions.iter().enumerate().map(|(d, path)| {
                        let label =
                            lookup(c.image, path).map_or_else(|| MISSING.to_owned(), |v| v.label());
                        (d as u32 + 1, label)
                    });
                    for (dimension, value) in all.chain(dims) {
                        rows.window.push(w as u32);
                        rows.start.push(start);
                        rows.dimension.push(dimension);
                        rows.value.push(value);
                        rows.inserts.push(c.insert);
                        rows.modifies.push(c.modify);
                        rows.removes.push(c.remove);
                        rows.count.push(c.sign);
                        for (column, v) in rows.sums.iter_mut().zip(&c.values) {
                            column.push(*v);
                        }
                    }
                }
            }
        }
        self.stats.rejected += rejected.len() as u64;
        if !rows.window.is_empty() {
            self.merge(rows)?;
        }
        self.evict();
        Ok(rejected)
    }

    /// Sums the rows per group with polars and merges the sums into the state.
    fn merge(&mut self, rows: Rows) -> Result<(), Error> {
        let metric_columns: Vec<String> = (0..rows.sums.len()).map(|i| format!("m{i}")).collect();
        let mut columns = vec![
            Column::new("w".into(), rows.window),
            Column::new("ws".into(), rows.start),
            Column::new("d".into(), rows.dimension),
            Column::new("v".into(), rows.value),
            Column::new("ins".into(), rows.inserts),
            Column::new("mods".into(), rows.modifies),
            Column::new("rems".into(), rows.removes),
            Column::new("cnt".into(), rows.count),
        ];
        for (name, values) in metric_columns.iter().zip(rows.sums) {
            columns.push(Column::new(name.as_str().into(), values));
        }
        let frame = DataFrame::new_infer_height(columns)?;
        let mut aggs = vec![
            col("ins").sum(),
            col("mods").sum(),
            col("rems").sum(),
            col("cnt").sum(),
        ];
        aggs.extend(metric_columns.iter().map(|m| col(m.as_str()).sum()));
        let summed = frame
            .lazy()
            .group_by([col("w"), col("ws"), col("d"), col("v")])
            .agg(aggs)
            .collect()?;
        let w = summed.column("w")?.u32()?;
        let ws = summed.column("ws")?.i64()?;
        let d = summed.column("d")?.u32()?;
        let v = summed.column("v")?.str()?;
        let ins = summed.column("ins")?.i64()?;
        let mods = summed.column("mods")?.i64()?;
        let rems = summed.column("rems")?.i64()?;
        let cnt = summed.column("cnt")?.i64()?;
        let sums = metric_columns
            .iter()
            .map(|m| summed.column(m).and_then(|c| c.i128().cloned()))
            .collect::<Result<Vec<_>, _>>()?;
        let metrics = self.spec.metrics.len();
        for row in 0..summed.height() {
            let key = GroupKey {
                window: w.get(row).unwrap_or_default(),
                start: ws.get(row).unwrap_or_default(),
                dimension: d.get(row).unwrap_or_default(),
                value: v.get(row).unwrap_or_default().to_owned(),
            };
            if !self.changed.contains_key(&key) {
                // First change of the group since it was last emitted: remember what it was.
                self.changed
                    .insert(key.clone(), self.groups.get(&key).cloned());
            }
            let acc = self.groups.entry(key).or_insert_with(|| Acc {
                sums: vec![0; metrics],
                ..Acc::default()
            });
            acc.inserts += ins.get(row).unwrap_or_default();
            acc.modifies += mods.get(row).unwrap_or_default();
            acc.removes += rems.get(row).unwrap_or_default();
            acc.net_count += cnt.get(row).unwrap_or_default();
            for (total, column) in acc.sums.iter_mut().zip(&sums) {
                *total += column.get(row).unwrap_or_default();
            }
        }
        Ok(())
    }

    /// Drops windows that ended more than `retention` before the newest event, once written out.
    fn evict(&mut self) {
        let horizon = self.max_event_time.saturating_sub(self.retention_ms);
        let windows = &self.windows;
        let changed = &self.changed;
        self.groups.retain(|key, _| {
            key.start + windows[key.window as usize].millis > horizon || changed.contains_key(key)
        });
    }

    /// The newest event time aggregated (epoch ms), `i64::MIN` before the first.
    pub fn max_event_time(&self) -> i64 {
        self.max_event_time
    }

    /// The version the last [`WindowEngine::take_changed`] gave its documents.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Restores the state from stored documents and the checkpoint's newest event time, so a
    /// resumed source continues the same sums. Only documents of this engine's pipeline and worker
    /// are taken: read them with [`streamlens_core::AggQuery::worker`] set to
    /// [`WindowEngine::worker`] (unmerged), after rolling back what the checkpoint does not cover.
    /// The restored values become the groups' previous values for the next emission (replacing
    /// changes not yet taken). Documents of window sizes or dimensions no longer in the spec are
    /// skipped and counted in the return value.
    pub fn restore(
        &mut self,
        docs: &[AggregateDoc],
        max_event_time: i64,
        version: u64,
    ) -> Result<usize, Error> {
        let mut skipped = 0;
        for doc in docs
            .iter()
            .filter(|d| d.pipeline == self.spec.name && d.worker == self.worker)
        {
            let window = self.windows.iter().position(|w| w.label == doc.window);
            let dimension = if doc.dimension == ALL_DIMENSION {
                Some(0)
            } else {
                self.spec
                    .dimensions
                    .iter()
                    .position(|d| *d == doc.dimension)
                    .map(|d| d + 1)
            };
            let (Some(window), Some(dimension)) = (window, dimension) else {
                skipped += 1;
                continue;
            };
            let sums = self
                .spec
                .metrics
                .iter()
                .map(|m| {
                    doc.sums
                        .get(&m.name)
                        .map_or(Ok(0), |v| parse_scaled(v, m.scale))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    Error::Spec(format!(
                        "stored document {} does not fit the spec: {e}",
                        doc.id()
                    ))
                })?;
            let key = GroupKey {
                window: window as u32,
                start: doc.window_start,
                dimension: dimension as u32,
                value: doc.value.clone(),
            };
            self.changed.remove(&key);
            self.groups.insert(
                key,
                Acc {
                    inserts: doc.inserts,
                    modifies: doc.modifies,
                    removes: doc.removes,
                    net_count: doc.net_count,
                    sums,
                    version: doc.version,
                },
            );
        }
        self.max_event_time = self.max_event_time.max(max_event_time);
        self.version = self.version.max(version);
        self.evict();
        Ok(skipped)
    }

    /// The documents of every group changed since the last call, each with its values as of the
    /// previous call that returned it in [`AggregateDoc::prev`] (`None` for a new group).
    pub fn take_changed(&mut self) -> Vec<AggregateDoc> {
        let changed = std::mem::take(&mut self.changed);
        self.version += 1;
        let version = self.version;
        let mut docs = Vec::with_capacity(changed.len());
        for (key, prev) in changed {
            let Some(acc) = self.groups.get_mut(&key) else {
                continue;
            };
            acc.version = version;
            let size = &self.windows[key.window as usize];
            let sums = |acc: &Acc| {
                self.spec
                    .metrics
                    .iter()
                    .zip(&acc.sums)
                    .map(|(m, units)| (m.name.clone(), format_scaled(*units, m.scale)))
                    .collect()
            };
            docs.push(AggregateDoc {
                pipeline: self.spec.name.clone(),
                window: size.label.clone(),
                window_start: key.start,
                window_end: key.start + size.millis,
                dimension: match key.dimension {
                    0 => ALL_DIMENSION.to_owned(),
                    d => self.spec.dimensions[d as usize - 1].clone(),
                },
                value: key.value.clone(),
                inserts: acc.inserts,
                modifies: acc.modifies,
                removes: acc.removes,
                net_count: acc.net_count,
                sums: sums(acc),
                version,
                worker: self.worker.clone(),
                prev: prev.map(|p| PrevValues {
                    inserts: p.inserts,
                    modifies: p.modifies,
                    removes: p.removes,
                    net_count: p.net_count,
                    sums: sums(&p),
                    version: p.version,
                }),
            });
        }
        docs
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, str::FromStr};

    use rust_decimal::Decimal;
    use streamlens_core::AttributeValue;

    use super::*;
    use crate::config::MetricSpec;

    fn spec() -> PipelineSpec {
        PipelineSpec {
            name: "orders".into(),
            dimensions: vec!["status".into()],
            metrics: vec![MetricSpec {
                name: "amount".into(),
                attribute: "amount".into(),
                scale: 2,
            }],
            windows: vec!["1m".into(), "5m".into()],
            retention: "1d".into(),
        }
    }

    fn item(id: u32, status: &str, amount: &str) -> Item {
        BTreeMap::from([
            ("pk".into(), AttributeValue::S(format!("o{id}"))),
            ("status".into(), AttributeValue::S(status.into())),
            ("amount".into(), AttributeValue::N(amount.into())),
        ])
    }

    fn event(
        seq: u64,
        t: i64,
        kind: EventKind,
        old: Option<Item>,
        new: Option<Item>,
    ) -> ChangeEvent {
        ChangeEvent {
            event_id: format!("e{seq}"),
            kind,
            keys: BTreeMap::new(),
            old_image: old,
            new_image: new,
            event_time_ms: t,
            sequence_number: seq.to_string(),
            shard_id: "s".into(),
            size_bytes: 1,
            view_type: None,
            ttl_delete: false,
        }
    }

    /// A pseudo-random but valid history of items (a tiny LCG keeps the test self-contained).
    fn history(n: usize, seed: u64) -> Vec<ChangeEvent> {
        let mut state = seed;
        let mut next = move |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        let statuses = ["new", "paid", "sent"];
        let mut live: BTreeMap<u32, Item> = BTreeMap::new();
        let mut out = Vec::new();
        let mut t = 1_700_000_000_000i64;
        for seq in 0..n as u64 {
            t += next(20_000) as i64;
            let amount = format!("{}.{:02}", next(1000), next(100));
            let status = statuses[next(3) as usize];
            let id = next(40) as u32;
            match live.get(&id).cloned() {
                None => {
                    let new = item(id, status, &amount);
                    live.insert(id, new.clone());
                    out.push(event(seq, t, EventKind::Insert, None, Some(new)));
                }
                Some(old) if next(3) == 0 => {
                    live.remove(&id);
                    out.push(event(seq, t, EventKind::Remove, Some(old), None));
                }
                Some(old) => {
                    let new = item(id, status, &amount);
                    live.insert(id, new.clone());
                    out.push(event(seq, t, EventKind::Modify, Some(old), Some(new)));
                }
            }
        }
        out
    }

    type Expected = BTreeMap<(String, i64, String, String), (i64, i64, i64, i64, Decimal)>;

    /// The plain computation the engine must agree with: one event at a time, Decimal sums.
    fn reference(events: &[ChangeEvent]) -> Expected {
        let mut out = Expected::new();
        for e in events {
            for (label, size) in [("1m", 60_000i64), ("5m", 300_000)] {
                let start = e.event_time_ms - e.event_time_ms.rem_euclid(size);
                let mut add =
                    |image: &Item, sign: i64, kind: usize| {
                        let amount = match &image["amount"] {
                            AttributeValue::N(n) => Decimal::from_str(n).unwrap(),
                            _ => unreachable!(),
                        };
                        let status = match &image["status"] {
                            AttributeValue::S(s) => s.clone(),
                            _ => unreachable!(),
                        };
                        for (dim, value) in [
                            ("_all".to_owned(), "_all".to_owned()),
                            ("status".into(), status),
                        ] {
                            let value = if dim == "_all" { String::new() } else { value };
                            let entry = out
                                .entry((label.to_owned(), start, dim, value))
                                .or_insert((0, 0, 0, 0, Decimal::ZERO));
                            match kind {
                                1 => entry.0 += 1,
                                2 => entry.1 += 1,
                                3 => entry.2 += 1,
                                _ => {}
                            }
                            entry.3 += sign;
                            entry.4 += amount * Decimal::from(sign);
                        }
                    };
                match e.kind {
                    EventKind::Insert => add(e.new_image.as_ref().unwrap(), 1, 1),
                    EventKind::Remove => add(e.old_image.as_ref().unwrap(), -1, 3),
                    EventKind::Modify => {
                        add(e.old_image.as_ref().unwrap(), -1, 0);
                        add(e.new_image.as_ref().unwrap(), 1, 2);
                    }
                    EventKind::Unknown(_) => {}
                }
            }
        }
        out
    }

    fn run(events: &[ChangeEvent], batch: usize) -> Expected {
        let mut engine = WindowEngine::new(spec(), 0).unwrap();
        let mut docs = BTreeMap::new();
        for chunk in events.chunks(batch) {
            assert!(engine.apply(chunk).unwrap().is_empty());
            for doc in engine.take_changed() {
                docs.insert(doc.id(), doc);
            }
        }
        docs.into_values()
            .map(|d| {
                let value = if d.dimension == "_all" {
                    String::new()
                } else {
                    d.value
                };
                (
                    (d.window, d.window_start, d.dimension, value),
                    (
                        d.inserts,
                        d.modifies,
                        d.removes,
                        d.net_count,
                        Decimal::from_str(&d.sums["amount"]).unwrap(),
                    ),
                )
            })
            .collect()
    }

    #[test]
    fn aggregates_equal_a_plain_computation_whatever_the_batch_size() {
        let events = history(2000, 42);
        let expected = reference(&events);
        assert!(expected.len() > 100, "the history must span many windows");
        for batch in [1, 7, 250, events.len()] {
            assert_eq!(run(&events, batch), expected, "batch size {batch}");
        }
    }

    #[test]
    fn prev_holds_the_values_of_the_previous_emission() {
        let events = history(600, 7);
        let mut engine = WindowEngine::new(spec(), 100).unwrap();
        let mut last: BTreeMap<String, AggregateDoc> = BTreeMap::new();
        let (mut new_groups, mut rewrites) = (0, 0);
        for chunk in events.chunks(13) {
            engine.apply(chunk).unwrap();
            for doc in engine.take_changed() {
                let expected = last.get(&doc.id()).map(|before| PrevValues {
                    inserts: before.inserts,
                    modifies: before.modifies,
                    removes: before.removes,
                    net_count: before.net_count,
                    sums: before.sums.clone(),
                    version: before.version,
                });
                match &expected {
                    None => new_groups += 1,
                    Some(prev) => {
                        rewrites += 1;
                        assert!(prev.version < doc.version);
                    }
                }
                assert_eq!(doc.prev, expected, "{}", doc.id());
                // Undoing the write gives back the previous document exactly.
                if let Some(before) = last.get(&doc.id()) {
                    assert_eq!(
                        doc.previous().as_ref(),
                        Some(before)
                            .map(|b| AggregateDoc {
                                prev: None,
                                ..b.clone()
                            })
                            .as_ref()
                    );
                }
                last.insert(doc.id(), doc);
            }
        }
        assert!(
            new_groups > 20 && rewrites > 20,
            "{new_groups} new, {rewrites} rewritten"
        );
    }

    #[test]
    fn a_restored_worker_continues_with_the_same_values_and_prev() {
        let events = history(800, 11);
        let (first, second) = events.split_at(500);
        let mut whole = WindowEngine::new(spec(), 0).unwrap().with_worker("w1");
        let mut stored: BTreeMap<String, AggregateDoc> = BTreeMap::new();
        for chunk in first.chunks(50) {
            whole.apply(chunk).unwrap();
            for doc in whole.take_changed() {
                assert_eq!(doc.worker, "w1");
                assert!(doc.id().ends_with("|@w1"));
                stored.insert(doc.id(), doc);
            }
        }
        // Another worker's documents (and single-process ones) for the same groups must be ignored.
        let mut docs: Vec<AggregateDoc> = stored.values().cloned().collect();
        for (worker, doc) in ["w2", ""].into_iter().zip(stored.values().take(2)) {
            docs.push(AggregateDoc {
                worker: worker.into(),
                net_count: 1_000,
                inserts: 1_000,
                ..doc.clone()
            });
        }
        let mut resumed = WindowEngine::new(spec(), 0).unwrap().with_worker("w1");
        let skipped = resumed
            .restore(&docs, whole.max_event_time(), whole.version())
            .unwrap();
        assert_eq!(skipped, 0);
        for chunk in second.chunks(50) {
            whole.apply(chunk).unwrap();
            resumed.apply(chunk).unwrap();
            let (a, b) = (whole.take_changed(), resumed.take_changed());
            assert!(!a.is_empty());
            assert_eq!(a, b);
        }
    }

    #[test]
    fn a_modify_moves_the_item_between_groups() {
        let mut engine = WindowEngine::new(spec(), 0).unwrap();
        let t = 1_700_000_000_000;
        engine
            .apply(&[
                event(1, t, EventKind::Insert, None, Some(item(1, "new", "10.50"))),
                event(
                    2,
                    t,
                    EventKind::Modify,
                    Some(item(1, "new", "10.50")),
                    Some(item(1, "paid", "12")),
                ),
            ])
            .unwrap();
        let docs = engine.take_changed();
        let get = |value: &str| {
            docs.iter()
                .find(|d| d.window == "1m" && d.dimension == "status" && d.value == value)
                .unwrap()
        };
        assert_eq!(
            (get("new").net_count, get("new").sums["amount"].as_str()),
            (0, "0")
        );
        assert_eq!(
            (get("paid").net_count, get("paid").sums["amount"].as_str()),
            (1, "12")
        );
        assert_eq!(get("paid").modifies, 1);
    }

    #[test]
    fn bad_values_and_late_changes_are_rejected_not_applied() {
        let mut engine = WindowEngine::new(spec(), 0).unwrap();
        let t = 1_700_000_000_000;
        let rejected = engine
            .apply(&[
                event(1, t, EventKind::Insert, None, Some(item(1, "new", "1.234"))),
                event(2, t, EventKind::Modify, None, Some(item(1, "new", "1"))),
                event(
                    3,
                    t + 2 * 86_400_000,
                    EventKind::Insert,
                    None,
                    Some(item(2, "new", "1")),
                ),
                event(4, t, EventKind::Insert, None, Some(item(3, "new", "1"))),
            ])
            .unwrap();
        let reasons: Vec<_> = rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("3 decimal places"));
        assert!(reasons[1].contains("NEW_AND_OLD_IMAGES"));
        assert!(reasons[2].starts_with("late"));
        assert_eq!(engine.stats().aggregated, 1);
    }
}
