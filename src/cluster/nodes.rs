//! Which nodes are alive, and cleaning up after those that are not. Every heartbeat interval
//! a node (one run of it, [`Life`]):
//!
//! 1. beats: `node:{life}` set to expire after three intervals, and `lives` (the set of runs
//!    with entries) holds it;
//! 2. repairs what failed while Redis was away: presence leaves it could not make, and its
//!    subscriber counts (sending what those decide: `member_removed`, occupancy webhooks);
//! 3. takes or renews the sweeper lease (`lease:sweeper`, `SET NX PX` and renewed by its
//!    holder): the holder looks for runs whose heartbeat is gone and, once it has seen one
//!    gone on two ticks in a row (so that a Redis outage, which stops every heartbeat at once,
//!    does not read as every node dead), removes its sockets from presence and occupancy,
//!    sending `member_removed` to every node's sockets and the webhooks once.
//!
//! A node that finds it was swept while alive (paused, or cut off from Redis, for longer than
//! the expiry) writes its counts again and tells its presence sockets to reconnect (4200).
//!
//! At the default 5 s heartbeat a dead node's sockets are gone within 3 intervals (expiry) and
//! 2 more (two sightings): 25 s. A node starting clears its earlier runs at once.

use std::collections::HashSet;
use std::time::Duration;

use super::commands::Commands;
use super::presence::{PendingLeave, RedisPresence, Swept};
use super::{ClusterSettings, Life};
use crate::pusher::Driver;
use crate::pusher::peers::Unavailable;
use crate::pusher::protocol::{Code, USER_CHANNEL_PREFIX};

/// Heartbeats a key outlives: three missed and the node is dead.
const MISSED_BEATS: u32 = 3;

/// Takes the lease for ARGV[1] for ARGV[2] ms, or renews it if ARGV[1] holds it: 1 if held.
const LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// The runs in `lives` (KEYS[1]) whose heartbeat key (ARGV[1] .. 'node:' .. run) is gone.
const SILENT: &str = r"
local silent = {}
for _, life in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. 'node:' .. life) == 0 then
    table.insert(silent, life)
  end
end
return silent
";

/// This node's heartbeat, repairs and sweeps.
pub struct Nodes {
    commands: Commands,
    presence: RedisPresence,
    settings: ClusterSettings,
    life: Life,
}

impl Nodes {
    pub fn new(
        commands: Commands,
        presence: RedisPresence,
        settings: &ClusterSettings,
        life: Life,
    ) -> Self {
        Self {
            commands,
            presence,
            settings: settings.clone(),
            life,
        }
    }

    fn expiry(&self) -> Duration {
        self.settings.heartbeat * MISSED_BEATS
    }

    fn lives_key(&self) -> String {
        self.settings.key("lives")
    }

    /// Says this run is alive for three more intervals; answers whether the cluster had
    /// forgotten it (its heartbeat had expired and a sweeper removed its entries).
    pub async fn beat(&self) -> Result<bool, Unavailable> {
        let mut set = redis::cmd("SET");
        set.arg(self.settings.key(&format!("node:{}", self.life)))
            .arg(self.settings.node_id.as_str())
            .arg("PX")
            .arg(self.expiry().as_millis() as u64)
            .arg("GET");
        let mut join = redis::cmd("SADD");
        join.arg(self.lives_key()).arg(self.life.as_str());
        let before: Option<String> = self
            .commands
            .query("write this node's heartbeat", set)
            .await?;
        let added: i64 = self
            .commands
            .query("write this node's heartbeat", join)
            .await?;
        Ok(before.is_none() && added == 1)
    }

    /// After this run was swept as dead while it was alive (Redis was away longer than the
    /// heartbeat's expiry): its subscriber counts are written again, and its presence sockets
    /// are told to reconnect (4200), so that their clients join again and the members are
    /// right everywhere.
    async fn rejoin(&self, driver: &Driver) {
        tracing::warn!(node = %self.life, "the cluster took this node for dead; rejoining");
        for (channel, _) in driver.hub.channels("") {
            if channel.starts_with(USER_CHANNEL_PREFIX) {
                continue;
            }
            if channel.starts_with("presence-") {
                for connection in driver.hub.listeners(&channel) {
                    tokio::spawn(async move {
                        connection
                            .close(
                                Code::Reconnect,
                                "This node lost the cluster for a while; reconnect",
                            )
                            .await;
                    });
                }
            }
            self.presence.recount(channel);
        }
    }

