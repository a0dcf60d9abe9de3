//! Source → window engine → store, with backpressure.
//!
//! The source runs in its own task and sends batches through a bounded channel. The engine task
//! takes what is waiting, up to a cap, and aggregates it in one pass: summed directly, or with
//! polars for large batches; an archive source sends its batches already reduced by the engine's
//! combiner on its decoding threads, and the pass only adds their sums to the state. Passes start
//! at least `PASS_GAP` (50 ms) apart while input keeps coming, so a backfill runs a few large
//! passes a second rather than hundreds of small ones, and a change waits at most that long for
//! its pass. The pass's changed windows and checkpoint are then written to the store, and only
//! after that announced to live subscribers; that write runs while the next pass computes, and is
//! finished before the next write starts (so writes stay in order). Writes are group-committed:
//! durable at least every `durable_every` (the embedded store's setting, 1 s by default), and
//! deferred between: seen by readers at once, lost together with their checkpoint in a crash (so
//! the changes they cover are read again on resume), and made durable by an idle pipeline
//! `durable_every` after the last. When the channel is full the source waits: memory stays
//! bounded however fast the input is.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use streamlens_aggregator::{
    store::StoredCheckpoint,
    window::{Combined, Rejected},
    Error as AggregatorError, Store, WindowEngine,
};
use streamlens_core::{
    projection::ProjectedChange, AggregateDoc, ChangeDoc, EventKind, StreamRecord,
};
use streamlens_ingest::{
    archive::ArchiveWriter, Batch, Checkpoint, Commit, Committer, Quarantined, Source,
    SourceSummary,
};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::quarantine::Quarantine;

/// Batches in flight between source and engine.
const CHANNEL_BATCHES: usize = 16;
/// At most this many events are aggregated in one engine pass.
const MAX_EVENTS_PER_PASS: usize = 20_000;
/// At most this many when every change is also written to the change index, whose writes
/// (whole images, two index entries each) cost far more per change than aggregating it: passes
/// stay short, so a window's new value is still written within the emit bound.
const MAX_EVENTS_PER_INDEXED_PASS: usize = 4_000;

/// Passes start at least this far apart when input keeps coming: a change waits at most this
/// long for the pass that aggregates it, well within the 250 ms emit bound.
const PASS_GAP: std::time::Duration = std::time::Duration::from_millis(50);

/// How often old changes are dropped from the change index.
const EXPIRE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The store's change index, when kept: every change read is written to it, in the same pass
/// and before the checkpoint that covers it.
#[derive(Debug, Clone)]
pub struct ChangeIndex {
    /// The table changes are filed under.
    pub table: String,
    /// Changes older than the newest change read minus this are dropped.
    pub retention_ms: i64,
}

/// Where every change read is archived, before it is aggregated.
pub enum Archiver {
    /// One newline-delimited file (`archive_to`), buffered.
    File(ArchiveWriter),
    /// A segmented archive directory (`[archive]`): each pass committed (fsynced) before the
    /// pass's checkpoint is written.
    Segments(streamlens_ingest::archive::segments::SegmentWriter),
}

impl Archiver {
    fn append(
        &mut self,
        events: &[streamlens_core::ChangeEvent],
    ) -> Result<(), streamlens_ingest::Error> {
        match self {
            Archiver::File(file) => events.iter().try_for_each(|e| file.write(e)),
            Archiver::Segments(segments) => segments.append(events),
        }
    }

    fn finish(self) -> Result<(), streamlens_ingest::Error> {
        match self {
            Archiver::File(file) => file.finish(),
            Archiver::Segments(_) => Ok(()),
        }
    }
}

/// Live updates: the documents each engine pass changed.
pub type Updates = broadcast::Sender<Arc<Vec<AggregateDoc>>>;

