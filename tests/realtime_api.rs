//! The subscribe API against the real server: admission by list rule, validation, ping,
//! unsubscribe, pruning, restarts and crashes.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{ADMIN, Server, eventually};

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "" }

[[collections]]
name = "notes"
api_rules = { list = "@request.auth.id != '' && owner = @request.auth.id" }

[[collections]]
name = "secrets"
"#;

fn channel(reply: &support::Reply) -> String {
    reply.body["channel_name"]
        .as_str()
        .expect("a channel name")
        .to_owned()
}

#[tokio::test]
async fn a_guest_subscribes_to_a_public_collection() {
    let server = Server::start(COLLECTIONS);
    let reply = server
        .subscribe(None, "posts", Some("status = 'active'"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["is_public"], true);
    let name = channel(&reply);
    let uuid = name
        .strip_prefix("velo.realtime.")
        .expect("the default prefix");
    assert_eq!(uuid.len(), 36, "{name}");
    let again = server
        .subscribe(None, "posts", Some("status = 'active'"))
        .await;
    assert_ne!(
        channel(&again),
        name,
        "every subscription has its own channel"
    );
    // With a socket id, as pusher-js reports it.
    let body = json!({"collection": "posts", "socket_id": "123.456", "filter": "status=active"});
    let reply = server
        .call(Method::POST, "/api/realtime/subscribe", None, Some(body))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn the_list_rule_decides_who_may_subscribe() {
    let server = Server::start(COLLECTIONS);
    let alice = server.token("alice", json!({}), Some(3600));

    let guest = server.subscribe(None, "notes", None).await;
    assert_eq!(guest.status, StatusCode::UNAUTHORIZED);
    assert_eq!(guest.body, json!({"message": "Unauthenticated."}));
    let user = server.subscribe(Some(&alice), "notes", None).await;
    assert_eq!(user.status, StatusCode::OK, "{:?}", user.body);
    assert_eq!(user.body["is_public"], false, "needs a private channel");

    // SUPERUSER_ONLY (an absent rule): admin 200, user 403, guest 401.
    assert_eq!(
        server.subscribe(Some(ADMIN), "secrets", None).await.status,
        StatusCode::OK
    );
    let refused = server.subscribe(Some(&alice), "secrets", None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body["message"].as_str().unwrap().contains("admin"));
    assert_eq!(
        server.subscribe(None, "secrets", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // A bad or expired token is never taken for a guest, even where guests are welcome.
    let expired = server.token("alice", json!({"exp": 1}), None);
    let reply = server.subscribe(Some(&expired), "posts", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply.body["message"].as_str().unwrap().contains("expired"),
        "{:?}",
        reply.body
    );
    assert_eq!(
        server
            .subscribe(Some("not-a-token"), "posts", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let basic = server
        .raw(
            server
                .request(Method::POST, "/api/realtime/subscribe")
                .header("authorization", "Basic YWxpY2U6c2VjcmV0")
                .json(&json!({"collection": "posts"})),
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let server = Server::start(COLLECTIONS);

    let unknown = server.subscribe(None, "nope", None).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unknown.body["errors"]["collection"][0]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    let unknown_id = server.subscribe(None, "abcdefghijklmno", None).await;
    assert_eq!(unknown_id.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown_id.body["errors"]["collection"].is_array());

    // By id works like by name.
    let collections = server
        .call(Method::GET, "/api/collections", Some(ADMIN), None)
        .await;
    let posts_id = collections.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "posts")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        server.subscribe(None, &posts_id, None).await.status,
        StatusCode::OK
    );

    let malformed = server
        .raw(
            server
                .request(Method::POST, "/api/realtime/subscribe")
                .header("content-type", "application/json")
                .body("{\"collection\": "),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.body["message"].as_str().unwrap().contains("JSON"));

    let wrong_type = server
        .raw(
            server
                .request(Method::POST, "/api/realtime/subscribe")
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);

    let body = json!({"collection": 42, "filter": ["x"]});
    let wrong_types = server
        .call(Method::POST, "/api/realtime/subscribe", None, Some(body))
        .await;
    assert_eq!(wrong_types.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        wrong_types.body["errors"]["collection"].is_array(),
        "{:?}",
        wrong_types.body
    );
    assert!(
        wrong_types.body["errors"]["filter"].is_array(),
        "{:?}",
        wrong_types.body
    );

    let missing = server
        .call(
            Method::POST,
            "/api/realtime/subscribe",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(missing.body["errors"]["collection"].is_array());

    let bad_filter = server
        .subscribe(None, "posts", Some("status = 'active' AND (age >"))
        .await;
    assert_eq!(bad_filter.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = bad_filter.body["errors"]["filter"][0].as_str().unwrap();
    assert!(message.contains("position 29"), "{message}");

    let body = json!({"collection": "posts", "socket_id": "not-a-socket"});
    let bad_socket = server
        .call(Method::POST, "/api/realtime/subscribe", None, Some(body))
        .await;
    assert_eq!(bad_socket.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_socket.body["errors"]["socket_id"].is_array());

    let huge = json!({"collection": "posts", "filter": "x".repeat(2 << 20)});
    let too_large = server
        .call(Method::POST, "/api/realtime/subscribe", None, Some(huge))
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn ping_and_unsubscribe() {
    let server = Server::start(COLLECTIONS);
    let alice = server.token("alice", json!({}), Some(3600));
    let bob = server.token("bob", json!({}), Some(3600));

    let name = channel(&server.subscribe(Some(&alice), "notes", None).await);
    let ping = server.ping(None, &name).await;
    assert_eq!(
        (ping.status, ping.body),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        server.ping(None, &format!("private-{name}")).await.status,
        StatusCode::OK
    );
    let unknown = "velo.realtime.00000000-0000-4000-8000-000000000000";
    assert_eq!(
        server.ping(None, unknown).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.ping(None, "garbage").await.status,
        StatusCode::NOT_FOUND
    );

    // Another user may not end it; its owner may.
    assert_eq!(
        server.unsubscribe(Some(&bob), &name).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server.unsubscribe(None, &name).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server.unsubscribe(Some(&alice), &name).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(server.ping(None, &name).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.unsubscribe(Some(&alice), &name).await.status,
        StatusCode::NOT_FOUND
    );

    // The admin may end anyone's.
    let name = channel(&server.subscribe(Some(&alice), "notes", None).await);
    assert_eq!(
        server.unsubscribe(Some(ADMIN), &name).await.status,
        StatusCode::NO_CONTENT
    );
    // A guest's subscription: its channel name is the capability.
    let name = channel(&server.subscribe(None, "posts", None).await);
    assert_eq!(
        server.unsubscribe(None, &name).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn stale_subscriptions_are_pruned_and_pings_keep_them() {
    let server = Server::start_with(COLLECTIONS, 1);
    let stale = channel(&server.subscribe(None, "posts", None).await);
    let kept = channel(&server.subscribe(None, "posts", None).await);
    let stale_id = stale.strip_prefix("velo.realtime.").unwrap();
    // Pinging `stale` would keep it alive: watch the log instead, while `kept` is pinged.
    let pruned = eventually(Duration::from_secs(10), || async {
        assert_eq!(
            server.ping(None, &kept).await.status,
            StatusCode::OK,
            "pinged, so kept"
        );
        server.logged(&["subscription ended", stale_id, "stale"])
    })
    .await;
    assert!(pruned, "an unpinged subscription ends after the threshold");
    assert_eq!(
        server.ping(None, &stale).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.ping(None, &kept).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_subscription_ends_when_its_token_expires_unless_refreshed() {
    let server = Server::start(COLLECTIONS);
    let short = server.token("alice", json!({}), Some(2));
    let expiring = channel(&server.subscribe(Some(&short), "notes", None).await);
    let refreshed = channel(&server.subscribe(Some(&short), "notes", None).await);
    let fresh = server.token("alice", json!({}), Some(3600));
    assert_eq!(
        server.ping(Some(&fresh), &refreshed).await.status,
        StatusCode::OK
    );
    let ended = eventually(Duration::from_secs(10), || async {
        server.ping(None, &expiring).await.status == StatusCode::NOT_FOUND
    })
    .await;
    assert!(ended, "the subscription ends with its token");
    assert_eq!(
        server.ping(None, &refreshed).await.status,
        StatusCode::OK,
        "refreshed by a fresh token"
    );
}

#[tokio::test]
async fn a_token_refreshed_by_a_ping_survives_kill_9() {
    let mut server = Server::start(COLLECTIONS);
    let short = server.token("alice", json!({}), Some(3));
    let channels: Vec<String> = futures::future::join_all(
        (0..8).map(|_| async { channel(&server.subscribe(Some(&short), "notes", None).await) }),
    )
    .await;
    let fresh = server.token("alice", json!({}), Some(3600));
    for name in &channels {
        assert_eq!(server.ping(Some(&fresh), name).await.status, StatusCode::OK);
    }
    // The acknowledged refreshes were durable: after the short token's expiry, the
    // subscriptions are still there.
    server.kill_and_restart();
    tokio::time::sleep(Duration::from_secs(4)).await;
    for name in &channels {
        assert_eq!(
            server.ping(None, name).await.status,
            StatusCode::OK,
            "{name}'s refresh was acknowledged"
        );
    }
}

#[tokio::test]
async fn subscriptions_survive_a_restart() {
    let mut server = Server::start(COLLECTIONS);
    let alice = server.token("alice", json!({}), Some(3600));
    let bob = server.token("bob", json!({}), Some(3600));
    let public = channel(
        &server
            .subscribe(None, "posts", Some("status = 'active'"))
            .await,
    );
    let private = channel(
        &server
            .subscribe(Some(&alice), "notes", Some("title LIKE 'x%'"))
            .await,
    );
    server.kill_and_restart();
    assert_eq!(server.ping(None, &public).await.status, StatusCode::OK);
    assert_eq!(server.ping(None, &private).await.status, StatusCode::OK);
    // Ownership came back with it.
    assert_eq!(
        server.unsubscribe(Some(&bob), &private).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server.unsubscribe(Some(&alice), &private).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn every_acknowledged_subscription_survives_kill_9() {
    const N: usize = 64;
    // 64 subscribes at once from one guest: over the default subscribe rate.
    let mut server = Server::start_with_env(COLLECTIONS, 300, &[("VELO_SUBSCRIBE_RATE", "0")]);
    let replies = futures::future::join_all((0..N).map(|i| {
        let filter = format!("n = {i}");
        let server = &server;
        async move { server.subscribe(None, "posts", Some(&filter)).await }
    }))
    .await;
    let channels: Vec<String> = replies
        .iter()
        .map(|reply| {
            assert_eq!(reply.status, StatusCode::OK);
            channel(reply)
        })
        .collect();
    server.kill_and_restart();
    for name in &channels {
        assert_eq!(
            server.ping(None, name).await.status,
            StatusCode::OK,
            "{name} was acknowledged"
        );
    }
}

#[tokio::test]
async fn the_token_command_mints_tokens_the_server_accepts() {
    let server = Server::start(COLLECTIONS);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_velo-realtime"))
        .args([
            "token",
            "--sub",
            "carol",
            "--claim",
            "role=editor",
            "--claim",
            "level=3",
            "--ttl",
            "10m",
        ])
        .env("VELO_JWT_SECRET", support::JWT_SECRET)
        .env("VELO_CONFIG", "/dev/null")
        .output()
        .expect("the token command runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let reply = server.subscribe(Some(&token), "notes", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["is_public"], false);

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_velo-realtime"))
        .args(["token", "--sub", "carol", "--ttl", "soon"])
        .env("VELO_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--ttl"));
}
