//! streamlens: real-time analytics on DynamoDB change data capture.
//!
//! ```text
//! DynamoDB Streams ──► ingest ──► aggregator (polars windows) ──► store ──► dashboard
//!   (or an archive)                exact, event time               embedded or OpenSearch
//! ```
//!
//! This crate wires the stages together: [`config`] reads the one TOML file that describes a
//! deployment, [`pipeline`] runs source → window engine → store with a bounded channel between
//! source and engine (backpressure), and [`app`] adds the dashboard and the Prometheus metrics;
//! [`query_cli`] is `streamlens query` and [`changes_cli`] is `streamlens changes`.
//! With no config file at all, [`config::Config::demo`] runs the embedded demo: the shipped sample
//! orders stream replayed live into the embedded store.

pub mod app;
pub mod bench;
pub mod changes_cli;
pub mod config;
pub mod history_cli;
pub mod pipeline;
pub mod quarantine;
pub mod query_cli;
pub mod replay;
pub mod replay_runner;
