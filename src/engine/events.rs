//! Events: record changes (`created`, `updated`, `deleted`) and `ended` (a subscription the
//! server ended), their frames, and their ordered delivery once the write they follow is durable.
//!
//! The hot path: an event's `data` (`{"action","record"}`) is serialized and escaped once; each
//! matched subscription's frame is that text with its channel name spliced in (one allocation,
//! inherent to a frame that names its channel), and the hub shares each frame by reference
//! count among the sockets on the channel.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::metrics::Metrics;
use crate::pusher::Driver;
use crate::pusher::outbound::{self, OutEvent};
use crate::pusher::protocol::SocketId;
use crate::store::{Epoch, Store};

/// What happened to a record; also the event's name on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(Action::Created),
            "updated" => Some(Action::Updated),
            "deleted" => Some(Action::Deleted),
            _ => None,
        }
    }
}

/// What events are called on the wire (`VELO_EVENT_NAMES`, DESIGN.md §11); the payload is the
/// same either way, its `action` says what happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
pub enum EventNames {
    /// `created`, `updated`, `deleted`, `ended`: what Velo's documentation describes.
    #[default]
    #[serde(rename = "actions")]
    #[value(name = "actions")]
    Actions,
    /// Every event is `server.message`: what Velo's code broadcasts (`broadcastAs`).
    #[serde(rename = "server.message")]
    #[value(name = "server.message")]
    ServerMessage,
}

impl EventNames {
    fn name(self, action: &'static str) -> &'static str {
        match self {
            EventNames::Actions => action,
            EventNames::ServerMessage => "server.message",
        }
    }
}

/// Why the server ended a subscription that sockets may still hold; sent to them as event
/// `ended` (DESIGN.md §15) so that clients subscribe again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The list rule changed: the subscriber is no longer admitted, or the subscription's
    /// public channel would now carry records only a signed-in user may see.
    RuleChanged,
    /// The token the subscription was made with expired.
    TokenExpired,
    CollectionDeleted,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::RuleChanged => "rule_changed",
            EndReason::TokenExpired => "token_expired",
            EndReason::CollectionDeleted => "collection_deleted",
        }
    }
}

/// An event's `data`, serialized once: as JSON text (for the Pusher HTTP API) and as the JSON
/// string literal every WebSocket frame carries.
pub struct EventData {
    /// The event's name on the wire: the action.
    name: &'static str,
    /// `{"action":…,"record":{…}}`
    data: Arc<str>,
    /// The same as a JSON string literal, quotes included.
    escaped: String,
    /// Only for data over the external service's limit:
    /// `{"action","record":{"id","collection_id"},"truncated":true}`, so the client can fetch
    /// the record.
    truncated: Option<Arc<str>>,
}

/// The event payload, serialized straight from the record (no intermediate JSON value).
#[derive(serde::Serialize)]
struct Payload<'a> {
    action: &'static str,
    record: &'a serde_json::Map<String, Value>,
}

impl EventData {
    pub fn new(action: Action, record: &serde_json::Map<String, Value>, names: EventNames) -> Self {
        let payload = Payload {
            action: action.as_str(),
            record,
        };
        let data = serde_json::to_string(&payload).expect("a JSON map always serializes");
        let truncated = (data.len() > outbound::MAX_DATA_BYTES).then(|| {
            json!({
                "action": action.as_str(),
                "record": { "id": record.get("id"), "collection_id": record.get("collection_id") },
                "truncated": true,
            })
            .to_string()
            .into()
        });
        Self {
            name: names.name(action.as_str()),
            escaped: serde_json::to_string(data.as_str()).expect("a string always serializes"),
            data: data.into(),
            truncated,
        }
    }

    /// `ended`: `{"action":"ended","reason":…}`.
    pub fn ended(reason: EndReason, names: EventNames) -> Self {
        let data = json!({"action": "ended", "reason": reason.as_str()}).to_string();
        Self {
            name: names.name("ended"),
            escaped: serde_json::to_string(data.as_str()).expect("a string always serializes"),
            data: data.into(),
            truncated: None,
        }
    }

