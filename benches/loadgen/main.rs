//! A load generator for any Pusher-compatible server, speaking only public protocols: the
//! Pusher WebSocket protocol 7 and the signed Pusher HTTP API (plus Velo's subscribe and
//! records APIs for the `velo`, `velo-live`, `velo-encrypted`, `subscribe`, `writes` and
//! `snapshot` scenarios).
//!
//! ```text
//! cargo bench --bench loadgen                          # every scenario against our release build
//! cargo bench --bench loadgen -- --scenario broadcast --n 10000
//! cargo bench --bench loadgen -- --nodes 1,3 --scenario velo,writes --n 1000
//!     # each run on one node (sled), then on 3 nodes sharing a redis-server; ratios 3 / 1
//! cargo bench --bench loadgen -- --target http://127.0.0.1:6001 --app-id 1 --key k --secret s \
//!     --pid 4242 --scenario broadcast,channels,idle   # another Pusher server
//! cargo bench --bench loadgen -- --server ../old/target/release/velo-realtime  # an older build
//! ```
//!
//! Each scenario reports deliveries/s; end-to-end latency percentiles, exact over every
//! delivery (the payload carries its send time, `sent_ns`, and a sequence number); missing,
//! duplicated and misdelivered events and `pusher:error`s (loudly); given the server's pid, its
//! CPU time per delivery and per event (`/proc/<pid>/stat`, independent of how fast the
//! generator is) and RSS; and the generator's own CPU per delivery. A summary table ends the
//! run; results go to `target/loadgen.json` and a plot to `target/loadgen.svg`. Every wait is
//! bounded; targets must be on 127.0.0.0/8. `cargo test` runs this file without `--bench`: it
//! then checks its client, and runs a few sockets and writes on one node and on two nodes
//! sharing a `redis-server` (which it needs), every count exact.
//!
//! `--nodes` lists deployments of our own build, each measured in turn for every scenario and
//! size: `1` is one server on its own disk (sled, no Redis: the plain mode, the default); `N`
//! (2 or more) starts a fresh `redis-server` (temp dir, unix socket, `appendonly yes` and
//! `appendfsync always`: the zero-loss settings we recommend) and N nodes on it, each with its
//! own data dir and `VELO_NODE_ID`; `redis:1` is one node on Redis. Sockets are spread
//! round-robin over the nodes, and so are subscribes, record writes and triggers (event `i` to
//! node `i % N`). Cluster rows add Redis's CPU (`/proc` of the `redis-server`) per delivery and
//! per event; server CPU is summed over the nodes. Every deployment after the first is printed
//! as ratios against the first one's run of the same scenario, size and load (deliveries/s,
//! writes/s, p50, p99, CPU per delivery and per event). Where triggers reach only the sockets
//! of the node they were sent to (a probe decides before broadcast and channels), those runs
//! count only those deliveries and say so (`node-local triggers`): an event then reaches only
//! its node's share of the sockets, so compare CPU per delivery, not per event.
//!
//! `velo` subscribes N users × 10 owner-filtered subscriptions to `tasks` (private channels),
//! then writes records one at a time, each reaching its owner's 10 subscriptions; it reports
//! the acknowledged writes/s of that loop too. `velo-encrypted` is the same on `vault`, an
//! encrypted collection: its events go out on `private-encrypted-` channels, sealed per
//! subscription, and each socket opens every delivery with its channel's key (derived from
//! `--encryption-master-key`, which our own server is given too) before it reads `seq` and
//! `sent_ns`, so the two compare the sealing's cost on the event path (and the client's opening
//! shows in the generator's CPU). `velo-live` is `velo` with every subscription made with
//! `"snapshot": true`, hence live: its events carry `seq`, are numbered by the collection's
//! delivery task and kept in its history, and each socket checks that every channel's `seq`
//! runs 1, 2, 3… (a violation is counted and shown: a server bug). All three subscribe to the
//! `pusher_channel` the subscribe reply names. A scenario with a baseline scenario
//! (`velo-live` and `velo-encrypted` against `velo`) that ran before it in the same invocation,
//! at the same size on the same deployment, is printed with its ratios against it: the
//! feature's cost on the event path, measured in the same run. `writes` has 64 concurrent writers create N × 10 records on `posts` (no subscriber;
//! at most 20 s): durable writes/s, and the acknowledgement's latency in the latency columns.
//! `snapshot` writes N records to `posts` (32 concurrent writers), each in one of 10 buckets,
//! then times `--requests` requests of each of three kinds, one at a time, interleaved: the
//! list API's `GET …/records?filter=bucket = 3&per_page=100` (`snapshot-list`, the baseline),
//! a subscribe with that filter (`snapshot-sub`) and a subscribe with it and `"snapshot": true,
//! "per_page": 100` (`snapshot`), each answer checked; the latency columns are each request's,
//! deliveries/s its requests/s, and `snapshot` is printed against the other two. Then up to 20
//! durable writes to `posts` alone (`snap-write`) and as many sent 5 ms into a snapshot
//! (`snap-write-in`), alternated: how long a snapshot holds up its collection's writes.
//!
//! `velo-hooked` and `velo-redacted` are `velo` on a server started with a `realtime_broadcast`
//! hook (DESIGN.md §14), in a hooks directory the generator writes: `velo-hooked`'s checks
//! each delivery's subscriber against the record's owner and lets it go as it is (the event
//! still serialized once); `velo-redacted`'s returns the record without a field for every
//! delivery (serialized for each subscriber). Each is printed with its ratios against the
//! same run's `velo` (run `velo` first) and the server CPU a delivery gains.

