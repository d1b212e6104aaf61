//! Wires the parts together and serves: store, driver -> engine -> API, on an already bound listener
//! (so tests bind port 0), until `shutdown` resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use poem::Server;
use poem::http::uri::Scheme;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use tokio::net::TcpListener;

use crate::api::{self, App};
use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::pusher::Driver;
use crate::pusher::outbound::Outbound;
use crate::pusher::signature::AppCredentials;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the data directory: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the engine failed to start: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves on `listener` until `shutdown` completes, then lets requests in flight finish.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Store::open(&config.data_dir)?;
    let metrics = Arc::new(Metrics::default());
    let outbound = config.external.as_ref().map(|external| {
        tracing::info!(service = %external.base_url, "events go to an external Pusher service");
        Outbound::start(
            external.base_url.clone(),
            AppCredentials::new(&external.app_id, &external.key, &external.secret),
            external.retry_window,
            metrics.clone(),
        )
    });
    let driver = Arc::new(Driver::new(
        AppCredentials::new(&config.app_id, &config.app_key, &config.app_secret),
        config.pusher.clone(),
        config.cors_origins.clone(),
        config.trusted_proxies.clone(),
        metrics,
        outbound,
    ));
    let engine = Engine::start(&config, store.clone(), driver.clone()).await?;
    let routes = api::routes(App::new(engine, driver.clone(), &config), &config);
    let acceptor = PatientAcceptor::new(TcpAcceptor::from_tokio(listener)?);
    let address = acceptor
        .local_addr()
        .first()
        .and_then(|address| address.as_socket_addr().copied());
    match address {
        Some(address) => tracing::info!("listening on http://{address}"),
        None => tracing::info!("listening"),
    }
    let hub_driver = driver.clone();
    let shutdown = async move {
        shutdown.await;
        // WebSocket clients are told to reconnect (4200) before the listener closes.
        hub_driver.hub.shut_down();
    };
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(routes, shutdown, Some(Duration::from_secs(10)))
        .await?;
    // Let the connections write their 4200 close, then make everything durable.
    let deadline = tokio::time::Instant::now() + SOCKETS_CLOSE_GRACE;
    while driver.hub.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.sync().await?;
    tracing::info!("stopped");
    Ok(())
}

/// How long shutdown waits for WebSocket connections to close.
const SOCKETS_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long the listener pauses after accepting failed for want of resources.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections with `TCP_NODELAY`, pausing when accepting fails for want of file
/// descriptors, memory or buffers.
///
/// `TCP_NODELAY`: the writers already gather frames into one write, so Nagle's algorithm only
/// held a frame back until the client's delayed ACK (up to 40 ms on Linux). Measured at
/// broadcast N=1k, 600 events/s: p99 47 ms with Nagle, 17–23 ms without.
///
/// poem tries again at once when `accept` fails; at the open-file limit (EMFILE) every try fails
/// immediately, so the listener would spin a core and starve the connections already open. Here
/// it waits [`ACCEPT_BACKOFF`] between tries (waiting clients stay in the kernel's backlog) and
/// logs once when it starts failing and once when it recovers.
struct PatientAcceptor {
    inner: TcpAcceptor,
    failing: bool,
}

impl PatientAcceptor {
    fn new(inner: TcpAcceptor) -> Self {
        Self {
            inner,
            failing: false,
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
}

impl Acceptor for PatientAcceptor {
    type Io = <TcpAcceptor as Acceptor>::Io;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            match self.inner.accept().await {
                Ok(accepted) => {
                    if std::mem::take(&mut self.failing) {
                        tracing::info!("accepting connections again");
                    }
                    if let Err(error) = accepted.0.set_nodelay(true) {
                        tracing::debug!(%error, "TCP_NODELAY not set");
                    }
                    return Ok(accepted);
                }
                Err(error) if Self::connection_failed(&error) => {
                    tracing::debug!(%error, "accept failed");
                }
                Err(error) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        tracing::warn!(
                            %error,
                            "cannot accept connections (open-file limit?): new clients wait until some close"
                        );
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut acceptor = PatientAcceptor::new(TcpAcceptor::from_tokio(listener).unwrap());
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (stream, ..) = acceptor.accept().await.unwrap();
        assert!(stream.nodelay().unwrap());
    }
}
