//! A real `redis-server` for cluster tests: its own temp dir, listening only on a unix socket in
//! it (no port to race for), persisting every write (`appendonly yes`, `appendfsync always`),
//! killed when dropped. And the nodes of a cluster sharing it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::Server;

/// How long `redis-server` may take to answer its first PING.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts `redis-server` in a fresh temp dir and waits until it answers PING.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = format!(
            "port 0\nunixsocket {socket}\nunixsocketperm 700\ndir {dir}\n\
             appendonly yes\nappendfsync always\nsave \"\"\nlogfile {dir}/redis.log\n",
            socket = dir.path().join("redis.sock").display(),
            dir = dir.path().display(),
        );
        std::fs::write(dir.path().join("redis.conf"), config).expect("writing redis.conf");
        let mut redis = RedisServer { child: None, dir };
        redis.restart();
        redis
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `unix:///…/redis.sock`, for `VELO_REDIS_URL`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again in the same dir on the same socket (after `kill`): the append-only file
    /// is replayed. Waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("redis-server")
            .arg(self.dir.path().join("redis.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server runs (Debian package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within {READY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers PING on its socket (a raw RESP exchange: no client needed).
    fn answers_ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut answer = [0; 7];
        stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
    }

    /// Starts `count` nodes sharing this Redis: `node-0`, `node-1`, …, with a heartbeat of
    /// [`TEST_HEARTBEAT_MS`] so that dead nodes are found fast, and `env` besides.
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

/// The nodes' heartbeat in tests: a node silent for three (1.5 s) is dead.
pub const TEST_HEARTBEAT_MS: &str = "500";

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
