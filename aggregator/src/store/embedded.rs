//! The embedded store: a single redb file, no server.
//!
//! redb is an ACID, copy-on-write B-tree store: a commit is durable and a kill at any moment
//! leaves the last committed state readable. Documents are kept as JSON under their id, which
//! starts with `pipeline|window|window start (13 digits)`, so a query for one pipeline and window
//! is a key-range scan. Checkpoints are kept under [`super::checkpoint_id`], in the same
//! transaction as the documents they cover.

use std::{path::Path, sync::Arc};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use streamlens_core::{AggQuery, AggregateDoc, AggregateReader};

use super::{
    check_checkpoint, checkpoint_id, filter_docs, undo, Store, StoredCheckpoint, Undo, Written,
};
use crate::Error;

const AGGREGATES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("aggregates");
const CHECKPOINTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("checkpoints");

/// The version of a stored document, read without decoding the rest.
#[derive(serde::Deserialize)]
struct Versioned {
    version: u64,
}

/// Aggregates in a local redb file.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: String,
}

impl EmbeddedStore {
    /// Opens or creates the database file (and its directory).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let name = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| Error::Embedded {
            path: name.clone(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let db = Database::create(path).map_err(|e| err(&e))?;
        let tx = db.begin_write().map_err(|e| err(&e))?;
        tx.open_table(AGGREGATES).map_err(|e| err(&e))?;
        tx.open_table(CHECKPOINTS).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path: name,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Embedded {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn write_blocking(
        &self,
        docs: &[AggregateDoc],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<Written, Error> {
        let mut written = Written::default();
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        if let Some(checkpoint) = checkpoint {
            let mut table = tx.open_table(CHECKPOINTS).map_err(|e| self.err(e))?;
            let json = serde_json::to_vec(checkpoint).map_err(|e| self.err(e))?;
            table
                .insert(checkpoint.id().as_str(), json.as_slice())
                .map_err(|e| self.err(e))?;
        }
        {
            let mut table = tx.open_table(AGGREGATES).map_err(|e| self.err(e))?;
            for doc in docs {
                let id = doc.id();
                // A stale or repeated write (not above the stored version) is refused, as
                // OpenSearch's external versioning refuses it.
                let stored = table
                    .get(id.as_str())
                    .map_err(|e| self.err(e))?
                    .map(|v| serde_json::from_slice::<Versioned>(v.value()))
                    .transpose()
                    .map_err(|e| self.err(format!("bad stored document {id}: {e}")))?;
                if stored.is_some_and(|s| s.version >= doc.version) {
                    written.stale += 1;
                    metrics::counter!("streamlens_stale_writes_total").increment(1);
                    tracing::debug!(id, version = doc.version, "stale write refused");
                    continue;
                }
                let json = serde_json::to_vec(doc).map_err(|e| self.err(e))?;
                table
                    .insert(id.as_str(), json.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(written)
    }

    fn checkpoint_blocking(
        &self,
        pipeline: &str,
        worker: &str,
    ) -> Result<Option<StoredCheckpoint>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(CHECKPOINTS).map_err(|e| self.err(e))?;
        let value = table
            .get(checkpoint_id(pipeline, worker).as_str())
            .map_err(|e| self.err(e))?;
        value
            .map(|v| {
                let checkpoint = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
                check_checkpoint(checkpoint, pipeline, worker)
            })
            .transpose()
    }

    fn roll_back_blocking(
        &self,
        pipeline: &str,
        worker: &str,
        committed_version: u64,
        stamp: u64,
    ) -> Result<u64, Error> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let changed = {
            let mut table = tx.open_table(AGGREGATES).map_err(|e| self.err(e))?;
            let prefix = streamlens_core::aggregate::pipeline_id_prefix(pipeline);
            let mut plan = Vec::new();
            for entry in table.range(prefix.as_str()..).map_err(|e| self.err(e))? {
                let (key, value) = entry.map_err(|e| self.err(e))?;
                if !key.value().starts_with(&prefix) {
                    break;
                }
                let doc: AggregateDoc =
                    serde_json::from_slice(value.value()).map_err(|e| self.err(e))?;
                if doc.pipeline != pipeline || doc.worker != worker {
                    continue;
                }
                if let Some(step) = undo(&doc, committed_version, stamp)? {
                    plan.push((key.value().to_owned(), step));
                }
            }
            for (key, step) in &plan {
                match step {
                    Undo::Restore(doc) => {
                        let json = serde_json::to_vec(&**doc).map_err(|e| self.err(e))?;
                        table
                            .insert(key.as_str(), json.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Undo::Delete => {
                        table.remove(key.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
            plan.len() as u64
        };
        tx.commit().map_err(|e| self.err(e))?;
        Ok(changed)
    }

    fn query_blocking(&self, query: &AggQuery) -> Result<Vec<AggregateDoc>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(AGGREGATES).map_err(|e| self.err(e))?;
        let mut docs = Vec::new();
        let mut push = |value: &[u8]| -> Result<(), Error> {
            docs.push(serde_json::from_slice::<AggregateDoc>(value).map_err(|e| self.err(e))?);
            Ok(())
        };
        match (&query.pipeline, &query.window) {
            (Some(pipeline), Some(window)) => {
                let id = |start: i64| {
                    streamlens_core::aggregate::doc_id_prefix(pipeline, window, start.max(0))
                };
                let low = id(query.from.unwrap_or(0));
                let high = id(query.to.unwrap_or(9_999_999_999_999));
                for entry in table
                    .range(low.as_str()..high.as_str())
                    .map_err(|e| self.err(e))?
                {
                    let (_, value) = entry.map_err(|e| self.err(e))?;
                    push(value.value())?;
                }
            }
            _ => {
                for entry in table.iter().map_err(|e| self.err(e))? {
                    let (_, value) = entry.map_err(|e| self.err(e))?;
                    push(value.value())?;
                }
            }
        }
        filter_docs(query, docs)
    }
}

#[async_trait::async_trait]
impl AggregateReader for EmbeddedStore {
    async fn query(&self, query: &AggQuery) -> Result<Vec<AggregateDoc>, streamlens_core::Error> {
        let store = self.clone();
        let query = query.clone();
        tokio::task::spawn_blocking(move || store.query_blocking(&query))
            .await
            .map_err(|e| streamlens_core::Error::Store(e.to_string()))?
            .map_err(Into::into)
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn write(
        &self,
        docs: &[AggregateDoc],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<Written, Error> {
        let store = self.clone();
        let docs = docs.to_vec();
        let checkpoint = checkpoint.cloned();
        tokio::task::spawn_blocking(move || store.write_blocking(&docs, checkpoint.as_ref()))
            .await
            .map_err(|e| self.err(e))?
    }

    async fn checkpoint_of(
        &self,
        pipeline: &str,
        worker: &str,
    ) -> Result<Option<StoredCheckpoint>, Error> {
        let store = self.clone();
        let (pipeline, worker) = (pipeline.to_owned(), worker.to_owned());
        tokio::task::spawn_blocking(move || store.checkpoint_blocking(&pipeline, &worker))
            .await
            .map_err(|e| self.err(e))?
    }

    async fn roll_back(
        &self,
        pipeline: &str,
        worker: &str,
        committed_version: u64,
        stamp: u64,
    ) -> Result<u64, Error> {
        let store = self.clone();
        let (pipeline, worker) = (pipeline.to_owned(), worker.to_owned());
        tokio::task::spawn_blocking(move || {
            store.roll_back_blocking(&pipeline, &worker, committed_version, stamp)
        })
        .await
        .map_err(|e| self.err(e))?
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn doc(window: &str, start: i64, value: &str, version: u64) -> AggregateDoc {
        AggregateDoc {
            pipeline: "p".into(),
            window: window.into(),
            window_start: start,
            window_end: start + 60_000,
            dimension: "status".into(),
            value: value.into(),
            inserts: 1,
            modifies: 0,
            removes: 0,
            net_count: 1,
            sums: BTreeMap::from([("amount".to_owned(), "1.5".to_owned())]),
            version,
            ..AggregateDoc::default()
        }
    }

    #[tokio::test]
    async fn rewrites_replace_and_ranges_select() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(
                &[
                    doc("1m", 0, "a", 1),
                    doc("1m", 60_000, "a", 1),
                    doc("5m", 0, "a", 1),
                ],
                None,
            )
            .await
            .unwrap();
        let checkpoint = StoredCheckpoint {
            pipeline: "p".into(),
            positions: [("shard-1".to_owned(), "42".to_owned())].into(),
            ..StoredCheckpoint::default()
        };
        store
            .write(&[doc("1m", 0, "a", 2)], Some(&checkpoint))
            .await
            .unwrap();
        let q = AggQuery {
            pipeline: Some("p".into()),
            window: Some("1m".into()),
            from: Some(0),
            to: Some(60_000),
            dimension: None,
            worker: None,
        };
        let got = store.query(&q).await.unwrap();
        assert_eq!(got, vec![doc("1m", 0, "a", 2)]);
        drop(store);
        // Reopening finds the committed data.
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        let all = store.query(&AggQuery::default()).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(store.checkpoint("p").await.unwrap(), Some(checkpoint));
        assert_eq!(store.checkpoint("other").await.unwrap(), None);
    }
}
