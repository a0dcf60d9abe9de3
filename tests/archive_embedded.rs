//! The archive source into the embedded store: exact aggregates, and a malformed line is
//! quarantined by line number while the rest of the archive is processed; changes the engine
//! refuses are quarantined with their shard and sequence number.

mod common;

/// `archive` read into an embedded store in `dir`.
fn archive_to_embedded(
    archive: &std::path::Path,
    dir: &std::path::Path,
) -> streamlens::config::Config {
    common::config(
        &format!("kind = \"archive\"\npath = \"{}\"", archive.display()),
        &format!(
            "kind = \"embedded\"\npath = \"{}\"",
            dir.join("s.redb").display()
        ),
        dir,
        "",
    )
}

use streamlens_core::{AggQuery, AggregateReader};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn archive_to_embedded_is_exact_and_quarantines_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let events = streamlens_infra::sample::generate(streamlens_infra::sample::SampleSpec {
        changes: 1500,
        seed: 11,
        ..Default::default()
    });
    let mut lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(&streamlens_core::StreamRecord::from(e)).unwrap())
        .collect();
    lines.insert(
        9,
        r#"{"eventID": "broken", "eventName": "INSERT", "dynamodb": {"#.to_owned(),
    );
    let text = lines.join("\n") + "\n";
    let archive = dir.path().join("orders.ndjson");
    std::fs::write(&archive, &text).unwrap();

    let (expected, bad) = common::totals_of_archive_text(&text);
    assert_eq!(bad, 1);
    assert!(
        expected.len() >= 5,
        "the sample must cover several statuses"
    );

    let config = archive_to_embedded(&archive, dir.path());
    let store_path = dir.path().join("s.redb");
    let summary = streamlens::app::run(config, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.source.events, 1500);
    assert_eq!(summary.quarantined, 1);
    assert_eq!(summary.aggregated, 1500);

    let quarantine = std::fs::read_to_string(dir.path().join("quarantine.ndjson")).unwrap();
    assert_eq!(quarantine.lines().count(), 1);
    assert!(quarantine.contains("orders.ndjson line 10"), "{quarantine}");

    let store = streamlens_aggregator::store::embedded::EmbeddedStore::open(&store_path).unwrap();
    let docs = store.query(&AggQuery::default()).await.unwrap();
    for window in ["1m", "5m"] {
        assert_eq!(
            common::totals_of_docs(&docs, window),
            expected,
            "window {window}"
        );
    }
    // Every 1m window lies inside its 5m window.
    assert!(docs
        .iter()
        .all(|d| d.window_end - d.window_start == if d.window == "1m" { 60_000 } else { 300_000 }));
}

/// A source that never runs dry, its batches always waiting on the pipeline's full channel.
struct Endless(Vec<streamlens_core::ChangeEvent>);

#[async_trait::async_trait]
impl streamlens_ingest::Source for Endless {
    fn describe(&self) -> String {
        "endless".to_owned()
    }

    async fn run(
        self: Box<Self>,
        out: tokio::sync::mpsc::Sender<streamlens_ingest::Batch>,
        _shutdown: CancellationToken,
    ) -> Result<streamlens_ingest::SourceSummary, streamlens_ingest::Error> {
        loop {
            let batch = streamlens_ingest::Batch {
                events: self.0.clone(),
                ..Default::default()
            };
            // Deliberately deaf to shutdown: only a closed channel ends it.
            if out.send(batch).await.is_err() {
                return Err(streamlens_ingest::Error::DownstreamClosed);
            }
        }
    }
}

