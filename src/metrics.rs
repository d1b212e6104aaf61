//! Counters of one server, served as Prometheus text at `GET /metrics`.
//!
//! Plain atomics, updated where things happen (relaxed: they are statistics, not
//! synchronisation); gauges that already have an owner (connections, subscriptions) are read
//! from it when rendered.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the match-time histogram, in seconds.
const MATCH_BUCKETS: [f64; 10] = [1e-6, 5e-6, 25e-6, 1e-4, 5e-4, 1e-3, 5e-3, 25e-3, 0.1, 1.0];

#[derive(Default)]
pub struct Metrics {
    /// Record changes matched against subscriptions (writes and publishes).
    pub events: AtomicU64,
    /// Frames queued to sockets.
    pub deliveries: AtomicU64,
    /// Sockets closed with 4100 because they did not read.
    pub slow_consumers: AtomicU64,
    /// Events sent to, retried against, and dropped for the external Pusher service.
    pub pusher_sent: AtomicU64,
    pub pusher_retried: AtomicU64,
    pub pusher_dropped: AtomicU64,
    /// Webhook events sent, retried and dropped (summed over the URLs).
    pub webhooks_sent: AtomicU64,
    pub webhooks_retried: AtomicU64,
    pub webhooks_dropped: AtomicU64,
    /// Refusals by the per-client limits: live subscriptions, subscribe rate, connections per
    /// address.
    pub limited_subscriptions: AtomicU64,
    pub limited_subscribe_rate: AtomicU64,
    pub limited_connections_per_address: AtomicU64,
    /// Connections ended by a timeout: no request head in time (or idle), a body not in time
    /// (408), an upgrade not handed over in time, a write blocked too long.
    pub header_read_timeouts: AtomicU64,
    pub body_read_timeouts: AtomicU64,
    pub handover_timeouts: AtomicU64,
    pub write_stall_timeouts: AtomicU64,
    /// Hooks that failed or ran out of their limits (DESIGN.md §14).
    pub hook_failures: AtomicU64,
    match_buckets: [AtomicU64; MATCH_BUCKETS.len()],
    match_count: AtomicU64,
    match_nanos: AtomicU64,
}

/// Values read at render time from their owners.
pub struct Gauges {
    pub connections: usize,
    /// (collection name, subscriptions).
    pub subscriptions: Vec<(String, usize)>,
    pub eval_errors: u64,
}

