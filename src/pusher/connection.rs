//! One WebSocket connection of the built-in driver, from the handshake to the close.
//!
//! Two tasks per connection: the reader (this module's [`serve`]) handles what the client
//! sends and watches for inactivity; the writer drains the connection's bounded queue, writing
//! every frame that is ready before one flush. Errors of one connection end that connection and
//! are logged; they never reach the server.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use poem::Upgraded;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::hub::{Connection, Outbound, Refusal};
use super::peers::{ChannelFrame, PeerMessage, Unavailable};
use super::presence::{JoinError, Member};
use super::protocol::{
    ChannelKind, ClientFrame, Code, SocketId, SubscribeData, USER_CHANNEL_PREFIX, channel_kind,
    frames,
};
use super::{Driver, cache};
use crate::auth::constant_time_eq;
use crate::metrics::Metrics;

/// Frames the writer takes from the queue before one flush.
const WRITE_BATCH: usize = 16;
/// Bytes of frames buffered before they are written even mid-batch. tungstenite's buffer keeps
/// its capacity, so this bounds what a busy connection holds: measured at broadcast N=10k,
/// about 3.4 KiB per busy connection with 4 KiB (7.2 with 8 KiB and 32-frame batches, for no
/// measurable gain in deliveries/s). An idle connection holds only its largest frame.
pub const WRITE_BUFFER: usize = 4 * 1024;

/// What the upgrade request said, checked once the socket is open (Pusher clients expect the
/// refusal as a `pusher:error` on the socket, not as an HTTP status).
pub struct Handshake {
    pub key_known: bool,
    pub protocol: Result<u8, Code>,
    pub origin_allowed: bool,
    /// The client's address, for the per-address connection limit.
    pub address: IpAddr,
}

/// Runs a connection to its end.
pub async fn serve(socket: WebSocketStream<Upgraded>, driver: Arc<Driver>, handshake: Handshake) {
    let (sink, stream) = socket.split();
    let (queue, outbound) = mpsc::channel(driver.limits.queue_frames);
    let connection = Arc::new(Connection::new(SocketId::random(), queue));
    let mut writer = tokio::spawn(write(
        sink,
        outbound,
        connection.id.clone(),
        connection.overflow_signal(),
        driver.hub.shutdown_signal(),
        driver.metrics.clone(),
    ));

    let refusal = if !handshake.key_known {
        Some((Code::UnknownApp, "Application does not exist".to_owned()))
    } else if let Err(code) = handshake.protocol {
        Some((code, "Unsupported protocol version".to_owned()))
    } else if !handshake.origin_allowed {
        Some((Code::Unauthorized, "Origin not allowed".to_owned()))
    } else {
        None
    };
    if let Some((code, message)) = refusal {
        connection.close(code, message).await;
        let_writer_finish(writer).await;
        return;
    }
    let _slot = match driver.hub.admit(handshake.address) {
        Ok(slot) => slot,
        Err(refusal) => {
            let (code, message) = match refusal {
                Refusal::OverQuota => (Code::OverQuota, "Over connection quota"),
                Refusal::OverAddressQuota => {
                    driver.metrics.limited_connections_per_address.inc();
                    (
                        Code::OverCapacity,
                        "Too many connections from this address; retry later",
                    )
                }
            };
            connection.close(code, message).await;
            let_writer_finish(writer).await;
            return;
        }
    };

    let mut session = Session {
        driver: &driver,
        connection: &connection,
        channels: Vec::new(),
        memberships: Vec::new(),
        user_id: None,
        client_events: RateLimit::new(),
    };
    session.send(frames::connection_established(
        &connection.id,
        driver.limits.activity_timeout.as_secs(),
    ));
    tracing::debug!(socket = %connection.id, "connected");
    let writer_ended = tokio::select! {
        () = session.read(stream) => false,
        _ = &mut writer => true,
    };
    // Every channel (a reader cut off mid-leave has kept the channel, and so leaves it now).
    while let Some(channel) = session.channels.last().cloned() {
        session.leave(&channel).await;
    }
    drop(session);
    // With the hub's and this last handle gone the queue closes: the writer drains it and ends.
    drop(connection);
    if !writer_ended {
        let_writer_finish(writer).await;
    }
    tracing::debug!("disconnected");
}

