//! The collection actor's records: the records API under the collection's rules, and the
//! change event of every write (and `left`, for live subscriptions an update took the record
//! away from). A write is decided, committed, then applied; applying is the one way a record
//! change reaches memory and subscribers. Before-hooks (`record_creating`, `record_updating`,
//! `record_deleting`) run as a write is decided, after its rule, bounded by their operation
//! budget; with a `realtime_broadcast` hook, each match's claims go with its delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::{CollectionState, Target};
use crate::auth::Identity;
use crate::engine::events::{Action, Delivery, EventData, Hooked, LiveDestination};
use crate::engine::records::{
    self as record, Page, RecordMap, assemble, check_size, parse_sort, record_id, timestamp,
    user_fields,
};
use crate::engine::{EngineError, ListQuery, RecordPage, RecordWrite, Rules};
use crate::filter::{CompiledFilter, Filter, FilterEngine, Record, Rule, condition};
use crate::hooks::{Hook, Refusal};
use crate::pusher::protocol::SocketId;
use crate::store::{Change, Epoch, Expect, RecordDoc};

/// A rule, ready to check one record.
enum Check {
    Anyone,
    SuperuserOnly,
    Expr(Arc<CompiledFilter>),
}

/// The view, create, update and delete rules, compiled when the rules are set.
pub(super) struct RuleChecks {
    view: Check,
    create: Check,
    update: Check,
    delete: Check,
}

impl RuleChecks {
    pub(super) fn compile(filters: &FilterEngine, rules: &Rules) -> Self {
        let check = |rule: &Rule| match rule {
            Rule::Public => Check::Anyone,
            Rule::SuperuserOnly => Check::SuperuserOnly,
            Rule::Expr(expr) => match filters.compile(Some(expr.clone())) {
                Ok(compiled) => Check::Expr(Arc::new(compiled)),
                // Parsed rules compile; should one not, nobody but the admin passes it.
                Err(error) => {
                    tracing::warn!(%error, "a rule failed to compile; treating it as SUPERUSER_ONLY");
                    Check::SuperuserOnly
                }
            },
        };
        Self {
            view: check(&rules.view),
            create: check(&rules.create),
            update: check(&rules.update),
            delete: check(&rules.delete),
        }
    }
}

/// A record change, decided and ready to commit and apply.
pub(super) enum RecordChange {
    /// Created or replaced: the whole record, system fields included.
    Put(RecordMap),
    Delete(String),
}

/// A record write decided where nodes share the store, to commit: the record (as written,
/// or as it was for a delete), and what the commit must find.
pub struct Decided {
    pub record: RecordMap,
    pub deleted: bool,
    pub expect: Expect,
}

/// A record's id (every assembled record has one).
pub(super) fn record_key(record: &RecordMap) -> &str {
    record.get("id").and_then(Value::as_str).unwrap_or_default()
}

/// The records of a collection as stored.
pub(super) fn load(collection_id: &str, docs: Vec<RecordDoc>) -> HashMap<String, RecordMap> {
    let mut records = HashMap::new();
    for doc in docs {
        match serde_json::from_str::<RecordMap>(&doc.json) {
            Ok(record) => {
                if let Some(id) = record.get("id").and_then(Value::as_str) {
                    records.insert(id.to_owned(), record);
                }
            }
            Err(error) => {
                tracing::warn!(collection = collection_id, %error, "skipping an unreadable stored record")
            }
        }
    }
    records
}

impl CollectionState {
    fn allows(&self, check: &Check, identity: &Identity, record: &RecordMap) -> bool {
        match (identity, check) {
            (Identity::Superuser, _) | (_, Check::Anyone) => true,
            (_, Check::SuperuserOnly) => false,
            (_, Check::Expr(rule)) => self
                .filters
                .evaluation(Record::from_object(record))
                .matches(rule, &identity.auth()),
        }
    }

    /// Checks a list query's page and sort without listing (its filter is the caller's to
    /// check).
    pub(super) fn check_query(query: &ListQuery) -> Result<(), EngineError> {
        Page::new(query.page, query.per_page)?;
        parse_sort(&query.sort)?;
        Ok(())
    }

