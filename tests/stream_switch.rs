//! A source configured with a `table` follows the table from one stream to the next: the user
//! disables the stream and enables a new one (a new ARN), and the source reads the old stream to
//! its end, then the new one from its beginning. Run against the scripted fault server, through
//! the real AWS SDK clients (moto cannot disable and re-enable a stream).
//!
//! `RUST_LOG=streamlens_ingest=debug cargo test -p streamlens --test stream_switch -- --nocapture`
//! shows the source's decisions.

mod source_harness;

use std::time::{Duration, Instant};

use source_harness::{expected, keys, records, Run};

use streamlens_infra::fault_server::{Call, FaultServer};
use streamlens_ingest::{
    config::{DynamoDbSourceConfig, StartPosition},
    Checkpoint, Error,
};

/// Log lines of the source, when `RUST_LOG` asks for them.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The server's fast test configuration, following the table `orders` instead of a stream ARN.
fn table_config(server: &FaultServer) -> DynamoDbSourceConfig {
    DynamoDbSourceConfig {
        table: Some("orders".into()),
        stream_arn: None,
        stop_when_idle: Some(Duration::from_secs(2)),
        ..server.source_config()
    }
}

fn count(calls: &[Call], operation: &str) -> usize {
    calls.iter().filter(|c| c.operation == operation).count()
}