/// Waits for the writer to write what is queued and close, for at most [`CLOSE_GRACE`]; then
/// ends it, dropping the socket. A client that stopped reading holds a blocked write for as
/// long as it likes (the kernel keeps probing a zero window while the client answers), and
/// once the reader has ended nothing else would free the connection.
async fn let_writer_finish(mut writer: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(CLOSE_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// The reader side's state.
struct Session<'a> {
    driver: &'a Driver,
    connection: &'a Arc<Connection>,
    channels: Vec<String>,
    /// Presence channels joined, with the user id joined as.
    memberships: Vec<(String, String)>,
    /// The user signed in on this connection (`pusher:signin`).
    user_id: Option<String>,
    client_events: RateLimit,
}

impl Session<'_> {
    fn send(&self, frame: String) {
        self.connection.send(Utf8Bytes::from(frame));
    }

    fn error(&self, code: Option<Code>, message: &str) {
        self.send(frames::error(code, message));
    }

    /// Refuses a subscription to `channel`: `pusher:subscription_error` of `kind` and `status`.
    fn refuse(&self, channel: &str, kind: &str, status: u16, message: &str) {
        self.send(frames::subscription_error(channel, kind, status, message));
    }

    async fn read(
        &mut self,
        mut stream: futures_util::stream::SplitStream<WebSocketStream<Upgraded>>,
    ) {
        let limits = &self.driver.limits;
        let mut awaiting_pong = false;
        loop {
            let wait = if awaiting_pong {
                limits.pong_timeout
            } else {
                limits.activity_timeout
            };
            let message = match tokio::time::timeout(wait, stream.next()).await {
                Err(_) if awaiting_pong => {
                    self.connection
                        .close(Code::PongNotReceived, "Pong reply not received in time")
                        .await;
                    return;
                }
                Err(_) => {
                    awaiting_pong = true;
                    self.send(frames::ping());
                    continue;
                }
                Ok(Some(Err(WsError::Capacity(error)))) => {
                    // The frame cannot be read past: say why before the connection ends.
                    self.connection
                        .close(
                            Code::ClientLimit,
                            format!("Message too large to read ({error}); the connection closes"),
                        )
                        .await;
                    return;
                }
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(message))) => message,
            };
            awaiting_pong = false;
            match message {
                Message::Text(text) => self.handle(&text).await,
                Message::Binary(_) => {
                    self.error(None, "Binary frames are not supported; send JSON text")
                }
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    async fn handle(&mut self, text: &str) {
        let limit = self.driver.limits.max_message_bytes;
        if text.len() > limit {
            self.error(
                Some(Code::ClientLimit),
                &format!(
                    "Message of {} bytes is over the limit of {limit} bytes",
                    text.len()
                ),
            );
            return;
        }
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(_) => {
                self.error(
                    None,
                    "Invalid message: expected JSON {\"event\", \"channel\"?, \"data\"?}",
                );
                return;
            }
        };
        match frame.event.as_str() {
            "pusher:ping" => self.send(frames::pong()),
            "pusher:pong" => {}
            "pusher:subscribe" => self.subscribe(&frame).await,
            "pusher:unsubscribe" => {
                if let Some(channel) = frame
                    .data_object()
                    .and_then(|data| data.get("channel")?.as_str().map(str::to_owned))
                    && self.channels.contains(&channel)
                    && !self.is_own_user_channel(&channel)
                {
                    self.leave(&channel).await;
                }
            }
            event if event.starts_with("client-") => self.client_event(&frame),
            "pusher:signin" => self.signin(&frame).await,
            _ => {}
        }
    }

    async fn subscribe(&mut self, frame: &ClientFrame) {
        let Some(data) = frame
            .data_object()
            .and_then(|data| serde_json::from_value::<SubscribeData>(data.into()).ok())
        else {
            self.error(None, "Invalid pusher:subscribe: data must hold a `channel`");
            return;
        };
        let channel = data.channel.as_str();
        let refuse =
            |status: u16, message: &str| self.refuse(channel, "AuthError", status, message);
        let Some(kind) = channel_kind(channel) else {
            refuse(400, "Invalid channel name");
            return;
        };
        if self.channels.iter().any(|known| known == channel) {
            // Already subscribed: confirmed again, with the members on a presence channel
            // (pusher-js reads them from every confirmation).
            let again = if kind == ChannelKind::Presence {
                match self.driver.presence.members(channel).await {
                    Ok(members) => frames::presence_succeeded(channel, &members),
                    Err(unavailable) => {
                        self.refuse_unavailable(channel, &unavailable);
                        return;
                    }
                }
            } else {
                frames::subscription_succeeded(channel)
            };
            self.send(again);
            return;
        }
        if self.channels.len() >= self.driver.limits.max_channels_per_socket {
            refuse(429, "Too many channels on this connection");
            return;
        }
        match kind {
            ChannelKind::Public => {}
            ChannelKind::Private | ChannelKind::Encrypted => {
                let auth = data.auth.as_deref().unwrap_or_default();
                if !self
                    .driver
                    .app
                    .verify(auth, self.connection.id.as_str(), channel, None)
                {
                    refuse(
                        401,
                        "Invalid signature: expected an HMAC SHA256 hex digest of socket_id:channel",
                    );
                    return;
                }
            }
            ChannelKind::Presence => {
                let Some(member) = self.presence_member(channel, &data) else {
                    return;
                };
                self.join(channel, member).await;
                return;
            }
            ChannelKind::User => {
                if !self.is_own_user_channel(channel) {
                    refuse(
                        403,
                        "Only the user signed in on this connection may subscribe",
                    );
                    return;
                }
            }
        }
        let driver = self.driver;
        let _turn = driver.turn(channel).await;
        self.channels.push(channel.to_owned());
        let succeeded = frames::subscription_succeeded(channel);
        self.enter(channel, succeeded, 0).await;
    }

    /// Puts this socket on `channel` (in the channel's turn) and confirms with `succeeded`:
    /// the channel's first subscriber tells the webhooks it is occupied, and a cache channel's
    /// last event (or `pusher:cache_miss`) follows the confirmation with no trigger between.
    /// The channel is in the session's list already (so that a reader cut off in here still
    /// leaves it when the connection ends).
    /// On a presence channel in cluster mode, `since` is where its member list was read.
    async fn enter(&mut self, channel: &str, succeeded: String, since: u64) {
        let hub = &self.driver.hub;
        let succeeded = Some(Utf8Bytes::from(succeeded));
        let (first, missed) = if cache::is_cache_channel(channel) {
            self.driver.cache.join(channel, Instant::now(), |last| {
                let first = hub.subscribe_since(channel, self.connection, since, succeeded);
                (first, !self.replay(channel, last))
            })
        } else {
            let first = hub.subscribe_since(channel, self.connection, since, succeeded);
            (first, false)
        };
        self.driver.node_occupancy(channel, true, first).await;
        if missed {
            self.driver.webhooks.cache_miss(channel);
        }
    }

    /// A cache channel's last event for a new subscriber, or `pusher:cache_miss`; false when
    /// there was none.
    fn replay(&self, channel: &str, last: Option<Utf8Bytes>) -> bool {
        match last {
            Some(last) => {
                self.connection.send(last);
                true
            }
            None => {
                self.send(frames::cache_miss(channel));
                false
            }
        }
    }

    fn client_event(&mut self, frame: &ClientFrame) {
        if !self.driver.limits.client_events {
            self.error(None, "Client events are not enabled for this app");
            return;
        }
        let Some(channel) = frame.channel.as_deref() else {
            self.error(None, "A client event needs a channel");
            return;
        };
        let allowed = matches!(
            channel_kind(channel),
            Some(ChannelKind::Private | ChannelKind::Presence)
        );
        if !allowed || !self.channels.iter().any(|known| known == channel) {
            self.error(
                None,
                "Client events go to private channels the sender is subscribed to",
            );
            return;
        }
        if !self.client_events.allow() {
            self.error(
                Some(Code::ClientLimit),
                "Client event rate limit exceeded: 10 per second",
            );
            return;
        }
        let user_id = self.member_id(channel);
        // The webhook first: a receiver of the event may leave at once, and its
        // `member_removed` must not overtake this `client_event`.
        self.driver.webhooks.client_event(
            channel,
            &frame.event,
            &frame.data,
            self.connection.id.as_str(),
            user_id,
        );
        let relayed = Utf8Bytes::from(frames::client_event(
            &frame.event,
            channel,
            &frame.data,
            user_id,
        ));
        self.driver
            .hub
            .publish(channel, &relayed, Some(&self.connection.id));
        self.driver.forward(|| PeerMessage::Frames {
            frames: vec![ChannelFrame {
                channel: channel.to_owned(),
                frame: relayed,
                except: Some(self.connection.id.clone()),
                seq: None,
            }],
            keep: false,
        });
    }

    /// Refuses a subscription the cluster could not decide in time (503: try again).
    fn refuse_unavailable(&self, channel: &str, unavailable: &Unavailable) {
        self.refuse(
            channel,
            "ServiceUnavailable",
            503,
            &format!("{unavailable}; try again"),
        );
    }
}

