//! The subscription index: which subscriptions can a record possibly match?
//!
//! Each subscription is planned once, when it is inserted, from its condition and its
//! subscriber's auth ([`fold`](super::fold)): comparisons that read no record field are decided
//! then, and the top-level AND-ed equalities (`field = const`, `field = @request.auth.x`,
//! `field IN (...)`) become candidates for the index. The cheapest candidate (fewest
//! subscriptions already under its keys) places the subscription in a hash bucket keyed by field
//! and value; a subscription with no candidate goes in the scan set, one whose condition is
//! false for its subscriber goes nowhere.
//!
//! An event looks up, for each indexed field, the buckets of the record's own value, then
//! visits the scan set. A candidate whose whole condition was captured by its bucket is matched
//! without running any script; the others run their compiled filter. The result is exactly the
//! set [`SubscriptionIndex::for_each_match_by_scan`] finds by evaluating every subscription.
//!
//! Insert and remove are O(keys of the subscription): buckets are vectors with swap-remove, and
//! each subscription remembers its position in each of its buckets.

use std::collections::HashMap;
use std::sync::Arc;

use rhai::{Dynamic, ImmutableString};
use slab::Slab;

use super::ast::{CompareOp, Expr, FieldPath, Literal, Operand};
use super::compile::{CompiledFilter, Evaluation};
use super::context::Auth;
use super::fold::{Truth, fold, resolve};
use super::number::Number;
use super::value;

/// Identifies a subscription in its index. Valid until the subscription is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionKey(usize);

/// A value in the index, typed so that a bucket hit means exactly `record value = constant`
/// under [`value::equals`]: a number constant `18` sits under `Number(18)`, which records holding
/// `18`, `18.0` or `"18.0"` look up; a string constant `"18"` sits under `String("18")` (records
/// holding exactly `"18"`) and `NumericString(18)` (records holding the number 18).
/// [`Number`]'s equality and hash are its exact value (`18` and `18.0` alike, `2^53 + 1` apart
/// from `2^53`), which is [`value::equals`] on numbers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum IndexKey {
    Null,
    Bool(bool),
    /// A number constant.
    Number(Number),
    /// A string constant that is also a number, by that number.
    NumericString(Number),
    String(ImmutableString),
}

/// The keys a constant is filed under; `None` when it cannot be (arrays and maps).
fn constant_keys(constant: &Dynamic, keys: &mut Vec<IndexKey>) -> Option<()> {
    if constant.is_unit() {
        keys.push(IndexKey::Null);
    } else if let Ok(b) = constant.as_bool() {
        keys.push(IndexKey::Bool(b));
    } else if let Ok(text) = constant.as_immutable_string_ref() {
        if let Some(n) = value::numeric_str(&text) {
            keys.push(IndexKey::NumericString(n));
        }
        keys.push(IndexKey::String(text.clone()));
    } else {
        keys.push(IndexKey::Number(value::number(constant)?));
    }
    Some(())
}

impl IndexKey {
    /// The key as the expression language writes the constant, `None` for the numeric alias of a
    /// string constant (filed under its `String` key too).
    fn literal(&self) -> Option<String> {
        match self {
            IndexKey::Null => Some("null".into()),
            IndexKey::Bool(b) => Some(b.to_string()),
            IndexKey::Number(n) => Some(n.to_string()),
            IndexKey::NumericString(_) => None,
            IndexKey::String(text) => Some(Literal::String(text.to_string()).to_string()),
        }
    }
}

/// The keys a record value looks up: every key a constant equal to it is filed under.
fn record_keys(value: Option<&Dynamic>) -> [Option<IndexKey>; 2] {
    let Some(value) = value.filter(|value| !value.is_unit()) else {
        return [Some(IndexKey::Null), None];
    };
    if let Ok(b) = value.as_bool() {
        return [Some(IndexKey::Bool(b)), None];
    }
    if let Ok(text) = value.as_immutable_string_ref() {
        let number = value::numeric_str(&text).map(IndexKey::Number);
        return [Some(IndexKey::String(text.clone())), number];
    }
    match value::number(value) {
        Some(n) => [Some(IndexKey::Number(n)), Some(IndexKey::NumericString(n))],
        None => [None, None],
    }
}

