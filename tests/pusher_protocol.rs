//! The built-in driver's wire shapes (PUSHER.md), with a raw WebSocket client against the real
//! server: handshake, subscriptions, signatures, errors and close codes, the HTTP API, channel
//! authorization, and slow consumers.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::ws::{Read, Socket, connect, connect_with_tiny_buffer, frame, read, send, subscribe};
use support::{ADMIN, APP_KEY, Server};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use velo_realtime::pusher::signature::AppCredentials;

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "" }

[[collections]]
name = "notes"
api_rules = { list = "@request.auth.id != ''" }
"#;

fn app() -> AppCredentials {
    AppCredentials::new(support::APP_ID, APP_KEY, support::APP_SECRET)
}

#[tokio::test]
async fn handshake_subscribe_ping_and_events() {
    let server = Server::start(COLLECTIONS);
    let (mut socket, socket_id) = connect(&server).await;
    assert!(
        velo_realtime::pusher::protocol::SocketId::parse(&socket_id).is_some(),
        "{socket_id}"
    );

    let ok = subscribe(&mut socket, "orders", Some("")).await;
    assert_eq!(
        ok,
        json!({"event": "pusher_internal:subscription_succeeded", "channel": "orders", "data": "{}"})
    );

    send(&mut socket, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        frame(&mut socket).await,
        json!({"event": "pusher:pong", "data": "{}"})
    );
    // pysher's ping carries `"data": ""`.
    send(&mut socket, json!({"event": "pusher:ping", "data": ""})).await;
    assert_eq!(frame(&mut socket).await["event"], "pusher:pong");

    let reply = server
        .pusher_api(
            Method::POST,
            "/apps/4242/events",
            Some(&json!({
                "name": "order.shipped", "channels": ["orders"], "data": "{\"id\":7}",
            })),
        )
        .await;
    assert_eq!((reply.status, reply.body), (StatusCode::OK, json!({})));
    let event = frame(&mut socket).await;
    assert_eq!(
        event,
        json!({"event": "order.shipped", "channel": "orders", "data": "{\"id\":7}"})
    );

    // Garbage gets an error frame with object data, and the connection stays.
    socket.send(Message::Text("not json".into())).await.unwrap();
    let error = frame(&mut socket).await;
    assert_eq!(error["event"], "pusher:error");
    assert!(error["data"]["message"].is_string() && error["data"].get("code").is_some());
    let big = "x".repeat(20_000);
    send(&mut socket, json!({"event": "pusher:ping", "data": big})).await;
    let error = frame(&mut socket).await;
    assert_eq!(error["data"]["code"], 4301, "over the message size limit");
    send(&mut socket, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        frame(&mut socket).await["event"],
        "pusher:pong",
        "still open"
    );

    // After unsubscribing (a ping round trip shows it was handled), nothing more arrives.
    send(
        &mut socket,
        json!({"event": "pusher:unsubscribe", "data": {"channel": "orders"}}),
    )
    .await;
    send(&mut socket, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(frame(&mut socket).await["event"], "pusher:pong");
    let body = json!({"name": "late", "channels": ["orders"], "data": "{}"});
    server
        .pusher_api(Method::POST, "/apps/4242/events", Some(&body))
        .await;
    send(&mut socket, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        frame(&mut socket).await["event"],
        "pusher:pong",
        "no `late` event before the pong"
    );
}

#[tokio::test]
async fn refusals_close_with_pusher_codes() {
    let server = Server::start(COLLECTIONS);
    for (path, code) in [
        ("/app/wrong-key?protocol=7", 4001),
        ("/app/test-key?protocol=seven", 4006),
        ("/app/test-key?protocol=9", 4007),
    ] {
        let (mut socket, _) = connect_async(server.ws_url(path)).await.unwrap();
        let error = frame(&mut socket).await;
        assert_eq!(error["event"], "pusher:error", "{path}");
        assert_eq!(error["data"]["code"], code, "{path}");
        assert_eq!(read(&mut socket).await, Read::Closed(Some(code)), "{path}");
    }
    // pysher speaks protocol 6.
    let (mut socket, _) =
        connect_async(server.ws_url("/app/test-key?client=PythonPusherClient&protocol=6"))
            .await
            .unwrap();
    assert_eq!(
        frame(&mut socket).await["event"],
        "pusher:connection_established"
    );

    let plain = reqwest::get(format!("{}/app/test-key", server.base))
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::UPGRADE_REQUIRED);
}

