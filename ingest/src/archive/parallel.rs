//! Reading an archive into projected changes on several threads, in input order.
//!
//! The input (plain, gzip or zstd, through [`open`](super::open)) is cut into chunks of whole
//! lines. Each worker thread takes the next chunk from the shared reader (reading is serialised:
//! for compressed input the decompression runs there), decodes it with
//! [`decode_projected`](super::fast::decode_projected) (and, with [`read_projected_map`] or
//! [`read_projected_reduced`], applies the caller's function to the chunk or to each of its
//! batches; [`read_projected_folded`] instead decodes each line with
//! [`decode_view`](super::fast::decode_view) and folds it into its batch at once) and hands the
//! result back; the calling thread puts the chunks back
//! in input order and calls the callback. A fixed number of chunks is in flight at any time (read,
//! being decoded, or decoded and waiting for an earlier chunk), so memory stays bounded whatever
//! the size of the input and however slowly the callback consumes.

use std::{
    collections::BTreeMap,
    io::{BufRead, ErrorKind, Read},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Condvar, Mutex,
    },
};

use streamlens_core::projection::{ChangeView, ProjectedChange, Projection};

use super::fast::{
    decode_projected, decode_view, decode_view_text, CompiledProjection, DecodeCache, LineImages,
};
use crate::{Error, Quarantined};

/// Changes decoded from an archive, and the lines that could not be.
#[derive(Debug, Default, Clone)]
pub struct ProjectedBatch {
    /// Decoded changes, in input order.
    pub changes: Vec<ProjectedChange>,
    /// Lines that could not be decoded, with `<file> line N` origins.
    pub quarantined: Vec<Quarantined>,
    /// With [`ReadOptions::positions`]: the lines of the input up to this batch's last line,
    /// skipped ones included (where to resume once the batch is stored); 0 otherwise.
    pub lines: u64,
}

impl ProjectedBatch {
    /// True when the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.quarantined.is_empty()
    }
}

/// How [`read_projected_with`], [`read_projected_reduced`] and [`read_projected_map`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Changes per batch (the last one may have fewer); not used by [`read_projected_map`],
    /// whose batches are chunks.
    pub batch_size: usize,
    /// Decoding threads; 0 reads, decodes and calls back on the calling thread alone.
    pub threads: usize,
    /// Bytes of (decompressed) input per chunk; a chunk always ends at a line end.
    pub chunk_bytes: usize,
    /// Chunks read but not yet delivered, at most (at least `threads`).
    pub chunks_in_flight: usize,
    /// A segmented archive reads only the segments that can hold changes with event times in
    /// `[from, to)`; `None` reads everything.
    pub time_range: Option<(i64, i64)>,
    /// Lines at the start of the input to pass over without decoding them (a resumed read:
    /// the lines a checkpoint covers). Input shorter than this is an error.
    pub skip_lines: u64,
    /// Batches of at most `batch_size` changes that never span two chunks, each with its
    /// [`ProjectedBatch::lines`]: what a reader that checkpoints needs ([`read_projected_reduced`]
    /// always reads so).
    pub positions: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        ReadOptions {
            batch_size: 4096,
            threads,
            chunk_bytes: 1 << 20,
            chunks_in_flight: 2 * threads + 2,
            time_range: None,
            skip_lines: 0,
            positions: false,
        }
    }
}

impl ReadOptions {
    /// The same options with [`Self::positions`].
    fn with_positions(self) -> Self {
        ReadOptions {
            positions: true,
            ..self
        }
    }
}

/// What a read did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadSummary {
    /// False when the callback asked to stop.
    pub completed: bool,
    /// Lines read (blank ones included).
    pub lines: u64,
    /// Bytes of decompressed input read.
    pub bytes: u64,
    /// Changes delivered.
    pub changes: u64,
    /// Lines quarantined.
    pub quarantined: u64,
}

impl ReadSummary {
    /// Counts a chunk read.
    fn read(&mut self, lines: u64, bytes: u64) {
        self.lines += lines;
        self.bytes += bytes;
    }

    /// Counts changes and quarantined lines delivered.
    fn delivered(&mut self, changes: u64, quarantined: u64) {
        self.changes += changes;
        self.quarantined += quarantined;
    }
}

/// Reads an archive into projected changes with the default options (one decoding thread per
/// core), calling `callback` with up to `batch_size` changes at a time, in input order. Stops
/// early (with `completed: false`) when `callback` returns false.
///
/// Batches are cut as [`read_batches`](super::read_batches) cuts them: `batch_size` changes each
/// (the last one fewer), and a quarantined line in the batch of the change that follows it.
pub fn read_projected(
    path: &Path,
    projection: &Projection,
    batch_size: usize,
    callback: impl FnMut(ProjectedBatch) -> bool,
) -> Result<ReadSummary, Error> {
    read_projected_with(
        path,
        &CompiledProjection::new(projection),
        ReadOptions {
            batch_size,
            ..ReadOptions::default()
        },
        callback,
    )
}

/// [`read_projected`] with explicit options.
pub fn read_projected_with(
    path: &Path,
    projection: &CompiledProjection,
    options: ReadOptions,
    callback: impl FnMut(ProjectedBatch) -> bool,
) -> Result<ReadSummary, Error> {
    let mut out = Collector {
        batch_size: options.batch_size.max(1),
        positions: options.positions,
        callback,
        current: ProjectedBatch::default(),
        summary: ReadSummary::default(),
    };
    let go_on = pipeline(
        path,
        projection,
        options,
        &|raw: RawChunk<'_>| raw.decode(),
        |chunk| out.accept(chunk),
    )?;
    Ok(if go_on { out.finish() } else { out.summary })
}

