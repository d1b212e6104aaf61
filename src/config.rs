//! The one configuration struct: command-line flags, `VELO_*` environment variables and an
//! optional TOML file, in that order of precedence, then the embedded defaults (DESIGN.md §8).
//!
//! [`Settings`] is both the clap argument set and the TOML schema, so every key is declared and
//! documented once; [`Config`] is the resolved, fully defaulted result the server runs with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::cluster::ClusterSettings;
pub use crate::engine::CollectionSeed;
use crate::engine::channel_rules::{ChannelRuleSeed, ChannelRules};
use crate::engine::events::EventNames;
use crate::engine::live::HistoryLimits;
use crate::engine::{CollectionName, EngineError, EngineSettings};
use crate::filter::FilterEngine;
use crate::limits::{ClientLimits, TrustedProxies, TrustedProxy};
use crate::pusher::{Limits, webhooks};

/// Development secrets: fine on loopback, loudly reported anywhere else.
pub const DEV_ADMIN_TOKEN: &str = "velo-dev-admin-token";
pub const DEV_JWT_SECRET: &str = "velo-dev-jwt-secret-change-me";
/// Numeric: the Python `pusher` library refuses other app ids.
pub const DEV_APP_ID: &str = "1001";
pub const DEV_APP_KEY: &str = "velo-key";
pub const DEV_APP_SECRET: &str = "velo-secret-change-me";

