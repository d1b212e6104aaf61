//! The fan-out hub: which connections listen on which channel, each connection's bounded
//! outbound queue, and how many connections there are (in all, and per client host).
//!
//! The send path takes one shard's read lock (shards by channel name, so publishers on
//! different channels never meet and publishers on one channel share the lock), clones the
//! frame's reference count per receiver and `try_send`s it: no allocation, no copy, no waiting.
//! A connection whose queue is full is marked and its writer closes it with 4100; the others
//! never wait for it.
//!
//! A live subscription's channel is *held* from the moment the subscription is made: its frames
//! wait here, in order, until the first socket joins the channel, and go to it right after its
//! `subscription_succeeded` (DESIGN.md §13), within [`HOLD_FRAMES`] and [`HOLD_TIME`].

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::protocol::{Code, SocketId};
use crate::limits::{self, Quota};

/// What a connection's writer receives.
#[derive(Debug)]
pub enum Outbound {
    Frame(Utf8Bytes),
    /// Send `pusher:error` with this code and message, then close with the code.
    Close(Code, String),
}

/// One WebSocket connection, as the hub sees it.
pub struct Connection {
    pub id: SocketId,
    queue: mpsc::Sender<Outbound>,
    overflowed: AtomicBool,
    /// Wakes the writer when the queue overflowed: the close cannot wait in a full queue. The
    /// writer holds this, not the connection, so that the queue closes when the last
    /// `Connection` (the reader's and the hub's) is gone.
    overflow: Arc<Notify>,
}

impl Connection {
    pub(super) fn new(id: SocketId, queue: mpsc::Sender<Outbound>) -> Self {
        Self {
            id,
            queue,
            overflowed: AtomicBool::new(false),
            overflow: Arc::new(Notify::new()),
        }
    }

    /// What the writer waits on besides the queue.
    pub(super) fn overflow_signal(&self) -> Arc<Notify> {
        self.overflow.clone()
    }

    /// Queues a frame. False when the connection is full (it is then closed with 4100, and
    /// takes no more frames) or gone.
    pub fn send(&self, frame: Utf8Bytes) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        match self.queue.try_send(Outbound::Frame(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overflowed.swap(true, Ordering::Relaxed) {
                    self.overflow.notify_one();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the writer to send `pusher:error` and close; waits for room in the queue, so that
    /// frames queued before are written first.
    pub async fn close(&self, code: Code, message: impl Into<String>) {
        let _ = self.queue.send(Outbound::Close(code, message.into())).await;
    }
}

/// Channel -> its listeners, by socket id (joining and leaving are O(1) however crowded).
type Shard = RwLock<HashMap<Arc<str>, HashMap<SocketId, Listener>>>;

/// A connection listening on a channel.
struct Listener {
    connection: Arc<Connection>,
    /// Cluster mode, presence channels: the point of the channel's member history the
    /// connection's member list was read at. Member events from other nodes up to it are
    /// already in the list and skipped (pub/sub may bring them after the list was read). 0
    /// elsewhere.
    since: u64,
}

const SHARDS: usize = 64;

/// Frames a held channel keeps for its first socket, at most: past it, later ones are
/// dropped (the client finds the gap in `seq` and recovers them over HTTP).
pub const HOLD_FRAMES: usize = 1000;
/// How long a channel is held for a socket that has not come: then its frames are dropped.
pub const HOLD_TIME: Duration = Duration::from_secs(60);

/// A held channel's frames.
struct Held {
    frames: Vec<Utf8Bytes>,
    until: Instant,
}

pub struct Hub {
    shards: Box<[Shard]>,
    /// Held channels (no socket here yet). Taken after a shard's lock, never before.
    holds: Mutex<HashMap<Arc<str>, Held>>,
    hasher: std::hash::RandomState,
    connections: AtomicUsize,
    max_connections: usize,
    /// Connections per client address, each up to its maximum.
    per_address: Quota<IpAddr>,
    /// Flips to true when the server shuts down; every writer then closes with 4200.
    shutdown: watch::Sender<bool>,
}

/// Why a new connection is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The server is at its maximum of connections (4004).
    OverQuota,
    /// The client's address is at its maximum (4100: try again later).
    OverAddressQuota,
}

/// Counts a connection, in all and for its address, for as long as it lives.
pub struct ConnectionSlot<'h> {
    hub: &'h Hub,
    address: Option<IpAddr>,
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        // The address's place first: whoever sees the total fall may find it free.
        if let Some(address) = &self.address {
            self.hub.per_address.give_back(address);
        }
        self.hub.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    pub fn new(max_connections: usize, max_per_address: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            holds: Mutex::default(),
            hasher: std::hash::RandomState::new(),
            connections: AtomicUsize::new(0),
            max_connections,
            per_address: Quota::new(max_per_address),
            shutdown: watch::channel(false).0,
        }
    }

