//! The fast archive decoder: one Streams record line straight to a [`ProjectedChange`].
//!
//! [`decode_line`](super::decode_line) builds a whole [`StreamRecord`](streamlens_core::StreamRecord)
//! with serde: every attribute of every image becomes a `String` in a `BTreeMap`, only for the
//! window engine to read four of them. [`decode_projected`] instead walks the line once with a
//! hand-written scanner, keeps only what a [`ProjectedChange`] holds (the event name, the creation
//! time, the sequence number, the shard, the TTL identity and the projected attribute paths of
//! both images) and skips the rest without allocating.
//!
//! # Exactly the serde semantics
//!
//! The result must be the one `ProjectedChange::from_event(&decode_line(line)?, projection)` gives,
//! and a line `decode_line` rejects must be rejected. The scanner therefore *validates* everything
//! the serde decoder validates (JSON syntax of the whole line, skipped values included; the type of
//! every known field; duplicate fields; the shape of every attribute value in `Keys`, `OldImage`
//! and `NewImage`, projected or not, base64 of binaries included) and it only ever *accepts* lines
//! in the common shape: compact or space-separated objects, known fields written plainly. On
//! anything else (a control character or tab anywhere, an escaped field name, a struct written as
//! a JSON array, a fractional or huge number where a time is, deep nesting, any error) the fast
//! path gives up and the line goes through `decode_line` itself, so unusual lines get the exact
//! serde answer and bad lines get serde's error message as their quarantine reason. Projected
//! values of the compound types (`B`, `M`, `L`, `SS`, `NS`, `BS`) are rebuilt with serde from the
//! value's own text, so their label is the serde label by construction.
//!
//! # Line shapes
//!
//! Most lines of an archive repeat the text of a recent line around different values. A
//! [`DecodeCache`] (one per decoding thread) keeps the shape of recently scanned lines; a line
//! that fits one is decoded by checking and reading its values alone, which is about twice as
//! fast as scanning it. The scan stays the reference: a shape is only learned from a line the
//! scan accepted, and a line that does not fit goes through the scan.

mod shape;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use compact_str::CompactString;
pub(crate) use streamlens_core::bytes::same;

use shape::OwnedImages;
pub use shape::{DecodeCache, LineImages};
use streamlens_core::{
    event::parse_iso8601_ms,
    projection::{ChangeView, ImageView, ProjectedChange, Projection, Scalar, ScalarKind},
    AttributeValue, EventKind,
};

/// A [`Projection`] prepared for the scanner: its paths as a tree of attribute names.
#[derive(Debug, Clone)]
pub struct CompiledProjection {
    projection: Projection,
    root: Node,
    /// Tells compiled projections apart (a clone keeps it): the shapes a [`DecodeCache`] learned
    /// hold the slots of one projection.
    id: u64,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// The slot of the path ending here.
    slot: Option<usize>,
    /// Nested map keys (`a.b`: `b` under `a`).
    children: Vec<(Box<[u8]>, Node)>,
    /// Every slot of this node and below, cleared when the attribute is met again.
    subtree: Vec<usize>,
}

impl Node {
    fn child(&self, name: &[u8]) -> Option<&Node> {
        self.children
            .iter()
            .find(|(n, _)| same(n, name))
            .map(|(_, node)| node)
    }

    fn fill_subtree(&mut self) -> Vec<usize> {
        let mut all: Vec<usize> = self.slot.into_iter().collect();
        for (_, child) in &mut self.children {
            all.extend(child.fill_subtree());
        }
        self.subtree = all.clone();
        all
    }
}

