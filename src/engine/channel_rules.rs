//! Channel rules: the app channels, beyond the realtime subscriptions' own, that our channel
//! authorization signs — declared in the TOML file the way Laravel's `routes/channels.php`
//! declares them, so that an app needs no PHP backend to sign (DESIGN.md §10, §15).
//!
//! A rule is a pattern (`private-orders.{order}`; `{name}` matches `[^.]+`, the pattern the whole
//! channel name), a condition in the expression language whose record is the captures (as
//! strings) and whose `@request.auth` is the user's claims, and the claims a presence member
//! shows as `user_info`. A pattern without a `private-`, `presence-` or `private-encrypted-`
//! prefix is matched after stripping it, so Laravel's patterns port unchanged. The first
//! matching pattern wins; no match is a refusal.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::EngineError;
use crate::auth::Identity;
use crate::filter::{CompiledFilter, FilterEngine, Record, Rule};

/// A `[[channels]]` entry of the TOML file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ChannelRuleSeed {
    /// The channel name, with `{captures}`.
    pub pattern: String,
    /// Who may listen; empty: any signed-in user.
    #[serde(default)]
    pub rule: String,
    /// Claims copied into a presence member's `user_info`.
    #[serde(default)]
    pub user_info: Vec<String>,
}

/// The prefixes a pattern without one is matched after, longest first.
const KIND_PREFIXES: [&str; 3] = ["private-encrypted-", "private-", "presence-"];

/// The declared rules, compiled.
pub struct ChannelRules {
    rules: Vec<ChannelRule>,
    filters: Arc<FilterEngine>,
}

struct ChannelRule {
    pattern: Pattern,
    /// `None`: any signed-in user.
    condition: Option<Arc<CompiledFilter>>,
    user_info: Vec<String>,
}

/// A channel name pattern: literal text and `{captures}`.
#[derive(Debug, PartialEq)]
struct Pattern {
    /// Whether it names the kind of channel itself (`private-…`); if not, a channel's kind
    /// prefix is stripped before matching.
    prefixed: bool,
    parts: Vec<Part>,
}

#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    Capture(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("pattern `{text}`: `{{` without `}}`"))?;
            let name = &rest[open + 1..open + close];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "pattern `{text}`: `{{{name}}}` is not a capture name"
                ));
            }
            if matches!(parts.last(), Some(Part::Capture(_))) {
                return Err(format!("pattern `{text}`: two captures must be apart"));
            }
            parts.push(Part::Capture(name.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("pattern `{text}`: `}}` without `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("a pattern may not be empty".into());
        }
        Ok(Self {
            prefixed: KIND_PREFIXES.iter().any(|prefix| text.starts_with(prefix)),
            parts,
        })
    }

    /// The captures, when `channel` is matched whole.
    fn matches(&self, channel: &str) -> Option<Map<String, Value>> {
        let name = if self.prefixed {
            channel
        } else {
            KIND_PREFIXES
                .iter()
                .find_map(|prefix| channel.strip_prefix(prefix))
                .unwrap_or(channel)
        };
        let mut captures = Map::new();
        match_parts(&self.parts, name, &mut captures).then_some(captures)
    }
}

/// Whether `parts` match all of `text`; a capture takes one or more characters other than `.`.
fn match_parts(parts: &[Part], text: &str, captures: &mut Map<String, Value>) -> bool {
    match parts.split_first() {
        None => text.is_empty(),
        Some((Part::Text(literal), rest)) => text
            .strip_prefix(literal.as_str())
            .is_some_and(|text| match_parts(rest, text, captures)),
        Some((Part::Capture(name), rest)) => {
            let run = text.find('.').unwrap_or(text.len());
            (1..=run).rev().any(|length| {
                let matched = match_parts(rest, &text[length..], captures);
                if matched {
                    captures.insert(name.clone(), Value::String(text[..length].to_owned()));
                }
                matched
            })
        }
    }
}

/// What a channel rule grants: for a presence channel, the member's `channel_data`.
#[derive(Debug, PartialEq)]
pub struct Grant {
    pub channel_data: Option<String>,
}

