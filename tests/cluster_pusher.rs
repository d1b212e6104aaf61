//! Cluster mode, the Pusher side, end to end: a real `redis-server` and three real nodes
//! sharing it, real WebSockets and signed HTTP API calls. Triggers, client events, presence,
//! occupancy and webhooks are cluster-wide; a node killed with -9 is cleaned up after; Redis
//! going away makes triggers 503 (sockets stay), and its return makes them work again.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::redis::RedisServer;
use support::webhooks::Receiver;
use support::ws::{self, Read, Socket};
use support::{ADMIN, APP_ID, APP_KEY, APP_SECRET, Server, eventually};
use velo_realtime::pusher::signature::AppCredentials;

fn app() -> AppCredentials {
    AppCredentials::new(APP_ID, APP_KEY, APP_SECRET)
}

/// `POST /apps/{id}/events` on `server`.
async fn trigger(
    server: &Server,
    channels: &[&str],
    name: &str,
    data: &str,
    except: Option<&str>,
) -> support::Reply {
    let mut body = json!({ "name": name, "channels": channels, "data": data });
    if let Some(socket_id) = except {
        body["socket_id"] = json!(socket_id);
    }
    server
        .pusher_api(Method::POST, &format!("/apps/{APP_ID}/events"), Some(&body))
        .await
}

/// A `GET` on the HTTP API of `server`, answered 200.
async fn query(server: &Server, path: &str) -> Value {
    let reply = server
        .pusher_api(Method::GET, &format!("/apps/{APP_ID}{path}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
    reply.body
}

/// Connects to `server` and subscribes to a public channel.
async fn listen(server: &Server, channel: &str) -> (Socket, String) {
    let (mut socket, socket_id) = ws::connect(server).await;
    let reply = ws::subscribe(&mut socket, channel, None).await;
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
    (socket, socket_id)
}

/// Joins presence `channel` on `server` as `user_id`; the socket, its id and the members
/// its `subscription_succeeded` listed.
async fn join(server: &Server, channel: &str, user_id: &str) -> (Socket, String, Vec<String>) {
    let (mut socket, socket_id) = ws::connect(server).await;
    let reply = join_on(&mut socket, &socket_id, channel, user_id).await;
    assert_eq!(
        reply["event"], "pusher_internal:subscription_succeeded",
        "{reply}"
    );
    let data = data(&reply);
    let mut ids: Vec<String> = data["presence"]["ids"]
        .as_array()
        .expect("presence ids")
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(data["presence"]["count"], ids.len());
    (socket, socket_id, ids)
}

/// Sends a signed presence subscription on `socket`; the reply.
async fn join_on(socket: &mut Socket, socket_id: &str, channel: &str, user_id: &str) -> Value {
    let channel_data = json!({ "user_id": user_id, "user_info": {"name": user_id} }).to_string();
    let auth = app().authorize(socket_id, channel, Some(&channel_data));
    ws::send(
        socket,
        json!({"event": "pusher:subscribe", "data": {
            "channel": channel, "auth": auth, "channel_data": channel_data
        }}),
    )
    .await;
    ws::frame(socket).await
}

async fn unsubscribe(socket: &mut Socket, channel: &str) {
    ws::send(
        socket,
        json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}),
    )
    .await;
    // The pong comes after the leave is done.
    nothing_more(socket).await;
}

/// `data` of a frame, decoded from its JSON string.
fn data(frame: &Value) -> Value {
    serde_json::from_str(frame["data"].as_str().expect("data is a JSON string")).unwrap()
}

/// The next frame on `socket`, which must be `event`.
async fn expect(socket: &mut Socket, event: &str) -> Value {
    let frame = ws::frame(socket).await;
    assert_eq!(frame["event"], event, "expected {event}, got {frame}");
    frame
}

/// Proves nothing else is queued for the socket: a ping's pong comes next.
async fn nothing_more(socket: &mut Socket) {
    ws::send(socket, json!({"event": "pusher:ping", "data": {}})).await;
    let next = ws::frame(socket).await;
    assert_eq!(next["event"], "pusher:pong", "expected nothing, got {next}");
}

/// Three nodes sharing `redis`, with webhooks to `receiver` and client events on.
fn three_nodes(redis: &RedisServer, receiver: &Receiver) -> Vec<Server> {
    redis.start_nodes(
        3,
        "",
        &[
            ("VELO_WEBHOOK_URLS", receiver.url.as_str()),
            ("VELO_CLIENT_EVENTS", "true"),
        ],
    )
}

