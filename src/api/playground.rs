//! `POST /api/expressions/evaluate` (admin): the console's filter playground. Given a filter, a
//! list rule, a record and a subscriber, it answers whether that subscriber's subscription would
//! get the record's events, and how: each side (rule, filter) and each of its AND-ed parts,
//! decided when subscribing (from `@request.auth` alone) or by the record; and how the
//! subscription index filed the subscription and decided the record, by a bucket lookup or by
//! running the compiled rhai script. It runs the server's own parser, admission, compiler and
//! index on a one-subscription index of its own: it reads no collection and changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::{Value, json};

use super::error::{ApiError, Errors, operation_errors};
use super::payload::{BodyType, JsonBody, UnknownKeys};
use super::records::Record as RecordBody;
use super::security::AdminToken;
use super::{ApiTags, App};
use crate::auth::{Identity, User};
use crate::engine::collection::admit;
use crate::engine::records::check_size;
use crate::filter::fold::{Truth, evaluate, fold};
use crate::filter::{
    Auth, Decision, Expr, Filter, FilterEngine, Plan, Record, Rule, SubscriptionIndex, condition,
};

/// A filter, a list rule, a record and a subscriber to evaluate them for.
#[derive(Object, Debug)]
#[oai(example)]
pub struct EvaluateRequest {
    /// The realtime filter, as a subscribe would send it; `""` keeps every record.
    #[oai(default)]
    pub filter: String,
    /// The collection's list rule, as `api_rules.list` holds it: `""` is anyone; absent, or
    /// `SUPERUSER_ONLY`, the admin only.
    pub rule: Option<String>,
    /// The record, as its event carries it.
    pub record: RecordBody,
    /// The subscriber's token claims (`@request.auth`): `id`, else `sub`, identifies the user,
    /// as when a token is verified (`exp` and `nbf` are not checked here). Absent: a guest.
    pub auth: Option<BTreeMap<String, Value>>,
    /// Evaluate for the admin, who bypasses every rule; `auth` must then be absent.
    #[oai(default)]
    pub admin: bool,
}

/// Unknown keys are refused (422): a misspelt `auth` would otherwise evaluate for a guest.
impl BodyType for EvaluateRequest {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Refused;
}

impl Example for EvaluateRequest {
    fn example() -> Self {
        let object = |value: Value| match value {
            Value::Object(map) => map,
            _ => unreachable!("an object literal"),
        };
        EvaluateRequest {
            filter: "status = 'published'".into(),
            rule: Some("author = @request.auth.id".into()),
            record: RecordBody(object(json!({
                "id": "k3vbd1iq0y8c2x7",
                "title": "Hello",
                "status": "published",
                "author": "u1",
            }))),
            auth: Some(
                object(json!({"id": "u1", "role": "member"}))
                    .into_iter()
                    .collect(),
            ),
            admin: false,
        }
    }
}

/// What decided one side, or one part of it.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum Decider {
    /// No expression (an empty filter, or a rule of `""`): every record.
    Empty,
    /// The admin bypasses every rule.
    Admin,
    /// The subscriber may not subscribe at all (see `refused`).
    Refused,
    /// Decided when subscribing, from the expression and `@request.auth` alone: the same
    /// outcome for every record.
    Subscription,
    /// Decided by this record's fields.
    Record,
}

/// One AND-ed part of a side and its outcome.
#[derive(Object, Debug, PartialEq)]
pub struct PartVerdict {
    /// The part, in canonical text.
    pub expression: String,
    pub holds: bool,
    /// `subscription` or `record`.
    pub decided_by: Decider,
}

/// How one side (the rule, or the filter) decided.
#[derive(Object, Debug, PartialEq)]
pub struct SideVerdict {
    /// The side in canonical text (fully parenthesised); `""` when there is none, and
    /// `SUPERUSER_ONLY` for that rule.
    pub expression: String,
    /// Whether it holds for this record and subscriber.
    pub holds: bool,
    pub decided_by: Decider,
    /// Its top-level AND-ed parts, each decided on its own (empty when there is no expression,
    /// or when it was not evaluated: the admin, a refusal).
    pub parts: Vec<PartVerdict>,
}

/// Where the index filed the subscription.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum Placement {
    /// Nowhere: its condition is false for this subscriber whatever the record.
    Never,
    /// In the scan set, visited by every event.
    Scan,
    /// Under `field`, in the bucket of each of `keys`: visited only by records holding one.
    Bucket,
}

/// Who decided whether the record is delivered.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum IndexDecider {
    /// The plan made when subscribing: the condition was already decided (never, or always,
    /// for this subscriber), so no record is looked at.
    Subscription,
    /// A bucket lookup alone: the record was not under the subscription's keys, or was and
    /// the keys were the whole condition.
    Index,
    /// The compiled rhai script, run on the record.
    Rhai,
}

/// How the subscription index decided the record.
#[derive(Object, Debug, PartialEq)]
pub struct IndexVerdict {
    pub placement: Placement,
    /// With `bucket`: the field the subscription is filed under.
    #[oai(skip_serializing_if_is_none)]
    pub field: Option<String>,
    /// With `bucket`: the values it is filed under, as literals.
    pub keys: Vec<String>,
    /// Whether the record was visited for this subscription.
    pub candidate: bool,
    pub decided_by: IndexDecider,
    /// The script's answer, when it ran.
    #[oai(skip_serializing_if_is_none)]
    pub script: Option<bool>,
}