impl Session<'_> {
    /// The member a presence subscription's signed `channel_data` names; refused (and `None`)
    /// when the signature, the `channel_data` or its `user_info` is not right.
    fn presence_member(&self, channel: &str, data: &SubscribeData) -> Option<Member> {
        let refuse = |status: u16, message: &str| {
            self.refuse(channel, "AuthError", status, message);
            None
        };
        let Some(channel_data) = data.channel_data.as_deref() else {
            return refuse(400, "A presence channel needs channel_data with a user_id");
        };
        let auth = data.auth.as_deref().unwrap_or_default();
        if !self.driver.app.verify(
            auth,
            self.connection.id.as_str(),
            channel,
            Some(channel_data),
        ) {
            return refuse(
                401,
                "Invalid signature: expected an HMAC SHA256 hex digest of socket_id:channel:channel_data",
            );
        }
        let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(channel_data) else {
            return refuse(400, "channel_data must be a JSON object with a user_id");
        };
        let user_id = match fields.remove("user_id") {
            Some(Value::String(id)) if !id.is_empty() => id,
            Some(Value::Number(id)) => id.to_string(),
            _ => {
                return refuse(
                    400,
                    "channel_data needs a user_id: a non-empty string or a number",
                );
            }
        };
        let user_info = fields.remove("user_info");
        let limit = self.driver.limits.presence_max_user_info_bytes;
        if let Some(info) = &user_info
            && limit != 0
            && info.to_string().len() > limit
        {
            self.refuse(
                channel,
                "LimitReached",
                Code::ClientLimit.as_u16(),
                &format!("user_info is over the limit of {limit} bytes"),
            );
            return None;
        }
        Some(Member { user_id, user_info })
    }

    /// Joins a presence channel: the socket gets the members in its `subscription_succeeded`,
    /// and the others hear of the user when this is their first socket there.
    async fn join(&mut self, channel: &str, member: Member) {
        let user_id = member.user_id.clone();
        let user_info = member.user_info.clone();
        // The decision, the hub and what is sent are one step per channel: a join and a leave
        // on the same channel never interleave (each would miss the other's member event).
        let driver = self.driver;
        let _turn = driver.turns.take(channel).await;
        // Recorded before the seam is asked: a reader cut off while it answers still leaves
        // the channel, and the membership, when the connection ends.
        self.channels.push(channel.to_owned());
        self.memberships.push((channel.to_owned(), user_id.clone()));
        let joined = self
            .driver
            .presence
            .join(
                channel,
                member,
                &self.connection.id,
                self.driver.limits.presence_max_members,
            )
            .await;
        let joined = match joined {
            Ok(joined) => joined,
            Err(refusal) => {
                self.channels.retain(|known| known != channel);
                self.memberships.retain(|(joined, _)| joined != channel);
                match refusal {
                    JoinError::LimitReached => self.refuse(
                        channel,
                        "LimitReached",
                        Code::OverCapacity.as_u16(),
                        &refusal.to_string(),
                    ),
                    JoinError::Unavailable(unavailable) => {
                        self.refuse_unavailable(channel, &unavailable)
                    }
                }
                return;
            }
        };
        let succeeded = frames::presence_succeeded(channel, &joined.members);
        self.enter(channel, succeeded, joined.seq.unwrap_or(0))
            .await;
        if joined.first {
            let added = Utf8Bytes::from(frames::member_added(channel, &user_id, &user_info));
            self.driver
                .hub
                .publish(channel, &added, Some(&self.connection.id));
            self.driver.forward(|| PeerMessage::Frames {
                frames: vec![ChannelFrame {
                    channel: channel.to_owned(),
                    frame: added,
                    except: Some(self.connection.id.clone()),
                    seq: joined.seq,
                }],
                keep: false,
            });
            self.driver.webhooks.member_added(channel, &user_id);
        }
    }

    /// Leaves a channel, in its turn: on a presence channel the others hear of the user when
    /// this was their last socket there, and the channel's last subscriber tells the webhooks
    /// it is vacant. The channel stays in the session's list until every step is done, so a
    /// reader cut off while it waits for the turn leaves the channel when the connection ends.
    /// Once the turn is taken nothing here yields with the in-process seam (its answers are
    /// ready at once); a seam backed by a store must make its answers safe to ask again.
    async fn leave(&mut self, channel: &str) {
        let driver = self.driver;
        let _turn = driver.turn(channel).await;
        let last_here = driver.hub.unsubscribe(channel, &self.connection.id);
        if let Some(index) = self
            .memberships
            .iter()
            .position(|(joined, _)| joined == channel)
        {
            let user_id = &self.memberships[index].1;
            let removal = driver
                .presence
                .leave(channel, user_id, &self.connection.id)
                .await;
            if let Some(removal) = removal {
                driver.member_removed(channel, user_id, removal.seq);
            }
            self.memberships.swap_remove(index);
        }
        driver.node_occupancy(channel, false, last_here).await;
        self.channels.retain(|known| known != channel);
    }

    /// Whether `channel` is the signed-in user's own: the connection stays on it (it is how
    /// `terminate_connections` finds the connection), whatever the client asks.
    fn is_own_user_channel(&self, channel: &str) -> bool {
        self.user_id
            .as_deref()
            .is_some_and(|user_id| channel.strip_prefix(USER_CHANNEL_PREFIX) == Some(user_id))
    }

    /// The user id this socket joined `channel` as, if it is a presence channel.
    fn member_id(&self, channel: &str) -> Option<&str> {
        self.memberships
            .iter()
            .find(|(joined, _)| joined == channel)
            .map(|(_, user_id)| user_id.as_str())
    }
}

