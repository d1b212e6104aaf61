//! `GET /api/console/overview` (admin): what the console's "Now" panel shows, read when asked
//! (the page polls it while open, so it costs nothing while none is): this node's connections,
//! each collection's subscriptions, the occupied channels with their sockets and, on presence
//! channels, their members; in cluster mode, which node answered.

use std::collections::HashMap;

use futures_util::future::join_all;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::{ApiError, Errors, operation_errors};
use super::security::AdminToken;
use super::{ApiTags, App};
use crate::pusher::peers::Unavailable;
use crate::pusher::protocol::{ChannelKind, channel_kind};

/// Channels listed at most; `channel_count` says how many there are.
pub const MAX_CHANNELS: usize = 100;
/// Members named per presence channel at most; `count` says how many there are.
pub const MAX_MEMBERS: usize = 20;
/// Presence channels whose members are read, at most: the first listed (in cluster mode each
/// is a Redis read, all made at once).
pub const MAX_PRESENCE_CHANNELS: usize = 20;

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
    /// On a presence channel (the first 20 listed): its members (users; every node's in
    /// cluster mode).
    #[oai(skip_serializing_if_is_none)]
    pub members: Option<Members>,
}

/// The members of a presence channel.
#[derive(Object, Debug)]
pub struct Members {
    /// How many users are on the channel.
    pub count: u64,
    /// Their `user_id`s, sorted: the first 20.
    pub user_ids: Vec<String>,
}

/// The server now.
#[derive(Object, Debug)]
#[oai(example)]
pub struct Overview {
    /// In cluster mode, the name of the node that answered (`node_id`); absent on a single
    /// server.
    #[oai(skip_serializing_if_is_none)]
    pub node: Option<String>,
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
            node: None,
            connections: 1,
            collections: vec![CollectionSubscriptions {
                collection: "posts".into(),
                subscriptions: 1,
            }],
            channels: vec![
                ChannelSockets {
                    channel: "presence-room".into(),
                    sockets: 2,
                    members: Some(Members {
                        count: 1,
                        user_ids: vec!["u1".into()],
                    }),
                },
                ChannelSockets {
                    channel: "velo.realtime.0b3f5a5e-3c1d-4f3e-9a57-8f4e2c1d9b6a".into(),
                    sockets: 1,
                    members: None,
                },
            ],
            channel_count: 2,
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
        503 => "The engine, or in cluster mode the other nodes' counts or Redis, did not answer; retry.",
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
        let unavailable = |what: &str, why: Unavailable| {
            ApiError::unavailable(format!("{what} did not answer: {}", why.0))
        };
        let mut channels = app
            .driver
            .channels("")
            .await
            .map_err(|why| unavailable("the other nodes' channel counts", why))?;
        let channel_count = channels.len() as u64;
        channels.truncate(MAX_CHANNELS);
        let presence: Vec<&str> = channels
            .iter()
            .map(|(channel, _)| channel.as_str())
            .filter(|channel| channel_kind(channel) == Some(ChannelKind::Presence))
            .take(MAX_PRESENCE_CHANNELS)
            .collect();
        let read = join_all(
            presence
                .iter()
                .map(|channel| app.driver.presence.members(channel)),
        )
        .await;
        let mut members = HashMap::with_capacity(presence.len());
        for (channel, read) in presence.into_iter().zip(read) {
            let read = read.map_err(|why| unavailable("the presence members", why))?;
            let mut user_ids: Vec<String> = read.into_iter().map(|member| member.user_id).collect();
            user_ids.sort_unstable();
            let count = user_ids.len() as u64;
            user_ids.truncate(MAX_MEMBERS);
            members.insert(channel.to_owned(), Members { count, user_ids });
        }
        let listed = channels
            .into_iter()
            .map(|(channel, sockets)| ChannelSockets {
                members: members.remove(&channel),
                channel,
                sockets: sockets as u64,
            })
            .collect();
        Ok(OverviewResponse::Ok(Json(Overview {
            node: app.node.clone(),
            connections: app.driver.hub.connection_count() as u64,
            collections: collections
                .into_iter()
                .map(|(collection, count)| CollectionSubscriptions {
                    collection,
                    subscriptions: count as u64,
                })
                .collect(),
            channels: listed,
            channel_count,
            tail_watchers: app.driver.tail.watchers() as u64,
        })))
    }
}