/// Settings from flags, environment and file. Every field is optional here; [`Settings::resolve`]
/// fills the gaps with the defaults.
#[derive(Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML configuration file [default: ./velo.toml when it exists]
    #[arg(long, global = true, env = "VELO_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port (the log says which) [default: 127.0.0.1:8080]
    #[arg(long, global = true, env = "VELO_BIND")]
    pub bind: Option<SocketAddr>,

    /// Directory for the sled database and snapshots [default: ./snapshots]
    #[arg(long, global = true, env = "VELO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Directory of `*.rhai` hook scripts, reloaded when they change or on SIGHUP (docs/hooks.md)
    /// [default: ./hooks when it exists]
    #[arg(long, global = true, env = "VELO_HOOKS_DIR")]
    pub hooks_dir: Option<PathBuf>,

    /// Bearer token of the superuser (manages collections, passes SUPERUSER_ONLY); the default is
    /// for development only [default: velo-dev-admin-token]
    #[arg(long, global = true, env = "VELO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// HS256 secret that user JWTs are signed with; the default is for development only
    /// [default: velo-dev-jwt-secret-change-me]
    #[arg(long, global = true, env = "VELO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Pusher app id served by the built-in driver [default: 1001]
    #[arg(long, global = true, env = "VELO_APP_ID")]
    pub app_id: Option<String>,

    /// Pusher app key (clients connect to /app/{key}) [default: velo-key]
    #[arg(long, global = true, env = "VELO_APP_KEY")]
    pub app_key: Option<String>,

    /// Pusher app secret (signs channel authorizations and HTTP API calls); the default is for
    /// development only [default: velo-secret-change-me]
    #[arg(long, global = true, env = "VELO_APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<String>,

    /// Prefix of realtime channel names [default: velo.realtime.]
    #[arg(long, global = true, env = "VELO_CHANNEL_PREFIX")]
    pub channel_prefix: Option<String>,

    /// Seconds a subscription lives without a ping or a connected socket [default: 300]
    #[arg(long, global = true, env = "VELO_CONNECTION_THRESHOLD_SECS")]
    pub connection_threshold_secs: Option<u64>,

    /// Origins allowed for browsers, comma-separated, or * [default: *]
    #[arg(long, global = true, env = "VELO_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,

    /// Most WebSocket connections at once; more are refused with 4004. 0: unlimited [default: 100000]
    #[arg(long, global = true, env = "VELO_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Largest frame a client may send, in bytes; larger ones get pusher:error 4301. 0: up to
    /// the 256 KiB that can be read at all [default: 10240]
    #[arg(long, global = true, env = "VELO_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Most channels one connection may subscribe to. 0: unlimited [default: 100]
    #[arg(long, global = true, env = "VELO_MAX_CHANNELS_PER_SOCKET")]
    pub max_channels_per_socket: Option<usize>,

    /// Frames queued for a slow client before it is disconnected with 4100. 0: unbounded (a
    /// client that stops reading then holds memory until it is dropped) [default: 1024]
    #[arg(long, global = true, env = "VELO_SOCKET_QUEUE_FRAMES")]
    pub socket_queue_frames: Option<usize>,

    /// Seconds of client silence before the server pings [default: 120]
    #[arg(long, global = true, env = "VELO_ACTIVITY_TIMEOUT_SECS")]
    pub activity_timeout_secs: Option<u64>,

    /// Seconds a pinged client has to answer (anything will do) before it is closed with 4201 [default: 30]
    #[arg(long, global = true, env = "VELO_PONG_TIMEOUT_SECS")]
    pub pong_timeout_secs: Option<u64>,

    /// Seconds a client may take to send a request's headers. Also how long an idle kept-alive
    /// connection stays open, and how long a WebSocket upgrade may take to be handed over after
    /// its 101; 0 = no limit [default: 10]
    #[arg(long, global = true, env = "VELO_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,

    /// Seconds a request's body may take to arrive after its headers; slower gets 408 and the
    /// connection is closed; 0 = no limit [default: 30]
    #[arg(long, global = true, env = "VELO_BODY_READ_TIMEOUT_SECS")]
    pub body_read_timeout_secs: Option<u64>,

    /// Seconds a write to a client may stay blocked (the client not reading) before its
    /// connection is dropped: HTTP responses and WebSockets alike; 0 = no limit [default: 30]
    #[arg(long, global = true, env = "VELO_WRITE_STALL_TIMEOUT_SECS")]
    pub write_stall_timeout_secs: Option<u64>,

    /// Seconds a cache channel's last event is kept for new subscribers; 0 = until replaced
    /// [default: 1800]
    #[arg(long, global = true, env = "VELO_CACHE_TTL_SECS")]
    pub cache_ttl_secs: Option<u64>,

    /// Cache channels whose last event is kept, at most (the one used least recently, written
    /// or replayed, makes room); 0 = unlimited [default: 10000]
    #[arg(long, global = true, env = "VELO_CACHE_MAX_CHANNELS")]
    pub cache_max_channels: Option<usize>,

    /// Members (users, not sockets) of one presence channel, at most; more get
    /// LimitReached 4100; 0 = unlimited [default: 100]
    #[arg(long, global = true, env = "VELO_PRESENCE_MAX_MEMBERS")]
    pub presence_max_members: Option<usize>,

    /// Largest user_info of a presence member, in bytes of JSON; larger gets 4301;
    /// 0 = unlimited [default: 1024]
    #[arg(long, global = true, env = "VELO_PRESENCE_MAX_USER_INFO_BYTES")]
    pub presence_max_user_info_bytes: Option<usize>,

    /// Base64 of 32 random bytes: with it, authorizing a private-encrypted- channel answers the
    /// channel's shared_secret (SHA-256 of the channel name and this key, as the server
    /// libraries derive it); unset, encrypted channels are not authorized here [default: none]
    #[arg(
        long,
        global = true,
        env = "VELO_ENCRYPTION_MASTER_KEY",
        hide_env_values = true
    )]
    pub encryption_master_key: Option<String>,

    /// Token claims copied into a signed-in user's user_data besides `id`, comma-separated
    /// (e.g. name,email) [default: none]
    #[arg(
        long,
        global = true,
        env = "VELO_USER_DATA_CLAIMS",
        value_delimiter = ','
    )]
    pub user_data_claims: Option<Vec<String>>,

    /// Relay client-* events between subscribers of private channels [default: false]
    #[arg(long, global = true, env = "VELO_CLIENT_EVENTS")]
    pub client_events: Option<bool>,

    /// Most live subscriptions one client may hold (a user by id, a guest by address); more
    /// get 429. 0: unlimited [default: 1000]
    #[arg(long, global = true, env = "VELO_MAX_SUBSCRIPTIONS_PER_CLIENT")]
    pub max_subscriptions_per_client: Option<usize>,

    /// Subscribe requests per second one client may make (bursts of as many pass at once);
    /// more get 429 with Retry-After. 0: unlimited [default: 20]
    #[arg(long, global = true, env = "VELO_SUBSCRIBE_RATE")]
    pub subscribe_rate: Option<u32>,

    /// Most WebSocket connections from one address; more are refused with 4100 (clients
    /// retry later). 0: unlimited [default: 1000]
    #[arg(long, global = true, env = "VELO_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,

    /// Proxies whose X-Forwarded-For is believed, comma-separated addresses or networks
    /// (10.0.0.0/8); a client's address is then the last one they forwarded [default: none]
    #[arg(
        long,
        global = true,
        env = "VELO_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<String>>,

    /// What events are called on the wire: `actions` (`created`, `updated`, `deleted`, `ended`)
    /// or `server.message` (every event, as Velo's own code broadcasts; the payload's `action`
    /// says which) [default: actions]
    #[arg(long, global = true, env = "VELO_EVENT_NAMES")]
    pub event_names: Option<EventNames>,

    /// Seconds a collection keeps its live subscriptions' events for recovery
    /// (`GET /api/realtime/subscriptions/{channel}/events`); 0 = no age limit [default: 120]
    #[arg(long, global = true, env = "VELO_HISTORY_SECS")]
    pub history_secs: Option<u64>,

    /// Live events a collection keeps for recovery, at most (the oldest go first);
    /// 0 = unlimited [default: 10000]
    #[arg(long, global = true, env = "VELO_HISTORY_EVENTS")]
    pub history_events: Option<usize>,

    /// Bytes of live events a collection keeps for recovery, at most (the memory they hold:
    /// their JSON twice, plain and escaped, and their numbers); 0 = unlimited
    /// [default: 67108864]
    #[arg(long, global = true, env = "VELO_HISTORY_BYTES")]
    pub history_bytes: Option<usize>,

    /// Where events go: `builtin` (this server's WebSockets) or `pusher` (an external
    /// Pusher-compatible service) [default: builtin]
    #[arg(long, global = true, env = "VELO_DRIVER")]
    pub driver: Option<DriverKind>,

    /// The external service's host (driver `pusher`), e.g. api-eu.pusher.com; needed by driver
    /// `pusher` [default: none]
    #[arg(long, global = true, env = "VELO_PUSHER_HOST")]
    pub pusher_host: Option<String>,

    /// The external service's port [default: 443 for https, 80 for http]
    #[arg(long, global = true, env = "VELO_PUSHER_PORT")]
    pub pusher_port: Option<u16>,

    /// `https` or `http` [default: https]
    #[arg(long, global = true, env = "VELO_PUSHER_SCHEME")]
    pub pusher_scheme: Option<String>,

    /// The external app's id; needed by driver `pusher` [default: none]
    #[arg(long, global = true, env = "VELO_PUSHER_APP_ID")]
    pub pusher_app_id: Option<String>,

    /// The external app's key (clients connect with it); needed by driver `pusher` [default: none]
    #[arg(long, global = true, env = "VELO_PUSHER_KEY")]
    pub pusher_key: Option<String>,

    /// The external app's secret (signs triggers and channel authorizations); needed by driver
    /// `pusher` [default: none]
    #[arg(
        long,
        global = true,
        env = "VELO_PUSHER_SECRET",
        hide_env_values = true
    )]
    pub pusher_secret: Option<String>,

    /// Seconds an event is retried while the external service fails, before it is dropped [default: 30]
    #[arg(long, global = true, env = "VELO_PUSHER_RETRY_WINDOW_SECS")]
    pub pusher_retry_window_secs: Option<u64>,

    /// URLs every webhook event is POSTed to, comma-separated (`[[webhooks]]` in the TOML
    /// file chooses events per URL) [default: none]
    #[arg(long, global = true, env = "VELO_WEBHOOK_URLS", value_delimiter = ',')]
    pub webhook_urls: Option<Vec<String>>,

    /// Seconds a webhook event is retried while its URL fails, counted from when it happened,
    /// before it is dropped; 1 to 86400 [default: 60]
    #[arg(long, global = true, env = "VELO_WEBHOOK_RETRY_WINDOW_SECS")]
    pub webhook_retry_window_secs: Option<u64>,

    /// Cluster mode: the Redis every node shares (`redis://host:port/db`, `rediss://` for
    /// TLS); unset, one node on sled [default: none]
    #[arg(long, global = true, env = "VELO_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// In front of every Redis key, so several deployments share one Redis [default: velo:]
    #[arg(long, global = true, env = "VELO_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,

    /// This node's name in the cluster [default: random]
    #[arg(long, global = true, env = "VELO_NODE_ID")]
    pub node_id: Option<String>,

    /// Milliseconds a request waits for Redis before it is answered 503; 1 to 60000
    /// [default: 2000]
    #[arg(long, global = true, env = "VELO_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,

    /// Milliseconds between a node's heartbeats; a node silent for three is dead and its
    /// sockets leave presence and occupancy; 100 to 10000 [default: 5000]
    #[arg(long, global = true, env = "VELO_NODE_HEARTBEAT_MS")]
    pub node_heartbeat_ms: Option<u64>,

    /// Webhook URLs with the events each gets (TOML only).
    #[arg(skip)]
    #[serde(default)]
    pub webhooks: Vec<WebhookSeed>,

    /// Collections to create at start-up when they do not exist yet (TOML only).
    #[arg(skip)]
    #[serde(default)]
    pub collections: Vec<CollectionSeed>,

    /// App channels our channel authorization signs, with their rules (TOML only).
    #[arg(skip)]
    #[serde(default)]
    pub channels: Vec<ChannelRuleSeed>,
}