impl CompiledProjection {
    /// Prepares a projection.
    pub fn new(projection: &Projection) -> Self {
        let mut root = Node::default();
        for (slot, path) in projection.paths.iter().enumerate() {
            let mut node = &mut root;
            for part in path.split('.') {
                let at = match node
                    .children
                    .iter()
                    .position(|(n, _)| **n == *part.as_bytes())
                {
                    Some(at) => at,
                    None => {
                        node.children
                            .push((part.as_bytes().into(), Node::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at].1;
            }
            node.slot = Some(slot);
        }
        root.fill_subtree();
        static IDS: AtomicU64 = AtomicU64::new(1);
        CompiledProjection {
            projection: projection.clone(),
            root,
            id: IDS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The projection.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    fn slots(&self) -> usize {
        self.projection.paths.len()
    }

    /// An image with no value in any slot: one allocation, each slot written once.
    fn empty_image(&self) -> Box<[Option<Scalar>]> {
        std::iter::repeat_with(|| None).take(self.slots()).collect()
    }
}

/// A member name of a struct the scanner knows, as written compactly (`"name":`), with the
/// first (up to) eight bytes of the name as a word and the mask of those bytes: most names are
/// told apart by that one word compare, without scanning the name as a string.
struct Field {
    written: &'static [u8],
    head: u64,
    mask: u64,
}

const fn field(written: &'static [u8]) -> Field {
    let (mut head, mut mask, mut k) = (0u64, 0u64, 0);
    while k < 8 && k + 1 < written.len() {
        head |= (written[k + 1] as u64) << (8 * k);
        mask |= 0xff << (8 * k);
        k += 1;
    }
    Field {
        written,
        head,
        mask,
    }
}

/// A table of the fields of a struct, and a constant for each field's index in it.
macro_rules! fields {
    ($(#[$doc:meta])* $table:ident: $($name:ident = $text:literal),+ $(,)?) => {
        $(#[$doc])*
        const $table: &[Field] = &[$(field(concat!("\"", $text, "\":").as_bytes())),+];
        fields!(@index 0usize; $($name),+);
    };
    (@index $n:expr; $first:ident $(, $rest:ident)*) => {
        const $first: usize = $n;
        fields!(@index $n + 1usize; $($rest),*);
    };
    (@index $n:expr;) => {};
}

fields!(
    /// The fields of a record.
    RECORD_FIELDS:
    EVENT_ID = "eventID",
    EVENT_NAME = "eventName",
    EVENT_VERSION = "eventVersion",
    EVENT_SOURCE = "eventSource",
    AWS_REGION = "awsRegion",
    DYNAMODB = "dynamodb",
    USER_IDENTITY = "userIdentity",
    SHARD_ID = "shardId",
);

fields!(
    /// The fields of the `dynamodb` object.
    BODY_FIELDS:
    CREATION_TIME = "ApproximateCreationDateTime",
    KEYS = "Keys",
    NEW_IMAGE = "NewImage",
    OLD_IMAGE = "OldImage",
    SEQUENCE_NUMBER = "SequenceNumber",
    SIZE_BYTES = "SizeBytes",
    STREAM_VIEW_TYPE = "StreamViewType",
);

/// Shares one `Arc<str>` between the changes of a shard.
#[derive(Debug, Default, Clone)]
pub(crate) struct ShardInterner {
    recent: Vec<Arc<str>>,
    all: HashSet<Arc<str>>,
}

impl ShardInterner {
    const RECENT: usize = 8;

    /// The shared id.
    pub fn intern(&mut self, id: &str) -> Arc<str> {
        if let Some(at) = self
            .recent
            .iter()
            .position(|s| same(s.as_bytes(), id.as_bytes()))
        {
            return self.recent[at].clone();
        }
        let shared = match self.all.get(id) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = id.into();
                self.all.insert(shared.clone());
                shared
            }
        };
        if self.recent.len() == Self::RECENT {
            self.recent.remove(0);
        }
        self.recent.push(shared.clone());
        shared
    }
}

/// Decodes one archive line into the change it projects to.
///
/// The same as `ProjectedChange::from_event(&decode_line(line)?, projection.projection())` (with
/// the shard id interned), only much faster for well-formed lines. `Err` carries the reason the
/// line is quarantined with: serde's own, as `decode_line` gives it, or that the line is not
/// UTF-8.
pub fn decode_projected(
    line: &[u8],
    projection: &CompiledProjection,
    cache: &mut DecodeCache,
) -> Result<ProjectedChange, String> {
    if let Some(change) = decode_projected_fast(line, projection, cache) {
        return Ok(change);
    }
    decode_projected_exact(line, projection, cache)
}

/// The serde path of [`decode_projected`]: `decode_line` and `ProjectedChange::from_event`.
pub fn decode_projected_exact(
    line: &[u8],
    projection: &CompiledProjection,
    cache: &mut DecodeCache,
) -> Result<ProjectedChange, String> {
    let text =
        std::str::from_utf8(line).map_err(|e| format!("the line is not valid UTF-8: {e}"))?;
    // A line that makes the serde path panic is quarantined, not fatal to the whole read.
    let event = std::panic::catch_unwind(|| super::decode_line(text, String::new))
        .map_err(|_| "the record decoder panicked on this line".to_owned())?
        .map_err(|q| q.reason)?;
    let mut change = ProjectedChange::from_event(&event, &projection.projection);
    change.shard_id = cache.intern(&event.shard_id);
    Ok(change)
}

/// The fast path of [`decode_projected`] alone: `None` when the line is not in the common shape
/// or is invalid, and must go through the serde decoder. A line that fits the shape of one
/// decoded before is decoded through that shape (the `shape` module); the others are scanned in full,
/// and their shape is learned.
pub fn decode_projected_fast(
    line: &[u8],
    projection: &CompiledProjection,
    cache: &mut DecodeCache,
) -> Option<ProjectedChange> {
    let text = simdutf8::basic::from_utf8(line).ok()?;
    let mut images = OwnedImages {
        projection,
        new: None,
        old: None,
    };
    let (fitted, trace) = cache.fit(text, projection, &mut images);
    if let Some(fitted) = fitted {
        let (kind, ttl_delete) = cache.fitted_kind();
        return Some(ProjectedChange {
            kind: kind.clone(),
            event_time_ms: fitted.time,
            sequence_number: shape::compact(fitted.sequence),
            shard_id: cache.fitted_shard(&fitted.shard),
            old: images
                .old
                .or_else(|| fitted.old.then(|| projection.empty_image())),
            new: images
                .new
                .or_else(|| fitted.new.then(|| projection.empty_image())),
            ttl_delete,
        });
    }
    scan_and_learn(line, text, projection, cache, trace)
}

/// The full scan of a line, learning its shape when `trace` is given.
fn scan_and_learn(
    line: &[u8],
    text: &str,
    projection: &CompiledProjection,
    cache: &mut DecodeCache,
    trace: Option<shape::Trace>,
) -> Option<ProjectedChange> {
    let mut scanner = Scanner {
        s: text,
        b: line,
        i: 0,
        depth: 0,
        trace,
    };
    let change = scanner.record(projection, &mut cache.shards).ok()?;
    if let Some(trace) = scanner.trace.take() {
        cache.learn(line, trace, &change);
    }
    Some(change)
}

/// Decodes one line for a consumer that takes the change at once, as a view: `consume` gets
/// the [`decode_projected`] change of the line, or its error. A line that fits a learned shape
/// is not made into a [`ProjectedChange`] at all: the view borrows its values from the line
/// (through `images`, reused from line to line), and nothing is allocated.
pub fn decode_view<'a, T>(
    line: &'a [u8],
    projection: &CompiledProjection,
    cache: &mut DecodeCache,
    images: &mut LineImages<'a>,
    consume: impl FnOnce(&ChangeView<'_>) -> T,
) -> Result<T, String> {
    match simdutf8::basic::from_utf8(line) {
        Ok(text) => decode_view_text(text, projection, cache, images, consume),
        Err(_) => Ok(consume(
            &decode_projected_exact(line, projection, cache)?.view(),
        )),
    }
}

/// [`decode_view`] of a line already known to be UTF-8 (a reader that checked a whole chunk at
/// once need not check each line again).
pub fn decode_view_text<'a, T>(
    line: &'a str,
    projection: &CompiledProjection,
    cache: &mut DecodeCache,
    images: &mut LineImages<'a>,
    consume: impl FnOnce(&ChangeView<'_>) -> T,
) -> Result<T, String> {
    images.prepare(projection.slots());
    let (fitted, trace) = cache.fit(line, projection, images);
    if let Some(fitted) = fitted {
        let (kind, ttl_delete) = cache.fitted_kind();
        let (new, old) = images.images();
        return Ok(consume(&ChangeView {
            kind,
            event_time_ms: fitted.time,
            sequence_number: &fitted.sequence,
            shard_id: &fitted.shard,
            old: fitted.old.then_some(ImageView::Line(old)),
            new: fitted.new.then_some(ImageView::Line(new)),
            ttl_delete,
        }));
    }
    let bytes = line.as_bytes();
    let change = match scan_and_learn(bytes, line, projection, cache, trace) {
        Some(change) => change,
        None => decode_projected_exact(bytes, projection, cache)?,
    };
    Ok(consume(&change.view()))
}

/// [`decode_projected_fast`] without shapes: every line scanned in full (for tests and
/// benchmarks).
pub fn decode_projected_scan(
    line: &[u8],
    projection: &CompiledProjection,
    cache: &mut DecodeCache,
) -> Option<ProjectedChange> {
    let text = simdutf8::basic::from_utf8(line).ok()?;
    let mut scanner = Scanner {
        s: text,
        b: line,
        i: 0,
        depth: 0,
        trace: None,
    };
    scanner.record(projection, &mut cache.shards).ok()
}

/// Give up: the line needs the serde decoder.
#[derive(Debug)]
struct Bail;

type R<T> = Result<T, Bail>;

/// Beyond this nesting the fast path gives up (serde_json stops at 128).
const MAX_DEPTH: u32 = 100;

/// A JSON string as written between its quotes.
#[derive(Clone, Copy)]
struct Str<'a> {
    raw: &'a str,
    escaped: bool,
}

impl<'a> Str<'a> {
    fn bytes(self) -> &'a [u8] {
        self.raw.as_bytes()
    }

    /// The unescaped text (the scanner has checked the escapes).
    #[inline(always)]
    fn text(self) -> R<std::borrow::Cow<'a, str>> {
        if !self.escaped {
            return Ok(std::borrow::Cow::Borrowed(self.raw));
        }
        unescape(self.raw).map(std::borrow::Cow::Owned)
    }

    #[inline(always)]
    fn compact(self) -> R<CompactString> {
        if !self.escaped {
            return Ok(CompactString::new(self.raw));
        }
        Ok(match self.text()? {
            std::borrow::Cow::Borrowed(s) => CompactString::new(s),
            std::borrow::Cow::Owned(s) => CompactString::from(s),
        })
    }
}

fn hex4(b: &[u8]) -> R<u16> {
    let mut n = 0u16;
    for &c in b.get(..4).ok_or(Bail)? {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(Bail),
        };
        n = n << 4 | d as u16;
    }
    Ok(n)
}

fn unescape(text: &str) -> R<String> {
    let raw = text.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let start = i;
        while i < raw.len() && raw[i] != b'\\' {
            i += 1;
        }
        out.push_str(text.get(start..i).ok_or(Bail)?);
        if i == raw.len() {
            break;
        }
        let c = *raw.get(i + 1).ok_or(Bail)?;
        i += 2;
        match c {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\x08'),
            b'f' => out.push('\x0c'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let n = hex4(&raw[i..])?;
                i += 4;
                let code = match n {
                    0xD800..=0xDBFF => {
                        if raw.get(i..i + 2) != Some(b"\\u") {
                            return Err(Bail);
                        }
                        let low = hex4(&raw[i + 2..])?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Bail);
                        }
                        i += 6;
                        0x1_0000 + (((n as u32) - 0xD800) << 10 | ((low as u32) - 0xDC00))
                    }
                    0xDC00..=0xDFFF => return Err(Bail),
                    n => n as u32,
                };
                out.push(char::from_u32(code).ok_or(Bail)?);
            }
            _ => return Err(Bail),
        }
    }
    Ok(out)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Bytes of `word` that are zero get their high bit set (the lowest one exactly; higher ones may
/// be false positives, so only the lowest is used).
#[inline(always)]
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// The number of ASCII digits `text` starts with, eight bytes at a time.
#[inline(always)]
pub(crate) fn digit_run(text: &[u8]) -> usize {
    let mut n = 0;
    while let Some(word) = text.get(n..n + 8) {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        // Per byte, without carries between bytes: non-zero when its high nibble is not 3, or
        // when its low nibble is above 9.
        let other = ((word & 0xf0f0_f0f0_f0f0_f0f0) ^ 0x3030_3030_3030_3030)
            | (((word & 0x0f0f_0f0f_0f0f_0f0f) + 0x0606_0606_0606_0606) & 0xf0f0_f0f0_f0f0_f0f0);
        if other != 0 {
            // The lowest non-zero byte is the first that is not a digit.
            return n + (other.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + text[n..].iter().take_while(|c| c.is_ascii_digit()).count()
}

struct Scanner<'a> {
    /// The line, and the same as bytes.
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
    /// While learning a line's shape: its holes so far.
    trace: Option<shape::Trace>,
}

/// The DynamoDB type of an attribute value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Type {
    S,
    N,
    B,
    Bool,
    Null,
    M,
    L,
    Ss,
    Ns,
    Bs,
}

impl<'a> Scanner<'a> {
    #[inline(always)]
    fn peek(&self) -> u8 {
        self.b.get(self.i).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn ws(&mut self) {
        while self.peek() == b' ' {
            self.i += 1;
        }
    }

    /// Skips spaces and returns the next byte.
    #[inline(always)]
    fn next_token(&mut self) -> u8 {
        self.ws();
        self.peek()
    }

    #[inline(always)]
    fn eat(&mut self, c: u8) -> R<()> {
        self.ws();
        if self.peek() == c {
            self.i += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Bail);
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// A string, at its opening quote (after spaces).
    #[inline(always)]
    fn string(&mut self) -> R<Str<'a>> {
        self.ws();
        if self.peek() != b'"' {
            return Err(Bail);
        }
        self.i += 1;
        let s = self.string_body()?;
        if let Some(trace) = &mut self.trace {
            trace.hole(
                self.i - 1 - s.raw.len(),
                self.i,
                shape::Hole::Str(shape::Role::None),
            );
        }
        Ok(s)
    }

    /// The rest of a string after its opening quote, to its closing quote (consumed).
    #[inline(always)]
    fn string_body(&mut self) -> R<Str<'a>> {
        let start = self.i;
        let mut escaped = false;
        loop {
            // Eight bytes at a time to the next quote, backslash or control character (which
            // JSON does not allow in strings).
            let pos = loop {
                if let Some(word) = self.b.get(self.i..self.i + 8) {
                    let word = u64::from_le_bytes(word.try_into().map_err(|_| Bail)?);
                    let hits = zero_bytes(word ^ (ONES * b'"' as u64))
                        | zero_bytes(word ^ (ONES * b'\\' as u64))
                        | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS);
                    if hits != 0 {
                        break self.i + (hits.trailing_zeros() / 8) as usize;
                    }
                    self.i += 8;
                } else {
                    let rest = &self.b[self.i..];
                    match rest
                        .iter()
                        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                    {
                        Some(at) => break self.i + at,
                        None => return Err(Bail),
                    }
                }
            };
            match self.b[pos] {
                b'"' => {
                    self.i = pos + 1;
                    return Ok(Str {
                        raw: self.s.get(start..pos).ok_or(Bail)?,
                        escaped,
                    });
                }
                b'\\' => {}
                _ => return Err(Bail),
            }
            escaped = true;
            self.i = pos + 1;
            match self.peek() {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                b'u' => {
                    let n = hex4(self.b.get(self.i + 1..).ok_or(Bail)?)?;
                    self.i += 5;
                    match n {
                        // A surrogate pair must follow as a whole; lone halves are for serde.
                        0xD800..=0xDBFF => {
                            if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                return Err(Bail);
                            }
                            let low = hex4(self.b.get(self.i + 2..).ok_or(Bail)?)?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return Err(Bail);
                            }
                            self.i += 6;
                        }
                        0xDC00..=0xDFFF => return Err(Bail),
                        _ => {}
                    }
                }
                _ => return Err(Bail),
            }
        }
    }

    /// A number (JSON grammar), after spaces; its text.
    fn number(&mut self) -> R<&'a [u8]> {
        let number = self.number_text()?;
        if let Some(trace) = &mut self.trace {
            trace.hole(
                self.i - number.len(),
                self.i,
                shape::Hole::Num(shape::Role::None),
            );
        }
        Ok(number)
    }

    /// [`Self::number`] without tracing.
    fn number_text(&mut self) -> R<&'a [u8]> {
        self.ws();
        let start = self.i;
        // The common case first: a whole number without a sign, exponent or leading zero.
        let rest = &self.b[start..];
        let digits = digit_run(rest);
        if digits > 0
            && (digits == 1 || rest[0] != b'0')
            && !matches!(rest.get(digits), Some(b'.' | b'e' | b'E'))
        {
            self.i += digits;
            return Ok(&rest[..digits]);
        }
        if self.peek() == b'-' {
            self.i += 1;
        }
        match self.peek() {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while self.peek().is_ascii_digit() {
                    self.i += 1;
                }
            }
            _ => return Err(Bail),
        }
        if self.peek() == b'.' {
            self.i += 1;
            if !self.peek().is_ascii_digit() {
                return Err(Bail);
            }
            while self.peek().is_ascii_digit() {
                self.i += 1;
            }
        }
        if matches!(self.peek(), b'e' | b'E') {
            self.i += 1;
            if matches!(self.peek(), b'+' | b'-') {
                self.i += 1;
            }
            if !self.peek().is_ascii_digit() {
                return Err(Bail);
            }
            while self.peek().is_ascii_digit() {
                self.i += 1;
            }
        }
        Ok(&self.b[start..self.i])
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// `true` or `false`.
    fn boolean(&mut self) -> R<bool> {
        match self.next_token() {
            b't' => self.literal(b"true").map(|_| true),
            b'f' => self.literal(b"false").map(|_| false),
            _ => Err(Bail),
        }
    }

    /// `null` (true) or nothing consumed (false).
    fn null(&mut self) -> R<bool> {
        if self.next_token() == b'n' {
            self.literal(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// After a member or element: true when another follows (`,`), false at `close` (`}` or
    /// `]`, consumed).
    #[inline(always)]
    fn more(&mut self, close: u8) -> R<bool> {
        match self.next_token() {
            b',' => {
                self.i += 1;
                Ok(true)
            }
            c if c == close => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(Bail),
        }
    }

    /// `{`, and true when the object has members.
    fn open_object(&mut self) -> R<bool> {
        self.eat(b'{')?;
        self.enter()?;
        if self.next_token() == b'}' {
            self.i += 1;
            self.leave();
            return Ok(false);
        }
        Ok(true)
    }

    /// `[`, and true when the array has elements.
    fn open_array(&mut self) -> R<bool> {
        self.eat(b'[')?;
        self.enter()?;
        if self.next_token() == b']' {
            self.i += 1;
            self.leave();
            return Ok(false);
        }
        Ok(true)
    }

    /// A member name and its colon.
    #[inline(always)]
    fn key(&mut self) -> R<Str<'a>> {
        let key = self.string()?;
        self.fixed();
        self.eat(b':')?;
        Ok(key)
    }

    /// A member name that must be written plainly (struct fields: escaped names are left to
    /// serde).
    #[inline(always)]
    fn plain_key(&mut self) -> R<&'a [u8]> {
        let key = self.key()?;
        if key.escaped {
            return Err(Bail);
        }
        Ok(key.bytes())
    }

    /// The next member name of a struct with the known `fields`, and its colon: the index of a
    /// known field, or `None` for another name (whose value the caller skips).
    #[inline(always)]
    fn field(&mut self, fields: &[Field]) -> R<Option<usize>> {
        self.ws();
        // The compact spelling: one word compare finds the candidate, one more checks it whole.
        if let Some(word) = self.b.get(self.i + 1..self.i + 9) {
            let word = u64::from_le_bytes(word.try_into().map_err(|_| Bail)?);
            if let Some(k) = fields.iter().position(|f| word & f.mask == f.head) {
                let written = fields[k].written;
                if self
                    .b
                    .get(self.i..self.i + written.len())
                    .is_some_and(|s| same(s, written))
                {
                    self.i += written.len();
                    return Ok(Some(k));
                }
            }
        }
        let key = self.plain_key()?;
        Ok(fields
            .iter()
            .position(|f| same(&f.written[1..f.written.len() - 2], key)))
    }

    /// The value just read is part of the line's shape, not a hole (names, event names, the
    /// stream view type: text that repeats from line to line).
    #[inline(always)]
    fn fixed(&mut self) {
        if let Some(trace) = &mut self.trace {
            trace.holes.pop();
        }
    }

    /// What the value just read is for.
    #[inline(always)]
    fn role(&mut self, role: shape::Role) {
        if let Some(trace) = &mut self.trace {
            trace.role(role);
        }
    }

    /// The line cannot serve as a shape.
    fn unlearnable(&mut self) {
        if let Some(trace) = &mut self.trace {
            trace.learnable = false;
        }
    }

    /// Any JSON value, validated and skipped.
    fn skip_value(&mut self) -> R<()> {
        match self.next_token() {
            b'"' => self.string().map(|_| ()),
            b'{' => {
                if self.open_object()? {
                    loop {
                        self.key()?;
                        self.skip_value()?;
                        if !self.more(b'}')? {
                            break;
                        }
                    }
                    self.leave();
                }
                Ok(())
            }
            b'[' => {
                if self.open_array()? {
                    loop {
                        self.skip_value()?;
                        if !self.more(b']')? {
                            break;
                        }
                    }
                    self.leave();
                }
                Ok(())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(|_| ()),
        }
    }

    /// `null` or a string that is part of the line's shape.
    fn fixed_optional_string(&mut self) -> R<()> {
        if self.optional_string()?.is_some() {
            self.fixed();
        }
        Ok(())
    }

    /// `null` or a string.
    fn optional_string(&mut self) -> R<Option<Str<'a>>> {
        if self.null()? {
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// A base64 binary as the serde decoder accepts it (standard alphabet, canonical padding).
    fn binary(&mut self) -> R<()> {
        let s = self.string()?;
        self.role(shape::Role::Base64);
        let text = s.text()?;
        if valid_base64(text.as_bytes()) {
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// An array of strings (`SS`, `NS`) or of binaries (`BS`).
    fn string_list(&mut self, binary: bool) -> R<()> {
        if self.open_array()? {
            loop {
                if binary {
                    self.binary()?;
                } else {
                    self.string()?;
                }
                if !self.more(b']')? {
                    break;
                }
            }
            self.leave();
        }
        Ok(())
    }

    /// The type descriptor of an attribute value, after its `{`.
    #[inline(always)]
    fn type_key(&mut self) -> R<Type> {
        // The compact spellings directly.
        let rest = &self.b[self.i..];
        let (ty, len) = match rest {
            [b'"', b'S', b'"', b':', ..] => (Type::S, 4),
            [b'"', b'N', b'"', b':', ..] => (Type::N, 4),
            [b'"', b'M', b'"', b':', ..] => (Type::M, 4),
            [b'"', b'L', b'"', b':', ..] => (Type::L, 4),
            _ => {
                let key = self.plain_key()?;
                let ty = match key {
                    b"S" => Type::S,
                    b"N" => Type::N,
                    b"B" => Type::B,
                    b"BOOL" => Type::Bool,
                    b"NULL" => Type::Null,
                    b"M" => Type::M,
                    b"L" => Type::L,
                    b"SS" => Type::Ss,
                    b"NS" => Type::Ns,
                    b"BS" => Type::Bs,
                    _ => return Err(Bail),
                };
                return Ok(ty);
            }
        };
        self.i += len;
        Ok(ty)
    }

    /// One attribute value (`{"S": "x"}`, ...), validated; projected into `out` when `node`
    /// (the path reaching it) has a slot or nested paths.
    fn attribute(&mut self, node: Option<&Node>, out: &mut [Option<Scalar>]) -> R<()> {
        self.ws();
        let start = self.i;
        self.eat(b'{')?;
        self.enter()?;
        self.ws();
        let ty = self.type_key()?;
        let slot = node.and_then(|n| n.slot);
        let mut scalar = None;
        match ty {
            Type::S | Type::N => {
                let s = self.string()?;
                self.eat(b'}')?;
                self.leave();
                // Straight into the slot: the common case, without moving the value around.
                if let Some(slot) = slot {
                    let kind = if ty == Type::S {
                        ScalarKind::S
                    } else {
                        ScalarKind::N
                    };
                    if let Some(trace) = &mut self.trace {
                        // The string's hole is the one before the closing brace.
                        trace.role(shape::Role::Slot {
                            new: trace.new_image,
                            slot,
                            kind,
                        });
                    }
                    out[slot] = Some(Scalar {
                        kind,
                        text: s.compact()?,
                    });
                }
                return Ok(());
            }
            Type::Bool => {
                let b = self.boolean()?;
                if slot.is_some() {
                    scalar = Some(Scalar {
                        kind: ScalarKind::Bool,
                        text: if b { "true" } else { "false" }.into(),
                    });
                }
            }
            Type::Null => {
                self.boolean()?;
                if slot.is_some() {
                    scalar = Some(Scalar {
                        kind: ScalarKind::Null,
                        text: "null".into(),
                    });
                }
            }
            Type::B => self.binary()?,
            Type::M => self.item(node.filter(|n| !n.children.is_empty()), out)?,
            Type::L => {
                if self.open_array()? {
                    loop {
                        self.attribute(None, out)?;
                        if !self.more(b']')? {
                            break;
                        }
                    }
                    self.leave();
                }
            }
            Type::Ss | Type::Ns => self.string_list(false)?,
            Type::Bs => self.string_list(true)?,
        }
        self.eat(b'}')?;
        self.leave();
        if let Some(slot) = slot {
            if let Some(trace) = &mut self.trace {
                match &scalar {
                    // `true`, `false`, `null`: part of the shape, written as they were.
                    Some(scalar) => trace.holes.push(shape::Slotted {
                        start: self.i,
                        end: self.i,
                        hole: shape::Hole::Fixed {
                            new: trace.new_image,
                            slot,
                            scalar: scalar.clone(),
                        },
                    }),
                    None => trace.learnable = false,
                }
            }
            out[slot] = match scalar {
                Some(scalar) => Some(scalar),
                // Compound values: their label is their serde JSON.
                None => Some(Scalar::from(
                    &serde_json::from_slice::<AttributeValue>(&self.b[start..self.i])
                        .map_err(|_| Bail)?,
                )),
            };
        }
        Ok(())
    }

    /// An item or a map (`M`): names to attribute values. `node` holds the paths below it.
    fn item(&mut self, node: Option<&Node>, out: &mut [Option<Scalar>]) -> R<()> {
        if !self.open_object()? {
            return Ok(());
        }
        loop {
            let key = self.key()?;
            let child = match node {
                None => None,
                Some(node) if !key.escaped => node.child(key.bytes()),
                Some(node) => node.child(key.text()?.as_bytes()),
            };
            if let Some(child) = child {
                // A repeated name replaces the earlier value (the last one wins in a map).
                for &slot in &child.subtree {
                    if out[slot].take().is_some() {
                        // A shape only writes slots: it cannot clear them.
                        self.unlearnable();
                    }
                }
            }
            self.attribute(child, out)?;
            if !self.more(b'}')? {
                break;
            }
        }
        self.leave();
        Ok(())
    }

    /// `null` or an item projected by `projection`.
    fn image(
        &mut self,
        projection: &CompiledProjection,
        new: bool,
    ) -> R<Option<Box<[Option<Scalar>]>>> {
        if self.null()? {
            return Ok(None);
        }
        if let Some(trace) = &mut self.trace {
            trace.new_image = new;
        }
        let mut values = projection.empty_image();
        self.item(Some(&projection.root), &mut values)?;
        Ok(Some(values))
    }

    /// `ApproximateCreationDateTime` in epoch ms, or `None` for `null`.
    fn creation_time(&mut self) -> R<Option<i64>> {
        match self.next_token() {
            b'n' => self.literal(b"null").map(|_| None),
            b'"' => {
                let text = self.string()?.text()?;
                self.role(shape::Role::Time);
                if !text.is_ascii() {
                    return Err(Bail);
                }
                parse_iso8601_ms(&text).map(Some).ok_or(Bail)
            }
            b'-' | b'0'..=b'9' => {
                let number = self.number()?;
                self.role(shape::Role::Time);
                if number.len() <= 15 {
                    if let Some(secs) = digits(number) {
                        return Ok(Some(secs as i64 * 1000));
                    }
                }
                // Fractions, exponents, signs, big numbers: serde_json's own number, then the
                // rule of `parse_creation_time` (which a shape does not apply: not learned).
                self.unlearnable();
                match serde_json::from_slice::<serde_json::Value>(number).map_err(|_| Bail)? {
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(secs) => secs.checked_mul(1000).map(Some).ok_or(Bail),
                        None => {
                            // Out of range: the exact path gives the error.
                            let ms = (n.as_f64().ok_or(Bail)? * 1000.0).round();
                            if ms.is_finite() && ms.abs() < 9.0e15 {
                                Ok(Some(ms as i64))
                            } else {
                                Err(Bail)
                            }
                        }
                    },
                    _ => Err(Bail),
                }
            }
            _ => Err(Bail),
        }
    }

    /// `userIdentity`: `Some(ttl)` for an identity, `None` for `null`.
    fn user_identity(&mut self) -> R<Option<bool>> {
        if self.null()? {
            return Ok(None);
        }
        if !self.open_object()? {
            return Err(Bail);
        }
        let (mut kind, mut principal) = (false, None);
        loop {
            match self.plain_key()? {
                b"type" => {
                    if std::mem::replace(&mut kind, true) {
                        return Err(Bail);
                    }
                    self.string()?;
                    self.fixed();
                }
                b"principalId" => {
                    if principal.is_some() {
                        return Err(Bail);
                    }
                    let s = self.string()?;
                    self.fixed();
                    principal = Some(if s.escaped {
                        s.text()? == "dynamodb.amazonaws.com"
                    } else {
                        s.raw == "dynamodb.amazonaws.com"
                    });
                }
                _ => self.skip_value()?,
            }
            if !self.more(b'}')? {
                break;
            }
        }
        self.leave();
        match (kind, principal) {
            (true, Some(ttl)) => Ok(Some(ttl)),
            _ => Err(Bail),
        }
    }

    /// The `dynamodb` object.
    fn body(&mut self, projection: &CompiledProjection, change: &mut Partial<'a>) -> R<()> {
        if !self.open_object()? {
            return Err(Bail);
        }
        let mut seen = 0u8;
        let mut once = |bit: u8| {
            if seen & bit != 0 {
                return Err(Bail);
            }
            seen |= bit;
            Ok(())
        };
        loop {
            match self.field(BODY_FIELDS)? {
                Some(CREATION_TIME) => {
                    once(1)?;
                    change.time = self.creation_time()?;
                }
                Some(KEYS) => {
                    once(2)?;
                    self.item(None, &mut [])?;
                }
                Some(NEW_IMAGE) => {
                    once(4)?;
                    change.new = self.image(projection, true)?;
                }
                Some(OLD_IMAGE) => {
                    once(8)?;
                    change.old = self.image(projection, false)?;
                }
                Some(SEQUENCE_NUMBER) => {
                    once(16)?;
                    change.sequence = Some(self.string()?);
                    self.role(shape::Role::Sequence);
                }
                Some(SIZE_BYTES) => {
                    once(32)?;
                    digits(self.number()?).ok_or(Bail)?;
                    self.role(shape::Role::SizeBytes);
                }
                Some(STREAM_VIEW_TYPE) => {
                    once(64)?;
                    self.fixed_optional_string()?;
                }
                _ => self.skip_value()?,
            }
            if !self.more(b'}')? {
                break;
            }
        }
        self.leave();
        Ok(())
    }

    /// The whole record.
    fn record(
        &mut self,
        projection: &CompiledProjection,
        shards: &mut ShardInterner,
    ) -> R<ProjectedChange> {
        if !self.open_object()? {
            return Err(Bail);
        }
        let mut change = Partial::default();
        let mut seen = 0u8;
        let mut once = |bit: u8| {
            if seen & bit != 0 {
                return Err(Bail);
            }
            seen |= bit;
            Ok(())
        };
        let (mut id, mut name, mut body, mut shard) = (false, None, false, None);
        loop {
            match self.field(RECORD_FIELDS)? {
                Some(EVENT_ID) => {
                    once(1)?;
                    id = !self.string()?.raw.is_empty();
                    self.role(shape::Role::EventId);
                    if !id {
                        return Err(Bail);
                    }
                }
                Some(EVENT_NAME) => {
                    once(2)?;
                    name = Some(self.string()?);
                    self.fixed();
                }
                Some(EVENT_VERSION) => {
                    once(4)?;
                    self.fixed_optional_string()?;
                }
                Some(EVENT_SOURCE) => {
                    once(8)?;
                    self.fixed_optional_string()?;
                }
                Some(AWS_REGION) => {
                    once(16)?;
                    self.fixed_optional_string()?;
                }
                Some(DYNAMODB) => {
                    once(32)?;
                    self.body(projection, &mut change)?;
                    body = true;
                }
                Some(USER_IDENTITY) => {
                    once(64)?;
                    change.ttl = self.user_identity()?.unwrap_or(false);
                }
                Some(SHARD_ID) => {
                    once(128)?;
                    shard = self.optional_string()?;
                    if shard.is_some() {
                        self.role(shape::Role::Shard);
                    }
                }
                _ => self.skip_value()?,
            }
            if !self.more(b'}')? {
                break;
            }
        }
        self.leave();
        self.ws();
        if self.i != self.b.len() || !id || !body {
            return Err(Bail);
        }
        let name = name.ok_or(Bail)?;
        let kind = match name.raw {
            "INSERT" => EventKind::Insert,
            "MODIFY" => EventKind::Modify,
            "REMOVE" => EventKind::Remove,
            _ => EventKind::from_name(&name.text()?),
        };
        let shard_id = match shard {
            None => shards.intern(""),
            Some(s) if !s.escaped => shards.intern(s.raw),
            Some(s) => shards.intern(&s.text()?),
        };
        Ok(ProjectedChange {
            kind,
            event_time_ms: change.time.ok_or(Bail)?,
            sequence_number: change.sequence.ok_or(Bail)?.compact()?,
            shard_id,
            old: change.old,
            new: change.new,
            ttl_delete: change.ttl,
        })
    }
}

/// A non-negative integer written with digits only, if it fits a `u64`.
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

/// What the `dynamodb` object and `userIdentity` contribute.
#[derive(Default)]
struct Partial<'a> {
    time: Option<i64>,
    sequence: Option<Str<'a>>,
    old: Option<Box<[Option<Scalar>]>>,
    new: Option<Box<[Option<Scalar>]>>,
    ttl: bool,
}

/// Standard base64 with canonical padding and no stray bits, as `base64`'s `STANDARD` engine
/// decodes it.
pub(crate) fn valid_base64(text: &[u8]) -> bool {
    fn value(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    if !text.len().is_multiple_of(4) {
        return false;
    }
    let Some(last) = text.rchunks(4).next() else {
        return true;
    };
    let body = &text[..text.len() - 4];
    if !body.iter().all(|&c| value(c).is_some()) {
        return false;
    }
    match last {
        [a, b, b'=', b'='] => value(*a).is_some() && value(*b).is_some_and(|v| v & 0x0f == 0),
        [a, b, c, b'='] => {
            value(*a).is_some() && value(*b).is_some() && value(*c).is_some_and(|v| v & 0x03 == 0)
        }
        [a, b, c, d] => [a, b, c, d].iter().all(|c| value(**c).is_some()),
        _ => false,
    }
}