/// The webhook events so far that are about `channel`.
fn events_on(receiver: &Receiver, channel: &str) -> Vec<String> {
    receiver
        .events()
        .into_iter()
        .filter(|event| event.split(' ').nth(1) == Some(channel))
        .collect()
}

/// The same events, in any order: nodes post their webhooks independently (each node's own
/// in order), so events from different nodes may arrive in either order.
fn assert_same(mut events: Vec<String>, expected: &[&str]) {
    events.sort();
    let mut expected: Vec<String> = expected.iter().map(|event| event.to_string()).collect();
    expected.sort();
    assert_eq!(events, expected);
}

#[tokio::test]
async fn triggers_reach_every_node_once_and_exclusion_holds_across_nodes() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let nodes = three_nodes(&redis, &receiver);
    let mut sockets = Vec::new();
    for node in &nodes {
        sockets.push(listen(node, "news").await);
    }
    // From node 0, leaving out node 1's socket.
    let excluded = sockets[1].1.clone();
    let reply = trigger(&nodes[0], &["news"], "flash", r#"{"n":1}"#, Some(&excluded)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    for index in [0, 2] {
        let frame = expect(&mut sockets[index].0, "flash").await;
        assert_eq!(frame["channel"], "news");
        assert_eq!(frame["data"], r#"{"n":1}"#);
    }
    // From node 2, to everyone: each socket gets it once, and node 1's first frame is this.
    let reply = trigger(&nodes[2], &["news"], "flash", r#"{"n":2}"#, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    for (socket, _) in &mut sockets {
        let frame = expect(socket, "flash").await;
        assert_eq!(frame["data"], r#"{"n":2}"#);
        nothing_more(socket).await;
    }
    // A batch from node 1: both events on every node, in order.
    let batch = json!({"batch": [
        {"name": "one", "channel": "news", "data": "1"},
        {"name": "two", "channel": "news", "data": "2", "socket_id": sockets[0].1},
    ]});
    let reply = nodes[1]
        .pusher_api(
            Method::POST,
            &format!("/apps/{APP_ID}/batch_events"),
            Some(&batch),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    expect(&mut sockets[0].0, "one").await;
    for (socket, _) in &mut sockets[1..] {
        expect(socket, "one").await;
        expect(socket, "two").await;
    }
    nothing_more(&mut sockets[0].0).await;

    // A cache channel's last event is kept on every node.
    let reply = trigger(&nodes[0], &["cache-price"], "tick", "42", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let replayed = eventually(Duration::from_secs(10), || async {
        let (mut socket, _) = ws::connect(&nodes[2]).await;
        ws::subscribe(&mut socket, "cache-price", None).await;
        let next = ws::frame(&mut socket).await;
        next["event"] == "tick" && next["data"] == "42"
    })
    .await;
    assert!(replayed, "node 2 replays the event triggered on node 0");
}

#[tokio::test]
async fn client_events_reach_other_nodes_but_never_the_sender() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let nodes = three_nodes(&redis, &receiver);
    let private = "private-chat";
    let mut sockets = Vec::new();
    for node in &nodes[..2] {
        let (mut socket, socket_id) = ws::connect(node).await;
        let auth = app().authorize(&socket_id, private, None);
        let reply = ws::subscribe(&mut socket, private, Some(&auth)).await;
        assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
        sockets.push(socket);
    }
    ws::send(
        &mut sockets[0],
        json!({"event": "client-typing", "channel": private, "data": {"who": "a"}}),
    )
    .await;
    let frame = expect(&mut sockets[1], "client-typing").await;
    assert_eq!(frame["channel"], private);
    assert_eq!(frame["data"], json!({"who": "a"}));
    nothing_more(&mut sockets[0]).await;

    // On a presence channel the relayed event carries the sender's user id.
    let room = "presence-chat";
    let (mut alice, _, _) = join(&nodes[0], room, "alice").await;
    let (mut bob, _, _) = join(&nodes[2], room, "bob").await;
    expect(&mut alice, "pusher_internal:member_added").await;
    ws::send(
        &mut bob,
        json!({"event": "client-wave", "channel": room, "data": {}}),
    )
    .await;
    let frame = expect(&mut alice, "client-wave").await;
    assert_eq!(frame["user_id"], "bob");
    nothing_more(&mut bob).await;
}

#[tokio::test]
async fn presence_members_occupancy_and_webhooks_are_cluster_wide() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let nodes = three_nodes(&redis, &receiver);
    let room = "presence-room";

    let (mut alice, _, members) = join(&nodes[0], room, "alice").await;
    assert_eq!(members, ["alice"]);
    // Bob joins on node 1: he sees Alice, and Alice (on node 0) hears of him.
    let (mut bob, _, members) = join(&nodes[1], room, "bob").await;
    assert_eq!(members, ["alice", "bob"]);
    let added = expect(&mut alice, "pusher_internal:member_added").await;
    assert_eq!(
        data(&added),
        json!({"user_id": "bob", "user_info": {"name": "bob"}})
    );
    // Bob's second socket, on node 2, is not a new member.
    let (mut bob_tab, _, members) = join(&nodes[2], room, "bob").await;
    assert_eq!(members, ["alice", "bob"]);
    // Carol joins on node 2: everyone else hears of her, once.
    let (mut carol, _, members) = join(&nodes[2], room, "carol").await;
    assert_eq!(members, ["alice", "bob", "carol"]);
    for socket in [&mut alice, &mut bob, &mut bob_tab] {
        let added = expect(socket, "pusher_internal:member_added").await;
        assert_eq!(data(&added)["user_id"], "carol");
        nothing_more(socket).await;
    }

    // Every node answers for the whole cluster.
    for node in &nodes {
        let mut users: Vec<String> = query(node, &format!("/channels/{room}/users")).await["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|user| user["id"].as_str().unwrap().to_owned())
            .collect();
        users.sort();
        assert_eq!(users, ["alice", "bob", "carol"]);
        let channel = query(
            node,
            &format!("/channels/{room}?info=user_count,subscription_count"),
        )
        .await;
        assert_eq!(
            channel,
            json!({"occupied": true, "user_count": 3, "subscription_count": 4})
        );
        let channels = query(node, "/channels?filter_by_prefix=presence-&info=user_count").await;
        assert_eq!(channels, json!({"channels": {room: {"user_count": 3}}}));
    }
    // So does the console's overview, naming the node that answered.
    for (index, node) in nodes.iter().enumerate() {
        let overview = node
            .call(Method::GET, "/api/console/overview", Some(ADMIN), None)
            .await;
        assert_eq!(overview.status, StatusCode::OK, "{:?}", overview.body);
        assert_eq!(overview.body["node"], format!("node-{index}"));
        assert_eq!(
            overview.body["channels"],
            json!([{ "channel": room, "sockets": 4, "members": { "count": 3, "user_ids": ["alice", "bob", "carol"] } }])
        );
    }

    // Bob's socket on node 1 leaves: he is still there on node 2. Then that one leaves too.
    unsubscribe(&mut bob, room).await;
    nothing_more(&mut alice).await;
    unsubscribe(&mut bob_tab, room).await;
    for socket in [&mut alice, &mut carol] {
        let removed = expect(socket, "pusher_internal:member_removed").await;
        assert_eq!(data(&removed), json!({"user_id": "bob"}));
    }
    unsubscribe(&mut alice, room).await;
    expect(&mut carol, "pusher_internal:member_removed").await;
    unsubscribe(&mut carol, room).await;

    // Webhooks: per channel and per user, once for the cluster, not per node.
    let expected = [
        "channel_occupied presence-room",
        "member_added presence-room alice",
        "member_added presence-room bob",
        "member_added presence-room carol",
        "member_removed presence-room bob",
        "member_removed presence-room alice",
        "member_removed presence-room carol",
        "channel_vacated presence-room",
    ];
    receiver.wait_for(expected.len()).await;
    assert_same(events_on(&receiver, room), &expected);
    assert_eq!(
        query(&nodes[1], "/channels").await,
        json!({"channels": {}}),
        "nothing is occupied"
    );
}

#[tokio::test]
async fn public_channels_are_occupied_and_vacated_once_for_the_cluster() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let nodes = three_nodes(&redis, &receiver);
    let mut sockets = Vec::new();
    for node in &nodes {
        sockets.push(listen(node, "lobby").await.0);
    }
    let counted = query(&nodes[0], "/channels?info=subscription_count").await;
    assert_eq!(
        counted,
        json!({"channels": {"lobby": {"subscription_count": 3}}})
    );
    for socket in &mut sockets {
        unsubscribe(socket, "lobby").await;
    }
    receiver.wait_for(2).await;
    assert_same(
        events_on(&receiver, "lobby"),
        &["channel_occupied lobby", "channel_vacated lobby"],
    );
    let channel = query(&nodes[2], "/channels/lobby?info=subscription_count").await;
    assert_eq!(channel, json!({"occupied": false, "subscription_count": 0}));
}

#[tokio::test]
async fn terminate_connections_closes_the_users_sockets_on_every_node() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let nodes = three_nodes(&redis, &receiver);
    let mut sockets = Vec::new();
    for node in &nodes[1..] {
        let (mut socket, socket_id) = ws::connect(node).await;
        let user_data = json!({"id": "u1"}).to_string();
        let auth = app().authorize_user(&socket_id, &user_data);
        ws::send(
            &mut socket,
            json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}),
        )
        .await;
        expect(&mut socket, "pusher:signin_success").await;
        sockets.push(socket);
    }
    let reply = nodes[0]
        .pusher_api(
            Method::POST,
            &format!("/apps/{APP_ID}/users/u1/terminate_connections"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    for socket in &mut sockets {
        let error = expect(socket, "pusher:error").await;
        assert_eq!(error["data"]["code"], 4009);
        assert_eq!(ws::read(socket).await, Read::Closed(Some(4009)));
    }
}

#[tokio::test]
async fn a_killed_node_s_members_and_occupancy_are_cleaned_up() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut nodes = three_nodes(&redis, &receiver);
    let room = "presence-doomed";
    let (mut alice, _, _) = join(&nodes[0], room, "alice").await;
    let (_bob, _, _) = join(&nodes[1], room, "bob").await;
    expect(&mut alice, "pusher_internal:member_added").await;
    let (_only, _) = listen(&nodes[1], "lonely").await;
    receiver.wait_for(4).await;

    let killed = Instant::now();
    nodes[1].kill();
    // Heartbeat 500 ms: silent after 1.5 s, swept on the second sighting.
    let removed = expect(&mut alice, "pusher_internal:member_removed").await;
    assert_eq!(data(&removed), json!({"user_id": "bob"}));
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    let vacated = eventually(Duration::from_secs(10), || async {
        events_on(&receiver, "lonely").contains(&"channel_vacated lonely".to_owned())
    })
    .await;
    assert!(vacated, "{:?}", receiver.events());
    assert_eq!(
        events_on(&receiver, "lonely"),
        ["channel_occupied lonely", "channel_vacated lonely"]
    );
    assert_same(
        events_on(&receiver, room),
        &[
            "channel_occupied presence-doomed",
            "member_added presence-doomed alice",
            "member_added presence-doomed bob",
            "member_removed presence-doomed bob",
        ],
    );
    let channels = query(&nodes[2], "/channels?info=subscription_count").await;
    assert_eq!(
        channels,
        json!({"channels": {room: {"subscription_count": 1}}})
    );

    // A node restarted with its old id clears its earlier run before it serves: Carol's
    // membership on node 2 outlives a restart of node 2 only until it is back.
    let (_carol, _, _) = join(&nodes[2], room, "carol").await;
    expect(&mut alice, "pusher_internal:member_added").await;
    nodes[2].kill();
    nodes[2].restart();
    let removed = expect(&mut alice, "pusher_internal:member_removed").await;
    assert_eq!(data(&removed), json!({"user_id": "carol"}));
}

