//! The built-in driver: a Pusher-protocol WebSocket server (Reverb's role) on the API's port,
//! its fan-out hub, and the signed Pusher HTTP API (PUSHER.md).
//!
//! * [`protocol`]: codes, ids, channel names, frames.
//! * [`signature`]: channel authorizations and HTTP API request signatures.
//! * [`hub`]: channel -> connections, bounded per-connection queues.
//! * [`cache`]: the last event of each cache channel, replayed to new subscribers.
//! * [`encryption`]: encrypted channels' keys and sealed event data.
//! * [`presence`]: who is on each presence channel and which channels are occupied, behind the
//!   seam cluster mode fills.
//! * [`peers`]: the other nodes (cluster mode): what this node tells them, and the
//!   cluster-wide channel counts.
//! * [`webhooks`]: what happened on channels, posted to the app's URLs.
//! * `connection`: one socket's reader and writer.
//! * [`trigger`]: events triggered by the HTTP API, hooks and the console: checked and sent.
//! * [`http_api`]: `/apps/{id}/events`, `batch_events`, `channels`.
//! * [`tail`]: one row per event sent, for the consoles watching.
//!
//! This module knows channels and sockets, not collections or filters.

pub mod cache;
mod connection;
pub mod encryption;
pub mod http_api;
pub mod hub;
pub mod outbound;
pub mod peers;
pub mod presence;
pub mod protocol;
pub mod signature;
pub mod tail;
pub mod trigger;
pub mod webhooks;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use poem::http::{StatusCode, header};
use poem::web::{Path, Query};
use poem::{Body, Request, Response, handler};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use cache::EventCache;
use connection::Handshake;
use hub::Hub;
use outbound::Outbound;
use peers::{ChannelFrame, PeerMessage, Peers, Unavailable};
use presence::{LocalPresence, Presence};
use protocol::Code;
use signature::AppCredentials;
use webhooks::Webhooks;

use crate::limits::TrustedProxies;
use crate::metrics::Metrics;
use encryption::ChannelKey;
use outbound::OutEvent;
use protocol::SocketId;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Where an event goes: a Pusher channel and, for a `private-encrypted-` channel, its key.
#[derive(Clone, Debug)]
pub struct Destination {
    pub channel: Arc<str>,
    pub key: Option<ChannelKey>,
}

/// An event the driver sends to channels: built once, then framed (for sockets) or given as
/// `data` (for an external service's HTTP API) per destination.
pub trait ChannelEvent {
    /// The event's name on the wire.
    fn name(&self) -> &'static str;
    /// The WebSocket frame for one destination.
    fn frame(&self, destination: &Destination) -> Utf8Bytes;
    /// The `data` for one destination through the Pusher HTTP API.
    fn data(&self, destination: &Destination) -> Arc<str>;
}

/// The driver's limits and timings (DESIGN.md §9).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// Largest client frame accepted; a larger one gets `pusher:error` 4301, and the
    /// connection stays open.
    pub max_message_bytes: usize,
    pub max_channels_per_socket: usize,
    /// Frames waiting for a slow client before it is closed with 4100.
    pub queue_frames: usize,
    /// Silence after which the server pings (sent to clients in the handshake).
    pub activity_timeout: Duration,
    /// How long a ping waits for any reply before 4201.
    pub pong_timeout: Duration,
    pub client_events: bool,
    /// WebSocket connections from one client address (0: unlimited); more get 4100.
    pub max_connections_per_address: usize,
    /// How long a cache channel's last event is kept (`None`: until replaced).
    pub cache_ttl: Option<Duration>,
    /// Cache channels with an event kept, at most (0: unlimited).
    pub cache_max_channels: usize,
    /// Members (users) of one presence channel, at most (0: unlimited); more get
    /// `subscription_error` `LimitReached` 4100.
    pub presence_max_members: usize,
    /// Largest `user_info` of a presence member, serialized (0: unlimited); larger gets 4301.
    pub presence_max_user_info_bytes: usize,
}

/// Frames larger than this cannot be read (tungstenite's hard limit): they are answered with
/// `pusher:error` 4301 and the connection is closed with 1009. Up to it, frames over
/// [`Limits::max_message_bytes`] are answered with 4301 and the connection kept.
const HARD_FRAME_LIMIT: usize = 256 << 10;

