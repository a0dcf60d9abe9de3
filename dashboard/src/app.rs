//! The dashboard's components, compiled into the server (`ssr`) and into the browser bundle
//! (`hydrate`).
//!
//! # Data flow
//!
//! ```text
//! ?window=&dimension= ─► Resource(load_snapshot) ─► Snapshot ─────────┐
//! EventSource("/api/stream") ─► live map (id ► doc, higher version) ──┴─► rows (Memo) ─► table
//! ?metric= ─► chosen metric ─────────────────────────────────────────────► chart ◄─ rows
//! Resource(load_health) ─► then GET /api/health every 2 s ─► health (Memo) ─► banner, strip
//! ```
//!
//! * The **selection** lives in the URL, read with `use_query_map`, so the server and the
//!   browser start from the same values and a selection can be bookmarked. Unknown values fall
//!   back to defaults: the pipeline's first window, its first dimension (or `_all` when it has
//!   none) and `net_count`.
//! * The **snapshot** is a [`Resource`] over the [`load_snapshot`] server function. On the server
//!   the function body runs in-process (reading the reader from context) and, because the route
//!   is `SsrMode::Async`, the page is only sent once it resolved; the value is serialised into the
//!   page, so hydration reuses it instead of fetching. When the selection changes in the browser
//!   the resource calls the same function over HTTP (`POST /api/snapshot`), and the `<Transition>`
//!   keeps the old view until the new one is there.
//! * The **health** is a [`Resource`] over [`load_health`] (`GET /api/health`), rendered with the
//!   page and then re-read every [`HEALTH_POLL_MS`] by the `live` module; the banner lists
//!   [`PipelineHealth::warnings`].
//! * The **live map** is only filled in the browser, by the `live` module: every Server-Sent
//!   Event carries the documents that just changed, and each is kept if its `version` is higher
//!   than the one we have. The visible rows are a memo over snapshot + live map, trimmed to the
//!   newest [`MAX_WINDOWS`] windows.
//!
//! # Rendering rules that keep hydration clean
//!
//! Hydration attaches to the server's HTML node by node, so whatever the browser renders first
//! must equal the server's output. Hence: ordered maps only (`BTreeMap`, never `HashMap`), times
//! formatted from epoch milliseconds in UTC by [`utc_time`] / [`utc_datetime`], chart geometry
//! from plain arithmetic (no `log10`/`powf`, whose last bits may differ between the native and the
//! WebAssembly math libraries), and everything that only exists in the browser (the
//! `data-hydrated` marker, the stream state) starting from the value the server rendered and
//! changing in an effect, which only runs after hydration.
//!
//! # Hooks for tests
//!
//! The page's root `<div id="dashboard">` gets `data-hydrated="true"` once hydrated and
//! `data-stream="connecting" | "open" | "retrying"` with the stream's state. Table rows carry
//! `data-id` (the document id) and `data-version`; cells carry a class naming the column:
//! `window_start`, `value`, `inserts`, `modifies`, `removes`, `net_count`, and `sum` with
//! `data-metric="<metric>"` for each metric sum.
//!
//! The health strip is a `<dl class="health">` whose items carry `data-health="<key>"` (`shards`,
//! `behind`, `events`, `quarantined`, `gaps`, `errors`), the value in their `<dd>`. The warning
//! banner exists only while there is a warning: `<div role="alert" data-health-warning="gap
//! behind">` (the kinds present), one `<li data-kind data-shard>` per warning. The per-shard table
//! (inside `<details class="shards">`) has one `<tr data-shard data-state="reading|stopped">` per
//! shard.

use std::collections::{btree_map::Entry, BTreeMap, BTreeSet};

use leptos::{prelude::*, server_fn::codec::GetUrl};
use leptos_meta::{provide_meta_context, MetaTags, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    hooks::{use_location, use_navigate, use_query_map},
    path, NavigateOptions, SsrMode,
};
use serde::{Deserialize, Serialize};
use streamlens_core::{
    aggregate::{AggregateDoc, PipelineInfo, ALL_DIMENSION},
    health::{format_ms, HealthWarning, PipelineHealth, ShardStatus, BEHIND_WARNING_MS},
};

/// The name of the browser bundle: `wasm-bindgen --out-name` and `LeptosOptions::output_name`.
///
/// The page loads `/pkg/streamlens_dashboard.js` and `/pkg/streamlens_dashboard_bg.wasm`.
pub const OUTPUT_NAME: &str = "streamlens_dashboard";

/// How many windows (the newest) the page shows.
pub const MAX_WINDOWS: usize = 30;

/// How many bar series the chart draws before it folds the smallest into one "(other)" series.
const MAX_SERIES: usize = 8;

/// The name of the folded series.
const OTHER_SERIES: &str = "(other)";

/// The Okabe–Ito palette, ordered so that neighbours stay distinguishable with the common
/// colour-vision deficiencies (and the yellow, weak on white, comes late).
pub(crate) const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000",
];

/// What the page needs to render: the pipeline, the resolved selection and its newest windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The pipeline being shown.
    pub info: PipelineInfo,
    /// The window size the documents are for (the request's, or the pipeline's first).
    pub window: String,
    /// The dimension the documents are for (the request's, or the default).
    pub dimension: String,
    /// The documents of the newest [`MAX_WINDOWS`] windows, ordered by window start and value.
    pub docs: Vec<AggregateDoc>,
}

impl Snapshot {
    /// Whether a document (e.g. one received live) belongs to this snapshot's selection.
    pub fn selects(&self, doc: &AggregateDoc) -> bool {
        (self.info.name.is_empty() || doc.pipeline == self.info.name)
            && doc.window == self.window
            && doc.dimension == self.dimension
    }
}

/// Reads the snapshot for a selection; `None` (or an unknown value) picks the default.
///
/// During server rendering this runs in-process; from the browser it is `POST /api/snapshot`.
#[server(prefix = "/api", endpoint = "snapshot")]
pub async fn load_snapshot(
    window: Option<String>,
    dimension: Option<String>,
) -> Result<Snapshot, ServerFnError> {
    let Some(context) = use_context::<crate::server::ServerContext>() else {
        return Err(ServerFnError::new(
            "the dashboard's server state is missing",
        ));
    };
    context
        .snapshot(window.as_deref(), dimension.as_deref())
        .await
        .map_err(ServerFnError::new)
}

/// The pipeline's health now: `GET /api/health`.
///
/// During server rendering this runs in-process; the page then polls it every
/// [`HEALTH_POLL_MS`].
#[server(prefix = "/api", endpoint = "health", input = GetUrl)]
pub async fn load_health() -> Result<PipelineHealth, ServerFnError> {
    let Some(context) = use_context::<crate::server::ServerContext>() else {
        return Err(ServerFnError::new(
            "the dashboard's server state is missing",
        ));
    };
    Ok(context.health())
}

/// The pipeline's description: in-process on the server, `GET /api/pipeline_info` from the
/// browser.
#[server(prefix = "/api", endpoint = "pipeline_info", input = GetUrl)]
pub async fn load_pipeline() -> Result<PipelineInfo, ServerFnError> {
    let Some(context) = use_context::<crate::server::ServerContext>() else {
        return Err(ServerFnError::new(
            "the dashboard's server state is missing",
        ));
    };
    Ok(context.info())
}

