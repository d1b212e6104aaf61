//! Live queries kept by the real pusher-js client (`tests/clients/node/live.mjs`) while this
//! test writes: for random filters, random list rules reading `@request.auth.*` and per-user
//! rules, each client's list (snapshot, then the numbered events, fetching what it missed) ends
//! exactly equal to what the list API answers the same user with the same filter; with sockets
//! cut mid-run, recovering from the history or, past it, from a new snapshot; and never carrying
//! a field of a record its user may not see.
//!
//! The filters, rules, claims and field values come from the generators the expression
//! language's property tests use; the seed is printed, and `LIVE_SEED=<n>` replays one.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::generators::{claims, expression, record};
use support::{ADMIN, APP_KEY, Server, clients};

/// `owned`'s list rule lets each user see their own records; each record carries its owner's
/// secret, which no one else may ever be sent.
const OWNED: &str = r#"
[[collections]]
name = "pub"
api_rules = { list = "", view = "" }

[[collections]]
name = "owned"
api_rules = { list = "owner = @request.auth.id", view = "owner = @request.auth.id" }
"#;

/// Every guest here is 127.0.0.1: one client to the per-client limit of subscribe requests
/// per second, which the guests' subscriptions (and the probes choosing them) would pass.
const UNLIMITED: &[(&str, &str)] = &[("VELO_SUBSCRIBE_RATE", "0")];

const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// Random draws from the shared generators, all from one seed.
struct Draw(TestRunner);

impl Draw {
    fn new(test: &str) -> Draw {
        let seed: u64 = std::env::var("LIVE_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |now| now.as_nanos() as u64)
            });
        println!("{test}: LIVE_SEED={seed}");
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Draw(TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
        ))
    }

    fn one<S: Strategy>(&mut self, strategy: S) -> S::Value {
        strategy.new_tree(&mut self.0).expect("a value").current()
    }

    /// A filter as text, or none (one time in ten).
    fn filter(&mut self) -> Option<String> {
        self.one(proptest::option::weighted(0.9, expression()))
            .map(|expr| expr.to_string())
    }

    /// Random `a`, `b`, `c`, `e` fields, those not drawn null (so an update replaces them all).
    fn fields(&mut self) -> Value {
        let mut fields = self.one(record());
        for name in ["a", "b", "c", "e"] {
            fields
                .as_object_mut()
                .unwrap()
                .entry(name)
                .or_insert(Value::Null);
        }
        fields
    }

    /// Fields of an `owned` record: random ones, an owner and the owner's secret.
    fn owned_fields(&mut self) -> Value {
        let owner = USERS[self.one(0..USERS.len())];
        let mut fields = self.fields();
        fields["owner"] = json!(owner);
        fields["secret"] = json!(secret_of(owner));
        fields
    }
}

fn secret_of(user: &str) -> String {
    format!("secret-of-{user}")
}

/// What a subscriber must never be sent: every other user's secret.
fn others_secrets(user: &str) -> Vec<String> {
    USERS
        .iter()
        .filter(|other| **other != user)
        .map(|other| secret_of(other))
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Create(String, Value),
    Update(String, Value),
    Delete(String),
}

/// `count` writes on the records `ids` (one writer's own), creating those that do not exist,
/// updating or deleting those that do.
fn plan(draw: &mut Draw, ids: &[String], count: usize, owned: bool) -> Vec<Op> {
    let mut exists = vec![false; ids.len()];
    (0..count)
        .map(|_| {
            let at = draw.one(0..ids.len());
            let id = ids[at].clone();
            let fields = if owned {
                draw.owned_fields()
            } else {
                draw.fields()
            };
            if !exists[at] {
                exists[at] = true;
                Op::Create(id, fields)
            } else if draw.one(0..4) == 0 {
                exists[at] = false;
                Op::Delete(id)
            } else {
                Op::Update(id, fields)
            }
        })
        .collect()
}

fn ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}{n:02}")).collect()
}

