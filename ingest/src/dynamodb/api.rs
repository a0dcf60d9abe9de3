//! Thin wrappers over the DynamoDB and DynamoDB Streams APIs, and the conversion of SDK records
//! into [`ChangeEvent`]s.

use std::collections::BTreeMap;

use aws_sdk_dynamodbstreams::{
    types::{AttributeValue as SdkValue, OperationType, Record, Shard, ShardIteratorType},
    Client,
};
use streamlens_core::{AttributeValue, ChangeEvent, EventKind, Item};

use crate::Error;

fn aws_err<E: std::fmt::Debug>(operation: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Aws {
        operation,
        message: format!("{e:?}"),
    }
}

/// The latest stream of a table, or a clear error when it has none.
pub async fn stream_of_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<String, Error> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            Some(service) if service.is_resource_not_found_exception() => {
                Error::StreamUnavailable(format!("table `{table}` does not exist"))
            }
            _ => aws_err("DescribeTable")(e),
        })?;
    let description = out.table();
    let enabled = description
        .and_then(|t| t.stream_specification())
        .is_some_and(|s| s.stream_enabled());
    match description.and_then(|t| t.latest_stream_arn()) {
        Some(arn) if enabled => Ok(arn.to_owned()),
        _ => Err(Error::StreamUnavailable(format!(
            "table `{table}` has no stream enabled (enable one with view type NEW_AND_OLD_IMAGES)"
        ))),
    }
}

/// Every shard of a stream, following DescribeStream's pagination.
pub async fn list_shards(client: &Client, stream_arn: &str) -> Result<Vec<Shard>, Error> {
    let mut shards = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let out = client
            .describe_stream()
            .stream_arn(stream_arn)
            .set_exclusive_start_shard_id(start.take())
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_resource_not_found_exception() => {
                    Error::StreamUnavailable(format!("stream `{stream_arn}` does not exist"))
                }
                _ => aws_err("DescribeStream")(e),
            })?;
        let Some(description) = out.stream_description() else {
            break;
        };
        shards.extend(description.shards().iter().cloned());
        match description.last_evaluated_shard_id() {
            Some(last) => start = Some(last.to_owned()),
            None => break,
        }
    }
    Ok(shards)
}

/// A shard iterator of the given type.
pub async fn shard_iterator(
    client: &Client,
    stream_arn: &str,
    shard_id: &str,
    kind: ShardIteratorType,
    sequence_number: Option<&str>,
) -> Result<Option<String>, Error> {
    let out = client
        .get_shard_iterator()
        .stream_arn(stream_arn)
        .shard_id(shard_id)
        .shard_iterator_type(kind)
        .set_sequence_number(sequence_number.map(str::to_owned))
        .send()
        .await
        .map_err(aws_err("GetShardIterator"))?;
    Ok(out.shard_iterator().map(str::to_owned))
}

/// One GetRecords call: the records and the next iterator (`None` once a closed shard is done).
pub async fn get_records(
    client: &Client,
    iterator: &str,
    limit: i32,
) -> Result<(Vec<Record>, Option<String>), Error> {
    let out = client
        .get_records()
        .shard_iterator(iterator)
        .limit(limit)
        .send()
        .await
        .map_err(aws_err("GetRecords"))?;
    Ok((
        out.records().to_vec(),
        out.next_shard_iterator().map(str::to_owned),
    ))
}

/// Converts an SDK attribute value; `None` for a type this SDK version does not know.
pub fn convert_value(value: &SdkValue) -> Result<AttributeValue, String> {
    Ok(match value {
        SdkValue::S(s) => AttributeValue::S(s.clone()),
        SdkValue::N(n) => AttributeValue::N(n.clone()),
        SdkValue::B(b) => AttributeValue::B(b.as_ref().to_vec()),
        SdkValue::Bool(b) => AttributeValue::Bool(*b),
        SdkValue::Null(b) => AttributeValue::Null(*b),
        SdkValue::M(m) => AttributeValue::M(convert_item(m)?),
        SdkValue::L(l) => AttributeValue::L(l.iter().map(convert_value).collect::<Result<_, _>>()?),
        SdkValue::Ss(v) => AttributeValue::SS(v.clone()),
        SdkValue::Ns(v) => AttributeValue::NS(v.clone()),
        SdkValue::Bs(v) => AttributeValue::BS(v.iter().map(|b| b.as_ref().to_vec()).collect()),
        other => return Err(format!("unknown attribute value type {other:?}")),
    })
}

/// Converts an SDK item.
pub fn convert_item(item: &std::collections::HashMap<String, SdkValue>) -> Result<Item, String> {
    item.iter()
        .map(|(k, v)| {
            convert_value(v)
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("attribute `{k}`: {e}"))
        })
        .collect::<Result<BTreeMap<_, _>, _>>()
}

/// Converts one SDK record read from `shard_id`.
pub fn convert_record(record: &Record, shard_id: &str) -> Result<ChangeEvent, String> {
    let body = record
        .dynamodb()
        .ok_or_else(|| "record has no dynamodb section".to_owned())?;
    let kind = match record.event_name() {
        Some(OperationType::Insert) => EventKind::Insert,
        Some(OperationType::Modify) => EventKind::Modify,
        Some(OperationType::Remove) => EventKind::Remove,
        Some(other) => EventKind::Unknown(other.as_str().to_owned()),
        None => return Err("record has no eventName".to_owned()),
    };
    let event_time_ms = body
        .approximate_creation_date_time()
        .ok_or_else(|| "record has no ApproximateCreationDateTime".to_owned())?
        .to_millis()
        .map_err(|e| format!("ApproximateCreationDateTime out of range: {e}"))?;
    let image =
        |i: Option<&std::collections::HashMap<String, SdkValue>>| i.map(convert_item).transpose();
    Ok(ChangeEvent {
        event_id: record.event_id().unwrap_or_default().to_owned(),
        kind,
        keys: body
            .keys()
            .map(convert_item)
            .transpose()?
            .unwrap_or_default(),
        old_image: image(body.old_image())?,
        new_image: image(body.new_image())?,
        event_time_ms,
        sequence_number: body
            .sequence_number()
            .ok_or_else(|| "record has no SequenceNumber".to_owned())?
            .to_owned(),
        shard_id: shard_id.to_owned(),
        size_bytes: body.size_bytes().unwrap_or_default().max(0) as u64,
        view_type: body.stream_view_type().map(|v| v.as_str().to_owned()),
        ttl_delete: record
            .user_identity()
            .and_then(|u| u.principal_id())
            .is_some_and(|p| p == "dynamodb.amazonaws.com"),
    })
}
