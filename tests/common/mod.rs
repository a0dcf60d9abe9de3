//! Helpers shared by the end-to-end tests: the local services, configs, and the independent
//! computation of expected aggregates.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::Path,
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use rust_decimal::Decimal;
use serde_json::Value;

/// The moto endpoint (started by `infra/scripts/services.sh`).
pub fn moto_url() -> String {
    std::env::var("STREAMLENS_MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned())
}

/// The OpenSearch-compatible endpoint.
pub fn opensearch_url() -> String {
    std::env::var("STREAMLENS_OPENSEARCH_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:9200".to_owned())
}

/// Fails the test with a clear message when a service is down.
pub async fn require(name: &str, url: &str) {
    if reqwest::get(url).await.is_err() {
        panic!("{name} is not reachable at {url}: start it with `infra/scripts/services.sh start`");
    }
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{}", nanos % 1_000_000_000_000)
}

/// A DynamoDB client for moto.
pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    let sdk = streamlens_ingest::aws::sdk_config(Some("us-east-1"), Some(&moto_url())).await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

/// A new moto table (named after `prefix`, key `pk`) with a NEW_AND_OLD_IMAGES stream, and a
/// client for it.
pub async fn table_with_stream(prefix: &str) -> (aws_sdk_dynamodb::Client, String) {
    let table = unique(prefix);
    let client = dynamodb().await;
    streamlens_infra::dynamo::create_table_with_stream(&client, &table, "pk")
        .await
        .unwrap();
    (client, table)
}

/// The `[source]` body reading `table`'s stream on moto, polled every 100 ms.
pub fn moto_source(table: &str) -> String {
    format!(
        "kind = \"dynamodb\"\ntable = \"{table}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\npoll_interval = \"100ms\"",
        moto_url()
    )
}

/// `GET url` as JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// `GET url` as text.
pub async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Asserts that the OpenAPI document's schema `name` documents exactly the fields `full` (a
/// value with every optional field set) serializes to: no more, no less.
pub fn assert_documents_fields(openapi: &Value, name: &str, full: &impl serde::Serialize) {
    let keys = |v: &Value| -> std::collections::BTreeSet<String> {
        v.as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"))
            .keys()
            .cloned()
            .collect()
    };
    let documented = keys(&openapi["components"]["schemas"][name]["properties"]);
    let fields = keys(&serde_json::to_value(full).unwrap());
    assert_eq!(documented, fields, "schema {name}");
}

/// Per (dimension, value): inserts, modifies, removes, net count, net amount.
pub type Totals = BTreeMap<(String, String), (i64, i64, i64, i64, Decimal)>;

/// Adds one change to `totals` the plain way: the kind counted on the group of the image it
/// names, the old image retracted, the new image added.
pub fn add_change(
    totals: &mut Totals,
    kind: &str,
    old: Option<(&str, Decimal)>,
    new: Option<(&str, Decimal)>,
) {
    let mut bump = |status: &str, sign: i64, amount: Decimal, counted: Option<usize>| {
        for key in [
            ("_all".to_owned(), String::new()),
            ("status".to_owned(), status.to_owned()),
        ] {
            let t = totals.entry(key).or_insert((0, 0, 0, 0, Decimal::ZERO));
            match counted {
                Some(0) => t.0 += 1,
                Some(1) => t.1 += 1,
                Some(2) => t.2 += 1,
                _ => {}
            }
            t.3 += sign;
            t.4 += amount * Decimal::from(sign);
        }
    };
    match kind {
        "INSERT" => {
            let (s, a) = new.unwrap();
            bump(s, 1, a, Some(0));
        }
        "MODIFY" => {
            let (s, a) = old.unwrap();
            bump(s, -1, a, None);
            let (s, a) = new.unwrap();
            bump(s, 1, a, Some(1));
        }
        "REMOVE" => {
            let (s, a) = old.unwrap();
            bump(s, -1, a, Some(2));
        }
        other => panic!("unexpected kind {other}"),
    }
}

/// Sums aggregate documents of one window size over all windows, per group.
pub fn totals_of_docs(docs: &[streamlens_core::AggregateDoc], window: &str) -> Totals {
    let mut totals = Totals::new();
    for d in docs.iter().filter(|d| d.window == window) {
        let value = if d.dimension == "_all" {
            String::new()
        } else {
            d.value.clone()
        };
        let t = totals
            .entry((d.dimension.clone(), value))
            .or_insert((0, 0, 0, 0, Decimal::ZERO));
        t.0 += d.inserts;
        t.1 += d.modifies;
        t.2 += d.removes;
        t.3 += d.net_count;
        t.4 += Decimal::from_str(&d.sums["amount"]).unwrap();
    }
    // Groups whose changes cancel out entirely carry no information.
    totals.retain(|_, t| *t != (0, 0, 0, 0, Decimal::ZERO));
    totals
}

/// Reads an archive's lines with plain serde_json (not streamlens' decoder) into totals.
pub fn totals_of_archive_text(text: &str) -> (Totals, usize) {
    let mut totals = Totals::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            bad += 1;
            continue;
        };
        let image = |name: &str| -> Option<(String, Decimal)> {
            let img = record["dynamodb"].get(name)?;
            Some((
                img["status"]["S"].as_str()?.to_owned(),
                Decimal::from_str(img["amount"]["N"].as_str()?).ok()?,
            ))
        };
        let (old, new) = (image("OldImage"), image("NewImage"));
        add_change(
            &mut totals,
            record["eventName"].as_str().unwrap(),
            old.as_ref().map(|(s, a)| (s.as_str(), *a)),
            new.as_ref().map(|(s, a)| (s.as_str(), *a)),
        );
    }
    totals.retain(|_, t| *t != (0, 0, 0, 0, Decimal::ZERO));
    (totals, bad)
}

