//! The half of a pass that needs no engine state: a batch of changes → its sums per group.
//!
//! Most of what the engine does to a change does not depend on what came before the batch: pick
//! its images, read its event time, check the filters, parse the metric values, find its groups
//! and add it to them. A [`Combiner`] does all of that, and produces a [`Combined`]: the batch's
//! sums per group, and the changes it had to refuse. It holds no state, so it runs wherever the
//! changes are: the archive source runs it on its decoding threads, each change handed over
//! ([`Combining::push`]) as soon as it is decoded, as a [`ChangeView`] of its line that nothing
//! was allocated for, and the engine's own thread is left with a few groups per batch to add to
//! its state ([`super::WindowEngine::apply_combined`]).
//!
//! # Lateness, split in two
//!
//! The one thing that depends on the past is lateness. Change *i* of a batch is late when the
//! deadline of its windows (the end of the earliest-ending window holding its event time, plus the
//! allowed lateness) is at or below the watermark, `max(M0, newest_i) − disorder`, where `M0` is
//! the engine's newest event time before the batch and `newest_i` the newest event time of the
//! batch's changes aggregated before *i*. That is: late behind the batch's own changes
//! (`deadline ≤ newest_i − disorder`), which the combiner decides, or late behind the engine's
//! past (`deadline ≤ M0 − disorder`), which depends on the deadline alone. So the combiner sums
//! the changes in *buckets* of one deadline each, and the engine takes each bucket whole or
//! rejects it whole.
//!
//! This is exact. A change the past makes late has an event time below `M0`, so leaving it out
//! of `newest` changes no later change's watermark (`max(M0, ·)` hides it); by induction the two
//! tests together reject exactly what one pass over the batch with the engine's state would.
//!
//! # Sums
//!
//! Each passing image of a change is a *row*: per window slide the row's base, per dimension a
//! code of the batch's own dictionary, the signed counts and metric values. Rows with the same
//! bucket, window bases and dimension values fall in the same groups: they make a *cell*. A batch
//! of fewer rows than [`Combiner::with_polars_threshold`] adds each row to its cell as the change
//! comes (the rows are never stored), and each cell then to each of its groups. A larger batch is
//! kept as rows, column by column, and polars sums them with one lazy
//! `group_by(bucket, window start, value)` per window, hop and dimension, unioned and run in
//! parallel. Both give the same sums (tests run both).

use std::sync::Arc;

use polars::prelude::*;
use streamlens_core::{
    bytes::same,
    event::parse_iso8601_ms,
    projection::{ChangeView, ImageView, ProjectedChange},
    EventKind, ScalarKind,
};

use super::{filter_passes, Acc, Dict, GroupKey, HashMap, Rejected, Slots, MISSING};
use crate::{
    config::{MetricKind, MetricSpec, PipelineSpec, TimeFormat, WindowSize},
    decimal::parse_scaled,
    Error,
};

/// The earliest event time taken: 0000-01-01T00:00:00Z, epoch milliseconds.
pub const EARLIEST_MS: i64 = -62_167_219_200_000;
/// The latest event time taken: 9999-12-31T23:59:59.999Z.
pub const LATEST_MS: i64 = 253_402_300_799_999;

/// Default of [`Combiner::with_polars_threshold`].
pub const POLARS_FROM_ROWS: usize = 65_536;

/// A change a [`Bucket`] holds, so that the engine can reject it should the bucket be late.
#[derive(Debug, Clone)]
pub(super) struct Held {
    /// Its position in the batch.
    pub(super) index: u32,
    /// Its shard: an index in [`Combined::shards`].
    pub(super) shard: u32,
    /// Its bucket: an index in [`Combined::buckets`] (`u32::MAX` for none).
    pub(super) bucket: u32,
    /// Its event time.
    pub(super) time: i64,
    /// The newest event time aggregated before it in the batch (`i64::MIN`: none).
    pub(super) newest_before: i64,
    /// Its sequence number: where it is in [`Combined::sequences`].
    pub(super) sequence: (u32, u32),
}

/// The changes of a batch whose windows share one deadline, and their sums.
#[derive(Debug)]
pub(super) struct Bucket {
    /// The end of the earliest-ending window holding the changes' event time, plus the allowed
    /// lateness: they are late once the watermark reaches it.
    pub(super) deadline: i64,
    /// The newest event time of the changes summed.
    pub(super) newest: i64,
    /// Changes summed with at least one image passing the filters.
    pub(super) aggregated: u64,
    /// Changes summed with no image passing the filters.
    pub(super) filtered: u64,
    /// Changes refused for a reason of their own (a bad metric value), unless they are late.
    pub(super) failed: Vec<(Held, String)>,
    /// Sums per group; dimension values and distinct values are codes of the batch's
    /// dictionaries ([`Combined::dims`], [`Combined::distinct`]).
    pub(super) groups: HashMap<GroupKey, Acc>,
}

