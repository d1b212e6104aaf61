//! A load generator for any Pusher-compatible server, speaking only public protocols: the
//! Pusher WebSocket protocol 7 and the signed Pusher HTTP API (plus Velo's subscribe and
//! records APIs for the `velo` and `subscribe` scenarios).
//!
//! ```text
//! cargo bench --bench loadgen                          # every scenario against our release build
//! cargo bench --bench loadgen -- --scenario broadcast --n 10000
//! cargo bench --bench loadgen -- --target http://127.0.0.1:6001 --app-id 1 --key k --secret s \
//!     --pid 4242 --scenario broadcast,channels,idle   # another Pusher server
//! ```
//!
//! Each scenario reports deliveries/s, end-to-end latency percentiles (the send time travels in
//! the payload as a sequence number the generator maps back), missing deliveries (loudly), and,
//! given the server's pid, its CPU time per delivery (`/proc/<pid>/stat`, independent of how
//! fast the generator is) and RSS. Results go to `target/loadgen.json` too. Every wait is
//! bounded; targets must be on 127.0.0.0/8.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, client_async};
use velo_realtime::auth::Authenticator;
use velo_realtime::pusher::signature::{AppCredentials, body_md5};

#[derive(Parser, Debug)]
struct Options {
    /// Scenarios, comma-separated: broadcast, channels, velo, idle, subscribe
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "broadcast,channels,velo,idle,subscribe"
    )]
    scenario: Vec<String>,
    /// Sockets (broadcast, channels), users (velo), connections (idle); repeatable sizes
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    n: Vec<usize>,
    /// Events per run (broadcast, channels) or writes (velo)
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Events per second for broadcast and channels; without it, saturation then half of it
    #[arg(long)]
    pace: Option<f64>,
    /// A running server (`http://127.0.0.1:PORT`); without it, our release build is started
    #[arg(long)]
    target: Option<String>,
    #[arg(long, default_value = "1001")]
    app_id: String,
    #[arg(long, default_value = "loadgen-key")]
    key: String,
    #[arg(long, default_value = "loadgen-secret")]
    secret: String,
    /// The target's JWT secret (velo scenario against a running server)
    #[arg(long, default_value = "loadgen-jwt")]
    jwt_secret: String,
    /// The target server's pid, for CPU and RSS figures
    #[arg(long)]
    pid: Option<u32>,
    /// Where to write the JSON results
    #[arg(long, default_value = "target/loadgen.json")]
    json: String,
    /// Where to draw deliveries/s and p99 against N (SVG)
    #[arg(long, default_value = "target/loadgen.svg")]
    plot: String,
    /// Passed by `cargo bench`
    #[arg(long, hide = true)]
    bench: bool,
}

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
             [[collections]]\nname = \"tasks\"\napi_rules = { list = \"@request.auth.id = owner\", create = \"\" }\n";
        std::fs::write(&config, collections).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_velo-realtime"))
            .env("VELO_BIND", "127.0.0.1:0")
            .env("VELO_DATA_DIR", data.path().join("data"))
            .env("VELO_CONFIG", &config)
            .env("VELO_APP_ID", &options.app_id)
            .env("VELO_APP_KEY", &options.key)
            .env("VELO_APP_SECRET", &options.secret)
            .env("VELO_JWT_SECRET", &options.jwt_secret)
            .env("VELO_SOCKET_QUEUE_FRAMES", "4096")
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

/// User and system CPU seconds, and RSS (KiB), of a process.
fn process_times(pid: Option<u32>) -> Option<(f64, f64, u64)> {
    let pid = pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())?;
    Some((user / 100.0, system / 100.0, rss))
}