/// A config for the tests: the orders pipeline, no dashboard unless asked for.
pub fn config(
    source: &str,
    store: &str,
    data_dir: &Path,
    extra: &str,
) -> streamlens::config::Config {
    let text = config_text(source, store, data_dir, extra);
    streamlens::config::Config::parse(&text, "test.toml").unwrap()
}

/// The text of [`config`] (for a `streamlens` process).
pub fn config_text(source: &str, store: &str, data_dir: &Path, extra: &str) -> String {
    format!(
        r#"data_dir = "{data}"
{extra}
[source]
{source}

[store]
{store}

[pipeline]
name = "orders"
dimensions = ["status"]
windows = ["1m", "5m"]
[[pipeline.metrics]]
name = "amount"
attribute = "amount"
scale = 2

[dashboard]
enabled = false
"#,
        data = data_dir.display()
    )
}

const STATUSES: [&str; 4] = ["new", "paid", "shipped", "returned"];

/// Makes a reproducible mix of inserts, whole-item puts, update expressions and deletes on a moto
/// table with the AWS SDK, one at a time (moto repeats sequence numbers under concurrent writers),
/// and keeps the totals they must produce.
pub struct Writer {
    state: u64,
    live: BTreeMap<u32, (String, Decimal)>,
    totals: Totals,
    /// Writes made so far.
    pub writes: usize,
}

impl Writer {
    /// A writer with its own random sequence.
    pub fn new(seed: u64) -> Self {
        Writer {
            state: seed | 1,
            live: BTreeMap::new(),
            totals: Totals::new(),
            writes: 0,
        }
    }

