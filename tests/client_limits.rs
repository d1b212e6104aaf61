//! Per-client limits against the real server: live subscriptions per client (a user by id, a
//! guest by address, behind trusted proxies), subscribe requests per second, and WebSocket
//! connections per address; each refusal is counted in `/metrics`.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::ws::{Read, connect, frame, read, send};
use support::{ADMIN, APP_KEY, Server};

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "" }
"#;

/// Subscribes to `posts` as a guest, as if forwarded for `forwarded_for`.
async fn subscribe_as(server: &Server, forwarded_for: Option<&str>) -> support::Reply {
    let mut request = server
        .request(Method::POST, "/api/realtime/subscribe")
        .json(&json!({"collection": "posts"}));
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    server.raw(request).await
}

#[tokio::test]
async fn live_subscriptions_are_limited_per_client() {
    let mut server = Server::start_with_env(
        COLLECTIONS,
        300,
        &[
            ("VELO_MAX_SUBSCRIPTIONS_PER_CLIENT", "3"),
            ("VELO_SUBSCRIBE_RATE", "0"),
            ("VELO_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    let mut channels = Vec::new();
    for _ in 0..3 {
        let reply = server.subscribe(None, "posts", None).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        channels.push(reply.body["channel_name"].as_str().unwrap().to_owned());
    }
    let refused = server
        .raw(
            server
                .request(Method::POST, "/api/realtime/subscribe")
                .json(&json!({"collection": "posts"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("3 live subscriptions"),
        "{:?}",
        refused.body
    );
    let response = server
        .request(Method::POST, "/api/realtime/subscribe")
        .json(&json!({"collection": "posts"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);

    // Others are counted on their own: a user by id, a guest behind the trusted proxy by the
    // address it forwarded, and the admin not at all.
    let alice = server.token("alice", json!({}), None);
    for _ in 0..3 {
        let reply = server.subscribe(Some(&alice), "posts", None).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let elsewhere = server.token("alice", json!({"device": "phone"}), None);
    assert_eq!(
        server
            .subscribe(Some(&elsewhere), "posts", None)
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS,
        "a user is one client wherever they are"
    );
    assert_eq!(
        subscribe_as(&server, Some("203.0.113.9")).await.status,
        StatusCode::OK
    );
    for _ in 0..5 {
        assert_eq!(
            server.subscribe(Some(ADMIN), "posts", None).await.status,
            StatusCode::OK
        );
    }

    // Ending one frees its place; the count survives a restart.
    assert_eq!(
        server.unsubscribe(None, &channels[0]).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.subscribe(None, "posts", None).await.status,
        StatusCode::OK
    );
    server.kill_and_restart();
    assert_eq!(
        server.subscribe(None, "posts", None).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the guest's subscriptions still count after a restart"
    );
    if let Err(text) = server
        .wait_for_metrics(&["velo_limited_total{limit=\"subscriptions_per_client\"} 1"])
        .await
    {
        panic!("{text}");
    }
}

#[tokio::test]
async fn subscribe_requests_are_limited_per_second() {
    const N: usize = 20;
    let server = Server::start_with_env(COLLECTIONS, 300, &[("VELO_SUBSCRIBE_RATE", "1")]);
    let started = std::time::Instant::now();
    let replies =
        futures::future::join_all((0..N).map(|_| server.subscribe(None, "posts", None))).await;
    let elapsed = started.elapsed();
    let refused = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let accepted = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::OK)
        .count();
    assert_eq!(accepted + refused, N, "{replies:?}");
    // A burst of 1, then 1 a second: however slow this machine was.
    let allowed = 1 + elapsed.as_secs_f64().ceil() as usize;
    assert!(
        accepted >= 1 && accepted <= allowed,
        "{accepted} accepted, {refused} refused in {elapsed:?}"
    );
    let alice = server.token("alice", json!({}), None);
    assert_eq!(
        server.subscribe(Some(&alice), "posts", None).await.status,
        StatusCode::OK,
        "another client has its own rate"
    );
    let expected = format!("velo_limited_total{{limit=\"subscribe_rate\"}} {refused}");
    if let Err(text) = server.wait_for_metrics(&[&expected]).await {
        panic!("{text}");
    }
}

#[tokio::test]
async fn websocket_connections_are_limited_per_address() {
    let server = Server::start_with_env(
        COLLECTIONS,
        300,
        &[("VELO_MAX_CONNECTIONS_PER_ADDRESS", "2")],
    );
    let (first, _) = connect(&server).await;
    let (mut second, _) = connect(&server).await;
    let (mut third, _) =
        tokio_tungstenite::connect_async(server.ws_url(&format!("/app/{APP_KEY}?protocol=7")))
            .await
            .expect("the WebSocket opens");
    let error = frame(&mut third).await;
    assert_eq!(
        (error["event"].as_str(), error["data"]["code"].as_u64()),
        (Some("pusher:error"), Some(4100)),
        "{error}"
    );
    assert_eq!(read(&mut third).await, Read::Closed(Some(4100)));
    send(&mut second, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        frame(&mut second).await["event"],
        "pusher:pong",
        "the others stay"
    );
    drop(first);
    // Once the server has seen the close, the address has a free place again.
    if let Err(text) = server.wait_for_metrics(&["velo_connections 1"]).await {
        panic!("{text}");
    }
    let (_again, _) = connect(&server).await;
    let limited = server.metrics().await;
    assert!(
        limited.lines().any(|line| line
            .starts_with("velo_limited_total{limit=\"connections_per_address\"}")
            && !line.ends_with(" 0")),
        "{limited}"
    );
}
