//! The raw change index: every change read, kept whole for forensics.
//!
//! Aggregates say *how much*; when a number looks wrong the question becomes *which changes*.
//! Every change the pipeline reads is kept as a [`ChangeDoc`]: the table, the item key, the kind,
//! the event time, the sequence number and shard, both images, and the attributes the change
//! touched (so "who changed `status`" is a term lookup, not a scan of images).
//!
//! Changes are ordered by event time, then sequence number (DynamoDB gives event times in whole
//! seconds; sequence numbers order the changes of one shard, and a child shard's numbers follow its
//! parent's), then shard and table: a total order, so pages never skip or repeat a change. A
//! page's [`ChangePage::next`] cursor is the position of its last change in that order.
//!
//! A [`ChangeQuery`] is the request as `POST /api/changes` and `streamlens changes` take it; the
//! aggregator checks it and resolves it to a [`ChangeSearch`], which the stores answer through
//! [`ChangeReader`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    attr::{AttributeValue, Item},
    event::{ChangeEvent, EventKind},
    query::TimeArg,
    Error,
};

/// One change as the change index keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDoc {
    /// The DynamoDB table.
    pub table: String,
    /// The item key in canonical form ([`canonical_key`]): what a search by key matches.
    pub key: String,
    /// The item key, typed.
    pub keys: Item,
    /// `INSERT`, `MODIFY`, `REMOVE` (or an unknown event name, kept as read).
    pub kind: String,
    /// `ApproximateCreationDateTime`, epoch milliseconds.
    pub event_time: i64,
    /// The record's sequence number.
    pub sequence_number: String,
    /// The shard the record was read from.
    pub shard_id: String,
    /// The Streams `eventID`.
    pub event_id: String,
    /// The attributes the change touched, top-level names and the dotted paths of changed
    /// attributes inside maps: every attribute of the image for an INSERT or a REMOVE, the
    /// attributes whose value differs (or that appeared or went away) for a MODIFY. Empty for a
    /// MODIFY when the stream does not carry both images.
    pub changed: Vec<String>,
    /// The item before the change, when the stream carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_image: Option<Item>,
    /// The item after the change, when the stream carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_image: Option<Item>,
    /// `SizeBytes` of the stream record.
    #[serde(default)]
    pub size_bytes: u64,
    /// A deletion made by DynamoDB's time-to-live process.
    #[serde(default)]
    pub ttl_delete: bool,
}

impl ChangeDoc {
    /// The change index entry of one change of `table`.
    pub fn of(table: &str, event: &ChangeEvent) -> Self {
        ChangeDoc {
            table: table.to_owned(),
            key: canonical_key(&event.keys),
            keys: event.keys.clone(),
            kind: event.kind.name().to_owned(),
            event_time: event.event_time_ms,
            sequence_number: event.sequence_number.clone(),
            shard_id: event.shard_id.clone(),
            event_id: event.event_id.clone(),
            changed: changed_attributes(
                &event.kind,
                event.old_image.as_ref(),
                event.new_image.as_ref(),
            ),
            old_image: event.old_image.clone(),
            new_image: event.new_image.clone(),
            size_bytes: event.size_bytes,
            ttl_delete: event.ttl_delete,
        }
    }

    /// Its position in the change order, as a page cursor (and the embedded store's key).
    pub fn position(&self) -> String {
        position(
            self.event_time,
            &self.sequence_number,
            &self.shard_id,
            &self.table,
        )
    }

    /// A unique id: table, shard and sequence number (a change read again gets the same id).
    pub fn id(&self) -> String {
        format!(
            "{}|{}|{}",
            escape(&self.table),
            escape(&self.shard_id),
            self.sequence_number
        )
    }
}

/// One attribute a change touched, with its value before and after (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrChange {
    /// The attribute's path (a name, or a dotted path into maps).
    pub path: String,
    /// Before the change.
    pub old: Option<AttributeValue>,
    /// After the change.
    pub new: Option<AttributeValue>,
}