/// A batch reduced by a [`Combiner`], for [`super::WindowEngine::apply_combined`].
#[derive(Debug, Default)]
pub struct Combined {
    /// Changes in the batch.
    pub(super) changes: usize,
    /// Changes per kind: INSERT, MODIFY, REMOVE, unknown.
    pub(super) kinds: [u64; 4],
    /// Refused whatever came before the batch (no image, no event time); indices in the batch.
    pub(super) rejected: Vec<Rejected>,
    /// Late behind the batch's own newer changes.
    pub(super) late: Vec<Held>,
    /// The changes summed, each with its bucket.
    pub(super) held: Vec<Held>,
    pub(super) buckets: Vec<Bucket>,
    /// The sequence numbers of the held changes, back to back (one text, not one string each).
    pub(super) sequences: String,
    /// The shards of the held changes.
    pub(super) shards: Vec<Arc<str>>,
    /// Per dimension: the value of each code.
    pub(super) dims: Vec<Vec<Box<str>>>,
    /// Per metric: the value of each code of its distinct values.
    pub(super) distinct: Vec<Vec<Box<str>>>,
}

impl Combined {
    /// Changes in the batch.
    pub fn len(&self) -> usize {
        self.changes
    }

    /// True for a batch of no changes.
    pub fn is_empty(&self) -> bool {
        self.changes == 0
    }

    /// Changes per kind: INSERT, MODIFY, REMOVE, unknown.
    pub fn kinds(&self) -> [u64; 4] {
        self.kinds
    }

    /// Where a held change came from, for the quarantine.
    pub(super) fn origin(&self, held: &Held) -> String {
        let (from, to) = held.sequence;
        let sequence = self.sequences.get(from as usize..to as usize);
        origin(
            &self.shards[held.shard as usize],
            sequence.unwrap_or_default(),
        )
    }
}

fn origin(shard: &str, sequence: &str) -> String {
    format!("shard {shard} seq {sequence}")
}

/// Rows of one batch, column by column.
#[derive(Default)]
struct Rows {
    /// The row's bucket (an index in [`Combined::buckets`]).
    bucket: Vec<u32>,
    /// Per window: the start of the latest window containing the row's time.
    bases: Vec<Vec<i64>>,
    /// Per dimension: the value's code.
    dims: Vec<Vec<u32>>,
    inserts: Vec<i64>,
    modifies: Vec<i64>,
    removes: Vec<i64>,
    sign: Vec<i64>,
    /// Per metric: signed units (`sum`, `avg`).
    sums: Vec<Vec<i128>>,
    /// Per metric: ±1 when the image has the attribute (`count`, `avg`).
    counts: Vec<Vec<i64>>,
    /// Per metric: the value on +1 rows (`min`, `max`).
    values: Vec<Vec<Option<i128>>>,
    /// Per metric: the value's code on +1 rows (`distinct`).
    distinct: Vec<Vec<Option<u32>>>,
}

impl Rows {
    /// Empty columns for `rows` rows (no more allocation while they are appended), those the
    /// metrics do not use left unallocated.
    fn new(windows: usize, dimensions: usize, metrics: &[MetricSpec], rows: usize) -> Self {
        fn column<T>(rows: usize) -> Vec<T> {
            Vec::with_capacity(rows)
        }
        // Per metric: a column with room for the rows if the metric's kind uses it.
        fn per_metric<T>(
            metrics: &[MetricSpec],
            rows: usize,
            uses: fn(MetricKind) -> bool,
        ) -> Vec<Vec<T>> {
            metrics
                .iter()
                .map(|m| column(if uses(m.kind) { rows } else { 0 }))
                .collect()
        }
        Rows {
            bucket: column(rows),
            bases: (0..windows).map(|_| column(rows)).collect(),
            dims: (0..dimensions).map(|_| column(rows)).collect(),
            inserts: column(rows),
            modifies: column(rows),
            removes: column(rows),
            sign: column(rows),
            sums: per_metric(metrics, rows, |k| {
                matches!(k, MetricKind::Sum | MetricKind::Avg)
            }),
            counts: per_metric(metrics, rows, |k| {
                matches!(k, MetricKind::Count | MetricKind::Avg)
            }),
            values: per_metric(metrics, rows, |k| {
                matches!(k, MetricKind::Min | MetricKind::Max)
            }),
            distinct: per_metric(metrics, rows, |k| k == MetricKind::Distinct),
        }
    }

    fn len(&self) -> usize {
        self.sign.len()
    }
}

impl Acc {
    /// Adds row `row`'s values (not its distinct code).
    fn add_row(&mut self, rows: &Rows, row: usize, metrics: &[MetricSpec]) {
        self.inserts += rows.inserts[row];
        self.modifies += rows.modifies[row];
        self.removes += rows.removes[row];
        self.net_count += rows.sign[row];
        for (m, spec) in metrics.iter().enumerate() {
            match spec.kind {
                MetricKind::Sum => self.sums[m] += rows.sums[m][row],
                MetricKind::Count => self.counts[m] += rows.counts[m][row],
                MetricKind::Avg => {
                    self.sums[m] += rows.sums[m][row];
                    self.counts[m] += rows.counts[m][row];
                }
                MetricKind::Min | MetricKind::Max => {
                    self.extreme(m, spec.kind, rows.values[m][row])
                }
                MetricKind::Distinct => {}
            }
        }
    }

