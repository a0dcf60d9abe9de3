//! Ingest throughput and polling overhead. Prints figures; asserts nothing.
//!
//! `cargo bench -p streamlens-infra --bench ingest` (release profile). Sizes can be changed with
//! `BENCH_ARCHIVE_EVENTS`, `BENCH_SERVER_EVENTS`, `BENCH_SHARDS` and `BENCH_IDLE_SECS`.
//!
//! 1. archive decode: the sample generator's orders stream written as newline-delimited JSON
//!    (plain and gzip), read back and decoded into change events;
//! 2. DynamoDB Streams ingest through the real SDK client from the scripted test server
//!    (HTTP, JSON, SDK deserialisation, conversion), one shard;
//! 3. the cost of following many idle shards: CPU time per second of wall time while the source
//!    polls 1000 empty, open shards (the in-process test server's own CPU is included).

use std::time::{Duration, Instant};

use streamlens_infra::{
    fault_server::{FaultServer, RecordSpec},
    sample::{self, SampleSpec},
};
use streamlens_ingest::{
    archive::{read_batches, ArchiveWriter},
    config::DynamoDbSourceConfig,
    dynamodb::DynamoDbSource,
    Checkpoint, Source,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

fn source_config(
    server: &FaultServer,
    idle: Option<Duration>,
    poll: Duration,
) -> DynamoDbSourceConfig {
    DynamoDbSourceConfig {
        poll_interval: poll,
        discovery_interval: Duration::from_secs(5),
        max_backoff: Duration::from_millis(200),
        stop_when_idle: idle,
        ..server.source_config()
    }
}

fn archive_decode(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let events = sample::generate(SampleSpec {
        changes: n,
        ..SampleSpec::default()
    });
    for name in ["orders.ndjson", "orders.ndjson.gz"] {
        let path = dir.path().join(name);
        let mut writer = ArchiveWriter::create(&path).unwrap();
        for e in &events {
            writer.write(e).unwrap();
        }
        writer.finish().unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        let (cpu, start) = (cpu_seconds(), Instant::now());
        let mut count = 0;
        read_batches(&path, 4096, |b| {
            count += b.events.len();
            true
        })
        .unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "archive decode  {name:<17} {count:>9} events  {:>7.3} s  {:>10.0} events/s  {:>7.1} MB/s of file  cpu {:.2} s",
            secs,
            count as f64 / secs,
            bytes as f64 / secs / 1e6,
            cpu_seconds() - cpu
        );
    }
}

async fn server_ingest(n: usize) {
    let server = FaultServer::start().await;
    server.add_shard("shard-0", None);
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        server.push(
            "shard-0",
            chunk
                .iter()
                .map(|i| {
                    RecordSpec::insert(
                        &format!("order#{i}"),
                        "12.50",
                        1_767_225_600 + *i as i64 / 100,
                    )
                })
                .collect(),
        );
    }
    let source = DynamoDbSource::connect(&source_config(
        &server,
        Some(Duration::from_millis(300)),
        Duration::from_millis(50),
    ))
    .await
    .unwrap()
    .resume_from(Checkpoint::new());
    let (tx, mut rx) = mpsc::channel(64);
    let (cpu, start) = (cpu_seconds(), Instant::now());
    let task = tokio::spawn(Box::new(source).run(tx, CancellationToken::new()));
    let mut count = 0;
    let mut done_at = start.elapsed();
    while let Some(batch) = rx.recv().await {
        count += batch.events.len();
        if count >= n {
            done_at = start.elapsed();
        }
    }
    task.await.unwrap().unwrap();
    let secs = done_at.as_secs_f64();
    println!(
        "server ingest   1 shard           {count:>9} events  {secs:>7.3} s  {:>10.0} events/s  (SDK + HTTP + decode; test server in process)  cpu {:.2} s",
        count as f64 / secs,
        cpu_seconds() - cpu
    );
}

async fn idle_shards(shards: usize, secs: u64) {
    let server = FaultServer::start().await;
    for s in 0..shards {
        server.add_shard(&format!("shard-{s:04}"), None);
    }
    let source = DynamoDbSource::connect(&source_config(&server, None, Duration::from_secs(1)))
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(Box::new(source).run(tx, stop.clone()));
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    // Let every shard get its iterator first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls_before = server.calls().len();
    let (cpu, start) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let calls = server.calls().len() - calls_before;
    stop.cancel();
    task.await.unwrap().unwrap();
    println!(
        "idle shards     {shards} shards, 1 s poll  {:>8.0} GetRecords/s  cpu {:.1}% of one core (source + test server)  {:.2} ms cpu per poll",
        calls as f64 / wall,
        cpu / wall * 100.0,
        cpu * 1000.0 / calls.max(1) as f64
    );
}

#[tokio::main]
async fn main() {
    println!(
        "streamlens ingest benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    archive_decode(env_or("BENCH_ARCHIVE_EVENTS", 500_000));
    server_ingest(env_or("BENCH_SERVER_EVENTS", 100_000)).await;
    idle_shards(
        env_or("BENCH_SHARDS", 1000),
        env_or("BENCH_IDLE_SECS", 10) as u64,
    )
    .await;
}
