//! The Replays page (`/replays`): start a replay of the archive into a namespace, watch it, and
//! open a namespace beside the live aggregates.
//!
//! The start form and each running replay's stop button are plain HTML forms posting to
//! `/replays/start` and `/replays/stop`, which answer with a redirect back here (with `started`,
//! `stopped` or `error` in the query string for the page to show), so the page works without
//! JavaScript. After hydration the list is read again every half second from the
//! [`load_replays`] server function while the page is open.
//!
//! Each replay is a row `<tr data-namespace data-state data-read data-total>` with a
//! `<progress>` bar, the lines read, rate, ETA and, once ended, the changes aggregated and the
//! documents written; its namespace links to the Explore page showing it beside live
//! (`/explore?ns=<namespace>&beside=1`).

use leptos::{prelude::*, server_fn::codec::GetUrl};
use leptos_router::hooks::use_query_map;
use streamlens_core::replay::{ReplayState, ReplayStatus};

use crate::{
    app::{encode_query_value, load_pipeline, utc_datetime, StreamStatus},
    chrome::{header, param},
};

/// How often the page re-reads the replays while open (milliseconds).
pub const REPLAYS_POLL_MS: u64 = 500;

/// Every replay namespace: in-process on the server, `GET /api/replays_status` from the browser.
#[server(prefix = "/api", endpoint = "replays_status", input = GetUrl)]
pub async fn load_replays() -> Result<Vec<ReplayStatus>, ServerFnError> {
    let Some(context) = use_context::<crate::server::ServerContext>() else {
        return Err(ServerFnError::new(
            "the dashboard's server state is missing",
        ));
    };
    Ok(context.replays().await)
}

/// The Replays page.
#[component]
pub fn ReplaysPage() -> impl IntoView {
    let query = use_query_map();
    let info = Resource::new(|| (), |_| load_pipeline());
    let rendered = Resource::new(|| (), |_| load_replays());
    let live = RwSignal::new(None::<Vec<ReplayStatus>>);
    let status = RwSignal::new(StreamStatus::Connecting);
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| {
        hydrated.set(true);
        #[cfg(feature = "hydrate")]
        {
            crate::chrome::pulse::start(RwSignal::new(0), status);
            crate::chrome::poll(
                live,
                load_replays,
                std::time::Duration::from_millis(REPLAYS_POLL_MS),
                "the replays",
            );
        }
    });
    let message = query.with_untracked(|q| {
        if let Some(e) = param(q, "error") {
            Some(("error", e))
        } else if let Some(ns) = param(q, "started") {
            Some(("note", format!("replay into `{ns}` started")))
        } else {
            param(q, "stopped").map(|ns| {
                (
                    "note",
                    format!(
                        "replay into `{ns}` stopped: start it again to go on from where it stopped"
                    ),
                )
            })
        }
    });
    view! {
        <div
            id="dashboard"
            data-hydrated=move || hydrated.get().then_some("true")
            data-stream=move || status.get().attr()
        >
            <Suspense fallback=|| view! { <p class="loading">"loading…"</p> }>
                {move || {
                    let message = message.clone();
                    Suspend::new(async move {
                        let info = info.await.unwrap_or_default();
                        let first = StoredValue::new(rendered.await.unwrap_or_default());
                        let replays = Memo::new(move |_| {
                            live.get().unwrap_or_else(|| first.get_value())
                        });
                        view! {
                            {header(&info, status)}
                            {message
                                .map(|(class, text)| {
                                    view! {
                                        <p class=class role=(class == "error").then_some("alert")>
                                            {text}
                                        </p>
                                    }
                                })}
                            {start_form()}
                            {list(replays)}
                        }
                    })
                }}
            </Suspense>
        </div>
    }
}

/// What the spec box shows while empty.
const SPEC_EXAMPLE: &str =
    "[pipeline]\nname = \"orders\"\ndimensions = [\"region\"]\nwindows = [\"1m\"]\n\n[[pipeline.metrics]]\nname = \"amount\"\nattribute = \"amount\"\nkind = \"sum\"";

