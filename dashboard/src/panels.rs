//! The overview's panels over the chosen time range: stat tiles (events today, events in the
//! range and their rate, the net change of a metric, net items), events per second by kind, and
//! the top values of the chosen dimension by the chosen metric.
//!
//! All of it is asked of the query API ([`crate::server::ServerContext::query`]), so the
//! numbers are exactly the ones `POST /api/query` gives. Tiles carry `data-tile="<key>"` with the
//! value in `<dd>`; the kind chart is `svg[data-panel="kinds"]`, the top-N bars
//! `svg[data-panel="top"]` with one `<g data-group>` per value.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use streamlens_core::query::QueryResult;

use crate::{
    app::{coord, tick_label, utc_datetime, PALETTE},
    chrome::RangeForm,
};

/// The overview's default range.
pub const DEFAULT_RANGE: &str = "1h";
/// How many values the top-N bars show.
#[cfg(feature = "ssr")]
const TOP: usize = 8;

/// One stat tile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tile {
    /// `data-tile` key.
    pub key: String,
    /// What it counts.
    pub label: String,
    /// The value, exact.
    pub value: String,
}

/// Everything the panels show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Panels {
    /// The stat tiles.
    pub tiles: Vec<Tile>,
    /// Events per second by kind (series `INSERT`, `MODIFY`, `REMOVE`).
    pub kinds: Option<QueryResult>,
    /// The chosen metric's total by the chosen dimension's values, largest first.
    pub top: Option<QueryResult>,
}

