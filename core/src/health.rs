//! The pipeline's health as the dashboard and `/api/health` show it.
//!
//! The source fills one [`ShardStatus`] per shard it reads (a DynamoDB stream; an archive has no
//! shards), the pipeline adds what it counted, and [`PipelineHealth`] puts both together with a few
//! derived views: the largest lag ([`PipelineHealth::max_ms_behind`]) and the human-readable
//! [`PipelineHealth::warnings`] the page shows in its alert banner — a gap (records trimmed by the
//! stream before they were read: data lost) or a shard more than [`BEHIND_WARNING_MS`] behind
//! its newest write.
//!
//! Everything here is plain data and integer arithmetic, so the server and the browser (which
//! renders the same values after hydration) format it identically.

use serde::{Deserialize, Serialize};

/// A shard read this far behind its newest write (milliseconds) gets a warning.
pub const BEHIND_WARNING_MS: i64 = 60_000;

/// The last gap of a shard: records trimmed before they could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapNote {
    /// The last sequence number read before the gap; `None` when nothing had been read yet.
    pub after: Option<String>,
    /// When the gap was detected (epoch ms, wall clock).
    pub at_ms: i64,
    /// What the service said.
    pub reason: String,
}

/// The health of one shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardStatus {
    /// The shard.
    pub shard_id: String,
    /// Sequence number of the last record read.
    pub position: Option<String>,
    /// Records decoded.
    pub events: u64,
    /// Records quarantined.
    pub quarantined: u64,
    /// Failed calls (throttles and retries included).
    pub errors: u64,
    /// Times records were trimmed before they could be read (each a recorded gap).
    pub gaps: u64,
    /// Creation time of the last record read (epoch ms).
    pub last_record_ms: Option<i64>,
    /// How far behind the shard's newest write the reader is: `0` once the last read found
    /// nothing new (caught up), else wall clock minus the last record's creation time. `None`
    /// before the first record.
    pub ms_behind: Option<i64>,
    /// The last read found no new records (or the shard was read to its end).
    #[serde(default)]
    pub caught_up: bool,
    /// A reader is on the shard now (false once it was read to its end, or handed to another
    /// process).
    #[serde(default)]
    pub reading: bool,
    /// Records decoded per second, over the time since the previous health snapshot (at least a
    /// second); `None` for the first snapshot.
    #[serde(default)]
    pub records_per_s: Option<f64>,
    /// The most recent gap, if there was one.
    #[serde(default)]
    pub last_gap: Option<GapNote>,
}

/// What a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// Records were trimmed before they were read: their changes are missing from the aggregates.
    Gap,
    /// A shard is more than [`BEHIND_WARNING_MS`] behind its newest write.
    Behind,
}

impl WarningKind {
    /// `gap` or `behind`: the page's `data-health-warning` words.
    pub fn as_str(self) -> &'static str {
        match self {
            WarningKind::Gap => "gap",
            WarningKind::Behind => "behind",
        }
    }
}

/// One human-readable warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthWarning {
    /// What it is about.
    pub kind: WarningKind,
    /// The shard concerned.
    pub shard_id: String,
    /// The sentence to show.
    pub message: String,
}

/// The health of a running pipeline: `GET /api/health` and the dashboard's health strip.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineHealth {
    /// Per shard, for sources that read shards (a DynamoDB stream); empty for an archive.
    pub shards: Vec<ShardStatus>,
    /// Whether the source reads shards at all (false for archives, which have none to report).
    #[serde(default)]
    pub sharded: bool,
    /// Changes the pipeline received from the source.
    #[serde(default)]
    pub events: u64,
    /// Records quarantined by this process (undecodable, rejected by the engine, gaps).
    #[serde(default)]
    pub quarantined: u64,
    /// Gaps recorded, over all shards.
    #[serde(default)]
    pub gaps: u64,
    /// Failed calls to the stream (retried ones included), over all shards.
    #[serde(default)]
    pub errors: u64,
    /// When this snapshot was taken (epoch ms).
    #[serde(default)]
    pub at_ms: i64,
}

impl PipelineHealth {
    /// Puts the shards' status and the pipeline's counters together; `gaps` and `errors` are the
    /// shards' sums.
    pub fn new(
        sharded: bool,
        shards: Vec<ShardStatus>,
        events: u64,
        quarantined: u64,
        at_ms: i64,
    ) -> Self {
        PipelineHealth {
            gaps: shards.iter().map(|s| s.gaps).sum(),
            errors: shards.iter().map(|s| s.errors).sum(),
            shards,
            sharded,
            events,
            quarantined,
            at_ms,
        }
    }

    /// Shards a reader is on now.
    pub fn shards_reading(&self) -> usize {
        self.shards.iter().filter(|s| s.reading).count()
    }

    /// The largest lag of a shard being read; `None` when none has read a record yet.
    pub fn max_ms_behind(&self) -> Option<i64> {
        self.shards
            .iter()
            .filter(|s| s.reading)
            .filter_map(|s| s.ms_behind)
            .max()
    }

    /// Records per second over every shard; `None` until a rate is known for one.
    pub fn records_per_s(&self) -> Option<f64> {
        self.shards
            .iter()
            .filter_map(|s| s.records_per_s)
            .fold(None, |sum, r| Some(sum.unwrap_or(0.0) + r))
    }

