//! Webhooks end to end: a real server posting to a receiver in this test, over real HTTP.
//! What is sent when (per channel, per user), the batches and their signatures, a receiver
//! that is down for a while (nothing lost inside the retry window, in order), and one down for
//! longer (dropped and counted, and the next events still go). The Node test checks every
//! webhook with the `pusher` library's own `webhook(...).isValid()`.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::webhooks::Receiver;
use support::ws::{self, Socket};
use support::{APP_KEY, APP_SECRET, Server, eventually};
use velo_realtime::pusher::signature::AppCredentials;

/// Subscribes to and leaves `count` public channels `{prefix}{i}`, one after the other: each
/// is occupied, then vacated. Returns the events that makes.
async fn occupy_and_vacate(socket: &mut Socket, prefix: &str, count: usize) -> Vec<String> {
    let mut expected = Vec::new();
    for i in 0..count {
        let channel = format!("{prefix}{i}");
        let reply = ws::subscribe(socket, &channel, None).await;
        assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
        ws::send(
            socket,
            json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}),
        )
        .await;
        expected.push(format!("channel_occupied {channel}"));
        expected.push(format!("channel_vacated {channel}"));
    }
    expected
}

/// Joins `channel` as `user_id` (signed as the app's server would).
async fn join(server: &Server, channel: &str, user_id: &str) -> Socket {
    let (mut socket, socket_id) = ws::connect(server).await;
    let app = AppCredentials::new(support::APP_ID, APP_KEY, APP_SECRET);
    let channel_data = json!({ "user_id": user_id }).to_string();
    let auth = app.authorize(&socket_id, channel, Some(&channel_data));
    ws::send(
        &mut socket,
        json!({"event": "pusher:subscribe", "data": {
            "channel": channel, "auth": auth, "channel_data": channel_data
        }}),
    )
    .await;
    let reply = ws::frame(&mut socket).await;
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
    socket
}

#[tokio::test]
async fn channels_are_occupied_and_vacated_members_are_users_and_each_url_gets_its_events() {
    let everything = Receiver::start().await;
    let members_only = Receiver::start().await;
    let toml = format!(
        "[[webhooks]]\nurl = \"{}\"\nevents = [\"member_added\", \"member_removed\"]\n",
        members_only.url
    );
    let server = Server::start_with_env(
        &toml,
        300,
        &[
            ("VELO_WEBHOOK_URLS", &everything.url),
            ("VELO_CLIENT_EVENTS", "true"),
        ],
    );
    let room = "presence-room";
    let mut alice = join(&server, room, "alice").await;
    let mut alice_tab = join(&server, room, "alice").await;
    let mut bob = join(&server, room, "bob").await;
    // Alice's second tab leaves: she is still there. (Its pong says the leave is done.)
    ws::send(
        &mut alice_tab,
        json!({"event": "pusher:unsubscribe", "data": {"channel": room}}),
    )
    .await;
    ws::send(&mut alice_tab, json!({"event": "pusher:ping", "data": {}})).await;
    while ws::frame(&mut alice_tab).await["event"] != "pusher:pong" {}
    ws::send(
        &mut bob,
        json!({"event": "client-typing", "channel": room, "data": {"text": "hi"}}),
    )
    .await;
    // Alice sees bob's client event: it was relayed (and so its webhook queued).
    while ws::frame(&mut alice).await["event"] != "client-typing" {}
    alice.close(None).await.unwrap();
    drop(alice);
    // Bob hears she left: her leave is done.
    while ws::frame(&mut bob).await["event"] != "pusher_internal:member_removed" {}
    let (mut other, _) = ws::connect(&server).await;
    let reply = ws::subscribe(&mut other, "cache-news", None).await;
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(ws::frame(&mut other).await["event"], "pusher:cache_miss");
    bob.close(None).await.unwrap();
    other.close(None).await.unwrap();

    let expected = [
        "channel_occupied presence-room",
        "member_added presence-room alice",
        "member_added presence-room bob",
        "client_event presence-room bob",
        "member_removed presence-room alice",
        "channel_occupied cache-news",
        "cache_miss cache-news",
        "member_removed presence-room bob",
        "channel_vacated presence-room",
        "channel_vacated cache-news",
    ];
    // Bob's and the other socket's ends race each other; each channel's own order does not.
    let mut got = everything.wait_for(expected.len()).await;
    let vacated_at = got.len() - 3;
    got[vacated_at..].sort_by_key(|line| line.contains("cache-news"));
    assert_eq!(got, expected);
    let members: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|line| line.starts_with("member_"))
        .collect();
    assert_eq!(members_only.wait_for(members.len()).await, members);

    // The client event's fields, as Pusher sends them.
    let client_event = everything
        .accepted()
        .iter()
        .flat_map(|delivery| {
            serde_json::from_str::<Value>(&delivery.body).unwrap()["events"]
                .as_array()
                .unwrap()
                .clone()
        })
        .find(|event| event["name"] == "client_event")
        .unwrap();
    assert_eq!(client_event["event"], "client-typing");
    assert_eq!(client_event["data"], r#"{"text":"hi"}"#, "data is a string");
    assert!(client_event["socket_id"].as_str().unwrap().contains('.'));
}