#[tokio::test]
async fn with_redis_down_triggers_answer_503_in_time_and_sockets_stay_then_recover() {
    let mut redis = RedisServer::start();
    let nodes = redis.start_nodes(2, "", &[("VELO_REDIS_TIMEOUT_MS", "500")]);
    let (mut here, _) = listen(&nodes[0], "news").await;
    let (mut there, _) = listen(&nodes[1], "news").await;

    redis.kill();
    let started = Instant::now();
    let reply = trigger(&nodes[0], &["news"], "lost", "{}", None).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        reply.body
    );
    assert!(
        reply.body["error"]
            .as_str()
            .is_some_and(|error| error.contains("unavailable")),
        "{:?}",
        reply.body
    );
    // The timeout (500 ms), and room for a debug build on a busy machine.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Nothing was sent, and the sockets are still open.
    nothing_more(&mut here).await;
    nothing_more(&mut there).await;
    // Public subscriptions go on, and do not each wait out the timeout: once Redis has failed,
    // only one command per half second tries it.
    let started = Instant::now();
    for index in 0..5 {
        let reply = ws::subscribe(&mut here, &format!("outage-{index}"), None).await;
        assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
    }
    for index in 0..5 {
        unsubscribe(&mut here, &format!("outage-{index}")).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A presence join is refused, not left hanging.
    let (mut joiner, joiner_id) = ws::connect(&nodes[1]).await;
    let refused = join_on(&mut joiner, &joiner_id, "presence-x", "dora").await;
    assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");
    assert_eq!(data(&refused)["status"], 503);

    redis.restart();
    let back = eventually(Duration::from_secs(20), || async {
        trigger(&nodes[0], &["news"], "back", "{}", None)
            .await
            .status
            == StatusCode::OK
    })
    .await;
    assert!(back, "triggers work again once Redis is back");
    expect(&mut here, "back").await;
    // Each node resubscribes to the bus with backoff: triggers cross again both ways.
    assert!(
        reaches_eventually(&nodes[1], &mut here).await,
        "node 1 to node 0"
    );
    assert!(
        reaches_eventually(&nodes[0], &mut there).await,
        "node 0 to node 1"
    );
}

