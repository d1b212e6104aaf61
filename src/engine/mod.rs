//! The realtime engine: one actor per collection, each owning its records, subscriptions and
//! their index; a registry actor that creates, renames and deletes collections and keeps the
//! directory (name or id -> actor) every request reads.
//!
//! [`Engine`] is the handle the HTTP layer holds: each method is one request to an actor, and
//! a method that changes something returns once the change is durable. The actor never waits
//! on the disk: it updates memory and sled's tree, and the method then waits for the store's
//! group commit. Where nodes share the store (cluster mode), the actor waits for the store's
//! conditional commit instead, a change that conflicted with another node's is asked again
//! once the actor has applied that one, and [`replicate`] hands every node's changes, from
//! the store's log, to the actors they are for.
//!
//! Actors are unnamed (ractor's name registry is process-global), so several servers can run
//! in one process. [`channel_rules`] decides which app channels, beyond the subscriptions' own,
//! our channel authorization signs.

pub mod channel_rules;
pub mod collection;
pub mod events;
pub mod live;
pub mod names;
pub mod records;
pub mod registry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RpcReplyPort};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Identity;
use crate::filter::{FilterEngine, Rule};
use crate::hooks::{Hook, Hooks};
use crate::limits::{ClientKey, Quota};
use crate::pusher::Driver;
use crate::pusher::protocol::SocketId;
use crate::store::{Change, OwnerDoc, RecordDoc, Store, StoreError, SubscriptionDoc};
use channel_rules::ChannelRules;
use collection::CollectionMsg;
pub use names::{ChannelNames, ChannelPrivacy, CollectionName};
use registry::{CollectionHandle, Directory, RegistryActor, RegistryArgs, RegistryMsg};

/// How long a request about a subscription another node just made waits for this node's
/// actor to apply it.
const REPLICA_GRACE: Duration = Duration::from_secs(2);

/// How long a request waits for an actor before answering 503.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the engine can refuse, by kind; the HTTP layer maps each to one status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A field of the request is invalid (422 with `errors.<field>`).
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("collection `{0}` does not exist")]
    UnknownCollection(String),
    #[error("no subscription has this channel name")]
    UnknownChannel,
    #[error("record `{0}` not found")]
    UnknownRecord(String),
    /// A record with this id exists already.
    #[error("a record with id `{0}` already exists")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// Credentials are needed and none were sent.
    #[error("Unauthenticated.")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Storage(#[from] StoreError),
    #[error("the engine is not answering")]
    Unavailable,
    /// Several fields are invalid: each with its message.
    #[error("{}", fields_text(.0))]
    InvalidFields(BTreeMap<String, String>),
    /// A per-client limit: try again after this many seconds.
    #[error("{message}")]
    Limited {
        message: String,
        retry_after_secs: u64,
    },
}

