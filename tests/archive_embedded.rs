//! The archive source into the embedded store: exact aggregates, and a malformed line is
//! quarantined by line number while the rest of the archive is processed.

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