/// A `[[webhooks]]` entry of the TOML file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct WebhookSeed {
    pub url: String,
    /// The events this URL gets; absent: all of them.
    pub events: Option<Vec<webhooks::Kind>>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// Where hook scripts are; `None`: no hooks.
    pub hooks_dir: Option<PathBuf>,
    pub admin_token: String,
    pub jwt_secret: String,
    pub app_id: String,
    pub app_key: String,
    pub app_secret: String,
    pub channel_prefix: String,
    pub connection_threshold: Duration,
    /// `None` allows every origin.
    pub cors_origins: Option<Vec<String>>,
    pub pusher: Limits,
    /// What one client may use of the API.
    pub clients: ClientLimits,
    pub event_names: EventNames,
    /// How much of its live subscriptions' events each collection keeps.
    pub history: HistoryLimits,
    /// Claims copied into a signed-in user's `user_data`, besides `id`.
    pub user_data_claims: Vec<String>,
    /// The master key encrypted channels' shared secrets derive from.
    pub encryption_master_key: Option<[u8; 32]>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// For a request's head, for an idle kept-alive connection, and for an upgrade's handover;
    /// `None` waits as long as the client likes.
    pub header_read_timeout: Option<Duration>,
    /// For a request's body, counted from its head; `None` waits as long as the client likes.
    pub body_read_timeout: Option<Duration>,
    /// For a write that makes no progress; `None` waits as long as the client likes.
    pub write_stall_timeout: Option<Duration>,
    /// `Some` with driver `pusher`: events go to this external service.
    pub external: Option<ExternalPusher>,
    pub collections: Vec<CollectionSeed>,
    /// App channel rules, checked (they compile).
    pub channels: Vec<ChannelRuleSeed>,
    /// Where webhooks go, and which events each URL gets.
    pub webhooks: Vec<webhooks::Target>,
    /// How long a failing webhook batch is retried.
    pub webhook_retry_window: Duration,
    /// `Some`: cluster mode, over this Redis.
    pub cluster: Option<ClusterSettings>,
}

