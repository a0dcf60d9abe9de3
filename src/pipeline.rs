//! Source → window engine → store, with backpressure.
//!
//! The source runs in its own task and sends batches through a bounded channel. The engine task
//! takes what is waiting (up to a cap), aggregates it in one polars pass, writes the changed
//! windows to the store and only then announces them to live subscribers. When the channel is
//! full the source waits: memory stays bounded however fast the input is.

use std::{sync::Arc, time::Instant};

use streamlens_aggregator::{store::StoredCheckpoint, Store, WindowEngine};
use streamlens_core::{AggregateDoc, EventKind, StreamRecord};
use streamlens_ingest::{
    archive::ArchiveWriter, Batch, Checkpoint, Quarantined, Source, SourceSummary,
};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::quarantine::Quarantine;

/// Batches in flight between source and engine.
const CHANNEL_BATCHES: usize = 16;
/// At most this many events are aggregated in one engine pass.
const MAX_EVENTS_PER_PASS: usize = 20_000;

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
    /// The quarantine file could not be written.
    #[error("cannot write quarantine: {0}")]
    Quarantine(#[from] std::io::Error),
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
}

/// Runs until the source ends or `shutdown` fires; flushes the store at the end.
///
/// `positions` is where the source resumed (empty for a fresh start). After every engine pass the
/// changed documents are written together with the positions they cover, so the stored
/// checkpoint never runs ahead of the stored aggregates.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    source: Box<dyn Source>,
    mut positions: Checkpoint,
    mut engine: WindowEngine,
    store: Arc<dyn Store>,
    mut quarantine: Quarantine,
    mut archive: Option<ArchiveWriter>,
    updates: Updates,
    shutdown: CancellationToken,
) -> Result<RunSummary, PipelineError> {
    let (tx, mut rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);
    let source_name = source.describe();
    tracing::info!(source = %source_name, store = %store.describe(), "pipeline started");
    let source_task = tokio::spawn(source.run(tx, shutdown.clone()));
    let mut summary = RunSummary::default();
    let mut pending: Vec<Batch> = Vec::new();
    loop {
        let first = tokio::select! {
            batch = rx.recv() => batch,
            _ = shutdown.cancelled() => None,
        };
        let Some(first) = first else { break };
        pending.push(first);
        let mut events = pending[0].events.len();
        while events < MAX_EVENTS_PER_PASS {
            match rx.try_recv() {
                Ok(batch) => {
                    events += batch.events.len();
                    pending.push(batch);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut all = Vec::with_capacity(events);
        let mut moved = false;
        for batch in pending.drain(..) {
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
            moved |= !batch.positions.is_empty();
            positions.extend(batch.positions);
            all.extend(batch.events);
        }
        if let Some(archive) = archive.as_mut() {
            for event in &all {
                archive.write(event)?;
            }
        }
        let mut kinds = [0u64; 4];
        for event in &all {
            kinds[match event.kind {
                EventKind::Insert => 0,
                EventKind::Modify => 1,
                EventKind::Remove => 2,
                EventKind::Unknown(_) => 3,
            }] += 1;
        }
        for (kind, n) in ["INSERT", "MODIFY", "REMOVE", "unknown"]
            .into_iter()
            .zip(kinds)
        {
            metrics::counter!("streamlens_events_total", "kind" => kind).increment(n);
        }
        // The polars pass is CPU work: keep it off the async workers.
        let (back, applied, all) = tokio::task::spawn_blocking(move || {
            let applied = engine.apply(&all);
            (engine, applied, all)
        })
        .await
        .map_err(|e| std::io::Error::other(format!("engine task failed: {e}")))?;
        engine = back;
        drop(all);
        for rejected in applied? {
            let raw =
                serde_json::to_string(&StreamRecord::from(&rejected.event)).unwrap_or_default();
            quarantine.put(&Quarantined {
                origin: format!(
                    "shard {} seq {}",
                    rejected.event.shard_id, rejected.event.sequence_number
                ),
                reason: rejected.reason,
                raw,
            })?;
        }
        let docs = engine.take_changed();
        let checkpoint = moved.then(|| StoredCheckpoint {
            pipeline: engine.spec().name.clone(),
            source: source_name.clone(),
            positions: positions.clone(),
            max_event_time: engine.max_event_time(),
            version: engine.version(),
        });
        if !docs.is_empty() || checkpoint.is_some() {
            store.write(&docs, checkpoint.as_ref()).await?;
            summary.docs_written += docs.len() as u64;
            metrics::counter!("streamlens_docs_written_total").increment(docs.len() as u64);
            // Nobody listening is fine.
            let _ = updates.send(Arc::new(docs));
        }
        metrics::histogram!("streamlens_pass_seconds").record(started.elapsed().as_secs_f64());
    }
    summary.source = match source_task.await {
        Ok(result) => result?,
        Err(e) => {
            return Err(PipelineError::Quarantine(std::io::Error::other(format!(
                "source task failed: {e}"
            ))))
        }
    };
    store.flush().await?;
    if let Some(archive) = archive {
        archive.finish()?;
    }
    summary.aggregated = engine.stats().aggregated;
    summary.quarantined = quarantine.count();
    tracing::info!(?summary, "pipeline finished");
    Ok(summary)
}
