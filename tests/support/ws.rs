//! A raw WebSocket client for the tests: connect to the real server, read and send frames.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::{APP_KEY, Server};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a client reads: a frame as JSON, or the close code.
#[derive(Debug, PartialEq)]
pub enum Read {
    Frame(Value),
    Closed(Option<u16>),
}

pub async fn read(socket: &mut Socket) -> Read {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("the server answers within 10 s");
        match next {
            Some(Ok(Message::Text(text))) => {
                return Read::Frame(serde_json::from_str(&text).expect("JSON frames"));
            }
            Some(Ok(Message::Close(frame))) => {
                return Read::Closed(frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Read::Closed(None),
        }
    }
}

pub async fn frame(socket: &mut Socket) -> Value {
    match read(socket).await {
        Read::Frame(frame) => frame,
        closed => panic!("expected a frame, got {closed:?}"),
    }
}

/// The next frame on `socket`, an event: its name and its data (parsed from the JSON string).
pub async fn event(socket: &mut Socket) -> (String, Value) {
    let frame = frame(socket).await;
    let data = serde_json::from_str(frame["data"].as_str().expect("data is a JSON string"))
        .expect("data is JSON");
    (frame["event"].as_str().unwrap().to_owned(), data)
}

pub async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .expect("sent");
}

/// Connects and reads the handshake; returns the socket and its id.
pub async fn connect(server: &Server) -> (Socket, String) {
    let (mut socket, _) = connect_async(server.ws_url(&format!(
        "/app/{APP_KEY}?protocol=7&client=js&version=8.4.0"
    )))
    .await
    .expect("the WebSocket opens");
    let established = frame(&mut socket).await;
    assert_eq!(established["event"], "pusher:connection_established");
    let data: Value =
        serde_json::from_str(established["data"].as_str().expect("data is a string")).unwrap();
    assert!(data["activity_timeout"].as_u64().unwrap() > 0);
    let socket_id = data["socket_id"].as_str().unwrap().to_owned();
    (socket, socket_id)
}

/// Connects a client whose receive buffer is tiny (4 KiB), so that the server's writes to it
/// block soon once it stops reading; reads the handshake.
pub async fn connect_with_tiny_buffer(server: &Server) -> Socket {
    let address = server.base.trim_start_matches("http://").parse().unwrap();
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(address).await.unwrap();
    let url = server.ws_url(&format!("/app/{APP_KEY}?protocol=7"));
    let (mut socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
        .await
        .expect("the WebSocket opens");
    assert_eq!(
        frame(&mut socket).await["event"],
        "pusher:connection_established"
    );
    socket
}

pub async fn subscribe(socket: &mut Socket, channel: &str, auth: Option<&str>) -> Value {
    let mut data = json!({ "channel": channel });
    if let Some(auth) = auth {
        data["auth"] = json!(auth);
    }
    send(socket, json!({ "event": "pusher:subscribe", "data": data })).await;
    frame(socket).await
}
