//! The registry actor: maps collection names and ids to collection actors, and owns the
//! collections tree of the store. It starts one actor per collection at start-up, handing each
//! its rows of the connection table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use uuid::Uuid;

use super::collection::{CollectionActor, CollectionArgs, CollectionMsg};
use super::events::EventNames;
use super::names::random_id;
use super::{
    ChannelNames, CollectionInfo, CollectionName, EngineError, RuleTexts, Rules, RulesPatch, call,
};
use crate::config::CollectionSeed;
use crate::filter::FilterEngine;
use crate::limits::{ClientKey, Quota};
use crate::pusher::Driver;
use crate::store::{CollectionDoc, Store, SubscriptionDoc};

/// A collection and the actor that owns it.
#[derive(Clone)]
pub struct CollectionHandle {
    pub info: CollectionInfo,
    pub actor: ActorRef<CollectionMsg>,
}

pub enum RegistryMsg {
    /// By name or id.
    Resolve(String, RpcReplyPort<Option<CollectionHandle>>),
    List(RpcReplyPort<Vec<CollectionInfo>>),
    /// Every collection with its actor, by name.
    Handles(RpcReplyPort<Vec<CollectionHandle>>),
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
}

pub struct RegistryActor;

pub struct RegistryArgs {
    pub store: Store,
    pub filters: Arc<FilterEngine>,
    pub driver: Arc<Driver>,
    pub channels: ChannelNames,
    pub threshold: Duration,
    /// Live subscriptions per client, shared by every collection.
    pub subscription_quota: Arc<Quota<ClientKey>>,
    pub event_names: EventNames,
    /// What encrypted channels' keys derive from; `None`: no collection may be encrypted.
    pub master_key: Option<[u8; 32]>,
    pub seeds: Vec<CollectionSeed>,
}

pub struct RegistryState {
    store: Store,
    filters: Arc<FilterEngine>,
    driver: Arc<Driver>,
    channels: ChannelNames,
    threshold: Duration,
    subscription_quota: Arc<Quota<ClientKey>>,
    event_names: EventNames,
    master_key: Option<[u8; 32]>,
    /// By id.
    collections: HashMap<String, CollectionHandle>,
    /// Name -> id.
    names: HashMap<String, String>,
}