/// `count` writes on records other writers write too, at the same time: each a create, an
/// update or a delete, which may find the record already there, or gone.
fn racing_plan(draw: &mut Draw, ids: &[String], count: usize, owned: bool) -> Vec<Op> {
    (0..count)
        .map(|_| {
            let id = ids[draw.one(0..ids.len())].clone();
            let fields = if owned {
                draw.owned_fields()
            } else {
                draw.fields()
            };
            match draw.one(0..5) {
                0 | 1 => Op::Create(id, fields),
                2 | 3 => Op::Update(id, fields),
                _ => Op::Delete(id),
            }
        })
        .collect()
}

/// One writer: its collection and its writes, in order.
struct Writer {
    collection: &'static str,
    ops: Vec<Op>,
    /// Whether other writers write the same records (a write may find its record there, or
    /// gone).
    racing: bool,
}

impl Writer {
    /// The writes of one third of the run (`part` 0, 1 or 2).
    fn part(&self, part: usize) -> &[Op] {
        let size = self.ops.len().div_ceil(3);
        let start = (part * size).min(self.ops.len());
        &self.ops[start..(start + size).min(self.ops.len())]
    }
}

async fn write(server: &Server, collection: &str, ops: &[Op], racing: bool) {
    let records = format!("/api/collections/{collection}/records");
    for op in ops {
        let (reply, expected) = match op {
            Op::Create(id, fields) => {
                let mut body = fields.clone();
                body["id"] = json!(id);
                let reply = server
                    .call(Method::POST, &records, Some(ADMIN), Some(body))
                    .await;
                (reply, StatusCode::CREATED)
            }
            Op::Update(id, fields) => {
                let path = format!("{records}/{id}");
                let reply = server
                    .call(Method::PATCH, &path, Some(ADMIN), Some(fields.clone()))
                    .await;
                (reply, StatusCode::OK)
            }
            Op::Delete(id) => {
                let path = format!("{records}/{id}");
                let reply = server.call(Method::DELETE, &path, Some(ADMIN), None).await;
                (reply, StatusCode::NO_CONTENT)
            }
        };
        let lost_a_race = racing
            && match op {
                Op::Create(..) => reply.status == StatusCode::CONFLICT,
                Op::Update(..) | Op::Delete(_) => reply.status == StatusCode::NOT_FOUND,
            };
        if !lost_a_race {
            assert_eq!(reply.status, expected, "{op:?}: {:?}", reply.body);
        }
    }
}

/// The writers' `part` of the run, all at once.
async fn write_part(server: &Server, writers: &[Writer], part: usize) {
    join_all(
        writers
            .iter()
            .map(|writer| write(server, writer.collection, writer.part(part), writer.racing)),
    )
    .await;
}

/// One live list kept by its own pusher-js client.
fn subscriber(
    name: &str,
    token: Option<String>,
    collection: &str,
    filter: Option<String>,
    drops: bool,
    forbidden: Vec<String>,
) -> Value {
    json!({"name": name, "token": token, "collection": collection, "filter": filter,
           "drops": drops, "forbidden": forbidden, "late": false, "slowJoin": false})
}

/// One whose socket joins its channel again 400 ms after its connection is back (its channel
/// authorization is slow): what happens meanwhile must be fetched once it has joined, not
/// when the connection is back.
fn slow_join(mut subscriber: Value) -> Value {
    subscriber["slowJoin"] = json!(true);
    subscriber
}

/// One that subscribes (snapshot and all) while the second part of the writes goes on.
fn late(mut subscriber: Value) -> Value {
    subscriber["late"] = json!(true);
    subscriber
}

