//! Presence and webhooks under load, against our real server over real sockets:
//!
//! ```text
//! cargo bench --bench presence                      # 100 channels x 100 members (Pusher's limit)
//! cargo bench --bench presence -- --channels 10 --members 50
//! cargo bench --bench presence -- --baseline ../old/target/release/velo-realtime
//! ```
//!
//! With `--baseline`, another build of the server runs `private` and `presence` too, in the
//! order this, baseline, baseline, this (so that neither build always goes first), and the
//! ratios of the two builds' means are printed.
//!
//! Every socket is its own member (a user of its own) of one of the channels, joined
//! interleaved across channels. Three runs, each on a fresh server:
//!
//! * `private`: the same sockets subscribe to private channels and leave them: the baseline;
//! * `presence`: they join presence channels and leave them: every join sends `member_added`
//!   to the members already there, every leave `member_removed` to those still there;
//! * `presence+webhooks`: the same with a webhook URL (a receiver in this process) getting
//!   every event: `channel_occupied`/`vacated` per channel, `member_added`/`removed` per user.
//!
//! Each run reports joins/s and leaves/s (sent until every confirmation and member event has
//! arrived), the server's CPU per join and per leave (`/proc/<pid>/stat`), the member events
//! delivered, and the webhook events received: their rate from the first join to the last
//! event, and how long after the last leave the last one came (the sender keeps up when that
//! is about one batch window, 100 ms); then the ratios against the baseline, and the server
//! CPU per member event fanned out. `cargo test` runs this file
//! without `--bench`: a small run that checks every count, so the scenario cannot rot.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;
#[path = "support/server.rs"]
mod server;

use futures::{SinkExt, StreamExt};
use process::{process_times, raise_file_limit};
use serde_json::json;
use server::OwnServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use velo_realtime::pusher::signature::AppCredentials;

const APP_ID: &str = "1001";
const KEY: &str = "bench-key";
const SECRET: &str = "bench-secret";
/// How long any phase may take before the run fails.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Private,
    Presence,
    PresenceWithWebhooks,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Private => "private",
            Kind::Presence => "presence",
            Kind::PresenceWithWebhooks => "presence+webhooks",
        }
    }
}

/// What the sockets have received, counted by their reader tasks.
#[derive(Default)]
struct Counts {
    succeeded: AtomicU64,
    member_added: AtomicU64,
    member_removed: AtomicU64,
    pongs: AtomicU64,
    errors: AtomicU64,
    /// Webhook events the receiver got, and when the last one came (ns since `epoch`).
    webhook_events: AtomicU64,
    webhook_last_ns: AtomicU64,
}

/// Our server as this bench runs it, and where it listens (`127.0.0.1:PORT`).
struct Server {
    own: OwnServer,
    address: String,
}

impl Server {
    fn start(binary: &str, members: usize, webhook_url: Option<&str>) -> Server {
        let data = OwnServer::data_dir().unwrap_or_else(|error| panic!("{error}"));
        let config = data.path().join("none.toml");
        std::fs::write(&config, "").unwrap();
        let mut command = Command::new(binary);
        command
            .env("VELO_CONFIG", &config)
            .env("VELO_APP_ID", APP_ID)
            .env("VELO_APP_KEY", KEY)
            .env("VELO_APP_SECRET", SECRET)
            .env("VELO_MAX_CONNECTIONS_PER_ADDRESS", "0")
            .env("VELO_PRESENCE_MAX_MEMBERS", members.to_string())
            .env("VELO_SOCKET_QUEUE_FRAMES", "4096")
            .env("RUST_LOG", "warn,velo_realtime::server=info");
        if let Some(url) = webhook_url {
            command.env("VELO_WEBHOOK_URLS", url);
        }
        let own =
            OwnServer::start("server", command, data).unwrap_or_else(|error| panic!("{error}"));
        let address = own.base.trim_start_matches("http://").to_owned();
        Server { own, address }
    }

