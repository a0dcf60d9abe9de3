//! The whole process: pipeline, dashboard, metrics, clean shutdown.

use std::{
    sync::{atomic::Ordering, Arc},
    time::SystemTime,
};

use anyhow::Context;
use streamlens_aggregator::{store, WindowEngine};
use streamlens_core::{PipelineHealth, PipelineInfo};
use streamlens_dashboard::server::{router, DashboardState};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use streamlens_ingest::{Resume, SourceConfig};

use crate::{config::Config, pipeline, quarantine::Quarantine};

/// Runs the configured pipeline (and the dashboard, if enabled) until the source ends — then
/// the dashboard keeps serving — or until `shutdown` fires.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<pipeline::RunSummary> {
    run_with(config, shutdown, None).await
}

/// A source made from the configured one.
pub type Wrap = Box<
    dyn FnOnce(Box<dyn streamlens_ingest::Source>) -> Box<dyn streamlens_ingest::Source> + Send,
>;

/// Wraps the configured source (a replay filters and paces it).
pub struct SourceWrapper {
    /// Makes the wrapped source.
    pub wrap: Wrap,
    /// The wrapper looks at each change (its event time): an archive source must then deliver
    /// projected changes, not batches already reduced on its decoding threads.
    pub reads_changes: bool,
}