/// Triggers `again` on `news` from `from` until one reaches `to` (within 20 s); false if none
/// does. Frames before it are skipped.
async fn reaches_eventually(from: &Server, to: &mut Socket) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let _ = trigger(from, &["news"], "again", "{}", None).await;
        ws::send(to, json!({"event": "pusher:ping", "data": {}})).await;
        loop {
            let frame = ws::frame(to).await;
            if frame["event"] == "again" {
                return true;
            }
            if frame["event"] == "pusher:pong" {
                break;
            }
        }
        // Polling, as `eventually` does: the bus may still be reconnecting.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn the_presence_member_limit_holds_across_nodes() {
    let redis = RedisServer::start();
    let nodes = redis.start_nodes(3, "", &[("VELO_PRESENCE_MAX_MEMBERS", "2")]);
    let room = "presence-small";
    let (_alice, _, _) = join(&nodes[0], room, "alice").await;
    let (_bob, _, _) = join(&nodes[1], room, "bob").await;
    let (mut carol, carol_id) = ws::connect(&nodes[2]).await;
    let refused = join_on(&mut carol, &carol_id, room, "carol").await;
    assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");
    assert_eq!(data(&refused)["type"], "LimitReached");
    assert_eq!(data(&refused)["status"], 4100);
    // A present user's second socket, on a third node, never counts.
    let (_bob_tab, _, members) = join(&nodes[2], room, "bob").await;
    assert_eq!(members, ["alice", "bob"]);
}

