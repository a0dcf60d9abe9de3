//! One change of one item, and the Streams record JSON shape it travels in.
//!
//! [`StreamRecord`] is the shape `GetRecords` returns and Lambda delivers, one per line in an
//! archive. [`ChangeEvent`] is what the rest of streamlens works with: the kind as an enum, the
//! creation time in epoch milliseconds and the shard the record came from.

use serde::{Deserialize, Serialize};

use crate::{attr::Item, Error};

/// What happened to the item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A new item was written.
    Insert,
    /// An existing item was overwritten or updated (also for identical overwrites).
    Modify,
    /// An item was deleted (by a user or by TTL).
    Remove,
    /// An event name this version does not know; kept, counted, never aggregated.
    Unknown(String),
}

impl EventKind {
    /// Parses a Streams `eventName`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "INSERT" => EventKind::Insert,
            "MODIFY" => EventKind::Modify,
            "REMOVE" => EventKind::Remove,
            other => EventKind::Unknown(other.to_owned()),
        }
    }

    /// The Streams `eventName`.
    pub fn name(&self) -> &str {
        match self {
            EventKind::Insert => "INSERT",
            EventKind::Modify => "MODIFY",
            EventKind::Remove => "REMOVE",
            EventKind::Unknown(other) => other,
        }
    }
}

/// One change of one item, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The Streams `eventID`.
    pub event_id: String,
    /// INSERT, MODIFY, REMOVE or an unknown kind.
    pub kind: EventKind,
    /// The item's primary key.
    pub keys: Item,
    /// The item before the change (MODIFY and REMOVE with an OLD_IMAGE view).
    pub old_image: Option<Item>,
    /// The item after the change (INSERT and MODIFY with a NEW_IMAGE view).
    pub new_image: Option<Item>,
    /// `ApproximateCreationDateTime` in epoch milliseconds (DynamoDB gives whole seconds).
    pub event_time_ms: i64,
    /// The record's sequence number: a decimal string, ordered within its shard.
    pub sequence_number: String,
    /// The shard the record was read from (empty when the source does not know it).
    pub shard_id: String,
    /// `SizeBytes` of the stream record.
    pub size_bytes: u64,
    /// `StreamViewType` of the stream.
    pub view_type: Option<String>,
    /// True for a deletion made by DynamoDB's time-to-live process.
    pub ttl_delete: bool,
}

/// The record's `userIdentity`, present for TTL deletions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdentity {
    /// `Service` for TTL.
    #[serde(rename = "type")]
    pub kind: String,
    /// `dynamodb.amazonaws.com` for TTL.
    #[serde(rename = "principalId")]
    pub principal_id: String,
}

/// The `dynamodb` part of a Streams record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamRecordBody {
    /// Epoch seconds (a number; a fraction or an ISO-8601 string is accepted too).
    pub approximate_creation_date_time: Option<serde_json::Value>,
    /// The item's key.
    #[serde(default)]
    pub keys: Item,
    /// The item after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_image: Option<Item>,
    /// The item before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_image: Option<Item>,
    /// Ordered within a shard.
    pub sequence_number: String,
    /// Size of the record in bytes.
    #[serde(default)]
    pub size_bytes: u64,
    /// KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_view_type: Option<String>,
}

/// A DynamoDB Streams record in the JSON shape of `GetRecords` and of Lambda events.
///
/// `shardId` is a streamlens extension written into archives so a replay knows each record's
/// shard; records without it are accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Unique per record.
    #[serde(rename = "eventID")]
    pub event_id: String,
    /// INSERT, MODIFY or REMOVE.
    #[serde(rename = "eventName")]
    pub event_name: String,
    /// `1.1` for DynamoDB Streams.
    #[serde(
        rename = "eventVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub event_version: Option<String>,
    /// `aws:dynamodb`.
    #[serde(
        rename = "eventSource",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub event_source: Option<String>,
    /// The region of the table.
    #[serde(rename = "awsRegion", default, skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// The change itself.
    pub dynamodb: StreamRecordBody,
    /// Set for TTL deletions.
    #[serde(
        rename = "userIdentity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_identity: Option<UserIdentity>,
    /// The shard the record was read from (streamlens extension).
    #[serde(rename = "shardId", default, skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<String>,
}

impl StreamRecord {
    /// Decodes one JSON line.
    pub fn from_json(line: &str) -> Result<Self, Error> {
        Ok(serde_json::from_str(line)?)
    }
}

