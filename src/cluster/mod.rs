//! Cluster mode: N equal nodes sharing one Redis (DESIGN.md §12). This module owns what the
//! nodes share beside the store: the settings, the connections to Redis, and the Pusher
//! side's cluster-wide state:
//!
//! * [`commands`]: the node's one ordered, pipelined, time-bounded writer to Redis.
//! * [`bus`]: pub/sub between nodes (triggers, client and member events, terminations).
//! * [`presence`]: presence members and channel occupancy in Redis, decided by Lua scripts.
//! * [`nodes`]: heartbeats, the sweeper lease, dead nodes' sockets cleaned up, repairs.
//!
//! [`Node`] ties them to a driver. The store's half (collections, subscriptions and records,
//! and the change log every node tails) is `crate::store::redis_store`.

pub mod bus;
pub mod commands;
pub mod nodes;
pub mod presence;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::pusher::Driver;
use crate::pusher::peers::Peers;
use crate::pusher::presence::Presence;

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

/// One run of a node: `{node id}~{random}`. A node killed and started again with the same id
/// is a new run; its earlier runs' sockets are gone, and it clears what they left before it
/// serves. Keys and bus messages name runs, so a sweep of a dead run never touches its
/// successor's sockets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Life(Arc<str>);

/// Between a node id and its run's random part (never in a node id).
const LIFE_SEPARATOR: char = '~';

impl Life {
    /// A new run of `node_id` (a valid node id).
    pub fn new(node_id: &str) -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Life(format!("{node_id}{LIFE_SEPARATOR}{}", &random[..12]).into())
    }

    /// A run's name as Redis holds it; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let (node_id, run) = text.split_once(LIFE_SEPARATOR)?;
        (valid_node_id(node_id)
            && !run.is_empty()
            && run.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| Life(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The node this is a run of.
    pub fn node_id(&self) -> &str {
        self.0
            .split_once(LIFE_SEPARATOR)
            .map_or(&*self.0, |(node_id, _)| node_id)
    }
}

impl fmt::Display for Life {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why cluster mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach Redis at the configured VELO_REDIS_URL: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Unavailable(#[from] crate::pusher::peers::Unavailable),
}

/// This node in the cluster, before and while it serves.
pub struct Node {
    settings: ClusterSettings,
    life: Life,
    commands: commands::Commands,
    presence: presence::RedisPresence,
}

/// A node serving: its background tasks (the bus listener, the heartbeat loop).
pub struct Running {
    node: Node,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Connects to Redis (bounded by the timeout; a node that cannot reach it does not start).
    pub async fn connect(settings: &ClusterSettings) -> Result<Node, ClusterError> {
        let unreachable = |error: String| ClusterError::Unreachable(error);
        let connection = tokio::time::timeout(settings.timeout * 2, settings.connect())
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", settings.timeout * 2)))?
            .map_err(|error| unreachable(error.to_string()))?;
        let commands = commands::Commands::start(connection, settings.timeout);
        let _: String = commands.query("answer PING", redis::cmd("PING")).await?;
        let life = Life::new(&settings.node_id);
        let presence =
            presence::RedisPresence::new(commands.clone(), &settings.prefix, life.clone());
        Ok(Node {
            settings: settings.clone(),
            life,
            commands,
            presence,
        })
    }

    /// The driver's seams: presence and occupancy in Redis, and the other nodes over the bus.
    pub fn seams(&self) -> (Box<dyn Presence>, Box<dyn Peers>) {
        (
            Box::new(self.presence.clone()),
            Box::new(bus::Bus::new(
                self.commands.clone(),
                &self.settings,
                self.life.clone(),
                self.presence.clone(),
            )),
        )
    }

    /// Before the node serves: clears what its earlier runs left, says it is alive, and
    /// listens to the bus (waiting, bounded, for the subscription); then keeps beating.
    pub async fn start(self, driver: Arc<Driver>) -> Result<Running, ClusterError> {
        let nodes = nodes::Nodes::new(
            self.commands.clone(),
            self.presence.clone(),
            &self.settings,
            self.life.clone(),
        );
        nodes.clear_earlier_lives(&driver).await?;
        // A new run: the cluster has not heard of it before (what `beat` answers is moot).
        nodes.beat().await?;
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let listener = tokio::spawn(bus::listen(
            self.settings.clone(),
            self.life.clone(),
            driver.clone(),
            ready,
        ));
        if tokio::time::timeout(self.settings.timeout * 2, subscribed)
            .await
            .is_err()
        {
            listener.abort();
            return Err(ClusterError::Unreachable(
                "the bus subscription was not confirmed in time".into(),
            ));
        }
        let beating = tokio::spawn(nodes.run(driver));
        tracing::info!(node = %self.life, "joined the cluster");
        Ok(Running {
            node: self,
            tasks: vec![listener, beating],
        })
    }
}

impl Running {
    /// Leaves the cluster after the node's sockets are gone: its background tasks stop and
    /// what its run still holds in Redis is cleared (as for a dead node), so that the others
    /// need not wait for its heartbeat to expire.
    pub async fn stop(self, driver: &Driver) {
        for task in &self.tasks {
            task.abort();
        }
        let nodes = nodes::Nodes::new(
            self.node.commands.clone(),
            self.node.presence.clone(),
            &self.node.settings,
            self.node.life.clone(),
        );
        if let Err(error) = nodes.sweep_life(driver, &self.node.life).await {
            tracing::warn!(%error, "this node's entries stay until the others sweep them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_names_its_node() {
        let life = Life::new("node-1");
        assert_eq!(life.node_id(), "node-1");
        assert_eq!(Life::parse(life.as_str()), Some(life.clone()));
        assert_ne!(Life::new("node-1"), life, "every run is new");
        for bad in ["node-1", "node-1~", "~abc", "no de~abc", "node~ab|c"] {
            assert_eq!(Life::parse(bad), None, "{bad}");
        }
    }
}
