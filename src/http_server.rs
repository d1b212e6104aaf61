//! Accepts TCP connections and serves HTTP/1.1 on each with hyper, handing every request to one
//! poem endpoint: what a connection may cost the server (how long it may keep it waiting for a
//! request or for a blocked write, what the listener does at the open-file limit) and graceful
//! shutdown. It knows nothing of routes.
//!
//! Served here rather than by `poem::Server`, whose hyper builder has no timer, so hyper's
//! header-read timeout never applied and poem's `idle_timeout` restarts on every byte: a client
//! that sent nothing, or trickled its headers, held its connection (a file) for as long as it
//! liked (DESIGN.md §15). We speak HTTP/1.1 only: a TLS proxy in front speaks HTTP/2 to
//! browsers and HTTP/1.1 to us.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use poem::http::StatusCode;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Sleep;

use crate::metrics::Metrics;

/// How long shutdown lets requests in flight finish before their connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The largest request head (request line and headers) read; a larger one gets `431` and the
/// connection is closed. A JWT of many claims is a few KiB; hyper's own bound is ~400 KB.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// How long the listener pauses after accepting failed for want of resources.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a connection may keep the server waiting (`None`: no limit).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// For a request's head. hyper starts that timer whenever the connection waits for a head:
    /// on a new connection and after every response on a kept-alive one, so the same bound
    /// closes idle connections. It also bounds the handover of a WebSocket upgrade (see
    /// [`serve_connection`]).
    pub header_read: Option<Duration>,
    /// For a write that makes no progress (the client is not reading): responses and, after
    /// an upgrade, WebSocket frames alike (see [`StallGuard`]).
    pub write_stall: Option<Duration>,
}