    fn next(&mut self, m: u64) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % m
    }

    /// The totals of every change made so far (groups that cancel out left out).
    pub fn totals(&self) -> Totals {
        let mut totals = self.totals.clone();
        totals.retain(|_, t| *t != (0, 0, 0, 0, Decimal::ZERO));
        totals
    }

    /// Makes `n` more changes.
    pub async fn write(&mut self, client: &aws_sdk_dynamodb::Client, table: &str, n: usize) {
        use aws_sdk_dynamodb::types::AttributeValue;
        for _ in 0..n {
            let id = self.next(120) as u32;
            let status = STATUSES[self.next(4) as usize].to_owned();
            let amount =
                Decimal::from_str(&format!("{}.{:02}", self.next(5000), self.next(100))).unwrap();
            let key = AttributeValue::S(format!("order#{id}"));
            let roll = self.next(4);
            match self.live.get(&id).cloned() {
                Some(old) if roll == 0 => {
                    client
                        .delete_item()
                        .table_name(table)
                        .key("pk", key)
                        .send()
                        .await
                        .unwrap();
                    self.live.remove(&id);
                    add_change(&mut self.totals, "REMOVE", Some((&old.0, old.1)), None);
                }
                Some(old) if roll == 1 => {
                    client
                        .update_item()
                        .table_name(table)
                        .key("pk", key)
                        .update_expression("SET #s = :s, amount = :a")
                        .expression_attribute_names("#s", "status")
                        .expression_attribute_values(":s", AttributeValue::S(status.clone()))
                        .expression_attribute_values(":a", AttributeValue::N(amount.to_string()))
                        .send()
                        .await
                        .unwrap();
                    add_change(
                        &mut self.totals,
                        "MODIFY",
                        Some((&old.0, old.1)),
                        Some((&status, amount)),
                    );
                    self.live.insert(id, (status, amount));
                }
                old => {
                    client
                        .put_item()
                        .table_name(table)
                        .item("pk", key)
                        .item("status", AttributeValue::S(status.clone()))
                        .item("amount", AttributeValue::N(amount.to_string()))
                        .item("tags", AttributeValue::Ss(vec!["a".into(), "b".into()]))
                        .item("blob", AttributeValue::B(vec![0u8, 1, 2].into()))
                        .item("flag", AttributeValue::Bool(true))
                        .item("nothing", AttributeValue::Null(true))
                        .item(
                            "nested",
                            AttributeValue::M(
                                [("n".to_owned(), AttributeValue::N("1e2".into()))].into(),
                            ),
                        )
                        .item(
                            "list",
                            AttributeValue::L(vec![AttributeValue::Ns(vec![
                                "1".into(),
                                "2.5".into(),
                            ])]),
                        )
                        .send()
                        .await
                        .unwrap();
                    let kind = if old.is_some() { "MODIFY" } else { "INSERT" };
                    add_change(
                        &mut self.totals,
                        kind,
                        old.as_ref().map(|(s, a)| (s.as_str(), *a)),
                        Some((&status, amount)),
                    );
                    self.live.insert(id, (status, amount));
                }
            }
            self.writes += 1;
        }
    }
}

/// The sequence numbers in an archive written by `archive_to`.
pub fn archived_sequences(path: &Path) -> Vec<String> {
    let mut seqs = Vec::new();
    streamlens_ingest::archive::read_batches(path, 1000, |b| {
        assert!(b.quarantined.is_empty());
        seqs.extend(b.events.into_iter().map(|e| e.sequence_number));
        true
    })
    .unwrap();
    seqs
}

