//! Reads one shard, from a start position to its end (or for ever while it is open).

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use aws_sdk_dynamodbstreams::{types::ShardIteratorType, Client};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::api::{self, ApiError};
use crate::{config::DynamoDbSourceConfig, now_ms, Batch, Error, Gap, Quarantined};

/// Where a shard consumer starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardStart {
    /// The oldest record kept.
    TrimHorizon,
    /// After the newest record.
    Latest,
    /// At a record.
    At(String),
    /// After a record (a checkpoint).
    After(String),
}

/// How a shard consumer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardEnd {
    /// The shard is closed and every record was read.
    Finished,
    /// Shutdown was requested.
    Cancelled,
}

/// Counters a consumer keeps, shared with the source for health reporting.
#[derive(Debug, Default)]
pub struct ShardHealth {
    /// Records decoded and sent downstream.
    pub events: std::sync::atomic::AtomicU64,
    /// Records quarantined.
    pub quarantined: std::sync::atomic::AtomicU64,
    /// Failed calls (retried or not).
    pub errors: std::sync::atomic::AtomicU64,
    /// Gaps: times the shard's records were trimmed before they were read.
    pub gaps: std::sync::atomic::AtomicU64,
    /// Creation time (epoch ms) of the last record read.
    pub last_record_ms: AtomicI64,
    /// Sequence number of the last record read.
    pub position: std::sync::Mutex<Option<String>>,
    /// The last GetRecords succeeded with no records: the reader has caught up with the shard.
    pub caught_up: std::sync::atomic::AtomicBool,
    /// A consumer is reading the shard (set by the source around the consumer's task).
    pub reading: std::sync::atomic::AtomicBool,
    /// The most recent gap.
    pub last_gap: std::sync::Mutex<Option<crate::GapNote>>,
    /// (wall-clock ms, events) at the previous health snapshot, and the rate measured then.
    pub rate: std::sync::Mutex<RateSample>,
}

/// The last measurement of a shard's records per second.
#[derive(Debug, Default)]
pub struct RateSample {
    at_ms: i64,
    events: u64,
    per_s: Option<f64>,
}

impl RateSample {
    /// The rate since the previous sample when at least a second has passed (then this becomes
    /// the new sample), else the previous rate.
    pub fn update(&mut self, now_ms: i64, events: u64) -> Option<f64> {
        if self.at_ms == 0 {
            (self.at_ms, self.events) = (now_ms, events);
        } else if now_ms - self.at_ms >= 1_000 {
            let elapsed = (now_ms - self.at_ms) as f64 / 1_000.0;
            self.per_s = Some(events.saturating_sub(self.events) as f64 / elapsed);
            (self.at_ms, self.events) = (now_ms, events);
        }
        self.per_s
    }
}

/// One shard's read loop.
pub struct ShardConsumer {
    pub(crate) client: Client,
    pub(crate) stream_arn: String,
    pub(crate) shard_id: String,
    pub(crate) start: ShardStart,
    pub(crate) config: Arc<DynamoDbSourceConfig>,
    pub(crate) out: mpsc::Sender<Batch>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) health: Arc<ShardHealth>,
    /// Wall-clock ms of the last record any shard read (for `stop_when_idle`).
    pub(crate) last_activity: Arc<AtomicI64>,
}

