//! `POST /api/realtime/subscribe`, `POST /api/realtime/ping`,
//! `DELETE /api/realtime/subscriptions/{channel_name}` (DESIGN.md §3), a live subscription's
//! `GET /api/realtime/subscriptions/{channel_name}/events` (§13), channel and user
//! authorization, and the admin's publish.

use std::time::Instant;

use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiRequest, ApiResponse, Object, OpenApi};

use super::error::{ApiError, Errors, operation_errors};
use super::payload::{BodyType, FormBody, JsonBody, UnknownKeys};
use super::records::Record;
use super::security::{AdminToken, BearerToken, Credentials};
use super::{ApiTags, App};
use crate::auth::Identity;
use crate::engine::events::Action;
use crate::engine::live::RecoveryError;
use crate::engine::{LiveRequest, SnapshotQuery};
use crate::limits::ClientKey;
use crate::pusher::encryption::ChannelKey;
use crate::pusher::protocol::{ChannelKind, SocketId, USER_CHANNEL_PREFIX, channel_kind};

/// A request to receive a collection's changes.
///
/// Unknown keys are refused (422): a misspelt `filter` would otherwise quietly subscribe to
/// every record the list rule lets through, and a client asking for an option this server does
/// not know learns so instead of silently going without. Options added later join the schema
/// and so are accepted.
#[derive(Object, Debug)]
#[oai(example)]
pub struct SubscribeRequest {
    /// The name or id of the collection.
    pub collection: String,
    /// The subscriber's Pusher socket id (`1234.5678`), kept with the subscription (Velo's
    /// clients send it). It excludes nothing: a writer leaves its own socket out of a write's
    /// event with the `X-Socket-ID` header on the write. `null` is the same as leaving it out.
    #[oai(nullable, skip_serializing_if_is_none)]
    pub socket_id: Option<String>,
    /// Only records matching this expression are sent, e.g. `status = 'active'`. Empty,
    /// `null` or absent: every record the list rule lets through.
    #[oai(nullable)]
    pub filter: Option<String>,
    /// A live subscription with a snapshot: the reply carries `records`, the first page of
    /// what the subscription matches now (list rule and filter, ordered by `sort`, `per_page`
    /// of them), taken at the same point of the collection's changes as the subscription;
    /// every later change is one of its events, numbered by `seq` from 1. Events sent before
    /// a socket joins the channel are held for it (up to 1,000, for 60 s).
    #[oai(skip_serializing_if_is_none)]
    pub snapshot: Option<bool>,
    /// A live subscription that is sent `left` (`{"action":"left","record":{"id",
    /// "collection_id"},"seq"}`) when an update takes a record out of its view (its filter or
    /// the list rule no longer matches). A record an update brings into view arrives as
    /// `updated`.
    #[oai(skip_serializing_if_is_none)]
    pub leave_events: Option<bool>,
    /// The snapshot's order, as the list API's `sort` (`-created,title`); needs `snapshot`.
    #[oai(skip_serializing_if_is_none)]
    pub sort: Option<String>,
    /// The snapshot's size, 1 to 500 [default: 15]; needs `snapshot`.
    #[oai(skip_serializing_if_is_none)]
    pub per_page: Option<u64>,
}

/// Where to listen.
#[derive(Object, Debug)]
#[oai(example)]
pub struct Subscription {
    /// The channel to listen on. When `is_public` is false, subscribe to it as a private
    /// channel (`private-` in front, as Laravel Echo's `.private()` does; in an encrypted
    /// collection `private-encrypted-`, Echo's `.encryptedPrivate()`), authorized through
    /// `POST /api/realtime/auth` by the same user. `pusher_channel` says which.
    pub channel_name: String,
    /// True when a guest could have subscribed: the channel is public. Fixed for the
    /// subscription's life, whatever later happens to the list rule.
    pub is_public: bool,
    /// The exact Pusher channel to subscribe to: `channel_name` when `is_public`; else it with
    /// `private-` in front, or `private-encrypted-` when the collection is encrypted (its
    /// events' data is then sealed with the `shared_secret` the channel authorization answers).
    pub pusher_channel: String,
    /// A live subscription (`snapshot` or `leave_events`): its position, 0. Each of its
    /// events' data carries the next `seq`; after a reconnect, fetch what was missed from
    /// `GET /api/realtime/subscriptions/{channel_name}/events?after={the last seq received}`.
    #[oai(skip_serializing_if_is_none)]
    pub seq: Option<u64>,
    /// With `snapshot`: the first page of the records the subscription matches now.
    #[oai(skip_serializing_if_is_none)]
    pub records: Option<Vec<Record>>,
}

