//! The request body deadline: a body must have arrived within `VELO_BODY_READ_TIMEOUT_SECS` of
//! its request reaching the routes, or the request is answered `408` and its connection closed.
//! A client that trickles a body would otherwise hold its connection (a file) for as long as
//! it likes; hyper's header-read timeout stops at the head.
//!
//! Only reading is bounded, not handling: a handler that has its whole body runs to its end
//! (the engine bounds its own calls), so a `408` always means the request took no effect, and
//! a client (browsers do) may safely send it again.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use poem::http::{HeaderValue, StatusCode, header};
use poem::{Body, Endpoint, IntoResponse, Request, Response};
use poem_openapi::payload::Json;
use tokio::time::Instant;

use super::error::ErrorBody;
use crate::metrics::Metrics;

/// Passes `request` to `next` with its body bounded by `timeout` (`None`: unbounded); answers
/// `408` if reading the body ran out of time, whatever the handler made of the failed read,
/// and counts it.
pub async fn enforce<E: Endpoint>(
    next: E,
    mut request: Request,
    timeout: Option<Duration>,
    metrics: Arc<Metrics>,
) -> poem::Result<Response> {
    let body = request.take_body();
    let Some(timeout) = timeout.filter(|_| !body.is_empty()) else {
        request.set_body(body);
        return Ok(next.call(request).await?.into_response());
    };
    let expired = Arc::new(AtomicBool::new(false));
    request.set_body(Body::from_bytes_stream(bounded(
        body,
        Instant::now() + timeout,
        expired.clone(),
    )));
    let response = next.call(request).await;
    if expired.load(Ordering::Relaxed) {
        metrics.body_read_timeouts.inc();
        return Ok(timed_out(timeout));
    }
    Ok(response?.into_response())
}

/// `body`'s chunks until `deadline`; then one `TimedOut` error, with `expired` set.
fn bounded(
    body: Body,
    deadline: Instant,
    expired: Arc<AtomicBool>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let chunks = Box::pin(body.into_bytes_stream());
    futures_util::stream::unfold(Some(chunks), move |chunks| {
        let expired = expired.clone();
        async move {
            let mut chunks = chunks?;
            match tokio::time::timeout_at(deadline, chunks.next()).await {
                Ok(chunk) => chunk.map(|chunk| (chunk, Some(chunks))),
                Err(_) => {
                    expired.store(true, Ordering::Relaxed);
                    Some((Err(io::ErrorKind::TimedOut.into()), None))
                }
            }
        }
    })
}

/// The `408`, in the API's error shape. `Connection: close`: the rest of the body may still
/// be on its way, so the connection cannot carry another request.
fn timed_out(timeout: Duration) -> Response {
    let message = format!(
        "the request body did not arrive within {} s of its headers",
        timeout.as_secs()
    );
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        Json(ErrorBody {
            message,
            errors: None,
        }),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