/// How many records the list API shows this user through `filter`; `None` when it refuses the
/// filter.
async fn listed(
    server: &Server,
    token: Option<&str>,
    collection: &str,
    filter: Option<&str>,
) -> Option<usize> {
    let mut request = server
        .request(
            Method::GET,
            &format!("/api/collections/{collection}/records"),
        )
        .query(&[("per_page", "500")]);
    if let Some(filter) = filter {
        request = request.query(&[("filter", filter)]);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let reply = server.raw(request).await;
    (reply.status == StatusCode::OK).then(|| reply.body["data"].as_array().unwrap().len())
}

/// A random filter the list API takes from this user; one that shows some but not all of what
/// the user sees when one of 30 draws does (random filters often match all or nothing).
async fn valid_filter(
    server: &Server,
    draw: &mut Draw,
    token: Option<&str>,
    collection: &str,
) -> Option<String> {
    let seen = listed(server, token, collection, None)
        .await
        .expect("an unfiltered list");
    let mut fallback = None;
    for _ in 0..30 {
        let filter = draw.filter();
        match listed(server, token, collection, filter.as_deref()).await {
            Some(shown) if shown > 0 && shown < seen => return filter,
            Some(_) if fallback.is_none() => fallback = Some(filter),
            _ => {}
        }
    }
    fallback.flatten()
}

/// Records `s00`… with random fields, there before anyone subscribes (in the snapshots, and
/// what filters are chosen by); the writers leave them alone.
async fn prefill(server: &Server, draw: &mut Draw, collection: &'static str, owned: bool) {
    let ops: Vec<Op> = ids("s", 10)
        .into_iter()
        .map(|id| {
            let fields = if owned {
                draw.owned_fields()
            } else {
                draw.fields()
            };
            Op::Create(id, fields)
        })
        .collect();
    write(server, collection, &ops, false).await;
}

/// Whether a guest may subscribe to `collection` (not when its rule needs a user: 401).
async fn admits_guests(server: &Server, collection: &str) -> bool {
    let reply = server.subscribe(None, collection, None).await;
    if reply.status != StatusCode::OK {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);
        return false;
    }
    let channel = reply.body["channel_name"].as_str().unwrap();
    assert_eq!(
        server.unsubscribe(None, channel).await.status,
        StatusCode::NO_CONTENT
    );
    true
}

/// A user of a collection with a random rule: a guest (when `guests`) or random claims, preferring (within 10
/// draws) one the rule shows something to.
async fn ruled_user(
    server: &Server,
    draw: &mut Draw,
    collection: &str,
    sub: &str,
    guests: bool,
) -> Option<String> {
    let mut fallback = None;
    for _ in 0..10 {
        let mut claims = draw.one(claims());
        if claims.is_none() && (!guests || !admits_guests(server, collection).await) {
            claims = Some(json!({}));
        }
        let token = claims.map(|mut claims| {
            claims.as_object_mut().unwrap().remove("sub");
            server.token(sub, claims, Some(3600))
        });
        if listed(server, token.as_deref(), collection, None).await > Some(0) {
            return token;
        }
        fallback.get_or_insert(token);
    }
    fallback.flatten()
}

