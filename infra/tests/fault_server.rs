//! The fault server, driven through the real `aws-sdk-dynamodbstreams` client: every answer must
//! parse and every error must map to its typed variant.

use std::time::Duration;

use aws_sdk_dynamodbstreams::{
    config::retry::RetryConfig,
    error::ProvideErrorMetadata,
    types::{
        AttributeValue, OperationType, Record, Shard, ShardIteratorType, StreamDescription,
        StreamStatus,
    },
    Client,
};
use serde_json::Value;
use streamlens_infra::fault_server::{
    Call, Fault, FaultServer, RecordSpec, STREAM_LABEL, TABLE_ARN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T0: i64 = 1_767_225_600;

/// A client of `server` that does not retry, so every fault shows as the typed error.
async fn client(server: &FaultServer) -> Client {
    client_with(server, RetryConfig::disabled()).await
}

async fn client_with(server: &FaultServer, retry: RetryConfig) -> Client {
    let sdk = streamlens_ingest::aws::sdk_config(Some("us-east-1"), Some(&server.url())).await;
    let config = aws_sdk_dynamodbstreams::config::Builder::from(&sdk)
        .retry_config(retry)
        .build();
    Client::from_conf(config)
}

async fn iterator(
    client: &Client,
    server: &FaultServer,
    shard: &str,
    kind: ShardIteratorType,
    seq: Option<&str>,
) -> String {
    client
        .get_shard_iterator()
        .stream_arn(server.stream_arn())
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_sequence_number(seq.map(str::to_owned))
        .send()
        .await
        .expect("GetShardIterator")
        .shard_iterator()
        .expect("an iterator")
        .to_owned()
}

async fn read(client: &Client, it: &str, limit: Option<i32>) -> (Vec<Record>, Option<String>) {
    let out = client
        .get_records()
        .shard_iterator(it)
        .set_limit(limit)
        .send()
        .await
        .expect("GetRecords");
    (
        out.records().to_vec(),
        out.next_shard_iterator().map(str::to_owned),
    )
}

async fn describe_all(client: &Client, server: &FaultServer) -> Vec<Shard> {
    let out = client
        .describe_stream()
        .stream_arn(server.stream_arn())
        .send()
        .await
        .expect("DescribeStream");
    let description = out.stream_description().expect("a description");
    assert_eq!(description.last_evaluated_shard_id(), None);
    description.shards().to_vec()
}

fn seqs(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.dynamodb().unwrap().sequence_number().unwrap().to_owned())
        .collect()
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: &str) -> AttributeValue {
    AttributeValue::N(value.to_owned())
}

fn pk(record: &Record) -> String {
    match record.dynamodb().unwrap().keys().unwrap().get("pk") {
        Some(AttributeValue::S(pk)) => pk.clone(),
        other => panic!("unexpected key {other:?}"),
    }
}

/// Asserts every field of a record made by `RecordSpec::{insert, modify, remove}`.
fn assert_record(
    record: &Record,
    kind: OperationType,
    key: &str,
    old_amount: Option<&str>,
    new_amount: Option<&str>,
    t: i64,
    seq: &str,
) {
    assert_eq!(record.event_name(), Some(&kind));
    assert_eq!(record.event_version(), Some("1.1"));
    assert_eq!(record.event_source(), Some("aws:dynamodb"));
    assert_eq!(record.aws_region(), Some("us-east-1"));
    assert_eq!(record.event_id().map(str::len), Some(32));
    let data = record.dynamodb().expect("dynamodb");
    assert_eq!(data.sequence_number(), Some(seq));
    assert_eq!(
        data.approximate_creation_date_time().map(|t| t.secs()),
        Some(t)
    );
    assert_eq!(
        data.stream_view_type().map(|v| v.as_str()),
        Some("NEW_AND_OLD_IMAGES")
    );
    assert!(data.size_bytes().unwrap() > 0);
    assert_eq!(data.keys().unwrap().len(), 1);
    assert_eq!(data.keys().unwrap()["pk"], s(key));
    let image = |amount: Option<&str>| {
        amount.map(|a| {
            [("pk".to_owned(), s(key)), ("amount".to_owned(), n(a))]
                .into_iter()
                .collect()
        })
    };
    assert_eq!(data.new_image().cloned(), image(new_amount));
    assert_eq!(data.old_image().cloned(), image(old_amount));
}

fn call(
    operation: &str,
    stream: Option<&str>,
    shard: Option<&str>,
    records: usize,
    error: Option<&str>,
) -> Call {
    Call {
        operation: operation.to_owned(),
        stream_arn: stream.map(str::to_owned),
        shard_id: shard.map(str::to_owned),
        records,
        error: error.map(str::to_owned),
    }
}

fn inserts(count: usize) -> Vec<RecordSpec> {
    (0..count)
        .map(|i| RecordSpec::insert(&format!("order#{i:06}"), &format!("{i}.00"), T0 + i as i64))
        .collect()
}

