//! The OpenSearch store.
//!
//! At start the store installs an index template for `<prefix>-aggregates*` (keywords for the
//! identifying fields and the worker, dates for window bounds, longs for counts and versions; the
//! exact sums and the previous values are kept unindexed) and creates the index, adding any field
//! missing from an index created by an older version. Writes are `_bulk` index operations under
//! the deterministic document id, so a rewritten window replaces its document; every item of
//! every bulk response is checked, and only then is the checkpoint written, on its own, to
//! `<prefix>-checkpoints`. Queries are bool filters sorted by window start, dimension, value,
//! pipeline, window and worker, paged with `search_after`; the partial documents of several
//! workers are merged after reading.
//!
//! Every document is written with its version as an *external* version, so OpenSearch itself
//! refuses a stale or repeated write (`409`, counted and otherwise ignored). Requests answered
//! `429`/`5xx` or lost on the way are sent again with backoff ([`super::retry`]) for up to the
//! configured `retry_for`, and so are the single items of a bulk request answered that way. An
//! item refused for itself (a mapping error) is returned to the caller to quarantine; the rest
//! proceed.

mod changes;

use opensearch::{
    auth::Credentials,
    http::{request::JsonBody, response::Response},
    http::{
        transport::{SingleNodeConnectionPool, Transport, TransportBuilder},
        StatusCode,
    },
    indices::{
        IndicesCreateParts, IndicesPutIndexTemplateParts, IndicesPutMappingParts,
        IndicesRefreshParts,
    },
    BulkParts, IndexParts, OpenSearch, SearchParts,
};
use serde_json::{json, Value};
use streamlens_core::{AggQuery, AggregateDoc, AggregateReader, ChangeDoc};

use super::{
    check_checkpoint, checkpoint_id, filter_docs,
    retry::{self, Backoff},
    undo, RejectedDoc, Store, StoredCheckpoint, Undo, Written,
};
use crate::{
    config::{OpenSearchAuth, OpenSearchStoreConfig},
    Error,
};

/// Hits per search page: OpenSearch's default `index.max_result_window`, so a day of 1-minute
/// windows of 20 groups (28,800 documents) is three requests.
const PAGE: usize = 10_000;

/// Documents per bulk request.
const BULK: usize = 2000;
/// Bytes per bulk request, at most (a request always holds at least one item).
const BULK_BYTES: usize = 5 << 20;

/// Fields added to the mapping since the first release: put on existing indices at start.
fn added_fields() -> Value {
    json!({
        "worker": { "type": "keyword" },
        "prev": { "type": "object", "enabled": false },
        "counts": { "type": "object", "enabled": false },
        "mins": { "type": "object", "enabled": false },
        "maxs": { "type": "object", "enabled": false },
        "distinct": { "type": "object", "enabled": false },
        "final": { "type": "boolean" }
    })
}

/// The order of query results; unique per document, so `search_after` pages never skip one.
fn sort_order() -> Value {
    json!([
        { "window_start": "asc" }, { "dimension": "asc" }, { "value": "asc" },
        { "pipeline": "asc" }, { "window": "asc" },
        { "worker": { "order": "asc", "missing": "_first", "unmapped_type": "keyword" } }
    ])
}

/// One operation of a bulk request: its action line and, for an index, its document.
#[derive(Debug, Clone)]
struct BulkItem {
    id: String,
    action: Value,
    source: Option<Value>,
}

impl BulkItem {
    /// Index `source` under `id` with an external version.
    fn index(id: String, version: u64, source: Value) -> Result<Self, Error> {
        Ok(BulkItem {
            action: json!({ "index": { "_id": id, "version": external(version)?, "version_type": "external" } }),
            id,
            source: Some(source),
        })
    }

    /// Index `source` under `id` in `index`, unversioned (a rewrite replaces it).
    fn plain(index: String, id: String, source: Value) -> Self {
        BulkItem {
            action: json!({ "index": { "_index": index, "_id": id } }),
            id,
            source: Some(source),
        }
    }

