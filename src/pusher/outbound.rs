//! The `pusher` driver's sender: events go to an external Pusher-compatible service through its
//! signed HTTP API (`batch_events`, at most 10 events a request).
//!
//! One thread drains one bounded, ordered queue with one request in flight, so events keep
//! their commit order. A failed request (5xx, timeout, refused connection) is retried with
//! backoff for the retry window, then its events are dropped, counted and logged; a 4xx is
//! not retried (the request itself is wrong). Producers never wait: when the queue is full the
//! event is dropped and counted at once, so a slow or absent service never stalls a collection.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::signature::{AppCredentials, body_md5};
use crate::auth::now_secs;
use crate::metrics::Metrics;

/// Pusher's limits: events per batch request, bytes of `data` per event.
pub const MAX_BATCH: usize = 10;
pub const MAX_DATA_BYTES: usize = 10 * 1024;
/// Events waiting for the service before new ones are dropped.
const QUEUE_EVENTS: usize = 100_000;
/// One request's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One event for the external service.
#[derive(Debug, Clone)]
pub struct OutEvent {
    /// A record event's name, or a triggered event's.
    pub name: Cow<'static, str>,
    pub channel: Arc<str>,
    /// The event's `data`, a JSON text of at most [`MAX_DATA_BYTES`].
    pub data: Arc<str>,
    pub socket_id: Option<String>,
}

/// An HTTP client for a sender thread: every request bounded by `timeout`, and a non-2xx
/// status an answer to read, not an error (the senders decide what each means).
pub(super) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build(),
    )
}

/// The handle producers queue events through.
pub struct Outbound {
    queue: mpsc::Sender<OutEvent>,
    pub app: AppCredentials,
    metrics: Arc<Metrics>,
}

impl Outbound {
    /// Starts the sender thread for the service at `base_url` (`scheme://host:port`).
    pub fn start(
        base_url: String,
        app: AppCredentials,
        retry_window: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (queue, events) = mpsc::channel(QUEUE_EVENTS);
        let sender = Sender {
            base_url,
            app: app.clone(),
            retry_window,
            metrics: metrics.clone(),
            agent: agent(REQUEST_TIMEOUT),
        };
        std::thread::Builder::new()
            .name("pusher-outbound".into())
            .spawn(move || sender.run(events))
            .expect("the outbound thread starts");
        Self {
            queue,
            app,
            metrics,
        }
    }

    /// Queues an event; never waits. A full queue drops it (counted).
    pub fn send(&self, event: OutEvent) {
        if self.queue.try_send(event).is_err() {
            self.metrics.pusher_dropped.inc();
            tracing::warn!("the Pusher queue is full: an event was dropped");
        }
    }
}

struct Sender {
    base_url: String,
    app: AppCredentials,
    retry_window: Duration,
    metrics: Arc<Metrics>,
    agent: ureq::Agent,
}

impl Sender {
    fn run(self, mut events: mpsc::Receiver<OutEvent>) {
        while let Some(first) = events.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match events.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            self.deliver(&batch);
        }
    }

    /// Sends one batch, retrying within the window.
    fn deliver(&self, batch: &[OutEvent]) {
        let body = json!({
            "batch": batch
                .iter()
                .map(|event| {
                    let mut item = json!({ "name": event.name, "channel": &*event.channel, "data": &*event.data });
                    if let Some(socket_id) = &event.socket_id {
                        item["socket_id"] = Value::String(socket_id.clone());
                    }
                    item
                })
                .collect::<Vec<_>>(),
        })
        .to_string();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.post(&body) {
                Ok(()) => {
                    self.metrics.pusher_sent.inc_by(batch.len() as u64);
                    return;
                }
                Err(Failure::Refused(status)) => {
                    self.metrics.pusher_dropped.inc_by(batch.len() as u64);
                    tracing::error!(
                        status,
                        events = batch.len(),
                        "the Pusher service refused a batch; dropped"
                    );
                    return;
                }
                Err(Failure::Unavailable(why))
                    if started.elapsed() + backoff > self.retry_window =>
                {
                    self.metrics.pusher_dropped.inc_by(batch.len() as u64);
                    tracing::error!(%why, events = batch.len(), "the Pusher service failed for the whole retry window; dropped");
                    return;
                }
                Err(Failure::Unavailable(why)) => {
                    self.metrics.pusher_retried.inc_by(batch.len() as u64);
                    tracing::warn!(%why, retry_in_ms = backoff.as_millis() as u64, "the Pusher service failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One signed `POST /apps/{id}/batch_events` (signed anew each time: timestamps age).
    fn post(&self, body: &str) -> Result<(), Failure> {
        let path = format!("/apps/{}/batch_events", self.app.id);
        let mut params = vec![
            ("auth_key".to_owned(), self.app.key.clone()),
            ("auth_timestamp".to_owned(), now_secs().to_string()),
            ("auth_version".to_owned(), "1.0".to_owned()),
            ("body_md5".to_owned(), body_md5(body.as_bytes())),
        ];
        let signature = self.app.request_signature("POST", &path, &params);
        params.push(("auth_signature".to_owned(), signature));
        let query: Vec<String> = params
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let url = format!("{}{path}?{}", self.base_url, query.join("&"));
        match self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body)
        {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) if response.status().is_server_error() => Err(Failure::Unavailable(
                format!("status {}", response.status()),
            )),
            Ok(response) => Err(Failure::Refused(response.status().as_u16())),
            Err(error) => Err(Failure::Unavailable(error.to_string())),
        }
    }
}

enum Failure {
    /// Worth retrying: the service is down, slow or failing.
    Unavailable(String),
    /// Not worth retrying: the service says the request is wrong.
    Refused(u16),
}
