//! One actor per collection: it owns the collection's rules, its records, its subscriptions,
//! their compiled filters and the subscription index, and writes its rows of the store.
//!
//! Every change is decided here on the collection as it is (its [`Version`]), committed to the
//! store on condition that it is still so, then applied: on one node the condition always
//! holds; where nodes share the store, a change another node committed first makes it a
//! conflict, and the engine asks again once this actor has applied that change
//! ([`CollectionMsg::Replicate`], from the store's log). Handlers never wait on the disk: sled
//! changes memory, and the caller waits for durability ([`Store::sync`]) before answering its
//! client. A write's change event is matched here, in commit order, and delivered once the
//! write is durable.
//!
//! A live subscription (DESIGN.md §13) has a cursor its events are numbered on, as they are
//! delivered, and its channel is held for its first socket; with `leave_events` it is filed a
//! second time, in the index of subscriptions told when an update takes a record out of their
//! view.
//!
//! Subscriptions are handled in this file, records in [`records`].

mod records;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::events::{
    Action, Delivery, Destination, EndReason, EventData, EventNames, LiveDestination, Outbox,
    spawn_delivery,
};
use super::live::{Cursor, History, HistoryLimits, Kept};
use super::names::ChannelPrivacy;
use super::records::RecordMap;
use super::registry::Directory;
use super::{
    ChannelNames, CollectionInfo, CollectionName, EngineError, ListQuery, RecordPage, RecordWrite,
    RuleTexts, Rules, RulesPatch, SubscribeRequest, Subscribed,
};
use crate::auth::{Identity, User, now_secs};
use crate::filter::{
    Auth, CompiledFilter, Filter, FilterEngine, Rule, SubscriptionIndex, SubscriptionKey, condition,
};
use crate::hooks::Hooks;
use crate::limits::{ClientKey, Quota};
use crate::pusher::Driver;
use crate::pusher::encryption::ChannelKey;
use crate::pusher::protocol::SocketId;
use crate::store::{
    Change, CollectionDoc, Committed, Epoch, Expect, LiveDoc, LogEntry, OwnerDoc, RecordDoc,
    Removal, Replica, Store, SubscriptionDoc, Version,
};

pub enum CollectionMsg {
    Subscribe {
        identity: Identity,
        client: Option<ClientKey>,
        request: SubscribeRequest,
        reply: RpcReplyPort<Result<Subscribed, EngineError>>,
    },
    /// Answers whether the subscription's row was written (a fresher token was taken).
    Ping {
        id: Uuid,
        identity: Identity,
        reply: RpcReplyPort<Result<bool, EngineError>>,
    },
    Unsubscribe {
        id: Uuid,
        identity: Identity,
        reply: RpcReplyPort<Result<(), EngineError>>,
    },
    /// A new name, rules or `encrypted` option (`None` keeps each), made from the collection
    /// as this actor has it: every subscription is planned again; those the new list rule no
    /// longer lets be delivered on their channel, and the non-public ones whose channel is
    /// not of the new kind (`private-` or `private-encrypted-`), end, and their sockets are
    /// sent `ended`. Answers the collection as changed.
    Update {
        name: Option<CollectionName>,
        patch: RulesPatch,
        encrypted: Option<bool>,
        reply: RpcReplyPort<Result<CollectionInfo, EngineError>>,
    },
    /// Such a change another node committed, at `version` (skipped if this actor has it).
    SetRules {
        doc: Box<CollectionDoc>,
        rules: Box<Rules>,
        version: Version,
        /// Made by this node (its answer lost to a timeout): its events are this node's to send.
        mine: bool,
    },
    /// The collection was deleted (with its rows, by the change numbered `epoch` when made
    /// here, else by another node): end every subscription (their sockets are sent `ended`),
    /// drop every record.
    Close {
        epoch: Option<Epoch>,
        replicated: bool,
        reply: RpcReplyPort<()>,
    },
    /// A change from the store's log: applied unless this actor has it already.
    Replicate(Box<LogEntry>),
    ListRecords {
        identity: Identity,
        query: ListQuery,
        reply: RpcReplyPort<Result<RecordPage, EngineError>>,
    },
    ViewRecord {
        identity: Identity,
        id: String,
        reply: RpcReplyPort<Result<RecordMap, EngineError>>,
    },
    /// Where nodes share the store: a new subscription, decided and not made
    /// ([`CollectionState::decide_subscribe`]).
    DecideSubscribe {
        identity: Identity,
        client: Option<ClientKey>,
        request: SubscribeRequest,
        reply: RpcReplyPort<Result<SubscribeDecided, EngineError>>,
    },
    /// Where nodes share the store: the snapshot taken when this node filed the live
    /// subscription `id` it decided, from the log.
    TakeSnapshot {
        id: Uuid,
        reply: RpcReplyPort<Option<Result<Vec<RecordMap>, EngineError>>>,
    },
    /// A live subscription's history and cursor, for its owner (or the admin; anyone for a
    /// guest's) to recover its events from.
    Recover {
        id: Uuid,
        identity: Identity,
        reply: RpcReplyPort<Result<Kept, EngineError>>,
    },
    /// Where nodes share the store: what a record write would change, decided on the record
    /// as this actor has it, changing nothing (the engine commits it, and the actor applies
    /// it from the log, as every node does).
    Decide {
        identity: Identity,
        write: RecordWrite,
        reply: RpcReplyPort<Result<records::Decided, EngineError>>,
    },
    /// Create, replace (PUT), merge (PATCH) or delete a record; replies with the record (the
    /// deleted one for a delete) once it is in sled, with the epoch to wait for.
    Write {
        identity: Identity,
        write: RecordWrite,
        except: Option<SocketId>,
        reply: RpcReplyPort<Result<(RecordMap, Epoch), EngineError>>,
    },
    /// A change made elsewhere: matched and delivered, not stored (where nodes share the
    /// store, it goes through its log so that every node delivers it, in its turn). Answers
    /// how many subscriptions it matched.
    Publish {
        action: Action,
        record: RecordMap,
        except: Option<SocketId>,
        reply: RpcReplyPort<Result<usize, EngineError>>,
    },
    /// Timer: end stale and expired subscriptions.
    Prune,
    CountSubscriptions(RpcReplyPort<usize>),
}

pub struct CollectionActor;

