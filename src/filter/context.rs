//! What an expression is evaluated against: the subscriber's [`Auth`] and the event's [`Record`].
//!
//! Both are converted to rhai values once (the auth when the subscription is made, the record once
//! per event) so that evaluating a filter never converts or copies them again.

use std::fmt;
use std::sync::LazyLock;

use rhai::{Dynamic, ImmutableString, Map};

use super::ast::FieldPath;
use super::value;

/// The claims of the subscriber, seen by expressions as `@request.auth.*`.
///
/// A guest has no claims, so every `@request.auth.*` is `""` for a guest; the same holds for any
/// claim a token lacks. `@request.auth.id` is the `id` claim, else the `sub` claim.
#[derive(Clone)]
pub struct Auth {
    /// A shared rhai map: cloning an `Auth` or putting it in a rhai scope is a reference-count
    /// increment, never a copy of the claims.
    claims: Dynamic,
}

impl Auth {
    /// The guest's (empty) claims. Shared: every guest subscription points at one map.
    pub fn guest() -> Self {
        static GUEST: LazyLock<Auth> = LazyLock::new(|| Auth::from_map(Map::new()));
        GUEST.clone()
    }

    pub fn from_claims(claims: &serde_json::Map<String, serde_json::Value>) -> Self {
        let mut map = value::map_from_json(claims);
        if !map.contains_key("id")
            && let Some(sub) = map.get("sub").cloned()
        {
            map.insert("id".into(), sub);
        }
        Self::from_map(map)
    }

    fn from_map(map: Map) -> Self {
        Self {
            claims: Dynamic::from_map(map).into_shared(),
        }
    }

    /// The value of `@request.auth.<path>` (`""` when absent).
    pub fn claim(&self, path: &FieldPath) -> Dynamic {
        match self.claims.as_map_ref() {
            Ok(claims) => value::claim(&claims, path.as_str()),
            Err(_) => Dynamic::from(ImmutableString::new()),
        }
    }

    /// The claims as a shared rhai map: read it, or copy it (`flatten_clone`) to change it.
    pub fn as_dynamic(&self) -> &Dynamic {
        &self.claims
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("claims", &self.claims)
            .finish()
    }
}

/// A record as filters see it: a JSON object converted once to a rhai map.
#[derive(Clone, Debug)]
pub struct Record(pub(super) Map);

impl Record {
    pub fn from_object(object: &serde_json::Map<String, serde_json::Value>) -> Self {
        Self(value::map_from_json(object))
    }

    /// Only `fields` of `object` (those it has).
    pub fn from_fields(
        object: &serde_json::Map<String, serde_json::Value>,
        fields: &[ImmutableString],
    ) -> Self {
        Self(
            fields
                .iter()
                .filter_map(|name| {
                    object
                        .get(name.as_str())
                        .map(|value| (name.as_str().into(), value::from_json(value)))
                })
                .collect(),
        )
    }

    /// `None` when `value` is not a JSON object (records always are).
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        value.as_object().map(Self::from_object)
    }
}
