//! Wires the parts together and serves: store, driver (with its cluster seams when Redis is
//! configured) -> hooks -> engine -> API, on an already bound listener (so tests bind port 0), until
//! `shutdown` resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{self, App};
use crate::cluster;
use crate::config::Config;
use crate::engine::Engine;
use crate::hooks::Hooks;
use crate::http_server;
use crate::metrics::Metrics;
use crate::pusher::Driver;
use crate::pusher::outbound::Outbound;
use crate::pusher::signature::AppCredentials;
use crate::pusher::webhooks::Webhooks;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the store (the data directory, or the cluster's Redis): {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the engine failed to start: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Hooks(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cluster mode: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Serves on `listener` until `shutdown` completes, then lets requests in flight finish.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = match &config.cluster {
        Some(cluster) => {
            tracing::info!(node = %cluster.node_id, "cluster mode: collections, subscriptions and records are in Redis");
            Store::connect(cluster).await?
        }
        None => Store::open(&config.data_dir)?,
    };
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
    let app = AppCredentials::new(&config.app_id, &config.app_key, &config.app_secret);
    let webhooks = Webhooks::start(
        &config.webhooks,
        &app,
        config.webhook_retry_window,
        metrics.clone(),
    );
    let driver = Driver::new(
        app,
        config.pusher.clone(),
        config.cors_origins.clone(),
        config.trusted_proxies.clone(),
        metrics.clone(),
        outbound,
        webhooks,
    );
    let (driver, node) = match &config.cluster {
        None => (Arc::new(driver), None),
        Some(settings) => {
            let node = cluster::Node::connect(settings).await?;
            let (presence, peers) = node.seams();
            let driver = Arc::new(driver.with_cluster(presence, peers));
            let running = node.start(driver.clone()).await?;
            (driver, Some(running))
        }
    };
    let hooks = Hooks::start(config.hooks_dir.clone(), driver.clone(), metrics.clone())?;
    let engine = Engine::start(&config.engine(), store.clone(), driver.clone(), hooks).await?;
    let routes = api::routes(App::new(engine, driver.clone(), &config), &config);
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let hub_driver = driver.clone();
    let shutdown = async move {
        shutdown.await;
        // WebSocket clients are told to reconnect (4200) before the listener closes.
        hub_driver.hub.shut_down();
    };
    let timeouts = http_server::Timeouts {
        header_read: config.header_read_timeout,
        write_stall: config.write_stall_timeout,
    };
    http_server::serve(listener, routes, timeouts, metrics, shutdown).await?;
    // Let the connections write their 4200 close, then make everything durable.
    let deadline = tokio::time::Instant::now() + SOCKETS_CLOSE_GRACE;
    while driver.hub.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The closes' leaves are made: what this node's run still holds in Redis goes.
    if let Some(node) = node {
        node.stop(&driver).await;
    }
    // The webhooks those closes made (channel_vacated, member_removed) get a bounded time.
    if !driver.webhooks.drain(WEBHOOKS_DRAIN_GRACE).await {
        tracing::warn!("webhook events were still queued when the server stopped");
    }
    store.sync().await?;
    tracing::info!("stopped");
    Ok(())
}

/// How long shutdown waits for WebSocket connections to close.
const SOCKETS_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for queued webhook events.
const WEBHOOKS_DRAIN_GRACE: Duration = Duration::from_secs(5);