/// Errors that stop a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] streamlens_ingest::Error),
    /// The engine or the store failed.
    #[error(transparent)]
    Aggregator(#[from] streamlens_aggregator::Error),
    /// Reading documents back from the store failed.
    #[error("reading the store: {0}")]
    Read(#[from] streamlens_core::Error),
    /// The quarantine file could not be written.
    #[error("cannot write quarantine: {0}")]
    Quarantine(#[from] std::io::Error),
    /// The source sent a batch the pipeline cannot take.
    #[error("unusable batch from the source: {0}")]
    Batch(String),
}

/// What a finished pipeline did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// What the source read.
    pub source: SourceSummary,
    /// Changes aggregated.
    pub aggregated: u64,
    /// Records quarantined (by the source or the engine).
    pub quarantined: u64,
    /// Aggregate documents written.
    pub docs_written: u64,
    /// Gaps: records the stream trimmed before they could be read.
    pub gaps: u64,
    /// Engine passes (each ends with its changed windows written).
    pub passes: u64,
    /// The longest pass, milliseconds. A pass's windows are written while the next pass runs, so
    /// a change waits at most about two passes to be written and announced.
    pub max_pass_ms: u64,
    /// The checkpoint positions the run resumed after (empty for a run from the start).
    pub resumed_from: Checkpoint,
}

/// Live counters of a running pipeline, read by the health report.
#[derive(Debug, Default)]
pub struct Progress {
    /// Changes received from the source.
    pub events: AtomicU64,
}

/// Where a run starts and how it commits.
pub struct Resumed {
    /// Shard → last sequence number whose effects are stored (empty for a fresh start).
    pub positions: Checkpoint,
    /// The stream those positions belong to.
    pub stream: Option<String>,
    /// Where commits go when the source keeps its own checkpoints (the lease table); the store's
    /// checkpoint otherwise.
    pub committer: Option<Arc<dyn Committer>>,
}

/// Runs until the source ends or `shutdown` fires; flushes the store at the end.
///
/// After every engine pass the changed documents are written first, then the positions they
/// cover are committed (to the store's checkpoint, or to the lease table), so a checkpoint never
/// runs ahead of the stored aggregates. With several workers (the engine's documents are one
/// worker's partial sums), live subscribers get the merged documents of the changed windows.
/// Writes are durable at least every `durable_every` (zero: every write; a pass whose positions
/// go to a lease table is always written durably first).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    source: Box<dyn Source>,
    resumed: Resumed,
    mut engine: WindowEngine,
    store: Arc<dyn Store>,
    mut quarantine: Quarantine,
    mut archive: Option<Archiver>,
    changes: Option<ChangeIndex>,
    updates: Updates,
    progress: Arc<Progress>,
    durable_every: std::time::Duration,
    shutdown: CancellationToken,
) -> Result<RunSummary, PipelineError> {
    let Resumed {
        mut positions,
        mut stream,
        committer,
    } = resumed;
    let (tx, mut rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);
    let source_name = source.describe();
    tracing::info!(source = %source_name, store = %store.describe(), "pipeline started");
    let source_task = tokio::spawn(source.run(tx, shutdown.clone()));
    let mut summary = RunSummary {
        resumed_from: positions.clone(),
        ..RunSummary::default()
    };
    let mut pending: Vec<Batch> = Vec::new();
    // What came from the source: its summary when it was stopped before it could say.
    let mut received = SourceSummary::default();
    let mut expired_at: Option<Instant> = None;
    let pass_cap = if changes.is_some() {
        MAX_EVENTS_PER_INDEXED_PASS
    } else {
        MAX_EVENTS_PER_PASS
    };
    // The last pass's writes, still running while this pass computes.
    let mut writing: Option<tokio::task::JoinHandle<Result<PassWritten, PipelineError>>> = None;
    // The last durable write, and whether the store holds deferred ones since.
    let mut durable_at = Instant::now();
    let mut last_pass = Instant::now()
        .checked_sub(PASS_GAP)
        .unwrap_or_else(Instant::now);
    let mut deferred = false;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let first = match rx.try_recv() {
            Ok(batch) => Some(batch),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing is waiting: the last pass's writes are finished before this waits, so
                // a change is never kept from readers by the absence of later ones.
                deferred |= finish(&mut writing, &mut summary, &mut quarantine).await?;
                loop {
                    let flush_at = tokio::time::Instant::from_std(durable_at + durable_every);
                    tokio::select! {
                        batch = rx.recv() => break batch,
                        _ = shutdown.cancelled() => break None,
                        _ = tokio::time::sleep_until(flush_at), if deferred => {
                            quarantine.sync()?;
                            store.flush().await?;
                            durable_at = Instant::now();
                            deferred = false;
                        }
                    }
                }
            }
        };
        let Some(first) = first else { break };
        pending.push(first);
        let size = |b: &Batch| {
            b.events.len() + b.projected.len() + b.reduced.as_ref().map_or(0, |r| r.changes)
        };
        let mut events = size(&pending[0]);
        // A pass takes what is waiting; within `PASS_GAP` of the last one it waits for more, up
        // to the cap (a backfill then runs a few large passes a second, not hundreds of small
        // ones, each with its store write).
        let due = tokio::time::Instant::from_std(last_pass + PASS_GAP);
        while events < pass_cap {
            let batch = match rx.try_recv() {
                Ok(batch) => batch,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(due, rx.recv()).await {
                        Ok(Some(batch)) => batch,
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            events += size(&batch);
            pending.push(batch);
        }
        let started = Instant::now();
        last_pass = started;
        let mut all = Vec::with_capacity(pending.iter().map(|b| b.events.len()).sum());
        // Projected changes stay in the batches they came in (not copied into one vector).
        let mut projected: Vec<Vec<ProjectedChange>> = Vec::with_capacity(pending.len());
        // Batches the source reduced with the engine's combiner.
        let mut combined: Vec<Combined> = Vec::with_capacity(pending.len());
        let mut moved = false;
        for batch in pending.drain(..) {
            received.events += size(&batch) as u64;
            received.quarantined += batch.quarantined.len() as u64;
            for q in &batch.quarantined {
                quarantine.put(q)?;
            }
            for gap in &batch.gaps {
                summary.gaps += 1;
                quarantine.put(&Quarantined {
                    origin: format!("shard {} after {:?}", gap.shard_id, gap.after),
                    reason: format!("gap: records trimmed before they were read: {}", gap.reason),
                    raw: String::new(),
                })?;
            }
            if batch.stream.is_some() && batch.stream != stream {
                // The source moved on to a new stream: the old one's positions are done with.
                if stream.is_some() {
                    positions.clear();
                }
                stream = batch.stream.clone();
                moved = true;
            }
            moved |= !batch.positions.is_empty();
            positions.extend(batch.positions);
            all.extend(batch.events);
            if !batch.projected.is_empty() {
                projected.push(batch.projected);
            }
            if let Some(reduced) = batch.reduced {
                match reduced
                    .value
                    .downcast::<Result<Combined, AggregatorError>>()
                {
                    Ok(result) => combined.push((*result)?),
                    Err(_) => {
                        return Err(PipelineError::Batch(
                            "it was reduced by something other than the engine's combiner"
                                .to_owned(),
                        ))
                    }
                }
            }
        }
        let projected_len: usize = projected.iter().map(Vec::len).sum();
        let combined_len: usize = combined.iter().map(Combined::len).sum();
        progress.events.fetch_add(
            (all.len() + projected_len + combined_len) as u64,
            Ordering::Relaxed,
        );
        if let Some(archive) = archive.as_mut() {
            archive.append(&all)?;
        }
        let mut kinds = [0u64; 4];
        for kind in all
            .iter()
            .map(|e| &e.kind)
            .chain(projected.iter().flatten().map(|p| &p.kind))
        {
            kinds[match kind {
                EventKind::Insert => 0,
                EventKind::Modify => 1,
                EventKind::Remove => 2,
                EventKind::Unknown(_) => 3,
            }] += 1;
        }
        for batch in &combined {
            for (n, more) in kinds.iter_mut().zip(batch.kinds()) {
                *n += more;
            }
        }
        for (kind, n) in ["INSERT", "MODIFY", "REMOVE", "unknown"]
            .into_iter()
            .zip(kinds)
        {
            metrics::counter!("streamlens_events_total", "kind" => kind).increment(n);
        }
        let change_docs: Vec<ChangeDoc> = match &changes {
            Some(index) => all.iter().map(|e| ChangeDoc::of(&index.table, e)).collect(),
            None => Vec::new(),
        };
        // The change index is written while the engine works; both are done before the
        // checkpoint moves.
        let indexed = async {
            if change_docs.is_empty() {
                Ok(Default::default())
            } else {
                store.write_changes(&change_docs).await
            }
        };
        // The pass is CPU work (polars, for large batches): keep it off the async workers.
        let pass = tokio::task::spawn_blocking(move || {
            let applied = engine.apply(&all).and_then(|mut rejected| {
                let offset = all.len();
                let parts: Vec<&[ProjectedChange]> = projected.iter().map(Vec::as_slice).collect();
                for r in engine.apply_projected_parts(&parts)? {
                    rejected.push(Rejected {
                        index: offset + r.index,
                        ..r
                    });
                }
                let offset = offset + projected_len;
                for r in engine.apply_combined(combined) {
                    rejected.push(Rejected {
                        index: offset + r.index,
                        ..r
                    });
                }
                Ok(rejected)
            });
            (engine, applied, all, projected)
        });
        let (pass, indexed) = tokio::join!(pass, indexed);
        let (back, applied, all, projected) =
            pass.map_err(|e| std::io::Error::other(format!("engine task failed: {e}")))?;
        engine = back;
        let indexed = indexed?;
        deferred |= indexed.deferred;
        for refused in indexed.rejected {
            quarantine.put(&Quarantined {
                origin: format!("change {}", refused.id),
                reason: format!("the change index refused the change: {}", refused.reason),
                raw: refused.json,
            })?;
        }
        if !change_docs.is_empty() {
            metrics::counter!("streamlens_changes_indexed_total")
                .increment(change_docs.len() as u64);
        }
        drop(change_docs);
        if let Some(index) = &changes {
            if expired_at.is_none_or(|at| at.elapsed() >= EXPIRE_EVERY) {
                expired_at = Some(Instant::now());
                let before = engine.max_event_time().saturating_sub(index.retention_ms);
                let dropped = store.expire_changes(before).await?;
                if dropped > 0 {
                    tracing::info!(dropped, before, "old changes dropped from the change index");
                }
            }
        }
        for rejected in applied? {
            if rejected.late {
                metrics::counter!("streamlens_late_total").increment(1);
            }
            // A projected change keeps no raw record: it is in the archive it was read from.
            let raw = all
                .get(rejected.index)
                .map(|event| serde_json::to_string(&StreamRecord::from(event)).unwrap_or_default())
                .unwrap_or_default();
            quarantine.put(&Quarantined {
                origin: rejected.origin,
                reason: rejected.reason,
                raw,
            })?;
        }
        drop(all);
        // Freeing a pass's changes (two small allocations each) is left to a blocking thread,
        // off the path of the next pass.
        if projected_len > 0 {
            tokio::task::spawn_blocking(move || drop(projected));
        }
        let docs = engine.take_changed();
        let checkpoint = (moved && committer.is_none()).then(|| StoredCheckpoint {
            pipeline: engine.spec().name.clone(),
            source: stream
                .as_ref()
                .map_or_else(|| source_name.clone(), |s| format!("dynamodb:{s}")),
            positions: positions.clone(),
            max_event_time: engine.max_event_time(),
            version: engine.version(),
            ..Default::default()
        });
        // The writes of this pass run while the next one computes; the previous pass's are done
        // first, so documents and checkpoints reach the store in order.
        deferred |= finish(&mut writing, &mut summary, &mut quarantine).await?;
        let commit = committer
            .clone()
            .filter(|_| moved || !docs.is_empty())
            .map(|committer| {
                (
                    committer,
                    Commit {
                        version: engine.version(),
                        max_event_time: engine.max_event_time(),
                        positions: positions.clone(),
                    },
                )
            });
        // Positions committed to a lease table must be covered by durable documents.
        let durable = commit.is_some() || durable_at.elapsed() >= durable_every;
        if durable {
            durable_at = Instant::now();
            // The quarantine entries of the changes this write covers are durable first.
            quarantine.sync()?;
        }
        writing = Some(tokio::spawn(write_pass(
            store.clone(),
            docs,
            checkpoint,
            commit,
            durable,
            updates.clone(),
        )));
        let took = started.elapsed();
        metrics::histogram!("streamlens_pass_seconds").record(took.as_secs_f64());
        summary.passes += 1;
        summary.max_pass_ms = summary.max_pass_ms.max(took.as_millis() as u64);
    }
    finish(&mut writing, &mut summary, &mut quarantine).await?;
    // A source blocked on a full channel sees it closed and ends; the batches still in it are
    // not checkpointed, so a resumed run reads them again.
    drop(rx);
    summary.source = match source_task.await {
        Ok(Err(streamlens_ingest::Error::DownstreamClosed)) if shutdown.is_cancelled() => received,
        Ok(result) => result?,
        Err(e) => {
            return Err(PipelineError::Quarantine(std::io::Error::other(format!(
                "source task failed: {e}"
            ))))
        }
    };
    quarantine.sync()?;
    store.flush().await?;
    if let Some(archive) = archive {
        archive.finish()?;
    }
    summary.aggregated = engine.stats().aggregated;
    summary.quarantined = quarantine.count();
    tracing::info!(?summary, "pipeline finished");
    Ok(summary)
}

