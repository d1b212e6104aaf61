//! Events: record changes (`created`, `updated`, `deleted`), `left` (a record an update took
//! out of a live subscription's view) and `ended` (a subscription the server ended), their
//! frames, and their ordered delivery once the write they follow is durable.
//!
//! The hot path: an event's `data` (`{"action","record"}`) is serialized and escaped once; each
//! matched subscription's frame is that text with its channel name spliced in (one allocation,
//! inherent to a frame that names its channel), and the hub shares each frame by reference
//! count among the sockets on the channel. An encrypted channel's data is sealed once per
//! event and channel (each subscription has a channel, and a key, of its own), never per
//! socket; its key was derived when the subscription was filed. A live subscription's frame
//! has its `seq` spliced into that text ([`Sequenced`]), numbered as it is delivered.
//!
//! With a `realtime_broadcast` hook, each delivery is first decided by it (DESIGN.md §14):
//! suppressed, sent as it is (still the shared text), or sent with the record it returned,
//! serialized for that subscriber only.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::filter::Auth;
use crate::hooks::{Broadcast, BroadcastInput, HookSet, Hooks};
use crate::pusher::encryption::{ChannelKey, sealed_len};
use crate::pusher::outbound;
use crate::pusher::protocol::SocketId;
use crate::pusher::tail::TailRow;
use crate::pusher::{ChannelEvent, Driver};
use crate::store::{Epoch, Store};

use super::live::{Cursor, History};

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
/// string literal every WebSocket frame carries. Both end with the object's `}`, before which
/// a live subscription's `seq` goes.
pub struct EventData {
    /// The event's name on the wire: the action.
    name: &'static str,
    /// `{"action":…,"record":{…}}`
    data: Arc<str>,
    /// The same as a JSON string literal, quotes included.
    escaped: String,
    /// Only for data that may be over the external service's limit once sealed (a superset of
    /// data over it in plain): `{"action","record":{"id","collection_id"},"truncated":true}`,
    /// so the client can fetch the record.
    truncated: Option<Arc<str>>,
}

pub use crate::pusher::Destination;

/// The event payload, serialized straight from the record (no intermediate JSON value).
#[derive(serde::Serialize)]
struct Payload<'a> {
    action: &'static str,
    record: &'a serde_json::Map<String, Value>,
}

/// The longest `seq` a live event's data gains: `,"seq":` and 20 digits.
const SEQ_BYTES: usize = 27;

/// JSON text as a JSON string literal, in a buffer of exactly its length: it lives as long as
/// the event, and a live event lives in its collection's history. JSON text holds no control
/// characters (they are escaped in it), so only quotes and backslashes need a backslash.
fn string_literal(json: &str) -> String {
    debug_assert!(!json.bytes().any(|b| b < b' '), "JSON text: {json}");
    let escapes = json.bytes().filter(|b| matches!(b, b'"' | b'\\')).count();
    let mut literal = String::with_capacity(json.len() + escapes + 2);
    literal.push('"');
    for c in json.chars() {
        if matches!(c, '"' | '\\') {
            literal.push('\\');
        }
        literal.push(c);
    }
    literal.push('"');
    literal
}

/// `data` (a JSON object's text) with `"seq"` as its last key.
/// How many bytes [`with_seq`] adds: `,"seq":N` before the closing brace.
fn seq_len(seq: u64) -> usize {
    r#","seq":"#.len() + seq.checked_ilog10().map_or(1, |power| power as usize + 1)
}

