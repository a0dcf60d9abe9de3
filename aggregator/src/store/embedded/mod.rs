//! The embedded store: a single redb file, no server.
//!
//! redb is an ACID, copy-on-write B-tree store: a commit is durable and a kill at any moment
//! leaves the last committed state readable. A deferred write ([`Store::write_deferred`], and the
//! change index's writes) commits without an fsync (`Durability::None`): readers see it at once,
//! and it becomes durable with the next durable commit or [`Store::flush`]; a kill before then
//! leaves the store at that last durable commit. Documents are kept as JSON under their id, which
//! starts with `pipeline|window|window start (13 digits)`, so a query for one pipeline and window
//! is a key-range scan. Checkpoints are kept under [`super::checkpoint_id`], in the same
//! transaction as the documents they cover. [Rollups](super::rollup) of every tumbling window
//! into 5-minute, hourly and daily buckets are kept in their own table, updated in the same
//! transaction as the documents, and answer [`AggregateReader::query_buckets`] when a query's
//! buckets are a multiple of theirs. A store written before rollups existed gets them built when
//! it is opened. The [change index](changes) lives in two more tables of the same file.

mod changes;

use std::{
    ops::ControlFlow,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};
use streamlens_core::{
    aggregate::{doc_id_prefix, id_matches},
    AggQuery, AggregateDoc, AggregateReader,
};

use super::{
    check_checkpoint, checkpoint_id, filter_docs,
    rollup::{self, Rollup},
    sort_docs, undo, Store, StoredCheckpoint, Undo, Written,
};
use crate::Error;

const AGGREGATES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("aggregates");
const CHECKPOINTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("checkpoints");
const ROLLUPS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("rollups");
const META: TableDefinition<'_, &str, &str> = TableDefinition::new("meta");

/// A stored document without its distinct sets and previous values, which serde then skips
/// without building them (most of the reading time of an hourly or daily rollup).
#[derive(serde::Deserialize)]
struct LeanDoc {
    pipeline: String,
    window: String,
    window_start: i64,
    window_end: i64,
    dimension: String,
    value: String,
    inserts: i64,
    modifies: i64,
    removes: i64,
    net_count: i64,
    sums: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    counts: std::collections::BTreeMap<String, i64>,
    #[serde(default)]
    mins: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    maxs: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "final")]
    is_final: bool,
    version: u64,
    #[serde(default)]
    worker: String,
}

impl From<LeanDoc> for AggregateDoc {
    fn from(d: LeanDoc) -> Self {
        AggregateDoc {
            pipeline: d.pipeline,
            window: d.window,
            window_start: d.window_start,
            window_end: d.window_end,
            dimension: d.dimension,
            value: d.value,
            inserts: d.inserts,
            modifies: d.modifies,
            removes: d.removes,
            net_count: d.net_count,
            sums: d.sums,
            counts: d.counts,
            mins: d.mins,
            maxs: d.maxs,
            distinct: Default::default(),
            is_final: d.is_final,
            version: d.version,
            worker: d.worker,
            prev: None,
        }
    }
}

/// A [`Rollup`] read as a [`LeanDoc`].
#[derive(serde::Deserialize)]
struct LeanRollup {
    doc: LeanDoc,
}

/// The stored form of a rollup: its JSON without the distinct sets, a newline, then the distinct
/// sets as JSON. A query that does not need the sets (most of an hourly or daily rollup's bytes)
/// parses the first line only.
fn encode_rollup(rollup: &Rollup) -> Result<Vec<u8>, serde_json::Error> {
    let mut head = rollup.clone();
    let distinct = std::mem::take(&mut head.doc.distinct);
    let mut out = serde_json::to_vec(&head)?;
    out.push(b'\n');
    serde_json::to_writer(&mut out, &distinct)?;
    Ok(out)
}

/// A stored rollup, whole.
fn decode_rollup(bytes: &[u8]) -> Result<Rollup, serde_json::Error> {
    let (head, tail) = split_rollup(bytes);
    let mut rollup: Rollup = serde_json::from_slice(head)?;
    if !tail.is_empty() {
        rollup.doc.distinct = serde_json::from_slice(tail)?;
    }
    Ok(rollup)
}

