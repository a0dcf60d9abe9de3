//! The Replays page in a real headless Chromium, with a live pipeline reading a moto table (SDK
//! writes) and keeping a segmented archive:
//!
//! * a replay started from the page's form runs to the end of the archive, its progress shown;
//! * a paced replay stopped from the page keeps its checkpoint, and started again goes on from
//!   it ("resumed after line N") to the end;
//! * the Explore page shows the namespace beside live: no cell differs, and the totals on both
//!   sides equal the totals computed from the writes; a replay cut short differs, and says so;
//! * `/api/replays` refuses bad requests with the problem named, the form refuses a post from
//!   another site, and replays are not counted in the live pipeline's Prometheus metrics.
//!
//! With `STREAMLENS_SCREENSHOTS=<dir>` it saves the Replays page and the beside view (1280×800)
//! there. Needs moto, `/usr/bin/chromium`, `npm ci` (playwright-core) and the dashboard bundle
//! (`dashboard/build-client.sh`).

mod browser_harness;
mod common;

use std::{collections::BTreeMap, str::FromStr, time::Duration};

use browser_harness::{prerequisites, Page, Served};
use rust_decimal::Decimal;
use serde_json::{json, Value};

const WRITES: usize = 240;

async fn ask_ok(page: &mut Page, line: &str, answer: &str) -> String {
    let got = page.ask(line).await;
    assert!(got.starts_with(answer), "{line}: {got}");
    got
}

/// Fills the start form (namespace, and speed when given) and submits it.
async fn start(page: &mut Page, namespace: &str, speed: Option<&str>) {
    ask_ok(
        page,
        &format!("FILL input[name=namespace]|{namespace}"),
        "FILLED",
    )
    .await;
    if let Some(speed) = speed {
        ask_ok(page, &format!("FILL input[name=speed]|{speed}"), "FILLED").await;
    }
    ask_ok(
        page,
        "SUBMIT form.replay-start button",
        &format!("SUBMITTED /replays?started={namespace}"),
    )
    .await;
}

/// Waits for the namespace's row to match `[data-…]` conditions (`[data-state="done"]`).
async fn row(page: &mut Page, namespace: &str, conditions: &str) {
    ask_ok(
        page,
        &format!("WAITCSS tr[data-namespace=\"{namespace}\"]{conditions}"),
        "MATCHED",
    )
    .await;
}

async fn text(page: &mut Page, css: &str) -> String {
    let line = page.ask(&format!("TEXT {css}")).await;
    let json = line
        .strip_prefix("TEXT ")
        .unwrap_or_else(|| panic!("{line}"));
    serde_json::from_str::<Option<String>>(json)
        .unwrap()
        .unwrap_or_else(|| panic!("nothing matches {css}"))
}

async fn replays(base: &str) -> Vec<Value> {
    serde_json::from_value(common::get_json(&format!("{base}/api/replays")).await).unwrap()
}

async fn status_of(base: &str, namespace: &str) -> Value {
    replays(base)
        .await
        .into_iter()
        .find(|r| r["namespace"] == namespace)
        .unwrap_or_else(|| panic!("no replay `{namespace}` listed"))
}

