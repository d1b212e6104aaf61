//! A load generator for any Pusher-compatible server, speaking only public protocols: the
//! Pusher WebSocket protocol 7 and the signed Pusher HTTP API (plus Velo's subscribe and
//! records APIs for the `velo`, `velo-encrypted` and `subscribe` scenarios).
//!
//! ```text
//! cargo bench --bench loadgen                          # every scenario against our release build
//! cargo bench --bench loadgen -- --scenario broadcast --n 10000
//! cargo bench --bench loadgen -- --target http://127.0.0.1:6001 --app-id 1 --key k --secret s \
//!     --pid 4242 --scenario broadcast,channels,idle   # another Pusher server
//! cargo bench --bench loadgen -- --server ../old/target/release/velo-realtime  # an older build
//! ```
//!
//! Each scenario reports deliveries/s; end-to-end latency percentiles, exact over every
//! delivery (the payload carries its send time, `sent_ns`, and a sequence number); missing,
//! duplicated and misdelivered events and `pusher:error`s (loudly); given the server's pid, its
//! CPU time per delivery (`/proc/<pid>/stat`, independent of how fast the generator is) and RSS;
//! and the generator's own CPU per delivery. A summary table ends the run; results go to
//! `target/loadgen.json` and a plot to `target/loadgen.svg`. Every wait is bounded; targets must
//! be on 127.0.0.0/8. `cargo test` runs this file without `--bench`: it then checks its client.
//!
//! `velo` subscribes N users × 10 owner-filtered subscriptions to `tasks` (private channels),
//! then writes records one at a time, each reaching its owner's 10 subscriptions.
//! `velo-encrypted` is the same on `vault`, an encrypted collection: its events go out on
//! `private-encrypted-` channels, sealed per subscription, and each socket opens every delivery
//! with its channel's key (derived from `--encryption-master-key`, which our own server is given
//! too) before it reads `seq` and `sent_ns`, so the two compare the sealing's cost on the event
//! path (and the client's opening shows in the generator's CPU). Both subscribe to the
//! `pusher_channel` the subscribe reply names.

mod client;
#[path = "../support/process.rs"]
mod process;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use velo_realtime::auth::Authenticator;
use velo_realtime::pusher::signature::{AppCredentials, body_md5};

use client::{Clients, Expect, Opener, Socket, Tally, now_ns};
use process::{process_times, raise_file_limit};

#[derive(Parser, Debug)]
struct Options {
    /// Scenarios, comma-separated: broadcast, channels, velo, velo-encrypted, idle, subscribe
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "broadcast,channels,velo,velo-encrypted,idle,subscribe"
    )]
    scenario: Vec<String>,
    /// Sockets (broadcast, channels), users (velo, velo-encrypted), connections (idle);
    /// repeatable sizes
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    n: Vec<usize>,
    /// Events per run (broadcast; channels sends at most 50, each to every channel)
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Record writes (velo, velo-encrypted), one at a time
    #[arg(long, default_value_t = 2000)]
    writes: usize,
    /// Events per second for broadcast and channels; without it, saturation then half of it
    #[arg(long)]
    pace: Option<f64>,
    /// A running server (`http://127.0.0.1:PORT`); without it, our release build is started
    #[arg(long)]
    target: Option<String>,
    /// Another build of ours to start instead (side-by-side comparisons with an older commit)
    #[arg(long)]
    server: Option<String>,
    #[arg(long, default_value = "1001")]
    app_id: String,
    #[arg(long, default_value = "loadgen-key")]
    key: String,
    #[arg(long, default_value = "loadgen-secret")]
    secret: String,
    /// The target's JWT secret (velo scenarios against a running server)
    #[arg(long, default_value = "loadgen-jwt")]
    jwt_secret: String,
    /// The target's VELO_ENCRYPTION_MASTER_KEY (base64 of 32 bytes), from which the
    /// velo-encrypted sockets derive their channels' keys; our own server is started with it.
    /// Against a running server it needs an encrypted `vault` collection like `tasks`.
    #[arg(long, default_value = MASTER_KEY)]
    encryption_master_key: String,
    /// The target server's pid, for CPU and RSS figures
    #[arg(long)]
    pid: Option<u32>,
    /// Where to write the JSON results
    #[arg(long, default_value = "target/loadgen.json")]
    json: String,
    /// Where to draw deliveries/s and p99 against N (SVG)
    #[arg(long, default_value = "target/loadgen.svg")]
    plot: String,
    /// The generator's worker threads (it shares the machine with the server under test)
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Passed by `cargo bench`
    #[arg(long, hide = true)]
    bench: bool,
}

