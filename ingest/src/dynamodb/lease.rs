//! Leases: several streamlens processes sharing one stream, exactly one owner per shard.
//!
//! The lease table (hash key `scope`, range key `key`) holds, per lease group:
//!
//! * one row per **worker** (`worker|<name>`): an `epoch` bumped when the worker registers and when
//!   another worker fences it, a `counter` bumped by every heartbeat and commit, and what the
//!   worker's stored aggregates cover: `committed_version`, `max_event_time` and `positions`
//!   (shard → last sequence number whose effects are stored);
//! * one row per **shard** (`shard|<id>`): its `owner` (empty when free), its `parent`, `finished`
//!   once read to its end, and `checkpoint`, the position it was handed over at.
//!
//! Liveness is judged the KCL way, without trusting clocks: a worker whose `counter` has not moved
//! for `lease_duration` of *our* time is dead. Every write a worker makes to its own row is
//! conditional on its epoch, so once a worker is fenced (its epoch bumped by the taker) it can
//! commit nothing more; the taker then asks the store to roll the dead worker's documents back to
//! its `committed_version` (documents written after the last commit are undone) and continues each
//! shard after `max(dead.positions[shard], lease.checkpoint)`. Nothing the dead worker stored is
//! lost, and nothing it did not commit is counted.
//!
//! Balancing is cooperative: each worker aims at `ceil(available shards / live workers)`; a worker
//! above the target stops the extra shards, waits until the pipeline has committed their last
//! records, then frees them with that position as their `checkpoint`. A child shard is available
//! only once its parent's lease is `finished` (or the parent is gone from the table).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aws_sdk_dynamodb::{
    error::SdkError,
    types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
        ScalarAttributeType,
    },
    Client,
};

use super::api::cmp_sequence;
use crate::{config::LeaseConfig, Checkpoint, Commit, Committer, Error, Recovery};

/// What a worker's row says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerRow {
    /// Bumped on registration and fencing.
    pub epoch: i64,
    /// Bumped by every heartbeat and commit.
    pub counter: i64,
    /// The document version the worker's last commit covers.
    pub committed_version: u64,
    /// The newest event time its stored aggregates contain.
    pub max_event_time: i64,
    /// Shard → last sequence number whose effects the worker stored.
    pub positions: Checkpoint,
    /// The worker stopped cleanly and freed its leases: it does not count as live.
    pub stopped: bool,
}

/// What a shard's row says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardLease {
    /// The owning worker, empty when free.
    pub owner: String,
    /// The parent shard.
    pub parent: Option<String>,
    /// Read to its end.
    pub finished: bool,
    /// The position the shard was handed over at.
    pub checkpoint: Option<String>,
}

/// The lease table as read by one `Query`.
#[derive(Debug, Clone, Default)]
pub struct LeaseTable {
    /// Worker name → row.
    pub workers: BTreeMap<String, WorkerRow>,
    /// Shard id → row.
    pub shards: BTreeMap<String, ShardLease>,
}

/// The state shared between the source's lease loop and the pipeline's commits.
#[derive(Debug, Default)]
struct Shared {
    /// Positions of the last successful commit.
    committed: Checkpoint,
    /// Its document version.
    committed_version: u64,
}

/// One worker's handle on the lease table.
pub struct Leases {
    client: Client,
    table: String,
    scope: String,
    worker: String,
    epoch: i64,
    duration: Duration,
    shared: Mutex<Shared>,
    /// Our own row as found at registration.
    registered: WorkerRow,
}

fn aws_err<E, R>(operation: &'static str) -> impl Fn(SdkError<E, R>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |e| Error::Aws {
        operation,
        message: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
    }
}

fn conditional_failed<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n<T: std::str::FromStr + Default>(item: &HashMap<String, AttributeValue>, name: &str) -> T {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

fn worker_row(item: &HashMap<String, AttributeValue>) -> WorkerRow {
    WorkerRow {
        epoch: get_n(item, "epoch"),
        counter: get_n(item, "counter"),
        committed_version: get_n(item, "committed_version"),
        max_event_time: item
            .get("max_event_time")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(i64::MIN),
        positions: item
            .get("positions")
            .and_then(|v| v.as_m().ok())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_s().ok().map(|v| (k.clone(), v.clone())))
                    .collect()
            })
            .unwrap_or_default(),
        stopped: item
            .get("stopped")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
    }
}

