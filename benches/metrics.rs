//! What one event's metric updates cost on the event path: through our `Metrics`
//! (`src/metrics.rs`: `prometheus-client` counters and our lock-free match histogram) against
//! a floor of three plain `AtomicU64` increments (one per update, nothing else), in the same
//! run, on one thread and on two at once (the collection actors of two busy collections).
//! Prints nanoseconds per event and the ratio.
//!
//! Then what the console's event tail (`src/pusher/tail.rs`) costs an event while no console
//! watches, `Tail::emit` with a row that is then never built, against the same loop without
//! it; and, for scale, what it costs while one watches (the row built and sent).
//!
//! ```text
//! cargo bench --bench metrics
//! ```
//!
//! `cargo test` runs it without `--bench`: a few iterations, to check it runs.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use velo_realtime::metrics::Metrics;
use velo_realtime::pusher::tail::{Tail, TailRow};

/// The metric updates one matched event makes: the event, its match time, its deliveries.
trait EventMetrics: Sync {
    fn event(&self, took: Duration, deliveries: u64);
}

impl EventMetrics for Metrics {
    fn event(&self, took: Duration, deliveries: u64) {
        self.events.inc();
        self.observe_match(took);
        self.deliveries.inc_by(deliveries);
    }
}

/// The floor: an atomic increment for each update, the match time only counted.
#[derive(Default)]
struct Plain {
    events: AtomicU64,
    matched: AtomicU64,
    deliveries: AtomicU64,
}

impl EventMetrics for Plain {
    fn event(&self, took: Duration, deliveries: u64) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.matched
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.deliveries.fetch_add(deliveries, Ordering::Relaxed);
    }
}

/// Nanoseconds per event, `threads` updating at once.
fn per_event(metrics: &impl EventMetrics, threads: usize, events: u64) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for n in 0..events {
                    metrics.event(
                        black_box(Duration::from_nanos(3_000 + n % 7)),
                        black_box(10),
                    );
                }
            });
        }
    });
    started.elapsed().as_nanos() as f64 / (events * threads as u64) as f64
}

fn main() {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let events = if bench { 20_000_000 } else { 1_000 };
    println!("metric updates per matched event (ns), our Metrics vs three plain AtomicU64 adds:");
    for threads in [1, 2] {
        // Twice each, alternating, and the better of each: this machine is noisy.
        let mut ours = f64::MAX;
        let mut plain = f64::MAX;
        for _ in 0..2 {
            ours = ours.min(per_event(&Metrics::default(), threads, events));
            plain = plain.min(per_event(&Plain::default(), threads, events));
        }
        println!(
            "  {threads} thread(s): Metrics {ours:.1} ns, plain atomics {plain:.1} ns (x{:.2})",
            ours / plain
        );
    }

    println!("the console tail per event (ns), one thread:");
    let tail = Tail::default();
    let mut without = f64::MAX;
    let mut unwatched = f64::MAX;
    for _ in 0..2 {
        without = without.min(tail_per_event(None, events));
        unwatched = unwatched.min(tail_per_event(Some(&tail), events));
    }
    let watcher = tail.watch();
    let watched = tail_per_event(Some(&tail), events / 10);
    drop(watcher);
    println!(
        "  no console open: {unwatched:.2} ns, the same loop without the tail {without:.2} ns \
         (+{:.2} ns, x{:.2}); one console open: {watched:.0} ns (x{:.1})",
        unwatched - without,
        unwatched / without,
        watched / without
    );
}

/// Nanoseconds per event of a loop that stands for the event path's bookkeeping (one atomic
/// add) and, given `tail`, offers the tail a row, as the delivery paths do.
fn tail_per_event(tail: Option<&Tail>, events: u64) -> f64 {
    let delivered = AtomicU64::new(0);
    let data = r#"{"action":"created","record":{"id":"k3vbd1iq0y8c2x7","title":"Hello"}}"#;
    let started = Instant::now();
    for n in 0..events {
        let sockets = black_box(n % 7) as usize;
        delivered.fetch_add(sockets as u64, Ordering::Relaxed);
        if let Some(tail) = black_box(tail) {
            tail.emit(|| TailRow::new("record", "created", "velo.realtime.x", 1, sockets, data));
        }
    }
    black_box(delivered.load(Ordering::Relaxed));
    started.elapsed().as_nanos() as f64 / events as f64
}
