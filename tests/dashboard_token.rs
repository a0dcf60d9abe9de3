//! The dashboard's access token: without it every page and API route answers 401 (the public
//! browser bundle excepted); `Authorization: Bearer` passes; a page opened once with `?token=`
//! sets an HttpOnly cookie and redirects to the same URL without it, after which the browser's
//! page, server functions and event stream work — in headless Chromium, without console errors.

mod browser_harness;
mod common;

use browser_harness::{prerequisites, Page, Served};

const TOKEN: &str = "s3cret-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_api_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::golden_config(dir.path(), 1000);
    config.dashboard.token = Some(TOKEN.to_owned());
    // Replayed live (times shifted to now, looping), so the update stream stays open.
    if let streamlens_ingest::SourceConfig::Archive(archive) = &mut config.source {
        archive.live_replay = true;
    }
    let served = Served::start(config).await;
    let base = served.base.clone();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    for path in ["/", "/changes", "/api/health", "/api/pipeline", "/metrics"] {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("access token"),
            "{body}"
        );
    }
    let refused = client
        .post(format!("{base}/api/query"))
        .bearer_auth("wrong-token-0123456789")
        .json(&serde_json::json!({ "metric": "events" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let answered = client
        .post(format!("{base}/api/query"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "metric": "events", "from": 0, "to": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let bundle = client
        .get(format!("{base}/pkg/streamlens_dashboard.js"))
        .send()
        .await
        .unwrap();
    assert_ne!(bundle.status(), 401, "the bundle is public");

    let redirected = client
        .get(format!(
            "{base}/explore?metric=amount&token={TOKEN}&range=1h"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), 303);
    assert_eq!(
        redirected.headers()["location"],
        "/explore?metric=amount&range=1h"
    );
    let elsewhere = client
        .get(format!("{base}//evil.example/x?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        elsewhere.headers()["location"],
        "/evil.example/x",
        "same origin only"
    );
    let cookie = redirected.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with(&format!("streamlens_token={TOKEN};")),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let page = client
        .get(format!("{base}/explore?metric=amount&range=1h"))
        .header("cookie", format!("streamlens_token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("table"));

    prerequisites();
    let page = Page::open(&format!("{base}/?token={TOKEN}")).await;
    page.close_without_console_errors().await;
    served.stop().await;
}
