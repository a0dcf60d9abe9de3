//! The change index's conformance suite: the golden input runs through the pipeline once into
//! the embedded store and once into OpenSearch (osmem-server); every search of [`searches`] —
//! by item key, time range, kind, changed attribute, newest first, in pages of every size — must
//! give the same changes from both stores, page by page, and equal what [`expected`] computes
//! straight from the input records with plain JSON (it knows nothing of [`ChangeDoc`]'s code).

mod browser_harness;
mod common;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use streamlens::config::Config;
use streamlens_aggregator::{
    changes,
    config::OpenSearchStoreConfig,
    store::{embedded::EmbeddedStore, opensearch::OpenSearchStore},
    Store, StoreConfig,
};
use streamlens_core::{
    changes::seq_order, query::TimeArg, ChangeDoc, ChangePage, ChangeQuery, ChangeReader,
};
use tokio_util::sync::CancellationToken;

/// 2026-01-01T00:00:00Z, where the golden input starts.
const START: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;

/// What a change's search result is compared on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    event_time: i64,
    seq: String,
    shard: String,
    event_id: String,
    key: String,
    kind: String,
    changed: BTreeSet<String>,
}

impl Seen {
    fn of(doc: &ChangeDoc) -> Self {
        Seen {
            event_time: doc.event_time,
            seq: seq_order(&doc.sequence_number),
            shard: doc.shard_id.clone(),
            event_id: doc.event_id.clone(),
            key: doc.key.clone(),
            kind: doc.kind.clone(),
            changed: doc.changed.iter().cloned().collect(),
        }
    }
}

/// Every attribute path (maps entered) of an image in DynamoDB JSON.
fn paths(prefix: &str, image: &Value, out: &mut BTreeSet<String>) {
    for (name, value) in image.as_object().into_iter().flatten() {
        let here = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        out.insert(here.clone());
        if let Some(inner) = value.get("M") {
            paths(&here, inner, out);
        }
    }
}

/// The paths whose values differ between two images in DynamoDB JSON.
fn differing(prefix: &str, old: &Value, new: &Value, out: &mut BTreeSet<String>) {
    let names: BTreeSet<&String> = old
        .as_object()
        .into_iter()
        .flatten()
        .chain(new.as_object().into_iter().flatten())
        .map(|(k, _)| k)
        .collect();
    for name in names {
        let here = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let (a, b) = (old.get(name), new.get(name));
        if a == b {
            continue;
        }
        out.insert(here.clone());
        match (a.and_then(|v| v.get("M")), b.and_then(|v| v.get("M"))) {
            (Some(a), Some(b)) => differing(&here, a, b, out),
            (Some(m), None) | (None, Some(m)) => paths(&here, m, out),
            (None, None) => {}
        }
    }
}

/// The golden records as the change index should show them, in change order.
fn expected(records: &[Value]) -> Vec<Seen> {
    let mut all: Vec<Seen> = records
        .iter()
        .map(|r| {
            let body = &r["dynamodb"];
            let key: std::collections::BTreeMap<&str, &str> = body["Keys"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(name, v)| (name.as_str(), v["S"].as_str().or(v["N"].as_str()).unwrap()))
                .collect();
            let kind = r["eventName"].as_str().unwrap().to_owned();
            let mut changed = BTreeSet::new();
            match kind.as_str() {
                "INSERT" => paths("", &body["NewImage"], &mut changed),
                "REMOVE" => paths("", &body["OldImage"], &mut changed),
                _ => differing("", &body["OldImage"], &body["NewImage"], &mut changed),
            }
            let seq = body["SequenceNumber"].as_str().unwrap();
            Seen {
                event_time: body["ApproximateCreationDateTime"].as_i64().unwrap() * 1000,
                seq: format!("{}{seq}", "0".repeat(40 - seq.len())),
                shard: r["shardId"].as_str().unwrap().to_owned(),
                event_id: r["eventID"].as_str().unwrap().to_owned(),
                key: serde_json::to_string(&key).unwrap(),
                kind,
                changed,
            }
        })
        .collect();
    all.sort();
    all
}