    /// User + system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        let (user, system, _) =
            process_times(Some(self.own.pid())).expect("the server's /proc entry");
        user + system
    }
}

/// A webhook receiver: answers 200 to every request and counts the events in each.
async fn receiver(counts: Arc<Counts>, epoch: Instant) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                loop {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim().is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let events = memchr::memmem::find_iter(&body, b"\"name\":").count();
                    counts
                        .webhook_events
                        .fetch_add(events as u64, Ordering::Relaxed);
                    counts
                        .webhook_last_ns
                        .store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

type Sink =
    futures::stream::SplitSink<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, Message>;

/// Opens `count` sockets from `source`; each reader task counts what its socket receives.
async fn open(
    server: &Server,
    source: [u8; 4],
    count: usize,
    counts: &Arc<Counts>,
) -> Vec<(Sink, String)> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        tcp.bind((std::net::Ipv4Addr::from(source), 0).into())
            .unwrap();
        let stream = tcp.connect(server.address.parse().unwrap()).await.unwrap();
        let url = format!("ws://{}/app/{KEY}?protocol=7", server.address);
        let (socket, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        let (sink, mut stream) = socket.split();
        let hello = match stream.next().await {
            Some(Ok(Message::Text(text))) => text,
            other => panic!("no handshake: {other:?}"),
        };
        let hello: serde_json::Value = serde_json::from_str(&hello).unwrap();
        let data: serde_json::Value =
            serde_json::from_str(hello["data"].as_str().unwrap()).unwrap();
        let socket_id = data["socket_id"].as_str().unwrap().to_owned();
        let counts = counts.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let counter = if text.contains("subscription_succeeded") {
                    &counts.succeeded
                } else if text.contains("member_added") {
                    &counts.member_added
                } else if text.contains("member_removed") {
                    &counts.member_removed
                } else if text.contains("pusher:pong") {
                    &counts.pongs
                } else if text.contains("error") {
                    eprintln!("!!! {text}");
                    &counts.errors
                } else {
                    continue;
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        sockets.push((sink, socket_id));
    }
    sockets
}

/// Waits until `done` holds, for at most [`PHASE_LIMIT`].
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PHASE_LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Figures {
    kind: Kind,
    /// Which build: this one, or the baseline.
    baseline: bool,
    joins_per_sec: f64,
    cpu_us_per_join: f64,
    leaves_per_sec: f64,
    cpu_us_per_leave: f64,
    member_events: u64,
    webhook_events: u64,
    webhook_events_per_sec: f64,
    /// From the last leave's pong to the last webhook event received.
    webhook_lag_ms: f64,
}

async fn run(
    kind: Kind,
    baseline: Option<&str>,
    channels: usize,
    members: usize,
    source: [u8; 4],
) -> Figures {
    let epoch = Instant::now();
    let counts = Arc::new(Counts::default());
    let webhook_url = match kind {
        Kind::PresenceWithWebhooks => Some(receiver(counts.clone(), epoch).await),
        _ => None,
    };
    let binary = baseline.unwrap_or(env!("CARGO_BIN_EXE_velo-realtime"));
    let server = Server::start(binary, members, webhook_url.as_deref());
    let app = AppCredentials::new(APP_ID, KEY, SECRET);
    let total = channels * members;
    let mut sockets = open(&server, source, total, &counts).await;
    let channel = |i: usize| match kind {
        Kind::Private => format!("private-room-{}", i % channels),
        _ => format!("presence-room-{}", i % channels),
    };
    // Each channel's k-th member is told of the later ones, then of the leaves before theirs.
    let pairs = (channels * members * (members - 1) / 2) as u64;
    let member_events = if kind == Kind::Private { 0 } else { pairs };
    let webhook_events = match kind {
        Kind::PresenceWithWebhooks => 2 * (channels + total) as u64,
        _ => 0,
    };

    let cpu = server.cpu_seconds();
    let started = Instant::now();
    let first_join = epoch.elapsed().as_secs_f64();
    for (i, (sink, socket_id)) in sockets.iter_mut().enumerate() {
        let channel = channel(i);
        let data = if kind == Kind::Private {
            json!({ "channel": channel, "auth": app.authorize(socket_id, &channel, None) })
        } else {
            let channel_data = json!({ "user_id": format!("u{i}") }).to_string();
            json!({
                "channel": channel,
                "auth": app.authorize(socket_id, &channel, Some(&channel_data)),
                "channel_data": channel_data,
            })
        };
        let frame = json!({ "event": "pusher:subscribe", "data": data }).to_string();
        sink.send(Message::text(frame)).await.unwrap();
    }
    until("every join", || {
        counts.succeeded.load(Ordering::Relaxed) == total as u64
            && counts.member_added.load(Ordering::Relaxed) == member_events
    })
    .await;
    let join_seconds = started.elapsed().as_secs_f64();
    let join_cpu = server.cpu_seconds() - cpu;

    let cpu = server.cpu_seconds();
    let started = Instant::now();
    for (i, (sink, _)) in sockets.iter_mut().enumerate() {
        let leave = json!({ "event": "pusher:unsubscribe", "data": { "channel": channel(i) } });
        sink.send(Message::text(leave.to_string())).await.unwrap();
        // Its pong says the leave is done (a socket's frames are handled in order).
        let ping = json!({ "event": "pusher:ping", "data": {} });
        sink.send(Message::text(ping.to_string())).await.unwrap();
    }
    until("every leave", || {
        counts.pongs.load(Ordering::Relaxed) == total as u64
            && counts.member_removed.load(Ordering::Relaxed) == member_events
    })
    .await;
    let leave_seconds = started.elapsed().as_secs_f64();
    let leave_cpu = server.cpu_seconds() - cpu;
    until("every webhook", || {
        counts.webhook_events.load(Ordering::Relaxed) >= webhook_events
    })
    .await;
    assert_eq!(
        counts.webhook_events.load(Ordering::Relaxed),
        webhook_events
    );
    assert_eq!(counts.errors.load(Ordering::Relaxed), 0, "no pusher:error");
    // From the first join to the last webhook event received.
    let last_webhook = counts.webhook_last_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let webhook_seconds = last_webhook - first_join;
    let webhook_lag_ms = (last_webhook - first_join - join_seconds - leave_seconds) * 1e3;
    for (mut sink, _) in sockets {
        let _ = sink.close().await;
    }
    Figures {
        kind,
        baseline: baseline.is_some(),
        joins_per_sec: total as f64 / join_seconds,
        cpu_us_per_join: join_cpu * 1e6 / total as f64,
        leaves_per_sec: total as f64 / leave_seconds,
        cpu_us_per_leave: leave_cpu * 1e6 / total as f64,
        member_events: 2 * member_events,
        webhook_events,
        webhook_events_per_sec: webhook_events as f64 / webhook_seconds.max(1e-9),
        webhook_lag_ms,
    }
}

fn argument(name: &str) -> Option<usize> {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|at| arguments.get(at + 1)?.parse().ok())
}

