//! `JsonBody<T>`: a JSON request body that tells malformed JSON (400) from a well-formed body
//! whose fields are wrong (422 with `errors.<field>`), which poem-openapi's `Json<T>` does not.
//!
//! Field errors come from the documented schema itself: required properties, the JSON type of
//! each property and, for types that refuse them ([`UnknownKeys::Refused`]), keys the schema
//! does not list are checked against `T`'s OpenAPI schema before `T` is parsed, at every level
//! the schema describes (`errors["api_rules.lisst"]`), so the messages and the spec cannot
//! disagree. Integers beyond 64 bits, which serde_json would round to floats, are refused too
//! (DESIGN.md §15). It owns no rule about what a valid value is beyond the schema.
//!
//! Content types: `application/json` (or `+json`) with no charset or `charset=utf-8` in any case;
//! another charset is 415 (DESIGN.md §15). A body that is not JSON at all is poem's refusal, 400.

use std::collections::BTreeMap;

use poem::{IntoResponse, Request, RequestBody};
use poem_openapi::impl_apirequest_for_payload;
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, Type};
use serde_json::{Map, Value};

use super::error::ApiError;

/// Request bodies larger than this are refused with 413 (DESIGN.md §9).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What a body does with keys its schema does not list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownKeys {
    /// 422 under `errors["<path>"]`, naming the accepted keys: a misspelt optional key would
    /// otherwise quietly mean "absent".
    Refused,
    /// Left out of the parsed value.
    Ignored,
}

/// A type a [`JsonBody`] carries, with its answer to keys outside its schema: each body type
/// says, next to its definition, why it refuses or ignores them.
pub trait BodyType: ParseFromJSON {
    const UNKNOWN_KEYS: UnknownKeys;
}

pub struct JsonBody<T>(pub T);

impl<T: Type> Payload for JsonBody<T> {
    /// Documented without a charset (JSON is UTF-8, RFC 8259), so generated clients file the body
    /// under the plain media type; `charset=utf-8` is accepted all the same.
    const CONTENT_TYPE: &'static str = "application/json";

    /// Any charset passes here so that [`ParsePayload::from_request`] can refuse all but UTF-8
    /// with 415; poem refuses other content types (400, see `error::render`).
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

/// The charset of a JSON content type, when it names one other than UTF-8.
fn foreign_charset(content_type: &str) -> Option<String> {
    let mime = content_type.parse::<mime::Mime>().ok()?;
    let charset = mime.get_param(mime::CHARSET)?;
    (!charset.as_str().eq_ignore_ascii_case("utf-8")).then(|| charset.as_str().to_owned())
}

impl<T: BodyType> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        if let Some(charset) = request.content_type().and_then(foreign_charset) {
            return Err(refuse(ApiError::unsupported_media_type(format!(
                "the body must be UTF-8 JSON: send `Content-Type: application/json` without a \
                 charset or with `charset=utf-8`, not `charset={charset}`"
            ))));
        }
        let bytes = read(body).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|error| {
            refuse(ApiError::bad_request(format!(
                "the body is not valid JSON: {error}"
            )))
        })?;
        let wide = wide_integers(&bytes).into_iter().map(|path| {
            let field = if path.is_empty() {
                "body".to_owned()
            } else {
                path
            };
            let message = format!(
                "`{field}` is an integer beyond 64 bits, which cannot be kept exactly: \
                 integers must lie between {} and {}; send larger ones as strings",
                i64::MIN,
                u64::MAX
            );
            (field, message)
        });
        checked(value, wide).map(JsonBody)
    }
}

/// Reads a whole body, up to [`MAX_BODY_BYTES`].
async fn read(body: &mut RequestBody) -> poem::Result<Vec<u8>> {
    body.take()?
        .into_bytes_limit(MAX_BODY_BYTES)
        .await
        .map(|bytes| bytes.to_vec())
        .map_err(|error| match error {
            poem::error::ReadBodyError::PayloadTooLarge => refuse(ApiError::too_large(format!(
                "the body is over the limit of {MAX_BODY_BYTES} bytes"
            ))),
            other => refuse(ApiError::bad_request(format!(
                "cannot read the body: {other}"
            ))),
        })
}

/// Parses a well-formed body into `T` after checking it against `T`'s schema; `more` are field
/// errors the caller found. Any error is a 422 listing every field's.
fn checked<T: BodyType>(
    value: Value,
    more: impl IntoIterator<Item = (String, String)>,
) -> poem::Result<T> {
    let mut registry = Registry::new();
    T::register(&mut registry);
    let mut check = Check {
        registry: &registry,
        unknown_keys: T::UNKNOWN_KEYS,
        errors: BTreeMap::new(),
    };
    check.body(&T::schema_ref(), &value);
    for (field, message) in more {
        check.add(&field, message);
    }
    if !check.errors.is_empty() {
        return Err(refuse(ApiError::invalid_fields(check.errors)));
    }
    T::parse_from_json(Some(value))
        .map_err(|error| refuse(ApiError::invalid("body", error.into_message())))
}

