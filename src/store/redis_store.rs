//! The store nodes share in cluster mode: Redis, the source of truth for collections,
//! subscriptions and records, and the change log every node tails.
//!
//! Keys (all under the deployment's prefix):
//! * `collections` (hash: id -> row), `names` (hash: name -> id);
//! * per collection `c:{id}:v` (its [`Version`]), `c:{id}:rules` (the version its rules were
//!   set at), `c:{id}:name`, `c:{id}:subs` (hash: UUID -> row), `c:{id}:seen` (hash: UUID ->
//!   when a node last saw it alive), `c:{id}:records` (hash: record id -> JSON) and
//!   `c:{id}:rseq` (hash: record id -> its last change);
//! * `seq` (the number of the last change) and `log`, a stream whose entry `{seq}-0` is that
//!   change ([`LogEntry`]);
//! * `lease`: which node runs the jobs one node runs for all (pruning).
//!
//! A change is one Lua script: it checks that what the change was decided on is unchanged
//! (else `CONFLICT`): the collection's version for subscriptions, rules and publishes; for a
//! record write only the record's last change (`c:{id}:rseq`) and the rules' version
//! (`c:{id}:rules`), so that writes to different records never conflict. It then appends the
//! change to the log, changes the rows and moves the versions on, in one step. Every node
//! applies the log in order ([`Storage::replicas`]): record writes only from there, the node
//! that made them included; a node's own other changes at once, skipped by version when the
//! log brings them. The connection table is mirrored in memory, so channel authorization needs
//! no round trip (and works while Redis is away).
//!
//! A write is acknowledged once Redis has it; Redis's own persistence decides the rest
//! (`appendonly yes` with `appendfsync always` loses nothing acknowledged).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Script, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{
    BoxFuture, COLLECTION_FORMAT, Change, Committed, Epoch, Expect, Loaded, LogEntry, RecordDoc,
    Replicas, SUBSCRIPTION_FORMAT, Storage, StoreError, SubscriptionDoc, Version,
    decode_collection, decode_subscription, encode_version,
};
use crate::cluster::ClusterSettings;

/// Log entries kept in Redis (approximately: trimmed with `MAXLEN ~`). A node that falls
/// further behind than this cannot catch up from the log and restarts from the rows.
const LOG_LENGTH: u64 = 1_000_000;
/// Entries read from the log at a time, and how long one read waits for new ones.
const LOG_BATCH: usize = 1024;
const LOG_BLOCK: Duration = Duration::from_secs(1);
/// Changes read from the log and not yet taken by the engine.
const REPLICA_QUEUE: usize = 4096;
/// Between reconnection attempts of the log reader, doubling up to the last.
const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(5));

/// The commit script: `ARGV` = prefix, op, collection id, expectation (`at`, `rules`,
/// `record`, `absent`, `any`), expected version (the collection's, or its rules'), log
/// entry, log length, the record's expected last change (`record`: `""` for none), then the
/// op's own arguments.
const COMMIT: &str = r#"
local p, op, cid, expect, expected, entry, maxlen, last =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local c = p .. 'c:' .. cid
local ops = {put_collection = 1, delete_collection = 1, put_subscription = 1,
  delete_subscription = 1, put_record = 1, delete_record = 1, publish = 1}
if not ops[op] then return redis.error_reply('unknown op ' .. op) end
local exists = redis.call('HEXISTS', p .. 'collections', cid) == 1
if expect == 'absent' then
  if exists then return {'CONFLICT', tonumber(redis.call('GET', c .. ':v') or '0')} end
elseif not exists then
  return {'GONE'}
elseif expect == 'at' then
  local version = tonumber(redis.call('GET', c .. ':v') or '0')
  if version ~= expected then return {'CONFLICT', version} end
elseif expect == 'rules' then
  if tonumber(redis.call('GET', c .. ':rules') or '0') ~= expected then
    return {'CONFLICT', tonumber(redis.call('GET', p .. 'seq') or '0')}
  end
