//! A scripted DynamoDB Streams server, for testing what moto cannot produce.
//!
//! moto covers the normal path of a DynamoDB Streams reader. It cannot split a shard, roll one
//! over, expire an iterator, trim data under a reader, throttle, fail with a 5xx, delete a stream
//! on cue, or disable a stream and enable a new one. [`FaultServer`] can: it serves one table
//! (`orders`) and its streams over HTTP, speaking the DynamoDB Streams wire protocol (and
//! DynamoDB's `DescribeTable`) closely enough that the real `aws-sdk-dynamodbstreams` and
//! `aws-sdk-dynamodb` clients, pointed at [`FaultServer::url`] with `endpoint_url`, parse every
//! answer and map every error to its typed variant. The test scripts the streams (shards, records,
//! faults) between the calls of the code under test, then checks what was asked with
//! [`FaultServer::calls`].
//!
//! # What it fakes
//!
//! AWS JSON 1.0: `POST /` with `X-Amz-Target: DynamoDBStreams_20120810.<Operation>` (or
//! `DynamoDB_20120810.DescribeTable`), a JSON body in, a JSON body out (`Content-Type:
//! application/x-amz-json-1.0`). Five operations:
//!
//! * `ListStreams`: the table's streams that still exist, oldest first (table `orders`), pages of
//!   at most `Limit` (1 to 100) with `LastEvaluatedStreamArn` when streams remain;
//! * `DescribeStream`: the shards of the stream named by `StreamArn` in the order they were added,
//!   with `ParentShardId` and `SequenceNumberRange`; `StreamStatus` `ENABLED`, or `DISABLED` after
//!   [`FaultServer::disable_stream`]; pages of at most `min(Limit, page size)` shards (`Limit` 1
//!   to 100, page size 100 or [`FaultServer::set_describe_page_size`]), with
//!   `LastEvaluatedShardId` when shards remain after the page;
//! * `GetShardIterator`: `TRIM_HORIZON` (the oldest untrimmed record), `LATEST` (after the current
//!   last record), `AT_SEQUENCE_NUMBER` and `AFTER_SEQUENCE_NUMBER` (the sequence number must lie
//!   in the shard's range); iterators are opaque base64 tokens that name their stream and shard;
//! * `GetRecords`: at most `min(Limit, 1000)` records (`Limit` 1 to 1000, as in DynamoDB; outside
//!   that range is a `ValidationException`) and at most 1 MB of records (a record bigger than that
//!   still comes alone). An open shard always answers a `NextShardIterator`, even with no
//!   records; a closed shard answers none once its last record has been returned;
//! * `DescribeTable` (DynamoDB, `{"TableName": "orders"}`, the table's ARN works too): the table
//!   with key `pk` (a string), `TableStatus` `ACTIVE`, `CreationDateTime` in epoch seconds,
//!   `LatestStreamArn` / `LatestStreamLabel` of the current stream and `StreamSpecification`
//!   `{"StreamEnabled": ..., "StreamViewType": "NEW_AND_OLD_IMAGES"}`. Any other table name is a
//!   400 `ResourceNotFoundException`.
//!
//! Sequence numbers come from one counter for the whole server, written as zero-padded decimal
//! strings of 21 digits, so they increase within a shard, across shards and across streams,
//! string order is numeric order, and a child shard starts after its parent ends. Records have the
//! GetRecords JSON shape, `ApproximateCreationDateTime` in epoch seconds (a JSON number, which is
//! what the SDK parses) and `StreamViewType` `NEW_AND_OLD_IMAGES`; a [`RecordSpec`] with `ttl`
//! gets the `userIdentity` of a TTL deletion, `{"Type": "Service", "PrincipalId":
//! "dynamodb.amazonaws.com"}` (the wire spelling, which the SDK reads; Lambda events spell the
//! fields `type`, `principalId`).
//!
//! # Streams over time
//!
//! The server starts with one enabled stream, labelled [`STREAM_LABEL`]. As in DynamoDB, a table
//! has at most one enabled stream, and disabling it then enabling streams again makes a new
//! stream with a new label and ARN:
//!
//! 1. [`FaultServer::disable_stream`] closes the current stream's open shards and marks it
//!    `DISABLED`; `DescribeTable` then answers `StreamEnabled: false` and still the old
//!    `LatestStreamArn`;
//! 2. [`FaultServer::enable_new_stream`] starts a new stream with no shards, labelled one hour
//!    after the one before; `DescribeTable` answers its ARN with `StreamEnabled: true`.
//!
//! The old stream stays: `DescribeStream` (`DISABLED`, its closed shards), `GetShardIterator` and
//! `GetRecords` answer for it until its records run out, as DynamoDB does for 24 hours. Requests
//! are routed by their `StreamArn` (GetRecords: by the stream its iterator names); an ARN that is
//! not one of the table's streams is a `ResourceNotFoundException`.
//!
//! The script methods that shape a stream ([`FaultServer::add_shard`], [`FaultServer::push`],
//! [`FaultServer::close_shard`], [`FaultServer::rollover`], [`FaultServer::split`],
//! [`FaultServer::trim_before`], [`FaultServer::disable_stream`]) act on the current stream, the
//! newest one, whose ARN [`FaultServer::stream_arn`] returns: after `enable_new_stream` they act on
//! the new stream. Shard ids need only be unique within a stream. [`FaultServer::expire_iterators`],
//! [`FaultServer::fail_next`] and [`FaultServer::set_describe_page_size`] apply to every stream.
//!
//! # Faults
//!
//! | script | the next matching calls answer | SDK error (`as_service_error()`) |
//! |---|---|---|
//! | [`FaultServer::expire_iterators`] | every iterator issued so far: 400 `ExpiredIteratorException` | `is_expired_iterator_exception()` |
//! | [`FaultServer::trim_before`] | a reader positioned before a dropped record: 400 `TrimmedDataAccessException` (GetRecords, GetShardIterator) | `is_trimmed_data_access_exception()` |
//! | [`FaultServer::delete_table`] (or [`FaultServer::delete_stream`]) | every call about the table or any of its streams: 400 `ResourceNotFoundException`; `ListStreams` without a table name lists nothing | `is_resource_not_found_exception()` |
//! | [`FaultServer::fail_next`] with [`Fault::Throttle`] | 400 `LimitExceededException` | `is_limit_exceeded_exception()` (GetRecords); elsewhere unmodeled, `code() == Some("LimitExceededException")` |
//! | [`FaultServer::fail_next`] with [`Fault::Throttling`] | 400 `ThrottlingException` | unmodeled in this SDK: `code() == Some("ThrottlingException")` |
//! | [`FaultServer::fail_next`] with [`Fault::Internal`] | 500 `InternalServerError` | `is_internal_server_error()` |
//!
//! A malformed request (bad JSON, a missing or mistyped field, a `Limit` out of range, an
//! unreadable iterator or sequence number) is a 400 `ValidationException` naming the problem;
//! an unknown `X-Amz-Target` is a 400 `UnknownOperationException`. Errors are
//! `{"__type": "<namespace>#<Name>", "message": "..."}`, which the SDK reads from `__type`.
//!
//! The SDK's standard retry policy retries throttling errors and 5xx answers (three attempts in
//! all, with backoff): a test that wants to see the typed error either injects more faults than
//! that or builds its client with `RetryConfig::disabled()`. Each attempt is one entry of
//! [`FaultServer::calls`].
//!
//! Shard topology changes are scripted as DynamoDB does them: a rollover closes a shard and opens
//! a child ([`FaultServer::rollover`]), a split closes a shard and opens two
//! ([`FaultServer::split`]); [`FaultServer::disable_stream`] closes every shard and reports the
//! stream `DISABLED`.
//!
//! The control methods (`add_shard`, `push`, ...) are for the test, and panic on a scripting
//! mistake (an unknown shard, a push into a closed shard, a new stream while one is enabled).
//!
//! # Example
//!
//! ```no_run
//! use streamlens_infra::fault_server::{Fault, FaultServer, RecordSpec};
//!
//! # async fn example() {
//! let server = FaultServer::start().await;
//! server.add_shard("shardId-1", None);
//! let seqs = server.push("shardId-1", vec![RecordSpec::insert("order#1", "10.00", 1_767_225_600)]);
//! server.fail_next("GetRecords", 1, Fault::Internal);
//! let config = streamlens_ingest::aws::sdk_config(Some("us-east-1"), Some(&server.url())).await;
//! let client = aws_sdk_dynamodbstreams::Client::new(&config);
//! // ... run the reader under test with `client` and `server.stream_arn()` ...
//! assert_eq!(server.calls()[0].operation, "DescribeStream");
//!
//! // Later: the user disables the stream and enables a new one.
//! server.disable_stream();
//! let new_arn = server.enable_new_stream();
//! server.add_shard("shardId-2", None); // a shard of the new stream
//! assert_eq!(server.stream_arn(), new_arn);
//! # let _ = (seqs, client);
//! # }
//! ```

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State as AxumState,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// Most records one GetRecords call returns.
pub const MAX_RECORDS_PER_CALL: usize = 1000;
/// Most bytes of records one GetRecords call returns (1 MB).
pub const MAX_BYTES_PER_CALL: usize = 1024 * 1024;
/// The table whose streams are served.
pub const TABLE_NAME: &str = "orders";
/// The ARN of the table; a stream's ARN is `{TABLE_ARN}/stream/{label}`.
pub const TABLE_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/orders";
/// The label of the first stream (its creation time). Each stream enabled later with
/// [`FaultServer::enable_new_stream`] is labelled one hour after the one before.
pub const STREAM_LABEL: &str = "2026-01-01T00:00:00.000";