pub struct CollectionArgs {
    pub id: String,
    pub name: String,
    /// The rules' texts, and the rules parsed.
    pub texts: RuleTexts,
    pub rules: Rules,
    /// Non-public subscriptions made now go on `private-encrypted-` channels.
    pub encrypted: bool,
    /// What encrypted channels' keys derive from (`None`: no collection may be encrypted).
    pub master_key: Option<[u8; 32]>,
    pub store: Store,
    pub filters: Arc<FilterEngine>,
    /// The operator's hooks: before-hooks run as writes are decided here.
    pub hooks: Arc<Hooks>,
    /// Its hub says which subscriptions have a socket listening (they stay alive); its
    /// metrics count refusals by the subscription quota.
    pub driver: Arc<Driver>,
    pub channels: ChannelNames,
    pub threshold: Duration,
    pub subscription_quota: Arc<Quota<ClientKey>>,
    pub event_names: EventNames,
    /// The collection's version, and its rows, as loaded at start-up.
    pub version: Version,
    pub subscriptions: Vec<(Uuid, SubscriptionDoc)>,
    pub records: Vec<RecordDoc>,
    /// Where the actor says which version it is at.
    pub version_watch: tokio::sync::watch::Sender<Version>,
    /// Where requests find the collection: the actor keeps its entry's name and rules current.
    pub directory: Arc<Directory>,
    /// The version the rules were set at, the log's last change the loaded state holds, and
    /// each record's last change (where nodes share the store).
    pub rules_version: Version,
    pub seq: Epoch,
    pub record_seqs: HashMap<String, Epoch>,
    /// Where the actor says which change of the log it applied last.
    pub applied_watch: tokio::sync::watch::Sender<Epoch>,
    /// How much of its live subscriptions' events the collection keeps for recovery.
    pub history: HistoryLimits,
}

pub struct CollectionState {
    id: String,
    name: String,
    texts: RuleTexts,
    rules: Rules,
    /// The collection's `encrypted` option.
    encrypted: bool,
    master_key: Option<[u8; 32]>,
    store: Store,
    filters: Arc<FilterEngine>,
    hooks: Arc<Hooks>,
    driver: Arc<Driver>,
    channels: ChannelNames,
    threshold: Duration,
    /// Live subscriptions per client, across collections.
    subscription_quota: Arc<Quota<ClientKey>>,
    /// What events are called on the wire.
    event_names: EventNames,
    index: SubscriptionIndex<Subscriber>,
    /// Live subscriptions with `leave_events`, filed again: matched against a record as it
    /// was before an update.
    leave_index: SubscriptionIndex<LiveDestination>,
    /// Every subscription, with where the indexes filed it.
    subscriptions: HashMap<Uuid, (Filed, Subscription)>,
    /// How many of them are live.
    live_subscriptions: usize,
    /// Compiled conditions shared by subscriptions with the same filter text, for users and
    /// guests (`[0]`) and for the admin, whose condition omits the rule (`[1]`).
    compiled: [HashMap<String, Arc<CompiledFilter>>; 2],
    /// The collection's records, by id.
    records: HashMap<String, RecordMap>,
    /// The rules, compiled for checking one record at a time.
    checks: records::RuleChecks,
    /// This collection's ordered, after-durability event delivery.
    deliveries: Outbox,
    /// Its live subscriptions' events, numbered and kept by the delivery task.
    history: Arc<History>,
    /// Where nodes share the store: live subscriptions this node decided, with the query of
    /// the snapshot to take when they are filed from the log, and the snapshots taken, until
    /// their requests take them.
    snapshot_queries: HashMap<Uuid, (Identity, ListQuery)>,
    snapshots: HashMap<Uuid, Result<Vec<RecordMap>, EngineError>>,
    pruner: Option<JoinHandle<()>>,
    /// The collection was deleted: requests still in the mailbox find it gone (the actor
    /// stops right after, but what was queued before is still handled).
    closed: bool,
    /// How many changes the collection has had: what its decisions are made on.
    version: Version,
    /// Applying another node's change: with an external Pusher service, that node has sent
    /// its events, and this one sends none.
    replaying: bool,
    /// When the subscriptions seen alive here were last reported to the store (for the
    /// leader, which prunes).
    seen_reported: Instant,
    version_watch: tokio::sync::watch::Sender<Version>,
    directory: Arc<Directory>,
    /// The version the rules were set at: what a record write is decided on.
    rules_version: Version,
    /// Where nodes share the store: the log's last change the loaded state holds (older ones
    /// are skipped), each record's last change, and the last change applied.
    loaded_seq: Epoch,
    record_seqs: HashMap<String, Epoch>,
    applied_watch: tokio::sync::watch::Sender<Epoch>,
}

/// Where a filed subscription's events go.
#[derive(Clone, Debug)]
enum Target {
    Plain(Destination),
    Live(LiveDestination),
}

/// A filed subscription: where its events go, and its subscriber's claims (a shared map:
/// carried with a delivery only for `realtime_broadcast`).
#[derive(Clone, Debug)]
struct Subscriber {
    target: Target,
    auth: Auth,
}

/// Where a subscription is filed: in the index, and in the leave index for `leave_events`.
struct Filed {
    key: SubscriptionKey,
    leave: Option<SubscriptionKey>,
}

/// A new subscription decided where nodes share the store, to commit.
pub struct SubscribeDecided {
    pub subscribed: Subscribed,
    pub doc: SubscriptionDoc,
    pub expect: Expect,
}

/// A subscription the list rule refuses to file, and why.
struct Refused(EngineError, Subscription);

/// Why a subscription ends.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Its owner (or the admin) asked.
    Unsubscribed,
    /// Not pinged within the threshold, and no socket on its channel.
    Stale,
    /// Ended by the server while sockets may hold it: they are told why (`ended`).
    Announced(EndReason),
}

impl Ending {
    fn why(self) -> &'static str {
        match self {
            Ending::Unsubscribed => "unsubscribed",
            Ending::Stale => "stale",
            Ending::Announced(reason) => reason.as_str(),
        }
    }

    /// As the store's log carries it to the other nodes.
    fn removal(self) -> Removal {
        match self {
            Ending::Unsubscribed | Ending::Stale => Removal::Quiet,
            Ending::Announced(EndReason::TokenExpired) => Removal::TokenExpired,
            Ending::Announced(EndReason::RuleChanged | EndReason::CollectionDeleted) => {
                Removal::RuleChanged
            }
        }
    }

    fn from_removal(removal: Removal) -> Self {
        match removal {
            Removal::Quiet => Ending::Unsubscribed,
            Removal::TokenExpired => Ending::Announced(EndReason::TokenExpired),
            Removal::RuleChanged => Ending::Announced(EndReason::RuleChanged),
        }
    }
}

/// What makes a subscription live.
struct Live {
    cursor: Arc<Cursor>,
    leave_events: bool,
}