/// Reads an archive chunk by chunk: each chunk's changes (those of about `chunk_bytes` of input)
/// go through `map` on the decoding thread that decoded them, and the results reach `callback` on
/// the calling thread in input order. Work that can run per chunk (turning changes into columns,
/// pre-aggregating, dropping what a filter rejects) thus runs in parallel with the decoding, and
/// the chunk's memory is freed on the thread that allocated it. Stops early (with
/// `completed: false`) when `callback` returns false.
pub fn read_projected_map<T: Send>(
    path: &Path,
    projection: &CompiledProjection,
    options: ReadOptions,
    map: impl Fn(ProjectedBatch) -> T + Sync,
    callback: impl FnMut(T) -> bool,
) -> Result<ReadSummary, Error> {
    read_in_batches(
        path,
        projection,
        options,
        &|raw: RawChunk<'_>| {
            let chunk = raw.decode();
            let (changes, quarantined) = (chunk.batch.changes.len(), chunk.batch.quarantined.len());
            let value = map(chunk.batch);
            (
                (chunk.lines, chunk.bytes),
                vec![(changes as u64, quarantined as u64, value)],
            )
        },
        callback,
    )
}

/// [`read_projected_with`] with [`ReadOptions::positions`], each batch passed through `reduce` on
/// the decoding thread that decoded it; the results reach `callback` on the calling thread in
/// input order. A reader that checkpoints can thus have the per-batch work of its consumer done
/// in parallel with the decoding, and each batch's changes freed by the thread that allocated
/// them. Stops early (with `completed: false`) when `callback` returns false.
pub fn read_projected_reduced<T: Send>(
    path: &Path,
    projection: &CompiledProjection,
    options: ReadOptions,
    reduce: impl Fn(ProjectedBatch) -> T + Sync,
    callback: impl FnMut(T) -> bool,
) -> Result<ReadSummary, Error> {
    let batch_size = options.batch_size.max(1);
    read_in_batches(
        path,
        projection,
        options.with_positions(),
        &|raw: RawChunk<'_>| {
            let chunk = raw.decode();
            let read = (chunk.lines, chunk.bytes);
            let reduced = split(chunk, batch_size)
                .into_iter()
                .map(|batch| {
                    let (changes, bad) = (batch.changes.len(), batch.quarantined.len());
                    (changes as u64, bad as u64, reduce(batch))
                })
                .collect();
            (read, reduced)
        },
        callback,
    )
}

/// A chunk's lines and bytes, and each of its batches' changes, quarantined lines and value.
type Batched<T> = ((u64, u64), Vec<(u64, u64, T)>);