/// The DynamoDB Streams operations served, as they appear after `DynamoDBStreams_20120810.` in
/// `X-Amz-Target`.
pub const OPERATIONS: [&str; 4] = [
    "DescribeStream",
    "GetShardIterator",
    "GetRecords",
    "ListStreams",
];

/// The DynamoDB operations served, as they appear after `DynamoDB_20120810.` in `X-Amz-Target`.
pub const TABLE_OPERATIONS: [&str; 1] = ["DescribeTable"];

const TARGET_PREFIX: &str = "DynamoDBStreams_20120810.";
const TABLE_TARGET_PREFIX: &str = "DynamoDB_20120810.";
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const ERROR_NAMESPACE: &str = "com.amazonaws.dynamodb.v20120810";
/// 2026-01-01T00:00:00Z: the table's creation, and the first stream's (matches STREAM_LABEL).
const CREATION_SECS: i64 = 1_767_225_600;
/// Each new stream is created this long after the one before (its label says so).
const STREAM_INTERVAL_SECS: i64 = 3600;
const DEFAULT_DESCRIBE_PAGE: usize = 100;
const MAX_DESCRIBE_LIMIT: i64 = 100;
const MAX_LIST_LIMIT: i64 = 100;

/// An error injected with [`FaultServer::fail_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 `LimitExceededException`, DynamoDB Streams' own throttling error.
    Throttle,
    /// HTTP 400 `ThrottlingException`, the generic AWS throttling error.
    Throttling,
    /// HTTP 500 `InternalServerError`.
    Internal,
}

