//! The console's live event tail (DESIGN.md §15): `POST /api/console/tickets` (admin) gives a
//! one-time ticket, and `GET /api/console/tail?ticket=…` upgrades to a WebSocket that sends the
//! rows of [`crate::pusher::tail`] (a browser's WebSocket cannot send `Authorization`, hence the
//! ticket). Each socket gets at most [`ROWS_PER_SECOND`] rows; the rest are counted as dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use poem::web::websocket::{Message, WebSocket, WebSocketStream};
use poem::web::{Data, Query};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use tokio::sync::broadcast::error::RecvError;

use super::error::{ApiError, Errors, operation_errors};
use super::security::AdminToken;
use super::{ApiTags, App};
use crate::pusher::tail::{Pacer, TailRow, Watcher};

/// How long a ticket may wait to be used.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Rows a console socket is sent per second at most: a browser keeps up with this many.
pub const ROWS_PER_SECOND: usize = 200;

/// Tickets issued and not yet used, with when each was issued.
#[derive(Default)]
pub struct Tickets(Mutex<HashMap<String, Instant>>);

impl Tickets {
    fn issue(&self) -> String {
        let ticket = uuid::Uuid::new_v4().simple().to_string();
        let mut tickets = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        tickets.retain(|_, issued| now.duration_since(*issued) < TICKET_TTL);
        tickets.insert(ticket.clone(), now);
        ticket
    }

    /// Whether `ticket` was issued, unused, less than [`TICKET_TTL`] ago; it is used now.
    fn redeem(&self, ticket: &str) -> bool {
        let mut tickets = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tickets
            .remove(ticket)
            .is_some_and(|issued| issued.elapsed() < TICKET_TTL)
    }
}

/// A one-time ticket for the tail's WebSocket.
#[derive(Object, Debug)]
#[oai(example)]
pub struct Ticket {
    /// Good for one connection, within `expires_in_secs`.
    pub ticket: String,
    pub expires_in_secs: u64,
    /// The WebSocket's path with the ticket (`ws://` or `wss://` on this server).
    pub path: String,
}

impl Example for Ticket {
    fn example() -> Self {
        Ticket {
            ticket: "0f3c5e1d2b7a4c69a8e4d1b2c3f4a5b6".into(),
            expires_in_secs: TICKET_TTL.as_secs(),
            path: "/api/console/tail?ticket=0f3c5e1d2b7a4c69a8e4d1b2c3f4a5b6".into(),
        }
    }
}

#[derive(ApiResponse)]
pub enum TicketResponse {
    /// A new ticket.
    #[oai(status = 201, content_type = "application/json")]
    Created(Json<Ticket>),
}

operation_errors! {
    IssueTicket {
        401 => "No admin token was sent, or the token is invalid.",
        403 => "The token is a user's, not the admin's.",
    }
}

pub struct TailApi;

#[OpenApi(tag = "ApiTags::Console")]
impl TailApi {
    /// Get a ticket for the console's event tail
    ///
    /// The tail is a WebSocket at `GET /api/console/tail?ticket=…` (not an OpenAPI operation).
    /// It sends one JSON message per event this node sends, a record change or a Pusher trigger
    /// (`{"type":"event","event":{at_ms, source, event, channel, channels, sockets, data,
    /// cut},"dropped":n}`), at most 200 a second; `dropped` counts the rows left out, and a
    /// `{"type":"dropped","dropped":n}` message says when it grows. A ticket is good for one
    /// connection, within 30 seconds; a socket without a valid one is refused with 401.
    #[oai(
        path = "/api/console/tickets",
        method = "post",
        operation_id = "issueConsoleTicket"
    )]
    async fn issue(
        &self,
        app: Data<&App>,
        admin: AdminToken,
    ) -> Result<TicketResponse, Errors<IssueTicket>> {
        app.require_admin(&admin)?;
        let ticket = app.tickets.issue();
        Ok(TicketResponse::Created(Json(Ticket {
            path: format!("/api/console/tail?ticket={ticket}"),
            ticket,
            expires_in_secs: TICKET_TTL.as_secs(),
        })))
    }
}

#[derive(serde::Deserialize)]
pub struct TailQuery {
    ticket: Option<String>,
}

/// `GET /api/console/tail?ticket=…`: the tail's WebSocket.
#[poem::handler]
pub async fn connect(
    websocket: WebSocket,
    Query(query): Query<TailQuery>,
    app: Data<&App>,
) -> Response {
    let admitted = query
        .ticket
        .as_deref()
        .is_some_and(|ticket| app.tickets.redeem(ticket));
    if !admitted {
        return ApiError::unauthorized(format!(
            "Unauthenticated: the tail needs a ticket from `POST /api/console/tickets`, used once \
             within {} seconds.",
            TICKET_TTL.as_secs()
        ))
        .into_response();
    }
    let watcher = app.driver.tail.watch();
    websocket
        .on_upgrade(move |socket| feed(socket, watcher))
        .into_response()
}

/// Sends the watcher's rows, paced, until the console leaves.
async fn feed(socket: WebSocketStream, mut watcher: Watcher) {
    let (mut sink, mut stream) = socket.split();
    let mut pacer = Pacer::new(ROWS_PER_SECOND, Instant::now());
    let (mut dropped, mut reported) = (0u64, 0u64);
    let mut report = tokio::time::interval(Duration::from_secs(1));
    loop {
        let message = tokio::select! {
            row = watcher.rows.recv() => match row {
                Ok(row) if pacer.admit(Instant::now()) => event_message(&row, dropped),
                Ok(_) => {
                    dropped += 1;
                    continue;
                }
                Err(RecvError::Lagged(missed)) => {
                    dropped += missed;
                    continue;
                }
                Err(RecvError::Closed) => break,
            },
            _ = report.tick() => {
                if dropped == reported {
                    continue;
                }
                serde_json::json!({ "type": "dropped", "dropped": dropped }).to_string()
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
        };
        reported = dropped;
        if sink.send(Message::Text(message)).await.is_err() {
            break;
        }
    }
}

fn event_message(row: &TailRow, dropped: u64) -> String {
    serde_json::json!({ "type": "event", "event": row, "dropped": dropped }).to_string()
}
