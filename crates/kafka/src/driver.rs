//! One consumer-group driver for hashbuy's services: the matcher and the
//! settler each implement only their [`Stage`] (what to do with partitions
//! assigned, revoked, and between polls), and the driver does the rest the
//! same way for both: it checks the topics, joins the group as a static
//! member, reports readiness and health, hands rebalances to the stage,
//! and, with `--exit-at-end`, stops once the group has committed what the
//! input held at start.
//!
//! # One thread, one owner of the partition state
//!
//! librdkafka runs a rebalance inside the `poll` of the thread that drives
//! the consumer: the coordinator, the thread running [`drive`]. The stage
//! is owned by the member's context ([`DriverContext`]) and reached only
//! from that thread: in the rebalance callback, inside `poll`, and in the
//! loop between polls ([`Stage::tick`]), never both at once. So the stage
//! owns its partitions' state outright, with no lock shared with its
//! workers:
//!
//! - **assigned**: each partition's queue is split from the main queue
//!   *before* librdkafka assigns it (so no record of it ever reaches the
//!   main queue), and the stage gets the queues, to start a worker per
//!   partition;
//! - **revoked** (or lost, or a rebalance error): the stage stops the
//!   partitions' workers and makes what they finished durable and
//!   committed before the callback returns, so the next owner starts where
//!   this one stopped.
//!
//! (librdkafka also allows `assign` to be called after the callback
//! returns, but rust-rdkafka destroys the rebalance event when the
//! callback returns, and a member that deferred it here never fetched.)
//!
//! Errors met outside a turn (in a rebalance, or by a worker) are the
//! stage's to keep until the driver asks ([`Stage::failure`]): before
//! every turn, after the loop and after [`Stage::finish`], so a stop or an
//! end reached at the same moment never turns a failed run into a clean
//! exit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::client::{failed, setting, ConnectError, Connection, Failed, CONNECT_TIMEOUT};
use crate::group::{consumed_to, ends_at_start, member_settings, serve_main_queue};
use crate::health::Health;
use crate::lease::session_timeout;
use crate::lock;

/// The consumer of a group member driven with stage `S`.
pub type Member<S> = BaseConsumer<DriverContext<S>>;

/// A partition's own queue.
pub type Queue<S> = PartitionQueue<DriverContext<S>>;

/// What a service does with its partitions; [`drive`] does the rest. Every
/// call runs on the coordinator's thread, never inside librdkafka.
pub trait Stage: Send + Sized + 'static {
    /// Why the stage stops with an error.
    type Error: From<Failed>;

    /// What a run that ended well gives back (its counts, say).
    type Output;

    /// Partitions were given to this member, each with its own queue;
    /// fetching starts once this returns. The member is there for what the
    /// group knows of them (committed offsets).
    fn assigned(&mut self, member: &Arc<Member<Self>>, queues: Vec<(i32, Queue<Self>)>);

    /// Partitions are being taken away (revoked, lost, or a rebalance
    /// failed): stop their workers and make what they finished durable and
    /// committed before returning.
    fn revoking(&mut self, member: &Member<Self>, partitions: &[i32]);

    /// A turn of the loop, after the main queue was served: commit, check
    /// workers, metrics. An error stops the run.
    fn tick(&mut self, member: &Arc<Member<Self>>, health: &Health) -> Result<(), Self::Error>;

    /// An error the stage met outside [`tick`](Stage::tick) (in a
    /// rebalance, or in one of its workers) and has not yet returned. The
    /// driver asks before every turn and again after its loop and after
    /// [`finish`](Stage::finish), so such an error is never lost to a stop
    /// or an end reached meanwhile.
    fn failure(&mut self) -> Option<Self::Error> {
        None
    }

    /// How long the next poll of the main queue may wait: the stage's own
    /// work in [`tick`](Stage::tick) may wait instead.
    fn poll_timeout(&self) -> Duration {
        Duration::from_millis(50)
    }

    /// The partitions this member owns that are read to their end with
    /// nothing in flight (for `--exit-at-end`).
    fn at_eof(&self) -> HashSet<i32>;

    /// Whether work that no offset covers is done (for `--exit-at-end`,
    /// which otherwise ends once the input's offsets are committed): the
    /// settler's entries resumed from its ledger, say.
    fn settled(&self) -> bool {
        true
    }

    /// librdkafka's statistics (every `statistics.interval.ms`), e.g. for
    /// consumer lag.
    fn statistics(&mut self, _statistics: Statistics) {}

    /// The run ends (stopped, at its end, or `failed`): stop every worker
    /// and commit what is done, or, after a failure, what is safe.
    fn finish(&mut self, member: &Member<Self>, failed: bool) -> Result<Self::Output, Self::Error>;
}

