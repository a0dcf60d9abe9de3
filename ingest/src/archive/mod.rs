//! The archive source: newline-delimited DynamoDB Streams records.
//!
//! Each line is one record in the JSON shape `GetRecords` returns and Lambda delivers. Files may be
//! gzip or zstd compressed; the format is detected from the first bytes, not the file name.
//! Reading and decoding run on a blocking thread; batches cross to the async pipeline through the
//! bounded channel, so a slow consumer slows the reader.
//!
//! A line that does not decode is quarantined with its line number and the reason, and reading goes
//! on with the next line.

pub mod fast;
#[cfg(test)]
mod fast_tests;
pub mod parallel;
pub mod segments;
mod writer;

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::Path,
    time::Duration,
};

use streamlens_core::{ChangeEvent, StreamRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use fast::{
    decode_projected, decode_view, decode_view_text, CompiledProjection, DecodeCache, LineImages,
};
pub use parallel::{
    read_projected, read_projected_folded, read_projected_map, read_projected_reduced,
    read_projected_with, ProjectedBatch, ReadOptions, ReadSummary,
};
pub use writer::ArchiveWriter;

use crate::{
    config::ArchiveSourceConfig, now_ms, Batch, Error, Quarantined, Source, SourceSummary,
};

/// The checkpoint key of an archive read's [`ArchivePosition`].
pub const POSITION_KEY: &str = "archive";

/// How far an archive read has gone: the lines of the archive read (blank and bad ones
/// included), and what the read started from.
///
/// Lines are counted in the decompressed concatenation of the segments the read opens. The same
/// archive read with the same time range opens the same segments, from the same first one: later
/// segments only ever come after, and retention only deletes from the front, which the first
/// segment's name detects. A file is known by a checksum of its first bytes (an archive file only
/// grows at its end): another file at the same path is detected rather than read from the
/// middle. In a checkpoint it is `<origin>:<lines>` (or `<lines>` alone, from older versions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchivePosition {
    /// What the read started from: the first segment read (segmented archives), or
    /// `head-<n>-<crc32>` of a file's first `n` bytes.
    pub origin: Option<String>,
    /// Lines read.
    pub lines: u64,
}

/// Bytes of a file its origin checksums.
const HEAD_BYTES: u64 = 4096;

/// A file's origin: `head-<n>-<crc32 of its first n bytes>`, `n` up to [`HEAD_BYTES`].
fn file_origin(path: &Path, n: Option<u64>) -> Result<String, Error> {
    let err = |source| Error::Archive {
        path: path.display().to_string(),
        source,
    };
    let mut head = Vec::new();
    File::open(path)
        .map_err(err)?
        .take(n.unwrap_or(HEAD_BYTES))
        .read_to_end(&mut head)
        .map_err(err)?;
    Ok(format!(
        "head-{}-{:08x}",
        head.len(),
        crc32fast::hash(&head)
    ))
}

impl ArchivePosition {
    /// The position in a checkpoint, if it holds one.
    pub fn of(checkpoint: &crate::Checkpoint) -> Result<Option<Self>, Error> {
        let Some(text) = checkpoint.get(POSITION_KEY) else {
            return Ok(None);
        };
        let (origin, lines) = match text.rsplit_once(':') {
            Some((origin, lines)) => (Some(origin.to_owned()), lines),
            None => (None, text.as_str()),
        };
        let lines = lines.parse().map_err(|_| {
            Error::Config(format!(
                "checkpoint position `{text}` is not an archive position (`[<origin>:]<lines>`)"
            ))
        })?;
        Ok(Some(ArchivePosition { origin, lines }))
    }

    /// The position as a checkpoint holds it.
    pub fn checkpoint(&self) -> crate::Checkpoint {
        let text = match &self.origin {
            Some(origin) => format!("{origin}:{}", self.lines),
            None => self.lines.to_string(),
        };
        [(POSITION_KEY.to_owned(), text)].into()
    }
}

/// Reads an archive once, or replays it live for ever.
///
/// A read (not a live replay) puts its [`ArchivePosition`] into every batch, and resumed from a
/// checkpoint holding one it starts after it: the lines before are passed over undecoded.
#[derive(Debug, Clone)]
pub struct ArchiveSource {
    config: ArchiveSourceConfig,
    projection: Option<streamlens_core::Projection>,
    reducer: Option<crate::Reducer>,
    start: Option<ArchivePosition>,
}

