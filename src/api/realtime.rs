//! `POST /api/realtime/subscribe`, `POST /api/realtime/ping`,
//! `DELETE /api/realtime/subscriptions/{channel_name}` (DESIGN.md §3).

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::ApiError;
use super::payload::JsonBody;
use super::security::Credentials;
use super::{ApiTags, App};

/// A request to receive a collection's changes.
#[derive(Object, Debug)]
pub struct SubscribeRequest {
    /// The name or id of the collection.
    pub collection: String,
    /// The subscriber's Pusher socket id (`1234.5678`), used to exclude its own writes.
    pub socket_id: Option<String>,
    /// Only records matching this expression are sent, e.g. `status = 'active'`.
    pub filter: Option<String>,
}

/// Where to listen.
#[derive(Object, Debug)]
pub struct Subscription {
    /// The channel to listen on. When `is_public` is false, subscribe to it as a private
    /// channel (`private-` in front, as Laravel Echo's `.private()` does), authorized through
    /// `POST /api/realtime/auth` by the same user.
    pub channel_name: String,
    /// True when a guest could have subscribed: the channel is public.
    pub is_public: bool,
}

#[derive(Object, Debug)]
pub struct PingRequest {
    /// The channel name subscribe returned (with or without `private-`).
    pub channel_name: String,
}

#[derive(Object, Debug)]
pub struct Status {
    /// Always `ok`.
    pub status: String,
}

#[derive(ApiResponse)]
pub enum SubscribeResponse {
    /// Subscribed; the subscription is stored durably.
    #[oai(status = 200)]
    Ok(Json<Subscription>),
}

#[derive(ApiResponse)]
pub enum PingResponse {
    /// The subscription is kept alive for another threshold period.
    #[oai(status = 200)]
    Ok(Json<Status>),
}

#[derive(ApiResponse)]
pub enum UnsubscribeResponse {
    /// The subscription has ended.
    #[oai(status = 204)]
    Ended,
}

/// Pusher socket ids are two decimal numbers joined by a dot.
fn valid_socket_id(socket_id: &str) -> bool {
    socket_id.split_once('.').is_some_and(|(a, b)| {
        [a, b].iter().all(|part| {
            !part.is_empty() && part.len() <= 20 && part.bytes().all(|c| c.is_ascii_digit())
        })
    })
}

pub struct RealtimeApi;

#[OpenApi(tag = "ApiTags::Realtime")]
impl RealtimeApi {
    /// Subscribe to a collection's changes
    ///
    /// The collection's list rule decides who may subscribe; the filter decides which records
    /// are sent. Events `created`, `updated` and `deleted` arrive on the returned channel.
    #[oai(path = "/api/realtime/subscribe", method = "post")]
    async fn subscribe(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        body: JsonBody<SubscribeRequest>,
    ) -> Result<SubscribeResponse, ApiError> {
        let identity = app.identify(&credentials)?;
        let request = body.0;
        if let Some(socket_id) = &request.socket_id
            && !valid_socket_id(socket_id)
        {
            return Err(ApiError::invalid(
                "socket_id",
                format!("`{socket_id}` is not a Pusher socket id such as `1234.5678`"),
            ));
        }
        let subscribed = app
            .engine
            .subscribe(
                identity,
                &request.collection,
                request.filter.unwrap_or_default(),
                request.socket_id,
            )
            .await?;
        app.engine.sync().await?;
        Ok(SubscribeResponse::Ok(Json(Subscription {
            channel_name: app.engine.channels().channel(subscribed.id),
            is_public: subscribed.is_public,
        })))
    }

    /// Keep a subscription alive
    ///
    /// A subscription without a connected socket ends when it has not been pinged for the
    /// connection threshold. Pinging with a fresh token of the same user also extends a
    /// subscription that would end when its token expires.
    #[oai(path = "/api/realtime/ping", method = "post")]
    async fn ping(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        body: JsonBody<PingRequest>,
    ) -> Result<PingResponse, ApiError> {
        let identity = app.identify(&credentials)?;
        app.engine.ping(identity, &body.0.channel_name).await?;
        Ok(PingResponse::Ok(Json(Status {
            status: "ok".into(),
        })))
    }

    /// End a subscription
    ///
    /// Its owner or the admin may end it; a guest's subscription may be ended by whoever holds
    /// its channel name.
    #[oai(path = "/api/realtime/subscriptions/:channel_name", method = "delete")]
    async fn unsubscribe(
        &self,
        app: Data<&App>,
        credentials: Credentials,
        /// The channel name subscribe returned (with or without `private-`).
        channel_name: Path<String>,
    ) -> Result<UnsubscribeResponse, ApiError> {
        let identity = app.identify(&credentials)?;
        app.engine.unsubscribe(identity, &channel_name.0).await?;
        app.engine.sync().await?;
        Ok(UnsubscribeResponse::Ended)
    }
}
