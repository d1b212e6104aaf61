//! Velo Realtime: a single-binary realtime engine for the Velo Realtime API.
//!
//! Clients subscribe to a collection with a filter and receive, over the Pusher WebSocket
//! protocol, every created, updated or deleted record that their filter and the collection's
//! list rule match (DESIGN.md §1). The components, in the order an event flows through them:
//!
//! * [`filter`]: the expression language of filters and API rules — parsed once, compiled to
//!   sandboxed rhai, and matched through a subscription index whose cost follows the
//!   subscribers an event reaches, not all of them.
//!
//! The HTTP API, the collection actors, persistence and the Pusher drivers land on top of these
//! in the next issues.

pub mod filter;