/// What a pass's writes did.
#[derive(Debug, Default)]
struct PassWritten {
    docs: u64,
    /// The store deferred the write (see `Store::write_deferred`).
    deferred: bool,
    refused: Vec<streamlens_aggregator::store::RejectedDoc>,
}

/// Writes a pass's changed documents with its checkpoint, then commits its positions (to the
/// lease table, when the source keeps its checkpoints there), then tells live subscribers.
async fn write_pass(
    store: Arc<dyn Store>,
    docs: Vec<AggregateDoc>,
    checkpoint: Option<StoredCheckpoint>,
    commit: Option<(Arc<dyn Committer>, Commit)>,
    durable: bool,
    updates: Updates,
) -> Result<PassWritten, PipelineError> {
    let mut out = PassWritten::default();
    if !docs.is_empty() || checkpoint.is_some() {
        let written = if durable {
            store.write(&docs, checkpoint.as_ref()).await?
        } else {
            store.write_deferred(&docs, checkpoint.as_ref()).await?
        };
        out.refused = written.rejected;
        out.deferred = written.deferred;
        out.docs = docs.len() as u64;
        metrics::counter!("streamlens_docs_written_total").increment(docs.len() as u64);
    }
    if let Some((committer, commit)) = commit {
        crash_point(&docs);
        committer.commit(&commit).await?;
    }
    if !docs.is_empty() {
        let live = if docs.iter().any(|d| !d.worker.is_empty()) {
            merged(store.as_ref(), &docs).await?
        } else {
            // Subscribers get the documents as queries answer them: without undo values.
            docs.into_iter()
                .map(|d| AggregateDoc { prev: None, ..d })
                .collect()
        };
        // Nobody listening is fine.
        let _ = updates.send(Arc::new(live));
    }
    Ok(out)
}

