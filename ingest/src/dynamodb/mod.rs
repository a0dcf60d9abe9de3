//! The DynamoDB Streams source.
//!
//! Split the way Quickwit splits its Kinesis source:
//!
//! * [`api`] — the calls (DescribeStream with pagination, GetShardIterator, GetRecords), the
//!   classification of their failures into what the read loop does about them ([`api::ApiError`]),
//!   and the conversion of SDK records into change events;
//! * [`shard_consumer`] — one task per shard: the read loop (poll again at once while records come,
//!   back off when empty, jittered exponential backoff on throttling and 5xx, a fresh iterator after
//!   expiry, a recorded gap and a restart from trim-horizon after trimmed data);
//! * [`source`] — discovery and lineage: which shards exist, which may be read (a child only after its
//!   parent is read to its end or gone), where each starts (checkpoint, or the configured start), and
//!   a stream that was disabled and re-enabled under a new ARN;
//! * [`lease`] — several processes sharing one stream through a DynamoDB lease table.

pub mod api;
pub mod lease;
pub mod shard_consumer;
pub mod source;

pub use source::DynamoDbSource;