#[tokio::test]
async fn private_channels_need_a_valid_signature() {
    let server = Server::start(COLLECTIONS);
    let (mut socket, socket_id) = connect(&server).await;
    let refused = subscribe(&mut socket, "private-orders", Some("test-key:deadbeef")).await;
    assert_eq!(refused["event"], "pusher:subscription_error");
    assert_eq!(refused["channel"], "private-orders");
    let data: Value = serde_json::from_str(refused["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        (data["type"].as_str(), data["status"].as_u64()),
        (Some("AuthError"), Some(401))
    );
    let unsigned = subscribe(&mut socket, "private-orders", None).await;
    assert_eq!(unsigned["event"], "pusher:subscription_error");

    let auth = app().authorize(&socket_id, "private-orders", None);
    let ok = subscribe(&mut socket, "private-orders", Some(&auth)).await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    // A signature for another socket does not transfer.
    let (mut other, _) = connect(&server).await;
    let stolen = subscribe(&mut other, "private-orders", Some(&auth)).await;
    assert_eq!(stolen["event"], "pusher:subscription_error");

    let bad_name = subscribe(&mut socket, "bad name!", Some("")).await;
    assert_eq!(bad_name["event"], "pusher:subscription_error");
}

#[tokio::test]
async fn the_excluded_socket_gets_no_echo() {
    let server = Server::start(COLLECTIONS);
    let (mut sender, sender_id) = connect(&server).await;
    let (mut other, _) = connect(&server).await;
    subscribe(&mut sender, "room", Some("")).await;
    subscribe(&mut other, "room", Some("")).await;
    let body = json!({"name": "said", "channel": "room", "data": "\"hi\"", "socket_id": sender_id, "info": "subscription_count"});
    let reply = server
        .pusher_api(Method::POST, "/apps/4242/events", Some(&body))
        .await;
    assert_eq!(
        reply.body,
        json!({"channels": {"room": {"subscription_count": 2}}})
    );
    assert_eq!(frame(&mut other).await["event"], "said");
    send(&mut sender, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        frame(&mut sender).await["event"],
        "pusher:pong",
        "the sender got no echo"
    );
}

#[tokio::test]
async fn the_http_api_checks_signatures_and_limits() {
    let server = Server::start(COLLECTIONS);
    let (mut socket, _) = connect(&server).await;
    subscribe(&mut socket, "presence-free-but-public-here", Some("")).await;
    subscribe(&mut socket, "news", Some("")).await;

    let channels = server
        .pusher_api(
            Method::GET,
            "/apps/4242/channels?info=subscription_count",
            None,
        )
        .await;
    assert_eq!(channels.status, StatusCode::OK);
    assert_eq!(
        channels.body["channels"]["news"],
        json!({"subscription_count": 1})
    );
    let filtered = server
        .pusher_api(Method::GET, "/apps/4242/channels?filter_by_prefix=ne", None)
        .await;
    assert_eq!(filtered.body, json!({"channels": {"news": {}}}));
    let empty = server
        .pusher_api(
            Method::GET,
            "/apps/4242/channels?filter_by_prefix=zzz",
            None,
        )
        .await;
    assert_eq!(
        empty.body,
        json!({"channels": {}}),
        "an object even when empty"
    );
    let one = server
        .pusher_api(
            Method::GET,
            "/apps/4242/channels/news?info=subscription_count",
            None,
        )
        .await;
    assert_eq!(one.body, json!({"occupied": true, "subscription_count": 1}));
    let vacant = server
        .pusher_api(Method::GET, "/apps/4242/channels/nobody", None)
        .await;
    assert_eq!(vacant.body, json!({"occupied": false}));
    let user_count = server
        .pusher_api(
            Method::GET,
            "/apps/4242/channels/news?info=user_count",
            None,
        )
        .await;
    assert_eq!(user_count.status, StatusCode::BAD_REQUEST);

    let too_big = json!({"name": "x", "channels": ["news"], "data": "y".repeat(10 * 1024 + 1)});
    let reply = server
        .pusher_api(Method::POST, "/apps/4242/events", Some(&too_big))
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.body["error"].is_string());
    let unknown_app = server
        .pusher_api(Method::POST, "/apps/nope/events", Some(&json!({})))
        .await;
    assert_eq!(unknown_app.status, StatusCode::NOT_FOUND);

    // Unsigned or tampered requests.
    let unsigned = server
        .raw(server.request(Method::POST, "/apps/4242/events").body("{}"))
        .await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    assert!(unsigned.body["error"].is_string());
    let wrong_signature = server
        .raw(server.request(Method::GET, &format!(
            "/apps/4242/channels?auth_key={APP_KEY}&auth_timestamp={}&auth_version=1.0&auth_signature=00",
            velo_realtime::auth::now_secs()
        )))
        .await;
    assert_eq!(wrong_signature.status, StatusCode::UNAUTHORIZED);

    let batch = json!({"batch": [
        {"name": "a", "channel": "news", "data": "1"},
        {"name": "b", "channel": "news", "data": "2", "info": "subscription_count"},
    ]});
    let reply = server
        .pusher_api(Method::POST, "/apps/4242/batch_events", Some(&batch))
        .await;
    assert_eq!(
        reply.body,
        json!({"batch": [{}, {"news": {"subscription_count": 1}}]})
    );
    assert_eq!(frame(&mut socket).await["event"], "a");
    assert_eq!(frame(&mut socket).await["event"], "b");
}