fn doc(info: &CollectionInfo) -> CollectionDoc {
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

impl RegistryState {
    fn find(&self, name_or_id: &str) -> Option<&CollectionHandle> {
        self.collections.get(name_or_id).or_else(|| {
            self.names
                .get(name_or_id)
                .and_then(|id| self.collections.get(id))
        })
    }

    async fn start(
        &mut self,
        info: CollectionInfo,
        rules: Rules,
        loaded: Vec<(Uuid, SubscriptionDoc)>,
    ) -> Result<(), EngineError> {
        let args = CollectionArgs {
            id: info.id.clone(),
            name: info.name.clone(),
            rules,
            encrypted: info.encrypted,
            master_key: self.master_key,
            store: self.store.clone(),
            filters: self.filters.clone(),
            driver: self.driver.clone(),
            channels: self.channels.clone(),
            threshold: self.threshold,
            subscription_quota: self.subscription_quota.clone(),
            event_names: self.event_names,
            loaded,
        };
        let (actor, _) = Actor::spawn(None, CollectionActor, args).await.map_err(|error| {
            tracing::error!(collection = %info.name, %error, "collection actor failed to start");
            EngineError::Unavailable
        })?;
        self.names.insert(info.name.clone(), info.id.clone());
        self.collections
            .insert(info.id.clone(), CollectionHandle { info, actor });
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
        if self.names.contains_key(name.as_str()) {
            return Err(EngineError::invalid(
                "name",
                format!("a collection named `{name}` already exists"),
            ));
        }
        let parsed = rules.parse()?;
        self.check_encryption(encrypted)?;
        let info = CollectionInfo {
            id: random_id(),
            name: name.to_string(),
            rules,
            encrypted,
        };
        self.store.put_collection(&doc(&info))?;
        self.start(info.clone(), parsed, Vec::new()).await?;
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
            .find(name_or_id)
            .cloned()
            .ok_or_else(|| EngineError::UnknownCollection(name_or_id.to_owned()))?;
        let mut info = handle.info.clone();
        if let Some(name) = name
            && name.as_str() != info.name
        {
            if self.names.contains_key(name.as_str()) {
                return Err(EngineError::invalid(
                    "name",
                    format!("a collection named `{name}` already exists"),
                ));
            }
            info.name = name.to_string();
        }
        info.rules = patch.apply(&info.rules);
        let rules = info.rules.parse()?;
        if let Some(encrypted) = encrypted {
            self.check_encryption(encrypted)?;
            info.encrypted = encrypted;
        }
        self.store.put_collection(&doc(&info))?;
        call(&handle.actor, |reply| CollectionMsg::SetRules {
            rules: Box::new(rules),
            encrypted: info.encrypted,
            reply,
        })
        .await?;
        self.names.remove(&handle.info.name);
        self.names.insert(info.name.clone(), info.id.clone());
        self.collections.insert(
            info.id.clone(),
            CollectionHandle {
                info: info.clone(),
                actor: handle.actor,
            },
        );
        Ok(info)
    }

    async fn delete(&mut self, name_or_id: &str) -> Result<(), EngineError> {
        let handle = self
            .find(name_or_id)
            .cloned()
            .ok_or_else(|| EngineError::UnknownCollection(name_or_id.to_owned()))?;
        call(&handle.actor, |reply| CollectionMsg::Close { reply }).await?;
        handle.actor.stop(Some("collection deleted".into()));
        self.store.delete_collection(&handle.info.id)?;
        self.names.remove(&handle.info.name);
        self.collections.remove(&handle.info.id);
        tracing::info!(collection = %handle.info.name, "collection deleted");
        Ok(())
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
            driver: args.driver,
            channels: args.channels,
            threshold: args.threshold,
            subscription_quota: args.subscription_quota,
            event_names: args.event_names,
            master_key: args.master_key,
            collections: HashMap::new(),
            names: HashMap::new(),
        };
        let mut by_collection: HashMap<String, Vec<(Uuid, SubscriptionDoc)>> = HashMap::new();
        for (id, doc) in state.store.subscriptions()? {
            by_collection
                .entry(doc.collection_id.clone())
                .or_default()
                .push((id, doc));
        }
        for doc in state.store.collections()? {
            let info = CollectionInfo {
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
            };
            let loaded = by_collection.remove(&info.id).unwrap_or_default();
            let (rules, broken) = info.rules.parse_stored();
            for error in broken {
                tracing::error!(
                    collection = %info.name,
                    %error,
                    "a stored rule no longer parses (written by an older version?): it admits only the admin until it is changed"
                );
            }
            state.start(info, rules, loaded).await?;
        }
        for (_, orphans) in by_collection {
            for (id, _) in orphans {
                state.store.delete_subscription(id)?;
            }
        }
        for seed in args.seeds {
            if state.names.contains_key(&seed.name) {
                continue;
            }
            let name = CollectionName::parse(&seed.name)
                .map_err(|message| EngineError::invalid("name", message))?;
            state.create(name, seed.api_rules, seed.encrypted).await?;
        }
        tracing::info!(collections = state.collections.len(), "engine started");
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RegistryMsg::Resolve(name_or_id, reply) => {
                let _ = reply.send(state.find(&name_or_id).cloned());
            }
            RegistryMsg::List(reply) => {
                let mut all: Vec<CollectionInfo> = state
                    .collections
                    .values()
                    .map(|handle| handle.info.clone())
                    .collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = reply.send(all);
            }
            RegistryMsg::Handles(reply) => {
                let mut all: Vec<CollectionHandle> = state.collections.values().cloned().collect();
                all.sort_by(|a, b| a.info.name.cmp(&b.info.name));
                let _ = reply.send(all);
            }
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
        }
        Ok(())
    }
}
