//! Persistence: collections, the connection table (subscriptions) and records, as versioned
//! bincode documents (JSON held as text: bincode cannot encode `serde_json::Value`), behind
//! one interface, [`Storage`]. [`sled_store`] is the store of one node, on its disk; cluster
//! mode's store sits beside it.
//!
//! Every write is one [`Change`] through [`Store::commit`], numbered ([`Epoch`]) and, within
//! its collection, versioned ([`Version`]): a change is made only if what it was decided on
//! is unchanged ([`Expect`]: the collection's version, or for a record write the record and
//! the rules), so that nodes sharing a store never apply two changes decided on the same
//! state. [`Store::sync`] makes what was committed durable,
//! and [`Store::durable`] waits until one change is: events (a record change, or `ended`) are
//! delivered only then, so no client ever sees something a crash could take back.
//!
//! A store shared by several nodes also hands each node the changes the others made, in
//! commit order ([`Store::replicas`]), for the engine to apply as if made here.
//!
//! This module decides nothing: it stores what the engine hands it.

pub mod redis_store;
pub mod sled_store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// First byte of every stored value; bump it when a document's layout changes.
const FORMAT_VERSION: u8 = 1;
/// Collection rows: version 2 added `encrypted`; version 1 rows are still read (a build older
/// than version 2 cannot read version 2 rows: downgrade only with a backup).
const COLLECTION_FORMAT: u8 = 2;
const COLLECTION_FORMAT_V1: u8 = 1;
/// Subscription rows: version 2 added `guest_address`, version 3 `encrypted`, version 4 `live`;
/// older rows are still read (an older build cannot read newer rows: downgrading loses the
/// subscriptions).
const SUBSCRIPTION_FORMAT: u8 = 4;
const SUBSCRIPTION_FORMAT_V3: u8 = 3;
const SUBSCRIPTION_FORMAT_V2: u8 = 2;
const SUBSCRIPTION_FORMAT_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage failure: {0}")]
    Sled(#[from] sled::Error),
    /// The collection changed since the change was decided: decide again at `head`.
    #[error("the collection changed meanwhile (now at version {head})")]
    Conflict { head: Version },
    /// A collection with this name exists already.
    #[error("a collection with this name exists already")]
    NameTaken,
    /// The collection was deleted meanwhile.
    #[error("the collection no longer exists")]
    Gone,
    /// The shared store did not answer in time, or refused.
    #[error("the cluster's Redis is unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("flushing to disk failed: {0}")]
    Flush(String),
    #[error("the storage flusher has stopped")]
    FlusherGone,
}

/// A collection as stored: rule texts, parsed again when loaded. `None` is `SUPERUSER_ONLY`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CollectionDoc {
    pub id: String,
    pub name: String,
    pub list_rule: Option<String>,
    pub view_rule: Option<String>,
    pub create_rule: Option<String>,
    pub update_rule: Option<String>,
    pub delete_rule: Option<String>,
    /// Non-public subscriptions' events go encrypted on `private-encrypted-` channels.
    pub encrypted: bool,
}

/// A collection row of format version 1.
#[derive(Deserialize)]
struct CollectionDocV1 {
    id: String,
    name: String,
    list_rule: Option<String>,
    view_rule: Option<String>,
    create_rule: Option<String>,
    update_rule: Option<String>,
    delete_rule: Option<String>,
}

impl From<CollectionDocV1> for CollectionDoc {
    fn from(v1: CollectionDocV1) -> Self {
        CollectionDoc {
            id: v1.id,
            name: v1.name,
            list_rule: v1.list_rule,
            view_rule: v1.view_rule,
            create_rule: v1.create_rule,
            update_rule: v1.update_rule,
            delete_rule: v1.delete_rule,
            encrypted: false,
        }
    }
}