    /// Keeps `value` if it is a new minimum (`kind` min) or maximum of metric `m`.
    pub(super) fn extreme(&mut self, m: usize, kind: MetricKind, value: Option<i128>) {
        let Some(value) = value else { return };
        let slot = if kind == MetricKind::Min {
            &mut self.mins[m]
        } else {
            &mut self.maxs[m]
        };
        *slot = Some(match (*slot, kind) {
            (None, _) => value,
            (Some(old), MetricKind::Min) => old.min(value),
            (Some(old), _) => old.max(value),
        });
    }
}

/// The state-free half of a [`super::WindowEngine`]: what it does to each change of a batch
/// ([`super::WindowEngine::combiner`]). Cheap to clone, and `Sync`: decoding threads share one.
#[derive(Debug, Clone)]
pub struct Combiner {
    pub(super) spec: Arc<PipelineSpec>,
    windows: Arc<[WindowSize]>,
    slots: Arc<Slots>,
    disorder_ms: i64,
    lateness_ms: i64,
    polars_from_rows: usize,
}

/// Per change, while combining: the batch's dictionaries, shards and newest event time.
struct Scan {
    dims: Vec<Dict>,
    distinct: Vec<Dict>,
    /// Deadline → bucket.
    buckets: HashMap<i64, u32>,
    /// The last bucket used, and its deadline.
    last: Option<(i64, u32)>,
    /// The last shard seen, and its index.
    shard: Option<(Arc<str>, u32)>,
    newest: i64,
    /// Reused per change: each passing image's metric values.
    scratch: Vec<(Option<i128>, bool)>,
}

/// A batch's sums per cell. A cell's key is the row's bucket, then the base of each window, then
/// each dimension's code: a few words, hashed here word by word (a generic hasher would take the
/// key for bytes, and compare it with `memcmp`). A batch has few cells, and a row mostly finds its
/// cell in a small direct-mapped table of the cells found last, without a map lookup.
struct Cells {
    /// Every cell, in the order met.
    cells: Vec<Cell>,
    /// Hash of the key → the cells with that hash (almost always one).
    index: std::collections::HashMap<u64, Vec<u32>, Prehashed>,
    /// Per top 8 bits of a hash: the hash and cell last found there.
    recent: Box<[(u64, u32); 256]>,
    /// The key of the next row (reused from row to row).
    key: Vec<i64>,
    metrics: usize,
}

impl Cells {
    fn new(words: usize, metrics: usize) -> Self {
        Cells {
            cells: Vec::new(),
            index: Default::default(),
            recent: Box::new([(0, u32::MAX); 256]),
            key: vec![0; words],
            metrics,
        }
    }

    /// The cell of [`Self::key`], new if need be.
    fn cell(&mut self) -> &mut Acc {
        // Word by word: a few words, not worth a `memcmp` call.
        fn same(a: &[i64], b: &[i64]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
        }
        // foldhash's mixing step, one word at a time.
        const K: u64 = 0x243f_6a88_85a3_08d3;
        let hash = self.key.iter().fold(0x1319_8a2e_0370_7344u64, |h, &w| {
            let product = u128::from(h ^ w as u64) * u128::from(K);
            (product as u64) ^ ((product >> 64) as u64)
        });
        let slot = (hash >> 56) as usize;
        let (known, at) = self.recent[slot];
        if known == hash && at != u32::MAX && same(&self.cells[at as usize].0, &self.key) {
            return &mut self.cells[at as usize].1;
        }
        let list = self.index.entry(hash).or_default();
        let at = match list
            .iter()
            .copied()
            .find(|&at| same(&self.cells[at as usize].0, &self.key))
        {
            Some(at) => at,
            None => {
                let at = self.cells.len() as u32;
                self.cells
                    .push((self.key.clone().into(), Acc::new(self.metrics)));
                list.push(at);
                at
            }
        };
        self.recent[slot] = (hash, at);
        &mut self.cells[at as usize].1
    }

    fn into_cells(self) -> impl Iterator<Item = Cell> {
        self.cells.into_iter()
    }
}

/// A cell: its key and sums.
type Cell = (Box<[i64]>, Acc);

/// The hasher of a map keyed by hashes: the key as it is.
#[derive(Default)]
struct Prehashed;