mod client;
mod deployment;
#[path = "../support/process.rs"]
mod process;
#[allow(dead_code)] // the cluster tests' `kill` and `restart`
#[path = "../../tests/support/redis.rs"]
mod redis_server;
mod report;
#[path = "../support/server.rs"]
mod server;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use velo_realtime::auth::Authenticator;
use velo_realtime::pusher::signature::{AppCredentials, body_md5};

use client::{Clients, Expect, Opener, Socket, Tally, now_ns};
use deployment::{Clocks, Deployment, Node, NodeSettings, Nodes, Redis, nodes_rss};
use process::raise_file_limit;
use report::{HEADER, Report, Run, line, percentiles, plot, ratios};

#[derive(Parser, Debug)]
struct Options {
    /// Scenarios, comma-separated (repeatable): broadcast, channels, velo, velo-live,
    /// velo-encrypted, velo-hooked, velo-redacted, idle, subscribe, writes, snapshot
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "broadcast,channels,velo,velo-live,velo-encrypted,velo-hooked,velo-redacted,idle,subscribe,writes,snapshot"
    )]
    scenario: Vec<String>,
    /// Sockets (broadcast, channels), users (velo, velo-live, velo-encrypted), connections
    /// (idle), records (snapshot); repeatable sizes
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    n: Vec<usize>,
    /// Deployments of our build to measure in turn, comma-separated: 1 (one server on sled),
    /// N (N nodes sharing a redis-server started for the run), redis:N (also for N = 1).
    /// Each after the first is compared with the first.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    nodes: Vec<Nodes>,
    /// Events per run (broadcast; channels sends at most 50, each to every channel)
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Record writes (velo, velo-live, velo-encrypted), one at a time
    #[arg(long, default_value_t = 2000)]
    writes: usize,
    /// Timed requests of each kind (snapshot)
    #[arg(long, default_value_t = 50)]
    requests: usize,
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

/// The nodes a run sends to, and how.
#[derive(Clone)]
struct Target {
    nodes: Arc<[Node]>,
    redis: Option<Redis>,
    app: AppCredentials,
    key: String,
    http: reqwest::Client,
}

impl Target {
    /// The node that the `index`th socket, request or event goes to: round-robin.
    fn node(&self, index: usize) -> &Node {
        &self.nodes[index % self.nodes.len()]
    }

    fn clocks(&self) -> Clocks {
        Clocks::start(self.nodes.clone(), self.redis.clone())
    }

    /// Triggers `events` on the `node`th node.
    async fn trigger_batch(&self, node: usize, events: Vec<Value>) {
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
            .post(format!("{}{path}", self.node(node).base))
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

/// Opens `count` sockets, spread round-robin over the nodes; socket `i` subscribes to `channels(i)` (signed by
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
    let mut clients = Clients::new();
    let mut ready = Vec::with_capacity(count);
    for i in 0..count {
        if i > 0 && i % 10_000 == 0 {
            eprintln!("  … {i} of {count} sockets open");
        }
        // Past one source address's ephemeral ports, use 127.0.0.2, .3, ...
        let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (i / SOCKETS_PER_SOURCE) as u8);
        let opened = tokio::time::timeout(SETUP_TIMEOUT, async {
            let mut socket = Socket::connect(target.node(i).address, source, &path).await?;
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
        live: false,
    }
}

/// What a run measured, from its clocks and its sockets' receipts: its time runs from the
/// clocks' start to the last delivery counted.
fn finish(clocks: &Clocks, tally: Tally, events: u64) -> Run {
    Run {
        seconds: (tally.last_ns.saturating_sub(clocks.started_ns) as f64 / 1e9).max(1e-9),
        usage: clocks.stop(),
        events,
        tally,
    }
}

/// About how long a paced run may take (its events are cut to fit), and the fewest it sends.
const PACED_RUN: Duration = Duration::from_secs(20);
const MIN_PACED_EVENTS: usize = 5;

/// How long a run waits for deliveries once nothing arrives any more.
const PATIENCE: Duration = Duration::from_secs(10);

/// Whose sockets a triggered event reaches. Event `i` of a run is sent to node `i % nodes`;
/// it reaches every socket on its channels, or, where the nodes do not share triggers, only
/// those on the node it was sent to.
#[derive(Clone, Copy)]
struct Fanout {
    sockets: usize,
    nodes: usize,
    node_local: bool,
}

impl Fanout {
    /// What socket `i` (on node `i % nodes`) expects: every event, or its node's.
    fn expect(&self, i: usize) -> Expect {
        Expect {
            copies: 1,
            owner: self
                .node_local
                .then(|| ((i % self.nodes) as u64, self.nodes as u64)),
            live: false,
        }
    }

    /// Deliveries expected of events `0..events` (each on channels holding one socket each,
    /// or on one channel holding them all).
    fn expected(&self, events: u64) -> u64 {
        if !self.node_local {
            return events * self.sockets as u64;
        }
        (0..events)
            .map(|i| self.sockets_on((i % self.nodes as u64) as usize))
            .sum()
    }

    /// How many sockets node `node` holds.
    fn sockets_on(&self, node: usize) -> u64 {
        ((self.sockets + self.nodes - 1 - node) / self.nodes) as u64
    }

    /// How the run's notes say it.
    fn note(&self, note: &str) -> String {
        if self.node_local {
            format!("{note}, node-local triggers")
        } else {
            note.to_owned()
        }
    }
}

/// The channel of [`triggers_cross_nodes`].
const PROBE_CHANNEL: &str = "loadgen-probe";

/// Whether an event triggered on one node reaches a socket on another (it does once the nodes
/// share Pusher triggers): a socket on the second node listens on a probe channel, and the
/// first node triggers on it.
async fn triggers_cross_nodes(target: &Target) -> Result<bool, String> {
    if target.nodes.len() < 2 {
        return Ok(true);
    }
    let path = format!("/app/{}?protocol=7", target.key);
    let listening = async {
        let closed = || std::io::Error::other("closed by the server");
        let mut socket =
            Socket::connect(target.node(1).address, std::net::Ipv4Addr::LOCALHOST, &path).await?;
        socket.next_text().await?.ok_or_else(closed)?;
        let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": PROBE_CHANNEL}});
        socket.send_text(&subscribe.to_string()).await?;
        while !socket
            .next_text()
            .await?
            .ok_or_else(closed)?
            .contains("subscription_succeeded")
        {}
        Ok::<_, std::io::Error>(socket)
    };
    let mut socket = match tokio::time::timeout(SETUP_TIMEOUT, listening).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => return Err(format!("the trigger probe's socket on node-1: {error}")),
        Err(_) => {
            return Err(format!(
                "the trigger probe's socket on node-1: no subscription in {SETUP_TIMEOUT:?}"
            ));
        }
    };
    let event = json!({"name": "probe", "channel": PROBE_CHANNEL, "data": "{}"});
    target.trigger_batch(0, vec![event]).await;
    let arrived = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(text)) = socket.next_text().await {
            if text.contains(r#""probe""#) {
                return true;
            }
        }
        false
    })
    .await;
    Ok(arrived.unwrap_or(false))
}

