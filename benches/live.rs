//! The memory a collection's history of live events (`src/engine/live.rs`) holds per event: as
//! the history counts it against `VELO_HISTORY_BYTES` (`History::size`), and as measured by
//! this binary's counting allocator (the heap the history keeps alive once the events'
//! deliveries are gone), for typical records of about 200 bytes and 1 KiB matched by 1, 10 and
//! 100 live subscriptions. Prints bytes per event and the ratio accounted / measured, so that
//! the byte limit is shown to be honest.
//!
//! Then the event path's own cost of a live subscription, in the same run: one event matched
//! by 10 subscriptions, its 10 frames made as the delivery task makes them for plain
//! subscriptions (`EventData::frame_for`) against live ones (`History::record` under the
//! history's lock, then each frame with its `seq` spliced in, `Sequenced`), the history at its
//! default limits; nanoseconds per event and the ratio. (Sending the frames, the same for
//! both, is not in it: `--scenario velo,velo-live` of the loadgen bench measures the whole
//! path.)
//!
//! ```text
//! cargo bench --bench live
//! ```
//!
//! The measured figure counts the bytes requested from the allocator and, beside it, what
//! malloc actually set aside for them (`malloc_usable_size`, glibc). `cargo test` runs it
//! without `--bench`: a few events per case, and the check that the accounting is within 20%
//! of the requested bytes (deterministic: no timing).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use uuid::Uuid;
use velo_realtime::engine::events::{Action, EventData, EventNames};
use velo_realtime::engine::live::{Cursor, History, HistoryLimits};

/// Subscriptions an event matches in the event-path comparison (as in the loadgen's velo).
const MATCHED: usize = 10;

/// Nanoseconds per event to make its frames for `MATCHED` plain subscriptions, and for as
/// many live ones (numbered and kept in a history at the default limits), `events` events each,
/// alternating three times and taking the best of each (this machine is noisy).
fn event_path(data_bytes: usize, events: usize) -> (f64, f64) {
    use std::hint::black_box;
    use std::time::Instant;
    use velo_realtime::engine::events::{Destination, Sequenced};
    use velo_realtime::pusher::ChannelEvent;
    let destinations: Vec<Destination> = (0..MATCHED)
        .map(|i| Destination {
            channel: format!("private-velo.realtime.{i:032x}").into(),
            key: None,
        })
        .collect();
    let event = Arc::new(EventData::new(
        Action::Updated,
        &record(7, data_bytes),
        EventNames::Actions,
    ));
    let (mut plain, mut live) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let started = Instant::now();
        for _ in 0..events {
            for destination in &destinations {
                black_box(black_box(&*event).frame_for(destination));
            }
        }
        plain = plain.min(started.elapsed().as_nanos() as f64 / events as f64);

        let history = History::new(HistoryLimits {
            max_age: Duration::from_secs(120),
            max_events: 10_000,
            max_bytes: 64 << 20,
        });
        let cursors: Vec<Arc<Cursor>> = (0..MATCHED).map(|_| Cursor::new(Uuid::new_v4())).collect();
        let started = Instant::now();
        for _ in 0..events {
            let seqs = history.record(&event, cursors.iter().map(|cursor| &**cursor));
            for (destination, seq) in destinations.iter().zip(seqs) {
                let sequenced = Sequenced {
                    event: black_box(&*event),
                    seq: seq.expect("numbered"),
                };
                black_box(sequenced.frame(destination));
            }
        }
        live = live.min(started.elapsed().as_nanos() as f64 / events as f64);
    }
    (plain, live)
}

/// Counts the heap in use: bytes requested, and bytes malloc set aside for them.
struct Counting;

static REQUESTED: AtomicIsize = AtomicIsize::new(0);
static USABLE: AtomicIsize = AtomicIsize::new(0);

fn usable(ptr: *mut u8) -> isize {
    // SAFETY: `ptr` is a live allocation of the system allocator (glibc malloc).
    unsafe { libc::malloc_usable_size(ptr.cast()) as isize }
}

