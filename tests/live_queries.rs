//! Live queries against the real server (DESIGN.md §13): a snapshot taken with the
//! subscription, numbered events held for the first socket, `left`, recovery and its limits.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::ws::{self, event};
use support::{ADMIN, Reply, Server};

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "", view = "", create = "", update = "", delete = "" }

[[collections]]
name = "notes"
api_rules = { list = "@request.auth.id != '' && owner = @request.auth.id", view = "", create = "", update = "", delete = "" }
"#;

async fn live(server: &Server, token: Option<&str>, body: Value) -> Reply {
    server
        .call(Method::POST, "/api/realtime/subscribe", token, Some(body))
        .await
}

async fn create(server: &Server, collection: &str, record: Value) -> Value {
    let reply = server
        .call(
            Method::POST,
            &format!("/api/collections/{collection}/records"),
            Some(ADMIN),
            Some(record),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body["data"].clone()
}

async fn update(server: &Server, collection: &str, id: &str, fields: Value) {
    let reply = server
        .call(
            Method::PATCH,
            &format!("/api/collections/{collection}/records/{id}"),
            Some(ADMIN),
            Some(fields),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

async fn recover(server: &Server, token: Option<&str>, channel: &str, after: u64) -> Reply {
    server
        .call(
            Method::GET,
            &format!("/api/realtime/subscriptions/{channel}/events?after={after}"),
            token,
            None,
        )
        .await
}

fn ids(records: &Value) -> Vec<&str> {
    records
        .as_array()
        .expect("records")
        .iter()
        .map(|record| record["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_snapshot_then_every_change_numbered_with_what_came_before_the_socket_held() {
    let server = Server::start(COLLECTIONS);
    for (id, n) in [("a1", 1), ("a2", 2), ("a3", 3), ("b1", 10)] {
        create(&server, "posts", json!({"id": id, "n": n})).await;
    }
    let reply = live(
        &server,
        None,
        json!({"collection": "posts", "filter": "n < 5", "snapshot": true, "sort": "-n", "per_page": 2}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["seq"], 0);
    assert_eq!(
        ids(&reply.body["records"]),
        ["a3", "a2"],
        "sorted, one page"
    );
    let channel = reply.body["pusher_channel"].as_str().unwrap().to_owned();

    // Changes before any socket listens are held for the first one.
    create(&server, "posts", json!({"id": "a4", "n": 4})).await;
    create(&server, "posts", json!({"id": "b2", "n": 20})).await;
    update(&server, "posts", "a1", json!({"title": "x"})).await;

    let (mut socket, _) = ws::connect(&server).await;
    let succeeded = ws::subscribe(&mut socket, &channel, None).await;
    assert_eq!(
        succeeded["event"], "pusher_internal:subscription_succeeded",
        "{succeeded}"
    );
    let (name, data) = event(&mut socket).await;
    assert_eq!(name, "created");
    assert_eq!(data["seq"], 1);
    assert_eq!(data["record"]["id"], "a4");
    let (name, data) = event(&mut socket).await;
    assert_eq!((name.as_str(), &data["seq"]), ("updated", &json!(2)));
    assert_eq!(data["record"]["title"], "x");

    // Then live, in order; the writer's own socket is not left out (no gap in `seq`).
    let (_, socket_id) = ws::connect(&server).await;
    let reply = server
        .raw(
            server
                .request(Method::DELETE, "/api/collections/posts/records/a2")
                .bearer_auth(ADMIN)
                .header("X-Socket-ID", socket_id),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.body);
    let (name, data) = event(&mut socket).await;
    assert_eq!((name.as_str(), &data["seq"]), ("deleted", &json!(3)));
    assert_eq!(data["record"]["id"], "a2");

    // Everything since the subscription, from the history.
    let missed = recover(&server, None, &channel, 0).await;
    assert_eq!(missed.status, StatusCode::OK, "{:?}", missed.body);
    let events = missed.body["events"].as_array().unwrap();
    let seqs: Vec<_> = events.iter().map(|event| &event["data"]["seq"]).collect();
    assert_eq!(seqs, [&json!(1), &json!(2), &json!(3)]);
    assert_eq!(events[2]["event"], "deleted");
    assert_eq!(events[0]["data"]["record"]["id"], "a4");
    let missed = recover(&server, None, &channel, 2).await;
    assert_eq!(missed.body["events"].as_array().unwrap().len(), 1);
    let none = recover(&server, None, &channel, 3).await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.body["events"], json!([]));
    let ahead = recover(&server, None, &channel, 4).await;
    assert_eq!(
        ahead.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        ahead.body
    );
}

#[tokio::test]
async fn an_update_out_of_the_filter_is_left_and_one_into_it_is_updated() {
    let server = Server::start(COLLECTIONS);
    create(&server, "posts", json!({"id": "p1", "status": "active"})).await;
    create(&server, "posts", json!({"id": "p2", "status": "draft"})).await;
    let reply = live(
        &server,
        None,
        json!({"collection": "posts", "filter": "status = 'active'", "leave_events": true}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["seq"], 0);
    assert!(reply.body.get("records").is_none(), "no snapshot asked for");
    let channel = reply.body["pusher_channel"].as_str().unwrap().to_owned();
    let (mut socket, _) = ws::connect(&server).await;
    ws::subscribe(&mut socket, &channel, None).await;

    update(
        &server,
        "posts",
        "p1",
        json!({"status": "archived", "secret": "s"}),
    )
    .await;
    let (name, data) = event(&mut socket).await;
    assert_eq!(name, "left");
    assert_eq!(
        data,
        json!({"action": "left", "record": {"id": "p1", "collection_id": data["record"]["collection_id"]}, "seq": 1})
    );
    assert!(data["record"]["collection_id"].is_string());
    // Out of view already: nothing more about it.
    update(&server, "posts", "p1", json!({"title": "still archived"})).await;
    update(&server, "posts", "p2", json!({"status": "active"})).await;
    let (name, data) = event(&mut socket).await;
    assert_eq!((name.as_str(), &data["seq"]), ("updated", &json!(2)));
    assert_eq!(data["record"]["id"], "p2");
}

#[tokio::test]
async fn a_per_user_rule_sends_left_never_the_data_and_a_rule_change_ends_live_subscriptions() {
    let server = Server::start(COLLECTIONS);
    let alice = server.token("alice", json!({}), None);
    create(
        &server,
        "notes",
        json!({"id": "n1", "owner": "alice", "text": "mine"}),
    )
    .await;
    let reply = live(
        &server,
        Some(&alice),
        json!({"collection": "notes", "snapshot": true, "leave_events": true}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(ids(&reply.body["records"]), ["n1"]);
    let channel = reply.body["pusher_channel"].as_str().unwrap().to_owned();
    assert!(channel.starts_with("private-"), "{channel}");
    let (mut socket, socket_id) = ws::connect(&server).await;
    let auth = server
        .call(
            Method::POST,
            "/api/realtime/auth",
            Some(&alice),
            Some(json!({"socket_id": socket_id, "channel_name": channel})),
        )
        .await;
    assert_eq!(auth.status, StatusCode::OK, "{:?}", auth.body);
    ws::subscribe(&mut socket, &channel, auth.body["auth"].as_str()).await;

    update(
        &server,
        "notes",
        "n1",
        json!({"owner": "bob", "text": "bob's now"}),
    )
    .await;
    let (name, data) = event(&mut socket).await;
    assert_eq!(name, "left");
    assert_eq!(data["seq"], 1);
    assert!(!data.to_string().contains("bob"), "{data}");

    // Neither another user nor a guest may read alice's events (as neither may end them).
    let bob = server.token("bob", json!({}), None);
    let bare = channel.trim_start_matches("private-");
    assert_eq!(
        recover(&server, Some(&bob), bare, 0).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        recover(&server, None, bare, 0).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        recover(&server, Some(&alice), bare, 0).await.status,
        StatusCode::OK
    );

    // A change of the list rule ends the live subscription: its client takes a new snapshot.
    let changed = server
        .call(
            Method::PATCH,
            "/api/collections/notes",
            Some(ADMIN),
            Some(json!({"api_rules": {"list": "@request.auth.id != '' && (owner = @request.auth.id || shared = true)"}})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let (name, data) = event(&mut socket).await;
    assert_eq!(name, "ended");
    assert_eq!(data["reason"], "rule_changed");
    assert_eq!(data["seq"], 2);
    assert_eq!(
        recover(&server, Some(&alice), bare, 0).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn past_the_history_recovery_is_gone() {
    let server = Server::start_with_env(COLLECTIONS, 300, &[("VELO_HISTORY_EVENTS", "3")]);
    let reply = live(
        &server,
        None,
        json!({"collection": "posts", "snapshot": true}),
    )
    .await;
    let channel = reply.body["channel_name"].as_str().unwrap().to_owned();
    for n in 0..5 {
        create(&server, "posts", json!({"id": format!("r{n}")})).await;
    }
    // Nobody listens, and the channel is not held forever: the events are in the history.
    let kept = recover(&server, None, &channel, 2).await;
    assert_eq!(kept.status, StatusCode::OK, "{:?}", kept.body);
    let seqs: Vec<_> = kept.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["data"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let gone = recover(&server, None, &channel, 1).await;
    assert_eq!(gone.status, StatusCode::GONE, "{:?}", gone.body);
    assert!(gone.body["message"].as_str().unwrap().contains("snapshot"));
}

#[tokio::test]
async fn live_options_are_checked_before_anything_is_made() {
    let server = Server::start(COLLECTIONS);
    for (body, field) in [
        (json!({"collection": "posts", "sort": "n"}), "sort"),
        (json!({"collection": "posts", "per_page": 5}), "per_page"),
        (
            json!({"collection": "posts", "snapshot": true, "per_page": 501}),
            "per_page",
        ),
        (
            json!({"collection": "posts", "snapshot": true, "per_page": 0}),
            "per_page",
        ),
        (
            json!({"collection": "posts", "snapshot": true, "sort": "n n"}),
            "sort",
        ),
        (
            json!({"collection": "posts", "snapshot": "yes"}),
            "snapshot",
        ),
    ] {
        let reply = live(&server, None, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            reply.body
        );
        assert!(
            reply.body["errors"].get(field).is_some()
                || reply.body["message"].as_str().unwrap().contains(field),
            "{body}: {:?}",
            reply.body
        );
    }
    let counted = server.metrics().await;
    assert!(
        counted
            .lines()
            .all(|line| !line.starts_with("velo_subscriptions{") || line.ends_with(" 0")),
        "nothing was made: {counted}"
    );
    // A subscription that is not live has no numbered events to recover.
    let plain = server.subscribe(None, "posts", None).await;
    let channel = plain.body["channel_name"].as_str().unwrap();
    assert!(plain.body.get("seq").is_none(), "{:?}", plain.body);
    let reply = recover(&server, None, channel, 0).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    let unknown = recover(
        &server,
        None,
        "velo.realtime.00000000-0000-0000-0000-000000000000",
        0,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad = server
        .call(
            Method::GET,
            &format!("/api/realtime/subscriptions/{channel}/events?after=x"),
            None,
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{:?}", bad.body);
}

#[tokio::test]
async fn a_live_subscription_does_not_outlive_a_restart() {
    let mut server = Server::start(COLLECTIONS);
    let reply = live(
        &server,
        None,
        json!({"collection": "posts", "snapshot": true}),
    )
    .await;
    let channel = reply.body["channel_name"].as_str().unwrap().to_owned();
    let plain = server.subscribe(None, "posts", None).await;
    let plain = plain.body["channel_name"].as_str().unwrap().to_owned();
    create(&server, "posts", json!({"id": "r1"})).await;
    server.terminate();
    server.restart();
    assert_eq!(
        recover(&server, None, &channel, 0).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.ping(None, &channel).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.ping(None, &plain).await.status,
        StatusCode::OK,
        "a plain one does"
    );
}

#[tokio::test]
async fn a_fresher_token_with_other_claims_ends_a_live_subscription() {
    let server = Server::start(COLLECTIONS);
    let first = server.token("alice", json!({"team": "red"}), Some(60));
    let reply = live(
        &server,
        Some(&first),
        json!({"collection": "notes", "leave_events": true}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let channel = reply.body["channel_name"].as_str().unwrap().to_owned();
    // The same claims, a later expiry: it goes on.
    let later = server.token("alice", json!({"team": "red"}), Some(600));
    assert_eq!(
        server.ping(Some(&later), &channel).await.status,
        StatusCode::OK
    );
    assert_eq!(
        recover(&server, Some(&later), &channel, 0).await.status,
        StatusCode::OK
    );
    // Other claims: what the rule sees would change with no `left`, so it ends.
    let moved = server.token("alice", json!({"team": "blue"}), Some(900));
    assert_eq!(
        server.ping(Some(&moved), &channel).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        recover(&server, Some(&moved), &channel, 0).await.status,
        StatusCode::NOT_FOUND
    );
}