/// Who the member is and what it reads.
#[derive(Debug, Clone)]
pub struct Membership {
    /// Where Kafka is.
    pub connection: Connection,
    /// The consumer group.
    pub group: String,
    /// This member's name in the group (static membership).
    pub instance: String,
    /// The topic read.
    pub input: String,
    /// Topics written, checked at start.
    pub outputs: Vec<String>,
    /// Stop once the group has committed what the input held at start.
    pub exit_at_end: bool,
    /// Consumer settings of the service's own, after hashbuy's member
    /// settings (and before `-X`).
    pub settings: Vec<(&'static str, String)>,
}

impl Membership {
    /// The member's consumer settings: hashbuy's ([`member_settings`],
    /// which depend on the broker's kind, asked within
    /// [`CONNECT_TIMEOUT`]), then the service's own. The user's properties
    /// come after them (`Connection::config_with`).
    pub fn consumer_settings(&self) -> Result<Vec<(&'static str, String)>, ConnectError> {
        let broker = self.connection.broker_kind(CONNECT_TIMEOUT)?;
        let mut settings = member_settings(&self.group, &self.instance, self.exit_at_end, broker);
        settings.extend(self.settings.iter().cloned());
        Ok(settings)
    }

    /// The session timeout a member with `settings` (from
    /// [`consumer_settings`](Self::consumer_settings)) gets: the user's
    /// `session.timeout.ms` if set, else hashbuy's.
    pub fn session_timeout(&self, settings: &[(&'static str, String)]) -> Duration {
        session_timeout(
            settings.iter().map(|(k, v)| (*k, v.as_str())).chain(
                self.connection
                    .properties
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            ),
        )
    }

    /// Checks, within [`CONNECT_TIMEOUT`], that Kafka answers and has the
    /// input and output topics; the input's partition count.
    pub fn check_topics(&self) -> Result<usize, ConnectError> {
        let partitions = self.connection.check_topic(&self.input, CONNECT_TIMEOUT)?;
        for output in &self.outputs {
            self.connection.check_topic(output, CONNECT_TIMEOUT)?;
        }
        Ok(partitions)
    }
}

/// The consumer context of a driven member: it owns the stage, hands it
/// rebalances, and logs the rest.
pub struct DriverContext<S: Stage> {
    stage: Mutex<S>,
    /// The topic read: only its partitions get queues.
    input: String,
    /// The group has assigned this member partitions (possibly none), and
    /// has not taken them away as lost since.
    joined: AtomicBool,
    /// The group has assigned this member at least one partition, ever:
    /// kept here by the rebalance callback, since asking the consumer for
    /// its assignment is a round trip through librdkafka's main thread
    /// and a copy of every partition, too dear for each turn of the loop.
    had_partitions: AtomicBool,
    /// Splitting a queue needs the consumer itself, which the context only
    /// borrows in callbacks: a weak handle (or the consumer would own
    /// itself).
    member: OnceLock<Weak<Member<S>>>,
    /// Told of hand-overs, which run inside a poll and so stop the loop's
    /// beat.
    health: Health,
    /// What the group allows a hand-over: its `max.poll.interval.ms`.
    hand_over_allowed: Duration,
}

impl<S: Stage> ClientContext for DriverContext<S> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::client::log(level, fac, log_message);
    }