// SAFETY: every call is passed to the system allocator unchanged; only counts are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller promised for `layout`.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            REQUESTED.fetch_add(layout.size() as isize, Ordering::Relaxed);
            USABLE.fetch_add(usable(ptr), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller promised for `layout`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            REQUESTED.fetch_add(layout.size() as isize, Ordering::Relaxed);
            USABLE.fetch_add(usable(ptr), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        REQUESTED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        USABLE.fetch_sub(usable(ptr), Ordering::Relaxed);
        // SAFETY: as the caller promised.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = usable(ptr);
        // SAFETY: as the caller promised.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            REQUESTED.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
            USABLE.fetch_add(usable(moved) - before, Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The heap in use now: requested, usable.
fn heap() -> (isize, isize) {
    (
        REQUESTED.load(Ordering::Relaxed),
        USABLE.load(Ordering::Relaxed),
    )
}

/// A record like an application's: system fields, an owner, a title and a body padded so that
/// the event's data (`{"action":"updated","record":{…}}`) is about `data_bytes` long.
fn record(n: usize, data_bytes: usize) -> Map<String, Value> {
    let make = |body: String| {
        let record = json!({
            "id": format!("r{n:014}"),
            "collection_id": "pbc_3141592653",
            "created": "2026-12-02 12:00:00.000Z",
            "owner": format!("user{}", n % 1000),
            "title": format!("Task {n}"),
            "body": body,
        });
        match record {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    };
    let bare = EventData::new(Action::Updated, &make(String::new()), EventNames::Actions);
    let pad = data_bytes.saturating_sub(bare.data_len());
    make("lorem ipsum ".repeat(pad / 12 + 1)[..pad].to_owned())
}

/// What one case measured, per event.
struct Measured {
    data_bytes: usize,
    accounted: f64,
    requested: f64,
    usable: f64,
}

/// Records `events` events of about `data_bytes` each, every one matched by `subscriptions`
/// live subscriptions, in a history that keeps them all; each event's own reference is
/// dropped as a delivery's is, so what stays is what the history holds.
fn measure(data_bytes: usize, subscriptions: usize, events: usize) -> Measured {
    let history = History::new(HistoryLimits {
        max_age: Duration::from_secs(3600),
        max_events: usize::MAX,
        max_bytes: usize::MAX,
    });
    let cursors: Vec<Arc<Cursor>> = (0..subscriptions)
        .map(|_| Cursor::new(Uuid::new_v4()))
        .collect();
    let mut data_len = 0;
    let before = heap();
    for n in 0..events {
        let record = record(n, data_bytes);
        let event = Arc::new(EventData::new(
            Action::Updated,
            &record,
            EventNames::Actions,
        ));
        data_len = event.data_len();
        let seqs = history.record(&event, cursors.iter().map(|cursor| &**cursor));
        assert!(seqs.iter().all(|seq| *seq == Some(n as u64 + 1)));
    }
    let after = heap();
    let (kept, accounted) = history.size();
    assert_eq!(kept, events, "the history keeps every event");
    let per = |bytes: isize| bytes as f64 / events as f64;
    Measured {
        data_bytes: data_len,
        accounted: accounted as f64 / events as f64,
        requested: per(after.0 - before.0),
        usable: per(after.1 - before.1),
    }
}

fn main() {
    let bench = std::env::args().any(|arg| arg == "--bench");
    // A power of two: the history's ring then has no spare capacity at the end.
    let events = if bench { 8192 } else { 64 };
    println!(
        "history of live events: bytes per event, {events} events kept, accounted \
         (History::size, against VELO_HISTORY_BYTES) vs measured (heap kept: requested, and \
         malloc's usable size)"
    );
    println!(
        "{:>10}  {:>13}  {:>15}  {:>14}  {:>11}  {:>18}",
        "data B",
        "subscriptions",
        "accounted B/ev",
        "requested B/ev",
        "usable B/ev",
        "accounted/measured"
    );
    for data_bytes in [200, 1024] {
        for subscriptions in [1, 10, 100] {
            let m = measure(data_bytes, subscriptions, events);
            let ratio = m.accounted / m.requested;
            println!(
                "{:>10}  {:>13}  {:>15.0}  {:>14.0}  {:>11.0}  {:>17}",
                m.data_bytes,
                subscriptions,
                m.accounted,
                m.requested,
                m.usable,
                format!("×{ratio:.2} (×{:.2})", m.accounted / m.usable),
            );
            if !bench {
                assert!(
                    (0.8..=1.25).contains(&ratio),
                    "the history's accounting is {ratio:.2} of the heap it keeps \
                     ({data_bytes} B, {subscriptions} subscriptions)"
                );
            }
        }
    }
    println!("(accounted/measured: against requested bytes, and in brackets against usable)");

    let events = if bench { 500_000 } else { 100 };
    println!(
        "\nevent path: one event's {MATCHED} frames, plain vs live (numbered, kept in the history \
         at its default limits), ns per event, {events} events"
    );
    for data_bytes in [200, 1024] {
        let (plain, live) = event_path(data_bytes, events);
        println!(
            "  {data_bytes:>5} B data: plain {plain:>7.0} ns, live {live:>7.0} ns (×{:.2}; +{:.0} ns per delivery)",
            live / plain,
            (live - plain) / MATCHED as f64
        );
    }
}
