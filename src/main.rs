//! The `streamlens` command.

/// mimalloc: the fast archive path allocates small strings on several threads and frees them on
/// another; glibc's allocator is measurably slower at that (see the bench figures in the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use streamlens::config::{Config, SAMPLE_ARCHIVE};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Real-time analytics on DynamoDB change data capture.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline and the dashboard. Without --config: the embedded demo (the sample orders
    /// stream replayed live, embedded store, http://127.0.0.1:3000).
    Run {
        /// The config file (see the README's config reference).
        #[arg(long, short, env = "STREAMLENS_CONFIG")]
        config: Option<PathBuf>,
        /// Do not serve the dashboard; exit when the source ends.
        #[arg(long)]
        no_dashboard: bool,
    },
    /// Measure archive → aggregates throughput on a generated orders stream (events/s, CPU,
    /// peak RSS).
    Bench {
        /// Records to generate.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Generator seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Event times out of order by up to this many seconds.
        #[arg(long, default_value_t = 5)]
        disorder: u32,
        /// The archive to use (generated there when missing).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Gzip the generated archive.
        #[arg(long)]
        gzip: bool,
        /// Two dimensions, a hopping window and every metric kind instead of 1m × one dimension.
        #[arg(long)]
        full: bool,
        /// Keep the change index too (every change written whole to the store), as a live
        /// pipeline does by default; the archive is then decoded whole, not projected.
        #[arg(long)]
        changes: bool,
    },
    /// Query a metric over time (re-bucketed, grouped, filtered, top N) from a config's store or
    /// a running dashboard.
    Query(streamlens::query_cli::QueryArgs),
    /// Search the raw change index (by item key, time range, kind, changed attribute) from a
    /// config's store or a running dashboard.
    Changes(streamlens::changes_cli::ChangesArgs),
    /// One item's every change (old → new) and its state at a chosen time, from the change
    /// index.
    History(streamlens::history_cli::HistoryArgs),
    /// Recompute aggregates from an archive (a time range of it, paced or at full speed,
    /// optionally with another spec) into an isolated namespace beside the live store.
    Replay(streamlens::replay::ReplayArgs),
    /// Compare the live aggregates with a replay namespace's; exits 1 when they differ.
    Compare(streamlens::replay::CompareArgs),
    /// Check a config file and print what it means.
    Check {
        /// The config file.
        config: PathBuf,
    },
    /// Write the deterministic sample orders change stream.
    GenSample {
        /// Output file (`.gz` compresses).
        #[arg(long, default_value = SAMPLE_ARCHIVE)]
        out: PathBuf,
        /// Number of changes.
        #[arg(long, default_value_t = 3000)]
        changes: usize,
        /// Random seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Create a DynamoDB table with a NEW_AND_OLD_IMAGES stream.
    CreateTable {
        /// Table name.
        #[arg(long)]
        table: String,
        /// Partition key attribute (string).
        #[arg(long, default_value = "pk")]
        key: String,
        /// A local endpoint such as http://127.0.0.1:5000.
        #[arg(long)]
        endpoint_url: Option<String>,
        /// AWS region.
        #[arg(long)]
        region: Option<String>,
    },
}

/// Turns transparent huge pages off for this process (what mimalloc's `MIMALLOC_ALLOW_THP=0`
/// does). The archive path allocates and frees chunks of changes on several threads; with THP the
/// kernel zeroed a fresh 2 MB page each time mimalloc touched a page it had just given back, a
/// quarter of the CPU of `streamlens bench` (perf), and peak RSS was ~60 MB higher.
///
/// The workspace denies `unsafe`; this one FFI call is the exception (no safe crate in the tree
/// wraps `PR_SET_THP_DISABLE`).
#[allow(unsafe_code)]
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    no_transparent_huge_pages();
    // Logs go to stderr: stdout is for what a command prints (`query --format json`, `bench`).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run {
        config: None,
        no_dashboard: false,
    }) {
        Command::Run {
            config,
            no_dashboard,
        } => {
            let mut config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::demo(),
            };
            config.dashboard.enabled &= !no_dashboard;
            let summary = streamlens::app::run(config, interrupted()).await?;
            println!(
                "read {} changes, aggregated {}, quarantined {}, wrote {} aggregate documents",
                summary.source.events + summary.source.quarantined,
                summary.aggregated,
                summary.quarantined,
                summary.docs_written
            );
        }
        Command::Bench {
            records,
            seed,
            disorder,
            file,
            gzip,
            full,
            changes,
        } => {
            streamlens::bench::run(streamlens::bench::BenchArgs {
                records,
                seed,
                disorder_secs: disorder,
                file,
                gzip,
                full,
                changes,
            })
            .await?;
        }
        Command::Query(args) => streamlens::query_cli::run(args).await?,
        Command::Changes(args) => streamlens::changes_cli::run(args).await?,
        Command::History(args) => streamlens::history_cli::run(args).await?,
        Command::Replay(args) => {
            streamlens::replay::run(args, interrupted()).await?;
        }
        Command::Compare(args) => {
            if !streamlens::replay::compare(args).await? {
                std::process::exit(1);
            }
        }
        Command::Check { config } => {
            let config = Config::load(&config)?;
            println!("{config:#?}");
        }
        Command::GenSample { out, changes, seed } => {
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let spec = streamlens_infra::sample::SampleSpec {
                changes,
                seed,
                ..Default::default()
            };
            let n = streamlens_infra::sample::write(&out, spec)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {n} changes to {}", out.display());
        }
        Command::CreateTable {
            table,
            key,
            endpoint_url,
            region,
        } => {
            let sdk =
                streamlens_ingest::aws::sdk_config(region.as_deref(), endpoint_url.as_deref())
                    .await;
            let client = aws_sdk_dynamodb::Client::new(&sdk);
            let arn =
                streamlens_infra::dynamo::create_table_with_stream(&client, &table, &key).await?;
            println!("{arn}");
        }
    }
    Ok(())
}

/// A token cancelled by Ctrl-C, or SIGTERM from a service manager.
fn interrupted() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
        tracing::info!("interrupted, shutting down");
        stop.cancel();
    });
    shutdown
}
