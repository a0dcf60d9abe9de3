//! Archive decode throughput: newline-delimited Streams records to projected changes with the
//! fast parallel reader (`read_projected_with`), against the serde path (`read_batches`, i.e.
//! `decode_line`, then `ProjectedChange::from_event`). Prints figures; asserts nothing.
//!
//! `cargo bench -p streamlens-infra --bench projected` (release profile). The input is the
//! benchmark orders stream (`sample::write_stream`: 4 shards, 5 s disorder) with
//! `BENCH_RECORDS` records (default 1,000,000); `BENCH_GZIP=1` reads a gzip copy too;
//! `BENCH_ALONE` is the number of lines decoded from memory first (the decoder alone, best of
//! three; default 300,000; 0 skips); `BENCH_DIR=dir` keeps the generated files there; `BENCH_FILE=path` reads that archive instead (nothing generated);
//! `BENCH_SERDE_RECORDS` limits the slow serde pass (default: all); `BENCH_THREADS` lists the
//! reader thread counts to run (default `0,1,2`; 0 = everything on the calling thread).
//!
//! Each phase reports wall time, events/s, MB/s of decompressed input, the process's CPU seconds
//! (all threads) and the phase's peak RSS (VmHWM, reset at the start of each phase).

use std::path::Path;

use streamlens_core::{projection::ProjectedChange, Projection};
use streamlens_infra::{
    bench::{Meter, Usage},
    sample::{write_stream, StreamSpec},
};
use streamlens_ingest::archive::{
    decode_line, decode_projected, read_batches, read_projected_map, read_projected_with,
    CompiledProjection, DecodeCache, ReadOptions,
};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(name: &str, events: u64, bytes: u64, usage: &Usage) {
    println!(
        "{name:<34} {events:>9} events  {:>10.0} events/s  {:>7.1} MB/s  {}",
        usage.per_sec(events),
        usage.per_sec(bytes) / 1e6,
        usage.describe()
    );
}

fn serde_path(path: &Path, projection: &Projection, limit: u64, bytes: u64, total: u64) {
    let meter = Meter::start();
    let mut events = 0u64;
    let mut sink = 0usize;
    read_batches(path, 4096, |batch| {
        for event in &batch.events {
            let change = ProjectedChange::from_event(event, projection);
            sink += change.new.as_ref().map_or(0, |n| n.len());
        }
        events += batch.events.len() as u64;
        events < limit
    })
    .unwrap();
    std::hint::black_box(sink);
    let usage = meter.stop();
    let name = format!("serde decode_line + from_event ({})", file_kind(path));
    report(&name, events, bytes * events / total.max(1), &usage);
}

fn fast_path(path: &Path, projection: &CompiledProjection, threads: usize) {
    let options = ReadOptions {
        threads,
        chunks_in_flight: 2 * threads + 2,
        ..ReadOptions::default()
    };
    let meter = Meter::start();
    let mut sink = 0usize;
    let summary = read_projected_with(path, projection, options, |batch| {
        sink += batch.changes.len() + batch.quarantined.len();
        true
    })
    .unwrap();
    std::hint::black_box(sink);
    let usage = meter.stop();
    let name = match threads {
        0 => format!("read_projected inline ({})", file_kind(path)),
        n => format!("read_projected {n} thread(s) ({})", file_kind(path)),
    };
    report(&name, summary.changes, summary.bytes, &usage);
}

/// The decoder alone, on lines already in memory, one thread: best of three passes.
fn decoder_alone(path: &Path, limit: usize) {
    let text = std::fs::read(path).unwrap();
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(limit)
        .collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let projections = [
        (
            "4 paths",
            Projection::new(["status", "region", "amount", "items"]),
        ),
        ("no path", Projection::new(Vec::<String>::new())),
    ];
    for (what, projection) in &projections {
        let compiled = CompiledProjection::new(projection);
        let mut best: Option<Usage> = None;
        for _ in 0..3 {
            let mut cache = DecodeCache::default();
            let meter = Meter::start();
            for chunk in lines.chunks(4096) {
                let batch: Vec<_> = chunk
                    .iter()
                    .map(|l| decode_projected(l, &compiled, &mut cache).unwrap())
                    .collect();
                std::hint::black_box(batch);
            }
            let usage = meter.stop();
            if best.is_none_or(|b| usage.wall < b.wall) {
                best = Some(usage);
            }
        }
        report(
            &format!("decode_projected in memory, {what}"),
            lines.len() as u64,
            bytes as u64,
            &best.unwrap(),
        );
    }
    let projection = &projections[0].1;
    let meter = Meter::start();
    let n = lines.len().min(200_000);
    for chunk in lines[..n].chunks(4096) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|l| {
                let event = decode_line(std::str::from_utf8(l).unwrap(), String::new).unwrap();
                ProjectedChange::from_event(&event, projection)
            })
            .collect();
        std::hint::black_box(batch);
    }
    let part: usize = lines[..n].iter().map(|l| l.len() + 1).sum();
    report(
        "decode_line + from_event in memory",
        n as u64,
        part as u64,
        &meter.stop(),
    );
}

