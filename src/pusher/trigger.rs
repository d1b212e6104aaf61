//! Triggered events (PUSHER.md §9, §10): what the Pusher HTTP API's `events` and
//! `batch_events`, a hook's `trigger` and the console's `POST /api/console/events` send. One
//! check of an event (name, data size, channels, `socket_id`) and one delivery path: with driver
//! `pusher` the external service alone; otherwise the other nodes first in cluster mode, then
//! this node's sockets and a cache channel's last event; and the console's tail. It knows no request shape,
//! status or message: each caller words the refusal ([`TriggerError`]) for its own API.

use std::borrow::Cow;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Driver;
use super::outbound::OutEvent;
use super::peers::{ChannelFrame, PeerMessage, Unavailable};
use super::protocol::{MAX_EVENT_NAME, SocketId, channel_kind, frames};
use super::tail::TailRow;

/// Largest `data` of one event, in bytes.
pub const MAX_DATA_BYTES: usize = 10 * 1024;
/// Most channels one event may go to.
pub const MAX_CHANNELS: usize = 100;

/// Why an event cannot be triggered; each API says it in its own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerError {
    /// The event's name is empty or longer than [`MAX_EVENT_NAME`].
    Name,
    /// `data` is over [`MAX_DATA_BYTES`].
    DataTooLarge,
    /// No channel, or more than [`MAX_CHANNELS`].
    ChannelCount,
    /// A channel's name is not a Pusher channel name.
    Channel(String),
    /// The socket to leave out is not a socket id (`1234.5678`).
    SocketId(String),
}

/// An event checked for sending: every field is valid.
pub struct Trigger {
    name: String,
    data: String,
    channels: Vec<String>,
    except: Option<SocketId>,
}

impl Trigger {
    /// Checks an event to send to `channels`, leaving out the socket `socket_id`.
    pub fn new(
        name: String,
        data: String,
        channels: Vec<String>,
        socket_id: Option<String>,
    ) -> Result<Self, TriggerError> {
        if name.is_empty() || name.len() > MAX_EVENT_NAME {
            return Err(TriggerError::Name);
        }
        if data.len() > MAX_DATA_BYTES {
            return Err(TriggerError::DataTooLarge);
        }
        if channels.is_empty() || channels.len() > MAX_CHANNELS {
            return Err(TriggerError::ChannelCount);
        }
        if let Some(invalid) = channels
            .iter()
            .find(|channel| channel_kind(channel).is_none())
        {
            return Err(TriggerError::Channel(invalid.clone()));
        }
        let except = match socket_id {
            None => None,
            Some(text) => Some(SocketId::parse(&text).ok_or(TriggerError::SocketId(text))?),
        };
        Ok(Trigger {
            name,
            data,
            channels,
            except,
        })
    }

    /// The channels it goes to.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }
}

/// Sends checked events (a batch all at once), where record events go too
/// ([`Driver::deliver`]): with driver `pusher` to the external service alone, where the app's
/// clients listen; otherwise each frame is built once, and in cluster mode the other nodes get
/// them first, in one message, and when that fails nothing is sent. Answers, per event, how
/// many of this node's sockets it was queued to.
pub async fn send(driver: &Driver, events: &[Trigger]) -> Result<Vec<usize>, Unavailable> {
    if let Some(outbound) = &driver.outbound {
        for event in events {
            let data: Arc<str> = Arc::from(event.data.as_str());
            let socket_id = event.except.as_ref().map(|id| id.as_str().to_owned());
            for channel in &event.channels {
                outbound.send(OutEvent {
                    name: Cow::Owned(event.name.clone()),
                    channel: Arc::from(channel.as_str()),
                    data: data.clone(),
                    socket_id: socket_id.clone(),
                });
            }
            emit(driver, event, 0);
        }
        return Ok(vec![0; events.len()]);
    }
    let frames: Vec<ChannelFrame> = events
        .iter()
        .flat_map(|event| {
            event.channels.iter().map(|channel| ChannelFrame {
                channel: channel.clone(),
                frame: Utf8Bytes::from(frames::event(&event.name, channel, &event.data)),
                except: event.except.clone(),
                seq: None,
            })
        })
        .collect();
    let message = PeerMessage::Frames { frames, keep: true };
    if let Some(peers) = &driver.peers {
        peers.publish(&message).await?;
    }
    let mut queued = Vec::with_capacity(events.len());
    if let PeerMessage::Frames { frames, keep } = &message {
        let mut frames = frames.iter();
        for event in events {
            // The event's frames, one per channel, in order.
            let sockets: usize = frames
                .by_ref()
                .take(event.channels.len())
                .map(|frame| driver.publish_frame(frame, *keep))
                .sum();
            emit(driver, event, sockets);
            queued.push(sockets);
        }
    }
    Ok(queued)
}

/// The console tail's row for a sent event.
fn emit(driver: &Driver, event: &Trigger, sockets: usize) {
    driver.tail.emit(|| {
        TailRow::new(
            "trigger",
            &event.name,
            &event.channels[0],
            event.channels.len(),
            sockets,
            &event.data,
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, data: usize, channels: &[&str], socket: Option<&str>) -> TriggerError {
        match Trigger::new(
            name.into(),
            "x".repeat(data),
            channels.iter().map(|&channel| channel.into()).collect(),
            socket.map(Into::into),
        ) {
            Ok(_) => panic!("{name:?} to {channels:?} passed"),
            Err(error) => error,
        }
    }

    #[test]
    fn each_refusal_names_what_is_wrong() {
        let long = "e".repeat(MAX_EVENT_NAME + 1);
        assert_eq!(check("", 1, &["a"], None), TriggerError::Name);
        assert_eq!(check(&long, 1, &["a"], None), TriggerError::Name);
        assert_eq!(
            check("e", MAX_DATA_BYTES + 1, &["a"], None),
            TriggerError::DataTooLarge
        );
        assert_eq!(check("e", 1, &[], None), TriggerError::ChannelCount);
        let many = vec!["a"; MAX_CHANNELS + 1];
        assert_eq!(check("e", 1, &many, None), TriggerError::ChannelCount);
        assert_eq!(
            check("e", 1, &["a", "no spaces"], None),
            TriggerError::Channel("no spaces".into())
        );
        assert_eq!(
            check("e", 1, &["a"], Some("12")),
            TriggerError::SocketId("12".into())
        );
        let most = vec!["a"; MAX_CHANNELS];
        let name = "e".repeat(MAX_EVENT_NAME);
        let data = "x".repeat(MAX_DATA_BYTES);
        let channels = most.into_iter().map(String::from).collect();
        assert!(Trigger::new(name, data, channels, Some("1.2".into())).is_ok());
    }
}