impl std::hash::BuildHasher for Prehashed {
    type Hasher = PrehashedHasher;
    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

struct PrehashedHasher(u64);

impl std::hash::Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed here; anything else still gets a (poor) hash.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Where [`Combiner::rows_of`] puts a change's rows.
enum Sink<'a> {
    Rows(&'a mut Rows),
    Cells(&'a mut Cells),
}

/// A batch being reduced one change at a time ([`Combiner::start`]).
pub struct Combining {
    combiner: Combiner,
    out: Combined,
    /// A batch of fewer rows than polars is used for is summed per cell as it comes (`cells`);
    /// a larger one is kept as rows for polars.
    rows: Rows,
    cells: Option<Cells>,
    scan: Scan,
}

impl Combining {
    /// Takes the batch's next change.
    pub fn push(&mut self, change: &ChangeView<'_>) {
        let out = &mut self.out;
        let index = out.changes;
        out.changes += 1;
        out.kinds[match change.kind {
            EventKind::Insert => 0,
            EventKind::Modify => 1,
            EventKind::Remove => 2,
            EventKind::Unknown(_) => 3,
        }] += 1;
        let sink = match &mut self.cells {
            Some(cells) => Sink::Cells(cells),
            None => Sink::Rows(&mut self.rows),
        };
        if let Err(reason) = self
            .combiner
            .rows_of(index as u32, change, &mut self.scan, out, sink)
        {
            out.rejected.push(Rejected {
                index,
                reason,
                late: false,
                origin: origin(change.shard_id, change.sequence_number),
            });
        }
    }

    /// Changes taken so far.
    pub fn len(&self) -> usize {
        self.out.changes
    }

    /// True before the first change.
    pub fn is_empty(&self) -> bool {
        self.out.changes == 0
    }

    /// The batch's sums.
    pub fn finish(self) -> Result<Combined, Error> {
        let Combining {
            combiner,
            mut out,
            rows,
            cells,
            scan,
        } = self;
        if let Some(cells) = cells {
            combiner.spread(cells, &mut out);
        } else if rows.len() >= combiner.polars_from_rows {
            combiner.sum_polars(&rows, &mut out)?;
            combiner.sum_distinct(&rows, &mut out);
        } else {
            combiner.sum_directly(&rows, &mut out);
        }
        out.dims = scan.dims.into_iter().map(|d| d.values).collect();
        out.distinct = scan.distinct.into_iter().map(|d| d.values).collect();
        Ok(out)
    }
}

impl Combiner {
    pub(super) fn new(
        spec: PipelineSpec,
        windows: Vec<WindowSize>,
        slots: Slots,
        disorder_ms: i64,
        lateness_ms: i64,
    ) -> Self {
        Combiner {
            spec: Arc::new(spec),
            windows: windows.into(),
            slots: Arc::new(slots),
            disorder_ms,
            lateness_ms,
            polars_from_rows: POLARS_FROM_ROWS,
        }
    }

    /// Sets the batch size (in rows) from which polars does the sums; both ways give the same
    /// results (tests run both).
    pub fn with_polars_threshold(mut self, rows: usize) -> Self {
        self.polars_from_rows = rows;
        self
    }

    /// The end of the earliest-ending window holding `time` (never below `time`).
    pub(super) fn earliest_end(windows: &[WindowSize], time: i64) -> i64 {
        windows
            .iter()
            .map(|w| (time.div_euclid(w.slide) * w.slide).saturating_add(w.slide))
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Reduces a batch, given in parts (the same as their concatenation), to its sums.
    pub fn combine(&self, parts: &[&[ProjectedChange]]) -> Result<Combined, Error> {
        let mut combining = self.start(parts.iter().map(|p| p.len()).sum());
        for change in parts.iter().flat_map(|p| p.iter()) {
            combining.push(&change.view());
        }
        combining.finish()
    }

    /// Starts reducing a batch fed one change at a time ([`Combining::push`]), for about
    /// `changes` changes (room is made for them; more may come): [`Self::combine`] without the
    /// batch of owned changes, for a decoder that hands each change over as a view of its line.
    pub fn start(&self, changes: usize) -> Combining {
        let metrics = self.spec.metrics.len();
        // Two rows per change at most (a MODIFY's).
        let direct = 2 * changes < self.polars_from_rows;
        let rows = if direct { 0 } else { 2 * changes };
        Combining {
            out: Combined {
                held: Vec::with_capacity(changes),
                sequences: String::with_capacity(24 * changes),
                ..Combined::default()
            },
            rows: Rows::new(
                self.windows.len(),
                self.spec.dimensions.len(),
                &self.spec.metrics,
                rows,
            ),
            cells: direct
                .then(|| Cells::new(1 + self.windows.len() + self.spec.dimensions.len(), metrics)),
            scan: Scan {
                dims: self
                    .spec
                    .dimensions
                    .iter()
                    .map(|_| Dict::default())
                    .collect(),
                distinct: self.spec.metrics.iter().map(|_| Dict::default()).collect(),
                buckets: HashMap::default(),
                last: None,
                shard: None,
                newest: i64::MIN,
                scratch: Vec::with_capacity(2 * metrics),
            },
            combiner: self.clone(),
        }
    }

    /// The event time of a change.
    fn event_time(&self, change: &ChangeView<'_>) -> Result<i64, String> {
        let Some(slot) = self.slots.time else {
            return Ok(change.event_time_ms);
        };
        let path = self
            .spec
            .event_time_attribute
            .as_deref()
            .unwrap_or_default();
        let image = change.new.or(change.old);
        let value = image
            .and_then(|i| i.get(slot))
            .ok_or_else(|| format!("event time attribute `{path}` is missing"))?;
        let parsed = match self.spec.event_time_format {
            TimeFormat::EpochSeconds => value
                .as_number()
                .and_then(|n| parse_scaled(n, 3).ok())
                .and_then(|ms| i64::try_from(ms).ok()),
            TimeFormat::EpochMillis => value
                .as_number()
                .and_then(|n| parse_scaled(n, 0).ok())
                .and_then(|ms| i64::try_from(ms).ok()),
            TimeFormat::Iso8601 => parse_iso8601_ms(value.text),
        };
        parsed.ok_or_else(|| {
            format!(
                "event time attribute `{path}` = `{}` is not {:?}",
                value.text, self.spec.event_time_format
            )
        })
    }

    fn passes(&self, image: &ImageView<'_>) -> bool {
        self.spec
            .filters
            .iter()
            .zip(&self.slots.filters)
            .all(|(f, slot)| filter_passes(f, image.get(*slot)))
    }

    /// One metric's value in an image: its units (numeric kinds) and whether the attribute is
    /// there (not NULL).
    fn metric_value(
        &self,
        image: &ImageView<'_>,
        m: usize,
    ) -> Result<(Option<i128>, bool), String> {
        let spec = &self.spec.metrics[m];
        let Some(value) = image
            .get(self.slots.metrics[m])
            .filter(|v| v.kind != ScalarKind::Null)
        else {
            return Ok((None, false));
        };
        if !spec.kind.numeric() {
            return Ok((None, true));
        }
        let n = value.as_number().ok_or_else(|| {
            format!(
                "metric `{}`: attribute `{}` is of type {:?}, not N",
                spec.name, spec.attribute, value.kind
            )
        })?;
        parse_scaled(n, spec.scale)
            .map(|units| (Some(units), true))
            .map_err(|e| format!("metric `{}`: {e}", spec.name))
    }

    /// Takes one change: appends its rows and holds it in its bucket, or puts it with the late
    /// or the failed, or says why it is refused whatever came before. Nothing is appended unless
    /// the whole change can be (the metric values are parsed into a reused buffer first).
    fn rows_of(
        &self,
        index: u32,
        change: &ChangeView<'_>,
        scan: &mut Scan,
        out: &mut Combined,
        sink: Sink<'_>,
    ) -> Result<(), String> {
        fn need<'a>(
            change: &ChangeView<'_>,
            image: Option<ImageView<'a>>,
            which: &str,
        ) -> Result<ImageView<'a>, String> {
            image.ok_or_else(|| {
                format!(
                    "{} event without {which}: the stream must use the NEW_AND_OLD_IMAGES view",
                    change.kind.name()
                )
            })
        }
        // (image, sign, [insert, modify, remove]); at most two.
        type Part<'a> = (ImageView<'a>, i64, [i64; 3]);
        let parts: [Option<Part<'_>>; 2] = match change.kind {
            EventKind::Insert => [
                Some((need(change, change.new, "NewImage")?, 1, [1, 0, 0])),
                None,
            ],
            EventKind::Remove => [
                Some((need(change, change.old, "OldImage")?, -1, [0, 0, 1])),
                None,
            ],
            EventKind::Modify => [
                Some((need(change, change.old, "OldImage")?, -1, [0, 0, 0])),
                Some((need(change, change.new, "NewImage")?, 1, [0, 1, 0])),
            ],
            EventKind::Unknown(_) => return Ok(()),
        };
        let t = self.event_time(change)?;
        if !(EARLIEST_MS..=LATEST_MS).contains(&t) {
            return Err(format!(
                "event time {t} is out of range (years 0000 to 9999, in epoch milliseconds)"
            ));
        }
        let shard = match &scan.shard {
            Some((id, at)) if same(id.as_bytes(), change.shard_id.as_bytes()) => *at,
            _ => {
                let at = match out.shards.iter().position(|s| **s == *change.shard_id) {
                    Some(at) => at as u32,
                    None => {
                        out.shards.push(change.shard_id.into());
                        out.shards.len() as u32 - 1
                    }
                };
                scan.shard = Some((out.shards[at as usize].clone(), at));
                at
            }
        };
        let from = out.sequences.len() as u32;
        out.sequences.push_str(change.sequence_number);
        let mut held = Held {
            index,
            shard,
            bucket: u32::MAX,
            time: t,
            newest_before: scan.newest,
            sequence: (from, out.sequences.len() as u32),
        };
        let deadline = Self::earliest_end(&self.windows, t).saturating_add(self.lateness_ms);
        if scan.newest != i64::MIN && deadline <= scan.newest.saturating_sub(self.disorder_ms) {
            out.late.push(held);
            return Ok(());
        }
        let bucket = match scan.last {
            Some((last, bucket)) if last == deadline => bucket,
            _ => {
                let bucket = *scan.buckets.entry(deadline).or_insert_with(|| {
                    out.buckets.push(Bucket {
                        deadline,
                        newest: i64::MIN,
                        aggregated: 0,
                        filtered: 0,
                        failed: Vec::new(),
                        groups: HashMap::default(),
                    });
                    out.buckets.len() as u32 - 1
                });
                scan.last = Some((deadline, bucket));
                bucket
            }
        };
        held.bucket = bucket;
        let passing: [Option<Part<'_>>; 2] =
            parts.map(|p| p.filter(|(image, _, _)| self.passes(image)));
        // Parse every metric value of every passing image before appending anything.
        let metrics = self.spec.metrics.len();
        scan.scratch.clear();
        for (image, _, _) in passing.iter().flatten() {
            for m in 0..metrics {
                match self.metric_value(image, m) {
                    Ok(value) => scan.scratch.push(value),
                    Err(reason) => {
                        out.buckets[bucket as usize].failed.push((held, reason));
                        return Ok(());
                    }
                }
            }
        }
        let holder = &mut out.buckets[bucket as usize];
        if passing.iter().all(Option::is_none) {
            holder.filtered += 1;
        } else {
            holder.aggregated += 1;
        }
        holder.newest = holder.newest.max(t);
        out.held.push(held);
        scan.newest = scan.newest.max(t);
        let rows = match sink {
            Sink::Rows(rows) => rows,
            Sink::Cells(cells) => {
                self.sum_into_cells(cells, &passing, bucket, t, scan);
                return Ok(());
            }
        };
        for (n, (image, sign, [insert, modify, remove])) in passing.iter().flatten().enumerate() {
            let sign = *sign;
            rows.bucket.push(bucket);
            for (w, column) in self.windows.iter().zip(rows.bases.iter_mut()) {
                column.push(t.div_euclid(w.slide) * w.slide);
            }
            for (d, slot) in self.slots.dimensions.iter().enumerate() {
                let code = scan.dims[d].code(image.get(*slot).map_or(MISSING, |v| v.text));
                rows.dims[d].push(code);
            }
            rows.inserts.push(*insert);
            rows.modifies.push(*modify);
            rows.removes.push(*remove);
            rows.sign.push(sign);
            for (m, spec) in self.spec.metrics.iter().enumerate() {
                let (units, present) = scan.scratch[n * metrics + m];
                match spec.kind {
                    MetricKind::Sum => rows.sums[m].push(units.unwrap_or(0) * i128::from(sign)),
                    MetricKind::Count => rows.counts[m].push(if present { sign } else { 0 }),
                    MetricKind::Avg => {
                        rows.sums[m].push(units.unwrap_or(0) * i128::from(sign));
                        rows.counts[m].push(if present { sign } else { 0 });
                    }
                    MetricKind::Min | MetricKind::Max => {
                        rows.values[m].push(units.filter(|_| sign > 0))
                    }
                    MetricKind::Distinct => {
                        // Only values written (+1 rows) count: retractions add no codes.
                        let code = (sign > 0 && present)
                            .then(|| image.get(self.slots.metrics[m]))
                            .flatten()
                            .map(|v| scan.distinct[m].code(v.text));
                        rows.distinct[m].push(code);
                    }
                }
            }
        }
        Ok(())
    }

    /// The groups a row falls in, given its window bases and dimension codes: (key, window)
    /// for every window, hop and dimension.
    fn keys_of(&self, bases: impl Fn(usize) -> i64, dims: impl Fn(usize) -> u32) -> Vec<GroupKey> {
        let mut keys = Vec::new();
        for (w, size) in self.windows.iter().enumerate() {
            for hop in 0..size.millis / size.slide {
                let start = bases(w) - hop * size.slide;
                for dimension in 0..=self.spec.dimensions.len() {
                    keys.push(GroupKey {
                        window: w as u32,
                        start,
                        dimension: dimension as u32,
                        value: if dimension == 0 {
                            0
                        } else {
                            dims(dimension - 1)
                        },
                    });
                }
            }
        }
        keys
    }

    /// The same sums as [`Self::sum_polars`] (and [`Self::sum_distinct`]), in two steps. Rows
    /// with the same bucket, window bases and dimension values fall in the same groups: they are
    /// first summed per such *cell* (one lookup per row), and each cell is then added to each of
    /// its groups (one per window, hop and dimension, plus the total). A batch has few cells, so
    /// a row costs one lookup however many groups it falls in.
    fn sum_directly(&self, rows: &Rows, out: &mut Combined) {
        let metrics = &self.spec.metrics;
        let (windows, dimensions) = (rows.bases.len(), rows.dims.len());
        let mut cells = Cells::new(1 + windows + dimensions, metrics.len());
        for row in 0..rows.len() {
            cells.key[0] = i64::from(rows.bucket[row]);
            for (w, bases) in rows.bases.iter().enumerate() {
                cells.key[1 + w] = bases[row];
            }
            for (d, codes) in rows.dims.iter().enumerate() {
                cells.key[1 + windows + d] = i64::from(codes[row]);
            }
            let cell = cells.cell();
            cell.add_row(rows, row, metrics);
            for (m, codes) in rows.distinct.iter().enumerate() {
                if let Some(code) = codes.get(row).copied().flatten() {
                    cell.distinct[m].insert(code);
                }
            }
        }
        self.spread(cells, out);
    }

    /// A change's rows (one per passing image, `passing` as [`Self::rows_of`] has it) added to
    /// their cells straight away.
    fn sum_into_cells(
        &self,
        cells: &mut Cells,
        passing: &[Option<(ImageView<'_>, i64, [i64; 3])>; 2],
        bucket: u32,
        t: i64,
        scan: &mut Scan,
    ) {
        let metrics = &self.spec.metrics;
        let windows = self.windows.len();
        cells.key[0] = i64::from(bucket);
        for (w, size) in self.windows.iter().enumerate() {
            cells.key[1 + w] = t.div_euclid(size.slide) * size.slide;
        }
        for (n, (image, sign, [insert, modify, remove])) in passing.iter().flatten().enumerate() {
            let sign = *sign;
            for (d, slot) in self.slots.dimensions.iter().enumerate() {
                let code = scan.dims[d].code(image.get(*slot).map_or(MISSING, |v| v.text));
                cells.key[1 + windows + d] = i64::from(code);
            }
            let cell = cells.cell();
            cell.inserts += insert;
            cell.modifies += modify;
            cell.removes += remove;
            cell.net_count += sign;
            for (m, spec) in metrics.iter().enumerate() {
                let (units, present) = scan.scratch[n * metrics.len() + m];
                let count = if present { sign } else { 0 };
                match spec.kind {
                    MetricKind::Sum => cell.sums[m] += units.unwrap_or(0) * i128::from(sign),
                    MetricKind::Count => cell.counts[m] += count,
                    MetricKind::Avg => {
                        cell.sums[m] += units.unwrap_or(0) * i128::from(sign);
                        cell.counts[m] += count;
                    }
                    MetricKind::Min | MetricKind::Max => {
                        cell.extreme(m, spec.kind, units.filter(|_| sign > 0))
                    }
                    MetricKind::Distinct => {
                        // Only values written (+1 rows) count: retractions add no codes.
                        if let Some(value) = (sign > 0 && present)
                            .then(|| image.get(self.slots.metrics[m]))
                            .flatten()
                        {
                            cell.distinct[m].insert(scan.distinct[m].code(value.text));
                        }
                    }
                }
            }
        }
    }

    /// Adds each cell (keyed as [`Cells`] keys them) to each of its groups.
    fn spread(&self, cells: Cells, out: &mut Combined) {
        let metrics = &self.spec.metrics;
        let windows = self.windows.len();
        for (key, cell) in cells.into_cells() {
            let groups = &mut out.buckets[key[0] as usize].groups;
            let keys = self.keys_of(|w| key[1 + w], |d| key[1 + windows + d] as u32);
            for group in keys {
                groups
                    .entry(group)
                    .or_insert_with(|| Acc::new(metrics.len()))
                    .add(&cell, metrics, None);
            }
        }
    }

    /// Distinct values of the rows summed by polars: sets of codes per group.
    fn sum_distinct(&self, rows: &Rows, out: &mut Combined) {
        let metrics = &self.spec.metrics;
        for (m, spec) in metrics.iter().enumerate() {
            if spec.kind != MetricKind::Distinct {
                continue;
            }
            for row in 0..rows.len() {
                let Some(code) = rows.distinct[m][row] else {
                    continue;
                };
                let keys = self.keys_of(|w| rows.bases[w][row], |d| rows.dims[d][row]);
                let groups = &mut out.buckets[rows.bucket[row] as usize].groups;
                for key in keys {
                    groups
                        .entry(key)
                        .or_insert_with(|| Acc::new(metrics.len()))
                        .distinct[m]
                        .insert(code);
                }
            }
        }
    }

    /// Sums the rows per (bucket, window, start, dimension, value) with polars: one lazy
    /// `group_by` per window, hop and dimension, unioned and run in parallel.
    fn sum_polars(&self, rows: &Rows, out: &mut Combined) -> Result<(), Error> {
        let metrics = &self.spec.metrics;
        let mut columns = vec![Column::new("k".into(), rows.bucket.as_slice())];
        for (w, bases) in rows.bases.iter().enumerate() {
            columns.push(Column::new(format!("b{w}").into(), bases.as_slice()));
        }
        for (d, codes) in rows.dims.iter().enumerate() {
            columns.push(Column::new(format!("d{d}").into(), codes.as_slice()));
        }
        columns.push(Column::new("ins".into(), rows.inserts.as_slice()));
        columns.push(Column::new("mods".into(), rows.modifies.as_slice()));
        columns.push(Column::new("rems".into(), rows.removes.as_slice()));
        columns.push(Column::new("cnt".into(), rows.sign.as_slice()));
        let mut aggs = vec![
            col("ins").sum(),
            col("mods").sum(),
            col("rems").sum(),
            col("cnt").sum(),
        ];
        for (m, spec) in metrics.iter().enumerate() {
            if matches!(spec.kind, MetricKind::Sum | MetricKind::Avg) {
                columns.push(Column::new(format!("s{m}").into(), rows.sums[m].as_slice()));
                aggs.push(col(format!("s{m}")).sum());
            }
            if matches!(spec.kind, MetricKind::Count | MetricKind::Avg) {
                columns.push(Column::new(
                    format!("c{m}").into(),
                    rows.counts[m].as_slice(),
                ));
                aggs.push(col(format!("c{m}")).sum());
            }
            if matches!(spec.kind, MetricKind::Min | MetricKind::Max) {
                columns.push(Column::new(
                    format!("x{m}").into(),
                    rows.values[m].as_slice(),
                ));
                aggs.push(if spec.kind == MetricKind::Min {
                    col(format!("x{m}")).min()
                } else {
                    col(format!("x{m}")).max()
                });
            }
        }
        let frame = DataFrame::new_infer_height(columns)?;
        let mut queries = Vec::new();
        for (w, size) in self.windows.iter().enumerate() {
            let hops = size.millis / size.slide;
            for dimension in 0..=self.spec.dimensions.len() {
                for hop in 0..hops {
                    let start = (col(format!("b{w}")) - lit(hop * size.slide)).alias("ws");
                    let value = if dimension == 0 {
                        lit(0u32).cast(DataType::UInt32).alias("v")
                    } else {
                        col(format!("d{}", dimension - 1)).alias("v")
                    };
                    queries.push(
                        frame
                            .clone()
                            .lazy()
                            .group_by([col("k"), start, value])
                            .agg(aggs.clone())
                            .with_columns([
                                lit(w as u32).cast(DataType::UInt32).alias("w"),
                                lit(dimension as u32).cast(DataType::UInt32).alias("d"),
                            ]),
                    );
                }
            }
        }
        let summed = concat(
            queries,
            UnionArgs {
                parallel: true,
                ..UnionArgs::default()
            },
        )?
        .collect()?;
        self.absorb(&summed, out)
    }

    /// Adds polars' sums to the buckets' groups.
    fn absorb(&self, summed: &DataFrame, out: &mut Combined) -> Result<(), Error> {
        let k = summed.column("k")?.u32()?.clone();
        let w = summed.column("w")?.u32()?.clone();
        let d = summed.column("d")?.u32()?.clone();
        let ws = summed.column("ws")?.i64()?.clone();
        let v = summed.column("v")?.u32()?.clone();
        let ins = summed.column("ins")?.i64()?.clone();
        let mods = summed.column("mods")?.i64()?.clone();
        let rems = summed.column("rems")?.i64()?.clone();
        let cnt = summed.column("cnt")?.i64()?.clone();
        let metrics = &self.spec.metrics;
        let mut sums = Vec::new();
        let mut counts = Vec::new();
        let mut extremes = Vec::new();
        for (m, spec) in metrics.iter().enumerate() {
            sums.push(if matches!(spec.kind, MetricKind::Sum | MetricKind::Avg) {
                Some(summed.column(&format!("s{m}"))?.i128()?.clone())
            } else {
                None
            });
            counts.push(
                if matches!(spec.kind, MetricKind::Count | MetricKind::Avg) {
                    Some(summed.column(&format!("c{m}"))?.i64()?.clone())
                } else {
                    None
                },
            );
            extremes.push(if matches!(spec.kind, MetricKind::Min | MetricKind::Max) {
                Some(summed.column(&format!("x{m}"))?.i128()?.clone())
            } else {
                None
            });
        }
        for row in 0..summed.height() {
            let key = GroupKey {
                window: w.get(row).unwrap_or_default(),
                start: ws.get(row).unwrap_or_default(),
                dimension: d.get(row).unwrap_or_default(),
                value: v.get(row).unwrap_or_default(),
            };
            let bucket = k.get(row).unwrap_or_default() as usize;
            let acc = out.buckets[bucket]
                .groups
                .entry(key)
                .or_insert_with(|| Acc::new(metrics.len()));
            acc.inserts += ins.get(row).unwrap_or_default();
            acc.modifies += mods.get(row).unwrap_or_default();
            acc.removes += rems.get(row).unwrap_or_default();
            acc.net_count += cnt.get(row).unwrap_or_default();
            for (m, spec) in metrics.iter().enumerate() {
                if let Some(column) = &sums[m] {
                    acc.sums[m] += column.get(row).unwrap_or_default();
                }
                if let Some(column) = &counts[m] {
                    acc.counts[m] += column.get(row).unwrap_or_default();
                }
                if let Some(column) = &extremes[m] {
                    acc.extreme(m, spec.kind, column.get(row));
                }
            }
        }
        Ok(())
    }
}
