//! `streamlens run` processes share one four-shard stream through a lease table on moto and write
//! partial aggregates to one OpenSearch (osmem) store. They split the shards; one crashes between
//! storing documents and committing them, another is killed with SIGKILL in the middle of a burst
//! of writes; a survivor fences the dead one, rolls back what it had stored without committing,
//! takes its shards over and continues after its last commit. The merged aggregates must equal an
//! independent computation of every change pushed: a lost record or a record counted twice would
//! show in the counts and the sums.
//!
//! The stream is the scripted DynamoDB Streams server (moto has one shard per stream); the lease
//! table and the store are the real local services.

mod common;

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{add_change, moto_url, opensearch_url, require, totals_of_docs, unique, Totals};
use rust_decimal::Decimal;
use serde_json::json;
use streamlens_aggregator::{config::OpenSearchStoreConfig, store::opensearch::OpenSearchStore};
use streamlens_core::{AggQuery, AggregateReader};
use streamlens_infra::fault_server::{FaultServer, RecordSpec};

const SHARDS: [&str; 4] = ["shardId-a", "shardId-b", "shardId-c", "shardId-d"];
const STATUSES: [&str; 3] = ["new", "paid", "shipped"];
const LEASE_DURATION: Duration = Duration::from_secs(3);

/// Deterministic changes per shard (each item lives in one shard, as in DynamoDB), with the totals
/// they must produce computed the plain way.
struct Changes {
    step: u64,
    live: BTreeMap<String, (String, Decimal)>,
    totals: Totals,
    count: usize,
}

impl Changes {
    fn image(pk: &str, status: &str, amount: Decimal) -> serde_json::Value {
        json!({ "pk": { "S": pk }, "status": { "S": status }, "amount": { "N": amount.to_string() } })
    }

    fn next(&mut self, shard: usize, t: i64) -> RecordSpec {
        self.step = self
            .step
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = self.step >> 33;
        let pk = format!("{}-{}", SHARDS[shard], r % 12);
        let status = STATUSES[(r / 12 % 3) as usize];
        let amount = Decimal::new((r / 36 % 100_000) as i64, 2);
        self.count += 1;
        let old = self.live.get(&pk).cloned();
        let (kind, new) = match (&old, r % 5) {
            (None, _) => ("INSERT", Some((status.to_owned(), amount))),
            (Some(_), 0) => ("REMOVE", None),
            (Some(_), _) => ("MODIFY", Some((status.to_owned(), amount))),
        };
        add_change(
            &mut self.totals,
            kind,
            old.as_ref().map(|(s, a)| (s.as_str(), *a)),
            new.as_ref().map(|(s, a)| (s.as_str(), *a)),
        );
        match &new {
            Some(n) => self.live.insert(pk.clone(), n.clone()),
            None => self.live.remove(&pk),
        };
        RecordSpec {
            event_name: kind.to_owned(),
            keys: RecordSpec::key(&pk),
            new_image: new.map(|(s, a)| Self::image(&pk, &s, a)),
            old_image: old.map(|(s, a)| Self::image(&pk, &s, a)),
            creation_time_secs: t,
            ttl: false,
        }
    }

    fn push(&mut self, server: &FaultServer, per_shard: usize) {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for (n, shard) in SHARDS.iter().enumerate() {
            let records = (0..per_shard).map(|_| self.next(n, t)).collect();
            server.push(shard, records);
        }
    }
}

struct Worker {
    name: &'static str,
    child: Child,
    log: std::path::PathBuf,
}

impl Worker {
    fn start(
        name: &'static str,
        dir: &std::path::Path,
        server: &FaultServer,
        table: &str,
        prefix: &str,
        crash_trigger: Option<&std::path::Path>,
    ) -> Self {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).unwrap();
        let config = format!(
            r#"data_dir = "{data}"

[source]
kind = "dynamodb"
stream_arn = "{arn}"
endpoint_url = "{streams}"
region = "us-east-1"
poll_interval = "50ms"
discovery_interval = "500ms"
max_backoff = "200ms"

[source.lease]
table = "{table}"
worker = "{name}"
lease_duration = "{lease}s"
renew_interval = "500ms"
endpoint_url = "{moto}"

[store]
kind = "opensearch"
url = "{os}"
index_prefix = "{prefix}"

[pipeline]
name = "orders"
dimensions = ["status"]
windows = ["1m"]
[[pipeline.metrics]]
name = "amount"
attribute = "amount"
scale = 2

[dashboard]
enabled = false
"#,
            data = data.display(),
            arn = server.stream_arn(),
            streams = server.url(),
            moto = moto_url(),
            os = opensearch_url(),
            lease = LEASE_DURATION.as_secs(),
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_streamlens"));
        if let Some(trigger) = crash_trigger {
            command.env("STREAMLENS_CRASH_BEFORE_COMMIT", trigger);
        }
        let child = command
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap();
        Worker { name, child, log }
    }