/// How often the page re-reads `/api/health` (milliseconds).
pub const HEALTH_POLL_MS: u64 = 2_000;

/// At most this many warnings are listed in the banner (the rest are counted).
const MAX_WARNINGS: usize = 5;

/// At most this many shards are listed in the per-shard table (the rest are counted).
const MAX_SHARD_ROWS: usize = 50;

/// The requested window if the pipeline has it, else its first; `None` if it has none.
pub fn resolve_window(info: &PipelineInfo, requested: Option<&str>) -> Option<String> {
    requested
        .filter(|w| info.windows.iter().any(|known| known == w))
        .or(info.windows.first().map(String::as_str))
        .map(str::to_owned)
}

/// Whether `dimension` can be asked for: `_all` or one of the pipeline's dimensions.
pub fn is_known_dimension(info: &PipelineInfo, dimension: &str) -> bool {
    dimension == ALL_DIMENSION || info.dimensions.iter().any(|d| d == dimension)
}

/// The requested dimension if known, else the pipeline's first dimension, else `_all`.
pub fn resolve_dimension(info: &PipelineInfo, requested: Option<&str>) -> String {
    requested
        .filter(|d| is_known_dimension(info, d))
        .or(info.dimensions.first().map(String::as_str))
        .unwrap_or(ALL_DIMENSION)
        .to_owned()
}

/// The documents of the newest `n` distinct window starts, ordered by window start then value.
pub fn newest_windows(mut docs: Vec<AggregateDoc>, n: usize) -> Vec<AggregateDoc> {
    let starts: BTreeSet<i64> = docs.iter().map(|d| d.window_start).collect();
    if let Some(&oldest_kept) = starts.iter().nth(starts.len().saturating_sub(n)) {
        docs.retain(|d| d.window_start >= oldest_kept);
    }
    docs.sort_by(|a, b| {
        (a.window_start, &a.value, &a.dimension).cmp(&(b.window_start, &b.value, &b.dimension))
    });
    docs
}

/// Puts `doc` into `docs` unless a document with the same id and an equal or higher version is
/// already there. Returns whether it was taken.
pub fn merge_doc(docs: &mut BTreeMap<String, AggregateDoc>, doc: AggregateDoc) -> bool {
    match docs.entry(doc.id()) {
        Entry::Vacant(slot) => {
            slot.insert(doc);
            true
        }
        Entry::Occupied(mut slot) if doc.version > slot.get().version => {
            slot.insert(doc);
            true
        }
        Entry::Occupied(_) => false,
    }
}

/// The rows to show: the snapshot's documents updated by the live ones of the same selection,
/// newest [`MAX_WINDOWS`] windows, ordered by window start then value.
pub fn visible_docs(
    snapshot: &Snapshot,
    live: &BTreeMap<String, AggregateDoc>,
) -> Vec<AggregateDoc> {
    let mut merged = BTreeMap::new();
    for doc in &snapshot.docs {
        merge_doc(&mut merged, doc.clone());
    }
    for doc in live.values().filter(|d| snapshot.selects(d)) {
        merge_doc(&mut merged, doc.clone());
    }
    newest_windows(merged.into_values().collect(), MAX_WINDOWS)
}

/// What the chart plots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    /// Items that entered the group minus items that left it.
    NetCount,
    /// INSERT events.
    Inserts,
    /// MODIFY events.
    Modifies,
    /// REMOVE events.
    Removes,
    /// The net change of a metric attribute's sum.
    Sum(String),
}

impl Metric {
    /// Every metric of a pipeline, in selector order.
    pub fn all(info: &PipelineInfo) -> Vec<Metric> {
        let mut all = vec![
            Metric::NetCount,
            Metric::Inserts,
            Metric::Modifies,
            Metric::Removes,
        ];
        all.extend(info.metrics.iter().cloned().map(Metric::Sum));
        all
    }

    /// The query-string key: `net_count`, `inserts`, `modifies`, `removes` or `sums.<metric>`.
    pub fn key(&self) -> String {
        match self {
            Metric::NetCount => "net_count".into(),
            Metric::Inserts => "inserts".into(),
            Metric::Modifies => "modifies".into(),
            Metric::Removes => "removes".into(),
            Metric::Sum(name) => format!("sums.{name}"),
        }
    }

    /// A human label.
    pub fn label(&self) -> String {
        match self {
            Metric::NetCount => "net count".into(),
            Metric::Inserts => "inserts".into(),
            Metric::Modifies => "modifies".into(),
            Metric::Removes => "removes".into(),
            Metric::Sum(name) => format!("sum of {name}"),
        }
    }

    /// The metric named by `requested` if the pipeline has it, else `net_count`.
    pub fn resolve(requested: Option<&str>, info: &PipelineInfo) -> Metric {
        requested
            .and_then(|key| Metric::all(info).into_iter().find(|m| m.key() == key))
            .unwrap_or(Metric::NetCount)
    }

    /// The metric's name in the query API.
    pub fn api_name(&self) -> String {
        match self {
            Metric::Sum(name) => name.clone(),
            other => other.key(),
        }
    }

    /// The metric's value in a document (sums are exact decimals; the chart only needs `f64`).
    pub fn value(&self, doc: &AggregateDoc) -> f64 {
        match self {
            Metric::NetCount => doc.net_count as f64,
            Metric::Inserts => doc.inserts as f64,
            Metric::Modifies => doc.modifies as f64,
            Metric::Removes => doc.removes as f64,
            Metric::Sum(name) => doc
                .sums
                .get(name)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0),
        }
    }
}

/// `HH:MM:SS` (or `HH:MM`) of an epoch-millisecond time, in UTC.
pub fn utc_time(ms: i64, seconds: bool) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    if seconds {
        format!("{h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}")
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of an epoch-millisecond time.
pub fn utc_datetime(ms: i64) -> String {
    let iso = streamlens_core::query::iso8601(ms);
    format!("{} {} UTC", &iso[..10], &iso[11..19])
}

/// The state of the live stream, shown in the header and as `data-stream` on the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// Not connected yet (also what the server renders).
    Connecting,
    /// Receiving updates.
    Open,
    /// Lost; a reconnect is scheduled.
    Retrying,
}

impl StreamStatus {
    pub(crate) fn attr(self) -> &'static str {
        match self {
            StreamStatus::Connecting => "connecting",
            StreamStatus::Open => "open",
            StreamStatus::Retrying => "retrying",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            StreamStatus::Connecting => "connecting…",
            StreamStatus::Open => "live",
            StreamStatus::Retrying => "reconnecting…",
        }
    }
}

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                // no favicon request (a 404 would be a console error)
                <link rel="icon" href="data:," />
                <style>{STYLE}</style>
                // without JavaScript the page is a static report: no live indicator
                <noscript>
                    <style>{NOSCRIPT_STYLE}</style>
                </noscript>
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The app: the overview at `/`, [`crate::explore`], [`crate::changes_page`] and
/// [`crate::health_page`], each rendered in `SsrMode::Async` so the HTML is complete without
/// JavaScript.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Title text="streamlens" />
        <Router>
            <Routes fallback=|| view! { <p class="error">"page not found"</p> }>
                <Route path=path!("/") view=Dashboard ssr=SsrMode::Async />
                <Route
                    path=path!("/explore")
                    view=crate::explore::ExplorePage
                    ssr=SsrMode::Async
                />
                <Route
                    path=path!("/changes")
                    view=crate::changes_page::ChangesPage
                    ssr=SsrMode::Async
                />
                <Route
                    path=path!("/replays")
                    view=crate::replays_page::ReplaysPage
                    ssr=SsrMode::Async
                />
                <Route
                    path=path!("/health")
                    view=crate::health_page::HealthPage
                    ssr=SsrMode::Async
                />
            </Routes>
        </Router>
    }
}

