//! The `pusher` driver end to end: server A delivers through an external Pusher-compatible
//! service, played by server B (built-in driver). Clients connect to B and subscribe through
//! A; A's record events reach them through B's signed HTTP API.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::ws::{Socket, connect, event, frame, send, subscribe};
use support::{APP_ID, APP_KEY, APP_SECRET, Server};

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "", create = "" }

[[collections]]
name = "notes"
api_rules = { list = "@request.auth.id = owner", create = "owner = @request.auth.id" }
"#;

/// B, the "external service", and A, pointed at it.
fn servers(retry_window_secs: u64) -> (Server, Server) {
    let b = Server::start(COLLECTIONS);
    let window = retry_window_secs.to_string();
    let a = Server::start_delivering_through(
        &b,
        COLLECTIONS,
        300,
        &[
            ("VELO_PUSHER_RETRY_WINDOW_SECS", &window),
            // A's own app differs from B's: signatures must come from the external app.
            ("VELO_APP_KEY", "a-key"),
            ("VELO_APP_SECRET", "a-secret"),
        ],
    );
    (a, b)
}

/// Subscribes through A, then listens on B (authorized through A when private).
async fn listen(
    a: &Server,
    b: &Server,
    token: Option<&str>,
    collection: &str,
    filter: Option<&str>,
) -> Socket {
    let subscribed = a.subscribe(token, collection, filter).await;
    assert_eq!(subscribed.status, StatusCode::OK, "{:?}", subscribed.body);
    let name = subscribed.body["channel_name"].as_str().unwrap().to_owned();
    let (mut socket, socket_id) = connect(b).await;
    let reply = if subscribed.body["is_public"] == true {
        subscribe(&mut socket, &name, Some("")).await
    } else {
        let private = format!("private-{name}");
        let body = json!({"socket_id": socket_id, "channel_name": private});
        let auth = a
            .call(Method::POST, "/api/realtime/auth", token, Some(body))
            .await;
        assert_eq!(auth.status, StatusCode::OK, "{:?}", auth.body);
        subscribe(&mut socket, &private, auth.body["auth"].as_str()).await
    };
    assert_eq!(
        reply["event"], "pusher_internal:subscription_succeeded",
        "{reply}"
    );
    socket
}

