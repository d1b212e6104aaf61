//! Cluster mode against a real `redis-server` and three real nodes: what is made on one node
//! is served by every other, record events reach every node's sockets once each in commit
//! order, a node killed with -9 loses nothing acknowledged and catches up before it answers,
//! and Redis going away makes writes fail fast, not hang.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::redis::RedisServer;
use support::ws::{Read, Socket, connect, event, frame, read, send, subscribe};
use support::{ADMIN, Server, eventually};

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "", view = "", create = "", update = "", delete = "" }
"#;

/// A node of the cluster on `redis`.
fn node(redis: &RedisServer, name: &str, threshold_secs: u64, env: &[(&str, &str)]) -> Server {
    let url = redis.url();
    let mut all = vec![
        ("VELO_REDIS_URL", url.as_str()),
        ("VELO_NODE_ID", name),
        ("VELO_NODE_HEARTBEAT_MS", "300"),
        ("VELO_REDIS_TIMEOUT_MS", "1000"),
    ];
    all.extend_from_slice(env);
    Server::start_with_env(COLLECTIONS, threshold_secs, &all)
}

/// Three nodes, started together.
fn cluster(redis: &RedisServer, threshold_secs: u64) -> [Server; 3] {
    std::thread::scope(|scope| {
        let started =
            ["a", "b", "c"].map(|name| scope.spawn(move || node(redis, name, threshold_secs, &[])));
        started.map(|node| node.join().expect("a node starts"))
    })
}

/// A socket on `server` listening on a subscription's channel, authorized (on `authorizer`)
/// when private.
async fn listen(
    server: &Server,
    authorizer: &Server,
    token: Option<&str>,
    subscribed: &Value,
) -> (Socket, String) {
    let name = subscribed["channel_name"].as_str().unwrap();
    let (mut socket, socket_id) = connect(server).await;
    let joined = if subscribed["is_public"] == true {
        subscribe(&mut socket, name, None).await
    } else {
        let private = format!("private-{name}");
        let body = json!({"socket_id": socket_id, "channel_name": private});
        let auth = authorizer
            .call(Method::POST, "/api/realtime/auth", token, Some(body))
            .await;
        assert_eq!(auth.status, StatusCode::OK, "{:?}", auth.body);
        subscribe(&mut socket, &private, auth.body["auth"].as_str()).await
    };
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    (socket, socket_id)
}

async fn create(server: &Server, collection: &str, body: Value) -> support::Reply {
    server
        .call(
            Method::POST,
            &format!("/api/collections/{collection}/records"),
            Some(ADMIN),
            Some(body),
        )
        .await
}

/// A record write that may meet a dead node: the status, or `None` when nothing answered.
async fn try_create(server: &Server, id: &str) -> Option<StatusCode> {
    let sent = server
        .request(Method::POST, "/api/collections/posts/records")
        .bearer_auth(ADMIN)
        .json(&json!({"id": id, "n": 1}))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    sent.ok().map(|response| response.status())
}

