//! Rollups: window documents added up into 5-minute, hourly and daily buckets as they are
//! written, so that a query over 30 days of 1-minute windows reads 30 daily documents per group
//! instead of 43,200.
//!
//! A rollup of one group (pipeline, window size, dimension, value) and one bucket holds exactly
//! what adding up the group's window documents of the bucket gives (across workers too): event
//! counts, net counts and sums add, minimums and maximums take the extreme, distinct values
//! unite. It is kept up to date by *deltas*: when a window document is rewritten, the rollup
//! gets the new values minus the stored ones. That is exact for the additive parts; minimums,
//! maximums and distinct sets only ever grow within a window (they are over the values written
//! in it), so taking the new extreme and uniting the new set is exact too — except after a roll
//! back, which can shrink them: rolled back buckets are therefore rebuilt from their window
//! documents ([`rebuild`]). A bucket is final when every window in it is: the rollup counts the
//! windows that are not yet.
//!
//! Rollups exist for tumbling windows only (hopping windows overlap), at each level longer than
//! the window and a multiple of it.

use serde::{Deserialize, Serialize};
use streamlens_core::{aggregate::doc_id, AggregateDoc};

use super::{add_decimals, extreme, merge_parts};
use crate::Error;

/// The rollup levels: label and length.
pub const LEVELS: [(&str, i64); 3] = [("5m", 300_000), ("1h", 3_600_000), ("1d", 86_400_000)];

/// One stored rollup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollup {
    /// The bucket's sum, as a document of the base window size whose start and end are the
    /// bucket's (no worker, no `prev`).
    pub doc: AggregateDoc,
    /// Windows in the bucket that are not final yet.
    pub open: i64,
}

/// The levels a document is rolled up into.
pub fn levels_of(doc: &AggregateDoc) -> impl Iterator<Item = (&'static str, i64)> {
    let size = doc.window_end - doc.window_start;
    let tumbling = !doc.window.contains('/') && size > 0;
    LEVELS
        .into_iter()
        .filter(move |(_, level)| tumbling && *level > size && level % size == 0)
}

/// The window label under which rollups of `window` at `level` are keyed.
pub fn label(window: &str, level: &str) -> String {
    format!("{window}>{level}")
}

/// The start of the bucket of `level` ms holding `start`.
pub fn bucket(start: i64, level: i64) -> i64 {
    start - start.rem_euclid(level)
}

/// The key of the rollup of `doc`'s group at `level`.
pub fn key(doc: &AggregateDoc, level: (&str, i64)) -> String {
    doc_id(
        &doc.pipeline,
        &label(&doc.window, level.0),
        bucket(doc.window_start, level.1),
        &doc.dimension,
        &doc.value,
    )
}

fn negated(decimal: &str) -> String {
    match decimal.strip_prefix('-') {
        Some(positive) => positive.to_owned(),
        None => format!("-{decimal}"),
    }
}

/// The names of both maps, once each.
fn names<'a>(
    a: impl Iterator<Item = &'a String>,
    b: impl Iterator<Item = &'a String>,
) -> std::collections::BTreeSet<String> {
    a.chain(b).cloned().collect()
}

/// The rollup after `old` (the stored document, if any) is replaced by `new`.
pub fn apply(
    rollup: Option<Rollup>,
    old: Option<&AggregateDoc>,
    new: &AggregateDoc,
    level: i64,
) -> Result<Rollup, Error> {
    let start = bucket(new.window_start, level);
    let mut r = rollup.unwrap_or_else(|| Rollup {
        doc: AggregateDoc {
            pipeline: new.pipeline.clone(),
            window: new.window.clone(),
            window_start: start,
            window_end: start + level,
            dimension: new.dimension.clone(),
            value: new.value.clone(),
            ..AggregateDoc::default()
        },
        open: 0,
    });
    let bad = |what: String| Error::Merge(format!("rollup {}: {what}", key(new, ("", level))));
    let empty = AggregateDoc::default();
    let before = old.unwrap_or(&empty);
    let d = &mut r.doc;
    let add = |total: &mut i64, new: i64, old: i64, what: &str| -> Result<(), Error> {
        *total = total
            .checked_add(new)
            .and_then(|t| t.checked_sub(old))
            .ok_or_else(|| bad(format!("`{what}` overflows")))?;
        Ok(())
    };
    add(&mut d.inserts, new.inserts, before.inserts, "inserts")?;
    add(&mut d.modifies, new.modifies, before.modifies, "modifies")?;
    add(&mut d.removes, new.removes, before.removes, "removes")?;
    add(
        &mut d.net_count,
        new.net_count,
        before.net_count,
        "net_count",
    )?;
    for name in &names(new.sums.keys(), before.sums.keys()) {
        let mut terms = vec![d.sums.get(name).cloned().unwrap_or_else(|| "0".into())];
        if let Some(v) = new.sums.get(name) {
            terms.push(v.clone());
        }
        if let Some(v) = before.sums.get(name) {
            terms.push(negated(v));
        }
        let total = add_decimals(&terms).map_err(|e| bad(format!("sum `{name}`: {e}")))?;
        d.sums.insert(name.clone(), total);
    }
    for name in &names(new.counts.keys(), before.counts.keys()) {
        let total = d.counts.get(name).copied().unwrap_or(0);
        let mut sum = total;
        add(
            &mut sum,
            new.counts.get(name).copied().unwrap_or(0),
            before.counts.get(name).copied().unwrap_or(0),
            name,
        )?;
        d.counts.insert(name.clone(), sum);
    }
    for (name, value) in &new.mins {
        extreme(
            &mut d.mins,
            name.clone(),
            value.clone(),
            std::cmp::Ordering::Less,
        )
        .map_err(bad)?;
    }
    for (name, value) in &new.maxs {
        extreme(
            &mut d.maxs,
            name.clone(),
            value.clone(),
            std::cmp::Ordering::Greater,
        )
        .map_err(bad)?;
    }
    for (name, values) in &new.distinct {
        let set = d.distinct.entry(name.clone()).or_default();
        set.extend(values.iter().cloned());
        set.sort();
        set.dedup();
    }
    d.version = d.version.max(new.version);
    r.open += i64::from(!new.is_final) - i64::from(old.is_some_and(|o| !o.is_final));
    r.doc.is_final = r.open == 0;
    Ok(r)
}

