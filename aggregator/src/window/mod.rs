//! The window engine: exact, event-time aggregates with retractions.
//!
//! # What a change contributes
//!
//! Every change contributes signed rows, one per image that passes the pipeline's filters:
//!
//! | change | rows                                   | kind counted on         |
//! |--------|----------------------------------------|-------------------------|
//! | INSERT | +1 × new image                         | the new image's group   |
//! | REMOVE | −1 × old image                         | the old image's group   |
//! | MODIFY | −1 × old image, +1 × new image         | the new image's group   |
//!
//! so a MODIFY that changes `status` from `open` to `paid` moves the item (and its amounts) from
//! one group to the other. `sum` and `count` metrics are net (the −1 rows retract), `avg` is their
//! quotient; `min`, `max` and `distinct` look at the +1 rows only: the values *written* in the
//! window. Numbers are fixed-point `i128` ([`crate::decimal`]): exact, never `f64`.
//!
//! # How a micro-batch is aggregated
//!
//! Changes arrive projected ([`ProjectedChange`]: only the attributes the spec reads). A
//! [`Combiner`] reduces a batch to its sums per group, without looking at the engine's state
//! (see [`combine`]: rows summed directly, or by polars for large batches); the engine then adds
//! those sums to its state ([`WindowEngine::apply_combined`]), after rejecting the changes its
//! past makes late. The archive source runs the combiner on its decoding threads, so the engine's
//! thread only adds up a few groups per batch. Distinct values are kept as sets of dictionary
//! codes.
//!
//! # Event time
//!
//! The watermark is the newest event time aggregated minus `allowed_disorder`. A window is
//! *final* once the watermark has passed its end plus `allowed_lateness`: it is written once more
//! with `final: true` and dropped from memory. A change that would fall into a final window is
//! *late*: it is rejected (the caller counts and quarantines it), never applied in part. Whether a
//! change is late depends on what arrived before it, never on how arrivals are cut into batches.
//!
//! # Emission and checkpoints
//!
//! [`WindowEngine::take_changed`] returns the documents changed since the last call, each with a
//! higher version than any before and with its values as of its previous emission
//! ([`AggregateDoc::prev`]), so a store can undo a write that no checkpoint covers.
//! [`WindowEngine::restore`] rebuilds the open windows from stored documents.
//!
//! An engine of a worker process ([`WindowEngine::with_worker`]) aggregates only the changes it is
//! given and tags its documents with the worker's name: they are partial aggregates, which stores
//! add together with the other workers' at query time.

use std::{collections::BTreeMap, sync::Arc};

pub mod combine;
pub use combine::{Combined, Combiner, Combining, POLARS_FROM_ROWS};

/// Hash maps keyed by the engine's own codes and by dimension values: foldhash (randomly seeded
/// per map) instead of SipHash, which was a measurable part of a pass.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

use streamlens_core::{
    aggregate::ALL_DIMENSION,
    bytes::same,
    projection::{ProjectedChange, Projection, ScalarRef},
    AggregateDoc, ChangeEvent, PrevValues,
};

use crate::{
    config::{FilterSpec, MetricKind, MetricSpec, PipelineSpec, WindowSize},
    decimal::{format_scaled, parse_scaled},
    Error,
};

/// The label of a group whose item lacks the dimension's attribute.
pub const MISSING: &str = "(missing)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupKey {
    window: u32,
    start: i64,
    /// 0 for `_all`, else 1 + the dimension's index.
    dimension: u32,
    /// Code of the value in the dimension's dictionary (0 for `_all`).
    value: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Acc {
    inserts: i64,
    modifies: i64,
    removes: i64,
    net_count: i64,
    /// Per metric (used by `sum` and `avg`).
    sums: Vec<i128>,
    /// Per metric (used by `count` and `avg`).
    counts: Vec<i64>,
    /// Per metric (used by `min`).
    mins: Vec<Option<i128>>,
    /// Per metric (used by `max`).
    maxs: Vec<Option<i128>>,
    /// Per metric (used by `distinct`): codes in the metric's dictionary.
    distinct: Vec<HashSet<u32>>,
    is_final: bool,
    /// The version the group was last emitted (or restored) with.
    version: u64,
}

impl Acc {
    /// Adds the sums of `part` (`distinct`: per metric, the code in this accumulator's
    /// dictionary of each of `part`'s codes; `None` when they share one).
    fn add(&mut self, part: &Acc, metrics: &[MetricSpec], distinct: Option<&[Vec<u32>]>) {
        self.inserts += part.inserts;
        self.modifies += part.modifies;
        self.removes += part.removes;
        self.net_count += part.net_count;
        for (m, spec) in metrics.iter().enumerate() {
            match spec.kind {
                MetricKind::Sum => self.sums[m] += part.sums[m],
                MetricKind::Count => self.counts[m] += part.counts[m],
                MetricKind::Avg => {
                    self.sums[m] += part.sums[m];
                    self.counts[m] += part.counts[m];
                }
                MetricKind::Min => self.extreme(m, spec.kind, part.mins[m]),
                MetricKind::Max => self.extreme(m, spec.kind, part.maxs[m]),
                MetricKind::Distinct => match distinct {
                    Some(codes) => self.distinct[m]
                        .extend(part.distinct[m].iter().map(|c| codes[m][*c as usize])),
                    None => self.distinct[m].extend(part.distinct[m].iter().copied()),
                },
            }
        }
    }

    fn new(metrics: usize) -> Self {
        Acc {
            sums: vec![0; metrics],
            counts: vec![0; metrics],
            mins: vec![None; metrics],
            maxs: vec![None; metrics],
            distinct: vec![HashSet::default(); metrics],
            ..Acc::default()
        }
    }
}

/// Strings ↔ dense codes, so groups and distinct sets hold integers.
#[derive(Debug, Default)]
struct Dict {
    codes: HashMap<Box<str>, u32>,
    values: Vec<Box<str>>,
}