impl Session<'_> {
    /// `pusher:signin`: a user's signed `user_data` makes this connection theirs; it joins the
    /// user's own channel, where `sendToUser` events arrive and `terminate_connections` finds
    /// it. A bad sign-in ends the connection with 4009 (PUSHER.md).
    async fn signin(&mut self, frame: &ClientFrame) {
        let data = frame.data_object();
        let field = |name: &str| {
            data.as_ref()
                .and_then(|data| data.get(name)?.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let (auth, user_data) = (field("auth"), field("user_data"));
        let signed = self
            .driver
            .app
            .authorize_user(self.connection.id.as_str(), &user_data);
        let user_id = serde_json::from_str::<Value>(&user_data)
            .ok()
            .and_then(|data| data.get("id")?.as_str().map(str::to_owned))
            .filter(|id| {
                channel_kind(&format!("{USER_CHANNEL_PREFIX}{id}")) == Some(ChannelKind::User)
            });
        let refusal = if !constant_time_eq(auth.as_bytes(), signed.as_bytes()) {
            Some(
                "Invalid signature: expected an HMAC SHA256 hex digest of socket_id::user::user_data",
            )
        } else if user_id.is_none() {
            Some("user_data must be a JSON object whose id is a string of channel-name characters")
        } else {
            None
        };
        if let Some(message) = refusal {
            self.connection.close(Code::Unauthorized, message).await;
            return;
        }
        let user_id = user_id.expect("checked above");
        let channel = format!("{USER_CHANNEL_PREFIX}{user_id}");
        // Signing in as someone else: the connection stops being the previous user's.
        if let Some(previous) = self.user_id.replace(user_id.clone())
            && previous != user_id
        {
            self.leave(&format!("{USER_CHANNEL_PREFIX}{previous}"))
                .await;
        }
        self.send(frames::signin_success(&user_data));
        // The user's own channel does not count against the channels a connection may hold.
        if !self.channels.contains(&channel) {
            self.driver.hub.subscribe(&channel, self.connection);
            self.channels.push(channel);
        }
    }
}

/// Client events per connection: 10 a second, as Pusher.
struct RateLimit {
    window: Instant,
    count: u32,
}

impl RateLimit {
    const PER_SECOND: u32 = 10;

    fn new() -> Self {
        Self {
            window: Instant::now(),
            count: 0,
        }
    }

    fn allow(&mut self) -> bool {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.count = 0;
        }
        self.count += 1;
        self.count <= Self::PER_SECOND
    }
}

