//! Several worker processes sharing one pipeline, and undoing writes no checkpoint covers, against
//! both stores. The OpenSearch tests need an OpenSearch-compatible server at
//! `STREAMLENS_OPENSEARCH_URL` (default `http://127.0.0.1:9200`; `infra/scripts/services.sh start`).

use std::{
    collections::BTreeMap,
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use rust_decimal::Decimal;
use streamlens_aggregator::config::MetricKind;
use streamlens_aggregator::{
    config::{MetricSpec, OpenSearchStoreConfig},
    store::{embedded::EmbeddedStore, opensearch::OpenSearchStore, StoredCheckpoint},
    PipelineSpec, Store, WindowEngine,
};
use streamlens_core::{AggQuery, AggregateDoc, AttributeValue, ChangeEvent, EventKind, Item};

const PIPELINE: &str = "orders";

fn spec() -> PipelineSpec {
    PipelineSpec {
        name: PIPELINE.into(),
        dimensions: vec!["status".into()],
        metrics: vec![
            MetricSpec {
                name: "amount".into(),
                attribute: "amount".into(),
                kind: MetricKind::Sum,
                scale: 2,
            },
            MetricSpec {
                name: "orders".into(),
                attribute: "amount".into(),
                kind: MetricKind::Avg,
                scale: 2,
            },
            MetricSpec {
                name: "smallest".into(),
                attribute: "amount".into(),
                kind: MetricKind::Min,
                scale: 2,
            },
            MetricSpec {
                name: "largest".into(),
                attribute: "amount".into(),
                kind: MetricKind::Max,
                scale: 2,
            },
            MetricSpec {
                name: "statuses".into(),
                attribute: "status".into(),
                kind: MetricKind::Distinct,
                scale: 0,
            },
        ],
        windows: vec!["1m".into(), "5m".into()],
        allowed_lateness: "1d".into(),
        ..PipelineSpec::default()
    }
}

fn item(id: u32, status: &str, amount: &str) -> Item {
    BTreeMap::from([
        ("pk".into(), AttributeValue::S(format!("o{id}"))),
        ("status".into(), AttributeValue::S(status.into())),
        ("amount".into(), AttributeValue::N(amount.into())),
    ])
}

fn event(seq: u64, t: i64, kind: EventKind, old: Option<Item>, new: Option<Item>) -> ChangeEvent {
    ChangeEvent {
        event_id: format!("e{seq}"),
        kind,
        keys: BTreeMap::new(),
        old_image: old,
        new_image: new,
        event_time_ms: t,
        sequence_number: seq.to_string(),
        shard_id: "s".into(),
        size_bytes: 1,
        view_type: None,
        ttl_delete: false,
    }
}

/// A pseudo-random but valid history of 40 items (a tiny LCG keeps the test self-contained).
fn history(n: usize, seed: u64) -> Vec<ChangeEvent> {
    let mut state = seed;
    let mut next = move |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    let statuses = ["new", "paid", "sent"];
    let mut live: BTreeMap<u32, Item> = BTreeMap::new();
    let mut out = Vec::new();
    let mut t = 1_700_000_000_000i64;
    for seq in 0..n as u64 {
        t += next(20_000) as i64;
        let amount = format!("{}.{:02}", next(1000), next(100));
        let status = statuses[next(3) as usize];
        let id = next(40) as u32;
        match live.get(&id).cloned() {
            None => {
                let new = item(id, status, &amount);
                live.insert(id, new.clone());
                out.push(event(seq, t, EventKind::Insert, None, Some(new)));
            }
            Some(old) if next(3) == 0 => {
                live.remove(&id);
                out.push(event(seq, t, EventKind::Remove, Some(old), None));
            }
            Some(old) => {
                let new = item(id, status, &amount);
                live.insert(id, new.clone());
                out.push(event(seq, t, EventKind::Modify, Some(old), Some(new)));
            }
        }
    }
    out
}

/// The worker that owns an item, the way a shard owns a key range: by the item's key.
fn owner(e: &ChangeEvent) -> usize {
    let image = e.new_image.as_ref().or(e.old_image.as_ref()).unwrap();
    match &image["pk"] {
        AttributeValue::S(pk) => pk[1..].parse::<usize>().unwrap() % 2,
        _ => unreachable!(),
    }
}

type Totals = BTreeMap<(String, i64, String, String), (i64, i64, i64, i64, Decimal)>;

/// The plain computation: one event at a time, `Decimal` sums.
fn reference(events: &[ChangeEvent]) -> Totals {
    let mut out = Totals::new();
    for e in events {
        for (label, size) in [("1m", 60_000i64), ("5m", 300_000)] {
            let start = e.event_time_ms - e.event_time_ms.rem_euclid(size);
            let mut add = |image: &Item, sign: i64, kind: usize| {
                let amount = match &image["amount"] {
                    AttributeValue::N(n) => Decimal::from_str(n).unwrap(),
                    _ => unreachable!(),
                };
                let status = match &image["status"] {
                    AttributeValue::S(s) => s.clone(),
                    _ => unreachable!(),
                };
                for (dim, value) in [
                    ("_all".to_owned(), "_all".to_owned()),
                    ("status".into(), status),
                ] {
                    let entry = out.entry((label.to_owned(), start, dim, value)).or_insert((
                        0,
                        0,
                        0,
                        0,
                        Decimal::ZERO,
                    ));
                    match kind {
                        1 => entry.0 += 1,
                        2 => entry.1 += 1,
                        3 => entry.2 += 1,
                        _ => {}
                    }
                    entry.3 += sign;
                    entry.4 += amount * Decimal::from(sign);
                }
            };
            match e.kind {
                EventKind::Insert => add(e.new_image.as_ref().unwrap(), 1, 1),
                EventKind::Remove => add(e.old_image.as_ref().unwrap(), -1, 3),
                EventKind::Modify => {
                    add(e.old_image.as_ref().unwrap(), -1, 0);
                    add(e.new_image.as_ref().unwrap(), 1, 2);
                }
                EventKind::Unknown(_) => {}
            }
        }
    }
    out
}

fn totals(docs: &[AggregateDoc]) -> Totals {
    docs.iter()
        .map(|d| {
            (
                (
                    d.window.clone(),
                    d.window_start,
                    d.dimension.clone(),
                    d.value.clone(),
                ),
                (
                    d.inserts,
                    d.modifies,
                    d.removes,
                    d.net_count,
                    Decimal::from_str(&d.sums["amount"]).unwrap(),
                ),
            )
        })
        .collect()
}

/// A document without what depends on who wrote it when: the worker, the version and `prev`.
fn values(doc: &AggregateDoc) -> AggregateDoc {
    AggregateDoc {
        worker: String::new(),
        version: 0,
        prev: None,
        ..doc.clone()
    }
}

/// One worker (or a single process, `""`) running passes and writing each to a store.
struct Worker {
    engine: WindowEngine,
    name: String,
    /// The newest document of each id this worker wrote.
    latest: BTreeMap<String, AggregateDoc>,
}

impl Worker {
    fn new(name: &str) -> Self {
        Self::started_at(name, 0)
    }

    /// A worker whose engine versions start above `seed` (a process started later).
    fn started_at(name: &str, seed: u64) -> Self {
        Worker {
            engine: WindowEngine::new(spec(), seed).unwrap().with_worker(name),
            name: name.to_owned(),
            latest: BTreeMap::new(),
        }
    }

    /// Applies one pass and writes its documents, with a checkpoint when `commit`; returns them.
    async fn pass(
        &mut self,
        store: &dyn Store,
        events: &[ChangeEvent],
        commit: bool,
    ) -> Vec<AggregateDoc> {
        assert!(self.engine.apply(events).unwrap().is_empty());
        let docs = self.engine.take_changed();
        let checkpoint = commit.then(|| StoredCheckpoint {
            pipeline: PIPELINE.into(),
            worker: self.name.clone(),
            source: "test".into(),
            positions: [(
                "shard".to_owned(),
                events.last().unwrap().sequence_number.clone(),
            )]
            .into(),
            max_event_time: self.engine.max_event_time(),
            version: self.engine.version(),
        });
        store.write(&docs, checkpoint.as_ref()).await.unwrap();
        store.flush().await.unwrap();
        for doc in &docs {
            self.latest.insert(doc.id(), doc.clone());
        }
        docs
    }
}

fn all() -> AggQuery {
    AggQuery {
        pipeline: Some(PIPELINE.into()),
        ..AggQuery::default()
    }
}

fn of_worker(worker: &str) -> AggQuery {
    AggQuery {
        worker: Some(worker.into()),
        ..all()
    }
}

/// Two workers' partial documents, merged by the store, equal one engine fed every change, and
/// the plain computation.
async fn merged_workers_equal_one_engine(store: &dyn Store) {
    let events = history(1500, 42);
    let parts: [Vec<ChangeEvent>; 2] =
        [0, 1].map(|w| events.iter().filter(|e| owner(e) == w).cloned().collect());
    assert!(parts.iter().all(|p| p.len() > 500));
    let mut workers = [Worker::new("w1"), Worker::new("w2")];
    for (worker, (part, batch)) in workers.iter_mut().zip(parts.iter().zip([37, 101])) {
        for chunk in part.chunks(batch) {
            worker.pass(store, chunk, true).await;
        }
    }
    let mut single = Worker::new("");
    for chunk in events.chunks(200) {
        assert!(single.engine.apply(chunk).unwrap().is_empty());
        for doc in single.engine.take_changed() {
            single.latest.insert(doc.id(), doc);
        }
    }

    let merged = store.query(&all()).await.unwrap();
    assert!(merged.len() > 100, "{} documents", merged.len());
    assert!(merged
        .iter()
        .all(|d| d.worker.is_empty() && d.prev.is_none()));
    // The same values as one engine fed the union of the changes ...
    let mut expected: Vec<AggregateDoc> = single.latest.values().map(values).collect();
    expected.sort_by_key(|d| {
        (
            d.window_start,
            d.dimension.clone(),
            d.value.clone(),
            d.window.clone(),
        )
    });
    assert_eq!(merged.iter().map(values).collect::<Vec<_>>(), expected);
    // ... and as the plain computation.
    assert_eq!(totals(&merged), reference(&events));
    // Some groups really had parts from both workers, and the version is the newest part's.
    let both = merged
        .iter()
        .filter(|m| {
            let parts: Vec<&AggregateDoc> = workers
                .iter()
                .filter_map(|w| {
                    w.latest.get(
                        &AggregateDoc {
                            worker: w.name.clone(),
                            ..(*m).clone()
                        }
                        .id(),
                    )
                })
                .collect();
            assert_eq!(m.version, parts.iter().map(|p| p.version).max().unwrap());
            parts.len() == 2
        })
        .count();
    assert!(both > 50, "{both} groups with two parts");

    // Narrower queries merge the same way.
    let q = AggQuery {
        window: Some("5m".into()),
        dimension: Some("status".into()),
        from: Some(1_700_000_000_000 + 3_600_000),
        to: Some(1_700_000_000_000 + 4 * 3_600_000),
        ..all()
    };
    let narrow = store.query(&q).await.unwrap();
    let wanted: Vec<_> = merged.iter().filter(|d| q.matches(d)).cloned().collect();
    assert!(!narrow.is_empty());
    assert_eq!(narrow, wanted);

    // A worker's own documents come back unmerged, with their prev values.
    for worker in &workers {
        let own = store.query(&of_worker(&worker.name)).await.unwrap();
        let mut expected: Vec<AggregateDoc> = worker.latest.values().cloned().collect();
        expected.sort_by_key(|d| {
            (
                d.window_start,
                d.dimension.clone(),
                d.value.clone(),
                d.window.clone(),
            )
        });
        assert_eq!(own, expected);
        assert!(own.iter().any(|d| d.prev.is_some()));
        let checkpoint = store
            .checkpoint_of(PIPELINE, &worker.name)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(checkpoint.worker, worker.name);
        assert_eq!(checkpoint.version, worker.engine.version());
    }
    assert!(store.query(&of_worker("")).await.unwrap().is_empty());
    assert_eq!(store.checkpoint(PIPELINE).await.unwrap(), None);
}

/// A crash after a pass's documents were written but before its checkpoint: rolling back to the
/// checkpoint gives back exactly the stored state of the last committed pass, and a worker
/// resumed from there ends where the uninterrupted one did.
async fn roll_back_restores_the_committed_pass(store: &dyn Store) {
    let events = history(900, 5);
    let (before, after) = events.split_at(800);
    let mut w1 = Worker::new("w1");
    let mut w2 = Worker::new("w2");
    for chunk in before.chunks(100) {
        let (mine, theirs): (Vec<ChangeEvent>, Vec<ChangeEvent>) =
            chunk.iter().cloned().partition(|e| owner(e) == 0);
        w1.pass(store, &mine, true).await;
        w2.pass(store, &theirs, true).await;
    }
    let committed_w1 = store.query(&of_worker("w1")).await.unwrap();
    let committed_w2 = store.query(&of_worker("w2")).await.unwrap();
    let committed_merged = store.query(&all()).await.unwrap();

    // The uncommitted pass of w1: the rest of its changes plus an item in a window no pass had.
    let late = after.last().unwrap().event_time_ms + 600_000;
    let mut pass: Vec<ChangeEvent> = after.iter().filter(|e| owner(e) == 0).cloned().collect();
    pass.push(event(
        10_000,
        late,
        EventKind::Insert,
        None,
        Some(item(1000, "new", "7.25")),
    ));
    let written = w1.pass(store, &pass, false).await;
    assert!(written
        .iter()
        .any(|d| d.window_start >= late - 300_000 && d.prev.is_none()));
    assert!(written.iter().any(|d| d.prev.is_some()));
    let crashed = store.query(&all()).await.unwrap();
    assert_ne!(crashed, committed_merged);

    // The process that takes over starts later: its versions are above every earlier one, and
    // its first version stamps the undo.
    let mut resumed = Worker::started_at("w1", 1_000_000);
    let stamp = resumed.engine.version();
    // Nothing of a single process (worker "") to undo, whatever w1 wrote.
    assert_eq!(store.roll_back(PIPELINE, "", 0, stamp).await.unwrap(), 0);
    let checkpoint = store.checkpoint_of(PIPELINE, "w1").await.unwrap().unwrap();
    let changed = store
        .roll_back(PIPELINE, "w1", checkpoint.version, stamp)
        .await
        .unwrap();
    assert_eq!(changed, written.len() as u64);
    store.flush().await.unwrap();
    let rolled_back = store.query(&of_worker("w1")).await.unwrap();
    // Rolled back documents have the committed values under the new version.
    let all_values = |docs: &[AggregateDoc]| docs.iter().map(values).collect::<Vec<_>>();
    assert_eq!(all_values(&rolled_back), all_values(&committed_w1));
    let untouched: Vec<_> = committed_w1
        .iter()
        .filter(|d| !written.iter().any(|w| w.id() == d.id()))
        .collect();
    assert!(!untouched.is_empty());
    for doc in untouched {
        assert!(rolled_back.contains(doc), "{} changed", doc.id());
    }
    for doc in rolled_back.iter().filter(|d| !committed_w1.contains(d)) {
        assert_eq!(doc.version, stamp, "{}", doc.id());
    }
    assert!(rolled_back.iter().all(|d| d.window_start < late - 300_000));
    assert_eq!(store.query(&of_worker("w2")).await.unwrap(), committed_w2);
    assert_eq!(
        all_values(&store.query(&all()).await.unwrap()),
        all_values(&committed_merged)
    );
    // Rolling back again changes nothing.
    assert_eq!(
        store
            .roll_back(PIPELINE, "w1", checkpoint.version, stamp + 1)
            .await
            .unwrap(),
        0
    );
    // A late write of the crashed worker to a restored document is refused as stale: the undo
    // stands. (A deleted group has no document left to compare with: OpenSearch keeps its
    // tombstone for `index.gc_deletes`; the embedded store has a single writer.)
    let restored: Vec<AggregateDoc> = written
        .iter()
        .filter(|d| d.prev.is_some())
        .cloned()
        .collect();
    store.write(&restored, None).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.query(&of_worker("w1")).await.unwrap(), rolled_back);

    // The resumed worker redoes the pass and ends where the crashed one was.
    resumed
        .engine
        .restore(&rolled_back, checkpoint.max_event_time, checkpoint.version)
        .unwrap();
    resumed.pass(store, &pass, true).await;
    let redone = store.query(&all()).await.unwrap();
    assert_eq!(
        redone.iter().map(values).collect::<Vec<_>>(),
        crashed.iter().map(values).collect::<Vec<_>>()
    );

    // Two uncommitted passes cannot be undone exactly: refused, nothing changed.
    let committed = store.checkpoint_of(PIPELINE, "w1").await.unwrap().unwrap();
    let t = late + 1_000;
    resumed
        .pass(
            store,
            &[event(
                20_000,
                t,
                EventKind::Insert,
                None,
                Some(item(1001, "new", "1")),
            )],
            false,
        )
        .await;
    resumed
        .pass(
            store,
            &[event(
                20_001,
                t,
                EventKind::Insert,
                None,
                Some(item(1002, "paid", "2")),
            )],
            false,
        )
        .await;
    let twice = store.query(&of_worker("w1")).await.unwrap();
    let err = store
        .roll_back(PIPELINE, "w1", committed.version, stamp + 10)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not covered by the checkpoint"),
        "{err}"
    );
    store.flush().await.unwrap();
    assert_eq!(store.query(&of_worker("w1")).await.unwrap(), twice);
}