/// The rollup of a bucket built from its window documents (of any workers); `None` when there
/// are none.
pub fn rebuild(docs: Vec<AggregateDoc>, start: i64, level: i64) -> Result<Option<Rollup>, Error> {
    if docs.is_empty() {
        return Ok(None);
    }
    let open = docs.iter().filter(|d| !d.is_final).count() as i64;
    let mut doc = merge_parts("rollup", docs)?;
    doc.window_start = start;
    doc.window_end = start + level;
    doc.worker.clear();
    doc.prev = None;
    doc.is_final = open == 0;
    Ok(Some(Rollup { doc, open }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(
        start: i64,
        worker: &str,
        amount: &str,
        min: &str,
        tags: &[&str],
        version: u64,
    ) -> AggregateDoc {
        AggregateDoc {
            pipeline: "p".into(),
            window: "1m".into(),
            window_start: start,
            window_end: start + 60_000,
            dimension: "status".into(),
            value: "paid".into(),
            inserts: 2,
            modifies: 1,
            removes: 1,
            net_count: 1,
            sums: [("amount".to_owned(), amount.to_owned())].into(),
            counts: [("amount".to_owned(), 3)].into(),
            mins: [("low".to_owned(), min.to_owned())].into(),
            distinct: [(
                "tags".to_owned(),
                tags.iter().map(|t| t.to_string()).collect(),
            )]
            .into(),
            version,
            worker: worker.into(),
            ..AggregateDoc::default()
        }
    }

    /// Deltas over rewrites give what rebuilding from the final documents gives.
    #[test]
    fn deltas_equal_a_rebuild() {
        let hour = 3_600_000;
        let writes = [
            (None, doc(0, "", "1.5", "3", &["a"], 1)),
            (None, doc(60_000, "", "-2.25", "1", &["b"], 1)),
            (None, doc(120_000, "w2", "10", "5", &["c"], 1)),
            (
                Some(doc(0, "", "1.5", "3", &["a"], 1)),
                doc(0, "", "4.75", "2", &["a", "d"], 2),
            ),
            (
                Some(doc(60_000, "", "-2.25", "1", &["b"], 1)),
                AggregateDoc {
                    is_final: true,
                    ..doc(60_000, "", "0.05", "1", &["b"], 3)
                },
            ),
        ];
        let mut rollup = None;
        for (old, new) in &writes {
            rollup = Some(apply(rollup, old.as_ref(), new, hour).unwrap());
        }
        let finals = vec![
            doc(0, "", "4.75", "2", &["a", "d"], 2),
            AggregateDoc {
                is_final: true,
                ..doc(60_000, "", "0.05", "1", &["b"], 3)
            },
            doc(120_000, "w2", "10", "5", &["c"], 1),
        ];
        let rebuilt = rebuild(finals, 0, hour).unwrap().unwrap();
        let rollup = rollup.unwrap();
        assert_eq!(rollup, rebuilt);
        assert_eq!(rollup.doc.sums["amount"], "14.8");
        assert_eq!(rollup.doc.counts["amount"], 9);
        assert_eq!(rollup.doc.mins["low"], "1");
        assert_eq!(rollup.doc.distinct["tags"], ["a", "b", "c", "d"]);
        assert_eq!((rollup.open, rollup.doc.is_final), (2, false));
        assert_eq!(rollup.doc.window_end, hour);
    }

    #[test]
    fn levels_are_longer_multiples_of_tumbling_windows() {
        let mut d = doc(0, "", "1", "1", &[], 1);
        assert_eq!(
            levels_of(&d).map(|l| l.0).collect::<Vec<_>>(),
            ["5m", "1h", "1d"]
        );
        d.window_end = 7 * 60_000;
        assert_eq!(levels_of(&d).count(), 0);
        d.window = "5m/1m".into();
        d.window_end = 300_000;
        assert_eq!(levels_of(&d).count(), 0);
    }
}