type Sink = futures_util::stream::SplitSink<WebSocketStream<Upgraded>, Message>;

/// How long a closing connection may take to write what it still has (its `pusher:error` and
/// close frame, or the frames queued when its reader ended) before the socket is dropped (a
/// stuck client must not hold its writer forever).
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Drains the queue to the socket, several frames per flush, until the queue closes, the
/// connection overflows (4100), the server shuts down (4200) or a close is asked for.
///
/// Overflow is watched even while a write is blocked on a client that stopped reading: the
/// write is abandoned (its bytes stay buffered ahead of the close frame) and the close gets
/// [`CLOSE_GRACE`] to go out.
async fn write(
    mut sink: Sink,
    mut outbound: mpsc::Receiver<Outbound>,
    socket: SocketId,
    overflow: Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    // Both waits are made once and polled again on every turn: making them afresh per frame
    // registered a waker per frame (it showed in profiles).
    let overflowed = overflow.notified();
    let shutting_down = shutdown.changed();
    tokio::pin!(overflowed, shutting_down);
    let mut watching_shutdown = true;
    let over_capacity = || {
        Some((
            Code::OverCapacity,
            "Over capacity: the client is not reading fast enough".to_owned(),
        ))
    };
    let ending = loop {
        let next = tokio::select! {
            biased;
            () = &mut overflowed => break over_capacity(),
            changed = &mut shutting_down, if watching_shutdown => match changed {
                Ok(()) => break Some((Code::Reconnect, "Server shutting down".to_owned())),
                Err(_) => {
                    watching_shutdown = false;
                    continue;
                }
            },
            next = outbound.recv() => next,
        };
        let frame = match next {
            None => break None,
            Some(Outbound::Close(code, message)) => break Some((code, message)),
            Some(Outbound::Frame(frame)) => frame,
        };
        let written = tokio::select! {
            biased;
            () = &mut overflowed => break over_capacity(),
            written = write_batch(&mut sink, frame, &mut outbound) => written,
        };
        match written {
            Ok(None) => {}
            Ok(Some(close)) => break Some(close),
            Err(error) => {
                tracing::debug!(%socket, %error, "write failed");
                return;
            }
        }
    };
    match ending {
        Some((code, message)) => {
            if code == Code::OverCapacity {
                tracing::info!(%socket, "closing a slow consumer");
                metrics.slow_consumers.inc();
            }
            let frames = [
                Message::Text(Utf8Bytes::from(frames::error(Some(code), &message))),
                Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code.close_code()),
                    reason: Utf8Bytes::from(message),
                })),
            ];
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                for frame in frames {
                    sink.feed(frame).await?;
                }
                sink.flush().await
            })
            .await;
        }
        None => {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
        }
    }
}

