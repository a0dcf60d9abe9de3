//! The embedded store's change index.
//!
//! Two redb tables, written in one transaction: `changes` maps a change's position
//! ([`ChangeDoc::position`]: event time, padded sequence number, shard, table — the change order)
//! to the change as JSON, and `change_keys` maps `escaped item key|position` to nothing. A search
//! by key walks the item's range of `change_keys`; any other search walks `changes` between the
//! range's times. Both walks go forwards or backwards from the cursor and stop after one page.

use std::ops::Bound;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use streamlens_core::{changes::escape, ChangeDoc, ChangePage, ChangeReader, ChangeSearch};

use super::EmbeddedStore;
use crate::{store::Written, Error};

pub(super) const CHANGES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("changes");
pub(super) const CHANGE_KEYS: TableDefinition<'_, &str, ()> = TableDefinition::new("change_keys");

/// The `change_keys` entry of a change.
fn key_entry(change: &ChangeDoc) -> String {
    format!("{}|{}", escape(&change.key), change.position())
}

/// The range of positions a search covers, with `prefix` before each.
fn bounds(search: &ChangeSearch, prefix: &str) -> (Bound<String>, Bound<String>) {
    let mut lower = Bound::Included(format!("{prefix}{:013}", search.from.unwrap_or(0).max(0)));
    let mut upper = match search.to {
        Some(t) => Bound::Excluded(format!("{prefix}{:013}", t.max(0))),
        // `}` follows `|` and every digit: past every position of the prefix.
        None => Bound::Excluded(format!("{}}}", prefix.trim_end_matches('|'))),
    };
    if let Some(after) = &search.after {
        let at = format!("{prefix}{}", after.text());
        if search.descending {
            if matches!(&upper, Bound::Excluded(u) if at < *u) {
                upper = Bound::Excluded(at);
            }
        } else if matches!(&lower, Bound::Included(l) if at >= *l) {
            lower = Bound::Excluded(at);
        }
    }
    (lower, upper)
}

impl EmbeddedStore {
    /// Deferred (see [`crate::Store::write_deferred`]): the pipeline writes a pass's changes
    /// before the aggregates and checkpoint that cover them, whose commit makes them durable (or,
    /// deferred too, the next durable one).
    pub(super) fn write_changes_blocking(&self, changes: &[ChangeDoc]) -> Result<Written, Error> {
        let tx = self.begin(false)?;
        {
            let mut table = tx.open_table(CHANGES).map_err(|e| self.err(e))?;
            let mut keys = tx.open_table(CHANGE_KEYS).map_err(|e| self.err(e))?;
            for change in changes {
                let json = serde_json::to_vec(change).map_err(|e| self.err(e))?;
                table
                    .insert(change.position().as_str(), json.as_slice())
                    .map_err(|e| self.err(e))?;
                keys.insert(key_entry(change).as_str(), ())
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(Written {
            deferred: true,
            ..Written::default()
        })
    }

    pub(super) fn expire_changes_blocking(&self, before_ms: i64) -> Result<u64, Error> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let dropped;
        {
            let mut table = tx.open_table(CHANGES).map_err(|e| self.err(e))?;
            let mut keys = tx.open_table(CHANGE_KEYS).map_err(|e| self.err(e))?;
            let end = format!("{:013}", before_ms.max(0));
            let mut old = Vec::new();
            for entry in table
                .range::<&str>(..end.as_str())
                .map_err(|e| self.err(e))?
            {
                let (position, json) = entry.map_err(|e| self.err(e))?;
                let change: ChangeDoc = serde_json::from_slice(json.value()).map_err(|e| {
                    self.err(format!("bad stored change {}: {e}", position.value()))
                })?;
                old.push((position.value().to_owned(), key_entry(&change)));
            }
            for (position, key) in &old {
                table.remove(position.as_str()).map_err(|e| self.err(e))?;
                keys.remove(key.as_str()).map_err(|e| self.err(e))?;
            }
            dropped = old.len() as u64;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(dropped)
    }

    pub(super) fn search_changes_blocking(
        &self,
        search: &ChangeSearch,
    ) -> Result<ChangePage, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(CHANGES).map_err(|e| self.err(e))?;
        let wanted = search.limit + 1;
        let mut found = Vec::with_capacity(wanted.min(1024));
        let mut take = |json: &[u8], position: &str| -> Result<bool, Error> {
            let change: ChangeDoc = serde_json::from_slice(json)
                .map_err(|e| self.err(format!("bad stored change {position}: {e}")))?;
            if search.matches(&change) {
                found.push(change);
            }
            Ok(found.len() >= wanted)
        };
        match &search.key {
            Some(key) => {
                let keys = tx.open_table(CHANGE_KEYS).map_err(|e| self.err(e))?;
                let prefix = format!("{}|", escape(key));
                let (lower, upper) = bounds(search, &prefix);
                let range = keys
                    .range::<&str>((as_str(&lower), as_str(&upper)))
                    .map_err(|e| self.err(e))?;
                let walk: Box<dyn Iterator<Item = _>> = if search.descending {
                    Box::new(range.rev())
                } else {
                    Box::new(range)
                };
                for entry in walk {
                    let (entry, _) = entry.map_err(|e| self.err(e))?;
                    let position = &entry.value()[prefix.len()..];
                    let Some(json) = table.get(position).map_err(|e| self.err(e))? else {
                        continue;
                    };
                    if take(json.value(), position)? {
                        break;
                    }
                }
            }
            None => {
                let (lower, upper) = bounds(search, "");
                let range = table
                    .range::<&str>((as_str(&lower), as_str(&upper)))
                    .map_err(|e| self.err(e))?;
                let walk: Box<dyn Iterator<Item = _>> = if search.descending {
                    Box::new(range.rev())
                } else {
                    Box::new(range)
                };
                for entry in walk {
                    let (position, json) = entry.map_err(|e| self.err(e))?;
                    if take(json.value(), position.value())? {
                        break;
                    }
                }
            }
        }
        Ok(ChangePage::of(found, search.limit))
    }
}

fn as_str(bound: &Bound<String>) -> Bound<&str> {
    match bound {
        Bound::Included(s) => Bound::Included(s.as_str()),
        Bound::Excluded(s) => Bound::Excluded(s.as_str()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[async_trait::async_trait]
impl ChangeReader for EmbeddedStore {
    async fn search_changes(
        &self,
        search: &ChangeSearch,
    ) -> Result<ChangePage, streamlens_core::Error> {
        let store = self.clone();
        let search = search.clone();
        tokio::task::spawn_blocking(move || store.search_changes_blocking(&search))
            .await
            .map_err(|e| streamlens_core::Error::Store(e.to_string()))?
            .map_err(Into::into)
    }
}
