//! Start positions and resuming, against moto: a restart neither skips nor repeats a record, and
//! the aggregates after the restart are those of all the writes.

mod common;

use std::{collections::BTreeSet, time::Duration};

use streamlens_core::{AggQuery, AggregateReader};
use tokio_util::sync::CancellationToken;

fn dynamodb_source(table: &str, extra: &str) -> String {
    format!(
        "kind = \"dynamodb\"\ntable = \"{table}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\nstop_when_idle = \"2s\"\npoll_interval = \"100ms\"\n{extra}",
        common::moto_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_after_the_checkpoint_with_exact_aggregates() {
    common::require("moto", &common::moto_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let (client, table) = common::table_with_stream("resume").await;
    let store = format!(
        "kind = \"embedded\"\npath = \"{}\"",
        dir.path().join("s.redb").display()
    );
    let mut writer = common::Writer::new(99);

    let mut seen = Vec::new();
    for run in 0..3 {
        writer.write(&client, &table, 120).await;
        let archive = dir.path().join(format!("run{run}.ndjson"));
        let config = common::config(
            &dynamodb_source(&table, ""),
            &store,
            dir.path(),
            &format!("archive_to = \"{}\"", archive.display()),
        );
        let summary = streamlens::app::run(config, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            summary.source.events, 120,
            "run {run} reads only the new writes"
        );
        seen.extend(common::archived_sequences(&archive));
    }
    let distinct: BTreeSet<_> = seen.iter().collect();
    assert_eq!(seen.len(), writer.writes, "every write read");
    assert_eq!(distinct.len(), seen.len(), "no record read twice");

    let embedded =
        streamlens_aggregator::store::embedded::EmbeddedStore::open(&dir.path().join("s.redb"))
            .unwrap();
    let docs = embedded.query(&AggQuery::default()).await.unwrap();
    for window in ["1m", "5m"] {
        assert_eq!(
            common::totals_of_docs(&docs, window),
            writer.totals(),
            "window {window}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_start_position_starts_where_it_says() {
    common::require("moto", &common::moto_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let (client, table) = common::table_with_stream("start").await;
    let mut writer = common::Writer::new(5);
    writer.write(&client, &table, 40).await;

    // Each run gets its own store, so no checkpoint interferes.
    let run = |name: &str, start: &str| {
        let archive = dir.path().join(format!("{name}.ndjson"));
        let config = common::config(
            &dynamodb_source(&table, start),
            &format!(
                "kind = \"embedded\"\npath = \"{}\"",
                dir.path().join(format!("{name}.redb")).display()
            ),
            &dir.path().join(name),
            &format!("archive_to = \"{}\"", archive.display()),
        );
        (config, archive)
    };

    let (config, archive) = run("trim", "start = \"trim_horizon\"");
    streamlens::app::run(config, CancellationToken::new())
        .await
        .unwrap();
    let all = common::archived_sequences(&archive);
    assert_eq!(all.len(), 40);

    let (config, archive) = run(
        "at",
        &format!("start = {{ at_sequence_number = \"{}\" }}", all[10]),
    );
    streamlens::app::run(config, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(common::archived_sequences(&archive), all[10..]);

    let (config, archive) = run(
        "after",
        &format!("start = {{ after_sequence_number = \"{}\" }}", all[10]),
    );
    streamlens::app::run(config, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(common::archived_sequences(&archive), all[11..]);

    // Latest: only what is written once the source runs.
    let (mut config, archive) = run("latest", "start = \"latest\"");
    if let streamlens_ingest::SourceConfig::Dynamodb(c) = &mut config.source {
        c.stop_when_idle = Some(Duration::from_secs(4));
    }
    let task = tokio::spawn(streamlens::app::run(config, CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    writer.write(&client, &table, 7).await;
    task.await.unwrap().unwrap();
    let latest = common::archived_sequences(&archive);
    assert_eq!(latest.len(), 7, "{latest:?}");
    assert!(latest.iter().all(|s| !all.contains(s)));
}

/// Group commit: between durable commits a pipeline's writes are deferred, and an idle pipeline
/// makes them durable within a second. A process killed (SIGKILL, no shutdown) once it is idle has
/// lost nothing: its store holds the effect of every change it read, with the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_killed_while_idle_has_made_its_writes_durable() {
    common::require("moto", &common::moto_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let (client, table) = common::table_with_stream("idlekill").await;
    let mut writer = common::Writer::new(7);
    writer.write(&client, &table, 80).await;
    let store = dir.path().join("s.redb");
    // A source that does not stop when idle.
    let config = common::config_text(
        &format!(
            "kind = \"dynamodb\"\ntable = \"{table}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\npoll_interval = \"100ms\"",
            common::moto_url()
        ),
        &format!("kind = \"embedded\"\npath = \"{}\"", store.display()),
        dir.path(),
        "",
    );
    // Started, then time to read the 80 changes (polled every 100 ms) and go idle, and more than
    // a second idle.
    let mut run = common::RunProcess::started(dir.path(), "idle", &config).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    run.kill();

    let embedded = streamlens_aggregator::store::embedded::EmbeddedStore::open(&store).unwrap();
    let docs = embedded.query(&AggQuery::default()).await.unwrap();
    for window in ["1m", "5m"] {
        assert_eq!(
            common::totals_of_docs(&docs, window),
            writer.totals(),
            "window {window}: {}",
            run.logs()
        );
    }
    let checkpoint = streamlens_aggregator::Store::checkpoint(&embedded, "orders")
        .await
        .unwrap();
    assert!(
        checkpoint.is_some_and(|c| !c.positions.is_empty()),
        "the checkpoint was made durable with the documents"
    );
}
