//! `streamlens replay` and `compare`:
//!
//! * a run reading a moto table (600 SDK writes) into osmem-server archives its changes in a
//!   segmented archive; replaying the archive into a namespace reproduces the run's aggregates exactly (equal to totals computed
//!   from the writes, `compare` finds no difference; so does a replay from the stream itself), and
//!   the live indices — every document with
//!   its version and sequence number — are byte-for-byte what they were before the replay;
//! * a paced replay interrupted half-way and run again ends with exactly the aggregates of an
//!   uninterrupted one (and the live run's); a replay with another spec backfills a new metric.

mod common;

use std::{path::Path, time::Duration};

use streamlens::{
    config::Config,
    replay::{self, CompareArgs, ReplayArgs},
};
use streamlens_core::{AggQuery, AggregateDoc, AggregateReader};
use tokio_util::sync::CancellationToken;

fn args(config: &Path, namespace: &str) -> ReplayArgs {
    ReplayArgs {
        config: config.to_owned(),
        namespace: namespace.to_owned(),
        archive: None,
        stream: None,
        from: None,
        to: None,
        speed: None,
        spec: None,
        changes: false,
        fresh: false,
        quiet: true,
    }
}

fn compare_args(config: &Path, namespace: &str) -> CompareArgs {
    CompareArgs {
        config: config.to_owned(),
        namespace: namespace.to_owned(),
        from: None,
        to: None,
        window: None,
        limit: 10,
    }
}