/// The fanout of a trigger scenario with `sockets` sockets on `target`, said once per run.
async fn fanout(target: &Target, sockets: usize) -> Result<Fanout, String> {
    let nodes = target.nodes.len();
    let cross = triggers_cross_nodes(target).await?;
    if !cross {
        eprintln!(
            "  triggers reach only the sockets of the node they are sent to on this build: \
             counting only those deliveries (node-local triggers)"
        );
    }
    Ok(Fanout {
        sockets,
        nodes,
        node_local: !cross,
    })
}

/// A run of triggered events: `events` events on every channel of `channels` (10 channels a
/// request, up to 8 requests in flight, event `i` to node `i % nodes`), reaching sockets as
/// `fanout` says; as fast as the server takes them, or at `pace` events per second. Sequence
/// numbers start at `base`.
struct Blast<'a> {
    channels: &'a [String],
    events: usize,
    fanout: Fanout,
    pace: Option<f64>,
    base: u64,
}

/// Runs a blast: what it measured, the deliveries expected, and the event rate it achieved.
async fn blast(target: &Target, clients: &Clients, blast: Blast<'_>) -> (Run, u64, f64) {
    clients.begin(blast.base);
    let clocks = target.clocks();
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
                target.trigger_batch(i as usize, chunk).await;
                drop(permit);
            }));
        }
    }
    futures::future::join_all(requests).await;
    let expected = blast.fanout.expected(blast.events as u64);
    clients.wait(expected, PATIENCE).await;
    let events = (blast.events * blast.channels.len()) as u64;
    let run = finish(&clocks, clients.tally(), events);
    let event_rate = blast.events as f64 / run.seconds;
    (run, expected, event_rate)
}

/// What to run for the `broadcast` and `channels` scenarios.
struct Plan<'a> {
    scenario: &'a str,
    n: usize,
    channels: &'a [String],
    events: usize,
    fanout: Fanout,
    /// A fixed event rate; `None` runs at saturation, then at half and at a tenth of the
    /// saturated rate (the latency of a loaded server, and of a lightly loaded one).
    pace: Option<f64>,
}

async fn runs(target: &Target, clients: &Clients, plan: Plan<'_>) -> Vec<Report> {
    let blast_at = |pace, base| Blast {
        channels: plan.channels,
        events: plan.events,
        fanout: plan.fanout,
        pace,
        base,
    };
    let note = |note: &str| plan.fanout.note(note);
    if let Some(rate) = plan.pace {
        let (run, expected, _) = blast(target, clients, blast_at(Some(rate), 0)).await;
        let note = note(&format!("paced at {rate} events/s"));
        return vec![Report::new(plan.scenario, plan.n, expected, run, &note)];
    }
    let (run, expected, rate) = blast(target, clients, blast_at(None, 0)).await;
    let mut reports = vec![Report::new(
        plan.scenario,
        plan.n,
        expected,
        run,
        &note("saturation"),
    )];
    for (share, name) in [(0.5, "50%"), (0.1, "10%")] {
        let paced = rate * share;
        let base = reports.len() as u64 * plan.events as u64;
        // A slow pace sends fewer events, so that no run takes much over `PACED_RUN`.
        let events = (plan.events as f64).min((paced * PACED_RUN.as_secs_f64()).ceil());
        let mut paced_blast = blast_at(Some(paced), base);
        paced_blast.events = (events as usize).max(MIN_PACED_EVENTS);
        let (run, expected, _) = blast(target, clients, paced_blast).await;
        let note = note(&format!("paced at {name} ({paced:.0} events/s)"));
        reports.push(Report::new(plan.scenario, plan.n, expected, run, &note));
    }
    reports
}

