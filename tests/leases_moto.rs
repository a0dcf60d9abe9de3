//! The lease table on moto: conditional writes give each shard exactly one owner, a fenced worker
//! can commit nothing, and a source sharing its stream through leases still reads a split's
//! children only after the parent is read to its end and committed.

mod common;
mod source_harness;

use std::{sync::Arc, time::Duration};

use common::{moto_url, require, unique};
use source_harness::{expected, keys, records};
use streamlens_infra::fault_server::FaultServer;
use streamlens_ingest::{
    config::LeaseConfig,
    dynamodb::{lease::Leases, DynamoDbSource},
    Batch, Commit, Committer, Error, Recovery, Source,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn lease_config(table: &str) -> LeaseConfig {
    LeaseConfig {
        table: table.to_owned(),
        worker: None,
        group: None,
        lease_duration: Duration::from_secs(2),
        renew_interval: Some(Duration::from_millis(200)),
        endpoint_url: Some(moto_url()),
    }
}

async fn register(table: &str, worker: &str) -> Leases {
    let sdk = streamlens_ingest::aws::sdk_config(Some("us-east-1"), Some(&moto_url())).await;
    Leases::register(
        &lease_config(table),
        aws_sdk_dynamodb::Client::new(&sdk),
        "g",
        worker,
    )
    .await
    .unwrap()
}

/// The conditional write is what makes one owner: once one worker took a free shard, the other's
/// take (conditioned on the shard being free) fails. The two takes are made one after the other,
/// in both orders: moto does not serialise concurrent conditional writes the way DynamoDB does.
#[tokio::test]
async fn a_free_shard_taken_by_one_worker_cannot_be_taken_by_another() {
    require("moto", &moto_url()).await;
    let table = unique("leases-");
    let x = register(&table, "x").await;
    let y = register(&table, "y").await;
    for n in 0..10 {
        let shard = format!("shard-{n}");
        x.create(&shard, None).await.unwrap();
        y.create(&shard, None).await.unwrap(); // a second create changes nothing
        let (tx, ty) = if n % 2 == 0 {
            let tx = x.take(&shard, "", None).await.unwrap();
            (tx, y.take(&shard, "", None).await.unwrap())
        } else {
            let ty = y.take(&shard, "", None).await.unwrap();
            (x.take(&shard, "", None).await.unwrap(), ty)
        };
        assert!(tx ^ ty, "{shard}: x took it: {tx}, y took it: {ty}");
        let owner = x.read().await.unwrap().shards[&shard].owner.clone();
        assert_eq!(owner, if tx { "x" } else { "y" });
    }
    // Taking from a worker that is not the owner fails.
    let table_now = x.read().await.unwrap();
    let (shard, lease) = table_now.shards.iter().next().unwrap();
    let other = if lease.owner == "x" { "y" } else { "x" };
    assert!(!x.take(shard, other, None).await.unwrap());
}

#[tokio::test]
async fn a_fenced_worker_can_commit_nothing() {
    require("moto", &moto_url()).await;
    let table = unique("leases-");
    let x = register(&table, "x").await;
    let y = register(&table, "y").await;
    let commit = |version: u64, seq: &str| Commit {
        version,
        max_event_time: 1_000,
        positions: [("shard-0".to_owned(), seq.to_owned())].into(),
    };
    x.commit(&commit(5, "100")).await.unwrap();
    x.heartbeat().await.unwrap();
    let counter = y.read().await.unwrap().workers["x"].counter;
    // A stale observation does not fence a worker that moved on.
    assert!(y.fence("x", counter - 1).await.unwrap().is_none());
    let fenced = y.fence("x", counter).await.unwrap().expect("x was still");
    assert_eq!(fenced.committed_version, 5);
    assert_eq!(fenced.positions["shard-0"], "100");
    assert!(matches!(
        x.commit(&commit(6, "200")).await,
        Err(Error::Fenced(_))
    ));
    assert!(matches!(x.heartbeat().await, Err(Error::Fenced(_))));
    // What the fencer saw is final.
    let row = y.read().await.unwrap().workers["x"].clone();
    assert_eq!(row.committed_version, 5);
    assert_eq!(row.positions["shard-0"], "100");
    assert_eq!(x.committed_version(), 5);
}

#[tokio::test]
async fn registering_a_worker_again_fences_its_earlier_incarnation() {
    require("moto", &moto_url()).await;
    let table = unique("leases-");
    let old = register(&table, "x").await;
    old.commit(&Commit {
        version: 9,
        max_event_time: 42,
        positions: [("shard-0".to_owned(), "7".to_owned())].into(),
    })
    .await
    .unwrap();
    let new = register(&table, "x").await;
    assert!(matches!(old.heartbeat().await, Err(Error::Fenced(_))));
    new.heartbeat().await.unwrap();
    // The new incarnation resumes from what the old one committed.
    assert_eq!(new.registered().committed_version, 9);
    assert_eq!(new.registered().max_event_time, 42);
    assert_eq!(new.registered().positions["shard-0"], "7");
}

struct NothingToRollBack;

#[async_trait::async_trait]
impl Recovery for NothingToRollBack {
    async fn roll_back(&self, _: &str, _: u64) -> Result<(), String> {
        Ok(())
    }
}

/// The source with leases, acknowledging every batch the way the pipeline does (commit after the
/// batch is "stored"): the parent is read, committed and its lease marked finished before a child
/// is taken, and each record arrives once.
#[tokio::test]
async fn with_leases_a_split_is_read_parent_first_and_exactly_once() {
    require("moto", &moto_url()).await;
    let server = FaultServer::start().await;
    server.add_shard("shardId-parent", None);
    server.push("shardId-parent", records("p", 5));
    server.split("shardId-parent", ["shardId-left", "shardId-right"]);
    server.push("shardId-left", records("l", 4));
    server.push("shardId-right", records("r", 3));
    let table = unique("leases-");
    let mut config = server.source_config();
    config.stop_when_idle = None;
    config.lease = Some(lease_config(&table));
    let source = DynamoDbSource::connect(&config)
        .await
        .unwrap()
        .with_leases("g", Arc::new(NothingToRollBack))
        .await
        .unwrap();
    let leases = source.leases().unwrap();
    let (tx, mut rx) = mpsc::channel::<Batch>(4);
    let stop = CancellationToken::new();
    let task = tokio::spawn(Box::new(source).run(tx, stop.clone()));
    let mut batches = Vec::new();
    let mut positions = streamlens_ingest::Checkpoint::new();
    let mut version = 0;
    while keys(&batches).len() < 12 {
        let batch = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("12 records within 20 s, got {:?}", keys(&batches)))
            .unwrap();
        positions.extend(batch.positions.clone());
        version += 1;
        leases
            .commit(&Commit {
                version,
                max_event_time: 0,
                positions: positions.clone(),
            })
            .await
            .unwrap();
        batches.push(batch);
    }
    // Nothing more arrives.
    assert!(tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .is_err());
    let got = keys(&batches);
    assert_eq!(&got[..5], expected("shardId-parent", "p", 5).as_slice());
    let mut children: Vec<_> = got[5..].to_vec();
    children.sort();
    let mut want = expected("shardId-left", "l", 4);
    want.extend(expected("shardId-right", "r", 3));
    want.sort();
    assert_eq!(children, want);
    let table = leases.read().await.unwrap();
    assert!(table.shards["shardId-parent"].finished);
    assert_eq!(table.shards["shardId-parent"].owner, "");
    assert_eq!(table.shards["shardId-left"].owner, leases.worker());
    assert_eq!(table.shards["shardId-right"].owner, leases.worker());
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_clean_shutdown_frees_every_lease_at_its_committed_position() {
    require("moto", &moto_url()).await;
    let table = unique("leases-");
    let x = register(&table, "x").await;
    for shard in ["s-1", "s-2", "s-3"] {
        x.create(shard, None).await.unwrap();
        assert!(x.take(shard, "", Some("5")).await.unwrap());
    }
    x.commit(&Commit {
        version: 3,
        max_event_time: 0,
        positions: [("s-1".to_owned(), "40".to_owned())].into(),
    })
    .await
    .unwrap();
    assert_eq!(x.release_all().await.unwrap(), 3);
    let table = x.read().await.unwrap();
    assert!(table.shards.values().all(|l| l.owner.is_empty()));
    // Committed beyond the hand-over position: the commit; never committed: where it started.
    assert_eq!(table.shards["s-1"].checkpoint.as_deref(), Some("40"));
    assert_eq!(table.shards["s-2"].checkpoint.as_deref(), Some("5"));
}