/// [`run`], with the source wrapped by `wrap` when given.
pub async fn run_with(
    config: Config,
    shutdown: CancellationToken,
    wrap: Option<SourceWrapper>,
) -> anyhow::Result<pipeline::RunSummary> {
    let version_seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default();
    let mut engine = WindowEngine::new(config.pipeline.clone(), version_seed)?;
    let store = store::open(&config.store)
        .await
        .context("opening the store")?;
    let leased = matches!(&config.source, SourceConfig::Dynamodb(c) if c.lease.is_some());
    if leased
        && !matches!(
            config.store,
            streamlens_aggregator::StoreConfig::Opensearch(_)
        )
    {
        anyhow::bail!(
            "[source.lease] shares a stream between processes: it needs `[store] kind = \"opensearch\"`, \
             which every process writes to"
        );
    }
    let mut resumed = if leased {
        pipeline::Resumed {
            positions: Default::default(),
            stream: None,
            committer: None,
        }
    } else {
        resume(&config, &mut engine, store.as_ref()).await?
    };
    // With an archive to archive to or a change index to keep, whole events are needed; else
    // read only what the engine reads.
    let projected =
        config.archive_to.is_none() && config.archive.is_none() && !config.changes.enabled;
    let reduced = projected && !wrap.as_ref().is_some_and(|w| w.reads_changes);
    let source = streamlens_ingest::build(
        &config.source,
        Resume {
            checkpoint: resumed.positions.clone(),
            stream: resumed.stream.clone(),
            group: config.pipeline.name.clone(),
            recovery: Some(Arc::new(StoreRecovery {
                store: store.clone(),
                pipeline: config.pipeline.name.clone(),
                stamp: version_seed,
            })),
            projection: projected.then(|| engine.projection().clone()),
            // The engine's state-free half runs where the changes are decoded.
            reduce: reduced.then(|| {
                let combiner = engine.combiner();
                streamlens_ingest::Reducer(Arc::new(move |changes| {
                    Box::new(CombineFold(combiner.start(changes)))
                }))
            }),
        },
    )
    .await
    .context("starting the source")?;
    let source = match wrap {
        Some(wrapper) => (wrapper.wrap)(source),
        None => source,
    };
    let leases = source.leases();
    if let Some(leases) = &leases {
        engine = resume_worker(&config, engine, store.as_ref(), leases).await?;
        resumed.positions = leases.registered().positions.clone();
        resumed.committer = Some(leases.clone());
    }
    let health = source.health();
    let quarantine = Quarantine::open(&config.data_dir)
        .with_context(|| format!("opening the quarantine in {}", config.data_dir.display()))?;
    let archive = match (&config.archive, &config.archive_to) {
        (Some(segmented), _) => Some(pipeline::Archiver::Segments(
            streamlens_ingest::archive::segments::SegmentWriter::open(
                segmented.segments().map_err(anyhow::Error::msg)?,
            )?,
        )),
        (None, Some(file)) => Some(pipeline::Archiver::File(
            streamlens_ingest::archive::ArchiveWriter::create(file)?,
        )),
        (None, None) => None,
    };
    let (updates, _) = broadcast::channel(256);
    let progress = Arc::new(pipeline::Progress::default());
    let info = PipelineInfo {
        name: config.pipeline.name.clone(),
        windows: config.pipeline.windows.clone(),
        dimensions: config.pipeline.dimensions.clone(),
        metrics: config
            .pipeline
            .metrics
            .iter()
            .map(|m| m.name.clone())
            .collect(),
        source: source.describe(),
        store: store.describe(),
    };
    let server = if config.dashboard.enabled {
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .ok();
        // `/api/health` and the page's health strip: the source's shards plus our counters.
        let health = {
            let (progress, quarantined) = (progress.clone(), quarantine.counter());
            Arc::new(move || {
                PipelineHealth::new(
                    health.is_some(),
                    health.as_ref().map(|h| h.snapshot()).unwrap_or_default(),
                    progress.events.load(Ordering::Relaxed),
                    quarantined.load(Ordering::Relaxed),
                    streamlens_ingest::now_ms(),
                )
            })
        };
        let state = DashboardState {
            reader: store.clone(),
            updates: updates.clone(),
            info,
            site_root: config.dashboard.site_root.clone(),
            health,
            query: query_engine(store.clone(), config.clone()),
            changes: if config.changes.enabled {
                change_search(store.clone())
            } else {
                streamlens_dashboard::server::no_changes()
            },
            replays: Arc::new(crate::replay_runner::ReplayRunner::new(
                config.clone(),
                shutdown.clone(),
            )),
        };
        let app = router(state).route(
            "/metrics",
            axum::routing::get(move || {
                let rendered = prometheus.as_ref().map(|h| h.render()).unwrap_or_default();
                async move { rendered }
            }),
        );
        let app = match &config.dashboard.token {
            Some(token) => streamlens_dashboard::server::with_token(app, token.clone()),
            None => app,
        };
        let listener = tokio::net::TcpListener::bind(config.dashboard.listen)
            .await
            .with_context(|| format!("binding the dashboard to {}", config.dashboard.listen))?;
        tracing::info!(url = %format!("http://{}", listener.local_addr()?), "dashboard listening");
        let stop = shutdown.clone();
        Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }))
    } else {
        None
    };
    let summary = match pipeline::run(
        source,
        resumed,
        engine,
        store.clone(),
        quarantine,
        archive,
        config.changes.enabled.then(|| pipeline::ChangeIndex {
            table: config.change_table(),
            retention_ms: config.change_retention_ms().unwrap_or(i64::MAX),
        }),
        updates,
        progress,
        match &config.store {
            streamlens_aggregator::StoreConfig::Embedded(c) => c.durable_every,
            // Its writes are durable when they return.
            streamlens_aggregator::StoreConfig::Opensearch(_) => std::time::Duration::ZERO,
        },
        shutdown.clone(),
    )
    .await
    {
        Ok(summary) => summary,
        Err(pipeline::PipelineError::Source(streamlens_ingest::Error::Fenced(why))) => {
            // Another worker took our shards and continues from our last commit: undo what we
            // stored after it, then stop.
            if let Some(leases) = &leases {
                let undone = store
                    .roll_back(
                        &config.pipeline.name,
                        leases.worker(),
                        leases.committed_version(),
                        version_seed,
                    )
                    .await?;
                tracing::error!(reason = %why, undone, "fenced: uncommitted documents rolled back, stopping");
            }
            anyhow::bail!("{why}");
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(leases) = &leases {
        // Nothing more will be committed: hand every shard over now rather than after the lease
        // times out.
        if let Err(e) = leases.release_all().await {
            tracing::warn!(error = %e, "could not release the leases; others take them when they expire");
        }
    }
    if let Some(server) = server {
        tracing::info!("source finished; the dashboard keeps serving until interrupted");
        server
            .await
            .context("dashboard task")?
            .context("dashboard server")?;
    }
    Ok(summary)
}

/// `POST /api/query`: the pipeline's queries answered from its store, or from a replay
/// namespace's when the query names one (an OpenSearch namespace is connected once, then kept).
/// The window engine's combiner as an archive source's [`streamlens_ingest::Fold`]: a batch's
/// changes combined on the decoding thread as they are decoded.
struct CombineFold(streamlens_aggregator::window::Combining);

impl streamlens_ingest::Fold for CombineFold {
    fn push(&mut self, change: &streamlens_core::ChangeView<'_>) {
        self.0.push(change);
    }

    fn finish(self: Box<Self>) -> streamlens_ingest::Reduced {
        streamlens_ingest::Reduced {
            changes: self.0.len(),
            value: Box::new(self.0.finish()),
        }
    }
}

fn query_engine(
    store: Arc<dyn streamlens_aggregator::Store>,
    config: Config,
) -> streamlens_dashboard::server::QueryFn {
    type Opened = (
        Arc<dyn streamlens_aggregator::Store>,
        streamlens_aggregator::PipelineSpec,
    );
    let spec = Arc::new(config.pipeline.clone());
    let config = Arc::new(config);
    let namespaces = Arc::new(tokio::sync::Mutex::new(std::collections::HashMap::<
        String,
        Opened,
    >::new()));
    Arc::new(move |query| {
        let (store, spec, config, namespaces) = (
            store.clone(),
            spec.clone(),
            config.clone(),
            namespaces.clone(),
        );
        Box::pin(async move {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let Some(namespace) = query.namespace.clone() else {
                return streamlens_aggregator::query::run(store.as_ref(), &spec, &query, now).await;
            };
            let (store, spec) = {
                let mut open = namespaces.lock().await;
                match open.get(&namespace) {
                    Some(opened) => opened.clone(),
                    None => {
                        let opened = crate::replay::open_namespace(&config, &namespace)
                            .await
                            .map_err(|e| {
                                streamlens_core::QueryError::Invalid(format!("`namespace`: {e:#}"))
                            })?;
                        // An embedded namespace is opened per query (shared with a replay
                        // writing it, see `store::open`), never kept: a kept file would block
                        // the next replay into it, and outlive a `--fresh` one's wipe.
                        if !matches!(
                            config.store,
                            streamlens_aggregator::StoreConfig::Embedded(_)
                        ) {
                            open.insert(namespace.clone(), opened.clone());
                        }
                        opened
                    }
                }
            };
            streamlens_aggregator::query::run(store.as_ref(), &spec, &query, now).await
        })
    })
}

/// `POST /api/changes`: change searches answered from the store's change index.
fn change_search(
    store: Arc<dyn streamlens_aggregator::Store>,
) -> streamlens_dashboard::server::ChangesFn {
    Arc::new(move |query| {
        let store = store.clone();
        Box::pin(async move {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            streamlens_aggregator::changes::search(store.as_ref(), &query, now).await
        })
    })
}

/// Rolls a worker's documents back to what the lease table says it committed.
struct StoreRecovery {
    store: Arc<dyn streamlens_aggregator::Store>,
    pipeline: String,
    /// This process's first engine version: above every version the worker rolled back wrote.
    stamp: u64,
}

#[async_trait::async_trait]
impl streamlens_ingest::Recovery for StoreRecovery {
    async fn roll_back(&self, worker: &str, committed_version: u64) -> Result<(), String> {
        let undone = self
            .store
            .roll_back(&self.pipeline, worker, committed_version, self.stamp)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            worker,
            committed_version,
            undone,
            "worker's uncommitted documents rolled back"
        );
        Ok(())
    }
}