async fn has_record(server: &Server, id: &str) -> bool {
    let found = server
        .call(
            Method::GET,
            &format!("/api/collections/posts/records/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    found.status == StatusCode::OK
}

async fn collection_names(server: &Server) -> Vec<String> {
    let listed = server
        .call(Method::GET, "/api/collections", Some(ADMIN), None)
        .await;
    let mut names: Vec<String> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|collection| collection["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn what_one_node_makes_every_node_serves() {
    let redis = RedisServer::start();
    let [a, b, c] = cluster(&redis, 300);
    // Three nodes declaring the same collection at once made it once.
    for server in [&a, &b, &c] {
        assert_eq!(collection_names(server).await, ["posts"]);
    }
    let created = a
        .call(
            Method::POST,
            "/api/collections",
            Some(ADMIN),
            Some(json!({"name": "notes", "api_rules": {
                "list": "@request.auth.id = owner", "view": "", "create": "", "update": "", "delete": ""
            }})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    for server in [&b, &c] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                collection_names(server).await == ["notes", "posts"]
            })
            .await
        );
    }
    // The name is taken everywhere.
    let again = c
        .call(
            Method::POST,
            "/api/collections",
            Some(ADMIN),
            Some(json!({"name": "notes"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);

    // A subscription made on A, authorized on B, listened to on C.
    let ann = a.token("ann", json!({}), None);
    let bob = a.token("bob", json!({}), None);
    let subscribed = a.subscribe(Some(&ann), "notes", None).await;
    assert_eq!(subscribed.status, StatusCode::OK, "{:?}", subscribed.body);
    assert_eq!(subscribed.body["is_public"], false);
    let channel = subscribed.body["channel_name"].as_str().unwrap().to_owned();
    // Pinged on B at once, as a client behind a load balancer would.
    assert_eq!(b.ping(Some(&ann), &channel).await.status, StatusCode::OK);
    let (mut socket, _) = listen(&c, &b, Some(&ann), &subscribed.body).await;
    // Bob's record is not Ann's to see; hers, written on B, reaches her socket on C once.
    let bobs = create(&b, "notes", json!({"owner": "bob", "text": "not hers"})).await;
    assert_eq!(bobs.status, StatusCode::CREATED);
    let hers = create(&b, "notes", json!({"owner": "ann", "text": "hers"})).await;
    assert_eq!(hers.status, StatusCode::CREATED);
    let (name, data) = event(&mut socket).await;
    assert_eq!(name, "created");
    assert_eq!(data["record"]["text"], "hers");
    // Only the owner may end it, on any node.
    assert_eq!(
        b.unsubscribe(Some(&bob), &channel).await.status,
        StatusCode::FORBIDDEN
    );
    // A rule change made on C holds on A: Ann's subscription ends (the rule no longer
    // admits users), her socket on C is told, and A answers for the new rule.
    let changed = c
        .call(
            Method::PATCH,
            "/api/collections/notes",
            Some(ADMIN),
            Some(json!({"api_rules": {"list": null}})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let (name, data) = event(&mut socket).await;
    assert_eq!(
        (name.as_str(), &data["reason"]),
        ("ended", &json!("rule_changed"))
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.subscribe(Some(&bob), "notes", None).await.status == StatusCode::FORBIDDEN
        })
        .await
    );
    assert_eq!(
        a.ping(Some(&ann), &channel).await.status,
        StatusCode::NOT_FOUND
    );

    // Deleted on B: every node lets it go.
    let subscribed = b.subscribe(Some(ADMIN), "notes", None).await;
    let channel = subscribed.body["channel_name"].as_str().unwrap().to_owned();
    assert_eq!(
        b.unsubscribe(Some(ADMIN), &channel).await.status,
        StatusCode::NO_CONTENT
    );
    for server in [&a, &c] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                server.ping(Some(ADMIN), &channel).await.status == StatusCode::NOT_FOUND
            })
            .await
        );
    }
    let deleted = a
        .call(Method::DELETE, "/api/collections/notes", Some(ADMIN), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    for server in [&b, &c] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                collection_names(server).await == ["posts"]
            })
            .await
        );
    }
}

