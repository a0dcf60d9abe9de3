//! The archive decoder alone, on one thread: nanoseconds per line and MB/s, three rounds.
//!
//! ```text
//! cargo run --release -p streamlens-ingest --example decode_speed -- \
//!     data/bench/orders-1000000-seed7-disorder5s.ndjson [attribute paths, default amount status]
//! ```
//!
//! The whole file is read into memory first (use the 1M-record bench archive, not the 10M one):
//! what is timed is [`decode_projected`] of every line, with one [`DecodeCache`] per round as a
//! decoding thread has, and the changes freed 4096 at a time as a batch's are. `streamlens bench`
//! measures the whole pipeline; this isolates the decoder when changing it.

use std::time::Instant;

use streamlens_core::projection::Projection;
use streamlens_ingest::archive::{decode_projected, CompiledProjection, DecodeCache};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: decode_speed ARCHIVE [ATTRIBUTE_PATH ...]");
        std::process::exit(2);
    };
    let mut paths: Vec<String> = args.collect();
    if paths.is_empty() {
        paths = vec!["amount".into(), "status".into()];
    }
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("decode_speed: cannot read {path}: {e}");
            std::process::exit(1);
        }
    };
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let projection = CompiledProjection::new(&Projection::new(paths));
    for round in 1..=3 {
        let mut cache = DecodeCache::default();
        let mut batch = Vec::with_capacity(4096);
        let (mut decoded, mut refused) = (0usize, 0usize);
        let start = Instant::now();
        for line in &lines {
            match decode_projected(line, &projection, &mut cache) {
                Ok(change) => batch.push(change),
                Err(_) => refused += 1,
            }
            if batch.len() == 4096 {
                decoded += batch.len();
                batch.clear();
            }
        }
        decoded += batch.len();
        let took = start.elapsed().as_secs_f64();
        println!(
            "round {round}: {decoded} lines decoded ({refused} refused, {} through a learned shape) \
             in {took:.3} s: {:.0} ns/line, {:.0} MB/s",
            cache.fitted(),
            took * 1e9 / lines.len().max(1) as f64,
            data.len() as f64 / took / 1e6
        );
    }
}