/// The running driver: its app, hub and limits. Shared by the WebSocket endpoint, the HTTP API
/// and the engine (which publishes through the hub).
pub struct Driver {
    pub app: AppCredentials,
    pub hub: Hub,
    /// The last event of each cache channel.
    pub cache: EventCache,
    /// Who is on each presence channel; which channels are occupied.
    pub presence: Box<dyn Presence>,
    /// The other nodes, in cluster mode.
    pub peers: Option<Box<dyn Peers>>,
    /// One subscribe, join or leave at a time per channel.
    pub turns: presence::Turns,
    /// Where channel events are posted (none configured: nothing is built or sent).
    pub webhooks: Webhooks,
    pub limits: Limits,
    /// The server's counters (deliveries, slow consumers, and the engine's).
    pub metrics: Arc<Metrics>,
    /// With driver `pusher`: the external service events go to instead of the hub.
    pub outbound: Option<Outbound>,
    /// Channels the external service reported occupied (its webhooks): they keep their
    /// subscriptions alive as a local socket would.
    externally_occupied: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Browser origins allowed to connect; `None` allows all.
    pub allowed_origins: Option<Vec<String>>,
    /// Proxies whose `X-Forwarded-For` names the client (per-address limits).
    pub trusted_proxies: TrustedProxies,
    /// The events sent, for the consoles watching (nothing is built while none does).
    pub tail: tail::Tail,
}

impl Driver {
    pub fn new(
        app: AppCredentials,
        limits: Limits,
        allowed_origins: Option<Vec<String>>,
        trusted_proxies: TrustedProxies,
        metrics: Arc<Metrics>,
        outbound: Option<Outbound>,
        webhooks: Webhooks,
    ) -> Self {
        Self {
            hub: Hub::new(limits.max_connections, limits.max_connections_per_address),
            cache: EventCache::new(limits.cache_ttl, limits.cache_max_channels),
            presence: Box::new(LocalPresence::default()),
            peers: None,
            turns: presence::Turns::default(),
            webhooks,
            trusted_proxies,
            metrics,
            outbound,
            externally_occupied: Default::default(),
            app,
            limits,
            allowed_origins,
            tail: tail::Tail::default(),
        }
    }

    /// Cluster mode: presence and occupancy decided across nodes, and the other nodes to tell.
    pub fn with_cluster(mut self, presence: Box<dyn Presence>, peers: Box<dyn Peers>) -> Self {
        self.presence = presence;
        self.peers = Some(peers);
        self
    }

    /// `user_id` is no longer a member of `channel` (decided here): every node's sockets there
    /// and the webhooks hear it; `seq` is its place in the channel's member history.
    pub fn member_removed(&self, channel: &str, user_id: &str, seq: Option<u64>) {
        let removed = tokio_tungstenite::tungstenite::Utf8Bytes::from(
            protocol::frames::member_removed(channel, user_id),
        );
        self.hub.publish(channel, &removed, None);
        self.forward(|| PeerMessage::Frames {
            frames: vec![ChannelFrame {
                channel: channel.to_owned(),
                frame: removed,
                except: None,
                seq,
            }],
            keep: false,
        });
        self.webhooks.member_removed(channel, user_id);
    }

    /// Tells the other nodes, best effort, if there are any.
    pub fn forward(&self, message: impl FnOnce() -> PeerMessage) {
        if let Some(peers) = &self.peers {
            peers.forward(message());
        }
    }

    /// Delivers what another node sent to this node's sockets.
    pub fn receive(&self, message: PeerMessage) {
        match message {
            PeerMessage::Frames { frames, keep } => {
                for frame in &frames {
                    self.publish_frame(frame, keep);
                }
            }
            PeerMessage::Terminate { user_id } => self.terminate(&user_id),
        }
    }

    /// Queues `frame` to this node's sockets on its channel; `keep`: a cache channel keeps it
    /// as its last event (HTTP API triggers).
    /// Answers how many sockets it was queued to.
    pub fn publish_frame(&self, frame: &ChannelFrame, keep: bool) -> usize {
        let channel = frame.channel.as_str();
        let mut sockets = 0;
        let mut send = || {
            let except = frame.except.as_ref();
            sockets = match frame.seq {
                None => self.hub.publish(channel, &frame.frame, except),
                Some(seq) => self.hub.publish_after(channel, &frame.frame, except, seq),
            };
        };
        if keep && cache::is_cache_channel(channel) {
            self.cache
                .publish(channel, &frame.frame, std::time::Instant::now(), send);
        } else {
            send();
        }
        sockets
    }