#[tokio::test]
async fn writes_on_every_node_reach_every_socket_once_in_commit_order() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 300);
    let subscribed = nodes[0].subscribe(None, "posts", Some("n >= 0")).await;
    assert_eq!(subscribed.status, StatusCode::OK);
    let channel = subscribed.body["channel_name"].as_str().unwrap().to_owned();
    for node in &nodes[1..] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                node.ping(None, &channel).await.status == StatusCode::OK
            })
            .await
        );
    }
    let mut sockets = Vec::new();
    let mut socket_ids = Vec::new();
    for node in &nodes {
        let (socket, socket_id) = listen(node, node, None, &subscribed.body).await;
        sockets.push(socket);
        socket_ids.push(socket_id);
    }
    // Each node writes its own records while the others write theirs.
    const EACH: usize = 40;
    let writes = nodes.iter().enumerate().map(|(i, node)| async move {
        for n in 0..EACH {
            let id = format!("node{i}record{n:03}");
            let written = create(node, "posts", json!({"id": id, "n": n})).await;
            assert_eq!(written.status, StatusCode::CREATED, "{:?}", written.body);
        }
    });
    join_all(writes).await;
    let mut orders = Vec::new();
    for socket in &mut sockets {
        let mut order = Vec::new();
        for _ in 0..EACH * nodes.len() {
            let (name, data) = event(socket).await;
            assert_eq!(name, "created");
            order.push(data["record"]["id"].as_str().unwrap().to_owned());
        }
        orders.push(order);
    }
    let mut distinct = orders[0].clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), EACH * nodes.len(), "each record once");
    assert_eq!(orders[0], orders[1], "sockets on A and B saw one order");
    assert_eq!(orders[0], orders[2], "sockets on A and C saw one order");
    // Per node, its own writes in the order it made them.
    for i in 0..nodes.len() {
        let own: Vec<&String> = orders[0]
            .iter()
            .filter(|id| id.starts_with(&format!("node{i}")))
            .collect();
        assert!(own.windows(2).all(|pair| pair[0] < pair[1]));
    }
    // Nothing more arrives: each socket then gets the next change, and only it (a change
    // made outside, published on one node, goes to every node's sockets).
    let published = nodes[1]
        .call(
            Method::POST,
            "/api/realtime/publish",
            Some(ADMIN),
            Some(json!({"collection": "posts", "action": "updated", "record": {"id": "last", "n": 1}})),
        )
        .await;
    assert_eq!(published.status, StatusCode::OK, "{:?}", published.body);
    assert_eq!(published.body["matched"], 1);
    for socket in &mut sockets {
        let (name, data) = event(socket).await;
        assert_eq!(
            (name.as_str(), &data["record"]["id"]),
            ("updated", &json!("last"))
        );
    }
}