    /// Beats, repairs and sweeps every interval, for as long as the node runs.
    pub async fn run(self, driver: std::sync::Arc<Driver>) {
        let mut ticks = tokio::time::interval(self.settings.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Runs seen silent on the previous tick.
        let mut silent_before: HashSet<Life> = HashSet::new();
        loop {
            ticks.tick().await;
            match self.beat().await {
                Ok(true) => self.rejoin(&driver).await,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "no heartbeat this interval");
                    silent_before.clear();
                    continue;
                }
            }
            self.repair(&driver).await;
            match self.hold_lease().await {
                Ok(true) => silent_before = self.sweep_silent(&driver, &silent_before).await,
                Ok(false) => silent_before.clear(),
                Err(error) => {
                    tracing::warn!(%error, "the sweeper lease could not be checked");
                    silent_before.clear();
                }
            }
        }
    }

    async fn hold_lease(&self) -> Result<bool, Unavailable> {
        let mut command = redis::cmd("EVAL");
        command
            .arg(LEASE)
            .arg(1)
            .arg(self.settings.key("lease:sweeper"))
            .arg(self.life.as_str())
            .arg(self.expiry().as_millis() as u64);
        let held: i64 = self
            .commands
            .query("take the sweeper lease", command)
            .await?;
        Ok(held == 1)
    }

    /// Sweeps the runs silent now and on the previous tick; answers the runs silent now.
    async fn sweep_silent(&self, driver: &Driver, silent_before: &HashSet<Life>) -> HashSet<Life> {
        let mut command = redis::cmd("EVAL");
        command
            .arg(SILENT)
            .arg(1)
            .arg(self.lives_key())
            .arg(self.settings.prefix.as_str());
        let silent: Vec<String> = match self.commands.query("list silent nodes", command).await {
            Ok(silent) => silent,
            Err(error) => {
                tracing::warn!(%error, "silent nodes could not be listed");
                return HashSet::new();
            }
        };
        let mut silent_now = HashSet::new();
        for text in silent {
            let Some(life) = Life::parse(&text) else {
                tracing::warn!(
                    life = text,
                    "an unreadable run in the cluster's list; left alone"
                );
                continue;
            };
            if life == self.life {
                continue;
            }
            if silent_before.contains(&life) {
                tracing::info!(node = %life, "a node stopped beating; removing its sockets");
                if let Err(error) = self.sweep_life(driver, &life).await {
                    tracing::warn!(%error, node = %life, "the sweep stopped; it goes on next time");
                    silent_now.insert(life);
                }
            } else {
                silent_now.insert(life);
            }
        }
        silent_now
    }

    /// Clears what earlier runs of this node left (they are gone: this is their successor).
    pub async fn clear_earlier_lives(&self, driver: &Driver) -> Result<(), Unavailable> {
        let mut command = redis::cmd("SMEMBERS");
        command.arg(self.lives_key());
        let lives: Vec<String> = self
            .commands
            .query("list the cluster's nodes", command)
            .await?;
        for life in lives.iter().filter_map(|text| Life::parse(text)) {
            if life.node_id() == self.settings.node_id && life != self.life {
                tracing::info!(node = %life, "clearing what this node's earlier run left");
                self.sweep_life(driver, &life).await?;
            }
        }
        Ok(())
    }

    /// Removes every entry of `life` (a run that is gone), channel by channel, each in its
    /// turn on this node, sending what that decides; then forgets the run.
    pub async fn sweep_life(&self, driver: &Driver, life: &Life) -> Result<(), Unavailable> {
        for channel in self.presence.life_channels(life).await? {
            let _turn = driver.turns.take(&channel).await;
            let swept = self.presence.sweep(life, &channel).await?;
            send_swept(driver, &channel, &swept);
        }
        let mut forget = redis::cmd("DEL");
        forget
            .arg(self.presence.life_channels_key(life))
            .arg(self.settings.key(&format!("node:{life}")));
        let _: i64 = self.commands.query("forget a node", forget).await?;
        let mut leave = redis::cmd("SREM");
        leave.arg(self.lives_key()).arg(life.as_str());
        let _: i64 = self.commands.query("forget a node", leave).await?;
        Ok(())
    }

    /// Retries what failed: presence leaves, and this run's subscriber counts (each in its
    /// channel's turn, sending what it decides). What fails again waits for the next tick.
    async fn repair(&self, driver: &Driver) {
        let repairs = self.presence.take_repairs();
        for leave in repairs.leaves {
            let _turn = driver.turns.take(&leave.channel).await;
            match self
                .presence
                .try_leave(&leave.channel, &leave.user_id, &leave.socket)
                .await
            {
                Ok(Some(removal)) => {
                    driver.member_removed(&leave.channel, &leave.user_id, removal.seq)
                }
                Ok(None) => {}
                Err(_) => self.presence.retry_leave(PendingLeave { ..leave.clone() }),
            }
        }
        for channel in repairs.counts {
            let _turn = driver.turns.take(&channel).await;
            let subscribers = driver.hub.subscription_count(&channel);
            let came = subscribers > 0;
            match self
                .presence
                .try_occupancy(&channel, subscribers, came)
                .await
            {
                Ok(true) if came => driver.webhooks.channel_occupied(&channel),
                Ok(true) => driver.webhooks.channel_vacated(&channel),
                Ok(false) => {}
                Err(_) => self.presence.recount(channel),
            }
        }
    }
}

/// Sends what a sweep decided: `member_removed` to every node's sockets and the webhooks.
fn send_swept(driver: &Driver, channel: &str, swept: &Swept) {
    for (user_id, seq) in &swept.removed {
        driver.member_removed(channel, user_id, Some(*seq));
    }
    if swept.vacated {
        driver.webhooks.channel_vacated(channel);
    }
}
