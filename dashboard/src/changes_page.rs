//! The Changes page (`/changes`): search the raw change index, and an item's timeline.
//!
//! The search lives in the query string — `key` (`pk=order#1, sk=2` or a JSON object), a time
//! range, `kind`, `changed` (an attribute path), `order` (`desc`: newest first, the default
//! without a key; `asc`: oldest first, the default for an item's timeline), `after` (the cursor
//! of the next page) and `live=1` (follow live). The server renders the page's changes with it;
//! in the browser a followed search is read again after every write of the pipeline.
//!
//! Each change is a row `<tr data-event-id data-kind>`; what it did is a list of
//! `<li data-attr="<path>">` items with the old value in `<span class="old">` and the new one in
//! `<span class="new">` (an INSERT has no old values, a REMOVE no new ones). An item's key links to
//! its timeline: every change of that item, oldest first.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};
use streamlens_core::{
    aggregate::PipelineInfo,
    attr::AttributeValue,
    changes::{ChangeDoc, ChangePage, ChangeQuery},
};

use crate::{
    app::{encode_query_value, load_pipeline, utc_datetime, StreamStatus},
    chrome::{header, param, range_fields, RangeForm},
};

/// The default range of a search without a key (an item's timeline covers all time).
const DEFAULT_RANGE: &str = "24h";
/// Values longer than this are cut in the table (the whole value is in the cell's title).
const MAX_VALUE_CHARS: usize = 80;

/// A change search as the page's query string gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeForm {
    /// `pk=order#1, sk=2`, or a JSON object.
    pub key: Option<String>,
    /// The time range.
    pub range: RangeForm,
    /// `INSERT`, `MODIFY` or `REMOVE`; all when absent.
    pub kind: Option<String>,
    /// An attribute path.
    pub changed: Option<String>,
    /// `asc` or `desc`.
    pub order: Option<String>,
    /// The next page's cursor.
    pub after: Option<String>,
}

impl ChangeForm {
    fn from_query(q: &leptos_router::params::ParamsMap) -> Self {
        ChangeForm {
            key: param(q, "key"),
            range: RangeForm {
                range: param(q, "range"),
                from: param(q, "from"),
                to: param(q, "to"),
            },
            kind: param(q, "kind"),
            changed: param(q, "changed"),
            order: param(q, "order"),
            after: param(q, "after"),
        }
    }

    /// The range in force: all time for an item's timeline unless one is asked for.
    fn default_range(&self) -> &'static str {
        if self.key.is_some() {
            "all"
        } else {
            DEFAULT_RANGE
        }
    }

    /// Oldest first for an item's timeline, newest first otherwise, unless asked.
    fn descending(&self) -> bool {
        match self.order.as_deref() {
            Some("asc") => false,
            Some("desc") => true,
            _ => self.key.is_none(),
        }
    }

    /// The API request; a key that cannot be read is an error naming it.
    pub fn to_query(&self) -> Result<ChangeQuery, String> {
        let key = self.key.as_deref().map(parse_key).transpose()?;
        let (from, to) = self.range.times(self.default_range());
        Ok(ChangeQuery {
            table: None,
            key,
            from,
            to,
            kinds: self.kind.iter().cloned().collect(),
            changed: self.changed.clone(),
            limit: Some(PAGE),
            after: self.after.clone(),
            order: Some(if self.descending() { "desc" } else { "asc" }.to_owned()),
        })
    }

    /// This search's URL with `after` set to `cursor`.
    fn with_after(&self, cursor: &str) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        let mut add = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                pairs.push((k, v.clone()));
            }
        };
        add("key", &self.key);
        add("range", &self.range.range);
        add("from", &self.range.from);
        add("to", &self.range.to);
        add("kind", &self.kind);
        add("changed", &self.changed);
        add("order", &self.order);
        pairs.push(("after", cursor.to_owned()));
        let query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", encode_query_value(v)))
            .collect::<Vec<_>>()
            .join("&");
        format!("/changes?{query}")
    }
}

/// Changes per page.
const PAGE: usize = 50;