/// Every document of the live indices, as OpenSearch returns them (with `_version`, `_seq_no`
/// and `_primary_term`), in index and id order: what "untouched" is checked against.
async fn live_indices(prefix: &str) -> String {
    let url = format!(
        "{}/{prefix}-aggregates,{prefix}-checkpoints,{prefix}-changes-*/_search?seq_no_primary_term=true&version=true",
        common::opensearch_url()
    );
    let response: serde_json::Value = reqwest::Client::new()
        .post(url)
        .json(&serde_json::json!({ "size": 10000, "query": { "match_all": {} } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut hits: Vec<serde_json::Value> = response["hits"]["hits"].as_array().unwrap().clone();
    for hit in &mut hits {
        if let Some(h) = hit.as_object_mut() {
            h.remove("_score");
            h.remove("sort");
        }
    }
    hits.sort_by_key(|h| (h["_index"].to_string(), h["_id"].to_string()));
    assert!(hits.len() > 600, "{} live documents", hits.len());
    serde_json::to_string(&hits).unwrap()
}

async fn docs_of(store: &dyn AggregateReader) -> Vec<AggregateDoc> {
    store.query(&AggQuery::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reproduces_the_run_and_leaves_live_indices_untouched() {
    common::require("moto", &common::moto_url()).await;
    common::require("OpenSearch", &common::opensearch_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let (client, table) = common::table_with_stream("replay").await;
    let mut writer = common::Writer::new(0x9E3779B97F4A7C15);
    writer.write(&client, &table, 600).await;
    let expected = writer.totals();

    let prefix = common::unique("rp");
    let archive = dir.path().join("archive");
    let text = format!(
        "data_dir = \"{dir}\"\n[archive]\ndir = \"{archive}\"\nsegment_mb = 1\n[source]\nkind = \"dynamodb\"\ntable = \"{table}\"\n\
         endpoint_url = \"{moto}\"\nregion = \"us-east-1\"\nstop_when_idle = \"3s\"\n[store]\nkind = \"opensearch\"\n\
         url = \"{os}\"\nindex_prefix = \"{prefix}\"\n[pipeline]\nname = \"orders\"\ndimensions = [\"status\"]\n\
         windows = [\"1m\", \"5m\"]\n[[pipeline.metrics]]\nname = \"amount\"\nattribute = \"amount\"\nscale = 2\n\
         [dashboard]\nenabled = false\n",
        dir = dir.path().display(),
        archive = archive.display(),
        moto = common::moto_url(),
        os = common::opensearch_url(),
    );
    let config_path = dir.path().join("live.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::parse(&text, "live.toml").unwrap();
    let summary = streamlens::app::run(config.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.source.events, 600);
    let segments = streamlens_ingest::archive::segments::segments(&archive).unwrap();
    assert_eq!(
        segments.iter().map(|s| s.records).sum::<u64>(),
        600,
        "{segments:?}"
    );
    let before = live_indices(&prefix).await;

    replay::run(args(&config_path, "r1"), CancellationToken::new())
        .await
        .unwrap();
    // With a range, segments are picked by their index: a range holding every change
    // reproduces the run too.
    replay::run(
        ReplayArgs {
            from: Some("0".to_owned()),
            to: Some("now".to_owned()),
            ..args(&config_path, "ranged")
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(replay::compare(compare_args(&config_path, "ranged"))
        .await
        .unwrap());
    // The same from the stream itself (its last 24 hours), from the trim horizon.
    replay::run(
        ReplayArgs {
            stream: Some("trim_horizon".to_owned()),
            ..args(&config_path, "from-stream")
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(replay::compare(compare_args(&config_path, "from-stream"))
        .await
        .unwrap());

    assert_eq!(
        live_indices(&prefix).await,
        before,
        "the replay changed the live indices"
    );
    assert!(replay::compare(compare_args(&config_path, "r1"))
        .await
        .unwrap());
    let namespace = streamlens_aggregator::store::open(&replay::namespace_store(&config, "r1"))
        .await
        .unwrap();
    let replayed = docs_of(namespace.as_ref()).await;
    for window in ["1m", "5m"] {
        assert_eq!(
            common::totals_of_docs(&replayed, window),
            expected,
            "window {window} of the replay"
        );
    }
    // The namespace lives in its own indices.
    let indices: serde_json::Value = reqwest::get(format!(
        "{}/_cat/indices/{prefix}-replay-r1-*?format=json",
        common::opensearch_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(
        indices
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["index"] == format!("{prefix}-replay-r1-aggregates")),
        "{indices}"
    );
    let _ = reqwest::Client::new()
        .delete(format!("{}/{prefix}*", common::opensearch_url()))
        .send()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_run_again_ends_like_an_uninterrupted_one() {
    let args = |config: &Path, namespace: &str| ReplayArgs {
        archive: Some(common::golden("orders.ndjson.gz")),
        ..args(config, namespace)
    };
    let dir = tempfile::tempdir().unwrap();
    let live_store = dir.path().join("golden.redb");
    let text = format!(
        "data_dir = \"{dir}\"\n[source]\nkind = \"archive\"\npath = \"{archive}\"\n\
         batch_size = 200\n[store]\nkind = \"embedded\"\npath = \"{store}\"\n{pipeline}\n[dashboard]\nenabled = false\n",
        dir = dir.path().display(),
        archive = common::golden("orders.ndjson.gz").display(),
        store = live_store.display(),
        pipeline = std::fs::read_to_string(common::golden("pipeline.toml")).unwrap(),
    );
    let config_path = dir.path().join("golden.toml");
    std::fs::write(&config_path, &text).unwrap();
    streamlens::app::run(
        Config::parse(&text, "golden.toml").unwrap(),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    // Uninterrupted.
    let uninterrupted = replay::run(args(&config_path, "whole"), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(uninterrupted.resumed_after, 0);
    // Paced (the 67 minutes of input in about 3 s), stopped after one second, then run again.
    let stop = CancellationToken::new();
    let paced = ReplayArgs {
        speed: Some(1_500.0),
        ..args(&config_path, "cut")
    };
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        })
    };
    let cut = replay::run(paced, stop).await.unwrap();
    timer.await.unwrap();
    assert!(!cut.completed);
    let config = Config::parse(&text, "golden.toml").unwrap();
    let cut_store = replay::namespace_store(&config, "cut");
    {
        let partial = streamlens_aggregator::store::open(&cut_store)
            .await
            .unwrap();
        let partial = docs_of(partial.as_ref()).await;
        assert!(!partial.is_empty(), "the first second wrote something");
        assert!(
            !replay::differences(&partial, &{
                let whole =
                    streamlens_aggregator::store::open(&replay::namespace_store(&config, "whole"))
                        .await
                        .unwrap();
                docs_of(whole.as_ref()).await
            })
            .is_empty(),
            "stopped half-way, the namespace is not complete yet"
        );
    }
    let rest = replay::run(args(&config_path, "cut"), CancellationToken::new())
        .await
        .unwrap();
    // It went on from the checkpoint: what the first run read was not read again.
    assert!(rest.completed);
    assert!(
        rest.resumed_after > 0 && rest.resumed_after < 4000,
        "resumed after line {}",
        rest.resumed_after
    );
    assert_eq!(rest.summary.source.events, 4000 - rest.resumed_after);
    assert_eq!(
        cut.summary.aggregated + rest.summary.aggregated,
        uninterrupted.summary.aggregated,
        "first run {:?}, second {:?}",
        cut.summary,
        rest.summary
    );
    let open = |ns: &'static str| {
        let store = replay::namespace_store(&config, ns);
        async move {
            let s = streamlens_aggregator::store::open(&store).await.unwrap();
            docs_of(s.as_ref()).await
        }
    };
    let (whole, cut) = (open("whole").await, open("cut").await);
    assert!(whole.len() > 1000);
    assert_eq!(replay::differences(&whole, &cut), vec![]);
    assert!(replay::compare(compare_args(&config_path, "cut"))
        .await
        .unwrap());

    // Another spec: a new metric backfilled into its own namespace.
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "[pipeline]\nname = \"golden\"\ndimensions = [\"status\"]\nwindows = [\"1m\"]\n\
         allowed_lateness = \"1d\"\n[[pipeline.metrics]]\nname = \"item_lines\"\nattribute = \"items\"\nkind = \"count\"\n",
    )
    .unwrap();
    replay::run(
        ReplayArgs {
            spec: Some(spec),
            ..args(&config_path, "backfill")
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // The other spec cannot go on from a namespace computed with the config's.
    let mixed = replay::run(
        ReplayArgs {
            spec: Some(dir.path().join("spec.toml")),
            ..args(&config_path, "cut")
        },
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{mixed:#}").contains("was replayed with the config's spec"),
        "{mixed:#}"
    );
    let backfilled = open("backfill").await;
    assert!(backfilled
        .iter()
        .any(|d| d.counts.get("item_lines").is_some_and(|n| *n != 0)));
    assert!(!replay::compare(compare_args(&config_path, "backfill"))
        .await
        .unwrap());

    // The query API answers from a namespace, with the spec the namespace was computed with.
    let query = |extra: &[&str]| {
        let mut args = vec!["query", "--config", config_path.to_str().unwrap()];
        args.extend([
            "--from",
            "2025-12-31T00:00:00Z",
            "--to",
            "2026-01-02T00:00:00Z",
            "--interval",
            "1h",
            "--format",
            "json",
        ]);
        args.extend(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamlens"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, live, stderr) = query(&["--metric", "amount", "--group-by", "status"]);
    assert!(ok, "{stderr}");
    let (ok, whole, stderr) = query(&[
        "--metric",
        "amount",
        "--group-by",
        "status",
        "--namespace",
        "whole",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(live, whole, "the namespace answers like live");
    let (ok, _, stderr) = query(&["--metric", "item_lines"]);
    assert!(
        !ok && stderr.contains("unknown metric `item_lines`"),
        "{stderr}"
    );
    let (ok, items, stderr) = query(&["--metric", "item_lines", "--namespace", "backfill"]);
    assert!(ok, "{stderr}");
    assert!(items.contains("\"kind\": \"count\""), "{items}");
    let (ok, _, stderr) = query(&["--metric", "amount", "--namespace", "nowhere"]);
    assert!(
        !ok && stderr.contains("no replay namespace `nowhere`"),
        "{stderr}"
    );
}

#[test]
fn namespaces_are_checked_and_never_the_live_store() {
    for bad in ["", "Live", "a b", "../x", "x/y"] {
        assert!(replay::check_namespace(bad).is_err(), "{bad}");
    }
    assert!(replay::check_namespace("backfill-2026_01").is_ok());
}
