//! A webhook receiver for the tests: a minimal HTTP/1.1 server on 127.0.0.1 that records the
//! webhook requests it accepts (or refuses them with 503 while it is "down").

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use velo_realtime::pusher::signature::AppCredentials;

use super::{APP_ID, APP_KEY, APP_SECRET, eventually};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub content_type: String,
    pub key: String,
    pub signature: String,
    pub body: String,
}

#[derive(Default)]
struct ReceiverState {
    /// Answers 503 to everything while true.
    down: bool,
    /// Requests answered 503.
    refused: usize,
    /// Requests answered 200, in arrival order.
    accepted: Vec<Delivery>,
}

/// A webhook receiver on 127.0.0.1: a minimal HTTP/1.1 server (keep-alive, Content-Length
/// bodies) that records what it accepts.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhooks", listener.local_addr().unwrap());
        let state: Arc<Mutex<ReceiverState>> = Arc::default();
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Receiver { url, state }
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    pub fn accepted(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().accepted.clone()
    }

    /// Every accepted event, in order, as `name channel [user_id]`; checks each request.
    pub fn events(&self) -> Vec<String> {
        let app = AppCredentials::new(APP_ID, APP_KEY, APP_SECRET);
        let mut events = Vec::new();
        for delivery in self.accepted() {
            assert_eq!(delivery.content_type, "application/json");
            assert!(
                app.verify_webhook(&delivery.key, delivery.body.as_bytes(), &delivery.signature),
                "signed with the app's key and secret: {delivery:?}"
            );
            let body: Value = serde_json::from_str(&delivery.body).unwrap();
            assert!(body["time_ms"].as_u64().unwrap() > 1_700_000_000_000);
            let batch = body["events"].as_array().unwrap();
            assert!(!batch.is_empty() && batch.len() <= 50, "{}", batch.len());
            for event in batch {
                let mut line = format!(
                    "{} {}",
                    event["name"].as_str().unwrap(),
                    event["channel"].as_str().unwrap()
                );
                if let Some(user_id) = event["user_id"].as_str() {
                    line += &format!(" {user_id}");
                }
                events.push(line);
            }
        }
        events
    }

    /// The accepted events, once there are `count` of them (within 20 s).
    pub async fn wait_for(&self, count: usize) -> Vec<String> {
        let arrived = eventually(Duration::from_secs(20), || async {
            self.accepted()
                .iter()
                .map(|delivery| {
                    serde_json::from_str::<Value>(&delivery.body).unwrap()["events"]
                        .as_array()
                        .unwrap()
                        .len()
                })
                .sum::<usize>()
                >= count
        })
        .await;
        let events = self.events();
        assert!(arrived, "{count} events expected, got {events:?}");
        events
    }
}

async fn serve(stream: tokio::net::TcpStream, state: Arc<Mutex<ReceiverState>>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            headers.push(line);
        }
        let header = |name: &str| {
            headers
                .iter()
                .filter_map(|line| line.split_once(':'))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
                .map(|(_, value)| value.trim().to_owned())
                .unwrap_or_default()
        };
        let length: usize = header("content-length").parse().unwrap_or(0);
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let delivery = Delivery {
            content_type: header("content-type"),
            key: header("x-pusher-key"),
            signature: header("x-pusher-signature"),
            body: String::from_utf8(body).unwrap(),
        };
        let status = {
            let mut state = state.lock().unwrap();
            if state.down {
                state.refused += 1;
                "503 Service Unavailable"
            } else {
                state.accepted.push(delivery);
                "200 OK"
            }
        };
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}