/// A prefilled collection whose list rule is random: the first of 10 draws that shows some
/// records to at least two of its `users` (each a guest, when `guests`, or holding random
/// claims, with a random filter).
async fn ruled_collection(
    server: &Server,
    draw: &mut Draw,
    name: &'static str,
    users: usize,
    guests: bool,
) -> Vec<Value> {
    let created = server
        .create_collection(json!({"name": name, "api_rules": {"list": "", "view": ""}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    prefill(server, draw, name, false).await;
    let mut tokens = Vec::new();
    for attempt in 0..10 {
        let rule = draw.one(expression()).to_string();
        let changed = server
            .call(
                Method::PATCH,
                &format!("/api/collections/{name}"),
                Some(ADMIN),
                Some(json!({"api_rules": {"list": rule, "view": rule}})),
            )
            .await;
        if changed.status != StatusCode::OK {
            continue;
        }
        tokens.clear();
        let mut seeing = 0;
        for n in 0..users {
            let token = ruled_user(server, draw, name, &format!("{name}-user{n}"), guests).await;
            if listed(server, token.as_deref(), name, None).await > Some(0) {
                seeing += 1;
            }
            tokens.push(token);
        }
        if seeing >= 2 || attempt == 9 {
            println!("{name}: list rule {rule}, {seeing} of {users} users see records");
            break;
        }
    }
    assert_eq!(tokens.len(), users, "no random rule was taken in 10 draws");
    let mut subscribers = Vec::new();
    for (n, token) in tokens.into_iter().enumerate() {
        let filter = valid_filter(server, draw, token.as_deref(), name).await;
        subscribers.push(subscriber(
            &format!("{name}-user{n}"),
            token,
            name,
            filter,
            false,
            vec![],
        ));
    }
    subscribers
}

/// The Node program keeping the live lists.
struct LiveClients {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
}

impl LiveClients {
    fn start(server: &Server, subscribers: &[Value]) -> LiveClients {
        let dir = clients::with_npm_packages("node");
        let mut child = Command::new("node")
            .arg(dir.join("live.mjs"))
            .current_dir(&dir)
            .env("VELO_URL", &server.base)
            .env("APP_KEY", APP_KEY)
            .env(
                "LIVE_SPEC",
                json!({ "subscribers": subscribers }).to_string(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        LiveClients {
            child,
            stdin,
            lines,
            output: Vec::new(),
        }
    }

    /// Waits (up to `within`) for the program to print `wanted`.
    fn wait_for(&mut self, wanted: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line == wanted;
                    self.output.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "live.mjs did not print {wanted:?} within {within:?}:\n{}",
                    self.output.join("\n")
                ),
            }
        }
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{command}").expect("live.mjs reads its commands");
    }

    /// Tells the program the writes are over; its results once every list converged (each
    /// within 20 s), or a panic with all it printed.
    fn results(mut self) -> Vec<Value> {
        self.send("done");
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.output.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("live.mjs is still running:\n{}", self.output.join("\n"))
                }
            }
        }
        let status = self.child.wait().expect("node exits");
        let output = self.output.join("\n");
        println!("{output}");
        assert!(status.success(), "live.mjs failed ({status}):\n{output}");
        self.output
            .iter()
            .filter_map(|line| line.strip_prefix("result "))
            .map(|result| serde_json::from_str(result).expect("a JSON result"))
            .collect()
    }
}

impl Drop for LiveClients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the writers in three parts while the clients keep their lists: the subscribers that
/// drop are offline during the second part (at least 2.5 s), the late ones subscribe as it
/// begins; then all converge. Their results.
async fn run(server: &Server, subscribers: &[Value], writers: &[Writer]) -> Vec<Value> {
    let results = run_changing_rule(server, subscribers, writers, None).await;
    for result in &results {
        assert_eq!(result["ended"], 0, "{result}");
    }
    results
}

/// [`run`], and 0.3 s into the second part, `collection`'s list and view rules become `rule`.
async fn run_changing_rule(
    server: &Server,
    subscribers: &[Value],
    writers: &[Writer],
    change: Option<(&str, &str)>,
) -> Vec<Value> {
    let started = Instant::now();
    let mut clients = LiveClients::start(server, subscribers);
    clients.wait_for("ready", Duration::from_secs(30));
    write_part(server, writers, 0).await;
    clients.send("drop");
    clients.wait_for("dropped", Duration::from_secs(10));
    let offline = Instant::now();
    let changing = async {
        if let Some((collection, rule)) = change {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let changed = server
                .call(
                    Method::PATCH,
                    &format!("/api/collections/{collection}"),
                    Some(ADMIN),
                    Some(json!({"api_rules": {"list": rule, "view": rule}})),
                )
                .await;
            assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
        }
    };
    futures::join!(write_part(server, writers, 1), changing);
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(offline.elapsed())).await;
    clients.send("reconnect");
    clients.wait_for("reconnected", Duration::from_secs(10));
    write_part(server, writers, 2).await;
    let writes: usize = writers.iter().map(|writer| writer.ops.len()).sum();
    println!(
        "{writes} writes in {:?}, the second part {:?} offline",
        started.elapsed(),
        offline.elapsed()
    );
    let results = clients.results();
    println!("converged after {:?}", started.elapsed());
    assert_eq!(results.len(), subscribers.len());
    for result in &results {
        assert_eq!(result["errors"], json!([]), "{result}");
    }
    results
}

