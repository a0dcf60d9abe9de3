//! `streamlens changes`: search the raw change index from the command line.
//!
//! The search is built from flags (or given whole as JSON with `--json`) and answered by a running
//! dashboard (`--url`, through `POST /api/changes`) or straight from the store of a config file
//! (`--config`). `--all` follows the `next` cursors to the end. Output is a table (one change per
//! line, with `attribute: old → new` for what a MODIFY changed), JSON (the API's pages) or
//! newline-delimited JSON (one change per line).

use std::{fmt::Write as _, path::PathBuf};

use anyhow::Context;
use streamlens_core::{attr::AttributeValue, ChangeDoc, ChangePage, ChangeQuery, QueryError};

use crate::{
    config::Config,
    query_cli::{iso, now_ms, post, time_arg},
};

/// How to print the changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChangesFormat {
    /// One change per line: time, kind, key, what changed.
    Table,
    /// The API's pages as JSON.
    Json,
    /// One change per line as JSON.
    Ndjson,
}

/// The flags of `streamlens changes`.
#[derive(Debug, clap::Args)]
pub struct ChangesArgs {
    /// Read the store of this config file.
    #[arg(long, short, env = "STREAMLENS_CONFIG", conflicts_with = "url")]
    pub config: Option<PathBuf>,
    /// Ask a running dashboard instead, e.g. http://127.0.0.1:3000.
    #[arg(long)]
    pub url: Option<String>,
    /// The whole search as JSON (the body of `POST /api/changes`); the other search flags are
    /// then not allowed.
    #[arg(long, conflicts_with_all = ["table", "key", "from", "to", "kind", "changed", "limit", "after", "desc"])]
    pub json: Option<String>,
    /// Only changes of this table.
    #[arg(long)]
    pub table: Option<String>,
    /// Only changes of this item: `attribute=value`, once per key attribute
    /// (`--key pk=order#1 --key sk=2`).
    #[arg(long)]
    pub key: Vec<String>,
    /// Start: epoch ms, ISO-8601, `now` or `now-<duration>`.
    #[arg(long)]
    pub from: Option<String>,
    /// End (exclusive), like --from.
    #[arg(long)]
    pub to: Option<String>,
    /// Only these kinds: INSERT, MODIFY, REMOVE (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Only changes that touched this attribute (a dotted path for maps).
    #[arg(long)]
    pub changed: Option<String>,
    /// Changes per page (1 to 1000) [default: 100].
    #[arg(long)]
    pub limit: Option<usize>,
    /// Start after this cursor (a page's `next`).
    #[arg(long)]
    pub after: Option<String>,
    /// Newest first.
    #[arg(long)]
    pub desc: bool,
    /// Follow the pages to the end instead of printing one.
    #[arg(long)]
    pub all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ChangesFormat::Table)]
    pub format: ChangesFormat,
}

