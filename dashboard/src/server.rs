//! The dashboard's HTTP side: the page, a small JSON API, the live event stream and the browser
//! bundle, as one [`axum::Router`].
//!
//! ```no_run
//! # use std::{path::PathBuf, sync::Arc};
//! # use streamlens_core::{AggregateReader, PipelineInfo};
//! # async fn run(reader: Arc<dyn AggregateReader>, info: PipelineInfo) -> std::io::Result<()> {
//! use streamlens_dashboard::server::{router, DashboardState};
//!
//! let (updates, _) = tokio::sync::broadcast::channel(256);
//! let app = router(DashboardState {
//!     reader,
//!     updates: updates.clone(), // the aggregator sends changed documents here
//!     info,
//!     site_root: PathBuf::from("target/site"), // holds pkg/ from build-client.sh
//!     health: streamlens_dashboard::server::no_health(), // or the running pipeline's
//!     query: streamlens_dashboard::server::no_query(), // or the pipeline's query engine
//!     changes: streamlens_dashboard::server::no_changes(), // or the store's change index
//!     replays: streamlens_dashboard::server::no_replays(), // or the process's replay runner
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! # Routes
//!
//! * `GET /` — the page, server-rendered with the current aggregates (see [`crate::app`]).
//! * `GET /api/aggregates?window=1m&from=<ms>&to=<ms>&dimension=<d>` — a JSON array of
//!   [`AggregateDoc`]s straight from the reader. `window` defaults to the pipeline's first
//!   window; without `dimension` every group is returned. An unknown or malformed parameter is
//!   a `400` with `{"error": "..."}` naming it.
//! * `GET /api/pipeline` — the [`PipelineInfo`] as JSON.
//! * `GET /api/health` — the [`PipelineHealth`] from [`DashboardState::health`] as JSON: per shard
//!   position, events, records/s, errors, gaps and ms behind the newest write, plus the
//!   pipeline's events, quarantined records and gaps. It is the page's server function
//!   [`crate::app::load_health`] (`GetUrl` encoding), so the page renders and polls the same
//!   answer.
//! * `GET /api/stream` — Server-Sent Events: each message broadcast on
//!   [`DashboardState::updates`] becomes one `data:` event holding the JSON array of changed
//!   documents. A receiver that falls behind skips what it missed (the page re-reads its
//!   snapshot whenever it reconnects); a comment line every 15 s keeps proxies from closing
//!   idle connections.
//! * `POST /api/query` — a [`MetricQuery`] as JSON in, a [`QueryResult`] out, answered by
//!   [`DashboardState::query`]. A body that is not a query (bad JSON, an unknown field, a wrong
//!   type) and a query the pipeline cannot answer (unknown metric or dimension, bad time or
//!   interval, …) are a `400` with `{"error": "..."}` naming the problem; a store that cannot
//!   answer is a `503`.
//! * `POST /api/changes` — a [`ChangeQuery`] as JSON in (item key, time range, kinds, changed
//!   attribute, page size and cursor), a [`ChangePage`] out, answered by
//!   [`DashboardState::changes`] from the store's change index; errors as for `/api/query`.
//! * `GET /api/replays` — every replay namespace as a JSON array of [`ReplayStatus`]: those
//!   this process runs or ran (with their progress) and those replayed before.
//! * `POST /api/replays` — a [`ReplayRequest`] as JSON in: starts a replay of the pipeline's
//!   archive into the namespace (`201` with its [`ReplayStatus`]); a bad request is a `400`
//!   naming the problem, a namespace already being replayed a `409`.
//! * `POST /api/replays/{namespace}/stop` — stops a running replay (it keeps its checkpoint:
//!   starting it again goes on from there); `404` if none runs in that namespace.
//! * `POST /replays/start`, `POST /replays/stop` — the same from the replays page's HTML forms
//!   (form fields in, a `303` back to `/replays` out), so the page works without JavaScript.
//! * `GET /api/query.csv?metric=&group_by=&filter=&interval=&top=&range=&from=&to=` — the
//!   Explore page's query (its query string) answered as CSV.
//! * `GET /api/openapi.json` — the OpenAPI 3.1 description of these routes.
//! * `POST /api/snapshot` — the page's server function ([`crate::app::load_snapshot`]).
//! * `GET /pkg/*` — files under `<site_root>/pkg`: `streamlens_dashboard.js` and
//!   `streamlens_dashboard_bg.wasm`, built by `dashboard/build-client.sh`.
//!
//! # Shutting down
//!
//! The router keeps only a *weak* handle on the broadcast sender: once every `Sender` the caller
//! holds is dropped, open event streams end (so `axum::serve(..).with_graceful_shutdown(..)`
//! can finish) and new ones are refused with `503`.