    /// Closes this node's connections signed in as `user_id` with 4009.
    pub fn terminate(&self, user_id: &str) {
        let channel = format!("{}{user_id}", protocol::USER_CHANNEL_PREFIX);
        for connection in self.hub.listeners(&channel) {
            // Each close waits for room in its queue: none waits for another.
            tokio::spawn(async move {
                connection
                    .close(Code::Unauthorized, "Connection terminated by the server")
                    .await;
            });
        }
    }

    /// `channel`'s subscriptions: this node's, or every node's in cluster mode.
    pub async fn subscription_count(&self, channel: &str) -> Result<usize, Unavailable> {
        match &self.peers {
            None => Ok(self.hub.subscription_count(channel)),
            Some(peers) => peers.subscription_count(channel).await,
        }
    }

    /// Occupied channels whose name starts with `prefix`, with their subscription counts
    /// (every node's in cluster mode), sorted by name.
    pub async fn channels(&self, prefix: &str) -> Result<Vec<(String, usize)>, Unavailable> {
        match &self.peers {
            None => Ok(self.hub.channels(prefix)),
            Some(peers) => peers.channels(prefix).await,
        }
    }

    /// Sends `event` to each destination but not to `except`'s socket: to this server's
    /// sockets, or with driver `pusher` to the external service. The one place that chooses.
    /// Answers how many of this server's sockets it was queued to.
    pub fn deliver(
        &self,
        event: &impl ChannelEvent,
        destinations: &[Destination],
        except: Option<&SocketId>,
    ) -> usize {
        let sent = destinations
            .iter()
            .map(|destination| match &self.outbound {
                None => {
                    self.hub
                        .publish_with(&destination.channel, || event.frame(destination), except)
                }
                Some(outbound) => Self::send_external(outbound, event, destination, except),
            })
            .sum();
        self.metrics.deliveries.inc_by(sent as u64);
        sent
    }

    /// Sends live subscriptions' events, each to its own channel (each event carries its
    /// subscription's `seq`): to this server's sockets, or held for a channel's first socket
    /// when none listens yet; with driver `pusher`, to the external service. Nobody is left
    /// out: a live subscription receives its own writes (DESIGN.md §15). Answers how many of
    /// this server's sockets they were queued to.
    pub fn deliver_live<'d, E: ChannelEvent>(
        &self,
        events: impl Iterator<Item = (E, &'d Destination)>,
    ) -> usize {
        let sent = events
            .map(|(event, destination)| match &self.outbound {
                None => self
                    .hub
                    .publish_or_hold(&destination.channel, || event.frame(destination)),
                Some(outbound) => Self::send_external(outbound, &event, destination, None),
            })
            .sum();
        self.metrics.deliveries.inc_by(sent as u64);
        sent
    }

    /// Queues `event` for the external service's channel (none of this server's sockets).
    fn send_external(
        outbound: &Outbound,
        event: &impl ChannelEvent,
        destination: &Destination,
        except: Option<&SocketId>,
    ) -> usize {
        outbound.send(OutEvent {
            name: Cow::Borrowed(event.name()),
            channel: destination.channel.clone(),
            data: event.data(destination),
            socket_id: except.map(|socket| socket.as_str().to_owned()),
        });
        0
    }

    /// A socket came to `channel` on this node (`came`) or left it; `edge` when it was the
    /// node's first or last there (the hub says). When the seam says that makes the channel
    /// occupied or vacant everywhere, the webhooks hear of it. Users' own channels are not the
    /// app's: they report nothing. In the channel's turn.
    pub async fn node_occupancy(&self, channel: &str, came: bool, edge: bool) {
        if channel.starts_with(protocol::USER_CHANNEL_PREFIX)
            || !(edge || self.presence.counts_subscribers())
        {
            return;
        }
        let subscribers = self.hub.subscription_count(channel);
        if !self
            .presence
            .node_occupancy(channel, subscribers, came)
            .await
        {
            return;
        }
        if came {
            self.webhooks.channel_occupied(channel);
        } else {
            self.webhooks.channel_vacated(channel);
        }
    }

    /// The app channel authorizations are signed for: the external one with driver `pusher`.
    pub fn signing_app(&self) -> &AppCredentials {
        self.outbound
            .as_ref()
            .map_or(&self.app, |outbound| &outbound.app)
    }

    /// Whether someone listens on `channel`: a socket here, or one the external service
    /// reported.
    pub fn is_occupied(&self, channel: &str) -> bool {
        self.hub.subscription_count(channel) > 0
            || self
                .externally_occupied
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(channel)
    }