struct Subscription {
    identity: Identity,
    filter_text: String,
    socket_id: Option<String>,
    /// A live subscription's cursor and options.
    live: Option<Live>,
    /// Fixed when the subscription is made: public when a guest could have made it, else
    /// `private-`, or `private-encrypted-` in an encrypted collection (DESIGN.md §15).
    privacy: ChannelPrivacy,
    /// Who the subscription counts against (the admin's count against nobody).
    client: Option<ClientKey>,
    created_at_ms: u64,
    /// Monotonic: the last ping (or start-up, which grants a fresh grace period).
    last_seen: Instant,
}

impl Subscription {
    /// A subscription made now.
    fn new(
        id: Uuid,
        identity: Identity,
        request: &SubscribeRequest,
        privacy: ChannelPrivacy,
        client: Option<ClientKey>,
    ) -> Self {
        Self {
            identity,
            filter_text: request.filter_text.clone(),
            socket_id: request.socket_id.clone(),
            live: request.live.as_ref().map(|live| Live {
                cursor: Cursor::new(id),
                leave_events: live.leave_events,
            }),
            privacy,
            client,
            created_at_ms: now_ms(),
            last_seen: Instant::now(),
        }
    }

    fn expires_at(&self) -> Option<u64> {
        match &self.identity {
            Identity::User(user) => user.expires_at,
            Identity::Guest | Identity::Superuser => None,
        }
    }

    fn doc(&self, collection_id: &str) -> SubscriptionDoc {
        let guest_address = match &self.client {
            Some(ClientKey::Address(address)) => Some(address.to_string()),
            Some(ClientKey::User(_)) | None => None,
        };
        let owner = match &self.identity {
            Identity::Guest => OwnerDoc::Guest,
            Identity::Superuser => OwnerDoc::Superuser,
            Identity::User(user) => OwnerDoc::User {
                id: user.id.clone(),
                claims_json: Value::Object(user.claims.clone()).to_string(),
                expires_at: user.expires_at,
            },
        };
        SubscriptionDoc {
            collection_id: collection_id.to_owned(),
            owner,
            socket_id: self.socket_id.clone(),
            filter: self.filter_text.clone(),
            is_public: self.privacy.is_public(),
            encrypted: self.privacy == ChannelPrivacy::Encrypted,
            created_at_ms: self.created_at_ms,
            last_seen_at_ms: now_ms(),
            guest_address,
            live: self.live.as_ref().map(|live| LiveDoc {
                leave_events: live.leave_events,
            }),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Whether two tokens of a user have the same claims but for their times (`exp`, `iat`, `nbf`)
/// and id (`jti`): what a rule may read of them is the same.
fn same_view(old: &Map<String, Value>, new: &Map<String, Value>) -> bool {
    let timeless = |claims: &Map<String, Value>| -> Vec<(String, Value)> {
        let mut kept: Vec<(String, Value)> = claims
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "exp" | "iat" | "nbf" | "jti"))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        kept
    };
    timeless(old) == timeless(new)
}

/// The list query of a live subscription's snapshot, when it asks for one: its filter, the
/// first page.
fn snapshot_query(request: &SubscribeRequest) -> Option<ListQuery> {
    let snapshot = request.live.as_ref()?.snapshot.as_ref()?;
    Some(ListQuery {
        filter: request.filter_text.clone(),
        sort: snapshot.sort.clone(),
        page: Some(1),
        per_page: snapshot.per_page,
    })
}

/// Snapshots taken for requests that never came for them (a request that timed out), at
/// most: past it they are let go.
const UNCLAIMED_SNAPSHOTS: usize = 1024;

/// `Retry-After` of a refusal by the subscription quota: a hint only, as the count falls when
/// the client ends subscriptions, or when unused ones expire.
const QUOTA_RETRY_AFTER_SECS: u64 = 60;

/// Who a list rule lets subscribe (DESIGN.md §3, §9).
pub fn admit(rule: &Rule, identity: &Identity) -> Result<(), EngineError> {
    match (identity, rule) {
        (Identity::Superuser, _) => Ok(()),
        (Identity::Guest, Rule::SuperuserOnly) => Err(EngineError::Unauthenticated),
        (Identity::User(_), Rule::SuperuserOnly) => Err(EngineError::Forbidden(
            "only the admin may subscribe to this collection".into(),
        )),
        (Identity::Guest, rule) if !rule.admits_guest() => Err(EngineError::Unauthenticated),
        (Identity::Guest | Identity::User(_), _) => Ok(()),
    }
}

/// The owner of a subscription may end it; so may the admin; a guest's subscription is ended
/// by whoever holds its channel name.
fn may_end(owner: &Identity, caller: &Identity) -> bool {
    match (owner, caller) {
        (_, Identity::Superuser) | (Identity::Guest, _) => true,
        (Identity::User(owner), Identity::User(caller)) => owner.id == caller.id,
        (Identity::User(_) | Identity::Superuser, Identity::Guest | Identity::User(_)) => false,
    }
}

impl CollectionState {
    /// The compiled condition for a filter text: compiled once per text and kind of subscriber.
    fn compiled(
        &mut self,
        text: &str,
        superuser: bool,
    ) -> Result<Arc<CompiledFilter>, EngineError> {
        let cache = &mut self.compiled[usize::from(superuser)];
        if let Some(compiled) = cache.get(text) {
            return Ok(compiled.clone());
        }
        let invalid =
            |error: &dyn std::fmt::Display| EngineError::invalid("filter", error.to_string());
        let filter = Filter::parse(text).map_err(|error| invalid(&error))?;
        let compiled = self
            .filters
            .compile(condition(&self.rules.list, &filter, superuser))
            .map(Arc::new)
            .map_err(|error| invalid(&error))?;
        cache.insert(text.to_owned(), compiled.clone());
        Ok(compiled)
    }