use std::{convert::Infallible, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        FromRef, Query, State,
    },
    http::StatusCode,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Json, Router,
};
use futures::{future::BoxFuture, StreamExt};
use leptos::{config::LeptosOptions, context::provide_context};
use leptos_axum::{generate_route_list, LeptosRoutes};
use streamlens_core::{
    aggregate::{AggQuery, AggregateDoc, AggregateReader, PipelineInfo},
    changes::{ChangePage, ChangeQuery},
    health::PipelineHealth,
    query::{MetricQuery, QueryError, QueryResult},
    replay::{ReplayRequest, ReplayStatus},
};
use tokio::sync::broadcast;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};
use tower_http::services::ServeDir;

use crate::app::{
    is_known_dimension, newest_windows, resolve_dimension, resolve_window, shell, App, Snapshot,
    MAX_WINDOWS, OUTPUT_NAME,
};

/// How often an idle event stream gets a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Everything the dashboard needs.
pub struct DashboardState {
    /// Where the aggregates are read from.
    pub reader: Arc<dyn AggregateReader>,
    /// Where the aggregator announces changed documents; each message becomes one event on
    /// `/api/stream`. Held weakly by the router (see the module docs).
    pub updates: broadcast::Sender<Arc<Vec<AggregateDoc>>>,
    /// The pipeline shown.
    pub info: PipelineInfo,
    /// The directory holding `pkg/` with the browser bundle.
    pub site_root: PathBuf,
    /// The pipeline's health now, for `/api/health` and the page's health strip (called per
    /// request: keep it cheap). [`no_health`] when there is nothing to report.
    pub health: HealthFn,
    /// Answers `POST /api/query`. [`no_query`] when there is no query engine behind the page.
    pub query: QueryFn,
    /// Answers `POST /api/changes`. [`no_changes`] when there is no change index behind the
    /// page.
    pub changes: ChangesFn,
    /// Starts, stops and lists replays. [`no_replays`] when replays cannot be run from the page.
    pub replays: Replays,
}

/// Runs replays for the dashboard.
pub trait ReplayControl: Send + Sync {
    /// Starts a replay and answers at once with its first status.
    fn start(
        &self,
        request: ReplayRequest,
    ) -> BoxFuture<'static, Result<ReplayStatus, ReplayError>>;
    /// Stops the replay running in a namespace.
    fn stop(&self, namespace: &str) -> Result<ReplayStatus, ReplayError>;
    /// Every replay namespace, newest first.
    fn list(&self) -> BoxFuture<'static, Vec<ReplayStatus>>;
}

/// Why a replay could not be started or stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The request is wrong (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The namespace is being replayed already (HTTP 409).
    #[error("namespace `{0}` is being replayed already")]
    Running(String),
    /// No replay runs in that namespace (HTTP 404).
    #[error("no replay is running in namespace `{0}`")]
    NotRunning(String),
}

impl ReplayError {
    fn status(&self) -> StatusCode {
        match self {
            ReplayError::Invalid(_) => StatusCode::BAD_REQUEST,
            ReplayError::Running(_) => StatusCode::CONFLICT,
            ReplayError::NotRunning(_) => StatusCode::NOT_FOUND,
        }
    }
}

/// Starts, stops and lists replays.
pub type Replays = Arc<dyn ReplayControl>;

/// Replays for a dashboard that cannot run them: none listed, every start refused.
pub fn no_replays() -> Replays {
    struct None;
    impl ReplayControl for None {
        fn start(&self, _: ReplayRequest) -> BoxFuture<'static, Result<ReplayStatus, ReplayError>> {
            Box::pin(async {
                Err(ReplayError::Invalid(
                    "this dashboard cannot run replays (it has no pipeline config behind it)"
                        .to_owned(),
                ))
            })
        }
        fn stop(&self, namespace: &str) -> Result<ReplayStatus, ReplayError> {
            Err(ReplayError::NotRunning(namespace.to_owned()))
        }
        fn list(&self) -> BoxFuture<'static, Vec<ReplayStatus>> {
            Box::pin(async { Vec::new() })
        }
    }
    Arc::new(None)
}

