//! Replays as the dashboard and `/api/replays` show them: what to start ([`ReplayRequest`]) and
//! how one is going ([`ReplayStatus`]).
//!
//! A replay recomputes aggregates from the archive into a namespace of their own (see
//! `streamlens replay`); the process serving the dashboard runs the ones started from it, and
//! lists the namespaces replayed before (from the command line too) as [`ReplayState::Stored`].

use serde::{Deserialize, Serialize};

/// A replay to start: `POST /api/replays`, or the replays page's form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The namespace to replay into: 1 to 64 lowercase letters, digits, `-` and `_`.
    pub namespace: String,
    /// Only changes at or after this time: epoch ms, ISO-8601, `now-<duration>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Only changes before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Pace at this multiple of real time instead of full speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// Empty the namespace first (else a namespace replayed before goes on from its checkpoint).
    #[serde(default)]
    pub fresh: bool,
    /// Another pipeline spec to compute instead of the live one (TOML with a `[pipeline]`
    /// table, as `streamlens replay --spec` reads), e.g. to backfill a new metric or dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
}

/// Where a replay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayState {
    /// Reading.
    Running,
    /// Read to the end of the archive (or range).
    Done,
    /// Stopped before the end: starting it again goes on from its checkpoint.
    Stopped,
    /// Ended with an error (in `error`).
    Failed,
    /// A namespace replayed before, not by this process.
    Stored,
}

impl ReplayState {
    /// The word the page shows.
    pub fn label(self) -> &'static str {
        match self {
            ReplayState::Running => "running",
            ReplayState::Done => "done",
            ReplayState::Stopped => "stopped",
            ReplayState::Failed => "failed",
            ReplayState::Stored => "stored",
        }
    }
}

/// A replay's progress: `GET /api/replays` lists these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayStatus {
    /// The namespace.
    pub namespace: String,
    /// Running, done, stopped, failed, or stored.
    pub state: ReplayState,
    /// What was asked.
    pub request: ReplayRequest,
    /// Archive lines read so far (a resumed replay counts those it passed over), or changes read
    /// from a stream.
    pub read: u64,
    /// The archive's lines (estimated for a large plain file); 0 while unknown.
    pub total: u64,
    /// The lines a resumed replay passed over (its checkpoint covered them).
    pub resumed_after: u64,
    /// Lines per second read by this run (those passed over not counted).
    pub rate: f64,
    /// Seconds to the end at that rate, when known.
    pub eta_seconds: Option<f64>,
    /// When it started, epoch ms.
    pub started_ms: i64,
    /// When it ended, epoch ms.
    pub finished_ms: Option<i64>,
    /// Changes aggregated by this run, once ended.
    pub aggregated: u64,
    /// Aggregate documents written by this run, once ended.
    pub docs_written: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReplayStatus {
    /// Done so far, 0 to 1, when the total is known.
    pub fn fraction(&self) -> Option<f64> {
        (self.total > 0).then(|| (self.read as f64 / self.total as f64).min(1.0))
    }
}
