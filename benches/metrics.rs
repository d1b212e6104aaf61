//! What one event's metric updates cost on the event path: ours (plain atomics and a
//! lock-free histogram, `src/metrics.rs`) against the `prometheus-client` crate's counters and
//! histogram, in the same run, on one thread and on two at once (the collection actors of two
//! busy collections). Prints nanoseconds per event and the ratio.
//!
//! ```text
//! cargo bench --bench metrics
//! ```
//!
//! `cargo test` runs it without `--bench`: a few iterations, to check it runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
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

struct Crate {
    events: Counter,
    deliveries: Counter,
    matching: Histogram,
    _registry: Registry,
}

impl Crate {
    fn new() -> Self {
        let events = Counter::default();
        let deliveries = Counter::default();
        let matching = Histogram::new([1e-6, 5e-6, 25e-6, 1e-4, 5e-4, 1e-3, 5e-3, 25e-3, 0.1, 1.0]);
        let mut registry = Registry::default();
        registry.register("velo_events", "Record changes matched.", events.clone());
        registry.register("velo_deliveries", "Frames queued.", deliveries.clone());
        registry.register("velo_match_seconds", "Time to match.", matching.clone());
        Self {
            events,
            deliveries,
            matching,
            _registry: registry,
        }
    }
}

impl EventMetrics for Crate {
    fn event(&self, took: Duration, deliveries: u64) {
        self.events.inc();
        self.matching.observe(took.as_secs_f64());
        self.deliveries.inc_by(deliveries);
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
    println!("metric updates per matched event (ns), ours vs prometheus-client 0.26:");
    for threads in [1, 2] {
        // Twice each, alternating, and the better of each: this machine is noisy.
        let mut ours = f64::MAX;
        let mut theirs = f64::MAX;
        for _ in 0..2 {
            ours = ours.min(per_event(&Metrics::default(), threads, events));
            theirs = theirs.min(per_event(&Crate::new(), threads, events));
        }
        println!(
            "  {threads} thread(s): ours {ours:.1} ns, prometheus-client {theirs:.1} ns (x{:.2})",
            theirs / ours
        );
    }
}