/// A collection row of any version this build reads.
fn decode_collection(bytes: &[u8]) -> Result<CollectionDoc, StoreError> {
    match bytes.first() {
        Some(&COLLECTION_FORMAT_V1) => {
            decode_version::<CollectionDocV1>(bytes, COLLECTION_FORMAT_V1).map(CollectionDoc::from)
        }
        _ => decode_version(bytes, COLLECTION_FORMAT),
    }
}

/// Who made a subscription, as stored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum OwnerDoc {
    Guest,
    Superuser,
    User {
        id: String,
        /// The token's claims as JSON text (bincode cannot encode `serde_json::Value`).
        claims_json: String,
        expires_at: Option<u64>,
    },
}

/// One row of the connection table.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SubscriptionDoc {
    pub collection_id: String,
    pub owner: OwnerDoc,
    pub socket_id: Option<String>,
    pub filter: String,
    pub is_public: bool,
    pub created_at_ms: u64,
    pub last_seen_at_ms: u64,
    /// A guest subscriber's address (its subscriptions count against it).
    pub guest_address: Option<String>,
    /// A non-public subscription delivered on its `private-encrypted-` channel.
    pub encrypted: bool,
    /// A live subscription (DESIGN.md §13): its events are numbered, held and kept.
    pub live: Option<LiveDoc>,
}

/// What a live subscription asked for besides numbered events.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveDoc {
    /// `left` when an update takes a record out of its view.
    pub leave_events: bool,
}

/// A subscription row of format version 3.
#[derive(Deserialize)]
struct SubscriptionDocV3 {
    collection_id: String,
    owner: OwnerDoc,
    socket_id: Option<String>,
    filter: String,
    is_public: bool,
    created_at_ms: u64,
    last_seen_at_ms: u64,
    guest_address: Option<String>,
    encrypted: bool,
}

impl From<SubscriptionDocV3> for SubscriptionDoc {
    fn from(v3: SubscriptionDocV3) -> Self {
        SubscriptionDoc {
            collection_id: v3.collection_id,
            owner: v3.owner,
            socket_id: v3.socket_id,
            filter: v3.filter,
            is_public: v3.is_public,
            created_at_ms: v3.created_at_ms,
            last_seen_at_ms: v3.last_seen_at_ms,
            guest_address: v3.guest_address,
            encrypted: v3.encrypted,
            live: None,
        }
    }
}

/// A subscription row of format version 2.
#[derive(Deserialize)]
struct SubscriptionDocV2 {
    collection_id: String,
    owner: OwnerDoc,
    socket_id: Option<String>,
    filter: String,
    is_public: bool,
    created_at_ms: u64,
    last_seen_at_ms: u64,
    guest_address: Option<String>,
}

impl From<SubscriptionDocV2> for SubscriptionDoc {
    fn from(v2: SubscriptionDocV2) -> Self {
        SubscriptionDoc::from(SubscriptionDocV3 {
            collection_id: v2.collection_id,
            owner: v2.owner,
            socket_id: v2.socket_id,
            filter: v2.filter,
            is_public: v2.is_public,
            created_at_ms: v2.created_at_ms,
            last_seen_at_ms: v2.last_seen_at_ms,
            guest_address: v2.guest_address,
            encrypted: false,
        })
    }
}

/// A subscription row of format version 1.
#[derive(Deserialize)]
struct SubscriptionDocV1 {
    collection_id: String,
    owner: OwnerDoc,
    socket_id: Option<String>,
    filter: String,
    is_public: bool,
    created_at_ms: u64,
    last_seen_at_ms: u64,
}

impl From<SubscriptionDocV1> for SubscriptionDoc {
    fn from(v1: SubscriptionDocV1) -> Self {
        SubscriptionDoc::from(SubscriptionDocV2 {
            collection_id: v1.collection_id,
            owner: v1.owner,
            socket_id: v1.socket_id,
            filter: v1.filter,
            is_public: v1.is_public,
            created_at_ms: v1.created_at_ms,
            last_seen_at_ms: v1.last_seen_at_ms,
            guest_address: None,
        })
    }
}

