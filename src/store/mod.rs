//! Persistence in sled: collections, the connection table (subscriptions) and records, each in
//! a tree of its own, as versioned bincode documents (JSON held as text: bincode cannot encode
//! `serde_json::Value`).
//!
//! Every write is one [`Change`] through [`Store::commit`] (the interface a replicated store
//! implements too): it goes to sled's in-memory tree at once and is numbered ([`Epoch`]);
//! [`Store::sync`] makes what was committed durable. Syncs are group-committed: one flusher
//! task fsyncs on behalf of every caller waiting at that moment, so concurrent requests share
//! one fsync instead of queueing for one each. [`Store::durable`] waits until a change is on
//! disk: events (a record change, or `ended`) are delivered only then, so no client ever sees
//! something a crash could take back.
//!
//! This module decides nothing: it stores what the engine hands it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

/// sled's page cache (its default is 1 GiB). Every row is also held by the actors, so the
/// cache only serves start-up loading and point lookups of the connection table.
const SLED_CACHE_BYTES: u64 = 32 << 20;

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

/// Flush requests waiting for the flusher, before a request waits to queue its own. Each
/// flush answers every request queued when it started.
const FLUSH_REQUESTS: usize = 4096;

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

#[derive(Clone)]
pub struct Store {
    collections: sled::Tree,
    subscriptions: sled::Tree,
    records: sled::Tree,
    flusher: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    /// The last epoch handed out.
    written: Arc<AtomicU64>,
    /// The last epoch known to be on disk.
    durable: watch::Receiver<Epoch>,
}

impl Store {
    /// Opens (or creates) the database under `dir`. Must be called inside a tokio runtime: it
    /// starts the flusher task.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(SLED_CACHE_BYTES)
            .open()?;
        let collections = db.open_tree("collections")?;
        let subscriptions = db.open_tree("subscriptions")?;
        let records = db.open_tree("records")?;
        let (flusher, requests) = mpsc::channel(FLUSH_REQUESTS);
        let written = Arc::new(AtomicU64::new(0));
        let (durable_tx, durable) = watch::channel(0);
        tokio::spawn(flush_loop(
            db.clone(),
            requests,
            written.clone(),
            durable_tx,
        ));
        Ok(Self {
            collections,
            subscriptions,
            records,
            written,
            durable,
            flusher,
        })
    }

    /// Waits until every write made before the call is on disk (fsynced).
    pub async fn sync(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.flusher
            .send(done)
            .await
            .map_err(|_| StoreError::FlusherGone)?;
        wait.await
            .map_err(|_| StoreError::FlusherGone)?
            .map_err(StoreError::Flush)
    }

    /// Asks for a flush without waiting for it: for writes that no request waits on, whose
    /// events wait (through [`Store::durable`]) until they are on disk. Requests made
    /// meanwhile share the flush.
    pub fn flush_soon(&self) {
        let (done, _) = oneshot::channel();
        // A full queue holds requests enough: a flush is coming and covers this write.
        let _ = self.flusher.try_send(done);
    }

    /// Waits until the write numbered `epoch` is on disk (it asks for no flush itself: the
    /// writer's request does, through [`Store::sync`]).
    pub async fn durable(&self, epoch: Epoch) {
        let mut durable = self.durable.clone();
        let _ = durable.wait_for(|done| *done >= epoch).await;
    }

    fn record_key(collection_id: &str, record_id: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(collection_id.len() + 1 + record_id.len());
        key.extend_from_slice(collection_id.as_bytes());
        key.push(b'/');
        key.extend_from_slice(record_id.as_bytes());
        key
    }

    /// Makes one change: the one way anything is written. Every change is numbered
    /// ([`Epoch`]) in the order it reached sled, so that what follows it (an event, an
    /// answer) can wait until it is durable.
    pub fn commit(&self, change: Change<'_>) -> Result<Epoch, StoreError> {
        match change {
            Change::PutCollection(doc) => {
                self.collections
                    .insert(doc.id.as_bytes(), encode_version(doc, COLLECTION_FORMAT))?;
            }
            Change::DeleteCollection(id) => {
                self.collections.remove(id.as_bytes())?;
            }
            Change::PutSubscription(id, doc) => {
                self.subscriptions
                    .insert(id.as_bytes(), encode_version(doc, SUBSCRIPTION_FORMAT))?;
            }
            Change::DeleteSubscription(id) => {
                self.subscriptions.remove(id.as_bytes())?;
            }
            Change::PutRecord {
                collection_id,
                record_id,
                doc,
            } => {
                self.records
                    .insert(Self::record_key(collection_id, record_id), encode(doc))?;
            }
            Change::DeleteRecord {
                collection_id,
                record_id,
            } => {
                self.records
                    .remove(Self::record_key(collection_id, record_id))?;
            }
            Change::DeleteRecords(collection_id) => {
                for key in self
                    .records
                    .scan_prefix(Self::record_key(collection_id, ""))
                    .keys()
                {
                    self.records.remove(key?)?;
                }
            }
        }
        Ok(self.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Every record of a collection.
    pub fn records(&self, collection_id: &str) -> Result<Vec<RecordDoc>, StoreError> {
        self.records
            .scan_prefix(Self::record_key(collection_id, ""))
            .values()
            .map(|value| decode(&value?))
            .collect()
    }

    pub fn collections(&self) -> Result<Vec<CollectionDoc>, StoreError> {
        self.collections
            .iter()
            .values()
            .map(|value| decode_collection(&value?))
            .collect()
    }

    pub fn subscriptions(&self) -> Result<Vec<(Uuid, SubscriptionDoc)>, StoreError> {
        self.subscriptions
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                let id = Uuid::from_slice(&key)
                    .map_err(|error| StoreError::Corrupt(format!("subscription key: {error}")))?;
                Ok((id, decode_subscription(&value)?))
            })
            .collect()
    }

    pub fn subscription(&self, id: Uuid) -> Result<Option<SubscriptionDoc>, StoreError> {
        self.subscriptions
            .get(id.as_bytes())?
            .map(|value| decode_subscription(&value))
            .transpose()
    }
}

/// Fsyncs once for every batch of waiters: those that arrive during a flush join the next one
/// (their writes may postdate the flush in progress).
async fn flush_loop(
    db: sled::Db,
    mut requests: mpsc::Receiver<oneshot::Sender<Result<(), String>>>,
    written: Arc<AtomicU64>,
    durable: watch::Sender<Epoch>,
) {
    let mut waiting = Vec::new();
    while let Some(first) = requests.recv().await {
        waiting.push(first);
        while let Ok(next) = requests.try_recv() {
            waiting.push(next);
        }
        // Every write numbered up to here is in sled before this flush starts.
        let covered = written.load(Ordering::SeqCst);
        let db = db.clone();
        let outcome = match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if outcome.is_ok() {
            durable.send_if_modified(|done| {
                let advanced = covered > *done;
                *done = (*done).max(covered);
                advanced
            });
        }
        for waiter in waiting.drain(..) {
            let _ = waiter.send(outcome.clone());
        }
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
