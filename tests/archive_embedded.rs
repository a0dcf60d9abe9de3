//! The archive source into the embedded store: exact aggregates, and a malformed line is
//! quarantined by line number while the rest of the archive is processed.

mod common;

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

    let config = common::config(
        &format!("kind = \"archive\"\npath = \"{}\"", archive.display()),
        &format!(
            "kind = \"embedded\"\npath = \"{}\"",
            dir.path().join("s.redb").display()
        ),
        dir.path(),
        "",
    );
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
