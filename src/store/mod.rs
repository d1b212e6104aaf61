//! Persistence: collections, the connection table (subscriptions) and records, as versioned
//! bincode documents (JSON held as text: bincode cannot encode `serde_json::Value`), behind
//! one interface, [`Storage`]. [`sled_store`] is the store of one node, on its disk; cluster
//! mode's store sits beside it.
//!
//! Every write is one [`Change`] through [`Store::commit`], numbered ([`Epoch`]);
//! [`Store::sync`] makes what was committed durable, and [`Store::durable`] waits until one
//! change is: events (a record change, or `ended`) are delivered only then, so no client ever
//! sees something a crash could take back.
//!
//! This module decides nothing: it stores what the engine hands it.

pub mod sled_store;

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
/// Subscription rows: version 2 added `guest_address`, version 3 `encrypted`; older rows are
/// still read (an older build cannot read newer rows: downgrading loses the subscriptions).
const SUBSCRIPTION_FORMAT: u8 = 3;
const SUBSCRIPTION_FORMAT_V2: u8 = 2;
const SUBSCRIPTION_FORMAT_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage failure: {0}")]
    Sled(#[from] sled::Error),
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
        SubscriptionDoc {
            collection_id: v2.collection_id,
            owner: v2.owner,
            socket_id: v2.socket_id,
            filter: v2.filter,
            is_public: v2.is_public,
            created_at_ms: v2.created_at_ms,
            last_seen_at_ms: v2.last_seen_at_ms,
            guest_address: v2.guest_address,
            encrypted: false,
        }
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
        _ => decode_version(bytes, SUBSCRIPTION_FORMAT),
    }
}

/// The number of a write that an event waits for (records, and subscription removals); writes
/// are numbered in the order they reached sled.
pub type Epoch = u64;

/// A record as stored: its flat JSON object as text.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RecordDoc {
    pub json: String,
}

/// One change to what is stored, as [`Store::commit`] takes it.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    PutCollection(&'a CollectionDoc),
    DeleteCollection(&'a str),
    PutSubscription(Uuid, &'a SubscriptionDoc),
    DeleteSubscription(Uuid),
    PutRecord {
        collection_id: &'a str,
        record_id: &'a str,
        doc: &'a RecordDoc,
    },
    DeleteRecord {
        collection_id: &'a str,
        record_id: &'a str,
    },
    /// Every record of a collection.
    DeleteRecords(&'a str),
}

/// A boxed future, so that [`Storage`] can be a trait object.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a store does: the one interface the engine writes and loads through, with sled
/// ([`sled_store::SledStore`]) the implementation of one node.
pub trait Storage: Send + Sync {
    /// Makes one change, numbered in the order changes were made.
    fn commit(&self, change: Change<'_>) -> Result<Epoch, StoreError>;
    /// Waits until every change committed before the call is durable.
    fn sync(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Asks for durability without waiting for it (for changes no request waits on).
    fn flush_soon(&self);
    /// Waits until the change numbered `epoch` is durable. The writer's request asks for that
    /// ([`Storage::sync`]); a wait that lasts asks too, so that a change whose writer went away
    /// before asking is not held back.
    fn durable(&self, epoch: Epoch) -> BoxFuture<'_, ()>;
    /// Every record of a collection.
    fn records(&self, collection_id: &str) -> Result<Vec<RecordDoc>, StoreError>;
    fn collections(&self) -> Result<Vec<CollectionDoc>, StoreError>;
    fn subscriptions(&self) -> Result<Vec<(Uuid, SubscriptionDoc)>, StoreError>;
    fn subscription(&self, id: Uuid) -> Result<Option<SubscriptionDoc>, StoreError>;
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

    /// Makes one change: the one way anything is written. Every change is numbered
    /// ([`Epoch`]) in the order it was made, so that what follows it (an event, an answer) can
    /// wait until it is durable.
    pub fn commit(&self, change: Change<'_>) -> Result<Epoch, StoreError> {
        self.0.commit(change)
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

    /// Every record of a collection.
    pub fn records(&self, collection_id: &str) -> Result<Vec<RecordDoc>, StoreError> {
        self.0.records(collection_id)
    }

    pub fn collections(&self) -> Result<Vec<CollectionDoc>, StoreError> {
        self.0.collections()
    }

    pub fn subscriptions(&self) -> Result<Vec<(Uuid, SubscriptionDoc)>, StoreError> {
        self.0.subscriptions()
    }

    pub fn subscription(&self, id: Uuid) -> Result<Option<SubscriptionDoc>, StoreError> {
        self.0.subscription(id)
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
            store.commit(Change::PutCollection(&collection)).unwrap();
            store
                .commit(Change::PutSubscription(id, &subscription))
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
        assert_eq!(store.collections().unwrap(), [collection]);
        assert_eq!(store.subscription(id).unwrap(), Some(subscription.clone()));
        assert_eq!(store.subscriptions().unwrap(), [(id, subscription)]);
        store.commit(Change::DeleteSubscription(id)).unwrap();
        assert_eq!(store.subscription(id).unwrap(), None);
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
        let v3 = SubscriptionDoc {
            guest_address: Some("10.0.0.1".into()),
            encrypted: true,
            ..doc
        };
        assert_eq!(
            decode_subscription(&encode_version(&v3, SUBSCRIPTION_FORMAT)).unwrap(),
            v3
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
