//! Cluster mode: N equal nodes sharing one Redis (DESIGN.md §12). This module owns what the
//! nodes share beside the store: the settings, and the connections to Redis. The store's
//! half (collections, subscriptions and records, and the change log every node tails) is
//! [`crate::store::redis_store`].

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How a node reaches the cluster's Redis, and who it is there.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// `redis://host:port/db`, `rediss://` for TLS, or `unix:///path`.
    pub url: String,
    /// In front of every key, so several deployments share one Redis.
    pub prefix: String,
    /// This node's name, unique in the cluster.
    pub node_id: String,
    /// How long a request waits for Redis before it is answered 503.
    pub timeout: Duration,
    /// Between a node's heartbeats; three missed and the node is dead.
    pub heartbeat: Duration,
}

impl ClusterSettings {
    /// A key under the deployment's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The client for this Redis (opening no connection yet).
    pub fn client(&self) -> Result<redis::Client, redis::RedisError> {
        redis::Client::open(self.url.as_str())
    }

    /// A connection for commands, which reconnects by itself (with backoff) when Redis goes
    /// away; each command fails after [`ClusterSettings::timeout`] rather than wait longer.
    pub async fn connect(&self) -> Result<ConnectionManager, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        ConnectionManager::new_with_config(self.client()?, config).await
    }
}

/// A node id: 1 to 64 of `[A-Za-z0-9_.-]` (it is part of Redis keys and log lines).
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}
