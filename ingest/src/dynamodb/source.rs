//! Discovery, lineage and the shard consumers' lifecycle.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use aws_sdk_dynamodbstreams::Client;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    api::{self, cmp_sequence, ApiError},
    lease::{later, Balancer, Leases},
    shard_consumer::{ShardConsumer, ShardEnd, ShardHealth, ShardStart},
};
use crate::{
    aws::sdk_config,
    config::{DynamoDbSourceConfig, StartPosition},
    now_ms, Batch, Checkpoint, Error, Gap, HealthHandle, Recovery, ShardStatus, Source,
    SourceSummary,
};

/// Reads one DynamoDB stream, one task per shard.
pub struct DynamoDbSource {
    client: Client,
    table_client: Option<aws_sdk_dynamodb::Client>,
    stream_arn: String,
    config: Arc<DynamoDbSourceConfig>,
    checkpoint: Checkpoint,
    health: HealthHandle,
    /// The table's stream was replaced while running: the new one is read from its beginning.
    replaced: bool,
    /// Shared with other processes through the lease table.
    leases: Option<Arc<Leases>>,
    recovery: Option<Arc<dyn Recovery>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
}

#[derive(Debug)]
struct KnownShard {
    parent: Option<String>,
    first: Option<String>,
    last: Option<String>,
    state: State,
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
        let table_client = config
            .table
            .as_ref()
            .map(|_| aws_sdk_dynamodb::Client::new(&sdk));
        let stream_arn = match (&config.stream_arn, &config.table, &table_client) {
            (Some(arn), _, _) => arn.clone(),
            (None, Some(table), Some(client)) => api::stream_of_table(client, table).await?,
            _ => {
                return Err(Error::Config(
                    "a dynamodb source needs `table` or `stream_arn`".to_owned(),
                ))
            }
        };
        Ok(DynamoDbSource {
            client: Client::new(&sdk),
            table_client,
            stream_arn,
            config: Arc::new(config.clone()),
            checkpoint: Checkpoint::new(),
            health: HealthHandle::default(),
            replaced: false,
            leases: None,
            recovery: None,
        })
    }

    /// Resumes in the stream the checkpoint belongs to. When the table has moved on to a new
    /// stream since, the rest of the old one (readable for 24 hours) is read first, then the new
    /// one from its beginning; if the old one is gone, its unread rest is recorded as a gap.
    pub fn in_stream(mut self, stream: Option<String>) -> Self {
        if let Some(stream) = stream {
            if stream != self.stream_arn && !self.checkpoint.is_empty() {
                tracing::info!(
                    checkpoint_stream = %stream,
                    latest = %self.stream_arn,
                    "resuming in the stream of the checkpoint"
                );
                self.stream_arn = stream;
            }
        }
        self
    }

    /// Shares the stream with other processes through the `[source.lease]` table: registers this
    /// worker; shards are then read only while this worker holds their lease.
    pub async fn with_leases(
        mut self,
        group: &str,
        recovery: Arc<dyn Recovery>,
    ) -> Result<Self, Error> {
        let Some(config) = self.config.lease.clone() else {
            return Ok(self);
        };
        let sdk = sdk_config(
            self.config.region.as_deref(),
            config
                .endpoint_url
                .as_deref()
                .or(self.config.endpoint_url.as_deref()),
        )
        .await;
        let worker = config.worker.clone().unwrap_or_else(default_worker);
        let group = config.group.clone().unwrap_or_else(|| group.to_owned());
        let leases = Leases::register(
            &config,
            aws_sdk_dynamodb::Client::new(&sdk),
            &group,
            &worker,
        )
        .await?;
        self.leases = Some(Arc::new(leases));
        self.recovery = Some(recovery);
        Ok(self)
    }

    /// Resumes after these positions (shard → last sequence number stored).
    pub fn resume_from(mut self, checkpoint: Checkpoint) -> Self {
        self.checkpoint = checkpoint;
        self
    }

    /// The stream being read.
    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// Where a shard starts: its checkpoint, the beginning for a child of a shard we read or a shard
    /// new since the checkpoint, else the configured start.
    fn start_of(
        &self,
        id: &str,
        shard: &KnownShard,
        shards: &BTreeMap<String, KnownShard>,
    ) -> Option<ShardStart> {
        if let Some(seq) = self.checkpoint.get(id) {
            return Some(ShardStart::After(seq.clone()));
        }
        if self.replaced {
            return Some(ShardStart::TrimHorizon);
        }
        if shard
            .parent
            .as_ref()
            .is_some_and(|p| shards.contains_key(p))
            || (!self.checkpoint.is_empty() && self.leases.is_none())
        {
            return Some(ShardStart::TrimHorizon);
        }
        let (seq, at) = match &self.config.start {
            StartPosition::TrimHorizon => return Some(ShardStart::TrimHorizon),
            StartPosition::Latest => return Some(ShardStart::Latest),
            StartPosition::AtSequenceNumber(seq) => (seq, true),
            StartPosition::AfterSequenceNumber(seq) => (seq, false),
        };
        if shard
            .last
            .as_ref()
            .is_some_and(|last| cmp_sequence(last, seq).is_lt())
        {
            return None; // the shard ended before the start: nothing to read
        }
        if shard
            .first
            .as_ref()
            .is_none_or(|first| cmp_sequence(first, seq).is_le())
        {
            return Some(if at {
                ShardStart::At(seq.clone())
            } else {
                ShardStart::After(seq.clone())
            });
        }
        Some(ShardStart::TrimHorizon)
    }

    async fn discover(&self, shards: &mut BTreeMap<String, KnownShard>) -> Result<bool, ApiError> {
        let (listed, enabled) = api::describe_stream(&self.client, &self.stream_arn).await?;
        for shard in listed {
            let Some(id) = shard.shard_id() else { continue };
            let range = shard.sequence_number_range();
            let last = range
                .and_then(|r| r.ending_sequence_number())
                .map(str::to_owned);
            match shards.get_mut(id) {
                Some(known) => known.last = last,
                None => {
                    tracing::info!(shard = id, parent = ?shard.parent_shard_id(), "shard discovered");
                    shards.insert(
                        id.to_owned(),
                        KnownShard {
                            parent: shard.parent_shard_id().map(str::to_owned),
                            first: range
                                .and_then(|r| r.starting_sequence_number())
                                .map(str::to_owned),
                            last,
                            state: State::Waiting,
                        },
                    );
                }
            }
        }
        Ok(enabled)
    }
}