/// Serves `endpoint` on `listener` until `shutdown` completes; then stops accepting, lets
/// requests in flight finish for up to [`SHUTDOWN_GRACE`], and returns. Connections that run
/// out of time are counted in `metrics`.
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    timeouts: Timeouts,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    E: Endpoint + 'static,
{
    let local = LocalAddr(listener.local_addr()?.into());
    let mut acceptor = PatientAcceptor::new(listener);
    let endpoint = Arc::new(endpoint);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(ended) = connections.join_next() => report(ended),
            (stream, remote) = acceptor.accept() => {
                connections.spawn(serve_connection(
                    StallGuard::new(stream, timeouts.write_stall, metrics.clone()),
                    local.clone(),
                    RemoteAddr(remote.into()),
                    endpoint.clone(),
                    timeouts.header_read,
                    metrics.clone(),
                    stopping.clone(),
                ));
            }
        }
    }
    drop(acceptor);
    stop.send_replace(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(ended) = connections.join_next().await {
            report(ended);
        }
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            connections = connections.len(),
            "dropping connections still busy after the shutdown grace"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// A connection task's end: only a panic is worth a word (errors are logged in the task).
fn report(ended: Result<(), tokio::task::JoinError>) {
    if let Err(error) = ended
        && error.is_panic()
    {
        tracing::error!(%error, "a connection task panicked");
    }
}

/// Serves one connection until it closes, is upgraded, or shutdown asks it to finish.
///
/// A WebSocket upgrade is handed over once its `101` is written. A client that stops reading
/// can keep that write (and so the connection, and the WebSocket task awaiting the upgrade)
/// waiting forever, so once the endpoint has answered `101` the handover must happen within
/// `header_read_timeout`, else the connection is dropped (the waiting task then gets an
/// error and ends).
async fn serve_connection<E, Io>(
    stream: Io,
    local: LocalAddr,
    remote: RemoteAddr,
    endpoint: Arc<E>,
    header_read_timeout: Option<Duration>,
    metrics: Arc<Metrics>,
    mut stopping: watch::Receiver<bool>,
) where
    E: Endpoint + 'static,
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let upgrading = Arc::new(Notify::new());
    let service = service_fn({
        let (remote, upgrading) = (remote.clone(), upgrading.clone());
        move |request: hyper::Request<Incoming>| {
            let request = Request::from((request, local.clone(), remote.clone(), Scheme::HTTP));
            let (endpoint, upgrading) = (endpoint.clone(), upgrading.clone());
            async move {
                let response = endpoint.get_response(request).await;
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    upgrading.notify_one();
                }
                Ok::<_, Infallible>(hyper::Response::from(response))
            }
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let handover_overdue = async {
        upgrading.notified().await;
        match header_read_timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(connection, handover_overdue);
    let mut finishing = false;
    loop {
        tokio::select! {
            ended = &mut connection => {
                if let Err(error) = ended {
                    if error.is_timeout() {
                        metrics.header_read_timeouts.inc();
                    }
                    tracing::debug!(%error, remote = %*remote, "connection ended");
                }
                return;
            }
            () = &mut handover_overdue => {
                metrics.handover_timeouts.inc();
                tracing::debug!(remote = %*remote, "upgrade not taken in time: connection dropped");
                return;
            }
            _ = stopping.wait_for(|stop| *stop), if !finishing => {
                finishing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A connection's stream whose writes must make progress: a write (or flush) that stays
/// blocked for the limit, because the client stopped reading, fails with `TimedOut`, which
/// ends the connection. Without it a client that asks for a large response (or holds a
/// WebSocket) and never reads keeps its connection, and a file, for as long as it likes.
///
/// Costs nothing while writes go through: the timer is armed only when a write would block,
/// and the same timer is re-armed for later stalls.
pub struct StallGuard<Io> {
    io: Io,
    limit: Option<Duration>,
    /// Armed while a write is blocked: when it fires, the write fails.
    stalled: Option<Pin<Box<Sleep>>>,
    blocked: bool,
    metrics: Arc<Metrics>,
}

impl<Io> StallGuard<Io> {
    pub fn new(io: Io, limit: Option<Duration>, metrics: Arc<Metrics>) -> Self {
        Self {
            io,
            limit,
            stalled: None,
            blocked: false,
            metrics,
        }
    }

    /// After a write attempt: `Pending` arms the timer (once per stall) and fails the write
    /// when it has fired; anything else disarms it.
    fn watch<T>(
        &mut self,
        attempt: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        let Some(limit) = self.limit else {
            return attempt;
        };
        if attempt.is_ready() {
            self.blocked = false;
            return attempt;
        }
        let deadline = tokio::time::Instant::now() + limit;
        let timer = match &mut self.stalled {
            Some(timer) if self.blocked => timer,
            Some(timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => self
                .stalled
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.blocked = true;
        if timer.as_mut().poll(cx).is_ready() {
            self.blocked = false;
            self.metrics.write_stall_timeouts.inc();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read for the write-stall timeout",
            )));
        }
        Poll::Pending
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for StallGuard<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for StallGuard<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch(attempt, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(attempt, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(attempt, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Accepts connections with `TCP_NODELAY`, pausing when accepting fails for want of file
/// descriptors, memory or buffers.
///
/// `TCP_NODELAY`: the writers already gather frames into one write, so Nagle's algorithm only
/// held a frame back until the client's delayed ACK (up to 40 ms on Linux). Measured at
/// broadcast N=1k, 600 events/s: p99 47 ms with Nagle, 17–23 ms without.
///
/// Trying again at once when `accept` fails would, at the open-file limit (EMFILE), fail
/// immediately every time, spinning a core and starving the connections already open. Here it
/// waits [`ACCEPT_BACKOFF`] between tries (waiting clients stay in the kernel's backlog) and
/// logs once when it starts failing and once when it recovers, at most once per
/// [`WARNING_INTERVAL`].
struct PatientAcceptor {
    listener: TcpListener,
    failing: bool,
    /// When the last failing spell was logged; spells in the interval after it are not.
    warned: Option<Instant>,
    /// Whether the current failing spell was logged, and so its recovery is.
    announced: bool,
}

/// The least time between two warnings that accepting fails. Under a slowloris attack the
/// listener reaches the file limit again every time the header-read timeout frees a file:
/// many times a second.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

impl PatientAcceptor {
    fn new(listener: TcpListener) -> Self {
        Self {
            listener,
            failing: false,
            warned: None,
            announced: false,
        }
    }

    /// Errors of one connection that failed before it was accepted: the next may succeed at
    /// once. Any other (out of files, of memory, of buffers) would fail again at once.
    fn connection_failed(error: &std::io::Error) -> bool {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
        matches!(
            error.kind(),
            ConnectionAborted | ConnectionReset | Interrupted
        )
    }

    /// The next connection and its peer's address. Cancel-safe: a connection is never lost.
    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, remote)) => {
                    self.failing = false;
                    if std::mem::take(&mut self.announced) {
                        tracing::info!("accepting connections again");
                    }
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "TCP_NODELAY not set");
                    }
                    return (stream, remote);
                }
                Err(error) if Self::connection_failed(&error) => {
                    tracing::debug!(%error, "accept failed");
                }
                Err(error) => {
                    let quiet = self
                        .warned
                        .is_some_and(|warned| warned.elapsed() < WARNING_INTERVAL);
                    if !std::mem::replace(&mut self.failing, true) && !quiet {
                        tracing::warn!(
                            %error,
                            "cannot accept connections (open-file limit?): new clients wait until some close"
                        );
                        self.warned = Some(Instant::now());
                        self.announced = true;
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use poem::{Response, handler};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Answers with the address the request came from, as poem sees it.
    #[handler]
    fn remote_address(request: &Request) -> String {
        request.remote_addr().to_string()
    }

    #[tokio::test]
    async fn requests_carry_their_remote_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let timeouts = Timeouts {
            header_read: None,
            write_stall: None,
        };
        let metrics = Arc::new(Metrics::default());
        let server = tokio::spawn(serve(listener, remote_address, timeouts, metrics, async {
            let _ = stopped.await;
        }));
        let mut client = TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).await.unwrap();
        let expected = format!("socket://{}", client.local_addr().unwrap());
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(
            reply.ends_with(&expected),
            "{reply} should end with {expected}"
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    /// Takes the upgrade in a task, as the WebSocket endpoint does, and answers `101`.
    #[handler]
    fn upgrade(
        request: &Request,
        taken: poem::web::Data<&tokio::sync::mpsc::Sender<bool>>,
    ) -> Response {
        let upgrade = request.take_upgrade().expect("an upgrade request");
        let taken = taken.clone();
        tokio::spawn(async move {
            let _ = taken.send(upgrade.await.is_ok()).await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "test")
            .finish()
    }

    #[tokio::test]
    async fn an_upgrade_not_handed_over_in_time_drops_the_connection() {
        // A client that sends the upgrade request and never reads: a 16-byte pipe holds
        // less than the `101`, so writing it never completes.
        let (mut client, server_side) = tokio::io::duplex(16);
        let (taken, mut outcome) = tokio::sync::mpsc::channel(1);
        let (_stop, stopping) = watch::channel(false);
        let timeout = Duration::from_millis(300);
        let served = tokio::spawn(serve_connection(
            server_side,
            LocalAddr(poem::Addr::Custom("test", "".into())),
            RemoteAddr(poem::Addr::Custom("test", "".into())),
            Arc::new(poem::EndpointExt::data(upgrade, taken)),
            Some(timeout),
            Arc::new(Metrics::default()),
            stopping,
        ));
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: test\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n",
            )
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("the connection is dropped")
            .unwrap();
        assert!(started.elapsed() >= timeout, "dropped at once");
        assert_eq!(
            outcome.recv().await,
            Some(false),
            "the upgrade's waiter hears of it"
        );
    }

    #[tokio::test]
    async fn a_request_head_over_the_limit_gets_431() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let timeouts = Timeouts {
            header_read: None,
            write_stall: None,
        };
        let metrics = Arc::new(Metrics::default());
        let _server = tokio::spawn(serve(listener, remote_address, timeouts, metrics, async {
            std::future::pending::<()>().await
        }));
        for (size, status) in [(60 << 10, "HTTP/1.1 200"), (70 << 10, "HTTP/1.1 431")] {
            let mut client = TcpStream::connect(address).await.unwrap();
            let head = format!(
                "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
                "a".repeat(size)
            );
            client.write_all(head.as_bytes()).await.unwrap();
            let mut reply = String::new();
            let _ = client.read_to_string(&mut reply).await;
            assert!(reply.starts_with(status), "{size} bytes: {reply}");
        }
    }

    #[tokio::test]
    async fn a_write_blocked_past_the_limit_fails() {
        // A pipe of 16 bytes that nobody reads: the second write blocks.
        let (_reader, writer) = tokio::io::duplex(16);
        let metrics = Arc::new(Metrics::default());
        let limit = Duration::from_millis(200);
        let mut guarded = StallGuard::new(writer, Some(limit), metrics.clone());
        guarded.write_all(&[0; 16]).await.unwrap();
        let started = tokio::time::Instant::now();
        let blocked = tokio::time::timeout(Duration::from_secs(10), guarded.write_all(&[0; 16]))
            .await
            .expect("the write fails instead of waiting forever");
        assert_eq!(blocked.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit);
        assert_eq!(metrics.write_stall_timeouts.get(), 1);
    }

    #[tokio::test]
    async fn a_write_that_moves_is_not_cut() {
        let (mut reader, writer) = tokio::io::duplex(16);
        let limit = Duration::from_millis(300);
        let mut guarded = StallGuard::new(writer, Some(limit), Arc::new(Metrics::default()));
        // The reader takes 16 bytes every 100 ms: each stall is shorter than the limit, though
        // the whole write takes longer.
        let reading = tokio::spawn(async move {
            let mut buffer = [0; 16];
            let mut total = 0;
            while total < 160 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                total += reader.read(&mut buffer).await.unwrap();
            }
        });
        guarded.write_all(&[0; 160]).await.expect("kept moving");
        reading.await.unwrap();
    }

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut acceptor = PatientAcceptor::new(listener);
        let _client = TcpStream::connect(address).await.unwrap();
        let (stream, _) = acceptor.accept().await;
        assert!(stream.nodelay().unwrap());
    }
}