/// The searches, with the filter each applies, written plainly.
#[allow(clippy::type_complexity)]
fn searches(all: &[Seen]) -> Vec<(ChangeQuery, Box<dyn Fn(&Seen) -> bool>)> {
    // The item with the most changes, and one with a REMOVE.
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for s in all {
        *counts.entry(&s.key).or_default() += 1;
    }
    let busiest = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .unwrap()
        .0
        .to_string();
    let removed = all.iter().find(|s| s.kind == "REMOVE").unwrap().key.clone();
    let key_of = |k: &str| -> Option<std::collections::BTreeMap<String, Value>> {
        Some(serde_json::from_str(k).unwrap())
    };
    let from = START + 10 * MINUTE;
    let to = START + 25 * MINUTE;
    let mut out: Vec<(ChangeQuery, Box<dyn Fn(&Seen) -> bool>)> = Vec::new();
    out.push((ChangeQuery::default(), Box::new(|_| true)));
    out.push((
        ChangeQuery {
            order: Some("desc".into()),
            limit: Some(333),
            ..ChangeQuery::default()
        },
        Box::new(|_| true),
    ));
    for (key, order) in [(busiest.clone(), None), (removed.clone(), Some("desc"))] {
        let k = key.clone();
        out.push((
            ChangeQuery {
                key: key_of(&key),
                order: order.map(str::to_owned),
                limit: Some(3),
                ..ChangeQuery::default()
            },
            Box::new(move |s| s.key == k),
        ));
    }
    out.push((
        ChangeQuery {
            from: Some(TimeArg::Millis(from)),
            to: Some(TimeArg::Text("2026-01-01T00:25:00Z".into())),
            limit: Some(50),
            ..ChangeQuery::default()
        },
        Box::new(move |s| s.event_time >= from && s.event_time < to),
    ));
    out.push((
        ChangeQuery {
            kinds: vec!["REMOVE".into(), "insert".into()],
            limit: Some(1000),
            ..ChangeQuery::default()
        },
        Box::new(|s| s.kind == "REMOVE" || s.kind == "INSERT"),
    ));
    out.push((
        ChangeQuery {
            kinds: vec!["MODIFY".into()],
            changed: Some("status".into()),
            order: Some("desc".into()),
            limit: Some(97),
            ..ChangeQuery::default()
        },
        Box::new(|s| s.kind == "MODIFY" && s.changed.contains("status")),
    ));
    let k = busiest.clone();
    out.push((
        ChangeQuery {
            key: key_of(&busiest),
            changed: Some("amount".into()),
            from: Some(TimeArg::Millis(from)),
            limit: Some(2),
            ..ChangeQuery::default()
        },
        Box::new(move |s| s.key == k && s.changed.contains("amount") && s.event_time >= from),
    ));
    out.push((
        ChangeQuery {
            table: Some("golden".into()),
            changed: Some("items".into()),
            to: Some(TimeArg::Millis(to)),
            ..ChangeQuery::default()
        },
        Box::new(move |s| s.changed.contains("items") && s.event_time < to),
    ));
    out.push((
        ChangeQuery {
            table: Some("another-table".into()),
            ..ChangeQuery::default()
        },
        Box::new(|_| false),
    ));
    out
}

/// Every page of a search, and the pages' sizes.
async fn every_page(store: &dyn ChangeReader, query: &ChangeQuery) -> (Vec<ChangeDoc>, Vec<usize>) {
    let mut query = query.clone();
    let (mut all, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let page: ChangePage = changes::search(store, &query, START + 86_400_000)
            .await
            .unwrap();
        sizes.push(page.changes.len());
        all.extend(page.changes);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return (all, sizes),
        }
        assert!(sizes.len() < 10_000, "pages never end");
    }
}