/// If `conjunct` is an equality the index can answer for this subscriber, its field and keys.
/// The keys are empty when no record can satisfy it (`x IN (null)`).
fn indexable(conjunct: &Expr, auth: &Auth) -> Option<(FieldPath, Vec<IndexKey>)> {
    let Expr::Compare { op, left, right } = conjunct else {
        return None;
    };
    let mut keys = Vec::new();
    match (op, left, right) {
        (CompareOp::Eq, Operand::Field(path), other)
        | (CompareOp::Eq, other, Operand::Field(path))
            if other.is_record_independent() =>
        {
            constant_keys(&resolve(other, None, auth)?, &mut keys)?;
            Some((path.clone(), keys))
        }
        (CompareOp::In, Operand::Field(path), list) if list.is_record_independent() => {
            let list = resolve(list, None, auth)?;
            // A non-array on the right of IN holds nothing: the empty key set says "never".
            if let Ok(items) = list.as_array_ref() {
                for item in items.iter().filter(|item| !item.is_unit()) {
                    constant_keys(item, &mut keys)?;
                }
            }
            keys.sort();
            keys.dedup();
            Some((path.clone(), keys))
        }
        _ => None,
    }
}

/// Where a subscription was put.
enum Placement {
    /// Its condition is false for its subscriber whatever the record: it never matches.
    Nowhere,
    /// In the scan set, at this position.
    Scan { at: usize },
    /// Under `field`, in the bucket of each key, at the paired position.
    Indexed {
        field: FieldPath,
        keys: Vec<(IndexKey, usize)>,
    },
}

/// How a subscription was filed, as [`SubscriptionIndex::explain`] tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Its condition is false for its subscriber whatever the record: filed nowhere, never
    /// matched.
    Never,
    /// Visited by every event. Without `script` it matches every record without running one
    /// (no condition, or one decided true by the subscriber's auth).
    Scan { script: bool },
    /// Under `field`, in the bucket of each of `keys` (written as literals), visited only by
    /// events whose record holds one of them there. Without `script` a visit is a match.
    Indexed {
        field: FieldPath,
        keys: Vec<String>,
        script: bool,
    },
}

/// How the index decided one record for one subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub plan: Plan,
    /// Whether the record was visited: in the scan set, or its value under one of the keys.
    pub candidate: bool,
    /// The compiled script's answer, when it ran.
    pub script: Option<bool>,
    pub matched: bool,
}

struct Entry<T> {
    value: T,
    filter: Arc<CompiledFilter>,
    auth: Auth,
    placement: Placement,
    /// False when the placement alone decides the match (no script to run).
    evaluate: bool,
    /// The last event epoch that visited this entry: a subscription under several keys of one
    /// field is reported once.
    visited: u64,
}

/// Subscriptions of one collection, indexed by the equalities of their conditions.
pub struct SubscriptionIndex<T> {
    entries: Slab<Entry<T>>,
    /// Field -> value -> subscriptions (slab keys).
    fields: HashMap<FieldPath, HashMap<IndexKey, Vec<usize>>>,
    scan: Vec<usize>,
    epoch: u64,
}

impl<T> Default for SubscriptionIndex<T> {
    fn default() -> Self {
        Self {
            entries: Slab::new(),
            fields: HashMap::new(),
            scan: Vec::new(),
            epoch: 0,
        }
    }
}

