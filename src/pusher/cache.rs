//! Cache channels (`cache-`, `private-cache-`, `private-encrypted-cache-`, `presence-cache-`):
//! the last event triggered on each is kept and sent to every new subscriber right after its
//! `subscription_succeeded`; with none, the subscriber gets `pusher:cache_miss` (DESIGN.md §10,
//! §15). Only events triggered through the HTTP API are kept, as Pusher does (not client
//! events).
//!
//! Bounded in time (an entry older than the TTL is gone) and in channels: at the maximum, the
//! channel written least recently makes room. One short mutex per trigger on a cache channel and
//! per subscription to one; other channels never reach this module.

use std::collections::{BTreeMap, HashMap};
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
    /// 0: no limit.
    max_channels: usize,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_channel: HashMap<Arc<str>, Entry>,
    /// Channels by when they were last written, oldest first.
    by_age: BTreeMap<u64, Arc<str>>,
    writes: u64,
}

struct Entry {
    /// The frame as it was sent, replayed as it is.
    frame: Utf8Bytes,
    stored: Instant,
    /// Its key in `by_age`.
    write: u64,
}

impl EventCache {
    pub fn new(ttl: Option<Duration>, max_channels: usize) -> Self {
        Self {
            ttl,
            max_channels,
            entries: Mutex::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends an event on a cache channel (`send` publishes `frame`) and keeps it, as one step
    /// against [`EventCache::join`]: a subscriber joining meanwhile gets it once, live or
    /// replayed, and in order.
    pub fn publish(&self, channel: &str, frame: &Utf8Bytes, now: Instant, send: impl FnOnce()) {
        let mut entries = self.entries();
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
        let mut entries = self.entries();
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
        entries.writes += 1;
        let write = entries.writes;
        let key: Arc<str> = match entries.by_channel.get(channel) {
            Some(old) => {
                let key = entries.by_age.remove(&old.write).expect("indexed by age");
                entries.by_channel.remove(channel);
                key
            }
            None => channel.into(),
        };
        entries.by_age.insert(write, key.clone());
        entries.by_channel.insert(
            key,
            Entry {
                frame: frame.clone(),
                stored: now,
                write,
            },
        );
        while max_channels != 0 && entries.by_channel.len() > max_channels {
            let Some((_, oldest)) = entries.by_age.pop_first() else {
                break;
            };
            entries.by_channel.remove(&oldest);
        }
    }

    /// `channel`'s last event, unless there is none or it is older than the TTL.
    fn last(&self, entries: &mut Entries, channel: &str, now: Instant) -> Option<Utf8Bytes> {
        let entry = entries.by_channel.get(channel)?;
        let expired = self
            .ttl
            .is_some_and(|ttl| now.duration_since(entry.stored) >= ttl);
        if !expired {
            return Some(entry.frame.clone());
        }
        let write = entry.write;
        entries.by_age.remove(&write);
        entries.by_channel.remove(channel);
        None
    }

    /// How many channels have an event kept (expired ones included until they are asked for
    /// or pushed out).
    pub fn len(&self) -> usize {
        self.entries().by_channel.len()
    }

    pub fn is_empty(&self) -> bool {
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
    fn the_channel_written_least_recently_makes_room() {
        let cache = EventCache::new(None, 2);
        let now = Instant::now();
        for (channel, frame) in [
            ("cache-a", "a"),
            ("cache-b", "b"),
            ("cache-a", "a2"),
            ("cache-c", "c"),
        ] {
            cache.publish(channel, &Utf8Bytes::from(frame), now, || {});
        }
        assert_eq!(cache.len(), 2);
        let last = |channel| cache.join(channel, now, |last| last);
        assert_eq!(last("cache-b"), None, "written least recently");
        assert_eq!(last("cache-a"), Some(Utf8Bytes::from("a2")));
        assert_eq!(last("cache-c"), Some(Utf8Bytes::from("c")));
    }
}
