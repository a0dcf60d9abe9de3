//! The Explore page (`/explore`): a query builder over the query API.
//!
//! The query lives in the URL — `metric`, `group_by`, `filter` (`dimension=value1,value2`),
//! `interval`, `top`, the time range, `ns` (a replay namespace to read instead of the live
//! aggregates), `beside=1` (with `ns`: the namespace and live side by side, and the cells where
//! they differ) and `live=1` — so a link reproduces it exactly. The server
//! answers it with the same code as `POST /api/query` and renders a line chart (one line per
//! group, every point with a tooltip) and the table of buckets × groups; `/api/query.csv` with the
//! same query string downloads the answer as CSV. Followed live, the query is answered again
//! after every write of the pipeline.
//!
//! Hooks for tests: the table is `<table class="explore">`; its cells carry `data-group` and
//! `data-start` (epoch ms), the totals row is `<tr class="total">`. Beside live, the two charts are
//! `data-panel="explore-live"` and `"explore"`, their totals `<p class="totals"
//! data-side="live|replay">` and the comparison `<section class="differences"
//! data-differences="N" data-cells="M">` with one `<tr data-group data-start>` per differing
//! cell.

use std::collections::{BTreeMap, BTreeSet};

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};
use streamlens_core::{
    aggregate::PipelineInfo,
    query::{DimensionFilter, MetricQuery, QueryResult},
};

use crate::{
    app::{
        coord, encode_query_value, load_pipeline, tick_label, utc_datetime, utc_time, StreamStatus,
        CHART_H, CHART_W, MARGIN_BOTTOM, MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, PALETTE,
    },
    chrome::{header, range_fields, RangeForm},
};

/// The explorer's default range.
const DEFAULT_RANGE: &str = "1h";
/// Event counts the query API knows besides the pipeline's metrics.
pub(crate) const EVENT_METRICS: [&str; 5] =
    ["events", "inserts", "modifies", "removes", "net_count"];

/// A query as the explorer's query string gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExploreForm {
    /// The metric (`events` when absent).
    pub metric: Option<String>,
    /// Group by this dimension.
    pub group_by: Option<String>,
    /// `dimension=value1,value2`.
    pub filter: Option<String>,
    /// Bucket size.
    pub interval: Option<String>,
    /// Keep the N largest groups.
    pub top: Option<String>,
    /// The time range.
    pub range: RangeForm,
    /// A replay namespace to answer from instead of the live aggregates.
    pub ns: Option<String>,
    /// With `ns`: show the live answer beside the namespace's, and where they differ.
    pub beside: bool,
}

impl ExploreForm {
    /// Reads the form from query-string values (`get(name)`; empty values count as absent).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        ExploreForm {
            metric: get("metric"),
            group_by: get("group_by"),
            filter: get("filter"),
            interval: get("interval"),
            top: get("top"),
            range: RangeForm {
                range: get("range"),
                from: get("from"),
                to: get("to"),
            },
            ns: get("ns"),
            beside: get("beside").is_some(),
        }
    }

    /// The same query of the live aggregates.
    pub fn live(&self) -> Self {
        ExploreForm {
            ns: None,
            beside: false,
            ..self.clone()
        }
    }

    /// The API query; a malformed `filter` or `top` is an error naming it.
    pub fn to_query(&self) -> Result<MetricQuery, String> {
        let filters = match &self.filter {
            None => Vec::new(),
            Some(f) => {
                let (dimension, values) = f
                    .split_once('=')
                    .ok_or_else(|| format!("filter `{f}`: give `dimension=value1,value2`"))?;
                vec![DimensionFilter {
                    dimension: dimension.trim().to_owned(),
                    values: values.split(',').map(|v| v.trim().to_owned()).collect(),
                }]
            }
        };
        let top = self
            .top
            .as_deref()
            .map(|t| {
                t.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("top `{t}` is not a whole number"))
            })
            .transpose()?;
        let (from, to) = self.range.metric_times(DEFAULT_RANGE);
        Ok(MetricQuery {
            from,
            to,
            interval: self.interval.clone(),
            group_by: self.group_by.clone(),
            filters,
            top,
            namespace: self.ns.clone(),
            ..MetricQuery::new(self.metric.clone().unwrap_or_else(|| "events".to_owned()))
        })
    }

    /// The query string of this form (for the CSV link).
    pub fn query_string(&self) -> String {
        [
            ("metric", &self.metric),
            ("group_by", &self.group_by),
            ("filter", &self.filter),
            ("interval", &self.interval),
            ("top", &self.top),
            ("range", &self.range.range),
            ("from", &self.range.from),
            ("to", &self.range.to),
            ("ns", &self.ns),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode_query_value(v))))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// Answers the explorer's query: in-process while rendering, `POST /api/explore` from the
