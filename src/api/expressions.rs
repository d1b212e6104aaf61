//! `POST /api/expressions/check` (admin): whether a filter or an API rule parses, by the same
//! parser the server saves rules and subscribes filters with, and if not, the parser's message
//! and the position it points at. The console checks rules with it as they are typed. It only
//! parses: it reads no collection and changes nothing.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use super::error::{Errors, operation_errors};
use super::payload::{BodyType, JsonBody, UnknownKeys};
use super::security::AdminToken;
use super::{ApiTags, App};
use crate::filter::{Filter, ParseError, Rule};

/// Which grammar to check the expression against.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum ExpressionKind {
    /// A realtime or list filter: `""` keeps every record.
    Filter,
    /// An API rule: `""` is anyone, `SUPERUSER_ONLY` alone is the admin only.
    Rule,
}

/// An expression to check.
#[derive(Object, Debug)]
#[oai(example)]
pub struct ExpressionCheck {
    /// The text, as it would be saved or subscribed with.
    pub expression: String,
    pub kind: ExpressionKind,
}

/// Unknown keys are refused (422): a misspelt `kind` would otherwise be missed.
impl BodyType for ExpressionCheck {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Refused;
}

impl Example for ExpressionCheck {
    fn example() -> Self {
        ExpressionCheck {
            expression: "status = ".into(),
            kind: ExpressionKind::Filter,
        }
    }
}

/// The verdict. `message`, `position`, `expected` and `found` are present only when `valid` is
/// false.
#[derive(Object, Debug, PartialEq)]
#[oai(example)]
pub struct ExpressionVerdict {
    /// Whether the server would accept the expression.
    pub valid: bool,
    /// The parser's message, as a 422 would give it.
    #[oai(skip_serializing_if_is_none)]
    pub message: Option<String>,
    /// 1-based character (not byte) column the parser stopped at; one past the last character
    /// when the expression ended too early.
    #[oai(skip_serializing_if_is_none)]
    pub position: Option<u64>,
    /// What the parser expected there.
    #[oai(skip_serializing_if_is_none)]
    pub expected: Option<String>,
    /// What it found instead.
    #[oai(skip_serializing_if_is_none)]
    pub found: Option<String>,
}

impl ExpressionVerdict {
    fn of(result: Result<(), ParseError>) -> Self {
        match result {
            Ok(()) => ExpressionVerdict {
                valid: true,
                message: None,
                position: None,
                expected: None,
                found: None,
            },
            Err(error) => ExpressionVerdict {
                valid: false,
                message: Some(error.to_string()),
                position: Some(error.column as u64),
                expected: Some(error.expected),
                found: Some(error.found),
            },
        }
    }
}

impl Example for ExpressionVerdict {
    fn example() -> Self {
        ExpressionVerdict::of(Filter::parse("status = ").map(drop))
    }
}

#[derive(ApiResponse)]
pub enum CheckResponse {
    /// The verdict: valid, or why not and where.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<ExpressionVerdict>),
}

operation_errors! {
    Check {
        400 => "The body is not JSON, or not `application/json`.",
        401 => "No admin token was sent, or the token is invalid.",
        403 => "The token is a user's, not the admin's.",
        413 => "The body is over its size limit.",
        415 => "The body's charset is not UTF-8.",
        422 => "A field is missing or of the wrong type, `kind` is neither `filter` nor `rule`, or a key is unknown; `errors` says which.",
    }
}

pub struct ExpressionsApi;

#[OpenApi(tag = "ApiTags::Expressions")]
impl ExpressionsApi {
    /// Check a filter or an API rule
    ///
    /// Parses the expression with the server's own parser. An invalid expression is still a 200,
    /// with `valid: false`, the message a save or a subscribe would answer with, and the
    /// 1-based character `position` it points at.
    #[oai(
        path = "/api/expressions/check",
        method = "post",
        operation_id = "checkExpression"
    )]
    async fn check(
        &self,
        app: Data<&App>,
        admin: AdminToken,
        body: JsonBody<ExpressionCheck>,
    ) -> Result<CheckResponse, Errors<Check>> {
        app.require_admin(&admin)?;
        let ExpressionCheck { expression, kind } = body.0;
        let parsed = match kind {
            ExpressionKind::Filter => Filter::parse(&expression).map(drop),
            ExpressionKind::Rule => Rule::parse(&expression).map(drop),
        };
        Ok(CheckResponse::Ok(Json(ExpressionVerdict::of(parsed))))
    }
}
