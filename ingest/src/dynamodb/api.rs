use std::collections::BTreeMap;

use aws_sdk_dynamodbstreams::{
    error::{ProvideErrorMetadata, SdkError},
    types::{
        AttributeValue as SdkValue, OperationType, Record, Shard, ShardIteratorType, StreamStatus,
    },
    Client,
};
use streamlens_core::{AttributeValue, ChangeEvent, EventKind, Item};

use crate::Error;

/// What went wrong with a call, as far as the read loop cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Throttled (LimitExceededException, ThrottlingException): back off and retry.
    Throttled(String),
    /// A server or network failure (5xx, timeout, dispatch): back off and retry.
    Transient(String),
    /// The shard iterator is older than 15 minutes: take a new one.
    ExpiredIterator,
    /// The position asked for is older than the stream's 24 hours: records were lost.
    TrimmedData(String),
    /// The stream, shard or table does not exist (any more).
    NotFound(String),
    /// Anything else: not worth retrying.
    Fatal(String),
}

impl ApiError {
    fn from_sdk<E, R>(operation: &str, e: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let message = format!(
            "{operation}: {}",
            e.message().map(str::to_owned).unwrap_or_else(|| {
                aws_smithy_types::error::display::DisplayErrorContext(&e).to_string()
            })
        );
        match &e {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => return ApiError::Transient(message),
            SdkError::ConstructionFailure(_) => return ApiError::Fatal(message),
            _ => {}
        }
        match e.code() {
            Some("ExpiredIteratorException") => ApiError::ExpiredIterator,
            Some("TrimmedDataAccessException") => ApiError::TrimmedData(message),
            Some("ResourceNotFoundException") => ApiError::NotFound(message),
            Some(
                "LimitExceededException"
                | "ThrottlingException"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded",
            ) => ApiError::Throttled(message),
            Some("InternalServerError" | "ServiceUnavailable" | "InternalFailure") => {
                ApiError::Transient(message)
            }
            _ => {
                let server_side = matches!(&e, SdkError::ServiceError(_))
                    && format!("{:?}", e.raw_response()).contains("status: 5");
                if server_side {
                    ApiError::Transient(message)
                } else {
                    ApiError::Fatal(message)
                }
            }
        }
    }

    /// Whether backing off and calling again can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApiError::Throttled(_) | ApiError::Transient(_))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Throttled(m) => write!(f, "throttled: {m}"),
            ApiError::Transient(m) => write!(f, "transient failure: {m}"),
            ApiError::ExpiredIterator => write!(f, "shard iterator expired"),
            ApiError::TrimmedData(m) => write!(f, "data trimmed: {m}"),
            ApiError::NotFound(m) => write!(f, "not found: {m}"),
            ApiError::Fatal(m) => write!(f, "{m}"),
        }
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(m) => Error::StreamUnavailable(m),
            other => Error::Aws {
                operation: "DynamoDB Streams",
                message: other.to_string(),
            },
        }
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
            _ => Error::Aws {
                operation: "DescribeTable",
                message: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
            },
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

/// A stream's shards (following DescribeStream's pagination) and whether it is still enabled.
pub async fn describe_stream(
    client: &Client,
    stream_arn: &str,
) -> Result<(Vec<Shard>, bool), ApiError> {
    let mut shards = Vec::new();
    let mut start: Option<String> = None;
    let mut enabled = true;
    loop {
        let out = client
            .describe_stream()
            .stream_arn(stream_arn)
            .set_exclusive_start_shard_id(start.take())
            .send()
            .await
            .map_err(|e| ApiError::from_sdk("DescribeStream", e))?;
        let Some(description) = out.stream_description() else {
            break;
        };
        enabled &= !matches!(
            description.stream_status(),
            Some(StreamStatus::Disabled | StreamStatus::Disabling)
        );
        shards.extend(description.shards().iter().cloned());
        match description.last_evaluated_shard_id() {
            Some(last) => start = Some(last.to_owned()),
            None => break,
        }
    }
    Ok((shards, enabled))
}

/// A shard iterator of the given type (`None`: the shard has nothing more to give).
pub async fn shard_iterator(
    client: &Client,
    stream_arn: &str,
    shard_id: &str,
    kind: ShardIteratorType,
    sequence_number: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let out = client
        .get_shard_iterator()
        .stream_arn(stream_arn)
        .shard_id(shard_id)
        .shard_iterator_type(kind)
        .set_sequence_number(sequence_number.map(str::to_owned))
        .send()
        .await
        .map_err(|e| ApiError::from_sdk("GetShardIterator", e))?;
    Ok(out.shard_iterator().map(str::to_owned))
}

/// One GetRecords call: the records and the next iterator (`None` once a closed shard is done).
pub async fn get_records(
    client: &Client,
    iterator: &str,
    limit: i32,
) -> Result<(Vec<Record>, Option<String>), ApiError> {
    let out = client
        .get_records()
        .shard_iterator(iterator)
        .limit(limit)
        .send()
        .await
        .map_err(|e| ApiError::from_sdk("GetRecords", e))?;
    let next = out.next_shard_iterator().map(str::to_owned);
    Ok((out.records.unwrap_or_default(), next))
}

/// Compares two sequence numbers (decimal strings of any length) numerically.
pub fn cmp_sequence(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
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
