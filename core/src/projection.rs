//! Changes reduced to the attributes a pipeline reads.
//!
//! A pipeline needs a handful of attributes of each image (its dimensions, its metrics, its event
//! time attribute, its filters), not whole items. A [`Projection`] names those attribute paths; a
//! [`ProjectedChange`] carries, per image, one [`Scalar`] (or nothing) per path, in the
//! projection's order. The window engine works on projected changes only, so a fast decoder can
//! skip everything else in a record and the live path projects full [`ChangeEvent`]s with
//! [`ProjectedChange::from_event`]. Both must agree exactly: the fast archive decoder is tested
//! against `from_event` over the same lines.

use std::{borrow::Cow, sync::Arc};

use compact_str::CompactString;

use crate::{
    attr::{lookup, AttributeValue, Item},
    event::{ChangeEvent, EventKind},
};

/// The attribute paths a pipeline reads: `a.b.c` walks map keys (as [`lookup`] does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    /// The paths, without duplicates; a [`ProjectedImage`] has one slot per path, in this order.
    pub paths: Vec<String>,
}

impl Projection {
    /// A projection of these paths (duplicates kept once, first position wins).
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(paths: I) -> Self {
        let mut out: Vec<String> = Vec::new();
        for path in paths {
            let path = path.into();
            if !out.contains(&path) {
                out.push(path);
            }
        }
        Projection { paths: out }
    }

    /// The slot of a path.
    pub fn slot(&self, path: &str) -> Option<usize> {
        self.paths.iter().position(|p| p == path)
    }

    /// Projects one image.
    pub fn image(&self, item: &Item) -> ProjectedImage {
        self.paths
            .iter()
            .map(|p| lookup(item, p).map(Scalar::from))
            .collect()
    }
}

/// The type of a projected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScalarKind {
    /// `S`.
    S,
    /// `N`: the text is the number as written.
    N,
    /// `BOOL`: `true` or `false`.
    Bool,
    /// `NULL`: the text is `null`.
    Null,
    /// `B`, `M`, `L`, `SS`, `NS`, `BS`: the text is the value's compact DynamoDB JSON.
    Other,
}

/// One projected attribute value: its type and its label ([`AttributeValue::label`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scalar {
    /// The DynamoDB type.
    pub kind: ScalarKind,
    /// The label: strings and numbers as written, `true`/`false`, `null`, or compact JSON
    /// (inline up to 24 bytes: most values need no allocation).
    pub text: CompactString,
}

impl Scalar {
    /// A string value.
    pub fn s(text: &str) -> Self {
        Scalar {
            kind: ScalarKind::S,
            text: text.into(),
        }
    }

    /// A number value.
    pub fn n(text: &str) -> Self {
        Scalar {
            kind: ScalarKind::N,
            text: text.into(),
        }
    }

    /// The number text of an `N` value.
    pub fn as_number(&self) -> Option<&str> {
        (self.kind == ScalarKind::N).then_some(&*self.text)
    }
}

impl From<&AttributeValue> for Scalar {
    fn from(value: &AttributeValue) -> Self {
        let kind = match value {
            AttributeValue::S(_) => ScalarKind::S,
            AttributeValue::N(_) => ScalarKind::N,
            AttributeValue::Bool(_) => ScalarKind::Bool,
            AttributeValue::Null(_) => ScalarKind::Null,
            _ => ScalarKind::Other,
        };
        Scalar {
            kind,
            text: value.label().into(),
        }
    }
}

/// One image's projected values, one slot per [`Projection::paths`] entry (`None`: absent).
pub type ProjectedImage = Box<[Option<Scalar>]>;

/// A change with only what the pipeline reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedChange {
    /// INSERT, MODIFY, REMOVE or unknown.
    pub kind: EventKind,
    /// `ApproximateCreationDateTime`, epoch milliseconds.
    pub event_time_ms: i64,
    /// Ordered within the shard (inline: sequence numbers are up to 21 digits long in practice
    /// and never allocate).
    pub sequence_number: CompactString,
    /// The shard (shared between the changes of one shard).
    pub shard_id: Arc<str>,
    /// The image before the change, projected.
    pub old: Option<ProjectedImage>,
    /// The image after the change, projected.
    pub new: Option<ProjectedImage>,
    /// A deletion by time-to-live.
    pub ttl_delete: bool,
}

impl ProjectedChange {
    /// Projects a decoded change.
    pub fn from_event(event: &ChangeEvent, projection: &Projection) -> Self {
        ProjectedChange {
            kind: event.kind.clone(),
            event_time_ms: event.event_time_ms,
            sequence_number: event.sequence_number.as_str().into(),
            shard_id: event.shard_id.as_str().into(),
            old: event.old_image.as_ref().map(|i| projection.image(i)),
            new: event.new_image.as_ref().map(|i| projection.image(i)),
            ttl_delete: event.ttl_delete,
        }
    }
}

impl ProjectedChange {
    /// The change as the window engine reads it.
    pub fn view(&self) -> ChangeView<'_> {
        ChangeView {
            kind: &self.kind,
            event_time_ms: self.event_time_ms,
            sequence_number: &self.sequence_number,
            shard_id: &self.shard_id,
            old: self.old.as_deref().map(ImageView::Owned),
            new: self.new.as_deref().map(ImageView::Owned),
            ttl_delete: self.ttl_delete,
        }
    }
}

