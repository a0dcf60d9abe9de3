//! Where aggregate documents are kept.
//!
//! Both stores keep a document under its deterministic id ([`AggregateDoc::id`]), so writing a
//! window again replaces it, and answer the same [`AggQuery`] with documents ordered by window
//! start, dimension and value.
//!
//! Several workers may share a pipeline: each writes its own partial documents and its own
//! checkpoint, and a query without [`AggQuery::worker`] returns the partial documents of each group
//! added together ([`merge_docs`]). After a crash, [`Store::roll_back`] undoes the documents a
//! worker wrote after its last checkpoint, using the previous values each document carries
//! ([`AggregateDoc::prev`]).

pub mod aws;
pub mod embedded;
pub mod opensearch;
pub mod retry;
pub mod rollup;

use std::{collections::BTreeMap, sync::Arc};

use streamlens_core::{
    AggQuery, AggregateDoc, AggregateReader, ChangeDoc, ChangeReader, PrevValues,
};

use crate::{
    config::StoreConfig,
    decimal::{format_scaled, parse_scaled},
    Error,
};

/// Where a pipeline's source had got to when its aggregates were last written: stored with the
/// documents it covers, so a restart resumes exactly where the stored aggregates end.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredCheckpoint {
    /// The pipeline.
    pub pipeline: String,
    /// The worker whose progress this is; empty for a single-process pipeline.
    #[serde(default)]
    pub worker: String,
    /// The source it reads (e.g. the stream ARN).
    pub source: String,
    /// Shard id → sequence number of the last record whose effects are in the documents.
    pub positions: BTreeMap<String, String>,
    /// The newest event time aggregated (epoch ms).
    pub max_event_time: i64,
    /// The highest document version written.
    pub version: u64,
}

impl StoredCheckpoint {
    /// The key the checkpoint is stored under: see [`checkpoint_id`].
    pub fn id(&self) -> String {
        checkpoint_id(&self.pipeline, &self.worker)
    }
}

/// The key of a pipeline's checkpoint: the pipeline name for a single process, else
/// `<pipeline>@<worker>` (with `%` and `@` percent-encoded in the worker). A pipeline name
/// containing `@` can coincide with another pipeline's worker key: reading a checkpoint checks
/// the stored pipeline and worker and fails on a mismatch.
pub fn checkpoint_id(pipeline: &str, worker: &str) -> String {
    if worker.is_empty() {
        pipeline.to_owned()
    } else {
        format!(
            "{pipeline}@{}",
            worker.replace('%', "%25").replace('@', "%40")
        )
    }
}

/// Checks that a checkpoint read under [`checkpoint_id`] is the one asked for.
pub(crate) fn check_checkpoint(
    checkpoint: StoredCheckpoint,
    pipeline: &str,
    worker: &str,
) -> Result<StoredCheckpoint, Error> {
    if checkpoint.pipeline == pipeline && checkpoint.worker == worker {
        Ok(checkpoint)
    } else {
        Err(Error::StoreConfig(format!(
            "the checkpoint stored under `{}` belongs to pipeline `{}` worker `{}`, not pipeline \
             `{pipeline}` worker `{worker}`: rename the pipeline (avoid `@`)",
            checkpoint_id(pipeline, worker),
            checkpoint.pipeline,
            checkpoint.worker
        )))
    }
}

/// What a [`Store::write`] did besides storing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Documents the store refused, each with the reason (to be quarantined).
    pub rejected: Vec<RejectedDoc>,
    /// Writes refused because the store holds the same or a newer version.
    pub stale: u64,
    /// The write is not durable yet (see [`Store::write_deferred`]).
    pub deferred: bool,
}

/// A document a store refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedDoc {
    /// Its id.
    pub id: String,
    /// Why, as the store said it.
    pub reason: String,
    /// The document as JSON.
    pub json: String,
}

