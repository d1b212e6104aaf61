//! The other nodes, as the driver sees them: the seam cluster mode fills (one node has none).
//! What a node sends them ([`PeerMessage`]), and the cluster-wide answers the HTTP API needs
//! (occupied channels, subscription counts). This module says what crosses between nodes; it
//! knows nothing of how (that is [`crate::cluster`]).
//!
//! Record events are not peer messages: every node delivers those to its own sockets from the
//! store's change log.

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::presence::BoxFuture;
use super::protocol::SocketId;

/// What one node tells every other. Built once by the sender; a receiver queues each frame as
/// it came (no per-socket work beyond the hub's).
#[derive(Clone, Debug, PartialEq)]
pub enum PeerMessage {
    /// Frames for channels' sockets (a batch of triggers is one message: all or nothing).
    Frames {
        frames: Vec<ChannelFrame>,
        /// Kept as a cache channel's last event (HTTP API triggers; not client or member
        /// events).
        keep: bool,
    },
    /// Close every connection the user signed in on (`terminate_connections`).
    Terminate { user_id: String },
}

/// One frame for one channel's sockets, but not `except`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelFrame {
    pub channel: String,
    pub frame: Utf8Bytes,
    pub except: Option<SocketId>,
    /// A member event's point in the channel's member history: sockets whose member list
    /// was read at it or later skip it ([`super::hub::Hub::publish_after`]).
    pub seq: Option<u64>,
}

/// The cluster's shared state could not be reached in time (Redis down, or slower than the
/// configured timeout): the message says which operation, for the 503 or the refusal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// The other nodes.
pub trait Peers: Send + Sync {
    /// Sends `message` to every other node; Ok once the cluster has taken it (each node then
    /// delivers it to its own sockets). The caller delivers to this node's sockets itself.
    fn publish<'a>(&'a self, message: &'a PeerMessage) -> BoxFuture<'a, Result<(), Unavailable>>;

    /// Sends `message` to every other node without waiting; best effort (a socket's client
    /// and member events: the socket never waits for the cluster). Messages from one node
    /// leave in the order given.
    fn forward(&self, message: PeerMessage);

    /// Occupied app channels whose name starts with `prefix`, with their subscriptions on
    /// every node, sorted by name.
    fn channels<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, usize)>, Unavailable>>;

    /// `channel`'s subscriptions on every node.
    fn subscription_count<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<usize, Unavailable>>;
}