    /// Lists the records the list rule and the filter let through, sorted and paged.
    pub(super) fn list(
        &self,
        identity: &Identity,
        query: &ListQuery,
    ) -> Result<RecordPage, EngineError> {
        match (&self.rules.list, identity) {
            (Rule::SuperuserOnly, Identity::Guest) => return Err(EngineError::Unauthenticated),
            (Rule::SuperuserOnly, Identity::User(_)) => {
                return Err(EngineError::Forbidden(
                    "only the admin may list this collection".into(),
                ));
            }
            _ => {}
        }
        let page = Page::new(query.page, query.per_page)?;
        let keys = parse_sort(&query.sort)?;
        let filter = Filter::parse(&query.filter)
            .map_err(|error| EngineError::invalid("filter", error.to_string()))?;
        let compiled = self
            .filters
            .compile(condition(
                &self.rules.list,
                &filter,
                identity.is_superuser(),
            ))
            .map_err(|error| EngineError::invalid("filter", error.to_string()))?;
        let auth = identity.auth();
        // Each record converted only as far as the condition reads it.
        let mut matched: Vec<&RecordMap> = self
            .records
            .values()
            .filter(|candidate| {
                self.filters
                    .evaluation(compiled.record(candidate))
                    .matches(&compiled, &auth)
            })
            .collect();
        record::sort(&mut matched, &keys);
        let total = matched.len();
        Ok(RecordPage {
            records: matched[page.range(total)]
                .iter()
                .map(|found| (*found).clone())
                .collect(),
            page: page.page,
            per_page: page.per_page,
            total,
            last_page: page.last_page(total),
        })
    }

    /// One record; a record the view rule hides is "not found", as one that does not exist.
    pub(super) fn view(&self, identity: &Identity, id: &str) -> Result<RecordMap, EngineError> {
        self.records
            .get(id)
            .filter(|found| self.allows(&self.checks.view, identity, found))
            .cloned()
            .ok_or_else(|| EngineError::UnknownRecord(id.to_owned()))
    }

    fn denied(action: &str) -> EngineError {
        EngineError::Forbidden(format!(
            "the collection's {action} rule does not allow this"
        ))
    }

    /// A write: decided (the rule checked, the record assembled), committed to the store, then
    /// applied. Applying is the one way a record change reaches memory and subscribers, so
    /// that a change committed elsewhere can take the same path.
    pub(super) async fn write(
        &mut self,
        identity: &Identity,
        write: RecordWrite,
        except: Option<SocketId>,
    ) -> Result<(RecordMap, Epoch), EngineError> {
        let change = self.decide(identity, write)?;
        let collection_id = self.id.clone();
        let except_text = except.as_ref().map(ToString::to_string);
        let except_text = except_text.as_deref();
        let committed = match &change {
            RecordChange::Put(record) => {
                let json = serde_json::to_string(record).expect("a JSON map always serializes");
                let doc = RecordDoc { json };
                let put = Change::PutRecord {
                    collection_id: &collection_id,
                    record_id: record_key(record),
                    doc: &doc,
                };
                self.commit(put, except_text).await?
            }
            RecordChange::Delete(id) => {
                let delete = Change::DeleteRecord {
                    collection_id: &collection_id,
                    record_id: id,
                };
                self.commit(delete, except_text).await?
            }
        };
        let epoch = committed.epoch;
        Ok((self.apply(change, except, Some(epoch)), epoch))
    }

    /// Where nodes share the store: a write decided on the record as this actor has it
    /// (and the rules), changing nothing; the commit is the engine's, and the change comes
    /// back through the log.
    pub(super) fn decide_alone(
        &mut self,
        identity: &Identity,
        write: RecordWrite,
    ) -> Result<Decided, EngineError> {
        let (record, deleted) = match self.decide(identity, write)? {
            RecordChange::Put(record) => (record, false),
            RecordChange::Delete(id) => (self.records.get(&id).cloned().unwrap_or_default(), true),
        };
        let seq = self.record_seqs.get(record_key(&record)).copied();
        Ok(Decided {
            record,
            deleted,
            expect: Expect::Record {
                seq,
                rules: self.rules_version,
            },
        })
    }