/// browser.
#[server(prefix = "/api", endpoint = "explore", input = leptos::server_fn::codec::Json)]
pub async fn run_explore(form: ExploreForm) -> Result<QueryResult, ServerFnError> {
    let Some(context) = use_context::<crate::server::ServerContext>() else {
        return Err(ServerFnError::new(
            "the dashboard's server state is missing",
        ));
    };
    let query = form.to_query().map_err(ServerFnError::new)?;
    context
        .query(query)
        .await
        .map_err(|e| ServerFnError::new(e.to_string()))
}

/// The Explore page.
#[component]
pub fn ExplorePage() -> impl IntoView {
    let query = use_query_map();
    let form = Memo::new(move |_| query.with(|q| ExploreForm::from_lookup(|k| q.get(k))));
    let follow = Memo::new(move |_| query.with(|q| q.get("live").is_some()));
    let tick = RwSignal::new(0_u64);
    let status = RwSignal::new(StreamStatus::Connecting);
    let hydrated = RwSignal::new(false);
    let info = Resource::new(|| (), |_| load_pipeline());
    let answer = Resource::new(
        move || {
            let form = form.get();
            let live = follow.get() && form.range.ends_now(DEFAULT_RANGE);
            (form, if live { tick.get() } else { 0 })
        },
        |(form, _)| async move {
            let answer = run_explore(form.clone()).await?;
            let live = if form.beside && form.ns.is_some() {
                Some(run_explore(form.live()).await?)
            } else {
                None
            };
            Ok::<_, ServerFnError>((answer, live))
        },
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
                    let result = answer.await;
                    let form = form.get_untracked();
                    view! {
                        {header(&info, status)}
                        {controls(&form, follow.get_untracked(), &info)}
                        {answer_view(&form, result)}
                    }
                })}
            </Transition>
        </div>
    }
}

fn select(name: &'static str, options: Vec<(String, String)>, chosen: &str) -> impl IntoView {
    let options = options
        .into_iter()
        .map(|(value, label)| {
            let selected = value == chosen;
            view! {
                <option value=value selected=selected>
                    {label}
                </option>
            }
        })
        .collect_view();
    view! { <select name=name>{options}</select> }
}

fn controls(form: &ExploreForm, live: bool, info: &PipelineInfo) -> impl IntoView {
    let metrics: Vec<(String, String)> = info
        .metrics
        .iter()
        .map(|m| (m.clone(), m.clone()))
        .chain(
            EVENT_METRICS
                .iter()
                .map(|e| (e.to_string(), e.replace('_', " "))),
        )
        .collect();
    let dimensions: Vec<(String, String)> = std::iter::once((String::new(), "(none)".to_owned()))
        .chain(info.dimensions.iter().map(|d| (d.clone(), d.clone())))
        .collect();
    let metric = form.metric.clone().unwrap_or_else(|| "events".to_owned());
    view! {
        <form class="controls" method="get" action="/explore">
            <label>"metric " {select("metric", metrics, &metric)}</label>
            <label>
                "group by "
                {select("group_by", dimensions, form.group_by.as_deref().unwrap_or_default())}
            </label>
            <label>
                "filter "
                <input
                    name="filter"
                    size="18"
                    placeholder="status=paid,shipped"
                    value=form.filter.clone().unwrap_or_default()
                />
            </label>
            <label>
                "interval "
                <input
                    name="interval"
                    size="4"
                    placeholder="auto"
                    value=form.interval.clone().unwrap_or_default()
                />
            </label>
            <label>
                "top "
                <input
                    name="top"
                    size="3"
                    inputmode="numeric"
                    value=form.top.clone().unwrap_or_default()
                />
            </label>
            {range_fields(&form.range, DEFAULT_RANGE, live)}
            <label>
                "replay namespace "
                <input
                    name="ns"
                    size="10"
                    placeholder="(live)"
                    value=form.ns.clone().unwrap_or_default()
                />
            </label>
            <label title="with a replay namespace: live beside it, and where they differ">
                <input type="checkbox" name="beside" value="1" checked=form.beside />
                " beside live"
            </label>
            <button type="submit">"run"</button>
        </form>
    }
}

