//! `streamlens query`: the query API from the command line.
//!
//! The query is built from flags (or given whole as JSON with `--json`) and answered either by a
//! running dashboard (`--url`, through `POST /api/query`) or straight from the store of a config
//! file (`--config`; an embedded store can only be opened while no other process has it open).
//! Either way the same code answers it, so the output is the same. Output is a table (buckets as
//! rows, groups as columns, totals last), JSON (the API's answer) or CSV (one row per point).

use std::{fmt::Write as _, path::PathBuf, time::SystemTime};

use anyhow::Context;
use streamlens_core::query::{DimensionFilter, MetricQuery, QueryError, QueryResult, TimeArg};

use crate::config::Config;

/// How to print the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Buckets as rows, groups as columns, the totals last.
    Table,
    /// The API's JSON answer.
    Json,
    /// `group,start,start_time,value,final`, one row per point.
    Csv,
}

/// The flags of `streamlens query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Read the store of this config file.
    #[arg(long, short, env = "STREAMLENS_CONFIG", conflicts_with = "url")]
    pub config: Option<PathBuf>,
    /// Ask a running dashboard instead, e.g. http://127.0.0.1:3000.
    #[arg(long)]
    pub url: Option<String>,
    /// The whole query as JSON (the body of `POST /api/query`); the other query flags are then
    /// not allowed.
    #[arg(long, conflicts_with_all = ["metric", "from", "to", "interval", "group_by", "filter", "top", "pipeline", "namespace"])]
    pub json: Option<String>,
    /// The pipeline (may be left out when there is one).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// A metric of the pipeline, or events, inserts, modifies, removes, net_count.
    #[arg(long, required_unless_present = "json")]
    pub metric: Option<String>,
    /// Start: epoch ms, ISO-8601, `now`, `now-<duration>` or `earliest` (the start of the stored
    /// data) [default: now-1h].
    #[arg(long)]
    pub from: Option<String>,
    /// End (exclusive), like --from [default: now].
    #[arg(long)]
    pub to: Option<String>,
    /// Bucket size, e.g. 5m or 1h [default: the smallest window, or a larger step that keeps a
    /// long range to at most 1,500 buckets].
    #[arg(long)]
    pub interval: Option<String>,
    /// Split by this dimension.
    #[arg(long)]
    pub group_by: Option<String>,
    /// Keep only these values: `dimension=value1,value2` (repeatable).
    #[arg(long)]
    pub filter: Vec<String>,
    /// Keep the N largest groups.
    #[arg(long)]
    pub top: Option<usize>,
    /// Answer from this replay namespace (`streamlens replay`) instead of the live aggregates.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub(crate) fn time_arg(text: &str) -> TimeArg {
    text.parse::<i64>()
        .map(TimeArg::Millis)
        .unwrap_or_else(|_| TimeArg::Text(text.to_owned()))
}

