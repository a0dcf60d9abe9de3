//! Line shapes: the scanner's answer for a line that looks like one it has seen.
//!
//! The lines of an archive repeat themselves. Each change of a table carries the same field
//! names in the same order, the same event names, view type and attribute names; only a few
//! values differ from line to line (the event id, the times, the sequence number, the attribute
//! values). A *shape* is a line with those values cut out: the fixed stretches of text between
//! the *holes*, and what each hole is for.
//!
//! The scanner learns a shape from a line it decoded in full (and validated: see the parent
//! module). A later line *fits* the shape when it is the same text around the holes and each hole
//! holds a valid value of its kind: a JSON string (escapes checked) or a JSON number (grammar
//! checked). Such a line is a JSON document with exactly the structure of the learned one, the
//! same names in the same places, leaf values aside. Everything the full scan checks about
//! structure (syntax, the types of known fields, duplicate fields, the shape of every attribute
//! value) therefore holds for it as it held for the learned line, and only the holes need
//! checking: the same checks the full scan makes of those values (a non-empty event id, a time
//! in the common form, a size that fits, base64 for binaries). A line that does not fit, or a
//! hole whose value the fast rules do not cover, goes through the full scan, exactly as before.
//!
//! A line is not learned when a projected value is compound (its label comes from serde) or
//! when a repeated attribute name clears a projected value: a shape only ever writes slots.

use std::{borrow::Cow, sync::Arc};

use compact_str::CompactString;
use streamlens_core::{
    event::parse_iso8601_ms,
    projection::{LineScalar, ProjectedChange, ProjectedImage, Scalar, ScalarKind},
    EventKind,
};

use super::{digits, valid_base64, CompiledProjection, Scanner, ShardInterner};

/// What a hole's value is for.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Role {
    /// Only checked (a value the projection does not keep).
    None,
    /// `eventID`: must not be empty.
    EventId,
    /// `ApproximateCreationDateTime`.
    Time,
    /// `SequenceNumber`.
    Sequence,
    /// `SizeBytes`: digits that fit a `u64`.
    SizeBytes,
    /// `shardId`.
    Shard,
    /// A binary attribute value: canonical base64.
    Base64,
    /// A projected `S` or `N` value of the new (or old) image.
    Slot {
        new: bool,
        slot: usize,
        kind: ScalarKind,
    },
}

/// A hole of a shape.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Hole {
    /// A string: its text and closing quote (the opening quote is the shape's).
    Str(Role),
    /// A number.
    Num(Role),
    /// No text: a projected `true`, `false` or `null`, which is part of the shape's text.
    Fixed {
        new: bool,
        slot: usize,
        scalar: Scalar,
    },
}

/// A hole where the learned line had it.
#[derive(Debug)]
pub(super) struct Slotted {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) hole: Hole,
}

/// The holes of a line being learned, as the scanner meets them.
#[derive(Debug)]
pub(super) struct Trace {
    pub(super) holes: Vec<Slotted>,
    /// Which image the scanner is in.
    pub(super) new_image: bool,
    /// False when the line cannot be a shape.
    pub(super) learnable: bool,
}

impl Trace {
    fn new() -> Self {
        Trace {
            holes: Vec::with_capacity(32),
            new_image: true,
            learnable: true,
        }
    }

    #[inline(always)]
    pub(super) fn hole(&mut self, start: usize, end: usize, hole: Hole) {
        self.holes.push(Slotted { start, end, hole });
    }

    /// The role of the hole just read.
    #[inline(always)]
    pub(super) fn role(&mut self, role: Role) {
        match self.holes.last_mut() {
            Some(Slotted {
                hole: Hole::Str(r) | Hole::Num(r),
                ..
            }) => *r = role,
            _ => self.learnable = false,
        }
    }
}

/// A learned line shape.
#[derive(Debug, Clone)]
struct Shape {
    /// The fixed text, all stretches back to back.
    text: Box<[u8]>,
    /// Each hole, with the end in `text` of the stretch before it.
    holes: Box<[(usize, Hole)]>,
    kind: EventKind,
    ttl_delete: bool,
    new: bool,
    old: bool,
    /// Whether a hole holds the shard id (otherwise it is `null` or absent: empty).
    shard: Option<Arc<str>>,
}

/// What one decoding thread remembers between lines: the shard ids it has shared and the shapes
/// of recent lines.
#[derive(Debug, Default, Clone)]
pub struct DecodeCache {
    pub(super) shards: ShardInterner,
    shapes: Vec<Shape>,
    /// The projection the shapes were learned with.
    projection: u64,
    /// Lines in a row that fit no shape.
    misses: u32,
    /// Lines still to decode without trying shapes (after many misses: lines that vary too
    /// much for shapes to pay).
    cold: u32,
    /// Lines decoded through a shape.
    fitted: u64,
}