fn answer_view(
    form: &ExploreForm,
    result: Result<(QueryResult, Option<QueryResult>), ServerFnError>,
) -> AnyView {
    let (result, live) = match result {
        Ok(result) => result,
        Err(e) => {
            let message = format!("cannot answer: {}", crate::app::server_error(&e));
            return view! { <p class="error" role="alert">{message}</p> }.into_any();
        }
    };
    let caption = format!(
        "{}{} ({}) every {} from {} to {}{}",
        form.ns
            .as_ref()
            .map(|ns| format!("replay `{ns}`: "))
            .unwrap_or_default(),
        result.metric,
        result.kind,
        result.interval,
        utc_datetime(result.from),
        utc_datetime(result.to),
        result
            .group_by
            .as_ref()
            .map(|g| format!(", by {g}"))
            .unwrap_or_default()
    );
    let csv = format!("/api/query.csv?{}", form.query_string());
    if let Some(live) = live {
        return view! {
            <h2 class="beside-caption">{caption}</h2>
            <div class="beside">
                <section class="chart">
                    <h3>"live"</h3>
                    {line_chart(&live, "explore-live")}
                    {totals(&live, "live")}
                </section>
                <section class="chart">
                    <h3>{format!("replay `{}`", form.ns.clone().unwrap_or_default())}</h3>
                    {line_chart(&result, "explore")}
                    {totals(&result, "replay")}
                </section>
            </div>
            {differences(&live, &result)}
            <p class="actions">
                <a class="csv" href=csv download="streamlens.csv">
                    "download the replay's CSV"
                </a>
            </p>
            <section class="table">{table(&result)}</section>
        }
        .into_any();
    }
    view! {
        <section class="chart">
            <h2>{caption}</h2>
            {line_chart(&result, "explore")}
            <p class="actions">
                <a class="csv" href=csv download="streamlens.csv">
                    "download CSV"
                </a>
            </p>
        </section>
        <section class="table">{table(&result)}</section>
    }
    .into_any()
}

/// Each group's total on one side of the beside view.
fn totals(result: &QueryResult, side: &'static str) -> impl IntoView {
    let text = if result.series.is_empty() {
        String::new()
    } else {
        result
            .series
            .iter()
            .map(|s| {
                format!(
                    "{}: {}",
                    if s.group.is_empty() {
                        "total"
                    } else {
                        &s.group
                    },
                    s.total.as_deref().unwrap_or("—")
                )
            })
            .collect::<Vec<_>>()
            .join(" · ")
    };
    view! {
        <p class="totals" data-side=side>
            {text}
        </p>
    }
}

/// A cell that differs: group, bucket start, the live value, the replay's.
pub type Difference = (String, i64, Option<String>, Option<String>);

/// The cells (group × bucket) whose values differ between live and a replay, or that only one
/// side has; and how many cells there are.
pub fn differing_cells(live: &QueryResult, replay: &QueryResult) -> (usize, Vec<Difference>) {
    let cells = |r: &QueryResult| -> BTreeMap<(String, i64), Option<String>> {
        r.series
            .iter()
            .flat_map(|s| {
                s.points
                    .iter()
                    .map(|p| ((s.group.clone(), p.start), p.value.clone()))
            })
            .collect()
    };
    let (a, b) = (cells(live), cells(replay));
    let keys: BTreeSet<&(String, i64)> = a.keys().chain(b.keys()).collect();
    let differing = keys
        .iter()
        .filter_map(|key| {
            let (l, r) = (
                a.get(*key).cloned().flatten(),
                b.get(*key).cloned().flatten(),
            );
            (l != r).then(|| (key.0.clone(), key.1, l, r))
        })
        .collect();
    (keys.len(), differing)
}

