//! Pub/sub between nodes: the [`Peers`] seam's cluster implementation. One Redis channel per
//! deployment, `{prefix}bus` (pub/sub ignores key prefixes and database numbers, so the prefix
//! is in the channel's name: deployments sharing a Redis never hear each other).
//!
//! A node publishes on its ordered command connection ([`Commands`]) and listens on a dedicated
//! pub/sub connection, reconnecting with backoff when it drops. A node delivers what it sends
//! to its own sockets at once (no round trip), and ignores its own messages when they come
//! back: each socket gets a frame once. Pub/sub delivers at most once: messages published while
//! a node's subscription is down are lost to that node (presence and occupancy are not: they
//! live in Redis, not in messages).
//!
//! A message is encoded once (JSON, frames as the text sockets get) and decoded once per node;
//! each frame is then queued as it is to the node's sockets.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::commands::Commands;
use super::presence::RedisPresence;
use super::{ClusterSettings, Life};
use crate::pusher::Driver;
use crate::pusher::peers::{ChannelFrame, PeerMessage, Peers, Unavailable};
use crate::pusher::presence::BoxFuture;
use crate::pusher::protocol::SocketId;

/// The first wait before resubscribing after the subscription dropped; doubled each failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between attempts to resubscribe.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The pub/sub channel of a deployment.
fn bus_channel(settings: &ClusterSettings) -> String {
    settings.key("bus")
}

/// This node's side of the bus.
pub struct Bus {
    commands: Commands,
    channel: String,
    life: Life,
    presence: RedisPresence,
}

impl Bus {
    pub fn new(
        commands: Commands,
        settings: &ClusterSettings,
        life: Life,
        presence: RedisPresence,
    ) -> Self {
        Self {
            commands,
            channel: bus_channel(settings),
            life,
            presence,
        }
    }

    fn publish_command(&self, message: &PeerMessage) -> redis::Cmd {
        let mut command = redis::cmd("PUBLISH");
        command.arg(&self.channel).arg(encode(&self.life, message));
        command
    }
}

impl Peers for Bus {
    fn publish<'a>(&'a self, message: &'a PeerMessage) -> BoxFuture<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            let _receivers: i64 = self
                .commands
                .query("publish to the other nodes", self.publish_command(message))
                .await?;
            Ok(())
        })
    }

    fn forward(&self, message: PeerMessage) {
        self.commands
            .send("publish to the other nodes", self.publish_command(&message));
    }

    fn channels<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, usize)>, Unavailable>> {
        Box::pin(self.presence.channels(prefix))
    }

    fn subscription_count<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<usize, Unavailable>> {
        Box::pin(self.presence.subscription_count(channel))
    }
}

/// A bus message on the wire.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    /// The run that sent it.
    from: Cow<'a, str>,
    body: WireBody<'a>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireBody<'a> {
    Frames {
        frames: Vec<WireFrame<'a>>,
        keep: bool,
    },
    Terminate {
        user_id: Cow<'a, str>,
    },
}

#[derive(Serialize, Deserialize)]
struct WireFrame<'a> {
    channel: Cow<'a, str>,
    frame: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    except: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

fn encode(from: &Life, message: &PeerMessage) -> String {
    let body = match message {
        PeerMessage::Frames { frames, keep } => WireBody::Frames {
            frames: frames
                .iter()
                .map(|frame| WireFrame {
                    channel: Cow::Borrowed(&frame.channel),
                    frame: Cow::Borrowed(frame.frame.as_str()),
                    except: frame
                        .except
                        .as_ref()
                        .map(|socket| Cow::Borrowed(socket.as_str())),
                    seq: frame.seq,
                })
                .collect(),
            keep: *keep,
        },
        PeerMessage::Terminate { user_id } => WireBody::Terminate {
            user_id: Cow::Borrowed(user_id),
        },
    };
    let wire = Wire {
        from: Cow::Borrowed(from.as_str()),
        body,
    };
    // Strings and booleans only: serializing cannot fail.
    serde_json::to_string(&wire).unwrap_or_default()
}

/// Why a bus message was not delivered.
#[derive(Debug, PartialEq, thiserror::Error)]
enum Undeliverable {
    #[error("not a bus message: {0}")]
    Malformed(String),
    #[error("an invalid socket id to leave out: {0}")]
    BadSocket(String),
}