#[tokio::test]
async fn channel_authorization_for_realtime_subscriptions() {
    let server = Server::start(COLLECTIONS);
    let alice = server.token("alice", json!({}), Some(3600));
    let bob = server.token("bob", json!({}), Some(3600));
    let subscribed = server.subscribe(Some(&alice), "notes", None).await;
    assert_eq!(subscribed.body["is_public"], false);
    let channel = format!(
        "private-{}",
        subscribed.body["channel_name"].as_str().unwrap()
    );
    let (mut socket, socket_id) = connect(&server).await;

    // Form-encoded, as pusher-js and Laravel Echo send it, at both paths.
    for path in ["/api/realtime/auth", "/broadcasting/auth"] {
        let reply = server
            .raw(
                server
                    .request(Method::POST, path)
                    .bearer_auth(&alice)
                    .form(&[
                        ("socket_id", socket_id.as_str()),
                        ("channel_name", channel.as_str()),
                    ]),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
        assert_eq!(
            reply.body["auth"],
            app().authorize(&socket_id, &channel, None)
        );
    }
    // A form missing a field says which, as a JSON body would (422, not 400).
    let missing = server
        .raw(
            server
                .request(Method::POST, "/api/realtime/auth")
                .bearer_auth(&alice)
                .form(&[("socket_id", socket_id.as_str())]),
        )
        .await;
    assert_eq!(
        (missing.status, &missing.body["errors"]["channel_name"][0]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("`channel_name` is required")
        ),
        "{:?}",
        missing.body
    );
    let body = json!({"socket_id": socket_id, "channel_name": channel});
    let auth = server
        .call(
            Method::POST,
            "/api/realtime/auth",
            Some(&alice),
            Some(body.clone()),
        )
        .await;
    assert_eq!(auth.status, StatusCode::OK);
    let ok = subscribe(&mut socket, &channel, auth.body["auth"].as_str()).await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");

    assert_eq!(
        server
            .call(
                Method::POST,
                "/api/realtime/auth",
                Some(&bob),
                Some(body.clone())
            )
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server
            .call(Method::POST, "/api/realtime/auth", None, Some(body.clone()))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .call(Method::POST, "/api/realtime/auth", Some(ADMIN), Some(body))
            .await
            .status,
        StatusCode::OK
    );

    let unknown = json!({"socket_id": socket_id, "channel_name": "private-velo.realtime.00000000-0000-4000-8000-000000000000"});
    assert_eq!(
        server
            .call(
                Method::POST,
                "/api/realtime/auth",
                Some(&alice),
                Some(unknown)
            )
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let malformed = json!({"socket_id": "abc", "channel_name": channel});
    let reply = server
        .call(
            Method::POST,
            "/api/realtime/auth",
            Some(&alice),
            Some(malformed),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.body["errors"]["socket_id"].is_array());
    let public = server.subscribe(None, "posts", None).await;
    let public_channel = format!("private-{}", public.body["channel_name"].as_str().unwrap());
    let body = json!({"socket_id": socket_id, "channel_name": public_channel});
    let reply = server
        .call(Method::POST, "/api/realtime/auth", Some(&alice), Some(body))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "public subscriptions need no signature"
    );
}

#[tokio::test]
async fn a_listening_socket_keeps_its_subscription_alive() {
    let server = Server::start_with(COLLECTIONS, 1);
    let listened = server.subscribe(None, "posts", None).await.body["channel_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let idle = server.subscribe(None, "posts", None).await.body["channel_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut socket, _) = connect(&server).await;
    assert_eq!(
        subscribe(&mut socket, &listened, Some("")).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let idle_id = idle.strip_prefix("velo.realtime.").unwrap();
    let pruned = support::eventually(Duration::from_secs(10), || async {
        server.logged(&["subscription ended", idle_id, "stale"])
    })
    .await;
    assert!(pruned, "the idle subscription ends");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        server.ping(None, &listened).await.status,
        StatusCode::OK,
        "kept by its socket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_off_without_slowing_the_others() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const READERS: usize = 100;
    /// Bounds the test: the stuck client's buffers fill long before this.
    const MAX_EVENTS: usize = 3000;
    /// Events published between waits for the readers, below the queue size: readers that
    /// keep up are never near the limit.
    const BURST: usize = 16;
    let server = Server::start_with_env(COLLECTIONS, 300, &[("VELO_SOCKET_QUEUE_FRAMES", "64")]);
    // The stuck client has a tiny receive buffer, so the server's writes to it block soon.
    let mut stuck = connect_with_tiny_buffer(&server).await;
    subscribe(&mut stuck, "firehose", Some("")).await;

    let mut seen = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..READERS {
        let (mut socket, _) = connect(&server).await;
        subscribe(&mut socket, "firehose", Some("")).await;
        let count = Arc::new(AtomicUsize::new(0));
        seen.push(count.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = tokio::time::timeout(Duration::from_secs(60), socket.next()).await;
                match next.expect("events keep coming") {
                    Some(Ok(Message::Text(text))) if text.contains(r#""event":"tick""#) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(Message::Text(text))) if text.contains("\"done\"") => return,
                    Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("a reader was cut off: {other:?}"),
                }
            }
        }));
    }
    let data = format!("\"{}\"", "x".repeat(8000));
    let mut published = 0;
    while published < MAX_EVENTS && !server.logged(&["closing a slow consumer"]) {
        for _ in 0..BURST {
            let body = json!({"name": "tick", "channel": "firehose", "data": data});
            let reply = server
                .pusher_api(Method::POST, "/apps/4242/events", Some(&body))
                .await;
            assert_eq!(reply.status, StatusCode::OK);
            published += 1;
        }
        let caught_up = support::eventually(Duration::from_secs(30), || async {
            seen.iter()
                .all(|count| count.load(Ordering::Relaxed) >= published)
        })
        .await;
        assert!(caught_up, "every reader got all {published} events");
    }
    assert!(
        server.wait_for_log(&["closing a slow consumer"]).await,
        "the stuck client was cut off within {MAX_EVENTS} events"
    );
    let body = json!({"name": "done", "channel": "firehose", "data": "{}"});
    server
        .pusher_api(Method::POST, "/apps/4242/events", Some(&body))
        .await;
    for task in tasks {
        task.await.expect("no reader was cut off");
    }
    for count in &seen {
        assert_eq!(
            count.load(Ordering::Relaxed),
            published,
            "every reader got every event"
        );
    }
    // The stuck client now reads: what was buffered, then the error and the 4100 close.
    let mut error_code = None;
    let closed = loop {
        match read(&mut stuck).await {
            Read::Frame(frame) if frame["event"] == "pusher:error" => {
                error_code = frame["data"]["code"].as_u64()
            }
            Read::Frame(_) => {}
            Read::Closed(code) => break code,
        }
    };
    assert_eq!(
        (error_code, closed),
        (Some(4100), Some(4100)),
        "pusher:error 4100, then close 4100"
    );
}

