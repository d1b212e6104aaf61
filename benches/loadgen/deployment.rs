//! Where the load goes: the nodes of a run — our own, started for it (one server on its own
//! disk, or N nodes sharing a `redis-server` started with them), or a running target — with
//! their addresses and pids and Redis's, and what they spent during a run: the CPU clocks of
//! them all, and the commands Redis ran. It does not decide what a scenario sends where: scenarios pick nodes by index.

use std::fmt;
use std::net::SocketAddr;
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;

use crate::client::now_ns;
use crate::process::process_times;
use crate::redis_server::RedisServer;
use crate::server::OwnServer;

/// The most nodes `--nodes` starts (each is a process with its own threads on this machine).
const MAX_NODES: usize = 16;

/// One value of `--nodes`: what to start for a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nodes {
    /// One server on its own disk (sled), no Redis: the plain mode.
    Single,
    /// This many nodes sharing one Redis (cluster mode).
    Cluster(usize),
}

impl FromStr for Nodes {
    type Err = String;

    /// `1` is the plain mode, `N` (2 or more) N nodes on Redis, `redis:N` N nodes on Redis
    /// for any N (`redis:1` is one node on Redis: Redis's cost without the spread).
    fn from_str(text: &str) -> Result<Nodes, String> {
        let (redis, count) = match text.strip_prefix("redis:") {
            Some(count) => (true, count),
            None => (false, text),
        };
        let count: usize = count
            .parse()
            .map_err(|_| format!("`{text}` is not a node count (1, 3, redis:1 …)"))?;
        match count {
            0 => Err("--nodes counts from 1".into()),
            1 if !redis => Ok(Nodes::Single),
            count if count <= MAX_NODES => Ok(Nodes::Cluster(count)),
            _ => Err(format!("at most {MAX_NODES} nodes")),
        }
    }
}

impl fmt::Display for Nodes {
    /// As the tables show it: `1 sled`, `3 redis`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Nodes::Single => write!(f, "1 sled"),
            Nodes::Cluster(count) => write!(f, "{count} redis"),
        }
    }
}

/// What the generator needs to start a node of ours.
pub struct NodeSettings<'a> {
    /// The build to start.
    pub binary: &'a str,
    pub app_id: &'a str,
    pub key: &'a str,
    pub secret: &'a str,
    pub jwt_secret: &'a str,
    pub encryption_master_key: &'a str,
}

/// One node the load goes to.
#[derive(Clone, Debug)]
pub struct Node {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub address: SocketAddr,
    /// For its CPU time and RSS, when known.
    pub pid: Option<u32>,
}

impl Node {
    fn new(base: &str, pid: Option<u32>) -> Result<Node, String> {
        let address: SocketAddr = base
            .trim_start_matches("http://")
            .parse()
            .map_err(|_| format!("`{base}` is not http://IP:PORT"))?;
        if !address.ip().is_loopback() {
            return Err(format!("{base}: targets must be on 127.0.0.0/8"));
        }
        Ok(Node {
            base: base.to_owned(),
            address,
            pid,
        })
    }
}

/// The Redis of a cluster run.
#[derive(Clone, Debug)]
pub struct Redis {
    /// For its CPU time.
    pub pid: Option<u32>,
    /// For the commands it ran (`INFO commandstats`).
    pub url: String,
}

/// The nodes of one run, and what was started for it (stopped when dropped: the nodes, then
/// Redis, then their temp dirs).
pub struct Deployment {
    pub nodes: Vec<Node>,
    pub redis: Option<Redis>,
    servers: Vec<OwnServer>,
    redis_server: Option<RedisServer>,
}