/// `POST /api/replays`: the status code and body.
async fn post_replay(base: &str, body: &Value) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/replays"))
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Starts a replay through the API and waits until it is no longer running.
async fn replay_to_end(base: &str, body: Value) -> Value {
    let (code, answer) = post_replay(base, &body).await;
    assert_eq!(code, 201, "{answer}");
    let namespace = body["namespace"].as_str().unwrap();
    for _ in 0..300 {
        let status = status_of(base, namespace).await;
        if status["state"] != "running" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{body} still running");
}

/// `cancelled: 12.50 · paid: 3.00` as a map.
fn totals(text: &str) -> BTreeMap<String, Decimal> {
    text.split(" · ")
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (group, value) = part.rsplit_once(": ").unwrap_or_else(|| panic!("{text}"));
            (group.to_owned(), Decimal::from_str(value).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_started_watched_stopped_resumed_and_shown_beside_live_from_the_page() {
    common::require("moto", &common::moto_url()).await;
    prerequisites();

    let dir = tempfile::tempdir().unwrap();
    let (client, table) = common::table_with_stream("replays").await;
    let from = streamlens_ingest::now_ms() - 60_000;
    let mut writer = common::Writer::new(0xD1B54A32D192ED03);
    writer.write(&client, &table, WRITES / 2).await;
    let middle = streamlens_ingest::now_ms();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    writer.write(&client, &table, WRITES - WRITES / 2).await;
    let expected: BTreeMap<String, Decimal> = writer
        .totals()
        .into_iter()
        .filter(|((dimension, _), _)| dimension == "status")
        .map(|((_, status), t)| (status, t.4))
        .filter(|(_, sum)| !sum.is_zero())
        .collect();
    let to = streamlens_ingest::now_ms() + 60_000;

    let archive = dir.path().join("archive");
    let config = common::config(
        &common::moto_source(&table),
        &format!(
            "kind = \"embedded\"\npath = \"{}\"",
            dir.path().join("live.redb").display()
        ),
        dir.path(),
        &format!("[archive]\ndir = \"{}\"", archive.display()),
    );
    let served = Served::start(config).await;
    let base = served.base.clone();
    // The live run has read (and archived) every write.
    for _ in 0..300 {
        let archived = streamlens_ingest::archive::segments::segments(&archive)
            .map(|s| s.iter().map(|m| m.records).sum::<u64>())
            .unwrap_or(0);
        if archived == WRITES as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut page = Page::open(&base).await;
    assert_eq!(page.ask("GOTO /replays").await, "AT /replays");
    // No replay yet.
    assert!(text(&mut page, "section.replays")
        .await
        .contains("no replay yet"));

    // Started from the form, it runs to the end of the archive.
    start(&mut page, "fix", None).await;
    row(&mut page, "fix", "[data-state=\"done\"]").await;
    assert_eq!(
        text(&mut page, "tr[data-namespace=\"fix\"] td:nth-child(4)").await,
        format!("{WRITES} / {WRITES}")
    );
    let fix = status_of(&base, "fix").await;
    assert_eq!(fix["read"], WRITES as u64, "{fix}");
    assert_eq!(fix["resumed_after"], 0, "{fix}");

    // Paced (the writes' span in about 20 s), stopped from the page once it has read something.
    start(&mut page, "cut", Some("0.1")).await;
    row(
        &mut page,
        "cut",
        "[data-state=\"running\"]:not([data-read=\"0\"])",
    )
    .await;
    ask_ok(
        &mut page,
        "SUBMIT tr[data-namespace=\"cut\"] button",
        "SUBMITTED /replays?stopped=cut",
    )
    .await;
    row(&mut page, "cut", "[data-state=\"stopped\"]").await;
    let stopped = status_of(&base, "cut").await;
    let stopped_at = stopped["read"].as_u64().unwrap();
    assert!(
        stopped_at > 0 && stopped_at < WRITES as u64,
        "stopped half-way: {stopped}"
    );
    // Started again at full speed, it goes on from its checkpoint.
    start(&mut page, "cut", None).await;
    row(&mut page, "cut", "[data-state=\"done\"]").await;
    let resumed = status_of(&base, "cut").await;
    let after = resumed["resumed_after"].as_u64().unwrap();
    assert!(after > 0 && after <= stopped_at, "{resumed}");
    assert!(
        text(&mut page, "tr[data-namespace=\"cut\"] td:nth-child(4)")
            .await
            .contains(&format!("resumed after line {after}")),
        "{resumed}"
    );
    assert!(
        resumed["aggregated"].as_u64().unwrap() <= WRITES as u64 - after,
        "{resumed}"
    );

    // Beside live: nothing differs, and both sides' totals are the writes'.
    let beside = |ns: &str| {
        format!(
            "/explore?metric=amount&group_by=status&range=custom&from={from}&to={to}&ns={ns}&beside=1"
        )
    };
    let path = beside("cut");
    assert_eq!(
        page.ask(&format!("GOTO {path}")).await,
        format!("AT {path}")
    );
    ask_ok(
        &mut page,
        "WAITCSS section.differences[data-differences=\"0\"]",
        "MATCHED",
    )
    .await;
    let shots = std::env::var_os("STREAMLENS_SCREENSHOTS").map(std::path::PathBuf::from);
    if let Some(dir) = &shots {
        std::fs::create_dir_all(dir).unwrap();
        ask_ok(&mut page, "VIEWPORT 1280 800", "RESIZED").await;
        let shot = dir.join("beside.png");
        ask_ok(
            &mut page,
            &format!("SCREENSHOT {}", shot.display()),
            "SAVED",
        )
        .await;
    }
    let live = totals(&text(&mut page, "p.totals[data-side=\"live\"]").await);
    let replayed = totals(&text(&mut page, "p.totals[data-side=\"replay\"]").await);
    assert_eq!(live, expected);
    assert_eq!(replayed, expected);

    // A replay of the first half only: the page lists the cells that differ.
    let half = replay_to_end(
        &base,
        json!({ "namespace": "half", "to": middle.to_string() }),
    )
    .await;
    assert_eq!(half["state"], "done", "{half}");
    let path = beside("half");
    assert_eq!(
        page.ask(&format!("GOTO {path}")).await,
        format!("AT {path}")
    );
    ask_ok(
        &mut page,
        "WAITCSS section.differences:not([data-differences=\"0\"]) tr[data-group]",
        "MATCHED",
    )
    .await;
    assert!(text(&mut page, "section.differences h3")
        .await
        .contains("differ"));
    // Another spec, given in the form: a metric the live pipeline does not have, backfilled
    // from the archive into its namespace and queried there; it equals the writes' net items.
    assert_eq!(page.ask("GOTO /replays").await, "AT /replays");
    ask_ok(&mut page, "CLICK details.replay-spec summary", "CLICKED").await;
    let spec = r#"pipeline = { name = "orders", dimensions = ["status"], windows = ["1m"], metrics = [{ name = "priced", attribute = "amount", kind = "count" }] }"#;
    ask_ok(
        &mut page,
        &format!("FILL textarea[name=spec]|{spec}"),
        "FILLED",
    )
    .await;
    start(&mut page, "priced", None).await;
    row(&mut page, "priced", "[data-state=\"done\"]").await;
    let ask = |body: Value| {
        let base = base.clone();
        async move {
            let response = reqwest::Client::new()
                .post(format!("{base}/api/query"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (code, answer) = ask(json!({
        "metric": "priced", "group_by": "status", "from": "earliest", "namespace": "priced"
    }))
    .await;
    assert_eq!(code, 200, "{answer}");
    let counted: BTreeMap<String, i64> = answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let total = s["total"].as_str().unwrap_or("0").parse::<i64>().unwrap();
            (s["group"].as_str().unwrap().to_owned(), total)
        })
        .filter(|(_, n)| *n != 0)
        .collect();
    let items: BTreeMap<String, i64> = writer
        .totals()
        .into_iter()
        .filter(|((dimension, _), t)| dimension == "status" && t.3 != 0)
        .map(|((_, status), t)| (status, t.3))
        .collect();
    assert!(!items.is_empty());
    assert_eq!(counted, items, "{answer}");
    let (code, answer) = ask(json!({ "metric": "priced", "from": "earliest" })).await;
    assert_eq!(code, 400, "the live pipeline has no such metric: {answer}");

    if let Some(dir) = &shots {
        // The list with a paced replay under way.
        reqwest::Client::new()
            .post(format!("{base}/api/replays"))
            .json(&json!({ "namespace": "paced", "speed": 0.2 }))
            .send()
            .await
            .unwrap();
        assert_eq!(page.ask("GOTO /replays").await, "AT /replays");
        row(&mut page, "paced", ":not([data-read=\"0\"])").await;
        let shot = dir.join("replays.png");
        ask_ok(
            &mut page,
            &format!("SCREENSHOT {}", shot.display()),
            "SAVED",
        )
        .await;
        reqwest::Client::new()
            .post(format!("{base}/api/replays/paced/stop"))
            .send()
            .await
            .unwrap();
    }
    page.close_without_console_errors().await;

    // Bad requests name their problem; a form post from another site is refused.
    let post = |body: Value| {
        let base = base.clone();
        async move { post_replay(&base, &body).await }
    };
    let (code, body) = post(json!({ "namespace": "Bad Name" })).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("lowercase letters"), "{body}");
    let (code, body) = post(json!({ "namespace": "x", "speed": -1 })).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("speed"), "{body}");
    let (code, body) = post(json!({ "namespace": "x", "from": "yesterday-ish" })).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("from"), "{body}");
    let (code, body) = post(json!({ "namespace": "x", "spec": "[pipeline]\nname = 1" })).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("spec:"), "{body}");
    let (code, body) = post(json!({ "namespace": "x", "archive": "/etc" })).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unknown field `archive`"), "{body}");
    let stop = reqwest::Client::new()
        .post(format!("{base}/api/replays/nothing/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), 404);
    // Another site's page cannot start or stop replays (Fetch Metadata, else Origin); behind a
    // proxy that rewrites Host, the dashboard's own page still can.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = |headers: &[(&str, &str)], namespace: &str| {
        let mut request = no_redirect
            .post(format!("{base}/replays/start"))
            .form(&[("namespace", namespace)]);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        form(&[("origin", "http://evil.example")], "forged").await,
        403
    );
    assert_eq!(form(&[("origin", "null")], "forged").await, 403);
    assert_eq!(
        form(&[("sec-fetch-site", "cross-site")], "forged").await,
        403
    );
    let proxied = [
        ("sec-fetch-site", "same-origin"),
        ("origin", "https://dash.example"),
    ];
    assert_eq!(form(&proxied, "proxied").await, 303);
    let forged_stop = no_redirect
        .post(format!("{base}/api/replays/proxied/stop"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(forged_stop.status(), 403);
    assert!(replays(&base)
        .await
        .iter()
        .all(|r| r["namespace"] != "forged"));

    // A namespace opened in Explore can be replayed again (it goes on from its end); another
    // range for it is refused, naming both, instead of mixing two runs' windows.
    let cut = replay_to_end(&base, json!({ "namespace": "cut" })).await;
    assert_eq!(cut["state"], "done", "{cut}");
    assert_eq!(cut["aggregated"], 0, "{cut}");
    let (code, body) = post(json!({ "namespace": "fix", "to": middle.to_string() })).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("was replayed from") && body.contains("--fresh"),
        "{body}"
    );

    // The OpenAPI documents the request's fields, no more, no less.
    let openapi = common::get_json(&format!("{base}/api/openapi.json")).await;
    common::assert_documents_fields(
        &openapi,
        "ReplayRequest",
        &streamlens_core::ReplayRequest {
            namespace: "n".into(),
            from: Some("0".into()),
            to: Some("1".into()),
            speed: Some(1.0),
            fresh: true,
            spec: Some("[pipeline]".into()),
        },
    );
    assert!(openapi["paths"]["/api/replays"]["post"].is_object());
    assert!(openapi["paths"]["/api/replays/{namespace}/stop"]["post"].is_object());

    // The replays read 240 + 240 + 120-odd changes; the live metrics count the live run's only.
    let metrics = common::get_text(&format!("{base}/metrics")).await;
    let events: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("streamlens_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(events, WRITES as f64, "{metrics}");
    served.stop().await;
}
