//! Random filters, rules, records and claims (proptest strategies), shared by the property
//! tests of the expression language (`filter_properties.rs`) and the live queries' convergence
//! tests against the real server (`live_convergence.rs`).

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};
use velo_realtime::filter::{CompareOp, Expr, FieldPath, Literal, Number, Operand};

/// Few distinct values, so that equalities hit often and every type meets every other. Numbers
/// are written as JSON writes them: integers exact, `.0` or an exponent for floats. Around 2^53
/// an integer and its neighbour share one float; 2^63 and 2^64 are the 64-bit bounds.
pub const NUMBERS: [&str; 16] = [
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
pub const STRINGS: [&str; 13] = [
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
pub const FIELDS: [&str; 5] = ["a", "b", "c.d", "e", "c"];
pub const CLAIMS: [&str; 5] = ["id", "team", "groups", "missing", "profile.level"];

pub fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        1 => Just(Literal::Null),
        1 => any::<bool>().prop_map(Literal::Bool),
        3 => select(&NUMBERS[..]).prop_map(|n| Literal::Number(Number::parse_json(n).unwrap())),
        4 => select(&STRINGS[..]).prop_map(|s| Literal::String(s.to_owned())),
    ]
}

pub fn scalar() -> impl Strategy<Value = Value> {
    literal().prop_map(|literal| match literal {
        Literal::Null => Value::Null,
        Literal::Bool(b) => json!(b),
        Literal::Number(n) => serde_json::from_str(&n.to_string()).unwrap(),
        Literal::String(s) => json!(s),
    })
}

pub fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        5 => scalar(),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array),
    ]
}

pub fn record() -> impl Strategy<Value = Value> {
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
pub fn claims() -> impl Strategy<Value = Option<Value>> {
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

pub fn path(names: &'static [&'static str]) -> impl Strategy<Value = FieldPath> {
    select(names).prop_map(|name| FieldPath::new(name).expect("valid path"))
}

pub fn operator() -> impl Strategy<Value = CompareOp> {
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
pub fn comparison() -> impl Strategy<Value = Expr> {
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

pub fn expression() -> impl Strategy<Value = Expr> {
    comparison().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            2 => prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            1 => inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}
