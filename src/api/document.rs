//! The OpenAPI document as served at `/openapi.json`, embedded in Swagger UI and committed under
//! `openapi/`: poem-openapi's, with the edits below, which it cannot express. It owns the
//! document's shape, not what any operation does.
//!
//! Optional credentials: poem-openapi writes `security: [{"BearerToken": []}, {}]` on each
//! operation a guest may call. That is correct OpenAPI, but generators read any operation-level
//! `security` as "credentials required" (openapi-python-client then demands an
//! `AuthenticatedClient`). The same requirement stated once at the document's top level means
//! the same to Swagger UI (which still sends the token when one is set) and leaves those
//! operations callable with a plain client. Operations that need other credentials (the admin
//! token) keep their own `security`; those that read none get `security: []`.
//!
//! Nullable references: poem-openapi writes a nullable `Option<Object>` property as
//! `{"nullable": true, "allOf": [{"$ref"}, {"nullable": true}]}`, which has no `type` beside
//! `nullable` (invalid in OpenAPI 3.0, linters refuse it) and makes generators invent a type
//! per property. It becomes `{"type": <the referenced type>, "nullable": true, "allOf":
//! [{"$ref"}]}`.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// JSON whose objects keep their keys' order (serde_json's `Value` sorts them), so the edited
/// document reads as poem-openapi wrote it.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
enum Ordered {
    Object(IndexMap<String, Ordered>),
    Array(Vec<Ordered>),
    Scalar(Value),
}

/// The security requirement of the operations a guest may call.
fn optional_bearer() -> Ordered {
    let bearer = IndexMap::from([("BearerToken".to_owned(), Ordered::Array(Vec::new()))]);
    Ordered::Array(vec![
        Ordered::Object(bearer),
        Ordered::Object(IndexMap::new()),
    ])
}

/// `spec` (poem-openapi's document) with the optional bearer token stated at the top level.
pub fn edited(spec: &str) -> String {
    let Ok(Ordered::Object(mut document)) = serde_json::from_str(spec) else {
        panic!("poem-openapi renders the document as a JSON object");
    };
    let optional = optional_bearer();
    if let Some(Ordered::Object(paths)) = document.get_mut("paths") {
        for operation in paths.values_mut().filter_map(|item| match item {
            Ordered::Object(methods) => Some(methods.values_mut()),
            _ => None,
        }) {
            for operation in operation {
                let Ordered::Object(operation) = operation else {
                    continue;
                };
                match operation.get("security") {
                    Some(security) if *security == optional => {
                        operation.shift_remove("security");
                    }
                    Some(_) => {}
                    None => {
                        operation.insert("security".into(), Ordered::Array(Vec::new()));
                    }
                }
            }
        }
    }
    if let Some(Ordered::Object(components)) = document.get("components")
        && let Some(Ordered::Object(schemas)) = components.get("schemas")
    {
        let types: IndexMap<String, Ordered> = schemas
            .iter()
            .filter_map(|(name, schema)| match schema {
                Ordered::Object(schema) => Some((name.clone(), schema.get("type")?.clone())),
                _ => None,
            })
            .collect();
        for schema in document.values_mut() {
            type_nullable_references(schema, &types);
        }
    }
    document.insert("security".into(), optional);
    serde_json::to_string_pretty(&document).expect("the document serializes")
}

/// Gives every nullable schema that is a reference (`allOf: [{"$ref"}, ...]`, no `type`) the
/// referenced schema's type, from `types` (by schema name), and drops the `allOf` parts that
/// only repeat `nullable` and the description.
fn type_nullable_references(value: &mut Ordered, types: &IndexMap<String, Ordered>) {
    match value {
        Ordered::Object(object) => {
            let nullable = object.get("nullable") == Some(&Ordered::Scalar(Value::Bool(true)));
            let referenced = match object.get("allOf") {
                Some(Ordered::Array(parts)) if nullable && !object.contains_key("type") => parts
                    .first()
                    .and_then(|part| match part {
                        Ordered::Object(part) => match part.get("$ref") {
                            Some(Ordered::Scalar(Value::String(target))) => {
                                target.rsplit('/').next().and_then(|name| types.get(name))
                            }
                            _ => None,
                        },
                        _ => None,
                    })
                    .cloned(),
                _ => None,
            };
            if let Some(ty) = referenced {
                object.insert("type".into(), ty);
                if let Some(Ordered::Array(parts)) = object.get_mut("allOf") {
                    parts.truncate(1);
                }
            }
            for value in object.values_mut() {
                type_nullable_references(value, types);
            }
        }
        Ordered::Array(items) => {
            for item in items {
                type_nullable_references(item, types);
            }
        }
        Ordered::Scalar(_) => {}
    }
}