fn result<'a>(results: &'a [Value], name: &str) -> &'a Value {
    results
        .iter()
        .find(|result| result["name"] == name)
        .unwrap_or_else(|| panic!("no result for {name}"))
}

/// Guests with random filters on a public collection, users on a per-user rule, and users
/// with random claims on two collections with random list rules, all at once; some taking
/// their snapshot while the writes go on.
#[tokio::test]
async fn live_lists_converge_to_the_list_for_random_filters_rules_and_users() {
    let server = Server::start_with_env(OWNED, 300, UNLIMITED);
    let mut draw = Draw::new("convergence");
    prefill(&server, &mut draw, "pub", false).await;
    prefill(&server, &mut draw, "owned", true).await;
    let mut subscribers = vec![subscriber("guest", None, "pub", None, false, vec![])];
    for n in 0..6 {
        let filter = valid_filter(&server, &mut draw, None, "pub").await;
        subscribers.push(subscriber(
            &format!("guest{n}"),
            None,
            "pub",
            filter,
            false,
            vec![],
        ));
    }
    for user in USERS {
        let token = server.token(user, json!({}), Some(3600));
        let filter = if user == "bob" {
            None
        } else {
            valid_filter(&server, &mut draw, Some(&token), "owned").await
        };
        subscribers.push(subscriber(
            user,
            Some(token),
            "owned",
            filter,
            false,
            others_secrets(user),
        ));
    }
    // Snapshots taken while the writes go on.
    let filter = valid_filter(&server, &mut draw, None, "pub").await;
    subscribers.push(late(subscriber("late", None, "pub", None, false, vec![])));
    subscribers.push(late(subscriber(
        "late-filtered",
        None,
        "pub",
        filter,
        false,
        vec![],
    )));
    let token = server.token("alice", json!({}), Some(3600));
    subscribers.push(late(subscriber(
        "late-alice",
        Some(token),
        "owned",
        None,
        false,
        others_secrets("alice"),
    )));
    subscribers.extend(ruled_collection(&server, &mut draw, "ruled1", 3, true).await);
    subscribers.extend(ruled_collection(&server, &mut draw, "ruled2", 3, true).await);
    let mut writers = Vec::new();
    for n in 0..3 {
        let ops = plan(&mut draw, &ids(&format!("p{n}x"), 10), 50, false);
        writers.push(Writer {
            collection: "pub",
            ops,
            racing: false,
        });
    }
    for n in 0..2 {
        let ops = plan(&mut draw, &ids(&format!("o{n}x"), 10), 40, true);
        writers.push(Writer {
            collection: "owned",
            ops,
            racing: false,
        });
    }
    // Three writers on the same few records at once, in two collections.
    for (collection, owned) in [("pub", false), ("owned", true)] {
        for _ in 0..3 {
            let ops = racing_plan(&mut draw, &ids("race", 4), 20, owned);
            writers.push(Writer {
                collection,
                ops,
                racing: true,
            });
        }
    }
    for collection in ["ruled1", "ruled2"] {
        let ops = plan(&mut draw, &ids("r", 12), 40, false);
        writers.push(Writer {
            collection,
            ops,
            racing: false,
        });
    }

    let results = run(&server, &subscribers, &writers).await;
    // Every write reached the subscriber that sees the whole public collection.
    let everything = result(&results, "guest");
    assert!(
        everything["applied"].as_u64().unwrap() >= 150,
        "{everything}"
    );
}

