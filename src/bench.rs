//! `streamlens bench`: archive → aggregates throughput, measured.
//!
//! Generates (once, then reuses) a deterministic orders change stream of N records in the archive
//! format — several shards interleaved, event times out of order by up to `disorder` seconds,
//! a mix of INSERT / MODIFY / REMOVE — and runs the real pipeline over it: the archive source on
//! its fast projected path, the window engine, the embedded store in a scratch directory. It
//! prints events/s, CPU seconds and peak RSS of the run (generation is measured apart).
//!
//! `--changes` keeps the change index as well (every change written whole to the store, as a live
//! pipeline does by default), which needs the whole record decoded instead of projected.
//!
//! The default spec is the comparison the project measures peers with: 1-minute tumbling windows
//! by one dimension, net sums with retractions. `--full` adds a second dimension, a hopping window
//! and every metric kind.

use std::path::PathBuf;

use anyhow::Context;
use streamlens_infra::{
    bench::Meter,
    sample::{write_stream, StreamSpec},
};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Records in the generated archive.
    pub records: u64,
    /// Generator seed.
    pub seed: u64,
    /// Maximum disorder of event times, seconds.
    pub disorder_secs: u32,
    /// Where the archive is (generated there when missing).
    pub file: Option<PathBuf>,
    /// Compress the generated archive with gzip.
    pub gzip: bool,
    /// The richer spec.
    pub full: bool,
    /// Keep the change index.
    pub changes: bool,
}

const SIMPLE: &str = r#"
[pipeline]
name = "bench"
dimensions = ["status"]
windows = ["1m"]
[[pipeline.metrics]]
name = "amount"
attribute = "amount"
scale = 2
"#;

const FULL: &str = r#"
[pipeline]
name = "bench"
dimensions = ["status", "region"]
windows = ["1m", "5m/1m"]
[[pipeline.metrics]]
name = "amount"
attribute = "amount"
scale = 2
[[pipeline.metrics]]
name = "items"
attribute = "items"
kind = "count"
[[pipeline.metrics]]
name = "avg_amount"
attribute = "amount"
kind = "avg"
scale = 2
[[pipeline.metrics]]
name = "max_amount"
attribute = "amount"
kind = "max"
scale = 2
[[pipeline.metrics]]
name = "regions"
attribute = "region"
kind = "distinct"
"#;

/// Generates the archive if needed, runs the pipeline over it and prints the figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let file = args.file.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "data/bench/orders-{}-seed{}-disorder{}s.ndjson{}",
            args.records,
            args.seed,
            args.disorder_secs,
            if args.gzip { ".gz" } else { "" }
        ))
    });
    if !file.exists() {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let meter = Meter::start();
        let spec = StreamSpec {
            records: args.records,
            seed: args.seed,
            disorder_secs: args.disorder_secs,
            ..StreamSpec::default()
        };
        let target = file.clone();
        let summary = tokio::task::spawn_blocking(move || write_stream(&target, spec))
            .await
            .context("generator task")??;
        let usage = meter.stop();
        println!(
            "generated {} ({} records, {:.1} MB, {} inserts / {} modifies / {} removes) in {:.1} s",
            file.display(),
            summary.records,
            summary.bytes as f64 / 1e6,
            summary.inserts,
            summary.modifies,
            summary.removes,
            usage.wall.as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(&file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let scratch = tempfile::tempdir().context("scratch directory")?;
    let text = format!(
        r#"data_dir = "{dir}"

[source]
kind = "archive"
path = "{file}"
batch_size = 4096

[store]
kind = "embedded"
path = "{dir}/bench.redb"

{spec}
[changes]
enabled = {changes}

[dashboard]
enabled = false
"#,
        dir = scratch.path().display(),
        file = file.display(),
        spec = if args.full { FULL } else { SIMPLE },
        changes = args.changes,
    );
    let config = Config::parse(&text, "bench.toml")?;
    let meter = Meter::start();
    let summary = crate::app::run(config, CancellationToken::new()).await?;
    let usage = meter.stop();
    let events = summary.source.events + summary.source.quarantined;
    println!(
        "streamlens bench: {} spec, {} ({:.1} MB)",
        if args.full {
            "full"
        } else {
            "1m × status, net sum"
        },
        file.display(),
        bytes as f64 / 1e6
    );
    println!(
        "  {events} changes in {:.2} s: {:.0} events/s, cpu {:.2} s ({:.2} cores), peak rss {:.1} MB",
        usage.wall.as_secs_f64(),
        usage.per_sec(events),
        usage.cpu_s(),
        usage.cpu_s() / usage.wall.as_secs_f64().max(1e-9),
        usage.peak_rss.unwrap_or_default() as f64 / 1e6,
    );
    println!(
        "  aggregated {}, quarantined {}, {} aggregate documents written",
        summary.aggregated, summary.quarantined, summary.docs_written
    );
    println!(
        "  {} engine passes (at least 50 ms apart while input keeps coming), the longest {} ms; a pass's windows are written while the next one runs",
        summary.passes, summary.max_pass_ms
    );
    let store_bytes = std::fs::metadata(scratch.path().join("bench.redb"))
        .map(|m| m.len())
        .unwrap_or_default();
    println!(
        "  change index {}; store file {:.1} MB{}",
        if args.changes { "kept" } else { "off" },
        store_bytes as f64 / 1e6,
        if args.changes && events > 0 {
            format!(
                " ({:.0} bytes per change)",
                store_bytes as f64 / events as f64
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
