//! Webhooks: what happens on channels, POSTed to the app's URLs as Pusher does (PUSHER.md §12).
//!
//! Events: `channel_occupied` / `channel_vacated` when a channel gets its first subscriber or
//! loses its last, `member_added` / `member_removed` when a user (not a socket) joins or leaves
//! a presence channel, `client_event` for each relayed client event, `cache_miss` when a cache
//! channel's subscriber finds nothing to replay. The caller decides when each happened, in
//! its channel's turn, so a channel's events are queued in the order they happened.
//!
//! Each URL has its own thread and bounded queue, with one request in flight: the body
//! `{"time_ms", "events": [...]}` holds up to [`MAX_BATCH`] events, or what came within
//! [`BATCH_WINDOW`] of the first. It is signed with the app's secret (`X-Pusher-Key`,
//! `X-Pusher-Signature`: hex HMAC-SHA256 of the body). A failed request (no 2xx within
//! [`REQUEST_TIMEOUT`], or no answer) is retried with backoff, the same body, until the retry
//! window has passed since its oldest event happened; then its events are dropped, counted and
//! logged, and the next batch goes. While the URL keeps failing, a batch whose events are all
//! already older than the window is dropped without a try, so that a receiver back after a
//! long outage gets the recent events at once rather than each stale batch's full window
//! first. A full queue drops the new event at once (counted): a receiver that is down never
//! slows a socket. A server stopping gives the queues a bounded time to drain
//! ([`Webhooks::drain`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Value, json};

use super::signature::AppCredentials;
use crate::metrics::Metrics;

/// Most events in one request.
pub const MAX_BATCH: usize = 50;
/// How long a batch waits for more events after its first.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// Events waiting for one URL before new ones are dropped.
pub const QUEUE_EVENTS: usize = 100_000;
/// Bytes of events waiting for one URL before new ones are dropped (client events can be
/// large: 100,000 of 10 KiB would be a gigabyte).
pub const QUEUE_BYTES: usize = 64 << 20;
/// One request's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The kinds of webhook event, as named in the body and in `[[webhooks]] events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ChannelOccupied,
    ChannelVacated,
    MemberAdded,
    MemberRemoved,
    ClientEvent,
    CacheMiss,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::ChannelOccupied,
        Kind::ChannelVacated,
        Kind::MemberAdded,
        Kind::MemberRemoved,
        Kind::ClientEvent,
        Kind::CacheMiss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::ChannelOccupied => "channel_occupied",
            Kind::ChannelVacated => "channel_vacated",
            Kind::MemberAdded => "member_added",
            Kind::MemberRemoved => "member_removed",
            Kind::ClientEvent => "client_event",
            Kind::CacheMiss => "cache_miss",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`Kind`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub fn all() -> Self {
        Self::from_iter(Kind::ALL)
    }

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }
}

impl FromIterator<Kind> for Kinds {
    fn from_iter<I: IntoIterator<Item = Kind>>(kinds: I) -> Self {
        Self(kinds.into_iter().fold(0, |bits, kind| bits | kind.bit()))
    }
}

/// Where webhooks go, and which events each URL gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `http://` or `https://`.
    pub url: String,
    pub kinds: Kinds,
}

/// One URL's end of the queue.
struct Queue {
    kinds: Kinds,
    events: SyncSender<Queued>,
    /// Bytes of the events waiting (the sender takes them off once sent or dropped).
    bytes: Arc<AtomicUsize>,
}

/// The webhook senders; empty when no URL is configured.
#[derive(Default)]
pub struct Webhooks {
    senders: Vec<Queue>,
    /// Every kind some URL wants: events no one wants are not even built.
    wanted: Kinds,
    metrics: Option<Arc<Metrics>>,
    /// Events queued and not yet sent or dropped, over every URL.
    pending: Arc<AtomicUsize>,
}

impl Webhooks {
    /// Starts one sender thread per target, signing with `app`.
    pub fn start(
        targets: &[Target],
        app: &AppCredentials,
        retry_window: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut senders = Vec::with_capacity(targets.len());
        let pending = Arc::new(AtomicUsize::new(0));
        for target in targets {
            let (queue, events) = std::sync::mpsc::sync_channel(QUEUE_EVENTS);
            let bytes = Arc::new(AtomicUsize::new(0));
            let sender = Sender {
                url: target.url.clone(),
                shown_url: shown(&target.url),
                bytes: bytes.clone(),
                app: app.clone(),
                retry_window,
                metrics: metrics.clone(),
                pending: pending.clone(),
                agent: super::outbound::agent(REQUEST_TIMEOUT),
            };
            std::thread::Builder::new()
                .name("webhooks".into())
                .spawn(move || sender.run(events))
                .expect("a webhook thread starts");
            senders.push(Queue {
                kinds: target.kinds,
                events: queue,
                bytes,
            });
        }
        Self {
            wanted: Kinds(targets.iter().fold(0, |bits, target| bits | target.kinds.0)),
            senders,
            metrics: Some(metrics),
            pending,
        }
    }