/// Answers a metric query.
pub type QueryFn =
    Arc<dyn Fn(MetricQuery) -> BoxFuture<'static, Result<QueryResult, QueryError>> + Send + Sync>;

/// Answers a change search.
pub type ChangesFn =
    Arc<dyn Fn(ChangeQuery) -> BoxFuture<'static, Result<ChangePage, QueryError>> + Send + Sync>;

/// A change search for a dashboard without a change index: every search is refused.
pub fn no_changes() -> ChangesFn {
    Arc::new(|_| {
        Box::pin(async {
            Err(QueryError::Invalid(
                "this dashboard keeps no change index ([changes] enabled = false)".to_owned(),
            ))
        })
    })
}

/// A query engine for a dashboard without a pipeline spec behind it: every query is refused.
pub fn no_query() -> QueryFn {
    Arc::new(|_| {
        Box::pin(async {
            Err(QueryError::Invalid(
                "this dashboard has no pipeline to query".to_owned(),
            ))
        })
    })
}

/// The OpenAPI description of the JSON routes.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Takes a snapshot of the pipeline's health.
pub type HealthFn = Arc<dyn Fn() -> PipelineHealth + Send + Sync>;

/// A health provider for a dashboard without a pipeline behind it: no shards, no counters.
pub fn no_health() -> HealthFn {
    Arc::new(PipelineHealth::default)
}

/// The state the page's server function reads through Leptos context.
#[derive(Clone)]
pub(crate) struct ServerContext(Arc<Shared>);

struct Shared {
    reader: Arc<dyn AggregateReader>,
    updates: broadcast::WeakSender<Arc<Vec<AggregateDoc>>>,
    info: PipelineInfo,
    health: HealthFn,
    query: QueryFn,
    changes: ChangesFn,
    replays: Replays,
}

impl ServerContext {
    pub(crate) async fn replays(&self) -> Vec<ReplayStatus> {
        self.0.replays.list().await
    }

    /// The snapshot behind the page: unknown selections fall back to the defaults.
    pub(crate) async fn snapshot(
        &self,
        window: Option<&str>,
        dimension: Option<&str>,
    ) -> Result<Snapshot, String> {
        let info = &self.0.info;
        let Some(window) = resolve_window(info, window) else {
            return Err(format!("pipeline `{}` has no window sizes", info.name));
        };
        let dimension = resolve_dimension(info, dimension);
        let query = AggQuery {
            pipeline: self.pipeline(),
            window: Some(window.clone()),
            from: None,
            to: None,
            dimension: Some(dimension.clone()),
            values: None,
            without_distinct: false,
            worker: None,
        };
        let docs = self
            .0
            .reader
            .query(&query)
            .await
            .map_err(|e| format!("could not read the aggregates: {e}"))?;
        Ok(Snapshot {
            info: info.clone(),
            window,
            dimension,
            docs: newest_windows(docs, MAX_WINDOWS),
        })
    }

    /// The pipeline shown.
    pub(crate) fn info(&self) -> PipelineInfo {
        self.0.info.clone()
    }

    /// A change search, answered by [`DashboardState::changes`].
    pub(crate) async fn changes(&self, query: ChangeQuery) -> Result<ChangePage, QueryError> {
        (self.0.changes)(query).await
    }

    /// A metric query, answered by [`DashboardState::query`].
    pub(crate) async fn query(&self, query: MetricQuery) -> Result<QueryResult, QueryError> {
        (self.0.query)(query).await
    }

    /// The pipeline's health now.
    pub(crate) fn health(&self) -> PipelineHealth {
        (self.0.health)()
    }

    fn pipeline(&self) -> Option<String> {
        Some(self.0.info.name.clone()).filter(|name| !name.is_empty())
    }

