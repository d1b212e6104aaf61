//! API rules and realtime filters: parsing them, deciding admission, and combining them into the
//! one condition a subscription is matched by.

use std::fmt;

use super::ast::Expr;
use super::context::Auth;
use super::fold::{Truth, fold};
use super::lexer::Token;
use super::{ParseError, parse_tokens};

/// A collection's API rule (list, view, create, update or delete).
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// `""`: anyone, guests included.
    Public,
    /// `SUPERUSER_ONLY` (also what an absent rule means): the admin only.
    SuperuserOnly,
    /// An expression, decided per record with the caller's `@request.auth`.
    Expr(Expr),
}

impl Rule {
    /// Parses a rule: empty or blank text is [`Rule::Public`], `SUPERUSER_ONLY` alone is
    /// [`Rule::SuperuserOnly`], anything else must be an expression.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        match parse_tokens(text)? {
            None => Ok(Rule::Public),
            Some(tokens) if tokens.len() == 1 && tokens[0].token == Token::SuperuserOnly => {
                Ok(Rule::SuperuserOnly)
            }
            Some(tokens) => super::parse_expr(tokens, text).map(Rule::Expr),
        }
    }

    pub fn is_superuser_only(&self) -> bool {
        matches!(self, Rule::SuperuserOnly)
    }

    /// Whether a guest may pass this rule at all (Velo's `allowsGuest`).
    ///
    /// A rule that never reads `@request.auth` admits guests (each record is still decided by
    /// the rule). One that does admits a guest only if, with every `@request.auth.*` as `""`, it
    /// is true without reading any record field (DESIGN.md §9).
    pub fn admits_guest(&self) -> bool {
        match self {
            Rule::Public => true,
            Rule::SuperuserOnly => false,
            Rule::Expr(expr) => {
                !expr.references_auth() || fold(expr, &Auth::guest()) == Truth::True
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Public => Ok(()),
            Rule::SuperuserOnly => f.write_str("SUPERUSER_ONLY"),
            Rule::Expr(expr) => write!(f, "{expr}"),
        }
    }
}

/// A realtime or list filter. Empty text is the filter that keeps every record.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Filter(Option<Expr>);

impl Filter {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        match parse_tokens(text)? {
            None => Ok(Filter(None)),
            Some(tokens) => super::parse_expr(tokens, text).map(|expr| Filter(Some(expr))),
        }
    }

    pub fn expr(&self) -> Option<&Expr> {
        self.0.as_ref()
    }
}

impl From<Expr> for Filter {
    fn from(expr: Expr) -> Self {
        Filter(Some(expr))
    }
}

/// What a subscriber must satisfy to receive a record: `(rule) AND (filter)`.
///
/// Each side stays one whole operand of the AND (a rule `a OR b` with a filter `c` is
/// `(a OR b) AND c`, never Velo's `a OR b AND c`). The admin bypasses every rule, so for the
/// admin the condition is the filter alone.
pub fn condition(rule: &Rule, filter: &Filter, superuser: bool) -> Option<Expr> {
    let rule = match rule {
        Rule::Expr(expr) if !superuser => Some(expr.clone()),
        Rule::Expr(_) | Rule::Public | Rule::SuperuserOnly => None,
    };
    Expr::and(rule.into_iter().chain(filter.0.clone()).collect())
}
