//! A real `redis-server` for cluster tests: in a temp dir, on a unix socket there (no port to
//! race for), with `appendonly yes` and `appendfsync always` so that a `kill -9` loses nothing
//! it acknowledged.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct RedisServer {
    child: Option<Child>,
    dir: TempDir,
}

/// Installs Debian's `redis-server` when the machine has none (once per test binary), as the
/// real-client tests install their packages: the README's test command needs nothing more.
fn ensure_installed() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let present = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if present {
            return;
        }
        eprintln!("redis-server is missing: installing the Debian package redis-server");
        let installed = Command::new("apt-get")
            .args(["install", "-y", "-q", "redis-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            installed,
            "the cluster tests need redis-server: `apt-get install redis-server` (it could not be installed here)"
        );
    });
}

impl RedisServer {
    /// Starts `redis-server` and waits (up to 10 s) until it answers.
    pub fn start() -> RedisServer {
        ensure_installed();
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut redis = RedisServer { child: None, dir };
        redis.run();
        redis
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `VELO_REDIS_URL` for it.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(self.dir.path())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server runs (Debian package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers PING.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// SIGKILL: Redis ends at once (what it acknowledged is in its append-only file).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Starts it again on the same directory (after `kill`): it replays its append-only file.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// Kills it and starts it again with nothing: what a Redis that lost its data looks like.
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.path().join("appendonlydir"));
        self.run();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