    /// `data` for the external service: the full payload, or the truncated one when the full
    /// one is over its limit.
    pub fn pusher_data(&self) -> Arc<str> {
        self.truncated.clone().unwrap_or_else(|| self.data.clone())
    }

    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The frame for one channel. Channel names come from [`super::ChannelNames`] and hold
    /// only characters that need no escaping in JSON.
    pub fn frame(&self, channel: &str) -> Utf8Bytes {
        let event = self.name;
        let mut frame =
            String::with_capacity(40 + event.len() + channel.len() + self.escaped.len());
        frame.push_str(r#"{"event":""#);
        frame.push_str(event);
        frame.push_str(r#"","channel":""#);
        frame.push_str(channel);
        frame.push_str(r#"","data":"#);
        frame.push_str(&self.escaped);
        frame.push('}');
        Utf8Bytes::from(frame)
    }
}

/// One event and the channels of the subscriptions it matched, to send once the
/// write is durable.
pub struct Delivery {
    /// The store write the event waits for: the record's, or the subscription's removal for
    /// `ended`; `None` for events that store nothing (`/api/realtime/publish`).
    pub epoch: Option<Epoch>,
    pub event: EventData,
    pub channels: Vec<Arc<str>>,
    /// The writer's own socket (`X-Socket-ID`), which is not sent its own change.
    pub except: Option<SocketId>,
}

/// Starts a collection's delivery task: deliveries go out in the order they were queued (the
/// collection's commit order), each after its write reached the disk, to this server's sockets
/// or, with driver `pusher`, to the external service.
pub fn spawn_delivery(store: Store, driver: Arc<Driver>) -> mpsc::UnboundedSender<Delivery> {
    let (queue, mut deliveries) = mpsc::unbounded_channel::<Delivery>();
    tokio::spawn(async move {
        while let Some(delivery) = deliveries.recv().await {
            if let Some(epoch) = delivery.epoch {
                store.durable(epoch).await;
            }
            let Delivery {
                event,
                channels,
                except,
                ..
            } = delivery;
            match &driver.outbound {
                None => {
                    let sent: usize = channels
                        .iter()
                        .map(|channel| {
                            driver
                                .hub
                                .publish(channel, &event.frame(channel), except.as_ref())
                        })
                        .sum();
                    Metrics::count(&driver.metrics.deliveries, sent as u64);
                }
                Some(outbound) => {
                    let data = event.pusher_data();
                    for channel in channels {
                        outbound.send(OutEvent {
                            name: event.name(),
                            channel,
                            data: data.clone(),
                            socket_id: except.as_ref().map(|socket| socket.as_str().to_owned()),
                        });
                    }
                }
            }
        }
    });
    queue
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_data_as_a_json_string() {
        let record = json!({"id": "r1", "title": "He said \"hi\"\n", "n": 1});
        let data = EventData::new(
            Action::Updated,
            record.as_object().unwrap(),
            EventNames::Actions,
        );
        let frame: Value = serde_json::from_str(&data.frame("private-velo.realtime.x")).unwrap();
        assert_eq!(frame["event"], "updated");
        assert_eq!(frame["channel"], "private-velo.realtime.x");
        let inner: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
        assert_eq!(inner, json!({"action": "updated", "record": record}));
    }

    #[test]
    fn ended_says_why() {
        let data = EventData::ended(EndReason::RuleChanged, EventNames::Actions);
        let frame: Value = serde_json::from_str(&data.frame("velo.realtime.x")).unwrap();
        assert_eq!(frame["event"], "ended");
        let inner: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
        assert_eq!(inner, json!({"action": "ended", "reason": "rule_changed"}));
    }

    #[test]
    fn velos_own_event_name_carries_the_same_payload() {
        let record = json!({"id": "r1"});
        let record = record.as_object().unwrap();
        for (data, action) in [
            (
                EventData::new(Action::Deleted, record, EventNames::ServerMessage),
                "deleted",
            ),
            (
                EventData::ended(EndReason::TokenExpired, EventNames::ServerMessage),
                "ended",
            ),
        ] {
            let frame: Value = serde_json::from_str(&data.frame("c")).unwrap();
            assert_eq!(frame["event"], "server.message");
            let inner: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
            assert_eq!(inner["action"], action);
        }
    }
}