/// A live subscription's missed events.
#[derive(Object, Debug)]
#[oai(example)]
pub struct RecoveredEvents {
    /// The subscription's events after `after`, in order: what its channel sent (or would
    /// have sent), with `data` as the object pusher-js hands to its handlers.
    pub events: Vec<RecoveredEvent>,
}

/// One recovered event.
#[derive(Object, Debug)]
pub struct RecoveredEvent {
    /// The event's name on the wire (`created`, `updated`, `deleted`, `left`, `ended`, or
    /// `server.message` with `VELO_EVENT_NAMES=server.message`).
    pub event: String,
    /// `{"action", "record", "seq"}` (`ended`: `{"action", "reason", "seq"}`).
    pub data: serde_json::Value,
}

#[derive(ApiResponse)]
pub enum RecoverResponse {
    /// The events after `after` (none when `after` is the last `seq`).
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<RecoveredEvents>),
}

/// A subscription to keep alive. Unknown keys are ignored: the one key is required, so a
/// misspelling is already a 422, and refusing extras would only break clients that send more.
#[derive(Object, Debug)]
#[oai(example)]
pub struct PingRequest {
    /// The channel name subscribe returned; also accepted: its bare UUID (what Velo's own
    /// clients send), and the name with `private-` or `private-encrypted-` in front.
    pub channel_name: String,
}

#[derive(Object, Debug)]
#[oai(example)]
pub struct Status {
    /// Always `ok`.
    pub status: String,
}

/// What Pusher clients send to authorize a private channel (form-encoded by pusher-js and
/// Laravel Echo; JSON accepted too). Unknown keys are ignored: clients add their own
/// parameters (pusher-js `channelAuthorization.params`, Echo's `auth.params`).
#[derive(Object, Debug)]
#[oai(example)]
pub struct ChannelAuthBody {
    /// The Pusher connection's socket id, `1234.5678`.
    pub socket_id: String,
    /// The Pusher channel: `private-` followed by the channel name subscribe returned.
    pub channel_name: String,
}

impl BodyType for SubscribeRequest {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Refused;
}

impl BodyType for PingRequest {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Ignored;
}

impl BodyType for ChannelAuthBody {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Ignored;
}

impl BodyType for PublishRequest {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Ignored;
}

/// What pusher-js sends to sign a user in (`userAuthentication`).
#[derive(Object, Debug)]
#[oai(example)]
pub struct UserAuthBody {
    /// The Pusher connection's socket id, `1234.5678`.
    pub socket_id: String,
}

impl BodyType for UserAuthBody {
    const UNKNOWN_KEYS: UnknownKeys = UnknownKeys::Ignored;
}

#[derive(ApiRequest)]
pub enum UserAuthRequest {
    Form(FormBody<UserAuthBody>),
    Json(JsonBody<UserAuthBody>),
}

/// A Pusher user sign-in, for `pusher:signin`.
#[derive(Object, Debug)]
#[oai(example)]
pub struct UserAuthentication {
    /// `app_key:hex(HMAC-SHA256(secret, socket_id::user::user_data))`.
    pub auth: String,
    /// JSON text: `{"id": <the user's id>, ...the claims named in VELO_USER_DATA_CLAIMS}`.
    pub user_data: String,
}

