//! Records as the API and events show them (DESIGN.md §5): flat JSON objects with the system
//! fields `id`, `collection_id`, `created`, `updated`; ids, timestamps, list sorting and paging.

use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::EngineError;
use super::names::random_id;
use crate::filter::Number;

/// A record: a JSON object holding the system fields.
pub type RecordMap = Map<String, Value>;

/// Fields the server owns; values sent for them in a body are ignored.
pub const SYSTEM_FIELDS: [&str; 4] = ["id", "collection_id", "created", "updated"];

/// The largest record accepted, as JSON (DESIGN.md §9).
pub const MAX_RECORD_BYTES: usize = 256 << 10;

/// Default and largest page size of a list.
pub const DEFAULT_PER_PAGE: usize = 15;
pub const MAX_PER_PAGE: usize = 500;

/// `^[A-Za-z0-9_-]{1,64}$`, or a new random id when none is given.
pub fn record_id(requested: Option<&Value>) -> Result<String, EngineError> {
    match requested {
        None | Some(Value::Null) => Ok(random_id()),
        Some(Value::String(id))
            if (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') =>
        {
            Ok(id.clone())
        }
        Some(_) => Err(EngineError::invalid(
            "id",
            "an id is 1 to 64 letters, digits, `_` or `-`",
        )),
    }
}

/// Now as RFC 3339 UTC with milliseconds: `2026-11-29T20:15:03.123Z`.
pub fn timestamp() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, millis) = (since.as_secs(), since.subsec_millis());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The body's own fields, system fields dropped.
pub fn user_fields(body: RecordMap) -> impl Iterator<Item = (String, Value)> {
    body.into_iter()
        .filter(|(key, _)| !SYSTEM_FIELDS.contains(&key.as_str()))
}

/// A record from its system fields and its own fields.
pub fn assemble(
    id: &str,
    collection_id: &str,
    created: &str,
    updated: &str,
    fields: impl Iterator<Item = (String, Value)>,
) -> RecordMap {
    let mut record = RecordMap::new();
    record.insert("id".into(), id.into());
    record.insert("collection_id".into(), collection_id.into());
    record.extend(fields);
    record.insert("created".into(), created.into());
    record.insert("updated".into(), updated.into());
    record
}

/// Refuses records larger than [`MAX_RECORD_BYTES`].
pub fn check_size(record: &RecordMap) -> Result<(), EngineError> {
    let size = serde_json::to_vec(record).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_RECORD_BYTES {
        return Err(EngineError::TooLarge(format!(
            "the record is {size} bytes of JSON; the limit is {MAX_RECORD_BYTES}"
        )));
    }
    Ok(())
}

/// One key of a sort: a field path, descending when written with `-`.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    path: Vec<String>,
    descending: bool,
}

/// Parses `-created,title`; empty is the default order (`created`, then `id`).
pub fn parse_sort(text: &str) -> Result<Vec<SortKey>, EngineError> {
    let mut keys = Vec::new();
    for part in text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (descending, field) = match part.strip_prefix('-') {
            Some(field) => (true, field),
            None => (false, part.strip_prefix('+').unwrap_or(part)),
        };
        let valid = !field.is_empty()
            && field.split('.').all(|segment| {
                !segment.is_empty()
                    && segment
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_')
            });
        if !valid {
            return Err(EngineError::invalid(
                "sort",
                format!("`{part}` is not a field to sort by, such as `-created` or `title`"),
            ));
        }
        keys.push(SortKey {
            path: field.split('.').map(str::to_owned).collect(),
            descending,
        });
    }
    for default in ["created", "id"] {
        keys.push(SortKey {
            path: vec![default.into()],
            descending: false,
        });
    }
    Ok(keys)
}

fn field<'a>(record: &'a RecordMap, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(record.get(first)?, |value, segment| {
        value.as_object()?.get(segment)
    })
}

