//! `streamlens replay` and `streamlens compare`: recompute aggregates from an archive into an
//! isolated namespace, and compare them with the live ones.
//!
//! A replay runs the normal pipeline — the same sources, window engine and store code — with
//! three changes: the source is the archive (or, with `--stream`, the live stream from a start
//! position until caught up), optionally cut to a time range and paced at a multiple of real time; the pipeline spec may be another one (to backfill a new metric), and
//! the store is the namespace's: `<data_dir>/replays/<namespace>/store.redb` for the embedded
//! store, indices under `<prefix>-replay-<namespace>` for OpenSearch. Nothing of the live store is
//! written, so live data is untouched. A progress bar on stderr shows changes read, rate and ETA.
//!
//! A replay checkpoints like a live run: each pass stores its windows with the archive position
//! they cover (the lines read, and the first segment read). Run again, a replay goes on from
//! its namespace's checkpoint — the lines it covers are passed over undecoded and the open
//! windows restored from the namespace's store — so an interrupted replay finishes where it
//! stopped and ends with the aggregates of an uninterrupted one; a finished one reads only what
//! the archive gained since. Another archive or time range starts from the beginning; another
//! spec is refused unless `--fresh`, which empties the namespace first.
//!
//! `compare` reads the same windows from the live store and a namespace and lists every window
//! and group whose counts or metric values differ, or that only one side has.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use streamlens_aggregator::{
    config::{EmbeddedStoreConfig, OpenSearchStoreConfig},
    PipelineSpec, StoreConfig,
};
use streamlens_core::{AggQuery, AggregateDoc};
use streamlens_ingest::{config::ArchiveSourceConfig, Batch, Source, SourceConfig, SourceSummary};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    query_cli::{now_ms, time_arg},
};

/// The flags of `streamlens replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The live config: its store (the namespace is made beside it), spec and archive.
    #[arg(long, short, env = "STREAMLENS_CONFIG")]
    pub config: PathBuf,
    /// The namespace to replay into: lowercase letters, digits, `-` and `_`.
    #[arg(long, short)]
    pub namespace: String,
    /// The archive to replay: a file or a segmented archive directory [default: the config's
    /// `[archive] dir`, else its `archive_to`].
    #[arg(long, conflicts_with = "stream")]
    pub archive: Option<PathBuf>,
    /// Replay from the config's DynamoDB stream instead (its last 24 hours), starting at
    /// `trim_horizon`, `at:<sequence number>` or `after:<sequence number>`; combine with
    /// `--from` to start at a time. Ends once every shard is caught up.
    #[arg(long)]
    pub stream: Option<String>,
    /// Only changes at or after this time: epoch ms, ISO-8601, `now-<duration>`.
    #[arg(long)]
    pub from: Option<String>,
    /// Only changes before this time.
    #[arg(long)]
    pub to: Option<String>,
    /// Pace the replay at this multiple of real time (2 = twice as fast as the changes were
    /// made) instead of full speed, to watch it.
    #[arg(long)]
    pub speed: Option<f64>,
    /// Another pipeline spec (a TOML file with a `[pipeline]` table) to compute instead of the
    /// config's, e.g. to backfill a new metric.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Keep a change index in the namespace too.
    #[arg(long)]
    pub changes: bool,
    /// Empty the namespace first. Without it, a namespace replayed before goes on from its
    /// checkpoint (with the same archive, range and spec only).
    #[arg(long)]
    pub fresh: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Changes per batch of a paced replay.
const PACED_BATCH: usize = 32;

/// The spec a namespace was replayed with, kept in its directory when it differs from the
/// live one.
pub const SPEC_FILE: &str = "spec.toml";

/// A namespace's store and the spec its aggregates were computed with, for queries.
pub async fn open_namespace(
    config: &Config,
    namespace: &str,
) -> anyhow::Result<(
    std::sync::Arc<dyn streamlens_aggregator::Store>,
    PipelineSpec,
)> {
    check_namespace(namespace)?;
    let store = namespace_store(config, namespace);
    if let StoreConfig::Embedded(c) = &store {
        anyhow::ensure!(
            c.path.exists(),
            "no replay namespace `{namespace}` (nothing at {})",
            c.path.display()
        );
    }
    let spec_path = namespace_dir(config, namespace).join(SPEC_FILE);
    let spec = if spec_path.exists() {
        read_spec(&spec_path)?
    } else {
        config.pipeline.clone()
    };
    let store = streamlens_aggregator::store::open(&store)
        .await
        .with_context(|| format!("opening replay namespace `{namespace}`"))?;
    Ok((store, spec))
}

