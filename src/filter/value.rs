//! The meaning of every comparison, on rhai values: the single source of truth that compiled
//! filters (through registered functions), partial evaluation and the index all call.
//!
//! Values come from JSON: `()` is `null`; numbers are exact [`Number`]s held as rhai `INT`
//! (`i64`), `FLOAT`, or, for integers above `i64::MAX`, a `u64`; strings, booleans, arrays and
//! maps.
//!
//! Rules (DESIGN.md §6, §9, §15):
//! * `=` is exact and case-sensitive. `null = null` is true and a missing field is `null`.
//! * Numbers compare by their exact values ([`Number`]): 64-bit integers exactly, an integer
//!   and a float by value. A number and a *numeric string* compare as numbers (`"18.0" = 18`),
//!   the string read as JSON reads a number; otherwise values of different types are unequal.
//!   Arrays and maps are equal when their parts are.
//! * `<`, `<=`, `>`, `>=` order numbers numerically and strings by code point; any other pair
//!   (`null` among them) is false.
//! * `LIKE` is case-insensitive with `%` (any run) and `_` (one character); a pattern without
//!   wildcards matches as "contains". Numbers and booleans are matched by their text; `null`,
//!   arrays and maps never match. Matching is O(text × pattern) at worst, never exponential.
//! * `IN` is membership by `=` in an array; a `null` on the left is never a member.

use std::cmp::Ordering;
use std::str::Split;

use rhai::{Dynamic, ImmutableString, Map};

use super::ast::{CompareOp, Literal};
use super::number::Number;

/// Converts a JSON value into the rhai value the evaluator reads.
pub fn from_json(value: &serde_json::Value) -> Dynamic {
    match value {
        serde_json::Value::Null => Dynamic::UNIT,
        serde_json::Value::Bool(b) => Dynamic::from_bool(*b),
        serde_json::Value::Number(n) => Number::from_json(n).map_or(Dynamic::UNIT, from_number),
        serde_json::Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        serde_json::Value::Array(items) => {
            Dynamic::from_array(items.iter().map(from_json).collect())
        }
        serde_json::Value::Object(fields) => Dynamic::from_map(map_from_json(fields)),
    }
}

pub fn map_from_json(fields: &serde_json::Map<String, serde_json::Value>) -> Map {
    fields
        .iter()
        .map(|(key, value)| (key.as_str().into(), from_json(value)))
        .collect()
}

/// A number as a rhai value: `INT`, `FLOAT`, or a `u64` above `i64::MAX` (which rhai has no
/// native type for; only the functions here read it).
pub fn from_number(n: Number) -> Dynamic {
    if let Some(n) = n.as_i64() {
        Dynamic::from_int(n)
    } else if let Some(n) = n.as_big() {
        Dynamic::from(n)
    } else {
        n.as_float().map_or(Dynamic::UNIT, Dynamic::from_float)
    }
}

pub fn from_literal(literal: &Literal) -> Dynamic {
    match literal {
        Literal::Null => Dynamic::UNIT,
        Literal::Bool(b) => Dynamic::from_bool(*b),
        Literal::Number(n) => from_number(*n),
        Literal::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
    }
}

/// Runs `f` on the value at `path` inside `map` (`None` when a step is missing or not a map).
///
/// A visitor rather than a returned reference: rhai hands out nested maps through guards.
/// Recursion depth is bounded by [`MAX_PATH_SEGMENTS`](super::ast::MAX_PATH_SEGMENTS).
pub fn with_path<R>(map: &Map, path: &str, f: impl FnOnce(Option<&Dynamic>) -> R) -> R {
    fn walk<R>(
        map: &Map,
        mut segments: Split<'_, char>,
        f: impl FnOnce(Option<&Dynamic>) -> R,
    ) -> R {
        let value = segments.next().and_then(|segment| map.get(segment));
        match (value, segments.clone().next()) {
            (value, None) => f(value),
            (Some(value), Some(_)) => match value.as_map_ref() {
                Ok(inner) => walk(&inner, segments, f),
                Err(_) => f(None),
            },
            (None, Some(_)) => f(None),
        }
    }
    walk(map, path.split('.'), f)
}