/// One request the server answered, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The operation (`GetRecords`, `DescribeTable`, ...), or the raw `X-Amz-Target` of an unknown
    /// one.
    pub operation: String,
    /// The stream asked about: `StreamArn` of DescribeStream and GetShardIterator, the stream of
    /// GetRecords' iterator. `None` for ListStreams, DescribeTable and a request too malformed to
    /// tell.
    pub stream_arn: Option<String>,
    /// The shard asked about: `ShardId` of GetShardIterator, the shard of GetRecords' iterator.
    pub shard_id: Option<String>,
    /// Records returned (GetRecords only).
    pub records: usize,
    /// The error answered (`ExpiredIteratorException`, ...), if any.
    pub error: Option<String>,
}

/// A record to append to a shard with [`FaultServer::push`].
///
/// `keys` and the images are DynamoDB JSON maps (`{"pk": {"S": "order#1"}}`).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSpec {
    /// `INSERT`, `MODIFY` or `REMOVE`.
    pub event_name: String,
    /// The key attributes.
    pub keys: Value,
    /// The item after the change (INSERT, MODIFY).
    pub new_image: Option<Value>,
    /// The item before the change (MODIFY, REMOVE).
    pub old_image: Option<Value>,
    /// `ApproximateCreationDateTime`, epoch seconds.
    pub creation_time_secs: i64,
    /// A deletion by TTL: the record carries `userIdentity` `Service` / `dynamodb.amazonaws.com`.
    pub ttl: bool,
}

impl RecordSpec {
    /// The key `{"pk": {"S": pk}}`.
    pub fn key(pk: &str) -> Value {
        json!({ "pk": { "S": pk } })
    }

    /// The item `{"pk": {"S": pk}, "amount": {"N": amount}}`.
    pub fn item(pk: &str, amount: &str) -> Value {
        json!({ "pk": { "S": pk }, "amount": { "N": amount } })
    }

    /// An INSERT of the item `pk` with `amount`, at `t` (epoch seconds).
    pub fn insert(pk: &str, amount: &str, t: i64) -> Self {
        RecordSpec {
            event_name: "INSERT".to_owned(),
            keys: Self::key(pk),
            new_image: Some(Self::item(pk, amount)),
            old_image: None,
            creation_time_secs: t,
            ttl: false,
        }
    }

    /// A MODIFY of the item `pk` from `old_amount` to `new_amount`, at `t`.
    pub fn modify(pk: &str, old_amount: &str, new_amount: &str, t: i64) -> Self {
        RecordSpec {
            event_name: "MODIFY".to_owned(),
            keys: Self::key(pk),
            new_image: Some(Self::item(pk, new_amount)),
            old_image: Some(Self::item(pk, old_amount)),
            creation_time_secs: t,
            ttl: false,
        }
    }

    /// A REMOVE of the item `pk` that had `amount`, at `t`.
    pub fn remove(pk: &str, amount: &str, t: i64) -> Self {
        RecordSpec {
            event_name: "REMOVE".to_owned(),
            keys: Self::key(pk),
            new_image: None,
            old_image: Some(Self::item(pk, amount)),
            creation_time_secs: t,
            ttl: false,
        }
    }

    /// A REMOVE by TTL expiry of the item `pk` that had `amount`, at `t`.
    pub fn ttl_expiry(pk: &str, amount: &str, t: i64) -> Self {
        RecordSpec {
            ttl: true,
            ..Self::remove(pk, amount, t)
        }
    }
}

/// A running fake DynamoDB Streams endpoint serving one table and its streams. Clones share the
/// server; it stops when the last clone is dropped or on [`FaultServer::shutdown`].
#[derive(Clone)]
pub struct FaultServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    life: Arc<Lifetime>,
}

impl std::fmt::Debug for FaultServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Stops the server when dropped: dropping the sender ends the graceful-shutdown signal.
struct Lifetime {
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<ServerState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ServerState> {
        // A control method that panicked (a scripting mistake) leaves consistent state behind.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct StoredRecord {
    seq: u64,
    /// Bytes of the record's JSON, counted against [`MAX_BYTES_PER_CALL`].
    size: usize,
    json: Value,
}

struct Shard {
    id: String,
    parent: Option<String>,
    start: u64,
    end: Option<u64>,
    /// Sequence number of the last record ever pushed, trimmed or not.
    last: Option<u64>,
    /// Records below this were trimmed: a reader positioned below it has lost data.
    trim_horizon: u64,
    records: Vec<StoredRecord>,
}

/// One stream of the table.
struct Stream {
    arn: String,
    label: String,
    creation_secs: i64,
    /// `DISABLED`: its shards are closed, the table no longer writes to it.
    disabled: bool,
    shards: Vec<Shard>,
}

impl Stream {
    /// The table's `index`-th stream (0 for the first), created `index` hours after the table.
    fn new(index: usize) -> Stream {
        let creation_secs = CREATION_SECS + STREAM_INTERVAL_SECS * index as i64;
        let label = stream_label(creation_secs);
        Stream {
            arn: format!("{TABLE_ARN}/stream/{label}"),
            label,
            creation_secs,
            disabled: false,
            shards: Vec::new(),
        }
    }

