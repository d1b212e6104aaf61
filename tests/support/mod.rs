//! Starts the real `velo-realtime` binary on port 0 with a temporary data directory, and talks
//! to it over real HTTP. Helpers are named after the API calls they make.

#![allow(dead_code)] // each test binary uses a different part of the helpers

pub mod clients;
pub mod cluster;
pub mod generators;
pub mod redis;
pub mod webhooks;
pub mod ws;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use tempfile::TempDir;
use velo_realtime::auth::Authenticator;

pub const ADMIN: &str = "test-admin-token";
pub const JWT_SECRET: &str = "test-jwt-secret";
pub const APP_ID: &str = "4242";
pub const APP_KEY: &str = "test-key";
pub const APP_SECRET: &str = "test-secret";

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    data: TempDir,
    config: PathBuf,
    threshold_secs: u64,
    env: Vec<(String, String)>,
    http: reqwest::Client,
    /// Every line the server has logged, across restarts.
    log: Arc<Mutex<Vec<String>>>,
}

/// What a call returned.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Server {
    /// A server whose config declares `collections` (TOML), with the default threshold.
    pub fn start(collections_toml: &str) -> Server {
        Self::start_with(collections_toml, 300)
    }

    pub fn start_with(collections_toml: &str, threshold_secs: u64) -> Server {
        Self::start_with_env(collections_toml, threshold_secs, &[])
    }

    /// With extra `VELO_*` variables.
    pub fn start_with_env(
        collections_toml: &str,
        threshold_secs: u64,
        env: &[(&str, &str)],
    ) -> Server {
        let data = tempfile::tempdir().expect("a temp dir");
        let config = data.path().join("velo.toml");
        std::fs::write(&config, collections_toml).expect("writing the config");
        let data_dir = data.path().join("data");
        let log = Arc::default();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, base) = spawn(&config, &data_dir, threshold_secs, &env, &log);
        Server {
            child,
            base,
            data,
            config,
            threshold_secs,
            env,
            http: reqwest::Client::new(),
            log,
        }
    }

    /// A server whose driver is `pusher`, delivering through `external` (a server with the
    /// built-in driver playing the external service), with extra variables.
    pub fn start_delivering_through(
        external: &Server,
        collections_toml: &str,
        threshold_secs: u64,
        env: &[(&str, &str)],
    ) -> Server {
        let port = external.port().to_string();
        let mut all = vec![
            ("VELO_DRIVER", "pusher"),
            ("VELO_PUSHER_SCHEME", "http"),
            ("VELO_PUSHER_HOST", "127.0.0.1"),
            ("VELO_PUSHER_PORT", port.as_str()),
            ("VELO_PUSHER_APP_ID", APP_ID),
            ("VELO_PUSHER_KEY", APP_KEY),
            ("VELO_PUSHER_SECRET", APP_SECRET),
        ];
        all.extend_from_slice(env);
        Self::start_with_env(collections_toml, threshold_secs, &all)
    }

    fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// Stops the server with SIGKILL (nothing gets flushed) and starts it again on the same
    /// data directory.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// SIGKILL: the process ends at once, flushing nothing.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaping the server");
    }

    /// Starts the server again on the same data directory (after `kill`).
    pub fn restart(&mut self) {
        let (child, base) = spawn(
            &self.config,
            &self.data_dir(),
            self.threshold_secs,
            &self.env,
            &self.log,
        );
        self.child = child;
        self.base = base;
    }

    /// Runs the binary once more on this server's data directory (stop it first with `kill`)
    /// with `env` in place of its extra variables, for a start that must fail: its exit status
    /// and what it printed on stderr. Panics if it is still running after 30 s.
    pub fn failed_start_with_env(&self, env: &[(&str, &str)]) -> (ExitStatus, String) {
        let mut child = base_command(&self.config, &self.data_dir(), self.threshold_secs)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for the server") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server started, and should not have");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
            .expect("reading stderr");
        (status, stderr)
    }

    /// Lowers the running server's open-file limit (soft and hard) with `prlimit`.
    pub fn limit_open_files(&self, files: u32) {
        let limit = format!("--nofile={files}:{files}");
        let set = Command::new("prlimit")
            .args(["--pid", &self.child.id().to_string(), &limit])
            .status()
            .expect("prlimit (util-linux) runs");
        assert!(set.success(), "prlimit failed");
    }

    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("the server's /proc stat");
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("a stat line")
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// The sled database's main file.
    pub fn database_file(&self) -> PathBuf {
        self.data_dir().join("db").join("db")
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the server process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal}");
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("a port")
    }

    /// Waits (up to `within`) for the server to exit by itself: its status, or `None`.
    pub fn exited_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the server") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the server to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        self.child.wait().expect("the server exits").success()
    }

    /// Whether some line logged so far contains every one of `parts`. The log is read by
    /// another thread: to assert that something was logged, use [`Server::wait_for_log`].
    pub fn logged(&self, parts: &[&str]) -> bool {
        let log = self.log.lock().expect("the log lock");
        log.iter()
            .any(|line| parts.iter().all(|part| line.contains(part)))
    }

    /// Waits (up to 10 s) until some logged line contains every one of `parts`.
    pub async fn wait_for_log(&self, parts: &[&str]) -> bool {
        eventually(Duration::from_secs(10), || async { self.logged(parts) }).await
    }

    /// Waits (up to 10 s) until `/metrics` has every one of `lines`; the text last read when
    /// one is still missing. Counters are updated by the server's tasks after the effects a
    /// test can see (a frame may arrive before its delivery is counted).
    pub async fn wait_for_metrics(&self, lines: &[&str]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics().await;
            if lines.iter().all(|line| text.lines().any(|l| l == *line)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(text);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn token(&self, sub: &str, claims: Value, ttl_secs: Option<u64>) -> String {
        let claims: Map<String, Value> = claims.as_object().cloned().unwrap_or_default();
        Authenticator::new(ADMIN, JWT_SECRET).mint(sub, claims, ttl_secs)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_reply(request.send().await.expect("the server answers")).await
    }

    pub async fn raw(&self, request: reqwest::RequestBuilder) -> Reply {
        into_reply(request.send().await.expect("the server answers")).await
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    pub async fn subscribe(
        &self,
        token: Option<&str>,
        collection: &str,
        filter: Option<&str>,
    ) -> Reply {
        let mut body = json!({ "collection": collection });
        if let Some(filter) = filter {
            body["filter"] = json!(filter);
        }
        self.call(Method::POST, "/api/realtime/subscribe", token, Some(body))
            .await
    }

    pub async fn ping(&self, token: Option<&str>, channel: &str) -> Reply {
        self.call(
            Method::POST,
            "/api/realtime/ping",
            token,
            Some(json!({ "channel_name": channel })),
        )
        .await
    }

    pub async fn unsubscribe(&self, token: Option<&str>, channel: &str) -> Reply {
        self.call(
            Method::DELETE,
            &format!("/api/realtime/subscriptions/{channel}"),
            token,
            None,
        )
        .await
    }

    /// `ws://…` for a path on this server.
    pub fn ws_url(&self, path: &str) -> String {
        format!("{}{path}", self.base.replacen("http://", "ws://", 1))
    }

    /// A signed Pusher HTTP API call, as the server libraries make it.
    pub async fn pusher_api(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let mut params = vec![
            ("auth_key".to_owned(), APP_KEY.to_owned()),
            (
                "auth_timestamp".to_owned(),
                velo_realtime::auth::now_secs().to_string(),
            ),
            ("auth_version".to_owned(), "1.0".to_owned()),
        ];
        if !body.is_empty() {
            params.push((
                "body_md5".to_owned(),
                velo_realtime::pusher::signature::body_md5(body.as_bytes()),
            ));
        }
        let app =
            velo_realtime::pusher::signature::AppCredentials::new(APP_ID, APP_KEY, APP_SECRET);
        let route = path.split('?').next().unwrap_or(path);
        if let Some(query) = path.split_once('?').map(|(_, query)| query) {
            params.extend(serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap());
        }
        let signature = app.request_signature(method.as_str(), route, &params);
        params.push(("auth_signature".to_owned(), signature));
        let mut request = self
            .http
            .request(method, format!("{}{route}", self.base))
            .query(&params);
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        into_reply(request.send().await.expect("the server answers")).await
    }

    /// `GET /metrics`, which must answer 200 with Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self
            .request(Method::GET, "/metrics")
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("a body")
    }

    pub async fn create_collection(&self, body: Value) -> Reply {
        self.call(Method::POST, "/api/collections", Some(ADMIN), Some(body))
            .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn into_reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON body, got {status} {text:?}"))
    };
    Reply { status, body }
}

/// The binary with the variables every test server has.
fn base_command(config: &Path, data_dir: &Path, threshold_secs: u64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_velo-realtime"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("VELO_CONFIG", config)
        .env("VELO_BIND", "127.0.0.1:0")
        .env("VELO_DATA_DIR", data_dir)
        .env("VELO_ADMIN_TOKEN", ADMIN)
        .env("VELO_JWT_SECRET", JWT_SECRET)
        .env("VELO_CONNECTION_THRESHOLD_SECS", threshold_secs.to_string())
        .env("VELO_APP_ID", APP_ID)
        .env("VELO_APP_KEY", APP_KEY)
        .env("VELO_APP_SECRET", APP_SECRET);
    command
}

/// Opens an encrypted channel's event `data` (`{"nonce","ciphertext"}`, NaCl secretbox) with
/// the `shared_secret` the channel authorization answered, as pusher-js does: the payload.
pub fn open_sealed(data: &str, shared_secret: &str) -> Value {
    use base64::Engine as _;
    use crypto_secretbox::aead::{Aead, KeyInit};
    let b64 = base64::engine::general_purpose::STANDARD;
    let sealed: Map<String, Value> = serde_json::from_str(data).expect("sealed data is JSON");
    let mut keys: Vec<&str> = sealed.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["ciphertext", "nonce"], "{data}");
    let field = |name: &str| {
        b64.decode(sealed[name].as_str().expect("a base64 string"))
            .expect("base64")
    };
    let nonce = field("nonce");
    assert_eq!(nonce.len(), 24, "a 24-byte nonce");
    let key: [u8; 32] = b64
        .decode(shared_secret)
        .expect("base64")
        .try_into()
        .expect("a 32-byte key");
    let plain = crypto_secretbox::XSalsa20Poly1305::new(&key.into())
        .decrypt(
            crypto_secretbox::Nonce::from_slice(&nonce),
            field("ciphertext").as_slice(),
        )
        .expect("it opens with the shared secret");
    serde_json::from_slice(&plain).expect("the payload is JSON")
}

/// Starts the binary and waits for the line that says where it listens.
fn spawn(
    config: &Path,
    data_dir: &Path,
    threshold_secs: u64,
    env: &[(String, String)],
    log: &Arc<Mutex<Vec<String>>>,
) -> (Child, String) {
    let mut child = base_command(config, data_dir, threshold_secs)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, receive) = mpsc::channel();
    let log = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[server] {line}");
            log.lock().expect("the log lock").push(line.clone());
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = receive.recv_timeout(left) else {
            break None;
        };
        if let Some(address) = line.split("listening on ").nth(1) {
            break Some(address.trim().to_owned());
        }
    };
    match address {
        Some(address) => (child, address),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not say where it listens within 60 s");
        }
    }
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