/// How far back stored windows can still change, from the newest event time: the open windows a
/// resumed engine needs.
fn restore_horizon(config: &Config, _engine: &WindowEngine) -> anyhow::Result<i64> {
    Ok(config.pipeline.open_horizon_ms()?)
}

/// Where to resume: for a stream source with a stored checkpoint, documents written after the
/// checkpoint (a crash between the two) are rolled back, the engine's state is restored from the
/// stored documents the checkpoint covers, and the source continues after the checkpoint's
/// positions, in the checkpoint's stream. An archive read resumes the same way after the lines
/// its checkpoint covers, if the checkpoint is of the same archive (and time range); a
/// checkpoint of another archive is not resumed from: the archive is read from the start and its
/// windows rewritten. A live replay of an archive keeps no position.
async fn resume(
    config: &Config,
    engine: &mut WindowEngine,
    store: &dyn streamlens_aggregator::Store,
) -> anyhow::Result<pipeline::Resumed> {
    let fresh = pipeline::Resumed {
        positions: Default::default(),
        stream: None,
        committer: None,
    };
    let archive = match &config.source {
        SourceConfig::Dynamodb(_) => None,
        SourceConfig::Archive(c) if !c.live_replay => Some(streamlens_ingest::Source::describe(
            &streamlens_ingest::archive::ArchiveSource::new(c.clone()),
        )),
        SourceConfig::Archive(_) => return Ok(fresh),
    };
    let Some(checkpoint) = store.checkpoint(&config.pipeline.name).await? else {
        return Ok(fresh);
    };
    if let Some(archive) = &archive {
        if checkpoint.source != *archive {
            tracing::info!(
                checkpoint = %checkpoint.source,
                source = %archive,
                "the stored checkpoint is of another source: reading the archive from the start"
            );
            return Ok(fresh);
        }
    }
    let undone = store
        .roll_back(
            &config.pipeline.name,
            "",
            checkpoint.version,
            engine.version(),
        )
        .await?;
    if undone > 0 {
        tracing::warn!(
            undone,
            "documents written after the last checkpoint were rolled back"
        );
    }
    if checkpoint.positions.is_empty() {
        return Ok(fresh);
    }
    let docs = store
        .query(&streamlens_core::AggQuery {
            pipeline: Some(config.pipeline.name.clone()),
            from: Some(checkpoint.max_event_time - restore_horizon(config, engine)?),
            worker: Some(String::new()),
            ..Default::default()
        })
        .await
        .context("reading the stored windows to resume from")?;
    let skipped = engine.restore(&docs, checkpoint.max_event_time, checkpoint.version)?;
    tracing::info!(
        shards = checkpoint.positions.len(),
        windows = docs.len(),
        skipped,
        "resuming from the stored checkpoint"
    );
    Ok(pipeline::Resumed {
        stream: checkpoint
            .source
            .strip_prefix("dynamodb:")
            .filter(|_| archive.is_none())
            .map(str::to_owned),
        positions: checkpoint.positions,
        committer: None,
    })
}