#[derive(Clone)]
struct Target {
    base: String,
    ws: String,
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

/// Client sockets per loopback source address.
const SOCKETS_PER_SOURCE: usize = 25_000;

/// Lifts this process's open-file limit to its hard limit (each socket is a file).
fn raise_file_limit() {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Receipts: (sequence number, arrival) from every socket.
type Receipts = mpsc::UnboundedReceiver<(u64, Instant)>;

/// Opens sockets; socket `i` subscribes to `channels(i)` (with `auth(i, socket_id, channel)`
/// for private ones) and reports the `seq` of every event. Reads frames without parsing more
/// than the sequence number.
async fn sockets(
    target: &Target,
    count: usize,
    channels: impl Fn(usize) -> Vec<String>,
    auth: impl Fn(usize, &str, &str) -> Option<String>,
) -> (Receipts, Vec<tokio::task::JoinHandle<()>>) {
    let (receipts, received) = mpsc::unbounded_channel();
    let url = format!("{}/app/{}?protocol=7", target.ws, target.key);
    let server: std::net::SocketAddr = target
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("host:port");
    let mut tasks = Vec::with_capacity(count);
    let mut ready = Vec::with_capacity(count);
    for i in 0..count {
        // Past one source address's ephemeral ports, use 127.0.0.2, .3, ...
        let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (i / SOCKETS_PER_SOURCE) as u8);
        let tcp = tokio::net::TcpSocket::new_v4().expect("a socket");
        tcp.bind((source, 0).into())
            .expect("a loopback source address");
        let stream = tcp.connect(server).await.expect("connected");
        let (mut socket, _) = client_async(url.as_str(), MaybeTlsStream::Plain(stream))
            .await
            .expect("a WebSocket");
        let Some(Ok(Message::Text(hello))) = socket.next().await else {
            panic!("no handshake")
        };
        let hello: Value = serde_json::from_str(&hello).unwrap();
        let data: Value = serde_json::from_str(hello["data"].as_str().unwrap()).unwrap();
        let socket_id = data["socket_id"].as_str().unwrap().to_owned();
        let names = channels(i);
        for channel in &names {
            let auth = auth(i, &socket_id, channel).unwrap_or_default();
            let frame =
                json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}});
            socket
                .send(Message::Text(frame.to_string().into()))
                .await
                .unwrap();
        }
        let receipts = receipts.clone();
        let (subscribed, is_ready) = tokio::sync::oneshot::channel();
        ready.push(is_ready);
        tasks.push(tokio::spawn(async move {
            let mut pending = names.len();
            let mut subscribed = Some(subscribed);
            if pending == 0 {
                subscribed.take().map(|done| done.send(()));
            }
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let arrived = Instant::now();
                if text.contains("subscription_succeeded") {
                    pending = pending.saturating_sub(1);
                    if pending == 0 {
                        subscribed.take().map(|done| done.send(()));
                    }
                } else if let Some(seq) = sequence(&text) {
                    let _ = receipts.send((seq, arrived));
                }
            }
        }));
    }
    for is_ready in ready {
        let _ = tokio::time::timeout(Duration::from_secs(30), is_ready).await;
    }
    (received, tasks)
}

