//! Presence and occupancy: who is on each presence channel, and whether a channel has
//! subscribers. Members are users, not sockets: a user's second socket on a channel is not a
//! new member, and only their last socket leaving removes them, so `member_added` /
//! `member_removed` follow users.
//!
//! [`Presence`] is the seam: asynchronous from the start, because in cluster mode the first
//! join and the last leave (of a member, of a channel's subscribers) are decided across nodes
//! (Redis answers them: `crate::cluster::presence`). [`LocalPresence`] is one node's, in this
//! process. This module decides; it sends nothing (the connection tells the channel and the
//! webhooks), and [`Turns`] keeps each channel's decisions and what they send in one order.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use serde_json::Value;

use super::peers::Unavailable;
use super::protocol::SocketId;

/// A boxed future, so that [`Presence`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A member of a presence channel: a user, and what their socket's `channel_data` said of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub user_id: String,
    /// `user_info` from the signed `channel_data`, if any.
    pub user_info: Option<Value>,
}

/// A join's outcome: whether the user is new to the channel, and who is on it now.
#[derive(Debug)]
pub struct Joined {
    pub first: bool,
    pub members: Vec<Member>,
    /// Cluster mode: the point of the channel's member history `members` was read at (when
    /// `first`, also where the user's `member_added` is). Other nodes' member events up to it
    /// are skipped for this socket ([`super::hub::Hub::subscribe_since`]). `None` in one node,
    /// where the channel's turn orders everything.
    pub seq: Option<u64>,
}

/// A user's last socket left the channel: they are no longer a member.
#[derive(Debug, PartialEq, Eq)]
pub struct Removed {
    /// Cluster mode: where the user's `member_removed` is in the channel's member history.
    pub seq: Option<u64>,
}

/// Why a join is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The channel holds its most members, and the user is not one of them.
    #[error("The presence channel is full")]
    LimitReached,
    /// The cluster could not decide in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Who is on which presence channel.
pub trait Presence: Send + Sync {
    /// `socket` joins `channel` as `member`; a new member beyond `max_members` (0: no limit)
    /// is refused. A user's later socket keeps the user_info the first one gave. The caller
    /// records the channel before asking, so a caller cut off while a store answers still
    /// leaves it (its connection's end leaves every channel it holds): `leave` must then undo
    /// what the join did, if anything, and answer false when it did nothing.
    fn join<'a>(
        &'a self,
        channel: &'a str,
        member: Member,
        socket: &'a SocketId,
        max_members: usize,
    ) -> BoxFuture<'a, Result<Joined, JoinError>>;

    /// `socket` leaves `channel`; `Some` when it was the user's last socket there (the user
    /// is no longer a member). A leave the cluster could not take answers `None` (and is
    /// finished later by the implementation: a node's sockets never outlive it).
    fn leave<'a>(
        &'a self,
        channel: &'a str,
        user_id: &'a str,
        socket: &'a SocketId,
    ) -> BoxFuture<'a, Option<Removed>>;

    /// The members of `channel`.
    fn members<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<Member>, Unavailable>>;

    /// A subscriber of `channel` came to this node (`came`) or left it, which now has
    /// `subscribers` there: true when that makes the channel occupied (`came`), or vacant,
    /// everywhere (`channel_occupied` / `channel_vacated`). Asked in the channel's turn, on
    /// this node's first and last subscriber only unless [`Presence::counts_subscribers`].
    /// This node's own sockets are counted by its hub. An implementation that awaits a store
    /// must answer true once per change, even when a caller cut off midway asks again (in
    /// cluster mode: per-node counts per channel).
    fn node_occupancy<'a>(
        &'a self,
        channel: &'a str,
        subscribers: usize,
        came: bool,
    ) -> BoxFuture<'a, bool>;

    /// Whether [`Presence::node_occupancy`] wants every subscriber that comes and goes (it
    /// keeps counts for other nodes), not only this node's first and last. Then every
    /// subscribe and leave takes its channel's turn.
    fn counts_subscribers(&self) -> bool {
        false
    }
}

/// Turns on channels: a join or leave of a presence channel, and any subscribe or leave while
/// webhooks report occupancy ([`super::Driver::turn`]), takes its channel's turn for the whole
/// step (membership, occupancy, hub, the frames and webhooks it sends), so that steps on one
/// channel never interleave: no member event is lost between a join and a leave, and
/// `channel_occupied` / `channel_vacated` never come out of order. Sharded by channel name, as
/// the hub is: steps on different channels rarely wait for each other.
pub struct Turns {
    shards: Box<[tokio::sync::Mutex<()>]>,
    hasher: std::hash::RandomState,
}

const TURN_SHARDS: usize = 64;

