//! The store of one node: sled, on the local disk. Collections, the connection table
//! (subscriptions) and records each have a tree; rows are the versioned documents of
//! [`super`]. Changes go to sled's in-memory trees at once and are numbered; one flusher task
//! fsyncs on behalf of every caller waiting at that moment (group commit), so concurrent
//! requests share one fsync instead of queueing for one each.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::{
    BoxFuture, COLLECTION_FORMAT, Change, Committed, Epoch, Expect, Loaded, Replicas,
    SUBSCRIPTION_FORMAT, Storage, StoreError, SubscriptionDoc, decode, decode_collection,
    decode_subscription, encode, encode_version,
};

/// sled's page cache (its default is 1 GiB). Every row is also held by the actors, so the
/// cache only serves start-up loading and point lookups of the connection table.
const SLED_CACHE_BYTES: u64 = 32 << 20;

/// How long a wait for a change's durability lasts before it asks for a flush itself.
const FLUSH_NUDGE: std::time::Duration = std::time::Duration::from_millis(100);

/// Flush requests waiting for the flusher, before a request waits to queue its own. Each
/// flush answers every request queued when it started.
const FLUSH_REQUESTS: usize = 4096;

/// The store of one node: sled trees, fsynced by a group-committing flusher task.
pub struct SledStore {
    collections: sled::Tree,
    subscriptions: sled::Tree,
    records: sled::Tree,
    flusher: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    /// The last epoch handed out.
    written: Arc<AtomicU64>,
    /// The last epoch known to be on disk.
    durable: watch::Receiver<Epoch>,
}

impl SledStore {
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

    fn record_key(collection_id: &str, record_id: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(collection_id.len() + 1 + record_id.len());
        key.extend_from_slice(collection_id.as_bytes());
        key.push(b'/');
        key.extend_from_slice(record_id.as_bytes());
        key
    }
}