    /// Files a subscription in the index and the map (not in sled) if the current list rule
    /// still lets it be delivered on its channel: its subscriber is admitted, a public
    /// channel (anyone holding its name may listen) needs a rule that admits guests, and a
    /// private one must be of the kind the `encrypted` option asks for. Refused, the
    /// subscription is handed back.
    fn file(&mut self, id: Uuid, subscription: Subscription) -> Result<(), Box<Refused>> {
        let refused = |error, subscription| Err(Box::new(Refused(error, subscription)));
        if let Err(error) = admit(&self.rules.list, &subscription.identity) {
            return refused(error, subscription);
        }
        if subscription.privacy.is_public() && !self.rules.list.admits_guest() {
            return refused(
                EngineError::Forbidden(
                    "the list rule no longer admits guests, so this public channel may not carry its records"
                        .into(),
                ),
                subscription,
            );
        }
        if !subscription.privacy.is_public() && subscription.privacy != self.private_kind() {
            return refused(
                EngineError::Forbidden(
                    "the collection's `encrypted` option changed, and with it the kind of channel its private subscriptions use"
                        .into(),
                ),
                subscription,
            );
        }
        let destination = match self.destination(id, subscription.privacy) {
            Ok(destination) => destination,
            Err(error) => return refused(error, subscription),
        };
        let compiled = match self.compiled(
            &subscription.filter_text,
            subscription.identity.is_superuser(),
        ) {
            Ok(compiled) => compiled,
            Err(error) => return refused(error, subscription),
        };
        let auth = subscription.identity.auth();
        let (target, leave) = match &subscription.live {
            None => (Target::Plain(destination), None),
            Some(live) => {
                let live_destination = LiveDestination {
                    destination,
                    cursor: live.cursor.clone(),
                };
                let leave = live.leave_events.then(|| {
                    self.leave_index.insert(
                        compiled.clone(),
                        auth.clone(),
                        live_destination.clone(),
                    )
                });
                (Target::Live(live_destination), leave)
            }
        };
        let subscriber = Subscriber {
            target,
            auth: auth.clone(),
        };
        let key = self.index.insert(compiled, auth, subscriber);
        self.live_subscriptions += usize::from(subscription.live.is_some());
        self.subscriptions
            .insert(id, (Filed { key, leave }, subscription));
        Ok(())
    }

    /// The kind of channel a non-public subscription made now is delivered on.
    fn private_kind(&self) -> ChannelPrivacy {
        if self.encrypted {
            ChannelPrivacy::Encrypted
        } else {
            ChannelPrivacy::Private
        }
    }

    /// A subscription's channel, with its key when it is encrypted: derived once, here.
    fn destination(&self, id: Uuid, privacy: ChannelPrivacy) -> Result<Destination, EngineError> {
        let channel = self.channels.pusher_channel(id, privacy);
        let key = match (privacy, &self.master_key) {
            (ChannelPrivacy::Encrypted, Some(master_key)) => {
                Some(ChannelKey::derive(&channel, master_key))
            }
            (ChannelPrivacy::Encrypted, None) => {
                return Err(EngineError::invalid(
                    "encrypted",
                    "encrypted channels need the server's VELO_ENCRYPTION_MASTER_KEY, which is not set",
                ));
            }
            (ChannelPrivacy::Public | ChannelPrivacy::Private, _) => None,
        };
        Ok(Destination {
            channel: channel.into(),
            key,
        })
    }

    /// Takes a subscription out of the index and the map, dropping its compiled condition from
    /// the cache when no other subscription shares it.
    fn unfile(&mut self, id: Uuid) -> Option<Subscription> {
        let (filed, subscription) = self.subscriptions.remove(&id)?;
        self.index.remove(filed.key);
        self.live_subscriptions -= usize::from(subscription.live.is_some());
        if let Some(leave) = filed.leave {
            self.leave_index.remove(leave);
        }
        let cache = &mut self.compiled[usize::from(subscription.identity.is_superuser())];
        if cache
            .get(&subscription.filter_text)
            .is_some_and(|compiled| Arc::strong_count(compiled) == 1)
        {
            cache.remove(&subscription.filter_text);
        }
        Some(subscription)
    }

    /// Commits a change decided on the collection as it is, and moves the version on. A
    /// conflict (another node changed the collection first) changes nothing here.
    async fn commit(
        &mut self,
        change: Change<'_>,
        except: Option<&str>,
    ) -> Result<Committed, EngineError> {
        let committed = self
            .store
            .commit(Expect::At(self.version), change, except)
            .await
            .map_err(|error| match error {
                crate::store::StoreError::Gone => EngineError::UnknownCollection(self.name.clone()),
                // The store is behind what this node applied: it lost changes (restored
                // from older data, or keys evicted). Deciding again cannot help.
                crate::store::StoreError::Conflict { head } if head <= self.version => {
                    tracing::error!(collection = %self.name, applied = self.version, store = head, "the store is behind what this node applied: it lost changes (use maxmemory-policy noeviction and appendfsync always)");
                    EngineError::Unavailable
                }
                other => EngineError::Storage(other),
            })?;
        self.advance(committed.version);
        Ok(committed)
    }

    /// Whether this node sends the events of what it applies now: always to its own sockets;
    /// to an external Pusher service only what it committed itself (sent once, not once per
    /// node).
    fn delivers(&self) -> bool {
        !self.replaying || self.driver.outbound.is_none()
    }

    fn advance(&mut self, version: Version) {
        self.version = version;
        self.version_watch.send_replace(version);
    }

    /// Ends a live subscription: its removal committed, then taken out of memory.
    async fn end(&mut self, id: Uuid, ending: Ending) -> Result<(), EngineError> {
        if !self.subscriptions.contains_key(&id) {
            return Ok(());
        }
        let collection_id = self.id.clone();
        let committed = self
            .commit(
                Change::DeleteSubscription {
                    collection_id: &collection_id,
                    id,
                    removal: ending.removal(),
                },
                None,
            )
            .await?;
        if let Some(subscription) = self.unfile(id) {
            self.retired(id, &subscription, ending, Some(committed.epoch));
        }
        Ok(())
    }

    /// What follows an unfiled subscription's removal: its quota given back and, when the
    /// server ends a subscription that sockets may hold, `ended` to its channel through the
    /// ordered delivery path (after every event matched before it, once `epoch` is durable).
    fn retired(
        &mut self,
        id: Uuid,
        subscription: &Subscription,
        ending: Ending,
        epoch: Option<Epoch>,
    ) {
        if let Some(client) = &subscription.client {
            self.subscription_quota.give_back(client);
        }
        if subscription.live.is_some() {
            let channel = self.channels.pusher_channel(id, subscription.privacy);
            self.driver.hub.release(&channel);
        }
        tracing::info!(collection = %self.name, subscription = %id, why = ending.why(), "subscription ended");
        if let Ending::Announced(reason) = ending {
            // Sealed like the subscription's other events; without a key (a subscription that
            // could not be filed for want of one), nobody can be listening.
            if self.delivers()
                && let Ok(destination) = self.destination(id, subscription.privacy)
            {
                let event = Arc::new(EventData::ended(reason, self.event_names));
                let (destinations, live) = match &subscription.live {
                    None => (vec![destination], Vec::new()),
                    Some(live) => (
                        Vec::new(),
                        vec![LiveDestination {
                            destination,
                            cursor: live.cursor.clone(),
                        }],
                    ),
                };
                self.deliveries.push(Delivery {
                    epoch,
                    event,
                    destinations,
                    live,
                    except: None,
                    quiet: false,
                    hooked: None,
                });
            }
            // The pruner's ends have no request to flush them.
            self.store.flush_soon();
        }
    }