/// A subscription row of any version this build reads.
fn decode_subscription(bytes: &[u8]) -> Result<SubscriptionDoc, StoreError> {
    match bytes.first() {
        Some(&SUBSCRIPTION_FORMAT_V1) => {
            decode_version::<SubscriptionDocV1>(bytes, SUBSCRIPTION_FORMAT_V1)
                .map(SubscriptionDoc::from)
        }
        Some(&SUBSCRIPTION_FORMAT_V2) => {
            decode_version::<SubscriptionDocV2>(bytes, SUBSCRIPTION_FORMAT_V2)
                .map(SubscriptionDoc::from)
        }
        Some(&SUBSCRIPTION_FORMAT_V3) => {
            decode_version::<SubscriptionDocV3>(bytes, SUBSCRIPTION_FORMAT_V3)
                .map(SubscriptionDoc::from)
        }
        _ => decode_version(bytes, SUBSCRIPTION_FORMAT),
    }
}

/// The number of a write that an event waits for (records, and subscription removals); writes
/// are numbered in the order they reached sled.
pub type Epoch = u64;

/// A collection's version: how many changes it has had. Every change to a collection (its
/// rules, a subscription, a record) moves it on by one.
pub type Version = u64;

/// A record as stored: its flat JSON object as text.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RecordDoc {
    pub json: String,
}

/// Why a subscription's row is removed, as every node announces it to the sockets it has on
/// the subscription's channel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Unsubscribed, or stale (no socket can be listening): nothing is announced.
    Quiet,
    TokenExpired,
    RuleChanged,
}

/// One change to what is stored, as [`Store::commit`] takes it.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    PutCollection(&'a CollectionDoc),
    /// The collection, with its subscriptions and records.
    DeleteCollection(&'a str),
    PutSubscription(Uuid, &'a SubscriptionDoc),
    DeleteSubscription {
        collection_id: &'a str,
        id: Uuid,
        removal: Removal,
    },
    PutRecord {
        collection_id: &'a str,
        record_id: &'a str,
        doc: &'a RecordDoc,
    },
    DeleteRecord {
        collection_id: &'a str,
        record_id: &'a str,
    },
    /// A change made outside (`POST /api/realtime/publish`): nothing is stored, but every
    /// node delivers it, in its turn among the collection's changes. Only a shared store is
    /// handed these.
    Publish {
        collection_id: &'a str,
        action: &'a str,
        json: &'a str,
    },
}

impl Change<'_> {
    /// The collection the change is to.
    pub fn collection_id(&self) -> &str {
        match self {
            Change::PutCollection(doc) => &doc.id,
            Change::DeleteCollection(id) => id,
            Change::PutSubscription(_, doc) => &doc.collection_id,
            Change::DeleteSubscription { collection_id, .. }
            | Change::PutRecord { collection_id, .. }
            | Change::DeleteRecord { collection_id, .. }
            | Change::Publish { collection_id, .. } => collection_id,
        }
    }

    fn owned(&self) -> Replica {
        match *self {
            Change::PutCollection(doc) => Replica::PutCollection(doc.clone()),
            Change::DeleteCollection(id) => Replica::DeleteCollection(id.to_owned()),
            Change::PutSubscription(id, doc) => Replica::PutSubscription(id, doc.clone()),
            Change::DeleteSubscription {
                collection_id,
                id,
                removal,
            } => Replica::DeleteSubscription {
                collection_id: collection_id.to_owned(),
                id,
                removal,
            },
            Change::PutRecord {
                collection_id, doc, ..
            } => Replica::PutRecord {
                collection_id: collection_id.to_owned(),
                json: doc.json.clone(),
            },
            Change::DeleteRecord {
                collection_id,
                record_id,
            } => Replica::DeleteRecord {
                collection_id: collection_id.to_owned(),
                record_id: record_id.to_owned(),
            },
            Change::Publish {
                collection_id,
                action,
                json,
            } => Replica::Publish {
                collection_id: collection_id.to_owned(),
                action: action.to_owned(),
                json: json.to_owned(),
            },
        }
    }
}