impl Metrics {
    pub fn count(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    /// Records how long matching one change took.
    pub fn observe_match(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        // One bucket per observation (the smallest bound it fits under); rendering sums them
        // into Prometheus's cumulative buckets. Beyond the last bound, only the count has it.
        if let Some(bucket) = MATCH_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .map(|at| &self.match_buckets[at])
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.match_count.fetch_add(1, Ordering::Relaxed);
        self.match_nanos.fetch_add(
            took.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut text = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(text, "{name}{labels} {value}");
            }
        };
        let plain = |value: u64| vec![(String::new(), value.to_string())];
        metric(
            "velo_connections",
            "gauge",
            "Open WebSocket connections.",
            &plain(gauges.connections as u64),
        );
        let subscriptions: Vec<(String, String)> = gauges
            .subscriptions
            .iter()
            .map(|(collection, count)| {
                (
                    format!("{{collection=\"{collection}\"}}"),
                    count.to_string(),
                )
            })
            .collect();
        metric(
            "velo_subscriptions",
            "gauge",
            "Live realtime subscriptions, by collection.",
            &subscriptions,
        );
        metric(
            "velo_events_total",
            "counter",
            "Record changes matched against subscriptions.",
            &plain(load(&self.events)),
        );
        metric(
            "velo_deliveries_total",
            "counter",
            "Event frames queued to sockets.",
            &plain(load(&self.deliveries)),
        );
        metric(
            "velo_slow_consumers_total",
            "counter",
            "Sockets closed with 4100 for not reading.",
            &plain(load(&self.slow_consumers)),
        );
        for (name, help, counter) in [
            (
                "velo_pusher_sent_total",
                "Events accepted by the external Pusher service.",
                &self.pusher_sent,
            ),
            (
                "velo_pusher_retried_total",
                "Event sends retried against the external Pusher service.",
                &self.pusher_retried,
            ),
            (
                "velo_pusher_dropped_total",
                "Events dropped: queue full, refused, or past the retry window.",
                &self.pusher_dropped,
            ),
            (
                "velo_webhooks_sent_total",
                "Webhook events accepted (2xx) by their URL.",
                &self.webhooks_sent,
            ),
            (
                "velo_webhooks_retried_total",
                "Webhook event sends tried again after a failed request (an event tried again n times counts n).",
                &self.webhooks_retried,
            ),
            (
                "velo_webhooks_dropped_total",
                "Webhook events dropped: queue full, or past the retry window.",
                &self.webhooks_dropped,
            ),
            (
                "velo_hook_failures_total",
                "Hooks that failed or were stopped by their limits (a throw is no failure).",
                &self.hook_failures,
            ),
        ] {
            metric(name, "counter", help, &plain(load(counter)));
        }
        let limited: Vec<(String, String)> = [
            ("subscriptions_per_client", &self.limited_subscriptions),
            ("subscribe_rate", &self.limited_subscribe_rate),
            (
                "connections_per_address",
                &self.limited_connections_per_address,
            ),
        ]
        .into_iter()
        .map(|(limit, counter)| (format!("{{limit=\"{limit}\"}}"), load(counter).to_string()))
        .collect();
        metric(
            "velo_limited_total",
            "counter",
            "Requests and connections refused by a per-client limit, by limit.",
            &limited,
        );
        let timeouts: Vec<(String, String)> = [
            ("header_read", &self.header_read_timeouts),
            ("body_read", &self.body_read_timeouts),
            ("upgrade_handover", &self.handover_timeouts),
            ("write_stall", &self.write_stall_timeouts),
        ]
        .into_iter()
        .map(|(kind, counter)| (format!("{{kind=\"{kind}\"}}"), load(counter).to_string()))
        .collect();
        metric(
            "velo_timeouts_total",
            "counter",
            "Connections and requests ended by a timeout, by kind.",
            &timeouts,
        );
        metric(
            "velo_filter_eval_errors_total",
            "counter",
            "Filter evaluations that failed (and did not match).",
            &plain(gauges.eval_errors),
        );
        let mut cumulative = 0;
        let mut histogram: Vec<(String, String)> = MATCH_BUCKETS
            .iter()
            .zip(&self.match_buckets)
            .map(|(bound, bucket)| {
                cumulative += load(bucket);
                (format!("_bucket{{le=\"{bound}\"}}"), cumulative.to_string())
            })
            .collect();
        // Read after the buckets, and never below them (an observation between the reads has
        // its bucket counted already), so the buckets never decrease.
        let count = load(&self.match_count).max(cumulative);
        histogram.push(("_bucket{le=\"+Inf\"}".into(), count.to_string()));
        histogram.push((
            "_sum".into(),
            (load(&self.match_nanos) as f64 / 1e9).to_string(),
        ));
        histogram.push(("_count".into(), count.to_string()));
        metric(
            "velo_match_seconds",
            "histogram",
            "Time to find the subscriptions one change matches.",
            &histogram,
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        Metrics::count(&metrics.events, 2);
        metrics.observe_match(Duration::from_micros(3));
        metrics.observe_match(Duration::from_micros(50));
        metrics.observe_match(Duration::from_secs(2));
        let text = metrics.render(&Gauges {
            connections: 4,
            subscriptions: vec![("posts".into(), 7)],
            eval_errors: 1,
        });
        for line in [
            "velo_connections 4",
            "velo_subscriptions{collection=\"posts\"} 7",
            "velo_events_total 2",
            "velo_filter_eval_errors_total 1",
            "velo_limited_total{limit=\"subscribe_rate\"} 0",
            "velo_match_seconds_bucket{le=\"0.000005\"} 1",
            "velo_match_seconds_bucket{le=\"0.000001\"} 0",
            // Buckets are cumulative: 3 µs and 50 µs are both under 100 µs; 2 s is under none.
            "velo_match_seconds_bucket{le=\"0.0001\"} 2",
            "velo_match_seconds_bucket{le=\"1\"} 2",
            "velo_match_seconds_bucket{le=\"+Inf\"} 3",
            "velo_match_seconds_count 3",
            "# TYPE velo_match_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