#[tokio::test]
async fn list_streams_and_describe_stream_pages() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    for i in 0..5 {
        server.add_shard(&format!("shardId-{i}"), None);
    }

    let streams = client.list_streams().send().await.expect("ListStreams");
    assert_eq!(streams.streams().len(), 1);
    let stream = &streams.streams()[0];
    assert_eq!(stream.stream_arn(), Some(server.stream_arn().as_str()));
    assert_eq!(stream.table_name(), Some("orders"));
    assert_eq!(stream.stream_label(), Some("2026-01-01T00:00:00.000"));
    let for_table = client
        .list_streams()
        .table_name("orders")
        .send()
        .await
        .expect("ListStreams for the table");
    assert_eq!(for_table.streams().len(), 1);

    server.set_describe_page_size(2);
    let mut pages = Vec::new();
    let mut start = None;
    loop {
        let out = client
            .describe_stream()
            .stream_arn(server.stream_arn())
            .set_exclusive_start_shard_id(start.take())
            .send()
            .await
            .expect("DescribeStream");
        let description = out.stream_description().unwrap().clone();
        let ids: Vec<String> = description
            .shards()
            .iter()
            .map(|s| s.shard_id().unwrap().to_owned())
            .collect();
        let last = description.last_evaluated_shard_id().map(str::to_owned);
        pages.push((ids, last.clone()));
        match last {
            Some(last) => start = Some(last),
            None => {
                assert_eq!(description.stream_arn(), Some(server.stream_arn().as_str()));
                assert_eq!(description.stream_status(), Some(&StreamStatus::Enabled));
                assert_eq!(description.table_name(), Some("orders"));
                assert_eq!(
                    description.stream_view_type().map(|v| v.as_str()),
                    Some("NEW_AND_OLD_IMAGES")
                );
                let key = &description.key_schema()[0];
                assert_eq!(key.attribute_name(), "pk");
                assert_eq!(key.key_type().as_str(), "HASH");
                assert_eq!(
                    description.creation_request_date_time().map(|t| t.secs()),
                    Some(T0)
                );
                break;
            }
        }
    }
    let page = |ids: &[&str], last: Option<&str>| {
        (
            ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            last.map(str::to_owned),
        )
    };
    assert_eq!(
        pages,
        vec![
            page(&["shardId-0", "shardId-1"], Some("shardId-1")),
            page(&["shardId-2", "shardId-3"], Some("shardId-3")),
            page(&["shardId-4"], None),
        ]
    );

    // A Limit below the server's page size wins.
    let out = client
        .describe_stream()
        .stream_arn(server.stream_arn())
        .limit(1)
        .exclusive_start_shard_id("shardId-3")
        .send()
        .await
        .unwrap();
    let description = out.stream_description().unwrap();
    assert_eq!(description.shards()[0].shard_id(), Some("shardId-4"));
    assert_eq!(description.last_evaluated_shard_id(), None);

    // Open shards have a starting sequence number only, increasing in creation order.
    server.set_describe_page_size(100);
    let shards = describe_all(&client, &server).await;
    let starts: Vec<&str> = shards
        .iter()
        .map(|s| {
            let range = s.sequence_number_range().unwrap();
            assert_eq!(range.ending_sequence_number(), None);
            assert_eq!(s.parent_shard_id(), None);
            range.starting_sequence_number().unwrap()
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
    assert!(starts.iter().all(|s| s.len() >= 21));
}

#[tokio::test]
async fn iterator_types_position_the_reader() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    server.add_shard("shardId-a", None);
    let seq = server.push(
        "shardId-a",
        vec![
            RecordSpec::insert("order#1", "10.00", T0),
            RecordSpec::modify("order#1", "10.00", "12.50", T0 + 1),
            RecordSpec::remove("order#1", "12.50", T0 + 2),
        ],
    );
    assert_eq!(seq.len(), 3);
    assert!(seq[0] < seq[1] && seq[1] < seq[2]);

    let it = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (records, next) = read(&client, &it, None).await;
    assert_eq!(records.len(), 3);
    assert_record(
        &records[0],
        OperationType::Insert,
        "order#1",
        None,
        Some("10.00"),
        T0,
        &seq[0],
    );
    assert_record(
        &records[1],
        OperationType::Modify,
        "order#1",
        Some("10.00"),
        Some("12.50"),
        T0 + 1,
        &seq[1],
    );
    assert_record(
        &records[2],
        OperationType::Remove,
        "order#1",
        Some("12.50"),
        None,
        T0 + 2,
        &seq[2],
    );
    assert!(records.iter().all(|r| r.user_identity().is_none()));
    // An open shard always gives a next iterator, also when there is nothing new.
    let (again, next) = read(&client, &next.expect("open shard"), None).await;
    assert!(again.is_empty());
    assert!(next.is_some());

    let at = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::AtSequenceNumber,
        Some(&seq[1]),
    )
    .await;
    assert_eq!(seqs(&read(&client, &at, None).await.0), &seq[1..]);
    let after = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::AfterSequenceNumber,
        Some(&seq[1]),
    )
    .await;
    assert_eq!(seqs(&read(&client, &after, None).await.0), &seq[2..]);

    let latest = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::Latest,
        None,
    )
    .await;
    let (records, latest_next) = read(&client, &latest, None).await;
    assert!(records.is_empty());
    let ttl = server.push(
        "shardId-a",
        vec![RecordSpec::ttl_expiry("order#2", "5.00", T0 + 3)],
    );
    // Both the LATEST iterator and the one it returned now see exactly the new record.
    for it in [latest, latest_next.unwrap()] {
        let (records, _) = read(&client, &it, None).await;
        assert_eq!(records.len(), 1);
        assert_record(
            &records[0],
            OperationType::Remove,
            "order#2",
            Some("5.00"),
            None,
            T0 + 3,
            &ttl[0],
        );
        let identity = records[0].user_identity().expect("a TTL deletion");
        assert_eq!(identity.r#type(), Some("Service"));
        assert_eq!(identity.principal_id(), Some("dynamodb.amazonaws.com"));
    }

    // The sequence number must lie in the shard, and must be given.
    let err = client
        .get_shard_iterator()
        .stream_arn(server.stream_arn())
        .shard_id("shardId-a")
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .send()
        .await
        .unwrap_err();
    let err = err.into_service_error();
    assert_eq!(err.code(), Some("ValidationException"));
    assert_eq!(
        err.message(),
        Some("sequence number is required for AT_SEQUENCE_NUMBER")
    );
    server.add_shard("shardId-b", None);
    let err = client
        .get_shard_iterator()
        .stream_arn(server.stream_arn())
        .shard_id("shardId-b")
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .sequence_number(&seq[0])
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("ValidationException"));
    let err = client
        .get_shard_iterator()
        .stream_arn(server.stream_arn())
        .shard_id("shardId-nope")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
}