/// A worker sharing a stream: its documents are its own partial sums. What it stored after its
/// last commit is rolled back, and the engine continues from its committed documents.
async fn resume_worker(
    config: &Config,
    engine: WindowEngine,
    store: &dyn streamlens_aggregator::Store,
    leases: &streamlens_ingest::dynamodb::lease::Leases,
) -> anyhow::Result<WindowEngine> {
    let worker = leases.worker().to_owned();
    let row = leases.registered();
    let undone = store
        .roll_back(
            &config.pipeline.name,
            &worker,
            row.committed_version,
            engine.version(),
        )
        .await?;
    let mut engine = engine.with_worker(worker.clone());
    if row.committed_version == 0 {
        return Ok(engine);
    }
    let docs = store
        .query(&streamlens_core::AggQuery {
            pipeline: Some(config.pipeline.name.clone()),
            from: Some(row.max_event_time - restore_horizon(config, &engine)?),
            worker: Some(worker.clone()),
            ..Default::default()
        })
        .await
        .context("reading this worker's stored windows")?;
    engine.restore(&docs, row.max_event_time, row.committed_version)?;
    tracing::info!(
        worker,
        windows = docs.len(),
        undone,
        committed_version = row.committed_version,
        "worker resumed from its last commit"
    );
    Ok(engine)
}
