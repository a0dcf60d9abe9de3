//! The DynamoDB Streams source against the scripted fault server (driven through the real AWS SDK
//! client): what moto cannot produce. Each test asserts the exact records delivered.

mod source_harness;

use std::time::Duration;

use source_harness::{expected, keys, records, Run};

use streamlens_infra::fault_server::{Fault, FaultServer, RecordSpec};
use streamlens_ingest::{config::DynamoDbSourceConfig, Checkpoint, Error};

fn config(server: &FaultServer) -> DynamoDbSourceConfig {
    server.source_config()
}

#[tokio::test]
async fn children_of_a_split_are_read_only_after_the_parent_ends() {
    let server = FaultServer::start().await;
    server.add_shard("parent", None);
    server.push("parent", records("p", 30));
    server.split("parent", ["left", "right"]);
    server.push("left", records("l", 20));
    server.push("right", records("r", 25));
    let (batches, result) = Run::start(config(&server), Checkpoint::new())
        .await
        .finish(Duration::from_secs(60))
        .await;
    result.unwrap();
    let got = keys(&batches);
    assert_eq!(got.len(), 75);
    assert_eq!(
        got[..30],
        expected("parent", "p", 30)[..],
        "the parent comes first, in order"
    );
    let left: Vec<_> = got.iter().filter(|(s, _)| s == "left").cloned().collect();
    let right: Vec<_> = got.iter().filter(|(s, _)| s == "right").cloned().collect();
    assert_eq!(left, expected("left", "l", 20));
    assert_eq!(right, expected("right", "r", 25));
    // No child iterator was asked for before the parent's last GetRecords.
    let calls = server.calls();
    let parent_done = calls
        .iter()
        .rposition(|c| c.operation == "GetRecords" && c.shard_id.as_deref() == Some("parent"))
        .unwrap();
    let first_child = calls
        .iter()
        .position(|c| c.shard_id.as_deref().is_some_and(|s| s != "parent"))
        .unwrap();
    assert!(first_child > parent_done, "{calls:?}");
}

#[tokio::test]
async fn a_rollover_found_while_running_is_read_on() {
    let server = FaultServer::start().await;
    server.add_shard("s1", None);
    server.push("s1", records("a", 10));
    let mut run = Run::start(config(&server), Checkpoint::new()).await;
    run.until(10).await;
    server.rollover("s1", "s2");
    server.push("s2", records("b", 10));
    run.until(20).await;
    let (batches, result) = run.finish(Duration::from_secs(60)).await;
    result.unwrap();
    let mut want = expected("s1", "a", 10);
    want.extend(expected("s2", "b", 10));
    assert_eq!(keys(&batches), want);
}

#[tokio::test]
async fn an_expired_iterator_is_replaced_without_loss_or_repeat() {
    let server = FaultServer::start().await;
    server.add_shard("s1", None);
    server.push("s1", records("a", 5));
    let mut run = Run::start(config(&server), Checkpoint::new()).await;
    run.until(5).await;
    server.expire_iterators();
    server.push("s1", records("b", 5));
    run.until(10).await;
    let (batches, result) = run.finish(Duration::from_secs(60)).await;
    result.unwrap();
    let mut want = expected("s1", "a", 5);
    want.extend(expected("s1", "b", 5));
    assert_eq!(keys(&batches), want);
    assert!(server
        .calls()
        .iter()
        .any(|c| c.error.as_deref() == Some("ExpiredIteratorException")));
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let server = FaultServer::start().await;
    server.add_shard("s1", None);
    server.push("s1", records("a", 40));
    // More failures than the SDK's own three attempts, so the source's backoff is exercised.
    server.fail_next("GetRecords", 4, Fault::Throttle);
    server.fail_next("GetShardIterator", 4, Fault::Internal);
    let (batches, result) = Run::start(config(&server), Checkpoint::new())
        .await
        .finish(Duration::from_secs(60))
        .await;
    result.unwrap();
    assert_eq!(keys(&batches), expected("s1", "a", 40));
    let errors: Vec<_> = server.calls().into_iter().filter_map(|c| c.error).collect();
    assert_eq!(errors.len(), 8, "{errors:?}");
}