#[tokio::test]
async fn get_records_returns_at_most_1000_records() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    server.add_shard("shardId-a", None);
    let pushed = server.push("shardId-a", inserts(2500));
    let mut sorted = pushed.clone();
    sorted.sort();
    assert_eq!(sorted, pushed, "string order is push order");

    let mut it = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    let mut pages = Vec::new();
    let mut read_seqs = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..4 {
        let (records, next) = read(&client, &it, None).await;
        pages.push(records.len());
        read_seqs.extend(seqs(&records));
        keys.extend(records.iter().map(pk));
        it = next.expect("an open shard has a next iterator");
    }
    assert_eq!(pages, [1000, 1000, 500, 0]);
    assert_eq!(read_seqs, pushed);
    let expected: Vec<String> = (0..2500).map(|i| format!("order#{i:06}")).collect();
    assert_eq!(keys, expected);

    // A smaller Limit wins; a Limit above 1000 is rejected, as DynamoDB does.
    let it = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (records, _) = read(&client, &it, Some(300)).await;
    assert_eq!(seqs(&records), &pushed[..300]);
    let err = client
        .get_records()
        .shard_iterator(&it)
        .limit(1001)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("ValidationException"));
    assert_eq!(
        err.message(),
        Some("limit must be between 1 and 1000, found 1001")
    );

    let get_records: Vec<usize> = server
        .calls()
        .iter()
        .filter(|c| c.operation == "GetRecords")
        .map(|c| c.records)
        .collect();
    assert_eq!(get_records, [1000, 1000, 500, 0, 300, 0]);
}

#[tokio::test]
async fn get_records_returns_at_most_1_mb() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    server.add_shard("shardId-a", None);
    // Five records of about 300 KB: three fit in 1 MB.
    let big = "x".repeat(300 * 1024);
    let specs = (0..5)
        .map(|i| {
            let mut spec = RecordSpec::insert(&format!("order#{i}"), "1.00", T0);
            spec.new_image.as_mut().unwrap()["note"] = serde_json::json!({ "S": big });
            spec
        })
        .collect();
    let pushed = server.push("shardId-a", specs);
    let it = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (first, next) = read(&client, &it, None).await;
    assert_eq!(seqs(&first), &pushed[..3]);
    assert_eq!(
        first[0].dynamodb().unwrap().new_image().unwrap()["note"],
        s(&big)
    );
    let (second, _) = read(&client, &next.unwrap(), None).await;
    assert_eq!(seqs(&second), &pushed[3..]);
}

#[tokio::test]
async fn a_closed_shard_ends_without_next_iterator() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    server.add_shard("shardId-a", None);
    server.add_shard("shardId-empty", None);
    let pushed = server.push("shardId-a", inserts(3));
    let it = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (records, next) = read(&client, &it, Some(2)).await;
    assert_eq!(seqs(&records), &pushed[..2]);
    server.close_shard("shardId-a");
    server.close_shard("shardId-empty");

    // The reader gets the rest, and the answer with the last record has no next iterator.
    let (records, next) = read(&client, &next.unwrap(), Some(2)).await;
    assert_eq!(seqs(&records), &pushed[2..]);
    assert_eq!(next, None);
    // LATEST of a closed shard is past its end.
    let latest = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::Latest,
        None,
    )
    .await;
    assert_eq!(read(&client, &latest, None).await, (vec![], None));
    let empty = iterator(
        &client,
        &server,
        "shardId-empty",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    assert_eq!(read(&client, &empty, None).await, (vec![], None));

    let shards = describe_all(&client, &server).await;
    let a = shards[0].sequence_number_range().unwrap();
    assert_eq!(a.ending_sequence_number(), Some(pushed[2].as_str()));
    assert!(a.starting_sequence_number().unwrap() < pushed[0].as_str());
    let empty = shards[1].sequence_number_range().unwrap();
    assert!(empty.ending_sequence_number().unwrap() > empty.starting_sequence_number().unwrap());
}