/// How many cells differ between live and the replay, and the first of them.
fn differences(live: &QueryResult, replay: &QueryResult) -> impl IntoView {
    const SHOWN: usize = 20;
    let (cells, differing) = differing_cells(live, replay);
    let summary = if differing.is_empty() {
        format!("live and replay agree on all {cells} cells")
    } else {
        format!("{} of {cells} cells differ", differing.len())
    };
    let n = differing.len();
    let rows = differing
        .into_iter()
        .take(SHOWN)
        .map(|(group, start, l, r)| {
            let label = if group.is_empty() {
                "total".to_owned()
            } else {
                group.clone()
            };
            view! {
                <tr data-group=group data-start=start.to_string()>
                    <td>{label}</td>
                    <td>{utc_datetime(start)}</td>
                    <td class="num">{l.unwrap_or_else(|| "—".to_owned())}</td>
                    <td class="num">{r.unwrap_or_else(|| "—".to_owned())}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <section
            class=if n == 0 { "differences agree" } else { "differences" }
            data-differences=n.to_string()
            data-cells=cells.to_string()
        >
            <h3>{summary}</h3>
            {(n > 0)
                .then(|| {
                    view! {
                        <table>
                            <thead>
                                <tr>
                                    <th>"group"</th>
                                    <th>"bucket (UTC)"</th>
                                    <th>"live"</th>
                                    <th>"replay"</th>
                                </tr>
                            </thead>
                            <tbody>{rows}</tbody>
                        </table>
                    }
                })}
            {(n > SHOWN).then(|| view! { <p class="meta">{format!("and {} more", n - SHOWN)}</p> })}
        </section>
    }
}

/// Buckets as rows (newest first), groups as columns, the totals last.
fn table(result: &QueryResult) -> AnyView {
    if result.series.is_empty() {
        return view! { <p class="empty">"no data in this range"</p> }.into_any();
    }
    let starts: BTreeSet<i64> = result
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.start))
        .collect();
    let values: BTreeMap<(&str, i64), String> = result
        .series
        .iter()
        .flat_map(|s| {
            s.points.iter().map(move |p| {
                (
                    (s.group.as_str(), p.start),
                    p.value.clone().unwrap_or_else(|| "—".to_owned()),
                )
            })
        })
        .collect();
    let head = result
        .series
        .iter()
        .map(|s| view! { <th>{s.group.clone()}</th> })
        .collect_view();
    let rows = starts
        .iter()
        .rev()
        .map(|start| {
            let cells = result
                .series
                .iter()
                .map(|s| {
                    let value = values
                        .get(&(s.group.as_str(), *start))
                        .cloned()
                        .unwrap_or_default();
                    view! {
                        <td data-group=s.group.clone() data-start=start.to_string()>
                            {value}
                        </td>
                    }
                })
                .collect_view();
            view! {
                <tr>
                    <td class="bucket" title=utc_datetime(*start)>
                        {utc_datetime(*start)}
                    </td>
                    {cells}
                </tr>
            }
        })
        .collect_view();
    let totals = result
        .series
        .iter()
        .map(|s| {
            view! {
                <td data-group=s.group.clone()>{s.total.clone().unwrap_or_else(|| "—".into())}</td>
            }
        })
        .collect_view();
    view! {
        <div class="scroll">
            <table class="explore">
                <thead>
                    <tr>
                        <th>"bucket (UTC)"</th>
                        {head}
                    </tr>
                </thead>
                <tbody>
                    {rows}
                    <tr class="total">
                        <td>"total"</td>
                        {totals}
                    </tr>
                </tbody>
            </table>
        </div>
    }
    .into_any()
}