/// The collections every node of ours declares: `posts` for subscribes and writes, `tasks`
/// and the encrypted `vault` for the velo scenarios.
const COLLECTIONS: &str = "[[collections]]\nname = \"posts\"\napi_rules = { list = \"\", create = \"\" }\n\n\
     [[collections]]\nname = \"tasks\"\napi_rules = { list = \"@request.auth.id = owner\", create = \"\" }\n\n\
     [[collections]]\nname = \"vault\"\nencrypted = true\n\
     api_rules = { list = \"@request.auth.id = owner\", create = \"\" }\n";

impl Deployment {
    /// A server that is already running (`--target`), with its pid if given.
    pub fn running(base: &str, pid: Option<u32>) -> Result<Deployment, String> {
        Ok(Deployment {
            nodes: vec![Node::new(base, pid)?],
            redis: None,
            servers: Vec::new(),
            redis_server: None,
        })
    }

    /// Starts `nodes` of ours, fresh (and for a cluster, a fresh `redis-server` first), each
    /// with `broadcast_hook` (a `realtime_broadcast` script) in its hooks directory if given.
    pub fn start(
        settings: &NodeSettings,
        nodes: Nodes,
        broadcast_hook: Option<&str>,
    ) -> Result<Deployment, String> {
        let (redis_server, count) = match nodes {
            Nodes::Single => (None, 1),
            Nodes::Cluster(count) => (Some(RedisServer::try_start()?), count),
        };
        let mut deployment = Deployment {
            nodes: Vec::new(),
            redis: redis_server.as_ref().map(|server| Redis {
                pid: server.pid(),
                url: server.url(),
            }),
            servers: Vec::new(),
            redis_server,
        };
        // One after the other: each node catches up with Redis before it listens.
        for index in 0..count {
            let name = format!("node-{index}");
            let data = OwnServer::data_dir()?;
            let config = data.path().join("velo.toml");
            std::fs::write(&config, COLLECTIONS)
                .map_err(|error| format!("{name}'s config not written: {error}"))?;
            let mut command = node_command(settings);
            command.env("VELO_CONFIG", &config);
            if let Some(hook) = broadcast_hook {
                let hooks = data.path().join("hooks");
                std::fs::create_dir(&hooks)
                    .and_then(|()| std::fs::write(hooks.join("broadcast.rhai"), hook))
                    .map_err(|error| format!("{name}'s hooks not written: {error}"))?;
                command.env("VELO_HOOKS_DIR", &hooks);
            }
            if let Some(redis) = &deployment.redis {
                command
                    .env("VELO_REDIS_URL", &redis.url)
                    .env("VELO_NODE_ID", &name);
            }
            let server = OwnServer::start(&name, command, data)?;
            deployment
                .nodes
                .push(Node::new(&server.base, Some(server.pid()))?);
            deployment.servers.push(server);
        }
        Ok(deployment)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // The nodes first, so that none sees Redis go away.
        self.servers.clear();
        self.redis_server.take();
    }
}

/// Our binary with the settings of every node the generator starts.
fn node_command(settings: &NodeSettings) -> Command {
    let mut command = Command::new(settings.binary);
    command
        .env("VELO_APP_ID", settings.app_id)
        .env("VELO_APP_KEY", settings.key)
        .env("VELO_APP_SECRET", settings.secret)
        .env("VELO_JWT_SECRET", settings.jwt_secret)
        .env("VELO_ENCRYPTION_MASTER_KEY", settings.encryption_master_key)
        .env("VELO_SOCKET_QUEUE_FRAMES", "4096")
        // Thousands of sockets and subscriptions from one address and a few users: the
        // per-client limits are for real clients, not for this generator.
        .env("VELO_MAX_CONNECTIONS_PER_ADDRESS", "0")
        .env("VELO_MAX_SUBSCRIPTIONS_PER_CLIENT", "0")
        .env("VELO_SUBSCRIBE_RATE", "0")
        .env("RUST_LOG", "warn,velo_realtime::server=info");
    command
}

/// The nodes' RSS summed (KiB), when every pid is known.
pub fn nodes_rss(nodes: &[Node]) -> Option<u64> {
    nodes
        .iter()
        .map(|node| process_times(node.pid).map(|(_, _, rss)| rss))
        .sum()
}