/// The default master key of encrypted channels: base64 of "velo-loadgen-master-key-32-bytes".
const MASTER_KEY: &str = "dmVsby1sb2FkZ2VuLW1hc3Rlci1rZXktMzItYnl0ZXM=";

/// Our own release server, started when no target is given.
struct OwnServer {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl OwnServer {
    fn start(options: &Options) -> OwnServer {
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("velo.toml");
        let collections = "[[collections]]\nname = \"posts\"\napi_rules = { list = \"\", create = \"\" }\n\n\
             [[collections]]\nname = \"tasks\"\napi_rules = { list = \"@request.auth.id = owner\", create = \"\" }\n\n\
             [[collections]]\nname = \"vault\"\nencrypted = true\n\
             api_rules = { list = \"@request.auth.id = owner\", create = \"\" }\n";
        std::fs::write(&config, collections).unwrap();
        let binary = options
            .server
            .as_deref()
            .unwrap_or(env!("CARGO_BIN_EXE_velo-realtime"));
        let mut child = Command::new(binary)
            .env("VELO_BIND", "127.0.0.1:0")
            .env("VELO_DATA_DIR", data.path().join("data"))
            .env("VELO_CONFIG", &config)
            .env("VELO_APP_ID", &options.app_id)
            .env("VELO_APP_KEY", &options.key)
            .env("VELO_APP_SECRET", &options.secret)
            .env("VELO_JWT_SECRET", &options.jwt_secret)
            .env("VELO_ENCRYPTION_MASTER_KEY", &options.encryption_master_key)
            .env("VELO_SOCKET_QUEUE_FRAMES", "4096")
            // Thousands of sockets and subscriptions from one address and a few users: the
            // per-client limits are for real clients, not for this generator.
            .env("VELO_MAX_CONNECTIONS_PER_ADDRESS", "0")
            .env("VELO_MAX_SUBSCRIPTIONS_PER_CLIENT", "0")
            .env("VELO_SUBSCRIBE_RATE", "0")
            .env("RUST_LOG", "warn,velo_realtime::server=info")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the release server starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
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
        OwnServer {
            child,
            base,
            _data: data,
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) and RSS (KiB) of a process.
fn process_usage(pid: Option<u32>) -> Option<(f64, u64)> {
    process_times(pid).map(|(user, system, rss)| (user + system, rss))
}

#[derive(Clone)]
struct Target {
    base: String,
    app: AppCredentials,
    key: String,
    pid: Option<u32>,
    http: reqwest::Client,
}

impl Target {
    async fn trigger_batch(&self, events: Vec<Value>) {
        let body = json!({ "batch": events }).to_string();
        let path = format!("/apps/{}/batch_events", self.app.id);
        let mut params = vec![
            ("auth_key".to_owned(), self.key.clone()),
            (
                "auth_timestamp".to_owned(),
                velo_realtime::auth::now_secs().to_string(),
            ),
            ("auth_version".to_owned(), "1.0".to_owned()),
            ("body_md5".to_owned(), body_md5(body.as_bytes())),
        ];
        let signature = self.app.request_signature("POST", &path, &params);
        params.push(("auth_signature".to_owned(), signature));
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .query(&params)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => eprintln!("trigger refused: {}", response.status()),
            Err(error) => eprintln!("trigger failed: {error}"),
        }
    }
}

/// Client sockets per loopback source address (the ephemeral port range holds about 28,000).
const SOCKETS_PER_SOURCE: usize = 20_000;

/// Files a run needs besides its sockets (HTTP clients, the runtime, stdio).
const SPARE_FILES: u64 = 256;

/// How long opening one socket may take, from connect to `pusher:connection_established`.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens `count` sockets; socket `i` subscribes to `channels(i)` (signed by
/// `auth(socket_id, channel)` for private ones) and expects `expect(i)` of every event. Given
/// the master key, a socket opens the deliveries of its `private-encrypted-` channels. Waits
/// (bounded) until every subscription succeeded.
async fn sockets(
    target: &Target,
    count: usize,
    channels: impl Fn(usize) -> Vec<String>,
    auth: impl Fn(&str, &str) -> Option<String>,
    expect: impl Fn(usize) -> Expect,
    master_key: Option<&[u8; 32]>,
) -> Clients {
    let path = format!("/app/{}?protocol=7", target.key);
    let server: std::net::SocketAddr = target
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("host:port");
    let mut clients = Clients::new();
    let mut ready = Vec::with_capacity(count);
    for i in 0..count {
        if i > 0 && i % 10_000 == 0 {
            eprintln!("  … {i} of {count} sockets open");
        }
        // Past one source address's ephemeral ports, use 127.0.0.2, .3, ...
        let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (i / SOCKETS_PER_SOURCE) as u8);
        let opened = tokio::time::timeout(SETUP_TIMEOUT, async {
            let mut socket = Socket::connect(server, source, &path).await?;
            let hello = socket.next_text().await?;
            Ok::<_, std::io::Error>((socket, hello))
        })
        .await;
        let (mut socket, hello) = match opened {
            Ok(Ok((socket, Some(hello)))) => (socket, hello),
            Ok(Ok((_, None))) => panic!("socket {i} of {count}: closed before the handshake"),
            Ok(Err(error)) => panic!("socket {i} of {count}: {error}"),
            Err(_) => panic!(
                "socket {i} of {count}: no pusher:connection_established in {SETUP_TIMEOUT:?}"
            ),
        };
        let hello: Value = serde_json::from_str(&hello).expect("a JSON frame");
        let data: Value =
            serde_json::from_str(hello["data"].as_str().unwrap_or("{}")).expect("connection data");
        let socket_id = data["socket_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no socket_id in {hello}"))
            .to_owned();
        let names = channels(i);
        for channel in &names {
            let auth = auth(&socket_id, channel).unwrap_or_default();
            let frame =
                json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}});
            socket
                .send_text(&frame.to_string())
                .await
                .expect("subscribe sent");
        }
        if let Some(master_key) = master_key {
            let keys: Vec<(String, [u8; 32])> = names
                .iter()
                .filter(|channel| channel.starts_with("private-encrypted-"))
                .map(|channel| (channel.clone(), client::channel_key(channel, master_key)))
                .collect();
            if !keys.is_empty() {
                socket.open_with(Opener::new(keys));
            }
        }
        ready.push(clients.add(socket, names.len(), expect(i)));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut unready = 0;
    for is_ready in ready {
        if !matches!(
            tokio::time::timeout_at(deadline, is_ready).await,
            Ok(Ok(()))
        ) {
            unready += 1;
        }
    }
    if unready > 0 {
        eprintln!("!!! {unready} of {count} sockets did not complete their subscriptions");
    }
    clients
}