fn read_spec(path: &Path) -> anyhow::Result<PipelineSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_spec(&text, &format!("spec file {}", path.display()))
}

/// A spec's text (a TOML document with a `[pipeline]` table), checked; `what` names it in the
/// error.
pub fn parse_spec(text: &str, what: &str) -> anyhow::Result<PipelineSpec> {
    #[derive(serde::Deserialize)]
    struct SpecFile {
        pipeline: PipelineSpec,
    }
    let spec: SpecFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    spec.pipeline
        .validate()
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    Ok(spec.pipeline)
}

/// Checks a namespace name.
pub fn check_namespace(namespace: &str) -> anyhow::Result<()> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 64
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    anyhow::ensure!(
        ok,
        "namespace `{namespace}`: use 1 to 64 lowercase letters, digits, `-` and `_`"
    );
    Ok(())
}

/// Where a namespace's run data (quarantine, embedded store) lives.
pub fn namespace_dir(config: &Config, namespace: &str) -> PathBuf {
    config.data_dir.join("replays").join(namespace)
}

/// The store of a namespace: beside the live one, never the live one.
pub fn namespace_store(config: &Config, namespace: &str) -> StoreConfig {
    match &config.store {
        StoreConfig::Embedded(c) => StoreConfig::Embedded(EmbeddedStoreConfig {
            path: namespace_dir(config, namespace).join("store.redb"),
            ..c.clone()
        }),
        StoreConfig::Opensearch(c) => StoreConfig::Opensearch(OpenSearchStoreConfig {
            index_prefix: format!("{}-replay-{namespace}", c.index_prefix),
            ..c.clone()
        }),
    }
}

/// The config a replay runs: the archive as its source, the namespace's store and data
/// directory, no dashboard, no archive of its own.
pub fn replay_config(config: &Config, args: &ReplayArgs) -> anyhow::Result<Config> {
    check_namespace(&args.namespace)?;
    let source = match &args.stream {
        Some(start) => SourceConfig::Dynamodb(stream_source(config, start)?),
        None => SourceConfig::Archive(ArchiveSourceConfig::once(archive_of(config, args)?)),
    };
    let mut replay = replay_config_with(config, args)?;
    replay.source = source;
    Ok(replay)
}

/// The live config's stream, read from `start` until caught up, without leases.
fn stream_source(
    config: &Config,
    start: &str,
) -> anyhow::Result<streamlens_ingest::config::DynamoDbSourceConfig> {
    use streamlens_ingest::config::StartPosition;
    let SourceConfig::Dynamodb(live) = &config.source else {
        anyhow::bail!("--stream needs a config whose source is a DynamoDB stream");
    };
    let start = match start.split_once(':') {
        None if start == "trim_horizon" => StartPosition::TrimHorizon,
        Some(("at", seq)) => StartPosition::AtSequenceNumber(seq.to_owned()),
        Some(("after", seq)) => StartPosition::AfterSequenceNumber(seq.to_owned()),
        _ => anyhow::bail!(
            "--stream `{start}`: give trim_horizon, at:<sequence number> or after:<sequence number>"
        ),
    };
    Ok(streamlens_ingest::config::DynamoDbSourceConfig {
        start,
        stop_when_idle: Some(live.stop_when_idle.unwrap_or(Duration::from_secs(5))),
        lease: None,
        ..live.clone()
    })
}

/// The archive a replay reads: `--archive`, else the config's `[archive] dir`, else its
/// `archive_to`, else the archive its source reads.
fn archive_of(config: &Config, args: &ReplayArgs) -> anyhow::Result<PathBuf> {
    let archive = args
        .archive
        .clone()
        .or_else(|| config.archive.as_ref().map(|a| a.dir.clone()))
        .or_else(|| config.archive_to.clone())
        .or_else(|| match &config.source {
            SourceConfig::Archive(source) => Some(source.path.clone()),
            SourceConfig::Dynamodb(_) => None,
        })
        .context(
            "the config keeps no archive to replay ([archive] dir or archive_to): give --archive, \
             or --stream to replay the stream's last 24 hours",
        )?;
    anyhow::ensure!(
        archive.exists(),
        "archive {} does not exist",
        archive.display()
    );
    Ok(archive)
}