/// A place aggregates are written to and read from.
#[async_trait::async_trait]
pub trait Store: AggregateReader + ChangeReader {
    /// Writes (creates or replaces) documents and, after them, the checkpoint they cover (under
    /// the checkpoint's pipeline and worker); returns once both are durable. The embedded store
    /// commits both in one transaction; OpenSearch writes the checkpoint only once every document
    /// is written or refused, so a checkpoint is never ahead of its documents. A write whose
    /// version is not above the stored document's is refused as stale (and counted). A document
    /// the store refuses for itself (OpenSearch: a mapping error) is returned in
    /// [`Written::rejected`] for the caller to quarantine; the others proceed.
    async fn write(
        &self,
        docs: &[AggregateDoc],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<Written, Error>;

    /// [`Self::write`], except that the store may return before the write is durable (group
    /// commit): it becomes durable with the next [`Self::write`] or [`Self::flush`], together with
    /// everything written before it. A crash before then loses the documents and the checkpoint
    /// together, never one without the other, so a resumed run reads their changes again. Readers
    /// see the write at once. [`Written::deferred`] says whether the store deferred it (the
    /// embedded store does; OpenSearch writes as [`Self::write`] does).
    async fn write_deferred(
        &self,
        docs: &[AggregateDoc],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<Written, Error> {
        self.write(docs, checkpoint).await
    }

    /// The last checkpoint written for a single-process pipeline (worker `""`).
    async fn checkpoint(&self, pipeline: &str) -> Result<Option<StoredCheckpoint>, Error> {
        self.checkpoint_of(pipeline, "").await
    }

    /// The last checkpoint written for one worker of a pipeline (`""`: a single process).
    async fn checkpoint_of(
        &self,
        pipeline: &str,
        worker: &str,
    ) -> Result<Option<StoredCheckpoint>, Error>;

    /// Undoes the writes of one worker (`""`: a single process) of a pipeline that its last
    /// checkpoint does not cover: every such document with `version > committed_version` is put
    /// back to its [`AggregateDoc::prev`] values, or deleted when it has none. Returns how many
    /// documents changed. Fails without changing anything when a document's previous write is
    /// itself newer than `committed_version` (more than one uncommitted write cannot be undone).
    ///
    /// Stores refuse a write whose version is not above the stored one, so the undo is itself a
    /// write under version `stamp` (the caller's engine version, above every version written
    /// before it started): a late write of the worker rolled back is then refused as stale. A
    /// restored document keeps its committed values as `prev`, so rolling back again restores
    /// the same values.
    async fn roll_back(
        &self,
        pipeline: &str,
        worker: &str,
        committed_version: u64,
        stamp: u64,
    ) -> Result<u64, Error>;

    /// Adds changes to the change index (see [`streamlens_core::changes`]). A change written
    /// again (same table, shard and sequence number) replaces itself, so a replay or a restart
    /// that reads changes twice keeps one copy. Changes the store refuses for themselves are
    /// returned in [`Written::rejected`], to be quarantined. The embedded store defers making
    /// them durable (see [`Self::write_deferred`]): the pipeline writes the aggregates and
    /// checkpoint covering them after them, and the next durable commit covers all.
    async fn write_changes(&self, changes: &[ChangeDoc]) -> Result<Written, Error>;

    /// Drops changes older than `before_ms` (event time) from the change index; returns how
    /// many were dropped (OpenSearch drops whole daily indices: it keeps up to a day more, and
    /// counts indices).
    async fn expire_changes(&self, before_ms: i64) -> Result<u64, Error>;

    /// Makes everything written visible to queries, and durable.
    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    /// A short description for logs and the dashboard.
    fn describe(&self) -> String;
}

/// Opens the store a configuration describes, creating what it needs (files, index templates).
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, Error> {
    Ok(match config {
        StoreConfig::Embedded(c) => open_embedded(&c.path)?,
        StoreConfig::Opensearch(c) => Arc::new(opensearch::OpenSearchStore::connect(c).await?),
    })
}

/// An embedded store file can be open once per process (redb locks it): a second `open` of a
/// file already open (a replay running into a namespace while the dashboard queries it) shares
/// the first one's store. Entries are weak: the file is closed once its last user is done.
fn open_embedded(path: &std::path::Path) -> Result<Arc<dyn Store>, Error> {
    use std::{collections::HashMap, path::PathBuf, sync::Mutex, sync::Weak};
    static OPEN: Mutex<Option<HashMap<PathBuf, Weak<embedded::EmbeddedStore>>>> = Mutex::new(None);
    let key = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    let open = open.get_or_insert_with(HashMap::new);
    open.retain(|_, store| store.strong_count() > 0);
    if let Some(store) = open.get(&key).and_then(Weak::upgrade) {
        return Ok(store);
    }
    let store = Arc::new(embedded::EmbeddedStore::open(path)?);
    open.insert(key, Arc::downgrade(&store));
    Ok(store)
}

/// Sorts documents the way every store answers.
pub(crate) fn sort_docs(docs: &mut [AggregateDoc]) {
    docs.sort_by(|a, b| {
        (
            a.window_start,
            &a.dimension,
            &a.value,
            &a.pipeline,
            &a.window,
            &a.worker,
        )
            .cmp(&(
                b.window_start,
                &b.dimension,
                &b.value,
                &b.pipeline,
                &b.window,
                &b.worker,
            ))
    });
}

/// Keeps the documents a query asks for, merged across workers unless the query names a worker,
/// and sorted.
pub(crate) fn filter_docs(
    query: &AggQuery,
    docs: Vec<AggregateDoc>,
) -> Result<Vec<AggregateDoc>, Error> {
    let docs: Vec<AggregateDoc> = docs.into_iter().filter(|d| query.matches(d)).collect();
    // Documents without a worker are one per group already: merging them changes nothing but
    // dropping `prev` (as a merge does).
    let mut docs = if query.worker.is_some() {
        docs
    } else if docs.iter().all(|d| d.worker.is_empty()) {
        docs.into_iter()
            .map(|d| AggregateDoc { prev: None, ..d })
            .collect()
    } else {
        merge_docs(docs)?
    };
    sort_docs(&mut docs);
    Ok(docs)
}

/// Adds together the documents of the same group (pipeline, window, window start, dimension and
/// value) written by different workers: counts and sums are added exactly, the version is the
/// highest, and the result has no worker and no `prev`. A group with one document keeps its
/// values as they are. The result is in group id order.
pub fn merge_docs(
    docs: impl IntoIterator<Item = AggregateDoc>,
) -> Result<Vec<AggregateDoc>, Error> {
    let mut groups: BTreeMap<String, Vec<AggregateDoc>> = BTreeMap::new();
    for doc in docs {
        groups.entry(doc.group_id()).or_default().push(doc);
    }
    groups
        .into_iter()
        .map(|(id, parts)| merge_parts(&id, parts))
        .collect()
}

pub(crate) fn merge_parts(id: &str, parts: Vec<AggregateDoc>) -> Result<AggregateDoc, Error> {
    let mut parts = parts.into_iter();
    let Some(mut merged) = parts.next() else {
        return Err(Error::Merge(format!("{id}: no documents")));
    };
    merged.worker.clear();
    merged.prev = None;
    let rest: Vec<AggregateDoc> = parts.collect();
    if rest.is_empty() {
        return Ok(merged);
    }
    let overflow = |what: &str| Error::Merge(format!("{id}: the sum of `{what}` overflows"));
    let mut sums: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in std::mem::take(&mut merged.sums) {
        sums.entry(name).or_default().push(value);
    }
    let add = |total: &mut i64, n: i64, what: &str| -> Result<(), Error> {
        *total = total.checked_add(n).ok_or_else(|| overflow(what))?;
        Ok(())
    };
    // Distinct values are gathered first and sorted once (sorting after every part was
    // quadratic in the number of parts).
    let mut distinct: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for doc in rest {
        add(&mut merged.inserts, doc.inserts, "inserts")?;
        add(&mut merged.modifies, doc.modifies, "modifies")?;
        add(&mut merged.removes, doc.removes, "removes")?;
        add(&mut merged.net_count, doc.net_count, "net_count")?;
        merged.version = merged.version.max(doc.version);
        merged.window_end = merged.window_end.max(doc.window_end);
        merged.is_final &= doc.is_final;
        for (name, value) in doc.sums {
            sums.entry(name).or_default().push(value);
        }
        for (name, n) in doc.counts {
            add(merged.counts.entry(name.clone()).or_default(), n, &name)?;
        }
        for (name, value) in doc.mins {
            extreme(&mut merged.mins, name, value, std::cmp::Ordering::Less)
                .map_err(|e| Error::Merge(format!("{id}: {e}")))?;
        }
        for (name, value) in doc.maxs {
            extreme(&mut merged.maxs, name, value, std::cmp::Ordering::Greater)
                .map_err(|e| Error::Merge(format!("{id}: {e}")))?;
        }
        for (name, values) in doc.distinct {
            distinct.entry(name).or_default().extend(values);
        }
    }
    for (name, values) in distinct {
        let set = merged.distinct.entry(name).or_default();
        set.extend(values);
        set.sort();
        set.dedup();
    }
    merged.sums = sums
        .into_iter()
        .map(|(name, values)| {
            add_decimals(&values)
                .map(|total| (name.clone(), total))
                .map_err(|e| Error::Merge(format!("{id}: sum `{name}`: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(merged)
}

/// The number of decimal places of a decimal (`-12.50` → 1, `1.5E-3` → 4), ignoring trailing
/// zeros; 0 for text that is not a number (parsing it fails later).
fn decimal_places(text: &str) -> u32 {
    if text.contains(['e', 'E']) {
        return rust_decimal::Decimal::from_scientific(text)
            .map(|d| d.normalize().scale())
            .unwrap_or(0);
    }
    text.split_once('.')
        .map_or(0, |(_, frac)| frac.trim_end_matches('0').len() as u32)
}

/// Keeps in `map[name]` the smaller (`Less`) or larger (`Greater`) of it and `value`.
pub(crate) fn extreme(
    map: &mut BTreeMap<String, String>,
    name: String,
    value: String,
    keep: std::cmp::Ordering,
) -> Result<(), String> {
    match map.get(&name) {
        Some(current) if compare_decimals(&value, current)? != keep => {}
        _ => {
            map.insert(name, value);
        }
    }
    Ok(())
}

/// Compares two decimal strings exactly.
pub fn compare_decimals(a: &str, b: &str) -> Result<std::cmp::Ordering, String> {
    let scale = decimal_places(a).max(decimal_places(b));
    let parse = |v: &str| parse_plain(v, scale).or_else(|_| parse_scaled(v, scale));
    Ok(parse(a)?.cmp(&parse(b)?))
}

/// Adds decimal strings exactly (as `i128` units of the finest scale among them) and formats the
/// total without trailing zeros.
pub(crate) fn add_decimals(values: &[String]) -> Result<String, String> {
    let scale = values.iter().map(|v| decimal_places(v)).max().unwrap_or(0);
    if scale > 38 {
        return Err(format!("more than 38 decimal places in {values:?}"));
    }
    let mut total: i128 = 0;
    for value in values {
        let units = parse_plain(value, scale).or_else(|_| parse_scaled(value, scale))?;
        total = total
            .checked_add(units)
            .ok_or_else(|| format!("the total of {values:?} overflows"))?;
    }
    Ok(format_scaled(total, scale))
}

/// Parses a plain decimal (`-12.5`, `3`, `0.010`) into units of `10^-scale` without the 28-digit
/// limit of `rust_decimal` (the engine's sums are `i128`); fails on anything else.
fn parse_plain(text: &str, scale: u32) -> Result<i128, String> {
    let invalid = || format!("`{text}` is not a plain decimal");
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    if (int.is_empty() && frac.is_empty())
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
        || frac.len() > scale as usize
    {
        return Err(invalid());
    }
    let padded = format!("{int}{frac:0<width$}", width = scale as usize);
    let padded = padded.trim_start_matches('0');
    let units = if padded.is_empty() {
        0
    } else {
        padded.parse::<i128>().map_err(|_| invalid())?
    };
    Ok(if negative { -units } else { units })
}

/// One step of a roll-back: what becomes of one stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Undo {
    /// Replace the document (under the same id) with its previous values.
    Restore(Box<AggregateDoc>),
    /// Delete the document: its group did not exist before.
    Delete,
}

/// What rolling back one stored document to `committed_version` does to it: `None` when its
/// version is committed. Fails when its previous write is not committed either.
pub(crate) fn undo(
    doc: &AggregateDoc,
    committed_version: u64,
    stamp: u64,
) -> Result<Option<Undo>, Error> {
    if doc.version <= committed_version {
        return Ok(None);
    }
    match doc.previous() {
        None => Ok(Some(Undo::Delete)),
        Some(prev) if prev.version <= committed_version => {
            let current = PrevValues {
                version: prev.version,
                ..PrevValues::from(doc.clone())
            };
            if current == PrevValues::from(prev.clone()) {
                // Rolled back already (or the write changed nothing).
                return Ok(None);
            }
            let restored = AggregateDoc {
                version: stamp.max(doc.version + 1),
                prev: Some(PrevValues::from(prev.clone())),
                ..prev
            };
            Ok(Some(Undo::Restore(Box::new(restored))))
        }
        Some(prev) => Err(Error::RollBack(format!(
            "document {} (version {}) cannot be rolled back to version {committed_version}: its \
             previous write (version {}) is not covered by the checkpoint either",
            doc.id(),
            doc.version,
            prev.version
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_add_exactly_beyond_rust_decimal() {
        let big = "170141183460469231731.687303715884105727".to_owned();
        assert_eq!(
            add_decimals(&[big.clone(), "-0.000000000000000001".into()]).unwrap(),
            "170141183460469231731.687303715884105726"
        );
        assert_eq!(
            add_decimals(&["12.50".into(), "-2.5".into(), "0.01".into()]).unwrap(),
            "10.01"
        );
        assert_eq!(
            add_decimals(&["1.5E+3".into(), "1".into()]).unwrap(),
            "1501"
        );
        assert_eq!(
            add_decimals(&["1.5E-3".into(), "1".into()]).unwrap(),
            "1.0015"
        );
        assert!(add_decimals(&[big.clone(), big]).is_err());
        assert!(add_decimals(&["abc".into()]).is_err());
    }

    #[test]
    fn checkpoint_ids_keep_the_single_process_key() {
        assert_eq!(checkpoint_id("orders", ""), "orders");
        assert_eq!(checkpoint_id("orders", "w@1"), "orders@w%401");
    }
}
