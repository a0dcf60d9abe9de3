//! The quarantine: changes that could not be processed, kept with their reason.
//!
//! Entries are appended as JSON lines to `<data_dir>/quarantine.ndjson` and counted in
//! `streamlens_quarantined_total`. Nothing that enters streamlens is silently dropped: each entry
//! reaches the file (the OS) before its pass's write starts, so a killed process keeps it, and
//! the pipeline [`Quarantine::sync`]s the file before a durable store write, so no checkpoint
//! that moved past a quarantined change outlives its entry in a power cut either.

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
    /// Entries written since the last [`Quarantine::sync`].
    unsynced: bool,
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
            unsynced: false,
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
        self.unsynced = true;
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes the entries written so far durable (`fdatasync`), if there are new ones; whether
    /// there were.
    pub fn sync(&mut self) -> std::io::Result<bool> {
        if !self.unsynced {
            return Ok(false);
        }
        self.out.get_ref().sync_data()?;
        self.unsynced = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_in_the_file_at_once_and_synced_only_when_new() {
        let dir = tempfile::tempdir().unwrap();
        let mut quarantine = Quarantine::open(dir.path()).unwrap();
        assert!(!quarantine.sync().unwrap(), "nothing to sync yet");
        quarantine
            .put(&Quarantined {
                origin: "archive line 3".into(),
                reason: "bad json".into(),
                raw: "{not json".into(),
            })
            .unwrap();
        let text = std::fs::read_to_string(quarantine.path()).unwrap();
        let entry: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(
            (&entry["origin"], &entry["reason"], &entry["raw"]),
            (
                &"archive line 3".into(),
                &"bad json".into(),
                &"{not json".into()
            )
        );
        assert_eq!(quarantine.count(), 1);
        assert!(quarantine.sync().unwrap(), "a new entry is synced");
        assert!(!quarantine.sync().unwrap(), "and only once");
    }
}