/// The replay config but for its source.
fn replay_config_with(config: &Config, args: &ReplayArgs) -> anyhow::Result<Config> {
    let pipeline = match &args.spec {
        None => config.pipeline.clone(),
        Some(path) => read_spec(path)?,
    };
    let mut replay = config.clone();
    replay.store = namespace_store(config, &args.namespace);
    replay.data_dir = namespace_dir(config, &args.namespace);
    replay.archive_to = None;
    replay.archive = None;
    replay.pipeline = pipeline;
    replay.dashboard.enabled = false;
    replay.changes.enabled = args.changes;
    Ok(replay)
}

/// The archive source, cut to a time range, paced, and counted.
struct Windowed {
    inner: Box<dyn Source>,
    from: Option<i64>,
    to: Option<i64>,
    speed: Option<f64>,
    progress: Arc<ReplayProgress>,
}

#[async_trait::async_trait]
impl Source for Windowed {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn run(
        self: Box<Self>,
        out: mpsc::Sender<Batch>,
        shutdown: CancellationToken,
    ) -> Result<SourceSummary, streamlens_ingest::Error> {
        let Windowed {
            inner,
            from,
            to,
            speed,
            progress,
        } = *self;
        let (tx, mut rx) = mpsc::channel::<Batch>(4);
        let reader = tokio::spawn(inner.run(tx, shutdown.clone()));
        let keep = |t: i64| from.is_none_or(|f| t >= f) && to.is_none_or(|e| t < e);
        let started = Instant::now();
        let mut first: Option<i64> = None;
        let mut positioned = false;
        // What went on to the pipeline.
        let mut passed = SourceSummary::default();
        while let Some(mut batch) = rx.recv().await {
            let position = streamlens_ingest::archive::ArchivePosition::of(&batch.positions)
                .ok()
                .flatten();
            // Reduced batches come only when nothing is cut or paced (`reads_changes`).
            let reduced = batch.reduced.as_ref().map_or(0, |r| r.changes);
            let lines =
                (batch.events.len() + batch.projected.len() + reduced + batch.quarantined.len())
                    as u64;
            batch.events.retain(|e| keep(e.event_time_ms));
            batch.projected.retain(|p| keep(p.event_time_ms));
            if let Some(speed) = speed {
                // Changes leave no earlier than their offset from the first one, divided by speed.
                let newest = batch
                    .events
                    .iter()
                    .map(|e| e.event_time_ms)
                    .chain(batch.projected.iter().map(|p| p.event_time_ms))
                    .max();
                if let Some(newest) = newest {
                    let first = *first.get_or_insert(newest);
                    let due =
                        Duration::from_millis(((newest - first).max(0) as f64 / speed) as u64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.cancelled() => break,
                        }
                    }
                }
            }
            passed.events += (batch.events.len() + batch.projected.len() + reduced) as u64;
            passed.quarantined += batch.quarantined.len() as u64;
            if out.send(batch).await.is_err() {
                return Err(streamlens_ingest::Error::DownstreamClosed);
            }
            // Progress counts what went on to the pipeline (after pacing), not what was read ahead.
            match position {
                Some(position) => {
                    if !positioned {
                        positioned = true;
                        // The first batch of a resumed read: the lines before it were passed over
                        // (about: blank lines are not in the batch; for the bar only).
                        progress
                            .resumed_after
                            .store(position.lines.saturating_sub(lines), Ordering::Relaxed);
                    }
                    progress.read.store(position.lines, Ordering::Relaxed);
                }
                None => {
                    progress.read.fetch_add(lines, Ordering::Relaxed);
                }
            }
        }
        // A reader blocked on the full channel must see it closed to end; stopped, what it read
        // ahead is not the replay's.
        drop(rx);
        match reader.await {
            Ok(Err(streamlens_ingest::Error::DownstreamClosed)) if shutdown.is_cancelled() => {
                Ok(passed)
            }
            Ok(Ok(_)) if shutdown.is_cancelled() => Ok(passed),
            Ok(result) => result,
            Err(e) => Err(streamlens_ingest::Error::Config(format!(
                "archive reader failed: {e}"
            ))),
        }
    }
}