/// What a change must find to be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The collection at this version (the state the change was decided on).
    At(Version),
    /// For a record write, decided on the record alone: the record as last changed by the
    /// change numbered `seq` (`None`: no such record), under the rules set at `rules`. Record
    /// writes do not move the collection's version: writes to different records never
    /// conflict. Where nodes share the store, such a change is applied, on every node
    /// including the one that made it, only from the log, in its order.
    Record { seq: Option<Epoch>, rules: Version },
    /// For a new subscription, decided on the rules alone (set at this version): like a
    /// record write, it does not move the collection's version, and where nodes share the
    /// store it is applied only from the log.
    Rules(Version),
    /// No collection with this id, nor one with its name (a new collection).
    Absent,
    /// Anything (deleting a collection).
    Any,
}

/// A change made: its number, and the version it moved its collection to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub epoch: Epoch,
    pub version: Version,
}

/// A change another node made (or this one: the engine skips what it applied already), as
/// the shared store hands it on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Replica {
    PutCollection(CollectionDoc),
    DeleteCollection(String),
    PutSubscription(Uuid, SubscriptionDoc),
    DeleteSubscription {
        collection_id: String,
        id: Uuid,
        removal: Removal,
    },
    /// The record's JSON object as text.
    PutRecord {
        collection_id: String,
        json: String,
    },
    DeleteRecord {
        collection_id: String,
        record_id: String,
    },
    /// A change made outside, to deliver: its action and record (JSON text).
    Publish {
        collection_id: String,
        action: String,
        json: String,
    },
}

impl Replica {
    pub fn collection_id(&self) -> &str {
        match self {
            Replica::PutCollection(doc) => &doc.id,
            Replica::DeleteCollection(id) => id,
            Replica::PutSubscription(_, doc) => &doc.collection_id,
            Replica::DeleteSubscription { collection_id, .. }
            | Replica::PutRecord { collection_id, .. }
            | Replica::DeleteRecord { collection_id, .. }
            | Replica::Publish { collection_id, .. } => collection_id,
        }
    }
}

/// One entry of the change log: a change, the version it moved its collection to (0 for a
/// record write), the node that made it, and the socket the writer asked to leave out of its
/// event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// Its number in the log (its place, not stored in it).
    #[serde(skip)]
    pub seq: Epoch,
    pub version: Version,
    pub origin: String,
    pub except: Option<String>,
    pub change: Replica,
    /// Made by this node (its answer may have been lost: a commit that timed out).
    #[serde(skip)]
    pub mine: bool,
}

/// The changes made after the state [`Storage::load`] gave, numbered, in commit order.
pub struct Replicas {
    /// The number of the last change the loaded state is known to hold.
    pub after: Epoch,
    pub changes: tokio::sync::mpsc::Receiver<(Epoch, LogEntry)>,
}

/// A collection as loaded at start-up: its row, its version, its subscriptions and records.
pub struct Loaded {
    pub collection: CollectionDoc,
    pub version: Version,
    /// The version its rules were set at (what a record write is decided on).
    pub rules_version: Version,
    /// The last change of the log this state holds: later ones are applied on top.
    pub seq: Epoch,
    pub subscriptions: Vec<(Uuid, SubscriptionDoc)>,
    pub records: Vec<RecordDoc>,
    /// Where nodes share the store: each record's last change ([`Expect::Record`]).
    pub record_seqs: HashMap<String, Epoch>,
}