/// The common part of [`read_projected_map`], [`read_projected_reduced`] and
/// [`read_projected_folded`]: a read whose chunks `map` makes into batches' values, handed to
/// `callback` in order.
fn read_in_batches<T: Send>(
    path: &Path,
    projection: &CompiledProjection,
    options: ReadOptions,
    map: &(dyn Fn(RawChunk<'_>) -> Batched<T> + Sync),
    mut callback: impl FnMut(T) -> bool,
) -> Result<ReadSummary, Error> {
    let mut summary = ReadSummary::default();
    let go_on = pipeline(
        path,
        projection,
        options,
        map,
        |((lines, bytes), batches)| {
            summary.read(lines, bytes);
            // Only what is delivered counts as delivered.
            batches.into_iter().all(|(changes, quarantined, value)| {
                summary.delivered(changes, quarantined);
                callback(value)
            })
        },
    )?;
    summary.completed = go_on;
    Ok(summary)
}

/// [`read_projected_reduced`] without the batches of owned changes: each batch is folded as it
/// is decoded. `start` makes a batch's accumulator (given about how many changes it will take),
/// `push` gives it each change of the batch as a view of its line (through a learned line shape
/// nothing is allocated for a change: see [`decode_view`]), and `finish` makes the batch's value
/// from the accumulator, the batch's quarantined lines and its position
/// ([`ProjectedBatch::lines`]). All three run on the decoding thread; the values reach `callback`
/// on the calling thread in input order, cut into the same batches as [`read_projected_reduced`]
/// cuts. Stops early (with `completed: false`) when `callback` returns false.
pub fn read_projected_folded<A, T: Send>(
    path: &Path,
    projection: &CompiledProjection,
    options: ReadOptions,
    start: impl Fn(usize) -> A + Sync,
    push: impl Fn(&mut A, &ChangeView<'_>) + Sync,
    finish: impl Fn(A, Vec<Quarantined>, u64) -> T + Sync,
    callback: impl FnMut(T) -> bool,
) -> Result<ReadSummary, Error> {
    let batch_size = options.batch_size.max(1);
    let folder = Folder {
        start: &start,
        push: &push,
        finish: &finish,
    };
    read_in_batches(
        path,
        projection,
        options.with_positions(),
        &|raw: RawChunk<'_>| raw.fold(batch_size, &folder),
        callback,
    )
}

/// The shared input: a reader, the start of the line the previous chunk cut, and the number of
/// lines before the next chunk.
struct Input {
    reader: Box<dyn BufRead + Send>,
    carry: Vec<u8>,
    done: bool,
    chunk_bytes: usize,
    path: String,
    lines: u64,
}

impl Input {
    /// Fills `buf` with the next chunk of whole lines (the last chunk may lack its final line
    /// end) and `ends` with where its line ends are, and returns the number of lines before it;
    /// empty at the end of the input.
    fn fill(&mut self, buf: &mut Vec<u8>, ends: &mut Vec<usize>) -> Result<u64, Error> {
        buf.clear();
        buf.append(&mut self.carry);
        let mut scanned = 0;
        loop {
            if buf.len() >= self.chunk_bytes {
                if let Some(at) = memchr::memrchr(b'\n', &buf[scanned..]) {
                    let end = scanned + at + 1;
                    self.carry.extend_from_slice(&buf[end..]);
                    buf.truncate(end);
                    return Ok(self.count(buf, ends));
                }
                // One line longer than a chunk: read on.
                scanned = buf.len();
            }
            let filled = buf.len();
            let want = (self.chunk_bytes.saturating_sub(filled)).max(64 * 1024);
            // Into the buffer's spare capacity (a plain file reads there directly, without
            // zeroing it first).
            let n = loop {
                match (&mut self.reader).take(want as u64).read_to_end(buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(source) => {
                        buf.truncate(filled);
                        self.done = true;
                        return Err(Error::Archive {
                            path: self.path.clone(),
                            source,
                        });
                    }
                }
            };
            if n == 0 {
                self.done = true;
                return Ok(self.count(buf, ends));
            }
        }
    }

    /// Passes over the first `n` lines without keeping them (a last line without its line end
    /// counts, as [`Input::count`] counts it).
    fn skip(&mut self, n: u64) -> Result<(), Error> {
        let mut partial = false;
        while self.lines < n {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Archive {
                        path: self.path.clone(),
                        source,
                    })
                }
            };
            if buf.is_empty() {
                self.lines += u64::from(partial);
                if self.lines < n {
                    return Err(Error::Archive {
                        path: self.path.clone(),
                        source: std::io::Error::other(format!(
                            "the input ends after {} lines, before line {n} where the read was to resume",
                            self.lines
                        )),
                    });
                }
                self.done = true;
                break;
            }
            let want = (n - self.lines) as usize;
            let (used, found) = match memchr::memchr_iter(b'\n', buf).nth(want - 1) {
                Some(at) => (at + 1, want),
                None => (buf.len(), memchr::memchr_iter(b'\n', buf).count()),
            };
            partial = buf[..used].last() != Some(&b'\n');
            self.reader.consume(used);
            self.lines += found as u64;
        }
        Ok(())
    }

    /// Counts the lines of a chunk, noting where they end (the decoder splits them there
    /// without looking for the ends again); the number of lines before it.
    fn count(&mut self, chunk: &[u8], ends: &mut Vec<usize>) -> u64 {
        let before = self.lines;
        ends.clear();
        ends.extend(memchr::memchr_iter(b'\n', chunk));
        self.lines += ends.len() as u64 + u64::from(chunk.last().is_some_and(|&b| b != b'\n'));
        before
    }
}

/// One decoded chunk.
struct Chunk {
    batch: ProjectedBatch,
    /// For each quarantined line, the number of the chunk's changes before it.
    bad_at: Vec<usize>,
    lines: u64,
    /// The lines of the input up to the end of this chunk.
    end: u64,
    /// With positions tracked: for each change, the chunk's lines up to it.
    change_lines: Vec<u32>,
    bytes: u64,
}

/// True for a line `read_batches` skips (`str::trim` is empty).
fn blank(line: &[u8]) -> bool {
    match line
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
    {
        None => true,
        Some(at) if line[at] >= 0x80 => {
            std::str::from_utf8(line).is_ok_and(|s| s.trim().is_empty())
        }
        Some(_) => false,
    }
}

/// Decodes a chunk whose first line is line `first` (from 1) of the file `name`.
/// A chunk of whole lines read, before decoding, with what its decoding thread decodes it with.
struct RawChunk<'a> {
    data: &'a [u8],
    /// The number of its first line in the input.
    first: u64,
    name: &'a str,
    projection: &'a CompiledProjection,
    cache: &'a mut DecodeCache,
    /// Whether to note each change's line ([`ReadOptions::positions`]).
    positions: bool,
    /// Where its `\n`s are.
    ends: &'a [usize],
}