/// The value of a record field: missing is `null`.
pub fn field(record: &Map, path: &str) -> Dynamic {
    with_path(record, path, |value| {
        value.cloned().unwrap_or(Dynamic::UNIT)
    })
}

/// The value of `@request.auth.<path>`: absent is `""`.
pub fn claim(claims: &Map, path: &str) -> Dynamic {
    with_path(claims, path, |value| {
        value
            .cloned()
            .unwrap_or_else(|| Dynamic::from(ImmutableString::new()))
    })
}

/// A number, from a number or a numeric string.
pub fn number(value: &Dynamic) -> Option<Number> {
    plain_number(value).or_else(|| numeric_str(&value.as_immutable_string_ref().ok()?))
}

/// A number value (not a string).
fn plain_number(value: &Dynamic) -> Option<Number> {
    if let Ok(n) = value.as_int() {
        return Some(Number::from_i64(n));
    }
    if let Ok(n) = value.as_float() {
        return Number::from_f64(n);
    }
    value.read_lock::<u64>().map(|n| Number::from_u64(*n))
}

/// A numeric string is exactly JSON's number syntax (`-12`, `3.5`, `1e3`; no spaces, no `+`, no
/// `inf`) with a finite value, read as JSON reads it, so the index and evaluation agree on what
/// counts.
pub fn numeric_str(text: &str) -> Option<Number> {
    Number::parse_json(text)
}

/// The numbers two values compare as, when one is a number and the other a number or a numeric
/// string.
fn numeric_pair(a: &Dynamic, b: &Dynamic) -> Option<(Number, Number)> {
    match (plain_number(a), plain_number(b)) {
        (Some(x), Some(y)) => Some((x, y)),
        (Some(x), None) if b.is_string() => Some((x, number(b)?)),
        (None, Some(y)) if a.is_string() => Some((number(a)?, y)),
        _ => None,
    }
}

/// The outcome of `a <op> b`. The negated operators are exactly the negation of their positive.
pub fn apply(op: CompareOp, a: &Dynamic, b: &Dynamic) -> bool {
    match op {
        CompareOp::Eq => equals(a, b),
        CompareOp::Ne => !equals(a, b),
        CompareOp::Gt => compare(a, b) == Some(Ordering::Greater),
        CompareOp::Ge => matches!(compare(a, b), Some(Ordering::Greater | Ordering::Equal)),
        CompareOp::Lt => compare(a, b) == Some(Ordering::Less),
        CompareOp::Le => matches!(compare(a, b), Some(Ordering::Less | Ordering::Equal)),
        CompareOp::Like => like(a, b),
        CompareOp::NotLike => !like(a, b),
        CompareOp::In => member(a, b),
        CompareOp::NotIn => !member(a, b),
    }
}

pub fn equals(a: &Dynamic, b: &Dynamic) -> bool {
    if let Some((x, y)) = numeric_pair(a, b) {
        return x == y;
    }
    if a.is_unit() || b.is_unit() {
        return a.is_unit() && b.is_unit();
    }
    if let (Ok(x), Ok(y)) = (a.as_immutable_string_ref(), b.as_immutable_string_ref()) {
        return x.as_str() == y.as_str();
    }
    if let (Ok(x), Ok(y)) = (a.as_bool(), b.as_bool()) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (a.as_array_ref(), b.as_array_ref()) {
        return x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| equals(p, q));
    }
    if let (Ok(x), Ok(y)) = (a.as_map_ref(), b.as_map_ref()) {
        return x.len() == y.len()
            && x.iter()
                .all(|(key, p)| y.get(key.as_str()).is_some_and(|q| equals(p, q)));
    }
    false
}

/// The order of two values, when they have one: numbers (numeric strings included) and strings.
pub fn compare(a: &Dynamic, b: &Dynamic) -> Option<Ordering> {
    if let Some((x, y)) = numeric_pair(a, b) {
        return Some(x.cmp(&y));
    }
    let (x, y) = (
        a.as_immutable_string_ref().ok()?,
        b.as_immutable_string_ref().ok()?,
    );
    Some(x.as_str().cmp(y.as_str()))
}