/// Lines in an archive (decompressed), for the progress bar's length: a segment directory's
/// from the index of the segments in range; a plain file's estimated from its first 4 MB
/// (reading a large file twice would slow the replay); a compressed file's counted, until
/// `stop`.
fn count_lines(path: &Path, range: Option<(i64, i64)>, stop: &CancellationToken) -> Option<u64> {
    if path.is_dir() {
        let segments = streamlens_ingest::archive::segments::segments_in(path, range).ok()?;
        return Some(segments.iter().map(|s| s.records).sum());
    }
    let mut reader = streamlens_ingest::archive::open(path).ok()?;
    let plain = {
        let mut magic = [0u8; 4];
        std::io::Read::read_exact(&mut std::fs::File::open(path).ok()?, &mut magic).is_ok()
            && magic[..2] != [0x1f, 0x8b]
            && magic != [0x28, 0xb5, 0x2f, 0xfd]
    };
    if plain {
        let size = std::fs::metadata(path).ok()?.len();
        let mut sample = vec![0u8; (4 << 20).min(size as usize)];
        std::io::Read::read_exact(&mut reader, &mut sample).ok()?;
        let lines = memchr::memchr_iter(b'\n', &sample).count().max(1) as u64;
        return Some(size * lines / sample.len().max(1) as u64);
    }
    let mut lines = 0u64;
    loop {
        if stop.is_cancelled() {
            return None;
        }
        let buf = std::io::BufRead::fill_buf(&mut reader).ok()?;
        if buf.is_empty() {
            return Some(lines);
        }
        lines += memchr::memchr_iter(b'\n', buf).count() as u64;
        let n = buf.len();
        std::io::BufRead::consume(&mut reader, n);
    }
}

/// How far a replay has got, shared with whoever shows it (the command's progress bar, the
/// dashboard's replays page).
#[derive(Debug, Default)]
pub struct ReplayProgress {
    /// Archive lines read (a resumed replay counts the lines it passed over), or changes read
    /// from a stream.
    pub read: AtomicU64,
    /// The lines of the archive (estimated for a large plain file); 0 while unknown or for a
    /// stream.
    pub total: AtomicU64,
    /// The archive lines a resumed replay passed over (its checkpoint's).
    pub resumed_after: AtomicU64,
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct ReplayOutcome {
    /// The pipeline run (this run's changes only, when resumed).
    pub summary: crate::pipeline::RunSummary,
    /// Archive lines passed over because the namespace's checkpoint covered them.
    pub resumed_after: u64,
    /// Seconds taken.
    pub seconds: f64,
    /// False when stopped before the end (run the same replay again to finish it).
    pub completed: bool,
}

/// A time flag (`--from`, `--to`) resolved to epoch ms.
fn time(field: &str, text: &Option<String>) -> anyhow::Result<Option<i64>> {
    text.as_deref()
        .map(|t| {
            streamlens_aggregator::query::resolve_time(field, &time_arg(t), now_ms())
                .map_err(|e| anyhow::anyhow!("--{e}"))
        })
        .transpose()
}

/// The time flags of a replay, resolved to epoch ms.
pub fn replay_range(args: &ReplayArgs) -> anyhow::Result<(Option<i64>, Option<i64>)> {
    Ok((time("from", &args.from)?, time("to", &args.to)?))
}

/// Checks that a namespace is replayed with the spec it was computed with (unless `--fresh`):
/// resuming one spec's windows with another's engine would mix them.
fn check_spec(config: &Config, args: &ReplayArgs, replayed_before: bool) -> anyhow::Result<()> {
    if args.fresh {
        return Ok(());
    }
    let kept = namespace_dir(config, &args.namespace).join(SPEC_FILE);
    let same = match (&args.spec, kept.exists()) {
        (None, false) => true,
        (None, true) => false,
        // Replayed before without a kept spec: with the config's.
        (Some(_), false) => !replayed_before,
        (Some(spec), true) => {
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            read(spec)? == read(&kept)?
        }
    };
    anyhow::ensure!(
        same,
        "namespace `{}` was replayed with {}: give the same spec to finish or extend it, or \
         --fresh to start it again",
        args.namespace,
        if kept.exists() {
            format!("the spec kept in {}", kept.display())
        } else {
            "the config's spec".to_owned()
        }
    );
    Ok(())
}

/// A namespace replayed before goes on from its checkpoint only with what it was replayed from:
/// the same archive and time range (another range opens other segments and would leave the old
/// range's windows in place), and the same spec. Anything else is refused, naming both, unless
/// `--fresh`.
async fn check_same_replay(
    config: &Config,
    args: &ReplayArgs,
    replay: &Config,
) -> anyhow::Result<()> {
    let previous = {
        let store = streamlens_aggregator::store::open(&replay.store)
            .await
            .with_context(|| format!("opening namespace `{}`", args.namespace))?;
        store.checkpoint(&replay.pipeline.name).await?
    };
    check_spec(config, args, previous.is_some())?;
    if let (Some(previous), SourceConfig::Archive(archive)) = (&previous, &replay.source) {
        let this = streamlens_ingest::Source::describe(
            &streamlens_ingest::archive::ArchiveSource::new(archive.clone()),
        );
        anyhow::ensure!(
            previous.source == this,
            "namespace `{}` was replayed from `{}`, not `{this}`: give the same archive and \
             --from/--to (as absolute times) to go on, or --fresh to start it again",
            args.namespace,
            previous.source
        );
    }
    Ok(())
}

/// The replay's config (its source cut to the range and paced, its namespace's store) and the
/// range, once every flag is checked.
fn prepare(
    config: &Config,
    args: &ReplayArgs,
) -> anyhow::Result<(Config, Option<i64>, Option<i64>)> {
    let mut replay = replay_config(config, args)?;
    let (from, to) = replay_range(args)?;
    if let Some(speed) = args.speed {
        anyhow::ensure!(
            speed.is_finite() && speed > 0.0,
            "--speed must be a positive number, not {speed}"
        );
    }
    if let SourceConfig::Archive(archive) = &mut replay.source {
        if from.is_some() || to.is_some() {
            // A segmented archive's index lets whole segments outside the range be skipped.
            archive.segment_range = Some((from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX)));
        }
        if args.speed.is_some() {
            // Paced, batches are let go one at a time when due: small ones flow evenly (and
            // checkpoint often), and speed does not matter.
            archive.batch_size = PACED_BATCH;
        }
    }
    Ok((replay, from, to))
}