/// The query the flags describe.
pub fn query_of(args: &QueryArgs) -> anyhow::Result<MetricQuery> {
    if let Some(json) = &args.json {
        return serde_json::from_str(json).context("--json is not a query");
    }
    let filters = args
        .filter
        .iter()
        .map(|f| {
            let (dimension, values) = f
                .split_once('=')
                .with_context(|| format!("--filter `{f}` is not `dimension=value1,value2`"))?;
            Ok(DimensionFilter {
                dimension: dimension.trim().to_owned(),
                values: values.split(',').map(|v| v.trim().to_owned()).collect(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(MetricQuery {
        pipeline: args.pipeline.clone(),
        from: args.from.as_deref().map(time_arg),
        to: args.to.as_deref().map(time_arg),
        interval: args.interval.clone(),
        group_by: args.group_by.clone(),
        filters,
        top: args.top,
        namespace: args.namespace.clone(),
        ..MetricQuery::new(args.metric.clone().unwrap_or_default())
    })
}

/// Answers the query as the flags say and prints it.
pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let query = query_of(&args)?;
    let result = match (&args.url, &args.config) {
        (Some(url), _) => ask(url, &query).await?,
        (None, Some(path)) => {
            let config = Config::load(path)?;
            let (store, spec) = match &query.namespace {
                Some(namespace) => crate::replay::open_namespace(&config, namespace).await?,
                None => (
                    streamlens_aggregator::store::open(&config.store)
                        .await
                        .context("opening the store")?,
                    config.pipeline.clone(),
                ),
            };
            streamlens_aggregator::query::run(store.as_ref(), &spec, &query, now_ms())
                .await
                .map_err(|e| match e {
                    QueryError::Invalid(m) => anyhow::anyhow!("bad query: {m}"),
                    e => anyhow::anyhow!(e),
                })?
        }
        (None, None) => anyhow::bail!("give --config (read the store) or --url (ask a dashboard)"),
    };
    print!("{}", render(&result, args.format)?);
    Ok(())
}

/// `POST /api/query` on a dashboard.
async fn ask(url: &str, query: &MetricQuery) -> anyhow::Result<QueryResult> {
    post(url, "/api/query", query).await
}

/// POSTs `body` as JSON to `path` of a dashboard at `url`; a 400 is a "bad query" error with the
/// dashboard's message.
pub(crate) async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
    url: &str,
    path: &str,
    body: &B,
) -> anyhow::Result<R> {
    let endpoint = format!("{}{path}", url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&endpoint)
        .json(body)
        .send()
        .await
        .with_context(|| format!("asking {endpoint}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("reading the answer of {endpoint}"))?;
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or("no message");
        if status.as_u16() == 400 {
            anyhow::bail!("bad query: {message}");
        }
        anyhow::bail!("{endpoint} answered {status}: {message}");
    }
    serde_json::from_value(body).with_context(|| format!("{endpoint} answered something else"))
}

/// Now, epoch ms.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn iso(ms: i64) -> String {
    streamlens_core::query::iso8601(ms)
}

/// The answer in `format`.
pub fn render(result: &QueryResult, format: Format) -> anyhow::Result<String> {
    let mut out = String::new();
    match format {
        Format::Json => {
            out = serde_json::to_string_pretty(result)? + "\n";
        }
        Format::Csv => out = result.to_csv(),
        Format::Table => {
            let starts: std::collections::BTreeSet<i64> = result
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.start))
                .collect();
            let mut rows: Vec<Vec<String>> = Vec::new();
            let mut header = vec!["start".to_owned()];
            header.extend(result.series.iter().map(|s| s.group.clone()));
            rows.push(header);
            for start in &starts {
                let mut row = vec![iso(*start)];
                for series in &result.series {
                    let point = series.points.iter().find(|p| p.start == *start);
                    row.push(match point {
                        None => String::new(),
                        Some(p) => p.value.clone().unwrap_or_else(|| "-".into()),
                    });
                }
                rows.push(row);
            }
            let mut total = vec!["total".to_owned()];
            total.extend(
                result
                    .series
                    .iter()
                    .map(|s| s.total.clone().unwrap_or_else(|| "-".into())),
            );
            rows.push(total);
            let widths: Vec<usize> = (0..rows[0].len())
                .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
                .collect();
            writeln!(
                out,
                "{} `{}` ({}) every {} from {} to {}",
                result.pipeline,
                result.metric,
                result.kind,
                result.interval,
                iso(result.from),
                iso(result.to)
            )?;
            if result.series.is_empty() {
                writeln!(out, "(no data in the range)")?;
                return Ok(out);
            }
            for (i, row) in rows.iter().enumerate() {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .enumerate()
                    .map(|(c, (cell, w))| {
                        if c == 0 {
                            format!("{cell:<w$}")
                        } else {
                            format!("{cell:>w$}")
                        }
                    })
                    .collect();
                writeln!(out, "{}", line.join("  ").trim_end())?;
                if i == 0 || i == rows.len() - 2 {
                    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                    writeln!(out, "{}", rule.join("  "))?;
                }
            }
        }
    }
    Ok(out)
}