/// The live page.
#[component]
fn Dashboard() -> impl IntoView {
    let query = use_query_map();
    let window = Memo::new(move |_| query.with(|q| q.get("window")));
    let dimension = Memo::new(move |_| query.with(|q| q.get("dimension")));
    let metric = Memo::new(move |_| query.with(|q| q.get("metric")));

    let range = Memo::new(move |_| {
        query.with(|q| crate::chrome::RangeForm {
            range: crate::chrome::param(q, "range"),
            from: crate::chrome::param(q, "from"),
            to: crate::chrome::param(q, "to"),
        })
    });
    // Live by default; once the form was sent (it always sends `range`), as its checkbox says.
    let follow =
        Memo::new(move |_| query.with(|q| q.get("live").is_some() || q.get("range").is_none()));
    let tick = RwSignal::new(0_u64);

    let snapshot = Resource::new(
        move || (window.get(), dimension.get()),
        |(window, dimension)| load_snapshot(window, dimension),
    );
    let panels = Resource::new(
        move || {
            let range = range.get();
            let live = follow.get() && range.ends_now(crate::panels::DEFAULT_RANGE);
            (
                range,
                dimension.get(),
                metric.get(),
                if live { tick.get() } else { 0 },
            )
        },
        |(range, dimension, metric, _)| crate::panels::load_panels(range, dimension, metric),
    );
    let health = Resource::new(|| (), |_| load_health());
    let live_docs = RwSignal::new(BTreeMap::<String, AggregateDoc>::new());
    let live_health = RwSignal::new(None::<PipelineHealth>);
    let status = RwSignal::new(StreamStatus::Connecting);
    let hydrated = RwSignal::new(false);

    // Effects only run in the browser, after hydration.
    Effect::new(move |_| {
        hydrated.set(true);
        #[cfg(feature = "hydrate")]
        {
            live::start(live::Live {
                docs: live_docs,
                status,
                window,
                dimension,
                follow,
                tick,
            });
            live::poll_health(live_health);
        }
    });

    view! {
        <div
            id="dashboard"
            data-hydrated=move || hydrated.get().then_some("true")
            data-stream=move || status.get().attr()
        >
            <Transition fallback=|| view! { <p class="loading">"loading aggregates…"</p> }>
                {move || Suspend::new(async move {
                    let snap = snapshot.await;
                    // Without a health report the page still shows the aggregates.
                    let health = health.await.unwrap_or_default();
                    match snap {
                        Ok(snap) => {
                            let live = Live {
                                docs: live_docs,
                                health: live_health,
                                status,
                            };
                            let selection = Selection { metric, range, follow, panels };
                            page(snap, health, live, selection).into_any()
                        }
                        Err(e) => {
                            view! {
                                <p class="error">{format!("could not load the aggregates: {e}")}</p>
                            }
                                .into_any()
                        }
                    }
                })}
            </Transition>
        </div>
    }
}

/// What the browser keeps up to date after hydration.
#[derive(Clone, Copy)]
struct Live {
    /// Documents received on the update stream.
    docs: RwSignal<BTreeMap<String, AggregateDoc>>,
    /// The newest health report polled (`None` until the first poll answers).
    health: RwSignal<Option<PipelineHealth>>,
    /// The update stream's state.
    status: RwSignal<StreamStatus>,
}

/// What the query string selects besides window and dimension, and the panels it asks for.
#[derive(Clone, Copy)]
struct Selection {
    metric: Memo<Option<String>>,
    range: Memo<crate::chrome::RangeForm>,
    follow: Memo<bool>,
    panels: Resource<Result<crate::panels::Panels, ServerFnError>>,
}

/// Everything below the root once a snapshot is there.
fn page(snap: Snapshot, health: PipelineHealth, live: Live, selection: Selection) -> impl IntoView {
    let Selection {
        metric,
        range,
        follow,
        panels,
    } = selection;
    let Live {
        docs: live,
        health: live_health,
        status,
    } = live;
    let health = {
        let rendered = StoredValue::new(health);
        Memo::new(move |_| live_health.get().unwrap_or_else(|| rendered.get_value()))
    };
    let info = snap.info.clone();
    let window = snap.window.clone();
    let dimension = snap.dimension.clone();
    let snap = StoredValue::new(snap);
    let rows = Memo::new(move |_| snap.with_value(|s| live.with(|l| visible_docs(s, l))));
    let chosen = {
        let info = info.clone();
        Memo::new(move |_| Metric::resolve(metric.get().as_deref(), &info))
    };

    // Selecting navigates in place: the URL is the selection.
    let navigate = use_navigate();
    let location = use_location();
    let select = {
        let (window, dimension) = (window.clone(), dimension.clone());
        move |key: &'static str, value: String| {
            let r = range.get_untracked();
            let mut params = vec![
                ("window", window.clone()),
                ("dimension", dimension.clone()),
                ("metric", chosen.get_untracked().key()),
                (
                    "range",
                    r.range
                        .clone()
                        .unwrap_or_else(|| crate::panels::DEFAULT_RANGE.to_owned()),
                ),
            ];
            for (k, v) in [("from", r.from), ("to", r.to)] {
                if let Some(v) = v {
                    params.push((k, v));
                }
            }
            if follow.get_untracked() {
                params.push(("live", "1".to_owned()));
            }
            for (k, v) in params.iter_mut() {
                if *k == key {
                    *v = value.clone();
                }
            }
            let query = params
                .iter()
                .map(|(k, v)| format!("{k}={}", encode_query_value(v)))
                .collect::<Vec<_>>()
                .join("&");
            let path = location.pathname.get_untracked();
            navigate(
                &format!("{path}?{query}"),
                NavigateOptions {
                    replace: true,
                    scroll: false,
                    ..Default::default()
                },
            );
        }
    };

    let window_options = info
        .windows
        .iter()
        .map(|w| {
            let selected = *w == window;
            view! { <option value=w.clone() selected=selected>{w.clone()}</option> }
        })
        .collect_view();
    let dimension_options = info
        .dimensions
        .iter()
        .map(String::as_str)
        .chain([ALL_DIMENSION])
        .map(|d| {
            let selected = d == dimension;
            let label = if d == ALL_DIMENSION {
                "_all (total)".to_owned()
            } else {
                d.to_owned()
            };
            view! { <option value=d.to_owned() selected=selected>{label}</option> }
        })
        .collect_view();
    let initial_metric = chosen.get_untracked();
    let metric_options = Metric::all(&info)
        .into_iter()
        .map(|m| {
            let selected = m == initial_metric;
            view! { <option value=m.key() selected=selected>{m.label()}</option> }
        })
        .collect_view();

    let on_window = {
        let select = select.clone();
        move |ev| select("window", event_target_value(&ev))
    };
    let on_dimension = {
        let select = select.clone();
        move |ev| select("dimension", event_target_value(&ev))
    };
    let on_metric = move |ev| select("metric", event_target_value(&ev));

    let metric_names = info.metrics.clone();
    let dimension_heading = if dimension == ALL_DIMENSION {
        "group".to_owned()
    } else {
        dimension.clone()
    };
    let chart_caption = {
        let (window, dimension) = (window.clone(), dimension.clone());
        move || {
            let by = if dimension == ALL_DIMENSION {
                "all items".to_owned()
            } else {
                format!("by {dimension}")
            };
            format!("{} per {window} window, {by}", chosen.get().label())
        }
    };

    view! {
        {crate::chrome::header(&info, status)}
        {health_view(health, false)}
        <form class="controls" method="get">
            <label>
                "window " <select name="window" on:change=on_window>{window_options}</select>
            </label>
            <label>
                "dimension "
                <select name="dimension" on:change=on_dimension>{dimension_options}</select>
            </label>
            <label>
                "metric " <select name="metric" on:change=on_metric>{metric_options}</select>
            </label>
            {crate::chrome::range_fields(
                &range.get_untracked(),
                crate::panels::DEFAULT_RANGE,
                follow.get_untracked(),
            )}
            <button type="submit">"apply"</button>
        </form>
        <Transition fallback=|| view! { <p class="loading">"loading panels…"</p> }>
            {move || Suspend::new(async move {
                match panels.await {
                    Ok(p) => crate::panels::view_panels(&p).into_any(),
                    Err(e) => view! { <p class="error">{format!("panels: {e}")}</p> }.into_any(),
                }
            })}
        </Transition>
        <section class="chart">
            <h2>{chart_caption}</h2>
            {move || rows.with(|docs| chosen.with(|m| chart(docs, m)))}
        </section>
        <section class="table">
            <h2>{format!("newest {MAX_WINDOWS} windows")}</h2>
            <table>
                <thead>
                    <tr>
                        <th>"window start (UTC)"</th>
                        <th>{dimension_heading}</th>
                        <th>"inserts"</th>
                        <th>"modifies"</th>
                        <th>"removes"</th>
                        <th>"net count"</th>
                        {metric_names
                            .iter()
                            .map(|m| view! { <th>{format!("sum of {m}")}</th> })
                            .collect_view()}
                    </tr>
                </thead>
                <tbody>{move || rows.with(|docs| table_rows(docs, &metric_names))}</tbody>
            </table>
        </section>
    }
}

