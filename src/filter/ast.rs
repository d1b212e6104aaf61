//! The typed syntax tree of the expression language, and its canonical text form.
//!
//! Values here are already valid: a [`FieldPath`] is a dotted path of identifiers, a number is
//! finite, a list is non-empty and bounded. Only the parser builds these from text; tests and the
//! rule combinator build them directly. `Display` prints text that parses back to the same tree.

use std::fmt;

use rhai::ImmutableString;

use super::number::Number;

/// Deepest path accepted (`a.b.c` has 3 segments): records nest no deeper than this for filters.
pub const MAX_PATH_SEGMENTS: usize = 32;

/// A dotted path into a JSON object: `status`, `author.name`.
///
/// Invariant: 1 to [`MAX_PATH_SEGMENTS`] segments, each `[A-Za-z_][A-Za-z0-9_]*`, joined by `.`. Held as a rhai
/// string so that compiled filters and the index share it without copying.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(ImmutableString);

impl FieldPath {
    /// Checks `text` against the path grammar.
    pub fn new(text: &str) -> Option<Self> {
        let valid = text.split('.').count() <= MAX_PATH_SEGMENTS
            && text.split('.').all(|segment| {
                let mut chars = segment.chars();
                chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        valid.then(|| Self(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    pub(crate) fn as_immutable(&self) -> &ImmutableString {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A constant written in the expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    /// An integer exactly (within 64 bits) or a finite float, as written.
    Number(Number),
    String(String),
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A field of the record being matched; missing fields are `null`.
    Field(FieldPath),
    /// `@request.auth.<path>`: a claim of the subscriber; absent claims are `""`.
    Auth(FieldPath),
    Value(Literal),
    /// `('a', 'b')`: only on the right of `IN` / `NOT IN`. Never empty.
    List(Vec<Literal>),
}

impl Operand {
    /// True when the operand's value does not depend on the record.
    pub fn is_record_independent(&self) -> bool {
        !matches!(self, Operand::Field(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    NotLike,
    In,
    NotIn,
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Like => "LIKE",
            CompareOp::NotLike => "NOT LIKE",
            CompareOp::In => "IN",
            CompareOp::NotIn => "NOT IN",
        }
    }

    /// `IN` and `NOT IN` take a list (or a path to an array) on the right.
    pub fn takes_list(self) -> bool {
        matches!(self, CompareOp::In | CompareOp::NotIn)
    }
}

/// A boolean expression. `And` and `Or` hold two or more children; their order is kept.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Compare {
        op: CompareOp,
        left: Operand,
        right: Operand,
    },
}

impl Expr {
    /// The record's top-level fields the expression reads (a path `a.b` reads `a`), each once.
    pub fn record_fields(&self) -> Vec<&str> {
        let mut fields = Vec::new();
        let mut stack = vec![self];
        while let Some(expr) = stack.pop() {
            match expr {
                Expr::And(parts) | Expr::Or(parts) => stack.extend(parts),
                Expr::Not(inner) => stack.push(inner),
                Expr::Compare { left, right, .. } => {
                    for operand in [left, right] {
                        if let Operand::Field(path) = operand {
                            let top = path.as_str().split('.').next().unwrap_or_default();
                            if !fields.contains(&top) {
                                fields.push(top);
                            }
                        }
                    }
                }
            }
        }
        fields
    }

    /// The conjunction of `parts`, keeping each part whole (an `Or` part stays one child).
    pub fn and(parts: Vec<Expr>) -> Option<Expr> {
        match parts.len() {
            0 => None,
            1 => parts.into_iter().next(),
            _ => Some(Expr::And(parts)),
        }
    }

    /// The top-level AND-ed parts of this expression, nested `And`s flattened.
    pub fn conjuncts(&self) -> Vec<&Expr> {
        fn walk<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
            match expr {
                Expr::And(parts) => parts.iter().for_each(|part| walk(part, out)),
                other => out.push(other),
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    /// True when some operand is `@request.auth.*`.
    pub fn references_auth(&self) -> bool {
        match self {
            Expr::And(parts) | Expr::Or(parts) => parts.iter().any(Expr::references_auth),
            Expr::Not(inner) => inner.references_auth(),
            Expr::Compare { left, right, .. } => {
                matches!(left, Operand::Auth(_)) || matches!(right, Operand::Auth(_))
            }
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Bool(value) => write!(f, "{value}"),
            Literal::Number(value) => write!(f, "{value}"),
            Literal::String(text) => {
                f.write_str("\"")?;
                for c in text.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\r' => f.write_str("\\r")?,
                        '\t' => f.write_str("\\t")?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Field(path) => write!(f, "{path}"),
            Operand::Auth(path) => write!(f, "@request.auth.{path}"),
            Operand::Value(literal) => write!(f, "{literal}"),
            Operand::List(items) => {
                f.write_str("(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl fmt::Display for Expr {
    /// Fully parenthesised, so the text re-parses to the same tree whatever the precedence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, parts: &[Expr], sep: &str| {
            f.write_str("(")?;
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write!(f, "{part}")?;
            }
            f.write_str(")")
        };
        match self {
            Expr::And(parts) => join(f, parts, " AND "),
            Expr::Or(parts) => join(f, parts, " OR "),
            Expr::Not(inner) => write!(f, "NOT ({inner})"),
            Expr::Compare { op, left, right } => write!(f, "{left} {} {right}", op.symbol()),
        }
    }
}
