//! What one event's metric updates cost on the event path: through our `Metrics`
//! (`src/metrics.rs`: `prometheus-client` counters and our lock-free match histogram) against
//! a floor of three plain `AtomicU64` increments (one per update, nothing else), in the same
//! run, on one thread and on two at once (the collection actors of two busy collections).
//! Prints nanoseconds per event and the ratio.
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
}
