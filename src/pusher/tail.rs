//! The console's event tail (DESIGN.md §15): one row per event this node sends (a record
//! change to its subscriptions' channels, or a Pusher HTTP API trigger), to the consoles
//! watching. It costs one relaxed atomic load per event while no console watches: rows are built
//! only for watchers. It knows nothing of tickets or WebSockets (`api::tail` does).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

/// Rows waiting for a slow watcher before it starts losing them (counted as dropped).
const ROWS_BUFFERED: usize = 1024;
/// A row's `data` is cut to this many bytes (at a character boundary).
pub const DATA_BYTES: usize = 512;

/// One event as the tail shows it.
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
pub struct TailRow {
    /// When it was sent, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `record` (a collection's change) or `trigger` (the Pusher HTTP API, or a hook's).
    pub source: &'static str,
    /// The event's name on the wire.
    pub event: String,
    /// The first channel it went to.
    pub channel: String,
    /// How many channels it went to.
    pub channels: usize,
    /// How many of this node's sockets it was queued to (0 with driver `pusher`: the external
    /// service sends it).
    pub sockets: usize,
    /// Its data (plain, before any encryption), cut to [`DATA_BYTES`].
    pub data: String,
    /// Whether `data` was cut.
    pub cut: bool,
}

impl TailRow {
    pub fn new(
        source: &'static str,
        event: &str,
        channel: &str,
        channels: usize,
        sockets: usize,
        data: &str,
    ) -> Self {
        let mut end = data.len().min(DATA_BYTES);
        while !data.is_char_boundary(end) {
            end -= 1;
        }
        TailRow {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64),
            source,
            event: event.to_owned(),
            channel: channel.to_owned(),
            channels,
            sockets,
            data: data[..end].to_owned(),
            cut: end < data.len(),
        }
    }
}

/// The tail's fan-out to its watchers.
pub struct Tail {
    watchers: Arc<AtomicUsize>,
    rows: broadcast::Sender<Arc<TailRow>>,
}

impl Default for Tail {
    fn default() -> Self {
        Tail {
            watchers: Arc::default(),
            rows: broadcast::channel(ROWS_BUFFERED).0,
        }
    }
}

impl Tail {
    /// Sends the row `row` builds to the watchers; with none, builds nothing.
    pub fn emit(&self, row: impl FnOnce() -> TailRow) {
        if self.watchers.load(Ordering::Relaxed) == 0 {
            return;
        }
        // Err: the last watcher left meanwhile.
        let _ = self.rows.send(Arc::new(row()));
    }

    /// A new watcher: it receives every row sent from now until it is dropped.
    pub fn watch(&self) -> Watcher {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watcher {
            rows: self.rows.subscribe(),
            watchers: self.watchers.clone(),
        }
    }

    /// Consoles watching now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }
}

/// One console's subscription to the tail; leaving is dropping it.
pub struct Watcher {
    pub rows: broadcast::Receiver<Arc<TailRow>>,
    watchers: Arc<AtomicUsize>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// At most `per_second` rows in each one-second window; the rest are dropped (and counted by
/// the caller), so that a burst cannot flood a browser.
pub struct Pacer {
    per_second: usize,
    window: Instant,
    sent: usize,
}

impl Pacer {
    pub fn new(per_second: usize, now: Instant) -> Self {
        Pacer {
            per_second,
            window: now,
            sent: 0,
        }
    }

    /// Whether a row may go out at `now`.
    pub fn admit(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.sent = 0;
        }
        if self.sent < self.per_second {
            self.sent += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_without_a_watcher() {
        let tail = Tail::default();
        tail.emit(|| unreachable!("built with no watcher"));
        let mut watcher = tail.watch();
        assert_eq!(tail.watchers(), 1);
        tail.emit(|| TailRow::new("trigger", "hello", "news", 1, 0, "{}"));
        assert_eq!(watcher.rows.try_recv().unwrap().event, "hello");
        drop(watcher);
        assert_eq!(tail.watchers(), 0);
        tail.emit(|| unreachable!("built after the last watcher left"));
    }

    #[test]
    fn data_is_cut_at_a_character_boundary() {
        let long = "é".repeat(DATA_BYTES);
        let row = TailRow::new("record", "created", "c", 1, 1, &long);
        assert!(row.cut);
        assert_eq!(row.data.len(), DATA_BYTES);
        let row = TailRow::new("record", "created", "c", 1, 1, "{}");
        assert!(!row.cut);
    }

    #[test]
    fn the_pacer_admits_per_second_then_refuses_until_the_next_window() {
        let start = Instant::now();
        let mut pacer = Pacer::new(3, start);
        let admitted = (0..5).filter(|_| pacer.admit(start)).count();
        assert_eq!(admitted, 3);
        assert!(!pacer.admit(start + Duration::from_millis(999)));
        assert!(pacer.admit(start + Duration::from_secs(1)));
    }
}