/// Writes `first` and whatever else is queued (up to [`WRITE_BATCH`] frames), then flushes
/// once. A close found in the queue is returned after the frames before it are flushed.
///
/// Before flushing a short batch the writer yields once: the runtime then polls its sockets
/// before the writer runs again, so events whose requests were already waiting are published
/// into this queue and leave in the same write. Under load this turns one `send` per frame
/// into one per several frames (the kernel's loopback TCP path is most of a delivery's cost);
/// when idle, the yield costs one poll and no waiting.
async fn write_batch(
    sink: &mut Sink,
    first: Utf8Bytes,
    outbound: &mut mpsc::Receiver<Outbound>,
) -> Result<Option<(Code, String)>, tokio_tungstenite::tungstenite::Error> {
    sink.feed(Message::Text(first)).await?;
    let mut batch = Batch { taken: 1 };
    let mut close = batch.drain(sink, outbound).await?;
    if close.is_none() && batch.taken < WRITE_BATCH {
        tokio::task::yield_now().await;
        close = batch.drain(sink, outbound).await?;
    }
    sink.flush().await?;
    Ok(close)
}

/// Frames taken into the write being built.
struct Batch {
    taken: usize,
}

impl Batch {
    /// Feeds queued frames until the batch is full or the queue is empty; stops at a close.
    async fn drain(
        &mut self,
        sink: &mut Sink,
        outbound: &mut mpsc::Receiver<Outbound>,
    ) -> Result<Option<(Code, String)>, tokio_tungstenite::tungstenite::Error> {
        while self.taken < WRITE_BATCH {
            match outbound.try_recv() {
                Ok(Outbound::Frame(frame)) => {
                    sink.feed(Message::Text(frame)).await?;
                    self.taken += 1;
                }
                Ok(Outbound::Close(code, message)) => return Ok(Some((code, message))),
                Err(_) => break,
            }
        }
        Ok(None)
    }
}