#[tokio::test]
async fn split_and_rollover_show_lineage() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    server.add_shard("shardId-parent", None);
    server.add_shard("shardId-old", None);
    let parent_seqs = server.push("shardId-parent", inserts(2));
    server.split("shardId-parent", ["shardId-left", "shardId-right"]);
    server.rollover("shardId-old", "shardId-new");
    let left = server.push(
        "shardId-left",
        vec![RecordSpec::insert("order#l", "1.00", T0)],
    );
    let right = server.push(
        "shardId-right",
        vec![RecordSpec::insert("order#r", "2.00", T0)],
    );

    let shards = describe_all(&client, &server).await;
    let lineage: Vec<(&str, Option<&str>, bool)> = shards
        .iter()
        .map(|s| {
            let closed = s
                .sequence_number_range()
                .unwrap()
                .ending_sequence_number()
                .is_some();
            (s.shard_id().unwrap(), s.parent_shard_id(), closed)
        })
        .collect();
    assert_eq!(
        lineage,
        [
            ("shardId-parent", None, true),
            ("shardId-old", None, true),
            ("shardId-left", Some("shardId-parent"), false),
            ("shardId-right", Some("shardId-parent"), false),
            ("shardId-new", Some("shardId-old"), false),
        ]
    );
    let parent_end = shards[0]
        .sequence_number_range()
        .unwrap()
        .ending_sequence_number()
        .unwrap();
    assert_eq!(parent_end, parent_seqs[1]);
    for child in &shards[2..4] {
        assert!(
            child
                .sequence_number_range()
                .unwrap()
                .starting_sequence_number()
                .unwrap()
                > parent_end
        );
    }

    // The parent drains and ends; the children carry on.
    let it = iterator(
        &client,
        &server,
        "shardId-parent",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (records, next) = read(&client, &it, None).await;
    assert_eq!(seqs(&records), parent_seqs);
    assert_eq!(next, None);
    for (child, pushed) in [("shardId-left", &left), ("shardId-right", &right)] {
        let it = iterator(
            &client,
            &server,
            child,
            ShardIteratorType::TrimHorizon,
            None,
        )
        .await;
        let (records, next) = read(&client, &it, None).await;
        assert_eq!(&seqs(&records), pushed);
        assert!(next.is_some());
    }
}

#[tokio::test]
async fn expired_iterators_answer_expired_iterator_exception() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    server.add_shard("shardId-a", None);
    let pushed = server.push("shardId-a", inserts(2));
    let it = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (records, next) = read(&client, &it, Some(1)).await;
    assert_eq!(seqs(&records), &pushed[..1]);
    server.expire_iterators();

    for old in [it, next.unwrap()] {
        let err = client
            .get_records()
            .shard_iterator(old)
            .send()
            .await
            .unwrap_err();
        let service = err.as_service_error().expect("a service error");
        assert!(service.is_expired_iterator_exception(), "{err:?}");
        assert_eq!(service.meta().code(), Some("ExpiredIteratorException"));
        assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    }
    // A fresh iterator resumes after the last record read.
    let fresh = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::AfterSequenceNumber,
        Some(&pushed[0]),
    )
    .await;
    assert_eq!(seqs(&read(&client, &fresh, None).await.0), &pushed[1..]);
    let errors: Vec<Option<String>> = server.calls().into_iter().map(|c| c.error).collect();
    assert_eq!(
        errors,
        [
            None,
            None,
            Some("ExpiredIteratorException".to_owned()),
            Some("ExpiredIteratorException".to_owned()),
            None,
            None
        ]
    );
}

#[tokio::test]
async fn trimmed_records_answer_trimmed_data_access_exception() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    server.add_shard("shardId-a", None);
    let pushed = server.push("shardId-a", inserts(4));
    let behind = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (records, caught_up) = read(&client, &behind, Some(2)).await;
    assert_eq!(seqs(&records), &pushed[..2]);
    server.trim_before("shardId-a", &pushed[2]);

    // Positioned before a dropped record: trimmed.
    let err = client
        .get_records()
        .shard_iterator(&behind)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_trimmed_data_access_exception(), "{err:?}");
    let err = client
        .get_shard_iterator()
        .stream_arn(server.stream_arn())
        .shard_id("shardId-a")
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .sequence_number(&pushed[1])
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_trimmed_data_access_exception(), "{err:?}");

    // Past the dropped records: nothing lost.
    let (records, _) = read(&client, &caught_up.unwrap(), None).await;
    assert_eq!(seqs(&records), &pushed[2..]);
    let horizon = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    assert_eq!(seqs(&read(&client, &horizon, None).await.0), &pushed[2..]);
    let after_dropped = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::AfterSequenceNumber,
        Some(&pushed[1]),
    )
    .await;
    assert_eq!(
        seqs(&read(&client, &after_dropped, None).await.0),
        &pushed[2..]
    );
}