impl_apirequest_for_payload!(JsonBody<T>, T: BodyType);

/// `FormBody<T>`: an `application/x-www-form-urlencoded` body (what pusher-js and Laravel Echo
/// send to authorize a channel), checked like a [`JsonBody`]: every value is a string, and a
/// missing field is a 422 under its name, not poem's 400. A repeated key keeps its last value.
pub struct FormBody<T>(pub T);

impl<T: Type> Payload for FormBody<T> {
    const CONTENT_TYPE: &'static str = "application/x-www-form-urlencoded";

    fn check_content_type(content_type: &str) -> bool {
        matches!(content_type.parse::<mime::Mime>(), Ok(content_type)
            if content_type.essence_str() == "application/x-www-form-urlencoded")
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: BodyType> ParsePayload for FormBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(_: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let bytes = read(body).await?;
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).map_err(|error| {
                refuse(ApiError::bad_request(format!(
                    "the body is not a valid form: {error}"
                )))
            })?;
        let fields: Map<String, Value> = pairs
            .into_iter()
            .map(|(key, value)| (key, Value::String(value)))
            .collect();
        checked(Value::Object(fields), []).map(FormBody)
    }
}

impl_apirequest_for_payload!(FormBody<T>, T: BodyType);

fn resolve<'r>(schema: &'r MetaSchemaRef, registry: &'r Registry) -> Option<&'r MetaSchema> {
    match schema {
        MetaSchemaRef::Inline(schema) => Some(schema),
        MetaSchemaRef::Reference(name) => registry.schemas.get(name),
    }
}

/// The schema a property's value is described by: poem-openapi writes a nullable or documented
/// reference as an untyped schema whose `allOf` holds the reference.
fn described<'r>(schema: &'r MetaSchema, registry: &'r Registry) -> &'r MetaSchema {
    if !schema.ty.is_empty() {
        return schema;
    }
    schema
        .all_of
        .iter()
        .filter_map(|part| resolve(part, registry))
        .find(|part| !part.ty.is_empty())
        .map_or(schema, |part| described(part, registry))
}

/// Field errors of a body against its schema, by field path (`name`, `api_rules.list`).
struct Check<'r> {
    registry: &'r Registry,
    unknown_keys: UnknownKeys,
    errors: BTreeMap<String, Vec<String>>,
}

impl Check<'_> {
    fn add(&mut self, field: &str, message: String) {
        self.errors
            .entry(field.to_owned())
            .or_default()
            .push(message);
    }

    fn body(&mut self, schema: &MetaSchemaRef, value: &Value) {
        let Some(schema) = resolve(schema, self.registry) else {
            return;
        };
        match value {
            Value::Object(object) => self.object(described(schema, self.registry), object, ""),
            _ => self.add("body", "must be a JSON object".to_owned()),
        }
    }

    /// A value of the wrong JSON type for `schema`; inside objects and arrays, their fields and
    /// items are checked the same way (poem-openapi would read a number or a boolean given for a
    /// string as its text).
    fn value(&mut self, schema: &MetaSchema, value: &Value, key: &str) {
        let fits = match schema.ty {
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        };
        if !fits {
            self.add(key, format!("`{key}` must be of type {}", schema.ty));
            return;
        }
        match value {
            Value::Object(inner) => self.object(schema, inner, key),
            Value::Array(items) => {
                let registry = self.registry;
                let Some(item) = schema
                    .items
                    .as_deref()
                    .and_then(|item| resolve(item, registry))
                else {
                    return;
                };
                let item = described(item, registry);
                for (at, value) in items.iter().enumerate() {
                    self.value(item, value, &format!("{key}[{at}]"));
                }
            }
            _ => {}
        }
    }

    /// Missing required properties, properties of the wrong JSON type and, when refused, keys
    /// the schema does not list; nested objects the schema describes are checked the same way.
    fn object(&mut self, schema: &MetaSchema, object: &Map<String, Value>, path: &str) {
        let registry = self.registry;
        let field = |name: &str| {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        };
        for required in &schema.required {
            if object.get(*required).is_none_or(Value::is_null) {
                let key = field(required);
                self.add(&key, format!("`{key}` is required"));
            }
        }
        for (name, property) in &schema.properties {
            let (Some(value), Some(property)) = (object.get(*name), resolve(property, registry))
            else {
                continue;
            };
            let key = field(name);
            if value.is_null() {
                if !property.nullable && !schema.required.contains(name) {
                    self.add(
                        &key,
                        format!("`{key}` must not be null; leave it out instead"),
                    );
                }
                continue;
            }
            self.value(described(property, registry), value, &key);
        }
        let closed = schema.ty == "object" && schema.additional_properties.is_none();
        if closed && self.unknown_keys == UnknownKeys::Refused {
            let accepted = schema
                .properties
                .iter()
                .map(|(name, _)| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ");
            for name in object.keys() {
                if !schema.properties.iter().any(|(known, _)| known == name) {
                    let key = field(name);
                    self.add(
                        &key,
                        format!("`{key}` is not a known key; the accepted keys are {accepted}"),
                    );
                }
            }
        }
    }
}