    fn shard(&self, channel: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(channel) as usize % SHARDS]
    }

    /// Takes a connection slot for a client at `address` (counted by host, see
    /// [`limits::host`]), or refuses when the server or that host is full. A maximum of 0 is
    /// no limit.
    pub fn admit(&self, address: IpAddr) -> Result<ConnectionSlot<'_>, Refusal> {
        let previous = self.connections.fetch_add(1, Ordering::Relaxed);
        let mut slot = ConnectionSlot {
            hub: self,
            address: None,
        };
        if self.max_connections != 0 && previous >= self.max_connections {
            return Err(Refusal::OverQuota);
        }
        let host = limits::host(address);
        self.per_address
            .take(&host)
            .map_err(|_| Refusal::OverAddressQuota)?;
        slot.address = Some(host);
        Ok(slot)
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every connection to close with 4200 (reconnect now).
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Adds a listener; subscribing twice is harmless. True when the channel had none.
    pub fn subscribe(&self, channel: &str, connection: &Arc<Connection>) -> bool {
        self.subscribe_since(channel, connection, 0, None)
    }

    /// Adds a listener that skips member events up to `since` ([`Hub::publish_after`]), and
    /// queues it `confirmation` (its `subscription_succeeded`) first: no frame of the channel
    /// comes before it, and a held channel's frames come right after it. True when the
    /// channel had no listener.
    pub fn subscribe_since(
        &self,
        channel: &str,
        connection: &Arc<Connection>,
        since: u64,
        confirmation: Option<Utf8Bytes>,
    ) -> bool {
        let listener = Listener {
            connection: connection.clone(),
            since,
        };
        let mut shard = self
            .shard(channel)
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(confirmation) = confirmation {
            connection.send(confirmation);
        }
        if let Some(listeners) = shard.get_mut(channel) {
            listeners.insert(connection.id.clone(), listener);
            return false;
        }
        if let Some(held) = self.lock_holds().remove(channel) {
            for frame in held.frames {
                connection.send(frame);
            }
        }
        shard.insert(
            Arc::from(channel),
            HashMap::from([(connection.id.clone(), listener)]),
        );
        true
    }

    fn lock_holds(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Held>> {
        self.holds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds `channel` (a live subscription's, just made) until its first socket comes, for
    /// [`HOLD_TIME`] at most; channels held longer are let go now.
    pub fn hold(&self, channel: &str) {
        let now = Instant::now();
        let mut holds = self.lock_holds();
        holds.retain(|_, held| held.until > now);
        holds.insert(
            Arc::from(channel),
            Held {
                frames: Vec::new(),
                until: now + HOLD_TIME,
            },
        );
    }

    /// Lets go of `channel`'s hold (its subscription ended), and of holds past their time.
    pub fn release(&self, channel: &str) {
        let now = Instant::now();
        let mut holds = self.lock_holds();
        holds.remove(channel);
        holds.retain(|_, held| held.until > now);
    }

    /// As [`Hub::publish_with`], but a held channel without a listener keeps the frame for its
    /// first socket (within the bounds). Returns how many sockets got it now.
    pub fn publish_or_hold(&self, channel: &str, frame: impl FnOnce() -> Utf8Bytes) -> usize {
        let shard = self
            .shard(channel)
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(listeners) = shard.get(channel) {
            let frame = frame();
            return listeners
                .values()
                .filter(|listener| listener.connection.send(frame.clone()))
                .count();
        }
        let mut holds = self.lock_holds();
        let Some(held) = holds.get_mut(channel) else {
            return 0;
        };
        if held.until <= Instant::now() {
            holds.remove(channel);
        } else if held.frames.len() < HOLD_FRAMES {
            held.frames.push(frame());
        }
        0
    }

    /// Removes a listener. True when it was the channel's last.
    pub fn unsubscribe(&self, channel: &str, socket: &SocketId) -> bool {
        let mut shard = self
            .shard(channel)
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(listeners) = shard.get_mut(channel) else {
            return false;
        };
        if listeners.remove(socket).is_none() || !listeners.is_empty() {
            return false;
        }
        shard.remove(channel);
        true
    }

    /// Queues `frame` to every listener of `channel` but `except`; returns how many got it.
    pub fn publish(&self, channel: &str, frame: &Utf8Bytes, except: Option<&SocketId>) -> usize {
        self.publish_with(channel, || frame.clone(), except)
    }

    /// [`Hub::publish`] for a member event at point `seq` of the channel's member history:
    /// listeners whose member list was read at `seq` or later skip it.
    pub fn publish_after(
        &self,
        channel: &str,
        frame: &Utf8Bytes,
        except: Option<&SocketId>,
        seq: u64,
    ) -> usize {
        self.send(
            channel,
            || frame.clone(),
            except,
            |listener| listener.since < seq,
        )
    }

    /// As [`Hub::publish`], with the frame made only when `channel` has a listener here: in
    /// cluster mode, most of an event's channels have their sockets on other nodes.
    pub fn publish_with(
        &self,
        channel: &str,
        frame: impl FnOnce() -> Utf8Bytes,
        except: Option<&SocketId>,
    ) -> usize {
        self.send(channel, frame, except, |_| true)
    }

    /// Queues the frame (made once, and only when `channel` has a listener) to every listener
    /// of `channel` but `except` that `wants` it; returns how many got it.
    fn send(
        &self,
        channel: &str,
        frame: impl FnOnce() -> Utf8Bytes,
        except: Option<&SocketId>,
        wants: impl Fn(&Listener) -> bool,
    ) -> usize {
        let shard = self
            .shard(channel)
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(listeners) = shard.get(channel) else {
            return 0;
        };
        let frame = frame();
        listeners
            .values()
            .filter(|listener| Some(&listener.connection.id) != except && wants(listener))
            .filter(|listener| listener.connection.send(frame.clone()))
            .count()
    }

    /// The connections listening on `channel`.
    pub fn listeners(&self, channel: &str) -> Vec<Arc<Connection>> {
        let shard = self
            .shard(channel)
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        shard
            .get(channel)
            .map(|listeners| {
                listeners
                    .values()
                    .map(|listener| listener.connection.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn subscription_count(&self, channel: &str) -> usize {
        let shard = self
            .shard(channel)
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        shard.get(channel).map_or(0, HashMap::len)
    }

    /// Occupied channels whose name starts with `prefix`, with their subscription counts.
    pub fn channels(&self, prefix: &str) -> Vec<(String, usize)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            all.extend(
                shard
                    .iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .map(|(name, listeners)| (name.to_string(), listeners.len())),
            );
        }
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(capacity: usize) -> (Arc<Connection>, mpsc::Receiver<Outbound>) {
        let (queue, receiver) = mpsc::channel(capacity);
        (
            Arc::new(Connection::new(SocketId::random(), queue)),
            receiver,
        )
    }

    #[tokio::test]
    async fn publishes_to_listeners_except_the_excluded_one() {
        let hub = Hub::new(10, 0);
        let (a, mut a_rx) = connection(4);
        let (b, mut b_rx) = connection(4);
        assert!(hub.subscribe("c", &a), "the first listener");
        assert!(!hub.subscribe("c", &a), "again: not a new one");
        assert!(!hub.subscribe("c", &b));
        assert_eq!(hub.subscription_count("c"), 2);
        let frame = Utf8Bytes::from("hello");
        assert_eq!(hub.publish("c", &frame, Some(&b.id)), 1);
        assert!(matches!(a_rx.try_recv(), Ok(Outbound::Frame(f)) if f.as_str() == "hello"));
        assert!(b_rx.try_recv().is_err());
        assert!(!hub.unsubscribe("c", &a.id));
        assert!(!hub.unsubscribe("c", &a.id), "gone already");
        assert!(hub.unsubscribe("c", &b.id), "the last listener");
        assert!(!hub.unsubscribe("c", &b.id), "the channel is gone");
        assert_eq!(hub.subscription_count("c"), 0);
        assert!(hub.channels("").is_empty());
    }

    #[tokio::test]
    async fn member_events_skip_listeners_whose_list_is_newer() {
        let hub = Hub::new(10, 0);
        let (old, mut old_rx) = connection(4);
        let (new, mut new_rx) = connection(4);
        hub.subscribe_since("presence-a", &old, 3, None);
        hub.subscribe_since("presence-a", &new, 5, None);
        let frame = Utf8Bytes::from("member_added");
        assert_eq!(hub.publish_after("presence-a", &frame, None, 5), 1);
        assert!(
            old_rx.try_recv().is_ok(),
            "its list was read before the event"
        );
        assert!(new_rx.try_recv().is_err(), "its list has the event already");
        assert_eq!(hub.publish_after("presence-a", &frame, Some(&old.id), 6), 1);
        assert!(new_rx.try_recv().is_ok());
        assert!(old_rx.try_recv().is_err(), "left out");
    }

    fn received(receiver: &mut mpsc::Receiver<Outbound>) -> Vec<String> {
        std::iter::from_fn(|| match receiver.try_recv() {
            Ok(Outbound::Frame(frame)) => Some(frame.to_string()),
            _ => None,
        })
        .collect()
    }

    #[tokio::test]
    async fn a_held_channel_keeps_its_frames_for_the_first_socket_after_its_confirmation() {
        let hub = Hub::new(10, 0);
        assert_eq!(hub.publish_or_hold("live", || "lost".into()), 0);
        hub.hold("live");
        assert_eq!(hub.publish_or_hold("live", || "1".into()), 0);
        assert_eq!(hub.publish_or_hold("live", || "2".into()), 0);
        assert_eq!(hub.publish_or_hold("other", || "x".into()), 0);
        let (first, mut first_rx) = connection(8);
        assert!(hub.subscribe_since("live", &first, 0, Some("ok".into())));
        assert_eq!(hub.publish_or_hold("live", || "3".into()), 1);
        assert_eq!(received(&mut first_rx), ["ok", "1", "2", "3"]);
        // The hold is over: a second socket gets what comes from now on.
        let (second, mut second_rx) = connection(8);
        assert!(!hub.subscribe_since("live", &second, 0, Some("ok".into())));
        assert_eq!(hub.publish_or_hold("live", || "4".into()), 2);
        assert_eq!(received(&mut second_rx), ["ok", "4"]);
        // A released hold keeps nothing.
        hub.hold("gone");
        hub.release("gone");
        assert_eq!(hub.publish_or_hold("gone", || "x".into()), 0);
        let (late, mut late_rx) = connection(8);
        hub.subscribe_since("gone", &late, 0, None);
        assert!(received(&mut late_rx).is_empty());
        // Nothing is held once every socket has left, unless held again.
        hub.unsubscribe("live", &first.id);
        hub.unsubscribe("live", &second.id);
        assert_eq!(hub.publish_or_hold("live", || "5".into()), 0);
        let (third, mut third_rx) = connection(8);
        hub.subscribe_since("live", &third, 0, None);
        assert!(received(&mut third_rx).is_empty());
    }

    #[tokio::test]
    async fn a_hold_keeps_at_most_its_bound() {
        let hub = Hub::new(10, 0);
        hub.hold("live");
        for n in 0..HOLD_FRAMES + 5 {
            hub.publish_or_hold("live", || n.to_string().into());
        }
        let (socket, mut socket_rx) = connection(HOLD_FRAMES + 10);
        hub.subscribe_since("live", &socket, 0, None);
        let frames = received(&mut socket_rx);
        assert_eq!(frames.len(), HOLD_FRAMES, "the first ones, in order");
        assert_eq!(frames.last().unwrap(), &(HOLD_FRAMES - 1).to_string());
    }

    #[tokio::test]
    async fn a_full_queue_marks_only_its_connection() {
        let hub = Hub::new(10, 0);
        let (slow, _slow_rx) = connection(1);
        let (fast, mut fast_rx) = connection(8);
        hub.subscribe("c", &slow);
        hub.subscribe("c", &fast);
        let frame = Utf8Bytes::from("x");
        assert_eq!(hub.publish("c", &frame, None), 2);
        assert_eq!(hub.publish("c", &frame, None), 1, "the slow one is full");
        assert!(slow.overflowed.load(Ordering::Relaxed));
        assert!(!fast.overflowed.load(Ordering::Relaxed));
        assert!(fast_rx.try_recv().is_ok() && fast_rx.try_recv().is_ok());
    }

    #[test]
    fn admits_up_to_the_quota() {
        let hub = Hub::new(2, 0);
        let address = IpAddr::from([127, 0, 0, 1]);
        let first = hub.admit(address).unwrap();
        let _second = hub.admit(address).unwrap();
        assert_eq!(hub.admit(address).err(), Some(Refusal::OverQuota));
        drop(first);
        let _third = hub.admit(address).expect("a slot was freed");
        assert_eq!(hub.connection_count(), 2);
    }

    #[test]
    fn admits_up_to_the_quota_per_address() {
        let hub = Hub::new(10, 2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = hub.admit(a).unwrap();
        let _second = hub.admit(a).unwrap();
        assert_eq!(hub.admit(a).err(), Some(Refusal::OverAddressQuota));
        assert_eq!(
            hub.connection_count(),
            2,
            "a refused connection is not counted"
        );
        let _other = hub.admit(b).expect("another address");
        drop(first);
        let _third = hub.admit(a).expect("a slot of this address was freed");
    }
}