/// At the process's open-file limit the listener waits instead of spinning: connections already
/// open are served, and new ones are accepted once some close.
#[tokio::test]
async fn the_listener_waits_at_the_open_file_limit() {
    let server = Server::start(COLLECTIONS);
    let (mut socket, _) = connect(&server).await;
    server.limit_open_files(64);
    let mut held = Vec::new();
    for _ in 0..100 {
        // Completed by the kernel's backlog even when the server cannot accept them.
        held.push(
            tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
                .await
                .expect("a TCP connection"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = server.cpu_seconds() - before;
    assert!(
        spent < 1.0,
        "{spent:.2} s of CPU in 2 s at the file limit: the listener spins"
    );
    assert!(server.wait_for_log(&["cannot accept connections"]).await);
    send(&mut socket, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(frame(&mut socket).await["event"], "pusher:pong");

    drop(held);
    let accepting = support::eventually(Duration::from_secs(10), || async {
        let reply = server
            .request(Method::GET, "/api/collections")
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        reply.is_ok_and(|reply| reply.status() != StatusCode::INTERNAL_SERVER_ERROR)
    })
    .await;
    assert!(
        accepting,
        "no request was answered after connections closed"
    );
    assert!(server.wait_for_log(&["accepting connections again"]).await);
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect() {
    let mut server = Server::start(COLLECTIONS);
    let (mut socket, _) = connect(&server).await;
    subscribe(&mut socket, "news", Some("")).await;
    let channel = server.subscribe(None, "posts", None).await.body["channel_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let exited = tokio::task::spawn_blocking(move || {
        let clean = server.terminate();
        (clean, server)
    });
    let error = frame(&mut socket).await;
    assert_eq!(
        (error["event"].as_str(), error["data"]["code"].as_u64()),
        (Some("pusher:error"), Some(4200))
    );
    assert_eq!(read(&mut socket).await, Read::Closed(Some(4200)));
    let (clean, mut server) = exited.await.unwrap();
    assert!(clean, "SIGTERM is a clean exit");
    assert!(server.wait_for_log(&["stopped"]).await);
    server.kill_and_restart();
    assert_eq!(
        server.ping(None, &channel).await.status,
        StatusCode::OK,
        "subscriptions were kept"
    );
}

#[tokio::test]
async fn a_client_that_never_answers_the_ping_is_closed_with_4201() {
    let server = Server::start_with_env(
        COLLECTIONS,
        300,
        &[
            ("VELO_ACTIVITY_TIMEOUT_SECS", "1"),
            ("VELO_PONG_TIMEOUT_SECS", "1"),
        ],
    );
    let (mut socket, _) = connect(&server).await;
    assert_eq!(frame(&mut socket).await["event"], "pusher:ping");
    let error = frame(&mut socket).await;
    assert_eq!(
        (error["event"].as_str(), error["data"]["code"].as_u64()),
        (Some("pusher:error"), Some(4201))
    );
    assert_eq!(read(&mut socket).await, Read::Closed(Some(4201)));
}

#[tokio::test]
async fn connections_over_the_server_maximum_are_refused_with_4004() {
    let server = Server::start_with_env(COLLECTIONS, 300, &[("VELO_MAX_CONNECTIONS", "2")]);
    let (first, _) = connect(&server).await;
    let (_second, _) = connect(&server).await;
    let (mut third, _) =
        tokio_tungstenite::connect_async(server.ws_url(&format!("/app/{APP_KEY}?protocol=7")))
            .await
            .unwrap();
    let error = frame(&mut third).await;
    assert_eq!(
        (error["event"].as_str(), error["data"]["code"].as_u64()),
        (Some("pusher:error"), Some(4004))
    );
    assert_eq!(read(&mut third).await, Read::Closed(Some(4004)));
    drop(first);
    // A place is free again once the first is gone.
    assert!(
        support::eventually(Duration::from_secs(10), || async {
            let (mut socket, _) = tokio_tungstenite::connect_async(
                server.ws_url(&format!("/app/{APP_KEY}?protocol=7")),
            )
            .await
            .unwrap();
            frame(&mut socket).await["event"] == "pusher:connection_established"
        })
        .await
    );
}

#[tokio::test]
async fn the_server_pings_a_silent_client() {
    let server = Server::start_with_env(COLLECTIONS, 300, &[("VELO_ACTIVITY_TIMEOUT_SECS", "1")]);
    let (mut socket, _) = connect(&server).await;
    assert_eq!(
        frame(&mut socket).await["event"],
        "pusher:ping",
        "after a second of silence"
    );
    send(&mut socket, json!({"event": "pusher:pong", "data": {}})).await;
    assert_eq!(
        frame(&mut socket).await["event"],
        "pusher:ping",
        "the pong reset the timer"
    );
}

#[tokio::test]
async fn client_events_are_refused_unless_enabled() {
    let server = Server::start(COLLECTIONS);
    let (mut socket, socket_id) = connect(&server).await;
    let auth = app().authorize(&socket_id, "private-chat", None);
    subscribe(&mut socket, "private-chat", Some(&auth)).await;
    send(
        &mut socket,
        json!({"event": "client-typing", "channel": "private-chat", "data": {"who": "a"}}),
    )
    .await;
    let refused = frame(&mut socket).await;
    assert_eq!(refused["event"], "pusher:error");
    assert!(
        refused["data"]["message"]
            .as_str()
            .unwrap()
            .contains("not enabled")
    );

    let server = Server::start_with_env(COLLECTIONS, 300, &[("VELO_CLIENT_EVENTS", "true")]);
    let (mut sender, sender_id) = connect(&server).await;
    let (mut other, other_id) = connect(&server).await;
    let sender_auth = app().authorize(&sender_id, "private-chat", None);
    let other_auth = app().authorize(&other_id, "private-chat", None);
    subscribe(&mut sender, "private-chat", Some(&sender_auth)).await;
    subscribe(&mut other, "private-chat", Some(&other_auth)).await;
    let whisper =
        json!({"event": "client-typing", "channel": "private-chat", "data": {"who": "a"}});
    send(&mut sender, whisper.clone()).await;
    assert_eq!(
        frame(&mut other).await,
        whisper,
        "relayed with data unchanged"
    );
    send(&mut sender, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        frame(&mut sender).await["event"],
        "pusher:pong",
        "no echo to the sender"
    );
    // Public channels take no client events.
    subscribe(&mut sender, "lobby", Some("")).await;
    send(
        &mut sender,
        json!({"event": "client-x", "channel": "lobby", "data": {}}),
    )
    .await;
    assert_eq!(frame(&mut sender).await["event"], "pusher:error");
    // Over 10 a second: 4301, and the socket stays.
    let mut limited = false;
    for _ in 0..15 {
        send(&mut sender, whisper.clone()).await;
    }
    send(&mut sender, json!({"event": "pusher:ping", "data": {}})).await;
    loop {
        let next = frame(&mut sender).await;
        if next["event"] == "pusher:error" {
            limited |= next["data"]["code"] == 4301;
        }
        if next["event"] == "pusher:pong" {
            break;
        }
    }
    assert!(limited, "the rate limit answered 4301");
}

#[tokio::test]
async fn a_frame_too_large_to_read_is_answered_before_the_close() {
    let server = Server::start(COLLECTIONS);
    let (mut socket, _) = connect(&server).await;
    // Over the 256 KiB that can be read at all (not just over the 10 KB message limit).
    let huge = "x".repeat(300 << 10);
    send(&mut socket, json!({"event": "pusher:ping", "data": huge})).await;
    let error = frame(&mut socket).await;
    assert_eq!(
        (error["event"].as_str(), error["data"]["code"].as_u64()),
        (Some("pusher:error"), Some(4301)),
        "{error}"
    );
    assert_eq!(read(&mut socket).await, Read::Closed(Some(1009)));
    let (mut other, _) = connect(&server).await;
    send(&mut other, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(frame(&mut other).await["event"], "pusher:pong");
}

#[tokio::test]
async fn cache_channels_replay_the_last_event_to_new_subscribers() {
    let server = Server::start_with_env(COLLECTIONS, 300, &[("VELO_CACHE_TTL_SECS", "5")]);
    let trigger =
        |data: &str| json!({"name": "price", "channels": ["cache-price", "plain"], "data": data});
    // Nothing triggered yet: a miss, right after the subscription succeeded.
    let (mut early, _) = connect(&server).await;
    assert_eq!(
        subscribe(&mut early, "cache-price", Some("")).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let miss = frame(&mut early).await;
    assert_eq!(
        (miss["event"].as_str(), miss["channel"].as_str()),
        (Some("pusher:cache_miss"), Some("cache-price"))
    );
    for data in ["{\"n\":1}", "{\"n\":2}"] {
        let reply = server
            .pusher_api(Method::POST, "/apps/4242/events", Some(&trigger(data)))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(frame(&mut early).await["data"], data, "delivered live");
    }
    // A new subscriber gets the last one first; a plain channel keeps nothing.
    let (mut late, _) = connect(&server).await;
    subscribe(&mut late, "cache-price", Some("")).await;
    let replayed = frame(&mut late).await;
    assert_eq!(
        replayed,
        json!({"event": "price", "channel": "cache-price", "data": "{\"n\":2}"})
    );
    assert_eq!(
        subscribe(&mut late, "plain", Some("")).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    send(&mut late, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        frame(&mut late).await["event"],
        "pusher:pong",
        "no replay, no miss"
    );
    // Past the TTL the event is gone.
    let expired = support::eventually(Duration::from_secs(30), || async {
        let (mut socket, _) = connect(&server).await;
        subscribe(&mut socket, "cache-price", Some("")).await;
        frame(&mut socket).await["event"] == "pusher:cache_miss"
    })
    .await;
    assert!(expired, "the cached event outlived its 5 s");
}

/// Joins a presence channel as `member` (`channel_data`), signed as the server libraries sign.
async fn join(socket: &mut Socket, socket_id: &str, channel: &str, member: &Value) -> Value {
    let channel_data = member.to_string();
    let auth = app().authorize(socket_id, channel, Some(&channel_data));
    send(
        socket,
        json!({"event": "pusher:subscribe", "data": {
            "channel": channel, "auth": auth, "channel_data": channel_data,
        }}),
    )
    .await;
    frame(socket).await
}

/// Proves nothing else is queued for the socket: a ping's pong comes next.
async fn nothing_more(socket: &mut Socket) {
    send(socket, json!({"event": "pusher:ping", "data": {}})).await;
    let next = frame(socket).await;
    assert_eq!(next["event"], "pusher:pong", "expected nothing, got {next}");
}

fn presence_data(frame: &Value) -> Value {
    serde_json::from_str(frame["data"].as_str().expect("data is a JSON string")).unwrap()
}

#[tokio::test]
async fn presence_members_are_users_not_sockets() {
    let server = Server::start_with_env(
        COLLECTIONS,
        300,
        &[
            ("VELO_PRESENCE_MAX_MEMBERS", "2"),
            ("VELO_CLIENT_EVENTS", "true"),
        ],
    );
    let room = "presence-room";
    let alice = json!({"user_id": "alice", "user_info": {"name": "Alice"}});
    let bob = json!({"user_id": 7, "user_info": {"name": "Bob"}});

    let (mut tab1, tab1_id) = connect(&server).await;
    let joined = join(&mut tab1, &tab1_id, room, &alice).await;
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(
        presence_data(&joined),
        json!({"presence": {"ids": ["alice"], "hash": {"alice": {"name": "Alice"}}, "count": 1}})
    );

    let (mut bobs, bobs_id) = connect(&server).await;
    let joined = presence_data(&join(&mut bobs, &bobs_id, room, &bob).await);
    assert_eq!(joined["presence"]["count"], 2);
    assert_eq!(
        joined["presence"]["hash"]["7"],
        json!({"name": "Bob"}),
        "numeric ids as text"
    );
    let added = frame(&mut tab1).await;
    assert_eq!(
        (added["event"].as_str(), presence_data(&added)),
        (
            Some("pusher_internal:member_added"),
            json!({"user_id": "7", "user_info": {"name": "Bob"}})
        )
    );

    // Alice's second tab: not a new member, even at the member limit.
    let (mut tab2, tab2_id) = connect(&server).await;
    let joined = presence_data(&join(&mut tab2, &tab2_id, room, &alice).await);
    assert_eq!(joined["presence"]["count"], 2);
    nothing_more(&mut bobs).await;
    // Subscribing again is confirmed again, with the members (pusher-js reads them).
    let again = presence_data(&join(&mut tab2, &tab2_id, room, &alice).await);
    assert_eq!(again["presence"]["count"], 2, "{again}");

    // A third user is over the limit of 2 members.
    let (mut carols, carols_id) = connect(&server).await;
    let refused = join(&mut carols, &carols_id, room, &json!({"user_id": "carol"})).await;
    assert_eq!(refused["event"], "pusher:subscription_error");
    assert_eq!(
        (
            presence_data(&refused)["type"].as_str(),
            presence_data(&refused)["status"].as_u64()
        ),
        (Some("LimitReached"), Some(4100))
    );

    // The HTTP API counts users and sockets apart.
    let info = server
        .pusher_api(
            Method::GET,
            &format!("/apps/4242/channels/{room}?info=user_count,subscription_count"),
            None,
        )
        .await;
    assert_eq!(
        info.body,
        json!({"occupied": true, "user_count": 2, "subscription_count": 3})
    );
    let users = server
        .pusher_api(
            Method::GET,
            &format!("/apps/4242/channels/{room}/users"),
            None,
        )
        .await;
    let mut ids: Vec<String> = users.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["7", "alice"]);

    // Client events on a presence channel name their sender.
    send(
        &mut bobs,
        json!({"event": "client-typing", "channel": room, "data": {"on": true}}),
    )
    .await;
    let typing = frame(&mut tab1).await;
    assert_eq!(
        typing,
        json!({"event": "client-typing", "channel": room, "data": {"on": true}, "user_id": "7"})
    );
    frame(&mut tab2).await;

    // One of alice's tabs leaving is not her leaving; the last one is.
    send(
        &mut tab2,
        json!({"event": "pusher:unsubscribe", "data": {"channel": room}}),
    )
    .await;
    nothing_more(&mut tab2).await;
    nothing_more(&mut bobs).await;
    drop(tab1);
    let removed = frame(&mut bobs).await;
    assert_eq!(
        (removed["event"].as_str(), presence_data(&removed)),
        (
            Some("pusher_internal:member_removed"),
            json!({"user_id": "alice"})
        )
    );
}

#[tokio::test]
async fn presence_refusals_have_their_codes() {
    let server = Server::start(COLLECTIONS);
    let (mut socket, socket_id) = connect(&server).await;
    let big = json!({"user_id": "u", "user_info": {"bio": "x".repeat(2000)}});
    let refused = join(&mut socket, &socket_id, "presence-a", &big).await;
    assert_eq!(
        presence_data(&refused)["status"],
        4301,
        "user_info over 1 KiB"
    );
    for member in [
        json!({"user_info": {}}),
        json!({"user_id": ""}),
        json!("alice"),
    ] {
        let refused = join(&mut socket, &socket_id, "presence-a", &member).await;
        assert_eq!(presence_data(&refused)["status"], 400, "{member}");
    }
    send(
        &mut socket,
        json!({"event": "pusher:subscribe", "data": {
            "channel": "presence-a", "auth": "test-key:00", "channel_data": "{\"user_id\":\"u\"}",
        }}),
    )
    .await;
    assert_eq!(presence_data(&frame(&mut socket).await)["status"], 401);
}

/// Signs `socket` in as `user_id`, as pusher-js does with a user-auth endpoint's answer.
async fn sign_in(socket: &mut Socket, socket_id: &str, user_id: &str) -> Value {
    let user_data = json!({"id": user_id, "name": user_id}).to_string();
    let auth = app().authorize_user(socket_id, &user_data);
    send(
        socket,
        json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}),
    )
    .await;
    frame(socket).await
}

#[tokio::test]
async fn signed_in_users_get_their_events_and_can_be_terminated() {
    let server = Server::start(COLLECTIONS);
    let (mut alices, alices_id) = connect(&server).await;
    let signed = sign_in(&mut alices, &alices_id, "alice").await;
    assert_eq!(signed["event"], "pusher:signin_success");
    let data = presence_data(&signed);
    let user_data: Value = serde_json::from_str(data["user_data"].as_str().unwrap()).unwrap();
    assert_eq!(user_data["id"], "alice");
    // pusher-js subscribes to the user's channel itself; the server has put it there already.
    assert_eq!(
        subscribe(&mut alices, "#server-to-user-alice", Some("")).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    // Nobody else may.
    let (mut other, _) = connect(&server).await;
    let refused = subscribe(&mut other, "#server-to-user-alice", Some("")).await;
    assert_eq!(
        (
            refused["event"].as_str(),
            presence_data(&refused)["status"].as_u64()
        ),
        (Some("pusher:subscription_error"), Some(403))
    );

    // sendToUser is a trigger on the user's channel, which /channels does not list.
    let body =
        json!({"name": "greeting", "channels": ["#server-to-user-alice"], "data": "{\"hi\":1}"});
    let reply = server
        .pusher_api(Method::POST, "/apps/4242/events", Some(&body))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        frame(&mut alices).await,
        json!({"event": "greeting", "channel": "#server-to-user-alice", "data": "{\"hi\":1}"})
    );
    let channels = server
        .pusher_api(Method::GET, "/apps/4242/channels", None)
        .await;
    assert_eq!(channels.body, json!({"channels": {}}));

    // The client cannot leave its own channel, and so cannot dodge terminate_connections.
    send(
        &mut alices,
        json!({"event": "pusher:unsubscribe", "data": {"channel": "#server-to-user-alice"}}),
    )
    .await;
    nothing_more(&mut alices).await;
    // Our auth endpoint signs neither public nor users' own channels.
    for (channel, status) in [
        ("#server-to-user-alice", StatusCode::FORBIDDEN),
        ("orders", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let reply = server
            .call(
                Method::POST,
                "/api/realtime/auth",
                Some(support::ADMIN),
                Some(json!({"socket_id": alices_id, "channel_name": channel})),
            )
            .await;
        assert_eq!(reply.status, status, "{channel}: {:?}", reply.body);
    }

    // terminate_connections: 4009, which pusher-js does not retry.
    let reply = server
        .pusher_api(
            Method::POST,
            "/apps/4242/users/alice/terminate_connections",
            Some(&json!({})),
        )
        .await;
    assert_eq!((reply.status, reply.body), (StatusCode::OK, json!({})));
    let error = frame(&mut alices).await;
    assert_eq!(
        (error["event"].as_str(), error["data"]["code"].as_u64()),
        (Some("pusher:error"), Some(4009))
    );
    assert_eq!(read(&mut alices).await, Read::Closed(Some(4009)));
    send(&mut other, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        frame(&mut other).await["event"],
        "pusher:pong",
        "others stay"
    );
}

#[tokio::test]
async fn a_bad_sign_in_ends_the_connection_with_4009() {
    let server = Server::start(COLLECTIONS);
    let (mut socket, _) = connect(&server).await;
    send(
        &mut socket,
        json!({"event": "pusher:signin", "data": {"auth": "test-key:00", "user_data": "{\"id\":\"x\"}"}}),
    )
    .await;
    let error = frame(&mut socket).await;
    assert_eq!(error["data"]["code"], 4009, "{error}");
    assert_eq!(read(&mut socket).await, Read::Closed(Some(4009)));
    // An id that cannot name a channel is refused too, signed or not.
    let (mut socket, socket_id) = connect(&server).await;
    let refused = sign_in(&mut socket, &socket_id, "a b").await;
    assert_eq!(refused["data"]["code"], 4009, "{refused}");
}