    fn shard(&self, shard_id: &str) -> Option<&Shard> {
        self.shards.iter().find(|s| s.id == shard_id)
    }
}

struct ServerState {
    next_seq: u64,
    generation: u64,
    /// Every stream the table had, oldest first; the last is the current one. Never empty.
    streams: Vec<Stream>,
    faults: HashMap<String, VecDeque<Fault>>,
    /// The table, and with it every stream, was deleted.
    deleted: bool,
    describe_page_size: usize,
    calls: Vec<Call>,
    requests: u64,
}

/// What a shard iterator encodes.
#[derive(Serialize, Deserialize)]
struct IteratorToken {
    /// The stream's ARN.
    stream: String,
    /// The shard.
    shard: String,
    /// The next record returned is the first with a sequence number at least this.
    from: u64,
    /// [`ServerState::generation`] when issued; older generations are expired.
    generation: u64,
}

/// `YYYY-MM-DDThh:mm:ss.000` of epoch seconds (UTC), the form of a DynamoDB stream label.
fn stream_label(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn format_seq(seq: u64) -> String {
    format!("{seq:021}")
}

fn parse_seq(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl FaultServer {
    /// Starts a server on `127.0.0.1`, on a free port, serving the table `orders` with one enabled
    /// stream ([`STREAM_LABEL`]) with no shards.
    ///
    /// # Panics
    ///
    /// If no local port can be bound.
    pub async fn start() -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fault server: cannot bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("fault server: listener has no local address");
        let shared = Arc::new(Shared {
            state: Mutex::new(ServerState {
                next_seq: 1,
                generation: 0,
                streams: vec![Stream::new(0)],
                faults: HashMap::new(),
                deleted: false,
                describe_page_size: DEFAULT_DESCRIBE_PAGE,
                calls: Vec::new(),
                requests: 0,
            }),
        });
        let app = Router::new()
            .route("/", post(handle))
            .with_state(shared.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Sent by `shutdown`, or the sender dropped with the last handle.
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!("fault server stopped: {e}");
            }
        });
        FaultServer {
            shared,
            addr,
            life: Arc::new(Lifetime {
                stop: Mutex::new(Some(stop_tx)),
                task: Mutex::new(Some(task)),
            }),
        }
    }

    /// The endpoint, `http://127.0.0.1:PORT`, for the SDK's `endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A streamlens source configuration reading this server's current stream (by its ARN) from
    /// trim-horizon, with short intervals for tests: 20ms polls, 100ms discovery, backoff up to
    /// 100ms, and a stop once caught up and idle for 1.5s. To follow the table from stream to
    /// stream instead, set `table: Some("orders".into())` and `stream_arn: None`.
    pub fn source_config(&self) -> streamlens_ingest::config::DynamoDbSourceConfig {
        streamlens_ingest::config::DynamoDbSourceConfig {
            table: None,
            stream_arn: Some(self.stream_arn()),
            region: Some("us-east-1".into()),
            endpoint_url: Some(self.url()),
            start: streamlens_ingest::config::StartPosition::TrimHorizon,
            poll_interval: Duration::from_millis(20),
            discovery_interval: Duration::from_millis(100),
            max_records: 1000,
            max_backoff: Duration::from_millis(100),
            stop_when_idle: Some(Duration::from_millis(1500)),
            lease: None,
        }
    }

    /// The ARN of the current stream: the one `DescribeTable` names as `LatestStreamArn`, and the
    /// one the script methods act on.
    pub fn stream_arn(&self) -> String {
        self.shared.lock().current().arn.clone()
    }

    /// The ARNs of every stream the table had, oldest first (the last is [`Self::stream_arn`]).
    pub fn stream_arns(&self) -> Vec<String> {
        let state = self.shared.lock();
        state.streams.iter().map(|s| s.arn.clone()).collect()
    }