/// The golden pipeline into the embedded store (in `dir`) and into OpenSearch (under a fresh
/// prefix), both with their change index.
async fn stores(dir: &std::path::Path) -> (EmbeddedStore, OpenSearchStore, String) {
    let config = common::golden_config(dir, 500);
    assert!(config.changes.enabled, "the change index is on by default");
    streamlens::app::run(config, CancellationToken::new())
        .await
        .unwrap();
    let embedded = EmbeddedStore::open(&dir.join("golden.redb")).unwrap();
    let url = common::opensearch_url();
    common::require("OpenSearch", &url).await;
    let prefix = common::unique("changes-");
    let os_config = OpenSearchStoreConfig {
        index_prefix: prefix.clone(),
        ..OpenSearchStoreConfig::new(url)
    };
    let os_dir = dir.join("os");
    let config = Config {
        store: StoreConfig::Opensearch(os_config.clone()),
        ..common::golden_config(&os_dir, 700)
    };
    streamlens::app::run(config, CancellationToken::new())
        .await
        .unwrap();
    let search = OpenSearchStore::connect(&os_config).await.unwrap();
    (embedded, search, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_find_the_same_changes_as_the_records_say() {
    let dir = tempfile::tempdir().unwrap();
    let (embedded, search, prefix) = stores(dir.path()).await;
    let (records, _) = common::golden_input();
    let all = expected(&records);
    assert_eq!(all.len(), 4000);
    for (query, keep) in searches(&all) {
        let (a, a_pages) = every_page(&embedded, &query).await;
        let (b, b_pages) = every_page(&search, &query).await;
        assert_eq!(a_pages, b_pages, "page sizes differ for {query:?}");
        assert_eq!(a, b, "the stores disagree on {query:?}");
        let mut want: Vec<Seen> = all.iter().filter(|s| keep(s)).cloned().collect();
        if query.order.as_deref() == Some("desc") {
            want.reverse();
        }
        let got: Vec<Seen> = a.iter().map(Seen::of).collect();
        assert_eq!(got, want, "{query:?} differs from the records");
        let limit = query.limit.unwrap_or(100);
        assert!(
            a_pages.iter().all(|n| *n <= limit),
            "{query:?}: {a_pages:?}"
        );
        assert_eq!(
            a_pages.len(),
            want.len().div_ceil(limit).max(1),
            "{query:?}"
        );
        // Images come back whole: the first change's images are the record's.
        if let Some(first) = a.first() {
            let record = records
                .iter()
                .find(|r| r["eventID"] == json!(first.event_id))
                .unwrap();
            assert_eq!(
                serde_json::to_value(&first.new_image).unwrap(),
                record["dynamodb"]
                    .get("NewImage")
                    .cloned()
                    .unwrap_or(Value::Null)
            );
            assert_eq!(first.table, "golden");
        }
    }

    // A change written again replaces itself.
    let again = every_page(
        &embedded,
        &ChangeQuery {
            limit: Some(40),
            ..Default::default()
        },
    )
    .await
    .0;
    embedded.write_changes(&again[..40]).await.unwrap();
    search.write_changes(&again[..40]).await.unwrap();
    search.flush().await.unwrap();
    for store in [&embedded as &dyn ChangeReader, &search] {
        assert_eq!(
            every_page(store, &ChangeQuery::default()).await.0.len(),
            4000
        );
    }

    // Retention: the embedded store drops exactly what is older; OpenSearch drops whole days.
    let cut = START + 30 * MINUTE;
    let dropped = embedded.expire_changes(cut).await.unwrap();
    let older = all.iter().filter(|s| s.event_time < cut).count();
    assert_eq!(dropped as usize, older);
    let left = every_page(&embedded, &ChangeQuery::default()).await.0;
    assert_eq!(left.len(), 4000 - older);
    assert!(left.iter().all(|c| c.event_time >= cut));
    // The input starts 21 s before midnight: the day before is over at `cut`, this one is not.
    let before_midnight = all.iter().filter(|s| s.event_time < START).count();
    assert!(before_midnight > 0);
    assert_eq!(search.expire_changes(cut).await.unwrap(), 1);
    let left = every_page(&search, &ChangeQuery::default()).await.0;
    assert_eq!(left.len(), 4000 - before_midnight);
    assert!(left.iter().all(|c| c.event_time >= START));
    assert_eq!(search.expire_changes(START + 86_400_000).await.unwrap(), 1);
    assert!(every_page(&search, &ChangeQuery::default())
        .await
        .0
        .is_empty());

    drop(search);
    let _ = reqwest::Client::new()
        .delete(format!("{}/{prefix}*", common::opensearch_url()))
        .send()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_searches_changes_and_refuses_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let served = browser_harness::Served::start(common::golden_config(dir.path(), 1000)).await;
    let url = format!("{}/api/changes", served.base);
    let client = reqwest::Client::new();
    let (records, _) = common::golden_input();
    let all = expected(&records);
    let key = all.iter().find(|s| s.kind == "REMOVE").unwrap().key.clone();
    let want: Vec<&Seen> = all.iter().filter(|s| s.key == key).collect();
    let body = json!({ "key": serde_json::from_str::<Value>(&key).unwrap(), "limit": 1000 });
    let mut last = None;
    for _ in 0..100 {
        let response = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let page: ChangePage = response.json().await.unwrap();
        let got: Vec<Seen> = page.changes.iter().map(Seen::of).collect();
        if got.iter().collect::<Vec<_>>() == want {
            last = None;
            break;
        }
        last = Some(got);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(last.is_none(), "the served changes never matched: {last:?}");

    for (body, message) in [
        (r#"{"key": "#, "invalid change search"),
        (r#"{"kinds": ["UPSERT"]}"#, "unknown kind `UPSERT`"),
        (r#"{"limit": 0}"#, "`limit`"),
        (r#"{"after": "bogus"}"#, "not a cursor"),
        (r#"{"changd": "status"}"#, "unknown field `changd`"),
        (r#"{"from": "last tuesday"}"#, "`from`"),
    ] {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        let error = error["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{body}: {error:?} lacks {message:?}"
        );
    }

    let openapi: Value = reqwest::get(format!("{}/api/openapi.json", served.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/api/changes"]["post"].is_object());
    common::assert_documents_fields(
        &openapi,
        "ChangeQuery",
        &ChangeQuery {
            table: Some("t".into()),
            key: Some(Default::default()),
            from: Some(TimeArg::Millis(0)),
            to: Some(TimeArg::Millis(1)),
            kinds: vec![],
            changed: Some("a".into()),
            limit: Some(1),
            after: Some("x".into()),
            order: Some("asc".into()),
        },
    );
    served.stop().await;
}
