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
    let engine = WindowEngine::new(config.pipeline.clone(), version_seed)?;
    let store = store::open(&config.store)
        .await
        .context("opening the store")?;
    let source = streamlens_ingest::build(&config.source)
        .await
        .context("starting the source")?;
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
        let app = router(state).route(
            "/metrics",
            axum::routing::get(move || {
                let rendered = prometheus.as_ref().map(|h| h.render()).unwrap_or_default();
                async move { rendered }
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
