//! Cache channels (`cache-`, `private-cache-`, `private-encrypted-cache-`, `presence-cache-`):
//! the last event triggered on each is kept and sent to every new subscriber right after its
//! `subscription_succeeded`; with none, the subscriber gets `pusher:cache_miss` (DESIGN.md §10,
//! §15). Only events triggered through the HTTP API are kept, as Pusher does (not client
//! events).
//!
//! Bounded in time (an entry older than the TTL is gone) and in channels: at the maximum, the
//! channel used least recently (written or replayed) makes room. Sharded by channel name as the
//! hub is, so a trigger fanning out on one cache channel holds only its shard; the maximum is
//! kept per shard (a 64th of it each, rounded up). Other channels never reach this module.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Whether `channel` is a cache channel.
pub fn is_cache_channel(channel: &str) -> bool {
    [
        "cache-",
        "private-cache-",
        "private-encrypted-cache-",
        "presence-cache-",
    ]
    .iter()
    .any(|prefix| channel.starts_with(prefix))
}

/// The last event of each cache channel.
pub struct EventCache {
    /// `None`: entries never expire.
    ttl: Option<Duration>,
    /// Per shard; 0: no limit.
    max_channels: usize,
    shards: Box<[Mutex<Entries>]>,
    hasher: std::hash::RandomState,
}

const SHARDS: usize = 64;

#[derive(Default)]
struct Entries {
    by_channel: HashMap<Arc<str>, Entry>,
    /// Channels by when they were last used, oldest first.
    by_age: BTreeMap<u64, Arc<str>>,
    uses: u64,
}

struct Entry {
    /// The frame as it was sent, replayed as it is.
    frame: Utf8Bytes,
    stored: Instant,
    /// Its key in `by_age`.
    used: u64,
}

impl EventCache {
    pub fn new(ttl: Option<Duration>, max_channels: usize) -> Self {
        Self::with_shards(ttl, max_channels, SHARDS)
    }

    fn with_shards(ttl: Option<Duration>, max_channels: usize, shards: usize) -> Self {
        Self {
            ttl,
            max_channels: max_channels.div_ceil(shards),
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn entries(&self, channel: &str) -> std::sync::MutexGuard<'_, Entries> {
        let shard = self.hasher.hash_one(channel) as usize % self.shards.len();
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends an event on a cache channel (`send` publishes `frame`) and keeps it, as one step
    /// against [`EventCache::join`]: a subscriber joining meanwhile gets it once, live or
    /// replayed, and in order.
    pub fn publish(&self, channel: &str, frame: &Utf8Bytes, now: Instant, send: impl FnOnce()) {
        let mut entries = self.entries(channel);
        send();
        Self::store(&mut entries, self.max_channels, channel, frame, now);
    }

    /// Joins a cache channel: `join` gets the channel's last event (`None` when there is none
    /// or it is older than the TTL), and subscribes and queues what the subscriber is sent, as
    /// one step against [`EventCache::publish`].
    pub fn join<R>(
        &self,
        channel: &str,
        now: Instant,
        join: impl FnOnce(Option<Utf8Bytes>) -> R,
    ) -> R {
        let mut entries = self.entries(channel);
        let last = self.last(&mut entries, channel, now);
        join(last)
    }

    fn store(
        entries: &mut Entries,
        max_channels: usize,
        channel: &str,
        frame: &Utf8Bytes,
        now: Instant,
    ) {
        entries.uses += 1;
        let used = entries.uses;
        let key: Arc<str> = match entries.by_channel.get(channel) {
            Some(old) => {
                let key = entries.by_age.remove(&old.used).expect("indexed by age");
                entries.by_channel.remove(channel);
                key
            }
            None => channel.into(),
        };
        entries.by_age.insert(used, key.clone());
        entries.by_channel.insert(
            key,
            Entry {
                frame: frame.clone(),
                stored: now,
                used,
            },
        );
        while max_channels != 0 && entries.by_channel.len() > max_channels {
            let Some((_, oldest)) = entries.by_age.pop_first() else {
                break;
            };
            entries.by_channel.remove(&oldest);
        }
    }

    /// `channel`'s last event, unless there is none or it is older than the TTL; a replay
    /// counts as a use.
    fn last(&self, entries: &mut Entries, channel: &str, now: Instant) -> Option<Utf8Bytes> {
        let entry = entries.by_channel.get(channel)?;
        let expired = self
            .ttl
            .is_some_and(|ttl| now.duration_since(entry.stored) >= ttl);
        let used = entry.used;
        let key = entries.by_age.remove(&used).expect("indexed by age");
        if expired {
            entries.by_channel.remove(channel);
            return None;
        }
        entries.uses += 1;
        let now_used = entries.uses;
        entries.by_age.insert(now_used, key);
        let entry = entries.by_channel.get_mut(channel).expect("present above");
        entry.used = now_used;
        Some(entry.frame.clone())
    }

    /// How many channels have an event kept (expired ones included until they are asked for
    /// or pushed out).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .by_channel
                    .len()
            })
            .sum()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_channels_by_name() {
        for name in [
            "cache-x",
            "private-cache-x",
            "private-encrypted-cache-x",
            "presence-cache-x",
        ] {
            assert!(is_cache_channel(name), "{name}");
        }
        for name in ["x-cache-y", "private-x", "presence-x", "cachex"] {
            assert!(!is_cache_channel(name), "{name}");
        }
    }

    #[test]
    fn keeps_the_last_event_until_it_expires() {
        let cache = EventCache::new(Some(Duration::from_secs(60)), 0);
        let start = Instant::now();
        let last = |at| cache.join("cache-a", at, |last| last);
        assert_eq!(last(start), None);
        let mut sent = 0;
        cache.publish("cache-a", &Utf8Bytes::from("one"), start, || sent += 1);
        cache.publish("cache-a", &Utf8Bytes::from("two"), start, || sent += 1);
        assert_eq!(sent, 2);
        assert_eq!(
            last(start + Duration::from_secs(59)),
            Some(Utf8Bytes::from("two"))
        );
        assert_eq!(last(start + Duration::from_secs(60)), None);
        assert!(
            cache.is_empty(),
            "an expired entry is dropped when asked for"
        );
    }

    #[test]
    fn the_channel_used_least_recently_makes_room() {
        let cache = EventCache::with_shards(None, 2, 1);
        let now = Instant::now();
        let last = |channel| cache.join(channel, now, |last| last);
        let publish = |channel, frame| cache.publish(channel, &Utf8Bytes::from(frame), now, || {});
        publish("cache-a", "a");
        publish("cache-b", "b");
        assert_eq!(
            last("cache-a"),
            Some(Utf8Bytes::from("a")),
            "a replay is a use"
        );
        publish("cache-c", "c");
        assert_eq!(cache.len(), 2);
        assert_eq!(last("cache-b"), None, "used least recently");
        assert_eq!(last("cache-a"), Some(Utf8Bytes::from("a")));
        assert_eq!(last("cache-c"), Some(Utf8Bytes::from("c")));
    }

    #[test]
    fn the_maximum_is_shared_out_among_shards() {
        let cache = EventCache::new(None, 100);
        let now = Instant::now();
        for n in 0..1000 {
            cache.publish(&format!("cache-{n}"), &Utf8Bytes::from("x"), now, || {});
        }
        assert!(cache.len() <= 64 * 2, "{} kept", cache.len());
    }
}
