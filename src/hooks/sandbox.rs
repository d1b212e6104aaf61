//! The rhai engines hooks run in, and the values crossing into and out of them. It owns the
//! limits and which functions a script may call; it knows nothing of requests or deliveries.
//!
//! Unlike filters (a raw engine running generated glue), hooks are user scripts: they get
//! rhai's standard packages (strings, arrays, maps, maths), under limits on operations, call
//! depth, expression depth, and string, array and map sizes. rhai has no file or network
//! access without modules (`no_module`), and `eval` is disabled. Three engines differ only in
//! their operation budget and in `trigger`, which after-hooks alone may call.

use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, NativeCallContext};
use serde_json::Value;

use crate::pusher::protocol::MAX_EVENT_NAME;
use crate::pusher::trigger::{MAX_DATA_BYTES, Trigger, TriggerError};

/// Operations a before-hook, `realtime_connecting` or an after-hook may take: `loop {}` is
/// stopped within 0.5–2.5 ms of a collection actor's time in a release build (a whole refused
/// request, measured with curl; docs/hooks.md), ample for any validation or redaction.
pub const HOOK_OPERATIONS: u64 = 100_000;
/// `realtime_broadcast` runs once per matched delivery: its budget is small.
pub const BROADCAST_OPERATIONS: u64 = 10_000;
/// Nested function calls and expression depth.
const MAX_CALL_LEVELS: usize = 32;
const MAX_EXPR_DEPTH: usize = 64;
const MAX_FUNCTION_EXPR_DEPTH: usize = 32;
/// Strings, arrays and maps a script may build: generous enough for any record the API accepts.
const MAX_STRING_SIZE: usize = 1 << 20;
const MAX_COLLECTION_SIZE: usize = 10_000;
/// Events one after-hook call may trigger.
pub const MAX_TRIGGERS: usize = 10;

/// Where `trigger` puts the events it is asked for during one call (the call's rhai tag),
/// checked, to be sent once the hook has returned.
#[derive(Clone, Default)]
pub struct Triggers(pub Arc<Mutex<Vec<Trigger>>>);

/// The kind of engine: what it may call and how long it may run.
#[derive(Clone, Copy)]
pub enum Kind {
    /// `realtime_connecting` and the record before-hooks: `log` only.
    Before,
    /// `realtime_broadcast`: `log` only, and a small budget.
    Broadcast,
    /// The record after-hooks: `log` and `trigger`.
    After,
}

pub fn engine(kind: Kind) -> Engine {
    let mut engine = Engine::new();
    let operations = match kind {
        Kind::Before | Kind::After => HOOK_OPERATIONS,
        Kind::Broadcast => BROADCAST_OPERATIONS,
    };
    engine
        .set_strict_variables(true)
        .set_max_operations(operations)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FUNCTION_EXPR_DEPTH)
        .set_max_string_size(MAX_STRING_SIZE)
        .set_max_array_size(MAX_COLLECTION_SIZE)
        .set_max_map_size(MAX_COLLECTION_SIZE)
        .disable_symbol("eval")
        .on_print(|text| tracing::info!(target: "velo_realtime::hooks::script", "{text}"))
        .on_debug(|text, _, _| tracing::debug!(target: "velo_realtime::hooks::script", "{text}"));
    engine.register_fn("log", |text: ImmutableString| {
        tracing::info!(target: "velo_realtime::hooks::script", "{text}");
    });
    if let Kind::After = kind {
        engine.register_fn("trigger", trigger);
    }
    engine
}

/// `trigger(channel, event, data)`: checked as the Pusher HTTP API checks a trigger, kept
/// for after the call. `data` that is not a string is sent as its JSON text.
fn trigger(
    context: NativeCallContext,
    channel: ImmutableString,
    event: ImmutableString,
    data: Dynamic,
) -> Result<(), Box<EvalAltResult>> {
    let fail = |message: String| -> Result<(), Box<EvalAltResult>> { Err(message.into()) };
    let data = match data.clone().into_immutable_string() {
        Ok(text) => text.to_string(),
        Err(_) => to_json(&data)?.to_string(),
    };
    let checked = Trigger::new(event.to_string(), data, vec![channel.to_string()], None);
    let checked = match checked {
        Ok(checked) => checked,
        Err(TriggerError::Channel(_) | TriggerError::ChannelCount) => {
            return fail(format!("trigger: invalid channel name `{channel}`"));
        }
        Err(TriggerError::Name) => {
            return fail(format!(
                "trigger: the event name must be 1 to {MAX_EVENT_NAME} characters"
            ));
        }
        Err(TriggerError::DataTooLarge) => {
            return fail(format!(
                "trigger: data is over the limit of {MAX_DATA_BYTES} bytes"
            ));
        }
        Err(TriggerError::SocketId(_)) => unreachable!("no socket is left out"),
    };
    let Some(triggers) = context
        .tag()
        .and_then(|tag| tag.clone().try_cast::<Triggers>())
    else {
        return fail(
            "trigger is only for record_created, record_updated and record_deleted".into(),
        );
    };
    let mut triggers = triggers
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if triggers.len() >= MAX_TRIGGERS {
        return fail(format!("trigger: at most {MAX_TRIGGERS} events per call"));
    }
    triggers.push(checked);
    Ok(())
}

/// A script's value as JSON: what a hook returns to be stored or sent.
pub fn to_json(value: &Dynamic) -> Result<Value, String> {
    let value = value.flatten_clone();
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(n) = value.as_int() {
        return Ok(Value::from(n));
    }
    if let Ok(n) = value.as_float() {
        return Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number));
    }
    if let Some(n) = value.clone().try_cast::<u64>() {
        return Ok(Value::from(n));
    }
    if value.is_string() || value.is_char() {
        return Ok(Value::String(value.to_string()));
    }
    if value.is_array() {
        let items = value.into_array().expect("an array");
        return items
            .iter()
            .map(to_json)
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    if value.is_map() {
        let map = value.cast::<rhai::Map>();
        return map_to_json(&map).map(Value::Object);
    }
    Err(format!(
        "a {} cannot be turned into JSON",
        value.type_name()
    ))
}

pub fn map_to_json(map: &rhai::Map) -> Result<serde_json::Map<String, Value>, String> {
    map.iter()
        .map(|(key, value)| Ok((key.to_string(), to_json(value)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn script_values_come_back_as_json() {
        let engine = engine(Kind::Before);
        let value: Dynamic = engine
            .eval(r#"#{a: 1, b: 2.5, c: "x", d: [true, ()], e: #{f: 'g'}}"#)
            .unwrap();
        assert_eq!(
            to_json(&value).unwrap(),
            json!({"a": 1, "b": 2.5, "c": "x", "d": [true, null], "e": {"f": "g"}})
        );
        let error = to_json(&Dynamic::from(std::time::Duration::ZERO)).unwrap_err();
        assert!(error.contains("cannot be turned into JSON"), "{error}");
    }

    #[test]
    fn the_sandbox_stops_runaways_and_has_no_eval() {
        let engine = engine(Kind::Broadcast);
        let error = engine.run("loop {}").unwrap_err();
        assert!(
            matches!(*error, EvalAltResult::ErrorTooManyOperations(_)),
            "{error}"
        );
        assert!(engine.compile(r#"eval("1")"#).is_err());
        let error = engine.run(r#"let s = "x"; loop { s += s; }"#).unwrap_err();
        assert!(
            matches!(*error, EvalAltResult::ErrorDataTooLarge(..)),
            "{error}"
        );
        // Only after-hooks may trigger.
        assert!(engine.run(r#"trigger("c", "e", "d")"#).is_err());
    }
}
