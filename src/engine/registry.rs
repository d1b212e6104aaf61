//! The registry actor: creates, renames and deletes collections, one at a time (those made
//! here, and those another node made, from the store's log), and keeps the [`Directory`]
//! every request reads to find a collection's actor without a message. It starts one actor
//! per collection at start-up, handing each its version and its rows.

use super::live::HistoryLimits;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use super::collection::{CollectionActor, CollectionArgs, CollectionMsg};
use super::events::EventNames;
use super::names::random_id;
use super::{
    ChannelNames, CollectionInfo, CollectionName, CollectionSeed, EngineError, RuleTexts, Rules,
    RulesPatch, call,
};
use crate::filter::FilterEngine;
use crate::hooks::Hooks;
use crate::limits::{ClientKey, Quota};
use crate::pusher::Driver;
use crate::store::{
    Change, CollectionDoc, Expect, Loaded, LogEntry, Replica, Store, StoreError, Version,
};

/// A collection and the actor that owns it.
#[derive(Clone)]
pub struct CollectionHandle {
    pub info: CollectionInfo,
    pub actor: ActorRef<CollectionMsg>,
    /// The collection's version as its actor has it: a change that conflicted is decided
    /// again once the actor is past the version the store reported.
    pub version: watch::Receiver<Version>,
    /// The last change of the log its actor applied (where nodes share the store): a record
    /// write is answered once its actor has applied it.
    pub applied: watch::Receiver<crate::store::Epoch>,
}

/// Collection names and ids -> their actors: read by every request, written only by the
/// registry actor (so two changes never race; a read sees the state before or after one).
#[derive(Default)]
pub struct Directory {
    entries: std::sync::RwLock<Entries>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<String, CollectionHandle>,
    /// Name -> id.
    names: HashMap<String, String>,
}

impl Directory {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A collection by id or name.
    pub fn find(&self, name_or_id: &str) -> Option<CollectionHandle> {
        let entries = self.read();
        entries
            .by_id
            .get(name_or_id)
            .or_else(|| {
                entries
                    .names
                    .get(name_or_id)
                    .and_then(|id| entries.by_id.get(id))
            })
            .cloned()
    }

    /// A collection's actor, by id (no copy of its entry).
    pub fn actor(&self, id: &str) -> Option<ActorRef<CollectionMsg>> {
        self.read().by_id.get(id).map(|handle| handle.actor.clone())
    }

    /// Every collection, by name.
    pub fn handles(&self) -> Vec<CollectionHandle> {
        let mut all: Vec<CollectionHandle> = self.read().by_id.values().cloned().collect();
        all.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        all
    }

    fn count(&self) -> usize {
        self.read().by_id.len()
    }

    fn has_name(&self, name: &str) -> bool {
        self.read().names.contains_key(name)
    }

    /// Adds a collection, or replaces it (its name may have changed).
    fn put(&self, handle: CollectionHandle) {
        let mut entries = self.write();
        if let Some(old) = entries.by_id.get(&handle.info.id) {
            let old_name = old.info.name.clone();
            // Another collection may have its old name already (renamed elsewhere).
            if entries.names.get(&old_name) == Some(&handle.info.id) {
                entries.names.remove(&old_name);
            }
        }
        entries
            .names
            .insert(handle.info.name.clone(), handle.info.id.clone());
        entries.by_id.insert(handle.info.id.clone(), handle);
    }

    /// A collection's new name and rules (its actor's, once applied).
    pub(super) fn set_info(&self, info: CollectionInfo) {
        let mut entries = self.write();
        let Some(handle) = entries.by_id.get(&info.id) else {
            return;
        };
        let old_name = handle.info.name.clone();
        if entries.names.get(&old_name) == Some(&info.id) {
            entries.names.remove(&old_name);
        }
        entries.names.insert(info.name.clone(), info.id.clone());
        if let Some(handle) = entries.by_id.get_mut(&info.id) {
            handle.info = info;
        }
    }

    fn remove(&self, id: &str) {
        let mut entries = self.write();
        if let Some(old) = entries.by_id.remove(id)
            && entries.names.get(&old.info.name).map(String::as_str) == Some(id)
        {
            entries.names.remove(&old.info.name);
        }
    }
}