/// The later of two positions in one shard.
pub fn later(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if cmp_sequence(&a, &b).is_ge() { a } else { b }),
        (a, b) => a.or(b),
    }
}

impl Leases {
    /// Opens (creating if needed) the lease table and registers this worker, fencing any earlier
    /// incarnation of it.
    pub async fn register(
        config: &LeaseConfig,
        client: Client,
        group: &str,
        worker: &str,
    ) -> Result<Self, Error> {
        if config.lease_duration < Duration::from_secs(1)
            || config.renew_every() >= config.lease_duration
        {
            return Err(Error::Config(format!(
                "lease: lease_duration ({:?}) must be at least 1s and longer than renew_interval ({:?})",
                config.lease_duration,
                config.renew_every()
            )));
        }
        ensure_table(&client, &config.table).await?;
        let out = client
            .update_item()
            .table_name(&config.table)
            .key("scope", s(group))
            .key("key", s(format!("worker|{worker}")))
            .update_expression(
                "SET epoch = if_not_exists(epoch, :zero) + :one, \
                 #c = if_not_exists(#c, :zero) + :one, \
                 committed_version = if_not_exists(committed_version, :zero), \
                 stopped = :no",
            )
            .expression_attribute_names("#c", "counter")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(aws_err("UpdateItem (register worker)"))?;
        let registered = out.attributes().map(worker_row).unwrap_or_default();
        tracing::info!(
            worker,
            group,
            epoch = registered.epoch,
            committed_version = registered.committed_version,
            "registered in the lease table"
        );
        Ok(Leases {
            client,
            table: config.table.clone(),
            scope: group.to_owned(),
            worker: worker.to_owned(),
            epoch: registered.epoch,
            duration: config.lease_duration,
            shared: Mutex::new(Shared {
                committed: registered.positions.clone(),
                committed_version: registered.committed_version,
            }),
            registered,
        })
    }

    /// This worker's name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Our row as found at registration: what our stored aggregates covered then.
    pub fn registered(&self) -> &WorkerRow {
        &self.registered
    }

    /// Positions of the last successful commit.
    pub fn committed(&self) -> Checkpoint {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .committed
            .clone()
    }

    /// The document version of the last successful commit.
    pub fn committed_version(&self) -> u64 {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .committed_version
    }

    fn fenced(&self) -> Error {
        Error::Fenced(format!(
            "worker `{}` was fenced: another process took its leases (epoch {} is stale)",
            self.worker, self.epoch
        ))
    }

