//! Hooks (DESIGN.md §14): the operator's rhai functions from `VELO_HOOKS_DIR`, run when a
//! subscription is made, per matched delivery, and around record writes. This module owns the
//! loaded set (swapped atomically on reload), the sandboxes, each hook's context, and turning
//! what a hook returns or throws into a decision; what a decision does to a request or a
//! delivery is the engine's. It must never let a script crash the server or run unbounded.
//!
//! A hook that is not defined costs one atomic load of the set and a bit test.

mod load;
mod sandbox;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Scope};
use serde_json::Value;

use crate::filter::Auth;
use crate::filter::value::map_from_json;
use crate::metrics::Metrics;
use crate::pusher::Driver;

pub use sandbox::{BROADCAST_OPERATIONS, HOOK_OPERATIONS, MAX_TRIGGERS};

type RecordMap = serde_json::Map<String, Value>;

/// The hooks a script may define, by their function names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    RealtimeConnecting,
    RealtimeBroadcast,
    RecordCreating,
    RecordUpdating,
    RecordDeleting,
    RecordCreated,
    RecordUpdated,
    RecordDeleted,
}

impl Hook {
    const ALL: [Hook; 8] = [
        Hook::RealtimeConnecting,
        Hook::RealtimeBroadcast,
        Hook::RecordCreating,
        Hook::RecordUpdating,
        Hook::RecordDeleting,
        Hook::RecordCreated,
        Hook::RecordUpdated,
        Hook::RecordDeleted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hook::RealtimeConnecting => "realtime_connecting",
            Hook::RealtimeBroadcast => "realtime_broadcast",
            Hook::RecordCreating => "record_creating",
            Hook::RecordUpdating => "record_updating",
            Hook::RecordDeleting => "record_deleting",
            Hook::RecordCreated => "record_created",
            Hook::RecordUpdated => "record_updated",
            Hook::RecordDeleted => "record_deleted",
        }
    }

    fn parse(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|hook| hook.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The functions of every file of the hooks directory, compiled together.
pub struct HookSet {
    ast: AST,
    /// Which hooks it defines, one bit each.
    defined: u8,
    /// The files it was compiled from, as they were.
    stamps: Vec<load::Stamp>,
}

impl HookSet {
    fn empty() -> Self {
        Self {
            ast: AST::empty(),
            defined: 0,
            stamps: Vec::new(),
        }
    }

    pub fn defines(&self, hook: Hook) -> bool {
        self.defined & hook.bit() != 0
    }

    fn names(&self) -> Vec<&'static str> {
        Hook::ALL
            .into_iter()
            .filter(|hook| self.defines(*hook))
            .map(Hook::name)
            .collect()
    }
}

/// A write a before-hook refused: `throw "why"` (422), `throw #{status: 403, message}` (403),
/// or a failing or runaway script (422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Forbidden(String),
    Unprocessable(String),
}

/// What `realtime_broadcast` decided for one delivery.
pub enum Broadcast {
    /// `()` (or `true`): sent as it is.
    AsIs,
    /// `false`, or the hook failed.
    Suppress,
    /// A map: sent as the event's `record`, for this subscriber only.
    Record(RecordMap),
}

/// An event as `realtime_broadcast` is given it, converted once per event.
pub struct BroadcastInput {
    action: ImmutableString,
    record: Map,
    collection: ImmutableString,
}

