//! `streamlens history`: one item's every change, in order, with old → new per attribute, and
//! its state at a chosen time — from the change index of a config's store or a dashboard.
//!
//! The state at a time is the new image of the item's last change at or before it (none when
//! that change removed it, or when there was no change yet): exact as far as the stream carries
//! images, to the second of DynamoDB's `ApproximateCreationDateTime`, with changes in the same
//! second ordered by sequence number.

use std::path::PathBuf;

use streamlens_core::{
    changes::state_at, query::TimeArg, ChangeDoc, ChangePage, ChangeQuery, Item, QueryError,
};

use crate::{
    changes_cli::describe,
    query_cli::{iso, now_ms, post},
};

/// How to print the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryFormat {
    /// The changes one per line, then the state.
    Table,
    /// `{"key", "at", "exists", "state", "changes"}`.
    Json,
}

/// The flags of `streamlens history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The item's key: `attribute=value`, once per key attribute (`pk=order#1 sk=2`).
    #[arg(required = true)]
    pub key: Vec<String>,
    /// Read the store of this config file.
    #[arg(long, short, env = "STREAMLENS_CONFIG", conflicts_with = "url")]
    pub config: Option<PathBuf>,
    /// Ask a running dashboard instead, e.g. http://127.0.0.1:3000.
    #[arg(long)]
    pub url: Option<String>,
    /// Only this table's changes.
    #[arg(long)]
    pub table: Option<String>,
    /// The time to show the item's state at: epoch ms, ISO-8601, `now-<duration>` [default: now].
    #[arg(long)]
    pub at: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = HistoryFormat::Table)]
    pub format: HistoryFormat,
}

/// Every change of the item, oldest first (all pages).
pub async fn item_changes(
    store: Option<&dyn streamlens_aggregator::Store>,
    url: Option<&str>,
    table: Option<String>,
    key: std::collections::BTreeMap<String, serde_json::Value>,
) -> anyhow::Result<Vec<ChangeDoc>> {
    let mut query = ChangeQuery {
        table,
        key: Some(key),
        limit: Some(streamlens_aggregator::changes::MAX_LIMIT),
        order: Some("asc".to_owned()),
        ..ChangeQuery::default()
    };
    let mut all = Vec::new();
    loop {
        let page: ChangePage = match (store, url) {
            (Some(store), _) => streamlens_aggregator::changes::search(store, &query, now_ms())
                .await
                .map_err(|e| match e {
                    QueryError::Invalid(m) => anyhow::anyhow!("bad query: {m}"),
                    e => anyhow::anyhow!(e),
                })?,
            (None, Some(url)) => post(url, "/api/changes", &query).await?,
            (None, None) => {
                anyhow::bail!("give --config (read the store) or --url (ask a dashboard)")
            }
        };
        all.extend(page.changes);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(all),
        }
    }
}

/// The item's state as plain JSON: attribute → value (strings and numbers as written).
fn plain(item: &Item) -> serde_json::Value {
    serde_json::Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
            .collect(),
    )
}

/// Prints the item's history and its state at `--at`.
pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let key = crate::changes_cli::key_of(&args.key)?;
    let store =
        crate::changes_cli::store_unless_url(args.url.as_deref(), args.config.as_deref()).await?;
    let at = match &args.at {
        None => now_ms(),
        Some(text) => {
            let arg = text
                .parse::<i64>()
                .map(TimeArg::Millis)
                .unwrap_or_else(|_| TimeArg::Text(text.clone()));
            streamlens_aggregator::query::resolve_time("at", &arg, now_ms())
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    let changes = item_changes(
        store.as_deref(),
        args.url.as_deref(),
        args.table.clone(),
        key.clone(),
    )
    .await?;
    let state =
        state_at(&changes, at).map_err(|e| anyhow::anyhow!("cannot tell the state: {e}"))?;
    let canonical = streamlens_core::changes::canonical_key_of(&key).map_err(anyhow::Error::msg)?;
    match args.format {
        HistoryFormat::Json => {
            let out = serde_json::json!({
                "key": canonical,
                "at": at,
                "exists": state.is_some(),
                "state": state.as_ref().map(plain),
                "changes": changes,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        HistoryFormat::Table => {
            println!("item {canonical}: {} changes", changes.len());
            for change in &changes {
                let mark = if change.event_time <= at { " " } else { ">" };
                println!(
                    "{mark} {}  {:<6}  {}",
                    iso(change.event_time),
                    change.kind,
                    describe(change)
                );
            }
            match &state {
                Some(item) => println!("state at {}: {}", iso(at), plain(item)),
                None => println!("state at {}: (did not exist)", iso(at)),
            }
            if changes.iter().any(|c| c.event_time > at) {
                println!("(changes marked > are after {})", iso(at));
            }
        }
    }
    Ok(())
}