    /// What a subscription made now needs before anything else: the collection still there,
    /// and the channel kind it gets (public when a guest could have made it).
    fn new_subscription_privacy(&self) -> Result<ChannelPrivacy, EngineError> {
        if self.closed {
            return Err(EngineError::invalid(
                "collection",
                format!("collection `{}` does not exist", self.name),
            ));
        }
        Ok(if self.rules.list.admits_guest() {
            ChannelPrivacy::Public
        } else {
            self.private_kind()
        })
    }

    /// Takes one of `client`'s live subscriptions from its quota; at its maximum, the 429.
    fn take_quota(&self, client: &ClientKey) -> Result<(), EngineError> {
        self.subscription_quota.take(client).map_err(|exceeded| {
            self.driver.metrics.limited_subscriptions.inc();
            EngineError::Limited {
                message: format!(
                    "{client} already holds {} live subscriptions, the most allowed: end some (DELETE /api/realtime/subscriptions/{{channel}}) or let unused ones expire",
                    exceeded.max
                ),
                retry_after_secs: QUOTA_RETRY_AFTER_SECS,
            }
        })
    }

    /// Where nodes share the store: a new subscription decided on the rules alone (admitted,
    /// within the quota as this node counts it, its filter compiled, its channel's key
    /// derivable), changing nothing: the engine commits it, and every node, this one
    /// included, files it from the log.
    fn decide_subscribe(
        &mut self,
        identity: Identity,
        client: Option<ClientKey>,
        request: SubscribeRequest,
    ) -> Result<SubscribeDecided, EngineError> {
        let privacy = self.new_subscription_privacy()?;
        admit(&self.rules.list, &identity)?;
        // Checked now (a bad sort refuses the subscription), taken when it is filed.
        let snapshot_query = snapshot_query(&request);
        if let Some(query) = &snapshot_query {
            Self::check_query(query)?;
        }
        let id = Uuid::new_v4();
        if let Some(client) = &client {
            self.take_quota(client)?;
            // Counted when the subscription is filed, on every node.
            self.subscription_quota.give_back(client);
        }
        self.destination(id, privacy)?;
        self.compiled(&request.filter_text, identity.is_superuser())?;
        let subscription = Subscription::new(id, identity.clone(), &request, privacy, client);
        if let Some(query) = snapshot_query {
            self.snapshot_queries.insert(id, (identity, query));
        }
        Ok(SubscribeDecided {
            subscribed: Subscribed {
                id,
                privacy,
                live: request.live.is_some(),
                snapshot: None,
            },
            doc: subscription.doc(&self.id),
            expect: Expect::Rules(self.rules_version),
        })
    }

    async fn subscribe(
        &mut self,
        identity: Identity,
        client: Option<ClientKey>,
        request: SubscribeRequest,
    ) -> Result<Subscribed, EngineError> {
        let privacy = self.new_subscription_privacy()?;
        let id = Uuid::new_v4();
        let subscription = Subscription::new(id, identity, &request, privacy, client.clone());
        admit(&self.rules.list, &subscription.identity)?;
        // Taken with the subscription, in the collection's order: every change after it is
        // one of the subscription's events.
        let snapshot = snapshot_query(&request)
            .map(|query| self.list(&subscription.identity, &query))
            .transpose()?
            .map(|page| page.records);
        if let Some(client) = &client {
            self.take_quota(client)?;
        }
        let give_back = |state: &Self| {
            if let Some(client) = &client {
                state.subscription_quota.give_back(client);
            }
        };
        if let Err(refused) = self.file(id, subscription) {
            give_back(self);
            return Err(refused.0);
        }
        let doc = self.subscriptions[&id].1.doc(&self.id);
        if let Err(error) = self.commit(Change::PutSubscription(id, &doc), None).await {
            self.unfile(id);
            give_back(self);
            return Err(error);
        }
        self.opened(id, privacy, request.live.is_some());
        tracing::info!(collection = %self.name, subscription = %id, ?privacy, "subscription created");
        Ok(Subscribed {
            id,
            privacy,
            live: request.live.is_some(),
            snapshot,
        })
    }

    /// A subscription made now: a live one's channel is held for its first socket (here:
    /// an external service's sockets cannot be held for).
    fn opened(&self, id: Uuid, privacy: ChannelPrivacy, live: bool) {
        if live && self.driver.outbound.is_none() {
            let channel = self.channels.pusher_channel(id, privacy);
            self.driver.hub.hold(&channel);
        }
    }

    /// A live subscription's history and cursor, for whoever may end it.
    fn recover(&self, id: Uuid, identity: &Identity) -> Result<Kept, EngineError> {
        let Some((_, subscription)) = self.subscriptions.get(&id) else {
            return Err(EngineError::UnknownChannel);
        };
        if !may_end(&subscription.identity, identity) {
            return Err(EngineError::Forbidden(
                "only the subscriber who made this subscription, or the admin, may recover its events".into(),
            ));
        }
        let Some(live) = &subscription.live else {
            return Err(EngineError::invalid(
                "channel_name",
                "this subscription is not live (made without `snapshot` or `leave_events`): its events are not numbered or kept",
            ));
        };
        Ok(Kept {
            history: self.history.clone(),
            cursor: live.cursor.clone(),
        })
    }