impl BroadcastInput {
    pub fn new(action: &'static str, record: &RecordMap, collection: &str) -> Self {
        Self {
            action: action.into(),
            record: map_from_json(record),
            collection: collection.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("hooks in {dir}: {message}")]
pub struct HookError {
    dir: String,
    message: String,
}

/// The loaded hooks and the engines they run in. Shared by the API, the collection actors
/// and their delivery tasks.
pub struct Hooks {
    set: ArcSwap<HookSet>,
    /// Compiles sets (it knows every function a hook may call).
    compiler: Engine,
    before: Engine,
    broadcast: Engine,
    after: Engine,
    metrics: Arc<Metrics>,
    /// Where after-hooks' triggers go.
    driver: Arc<Driver>,
}

impl Hooks {
    /// Hooks from `dir` (none without one), reloaded as its files change. A set that does not
    /// compile at start-up stops the start.
    pub fn start(
        dir: Option<PathBuf>,
        driver: Arc<Driver>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Hooks>, HookError> {
        let compiler = sandbox::engine(sandbox::Kind::After);
        let set = match &dir {
            None => HookSet::empty(),
            Some(dir) if !dir.is_dir() => {
                return Err(HookError {
                    dir: dir.display().to_string(),
                    message: "not a directory".into(),
                });
            }
            Some(dir) => load::compile(&compiler, dir).map_err(|message| HookError {
                dir: dir.display().to_string(),
                message,
            })?,
        };
        if let Some(dir) = &dir {
            tracing::info!(dir = %dir.display(), hooks = ?set.names(), "hooks loaded");
        }
        let hooks = Arc::new(Hooks {
            set: ArcSwap::from_pointee(set),
            compiler,
            before: sandbox::engine(sandbox::Kind::Before),
            broadcast: sandbox::engine(sandbox::Kind::Broadcast),
            after: sandbox::engine(sandbox::Kind::After),
            metrics,
            driver,
        });
        if let Some(dir) = dir {
            load::watch(&hooks, dir);
        }
        Ok(hooks)
    }

    /// Whether the current set defines `hook`.
    pub fn defines(&self, hook: Hook) -> bool {
        self.set.load().defines(hook)
    }

    /// The current set, when it defines `realtime_broadcast`.
    pub fn broadcast_set(&self) -> Option<Arc<HookSet>> {
        let set = self.set.load_full();
        set.defines(Hook::RealtimeBroadcast).then_some(set)
    }

    /// `realtime_connecting(ctx)`: `Err` is the 403's message.
    pub fn connecting(
        &self,
        collection: &str,
        filter: &str,
        socket_id: Option<&str>,
        auth: &Auth,
    ) -> Result<(), String> {
        let set = self.set.load();
        let hook = Hook::RealtimeConnecting;
        if !set.defines(hook) {
            return Ok(());
        }
        let mut ctx = Map::new();
        ctx.insert("collection".into(), collection.into());
        ctx.insert("filter".into(), filter.into());
        ctx.insert("socket_id".into(), socket_id.unwrap_or_default().into());
        ctx.insert("auth".into(), claims(auth));
        match call(&self.before, &set, hook, ctx, None) {
            Ok(_) => Ok(()),
            Err(error) => Err(match self.refusal(hook, *error) {
                Refusal::Forbidden(message) | Refusal::Unprocessable(message) => message,
            }),
        }
    }

    /// `record_creating`, `record_updating` or `record_deleting(ctx)`: the record to store
    /// instead (creating and updating), or `None` to store it as it is.
    pub fn before_write(
        &self,
        hook: Hook,
        collection: &str,
        record: &RecordMap,
        old: Option<&RecordMap>,
        auth: &Auth,
    ) -> Result<Option<RecordMap>, Refusal> {
        let set = self.set.load();
        if !set.defines(hook) {
            return Ok(None);
        }
        let mut ctx = Map::new();
        ctx.insert("collection".into(), collection.into());
        ctx.insert("record".into(), Dynamic::from_map(map_from_json(record)));
        if let Some(old) = old {
            ctx.insert("old".into(), Dynamic::from_map(map_from_json(old)));
        }
        ctx.insert("auth".into(), claims(auth));
        let returned = call(&self.before, &set, hook, ctx, None)
            .map_err(|error| self.refusal(hook, *error))?;
        if hook == Hook::RecordDeleting || returned.is_unit() {
            return Ok(None);
        }
        let failed = |message: String| Refusal::Unprocessable(self.failed(hook, &message));
        match returned.try_cast::<Map>() {
            Some(map) => sandbox::map_to_json(&map).map(Some).map_err(failed),
            None => Err(failed("it returned neither a map nor nothing".into())),
        }
    }

    /// `realtime_broadcast(event)` for one matched delivery, with `set` from
    /// [`Hooks::broadcast_set`].
    pub fn broadcast(
        &self,
        set: &HookSet,
        input: &BroadcastInput,
        channel: &str,
        auth: &Auth,
    ) -> Broadcast {
        let hook = Hook::RealtimeBroadcast;
        let mut event = Map::new();
        event.insert("action".into(), input.action.clone().into());
        event.insert("record".into(), Dynamic::from_map(input.record.clone()));
        event.insert("collection".into(), input.collection.clone().into());
        event.insert("channel".into(), channel.into());
        event.insert("auth".into(), claims(auth));
        let returned = match call(&self.broadcast, set, hook, event, None) {
            Ok(returned) => returned,
            Err(error) => {
                self.refusal(hook, *error);
                return Broadcast::Suppress;
            }
        };
        if returned.is_unit() {
            return Broadcast::AsIs;
        }
        if let Ok(send) = returned.as_bool() {
            return if send {
                Broadcast::AsIs
            } else {
                Broadcast::Suppress
            };
        }
        let record = match returned.try_cast::<Map>() {
            Some(map) => sandbox::map_to_json(&map),
            None => Err("it returned neither a map, false nor nothing".into()),
        };
        match record {
            Ok(record) => Broadcast::Record(record),
            Err(message) => {
                self.failed(hook, &message);
                Broadcast::Suppress
            }
        }
    }

    /// `record_created`, `record_updated` or `record_deleted(ctx)`, once the write is durable;
    /// then the events it triggered are sent. Failures are logged and counted.
    pub async fn after_write(&self, hook: Hook, collection: &str, record: &RecordMap, auth: &Auth) {
        let set = self.set.load_full();
        if !set.defines(hook) {
            return;
        }
        let mut ctx = Map::new();
        ctx.insert("collection".into(), collection.into());
        ctx.insert("record".into(), Dynamic::from_map(map_from_json(record)));
        ctx.insert("auth".into(), claims(auth));
        let triggers = sandbox::Triggers::default();
        if let Err(error) = call(&self.after, &set, hook, ctx, Some(triggers.clone())) {
            self.refusal(hook, *error);
        }
        let triggered = std::mem::take(
            &mut *triggers
                .0
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        );
        // Checked when asked for; sent together (one message to the other nodes).
        if !triggered.is_empty()
            && let Err(error) = crate::pusher::trigger::send(&self.driver, &triggered).await
        {
            self.failed(hook, &format!("its triggers failed: {}", error.0));
        }
    }

    /// A call that did not return: a `throw` is the script's refusal; anything else (a
    /// runaway stopped by the limits, a type error) is a failure, logged and counted.
    fn refusal(&self, hook: Hook, mut error: EvalAltResult) -> Refusal {
        loop {
            match error {
                EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => error = *inner,
                EvalAltResult::ErrorRuntime(thrown, _) => return thrown_refusal(thrown),
                other => {
                    return Refusal::Unprocessable(self.failed(hook, &other.to_string()));
                }
            }
        }
    }

    /// Logs and counts a failed hook; returns the message a request is refused with.
    fn failed(&self, hook: Hook, why: &str) -> String {
        self.metrics.hook_failures.inc();
        tracing::warn!(hook = hook.name(), why, "a hook failed");
        format!("the {} hook failed: {why}", hook.name())
    }
}

/// The subscriber's or caller's claims, as a copy the script may change freely (the shared
/// map is what filters read).
fn claims(auth: &Auth) -> Dynamic {
    auth.as_dynamic().flatten_clone()
}

fn call(
    engine: &Engine,
    set: &HookSet,
    hook: Hook,
    ctx: Map,
    triggers: Option<sandbox::Triggers>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let mut options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
    if let Some(triggers) = triggers {
        options = options.with_tag(triggers);
    }
    engine.call_fn_with_options(
        options,
        &mut Scope::new(),
        &set.ast,
        hook.name(),
        (Dynamic::from_map(ctx),),
    )
}

/// `throw "why"` → 422 `why`; `throw #{status: 403, message: "why"}` → 403 `why` (any other
/// status is 422).
fn thrown_refusal(thrown: Dynamic) -> Refusal {
    let Some(map) = thrown.clone().try_cast::<Map>() else {
        return Refusal::Unprocessable(thrown.to_string());
    };
    let message = map
        .get("message")
        .map_or_else(|| "refused by a hook".to_owned(), ToString::to_string);
    match map.get("status").and_then(|status| status.as_int().ok()) {
        Some(403) => Refusal::Forbidden(message),
        Some(_) | None => Refusal::Unprocessable(message),
    }
}