/// Which driver delivers events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    Builtin,
    Pusher,
}

/// An external Pusher-compatible service (Pusher, Reverb, Soketi, Sockudo).
#[derive(Clone, Debug)]
pub struct ExternalPusher {
    /// `scheme://host:port`
    pub base_url: String,
    pub app_id: String,
    pub key: String,
    pub secret: String,
    pub retry_window: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("collection `{collection}`: {message}")]
    Collection { collection: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Reads the TOML file (the explicit one, else `./velo.toml` if present) under these settings.
    pub fn with_file(self) -> Result<Settings, ConfigError> {
        let path = match &self.config {
            Some(path) => path.clone(),
            None if Path::new("velo.toml").exists() => PathBuf::from("velo.toml"),
            None => return Ok(self),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let file: Settings = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.clone(),
            source: Box::new(source),
        })?;
        Ok(self.over(file))
    }

    /// `self` wins where it says something; `lower` fills the rest.
    fn over(self, lower: Settings) -> Settings {
        Settings {
            config: self.config.or(lower.config),
            bind: self.bind.or(lower.bind),
            data_dir: self.data_dir.or(lower.data_dir),
            hooks_dir: self.hooks_dir.or(lower.hooks_dir),
            admin_token: self.admin_token.or(lower.admin_token),
            jwt_secret: self.jwt_secret.or(lower.jwt_secret),
            app_id: self.app_id.or(lower.app_id),
            app_key: self.app_key.or(lower.app_key),
            app_secret: self.app_secret.or(lower.app_secret),
            channel_prefix: self.channel_prefix.or(lower.channel_prefix),
            connection_threshold_secs: self
                .connection_threshold_secs
                .or(lower.connection_threshold_secs),
            cors_origins: self.cors_origins.or(lower.cors_origins),
            max_connections: self.max_connections.or(lower.max_connections),
            max_message_bytes: self.max_message_bytes.or(lower.max_message_bytes),
            max_channels_per_socket: self
                .max_channels_per_socket
                .or(lower.max_channels_per_socket),
            socket_queue_frames: self.socket_queue_frames.or(lower.socket_queue_frames),
            activity_timeout_secs: self.activity_timeout_secs.or(lower.activity_timeout_secs),
            pong_timeout_secs: self.pong_timeout_secs.or(lower.pong_timeout_secs),
            header_read_timeout_secs: self
                .header_read_timeout_secs
                .or(lower.header_read_timeout_secs),
            body_read_timeout_secs: self.body_read_timeout_secs.or(lower.body_read_timeout_secs),
            write_stall_timeout_secs: self
                .write_stall_timeout_secs
                .or(lower.write_stall_timeout_secs),
            cache_ttl_secs: self.cache_ttl_secs.or(lower.cache_ttl_secs),
            cache_max_channels: self.cache_max_channels.or(lower.cache_max_channels),
            presence_max_members: self.presence_max_members.or(lower.presence_max_members),
            presence_max_user_info_bytes: self
                .presence_max_user_info_bytes
                .or(lower.presence_max_user_info_bytes),
            user_data_claims: self.user_data_claims.or(lower.user_data_claims),
            encryption_master_key: self.encryption_master_key.or(lower.encryption_master_key),
            client_events: self.client_events.or(lower.client_events),
            max_subscriptions_per_client: self
                .max_subscriptions_per_client
                .or(lower.max_subscriptions_per_client),
            subscribe_rate: self.subscribe_rate.or(lower.subscribe_rate),
            max_connections_per_address: self
                .max_connections_per_address
                .or(lower.max_connections_per_address),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            event_names: self.event_names.or(lower.event_names),
            history_secs: self.history_secs.or(lower.history_secs),
            history_events: self.history_events.or(lower.history_events),
            history_bytes: self.history_bytes.or(lower.history_bytes),
            driver: self.driver.or(lower.driver),
            pusher_host: self.pusher_host.or(lower.pusher_host),
            pusher_port: self.pusher_port.or(lower.pusher_port),
            pusher_scheme: self.pusher_scheme.or(lower.pusher_scheme),
            pusher_app_id: self.pusher_app_id.or(lower.pusher_app_id),
            pusher_key: self.pusher_key.or(lower.pusher_key),
            pusher_secret: self.pusher_secret.or(lower.pusher_secret),
            pusher_retry_window_secs: self
                .pusher_retry_window_secs
                .or(lower.pusher_retry_window_secs),
            webhook_urls: self.webhook_urls.or(lower.webhook_urls),
            webhook_retry_window_secs: self
                .webhook_retry_window_secs
                .or(lower.webhook_retry_window_secs),
            redis_url: self.redis_url.or(lower.redis_url),
            redis_prefix: self.redis_prefix.or(lower.redis_prefix),
            node_id: self.node_id.or(lower.node_id),
            redis_timeout_ms: self.redis_timeout_ms.or(lower.redis_timeout_ms),
            node_heartbeat_ms: self.node_heartbeat_ms.or(lower.node_heartbeat_ms),
            webhooks: if self.webhooks.is_empty() {
                lower.webhooks
            } else {
                self.webhooks
            },
            collections: if self.collections.is_empty() {
                lower.collections
            } else {
                self.collections
            },
            channels: if self.channels.is_empty() {
                lower.channels
            } else {
                self.channels
            },
        }
    }

    /// Cluster mode's settings, when `redis_url` is set.
    fn cluster(&self) -> Result<Option<ClusterSettings>, ConfigError> {
        let Some(url) = self.redis_url.clone().filter(|url| !url.trim().is_empty()) else {
            return Ok(None);
        };
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://")
            || url.starts_with("redis+unix://"))
        {
            return Err(ConfigError::Invalid(
                "redis_url is `redis://host:port/db`, `rediss://` for TLS, or `unix:///path`"
                    .into(),
            ));
        }
        let timeout_ms = self.redis_timeout_ms.unwrap_or(2000);
        if !(1..=60_000).contains(&timeout_ms) {
            return Err(ConfigError::Invalid(
                "redis_timeout_ms must be from 1 to 60000".into(),
            ));
        }
        let heartbeat_ms = self.node_heartbeat_ms.unwrap_or(5000);
        if !(100..=10_000).contains(&heartbeat_ms) {
            return Err(ConfigError::Invalid(
                "node_heartbeat_ms must be from 100 to 10000".into(),
            ));
        }
        let node_id = match &self.node_id {
            Some(id) if !crate::cluster::valid_node_id(id) => {
                return Err(ConfigError::Invalid(
                    "node_id is 1 to 64 letters, digits, `-`, `_` or `.`".into(),
                ));
            }
            Some(id) => id.clone(),
            None => crate::engine::names::random_id(),
        };
        Ok(Some(ClusterSettings {
            url,
            prefix: self.redis_prefix.clone().unwrap_or_else(|| "velo:".into()),
            node_id,
            timeout: Duration::from_millis(timeout_ms),
            heartbeat: Duration::from_millis(heartbeat_ms),
        }))
    }

    /// Applies the defaults and checks what the types cannot.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let threshold = self.connection_threshold_secs.unwrap_or(300);
        if threshold == 0 {
            return Err(ConfigError::Invalid(
                "connection_threshold_secs must be at least 1".into(),
            ));
        }
        for seed in &self.collections {
            let invalid = |message: String| ConfigError::Collection {
                collection: seed.name.clone(),
                message,
            };
            CollectionName::parse(&seed.name).map_err(invalid)?;
            seed.api_rules
                .clone()
                .checked()
                .map_err(|error| match error {
                    EngineError::Invalid { field, message } => {
                        invalid(format!("{field}: {message}"))
                    }
                    other => invalid(other.to_string()),
                })?;
        }
        for (name, value) in [
            ("admin_token", &self.admin_token),
            ("jwt_secret", &self.jwt_secret),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(ConfigError::Invalid(format!("{name} must not be empty")));
            }
        }
        let external = match self.driver.unwrap_or(DriverKind::Builtin) {
            DriverKind::Builtin => None,
            DriverKind::Pusher => {
                let missing =
                    |name: &str| ConfigError::Invalid(format!("driver `pusher` needs {name}"));
                let scheme = self.pusher_scheme.clone().unwrap_or_else(|| "https".into());
                if scheme != "https" && scheme != "http" {
                    return Err(ConfigError::Invalid(
                        "pusher_scheme is `https` or `http`".into(),
                    ));
                }
                let host = self
                    .pusher_host
                    .clone()
                    .ok_or_else(|| missing("VELO_PUSHER_HOST"))?;
                let port = self
                    .pusher_port
                    .unwrap_or(if scheme == "https" { 443 } else { 80 });
                Some(ExternalPusher {
                    base_url: format!("{scheme}://{host}:{port}"),
                    app_id: self
                        .pusher_app_id
                        .clone()
                        .ok_or_else(|| missing("VELO_PUSHER_APP_ID"))?,
                    key: self
                        .pusher_key
                        .clone()
                        .ok_or_else(|| missing("VELO_PUSHER_KEY"))?,
                    secret: self
                        .pusher_secret
                        .clone()
                        .ok_or_else(|| missing("VELO_PUSHER_SECRET"))?,
                    retry_window: Duration::from_secs(self.pusher_retry_window_secs.unwrap_or(30)),
                })
            }
        };
        ChannelRules::compile(&self.channels, Arc::new(FilterEngine::new())).map_err(|error| {
            match error {
                EngineError::Invalid { field, message } => {
                    ConfigError::Invalid(format!("{field}: {message}"))
                }
                other => ConfigError::Invalid(other.to_string()),
            }
        })?;
        let encryption_master_key = match &self.encryption_master_key {
            None => None,
            Some(text) => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|_| {
                        ConfigError::Invalid("encryption_master_key is not base64".into())
                    })?;
                Some(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "encryption_master_key must be 32 bytes (base64 of 32 random bytes), not {}",
                        bytes.len()
                    ))
                })?)
            }
        };
        if encryption_master_key.is_none()
            && let Some(seed) = self.collections.iter().find(|seed| seed.encrypted)
        {
            return Err(ConfigError::Invalid(format!(
                "collection `{}` is declared `encrypted = true`, which needs encryption_master_key (VELO_ENCRYPTION_MASTER_KEY, base64 of 32 random bytes)",
                seed.name
            )));
        }
        let cluster = self.cluster()?;
        let webhooks = webhook_targets(self.webhook_urls.as_deref(), &self.webhooks)?;
        let webhook_retry_window_secs = self.webhook_retry_window_secs.unwrap_or(60);
        if !(1..=MAX_WEBHOOK_RETRY_WINDOW_SECS).contains(&webhook_retry_window_secs) {
            return Err(ConfigError::Invalid(format!(
                "webhook_retry_window_secs must be from 1 to {MAX_WEBHOOK_RETRY_WINDOW_SECS} (a day)"
            )));
        }
        let trusted_proxies = self
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .filter(|text| !text.trim().is_empty())
            .map(|text| TrustedProxy::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies::new)
            .map_err(|error| ConfigError::Invalid(format!("trusted_proxies: {error}")))?;
        // Every limit accepts 0 = unlimited (DESIGN.md §15).
        let limit = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        let cors_origins = self
            .cors_origins
            .filter(|origins| !origins.iter().any(|origin| origin == "*"));
        Ok(Config {
            bind: self
                .bind
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("snapshots")),
            hooks_dir: self
                .hooks_dir
                .or_else(|| Path::new("hooks").is_dir().then(|| PathBuf::from("hooks"))),
            admin_token: self.admin_token.unwrap_or_else(|| DEV_ADMIN_TOKEN.into()),
            jwt_secret: self.jwt_secret.unwrap_or_else(|| DEV_JWT_SECRET.into()),
            app_id: self.app_id.unwrap_or_else(|| DEV_APP_ID.into()),
            app_key: self.app_key.unwrap_or_else(|| DEV_APP_KEY.into()),
            app_secret: self.app_secret.unwrap_or_else(|| DEV_APP_SECRET.into()),
            channel_prefix: self
                .channel_prefix
                .unwrap_or_else(|| "velo.realtime.".into()),
            connection_threshold: Duration::from_secs(threshold),
            cors_origins,
            pusher: Limits {
                max_connections: unlimited(self.max_connections.unwrap_or(100_000), usize::MAX),
                max_message_bytes: unlimited(
                    self.max_message_bytes.unwrap_or(10 * 1024),
                    usize::MAX,
                ),
                max_channels_per_socket: unlimited(
                    self.max_channels_per_socket.unwrap_or(100),
                    usize::MAX,
                ),
                queue_frames: unlimited(
                    self.socket_queue_frames.unwrap_or(1024),
                    tokio::sync::Semaphore::MAX_PERMITS,
                ),
                activity_timeout: Duration::from_secs(
                    self.activity_timeout_secs.unwrap_or(120).max(1),
                ),
                pong_timeout: Duration::from_secs(self.pong_timeout_secs.unwrap_or(30).max(1)),
                client_events: self.client_events.unwrap_or(false),
                max_connections_per_address: self.max_connections_per_address.unwrap_or(1000),
                cache_ttl: limit(self.cache_ttl_secs.unwrap_or(30 * 60)),
                cache_max_channels: self.cache_max_channels.unwrap_or(10_000),
                presence_max_members: self.presence_max_members.unwrap_or(100),
                presence_max_user_info_bytes: self.presence_max_user_info_bytes.unwrap_or(1024),
            },
            clients: ClientLimits {
                max_subscriptions: self.max_subscriptions_per_client.unwrap_or(1000),
                subscribes_per_second: self.subscribe_rate.unwrap_or(20),
            },
            trusted_proxies,
            event_names: self.event_names.unwrap_or_default(),
            history: HistoryLimits {
                max_age: limit(self.history_secs.unwrap_or(120)).unwrap_or(Duration::MAX),
                max_events: unlimited(self.history_events.unwrap_or(10_000), usize::MAX),
                max_bytes: unlimited(self.history_bytes.unwrap_or(64 << 20), usize::MAX),
            },
            encryption_master_key,
            user_data_claims: self
                .user_data_claims
                .unwrap_or_default()
                .into_iter()
                .map(|claim| claim.trim().to_owned())
                .filter(|claim| !claim.is_empty())
                .collect(),
            header_read_timeout: limit(self.header_read_timeout_secs.unwrap_or(10)),
            body_read_timeout: limit(self.body_read_timeout_secs.unwrap_or(30)),
            write_stall_timeout: limit(self.write_stall_timeout_secs.unwrap_or(30)),
            external,
            collections: self.collections,
            channels: self.channels,
            webhooks,
            webhook_retry_window: Duration::from_secs(webhook_retry_window_secs),
            cluster,
        })
    }
}

