//! Runs a DynamoDB Streams source against the scripted fault server and collects what it
//! delivers; shared by the source-level test files.
#![allow(dead_code)]

use std::time::Duration;

use streamlens_infra::fault_server::RecordSpec;
use streamlens_ingest::{
    config::DynamoDbSourceConfig, dynamodb::DynamoDbSource, Batch, Checkpoint, Error, Source,
    SourceSummary,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub fn records(prefix: &str, n: usize) -> Vec<RecordSpec> {
    (0..n)
        .map(|i| RecordSpec::insert(&format!("{prefix}{i}"), "1.50", 1_767_225_600 + i as i64))
        .collect()
}

/// A running source and the batches it delivers.
pub struct Run {
    rx: mpsc::Receiver<Batch>,
    task: tokio::task::JoinHandle<Result<SourceSummary, Error>>,
    batches: Vec<Batch>,
}

impl Run {
    pub async fn start(config: DynamoDbSourceConfig, checkpoint: Checkpoint) -> Run {
        Self::start_in(config, checkpoint, None).await
    }

    /// Starts after `checkpoint`, whose positions belong to `stream`.
    pub async fn start_in(
        config: DynamoDbSourceConfig,
        checkpoint: Checkpoint,
        stream: Option<String>,
    ) -> Run {
        let source = DynamoDbSource::connect(&config)
            .await
            .unwrap()
            .resume_from(checkpoint)
            .in_stream(stream);
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(Box::new(source).run(tx, CancellationToken::new()));
        Run {
            rx,
            task,
            batches: Vec::new(),
        }
    }

    /// Collects until `n` events have arrived.
    pub async fn until(&mut self, n: usize) {
        while self.events().len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{n} events within 20 s, got {:?}", self.events()))
                .expect("source still running");
            self.batches.push(batch);
        }
    }

    /// Collects everything until the source stops, within `limit`.
    pub async fn finish(mut self, limit: Duration) -> (Vec<Batch>, Result<SourceSummary, Error>) {
        let collect = async {
            while let Some(batch) = self.rx.recv().await {
                self.batches.push(batch);
            }
            self.task.await.unwrap()
        };
        let result = tokio::time::timeout(limit, collect)
            .await
            .unwrap_or_else(|_| panic!("the source stops on its own within {limit:?}"));
        (self.batches, result)
    }

    pub fn events(&self) -> Vec<(String, String)> {
        keys(&self.batches)
    }
}

/// (shard, item key) of every event, in delivery order.
pub fn keys(batches: &[Batch]) -> Vec<(String, String)> {
    batches
        .iter()
        .flat_map(|b| &b.events)
        .map(|e| {
            let key = match &e.keys["pk"] {
                streamlens_core::AttributeValue::S(s) => s.clone(),
                other => panic!("{other:?}"),
            };
            (e.shard_id.clone(), key)
        })
        .collect()
}

pub fn expected(shard: &str, prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (shard.to_owned(), format!("{prefix}{i}")))
        .collect()
}