/// Every socket receives each event once.
fn once(_: usize) -> Expect {
    Expect {
        copies: 1,
        owner: None,
    }
}

#[derive(serde::Serialize, Debug)]
struct Report {
    scenario: String,
    n: usize,
    expected: u64,
    delivered: u64,
    missing: u64,
    /// Copies beyond what a socket should get, deliveries to a socket that should not get
    /// them, and `pusher:error`s: all zero in a correct run.
    duplicates: u64,
    misdelivered: u64,
    errors: u64,
    deliveries_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    server_cpu_us_per_delivery: Option<f64>,
    /// The part of it spent in the kernel (sending, mostly).
    server_system_us_per_delivery: Option<f64>,
    server_rss_kib: Option<u64>,
    /// The generator's own CPU per delivery (it shares the machine with the server).
    generator_cpu_us_per_delivery: Option<f64>,
    note: String,
}

/// What one run measured.
struct Run {
    tally: Tally,
    seconds: f64,
    /// Server CPU seconds spent during the run: user, system.
    cpu: Option<(f64, f64)>,
    /// The generator's CPU seconds during the run.
    own_cpu: Option<f64>,
    rss: Option<u64>,
}

/// CPU clocks of the server and of this process, read before and after a run.
struct Clocks {
    server: Option<(f64, f64, u64)>,
    own: Option<(f64, f64, u64)>,
    started_ns: u64,
}

impl Clocks {
    fn start(target: &Target) -> Clocks {
        Clocks {
            server: process_times(target.pid),
            own: process_times(Some(std::process::id())),
            started_ns: now_ns(),
        }
    }