    /// Records the external service's `channel_occupied` / `channel_vacated`.
    pub fn set_externally_occupied(&self, channel: &str, occupied: bool) {
        let mut channels = self
            .externally_occupied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if occupied {
            channels.insert(channel.to_owned());
        } else {
            channels.remove(channel);
        }
    }

    /// `channel`'s turn, when its subscribes and leaves must be taken one at a time: always on
    /// a presence channel (member events), elsewhere when webhooks report occupancy (their
    /// order) or the seam counts every subscriber (cluster mode: the counts sent to Redis in
    /// the hub's order). Other subscribes skip the wait (measured: `cargo bench --bench
    /// presence`).
    pub async fn turn(&self, channel: &str) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let ordered = channel.starts_with("presence-")
            || self.presence.counts_subscribers()
            || self.webhooks.wants(webhooks::Kind::ChannelOccupied)
            || self.webhooks.wants(webhooks::Kind::ChannelVacated);
        match ordered {
            true => Some(self.turns.take(channel).await),
            false => None,
        }
    }

    fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match (&self.allowed_origins, origin) {
            (None, _) | (Some(_), None) => true,
            (Some(allowed), Some(origin)) => allowed.iter().any(|allowed| allowed == origin),
        }
    }
}

/// `protocol` query parameter: absent is 7; 5 to 7 are spoken.
fn protocol_version(value: Option<&str>) -> Result<u8, Code> {
    match value {
        None => Ok(7),
        Some(text) => match text.parse::<u8>() {
            Err(_) => Err(Code::InvalidVersion),
            Ok(version @ 5..=7) => Ok(version),
            Ok(_) => Err(Code::UnsupportedProtocol),
        },
    }
}

#[derive(serde::Deserialize)]
struct ConnectQuery {
    protocol: Option<String>,
}

/// `GET /app/{key}`: upgrades to a WebSocket and hands the socket to a connection task.
#[handler]
pub async fn websocket(
    request: &Request,
    Path(key): Path<String>,
    Query(query): Query<ConnectQuery>,
    driver: poem::web::Data<&Arc<Driver>>,
) -> Response {
    let headers = request.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    let Some(accept) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| upgrade)
        .map(|key| derive_accept_key(key.as_bytes()))
    else {
        return Response::builder()
            .status(StatusCode::UPGRADE_REQUIRED)
            .header(header::UPGRADE, "websocket")
            .content_type("application/json")
            .body(r#"{"message":"this endpoint speaks the Pusher protocol over WebSocket"}"#);
    };
    let Ok(on_upgrade) = request.take_upgrade() else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .content_type("application/json")
            .body(r#"{"message":"the connection cannot be upgraded"}"#);
    };
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok());
    let handshake = Handshake {
        key_known: key == driver.app.key,
        protocol: protocol_version(query.protocol.as_deref()),
        origin_allowed: driver.origin_allowed(origin),
        address: driver.trusted_proxies.client_address(request),
    };
    let driver = Arc::clone(&driver);
    tokio::spawn(async move {
        // Bounded: the server drops a connection that has not handed the upgrade over within
        // the header-read timeout of its 101 (`http_server`), which ends this wait.
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade failed");
                return;
            }
        };
        // Small buffers: an idle connection should cost a few KiB, not tungstenite's 128 KiB
        // (1 KiB reads: 6.3 KiB per idle connection measured, against 9.3 with 4 KiB). Frames
        // are buffered up to `WRITE_BUFFER` until the writer flushes its batch: one `send`
        // for many frames (0 here made every frame a system call of its own).
        let config = WebSocketConfig::default()
            .read_buffer_size(1 << 10)
            .write_buffer_size(connection::WRITE_BUFFER)
            .max_message_size(Some(HARD_FRAME_LIMIT))
            .max_frame_size(Some(HARD_FRAME_LIMIT));
        let socket = WebSocketStream::from_raw_socket(upgraded, Role::Server, Some(config)).await;
        connection::serve(socket, driver, handshake).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions() {
        assert_eq!(protocol_version(None), Ok(7));
        assert_eq!(protocol_version(Some("6")), Ok(6), "pysher");
        assert_eq!(protocol_version(Some("5")), Ok(5));
        assert_eq!(protocol_version(Some("8")), Err(Code::UnsupportedProtocol));
        assert_eq!(protocol_version(Some("4")), Err(Code::UnsupportedProtocol));
        assert_eq!(protocol_version(Some("seven")), Err(Code::InvalidVersion));
    }
}