impl<T> SubscriptionIndex<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many subscriptions every event must visit (those with nothing indexable).
    pub fn scan_len(&self) -> usize {
        self.scan.len()
    }

    /// Adds a subscription matched by `filter` for the subscriber `auth`.
    pub fn insert(&mut self, filter: Arc<CompiledFilter>, auth: Auth, value: T) -> SubscriptionKey {
        let slot = self.entries.vacant_key();
        let (placement, evaluate) = self.place(slot, filter.expr(), &auth);
        self.entries.insert(Entry {
            value,
            filter,
            auth,
            placement,
            evaluate,
            visited: 0,
        });
        SubscriptionKey(slot)
    }

    fn place(&mut self, slot: usize, expr: Option<&Expr>, auth: &Auth) -> (Placement, bool) {
        let Some(expr) = expr else {
            self.scan.push(slot);
            return (
                Placement::Scan {
                    at: self.scan.len() - 1,
                },
                false,
            );
        };
        let mut undecided = 0;
        let mut best: Option<(usize, FieldPath, Vec<IndexKey>)> = None;
        for conjunct in expr.conjuncts() {
            match fold(conjunct, auth) {
                Truth::False => return (Placement::Nowhere, false),
                Truth::True => continue,
                Truth::Unknown => undecided += 1,
            }
            let Some((field, keys)) = indexable(conjunct, auth) else {
                continue;
            };
            if keys.is_empty() {
                return (Placement::Nowhere, false);
            }
            let cost = self.cost(&field, &keys);
            if best
                .as_ref()
                .is_none_or(|(best_cost, ..)| cost < *best_cost)
            {
                best = Some((cost, field, keys));
            }
        }
        let Some((_, field, keys)) = best else {
            self.scan.push(slot);
            return (
                Placement::Scan {
                    at: self.scan.len() - 1,
                },
                undecided > 0,
            );
        };
        let buckets = self.fields.entry(field.clone()).or_default();
        let keys = keys
            .into_iter()
            .map(|key| {
                let bucket = buckets.entry(key.clone()).or_default();
                bucket.push(slot);
                (key, bucket.len() - 1)
            })
            .collect();
        (Placement::Indexed { field, keys }, undecided > 1)
    }

    /// Subscriptions already filed under these keys: the candidates each would cost an event.
    fn cost(&self, field: &FieldPath, keys: &[IndexKey]) -> usize {
        self.fields.get(field).map_or(0, |buckets| {
            keys.iter()
                .map(|key| buckets.get(key).map_or(0, Vec::len))
                .sum()
        })
    }

    /// Removes a subscription, returning its value; `None` if the key is not (or no longer) here.
    pub fn remove(&mut self, key: SubscriptionKey) -> Option<T> {
        let entry = self.entries.try_remove(key.0)?;
        match entry.placement {
            Placement::Nowhere => {}
            Placement::Scan { at } => {
                self.scan.swap_remove(at);
                if let Some(&moved) = self.scan.get(at)
                    && let Placement::Scan { at: position } = &mut self.entries[moved].placement
                {
                    *position = at;
                }
            }
            Placement::Indexed { field, keys } => {
                let Some(buckets) = self.fields.get_mut(&field) else {
                    return Some(entry.value);
                };
                for (key, at) in keys {
                    let Some(bucket) = buckets.get_mut(&key) else {
                        continue;
                    };
                    bucket.swap_remove(at);
                    if let Some(&moved) = bucket.get(at)
                        && let Placement::Indexed { keys, .. } = &mut self.entries[moved].placement
                        && let Some((_, position)) = keys.iter_mut().find(|(k, _)| *k == key)
                    {
                        *position = at;
                    }
                    if bucket.is_empty() {
                        buckets.remove(&key);
                    }
                }
                if buckets.is_empty() {
                    self.fields.remove(&field);
                }
            }
        }
        Some(entry.value)
    }

    /// Calls `f` once for every subscription the record being evaluated matches.
    ///
    /// The hot path: per event, one lookup per indexed field and value; per candidate, no
    /// allocation, and a script run only when the index did not decide the match.
    pub fn for_each_match(&mut self, eval: &mut Evaluation<'_>, mut f: impl FnMut(&T)) {
        self.epoch += 1;
        let epoch = self.epoch;
        for (field, buckets) in &self.fields {
            for key in eval.with_field(field, record_keys).iter().flatten() {
                for &slot in buckets.get(key).into_iter().flatten() {
                    visit(&mut self.entries[slot], epoch, eval, &mut f);
                }
            }
        }
        for &slot in &self.scan {
            visit(&mut self.entries[slot], epoch, eval, &mut f);
        }
    }

    /// How the index decides the record being evaluated for one subscription, by the steps
    /// [`Self::for_each_match`] takes for it; `None` if the key is not here. For the console's
    /// playground: the hot path does not call it.
    pub fn explain(&self, key: SubscriptionKey, eval: &mut Evaluation<'_>) -> Option<Decision> {
        let entry = self.entries.get(key.0)?;
        let (plan, candidate) = match &entry.placement {
            Placement::Nowhere => (Plan::Never, false),
            Placement::Scan { .. } => (
                Plan::Scan {
                    script: entry.evaluate,
                },
                true,
            ),
            Placement::Indexed { field, keys } => {
                let looked_up = eval.with_field(field, record_keys);
                let candidate = keys
                    .iter()
                    .any(|(key, _)| looked_up.iter().flatten().any(|found| found == key));
                let plan = Plan::Indexed {
                    field: field.clone(),
                    keys: keys.iter().filter_map(|(key, _)| key.literal()).collect(),
                    script: entry.evaluate,
                };
                (plan, candidate)
            }
        };
        let script =
            (candidate && entry.evaluate).then(|| eval.matches(&entry.filter, &entry.auth));
        Some(Decision {
            plan,
            candidate,
            script,
            matched: candidate && script.unwrap_or(true),
        })
    }

    /// The reference `for_each_match` must agree with: evaluates every subscription's compiled
    /// filter, in no particular order. Benchmarks use it as the baseline.
    pub fn for_each_match_by_scan(&self, eval: &mut Evaluation<'_>, mut f: impl FnMut(&T)) {
        for (_, entry) in &self.entries {
            if eval.matches(&entry.filter, &entry.auth) {
                f(&entry.value);
            }
        }
    }
}

