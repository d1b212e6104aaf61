//! The signed Pusher HTTP API (PUSHER.md §9): server libraries (Node `pusher`, PHP
//! pusher-php-server, Python `pusher`) and Laravel's broadcaster trigger events through it.
//!
//! Every request is checked the way the libraries sign it: app id, key, a timestamp within 600
//! seconds, `body_md5` of the raw bytes, and the HMAC of `METHOD\nPATH\nsorted decoded query`.
//! Every reply, errors included, is a JSON object (PHP decodes every body). The events
//! themselves are checked and sent by [`super::trigger`], as a hook's and the console's are;
//! this module owns the requests' shapes, their signatures and the replies' wording.

use std::sync::Arc;

use bytes::Bytes;
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{Request, Response, handler};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Driver;
use super::peers::{PeerMessage, Unavailable};
use super::protocol::{ChannelKind, MAX_EVENT_NAME, USER_CHANNEL_PREFIX, channel_kind};
use super::signature::body_md5;
use super::trigger::{self, MAX_CHANNELS, MAX_DATA_BYTES, Trigger, TriggerError};
use crate::auth::now_secs;

/// Most events in one batch.
pub const MAX_BATCH: usize = 10;
/// How far a request's timestamp may be from the server's clock.
const TIMESTAMP_WINDOW_SECS: u64 = 600;