/// A projected value read from a line and still borrowing it (owned only when it had to be
/// unescaped): what a decoder fills in place of a [`Scalar`] when the change is consumed at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineScalar<'a> {
    /// The DynamoDB type.
    pub kind: ScalarKind,
    /// The label, as [`Scalar::text`].
    pub text: Cow<'a, str>,
}

/// One projected value as the engine reads it, whichever image holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalarRef<'a> {
    /// The DynamoDB type.
    pub kind: ScalarKind,
    /// The label, as [`Scalar::text`].
    pub text: &'a str,
}

impl<'a> ScalarRef<'a> {
    /// The number text of an `N` value.
    pub fn as_number(&self) -> Option<&'a str> {
        (self.kind == ScalarKind::N).then_some(self.text)
    }
}

/// One image's projected values, owned (a [`ProjectedImage`]) or borrowed from a decoded line.
#[derive(Debug, Clone, Copy)]
pub enum ImageView<'a> {
    /// A [`ProjectedChange`]'s image.
    Owned(&'a [Option<Scalar>]),
    /// Values borrowed from a line.
    Line(&'a [Option<LineScalar<'a>>]),
}

impl<'a> ImageView<'a> {
    /// The value of a slot (`None`: absent).
    #[inline]
    pub fn get(&self, slot: usize) -> Option<ScalarRef<'a>> {
        match self {
            ImageView::Owned(image) => image[slot].as_ref().map(|s| ScalarRef {
                kind: s.kind,
                text: &s.text,
            }),
            ImageView::Line(image) => image[slot].as_ref().map(|s| ScalarRef {
                kind: s.kind,
                text: &s.text,
            }),
        }
    }
}

/// A [`ProjectedChange`] borrowed: from one ([`ProjectedChange::view`]), or straight from the
/// decoded line with no image allocated, when the change is consumed as soon as it is decoded
/// (the archive reader's folds).
#[derive(Debug, Clone, Copy)]
pub struct ChangeView<'a> {
    /// As [`ProjectedChange::kind`].
    pub kind: &'a EventKind,
    /// As [`ProjectedChange::event_time_ms`].
    pub event_time_ms: i64,
    /// As [`ProjectedChange::sequence_number`].
    pub sequence_number: &'a str,
    /// As [`ProjectedChange::shard_id`].
    pub shard_id: &'a str,
    /// As [`ProjectedChange::old`].
    pub old: Option<ImageView<'a>>,
    /// As [`ProjectedChange::new`].
    pub new: Option<ImageView<'a>>,
    /// As [`ProjectedChange::ttl_delete`].
    pub ttl_delete: bool,
}

impl ChangeView<'_> {
    /// The change as an owned [`ProjectedChange`] (`ProjectedChange::view` back).
    pub fn to_change(&self) -> ProjectedChange {
        let image = |image: &ImageView<'_>| -> ProjectedImage {
            let slots = match image {
                ImageView::Owned(image) => image.len(),
                ImageView::Line(image) => image.len(),
            };
            (0..slots)
                .map(|slot| {
                    image.get(slot).map(|v| Scalar {
                        kind: v.kind,
                        text: v.text.into(),
                    })
                })
                .collect()
        };
        ProjectedChange {
            kind: self.kind.clone(),
            event_time_ms: self.event_time_ms,
            sequence_number: self.sequence_number.into(),
            shard_id: self.shard_id.into(),
            old: self.old.as_ref().map(image),
            new: self.new.as_ref().map(image),
            ttl_delete: self.ttl_delete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::StreamRecord;

    #[test]
    fn a_change_is_projected_slot_by_slot() {
        let line = r#"{"eventID":"1","eventName":"MODIFY","dynamodb":{"ApproximateCreationDateTime":1700000000,"Keys":{"pk":{"S":"a"}},"OldImage":{"pk":{"S":"a"},"n":{"N":"1.50"},"m":{"M":{"r":{"S":"eu"}}}},"NewImage":{"pk":{"S":"a"},"n":{"N":"2"},"f":{"BOOL":true},"l":{"L":[{"S":"x"}]}},"SequenceNumber":"42"},"shardId":"s-1"}"#;
        let event = ChangeEvent::try_from(StreamRecord::from_json(line).unwrap()).unwrap();
        let projection = Projection::new(["n", "m.r", "f", "l", "n", "missing"]);
        assert_eq!(projection.paths.len(), 5);
        let p = ProjectedChange::from_event(&event, &projection);
        assert_eq!(p.view().to_change(), p);
        assert_eq!(&*p.shard_id, "s-1");
        assert_eq!(&*p.sequence_number, "42");
        let old = p.old.unwrap();
        assert_eq!(old[0], Some(Scalar::n("1.50")));
        assert_eq!(old[1], Some(Scalar::s("eu")));
        assert_eq!(old[2], None);
        let new = p.new.unwrap();
        assert_eq!(new[2].as_ref().unwrap().text.as_str(), "true");
        assert_eq!(new[3].as_ref().unwrap().kind, ScalarKind::Other);
        assert_eq!(
            new[3].as_ref().unwrap().text.as_str(),
            r#"{"L":[{"S":"x"}]}"#
        );
        assert_eq!(new[4], None);
    }
}