/// What the source has read so far, summed over its shards.
fn summarize(health: &HealthHandle) -> SourceSummary {
    let shards = health.shards.lock().unwrap_or_else(|e| e.into_inner());
    shards.values().fold(SourceSummary::default(), |mut s, h| {
        s.events += h.events.load(Ordering::Relaxed);
        s.quarantined += h.quarantined.load(Ordering::Relaxed);
        s
    })
}

#[async_trait::async_trait]
impl Source for DynamoDbSource {
    fn describe(&self) -> String {
        format!("dynamodb:{}", self.stream_arn)
    }

    fn health(&self) -> Option<HealthHandle> {
        Some(self.health.clone())
    }

    fn leases(&self) -> Option<Arc<Leases>> {
        self.leases.clone()
    }

    async fn run(
        mut self: Box<Self>,
        out: mpsc::Sender<Batch>,
        shutdown: CancellationToken,
    ) -> Result<SourceSummary, Error> {
        let consumers_stop = shutdown.child_token();
        let last_activity = Arc::new(AtomicI64::new(now_ms()));
        let mut shards: BTreeMap<String, KnownShard> = BTreeMap::new();
        let mut tasks: JoinSet<(String, Result<ShardEnd, Error>)> = JoinSet::new();
        let mut next_discovery = Instant::now();
        let mut enabled = true;
        let mut next_table_check = Instant::now();
        let mut balancer = self
            .leases
            .clone()
            .zip(self.recovery.clone())
            .map(|(leases, recovery)| Balancer::new(leases, recovery));
        let renew = self
            .config
            .lease
            .as_ref()
            .map_or(Duration::from_secs(1), |l| l.renew_every());
        let mut next_round = Instant::now();
        // Per-shard stop switches (to hand a shard over), where each owned shard started, and
        // shards waiting for their last records to be committed before their lease is freed
        // (true: read to its end).
        let mut stops: HashMap<String, CancellationToken> = HashMap::new();
        let mut starts: HashMap<String, Option<String>> = HashMap::new();
        let mut handing: BTreeMap<String, bool> = BTreeMap::new();
        let result = loop {
            if Instant::now() >= next_discovery {
                next_discovery = Instant::now() + self.config.discovery_interval;
                match self.discover(&mut shards).await {
                    Ok(e) => enabled = e,
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, "shard discovery failed, retrying later")
                    }
                    Err(ApiError::NotFound(m))
                        if self.table_client.is_some() && tasks.is_empty() =>
                    {
                        tracing::warn!(reason = %m, "stream gone, looking for the table's current stream");
                        if shards.is_empty() && !self.checkpoint.is_empty() {
                            // Resumed in a stream that no longer exists: what was left of it is lost.
                            let gaps = self
                                .checkpoint
                                .iter()
                                .map(|(shard, seq)| Gap {
                                    shard_id: shard.clone(),
                                    after: Some(seq.clone()),
                                    reason: format!(
                                        "stream {} is gone before it was read to its end: {m}",
                                        self.stream_arn
                                    ),
                                })
                                .collect();
                            metrics::counter!("streamlens_gaps_total", "shard" => "stream")
                                .increment(1);
                            if out
                                .send(Batch {
                                    gaps,
                                    stream: Some(self.stream_arn.clone()),
                                    ..Batch::default()
                                })
                                .await
                                .is_err()
                            {
                                break Err(Error::DownstreamClosed);
                            }
                            self.checkpoint.clear();
                        }
                        enabled = false;
                    }
                    Err(e) => break Err(e.into()),
                }
            }
            if let Some(balancer) = balancer.as_mut() {
                if Instant::now() >= next_round {
                    next_round = Instant::now() + renew;
                    let discovered = shards
                        .iter()
                        .map(|(id, s)| (id.clone(), s.parent.clone()))
                        .collect();
                    let busy: BTreeSet<String> = handing.keys().cloned().collect();
                    match balancer.round(&discovered, &busy).await {
                        Ok(plan) => {
                            for (shard, position) in plan.acquired {
                                match &position {
                                    Some(p) => self.checkpoint.insert(shard.clone(), p.clone()),
                                    None => self.checkpoint.remove(&shard),
                                };
                                if let Some(known) = shards.get_mut(&shard) {
                                    if known.state == State::Done {
                                        known.state = State::Waiting;
                                    }
                                }
                                starts.insert(shard, position);
                            }
                            for shard in plan.release {
                                tracing::info!(shard = %shard, "handing the shard over");
                                if let Some(stop) = stops.get(&shard) {
                                    stop.cancel();
                                }
                                handing.insert(shard, false);
                            }
                            for shard in plan.lost {
                                tracing::warn!(shard = %shard, "lease lost to another worker");
                                if let Some(stop) = stops.remove(&shard) {
                                    stop.cancel();
                                }
                                starts.remove(&shard);
                            }
                        }
                        Err(e @ Error::Fenced(_)) => break Err(e),
                        Err(e) => tracing::warn!(error = %e, "lease round failed, retrying"),
                    }
                }
                // Free the leases of stopped shards whose records are all committed.
                let committed = balancer.leases().committed();
                let mut freed = Vec::new();
                for (shard, finished) in &handing {
                    if shards.get(shard).is_some_and(|s| s.state == State::Running) {
                        continue;
                    }
                    let sent = self
                        .health
                        .shards
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(shard)
                        .and_then(|h| h.position.lock().unwrap_or_else(|e| e.into_inner()).clone());
                    let stored = committed.get(shard).cloned();
                    if sent.is_some() && later(stored.clone(), sent.clone()) != stored {
                        continue; // its last records are not stored yet
                    }
                    let at = later(stored, starts.get(shard).cloned().flatten());
                    match balancer
                        .leases()
                        .release(shard, at.as_deref(), *finished)
                        .await
                    {
                        Ok(()) => {
                            tracing::info!(shard = %shard, at = ?at, finished, "lease freed");
                            freed.push(shard.clone());
                        }
                        Err(e @ Error::Fenced(_)) => {
                            consumers_stop.cancel();
                            return Err(e);
                        }
                        Err(e) => {
                            tracing::warn!(shard = %shard, error = %e, "freeing a lease failed, retrying")
                        }
                    }
                }
                for shard in freed {
                    handing.remove(&shard);
                    balancer.owned.remove(&shard);
                    starts.remove(&shard);
                    stops.remove(&shard);
                    self.checkpoint.remove(&shard);
                }
            }
            // Start every shard whose parent is done or gone (with leases: every shard we hold;
            // the lease loop takes a child only once its parent is finished).
            let ready: Vec<String> = shards
                .iter()
                .filter(|(_, s)| s.state == State::Waiting)
                .filter(|(id, s)| match &balancer {
                    Some(b) => b.owned.contains(*id) && !handing.contains_key(*id),
                    None => s
                        .parent
                        .as_ref()
                        .and_then(|p| shards.get(p))
                        .is_none_or(|p| p.state == State::Done),
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in ready {
                let start = self.start_of(&id, &shards[&id], &shards);
                let shard = shards.get_mut(&id).expect("listed above");
                let Some(start) = start else {
                    shard.state = State::Done;
                    if balancer.is_some() {
                        handing.insert(id, true);
                    }
                    continue;
                };
                shard.state = State::Running;
                let health = Arc::new(ShardHealth::default());
                health.reading.store(true, Ordering::Relaxed);
                self.health
                    .shards
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), health.clone());
                tracing::info!(shard = %id, start = ?start, "reading shard");
                let consumer = ShardConsumer {
                    client: self.client.clone(),
                    stream_arn: self.stream_arn.clone(),
                    shard_id: id.clone(),
                    start,
                    config: self.config.clone(),
                    out: out.clone(),
                    shutdown: {
                        let stop = consumers_stop.child_token();
                        stops.insert(id.clone(), stop.clone());
                        stop
                    },
                    health,
                    last_activity: last_activity.clone(),
                };
                tasks.spawn(async move {
                    let health = consumer.health.clone();
                    let end = consumer.run().await;
                    health.reading.store(false, Ordering::Relaxed);
                    (id, end)
                });
            }
            // A disabled stream whose shards are all read: follow the table to its new stream.
            if !enabled
                && shards.values().all(|s| s.state == State::Done)
                && Instant::now() >= next_table_check
            {
                next_table_check = Instant::now() + self.config.discovery_interval;
                let Some(client) = &self.table_client else {
                    tracing::info!(stream = %self.stream_arn, "stream disabled and read to its end");
                    break Ok(());
                };
                let table = self.config.table.clone().unwrap_or_default();
                match api::stream_of_table(client, &table).await {
                    Ok(arn) if arn != self.stream_arn => {
                        tracing::info!(old = %self.stream_arn, new = %arn, "table has a new stream");
                        self.stream_arn = arn;
                        self.checkpoint.clear();
                        self.replaced = true;
                        shards.clear();
                        enabled = true;
                        next_discovery = Instant::now();
                        continue;
                    }
                    Ok(_) => {}
                    Err(Error::StreamUnavailable(m)) if m.contains("does not exist") => {
                        break Err(Error::StreamUnavailable(m))
                    }
                    Err(e) => tracing::warn!(error = %e, "waiting for the table's stream"),
                }
            }
            if let Some(idle) = self.config.stop_when_idle {
                let caught_up = {
                    let health = self.health.shards.lock().unwrap_or_else(|e| e.into_inner());
                    shards
                        .iter()
                        .filter(|(_, s)| s.state == State::Running)
                        .all(|(id, _)| {
                            health
                                .get(id)
                                .is_some_and(|h| h.caught_up.load(Ordering::Relaxed))
                        })
                };
                if caught_up
                    && now_ms() - last_activity.load(Ordering::Relaxed) >= idle.as_millis() as i64
                {
                    tracing::info!(idle = ?idle, "no new records, source stops");
                    break Ok(());
                }
            }
            let mut tick = next_discovery.min(Instant::now() + Duration::from_millis(200));
            if balancer.is_some() {
                tick = tick.min(next_round);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                Some(joined) = tasks.join_next() => match joined {
                    Ok((id, Ok(ShardEnd::Finished))) => {
                        if let Some(s) = shards.get_mut(&id) {
                            s.state = State::Done;
                        }
                        if balancer.is_some() {
                            handing.insert(id, true);
                        }
                        // Children may be listed already: look at once.
                        next_discovery = Instant::now();
                    }
                    Ok((id, Ok(ShardEnd::Cancelled))) => {
                        if let Some(s) = shards.get_mut(&id) {
                            s.state = State::Waiting;
                        }
                    }
                    Ok((id, Err(e))) => {
                        tracing::error!(shard = %id, error = %e, "shard consumer failed");
                        break Err(e);
                    }
                    Err(e) => break Err(Error::Config(format!("shard task panicked: {e}"))),
                },
                _ = tokio::time::sleep_until(tick.into()) => {}
            }
        };
        consumers_stop.cancel();
        while tasks.join_next().await.is_some() {}
        result.map(|()| summarize(&self.health))
    }
}