pub enum RegistryMsg {
    Create {
        name: CollectionName,
        rules: RuleTexts,
        encrypted: bool,
        reply: RpcReplyPort<Result<CollectionInfo, EngineError>>,
    },
    Update {
        name_or_id: String,
        name: Option<CollectionName>,
        rules: RulesPatch,
        /// `None` keeps it.
        encrypted: Option<bool>,
        reply: RpcReplyPort<Result<CollectionInfo, EngineError>>,
    },
    Delete {
        name_or_id: String,
        reply: RpcReplyPort<Result<(), EngineError>>,
    },
    /// A collection made, changed or deleted, from the store's log (perhaps by this node).
    Replicate {
        entry: Box<LogEntry>,
        reply: RpcReplyPort<()>,
    },
}

pub struct RegistryActor;

pub struct RegistryArgs {
    pub store: Store,
    pub filters: Arc<FilterEngine>,
    pub hooks: Arc<Hooks>,
    pub driver: Arc<Driver>,
    pub channels: ChannelNames,
    pub threshold: Duration,
    /// Live subscriptions per client, shared by every collection.
    pub subscription_quota: Arc<Quota<ClientKey>>,
    pub event_names: EventNames,
    /// How much of its live events each collection keeps.
    pub history: HistoryLimits,
    /// What encrypted channels' keys derive from; `None`: no collection may be encrypted.
    pub master_key: Option<[u8; 32]>,
    pub seeds: Vec<CollectionSeed>,
    /// The collections as stored.
    pub loaded: Vec<Loaded>,
    pub directory: Arc<Directory>,
}

pub struct RegistryState {
    store: Store,
    filters: Arc<FilterEngine>,
    hooks: Arc<Hooks>,
    driver: Arc<Driver>,
    channels: ChannelNames,
    threshold: Duration,
    subscription_quota: Arc<Quota<ClientKey>>,
    event_names: EventNames,
    history: HistoryLimits,
    master_key: Option<[u8; 32]>,
    directory: Arc<Directory>,
}

pub(super) fn doc(info: &CollectionInfo) -> CollectionDoc {
    CollectionDoc {
        id: info.id.clone(),
        name: info.name.clone(),
        list_rule: info.rules.list.clone(),
        view_rule: info.rules.view.clone(),
        create_rule: info.rules.create.clone(),
        update_rule: info.rules.update.clone(),
        delete_rule: info.rules.delete.clone(),
        encrypted: info.encrypted,
    }
}

pub(super) fn info(doc: CollectionDoc) -> CollectionInfo {
    CollectionInfo {
        id: doc.id,
        name: doc.name,
        rules: RuleTexts {
            list: doc.list_rule,
            view: doc.view_rule,
            create: doc.create_rule,
            update: doc.update_rule,
            delete: doc.delete_rule,
        },
        encrypted: doc.encrypted,
    }
}

/// Stored rules, parsed; one that no longer parses admits only the admin (logged).
fn stored_rules(info: &CollectionInfo) -> Rules {
    let (rules, broken) = info.rules.parse_stored();
    for error in broken {
        tracing::error!(
            collection = %info.name,
            %error,
            "a stored rule no longer parses (written by an older version?): it admits only the admin until it is changed"
        );
    }
    rules
}

