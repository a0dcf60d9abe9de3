//! The Health page (`/health`): is the pipeline keeping up, and can its numbers be trusted?
//!
//! The warning banner (a gap recorded, a shard more than a minute behind), the health strip
//! (shards reading, the largest lag, events and their rate, quarantined records, gaps, stream
//! errors), every shard's position, rate and lag, and what the pipeline is: source, store,
//! windows, dimensions, metrics. Rendered on the server and re-read every two seconds after
//! hydration, like the overview's strip (the same markup and `data-health` hooks).

use leptos::prelude::*;
use streamlens_core::{aggregate::PipelineInfo, health::PipelineHealth};

use crate::{
    app::{health_view, load_health, load_pipeline, StreamStatus},
    chrome::header,
};

/// The Health page.
#[component]
pub fn HealthPage() -> impl IntoView {
    let info = Resource::new(|| (), |_| load_pipeline());
    let health = Resource::new(|| (), |_| load_health());
    let live_health = RwSignal::new(None::<PipelineHealth>);
    let status = RwSignal::new(StreamStatus::Connecting);
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| {
        hydrated.set(true);
        #[cfg(feature = "hydrate")]
        {
            crate::chrome::pulse::start(RwSignal::new(0), status);
            crate::app::poll_health(live_health);
        }
    });
    view! {
        <div
            id="dashboard"
            data-hydrated=move || hydrated.get().then_some("true")
            data-stream=move || status.get().attr()
        >
            <Suspense fallback=|| view! { <p class="loading">"loading…"</p> }>
                {move || Suspend::new(async move {
                    let info = info.await.unwrap_or_default();
                    let rendered = StoredValue::new(health.await.unwrap_or_default());
                    let health = Memo::new(move |_| {
                        live_health.get().unwrap_or_else(|| rendered.get_value())
                    });
                    view! {
                        {header(&info, status)}
                        <section class="health-page">
                            <h2>"pipeline health"</h2>
                            {health_view(health, true)}
                        </section>
                        {facts(&info)}
                    }
                })}
            </Suspense>
        </div>
    }
}

fn facts(info: &PipelineInfo) -> impl IntoView {
    let list = |items: &[String]| {
        if items.is_empty() {
            "—".to_owned()
        } else {
            items.join(", ")
        }
    };
    view! {
        <section class="facts">
            <h2>"pipeline"</h2>
            <dl class="facts">
                <dt>"name"</dt>
                <dd>{info.name.clone()}</dd>
                <dt>"source"</dt>
                <dd>
                    <code>{info.source.clone()}</code>
                </dd>
                <dt>"store"</dt>
                <dd data-store=info.store.clone()>
                    <code>{info.store.clone()}</code>
                </dd>
                <dt>"windows"</dt>
                <dd>{list(&info.windows)}</dd>
                <dt>"dimensions"</dt>
                <dd>{list(&info.dimensions)}</dd>
                <dt>"metrics"</dt>
                <dd>{list(&info.metrics)}</dd>
            </dl>
        </section>
    }
}