#[derive(ApiResponse)]
pub enum UserAuthResponse {
    /// Signed: pusher-js sends it as `pusher:signin`.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<UserAuthentication>),
}

/// Signs the caller in on a Pusher connection: a JWT user only (a guest has no identity, the
/// admin no user id).
fn authenticate_user(
    app: &App,
    credentials: &Credentials,
    body: UserAuthRequest,
) -> Result<UserAuthResponse, ApiError> {
    let identity = app.identify(credentials)?;
    let socket_id = match body {
        UserAuthRequest::Form(form) => form.0.socket_id,
        UserAuthRequest::Json(json) => json.0.socket_id,
    };
    let Some(socket_id) = SocketId::parse(&socket_id) else {
        return Err(ApiError::invalid(
            "socket_id",
            format!("`{socket_id}` is not a Pusher socket id such as `1234.5678`"),
        ));
    };
    let user = match identity {
        Identity::User(user) => user,
        Identity::Guest => return Err(ApiError::unauthenticated()),
        Identity::Superuser => {
            return Err(ApiError::forbidden(
                "the admin token has no user id: sign in with a user's token",
            ));
        }
    };
    if channel_kind(&format!("{USER_CHANNEL_PREFIX}{}", user.id)).is_none() {
        return Err(ApiError::forbidden(
            "this user's id holds characters a channel name cannot: it cannot sign in",
        ));
    }
    let mut user_data = serde_json::Map::new();
    user_data.insert("id".into(), user.id.clone().into());
    for claim in &app.user_data_claims {
        if let Some(value) = user.claims.get(claim).filter(|_| claim != "id") {
            user_data.insert(claim.clone(), value.clone());
        }
    }
    let user_data = serde_json::Value::Object(user_data).to_string();
    Ok(UserAuthResponse::Ok(Json(UserAuthentication {
        auth: app
            .driver
            .signing_app()
            .authorize_user(socket_id.as_str(), &user_data),
        user_data,
    })))
}

#[derive(ApiRequest)]
pub enum ChannelAuthRequest {
    Form(FormBody<ChannelAuthBody>),
    Json(JsonBody<ChannelAuthBody>),
}

/// A Pusher channel authorization.
#[derive(Object, Debug)]
#[oai(example)]
pub struct ChannelAuthorization {
    /// `app_key:hex(HMAC-SHA256(secret, socket_id:channel_name))`, with `:channel_data` for a
    /// presence channel.
    pub auth: String,
    /// For a presence channel: the member, `{"user_id", "user_info"?}`, as JSON text.
    #[oai(skip_serializing_if_is_none)]
    pub channel_data: Option<String>,
    /// For a `private-encrypted-` channel: its key, base64.
    #[oai(skip_serializing_if_is_none)]
    pub shared_secret: Option<String>,
}

#[derive(ApiResponse)]
pub enum AuthorizeResponse {
    /// Signed: send it as `auth` in `pusher:subscribe`.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<ChannelAuthorization>),
}

/// A change made outside this server, to deliver as if it had been written here. Unknown keys
/// are ignored: every key is required, so a misspelling is already a 422.
#[derive(Object, Debug)]
#[oai(example)]
pub struct PublishRequest {
    /// The name or id of the collection.
    pub collection: String,
    /// `created`, `updated` or `deleted`.
    pub action: String,
    /// The record, flat: `{"id", ...fields}`. `deleted` is matched against it as it was.
    pub record: Record,
}

#[derive(Object, Debug)]
#[oai(example)]
pub struct Published {
    /// How many subscriptions the change matched.
    pub matched: u64,
}

#[derive(ApiResponse)]
pub enum PublishResponse {
    /// Matched and queued for delivery.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<Published>),
}

#[derive(ApiResponse)]
pub enum SubscribeResponse {
    /// Subscribed; the subscription is stored durably.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<Subscription>),
}