/// Calls `each` with every line of `data` and its number in `data` (from 1), blank ones
/// excepted, given where its line ends are (`ends`: every `\n`, as [`Input::fill`] found them);
/// the number of lines.
fn lines<'d>(data: &'d [u8], ends: &[usize], mut each: impl FnMut(u64, &'d [u8])) -> u64 {
    let (mut start, mut n) = (0, 0);
    for &end in ends {
        // Like `BufRead::lines`: a `\r` goes with the `\n` after it only.
        let line = &data[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start = end + 1;
        n += 1;
        if !blank(line) {
            each(n, line);
        }
    }
    if start < data.len() {
        n += 1;
        if !blank(&data[start..]) {
            each(n, &data[start..]);
        }
    }
    n
}

impl RawChunk<'_> {
    /// Decodes the chunk into projected changes.
    fn decode(self) -> Chunk {
        let mut out = Chunk {
            batch: ProjectedBatch {
                changes: Vec::with_capacity(self.data.len() / 256),
                quarantined: Vec::new(),
                lines: 0,
            },
            bad_at: Vec::new(),
            lines: 0,
            end: 0,
            change_lines: Vec::new(),
            bytes: self.data.len() as u64,
        };
        out.lines = lines(self.data, self.ends, |n, line| {
            match decode_projected(line, self.projection, self.cache) {
                Ok(change) => {
                    out.batch.changes.push(change);
                    if self.positions {
                        out.change_lines.push(n as u32);
                    }
                }
                Err(reason) => {
                    out.bad_at.push(out.batch.changes.len());
                    out.batch.quarantined.push(quarantine(
                        self.name,
                        self.first + n - 1,
                        line,
                        reason,
                    ));
                }
            }
        });
        out.end = self.first - 1 + out.lines;
        out
    }

    /// Decodes the chunk straight into `fold`'s accumulators, a batch of up to `batch_size`
    /// changes at a time, each change a view of its line ([`decode_view`]): the batches
    /// [`split`] cuts, with the same quarantined lines and positions, folded instead of kept.
    fn fold<A, T>(self, batch_size: usize, fold: &Folder<'_, A, T>) -> Batched<T> {
        let RawChunk {
            data,
            first,
            name,
            projection,
            cache,
            ends,
            ..
        } = self;
        let mut images = LineImages::default();
        let mut batches = Vec::new();
        // The batch being folded: its accumulator, changes, quarantined lines and the line of its
        // last change; and the lines quarantined since it filled up, which go with the next
        // change's batch (or with it, when no change follows in the chunk).
        let hint = batch_size.min(data.len() / 128 + 16);
        let mut acc = (fold.start)(hint);
        let (mut changes, mut bad, mut last, mut later) = (0usize, Vec::new(), 0u64, Vec::new());
        // UTF-8 is checked once for the whole chunk (one call, not one per line); only a chunk
        // that is not UTF-8 throughout has each line checked on its own.
        let text = simdutf8::basic::from_utf8(data).ok();
        let lines = lines(data, ends, |n, line| {
            let consume = |view: &ChangeView<'_>| {
                if changes == batch_size {
                    let full = std::mem::replace(&mut acc, (fold.start)(hint));
                    let quarantined = std::mem::replace(&mut bad, std::mem::take(&mut later));
                    let n = quarantined.len() as u64;
                    let value = (fold.finish)(full, quarantined, first - 1 + last);
                    batches.push((changes as u64, n, value));
                    changes = 0;
                }
                (fold.push)(&mut acc, view);
                changes += 1;
                last = n;
            };
            // The line's text within the chunk's (a line ends at a `\n` or `\r`: a character
            // boundary).
            let at = line.as_ptr() as usize - data.as_ptr() as usize;
            let decoded = match text.and_then(|text| text.get(at..at + line.len())) {
                Some(line) => decode_view_text(line, projection, cache, &mut images, consume),
                None => decode_view(line, projection, cache, &mut images, consume),
            };
            if let Err(reason) = decoded {
                let line = quarantine(name, first + n - 1, line, reason);
                if changes == batch_size {
                    later.push(line);
                } else {
                    bad.push(line);
                }
            }
        });
        bad.append(&mut later);
        let n = bad.len() as u64;
        batches.push((
            changes as u64,
            n,
            (fold.finish)(acc, bad, first - 1 + lines),
        ));
        ((lines, data.len() as u64), batches)
    }
}

/// A line that could not be decoded, with its `<file> line N` origin.
fn quarantine(name: &str, number: u64, line: &[u8], reason: String) -> Quarantined {
    Quarantined {
        origin: format!("{name} line {number}"),
        reason,
        raw: String::from_utf8_lossy(line)
            .chars()
            .take(64 * 1024)
            .collect(),
    }
}

/// How [`read_projected_folded`] folds each batch.
struct Folder<'f, A, T> {
    start: &'f (dyn Fn(usize) -> A + Sync),
    push: &'f (dyn Fn(&mut A, &ChangeView<'_>) + Sync),
    finish: &'f (dyn Fn(A, Vec<Quarantined>, u64) -> T + Sync),
}

/// Delivers decoded chunks, in order, as batches of `batch_size` changes.
struct Collector<F> {
    batch_size: usize,
    positions: bool,
    callback: F,
    current: ProjectedBatch,
    summary: ReadSummary,
}

impl<F: FnMut(ProjectedBatch) -> bool> Collector<F> {
    /// Takes the next chunk; false when the callback asked to stop.
    fn accept(&mut self, chunk: Chunk) -> bool {
        let n = chunk.batch.changes.len();
        self.summary.read(chunk.lines, chunk.bytes);
        self.summary
            .delivered(0, chunk.batch.quarantined.len() as u64);
        if self.positions {
            return self.split(chunk);
        }
        if self.current.is_empty() && n == self.batch_size && chunk.bad_at.iter().all(|&at| at < n)
        {
            // A chunk that is a batch as it is.
            self.current = chunk.batch;
            return self.deliver();
        }
        let mut changes = chunk.batch.changes.into_iter();
        let mut bad = chunk
            .bad_at
            .into_iter()
            .zip(chunk.batch.quarantined)
            .peekable();
        let mut offset = 0;
        loop {
            let take = (self.batch_size - self.current.changes.len()).min(n - offset);
            let end = offset + take;
            let full = self.current.changes.len() + take >= self.batch_size;
            // A bad line goes where `read_batches` puts it: into the batch of the change after it.
            while let Some((_, line)) = bad.next_if(|(at, _)| *at < end || (*at == end && !full)) {
                self.current.quarantined.push(line);
            }
            if self.current.changes.capacity() == 0 {
                self.current
                    .changes
                    .reserve_exact(self.batch_size.min(1 << 16));
            }
            self.current.changes.extend(changes.by_ref().take(take));
            offset = end;
            if full && !self.deliver() {
                return false;
            }
            if offset == n && bad.peek().is_none() {
                break;
            }
        }
        true
    }

