//! The Pusher Channels wire protocol (PUSHER.md §1–§5): close and error codes, socket ids,
//! channel names, what clients send, and the frames the server writes.
//!
//! Outgoing frames are built as text once and shared: `data` is always a JSON *string*
//! (double-encoded), except in `pusher:error`, whose `data` is an object.

use std::fmt;

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// Close and `pusher:error` codes (PUSHER.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 4001: no app with this key.
    UnknownApp = 4001,
    /// 4004: over the connection quota.
    OverQuota = 4004,
    /// 4006: the `protocol` parameter is not a number.
    InvalidVersion = 4006,
    /// 4007: a protocol version this server does not speak.
    UnsupportedProtocol = 4007,
    /// 4009: not allowed: an origin not allowed, a bad sign-in, or the user's connections
    /// terminated. Clients do not reconnect.
    Unauthorized = 4009,
    /// 4100: the client cannot keep up; reconnect after a pause.
    OverCapacity = 4100,
    /// 4200: the server is going away; reconnect now.
    Reconnect = 4200,
    /// 4201: no pong in time.
    PongNotReceived = 4201,
    /// 4301: a client frame broke a limit (size, rate). Sent as a frame; the connection stays,
    /// except after a frame too large to read at all (see [`Code::close_code`]).
    ClientLimit = 4301,
}

/// WebSocket close code 1009, "message too big".
const CLOSE_TOO_BIG: u16 = 1009;

impl Code {
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The close code of a connection ended after this `pusher:error`: the code itself, but a
    /// 4301 ends a connection only when a frame was too large to read past (tungstenite stops
    /// reading at a frame over its limit), which WebSocket calls 1009.
    pub fn close_code(self) -> u16 {
        match self {
            Code::ClientLimit => CLOSE_TOO_BIG,
            Code::UnknownApp
            | Code::OverQuota
            | Code::InvalidVersion
            | Code::UnsupportedProtocol
            | Code::Unauthorized
            | Code::OverCapacity
            | Code::Reconnect
            | Code::PongNotReceived => self.as_u16(),
        }
    }
}

/// A connection's id, `^\d+\.\d+$`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SocketId(String);

impl SocketId {
    /// Two random numbers below 10^10, as soketi does.
    pub fn random() -> Self {
        let bits = Uuid::new_v4().as_u128();
        let (a, b) = (
            (bits >> 64) as u64 % 10_000_000_000,
            bits as u64 % 10_000_000_000,
        );
        SocketId(format!("{a}.{b}"))
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (a, b) = text.split_once('.')?;
        let digits = |part: &str| {
            !part.is_empty() && part.len() <= 20 && part.bytes().all(|c| c.is_ascii_digit())
        };
        (digits(a) && digits(b)).then(|| SocketId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest channel name Pusher accepts, prefix included.
pub const MAX_CHANNEL_NAME: usize = 164;
/// The longest event name.
pub const MAX_EVENT_NAME: usize = 200;

/// What a channel's name makes of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    Public,
    /// `private-`: subscribing needs a signature of `socket_id:channel`.
    Private,
    /// `private-encrypted-`: as private; payloads are relayed untouched.
    Encrypted,
    /// `presence-`: needs a signature over channel data too.
    Presence,
    /// `#server-to-user-{id}`: a signed-in user's own channel (the server libraries'
    /// `sendToUser`); only that user's sockets may subscribe.
    User,
}

/// The prefix of a user's own channel.
pub const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

/// Checks a channel name (characters and length) and says what kind of channel it is.
pub fn channel_kind(name: &str) -> Option<ChannelKind> {
    let (user, rest) = match name.strip_prefix(USER_CHANNEL_PREFIX) {
        Some(user_id) => (true, user_id),
        None => (false, name),
    };
    let valid = !rest.is_empty()
        && name.len() <= MAX_CHANNEL_NAME
        && rest
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-=@,.;".contains(&c));
    if !valid {
        return None;
    }
    Some(if user {
        ChannelKind::User
    } else if name.starts_with("private-encrypted-") {
        ChannelKind::Encrypted
    } else if name.starts_with("private-") {
        ChannelKind::Private
    } else if name.starts_with("presence-") {
        ChannelKind::Presence
    } else {
        ChannelKind::Public
    })
}

/// A frame from a client: `{"event", "channel"?, "data"?}`.
#[derive(Deserialize, Debug)]
pub struct ClientFrame {
    pub event: String,
    pub channel: Option<String>,
    #[serde(default)]
    pub data: Value,
}

impl ClientFrame {
    /// `data` as an object, whether it came as an object or as a JSON string (`""` is empty).
    pub fn data_object(&self) -> Option<serde_json::Map<String, Value>> {
        match &self.data {
            Value::Object(map) => Some(map.clone()),
            Value::String(text) if text.is_empty() => Some(serde_json::Map::new()),
            Value::String(text) => serde_json::from_str(text).ok(),
            Value::Null => Some(serde_json::Map::new()),
            _ => None,
        }
    }
}

/// `pusher:subscribe` data.
#[derive(Deserialize, Debug)]
pub struct SubscribeData {
    pub channel: String,
    /// `key:signature`; pusher-js sends `""` for public channels, pysher leaves it out.
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub channel_data: Option<String>,
}

/// Builders of the frames the server sends.
pub mod frames {
    use super::super::presence::Member;
    use super::*;

    pub fn connection_established(socket_id: &SocketId, activity_timeout_secs: u64) -> String {
        let data =
            json!({ "socket_id": socket_id.as_str(), "activity_timeout": activity_timeout_secs });
        json!({ "event": "pusher:connection_established", "data": data.to_string() }).to_string()
    }

    /// `pusher:error`, with `data` an object (pysher indexes `data['code']`).
    pub fn error(code: Option<Code>, message: &str) -> String {
        json!({
            "event": "pusher:error",
            "data": { "code": code.map(Code::as_u16), "message": message },
        })
        .to_string()
    }

    pub fn subscription_succeeded(channel: &str) -> String {
        json!({ "event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}" }).to_string()
    }

    /// Channel-scoped refusal; pusher-js re-emits it on the channel, where Echo's `.error()`
    /// sees it.
    pub fn subscription_error(channel: &str, kind: &str, status: u16, error: &str) -> String {
        json!({
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": json!({ "type": kind, "error": error, "status": status }).to_string(),
        })
        .to_string()
    }

    /// `subscription_succeeded` on a presence channel: who is there, the new member included.
    pub fn presence_succeeded(channel: &str, members: &[Member]) -> String {
        let ids: Vec<&str> = members
            .iter()
            .map(|member| member.user_id.as_str())
            .collect();
        let hash: serde_json::Map<String, Value> = members
            .iter()
            .map(|member| {
                let info = member.user_info.clone().unwrap_or(Value::Null);
                (member.user_id.clone(), info)
            })
            .collect();
        let data = json!({ "presence": { "ids": ids, "hash": hash, "count": members.len() } });
        json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": data.to_string(),
        })
        .to_string()
    }