/// The longest webhook retry window: a day.
const MAX_WEBHOOK_RETRY_WINDOW_SECS: u64 = 86_400;

/// The webhook URLs: every event to each of `VELO_WEBHOOK_URLS`, the chosen ones to each
/// `[[webhooks]]` entry.
fn webhook_targets(
    urls: Option<&[String]>,
    seeds: &[WebhookSeed],
) -> Result<Vec<webhooks::Target>, ConfigError> {
    let everything = urls
        .unwrap_or_default()
        .iter()
        .map(|url| url.trim())
        .filter(|url| !url.is_empty())
        .map(|url| (url.to_owned(), webhooks::Kinds::all()));
    let chosen = seeds.iter().map(|seed| match &seed.events {
        None => Ok((seed.url.trim().to_owned(), webhooks::Kinds::all())),
        Some(events) if events.is_empty() => Err(ConfigError::Invalid(format!(
            "webhooks `{}`: an empty events list sends nothing (leave it out for every event)",
            seed.url
        ))),
        Some(events) => Ok((seed.url.trim().to_owned(), events.iter().copied().collect())),
    });
    everything
        .map(Ok)
        .chain(chosen)
        .map(|target| {
            let (url, kinds) = target?;
            let valid = url.parse::<poem::http::Uri>().ok().is_some_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
            });
            if !valid {
                return Err(ConfigError::Invalid(format!(
                    "webhook URL `{url}` is not an http:// or https:// URL"
                )));
            }
            Ok(webhooks::Target { url, kinds })
        })
        .collect()
}