elseif expect == 'record' then
  local rules = tonumber(redis.call('GET', c .. ':rules') or '0')
  local changed = redis.call('HGET', c .. ':rseq', ARGV[9]) or ''
  if rules ~= expected or changed ~= last then
    return {'CONFLICT', tonumber(redis.call('GET', p .. 'seq') or '0')}
  end
end
local old_name = redis.call('GET', c .. ':name')
if op == 'put_collection' and old_name ~= ARGV[9]
    and redis.call('HEXISTS', p .. 'names', ARGV[9]) == 1 then
  return {'NAME'}
end
-- The log entry first: should it fail, nothing is written (scripts do not roll back).
local seq = tonumber(redis.call('GET', p .. 'seq') or '0') + 1
redis.call('XADD', p .. 'log', 'MAXLEN', '~', maxlen, seq .. '-0', 'e', entry)
redis.call('SET', p .. 'seq', seq)
if op == 'put_collection' then
  local name, row = ARGV[9], ARGV[10]
  if old_name ~= name then
    if old_name then redis.call('HDEL', p .. 'names', old_name) end
    redis.call('HSET', p .. 'names', name, cid)
    redis.call('SET', c .. ':name', name)
  end
  redis.call('HSET', p .. 'collections', cid, row)
  redis.call('SET', c .. ':rules', redis.call('INCR', c .. ':v'))
elseif op == 'delete_collection' then
  if old_name then redis.call('HDEL', p .. 'names', old_name) end
  redis.call('HDEL', p .. 'collections', cid)
  redis.call('UNLINK', c .. ':v', c .. ':rules', c .. ':name', c .. ':subs', c .. ':seen',
    c .. ':records', c .. ':rseq')
elseif op == 'put_subscription' then
  redis.call('HSET', c .. ':subs', ARGV[9], ARGV[10])
  if expect ~= 'rules' then redis.call('INCR', c .. ':v') end
elseif op == 'delete_subscription' then
  redis.call('HDEL', c .. ':subs', ARGV[9])
  redis.call('HDEL', c .. ':seen', ARGV[9])
  redis.call('INCR', c .. ':v')
elseif op == 'put_record' then
  redis.call('HSET', c .. ':records', ARGV[9], ARGV[10])
  redis.call('HSET', c .. ':rseq', ARGV[9], seq)
elseif op == 'delete_record' then
  redis.call('HDEL', c .. ':records', ARGV[9])
  redis.call('HDEL', c .. ':rseq', ARGV[9])
elseif op == 'publish' then
  -- nothing stored: the log carries it to every node
  redis.call('INCR', c .. ':v')
end
return {'OK', seq}
"#;

/// Takes the lease, or renews it when this node holds it: `ARGV` = key, node, milliseconds.
const LEASE: &str = r#"
if redis.call('GET', ARGV[1]) == ARGV[2] then
  return redis.call('PEXPIRE', ARGV[1], ARGV[3])
