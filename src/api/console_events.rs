//! `POST /api/console/events` (admin): a Pusher event triggered from the console's "Send" panel.
//! A browser holds no app secret and cannot sign the Pusher HTTP API, so the admin token stands
//! in for the signature; the event is then checked and sent exactly as the HTTP API's
//! `POST /apps/{id}/events` does ([`crate::pusher::trigger`]): the same limits, the same
//! delivery (the other nodes first in cluster mode, this node's sockets, a cache channel's last
//! event; or with driver `pusher` the external service alone), the console's tail.
//! This module only words the refusals for this API (422 with the field at fault).

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::{ApiError, Errors, operation_errors};
use super::payload::{BodyType, JsonBody, UnknownKeys};
use super::security::AdminToken;
use super::{ApiTags, App};
use crate::pusher::protocol::{MAX_CHANNEL_NAME, MAX_EVENT_NAME};
use crate::pusher::trigger::{self, MAX_CHANNELS, MAX_DATA_BYTES, Trigger, TriggerError};

/// A Pusher event to trigger, as the HTTP API's `POST /apps/{id}/events` takes it.
#[derive(Object, Debug)]
#[oai(example)]
pub struct ConsoleEvent {
    /// The channels to send it to: 1 to 100 Pusher channel names (`[A-Za-z0-9_\-=@,.;]`, at
    /// most 164 characters, with any prefix: `private-`, `presence-`, `#server-to-user-`, …).
    pub channels: Vec<String>,
    /// The event's name: 1 to 200 bytes.
    pub event: String,
    /// The event's data, sent as is: a string (JSON text, for pusher-js to parse), at most
    /// 10240 bytes.
    pub data: String,
    /// A socket not to send it to (`1234.5678`), as the HTTP API's `socket_id`.
    #[oai(skip_serializing_if_is_none)]
    pub socket_id: Option<String>,
}

/// Unknown keys are refused (422): a misspelt `socket_id` would otherwise send the event to
/// the socket it was meant to leave out.
impl BodyType for ConsoleEvent {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Refused;
}

impl Example for ConsoleEvent {
    fn example() -> Self {
        ConsoleEvent {
            channels: vec!["news".into()],
            event: "breaking".into(),
            data: r#"{"headline":"Console ships"}"#.into(),
            socket_id: None,
        }
    }
}

/// What was sent.
#[derive(Object, Debug)]
#[oai(example)]
pub struct ConsoleEventSent {
    /// How many channels it went to.
    pub channels: u64,
    /// How many of this node's sockets it was queued to (other nodes' sockets, in cluster mode,
    /// are not counted).
    pub sockets: u64,
}

impl Example for ConsoleEventSent {
    fn example() -> Self {
        ConsoleEventSent {
            channels: 1,
            sockets: 1,
        }
    }
}

#[derive(ApiResponse)]
pub enum ConsoleEventResponse {
    /// Sent.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<ConsoleEventSent>),
}

operation_errors! {
    TriggerConsoleEvent {
        400 => "The body is not JSON, or not `application/json`.",
        401 => "No admin token was sent, or the token is invalid.",
        403 => "The token is a user's, not the admin's.",
        413 => "The body is over its size limit.",
        415 => "The body's charset is not UTF-8.",
        422 => "A field is missing or of the wrong type, a key is unknown, or the event breaks a limit of the Pusher HTTP API's trigger (the event's name, the data's size, the channels' names or count, the socket id); `errors` says which field.",
        503 => "Cluster mode: the other nodes could not be told (Redis did not answer); nothing was sent.",
    }
}

/// The refusal, under the field at fault.
fn refusal(error: TriggerError) -> ApiError {
    match error {
        TriggerError::Name => ApiError::invalid(
            "event",
            format!("`event` must be 1 to {MAX_EVENT_NAME} bytes"),
        ),
        TriggerError::DataTooLarge => ApiError::invalid(
            "data",
            format!("`data` is over the limit of {MAX_DATA_BYTES} bytes"),
        ),
        TriggerError::ChannelCount => {
            ApiError::invalid("channels", format!("give 1 to {MAX_CHANNELS} channels"))
        }
        TriggerError::Channel(name) => ApiError::invalid(
            "channels",
            format!(
                "`{name}` is not a channel name: at most {MAX_CHANNEL_NAME} characters, each a \
                 letter, a digit or one of `_-=@,.;` (after any `#server-to-user-`)"
            ),
        ),
        TriggerError::SocketId(text) => ApiError::invalid(
            "socket_id",
            format!("`{text}` is not a socket id (two numbers joined by a dot: `1234.5678`)"),
        ),
    }
}

pub struct ConsoleEventsApi;

#[OpenApi(tag = "ApiTags::Console")]
impl ConsoleEventsApi {
    /// Trigger a Pusher event
    ///
    /// What the Pusher HTTP API's `POST /apps/{app_id}/events` does, with the admin token
    /// instead of the app's signature (the console has no app secret): the same limits, and the
    /// same delivery (to every node's sockets in cluster mode, a cache channel keeps it, or with
    /// driver `pusher` to the external service alone; the console's event tail shows it as a
    /// `trigger`).
    #[oai(
        path = "/api/console/events",
        method = "post",
        operation_id = "triggerConsoleEvent"
    )]
    async fn trigger(
        &self,
        app: Data<&App>,
        admin: AdminToken,
        body: JsonBody<ConsoleEvent>,
    ) -> Result<ConsoleEventResponse, Errors<TriggerConsoleEvent>> {
        app.require_admin(&admin)?;
        let ConsoleEvent {
            channels,
            event,
            data,
            socket_id,
        } = body.0;
        let event = Trigger::new(event, data, channels, socket_id).map_err(refusal)?;
        let sockets = trigger::send(&app.driver, std::slice::from_ref(&event))
            .await
            .map_err(|why| {
                ApiError::unavailable(format!(
                    "the other nodes could not be told ({}); nothing was sent; retry",
                    why.0
                ))
            })?;
        Ok(ConsoleEventResponse::Ok(Json(ConsoleEventSent {
            channels: event.channels().len() as u64,
            sockets: sockets.iter().sum::<usize>() as u64,
        })))
    }
}
