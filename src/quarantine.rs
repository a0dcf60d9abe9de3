//! The quarantine: changes that could not be processed, kept with their reason.
//!
//! Entries are appended as JSON lines to `<data_dir>/quarantine.ndjson` and counted in
//! `streamlens_quarantined_total`. Nothing that enters streamlens is silently dropped.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use serde::Serialize;
use streamlens_ingest::Quarantined;

/// Appends quarantined records to a file.
pub struct Quarantine {
    path: PathBuf,
    out: BufWriter<File>,
    count: Arc<AtomicU64>,
}

#[derive(Serialize)]
struct Entry<'a> {
    at_ms: i64,
    origin: &'a str,
    reason: &'a str,
    raw: &'a str,
}

impl Quarantine {
    /// Opens (appending) `<dir>/quarantine.ndjson`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("quarantine.ndjson");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Quarantine {
            path,
            out: BufWriter::new(file),
            count: Arc::default(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records quarantined by this process.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The live count of [`Self::count`], for the health report.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.count.clone()
    }

    /// Appends one entry and flushes it.
    pub fn put(&mut self, entry: &Quarantined) -> std::io::Result<()> {
        tracing::warn!(origin = %entry.origin, reason = %entry.reason, "change quarantined");
        metrics::counter!("streamlens_quarantined_total").increment(1);
        let line = serde_json::to_string(&Entry {
            at_ms: streamlens_ingest::now_ms(),
            origin: &entry.origin,
            reason: &entry.reason,
            raw: &entry.raw,
        })?;
        writeln!(self.out, "{line}")?;
        self.out.flush()?;
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