/// A boxed future, so that [`Storage`] can be a trait object.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a store does: the one interface the engine writes and loads through, with sled
/// ([`sled_store::SledStore`]) the store of one node and Redis ([`redis_store::RedisStore`])
/// the store nodes share.
pub trait Storage: Send + Sync {
    /// Makes one change if its collection is as `expect` says, numbered in the order changes
    /// were made; `except` (a socket id) goes with it to the nodes that deliver its event.
    fn commit<'a>(
        &'a self,
        expect: Expect,
        change: Change<'a>,
        except: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Committed, StoreError>>;
    /// Removes rows that no node holds any more (a subscription every node ended when it
    /// applied a rule change, one that no longer loads): no version, no log entry. Best
    /// effort where the store is remote (a row left over is forgotten again when loaded).
    fn forget(&self, collection_id: &str, subscription: Uuid) -> Result<(), StoreError>;
    /// Waits until every change committed before the call is durable.
    fn sync(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Asks for durability without waiting for it (for changes no request waits on).
    fn flush_soon(&self);
    /// Waits until the change numbered `epoch` is durable. The writer's request asks for that
    /// ([`Storage::sync`]); a wait that lasts asks too, so that a change whose writer went away
    /// before asking is not held back.
    fn durable(&self, epoch: Epoch) -> BoxFuture<'_, ()>;
    /// Every collection with its version, subscriptions and records: what the engine starts
    /// from.
    fn load(&self) -> Result<Vec<Loaded>, StoreError>;
    /// One row of the connection table.
    fn subscription(&self, id: Uuid) -> Result<Option<SubscriptionDoc>, StoreError>;
    /// The changes made after [`Storage::load`]'s state, by any node, in commit order, for the
    /// engine to apply (`None` for a store no other node writes). Taken once.
    fn replicas(&self) -> Option<Replicas>;
    /// The number of the last change any node made (what a node catching up must reach).
    fn head(&self) -> BoxFuture<'_, Result<Epoch, StoreError>>;
    /// Whether this node runs the jobs one node runs for all (pruning): always, alone.
    fn is_leader(&self) -> bool;
    /// Whether other nodes share this store (and take changes that store nothing, such as
    /// [`Change::Publish`], to deliver them too).
    fn shared(&self) -> bool;
    /// Notes that these subscriptions were seen alive here (pinged, or with a socket), for
    /// the leader, which prunes the stale ones (best effort; nothing where nodes are alone).
    fn touch(&self, collection_id: &str, subscriptions: Vec<Uuid>);
    /// When each subscription was last seen alive by any node, in milliseconds since the
    /// epoch (0: never, or no other node to ask).
    fn last_seen<'a>(
        &'a self,
        collection_id: &'a str,
        subscriptions: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<u64>, StoreError>>;
}

/// The handle the engine holds: cheap to clone, whatever store is behind it.
#[derive(Clone)]
pub struct Store(Arc<dyn Storage>);

impl Store {
    /// The sled store under `dir` (created if need be). Must be called inside a tokio
    /// runtime: it starts the flusher task.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Ok(Self(Arc::new(sled_store::SledStore::open(dir)?)))
    }

    /// The store shared by the nodes of a cluster, loaded from its Redis.
    pub async fn connect(settings: &crate::cluster::ClusterSettings) -> Result<Self, StoreError> {
        Ok(Self(Arc::new(
            redis_store::RedisStore::connect(settings).await?,
        )))
    }

    /// Makes one change if its collection is as `expect` says: the one way anything is
    /// written. Every change is numbered ([`Epoch`]) in the order it was made, so that what
    /// follows it (an event, an answer) can wait until it is durable.
    pub async fn commit(
        &self,
        expect: Expect,
        change: Change<'_>,
        except: Option<&str>,
    ) -> Result<Committed, StoreError> {
        self.0.commit(expect, change, except).await
    }

    /// Removes a subscription's row that no node holds any more ([`Storage::forget`]).
    pub fn forget(&self, collection_id: &str, subscription: Uuid) -> Result<(), StoreError> {
        self.0.forget(collection_id, subscription)
    }

