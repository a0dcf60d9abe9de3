//! An HTTP proxy in front of a real server that injects faults on a plan: answers a request
//! itself with an error status instead of forwarding it, or forwards a bulk request and then
//! marks some of its items as rejected (`429`), as an overloaded OpenSearch cluster does.
//!
//! The real server (osmem-server in the tests) does everything else; the proxy only decides,
//! request by request, what goes wrong. It is for faults only: what works is the real thing.
//!
//! ```no_run
//! # async fn demo() {
//! use streamlens_infra::fault_proxy::{Fault, FaultProxy};
//! // The first three bulk requests fail with 503, then everything goes through.
//! let proxy = FaultProxy::start("http://127.0.0.1:9200", |call| {
//!     if call.path.ends_with("/_bulk") && call.nth_of_path < 3 {
//!         Fault::Status(503)
//!     } else {
//!         Fault::Forward
//!     }
//! })
//! .await;
//! println!("point the store at {}", proxy.url());
//! # }
//! ```

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use axum::{body::Bytes, extract::State, http::StatusCode, response::IntoResponse, Router};
use serde_json::{json, Value};

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and return the server's answer.
    Forward,
    /// Answer with this status (and an OpenSearch-style error body) without forwarding.
    Status(u16),
    /// Forward a bulk request, then mark every other item of the answer as rejected with `429`
    /// (the items were in fact written: a retry meets them as the same version).
    RejectHalfTheItems,
}

/// One request, as the plan sees it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// How many earlier requests had a path ending like this one (`/_bulk`, `/_search`, ...:
    /// the last path segment).
    pub nth_of_path: u64,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

type Plan = Arc<dyn Fn(&Call) -> Fault + Send + Sync>;

struct Shared {
    upstream: String,
    client: reqwest::Client,
    plan: Plan,
    seen: Mutex<HashMap<String, u64>>,
    injected: AtomicU64,
    forwarded: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free local port.
    pub async fn start(
        upstream: &str,
        plan: impl Fn(&Call) -> Fault + Send + Sync + 'static,
    ) -> FaultProxy {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            plan: Arc::new(plan),
            seen: Mutex::new(HashMap::new()),
            injected: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy { url, shared, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Faults injected so far (requests answered with an error, and bulk answers altered).
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::Relaxed)
    }

    /// Requests forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let content_type = request.headers().get("content-type").cloned();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = uri.path().to_owned();
    let last = path.rsplit('/').next().unwrap_or_default().to_owned();
    let nth_of_path = {
        let mut seen = shared.seen.lock().unwrap_or_else(|e| e.into_inner());
        let n = seen.entry(last).or_default();
        *n += 1;
        *n - 1
    };
    let call = Call {
        method: method.to_string(),
        path: path.clone(),
        nth_of_path,
        authorization,
    };
    let fault = (shared.plan)(&call);
    if let Fault::Status(status) = fault {
        shared.injected.fetch_add(1, Ordering::Relaxed);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let body = json!({
            "error": { "type": "injected_fault", "reason": format!("injected {status}") },
            "status": status.as_u16(),
        });
        return (status, axum::Json(body)).into_response();
    }
    let body: Bytes = match axum::body::to_bytes(request.into_body(), 64 << 20).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let target = format!(
        "{}{}",
        shared.upstream,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or_default();
    let mut forward = shared.client.request(method, &target).body(body);
    if let Some(ct) = content_type.as_ref().and_then(|v| v.to_str().ok()) {
        forward = forward.header("content-type", ct);
    }
    let answer = match forward.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::OK);
    let bytes = answer.bytes().await.unwrap_or_default();
    if fault == Fault::RejectHalfTheItems {
        if let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) {
            if let Some(items) = value["items"].as_array_mut() {
                for item in items.iter_mut().skip(1).step_by(2) {
                    if let Some(outcome) = item.as_object_mut().and_then(|o| o.values_mut().next())
                    {
                        outcome["status"] = json!(429);
                        outcome["error"] = json!({
                            "type": "rejected_execution_exception",
                            "reason": "rejected execution (injected)"
                        });
                    }
                }
                value["errors"] = json!(true);
                shared.injected.fetch_add(1, Ordering::Relaxed);
                return (status, axum::Json(value)).into_response();
            }
        }
    }
    (
        status,
        [("content-type", "application/json; charset=UTF-8")],
        bytes,
    )
        .into_response()
}