/// Waits until the source has asked for an iterator of `shard`.
async fn iterator_taken(server: &FaultServer, shard: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.calls().iter().any(|c| {
        c.operation == "GetShardIterator"
            && c.shard_id.as_deref() == Some(shard)
            && c.error.is_none()
    }) {
        assert!(
            Instant::now() < deadline,
            "no iterator of {shard} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_disabled_stream_is_followed_to_the_tables_new_stream() {
    init_logs();
    let server = FaultServer::start().await;
    let old = server.stream_arn();
    server.add_shard("shardId-first", None);
    server.push("shardId-first", records("a", 10));
    let mut run = Run::start(table_config(&server), Checkpoint::new()).await;
    run.until(10).await;

    server.disable_stream();
    let new = server.enable_new_stream();
    server.add_shard("shardId-second", None);
    server.push("shardId-second", records("b", 10));
    run.until(20).await;
    let (batches, result) = run.finish(Duration::from_secs(15)).await;
    let summary = result.expect("the source stops when idle, without error");
    assert_eq!(summary.events, 20);

    // Exactly a0..a9 from the old stream's shard, then b0..b9 from the new stream's, each once.
    let mut want = expected("shardId-first", "a", 10);
    want.extend(expected("shardId-second", "b", 10));
    assert_eq!(keys(&batches), want);
    // Positions (the checkpoint) follow, shard by shard.
    let positioned: Vec<&String> = batches.iter().flat_map(|b| b.positions.keys()).collect();
    assert_eq!(
        positioned.first().map(|s| s.as_str()),
        Some("shardId-first")
    );
    assert_eq!(
        positioned.last().map(|s| s.as_str()),
        Some("shardId-second")
    );

    let calls = server.calls();
    // The new stream was asked about only after the table named it, and its shard was read.
    let first_describe_table = calls
        .iter()
        .position(|c| c.operation == "DescribeTable")
        .unwrap();
    let first_on_new = calls
        .iter()
        .position(|c| c.stream_arn.as_deref() == Some(new.as_str()))
        .expect("calls about the new stream");
    assert!(first_describe_table < first_on_new);
    assert!(calls.iter().any(|c| c.operation == "GetRecords"
        && c.stream_arn.as_deref() == Some(new.as_str())
        && c.records == 10));
    // Nothing about the old stream once the new one is read.
    let last_on_old = calls
        .iter()
        .rposition(|c| c.stream_arn.as_deref() == Some(old.as_str()))
        .unwrap();
    assert!(last_on_old < first_on_new, "{calls:#?}");
    assert!(calls.iter().all(|c| c.error.is_none()), "{calls:#?}");
    // About 6 s of running at 100 ms discovery: no hot loop anywhere.
    assert!(calls.len() < 400, "{} calls", calls.len());
    // DescribeTable: once to connect, then only while the disabled stream waited for its successor.
    assert!(count(&calls, "DescribeTable") <= 10, "{calls:#?}");
}

#[tokio::test]
async fn a_table_deleted_while_reading_stops_the_source() {
    init_logs();
    let server = FaultServer::start().await;
    server.add_shard("shardId-first", None);
    server.push("shardId-first", records("a", 3));
    let mut config = table_config(&server);
    config.stop_when_idle = None;
    let mut run = Run::start(config, Checkpoint::new()).await;
    run.until(3).await;

    server.delete_table();
    let deleted = Instant::now();
    let (batches, result) = run.finish(Duration::from_secs(10)).await;
    let elapsed = deleted.elapsed();
    assert_eq!(keys(&batches), expected("shardId-first", "a", 3));
    let err = result.unwrap_err();
    let Error::StreamUnavailable(message) = &err else {
        panic!("expected StreamUnavailable, got {err:?}");
    };
    // The stream's ARN names the table: `...:table/orders/stream/...`.
    assert!(message.contains("table/orders/"), "{message}");
    assert!(
        elapsed < Duration::from_secs(3),
        "stopped after {elapsed:?}"
    );
    let calls = server.calls();
    assert!(calls.len() < 100, "no hot loop: {} calls", calls.len());
}

#[tokio::test]
async fn a_table_deleted_while_waiting_for_a_new_stream_stops_the_source() {
    init_logs();
    let server = FaultServer::start().await;
    server.add_shard("shardId-first", None);
    server.push("shardId-first", records("a", 3));
    let mut config = table_config(&server);
    config.stop_when_idle = None;
    let mut run = Run::start(config, Checkpoint::new()).await;
    run.until(3).await;

    // Disabled and read to its end: the source waits for the table's next stream...
    server.disable_stream();
    let waiting = Instant::now() + Duration::from_secs(10);
    while count(&server.calls(), "DescribeTable") < 3 {
        assert!(
            Instant::now() < waiting,
            "the source never looked at the table"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and the table goes away instead.
    server.delete_table();
    let deleted = Instant::now();
    let (batches, result) = run.finish(Duration::from_secs(10)).await;
    let elapsed = deleted.elapsed();
    assert_eq!(keys(&batches), expected("shardId-first", "a", 3));
    let err = result.unwrap_err();
    let Error::StreamUnavailable(message) = &err else {
        panic!("expected StreamUnavailable, got {err:?}");
    };
    assert_eq!(message, "table `orders` does not exist");
    assert!(
        elapsed < Duration::from_secs(3),
        "stopped after {elapsed:?}"
    );
    let calls = server.calls();
    assert!(calls.len() < 100, "no hot loop: {} calls", calls.len());
    let after: Vec<&Call> = calls
        .iter()
        .filter(|c| c.error.as_deref() == Some("ResourceNotFoundException"))
        .collect();
    assert!(after.len() <= 3, "{after:#?}");
}

/// While the stream is disabled and no new one is enabled yet, the source asks DescribeTable about
/// as often as it looks for shards (its `discovery_interval`), not on every turn of its loop.
///
/// Known bug, ignored until fixed: `DynamoDbSource::run` calls `stream_of_table` on every turn of
/// its loop (at least every 200 ms) once the disabled stream is read, and logs a WARN each time.
#[tokio::test]
async fn waiting_for_a_new_stream_polls_the_table_at_the_discovery_interval() {
    init_logs();
    let server = FaultServer::start().await;
    server.add_shard("shardId-first", None);
    server.push("shardId-first", records("a", 3));
    let mut config = table_config(&server);
    config.stop_when_idle = None;
    config.discovery_interval = Duration::from_secs(1);
    let mut run = Run::start(config, Checkpoint::new()).await;
    run.until(3).await;
    server.disable_stream();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let calls = server.calls();
    server.delete_table();
    let _ = run.finish(Duration::from_secs(10)).await;
    // One at connect, then at most one a second for about 4 s.
    let describe_table = count(&calls, "DescribeTable");
    assert!(
        describe_table <= 6,
        "{describe_table} DescribeTable calls in ~4 s"
    );
}

/// The new stream is read from its beginning even when the source was configured to start at
/// LATEST: records written to it before the source found it are not skipped.
///
/// Known bug, ignored until fixed: after the switch `DynamoDbSource::run` clears the checkpoint,
/// so `start_of` falls back to the configured start, and the new stream's shards start at LATEST:
/// b0..b9 are lost.
#[tokio::test]
async fn the_new_stream_is_read_from_trim_horizon_whatever_the_configured_start() {
    init_logs();
    let server = FaultServer::start().await;
    server.add_shard("shardId-first", None);
    let mut config = table_config(&server);
    config.start = StartPosition::Latest;
    let mut run = Run::start(config, Checkpoint::new()).await;
    iterator_taken(&server, "shardId-first").await;
    server.push("shardId-first", records("a", 10));
    run.until(10).await;

    server.disable_stream();
    server.enable_new_stream();
    server.add_shard("shardId-second", None);
    server.push("shardId-second", records("b", 10));
    let (batches, result) = run.finish(Duration::from_secs(15)).await;
    result.unwrap();
    let mut want = expected("shardId-first", "a", 10);
    want.extend(expected("shardId-second", "b", 10));
    assert_eq!(keys(&batches), want);
}

/// A source restarted from a checkpoint in the old stream after the switch reads the rest of the
/// old stream (still readable for 24 h) before the new one.
#[tokio::test]
async fn a_restart_during_the_switch_finishes_the_old_stream_first() {
    init_logs();
    let server = FaultServer::start().await;
    server.add_shard("shardId-first", None);
    let seqs = server.push("shardId-first", records("a", 10));
    server.disable_stream();
    server.enable_new_stream();
    server.add_shard("shardId-second", None);
    server.push("shardId-second", records("b", 10));
    // Stored a0..a4 before it stopped.
    let checkpoint = Checkpoint::from([("shardId-first".to_owned(), seqs[4].clone())]);
    let old = server.stream_arns()[0].clone();
    let (batches, result) = Run::start_in(table_config(&server), checkpoint, Some(old.clone()))
        .await
        .finish(Duration::from_secs(15))
        .await;
    result.unwrap();
    let mut want: Vec<_> = expected("shardId-first", "a", 10).split_off(5);
    want.extend(expected("shardId-second", "b", 10));
    assert_eq!(keys(&batches), want);
    // Every batch names the stream its positions belong to.
    let streams: Vec<_> = batches
        .iter()
        .filter(|b| !b.positions.is_empty())
        .map(|b| b.stream.clone().unwrap())
        .collect();
    let switch = streams.iter().position(|s| *s != old).unwrap();
    assert!(streams[..switch].iter().all(|s| *s == old));
    assert!(streams[switch..].iter().all(|s| *s == server.stream_arn()));
}

/// A checkpoint in a stream that no longer exists (older than 24 hours): the unread rest of it is
/// recorded as a gap, and the table's current stream is read from its beginning.
#[tokio::test]
async fn a_checkpoint_in_a_vanished_stream_records_a_gap_and_reads_the_current_stream() {
    init_logs();
    let server = FaultServer::start().await;
    server.add_shard("shardId-now", None);
    server.push("shardId-now", records("n", 5));
    let gone = format!("{}-expired", server.stream_arn());
    let checkpoint =
        Checkpoint::from([("shardId-old".to_owned(), "000000000000000000042".to_owned())]);
    let (batches, result) = Run::start_in(table_config(&server), checkpoint, Some(gone.clone()))
        .await
        .finish(Duration::from_secs(15))
        .await;
    result.unwrap();
    let gaps: Vec<_> = batches.iter().flat_map(|b| b.gaps.clone()).collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].shard_id, "shardId-old");
    assert_eq!(gaps[0].after.as_deref(), Some("000000000000000000042"));
    assert!(gaps[0].reason.contains(&gone), "{}", gaps[0].reason);
    assert_eq!(keys(&batches), expected("shardId-now", "n", 5));
}