impl DecodeCache {
    /// Shapes kept: the most recently fitted first.
    const SHAPES: usize = 8;
    /// Misses in a row after which shapes rest for [`Self::REST`] lines.
    const MISSES: u32 = 64;
    const REST: u32 = 4096;
    /// Longer lines are not learned (a shape keeps the line's text).
    const LONGEST: usize = 64 * 1024;

    /// The shared id of a shard.
    pub fn intern(&mut self, id: &str) -> Arc<str> {
        self.shards.intern(id)
    }

    /// The line decoded through a learned shape (its projected values written to `images`), or
    /// `None` when it fits none (or shapes are resting). Either way, whether to trace the full
    /// scan to learn its shape.
    pub(super) fn fit<'a>(
        &mut self,
        line: &'a str,
        projection: &CompiledProjection,
        images: &mut impl Images<'a>,
    ) -> (Option<Fitted<'a>>, Option<Trace>) {
        if self.projection != projection.id {
            self.shapes.clear();
            self.projection = projection.id;
        }
        if self.cold > 0 {
            self.cold -= 1;
            return (None, None);
        }
        for at in 0..self.shapes.len() {
            images.reset();
            if let Some(fitted) = fit(&self.shapes[at], line, images) {
                if at > 0 {
                    self.shapes[..=at].rotate_right(1);
                }
                self.misses = 0;
                self.fitted += 1;
                return (Some(fitted), None);
            }
        }
        self.misses += 1;
        if self.misses >= Self::MISSES {
            self.misses = 0;
            self.cold = Self::REST;
            return (None, None);
        }
        (None, Some(Trace::new()))
    }

    /// The kind and TTL flag of the line [`Self::fit`] just fitted (its shape's).
    pub(super) fn fitted_kind(&self) -> (&EventKind, bool) {
        let shape = &self.shapes[0];
        (&shape.kind, shape.ttl_delete)
    }

    /// The shared id of the shard of the line [`Self::fit`] just fitted.
    pub(super) fn fitted_shard(&mut self, id: &str) -> Arc<str> {
        match &self.shapes[0].shard {
            Some(known) if super::same(known.as_bytes(), id.as_bytes()) => known.clone(),
            _ => self.shards.intern(id),
        }
    }

    /// Keeps the shape of a line the full scan decoded with `trace`.
    pub(super) fn learn(&mut self, line: &[u8], trace: Trace, change: &ProjectedChange) {
        if !trace.learnable || line.len() > Self::LONGEST {
            return;
        }
        let mut text = Vec::with_capacity(line.len());
        let mut holes = Vec::with_capacity(trace.holes.len());
        let mut at = 0;
        let mut shard = None;
        for Slotted { start, end, hole } in trace.holes {
            if start < at || end < start {
                return;
            }
            text.extend_from_slice(&line[at..start]);
            at = end;
            if hole == Hole::Str(Role::Shard) {
                shard = Some(change.shard_id.clone());
            }
            holes.push((text.len(), hole));
        }
        text.extend_from_slice(&line[at..]);
        if self.shapes.len() == Self::SHAPES {
            self.shapes.pop();
        }
        self.shapes.insert(
            0,
            Shape {
                text: text.into(),
                holes: holes.into(),
                kind: change.kind.clone(),
                ttl_delete: change.ttl_delete,
                new: change.new.is_some(),
                old: change.old.is_some(),
                shard,
            },
        );
    }

    /// Shapes known.
    pub fn shapes(&self) -> usize {
        self.shapes.len()
    }

    /// Lines decoded through a shape so far.
    pub fn fitted(&self) -> u64 {
        self.fitted
    }
}

/// Where a shape writes a line's projected values: owned images ([`OwnedImages`]) or values
/// borrowed from the line ([`LineImages`]).
pub(super) trait Images<'a> {
    /// Forgets what an attempt that did not fit wrote.
    fn reset(&mut self);
    /// Writes a slot of the new (`new`) or old image.
    fn set(&mut self, new: bool, slot: usize, kind: ScalarKind, text: Cow<'a, str>);
}

/// Images allocated when a value is written to them (or at the end): a line that turns out not
/// to fit, as most do for all but one of the shapes tried, allocates nothing.
pub(super) struct OwnedImages<'p> {
    pub(super) projection: &'p CompiledProjection,
    pub(super) new: Option<ProjectedImage>,
    pub(super) old: Option<ProjectedImage>,
}

impl<'a> Images<'a> for OwnedImages<'_> {
    fn reset(&mut self) {
        (self.new, self.old) = (None, None);
    }

    #[inline(always)]
    fn set(&mut self, new: bool, slot: usize, kind: ScalarKind, text: Cow<'a, str>) {
        let image = if new { &mut self.new } else { &mut self.old };
        image.get_or_insert_with(|| self.projection.empty_image())[slot] = Some(Scalar {
            kind,
            text: compact(text),
        });
    }
}

/// A value's text kept inline (borrowed) or without copying it again (owned).
pub(super) fn compact(text: Cow<'_, str>) -> CompactString {
    match text {
        Cow::Borrowed(text) => CompactString::new(text),
        Cow::Owned(text) => CompactString::from(text),
    }
}

