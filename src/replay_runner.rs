//! Replays started from the dashboard: the [`ReplayControl`] behind `/api/replays` and the
//! Replays page.
//!
//! A replay started here is what `streamlens replay` runs ([`crate::replay::run_with_progress`]),
//! with the live config's archive as its source. Each runs on a thread of its own, with its own
//! single-threaded Tokio runtime (the archive decoding still uses every core) and a no-op
//! metrics recorder for that thread: its changes, passes and documents are not counted in the
//! live pipeline's Prometheus metrics. Its log lines carry `namespace`.
//!
//! The runner keeps every replay it ran (state, progress, outcome) until the process ends;
//! namespaces found under `<data_dir>/replays` that it did not run are listed as stored.
//! Stopping a replay cancels it at the next batch: what it stored is checkpointed, and starting
//! it again goes on from there.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Instant,
};

use anyhow::Context;
use futures::future::BoxFuture;
use streamlens_core::replay::{ReplayRequest, ReplayState, ReplayStatus};
use streamlens_dashboard::server::{ReplayControl, ReplayError};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    replay::{self, ReplayArgs, ReplayOutcome, ReplayProgress},
};

/// Runs the dashboard's replays.
pub struct ReplayRunner {
    inner: Arc<Runner>,
}

struct Runner {
    config: Config,
    shutdown: CancellationToken,
    jobs: Mutex<BTreeMap<String, Job>>,
}

struct Job {
    request: ReplayRequest,
    progress: Arc<ReplayProgress>,
    started_ms: i64,
    started: Instant,
    stop: CancellationToken,
    ended: Arc<Mutex<Option<Ended>>>,
}

struct Ended {
    at_ms: i64,
    seconds: f64,
    result: Result<ReplayOutcome, String>,
}