/// `field: message; …`.
fn fields_text(fields: &BTreeMap<String, String>) -> String {
    fields
        .iter()
        .map(|(field, message)| format!("{field}: {message}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl EngineError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        EngineError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// The texts of a collection's five API rules: `None` is `SUPERUSER_ONLY`, `""` is public.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTexts {
    pub list: Option<String>,
    pub view: Option<String>,
    pub create: Option<String>,
    pub update: Option<String>,
    pub delete: Option<String>,
}

/// The five rules, parsed.
#[derive(Clone, Debug)]
pub struct Rules {
    pub list: Rule,
    pub view: Rule,
    pub create: Rule,
    pub update: Rule,
    pub delete: Rule,
}

impl RuleTexts {
    /// Parses stored rules, which were valid when written: one that no longer parses (a rule
    /// an older build accepted) is `SUPERUSER_ONLY` — closed, not open — until it is changed,
    /// and comes back with its error, so that the server starts and the admin can fix it.
    pub fn parse_stored(&self) -> (Rules, Vec<EngineError>) {
        let mut broken = Vec::new();
        let mut parse = |name: &str, text: &Option<String>| {
            parse_rule(name, text).unwrap_or_else(|error| {
                broken.push(error);
                Rule::SuperuserOnly
            })
        };
        let rules = Rules {
            list: parse("list", &self.list),
            view: parse("view", &self.view),
            create: parse("create", &self.create),
            update: parse("update", &self.update),
            delete: parse("delete", &self.delete),
        };
        (rules, broken)
    }

    /// Parses every rule, naming each bad one (`api_rules.<name>`), and answers the texts as
    /// they are kept: a rule that is `SUPERUSER_ONLY` (in any case) kept as `None`.
    pub fn checked(self) -> Result<(RuleTexts, Rules), EngineError> {
        let mut errors = BTreeMap::new();
        let mut one = |name: &str, text: Option<String>| match text.as_deref().map(Rule::parse) {
            None | Some(Ok(Rule::SuperuserOnly)) => (None, Rule::SuperuserOnly),
            Some(Ok(rule)) => (text, rule),
            Some(Err(error)) => {
                errors.insert(format!("api_rules.{name}"), error.to_string());
                (text, Rule::SuperuserOnly)
            }
        };
        let (list, list_rule) = one("list", self.list);
        let (view, view_rule) = one("view", self.view);
        let (create, create_rule) = one("create", self.create);
        let (update, update_rule) = one("update", self.update);
        let (delete, delete_rule) = one("delete", self.delete);
        if errors.len() == 1 {
            let (field, message) = errors.pop_first().expect("one error");
            return Err(EngineError::Invalid { field, message });
        }
        if !errors.is_empty() {
            return Err(EngineError::InvalidFields(errors));
        }
        let texts = RuleTexts {
            list,
            view,
            create,
            update,
            delete,
        };
        let rules = Rules {
            list: list_rule,
            view: view_rule,
            create: create_rule,
            update: update_rule,
            delete: delete_rule,
        };
        Ok((texts, rules))
    }
}

/// One rule's text: `None` is `SUPERUSER_ONLY`; an error names it as `api_rules.<name>`.
fn parse_rule(name: &str, text: &Option<String>) -> Result<Rule, EngineError> {
    match text {
        None => Ok(Rule::SuperuserOnly),
        Some(text) => Rule::parse(text)
            .map_err(|error| EngineError::invalid(&format!("api_rules.{name}"), error.to_string())),
    }
}

/// A change to rules: for each, `None` leaves it, `Some(None)` makes it `SUPERUSER_ONLY`.
#[derive(Clone, Debug, Default)]
pub struct RulesPatch {
    pub list: Option<Option<String>>,
    pub view: Option<Option<String>>,
    pub create: Option<Option<String>>,
    pub update: Option<Option<String>>,
    pub delete: Option<Option<String>>,
}

impl RulesPatch {
    pub fn apply(self, texts: &RuleTexts) -> RuleTexts {
        RuleTexts {
            list: self.list.unwrap_or_else(|| texts.list.clone()),
            view: self.view.unwrap_or_else(|| texts.view.clone()),
            create: self.create.unwrap_or_else(|| texts.create.clone()),
            update: self.update.unwrap_or_else(|| texts.update.clone()),
            delete: self.delete.unwrap_or_else(|| texts.delete.clone()),
        }
    }
}

/// A collection as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectionInfo {
    pub id: String,
    pub name: String,
    pub rules: RuleTexts,
    /// Non-public subscriptions' events go encrypted on `private-encrypted-` channels.
    pub encrypted: bool,
}

/// A list request: filter, sort and page.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub filter: String,
    pub sort: String,
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

/// One page of records.
#[derive(Clone, Debug)]
pub struct RecordPage {
    pub records: Vec<records::RecordMap>,
    pub page: usize,
    pub per_page: usize,
    pub total: usize,
    pub last_page: usize,
}

/// A change to a record.
#[derive(Clone, Debug)]
pub enum RecordWrite {
    Create(records::RecordMap),
    /// PUT: the fields become exactly these (system fields kept).
    Replace(String, records::RecordMap),
    /// PATCH: these fields are set, the others kept.
    Merge(String, records::RecordMap),
    Delete(String),
}

/// What a subscribe asks for besides its collection.
#[derive(Clone, Debug, Default)]
pub struct SubscribeRequest {
    pub filter_text: String,
    /// The subscriber's Pusher socket id, kept with the subscription.
    pub socket_id: Option<String>,
    /// A live subscription (DESIGN.md §13).
    pub live: Option<LiveRequest>,
}

/// What makes a subscription live: its events numbered (`seq`), held for its first socket and
/// kept for recovery; a snapshot, and `left` events, when asked for.
#[derive(Clone, Debug, Default)]
pub struct LiveRequest {
    /// The first page of what it matches now, sorted and sized so.
    pub snapshot: Option<SnapshotQuery>,
    pub leave_events: bool,
}

/// A snapshot's order (the list API's `sort`) and size (`per_page`, the list's default when
/// absent).
#[derive(Clone, Debug, Default)]
pub struct SnapshotQuery {
    pub sort: String,
    pub per_page: Option<u64>,
}

/// The outcome of a subscribe.
#[derive(Clone, Debug)]
pub struct Subscribed {
    pub id: Uuid,
    /// Public when a guest could have subscribed; else private, or encrypted in an encrypted
    /// collection.
    pub privacy: ChannelPrivacy,
    /// A live subscription: its `seq` is 0.
    pub live: bool,
    /// The snapshot, when one was asked for: taken with the subscription.
    pub snapshot: Option<Vec<records::RecordMap>>,
}

/// A collection declared in the configuration, created at start-up when it does not exist.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct CollectionSeed {
    pub name: String,
    /// An absent rule is `SUPERUSER_ONLY`, `""` is public.
    #[serde(default)]
    pub api_rules: RuleTexts,
    /// Non-public subscriptions' events go encrypted (needs `encryption_master_key`).
    #[serde(default)]
    pub encrypted: bool,
}

