//! Wires the parts together and serves: store -> engine -> API, on an already bound listener
//! (so tests bind port 0), until `shutdown` resolves.

use std::future::Future;
use std::time::Duration;

use poem::Server;
use poem::listener::{Acceptor, TcpAcceptor};
use tokio::net::TcpListener;

use crate::api::{self, App};
use crate::config::Config;
use crate::engine::Engine;
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
    let engine = Engine::start(&config, store).await?;
    let routes = api::routes(App::new(engine, &config), &config);
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    let address = acceptor
        .local_addr()
        .first()
        .and_then(|address| address.as_socket_addr().copied());
    match address {
        Some(address) => tracing::info!("listening on http://{address}"),
        None => tracing::info!("listening"),
    }
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(routes, shutdown, Some(Duration::from_secs(10)))
        .await?;
    Ok(())
}
