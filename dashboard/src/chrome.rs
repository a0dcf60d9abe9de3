//! What every page shares: the header with the navigation and the live indicator, the
//! time-range picker and the follow-live toggle, and (in the browser) the update pulse that tells
//! a page to re-read its data.
//!
//! Every page keeps its state in the query string and is a plain `GET` form without JavaScript:
//! the URL is the page, so it can be shared, bookmarked and reloaded, and the server renders the
//! complete answer. After hydration the forms still submit the same way; what JavaScript adds is
//! the live part — a page that follows live re-reads its data whenever the pipeline writes.

use leptos::prelude::*;
use leptos_router::hooks::use_location;
use serde::{Deserialize, Serialize};
use streamlens_core::{aggregate::PipelineInfo, query::TimeArg};

use crate::app::StreamStatus;

/// The pages, in navigation order: path and label.
pub const PAGES: [(&str, &str); 5] = [
    ("/", "Overview"),
    ("/explore", "Explore"),
    ("/changes", "Changes"),
    ("/replays", "Replays"),
    ("/health", "Health"),
];

/// The ranges the picker offers: value, label and how far back it reaches (`None`: all time).
pub const RANGES: [(&str, &str, Option<&str>); 7] = [
    ("5m", "last 5 minutes", Some("now-5m")),
    ("1h", "last hour", Some("now-1h")),
    ("24h", "last 24 hours", Some("now-24h")),
    ("7d", "last 7 days", Some("now-7d")),
    ("30d", "last 30 days", Some("now-30d")),
    ("all", "all time", None),
    ("custom", "custom (from / to)", None),
];

/// A time range as a page's query string gives it: `range` (one of [`RANGES`]) and, for
/// `custom`, `from` and `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeForm {
    /// One of [`RANGES`]; the page's default when absent or unknown.
    pub range: Option<String>,
    /// Start for `custom`: epoch ms, ISO-8601, `now-<duration>`.
    pub from: Option<String>,
    /// End for `custom`.
    pub to: Option<String>,
}

/// A request time: epoch ms when the text is a number, else the text.
pub fn time_arg(text: &str) -> TimeArg {
    let text = text.trim();
    text.parse::<i64>()
        .map(TimeArg::Millis)
        .unwrap_or_else(|_| TimeArg::Text(text.to_owned()))
}

impl RangeForm {
    /// The range value in force: the requested one if known, else `default`.
    pub fn value(&self, default: &'static str) -> &str {
        let requested = self.range.as_deref().unwrap_or(default);
        RANGES
            .iter()
            .find(|(v, ..)| *v == requested)
            .map_or(default, |(v, ..)| v)
    }

    /// `from` and `to` for a query.
    pub fn times(&self, default: &'static str) -> (Option<TimeArg>, Option<TimeArg>) {
        let value = self.value(default);
        if value == "custom" {
            let given =
                |t: &Option<String>| t.as_deref().filter(|t| !t.trim().is_empty()).map(time_arg);
            return (given(&self.from), given(&self.to));
        }
        let from = RANGES
            .iter()
            .find(|(v, ..)| *v == value)
            .and_then(|(.., back)| back.map(|b| TimeArg::Text(b.to_owned())));
        (from, None)
    }

    /// `from` and `to` for the metric query API, where a range without a start is the last
    /// hour: "all time" asks from the earliest stored window.
    pub fn metric_times(&self, default: &'static str) -> (Option<TimeArg>, Option<TimeArg>) {
        let (from, to) = self.times(default);
        if self.value(default) == "all" {
            return (
                Some(TimeArg::Text(streamlens_core::query::EARLIEST.into())),
                to,
            );
        }
        (from, to)
    }

    /// Whether the range ends now (so following live makes sense).
    pub fn ends_now(&self, default: &'static str) -> bool {
        let value = self.value(default);
        value != "custom" || self.to.as_deref().is_none_or(|t| t.trim().is_empty())
    }
}