/// A stored rollup's document without its distinct sets.
fn decode_lean_rollup(bytes: &[u8]) -> Result<AggregateDoc, serde_json::Error> {
    serde_json::from_slice::<LeanRollup>(split_rollup(bytes).0).map(|r| AggregateDoc::from(r.doc))
}

fn split_rollup(bytes: &[u8]) -> (&[u8], &[u8]) {
    // Compact JSON never holds a raw newline (strings escape it).
    match newline_at(bytes) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[]),
    }
}

fn newline_at(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// redb's page cache (its default is 1 GiB, more than a small machine should give a cache).
const CACHE_BYTES: usize = 128 << 20;

/// The rollup format in [`META`]: stores with another one get their rollups rebuilt on open.
const ROLLUP_FORMAT: &str = "2";

/// One rollup bucket of one group: what [`rebuild_bucket`] needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Bucket {
    pipeline: String,
    window: String,
    dimension: String,
    value: String,
    level: (&'static str, i64),
    start: i64,
}

impl Bucket {
    fn of(doc: &AggregateDoc, level: (&'static str, i64)) -> Self {
        Bucket {
            pipeline: doc.pipeline.clone(),
            window: doc.window.clone(),
            dimension: doc.dimension.clone(),
            value: doc.value.clone(),
            level,
            start: rollup::bucket(doc.window_start, level.1),
        }
    }
}

/// Rebuilds one rollup bucket from the window documents under it.
fn rebuild_bucket(
    aggregates: &impl ReadableTable<&'static str, &'static [u8]>,
    rollups: &mut Table<'_, &'static str, &'static [u8]>,
    b: &Bucket,
) -> Result<(), String> {
    let low = doc_id_prefix(&b.pipeline, &b.window, b.start);
    let high = doc_id_prefix(&b.pipeline, &b.window, b.start + b.level.1);
    let mut docs = Vec::new();
    for entry in aggregates
        .range(low.as_str()..high.as_str())
        .map_err(|e| e.to_string())?
    {
        let (_, value) = entry.map_err(|e| e.to_string())?;
        let doc: AggregateDoc = serde_json::from_slice(value.value()).map_err(|e| e.to_string())?;
        if doc.dimension == b.dimension && doc.value == b.value && doc.window == b.window {
            docs.push(doc);
        }
    }
    let key = streamlens_core::aggregate::doc_id(
        &b.pipeline,
        &rollup::label(&b.window, b.level.0),
        b.start,
        &b.dimension,
        &b.value,
    );
    match rollup::rebuild(docs, b.start, b.level.1).map_err(|e| e.to_string())? {
        Some(r) => {
            let json = encode_rollup(&r).map_err(|e| e.to_string())?;
            rollups
                .insert(key.as_str(), json.as_slice())
                .map_err(|e| e.to_string())?;
        }
        None => {
            rollups.remove(key.as_str()).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Aggregates in a local redb file.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: String,
    /// Commits not yet durable (made with [`Durability::None`]).
    deferred: Arc<AtomicBool>,
}

impl EmbeddedStore {
    /// Opens or creates the database file (and its directory).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let name = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| Error::Embedded {
            path: name.clone(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| err(&e))?;
        let tx = db.begin_write().map_err(|e| err(&e))?;
        {
            let aggregates = tx.open_table(AGGREGATES).map_err(|e| err(&e))?;
            tx.open_table(CHECKPOINTS).map_err(|e| err(&e))?;
            tx.open_table(changes::CHANGES).map_err(|e| err(&e))?;
            tx.open_table(changes::CHANGE_KEYS).map_err(|e| err(&e))?;
            let mut rollups = tx.open_table(ROLLUPS).map_err(|e| err(&e))?;
            let mut meta = tx.open_table(META).map_err(|e| err(&e))?;
            let built = meta
                .get("rollups")
                .map_err(|e| err(&e))?
                .is_some_and(|v| v.value() == ROLLUP_FORMAT);
            if !built {
                // Written before rollups existed, or in an older format (or new): build them from
                // the documents.
                rollups.retain(|_, _| false).map_err(|e| err(&e))?;
                let mut buckets = std::collections::BTreeSet::new();
                for entry in aggregates.iter().map_err(|e| err(&e))? {
                    let (_, value) = entry.map_err(|e| err(&e))?;
                    let doc: AggregateDoc =
                        serde_json::from_slice(value.value()).map_err(|e| err(&e))?;
                    buckets.extend(rollup::levels_of(&doc).map(|l| Bucket::of(&doc, l)));
                }
                if !buckets.is_empty() {
                    tracing::info!(buckets = buckets.len(), "building rollups");
                }
                for b in &buckets {
                    rebuild_bucket(&aggregates, &mut rollups, b).map_err(|e| err(&e))?;
                }
                meta.insert("rollups", ROLLUP_FORMAT).map_err(|e| err(&e))?;
            }
        }
        tx.commit().map_err(|e| err(&e))?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path: name,
            deferred: Arc::default(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Embedded {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// A write transaction: durable at commit, or deferred (see [`Store::write_deferred`]). A
    /// durable commit makes the deferred ones before it durable too.
    fn begin(&self, durable: bool) -> Result<WriteTransaction, Error> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        if durable {
            self.deferred.store(false, Ordering::SeqCst);
        } else {
            tx.set_durability(Durability::None)
                .map_err(|e| self.err(e))?;
            self.deferred.store(true, Ordering::SeqCst);
        }
        Ok(tx)
    }

    /// [`Self::write_blocking`] on a blocking thread.
    async fn write_off_thread(
        &self,
        docs: &[AggregateDoc],
        checkpoint: Option<&StoredCheckpoint>,
        durable: bool,
    ) -> Result<Written, Error> {
        let store = self.clone();
        let docs = docs.to_vec();
        let checkpoint = checkpoint.cloned();
        tokio::task::spawn_blocking(move || {
            store.write_blocking(&docs, checkpoint.as_ref(), durable)
        })
        .await
        .map_err(|e| self.err(e))?
    }

    fn write_blocking(
        &self,
        docs: &[AggregateDoc],
        checkpoint: Option<&StoredCheckpoint>,
        durable: bool,
    ) -> Result<Written, Error> {
        let mut written = Written {
            deferred: !durable,
            ..Written::default()
        };
        let tx = self.begin(durable)?;
        if let Some(checkpoint) = checkpoint {
            let mut table = tx.open_table(CHECKPOINTS).map_err(|e| self.err(e))?;
            let json = serde_json::to_vec(checkpoint).map_err(|e| self.err(e))?;
            table
                .insert(checkpoint.id().as_str(), json.as_slice())
                .map_err(|e| self.err(e))?;
        }
        {
            let mut table = tx.open_table(AGGREGATES).map_err(|e| self.err(e))?;
            let mut rollups = tx.open_table(ROLLUPS).map_err(|e| self.err(e))?;
            for doc in docs {
                let id = doc.id();
                let stored = table
                    .get(id.as_str())
                    .map_err(|e| self.err(e))?
                    .map(|v| serde_json::from_slice::<AggregateDoc>(v.value()))
                    .transpose()
                    .map_err(|e| self.err(format!("bad stored document {id}: {e}")))?;
                // A stale or repeated write (not above the stored version) is refused, as
                // OpenSearch's external versioning refuses it.
                if stored.as_ref().is_some_and(|s| s.version >= doc.version) {
                    written.stale += 1;
                    metrics::counter!("streamlens_stale_writes_total").increment(1);
                    tracing::debug!(id, version = doc.version, "stale write refused");
                    continue;
                }
                let json = serde_json::to_vec(doc).map_err(|e| self.err(e))?;
                table
                    .insert(id.as_str(), json.as_slice())
                    .map_err(|e| self.err(e))?;
                for level in rollup::levels_of(doc) {
                    let key = rollup::key(doc, level);
                    let current = rollups
                        .get(key.as_str())
                        .map_err(|e| self.err(e))?
                        .map(|v| decode_rollup(v.value()))
                        .transpose()
                        .map_err(|e| self.err(format!("bad rollup {key}: {e}")))?;
                    let next = rollup::apply(current, stored.as_ref(), doc, level.1)?;
                    let json = encode_rollup(&next).map_err(|e| self.err(e))?;
                    rollups
                        .insert(key.as_str(), json.as_slice())
                        .map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(written)
    }

    fn checkpoint_blocking(
        &self,
        pipeline: &str,
        worker: &str,
    ) -> Result<Option<StoredCheckpoint>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(CHECKPOINTS).map_err(|e| self.err(e))?;
        let value = table
            .get(checkpoint_id(pipeline, worker).as_str())
            .map_err(|e| self.err(e))?;
        value
            .map(|v| {
                let checkpoint = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
                check_checkpoint(checkpoint, pipeline, worker)
            })
            .transpose()
    }

    fn roll_back_blocking(
        &self,
        pipeline: &str,
        worker: &str,
        committed_version: u64,
        stamp: u64,
    ) -> Result<u64, Error> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let changed = {
            let mut table = tx.open_table(AGGREGATES).map_err(|e| self.err(e))?;
            let prefix = streamlens_core::aggregate::pipeline_id_prefix(pipeline);
            let mut plan = Vec::new();
            for entry in table.range(prefix.as_str()..).map_err(|e| self.err(e))? {
                let (key, value) = entry.map_err(|e| self.err(e))?;
                if !key.value().starts_with(&prefix) {
                    break;
                }
                let doc: AggregateDoc =
                    serde_json::from_slice(value.value()).map_err(|e| self.err(e))?;
                if doc.pipeline != pipeline || doc.worker != worker {
                    continue;
                }
                if let Some(step) = undo(&doc, committed_version, stamp)? {
                    plan.push((key.value().to_owned(), step, doc));
                }
            }
            let mut touched = std::collections::BTreeSet::new();
            for (key, step, doc) in &plan {
                touched.extend(rollup::levels_of(doc).map(|l| Bucket::of(doc, l)));
                match step {
                    Undo::Restore(doc) => {
                        let json = serde_json::to_vec(&**doc).map_err(|e| self.err(e))?;
                        table
                            .insert(key.as_str(), json.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Undo::Delete => {
                        table.remove(key.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
            // An undo can shrink a minimum, maximum or distinct set: rebuild, not subtract.
            let mut rollups = tx.open_table(ROLLUPS).map_err(|e| self.err(e))?;
            for b in &touched {
                rebuild_bucket(&table, &mut rollups, b).map_err(|e| self.err(e))?;
            }
            plan.len() as u64
        };
        tx.commit().map_err(|e| self.err(e))?;
        Ok(changed)
    }

    fn query_blocking(&self, query: &AggQuery) -> Result<Vec<AggregateDoc>, Error> {
        let mut docs = Vec::new();
        self.scan(query, |value| {
            let doc = if query.without_distinct && query.worker.is_none() {
                serde_json::from_slice::<LeanDoc>(value).map(AggregateDoc::from)
            } else {
                serde_json::from_slice::<AggregateDoc>(value)
            };
            docs.push(doc.map_err(|e| self.err(e))?);
            Ok(ControlFlow::Continue(()))
        })?;
        filter_docs(query, docs)
    }

    /// The start of the earliest window of `query`: with a pipeline and a window size, the first
    /// match in key order, which is window start order.
    fn earliest_blocking(&self, query: &AggQuery) -> Result<Option<i64>, Error> {
        let ordered = query.pipeline.is_some() && query.window.is_some();
        let mut earliest: Option<i64> = None;
        self.scan(query, |value| {
            let doc = serde_json::from_slice::<LeanDoc>(value)
                .map(AggregateDoc::from)
                .map_err(|e| self.err(e))?;
            if !query.matches(&doc) {
                return Ok(ControlFlow::Continue(()));
            }
            earliest = Some(earliest.map_or(doc.window_start, |e| e.min(doc.window_start)));
            Ok(if ordered {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        Ok(earliest)
    }

    /// `read` of `query` on a blocking thread (redb reads block).
    async fn read_off_thread<T: Send + 'static>(
        &self,
        query: &AggQuery,
        read: fn(&Self, &AggQuery) -> Result<T, Error>,
    ) -> Result<T, streamlens_core::Error> {
        let store = self.clone();
        let query = query.clone();
        tokio::task::spawn_blocking(move || read(&store, &query))
            .await
            .map_err(|e| streamlens_core::Error::Store(e.to_string()))?
            .map_err(Into::into)
    }

    /// Hands `each` the stored documents that may answer `query`, until it breaks: with a
    /// pipeline and a window size, those of its key range in key order, other dimensions and
    /// values skipped by their key, unread; else every document.
    fn scan(
        &self,
        query: &AggQuery,
        mut each: impl FnMut(&[u8]) -> Result<ControlFlow<()>, Error>,
    ) -> Result<(), Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(AGGREGATES).map_err(|e| self.err(e))?;
        match (&query.pipeline, &query.window) {
            (Some(pipeline), Some(window)) => {
                let id = |start: i64| doc_id_prefix(pipeline, window, start.max(0));
                let low = id(query.from.unwrap_or(0));
                let high = id(query.to.unwrap_or(9_999_999_999_999));
                for entry in table
                    .range(low.as_str()..high.as_str())
                    .map_err(|e| self.err(e))?
                {
                    let (key, value) = entry.map_err(|e| self.err(e))?;
                    if id_matches(key.value(), query) && each(value.value())?.is_break() {
                        break;
                    }
                }
            }
            _ => {
                for entry in table.iter().map_err(|e| self.err(e))? {
                    let (_, value) = entry.map_err(|e| self.err(e))?;
                    if each(value.value())?.is_break() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

impl EmbeddedStore {
    /// The rollups answering `query` when one level divides `bucket_ms` and the range; `None`
    /// when none does (or the query is not one rollups answer).
    fn rollups_blocking(
        &self,
        query: &AggQuery,
        bucket_ms: i64,
    ) -> Result<Option<Vec<AggregateDoc>>, Error> {
        let (Some(pipeline), Some(window), Some(from), Some(to), None) = (
            &query.pipeline,
            &query.window,
            query.from,
            query.to,
            &query.worker,
        ) else {
            return Ok(None);
        };
        let Ok(size) = humantime::parse_duration(window).map(|d| d.as_millis() as i64) else {
            return Ok(None);
        };
        let level = rollup::LEVELS.into_iter().rev().find(|(_, l)| {
            *l > size
                && l % size.max(1) == 0
                && bucket_ms % l == 0
                && from.rem_euclid(*l) == 0
                && to.rem_euclid(*l) == 0
        });
        let Some(level) = level else {
            return Ok(None);
        };
        let label = rollup::label(window, level.0);
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(ROLLUPS).map_err(|e| self.err(e))?;
        let low = doc_id_prefix(pipeline, &label, from.max(0));
        let high = doc_id_prefix(pipeline, &label, to.max(0));
        let mut docs = Vec::new();
        for entry in table
            .range(low.as_str()..high.as_str())
            .map_err(|e| self.err(e))?
        {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            if !id_matches(key.value(), query) {
                continue;
            }
            let doc = if query.without_distinct {
                decode_lean_rollup(value.value())
            } else {
                decode_rollup(value.value()).map(|r| r.doc)
            }
            .map_err(|e| self.err(e))?;
            docs.push(doc);
        }
        sort_docs(&mut docs);
        Ok(Some(docs))
    }
}

#[async_trait::async_trait]
impl AggregateReader for EmbeddedStore {
    async fn query_buckets(
        &self,
        query: &AggQuery,
        bucket_ms: i64,
    ) -> Result<Vec<AggregateDoc>, streamlens_core::Error> {
        let store = self.clone();
        let q = query.clone();
        let rolled = tokio::task::spawn_blocking(move || store.rollups_blocking(&q, bucket_ms))
            .await
            .map_err(|e| streamlens_core::Error::Store(e.to_string()))??;
        match rolled {
            Some(docs) => Ok(docs),
            None => self.query(query).await,
        }
    }

    async fn query(&self, query: &AggQuery) -> Result<Vec<AggregateDoc>, streamlens_core::Error> {
        self.read_off_thread(query, Self::query_blocking).await
    }

    async fn earliest(&self, query: &AggQuery) -> Result<Option<i64>, streamlens_core::Error> {
        self.read_off_thread(query, Self::earliest_blocking).await
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn write(
        &self,
        docs: &[AggregateDoc],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<Written, Error> {
        self.write_off_thread(docs, checkpoint, true).await
    }

    async fn write_deferred(
        &self,
        docs: &[AggregateDoc],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<Written, Error> {
        self.write_off_thread(docs, checkpoint, false).await
    }

    async fn flush(&self) -> Result<(), Error> {
        if !self.deferred.load(Ordering::SeqCst) {
            return Ok(());
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            // An empty durable commit makes the deferred ones before it durable.
            store.begin(true)?.commit().map_err(|e| store.err(e))
        })
        .await
        .map_err(|e| self.err(e))?
    }

    async fn checkpoint_of(
        &self,
        pipeline: &str,
        worker: &str,
    ) -> Result<Option<StoredCheckpoint>, Error> {
        let store = self.clone();
        let (pipeline, worker) = (pipeline.to_owned(), worker.to_owned());
        tokio::task::spawn_blocking(move || store.checkpoint_blocking(&pipeline, &worker))
            .await
            .map_err(|e| self.err(e))?
    }

    async fn roll_back(
        &self,
        pipeline: &str,
        worker: &str,
        committed_version: u64,
        stamp: u64,
    ) -> Result<u64, Error> {
        let store = self.clone();
        let (pipeline, worker) = (pipeline.to_owned(), worker.to_owned());
        tokio::task::spawn_blocking(move || {
            store.roll_back_blocking(&pipeline, &worker, committed_version, stamp)
        })
        .await
        .map_err(|e| self.err(e))?
    }

    async fn write_changes(
        &self,
        changes: &[streamlens_core::ChangeDoc],
    ) -> Result<Written, Error> {
        if changes.is_empty() {
            return Ok(Written::default());
        }
        let store = self.clone();
        let changes = changes.to_vec();
        tokio::task::spawn_blocking(move || store.write_changes_blocking(&changes))
            .await
            .map_err(|e| self.err(e))?
    }

    async fn expire_changes(&self, before_ms: i64) -> Result<u64, Error> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.expire_changes_blocking(before_ms))
            .await
            .map_err(|e| self.err(e))?
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn doc(window: &str, start: i64, value: &str, version: u64) -> AggregateDoc {
        AggregateDoc {
            pipeline: "p".into(),
            window: window.into(),
            window_start: start,
            window_end: start + 60_000,
            dimension: "status".into(),
            value: value.into(),
            inserts: 1,
            modifies: 0,
            removes: 0,
            net_count: 1,
            sums: BTreeMap::from([("amount".to_owned(), "1.5".to_owned())]),
            version,
            ..AggregateDoc::default()
        }
    }

    #[tokio::test]
    async fn rewrites_replace_and_ranges_select() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(
                &[
                    doc("1m", 0, "a", 1),
                    doc("1m", 60_000, "a", 1),
                    doc("5m", 0, "a", 1),
                ],
                None,
            )
            .await
            .unwrap();
        let checkpoint = StoredCheckpoint {
            pipeline: "p".into(),
            positions: [("shard-1".to_owned(), "42".to_owned())].into(),
            ..StoredCheckpoint::default()
        };
        store
            .write(&[doc("1m", 0, "a", 2)], Some(&checkpoint))
            .await
            .unwrap();
        let q = AggQuery {
            pipeline: Some("p".into()),
            window: Some("1m".into()),
            from: Some(0),
            to: Some(60_000),
            dimension: None,
            values: None,
            without_distinct: false,
            worker: None,
        };
        let got = store.query(&q).await.unwrap();
        assert_eq!(got, vec![doc("1m", 0, "a", 2)]);
        drop(store);
        // Reopening finds the committed data.
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        let all = store.query(&AggQuery::default()).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(store.checkpoint("p").await.unwrap(), Some(checkpoint));
        assert_eq!(store.checkpoint("other").await.unwrap(), None);
    }

    fn at(position: u64) -> StoredCheckpoint {
        StoredCheckpoint {
            pipeline: "p".into(),
            positions: [("shard-1".to_owned(), position.to_string())].into(),
            version: position,
            ..StoredCheckpoint::default()
        }
    }

    /// The child half of [`a_crash_keeps_deferred_writes_whole_or_not_at_all`]: writes one
    /// durable pass and three deferred ones, flushing after `STREAMLENS_TEST_FLUSH_AFTER` of
    /// them, then dies without closing the store.
    #[tokio::test]
    #[ignore = "the child process of a_crash_keeps_deferred_writes_whole_or_not_at_all, run by it"]
    async fn crashing_writer() {
        let Some(path) = std::env::var_os("STREAMLENS_TEST_CRASH_STORE") else {
            return;
        };
        let flush_after: u64 = std::env::var("STREAMLENS_TEST_FLUSH_AFTER")
            .unwrap()
            .parse()
            .unwrap();
        let store = EmbeddedStore::open(Path::new(&path)).unwrap();
        store
            .write(&[doc("1m", 0, "a", 1)], Some(&at(1)))
            .await
            .unwrap();
        for version in 2..=4 {
            let written = store
                .write_deferred(&[doc("1m", 0, "a", version)], Some(&at(version)))
                .await
                .unwrap();
            assert!(written.deferred);
            // Readers see a deferred write at once.
            assert_eq!(store.checkpoint("p").await.unwrap(), Some(at(version)));
            if version == flush_after {
                store.flush().await.unwrap();
            }
        }
        std::process::abort();
    }

    /// Group commit: a process that dies after deferred writes leaves the store at its last
    /// durable write (its flush), documents and checkpoint together; a resumed run reads the
    /// changes of the writes lost again.
    #[test]
    fn a_crash_keeps_deferred_writes_whole_or_not_at_all() {
        for flush_after in [0, 3] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.redb");
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "store::embedded::tests::crashing_writer",
                    "--nocapture",
                ])
                .env("STREAMLENS_TEST_CRASH_STORE", &path)
                .env("STREAMLENS_TEST_FLUSH_AFTER", flush_after.to_string())
                .status()
                .unwrap();
            assert!(!status.success(), "the writer was to die");
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let store = EmbeddedStore::open(&path).unwrap();
            let checkpoint = runtime.block_on(store.checkpoint("p")).unwrap().unwrap();
            let docs = runtime.block_on(store.query(&AggQuery::default())).unwrap();
            assert_eq!(docs.len(), 1);
            // The document and the checkpoint are of the same write.
            assert_eq!(docs[0].version, checkpoint.version);
            assert_eq!(checkpoint, at(checkpoint.version));
            // redb keeps a deferred commit only once a durable one follows it.
            assert_eq!(checkpoint.version, flush_after.max(1));
        }
    }

    /// Rollups follow rewrites by deltas, and a roll back (which can shrink a minimum or a
    /// distinct set) rebuilds them: they always equal the window documents added up.
    #[tokio::test]
    async fn rollups_follow_rewrites_and_roll_backs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = EmbeddedStore::open(&path).unwrap();
        let hour = 3_600_000;
        let at = |start: i64, version: u64, min: &str, tags: &[&str]| AggregateDoc {
            mins: BTreeMap::from([("low".to_owned(), min.to_owned())]),
            distinct: BTreeMap::from([(
                "tags".to_owned(),
                tags.iter().map(|t| t.to_string()).collect(),
            )]),
            ..doc("1m", start, "a", version)
        };
        let committed = StoredCheckpoint {
            pipeline: "p".into(),
            version: 1,
            ..StoredCheckpoint::default()
        };
        store
            .write(
                &[
                    at(0, 1, "5", &["x"]),
                    at(60_000, 1, "7", &["y"]),
                    at(hour, 1, "1", &["z"]),
                ],
                Some(&committed),
            )
            .await
            .unwrap();
        let hours = |store: EmbeddedStore| async move {
            let q = AggQuery {
                pipeline: Some("p".into()),
                window: Some("1m".into()),
                from: Some(0),
                to: Some(2 * hour),
                dimension: Some("status".into()),
                values: None,
                without_distinct: false,
                worker: None,
            };
            store.query_buckets(&q, hour).await.unwrap()
        };
        let first = hours(store.clone()).await;
        // Read without the distinct sets (only the first line of each stored rollup).
        let lean = store
            .query_buckets(
                &AggQuery {
                    pipeline: Some("p".into()),
                    window: Some("1m".into()),
                    from: Some(0),
                    to: Some(2 * hour),
                    dimension: Some("status".into()),
                    without_distinct: true,
                    ..AggQuery::default()
                },
                hour,
            )
            .await
            .unwrap();
        assert_eq!(
            lean,
            first
                .iter()
                .map(|d| AggregateDoc {
                    distinct: BTreeMap::new(),
                    ..d.clone()
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(first.len(), 2);
        assert_eq!((first[0].window_start, first[0].window_end), (0, hour));
        assert_eq!(first[0].sums["amount"], "3");
        assert_eq!(first[0].inserts, 2);
        assert_eq!(first[0].mins["low"], "5");
        assert_eq!(first[0].distinct["tags"], ["x", "y"]);
        // An uncommitted rewrite lowers the minimum and adds a value...
        store
            .write(
                &[AggregateDoc {
                    prev: Some(streamlens_core::PrevValues::from(at(0, 1, "5", &["x"]))),
                    ..at(0, 2, "2", &["x", "w"])
                }],
                None,
            )
            .await
            .unwrap();
        let rewritten = hours(store.clone()).await;
        assert_eq!(rewritten[0].mins["low"], "2");
        assert_eq!(rewritten[0].distinct["tags"], ["w", "x", "y"]);
        assert_eq!(rewritten[0].sums["amount"], "3");
        // ...and rolling it back takes both back.
        assert_eq!(store.roll_back("p", "", 1, 10).await.unwrap(), 1);
        let rolled_back = hours(store.clone()).await;
        assert_eq!(rolled_back[0].mins["low"], "5");
        assert_eq!(rolled_back[0].distinct["tags"], ["x", "y"]);
        assert_eq!(rolled_back[0].sums["amount"], "3");
        // A store opened without its rollups table marker rebuilds the same rollups.
        drop(store);
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META).unwrap().remove("rollups").unwrap();
            tx.delete_table(ROLLUPS).unwrap();
            tx.commit().unwrap();
        }
        let reopened = EmbeddedStore::open(&path).unwrap();
        assert_eq!(hours(reopened).await, rolled_back);
    }

    #[test]
    fn a_lean_read_is_the_document_without_distinct_sets_and_prev() {
        let full = AggregateDoc {
            counts: BTreeMap::from([("n".to_owned(), 3)]),
            mins: BTreeMap::from([("low".to_owned(), "1.5".to_owned())]),
            maxs: BTreeMap::from([("high".to_owned(), "9".to_owned())]),
            distinct: BTreeMap::from([("tags".to_owned(), vec!["a".to_owned()])]),
            is_final: true,
            worker: "w1".into(),
            prev: Some(streamlens_core::PrevValues::from(doc("1m", 0, "a", 1))),
            ..doc("1m", 0, "a", 2)
        };
        let json = serde_json::to_vec(&full).unwrap();
        let lean = AggregateDoc::from(serde_json::from_slice::<LeanDoc>(&json).unwrap());
        assert_eq!(
            lean,
            AggregateDoc {
                distinct: BTreeMap::new(),
                prev: None,
                ..full
            }
        );
    }
}