fn with_seq(data: &str, seq: u64) -> String {
    let mut text = String::with_capacity(data.len() + SEQ_BYTES);
    text.push_str(&data[..data.len() - 1]);
    write!(text, r#","seq":{seq}}}"#).expect("writing to a String cannot fail");
    text
}

impl EventData {
    pub fn new(action: Action, record: &serde_json::Map<String, Value>, names: EventNames) -> Self {
        let payload = Payload {
            action: action.as_str(),
            record,
        };
        let data = serde_json::to_string(&payload).expect("a JSON map always serializes");
        // With room for a live subscription's `seq`.
        let truncated =
            (sealed_len(data.len() + SEQ_BYTES) > outbound::MAX_DATA_BYTES).then(|| {
                json!({
                    "action": action.as_str(),
                    "record": { "id": record.get("id"), "collection_id": record.get("collection_id") },
                    "truncated": true,
                })
                .to_string()
                .into()
            });
        Self::from_data(names.name(action.as_str()), data, truncated)
    }

    fn from_data(name: &'static str, data: String, truncated: Option<Arc<str>>) -> Self {
        Self {
            name,
            escaped: string_literal(&data),
            data: data.into(),
            truncated,
        }
    }

    /// `left`: `{"action":"left","record":{"id","collection_id"}}`, for a live subscription
    /// whose view an update took `record` out of (DESIGN.md §13): never its data.
    pub fn left(record: &serde_json::Map<String, Value>, names: EventNames) -> Self {
        let data = json!({
            "action": "left",
            "record": { "id": record.get("id"), "collection_id": record.get("collection_id") },
        })
        .to_string();
        Self::from_data(names.name("left"), data, None)
    }

    /// The length of the data's JSON text.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// The heap the event holds once shared (`Arc<EventData>`): its own allocation, its data's
    /// JSON text, the same as a string literal, and the truncated form, if any. What a history
    /// that keeps it counts against its byte limit (measured by `cargo bench --bench live`).
    pub fn heap_bytes(&self) -> usize {
        /// An `Arc`'s two counts, in front of what it shares.
        const COUNTS: usize = 2 * std::mem::size_of::<usize>();
        COUNTS
            + std::mem::size_of::<Self>()
            + COUNTS
            + self.data.len()
            + self.escaped.capacity()
            + self
                .truncated
                .as_ref()
                .map_or(0, |text| COUNTS + text.len())
    }

    /// `ended`: `{"action":"ended","reason":…}`.
    pub fn ended(reason: EndReason, names: EventNames) -> Self {
        let data = json!({"action": "ended", "reason": reason.as_str()}).to_string();
        Self::from_data(names.name("ended"), data, None)
    }

    /// `data` for the external service: the full payload, or the truncated one when the full
    /// one is over its limit; sealed with `key` for an encrypted channel, the limit applying to
    /// the sealed text (DESIGN.md §15).
    pub fn pusher_data(&self, key: Option<&ChannelKey>) -> Arc<str> {
        self.pusher_data_at(key, None)
    }

    /// [`EventData::pusher_data`], with a live subscription's `seq` in it.
    fn pusher_data_at(&self, key: Option<&ChannelKey>, seq: Option<u64>) -> Arc<str> {
        // Measured, not built.
        let seq_len = seq.map_or(0, seq_len);
        let full_len = match key {
            None => self.data.len() + seq_len,
            Some(_) => sealed_len(self.data.len() + seq_len),
        };
        let data = match &self.truncated {
            Some(truncated) if full_len > outbound::MAX_DATA_BYTES => truncated,
            Some(_) | None => &self.data,
        };
        match (key, seq) {
            (None, None) => data.clone(),
            (None, Some(seq)) => with_seq(data, seq).into(),
            (Some(key), None) => key.seal(data).into(),
            (Some(key), Some(seq)) => key.seal(&with_seq(data, seq)).into(),
        }
    }

    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The frame for one channel. Channel names come from [`super::ChannelNames`] and hold
    /// only characters that need no escaping in JSON.
    pub fn frame(&self, channel: &str) -> Utf8Bytes {
        self.frame_with(channel, self.escaped.len(), |frame| {
            frame.push_str(&self.escaped)
        })
    }

    /// The frame for one destination: for an encrypted channel, its data sealed with the
    /// channel's key (the whole payload: sockets have no size limit to truncate for), written
    /// straight into the frame as a JSON string literal.
    pub fn frame_for(&self, destination: &Destination) -> Utf8Bytes {
        match &destination.key {
            None => self.frame(&destination.channel),
            Some(key) => {
                // The sealed text's 8 quotes are escaped, and the literal is quoted.
                let len = sealed_len(self.data.len()) + 10;
                self.frame_with(&destination.channel, len, |frame| {
                    frame.push('"');
                    key.seal_into(&self.data, "\\\"", frame);
                    frame.push('"');
                })
            }
        }
    }

    /// A frame whose data, a JSON string literal of about `data_len` bytes, `write_data`
    /// appends.
    fn frame_with(
        &self,
        channel: &str,
        data_len: usize,
        write_data: impl FnOnce(&mut String),
    ) -> Utf8Bytes {
        let event = self.name;
        let mut frame = String::with_capacity(40 + event.len() + channel.len() + data_len);
        frame.push_str(r#"{"event":""#);
        frame.push_str(event);
        frame.push_str(r#"","channel":""#);
        frame.push_str(channel);
        frame.push_str(r#"","data":"#);
        write_data(&mut frame);
        frame.push('}');
        Utf8Bytes::from(frame)
    }
}

impl ChannelEvent for EventData {
    fn name(&self) -> &'static str {
        self.name
    }

    fn frame(&self, destination: &Destination) -> Utf8Bytes {
        self.frame_for(destination)
    }

    fn data(&self, destination: &Destination) -> Arc<str> {
        self.pusher_data(destination.key.as_ref())
    }
}

/// An event as one live subscription receives it: its data with the subscription's `seq`
/// last, `{"action",…,"seq":N}`, spliced into the text serialized once.
pub struct Sequenced<'e> {
    pub event: &'e EventData,
    pub seq: u64,
}

impl Sequenced<'_> {
    /// The data as JSON text.
    pub fn text(&self) -> String {
        with_seq(&self.event.data, self.seq)
    }
}

impl ChannelEvent for Sequenced<'_> {
    fn name(&self) -> &'static str {
        self.event.name
    }

    fn frame(&self, destination: &Destination) -> Utf8Bytes {
        let event = self.event;
        match &destination.key {
            None => {
                // The literal ends with the object's `}` and its closing quote.
                let open = &event.escaped[..event.escaped.len() - 2];
                event.frame_with(&destination.channel, open.len() + SEQ_BYTES + 8, |frame| {
                    frame.push_str(open);
                    write!(frame, r#",\"seq\":{}}}""#, self.seq)
                        .expect("writing to a String cannot fail");
                })
            }
            Some(key) => {
                let plain = self.text();
                let len = sealed_len(plain.len()) + 10;
                event.frame_with(&destination.channel, len, |frame| {
                    frame.push('"');
                    key.seal_into(&plain, "\\\"", frame);
                    frame.push('"');
                })
            }
        }
    }

    fn data(&self, destination: &Destination) -> Arc<str> {
        self.event
            .pusher_data_at(destination.key.as_ref(), Some(self.seq))
    }
}