    /// An update of our own row that bumps the counter (`#c = #c + :one` belongs in
    /// `expression`) and only applies while our epoch stands.
    fn own_row(
        &self,
        expression: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("scope", s(&self.scope))
            .key("key", s(format!("worker|{}", self.worker)))
            .update_expression(expression)
            .condition_expression("epoch = :epoch")
            .expression_attribute_names("#c", "counter")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":epoch", n(self.epoch))
    }

    /// Sends an [`Self::own_row`] update: [`Error::Fenced`] when our epoch was bumped.
    async fn send_own(
        &self,
        update: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
        operation: &'static str,
    ) -> Result<(), Error> {
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Err(self.fenced()),
            Err(e) => Err(aws_err(operation)(e)),
        }
    }

    /// Bumps our counter; fails with [`Error::Fenced`] if we were fenced.
    pub async fn heartbeat(&self) -> Result<(), Error> {
        self.send_own(self.own_row("SET #c = #c + :one"), "UpdateItem (heartbeat)")
            .await
    }

    /// Reads the whole lease group.
    pub async fn read(&self) -> Result<LeaseTable, Error> {
        let mut table = LeaseTable::default();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#s = :scope")
                .expression_attribute_names("#s", "scope")
                .expression_attribute_values(":scope", s(&self.scope))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(aws_err("Query (leases)"))?;
            for item in out.items() {
                let Some(key) = get_s(item, "key") else {
                    continue;
                };
                if let Some(worker) = key.strip_prefix("worker|") {
                    table.workers.insert(worker.to_owned(), worker_row(item));
                } else if let Some(shard) = key.strip_prefix("shard|") {
                    table.shards.insert(
                        shard.to_owned(),
                        ShardLease {
                            owner: get_s(item, "owner").unwrap_or_default(),
                            parent: get_s(item, "parent"),
                            finished: item
                                .get("finished")
                                .and_then(|v| v.as_bool().ok())
                                .copied()
                                .unwrap_or(false),
                            checkpoint: get_s(item, "checkpoint"),
                        },
                    );
                }
            }
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(table)
    }

    /// Creates a free lease for a newly discovered shard (no-op if it exists).
    pub async fn create(&self, shard: &str, parent: Option<&str>) -> Result<(), Error> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("scope", s(&self.scope))
            .item("key", s(format!("shard|{shard}")))
            .item("owner", s(""))
            .item("finished", AttributeValue::Bool(false))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", "key");
        if let Some(parent) = parent {
            put = put.item("parent", s(parent));
        }
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(aws_err("PutItem (create lease)")(e)),
        }
    }

    /// An update of a shard's row (`#o` names its owner attribute).
    fn shard_row(
        &self,
        shard: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("scope", s(&self.scope))
            .key("key", s(format!("shard|{shard}")))
            .expression_attribute_names("#o", "owner")
    }

    /// Takes a shard from `from` (empty: free); false if someone else changed it first.
    pub async fn take(
        &self,
        shard: &str,
        from: &str,
        checkpoint: Option<&str>,
    ) -> Result<bool, Error> {
        let mut update = self
            .shard_row(shard)
            .condition_expression("#o = :from AND finished = :no")
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":me", s(&self.worker))
            .expression_attribute_values(":no", AttributeValue::Bool(false));
        update = match checkpoint {
            Some(c) => update
                .update_expression("SET #o = :me, checkpoint = :c")
                .expression_attribute_values(":c", s(c)),
            None => update.update_expression("SET #o = :me"),
        };
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(aws_err("UpdateItem (take lease)")(e)),
        }
    }

    /// Frees a shard we own at `checkpoint`, marking it finished when it was read to its end.
    pub async fn release(
        &self,
        shard: &str,
        checkpoint: Option<&str>,
        finished: bool,
    ) -> Result<(), Error> {
        let mut update = self
            .shard_row(shard)
            .condition_expression("#o = :me")
            .expression_attribute_values(":me", s(&self.worker))
            .expression_attribute_values(":free", s(""))
            .expression_attribute_values(":fin", AttributeValue::Bool(finished));
        update = match checkpoint {
            Some(c) => update
                .update_expression("SET #o = :free, finished = :fin, checkpoint = :c")
                .expression_attribute_values(":c", s(c)),
            None => update.update_expression("SET #o = :free, finished = :fin"),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Err(self.fenced()),
            Err(e) => Err(aws_err("UpdateItem (release lease)")(e)),
        }
    }

    /// Frees every shard this worker owns at its last committed position, for a clean shutdown:
    /// call it once the pipeline has stopped (nothing more will be committed), so other workers
    /// take the shards at once instead of after `lease_duration`. Returns how many were freed.
    pub async fn release_all(&self) -> Result<usize, Error> {
        let table = self.read().await?;
        let committed = self.committed();
        let mut freed = 0;
        for (shard, lease) in &table.shards {
            if lease.owner != self.worker || lease.finished {
                continue;
            }
            let at = later(committed.get(shard).cloned(), lease.checkpoint.clone());
            self.release(shard, at.as_deref(), false).await?;
            freed += 1;
        }
        // Others stop counting us as live at once, so they take the shards now.
        self.send_own(
            self.own_row("SET stopped = :yes, #c = #c + :one")
                .expression_attribute_values(":yes", AttributeValue::Bool(true)),
            "UpdateItem (worker stopped)",
        )
        .await?;
        tracing::info!(worker = %self.worker, freed, "leases released at shutdown");
        Ok(freed)
    }

    /// Fences a worker seen dead (its counter still `counter`): it can commit nothing more.
    /// Returns its row as of the fence, or None if it moved meanwhile (it is alive).
    pub async fn fence(&self, worker: &str, counter: i64) -> Result<Option<WorkerRow>, Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("scope", s(&self.scope))
            .key("key", s(format!("worker|{worker}")))
            .update_expression("SET epoch = epoch + :one")
            .condition_expression("#c = :counter")
            .expression_attribute_names("#c", "counter")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":counter", n(counter))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(out.attributes().map(worker_row).unwrap_or_default())),
            Err(e) if conditional_failed(&e) => Ok(None),
            Err(e) => Err(aws_err("UpdateItem (fence worker)")(e)),
        }
    }
}