impl Dict {
    fn code(&mut self, value: &str) -> u32 {
        // A batch's dictionary mostly holds a handful of values: looked through, they are found
        // without hashing.
        if self.values.len() <= 8 {
            let found = self
                .values
                .iter()
                .position(|v| same(v.as_bytes(), value.as_bytes()));
            if let Some(code) = found {
                return code as u32;
            }
        } else if let Some(code) = self.codes.get(value) {
            return *code;
        }
        let code = self.values.len() as u32;
        self.values.push(value.into());
        self.codes.insert(value.into(), code);
        code
    }

    fn value(&self, code: u32) -> &str {
        self.values.get(code as usize).map_or("", |v| v)
    }
}

/// A change the engine did not aggregate, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its position in the batch given to [`WindowEngine::apply`] (or to the other `apply_*`
    /// methods: in the concatenation of what they are given).
    pub index: usize,
    /// Why.
    pub reason: String,
    /// It arrived after its window was final.
    pub late: bool,
    /// Where it came from: `shard … seq …`.
    pub origin: String,
}

/// Counters of what the engine has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Changes aggregated.
    pub aggregated: u64,
    /// Changes of an unknown kind (counted, not aggregated).
    pub unknown_kind: u64,
    /// Changes rejected (late ones included).
    pub rejected: u64,
    /// Changes rejected because their window was final.
    pub late: u64,
    /// Changes whose images all failed the filters.
    pub filtered: u64,
}

/// Where each spec item reads in a projected image.
#[derive(Debug, Clone)]
struct Slots {
    dimensions: Vec<usize>,
    metrics: Vec<usize>,
    filters: Vec<usize>,
    time: Option<usize>,
}