async fn broadcast(
    target: &Target,
    n: usize,
    events: usize,
    pace: Option<f64>,
) -> Result<Vec<Report>, String> {
    let fanout = fanout(target, n).await?;
    let clients = sockets(
        target,
        n,
        |_| vec!["broadcast".into()],
        |_, _| None,
        |i| fanout.expect(i),
        None,
    )
    .await;
    let channels = ["broadcast".to_owned()];
    let plan = Plan {
        scenario: "broadcast",
        n,
        channels: &channels,
        events,
        fanout,
        pace,
    };
    Ok(runs(target, &clients, plan).await)
}

async fn channels(
    target: &Target,
    n: usize,
    events: usize,
    pace: Option<f64>,
) -> Result<Vec<Report>, String> {
    let fanout = fanout(target, n).await?;
    let names: Vec<String> = (0..n).map(|i| format!("room-{i}")).collect();
    let clients = sockets(
        target,
        n,
        |i| vec![names[i].clone()],
        |_, _| None,
        |i| fanout.expect(i),
        None,
    )
    .await;
    let plan = Plan {
        scenario: "channels",
        n,
        channels: &names,
        events: events.min(50),
        fanout,
        pace,
    };
    Ok(runs(target, &clients, plan).await)
}

/// Subscriptions each velo user holds (one socket per user holds them all).
const SUBSCRIPTIONS_PER_USER: usize = 10;

/// What the velo scenarios' subscriptions are.
#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    /// On `tasks`.
    Plain,
    /// On `tasks`, made with `"snapshot": true`: live (`seq`, history, holding).
    Live,
    /// On `vault`, an encrypted collection.
    Encrypted,
    /// On `tasks`, on a server with a `realtime_broadcast` hook ([`broadcast_hook`]).
    Hooked,
    Redacted,
}

/// `users` users with 10 owner-filtered private subscriptions each (one socket per user holds
/// them), record writes each reaching its owner's 10 subscriptions and nobody else: on `tasks`,
/// live ones there, or on `vault`, whose deliveries are sealed per subscription and opened by
/// the sockets. Subscribes and writes go round-robin to the nodes.
async fn velo(
    target: &Target,
    options: &Options,
    users: usize,
    writes: usize,
    flavor: Flavor,
) -> Report {
    let encrypted = flavor == Flavor::Encrypted;
    let live = flavor == Flavor::Live;
    let (scenario, collection) = match flavor {
        Flavor::Plain => ("velo", "tasks"),
        Flavor::Live => ("velo-live", "tasks"),
        Flavor::Encrypted => ("velo-encrypted", "vault"),
        Flavor::Hooked => ("velo-hooked", "tasks"),
        Flavor::Redacted => ("velo-redacted", "tasks"),
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
            let node = target.node(round * users + u);
            let mut body =
                json!({ "collection": collection, "filter": format!("kind != 'noise{round}'") });
            if live {
                body["snapshot"] = json!(true);
            }
            let reply: Value = target
                .http
                .post(format!("{}/api/realtime/subscribe", node.base))
                .bearer_auth(token)
                .json(&body)
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
            if live {
                assert_eq!(reply["seq"], 0, "a live subscription starts at 0: {reply}");
                assert!(reply["records"].is_array(), "a snapshot: {reply}");
            }
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
            live,
        },
        master_key.as_ref(),
    )
    .await;
    clients.begin(0);
    let clocks = target.clocks();
    let started = Instant::now();
    let mut acknowledged = 0;
    for seq in 0..writes {
        let owner = format!("user{}", seq % users);
        let record = json!({ "seq": seq, "sent_ns": now_ns(), "owner": owner, "kind": "task" });
        if timed_write(target, collection, seq, &record)
            .await
            .is_some()
        {
            acknowledged += 1;
        } else {
            eprintln!("a write failed");
        }
    }
    let writing = started.elapsed().as_secs_f64();
    let expected = (writes * SUBSCRIPTIONS_PER_USER) as u64;
    clients.wait(expected, PATIENCE).await;
    let run = finish(&clocks, clients.tally(), acknowledged);
    let mut report = Report::new(
        scenario,
        users * SUBSCRIPTIONS_PER_USER,
        expected,
        run,
        if live {
            "writes one at a time, durable; live (seq, history)"
        } else {
            "writes one at a time, durable"
        },
    );
    report.durable_writes_per_sec = Some(acknowledged as f64 / writing);
    report
}

/// Concurrent writers of the `writes` scenario (as `wrk -c64` was run before it existed).
const WRITERS: usize = 64;

/// The longest a `writes` run takes; it stops early past it.
const WRITE_RUN: Duration = Duration::from_secs(20);