impl RegistryState {
    async fn start(
        &mut self,
        info: CollectionInfo,
        rules: Rules,
        loaded: Loaded,
    ) -> Result<(), EngineError> {
        let (version_watch, version) = watch::channel(loaded.version);
        let (applied_watch, applied) = watch::channel(loaded.seq);
        let args = CollectionArgs {
            id: info.id.clone(),
            name: info.name.clone(),
            texts: info.rules.clone(),
            rules,
            encrypted: info.encrypted,
            master_key: self.master_key,
            store: self.store.clone(),
            filters: self.filters.clone(),
            hooks: self.hooks.clone(),
            driver: self.driver.clone(),
            channels: self.channels.clone(),
            threshold: self.threshold,
            subscription_quota: self.subscription_quota.clone(),
            event_names: self.event_names,
            version: loaded.version,
            subscriptions: loaded.subscriptions,
            records: loaded.records,
            version_watch,
            directory: self.directory.clone(),
            rules_version: loaded.rules_version,
            seq: loaded.seq,
            record_seqs: loaded.record_seqs,
            applied_watch,
            history: self.history,
        };
        let (actor, _) = Actor::spawn(None, CollectionActor, args).await.map_err(|error| {
            tracing::error!(collection = %info.name, %error, "collection actor failed to start");
            EngineError::Unavailable
        })?;
        self.directory.put(CollectionHandle {
            info,
            actor,
            version,
            applied,
        });
        Ok(())
    }

    /// `encrypted` without a master key is refused: nothing could be sealed.
    fn check_encryption(&self, encrypted: bool) -> Result<(), EngineError> {
        if encrypted && self.master_key.is_none() {
            return Err(EngineError::invalid(
                "encrypted",
                "an encrypted collection needs the server's VELO_ENCRYPTION_MASTER_KEY (base64 of 32 random bytes), which is not set",
            ));
        }
        Ok(())
    }

    async fn create(
        &mut self,
        name: CollectionName,
        rules: RuleTexts,
        encrypted: bool,
    ) -> Result<CollectionInfo, EngineError> {
        let taken = || {
            EngineError::invalid(
                "name",
                format!("a collection named `{name}` already exists"),
            )
        };
        if self.directory.has_name(name.as_str()) {
            return Err(taken());
        }
        let (rules, parsed) = rules.checked()?;
        self.check_encryption(encrypted)?;
        let info = CollectionInfo {
            id: random_id(),
            name: name.to_string(),
            rules,
            encrypted,
        };
        let doc = doc(&info);
        let committed = match self
            .store
            .commit(Expect::Absent, Change::PutCollection(&doc), None)
            .await
        {
            Err(StoreError::NameTaken) => return Err(taken()),
            other => other?,
        };
        let loaded = Loaded {
            collection: doc,
            version: committed.version,
            rules_version: committed.version,
            seq: committed.epoch,
            subscriptions: Vec::new(),
            records: Vec::new(),
            record_seqs: Default::default(),
        };
        self.start(info.clone(), parsed, loaded).await?;
        tracing::info!(collection = %info.name, id = %info.id, "collection created");
        Ok(info)
    }

    async fn update(
        &mut self,
        name_or_id: &str,
        name: Option<CollectionName>,
        patch: RulesPatch,
        encrypted: Option<bool>,
    ) -> Result<CollectionInfo, EngineError> {
        let handle = self
            .directory
            .find(name_or_id)
            .ok_or_else(|| EngineError::UnknownCollection(name_or_id.to_owned()))?;
        if let Some(name) = &name
            && name.as_str() != handle.info.name
            && self.directory.has_name(name.as_str())
        {
            return Err(EngineError::invalid(
                "name",
                format!("a collection named `{name}` already exists"),
            ));
        }
        if let Some(encrypted) = encrypted {
            self.check_encryption(encrypted)?;
        }
        // Made by the actor from the collection as it has it; it updates the directory.
        call(&handle.actor, |reply| CollectionMsg::Update {
            name,
            patch,
            encrypted,
            reply,
        })
        .await?
    }

    async fn delete(&mut self, name_or_id: &str) -> Result<(), EngineError> {
        let handle = self
            .directory
            .find(name_or_id)
            .ok_or_else(|| EngineError::UnknownCollection(name_or_id.to_owned()))?;
        let committed = match self
            .store
            .commit(Expect::Any, Change::DeleteCollection(&handle.info.id), None)
            .await
        {
            Err(StoreError::Gone) => None,
            other => Some(other?),
        };
        // Gone: another node deleted it, and sends what its deletion sends.
        let replicated = committed.is_none();
        self.close(
            handle,
            committed.map(|committed| committed.epoch),
            replicated,
        )
        .await;
        Ok(())
    }