#[async_trait::async_trait]
impl Committer for Leases {
    async fn commit(&self, commit: &Commit) -> Result<(), Error> {
        let positions: HashMap<String, AttributeValue> = commit
            .positions
            .iter()
            .map(|(k, v)| (k.clone(), s(v)))
            .collect();
        self.send_own(
            self.own_row(
                "SET positions = :p, committed_version = :v, max_event_time = :t, #c = #c + :one",
            )
            .expression_attribute_values(":p", AttributeValue::M(positions))
            .expression_attribute_values(":v", n(commit.version))
            .expression_attribute_values(":t", n(commit.max_event_time)),
            "UpdateItem (commit)",
        )
        .await?;
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.committed.clone_from(&commit.positions);
        shared.committed_version = commit.version;
        Ok(())
    }
}

async fn ensure_table(client: &Client, table: &str) -> Result<(), Error> {
    match client.describe_table().table_name(table).send().await {
        Ok(_) => return Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) => {}
        Err(e) => return Err(aws_err("DescribeTable (lease table)")(e)),
    }
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| Error::Config(e.to_string()))
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| Error::Config(e.to_string()))
    };
    let created = client
        .create_table()
        .table_name(table)
        .attribute_definitions(attribute("scope")?)
        .attribute_definitions(attribute("key")?)
        .key_schema(key("scope", KeyType::Hash)?)
        .key_schema(key("key", KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => tracing::info!(table, "lease table created"),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(aws_err("CreateTable (lease table)")(e)),
    }
    for _ in 0..120 {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(aws_err("DescribeTable (lease table)"))?;
        if out
            .table()
            .and_then(|t| t.table_status())
            .is_some_and(|s| s.as_str() == "ACTIVE")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(Error::Config(format!(
        "lease table `{table}` did not become ACTIVE within a minute"
    )))
}

/// What the lease loop decided in one round.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Shards now ours, with the position to continue after (None: the configured start).
    pub acquired: Vec<(String, Option<String>)>,
    /// Shards to stop and hand over once their records are committed.
    pub release: Vec<String>,
    /// Shards another worker owns although we thought they were ours.
    pub lost: Vec<String>,
}

/// The lease loop's memory between rounds: which shards are ours, how long each other worker's
/// counter has been still, whom we fenced.
pub struct Balancer {
    leases: Arc<Leases>,
    recovery: Arc<dyn Recovery>,
    /// Shards we hold (running, releasing or finishing).
    pub owned: BTreeSet<String>,
    seen: HashMap<String, (i64, Instant)>,
    fenced: HashMap<String, WorkerRow>,
    first_round: bool,
}

impl Balancer {
    /// A balancer for a registered worker.
    pub fn new(leases: Arc<Leases>, recovery: Arc<dyn Recovery>) -> Self {
        Balancer {
            leases,
            recovery,
            owned: BTreeSet::new(),
            seen: HashMap::new(),
            fenced: HashMap::new(),
            first_round: true,
        }
    }