/// Reads a query-string value, treating an empty one as absent.
pub fn param(query: &leptos_router::params::ParamsMap, key: &str) -> Option<String> {
    query.get(key).filter(|v| !v.trim().is_empty())
}

/// The page header: the pipeline, the navigation (the current page marked) and the live
/// indicator.
pub fn header(info: &PipelineInfo, status: RwSignal<StreamStatus>) -> impl IntoView {
    let location = use_location();
    let here = location.pathname.get_untracked();
    let links = PAGES
        .iter()
        .map(|(path, label)| {
            let current = (here == *path).then_some("page");
            view! {
                <a href=*path aria-current=current>
                    {*label}
                </a>
            }
        })
        .collect_view();
    view! {
        <header class="top">
            <div>
                <h1>"streamlens " <span class="pipeline">{info.name.clone()}</span></h1>
                <p class="meta">
                    "source " <code>{info.source.clone()}</code> " → store "
                    <code>{info.store.clone()}</code>
                </p>
            </div>
            <span class="status" data-state=move || status.get().attr()>
                <span class="dot"></span>
                {move || status.get().label()}
            </span>
        </header>
        <nav class="pages" aria-label="pages">
            {links}
        </nav>
    }
}

/// The range picker's fields (a `<select name="range">` and `from` / `to` inputs) and the
/// follow-live checkbox (`live=1`), for a page's `GET` form.
pub fn range_fields(form: &RangeForm, default: &'static str, live: bool) -> impl IntoView {
    let value = form.value(default).to_owned();
    let options = RANGES
        .iter()
        .map(|(v, label, _)| {
            let selected = *v == value;
            view! {
                <option value=*v selected=selected>
                    {*label}
                </option>
            }
        })
        .collect_view();
    view! {
        <label>"range " <select name="range">{options}</select></label>
        <label>
            "from "
            <input
                name="from"
                size="16"
                placeholder="ISO-8601 or now-2h"
                value=form.from.clone().unwrap_or_default()
            />
        </label>
        <label>
            "to "
            <input
                name="to"
                size="16"
                placeholder="(now)"
                value=form.to.clone().unwrap_or_default()
            />
        </label>
        <label class="follow">
            <input type="checkbox" name="live" value="1" checked=live />
            " follow live"
        </label>
    }
}

/// The browser side of "follow live": one `EventSource` on `/api/stream` whose messages bump a
/// counter a page's data depends on, with the stream's state shown in the header and reconnects
/// with exponential backoff.
/// Reads `fetch()` into `signal` now and then every `every` (the next read is scheduled once the
/// previous one answered, so reads never pile up), until the signal is disposed with its page.
#[cfg(feature = "hydrate")]
pub fn poll<T, F, Fut>(
    signal: RwSignal<Option<T>>,
    fetch: F,
    every: std::time::Duration,
    what: &'static str,
) where
    T: Send + Sync + 'static,
    F: Fn() -> Fut + 'static,
    Fut: std::future::Future<Output = Result<T, leptos::prelude::ServerFnError>> + 'static,
{
    if signal.is_disposed() {
        return;
    }
    let fetched = fetch();
    leptos::task::spawn_local(async move {
        match fetched.await {
            Ok(value) => {
                signal.try_set(Some(value));
            }
            Err(e) => leptos::logging::warn!("could not read {what}: {e}"),
        }
        set_timeout(move || poll(signal, fetch, every, what), every);
    });
}

#[cfg(feature = "hydrate")]
pub mod pulse {
    use std::{cell::Cell, rc::Rc, time::Duration};

    use leptos::prelude::*;
    use wasm_bindgen::{closure::Closure, JsCast};
    use web_sys::{Event, EventSource, MessageEvent};

    use crate::app::StreamStatus;

    const FIRST_RETRY: Duration = Duration::from_millis(500);
    const MAX_RETRY: Duration = Duration::from_secs(30);
    /// Updates closer together than this are one re-read.
    const SETTLE: Duration = Duration::from_millis(250);

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

