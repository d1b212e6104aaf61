//! Properties of the expression language over thousands of random filters, records and
//! subscribers:
//!
//! * the index (plus residual evaluation) finds exactly the subscriptions that evaluating every
//!   subscription finds, before and after removals;
//! * the compiled rhai script agrees with the Rust interpreter on every subscription and record;
//! * canonical text parses back to the same tree;
//! * no text, however broken, makes parsing, compiling or evaluating panic.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use support::generators::{claims, expression, record};
use velo_realtime::filter::fold::evaluate;
use velo_realtime::filter::{
    Auth, Expr, Filter, FilterEngine, Record, Rule, SubscriptionIndex, condition,
};

/// A subscriber: a list rule, a filter, and the claims it subscribed with.
#[derive(Debug, Clone)]
struct Subscriber {
    rule: Option<Expr>,
    filter: Option<Expr>,
    claims: Option<Value>,
}

fn subscriber() -> impl Strategy<Value = Subscriber> {
    (
        prop::option::weighted(0.3, expression()),
        prop::option::weighted(0.9, expression()),
        claims(),
    )
        .prop_map(|(rule, filter, claims)| Subscriber {
            rule,
            filter,
            claims,
        })
}

fn auth_of(claims: &Option<Value>) -> Auth {
    match claims {
        Some(Value::Object(map)) => Auth::from_claims(map),
        _ => Auth::guest(),
    }
}

/// Keys of the subscriptions that match, found through the index and by scanning.
fn both_ways(
    engine: &FilterEngine,
    index: &mut SubscriptionIndex<usize>,
    record: &Value,
) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let mut eval = engine.evaluation(Record::from_json(record).unwrap());
    let mut by_index = BTreeSet::new();
    index.for_each_match(&mut eval, |id| {
        assert!(by_index.insert(*id), "subscription {id} reported twice");
    });
    let mut by_scan = BTreeSet::new();
    index.for_each_match_by_scan(&mut eval, |id| {
        by_scan.insert(*id);
    });
    (by_index, by_scan)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn index_finds_exactly_what_evaluating_every_subscription_finds(
        subscribers in prop::collection::vec(subscriber(), 1..40),
        records in prop::collection::vec(record(), 1..12),
        removals in prop::collection::vec(any::<bool>(), 40),
    ) {
        let engine = FilterEngine::new();
        let mut index = SubscriptionIndex::new();
        let mut keys = Vec::new();
        let mut conditions = Vec::new();
        let mut compiled_all = Vec::new();
        for (id, subscriber) in subscribers.iter().enumerate() {
            // Through text, as the API receives them.
            let rule = match &subscriber.rule {
                Some(expr) => Rule::parse(&expr.to_string()).unwrap(),
                None => Rule::Public,
            };
            let filter = match &subscriber.filter {
                Some(expr) => Filter::parse(&expr.to_string()).unwrap(),
                None => Filter::default(),
            };
            let condition = condition(&rule, &filter, false);
            let compiled = Arc::new(engine.compile(condition.clone()).unwrap());
            keys.push(index.insert(compiled.clone(), auth_of(&subscriber.claims), id));
            conditions.push(condition);
            compiled_all.push(compiled);
        }
        for record in &records {
            let (by_index, by_scan) = both_ways(&engine, &mut index, record);
            prop_assert_eq!(&by_index, &by_scan, "record {}", record);
            let parsed = Record::from_json(record).unwrap();
            for (id, subscriber) in subscribers.iter().enumerate() {
                let expected = conditions[id]
                    .as_ref()
                    .is_none_or(|expr| evaluate(expr, &parsed, &auth_of(&subscriber.claims)));
                prop_assert_eq!(by_scan.contains(&id), expected, "script vs interpreter: {:?} on {}", conditions[id], record);
                // A scan converts only the fields the condition reads: the same answer.
                let narrow = compiled_all[id].record(record.as_object().unwrap());
                let scanned = engine
                    .evaluation(narrow)
                    .matches(&compiled_all[id], &auth_of(&subscriber.claims));
                prop_assert_eq!(scanned, expected, "only the fields read: {:?} on {}", conditions[id], record);
                // The console's playground explains one subscription by the index's own steps.
                let mut eval = engine.evaluation(parsed.clone());
                let decision = index.explain(keys[id], &mut eval).unwrap();
                prop_assert_eq!(decision.matched, expected, "explained: {:?} on {}", decision, record);
            }
        }
        for (key, remove) in keys.iter().zip(&removals) {
            if *remove {
                prop_assert!(index.remove(*key).is_some());
            }
        }
        for record in &records {
            let (by_index, by_scan) = both_ways(&engine, &mut index, record);
            prop_assert_eq!(by_index, by_scan, "after removals, record {}", record);
        }
        prop_assert_eq!(engine.eval_errors(), 0);
    }

    #[test]
    fn canonical_text_round_trips(expr in expression()) {
        let text = expr.to_string();
        let parsed = Filter::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed.expr(), Some(&expr));
    }

    #[test]
    fn no_text_makes_the_language_panic(
        words in prop::collection::vec(select(&[
            "a", "b.c", "=", "==", "!=", "<>", ">", ">=", "<", "<=", "AND", "or", "NOT", "like",
            "IN", "(", ")", ",", "'x'", "\"y\\\"\"", "@request.auth.id", "@request", "1", "-2.5",
            "9007199254740993", "18446744073709551616", "-9223372036854775809", "1.5e19",
            "1e5", "null", "TRUE", "&&", "||", "!", "'", "\"", "\\", "@", "SUPERUSER_ONLY", "é", ".",
            "%", "_", "-", "\n",
        ][..]), 0..24),
        glue in select(&[" ", ""][..]),
        noise in ".{0,40}",
        record in record(),
        claims in claims(),
    ) {
        let engine = FilterEngine::new();
        for text in [words.join(glue), noise] {
            let _ = Rule::parse(&text);
            if let Ok(filter) = Filter::parse(&text) {
                let compiled = engine.compile(filter.expr().cloned()).unwrap();
                let mut eval = engine.evaluation(Record::from_json(&record).unwrap());
                let matched = eval.matches(&compiled, &auth_of(&claims));
                if let Some(expr) = filter.expr() {
                    let record = Record::from_json(&record).unwrap();
                    prop_assert_eq!(matched, evaluate(expr, &record, &auth_of(&claims)), "{}", text);
                    let again = Filter::parse(&expr.to_string()).unwrap();
                    prop_assert_eq!(again.expr(), Some(expr));
                }
            }
        }
    }
}