    fn stats(&self, statistics: Statistics) {
        lock(&self.stage).statistics(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::client::error(error, reason);
    }
}

impl<S: Stage> DriverContext<S> {
    /// Has the stage give `partitions` up, the service's health told of
    /// the hand-over while it runs.
    fn hand_over(&self, member: &Member<S>, partitions: &[i32]) {
        let _handing = self.health.handing_over(self.hand_over_allowed);
        lock(&self.stage).revoking(member, partitions);
    }
}

impl<S: Stage> ConsumerContext for DriverContext<S> {
    fn pre_rebalance(&self, member: &Member<S>, rebalance: &Rebalance<'_>) {
        let Some(owner) = self.member.get().and_then(Weak::upgrade) else {
            return;
        };
        match rebalance {
            Rebalance::Assign(list) => {
                let queues: Vec<(i32, Queue<S>)> = list
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == self.input)
                    .filter_map(|e| {
                        let queue = owner.split_partition_queue(e.topic(), e.partition());
                        queue.map(|q| (e.partition(), q))
                    })
                    .collect();
                tracing::info!(partitions = ?partitions(list), "partitions assigned");
                lock(&self.stage).assigned(&owner, queues);
                self.joined.store(true, Ordering::Relaxed);
                if list.count() > 0 {
                    self.had_partitions.store(true, Ordering::Relaxed);
                }
            }
            Rebalance::Revoke(list) => {
                let lost = member.assignment_lost();
                tracing::info!(partitions = ?partitions(list), lost, "partitions revoked");
                if lost {
                    // Out of the group (a session timed out) until it
                    // rejoins: not ready meanwhile.
                    self.joined.store(false, Ordering::Relaxed);
                }
                self.hand_over(member, &partitions(list));
            }
            Rebalance::Error(e) => {
                tracing::error!("rebalance failed: {e}");
                if let Ok(owned) = member.assignment() {
                    self.hand_over(member, &partitions(&owned));
                }
            }
        }
    }
}

/// How long a member may wait to join its group before it says so (and
/// again after each such interval).
const JOIN_WARNING: Duration = Duration::from_secs(30);

/// librdkafka's `max.poll.interval.ms` where a value cannot be read as
/// milliseconds (librdkafka refuses such a value as the consumer is made).
const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);

/// How often `--exit-at-end` checks the group's committed offsets.
const END_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why a driven run stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DriveError<E> {
    /// Kafka is unreachable or a topic is missing.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The stage failed.
    #[error(transparent)]
    Stage(E),
}

