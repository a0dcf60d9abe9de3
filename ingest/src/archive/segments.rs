//! The segmented archive: every change read, kept in a directory beyond the stream's 24 hours.
//!
//! ```text
//! <dir>/seg-1795663260000-0000.ndjson.gz       gzip members, one per pipeline pass
//! <dir>/seg-1795663260000-0000.ndjson.gz.json  its index: committed bytes, records, time and
//!                                          sequence-number ranges per shard
//! ```
//!
//! Each pipeline pass appends its changes as one complete gzip member (Streams-record lines, in
//! the order read, so in order per shard), fsyncs the segment, then rewrites the segment's index
//! (written to a temporary file, fsynced, renamed). Only then does the pass write its checkpoint,
//! so the archive always holds every change a checkpoint covers. The index records how many bytes
//! of the segment are committed: a crash in the middle of a write leaves bytes past that, which
//! readers never read. A segment is closed (a new one started) when it reaches `segment_size`
//! bytes or `segment_age`, and at every start. Retention deletes closed segments whose newest
//! change is older than the newest change written minus `retention`.
//!
//! [`super::open`] reads a directory as the concatenation of its segments in order, each up to its
//! committed length: a segmented archive replays like a file.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use streamlens_core::{ChangeEvent, StreamRecord};

use crate::Error;

/// Where and how a segmented archive is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentsConfig {
    /// The directory.
    pub dir: PathBuf,
    /// Close a segment once it holds this many (compressed) bytes.
    pub segment_bytes: u64,
    /// Close a segment once it is this old.
    pub segment_age: Duration,
    /// Delete closed segments whose newest change is older than the newest change written minus
    /// this; keep everything when `None`.
    pub retention_ms: Option<i64>,
}

/// A segment's index: what it holds, and how much of it is committed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// The segment's file name.
    pub file: String,
    /// Bytes committed: readers read no further.
    pub bytes: u64,
    /// Changes in the committed bytes.
    pub records: u64,
    /// The oldest event time, epoch ms.
    pub first_time: i64,
    /// The newest event time, epoch ms.
    pub last_time: i64,
    /// Per shard: the first and the last sequence number.
    pub shards: BTreeMap<String, (String, String)>,
}

struct Open {
    file: File,
    meta: SegmentMeta,
    opened: Instant,
}

/// Appends passes of changes to a segmented archive.
pub struct SegmentWriter {
    config: SegmentsConfig,
    current: Option<Open>,
    newest: i64,
    /// When retention last looked at the segments.
    expired_at: Option<Instant>,
}

/// How often retention runs.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

fn err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Archive {
        path: path.display().to_string(),
        source,
    }
}

fn index_path(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!("{file}.json"))
}

