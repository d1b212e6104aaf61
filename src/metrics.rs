//! Counters of one server, served as Prometheus text at `GET /metrics`.
//!
//! The counters are `prometheus-client`'s (one atomic each, updated where things happen;
//! relaxed: they are statistics, not synchronisation), registered once in a registry that the
//! crate encodes as Prometheus text (format 0.0.4). The match-time histogram keeps its own
//! atomics, one bucket per observation, and only its encoding is the crate's: the crate's
//! `Histogram` takes a lock on each observation, and it is observed once per event. Gauges
//! that already have an owner (connections, subscriptions), and the filter evaluation errors,
//! are read from their owners when rendered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Metrics::render`] answers.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the match-time histogram, in seconds.
const MATCH_BUCKETS: [f64; 10] = [1e-6, 5e-6, 25e-6, 1e-4, 5e-4, 1e-3, 5e-3, 25e-3, 0.1, 1.0];

pub struct Metrics {
    /// Record changes matched against subscriptions (writes and publishes).
    pub events: Counter,
    /// Frames queued to sockets.
    pub deliveries: Counter,
    /// Sockets closed with 4100 because they did not read.
    pub slow_consumers: Counter,
    /// Events sent to, retried against, and dropped for the external Pusher service.
    pub pusher_sent: Counter,
    pub pusher_retried: Counter,
    pub pusher_dropped: Counter,
    /// Webhook events sent, retried and dropped (summed over the URLs).
    pub webhooks_sent: Counter,
    pub webhooks_retried: Counter,
    pub webhooks_dropped: Counter,
    /// Refusals by the per-client limits: live subscriptions, subscribe rate, connections per
    /// address.
    pub limited_subscriptions: Counter,
    pub limited_subscribe_rate: Counter,
    pub limited_connections_per_address: Counter,
    /// Connections ended by a timeout: no request head in time (or idle), a body not in time
    /// (408), an upgrade not handed over in time, a write blocked too long.
    pub header_read_timeouts: Counter,
    pub body_read_timeouts: Counter,
    pub handover_timeouts: Counter,
    pub write_stall_timeouts: Counter,
    /// Hooks that failed or ran out of their limits (DESIGN.md §14).
    pub hook_failures: Counter,
    matching: MatchHistogram,
    /// All of the above (clones: the same atomics).
    registry: Registry,
}

/// Values read at render time from their owners.
#[derive(Debug)]
pub struct Gauges {
    pub connections: usize,
    /// (collection name, subscriptions).
    pub subscriptions: Vec<(String, usize)>,
    pub eval_errors: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            events: Counter::default(),
            deliveries: Counter::default(),
            slow_consumers: Counter::default(),
            pusher_sent: Counter::default(),
            pusher_retried: Counter::default(),
            pusher_dropped: Counter::default(),
            webhooks_sent: Counter::default(),
            webhooks_retried: Counter::default(),
            webhooks_dropped: Counter::default(),
            limited_subscriptions: Counter::default(),
            limited_subscribe_rate: Counter::default(),
            limited_connections_per_address: Counter::default(),
            header_read_timeouts: Counter::default(),
            body_read_timeouts: Counter::default(),
            handover_timeouts: Counter::default(),
            write_stall_timeouts: Counter::default(),
            hook_failures: Counter::default(),
            matching: MatchHistogram::default(),
            registry: Registry::default(),
        };
        // The crate appends `_total` to a counter's name and a full stop to each help text
        // registered here.
        let registry = &mut metrics.registry;
        for (name, help, counter) in [
            (
                "velo_events",
                "Record changes matched against subscriptions",
                &metrics.events,
            ),
            (
                "velo_deliveries",
                "Event frames queued to sockets",
                &metrics.deliveries,
            ),
            (
                "velo_slow_consumers",
                "Sockets closed with 4100 for not reading",
                &metrics.slow_consumers,
            ),
            (
                "velo_pusher_sent",
                "Events accepted by the external Pusher service",
                &metrics.pusher_sent,
            ),
            (
                "velo_pusher_retried",
                "Event sends retried against the external Pusher service",
                &metrics.pusher_retried,
            ),
            (
                "velo_pusher_dropped",
                "Events dropped: queue full, refused, or past the retry window",
                &metrics.pusher_dropped,
            ),
            (
                "velo_webhooks_sent",
                "Webhook events accepted (2xx) by their URL",
                &metrics.webhooks_sent,
            ),
            (
                "velo_webhooks_retried",
                "Webhook event sends tried again after a failed request (an event tried again n times counts n)",
                &metrics.webhooks_retried,
            ),
            (
                "velo_webhooks_dropped",
                "Webhook events dropped: queue full, or past the retry window",
                &metrics.webhooks_dropped,
            ),
            (
                "velo_hook_failures",
                "Hooks that failed or were stopped by their limits (a throw is no failure)",
                &metrics.hook_failures,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "velo_limited",
            "Requests and connections refused by a per-client limit, by limit",
            ByLabel {
                label: "limit",
                counters: vec![
                    (
                        "subscriptions_per_client",
                        metrics.limited_subscriptions.clone(),
                    ),
                    ("subscribe_rate", metrics.limited_subscribe_rate.clone()),
                    (
                        "connections_per_address",
                        metrics.limited_connections_per_address.clone(),
                    ),
                ],
            },
        );
        registry.register(
            "velo_timeouts",
            "Connections and requests ended by a timeout, by kind",
            ByLabel {
                label: "kind",
                counters: vec![
                    ("header_read", metrics.header_read_timeouts.clone()),
                    ("body_read", metrics.body_read_timeouts.clone()),
                    ("upgrade_handover", metrics.handover_timeouts.clone()),
                    ("write_stall", metrics.write_stall_timeouts.clone()),
                ],
            },
        );
        registry.register(
            "velo_match_seconds",
            "Time to find the subscriptions one change matches",
            metrics.matching.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Records how long matching one change took.
    pub fn observe_match(&self, took: Duration) {
        self.matching.observe(took);
    }

    /// Prometheus text: the gauges read from their owners, then the registry.
    pub fn render(&self, gauges: Gauges) -> Result<String, std::fmt::Error> {
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(gauges));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &scrape)?;
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A collector's help texts are written as given: the registry appends its full stop
        // only to what is registered with it.
        let connections = ConstGauge::new(self.connections as u64);
        connections.encode(encoder.encode_descriptor(
            "velo_connections",
            "Open WebSocket connections.",
            None,
            MetricType::Gauge,
        )?)?;
        {
            let mut subscriptions = encoder.encode_descriptor(
                "velo_subscriptions",
                "Live realtime subscriptions, by collection.",
                None,
                MetricType::Gauge,
            )?;
            for (collection, count) in &self.subscriptions {
                ConstGauge::new(*count as u64)
                    .encode(subscriptions.encode_family(&[("collection", collection.as_str())])?)?;
            }
        }
        ConstCounter::new(self.eval_errors).encode(encoder.encode_descriptor(
            "velo_filter_eval_errors",
            "Filter evaluations that failed (and did not match).",
            None,
            MetricType::Counter,
        )?)
    }
}