/// A live subscription's destination and its cursor.
#[derive(Clone, Debug)]
pub struct LiveDestination {
    pub destination: Destination,
    pub cursor: Arc<Cursor>,
}

/// One event and the destinations of the subscriptions it matched, to send once the
/// write is durable.
pub struct Delivery {
    /// The store write the event waits for: the record's, or the subscription's removal for
    /// `ended`; `None` for events that store nothing (`/api/realtime/publish`).
    pub epoch: Option<Epoch>,
    pub event: Arc<EventData>,
    pub destinations: Vec<Destination>,
    /// Live subscriptions' destinations: numbered, kept in the history, held for a socket
    /// not there yet, and never excluded (their `seq` would have a gap).
    pub live: Vec<LiveDestination>,
    /// The writer's own socket (`X-Socket-ID`), which is not sent its own change.
    pub except: Option<SocketId>,
    /// Only numbered and kept, not sent: another node sends it (to the external service),
    /// and every node numbers live subscriptions' events alike.
    pub quiet: bool,
    /// A record change's, when `realtime_broadcast` was defined as it was matched.
    pub hooked: Option<Box<Hooked>>,
}

/// What `realtime_broadcast` needs of a record change, carried with its delivery only while
/// the hook is defined (without it, nothing per subscriber is carried).
pub struct Hooked {
    pub action: Action,
    pub record: serde_json::Map<String, Value>,
    pub collection: String,
    pub names: EventNames,
    /// The subscribers' claims, in the order of the delivery's `destinations` and `live`.
    pub plain: Vec<Auth>,
    pub live: Vec<Auth>,
}