/// What the engine runs with (the configuration's part for it).
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// In front of every subscription's channel name.
    pub channel_prefix: String,
    /// How long a subscription lives without a socket or a ping.
    pub connection_threshold: Duration,
    /// Live subscriptions per client.
    pub max_subscriptions_per_client: usize,
    pub event_names: events::EventNames,
    /// How much of its live subscriptions' events each collection keeps for recovery.
    pub history: live::HistoryLimits,
    /// What encrypted channels' keys derive from.
    pub encryption_master_key: Option<[u8; 32]>,
    /// Collections to create when they do not exist yet.
    pub collections: Vec<CollectionSeed>,
    /// App channels our channel authorization signs.
    pub channels: Vec<channel_rules::ChannelRuleSeed>,
}

/// The handle to the running engine.
#[derive(Clone)]
pub struct Engine {
    registry: ActorRef<RegistryMsg>,
    /// Where requests find a collection's actor, without a message to the registry.
    directory: Arc<Directory>,
    /// The app channels our channel authorization signs.
    channel_rules: Arc<ChannelRules>,
    store: Store,
    channels: ChannelNames,
    filters: Arc<FilterEngine>,
    /// The operator's hooks: `realtime_connecting` and the after-hooks run here.
    hooks: Arc<Hooks>,
    /// Where nodes share the store: the number of the last change of any node this node has
    /// handed to its actors.
    applied: Option<tokio::sync::watch::Receiver<crate::store::Epoch>>,
}

impl Engine {
    /// Loads collections and subscriptions from the store, creates the collections the
    /// configuration declares that do not exist yet, and starts the actors; where nodes share
    /// the store, returns once every change made before it started is applied.
    ///
    /// A stored encrypted collection without `VELO_ENCRYPTION_MASTER_KEY` configured stops
    /// the start: its events could be neither sealed nor, without leaking them, sent in plain.
    pub async fn start(
        config: &EngineSettings,
        store: Store,
        driver: Arc<Driver>,
        hooks: Arc<Hooks>,
    ) -> Result<Engine, EngineError> {
        let loaded = store.load()?;
        if config.encryption_master_key.is_none()
            && let Some(collection) = loaded
                .iter()
                .map(|loaded| &loaded.collection)
                .find(|collection| collection.encrypted)
        {
            return Err(EngineError::invalid(
                "encryption_master_key",
                format!(
                    "collection `{}` is encrypted, and VELO_ENCRYPTION_MASTER_KEY is not set: start with the key it was encrypted with (a new key works too, clients fetch their shared_secret again)",
                    collection.name
                ),
            ));
        }
        let channels = ChannelNames::new(&config.channel_prefix);
        let filters = Arc::new(FilterEngine::new());
        let directory = Arc::new(Directory::default());
        let args = RegistryArgs {
            directory: directory.clone(),
            store: store.clone(),
            filters: filters.clone(),
            hooks: hooks.clone(),
            driver,
            channels: channels.clone(),
            threshold: config.connection_threshold,
            subscription_quota: Arc::new(Quota::new(config.max_subscriptions_per_client)),
            event_names: config.event_names,
            history: config.history,
            master_key: config.encryption_master_key,
            seeds: config.collections.clone(),
            loaded,
        };
        let (registry, _) = Actor::spawn(None, RegistryActor, args)
            .await
            .map_err(|error| {
                tracing::error!(%error, "the engine failed to start");
                EngineError::Unavailable
            })?;
        store.sync().await?;
        let applied = if let Some(replicas) = store.replicas() {
            let head = store.head().await?;
            let (applied, mut caught_up) = tokio::sync::watch::channel(replicas.after);
            tokio::spawn(replicate(
                replicas.changes,
                registry.clone(),
                directory.clone(),
                applied,
            ));
            // Every change made before this node started is applied before it serves.
            tracing::info!(head, "catching up with the cluster's changes");
            caught_up
                .wait_for(|applied| *applied >= head)
                .await
                .map_err(|_| EngineError::Unavailable)?;
            tracing::info!(head, "caught up");
            Some(caught_up)
        } else {
            None
        };
        Ok(Engine {
            registry,
            directory,
            channel_rules: Arc::new(ChannelRules::compile(&config.channels, filters.clone())?),
            store,
            channels,
            filters,
            hooks,
            applied,
        })
    }

