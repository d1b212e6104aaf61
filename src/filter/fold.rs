//! Evaluation of the syntax tree in Rust, with the record known or unknown.
//!
//! With the record unknown this is partial evaluation: given a subscriber's auth, a comparison
//! that reads no record field is decided at once, and AND/OR/NOT combine with Kleene's rules
//! (`false AND unknown` is false). The index uses it to plan each subscription and the rules
//! use it to decide whether a guest is admitted. With the record known it is a complete
//! interpreter, which the tests hold the compiled rhai scripts to.
//!
//! Every comparison goes through [`value::apply`], the same function the scripts call.

use rhai::{Dynamic, Map};

use super::ast::{Expr, Operand};
use super::context::{Auth, Record};
use super::value;

/// The outcome of partial evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    /// Depends on the record.
    Unknown,
}

impl From<bool> for Truth {
    fn from(value: bool) -> Self {
        if value { Truth::True } else { Truth::False }
    }
}

/// Decides `expr` for `auth` without a record, as far as that is possible.
pub fn fold(expr: &Expr, auth: &Auth) -> Truth {
    truth(expr, &|operand| resolve(operand, None, auth))
}

/// Evaluates `expr` completely: the reference the compiled scripts must agree with.
pub fn evaluate(expr: &Expr, record: &Record, auth: &Auth) -> bool {
    truth(expr, &|operand| resolve(operand, Some(&record.0), auth)) == Truth::True
}

/// The value of an operand, or `None` when it reads a record that is not known.
pub(super) fn resolve(operand: &Operand, record: Option<&Map>, auth: &Auth) -> Option<Dynamic> {
    Some(match operand {
        Operand::Field(path) => value::field(record?, path.as_str()),
        Operand::Auth(path) => auth.claim(path),
        Operand::Value(literal) => value::from_literal(literal),
        Operand::List(items) => {
            Dynamic::from_array(items.iter().map(value::from_literal).collect())
        }
    })
}

fn truth(expr: &Expr, resolve: &impl Fn(&Operand) -> Option<Dynamic>) -> Truth {
    match expr {
        Expr::And(parts) => {
            let mut outcome = Truth::True;
            for part in parts {
                match truth(part, resolve) {
                    Truth::False => return Truth::False,
                    Truth::Unknown => outcome = Truth::Unknown,
                    Truth::True => {}
                }
            }
            outcome
        }
        Expr::Or(parts) => {
            let mut outcome = Truth::False;
            for part in parts {
                match truth(part, resolve) {
                    Truth::True => return Truth::True,
                    Truth::Unknown => outcome = Truth::Unknown,
                    Truth::False => {}
                }
            }
            outcome
        }
        Expr::Not(inner) => match truth(inner, resolve) {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        },
        Expr::Compare { op, left, right } => match (resolve(left), resolve(right)) {
            (Some(a), Some(b)) => value::apply(*op, &a, &b).into(),
            _ => Truth::Unknown,
        },
    }
}