/// `pk=order#1, sk=2` or `{"pk": "order#1"}` as key attributes.
fn parse_key(text: &str) -> Result<BTreeMap<String, serde_json::Value>, String> {
    let text = text.trim();
    if text.starts_with('{') {
        return serde_json::from_str(text).map_err(|e| format!("key `{text}` is not JSON: {e}"));
    }
    let mut key = BTreeMap::new();
    for part in text.split(',') {
        let Some((name, value)) = part.split_once('=') else {
            return Err(format!(
                "key `{text}`: give `attribute=value` pairs, e.g. `pk=order#1, sk=2`"
            ));
        };
        key.insert(
            name.trim().to_owned(),
            serde_json::Value::String(value.trim().to_owned()),
        );
    }
    Ok(key)
}

/// One page of the search: in-process while rendering on the server, `POST /api/changes_page`
/// from the browser.
#[server(prefix = "/api", endpoint = "changes_page", input = leptos::server_fn::codec::Json)]
pub async fn load_changes(form: ChangeForm) -> Result<ChangePage, ServerFnError> {
    let Some(context) = use_context::<crate::server::ServerContext>() else {
        return Err(ServerFnError::new(
            "the dashboard's server state is missing",
        ));
    };
    let query = form.to_query().map_err(ServerFnError::new)?;
    context
        .changes(query)
        .await
        .map_err(|e| ServerFnError::new(e.to_string()))
}

/// The Changes page.
#[component]
pub fn ChangesPage() -> impl IntoView {
    let query = use_query_map();
    let form = Memo::new(move |_| query.with(ChangeForm::from_query));
    let follow = Memo::new(move |_| query.with(|q| param(q, "live").is_some()));
    let tick = RwSignal::new(0_u64);
    let status = RwSignal::new(StreamStatus::Connecting);
    let hydrated = RwSignal::new(false);
    let info = Resource::new(|| (), |_| load_pipeline());
    // A followed search is read again after every write (the tick); others only when the URL
    // changes.
    let changes = Resource::new(
        move || {
            let form = form.get();
            let live =
                follow.get() && form.after.is_none() && form.range.ends_now(form.default_range());
            (form, if live { tick.get() } else { 0 })
        },
        |(form, _)| load_changes(form),
    );
    Effect::new(move |_| {
        hydrated.set(true);
        #[cfg(feature = "hydrate")]
        crate::chrome::pulse::start(tick, status);
    });
    view! {
        <div
            id="dashboard"
            data-hydrated=move || hydrated.get().then_some("true")
            data-stream=move || status.get().attr()
        >
            <Transition fallback=|| view! { <p class="loading">"loading…"</p> }>
                {move || Suspend::new(async move {
                    let info = info.await.unwrap_or_default();
                    let page = changes.await;
                    let form = form.get_untracked();
                    view! {
                        {header(&info, status)}
                        {controls(&form, follow.get_untracked(), &info)}
                        {results(&form, page)}
                    }
                })}
            </Transition>
        </div>
    }
}

fn controls(form: &ChangeForm, live: bool, _info: &PipelineInfo) -> impl IntoView {
    let kind = form.kind.clone().unwrap_or_default();
    let kinds = ["", "INSERT", "MODIFY", "REMOVE"]
        .into_iter()
        .map(|k| {
            let selected = k == kind;
            let label = if k.is_empty() { "any" } else { k };
            view! {
                <option value=k selected=selected>
                    {label}
                </option>
            }
        })
        .collect_view();
    let order = form.descending();
    view! {
        <form class="controls" method="get" action="/changes">
            <label>
                "item key "
                <input
                    name="key"
                    size="22"
                    placeholder="pk=order#1"
                    value=form.key.clone().unwrap_or_default()
                />
            </label>
            <label>"kind " <select name="kind">{kinds}</select></label>
            <label>
                "changed "
                <input
                    name="changed"
                    size="10"
                    placeholder="attribute"
                    value=form.changed.clone().unwrap_or_default()
                />
            </label>
            <label>
                "order "
                <select name="order">
                    <option value="desc" selected=order>
                        "newest first"
                    </option>
                    <option value="asc" selected=!order>
                        "oldest first"
                    </option>
                </select>
            </label>
            {range_fields(&form.range, form.default_range(), live)}
            <button type="submit">"search"</button>
        </form>
    }
}