    /// Keeps a subscription alive; true when a fresher token was taken and its row written.
    async fn ping(&mut self, id: Uuid, identity: Identity) -> Result<bool, EngineError> {
        let Some((_, subscription)) = self.subscriptions.get_mut(&id) else {
            return Err(EngineError::UnknownChannel);
        };
        if subscription
            .expires_at()
            .is_some_and(|exp| exp <= now_secs())
        {
            self.end(id, Ending::Announced(EndReason::TokenExpired))
                .await?;
            return Err(EngineError::UnknownChannel);
        }
        subscription.last_seen = Instant::now();
        // A fresh token of the same user extends the subscription to the new token's expiry,
        // and its claims become the subscription's `@request.auth` (filed again to match so).
        let fresher = matches!((&subscription.identity, &identity), (Identity::User(owner), Identity::User(caller))
            if owner.id == caller.id
                && owner.expires_at.is_some()
                && caller.expires_at.is_none_or(|new| owner.expires_at.is_some_and(|old| new > old)));
        if !fresher {
            return Ok(false);
        }
        // A live subscription's view would change under it with no `left`: it ends instead,
        // as with a rule change, and its client takes a new snapshot.
        if subscription.live.is_some()
            && let (Identity::User(owner), Identity::User(caller)) =
                (&subscription.identity, &identity)
            && !same_view(&owner.claims, &caller.claims)
        {
            self.end(id, Ending::Announced(EndReason::RuleChanged))
                .await?;
            return Err(EngineError::UnknownChannel);
        }
        let Some(mut subscription) = self.unfile(id) else {
            return Ok(false);
        };
        let previous = std::mem::replace(&mut subscription.identity, identity);
        let doc = subscription.doc(&self.id);
        let collection_id = self.id.clone();
        match self.file(id, subscription) {
            Ok(()) => {
                if let Err(error) = self.commit(Change::PutSubscription(id, &doc), None).await {
                    // Not committed: the subscription stays as it was.
                    if let Some(mut subscription) = self.unfile(id) {
                        subscription.identity = previous;
                        let _ = self.file(id, subscription);
                    }
                    return Err(error);
                }
                Ok(true)
            }
            Err(refused) => {
                let Refused(error, mut subscription) = *refused;
                let ending = Ending::Announced(EndReason::RuleChanged);
                let removal = Change::DeleteSubscription {
                    collection_id: &collection_id,
                    id,
                    removal: ending.removal(),
                };
                match self.commit(removal, None).await {
                    Ok(committed) => {
                        self.retired(id, &subscription, ending, Some(committed.epoch));
                        Err(error)
                    }
                    Err(failure) => {
                        subscription.identity = previous;
                        let _ = self.file(id, subscription);
                        Err(failure)
                    }
                }
            }
        }
    }

    async fn unsubscribe(&mut self, id: Uuid, identity: &Identity) -> Result<(), EngineError> {
        let Some((_, subscription)) = self.subscriptions.get(&id) else {
            return Err(EngineError::UnknownChannel);
        };
        if !may_end(&subscription.identity, identity) {
            return Err(EngineError::Forbidden(
                "only the subscriber who made this subscription, or the admin, may end it".into(),
            ));
        }
        self.end(id, Ending::Unsubscribed).await
    }

    /// A new name, rules or `encrypted` option, made from the collection as this actor has
    /// it (so that a change another node made meanwhile is never undone), committed, then
    /// applied.
    async fn update(
        &mut self,
        name: Option<CollectionName>,
        patch: RulesPatch,
        encrypted: Option<bool>,
    ) -> Result<CollectionInfo, EngineError> {
        if self.closed {
            return Err(EngineError::UnknownCollection(self.name.clone()));
        }
        let (texts, rules) = patch.apply(&self.texts).checked()?;
        let info = CollectionInfo {
            id: self.id.clone(),
            name: name.map_or_else(|| self.name.clone(), |name| name.to_string()),
            rules: texts,
            encrypted: encrypted.unwrap_or(self.encrypted),
        };
        let doc = super::registry::doc(&info);
        let committed = match self.commit(Change::PutCollection(&doc), None).await {
            Err(EngineError::Storage(crate::store::StoreError::NameTaken)) => {
                return Err(EngineError::invalid(
                    "name",
                    format!("a collection named `{}` already exists", info.name),
                ));
            }
            other => other?,
        };
        self.apply_rules(doc, rules, Some(committed.epoch));
        Ok(info)
    }

    /// Rules another node committed at `version`, unless this actor has them already.
    fn replicate_rules(&mut self, doc: CollectionDoc, rules: Rules, version: Version, mine: bool) {
        if version <= self.version {
            return;
        }
        self.advance(version);
        self.replaying = !mine;
        self.apply_rules(doc, rules, None);
        self.replaying = false;
    }

    /// Applies committed rules. Every node applies them to the same subscriptions, so every
    /// node ends the same ones: their rows are forgotten, not removed by a change of their own.
    fn apply_rules(&mut self, doc: CollectionDoc, rules: Rules, epoch: Option<Epoch>) {
        let info = super::registry::info(doc);
        self.directory.set_info(info.clone());
        // Live subscriptions end rather than work out which records left whose view: their
        // clients take a new snapshot (DESIGN.md §15).
        let list_changed = self.texts.list != info.rules.list;
        self.rules_version = self.version;
        self.checks = records::RuleChecks::compile(&self.filters, &rules);
        self.name = info.name;
        self.texts = info.rules;
        self.rules = rules;
        self.encrypted = info.encrypted;
        self.compiled = Default::default();
        let subscriptions: Vec<_> = self.subscriptions.drain().collect();
        self.live_subscriptions = 0;
        self.index = SubscriptionIndex::new();
        self.leave_index = SubscriptionIndex::new();
        for (id, (_, subscription)) in subscriptions {
            let filed = if list_changed && subscription.live.is_some() {
                let error = EngineError::Forbidden("the list rule changed".into());
                Err(Box::new(Refused(error, subscription)))
            } else {
                self.file(id, subscription)
            };
            if let Err(refused) = filed {
                let Refused(error, subscription) = *refused;
                tracing::debug!(collection = %self.name, subscription = %id, %error, "refused by the new list rule");
                if let Err(error) = self.store.forget(&self.id, id) {
                    tracing::warn!(collection = %self.name, subscription = %id, %error, "could not remove an ended subscription's row");
                }
                self.retired(
                    id,
                    &subscription,
                    Ending::Announced(EndReason::RuleChanged),
                    epoch,
                );
            }
        }
    }