/// Counters of one family, one label value each, in a fixed order (the crate's `Family`
/// finds a label set's counter under a lock, and lists them in hash order).
#[derive(Debug)]
struct ByLabel {
    label: &'static str,
    counters: Vec<(&'static str, Counter)>,
}

impl EncodeMetric for ByLabel {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (value, counter) in &self.counters {
            counter.encode(encoder.encode_family(&[(self.label, *value)])?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// The match-time histogram: one bucket counted per observation (the smallest bound it fits
/// under, or the last, past every bound), summed into cumulative buckets by the crate when
/// encoded. The count is their sum, so it never falls below them.
#[derive(Clone, Debug, Default)]
struct MatchHistogram(Arc<MatchCounts>);

#[derive(Debug, Default)]
struct MatchCounts {
    buckets: [AtomicU64; MATCH_BUCKETS.len() + 1],
    nanos: AtomicU64,
}

impl MatchHistogram {
    fn observe(&self, took: Duration) {
        let counts = &*self.0;
        let seconds = took.as_secs_f64();
        let at = MATCH_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(MATCH_BUCKETS.len());
        counts.buckets[at].fetch_add(1, Ordering::Relaxed);
        counts.nanos.fetch_add(
            took.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }
}

impl EncodeMetric for MatchHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = &*self.0;
        let buckets: Vec<(f64, u64)> = MATCH_BUCKETS
            .iter()
            .chain([&f64::INFINITY])
            .zip(&counts.buckets)
            .map(|(bound, bucket)| (*bound, bucket.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        let seconds = counts.nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(seconds, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.events.inc_by(2);
        metrics.limited_subscribe_rate.inc();
        metrics.observe_match(Duration::from_micros(3));
        metrics.observe_match(Duration::from_micros(50));
        metrics.observe_match(Duration::from_secs(2));
        let text = metrics
            .render(Gauges {
                connections: 4,
                subscriptions: vec![("posts".into(), 7), ("notes".into(), 0)],
                eval_errors: 1,
            })
            .unwrap();
        for line in [
            "# HELP velo_connections Open WebSocket connections.",
            "# TYPE velo_connections gauge",
            "velo_connections 4",
            "velo_subscriptions{collection=\"posts\"} 7",
            "velo_subscriptions{collection=\"notes\"} 0",
            "# HELP velo_events_total Record changes matched against subscriptions.",
            "# TYPE velo_events_total counter",
            "velo_events_total 2",
            "velo_deliveries_total 0",
            "# TYPE velo_filter_eval_errors_total counter",
            "velo_filter_eval_errors_total 1",
            "velo_limited_total{limit=\"subscriptions_per_client\"} 0",
            "velo_limited_total{limit=\"subscribe_rate\"} 1",
            "velo_timeouts_total{kind=\"write_stall\"} 0",
            "# TYPE velo_match_seconds histogram",
            // The crate writes bounds as Go clients do: 1e-06, not 0.000001.
            "velo_match_seconds_bucket{le=\"1e-06\"} 0",
            "velo_match_seconds_bucket{le=\"5e-06\"} 1",
            // Buckets are cumulative: 3 µs and 50 µs are both under 100 µs; 2 s is under none.
            "velo_match_seconds_bucket{le=\"0.0001\"} 2",
            "velo_match_seconds_bucket{le=\"1\"} 2",
            "velo_match_seconds_bucket{le=\"+Inf\"} 3",
            "velo_match_seconds_sum 2.000053",
            "velo_match_seconds_count 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every bound, once, in order; no sample line twice.
        let bounds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("velo_match_seconds_bucket{le=\""))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(
            bounds,
            [
                "1e-06", "5e-06", "2.5e-05", "0.0001", "0.0005", "0.001", "0.005", "0.025", "0.1",
                "1", "+Inf"
            ]
        );
        let parsed: Vec<f64> = bounds.iter().map(|b| b.parse().unwrap()).collect();
        assert_eq!(parsed[..MATCH_BUCKETS.len()], MATCH_BUCKETS);
        assert_eq!(parsed[MATCH_BUCKETS.len()], f64::INFINITY);
        let mut samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
            .collect();
        let all = samples.len();
        samples.sort_unstable();
        samples.dedup();
        assert_eq!(samples.len(), all, "a series twice in\n{text}");
    }
}