/// Why the subscribe would be refused.
#[derive(Object, Debug, PartialEq)]
pub struct Refusal {
    /// What the subscribe would answer: 401 or 403.
    pub status: u16,
    pub message: String,
}

/// The playground's answer.
#[derive(Object, Debug, PartialEq)]
#[oai(example)]
pub struct EvaluateVerdict {
    /// Whether a subscription with this filter, made by this subscriber, gets this record's
    /// events.
    pub matches: bool,
    /// Why the subscribe itself would be refused; absent when it would be accepted.
    #[oai(skip_serializing_if_is_none)]
    pub refused: Option<Refusal>,
    pub rule: SideVerdict,
    pub filter: SideVerdict,
    /// How the index decided; absent when the subscribe would be refused.
    #[oai(skip_serializing_if_is_none)]
    pub index: Option<IndexVerdict>,
}

impl Example for EvaluateVerdict {
    fn example() -> Self {
        let request = EvaluateRequest::example();
        let rule = Rule::parse(request.rule.as_deref().unwrap_or_default()).expect("parses");
        let filter = Filter::parse(&request.filter).expect("parses");
        let user = User::from_claims(request.auth.unwrap_or_default().into_iter().collect(), None)
            .expect("has an id");
        let identity = Identity::User(Arc::new(user));
        let refused = refusal(&rule, &identity);
        verdict(
            &rule,
            Some(&filter),
            &request.filter,
            &request.record.0,
            &identity,
            refused,
        )
        .expect("compiles")
    }
}

#[derive(ApiResponse)]
pub enum EvaluateResponse {
    /// Whether the record would be delivered, and how each part decided.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<EvaluateVerdict>),
}

operation_errors! {
    Evaluate {
        400 => "The body is not JSON, or not `application/json`.",
        401 => "No admin token was sent, or the token is invalid.",
        403 => "The token is a user's, not the admin's.",
        413 => "The body is over its size limit, or the record over a record's (as a write would refuse it).",
        415 => "The body's charset is not UTF-8.",
        422 => "The filter or the rule does not parse (`errors.filter`, `errors.rule`, with the parser's message), `auth` has no `id` or `sub`, `auth` is given with `admin`, a field is of the wrong type, or a key is unknown.",
    }
}

pub struct PlaygroundApi;

#[OpenApi(tag = "ApiTags::Expressions")]
impl PlaygroundApi {
    /// Evaluate a filter and a rule for a record and a subscriber
    ///
    /// The console's filter playground. Answers whether a subscription with `filter`, to a
    /// collection whose list rule is `rule`, made by the subscriber `auth` (or a guest, or the
    /// admin), gets the events of `record`, and how: each side and each of its AND-ed parts,
    /// decided when subscribing or by the record, and how the subscription index filed the
    /// subscription and decided the record (a bucket lookup, or the compiled rhai script). The
    /// server's own parser, admission, compiler and index decide; nothing is stored.
    ///
    /// The index's account is of this subscription alone: among a collection's many, one with
    /// several equalities is filed under the one with the fewest subscriptions already there,
    /// which may be another field (whether it matches is the same). Hooks are not run: a
    /// `realtime_broadcast` hook may still change or suppress a delivery.
    #[oai(
        path = "/api/expressions/evaluate",
        method = "post",
        operation_id = "evaluateExpression"
    )]
    async fn evaluate(
        &self,
        app: Data<&App>,
        admin: AdminToken,
        body: JsonBody<EvaluateRequest>,
    ) -> Result<EvaluateResponse, Errors<Evaluate>> {
        app.require_admin(&admin)?;
        let request = body.0;
        // A record no write could store is no event: refused as a write refuses it.
        check_size(&request.record.0).map_err(ApiError::from)?;
        let rule = Rule::parse(request.rule.as_deref().unwrap_or("SUPERUSER_ONLY"))
            .map_err(|error| ApiError::invalid("rule", error.to_string()))?;
        let identity = match (request.auth, request.admin) {
            (Some(_), true) => {
                return Err(ApiError::invalid(
                    "auth",
                    "the admin has no claims: give `auth` or `admin`, not both",
                )
                .into());
            }
            (None, true) => Identity::Superuser,
            (None, false) => Identity::Guest,
            (Some(claims), false) => {
                let user = User::from_claims(claims.into_iter().collect(), None)
                    .map_err(|error| ApiError::invalid("auth", error.to_string()))?;
                Identity::User(Arc::new(user))
            }
        };
        let refused = refusal(&rule, &identity);
        let filter = match Filter::parse(&request.filter) {
            Ok(filter) => Some(filter),
            // A refused subscribe is answered before its filter is read.
            Err(_) if refused.is_some() => None,
            Err(error) => return Err(ApiError::invalid("filter", error.to_string()).into()),
        };
        let text = request.filter;
        let record = request.record.0;
        // Evaluating runs scripts (a `LIKE` over a large record takes a while): off the
        // runtime's threads.
        let verdict = tokio::task::spawn_blocking(move || {
            verdict(&rule, filter.as_ref(), &text, &record, &identity, refused)
        })
        .await
        .unwrap_or_else(|panicked| std::panic::resume_unwind(panicked.into_panic()))
        .map_err(|error| ApiError::invalid("filter", error.to_string()))?;
        Ok(EvaluateResponse::Ok(Json(verdict)))
    }
}

