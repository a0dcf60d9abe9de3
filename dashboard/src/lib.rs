//! The live streamlens dashboard: one page, rendered on the server, then brought to life in the
//! browser.
//!
//! # How the page is made
//!
//! The same Leptos components ([`app`]) are compiled twice:
//!
//! * with the `ssr` feature into the server. [`server::router`] serves the page at `/`: Leptos runs
//!   the components once per request, awaits the one piece of data they need (a
//!   [`app::Snapshot`]: the pipeline description plus the newest windows of aggregates, read from
//!   the [`AggregateReader`](streamlens_core::AggregateReader)) and sends complete HTML. The page
//!   is rendered in `SsrMode::Async`, so everything — header, chart, table — is in the first
//!   response and readable without JavaScript. The snapshot is also serialised into the page so
//!   the browser does not fetch it again.
//! * with the `hydrate` feature into a WebAssembly bundle (`dashboard/build-client.sh`). The
//!   `<script>` that [`HydrationScripts`](leptos::prelude::HydrationScripts) puts into the page
//!   loads `/pkg/streamlens_dashboard.js`, which loads `/pkg/streamlens_dashboard_bg.wasm` and
//!   calls `hydrate()` (compiled with that feature only). Hydration walks the server's HTML
//!   instead of re-creating it, attaching signals and event handlers to the existing nodes. It only works if the browser renders exactly what
//!   the server rendered, which is why every time on the page is formatted from epoch
//!   milliseconds in UTC by our own code, never by the browser's locale or time zone.
//!
//! # How the page stays live
//!
//! After hydration the page opens `EventSource("/api/stream")`. The server turns every message
//! of the aggregator's broadcast channel (the documents that just changed) into one
//! Server-Sent Event. The browser merges the documents into a map keyed by
//! [`AggregateDoc::id`](streamlens_core::AggregateDoc::id), keeping the higher `version`, and
//! the chart and table — derived from that map by memos — re-render. Whenever the stream
//! (re)opens the page also re-reads the snapshot, so changes made while it was disconnected are
//! not lost; on errors it reconnects with exponential backoff.
//!
//! The pipeline's health (shards being read, the largest lag, events, quarantined records, gaps)
//! is rendered with the page as a strip under the header, with a warning banner (`role="alert"`)
//! when a gap was recorded or a shard falls more than a minute behind. After hydration the page
//! re-reads `GET /api/health` every two seconds. Polling rather than riding on the update stream:
//! health matters most when the pipeline is stuck and no documents flow, it stays readable while
//! the stream reconnects, and `/api/stream` keeps carrying documents only.
//!
//! The selectors (window size, dimension, metric) live in the query string
//! (`/?window=5m&dimension=status&metric=sums.amount`): without JavaScript they are a plain GET
//! form, with it they navigate in place and only the snapshot for the new selection is fetched
//! (through the [`app::load_snapshot`] server function).
//!
//! # The HTTP surface (see [`server`])
//!
//! | path | what |
//! |------|------|
//! | `GET /` | the page |
//! | `GET /api/aggregates?window=&from=&to=&dimension=` | JSON array of aggregate documents |
//! | `GET /api/pipeline` | JSON pipeline description |
//! | `GET /api/health` | JSON [`PipelineHealth`](streamlens_core::PipelineHealth): per shard position, lag, records/s, errors, gaps; events, quarantined |
//! | `GET /api/stream` | Server-Sent Events, one JSON array of changed documents per event |
//! | `POST /api/snapshot` | the page's server function |
//! | `GET /pkg/*` | the hydrate bundle |

pub mod app;
pub mod changes_page;
pub mod chrome;
pub mod explore;
pub mod health_page;
pub mod panels;
pub mod replays_page;
#[cfg(feature = "ssr")]
pub mod server;

/// The browser entry point, called by the loader script once the WebAssembly module is ready.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