    /// Stops the server (for every clone) and waits until it no longer serves: later calls fail
    /// to connect.
    pub async fn shutdown(&self) {
        if let Some(stop) = lock(&self.life.stop).take() {
            let _ = stop.send(());
        }
        let task = lock(&self.life.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Adds an open shard to the current stream, after the existing ones, its
    /// StartingSequenceNumber a fresh sequence number. `parent` becomes its ParentShardId (it need
    /// not be a shard of the stream: real streams list children whose parent was already trimmed
    /// away).
    ///
    /// # Panics
    ///
    /// If the current stream has a shard `shard_id` already.
    pub fn add_shard(&self, shard_id: &str, parent: Option<&str>) {
        let mut state = self.shared.lock();
        assert!(
            state.current().shard(shard_id).is_none(),
            "fault server: shard `{shard_id}` exists already"
        );
        let start = state.fresh_seq();
        state.current_mut().shards.push(Shard {
            id: shard_id.to_owned(),
            parent: parent.map(str::to_owned),
            start,
            end: None,
            last: None,
            trim_horizon: start,
            records: Vec::new(),
        });
    }

    /// Appends records to an open shard of the current stream and returns their sequence numbers.
    ///
    /// # Panics
    ///
    /// If the shard does not exist or is closed, or a record's `event_name` is not INSERT, MODIFY
    /// or REMOVE or its `keys` are not a JSON object.
    pub fn push(&self, shard_id: &str, records: Vec<RecordSpec>) -> Vec<String> {
        let mut state = self.shared.lock();
        let index = state.shard_index(shard_id);
        assert!(
            state.current().shards[index].end.is_none(),
            "fault server: cannot push to shard `{shard_id}`: it is closed"
        );
        let mut assigned = Vec::with_capacity(records.len());
        for spec in records {
            assert!(
                matches!(spec.event_name.as_str(), "INSERT" | "MODIFY" | "REMOVE"),
                "fault server: event name must be INSERT, MODIFY or REMOVE, found `{}`",
                spec.event_name
            );
            assert!(
                spec.keys.is_object(),
                "fault server: record keys must be a JSON object, found {}",
                spec.keys
            );
            let seq = state.fresh_seq();
            let record = record_json(seq, spec);
            let size = record.to_string().len();
            let shard = &mut state.current_mut().shards[index];
            shard.last = Some(seq);
            shard.records.push(StoredRecord {
                seq,
                size,
                json: record,
            });
            assigned.push(format_seq(seq));
        }
        assigned
    }

    /// Closes a shard of the current stream: its EndingSequenceNumber becomes its last record's sequence number, or a
    /// fresh one if it never had records. Readers get its remaining records, then no
    /// NextShardIterator.
    ///
    /// # Panics
    ///
    /// If the shard does not exist or is closed already.
    pub fn close_shard(&self, shard_id: &str) {
        let mut state = self.shared.lock();
        let index = state.shard_index(shard_id);
        assert!(
            state.current().shards[index].end.is_none(),
            "fault server: shard `{shard_id}` is closed already"
        );
        state.close(index);
    }

    /// A shard rollover: closes `shard_id` (if open) and adds `next` with it as parent.
    pub fn rollover(&self, shard_id: &str, next: &str) {
        self.close_if_open(shard_id);
        self.add_shard(next, Some(shard_id));
    }

    /// A shard split: closes `parent` (if open) and adds the two `children` with it as parent.
    pub fn split(&self, parent: &str, children: [&str; 2]) {
        self.close_if_open(parent);
        for child in children {
            self.add_shard(child, Some(parent));
        }
    }

    fn close_if_open(&self, shard_id: &str) {
        let mut state = self.shared.lock();
        let index = state.shard_index(shard_id);
        if state.current().shards[index].end.is_none() {
            state.close(index);
        }
    }

    /// Drops the records of a shard of the current stream with a sequence number below `seq`, as
    /// the 24-hour retention
    /// does. An iterator positioned before a dropped record answers TrimmedDataAccessException;
    /// TRIM_HORIZON then starts at the first record kept.
    ///
    /// # Panics
    ///
    /// If the shard does not exist or `seq` is not a decimal sequence number.
    pub fn trim_before(&self, shard_id: &str, seq: &str) {
        let bound = parse_seq(seq)
            .unwrap_or_else(|| panic!("fault server: `{seq}` is not a sequence number"));
        let mut state = self.shared.lock();
        let index = state.shard_index(shard_id);
        let shard = &mut state.current_mut().shards[index];
        let keep = shard.records.partition_point(|r| r.seq < bound);
        if let Some(dropped) = keep.checked_sub(1).map(|i| shard.records[i].seq) {
            shard.trim_horizon = shard.trim_horizon.max(dropped + 1);
        }
        shard.records.drain(..keep);
    }

    /// Expires every iterator issued so far (ExpiredIteratorException); iterators issued later,
    /// including NextShardIterators, are valid.
    pub fn expire_iterators(&self) {
        self.shared.lock().generation += 1;
    }

    /// The next `times` calls of `operation` (`GetRecords`, `DescribeTable`, ...) answer `fault`,
    /// before anything else is looked at, whichever stream they are about. Faults queue up behind
    /// those already scripted for the operation.
    ///
    /// # Panics
    ///
    /// If `operation` is not one of [`OPERATIONS`] or [`TABLE_OPERATIONS`].
    pub fn fail_next(&self, operation: &str, times: usize, fault: Fault) {
        assert!(
            OPERATIONS.contains(&operation) || TABLE_OPERATIONS.contains(&operation),
            "fault server: unknown operation `{operation}`, expected one of {OPERATIONS:?} or \
             {TABLE_OPERATIONS:?}"
        );
        self.shared
            .lock()
            .faults
            .entry(operation.to_owned())
            .or_default()
            .extend(std::iter::repeat_n(fault, times));
    }

    /// Deletes the stream, as deleting its table does: the same as [`Self::delete_table`].
    pub fn delete_stream(&self) {
        self.delete_table();
    }

    /// Deletes the table and with it every stream it had: every call answers
    /// ResourceNotFoundException (DescribeTable, ListStreams with the table's name, and every call
    /// about any of its streams or their iterators), except ListStreams without a table name,
    /// which lists nothing.
    pub fn delete_table(&self) {
        self.shared.lock().deleted = true;
    }

    /// Disables the current stream: every open shard is closed and DescribeStream reports
    /// StreamStatus `DISABLED`; DescribeTable answers `StreamEnabled: false` and still names it as
    /// `LatestStreamArn`, as DynamoDB does. The records stay readable.
    pub fn disable_stream(&self) {
        let mut state = self.shared.lock();
        state.current_mut().disabled = true;
        for index in 0..state.current().shards.len() {
            if state.current().shards[index].end.is_none() {
                state.close(index);
            }
        }
    }

    /// Enables a new stream on the table after [`Self::disable_stream`], as `UpdateTable` with
    /// `StreamEnabled: true` does: a new stream, labelled one hour after the previous one, with a
    /// new ARN and no shards. Returns its ARN.
    ///
    /// DescribeTable then names it as `LatestStreamArn` with `StreamEnabled: true`, ListStreams
    /// lists it after the old ones, and from then on the script methods (`add_shard`, `push`,
    /// `close_shard`, `rollover`, `split`, `trim_before`, `disable_stream`) act on it. The old
    /// streams keep answering DescribeStream (`DISABLED`, their closed shards), GetShardIterator
    /// and GetRecords, as DynamoDB does for 24 hours.
    ///
    /// # Panics
    ///
    /// If the current stream is still enabled (DynamoDB allows one enabled stream per table), or
    /// the table was deleted.
    pub fn enable_new_stream(&self) -> String {
        let mut state = self.shared.lock();
        assert!(
            !state.deleted,
            "fault server: cannot enable a stream: the table was deleted"
        );
        assert!(
            state.current().disabled,
            "fault server: the table has an enabled stream: disable it before enabling a new one"
        );
        let stream = Stream::new(state.streams.len());
        let arn = stream.arn.clone();
        state.streams.push(stream);
        arn
    }

    /// DescribeStream answers pages of at most `n` shards (default 100).
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    pub fn set_describe_page_size(&self, n: usize) {
        assert!(n > 0, "fault server: describe page size must be at least 1");
        self.shared.lock().describe_page_size = n;
    }

    /// Every request answered so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn record_json(seq: u64, spec: RecordSpec) -> Value {
    let size_bytes = [
        Some(&spec.keys),
        spec.new_image.as_ref(),
        spec.old_image.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|v| v.to_string().len())
    .sum::<usize>();
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": spec.creation_time_secs,
        "Keys": spec.keys,
        "SequenceNumber": format_seq(seq),
        "SizeBytes": size_bytes,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    });
    if let Some(image) = spec.new_image {
        dynamodb["NewImage"] = image;
    }
    if let Some(image) = spec.old_image {
        dynamodb["OldImage"] = image;
    }
    let mut record = json!({
        "eventID": format!("{seq:032x}"),
        "eventName": spec.event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": dynamodb,
    });
    if spec.ttl {
        // The wire shape is `Type` / `PrincipalId`; Lambda events spell them `type` / `principalId`.
        record["userIdentity"] = json!({
            "Type": "Service",
            "PrincipalId": "dynamodb.amazonaws.com",
        });
    }
    record
}

