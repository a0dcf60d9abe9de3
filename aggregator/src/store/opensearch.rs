//! The OpenSearch store.
//!
//! At start the store installs an index template for `<prefix>-aggregates*` (keywords for the
//! identifying fields, dates for window bounds, longs for counts; the exact sums are kept as
//! strings) and creates the index. Writes are `_bulk` index operations under the deterministic
//! document id, so a rewritten window replaces its document. Queries are bool filters sorted by
//! window start, dimension and value, paged with `search_after`.

use opensearch::{
    auth::Credentials,
    http::{
        transport::{SingleNodeConnectionPool, TransportBuilder},
        StatusCode,
    },
    indices::{IndicesCreateParts, IndicesPutIndexTemplateParts, IndicesRefreshParts},
    BulkOperation, BulkParts, OpenSearch, SearchParts,
};
use serde_json::{json, Value};
use streamlens_core::{AggQuery, AggregateDoc, AggregateReader};

use super::{filter_docs, Store, StoredCheckpoint};
use crate::{config::OpenSearchStoreConfig, Error};

const PAGE: usize = 1000;

/// Aggregates in an OpenSearch index.
pub struct OpenSearchStore {
    client: OpenSearch,
    index: String,
    checkpoints: String,
    url: String,
}

fn os_err(operation: &'static str) -> impl Fn(opensearch::Error) -> Error {
    move |e| Error::OpenSearch {
        operation,
        message: e.to_string(),
    }
}

/// Reads a response, turning an error status into an error that quotes the body.
async fn json_ok(
    operation: &'static str,
    response: opensearch::http::response::Response,
) -> Result<Value, Error> {
    let status = response.status_code();
    let body = response.text().await.map_err(os_err(operation))?;
    if !status.is_success() {
        return Err(Error::OpenSearch {
            operation,
            message: format!(
                "status {status}: {}",
                body.chars().take(500).collect::<String>()
            ),
        });
    }
    serde_json::from_str(&body).map_err(|e| Error::OpenSearch {
        operation,
        message: format!("response is not json: {e}"),
    })
}

