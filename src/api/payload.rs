//! `JsonBody<T>`: a JSON request body that tells malformed JSON (400) from a well-formed body
//! whose fields are wrong (422 with `errors.<field>`), which poem-openapi's `Json<T>` does not.
//!
//! Field errors come from the documented schema itself: required properties and the JSON type
//! of each property are checked against `T`'s OpenAPI schema before `T` is parsed, so the
//! messages and the spec cannot disagree.

use std::collections::BTreeMap;

use poem::{IntoResponse, Request, RequestBody};
use poem_openapi::impl_apirequest_for_payload;
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, Type};
use serde_json::Value;

use super::error::{ApiError, ErrorBody};

/// Request bodies larger than this are refused with 413 (DESIGN.md §9).
pub const MAX_BODY_BYTES: usize = 1 << 20;

pub struct JsonBody<T>(pub T);

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(content_type: &str) -> bool {
        matches!(content_type.parse::<mime::Mime>(), Ok(content_type)
            if content_type.type_() == "application"
            && (content_type.subtype() == "json" || content_type.suffix().is_some_and(|v| v == "json")))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

fn refuse(error: ApiError) -> poem::Error {
    poem::Error::from_response(error.into_response())
}

impl<T: ParseFromJSON> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(_: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let bytes = body
            .take()?
            .into_bytes_limit(MAX_BODY_BYTES)
            .await
            .map_err(|error| match error {
                poem::error::ReadBodyError::PayloadTooLarge => refuse(ApiError::too_large(
                    format!("the body is over the limit of {MAX_BODY_BYTES} bytes"),
                )),
                other => refuse(ApiError::bad_request(format!(
                    "cannot read the body: {other}"
                ))),
            })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|error| {
            refuse(ApiError::bad_request(format!(
                "the body is not valid JSON: {error}"
            )))
        })?;
        let mut registry = Registry::new();
        T::register(&mut registry);
        if let Some(errors) = field_errors(&T::schema_ref(), &registry, &value) {
            let message = errors
                .iter()
                .map(|(field, messages)| format!("{field}: {}", messages.join(", ")))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(refuse(ApiError::Unprocessable(
                poem_openapi::payload::Json(ErrorBody {
                    message,
                    errors: Some(errors),
                }),
            )));
        }
        T::parse_from_json(Some(value))
            .map(JsonBody)
            .map_err(|error| refuse(ApiError::invalid("body", error.into_message())))
    }
}

impl_apirequest_for_payload!(JsonBody<T>, T: ParseFromJSON);

fn resolve<'r>(schema: &'r MetaSchemaRef, registry: &'r Registry) -> Option<&'r MetaSchema> {
    match schema {
        MetaSchemaRef::Inline(schema) => Some(schema),
        MetaSchemaRef::Reference(name) => registry.schemas.get(name),
    }
}

/// Missing required properties and properties of the wrong JSON type, by field name.
fn field_errors(
    schema: &MetaSchemaRef,
    registry: &Registry,
    value: &Value,
) -> Option<BTreeMap<String, Vec<String>>> {
    let schema = resolve(schema, registry)?;
    let Value::Object(object) = value else {
        return Some(BTreeMap::from([(
            "body".to_owned(),
            vec!["must be a JSON object".to_owned()],
        )]));
    };
    let mut errors = BTreeMap::new();
    for required in &schema.required {
        if object.get(*required).is_none_or(Value::is_null) {
            errors.insert(
                (*required).to_owned(),
                vec![format!("`{required}` is required")],
            );
        }
    }
    for (name, property) in &schema.properties {
        let (Some(value), Some(property)) = (object.get(*name), resolve(property, registry)) else {
            continue;
        };
        if value.is_null() {
            if !property.nullable && !schema.required.contains(name) {
                errors.insert(
                    (*name).to_owned(),
                    vec![format!("`{name}` must not be null; leave it out instead")],
                );
            }
            continue;
        }
        let fits = match property.ty {
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        };
        if !fits {
            errors.insert(
                (*name).to_owned(),
                vec![format!("`{name}` must be of type {}", property.ty)],
            );
        }
    }
    (!errors.is_empty()).then_some(errors)
}