fn results(form: &ChangeForm, page: Result<ChangePage, ServerFnError>) -> AnyView {
    let page = match page {
        Ok(page) => page,
        Err(e) => {
            let message = format!("cannot search: {}", crate::app::server_error(&e));
            return view! { <p class="error" role="alert">{message}</p> }.into_any();
        }
    };
    let heading = match &form.key {
        Some(key) => format!("timeline of item {key}"),
        None => "changes".to_owned(),
    };
    let next = page.next.as_deref().map(|cursor| form.with_after(cursor));
    let rows = if page.changes.is_empty() {
        view! {
            <tr class="empty">
                <td colspan="4">"no changes match"</td>
            </tr>
        }
        .into_any()
    } else {
        page.changes.iter().map(row).collect_view().into_any()
    };
    view! {
        <section class="changes">
            <h2>{heading}</h2>
            <div class="scroll">
                <table class="changes">
                    <thead>
                        <tr>
                            <th>"time (UTC)"</th>
                            <th>"kind"</th>
                            <th>"item"</th>
                            <th>"what changed"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
            {next.map(|href| view! { <p><a class="next" href=href>"next page →"</a></p> })}
        </section>
    }
    .into_any()
}

/// A value as a cell shows it.
fn shown(value: Option<&AttributeValue>) -> (String, String) {
    let full = value.map_or_else(|| "(none)".to_owned(), AttributeValue::label);
    let cut = if full.chars().count() > MAX_VALUE_CHARS {
        format!(
            "{}…",
            full.chars().take(MAX_VALUE_CHARS).collect::<String>()
        )
    } else {
        full.clone()
    };
    (cut, full)
}

fn row(change: &ChangeDoc) -> impl IntoView {
    let steps = change.steps();
    let kind = change.kind.clone();
    let items = steps
        .into_iter()
        .map(|step| {
            let (old, old_full) = shown(step.old.as_ref());
            let (new, new_full) = shown(step.new.as_ref());
            let body = match kind.as_str() {
                "INSERT" => view! { <span class="new" title=new_full>{new}</span> }.into_any(),
                "REMOVE" => view! { <span class="old" title=old_full>{old}</span> }.into_any(),
                _ => view! {
                    <span class="old" title=old_full>{old}</span>
                    " → "
                    <span class="new" title=new_full>{new}</span>
                }
                .into_any(),
            };
            view! {
                <li data-attr=step.path.clone()>
                    <code>{step.path.clone()}</code>
                    " "
                    {body}
                </li>
            }
        })
        .collect_view();
    let timeline = format!(
        "/changes?key={}&order=asc",
        encode_query_value(&key_text(&change.key))
    );
    view! {
        <tr data-event-id=change.event_id.clone() data-kind=change.kind.clone()>
            <td class="time" title=format!("sequence {} in {}", change.sequence_number, change.shard_id)>
                {utc_datetime(change.event_time)}
            </td>
            <td class="kind">
                <span class="badge" data-kind=change.kind.clone()>{change.kind.clone()}</span>
            </td>
            <td class="item">
                <a href=timeline>{key_text(&change.key)}</a>
            </td>
            <td class="steps">
                <ul>{items}</ul>
            </td>
        </tr>
    }
}

/// `pk=order#1, sk=2` from a canonical key.
fn key_text(canonical: &str) -> String {
    match serde_json::from_str::<BTreeMap<String, String>>(canonical) {
        Ok(key) => key
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        Err(_) => canonical.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_become_queries() {
        let form = ChangeForm {
            key: Some("pk=order#1, sk=2".into()),
            kind: Some("MODIFY".into()),
            ..ChangeForm::default()
        };
        let q = form.to_query().unwrap();
        assert_eq!(
            serde_json::to_string(&q.key).unwrap(),
            r#"{"pk":"order#1","sk":"2"}"#
        );
        assert_eq!(q.from, None, "an item's timeline covers all time");
        assert_eq!(q.order.as_deref(), Some("asc"));
        assert_eq!(q.kinds, ["MODIFY"]);
        let plain = ChangeForm::default().to_query().unwrap();
        assert_eq!(plain.order.as_deref(), Some("desc"));
        assert!(plain.from.is_some());
        let bad = ChangeForm {
            key: Some("order#1".into()),
            ..ChangeForm::default()
        };
        assert!(bad.to_query().unwrap_err().contains("attribute=value"));
        assert_eq!(key_text(r#"{"pk":"a","sk":"2"}"#), "pk=a, sk=2");
        assert_eq!(
            form.with_after("c|1"),
            "/changes?key=pk%3Dorder%231%2C%20sk%3D2&kind=MODIFY&after=c%7C1"
        );
    }
}
