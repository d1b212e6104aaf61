//! Presence and occupancy across nodes, in Redis: the [`Presence`] seam's cluster
//! implementation. Each decision that must be made once for the whole cluster (a user's first
//! socket and last socket on a presence channel, a channel's first and last subscriber) is one
//! Lua script, so that two nodes asking at once get one "first" and one "not first".
//!
//! Keys (all under the deployment's prefix; `{life}` is a node's run, see [`super::Life`]):
//! * `presence:{channel}` hash: user id -> `user_info` (JSON), the members.
//! * `presence-sockets:{channel}` hash: `{life}|{socket id}` -> user id.
//! * `presence-counts:{channel}` hash: user id -> how many sockets the user has there.
//! * `presence-seq:{channel}`: the channel's member history, counted: each member added or
//!   removed takes the next number, carried by its event, and a joining socket's member list
//!   says where it was read, so that it skips older events that pub/sub brings late. Deleted
//!   with the channel's last member.
//! * `occ:{channel}` hash: life -> that run's subscribers of the channel (absent: none).
//! * `channels` set: the channels with a subscriber anywhere (`GET /channels`).
//! * `life:{life}:channels` set: the channels a run has entries in, for the dead-node sweep.
//!
//! This module decides and remembers; what is sent (frames, webhooks) is the caller's, except
//! for repairs and the sweep of dead nodes ([`super::nodes`]), which send what they decide.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use redis::Cmd;
use serde_json::Value;

use super::Life;
use super::commands::Commands;
use crate::pusher::peers::Unavailable;
use crate::pusher::presence::{BoxFuture, JoinError, Joined, Member, Presence, Removed};
use crate::pusher::protocol::SocketId;

/// A socket joins: answers `{1|0 first, seq, members...}`, or `{-1}` when the channel is
/// full. Asked again for a socket already there, it changes nothing and answers "not first".
const JOIN: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then
  return {0, tonumber(redis.call('GET', KEYS[5]) or '0'), redis.call('HGETALL', KEYS[1])}
end
local present = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
local max = tonumber(ARGV[4])
if not present and max > 0 and redis.call('HLEN', KEYS[1]) >= max then
  return {-1}
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
if not present then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('SADD', KEYS[4], ARGV[5])
if present then
  return {0, tonumber(redis.call('GET', KEYS[5]) or '0'), redis.call('HGETALL', KEYS[1])}
end
return {1, redis.call('INCR', KEYS[5]), redis.call('HGETALL', KEYS[1])}
";

/// A socket leaves: the `member_removed`'s seq (> 0) when it was its user's last there (the
/// user is no longer a member), else 0. Asked again, it changes nothing and answers 0.
const LEAVE: &str = r"
local user = redis.call('HGET', KEYS[2], ARGV[1])
if not user then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HINCRBY', KEYS[3], user, -1) > 0 then return 0 end
redis.call('HDEL', KEYS[3], user)
redis.call('HDEL', KEYS[1], user)
local seq = redis.call('INCR', KEYS[4])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[4]) end
return seq
";