/// Joins the group of `membership` and drives `stage` until `stop` is
/// raised or, with `exit_at_end`, the group has committed what the input
/// held at start; see the module docs. `health` beats on every turn, is
/// ready once the group has given the member its partitions (possibly
/// none), and is told of each hand-over, which the group allows its
/// `max.poll.interval.ms`. What the stage's [`finish`](Stage::finish) gives back.
pub fn drive<S: Stage>(
    membership: &Membership,
    stage: S,
    stop: &AtomicBool,
    health: &Health,
) -> Result<S::Output, DriveError<S::Error>> {
    let connection = &membership.connection;
    let partitions = membership.check_topics()?;
    let settings = membership.consumer_settings()?;
    let stage_error =
        |what: &'static str| move |e: KafkaError| DriveError::Stage(failed(what)(e).into());
    let config = connection.config_with(&settings);
    let hand_over_allowed = setting(&config, "max.poll.interval.ms")
        .map_err(stage_error("cannot read the consumer's settings"))?
        .parse::<u64>()
        .map_or(DEFAULT_MAX_POLL_INTERVAL, Duration::from_millis);
    let context = DriverContext {
        stage: Mutex::new(stage),
        input: membership.input.clone(),
        joined: AtomicBool::new(false),
        had_partitions: AtomicBool::new(false),
        member: OnceLock::new(),
        health: health.clone(),
        hand_over_allowed,
    };
    let member: Arc<Member<S>> = Arc::new(
        config
            .create_with_context(context)
            .map_err(stage_error("cannot create the consumer"))?,
    );
    let _ = member.context().member.set(Arc::downgrade(&member));
    member
        .subscribe(&[membership.input.as_str()])
        .map_err(stage_error("cannot subscribe"))?;
    let ends = ends_at_start(
        &member,
        &membership.input,
        partitions,
        membership.exit_at_end,
    )
    .map_err(stage_error("cannot read the end of the input topic"))?;

    let stage = &member.context().stage;
    let result = turn(membership, &member, &ends, stop, health).and_then(|()| pending(stage));
    health.set_ready(false);
    // The stage gives its partitions up as in a hand-over, in the same
    // time.
    let handing = health.handing_over(member.context().hand_over_allowed);
    let finished = lock(stage)
        .finish(&member, result.is_err())
        .map_err(DriveError::Stage);
    drop(handing);
    let output = result.and(finished)?;
    // Workers stopped by `finish` may have failed on their way out.
    pending(stage)?;
    Ok(output)
}

/// The stage's error recorded outside its turn, if any ([`Stage::failure`]).
fn pending<S: Stage>(stage: &Mutex<S>) -> Result<(), DriveError<S::Error>> {
    lock(stage)
        .failure()
        .map_or(Ok(()), |e| Err(DriveError::Stage(e)))
}

/// The coordinator's loop. The stage's lock is never held across a poll,
/// where rebalances take it.
fn turn<S: Stage>(
    membership: &Membership,
    member: &Arc<Member<S>>,
    ends: &HashMap<i32, i64>,
    stop: &AtomicBool,
    health: &Health,
) -> Result<(), DriveError<S::Error>> {
    let started = Instant::now();
    let mut warn_unjoined_at = JOIN_WARNING;
    let mut checked_end = Instant::now();
    let stage = &member.context().stage;
    while !stop.load(Ordering::Relaxed) {
        health.beat();
        pending(stage)?;
        let timeout = lock(stage).poll_timeout();
        serve_main_queue(member, timeout)
            .map_err(|e| DriveError::Stage(failed("the consumer failed")(e).into()))?;
        // A rebalance in that poll may have failed (lost data found at
        // assignment): the turn, which may commit, must not run.
        pending(stage)?;
        // Ready once the group has answered with an assignment, even an
        // empty one: a member with no partitions (more members than
        // partitions) is a standby, not a failure.
        let joined = member.context().joined.load(Ordering::Relaxed);
        health.set_ready(joined);
        if !joined && started.elapsed() >= warn_unjoined_at {
            tracing::warn!(
                group = %membership.group,
                "no partitions of {} after {} s: waiting for the group (a member that \
                 stopped without leaving holds them until its session times out)",
                membership.input,
                started.elapsed().as_secs()
            );
            warn_unjoined_at += JOIN_WARNING;
        }
        lock(stage)
            .tick(member, health)
            .map_err(DriveError::Stage)?;
        // The end is judged only once the member has had partitions:
        // before, work the stage resumes from its own state has not
        // started.
        let ever_joined = member.context().had_partitions.load(Ordering::Relaxed);
        if membership.exit_at_end && ever_joined && checked_end.elapsed() >= END_CHECK_EVERY {
            checked_end = Instant::now();
            let (settled, at_eof) = {
                let stage = lock(stage);
                (stage.settled(), stage.at_eof())
            };
            if settled
                && consumed_to(member.as_ref(), &membership.input, ends, &at_eof).map_err(|e| {
                    DriveError::Stage(failed("cannot read committed offsets")(e).into())
                })?
            {
                break;
            }
        }
    }
    Ok(())
}

fn partitions(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}
