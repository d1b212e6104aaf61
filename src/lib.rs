//! Velo Realtime: a single-binary realtime engine for the Velo Realtime API.
//!
//! Clients subscribe to a collection with a filter and receive, over the Pusher WebSocket
//! protocol, every created, updated or deleted record that their filter and the collection's
//! list rule match (DESIGN.md §1). The components, in the order an event flows through them:
//!
//! * [`api`]: the HTTP API (poem-openapi), its OpenAPI document and Swagger UI.
//! * [`auth`]: who is calling — guest, JWT user, or the admin.
//! * [`engine`]: one actor per collection, owning its records, subscriptions and their index;
//!   the registry actor, and the directory requests find collections in.
//! * [`filter`]: the expression language of filters and API rules — parsed once, compiled to
//!   sandboxed rhai, and matched through a subscription index whose cost follows the
//!   subscribers an event reaches, not all of them.
//! * [`hooks`]: the operator's rhai hooks from `VELO_HOOKS_DIR`, run when a subscription is
//!   made, per matched delivery and around record writes, sandboxed and reloaded on change.
//! * [`pusher`]: the built-in driver — the Pusher-protocol WebSocket server, its fan-out hub,
//!   presence, cache and encrypted channels, channel authorization signatures, the signed
//!   Pusher HTTP API and webhooks.
//! * [`store`]: persistence of collections, the connection table and records, behind one
//!   interface (sled on one node).
//! * [`limits`]: what one client may use (subscriptions, subscribe rate, connections per
//!   address), and who a client is behind trusted proxies.
//! * [`metrics`]: the server's counters, as Prometheus text.
//! * [`http_server`]: HTTP/1.1 on each accepted connection, with the timeouts that keep a
//!   slow or silent client from holding a connection.
//! * [`cluster`]: cluster mode's settings and Redis connections, and its Pusher side: pub/sub
//!   between nodes, presence and occupancy in Redis, heartbeats and dead nodes (the store's
//!   half is in [`store`]).
//! * [`config`] and [`server`]: configuration, and the wiring that serves it all.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod filter;
pub mod hooks;
pub mod http_server;
pub mod limits;
pub mod metrics;
pub mod pusher;
pub mod server;
pub mod store;
