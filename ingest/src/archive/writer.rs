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
    /// Creates `path`; gzip-compressed when the name ends in `.gz`.
    pub fn create(path: &Path) -> Result<Self, Error> {
        let err = |source| Error::Archive {
            path: path.display().to_string(),
            source,
        };
        let file = BufWriter::new(File::create(path).map_err(err)?);
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