    /// Delete `id`, leaving a tombstone at an external version.
    fn delete(id: String, version: u64) -> Result<Self, Error> {
        Ok(BulkItem {
            action: json!({ "delete": { "_id": id, "version": external(version)?, "version_type": "external" } }),
            id,
            source: None,
        })
    }

    /// About its size in a request.
    fn bytes(&self) -> usize {
        self.action.to_string().len() + self.source.as_ref().map_or(0, |s| s.to_string().len())
    }
}

/// What the items of one bulk response say.
#[derive(Debug, Default)]
struct Sorted {
    /// Items to send again (answered `429`/`5xx`).
    again: Vec<BulkItem>,
    /// The last reason an item is sent again.
    again_why: String,
    /// Items refused for themselves.
    rejected: Vec<RejectedDoc>,
    /// Items refused as stale.
    stale: u64,
}

/// Sorts the items of a bulk response: done, stale, to send again, or refused.
fn sort_items(result: &Value, sent: Vec<BulkItem>) -> Result<Sorted, Error> {
    let fail = |message: String| Error::OpenSearch {
        operation: "bulk",
        message,
    };
    let items = result["items"]
        .as_array()
        .ok_or_else(|| fail("the response has no items".to_owned()))?;
    if items.len() != sent.len() {
        return Err(fail(format!(
            "{} operations sent, {} answered",
            sent.len(),
            items.len()
        )));
    }
    let mut sorted = Sorted::default();
    for (item, op) in items.iter().zip(sent) {
        let Some((kind, outcome)) = item.as_object().and_then(|o| o.iter().next()) else {
            return Err(fail(format!("unreadable item {item}")));
        };
        let status = outcome["status"].as_u64().unwrap_or(0) as u16;
        let done = (200..300).contains(&status) && outcome.get("error").is_none();
        let gone = kind == "delete" && status == 404;
        if done || gone {
            continue;
        }
        let error = &outcome["error"];
        let why = format!(
            "{kind} {}: status {status}: {}: {}",
            op.id,
            error["type"].as_str().unwrap_or("error"),
            error["reason"].as_str().unwrap_or("no reason given")
        );
        if status == 409 {
            sorted.stale += 1;
            metrics::counter!("streamlens_stale_writes_total").increment(1);
            tracing::debug!(id = %op.id, "stale write refused");
        } else if retry::retryable(status) {
            sorted.again_why = why;
            sorted.again.push(op);
        } else {
            sorted.rejected.push(RejectedDoc {
                id: op.id,
                reason: why,
                json: op.source.map(|s| s.to_string()).unwrap_or_default(),
            });
        }
    }
    Ok(sorted)
}

/// Cuts items into requests of at most [`BULK`] items and [`BULK_BYTES`] bytes.
fn requests(items: Vec<BulkItem>) -> Vec<Vec<BulkItem>> {
    let mut out: Vec<Vec<BulkItem>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = item.bytes();
        match out.last_mut() {
            Some(last) if last.len() < BULK && bytes + size <= BULK_BYTES => {
                bytes += size;
                last.push(item);
            }
            _ => {
                bytes = size;
                out.push(vec![item]);
            }
        }
    }
    out
}