    fn stop(self, target: &Target, tally: Tally) -> Run {
        let server = process_times(target.pid);
        let own = process_times(Some(std::process::id()));
        Run {
            seconds: (tally.last_ns.saturating_sub(self.started_ns) as f64 / 1e9).max(1e-9),
            cpu: self.server.zip(server).map(|(b, a)| (a.0 - b.0, a.1 - b.1)),
            own_cpu: self.own.zip(own).map(|(b, a)| (a.0 + a.1) - (b.0 + b.1)),
            rss: server.map(|a| a.2),
            tally,
        }
    }
}

fn report(scenario: &str, n: usize, expected: u64, run: Run, note: &str) -> Report {
    let Run {
        tally,
        seconds,
        cpu,
        own_cpu,
        rss,
    } = run;
    let mut latencies = tally.latencies_us;
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |&us| f64::from(us) / 1e3)
    };
    let delivered = latencies.len() as u64;
    let per_delivery = |seconds: f64| seconds * 1e6 / delivered.max(1) as f64;
    Report {
        scenario: scenario.into(),
        n,
        expected,
        delivered,
        missing: expected.saturating_sub(delivered),
        duplicates: tally.duplicates,
        misdelivered: tally.misdelivered,
        errors: tally.errors,
        deliveries_per_sec: delivered as f64 / seconds,
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        server_cpu_us_per_delivery: cpu.map(|(user, system)| per_delivery(user + system)),
        server_system_us_per_delivery: cpu.map(|(_, system)| per_delivery(system)),
        server_rss_kib: rss,
        generator_cpu_us_per_delivery: own_cpu.map(per_delivery),
        note: note.into(),
    }
}

/// About how long a paced run may take (its events are cut to fit), and the fewest it sends.
const PACED_RUN: Duration = Duration::from_secs(20);
const MIN_PACED_EVENTS: usize = 5;

/// How long a run waits for deliveries once nothing arrives any more.
const PATIENCE: Duration = Duration::from_secs(10);

/// A run of triggered events: `events` events on every channel of `channels` (10 channels a
/// request, up to 8 requests in flight), each expected `per_event` times; as fast as the server
/// takes them, or at `pace` events per second. Sequence numbers start at `base`.
struct Blast<'a> {
    channels: &'a [String],
    events: usize,
    per_event: u64,
    pace: Option<f64>,
    base: u64,
}

/// Runs a blast: what it measured, and the event rate it achieved.
async fn blast(target: &Target, clients: &Clients, blast: Blast<'_>) -> (Run, u64, f64) {
    clients.begin(blast.base);
    let clocks = Clocks::start(target);
    let started = Instant::now();
    let payload = "x".repeat(100);
    // Requests run as tasks, at most 8 at once, so that they go out when due (a paced run
    // sleeps between events) rather than when next polled.
    let permits = Arc::new(tokio::sync::Semaphore::new(8));
    let mut requests = Vec::new();
    for i in 0..blast.events as u64 {
        if let Some(rate) = blast.pace {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let data =
            json!({ "seq": blast.base + i, "sent_ns": now_ns(), "payload": payload }).to_string();
        let batch: Vec<Value> = blast
            .channels
            .iter()
            .map(|channel| json!({ "name": "tick", "channel": channel, "data": data }))
            .collect();
        for chunk in batch.chunks(10) {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore stays open");
            let (target, chunk) = (target.clone(), chunk.to_vec());
            requests.push(tokio::spawn(async move {
                target.trigger_batch(chunk).await;
                drop(permit);
            }));
        }
    }
    futures::future::join_all(requests).await;
    let expected = blast.events as u64 * blast.per_event;
    clients.wait(expected, PATIENCE).await;
    let run = clocks.stop(target, clients.tally());
    let event_rate = blast.events as f64 / run.seconds;
    (run, expected, event_rate)
}

/// What to run for the `broadcast` and `channels` scenarios.
struct Plan<'a> {
    scenario: &'a str,
    n: usize,
    channels: &'a [String],
    events: usize,
    per_event: u64,
    /// A fixed event rate; `None` runs at saturation, then at half and at a tenth of the
    /// saturated rate (the latency of a loaded server, and of a lightly loaded one).
    pace: Option<f64>,
}