/// The warning banner, the health strip and the per-shard table.
pub(crate) fn health_view(health: Memo<PipelineHealth>, open: bool) -> impl IntoView {
    let sharded = health.with_untracked(|h| h.sharded);
    let warnings = Memo::new(move |_| health.with(PipelineHealth::warnings));
    let stat =
        move |key: &'static str, label: &'static str, value: Signal<(String, &'static str)>| {
            view! {
                <div data-health=key class=move || value.with(|v| v.1)>
                    <dt>{label}</dt>
                    <dd>{move || value.with(|v| v.0.clone())}</dd>
                </div>
            }
        };
    let shards = Signal::derive(move || {
        health.with(|h| {
            if !h.sharded {
                return ("—".to_owned(), "");
            }
            (h.shards_reading().to_string(), "")
        })
    });
    let behind = Signal::derive(move || {
        health.with(|h| match h.max_ms_behind() {
            None => ("—".to_owned(), ""),
            Some(0) => ("caught up".to_owned(), ""),
            Some(ms) if ms > BEHIND_WARNING_MS => (format_ms(ms), "bad"),
            Some(ms) => (format_ms(ms), ""),
        })
    });
    let events = Signal::derive(move || {
        health.with(|h| match h.records_per_s() {
            Some(rate) => (format!("{} · {}/s", h.events, format_rate(rate)), ""),
            None => (h.events.to_string(), ""),
        })
    });
    let quarantined = Signal::derive(move || {
        health.with(|h| {
            (
                h.quarantined.to_string(),
                if h.quarantined > 0 { "warn" } else { "" },
            )
        })
    });
    let gaps = Signal::derive(move || {
        health.with(|h| (h.gaps.to_string(), if h.gaps > 0 { "bad" } else { "" }))
    });
    let errors = Signal::derive(move || health.with(|h| (h.errors.to_string(), "")));

    view! {
        {move || warnings.with(|w| (!w.is_empty()).then(|| alert(w)))}
        <dl class="health" aria-label="pipeline health">
            {stat("shards", "shards reading", shards)}
            {stat("behind", "max behind", behind)}
            {stat("events", "events", events)}
            {stat("quarantined", "quarantined", quarantined)}
            {stat("gaps", "gaps", gaps)}
            {sharded.then(|| stat("errors", "stream errors", errors))}
            <div class="asof">
                <dt>"as of"</dt>
                <dd>{move || health.with(|h| utc_time(h.at_ms, true))}" UTC"</dd>
            </div>
        </dl>
        {sharded
            .then(|| {
                view! {
                    <details class="shards" open=open>
                        <summary>
                            {move || health.with(|h| format!("per shard ({})", h.shards.len()))}
                        </summary>
                        <div class="scroll">
                            <table>
                                <thead>
                                    <tr>
                                        <th>"shard"</th>
                                        <th>"position"</th>
                                        <th>"events"</th>
                                        <th>"records/s"</th>
                                        <th>"errors"</th>
                                        <th>"gaps"</th>
                                        <th>"behind"</th>
                                    </tr>
                                </thead>
                                <tbody>{move || health.with(|h| shard_rows(&h.shards))}</tbody>
                            </table>
                        </div>
                    </details>
                }
            })}
    }
}

/// The warning banner: `role="alert"`, `data-health-warning` the kinds present (`gap`,
/// `behind`), one list item per warning with `data-kind` and `data-shard`.
fn alert(warnings: &[HealthWarning]) -> AnyView {
    let mut kinds: Vec<&str> = Vec::new();
    for w in warnings {
        if !kinds.contains(&w.kind.as_str()) {
            kinds.push(w.kind.as_str());
        }
    }
    let items = warnings
        .iter()
        .take(MAX_WARNINGS)
        .map(|w| {
            view! {
                <li data-kind=w.kind.as_str() data-shard=w.shard_id.clone()>
                    {w.message.clone()}
                </li>
            }
        })
        .collect_view();
    let more = warnings.len().saturating_sub(MAX_WARNINGS);
    view! {
        <div class="alert" role="alert" data-health-warning=kinds.join(" ")>
            <strong>"The pipeline needs attention"</strong>
            <ul>
                {items}
                {(more > 0).then(|| view! { <li class="more">{format!("… and {more} more")}</li> })}
            </ul>
        </div>
    }
    .into_any()
}