    /// Turns `/api/aggregates` parameters into a query, or an error naming the bad parameter.
    fn aggregate_query(&self, params: &[(String, String)]) -> Result<AggQuery, String> {
        let info = &self.0.info;
        let mut query = AggQuery {
            pipeline: self.pipeline(),
            ..AggQuery::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in params {
            if seen.contains(&key.as_str()) {
                return Err(format!("parameter `{key}` is given more than once"));
            }
            seen.push(key);
            match key.as_str() {
                "window" => {
                    if !info.windows.iter().any(|w| w == value) {
                        return Err(format!(
                            "unknown `window` `{value}`; expected one of: {}",
                            info.windows.join(", ")
                        ));
                    }
                    query.window = Some(value.clone());
                }
                "dimension" => {
                    if !is_known_dimension(info, value) {
                        let mut known = info.dimensions.clone();
                        known.push(streamlens_core::aggregate::ALL_DIMENSION.to_owned());
                        return Err(format!(
                            "unknown `dimension` `{value}`; expected one of: {}",
                            known.join(", ")
                        ));
                    }
                    query.dimension = Some(value.clone());
                }
                "from" | "to" => {
                    let Ok(ms) = value.trim().parse::<i64>() else {
                        return Err(format!(
                            "invalid `{key}` `{value}`; expected epoch milliseconds"
                        ));
                    };
                    if key == "from" {
                        query.from = Some(ms);
                    } else {
                        query.to = Some(ms);
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown parameter `{key}`; expected window, from, to or dimension"
                    ))
                }
            }
        }
        if query.window.is_none() {
            query.window = resolve_window(info, None);
        }
        if query.window.is_none() {
            return Err(format!("pipeline `{}` has no window sizes", info.name));
        }
        Ok(query)
    }
}

/// The router's state: what Leptos needs, and ours.
#[derive(Clone, FromRef)]
struct AppState {
    leptos_options: LeptosOptions,
    context: ServerContext,
}

/// The complete dashboard: page, API, event stream and `/pkg` files.
///
/// Logs a warning (once, here) if the browser bundle is not under `site_root/pkg`: the page
/// still renders, but does not update live.
pub fn router(state: DashboardState) -> Router {
    let DashboardState {
        reader,
        updates,
        info,
        site_root,
        health,
        query,
        changes,
        replays,
    } = state;
    let pkg_dir = site_root.join("pkg");
    warn_if_bundle_missing(&pkg_dir);

    let leptos_options = LeptosOptions::builder()
        .output_name(OUTPUT_NAME)
        .site_root(site_root.to_string_lossy().into_owned())
        .site_pkg_dir("pkg")
        .build();
    let context = ServerContext(Arc::new(Shared {
        reader,
        updates: updates.downgrade(),
        info,
        health,
        query,
        changes,
        replays,
    }));
    let state = AppState {
        leptos_options: leptos_options.clone(),
        context: context.clone(),
    };
    let routes = generate_route_list(App);

    Router::new()
        .route("/api/aggregates", get(aggregates))
        .route("/api/pipeline", get(pipeline))
        .route("/api/query", post(metric_query))
        .route("/api/changes", post(change_search))
        .route("/api/query.csv", get(query_csv))
        .route("/api/replays", get(list_replays).post(start_replay))
        .route("/api/replays/{namespace}/stop", post(stop_replay))
        .route("/replays/start", post(start_replay_form))
        .route("/replays/stop", post(stop_replay_form))
        .route("/api/openapi.json", get(openapi))
        .route("/api/stream", get(stream))
        .nest_service("/pkg", ServeDir::new(pkg_dir))
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(context.clone()),
            move || shell(leptos_options.clone()),
        )
        .fallback(not_found)
        .with_state(state)
}

fn warn_if_bundle_missing(pkg_dir: &std::path::Path) {
    let missing: Vec<String> = [
        format!("{OUTPUT_NAME}.js"),
        format!("{OUTPUT_NAME}_bg.wasm"),
    ]
    .into_iter()
    .filter(|name| !pkg_dir.join(name).is_file())
    .collect();
    if !missing.is_empty() {
        tracing::warn!(
            dir = %pkg_dir.display(),
            missing = %missing.join(", "),
            "the dashboard's browser bundle is missing: the page renders but will not update live \
             (build it with dashboard/build-client.sh)"
        );
    }
}

