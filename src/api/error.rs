//! The API's error table: every failure becomes one status and a JSON body
//! `{"message", "errors"?}` (DESIGN.md §3). Lower layers' errors map here exhaustively, and
//! [`render`] turns whatever poem itself refuses (unknown routes, wrong content types, bad
//! parameters) into the same shape. [`Errors`] documents, per operation, the statuses that
//! operation answers and what each means there; the response itself is always this table's.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaResponses, Registry};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, payload::Json};

use crate::auth::AuthError;
use crate::engine::EngineError;
use crate::store::StoreError;

/// The body of every error response.
#[derive(Object, Debug, Clone, PartialEq)]
#[oai(example)]
pub struct ErrorBody {
    /// What went wrong, and what to change.
    pub message: String,
    /// Per-field messages, for validation failures (422).
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
}

impl Example for ErrorBody {
    fn example() -> Self {
        // What subscribe answers for the filter `status = `.
        let message = "expected a value, a field or `@request.auth.<field>`, found the end of \
                       the expression at position 10";
        ErrorBody {
            message: message.into(),
            errors: Some(BTreeMap::from([(
                "filter".to_owned(),
                vec![message.to_owned()],
            )])),
        }
    }
}

#[derive(ApiResponse, Debug)]
pub enum ApiError {
    /// The request is malformed: invalid JSON, a wrong content type, or a bad parameter.
    #[oai(status = 400, content_type = "application/json")]
    BadRequest(Json<ErrorBody>),
    /// Credentials are required and missing, or the token is invalid or expired.
    #[oai(status = 401, content_type = "application/json")]
    Unauthorized(Json<ErrorBody>),
    /// The caller is known but not allowed.
    #[oai(status = 403, content_type = "application/json")]
    Forbidden(Json<ErrorBody>),
    /// No such collection, record, subscription or route (or a record the view rule hides).
    #[oai(status = 404, content_type = "application/json")]
    NotFound(Json<ErrorBody>),
    /// A record with this id exists already.
    #[oai(status = 409, content_type = "application/json")]
    Conflict(Json<ErrorBody>),
    /// What was asked for is no longer kept (a live subscription's events past its history).
    #[oai(status = 410, content_type = "application/json")]
    Gone(Json<ErrorBody>),
    /// The body, or the record, is over its size limit.
    #[oai(status = 413, content_type = "application/json")]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body's charset is not UTF-8 (`Content-Type: application/json; charset=utf-16`).
    #[oai(status = 415, content_type = "application/json")]
    UnsupportedMediaType(Json<ErrorBody>),
    /// A well-formed body with invalid fields; `errors` says which.
    #[oai(status = 422, content_type = "application/json")]
    Unprocessable(Json<ErrorBody>),
    /// A per-client limit was reached (live subscriptions, subscribe requests per second);
    /// `Retry-After` says in how many seconds to try again.
    #[oai(status = 429, content_type = "application/json")]
    TooManyRequests(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
    /// The server failed (storage): the request may not have taken effect.
    #[oai(status = 500, content_type = "application/json")]
    Internal(Json<ErrorBody>),
    /// The engine is not answering; retry later.
    #[oai(status = 503, content_type = "application/json")]
    Unavailable(Json<ErrorBody>),
}

/// The error statuses one operation answers, each with what it means for that operation, in
/// the order the document lists them. Declared with [`operation_errors!`].
pub trait OperationErrors {
    const STATUSES: &'static [(u16, &'static str)];
}