#[derive(ApiResponse)]
pub enum PingResponse {
    /// The subscription is kept alive for another threshold period.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<Status>),
}

#[derive(ApiResponse)]
pub enum UnsubscribeResponse {
    /// The subscription has ended.
    #[oai(status = 204)]
    Ended,
}

async fn authorize(
    app: &App,
    credentials: &Credentials,
    body: ChannelAuthRequest,
) -> Result<AuthorizeResponse, ApiError> {
    let identity = app.identify(credentials)?;
    let body = match body {
        ChannelAuthRequest::Form(form) => form.0,
        ChannelAuthRequest::Json(json) => json.0,
    };
    let Some(socket_id) = SocketId::parse(&body.socket_id) else {
        return Err(ApiError::invalid(
            "socket_id",
            format!(
                "`{}` is not a Pusher socket id such as `1234.5678`",
                body.socket_id
            ),
        ));
    };
    if channel_kind(&body.channel_name).is_none() {
        return Err(ApiError::invalid(
            "channel_name",
            format!("`{}` is not a valid channel name", body.channel_name),
        ));
    }
    let channel = body.channel_name.as_str();
    let shared_secret = match (channel_kind(channel), app.encryption_master_key) {
        (Some(ChannelKind::Encrypted), Some(key)) => {
            Some(ChannelKey::derive(channel, &key).shared_secret())
        }
        (Some(ChannelKind::Encrypted), None) => {
            return Err(ApiError::invalid(
                "channel_name",
                "encrypted channels need the server's VELO_ENCRYPTION_MASTER_KEY, which is not set",
            ));
        }
        _ => None,
    };
    match channel_kind(channel) {
        Some(ChannelKind::Public) => {
            return Err(ApiError::invalid(
                "channel_name",
                "a public channel needs no authorization: subscribe without `auth`",
            ));
        }
        Some(ChannelKind::User) => {
            return Err(ApiError::forbidden(
                "a user's own channel is joined by signing in (pusher:signin), not authorized",
            ));
        }
        Some(ChannelKind::Private | ChannelKind::Encrypted | ChannelKind::Presence) | None => {}
    }
    let channel_data = app
        .engine
        .authorize_channel(&identity, channel)
        .await?
        .channel_data;
    let auth =
        app.driver
            .signing_app()
            .authorize(socket_id.as_str(), channel, channel_data.as_deref());
    Ok(AuthorizeResponse::Ok(Json(ChannelAuthorization {
        auth,
        channel_data,
        shared_secret,
    })))
}

impl Example for SubscribeRequest {
    fn example() -> Self {
        SubscribeRequest {
            collection: "posts".into(),
            socket_id: None,
            filter: Some("status = 'active'".into()),
            snapshot: None,
            leave_events: None,
            sort: None,
            per_page: None,
        }
    }
}

impl Example for Subscription {
    fn example() -> Self {
        Subscription {
            channel_name: EXAMPLE_CHANNEL.into(),
            is_public: true,
            pusher_channel: EXAMPLE_CHANNEL.into(),
            seq: None,
            records: None,
        }
    }
}

impl Example for RecoveredEvents {
    fn example() -> Self {
        RecoveredEvents {
            events: vec![RecoveredEvent {
                event: "updated".into(),
                data: serde_json::json!({
                    "action": "updated",
                    "record": Record::example().0,
                    "seq": 4,
                }),
            }],
        }
    }
}

impl SubscribeRequest {
    /// What makes the subscription live, if anything; `sort` and `per_page` only shape a
    /// snapshot.
    fn live(&self) -> Result<Option<LiveRequest>, ApiError> {
        let snapshot = self.snapshot.unwrap_or(false);
        for (field, given) in [
            ("sort", self.sort.is_some()),
            ("per_page", self.per_page.is_some()),
        ] {
            if given && !snapshot {
                return Err(ApiError::invalid(
                    field,
                    format!("`{field}` shapes the snapshot: it needs `\"snapshot\": true`"),
                ));
            }
        }
        let leave_events = self.leave_events.unwrap_or(false);
        Ok((snapshot || leave_events).then(|| LiveRequest {
            snapshot: snapshot.then(|| SnapshotQuery {
                sort: self.sort.clone().unwrap_or_default(),
                per_page: self.per_page,
            }),
            leave_events,
        }))
    }
}