/// Waits for the last pass's writes, counts them and quarantines what the store refused; whether
/// the store deferred them.
async fn finish(
    writing: &mut Option<tokio::task::JoinHandle<Result<PassWritten, PipelineError>>>,
    summary: &mut RunSummary,
    quarantine: &mut Quarantine,
) -> Result<bool, PipelineError> {
    let Some(task) = writing.take() else {
        return Ok(false);
    };
    let written = task
        .await
        .map_err(|e| std::io::Error::other(format!("store write task failed: {e}")))??;
    summary.docs_written += written.docs;
    for refused in written.refused {
        // The store refused the document itself (a mapping error): kept with its reason.
        quarantine.put(&Quarantined {
            origin: format!("aggregate {}", refused.id),
            reason: format!("the store refused the document: {}", refused.reason),
            raw: refused.json,
        })?;
        metrics::counter!("streamlens_docs_refused_total").increment(1);
    }
    Ok(written.deferred)
}

/// The merged (all workers) documents of the windows and groups in `partial`.
async fn merged(
    store: &dyn Store,
    partial: &[AggregateDoc],
) -> Result<Vec<AggregateDoc>, PipelineError> {
    let from = partial
        .iter()
        .map(|d| d.window_start)
        .min()
        .unwrap_or_default();
    let to = partial
        .iter()
        .map(|d| d.window_start)
        .max()
        .unwrap_or_default()
        + 1;
    let wanted: std::collections::HashSet<(String, i64, String, String)> = partial
        .iter()
        .map(|d| {
            (
                d.window.clone(),
                d.window_start,
                d.dimension.clone(),
                d.value.clone(),
            )
        })
        .collect();
    let docs = store
        .query(&streamlens_core::AggQuery {
            pipeline: partial.first().map(|d| d.pipeline.clone()),
            from: Some(from),
            to: Some(to),
            ..Default::default()
        })
        .await?;
    Ok(docs
        .into_iter()
        .filter(|d| {
            wanted.contains(&(
                d.window.clone(),
                d.window_start,
                d.dimension.clone(),
                d.value.clone(),
            ))
        })
        .collect())
}

/// Test hook for the takeover tests: with `STREAMLENS_CRASH_BEFORE_COMMIT=<file>`, once that file
/// exists the process aborts right after a pass's documents are stored and before they are
/// committed — the worst moment to die. Unset in normal use.
fn crash_point(docs: &[AggregateDoc]) {
    if let Some(trigger) = std::env::var_os("STREAMLENS_CRASH_BEFORE_COMMIT") {
        if !docs.is_empty() && std::path::Path::new(&trigger).exists() {
            tracing::error!(
                docs = docs.len(),
                "crash point reached: aborting before the commit"
            );
            std::process::abort();
        }
    }
}