impl ChannelRules {
    /// Compiles the declared rules; an error names the rule.
    pub fn compile(
        seeds: &[ChannelRuleSeed],
        filters: Arc<FilterEngine>,
    ) -> Result<Self, EngineError> {
        let rules = seeds
            .iter()
            .map(|seed| {
                let invalid = |message: String| {
                    EngineError::invalid(&format!("channels `{}`", seed.pattern), message)
                };
                let pattern = Pattern::parse(&seed.pattern).map_err(invalid)?;
                let condition = match Rule::parse(&seed.rule).map_err(|e| invalid(e.to_string()))? {
                    Rule::Public => None,
                    Rule::SuperuserOnly => {
                        return Err(invalid("a channel rule is an expression or empty".into()));
                    }
                    Rule::Expr(expr) => Some(Arc::new(
                        filters
                            .compile(Some(expr))
                            .map_err(|error| invalid(error.to_string()))?,
                    )),
                };
                Ok(ChannelRule {
                    pattern,
                    condition,
                    user_info: seed.user_info.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules, filters })
    }

    /// Whether `identity` may listen on the app channel `channel`: the first rule whose
    /// pattern matches decides. Guests are refused (401), as is a channel no rule matches
    /// (403: only Velo subscriptions and declared channels are ours to sign). The admin passes
    /// every rule, but has no user id for a presence channel.
    pub fn authorize(&self, identity: &Identity, channel: &str) -> Result<Grant, EngineError> {
        let Some((rule, captures)) = self.rules.iter().find_map(|rule| {
            rule.pattern
                .matches(channel)
                .map(|captures| (rule, captures))
        }) else {
            return Err(EngineError::Forbidden(format!(
                "no channel rule matches `{channel}`: declare one under [[channels]] in the configuration"
            )));
        };
        let presence = channel.starts_with("presence-");
        let user = match identity {
            Identity::Guest => return Err(EngineError::Unauthenticated),
            Identity::Superuser if presence => {
                return Err(EngineError::Forbidden(
                    "a presence channel needs a user: the admin token has none".into(),
                ));
            }
            Identity::Superuser => return Ok(Grant { channel_data: None }),
            Identity::User(user) => user,
        };
        if let Some(condition) = &rule.condition {
            let allowed = self
                .filters
                .evaluation(Record::from_object(&captures))
                .matches(condition, &identity.auth());
            if !allowed {
                return Err(EngineError::Forbidden(format!(
                    "the channel rule for `{channel}` does not let this user listen"
                )));
            }
        }
        let channel_data = presence.then(|| {
            let mut member = Map::new();
            member.insert("user_id".into(), user.id.clone().into());
            if !rule.user_info.is_empty() {
                let info: Map<String, Value> = rule
                    .user_info
                    .iter()
                    .filter_map(|claim| Some((claim.clone(), user.claims.get(claim)?.clone())))
                    .collect();
                member.insert("user_info".into(), Value::Object(info));
            }
            Value::Object(member).to_string()
        });
        Ok(Grant { channel_data })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::User;

    fn rules(seeds: &[(&str, &str, &[&str])]) -> ChannelRules {
        let seeds: Vec<ChannelRuleSeed> = seeds
            .iter()
            .map(|(pattern, rule, user_info)| ChannelRuleSeed {
                pattern: (*pattern).into(),
                rule: (*rule).into(),
                user_info: user_info.iter().map(|claim| (*claim).into()).collect(),
            })
            .collect();
        ChannelRules::compile(&seeds, Arc::new(FilterEngine::new())).unwrap()
    }

    fn user(claims: serde_json::Value) -> Identity {
        let claims = claims.as_object().unwrap().clone();
        Identity::User(Arc::new(User {
            id: claims["id"].as_str().unwrap().into(),
            claims,
            expires_at: None,
        }))
    }

    #[test]
    fn patterns_capture_dot_free_runs_of_the_whole_name() {
        let pattern = Pattern::parse("orders.{order}.items-{item}").unwrap();
        assert_eq!(
            pattern.matches("private-orders.7.items-a-b"),
            Some(
                json!({"order": "7", "item": "a-b"})
                    .as_object()
                    .unwrap()
                    .clone()
            ),
            "a pattern without a prefix matches after the kind prefix"
        );
        assert_eq!(pattern.matches("orders.7.8.items-a"), None, "[^.]+");
        assert_eq!(
            pattern.matches("orders.7.items-a.x"),
            None,
            "the whole name"
        );
        assert_eq!(pattern.matches("orders..items-a"), None, "not empty");
        let prefixed = Pattern::parse("presence-room.{id}").unwrap();
        assert!(prefixed.matches("presence-room.1").is_some());
        assert_eq!(prefixed.matches("private-room.1"), None);
        for bad in ["", "a.{", "a.{1x}", "a.{x}{y}", "a}"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rules = rules(&[
            ("orders.{order}", "order = @request.auth.order_id", &[]),
            ("presence-room.{room}", "", &["name"]),
            ("{anything}", "@request.auth.role = 'admin'", &[]),
        ]);
        let alice = user(json!({"id": "alice", "order_id": "7", "name": "Alice", "role": "x"}));
        assert!(rules.authorize(&alice, "private-orders.7").is_ok());
        assert!(matches!(
            rules.authorize(&alice, "private-orders.8"),
            Err(EngineError::Forbidden(_))
        ));
        assert!(matches!(
            rules.authorize(&Identity::Guest, "private-orders.7"),
            Err(EngineError::Unauthenticated)
        ));
        let grant = rules.authorize(&alice, "presence-room.1").unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&grant.channel_data.unwrap()).unwrap(),
            json!({"user_id": "alice", "user_info": {"name": "Alice"}})
        );
        assert!(
            rules
                .authorize(&Identity::Superuser, "private-orders.8")
                .is_ok()
        );
        assert!(
            rules
                .authorize(&Identity::Superuser, "presence-room.1")
                .is_err()
        );
        assert!(
            matches!(
                rules.authorize(&alice, "private-other.x.y"),
                Err(EngineError::Forbidden(_))
            ),
            "no rule matches a name with a dot where a capture is"
        );
    }
}