/// The `seq` a payload carries (`…\"seq\":123…` inside the data string), without parsing.
fn sequence(frame: &str) -> Option<u64> {
    let at = frame.find(r#"seq\":"#)? + r#"seq\":"#.len();
    let digits: String = frame[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[derive(serde::Serialize, Debug)]
struct Report {
    scenario: String,
    n: usize,
    expected: u64,
    delivered: u64,
    missing: u64,
    deliveries_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    server_cpu_us_per_delivery: Option<f64>,
    /// The part of it spent in the kernel (sending, mostly).
    server_system_us_per_delivery: Option<f64>,
    server_rss_kib: Option<u64>,
    note: String,
}

/// Collects `expected` receipts (bounded wait), latencies from `sent[seq]`.
async fn collect(
    received: &mut Receipts,
    sent: &HashMap<u64, Instant>,
    expected: u64,
    started: Instant,
) -> (Vec<Duration>, f64) {
    let mut latencies = Vec::with_capacity(expected as usize);
    let mut last = started;
    while (latencies.len() as u64) < expected {
        match tokio::time::timeout(Duration::from_secs(10), received.recv()).await {
            Ok(Some((seq, arrived))) => {
                if let Some(at) = sent.get(&seq) {
                    latencies.push(arrived.saturating_duration_since(*at));
                    last = last.max(arrived);
                }
            }
            _ => break,
        }
    }
    let seconds = last
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(1e-9);
    (latencies, seconds)
}

/// What one run measured.
struct Run {
    latencies: Vec<Duration>,
    seconds: f64,
    /// Server CPU seconds spent during the run: user, system.
    cpu: Option<(f64, f64)>,
    rss: Option<u64>,
}

fn report(scenario: &str, n: usize, expected: u64, run: Run, note: &str) -> Report {
    let Run {
        mut latencies,
        seconds,
        cpu,
        rss,
    } = run;
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let delivered = latencies.len() as u64;
    Report {
        scenario: scenario.into(),
        n,
        expected,
        delivered,
        missing: expected.saturating_sub(delivered),
        deliveries_per_sec: delivered as f64 / seconds,
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        server_cpu_us_per_delivery: cpu
            .map(|(user, system)| (user + system) * 1e6 / delivered.max(1) as f64),
        server_system_us_per_delivery: cpu
            .map(|(_, system)| system * 1e6 / delivered.max(1) as f64),
        server_rss_kib: rss,
        note: note.into(),
    }
}

/// A run of triggered events: `events` events on every channel of `channels` (10 channels a
/// request, up to 8 requests in flight), each expected `per_event` times; as fast as the server
/// takes them, or at `pace` events per second.
struct Blast<'a> {
    channels: &'a [String],
    events: usize,
    per_event: u64,
    pace: Option<f64>,
}

/// Runs a blast: what it measured, and the event rate it achieved.
async fn blast(target: &Target, received: &mut Receipts, blast: Blast<'_>) -> (Run, u64, f64) {
    let before = process_times(target.pid);
    let started = Instant::now();
    let mut sent = HashMap::with_capacity(blast.events);
    let payload = "x".repeat(100);
    // Requests run as tasks, at most 8 at once, so that they go out when due (a paced run
    // sleeps between events) rather than when next polled.
    let permits = Arc::new(tokio::sync::Semaphore::new(8));
    let mut requests = Vec::new();
    for seq in 0..blast.events as u64 {
        if let Some(rate) = blast.pace {
            let due = started + Duration::from_secs_f64(seq as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let data = json!({ "seq": seq, "payload": payload }).to_string();
        let batch: Vec<Value> = blast
            .channels
            .iter()
            .map(|channel| json!({ "name": "tick", "channel": channel, "data": data }))
            .collect();
        sent.insert(seq, Instant::now());
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
    let (latencies, seconds) = collect(received, &sent, expected, started).await;
    let after = process_times(target.pid);
    let event_rate = blast.events as f64 / seconds;
    let run = Run {
        latencies,
        seconds,
        cpu: before.zip(after).map(|(b, a)| (a.0 - b.0, a.1 - b.1)),
        rss: after.map(|a| a.2),
    };
    (run, expected, event_rate)
}

/// What to run for the `broadcast` and `channels` scenarios.
struct Plan<'a> {
    scenario: &'a str,
    n: usize,
    channels: &'a [String],
    events: usize,
    per_event: u64,
    /// A fixed event rate; `None` runs at saturation, then at half the saturated rate (the
    /// latency a loaded but not overloaded server gives).
    pace: Option<f64>,
}

async fn runs(target: &Target, received: &mut Receipts, plan: Plan<'_>) -> Vec<Report> {
    let blast_at = |pace| Blast {
        channels: plan.channels,
        events: plan.events,
        per_event: plan.per_event,
        pace,
    };
    if let Some(rate) = plan.pace {
        let (run, expected, _) = blast(target, received, blast_at(Some(rate))).await;
        return vec![report(
            plan.scenario,
            plan.n,
            expected,
            run,
            &format!("paced at {rate} events/s"),
        )];
    }
    let (run, expected, rate) = blast(target, received, blast_at(None)).await;
    let saturated = report(plan.scenario, plan.n, expected, run, "saturation");
    let half = rate / 2.0;
    let (run, expected, _) = blast(target, received, blast_at(Some(half))).await;
    let paced = report(
        plan.scenario,
        plan.n,
        expected,
        run,
        &format!("paced at 50% ({half:.0} events/s)"),
    );
    vec![saturated, paced]
}

async fn broadcast(target: &Target, n: usize, events: usize, pace: Option<f64>) -> Vec<Report> {
    let (mut received, tasks) =
        sockets(target, n, |_| vec!["broadcast".into()], |_, _, _| None).await;
    let channels = ["broadcast".to_owned()];
    let plan = Plan {
        scenario: "broadcast",
        n,
        channels: &channels,
        events,
        per_event: n as u64,
        pace,
    };
    let reports = runs(target, &mut received, plan).await;
    tasks.iter().for_each(|task| task.abort());
    reports
}

async fn channels(target: &Target, n: usize, events: usize, pace: Option<f64>) -> Vec<Report> {
    let names: Vec<String> = (0..n).map(|i| format!("room-{i}")).collect();
    let for_socket = names.clone();
    let (mut received, tasks) = sockets(
        target,
        n,
        move |i| vec![for_socket[i].clone()],
        |_, _, _| None,
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
    let reports = runs(target, &mut received, plan).await;
    tasks.iter().for_each(|task| task.abort());
    reports
}

/// `users` users with 10 owner-filtered private subscriptions each (one socket per user holds
/// them), record writes each reaching its owner's 10 subscriptions.
async fn velo(target: &Target, options: &Options, users: usize, writes: usize) -> Report {
    let authenticator = Authenticator::new("unused", &options.jwt_secret);
    let tokens: Vec<String> = (0..users)
        .map(|u| authenticator.mint(&format!("user{u}"), serde_json::Map::new(), Some(3600)))
        .collect();
    let mut channels: Vec<Vec<String>> = vec![Vec::new(); users];
    for round in 0..10 {
        for (u, token) in tokens.iter().enumerate() {
            let reply: Value = target
                .http
                .post(format!("{}/api/realtime/subscribe", target.base))
                .bearer_auth(token)
                .json(
                    &json!({ "collection": "tasks", "filter": format!("kind != 'noise{round}'") }),
                )
                .send()
                .await
                .expect("subscribed")
                .json()
                .await
                .unwrap();
            channels[u].push(format!(
                "private-{}",
                reply["channel_name"].as_str().unwrap()
            ));
        }
    }
    let signer = target.app.clone();
    let lists = channels.clone();
    let (mut received, tasks) = sockets(
        target,
        users,
        move |u| lists[u].clone(),
        move |_, socket, channel| Some(signer.authorize(socket, channel, None)),
    )
    .await;
    let before = process_times(target.pid);
    let started = Instant::now();
    let mut sent = HashMap::with_capacity(writes);
    for seq in 0..writes as u64 {
        sent.insert(seq, Instant::now());
        let owner = format!("user{}", seq as usize % users);
        let response = target
            .http
            .post(format!("{}/api/collections/tasks/records", target.base))
            .json(&json!({ "seq": seq, "owner": owner, "kind": "task" }))
            .send()
            .await;
        if !matches!(&response, Ok(r) if r.status().is_success()) {
            eprintln!("a write failed");
        }
    }
    let expected = writes as u64 * 10;
    let (latencies, seconds) = collect(&mut received, &sent, expected, started).await;
    let after = process_times(target.pid);
    let cpu = before.zip(after).map(|(b, a)| (a.0 - b.0, a.1 - b.1));
    tasks.iter().for_each(|task| task.abort());
    report(
        "velo",
        users * 10,
        expected,
        Run {
            latencies,
            seconds,
            cpu,
            rss: after.map(|a| a.2),
        },
        "writes one at a time, durable",
    )
}

async fn idle(target: &Target, n: usize) -> Report {
    let before = process_usage(target.pid);
    let (_, tasks) = sockets(target, n, |_| Vec::new(), |_, _, _| None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = process_usage(target.pid);
    let per = before
        .zip(after)
        .map(|(b, a)| (a.1.saturating_sub(b.1)) as f64 / n as f64);
    tasks.iter().for_each(|task| task.abort());
    let run = Run {
        latencies: Vec::new(),
        seconds: 1.0,
        cpu: None,
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
        latencies: Vec::new(),
        seconds,
        cpu: None,
        rss: None,
    };
    let mut report = report("subscribe", total, total as u64, run, "");
    report.delivered = ok;
    report.missing = total as u64 - ok;
    report.deliveries_per_sec = ok as f64 / seconds;
    report.note = "durable subscribes/s, 64 concurrent clients".into();
    report
}

fn main() {
    let options = Options::parse();
    if !options.bench {
        println!("loadgen: run with `cargo bench --bench loadgen [-- options]`");
        return;
    }
    raise_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut reports = Vec::new();
    runtime.block_on(async {
        for scenario in &options.scenario {
            for &n in &options.n {
                // Our own server starts fresh for every run, so one run's memory and state do
                // not colour the next (RSS deltas above all).
                let own = options.target.is_none().then(|| OwnServer::start(&options));
                let base = options
                    .target
                    .clone()
                    .unwrap_or_else(|| own.as_ref().map(|server| server.base.clone()).unwrap_or_default());
                assert!(base.starts_with("http://127."), "targets must be on 127.0.0.0/8");
                let target = Target {
                    ws: base.replacen("http://", "ws://", 1),
                    app: AppCredentials::new(&options.app_id, &options.key, &options.secret),
                    key: options.key.clone(),
                    pid: options.pid.or(own.as_ref().map(|server| server.child.id())),
                    http: reqwest::Client::new(),
                    base,
                };
                let results = match scenario.as_str() {
                    "broadcast" => broadcast(&target, n, options.events, options.pace).await,
                    "channels" => channels(&target, n, options.events, options.pace).await,
                    "velo" => vec![velo(&target, &options, n, options.events).await],
                    "idle" => vec![idle(&target, n).await],
                    "subscribe" => vec![subscribe_rate(&target, n * 10).await],
                    other => panic!("unknown scenario {other}"),
                };
                for result in results {
                if result.missing > 0 {
                    eprintln!("!!! {} n={}: {} of {} deliveries MISSING", result.scenario, n, result.missing, result.expected);
                }
                println!(
                    "{:<10} n={:<7} {:>11.0}/s  p50 {:>7.2} ms  p90 {:>7.2}  p99 {:>7.2}  p99.9 {:>7.2}  cpu {:>14} µs/delivery  missing {}  {}",
                    result.scenario,
                    result.n,
                    result.deliveries_per_sec,
                    result.p50_ms,
                    result.p90_ms,
                    result.p99_ms,
                    result.p999_ms,
                    result.server_cpu_us_per_delivery.zip(result.server_system_us_per_delivery).map_or("-".into(), |(cpu, system)| format!("{cpu:.2} ({system:.2} sys)")),
                    result.missing,
                    result.note
                );
                reports.push(result);
                }
            }
        }
    });
    plot(&reports, &options.plot);
    std::fs::write(
        &options.json,
        serde_json::to_string_pretty(&reports).unwrap(),
    )
    .expect("JSON results written");
    println!("results: {}", options.json);
}

/// Deliveries/s and p99 latency against N, per scenario at saturation, as SVG.
fn plot(reports: &[Report], path: &str) {
    use plotters::prelude::*;
    let saturated: Vec<&Report> = reports.iter().filter(|r| r.note == "saturation").collect();
    if saturated.is_empty() {
        return;
    }
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    let _ = root.fill(&WHITE);
    let (left, right) = root.split_horizontally(450);
    let max_n = saturated.iter().map(|r| r.n).max().unwrap_or(1) as f64;
    let max_rate = saturated
        .iter()
        .map(|r| r.deliveries_per_sec)
        .fold(1.0, f64::max);
    let max_p99 = saturated
        .iter()
        .map(|r| r.p99_ms)
        .filter(|p| p.is_finite())
        .fold(1.0, f64::max);
    let scenarios = ["broadcast", "channels"];
    let colors = [RED, BLUE];
    let draw = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                title: &str,
                top: f64,
                value: &dyn Fn(&Report) -> f64| {
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
            let points: Vec<(f64, f64)> = saturated
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
    draw(&left, "deliveries/s at saturation", max_rate, &|r| {
        r.deliveries_per_sec
    });
    draw(&right, "p99 latency at saturation (ms)", max_p99, &|r| {
        r.p99_ms
    });
    let _ = root.present();
    println!("plot: {path}");
}