/// A limit as configured, where 0 means no limit: `none` stands for it.
fn unlimited(limit: usize, none: usize) -> usize {
    if limit == 0 { none } else { limit }
}

impl Config {
    /// What the engine runs with.
    pub fn engine(&self) -> EngineSettings {
        EngineSettings {
            channel_prefix: self.channel_prefix.clone(),
            connection_threshold: self.connection_threshold,
            max_subscriptions_per_client: self.clients.max_subscriptions,
            event_names: self.event_names,
            history: self.history,
            encryption_master_key: self.encryption_master_key,
            collections: self.collections.clone(),
            channels: self.channels.clone(),
        }
    }

    /// Which development defaults are in use; they must not face a network.
    pub fn default_secrets(&self) -> Vec<&'static str> {
        let mut defaults = Vec::new();
        if self.admin_token == DEV_ADMIN_TOKEN {
            defaults.push("admin token (VELO_ADMIN_TOKEN)");
        }
        if self.jwt_secret == DEV_JWT_SECRET {
            defaults.push("JWT secret (VELO_JWT_SECRET)");
        }
        if self.app_secret == DEV_APP_SECRET {
            defaults.push("Pusher app secret (VELO_APP_SECRET)");
        }
        defaults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DESIGN.md §15: a misspelt key in a `[[collections]]` seed or its `api_rules` stops the
    /// start-up with a message naming it, as the API refuses it with 422.
    #[test]
    fn collection_seeds_refuse_unknown_keys() {
        for (text, unknown) in [
            (
                "[[collections]]\nname = 'posts'\napi_rules = { lisst = '' }",
                "lisst",
            ),
            (
                "[[collections]]\nname = 'posts'\nrules = { list = '' }",
                "rules",
            ),
        ] {
            let error = toml::from_str::<Settings>(text).unwrap_err().to_string();
            assert!(
                error.contains(&format!("unknown field `{unknown}`")),
                "{error}"
            );
        }
        let seeds = toml::from_str::<Settings>(
            "[[collections]]\nname = 'posts'\napi_rules = { list = '' }",
        )
        .unwrap()
        .collections;
        assert_eq!(seeds[0].api_rules.list.as_deref(), Some(""));
    }