/// `total` record creates on `posts` (no subscriber) by 64 concurrent writers, round-robin
/// over the nodes: acknowledged (durable) writes/s, and the acknowledgement's latency.
async fn durable_writes(target: &Target, total: usize) -> Report {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies_us = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let clocks = target.clocks();
    let started = Instant::now();
    let workers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (target, next, failed, latencies_us) = (
                target.clone(),
                next.clone(),
                failed.clone(),
                latencies_us.clone(),
            );
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if k >= total || started.elapsed() > WRITE_RUN {
                        break;
                    }
                    let record = json!({ "title": format!("write {k}"), "n": k });
                    match timed_write(&target, "posts", k, &record).await {
                        Some(latency_us) => mine.push(latency_us),
                        None => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies_us
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(mine);
            })
        })
        .collect();
    futures::future::join_all(workers).await;
    let seconds = started.elapsed().as_secs_f64();
    let latencies_us = std::mem::take(&mut *latencies_us.lock().unwrap_or_else(|e| e.into_inner()));
    let acknowledged = latencies_us.len() as u64;
    let tally = Tally {
        errors: failed.load(Ordering::Relaxed),
        ..Tally::default()
    };
    let run = Run {
        tally,
        seconds,
        events: acknowledged,
        usage: clocks.stop(),
    };
    let cut = (acknowledged + run.tally.errors) < total as u64;
    let mut report = Report::new("writes", total, 0, run, "");
    [report.p50_ms, report.p90_ms, report.p99_ms, report.p999_ms] = percentiles(latencies_us);
    report.durable_writes_per_sec = Some(acknowledged as f64 / seconds);
    report.note = format!(
        "{WRITERS} concurrent writers, latency = acknowledgement{}",
        if cut {
            format!(", stopped at {WRITE_RUN:?}")
        } else {
            String::new()
        }
    );
    report
}