impl ArchiveSource {
    /// A source for the configured archive.
    pub fn new(config: ArchiveSourceConfig) -> Self {
        ArchiveSource {
            config,
            projection: None,
            reducer: None,
            start: None,
        }
    }

    /// Starts after a checkpoint's position (from the beginning if it holds none).
    pub fn resume_from(mut self, checkpoint: &crate::Checkpoint) -> Result<Self, Error> {
        self.start = ArchivePosition::of(checkpoint)?;
        Ok(self)
    }

    /// What the read starts from (the first segment it opens, or the file's head), checked
    /// against what the resumed read started from; the lines to pass over.
    fn begin(&self) -> Result<(Option<String>, u64), Error> {
        let path = &self.config.path;
        let first_segment = || -> Result<Option<String>, Error> {
            Ok(segments::segments_in(path, self.config.segment_range)?
                .into_iter()
                .next()
                .map(|meta| meta.file))
        };
        let Some(start) = self.start.as_ref().filter(|s| s.lines > 0) else {
            let origin = if path.is_dir() {
                first_segment()?
            } else {
                Some(file_origin(path, None)?)
            };
            return Ok((origin, 0));
        };
        // The same origin, computed the way the checkpointed read computed it.
        let (origin, what) = if path.is_dir() {
            (first_segment()?, "segment")
        } else {
            let head = start
                .origin
                .as_deref()
                .and_then(|o| o.strip_prefix("head-"))
                .and_then(|o| o.split_once('-'))
                .and_then(|(n, _)| n.parse().ok());
            (Some(file_origin(path, head)?), "file")
        };
        if start.origin.is_some() && start.origin != origin {
            return Err(Error::Config(format!(
                "cannot resume reading {} after line {}: the read started from {what} `{}`, and {} \
                 (another file at the same path, or archive retention deleted the segment): start \
                 the read over",
                path.display(),
                start.lines,
                start.origin.as_deref().unwrap_or_default(),
                match &origin {
                    Some(now) => format!("it now starts from `{now}`"),
                    None => "it is gone".to_owned(),
                }
            )));
        }
        tracing::info!(archive = %path.display(), lines = start.lines, "resuming the archive read after the checkpoint");
        Ok((origin, start.lines))
    }

    /// Reads on the fast path: lines are decoded (on every core) straight into changes reduced
    /// to these attributes ([`Batch::projected`], or [`Batch::reduced`] with
    /// [`Self::with_reducer`]) instead of whole events. Live replays keep whole events (they
    /// rewrite times).
    pub fn with_projection(mut self, projection: Option<streamlens_core::Projection>) -> Self {
        self.projection = projection;
        self
    }

    /// On the fast path, reduces each batch of projected changes on the thread that decoded it
    /// ([`Batch::reduced`] instead of [`Batch::projected`]).
    pub fn with_reducer(mut self, reducer: Option<crate::Reducer>) -> Self {
        self.reducer = reducer;
        self
    }
}

/// Opens a plain, gzip or zstd file, or a [segmented archive](segments) directory, for line
/// reading.
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, Error> {
    open_in(path, None)
}

/// [`open`]; a segmented archive skips the segments holding no change in `range` (`[from, to)`
/// event times). A file is read whole.
pub fn open_in(path: &Path, range: Option<(i64, i64)>) -> Result<Box<dyn BufRead + Send>, Error> {
    Ok(open_at(path, range, 0)?.0)
}