    pub fn channels(&self) -> &ChannelNames {
        &self.channels
    }

    /// Filter evaluations that failed since start-up.
    pub fn eval_errors(&self) -> u64 {
        self.filters.eval_errors()
    }

    /// Live subscriptions of each collection, by name.
    pub async fn subscription_counts(&self) -> Result<Vec<(String, usize)>, EngineError> {
        let handles = self.directory.handles();
        let mut counts = Vec::with_capacity(handles.len());
        for handle in handles {
            let count = match self.ask(&handle, CollectionMsg::CountSubscriptions).await {
                Err(EngineError::UnknownCollection(_)) => continue,
                other => other?,
            };
            counts.push((handle.info.name, count));
        }
        Ok(counts)
    }

    /// Waits until every change made so far is on disk: each changing method's last step.
    async fn durable(&self) -> Result<(), EngineError> {
        Ok(self.store.sync().await?)
    }

    /// Every collection, by name.
    pub fn collections(&self) -> Vec<CollectionInfo> {
        self.directory
            .handles()
            .into_iter()
            .map(|handle| handle.info)
            .collect()
    }

    pub fn collection(&self, name_or_id: &str) -> Result<CollectionInfo, EngineError> {
        self.resolve(name_or_id).map(|handle| handle.info)
    }

    /// Creates a collection; `encrypted` needs the master key (else 422 on `encrypted`).
    pub async fn create_collection(
        &self,
        name: CollectionName,
        rules: RuleTexts,
        encrypted: bool,
    ) -> Result<CollectionInfo, EngineError> {
        let created = call(&self.registry, |reply| RegistryMsg::Create {
            name,
            rules,
            encrypted,
            reply,
        })
        .await??;
        self.durable().await?;
        Ok(created)
    }

