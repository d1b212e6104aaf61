//! Live queries (DESIGN.md §13): a live subscription's cursor (the `seq` of its last event)
//! and a collection's history of live events, from which a client recovers what it missed.
//!
//! A live subscription's events are numbered 1, 2, 3… by its collection's delivery task, in
//! the collection's order, as they are sent: one task numbers them, under the history's lock,
//! so the history and the cursors never disagree. The history keeps each event once, shared
//! with its delivery, with the `seq` it got for each live subscription it matched; it is
//! bounded by age, count and bytes, and a recovery that reaches past it is refused, so that
//! the client takes a new snapshot rather than miss an event.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::events::{EventData, Sequenced};

/// Where a live subscription is in its events.
#[derive(Debug)]
pub struct Cursor {
    pub id: Uuid,
    /// The `seq` of its last event; advanced only by [`History::record`].
    seq: AtomicU64,
    /// Loaded by a node that cannot know where the subscription is (other nodes numbered its
    /// events while this one was not running): this node sends it nothing, and a recovery
    /// here finds its events gone, so its client takes a new snapshot.
    lost: bool,
}

impl Cursor {
    /// A subscription made now: no event yet.
    pub fn new(id: Uuid) -> Arc<Self> {
        Arc::new(Self {
            id,
            seq: AtomicU64::new(0),
            lost: false,
        })
    }

    /// A subscription whose place this node cannot know.
    pub fn lost(id: Uuid) -> Arc<Self> {
        Arc::new(Self {
            id,
            seq: AtomicU64::new(0),
            lost: true,
        })
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }
}

/// How much history a collection keeps (`VELO_HISTORY_*`): an event goes when it is older
/// than `max_age`, or to keep within `max_events` and `max_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLimits {
    pub max_age: Duration,
    pub max_events: usize,
    pub max_bytes: usize,
}

/// One live event: the event, and the `seq` it got per live subscription.
struct Entry {
    at: Instant,
    event: Arc<EventData>,
    seqs: Box<[(Uuid, u64)]>,
}

impl Entry {
    /// What the entry holds, counted against [`HistoryLimits::max_bytes`]: the whole event
    /// (its JSON text and the same escaped for frames: once its deliveries are sent, the
    /// history is what keeps it) and its seqs. Counting only the JSON text counted a third to
    /// a half of the heap kept (`cargo bench --bench live`).
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.event.heap_bytes()
            + self.seqs.len() * std::mem::size_of::<(Uuid, u64)>()
    }
}