/// A file of the golden test set (`tests/golden/`).
pub fn golden(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// The golden input: its records and its text.
pub fn golden_input() -> (Vec<Value>, String) {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(golden("orders.ndjson.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let records = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (records, text)
}

/// The golden pipeline over the golden input, into an embedded store at `dir/golden.redb`.
pub fn golden_config(dir: &Path, batch_size: usize) -> streamlens::config::Config {
    let pipeline = std::fs::read_to_string(golden("pipeline.toml")).unwrap();
    let text = format!(
        r#"data_dir = "{dir}"

[source]
kind = "archive"
path = "{input}"
batch_size = {batch_size}

[store]
kind = "embedded"
path = "{dir}/golden.redb"

{pipeline}
[dashboard]
enabled = false
"#,
        dir = dir.display(),
        input = golden("orders.ndjson.gz").display(),
    );
    streamlens::config::Config::parse(&text, "golden.toml").unwrap()
}

/// One image's part in the golden pipeline: its change's event time (ms), the image, +1 (a new
/// image) or −1 (an old image, retracted), and the event kind it is counted as (0 INSERT,
/// 1 MODIFY, 2 REMOVE; `None` for the old image of a MODIFY). Images the pipeline's filter
/// drops (`channel` = `test`) are left out.
pub fn golden_contributions(records: &[Value]) -> Vec<(i64, &Value, i64, Option<usize>)> {
    let mut out = Vec::new();
    for record in records {
        let t = record["dynamodb"]["ApproximateCreationDateTime"]
            .as_i64()
            .unwrap()
            * 1000;
        let body = &record["dynamodb"];
        let parts: Vec<(&Value, i64, Option<usize>)> = match record["eventName"].as_str().unwrap() {
            "INSERT" => vec![(&body["NewImage"], 1, Some(0))],
            "MODIFY" => vec![
                (&body["OldImage"], -1, None),
                (&body["NewImage"], 1, Some(1)),
            ],
            "REMOVE" => vec![(&body["OldImage"], -1, Some(2))],
            other => panic!("{other}"),
        };
        for (image, sign, kind) in parts {
            if golden_s(image, "channel").as_deref() != Some("test") {
                out.push((t, image, sign, kind));
            }
        }
    }
    out
}

/// A string attribute of an image.
pub fn golden_s(image: &Value, name: &str) -> Option<String> {
    image[name]["S"].as_str().map(str::to_owned)
}

/// What the golden pipeline's metrics accumulate for one group, computed plainly.
#[derive(Debug, Default, Clone)]
pub struct GoldenAcc {
    /// INSERT, MODIFY, REMOVE events.
    pub kinds: [i64; 3],
    /// Items in minus items out.
    pub net: i64,
    /// Net sum of `amount`.
    pub sum: Decimal,
    /// Net count of items with `items`.
    pub items: i64,
    /// Smallest `amount` written.
    pub min: Option<Decimal>,
    /// Largest `amount` written.
    pub max: Option<Decimal>,
    /// Customers written.
    pub customers: std::collections::BTreeSet<String>,
}

impl GoldenAcc {
    /// Takes one contribution (see [`golden_contributions`]).
    pub fn take(&mut self, image: &Value, sign: i64, kind: Option<usize>) {
        if let Some(kind) = kind {
            self.kinds[kind] += 1;
        }
        let amount = Decimal::from_str(image["amount"]["N"].as_str().unwrap()).unwrap();
        self.net += sign;
        self.sum += amount * Decimal::from(sign);
        if image.get("items").is_some() {
            self.items += sign;
        }
        if sign > 0 {
            self.min = Some(self.min.map_or(amount, |m| m.min(amount)));
            self.max = Some(self.max.map_or(amount, |m| m.max(amount)));
            self.customers.insert(golden_s(image, "customer").unwrap());
        }
    }

    /// Adds another group's accumulation.
    pub fn add(&mut self, other: &GoldenAcc) {
        for k in 0..3 {
            self.kinds[k] += other.kinds[k];
        }
        self.net += other.net;
        self.sum += other.sum;
        self.items += other.items;
        self.min = [self.min, other.min].into_iter().flatten().min();
        self.max = [self.max, other.max].into_iter().flatten().max();
        self.customers.extend(other.customers.iter().cloned());
    }
}

/// A `streamlens run --no-dashboard` process, killed when dropped.
pub struct RunProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl RunProcess {
    /// Starts one on the config `text` (written to `dir/<name>.toml`; its log, stderr at
    /// `RUST_LOG=info`, to `dir/<name>.log`) and waits until its pipeline has started.
    pub async fn started(dir: &Path, name: &str, text: &str) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_streamlens"))
            .args(["run", "--no-dashboard", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut run = RunProcess { child, log };
        let since = std::time::Instant::now();
        while !run.logs().contains("pipeline started") {
            assert!(
                since.elapsed() < std::time::Duration::from_secs(60) && run.running(),
                "the pipeline did not start: {}",
                run.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        run
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while it runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Kills it (SIGKILL: no shutdown of any kind) and waits for it to die.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