    pub fn member_added(channel: &str, user_id: &str, user_info: &Option<Value>) -> String {
        let mut data = json!({ "user_id": user_id });
        if let Some(info) = user_info {
            data["user_info"] = info.clone();
        }
        json!({ "event": "pusher_internal:member_added", "channel": channel, "data": data.to_string() })
            .to_string()
    }

    pub fn member_removed(channel: &str, user_id: &str) -> String {
        let data = json!({ "user_id": user_id });
        json!({ "event": "pusher_internal:member_removed", "channel": channel, "data": data.to_string() })
            .to_string()
    }

    /// A sign-in accepted: `data` names the `user_data` it was given.
    pub fn signin_success(user_data: &str) -> String {
        let data = json!({ "user_data": user_data });
        json!({ "event": "pusher:signin_success", "data": data.to_string() }).to_string()
    }

    /// A cache channel has no event kept for the new subscriber.
    pub fn cache_miss(channel: &str) -> String {
        json!({ "event": "pusher:cache_miss", "channel": channel, "data": "{}" }).to_string()
    }

    pub fn pong() -> String {
        json!({ "event": "pusher:pong", "data": "{}" }).to_string()
    }

    pub fn ping() -> String {
        json!({ "event": "pusher:ping", "data": "{}" }).to_string()
    }

    /// An event on a channel, `data` being the JSON-encoded string sent verbatim.
    pub fn event(event: &str, channel: &str, data: &str) -> String {
        json!({ "event": event, "channel": channel, "data": data }).to_string()
    }

    /// A client event relayed with `data` unchanged (an object, as pusher-js sends it); on a
    /// presence channel it names its sender's `user_id`.
    pub fn client_event(event: &str, channel: &str, data: &Value, user_id: Option<&str>) -> String {
        let mut frame = json!({ "event": event, "channel": channel, "data": data });
        if let Some(user_id) = user_id {
            frame["user_id"] = user_id.into();
        }
        frame.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_ids() {
        for _ in 0..100 {
            let id = SocketId::random();
            assert_eq!(SocketId::parse(id.as_str()), Some(id));
        }
        for bad in ["", "1", "1.", ".1", "a.1", "1.2.3", "1.-2", " 1.2"] {
            assert_eq!(SocketId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel_kind("orders"), Some(ChannelKind::Public));
        assert_eq!(
            channel_kind("private-velo.realtime.6f1c2b1e-1d2c-4b5a-8c9d-0e1f2a3b4c5d"),
            Some(ChannelKind::Private)
        );
        assert_eq!(
            channel_kind("private-encrypted-x"),
            Some(ChannelKind::Encrypted)
        );
        assert_eq!(channel_kind("presence-room"), Some(ChannelKind::Presence));
        assert_eq!(channel_kind("a=b@c,d.e;f_g-h"), Some(ChannelKind::Public));
        assert_eq!(
            channel_kind("#server-to-user-alice"),
            Some(ChannelKind::User)
        );
        assert_eq!(channel_kind("#server-to-user-"), None);
        assert_eq!(channel_kind("#orders"), None);
        for bad in ["", "with space", "slash/", "é", &"x".repeat(165)] {
            assert_eq!(channel_kind(bad), None, "{bad}");
        }
        assert!(channel_kind(&"x".repeat(164)).is_some());
    }

    #[test]
    fn frames_have_the_shapes_clients_need() {
        let id = SocketId::parse("1234.5678").unwrap();
        let established: Value =
            serde_json::from_str(&frames::connection_established(&id, 120)).unwrap();
        assert_eq!(established["event"], "pusher:connection_established");
        let data: Value =
            serde_json::from_str(established["data"].as_str().expect("data is a string")).unwrap();
        assert_eq!(
            data,
            json!({"socket_id": "1234.5678", "activity_timeout": 120})
        );
        let error: Value = serde_json::from_str(&frames::error(
            Some(Code::UnknownApp),
            "Application does not exist",
        ))
        .unwrap();
        assert_eq!(
            error["data"],
            json!({"code": 4001, "message": "Application does not exist"})
        );
        let error: Value = serde_json::from_str(&frames::error(None, "x")).unwrap();
        assert_eq!(error["data"]["code"], Value::Null);
        let refused: Value = serde_json::from_str(&frames::subscription_error(
            "private-x",
            "AuthError",
            403,
            "no",
        ))
        .unwrap();
        let data: Value = serde_json::from_str(refused["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            data,
            json!({"type": "AuthError", "error": "no", "status": 403})
        );
    }
}