end
if redis.call('SET', ARGV[1], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"#;

/// The connection table in memory, with the version each collection's rows are at (a change
/// older than what the mirror holds is skipped, as the engine skips it).
#[derive(Default)]
struct Mirror {
    rows: HashMap<Uuid, SubscriptionDoc>,
    versions: HashMap<String, Version>,
}

impl Mirror {
    fn apply(&mut self, entry: &LogEntry) {
        use super::Replica;
        let collection = entry.change.collection_id();
        if let Replica::DeleteCollection(id) = &entry.change {
            self.rows.retain(|_, doc| doc.collection_id != *id);
            self.versions.remove(id);
            return;
        }
        // A new subscription (made on the rules alone, version 0) is always put: nothing
        // about it can be older than what the mirror holds (it must exist before anything
        // else is done to it).
        if let (Replica::PutSubscription(id, doc), 0) = (&entry.change, entry.version) {
            self.rows.insert(*id, doc.clone());
            return;
        }
        let applied = self.versions.get(collection).copied().unwrap_or(0);
        if entry.version <= applied {
            return;
        }
        self.versions.insert(collection.to_owned(), entry.version);
        match &entry.change {
            Replica::PutSubscription(id, doc) => {
                self.rows.insert(*id, doc.clone());
            }
            Replica::DeleteSubscription { id, .. } => {
                self.rows.remove(id);
            }
            Replica::PutCollection(_)
            | Replica::DeleteCollection(_)
            | Replica::PutRecord { .. }
            | Replica::DeleteRecord { .. }
            | Replica::Publish { .. } => {}
        }
    }
}

pub struct RedisStore {
    settings: ClusterSettings,
    commands: ConnectionManager,
    script: Script,
    mirror: Arc<RwLock<Mirror>>,
    /// What was loaded at start-up, until the engine takes it.
    loaded: std::sync::Mutex<Option<Vec<Loaded>>>,
    replicas: std::sync::Mutex<Option<Replicas>>,
    leader: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl RedisStore {
    /// Connects, loads every collection as of one log position, and starts reading the log
    /// from there, and the lease.
    pub async fn connect(settings: &ClusterSettings) -> Result<Self, StoreError> {
        let mut commands = settings.connect().await.map_err(unavailable)?;
        let (position, loaded) = snapshot(settings, &mut commands).await?;
        let mut mirror = Mirror::default();
        for collection in &loaded {
            mirror
                .versions
                .insert(collection.collection.id.clone(), collection.version);
            for (id, doc) in &collection.subscriptions {
                mirror.rows.insert(*id, doc.clone());
            }
        }
        let mirror = Arc::new(RwLock::new(mirror));
        let (sender, replicas) = mpsc::channel(REPLICA_QUEUE);
        let leader = Arc::new(AtomicBool::new(false));
        let tasks = vec![
            tokio::spawn(tail(settings.clone(), position, mirror.clone(), sender)),
            tokio::spawn(hold_lease(
                settings.clone(),
                commands.clone(),
                leader.clone(),
            )),
        ];
        tracing::info!(node = %settings.node_id, position, collections = loaded.len(), "cluster store loaded");
        Ok(Self {
            settings: settings.clone(),
            commands,
            script: Script::new(COMMIT),
            mirror,
            loaded: std::sync::Mutex::new(Some(loaded)),
            replicas: std::sync::Mutex::new(Some(Replicas {
                after: position,
                changes: replicas,
            })),
            leader,
            tasks,
        })
    }

    fn mirror(&self) -> std::sync::RwLockWriteGuard<'_, Mirror> {
        self.mirror
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The op and its own arguments, for the commit script.
fn op_args(change: &Change<'_>) -> (&'static str, Vec<Vec<u8>>) {
    match change {
        Change::PutCollection(doc) => (
            "put_collection",
            vec![
                doc.name.as_bytes().to_vec(),
                encode_version(*doc, COLLECTION_FORMAT),
            ],
        ),
        Change::DeleteCollection(_) => ("delete_collection", Vec::new()),
        Change::PutSubscription(id, doc) => (
            "put_subscription",
            vec![
                id.to_string().into_bytes(),
                encode_version(*doc, SUBSCRIPTION_FORMAT),
            ],
        ),
        Change::DeleteSubscription { id, .. } => {
            ("delete_subscription", vec![id.to_string().into_bytes()])
        }
        Change::PutRecord { record_id, doc, .. } => (
            "put_record",
            vec![record_id.as_bytes().to_vec(), doc.json.as_bytes().to_vec()],
        ),
        Change::DeleteRecord { record_id, .. } => {
            ("delete_record", vec![record_id.as_bytes().to_vec()])
        }
        Change::Publish { .. } => ("publish", Vec::new()),
    }
}

fn encode_entry(entry: &LogEntry) -> Vec<u8> {
    bincode::serde::encode_to_vec(entry, bincode::config::standard())
        .expect("log entries of plain strings and numbers always encode")
}

fn decode_entry(bytes: &[u8]) -> Result<LogEntry, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(entry, _)| entry)
        .map_err(|error| StoreError::Corrupt(format!("log entry: {error}")))
}

impl Storage for RedisStore {
    fn commit<'a>(
        &'a self,
        expect: Expect,
        change: Change<'a>,
        except: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Committed, StoreError>> {
        Box::pin(async move {
            let (kind, expected, version, last) = match expect {
                Expect::At(version) => ("at", version, version + 1, String::new()),
                Expect::Record { seq, rules } => (
                    "record",
                    rules,
                    0,
                    seq.map(|seq| seq.to_string()).unwrap_or_default(),
                ),
                Expect::Rules(rules) => ("rules", rules, 0, String::new()),
                Expect::Absent => ("absent", 0, 1, String::new()),
                Expect::Any => ("any", 0, 0, String::new()),
            };
            let entry = LogEntry {
                seq: 0,
                version,
                origin: self.settings.node_id.clone(),
                except: except.map(str::to_owned),
                change: change.owned(),
                mine: true,
            };
            let (op, args) = op_args(&change);
            let mut invocation = self.script.prepare_invoke();
            invocation
                .arg(&self.settings.prefix)
                .arg(op)
                .arg(change.collection_id())
                .arg(kind)
                .arg(expected)
                .arg(encode_entry(&entry))
                .arg(LOG_LENGTH)
                .arg(last);
            for arg in args {
                invocation.arg(arg);
            }
            let mut commands = self.commands.clone();
            let reply: Vec<Value> = tokio::time::timeout(
                self.settings.timeout,
                invocation.invoke_async(&mut commands),
            )
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "no answer within {} ms",
                    self.settings.timeout.as_millis()
                ))
            })?
            .map_err(unavailable)?;
            let text = |value: Option<&Value>| -> Option<String> {
                value.and_then(|value| redis::from_redis_value_ref::<String>(value).ok())
            };
            let number = |value: Option<&Value>| -> Option<u64> {
                value.and_then(|value| redis::from_redis_value_ref::<u64>(value).ok())
            };
            match text(reply.first()).as_deref() {
                Some("OK") => {
                    let epoch = number(reply.get(1))
                        .ok_or_else(|| StoreError::Corrupt("commit reply".into()))?;
                    let entry = LogEntry {
                        seq: epoch,
                        ..entry
                    };
                    self.mirror().apply(&entry);
                    Ok(Committed { epoch, version })
                }
                Some("CONFLICT") => Err(StoreError::Conflict {
                    head: number(reply.get(1)).unwrap_or(0),
                }),
                Some("GONE") => Err(StoreError::Gone),
                Some("NAME") => Err(StoreError::NameTaken),
                _ => Err(StoreError::Corrupt(format!(
                    "unexpected commit reply {reply:?}"
                ))),
            }
        })
    }

    fn forget(&self, collection_id: &str, subscription: Uuid) -> Result<(), StoreError> {
        self.mirror().rows.remove(&subscription);
        let key = self.settings.key(&format!("c:{collection_id}:subs"));
        let mut commands = self.commands.clone();
        let timeout = self.settings.timeout;
        tokio::spawn(async move {
            let removed = tokio::time::timeout(
                timeout,
                commands.hdel::<_, _, ()>(key, subscription.to_string()),
            )
            .await;
            if !matches!(removed, Ok(Ok(()))) {
                tracing::debug!(%subscription, "could not remove a forgotten subscription's row; it is forgotten again when loaded");
            }
        });
        Ok(())
    }

    /// Acknowledged is durable as far as Redis's persistence goes.
    fn sync(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn flush_soon(&self) {}

    fn durable(&self, _epoch: Epoch) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    fn load(&self) -> Result<Vec<Loaded>, StoreError> {
        Ok(self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .unwrap_or_default())
    }

    fn subscription(&self, id: Uuid) -> Result<Option<SubscriptionDoc>, StoreError> {
        Ok(self
            .mirror
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .rows
            .get(&id)
            .cloned())
    }

    fn replicas(&self) -> Option<Replicas> {
        self.replicas
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn head(&self) -> BoxFuture<'_, Result<Epoch, StoreError>> {
        Box::pin(async move {
            let mut commands = self.commands.clone();
            let head: Option<u64> = tokio::time::timeout(
                self.settings.timeout,
                commands.get(self.settings.key("seq")),
            )
            .await
            .map_err(|_| StoreError::Unavailable("no answer in time".into()))?
            .map_err(unavailable)?;
            Ok(head.unwrap_or(0))
        })
    }

    fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    fn shared(&self) -> bool {
        true
    }

    fn touch(&self, collection_id: &str, subscriptions: Vec<Uuid>) {
        let key = self.settings.key(&format!("c:{collection_id}:seen"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
            .to_string();
        let mut commands = self.commands.clone();
        let timeout = self.settings.timeout;
        tokio::spawn(async move {
            let fields: Vec<(String, &str)> = subscriptions
                .iter()
                .map(|id| (id.to_string(), now.as_str()))
                .collect();
            let touched =
                tokio::time::timeout(timeout, commands.hset_multiple::<_, _, _, ()>(key, &fields))
                    .await;
            if !matches!(touched, Ok(Ok(()))) {
                tracing::debug!(
                    "could not note which subscriptions were seen; the leader may think them stale later"
                );
            }
        });
    }

    fn last_seen<'a>(
        &'a self,
        collection_id: &'a str,
        subscriptions: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<u64>, StoreError>> {
        Box::pin(async move {
            let key = self.settings.key(&format!("c:{collection_id}:seen"));
            let fields: Vec<String> = subscriptions.iter().map(Uuid::to_string).collect();
            let mut commands = self.commands.clone();
            let seen: Vec<Option<u64>> = tokio::time::timeout(
                self.settings.timeout,
                redis::cmd("HMGET")
                    .arg(key)
                    .arg(fields)
                    .query_async(&mut commands),
            )
            .await
            .map_err(|_| StoreError::Unavailable("no answer in time".into()))?
            .map_err(unavailable)?;
            Ok(seen.into_iter().map(Option::unwrap_or_default).collect())
        })
    }
}

/// A collection's row, version, rules' version, the log's position, subscription rows,
/// records and their last changes, read in one transaction.
type CollectionRows = (
    Option<Vec<u8>>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    HashMap<String, Vec<u8>>,
    HashMap<String, String>,
    HashMap<String, u64>,
);

/// Every collection as of one log position: the position is read first, then each
/// collection in one transaction (its row, version, subscriptions and records agree), so a
/// collection may be ahead of the position, never behind; replaying the log from the
/// position skips what a collection's version says it holds.
async fn snapshot(
    settings: &ClusterSettings,
    commands: &mut ConnectionManager,
) -> Result<(u64, Vec<Loaded>), StoreError> {
    let position: Option<u64> = commands
        .get(settings.key("seq"))
        .await
        .map_err(unavailable)?;
    let ids: Vec<String> = commands
        .hkeys(settings.key("collections"))
        .await
        .map_err(unavailable)?;
    let mut loaded = Vec::with_capacity(ids.len());
    for id in ids {
        let c = settings.key(&format!("c:{id}"));
        let (row, version, rules, seq, subscriptions, records, record_seqs): CollectionRows =
            redis::pipe()
                .atomic()
                .hget(settings.key("collections"), &id)
                .get(format!("{c}:v"))
                .get(format!("{c}:rules"))
                .get(settings.key("seq"))
                .hgetall(format!("{c}:subs"))
                .hgetall(format!("{c}:records"))
                .hgetall(format!("{c}:rseq"))
                .query_async(commands)
                .await
                .map_err(unavailable)?;
        // Deleted since the ids were read.
        let Some(row) = row else { continue };
        let mut rows = Vec::with_capacity(subscriptions.len());
        for (key, value) in subscriptions {
            match (key.parse::<Uuid>(), decode_subscription(&value)) {
                (Ok(id), Ok(doc)) => rows.push((id, doc)),
                _ => {
                    tracing::warn!(collection = %id, subscription = %key, "skipping an unreadable subscription row")
                }
            }
        }
        loaded.push(Loaded {
            collection: decode_collection(&row)?,
            version: version.unwrap_or(0),
            rules_version: rules.unwrap_or(0),
            seq: seq.unwrap_or(0),
            record_seqs,
            subscriptions: rows,
            records: records
                .into_values()
                .map(|json| RecordDoc { json })
                .collect(),
        });
    }
    Ok((position.unwrap_or(0), loaded))
}

/// Reads the log from `position` on, in order, and hands each change to the engine; a gap
/// (entries trimmed before this node read them) cannot be replayed, and stops the node.
async fn tail(
    settings: ClusterSettings,
    mut position: u64,
    mirror: Arc<RwLock<Mirror>>,
    replicas: mpsc::Sender<(Epoch, LogEntry)>,
) {
    let key = settings.key("log");
    let mut backoff = RECONNECT_BACKOFF.0;
    loop {
        let mut connection = match log_connection(&settings).await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot reach Redis to read the change log");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
                continue;
            }
        };
        // A Redis that came back with fewer changes than this node applied lost some (it ran
        // without `appendfsync always`, or was emptied): this node's memory no longer agrees
        // with it, and only loading afresh can make them agree.
        match connection.get::<_, Option<u64>>(settings.key("seq")).await {
            Ok(head) if head.unwrap_or(0) < position => {
                tracing::error!(
                    position,
                    redis_head = head.unwrap_or(0),
                    "Redis has fewer changes than this node applied (it lost data): this node stops, and restarted it loads everything afresh"
                );
                std::process::exit(75);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot read the change log's head; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
                continue;
            }
        }
        loop {
            let options = StreamReadOptions::default()
                .count(LOG_BATCH)
                .block(LOG_BLOCK.as_millis() as usize);
            let read: Result<Option<StreamReadReply>, _> = connection
                .xread_options(&[&key], &[format!("{position}-0")], &options)
                .await;
            let reply = match read {
                Ok(reply) => reply,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "reading the change log failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
                    break;
                }
            };
            backoff = RECONNECT_BACKOFF.0;
            let Some(reply) = reply else { continue };
            for stream in reply.keys {
                for entry in stream.ids {
                    let seq = entry
                        .id
                        .split_once('-')
                        .and_then(|(seq, _)| seq.parse::<u64>().ok());
                    if seq != Some(position + 1) {
                        tracing::error!(
                            expected = position + 1,
                            found = %entry.id,
                            "the change log was trimmed past this node's position: it cannot catch up from the log, and stops (restarted, it loads everything afresh)"
                        );
                        std::process::exit(75);
                    }
                    position += 1;
                    let decoded = entry
                        .map
                        .get("e")
                        .and_then(|value| redis::from_redis_value_ref::<Vec<u8>>(value).ok())
                        .ok_or_else(|| StoreError::Corrupt("log entry without a body".into()))
                        .and_then(|bytes| decode_entry(&bytes));
                    match decoded {
                        Ok(mut change) => {
                            change.mine = change.origin == settings.node_id;
                            change.seq = position;
                            mirror
                                .write()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .apply(&change);
                            if replicas.send((position, change)).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            tracing::error!(position, %error, "an unreadable change log entry (written by another version?): this node stops rather than miss a change");
                            std::process::exit(75);
                        }
                    }
                }
            }
        }
    }
}

/// A connection of its own for the log's blocking reads (a shared one would wait behind them).
async fn log_connection(
    settings: &ClusterSettings,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(LOG_BLOCK + settings.timeout));
    settings
        .client()?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Takes and renews the lease every heartbeat; holding it lasts three heartbeats, so a dead
/// holder's lease passes to another node within that.
async fn hold_lease(
    settings: ClusterSettings,
    mut commands: ConnectionManager,
    leader: Arc<AtomicBool>,
) {
    let script = Script::new(LEASE);
    let key = settings.key("lease");
    let hold_ms = (settings.heartbeat * 3).as_millis() as u64;
    let mut ticks = tokio::time::interval(settings.heartbeat);
    loop {
        ticks.tick().await;
        let mut invocation = script.prepare_invoke();
        invocation.arg(&key).arg(&settings.node_id).arg(hold_ms);
        let held = tokio::time::timeout(
            settings.timeout,
            invocation.invoke_async::<i64>(&mut commands),
        )
        .await;
        let now = matches!(held, Ok(Ok(1)));
        if leader.swap(now, Ordering::Relaxed) != now {
            tracing::info!(node = %settings.node_id, leader = now, "lease for cluster-wide jobs");
        }
    }
}