/// Checks a replay before it starts, as [`run_with_progress`] would: its flags, and that a
/// namespace replayed before is replayed with the same archive, range and spec (or `fresh`).
pub async fn check(config: &Config, args: &ReplayArgs) -> anyhow::Result<()> {
    let (replay, ..) = prepare(config, args)?;
    if !args.fresh {
        check_same_replay(config, args, &replay).await?;
    }
    Ok(())
}

/// Runs a replay as the flags say, with a progress bar on stderr.
pub async fn run(args: ReplayArgs, shutdown: CancellationToken) -> anyhow::Result<ReplayOutcome> {
    let config = Config::load(&args.config)?;
    let progress = Arc::new(ReplayProgress::default());
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replay {msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} lines, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(args.namespace.clone());
    let ticker = {
        let (bar, progress) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            let mut resumed = false;
            loop {
                let total = progress.total.load(Ordering::Relaxed);
                if total > 0 {
                    bar.set_length(total);
                }
                let after = progress.resumed_after.load(Ordering::Relaxed);
                if after > 0 && !resumed {
                    // The rate and ETA count what this run reads, not what it passed over.
                    resumed = true;
                    bar.reset();
                }
                bar.set_position(progress.read.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let outcome = run_with_progress(&config, &args, progress.clone(), shutdown).await;
    ticker.abort();
    bar.set_position(progress.read.load(Ordering::Relaxed));
    let outcome = outcome?;
    if outcome.completed {
        bar.finish_with_message(format!("{} done", args.namespace));
    } else {
        bar.abandon_with_message(format!(
            "{} interrupted: run the same command again to finish it",
            args.namespace
        ));
    }
    let summary = &outcome.summary;
    println!(
        "replayed {} changes into namespace `{}` in {:.1} s ({:.0} changes/s){}: {} aggregated, {} quarantined, {} documents written",
        summary.source.events,
        args.namespace,
        outcome.seconds,
        summary.source.events as f64 / outcome.seconds.max(1e-9),
        if outcome.resumed_after > 0 {
            format!(", resumed after line {}", outcome.resumed_after)
        } else {
            String::new()
        },
        summary.aggregated,
        summary.quarantined,
        summary.docs_written
    );
    Ok(outcome)
}

/// Runs a replay of `config`'s archive or stream into a namespace, reporting to `progress`:
/// what `streamlens replay` and the dashboard's replays page run.
///
/// A namespace replayed before continues where its checkpoint stands (the lines it covers are
/// passed over undecoded and the open windows restored from the namespace's store), so an
/// interrupted replay run again ends as an uninterrupted one; `fresh` empties it first.
pub async fn run_with_progress(
    config: &Config,
    args: &ReplayArgs,
    progress: Arc<ReplayProgress>,
    shutdown: CancellationToken,
) -> anyhow::Result<ReplayOutcome> {
    let (replay, from, to) = prepare(config, args)?;
    if args.fresh {
        wipe(&replay).await?;
        let _ = std::fs::remove_file(namespace_dir(config, &args.namespace).join(SPEC_FILE));
    } else {
        check_same_replay(config, args, &replay).await?;
    }
    let archive_path = match &replay.source {
        SourceConfig::Archive(archive) => Some(archive.path.clone()),
        _ => None,
    };
    // Counting a compressed archive takes as long as decompressing it: it gives up when the
    // replay ends (a blocking task left running would hold the runtime open).
    let counted = CancellationToken::new();
    let _stop_counting = counted.clone().drop_guard();
    if let SourceConfig::Archive(archive) = &replay.source {
        let (path, range, progress, counted) = (
            archive.path.clone(),
            archive.segment_range,
            progress.clone(),
            counted.clone(),
        );
        tokio::task::spawn_blocking(move || {
            if let Some(lines) = count_lines(&path, range, &counted) {
                progress.total.store(lines, Ordering::Relaxed);
            }
        });
    }
    tracing::info!(
        namespace = %args.namespace,
        source = %archive_path.map_or_else(|| "the stream".to_owned(), |p| p.display().to_string()),
        store = ?replay.store,
        "replay started"
    );
    let wrap: crate::app::SourceWrapper = {
        let progress = progress.clone();
        let speed = args.speed;
        crate::app::SourceWrapper {
            // Cut or paced, the wrapper reads each change's event time.
            reads_changes: from.is_some() || to.is_some() || speed.is_some(),
            wrap: Box::new(move |inner| {
                Box::new(Windowed {
                    inner,
                    from,
                    to,
                    speed,
                    progress,
                })
            }),
        }
    };
    // The namespace keeps the spec it was computed with, for queries of it.
    if let Some(spec) = &args.spec {
        let dir = namespace_dir(config, &args.namespace);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::copy(spec, dir.join(SPEC_FILE))
            .with_context(|| format!("keeping {} in {}", spec.display(), dir.display()))?;
    }
    let started = Instant::now();
    let summary = crate::app::run_with(replay, shutdown.clone(), Some(wrap))
        .await
        .with_context(|| {
            format!(
                "replay into namespace `{}` (--fresh starts it again from the beginning)",
                args.namespace
            )
        })?;
    let resumed_after = streamlens_ingest::archive::ArchivePosition::of(&summary.resumed_from)
        .ok()
        .flatten()
        .map_or(0, |p| p.lines);
    Ok(ReplayOutcome {
        summary,
        resumed_after,
        seconds: started.elapsed().as_secs_f64(),
        completed: !shutdown.is_cancelled(),
    })
}

/// Empties a namespace: its store file, or its OpenSearch indices.
async fn wipe(replay: &Config) -> anyhow::Result<()> {
    match &replay.store {
        StoreConfig::Embedded(c) => {
            if c.path.exists() {
                std::fs::remove_file(&c.path)
                    .with_context(|| format!("removing {}", c.path.display()))?;
            }
        }
        StoreConfig::Opensearch(c) => {
            let store =
                streamlens_aggregator::store::opensearch::OpenSearchStore::connect(c).await?;
            store.delete_all().await?;
        }
    }
    Ok(())
}

/// The flags of `streamlens compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The live config.
    #[arg(long, short, env = "STREAMLENS_CONFIG")]
    pub config: PathBuf,
    /// The namespace to compare with the live aggregates.
    #[arg(long, short)]
    pub namespace: String,
    /// Windows starting at or after this time.
    #[arg(long)]
    pub from: Option<String>,
    /// Windows starting before this time.
    #[arg(long)]
    pub to: Option<String>,
    /// Only this window size [default: every one].
    #[arg(long)]
    pub window: Option<String>,
    /// List at most this many differences.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// A window and group whose aggregates differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The group id (pipeline, window, start, dimension, value).
    pub group: String,
    /// What differs: `only live`, `only replay`, or `field: live ≠ replay` items.
    pub what: String,
}

/// What a document holds, without version, finality and bookkeeping.
fn content(doc: &AggregateDoc) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    out.insert("inserts", doc.inserts.to_string());
    out.insert("modifies", doc.modifies.to_string());
    out.insert("removes", doc.removes.to_string());
    out.insert("net_count", doc.net_count.to_string());
    out.insert("sums", serde_json::to_string(&doc.sums).unwrap_or_default());
    out.insert(
        "counts",
        serde_json::to_string(&doc.counts).unwrap_or_default(),
    );
    out.insert("mins", serde_json::to_string(&doc.mins).unwrap_or_default());
    out.insert("maxs", serde_json::to_string(&doc.maxs).unwrap_or_default());
    out.insert(
        "distinct",
        serde_json::to_string(&doc.distinct).unwrap_or_default(),
    );
    out
}

/// The differences between two sets of documents, by group.
pub fn differences(live: &[AggregateDoc], replay: &[AggregateDoc]) -> Vec<Difference> {
    let by_group = |docs: &[AggregateDoc]| -> BTreeMap<String, AggregateDoc> {
        docs.iter().map(|d| (d.group_id(), d.clone())).collect()
    };
    let (live, replay) = (by_group(live), by_group(replay));
    let groups: std::collections::BTreeSet<&String> = live.keys().chain(replay.keys()).collect();
    let mut out = Vec::new();
    for group in groups {
        let what = match (live.get(group), replay.get(group)) {
            (Some(_), None) => "only live".to_owned(),
            (None, Some(_)) => "only replay".to_owned(),
            (Some(a), Some(b)) => {
                let (a, b) = (content(a), content(b));
                let fields: Vec<String> = a
                    .iter()
                    .filter(|(k, v)| b.get(*k) != Some(v))
                    .map(|(k, v)| format!("{k}: {v} ≠ {}", b.get(k).cloned().unwrap_or_default()))
                    .collect();
                if fields.is_empty() {
                    continue;
                }
                fields.join("; ")
            }
            (None, None) => continue,
        };
        out.push(Difference {
            group: group.clone(),
            what,
        });
    }
    out
}

/// Compares the live aggregates with a namespace's; `Ok(true)` when they agree.
pub async fn compare(args: CompareArgs) -> anyhow::Result<bool> {
    check_namespace(&args.namespace)?;
    let config = Config::load(&args.config)?;
    let query = AggQuery {
        pipeline: Some(config.pipeline.name.clone()),
        window: args.window.clone(),
        from: time("from", &args.from)?,
        to: time("to", &args.to)?,
        ..AggQuery::default()
    };
    let live = streamlens_aggregator::store::open(&config.store)
        .await
        .context("opening the live store")?;
    let ns_store = namespace_store(&config, &args.namespace);
    if let StoreConfig::Embedded(c) = &ns_store {
        anyhow::ensure!(
            c.path.exists(),
            "namespace `{}` has no store at {}: replay into it first",
            args.namespace,
            c.path.display()
        );
    }
    let replay = streamlens_aggregator::store::open(&ns_store)
        .await
        .context("opening the namespace's store")?;
    let (a, b) = (live.query(&query).await?, replay.query(&query).await?);
    let diffs = differences(&a, &b);
    println!(
        "compared {} live and {} replayed documents{}: {} differ",
        a.len(),
        b.len(),
        match (&args.from, &args.to) {
            (None, None) => String::new(),
            (f, t) => format!(
                " from {} to {}",
                f.as_deref().unwrap_or("the start"),
                t.as_deref().unwrap_or("the end")
            ),
        },
        diffs.len()
    );
    for d in diffs.iter().take(args.limit) {
        println!("  {}: {}", d.group, d.what);
    }
    if diffs.len() > args.limit {
        println!("  … and {} more", diffs.len() - args.limit);
    }
    Ok(diffs.is_empty())
}