    /// Delivers a chunk as [`split`] cuts it.
    fn split(&mut self, chunk: Chunk) -> bool {
        for batch in split(chunk, self.batch_size) {
            self.current = batch;
            if !self.deliver() {
                return false;
            }
        }
        true
    }

    fn deliver(&mut self) -> bool {
        let batch = std::mem::take(&mut self.current);
        self.summary.changes += batch.changes.len() as u64;
        let go_on = (self.callback)(batch);
        self.summary.completed = go_on;
        go_on
    }

    fn finish(mut self) -> ReadSummary {
        self.summary.completed = self.current.is_empty() || self.deliver();
        self.summary
    }
}

/// A chunk (decoded with positions tracked) as batches of at most `batch_size` changes, each with
/// the lines up to its last change (the chunk's last one with the chunk's end), a bad line with
/// the change after it. A chunk of no changes is one empty batch: its lines still move the
/// position.
fn split(chunk: Chunk, batch_size: usize) -> Vec<ProjectedBatch> {
    let Chunk {
        batch,
        bad_at,
        end,
        lines,
        change_lines,
        ..
    } = chunk;
    let n = batch.changes.len();
    if n <= batch_size {
        // The chunk is one batch as it is.
        return vec![ProjectedBatch {
            changes: batch.changes,
            quarantined: batch.quarantined,
            lines: end,
        }];
    }
    let first = end - lines;
    let mut out = Vec::with_capacity(n.div_ceil(batch_size));
    let mut changes = batch.changes.into_iter();
    let mut bad = bad_at.into_iter().zip(batch.quarantined).peekable();
    let mut offset = 0;
    loop {
        let stop = (offset + batch_size).min(n);
        let last = stop == n;
        let mut current = ProjectedBatch {
            changes: changes.by_ref().take(stop - offset).collect(),
            ..ProjectedBatch::default()
        };
        while let Some((_, line)) = bad.next_if(|(at, _)| *at < stop || last) {
            current.quarantined.push(line);
        }
        current.lines = if last {
            end
        } else {
            first + u64::from(change_lines[stop - 1])
        };
        out.push(current);
        offset = stop;
        if last {
            return out;
        }
    }
}

/// A counting semaphore that can be closed.
struct Permits {
    state: Mutex<(usize, bool)>,
    ready: Condvar,
}

impl Permits {
    fn new(n: usize) -> Self {
        Permits {
            state: Mutex::new((n, false)),
            ready: Condvar::new(),
        }
    }