#[tokio::test]
async fn a_node_stopping_leaves_the_cluster_at_once() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut nodes = three_nodes(&redis, &receiver);
    let room = "presence-leaving";
    let (mut alice, _, _) = join(&nodes[0], room, "alice").await;
    let (mut bob, _, _) = join(&nodes[1], room, "bob").await;
    expect(&mut alice, "pusher_internal:member_added").await;
    let mut stopping = nodes.remove(1);
    let stopped = tokio::task::spawn_blocking(move || stopping.terminate());
    // Its sockets are told to reconnect (4200) and leave before it stops: no heartbeat
    // expiry is waited for.
    assert_eq!(expect(&mut bob, "pusher:error").await["data"]["code"], 4200);
    assert_eq!(ws::read(&mut bob).await, Read::Closed(Some(4200)));
    assert!(stopped.await.unwrap(), "node 1 stops cleanly");
    let removed = expect(&mut alice, "pusher_internal:member_removed").await;
    assert_eq!(data(&removed), json!({"user_id": "bob"}));
    let users = query(&nodes[1], &format!("/channels/{room}/users")).await;
    assert_eq!(users, json!({"users": [{"id": "alice"}]}));
}

#[tokio::test]
async fn deployments_sharing_a_redis_never_hear_each_other() {
    let redis = RedisServer::start();
    let blue = [("VELO_REDIS_PREFIX", "blue:")];
    let green = [("VELO_REDIS_PREFIX", "green:")];
    let blue_nodes = [
        redis.start_node(0, "", &blue),
        redis.start_node(1, "", &blue),
    ];
    // The same node id in another deployment is another node.
    let green_node = redis.start_node(0, "", &green);
    let (mut blue_socket, _) = listen(&blue_nodes[1], "news").await;
    let (mut green_socket, _) = listen(&green_node, "news").await;
    let reply = trigger(&blue_nodes[0], &["news"], "blue", "{}", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    expect(&mut blue_socket, "blue").await;
    nothing_more(&mut green_socket).await;
    for (node, deployment) in [(&blue_nodes[0], "blue"), (&green_node, "green")] {
        assert_eq!(
            query(node, "/channels?info=subscription_count").await,
            json!({"channels": {"news": {"subscription_count": 1}}}),
            "{deployment} counts its own socket only"
        );
    }
}

#[tokio::test]
async fn a_leave_made_while_redis_is_down_is_finished_when_it_is_back() {
    let mut redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let nodes = redis.start_nodes(
        2,
        "",
        &[
            ("VELO_REDIS_TIMEOUT_MS", "300"),
            ("VELO_WEBHOOK_URLS", receiver.url.as_str()),
        ],
    );
    let room = "presence-outage";
    let (mut alice, _, _) = join(&nodes[0], room, "alice").await;
    let (mut bob, _, _) = join(&nodes[1], room, "bob").await;
    expect(&mut alice, "pusher_internal:member_added").await;
    receiver.wait_for(3).await;

    redis.kill();
    // Bob leaves while Redis is away: node 1 cannot tell it yet.
    ws::send(
        &mut bob,
        json!({"event": "pusher:unsubscribe", "data": {"channel": room}}),
    )
    .await;
    ws::send(&mut bob, json!({"event": "pusher:ping", "data": {}})).await;
    expect(&mut bob, "pusher:pong").await;
    redis.restart();

    let users = format!("/channels/{room}/users");
    let gone = eventually(Duration::from_secs(20), || async {
        let reply = nodes[0]
            .pusher_api(Method::GET, &format!("/apps/{APP_ID}{users}"), None)
            .await;
        reply.status == StatusCode::OK && reply.body == json!({"users": [{"id": "alice"}]})
    })
    .await;
    assert!(gone, "bob's leave was retried once Redis was back");
    receiver.wait_for(4).await;
    assert_same(
        events_on(&receiver, room),
        &[
            "channel_occupied presence-outage",
            "member_added presence-outage alice",
            "member_added presence-outage bob",
            "member_removed presence-outage bob",
        ],
    );
}

#[tokio::test]
async fn a_node_taken_for_dead_while_paused_rejoins_when_it_wakes() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let nodes = redis.start_nodes(2, "", &[("VELO_WEBHOOK_URLS", receiver.url.as_str())]);
    let room = "presence-paused";
    let (mut alice, _, _) = join(&nodes[0], room, "alice").await;
    let (mut bob, _, _) = join(&nodes[1], room, "bob").await;
    expect(&mut alice, "pusher_internal:member_added").await;
    let (_lobby, _) = listen(&nodes[1], "paused-lobby").await;

    // Node 1 stops beating while its sockets stay connected: it is swept as dead.
    nodes[1].signal("STOP");
    let removed = expect(&mut alice, "pusher_internal:member_removed").await;
    assert_eq!(data(&removed), json!({"user_id": "bob"}));
    let lobby = "/channels?filter_by_prefix=paused-";
    assert_eq!(query(&nodes[0], lobby).await, json!({"channels": {}}));

    // Awake, it finds it was forgotten: its counts are written again, and its presence
    // sockets are told to reconnect (4200), so that their members are right everywhere.
    nodes[1].signal("CONT");
    // (The sweep's member_removed, which pub/sub brought it while it was paused, may come
    // first.)
    let mut next = ws::frame(&mut bob).await;
    if next["event"] == "pusher_internal:member_removed" {
        next = ws::frame(&mut bob).await;
    }
    assert_eq!(next["event"], "pusher:error", "{next}");
    assert_eq!(next["data"]["code"], 4200);
    assert_eq!(ws::read(&mut bob).await, Read::Closed(Some(4200)));
    let (_bob, _, members) = join(&nodes[1], room, "bob").await;
    assert_eq!(members, ["alice", "bob"]);
    expect(&mut alice, "pusher_internal:member_added").await;
    let counted = eventually(Duration::from_secs(10), || async {
        query(&nodes[0], lobby).await == json!({"channels": {"paused-lobby": {}}})
    })
    .await;
    assert!(counted, "node 1's lobby subscriber is counted again");
}