#[tokio::test]
async fn injected_faults_map_to_typed_errors() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    server.add_shard("shardId-a", None);
    let pushed = server.push("shardId-a", inserts(1));
    let it = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    server.fail_next("GetRecords", 1, Fault::Throttle);
    server.fail_next("GetRecords", 1, Fault::Throttling);
    server.fail_next("GetRecords", 1, Fault::Internal);

    let err = client
        .get_records()
        .shard_iterator(&it)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    assert!(err.into_service_error().is_limit_exceeded_exception());
    let err = client
        .get_records()
        .shard_iterator(&it)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    // ThrottlingException is not modeled by DynamoDB Streams: an unhandled error with its code.
    let err = err.into_service_error();
    assert!(!err.is_limit_exceeded_exception() && !err.is_internal_server_error());
    assert_eq!(err.code(), Some("ThrottlingException"));
    assert_eq!(err.message(), Some("rate exceeded (injected fault)"));
    let err = client
        .get_records()
        .shard_iterator(&it)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 500);
    assert!(err.into_service_error().is_internal_server_error());
    // The faults are used up: the iterator still works.
    assert_eq!(seqs(&read(&client, &it, None).await.0), pushed);

    server.fail_next("DescribeStream", 1, Fault::Internal);
    server.fail_next("GetShardIterator", 1, Fault::Throttle);
    let err = client
        .describe_stream()
        .stream_arn(server.stream_arn())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_internal_server_error());
    let err = client
        .get_shard_iterator()
        .stream_arn(server.stream_arn())
        .shard_id("shardId-a")
        .shard_iterator_type(ShardIteratorType::Latest)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("LimitExceededException"));

    let a = Some("shardId-a");
    let arn = server.stream_arn();
    let on = Some(arn.as_str());
    assert_eq!(
        server.calls(),
        [
            call("GetShardIterator", on, a, 0, None),
            call("GetRecords", on, a, 0, Some("LimitExceededException")),
            call("GetRecords", on, a, 0, Some("ThrottlingException")),
            call("GetRecords", on, a, 0, Some("InternalServerError")),
            call("GetRecords", on, a, 1, None),
            call("DescribeStream", on, None, 0, Some("InternalServerError")),
            call("GetShardIterator", on, a, 0, Some("LimitExceededException")),
        ]
    );
}

#[tokio::test]
async fn the_sdk_retries_throttling_and_5xx_three_times() {
    let server = FaultServer::start().await;
    // The SDK's standard policy (three attempts), with a short backoff to keep the test fast.
    let retry = RetryConfig::standard().with_initial_backoff(Duration::from_millis(1));
    let client = client_with(&server, retry).await;
    server.add_shard("shardId-a", None);
    let pushed = server.push("shardId-a", inserts(1));
    let it = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;

    // Two faults are absorbed by the retries.
    server.fail_next("GetRecords", 1, Fault::Throttling);
    server.fail_next("GetRecords", 1, Fault::Internal);
    assert_eq!(seqs(&read(&client, &it, None).await.0), pushed);
    // Three are not: the last one surfaces, typed.
    server.fail_next("GetRecords", 3, Fault::Throttle);
    let err = client
        .get_records()
        .shard_iterator(&it)
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_limit_exceeded_exception());

    let calls = server.calls();
    let errors: Vec<Option<&str>> = calls.iter().skip(1).map(|c| c.error.as_deref()).collect();
    assert_eq!(
        errors,
        [
            Some("ThrottlingException"),
            Some("InternalServerError"),
            None,
            Some("LimitExceededException"),
            Some("LimitExceededException"),
            Some("LimitExceededException"),
        ]
    );
}

#[tokio::test]
async fn a_deleted_stream_answers_resource_not_found() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    server.add_shard("shardId-a", None);
    server.push("shardId-a", inserts(1));
    let it = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    server.delete_stream();

    let err = client
        .describe_stream()
        .stream_arn(server.stream_arn())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let err = client
        .get_shard_iterator()
        .stream_arn(server.stream_arn())
        .shard_id("shardId-a")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let err = client
        .get_records()
        .shard_iterator(it)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let err = client
        .list_streams()
        .table_name("orders")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let all = client.list_streams().send().await.expect("ListStreams");
    assert!(all.streams().is_empty());
}

#[tokio::test]
async fn a_disabled_stream_closes_its_shards() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    server.add_shard("shardId-a", None);
    let pushed = server.push("shardId-a", inserts(2));
    server.disable_stream();
    let out = client
        .describe_stream()
        .stream_arn(server.stream_arn())
        .send()
        .await
        .unwrap();
    let description = out.stream_description().unwrap();
    assert_eq!(description.stream_status(), Some(&StreamStatus::Disabled));
    let range = description.shards()[0].sequence_number_range().unwrap();
    assert_eq!(range.ending_sequence_number(), Some(pushed[1].as_str()));
    let it = iterator(
        &client,
        &server,
        "shardId-a",
        ShardIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (records, next) = read(&client, &it, None).await;
    assert_eq!(seqs(&records), pushed);
    assert_eq!(next, None);
}

