//! The built-in driver under load: the release server in its own process, real WebSocket
//! clients and signed HTTP API triggers from this one, all on 127.0.0.1.
//!
//! `cargo bench --bench fanout` prints, each against a baseline measured in the same run:
//!
//! * one event to 1,000 sockets on one channel: trigger-to-receipt p50/p99 and deliveries/s,
//!   against one event to 1 socket;
//! * one event on each of 1,000 channels with one socket each, the same figures;
//! * a record write matched against 10,000 subscriptions, each with its own socket: write to
//!   receipt p50/p99 when a write reaches 10 of them and when it reaches all 10,000, against a
//!   write reaching the only subscription;
//! * server RSS per idle connection with 10,000 connections, against the idle server.
//!
//! Clients and server share this machine's cores, so absolute figures are conservative.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use velo_realtime::pusher::signature::{AppCredentials, body_md5};

const APP: (&str, &str, &str) = ("1001", "bench-key", "bench-secret");

struct Server {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("velo.toml");
        std::fs::write(
            &config,
            "[[collections]]\nname = \"posts\"\napi_rules = { list = \"\", create = \"\" }\n",
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_velo-realtime"))
            .env("VELO_BIND", "127.0.0.1:0")
            .env("VELO_DATA_DIR", data.path().join("data"))
            .env("VELO_CONFIG", &config)
            .env("VELO_APP_ID", APP.0)
            .env("VELO_APP_KEY", APP.1)
            .env("VELO_APP_SECRET", APP.2)
            .env("VELO_SOCKET_QUEUE_FRAMES", "4096")
            .env("RUST_LOG", "warn,velo_realtime::server=info")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the release server starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the server logs where it listens")
                .unwrap();
            if let Some(address) = line.split("listening on ").nth(1) {
                break address.trim().to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            base,
            _data: data,
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Triggers `data` as event `tick` on `channels` through the signed HTTP API.
async fn trigger(http: &reqwest::Client, base: &str, channels: &[String], data: &str) {
    let body = json!({ "name": "tick", "channels": channels, "data": data }).to_string();
    let app = AppCredentials::new(APP.0, APP.1, APP.2);
    let mut params = vec![
        ("auth_key".to_owned(), APP.1.to_owned()),
        (
            "auth_timestamp".to_owned(),
            velo_realtime::auth::now_secs().to_string(),
        ),
        ("auth_version".to_owned(), "1.0".to_owned()),
        ("body_md5".to_owned(), body_md5(body.as_bytes())),
    ];
    let path = format!("/apps/{}/events", APP.0);
    let signature = app.request_signature("POST", &path, &params);
    params.push(("auth_signature".to_owned(), signature));
    let response = http
        .post(format!("{base}{path}"))
        .query(&params)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the trigger is accepted");
    assert!(response.status().is_success(), "{}", response.status());
}

/// Opens `count` sockets, socket `i` subscribed to `channel(i)`; each reports the sequence
/// number of every `tick` it receives, with the time it arrived.
async fn listeners(
    base: &str,
    count: usize,
    channel: impl Fn(usize) -> String,
) -> mpsc::UnboundedReceiver<(u64, Instant)> {
    let (receipts, received) = mpsc::unbounded_channel();
    let url = format!(
        "{}/app/{}?protocol=7",
        base.replacen("http://", "ws://", 1),
        APP.1
    );
    let mut ready = Vec::new();
    for i in 0..count {
        let (mut socket, _) = connect_async(&url).await.expect("a WebSocket");
        socket.next().await.expect("the handshake").unwrap();
        let subscribe =
            json!({"event": "pusher:subscribe", "data": {"channel": channel(i), "auth": ""}});
        socket
            .send(Message::Text(subscribe.to_string().into()))
            .await
            .unwrap();
        let receipts = receipts.clone();
        let (subscribed, is_ready) = tokio::sync::oneshot::channel();
        ready.push(is_ready);
        tokio::spawn(async move {
            let mut subscribed = Some(subscribed);
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let arrived = Instant::now();
                let frame: Value = serde_json::from_str(&text).unwrap();
                match frame["event"].as_str() {
                    Some("pusher_internal:subscription_succeeded") => {
                        subscribed.take().map(|done| done.send(()));
                    }
                    Some("tick" | "created") => {
                        let data: Value =
                            serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
                        // A trigger's data holds `seq`; a record event's record does.
                        let seq = data.get("record").unwrap_or(&data)["seq"].as_u64().unwrap();
                        let _ = receipts.send((seq, arrived));
                    }
                    _ => {}
                }
            }
        });
    }
    for is_ready in ready {
        is_ready.await.expect("subscribed");
    }
    received
}

struct Figures {
    p50: Duration,
    p99: Duration,
    deliveries_per_sec: f64,
}

/// Sends `events` one at a time (each to `channels`), waiting for all `per_event` receipts of
/// one before the next; then latency percentiles and the delivery rate of the whole run.
async fn measure(
    http: &reqwest::Client,
    base: &str,
    receipts: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
    channels: &[String],
    events: u64,
    per_event: usize,
) -> Figures {
    let mut latencies = Vec::with_capacity(events as usize * per_event);
    let started = Instant::now();
    for seq in 0..events {
        let data = json!({ "seq": seq, "payload": "x".repeat(200) }).to_string();
        let sent = Instant::now();
        let mut pending = Vec::new();
        for chunk in channels.chunks(100) {
            pending.push(trigger(http, base, chunk, &data));
        }
        futures::future::join_all(pending).await;
        for _ in 0..per_event {
            let (got, arrived) = tokio::time::timeout(Duration::from_secs(30), receipts.recv())
                .await
                .expect("every socket receives the event")
                .unwrap();
            assert_eq!(got, seq);
            latencies.push(arrived.saturating_duration_since(sent));
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Figures {
        p50: latencies[latencies.len() / 2],
        p99: latencies[latencies.len() * 99 / 100],
        deliveries_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
    }
}

/// Subscribes `count` times to `posts`, subscription `i` with `filter(i)`; the channels.
async fn subscriptions(
    http: &reqwest::Client,
    base: &str,
    count: usize,
    filter: impl Fn(usize) -> String,
) -> Vec<String> {
    let mut channels = Vec::with_capacity(count);
    for i in 0..count {
        let reply: Value = http
            .post(format!("{base}/api/realtime/subscribe"))
            .json(&json!({ "collection": "posts", "filter": filter(i) }))
            .send()
            .await
            .expect("subscribed")
            .json()
            .await
            .unwrap();
        channels.push(reply["channel_name"].as_str().unwrap().to_owned());
    }
    channels
}

/// Creates `writes` records one at a time, record `seq` with `slot = slot(seq)`, waiting for
/// all `per_write` receipts of each; write-to-receipt latencies.
async fn record_events(
    http: &reqwest::Client,
    base: &str,
    receipts: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
    writes: u64,
    per_write: usize,
    slot: impl Fn(u64) -> u64,
) -> Figures {
    let mut latencies = Vec::with_capacity(writes as usize * per_write);
    let started = Instant::now();
    for seq in 0..writes {
        let sent = Instant::now();
        let response = http
            .post(format!("{base}/api/collections/posts/records"))
            .json(&json!({ "seq": seq, "slot": slot(seq), "title": "x".repeat(200) }))
            .send()
            .await
            .expect("written");
        assert!(response.status().is_success());
        for _ in 0..per_write {
            let (got, arrived) = tokio::time::timeout(Duration::from_secs(30), receipts.recv())
                .await
                .expect("every matching socket receives the event")
                .unwrap();
            assert_eq!(got, seq);
            latencies.push(arrived.saturating_duration_since(sent));
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Figures {
        p50: latencies[latencies.len() / 2],
        p99: latencies[latencies.len() * 99 / 100],
        deliveries_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
    }
}

fn print(label: &str, figures: &Figures, baseline: &Figures) {
    println!(
        "{label:<44} p50 {:>8.2} ms  p99 {:>8.2} ms  {:>10.0} deliveries/s  (p50 {:.1}x, rate {:.1}x the 1-socket baseline)",
        figures.p50.as_secs_f64() * 1e3,
        figures.p99.as_secs_f64() * 1e3,
        figures.deliveries_per_sec,
        figures.p50.as_secs_f64() / baseline.p50.as_secs_f64(),
        figures.deliveries_per_sec / baseline.deliveries_per_sec,
    );
}

fn main() {
    // `cargo test --benches` runs benches without `--bench`: too heavy for a test run.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("fanout: run with `cargo bench --bench fanout`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = Server::start();
        let http = reqwest::Client::new();
        let base = server.base.clone();

        let mut one = listeners(&base, 1, |_| "solo".into()).await;
        let baseline = measure(&http, &base, &mut one, &["solo".into()], 300, 1).await;
        print("1 event -> 1 socket (baseline)", &baseline, &baseline);

        let mut crowd = listeners(&base, 1000, |_| "crowd".into()).await;
        let fanout = measure(&http, &base, &mut crowd, &["crowd".into()], 100, 1000).await;
        print("1 event -> 1,000 sockets on one channel", &fanout, &baseline);

        let channels: Vec<String> = (0..1000).map(|i| format!("room-{i}")).collect();
        let names = Arc::new(channels.clone());
        let mut rooms = listeners(&base, 1000, move |i| names[i].clone()).await;
        let spread = measure(&http, &base, &mut rooms, &channels, 50, 1000).await;
        print("1 event on each of 1,000 channels (1 socket)", &spread, &baseline);
        drop((one, crowd, rooms));
        drop(server);

        // Record writes matched against realtime subscriptions.
        let server = Server::start();
        let base = server.base.clone();
        let only = subscriptions(&http, &base, 1, |_| "slot = 0".into()).await;
        let mut only = listeners(&base, 1, move |i| only[i].clone()).await;
        let baseline = record_events(&http, &base, &mut only, 200, 1, |_| 0).await;
        print("write -> its 1 subscription (baseline)", &baseline, &baseline);
        drop(only);
        drop(server);

        let server = Server::start();
        let base = server.base.clone();
        // 10,000 subscriptions: `slot = i % 1000`, so a write with one slot reaches 10.
        let channels = Arc::new(subscriptions(&http, &base, 10_000, |i| format!("slot = {}", i % 1000)).await);
        let names = channels.clone();
        let mut many = listeners(&base, 10_000, move |i| names[i].clone()).await;
        let selective = record_events(&http, &base, &mut many, 200, 10, |seq| seq % 1000).await;
        print("write -> 10 of 10,000 subscriptions", &selective, &baseline);
        drop(many);
        drop(server);

        let server = Server::start();
        let base = server.base.clone();
        let channels = Arc::new(subscriptions(&http, &base, 10_000, |_| "slot = 0".into()).await);
        let names = channels.clone();
        let mut all = listeners(&base, 10_000, move |i| names[i].clone()).await;
        let broadcast = record_events(&http, &base, &mut all, 20, 10_000, |_| 0).await;
        print("write -> all 10,000 subscriptions", &broadcast, &baseline);
        drop(all);
        drop(server);

        let server = Server::start();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle = server.rss_kib();
        let url = format!("{}/app/{}?protocol=7", server.base.replacen("http://", "ws://", 1), APP.1);
        let mut sockets = HashMap::new();
        for i in 0..10_000 {
            let (mut socket, _) = connect_async(&url).await.expect("a WebSocket");
            socket.next().await.expect("the handshake").unwrap();
            sockets.insert(i, socket);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loaded = server.rss_kib();
        println!(
            "server RSS: {} KiB idle, {} KiB with 10,000 idle connections: {:.1} KiB per connection ({:.1}x the idle server)",
            idle,
            loaded,
            (loaded - idle) as f64 / 10_000.0,
            loaded as f64 / idle as f64
        );
    });
}