/// A write whose version is not above the stored document's (stale, or repeated) is refused;
/// a newer one replaces it.
async fn stale_rewrites_are_ignored(store: &dyn Store) {
    let doc = |version: u64, inserts: i64| AggregateDoc {
        pipeline: PIPELINE.into(),
        window: "1m".into(),
        window_start: 60_000,
        window_end: 120_000,
        dimension: "status".into(),
        value: "paid".into(),
        inserts,
        net_count: inserts,
        sums: [("amount".to_owned(), format!("{inserts}.5"))].into(),
        version,
        ..AggregateDoc::default()
    };
    let read = || async {
        let docs = store.query(&all()).await.unwrap();
        assert_eq!(docs.len(), 1, "{docs:?}");
        (
            docs[0].version,
            docs[0].inserts,
            docs[0].sums["amount"].clone(),
        )
    };
    store.write(&[doc(5, 50)], None).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(read().await, (5, 50, "50.5".to_owned()));
    // An older version, then the same version again with other values: both refused.
    store.write(&[doc(3, 30)], None).await.unwrap();
    store.write(&[doc(5, 55)], None).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(read().await, (5, 50, "50.5".to_owned()));
    // Refused and accepted writes in one request: each on its own.
    store.write(&[doc(4, 40), doc(6, 60)], None).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(read().await, (6, 60, "60.5".to_owned()));
}

