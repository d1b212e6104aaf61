//! The expression language of filters and API rules (DESIGN.md §6): text is parsed once into a
//! typed tree, compiled once to a sandboxed rhai script, and matched through a subscription index
//! so that an event costs in proportion to the subscribers it reaches.
//!
//! * [`ast`]: the tree and its canonical text.
//! * `lexer`, `parser`: text to tree, with positions and the limits below.
//! * [`number`]: [`Number`], exact 64-bit integers and floats, and their one order.
//! * [`value`]: what each comparison means; the one implementation everything calls.
//! * [`context`]: the subscriber's [`Auth`] and the event's [`Record`] as rhai values.
//! * [`compile`]: tree to rhai script, the sandboxed [`FilterEngine`], [`Evaluation`].
//! * [`fold`]: evaluation in Rust, partial (auth known, record not) or complete.
//! * [`rule`]: [`Rule`], [`Filter`], guest admission and the rule-and-filter [`condition`].
//! * [`index`]: the [`SubscriptionIndex`].
//!
//! This module knows nothing of HTTP, actors or storage.

pub mod ast;
pub mod compile;
pub mod context;
pub mod fold;
pub mod index;
mod lexer;
pub mod number;
mod parser;
pub mod rule;
pub mod value;

use std::fmt;

pub use ast::{CompareOp, Expr, FieldPath, Literal, Operand};
pub use compile::{CompileError, CompiledFilter, Evaluation, FilterEngine};
pub use context::{Auth, Record};
pub use index::{Decision, Plan, SubscriptionIndex, SubscriptionKey};
pub use number::Number;
pub use rule::{Filter, Rule, condition};

/// Longest expression accepted, in bytes of UTF-8.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Deepest nesting of parentheses and `NOT` accepted.
pub const MAX_DEPTH: usize = 32;
/// Most values a list (`IN (...)`) may hold.
pub const MAX_LIST_ITEMS: usize = 500;

/// Why an expression was refused: what was expected, what was found, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found {found} at position {column}")]
pub struct ParseError {
    /// 1-based character column of the offending token.
    pub column: usize,
    pub expected: String,
    pub found: String,
}

impl ParseError {
    pub(crate) fn new(
        column: usize,
        expected: impl Into<String>,
        found: impl fmt::Display,
    ) -> Self {
        Self {
            column,
            expected: expected.into(),
            found: found.to_string(),
        }
    }
}

/// Checks the length limit and splits `text` into tokens; `None` when it holds no token.
fn parse_tokens(text: &str) -> Result<Option<Vec<lexer::Spanned>>, ParseError> {
    if text.len() > MAX_EXPRESSION_BYTES {
        let column = text
            .char_indices()
            .take_while(|(at, _)| *at < MAX_EXPRESSION_BYTES)
            .count();
        return Err(ParseError::new(
            column + 1,
            format!("an expression of at most {MAX_EXPRESSION_BYTES} bytes"),
            format!("{} bytes", text.len()),
        ));
    }
    let tokens = lexer::tokenize(text)?;
    Ok((!tokens.is_empty()).then_some(tokens))
}

/// Parses a non-empty token stream as one expression.
fn parse_expr(tokens: Vec<lexer::Spanned>, text: &str) -> Result<Expr, ParseError> {
    if let Some(spanned) = tokens
        .iter()
        .find(|spanned| spanned.token == lexer::Token::SuperuserOnly)
    {
        return Err(ParseError::new(
            spanned.column,
            "a comparison (`SUPERUSER_ONLY` can only be a whole API rule)",
            "`SUPERUSER_ONLY`",
        ));
    }
    parser::Parser::new(tokens, text.chars().count() + 1).parse()
}

#[cfg(test)]
mod tests;