/// The transport a config describes, and the cluster URL (looked up for a `domain`).
async fn transport(config: &OpenSearchStoreConfig) -> Result<(Transport, String), Error> {
    let bad = |message: String| Error::StoreConfig(message);
    if config.index_prefix.is_empty()
        || !config
            .index_prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(bad(format!(
            "store.index_prefix `{}` must be lowercase letters, digits, `-` or `_`",
            config.index_prefix
        )));
    }
    let auth = config.auth();
    let sdk = if config.domain.is_some() || auth == OpenSearchAuth::AwsSigv4 {
        Some(
            streamlens_ingest::aws::sdk_config(
                config.region.as_deref(),
                config.endpoint_url.as_deref(),
            )
            .await,
        )
    } else {
        None
    };
    let url = match (&config.domain, &sdk, config.url.is_empty()) {
        (Some(_), _, false) => {
            return Err(bad(
                "store.url and store.domain: give one (the domain's endpoint is looked up)"
                    .to_owned(),
            ))
        }
        (Some(domain), Some(sdk), true) => super::aws::domain_endpoint(sdk, domain).await?,
        (None, _, true) => return Err(bad("store.url (or store.domain) is required".to_owned())),
        _ => config.url.clone(),
    };
    let parsed = url::Url::parse(&url).map_err(|e| bad(format!("store.url `{url}`: {e}")))?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(parsed));
    match (auth, &config.username, &config.password) {
        (OpenSearchAuth::Basic, Some(user), Some(password)) => {
            builder = builder.auth(Credentials::Basic(user.clone(), password.clone()))
        }
        (OpenSearchAuth::Basic, _, _) => {
            return Err(bad(
                "store.auth = \"basic\" needs store.username and store.password".to_owned(),
            ))
        }
        (_, Some(_), _) | (_, _, Some(_)) => {
            return Err(bad(format!(
                "store.username and store.password are for basic auth, not {auth:?}"
            )))
        }
        (OpenSearchAuth::AwsSigv4, None, None) => {
            let sdk = sdk
                .as_ref()
                .ok_or_else(|| bad("no AWS configuration".to_owned()))?;
            let credentials = sdk.credentials_provider().ok_or_else(|| {
                bad("store.auth = \"aws_sigv4\": no AWS credentials found".to_owned())
            })?;
            let region = sdk.region().cloned().ok_or_else(|| {
                bad("store.auth = \"aws_sigv4\": no AWS region (set store.region)".to_owned())
            })?;
            builder = builder
                .auth(Credentials::AwsSigV4(credentials, region))
                .service_name("es");
        }
        (OpenSearchAuth::None, None, None) => {}
    }
    let transport = builder.build().map_err(|e| bad(e.to_string()))?;
    Ok((transport, url))
}

/// A document version as OpenSearch's external versions take it (a signed 64-bit number).
fn external(version: u64) -> Result<i64, Error> {
    i64::try_from(version).map_err(|_| Error::OpenSearch {
        operation: "bulk",
        message: format!("version {version} is beyond OpenSearch's external versions"),
    })
}