/// Paths of the integers in valid JSON text that lie outside `i64::MIN..=u64::MAX` (`""` for
/// the whole body, `a.b[1]` inside it). serde_json reads them as floats, rounded, and keeps no
/// trace of how they were written, so the text itself is read again: a number is an integer
/// when written without a fraction or an exponent, as in serde_json.
fn wide_integers(json: &[u8]) -> Vec<String> {
    let mut scan = Scan {
        json,
        at: 0,
        path: String::new(),
        found: Vec::new(),
    };
    scan.value();
    scan.found
}

/// A reader over JSON text already known to be valid (serde_json parsed it): it only tracks
/// where it is and what each number looks like. Depth is bounded by serde_json's limit (128).
struct Scan<'j> {
    json: &'j [u8],
    at: usize,
    path: String,
    found: Vec<String>,
}

impl Scan<'_> {
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.json.get(self.at) {
            self.at += 1;
        }
        self.json.get(self.at).copied()
    }

    fn value(&mut self) {
        match self.peek() {
            Some(b'{') => {
                self.at += 1;
                while let Some(byte) = self.peek() {
                    self.at += 1;
                    match byte {
                        b'"' => {
                            let start = self.at - 1;
                            let end = self.skip_string();
                            let key = match serde_json::from_slice(&self.json[start..end]) {
                                Ok(key) => key,
                                Err(_) => {
                                    String::from_utf8_lossy(&self.json[start..end]).into_owned()
                                }
                            };
                            self.peek(); // the `:`
                            self.at += 1;
                            self.nested(|path| {
                                if !path.is_empty() {
                                    path.push('.');
                                }
                                path.push_str(&key);
                            });
                        }
                        b'}' => return,
                        _ => {} // `,`
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut index = 0;
                loop {
                    match self.peek() {
                        Some(b']') | None => {
                            self.at += 1;
                            return;
                        }
                        Some(b',') => self.at += 1,
                        Some(_) => {
                            self.nested(|path| path.push_str(&format!("[{index}]")));
                            index += 1;
                        }
                    }
                }
            }
            Some(b'"') => {
                self.at += 1;
                self.skip_string();
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => {
                // `true`, `false`, `null`
                while self.json.get(self.at).is_some_and(u8::is_ascii_alphabetic) {
                    self.at += 1;
                }
            }
        }
    }

    /// Reads a value with `step` added to the path.
    fn nested(&mut self, step: impl FnOnce(&mut String)) {
        let length = self.path.len();
        step(&mut self.path);
        self.value();
        self.path.truncate(length);
    }

    /// Reads past a string whose opening quote is behind; returns where it ended.
    fn skip_string(&mut self) -> usize {
        while let Some(&byte) = self.json.get(self.at) {
            self.at += if byte == b'\\' { 2 } else { 1 };
            if byte == b'"' {
                break;
            }
        }
        self.at
    }

    fn number(&mut self) {
        let start = self.at;
        let mut integer = true;
        while let Some(&byte) = self.json.get(self.at) {
            match byte {
                b'0'..=b'9' | b'-' | b'+' => {}
                b'.' | b'e' | b'E' => integer = false,
                _ => break,
            }
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.json[start..self.at]).unwrap_or_default();
        if integer && text.parse::<i64>().is_err() && text.parse::<u64>().is_err() {
            self.found.push(self.path.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_integers_beyond_64_bits_by_path() {
        let json = br#" {"a": {"b": [1, 18446744073709551616, {"c": -9223372036854775809}]},
            "ok": [18446744073709551615, -9223372036854775808, 1e300, 1.5, 12345678901234567890.0],
            "s": "18446744073709551616 \" \\", "k\"ey": 99999999999999999999, "t": true,
            "\u00e9": 100000000000000000000, "n": null} "#;
        assert!(serde_json::from_slice::<Value>(json).is_ok(), "valid JSON");
        assert_eq!(
            wide_integers(json),
            ["a.b[1]", "a.b[2].c", "k\"ey", "é"].map(String::from)
        );
        assert_eq!(wide_integers(b"[0, 1e2, 18446744073709551616]"), ["[2]"]);
        assert_eq!(wide_integers(b"99999999999999999999"), [""]);
        assert!(wide_integers(br#"{"a": [[], {}, ""], "b": -0}"#).is_empty());
    }

    #[test]
    fn only_utf_8_is_an_accepted_charset() {
        for accepted in [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=UTF-8",
            "application/json;charset=\"utf-8\"",
            "application/merge-patch+json; charset=Utf-8",
        ] {
            assert_eq!(foreign_charset(accepted), None, "{accepted}");
        }
        for refused in [
            "application/json; charset=utf-16",
            "application/json; charset=iso-8859-1",
            "application/json; charset=utf8",
        ] {
            assert!(foreign_charset(refused).is_some(), "{refused}");
        }
    }
}