/// Deliveries waiting for their writes' durability, per collection, before the collection
/// actor waits to queue more.
pub const DELIVERY_QUEUE: usize = 1024;

/// A collection's deliveries on their way to its delivery task. The actor's steps are not
/// async: they push here while it handles a message, and the actor hands them over after it,
/// waiting while the task's bounded queue is full — a collection whose events wait on a slow
/// disk takes no more messages meanwhile, rather than holding ever more events in memory.
pub struct Outbox {
    pending: std::collections::VecDeque<Delivery>,
    queue: mpsc::Sender<Delivery>,
}

impl Outbox {
    pub fn push(&mut self, delivery: Delivery) {
        self.pending.push_back(delivery);
    }

    /// Hands what was pushed to the delivery task, in order. Cancel-safe: a delivery leaves
    /// the outbox only into a place reserved for it.
    pub async fn flush(&mut self) {
        while !self.pending.is_empty() {
            let Ok(place) = self.queue.reserve().await else {
                // The task has ended: the server is stopping.
                return;
            };
            place.send(self.pending.pop_front().expect("not empty"));
        }
    }
}

/// Starts a collection's delivery task: deliveries go out in the order they were queued (the
/// collection's commit order), each after its write reached the disk, to this server's sockets
/// or, with driver `pusher`, to the external service. Live subscriptions' events are numbered
/// and kept in `history` here, after `realtime_broadcast` (when defined) decided each
/// delivery: a suppressed one takes no `seq`.
pub fn spawn_delivery(
    store: Store,
    driver: Arc<Driver>,
    history: Arc<History>,
    hooks: Arc<Hooks>,
) -> Outbox {
    let (queue, mut deliveries) = mpsc::channel::<Delivery>(DELIVERY_QUEUE);
    tokio::spawn(async move {
        while let Some(delivery) = deliveries.recv().await {
            if let Some(epoch) = delivery.epoch {
                store.durable(epoch).await;
            }
            let hooked = delivery
                .hooked
                .as_deref()
                .and_then(|hooked| Some((hooked, hooks.broadcast_set()?)));
            let sockets = match hooked {
                None => deliver(&delivery, &driver, &history),
                Some((hooked, set)) => {
                    deliver_hooked(&delivery, hooked, &set, &hooks, &driver, &history)
                }
            };
            if !delivery.quiet {
                driver.tail.emit(|| tail_row(&delivery, sockets));
            }
        }
    });
    Outbox {
        pending: Default::default(),
        queue,
    }
}

/// The console tail's row for `delivery`, which reached `sockets` sockets: one per event.
fn tail_row(delivery: &Delivery, sockets: usize) -> TailRow {
    let channel = delivery
        .destinations
        .iter()
        .chain(delivery.live.iter().map(|live| &live.destination))
        .next()
        .map_or("", |destination| &destination.channel);
    TailRow::new(
        "record",
        delivery.event.name(),
        channel,
        delivery.destinations.len() + delivery.live.len(),
        sockets,
        &delivery.event.data,
    )
}

/// The serialize-once path: one event for every destination. Answers the sockets reached.
fn deliver(delivery: &Delivery, driver: &Driver, history: &History) -> usize {
    let mut sockets = 0;
    if !delivery.destinations.is_empty() && !delivery.quiet {
        sockets += driver.deliver(
            &*delivery.event,
            &delivery.destinations,
            delivery.except.as_ref(),
        );
    }
    sockets
        + number_and_send(
            &delivery.event,
            delivery.live.iter(),
            delivery.quiet,
            driver,
            history,
        )
}