/// Posts `body` with a raw HTTP/1.1 request; returns the status and the JSON body.
async fn raw_post(server: &FaultServer, target: Option<&str>, body: &str) -> (u16, Value) {
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let target = target
        .map(|t| format!("X-Amz-Target: {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\n{target}Content-Type: application/x-amz-json-1.0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-amz-json-1.0"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test]
async fn bad_requests_are_validation_errors() {
    let server = FaultServer::start().await;
    server.add_shard("shardId-a", None);
    let error = |name: &str, message: &str| serde_json::json!({ "__type": format!("com.amazonaws.dynamodb.v20120810#{name}"), "message": message });
    let op = |name: &str| format!("DynamoDBStreams_20120810.{name}");

    assert_eq!(
        raw_post(&server, Some(&op("GetRecords")), "{not json").await,
        (
            400,
            error(
                "ValidationException",
                "request body is not JSON: key must be a string at line 1 column 2"
            )
        )
    );
    assert_eq!(
        raw_post(&server, Some(&op("GetRecords")), "{}").await,
        (
            400,
            error(
                "ValidationException",
                "invalid GetRecords request: missing field `ShardIterator`"
            )
        )
    );
    assert_eq!(
        raw_post(&server, Some(&op("GetRecords")), r#"{"ShardIterator": 7}"#)
            .await
            .1["message"],
        "invalid GetRecords request: invalid type: integer `7`, expected a string"
    );
    assert_eq!(
        raw_post(
            &server,
            Some(&op("GetRecords")),
            r#"{"ShardIterator": "garbage"}"#
        )
        .await,
        (400, error("ValidationException", "invalid shard iterator"))
    );
    assert_eq!(
        raw_post(
            &server,
            Some(&op("DescribeStream")),
            r#"{"StreamArn": "arn:nope", "Limit": 1}"#
        )
        .await,
        (
            400,
            error(
                "ResourceNotFoundException",
                "requested resource not found: stream arn:nope does not exist"
            )
        )
    );
    let body = format!(r#"{{"StreamArn": "{}", "Limit": 0}}"#, server.stream_arn());
    assert_eq!(
        raw_post(&server, Some(&op("DescribeStream")), &body).await,
        (
            400,
            error(
                "ValidationException",
                "limit must be between 1 and 100, found 0"
            )
        )
    );
    let body = format!(
        r#"{{"StreamArn": "{}", "ShardId": "shardId-a", "ShardIteratorType": "AT_SEQUENCE_NUMBER", "SequenceNumber": "12x"}}"#,
        server.stream_arn()
    );
    assert_eq!(
        raw_post(&server, Some(&op("GetShardIterator")), &body).await,
        (
            400,
            error("ValidationException", "invalid sequence number `12x`")
        )
    );
    let body = format!(
        r#"{{"StreamArn": "{}", "ShardId": "shardId-a", "ShardIteratorType": "OLDEST"}}"#,
        server.stream_arn()
    );
    let (status, answer) = raw_post(&server, Some(&op("GetShardIterator")), &body).await;
    assert_eq!((status, answer["message"].as_str()), (400, Some(
        "unknown shard iterator type `OLDEST`, expected TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER"
    )));

    let (status, answer) = raw_post(&server, Some(&op("PutRecords")), "{}").await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["__type"],
        "com.amazon.coral.service#UnknownOperationException"
    );
    assert_eq!(
        answer["message"],
        "unknown operation `DynamoDBStreams_20120810.PutRecords`"
    );
    let (status, answer) = raw_post(&server, None, "{}").await;
    assert_eq!(status, 400);
    assert_eq!(answer["message"], "missing x-amz-target header");

    let calls = server.calls();
    assert_eq!(calls.len(), 10);
    assert_eq!(
        calls[0],
        call("GetRecords", None, None, 0, Some("ValidationException"))
    );
    assert_eq!(calls[8].operation, "DynamoDBStreams_20120810.PutRecords");
    assert_eq!(
        calls[9],
        call("", None, None, 0, Some("UnknownOperationException"))
    );
}

#[tokio::test]
async fn clones_share_the_server_and_shutdown_stops_it() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    let clone = server.clone();
    clone.add_shard("shardId-a", None);
    assert_eq!(describe_all(&client, &server).await.len(), 1);
    clone.shutdown().await;
    let err = client
        .describe_stream()
        .stream_arn(server.stream_arn())
        .send()
        .await
        .unwrap_err();
    assert!(err.as_service_error().is_none(), "{err:?}");
    assert_eq!(server.calls().len(), 1);
}

/// A DynamoDB client of `server` that does not retry.
async fn table_client(server: &FaultServer) -> aws_sdk_dynamodb::Client {
    let sdk = streamlens_ingest::aws::sdk_config(Some("us-east-1"), Some(&server.url())).await;
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// DescribeTable's (LatestStreamArn, LatestStreamLabel, StreamEnabled).
async fn latest_stream(table: &aws_sdk_dynamodb::Client) -> (String, String, bool) {
    let out = table
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("DescribeTable");
    let description = out.table().expect("a table");
    let spec = description.stream_specification().expect("a stream spec");
    assert_eq!(
        spec.stream_view_type().map(|v| v.as_str()),
        Some("NEW_AND_OLD_IMAGES")
    );
    (
        description.latest_stream_arn().expect("an ARN").to_owned(),
        description
            .latest_stream_label()
            .expect("a label")
            .to_owned(),
        spec.stream_enabled(),
    )
}

async fn describe_stream_of(client: &Client, arn: &str) -> StreamDescription {
    client
        .describe_stream()
        .stream_arn(arn)
        .send()
        .await
        .expect("DescribeStream")
        .stream_description()
        .expect("a description")
        .clone()
}

async fn iterator_of(client: &Client, arn: &str, shard: &str) -> String {
    client
        .get_shard_iterator()
        .stream_arn(arn)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("GetShardIterator")
        .shard_iterator()
        .expect("an iterator")
        .to_owned()
}

#[tokio::test]
async fn describe_table_names_the_current_stream() {
    use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType, StreamViewType, TableStatus};

    let server = FaultServer::start().await;
    let table = table_client(&server).await;
    let out = table
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("DescribeTable");
    let description = out.table().expect("a table");
    assert_eq!(description.table_name(), Some("orders"));
    assert_eq!(description.table_arn(), Some(TABLE_ARN));
    assert_eq!(description.table_status(), Some(&TableStatus::Active));
    assert_eq!(description.creation_date_time().map(|t| t.secs()), Some(T0));
    let key = &description.key_schema()[0];
    assert_eq!(
        (key.attribute_name(), key.key_type()),
        ("pk", &KeyType::Hash)
    );
    let attribute = &description.attribute_definitions()[0];
    assert_eq!(
        (attribute.attribute_name(), attribute.attribute_type()),
        ("pk", &ScalarAttributeType::S)
    );
    assert_eq!(
        description.latest_stream_arn(),
        Some(server.stream_arn().as_str())
    );
    assert_eq!(description.latest_stream_label(), Some(STREAM_LABEL));
    assert!(server
        .stream_arn()
        .ends_with(&format!("/stream/{STREAM_LABEL}")));
    let spec = description.stream_specification().unwrap();
    assert!(spec.stream_enabled());
    assert_eq!(
        spec.stream_view_type(),
        Some(&StreamViewType::NewAndOldImages)
    );
    // The table's ARN names it too.
    let by_arn = table.describe_table().table_name(TABLE_ARN).send().await;
    assert_eq!(
        by_arn.unwrap().table().unwrap().latest_stream_arn(),
        Some(server.stream_arn().as_str())
    );

    let err = table
        .describe_table()
        .table_name("customers")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    let err = err.into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    assert_eq!(
        err.message(),
        Some("requested resource not found: table customers not found")
    );

    server.fail_next("DescribeTable", 1, Fault::Internal);
    let err = table
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_internal_server_error(), "{err:?}");

    // Over the wire: the DynamoDB target prefix, a missing table name, a DynamoDB operation that
    // is not served.
    let (status, answer) = raw_post(&server, Some("DynamoDB_20120810.DescribeTable"), "{}").await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["message"],
        "invalid DescribeTable request: missing field `TableName`"
    );
    let (status, answer) = raw_post(
        &server,
        Some("DynamoDB_20120810.DescribeTable"),
        r#"{"TableName": "orders"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["Table"]["StreamSpecification"]["StreamEnabled"],
        true
    );
    assert_eq!(answer["Table"]["CreationDateTime"], T0);
    let (status, answer) = raw_post(&server, Some("DynamoDB_20120810.GetRecords"), "{}").await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["__type"],
        "com.amazon.coral.service#UnknownOperationException"
    );

    let ok = || call("DescribeTable", None, None, 0, None);
    let failed = |error| call("DescribeTable", None, None, 0, Some(error));
    assert_eq!(
        server.calls(),
        [
            ok(),
            ok(),
            failed("ResourceNotFoundException"),
            failed("InternalServerError"),
            failed("ValidationException"),
            ok(),
            call(
                "DynamoDB_20120810.GetRecords",
                None,
                None,
                0,
                Some("UnknownOperationException"),
            ),
        ]
    );
}