#[tokio::test]
async fn a_receiver_down_for_a_while_loses_nothing_inside_the_window_in_order() {
    let receiver = Receiver::start().await;
    receiver.set_down(true);
    let server = Server::start_with_env("", 300, &[("VELO_WEBHOOK_URLS", &receiver.url)]);
    let (mut socket, _) = ws::connect(&server).await;
    let expected = occupy_and_vacate(&mut socket, "down-", 150).await;
    // Refused a few times (the retries back off), then the receiver comes back.
    assert!(
        eventually(Duration::from_secs(10), || async {
            receiver.refused() >= 3
        })
        .await,
        "retried"
    );
    receiver.set_down(false);
    let got = receiver.wait_for(expected.len()).await;
    assert_eq!(got, expected, "every event, once, in order");
    let requests = receiver.accepted().len();
    assert!(
        (expected.len().div_ceil(50)..expected.len()).contains(&requests),
        "batched: {requests} requests"
    );
    server
        .wait_for_metrics(&[
            &format!("velo_webhooks_sent_total {}", expected.len()),
            "velo_webhooks_dropped_total 0",
        ])
        .await
        .unwrap();
    assert!(
        !server
            .metrics()
            .await
            .contains("velo_webhooks_retried_total 0\n")
    );
}

#[tokio::test]
async fn past_the_retry_window_events_are_dropped_counted_and_the_next_ones_go() {
    let receiver = Receiver::start().await;
    receiver.set_down(true);
    let server = Server::start_with_env(
        "",
        300,
        &[
            ("VELO_WEBHOOK_URLS", &receiver.url),
            ("VELO_WEBHOOK_RETRY_WINDOW_SECS", "1"),
        ],
    );
    let (mut socket, _) = ws::connect(&server).await;
    occupy_and_vacate(&mut socket, "lost-", 1).await;
    server
        .wait_for_metrics(&["velo_webhooks_dropped_total 2"])
        .await
        .unwrap();
    assert!(server.wait_for_log(&["dropped"]).await);
    receiver.set_down(false);
    let expected = occupy_and_vacate(&mut socket, "after-", 1).await;
    assert_eq!(receiver.wait_for(expected.len()).await, expected);
}

#[tokio::test]
async fn a_webhook_url_that_is_not_http_stops_the_server_with_a_clear_message() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_velo-realtime"))
        .env("VELO_WEBHOOK_URLS", "ftp://example.com/hooks")
        .env("VELO_BIND", "127.0.0.1:0")
        .env("VELO_DATA_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("webhook URL `ftp://example.com/hooks` is not an http:// or https:// URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_server_stopping_sends_the_webhooks_its_closing_sockets_made() {
    let receiver = Receiver::start().await;
    let server = Server::start_with_env("", 300, &[("VELO_WEBHOOK_URLS", &receiver.url)]);
    let (mut socket, _) = ws::connect(&server).await;
    let reply = ws::subscribe(&mut socket, "news", None).await;
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(receiver.wait_for(1).await, ["channel_occupied news"]);
    // The client reads its 4200 (reconnect) close, as pusher-js does, while the server stops.
    let closed = tokio::spawn(async move {
        loop {
            if let ws::Read::Closed(code) = ws::read(&mut socket).await {
                return code;
            }
        }
    });
    let mut server = server;
    let stopped = tokio::task::spawn_blocking(move || server.terminate());
    assert_eq!(closed.await.unwrap(), Some(4200));
    assert!(stopped.await.unwrap(), "a clean stop");
    assert_eq!(
        receiver.events(),
        ["channel_occupied news", "channel_vacated news"],
        "sent before the process ended"
    );
}