fn embedded() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_merges_workers_exactly() {
    let (_dir, store) = embedded();
    merged_workers_equal_one_engine(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_rolls_back_to_the_checkpoint() {
    let (_dir, store) = embedded();
    roll_back_restores_the_committed_pass(&store).await;
}

/// An OpenSearch store under a fresh index prefix; the indices and template are deleted on drop.
struct Search {
    store: OpenSearchStore,
    prefix: String,
    url: String,
}

fn opensearch_url() -> String {
    std::env::var("STREAMLENS_OPENSEARCH_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:9200".to_owned())
}

fn unique_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("slworkers{}", nanos % 1_000_000_000_000)
}

async fn opensearch() -> Search {
    connect(unique_prefix()).await
}

async fn connect(prefix: String) -> Search {
    let url = opensearch_url();
    let config = OpenSearchStoreConfig {
        index_prefix: prefix.clone(),
        ..OpenSearchStoreConfig::new(url.clone())
    };
    let store = OpenSearchStore::connect(&config).await.unwrap_or_else(|e| {
        panic!("OpenSearch is not usable at {url}: {e}; start it with `infra/scripts/services.sh start`")
    });
    Search { store, prefix, url }
}

impl Search {
    async fn clean(self) {
        use opensearch::{
            http::transport::Transport,
            indices::{IndicesDeleteIndexTemplateParts, IndicesDeleteParts},
            OpenSearch,
        };
        let client = OpenSearch::new(Transport::single_node(&self.url).unwrap());
        let indices = [
            format!("{}-aggregates", self.prefix),
            format!("{}-checkpoints", self.prefix),
        ];
        for index in &indices {
            let _ = client
                .indices()
                .delete(IndicesDeleteParts::Index(&[index]))
                .send()
                .await;
        }
        let _ = client
            .indices()
            .delete_index_template(IndicesDeleteIndexTemplateParts::Name(&indices[0]))
            .send()
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_merges_workers_exactly() {
    let search = opensearch().await;
    merged_workers_equal_one_engine(&search.store).await;
    search.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_rolls_back_to_the_checkpoint() {
    let search = opensearch().await;
    roll_back_restores_the_committed_pass(&search.store).await;
    search.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_quarantines_a_refused_document_and_writes_the_rest() {
    use opensearch::{http::transport::Transport, indices::IndicesCreateParts, OpenSearch};
    // An index whose `value` is a number: a document whose value is not one is refused alone.
    let prefix = unique_prefix();
    let client = OpenSearch::new(Transport::single_node(&opensearch_url()).unwrap());
    let response = client
        .indices()
        .create(IndicesCreateParts::Index(&format!("{prefix}-aggregates")))
        .body(serde_json::json!({
            "mappings": { "dynamic": false, "properties": { "value": { "type": "long" } } }
        }))
        .send()
        .await
        .expect("OpenSearch is not reachable: start it with `infra/scripts/services.sh start`");
    assert!(response.status_code().is_success());
    let search = connect(prefix).await;
    let doc = |value: &str| AggregateDoc {
        pipeline: PIPELINE.into(),
        window: "1m".into(),
        window_end: 60_000,
        dimension: "status".into(),
        value: value.into(),
        version: 1,
        worker: "w1".into(),
        ..AggregateDoc::default()
    };
    let checkpoint = StoredCheckpoint {
        pipeline: PIPELINE.into(),
        worker: "w1".into(),
        version: 1,
        ..StoredCheckpoint::default()
    };
    let written = search
        .store
        .write(&[doc("17"), doc("paid")], Some(&checkpoint))
        .await
        .unwrap();
    // The refused document comes back with OpenSearch's reason; the other one is stored and the
    // checkpoint follows, under the worker's own key.
    assert_eq!(written.rejected.len(), 1, "{written:?}");
    let refused = &written.rejected[0];
    assert!(refused.id.contains("paid"), "{refused:?}");
    assert!(refused.reason.contains("status 400"), "{refused:?}");
    assert!(refused.json.contains(r#""value":"paid""#), "{refused:?}");
    // (This index maps only `value`, so it is read by id.)
    let found = client
        .get(opensearch::GetParts::IndexId(
            search.store.index(),
            &doc("17").id(),
        ))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(found["_source"]["value"], "17", "{found}");
    assert_eq!(
        search.store.checkpoint_of(PIPELINE, "w1").await.unwrap(),
        Some(checkpoint)
    );
    assert_eq!(search.store.checkpoint(PIPELINE).await.unwrap(), None);
    search.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_refuses_stale_rewrites() {
    let (_dir, store) = embedded();
    stale_rewrites_are_ignored(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_refuses_stale_rewrites() {
    let search = opensearch().await;
    stale_rewrites_are_ignored(&search.store).await;
    search.clean().await;
}