impl HealthHandle {
    /// Per-shard status, for `/api/health` and the dashboard.
    pub fn snapshot(&self) -> Vec<ShardStatus> {
        let now = now_ms();
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        shards
            .iter()
            .map(|(id, h)| {
                let last = h.last_record_ms.load(Ordering::Relaxed);
                let caught_up = h.caught_up.load(Ordering::Relaxed);
                let events = h.events.load(Ordering::Relaxed);
                ShardStatus {
                    shard_id: id.clone(),
                    position: h.position.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                    events,
                    quarantined: h.quarantined.load(Ordering::Relaxed),
                    errors: h.errors.load(Ordering::Relaxed),
                    gaps: h.gaps.load(Ordering::Relaxed),
                    last_record_ms: (last > 0).then_some(last),
                    // Caught up means nothing newer to read: no lag, however old the last write.
                    ms_behind: (last > 0).then(|| if caught_up { 0 } else { (now - last).max(0) }),
                    caught_up,
                    reading: h.reading.load(Ordering::Relaxed),
                    records_per_s: h
                        .rate
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .update(now, events),
                    last_gap: h.last_gap.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                }
            })
            .collect()
    }
}

/// Shared per-shard health of a running source.
pub type ShardHealthMap = Mutex<BTreeMap<String, Arc<ShardHealth>>>;

/// The default worker name: the host name.
fn default_worker() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "streamlens".to_owned())
}