/// Both images' values borrowed from the line, in one reused buffer: the new image's slots,
/// then the old image's.
#[derive(Debug, Default)]
pub struct LineImages<'a> {
    values: Vec<Option<LineScalar<'a>>>,
    slots: usize,
    /// Whether a value was written since the last reset.
    written: bool,
}

impl<'a> LineImages<'a> {
    /// Makes room for `slots` slots per image.
    pub(super) fn prepare(&mut self, slots: usize) {
        if self.slots != slots || self.values.len() != 2 * slots {
            self.slots = slots;
            self.values.clear();
            self.values.resize(2 * slots, None);
            self.written = false;
        }
    }

    /// The new image's values and the old image's.
    pub(super) fn images(&self) -> (&[Option<LineScalar<'a>>], &[Option<LineScalar<'a>>]) {
        self.values.split_at(self.slots)
    }
}

impl<'a> Images<'a> for LineImages<'a> {
    #[inline(always)]
    fn reset(&mut self) {
        if self.written {
            self.values.iter_mut().for_each(|v| *v = None);
            self.written = false;
        }
    }

    #[inline(always)]
    fn set(&mut self, new: bool, slot: usize, kind: ScalarKind, text: Cow<'a, str>) {
        let at = if new { slot } else { self.slots + slot };
        self.values[at] = Some(LineScalar { kind, text });
        self.written = true;
    }
}

/// What a line that fit a shape holds besides its projected values (which went to its
/// [`Images`]; its kind and TTL flag are the shape's).
pub(super) struct Fitted<'a> {
    pub(super) time: i64,
    pub(super) sequence: Cow<'a, str>,
    /// Empty when the line has no shard id.
    pub(super) shard: Cow<'a, str>,
    /// Whether the line has a new (old) image.
    pub(super) new: bool,
    pub(super) old: bool,
}

/// Decodes `line` through `shape`, or `None` when it does not fit (or a value needs the full
/// scan's rules).
fn fit<'a>(shape: &Shape, line: &'a str, images: &mut impl Images<'a>) -> Option<Fitted<'a>> {
    let mut sc = Scanner {
        s: line,
        b: line.as_bytes(),
        i: 0,
        depth: 0,
        trace: None,
    };
    let text = &shape.text[..];
    // A shape writes a slot of an image only if its learned line had that image.
    let (new, old) = (shape.new, shape.old);
    let (mut time, mut sequence, mut shard) = (None, None, None);
    let mut from = 0;
    for (to, hole) in &shape.holes[..] {
        sc.stretch(&text[from..*to])?;
        from = *to;
        match hole {
            Hole::Str(role) => {
                let s = sc.string_body().ok()?;
                match role {
                    Role::None => {}
                    Role::EventId => {
                        if s.raw.is_empty() {
                            return None;
                        }
                    }
                    Role::Time => {
                        let text = s.text().ok()?;
                        if !text.is_ascii() {
                            return None;
                        }
                        time = Some(parse_iso8601_ms(&text)?);
                    }
                    Role::Sequence => sequence = Some(s.text().ok()?),
                    Role::Shard => shard = Some(s.text().ok()?),
                    Role::Base64 => {
                        if !valid_base64(s.text().ok()?.as_bytes()) {
                            return None;
                        }
                    }
                    Role::Slot { new: n, slot, kind } => {
                        images.set(*n, *slot, *kind, s.text().ok()?);
                    }
                    Role::SizeBytes => return None,
                }
            }
            Hole::Num(role) => {
                let number = sc.number_text().ok()?;
                match role {
                    Role::None => {}
                    Role::Time => {
                        if number.len() > 15 {
                            return None;
                        }
                        time = Some(digits(number)? as i64 * 1000);
                    }
                    Role::SizeBytes => {
                        digits(number)?;
                    }
                    _ => return None,
                }
            }
            Hole::Fixed {
                new: n,
                slot,
                scalar,
            } => {
                let label = match scalar.text.as_str() {
                    "true" => Cow::Borrowed("true"),
                    "false" => Cow::Borrowed("false"),
                    "null" => Cow::Borrowed("null"),
                    other => Cow::Owned(other.to_owned()),
                };
                images.set(*n, *slot, scalar.kind, label);
            }
        }
    }
    sc.stretch(&text[from..])?;
    if sc.i != sc.b.len() {
        return None;
    }
    Some(Fitted {
        time: time?,
        sequence: sequence?,
        shard: match shard {
            Some(id) => id,
            None if shape.shard.is_none() => Cow::Borrowed(""),
            None => return None,
        },
        new,
        old,
    })
}

impl Scanner<'_> {
    /// The shape's fixed `text` next.
    #[inline(always)]
    fn stretch(&mut self, text: &[u8]) -> Option<()> {
        let here = self.b.get(self.i..self.i + text.len())?;
        if super::same(here, text) {
            self.i += text.len();
            Some(())
        } else {
            None
        }
    }
}