/// The store of `--config`, or `None` when a dashboard is asked (`--url`); one of them is needed.
pub async fn store_unless_url(
    url: Option<&str>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<Option<std::sync::Arc<dyn streamlens_aggregator::Store>>> {
    match (url, config) {
        (Some(_), _) => Ok(None),
        (None, Some(path)) => {
            let config = Config::load(path)?;
            Ok(Some(
                streamlens_aggregator::store::open(&config.store)
                    .await
                    .context("opening the store")?,
            ))
        }
        (None, None) => anyhow::bail!("give --config (read the store) or --url (ask a dashboard)"),
    }
}

/// Key attributes from `attribute=value` arguments.
pub fn key_of(
    parts: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let mut key = std::collections::BTreeMap::new();
    for part in parts {
        let (name, value) = part
            .split_once('=')
            .with_context(|| format!("key `{part}` is not `attribute=value`"))?;
        key.insert(
            name.trim().to_owned(),
            serde_json::Value::String(value.to_owned()),
        );
    }
    Ok(key)
}

/// The search the flags describe.
pub fn query_of(args: &ChangesArgs) -> anyhow::Result<ChangeQuery> {
    if let Some(json) = &args.json {
        return serde_json::from_str(json).context("--json is not a change search");
    }
    let key = if args.key.is_empty() {
        None
    } else {
        Some(key_of(&args.key)?)
    };
    Ok(ChangeQuery {
        table: args.table.clone(),
        key,
        from: args.from.as_deref().map(time_arg),
        to: args.to.as_deref().map(time_arg),
        kinds: args.kind.clone(),
        changed: args.changed.clone(),
        limit: args.limit,
        after: args.after.clone(),
        order: args.desc.then(|| "desc".to_owned()),
    })
}

/// Runs the search as the flags say and prints the changes.
pub async fn run(args: ChangesArgs) -> anyhow::Result<()> {
    let mut query = query_of(&args)?;
    let store = store_unless_url(args.url.as_deref(), args.config.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    let mut first = true;
    loop {
        let page: ChangePage = match (&store, &args.url) {
            (Some(store), _) => {
                streamlens_aggregator::changes::search(store.as_ref(), &query, now_ms())
                    .await
                    .map_err(|e| match e {
                        QueryError::Invalid(m) => anyhow::anyhow!("bad query: {m}"),
                        e => anyhow::anyhow!(e),
                    })?
            }
            (None, Some(url)) => post(url, "/api/changes", &query).await?,
            (None, None) => unreachable!("checked above"),
        };
        // Following every page, the cursors are ours to use, not to print.
        let printed = if args.all {
            ChangePage {
                changes: page.changes.clone(),
                next: None,
            }
        } else {
            page.clone()
        };
        std::io::Write::write_all(&mut out, render(&printed, args.format, first)?.as_bytes())?;
        first = false;
        match (&page.next, args.all) {
            (Some(next), true) => query.after = Some(next.clone()),
            _ => break,
        }
    }
    Ok(())
}

/// A value as the table shows it: strings and numbers as written, the rest as compact JSON.
fn shown(value: Option<&AttributeValue>) -> String {
    value.map_or_else(|| "(none)".to_owned(), AttributeValue::label)
}

/// What a change did, in words: `a: old → new` per changed attribute of a MODIFY, `a=value` per
/// attribute of an INSERT or a REMOVE.
pub fn describe(change: &ChangeDoc) -> String {
    let steps = change.steps();
    match change.kind.as_str() {
        _ if steps.is_empty() && change.kind == "MODIFY" => "(images not in the stream)".to_owned(),
        "INSERT" => steps
            .iter()
            .map(|s| format!("{}={}", s.path, shown(s.new.as_ref())))
            .collect::<Vec<_>>()
            .join(", "),
        "REMOVE" => steps
            .iter()
            .map(|s| format!("{}={}", s.path, shown(s.old.as_ref())))
            .collect::<Vec<_>>()
            .join(", "),
        _ => steps
            .iter()
            .map(|s| {
                format!(
                    "{}: {} → {}",
                    s.path,
                    shown(s.old.as_ref()),
                    shown(s.new.as_ref())
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// One page in `format`; `first` prints the table's header.
pub fn render(page: &ChangePage, format: ChangesFormat, first: bool) -> anyhow::Result<String> {
    let mut out = String::new();
    match format {
        ChangesFormat::Json => out = serde_json::to_string_pretty(page)? + "\n",
        ChangesFormat::Ndjson => {
            for change in &page.changes {
                out.push_str(&serde_json::to_string(change)?);
                out.push('\n');
            }
        }
        ChangesFormat::Table => {
            if first {
                writeln!(out, "{:<20}  {:<6}  {:<24}  changes", "time", "kind", "key")?;
            }
            for change in &page.changes {
                writeln!(
                    out,
                    "{:<20}  {:<6}  {:<24}  {}",
                    iso(change.event_time),
                    change.kind,
                    change.key,
                    describe(change)
                )?;
            }
            if page.changes.is_empty() && first {
                writeln!(out, "(no changes)")?;
            }
            if let Some(next) = &page.next {
                writeln!(out, "(more: --after '{next}')")?;
            }
        }
    }
    Ok(out)
}