/// Exponential backoff with full jitter, from 50ms up to a cap.
struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let ceiling = Duration::from_millis(50)
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.max);
        self.attempt += 1;
        let millis = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl ShardConsumer {
    /// Reads until the shard ends or shutdown; a non-retryable failure is returned.
    pub async fn run(mut self) -> Result<ShardEnd, Error> {
        let shard = self.shard_id.clone();
        let mut last_read: Option<String> = match &self.start {
            ShardStart::After(seq) => Some(seq.clone()),
            _ => None,
        };
        let mut iterator: Option<String> = None;
        let mut backoff = Backoff {
            attempt: 0,
            max: self.config.max_backoff,
        };
        let poll = self.config.poll_interval.min(Duration::from_secs(1));
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(ShardEnd::Cancelled);
            }
            let current = match iterator.take() {
                Some(it) => it,
                None => match self.acquire(last_read.as_deref()).await {
                    Ok(Some(it)) => {
                        backoff.reset();
                        it
                    }
                    Ok(None) => return Ok(ShardEnd::Finished),
                    Err(e) => {
                        if let Some(end) = self.handle(e, &mut last_read, &mut backoff).await? {
                            return Ok(end);
                        }
                        continue;
                    }
                },
            };
            match api::get_records(&self.client, &current, self.config.max_records).await {
                Ok((records, next)) => {
                    backoff.reset();
                    self.health
                        .caught_up
                        .store(records.is_empty() || next.is_none(), Ordering::Relaxed);
                    if !records.is_empty() {
                        self.deliver(&records, &mut last_read).await?;
                    }
                    let Some(next) = next else {
                        tracing::info!(shard = %shard, "shard closed and read to its end");
                        return Ok(ShardEnd::Finished);
                    };
                    iterator = Some(next);
                    if records.is_empty() && !self.sleep(poll).await {
                        return Ok(ShardEnd::Cancelled);
                    }
                }
                Err(e) => {
                    // The iterator may still be good after a throttle; after anything else a fresh
                    // one is taken from the last record read.
                    if e.is_retryable() {
                        iterator = Some(current);
                    }
                    if let Some(end) = self.handle(e, &mut last_read, &mut backoff).await? {
                        return Ok(end);
                    }
                }
            }
        }
    }

    /// An iterator at the current position.
    async fn acquire(&self, last_read: Option<&str>) -> Result<Option<String>, ApiError> {
        let (kind, seq) = match (last_read, &self.start) {
            (Some(seq), _) => (ShardIteratorType::AfterSequenceNumber, Some(seq)),
            (None, ShardStart::TrimHorizon | ShardStart::After(_)) => {
                (ShardIteratorType::TrimHorizon, None)
            }
            (None, ShardStart::Latest) => (ShardIteratorType::Latest, None),
            (None, ShardStart::At(seq)) => {
                (ShardIteratorType::AtSequenceNumber, Some(seq.as_str()))
            }
        };
        api::shard_iterator(&self.client, &self.stream_arn, &self.shard_id, kind, seq).await
    }

    /// Deals with a failed call: `Ok(None)` to go on, `Ok(Some(end))` to stop, `Err` to fail.
    async fn handle(
        &mut self,
        error: ApiError,
        last_read: &mut Option<String>,
        backoff: &mut Backoff,
    ) -> Result<Option<ShardEnd>, Error> {
        let shard = self.shard_id.clone();
        self.health.errors.fetch_add(1, Ordering::Relaxed);
        self.health.caught_up.store(false, Ordering::Relaxed);
        let kind = match &error {
            ApiError::Throttled(_) => "throttled",
            ApiError::Transient(_) => "transient",
            ApiError::ExpiredIterator => "expired_iterator",
            ApiError::TrimmedData(_) => "trimmed_data",
            ApiError::NotFound(_) => "not_found",
            ApiError::Fatal(_) => "fatal",
        };
        metrics::counter!("streamlens_shard_errors_total", "shard" => shard.clone(), "kind" => kind)
            .increment(1);
        match error {
            e if e.is_retryable() => {
                let wait = backoff.next();
                tracing::warn!(shard = %shard, error = %e, wait_ms = wait.as_millis() as u64, "backing off");
                if !self.sleep(wait).await {
                    return Ok(Some(ShardEnd::Cancelled));
                }
                Ok(None)
            }
            ApiError::ExpiredIterator => {
                tracing::info!(shard = %shard, after = ?last_read, "iterator expired, taking a new one");
                Ok(None)
            }
            ApiError::TrimmedData(reason) => {
                tracing::error!(shard = %shard, after = ?last_read, %reason, "records were trimmed before they were read: gap recorded, continuing from trim horizon");
                metrics::counter!("streamlens_gaps_total", "shard" => shard.clone()).increment(1);
                self.health.gaps.fetch_add(1, Ordering::Relaxed);
                *self
                    .health
                    .last_gap
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(crate::GapNote {
                    after: last_read.clone(),
                    at_ms: now_ms(),
                    reason: reason.clone(),
                });
                let gap = Gap {
                    shard_id: shard,
                    after: last_read.take(),
                    reason,
                };
                self.start = ShardStart::TrimHorizon;
                self.out
                    .send(Batch {
                        gaps: vec![gap],
                        stream: Some(self.stream_arn.clone()),
                        ..Batch::default()
                    })
                    .await
                    .map_err(|_| Error::DownstreamClosed)?;
                Ok(None)
            }
            ApiError::NotFound(m) => Err(Error::StreamUnavailable(format!(
                "shard {} of {}: {m}",
                self.shard_id, self.stream_arn
            ))),
            other => Err(other.into()),
        }
    }

    async fn deliver(
        &mut self,
        records: &[aws_sdk_dynamodbstreams::types::Record],
        last_read: &mut Option<String>,
    ) -> Result<(), Error> {
        let shard = &self.shard_id;
        let mut batch = Batch {
            stream: Some(self.stream_arn.clone()),
            ..Batch::default()
        };
        for record in records {
            let seq = record.dynamodb().and_then(|d| d.sequence_number());
            match api::convert_record(record, shard) {
                Ok(event) => batch.events.push(event),
                Err(reason) => batch.quarantined.push(Quarantined {
                    origin: format!("shard {shard} seq {}", seq.unwrap_or("?")),
                    reason,
                    raw: format!("{record:?}"),
                }),
            }
            if let Some(seq) = seq {
                *last_read = Some(seq.to_owned());
            }
        }
        if let Some(seq) = last_read.as_ref() {
            batch.positions.insert(shard.clone(), seq.clone());
            *self
                .health
                .position
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(seq.clone());
        }
        if let Some(last) = batch.events.last() {
            self.health
                .last_record_ms
                .store(last.event_time_ms, Ordering::Relaxed);
            metrics::gauge!("streamlens_shard_ms_behind", "shard" => shard.clone())
                .set((now_ms() - last.event_time_ms).max(0) as f64);
        }
        self.health
            .events
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        self.health
            .quarantined
            .fetch_add(batch.quarantined.len() as u64, Ordering::Relaxed);
        self.last_activity.store(now_ms(), Ordering::Relaxed);
        metrics::counter!("streamlens_shard_records_total", "shard" => shard.clone())
            .increment(records.len() as u64);
        self.out
            .send(batch)
            .await
            .map_err(|_| Error::DownstreamClosed)
    }

    /// Sleeps unless shutdown comes first; false when it did.
    async fn sleep(&self, wait: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateSample;

    #[test]
    fn the_rate_is_measured_over_at_least_a_second() {
        let mut rate = RateSample::default();
        assert_eq!(rate.update(10_000, 5), None);
        // too soon: no new measurement
        assert_eq!(rate.update(10_400, 50), None);
        assert_eq!(rate.update(12_000, 45), Some(20.0));
        assert_eq!(rate.update(12_500, 1_000), Some(20.0));
        assert_eq!(rate.update(14_000, 45), Some(0.0));
    }
}