    /// Renames a collection, changes its rules, or its `encrypted` option (`None` keeps it).
    pub async fn update_collection(
        &self,
        name_or_id: &str,
        name: Option<CollectionName>,
        rules: RulesPatch,
        encrypted: Option<bool>,
    ) -> Result<CollectionInfo, EngineError> {
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let updated = call(&self.registry, |reply| RegistryMsg::Update {
                name_or_id: name_or_id.to_owned(),
                name: name.clone(),
                rules: rules.clone(),
                encrypted,
                reply,
            })
            .await?;
            match updated {
                Err(EngineError::Storage(StoreError::Conflict { .. }))
                    if tokio::time::Instant::now() >= deadline =>
                {
                    return updated;
                }
                Err(EngineError::Storage(StoreError::Conflict { head })) => {
                    caught_up(&self.resolve(name_or_id)?, head, deadline).await?;
                }
                updated => {
                    let updated = updated?;
                    self.durable().await?;
                    return Ok(updated);
                }
            }
        }
    }

    pub async fn delete_collection(&self, name_or_id: &str) -> Result<(), EngineError> {
        let name_or_id = name_or_id.to_owned();
        call(&self.registry, |reply| RegistryMsg::Delete {
            name_or_id,
            reply,
        })
        .await??;
        self.durable().await
    }

    /// As `resolve`, for a collection named in a request body: unknown is a 422 on `collection`.
    fn resolve_named_in_body(&self, collection: &str) -> Result<CollectionHandle, EngineError> {
        self.resolve(collection).map_err(|error| match error {
            EngineError::UnknownCollection(name) => {
                EngineError::invalid("collection", format!("collection `{name}` does not exist"))
            }
            other => other,
        })
    }

    fn resolve(&self, name_or_id: &str) -> Result<CollectionHandle, EngineError> {
        self.directory
            .find(name_or_id)
            .ok_or_else(|| EngineError::UnknownCollection(name_or_id.to_owned()))
    }

    /// One exchange with a collection's actor. A collection deleted after it was found has a
    /// closed actor: that is an unknown collection, not an unavailable engine.
    async fn ask<T: Send + 'static>(
        &self,
        handle: &CollectionHandle,
        message: impl FnOnce(RpcReplyPort<T>) -> CollectionMsg,
    ) -> Result<T, EngineError> {
        call(&handle.actor, message)
            .await
            .map_err(|error| match error {
                EngineError::Unavailable if self.directory.find(&handle.info.id).is_none() => {
                    EngineError::UnknownCollection(handle.info.name.clone())
                }
                other => other,
            })
    }

    /// As [`Engine::ask`], for a change: one that conflicted (another node changed the
    /// collection first) is asked again once the actor has applied what it conflicted with.
    async fn ask_to_change<T: Send + 'static>(
        &self,
        handle: &CollectionHandle,
        message: impl Fn(RpcReplyPort<Result<T, EngineError>>) -> CollectionMsg,
    ) -> Result<T, EngineError> {
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            match self.ask(handle, &message).await? {
                Err(EngineError::Storage(StoreError::Conflict { head })) => {
                    caught_up(handle, head, deadline).await?;
                }
                outcome => return outcome,
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Storage(StoreError::Conflict { head: 0 }));
            }
        }
    }

    /// Subscribes `identity` to a collection (by name or id) with a filter expression; the
    /// subscription counts against `client`'s quota.
    pub async fn subscribe(
        &self,
        identity: Identity,
        client: Option<ClientKey>,
        collection: &str,
        request: SubscribeRequest,
    ) -> Result<Subscribed, EngineError> {
        let handle = self.resolve_named_in_body(collection)?;
        if self.hooks.defines(Hook::RealtimeConnecting) {
            self.hooks
                .connecting(
                    &handle.info.name,
                    &request.filter_text,
                    request.socket_id.as_deref(),
                    &identity.auth(),
                )
                .map_err(EngineError::Forbidden)?;
        }
        if let Some(applied) = &self.applied {
            return self
                .subscribe_shared(&handle, identity, client, request, applied)
                .await;
        }
        let subscribed = self
            .ask_to_change(&handle, |reply| CollectionMsg::Subscribe {
                identity: identity.clone(),
                client: client.clone(),
                request: request.clone(),
                reply,
            })
            .await?;
        self.durable().await?;
        Ok(subscribed)
    }

    /// Keeps a subscription alive (and refreshes its token's expiry with a newer token, which
    /// is durable when this returns; a plain ping writes nothing).
    pub async fn ping(&self, identity: Identity, channel: &str) -> Result<(), EngineError> {
        let (handle, id) = self.subscription_actor(channel).await?;
        let wrote = self
            .ask_to_change(&handle, |reply| CollectionMsg::Ping {
                id,
                identity: identity.clone(),
                reply,
            })
            .await
            .map_err(unknown_channel)?;
        if wrote {
            self.durable().await?;
        }
        Ok(())
    }

    /// A live subscription's events after `after`, for whoever may end it.
    pub async fn recover(
        &self,
        identity: Identity,
        channel: &str,
        after: u64,
    ) -> Result<Result<Vec<live::Recovered>, live::RecoveryError>, EngineError> {
        let (handle, id) = self.subscription_actor(channel).await?;
        let kept = self
            .ask(&handle, |reply| CollectionMsg::Recover {
                id,
                identity,
                reply,
            })
            .await?
            .map_err(unknown_channel)?;
        Ok(kept.since(after))
    }

    pub async fn unsubscribe(&self, identity: Identity, channel: &str) -> Result<(), EngineError> {
        let (handle, id) = self.subscription_actor(channel).await?;
        self.ask_to_change(&handle, |reply| CollectionMsg::Unsubscribe {
            id,
            identity: identity.clone(),
            reply,
        })
        .await
        .map_err(unknown_channel)?;
        self.durable().await
    }

    /// A row of the connection table. One not found here may have just been made on another
    /// node: once this node has applied every change made so far (bounded), it is looked for
    /// again, and its actor has it too (its change was handed over before this request).
    async fn subscription_row(&self, id: Uuid) -> Result<Option<SubscriptionDoc>, EngineError> {
        if let Some(doc) = self.store.subscription(id)? {
            return Ok(Some(doc));
        }
        let Some(applied) = &self.applied else {
            return Ok(None);
        };
        // Without Redis there is nothing newer to wait for.
        if let Ok(head) = self.store.head().await {
            let mut applied = applied.clone();
            let _ =
                tokio::time::timeout(REPLICA_GRACE, applied.wait_for(|done| *done >= head)).await;
        }
        Ok(self.store.subscription(id)?)
    }

    pub async fn list_records(
        &self,
        identity: Identity,
        collection: &str,
        query: ListQuery,
    ) -> Result<RecordPage, EngineError> {
        let handle = self.resolve(collection)?;
        self.ask(&handle, |reply| CollectionMsg::ListRecords {
            identity,
            query,
            reply,
        })
        .await?
    }

    pub async fn view_record(
        &self,
        identity: Identity,
        collection: &str,
        id: String,
    ) -> Result<records::RecordMap, EngineError> {
        let handle = self.resolve(collection)?;
        self.ask(&handle, |reply| CollectionMsg::ViewRecord {
            identity,
            id,
            reply,
        })
        .await?
    }

    /// Writes a record and waits until the write is durable; its change event is delivered
    /// then, to every matching subscription but the `except` socket's. Its after-hook, when
    /// defined, runs then too, on this node only, without holding up the reply.
    pub async fn write_record(
        &self,
        identity: Identity,
        collection: &str,
        write: RecordWrite,
        except: Option<SocketId>,
    ) -> Result<records::RecordMap, EngineError> {
        let handle = self.resolve(collection)?;
        let after = match &write {
            RecordWrite::Create(_) => Hook::RecordCreated,
            RecordWrite::Replace(..) | RecordWrite::Merge(..) => Hook::RecordUpdated,
            RecordWrite::Delete(_) => Hook::RecordDeleted,
        };
        let auth = self.hooks.defines(after).then(|| identity.auth());
        let record = match &self.applied {
            Some(applied) => {
                self.write_shared(&handle, identity, write, except, applied)
                    .await?
            }
            None => {
                let (record, _epoch) = self
                    .ask(&handle, |reply| CollectionMsg::Write {
                        identity,
                        write,
                        except,
                        reply,
                    })
                    .await??;
                self.durable().await?;
                record
            }
        };
        if let Some(auth) = auth {
            let hooks = self.hooks.clone();
            let collection = handle.info.name.clone();
            let written = record.clone();
            tokio::spawn(async move {
                hooks.after_write(after, &collection, &written, &auth).await;
            });
        }
        Ok(record)
    }

    /// A subscribe where nodes share the store: decided by the collection's actor on the
    /// rules, committed here, and answered once the actor has filed it from the log, as every
    /// node does. A rule change on another node first makes it decided again.
    async fn subscribe_shared(
        &self,
        handle: &CollectionHandle,
        identity: Identity,
        client: Option<ClientKey>,
        request: SubscribeRequest,
        applied: &tokio::sync::watch::Receiver<crate::store::Epoch>,
    ) -> Result<Subscribed, EngineError> {
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        let snapshot = request
            .live
            .as_ref()
            .is_some_and(|live| live.snapshot.is_some());
        loop {
            let decided = self
                .ask(handle, |reply| CollectionMsg::DecideSubscribe {
                    identity: identity.clone(),
                    client: client.clone(),
                    request: request.clone(),
                    reply,
                })
                .await??;
            let id = decided.subscribed.id;
            let change = Change::PutSubscription(id, &decided.doc);
            let committed = self.store.commit(decided.expect, change, None).await;
            if let Ok(committed) = &committed {
                self.applied_here(handle, committed.epoch, deadline).await?;
            }
            // Taken by the actor when it filed the subscription from the log (or let go,
            // when it was not committed).
            let taken = if snapshot {
                self.ask(handle, |reply| CollectionMsg::TakeSnapshot { id, reply })
                    .await?
            } else {
                None
            };
            match committed {
                Ok(_) => {
                    let mut subscribed = decided.subscribed;
                    if snapshot {
                        // Not filed here: this node differs from the others (logged).
                        subscribed.snapshot = Some(taken.ok_or(EngineError::Unavailable)??);
                    }
                    tracing::info!(collection = %handle.info.name, subscription = %id, privacy = ?subscribed.privacy, "subscription created");
                    return Ok(subscribed);
                }
                Err(StoreError::Conflict { head }) if tokio::time::Instant::now() < deadline => {
                    dispatched(applied, head, deadline).await?;
                }
                Err(StoreError::Gone) => {
                    return Err(EngineError::invalid(
                        "collection",
                        format!("collection `{}` does not exist", handle.info.name),
                    ));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Waits until a collection's actor has applied the change numbered `seq` from the log.
    async fn applied_here(
        &self,
        handle: &CollectionHandle,
        seq: crate::store::Epoch,
        deadline: tokio::time::Instant,
    ) -> Result<(), EngineError> {
        let mut done = handle.applied.clone();
        match tokio::time::timeout_at(deadline, done.wait_for(|applied| *applied >= seq)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(EngineError::UnknownCollection(handle.info.name.clone())),
            Err(_) => Err(EngineError::Unavailable),
        }
    }

    /// A record write where nodes share the store: decided by the collection's actor on the
    /// record as it has it, committed here (many at once: the actor does not wait for the
    /// store), and answered once the actor has applied it from the log, as every node does.
    /// A conflict (the record, or the rules, changed on another node first) is decided again
    /// once this node has applied what it conflicted with.
    async fn write_shared(
        &self,
        handle: &CollectionHandle,
        identity: Identity,
        write: RecordWrite,
        except: Option<SocketId>,
        applied: &tokio::sync::watch::Receiver<crate::store::Epoch>,
    ) -> Result<records::RecordMap, EngineError> {
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        let except = except.map(|socket| socket.to_string());
        loop {
            let decided = self
                .ask(handle, |reply| CollectionMsg::Decide {
                    identity: identity.clone(),
                    write: write.clone(),
                    reply,
                })
                .await??;
            let record_id = decided
                .record
                .get("id")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            let json;
            let doc;
            let change = if decided.deleted {
                Change::DeleteRecord {
                    collection_id: &handle.info.id,
                    record_id,
                }
            } else {
                json =
                    serde_json::to_string(&decided.record).expect("a JSON map always serializes");
                doc = RecordDoc { json };
                Change::PutRecord {
                    collection_id: &handle.info.id,
                    record_id,
                    doc: &doc,
                }
            };
            let committed = self
                .store
                .commit(decided.expect, change, except.as_deref())
                .await;
            match committed {
                Ok(committed) => {
                    // Applied here as on every node, and so answered: read your own writes.
                    self.applied_here(handle, committed.epoch, deadline).await?;
                    return Ok(decided.record);
                }
                Err(StoreError::Conflict { head }) if tokio::time::Instant::now() < deadline => {
                    dispatched(applied, head, deadline).await?;
                }
                Err(StoreError::Gone) => {
                    return Err(EngineError::UnknownCollection(handle.info.name.clone()));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Matches and delivers a change made elsewhere, without storing it; returns how many
    /// subscriptions it matched.
    pub async fn publish(
        &self,
        collection: &str,
        action: events::Action,
        record: records::RecordMap,
        except: Option<SocketId>,
    ) -> Result<usize, EngineError> {
        let handle = self.resolve_named_in_body(collection)?;
        self.ask_to_change(&handle, |reply| CollectionMsg::Publish {
            action,
            record: record.clone(),
            except: except.clone(),
            reply,
        })
        .await
    }

    /// Whether `identity` may listen on the private Pusher channel `channel`. A realtime
    /// subscription's channel (a name with our prefix, or a bare UUID a subscription has) is
    /// decided by [`Engine::authorize_subscription`]; any other by the `[[channels]]` rules,
    /// whose grant holds a presence member's `channel_data`.
    pub async fn authorize_channel(
        &self,
        identity: &Identity,
        channel: &str,
    ) -> Result<channel_rules::Grant, EngineError> {
        if let Some(id) = self.channels.subscription_id(channel) {
            match self.subscription_row(id).await? {
                Some(doc) => {
                    self.authorize_subscription(identity, id, &doc, channel)?;
                    return Ok(channel_rules::Grant { channel_data: None });
                }
                None if self.channels.is_prefixed(channel) => {
                    return Err(EngineError::UnknownChannel);
                }
                // A bare UUID no subscription has: an app may name its channels so.
                None => {}
            }
        }
        self.channel_rules.authorize(identity, channel)
    }

    /// A subscription's channel: only its own private (or encrypted) channel is signed, and
    /// only for the user who made it, or the admin.
    fn authorize_subscription(
        &self,
        identity: &Identity,
        id: Uuid,
        doc: &SubscriptionDoc,
        channel: &str,
    ) -> Result<(), EngineError> {
        if doc.is_public {
            return Err(EngineError::invalid(
                "channel_name",
                "this subscription is public: listen on the channel without `private-` and without authorization",
            ));
        }
        // What is signed is what the client will subscribe to: only the subscription's channel.
        let privacy = if doc.encrypted {
            ChannelPrivacy::Encrypted
        } else {
            ChannelPrivacy::Private
        };
        let expected = self.channels.pusher_channel(id, privacy);
        if channel != expected {
            return Err(EngineError::invalid(
                "channel_name",
                format!("this subscription's channel is `{expected}`"),
            ));
        }
        match (identity, &doc.owner) {
            (Identity::Superuser, _) => Ok(()),
            (Identity::Guest, _) => Err(EngineError::Unauthenticated),
            (Identity::User(user), OwnerDoc::User { id, .. }) if user.id == *id => Ok(()),
            (Identity::User(_), OwnerDoc::User { .. } | OwnerDoc::Guest | OwnerDoc::Superuser) => {
                Err(EngineError::Forbidden(
                    "only the user who subscribed may listen on this channel".into(),
                ))
            }
        }
    }

    /// The actor owning the subscription a channel name designates, found through the
    /// connection table.
    async fn subscription_actor(
        &self,
        channel: &str,
    ) -> Result<(CollectionHandle, Uuid), EngineError> {
        let id = self
            .channels
            .subscription_id(channel)
            .ok_or(EngineError::UnknownChannel)?;
        let doc = self
            .subscription_row(id)
            .await?
            .ok_or(EngineError::UnknownChannel)?;
        let handle = self
            .resolve(&doc.collection_id)
            .map_err(|_| EngineError::UnknownChannel)?;
        Ok((handle, id))
    }
}

/// Hands the changes other nodes made, in the order they were made, to the actors they are
/// for: a collection's own to its actor, the making, changing and deleting of collections to
/// the registry (and waits for it, so that a collection's later changes find it as changed).
async fn replicate(
    mut replicas: tokio::sync::mpsc::Receiver<(crate::store::Epoch, crate::store::LogEntry)>,
    registry: ActorRef<RegistryMsg>,
    directory: Arc<Directory>,
    applied: tokio::sync::watch::Sender<crate::store::Epoch>,
) {
    use crate::store::Replica;
    while let Some((epoch, entry)) = replicas.recv().await {
        match &entry.change {
            Replica::PutCollection(_) | Replica::DeleteCollection(_) => {
                let entry = Box::new(entry);
                // Not bounded by the call timeout: the next change must wait for this one.
                let _ = registry
                    .call(|reply| RegistryMsg::Replicate { entry, reply }, None)
                    .await;
            }
            Replica::PutSubscription(..)
            | Replica::DeleteSubscription { .. }
            | Replica::PutRecord { .. }
            | Replica::DeleteRecord { .. }
            | Replica::Publish { .. } => {
                // A collection not found was deleted since.
                if let Some(actor) = directory.actor(entry.change.collection_id()) {
                    let _ = actor.cast(CollectionMsg::Replicate(Box::new(entry)));
                }
            }
        }
        applied.send_replace(epoch);
    }
}

/// Waits until a collection's actor is at version `head` or past it: it has applied what a
/// change conflicted with.
async fn caught_up(
    handle: &CollectionHandle,
    head: crate::store::Version,
    deadline: tokio::time::Instant,
) -> Result<(), EngineError> {
    let mut version = handle.version.clone();
    match tokio::time::timeout_at(deadline, version.wait_for(|version| *version >= head)).await {
        Ok(Ok(_)) => Ok(()),
        // The actor stopped: the collection was deleted.
        Ok(Err(_)) => Err(EngineError::UnknownCollection(handle.info.name.clone())),
        Err(_) => Err(EngineError::Storage(StoreError::Conflict { head })),
    }
}

/// Waits until every change of the log up to `head` has been handed to the actors: an
/// actor's next decision then comes after those of its collection.
async fn dispatched(
    applied: &tokio::sync::watch::Receiver<crate::store::Epoch>,
    head: crate::store::Epoch,
    deadline: tokio::time::Instant,
) -> Result<(), EngineError> {
    let mut caught_up = applied.clone();
    match tokio::time::timeout_at(deadline, caught_up.wait_for(|seq| *seq >= head)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(EngineError::Storage(StoreError::Conflict { head })),
    }
}

/// A subscription's collection gone meanwhile: its channel is unknown.
fn unknown_channel(error: EngineError) -> EngineError {
    match error {
        EngineError::UnknownCollection(_) => EngineError::UnknownChannel,
        other => other,
    }
}

/// One request-reply exchange with an actor; a dead or stuck actor is `Unavailable`.
async fn call<M, T>(
    actor: &ActorRef<M>,
    message: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, EngineError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(message, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(value)) => Ok(value),
        Ok(CallResult::Timeout | CallResult::SenderError) | Err(_) => Err(EngineError::Unavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_checked_all_at_once_and_superuser_only_is_kept_as_none() {
        let texts = RuleTexts {
            list: Some(" Superuser_Only ".into()),
            view: Some(String::new()),
            create: Some("a = 1".into()),
            ..RuleTexts::default()
        };
        let (kept, rules) = texts.checked().unwrap();
        assert_eq!(kept.list, None);
        assert_eq!(kept.view.as_deref(), Some(""));
        assert_eq!(kept.create.as_deref(), Some("a = 1"));
        assert!(matches!(rules.list, Rule::SuperuserOnly));
        let bad = RuleTexts {
            list: Some("a = ".into()),
            delete: Some("(".into()),
            ..RuleTexts::default()
        };
        match bad.checked() {
            Err(EngineError::InvalidFields(fields)) => assert_eq!(
                fields.keys().collect::<Vec<_>>(),
                ["api_rules.delete", "api_rules.list"]
            ),
            other => panic!("{:?}", other.map(|(texts, _)| texts)),
        }
    }

    #[test]
    fn a_stored_rule_that_no_longer_parses_admits_only_the_admin() {
        // Accepted by builds that rounded integers beyond 64 bits; refused now.
        let texts = RuleTexts {
            list: Some("n > 100000000000000000000".into()),
            view: Some(String::new()),
            ..RuleTexts::default()
        };
        assert!(texts.clone().checked().is_err());
        let (rules, broken) = texts.parse_stored();
        assert!(matches!(rules.list, Rule::SuperuserOnly));
        assert!(matches!(rules.view, Rule::Public));
        assert!(matches!(
            broken.as_slice(),
            [EngineError::Invalid { field, .. }] if field == "api_rules.list"
        ));
    }
}