impl Example for PingRequest {
    fn example() -> Self {
        PingRequest {
            channel_name: EXAMPLE_CHANNEL.into(),
        }
    }
}

impl Example for Status {
    fn example() -> Self {
        Status {
            status: "ok".into(),
        }
    }
}

impl Example for ChannelAuthBody {
    fn example() -> Self {
        ChannelAuthBody {
            socket_id: "1234.5678".into(),
            channel_name: format!("private-{EXAMPLE_CHANNEL}"),
        }
    }
}

impl Example for UserAuthBody {
    fn example() -> Self {
        UserAuthBody {
            socket_id: "1234.5678".into(),
        }
    }
}

impl Example for UserAuthentication {
    fn example() -> Self {
        UserAuthentication {
            auth: "app-key:4f0e3b1a9c6d2e8f7a5b3c1d9e7f5a3b1c9d7e5f3a1b9c7d5e3f1a9b7c5d3e1f".into(),
            user_data: r#"{"id":"alice"}"#.into(),
        }
    }
}

impl Example for ChannelAuthorization {
    fn example() -> Self {
        ChannelAuthorization {
            auth: "app-key:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4".into(),
            channel_data: None,
            shared_secret: None,
        }
    }
}

impl Example for PublishRequest {
    fn example() -> Self {
        PublishRequest {
            collection: "posts".into(),
            action: "created".into(),
            record: Record::example(),
        }
    }
}

impl Example for Published {
    fn example() -> Self {
        Published { matched: 1 }
    }
}

/// A channel name as subscribe returns it, for the examples.
const EXAMPLE_CHANNEL: &str = "velo.realtime.0192f8a4-6b1e-7c3d-9a2f-5e8b7c6d4a31";

operation_errors! {
    Subscribe {
        400 => "The body is not JSON, or not `application/json`.",
        401 => "The list rule admits no guest and no credentials were sent, or the token is invalid or expired.",
        403 => "The list rule is `SUPERUSER_ONLY` and the caller is not the admin, or the `realtime_connecting` hook refused the subscription (or failed); `message` says why.",
        413 => "The body is over its size limit.",
        415 => "The body's charset is not UTF-8.",
        422 => "No such collection, an invalid filter (with its position) or socket id, or an unknown key; `errors` says which.",
        429 => "The caller is over its live subscriptions or its subscribe requests per second; `Retry-After` says when to try again.",
        500 => "The server could not store the subscription; retry.",
        503 => "The engine (or the cluster's Redis) is not answering; retry.",
    }
    Ping {
        400 => "The body is not JSON, or not `application/json`.",
        401 => "The subscription is a user's and no credentials were sent, or the token is invalid or expired.",
        403 => "The subscription belongs to another user.",
        404 => "No live subscription has this channel name.",
        413 => "The body is over its size limit.",
        415 => "The body's charset is not UTF-8.",
        422 => "`channel_name` is missing or not a string.",
        500 => "The server could not store the ping; retry.",
        503 => "The engine (or the cluster's Redis) is not answering; retry.",
    }
    Authorize {
        400 => "The body is not a form or JSON.",
        401 => "The channel needs a signed-in user and no credentials were sent, or the token is invalid or expired.",
        403 => "The caller may not join this channel (another user's subscription, a channel rule, or a user's own channel).",
        404 => "No live subscription or channel rule has this channel.",
        413 => "The body is over its size limit.",
        415 => "The JSON body's charset is not UTF-8.",
        422 => "An invalid socket id or channel name, or a public channel, or an encrypted one without the server's master key; `errors` says which.",
        503 => "The engine is not answering; retry.",
    }
    UserAuth {
        400 => "The body is not a form or JSON.",
        401 => "No token was sent, or the token is invalid or expired.",
        403 => "The admin token has no user id, or the user's id cannot be a channel name.",
        413 => "The body is over its size limit.",
        415 => "The JSON body's charset is not UTF-8.",
        422 => "`socket_id` is missing or not a socket id.",
    }
    Publish {
        400 => "The body is not JSON, or not `application/json`, or `X-Socket-ID` is malformed.",
        401 => "No admin token was sent, or the token is invalid.",
        403 => "The token is a user's, not the admin's.",
        404 => "No collection has this name or id.",
        413 => "The body is over its size limit.",
        415 => "The body's charset is not UTF-8.",
        422 => "A missing field, an unknown `action`, a `record` that is not an object, or an invalid `X-Socket-ID`; `errors` says which.",
        503 => "The engine is not answering; retry.",
    }
    Recover {
        400 => "`after` is missing or not a number.",
        401 => "The subscription is a user's and no credentials were sent, or the token is invalid or expired.",
        403 => "The subscription belongs to another user.",
        404 => "No live subscription has this channel name: it ended (its client subscribes again, with a snapshot).",
        410 => "Some events after `after` are no longer kept (VELO_HISTORY_SECS and its limits), or were numbered while this node was not running: subscribe again with a snapshot.",
        422 => "`after` is beyond the subscription's last `seq`, or the subscription is not live.",
        503 => "The engine is not answering; retry.",
    }
    Unsubscribe {
        401 => "The subscription is a user's and no credentials were sent, or the token is invalid or expired.",
        403 => "The subscription belongs to another user.",
        404 => "No live subscription has this channel name.",
        500 => "The server could not store the ending; retry.",
        503 => "The engine (or the cluster's Redis) is not answering; retry.",
    }
}