/// The chunks consumed on the decoding threads: `map` parses the amounts (a stand-in for per-chunk
/// engine work) and the changes are freed where they were allocated.
fn mapped(path: &Path, projection: &CompiledProjection, threads: usize) {
    let options = ReadOptions {
        threads,
        chunks_in_flight: 2 * threads + 2,
        ..ReadOptions::default()
    };
    let meter = Meter::start();
    let mut total = 0.0;
    let summary = read_projected_map(
        path,
        projection,
        options,
        |batch| {
            batch
                .changes
                .iter()
                .filter_map(|c| c.new.as_ref()?[2].as_ref()?.text.parse::<f64>().ok())
                .sum::<f64>()
        },
        |sum| {
            total += sum;
            true
        },
    )
    .unwrap();
    std::hint::black_box(total);
    let usage = meter.stop();
    let name = format!("read_projected_map {threads} thr. ({})", file_kind(path));
    report(&name, summary.changes, summary.bytes, &usage);
}

fn file_kind(path: &Path) -> &'static str {
    if path.extension().is_some_and(|e| e == "gz") {
        "gzip"
    } else {
        "plain"
    }
}

fn main() {
    let records = env_or("BENCH_RECORDS", 1_000_000);
    let serde_records = env_or("BENCH_SERDE_RECORDS", records);
    let threads: Vec<usize> = std::env::var("BENCH_THREADS")
        .unwrap_or_else(|_| "0,1,2".to_owned())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    println!(
        "streamlens archive decode benchmark ({} cores, {records} records)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = StreamSpec {
        records,
        ..StreamSpec::default()
    };
    let out = std::env::var_os("BENCH_DIR").map_or(dir.path().to_owned(), Into::into);
    let mut files = vec![out.join("orders.ndjson")];
    if env_or("BENCH_GZIP", 0) == 1 {
        files.push(out.join("orders.ndjson.gz"));
    }
    let mut bytes = 0;
    let given = std::env::var_os("BENCH_FILE").map(std::path::PathBuf::from);
    if let Some(given) = &given {
        files = vec![given.clone()];
    }
    for file in files.iter().filter(|_| given.is_none()) {
        let meter = Meter::start();
        let summary = write_stream(file, spec).unwrap();
        bytes = summary.bytes;
        let on_disk = std::fs::metadata(file).unwrap().len();
        report(
            &format!("generate ({})", file_kind(file)),
            summary.records,
            summary.bytes,
            &meter.stop(),
        );
        println!(
            "  {:.1} MB uncompressed, {:.1} MB on disk, {:.0} bytes/record, disorder {} ms",
            summary.bytes as f64 / 1e6,
            on_disk as f64 / 1e6,
            summary.bytes as f64 / summary.records.max(1) as f64,
            summary.max_disorder_ms
        );
    }
    let projection = Projection::new(["status", "region", "amount", "items"]);
    let compiled = CompiledProjection::new(&projection);
    let alone = env_or("BENCH_ALONE", 300_000) as usize;
    if alone > 0 && file_kind(&files[0]) == "plain" {
        decoder_alone(&files[0], alone);
    }
    for file in &files {
        if serde_records > 0 {
            if given.is_some() {
                bytes = std::fs::metadata(file).unwrap().len();
            }
            serde_path(file, &projection, serde_records, bytes, records);
        }
        for &t in &threads {
            fast_path(file, &compiled, t);
        }
        for &t in threads.iter().filter(|&&t| t > 0) {
            mapped(file, &compiled, t);
        }
    }
}