async fn runs(target: &Target, clients: &Clients, plan: Plan<'_>) -> Vec<Report> {
    let blast_at = |pace, base| Blast {
        channels: plan.channels,
        events: plan.events,
        per_event: plan.per_event,
        pace,
        base,
    };
    if let Some(rate) = plan.pace {
        let (run, expected, _) = blast(target, clients, blast_at(Some(rate), 0)).await;
        return vec![report(
            plan.scenario,
            plan.n,
            expected,
            run,
            &format!("paced at {rate} events/s"),
        )];
    }
    let (run, expected, rate) = blast(target, clients, blast_at(None, 0)).await;
    let mut reports = vec![report(plan.scenario, plan.n, expected, run, "saturation")];
    for (share, name) in [(0.5, "50%"), (0.1, "10%")] {
        let paced = rate * share;
        let base = reports.len() as u64 * plan.events as u64;
        // A slow pace sends fewer events, so that no run takes much over `PACED_RUN`.
        let events = (plan.events as f64).min((paced * PACED_RUN.as_secs_f64()).ceil());
        let mut paced_blast = blast_at(Some(paced), base);
        paced_blast.events = (events as usize).max(MIN_PACED_EVENTS);
        let (run, expected, _) = blast(target, clients, paced_blast).await;
        let note = format!("paced at {name} ({paced:.0} events/s)");
        reports.push(report(plan.scenario, plan.n, expected, run, &note));
    }
    reports
}

async fn broadcast(target: &Target, n: usize, events: usize, pace: Option<f64>) -> Vec<Report> {
    let clients = sockets(
        target,
        n,
        |_| vec!["broadcast".into()],
        |_, _| None,
        once,
        None,
    )
    .await;
    let channels = ["broadcast".to_owned()];
    let plan = Plan {
        scenario: "broadcast",
        n,
        channels: &channels,
        events,
        per_event: n as u64,
        pace,
    };
    runs(target, &clients, plan).await
}

async fn channels(target: &Target, n: usize, events: usize, pace: Option<f64>) -> Vec<Report> {
    let names: Vec<String> = (0..n).map(|i| format!("room-{i}")).collect();
    let clients = sockets(
        target,
        n,
        |i| vec![names[i].clone()],
        |_, _| None,
        once,
        None,
    )
    .await;
    let plan = Plan {
        scenario: "channels",
        n,
        channels: &names,
        events: events.min(50),
        per_event: n as u64,
        pace,
    };
    runs(target, &clients, plan).await
}

/// Subscriptions each velo user holds (one socket per user holds them all).
const SUBSCRIPTIONS_PER_USER: usize = 10;

/// `users` users with 10 owner-filtered private subscriptions each (one socket per user holds
/// them), record writes each reaching its owner's 10 subscriptions and nobody else: on `tasks`,
/// or `encrypted` on `vault`, whose deliveries are sealed per subscription and opened by the
/// sockets.
async fn velo(
    target: &Target,
    options: &Options,
    users: usize,
    writes: usize,
    encrypted: bool,
) -> Report {
    let (scenario, collection) = if encrypted {
        ("velo-encrypted", "vault")
    } else {
        ("velo", "tasks")
    };
    let master_key: Option<[u8; 32]> = encrypted.then(|| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&options.encryption_master_key)
            .ok()
            .and_then(|key| key.try_into().ok())
            .expect("--encryption-master-key is base64 of 32 bytes")
    });
    let authenticator = Authenticator::new("unused", &options.jwt_secret);
    let tokens: Vec<String> = (0..users)
        .map(|u| authenticator.mint(&format!("user{u}"), serde_json::Map::new(), Some(3600)))
        .collect();
    let mut channels: Vec<Vec<String>> = vec![Vec::new(); users];
    for round in 0..SUBSCRIPTIONS_PER_USER {
        for (u, token) in tokens.iter().enumerate() {
            let reply: Value = target
                .http
                .post(format!("{}/api/realtime/subscribe", target.base))
                .bearer_auth(token)
                .json(
                    &json!({ "collection": collection, "filter": format!("kind != 'noise{round}'") }),
                )
                .send()
                .await
                .expect("subscribed")
                .json()
                .await
                .unwrap();
            let channel = reply["pusher_channel"]
                .as_str()
                .unwrap_or_else(|| panic!("no pusher_channel in {reply}"));
            assert_eq!(
                channel.starts_with("private-encrypted-"),
                encrypted,
                "{collection}'s channel: {channel}"
            );
            channels[u].push(channel.to_owned());
        }
    }
    let signer = target.app.clone();
    let clients = sockets(
        target,
        users,
        |u| channels[u].clone(),
        |socket, channel| Some(signer.authorize(socket, channel, None)),
        |u| Expect {
            copies: SUBSCRIPTIONS_PER_USER as u8,
            owner: Some((u as u64, users as u64)),
        },
        master_key.as_ref(),
    )
    .await;
    clients.begin(0);
    let clocks = Clocks::start(target);
    for seq in 0..writes as u64 {
        let owner = format!("user{}", seq as usize % users);
        let record = json!({ "seq": seq, "sent_ns": now_ns(), "owner": owner, "kind": "task" });
        let response = target
            .http
            .post(format!(
                "{}/api/collections/{collection}/records",
                target.base
            ))
            .json(&record)
            .send()
            .await;
        if !matches!(&response, Ok(r) if r.status().is_success()) {
            eprintln!("a write failed");
        }
    }
    let expected = (writes * SUBSCRIPTIONS_PER_USER) as u64;
    clients.wait(expected, PATIENCE).await;
    let run = clocks.stop(target, clients.tally());
    report(
        scenario,
        users * SUBSCRIPTIONS_PER_USER,
        expected,
        run,
        "writes one at a time, durable",
    )
}