    /// The lease handle.
    pub fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    /// One round: heartbeat, create leases for `discovered` shards (id → parent), adopt our own
    /// leases after a restart, fence dead workers and take their shards, take free shards up to
    /// the fair share and pick shards to give away above it. `busy` shards (being released or
    /// finished) are neither taken nor given.
    pub async fn round(
        &mut self,
        discovered: &BTreeMap<String, Option<String>>,
        busy: &BTreeSet<String>,
    ) -> Result<Plan, Error> {
        let leases = self.leases.clone();
        leases.heartbeat().await?;
        let mut table = leases.read().await?;
        let mut created = false;
        for (shard, parent) in discovered {
            if !table.shards.contains_key(shard) {
                leases.create(shard, parent.as_deref()).await?;
                created = true;
            }
        }
        if created {
            table = leases.read().await?;
        }
        let now = Instant::now();
        let me = leases.worker().to_owned();
        for (worker, row) in &table.workers {
            let entry = self
                .seen
                .entry(worker.clone())
                .or_insert((row.counter, now));
            if entry.0 != row.counter {
                *entry = (row.counter, now);
            }
        }
        let stopped: BTreeSet<&String> = table
            .workers
            .iter()
            .filter(|(_, row)| row.stopped)
            .map(|(w, _)| w)
            .collect();
        let live = |w: &str, seen: &HashMap<String, (i64, Instant)>| {
            w == me
                || (!stopped.contains(&w.to_owned())
                    && seen
                        .get(w)
                        .is_some_and(|(_, since)| now.duration_since(*since) < leases.duration))
        };
        let mut plan = Plan::default();
        // Our own leases: adopt after a restart; notice the ones we lost.
        for (shard, lease) in &table.shards {
            if lease.owner == me && !self.owned.contains(shard) && !lease.finished {
                let position = later(
                    leases.registered().positions.get(shard).cloned(),
                    lease.checkpoint.clone(),
                );
                let position = later(position, leases.committed().get(shard).cloned());
                self.owned.insert(shard.clone());
                plan.acquired.push((shard.clone(), position));
            }
        }
        for shard in &self.owned {
            if table.shards.get(shard).is_some_and(|l| l.owner != me) && !busy.contains(shard) {
                plan.lost.push(shard.clone());
            }
        }
        for shard in &plan.lost {
            self.owned.remove(shard);
        }
        let available: Vec<&String> = table
            .shards
            .iter()
            .filter(|(_, l)| !l.finished)
            .filter(|(_, l)| {
                l.parent
                    .as_ref()
                    .and_then(|p| table.shards.get(p))
                    .is_none_or(|p| p.finished)
            })
            .map(|(id, _)| id)
            .collect();
        let live_workers = table
            .workers
            .keys()
            .filter(|w| live(w, &self.seen))
            .count()
            .max(1);
        let target = available.len().div_ceil(live_workers);
        // In the first round other workers' counters have not been watched yet: take only free
        // shards, at most the fair share, and give nothing away.
        let mut mine = self.owned.len();
        for shard in &available {
            if mine >= target {
                break;
            }
            let lease = &table.shards[*shard];
            if lease.owner == me {
                continue;
            }
            let position = if lease.owner.is_empty() {
                lease.checkpoint.clone()
            } else if !live(&lease.owner, &self.seen) && !self.first_round {
                let Some(dead) = self.fence_and_recover(&lease.owner, &table).await? else {
                    continue;
                };
                later(
                    dead.positions.get(*shard).cloned(),
                    lease.checkpoint.clone(),
                )
            } else {
                continue;
            };
            if leases
                .take(shard, &lease.owner, position.as_deref())
                .await?
            {
                tracing::info!(
                    shard = %shard,
                    from = %lease.owner,
                    after = ?position,
                    "lease taken"
                );
                self.owned.insert((*shard).clone());
                plan.acquired.push(((*shard).clone(), position));
                mine += 1;
            }
        }
        if !self.first_round && mine > target {
            let givable: Vec<String> = self
                .owned
                .iter()
                .rev()
                .filter(|s| !busy.contains(*s))
                .take(mine - target)
                .cloned()
                .collect();
            plan.release = givable;
        }
        self.first_round = false;
        metrics::gauge!("streamlens_leases_owned").set(self.owned.len() as f64);
        metrics::gauge!("streamlens_lease_workers_live").set(live_workers as f64);
        Ok(plan)
    }

    /// Fences a dead worker (once) and rolls its stored documents back to its last commit.
    async fn fence_and_recover(
        &mut self,
        worker: &str,
        table: &LeaseTable,
    ) -> Result<Option<WorkerRow>, Error> {
        if let Some(row) = self.fenced.get(worker) {
            return Ok(Some(row.clone()));
        }
        let Some(row) = table.workers.get(worker) else {
            // A lease owner with no row never committed anything: nothing to roll back.
            return Ok(Some(WorkerRow::default()));
        };
        let Some(fenced) = self.leases.fence(worker, row.counter).await? else {
            return Ok(None);
        };
        tracing::warn!(
            worker,
            committed_version = fenced.committed_version,
            "worker is dead: fenced, rolling back what it did not commit"
        );
        self.recovery
            .roll_back(worker, fenced.committed_version)
            .await
            .map_err(|message| Error::Recovery {
                worker: worker.to_owned(),
                message,
            })?;
        metrics::counter!("streamlens_lease_takeovers_total").increment(1);
        self.fenced.insert(worker.to_owned(), fenced.clone());
        Ok(Some(fenced))
    }
}