fn main() {
    let bench = std::env::args().any(|argument| argument == "--bench");
    let arguments: Vec<String> = std::env::args().collect();
    let baseline = arguments
        .iter()
        .position(|argument| argument == "--baseline")
        .and_then(|at| arguments.get(at + 1).cloned());
    let (channels, members) = if bench {
        (
            argument("--channels").unwrap_or(100),
            argument("--members").unwrap_or(100),
        )
    } else {
        (4, 5)
    };
    raise_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!("presence: {channels} channels x {members} members, one socket per member");
    let mut runs = Vec::new();
    for kind in [Kind::Private, Kind::Presence, Kind::PresenceWithWebhooks] {
        runs.push((kind, None));
        if kind != Kind::PresenceWithWebhooks && baseline.is_some() {
            runs.extend([
                (kind, baseline.as_deref()),
                (kind, baseline.as_deref()),
                (kind, None),
            ]);
        }
    }
    // A first run is not reported: this process's first sockets and tasks cost more (measured:
    // the same build ran 15-20% slower first than later in one process).
    if bench {
        runtime.block_on(run(Kind::Private, None, channels, members, [127, 0, 0, 19]));
    }
    let figures: Vec<Figures> = runs
        .iter()
        .enumerate()
        .map(|(at, &(kind, baseline))| {
            // A source address per run: the last run's closed ports wait out TIME_WAIT.
            let source = [127, 0, 0, 20 + at as u8];
            runtime.block_on(run(kind, baseline, channels, members, source))
        })
        .collect();
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>10} {:>13} {:>10} {:>12} {:>12}",
        "run",
        "joins/s",
        "cpu µs/j",
        "leaves/s",
        "cpu µs/l",
        "member evts",
        "webhooks",
        "webhooks/s",
        "webhook lag"
    );
    for f in &figures {
        println!(
            "{:<18} {:>10.0} {:>10.1} {:>10.0} {:>10.1} {:>13} {:>10} {:>12} {:>12}",
            format!(
                "{}{}",
                f.kind.name(),
                if f.baseline { " (base)" } else { "" }
            ),
            f.joins_per_sec,
            f.cpu_us_per_join,
            f.leaves_per_sec,
            f.cpu_us_per_leave,
            f.member_events,
            f.webhook_events,
            if f.webhook_events > 0 {
                format!("{:.0}", f.webhook_events_per_sec)
            } else {
                "-".into()
            },
            if f.webhook_events > 0 {
                format!("{:.0} ms", f.webhook_lag_ms.max(0.0))
            } else {
                "-".into()
            },
        );
    }
    let find = |kind: Kind, baseline: bool| {
        figures
            .iter()
            .find(|f| f.kind == kind && f.baseline == baseline)
    };
    let (Some(private), Some(presence), Some(webhooks)) = (
        find(Kind::Private, false),
        find(Kind::Presence, false),
        find(Kind::PresenceWithWebhooks, false),
    ) else {
        unreachable!("every run is made")
    };
    let per_join_events = (members - 1) as f64 / 2.0;
    println!(
        "presence / private: CPU per join x{:.2}, per leave x{:.2}; member event fan-out: \
         {:.2} µs of server CPU per member event ({per_join_events:.1} per join on average)",
        presence.cpu_us_per_join / private.cpu_us_per_join,
        presence.cpu_us_per_leave / private.cpu_us_per_leave,
        (presence.cpu_us_per_join + presence.cpu_us_per_leave
            - private.cpu_us_per_join
            - private.cpu_us_per_leave)
            / (2.0 * per_join_events),
    );
    println!(
        "webhooks on / off: CPU per join x{:.2}, per leave x{:.2}",
        webhooks.cpu_us_per_join / presence.cpu_us_per_join,
        webhooks.cpu_us_per_leave / presence.cpu_us_per_leave,
    );
    for kind in [Kind::Private, Kind::Presence] {
        let mean = |baseline: bool, figure: fn(&Figures) -> f64| {
            let runs: Vec<f64> = figures
                .iter()
                .filter(|f| f.kind == kind && f.baseline == baseline)
                .map(figure)
                .collect();
            runs.iter().sum::<f64>() / runs.len() as f64
        };
        if figures.iter().any(|f| f.baseline) {
            let ratio = |figure: fn(&Figures) -> f64| mean(false, figure) / mean(true, figure);
            println!(
                "{} this build / baseline (means of 2 runs each): joins/s x{:.2} (CPU per join \
                 x{:.2}), leaves/s x{:.2} (CPU per leave x{:.2})",
                kind.name(),
                ratio(|f| f.joins_per_sec),
                ratio(|f| f.cpu_us_per_join),
                ratio(|f| f.leaves_per_sec),
                ratio(|f| f.cpu_us_per_leave),
            );
        }
    }
}