#[tokio::test]
async fn a_live_subscription_is_numbered_alike_on_every_node() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 300);
    let made = create(&nodes[0], "posts", json!({"id": "before", "n": 1})).await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let body =
        json!({"collection": "posts", "filter": "n >= 0", "snapshot": true, "leave_events": true});
    let subscribed = nodes[0]
        .call(Method::POST, "/api/realtime/subscribe", None, Some(body))
        .await;
    assert_eq!(subscribed.status, StatusCode::OK, "{:?}", subscribed.body);
    assert_eq!(subscribed.body["seq"], 0);
    assert_eq!(subscribed.body["records"][0]["id"], "before");
    assert_eq!(subscribed.body["records"].as_array().unwrap().len(), 1);
    // Changes on every node before any socket listens: held where the socket comes.
    for (i, node) in nodes.iter().enumerate() {
        let written = create(node, "posts", json!({"id": format!("w{i}"), "n": i})).await;
        assert_eq!(written.status, StatusCode::CREATED, "{:?}", written.body);
    }
    let moved = nodes[2]
        .call(
            Method::PATCH,
            "/api/collections/posts/records/before",
            Some(ADMIN),
            Some(json!({"n": -1})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    let (mut socket, _) = listen(&nodes[1], &nodes[1], None, &subscribed.body).await;
    let mut received = Vec::new();
    for seq in 1..=4 {
        let (name, data) = event(&mut socket).await;
        assert_eq!(data["seq"], seq, "{name} {data}");
        received.push((name, data["record"]["id"].as_str().unwrap().to_owned()));
    }
    let expected = [
        ("created", "w0"),
        ("created", "w1"),
        ("created", "w2"),
        ("left", "before"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(name, id)| (name.to_string(), id.to_string()))
        .collect();
    assert_eq!(received, expected);
    // Every node kept the same events with the same numbers.
    let channel = subscribed.body["channel_name"].as_str().unwrap();
    let path = format!("/api/realtime/subscriptions/{channel}/events?after=0");
    let mut answers = Vec::new();
    for node in &nodes {
        let kept = || async {
            let reply = node.call(Method::GET, &path, None, None).await;
            let events = reply.body["events"].clone();
            (reply.status == StatusCode::OK && events.as_array().is_some_and(|all| all.len() == 4))
                .then_some(events)
        };
        assert!(eventually(Duration::from_secs(10), || async { kept().await.is_some() }).await);
        answers.push(kept().await.expect("kept"));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
}

#[tokio::test]
async fn through_an_external_pusher_service_each_event_is_sent_once() {
    let redis = RedisServer::start();
    // Our own server, alone, plays the external Pusher service.
    let external = Server::start(COLLECTIONS);
    let url = redis.url();
    let nodes = std::thread::scope(|scope| {
        ["a", "b", "c"]
            .map(|name| {
                let (external, url) = (&external, url.as_str());
                scope.spawn(move || {
                    let env = [
                        ("VELO_REDIS_URL", url),
                        ("VELO_NODE_ID", name),
                        ("VELO_NODE_HEARTBEAT_MS", "300"),
                    ];
                    Server::start_delivering_through(external, COLLECTIONS, 300, &env)
                })
            })
            .map(|node| node.join().expect("a node starts"))
    });
    let subscribed = nodes[0].subscribe(None, "posts", None).await;
    assert_eq!(subscribed.status, StatusCode::OK);
    let (mut socket, _) = listen(&external, &external, None, &subscribed.body).await;
    let body = json!({"collection": "posts", "snapshot": true});
    let live = nodes[1]
        .call(Method::POST, "/api/realtime/subscribe", None, Some(body))
        .await;
    assert_eq!(live.status, StatusCode::OK, "{:?}", live.body);
    let (mut live_socket, _) = listen(&external, &external, None, &live.body).await;
    for (i, node) in nodes.iter().enumerate() {
        let written = create(node, "posts", json!({"id": format!("from{i}")})).await;
        assert_eq!(written.status, StatusCode::CREATED, "{:?}", written.body);
    }
    // Each node sends what it wrote: in no set order across nodes.
    let mut seen = Vec::new();
    for _ in 0..nodes.len() {
        seen.push(event(&mut socket).await.1["record"]["id"].to_string());
    }
    seen.sort();
    assert_eq!(seen, [r#""from0""#, r#""from1""#, r#""from2""#]);
    // A live subscription's events too, once each; every node numbered every event alike,
    // though each sent only its own.
    let mut numbered = Vec::new();
    for _ in 0..nodes.len() {
        let (_, data) = event(&mut live_socket).await;
        numbered.push((
            data["seq"].as_u64().unwrap(),
            data["record"]["id"].to_string(),
        ));
    }
    numbered.sort();
    let seqs: Vec<u64> = numbered.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3], "{numbered:?}");
    let channel = live.body["channel_name"].as_str().unwrap();
    let path = format!("/api/realtime/subscriptions/{channel}/events?after=0");
    for node in &nodes {
        // A node numbers another node's writes when it applies them: perhaps not yet.
        let kept = || async {
            let kept = node.call(Method::GET, &path, None, None).await;
            let events = kept.body["events"].as_array().cloned().unwrap_or_default();
            let kept: Vec<(u64, String)> = events
                .iter()
                .map(|event| {
                    let data = &event["data"];
                    (
                        data["seq"].as_u64().unwrap(),
                        data["record"]["id"].to_string(),
                    )
                })
                .collect();
            kept
        };
        assert!(
            eventually(Duration::from_secs(10), || async {
                kept().await.len() == numbered.len()
            })
            .await
        );
        assert_eq!(kept().await, numbered, "every node kept what was sent");
    }
    // The collection deleted on B: its subscription's `ended` is sent once, not by every node.
    let deleted = nodes[1]
        .call(Method::DELETE, "/api/collections/posts", Some(ADMIN), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let (name, data) = event(&mut socket).await;
    assert_eq!(
        (name.as_str(), &data["reason"]),
        ("ended", &json!("collection_deleted"))
    );
    // The live subscription's next event is its `ended`, numbered after the three: no created
    // event came twice before it.
    let (name, data) = event(&mut live_socket).await;
    assert_eq!(
        (name.as_str(), &data["seq"]),
        ("ended", &json!(4)),
        "{data}"
    );
    match tokio::time::timeout(Duration::from_secs(1), read(&mut socket)).await {
        Err(_) => {}
        Ok(other) => panic!("each event once, got another: {other:?}"),
    }
}

#[tokio::test]
async fn a_killed_node_loses_nothing_acknowledged_and_catches_up_before_it_answers() {
    let redis = RedisServer::start();
    let [a, b, mut c] = cluster(&redis, 300);
    // Every node takes writes, one after another, while C is killed in the middle of them.
    let writers = [&a, &b, &c].map(|node| async move {
        let mut acknowledged = Vec::new();
        for n in 0..60 {
            let id = format!("n{}w{n:02}", node.port());
            if try_create(node, &id).await == Some(StatusCode::CREATED) {
                acknowledged.push(id);
            }
        }
        acknowledged
    });
    let killer = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.signal("KILL");
    };
    let (written, ()) = futures::join!(join_all(writers), killer);
    let acknowledged: Vec<String> = written.into_iter().flatten().collect();
    assert!(
        acknowledged.len() >= 120,
        "{} acknowledged",
        acknowledged.len()
    );
    assert!(c.exited_within(Duration::from_secs(10)).is_some());
    // Every acknowledged write is on the survivors (a write is acknowledged once Redis has
    // it, and every node applies the log).
    for id in &acknowledged {
        for node in [&a, &b] {
            assert!(
                eventually(Duration::from_secs(10), || has_record(node, id)).await,
                "{id} is on every survivor"
            );
        }
    }
    // Restarted on its data dir, and a new node on a new one: both answer only once they
    // have every change, so the first answer already has every record.
    c.restart();
    let d = node(&redis, "d", 300, &[]);
    for node in [&c, &d] {
        let listed = node
            .call(
                Method::GET,
                "/api/collections/posts/records?per_page=500",
                Some(ADMIN),
                None,
            )
            .await;
        let ids: Vec<&str> = listed.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| record["id"].as_str().unwrap())
            .collect();
        for id in &acknowledged {
            assert!(
                ids.contains(&id.as_str()),
                "{id} on a restarted or new node"
            );
        }
    }
}

#[tokio::test]
async fn without_redis_writes_fail_fast_and_nodes_catch_up_when_it_is_back() {
    let mut redis = RedisServer::start();
    let [a, b, _c] = cluster(&redis, 300);
    let subscribed = a.subscribe(None, "posts", None).await;
    let (mut socket, _) = listen(&b, &b, None, &subscribed.body).await;
    assert_eq!(
        create(&a, "posts", json!({"id": "before"})).await.status,
        StatusCode::CREATED
    );
    assert_eq!(event(&mut socket).await.1["record"]["id"], "before");

    redis.kill();
    let started = Instant::now();
    let refused = create(&a, "posts", json!({"id": "during"})).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    assert!(
        refused.body["message"].as_str().unwrap().contains("Redis"),
        "{:?}",
        refused.body
    );
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    // Reads are served from memory meanwhile, and sockets stay open.
    assert!(has_record(&b, "before").await);
    send(&mut socket, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(frame(&mut socket).await["event"], "pusher:pong");

    // Back (with what it acknowledged, from its append-only file): writes are taken again,
    // and the other node's socket gets them.
    redis.restart();
    // A fresh id each try: a try that timed out may still have been made.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tries = 0;
    let after = loop {
        let id = format!("after{tries}");
        if create(&a, "posts", json!({"id": id})).await.status == StatusCode::CREATED {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "writes are taken again once Redis is back"
        );
        tries += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loop {
        match read(&mut socket).await {
            Read::Frame(frame) if frame["event"] == "created" => {
                let data: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
                if data["record"]["id"] == after.as_str() {
                    break;
                }
            }
            Read::Frame(_) => continue,
            Read::Closed(code) => panic!("the socket closed ({code:?})"),
        }
    }
    // Redis killed with -9 once more: with `appendfsync always` it lost nothing it
    // acknowledged, as a node that loads everything from it shows.
    redis.restart();
    let fresh = node(&redis, "d", 300, &[]);
    for id in ["before", after.as_str()] {
        assert!(
            has_record(&fresh, id).await,
            "{id} survived Redis's kill -9"
        );
    }
    assert!(
        !has_record(&fresh, "during").await,
        "the refused write was not made"
    );
}

#[tokio::test]
async fn a_node_stops_when_redis_comes_back_without_what_it_applied() {
    let mut redis = RedisServer::start();
    let mut a = node(&redis, "a", 300, &[]);
    assert_eq!(
        create(&a, "posts", json!({"id": "lost"})).await.status,
        StatusCode::CREATED
    );
    redis.restart_empty();
    let status = a.exited_within(Duration::from_secs(20));
    assert_eq!(status.and_then(|status| status.code()), Some(75));
    assert!(
        a.wait_for_log(&["fewer changes than this node applied"])
            .await
    );
}

#[tokio::test]
async fn a_subscription_kept_alive_on_one_node_is_pruned_by_none_and_expiry_ends_it_once() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 1);
    // The socket is on a node that does not prune (the leader, which holds the lease, does):
    // the subscription stays alive well past the 1 s threshold, kept so by a socket the
    // pruner does not have.
    let mut leader = String::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            leader = redis.cli(&["GET", "velo:lease"]);
            let found = !leader.is_empty();
            async move { found }
        })
        .await
    );
    let names = ["a", "b", "c"];
    let leading = names.iter().position(|name| *name == leader).unwrap();
    let [a, b, c] = [
        &nodes[leading],
        &nodes[(leading + 1) % 3],
        &nodes[(leading + 2) % 3],
    ];
    let ann = a.token("ann", json!({}), Some(6));
    let subscribed = a.subscribe(Some(&ann), "posts", None).await;
    assert_eq!(subscribed.status, StatusCode::OK);
    let channel = subscribed.body["channel_name"].as_str().unwrap().to_owned();
    let (mut socket, _) = listen(c, c, Some(&ann), &subscribed.body).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.ping(Some(&ann), &channel).await.status, StatusCode::OK);
    // Its token expires: the socket is told once, by whichever node ended it.
    let (name, data) = event(&mut socket).await;
    assert_eq!(
        (name.as_str(), &data["reason"]),
        ("ended", &json!("token_expired"))
    );
    let later = create(b, "posts", json!({"n": 1})).await;
    assert_eq!(later.status, StatusCode::CREATED);
    match tokio::time::timeout(Duration::from_secs(1), read(&mut socket)).await {
        Err(_) => {}
        Ok(other) => panic!("nothing more after `ended`, got {other:?}"),
    }
    for node in [&a, &b, &c] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                node.ping(Some(ADMIN), &channel).await.status == StatusCode::NOT_FOUND
            })
            .await
        );
    }
    // A subscription nobody listens to is pruned, on every node (asked through channel
    // authorization, which does not keep it alive as a ping would).
    let unheard = b.subscribe(None, "posts", None).await;
    let channel = unheard.body["channel_name"].as_str().unwrap().to_owned();
    let (_, socket_id) = connect(a).await;
    let body = json!({"socket_id": socket_id, "channel_name": format!("private-{channel}")});
    for node in [&a, &b, &c] {
        assert!(
            eventually(Duration::from_secs(15), || async {
                let auth = node
                    .call(Method::POST, "/api/realtime/auth", None, Some(body.clone()))
                    .await;
                auth.status == StatusCode::NOT_FOUND
            })
            .await,
            "pruned everywhere"
        );
    }
}
