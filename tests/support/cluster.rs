//! The nodes of a test cluster: real servers sharing one [`RedisServer`], each with its own
//! node id and a short heartbeat, so that dead nodes are found in seconds.

use super::Server;
use super::redis::RedisServer;

/// The nodes' heartbeat in tests: a node silent for three (1.5 s) is dead.
pub const TEST_HEARTBEAT_MS: &str = "500";

impl RedisServer {
    /// Starts `count` nodes sharing this Redis: `node-0`, `node-1`, …, with a heartbeat of
    /// [`TEST_HEARTBEAT_MS`], their collections from `toml`, and `env` besides (later
    /// variables win).
    pub fn start_nodes(&self, count: usize, toml: &str, env: &[(&str, &str)]) -> Vec<Server> {
        (0..count)
            .map(|index| self.start_node(index, toml, env))
            .collect()
    }

    /// One node, `node-{index}`, sharing this Redis.
    pub fn start_node(&self, index: usize, toml: &str, env: &[(&str, &str)]) -> Server {
        let url = self.url();
        let node_id = format!("node-{index}");
        let mut all = vec![
            ("VELO_REDIS_URL", url.as_str()),
            ("VELO_NODE_ID", node_id.as_str()),
            ("VELO_NODE_HEARTBEAT_MS", TEST_HEARTBEAT_MS),
        ];
        all.extend_from_slice(env);
        Server::start_with_env(toml, 300, &all)
    }
}