/// The sending run and the message, or why it cannot be delivered.
fn decode(payload: &[u8]) -> Result<(String, PeerMessage), Undeliverable> {
    // Without `#[serde(borrow)]` every `Cow` decodes as owned: nothing borrows `payload`.
    let wire: Wire<'static> = serde_json::from_slice(payload)
        .map_err(|error| Undeliverable::Malformed(error.to_string()))?;
    let message = match wire.body {
        WireBody::Frames { frames, keep } => PeerMessage::Frames {
            frames: frames
                .into_iter()
                .map(|frame| {
                    let except = match frame.except {
                        None => None,
                        Some(text) => Some(
                            SocketId::parse(&text)
                                .ok_or_else(|| Undeliverable::BadSocket(text.into_owned()))?,
                        ),
                    };
                    Ok(ChannelFrame {
                        channel: frame.channel.into_owned(),
                        frame: Utf8Bytes::from(frame.frame.into_owned()),
                        except,
                        seq: frame.seq,
                    })
                })
                .collect::<Result<_, Undeliverable>>()?,
            keep,
        },
        WireBody::Terminate { user_id } => PeerMessage::Terminate {
            user_id: user_id.into_owned(),
        },
    };
    Ok((wire.from.into_owned(), message))
}

/// Listens to the bus for as long as the node runs: every other run's message is delivered
/// to this node's sockets. `subscribed` is told when the first subscription is confirmed.
pub async fn listen(
    settings: ClusterSettings,
    life: Life,
    driver: Arc<Driver>,
    subscribed: oneshot::Sender<()>,
) {
    let channel = bus_channel(&settings);
    let mut subscribed = Some(subscribed);
    let mut backoff = BACKOFF_FIRST;
    loop {
        match tokio::time::timeout(settings.timeout, subscribe(&settings, &channel)).await {
            Ok(Ok(mut pubsub)) => {
                backoff = BACKOFF_FIRST;
                if let Some(subscribed) = subscribed.take() {
                    let _ = subscribed.send(());
                } else {
                    tracing::info!("the bus subscription is back");
                }
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    match decode(message.get_payload_bytes()) {
                        Ok((from, _)) if from == life.as_str() => {}
                        Ok((_, message)) => driver.receive(message),
                        Err(error) => tracing::warn!(%error, "a bus message was dropped"),
                    }
                }
                tracing::warn!("the bus subscription dropped; resubscribing");
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot subscribe to the bus; retrying"),
            Err(_) => tracing::warn!("subscribing to the bus timed out; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn subscribe(
    settings: &ClusterSettings,
    channel: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = settings.client()?.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_the_wire() {
        let life = Life::new("node-a");
        let socket = SocketId::random();
        let message = PeerMessage::Frames {
            frames: vec![
                ChannelFrame {
                    channel: "cache-a".into(),
                    frame: Utf8Bytes::from(
                        r#"{"event":"e","channel":"cache-a","data":"{\"x\":\"é\"}"}"#,
                    ),
                    except: Some(socket),
                    seq: None,
                },
                ChannelFrame {
                    channel: "b".into(),
                    frame: Utf8Bytes::from("{}"),
                    except: None,
                    seq: Some(7),
                },
            ],
            keep: true,
        };
        let wire = encode(&life, &message);
        assert_eq!(
            decode(wire.as_bytes()),
            Ok((life.as_str().to_owned(), message))
        );
        let terminate = PeerMessage::Terminate {
            user_id: "u1".into(),
        };
        assert_eq!(
            decode(encode(&life, &terminate).as_bytes()),
            Ok((life.as_str().to_owned(), terminate))
        );
    }

    #[test]
    fn bad_messages_are_refused_not_delivered() {
        assert!(matches!(decode(b"nope"), Err(Undeliverable::Malformed(_))));
        let bad_socket = br#"{"from":"n~1","body":{"frames":{"frames":[{"channel":"a","frame":"{}","except":"x"}],"keep":false}}}"#;
        assert_eq!(
            decode(bad_socket),
            Err(Undeliverable::BadSocket("x".into()))
        );
    }
}