pub fn member(value: &Dynamic, list: &Dynamic) -> bool {
    if value.is_unit() {
        return false;
    }
    list.as_array_ref()
        .is_ok_and(|items| items.iter().any(|item| equals(value, item)))
}

/// Longest pattern `LIKE` accepts from a record or a claim; longer ones never match. Patterns
/// written in an expression are already bounded by the expression's length.
pub const MAX_LIKE_PATTERN: usize = 4096;

pub fn like(value: &Dynamic, pattern: &Dynamic) -> bool {
    with_text(value, |text| {
        with_text(pattern, |pattern| {
            pattern.len() <= MAX_LIKE_PATTERN && like_text(text, pattern)
        })
    })
}

/// Runs `f` on the text of a string, number or boolean; false for anything else.
fn with_text(value: &Dynamic, f: impl FnOnce(&str) -> bool) -> bool {
    if let Ok(text) = value.as_immutable_string_ref() {
        return f(text.as_str());
    }
    if let Some(n) = plain_number(value) {
        return f(&n.plain_text());
    }
    match value.as_bool() {
        Ok(b) => f(if b { "true" } else { "false" }),
        Err(_) => false,
    }
}

/// Case-insensitive SQL LIKE; without `%` or `_` in the pattern, "contains".
pub fn like_text(text: &str, pattern: &str) -> bool {
    let contains = !pattern.contains(['%', '_']);
    // Greedy matching with one backtrack point (the last `%`): each step advances the text or
    // moves the backtrack point forward, so the work is bounded by text × pattern.
    let (mut t, mut p) = (0, 0);
    let mut backtrack = contains.then_some((0, 0));
    loop {
        if contains && p == pattern.len() {
            return true;
        }
        let Some(tc) = text[t..].chars().next() else {
            break;
        };
        if let Some(pc) = pattern[p..].chars().next() {
            if pc == '%' {
                p += 1;
                backtrack = Some((p, t));
                continue;
            }
            if pc == '_' || same_letter(pc, tc) {
                p += pc.len_utf8();
                t += tc.len_utf8();
                continue;
            }
        }
        let Some((bp, bt)) = backtrack else {
            return false;
        };
        let skipped = text[bt..].chars().next().map_or(1, char::len_utf8);
        backtrack = Some((bp, bt + skipped));
        (p, t) = (bp, bt + skipped);
    }
    pattern[p..].chars().all(|c| c == '%')
}

fn same_letter(a: char, b: char) -> bool {
    a == b || a.to_lowercase().eq(b.to_lowercase())
}

/// The functions compiled filters call, by name. Registered on the sandboxed engine only.
pub(super) mod script {
    use super::*;

    pub fn field(record: &mut Map, path: ImmutableString) -> Dynamic {
        super::field(record, &path)
    }

    /// By value: the claims map is shared between evaluations, so it is only ever read-locked.
    pub fn claim(claims: Dynamic, path: ImmutableString) -> Dynamic {
        match claims.as_map_ref() {
            Ok(claims) => super::claim(&claims, &path),
            Err(_) => Dynamic::from(ImmutableString::new()),
        }
    }

    pub fn eq(a: Dynamic, b: Dynamic) -> bool {
        apply(CompareOp::Eq, &a, &b)
    }

    pub fn gt(a: Dynamic, b: Dynamic) -> bool {
        apply(CompareOp::Gt, &a, &b)
    }

    pub fn ge(a: Dynamic, b: Dynamic) -> bool {
        apply(CompareOp::Ge, &a, &b)
    }

    pub fn lt(a: Dynamic, b: Dynamic) -> bool {
        apply(CompareOp::Lt, &a, &b)
    }

    pub fn le(a: Dynamic, b: Dynamic) -> bool {
        apply(CompareOp::Le, &a, &b)
    }

    pub fn like(value: Dynamic, pattern: Dynamic) -> bool {
        apply(CompareOp::Like, &value, &pattern)
    }

    pub fn member(value: Dynamic, list: Dynamic) -> bool {
        apply(CompareOp::In, &value, &list)
    }
}
