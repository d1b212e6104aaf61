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
//! References: poem-openapi writes a documented or nullable property of an object type as
//! `{"description", "nullable"?, "allOf": [{"$ref"}, {"description", "nullable"?}]}`. The
//! second part only repeats the first level, yet makes generators invent a type per property
//! (`PublishRequestRecord` for a `Record`), so it is dropped; and a nullable one has no
//! `type` beside `nullable` (invalid in OpenAPI 3.0, linters refuse it), so it gets the
//! referenced schema's type.

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
            tidy_references(schema, &types);
        }
    }
    document.insert("security".into(), optional);
    serde_json::to_string_pretty(&document).expect("the document serializes")
}

/// Tidies every schema that is a reference (`allOf: [{"$ref"}, ...]`): drops the later parts
/// that only repeat its `description` and `nullable`, and gives it, when nullable and untyped,
/// the referenced schema's type from `types` (by schema name).
fn tidy_references(value: &mut Ordered, types: &IndexMap<String, Ordered>) {
    match value {
        Ordered::Object(object) => {
            let referenced = match object.get("allOf") {
                Some(Ordered::Array(parts)) => parts.first().and_then(|part| match part {
                    Ordered::Object(part) => match part.get("$ref") {
                        Some(Ordered::Scalar(Value::String(target))) => {
                            target.rsplit('/').next().map(str::to_owned)
                        }
                        _ => None,
                    },
                    _ => None,
                }),
                _ => None,
            };
            if let Some(name) = referenced {
                let repeats = |part: &Ordered| match part {
                    Ordered::Object(part) => part.iter().all(|(key, value)| {
                        (key == "description" || key == "nullable")
                            && object.get(key) == Some(value)
                    }),
                    _ => false,
                };
                let kept: Vec<Ordered> = match object.get("allOf") {
                    Some(Ordered::Array(parts)) => parts
                        .iter()
                        .enumerate()
                        .filter(|(at, part)| *at == 0 || !repeats(part))
                        .map(|(_, part)| part.clone())
                        .collect(),
                    _ => Vec::new(),
                };
                object.insert("allOf".into(), Ordered::Array(kept));
                let nullable = object.get("nullable") == Some(&Ordered::Scalar(Value::Bool(true)));
                if nullable
                    && !object.contains_key("type")
                    && let Some(ty) = types.get(&name)
                {
                    object.insert("type".into(), ty.clone());
                }
            }
            for value in object.values_mut() {
                tidy_references(value, types);
            }
        }
        Ordered::Array(items) => {
            for item in items {
                tidy_references(item, types);
            }
        }
        Ordered::Scalar(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn states_optional_credentials_once_and_tidies_references() {
        let optional = json!([{"BearerToken": []}, {}]);
        let spec = json!({
            "openapi": "3.0.0",
            "paths": {
                "/guest": {"post": {"operationId": "guest", "security": optional}},
                "/admin": {"get": {"operationId": "admin", "security": [{"AdminToken": []}]}},
                "/health": {"get": {"operationId": "health"}}
            },
            "components": {"schemas": {
                "Rules": {"type": "object"},
                "New": {"type": "object", "properties": {
                    "rules": {"description": "d", "nullable": true,
                        "allOf": [{"$ref": "#/components/schemas/Rules"},
                                  {"description": "d", "nullable": true}]},
                    "other": {"description": "o",
                        "allOf": [{"$ref": "#/components/schemas/Rules"},
                                  {"description": "o"}, {"description": "kept"}]}
                }}
            }}
        });
        let edited: Value = serde_json::from_str(&edited(&spec.to_string())).unwrap();
        assert_eq!(edited["security"], optional);
        assert!(edited["paths"]["/guest"]["post"].get("security").is_none());
        assert_eq!(
            edited["paths"]["/admin"]["get"]["security"],
            json!([{"AdminToken": []}])
        );
        assert_eq!(edited["paths"]["/health"]["get"]["security"], json!([]));
        let properties = &edited["components"]["schemas"]["New"]["properties"];
        assert_eq!(
            properties["rules"],
            json!({"description": "d", "nullable": true, "type": "object",
                   "allOf": [{"$ref": "#/components/schemas/Rules"}]})
        );
        assert_eq!(
            properties["other"]["allOf"],
            json!([{"$ref": "#/components/schemas/Rules"}, {"description": "kept"}])
        );
    }

    #[test]
    fn keeps_the_order_poem_openapi_wrote() {
        let spec = r#"{"openapi": "3.0.0", "info": {"title": "t", "version": "1"}, "paths": {}}"#;
        let keys: Vec<String> = edited(spec)
            .lines()
            .filter_map(|line| line.strip_prefix("  \""))
            .filter_map(|line| line.split('"').next().map(str::to_owned))
            .collect();
        assert_eq!(keys, ["openapi", "info", "paths", "security"]);
    }
}