impl ReplayRunner {
    /// A runner for the live config's replays; `shutdown` stops them all.
    pub fn new(config: Config, shutdown: CancellationToken) -> Self {
        ReplayRunner {
            inner: Arc::new(Runner {
                config,
                shutdown,
                jobs: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The `streamlens replay` flags of `request`; `spec`: the file its spec was written to.
    fn args(request: &ReplayRequest, spec: Option<&tempfile::NamedTempFile>) -> ReplayArgs {
        ReplayArgs {
            config: PathBuf::new(),
            namespace: request.namespace.clone(),
            archive: None,
            stream: None,
            from: request.from.clone(),
            to: request.to.clone(),
            speed: request.speed,
            spec: spec.map(|f| f.path().to_owned()),
            changes: false,
            fresh: request.fresh,
            quiet: true,
        }
    }

    fn status(namespace: &str, job: &Job) -> ReplayStatus {
        let progress = &job.progress;
        let read = progress.read.load(Ordering::Relaxed);
        let total = progress.total.load(Ordering::Relaxed);
        let resumed_after = progress.resumed_after.load(Ordering::Relaxed);
        let ended = job.ended.lock().unwrap_or_else(|e| e.into_inner());
        let seconds = ended
            .as_ref()
            .map_or_else(|| job.started.elapsed().as_secs_f64(), |e| e.seconds);
        let rate = read.saturating_sub(resumed_after) as f64 / seconds.max(1e-3);
        let mut status = ReplayStatus {
            namespace: namespace.to_owned(),
            state: ReplayState::Running,
            request: job.request.clone(),
            read,
            total,
            resumed_after,
            rate,
            eta_seconds: (total > read && rate > 0.0).then(|| (total - read) as f64 / rate),
            started_ms: job.started_ms,
            finished_ms: None,
            aggregated: 0,
            docs_written: 0,
            error: None,
        };
        if let Some(ended) = ended.as_ref() {
            status.finished_ms = Some(ended.at_ms);
            status.eta_seconds = None;
            match &ended.result {
                Ok(outcome) => {
                    status.state = if outcome.completed {
                        ReplayState::Done
                    } else {
                        ReplayState::Stopped
                    };
                    status.aggregated = outcome.summary.aggregated;
                    status.docs_written = outcome.summary.docs_written;
                    status.resumed_after = outcome.resumed_after;
                    if outcome.completed && total > 0 {
                        // An estimated total is exact once the end is reached.
                        status.total = read;
                    }
                }
                Err(e) => {
                    status.state = ReplayState::Failed;
                    status.error = Some(e.clone());
                }
            }
        }
        status
    }

    /// Namespaces replayed before (a directory under `<data_dir>/replays`), not by this runner.
    fn stored(&self, running: &BTreeMap<String, Job>) -> Vec<ReplayStatus> {
        let dir = self.inner.config.data_dir.join("replays");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<ReplayStatus> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|ns| !running.contains_key(ns) && replay::check_namespace(ns).is_ok())
            .map(|namespace| ReplayStatus {
                request: ReplayRequest {
                    namespace: namespace.clone(),
                    ..ReplayRequest::default()
                },
                namespace,
                state: ReplayState::Stored,
                read: 0,
                total: 0,
                resumed_after: 0,
                rate: 0.0,
                eta_seconds: None,
                started_ms: 0,
                finished_ms: None,
                aggregated: 0,
                docs_written: 0,
                error: None,
            })
            .collect();
        out.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        out
    }
}

impl ReplayControl for ReplayRunner {
    fn start(
        &self,
        request: ReplayRequest,
    ) -> BoxFuture<'static, Result<ReplayStatus, ReplayError>> {
        let runner = self.inner.clone();
        Box::pin(async move {
            // Everything a bad request can get wrong is refused here, before anything runs.
            let invalid = |e: anyhow::Error| ReplayError::Invalid(format!("{e:#}"));
            let spec = match &request.spec {
                Some(text) => Some(runner.spec_file(text).map_err(invalid)?),
                None => None,
            };
            replay::check(&runner.config, &ReplayRunner::args(&request, spec.as_ref()))
                .await
                .map_err(invalid)?;
            runner.start_now(request, spec)
        })
    }

    fn stop(&self, namespace: &str) -> Result<ReplayStatus, ReplayError> {
        let jobs = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
        match jobs.get(namespace) {
            Some(job)
                if job
                    .ended
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none() =>
            {
                job.stop.cancel();
                tracing::info!(namespace, "replay stop asked from the dashboard");
                Ok(Self::status(namespace, job))
            }
            _ => Err(ReplayError::NotRunning(namespace.to_owned())),
        }
    }

    fn list(&self) -> BoxFuture<'static, Vec<ReplayStatus>> {
        let jobs = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<ReplayStatus> = jobs
            .iter()
            .map(|(namespace, job)| Self::status(namespace, job))
            .collect();
        // Newest first, then those replayed before.
        out.sort_by_key(|r| std::cmp::Reverse(r.started_ms));
        out.extend(self.stored(&jobs));
        Box::pin(async move { out })
    }
}

impl Runner {
    /// A request's spec, checked and written to a file (under the data dir) for the replay to
    /// read and keep in its namespace, as it does with `--spec`.
    fn spec_file(&self, text: &str) -> anyhow::Result<tempfile::NamedTempFile> {
        use std::io::Write;
        replay::parse_spec(text, "spec")?;
        let dir = &self.config.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut file = tempfile::Builder::new()
            .prefix(".replay-spec-")
            .suffix(".toml")
            .tempfile_in(dir)
            .with_context(|| format!("writing the spec in {}", dir.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .with_context(|| format!("writing {}", file.path().display()))?;
        Ok(file)
    }

    /// Starts `request`'s replay on a thread of its own; `spec` is its spec file, removed when
    /// the replay ends.
    fn start_now(
        &self,
        request: ReplayRequest,
        spec: Option<tempfile::NamedTempFile>,
    ) -> Result<ReplayStatus, ReplayError> {
        let args = ReplayRunner::args(&request, spec.as_ref());
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = jobs.get(&request.namespace) {
            if job
                .ended
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
            {
                return Err(ReplayError::Running(request.namespace));
            }
        }
        let job = Job {
            request: request.clone(),
            progress: Arc::new(ReplayProgress::default()),
            started_ms: crate::query_cli::now_ms(),
            started: Instant::now(),
            stop: self.shutdown.child_token(),
            ended: Arc::new(Mutex::new(None)),
        };
        let (config, progress, stop, ended) = (
            self.config.clone(),
            job.progress.clone(),
            job.stop.clone(),
            job.ended.clone(),
        );
        let namespace = request.namespace.clone();
        let started = job.started;
        std::thread::Builder::new()
            .name(format!("replay-{namespace}"))
            .spawn(move || {
                let _spec = spec;
                let noop = metrics::NoopRecorder;
                let _local = metrics::set_default_local_recorder(&noop);
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("could not start the replay's runtime: {e}"))
                    .and_then(|runtime| {
                        let span = tracing::info_span!("replay", namespace = %namespace);
                        let _entered = span.enter();
                        runtime
                            .block_on(replay::run_with_progress(&config, &args, progress, stop))
                            .map_err(|e| format!("{e:#}"))
                    });
                match &result {
                    Ok(outcome) => tracing::info!(
                        namespace,
                        completed = outcome.completed,
                        changes = outcome.summary.source.events,
                        "dashboard replay ended"
                    ),
                    Err(e) => tracing::warn!(namespace, error = %e, "dashboard replay failed"),
                }
                *ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(Ended {
                    at_ms: crate::query_cli::now_ms(),
                    seconds: started.elapsed().as_secs_f64(),
                    result,
                });
            })
            .map_err(|e| ReplayError::Invalid(format!("could not start a replay thread: {e}")))?;
        tracing::info!(namespace = %request.namespace, "replay started from the dashboard");
        let status = ReplayRunner::status(&request.namespace, &job);
        jobs.insert(request.namespace, job);
        Ok(status)
    }
}