fn start_form() -> impl IntoView {
    view! {
        <form class="controls replay-start" method="post" action="/replays/start">
            <label>
                "namespace "
                <input
                    name="namespace"
                    required
                    size="14"
                    pattern="[a-z0-9_\\-]{1,64}"
                    placeholder="fix-1"
                    title="1 to 64 lowercase letters, digits, - and _"
                />
            </label>
            <label>
                "from " <input name="from" size="16" placeholder="start of archive" />
            </label>
            <label>"to " <input name="to" size="16" placeholder="end of archive" /></label>
            <label>
                "speed × "
                <input
                    name="speed"
                    size="6"
                    inputmode="decimal"
                    placeholder="full"
                    title="a multiple of real time, e.g. 60; empty: full speed"
                />
            </label>
            <label>
                <input type="checkbox" name="fresh" value="1" />
                " start over"
            </label>
            <button type="submit">"start replay"</button>
            <details class="replay-spec">
                <summary>"another spec"</summary>
                <label>
                    "pipeline spec (TOML with a [pipeline] table; empty: the live one) "
                    <textarea
                        name="spec"
                        rows="8"
                        cols="60"
                        spellcheck="false"
                        placeholder=SPEC_EXAMPLE
                    ></textarea>
                </label>
            </details>
        </form>
    }
}

fn list(replays: Memo<Vec<ReplayStatus>>) -> impl IntoView {
    view! {
        <section class="table replays">
            <h2>"replays"</h2>
            <Show
                when=move || replays.with(|r| !r.is_empty())
                fallback=|| {
                    view! {
                        <p class="empty">
                            "no replay yet: start one above, or with "
                            <code>"streamlens replay"</code>
                        </p>
                    }
                }
            >
                <table>
                    <thead>
                        <tr>
                            <th>"namespace"</th>
                            <th>"state"</th>
                            <th>"progress"</th>
                            <th>"lines"</th>
                            <th>"rate"</th>
                            <th>"ETA"</th>
                            <th class="result">"result"</th>
                            <th></th>
                        </tr>
                    </thead>
                    <tbody>
                        <For
                            each=move || replays.get()
                            key=|r| {
                                (
                                    r.namespace.clone(),
                                    r.state,
                                    r.read,
                                    r.total,
                                    r.finished_ms,
                                    r.error.clone(),
                                )
                            }
                            children=row
                        />
                    </tbody>
                </table>
            </Show>
        </section>
    }
}

fn row(r: ReplayStatus) -> impl IntoView {
    let beside = format!(
        "/explore?ns={}&beside=1&range=all",
        encode_query_value(&r.namespace)
    );
    let percent = r.fraction().map(|f| format!("{:.0}%", f * 100.0));
    let lines = match r.total {
        0 => thousands(r.read),
        total => format!("{} / {}", thousands(r.read), thousands(total)),
    };
    let resumed =
        (r.resumed_after > 0).then(|| format!("resumed after line {}", thousands(r.resumed_after)));
    let rate = (r.state == ReplayState::Running || r.finished_ms.is_some())
        .then(|| format!("{}/s", thousands(r.rate.round() as u64)));
    let eta = r
        .eta_seconds
        .filter(|_| r.state == ReplayState::Running)
        .map(duration);
    let result = match (&r.error, r.finished_ms) {
        (Some(e), _) => e.clone(),
        (None, Some(at)) => format!(
            "{} changes aggregated, {} documents written; ended {}",
            thousands(r.aggregated),
            thousands(r.docs_written),
            utc_datetime(at)
        ),
        (None, None) if r.state == ReplayState::Running => {
            format!("started {}", utc_datetime(r.started_ms))
        }
        _ => String::new(),
    };
    let running = r.state == ReplayState::Running;
    let namespace = r.namespace.clone();
    view! {
        <tr
            data-namespace=r.namespace.clone()
            data-state=r.state.label()
            data-read=r.read.to_string()
            data-total=r.total.to_string()
        >
            <td>
                <a href=beside title="this namespace beside live, on the Explore page">
                    {r.namespace.clone()}
                </a>
            </td>
            <td class="state" data-state=r.state.label()>
                {r.state.label()}
            </td>
            <td>
                <progress
                    max=r.total.max(1).to_string()
                    value=r.read.min(r.total.max(1)).to_string()
                ></progress>
                " "
                {percent}
            </td>
            <td class="num">{lines} {resumed.map(|t| view! { <br /><small>{t}</small> })}</td>
            <td class="num">{rate}</td>
            <td class="num">{eta}</td>
            <td class=if r.error.is_some() { "result error" } else { "result" }>{result}</td>
            <td>
                {running
                    .then(|| {
                        view! {
                            <form method="post" action="/replays/stop">
                                <input type="hidden" name="namespace" value=namespace />
                                <button type="submit">"stop"</button>
                            </form>
                        }
                    })}
            </td>
        </tr>
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = Vec::new();
    let mut end = digits.len();
    while end > 3 {
        groups.push(&digits[end - 3..end]);
        end -= 3;
    }
    groups.push(&digits[..end]);
    groups.reverse();
    groups.join(",")
}

/// Seconds as `1 h 02 min`, `3 min 05 s` or `12 s`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(86_400_000), "86,400,000");
        assert_eq!(duration(12.4), "12 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(3720.0), "1 h 02 min");
    }
}