    /// Waits until every queued event is sent or dropped, for at most `within`; false when
    /// some are still waiting.
    pub async fn drain(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.pending.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Whether some URL wants events of `kind`.
    pub fn wants(&self, kind: Kind) -> bool {
        self.wanted.contains(kind)
    }

    pub fn channel_occupied(&self, channel: &str) {
        self.queue(Kind::ChannelOccupied, || json!({ "channel": channel }));
    }

    pub fn channel_vacated(&self, channel: &str) {
        self.queue(Kind::ChannelVacated, || json!({ "channel": channel }));
    }

    pub fn member_added(&self, channel: &str, user_id: &str) {
        self.queue(
            Kind::MemberAdded,
            || json!({ "channel": channel, "user_id": user_id }),
        );
    }

    pub fn member_removed(&self, channel: &str, user_id: &str) {
        self.queue(
            Kind::MemberRemoved,
            || json!({ "channel": channel, "user_id": user_id }),
        );
    }

    /// A relayed client event; `data` is sent as a string, as Pusher does (a JSON text when
    /// the client sent an object).
    pub fn client_event(
        &self,
        channel: &str,
        event: &str,
        data: &Value,
        socket_id: &str,
        user_id: Option<&str>,
    ) {
        self.queue(Kind::ClientEvent, || {
            let data = match data {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let mut body = json!({
                "channel": channel,
                "event": event,
                "data": data,
                "socket_id": socket_id,
            });
            if let Some(user_id) = user_id {
                body["user_id"] = user_id.into();
            }
            body
        });
    }

    pub fn cache_miss(&self, channel: &str) {
        self.queue(Kind::CacheMiss, || json!({ "channel": channel }));
    }

    /// Queues one event (built only when some URL wants it) for each URL that wants it.
    fn queue(&self, kind: Kind, body: impl FnOnce() -> Value) {
        if !self.wants(kind) {
            return;
        }
        let mut event = body();
        event["name"] = kind.name().into();
        let event = Queued {
            json: Arc::from(event.to_string()),
            at: Instant::now(),
        };
        let size = event.json.len();
        for queue in &self.senders {
            if !queue.kinds.contains(kind) {
                continue;
            }
            let dropped = if queue.bytes.fetch_add(size, Ordering::AcqRel) + size > QUEUE_BYTES {
                Some("a webhook queue is full: an event was dropped")
            } else {
                self.pending.fetch_add(1, Ordering::AcqRel);
                match queue.events.try_send(event.clone()) {
                    Ok(()) => None,
                    Err(error) => {
                        self.pending.fetch_sub(1, Ordering::AcqRel);
                        Some(match error {
                            TrySendError::Full(_) => {
                                "a webhook queue is full: an event was dropped"
                            }
                            TrySendError::Disconnected(_) => {
                                "a webhook sender has stopped: an event was dropped"
                            }
                        })
                    }
                }
            };
            if let Some(why) = dropped {
                queue.bytes.fetch_sub(size, Ordering::AcqRel);
                if let Some(metrics) = &self.metrics {
                    metrics.webhooks_dropped.inc();
                }
                tracing::warn!("{why}");
            }
        }
    }
}

/// An event waiting for its URL: its JSON object, and when it happened.
#[derive(Clone)]
struct Queued {
    json: Arc<str>,
    at: Instant,
}

/// A URL as logs show it: without credentials or query (either may hold a secret).
fn shown(url: &str) -> String {
    match url.parse::<poem::http::Uri>() {
        Ok(uri) => format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority()
                .map(|authority| authority.as_str().rsplit('@').next().unwrap_or_default())
                .unwrap_or_default(),
            uri.path()
        ),
        Err(_) => "(a webhook URL)".into(),
    }
}

/// One URL's sender: batches its queue and posts one batch at a time.
struct Sender {
    url: String,
    /// The URL as logged.
    shown_url: String,
    /// Bytes of this URL's queued events, shared with the producers.
    bytes: Arc<AtomicUsize>,
    app: AppCredentials,
    retry_window: Duration,
    metrics: Arc<Metrics>,
    pending: Arc<AtomicUsize>,
    agent: ureq::Agent,
}

impl Sender {
    fn run(self, events: Receiver<Queued>) {
        let mut failing = false;
        while let Ok(first) = events.recv() {
            let deadline = Instant::now() + BATCH_WINDOW;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                let left = deadline.saturating_duration_since(Instant::now());
                match events.recv_timeout(left) {
                    Ok(event) => batch.push(event),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            failing = !self.deliver(&batch, failing);
            let size = batch.iter().map(|event| event.json.len()).sum();
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            self.pending.fetch_sub(batch.len(), Ordering::AcqRel);
        }
    }

    /// Posts one batch, retrying until the window since its oldest event has passed; true when
    /// it was sent. `failing`: the URL failed the last batch.
    fn deliver(&self, batch: &[Queued], failing: bool) -> bool {
        let deadline = batch[0].at + self.retry_window;
        let drop = |why: &str| {
            self.metrics.webhooks_dropped.inc_by(batch.len() as u64);
            tracing::error!(
                url = %self.shown_url,
                why,
                events = batch.len(),
                "a webhook failed for the whole retry window; its events are dropped"
            );
            false
        };
        if failing
            && batch
                .iter()
                .all(|event| event.at + self.retry_window <= Instant::now())
        {
            return drop("the URL is failing, and these events are older than the window");
        }
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let events: Vec<&str> = batch.iter().map(|event| &*event.json).collect();
        let body = format!(r#"{{"time_ms":{time_ms},"events":[{}]}}"#, events.join(","));
        let signature = self.app.webhook_signature(body.as_bytes());
        let mut backoff = Duration::from_millis(100);
        loop {
            let failure = match self
                .agent
                .post(&self.url)
                .header("Content-Type", "application/json")
                .header("X-Pusher-Key", &self.app.key)
                .header("X-Pusher-Signature", &signature)
                .send(&body)
            {
                Ok(response) if response.status().is_success() => {
                    self.metrics.webhooks_sent.inc_by(batch.len() as u64);
                    return true;
                }
                Ok(response) => format!("status {}", response.status()),
                Err(error) => error.to_string(),
            };
            if Instant::now() + backoff > deadline {
                return drop(&failure);
            }
            self.metrics.webhooks_retried.inc_by(batch.len() as u64);
            tracing::warn!(
                url = %self.shown_url,
                why = %failure,
                retry_in_ms = backoff.as_millis() as u64,
                "a webhook failed; retrying"
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_their_webhook_names() {
        for kind in Kind::ALL {
            let parsed: Kind = serde_json::from_value(json!(kind.name())).unwrap();
            assert_eq!(parsed, kind);
        }
        let some: Kinds = [Kind::MemberAdded, Kind::CacheMiss].into_iter().collect();
        assert!(some.contains(Kind::MemberAdded) && some.contains(Kind::CacheMiss));
        assert!(!some.contains(Kind::ChannelOccupied));
        assert!(
            Kind::ALL
                .into_iter()
                .all(|kind| Kinds::all().contains(kind))
        );
    }

    #[test]
    fn logs_show_urls_without_credentials_or_query() {
        assert_eq!(
            shown("https://user:secret@hooks.example:8443/pusher?token=abc"),
            "https://hooks.example:8443/pusher"
        );
        assert_eq!(shown("http://127.0.0.1/x"), "http://127.0.0.1/x");
    }

    #[test]
    fn a_queue_over_its_bytes_drops_new_events() {
        let (events, waiting) = std::sync::mpsc::sync_channel(10);
        let metrics = Arc::new(Metrics::default());
        let webhooks = Webhooks {
            senders: vec![Queue {
                kinds: Kinds::all(),
                events,
                bytes: Arc::new(AtomicUsize::new(QUEUE_BYTES - 10)),
            }],
            wanted: Kinds::all(),
            metrics: Some(metrics.clone()),
            pending: Arc::default(),
        };
        webhooks.cache_miss("a-channel-whose-event-is-over-10-bytes");
        assert!(waiting.try_recv().is_err(), "dropped");
        assert_eq!(metrics.webhooks_dropped.get(), 1);
        assert_eq!(
            webhooks.senders[0].bytes.load(Ordering::Relaxed),
            QUEUE_BYTES - 10,
            "a dropped event takes no room"
        );
    }

    #[test]
    fn no_url_wants_nothing_and_builds_nothing() {
        let webhooks = Webhooks::default();
        assert!(Kind::ALL.into_iter().all(|kind| !webhooks.wants(kind)));
        webhooks.queue(Kind::ChannelOccupied, || unreachable!("not built"));
    }
}