impl ChangeDoc {
    /// What the change did, attribute by attribute: the outermost changed paths (a changed map
    /// stands for its changed insides) with their old and new values, in path order. Empty when
    /// the stream carries no images to compare.
    pub fn steps(&self) -> Vec<AttrChange> {
        let get = |image: &Option<Item>, path: &str| {
            image
                .as_ref()
                .and_then(|i| crate::attr::lookup(i, path))
                .cloned()
        };
        self.changed
            .iter()
            .filter(|path| {
                !self.changed.iter().any(|other| {
                    path.starts_with(other.as_str()) && path[other.len()..].starts_with('.')
                })
            })
            .map(|path| AttrChange {
                path: path.clone(),
                old: get(&self.old_image, path),
                new: get(&self.new_image, path),
            })
            .collect()
    }
}

/// An item's state at `at` (epoch ms) from its changes in change order: the new image of its
/// last change at or before `at`, `None` when it did not exist then (no change yet, or removed).
/// `Err` when that change's stream view carries no new image to tell.
pub fn state_at(changes: &[ChangeDoc], at: i64) -> Result<Option<Item>, String> {
    let Some(last) = changes.iter().rev().find(|c| c.event_time <= at) else {
        return Ok(None);
    };
    match last.kind.as_str() {
        "REMOVE" => Ok(None),
        _ => last.new_image.clone().map(Some).ok_or_else(|| {
            format!(
                "the change at sequence {} carries no new image (the stream's view type leaves it out)",
                last.sequence_number
            )
        }),
    }
}

/// The canonical text of an item key: a compact JSON object of attribute name to value, names in
/// order, strings and numbers as written (binary as base64). `{"pk":"order#1","sk":"2"}`.
pub fn canonical_key(keys: &Item) -> String {
    let plain: BTreeMap<&str, String> = keys
        .iter()
        .map(|(name, value)| (name.as_str(), value.label()))
        .collect();
    serde_json::to_string(&plain).unwrap_or_default()
}

/// The canonical key of a key given as attribute name → string or number.
pub fn canonical_key_of(key: &BTreeMap<String, serde_json::Value>) -> Result<String, String> {
    let mut plain = BTreeMap::new();
    for (name, value) in key {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(format!(
                    "key attribute `{name}` must be a string or a number, not `{other}`"
                ))
            }
        };
        plain.insert(name.as_str(), text);
    }
    Ok(serde_json::to_string(&plain).unwrap_or_default())
}

/// The attributes a change touched; see [`ChangeDoc::changed`].
pub fn changed_attributes(kind: &EventKind, old: Option<&Item>, new: Option<&Item>) -> Vec<String> {
    let mut out = Vec::new();
    match (kind, old, new) {
        (EventKind::Insert, _, Some(image)) | (EventKind::Remove, Some(image), _) => {
            all_paths("", image, &mut out)
        }
        (EventKind::Modify, Some(old), Some(new)) => diff("", old, new, &mut out),
        _ => {}
    }
    out
}

fn path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn all_paths(prefix: &str, item: &Item, out: &mut Vec<String>) {
    for (name, value) in item {
        let here = path(prefix, name);
        out.push(here.clone());
        if let AttributeValue::M(inner) = value {
            all_paths(&here, inner, out);
        }
    }
}

fn diff(prefix: &str, old: &Item, new: &Item, out: &mut Vec<String>) {
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let here = path(prefix, name);
        match (old.get(name), new.get(name)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(AttributeValue::M(a)), Some(AttributeValue::M(b))) => {
                out.push(here.clone());
                diff(&here, a, b, out);
            }
            (Some(AttributeValue::M(m)), _) | (_, Some(AttributeValue::M(m))) => {
                out.push(here.clone());
                all_paths(&here, m, out);
            }
            _ => out.push(here),
        }
    }
}

/// A sequence number padded to 40 digits, so that text order is number order.
pub fn seq_order(sequence_number: &str) -> String {
    format!("{sequence_number:0>40}")
}

/// A position in the change order: `time (13 digits)|sequence (40 digits)|shard|table`, shard
/// and table escaped.
pub fn position(event_time: i64, sequence_number: &str, shard_id: &str, table: &str) -> String {
    format!(
        "{event_time:013}|{}|{}|{}",
        seq_order(sequence_number),
        escape(shard_id),
        escape(table)
    )
}

/// A position decoded: event time, padded sequence number, shard, table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Event time, epoch ms.
    pub event_time: i64,
    /// The sequence number padded to 40 digits.
    pub seq_order: String,
    /// The shard.
    pub shard_id: String,
    /// The table.
    pub table: String,
}