/// One line per group over the query's range; each point has a tooltip (`<title>`). `panel`
/// names the chart (`data-panel`).
pub(crate) fn line_chart(result: &QueryResult, panel: &'static str) -> AnyView {
    let points: Vec<(usize, i64, f64, &str)> = result
        .series
        .iter()
        .enumerate()
        .flat_map(|(si, s)| {
            s.points.iter().filter_map(move |p| {
                let v = p.value.as_deref()?.parse::<f64>().ok()?;
                Some((si, p.start, v, p.value.as_deref().unwrap_or_default()))
            })
        })
        .collect();
    if points.is_empty() {
        return view! { <p class="empty">"no data in this range"</p> }.into_any();
    }
    let (lo, hi, step) = crate::app::axis(points.iter().map(|p| p.2));
    let plot_w = CHART_W - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = CHART_H - MARGIN_TOP - MARGIN_BOTTOM;
    let (t0, t1) = (
        result.from,
        (result.to - result.interval_ms).max(result.from + 1),
    );
    let x = move |t: i64| MARGIN_LEFT + (t - t0) as f64 / (t1 - t0) as f64 * plot_w;
    let y = move |v: f64| MARGIN_TOP + (hi - v) / (hi - lo) * plot_h;

    let mut grid = Vec::new();
    let mut tick = lo;
    while tick <= hi + step / 2.0 {
        let class = if tick.abs() < step / 1e6 {
            "zero"
        } else {
            "grid"
        };
        grid.push(view! {
            <line class=class x1=coord(MARGIN_LEFT) x2=coord(CHART_W - MARGIN_RIGHT) y1=coord(y(tick)) y2=coord(y(tick)) />
            <text class="tick" x=coord(MARGIN_LEFT - 6.0) y=coord(y(tick) + 4.0) text-anchor="end">
                {tick_label(tick, step)}
            </text>
        });
        tick += step;
    }
    // About six time labels, on bucket starts.
    let buckets = ((result.to - result.from) / result.interval_ms.max(1)).max(1);
    let every = (buckets / 6).max(1);
    let day_span = result.to - result.from > 86_400_000;
    let x_labels = (0..buckets)
        .step_by(every as usize)
        .map(|i| {
            let t = result.from + i * result.interval_ms;
            let label = if day_span {
                utc_datetime(t)[5..16].to_owned()
            } else {
                utc_time(t, false)
            };
            // The last label ends at the plot's edge rather than past it.
            let anchor = if x(t) > CHART_W - MARGIN_RIGHT - 30.0 {
                "end"
            } else {
                "middle"
            };
            view! {
                <text class="tick" x=coord(x(t)) y=coord(CHART_H - 10.0) text-anchor=anchor>
                    {label}
                </text>
            }
        })
        .collect_view();
    let lines = result
        .series
        .iter()
        .enumerate()
        .map(|(si, s)| {
            let colour = PALETTE[si % PALETTE.len()];
            // A bucket without data breaks the line: no slope is drawn across a gap.
            let mut runs: Vec<Vec<String>> = Vec::new();
            let mut previous: Option<i64> = None;
            for p in points.iter().filter(|p| p.0 == si) {
                if previous.is_none_or(|t| p.1 - t != result.interval_ms) {
                    runs.push(Vec::new());
                }
                previous = Some(p.1);
                if let Some(run) = runs.last_mut() {
                    run.push(format!("{},{}", coord(x(p.1)), coord(y(p.2))));
                }
            }
            let segments = runs
                .into_iter()
                .filter(|run| run.len() > 1)
                .map(|run| {
                    view! {
                        <polyline points=run.join(" ") fill="none" stroke=colour stroke-width="2" />
                    }
                })
                .collect_view();
            let dots = points
                .iter()
                .filter(|p| p.0 == si)
                .map(|p| {
                    let tip = format!("{} · {} · {}", s.group, utc_datetime(p.1), p.3);
                    view! {
                        <circle cx=coord(x(p.1)) cy=coord(y(p.2)) r="3" fill=colour>
                            <title>{tip}</title>
                        </circle>
                    }
                })
                .collect_view();
            view! {
                <g class="series" data-group=s.group.clone()>
                    {segments}
                    {dots}
                </g>
            }
        })
        .collect_view();
    let legend = crate::app::legend(result.series.iter().map(|s| s.group.as_str()));
    let viewbox = format!("0 0 {CHART_W} {CHART_H}");
    view! {
        <svg
            class="bars lines"
            viewBox=viewbox
            data-panel=panel
            role="img"
            aria-label="metric over time"
        >
            {grid}
            {lines}
            {x_labels}
        </svg>
        <ul class="legend">{legend}</ul>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_become_queries_and_links() {
        let pairs = [
            ("metric", "amount"),
            ("group_by", "status"),
            ("filter", "status=paid, shipped"),
            ("top", "3"),
            ("range", "custom"),
            ("from", "2026-01-01T00:00:00Z"),
            ("to", ""),
        ];
        let form = ExploreForm::from_lookup(|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        });
        let q = form.to_query().unwrap();
        assert_eq!(q.metric, "amount");
        assert_eq!(q.filters[0].values, ["paid", "shipped"]);
        assert_eq!(q.top, Some(3));
        assert_eq!(q.to, None);
        assert_eq!(
            form.query_string(),
            "metric=amount&group_by=status&filter=status%3Dpaid%2C%20shipped&top=3&range=custom&from=2026-01-01T00%3A00%3A00Z"
        );
        let bad = ExploreForm {
            top: Some("many".into()),
            ..ExploreForm::default()
        };
        assert!(bad.to_query().unwrap_err().contains("top"));
        assert_eq!(ExploreForm::default().to_query().unwrap().metric, "events");
    }
}
