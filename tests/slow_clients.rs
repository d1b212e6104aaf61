//! Clients that are slow or silent on purpose, against the real server: silent and idle
//! connections are closed after the header-read timeout, a trickled body gets 408, a slowloris
//! attack at a lowered open-file limit does not keep `/health` from answering, WebSockets live
//! past both timeouts, and one that stopped reading is let go once it ends.

mod support;

use std::time::{Duration, Instant};

use futures::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::Server;
use support::ws::{connect, connect_with_tiny_buffer, frame, send, subscribe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

const COLLECTIONS: &str = r#"
[[collections]]
name = "posts"
api_rules = { list = "" }
"#;

/// Both timeouts at 1 s, so that the tests wait little.
const SHORT_TIMEOUTS: [(&str, &str); 2] = [
    ("VELO_HEADER_READ_TIMEOUT_SECS", "1"),
    ("VELO_BODY_READ_TIMEOUT_SECS", "1"),
];

/// How long a test waits for the server to close a connection whose timeout is 1 s.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Reads until `stream` ends (a close or a reset) and returns what came before; `None` if it
/// is still open after `within`.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(received),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Reads one response whose body has a `Content-Length`: its head and its body as text.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length");
            if body.len() >= length {
                return (head.to_owned(), body.to_owned());
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("a response within 10 s")
            .expect("the connection stays open until the response is read");
        assert!(read > 0, "closed mid-response: {text:?}");
        received.extend_from_slice(&buffer[..read]);
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    let server = Server::start_with_env(COLLECTIONS, 300, &SHORT_TIMEOUTS);
    let mut silent = TcpStream::connect(address(&server)).await.unwrap();
    let started = Instant::now();
    let received = read_to_close(&mut silent, CLOSE_WITHIN).await;
    assert!(
        received.is_some(),
        "a connection that sent nothing is still open after {CLOSE_WITHIN:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed early"
    );
    let counted = ["velo_timeouts_total{kind=\"header_read\"} 1"];
    if let Err(text) = server.wait_for_metrics(&counted).await {
        panic!("{text}");
    }
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_read_timeout() {
    let server = Server::start_with_env(COLLECTIONS, 300, &SHORT_TIMEOUTS);
    let mut client = TcpStream::connect(address(&server)).await.unwrap();
    // Two requests on one connection: it is kept alive between them...
    let mut started = Instant::now();
    for _ in 0..2 {
        // The idle timer starts once the response is written, so after this.
        started = Instant::now();
        client
            .write_all(b"GET /health HTTP/1.1\r\nHost: velo\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, r#"{"status":"ok"}"#);
    }
    // ...and closed once idle for the timeout.
    let after = read_to_close(&mut client, CLOSE_WITHIN).await;
    assert_eq!(
        after.as_deref(),
        Some(&b""[..]),
        "an idle kept-alive connection is still open after {CLOSE_WITHIN:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed early"
    );
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_its_connection_closes() {
    let server = Server::start_with_env(COLLECTIONS, 300, &SHORT_TIMEOUTS);
    let client = TcpStream::connect(address(&server)).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    writer
        .write_all(
            b"POST /api/realtime/subscribe HTTP/1.1\r\nHost: velo\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    // One byte of the 100 every 300 ms, for at most 10 s (the body is never complete).
    let trickle = tokio::spawn(async move {
        for _ in 0..33 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut received))
        .await
        .is_ok();
    trickle.abort();
    let text = String::from_utf8_lossy(&received);
    assert!(closed, "still open after 10 s; received {text:?}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).expect("a JSON body");
    assert!(body["message"].as_str().unwrap().contains("1 s"), "{body}");
    let counted = ["velo_timeouts_total{kind=\"body_read\"} 1"];
    if let Err(text) = server.wait_for_metrics(&counted).await {
        panic!("{text}");
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_its_responses_is_let_go() {
    let server =
        Server::start_with_env(COLLECTIONS, 300, &[("VELO_WRITE_STALL_TIMEOUT_SECS", "1")]);
    // Swagger UI's page is 1.7 MB: 40 of them, asked for at once and never read, are more
    // than the socket buffers hold, so the server's writes block.
    let mut client = TcpStream::connect(address(&server)).await.unwrap();
    let requests = "GET /docs HTTP/1.1\r\nHost: velo\r\n\r\n".repeat(40);
    client.write_all(requests.as_bytes()).await.unwrap();
    let counted = ["velo_timeouts_total{kind=\"write_stall\"} 1"];
    if let Err(text) = server.wait_for_metrics(&counted).await {
        panic!("the blocked writes were not given up: {text}");
    }
    // The connection is gone: reading drains what was buffered, then ends.
    let mut buffer = vec![0; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match client.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection is still open");
}

#[tokio::test]
async fn a_body_sent_in_time_is_served_and_the_connection_kept() {
    let server = Server::start_with_env(COLLECTIONS, 300, &SHORT_TIMEOUTS);
    let body = json!({ "collection": "posts" }).to_string();
    let (first, rest) = body.split_at(5);
    let mut client = TcpStream::connect(address(&server)).await.unwrap();
    let head = format!(
        "POST /api/realtime/subscribe HTTP/1.1\r\nHost: velo\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.write_all(rest.as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    client
        .write_all(b"GET /health HTTP/1.1\r\nHost: velo\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn a_websocket_outlives_both_timeouts() {
    let server = Server::start_with_env(COLLECTIONS, 300, &SHORT_TIMEOUTS);
    let (mut socket, _) = connect(&server).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send(&mut socket, json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(frame(&mut socket).await["event"], "pusher:pong");
}

/// A client that stopped reading leaves the server's write to it blocked; once the client
/// closes (or its pong times out) the reader ends, and the connection must not wait on that
/// write for ever.
#[tokio::test]
async fn a_websocket_that_stopped_reading_is_let_go_when_it_closes() {
    let server = Server::start(COLLECTIONS);
    // A tiny receive buffer: the server's writes to this client block soon.
    let mut stuck = connect_with_tiny_buffer(&server).await;
    subscribe(&mut stuck, "flood", Some("")).await;
    // 7.2 MB, more than the sockets buffer (the server's send buffer grows to 4 MB at most
    // here); 900 frames, fewer than the queue holds, so the server does not cut the client
    // off as a slow consumer.
    let data = format!("\"{}\"", "x".repeat(8000));
    for _ in 0..900 {
        let body = json!({"name": "tick", "channel": "flood", "data": data});
        let reply = server
            .pusher_api(Method::POST, "/apps/4242/events", Some(&body))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    stuck.send(Message::Close(None)).await.unwrap();
    let let_go = support::eventually(Duration::from_secs(30), || async {
        server
            .metrics()
            .await
            .lines()
            .any(|line| line == "velo_connections 0")
    })
    .await;
    assert!(
        let_go,
        "the connection is still counted 30 s after its client closed"
    );
}

/// Connections an attacker holds open at once.
const ATTACKERS: usize = 100;

/// One attacker: opens a connection, starts a request and sends one more byte of a header
/// every 500 ms, never finishing it; opens another when the server closes it.
async fn slowloris(address: String) {
    loop {
        let Ok(mut stream) = TcpStream::connect(&address).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut sending = stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: velo\r\nX-Slow: ")
            .await;
        while sending.is_ok() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            sending = stream.write_all(b"a").await;
        }
    }
}

/// The outside tester's finding, at a scale that fits a test: more trickling connections than
/// the server has files. Without a header-read timeout they hold every file for good and
/// `/health` waits in the kernel's backlog until its client gives up.
#[tokio::test]
async fn health_answers_through_a_slowloris_attack_at_the_file_limit() {
    let server = Server::start_with_env(COLLECTIONS, 300, &SHORT_TIMEOUTS);
    server.limit_open_files(64);
    let mut attackers = JoinSet::new();
    for _ in 0..ATTACKERS {
        attackers.spawn(slowloris(address(&server)));
    }
    let saturated = support::eventually(Duration::from_secs(10), || async {
        server.logged(&["cannot accept connections"])
    })
    .await;
    assert!(saturated, "the attack never reached the open-file limit");
    // A new connection for every attempt: each must get through the backlog.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // Spread over several rounds of the timeout, while closed attackers come back.
    for attempt in 1..=5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let started = Instant::now();
        let reply = fresh
            .get(format!("{}/health", server.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let status = reply.as_ref().map(reqwest::Response::status);
        assert!(
            matches!(status, Ok(StatusCode::OK)),
            "/health attempt {attempt} under attack: {status:?} after {:?}",
            started.elapsed()
        );
        eprintln!("/health attempt {attempt}: 200 in {:?}", started.elapsed());
    }
    attackers.shutdown().await;
}