impl OpenSearchStore {
    /// Connects, installs the index template and creates the aggregates index.
    pub async fn connect(config: &OpenSearchStoreConfig) -> Result<Self, Error> {
        let url = url::Url::parse(&config.url)
            .map_err(|e| Error::StoreConfig(format!("store.url `{}`: {e}", config.url)))?;
        if config.index_prefix.is_empty()
            || !config
                .index_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(Error::StoreConfig(format!(
                "store.index_prefix `{}` must be lowercase letters, digits, `-` or `_`",
                config.index_prefix
            )));
        }
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url));
        match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                builder = builder.auth(Credentials::Basic(user.clone(), password.clone()))
            }
            (None, None) => {}
            _ => {
                return Err(Error::StoreConfig(
                    "store.username and store.password go together".to_owned(),
                ))
            }
        }
        let transport = builder
            .build()
            .map_err(|e| Error::StoreConfig(e.to_string()))?;
        let store = OpenSearchStore {
            client: OpenSearch::new(transport),
            index: format!("{}-aggregates", config.index_prefix),
            checkpoints: format!("{}-checkpoints", config.index_prefix),
            url: config.url.clone(),
        };
        store.install(&config.index_prefix).await?;
        Ok(store)
    }

    /// The aggregates index.
    pub fn index(&self) -> &str {
        &self.index
    }

    async fn install(&self, prefix: &str) -> Result<(), Error> {
        let template = json!({
            "index_patterns": [format!("{prefix}-aggregates*")],
            "template": {
                "settings": { "number_of_shards": 1 },
                "mappings": {
                    "dynamic": false,
                    "properties": {
                        "pipeline": { "type": "keyword" },
                        "window": { "type": "keyword" },
                        "window_start": { "type": "date", "format": "epoch_millis" },
                        "window_end": { "type": "date", "format": "epoch_millis" },
                        "dimension": { "type": "keyword" },
                        "value": { "type": "keyword" },
                        "inserts": { "type": "long" },
                        "modifies": { "type": "long" },
                        "removes": { "type": "long" },
                        "net_count": { "type": "long" },
                        "sums": { "type": "object", "enabled": false },
                        "version": { "type": "long" }
                    }
                }
            }
        });
        let response = self
            .client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(&format!(
                "{prefix}-aggregates"
            )))
            .body(template)
            .send()
            .await
            .map_err(os_err("put index template"))?;
        json_ok("put index template", response).await?;
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(&self.index))
            .send()
            .await
            .map_err(os_err("create index"))?;
        let status = response.status_code();
        let body = response.text().await.map_err(os_err("create index"))?;
        if !status.is_success() && !body.contains("resource_already_exists_exception") {
            return Err(Error::OpenSearch {
                operation: "create index",
                message: format!("status {status}: {body}"),
            });
        }
        tracing::info!(index = %self.index, url = %self.url, "opensearch store ready");
        Ok(())
    }

    async fn search_page(&self, body: Value) -> Result<Vec<Value>, Error> {
        let response = self
            .client
            .search(SearchParts::Index(&[&self.index]))
            .body(body)
            .send()
            .await
            .map_err(os_err("search"))?;
        if response.status_code() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let value = json_ok("search", response).await?;
        Ok(value["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl AggregateReader for OpenSearchStore {
    async fn query(&self, query: &AggQuery) -> Result<Vec<AggregateDoc>, streamlens_core::Error> {
        let mut filters = Vec::new();
        for (field, value) in [
            ("pipeline", &query.pipeline),
            ("window", &query.window),
            ("dimension", &query.dimension),
        ] {
            if let Some(v) = value {
                // A term query takes the value as data, never as query syntax.
                filters.push(json!({ "term": { field: v } }));
            }
        }
        let mut range = serde_json::Map::new();
        if let Some(from) = query.from {
            range.insert("gte".into(), json!(from));
        }
        if let Some(to) = query.to {
            range.insert("lt".into(), json!(to));
        }
        if !range.is_empty() {
            filters.push(json!({ "range": { "window_start": range } }));
        }
        let mut docs = Vec::new();
        let mut after: Option<Value> = None;
        loop {
            let mut body = json!({
                "size": PAGE,
                "query": { "bool": { "filter": filters } },
                "sort": [
                    { "window_start": "asc" }, { "dimension": "asc" }, { "value": "asc" },
                    { "pipeline": "asc" }, { "window": "asc" }
                ]
            });
            if let Some(after) = after.take() {
                body["search_after"] = after;
            }
            let hits = self.search_page(body).await?;
            for hit in &hits {
                let doc: AggregateDoc = serde_json::from_value(hit["_source"].clone())
                    .map_err(|e| streamlens_core::Error::Store(format!("bad document: {e}")))?;
                docs.push(doc);
            }
            if hits.len() < PAGE {
                break;
            }
            after = hits.last().map(|h| h["sort"].clone());
        }
        Ok(filter_docs(query, docs))
    }
}

#[async_trait::async_trait]
impl Store for OpenSearchStore {
    async fn write(
        &self,
        docs: &[AggregateDoc],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<(), Error> {
        let chunks: Vec<&[AggregateDoc]> = if docs.is_empty() {
            vec![&[]]
        } else {
            docs.chunks(2000).collect()
        };
        let last = chunks.len() - 1;
        for (n, chunk) in chunks.into_iter().enumerate() {
            let mut ops: Vec<BulkOperation<Value>> = Vec::with_capacity(chunk.len() + 1);
            for doc in chunk {
                let source = serde_json::to_value(doc).map_err(|e| Error::OpenSearch {
                    operation: "bulk",
                    message: e.to_string(),
                })?;
                ops.push(BulkOperation::index(source).id(doc.id()).into());
            }
            // The checkpoint goes last in the last request: a bulk request is applied in order,
            // so it is never ahead of the documents it covers (the two are not one transaction).
            if let (Some(checkpoint), true) = (checkpoint, n == last) {
                let source = serde_json::to_value(checkpoint).map_err(|e| Error::OpenSearch {
                    operation: "bulk",
                    message: e.to_string(),
                })?;
                ops.push(
                    BulkOperation::index(source)
                        .id(checkpoint.pipeline.clone())
                        .index(self.checkpoints.clone())
                        .into(),
                );
            }
            if ops.is_empty() {
                continue;
            }
            let response = self
                .client
                .bulk(BulkParts::Index(&self.index))
                .body(ops)
                .send()
                .await
                .map_err(os_err("bulk"))?;
            let result = json_ok("bulk", response).await?;
            if result["errors"].as_bool().unwrap_or(false) {
                let failures: Vec<String> = result["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|item| item["index"]["error"].as_object().map(|e| format!("{e:?}")))
                    .take(3)
                    .collect();
                return Err(Error::OpenSearch {
                    operation: "bulk",
                    message: format!("items failed: {}", failures.join("; ")),
                });
            }
        }
        Ok(())
    }

    async fn checkpoint(&self, pipeline: &str) -> Result<Option<StoredCheckpoint>, Error> {
        let response = self
            .client
            .get(opensearch::GetParts::IndexId(&self.checkpoints, pipeline))
            .send()
            .await
            .map_err(os_err("get checkpoint"))?;
        if response.status_code() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let value = json_ok("get checkpoint", response).await?;
        if value["found"] == json!(false) {
            return Ok(None);
        }
        serde_json::from_value(value["_source"].clone())
            .map(Some)
            .map_err(|e| Error::OpenSearch {
                operation: "get checkpoint",
                message: format!("bad checkpoint document: {e}"),
            })
    }

    async fn flush(&self) -> Result<(), Error> {
        let response = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[&self.index]))
            .send()
            .await
            .map_err(os_err("refresh"))?;
        json_ok("refresh", response).await.map(|_| ())
    }

    fn describe(&self) -> String {
        format!("opensearch:{}/{}", self.url, self.index)
    }
}