/// An error answer.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    namespace: &'static str,
    name: &'static str,
    message: String,
}

impl ApiError {
    fn new(name: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            namespace: ERROR_NAMESPACE,
            name,
            message: message.into(),
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFoundException", message)
    }

    fn injected(fault: Fault) -> Self {
        match fault {
            Fault::Throttle => Self::new(
                "LimitExceededException",
                "request rate exceeds the limit of the stream (injected fault)",
            ),
            Fault::Throttling => Self::new("ThrottlingException", "rate exceeded (injected fault)"),
            Fault::Internal => ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                ..Self::new(
                    "InternalServerError",
                    "internal server error (injected fault)",
                )
            },
        }
    }
}

/// The outcome of one request, for the answer and the call log.
struct Outcome {
    result: Result<Value, ApiError>,
    stream_arn: Option<String>,
    shard_id: Option<String>,
    records: usize,
}

/// The operation an `X-Amz-Target` names, if it is one served.
fn known_operation(target: &str) -> Option<&'static str> {
    let (operations, op): (&[&'static str], &str) =
        if let Some(op) = target.strip_prefix(TARGET_PREFIX) {
            (&OPERATIONS, op)
        } else {
            (&TABLE_OPERATIONS, target.strip_prefix(TABLE_TARGET_PREFIX)?)
        };
    operations.iter().copied().find(|known| *known == op)
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let operation = target.as_deref().and_then(known_operation);
    let mut state = shared.lock();
    state.requests += 1;
    let request_id = format!("FAULTSERVER{:041}", state.requests);
    let (logged_operation, outcome) = match operation {
        Some(operation) => (operation.to_owned(), state.dispatch(operation, &body)),
        None => {
            let message = match &target {
                Some(target) => format!("unknown operation `{target}`"),
                None => "missing x-amz-target header".to_owned(),
            };
            let error = ApiError {
                namespace: "com.amazon.coral.service",
                ..ApiError::new("UnknownOperationException", message)
            };
            let outcome = Outcome {
                result: Err(error),
                stream_arn: None,
                shard_id: None,
                records: 0,
            };
            (target.unwrap_or_default(), outcome)
        }
    };
    state.calls.push(Call {
        operation: logged_operation,
        stream_arn: outcome.stream_arn,
        shard_id: outcome.shard_id,
        records: outcome.records,
        error: outcome.result.as_ref().err().map(|e| e.name.to_owned()),
    });
    drop(state);
    let (status, body) = match outcome.result {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => (
            e.status,
            json!({ "__type": format!("{}#{}", e.namespace, e.name), "message": e.message }),
        ),
    };
    let mut response = (status, body.to_string()).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response_headers.insert("x-amzn-requestid", id);
    }
    response
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeStreamInput {
    stream_arn: String,
    limit: Option<i64>,
    exclusive_start_shard_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetShardIteratorInput {
    stream_arn: String,
    shard_id: String,
    shard_iterator_type: String,
    sequence_number: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetRecordsInput {
    shard_iterator: String,
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListStreamsInput {
    table_name: Option<String>,
    limit: Option<i64>,
    exclusive_start_stream_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeTableInput {
    table_name: String,
}

fn parse_input<T: DeserializeOwned>(operation: &str, body: &Value) -> Result<T, ApiError> {
    serde_json::from_value(body.clone())
        .map_err(|e| ApiError::validation(format!("invalid {operation} request: {e}")))
}

/// `Limit`, checked against `1..=max`; `max` when absent.
fn check_limit(limit: Option<i64>, max: i64) -> Result<usize, ApiError> {
    match limit {
        None => Ok(max as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::validation(format!(
            "limit must be between 1 and {max}, found {n}"
        ))),
    }
}

fn decode_iterator(text: &str) -> Option<IteratorToken> {
    let bytes = BASE64.decode(text).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn encode_iterator(token: &IteratorToken) -> String {
    // Serializing a struct of strings and integers cannot fail.
    BASE64.encode(serde_json::to_vec(token).unwrap_or_default())
}

impl ServerState {
    fn fresh_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The current stream: the newest.
    fn current(&self) -> &Stream {
        self.streams.last().expect("the table always has a stream")
    }

    fn current_mut(&mut self) -> &mut Stream {
        self.streams
            .last_mut()
            .expect("the table always has a stream")
    }

    /// For the control methods: the index of a shard of the current stream, or a panic naming it.
    fn shard_index(&self, shard_id: &str) -> usize {
        self.current()
            .shards
            .iter()
            .position(|s| s.id == shard_id)
            .unwrap_or_else(|| panic!("fault server: no shard `{shard_id}` in the current stream"))
    }

    /// Closes the current stream's shard at `index`.
    fn close(&mut self, index: usize) {
        let end = match self.current().shards[index].last {
            Some(last) => last,
            None => self.fresh_seq(),
        };
        self.current_mut().shards[index].end = Some(end);
    }

    /// The stream a request names: ResourceNotFoundException if it is none of the table's, or the
    /// table was deleted.
    fn stream(&self, arn: &str) -> Result<&Stream, ApiError> {
        match self.streams.iter().find(|s| s.arn == arn) {
            Some(_) if self.deleted => Err(ApiError::not_found(format!(
                "requested resource not found: stream {arn} was deleted"
            ))),
            Some(stream) => Ok(stream),
            None => Err(ApiError::not_found(format!(
                "requested resource not found: stream {arn} does not exist"
            ))),
        }
    }

    /// Whether `name` (a table name or ARN) is the table, and it was not deleted.
    fn is_table(&self, name: &str) -> bool {
        !self.deleted && (name == TABLE_NAME || name == TABLE_ARN)
    }

    fn dispatch(&mut self, operation: &str, body: &[u8]) -> Outcome {
        let parsed: Result<Value, String> = if body.is_empty() {
            Ok(json!({}))
        } else {
            serde_json::from_slice(body).map_err(|e| format!("request body is not JSON: {e}"))
        };
        let token = match (operation, &parsed) {
            ("GetRecords", Ok(body)) => body
                .get("ShardIterator")
                .and_then(Value::as_str)
                .and_then(decode_iterator),
            _ => None,
        };
        let field = |name: &str| {
            parsed
                .as_ref()
                .ok()
                .and_then(|body| body.get(name)?.as_str().map(str::to_owned))
        };
        let (stream_arn, shard_id) = match operation {
            "DescribeStream" => (field("StreamArn"), None),
            "GetShardIterator" => (field("StreamArn"), field("ShardId")),
            "GetRecords" => match token {
                Some(token) => (Some(token.stream), Some(token.shard)),
                None => (None, None),
            },
            _ => (None, None),
        };
        let mut outcome = Outcome {
            result: Ok(Value::Null),
            stream_arn,
            shard_id,
            records: 0,
        };
        if let Some(fault) = self.faults.get_mut(operation).and_then(VecDeque::pop_front) {
            outcome.result = Err(ApiError::injected(fault));
            return outcome;
        }
        let body = match parsed {
            Ok(body) if body.is_object() => body,
            Ok(_) => {
                outcome.result = Err(ApiError::validation("request body must be a JSON object"));
                return outcome;
            }
            Err(message) => {
                outcome.result = Err(ApiError::validation(message));
                return outcome;
            }
        };
        outcome.result = match operation {
            "ListStreams" => self.list_streams(&body),
            "DescribeTable" => self.describe_table(&body),
            "DescribeStream" => self.describe_stream(&body),
            "GetShardIterator" => self.get_shard_iterator(&body),
            _ => self.get_records(&body).map(|(answer, records)| {
                outcome.records = records;
                answer
            }),
        };
        outcome
    }

    fn list_streams(&self, body: &Value) -> Result<Value, ApiError> {
        let input: ListStreamsInput = parse_input("ListStreams", body)?;
        let limit = check_limit(input.limit, MAX_LIST_LIMIT)?;
        if let Some(table) = &input.table_name {
            if !self.is_table(table) {
                return Err(ApiError::not_found(format!(
                    "requested resource not found: table {table} not found"
                )));
            }
        }
        if self.deleted {
            return Ok(json!({ "Streams": [] }));
        }
        let begin = match &input.exclusive_start_stream_arn {
            None => 0,
            Some(arn) => match self.streams.iter().position(|s| &s.arn == arn) {
                Some(index) => index + 1,
                None => {
                    return Err(ApiError::validation(format!(
                        "exclusive start stream arn {arn} is not a stream of table {TABLE_NAME}"
                    )))
                }
            },
        };
        let end = (begin + limit).min(self.streams.len());
        let page = &self.streams[begin..end];
        let streams: Vec<Value> = page
            .iter()
            .map(|stream| {
                json!({
                    "StreamArn": stream.arn,
                    "TableName": TABLE_NAME,
                    "StreamLabel": stream.label,
                })
            })
            .collect();
        let mut answer = json!({ "Streams": streams });
        if let (true, Some(last)) = (end < self.streams.len(), page.last()) {
            answer["LastEvaluatedStreamArn"] = json!(last.arn);
        }
        Ok(answer)
    }

    fn describe_table(&self, body: &Value) -> Result<Value, ApiError> {
        let input: DescribeTableInput = parse_input("DescribeTable", body)?;
        if !self.is_table(&input.table_name) {
            return Err(ApiError::not_found(format!(
                "requested resource not found: table {} not found",
                input.table_name
            )));
        }
        let stream = self.current();
        Ok(json!({
            "Table": {
                "TableName": TABLE_NAME,
                "TableArn": TABLE_ARN,
                "TableStatus": "ACTIVE",
                "KeySchema": [{ "AttributeName": "pk", "KeyType": "HASH" }],
                "AttributeDefinitions": [{ "AttributeName": "pk", "AttributeType": "S" }],
                "CreationDateTime": CREATION_SECS,
                "LatestStreamArn": stream.arn,
                "LatestStreamLabel": stream.label,
                "StreamSpecification": {
                    "StreamEnabled": !stream.disabled,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            }
        }))
    }

    fn describe_stream(&self, body: &Value) -> Result<Value, ApiError> {
        let input: DescribeStreamInput = parse_input("DescribeStream", body)?;
        let stream = self.stream(&input.stream_arn)?;
        let page = check_limit(input.limit, MAX_DESCRIBE_LIMIT)?.min(self.describe_page_size);
        let begin = match &input.exclusive_start_shard_id {
            None => 0,
            Some(id) => match stream.shards.iter().position(|s| &s.id == id) {
                Some(index) => index + 1,
                None => {
                    return Err(ApiError::validation(format!(
                        "exclusive start shard id {id} is not a shard of the stream"
                    )))
                }
            },
        };
        let end = (begin + page).min(stream.shards.len());
        let shards: Vec<Value> = stream.shards[begin..end]
            .iter()
            .map(|shard| {
                let mut range = json!({ "StartingSequenceNumber": format_seq(shard.start) });
                if let Some(end) = shard.end {
                    range["EndingSequenceNumber"] = json!(format_seq(end));
                }
                let mut value = json!({ "ShardId": shard.id, "SequenceNumberRange": range });
                if let Some(parent) = &shard.parent {
                    value["ParentShardId"] = json!(parent);
                }
                value
            })
            .collect();
        let mut description = json!({
            "StreamArn": stream.arn,
            "StreamLabel": stream.label,
            "StreamStatus": if stream.disabled { "DISABLED" } else { "ENABLED" },
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "TableName": TABLE_NAME,
            "KeySchema": [{ "AttributeName": "pk", "KeyType": "HASH" }],
            "CreationRequestDateTime": stream.creation_secs,
            "Shards": shards,
        });
        if end < stream.shards.len() && end > begin {
            description["LastEvaluatedShardId"] = json!(stream.shards[end - 1].id);
        }
        Ok(json!({ "StreamDescription": description }))
    }

    fn get_shard_iterator(&self, body: &Value) -> Result<Value, ApiError> {
        let input: GetShardIteratorInput = parse_input("GetShardIterator", body)?;
        let stream = self.stream(&input.stream_arn)?;
        let shard = stream.shard(&input.shard_id).ok_or_else(|| {
            ApiError::not_found(format!(
                "requested resource not found: shard {} does not exist",
                input.shard_id
            ))
        })?;
        let kind = input.shard_iterator_type.as_str();
        let from = match kind {
            "TRIM_HORIZON" => shard.trim_horizon,
            "LATEST" => shard.end.map_or(self.next_seq, |end| end + 1),
            "AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER" => {
                let text = input.sequence_number.as_deref().ok_or_else(|| {
                    ApiError::validation(format!("sequence number is required for {kind}"))
                })?;
                let seq = parse_seq(text).ok_or_else(|| {
                    ApiError::validation(format!("invalid sequence number `{text}`"))
                })?;
                if seq < shard.start || shard.end.is_some_and(|end| seq > end) {
                    return Err(ApiError::validation(format!(
                        "sequence number {text} is not in the range of shard {}",
                        shard.id
                    )));
                }
                if kind == "AT_SEQUENCE_NUMBER" {
                    seq
                } else {
                    seq + 1
                }
            }
            other => {
                return Err(ApiError::validation(format!(
                    "unknown shard iterator type `{other}`, expected TRIM_HORIZON, LATEST, \
                     AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER"
                )))
            }
        };
        if from < shard.trim_horizon {
            return Err(ApiError::new(
                "TrimmedDataAccessException",
                format!(
                    "sequence number is before the trim horizon of shard {}",
                    shard.id
                ),
            ));
        }
        let token = IteratorToken {
            stream: stream.arn.clone(),
            shard: shard.id.clone(),
            from,
            generation: self.generation,
        };
        Ok(json!({ "ShardIterator": encode_iterator(&token) }))
    }

    fn get_records(&self, body: &Value) -> Result<(Value, usize), ApiError> {
        let input: GetRecordsInput = parse_input("GetRecords", body)?;
        let limit = check_limit(input.limit, MAX_RECORDS_PER_CALL as i64)?;
        let token = decode_iterator(&input.shard_iterator)
            .ok_or_else(|| ApiError::validation("invalid shard iterator"))?;
        let stream = self.stream(&token.stream)?;
        if token.generation < self.generation {
            return Err(ApiError::new(
                "ExpiredIteratorException",
                "iterator expired: the shard iterator has expired",
            ));
        }
        let shard = stream.shard(&token.shard).ok_or_else(|| {
            ApiError::not_found(format!(
                "requested resource not found: shard {} does not exist",
                token.shard
            ))
        })?;
        if token.from < shard.trim_horizon {
            return Err(ApiError::new(
                "TrimmedDataAccessException",
                format!(
                    "the iterator points before the trim horizon of shard {}: records were trimmed",
                    shard.id
                ),
            ));
        }
        let first = shard.records.partition_point(|r| r.seq < token.from);
        let mut taken = 0;
        let mut bytes = 0;
        for record in &shard.records[first..] {
            if taken == limit || (taken > 0 && bytes + record.size > MAX_BYTES_PER_CALL) {
                break;
            }
            bytes += record.size;
            taken += 1;
        }
        let returned = &shard.records[first..first + taken];
        let next_from = returned.last().map_or(token.from, |r| r.seq + 1);
        let exhausted = first + taken == shard.records.len();
        let mut answer = json!({
            "Records": returned.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
        });
        if !(shard.end.is_some() && exhausted) {
            let next = IteratorToken {
                stream: stream.arn.clone(),
                shard: shard.id.clone(),
                from: next_from,
                generation: self.generation,
            };
            answer["NextShardIterator"] = json!(encode_iterator(&next));
        }
        Ok((answer, taken))
    }
}