async fn idle(target: &Target, n: usize) -> Report {
    let before = nodes_rss(&target.nodes);
    let clients = sockets(target, n, |_| Vec::new(), |_, _| None, once, None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = nodes_rss(&target.nodes);
    let per = before
        .zip(after)
        .map(|(b, a)| a.saturating_sub(b) as f64 / clients.len() as f64);
    let run = Run {
        tally: Tally::default(),
        seconds: 1.0,
        events: 0,
        usage: deployment::Usage {
            rss: after,
            ..Default::default()
        },
    };
    let mut report = Report::new("idle", n, 0, run, "");
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
            let (target, done) = (target.clone(), done.clone());
            tokio::spawn(async move {
                for i in (w..total).step_by(64) {
                    let body = json!({ "collection": "posts", "filter": format!("author = 'u{}'", i % 10_000) });
                    let url = format!("{}/api/realtime/subscribe", target.node(i).base);
                    if let Ok(response) = target.http.post(url).json(&body).send().await
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
        events: 0,
        usage: deployment::Usage::default(),
    };
    let mut report = Report::new("subscribe", total, total as u64, run, "");
    report.delivered = ok;
    report.missing = total as u64 - ok;
    report.deliveries_per_sec = ok as f64 / seconds;
    report.note = "durable subscribes/s, 64 concurrent clients".into();
    report
}

/// The `snapshot` scenario's records are in this many buckets; its filter matches one.
const BUCKETS: usize = 10;

/// Concurrent writers filling the `snapshot` scenario's collection.
const FILLERS: usize = 32;

/// The page of the `snapshot` scenario's snapshots and lists.
const PAGE: usize = 100;

/// How long the nodes may take to list every record written (a cluster's catch up with Redis).
const CAUGHT_UP: Duration = Duration::from_secs(60);

/// The timed requests of the `snapshot` scenario, in the order of its reports.
#[derive(Clone, Copy)]
enum Query {
    /// `GET /api/collections/posts/records?filter=…&per_page=100`: the baseline.
    List,
    /// `POST /api/realtime/subscribe` with the filter.
    Subscribe,
    /// The same with `"snapshot": true, "per_page": 100`.
    Snapshot,
}

impl Query {
    const ALL: [Query; 3] = [Query::List, Query::Subscribe, Query::Snapshot];

    fn scenario(self) -> &'static str {
        match self {
            Query::List => "snapshot-list",
            Query::Subscribe => "snapshot-sub",
            Query::Snapshot => "snapshot",
        }
    }

    fn note(self) -> &'static str {
        match self {
            Query::List => "GET records, filter 10%, per_page 100; requests/s one at a time",
            Query::Subscribe => "subscribe, filter 10%, no snapshot; requests/s one at a time",
            Query::Snapshot => {
                "subscribe, filter 10%, snapshot per_page 100; requests/s one at a time"
            }
        }
    }

    /// Sends it to `node` and checks the answer (`matching` records match the filter); its
    /// latency (send to the whole body), or what was wrong.
    async fn time(
        self,
        target: &Target,
        node: &Node,
        filter: &str,
        matching: usize,
    ) -> Result<u32, String> {
        let request = match self {
            Query::List => target
                .http
                .get(format!("{}/api/collections/posts/records", node.base))
                .query(&[("filter", filter), ("per_page", &PAGE.to_string())]),
            Query::Subscribe => target
                .http
                .post(format!("{}/api/realtime/subscribe", node.base))
                .json(&json!({ "collection": "posts", "filter": filter })),
            Query::Snapshot => target
                .http
                .post(format!("{}/api/realtime/subscribe", node.base))
                .json(&json!({ "collection": "posts", "filter": filter, "snapshot": true, "per_page": PAGE })),
        };
        let sent = Instant::now();
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let took = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        let reply: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let page = matching.min(PAGE);
        let records = |key: &str| reply[key].as_array().map_or(0, Vec::len);
        let right = match self {
            Query::List => records("data") == page && reply["meta"]["total"] == json!(matching),
            Query::Subscribe => reply["pusher_channel"].is_string() && reply["seq"].is_null(),
            Query::Snapshot => records("records") == page && reply["seq"] == json!(0),
        };
        if right {
            Ok(took)
        } else {
            let mut reply = reply.to_string();
            reply.truncate(300);
            Err(format!("an unexpected answer: {reply}"))
        }
    }
}

/// The `snapshot` scenario: `records` records on `posts` (writes and requests round-robin over
/// the nodes), then `requests` of each [`Query`], interleaved, one at a time.
async fn snapshot(target: &Target, records: usize, requests: usize) -> Result<Vec<Report>, String> {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..FILLERS)
        .map(|_| {
            let (target, next, failed) = (target.clone(), next.clone(), failed.clone());
            tokio::spawn(async move {
                let body = "x".repeat(100);
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if k >= records {
                        break;
                    }
                    let record =
                        json!({ "title": format!("record {k}"), "bucket": k % BUCKETS, "body": body });
                    if timed_write(&target, "posts", k, &record).await.is_none() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    futures::future::join_all(workers).await;
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} of {records} record writes failed"));
    }
    eprintln!(
        "  {records} records written in {:.1} s ({FILLERS} writers)",
        started.elapsed().as_secs_f64()
    );
    // Every node lists them all before anything is timed.
    for node in target.nodes.iter() {
        let deadline = Instant::now() + CAUGHT_UP;
        loop {
            let total = async {
                let reply: Value = target
                    .http
                    .get(format!("{}/api/collections/posts/records", node.base))
                    .query(&[("per_page", "1")])
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                reply["meta"]["total"].as_u64()
            }
            .await;
            if total == Some(records as u64) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} lists {total:?} records of {records} after {CAUGHT_UP:?}",
                    node.base
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let bucket = 3;
    let filter = format!("bucket = {bucket}");
    let matching = (0..records).filter(|k| k % BUCKETS == bucket).count();
    let mut latencies_us: [Vec<u32>; 3] = Default::default();
    let mut errors = [0u64; 3];
    for i in 0..requests {
        // Each round in another order, so that none always follows the same one.
        for j in 0..Query::ALL.len() {
            let kind = (i + j) % Query::ALL.len();
            let query = Query::ALL[kind];
            match query.time(target, target.node(i), &filter, matching).await {
                Ok(us) => latencies_us[kind].push(us),
                Err(error) => {
                    if errors[kind] == 0 {
                        eprintln!("!!! {}: {error}", query.scenario());
                    }
                    errors[kind] += 1;
                }
            }
        }
    }
    // What a snapshot does to the collection's writes: a write alone, then one sent while a
    // snapshot is being taken (`STALL_PROBE` after it was sent), alternated. Their records
    // are in no bucket the filter matches.
    let mut writes_us: [Vec<u32>; 2] = Default::default();
    let mut write_errors = [0u64; 2];
    for i in 0..requests.min(WRITE_PROBES) {
        for (during, latencies_us) in writes_us.iter_mut().enumerate() {
            let snapshot = (during == 1).then(|| {
                let (target, node, filter) =
                    (target.clone(), target.node(i).clone(), filter.clone());
                tokio::spawn(async move {
                    Query::Snapshot
                        .time(&target, &node, &filter, matching)
                        .await
                })
            });
            if snapshot.is_some() {
                tokio::time::sleep(STALL_PROBE).await;
            }
            let record = json!({ "title": "a write", "bucket": BUCKETS });
            match timed_write(target, "posts", i, &record).await {
                Some(latency_us) => latencies_us.push(latency_us),
                None => write_errors[during] += 1,
            }
            if let Some(snapshot) = snapshot {
                let _ = snapshot.await;
            }
        }
    }
    let report = |scenario: &str, note: &str, latencies_us: Vec<u32>, errors: u64| {
        let seconds = latencies_us.iter().map(|&us| f64::from(us) / 1e6).sum();
        let run = Run {
            tally: Tally {
                latencies_us,
                errors,
                ..Tally::default()
            },
            seconds,
            events: 0,
            usage: deployment::Usage::default(),
        };
        Report::new(scenario, records, 0, run, note)
    };
    let mut reports: Vec<Report> = Query::ALL
        .into_iter()
        .zip(latencies_us)
        .zip(errors)
        .map(|((query, latencies_us), errors)| {
            report(query.scenario(), query.note(), latencies_us, errors)
        })
        .collect();
    let [alone, during] = writes_us;
    reports.push(report(
        "snap-write",
        "a durable write alone; latency = acknowledgement",
        alone,
        write_errors[0],
    ));
    reports.push(report(
        "snap-write-in",
        "a durable write sent 5 ms into a snapshot; latency = acknowledgement",
        during,
        write_errors[1],
    ));
    Ok(reports)
}

/// Writes timed alone and during a snapshot (`snapshot` scenario), at most.
const WRITE_PROBES: usize = 20;

/// A durable write of `record` to `collection` on node `node` (round-robin): its
/// acknowledgement's latency in µs, or `None` when it failed.
async fn timed_write(
    target: &Target,
    collection: &str,
    node: usize,
    record: &serde_json::Value,
) -> Option<u32> {
    let sent = Instant::now();
    let response = target
        .http
        .post(format!(
            "{}/api/collections/{collection}/records",
            target.node(node).base
        ))
        .json(record)
        .send()
        .await;
    matches!(&response, Ok(r) if r.status().is_success())
        .then(|| u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX))
}

/// How long after a snapshot request a write is sent, to land while it is being taken.
const STALL_PROBE: Duration = Duration::from_millis(5);

/// Scenarios printed against a baseline scenario that ran before them in the same invocation,
/// at the same size on the same deployment: a feature's cost against the same load without it.
const BASELINES: [(&str, &str); 7] = [
    ("velo-live", "velo"),
    ("velo-encrypted", "velo"),
    ("velo-hooked", "velo"),
    ("velo-redacted", "velo"),
    ("snapshot", "snapshot-list"),
    ("snapshot", "snapshot-sub"),
    ("snap-write-in", "snap-write"),
];

/// The ratios of `report`, or of the run it is the baseline of, against the other: when the
/// latest earlier run of either, at its size on its deployment, is the other.
fn against_baselines(report: &Report, earlier: &[Report]) -> Vec<String> {
    let mut shown = Vec::new();
    for (this, base) in BASELINES {
        let other = match report.scenario.as_str() {
            scenario if scenario == this => base,
            scenario if scenario == base => this,
            _ => continue,
        };
        let latest = earlier.iter().rev().find(|r| {
            r.n == report.n && r.nodes == report.nodes && (r.scenario == this || r.scenario == base)
        });
        if let Some(latest) = latest.filter(|latest| latest.scenario == other) {
            shown.push(if report.scenario == this {
                ratios(report, latest)
            } else {
                ratios(latest, report)
            });
        }
    }
    shown
}

/// The `realtime_broadcast` hook a scenario's server runs with (none for most).
fn broadcast_hook(scenario: &str) -> Option<&'static str> {
    match scenario {
        // What a per-user check costs when it lets the event go as it is.
        "velo-hooked" => Some(
            "fn realtime_broadcast(event) {\n\
             \x20   if event.auth.id != event.record.owner { return false; }\n\
             }\n",
        ),
        // Per-user redaction on every delivery: the record changed, serialized per subscriber.
        "velo-redacted" => Some(
            "fn realtime_broadcast(event) {\n\
             \x20   let record = event.record;\n\
             \x20   record.remove(\"kind\");\n\
             \x20   record\n\
             }\n",
        ),
        _ => None,
    }
}

/// The server CPU a delivery gains with a scenario's hook, against the latest `velo` run of
/// the same size on the same deployment.
fn hook_cost(run: &Report, earlier: &[Report]) -> Option<String> {
    broadcast_hook(&run.scenario)?;
    let plain = earlier
        .iter()
        .rev()
        .find(|other| other.scenario == "velo" && other.n == run.n && other.nodes == run.nodes)?;
    let (hooked, plain) = run
        .server_cpu_us_per_delivery
        .zip(plain.server_cpu_us_per_delivery)?;
    Some(format!(
        "{} / velo n={} {}: server CPU/delivery {:+.2} µs",
        run.scenario,
        run.n,
        run.nodes,
        hooked - plain
    ))
}

/// Every report of an invocation, and each later deployment's runs against the first's.
#[derive(Default)]
struct Results {
    reports: Vec<Report>,
    ratios: Vec<String>,
}

const SCENARIOS: [&str; 11] = [
    "broadcast",
    "channels",
    "velo",
    "velo-live",
    "velo-encrypted",
    "velo-hooked",
    "velo-redacted",
    "idle",
    "subscribe",
    "writes",
    "snapshot",
];

/// Runs every scenario at every size on every deployment, printing each row (and its ratios
/// against the first deployment) as it comes.
async fn run_all(options: &Options, results: &mut Results, file_limit: u64) -> Result<(), String> {
    let settings = NodeSettings {
        binary: options
            .server
            .as_deref()
            .unwrap_or(env!("CARGO_BIN_EXE_velo-realtime")),
        app_id: &options.app_id,
        key: &options.key,
        secret: &options.secret,
        jwt_secret: &options.jwt_secret,
        encryption_master_key: &options.encryption_master_key,
    };
    for scenario in &options.scenario {
        for &n in &options.n {
            let sockets = if matches!(scenario.as_str(), "subscribe" | "writes" | "snapshot") {
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
            let mut baseline: Option<Vec<Report>> = None;
            for &nodes in &options.nodes {
                // Our own deployment starts fresh for every run, so one run's memory and state
                // do not colour the next (RSS deltas above all).
                let deployment = match &options.target {
                    Some(base) => Deployment::running(base, options.pid)?,
                    None => Deployment::start(&settings, nodes, broadcast_hook(scenario))?,
                };
                let target = Target {
                    nodes: deployment.nodes.clone().into(),
                    redis: deployment.redis.clone(),
                    app: AppCredentials::new(&options.app_id, &options.key, &options.secret),
                    key: options.key.clone(),
                    http: reqwest::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .map_err(|error| format!("no HTTP client: {error}"))?,
                };
                let mut reports = match scenario.as_str() {
                    "broadcast" => broadcast(&target, n, options.events, options.pace).await?,
                    "channels" => channels(&target, n, options.events, options.pace).await?,
                    "velo" => vec![velo(&target, options, n, options.writes, Flavor::Plain).await],
                    "velo-live" => {
                        vec![velo(&target, options, n, options.writes, Flavor::Live).await]
                    }
                    "velo-encrypted" => {
                        vec![velo(&target, options, n, options.writes, Flavor::Encrypted).await]
                    }
                    "velo-hooked" => {
                        vec![velo(&target, options, n, options.writes, Flavor::Hooked).await]
                    }
                    "velo-redacted" => {
                        vec![velo(&target, options, n, options.writes, Flavor::Redacted).await]
                    }
                    "idle" => vec![idle(&target, n).await],
                    "subscribe" => vec![subscribe_rate(&target, n * 10).await],
                    "writes" => vec![durable_writes(&target, n * 10).await],
                    "snapshot" => snapshot(&target, n, options.requests).await?,
                    other => unreachable!("scenarios are checked before a run: {other}"),
                };
                for report in &mut reports {
                    report.nodes = match &options.target {
                        Some(_) => "target".into(),
                        None => nodes.to_string(),
                    };
                    println!("{}", line(report));
                    for ratio in against_baselines(report, &results.reports) {
                        println!("  {ratio}");
                        results.ratios.push(ratio);
                    }
                    if let Some(cost) = hook_cost(report, &results.reports) {
                        println!("  {cost}");
                        results.ratios.push(cost);
                    }
                    results.reports.push(report.clone());
                }
                match &baseline {
                    None => baseline = Some(reports),
                    Some(first) => {
                        for (report, first) in reports.iter().zip(first) {
                            let ratio = ratios(report, first);
                            println!("  {ratio}");
                            results.ratios.push(ratio);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// A whole invocation: every run, then the summary, the ratios, the JSON and the plot (also
/// of the runs done when one fails or Ctrl-C stops it; what it started is stopped either way).
fn measure(options: &Options) -> Result<Vec<Report>, String> {
    if let Some(unknown) = options
        .scenario
        .iter()
        .find(|scenario| !SCENARIOS.contains(&scenario.as_str()))
    {
        return Err(format!(
            "unknown scenario `{unknown}`; the scenarios are {}",
            SCENARIOS.join(", ")
        ));
    }
    if options.target.is_some() && options.nodes != [Nodes::Single] {
        return Err(
            "--nodes starts nodes of our own; with --target the generator measures the \
                    server that runs there"
                .into(),
        );
    }
    if options.nodes.iter().any(|nodes| *nodes != Nodes::Single) {
        println!(
            "cluster runs: for each run a fresh redis-server (temp dir, unix socket, appendonly \
             yes, appendfsync always: the zero-loss settings we recommend) and its nodes, each \
             with its own data dir and VELO_NODE_ID, all on 127.0.0.1"
        );
    }
    let file_limit = raise_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build()
        .map_err(|error| format!("no runtime: {error}"))?;
    let mut results = Results::default();
    println!("{HEADER}");
    let outcome = runtime.block_on(async {
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => Err("interrupted; what it started is stopped".to_owned()),
            outcome = run_all(options, &mut results, file_limit) => outcome,
        }
    });
    println!("\nsummary\n{HEADER}");
    results
        .reports
        .iter()
        .for_each(|report| println!("{}", line(report)));
    if !results.ratios.is_empty() {
        println!(
            "\nratios (against {}, and against baseline scenarios)",
            options.nodes[0]
        );
        results.ratios.iter().for_each(|ratio| println!("{ratio}"));
    }
    plot(&results.reports, &options.plot);
    let json = serde_json::to_string_pretty(&results.reports).expect("reports serialize");
    std::fs::write(&options.json, json)
        .map_err(|error| format!("results not written to {}: {error}", options.json))?;
    println!("results: {}", options.json);
    outcome.map(|()| results.reports)
}

/// `cargo test`'s check of the multi-node path: a few sockets, triggers and writes on one node
/// and on two nodes sharing a redis-server, every count exact, every live `seq` in order, and a
/// few snapshots of a small collection.
fn check_nodes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let json = dir.path().join("loadgen.json");
    let svg = dir.path().join("loadgen.svg");
    let options = Options::parse_from([
        "loadgen",
        "--scenario=broadcast,velo,velo-live,writes,snapshot",
        "--requests=3",
        "--n=6",
        "--events=10",
        "--pace=200",
        "--writes=12",
        "--nodes=1,2",
        &format!("--json={}", json.display()),
        &format!("--plot={}", svg.display()),
    ]);
    let reports = measure(&options).unwrap_or_else(|error| panic!("loadgen --nodes 1,2: {error}"));
    assert_eq!(
        reports.len(),
        18,
        "five scenarios (nine reports) on two deployments"
    );
    for report in &reports {
        let faults = report.missing
            + report.duplicates
            + report.misdelivered
            + report.errors
            + report.seq_violations;
        assert_eq!(faults, 0, "{}", line(report));
        if report.scenario.starts_with("snap") {
            assert_eq!(report.delivered, 3, "{}", line(report));
            continue;
        }
        assert_eq!(
            report.redis_cpu_us_per_event.is_some(),
            report.nodes == "2 redis",
            "{}",
            line(report)
        );
    }
    let writes = reports
        .iter()
        .filter(|r| r.durable_writes_per_sec.is_some());
    assert_eq!(
        writes.count(),
        6,
        "velo, velo-live and writes on both deployments"
    );
}

fn main() -> ExitCode {
    let options = Options::parse();
    if !options.bench {
        // `cargo test` runs this harness-less bench without `--bench`: check the client and
        // the multi-node path.
        client::self_check();
        check_nodes();
        println!(
            "loadgen: client and multi-node checks passed; run with `cargo bench --bench loadgen [-- options]`"
        );
        return ExitCode::SUCCESS;
    }
    match measure(&options) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}