/// Numbers `event` for live subscriptions, keeps it, and sends it (unless `quiet`). Answers
/// the sockets reached.
fn number_and_send<'l>(
    event: &Arc<EventData>,
    live: impl ExactSizeIterator<Item = &'l LiveDestination> + Clone,
    quiet: bool,
    driver: &Driver,
    history: &History,
) -> usize {
    if live.len() == 0 {
        return 0;
    }
    let seqs = history.record(event, live.clone().map(|live| &*live.cursor));
    if quiet {
        return 0;
    }
    driver.deliver_live(
        live.zip(seqs)
            .filter_map(|(live, seq)| Some((Sequenced { event, seq: seq? }, &live.destination))),
    )
}

/// With `realtime_broadcast`: each delivery is decided by the hook, with its subscriber's
/// claims. Those it leaves as they are still share the event serialized once; a record it
/// replaces is serialized for that subscriber only. A live subscription is numbered only for
/// what it is sent, so every node (each runs the same hooks) numbers alike.
fn deliver_hooked(
    delivery: &Delivery,
    hooked: &Hooked,
    set: &HookSet,
    hooks: &Hooks,
    driver: &Driver,
    history: &History,
) -> usize {
    let mut sockets = 0;
    let input = BroadcastInput::new(hooked.action.as_str(), &hooked.record, &hooked.collection);
    let own = |record: &serde_json::Map<String, Value>| {
        Arc::new(EventData::new(hooked.action, record, hooked.names))
    };
    // Nothing is sent to plain subscriptions from a quiet delivery, and nothing numbered.
    if !delivery.quiet {
        let mut as_is = Vec::with_capacity(delivery.destinations.len());
        for (destination, auth) in delivery.destinations.iter().zip(&hooked.plain) {
            match hooks.broadcast(set, &input, &destination.channel, auth) {
                Broadcast::AsIs => as_is.push(destination.clone()),
                Broadcast::Suppress => {}
                Broadcast::Record(record) => {
                    sockets += driver.deliver(
                        &*own(&record),
                        std::slice::from_ref(destination),
                        delivery.except.as_ref(),
                    )
                }
            }
        }
        if !as_is.is_empty() {
            sockets += driver.deliver(&*delivery.event, &as_is, delivery.except.as_ref());
        }
    }
    let mut as_is = Vec::with_capacity(delivery.live.len());
    for (live, auth) in delivery.live.iter().zip(&hooked.live) {
        match hooks.broadcast(set, &input, &live.destination.channel, auth) {
            Broadcast::AsIs => as_is.push(live),
            Broadcast::Suppress => {}
            Broadcast::Record(record) => {
                sockets += number_and_send(
                    &own(&record),
                    std::iter::once(live),
                    delivery.quiet,
                    driver,
                    history,
                )
            }
        }
    }
    sockets
        + number_and_send(
            &delivery.event,
            as_is.into_iter(),
            delivery.quiet,
            driver,
            history,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seq_adds_the_bytes_it_is_measured_at() {
        let data = r#"{"action":"created","record":{"id":"a"}}"#;
        for seq in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX] {
            let numbered = with_seq(data, seq);
            assert_eq!(numbered.len(), data.len() + seq_len(seq), "{numbered}");
            assert!(
                numbered.ends_with(&format!(r#","seq":{seq}}}"#)),
                "{numbered}"
            );
        }
    }

    #[tokio::test]
    async fn a_full_delivery_queue_makes_the_outbox_wait() {
        let (queue, mut task) = mpsc::channel(2);
        let mut outbox = Outbox {
            pending: Default::default(),
            queue,
        };
        let ended = || Delivery {
            epoch: None,
            event: Arc::new(EventData::ended(
                EndReason::RuleChanged,
                EventNames::Actions,
            )),
            destinations: Vec::new(),
            live: Vec::new(),
            except: None,
            quiet: false,
            hooked: None,
        };
        for _ in 0..3 {
            outbox.push(ended());
        }
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), outbox.flush()).await;
        assert!(waited.is_err(), "the third waits for room");
        // Room again: what waited goes, in order, and nothing is lost.
        assert!(task.recv().await.is_some());
        outbox.flush().await;
        let mut received = 1;
        while task.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 3);
    }

    #[test]
    fn the_string_literal_is_what_serde_writes_and_no_larger() {
        let record = json!({"id": "r1", "t": "He said \"hi\"\n\\ \u{1}é\u{85}\u{2028}", "n": [1, {"a": null}]});
        for text in [
            record.to_string(),
            "{}".to_owned(),
            r#"{"a":"\\\""}"#.to_owned(),
        ] {
            let literal = string_literal(&text);
            assert_eq!(literal, serde_json::to_string(&text).unwrap());
            assert_eq!(literal.capacity(), literal.len());
        }
    }

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

    /// Opens what [`ChannelKey::seal`] made, with the key as a client gets it.
    fn open(sealed: &str, key: &ChannelKey) -> Value {
        use base64::Engine as _;
        use crypto_secretbox::aead::{Aead, KeyInit};
        let b64 = base64::engine::general_purpose::STANDARD;
        let secret: [u8; 32] = b64.decode(key.shared_secret()).unwrap().try_into().unwrap();
        let fields: Value = serde_json::from_str(sealed).unwrap();
        let nonce = b64.decode(fields["nonce"].as_str().unwrap()).unwrap();
        let ciphertext = b64.decode(fields["ciphertext"].as_str().unwrap()).unwrap();
        let plain = crypto_secretbox::XSalsa20Poly1305::new(&secret.into())
            .decrypt(
                crypto_secretbox::Nonce::from_slice(&nonce),
                ciphertext.as_slice(),
            )
            .unwrap();
        serde_json::from_slice(&plain).unwrap()
    }

    #[test]
    fn encrypted_channels_get_sealed_data() {
        let record = json!({"id": "r1", "title": "secret"});
        let data = EventData::new(
            Action::Created,
            record.as_object().unwrap(),
            EventNames::Actions,
        );
        let channel = "private-encrypted-velo.realtime.x";
        let key = ChannelKey::derive(channel, &[3; 32]);
        let destination = Destination {
            channel: channel.into(),
            key: Some(key.clone()),
        };
        let frame: Value = serde_json::from_str(&data.frame_for(&destination)).unwrap();
        assert_eq!(frame["event"], "created");
        assert_eq!(frame["channel"], channel);
        let sealed = frame["data"].as_str().unwrap();
        assert!(!sealed.contains("secret"), "{sealed}");
        let expected = json!({"action": "created", "record": record});
        assert_eq!(open(sealed, &key), expected);
        assert_eq!(open(&data.pusher_data(Some(&key)), &key), expected);
        let plain = Destination {
            channel: "private-velo.realtime.x".into(),
            key: None,
        };
        assert_eq!(
            data.frame_for(&plain),
            data.frame("private-velo.realtime.x")
        );
    }

    #[test]
    fn the_size_limit_applies_to_the_sealed_data() {
        // Under the limit in plain, over it once sealed (base64 grows it by a third).
        let title = "x".repeat(outbound::MAX_DATA_BYTES * 7 / 8);
        let record = json!({"id": "r1", "collection_id": "c1", "title": title});
        let data = EventData::new(
            Action::Updated,
            record.as_object().unwrap(),
            EventNames::Actions,
        );
        let plain = data.pusher_data(None);
        assert!(plain.len() <= outbound::MAX_DATA_BYTES);
        assert_eq!(
            serde_json::from_str::<Value>(&plain).unwrap()["record"],
            record
        );
        let key = ChannelKey::derive("private-encrypted-x", &[3; 32]);
        let sealed = data.pusher_data(Some(&key));
        assert!(sealed.len() <= outbound::MAX_DATA_BYTES, "{}", sealed.len());
        assert_eq!(
            open(&sealed, &key),
            json!({
                "action": "updated",
                "record": {"id": "r1", "collection_id": "c1"},
                "truncated": true,
            })
        );
        // A small event is sealed whole.
        let small = EventData::ended(EndReason::RuleChanged, EventNames::Actions);
        assert_eq!(
            open(&small.pusher_data(Some(&key)), &key),
            json!({"action": "ended", "reason": "rule_changed"})
        );
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
