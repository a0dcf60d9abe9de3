//! The OpenSearch store's change index.
//!
//! Changes go to one index per UTC day of their event time, `<prefix>-changes-YYYY.MM.DD`, under
//! the id `table|shard|sequence number` (so a change read twice is written over itself), through
//! the same bulk path and retries as the aggregates. An index template gives every day the same
//! mapping: keywords for what is searched (table, key, kind, shard, the changed attributes), a
//! date for the event time, the sequence number padded to 40 digits (`seq_order`) so that it sorts
//! as a number, and the images kept unindexed. Retention drops whole days, so it is cheap and
//! keeps up to a day more than asked. Searches run on `<prefix>-changes-*`, sorted by event time,
//! `seq_order`, shard and table, and page with `search_after`.

use std::time::{Duration, UNIX_EPOCH};

use opensearch::{
    cat::CatIndicesParts,
    indices::{IndicesDeleteParts, IndicesPutIndexTemplateParts},
    SearchParts,
};
use serde_json::json;
use streamlens_core::{changes::seq_order, ChangeDoc, ChangePage, ChangeReader, ChangeSearch};

use super::{json_ok, range_clause, BulkItem, OpenSearchStore};
use crate::{store::Written, Error};

const DAY_MS: i64 = 86_400_000;

/// The UTC day of an event time, as index names carry it: `2026.11.26`.
fn day(event_time: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(event_time.max(0) as u64);
    humantime::format_rfc3339(at).to_string()[..10].replace('-', ".")
}

/// The start of a day named in an index name, epoch ms.
fn day_start(day: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339(&format!("{}T00:00:00Z", day.replace('.', "-"))).ok()?;
    Some(at.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
}

impl OpenSearchStore {
    /// The pattern every day's change index matches.
    pub fn changes_pattern(&self) -> String {
        format!("{}-*", self.changes)
    }

    /// Installs the change indices' template.
    pub(super) async fn install_changes(&self) -> Result<(), Error> {
        let template = json!({
            "index_patterns": [self.changes_pattern()],
            "template": {
                "settings": { "number_of_shards": 1 },
                "mappings": { "dynamic": false, "properties": {
                    "table": { "type": "keyword" },
                    "key": { "type": "keyword" },
                    "keys": { "type": "object", "enabled": false },
                    "kind": { "type": "keyword" },
                    "event_time": { "type": "date", "format": "epoch_millis" },
                    "sequence_number": { "type": "keyword" },
                    "seq_order": { "type": "keyword" },
                    "shard_id": { "type": "keyword" },
                    "event_id": { "type": "keyword" },
                    "changed": { "type": "keyword" },
                    "old_image": { "type": "object", "enabled": false },
                    "new_image": { "type": "object", "enabled": false },
                    "size_bytes": { "type": "long" },
                    "ttl_delete": { "type": "boolean" }
                } }
            }
        });
        let name = self.changes.clone();
        let response = self
            .send("put index template", || async {
                self.client
                    .indices()
                    .put_index_template(IndicesPutIndexTemplateParts::Name(&name))
                    .body(&template)
                    .send()
                    .await
            })
            .await?;
        json_ok("put index template", response).await.map(|_| ())
    }

    pub(super) async fn write_changes_to(&self, changes: &[ChangeDoc]) -> Result<Written, Error> {
        let mut items = Vec::with_capacity(changes.len());
        for change in changes {
            let mut source = serde_json::to_value(change).map_err(|e| Error::OpenSearch {
                operation: "bulk",
                message: e.to_string(),
            })?;
            source["seq_order"] = json!(seq_order(&change.sequence_number));
            let index = format!("{}-{}", self.changes, day(change.event_time));
            items.push(BulkItem::plain(index, change.id(), source));
        }
        self.bulk(items).await
    }

    pub(super) async fn expire_changes_before(&self, before_ms: i64) -> Result<u64, Error> {
        let pattern = self.changes_pattern();
        let response = self
            .send("list change indices", || async {
                self.client
                    .cat()
                    .indices(CatIndicesParts::Index(&[&pattern]))
                    .format("json")
                    .h(&["index"])
                    .send()
                    .await
            })
            .await?;
        let listed = json_ok("list change indices", response).await?;
        let prefix = format!("{}-", self.changes);
        let old: Vec<String> = listed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row["index"].as_str())
            .filter(|name| {
                name.strip_prefix(&prefix)
                    .and_then(day_start)
                    .is_some_and(|start| start + DAY_MS <= before_ms)
            })
            .map(str::to_owned)
            .collect();
        for index in &old {
            let response = self
                .send("delete change index", || async {
                    self.client
                        .indices()
                        .delete(IndicesDeleteParts::Index(&[index]))
                        .send()
                        .await
                })
                .await?;
            json_ok("delete change index", response).await?;
            tracing::info!(index, "change index dropped (retention)");
        }
        Ok(old.len() as u64)
    }

    async fn search_changes_in(&self, search: &ChangeSearch) -> Result<ChangePage, Error> {
        let mut filter = Vec::new();
        if let Some(table) = &search.table {
            filter.push(json!({ "term": { "table": table } }));
        }
        if let Some(key) = &search.key {
            filter.push(json!({ "term": { "key": key } }));
        }
        if !search.kinds.is_empty() {
            filter.push(json!({ "terms": { "kind": search.kinds } }));
        }
        if let Some(changed) = &search.changed {
            filter.push(json!({ "term": { "changed": changed } }));
        }
        filter.extend(range_clause("event_time", search.from, search.to));
        let order = if search.descending { "desc" } else { "asc" };
        let mut body = json!({
            "size": search.limit + 1,
            "query": { "bool": { "filter": filter } },
            "sort": [
                { "event_time": order }, { "seq_order": order },
                { "shard_id": order }, { "table": order }
            ]
        });
        if let Some(after) = &search.after {
            body["search_after"] = json!([
                after.event_time,
                after.seq_order,
                after.shard_id,
                after.table
            ]);
        }
        let pattern = self.changes_pattern();
        let response = self
            .send("search changes", || async {
                self.client
                    .search(SearchParts::Index(&[&pattern]))
                    .ignore_unavailable(true)
                    .allow_no_indices(true)
                    .body(&body)
                    .send()
                    .await
            })
            .await?;
        let value = json_ok("search changes", response).await?;
        let hits = value["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let changes = hits
            .into_iter()
            .map(|mut hit| serde_json::from_value::<ChangeDoc>(hit["_source"].take()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::OpenSearch {
                operation: "search changes",
                message: format!("a stored change is unreadable: {e}"),
            })?;
        Ok(ChangePage::of(changes, search.limit))
    }
}

#[async_trait::async_trait]
impl ChangeReader for OpenSearchStore {
    async fn search_changes(
        &self,
        search: &ChangeSearch,
    ) -> Result<ChangePage, streamlens_core::Error> {
        self.search_changes_in(search).await.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_name_utc_days_and_read_back() {
        assert_eq!(day(0), "1970.01.01");
        assert_eq!(day(1_764_115_199_999), "2025.11.25");
        assert_eq!(day(1_764_115_200_000), "2025.11.26");
        assert_eq!(day_start("2025.11.26"), Some(1_764_115_200_000));
        assert_eq!(day_start("nonsense"), None);
    }
}