impl Position {
    /// The cursor text, as [`position`] makes it.
    pub fn text(&self) -> String {
        format!(
            "{:013}|{}|{}|{}",
            self.event_time,
            self.seq_order,
            escape(&self.shard_id),
            escape(&self.table)
        )
    }

    /// Reads a cursor made by [`position`].
    pub fn parse(text: &str) -> Option<Position> {
        let mut parts = text.split('|');
        let (time, seq, shard, table) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || time.len() != 13
            || !time.bytes().all(|b| b.is_ascii_digit())
            || seq.len() != 40
            || !seq.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(Position {
            event_time: time.parse().ok()?,
            seq_order: seq.to_owned(),
            shard_id: unescape(shard)?,
            table: unescape(table)?,
        })
    }
}

/// `%` and `|` escaped, as in aggregate ids.
pub fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('|', "%7C")
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3)? {
            "%25" => out.push('%'),
            "%7C" => out.push('|'),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// A search of the change index: the body of `POST /api/changes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeQuery {
    /// Only changes of this table.
    #[serde(default)]
    pub table: Option<String>,
    /// Only changes of the item with this key: attribute name → value (a string or a number),
    /// every key attribute of the table (`{"pk": "order#1"}`, `{"pk": "a", "sk": 2}`).
    #[serde(default)]
    pub key: Option<BTreeMap<String, serde_json::Value>>,
    /// Start of the range (inclusive): epoch ms, ISO-8601, `now` or `now-<duration>`.
    #[serde(default)]
    pub from: Option<TimeArg>,
    /// End of the range (exclusive).
    #[serde(default)]
    pub to: Option<TimeArg>,
    /// Only these kinds (`INSERT`, `MODIFY`, `REMOVE`); all when empty.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only changes that touched this attribute (a name, or a dotted path into maps).
    #[serde(default)]
    pub changed: Option<String>,
    /// Changes per page: 1 to 1000, 100 when left out.
    #[serde(default)]
    pub limit: Option<usize>,
    /// The `next` cursor of the previous page.
    #[serde(default)]
    pub after: Option<String>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    #[serde(default)]
    pub order: Option<String>,
}

/// A checked [`ChangeQuery`], as stores answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSearch {
    /// Only this table.
    pub table: Option<String>,
    /// Only this canonical key.
    pub key: Option<String>,
    /// Event time ≥ this, epoch ms.
    pub from: Option<i64>,
    /// Event time < this, epoch ms.
    pub to: Option<i64>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<String>,
    /// Only changes that touched this attribute path.
    pub changed: Option<String>,
    /// Changes per page.
    pub limit: usize,
    /// Start after this position (exclusive).
    pub after: Option<Position>,
    /// Newest first.
    pub descending: bool,
}

impl Default for ChangeSearch {
    fn default() -> Self {
        ChangeSearch {
            table: None,
            key: None,
            from: None,
            to: None,
            kinds: Vec::new(),
            changed: None,
            limit: 100,
            after: None,
            descending: false,
        }
    }
}

impl ChangeSearch {
    /// Whether a change is selected (the cursor and limit aside).
    pub fn matches(&self, change: &ChangeDoc) -> bool {
        self.table.as_ref().is_none_or(|t| *t == change.table)
            && self.key.as_ref().is_none_or(|k| *k == change.key)
            && self.from.is_none_or(|f| change.event_time >= f)
            && self.to.is_none_or(|t| change.event_time < t)
            && (self.kinds.is_empty() || self.kinds.contains(&change.kind))
            && self
                .changed
                .as_ref()
                .is_none_or(|c| change.changed.contains(c))
    }
}

/// One page of changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePage {
    /// The changes, in the order asked for.
    pub changes: Vec<ChangeDoc>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl ChangePage {
    /// A page from up to `limit + 1` changes in order: the extra one only says there is more.
    pub fn of(mut changes: Vec<ChangeDoc>, limit: usize) -> Self {
        let more = changes.len() > limit;
        changes.truncate(limit);
        let next = more
            .then(|| changes.last().map(ChangeDoc::position))
            .flatten();
        ChangePage { changes, next }
    }
}