    #[test]
    fn webhooks_from_the_environment_and_the_file() {
        let mut settings: Settings = toml::from_str(
            "[[webhooks]]\nurl = 'https://app.example/hooks'\nevents = ['member_added', 'cache_miss']",
        )
        .unwrap();
        settings.webhook_urls = Some(vec!["http://127.0.0.1:9/all".into(), " ".into()]);
        let config = settings.resolve().unwrap();
        let members: webhooks::Kinds = [webhooks::Kind::MemberAdded, webhooks::Kind::CacheMiss]
            .into_iter()
            .collect();
        assert_eq!(
            config.webhooks,
            [
                webhooks::Target {
                    url: "http://127.0.0.1:9/all".into(),
                    kinds: webhooks::Kinds::all()
                },
                webhooks::Target {
                    url: "https://app.example/hooks".into(),
                    kinds: members
                },
            ]
        );
        assert_eq!(config.webhook_retry_window, Duration::from_secs(60));
        for (text, message) in [
            (
                "[[webhooks]]\nurl = 'https://a.example'\nevents = []",
                "an empty events list",
            ),
            (
                "[[webhooks]]\nurl = 'a.example/hooks'",
                "is not an http:// or https:// URL",
            ),
            (
                "webhook_retry_window_secs = 0",
                "webhook_retry_window_secs must be from 1",
            ),
            (
                "webhook_retry_window_secs = 86401",
                "webhook_retry_window_secs must be from 1",
            ),
        ] {
            let error = toml::from_str::<Settings>(text)
                .unwrap()
                .resolve()
                .unwrap_err()
                .to_string();
            assert!(error.contains(message), "{error}");
        }
        let error = toml::from_str::<Settings>(
            "[[webhooks]]\nurl = 'https://a.example'\nevents = ['channel_occupid']",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("channel_occupid"), "{error}");
    }

