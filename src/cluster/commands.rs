//! The node's one ordered writer to Redis: every command of the Pusher side (publishes,
//! presence and occupancy scripts, heartbeats, queries) goes through one task, in the order it
//! was given, so that a later command never overtakes an earlier one (a count sent after a
//! channel's last leave cannot land before it). Whatever is queued when the task is free leaves
//! in one pipeline: under load many commands share a round trip.
//!
//! Every command is bounded by the cluster's timeout: an answer that does not come in time is
//! [`Unavailable`], and nothing here waits longer (a caller's whole wait, queue included, is
//! bounded too). A command whose caller has stopped waiting is not sent at all: a trigger
//! answered 503 is not published later behind the caller's back (only one that was already
//! on its way when the wait ran out may still arrive). Blocking reads and pub/sub have their
//! own connections elsewhere.
//!
//! Once Redis has failed, commands are refused at once (`Health`) except one every
//! `PROBE_EVERY`, which finds out whether it is back: during an outage a socket's subscribes
//! and leaves (each in its channel's turn) do not wait out the timeout one after the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Cmd, FromRedisValue, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::pusher::peers::Unavailable;

/// Commands queued and not yet sent, at most; beyond, a command is refused at once
/// ([`Unavailable`]) rather than waited for.
const QUEUE: usize = 16 * 1024;
/// Most commands in one pipeline.
const PIPELINE: usize = 256;
/// While Redis is failing, one command may try it this often; the others are refused at once.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Whether Redis answered the last pipeline; if not, when the next command may try it.
struct Health {
    /// Milliseconds since `epoch` from which the next command may try a failing Redis;
    /// [`Health::UP`] while it answers.
    probe_at: AtomicU64,
    epoch: Instant,
}

impl Health {
    const UP: u64 = 0;

    fn new() -> Self {
        Self {
            probe_at: AtomicU64::new(Self::UP),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        // At least 1, so that it is never taken for `UP`.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether a command may go to Redis now: always while it answers; while it fails, the
    /// first command after each [`PROBE_EVERY`].
    fn admit(&self) -> bool {
        self.admit_at(self.now())
    }

    fn admit_at(&self, now: u64) -> bool {
        let probe_at = self.probe_at.load(Ordering::Relaxed);
        if probe_at == Self::UP {
            return true;
        }
        now >= probe_at
            && self
                .probe_at
                .compare_exchange(
                    probe_at,
                    now + PROBE_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn answered(&self, answered: bool) {
        self.answered_at(answered, self.now());
    }

    fn answered_at(&self, answered: bool, now: u64) {
        let next = match answered {
            true => Self::UP,
            false => now + PROBE_EVERY.as_millis() as u64,
        };
        self.probe_at.store(next, Ordering::Relaxed);
    }
}

/// What the writer does with a command's answer.
enum Reply {
    /// Nobody waits (a heartbeat, a best-effort publish): a failure is logged.
    Ignore,
    /// Someone waits.
    Send(oneshot::Sender<Result<Value, Unavailable>>),
    /// Nobody waits, but a failure must be repaired later.
    OnFailure(Box<dyn FnOnce() + Send>),
}

struct Job {
    /// What the command does, for log lines and error messages.
    what: &'static str,
    command: Cmd,
    reply: Reply,
    /// When its caller stops waiting; not sent after. `None`: nobody waits.
    deadline: Option<Instant>,
}

/// A handle on the writer; cheap to clone.
#[derive(Clone)]
pub struct Commands {
    queue: mpsc::Sender<Job>,
    timeout: Duration,
    health: Arc<Health>,
}

impl Commands {
    /// Starts the writer on `connection`; each pipeline waits at most `timeout`.
    pub fn start(connection: ConnectionManager, timeout: Duration) -> Commands {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let health = Arc::new(Health::new());
        tokio::spawn(write(connection, jobs, timeout, health.clone()));
        Commands {
            queue,
            timeout,
            health,
        }
    }

    /// Runs `command` and waits for its answer, within the timeout (queue included).
    pub async fn query<T: FromRedisValue>(
        &self,
        what: &'static str,
        command: Cmd,
    ) -> Result<T, Unavailable> {
        let (answer, answered) = oneshot::channel();
        let deadline = Instant::now() + self.timeout;
        self.enqueue(Job {
            what,
            command,
            reply: Reply::Send(answer),
            deadline: Some(deadline),
        })?;
        let value = match tokio::time::timeout_at(deadline, answered).await {
            Ok(Ok(answer)) => answer?,
            Ok(Err(_)) => return Err(unavailable(what, "the Redis writer stopped")),
            Err(_) => return Err(timed_out(what, self.timeout)),
        };
        T::from_redis_value(value)
            .map_err(|error| unavailable(what, &format!("unexpected reply: {error}")))
    }

    /// Queues `command` without waiting; a failure is only logged.
    pub fn send(&self, what: &'static str, command: Cmd) {
        if let Err(error) = self.enqueue(Job {
            what,
            command,
            reply: Reply::Ignore,
            deadline: None,
        }) {
            tracing::warn!(%error, "a Redis command was dropped");
        }
    }

    /// Queues `command` without waiting; `repair` runs when it fails (or cannot be queued).
    pub fn send_or(
        &self,
        what: &'static str,
        command: Cmd,
        repair: impl FnOnce() + Send + 'static,
    ) {
        if !self.health.admit() {
            repair();
            return;
        }
        let job = Job {
            what,
            command,
            reply: Reply::OnFailure(Box::new(repair)),
            deadline: None,
        };
        if let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) =
            self.queue.try_send(job)
            && let Reply::OnFailure(repair) = job.reply
        {
            repair();
        }
    }

    fn enqueue(&self, job: Job) -> Result<(), Unavailable> {
        let what = job.what;
        if !self.health.admit() {
            return Err(unavailable(what, "Redis is failing; retried shortly"));
        }
        self.queue.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                unavailable(what, "too many Redis commands are waiting")
            }
            mpsc::error::TrySendError::Closed(_) => unavailable(what, "the Redis writer stopped"),
        })
    }
}