/// Why a subscribe by `identity` would be refused under the list rule `rule`, if it would.
fn refusal(rule: &Rule, identity: &Identity) -> Option<Refusal> {
    admit(rule, identity).err().map(|error| Refusal {
        message: error.to_string(),
        status: ApiError::from(error).status(),
    })
}

/// Evaluates as a subscription would be: admitted by the rule (`refused` says if not), planned
/// in an index, matched. `filter` is `None` only for a refused subscribe whose filter `text`
/// does not parse.
fn verdict(
    rule: &Rule,
    filter: Option<&Filter>,
    text: &str,
    record: &serde_json::Map<String, Value>,
    identity: &Identity,
    refused: Option<Refusal>,
) -> Result<EvaluateVerdict, crate::filter::CompileError> {
    let auth = identity.auth();
    let parsed = Record::from_object(record);
    let rule_side = match (rule, identity) {
        (_, Identity::Superuser) => SideVerdict {
            expression: rule.to_string(),
            holds: true,
            decided_by: Decider::Admin,
            parts: Vec::new(),
        },
        _ if refused.is_some() => SideVerdict {
            expression: rule.to_string(),
            holds: false,
            decided_by: Decider::Refused,
            parts: Vec::new(),
        },
        (Rule::Expr(expr), _) => side(expr, &parsed, &auth),
        (Rule::Public | Rule::SuperuserOnly, _) => SideVerdict {
            expression: rule.to_string(),
            holds: true,
            decided_by: Decider::Empty,
            parts: Vec::new(),
        },
    };
    let filter_side = match filter.map(Filter::expr) {
        Some(Some(expr)) => side(expr, &parsed, &auth),
        Some(None) => SideVerdict {
            expression: String::new(),
            holds: true,
            decided_by: Decider::Empty,
            parts: Vec::new(),
        },
        None => SideVerdict {
            expression: text.to_owned(),
            holds: false,
            decided_by: Decider::Refused,
            parts: Vec::new(),
        },
    };
    // Refused (and so `refused` is set whenever there is no filter): no subscription to file.
    let Some(filter) = filter.filter(|_| refused.is_none()) else {
        return Ok(EvaluateVerdict {
            matches: false,
            refused,
            rule: rule_side,
            filter: filter_side,
            index: None,
        });
    };
    // A one-subscription index, planned and matched as the collection's own would be.
    let engine = FilterEngine::new();
    let compiled = engine.compile(condition(rule, filter, identity.is_superuser()))?;
    let mut index = SubscriptionIndex::new();
    let key = index.insert(Arc::new(compiled), auth, ());
    let mut eval = engine.evaluation(parsed);
    let mut matches = false;
    index.for_each_match(&mut eval, |()| matches = true);
    let decision = index
        .explain(key, &mut eval)
        .expect("the key was just inserted");
    debug_assert_eq!(decision.matched, matches, "the explanation is the index's");
    Ok(EvaluateVerdict {
        matches,
        refused: None,
        rule: rule_side,
        filter: filter_side,
        index: Some(index_verdict(decision)),
    })
}

/// One side, decided part by part by the interpreter the compiled scripts are held to.
fn side(expr: &Expr, record: &Record, auth: &Auth) -> SideVerdict {
    let decided = |part: &Expr| match fold(part, auth) {
        Truth::True | Truth::False => Decider::Subscription,
        Truth::Unknown => Decider::Record,
    };
    SideVerdict {
        expression: expr.to_string(),
        holds: evaluate(expr, record, auth),
        decided_by: decided(expr),
        parts: expr
            .conjuncts()
            .into_iter()
            .map(|part| PartVerdict {
                expression: part.to_string(),
                holds: evaluate(part, record, auth),
                decided_by: decided(part),
            })
            .collect(),
    }
}

fn index_verdict(decision: Decision) -> IndexVerdict {
    let Decision {
        plan,
        candidate,
        script,
        matched: _,
    } = decision;
    let decided_by = match (&plan, candidate, script) {
        (_, _, Some(_)) => IndexDecider::Rhai,
        (Plan::Never | Plan::Scan { .. }, _, None) => IndexDecider::Subscription,
        (Plan::Indexed { .. }, _, None) => IndexDecider::Index,
    };
    let (placement, field, keys) = match plan {
        Plan::Never => (Placement::Never, None, Vec::new()),
        Plan::Scan { .. } => (Placement::Scan, None, Vec::new()),
        Plan::Indexed { field, keys, .. } => (Placement::Bucket, Some(field.to_string()), keys),
    };
    IndexVerdict {
        placement,
        field,
        keys,
        candidate,
        decided_by,
        script,
    }
}