    /// Ends expired subscriptions, and stale ones: not pinged within the threshold and with no
    /// socket on their channel (a listening socket counts as a ping). Where nodes share the
    /// store, each node tells the store which subscriptions it saw alive (pinged, or with a
    /// socket here), and one node, the leader, ends them, once for all.
    async fn prune(&mut self) {
        let now = Instant::now();
        let now_secs = now_secs();
        let mut seen = Vec::new();
        let mut ended = Vec::new();
        let shared = self.store.shared();
        let reported = std::mem::replace(&mut self.seen_reported, now);
        for (id, (_, subscription)) in self.subscriptions.iter_mut() {
            let channel = self.channels.pusher_channel(*id, subscription.privacy);
            if self.driver.is_occupied(&channel) {
                subscription.last_seen = now;
            }
            if shared && subscription.last_seen >= reported {
                seen.push(*id);
            }
            if subscription.expires_at().is_some_and(|exp| exp <= now_secs) {
                ended.push((*id, Ending::Announced(EndReason::TokenExpired)));
            } else if now.duration_since(subscription.last_seen) > self.threshold {
                ended.push((*id, Ending::Stale));
            }
        }
        self.store.touch(&self.id, seen);
        if ended.is_empty() || !self.store.is_leader() {
            return;
        }
        let stale: Vec<Uuid> = ended
            .iter()
            .filter(|(_, ending)| matches!(ending, Ending::Stale))
            .map(|(id, _)| *id)
            .collect();
        match self.store.last_seen(&self.id, &stale).await {
            Ok(last_seen) => {
                let now_ms = now_ms();
                for (id, seen_ms) in stale.iter().zip(last_seen) {
                    let age = Duration::from_millis(now_ms.saturating_sub(seen_ms));
                    if age <= self.threshold
                        && let Some((_, subscription)) = self.subscriptions.get_mut(id)
                    {
                        subscription.last_seen = now.checked_sub(age).unwrap_or(now);
                        ended.retain(|(ended, _)| ended != id);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(collection = %self.name, %error, "cannot tell which subscriptions other nodes saw; pruning later");
                return;
            }
        }
        for (id, ending) in ended {
            if let Err(error) = self.end(id, ending).await {
                tracing::warn!(collection = %self.name, subscription = %id, %error, "pruning stopped; it goes on at the next round");
                return;
            }
        }
    }

    /// Applies a change from the store's log, unless this actor has it already (it made it,
    /// or loaded it). Every node applies the same changes in the same order.
    fn replicate(&mut self, entry: LogEntry) {
        let seq = entry.seq;
        if seq <= self.loaded_seq {
            return;
        }
        self.replaying = !entry.mine;
        match entry.change {
            // Applied only from the log, on every node: once each.
            Replica::PutRecord { json, .. } => match serde_json::from_str::<RecordMap>(&json) {
                Ok(record) => {
                    let id = records::record_key(&record).to_owned();
                    self.record_seqs.insert(id, seq);
                    let except = entry.except.as_deref().and_then(SocketId::parse);
                    self.apply(records::RecordChange::Put(record), except, None);
                }
                Err(error) => {
                    tracing::error!(collection = %self.name, %error, "a replicated record does not parse")
                }
            },
            Replica::DeleteRecord { record_id, .. } => {
                self.record_seqs.remove(&record_id);
                let except = entry.except.as_deref().and_then(SocketId::parse);
                self.apply(records::RecordChange::Delete(record_id), except, None);
            }
            // A new subscription (decided on the rules alone): filed from the log only.
            Replica::PutSubscription(id, doc) if entry.version == 0 => {
                self.file_replicated(id, doc);
            }
            _ if entry.version <= self.version => {}
            _ => self.apply_replica(entry),
        }
        self.replaying = false;
        self.applied_watch.send_replace(seq);
    }

    /// A subscription's row from the log, new or with a fresher token: filed (counted against
    /// its client when new).
    fn file_replicated(&mut self, id: Uuid, doc: SubscriptionDoc) {
        let existing = self.unfile(id);
        let Some(mut subscription) = self.restore(id, doc, true) else {
            tracing::warn!(collection = %self.name, subscription = %id, "a replicated subscription does not load");
            return;
        };
        // A fresher token: the subscription goes on where it was.
        if let (Some(live), Some(Live { cursor, .. })) = (
            &mut subscription.live,
            existing
                .as_ref()
                .and_then(|existing| existing.live.as_ref()),
        ) {
            live.cursor = cursor.clone();
        }
        let client = subscription.client.clone();
        let (privacy, live) = (subscription.privacy, subscription.live.is_some());
        if self.file(id, subscription).is_ok() {
            if existing.is_none() {
                if let Some(client) = &client {
                    self.subscription_quota.add(client);
                }
                self.opened(id, privacy, live);
                if let Some((identity, query)) = self.snapshot_queries.remove(&id) {
                    if self.snapshots.len() >= UNCLAIMED_SNAPSHOTS {
                        self.snapshots.clear();
                    }
                    let snapshot = self.list(&identity, &query).map(|page| page.records);
                    self.snapshots.insert(id, snapshot);
                }
            }
        } else {
            // Decided on the rules every node has, so this node differs (its configuration,
            // or its version): the row stays for the nodes that can serve it.
            tracing::error!(collection = %self.name, subscription = %id, "a replicated subscription cannot be served by this node (is its configuration, e.g. VELO_ENCRYPTION_MASTER_KEY, the same as the other nodes'?)");
            if let Some(existing) = existing {
                let ending = Ending::Announced(EndReason::RuleChanged);
                self.retired(id, &existing, ending, None);
            }
        }
    }

    fn apply_replica(&mut self, entry: LogEntry) {
        if entry.version != self.version + 1 {
            tracing::error!(collection = %self.name, at = self.version, got = entry.version, "a change of this collection is missing from the log");
        }
        let except = entry.except.as_deref().and_then(SocketId::parse);
        match entry.change {
            Replica::PutSubscription(id, doc) => self.file_replicated(id, doc),
            Replica::DeleteSubscription { id, removal, .. } => {
                if let Some(subscription) = self.unfile(id) {
                    self.retired(id, &subscription, Ending::from_removal(removal), None);
                }
            }
            // Applied by `replicate`.
            Replica::PutRecord { .. } | Replica::DeleteRecord { .. } => {}
            Replica::Publish { action, json, .. } => {
                match (
                    Action::parse(&action),
                    serde_json::from_str::<RecordMap>(&json),
                ) {
                    (Some(action), Ok(record)) => {
                        self.broadcast(action, &record, except, None);
                    }
                    _ => {
                        tracing::error!(collection = %self.name, "a replicated publish does not parse")
                    }
                }
            }
            // The registry's: they reach the actor as `SetRules` and `Close`.
            Replica::PutCollection(_) | Replica::DeleteCollection(_) => {}
        }
        self.advance(entry.version);
    }

    /// A stored row back to a subscription; `None` when it cannot be (logged). A live one's
    /// cursor starts now when it is `new`; else its place is lost to this node.
    fn restore(&self, id: Uuid, doc: SubscriptionDoc, new: bool) -> Option<Subscription> {
        let guest_address = doc
            .guest_address
            .as_deref()
            .and_then(|address| address.parse::<IpAddr>().ok());
        let identity = match doc.owner {
            OwnerDoc::Guest => Identity::Guest,
            OwnerDoc::Superuser => Identity::Superuser,
            OwnerDoc::User {
                id,
                claims_json,
                expires_at,
            } => {
                let claims: Map<String, Value> = serde_json::from_str(&claims_json).ok()?;
                Identity::User(Arc::new(User {
                    id,
                    claims,
                    expires_at,
                }))
            }
        };
        let client = match &identity {
            Identity::User(user) => Some(ClientKey::User(user.id.clone())),
            // Rows written before addresses were kept count against nobody.
            Identity::Guest => guest_address.map(ClientKey::Address),
            Identity::Superuser => None,
        };
        Some(Subscription {
            identity,
            client,
            filter_text: doc.filter,
            socket_id: doc.socket_id,
            live: doc.live.map(|live| Live {
                cursor: if new {
                    Cursor::new(id)
                } else {
                    Cursor::lost(id)
                },
                leave_events: live.leave_events,
            }),
            privacy: match (doc.is_public, doc.encrypted) {
                (true, _) => ChannelPrivacy::Public,
                (false, false) => ChannelPrivacy::Private,
                (false, true) => ChannelPrivacy::Encrypted,
            },
            created_at_ms: doc.created_at_ms,
            last_seen: Instant::now(),
        })
    }
}

/// How often stale subscriptions are looked for: a quarter of the threshold, within bounds.
fn prune_period(threshold: Duration) -> Duration {
    (threshold / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

impl Actor for CollectionActor {
    type Msg = CollectionMsg;
    type State = CollectionState;
    type Arguments = CollectionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CollectionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let records = records::load(&args.id, args.records);
        let history = Arc::new(History::new(args.history));
        let mut state = CollectionState {
            checks: records::RuleChecks::compile(&args.filters, &args.rules),
            deliveries: spawn_delivery(
                args.store.clone(),
                args.driver.clone(),
                history.clone(),
                args.hooks.clone(),
            ),
            history,
            snapshot_queries: HashMap::new(),
            snapshots: HashMap::new(),
            id: args.id,
            name: args.name,
            texts: args.texts,
            rules: args.rules,
            encrypted: args.encrypted,
            master_key: args.master_key,
            store: args.store,
            filters: args.filters,
            hooks: args.hooks,
            driver: args.driver,
            channels: args.channels,
            threshold: args.threshold,
            subscription_quota: args.subscription_quota,
            event_names: args.event_names,
            index: SubscriptionIndex::new(),
            leave_index: SubscriptionIndex::new(),
            subscriptions: HashMap::new(),
            live_subscriptions: 0,
            compiled: Default::default(),
            records,
            pruner: None,
            closed: false,
            version: args.version,
            version_watch: args.version_watch,
            directory: args.directory,
            rules_version: args.rules_version,
            loaded_seq: args.seq,
            record_seqs: args.record_seqs,
            applied_watch: args.applied_watch,
            replaying: false,
            seen_reported: Instant::now(),
        };
        state.version_watch.send_replace(state.version);
        for (id, doc) in args.subscriptions {
            if doc.live.is_some() && !state.store.shared() {
                // Its history was in memory: its client recovers nothing, and takes a new
                // snapshot (its recovery finds no subscription).
                tracing::info!(collection = %state.name, subscription = %id, "a live subscription does not outlive a restart: ended");
                state.store.forget(&state.id, id)?;
                continue;
            }
            let restored = state.restore(id, doc, false);
            // Also ends those the current list rule no longer admits, as a rule change would
            // (no socket can hold them yet).
            let client = restored
                .as_ref()
                .and_then(|restored| restored.client.clone());
            let filed = restored.map(|subscription| state.file(id, subscription));
            if matches!(filed, Some(Ok(()))) {
                if let Some(client) = &client {
                    state.subscription_quota.add(client);
                }
            } else if state.store.shared() {
                // Other nodes may serve it (this one may differ in configuration or version).
                tracing::error!(collection = %state.name, subscription = %id, "a stored subscription this node cannot serve (is its configuration the same as the other nodes'?)");
            } else {
                tracing::warn!(collection = %state.name, subscription = %id, "dropping a stored subscription that no longer loads");
                state.store.forget(&state.id, id)?;
            }
        }
        state.pruner =
            Some(myself.send_interval(prune_period(state.threshold), || CollectionMsg::Prune));
        Ok(state)
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(pruner) = state.pruner.take() {
            pruner.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CollectionMsg::Subscribe {
                identity,
                client,
                request,
                reply,
            } => {
                let subscribed = state.subscribe(identity, client, request).await;
                let _ = reply.send(subscribed);
            }
            CollectionMsg::Ping {
                id,
                identity,
                reply,
            } => {
                let _ = reply.send(state.ping(id, identity).await);
            }
            CollectionMsg::Unsubscribe {
                id,
                identity,
                reply,
            } => {
                let _ = reply.send(state.unsubscribe(id, &identity).await);
            }
            CollectionMsg::Update {
                name,
                patch,
                encrypted,
                reply,
            } => {
                let _ = reply.send(state.update(name, patch, encrypted).await);
            }
            CollectionMsg::SetRules {
                doc,
                rules,
                version,
                mine,
            } => state.replicate_rules(*doc, *rules, version, mine),
            CollectionMsg::Close {
                epoch,
                replicated,
                reply,
            } => {
                state.closed = true;
                state.replaying = replicated;
                let ids: Vec<Uuid> = state.subscriptions.keys().copied().collect();
                for id in ids {
                    if let Some(subscription) = state.unfile(id) {
                        let ending = Ending::Announced(EndReason::CollectionDeleted);
                        state.retired(id, &subscription, ending, epoch);
                    }
                }
                state.records.clear();
                state.replaying = false;
                let _ = reply.send(());
            }
            CollectionMsg::Replicate(entry) => state.replicate(*entry),
            CollectionMsg::ListRecords {
                identity,
                query,
                reply,
            } => {
                let _ = reply.send(state.list(&identity, &query));
            }
            CollectionMsg::ViewRecord {
                identity,
                id,
                reply,
            } => {
                let _ = reply.send(state.view(&identity, &id));
            }
            CollectionMsg::DecideSubscribe {
                identity,
                client,
                request,
                reply,
            } => {
                let _ = reply.send(state.decide_subscribe(identity, client, request));
            }
            CollectionMsg::TakeSnapshot { id, reply } => {
                state.snapshot_queries.remove(&id);
                let _ = reply.send(state.snapshots.remove(&id));
            }
            CollectionMsg::Recover {
                id,
                identity,
                reply,
            } => {
                let _ = reply.send(state.recover(id, &identity));
            }
            CollectionMsg::Decide {
                identity,
                write,
                reply,
            } => {
                let _ = reply.send(state.decide_alone(&identity, write));
            }
            CollectionMsg::Write {
                identity,
                write,
                except,
                reply,
            } => {
                let _ = reply.send(state.write(&identity, write, except).await);
            }
            CollectionMsg::Publish {
                action,
                record,
                except,
                reply,
            } => {
                let _ = reply.send(state.publish(action, &record, except).await);
            }
            CollectionMsg::Prune => state.prune().await,
            CollectionMsg::CountSubscriptions(reply) => {
                let _ = reply.send(state.subscriptions.len());
            }
        }
        state.deliveries.flush().await;
        Ok(())
    }
}