/// Sockets cut for 2.5 s while the writes go on: on joining again each client fetches what it
/// missed from the history (`after` its last seq) and converges; one joins again slowly,
/// while the last part of the writes goes on.
#[tokio::test]
async fn a_client_whose_socket_dropped_fetches_what_it_missed_and_converges() {
    let server = Server::start_with_env(OWNED, 300, UNLIMITED);
    let mut draw = Draw::new("dropped socket");
    prefill(&server, &mut draw, "pub", false).await;
    prefill(&server, &mut draw, "owned", true).await;
    let alice = server.token("alice", json!({}), Some(3600));
    let alice_again = alice.clone();
    let bob = server.token("bob", json!({}), Some(3600));
    let filter = valid_filter(&server, &mut draw, None, "pub").await;
    let other = valid_filter(&server, &mut draw, None, "pub").await;
    let subscribers = [
        subscriber("everything", None, "pub", None, true, vec![]),
        subscriber("filtered", None, "pub", filter, true, vec![]),
        subscriber("online", None, "pub", other, false, vec![]),
        subscriber(
            "alice",
            Some(alice),
            "owned",
            None,
            true,
            others_secrets("alice"),
        ),
        slow_join(subscriber(
            "alice-slowly",
            Some(alice_again),
            "owned",
            None,
            true,
            others_secrets("alice"),
        )),
        subscriber(
            "bob",
            Some(bob),
            "owned",
            None,
            false,
            others_secrets("bob"),
        ),
    ];
    let writers = [
        Writer {
            collection: "pub",
            ops: plan(&mut draw, &ids("a", 12), 60, false),
            racing: false,
        },
        Writer {
            collection: "pub",
            ops: plan(&mut draw, &ids("b", 12), 60, false),
            racing: false,
        },
        Writer {
            collection: "owned",
            ops: plan(&mut draw, &ids("o", 15), 60, true),
            racing: false,
        },
    ];
    let results = run(&server, &subscribers, &writers).await;
    let everything = result(&results, "everything");
    assert!(
        everything["fromRecovery"].as_u64().unwrap() >= 1,
        "{everything}"
    );
    assert_eq!(everything["gone"], 0, "{everything}");
    assert_eq!(everything["restarts"], 0, "{everything}");
    let slowly = result(&results, "alice-slowly");
    assert_eq!(slowly["gone"], 0, "{slowly}");
}

/// With a history of 5 events, a client offline while more happened is answered 410, takes a
/// new snapshot, and converges.
#[tokio::test]
async fn past_the_history_a_client_takes_a_new_snapshot_and_converges() {
    past_the_history(("VELO_HISTORY_EVENTS", "5")).await;
}

/// The same with a history of 1 s (the client is offline for 2.5 s).
#[tokio::test]
async fn past_a_history_of_one_second_a_client_takes_a_new_snapshot_and_converges() {
    past_the_history(("VELO_HISTORY_SECS", "1")).await;
}

/// The same with a history of 1,500 bytes (each event's JSON is over 100).
#[tokio::test]
async fn past_a_history_of_few_bytes_a_client_takes_a_new_snapshot_and_converges() {
    past_the_history(("VELO_HISTORY_BYTES", "1500")).await;
}

async fn past_the_history(limit: (&str, &str)) {
    let server = Server::start_with_env(OWNED, 300, &[UNLIMITED[0], limit]);
    let mut draw = Draw::new(&format!("past the history, {}={}", limit.0, limit.1));
    prefill(&server, &mut draw, "pub", false).await;
    prefill(&server, &mut draw, "owned", true).await;
    let alice = server.token("alice", json!({}), Some(3600));
    let carol = server.token("carol", json!({}), Some(3600));
    let filter = valid_filter(&server, &mut draw, None, "pub").await;
    let subscribers = [
        subscriber("everything", None, "pub", None, true, vec![]),
        subscriber("filtered", None, "pub", filter, true, vec![]),
        subscriber(
            "alice",
            Some(alice),
            "owned",
            None,
            true,
            others_secrets("alice"),
        ),
        subscriber(
            "carol",
            Some(carol),
            "owned",
            None,
            false,
            others_secrets("carol"),
        ),
    ];
    let writers = [
        Writer {
            collection: "pub",
            ops: plan(&mut draw, &ids("a", 12), 60, false),
            racing: false,
        },
        Writer {
            collection: "owned",
            ops: plan(&mut draw, &ids("o", 15), 60, true),
            racing: false,
        },
    ];
    let results = run(&server, &subscribers, &writers).await;
    // 20 writes to `pub` while it was offline, each an event for it: more than are kept.
    let everything = result(&results, "everything");
    assert!(everything["gone"].as_u64().unwrap() >= 1, "{everything}");
    assert!(
        everything["restarts"].as_u64().unwrap() >= 1,
        "{everything}"
    );
}