#[tokio::test]
async fn a_new_stream_after_disabling_the_old_one() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    let table = table_client(&server).await;
    let old = server.stream_arn();
    server.add_shard("shardId-a", None);
    let old_seqs = server.push("shardId-a", inserts(3));
    // A reader one record into the old stream's shard.
    let it = iterator_of(&client, &old, "shardId-a").await;
    let (records, reader) = read(&client, &it, Some(1)).await;
    assert_eq!(seqs(&records), &old_seqs[..1]);

    // Disabled: the table still names the old stream, not enabled.
    server.disable_stream();
    assert_eq!(
        latest_stream(&table).await,
        (old.clone(), STREAM_LABEL.to_owned(), false)
    );

    let new = server.enable_new_stream();
    let new_label = "2026-01-01T01:00:00.000";
    assert_eq!(
        new,
        format!("arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/{new_label}")
    );
    assert_eq!(server.stream_arn(), new);
    assert_eq!(server.stream_arns(), [old.clone(), new.clone()]);
    assert_eq!(
        latest_stream(&table).await,
        (new.clone(), new_label.to_owned(), true)
    );
    let fresh = describe_stream_of(&client, &new).await;
    assert_eq!(fresh.stream_arn(), Some(new.as_str()));
    assert_eq!(fresh.stream_label(), Some(new_label));
    assert_eq!(fresh.stream_status(), Some(&StreamStatus::Enabled));
    assert_eq!(
        fresh.creation_request_date_time().map(|t| t.secs()),
        Some(T0 + 3600)
    );
    assert!(fresh.shards().is_empty());

    // The script methods now act on the new stream; a shard id may repeat across streams.
    server.add_shard("shardId-a", None);
    server.add_shard("shardId-b", None);
    let new_seqs = server.push("shardId-a", inserts(2));
    assert!(
        new_seqs[0] > old_seqs[2],
        "one sequence counter for all streams"
    );

    // The old stream still answers: DISABLED, its closed shard, its records.
    let disabled = describe_stream_of(&client, &old).await;
    assert_eq!(disabled.stream_status(), Some(&StreamStatus::Disabled));
    assert_eq!(disabled.stream_label(), Some(STREAM_LABEL));
    assert_eq!(disabled.shards().len(), 1);
    let range = disabled.shards()[0].sequence_number_range().unwrap();
    assert_eq!(range.ending_sequence_number(), Some(old_seqs[2].as_str()));
    let (records, next) = read(&client, &reader.unwrap(), None).await;
    assert_eq!(seqs(&records), &old_seqs[1..]);
    assert_eq!(next, None, "the old shard is read to its end");
    let again = iterator_of(&client, &old, "shardId-a").await;
    let (records, next) = read(&client, &again, None).await;
    assert_eq!(seqs(&records), old_seqs);
    assert_eq!(next, None);

    // The new stream: its own shards and records, each iterator bound to its stream.
    let current = describe_stream_of(&client, &new).await;
    let ids: Vec<_> = current
        .shards()
        .iter()
        .map(|s| s.shard_id().unwrap())
        .collect();
    assert_eq!(ids, ["shardId-a", "shardId-b"]);
    assert!(current.shards()[0]
        .sequence_number_range()
        .unwrap()
        .ending_sequence_number()
        .is_none());
    let it = iterator_of(&client, &new, "shardId-a").await;
    let (records, next) = read(&client, &it, None).await;
    assert_eq!(seqs(&records), new_seqs);
    assert!(next.is_some(), "the new stream's shard is open");

    // ListStreams lists both, oldest first, in pages.
    let all = client
        .list_streams()
        .table_name("orders")
        .send()
        .await
        .unwrap();
    let listed: Vec<_> = all
        .streams()
        .iter()
        .map(|s| (s.stream_arn().unwrap(), s.stream_label().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [(old.as_str(), STREAM_LABEL), (new.as_str(), new_label)]
    );
    assert_eq!(all.last_evaluated_stream_arn(), None);
    let first = client.list_streams().limit(1).send().await.unwrap();
    assert_eq!(first.streams()[0].stream_arn(), Some(old.as_str()));
    assert_eq!(first.last_evaluated_stream_arn(), Some(old.as_str()));
    let second = client
        .list_streams()
        .limit(1)
        .exclusive_start_stream_arn(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(second.streams()[0].stream_arn(), Some(new.as_str()));
    assert_eq!(second.last_evaluated_stream_arn(), None);

    // The call log tells the streams apart.
    let on_old: Vec<(String, Option<String>)> = server
        .calls()
        .into_iter()
        .filter(|c| c.stream_arn.as_deref() == Some(old.as_str()))
        .map(|c| (c.operation, c.shard_id))
        .collect();
    let a = || Some("shardId-a".to_owned());
    assert_eq!(
        on_old,
        [
            ("GetShardIterator".to_owned(), a()),
            ("GetRecords".to_owned(), a()),
            ("DescribeStream".to_owned(), None),
            ("GetRecords".to_owned(), a()),
            ("GetShardIterator".to_owned(), a()),
            ("GetRecords".to_owned(), a()),
        ]
    );
}

#[tokio::test]
async fn requests_are_routed_by_stream_arn() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    let old = server.stream_arn();
    server.add_shard("shardId-old", None);
    server.disable_stream();
    let new = server.enable_new_stream();
    server.add_shard("shardId-new", None);

    // Each stream knows only its own shards.
    let err = client
        .get_shard_iterator()
        .stream_arn(&old)
        .shard_id("shardId-new")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    assert_eq!(
        err.message(),
        Some("requested resource not found: shard shardId-new does not exist")
    );
    iterator_of(&client, &new, "shardId-new").await;

    // An ARN that is none of the table's streams, even one of the right shape.
    let unknown =
        "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T02:00:00.000";
    let err = client
        .describe_stream()
        .stream_arn(unknown)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    assert_eq!(
        err.message().unwrap(),
        format!("requested resource not found: stream {unknown} does not exist")
    );
    let err = client
        .get_shard_iterator()
        .stream_arn(unknown)
        .shard_id("shardId-new")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let err = client
        .list_streams()
        .exclusive_start_stream_arn(unknown)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("ValidationException"));
}