fn visit<T>(entry: &mut Entry<T>, epoch: u64, eval: &mut Evaluation<'_>, f: &mut impl FnMut(&T)) {
    if entry.visited == epoch {
        return;
    }
    entry.visited = epoch;
    if !entry.evaluate || eval.matches(&entry.filter, &entry.auth) {
        f(&entry.value);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::filter::{Filter, FilterEngine, Record};

    struct Fixture {
        engine: FilterEngine,
        index: SubscriptionIndex<&'static str>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                engine: FilterEngine::new(),
                index: SubscriptionIndex::new(),
            }
        }

        fn subscribe(
            &mut self,
            name: &'static str,
            filter: &str,
            claims: Value,
        ) -> SubscriptionKey {
            let expr = Filter::parse(filter).unwrap().expr().cloned();
            let compiled = Arc::new(self.engine.compile(expr).unwrap());
            let auth = match claims {
                Value::Object(map) => Auth::from_claims(&map),
                _ => Auth::guest(),
            };
            self.index.insert(compiled, auth, name)
        }

        /// The names matched through the index, checked against the full scan.
        fn matched(&mut self, record: Value) -> Vec<&'static str> {
            let record = Record::from_json(&record).unwrap();
            let mut by_index = Vec::new();
            let mut eval = self.engine.evaluation(record);
            self.index
                .for_each_match(&mut eval, |name| by_index.push(*name));
            let mut by_scan = Vec::new();
            self.index
                .for_each_match_by_scan(&mut eval, |name| by_scan.push(*name));
            let slots: Vec<usize> = self.index.entries.iter().map(|(slot, _)| slot).collect();
            let mut by_explain = Vec::new();
            for slot in slots {
                let decision = self
                    .index
                    .explain(SubscriptionKey(slot), &mut eval)
                    .unwrap();
                if decision.matched {
                    by_explain.push(self.index.entries[slot].value);
                }
            }
            by_index.sort();
            by_scan.sort();
            by_explain.sort();
            assert_eq!(by_index, by_scan, "index and scan disagree");
            assert_eq!(by_index, by_explain, "index and its explanation disagree");
            by_index
        }

        fn placement(&self, key: SubscriptionKey) -> (&'static str, bool) {
            let entry = &self.index.entries[key.0];
            let place = match &entry.placement {
                Placement::Nowhere => "nowhere",
                Placement::Scan { .. } => "scan",
                Placement::Indexed { .. } => "indexed",
            };
            (place, entry.evaluate)
        }
    }

    #[test]
    fn plans_each_subscription_for_its_subscriber() {
        let mut f = Fixture::new();
        let alice = json!({"id": "alice", "role": "member"});
        let owner = f.subscribe("owner", "author = @request.auth.id", alice.clone());
        let owner_active = f.subscribe(
            "owner+active",
            "author = @request.auth.id AND status = 'active'",
            alice.clone(),
        );
        let ranged = f.subscribe("ranged", "age > 18", alice.clone());
        let everything = f.subscribe("everything", "", alice.clone());
        let for_admins = f.subscribe(
            "admins",
            "@request.auth.role = 'admin' AND status = 'x'",
            alice.clone(),
        );
        let admin_or_owner = f.subscribe(
            "admin-or-owner",
            "@request.auth.role = 'admin' OR author = @request.auth.id",
            alice.clone(),
        );
        let never = f.subscribe("never", "status IN (null)", alice.clone());
        let tautology = f.subscribe("tautology", "@request.auth.role = 'member'", alice);

        assert_eq!(
            f.placement(owner),
            ("indexed", false),
            "captured by the index"
        );
        assert_eq!(
            f.placement(owner_active),
            ("indexed", true),
            "a residual condition"
        );
        assert_eq!(f.placement(ranged), ("scan", true));
        assert_eq!(f.placement(everything), ("scan", false));
        assert_eq!(
            f.placement(for_admins),
            ("nowhere", false),
            "false for alice"
        );
        assert_eq!(
            f.placement(admin_or_owner),
            ("scan", true),
            "an OR is not indexable"
        );
        assert_eq!(f.placement(never), ("nowhere", false));
        assert_eq!(f.placement(tautology), ("scan", false), "true for alice");

        let mut matched = f.matched(json!({"author": "alice", "status": "active", "age": 20}));
        matched.sort();
        assert_eq!(
            matched,
            [
                "admin-or-owner",
                "everything",
                "owner",
                "owner+active",
                "ranged",
                "tautology"
            ]
        );
        assert_eq!(
            f.matched(json!({"author": "bob", "status": "x"})),
            ["everything", "tautology"]
        );
    }

    #[test]
    fn keys_follow_equality_across_numbers_and_numeric_strings() {
        let mut f = Fixture::new();
        f.subscribe("number 18", "n = 18", json!(null));
        f.subscribe("string 18", "n = '18'", json!(null));
        f.subscribe("null", "n = null", json!(null));
        f.subscribe("true", "n = true", json!(null));
        f.subscribe("zero", "n = 0", json!(null));
        assert_eq!(f.matched(json!({"n": 18})), ["number 18", "string 18"]);
        assert_eq!(f.matched(json!({"n": 18.0})), ["number 18", "string 18"]);
        assert_eq!(f.matched(json!({"n": "18"})), ["number 18", "string 18"]);
        assert_eq!(f.matched(json!({"n": "18.0"})), ["number 18"]);
        assert_eq!(f.matched(json!({"n": "018"})), ["number 18"]);
        assert_eq!(f.matched(json!({})), ["null"]);
        assert_eq!(f.matched(json!({"n": null})), ["null"]);
        assert_eq!(f.matched(json!({"n": true})), ["true"]);
        assert_eq!(f.matched(json!({"n": -0.0})), ["zero"]);
        assert!(f.matched(json!({"n": [18]})).is_empty());
    }

    #[test]
    fn a_subscription_under_several_keys_matches_once() {
        let mut f = Fixture::new();
        f.subscribe("in", "n IN (18, '18', 18.0, 'x', 'x')", json!(null));
        f.subscribe(
            "groups",
            "team IN @request.auth.groups",
            json!({"groups": ["a", "b"]}),
        );
        f.subscribe(
            "no groups",
            "team IN @request.auth.groups",
            json!({"id": "u"}),
        );
        assert_eq!(f.matched(json!({"n": "18"})), ["in"]);
        assert_eq!(f.matched(json!({"n": 18})), ["in"]);
        assert_eq!(f.matched(json!({"team": "b"})), ["groups"]);
    }

    #[test]
    fn picks_the_emptier_bucket_and_removes_cleanly() {
        let mut f = Fixture::new();
        let mut keys = Vec::new();
        for user in ["u1", "u2", "u3"] {
            keys.push(f.subscribe(
                "active",
                "status = 'active' AND author = @request.auth.id",
                json!({"id": user}),
            ));
        }
        // The first goes under `status`; the next two find `author` cheaper.
        let indexed_fields: Vec<_> = keys
            .iter()
            .map(|key| match &f.index.entries[key.0].placement {
                Placement::Indexed { field, .. } => field.to_string(),
                _ => unreachable!("all are indexable"),
            })
            .collect();
        assert_eq!(indexed_fields, ["status", "author", "author"]);
        assert_eq!(
            f.matched(json!({"status": "active", "author": "u2"})),
            ["active"]
        );

        let scanned = f.subscribe("scanned", "age > 1", json!(null));
        let scanned_too = f.subscribe("scanned too", "age > 2", json!(null));
        assert_eq!(f.index.remove(scanned), Some("scanned"));
        assert_eq!(f.index.remove(scanned), None, "removed once");
        assert_eq!(f.matched(json!({"age": 5})), ["scanned too"]);
        for key in keys {
            f.index.remove(key);
        }
        f.index.remove(scanned_too);
        assert!(f.index.is_empty());
        assert!(
            f.index.fields.is_empty() && f.index.scan.is_empty(),
            "no empty buckets left"
        );
    }

    #[test]
    fn removal_keeps_positions_of_moved_subscriptions() {
        let mut f = Fixture::new();
        let keys: Vec<_> = (0..50)
            .map(|i| {
                f.subscribe(
                    "s",
                    if i % 2 == 0 {
                        "tag IN ('a', 'b')"
                    } else {
                        "tag = 'a'"
                    },
                    json!(null),
                )
            })
            .collect();
        for (i, key) in keys.iter().enumerate() {
            if i % 3 == 0 {
                f.index.remove(*key);
            }
        }
        let remaining = keys.len() - keys.len().div_ceil(3);
        assert_eq!(f.matched(json!({"tag": "a"})).len(), remaining);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(f.index.remove(*key).is_some(), i % 3 != 0);
        }
        assert!(f.index.fields.is_empty());
    }
}
