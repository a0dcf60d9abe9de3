//! Writes change events as newline-delimited Streams records, optionally gzip-compressed.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
};

use streamlens_core::{ChangeEvent, StreamRecord};

use crate::Error;

/// An archive being written. Call [`ArchiveWriter::finish`] to flush it.
pub struct ArchiveWriter {
    out: Out,
    path: String,
}

enum Out {
    Plain(BufWriter<File>),
    Gzip(Box<flate2::write::GzEncoder<BufWriter<File>>>),
}

impl ArchiveWriter {
    /// Opens `path` for appending (creating it and its directory when missing): a restarted run
    /// adds to the archive of the runs before it. Gzip-compressed when the name ends in `.gz`: each
    /// run appends a gzip member, and readers decode the members one after another.
    pub fn create(path: &Path) -> Result<Self, Error> {
        let err = |source| Error::Archive {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        let file = BufWriter::new(file);
        let out = if path.extension().is_some_and(|e| e == "gz") {
            Out::Gzip(Box::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::best(),
            )))
        } else {
            Out::Plain(file)
        };
        Ok(ArchiveWriter {
            out,
            path: path.display().to_string(),
        })
    }

    /// Appends one event.
    pub fn write(&mut self, event: &ChangeEvent) -> Result<(), Error> {
        let line = serde_json::to_string(&StreamRecord::from(event))
            .map_err(|e| self.io_err(std::io::Error::other(e)))?;
        let result = match &mut self.out {
            Out::Plain(w) => writeln!(w, "{line}"),
            Out::Gzip(w) => writeln!(w, "{line}"),
        };
        result.map_err(|e| self.io_err(e))
    }

    /// Flushes and closes the archive.
    pub fn finish(self) -> Result<(), Error> {
        let result = match self.out {
            Out::Plain(mut w) => w.flush(),
            Out::Gzip(w) => w.finish().and_then(|mut inner| inner.flush()),
        };
        result.map_err(|source| Error::Archive {
            path: self.path,
            source,
        })
    }

    fn io_err(&self, source: std::io::Error) -> Error {
        Error::Archive {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use streamlens_core::{ChangeEvent, EventKind};

    use super::ArchiveWriter;

    fn event(seq: &str) -> ChangeEvent {
        ChangeEvent {
            event_id: seq.into(),
            kind: EventKind::Insert,
            keys: Default::default(),
            old_image: None,
            new_image: Some(Default::default()),
            event_time_ms: 1_000,
            sequence_number: seq.into(),
            shard_id: "s".into(),
            size_bytes: 0,
            view_type: None,
            ttl_delete: false,
        }
    }

    #[test]
    fn a_second_run_appends_to_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.ndjson", "a.ndjson.gz"] {
            let path = dir.path().join("sub").join(name);
            for seq in ["1", "2"] {
                let mut w = ArchiveWriter::create(&path).unwrap();
                w.write(&event(seq)).unwrap();
                w.finish().unwrap();
            }
            let mut seqs = Vec::new();
            crate::archive::read_batches(&path, 10, |b| {
                seqs.extend(b.events.into_iter().map(|e| e.sequence_number));
                true
            })
            .unwrap();
            assert_eq!(seqs, ["1", "2"], "{name}");
        }
    }
}