/// The panels for a range, a dimension (`_all`: no top-N) and a metric of the query API (a
/// pipeline metric, or an event count).
#[server(prefix = "/api", endpoint = "panels", input = leptos::server_fn::codec::Json)]
pub async fn load_panels(
    range: RangeForm,
    dimension: Option<String>,
    metric: Option<String>,
) -> Result<Panels, ServerFnError> {
    use streamlens_core::query::{MetricQuery, Point, Series, TimeArg};
    let Some(context) = use_context::<crate::server::ServerContext>() else {
        return Err(ServerFnError::new(
            "the dashboard's server state is missing",
        ));
    };
    let info = context.info();
    let dimension = crate::app::resolve_dimension(&info, dimension.as_deref());
    let metric = crate::app::Metric::resolve(metric.as_deref(), &info).api_name();
    let (from, to) = range.metric_times(DEFAULT_RANGE);
    // A query that fails fails the panels, with its reason: zeros would pass for an answer.
    let refused = |e: streamlens_core::query::QueryError| ServerFnError::new(format!("query: {e}"));
    let ask = |metric: &str, group_by: Option<&str>, top: Option<usize>| {
        let query = MetricQuery {
            from: from.clone(),
            to: to.clone(),
            group_by: group_by.map(str::to_owned),
            top,
            ..MetricQuery::new(metric)
        };
        let context = context.clone();
        async move { context.query(query).await.map_err(refused) }
    };
    let total = |r: &QueryResult| {
        r.series
            .first()
            .and_then(|s| s.total.clone())
            .unwrap_or_else(|| "0".to_owned())
    };
    let now = now_ms();
    let today = MetricQuery {
        from: Some(TimeArg::Millis(now - now.rem_euclid(86_400_000))),
        to: None,
        ..MetricQuery::new("events")
    };
    let own_metric = !crate::explore::EVENT_METRICS.contains(&metric.as_str());
    let by_dimension = dimension != streamlens_core::aggregate::ALL_DIMENSION;
    // The queries are independent: asked together, the panels take the slowest one's time.
    let (events_today, events, net, items, inserts, modifies, removes, top) = futures::try_join!(
        async { context.query(today).await.map_err(refused) },
        ask("events", None, None),
        async {
            if own_metric {
                ask(&metric, None, None).await.map(Some)
            } else {
                Ok(None)
            }
        },
        ask("net_count", None, None),
        ask("inserts", None, None),
        ask("modifies", None, None),
        ask("removes", None, None),
        async {
            if by_dimension {
                ask(&metric, Some(&dimension), Some(TOP)).await.map(Some)
            } else {
                Ok(None)
            }
        },
    )?;
    let seconds = ((events.to - events.from) / 1000).max(1);
    let count: f64 = total(&events).parse().unwrap_or(0.0);
    let mut tiles = vec![
        Tile {
            key: "today".into(),
            label: "events today (UTC)".into(),
            value: total(&events_today),
        },
        Tile {
            key: "events".into(),
            label: "events in range".into(),
            value: total(&events),
        },
        Tile {
            key: "rate".into(),
            label: "events/s (range average)".into(),
            value: format!("{:.2}", count / seconds as f64),
        },
    ];
    if let Some(net) = net {
        tiles.push(Tile {
            key: "net".into(),
            label: format!("net {metric} in range"),
            value: total(&net),
        });
    }
    tiles.push(Tile {
        key: "items".into(),
        label: "net items in range".into(),
        value: total(&items),
    });

    let mut kinds: Option<QueryResult> = None;
    for (r, kind) in [
        (inserts, "INSERT"),
        (modifies, "MODIFY"),
        (removes, "REMOVE"),
    ] {
        let per_s = r.interval_ms as f64 / 1000.0;
        let series = Series {
            group: kind.to_owned(),
            total: r.series.first().and_then(|s| s.total.clone()),
            points: r
                .series
                .first()
                .map(|s| {
                    s.points
                        .iter()
                        .map(|p| Point {
                            start: p.start,
                            value: p
                                .value
                                .as_deref()
                                .and_then(|v| v.parse::<f64>().ok())
                                .map(|v| format!("{:.2}", v / per_s)),
                            is_final: p.is_final,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        match kinds.as_mut() {
            Some(k) => k.series.push(series),
            None => {
                kinds = Some(QueryResult {
                    metric: "events/s".into(),
                    series: vec![series],
                    ..r
                })
            }
        }
    }
    Ok(Panels { tiles, kinds, top })
}

#[cfg(feature = "ssr")]
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The tiles, the kinds chart and the top-N bars.
pub fn view_panels(panels: &Panels) -> impl IntoView {
    let tiles = panels
        .tiles
        .iter()
        .map(|t| {
            view! {
                <div class="tile" data-tile=t.key.clone()>
                    <dt>{t.label.clone()}</dt>
                    <dd>{t.value.clone()}</dd>
                </div>
            }
        })
        .collect_view();
    view! {
        <dl class="tiles">{tiles}</dl>
        <div class="panels">
            <section class="panel">
                <h2>"events per second by kind"</h2>
                {panels
                    .kinds
                    .as_ref()
                    .map(|k| crate::explore::line_chart(k, "kinds"))
                    .unwrap_or_else(|| {
                        view! { <p class="empty">"no events in this range"</p> }.into_any()
                    })}
            </section>
            <section class="panel">
                {panels
                    .top
                    .as_ref()
                    .map(top_bars)
                    .unwrap_or_else(|| {
                        view! {
                            <h2>"top values"</h2>
                            <p class="empty">"choose a dimension to rank its values"</p>
                        }
                            .into_any()
                    })}
            </section>
        </div>
    }
}

const BAR_W: f64 = 460.0;
const BAR_ROW: f64 = 26.0;
const BAR_LABEL: f64 = 120.0;

/// Horizontal bars: each value's total over the range, largest first.
fn top_bars(result: &QueryResult) -> AnyView {
    let heading = format!(
        "top {} {} by {}",
        result.series.len(),
        result.group_by.clone().unwrap_or_default(),
        result.metric
    );
    let totals: Vec<(&str, f64, &str)> = result
        .series
        .iter()
        .filter_map(|s| {
            let t = s.total.as_deref()?;
            Some((s.group.as_str(), t.parse::<f64>().ok()?, t))
        })
        .collect();
    if totals.is_empty() {
        return view! {
            <h2>{heading}</h2>
            <p class="empty">"no data in this range"</p>
        }
        .into_any();
    }
    let (lo, hi, step) = crate::app::axis(totals.iter().map(|t| t.1));
    let plot = BAR_W - BAR_LABEL - 70.0;
    let x = move |v: f64| BAR_LABEL + (v - lo) / (hi - lo) * plot;
    let height = BAR_ROW * totals.len() as f64 + 22.0;
    let rows = totals
        .iter()
        .enumerate()
        .map(|(i, (group, v, text))| {
            let y = i as f64 * BAR_ROW + 4.0;
            let (left, right) = (x(v.min(0.0)), x(v.max(0.0)));
            let tip = format!("{group}: {text}");
            view! {
                <g data-group=group.to_string()>
                    <text class="tick" x=coord(BAR_LABEL - 6.0) y=coord(y + 15.0) text-anchor="end">
                        {group.to_string()}
                    </text>
                    <rect
                        x=coord(left)
                        y=coord(y)
                        width=coord((right - left).max(1.0))
                        height=coord(BAR_ROW - 8.0)
                        fill=PALETTE[0]
                    >
                        <title>{tip}</title>
                    </rect>
                    <text class="tick value" x=coord(right + 4.0) y=coord(y + 15.0)>
                        {text.to_string()}
                    </text>
                </g>
            }
        })
        .collect_view();
    let axis_y = BAR_ROW * totals.len() as f64 + 16.0;
    let viewbox = format!("0 0 {BAR_W} {}", coord(height));
    view! {
        <h2>{heading}</h2>
        <svg class="bars top" viewBox=viewbox data-panel="top" role="img" aria-label="top values">
            <line class="zero" x1=coord(x(0.0)) x2=coord(x(0.0)) y1="0" y2=coord(axis_y - 10.0) />
            {rows}
            <text class="tick" x=coord(x(lo)) y=coord(axis_y) text-anchor="start">
                {tick_label(lo, step)}
            </text>
            <text class="tick" x=coord(x(hi)) y=coord(axis_y) text-anchor="end">
                {tick_label(hi, step)}
            </text>
        </svg>
        <p class="meta">{format!("from {} to {}", utc_datetime(result.from), utc_datetime(result.to))}</p>
    }
    .into_any()
}
