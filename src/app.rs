//! The whole process: pipeline, dashboard, metrics, clean shutdown.

use std::time::SystemTime;

use anyhow::Context;
use streamlens_aggregator::{store, WindowEngine};
use streamlens_core::PipelineInfo;
use streamlens_dashboard::server::{router, DashboardState};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{config::Config, pipeline, quarantine::Quarantine};

/// Runs the configured pipeline (and the dashboard, if enabled) until the source ends — then
/// the dashboard keeps serving — or until `shutdown` fires.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<pipeline::RunSummary> {
    let version_seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default();
    let mut engine = WindowEngine::new(config.pipeline.clone(), version_seed)?;
    let store = store::open(&config.store)
        .await
        .context("opening the store")?;
    let positions = resume(&config, &mut engine, store.as_ref()).await?;
    let source = streamlens_ingest::build(&config.source, positions.clone())
        .await
        .context("starting the source")?;
    let health = source.health();
    let quarantine = Quarantine::open(&config.data_dir)
        .with_context(|| format!("opening the quarantine in {}", config.data_dir.display()))?;
    let archive = config
        .archive_to
        .as_deref()
        .map(streamlens_ingest::archive::ArchiveWriter::create)
        .transpose()?;
    let (updates, _) = broadcast::channel(256);
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
        let state = DashboardState {
            reader: store.clone(),
            updates: updates.clone(),
            info,
            site_root: config.dashboard.site_root.clone(),
        };
        let app = router(state)
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let rendered = prometheus.as_ref().map(|h| h.render()).unwrap_or_default();
                    async move { rendered }
                }),
            )
            .route(
                "/api/health",
                axum::routing::get(move || {
                    let shards = health.as_ref().map(|h| h.snapshot()).unwrap_or_default();
                    async move { axum::Json(serde_json::json!({ "shards": shards })) }
                }),
            );
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
    let summary = pipeline::run(
        source,
        positions,
        engine,
        store,
        quarantine,
        archive,
        updates,
        shutdown.clone(),
    )
    .await?;
    if let Some(server) = server {
        tracing::info!("source finished; the dashboard keeps serving until interrupted");
        server
            .await
            .context("dashboard task")?
            .context("dashboard server")?;
    }
    Ok(summary)
}

/// Where to resume: for a stream source with a stored checkpoint, the engine's state is restored
/// from the stored documents the checkpoint covers, and the source continues after the
/// checkpoint's positions. Archives are re-read whole (their documents are rewritten, not added to).
async fn resume(
    config: &Config,
    engine: &mut WindowEngine,
    store: &dyn streamlens_aggregator::Store,
) -> anyhow::Result<streamlens_ingest::Checkpoint> {
    if !matches!(config.source, streamlens_ingest::SourceConfig::Dynamodb(_)) {
        return Ok(Default::default());
    }
    let Some(checkpoint) = store.checkpoint(&config.pipeline.name).await? else {
        return Ok(Default::default());
    };
    if checkpoint.positions.is_empty() {
        return Ok(Default::default());
    }
    let keep = config.pipeline.retention_ms()?;
    let longest = engine
        .spec()
        .validate()?
        .iter()
        .map(|w| w.millis)
        .max()
        .unwrap_or_default();
    let docs = store
        .query(&streamlens_core::AggQuery {
            pipeline: Some(config.pipeline.name.clone()),
            from: Some(checkpoint.max_event_time - keep - longest),
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
    Ok(checkpoint.positions)
}