/// The per-shard table body, in shard order, at most [`MAX_SHARD_ROWS`] rows.
fn shard_rows(shards: &[ShardStatus]) -> AnyView {
    if shards.is_empty() {
        return view! {
            <tr class="empty">
                <td colspan="7">"no shards found yet"</td>
            </tr>
        }
        .into_any();
    }
    let more = shards.len().saturating_sub(MAX_SHARD_ROWS);
    let rows = shards
        .iter()
        .take(MAX_SHARD_ROWS)
        .map(|s| {
            let behind = match s.ms_behind {
                None => "—".to_owned(),
                Some(0) => "caught up".to_owned(),
                Some(ms) => format_ms(ms),
            };
            let state = if s.reading { "reading" } else { "stopped" };
            let gaps_class = if s.gaps > 0 { "gaps bad" } else { "gaps" };
            view! {
                <tr data-shard=s.shard_id.clone() data-state=state>
                    <td class="shard">{s.shard_id.clone()}</td>
                    <td class="position">{s.position.clone().unwrap_or_else(|| "—".into())}</td>
                    <td class="events">{s.events.to_string()}</td>
                    <td class="rate">
                        {s.records_per_s.map(format_rate).unwrap_or_else(|| "—".into())}
                    </td>
                    <td class="errors">{s.errors.to_string()}</td>
                    <td class=gaps_class>{s.gaps.to_string()}</td>
                    <td class="behind">{behind}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        {rows}
        {(more > 0)
            .then(|| {
                view! {
                    <tr class="empty">
                        <td colspan="7">{format!("… and {more} more shards")}</td>
                    </tr>
                }
            })}
    }
    .into_any()
}

/// Records per second with one decimal below 100, whole above.
fn format_rate(rate: f64) -> String {
    if rate < 100.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

/// The table body: newest window first, values in order within a window.
fn table_rows(docs: &[AggregateDoc], metrics: &[String]) -> AnyView {
    if docs.is_empty() {
        let span = (6 + metrics.len()).to_string();
        return view! {
            <tr class="empty">
                <td colspan=span>"no aggregates yet for this window and dimension"</td>
            </tr>
        }
        .into_any();
    }
    let mut ordered: Vec<&AggregateDoc> = docs.iter().collect();
    ordered.sort_by(|a, b| {
        b.window_start
            .cmp(&a.window_start)
            .then_with(|| a.value.cmp(&b.value))
    });
    ordered
        .into_iter()
        .map(|doc| {
            let sums = metrics
                .iter()
                .map(|m| {
                    let sum = doc.sums.get(m).cloned().unwrap_or_else(|| "0".into());
                    view! {
                        <td class="sum" data-metric=m.clone()>
                            {sum}
                        </td>
                    }
                })
                .collect_view();
            view! {
                <tr data-id=doc.id() data-version=doc.version.to_string()>
                    <td class="window_start" title=utc_datetime(doc.window_start)>
                        {utc_time(doc.window_start, true)}
                    </td>
                    <td class="value">{doc.value.clone()}</td>
                    <td class="inserts">{doc.inserts.to_string()}</td>
                    <td class="modifies">{doc.modifies.to_string()}</td>
                    <td class="removes">{doc.removes.to_string()}</td>
                    <td class="net_count">{doc.net_count.to_string()}</td>
                    {sums}
                </tr>
            }
        })
        .collect_view()
        .into_any()
}

/// The chart's size in SVG user units (it scales to the page width).
pub(crate) const CHART_W: f64 = 960.0;
pub(crate) const CHART_H: f64 = 300.0;
pub(crate) const MARGIN_LEFT: f64 = 64.0;
pub(crate) const MARGIN_RIGHT: f64 = 12.0;
pub(crate) const MARGIN_TOP: f64 = 12.0;
pub(crate) const MARGIN_BOTTOM: f64 = 30.0;

/// One bar series: a dimension value (or the folded rest) and its value per window start.
struct Series {
    name: String,
    values: BTreeMap<i64, f64>,
}

/// Groups documents into at most [`MAX_SERIES`] series, folding the smallest (by total absolute
/// value) into one; all our metrics are additive, so the fold is a sum.
fn series_of(docs: &[AggregateDoc], metric: &Metric) -> Vec<Series> {
    let mut by_value: BTreeMap<&str, BTreeMap<i64, f64>> = BTreeMap::new();
    for doc in docs {
        *by_value
            .entry(doc.value.as_str())
            .or_default()
            .entry(doc.window_start)
            .or_default() += metric.value(doc);
    }
    let mut all: Vec<Series> = by_value
        .into_iter()
        .map(|(name, values)| Series {
            name: name.to_owned(),
            values,
        })
        .collect();
    if all.len() <= MAX_SERIES {
        return all;
    }
    let weight = |s: &Series| s.values.values().map(|v| v.abs()).sum::<f64>();
    all.sort_by(|a, b| weight(b).total_cmp(&weight(a)).then(a.name.cmp(&b.name)));
    let rest = all.split_off(MAX_SERIES - 1);
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let mut other = Series {
        name: OTHER_SERIES.to_owned(),
        values: BTreeMap::new(),
    };
    for series in rest {
        for (start, v) in series.values {
            *other.values.entry(start).or_default() += v;
        }
    }
    all.push(other);
    all
}

/// A value axis over `values` and zero: its ends, rounded out to whole ticks, and the tick step.
pub(crate) fn axis(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let (mut lo, mut hi) = (0.0_f64, 0.0_f64);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi - lo <= 0.0 {
        hi = lo + 1.0;
    }
    let step = nice_step(hi - lo);
    ((lo / step).floor() * step, (hi / step).ceil() * step, step)
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) of about `span / 4`, found by exact
/// multiplication and division only, so server and browser agree to the bit.
fn nice_step(span: f64) -> f64 {
    let raw = span / 4.0;
    let mut magnitude = 1.0;
    while magnitude * 10.0 <= raw {
        magnitude *= 10.0;
    }
    while magnitude > raw {
        magnitude /= 10.0;
    }
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|f| f * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// A tick label with as many decimals as the step needs, and `k`/`M` for big steps.
pub(crate) fn tick_label(value: f64, step: f64) -> String {
    let (scale, suffix) = if step >= 1e6 {
        (1e6, "M")
    } else if step >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let (value, step) = (value / scale, step / scale);
    let mut decimals = 0;
    let mut unit = 1.0;
    while unit > step * 1.000_001 && decimals < 9 {
        unit /= 10.0;
        decimals += 1;
    }
    if value.abs() < step * 1e-9 {
        // no "-0" and no "0k"
        return "0".to_owned();
    }
    format!("{value:.decimals$}{suffix}")
}

/// A number as an SVG coordinate.
pub(crate) fn coord(v: f64) -> String {
    format!("{v:.1}")
}

/// The bar chart: one slot per window (oldest left), one bar per series in each slot.
fn chart(docs: &[AggregateDoc], metric: &Metric) -> AnyView {
    if docs.is_empty() {
        return view! { <p class="empty">"no aggregates yet for this window and dimension"</p> }
            .into_any();
    }
    let starts: Vec<i64> = docs
        .iter()
        .map(|d| d.window_start)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let series = series_of(docs, metric);

    let (lo, hi, step) = axis(series.iter().flat_map(|s| s.values.values().copied()));
    let plot_w = CHART_W - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = CHART_H - MARGIN_TOP - MARGIN_BOTTOM;
    let y = move |v: f64| MARGIN_TOP + (hi - v) / (hi - lo) * plot_h;

    let mut ticks = Vec::new();
    let mut i = 0;
    loop {
        let v = lo + f64::from(i) * step;
        if v > hi + step * 1e-9 || i > 20 {
            break;
        }
        ticks.push(v);
        i += 1;
    }
    let grid = ticks
        .into_iter()
        .map(|v| {
            let yy = coord(y(v));
            let class = if v.abs() < step * 1e-9 {
                "zero"
            } else {
                "grid"
            };
            view! {
                <line
                    class=class
                    x1=coord(MARGIN_LEFT)
                    x2=coord(CHART_W - MARGIN_RIGHT)
                    y1=yy.clone()
                    y2=yy
                ></line>
                <text class="tick" x=coord(MARGIN_LEFT - 6.0) y=coord(y(v) + 4.0) text-anchor="end">
                    {tick_label(v, step)}
                </text>
            }
        })
        .collect_view();

    let slot = plot_w / starts.len() as f64;
    let bar = slot * 0.8 / series.len() as f64;
    let with_seconds = starts.iter().any(|s| s.rem_euclid(60_000) != 0);
    let label_every = starts.len().div_ceil(10);
    let x_labels = starts
        .iter()
        .enumerate()
        .filter(|(i, _)| (starts.len() - 1 - i).is_multiple_of(label_every))
        .map(|(i, start)| {
            let x = MARGIN_LEFT + (i as f64 + 0.5) * slot;
            view! {
                <text class="tick" x=coord(x) y=coord(CHART_H - 10.0) text-anchor="middle">
                    {utc_time(*start, with_seconds)}
                </text>
            }
        })
        .collect_view();

    let zero = y(0.0);
    let bars = series
        .iter()
        .enumerate()
        .flat_map(|(si, s)| {
            let colour = PALETTE[si % PALETTE.len()];
            starts.iter().enumerate().filter_map(move |(wi, start)| {
                let v = *s.values.get(start)?;
                let x = MARGIN_LEFT + wi as f64 * slot + slot * 0.1 + si as f64 * bar;
                let top = y(v.max(0.0));
                let height = (y(v.min(0.0)) - top).max(if v == 0.0 { 0.0 } else { 1.0 });
                let tip = format!("{} · {} · {v}", s.name, utc_datetime(*start));
                Some(view! {
                    <rect
                        x=coord(x)
                        y=coord(top.min(zero))
                        width=coord((bar * 0.9).max(1.0))
                        height=coord(height)
                        fill=colour
                    >
                        <title>{tip}</title>
                    </rect>
                })
            })
        })
        .collect_view();

    let legend = legend(series.iter().map(|s| s.name.as_str()));

    let label = format!("{} per window", metric.label());
    view! {
        <svg
            class="bars"
            viewBox=format!("0 0 {CHART_W} {CHART_H}")
            role="img"
            aria-label=label
        >
            {grid}
            {bars}
            {x_labels}
        </svg>
        <ul class="legend">{legend}</ul>
    }
    .into_any()
}

/// A chart's legend: one swatch per series, in [`PALETTE`] order.
pub(crate) fn legend<'a>(names: impl Iterator<Item = &'a str>) -> impl IntoView {
    names
        .enumerate()
        .map(|(si, name)| {
            let style = format!("background:{}", PALETTE[si % PALETTE.len()]);
            view! {
                <li>
                    <span class="swatch" style=style></span>
                    {name.to_owned()}
                </li>
            }
        })
        .collect_view()
}

/// The message of a failed server function, without the framework's prefix.
pub(crate) fn server_error(e: &ServerFnError) -> String {
    let message = e.to_string();
    message
        .strip_prefix("error running server function: ")
        .unwrap_or(&message)
        .to_owned()
}

/// Percent-encodes a query-string value (everything but RFC 3986 unreserved characters).
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(feature = "hydrate")]
pub(crate) use live::poll_health;

/// The browser side of the live stream.
#[cfg(feature = "hydrate")]
mod live {
    use std::{cell::Cell, collections::BTreeMap, rc::Rc, time::Duration};

    use leptos::prelude::*;
    use streamlens_core::aggregate::AggregateDoc;
    use wasm_bindgen::{closure::Closure, JsCast};
    use web_sys::{Event, EventSource, MessageEvent};

    use super::{load_health, load_snapshot, merge_doc, StreamStatus, HEALTH_POLL_MS};
    use streamlens_core::health::PipelineHealth;

    /// The first reconnect delay; it doubles per failed attempt up to [`MAX_RETRY`].
    const FIRST_RETRY: Duration = Duration::from_millis(500);
    const MAX_RETRY: Duration = Duration::from_secs(30);
    /// The live map keeps at most this many documents (the newest windows win).
    const MAX_LIVE_DOCS: usize = 5_000;

    /// What the stream writes to and reads from.
    #[derive(Clone, Copy)]
    pub(super) struct Live {
        pub docs: RwSignal<BTreeMap<String, AggregateDoc>>,
        pub status: RwSignal<StreamStatus>,
        pub window: Memo<Option<String>>,
        pub dimension: Memo<Option<String>>,
        /// Off: updates are not applied (the page stays as rendered).
        pub follow: Memo<bool>,
        /// Bumped (at most every [`TICK_EVERY`]) when updates arrive: the panels re-read.
        pub tick: RwSignal<u64>,
    }

    /// Updates closer together than this re-read the panels once.
    const TICK_EVERY: Duration = Duration::from_secs(1);

    /// An open `EventSource` and the callbacks it holds; dropping it closes the stream.
    struct Connection {
        source: EventSource,
        _on_open: Closure<dyn FnMut(Event)>,
        _on_message: Closure<dyn FnMut(MessageEvent)>,
        _on_error: Closure<dyn FnMut(Event)>,
    }

    impl Drop for Connection {
        fn drop(&mut self) {
            self.source.close();
        }
    }

    type Slot = StoredValue<Option<Connection>, LocalStorage>;

    /// Opens the stream. The connection lives in a stored value owned by the calling component,
    /// so it is closed when the component goes away.
    pub(super) fn start(live: Live) {
        let slot: Slot = StoredValue::new_local(None);
        connect(live, slot, Rc::new(Cell::new(0)));
    }

    fn connect(live: Live, slot: Slot, failures: Rc<Cell<u32>>) {
        if slot.is_disposed() {
            return;
        }
        live.status.try_set(StreamStatus::Connecting);
        let source = match EventSource::new("/api/stream") {
            Ok(source) => source,
            Err(e) => {
                leptos::logging::warn!("could not open the update stream: {e:?}");
                retry(live, slot, failures);
                return;
            }
        };

        let on_open = {
            let failures = failures.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                failures.set(0);
                live.status.try_set(StreamStatus::Open);
                catch_up(live);
            })
        };
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(text) = ev.data().as_string() else {
                return;
            };
            match serde_json::from_str::<Vec<AggregateDoc>>(&text) {
                Ok(docs) => absorb(live, docs),
                Err(e) => leptos::logging::warn!("ignoring an unreadable update: {e}"),
            }
        });
        let on_error = {
            let source = source.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                // Stop the browser's own retries; ours back off.
                source.close();
                retry(live, slot, failures.clone());
            })
        };
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        // Replaces (and closes) the previous connection; never called from its own callbacks.
        slot.try_update_value(|current| {
            *current = Some(Connection {
                source,
                _on_open: on_open,
                _on_message: on_message,
                _on_error: on_error,
            })
        });
    }

    fn retry(live: Live, slot: Slot, failures: Rc<Cell<u32>>) {
        let attempt = failures.get();
        failures.set(attempt.saturating_add(1));
        let delay = FIRST_RETRY
            .saturating_mul(1 << attempt.min(10))
            .min(MAX_RETRY);
        live.status.try_set(StreamStatus::Retrying);
        set_timeout(move || connect(live, slot, failures), delay);
    }

    /// Reads `/api/health` now and then every [`HEALTH_POLL_MS`].
    pub(crate) fn poll_health(health: RwSignal<Option<PipelineHealth>>) {
        crate::chrome::poll(
            health,
            load_health,
            Duration::from_millis(HEALTH_POLL_MS),
            "the pipeline health",
        );
    }

    /// Re-reads the snapshot of the current selection, so changes made before the stream
    /// (re)opened are not missed.
    fn catch_up(live: Live) {
        let (Some(window), Some(dimension)) = (
            live.window.try_get_untracked(),
            live.dimension.try_get_untracked(),
        ) else {
            return;
        };
        leptos::task::spawn_local(async move {
            match load_snapshot(window, dimension).await {
                Ok(snapshot) => absorb(live, snapshot.docs),
                Err(e) => leptos::logging::warn!("could not re-read the aggregates: {e}"),
            }
        });
    }

    thread_local! {
        static TICK_PENDING: Cell<bool> = const { Cell::new(false) };
    }

    /// Merges documents into the live map (higher versions win) and bounds its size; asks the
    /// panels to re-read. Nothing changes while the page does not follow live.
    fn absorb(live: Live, docs: Vec<AggregateDoc>) {
        if !live.follow.try_get_untracked().unwrap_or(true) {
            return;
        }
        if !TICK_PENDING.with(|p| p.replace(true)) {
            set_timeout(
                move || {
                    TICK_PENDING.with(|p| p.set(false));
                    live.tick.try_update(|t| *t += 1);
                },
                TICK_EVERY,
            );
        }
        live.docs.try_update(|map| {
            for doc in docs {
                merge_doc(map, doc);
            }
            if map.len() > MAX_LIVE_DOCS {
                let mut by_age: Vec<(i64, String)> = map
                    .iter()
                    .map(|(id, d)| (d.window_start, id.clone()))
                    .collect();
                by_age.sort();
                let excess = map.len() - MAX_LIVE_DOCS;
                for (_, id) in by_age.into_iter().take(excess) {
                    map.remove(&id);
                }
            }
        });
    }
}