    /// Applies a committed record change to memory and queues its event (sent once `epoch`
    /// is durable): `created` or `updated` as the record was new here or not, `deleted` with
    /// the record as it was; and `left` to live subscriptions with `leave_events` that the
    /// record was in view of and no longer is. Returns the record.
    pub(super) fn apply(
        &mut self,
        change: RecordChange,
        except: Option<SocketId>,
        epoch: Option<Epoch>,
    ) -> RecordMap {
        match change {
            RecordChange::Put(record) => {
                let id = record_key(&record).to_owned();
                match self.records.insert(id, record.clone()) {
                    None => {
                        self.broadcast(Action::Created, &record, except, epoch);
                    }
                    Some(old) => {
                        let in_view = self.broadcast(Action::Updated, &record, except, epoch);
                        if !self.leave_index.is_empty() {
                            self.leave(&old, &in_view, epoch);
                        }
                    }
                }
                record
            }
            RecordChange::Delete(id) => {
                let deleted = self.records.remove(&id).unwrap_or_default();
                self.broadcast(Action::Deleted, &deleted, except, epoch);
                deleted
            }
        }
    }

    /// What a write would change, if the rules allow it; nothing is changed yet.
    fn decide(
        &mut self,
        identity: &Identity,
        write: RecordWrite,
    ) -> Result<RecordChange, EngineError> {
        if self.closed {
            return Err(EngineError::UnknownCollection(self.name.clone()));
        }
        let record = match write {
            RecordWrite::Create(body) => {
                let id = record_id(body.get("id"))?;
                if self.records.contains_key(&id) {
                    return Err(EngineError::Conflict(id));
                }
                let now = timestamp();
                let record = assemble(&id, &self.id, &now, &now, user_fields(body));
                check_size(&record)?;
                if !self.allows(&self.checks.create, identity, &record) {
                    return Err(Self::denied("create"));
                }
                self.before_hook(Hook::RecordCreating, record, None, identity)?
            }
            RecordWrite::Replace(id, _) | RecordWrite::Merge(id, _)
                if !self.records.contains_key(&id) =>
            {
                return Err(EngineError::UnknownRecord(id));
            }
            RecordWrite::Replace(id, body) => self.updated(identity, &id, body, false)?,
            RecordWrite::Merge(id, body) => self.updated(identity, &id, body, true)?,
            RecordWrite::Delete(id) => {
                let existing = self
                    .records
                    .get(&id)
                    .ok_or_else(|| EngineError::UnknownRecord(id.clone()))?;
                if !self.allows(&self.checks.delete, identity, existing) {
                    return Err(Self::denied("delete"));
                }
                if self.hooks.defines(Hook::RecordDeleting) {
                    self.before_hook(
                        Hook::RecordDeleting,
                        existing.clone(),
                        Some(existing),
                        identity,
                    )?;
                }
                return Ok(RecordChange::Delete(id));
            }
        };
        Ok(RecordChange::Put(record))
    }

    /// The record after an update (PUT replaces the fields, PATCH merges them), if the update
    /// rule allows it on the record as it is.
    fn updated(
        &self,
        identity: &Identity,
        id: &str,
        body: RecordMap,
        merge: bool,
    ) -> Result<RecordMap, EngineError> {
        let existing = &self.records[id];
        if !self.allows(&self.checks.update, identity, existing) {
            return Err(Self::denied("update"));
        }
        let created = existing
            .get("created")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut fields: RecordMap = if merge {
            user_fields(existing.clone()).collect()
        } else {
            RecordMap::new()
        };
        fields.extend(user_fields(body));
        let record = assemble(id, &self.id, created, &timestamp(), fields.into_iter());
        check_size(&record)?;
        self.before_hook(Hook::RecordUpdating, record, Some(existing), identity)
    }

    /// A before-hook (`record_creating`, `record_updating`, `record_deleting`), run here as
    /// the write is decided, bounded by its operation budget: the record to write, with the
    /// fields the hook returned (the system fields stay the server's), or the refusal.
    fn before_hook(
        &self,
        hook: Hook,
        record: RecordMap,
        old: Option<&RecordMap>,
        identity: &Identity,
    ) -> Result<RecordMap, EngineError> {
        if !self.hooks.defines(hook) {
            return Ok(record);
        }
        let returned = self
            .hooks
            .before_write(hook, &self.name, &record, old, &identity.auth())
            .map_err(|refusal| match refusal {
                Refusal::Forbidden(message) => EngineError::Forbidden(message),
                Refusal::Unprocessable(message) => EngineError::invalid("hook", message),
            })?;
        let Some(fields) = returned else {
            return Ok(record);
        };
        let system = |name: &str| record.get(name).and_then(Value::as_str).unwrap_or_default();
        let changed = assemble(
            system("id"),
            system("collection_id"),
            system("created"),
            system("updated"),
            user_fields(fields),
        );
        check_size(&changed)?;
        Ok(changed)
    }