impl Default for Turns {
    fn default() -> Self {
        Self {
            shards: (0..TURN_SHARDS).map(|_| Default::default()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl Turns {
    /// Waits for `channel`'s turn; it lasts as long as the guard.
    pub async fn take(&self, channel: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::BuildHasher;
        let shard = self.hasher.hash_one(channel) as usize % TURN_SHARDS;
        self.shards[shard].lock().await
    }
}

/// Presence in this process.
#[derive(Default)]
pub struct LocalPresence {
    /// Channel -> user id -> the user's info and sockets.
    channels: Mutex<HashMap<String, HashMap<String, Present>>>,
}

struct Present {
    user_info: Option<Value>,
    sockets: HashSet<SocketId>,
}

impl LocalPresence {
    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Present>>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn listed(members: &HashMap<String, Present>) -> Vec<Member> {
    members
        .iter()
        .map(|(user_id, present)| Member {
            user_id: user_id.clone(),
            user_info: present.user_info.clone(),
        })
        .collect()
}

impl Presence for LocalPresence {
    fn join<'a>(
        &'a self,
        channel: &'a str,
        member: Member,
        socket: &'a SocketId,
        max_members: usize,
    ) -> BoxFuture<'a, Result<Joined, JoinError>> {
        Box::pin(async move {
            let mut channels = self.channels();
            let members = channels.entry(channel.to_owned()).or_default();
            let first = !members.contains_key(&member.user_id);
            if first && max_members != 0 && members.len() >= max_members {
                if members.is_empty() {
                    channels.remove(channel);
                }
                return Err(JoinError::LimitReached);
            }
            members
                .entry(member.user_id)
                .or_insert_with(|| Present {
                    user_info: member.user_info,
                    sockets: HashSet::new(),
                })
                .sockets
                .insert(socket.clone());
            Ok(Joined {
                first,
                members: listed(members),
                seq: None,
            })
        })
    }

    fn leave<'a>(
        &'a self,
        channel: &'a str,
        user_id: &'a str,
        socket: &'a SocketId,
    ) -> BoxFuture<'a, Option<Removed>> {
        Box::pin(async move {
            let mut channels = self.channels();
            let members = channels.get_mut(channel)?;
            let present = members.get_mut(user_id)?;
            if !present.sockets.remove(socket) || !present.sockets.is_empty() {
                return None;
            }
            members.remove(user_id);
            if members.is_empty() {
                channels.remove(channel);
            }
            Some(Removed { seq: None })
        })
    }

    fn members<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<Member>, Unavailable>> {
        Box::pin(async move { Ok(self.channels().get(channel).map(listed).unwrap_or_default()) })
    }

    /// One node is everywhere: its first subscriber occupies the channel, its last vacates it.
    fn node_occupancy<'a>(
        &'a self,
        _channel: &'a str,
        _subscribers: usize,
        _came: bool,
    ) -> BoxFuture<'a, bool> {
        Box::pin(std::future::ready(true))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn member(id: &str) -> Member {
        Member {
            user_id: id.into(),
            user_info: Some(json!({"name": id})),
        }
    }

    #[tokio::test]
    async fn members_are_users_not_sockets() {
        let presence = LocalPresence::default();
        let (tab1, tab2, other) = (SocketId::random(), SocketId::random(), SocketId::random());
        let joined = presence
            .join("presence-a", member("alice"), &tab1, 0)
            .await
            .unwrap();
        assert!(joined.first);
        let joined = presence
            .join("presence-a", member("alice"), &tab2, 0)
            .await
            .unwrap();
        assert!(!joined.first, "a second tab is not a new member");
        assert_eq!(joined.members, [member("alice")]);
        presence
            .join("presence-a", member("bob"), &other, 0)
            .await
            .unwrap();
        assert_eq!(presence.members("presence-a").await.unwrap().len(), 2);
        assert_eq!(
            presence.leave("presence-a", "alice", &tab1).await,
            None,
            "one tab left"
        );
        assert_eq!(
            presence.leave("presence-a", "alice", &tab2).await,
            Some(Removed { seq: None }),
            "the last one"
        );
        assert_eq!(
            presence.leave("presence-a", "alice", &tab2).await,
            None,
            "already gone"
        );
        assert_eq!(
            presence.members("presence-a").await.unwrap(),
            [member("bob")]
        );
        assert!(presence.leave("presence-a", "bob", &other).await.is_some());
        assert!(
            presence.channels().is_empty(),
            "empty channels are forgotten"
        );
    }

    #[tokio::test]
    async fn the_member_limit_counts_users() {
        let presence = LocalPresence::default();
        let (a, a2, b) = (SocketId::random(), SocketId::random(), SocketId::random());
        presence
            .join("presence-x", member("alice"), &a, 1)
            .await
            .unwrap();
        assert!(
            presence
                .join("presence-x", member("alice"), &a2, 1)
                .await
                .is_ok(),
            "a present user's second socket never counts"
        );
        assert_eq!(
            presence
                .join("presence-x", member("bob"), &b, 1)
                .await
                .err(),
            Some(JoinError::LimitReached)
        );
    }
}