fn parse_creation_time(value: Option<&serde_json::Value>) -> Result<i64, Error> {
    match value {
        Some(serde_json::Value::Number(n)) => {
            let out_of_range = || {
                Error::InvalidRecord(format!(
                    "ApproximateCreationDateTime {n} is out of range for epoch seconds"
                ))
            };
            if let Some(secs) = n.as_i64() {
                secs.checked_mul(1000).ok_or_else(out_of_range)
            } else {
                let ms = (n.as_f64().unwrap_or_default() * 1000.0).round();
                if ms.is_finite() && ms.abs() < 9.0e15 {
                    Ok(ms as i64)
                } else {
                    Err(out_of_range())
                }
            }
        }
        Some(serde_json::Value::String(text)) => parse_iso8601_ms(text).ok_or_else(|| {
            Error::InvalidRecord(format!(
                "ApproximateCreationDateTime `{text}` is not epoch seconds or ISO-8601"
            ))
        }),
        Some(other) => Err(Error::InvalidRecord(format!(
            "ApproximateCreationDateTime must be a number, found {other}"
        ))),
        None => Err(Error::InvalidRecord(
            "missing dynamodb.ApproximateCreationDateTime".to_owned(),
        )),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC only) into epoch milliseconds.
pub fn parse_iso8601_ms(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    Some((days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss) * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl TryFrom<StreamRecord> for ChangeEvent {
    type Error = Error;

    fn try_from(record: StreamRecord) -> Result<Self, Error> {
        if record.event_id.is_empty() {
            return Err(Error::InvalidRecord("empty eventID".to_owned()));
        }
        let event_time_ms =
            parse_creation_time(record.dynamodb.approximate_creation_date_time.as_ref())?;
        let ttl_delete = record
            .user_identity
            .as_ref()
            .is_some_and(|u| u.principal_id == "dynamodb.amazonaws.com");
        Ok(ChangeEvent {
            event_id: record.event_id,
            kind: EventKind::from_name(&record.event_name),
            keys: record.dynamodb.keys,
            old_image: record.dynamodb.old_image,
            new_image: record.dynamodb.new_image,
            event_time_ms,
            sequence_number: record.dynamodb.sequence_number,
            shard_id: record.shard_id.unwrap_or_default(),
            size_bytes: record.dynamodb.size_bytes,
            view_type: record.dynamodb.stream_view_type,
            ttl_delete,
        })
    }
}

impl From<&ChangeEvent> for StreamRecord {
    fn from(event: &ChangeEvent) -> Self {
        let secs = event.event_time_ms / 1000;
        let time = if event.event_time_ms % 1000 == 0 {
            serde_json::Value::from(secs)
        } else {
            serde_json::Value::from(event.event_time_ms as f64 / 1000.0)
        };
        StreamRecord {
            event_id: event.event_id.clone(),
            event_name: event.kind.name().to_owned(),
            event_version: Some("1.1".to_owned()),
            event_source: Some("aws:dynamodb".to_owned()),
            aws_region: None,
            dynamodb: StreamRecordBody {
                approximate_creation_date_time: Some(time),
                keys: event.keys.clone(),
                new_image: event.new_image.clone(),
                old_image: event.old_image.clone(),
                sequence_number: event.sequence_number.clone(),
                size_bytes: event.size_bytes,
                stream_view_type: event.view_type.clone(),
            },
            user_identity: event.ttl_delete.then(|| UserIdentity {
                kind: "Service".to_owned(),
                principal_id: "dynamodb.amazonaws.com".to_owned(),
            }),
            shard_id: (!event.shard_id.is_empty()).then(|| event.shard_id.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAMBDA_RECORD: &str = r#"{"eventID":"c4ca4238a0b923820dcc509a6f75849b","eventName":"MODIFY","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"us-east-1","dynamodb":{"ApproximateCreationDateTime":1700000001,"Keys":{"pk":{"S":"o#1"}},"NewImage":{"pk":{"S":"o#1"},"amount":{"N":"10.25"}},"OldImage":{"pk":{"S":"o#1"},"amount":{"N":"9"}},"SequenceNumber":"4421584500000000017450439091","SizeBytes":26,"StreamViewType":"NEW_AND_OLD_IMAGES"}}"#;

    #[test]
    fn a_lambda_record_decodes_and_round_trips() {
        let event = ChangeEvent::try_from(StreamRecord::from_json(LAMBDA_RECORD).unwrap()).unwrap();
        assert_eq!(event.kind, EventKind::Modify);
        assert_eq!(event.event_time_ms, 1_700_000_001_000);
        assert_eq!(event.sequence_number, "4421584500000000017450439091");
        assert!(!event.ttl_delete);
        let again = ChangeEvent::try_from(StreamRecord::from(&event)).unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn iso_times_and_ttl_identities_are_understood() {
        let line = r#"{"eventID":"1","eventName":"REMOVE","dynamodb":{"ApproximateCreationDateTime":"2024-02-29T23:59:58.5Z","Keys":{"pk":{"S":"a"}},"SequenceNumber":"1"},"userIdentity":{"type":"Service","principalId":"dynamodb.amazonaws.com"}}"#;
        let event = ChangeEvent::try_from(StreamRecord::from_json(line).unwrap()).unwrap();
        assert_eq!(event.event_time_ms, 1_709_251_198_500);
        assert!(event.ttl_delete);
    }

    #[test]
    fn absurd_times_are_errors_not_panics() {
        for time in ["9300000000000000", "1e300", r#""2024-01-01T00:00:00.aaéZ""#] {
            let line = format!(
                r#"{{"eventID":"1","eventName":"INSERT","dynamodb":{{"ApproximateCreationDateTime":{time},"SequenceNumber":"1"}}}}"#
            );
            let err = ChangeEvent::try_from(StreamRecord::from_json(&line).unwrap()).unwrap_err();
            assert!(
                err.to_string().contains("ApproximateCreationDateTime"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_missing_time_is_a_named_error() {
        let line = r#"{"eventID":"1","eventName":"INSERT","dynamodb":{"SequenceNumber":"1"}}"#;
        let err = ChangeEvent::try_from(StreamRecord::from_json(line).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("ApproximateCreationDateTime"),
            "{err}"
        );
    }
}