/// Declares a type naming one operation's error statuses: `operation_errors!(Ping { 404 =>
/// "No subscription has this channel name.", ... })`.
macro_rules! operation_errors {
    ($($(#[$doc:meta])* $name:ident { $($status:literal => $description:literal),+ $(,)? })+) => {
        $(
            $(#[$doc])*
            pub enum $name {}

            impl $crate::api::error::OperationErrors for $name {
                const STATUSES: &'static [(u16, &'static str)] = &[$(($status, $description)),+];
            }
        )+
    };
}
pub(crate) use operation_errors;

/// An operation's error: an [`ApiError`], answered as the table says, whose document lists only
/// the statuses `O` names, described as `O` describes them.
pub struct Errors<O>(ApiError, PhantomData<fn() -> O>);

impl<O: OperationErrors> ApiResponse for Errors<O> {
    fn meta() -> MetaResponses {
        let mut table = ApiError::meta().responses;
        let responses = O::STATUSES
            .iter()
            .map(|&(status, description)| {
                let at = table
                    .iter()
                    .position(|response| response.status == Some(status))
                    .unwrap_or_else(|| panic!("{status} is not a status of the error table"));
                let mut response = table.swap_remove(at);
                response.description = description;
                response
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        ApiError::register(registry);
    }
}

impl<O> IntoResponse for Errors<O> {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl<O> From<Errors<O>> for poem::Error {
    fn from(error: Errors<O>) -> Self {
        error.0.into()
    }
}

impl<O: OperationErrors> From<ApiError> for Errors<O> {
    /// In debug builds (the tests' server), an error whose status the operation does not
    /// document panics: the document must not lie to generated clients.
    fn from(error: ApiError) -> Self {
        debug_assert!(
            O::STATUSES
                .iter()
                .any(|&(status, _)| status == error.status()),
            "{} is not documented for {}: {error:?}",
            error.status(),
            std::any::type_name::<O>()
        );
        Errors(error, PhantomData)
    }
}

impl<O: OperationErrors> From<EngineError> for Errors<O> {
    fn from(error: EngineError) -> Self {
        ApiError::from(error).into()
    }
}

impl<O: OperationErrors> From<AuthError> for Errors<O> {
    fn from(error: AuthError) -> Self {
        ApiError::from(error).into()
    }
}

fn body(message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        message: message.into(),
        errors: None,
    })
}

impl ApiError {
    /// The status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::Gone(_) => 410,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Unprocessable(_) => 422,
            ApiError::TooManyRequests(..) => 429,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable(_) => 503,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(body(message))
    }

    pub fn unauthenticated() -> Self {
        ApiError::unauthorized("Unauthenticated.")
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::Unauthorized(body(message))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::Unavailable(body(message))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::Internal(body(message))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(body(message))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound(body(message))
    }

    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::Gone(body(message))
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::PayloadTooLarge(body(message))
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        ApiError::UnsupportedMediaType(body(message))
    }

    /// A per-client limit: try again in `retry_after_secs`.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> Self {
        ApiError::TooManyRequests(body(message), retry_after_secs)
    }

    /// A validation failure of one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Unprocessable(Json(ErrorBody {
            errors: Some(BTreeMap::from([(field.to_owned(), vec![message.clone()])])),
            message,
        }))
    }

    /// Validation failures of several fields: the message names each (`field: what; …`).
    pub fn invalid_fields(errors: BTreeMap<String, Vec<String>>) -> Self {
        let message = errors
            .iter()
            .map(|(field, messages)| format!("{field}: {}", messages.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        ApiError::Unprocessable(Json(ErrorBody {
            message,
            errors: Some(errors),
        }))
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Invalid { field, message } => ApiError::invalid(&field, message),
            EngineError::InvalidFields(fields) => ApiError::invalid_fields(
                fields
                    .into_iter()
                    .map(|(field, message)| (field, vec![message]))
                    .collect(),
            ),
            EngineError::UnknownCollection(_)
            | EngineError::UnknownChannel
            | EngineError::UnknownRecord(_) => ApiError::not_found(error.to_string()),
            EngineError::Conflict(_) => ApiError::Conflict(body(error.to_string())),
            EngineError::TooLarge(message) => ApiError::too_large(message),
            EngineError::Unauthenticated => ApiError::unauthenticated(),
            EngineError::Forbidden(message) => ApiError::Forbidden(body(message)),
            EngineError::Storage(StoreError::Unavailable(why)) => {
                tracing::warn!(%why, "the cluster's Redis is unavailable");
                ApiError::Unavailable(body(format!(
                    "the cluster's store (Redis) is unavailable, nothing was changed (or, if it answered too late, the change may yet appear): {why}; retry"
                )))
            }
            EngineError::Storage(StoreError::Conflict { .. }) => ApiError::Unavailable(body(
                "the collection kept changing on other nodes while this change was decided; retry",
            )),
            EngineError::Storage(error) => {
                tracing::error!(%error, "storage failure");
                ApiError::Internal(body("the server could not store the change; retry"))
            }
            EngineError::Unavailable => ApiError::Unavailable(body(error.to_string())),
            EngineError::Limited {
                message,
                retry_after_secs,
            } => ApiError::too_many_requests(message, retry_after_secs),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::InvalidToken(_)
            | AuthError::Expired
            | AuthError::NotYetValid
            | AuthError::NoSubject => {
                ApiError::Unauthorized(body(format!("Unauthenticated: {error}.")))
            }
        }
    }
}

/// The last word on every error the routes produce: errors that already are API responses pass
/// through; poem's own refusals get the JSON error shape and the status DESIGN.md §9 gives them.
/// `allowed` lists the methods the request's path does accept, for a 405's `Allow` header.
pub fn render(error: poem::Error, allowed: &[&str]) -> Response {
    if error.is_from_response() {
        return error.into_response();
    }
    let api_error = match error.status() {
        StatusCode::UNAUTHORIZED => ApiError::unauthenticated(),
        StatusCode::NOT_FOUND => ApiError::not_found("no such route"),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(error.to_string()),
        StatusCode::METHOD_NOT_ALLOWED => {
            let mut response = (
                StatusCode::METHOD_NOT_ALLOWED,
                body(format!("this route accepts {}", allowed.join(", "))),
            )
                .into_response();
            if let Ok(value) = allowed.join(", ").parse() {
                response
                    .headers_mut()
                    .insert(poem::http::header::ALLOW, value);
            }
            return response;
        }
        // Wrong content types (415 in poem) are bad requests here, as are failed parameters.
        status if status.is_client_error() => ApiError::bad_request(error.to_string()),
        _ => {
            tracing::error!(%error, "unexpected server error");
            ApiError::Internal(body("internal error"))
        }
    };
    api_error.into_response()
}