/// Owners change under per-user rules: a user is sent `left` (the id only) when a record of
/// theirs becomes someone else's, and never any field of a record they may not see — not in
/// the snapshot, the events, the recovered events or the list.
#[tokio::test]
async fn under_a_per_user_rule_a_record_given_away_is_left_and_its_data_never_sent() {
    let server = Server::start_with_env(OWNED, 300, UNLIMITED);
    let mut draw = Draw::new("per-user rule");
    prefill(&server, &mut draw, "owned", true).await;
    let mut subscribers = Vec::new();
    for user in USERS {
        let token = server.token(user, json!({}), Some(3600));
        let filter = if user == "carol" {
            valid_filter(&server, &mut draw, Some(&token), "owned").await
        } else {
            None
        };
        subscribers.push(subscriber(
            user,
            Some(token),
            "owned",
            filter,
            user == "alice",
            others_secrets(user),
        ));
    }
    // A user who owns nothing is sent nothing of anyone's (a guest may not subscribe: 401).
    let everyone: Vec<String> = USERS.iter().map(|user| secret_of(user)).collect();
    let dave = server.token("dave", json!({}), Some(3600));
    subscribers.push(subscriber(
        "dave",
        Some(dave),
        "owned",
        None,
        false,
        everyone,
    ));
    let given_away = vec![
        Op::Create(
            "given".into(),
            json!({"owner": "alice", "secret": secret_of("alice")}),
        ),
        Op::Update(
            "given".into(),
            json!({"owner": "bob", "secret": secret_of("bob")}),
        ),
        Op::Update(
            "given".into(),
            json!({"owner": "bob", "secret": secret_of("bob"), "a": 1}),
        ),
    ];
    let writers = [
        Writer {
            collection: "owned",
            ops: given_away,
            racing: false,
        },
        Writer {
            collection: "owned",
            ops: plan(&mut draw, &ids("a", 12), 60, true),
            racing: false,
        },
        Writer {
            collection: "owned",
            ops: plan(&mut draw, &ids("b", 12), 60, true),
            racing: false,
        },
    ];
    let results = run(&server, &subscribers, &writers).await;
    let alice = result(&results, "alice");
    assert!(alice["left"].as_u64().unwrap() >= 1, "{alice}");
    assert_eq!(result(&results, "dave")["records"], 0);
}

/// A list rule changed while the writes go on ends every live list of the collection; each
/// takes a new snapshot (under the new rule) and converges.
#[tokio::test]
async fn a_rule_change_ends_each_live_list_which_starts_again_and_converges() {
    let server = Server::start_with_env(OWNED, 300, UNLIMITED);
    let mut draw = Draw::new("rule change");
    // Users only: the new rule may not admit guests (401).
    let subscribers = ruled_collection(&server, &mut draw, "ruled", 4, false).await;
    // One the server takes (tried on a collection of its own).
    let mut rule = None;
    for n in 0..20 {
        let drawn = draw.one(expression()).to_string();
        let probe =
            json!({"name": format!("probe{n}"), "api_rules": {"list": drawn, "view": drawn}});
        if server.create_collection(probe).await.status == StatusCode::CREATED {
            rule = Some(drawn);
            break;
        }
    }
    let rule = rule.expect("the server takes one of 20 random rules");
    println!("ruled: the list rule becomes {rule}");
    let writers = [
        Writer {
            collection: "ruled",
            ops: plan(&mut draw, &ids("a", 12), 60, false),
            racing: false,
        },
        Writer {
            collection: "ruled",
            ops: plan(&mut draw, &ids("b", 12), 60, false),
            racing: false,
        },
    ];
    let results = run_changing_rule(&server, &subscribers, &writers, Some(("ruled", &rule))).await;
    for result in &results {
        assert_eq!(result["ended"], 1, "{result}");
        assert_eq!(result["restarts"], 1, "{result}");
    }
}