    /// Opens the stream: `tick` goes up (at most every [`SETTLE`]) after writes and when the
    /// stream (re)opens; `status` follows the connection.
    pub fn start(tick: RwSignal<u64>, status: RwSignal<StreamStatus>) {
        let slot: Slot = StoredValue::new_local(None);
        connect(
            tick,
            status,
            slot,
            Rc::new(Cell::new(0)),
            Rc::new(Cell::new(false)),
        );
    }

    fn bump(tick: RwSignal<u64>, pending: Rc<Cell<bool>>) {
        if pending.replace(true) {
            return;
        }
        set_timeout(
            move || {
                pending.set(false);
                tick.try_update(|t| *t += 1);
            },
            SETTLE,
        );
    }

    fn connect(
        tick: RwSignal<u64>,
        status: RwSignal<StreamStatus>,
        slot: Slot,
        failures: Rc<Cell<u32>>,
        pending: Rc<Cell<bool>>,
    ) {
        if slot.is_disposed() {
            return;
        }
        status.try_set(StreamStatus::Connecting);
        let retry = {
            let failures = failures.clone();
            let pending = pending.clone();
            move || {
                let attempt = failures.get();
                failures.set(attempt.saturating_add(1));
                let delay = FIRST_RETRY
                    .saturating_mul(1 << attempt.min(10))
                    .min(MAX_RETRY);
                status.try_set(StreamStatus::Retrying);
                let (failures, pending) = (failures.clone(), pending.clone());
                set_timeout(
                    move || connect(tick, status, slot, failures, pending),
                    delay,
                );
            }
        };
        let source = match EventSource::new("/api/stream") {
            Ok(source) => source,
            Err(e) => {
                leptos::logging::warn!("could not open the update stream: {e:?}");
                retry();
                return;
            }
        };
        let on_open = {
            let (failures, pending) = (failures.clone(), pending.clone());
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                let reopened = failures.get() > 0;
                failures.set(0);
                status.try_set(StreamStatus::Open);
                if reopened {
                    // Writes made while we were away: read again.
                    bump(tick, pending.clone());
                }
            })
        };
        let on_message = {
            let pending = pending.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |_: MessageEvent| {
                bump(tick, pending.clone())
            })
        };
        let on_error = {
            let source = source.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                source.close();
                retry();
            })
        };
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        slot.try_update_value(|current| {
            *current = Some(Connection {
                source,
                _on_open: on_open,
                _on_message: on_message,
                _on_error: on_error,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_to_query_times() {
        let form = |range: Option<&str>, from: Option<&str>, to: Option<&str>| RangeForm {
            range: range.map(str::to_owned),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        };
        assert_eq!(
            form(None, None, None).times("1h"),
            (Some(TimeArg::Text("now-1h".into())), None)
        );
        assert_eq!(form(Some("all"), None, None).times("1h"), (None, None));
        assert_eq!(
            form(Some("all"), None, None).metric_times("1h"),
            (Some(TimeArg::Text("earliest".into())), None),
            "all time for the metric API starts at the earliest stored window, not the last hour"
        );
        assert_eq!(
            form(Some("24h"), None, None).metric_times("1h"),
            form(Some("24h"), None, None).times("1h")
        );
        assert_eq!(
            form(Some("bogus"), None, None).times("24h"),
            (Some(TimeArg::Text("now-24h".into())), None)
        );
        let custom = form(Some("custom"), Some("1000"), Some("2026-01-01T00:00:00Z"));
        assert_eq!(
            custom.times("1h"),
            (
                Some(TimeArg::Millis(1000)),
                Some(TimeArg::Text("2026-01-01T00:00:00Z".into()))
            )
        );
        assert!(!custom.ends_now("1h"));
        assert!(form(Some("custom"), Some("1000"), Some(" ")).ends_now("1h"));
    }
}