/// A collection's live events, oldest first.
pub struct History {
    limits: HistoryLimits,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Entries {
    /// Lets go of what is past the limits.
    fn trim(&mut self, limits: &HistoryLimits, now: Instant) {
        while let Some(oldest) = self.entries.front() {
            let aged = now.duration_since(oldest.at) > limits.max_age;
            if !(aged || self.entries.len() > limits.max_events || self.bytes > limits.max_bytes) {
                break;
            }
            self.bytes -= oldest.bytes();
            self.entries.pop_front();
        }
    }
}

/// Why events cannot be recovered.
#[derive(Debug, PartialEq, Eq)]
pub enum RecoveryError {
    /// `after` is beyond the subscription's last event, `seq`.
    Ahead { seq: u64 },
    /// Some of the events after `after` are no longer kept (or, on this node, never were).
    Gone,
}

/// A live subscription's kept events: where to recover them from.
pub struct Kept {
    pub history: Arc<History>,
    pub cursor: Arc<Cursor>,
}

impl Kept {
    /// The subscription's events after `after`, in order.
    pub fn since(&self, after: u64) -> Result<Vec<Recovered>, RecoveryError> {
        self.history.since(&self.cursor, after)
    }
}

/// A recovered event: its name on the wire, and its data as JSON text with its `seq`.
pub struct Recovered {
    pub name: &'static str,
    pub data: String,
}

impl History {
    pub fn new(limits: HistoryLimits) -> Self {
        Self {
            limits,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Numbers `event` for each of `cursors` (the next `seq` of each; none for a lost one)
    /// and keeps it. Called by the collection's delivery task, in the collection's order.
    pub fn record<'c>(
        &self,
        event: &Arc<EventData>,
        cursors: impl ExactSizeIterator<Item = &'c Cursor>,
    ) -> Vec<Option<u64>> {
        let now = Instant::now();
        let mut entries = self.lock();
        let mut seqs = Vec::with_capacity(cursors.len());
        let numbered: Vec<Option<u64>> = cursors
            .map(|cursor| {
                (!cursor.lost).then(|| {
                    let seq = cursor.seq.fetch_add(1, Ordering::Relaxed) + 1;
                    seqs.push((cursor.id, seq));
                    seq
                })
            })
            .collect();
        if !seqs.is_empty() {
            let entry = Entry {
                at: now,
                event: event.clone(),
                seqs: seqs.into_boxed_slice(),
            };
            entries.bytes += entry.bytes();
            entries.entries.push_back(entry);
        }
        entries.trim(&self.limits, now);
        numbered
    }

    /// The events of `cursor`'s subscription after `after`, in order.
    pub fn since(&self, cursor: &Cursor, after: u64) -> Result<Vec<Recovered>, RecoveryError> {
        let mut entries = self.lock();
        entries.trim(&self.limits, Instant::now());
        let seq = cursor.seq.load(Ordering::Relaxed);
        if after > seq {
            return Err(RecoveryError::Ahead { seq });
        }
        if cursor.lost {
            return Err(RecoveryError::Gone);
        }
        let mut recovered = Vec::new();
        let mut expected = after + 1;
        for entry in &entries.entries {
            let Some(&(_, numbered)) = entry.seqs.iter().find(|(id, _)| *id == cursor.id) else {
                continue;
            };
            if numbered < expected {
                continue;
            }
            if numbered > expected {
                // The events between were let go.
                return Err(RecoveryError::Gone);
            }
            let sequenced = Sequenced {
                event: &entry.event,
                seq: numbered,
            };
            recovered.push(Recovered {
                name: entry.event.name(),
                data: sequenced.text(),
            });
            expected += 1;
        }
        if expected <= seq {
            return Err(RecoveryError::Gone);
        }
        Ok(recovered)
    }

    /// Events kept and their bytes as counted against the limits.
    pub fn size(&self) -> (usize, usize) {
        let entries = self.lock();
        (entries.entries.len(), entries.bytes)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::engine::events::{Action, EventNames};

    fn event(n: u64) -> Arc<EventData> {
        let record = json!({"id": format!("r{n}"), "n": n});
        Arc::new(EventData::new(
            Action::Updated,
            record.as_object().unwrap(),
            EventNames::Actions,
        ))
    }

    fn limits() -> HistoryLimits {
        HistoryLimits {
            max_age: Duration::from_secs(60),
            max_events: 100,
            max_bytes: 1 << 20,
        }
    }

    fn seqs_of(recovered: &[Recovered]) -> Vec<u64> {
        recovered
            .iter()
            .map(|event| {
                serde_json::from_str::<Value>(&event.data).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn numbers_each_subscription_on_its_own_and_recovers_in_order() {
        let history = History::new(limits());
        let (a, b) = (Cursor::new(Uuid::new_v4()), Cursor::new(Uuid::new_v4()));
        assert_eq!(
            history.record(&event(1), [&*a, &*b].into_iter()),
            [Some(1), Some(1)]
        );
        assert_eq!(history.record(&event(2), [&*a].into_iter()), [Some(2)]);
        assert_eq!(
            history.record(&event(3), [&*b, &*a].into_iter()),
            [Some(2), Some(3)]
        );
        assert_eq!(seqs_of(&history.since(&a, 0).unwrap()), [1, 2, 3]);
        assert_eq!(seqs_of(&history.since(&a, 2).unwrap()), [3]);
        assert!(history.since(&a, 3).unwrap().is_empty());
        assert_eq!(seqs_of(&history.since(&b, 1).unwrap()), [2]);
        let recovered = history.since(&b, 0).unwrap();
        let data: Value = serde_json::from_str(&recovered[1].data).unwrap();
        assert_eq!(
            data,
            json!({"action": "updated", "record": {"id": "r3", "n": 3}, "seq": 2})
        );
        assert_eq!(recovered[1].name, "updated");
        assert_eq!(
            history.since(&a, 4).err(),
            Some(RecoveryError::Ahead { seq: 3 })
        );
    }

    #[test]
    fn events_past_the_limits_are_gone() {
        let history = History::new(HistoryLimits {
            max_events: 2,
            ..limits()
        });
        let a = Cursor::new(Uuid::new_v4());
        for n in 1..=4 {
            history.record(&event(n), [&*a].into_iter());
        }
        assert_eq!(history.size().0, 2);
        assert_eq!(history.since(&a, 1).err(), Some(RecoveryError::Gone));
        assert_eq!(seqs_of(&history.since(&a, 2).unwrap()), [3, 4]);
        // An event another subscription matched does not hide the gap.
        let b = Cursor::new(Uuid::new_v4());
        history.record(&event(5), [&*b].into_iter());
        history.record(&event(6), [&*b].into_iter());
        assert_eq!(history.since(&a, 3).err(), Some(RecoveryError::Gone));
        assert!(history.since(&a, 4).unwrap().is_empty());

        let by_bytes = History::new(HistoryLimits {
            max_bytes: 1,
            ..limits()
        });
        by_bytes.record(&event(1), [&*a].into_iter());
        assert_eq!(by_bytes.size(), (0, 0));
        assert_eq!(by_bytes.since(&a, 3).err(), Some(RecoveryError::Gone));

        let by_age = History::new(HistoryLimits {
            max_age: Duration::ZERO,
            ..limits()
        });
        let c = Cursor::new(Uuid::new_v4());
        by_age.record(&event(1), [&*c].into_iter());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(by_age.since(&c, 0).err(), Some(RecoveryError::Gone));
    }

    #[test]
    fn an_event_counts_both_its_texts_against_the_byte_limit() {
        let history = History::new(limits());
        let a = Cursor::new(Uuid::new_v4());
        let kept = event(1);
        history.record(&kept, [&*a].into_iter());
        let (_, bytes) = history.size();
        // The JSON, the same escaped for frames (no shorter), and the seq.
        let least = 2 * kept.data_len() + std::mem::size_of::<(Uuid, u64)>();
        assert!(bytes >= least, "{bytes} < {least}");
        let seq = std::mem::size_of::<(Uuid, u64)>();
        assert_eq!(
            bytes,
            std::mem::size_of::<Entry>() + kept.heap_bytes() + seq
        );
    }

    #[test]
    fn a_lost_cursor_is_never_numbered_and_never_recovered() {
        let history = History::new(limits());
        let lost = Cursor::lost(Uuid::new_v4());
        let live = Cursor::new(Uuid::new_v4());
        assert_eq!(
            history.record(&event(1), [&*lost, &*live].into_iter()),
            [None, Some(1)]
        );
        assert!(history.since(&lost, 0).is_err());
        assert_eq!(history.since(&live, 0).map(|events| events.len()), Ok(1));
    }
}