    /// What needs attention, gaps first, then shards that fall behind (most behind first).
    pub fn warnings(&self) -> Vec<HealthWarning> {
        let mut warnings: Vec<HealthWarning> = self
            .shards
            .iter()
            .filter(|s| s.gaps > 0)
            .map(|s| {
                let after = s.last_gap.as_ref().and_then(|g| g.after.as_deref());
                let lost = match after {
                    Some(seq) => format!("records after sequence number {seq}"),
                    None => "records at its start".to_owned(),
                };
                let times = if s.gaps == 1 {
                    "1 gap".to_owned()
                } else {
                    format!("{} gaps", s.gaps)
                };
                HealthWarning {
                    kind: WarningKind::Gap,
                    shard_id: s.shard_id.clone(),
                    message: format!(
                        "Gap on shard {}: {lost} were trimmed by the stream before they were \
                         read, so their changes are missing from the aggregates ({times} \
                         recorded; see the quarantine).",
                        s.shard_id
                    ),
                }
            })
            .collect();
        let mut behind: Vec<(&ShardStatus, i64)> = self
            .shards
            .iter()
            .filter(|s| s.reading)
            .filter_map(|s| s.ms_behind.map(|ms| (s, ms)))
            .filter(|(_, ms)| *ms > BEHIND_WARNING_MS)
            .collect();
        behind.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.shard_id.cmp(&b.0.shard_id)));
        warnings.extend(behind.into_iter().map(|(s, ms)| HealthWarning {
            kind: WarningKind::Behind,
            shard_id: s.shard_id.clone(),
            message: format!(
                "Shard {} is {} behind its newest write (more than {}).",
                s.shard_id,
                format_ms(ms),
                format_ms(BEHIND_WARNING_MS)
            ),
        }));
        warnings
    }
}

/// A duration for people: `850 ms`, `4.2 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub fn format_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        return format!("{ms} ms");
    }
    if ms < 10_000 {
        return format!("{}.{} s", ms / 1_000, ms / 100 % 10);
    }
    let s = ms / 1_000;
    // a larger unit and, unless it is zero, the next smaller one
    let (big, big_unit, small, small_unit) = match s {
        ..60 => return format!("{s} s"),
        60..3_600 => (s / 60, "min", s % 60, "s"),
        3_600..86_400 => (s / 3_600, "h", s / 60 % 60, "min"),
        _ => (s / 86_400, "d", s / 3_600 % 24, "h"),
    };
    if small == 0 {
        format!("{big} {big_unit}")
    } else {
        format!("{big} {big_unit} {small} {small_unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str) -> ShardStatus {
        ShardStatus {
            shard_id: id.into(),
            reading: true,
            ..ShardStatus::default()
        }
    }

    #[test]
    fn a_healthy_pipeline_has_no_warnings() {
        let mut a = shard("a");
        a.ms_behind = Some(BEHIND_WARNING_MS);
        let health = PipelineHealth::new(true, vec![a, shard("b")], 10, 0, 0);
        assert!(health.warnings().is_empty());
        assert_eq!(health.max_ms_behind(), Some(BEHIND_WARNING_MS));
        assert_eq!(health.records_per_s(), None);
    }

    #[test]
    fn gaps_and_lag_are_warned_about() {
        let mut a = shard("shardId-a");
        a.gaps = 1;
        a.errors = 2;
        a.last_gap = Some(GapNote {
            after: Some("000042".into()),
            at_ms: 5,
            reason: "trimmed".into(),
        });
        let mut b = shard("shardId-b");
        b.ms_behind = Some(125_000);
        b.gaps = 2;
        b.errors = 1;
        let mut c = shard("shardId-c");
        c.ms_behind = Some(61_000);
        let mut gone = shard("shardId-gone");
        gone.reading = false;
        gone.ms_behind = Some(10_000_000);
        let health = PipelineHealth::new(true, vec![c, gone, a, b], 0, 0, 0);
        assert_eq!((health.gaps, health.errors), (3, 3));
        assert_eq!(health.max_ms_behind(), Some(125_000));
        let warnings = health.warnings();
        let got: Vec<(WarningKind, &str)> = warnings
            .iter()
            .map(|w| (w.kind, w.shard_id.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (WarningKind::Gap, "shardId-a"),
                (WarningKind::Gap, "shardId-b"),
                (WarningKind::Behind, "shardId-b"),
                (WarningKind::Behind, "shardId-c"),
            ]
        );
        assert!(
            warnings[0].message.contains("shardId-a")
                && warnings[0].message.contains("after sequence number 000042")
                && warnings[0].message.contains("1 gap recorded"),
            "{}",
            warnings[0].message
        );
        assert!(warnings[1].message.contains("records at its start"));
        assert!(warnings[1].message.contains("2 gaps"));
        assert!(
            warnings[2].message.contains("2 min 5 s behind"),
            "{}",
            warnings[2].message
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_ms(-5), "0 ms");
        assert_eq!(format_ms(850), "850 ms");
        assert_eq!(format_ms(4_250), "4.2 s");
        assert_eq!(format_ms(59_999), "59 s");
        assert_eq!(format_ms(60_000), "1 min");
        assert_eq!(format_ms(185_000), "3 min 5 s");
        assert_eq!(format_ms(7_200_999), "2 h");
        assert_eq!(format_ms(7_800_000), "2 h 10 min");
        assert_eq!(format_ms(273_600_000), "3 d 4 h");
    }

    #[test]
    fn old_health_json_still_reads() {
        let json = r#"{"shards":[{"shard_id":"s","position":"1","events":2,"quarantined":0,
            "errors":0,"gaps":0,"last_record_ms":5,"ms_behind":7}]}"#;
        let health: PipelineHealth = serde_json::from_str(json).expect("health");
        assert_eq!(health.shards[0].ms_behind, Some(7));
        assert!(!health.shards[0].reading);
    }
}