fn unavailable(what: &str, why: &str) -> Unavailable {
    Unavailable(format!("Redis could not {what}: {why}"))
}

fn timed_out(what: &str, timeout: Duration) -> Unavailable {
    unavailable(
        what,
        &format!("no answer within {} ms", timeout.as_millis()),
    )
}

/// The writer: takes what is queued (up to [`PIPELINE`] commands), sends it as one pipeline,
/// hands out the answers; until every handle is gone.
async fn write(
    mut connection: ConnectionManager,
    mut jobs: mpsc::Receiver<Job>,
    timeout: Duration,
    health: Arc<Health>,
) {
    let mut batch = Vec::with_capacity(PIPELINE);
    while jobs.recv_many(&mut batch, PIPELINE).await > 0 {
        let now = Instant::now();
        for job in batch.extract_if(.., |job| job.deadline.is_some_and(|at| at <= now)) {
            let what = job.what;
            finish(job, Err(timed_out(what, timeout)));
        }
        if batch.is_empty() {
            continue;
        }
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        for job in &batch {
            pipeline.add_command(job.command.clone());
        }
        let answers: Result<Vec<Value>, Unavailable> =
            match tokio::time::timeout(timeout, pipeline.query_async(&mut connection)).await {
                Ok(Ok(answers)) => Ok(answers),
                Ok(Err(error)) => Err(Unavailable(format!("Redis failed: {error}"))),
                Err(_) => Err(Unavailable(format!(
                    "Redis did not answer within {} ms",
                    timeout.as_millis()
                ))),
            };
        health.answered(answers.is_ok());
        match answers {
            Ok(answers) if answers.len() == batch.len() => {
                for (job, answer) in batch.drain(..).zip(answers) {
                    let answer = match answer {
                        Value::ServerError(error) => Err(unavailable(job.what, &error.to_string())),
                        value => Ok(value),
                    };
                    finish(job, answer);
                }
            }
            Ok(answers) => {
                let error = Unavailable(format!(
                    "Redis answered {} commands of {}",
                    answers.len(),
                    batch.len()
                ));
                for job in batch.drain(..) {
                    finish(job, Err(error.clone()));
                }
            }
            Err(error) => {
                for job in batch.drain(..) {
                    let what = job.what;
                    finish(job, Err(unavailable(what, &error.0)));
                }
            }
        }
    }
}

fn finish(job: Job, answer: Result<Value, Unavailable>) {
    match (job.reply, answer) {
        (Reply::Send(answer_to), answer) => {
            let _ = answer_to.send(answer);
        }
        (Reply::Ignore, Ok(_)) | (Reply::OnFailure(_), Ok(_)) => {}
        (Reply::Ignore, Err(error)) => tracing::warn!(%error, "a Redis command failed"),
        (Reply::OnFailure(repair), Err(error)) => {
            tracing::warn!(%error, "a Redis command failed; it will be repaired");
            repair();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_redis_is_tried_once_per_probe_interval() {
        let health = Health::new();
        let every = PROBE_EVERY.as_millis() as u64;
        assert!(
            health.admit_at(10) && health.admit_at(10),
            "up: everything goes"
        );
        health.answered_at(false, 10);
        assert!(!health.admit_at(11), "down: refused at once");
        assert!(
            !health.admit_at(9 + every),
            "until the probe interval is over"
        );
        assert!(health.admit_at(10 + every), "the probe");
        assert!(!health.admit_at(11 + every), "one probe per interval");
        health.answered_at(true, 12 + every);
        assert!(
            health.admit_at(13 + every) && health.admit_at(13 + every),
            "back up"
        );
    }
}