/// Aggregates in an OpenSearch index.
pub struct OpenSearchStore {
    client: OpenSearch,
    index: String,
    checkpoints: String,
    /// The change indices' name without the day: `<prefix>-changes`.
    changes: String,
    url: String,
    /// How long a request is retried for.
    retry_for: std::time::Duration,
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
        let (transport, url) = transport(config).await?;
        let store = OpenSearchStore {
            client: OpenSearch::new(transport),
            index: format!("{}-aggregates", config.index_prefix),
            checkpoints: format!("{}-checkpoints", config.index_prefix),
            changes: format!("{}-changes", config.index_prefix),
            url,
            retry_for: humantime::parse_duration(&config.retry_for).map_err(|e| {
                Error::StoreConfig(format!(
                    "store.retry_for `{}` is not a duration: {e}",
                    config.retry_for
                ))
            })?,
        };
        store.install(&config.index_prefix).await?;
        store.install_changes().await?;
        Ok(store)
    }

    /// The aggregates index.
    pub fn index(&self) -> &str {
        &self.index
    }

    /// Deletes every index of this store: aggregates, checkpoints and every day of changes (a
    /// replay namespace started afresh).
    pub async fn delete_all(&self) -> Result<(), Error> {
        let changes = self.changes_pattern();
        let response = self
            .send("delete indices", || async {
                self.client
                    .indices()
                    .delete(opensearch::indices::IndicesDeleteParts::Index(&[
                        &self.index,
                        &self.checkpoints,
                        &changes,
                    ]))
                    .ignore_unavailable(true)
                    .allow_no_indices(true)
                    .send()
                    .await
            })
            .await?;
        json_ok("delete indices", response).await.map(|_| ())
    }

    async fn install(&self, prefix: &str) -> Result<(), Error> {
        let mut properties = json!({
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
        });
        if let (Some(all), Value::Object(added)) = (properties.as_object_mut(), added_fields()) {
            all.extend(added);
        }
        let template = json!({
            "index_patterns": [format!("{prefix}-aggregates*")],
            "template": {
                "settings": { "number_of_shards": 1 },
                "mappings": { "dynamic": false, "properties": properties }
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
        // An index created before the template had these fields does not get them from it.
        let response = self
            .client
            .indices()
            .put_mapping(IndicesPutMappingParts::Index(&[&self.index]))
            .body(json!({ "properties": added_fields() }))
            .send()
            .await
            .map_err(os_err("put mapping"))?;
        json_ok("put mapping", response).await?;
        tracing::info!(index = %self.index, url = %self.url, "opensearch store ready");
        Ok(())
    }

    async fn search_page(&self, body: Value) -> Result<Vec<Value>, Error> {
        let response = self
            .send("search", || async {
                self.client
                    .search(SearchParts::Index(&[&self.index]))
                    .body(&body)
                    .send()
                    .await
            })
            .await?;
        if response.status_code() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let value = json_ok("search", response).await?;
        Ok(value["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Every hit of a bool query (`filter` and `must_not` clauses), in [`sort_order`].
    async fn search_all(&self, filter: &[Value], must_not: &[Value]) -> Result<Vec<Value>, Error> {
        self.search_all_of(filter, must_not, &[]).await
    }

    /// [`Self::search_all`] leaving the `excluded` fields out of the documents returned.
    async fn search_all_of(
        &self,
        filter: &[Value],
        must_not: &[Value],
        excluded: &[&str],
    ) -> Result<Vec<Value>, Error> {
        let mut all = Vec::new();
        let mut after: Option<Value> = None;
        loop {
            let mut body = json!({
                "size": PAGE,
                "query": { "bool": { "filter": filter, "must_not": must_not } },
                "sort": sort_order()
            });
            if !excluded.is_empty() {
                body["_source"] = json!({ "excludes": excluded });
            }
            if let Some(after) = after.take() {
                body["search_after"] = after;
            }
            let hits = self.search_page(body).await?;
            let full = hits.len() >= PAGE;
            after = hits.last().map(|h| h["sort"].clone());
            all.extend(hits);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Sends a request (built anew by `request` for every attempt) until it is answered with
    /// something other than `429`/`5xx`, retrying transport failures too, for up to
    /// `retry_for`.
    async fn send<F, Fut>(&self, operation: &'static str, request: F) -> Result<Response, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Response, opensearch::Error>>,
    {
        let mut backoff = Backoff::new(self.retry_for);
        loop {
            let failure = match request().await {
                Ok(response) if !retry::retryable(response.status_code().as_u16()) => {
                    return Ok(response)
                }
                Ok(response) => format!("status {}", response.status_code()),
                Err(e) => e.to_string(),
            };
            self.wait(operation, &failure, &mut backoff).await?;
        }
    }

    /// Waits before the next attempt, or gives up once `retry_for` is spent.
    async fn wait(
        &self,
        operation: &'static str,
        failure: &str,
        backoff: &mut Backoff,
    ) -> Result<(), Error> {
        metrics::counter!("streamlens_opensearch_retries_total", "operation" => operation)
            .increment(1);
        match backoff.next_wait() {
            Some(wait) => {
                tracing::warn!(
                    operation,
                    error = failure,
                    attempt = backoff.attempts(),
                    wait_ms = wait.as_millis() as u64,
                    "opensearch request failed, retrying"
                );
                tokio::time::sleep(wait).await;
                Ok(())
            }
            None => Err(Error::OpenSearch {
                operation,
                message: format!(
                    "gave up after {} attempts in {:.1} s (store.retry_for): {failure}",
                    backoff.attempts(),
                    backoff.elapsed().as_secs_f64()
                ),
            }),
        }
    }

    /// Sends bulk items on the aggregates index in requests of at most [`BULK`] items and
    /// [`BULK_BYTES`] bytes; items answered `429`/`5xx` are sent again alone.
    async fn bulk(&self, items: Vec<BulkItem>) -> Result<Written, Error> {
        let mut written = Written::default();
        for mut todo in requests(items) {
            let mut backoff = Backoff::new(self.retry_for);
            loop {
                let response = self
                    .send("bulk", || {
                        let mut lines: Vec<JsonBody<Value>> = Vec::with_capacity(2 * todo.len());
                        for item in &todo {
                            lines.push(item.action.clone().into());
                            if let Some(source) = &item.source {
                                lines.push(source.clone().into());
                            }
                        }
                        self.client
                            .bulk(BulkParts::Index(&self.index))
                            .body(lines)
                            .send()
                    })
                    .await?;
                let result = json_ok("bulk", response).await?;
                let sorted = sort_items(&result, todo)?;
                written.stale += sorted.stale;
                written.rejected.extend(sorted.rejected);
                if sorted.again.is_empty() {
                    break;
                }
                let why = format!("{} items: {}", sorted.again.len(), sorted.again_why);
                self.wait("bulk items", &why, &mut backoff).await?;
                todo = sorted.again;
            }
        }
        for rejected in &written.rejected {
            tracing::warn!(id = %rejected.id, reason = %rejected.reason, "opensearch refused a document");
        }
        Ok(written)
    }
}

/// The bool clauses selecting one worker's documents: `""` means documents without a worker.
fn worker_clauses(worker: &str, filter: &mut Vec<Value>, must_not: &mut Vec<Value>) {
    if worker.is_empty() {
        must_not.push(json!({ "exists": { "field": "worker" } }));
    } else {
        filter.push(json!({ "term": { "worker": worker } }));
    }
}

/// A `range` clause keeping `field` in `from..to` (either end open when `None`); `None` when
/// both are.
fn range_clause(field: &str, from: Option<i64>, to: Option<i64>) -> Option<Value> {
    let mut range = serde_json::Map::new();
    if let Some(from) = from {
        range.insert("gte".into(), json!(from));
    }
    if let Some(to) = to {
        range.insert("lt".into(), json!(to));
    }
    (!range.is_empty()).then(|| json!({ "range": { field: range } }))
}

/// The `filter` and `must_not` clauses of a bool query selecting the documents of `query`.
fn query_clauses(query: &AggQuery) -> (Vec<Value>, Vec<Value>) {
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
    filters.extend(range_clause("window_start", query.from, query.to));
    if let Some(values) = &query.values {
        // Values are data in a `terms` query, never query syntax.
        filters.push(json!({ "terms": { "value": values } }));
    }
    let mut must_not = Vec::new();
    if let Some(worker) = &query.worker {
        worker_clauses(worker, &mut filters, &mut must_not);
    }
    (filters, must_not)
}

#[async_trait::async_trait]
impl AggregateReader for OpenSearchStore {
    async fn query(&self, query: &AggQuery) -> Result<Vec<AggregateDoc>, streamlens_core::Error> {
        let (filters, must_not) = query_clauses(query);
        let excluded: &[&str] = if query.without_distinct {
            &["distinct", "prev"]
        } else {
            &[]
        };
        let docs = self
            .search_all_of(&filters, &must_not, excluded)
            .await?
            .into_iter()
            .map(|hit| {
                serde_json::from_value::<AggregateDoc>(hit["_source"].clone())
                    .map_err(|e| streamlens_core::Error::Store(format!("bad document: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(filter_docs(query, docs)?)
    }

    async fn earliest(&self, query: &AggQuery) -> Result<Option<i64>, streamlens_core::Error> {
        let (filters, must_not) = query_clauses(query);
        let body = json!({
            "size": 1,
            "query": { "bool": { "filter": filters, "must_not": must_not } },
            "sort": sort_order(),
            "_source": { "excludes": ["distinct", "prev"] }
        });
        let hits = self.search_page(body).await?;
        Ok(hits
            .first()
            .and_then(|hit| hit["_source"]["window_start"].as_i64()))
    }
}

#[async_trait::async_trait]
impl Store for OpenSearchStore {
    async fn write(
        &self,
        docs: &[AggregateDoc],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<Written, Error> {
        let items = docs
            .iter()
            .map(|doc| {
                let source = serde_json::to_value(doc).map_err(|e| Error::OpenSearch {
                    operation: "bulk",
                    message: e.to_string(),
                })?;
                BulkItem::index(doc.id(), doc.version, source)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let written = self.bulk(items).await?;
        // Only once every document is in (or refused): the checkpoint is never ahead of what it
        // covers.
        if let Some(checkpoint) = checkpoint {
            let id = checkpoint.id();
            let response = self
                .send("write checkpoint", || {
                    self.client
                        .index(IndexParts::IndexId(&self.checkpoints, &id))
                        .body(checkpoint)
                        .send()
                })
                .await?;
            json_ok("write checkpoint", response).await?;
        }
        Ok(written)
    }

    async fn checkpoint_of(
        &self,
        pipeline: &str,
        worker: &str,
    ) -> Result<Option<StoredCheckpoint>, Error> {
        let id = checkpoint_id(pipeline, worker);
        let response = self
            .send("get checkpoint", || {
                self.client
                    .get(opensearch::GetParts::IndexId(&self.checkpoints, &id))
                    .send()
            })
            .await?;
        if response.status_code() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let value = json_ok("get checkpoint", response).await?;
        if value["found"] == json!(false) {
            return Ok(None);
        }
        let checkpoint =
            serde_json::from_value(value["_source"].clone()).map_err(|e| Error::OpenSearch {
                operation: "get checkpoint",
                message: format!("bad checkpoint document: {e}"),
            })?;
        check_checkpoint(checkpoint, pipeline, worker).map(Some)
    }

    /// Plans every step before changing anything; if a bulk request then fails part-way, calling
    /// again finishes the job (documents already rolled back are committed versions).
    async fn roll_back(
        &self,
        pipeline: &str,
        worker: &str,
        committed_version: u64,
        stamp: u64,
    ) -> Result<u64, Error> {
        // Searches see only refreshed writes: make the last ones visible first.
        self.flush().await?;
        let mut filter = vec![
            json!({ "term": { "pipeline": pipeline } }),
            json!({ "range": { "version": { "gt": committed_version } } }),
        ];
        let mut must_not = Vec::new();
        worker_clauses(worker, &mut filter, &mut must_not);
        let bad = |message: String| Error::OpenSearch {
            operation: "roll back",
            message,
        };
        let mut items = Vec::new();
        for hit in self.search_all(&filter, &must_not).await? {
            let id = hit["_id"]
                .as_str()
                .ok_or_else(|| bad(format!("hit without an id: {hit}")))?
                .to_owned();
            let doc: AggregateDoc = serde_json::from_value(hit["_source"].clone())
                .map_err(|e| bad(format!("bad document {id}: {e}")))?;
            if doc.pipeline != pipeline || doc.worker != worker {
                continue;
            }
            match undo(&doc, committed_version, stamp)? {
                None => {}
                Some(Undo::Delete) => items.push(BulkItem::delete(id, stamp.max(doc.version + 1))?),
                Some(Undo::Restore(restored)) => {
                    let source =
                        serde_json::to_value(&*restored).map_err(|e| bad(e.to_string()))?;
                    items.push(BulkItem::index(id, restored.version, source)?);
                }
            }
        }
        let changed = items.len() as u64;
        if changed > 0 {
            let written = self.bulk(items).await?;
            if let Some(refused) = written.rejected.first() {
                return Err(bad(format!(
                    "{} documents could not be rolled back: {}",
                    written.rejected.len(),
                    refused.reason
                )));
            }
            self.flush().await?;
        }
        Ok(changed)
    }

    async fn write_changes(&self, changes: &[ChangeDoc]) -> Result<Written, Error> {
        self.write_changes_to(changes).await
    }

    async fn expire_changes(&self, before_ms: i64) -> Result<u64, Error> {
        self.expire_changes_before(before_ms).await
    }

    async fn flush(&self) -> Result<(), Error> {
        let changes = self.changes_pattern();
        let response = self
            .send("refresh", || async {
                self.client
                    .indices()
                    .refresh(IndicesRefreshParts::Index(&[&self.index, &changes]))
                    .send()
                    .await
            })
            .await?;
        json_ok("refresh", response).await.map(|_| ())
    }

    fn describe(&self) -> String {
        format!("opensearch:{}/{}", self.url, self.index)
    }
}