fn reply(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

/// Why a Pusher HTTP API request is refused; the reply is `{"error": message}`.
#[derive(Debug, thiserror::Error)]
pub enum HttpApiError {
    #[error("Unknown app `{0}`")]
    UnknownApp(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    /// Cluster mode: Redis did not answer in time; nothing was sent (unless Redis took it just
    /// as the wait ran out).
    #[error("The cluster is unavailable ({0}); retry later")]
    Unavailable(#[from] Unavailable),
}

impl HttpApiError {
    fn status(&self) -> StatusCode {
        match self {
            HttpApiError::UnknownApp(_) => StatusCode::NOT_FOUND,
            HttpApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn into_response(self) -> Response {
        reply(self.status(), json!({ "error": self.to_string() }))
    }
}

/// Checks app id and signature; the refusal to send when they do not hold.
fn authenticate(
    driver: &Driver,
    request: &Request,
    app_id: &str,
    body: &[u8],
) -> Result<(), HttpApiError> {
    if app_id != driver.app.id {
        return Err(HttpApiError::UnknownApp(app_id.to_owned()));
    }
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(request.uri().query().unwrap_or_default())
            .map_err(|_| HttpApiError::BadRequest("Malformed query string".into()))?;
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    if param("auth_key") != Some(driver.app.key.as_str()) {
        return Err(HttpApiError::Unauthorized("Unknown auth_key"));
    }
    let timestamp: u64 = param("auth_timestamp")
        .and_then(|value| value.parse().ok())
        .ok_or(HttpApiError::Unauthorized(
            "Missing or malformed auth_timestamp",
        ))?;
    if now_secs().abs_diff(timestamp) > TIMESTAMP_WINDOW_SECS {
        return Err(HttpApiError::Unauthorized(
            "Timestamp expired: auth_timestamp must be within 600 s of the server's time",
        ));
    }
    match param("body_md5") {
        Some(md5) if md5 != body_md5(body) => {
            return Err(HttpApiError::Unauthorized(
                "body_md5 does not match the body",
            ));
        }
        None if !body.is_empty() => {
            return Err(HttpApiError::Unauthorized("Missing body_md5"));
        }
        _ => {}
    }
    let signature = param("auth_signature").unwrap_or_default();
    // The full path: routes nested under `/apps` see only the rest of it.
    let path = request.original_uri().path();
    if !driver
        .app
        .verify_request(request.method().as_str(), path, &params, signature)
    {
        return Err(HttpApiError::Unauthorized(
            "Invalid signature: expected HMAC SHA256 hex digest of METHOD\\nPATH\\nsorted query",
        ));
    }
    Ok(())
}

/// One event to trigger.
#[derive(Deserialize)]
struct Event {
    name: String,
    data: String,
    #[serde(default)]
    channels: Vec<String>,
    channel: Option<String>,
    socket_id: Option<String>,
    info: Option<String>,
}

impl From<TriggerError> for HttpApiError {
    fn from(error: TriggerError) -> Self {
        let bad = HttpApiError::BadRequest;
        match error {
            TriggerError::Name => bad(format!("`name` must be 1 to {MAX_EVENT_NAME} characters")),
            TriggerError::DataTooLarge => HttpApiError::TooLarge(format!(
                "`data` is over the limit of {MAX_DATA_BYTES} bytes"
            )),
            TriggerError::ChannelCount => bad(format!("give 1 to {MAX_CHANNELS} channels")),
            TriggerError::Channel(invalid) => bad(format!("invalid channel name `{invalid}`")),
            TriggerError::SocketId(text) => bad(format!("invalid socket_id `{text}`")),
        }
    }
}

/// The event, checked for sending, and the `info` its reply asks for.
fn check(event: Event) -> Result<(Trigger, Vec<String>), HttpApiError> {
    let mut channels = event.channels;
    channels.extend(event.channel);
    let trigger = Trigger::new(event.name, event.data, channels, event.socket_id)?;
    // `user_count` is answered for presence channels and left out for others (DESIGN.md §15).
    Ok((trigger, info_items(event.info)))
}

/// One event's `info` reply, if asked for.
async fn event_info(
    driver: &Driver,
    event: &Trigger,
    info: &[String],
) -> Result<Option<Value>, HttpApiError> {
    if info.is_empty() {
        return Ok(None);
    }
    let mut channels = Map::new();
    for channel in event.channels() {
        channels.insert(channel.clone(), channel_info(driver, channel, info).await?);
    }
    Ok(Some(json!({ "channels": channels })))
}

/// The attributes `info` asks for: `subscription_count` (sockets), and `user_count` (members)
/// on presence channels; on every node in cluster mode.
async fn channel_info(
    driver: &Driver,
    channel: &str,
    info: &[String],
) -> Result<Value, HttpApiError> {
    let mut attributes = Map::new();
    if info.iter().any(|item| item == "subscription_count") {
        attributes.insert(
            "subscription_count".into(),
            driver.subscription_count(channel).await?.into(),
        );
    }
    if info.iter().any(|item| item == "user_count")
        && channel_kind(channel) == Some(ChannelKind::Presence)
    {
        let members = driver.presence.members(channel).await?.len();
        attributes.insert("user_count".into(), members.into());
    }
    Ok(Value::Object(attributes))
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, HttpApiError> {
    serde_json::from_slice(body)
        .map_err(|error| HttpApiError::BadRequest(format!("invalid body: {error}")))
}

/// The reply: the JSON value, or the error as `{"error"}` with its status.
fn respond(outcome: Result<Value, HttpApiError>) -> Response {
    match outcome {
        Ok(body) => reply(StatusCode::OK, body),
        Err(error) => error.into_response(),
    }
}

fn info_items(info: Option<String>) -> Vec<String> {
    info.map(|info| info.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `POST /apps/{app_id}/events`
#[handler]
pub async fn post_events(
    request: &Request,
    Path(app_id): Path<String>,
    body: Bytes,
    driver: Data<&Arc<Driver>>,
) -> Response {
    respond(
        async {
            authenticate(&driver, request, &app_id, &body)?;
            let (event, info) = check(parse_json::<Event>(&body)?)?;
            trigger::send(&driver, std::slice::from_ref(&event)).await?;
            Ok(event_info(&driver, &event, &info)
                .await?
                .unwrap_or_else(|| json!({})))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct Batch {
    batch: Vec<Event>,
}

/// `POST /apps/{app_id}/batch_events`: every event is checked before any is sent.
#[handler]
pub async fn post_batch_events(
    request: &Request,
    Path(app_id): Path<String>,
    body: Bytes,
    driver: Data<&Arc<Driver>>,
) -> Response {
    respond(
        async {
            authenticate(&driver, request, &app_id, &body)?;
            let batch = parse_json::<Batch>(&body)?.batch;
            if batch.len() > MAX_BATCH {
                return Err(HttpApiError::BadRequest(format!(
                    "a batch holds at most {MAX_BATCH} events"
                )));
            }
            let (events, asked): (Vec<Trigger>, Vec<Vec<String>>) = batch
                .into_iter()
                .map(check)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .unzip();
            trigger::send(&driver, &events).await?;
            let mut infos: Vec<Option<Value>> = Vec::with_capacity(events.len());
            for (event, info) in events.iter().zip(&asked) {
                infos.push(event_info(&driver, event, info).await?);
            }
            if infos.iter().all(Option::is_none) {
                return Ok(json!({}));
            }
            let batch: Vec<Value> = infos
                .into_iter()
                .map(|info| {
                    info.and_then(|info| info.get("channels").cloned())
                        .unwrap_or_else(|| json!({}))
                })
                .collect();
            Ok(json!({ "batch": batch }))
        }
        .await,
    )
}

#[derive(Deserialize, Default)]
struct ChannelsQuery {
    filter_by_prefix: Option<String>,
    info: Option<String>,
}

fn channels_query(request: &Request) -> Result<ChannelsQuery, HttpApiError> {
    serde_urlencoded::from_str(request.uri().query().unwrap_or_default())
        .map_err(|_| HttpApiError::BadRequest("Malformed query string".into()))
}

/// `GET /apps/{app_id}/channels`: occupied channels.
#[handler]
pub async fn get_channels(
    request: &Request,
    Path(app_id): Path<String>,
    driver: Data<&Arc<Driver>>,
) -> Response {
    respond(
        async {
            authenticate(&driver, request, &app_id, b"")?;
            let query = channels_query(request)?;
            let prefix = query.filter_by_prefix.unwrap_or_default();
            let info = info_items(query.info);
            if info.iter().any(|item| item == "user_count") && !prefix.starts_with("presence-") {
                return Err(HttpApiError::BadRequest(
                    "`user_count` needs filter_by_prefix=presence-".into(),
                ));
            }
            let mut channels = Map::new();
            // Users' own channels are theirs, not the app's: they are not listed.
            for (name, _) in driver.channels(&prefix).await? {
                if channel_kind(&name) == Some(ChannelKind::User) {
                    continue;
                }
                let attributes = channel_info(&driver, &name, &info).await?;
                channels.insert(name, attributes);
            }
            Ok(json!({ "channels": channels }))
        }
        .await,
    )
}

/// `GET /apps/{app_id}/channels/{channel_name}`: one channel's state.
#[handler]
pub async fn get_channel(
    request: &Request,
    Path((app_id, name)): Path<(String, String)>,
    driver: Data<&Arc<Driver>>,
) -> Response {
    respond(
        async {
            authenticate(&driver, request, &app_id, b"")?;
            let kind = channel_kind(&name).ok_or_else(|| {
                HttpApiError::BadRequest(format!("invalid channel name `{name}`"))
            })?;
            let info = info_items(channels_query(request)?.info);
            if info.iter().any(|item| item == "user_count") && kind != ChannelKind::Presence {
                return Err(HttpApiError::BadRequest(
                    "`user_count` is only available for presence channels".into(),
                ));
            }
            let mut body = Map::new();
            body.insert(
                "occupied".into(),
                (driver.subscription_count(&name).await? > 0).into(),
            );
            if let Value::Object(attributes) = channel_info(&driver, &name, &info).await? {
                body.extend(attributes);
            }
            Ok(Value::Object(body))
        }
        .await,
    )
}

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`: every connection the user
/// signed in on gets `pusher:error` 4009 and is closed with 4009 (pusher-js then does not
/// reconnect).
#[handler]
pub async fn terminate_connections(
    request: &Request,
    Path((app_id, user_id)): Path<(String, String)>,
    body: Bytes,
    driver: Data<&Arc<Driver>>,
) -> Response {
    respond(
        async {
            authenticate(&driver, request, &app_id, &body)?;
            let channel = format!("{USER_CHANNEL_PREFIX}{user_id}");
            if channel_kind(&channel) != Some(ChannelKind::User) {
                return Err(HttpApiError::BadRequest(format!(
                    "invalid user id `{user_id}`"
                )));
            }
            if let Some(peers) = &driver.peers {
                peers
                    .publish(&PeerMessage::Terminate {
                        user_id: user_id.clone(),
                    })
                    .await?;
            }
            driver.terminate(&user_id);
            Ok(json!({}))
        }
        .await,
    )
}

/// `GET /apps/{app_id}/channels/{presence-channel}/users`: the channel's members.
#[handler]
pub async fn get_users(
    request: &Request,
    Path((app_id, name)): Path<(String, String)>,
    driver: Data<&Arc<Driver>>,
) -> Response {
    respond(
        async {
            authenticate(&driver, request, &app_id, b"")?;
            if channel_kind(&name) != Some(ChannelKind::Presence) {
                return Err(HttpApiError::BadRequest(format!(
                    "`{name}` is not a presence channel"
                )));
            }
            let users: Vec<Value> = driver
                .presence
                .members(&name)
                .await?
                .into_iter()
                .map(|member| json!({ "id": member.user_id }))
                .collect();
            Ok(json!({ "users": users }))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct Webhook {
    events: Vec<WebhookEvent>,
}

#[derive(Deserialize)]
struct WebhookEvent {
    name: String,
    #[serde(default)]
    channel: String,
}

/// `POST /api/realtime/webhooks/pusher`: the external service's webhooks (driver `pusher`).
/// `channel_occupied` / `channel_vacated` keep realtime subscriptions alive as local sockets do;
/// other events are accepted and ignored.
#[handler]
pub fn webhook(request: &Request, body: Bytes, driver: Data<&Arc<Driver>>) -> Response {
    let header = |name: &str| request.header(name).unwrap_or_default().to_owned();
    let app = driver.signing_app();
    if !app.verify_webhook(
        &header("X-Pusher-Key"),
        &body,
        &header("X-Pusher-Signature"),
    ) {
        return HttpApiError::Unauthorized("Invalid webhook signature").into_response();
    }
    respond((|| {
        for event in parse_json::<Webhook>(&body)?.events {
            match event.name.as_str() {
                "channel_occupied" => driver.set_externally_occupied(&event.channel, true),
                "channel_vacated" => driver.set_externally_occupied(&event.channel, false),
                _ => {}
            }
        }
        Ok(json!({}))
    })())
}

/// The Pusher HTTP API's routes, to nest under `/apps`.
pub fn routes() -> poem::Route {
    poem::Route::new()
        .at("/:app_id/events", poem::post(post_events))
        .at("/:app_id/batch_events", poem::post(post_batch_events))
        .at("/:app_id/channels", poem::get(get_channels))
        .at("/:app_id/channels/:channel_name", poem::get(get_channel))
        .at(
            "/:app_id/channels/:channel_name/users",
            poem::get(get_users),
        )
        .at(
            "/:app_id/users/:user_id/terminate_connections",
            poem::post(terminate_connections),
        )
}
