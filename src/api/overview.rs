//! `GET /api/console/overview` (admin): what the console's "Now" panel shows, read when asked
//! (the page polls it while open, so it costs nothing while none is): this node's connections,
//! each collection's subscriptions, and the occupied channels with their sockets.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::{ApiError, ErrorBody, Errors, operation_errors};
use super::security::AdminToken;
use super::{ApiTags, App};

/// Channels listed at most; `channel_count` says how many there are.
pub const MAX_CHANNELS: usize = 100;

#[derive(Object, Debug)]
pub struct CollectionSubscriptions {
    pub collection: String,
    /// Its subscriptions now (guests', users' and the admin's; live and plain).
    pub subscriptions: u64,
}

#[derive(Object, Debug)]
pub struct ChannelSockets {
    pub channel: String,
    /// Sockets subscribed to it (every node's in cluster mode).
    pub sockets: u64,
}

/// The server now.
#[derive(Object, Debug)]
#[oai(example)]
pub struct Overview {
    /// This node's open Pusher WebSocket connections.
    pub connections: u64,
    /// Each collection's subscriptions, by name.
    pub collections: Vec<CollectionSubscriptions>,
    /// Occupied channels, by name, with their sockets: the first 100.
    pub channels: Vec<ChannelSockets>,
    /// How many channels are occupied in all.
    pub channel_count: u64,
    /// Consoles watching this node's event tail.
    pub tail_watchers: u64,
}

impl Example for Overview {
    fn example() -> Self {
        Overview {
            connections: 1,
            collections: vec![CollectionSubscriptions {
                collection: "posts".into(),
                subscriptions: 1,
            }],
            channels: vec![ChannelSockets {
                channel: "velo.realtime.0b3f5a5e-3c1d-4f3e-9a57-8f4e2c1d9b6a".into(),
                sockets: 1,
            }],
            channel_count: 1,
            tail_watchers: 1,
        }
    }
}

#[derive(ApiResponse)]
pub enum OverviewResponse {
    /// The counts now.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<Overview>),
}

operation_errors! {
    ViewOverview {
        401 => "No admin token was sent, or the token is invalid.",
        403 => "The token is a user's, not the admin's.",
        503 => "The engine, or in cluster mode the other nodes' counts, did not answer; retry.",
    }
}

pub struct OverviewApi;

#[OpenApi(tag = "ApiTags::Console")]
impl OverviewApi {
    /// Connections, subscriptions per collection and occupied channels now
    #[oai(
        path = "/api/console/overview",
        method = "get",
        operation_id = "viewConsoleOverview"
    )]
    async fn overview(
        &self,
        app: Data<&App>,
        admin: AdminToken,
    ) -> Result<OverviewResponse, Errors<ViewOverview>> {
        app.require_admin(&admin)?;
        let collections = app.engine.subscription_counts().await?;
        let channels = app.driver.channels("").await.map_err(|why| {
            ApiError::Unavailable(Json(ErrorBody {
                message: format!("the other nodes' channel counts did not answer: {}", why.0),
                errors: None,
            }))
        })?;
        let channel_count = channels.len() as u64;
        Ok(OverviewResponse::Ok(Json(Overview {
            connections: app.driver.hub.connection_count() as u64,
            collections: collections
                .into_iter()
                .map(|(collection, count)| CollectionSubscriptions {
                    collection,
                    subscriptions: count as u64,
                })
                .collect(),
            channels: channels
                .into_iter()
                .take(MAX_CHANNELS)
                .map(|(channel, sockets)| ChannelSockets {
                    channel,
                    sockets: sockets as u64,
                })
                .collect(),
            channel_count,
            tail_watchers: app.driver.tail.watchers() as u64,
        })))
    }
}