#[tokio::test]
async fn trimmed_data_is_a_recorded_gap_and_reading_goes_on() {
    let server = FaultServer::start().await;
    server.add_shard("s1", None);
    let seqs = server.push("s1", records("a", 10));
    // The checkpoint says we stored a0..a2; a3 and a4 are trimmed before we come back.
    server.trim_before("s1", &seqs[5]);
    let checkpoint = Checkpoint::from([("s1".to_owned(), seqs[2].clone())]);
    let (batches, result) = Run::start(config(&server), checkpoint)
        .await
        .finish(Duration::from_secs(60))
        .await;
    result.unwrap();
    let gaps: Vec<_> = batches.iter().flat_map(|b| &b.gaps).collect();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].after.as_deref(), Some(seqs[2].as_str()));
    let want: Vec<_> = expected("s1", "a", 10).into_iter().skip(5).collect();
    assert_eq!(keys(&batches), want);
}

#[tokio::test]
async fn reads_are_capped_at_1000_records_per_call() {
    let server = FaultServer::start().await;
    server.add_shard("s1", None);
    server.push("s1", records("a", 2500));
    let (batches, result) = Run::start(config(&server), Checkpoint::new())
        .await
        .finish(Duration::from_secs(60))
        .await;
    assert_eq!(result.unwrap().events, 2500);
    assert_eq!(keys(&batches), expected("s1", "a", 2500));
    let sizes: Vec<usize> = server
        .calls()
        .iter()
        .filter(|c| c.operation == "GetRecords" && c.records > 0)
        .map(|c| c.records)
        .collect();
    assert_eq!(sizes, vec![1000, 1000, 500]);
    // Each batch carries the position of its last record.
    assert_eq!(
        batches.iter().filter(|b| !b.positions.is_empty()).count(),
        3
    );
}

#[tokio::test]
async fn shards_listed_over_several_pages_are_all_read() {
    let server = FaultServer::start().await;
    server.set_describe_page_size(2);
    for s in 0..5 {
        let shard = format!("s{s}");
        server.add_shard(&shard, None);
        server.push(&shard, records(&format!("{shard}-"), 3));
    }
    let (batches, result) = Run::start(config(&server), Checkpoint::new())
        .await
        .finish(Duration::from_secs(60))
        .await;
    result.unwrap();
    let mut got = keys(&batches);
    got.sort();
    let mut want: Vec<_> = (0..5)
        .flat_map(|s| expected(&format!("s{s}"), &format!("s{s}-"), 3))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_deleted_stream_is_a_clear_error_not_a_hot_loop() {
    let server = FaultServer::start().await;
    server.add_shard("s1", None);
    server.push("s1", records("a", 3));
    let mut cfg = config(&server);
    cfg.stop_when_idle = None;
    let mut run = Run::start(cfg, Checkpoint::new()).await;
    run.until(3).await;
    server.delete_stream();
    let (_, result) =
        tokio::time::timeout(Duration::from_secs(10), run.finish(Duration::from_secs(60)))
            .await
            .expect("the source stops on its own");
    let err = result.unwrap_err();
    assert!(matches!(err, Error::StreamUnavailable(_)), "{err}");
    assert!(
        server.calls().len() < 100,
        "no hot loop: {} calls",
        server.calls().len()
    );
}

#[tokio::test]
async fn ttl_deletions_are_kept_and_marked() {
    let server = FaultServer::start().await;
    server.add_shard("s1", None);
    server.push(
        "s1",
        vec![
            RecordSpec::insert("k", "2", 1_767_225_600),
            RecordSpec::ttl_expiry("k", "2", 1_767_225_700),
        ],
    );
    let (batches, result) = Run::start(config(&server), Checkpoint::new())
        .await
        .finish(Duration::from_secs(60))
        .await;
    result.unwrap();
    let events: Vec<_> = batches.iter().flat_map(|b| &b.events).collect();
    assert_eq!(events.len(), 2);
    assert!(!events[0].ttl_delete);
    assert!(events[1].ttl_delete);
    assert_eq!(events[1].kind, streamlens_core::EventKind::Remove);
}