/// A query string's pairs, or why it cannot be read.
fn query_params(
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, String> {
    params
        .map(|Query(params)| params)
        .map_err(|e| format!("invalid query string: {}", e.body_text()))
}

/// A JSON error body: `{"error": message}`.
fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn aggregates(
    State(context): State<ServerContext>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let params = match query_params(params) {
        Ok(params) => params,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let query = match context.aggregate_query(&params) {
        Ok(query) => query,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match context.0.reader.query(&query).await {
        Ok(docs) => Json(docs).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "aggregate query failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not read the aggregates: {e}"),
            )
        }
    }
}

async fn metric_query(
    State(context): State<ServerContext>,
    body: Result<Json<MetricQuery>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(query)) => answer("metric query", (context.0.query)(query).await),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("invalid query: {}", e.body_text()),
        ),
    }
}

/// An API answer as JSON; a refused request is a `400`, a store that could not answer a `503`.
fn answer<T: serde::Serialize>(what: &str, result: Result<T, QueryError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(QueryError::Invalid(message)) => error(StatusCode::BAD_REQUEST, message),
        Err(e @ QueryError::Store(_)) => {
            tracing::warn!(error = %e, "{what} failed");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

async fn list_replays(State(context): State<ServerContext>) -> Response {
    Json(context.replays().await).into_response()
}

async fn start_replay(
    State(context): State<ServerContext>,
    headers: axum::http::HeaderMap,
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Response {
    if let Some(refused) = refuse_cross_site(&headers) {
        return refused;
    }
    let request = match body {
        Ok(Json(request)) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid replay request: {}", e.body_text()),
            )
        }
    };
    match context.0.replays.start(request).await {
        Ok(status) => (StatusCode::CREATED, Json(status)).into_response(),
        Err(e) => error(e.status(), e.to_string()),
    }
}

async fn stop_replay(
    State(context): State<ServerContext>,
    headers: axum::http::HeaderMap,
    axum::extract::Path(namespace): axum::extract::Path<String>,
) -> Response {
    if let Some(refused) = refuse_cross_site(&headers) {
        return refused;
    }
    match context.0.replays.stop(&namespace) {
        Ok(status) => Json(status).into_response(),
        Err(e) => error(e.status(), e.to_string()),
    }
}

/// True for a request another site's page made: the browser says so in `Sec-Fetch-Site`, or
/// (older browsers) in an `Origin` that is not this host, or `null`. Requests without either
/// (`curl`, scripts) are not a browser's: the token, when set, guards them. Replays are started
/// and stopped only from this dashboard's own pages.
fn cross_site(headers: &axum::http::HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        // Trusted over `Origin`: a proxy may rewrite `Host`.
        return !matches!(site, "same-origin" | "none");
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_none_or(|(_, authority)| authority != host),
        (Some(_), None) => true,
        _ => false,
    }
}

/// Back to the replays page, with a message for it to show.
fn back_to_replays(key: &str, message: &str) -> Response {
    let query = serde_urlencoded::to_string([(key, message)]).unwrap_or_default();
    axum::response::Redirect::to(&format!("/replays?{query}")).into_response()
}

/// The `403` for a replay request another site's page made.
fn refuse_cross_site(headers: &axum::http::HeaderMap) -> Option<Response> {
    cross_site(headers).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "replays are started and stopped from this dashboard's own page only".to_owned(),
        )
    })
}

/// A form field, trimmed; absent when empty.
fn form_field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, v)| k == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim().to_owned())
}

/// The replays page's start form: its fields are a [`ReplayRequest`]'s (empty ones left out,
/// `fresh` a checkbox).
async fn start_replay_form(
    State(context): State<ServerContext>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(fields): axum::extract::Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = refuse_cross_site(&headers) {
        return refused;
    }
    let field = |name: &str| form_field(&fields, name);
    let speed = match field("speed") {
        None => None,
        Some(text) => match text.parse::<f64>() {
            Ok(speed) => Some(speed),
            Err(_) => return back_to_replays("error", &format!("speed: `{text}` is not a number")),
        },
    };
    let request = ReplayRequest {
        namespace: field("namespace").unwrap_or_default(),
        from: field("from"),
        to: field("to"),
        speed,
        fresh: field("fresh").is_some(),
        spec: field("spec"),
    };
    match context.0.replays.start(request).await {
        Ok(status) => back_to_replays("started", &status.namespace),
        Err(e) => back_to_replays("error", &e.to_string()),
    }
}