    /// Ends a deleted collection's subscriptions (`ended` after `epoch`, the deletion, is
    /// durable), then takes it out of the directory and stops its actor: a request that found
    /// the collection meanwhile is answered as for an unknown collection, by the closed actor
    /// or by the engine. `replicated`: another node deleted it, and sends what goes to an
    /// external Pusher service.
    async fn close(&mut self, handle: CollectionHandle, epoch: Option<u64>, replicated: bool) {
        let closed = call(&handle.actor, |reply| CollectionMsg::Close {
            epoch,
            replicated,
            reply,
        });
        if let Err(error) = closed.await {
            tracing::warn!(collection = %handle.info.name, %error, "a deleted collection's actor did not close");
        }
        self.directory.remove(&handle.info.id);
        handle.actor.stop(Some("collection deleted".into()));
        tracing::info!(collection = %handle.info.name, "collection deleted");
    }

    /// A collection made, changed or deleted by a change from the store's log.
    async fn replicate(&mut self, entry: LogEntry) {
        match entry.change {
            Replica::PutCollection(doc) => {
                let info = info(doc.clone());
                let rules = stored_rules(&info);
                match self.directory.find(&info.id) {
                    Some(handle) => {
                        // In the actor's turn, after the changes before it.
                        let _ = handle.actor.cast(CollectionMsg::SetRules {
                            doc: Box::new(doc),
                            rules: Box::new(rules),
                            version: entry.version,
                            mine: entry.mine,
                        });
                    }
                    None => {
                        let loaded = Loaded {
                            collection: doc,
                            version: entry.version,
                            rules_version: entry.version,
                            seq: entry.seq,
                            subscriptions: Vec::new(),
                            records: Vec::new(),
                            record_seqs: Default::default(),
                        };
                        let name = info.name.clone();
                        if let Err(error) = self.start(info, rules, loaded).await {
                            tracing::error!(collection = %name, %error, "could not start a collection another node created");
                        }
                    }
                }
            }
            Replica::DeleteCollection(id) => {
                if let Some(handle) = self.directory.find(&id) {
                    self.close(handle, None, !entry.mine).await;
                }
            }
            // A collection's own changes go to its actor.
            Replica::PutSubscription(..)
            | Replica::DeleteSubscription { .. }
            | Replica::PutRecord { .. }
            | Replica::DeleteRecord { .. }
            | Replica::Publish { .. } => {}
        }
    }
}

impl Actor for RegistryActor {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: RegistryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = RegistryState {
            store: args.store,
            filters: args.filters,
            hooks: args.hooks,
            driver: args.driver,
            channels: args.channels,
            threshold: args.threshold,
            subscription_quota: args.subscription_quota,
            event_names: args.event_names,
            history: args.history,
            master_key: args.master_key,
            directory: args.directory,
        };
        for loaded in args.loaded {
            let info = info(loaded.collection.clone());
            let rules = stored_rules(&info);
            state.start(info, rules, loaded).await?;
        }
        for seed in args.seeds {
            if state.directory.has_name(&seed.name) {
                continue;
            }
            let name = CollectionName::parse(&seed.name)
                .map_err(|message| EngineError::invalid("name", message))?;
            match state.create(name, seed.api_rules, seed.encrypted).await {
                Ok(_) => {}
                // Another node created it first (nodes started together): its change comes
                // from the log.
                Err(EngineError::Invalid { field, .. }) if field == "name" => {}
                Err(error) => return Err(error.into()),
            }
        }
        tracing::info!(collections = state.directory.count(), "engine started");
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RegistryMsg::Create {
                name,
                rules,
                encrypted,
                reply,
            } => {
                let _ = reply.send(state.create(name, rules, encrypted).await);
            }
            RegistryMsg::Update {
                name_or_id,
                name,
                rules,
                encrypted,
                reply,
            } => {
                let _ = reply.send(state.update(&name_or_id, name, rules, encrypted).await);
            }
            RegistryMsg::Delete { name_or_id, reply } => {
                let _ = reply.send(state.delete(&name_or_id).await);
            }
            RegistryMsg::Replicate { entry, reply } => {
                state.replicate(*entry).await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}