/// User and system CPU seconds of the nodes summed, when every pid is known.
fn nodes_cpu(nodes: &[Node]) -> Option<(f64, f64)> {
    nodes
        .iter()
        .map(|node| process_times(node.pid).map(|(user, system, _)| (user, system)))
        .try_fold((0.0, 0.0), |(user, system), times| {
            times.map(|(u, s)| (user + u, system + s))
        })
}

/// CPU seconds (user + system) of a process.
fn cpu(pid: Option<u32>) -> Option<f64> {
    process_times(pid).map(|(user, system, _)| user + system)
}

/// Commands Redis has run since it started (`INFO commandstats`): all, and scripts (the
/// commits and leases). The generator's own `INFO`s are left out.
fn redis_commands(redis: Option<&Redis>) -> Option<(u64, u64)> {
    let mut connection = ::redis::Client::open(redis?.url.as_str())
        .ok()?
        .get_connection()
        .ok()?;
    let stats: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection)
        .ok()?;
    let (mut all, mut scripts) = (0, 0);
    for line in stats.lines() {
        let Some((name, figures)) = line
            .strip_prefix("cmdstat_")
            .and_then(|line| line.split_once(':'))
        else {
            continue;
        };
        let calls: u64 = figures
            .split(',')
            .find_map(|figure| figure.strip_prefix("calls="))
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0);
        if name != "info" {
            all += calls;
        }
        if matches!(
            name,
            "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro"
        ) {
            scripts += calls;
        }
    }
    Some((all, scripts))
}

/// What the processes spent during a run.
#[derive(Clone, Copy, Default)]
pub struct Usage {
    /// The nodes' CPU seconds, summed: user, system.
    pub server: Option<(f64, f64)>,
    /// Redis's CPU seconds (user + system).
    pub redis: Option<f64>,
    /// Commands Redis ran: all, and scripts.
    pub redis_commands: Option<(u64, u64)>,
    /// The generator's own CPU seconds.
    pub own: Option<f64>,
    /// The nodes' RSS at the end, summed (KiB).
    pub rss: Option<u64>,
}

/// What the nodes, Redis and this process have spent, read at the start of a run and again at
/// its end.
pub struct Clocks {
    nodes: Arc<[Node]>,
    redis: Option<Redis>,
    server_cpu: Option<(f64, f64)>,
    redis_cpu: Option<f64>,
    redis_commands: Option<(u64, u64)>,
    own_cpu: Option<f64>,
    /// When the run started (`now_ns`).
    pub started_ns: u64,
}

impl Clocks {
    pub fn start(nodes: Arc<[Node]>, redis: Option<Redis>) -> Clocks {
        Clocks {
            server_cpu: nodes_cpu(&nodes),
            redis_cpu: cpu(redis.as_ref().and_then(|redis| redis.pid)),
            redis_commands: redis_commands(redis.as_ref()),
            own_cpu: cpu(Some(std::process::id())),
            started_ns: now_ns(),
            nodes,
            redis,
        }
    }

    /// What was spent since the start.
    pub fn stop(&self) -> Usage {
        let server = nodes_cpu(&self.nodes);
        let redis = cpu(self.redis.as_ref().and_then(|redis| redis.pid));
        let commands = redis_commands(self.redis.as_ref());
        Usage {
            server: self
                .server_cpu
                .zip(server)
                .map(|(b, a)| (a.0 - b.0, a.1 - b.1)),
            redis: self.redis_cpu.zip(redis).map(|(b, a)| a - b),
            redis_commands: self
                .redis_commands
                .zip(commands)
                .map(|(b, a)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))),
            own: self
                .own_cpu
                .zip(cpu(Some(std::process::id())))
                .map(|(b, a)| a - b),
            rss: nodes_rss(&self.nodes),
        }
    }
}
