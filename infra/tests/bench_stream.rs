//! The benchmark orders stream: serde's own record shape, deterministic, disordered within the
//! bound, shards in order, and decoded the same by the fast and the serde decoders.

use std::collections::{BTreeMap, BTreeSet};

use streamlens_core::{projection::ProjectedChange, EventKind, Projection, StreamRecord};
use streamlens_infra::sample::{stream_events, write_stream, StreamSpec};
use streamlens_ingest::archive::{
    decode_line, decode_projected, fast::decode_projected_fast, read_projected, CompiledProjection,
    DecodeCache,
};

fn spec() -> StreamSpec {
    StreamSpec {
        records: 20_000,
        seed: 11,
        events_per_sec: 200,
        shards: 5,
        disorder_secs: 3,
        max_live: 2000,
        ..StreamSpec::default()
    }
}

#[test]
fn lines_are_serde_records_in_shard_order_with_bounded_disorder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.ndjson");
    let summary = write_stream(&path, spec()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let events = stream_events(spec());
    assert_eq!(summary.records, 20_000);
    assert_eq!(events.len(), 20_000);
    assert_eq!(summary.bytes, text.len() as u64);
    let mut last: BTreeMap<String, (u128, i64)> = BTreeMap::new();
    let (mut statuses, mut regions, mut ttl) = (BTreeSet::new(), BTreeSet::new(), 0);
    let mut newest = events[0].event_time_ms;
    let mut disorder = 0;
    for (line, event) in text.lines().zip(&events) {
        assert_eq!(
            line,
            serde_json::to_string(&StreamRecord::from(event)).unwrap()
        );
        assert_eq!(&decode_line(line, String::new).unwrap(), event);
        let seq: u128 = event.sequence_number.parse().unwrap();
        if let Some((prev_seq, prev_time)) = last.get(&event.shard_id) {
            assert!(seq > *prev_seq && event.event_time_ms >= *prev_time);
        }
        last.insert(event.shard_id.clone(), (seq, event.event_time_ms));
        disorder = disorder.max(newest - event.event_time_ms);
        newest = newest.max(event.event_time_ms);
        let image = event
            .new_image
            .as_ref()
            .or(event.old_image.as_ref())
            .unwrap();
        statuses.insert(image["status"].label());
        regions.insert(image["region"].label());
        ttl += u32::from(event.ttl_delete);
    }
    assert_eq!(last.len(), 5);
    assert_eq!(disorder, summary.max_disorder_ms);
    assert!(disorder > 0 && disorder <= 3000, "{disorder}");
    assert_eq!(statuses.len(), 4);
    assert_eq!(regions.len(), 4);
    assert!(ttl > 0);
    assert!(summary.inserts > 5000 && summary.modifies > 5000 && summary.removes > 1000);
    assert_eq!(summary.inserts + summary.modifies + summary.removes, 20_000);
    let span = summary.max_time_ms - summary.min_time_ms;
    assert!((90_000..110_000).contains(&span), "{span}");
}

#[test]
fn the_stream_is_deterministic_and_in_order_without_disorder() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.ndjson");
    let b = dir.path().join("b.ndjson");
    write_stream(&a, spec()).unwrap();
    write_stream(&b, spec()).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    write_stream(&b, StreamSpec { seed: 12, ..spec() }).unwrap();
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let ordered = write_stream(
        &b,
        StreamSpec {
            disorder_secs: 0,
            ..spec()
        },
    )
    .unwrap();
    assert_eq!(ordered.max_disorder_ms, 0);
    assert_eq!(
        write_stream(
            &b,
            StreamSpec {
                records: 0,
                ..spec()
            }
        )
        .unwrap()
        .records,
        0
    );
}

#[test]
fn generated_records_decode_the_same_fast_and_through_serde() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.ndjson.gz");
    write_stream(&path, spec()).unwrap();
    let projection = Projection::new(["status", "region", "amount", "items", "pk", "nope"]);
    let compiled = CompiledProjection::new(&projection);
    let mut cache = DecodeCache::default();
    let mut read = Vec::new();
    let summary = read_projected(&path, &projection, 1000, |batch| {
        assert!(batch.quarantined.is_empty());
        read.extend(batch.changes);
        true
    })
    .unwrap();
    assert!(summary.completed);
    let events = stream_events(spec());
    assert_eq!(read.len(), events.len());
    for (event, got) in events.iter().zip(&read) {
        let line = serde_json::to_string(&StreamRecord::from(event)).unwrap();
        let expected = ProjectedChange::from_event(event, &projection);
        assert_eq!(got, &expected);
        assert_eq!(
            decode_projected(line.as_bytes(), &compiled, &mut cache).as_ref(),
            Ok(&expected)
        );
        assert_eq!(
            decode_projected_fast(line.as_bytes(), &compiled, &mut cache).as_ref(),
            Some(&expected)
        );
    }
    assert!(read
        .iter()
        .any(|c| c.kind == EventKind::Remove && c.ttl_delete));
}