/// Anything the change index can be searched in.
#[async_trait::async_trait]
pub trait ChangeReader: Send + Sync + 'static {
    /// One page of the changes `search` selects, in its order.
    async fn search_changes(&self, search: &ChangeSearch) -> Result<ChangePage, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn changed_attributes_follow_maps() {
        let old: Item = [
            ("pk".to_owned(), s("a")),
            ("status".to_owned(), s("new")),
            (
                "addr".to_owned(),
                AttributeValue::M([("city".to_owned(), s("x")), ("zip".to_owned(), s("1"))].into()),
            ),
            ("gone".to_owned(), s("g")),
        ]
        .into();
        let mut new = old.clone();
        new.insert("status".into(), s("paid"));
        new.remove("gone");
        new.insert("added".into(), AttributeValue::N("1".into()));
        new.insert(
            "addr".into(),
            AttributeValue::M([("city".to_owned(), s("y")), ("zip".to_owned(), s("1"))].into()),
        );
        let changed = changed_attributes(&EventKind::Modify, Some(&old), Some(&new));
        assert_eq!(changed, ["added", "addr", "addr.city", "gone", "status"]);
        let inserted = changed_attributes(&EventKind::Insert, None, Some(&old));
        assert_eq!(
            inserted,
            ["addr", "addr.city", "addr.zip", "gone", "pk", "status"]
        );
        assert!(changed_attributes(&EventKind::Modify, None, Some(&new)).is_empty());
        assert!(changed_attributes(&EventKind::Modify, Some(&old), Some(&old)).is_empty());
    }

    #[test]
    fn steps_pair_old_and_new_values_of_the_outermost_paths() {
        let old: Item = [
            ("pk".to_owned(), s("a")),
            ("status".to_owned(), s("new")),
            (
                "addr".to_owned(),
                AttributeValue::M([("city".to_owned(), s("x"))].into()),
            ),
        ]
        .into();
        let mut new = old.clone();
        new.insert("status".into(), s("paid"));
        new.insert(
            "addr".into(),
            AttributeValue::M([("city".to_owned(), s("y"))].into()),
        );
        new.insert("note".into(), s("hi"));
        let event = ChangeEvent {
            event_id: "e".into(),
            kind: EventKind::Modify,
            keys: [("pk".to_owned(), s("a"))].into(),
            old_image: Some(old),
            new_image: Some(new),
            event_time_ms: 0,
            sequence_number: "1".into(),
            shard_id: "s".into(),
            size_bytes: 0,
            view_type: None,
            ttl_delete: false,
        };
        let steps = ChangeDoc::of("t", &event).steps();
        let shown: Vec<(&str, Option<String>, Option<String>)> = steps
            .iter()
            .map(|c| {
                (
                    c.path.as_str(),
                    c.old.as_ref().map(AttributeValue::label),
                    c.new.as_ref().map(AttributeValue::label),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "addr",
                    Some(r#"{"M":{"city":{"S":"x"}}}"#.into()),
                    Some(r#"{"M":{"city":{"S":"y"}}}"#.into())
                ),
                ("note", None, Some("hi".into())),
                ("status", Some("new".into()), Some("paid".into())),
            ]
        );
    }

    #[test]
    fn positions_order_like_numbers_and_read_back() {
        let a = position(1_000, "99", "shard|1", "t%");
        let b = position(1_000, "100", "shard|1", "t%");
        assert!(a < b, "{a} {b}");
        let p = Position::parse(&b).unwrap();
        assert_eq!(p.text(), b);
        assert_eq!((p.shard_id.as_str(), p.table.as_str()), ("shard|1", "t%"));
        assert_eq!(p.event_time, 1_000);
        for bad in [
            "",
            "1|2|3|4",
            "x",
            &format!("{b}|x"),
            &b.replace("%7C", "%7"),
        ] {
            assert!(Position::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn keys_are_canonical_whichever_way_they_come() {
        let keys: Item = [
            ("sk".to_owned(), AttributeValue::N("2".into())),
            ("pk".to_owned(), s("a")),
        ]
        .into();
        let given: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(r#"{"sk": 2, "pk": "a"}"#).unwrap();
        assert_eq!(canonical_key(&keys), r#"{"pk":"a","sk":"2"}"#);
        assert_eq!(canonical_key_of(&given).unwrap(), canonical_key(&keys));
        let bad: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(r#"{"pk": [1]}"#).unwrap();
        assert!(canonical_key_of(&bad).unwrap_err().contains("`pk`"));
    }
}
