//! Properties of the expression language over thousands of random filters, records and
//! subscribers:
//!
//! * the index (plus residual evaluation) finds exactly the subscriptions that evaluating every
//!   subscription finds, before and after removals;
//! * the compiled rhai script agrees with the Rust interpreter on every subscription and record;
//! * canonical text parses back to the same tree;
//! * no text, however broken, makes parsing, compiling or evaluating panic.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};
use velo_realtime::filter::fold::evaluate;
use velo_realtime::filter::{
    Auth, CompareOp, Expr, FieldPath, Filter, FilterEngine, Literal, Number, Operand, Record, Rule,
    SubscriptionIndex, condition,
};

/// Few distinct values, so that equalities hit often and every type meets every other. Numbers
/// are written as JSON writes them: integers exact, `.0` or an exponent for floats. Around 2^53
/// an integer and its neighbour share one float; 2^63 and 2^64 are the 64-bit bounds.
const NUMBERS: [&str; 16] = [
    "-1",
    "0",
    "1",
    "2",
    "18",
    "18.0",
    "2.5",
    "1e3",
    "9007199254740992",
    "9007199254740993",
    "9007199254740992.0",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "1.8446744073709552e19",
    "-9223372036854775808",
];
const STRINGS: [&str; 13] = [
    "",
    "x",
    "X",
    "1",
    "18",
    "18.0",
    "2",
    "a%",
    "x_",
    "1e3",
    "9007199254740993",
    "9007199254740992.0",
    "18446744073709551615",
];
const FIELDS: [&str; 5] = ["a", "b", "c.d", "e", "c"];
const CLAIMS: [&str; 5] = ["id", "team", "groups", "missing", "profile.level"];

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        1 => Just(Literal::Null),
        1 => any::<bool>().prop_map(Literal::Bool),
        3 => select(&NUMBERS[..]).prop_map(|n| Literal::Number(Number::parse_json(n).unwrap())),
        4 => select(&STRINGS[..]).prop_map(|s| Literal::String(s.to_owned())),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    literal().prop_map(|literal| match literal {
        Literal::Null => Value::Null,
        Literal::Bool(b) => json!(b),
        Literal::Number(n) => serde_json::from_str(&n.to_string()).unwrap(),
        Literal::String(s) => json!(s),
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        5 => scalar(),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array),
    ]
}

fn record() -> impl Strategy<Value = Value> {
    let nested = prop_oneof![
        2 => json_value().prop_map(|d| json!({ "d": d })),
        1 => json_value(),
    ];
    (
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(nested),
        prop::option::of(json_value()),
    )
        .prop_map(|(a, b, c, e)| {
            let mut map = Map::new();
            for (name, value) in [("a", a), ("b", b), ("c", c), ("e", e)] {
                if let Some(value) = value {
                    map.insert(name.into(), value);
                }
            }
            Value::Object(map)
        })
}

/// `None` is a guest.
fn claims() -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(
        0.8,
        (
            prop::option::of(scalar()),
            prop::option::of(scalar()),
            prop::option::of(scalar()),
            prop::option::of(prop::collection::vec(scalar(), 0..3)),
            prop::option::of(scalar()),
        )
            .prop_map(|(id, sub, team, groups, level)| {
                let mut map = Map::new();
                let entries = [
                    ("id", id),
                    ("sub", sub),
                    ("team", team),
                    ("groups", groups.map(Value::Array)),
                    ("profile", level.map(|level| json!({ "level": level }))),
                ];
                for (name, value) in entries {
                    if let Some(value) = value {
                        map.insert(name.into(), value);
                    }
                }
                Value::Object(map)
            }),
    )
}

fn path(names: &'static [&'static str]) -> impl Strategy<Value = FieldPath> {
    select(names).prop_map(|name| FieldPath::new(name).expect("valid path"))
}

fn operator() -> impl Strategy<Value = CompareOp> {
    prop_oneof![
        6 => Just(CompareOp::Eq),
        1 => Just(CompareOp::Ne),
        1 => Just(CompareOp::Gt),
        1 => Just(CompareOp::Ge),
        1 => Just(CompareOp::Lt),
        1 => Just(CompareOp::Le),
        1 => Just(CompareOp::Like),
        1 => Just(CompareOp::NotLike),
        3 => Just(CompareOp::In),
        1 => Just(CompareOp::NotIn),
    ]
}

/// A comparison of a shape the parser can produce: never a field on both sides, a list only
/// after IN.
fn comparison() -> impl Strategy<Value = Expr> {
    let left = prop_oneof![
        6 => path(&FIELDS).prop_map(Operand::Field),
        2 => path(&CLAIMS).prop_map(Operand::Auth),
        1 => literal().prop_map(Operand::Value),
    ];
    let right = prop_oneof![
        4 => literal().prop_map(Operand::Value),
        3 => prop::collection::vec(literal(), 1..4).prop_map(Operand::List),
        2 => path(&CLAIMS).prop_map(Operand::Auth),
        1 => path(&FIELDS).prop_map(Operand::Field),
    ];
    (operator(), left, right).prop_map(|(op, left, right)| {
        let right = match right {
            Operand::Field(path) if op.takes_list() && matches!(left, Operand::Field(_)) => {
                Operand::List(vec![Literal::String(path.to_string())])
            }
            Operand::Field(path) if matches!(left, Operand::Field(_)) => {
                Operand::Value(Literal::String(path.to_string()))
            }
            Operand::Value(value) if op.takes_list() => Operand::List(vec![value]),
            Operand::List(mut items) if !op.takes_list() => Operand::Value(items.remove(0)),
            other => other,
        };
        Expr::Compare { op, left, right }
    })
}

fn expression() -> impl Strategy<Value = Expr> {
    comparison().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            2 => prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            1 => inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}

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
            keys.push(index.insert(compiled, auth_of(&subscriber.claims), id));
            conditions.push(condition);
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