/// Windowed aggregates of one pipeline.
pub struct WindowEngine {
    spec: PipelineSpec,
    windows: Vec<WindowSize>,
    projection: Projection,
    combiner: Combiner,
    disorder_ms: i64,
    lateness_ms: i64,
    worker: String,
    dims: Vec<Dict>,
    distinct_dicts: Vec<Dict>,
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
        let mut paths: Vec<String> = spec.dimensions.clone();
        paths.extend(spec.metrics.iter().map(|m| m.attribute.clone()));
        paths.extend(spec.filters.iter().map(|f| f.attribute.clone()));
        paths.extend(spec.event_time_attribute.clone());
        let projection = Projection::new(paths);
        let slot = |path: &str| projection.slot(path).unwrap_or_default();
        let slots = Slots {
            dimensions: spec.dimensions.iter().map(|d| slot(d)).collect(),
            metrics: spec.metrics.iter().map(|m| slot(&m.attribute)).collect(),
            filters: spec.filters.iter().map(|f| slot(&f.attribute)).collect(),
            time: spec.event_time_attribute.as_deref().map(slot),
        };
        let (disorder_ms, lateness_ms) = (spec.disorder_ms()?, spec.lateness_ms()?);
        Ok(WindowEngine {
            combiner: Combiner::new(
                spec.clone(),
                windows.clone(),
                slots,
                disorder_ms,
                lateness_ms,
            ),
            disorder_ms,
            lateness_ms,
            dims: spec.dimensions.iter().map(|_| Dict::default()).collect(),
            distinct_dicts: spec.metrics.iter().map(|_| Dict::default()).collect(),
            spec,
            windows,
            projection,
            worker: String::new(),
            groups: HashMap::default(),
            changed: BTreeMap::new(),
            max_event_time: i64::MIN,
            version: first_version,
            stats: EngineStats::default(),
        })
    }

    /// Sets the batch size (in rows) from which polars does the sums; both paths give the same
    /// results (tests run both). See [`Combiner::with_polars_threshold`].
    pub fn with_polars_threshold(mut self, rows: usize) -> Self {
        self.combiner = self.combiner.with_polars_threshold(rows);
        self
    }

    /// The engine's state-free half, to reduce batches where they are decoded
    /// ([`Self::apply_combined`] takes what it gives).
    pub fn combiner(&self) -> Combiner {
        self.combiner.clone()
    }

    /// Makes this the engine of one worker among several sharing a stream: its documents carry the
    /// worker's name (and so have their own ids) and hold only the changes this engine is given.
    pub fn with_worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = worker.into();
        self
    }

    /// The spec the engine runs.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// The attribute paths the engine reads: what a decoder must project.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// The worker the engine's documents belong to; empty for a single process.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// What the engine has seen so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The newest event time aggregated (epoch ms), `i64::MIN` before the first.
    pub fn max_event_time(&self) -> i64 {
        self.max_event_time
    }

    /// The watermark: the newest event time minus the allowed disorder.
    pub fn watermark(&self) -> i64 {
        self.max_event_time.saturating_sub(self.disorder_ms)
    }

    /// The version the last [`WindowEngine::take_changed`] gave its documents.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Aggregates a micro-batch of decoded changes (the live path): projects them and applies
    /// them. Changes that cannot be aggregated are returned (by position), not applied.
    pub fn apply(&mut self, events: &[ChangeEvent]) -> Result<Vec<Rejected>, Error> {
        let projected: Vec<ProjectedChange> = events
            .iter()
            .map(|e| ProjectedChange::from_event(e, &self.projection))
            .collect();
        self.apply_projected(&projected)
    }

    /// Aggregates a micro-batch of projected changes (projected with [`Self::projection`]).
    pub fn apply_projected(&mut self, changes: &[ProjectedChange]) -> Result<Vec<Rejected>, Error> {
        self.apply_projected_parts(&[changes])
    }

    /// [`Self::apply_projected`] for a micro-batch in several parts (the batches a source
    /// delivered, not copied into one): the same as applying their concatenation, and
    /// [`Rejected::index`] counts in that concatenation.
    pub fn apply_projected_parts(
        &mut self,
        parts: &[&[ProjectedChange]],
    ) -> Result<Vec<Rejected>, Error> {
        let combined = self.combiner.combine(parts)?;
        Ok(self.apply_combined(vec![combined]))
    }

    /// Aggregates batches reduced by [`Self::combiner`], in order: the same as applying the
    /// concatenation of their changes, and [`Rejected::index`] counts in that concatenation.
    /// Each batch's changes that the engine's past makes late are rejected here, bucket by bucket
    /// (see [`combine`]); the rest of the batch's sums are added to the state.
    pub fn apply_combined(&mut self, batches: impl IntoIterator<Item = Combined>) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        let mut offset = 0;
        for batch in batches {
            let before = self.max_event_time;
            let first = rejected.len();
            let late = |held: &combine::Held, engine: &WindowEngine| {
                let earliest_end = Combiner::earliest_end(&engine.windows, held.time);
                let watermark = before
                    .max(held.newest_before)
                    .saturating_sub(engine.disorder_ms);
                Rejected {
                    index: offset + held.index as usize,
                    reason: format!(
                        "late: event time {} falls in a window that ended at {earliest_end} and \
                         is final (watermark {watermark}, allowed lateness {})",
                        held.time, engine.spec.allowed_lateness
                    ),
                    late: true,
                    origin: batch.origin(held),
                }
            };
            for r in &batch.rejected {
                rejected.push(Rejected {
                    index: offset + r.index,
                    ..r.clone()
                });
            }
            for held in &batch.late {
                rejected.push(late(held, self));
            }
            let spec = Arc::clone(&self.combiner.spec);
            let late_buckets: Vec<bool> = batch
                .buckets
                .iter()
                .map(|b| {
                    before != i64::MIN && b.deadline <= before.saturating_sub(self.disorder_ms)
                })
                .collect();
            if late_buckets.contains(&true) {
                for held in &batch.held {
                    if late_buckets[held.bucket as usize] {
                        rejected.push(late(held, self));
                    }
                }
            }
            // The batch's dictionary codes in the engine's dictionaries: those the groups taken
            // use (a value seen only in late changes is not kept).
            let mut dims: Vec<Vec<u32>> =
                batch.dims.iter().map(|v| vec![u32::MAX; v.len()]).collect();
            let mut distinct: Vec<Vec<u32>> = batch
                .distinct
                .iter()
                .map(|v| vec![u32::MAX; v.len()])
                .collect();
            for (bucket, _) in batch
                .buckets
                .iter()
                .zip(&late_buckets)
                .filter(|(_, l)| !**l)
            {
                for (key, part) in &bucket.groups {
                    if key.dimension > 0 {
                        let d = key.dimension as usize - 1;
                        let code = &mut dims[d][key.value as usize];
                        if *code == u32::MAX {
                            *code = self.dims[d].code(&batch.dims[d][key.value as usize]);
                        }
                    }
                    for (m, codes) in part.distinct.iter().enumerate() {
                        for c in codes {
                            let code = &mut distinct[m][*c as usize];
                            if *code == u32::MAX {
                                *code =
                                    self.distinct_dicts[m].code(&batch.distinct[m][*c as usize]);
                            }
                        }
                    }
                }
            }
            for (bucket, is_late) in batch.buckets.iter().zip(late_buckets) {
                if is_late {
                    for (held, _) in &bucket.failed {
                        rejected.push(late(held, self));
                    }
                    continue;
                }
                for (held, reason) in &bucket.failed {
                    rejected.push(Rejected {
                        index: offset + held.index as usize,
                        reason: reason.clone(),
                        late: false,
                        origin: batch.origin(held),
                    });
                }
                self.stats.aggregated += bucket.aggregated;
                self.stats.filtered += bucket.filtered;
                self.max_event_time = self.max_event_time.max(bucket.newest);
                for (key, part) in &bucket.groups {
                    let key = GroupKey {
                        value: match key.dimension {
                            0 => key.value,
                            d => dims[d as usize - 1][key.value as usize],
                        },
                        ..*key
                    };
                    self.touch(key).add(part, &spec.metrics, Some(&distinct));
                }
            }
            self.stats.unknown_kind += batch.kinds[3];
            self.stats.rejected += (rejected.len() - first) as u64;
            self.stats.late += rejected[first..].iter().filter(|r| r.late).count() as u64;
            rejected[first..].sort_by_key(|r| r.index);
            offset += batch.changes;
        }
        rejected
    }

    /// The state of a group about to change, remembering its values as of the last emission.
    fn touch(&mut self, key: GroupKey) -> &mut Acc {
        let metrics = self.spec.metrics.len();
        if !self.changed.contains_key(&key) {
            // First change since the last emission: remember the values to undo to.
            let existing = self.groups.get(&key).cloned();
            self.changed.insert(key, existing);
        }
        self.groups.entry(key).or_insert_with(|| Acc::new(metrics))
    }

    /// Restores the open windows from stored documents and the checkpoint's newest event time, so
    /// a resumed source continues the same aggregates. Only documents of this engine's pipeline and
    /// worker are taken: read them with [`streamlens_core::AggQuery::worker`] set to
    /// [`WindowEngine::worker`] (unmerged), after rolling back what the checkpoint does not cover.
    /// Final documents are skipped (they cannot change). The restored values become the groups'
    /// previous values for the next emission. Documents of windows or dimensions no longer in the
    /// spec are skipped and counted in the return value.
    pub fn restore(
        &mut self,
        docs: &[AggregateDoc],
        max_event_time: i64,
        version: u64,
    ) -> Result<usize, Error> {
        let mut skipped = 0;
        for doc in docs
            .iter()
            .filter(|d| d.pipeline == self.spec.name && d.worker == self.worker && !d.is_final)
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
            let unfit = |e: String| {
                Error::Spec(format!(
                    "stored document {} does not fit the spec: {e}",
                    doc.id()
                ))
            };
            let mut acc = Acc::new(self.spec.metrics.len());
            acc.inserts = doc.inserts;
            acc.modifies = doc.modifies;
            acc.removes = doc.removes;
            acc.net_count = doc.net_count;
            acc.version = doc.version;
            for (m, spec) in self.spec.metrics.iter().enumerate() {
                if let Some(v) = doc.sums.get(&spec.name) {
                    acc.sums[m] = parse_scaled(v, spec.scale).map_err(unfit)?;
                }
                if let Some(n) = doc.counts.get(&spec.name) {
                    acc.counts[m] = *n;
                }
                if let Some(v) = doc.mins.get(&spec.name) {
                    acc.mins[m] = Some(parse_scaled(v, spec.scale).map_err(unfit)?);
                }
                if let Some(v) = doc.maxs.get(&spec.name) {
                    acc.maxs[m] = Some(parse_scaled(v, spec.scale).map_err(unfit)?);
                }
                if let Some(values) = doc.distinct.get(&spec.name) {
                    let dict = &mut self.distinct_dicts[m];
                    acc.distinct[m] = values.iter().map(|v| dict.code(v)).collect();
                }
            }
            let value = if dimension == 0 {
                0
            } else {
                self.dims[dimension - 1].code(&doc.value)
            };
            let key = GroupKey {
                window: window as u32,
                start: doc.window_start,
                dimension: dimension as u32,
                value,
            };
            self.changed.remove(&key);
            self.groups.insert(key, acc);
        }
        self.max_event_time = self.max_event_time.max(max_event_time);
        self.version = self.version.max(version);
        Ok(skipped)
    }

    fn doc_of(&self, key: &GroupKey, acc: &Acc) -> AggregateDoc {
        let size = &self.windows[key.window as usize];
        let mut doc = AggregateDoc {
            pipeline: self.spec.name.clone(),
            window: size.label.clone(),
            window_start: key.start,
            window_end: key.start + size.millis,
            dimension: match key.dimension {
                0 => ALL_DIMENSION.to_owned(),
                d => self.spec.dimensions[d as usize - 1].clone(),
            },
            value: match key.dimension {
                0 => ALL_DIMENSION.to_owned(),
                d => self.dims[d as usize - 1].value(key.value).to_owned(),
            },
            inserts: acc.inserts,
            modifies: acc.modifies,
            removes: acc.removes,
            net_count: acc.net_count,
            is_final: acc.is_final,
            version: acc.version,
            worker: self.worker.clone(),
            ..AggregateDoc::default()
        };
        for (m, spec) in self.spec.metrics.iter().enumerate() {
            let name = spec.name.clone();
            match spec.kind {
                MetricKind::Sum => {
                    doc.sums
                        .insert(name, format_scaled(acc.sums[m], spec.scale));
                }
                MetricKind::Count => {
                    doc.counts.insert(name, acc.counts[m]);
                }
                MetricKind::Avg => {
                    doc.sums
                        .insert(name.clone(), format_scaled(acc.sums[m], spec.scale));
                    doc.counts.insert(name, acc.counts[m]);
                }
                MetricKind::Min => {
                    if let Some(v) = acc.mins[m] {
                        doc.mins.insert(name, format_scaled(v, spec.scale));
                    }
                }
                MetricKind::Max => {
                    if let Some(v) = acc.maxs[m] {
                        doc.maxs.insert(name, format_scaled(v, spec.scale));
                    }
                }
                MetricKind::Distinct => {
                    let dict = &self.distinct_dicts[m];
                    let mut values: Vec<String> = acc.distinct[m]
                        .iter()
                        .map(|c| dict.value(*c).to_owned())
                        .collect();
                    values.sort();
                    doc.distinct.insert(name, values);
                }
            }
        }
        doc
    }

    /// The documents of every group changed since the last call — including windows the
    /// watermark has made final, which are then dropped from memory — each with its values as of
    /// the previous call that returned it in [`AggregateDoc::prev`] (`None` for a new group).
    pub fn take_changed(&mut self) -> Vec<AggregateDoc> {
        let watermark = self.watermark();
        if self.max_event_time != i64::MIN {
            let finals: Vec<GroupKey> = self
                .groups
                .iter()
                .filter(|(key, acc)| {
                    !acc.is_final
                        && key.start + self.windows[key.window as usize].millis + self.lateness_ms
                            <= watermark
                })
                .map(|(key, _)| *key)
                .collect();
            for key in finals {
                self.touch(key).is_final = true;
            }
        }
        let changed = std::mem::take(&mut self.changed);
        self.version += 1;
        let version = self.version;
        let mut docs = Vec::with_capacity(changed.len());
        for (key, prev) in changed {
            let Some(acc) = self.groups.get_mut(&key) else {
                continue;
            };
            acc.version = version;
            let acc = acc.clone();
            let mut doc = self.doc_of(&key, &acc);
            doc.prev = prev.map(|p| {
                PrevValues::from(AggregateDoc {
                    version: p.version,
                    ..self.doc_of(&key, &p)
                })
            });
            docs.push(doc);
        }
        self.groups.retain(|_, acc| !acc.is_final);
        docs
    }
}

