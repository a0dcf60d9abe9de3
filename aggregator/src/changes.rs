//! Change searches: a [`ChangeQuery`] checked and resolved, then answered by a store.
//!
//! Everything a request carries is checked here, before a store sees it: times are resolved,
//! kinds must be known, the key must be names of strings or numbers, the cursor must be one a
//! page gave out. Stores then use the values only as `term`/`range` values (OpenSearch) or key
//! bounds (the embedded store).

use streamlens_core::{
    changes::{canonical_key_of, Position},
    ChangePage, ChangeQuery, ChangeReader, ChangeSearch, QueryError,
};

use crate::query::time;

/// Changes per page when a query does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Changes per page at most.
pub const MAX_LIMIT: usize = 1000;

const KINDS: [&str; 3] = ["INSERT", "MODIFY", "REMOVE"];

fn invalid(message: String) -> QueryError {
    QueryError::Invalid(message)
}

/// Checks a change query and resolves it; `now_ms` is what `now` means.
pub fn resolve(query: &ChangeQuery, now_ms: i64) -> Result<ChangeSearch, QueryError> {
    let from = query
        .from
        .as_ref()
        .map(|t| time("from", t, now_ms))
        .transpose()?;
    let to = query
        .to
        .as_ref()
        .map(|t| time("to", t, now_ms))
        .transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(invalid(format!("`from` ({f}) must be before `to` ({t})")));
        }
    }
    let key = match &query.key {
        Some(k) if k.is_empty() => {
            return Err(invalid(
                "`key`: give the item's key attributes, e.g. {\"pk\": \"order#1\"}".to_owned(),
            ))
        }
        Some(k) => Some(canonical_key_of(k).map_err(|e| invalid(format!("`key`: {e}")))?),
        None => None,
    };
    let mut kinds = Vec::new();
    for kind in &query.kinds {
        let upper = kind.trim().to_ascii_uppercase();
        if !KINDS.contains(&upper.as_str()) {
            return Err(invalid(format!(
                "`kinds`: unknown kind `{kind}` (INSERT, MODIFY or REMOVE)"
            )));
        }
        if !kinds.contains(&upper) {
            kinds.push(upper);
        }
    }
    let changed = match query.changed.as_deref().map(str::trim) {
        Some("") => return Err(invalid("`changed`: give an attribute name".to_owned())),
        Some(c) if c.split('.').any(str::is_empty) => {
            return Err(invalid(format!(
                "`changed`: `{c}` is not an attribute path (names joined by dots)"
            )))
        }
        other => other.map(str::to_owned),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!(
            "`limit`: {limit} is out of range (1 to {MAX_LIMIT})"
        )));
    }
    let after = query
        .after
        .as_deref()
        .map(|a| {
            Position::parse(a).ok_or_else(|| {
                invalid(format!(
                    "`after`: `{a}` is not a cursor (pass a page's `next` as it is)"
                ))
            })
        })
        .transpose()?;
    let descending = match query.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(invalid(format!(
                "`order`: `{other}` is neither `asc` nor `desc`"
            )))
        }
    };
    Ok(ChangeSearch {
        table: query.table.clone(),
        key,
        from,
        to,
        kinds,
        changed,
        limit,
        after,
        descending,
    })
}

/// Checks a change query and answers it from `reader`.
pub async fn search(
    reader: &dyn ChangeReader,
    query: &ChangeQuery,
    now_ms: i64,
) -> Result<ChangePage, QueryError> {
    let search = resolve(query, now_ms)?;
    reader
        .search_changes(&search)
        .await
        .map_err(|e| QueryError::Store(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(json: &str) -> Result<ChangeSearch, String> {
        let query: ChangeQuery = serde_json::from_str(json).map_err(|e| e.to_string())?;
        resolve(&query, 1_000_000).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (json, field) in [
            (r#"{"kinds": ["UPSERT"]}"#, "`kinds`"),
            (r#"{"limit": 0}"#, "`limit`"),
            (r#"{"limit": 5000}"#, "`limit`"),
            (r#"{"after": "x|y"}"#, "`after`"),
            (r#"{"order": "up"}"#, "`order`"),
            (r#"{"from": "yesterday"}"#, "`from`"),
            (r#"{"from": 10, "to": 5}"#, "`from`"),
            (r#"{"key": {}}"#, "`key`"),
            (r#"{"key": {"pk": true}}"#, "`key`"),
            (r#"{"changed": "a..b"}"#, "`changed`"),
            (r#"{"kind": ["INSERT"]}"#, "unknown field `kind`"),
        ] {
            let err = q(json).unwrap_err();
            assert!(err.contains(field), "{json}: {err}");
        }
    }

    #[test]
    fn a_query_resolves() {
        let s = q(
            r#"{"key": {"pk": "a"}, "kinds": ["modify", "MODIFY"], "from": "now-1s",
                      "changed": "status", "order": "desc", "limit": 5}"#,
        )
        .unwrap();
        assert_eq!(s.key.as_deref(), Some(r#"{"pk":"a"}"#));
        assert_eq!(s.kinds, ["MODIFY"]);
        assert_eq!(s.from, Some(999_000));
        assert!(s.descending && s.limit == 5);
        assert_eq!(q("{}").unwrap(), ChangeSearch::default());
    }
}