    /// Waits for a permit; false once closed.
    fn acquire(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.1 {
                return false;
            }
            if state.0 > 0 {
                state.0 -= 1;
                return true;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn release(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        self.ready.notify_one();
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.ready.notify_all();
    }
}

/// Reads, decodes and maps chunks (on `options.threads` threads, or on this one for 0) and hands
/// the results to `sink` in input order; false when `sink` asked to stop.
fn pipeline<T: Send>(
    path: &Path,
    projection: &CompiledProjection,
    options: ReadOptions,
    map: &(dyn Fn(RawChunk<'_>) -> T + Sync),
    mut sink: impl FnMut(T) -> bool,
) -> Result<bool, Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A resumed read of a segmented archive does not even open the segments it passes over.
    let (reader, passed) = super::open_at(path, options.time_range, options.skip_lines)?;
    let mut input = Input {
        reader,
        carry: Vec::new(),
        done: false,
        chunk_bytes: options.chunk_bytes.max(4096),
        path: path.display().to_string(),
        lines: passed,
    };
    input.skip(options.skip_lines)?;
    let threads = options.threads;
    if threads == 0 {
        let mut cache = DecodeCache::default();
        let (mut buf, mut ends) = (Vec::new(), Vec::new());
        while !input.done {
            let before = input.fill(&mut buf, &mut ends)?;
            if buf.is_empty() {
                continue;
            }
            let chunk = RawChunk {
                data: &buf,
                first: before + 1,
                name: &name,
                projection,
                cache: &mut cache,
                positions: options.positions,
                ends: &ends,
            };
            if !sink(map(chunk)) {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let permits = Permits::new(options.chunks_in_flight.max(threads));
    let stop = AtomicBool::new(false);
    let path = input.path.clone();
    let input = Mutex::new((input, 0u64));
    let (tx, rx) = mpsc::channel::<(u64, Result<T, Error>)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (permits, stop, input, path, name) = (&permits, &stop, &input, &path, &name);
            scope.spawn(move || {
                let mut cache = DecodeCache::default();
                let (mut buf, mut ends) = (Vec::new(), Vec::new());
                while permits.acquire() {
                    let (seq, read) = {
                        let mut guard = input.lock().unwrap_or_else(|e| e.into_inner());
                        let (input, next) = &mut *guard;
                        if input.done || stop.load(Ordering::Relaxed) {
                            permits.release();
                            break;
                        }
                        let read = input.fill(&mut buf, &mut ends);
                        if read.is_ok() && buf.is_empty() {
                            permits.release();
                            break;
                        }
                        *next += 1;
                        (*next - 1, read)
                    };
                    let result = read.and_then(|before| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            map(RawChunk {
                                data: &buf,
                                first: before + 1,
                                name,
                                projection,
                                cache: &mut cache,
                                positions: options.positions,
                                ends: &ends,
                            })
                        }))
                        .map_err(|panic| {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            Error::Archive {
                                path: path.clone(),
                                source: std::io::Error::other(format!("decoding panicked: {what}")),
                            }
                        })
                    });
                    if tx.send((seq, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let result = collect(&rx, &permits, &name, &mut sink);
        stop.store(true, Ordering::Relaxed);
        permits.close();
        result
    })
}

/// Puts results back in input order and hands them to `sink`; false when it stopped.
fn collect<T>(
    rx: &mpsc::Receiver<(u64, Result<T, Error>)>,
    permits: &Permits,
    name: &str,
    sink: &mut impl FnMut(T) -> bool,
) -> Result<bool, Error> {
    let mut pending: BTreeMap<u64, Result<T, Error>> = BTreeMap::new();
    let mut next = 0u64;
    for (seq, result) in rx {
        pending.insert(seq, result);
        while let Some(result) = pending.remove(&next) {
            next += 1;
            permits.release();
            if !sink(result?) {
                return Ok(false);
            }
        }
    }
    if pending.is_empty() {
        Ok(true)
    } else {
        Err(Error::Config(format!(
            "archive reader lost chunk {next} of {name}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::archive::read_batches;

    fn line(id: u32, time: i64) -> String {
        format!(
            r#"{{"eventID":"e{id}","eventName":"INSERT","dynamodb":{{"ApproximateCreationDateTime":{time},"Keys":{{"pk":{{"S":"k{id}"}}}},"NewImage":{{"pk":{{"S":"k{id}"}},"n":{{"N":"{id}"}},"pad":{{"S":"{}"}}}},"SequenceNumber":"{id}","SizeBytes":10}},"shardId":"s{}"}}"#,
            "x".repeat(id as usize % 50),
            id % 3
        )
    }

    /// An archive with good lines, bad ones, blank ones, CRLF ends, a very long line and no final
    /// line end.
    fn archive(path: &Path) {
        let mut f = std::fs::File::create(path).unwrap();
        for id in 0..3000u32 {
            match id % 97 {
                5 => writeln!(f, "{{not json {id}").unwrap(),
                6 => writeln!(f).unwrap(),
                7 => write!(f, "  \r\n").unwrap(),
                8 => write!(f, "{}\r\n", line(id, 1_700_000_000 + id as i64)).unwrap(),
                9 => writeln!(f, "{}", line(id, 1).replace("\"SequenceNumber\"", "\"X\"")).unwrap(),
                10 => writeln!(f, "{}", line(id, 1).replace("pad", &"p".repeat(20_000))).unwrap(),
                _ => writeln!(f, "{}", line(id, 1_700_000_000 + id as i64)).unwrap(),
            }
        }
        write!(f, "{}", line(3000, 1_700_000_000)).unwrap();
    }

    fn projection() -> CompiledProjection {
        CompiledProjection::new(&Projection::new(["n", "pk"]))
    }

    /// Batches: changes and quarantine origins.
    type Batches = Vec<(Vec<ProjectedChange>, Vec<String>)>;

    /// Batches as `read_batches` cuts them.
    fn reference(path: &Path, batch_size: usize) -> Batches {
        let p = projection();
        let mut out = Vec::new();
        read_batches(path, batch_size, |b| {
            out.push((
                b.events
                    .iter()
                    .map(|e| ProjectedChange::from_event(e, p.projection()))
                    .collect(),
                b.quarantined.iter().map(|q| q.origin.clone()).collect(),
            ));
            true
        })
        .unwrap();
        out
    }

    fn read(path: &Path, options: ReadOptions) -> (ReadSummary, Batches) {
        let mut out = Vec::new();
        let summary = read_projected_with(path, &projection(), options, |b| {
            out.push((
                b.changes,
                b.quarantined
                    .into_iter()
                    .map(|q| {
                        q.origin
                            .replace("a.gz", "a.ndjson")
                            .replace("a.zst", "a.ndjson")
                    })
                    .collect(),
            ));
            true
        })
        .unwrap();
        (summary, out)
    }

    #[test]
    fn batches_are_those_of_read_batches_whatever_the_threads_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ndjson");
        archive(&path);
        for batch_size in [1, 7, 1000, 100_000] {
            let expected = reference(&path, batch_size);
            for threads in [0, 1, 2, 3] {
                for chunk_bytes in [1, 10_000, 1 << 20] {
                    let options = ReadOptions {
                        batch_size,
                        threads,
                        chunk_bytes,
                        chunks_in_flight: threads + 1,
                        time_range: None,
                        skip_lines: 0,
                        positions: false,
                    };
                    let (summary, got) = read(&path, options);
                    assert!(got == expected, "{options:?}");
                    assert!(summary.completed);
                    assert_eq!(summary.lines, 3001);
                    assert_eq!(summary.quarantined, 2 * 31);
                    assert_eq!(summary.changes, 3001 - 4 * 31);
                    assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());
                }
            }
        }
    }

    #[test]
    fn compressed_archives_and_early_stops() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.ndjson");
        archive(&plain);
        let text = std::fs::read(&plain).unwrap();
        let gz = dir.path().join("a.gz");
        let mut enc =
            flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
        enc.write_all(&text).unwrap();
        enc.finish().unwrap();
        let zst = dir.path().join("a.zst");
        std::fs::write(&zst, zstd::encode_all(&text[..], 3).unwrap()).unwrap();
        let expected = read(
            &plain,
            ReadOptions {
                chunk_bytes: 5000,
                ..ReadOptions::default()
            },
        )
        .1;
        for path in [&gz, &zst] {
            for threads in [0, 2] {
                let options = ReadOptions {
                    threads,
                    chunk_bytes: 5000,
                    ..ReadOptions::default()
                };
                let got = read(path, options).1;
                assert!(got == expected);
                let mut calls = 0;
                let summary = read_projected_with(
                    path,
                    &projection(),
                    ReadOptions {
                        batch_size: 10,
                        ..options
                    },
                    |_| {
                        calls += 1;
                        calls < 3
                    },
                )
                .unwrap();
                assert_eq!(calls, 3);
                assert!(!summary.completed);
                assert_eq!(summary.changes, 30);
            }
        }
        // A damaged gzip stream is an error once the good part is delivered.
        let mut damaged = std::fs::read(&gz).unwrap();
        let n = damaged.len();
        damaged[n / 2..n / 2 + 64].fill(0xaa);
        std::fs::write(&gz, damaged).unwrap();
        for threads in [0, 2] {
            let options = ReadOptions {
                threads,
                chunk_bytes: 5000,
                ..ReadOptions::default()
            };
            assert!(read_projected_with(&gz, &projection(), options, |_| true).is_err());
        }
    }

    #[test]
    fn mapped_chunks_arrive_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ndjson");
        archive(&path);
        let expected: Vec<_> = reference(&path, 100_000).into_iter().next().unwrap().0;
        let bad: Vec<String> = reference(&path, 100_000).into_iter().next().unwrap().1;
        for threads in [0, 2] {
            let options = ReadOptions {
                threads,
                chunk_bytes: 20_000,
                ..ReadOptions::default()
            };
            let mut got = Vec::new();
            let mut origins = Vec::new();
            let summary = read_projected_map(
                &path,
                &projection(),
                options,
                |batch| {
                    let seqs: Vec<compact_str::CompactString> = batch
                        .changes
                        .iter()
                        .map(|c| c.sequence_number.clone())
                        .collect();
                    let origins: Vec<String> =
                        batch.quarantined.into_iter().map(|q| q.origin).collect();
                    (seqs, origins)
                },
                |(seqs, bad)| {
                    got.extend(seqs);
                    origins.extend(bad);
                    true
                },
            )
            .unwrap();
            let want: Vec<compact_str::CompactString> =
                expected.iter().map(|c| c.sequence_number.clone()).collect();
            assert_eq!(got, want);
            assert_eq!(origins, bad);
            assert!(summary.completed);
            assert_eq!(summary.changes, want.len() as u64);
            assert_eq!(summary.lines, 3001);
            let mut calls = 0;
            let stopped = read_projected_map(
                &path,
                &projection(),
                options,
                |b| b.changes.len(),
                |_| {
                    calls += 1;
                    calls < 2
                },
            )
            .unwrap();
            assert!(!stopped.completed);
            assert_eq!(calls, 2);
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.ndjson");
        let mut bytes = format!("{}\n", line(1, 1)).into_bytes();
        bytes.extend_from_slice(b"{\"eventID\":\"\xff\"}\n");
        bytes.extend_from_slice(format!("{}\n", line(2, 2)).as_bytes());
        std::fs::write(&path, bytes).unwrap();
        let mut quarantined = Vec::new();
        let summary = read_projected(&path, &Projection::new(["n"]), 10, |b| {
            quarantined.extend(b.quarantined);
            true
        })
        .unwrap();
        assert_eq!(summary.changes, 2);
        assert_eq!(quarantined.len(), 1);
        assert_eq!(quarantined[0].origin, "b.ndjson line 2");
        assert!(
            quarantined[0].reason.contains("UTF-8"),
            "{}",
            quarantined[0].reason
        );
    }

    /// What a read from a position gives: the ids of its changes, the origins of its bad lines,
    /// and each batch's position with the changes delivered up to it.
    type Read = (Vec<String>, Vec<String>, Vec<(u64, usize)>);

    /// What a read from a position gives ([`Read`]).
    fn read_from(path: &Path, options: ReadOptions) -> Read {
        let (mut ids, mut bad, mut positions) = (Vec::new(), Vec::new(), Vec::new());
        read_projected_with(path, &projection(), options, |b| {
            assert!(b.changes.len() <= options.batch_size);
            ids.extend(b.changes.iter().map(|c| c.sequence_number.to_string()));
            bad.extend(b.quarantined.into_iter().map(|q| q.origin));
            positions.push((b.lines, ids.len()));
            true
        })
        .unwrap();
        (ids, bad, positions)
    }

    /// What the callback of [`read_reduced`] or [`read_folded`] collects, batch by batch.
    #[derive(Default)]
    struct Collected {
        changes: Vec<ProjectedChange>,
        bad: Vec<String>,
        positions: Vec<(u64, usize)>,
    }

    /// A batch's changes, the origins of its bad lines, and its position.
    type Collect = (Vec<ProjectedChange>, Vec<String>, u64);

    impl Collected {
        fn batch(&mut self, (changes, bad, lines): Collect) -> bool {
            self.changes.extend(changes);
            self.bad.extend(bad);
            self.positions.push((lines, self.changes.len()));
            true
        }

        /// What [`read_from`] gives, and the changes.
        fn read(self, summary: ReadSummary) -> (Read, Vec<ProjectedChange>) {
            assert!(summary.completed);
            assert_eq!(summary.changes as usize, self.changes.len());
            assert_eq!(summary.quarantined as usize, self.bad.len());
            let ids = self
                .changes
                .iter()
                .map(|c| c.sequence_number.to_string())
                .collect();
            ((ids, self.bad, self.positions), self.changes)
        }
    }

    /// Panics unless on a decoding thread (when there are any).
    fn on_decoding_thread(options: ReadOptions, caller: std::thread::ThreadId) {
        if options.threads > 0 {
            assert_ne!(std::thread::current().id(), caller);
        }
    }

    /// [`read_from`] through [`read_projected_reduced`], each batch reduced on its decoding
    /// thread to what `read_from` keeps of it.
    fn read_reduced(path: &Path, options: ReadOptions) -> Read {
        let mut out = Collected::default();
        let caller = std::thread::current().id();
        let summary = read_projected_reduced(
            path,
            &projection(),
            options,
            |b| {
                assert!(b.changes.len() <= options.batch_size);
                on_decoding_thread(options, caller);
                let bad: Vec<String> = b.quarantined.into_iter().map(|q| q.origin).collect();
                (b.changes, bad, b.lines)
            },
            |batch| out.batch(batch),
        )
        .unwrap();
        out.read(summary).0
    }

    /// [`read_from`] through [`read_projected_folded`], each change folded in as a view of its
    /// line on its decoding thread; also the changes themselves, made owned again.
    fn read_folded(path: &Path, options: ReadOptions) -> (Read, Vec<ProjectedChange>) {
        let mut out = Collected::default();
        let caller = std::thread::current().id();
        let summary = read_projected_folded(
            path,
            &projection(),
            options,
            |_| Vec::new(),
            |batch: &mut Vec<ProjectedChange>, view| {
                on_decoding_thread(options, caller);
                batch.push(view.to_change());
            },
            |batch, quarantined, lines| {
                assert!(batch.len() <= options.batch_size);
                let bad: Vec<String> = quarantined.into_iter().map(|q| q.origin).collect();
                (batch, bad, lines)
            },
            |batch| out.batch(batch),
        )
        .unwrap();
        out.read(summary)
    }

    /// Every batch's position, resumed from, gives exactly the rest of the read: no change and
    /// no bad line twice or never, on both read paths, plain and gzip. Batches reduced on the
    /// decoding threads are the same batches.
    #[test]
    fn a_read_resumed_at_any_batch_position_gives_exactly_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ndjson");
        archive(&path);
        let gz = dir.path().join("a.gz");
        let mut encoder =
            flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
        encoder.write_all(&std::fs::read(&path).unwrap()).unwrap();
        encoder.finish().unwrap();
        for file in [&path, &gz] {
            for (threads, chunk_bytes, batch_size) in
                [(0, 10_000, 7), (2, 30_000, 100), (3, 1 << 20, 4096)]
            {
                let options = ReadOptions {
                    batch_size,
                    threads,
                    chunk_bytes,
                    positions: true,
                    ..ReadOptions::default()
                };
                let (ids, bad, positions) = read_from(file, options);
                assert_eq!(
                    read_reduced(file, options),
                    (ids.clone(), bad.clone(), positions.clone())
                );
                let (folded, changes) = read_folded(file, options);
                assert_eq!(folded, (ids.clone(), bad.clone(), positions.clone()));
                let mut whole = Vec::new();
                read_projected_with(file, &projection(), options, |b| {
                    whole.extend(b.changes);
                    true
                })
                .unwrap();
                assert_eq!(changes, whole);
                assert_eq!(ids.len() + bad.len(), 3001 - 2 * 31, "{file:?}");
                assert_eq!(positions.last().map(|p| p.0), Some(3001));
                assert!(positions.windows(2).all(|w| w[0].0 <= w[1].0));
                let step = (positions.len() / 10).max(1);
                for &(at, done) in positions.iter().step_by(step).chain(positions.last()) {
                    let (rest_ids, rest_bad, _) = read_from(
                        file,
                        ReadOptions {
                            skip_lines: at,
                            ..options
                        },
                    );
                    assert_eq!(rest_ids, ids[done..], "resumed at line {at}");
                    let resumed = ReadOptions {
                        skip_lines: at,
                        ..options
                    };
                    assert_eq!(read_reduced(file, resumed).0, rest_ids);
                    assert_eq!(read_folded(file, resumed).0 .0, rest_ids);
                    assert!(bad.ends_with(&rest_bad), "resumed at line {at}");
                    // The whole-record path cuts its own batches; the same lines are its rest.
                    let mut whole = Vec::new();
                    crate::archive::read_batches_at(file, None, at, 5, |b, lines| {
                        assert!(lines >= at);
                        whole.extend(b.events.iter().map(|e| e.sequence_number.to_string()));
                        true
                    })
                    .unwrap();
                    assert_eq!(whole, rest_ids, "whole records resumed at line {at}");
                }
            }
        }
        let too_far = ReadOptions {
            skip_lines: 3002,
            ..ReadOptions::default()
        };
        let err = read_projected_with(&path, &projection(), too_far, |_| true).unwrap_err();
        assert!(err.to_string().contains("ends after 3001 lines"), "{err}");
    }
}