/// The replays page's stop button (`namespace` field).
async fn stop_replay_form(
    State(context): State<ServerContext>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(fields): axum::extract::Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = refuse_cross_site(&headers) {
        return refused;
    }
    let namespace = form_field(&fields, "namespace").unwrap_or_default();
    match context.0.replays.stop(&namespace) {
        Ok(status) => back_to_replays("stopped", &status.namespace),
        Err(e) => back_to_replays("error", &e.to_string()),
    }
}

/// `GET /api/query.csv?<the explorer's query string>`: the explorer's answer as CSV.
async fn query_csv(
    State(context): State<ServerContext>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let params = match query_params(params) {
        Ok(params) => params,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let form = crate::explore::ExploreForm::from_lookup(|k| {
        params
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    });
    let query = match form.to_query() {
        Ok(query) => query,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match (context.0.query)(query).await {
        Ok(result) => (
            [
                (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    "attachment; filename=\"streamlens.csv\"",
                ),
            ],
            result.to_csv(),
        )
            .into_response(),
        Err(e) => answer::<()>("csv query", Err(e)),
    }
}

async fn change_search(
    State(context): State<ServerContext>,
    body: Result<Json<ChangeQuery>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(query)) => answer("change search", (context.0.changes)(query).await),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("invalid change search: {}", e.body_text()),
        ),
    }
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

async fn pipeline(State(context): State<ServerContext>) -> Json<PipelineInfo> {
    Json(context.0.info.clone())
}

async fn stream(State(context): State<ServerContext>) -> Response {
    // Subscribe before answering: once the browser sees the response, nothing is missed.
    let Some(receiver) = context.0.updates.upgrade().map(|tx| tx.subscribe()) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the update stream has ended".to_owned(),
        );
    };
    let events = BroadcastStream::new(receiver).filter_map(|message| async move {
        match message {
            Ok(docs) if docs.is_empty() => None,
            Ok(docs) => match Event::default().json_data(&*docs) {
                Ok(event) => Some(Ok::<_, Infallible>(event)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not encode an update event");
                    None
                }
            },
            Err(BroadcastStreamRecvError::Lagged(skipped)) => {
                tracing::debug!(skipped, "an update stream fell behind");
                None
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found".to_owned())
}

/// The cookie a browser keeps the access token in.
pub const TOKEN_COOKIE: &str = "streamlens_token";

/// Guards every route but `/pkg/*` (the public browser bundle) with an access token: a request
/// passes with `Authorization: Bearer <token>` or the [`TOKEN_COOKIE`] cookie. A page opened as
/// `…?token=<token>` sets the cookie (HttpOnly, SameSite=Strict) and is redirected to the same URL
/// without the token, so the browser's later requests — server functions, the event stream —
/// carry it. Anything else is a `401` saying how to authenticate. Tokens are compared in constant
/// time.
pub fn with_token(router: Router, token: String) -> Router {
    let token = Arc::new(token);
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move { check_token(&token, request, next).await }
        },
    ))
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn check_token(
    token: &str,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::header;
    let path = request.uri().path().to_owned();
    if path.starts_with("/pkg/") {
        return next.run(request).await;
    }
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim(), token));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(name, value)| name == TOKEN_COOKIE && same(value, token));
    if bearer || cookie {
        return next.run(request).await;
    }
    // `?token=` on a page: keep it in a cookie and drop it from the URL.
    let query = request.uri().query().unwrap_or_default();
    let mut given = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("token=") {
            Some(value) => {
                given = Some(value.to_owned());
                false
            }
            None => !pair.is_empty(),
        })
        .collect();
    if let Some(given) = given {
        if same(&given, token) {
            // Same origin only: `//host/...` would send the browser elsewhere.
            let path = format!("/{}", path.trim_start_matches('/'));
            let location = if rest.is_empty() {
                path
            } else {
                format!("{path}?{}", rest.join("&"))
            };
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, location),
                    (
                        header::SET_COOKIE,
                        format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
                    ),
                ],
            )
                .into_response();
        }
    }
    error(
        StatusCode::UNAUTHORIZED,
        "this dashboard needs its access token: send `Authorization: Bearer <token>`, or open a \
         page once with `?token=<token>`"
            .to_owned(),
    )
}