    fn logs(&self) -> String {
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        let err = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        strip_ansi(&format!("--- {} ---\n{out}{err}", self.name))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Log text without terminal colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Shard → owner, from the lease table.
async fn owners(client: &aws_sdk_dynamodb::Client, table: &str) -> BTreeMap<String, String> {
    let Ok(out) = client
        .query()
        .table_name(table)
        .key_condition_expression("#s = :g")
        .expression_attribute_names("#s", "scope")
        .expression_attribute_values(
            ":g",
            aws_sdk_dynamodb::types::AttributeValue::S("orders".into()),
        )
        .send()
        .await
    else {
        return BTreeMap::new();
    };
    out.items()
        .iter()
        .filter_map(|item| {
            let key = item.get("key")?.as_s().ok()?;
            let shard = key.strip_prefix("shard|")?;
            let owner = item.get("owner")?.as_s().ok()?;
            Some((shard.to_owned(), owner.clone()))
        })
        .collect()
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, logs: &dyn Fn() -> String, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}\n{}", logs());
}

async fn merged_totals(store: &OpenSearchStore) -> Totals {
    let docs = store
        .query(&AggQuery {
            pipeline: Some("orders".into()),
            window: Some("1m".into()),
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    totals_of_docs(&docs, "1m")
}

fn without_empty(mut totals: Totals) -> Totals {
    totals.retain(|_, t| *t != (0, 0, 0, 0, Decimal::ZERO));
    totals
}

fn split_between(owners: &BTreeMap<String, String>, x: &str, y: &str) -> bool {
    owners.len() == 4
        && owners.values().filter(|o| *o == x).count() == 2
        && owners.values().filter(|o| *o == y).count() == 2
}

fn print_lease_log(worker: &Worker) {
    for line in worker.logs().lines().filter(|l| {
        [
            "lease",
            "handing",
            "worker is dead",
            "rolled back",
            "crash point",
        ]
        .iter()
        .any(|w| l.contains(w))
    }) {
        println!("{}: {line}", worker.name);
    }
}

/// The documents a worker's rollbacks undid, from its log.
fn undone(worker: &Worker) -> u64 {
    worker
        .logs()
        .lines()
        .filter(|l| l.contains("uncommitted documents rolled back"))
        .filter_map(|l| l.split("undone").nth(1))
        .filter_map(|rest| {
            rest.chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// One flow, three hand-overs: `a` alone takes every shard; `b` joins and `a` hands two over
/// cleanly; `a` crashes between storing documents and committing them and `b` takes over (rolling
/// back what `a` stored uncommitted); `c` joins and `b` is killed with SIGKILL mid-burst; `c` takes
/// over. After each step the merged aggregates equal the independent totals exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_shards_and_take_over_from_dead_ones_exactly() {
    require("moto", &moto_url()).await;
    require("opensearch", &opensearch_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = FaultServer::start().await;
    for shard in SHARDS {
        server.add_shard(shard, None);
    }
    let table = unique("leases-");
    let prefix = unique("lease-");
    let trigger = dir.path().join("crash-a");
    let mut changes = Changes {
        step: 7,
        live: BTreeMap::new(),
        totals: Totals::new(),
        count: 0,
    };
    let client = common::dynamodb().await;
    let store = OpenSearchStore::connect(&OpenSearchStoreConfig {
        index_prefix: prefix.clone(),
        ..OpenSearchStoreConfig::new(opensearch_url())
    })
    .await
    .unwrap();
    let logs = |workers: &[&Worker]| workers.iter().map(|w| w.logs()).collect::<String>();
    let exact = |what: &'static str, workers: Vec<&Worker>, expected: Totals| {
        let store = &store;
        let text = logs(&workers);
        async move {
            wait_for(what, Duration::from_secs(30), &|| text.clone(), || async {
                merged_totals(store).await == expected
            })
            .await;
        }
    };

    // a alone takes all four shards.
    changes.push(&server, 40);
    let mut a = Worker::start("a", dir.path(), &server, &table, &prefix, Some(&trigger));
    wait_for(
        "a to own every shard",
        Duration::from_secs(30),
        &|| logs(&[&a]),
        || async {
            let owners = owners(&client, &table).await;
            owners.len() == 4 && owners.values().all(|o| o == "a")
        },
    )
    .await;
    exact(
        "a's aggregates",
        vec![&a],
        without_empty(changes.totals.clone()),
    )
    .await;

    // b joins: a hands two shards over after committing their last records.
    let mut b = Worker::start("b", dir.path(), &server, &table, &prefix, None);
    wait_for(
        "a to hand two shards to b",
        Duration::from_secs(30),
        &|| logs(&[&a, &b]),
        || async { split_between(&owners(&client, &table).await, "a", "b") },
    )
    .await;
    changes.push(&server, 40);
    exact(
        "a's and b's partial sums to add up",
        vec![&a, &b],
        without_empty(changes.totals.clone()),
    )
    .await;

    // a crashes after storing a pass and before committing it; writes go on.
    std::fs::write(&trigger, "").unwrap();
    changes.push(&server, 40);
    let crashed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(a.child.try_wait(), Ok(Some(_))) {
        assert!(
            Instant::now() < deadline,
            "a never reached its crash point\n{}",
            logs(&[&a, &b])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    changes.push(&server, 40);
    wait_for(
        "b to take over a's shards",
        LEASE_DURATION * 3 + Duration::from_secs(10),
        &|| logs(&[&a, &b]),
        || async { owners(&client, &table).await.values().all(|o| o == "b") },
    )
    .await;
    println!(
        "after a crashed: b owned every shard {:.1} s later (lease duration {} s, renew 0.5 s)",
        crashed.elapsed().as_secs_f64(),
        LEASE_DURATION.as_secs()
    );
    exact(
        "the aggregates after a's crash",
        vec![&a, &b],
        without_empty(changes.totals.clone()),
    )
    .await;
    assert!(
        undone(&b) > 0,
        "a crashed with stored, uncommitted documents: b must have rolled them back\n{}",
        logs(&[&a, &b])
    );

    // c joins, b is killed with SIGKILL in the middle of a burst.
    let c = Worker::start("c", dir.path(), &server, &table, &prefix, None);
    wait_for(
        "b to hand two shards to c",
        Duration::from_secs(30),
        &|| logs(&[&b, &c]),
        || async { split_between(&owners(&client, &table).await, "b", "c") },
    )
    .await;
    changes.push(&server, 40);
    tokio::time::sleep(Duration::from_millis(30)).await;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let killed = Instant::now();
    changes.push(&server, 40);
    wait_for(
        "c to take over b's shards",
        LEASE_DURATION * 3 + Duration::from_secs(10),
        &|| logs(&[&b, &c]),
        || async { owners(&client, &table).await.values().all(|o| o == "c") },
    )
    .await;
    println!(
        "after b was killed: c owned every shard {:.1} s later",
        killed.elapsed().as_secs_f64()
    );
    let expected = without_empty(changes.totals.clone());
    exact(
        "the aggregates after b's kill",
        vec![&b, &c],
        expected.clone(),
    )
    .await;
    let got = merged_totals(&store).await;
    assert_eq!(got, expected);
    let counted: i64 = got
        .iter()
        .filter(|((d, _), _)| d == "_all")
        .map(|(_, t)| t.0 + t.1 + t.2)
        .sum();
    assert_eq!(counted as usize, changes.count, "every change counted once");
    for worker in ["a", "b", "c"] {
        let partial = store
            .query(&AggQuery {
                pipeline: Some("orders".into()),
                worker: Some(worker.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            !partial.is_empty(),
            "{worker}'s committed partial sums are kept"
        );
    }

    // d joins; c is stopped cleanly (SIGTERM): it commits, frees its leases, and d has every
    // shard long before a lease would have expired.
    let mut c = c;
    let d = Worker::start("d", dir.path(), &server, &table, &prefix, None);
    wait_for(
        "c to hand two shards to d",
        Duration::from_secs(30),
        &|| logs(&[&c, &d]),
        || async { split_between(&owners(&client, &table).await, "c", "d") },
    )
    .await;
    changes.push(&server, 40);
    let status = Command::new("kill")
        .args(["-TERM", &c.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = Instant::now();
    let code = c.child.wait().unwrap();
    assert!(
        code.success(),
        "c exits cleanly on SIGTERM: {code:?}\n{}",
        c.logs()
    );
    wait_for(
        "d to take c's shards",
        LEASE_DURATION * 3 + Duration::from_secs(10),
        &|| logs(&[&c, &d]),
        || async { owners(&client, &table).await.values().all(|o| o == "d") },
    )
    .await;
    println!(
        "after c stopped cleanly: d owned every shard {:.1} s later",
        stopped.elapsed().as_secs_f64()
    );
    assert!(
        c.logs().contains("leases released at shutdown"),
        "{}",
        c.logs()
    );
    changes.push(&server, 40);
    let expected = without_empty(changes.totals.clone());
    exact(
        "the aggregates after c's clean stop",
        vec![&c, &d],
        expected.clone(),
    )
    .await;
    assert_eq!(merged_totals(&store).await, expected);
    for worker in [&a, &b, &c, &d] {
        print_lease_log(worker);
    }
}