/// Sort order of values: missing and null first, then booleans, numbers (by exact value, as
/// filters compare them), strings (by code point), arrays, objects.
fn order(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(value: Option<&Value>) -> u8 {
        match value {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(Value::Array(_)) => 4,
            Some(Value::Object(_)) => 5,
        }
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            Number::from_json(x).cmp(&Number::from_json(y))
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

pub fn sort(records: &mut [&RecordMap], keys: &[SortKey]) {
    records.sort_by(|a, b| {
        keys.iter()
            .map(|key| {
                let ordering = order(field(a, &key.path), field(b, &key.path));
                if key.descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            })
            .find(|ordering| ordering.is_ne())
            .unwrap_or(Ordering::Equal)
    });
}

/// A page of a list: which one, how large, and the totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub page: usize,
    pub per_page: usize,
}

impl Page {
    pub fn new(page: Option<u64>, per_page: Option<u64>) -> Result<Self, EngineError> {
        let page = page.unwrap_or(1);
        let per_page = per_page.unwrap_or(DEFAULT_PER_PAGE as u64);
        if page == 0 {
            return Err(EngineError::invalid("page", "pages start at 1"));
        }
        if per_page == 0 || per_page > MAX_PER_PAGE as u64 {
            return Err(EngineError::invalid(
                "per_page",
                format!("per_page is 1 to {MAX_PER_PAGE}"),
            ));
        }
        Ok(Self {
            page: usize::try_from(page).unwrap_or(usize::MAX),
            per_page: per_page as usize,
        })
    }

    pub fn last_page(&self, total: usize) -> usize {
        total.div_ceil(self.per_page).max(1)
    }

    pub fn range(&self, total: usize) -> std::ops::Range<usize> {
        let start = self
            .page
            .saturating_sub(1)
            .saturating_mul(self.per_page)
            .min(total);
        start..start.saturating_add(self.per_page).min(total)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_786), (2026, 11, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let now = timestamp();
        assert_eq!(now.len(), "2026-11-29T20:15:03.123Z".len(), "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T');
    }

    #[test]
    fn ids() {
        assert_eq!(record_id(None).unwrap().len(), 15);
        assert_eq!(record_id(Some(&json!("my-id_1"))).unwrap(), "my-id_1");
        for bad in [json!(""), json!("a b"), json!("x".repeat(65)), json!(5)] {
            assert!(record_id(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn sorting_and_paging() {
        let records: Vec<RecordMap> = [
            json!({"id": "a", "created": "1", "n": 2, "t": "b"}),
            json!({"id": "b", "created": "2", "n": 10, "t": "a"}),
            json!({"id": "c", "created": "3", "t": "c"}),
        ]
        .into_iter()
        .map(|value| value.as_object().unwrap().clone())
        .collect();
        let ids = |keys: &str| {
            let mut refs: Vec<&RecordMap> = records.iter().collect();
            sort(&mut refs, &parse_sort(keys).unwrap());
            refs.iter()
                .map(|r| r["id"].as_str().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(""), ["a", "b", "c"]);
        assert_eq!(ids("-created"), ["c", "b", "a"]);
        assert_eq!(
            ids("n"),
            ["c", "a", "b"],
            "missing first, numbers numerically"
        );
        assert_eq!(ids("-n"), ["b", "a", "c"]);
        assert_eq!(ids("t"), ["b", "a", "c"]);
        assert!(parse_sort("a b").is_err());
        assert!(parse_sort("-").is_err());

        let page = Page::new(Some(2), Some(2)).unwrap();
        assert_eq!((page.range(3), page.last_page(3)), (2..3, 2));
        assert_eq!(Page::new(Some(9), Some(2)).unwrap().range(3), 3..3);
        assert_eq!(Page::new(None, None).unwrap().last_page(0), 1);
        assert!(Page::new(Some(0), None).is_err());
        assert!(Page::new(None, Some(501)).is_err());
    }
}