/// [`open_in`] for a read resuming after `skip_lines` lines: a segmented archive leaves out the
/// leading segments those lines cover whole. Returns the reader and the lines left out (always 0
/// for a file): the caller passes over the rest.
pub fn open_at(
    path: &Path,
    range: Option<(i64, i64)>,
    skip_lines: u64,
) -> Result<(Box<dyn BufRead + Send>, u64), Error> {
    let err = |source| Error::Archive {
        path: path.display().to_string(),
        source,
    };
    if path.is_dir() {
        // A segmented archive: its segments one after another.
        let (segments, passed) = segments::open_dir_at(path, range, skip_lines)?;
        return Ok((
            Box::new(BufReader::with_capacity(1 << 16, segments)),
            passed,
        ));
    }
    let mut file = File::open(path).map_err(err)?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(err)?;
    let file = File::open(path).map_err(err)?;
    let reader: Box<dyn BufRead + Send> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(BufReader::new(
            zstd::stream::read::Decoder::new(file).map_err(err)?,
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    Ok((reader, 0))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Decodes one archive line; `origin` names it in a quarantine entry.
pub fn decode_line(
    line: &str,
    origin: impl FnOnce() -> String,
) -> Result<ChangeEvent, Quarantined> {
    StreamRecord::from_json(line)
        .and_then(ChangeEvent::try_from)
        .map_err(|e| Quarantined {
            origin: origin(),
            reason: e.to_string(),
            raw: line.chars().take(64 * 1024).collect(),
        })
}

/// Reads every line of an archive, calling `batch` with up to `batch_size` events at a time.
/// Stops early (returning `Ok(false)`) when `batch` returns false.
pub fn read_batches(
    path: &Path,
    batch_size: usize,
    batch: impl FnMut(Batch) -> bool,
) -> Result<bool, Error> {
    read_batches_in(path, None, batch_size, batch)
}

/// [`read_batches`] of the segments that can hold changes in `range` ([`open_in`]).
pub fn read_batches_in(
    path: &Path,
    range: Option<(i64, i64)>,
    batch_size: usize,
    mut batch: impl FnMut(Batch) -> bool,
) -> Result<bool, Error> {
    read_batches_at(path, range, 0, batch_size, |b, _| batch(b))
}

/// [`read_batches_in`], passing over the first `skip_lines` lines undecoded; `batch` gets each
/// batch with the lines read up to its last one (the last batch: up to the end).
pub fn read_batches_at(
    path: &Path,
    range: Option<(i64, i64)>,
    skip_lines: u64,
    batch_size: usize,
    mut batch: impl FnMut(Batch, u64) -> bool,
) -> Result<bool, Error> {
    let (reader, passed) = open_at(path, range, skip_lines)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let archive_error = |source| Error::Archive {
        path: path.display().to_string(),
        source,
    };
    let mut current = Batch::default();
    let (mut lines, mut delivered) = (passed, skip_lines);
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(archive_error)?;
        lines = passed + index as u64 + 1;
        if lines <= skip_lines || line.trim().is_empty() {
            continue;
        }
        match decode_line(&line, || format!("{name} line {lines}")) {
            Ok(event) => current.events.push(event),
            Err(q) => current.quarantined.push(q),
        }
        if current.events.len() >= batch_size {
            delivered = lines;
            if !batch(std::mem::take(&mut current), lines) {
                return Ok(false);
            }
        }
    }
    if lines < skip_lines {
        return Err(archive_error(std::io::Error::other(format!(
            "the input ends after {lines} lines, before line {skip_lines} where the read was to resume"
        ))));
    }
    // The last batch; an empty one too when blank lines after the last change move the position.
    if !current.is_empty() || lines > delivered {
        return Ok(batch(current, lines));
    }
    Ok(true)
}

#[async_trait::async_trait]
impl Source for ArchiveSource {
    fn describe(&self) -> String {
        match self.config.segment_range {
            // Another range opens other segments: positions are the range's own.
            Some((from, to)) => format!("archive:{} [{from}, {to})", self.config.path.display()),
            None => format!("archive:{}", self.config.path.display()),
        }
    }

    async fn run(
        self: Box<Self>,
        out: mpsc::Sender<Batch>,
        shutdown: CancellationToken,
    ) -> Result<SourceSummary, Error> {
        if self.config.live_replay {
            return live_replay(self.config, out, shutdown).await;
        }
        let (origin, skip_lines) = self.begin()?;
        let position = move |lines: u64| {
            ArchivePosition {
                origin: origin.clone(),
                lines,
            }
            .checkpoint()
        };
        let config = self.config;
        if let Some(projection) = self.projection {
            let reducer = self.reducer;
            return tokio::task::spawn_blocking(move || {
                let mut summary = SourceSummary::default();
                let mut closed = false;
                let mut deliver = |batch: Batch| {
                    if shutdown.is_cancelled() {
                        return false;
                    }
                    summary.events += (batch.projected.len()
                        + batch.reduced.as_ref().map_or(0, |r| r.changes))
                        as u64;
                    summary.quarantined += batch.quarantined.len() as u64;
                    closed = out.blocking_send(batch).is_err();
                    !closed
                };
                let projection = CompiledProjection::new(&projection);
                let options = ReadOptions {
                    batch_size: config.batch_size.max(1),
                    time_range: config.segment_range,
                    skip_lines,
                    ..ReadOptions::default()
                };
                match &reducer {
                    // On the decoding thread, each change folded in as it is decoded.
                    Some(reduce) => read_projected_folded(
                        &config.path,
                        &projection,
                        options,
                        |changes| (reduce.0)(changes),
                        |fold, change| fold.push(change),
                        |fold, quarantined, lines| Batch {
                            quarantined,
                            positions: position(lines),
                            reduced: Some(fold.finish()),
                            ..Batch::default()
                        },
                        &mut deliver,
                    )?,
                    None => read_projected_reduced(
                        &config.path,
                        &projection,
                        options,
                        |batch| Batch {
                            projected: batch.changes,
                            quarantined: batch.quarantined,
                            positions: position(batch.lines),
                            ..Batch::default()
                        },
                        &mut deliver,
                    )?,
                };
                if closed {
                    return Err(Error::DownstreamClosed);
                }
                Ok(summary)
            })
            .await
            .map_err(|e| Error::Config(format!("archive reader thread failed: {e}")))?;
        }
        tokio::task::spawn_blocking(move || {
            let mut summary = SourceSummary::default();
            let mut closed = false;
            read_batches_at(
                &config.path,
                config.segment_range,
                skip_lines,
                config.batch_size.max(1),
                |mut batch, lines| {
                    if shutdown.is_cancelled() {
                        return false;
                    }
                    batch.positions = position(lines);
                    summary.events += batch.events.len() as u64;
                    summary.quarantined += batch.quarantined.len() as u64;
                    closed = out.blocking_send(batch).is_err();
                    !closed
                },
            )?;
            if closed {
                return Err(Error::DownstreamClosed);
            }
            Ok(summary)
        })
        .await
        .map_err(|e| Error::Config(format!("archive reader thread failed: {e}")))?
    }
}

/// Replays the archive for ever, its times shifted to the present and paced by `speed`.
async fn live_replay(
    config: ArchiveSourceConfig,
    out: mpsc::Sender<Batch>,
    shutdown: CancellationToken,
) -> Result<SourceSummary, Error> {
    if !(config.speed.is_finite() && config.speed > 0.0) {
        return Err(Error::Config(format!(
            "speed must be a positive number, found {}",
            config.speed
        )));
    }
    let path = config.path.clone();
    let (events, quarantined) = tokio::task::spawn_blocking(move || {
        let mut all = Batch::default();
        read_batches(&path, 4096, |b| {
            all.events.extend(b.events);
            all.quarantined.extend(b.quarantined);
            true
        })
        .map(|_| (all.events, all.quarantined))
    })
    .await
    .map_err(|e| Error::Config(format!("archive reader thread failed: {e}")))??;
    let mut summary = SourceSummary {
        quarantined: quarantined.len() as u64,
        ..SourceSummary::default()
    };
    if !quarantined.is_empty() {
        out.send(Batch {
            quarantined,
            ..Batch::default()
        })
        .await
        .map_err(|_| Error::DownstreamClosed)?;
    }
    let Some(first) = events.iter().map(|e| e.event_time_ms).min() else {
        return Ok(summary);
    };
    let last = events
        .iter()
        .map(|e| e.event_time_ms)
        .max()
        .unwrap_or(first);
    // One pass lasts the archive's span plus one second, in replay time.
    let pass_ms = ((last - first + 1000) as f64 / config.speed) as i64;
    let start = now_ms();
    tracing::info!(
        events = events.len(),
        pass_ms,
        "live replay of archive started"
    );
    for pass in 0u64.. {
        let pass_start = start + pass as i64 * pass_ms;
        let mut pending = Batch::default();
        for event in &events {
            let due = pass_start + ((event.event_time_ms - first) as f64 / config.speed) as i64;
            let wait = due - now_ms();
            if wait > 0 {
                if !pending.is_empty() {
                    summary.events += pending.events.len() as u64;
                    out.send(std::mem::take(&mut pending))
                        .await
                        .map_err(|_| Error::DownstreamClosed)?;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(summary),
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                }
            }
            let mut shifted = event.clone();
            shifted.event_time_ms = due;
            shifted.event_id = format!("{}-{pass}", event.event_id);
            shifted.sequence_number = format!("{pass:08}{:0>30}", event.sequence_number);
            pending.events.push(shifted);
        }
        if !pending.is_empty() {
            summary.events += pending.events.len() as u64;
            out.send(pending)
                .await
                .map_err(|_| Error::DownstreamClosed)?;
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn line(id: u32, kind: &str, time: i64) -> String {
        format!(
            r#"{{"eventID":"e{id}","eventName":"{kind}","dynamodb":{{"ApproximateCreationDateTime":{time},"Keys":{{"pk":{{"S":"k{id}"}}}},"NewImage":{{"pk":{{"S":"k{id}"}}}},"SequenceNumber":"{id}","SizeBytes":10}}}}"#
        )
    }

    #[test]
    fn bad_lines_are_quarantined_by_line_number_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ndjson");
        let mut f = File::create(&path).unwrap();
        writeln!(f, "{}", line(1, "INSERT", 1_700_000_000)).unwrap();
        writeln!(f, "{{not json").unwrap();
        writeln!(f).unwrap();
        writeln!(f, "{}", line(2, "INSERT", 1_700_000_001)).unwrap();
        drop(f);
        let mut batches = Vec::new();
        read_batches(&path, 10, |b| {
            batches.push(b);
            true
        })
        .unwrap();
        let events: Vec<_> = batches.iter().flat_map(|b| &b.events).collect();
        let bad: Vec<_> = batches.iter().flat_map(|b| &b.quarantined).collect();
        assert_eq!(events.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].origin, "a.ndjson line 2");
        assert!(bad[0].reason.contains("invalid json"), "{}", bad[0].reason);
    }

    #[test]
    fn gzip_and_zstd_are_detected_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{}\n{}\n", line(1, "INSERT", 1), line(2, "REMOVE", 2));
        let gz = dir.path().join("x.data");
        let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), Default::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let zst = dir.path().join("y.data");
        std::fs::write(&zst, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
        for path in [gz, zst] {
            let mut n = 0;
            read_batches(&path, 1, |b| {
                n += b.events.len();
                true
            })
            .unwrap();
            assert_eq!(n, 2, "{}", path.display());
        }
    }

    /// Reads `path` through the source resumed from `checkpoint`: the ids read and the last
    /// checkpoint, or the error.
    fn read_resumed(
        path: &Path,
        checkpoint: &crate::Checkpoint,
        projected: bool,
    ) -> Result<(Vec<String>, crate::Checkpoint), Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut config = ArchiveSourceConfig::once(path);
            config.batch_size = 2;
            let source = ArchiveSource::new(config)
                .with_projection(projected.then(|| streamlens_core::Projection::new(["pk"])))
                .resume_from(checkpoint)?;
            let (tx, mut rx) = mpsc::channel(1024);
            let reader = tokio::spawn(Box::new(source).run(tx, CancellationToken::new()));
            let (mut ids, mut last) = (Vec::new(), crate::Checkpoint::new());
            while let Some(batch) = rx.recv().await {
                ids.extend(batch.events.iter().map(|e| e.sequence_number.clone()));
                ids.extend(
                    batch
                        .projected
                        .iter()
                        .map(|p| p.sequence_number.to_string()),
                );
                last = batch.positions;
            }
            reader.await.unwrap()?;
            Ok((ids, last))
        })
    }

    /// A resumed file read goes on after its checkpoint when the file only grew, and refuses
    /// another file at the same path instead of reading it from the middle.
    #[test]
    fn a_file_is_known_again_by_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ndjson");
        let write = |ids: std::ops::Range<u32>, append: bool| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(append)
                .write(true)
                .truncate(!append)
                .open(&path)
                .unwrap();
            for id in ids {
                writeln!(f, "{}", line(id, "INSERT", 1_700_000_000)).unwrap();
            }
        };
        for projected in [false, true] {
            write(0..5, false);
            let (ids, checkpoint) = read_resumed(&path, &Default::default(), projected).unwrap();
            assert_eq!(ids, ["0", "1", "2", "3", "4"]);
            let position = ArchivePosition::of(&checkpoint).unwrap().unwrap();
            assert_eq!(position.lines, 5);
            assert!(position.origin.as_deref().unwrap().starts_with("head-"));
            // Grown: only the new lines.
            write(5..8, true);
            let (ids, _) = read_resumed(&path, &checkpoint, projected).unwrap();
            assert_eq!(ids, ["5", "6", "7"]);
            // Replaced by another file as long: refused, naming both.
            write(100..108, false);
            let err = read_resumed(&path, &checkpoint, projected).unwrap_err();
            assert!(err.to_string().contains("cannot resume reading"), "{err}");
        }
    }
}