impl Storage for SledStore {
    /// Waits until every write made before the call is on disk (fsynced).
    fn sync(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (done, wait) = oneshot::channel();
            self.flusher
                .send(done)
                .await
                .map_err(|_| StoreError::FlusherGone)?;
            wait.await
                .map_err(|_| StoreError::FlusherGone)?
                .map_err(StoreError::Flush)
        })
    }

    /// Asks for a flush without waiting for it: for writes that no request waits on, whose
    /// events wait (through [`Store::durable`]) until they are on disk. Requests made
    /// meanwhile share the flush.
    fn flush_soon(&self) {
        let (done, _) = oneshot::channel();
        // A full queue holds requests enough: a flush is coming and covers this write.
        let _ = self.flusher.try_send(done);
    }

    /// Waits until the write numbered `epoch` is on disk (it asks for no flush itself: the
    /// writer's request does, through [`Store::sync`]).
    fn durable(&self, epoch: Epoch) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut durable = self.durable.clone();
            if *durable.borrow() >= epoch {
                return;
            }
            let waited = durable.wait_for(|done| *done >= epoch);
            if tokio::time::timeout(FLUSH_NUDGE, waited).await.is_err() {
                // The writer's request normally asks for the flush; one that went away before
                // asking (a client gone mid-write) must not hold what waits on its change.
                self.flush_soon();
                let _ = durable.wait_for(|done| *done >= epoch).await;
            }
        })
    }

    /// Makes one change: the one way anything is written. Every change is numbered
    /// ([`Epoch`]) in the order it reached sled, so that what follows it (an event, an
    /// answer) can wait until it is durable. Nobody else writes this store: the collection is
    /// always as expected, and its actor keeps count of its version.
    fn commit<'a>(
        &'a self,
        expect: Expect,
        change: Change<'a>,
        _except: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Committed, StoreError>> {
        let committed = self.write(change).map(|epoch| Committed {
            epoch,
            version: match expect {
                Expect::At(version) => version + 1,
                Expect::Absent => 1,
                Expect::Record { .. } | Expect::Rules(_) | Expect::Any => 0,
            },
        });
        Box::pin(std::future::ready(committed))
    }

    fn forget(&self, _collection_id: &str, subscription: Uuid) -> Result<(), StoreError> {
        self.subscriptions.remove(subscription.as_bytes())?;
        self.written.fetch_add(1, Ordering::SeqCst);
        self.flush_soon();
        Ok(())
    }

    fn load(&self) -> Result<Vec<Loaded>, StoreError> {
        let mut subscriptions: HashMap<String, Vec<(Uuid, SubscriptionDoc)>> = HashMap::new();
        for entry in self.subscriptions.iter() {
            let (key, value) = entry?;
            let id = Uuid::from_slice(&key)
                .map_err(|error| StoreError::Corrupt(format!("subscription key: {error}")))?;
            let doc = decode_subscription(&value)?;
            subscriptions
                .entry(doc.collection_id.clone())
                .or_default()
                .push((id, doc));
        }
        let mut loaded = Vec::new();
        for value in self.collections.iter().values() {
            let collection = decode_collection(&value?)?;
            let records = self
                .records
                .scan_prefix(Self::record_key(&collection.id, ""))
                .values()
                .map(|value| decode(&value?))
                .collect::<Result<_, StoreError>>()?;
            loaded.push(Loaded {
                subscriptions: subscriptions.remove(&collection.id).unwrap_or_default(),
                records,
                version: 0,
                rules_version: 0,
                seq: 0,
                record_seqs: HashMap::new(),
                collection,
            });
        }
        // Rows of collections that are gone (a crash between the collection's removal and
        // theirs).
        for (_, orphans) in subscriptions {
            for (id, doc) in orphans {
                tracing::warn!(subscription = %id, collection = %doc.collection_id, "dropping a subscription of a collection that no longer exists");
                self.forget(&doc.collection_id, id)?;
            }
        }
        Ok(loaded)
    }

    fn subscription(&self, id: Uuid) -> Result<Option<SubscriptionDoc>, StoreError> {
        self.subscriptions
            .get(id.as_bytes())?
            .map(|value| decode_subscription(&value))
            .transpose()
    }

    fn replicas(&self) -> Option<Replicas> {
        None
    }

    fn head(&self) -> BoxFuture<'_, Result<Epoch, StoreError>> {
        Box::pin(std::future::ready(Ok(self.written.load(Ordering::SeqCst))))
    }

    fn is_leader(&self) -> bool {
        true
    }

    fn shared(&self) -> bool {
        false
    }

    fn touch(&self, _collection_id: &str, _subscriptions: Vec<Uuid>) {}

    fn last_seen<'a>(
        &'a self,
        _collection_id: &'a str,
        subscriptions: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<u64>, StoreError>> {
        Box::pin(std::future::ready(Ok(vec![0; subscriptions.len()])))
    }
}

impl SledStore {
    /// Writes one change to sled's trees; returns its epoch.
    fn write(&self, change: Change<'_>) -> Result<Epoch, StoreError> {
        match change {
            Change::PutCollection(doc) => {
                self.collections
                    .insert(doc.id.as_bytes(), encode_version(doc, COLLECTION_FORMAT))?;
            }
            Change::DeleteCollection(id) => {
                for entry in self.subscriptions.iter() {
                    let (key, value) = entry?;
                    if decode_subscription(&value).is_ok_and(|doc| doc.collection_id == id) {
                        self.subscriptions.remove(key)?;
                    }
                }
                for key in self.records.scan_prefix(Self::record_key(id, "")).keys() {
                    self.records.remove(key?)?;
                }
                self.collections.remove(id.as_bytes())?;
            }
            Change::PutSubscription(id, doc) => {
                self.subscriptions
                    .insert(id.as_bytes(), encode_version(doc, SUBSCRIPTION_FORMAT))?;
            }
            Change::DeleteSubscription { id, .. } => {
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
            // Nothing to store (and nobody else to tell).
            Change::Publish { .. } => return Ok(self.written.load(Ordering::SeqCst)),
        }
        Ok(self.written.fetch_add(1, Ordering::SeqCst) + 1)
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