async fn idle(target: &Target, n: usize) -> Report {
    let before = process_usage(target.pid);
    let clients = sockets(target, n, |_| Vec::new(), |_, _| None, once, None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = process_usage(target.pid);
    let per = before
        .zip(after)
        .map(|(b, a)| (a.1.saturating_sub(b.1)) as f64 / clients.len() as f64);
    let run = Run {
        tally: Tally::default(),
        seconds: 1.0,
        cpu: None,
        own_cpu: None,
        rss: after.map(|a| a.1),
    };
    let mut report = report("idle", n, 0, run, "");
    report.note = per.map_or("give --pid for RSS".into(), |kib| {
        format!("{kib:.1} KiB per connection")
    });
    report
}

async fn subscribe_rate(target: &Target, total: usize) -> Report {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|w| {
            let (http, base, done) = (target.http.clone(), target.base.clone(), done.clone());
            tokio::spawn(async move {
                for i in (w..total).step_by(64) {
                    let body = json!({ "collection": "posts", "filter": format!("author = 'u{}'", i % 10_000) });
                    if let Ok(response) = http.post(format!("{base}/api/realtime/subscribe")).json(&body).send().await
                        && response.status().is_success()
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    futures::future::join_all(workers).await;
    let seconds = started.elapsed().as_secs_f64();
    let ok = done.load(Ordering::Relaxed);
    let run = Run {
        tally: Tally::default(),
        seconds,
        cpu: None,
        own_cpu: None,
        rss: None,
    };
    let mut report = report("subscribe", total, total as u64, run, "");
    report.delivered = ok;
    report.missing = total as u64 - ok;
    report.deliveries_per_sec = ok as f64 / seconds;
    report.note = "durable subscribes/s, 64 concurrent clients".into();
    report
}

const HEADER: &str = "scenario             n  deliveries/s   p50 ms   p90 ms   p99 ms p99.9 ms  server µs/delivery (sys)  generator µs  run";

/// One report as a row of the summary table; anything lost or wrong is shouted.
fn line(report: &Report) -> String {
    let mut faults = String::new();
    for (count, what) in [
        (report.missing, "MISSING"),
        (report.duplicates, "DUPLICATED"),
        (report.misdelivered, "MISDELIVERED"),
        (report.errors, "ERRORS"),
    ] {
        if count > 0 {
            faults.push_str(&format!("  !!! {count} {what}"));
        }
    }
    let server = report
        .server_cpu_us_per_delivery
        .zip(report.server_system_us_per_delivery)
        .map_or("-".into(), |(cpu, system)| {
            format!("{cpu:.2} ({system:.2})")
        });
    let generator = report
        .generator_cpu_us_per_delivery
        .map_or("-".into(), |cpu| format!("{cpu:.2}"));
    format!(
        "{:<14} {:>7} {:>13.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {:>24}  {:>12}  {}{faults}",
        report.scenario,
        report.n,
        report.deliveries_per_sec,
        report.p50_ms,
        report.p90_ms,
        report.p99_ms,
        report.p999_ms,
        server,
        generator,
        report.note,
    )
}

fn main() {
    let options = Options::parse();
    if !options.bench {
        // `cargo test` runs this harness-less bench without `--bench`: check the client.
        client::self_check();
        println!(
            "loadgen: client checks passed; run with `cargo bench --bench loadgen [-- options]`"
        );
        return;
    }
    let file_limit = raise_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build()
        .unwrap();
    let mut reports = Vec::new();
    println!("{HEADER}");
    runtime.block_on(async {
        for scenario in &options.scenario {
            for &n in &options.n {
                let sockets = if matches!(scenario.as_str(), "subscribe") {
                    0
                } else {
                    n as u64
                };
                if sockets + SPARE_FILES > file_limit {
                    eprintln!(
                        "!!! {scenario} n={n} skipped: it needs {} open files and this process may \
                         hold {file_limit} (the hard limit; raise it with `ulimit -Hn` as root)",
                        sockets + SPARE_FILES
                    );
                    continue;
                }
                // Our own server starts fresh for every run, so one run's memory and state do
                // not colour the next (RSS deltas above all).
                let own = options.target.is_none().then(|| OwnServer::start(&options));
                let base = options.target.clone().unwrap_or_else(|| {
                    own.as_ref()
                        .map(|server| server.base.clone())
                        .unwrap_or_default()
                });
                assert!(
                    base.starts_with("http://127."),
                    "targets must be on 127.0.0.0/8"
                );
                let target = Target {
                    app: AppCredentials::new(&options.app_id, &options.key, &options.secret),
                    key: options.key.clone(),
                    pid: options.pid.or(own.as_ref().map(|server| server.child.id())),
                    http: reqwest::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .expect("an HTTP client"),
                    base,
                };
                let results = match scenario.as_str() {
                    "broadcast" => broadcast(&target, n, options.events, options.pace).await,
                    "channels" => channels(&target, n, options.events, options.pace).await,
                    "velo" => vec![velo(&target, &options, n, options.writes, false).await],
                    "velo-encrypted" => {
                        vec![velo(&target, &options, n, options.writes, true).await]
                    }
                    "idle" => vec![idle(&target, n).await],
                    "subscribe" => vec![subscribe_rate(&target, n * 10).await],
                    other => panic!("unknown scenario {other}"),
                };
                for result in results {
                    println!("{}", line(&result));
                    reports.push(result);
                }
            }
        }
    });
    println!("\nsummary\n{HEADER}");
    reports
        .iter()
        .for_each(|report| println!("{}", line(report)));
    plot(&reports, &options.plot);
    std::fs::write(
        &options.json,
        serde_json::to_string_pretty(&reports).unwrap(),
    )
    .expect("JSON results written");
    println!("results: {}", options.json);
}

/// Deliveries/s at saturation and p99 latency at half that rate, against N, as SVG.
fn plot(reports: &[Report], path: &str) {
    use plotters::prelude::*;
    let saturated: Vec<&Report> = reports.iter().filter(|r| r.note == "saturation").collect();
    let half: Vec<&Report> = reports
        .iter()
        .filter(|r| r.note.starts_with("paced at 50%"))
        .collect();
    if saturated.is_empty() {
        return;
    }
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    let _ = root.fill(&WHITE);
    let (left, right) = root.split_horizontally(450);
    let max_n = saturated.iter().map(|r| r.n).max().unwrap_or(1) as f64;
    let scenarios = ["broadcast", "channels"];
    let colors = [RED, BLUE];
    let draw = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                title: &str,
                runs: &[&Report],
                value: &dyn Fn(&Report) -> f64| {
        let top = runs
            .iter()
            .map(|r| value(r))
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max);
        let Ok(mut chart) = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_n * 1.05, 0.0..top * 1.1)
        else {
            return;
        };
        let _ = chart.configure_mesh().x_desc("N (sockets)").draw();
        for (scenario, color) in scenarios.iter().zip(colors) {
            let points: Vec<(f64, f64)> = runs
                .iter()
                .filter(|r| r.scenario == *scenario)
                .map(|r| (r.n as f64, value(r)))
                .collect();
            if let Ok(series) = chart.draw_series(LineSeries::new(points.clone(), color)) {
                series
                    .label(*scenario)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            let _ = chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            );
        }
        let _ = chart.configure_series_labels().border_style(BLACK).draw();
    };
    draw(&left, "deliveries/s at saturation", &saturated, &|r| {
        r.deliveries_per_sec
    });
    draw(&right, "p99 latency (ms) at 50% of it", &half, &|r| {
        r.p99_ms
    });
    let _ = root.present();
    println!("plot: {path}");
}