    #[test]
    fn an_encrypted_collection_seed_needs_the_master_key() {
        let seed = "[[collections]]\nname = 'secrets'\nencrypted = true";
        let error = toml::from_str::<Settings>(seed)
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`secrets`") && error.contains("VELO_ENCRYPTION_MASTER_KEY"),
            "{error}"
        );
        let with_key = format!("encryption_master_key = '{}'\n{seed}", "A".repeat(43) + "=");
        let config = toml::from_str::<Settings>(&with_key)
            .unwrap()
            .resolve()
            .unwrap();
        assert!(config.collections[0].encrypted);
    }

    #[test]
    fn a_limit_of_zero_is_no_limit() {
        let file: Settings = toml::from_str(
            "max_connections = 0\nmax_message_bytes = 0\nmax_channels_per_socket = 0\n\
             socket_queue_frames = 0\nmax_connections_per_address = 0",
        )
        .unwrap();
        let limits = file.resolve().unwrap().pusher;
        assert_eq!(limits.max_connections, usize::MAX);
        assert_eq!(limits.max_message_bytes, usize::MAX);
        assert_eq!(limits.max_channels_per_socket, usize::MAX);
        assert_eq!(limits.queue_frames, tokio::sync::Semaphore::MAX_PERMITS);
        assert_eq!(
            limits.max_connections_per_address, 0,
            "the hub reads 0 as no limit"
        );
        let defaults = Settings::default().resolve().unwrap();
        assert_eq!(defaults.pusher.max_connections, 100_000);
        assert_eq!(defaults.pusher.queue_frames, 1024);
    }

    #[test]
    fn http_timeouts_have_defaults_and_zero_is_no_limit() {
        let config = Settings::default().resolve().unwrap();
        assert_eq!(config.header_read_timeout, Some(Duration::from_secs(10)));
        assert_eq!(config.body_read_timeout, Some(Duration::from_secs(30)));
        let file: Settings =
            toml::from_str("header_read_timeout_secs = 0\nbody_read_timeout_secs = 5").unwrap();
        let config = file.resolve().unwrap();
        assert_eq!(config.header_read_timeout, None);
        assert_eq!(config.body_read_timeout, Some(Duration::from_secs(5)));
    }
}