/// Integers around the edges of exactness: 2^53 (where floats stop holding every integer) and
/// the 64-bit bounds `i64::MIN`, `i64::MAX`, `u64::MAX`, with small ones for contrast.
fn edge_integer() -> impl Strategy<Value = i128> {
    const EDGES: [i128; 7] = [
        0,
        1 << 53,
        -(1 << 53),
        1 << 63,
        -(1 << 63),
        1 << 64,
        1 << 62,
    ];
    (select(&EDGES[..]), -3_i128..=3)
        .prop_map(|(edge, offset)| edge + offset)
        .prop_filter("within 64 bits", |n| {
            (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(n)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// DESIGN.md §15: integers compare exactly when both sides are integers, and the index
    /// agrees. The record holds the number, or its numeric string; the filter is text, as the
    /// API receives it.
    #[test]
    fn integers_compare_exactly_through_the_index_the_script_and_the_interpreter(
        held in edge_integer(),
        near in -2_i128..=2,
        far in edge_integer(),
        pick_near in any::<bool>(),
        op in select(&["=", "!=", "<", "<=", ">", ">=", "IN"][..]),
        as_string in any::<bool>(),
    ) {
        let written = if pick_near { held + near } else { far };
        prop_assume!((i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(&written));
        let text = match op {
            "IN" => format!("n IN ({written}, 'x')"),
            op => format!("n {op} {written}"),
        };
        let order = held.cmp(&written);
        let expected = match op {
            "=" | "IN" => order.is_eq(),
            "!=" => order.is_ne(),
            "<" => order.is_lt(),
            "<=" => order.is_le(),
            ">" => order.is_gt(),
            _ => order.is_ge(),
        };
        let record: Value = if as_string {
            json!({ "n": held.to_string() })
        } else {
            serde_json::from_str(&format!(r#"{{"n": {held}}}"#)).unwrap()
        };
        let filter = Filter::parse(&text).unwrap();
        let engine = FilterEngine::new();
        let mut index = SubscriptionIndex::new();
        index.insert(Arc::new(engine.compile(filter.expr().cloned()).unwrap()), Auth::guest(), 0);
        let (by_index, by_scan) = both_ways(&engine, &mut index, &record);
        let parsed = Record::from_json(&record).unwrap();
        let interpreted = evaluate(filter.expr().unwrap(), &parsed, &Auth::guest());
        prop_assert_eq!(interpreted, expected, "interpreter: {} on {}", text, record);
        prop_assert_eq!(by_scan.contains(&0), expected, "script: {} on {}", text, record);
        prop_assert_eq!(by_index.contains(&0), expected, "index: {} on {}", text, record);
    }
}

/// LIKE by dynamic programming over characters: slow, obviously right.
fn like_reference(text: &str, pattern: &str) -> bool {
    let pattern = if pattern.contains(['%', '_']) {
        pattern.to_owned()
    } else {
        format!("%{pattern}%")
    };
    let fold = |c: char| c.to_lowercase().collect::<String>();
    let text: Vec<String> = text.chars().map(fold).collect();
    let pattern: Vec<char> = pattern.chars().collect();
    // matched[i][j]: the first i text characters match the first j pattern characters.
    let mut matched = vec![vec![false; pattern.len() + 1]; text.len() + 1];
    matched[0][0] = true;
    for j in 1..=pattern.len() {
        matched[0][j] = matched[0][j - 1] && pattern[j - 1] == '%';
    }
    for i in 1..=text.len() {
        for j in 1..=pattern.len() {
            matched[i][j] = match pattern[j - 1] {
                '%' => matched[i][j - 1] || matched[i - 1][j],
                '_' => matched[i - 1][j - 1],
                p => matched[i - 1][j - 1] && fold(p) == text[i - 1],
            };
        }
    }
    matched[text.len()][pattern.len()]
}

proptest! {
    #[test]
    fn like_agrees_with_a_reference_matcher(
        text in prop::collection::vec(select(&['a', 'A', 'b', 'é', 'É', '%', '_'][..]), 0..10),
        pattern in prop::collection::vec(select(&['a', 'B', 'b', 'É', '%', '_'][..]), 0..6),
    ) {
        let (text, pattern): (String, String) = (text.into_iter().collect(), pattern.into_iter().collect());
        prop_assert_eq!(
            velo_realtime::filter::value::like_text(&text, &pattern),
            like_reference(&text, &pattern),
            "{:?} LIKE {:?}", text, pattern
        );
    }
}