/// Interrupted while its source is blocked on a full channel, a run still ends promptly and
/// cleanly (the pipeline lets go of the channel before waiting for the source).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_ends_a_run_whose_source_is_blocked_on_a_full_channel() {
    let dir = tempfile::tempdir().unwrap();
    let events = streamlens_infra::sample::generate(streamlens_infra::sample::SampleSpec {
        changes: 200,
        seed: 3,
        ..Default::default()
    });
    let archive = dir.path().join("unused.ndjson");
    std::fs::write(&archive, "").unwrap();
    let config = archive_to_embedded(&archive, dir.path());
    let shutdown = CancellationToken::new();
    let wrap = streamlens::app::SourceWrapper {
        wrap: Box::new(move |_| Box::new(Endless(events))),
        reads_changes: false,
    };
    let run = tokio::spawn(streamlens::app::run_with(
        config,
        shutdown.clone(),
        Some(wrap),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    shutdown.cancel();
    let summary = tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .expect("the run ends within 10 s of the interrupt")
        .unwrap()
        .unwrap();
    assert!(summary.source.events > 0, "{summary:?}");
    assert_eq!(summary.source.events, summary.aggregated, "{summary:?}");
}

/// Changes the engine refuses on the fast path (reduced on the decoding threads) are quarantined
/// one by one, each with its shard and sequence number and its own reason: one late past its
/// window's lateness, one with an amount that is not a number. The rest is aggregated exactly.
#[tokio::test]
async fn late_and_bad_changes_read_from_an_archive_are_quarantined_with_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let events = streamlens_infra::sample::generate(streamlens_infra::sample::SampleSpec {
        changes: 1500,
        seed: 5,
        ..Default::default()
    });
    let inserted = |seq: &str, t: i64, amount: &str| {
        let mut event = events
            .iter()
            .find(|e| e.kind == streamlens_core::EventKind::Insert)
            .unwrap()
            .clone();
        event.event_id = format!("extra-{seq}");
        event.sequence_number = seq.to_owned();
        event.event_time_ms = t;
        let image = event.new_image.as_mut().unwrap();
        image.insert(
            "pk".into(),
            streamlens_core::AttributeValue::S(format!("x{seq}")),
        );
        image.insert(
            "amount".into(),
            streamlens_core::AttributeValue::N(amount.into()),
        );
        event
    };
    let last = events.iter().map(|e| e.event_time_ms).max().unwrap();
    let mut all = events.clone();
    // Two days before the newest change: past the default lateness (1d), its windows are final.
    all.push(inserted(
        "900000000000000000001",
        last - 2 * 86_400_000,
        "1.00",
    ));
    all.push(inserted("900000000000000000002", last, "lots"));
    let text: String = all
        .iter()
        .map(|e| serde_json::to_string(&streamlens_core::StreamRecord::from(e)).unwrap() + "\n")
        .collect();
    let archive = dir.path().join("orders.ndjson");
    std::fs::write(&archive, &text).unwrap();
    let summary = streamlens::app::run(
        archive_to_embedded(&archive, dir.path()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(summary.source.events, 1502);
    assert_eq!(summary.aggregated, 1500);
    assert_eq!(summary.quarantined, 2);
    let quarantine = std::fs::read_to_string(dir.path().join("quarantine.ndjson")).unwrap();
    let entries: Vec<serde_json::Value> = quarantine
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 2, "{quarantine}");
    // Both copy the sample's first insert, shard included.
    let shard = &events
        .iter()
        .find(|e| e.kind == streamlens_core::EventKind::Insert)
        .unwrap()
        .shard_id;
    for (entry, seq, reason) in [
        (&entries[0], "900000000000000000001", "late: event time"),
        (&entries[1], "900000000000000000002", "metric `amount`"),
    ] {
        assert_eq!(
            entry["origin"],
            format!("shard {shard} seq {seq}"),
            "{entry}"
        );
        assert!(
            entry["reason"].as_str().unwrap().starts_with(reason),
            "{entry}"
        );
    }
    // The totals are those of the sample alone.
    let (expected, _) = common::totals_of_archive_text(
        &events
            .iter()
            .map(|e| serde_json::to_string(&streamlens_core::StreamRecord::from(e)).unwrap() + "\n")
            .collect::<String>(),
    );
    let store =
        streamlens_aggregator::store::embedded::EmbeddedStore::open(&dir.path().join("s.redb"))
            .unwrap();
    let docs = store.query(&AggQuery::default()).await.unwrap();
    assert_eq!(common::totals_of_docs(&docs, "1m"), expected);
}

/// Group commit under a crash: a backfill killed midway (SIGKILL: its last writes deferred, not
/// yet durable) and run again resumes from its last durable checkpoint and ends with exactly the
/// aggregates of the archive, each change counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_midway_resumes_to_exact_aggregates() {
    // Aggregates only (the archive projected, no change index): the fast path.
    const NO_INDEX: &str = "[changes]\nenabled = false";
    let dir = tempfile::tempdir().unwrap();
    let events = streamlens_infra::sample::generate(streamlens_infra::sample::SampleSpec {
        changes: 100_000,
        seed: 5,
        mean_gap_ms: 20,
        ..Default::default()
    });
    let text: String = events
        .iter()
        .map(|e| serde_json::to_string(&streamlens_core::StreamRecord::from(e)).unwrap() + "\n")
        .collect();
    let archive = dir.path().join("orders.ndjson");
    std::fs::write(&archive, &text).unwrap();
    let (expected, _) = common::totals_of_archive_text(&text);

    let store_path = dir.path().join("s.redb");
    let source = format!("kind = \"archive\"\npath = \"{}\"", archive.display());
    // Durable every 100 ms: the run is killed between durable commits, well before its end.
    let store = format!(
        "kind = \"embedded\"\npath = \"{}\"\ndurable_every = \"100ms\"",
        store_path.display()
    );
    let mut run = common::RunProcess::started(
        dir.path(),
        "backfill",
        &common::config_text(&source, &store, dir.path(), NO_INDEX),
    )
    .await;
    // Past a few durable commits, before the end.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        run.running(),
        "the backfill ended before it could be killed: {}",
        run.logs()
    );
    run.kill();

    let resumed = streamlens::app::run(
        streamlens::config::Config::parse(
            &common::config_text(&source, &store, dir.path(), NO_INDEX),
            "backfill.toml",
        )
        .unwrap(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(
        !resumed.resumed_from.is_empty(),
        "the second run resumed from a durable checkpoint: {resumed:?}"
    );
    assert!(
        resumed.source.events > 0 && resumed.source.events < 100_000,
        "the second run read the rest only: {resumed:?}"
    );
    let store = streamlens_aggregator::store::embedded::EmbeddedStore::open(&store_path).unwrap();
    let docs = store.query(&AggQuery::default()).await.unwrap();
    for window in ["1m", "5m"] {
        assert_eq!(
            common::totals_of_docs(&docs, window),
            expected,
            "window {window}"
        );
    }
}