#[tokio::test]
#[should_panic(expected = "disable it before enabling a new one")]
async fn a_second_enabled_stream_is_a_scripting_mistake() {
    let server = FaultServer::start().await;
    server.enable_new_stream();
}

#[tokio::test]
async fn a_deleted_table_takes_every_stream_with_it() {
    let server = FaultServer::start().await;
    let client = client(&server).await;
    let table = table_client(&server).await;
    let old = server.stream_arn();
    server.add_shard("shardId-a", None);
    server.push("shardId-a", inserts(2));
    let old_it = iterator_of(&client, &old, "shardId-a").await;
    server.disable_stream();
    let new = server.enable_new_stream();
    server.add_shard("shardId-b", None);
    let new_it = iterator_of(&client, &new, "shardId-b").await;
    server.delete_table();

    let err = table
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    for arn in [&old, &new] {
        let err = client
            .describe_stream()
            .stream_arn(arn)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_resource_not_found_exception(), "{err:?}");
        assert_eq!(
            err.message().unwrap(),
            format!("requested resource not found: stream {arn} was deleted")
        );
    }
    for it in [old_it, new_it] {
        let err = client
            .get_records()
            .shard_iterator(it)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_resource_not_found_exception(), "{err:?}");
    }
    let err = client
        .list_streams()
        .table_name("orders")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    assert!(client
        .list_streams()
        .send()
        .await
        .unwrap()
        .streams()
        .is_empty());
}