/// The committed segments of a directory, in write order.
pub fn segments(dir: &Path) -> Result<Vec<SegmentMeta>, Error> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err(dir))? {
        let path = entry.map_err(err(dir))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !(name.starts_with("seg-") && name.ends_with(".ndjson.gz.json")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(err(&path))?;
        let meta: SegmentMeta = serde_json::from_str(&text).map_err(|e| Error::Archive {
            path: path.display().to_string(),
            source: std::io::Error::other(format!("unreadable segment index: {e}")),
        })?;
        out.push(meta);
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// The committed segments that can hold changes with event times in `range` (`[from, to)`),
/// in write order: those [`open_dir_in`] reads.
pub fn segments_in(dir: &Path, range: Option<(i64, i64)>) -> Result<Vec<SegmentMeta>, Error> {
    let mut all = segments(dir)?;
    all.retain(|meta| {
        !range.is_some_and(|(from, to)| meta.last_time < from || meta.first_time >= to)
    });
    Ok(all)
}

/// A reader of a directory's segments one after another, each up to its committed length and
/// decompressed.
pub fn open_dir(dir: &Path) -> Result<Box<dyn Read + Send>, Error> {
    open_dir_in(dir, None)
}

/// [`open_dir`], skipping the segments whose index says they hold no change with an event time
/// in `[from, to)`.
pub fn open_dir_in(dir: &Path, range: Option<(i64, i64)>) -> Result<Box<dyn Read + Send>, Error> {
    Ok(open_dir_at(dir, range, 0)?.0)
}

/// [`open_dir_in`] for a read resuming after `skip_lines` lines: the leading segments those lines
/// cover whole (their index counts one line per record) are not opened at all. Returns the
/// reader and the lines of the segments left out.
pub fn open_dir_at(
    dir: &Path,
    range: Option<(i64, i64)>,
    skip_lines: u64,
) -> Result<(Box<dyn Read + Send>, u64), Error> {
    let mut parts: Vec<Box<dyn Read + Send>> = Vec::new();
    let mut passed = 0u64;
    for meta in segments_in(dir, range)? {
        if parts.is_empty() && passed + meta.records <= skip_lines {
            passed += meta.records;
            continue;
        }
        let path = dir.join(&meta.file);
        let file = File::open(&path).map_err(err(&path))?;
        parts.push(Box::new(flate2::read::MultiGzDecoder::new(
            file.take(meta.bytes),
        )));
    }
    let chain: Box<dyn Read + Send> = Box::new(Chain {
        parts: parts.into_iter().collect(),
    });
    Ok((chain, passed))
}

struct Chain {
    parts: std::collections::VecDeque<Box<dyn Read + Send>>,
}

impl Read for Chain {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(part) = self.parts.front_mut() {
            match part.read(buf)? {
                0 => {
                    self.parts.pop_front();
                }
                n => return Ok(n),
            }
        }
        Ok(0)
    }
}

impl SegmentWriter {
    /// Opens the directory (creating it); the first pass starts a new segment.
    pub fn open(config: SegmentsConfig) -> Result<Self, Error> {
        std::fs::create_dir_all(&config.dir).map_err(err(&config.dir))?;
        let newest = segments(&config.dir)?
            .iter()
            .map(|s| s.last_time)
            .max()
            .unwrap_or(i64::MIN);
        Ok(SegmentWriter {
            config,
            current: None,
            newest,
            expired_at: None,
        })
    }

    /// Appends one pass of changes as one gzip member and commits it (segment fsynced, then its
    /// index replaced). Returns once both are durable.
    pub fn append(&mut self, events: &[ChangeEvent]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let rotate = self.current.as_ref().is_some_and(|c| {
            c.meta.bytes >= self.config.segment_bytes
                || c.opened.elapsed() >= self.config.segment_age
        });
        if rotate || self.current.is_none() {
            self.current = Some(self.start(events[0].event_time_ms)?);
        }
        let dir = self.config.dir.clone();
        let Some(open) = self.current.as_mut() else {
            return Ok(());
        };
        let path = dir.join(&open.meta.file);
        let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for event in events {
            let line = serde_json::to_string(&StreamRecord::from(event))
                .map_err(|e| err(&path)(std::io::Error::other(e)))?;
            member
                .write_all(line.as_bytes())
                .and_then(|()| member.write_all(b"\n"))
                .map_err(err(&path))?;
        }
        let bytes = member.finish().map_err(err(&path))?;
        open.file.write_all(&bytes).map_err(err(&path))?;
        open.file.sync_data().map_err(err(&path))?;
        let meta = &mut open.meta;
        meta.bytes += bytes.len() as u64;
        for event in events {
            if meta.records == 0 {
                meta.first_time = event.event_time_ms;
                meta.last_time = event.event_time_ms;
            }
            meta.records += 1;
            meta.first_time = meta.first_time.min(event.event_time_ms);
            meta.last_time = meta.last_time.max(event.event_time_ms);
            let range = meta
                .shards
                .entry(event.shard_id.clone())
                .or_insert_with(|| (event.sequence_number.clone(), String::new()));
            range.1 = event.sequence_number.clone();
            self.newest = self.newest.max(event.event_time_ms);
        }
        write_index(&dir, meta)?;
        // Retention reads every index: at each new segment (when one closes) and once a minute.
        if rotate
            || self
                .expired_at
                .is_none_or(|at| at.elapsed() >= EXPIRE_EVERY)
        {
            self.expired_at = Some(Instant::now());
            self.expire()?;
        }
        Ok(())
    }

    fn start(&self, first_time: i64) -> Result<Open, Error> {
        let created = crate::now_ms();
        // Names sort in write order: creation time, then a counter for the same millisecond.
        let mut n = 0;
        let file = loop {
            let name = format!("seg-{created:013}-{n:04}.ndjson.gz");
            if !self.config.dir.join(&name).exists() {
                break name;
            }
            n += 1;
        };
        let path = self.config.dir.join(&file);
        let handle = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(err(&path))?;
        tracing::info!(segment = %path.display(), "archive segment started");
        Ok(Open {
            file: handle,
            meta: SegmentMeta {
                file,
                first_time,
                last_time: first_time,
                ..SegmentMeta::default()
            },
            opened: Instant::now(),
        })
    }

    /// Deletes closed segments past the retention.
    fn expire(&mut self) -> Result<u64, Error> {
        let Some(retention) = self.config.retention_ms else {
            return Ok(0);
        };
        let cutoff = self.newest.saturating_sub(retention);
        let current = self.current.as_ref().map(|c| c.meta.file.clone());
        let mut dropped = 0;
        for meta in segments(&self.config.dir)? {
            if Some(&meta.file) == current.as_ref() || meta.last_time >= cutoff {
                continue;
            }
            let path = self.config.dir.join(&meta.file);
            std::fs::remove_file(index_path(&self.config.dir, &meta.file)).map_err(err(&path))?;
            std::fs::remove_file(&path).map_err(err(&path))?;
            tracing::info!(segment = %path.display(), "archive segment dropped (retention)");
            dropped += 1;
        }
        Ok(dropped)
    }
}

/// Replaces a segment's index atomically: a temporary file, fsynced, renamed over it.
fn write_index(dir: &Path, meta: &SegmentMeta) -> Result<(), Error> {
    let path = index_path(dir, &meta.file);
    let tmp = dir.join(format!(".{}.tmp", meta.file));
    let json = serde_json::to_vec(meta).map_err(|e| err(&path)(std::io::Error::other(e)))?;
    let mut file = File::create(&tmp).map_err(err(&tmp))?;
    file.write_all(&json).map_err(err(&tmp))?;
    file.sync_all().map_err(err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(err(&path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;

    use streamlens_core::EventKind;

    use super::*;

    fn event(seq: u64, time: i64) -> ChangeEvent {
        ChangeEvent {
            event_id: format!("e{seq}"),
            kind: EventKind::Insert,
            keys: Default::default(),
            old_image: None,
            new_image: Some(Default::default()),
            event_time_ms: time,
            sequence_number: seq.to_string(),
            shard_id: "s1".into(),
            size_bytes: 0,
            view_type: None,
            ttl_delete: false,
        }
    }

    fn read_seqs(dir: &Path) -> Vec<String> {
        let reader = std::io::BufReader::new(open_dir(dir).unwrap());
        reader
            .lines()
            .map(|l| {
                let record = StreamRecord::from_json(&l.unwrap()).unwrap();
                record.dynamodb.sequence_number
            })
            .collect()
    }

    #[test]
    fn passes_rotate_read_back_in_order_and_survive_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let config = SegmentsConfig {
            dir: dir.path().join("archive"),
            segment_bytes: 200,
            segment_age: Duration::from_secs(3600),
            retention_ms: None,
        };
        let mut writer = SegmentWriter::open(config.clone()).unwrap();
        for pass in 0..4u64 {
            let events: Vec<ChangeEvent> = (0..5)
                .map(|i| event(pass * 5 + i, 1_000 * (pass * 5 + i) as i64))
                .collect();
            writer.append(&events).unwrap();
        }
        let segs = segments(&config.dir).unwrap();
        assert!(segs.len() > 1, "rotated: {segs:?}");
        assert_eq!(segs.iter().map(|s| s.records).sum::<u64>(), 20);
        assert_eq!(segs[0].shards["s1"].0, "0");
        let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_eq!(read_seqs(&config.dir), want);

        // A write torn by a crash: bytes past the committed length are never read.
        let last = segs.last().unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(config.dir.join(&last.file))
            .unwrap();
        file.write_all(&[0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        assert_eq!(read_seqs(&config.dir), want);

        // The index lets a time range skip whole segments.
        let later: Vec<String> = {
            let from = segs[1].first_time;
            let reader =
                std::io::BufReader::new(open_dir_in(&config.dir, Some((from, i64::MAX))).unwrap());
            reader
                .lines()
                .map(|l| {
                    StreamRecord::from_json(&l.unwrap())
                        .unwrap()
                        .dynamodb
                        .sequence_number
                })
                .collect()
        };
        assert_eq!(later.len() as u64, 20 - segs[0].records);
        assert_eq!(
            later.first().map(String::as_str),
            Some(segs[0].records.to_string().as_str())
        );

        // A restart starts a new segment and reading goes on in order.
        let mut writer = SegmentWriter::open(config.clone()).unwrap();
        writer.append(&[event(20, 20_000)]).unwrap();
        let mut more = want.clone();
        more.push("20".into());
        assert_eq!(read_seqs(&config.dir), more);
    }

    #[test]
    fn retention_drops_old_closed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let config = SegmentsConfig {
            dir: dir.path().to_owned(),
            segment_bytes: 1,
            segment_age: Duration::from_secs(3600),
            retention_ms: Some(10_000),
        };
        let mut writer = SegmentWriter::open(config.clone()).unwrap();
        for i in 0..5u64 {
            writer.append(&[event(i, i as i64 * 10_000)]).unwrap();
        }
        // Newest change at 40 s: segments whose newest change is before 30 s are gone.
        let left: Vec<i64> = segments(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.last_time)
            .collect();
        assert_eq!(left, [30_000, 40_000]);
    }

    /// A resumed read leaves out the segments its position covers whole (it does not even open
    /// them) and still gives exactly the rest, on both read paths.
    #[test]
    fn a_resumed_read_passes_over_whole_segments_unopened() {
        let dir = tempfile::tempdir().unwrap();
        let config = SegmentsConfig {
            dir: dir.path().to_owned(),
            segment_bytes: 1,
            segment_age: Duration::from_secs(3600),
            retention_ms: None,
        };
        let mut writer = SegmentWriter::open(config).unwrap();
        for pass in 0..5u64 {
            let events: Vec<ChangeEvent> = (0..3).map(|i| event(pass * 3 + i, 1_000)).collect();
            writer.append(&events).unwrap();
        }
        let all: Vec<String> = (0..15u64).map(|n| n.to_string()).collect();
        let projection =
            crate::archive::CompiledProjection::new(&streamlens_core::Projection::new(["pk"]));
        let resumed = |at: u64| {
            let mut whole = Vec::new();
            crate::archive::read_batches_at(dir.path(), None, at, 2, |b, _| {
                whole.extend(b.events.into_iter().map(|e| e.sequence_number));
                true
            })
            .map(|_| whole)
        };
        let projected = |at: u64| {
            let mut seqs = Vec::new();
            let options = crate::archive::ReadOptions {
                skip_lines: at,
                positions: true,
                ..Default::default()
            };
            crate::archive::read_projected_with(dir.path(), &projection, options, |b| {
                seqs.extend(b.changes.into_iter().map(|c| c.sequence_number.to_string()));
                true
            })
            .map(|_| seqs)
        };
        for at in 0..=15u64 {
            assert_eq!(resumed(at).unwrap(), all[at as usize..], "at {at}");
            assert_eq!(projected(at).unwrap(), all[at as usize..], "at {at}");
        }
        // The first segment's data gone: a read that passes over it whole never notices.
        let first = segments(dir.path()).unwrap()[0].file.clone();
        std::fs::remove_file(dir.path().join(&first)).unwrap();
        assert_eq!(resumed(3).unwrap(), all[3..]);
        assert_eq!(projected(4).unwrap(), all[4..]);
        assert!(resumed(2).is_err());
        assert!(projected(0).is_err());
    }
}