    /// Waits until every change committed before the call is durable.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.0.sync().await
    }

    /// Asks for durability without waiting for it: for changes that no request waits on,
    /// whose events wait (through [`Store::durable`]) until they are durable.
    pub fn flush_soon(&self) {
        self.0.flush_soon()
    }

    /// Waits until the change numbered `epoch` is durable ([`Storage::durable`]).
    pub async fn durable(&self, epoch: Epoch) {
        self.0.durable(epoch).await
    }

    /// Every collection with its version, subscriptions and records.
    pub fn load(&self) -> Result<Vec<Loaded>, StoreError> {
        self.0.load()
    }

    pub fn subscription(&self, id: Uuid) -> Result<Option<SubscriptionDoc>, StoreError> {
        self.0.subscription(id)
    }

    /// The changes other nodes make, in commit order ([`Storage::replicas`]).
    pub fn replicas(&self) -> Option<Replicas> {
        self.0.replicas()
    }

    /// The number of the last change any node made.
    pub async fn head(&self) -> Result<Epoch, StoreError> {
        self.0.head().await
    }

    /// Whether this node runs the jobs one node runs for all.
    pub fn is_leader(&self) -> bool {
        self.0.is_leader()
    }

    /// Whether other nodes share this store ([`Storage::shared`]).
    pub fn shared(&self) -> bool {
        self.0.shared()
    }

    /// Notes subscriptions seen alive here ([`Storage::touch`]).
    pub fn touch(&self, collection_id: &str, subscriptions: Vec<Uuid>) {
        if !subscriptions.is_empty() {
            self.0.touch(collection_id, subscriptions)
        }
    }

    /// When each subscription was last seen alive by any node ([`Storage::last_seen`]).
    pub async fn last_seen(
        &self,
        collection_id: &str,
        subscriptions: &[Uuid],
    ) -> Result<Vec<u64>, StoreError> {
        if subscriptions.is_empty() {
            return Ok(Vec::new());
        }
        self.0.last_seen(collection_id, subscriptions).await
    }
}

fn encode<T: Serialize>(doc: &T) -> Vec<u8> {
    encode_version(doc, FORMAT_VERSION)
}

fn encode_version<T: Serialize>(doc: &T, version: u8) -> Vec<u8> {
    let mut bytes = vec![version];
    bytes.extend(
        bincode::serde::encode_to_vec(doc, bincode::config::standard())
            .expect("documents of plain strings and numbers always encode"),
    );
    bytes
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    decode_version(bytes, FORMAT_VERSION)
}