/// A run's subscriber count on a channel becomes ARGV[2]: answers 1 when that made the channel
/// occupied (ARGV[4] = 1) or vacant (ARGV[4] = 0) everywhere. Idempotent. The run's index of
/// channels loses the channel when the run has nothing left there (no count, and no presence
/// socket whose leave is still to be retried), so that it does not grow for as long as the run
/// lasts.
const OCCUPANCY: &str = r"
local was = redis.call('HLEN', KEYS[1]) > 0
local count = tonumber(ARGV[2])
if count > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], count)
  redis.call('SADD', KEYS[3], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  local cursor = '0'
  local left = false
  repeat
    local page = redis.call('HSCAN', KEYS[4], cursor, 'MATCH', ARGV[1] .. '|*', 'COUNT', 100)
    cursor = page[1]
    left = #page[2] > 0
  until left or cursor == '0'
  if not left then
    redis.call('SREM', KEYS[3], ARGV[3])
  end
end
local now = redis.call('HLEN', KEYS[1]) > 0
if now then
  redis.call('SADD', KEYS[2], ARGV[3])
else
  redis.call('SREM', KEYS[2], ARGV[3])
end
if ARGV[4] == '1' then
  if now and not was then return 1 end
elseif was and not now then
  return 1
end
return 0
";

/// Occupied channels starting with ARGV[1], each with its subscribers on every run:
/// `{name, count, name, count, ...}`. ARGV[2] is the key prefix.
const CHANNELS: &str = r"
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if string.sub(name, 1, #ARGV[1]) == ARGV[1] then
    local total = 0
    for _, count in ipairs(redis.call('HVALS', ARGV[2] .. 'occ:' .. name)) do
      total = total + tonumber(count)
    end
    if total > 0 then
      table.insert(out, name)
      table.insert(out, total)
    end
  end
end
return out
";

/// A dead run's entries on one channel go: answers `{vacated (1|0), {user id, seq}...}` (the
/// users whose last socket it held, and their `member_removed`'s seq). Idempotent.
const SWEEP: &str = r"
local prefix = ARGV[1] .. '|'
local removed = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(field, 1, #prefix) == prefix then
    local user = redis.call('HGET', KEYS[2], field)
    redis.call('HDEL', KEYS[2], field)
    if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
      redis.call('HDEL', KEYS[3], user)
      redis.call('HDEL', KEYS[1], user)
      table.insert(removed, {user, redis.call('INCR', KEYS[6])})
    end
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[6]) end
local vacated = 0
if redis.call('HDEL', KEYS[4], ARGV[1]) == 1 and redis.call('HLEN', KEYS[4]) == 0 then
  redis.call('SREM', KEYS[5], ARGV[2])
  vacated = 1
end
return {vacated, removed}
";

/// What a sweep of one channel found.
#[derive(Debug, Default, PartialEq)]
pub struct Swept {
    /// The dead run was the channel's last subscriber anywhere.
    pub vacated: bool,
    /// Users whose last socket on the channel the dead run held, with their
    /// `member_removed`'s seq.
    pub removed: Vec<(String, u64)>,
}

/// A leave Redis did not take: retried until it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PendingLeave {
    pub channel: String,
    pub user_id: String,
    pub socket: SocketId,
}

/// What failed and waits for [`RedisPresence::take_repairs`].
#[derive(Default)]
pub struct Repairs {
    pub leaves: Vec<PendingLeave>,
    /// Channels whose count for this run may be wrong in Redis.
    pub counts: HashSet<String>,
}

/// Presence and occupancy in Redis, for one run of this node.
#[derive(Clone)]
pub struct RedisPresence {
    commands: Commands,
    prefix: Arc<str>,
    life: Life,
    repairs: Arc<Mutex<Repairs>>,
}

fn script(source: &str, keys: &[&str], args: &[&str]) -> Cmd {
    let mut command = redis::cmd("EVAL");
    command.arg(source).arg(keys.len()).arg(keys).arg(args);
    command
}

impl RedisPresence {
    pub fn new(commands: Commands, prefix: &str, life: Life) -> Self {
        Self {
            commands,
            prefix: prefix.into(),
            life,
            repairs: Default::default(),
        }
    }

    fn key(&self, name: &str, channel: &str) -> String {
        format!("{}{name}:{channel}", self.prefix)
    }

    fn channels_key(&self) -> String {
        format!("{}channels", self.prefix)
    }

    /// The set of channels `life` has entries in.
    pub fn life_channels_key(&self, life: &Life) -> String {
        format!("{}life:{life}:channels", self.prefix)
    }

    fn socket_field(&self, socket: &SocketId) -> String {
        format!("{}|{}", self.life, socket.as_str())
    }

    fn repairs(&self) -> std::sync::MutexGuard<'_, Repairs> {
        self.repairs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What failed since the last call.
    pub fn take_repairs(&self) -> Repairs {
        std::mem::take(&mut *self.repairs())
    }

    /// Queues a leave again (its retry failed too).
    pub fn retry_leave(&self, leave: PendingLeave) {
        self.repairs().leaves.push(leave);
    }

    /// Marks `channel`'s count for this run as needing a repair.
    pub fn recount(&self, channel: String) {
        self.repairs().counts.insert(channel);
    }

    /// A leave, failing when Redis does not take it.
    pub async fn try_leave(
        &self,
        channel: &str,
        user_id: &str,
        socket: &SocketId,
    ) -> Result<Option<Removed>, Unavailable> {
        let command = script(
            LEAVE,
            &[
                &self.key("presence", channel),
                &self.key("presence-sockets", channel),
                &self.key("presence-counts", channel),
                &self.key("presence-seq", channel),
            ],
            &[&self.socket_field(socket), user_id],
        );
        let seq: u64 = self
            .commands
            .query("leave a presence channel", command)
            .await?;
        Ok((seq > 0).then_some(Removed { seq: Some(seq) }))
    }

    /// This run's count on `channel` becomes `subscribers`; whether that occupied (`came`) or
    /// vacated the channel everywhere.
    pub async fn try_occupancy(
        &self,
        channel: &str,
        subscribers: usize,
        came: bool,
    ) -> Result<bool, Unavailable> {
        let changed: i64 = self
            .commands
            .query(
                "count a channel's subscribers",
                self.occupancy(channel, subscribers, came),
            )
            .await?;
        Ok(changed == 1)
    }

    fn occupancy(&self, channel: &str, subscribers: usize, came: bool) -> Cmd {
        script(
            OCCUPANCY,
            &[
                &self.key("occ", channel),
                &self.channels_key(),
                &self.life_channels_key(&self.life),
                &self.key("presence-sockets", channel),
            ],
            &[
                self.life.as_str(),
                &subscribers.to_string(),
                channel,
                if came { "1" } else { "0" },
            ],
        )
    }

    /// Removes what the dead run `life` left on `channel`.
    pub async fn sweep(&self, life: &Life, channel: &str) -> Result<Swept, Unavailable> {
        let command = script(
            SWEEP,
            &[
                &self.key("presence", channel),
                &self.key("presence-sockets", channel),
                &self.key("presence-counts", channel),
                &self.key("occ", channel),
                &self.channels_key(),
                &self.key("presence-seq", channel),
            ],
            &[life.as_str(), channel],
        );
        let (vacated, removed): (i64, Vec<(String, u64)>) = self
            .commands
            .query("remove a dead node's sockets", command)
            .await?;
        Ok(Swept {
            vacated: vacated == 1,
            removed,
        })
    }

    /// The channels `life` has entries in.
    pub async fn life_channels(&self, life: &Life) -> Result<Vec<String>, Unavailable> {
        let mut command = redis::cmd("SMEMBERS");
        command.arg(self.life_channels_key(life));
        self.commands.query("list a node's channels", command).await
    }

    /// Occupied channels starting with `prefix`, with their subscribers everywhere, by name.
    pub async fn channels(&self, prefix: &str) -> Result<Vec<(String, usize)>, Unavailable> {
        let command = script(CHANNELS, &[&self.channels_key()], &[prefix, &self.prefix]);
        let mut channels: Vec<(String, usize)> = self
            .commands
            .query::<Vec<(String, usize)>>("list the occupied channels", command)
            .await?;
        channels.sort();
        Ok(channels)
    }

    /// `channel`'s subscribers on every node.
    pub async fn subscription_count(&self, channel: &str) -> Result<usize, Unavailable> {
        let mut command = redis::cmd("HVALS");
        command.arg(self.key("occ", channel));
        let counts: Vec<usize> = self
            .commands
            .query("count a channel's subscribers", command)
            .await?;
        Ok(counts.into_iter().sum())
    }
}

/// Members from `HGETALL presence:{channel}`: user id, then `user_info` as JSON (`null`: none;
/// unreadable JSON is dropped rather than failing the channel).
fn members(flat: Vec<(String, String)>) -> Vec<Member> {
    flat.into_iter()
        .map(|(user_id, info)| Member {
            user_id,
            user_info: serde_json::from_str::<Value>(&info)
                .ok()
                .filter(|info| !info.is_null()),
        })
        .collect()
}

impl Presence for RedisPresence {
    fn join<'a>(
        &'a self,
        channel: &'a str,
        member: Member,
        socket: &'a SocketId,
        max_members: usize,
    ) -> BoxFuture<'a, Result<Joined, JoinError>> {
        Box::pin(async move {
            let info = member
                .user_info
                .as_ref()
                .map_or_else(|| "null".to_owned(), Value::to_string);
            let command = script(
                JOIN,
                &[
                    &self.key("presence", channel),
                    &self.key("presence-sockets", channel),
                    &self.key("presence-counts", channel),
                    &self.life_channels_key(&self.life),
                    &self.key("presence-seq", channel),
                ],
                &[
                    &member.user_id,
                    &info,
                    &self.socket_field(socket),
                    &max_members.to_string(),
                    channel,
                ],
            );
            let answer: redis::Value = self
                .commands
                .query("join a presence channel", command)
                .await?;
            let unexpected = || {
                JoinError::Unavailable(Unavailable(
                    "Redis gave an unexpected answer to a presence join".into(),
                ))
            };
            let redis::Value::Array(mut parts) = answer else {
                return Err(unexpected());
            };
            let first = match parts.first() {
                Some(redis::Value::Int(-1)) => return Err(JoinError::LimitReached),
                Some(redis::Value::Int(first)) => *first == 1,
                _ => return Err(unexpected()),
            };
            let (seq, listed) = match (parts.pop(), parts.pop()) {
                (Some(listed), Some(redis::Value::Int(seq))) if parts.len() == 1 => (seq, listed),
                _ => return Err(unexpected()),
            };
            let listed: Vec<(String, String)> =
                redis::FromRedisValue::from_redis_value(listed).map_err(|_| unexpected())?;
            Ok(Joined {
                first,
                members: members(listed),
                seq: Some(u64::try_from(seq).map_err(|_| unexpected())?),
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
            match self.try_leave(channel, user_id, socket).await {
                Ok(removal) => removal,
                Err(error) => {
                    tracing::warn!(%error, channel, "a presence leave failed; it will be retried");
                    self.retry_leave(PendingLeave {
                        channel: channel.to_owned(),
                        user_id: user_id.to_owned(),
                        socket: socket.clone(),
                    });
                    None
                }
            }
        })
    }

    fn members<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<Member>, Unavailable>> {
        Box::pin(async move {
            let mut command = redis::cmd("HGETALL");
            command.arg(self.key("presence", channel));
            let listed: Vec<(String, String)> = self
                .commands
                .query("list a presence channel's members", command)
                .await?;
            Ok(members(listed))
        })
    }

    /// A count of 0 or 1 may change the channel's occupancy everywhere: asked and awaited.
    /// Other counts cannot (this node had subscribers before and has some after): queued
    /// without waiting, in order with the rest.
    fn node_occupancy<'a>(
        &'a self,
        channel: &'a str,
        subscribers: usize,
        came: bool,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            if subscribers > 1 {
                let repairs = self.repairs.clone();
                let owned = channel.to_owned();
                self.commands.send_or(
                    "count a channel's subscribers",
                    self.occupancy(channel, subscribers, came),
                    move || {
                        repairs
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .counts
                            .insert(owned);
                    },
                );
                return false;
            }
            match self.try_occupancy(channel, subscribers, came).await {
                Ok(changed) => changed,
                Err(error) => {
                    tracing::warn!(%error, channel, "a channel's count failed; it will be repaired");
                    self.recount(channel.to_owned());
                    false
                }
            }
        })
    }

    fn counts_subscribers(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn members_read_back_what_joins_wrote() {
        let listed = vec![
            ("alice".to_owned(), json!({"name": "Alice"}).to_string()),
            ("bob".to_owned(), "null".to_owned()),
            ("eve".to_owned(), "{not json".to_owned()),
        ];
        assert_eq!(
            members(listed),
            [
                Member {
                    user_id: "alice".into(),
                    user_info: Some(json!({"name": "Alice"})),
                },
                Member {
                    user_id: "bob".into(),
                    user_info: None,
                },
                Member {
                    user_id: "eve".into(),
                    user_info: None,
                },
            ]
        );
    }
}