    /// A change made elsewhere, matched and delivered; where nodes share the store, through
    /// its log first, so that every node delivers it in its turn among the collection's
    /// changes. Returns how many subscriptions it matched.
    pub(super) async fn publish(
        &mut self,
        action: Action,
        record: &RecordMap,
        except: Option<SocketId>,
    ) -> Result<usize, EngineError> {
        if !self.store.shared() {
            return Ok(self.broadcast(action, record, except, None).count);
        }
        let collection_id = self.id.clone();
        let json = serde_json::to_string(record).expect("a JSON map always serializes");
        let except_text = except.as_ref().map(ToString::to_string);
        let publish = Change::Publish {
            collection_id: &collection_id,
            action: action.as_str(),
            json: &json,
        };
        let committed = self.commit(publish, except_text.as_deref()).await?;
        Ok(self
            .broadcast(action, record, except, Some(committed.epoch))
            .count)
    }

    /// Matches a changed record against every subscription and queues the frames for delivery
    /// (after `epoch` is durable, when given). Returns what it matched.
    ///
    /// The record is converted for the filters once; each match costs one frame.
    pub(super) fn broadcast(
        &mut self,
        action: Action,
        record: &RecordMap,
        except: Option<SocketId>,
        epoch: Option<Epoch>,
    ) -> Matched {
        // Another node sends it; live subscriptions' events are numbered here all the same.
        let sends = self.delivers();
        if !sends && self.live_subscriptions == 0 {
            return Matched::default();
        }
        let started = Instant::now();
        let mut evaluation = self.filters.evaluation(Record::from_object(record));
        let mut destinations = Vec::new();
        let mut live = Vec::new();
        // The subscribers' claims go with the delivery only for `realtime_broadcast`.
        let claims = self.hooks.defines(Hook::RealtimeBroadcast);
        let (mut plain_claims, mut live_claims) = (Vec::new(), Vec::new());
        self.index
            .for_each_match(&mut evaluation, |subscriber| match &subscriber.target {
                Target::Plain(destination) if sends => {
                    destinations.push(destination.clone());
                    if claims {
                        plain_claims.push(subscriber.auth.clone());
                    }
                }
                Target::Plain(_) => {}
                Target::Live(destination) => {
                    live.push(destination.clone());
                    if claims {
                        live_claims.push(subscriber.auth.clone());
                    }
                }
            });
        let metrics = &self.driver.metrics;
        metrics.observe_match(started.elapsed());
        metrics.events.inc();
        let matched = Matched {
            count: destinations.len() + live.len(),
            // Only what `left` needs.
            live: if self.leave_index.is_empty() {
                Default::default()
            } else {
                live.iter()
                    .map(|destination| destination.cursor.id)
                    .collect()
            },
        };
        if matched.count > 0 {
            // The hook's copy of the record is made only for an event that goes somewhere.
            let hooked = claims.then(|| {
                Box::new(Hooked {
                    action,
                    record: record.clone(),
                    collection: self.name.clone(),
                    names: self.event_names,
                    plain: plain_claims,
                    live: live_claims,
                })
            });
            self.deliveries.push(Delivery {
                epoch,
                event: Arc::new(EventData::new(action, record, self.event_names)),
                destinations,
                live,
                except,
                quiet: !sends,
                hooked,
            });
        }
        matched
    }

    /// `left` to the live subscriptions with `leave_events` that matched the record as it was
    /// (`old`) and are not `in_view` of it now.
    fn leave(&mut self, old: &RecordMap, in_view: &Matched, epoch: Option<Epoch>) {
        let mut evaluation = self.filters.evaluation(Record::from_object(old));
        let mut left: Vec<LiveDestination> = Vec::new();
        self.leave_index
            .for_each_match(&mut evaluation, |destination| {
                if !in_view.live.contains(&destination.cursor.id) {
                    left.push(destination.clone());
                }
            });
        if !left.is_empty() {
            self.deliveries.push(Delivery {
                epoch,
                event: Arc::new(EventData::left(old, self.event_names)),
                destinations: Vec::new(),
                live: left,
                except: None,
                quiet: !self.delivers(),
                hooked: None,
            });
        }
    }
}

/// What a change matched: how many subscriptions, and which live ones.
#[derive(Default)]
pub(super) struct Matched {
    pub count: usize,
    live: std::collections::HashSet<uuid::Uuid>,
}