fn filter_passes(filter: &FilterSpec, value: Option<ScalarRef<'_>>) -> bool {
    let text = value.map(|v| v.text);
    if let Some(want) = &filter.equals {
        return text == Some(want.as_str());
    }
    if let Some(unwanted) = &filter.not_equals {
        return text != Some(unwanted.as_str());
    }
    if let Some(options) = &filter.one_of {
        return text.is_some_and(|t| options.iter().any(|o| o == t));
    }
    if let Some(exists) = filter.exists {
        return text.is_some() == exists;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        str::FromStr,
    };

    use rust_decimal::Decimal;
    use streamlens_core::{AttributeValue, EventKind, Item};

    use super::*;
    use crate::config::{FilterSpec, MetricSpec};

    pub(crate) fn spec() -> PipelineSpec {
        let metric = |name: &str, attribute: &str, kind| MetricSpec {
            name: name.into(),
            attribute: attribute.into(),
            kind,
            scale: 2,
        };
        PipelineSpec {
            name: "orders".into(),
            dimensions: vec!["status".into(), "region".into()],
            filters: vec![FilterSpec {
                attribute: "type".into(),
                equals: None,
                not_equals: None,
                one_of: Some(vec!["order".into(), "refund".into()]),
                exists: None,
            }],
            metrics: vec![
                metric("amount", "amount", MetricKind::Sum),
                metric("qty", "qty", MetricKind::Count),
                metric("avg_amount", "amount", MetricKind::Avg),
                metric("min_amount", "amount", MetricKind::Min),
                metric("max_amount", "amount", MetricKind::Max),
                metric("tags", "tag", MetricKind::Distinct),
            ],
            windows: vec!["1m".into(), "5m/1m".into()],
            allowed_lateness: "1d".into(),
            ..PipelineSpec::default()
        }
    }

    pub(crate) fn item(id: u32, status: &str, amount: &str, r: u64) -> Item {
        let mut item = BTreeMap::from([
            ("pk".into(), AttributeValue::S(format!("o{id}"))),
            ("status".into(), AttributeValue::S(status.into())),
            ("amount".into(), AttributeValue::N(amount.into())),
            ("tag".into(), AttributeValue::S(format!("t{}", r % 7))),
            (
                "type".into(),
                AttributeValue::S(["order", "refund", "test"][(r % 3) as usize].into()),
            ),
        ]);
        if !r.is_multiple_of(4) {
            item.insert("region".into(), AttributeValue::S(format!("r{}", r % 3)));
        }
        if !r.is_multiple_of(5) {
            item.insert("qty".into(), AttributeValue::N((r % 9).to_string()));
        }
        item
    }

    pub(crate) fn event(
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

    /// A pseudo-random but valid history of items (a tiny LCG keeps the test self-contained);
    /// event times mostly rise, with some disorder.
    pub(crate) fn history(n: usize, seed: u64) -> Vec<ChangeEvent> {
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
            let time = t - next(8_000) as i64;
            let amount = format!("{}.{:02}", next(1000), next(100));
            let status = statuses[next(3) as usize];
            let id = next(40) as u32;
            let r = next(1 << 20);
            match live.get(&id).cloned() {
                None => {
                    let new = item(id, status, &amount, r);
                    live.insert(id, new.clone());
                    out.push(event(seq, time, EventKind::Insert, None, Some(new)));
                }
                Some(old) if next(3) == 0 => {
                    live.remove(&id);
                    out.push(event(seq, time, EventKind::Remove, Some(old), None));
                }
                Some(old) => {
                    let new = item(id, status, &amount, r);
                    live.insert(id, new.clone());
                    out.push(event(seq, time, EventKind::Modify, Some(old), Some(new)));
                }
            }
        }
        out
    }

    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    pub(crate) struct Cell {
        counts: [i64; 4],
        sum: Decimal,
        qty: i64,
        min: Option<Decimal>,
        max: Option<Decimal>,
        tags: BTreeSet<String>,
    }

    pub(crate) type Expected = BTreeMap<(String, i64, String, String), Cell>;

    fn text(image: &Item, name: &str) -> Option<String> {
        match image.get(name)? {
            AttributeValue::S(s) | AttributeValue::N(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// The plain computation the engine must agree with: one event at a time, Decimal sums, the
    /// spec of [`spec`] written out by hand.
    pub(crate) fn reference(events: &[ChangeEvent]) -> Expected {
        let mut out = Expected::new();
        for e in events {
            let t = e.event_time_ms;
            let mut windows = vec![("1m", t - t.rem_euclid(60_000))];
            for hop in 0..5 {
                windows.push(("5m/1m", t - t.rem_euclid(60_000) - hop * 60_000));
            }
            let mut add = |image: &Item, sign: i64, kind: usize| {
                let kept = matches!(text(image, "type").as_deref(), Some("order" | "refund"));
                if !kept {
                    return;
                }
                let amount = Decimal::from_str(&text(image, "amount").unwrap()).unwrap();
                let groups = [
                    ("_all".to_owned(), "_all".to_owned()),
                    ("status".into(), text(image, "status").unwrap()),
                    (
                        "region".into(),
                        text(image, "region").unwrap_or_else(|| MISSING.into()),
                    ),
                ];
                for (label, start) in &windows {
                    for (dim, value) in &groups {
                        let cell = out
                            .entry((label.to_string(), *start, dim.clone(), value.clone()))
                            .or_default();
                        if kind < 3 {
                            cell.counts[kind] += 1;
                        }
                        cell.counts[3] += sign;
                        cell.sum += amount * Decimal::from(sign);
                        if image.contains_key("qty") {
                            cell.qty += sign;
                        }
                        if sign > 0 {
                            cell.min = Some(cell.min.map_or(amount, |m| m.min(amount)));
                            cell.max = Some(cell.max.map_or(amount, |m| m.max(amount)));
                            cell.tags.insert(text(image, "tag").unwrap());
                        }
                    }
                }
            };
            match e.kind {
                EventKind::Insert => add(e.new_image.as_ref().unwrap(), 1, 0),
                EventKind::Remove => add(e.old_image.as_ref().unwrap(), -1, 2),
                EventKind::Modify => {
                    add(e.old_image.as_ref().unwrap(), -1, 9);
                    add(e.new_image.as_ref().unwrap(), 1, 1);
                }
                EventKind::Unknown(_) => {}
            }
        }
        out
    }

    pub(crate) fn cells(docs: impl IntoIterator<Item = AggregateDoc>) -> Expected {
        docs.into_iter()
            .map(|d| {
                let dec = |v: &String| Decimal::from_str(v).unwrap();
                let cell = Cell {
                    counts: [d.inserts, d.modifies, d.removes, d.net_count],
                    sum: dec(&d.sums["amount"]),
                    qty: d.counts["qty"],
                    min: d.mins.get("min_amount").map(dec),
                    max: d.maxs.get("max_amount").map(dec),
                    tags: d.distinct["tags"].iter().cloned().collect(),
                };
                assert_eq!(d.sums["avg_amount"], d.sums["amount"]);
                ((d.window, d.window_start, d.dimension, d.value), cell)
            })
            .collect()
    }

    pub(crate) fn run(events: &[ChangeEvent], batch: usize, polars_from: usize) -> Expected {
        let mut engine = WindowEngine::new(spec(), 0)
            .unwrap()
            .with_polars_threshold(polars_from);
        let mut docs = BTreeMap::new();
        for chunk in events.chunks(batch) {
            assert_eq!(engine.apply(chunk).unwrap(), vec![]);
            for doc in engine.take_changed() {
                docs.insert(doc.id(), doc);
            }
        }
        cells(docs.into_values())
    }

    #[test]
    fn aggregates_equal_a_plain_computation_whatever_the_batch_size() {
        let events = history(2000, 42);
        let expected = reference(&events);
        assert!(expected.len() > 500, "the history must span many windows");
        assert!(expected
            .values()
            .any(|c| c.min.is_some() && c.tags.len() > 2));
        // Small batches are summed per cell as they come, large ones by polars: both must agree.
        // A batch that could have been large (up to 500 rows) but is not (fewer than 400) is
        // kept as rows and then summed per cell.
        for (batch, polars_from) in [
            (1, usize::MAX),
            (7, usize::MAX),
            (250, 400),
            (250, 0),
            (250, usize::MAX),
            (events.len(), 0),
            (events.len(), usize::MAX),
        ] {
            assert_eq!(
                run(&events, batch, polars_from),
                expected,
                "batch size {batch}, polars from {polars_from} rows"
            );
        }
    }

    #[test]
    fn a_modify_moves_the_item_between_groups_and_filters_take_it_out() {
        let mut engine = WindowEngine::new(spec(), 0).unwrap();
        let t = 1_700_000_000_000;
        let order = |status: &str, amount: &str| item(1, status, amount, 1); // type refund, region r1
        let mut test_type = order("paid", "12");
        test_type.insert("type".into(), AttributeValue::S("test".into()));
        engine
            .apply(&[
                event(1, t, EventKind::Insert, None, Some(order("new", "10.50"))),
                event(
                    2,
                    t,
                    EventKind::Modify,
                    Some(order("new", "10.50")),
                    Some(order("paid", "12")),
                ),
                event(
                    3,
                    t,
                    EventKind::Modify,
                    Some(order("paid", "12")),
                    Some(test_type),
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
        // Moved into `paid`, then filtered out of every group by its new type.
        assert_eq!(
            (get("paid").net_count, get("paid").sums["amount"].as_str()),
            (0, "0")
        );
        assert_eq!(get("paid").modifies, 1);
        assert_eq!(engine.stats().aggregated, 3);
    }

    #[test]
    fn bad_values_are_rejected_not_applied() {
        let mut engine = WindowEngine::new(spec(), 0).unwrap();
        let t = 1_700_000_000_000;
        let mut text_amount = item(4, "new", "1", 0);
        text_amount.insert("amount".into(), AttributeValue::S("lots".into()));
        let rejected = engine
            .apply(&[
                event(
                    1,
                    t,
                    EventKind::Insert,
                    None,
                    Some(item(1, "new", "1.234", 0)),
                ),
                event(2, t, EventKind::Modify, None, Some(item(1, "new", "1", 0))),
                event(3, t, EventKind::Insert, None, Some(item(3, "new", "1", 0))),
                event(4, t, EventKind::Insert, None, Some(text_amount)),
            ])
            .unwrap();
        let reasons: Vec<_> = rejected
            .iter()
            .map(|r| (r.index, r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].1.contains("3 decimal places"), "{reasons:?}");
        assert!(reasons[1].1.contains("NEW_AND_OLD_IMAGES"));
        assert_eq!(reasons[2].0, 3);
        assert!(reasons[2].1.contains("not N"));
        assert_eq!(engine.stats().aggregated, 1);
        assert_eq!(engine.stats().rejected, 3);
    }

    #[test]
    fn windows_become_final_and_late_changes_are_rejected_and_counted() {
        let mut spec = spec();
        spec.windows = vec!["1m".into()];
        spec.allowed_disorder = "10s".into();
        spec.allowed_lateness = "30s".into();
        let mut engine = WindowEngine::new(spec, 0).unwrap();
        let t0 = 1_700_000_020_000; // 40 s into a minute
        let insert = |seq, t| {
            event(
                seq,
                t,
                EventKind::Insert,
                None,
                Some(item(seq as u32, "new", "1", 1)),
            )
        };
        assert!(engine.apply(&[insert(1, t0)]).unwrap().is_empty());
        let first = engine.take_changed();
        assert!(first.iter().all(|d| !d.is_final));
        // The window [t0-40s, t0+20s) ends at t0+20s; final once the watermark (newest - 10 s)
        // reaches its end + 30 s, i.e. at a newest event time of t0+60s.
        assert!(engine.apply(&[insert(2, t0 + 59_000)]).unwrap().is_empty());
        assert!(engine.take_changed().iter().all(|d| !d.is_final));
        // Still accepted: the watermark is not past end + lateness yet.
        assert!(engine.apply(&[insert(3, t0 - 30_000)]).unwrap().is_empty());
        assert!(engine.apply(&[insert(4, t0 + 60_000)]).unwrap().is_empty());
        let docs = engine.take_changed();
        let finals: Vec<_> = docs.iter().filter(|d| d.is_final).collect();
        assert!(!finals.is_empty());
        assert!(finals.iter().all(|d| d.window_start == t0 - 40_000));
        let all = finals.iter().find(|d| d.dimension == "_all").unwrap();
        assert_eq!(
            all.inserts, 2,
            "the on-time and the late-but-allowed change"
        );
        // Now late: quarantined with a reason, counted, not applied.
        let rejected = engine.apply(&[insert(5, t0 - 1_000)]).unwrap();
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0].late && rejected[0].reason.starts_with("late"),
            "{rejected:?}"
        );
        assert_eq!(engine.stats().late, 1);
        // The final window is emitted once and then forgotten.
        assert!(engine
            .take_changed()
            .iter()
            .all(|d| d.window_start != t0 - 40_000));
    }

    #[test]
    fn event_time_can_come_from_an_attribute() {
        let mut spec = spec();
        spec.windows = vec!["1h".into()];
        spec.event_time_attribute = Some("created".into());
        spec.event_time_format = crate::config::TimeFormat::Iso8601;
        let mut engine = WindowEngine::new(spec, 0).unwrap();
        let mut with_time = item(1, "new", "5", 1);
        with_time.insert(
            "created".into(),
            AttributeValue::S("2026-01-01T10:30:00Z".into()),
        );
        let rejected = engine
            .apply(&[
                event(1, 42, EventKind::Insert, None, Some(with_time)),
                event(2, 42, EventKind::Insert, None, Some(item(2, "new", "5", 1))),
            ])
            .unwrap();
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].reason.contains("`created` is missing"));
        let docs = engine.take_changed();
        assert!(
            docs.iter().all(|d| d.window_start == 1_767_261_600_000),
            "{docs:?}"
        );
    }

    /// An event time no calendar holds is refused with its reason, and nothing after it in the
    /// batch is judged against it (the newest time is not pushed to the end of time).
    #[test]
    fn an_event_time_out_of_range_is_refused_alone() {
        let mut spec = spec();
        spec.windows = vec!["1m".into()];
        spec.event_time_attribute = Some("at".into());
        spec.event_time_format = crate::config::TimeFormat::EpochMillis;
        let at = |id: u32, ms: &str| {
            let mut image = item(id, "new", "5", 1);
            image.insert("at".into(), AttributeValue::N(ms.into()));
            event(id.into(), 0, EventKind::Insert, None, Some(image))
        };
        for first in [None, Some("1767225600000")] {
            let mut engine = WindowEngine::new(spec.clone(), 0).unwrap();
            let mut batch: Vec<ChangeEvent> = first.map(|ms| at(1, ms)).into_iter().collect();
            batch.extend([at(2, "9223372036854775807"), at(3, "1767225601000")]);
            let rejected = engine.apply(&batch).unwrap();
            assert_eq!(rejected.len(), 1, "{rejected:?}");
            assert_eq!(rejected[0].index, batch.len() - 2);
            assert!(!rejected[0].late);
            assert!(
                rejected[0].reason.contains("out of range"),
                "{}",
                rejected[0].reason
            );
            assert_eq!(engine.max_event_time(), 1_767_225_601_000);
            assert_eq!(engine.stats().aggregated, batch.len() as u64 - 1);
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
                match last.get(&doc.id()) {
                    None => {
                        new_groups += 1;
                        assert_eq!(doc.prev, None);
                    }
                    Some(before) => {
                        rewrites += 1;
                        assert!(before.version < doc.version);
                        // Undoing the write gives back the previous document exactly.
                        let undone = doc.previous().unwrap();
                        assert_eq!(
                            undone,
                            AggregateDoc {
                                prev: None,
                                ..before.clone()
                            }
                        );
                    }
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
        // Another worker's documents (and single-process ones) for the same groups are ignored.
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
            let (mut a, mut b) = (whole.take_changed(), resumed.take_changed());
            assert!(!a.is_empty());
            a.sort_by_key(|d| d.id());
            b.sort_by_key(|d| d.id());
            assert_eq!(a, b);
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A valid stream: each item's changes in order with non-decreasing times (as DynamoDB
        /// gives them within a shard), different items' changes interleaved as `order` says.
        fn valid_stream(per_item: &[Vec<(i64, u64)>], order: &[usize]) -> Vec<ChangeEvent> {
            let mut cursors = vec![0usize; per_item.len()];
            let mut live: Vec<Option<Item>> = vec![None; per_item.len()];
            let mut out = Vec::new();
            let mut pick = order.iter().cycle();
            let total: usize = per_item.iter().map(Vec::len).sum();
            while out.len() < total {
                let open: Vec<usize> = (0..per_item.len())
                    .filter(|i| cursors[*i] < per_item[*i].len())
                    .collect();
                let id = open[*pick.next().unwrap_or(&0) % open.len()];
                let (t, r) = per_item[id][cursors[id]];
                cursors[id] += 1;
                let seq = out.len() as u64;
                let status = ["new", "paid", "sent"][(r % 3) as usize];
                let amount = format!("{}.{:02}", r % 997, r % 89);
                let new = item(id as u32, status, &amount, r);
                let event = match live[id].take() {
                    None => {
                        live[id] = Some(new.clone());
                        event(seq, t, EventKind::Insert, None, Some(new))
                    }
                    Some(old) if r % 4 == 0 => event(seq, t, EventKind::Remove, Some(old), None),
                    Some(old) => {
                        live[id] = Some(new.clone());
                        event(seq, t, EventKind::Modify, Some(old), Some(new))
                    }
                };
                out.push(event);
            }
            out
        }

        /// Per item: 1 to 6 changes, at non-decreasing times within ten minutes.
        fn items() -> impl Strategy<Value = Vec<Vec<(i64, u64)>>> {
            prop::collection::vec(
                prop::collection::vec((0i64..90_000, any::<u64>()), 1..6).prop_map(|steps| {
                    let mut t = 1_700_000_000_000i64;
                    steps
                        .into_iter()
                        .map(|(dt, r)| {
                            t += dt;
                            (t, r)
                        })
                        .collect()
                }),
                1..25,
            )
        }

        fn run_in(events: &[ChangeEvent], cuts: &[usize], polars_from: usize) -> Expected {
            let mut engine = WindowEngine::new(spec(), 0)
                .unwrap()
                .with_polars_threshold(polars_from);
            let mut docs = BTreeMap::new();
            let mut at = 0;
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (events.len() + 1)).collect();
            bounds.push(events.len());
            bounds.sort();
            for end in bounds {
                assert_eq!(engine.apply(&events[at..end]).unwrap(), vec![]);
                at = end;
                for doc in engine.take_changed() {
                    docs.insert(doc.id(), doc);
                }
            }
            cells(docs.into_values())
        }

        /// Inserts at whole seconds out of order by up to ten minutes (so that times fall right on
        /// deadlines too); one in eleven has an amount that is not a number.
        fn disordered(times: &[(i64, u64)]) -> Vec<ChangeEvent> {
            times
                .iter()
                .enumerate()
                .map(|(i, (dt, r))| {
                    let amount = if r % 11 == 0 {
                        "x".to_owned()
                    } else {
                        format!("{}.{:02}", r % 997, r % 89)
                    };
                    let status = ["new", "paid"][(r % 2) as usize];
                    let new = item(i as u32, status, &amount, *r);
                    event(
                        i as u64,
                        1_700_000_000_000 + dt * 1000,
                        EventKind::Insert,
                        None,
                        Some(new),
                    )
                })
                .collect()
        }

        /// What an engine with 5 s disorder and 10 s lateness aggregates of `events` cut into
        /// batches at `cuts`, and what it rejects: (index in `events`, late), and the reasons.
        /// `at_once`: the batches are combined apart and applied in one call.
        fn run_rejecting(
            events: &[ChangeEvent],
            cuts: &[usize],
            polars_from: usize,
            at_once: bool,
        ) -> (Expected, Vec<(usize, bool)>, Vec<String>) {
            let mut spec = spec();
            spec.allowed_disorder = "5s".into();
            spec.allowed_lateness = "10s".into();
            let mut engine = WindowEngine::new(spec, 0)
                .unwrap()
                .with_polars_threshold(polars_from);
            let (mut docs, mut rejected, mut reasons) = (BTreeMap::new(), Vec::new(), Vec::new());
            let mut at = 0;
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (events.len() + 1)).collect();
            bounds.push(events.len());
            bounds.sort();
            let mut combined = Vec::new();
            for end in bounds {
                if at_once {
                    let projected: Vec<ProjectedChange> = events[at..end]
                        .iter()
                        .map(|e| ProjectedChange::from_event(e, engine.projection()))
                        .collect();
                    combined.push(engine.combiner().combine(&[&projected]).unwrap());
                    at = end;
                    continue;
                }
                for r in engine.apply(&events[at..end]).unwrap() {
                    rejected.push((at + r.index, r.late));
                    reasons.push(format!("{} {}", r.origin, r.reason));
                }
                at = end;
                for doc in engine.take_changed() {
                    docs.insert(doc.id(), doc);
                }
            }
            for r in engine.apply_combined(combined) {
                rejected.push((r.index, r.late));
                reasons.push(format!("{} {}", r.origin, r.reason));
            }
            for doc in engine.take_changed() {
                docs.insert(doc.id(), doc);
            }
            let stats = engine.stats();
            assert_eq!(stats.rejected, rejected.len() as u64);
            assert_eq!(stats.late, rejected.iter().filter(|r| r.1).count() as u64);
            (cells(docs.into_values()), rejected, reasons)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn late_and_bad_changes_are_rejected_whatever_the_batch_boundaries(
                times in prop::collection::vec((0i64..600, any::<u64>()), 1..120),
                cuts in prop::collection::vec(any::<usize>(), 0..12),
                polars in any::<bool>(),
                at_once in any::<bool>(),
            ) {
                let events = disordered(&times);
                // The plain rule, one change at a time: late when the end of its minute plus
                // the lateness is at or below the newest time aggregated so far minus the
                // disorder; else refused for a bad amount if it passes the filter.
                let mut newest = i64::MIN;
                let (mut expected, mut accepted) = (Vec::new(), Vec::new());
                for (i, e) in events.iter().enumerate() {
                    let t = e.event_time_ms;
                    let end = t.div_euclid(60_000) * 60_000 + 60_000;
                    if newest != i64::MIN && end + 10_000 <= newest - 5_000 {
                        expected.push((i, true));
                        continue;
                    }
                    let image = e.new_image.as_ref().unwrap();
                    let kept = matches!(text(image, "type").as_deref(), Some("order" | "refund"));
                    if kept && text(image, "amount").as_deref() == Some("x") {
                        expected.push((i, false));
                        continue;
                    }
                    newest = newest.max(t);
                    accepted.push(e.clone());
                }
                let polars_from = if polars { 0 } else { usize::MAX };
                let (cells, rejected, reasons) =
                    run_rejecting(&events, &cuts, polars_from, at_once);
                prop_assert_eq!(&rejected, &expected);
                prop_assert_eq!(cells, reference(&accepted));
                // The same reasons (watermarks included) as one change per batch.
                let each: Vec<usize> = (0..events.len()).collect();
                let (_, _, one_by_one) = run_rejecting(&events, &each, usize::MAX, false);
                prop_assert_eq!(reasons, one_by_one);
            }

            #[test]
            fn aggregates_do_not_depend_on_batch_boundaries(
                per_item in items(),
                order in prop::collection::vec(any::<usize>(), 1..50),
                cuts in prop::collection::vec(any::<usize>(), 0..12),
                polars in any::<bool>(),
            ) {
                let events = valid_stream(&per_item, &order);
                let polars_from = if polars { 0 } else { usize::MAX };
                prop_assert_eq!(run_in(&events, &cuts, polars_from), reference(&events));
            }

            #[test]
            fn aggregates_do_not_depend_on_how_items_interleave(
                per_item in items(),
                one in prop::collection::vec(any::<usize>(), 1..50),
                other in prop::collection::vec(any::<usize>(), 1..50),
            ) {
                let a = valid_stream(&per_item, &one);
                let b = valid_stream(&per_item, &other);
                prop_assert_eq!(run_in(&a, &[a.len() / 2], usize::MAX), run_in(&b, &[3], 0));
            }

            #[test]
            fn net_count_never_goes_negative_over_time(
                per_item in items(),
                order in prop::collection::vec(any::<usize>(), 1..50),
            ) {
                let events = valid_stream(&per_item, &order);
                let cells = run_in(&events, &[], usize::MAX);
                // Live items per group: the running sum of net counts over the 1m windows.
                let mut running: BTreeMap<(String, String), i64> = BTreeMap::new();
                for ((window, _, dimension, value), cell) in &cells {
                    if window != "1m" {
                        continue;
                    }
                    let live = running.entry((dimension.clone(), value.clone())).or_default();
                    *live += cell.counts[3];
                    prop_assert!(*live >= 0, "{dimension}={value} went to {live}");
                }
            }
        }
    }
}
