//! The DynamoDB Streams source.
//!
//! The source resolves the stream (from a table name, through DescribeTable, or a given ARN),
//! lists its shards with DescribeStream and polls every readable shard with GetRecords:
//!
//! * a shard whose parent is still listed is read only after the parent has been read to its end,
//!   so each item's changes are delivered in order across a split;
//! * a shard that returned records is polled again at once, an empty one after `poll_interval`;
//! * shards are re-discovered every `discovery_interval`; a closed shard read to its end is retired.
//!
//! Each record is converted into a [`streamlens_core::ChangeEvent`] carrying its shard id; a record
//! that cannot be converted is quarantined and the shard moves on.

pub mod api;

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use aws_sdk_dynamodbstreams::{types::ShardIteratorType, Client};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    aws::sdk_config,
    config::{DynamoDbSourceConfig, StartPosition},
    Batch, Error, Quarantined, Source, SourceSummary,
};

/// Reads one DynamoDB stream.
pub struct DynamoDbSource {
    client: Client,
    stream_arn: String,
    config: DynamoDbSourceConfig,
}

/// Where the source is in one shard.
#[derive(Debug)]
struct ShardState {
    parent: Option<String>,
    /// `None` before the first iterator was taken; `Some(None)` once a closed shard is done.
    iterator: Option<Option<String>>,
    next_poll: Instant,
}

impl DynamoDbSource {
    /// Connects to the configured endpoint and resolves the stream.
    pub async fn connect(config: &DynamoDbSourceConfig) -> Result<Self, Error> {
        if !(1..=1000).contains(&config.max_records) {
            return Err(Error::Config(format!(
                "max_records must be between 1 and 1000, found {}",
                config.max_records
            )));
        }
        let sdk = sdk_config(config.region.as_deref(), config.endpoint_url.as_deref()).await;
        let stream_arn = match (&config.stream_arn, &config.table) {
            (Some(arn), _) => arn.clone(),
            (None, Some(table)) => {
                api::stream_of_table(&aws_sdk_dynamodb::Client::new(&sdk), table).await?
            }
            (None, None) => {
                return Err(Error::Config(
                    "a dynamodb source needs `table` or `stream_arn`".to_owned(),
                ))
            }
        };
        Ok(DynamoDbSource {
            client: Client::new(&sdk),
            stream_arn,
            config: config.clone(),
        })
    }

    /// The stream being read.
    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    async fn discover(
        &self,
        shards: &mut BTreeMap<String, ShardState>,
        retired: &HashSet<String>,
    ) -> Result<(), Error> {
        for shard in api::list_shards(&self.client, &self.stream_arn).await? {
            let Some(id) = shard.shard_id() else { continue };
            if retired.contains(id) || shards.contains_key(id) {
                continue;
            }
            tracing::info!(shard = id, parent = ?shard.parent_shard_id(), "shard discovered");
            shards.insert(
                id.to_owned(),
                ShardState {
                    parent: shard.parent_shard_id().map(str::to_owned),
                    iterator: None,
                    next_poll: Instant::now(),
                },
            );
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for DynamoDbSource {
    fn describe(&self) -> String {
        format!("dynamodb:{}", self.stream_arn)
    }

    async fn run(
        self: Box<Self>,
        out: mpsc::Sender<Batch>,
        shutdown: CancellationToken,
    ) -> Result<SourceSummary, Error> {
        let mut summary = SourceSummary::default();
        let mut shards: BTreeMap<String, ShardState> = BTreeMap::new();
        let mut retired: HashSet<String> = HashSet::new();
        let mut next_discovery = Instant::now();
        let mut last_record = Instant::now();
        let first_start = match self.config.start {
            StartPosition::TrimHorizon => ShardIteratorType::TrimHorizon,
            StartPosition::Latest => ShardIteratorType::Latest,
        };
        loop {
            if shutdown.is_cancelled() {
                return Ok(summary);
            }
            if Instant::now() >= next_discovery {
                self.discover(&mut shards, &retired).await?;
                next_discovery = Instant::now() + self.config.discovery_interval;
            }
            let now = Instant::now();
            let ready: Vec<String> = shards
                .iter()
                .filter(|(_, s)| s.next_poll <= now)
                // A child waits for its parent while the parent is still being read.
                .filter(|(_, s)| s.parent.as_ref().is_none_or(|p| !shards.contains_key(p)))
                .map(|(id, _)| id.clone())
                .collect();
            for id in ready {
                let state = shards.get_mut(&id).expect("listed above");
                let iterator = match state.iterator.take() {
                    Some(it) => it,
                    None => {
                        // A child of a shard we read to its end starts at its beginning.
                        let kind = if state.parent.as_ref().is_some_and(|p| retired.contains(p)) {
                            ShardIteratorType::TrimHorizon
                        } else {
                            first_start.clone()
                        };
                        api::shard_iterator(&self.client, &self.stream_arn, &id, kind, None).await?
                    }
                };
                let Some(iterator) = iterator else {
                    tracing::info!(shard = %id, "shard read to its end, retired");
                    shards.remove(&id);
                    retired.insert(id);
                    continue;
                };
                let (records, next) =
                    api::get_records(&self.client, &iterator, self.config.max_records).await?;
                let state = shards.get_mut(&id).expect("listed above");
                state.iterator = Some(next);
                state.next_poll = if records.is_empty() {
                    Instant::now() + self.config.poll_interval
                } else {
                    Instant::now()
                };
                if records.is_empty() {
                    continue;
                }
                last_record = Instant::now();
                let mut batch = Batch::default();
                for record in &records {
                    match api::convert_record(record, &id) {
                        Ok(event) => batch.events.push(event),
                        Err(reason) => batch.quarantined.push(Quarantined {
                            origin: format!(
                                "shard {id} seq {}",
                                record
                                    .dynamodb()
                                    .and_then(|d| d.sequence_number())
                                    .unwrap_or("?")
                            ),
                            reason,
                            raw: format!("{record:?}"),
                        }),
                    }
                }
                summary.events += batch.events.len() as u64;
                summary.quarantined += batch.quarantined.len() as u64;
                metrics::counter!("streamlens_source_records_total", "shard" => id.clone())
                    .increment(records.len() as u64);
                out.send(batch).await.map_err(|_| Error::DownstreamClosed)?;
            }
            if let Some(idle) = self.config.stop_when_idle {
                if last_record.elapsed() >= idle {
                    tracing::info!(idle = ?idle, "no new records, source stops");
                    return Ok(summary);
                }
            }
            let wake = shards
                .values()
                .map(|s| s.next_poll)
                .min()
                .unwrap_or(next_discovery)
                .min(next_discovery);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(summary),
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            if shards.is_empty() && Instant::now() < next_discovery {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