/// Extra rules when scripting is off.
const NOSCRIPT_STYLE: &str = ".status { display: none; }";

/// The page's stylesheet: system fonts, no external resources.
const STYLE: &str = r#"
:root { color-scheme: light; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #ffffff; --panel: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
#dashboard { max-width: 1100px; margin: 0 auto; padding: 16px 20px 40px; }
header.top { display: flex; justify-content: space-between; align-items: flex-start; gap: 16px;
  border-bottom: 1px solid var(--line); padding-bottom: 10px; }
h1 { font-size: 22px; margin: 0; font-weight: 600; }
h1 .pipeline { color: #0072B2; }
h2 { font-size: 15px; margin: 18px 0 6px; font-weight: 600; color: var(--muted); }
.meta { margin: 2px 0 0; color: var(--muted); font-size: 13px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px;
  background: var(--panel); padding: 1px 4px; border-radius: 3px; }
.status { display: inline-flex; align-items: center; gap: 6px; font-size: 13px; white-space: nowrap;
  border: 1px solid var(--line); border-radius: 999px; padding: 3px 10px; color: var(--muted); }
.status .dot { width: 9px; height: 9px; border-radius: 50%; background: #E69F00; }
.status[data-state="open"] { color: var(--fg); }
.status[data-state="open"] .dot { background: #009E73; }
.status[data-state="retrying"] .dot { background: #D55E00; }
form.controls { display: flex; flex-wrap: wrap; gap: 18px; align-items: center; margin: 12px 0 4px; }
form.controls label { font-size: 13px; color: var(--muted); }
select, button { font: inherit; font-size: 14px; padding: 3px 6px; border: 1px solid var(--line);
  border-radius: 4px; background: var(--bg); color: var(--fg); }
.hidden { display: none; }
svg.bars { width: 100%; height: auto; display: block; background: var(--bg); }
svg.bars .grid { stroke: #e5e8eb; stroke-width: 1; }
svg.bars .zero { stroke: #6e7781; stroke-width: 1; }
svg.bars .tick { font-size: 11px; fill: var(--muted); }
ul.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 14px; padding: 0; margin: 6px 0 0;
  font-size: 13px; }
ul.legend .swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px;
  margin-right: 5px; vertical-align: -1px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
thead th { background: var(--panel); font-weight: 600; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #fbfcfd; }
td.value { font-weight: 500; }
.empty, .loading { color: var(--muted); }
tr.empty td { text-align: left; }
.error { color: #b3261e; }
.alert { margin: 12px 0 0; padding: 8px 12px; border: 1px solid #f0b796; border-left: 4px solid #D55E00;
  border-radius: 4px; background: #fff4ed; font-size: 14px; }
.alert strong { color: #9c3a00; }
.alert ul { margin: 4px 0 0; padding-left: 20px; }
.alert li { overflow-wrap: anywhere; }
dl.health { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 10px 0 0; font-size: 13px; }
dl.health > div { display: flex; gap: 6px; align-items: baseline; white-space: nowrap; }
dl.health dt { color: var(--muted); }
dl.health dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
dl.health .warn dd { color: #9a6700; }
dl.health .bad dd, td.bad { color: #b3261e; font-weight: 600; }
dl.health .asof dd { font-weight: 400; color: var(--muted); }
details.shards { margin: 4px 0 0; font-size: 13px; }
details.shards summary { cursor: pointer; color: var(--muted); width: max-content; }
details.shards table { margin-top: 4px; font-size: 13px; }
.scroll { overflow-x: auto; }
dl.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; margin: 14px 0 4px; }
dl.tiles .tile { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; background: var(--panel); }
dl.tiles dt { font-size: 12px; color: var(--muted); }
dl.tiles dd { margin: 2px 0 0; font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
.panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 16px; }
svg.top .value { fill: var(--fg); }
nav.pages { display: flex; gap: 4px; margin: 8px 0 0; border-bottom: 1px solid var(--line); }
nav.pages a { padding: 6px 12px; color: var(--muted); text-decoration: none; border-bottom: 2px solid transparent; }
nav.pages a[aria-current="page"] { color: var(--fg); border-bottom-color: #0072B2; font-weight: 600; }
input { font: inherit; font-size: 14px; padding: 3px 6px; border: 1px solid var(--line); border-radius: 4px; }
label.follow { white-space: nowrap; }
div.beside { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; }
div.beside h3 { margin: 4px 0; font-size: 14px; }
section.differences h3 { font-size: 14px; color: #b3261e; }
section.differences.agree h3 { color: #117733; }
section.replays progress { width: 9em; vertical-align: middle; }
section.replays td.state[data-state="failed"] { color: #b3261e; }
section.replays td.state[data-state="running"] { color: #0072b2; font-weight: 600; }
section.replays form { margin: 0; }
section.replays td.result, section.replays th.result { white-space: normal; text-align: left; min-width: 16em; }
p.note { background: #eef6fb; border-left: 3px solid #0072b2; padding: 6px 10px; }
table.changes td, table.changes th { text-align: left; white-space: normal; vertical-align: top; }
table.changes td.time { white-space: nowrap; }
table.changes ul { list-style: none; margin: 0; padding: 0; }
table.changes .old { color: #9c3a00; text-decoration: line-through; text-decoration-thickness: 1px; }
table.changes .new { color: #00603f; font-weight: 500; }
.badge { font-size: 12px; padding: 1px 6px; border-radius: 3px; border: 1px solid var(--line); }
.badge[data-kind="INSERT"] { background: #e6f4ef; }
.badge[data-kind="MODIFY"] { background: #e8f1f8; }
.badge[data-kind="REMOVE"] { background: #fbeee6; }
a.next, a.csv { color: #0072B2; }
svg.lines circle { stroke: #fff; stroke-width: 1; }
table.explore td, table.explore th { text-align: right; }
table.explore td:first-child, table.explore th:first-child { text-align: left; }
table.explore tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; font-size: 14px; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
@media (max-width: 600px) {
  #dashboard { padding: 10px 10px 30px; }
  header.top { flex-direction: column; gap: 6px; }
  form.controls { gap: 8px 12px; }
  nav.pages a { padding: 6px 8px; }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(start: i64, value: &str, version: u64) -> AggregateDoc {
        AggregateDoc {
            pipeline: "p".into(),
            window: "1m".into(),
            window_start: start,
            window_end: start + 60_000,
            dimension: "status".into(),
            value: value.into(),
            inserts: 1,
            modifies: 0,
            removes: 0,
            net_count: 1,
            sums: BTreeMap::new(),
            version,
            ..AggregateDoc::default()
        }
    }

    fn info() -> PipelineInfo {
        PipelineInfo {
            name: "p".into(),
            windows: vec!["1m".into(), "5m".into()],
            dimensions: vec!["status".into()],
            metrics: vec!["amount".into()],
            ..PipelineInfo::default()
        }
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc_time(0, true), "00:00:00");
        assert_eq!(utc_time(1_704_164_645_999, true), "03:04:05");
        assert_eq!(utc_time(1_704_164_645_999, false), "03:04");
        assert_eq!(utc_datetime(1_704_164_645_999), "2024-01-02 03:04:05 UTC");
        assert_eq!(utc_datetime(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_datetime(-1_000), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn higher_versions_win() {
        let mut docs = BTreeMap::new();
        assert!(merge_doc(&mut docs, doc(0, "a", 2)));
        assert!(!merge_doc(&mut docs, doc(0, "a", 1)));
        assert!(!merge_doc(&mut docs, doc(0, "a", 2)));
        assert!(merge_doc(&mut docs, doc(0, "a", 3)));
        assert_eq!(docs.len(), 1);
        assert_eq!(docs.values().next().map(|d| d.version), Some(3));
    }

    #[test]
    fn only_the_newest_windows_are_kept() {
        let docs = (0..40)
            .flat_map(|i| [doc(i * 60_000, "b", 1), doc(i * 60_000, "a", 1)])
            .collect();
        let kept = newest_windows(docs, MAX_WINDOWS);
        assert_eq!(kept.len(), 2 * MAX_WINDOWS);
        assert_eq!(kept[0].window_start, 10 * 60_000);
        assert_eq!(kept[0].value, "a");
        assert_eq!(kept.last().map(|d| d.window_start), Some(39 * 60_000));
    }

    #[test]
    fn live_docs_update_the_snapshot() {
        let snapshot = Snapshot {
            info: info(),
            window: "1m".into(),
            dimension: "status".into(),
            docs: vec![doc(0, "a", 1)],
        };
        let mut live = BTreeMap::new();
        let mut newer = doc(0, "a", 2);
        newer.net_count = 5;
        merge_doc(&mut live, newer);
        merge_doc(&mut live, doc(60_000, "b", 1));
        let mut other_window = doc(60_000, "c", 1);
        other_window.window = "5m".into();
        merge_doc(&mut live, other_window);
        let rows = visible_docs(&snapshot, &live);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].net_count, 5);
        assert_eq!(rows[1].value, "b");
    }

    #[test]
    fn selections_fall_back_to_defaults() {
        let info = info();
        assert_eq!(resolve_window(&info, Some("5m")).as_deref(), Some("5m"));
        assert_eq!(resolve_window(&info, Some("2h")).as_deref(), Some("1m"));
        assert_eq!(resolve_window(&PipelineInfo::default(), None), None);
        assert_eq!(resolve_dimension(&info, None), "status");
        assert_eq!(resolve_dimension(&info, Some("_all")), "_all");
        assert_eq!(resolve_dimension(&info, Some("colour")), "status");
        assert_eq!(resolve_dimension(&PipelineInfo::default(), None), "_all");
        assert_eq!(
            Metric::resolve(Some("sums.amount"), &info),
            Metric::Sum("amount".into())
        );
        assert_eq!(Metric::resolve(Some("sums.other"), &info), Metric::NetCount);
        assert_eq!(Metric::resolve(Some("removes"), &info), Metric::Removes);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(4.0), 1.0);
        assert_eq!(nice_step(7.0), 2.0);
        assert_eq!(nice_step(5_000.0), 2_000.0);
        assert_eq!(nice_step(0.3), 0.1);
        assert_eq!(tick_label(0.0, 2_000.0), "0");
        assert_eq!(tick_label(-0.0, 1.0), "0");
        assert_eq!(tick_label(4_000.0, 2_000.0), "4k");
        assert_eq!(tick_label(0.2, 0.1), "0.2");
        assert_eq!(tick_label(2_500_000.0, 500_000.0), "2500k");
        assert_eq!(tick_label(3_000_000.0, 1_000_000.0), "3M");
    }

    #[test]
    fn many_values_fold_into_other() {
        let docs: Vec<AggregateDoc> = (0..12)
            .map(|i| {
                let mut d = doc(0, &format!("v{i:02}"), 1);
                d.net_count = i;
                d
            })
            .collect();
        let series = series_of(&docs, &Metric::NetCount);
        assert_eq!(series.len(), MAX_SERIES);
        let other = series.last().expect("a series");
        assert_eq!(other.name, OTHER_SERIES);
        // v00..v04 are the smallest: 0 + 1 + 2 + 3 + 4
        assert_eq!(other.values.get(&0), Some(&10.0));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query_value("sums.a b&c"), "sums.a%20b%26c");
        assert_eq!(encode_query_value("é"), "%C3%A9");
    }
}