async fn nothing_more(socket: &mut Socket) {
    send(socket, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(frame(socket).await["event"], "pusher:pong");
}

async fn create(server: &Server, collection: &str, token: Option<&str>, body: Value) {
    let reply = server
        .call(
            Method::POST,
            &format!("/api/collections/{collection}/records"),
            token,
            Some(body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

#[tokio::test]
async fn events_travel_through_the_external_service() {
    let (a, b) = servers(30);
    let mut active = listen(&a, &b, None, "posts", Some("status = 'active'")).await;
    create(
        &a,
        "posts",
        None,
        json!({"status": "active", "title": "Hello World"}),
    )
    .await;
    let (name, data) = event(&mut active).await;
    assert_eq!(
        (name.as_str(), data["record"]["title"].as_str()),
        ("created", Some("Hello World"))
    );
    create(&a, "posts", None, json!({"status": "draft"})).await;
    create(
        &a,
        "posts",
        None,
        json!({"status": "active", "title": "second"}),
    )
    .await;
    assert_eq!(
        event(&mut active).await.1["record"]["title"],
        "second",
        "the draft was filtered out"
    );

    let alice = a.token("alice", json!({}), Some(3600));
    let mut private = listen(&a, &b, Some(&alice), "notes", None).await;
    create(
        &a,
        "notes",
        Some(&alice),
        json!({"owner": "alice", "text": "mine"}),
    )
    .await;
    assert_eq!(event(&mut private).await.1["record"]["text"], "mine");

    // Too big for Pusher's 10 KB: the client is told which record to fetch.
    create(
        &a,
        "posts",
        None,
        json!({"status": "active", "body": "x".repeat(20_000)}),
    )
    .await;
    let (_, data) = event(&mut active).await;
    assert_eq!(data["truncated"], true);
    assert!(data["record"]["id"].is_string() && data["record"].get("body").is_none());
    nothing_more(&mut active).await;

    if let Err(metrics) = a.wait_for_metrics(&["velo_pusher_sent_total 4"]).await {
        panic!("{metrics}");
    }
}

#[tokio::test]
async fn a_paused_service_loses_nothing_within_the_retry_window() {
    let (a, b) = servers(30);
    let mut socket = listen(&a, &b, None, "posts", None).await;
    b.signal("STOP");
    for n in 0..5 {
        create(&a, "posts", None, json!({"n": n})).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.signal("CONT");
    for n in 0..5 {
        assert_eq!(event(&mut socket).await.1["record"]["n"], n, "in order");
    }
}

#[tokio::test]
async fn events_that_outlive_the_retry_window_are_dropped_and_counted() {
    let (a, b) = servers(1);
    let mut socket = listen(&a, &b, None, "posts", None).await;
    b.signal("STOP");
    create(&a, "posts", None, json!({"n": "lost"})).await;
    let dropped = support::eventually(Duration::from_secs(20), || async {
        a.logged(&["retry window", "dropped"])
    })
    .await;
    b.signal("CONT");
    assert!(dropped, "the drop is logged");
    if let Err(metrics) = a.wait_for_metrics(&["velo_pusher_dropped_total 1"]).await {
        panic!("{metrics}");
    }
    // A gave up on it; a paused service may still act on the request it had received (A
    // cannot know), so the dropped event may or may not arrive. A goes on with the next ones.
    create(&a, "posts", None, json!({"n": "after"})).await;
    let mut next = event(&mut socket).await.1;
    if next["record"]["n"] == "lost" {
        next = event(&mut socket).await.1;
    }
    assert_eq!(next["record"]["n"], "after");
}

#[tokio::test]
async fn webhooks_keep_subscriptions_alive_and_are_verified() {
    let b = Server::start(COLLECTIONS);
    let a = Server::start_delivering_through(&b, COLLECTIONS, 1, &[]);
    let kept = a.subscribe(None, "posts", None).await.body["channel_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"time_ms": 1, "events": [{"name": "channel_occupied", "channel": kept}]})
        .to_string();
    let app = velo_realtime::pusher::signature::AppCredentials::new(APP_ID, APP_KEY, APP_SECRET);
    let webhook = |signature: String, body: String| {
        a.raw(
            a.request(Method::POST, "/api/realtime/webhooks/pusher")
                .header("X-Pusher-Key", APP_KEY)
                .header("X-Pusher-Signature", signature)
                .header("Content-Type", "application/json")
                .body(body),
        )
    };
    let forged = webhook("00".repeat(32), body.clone()).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let signature = app.webhook_signature(body.as_bytes());
    assert_eq!(webhook(signature, body).await.status, StatusCode::OK);
    let idle = a.subscribe(None, "posts", None).await.body["channel_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let idle_id = idle.strip_prefix("velo.realtime.").unwrap().to_owned();
    let pruned = support::eventually(Duration::from_secs(10), || async {
        a.logged(&["subscription ended", &idle_id, "stale"])
    })
    .await;
    assert!(pruned);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        a.ping(None, &kept).await.status,
        StatusCode::OK,
        "the occupied channel kept it"
    );
}

#[tokio::test]
async fn ended_reaches_the_external_service_in_order() {
    let (a, b) = servers(30);
    let mut socket = listen(&a, &b, None, "posts", None).await;
    create(&a, "posts", None, json!({"n": 1})).await;
    let reply = a
        .call(
            Method::PATCH,
            "/api/collections/posts",
            Some(support::ADMIN),
            Some(json!({"api_rules": {"list": "owner = @request.auth.id"}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        event(&mut socket).await.0,
        "created",
        "the event before it first"
    );
    assert_eq!(
        event(&mut socket).await,
        (
            "ended".to_owned(),
            json!({"action": "ended", "reason": "rule_changed"})
        )
    );
}

/// An encrypted collection through the `pusher` driver: the external service is handed only
/// sealed data (it relays `data` untouched, so what its sockets get is what it received), which
/// the client opens with the `shared_secret` A's channel authorization answers; the 10 KB
/// limit applies to the sealed text.
#[tokio::test]
async fn the_external_service_sees_only_ciphertext_of_an_encrypted_collection() {
    const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let vault = r#"
[[collections]]
name = "vault"
encrypted = true
api_rules = { list = "@request.auth.id = owner", create = "owner = @request.auth.id" }
"#;
    let b = Server::start("");
    let a = Server::start_delivering_through(
        &b,
        vault,
        300,
        &[("VELO_ENCRYPTION_MASTER_KEY", MASTER_KEY)],
    );
    let alice = a.token("alice", json!({}), Some(3600));
    let subscribed = a.subscribe(Some(&alice), "vault", None).await;
    let channel = subscribed.body["pusher_channel"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(channel.starts_with("private-encrypted-"), "{channel}");
    let (mut socket, socket_id) = connect(&b).await;
    let body = json!({"socket_id": socket_id, "channel_name": channel});
    let auth = a
        .call(Method::POST, "/api/realtime/auth", Some(&alice), Some(body))
        .await;
    assert_eq!(auth.status, StatusCode::OK, "{:?}", auth.body);
    let secret = auth.body["shared_secret"].as_str().unwrap().to_owned();
    let joined = subscribe(&mut socket, &channel, auth.body["auth"].as_str()).await;
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");

    create(
        &a,
        "vault",
        Some(&alice),
        json!({"owner": "alice", "pin": "4711-classified"}),
    )
    .await;
    let relayed = frame(&mut socket).await;
    assert_eq!(relayed["event"], "created");
    let data = relayed["data"].as_str().unwrap();
    assert!(
        !data.contains("classified") && !data.contains("alice"),
        "{data}"
    );
    let payload = support::open_sealed(data, &secret);
    assert_eq!(payload["record"]["pin"], "4711-classified");

    // Small enough in plain, too big once sealed: truncated, then sealed.
    create(
        &a,
        "vault",
        Some(&alice),
        json!({"owner": "alice", "body": "x".repeat(9_000)}),
    )
    .await;
    let relayed = frame(&mut socket).await;
    let data = relayed["data"].as_str().unwrap();
    assert!(data.len() <= 10 * 1024, "{}", data.len());
    let payload = support::open_sealed(data, &secret);
    assert_eq!(payload["truncated"], true);
    assert!(payload["record"]["id"].is_string() && payload["record"].get("body").is_none());
    nothing_more(&mut socket).await;
}

#[tokio::test]
async fn triggers_go_to_the_external_service_too() {
    let (a, b) = servers(30);
    let (mut socket, _) = connect(&b).await;
    let reply = subscribe(&mut socket, "news", None).await;
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
    let sent = a
        .call(
            Method::POST,
            "/api/console/events",
            Some(support::ADMIN),
            Some(json!({ "channels": ["news"], "event": "breaking", "data": "{\"headline\":\"hi\"}" })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{:?}", sent.body);
    // A has no socket of its own on the channel: the event reaches B's, through B's HTTP API.
    assert_eq!(sent.body["sockets"], 0, "{:?}", sent.body);
    let (name, data) = event(&mut socket).await;
    assert_eq!(
        (name.as_str(), data),
        ("breaking", json!({ "headline": "hi" }))
    );
    nothing_more(&mut socket).await;
}