pub struct RealtimeApi;

#[OpenApi(tag = "ApiTags::Realtime")]
impl RealtimeApi {
    /// Subscribe to a collection's changes
    ///
    /// The collection's list rule decides who may subscribe; the filter decides which records
    /// are sent. Events `created`, `updated` and `deleted` arrive on the returned channel.
    #[oai(
        path = "/api/realtime/subscribe",
        method = "post",
        operation_id = "subscribe"
    )]
    async fn subscribe(
        &self,
        app: Data<&App>,
        http: &poem::Request,
        credentials: Credentials,
        body: JsonBody<SubscribeRequest>,
    ) -> Result<SubscribeResponse, Errors<Subscribe>> {
        let identity = app.identify(&credentials)?;
        let client = ClientKey::of(&identity, app.trusted_proxies.client_address(http));
        if let Some(client) = &client
            && let Err(retry) = app.subscribe_rate.check(client, Instant::now())
        {
            app.driver.metrics.limited_subscribe_rate.inc();
            return Err(ApiError::too_many_requests(
                format!(
                    "{client} is over the limit of subscribe requests per second; retry after {} s",
                    retry.seconds()
                ),
                retry.seconds(),
            )
            .into());
        }
        let request = body.0;
        if let Some(socket_id) = &request.socket_id
            && SocketId::parse(socket_id).is_none()
        {
            return Err(ApiError::invalid(
                "socket_id",
                format!("`{socket_id}` is not a Pusher socket id such as `1234.5678`"),
            )
            .into());
        }
        let live = request.live()?;
        let subscribed = app
            .engine
            .subscribe(
                identity,
                client,
                &request.collection,
                crate::engine::SubscribeRequest {
                    filter_text: request.filter.unwrap_or_default(),
                    socket_id: request.socket_id,
                    live,
                },
            )
            .await?;
        let channels = app.engine.channels();
        Ok(SubscribeResponse::Ok(Json(Subscription {
            channel_name: channels.channel(subscribed.id),
            is_public: subscribed.privacy.is_public(),
            pusher_channel: channels.pusher_channel(subscribed.id, subscribed.privacy),
            seq: subscribed.live.then_some(0),
            records: subscribed
                .snapshot
                .map(|records| records.into_iter().map(Record).collect()),
        })))
    }

    /// Keep a subscription alive
    ///
    /// A subscription without a connected socket ends when it has not been pinged for the
    /// connection threshold. Pinging with a fresh token of the same user also extends a
    /// subscription that would end when its token expires.
    #[oai(path = "/api/realtime/ping", method = "post", operation_id = "ping")]
    async fn ping(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        body: JsonBody<PingRequest>,
    ) -> Result<PingResponse, Errors<Ping>> {
        let identity = app.identify(&credentials)?;
        app.engine.ping(identity, &body.0.channel_name).await?;
        Ok(PingResponse::Ok(Json(Status {
            status: "ok".into(),
        })))
    }

    /// Authorize a private channel (Pusher channel authorization)
    ///
    /// Signs `socket_id:channel_name` for the user who made the subscription behind the
    /// channel (or the admin). Point pusher-js's `channelAuthorization.endpoint` or Laravel
    /// Echo's `authEndpoint` here, with the bearer token in the headers.
    #[oai(
        path = "/api/realtime/auth",
        method = "post",
        operation_id = "authorizeChannel"
    )]
    async fn authorize(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        body: ChannelAuthRequest,
    ) -> Result<AuthorizeResponse, Errors<Authorize>> {
        Ok(authorize(&app, &credentials, body).await?)
    }

    /// Authorize a private channel (Laravel Echo's default path)
    ///
    /// The same as `POST /api/realtime/auth`.
    #[oai(
        path = "/broadcasting/auth",
        method = "post",
        operation_id = "authorizeChannelLaravel"
    )]
    async fn broadcasting_auth(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        body: ChannelAuthRequest,
    ) -> Result<AuthorizeResponse, Errors<Authorize>> {
        Ok(authorize(&app, &credentials, body).await?)
    }

    /// Authorize a private channel (Velo's path)
    ///
    /// The same as `POST /api/realtime/auth`, at the path Velo's own clients use.
    #[oai(
        path = "/api/broadcasting/auth",
        method = "post",
        operation_id = "authorizeChannelVelo"
    )]
    async fn api_broadcasting_auth(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        body: ChannelAuthRequest,
    ) -> Result<AuthorizeResponse, Errors<Authorize>> {
        Ok(authorize(&app, &credentials, body).await?)
    }

    /// Sign a user in on a Pusher connection (pusher-js user authentication)
    ///
    /// For `pusher:signin`: answers `{auth, user_data}` for the JWT user, whose sockets then
    /// receive the server libraries' `sendToUser` events. Point pusher-js's
    /// `userAuthentication.endpoint` here, with the bearer token in the headers.
    #[oai(
        path = "/api/realtime/user-auth",
        method = "post",
        operation_id = "authenticateUser"
    )]
    async fn user_auth(
        &self,
        app: Data<&App>,
        token: BearerToken,
        body: UserAuthRequest,
    ) -> Result<UserAuthResponse, Errors<UserAuth>> {
        Ok(authenticate_user(&app, &Credentials::Bearer(token), body)?)
    }

    /// Sign a user in (Laravel Echo's path)
    ///
    /// The same as `POST /api/realtime/user-auth`.
    #[oai(
        path = "/broadcasting/user-auth",
        method = "post",
        operation_id = "authenticateUserLaravel"
    )]
    async fn broadcasting_user_auth(
        &self,
        app: Data<&App>,
        token: BearerToken,
        body: UserAuthRequest,
    ) -> Result<UserAuthResponse, Errors<UserAuth>> {
        Ok(authenticate_user(&app, &Credentials::Bearer(token), body)?)
    }

    /// Sign a user in (Velo's path)
    ///
    /// The same as `POST /api/realtime/user-auth`.
    #[oai(
        path = "/api/broadcasting/user-auth",
        method = "post",
        operation_id = "authenticateUserVelo"
    )]
    async fn api_broadcasting_user_auth(
        &self,
        app: Data<&App>,
        token: BearerToken,
        body: UserAuthRequest,
    ) -> Result<UserAuthResponse, Errors<UserAuth>> {
        Ok(authenticate_user(&app, &Credentials::Bearer(token), body)?)
    }

    /// Publish a change made elsewhere (admin)
    ///
    /// For apps whose data lives in their own database: the change is matched against the
    /// collection's subscriptions and delivered, and nothing is stored.
    #[oai(
        path = "/api/realtime/publish",
        method = "post",
        operation_id = "publish"
    )]
    async fn publish(
        &self,
        app: Data<&App>,
        admin: AdminToken,
        /// The writer's Pusher socket id: it is not sent this change.
        #[oai(name = "X-Socket-ID")]
        socket_id: Header<Option<String>>,
        body: JsonBody<PublishRequest>,
    ) -> Result<PublishResponse, Errors<Publish>> {
        app.require_admin(&admin)?;
        let request = body.0;
        let Some(action) = Action::parse(&request.action) else {
            return Err(ApiError::invalid(
                "action",
                "`action` is `created`, `updated` or `deleted`",
            )
            .into());
        };
        let record = request.record.0;
        let except = super::records::except(socket_id.0)?;
        let matched = app
            .engine
            .publish(&request.collection, action, record, except)
            .await?;
        Ok(PublishResponse::Ok(Json(Published {
            matched: matched as u64,
        })))
    }

    /// Recover a live subscription's missed events
    ///
    /// After a reconnect, the events of a live subscription (made with `snapshot` or
    /// `leave_events`) after the last `seq` received, in order, from the collection's
    /// history. 410 when some are no longer kept: subscribe again with a snapshot. Who may
    /// end the subscription may recover its events.
    #[oai(
        path = "/api/realtime/subscriptions/:channel_name/events",
        method = "get",
        operation_id = "recoverEvents"
    )]
    async fn recover(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The channel name subscribe returned (or its UUID, or `pusher_channel`).
        channel_name: Path<String>,
        /// The last `seq` received (0: everything since the subscription was made).
        after: Query<u64>,
    ) -> Result<RecoverResponse, Errors<Recover>> {
        let identity = app.identify(&credentials)?;
        let recovered = app
            .engine
            .recover(identity, &channel_name.0, after.0)
            .await?;
        match recovered {
            Ok(events) => Ok(RecoverResponse::Ok(Json(RecoveredEvents {
                events: events
                    .into_iter()
                    .map(|event| RecoveredEvent {
                        event: event.name.to_owned(),
                        data: serde_json::from_str(&event.data).expect("an event's data is JSON"),
                    })
                    .collect(),
            }))),
            Err(RecoveryError::Ahead { seq }) => Err(ApiError::invalid(
                "after",
                format!("`after` is beyond the subscription's last event, seq {seq}"),
            )
            .into()),
            Err(RecoveryError::Gone) => Err(ApiError::gone(
                "some of these events are no longer kept: subscribe again with `snapshot`",
            )
            .into()),
        }
    }

    /// End a subscription
    ///
    /// Its owner or the admin may end it; a guest's subscription may be ended by whoever holds
    /// its channel name.
    #[oai(
        path = "/api/realtime/subscriptions/:channel_name",
        method = "delete",
        operation_id = "unsubscribe"
    )]
    async fn unsubscribe(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The channel name subscribe returned; also accepted: its bare UUID (what Velo's own
        /// clients send), and the name with `private-` or `private-encrypted-` in front.
        channel_name: Path<String>,
    ) -> Result<UnsubscribeResponse, Errors<Unsubscribe>> {
        let identity = app.identify(&credentials)?;
        app.engine.unsubscribe(identity, &channel_name.0).await?;
        Ok(UnsubscribeResponse::Ended)
    }
}