fn decode_version<T: DeserializeOwned>(bytes: &[u8], expected: u8) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&version, body)) if version == expected => {
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map(|(doc, _)| doc)
                .map_err(|error| StoreError::Corrupt(error.to_string()))
        }
        Some((version, _)) => Err(StoreError::Corrupt(format!(
            "format version {version}, this build reads {expected}"
        ))),
        None => Err(StoreError::Corrupt("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn documents_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let subscription = SubscriptionDoc {
            collection_id: "c1".into(),
            owner: OwnerDoc::User {
                id: "u1".into(),
                claims_json: r#"{"sub":"u1"}"#.into(),
                expires_at: Some(5),
            },
            socket_id: Some("1.2".into()),
            filter: "status = 'active'".into(),
            is_public: false,
            created_at_ms: 1,
            last_seen_at_ms: 2,
            guest_address: None,
            encrypted: true,
            live: Some(LiveDoc {
                leave_events: false,
            }),
        };
        let collection = CollectionDoc {
            id: "c1".into(),
            name: "posts".into(),
            list_rule: Some(String::new()),
            view_rule: None,
            create_rule: Some("@request.auth.id != ''".into()),
            update_rule: None,
            delete_rule: None,
            encrypted: true,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .commit(Expect::Absent, Change::PutCollection(&collection), None)
                .await
                .unwrap();
            store
                .commit(
                    Expect::At(1),
                    Change::PutSubscription(id, &subscription),
                    None,
                )
                .await
                .unwrap();
            store.sync().await.unwrap();
        }
        // The flusher task lets go of the database once it sees the last handle dropped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match Store::open(dir.path()) {
                Ok(store) => break store,
                Err(error) if std::time::Instant::now() > deadline => panic!("{error}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].collection, collection);
        assert_eq!(store.subscription(id).unwrap(), Some(subscription.clone()));
        assert_eq!(loaded[0].subscriptions, [(id, subscription)]);
        let removal = Change::DeleteSubscription {
            collection_id: "c1",
            id,
            removal: Removal::Quiet,
        };
        store.commit(Expect::At(2), removal, None).await.unwrap();
        assert_eq!(store.subscription(id).unwrap(), None);
        store
            .commit(Expect::Any, Change::DeleteCollection("c1"), None)
            .await
            .unwrap();
        assert!(store.load().unwrap().is_empty());
    }

    #[test]
    fn reads_version_1_subscription_rows() {
        #[derive(Serialize)]
        struct V1<'a> {
            collection_id: &'a str,
            owner: OwnerDoc,
            socket_id: Option<String>,
            filter: &'a str,
            is_public: bool,
            created_at_ms: u64,
            last_seen_at_ms: u64,
        }
        let row = encode(&V1 {
            collection_id: "c1",
            owner: OwnerDoc::Guest,
            socket_id: None,
            filter: "n > 1",
            is_public: true,
            created_at_ms: 1,
            last_seen_at_ms: 2,
        });
        let doc = decode_subscription(&row).unwrap();
        assert_eq!((doc.filter.as_str(), doc.guest_address), ("n > 1", None));
        assert!(!doc.encrypted);
        let v4 = SubscriptionDoc {
            guest_address: Some("10.0.0.1".into()),
            encrypted: true,
            live: Some(LiveDoc { leave_events: true }),
            ..doc
        };
        assert_eq!(
            decode_subscription(&encode_version(&v4, SUBSCRIPTION_FORMAT)).unwrap(),
            v4
        );
    }

    #[test]
    fn reads_version_2_subscription_rows() {
        #[derive(Serialize)]
        struct V2<'a> {
            collection_id: &'a str,
            owner: OwnerDoc,
            socket_id: Option<String>,
            filter: &'a str,
            is_public: bool,
            created_at_ms: u64,
            last_seen_at_ms: u64,
            guest_address: Option<String>,
        }
        let row = encode_version(
            &V2 {
                collection_id: "c1",
                owner: OwnerDoc::Guest,
                socket_id: None,
                filter: "n > 1",
                is_public: false,
                created_at_ms: 1,
                last_seen_at_ms: 2,
                guest_address: Some("10.0.0.1".into()),
            },
            SUBSCRIPTION_FORMAT_V2,
        );
        let doc = decode_subscription(&row).unwrap();
        assert_eq!(doc.guest_address.as_deref(), Some("10.0.0.1"));
        assert!(!doc.encrypted);
    }

    #[test]
    fn reads_version_1_collection_rows() {
        #[derive(Serialize)]
        struct V1<'a> {
            id: &'a str,
            name: &'a str,
            list_rule: Option<&'a str>,
            view_rule: Option<&'a str>,
            create_rule: Option<&'a str>,
            update_rule: Option<&'a str>,
            delete_rule: Option<&'a str>,
        }
        let row = encode(&V1 {
            id: "c1",
            name: "posts",
            list_rule: Some(""),
            view_rule: None,
            create_rule: None,
            update_rule: None,
            delete_rule: Some("@request.auth.id != ''"),
        });
        let doc = decode_collection(&row).unwrap();
        assert_eq!(doc.name, "posts");
        assert_eq!(doc.list_rule.as_deref(), Some(""));
        assert!(!doc.encrypted);
        let encrypted = CollectionDoc {
            encrypted: true,
            ..doc
        };
        assert_eq!(
            decode_collection(&encode_version(&encrypted, COLLECTION_FORMAT)).unwrap(),
            encrypted
        );
    }

    #[test]
    fn refuses_unknown_format_versions() {
        assert!(matches!(
            decode_collection(&[9, 1, 2]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_collection(&[]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
